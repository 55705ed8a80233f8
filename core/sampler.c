/* sampler.c: penalties, temperature, top-k / top-p / min-p and the draw (see sampler.h).
 *
 * Scratch layout during smp_sample(): candidates live at positions [0, n) of two parallel
 * arrays, idx[] (token id) and probs[] (unnormalised probability exp(logit - max)). Filters
 * narrow the kept range instead of copying: top-k shrinks n, top-p keeps [lo, n), min-p
 * compacts [lo, n) in place. Nothing is allocated per token.
 */
#include "sampler.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---- RNG: xoshiro256** seeded by splitmix64 (Blackman & Vigna, public domain) ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform double in [0, 1) from the top 53 bits. */
static double rng_uniform(uint64_t s[4]) {
    return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53;
}

/* splitmix64 never yields four zero words in a row, so the xoshiro state is never all-zero. */
static void rng_seed(uint64_t s[4], uint64_t seed) {
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&seed);
}

/* A seed from the OS. getrandom() can only fail on very old kernels (ENOSYS) or seccomp
 * filters; a sampler must still work there, so fall back to the clock and an address. */
static uint64_t os_seed(const void *salt) {
    uint64_t v;
    ssize_t r;
    do {
        r = getrandom(&v, sizeof v, GRND_NONBLOCK);
    } while (r < 0 && errno == EINTR);
    if (r == (ssize_t)sizeof v) return v;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) ^
           ((uint64_t)(uintptr_t)salt << 16);
}

/* ---- ordering helpers ---- */

/* Candidate order for top-k: higher logit first, ties to the lower id. */
static inline int logit_better(const float *lg, int32_t a, int32_t b) {
    return lg[a] > lg[b] || (lg[a] == lg[b] && a < b);
}

/* Min-heap (worst candidate at the root) over heap[0..n). */
static void topk_sift_down(int32_t *heap, int n, int i, const float *lg) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && logit_better(lg, heap[w], heap[l])) w = l;
        if (r < n && logit_better(lg, heap[w], heap[r])) w = r;
        if (w == i) return;
        int32_t t = heap[i];
        heap[i] = heap[w];
        heap[w] = t;
        i = w;
    }
}

/* Puts the ids of the k best logits (ties to the lower id) in idx[0..k), in heap order.
 * O(V log k) with a size-k min-heap instead of sorting the whole vocabulary. */
static void select_top_k(const float *lg, int v, int k, int32_t *idx) {
    for (int i = 0; i < k; i++) idx[i] = i;
    for (int i = k / 2 - 1; i >= 0; i--) topk_sift_down(idx, k, i, lg);
    for (int i = k; i < v; i++) {
        /* i is larger than every id in the heap, so an equal logit loses the tie. */
        if (!(lg[i] > lg[idx[0]])) continue;
        idx[0] = i;
        topk_sift_down(idx, k, 0, lg);
    }
}

/* Candidate order for top-p: higher probability first, ties to the lower id. */
static inline int prob_better(const float *pr, const int32_t *idx, int a, int b) {
    return pr[a] > pr[b] || (pr[a] == pr[b] && idx[a] < idx[b]);
}

static inline void swap_cand(float *pr, int32_t *idx, int a, int b) {
    float tp = pr[a];
    pr[a] = pr[b];
    pr[b] = tp;
    int32_t ti = idx[a];
    idx[a] = idx[b];
    idx[b] = ti;
}

/* Max-heap (best candidate at the root) over positions [0, n) of (pr, idx). */
static void nucleus_sift_down(float *pr, int32_t *idx, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, b = i;
        if (l < n && prob_better(pr, idx, l, b)) b = l;
        if (r < n && prob_better(pr, idx, r, b)) b = r;
        if (b == i) return;
        swap_cand(pr, idx, i, b);
        i = b;
    }
}

/* Top-p: a partial heapsort that pops candidates in descending probability to the back of
 * the array until their mass reaches target. Returns lo; the nucleus is [lo, n), most
 * probable last, and always holds at least one candidate. O(n + m log n) for a nucleus of
 * m tokens, so a small nucleus never pays for a full sort. */
static int nucleus(float *pr, int32_t *idx, int n, double target) {
    for (int i = n / 2 - 1; i >= 0; i--) nucleus_sift_down(pr, idx, n, i);
    double cum = 0;
    int end = n;
    while (end > 0) {
        end--;
        swap_cand(pr, idx, 0, end);
        nucleus_sift_down(pr, idx, end, 0);
        cum += pr[end];
        if (cum >= target) break;
    }
    return end;
}

/* ---- penalties ---- */

/* Repetition first, then presence/frequency (the vLLM order). O(V) per token; the scan is
 * negligible next to the forward pass and needs no per-sequence list of distinct tokens. */
static void apply_penalties(const smp_sampler_t *s, float *logits) {
    const smp_params_t *p = &s->params;
    const float rp = p->repetition_penalty, pres = p->presence_penalty;
    const float freq = p->frequency_penalty;
    const int do_rep = rp != 1.0f, do_pf = pres != 0.0f || freq != 0.0f;
    if (!do_rep && !do_pf) return;
    for (int i = 0; i < s->vocab_size; i++) {
        if (do_rep && s->seen[i]) {
            /* HF: shrink positive logits, push negative ones further down. */
            float l = logits[i];
            logits[i] = l > 0 ? l / rp : l * rp;
        }
        if (do_pf && s->counts[i]) logits[i] -= pres + freq * (float)s->counts[i];
    }
}

/* ---- public API ---- */

smp_params_t smp_params_default(void) {
    return (smp_params_t){
        .temperature = 1.0f,
        .top_k = 0,
        .top_p = 1.0f,
        .min_p = 0.0f,
        .repetition_penalty = 1.0f,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .seed = 0,
        .has_seed = 0,
    };
}

/* Returns 0 or LLM_EINVAL with err naming the first bad parameter. Every comparison is
 * written so that NaN fails it. top_k and has_seed take any value. */
int smp_params_validate(const smp_params_t *p, llm_error_t *err) {
    if (!p) return llm_err_set(err, LLM_EINVAL, "sampling parameters missing");
    if (!(p->temperature >= 0 && isfinite(p->temperature)))
        return llm_err_set(err, LLM_EINVAL, "temperature must be a finite number >= 0, got %g",
                           (double)p->temperature);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return llm_err_set(err, LLM_EINVAL, "top_p must be in (0, 1], got %g", (double)p->top_p);
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return llm_err_set(err, LLM_EINVAL, "min_p must be in [0, 1], got %g", (double)p->min_p);
    if (!(p->repetition_penalty > 0 && isfinite(p->repetition_penalty)))
        return llm_err_set(err, LLM_EINVAL,
                           "repetition_penalty must be a finite number > 0, got %g",
                           (double)p->repetition_penalty);
    if (!(p->presence_penalty >= -2 && p->presence_penalty <= 2))
        return llm_err_set(err, LLM_EINVAL, "presence_penalty must be in [-2, 2], got %g",
                           (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2 && p->frequency_penalty <= 2))
        return llm_err_set(err, LLM_EINVAL, "frequency_penalty must be in [-2, 2], got %g",
                           (double)p->frequency_penalty);
    return 0;
}

/* On failure *s is left zeroed (smp_deinit() on it is a no-op). */
int smp_init(smp_sampler_t *s, const smp_params_t *p, int vocab_size, llm_error_t *err) {
    memset(s, 0, sizeof *s);
    int rc = smp_params_validate(p, err);
    if (rc) return rc;
    if (vocab_size <= 0)
        return llm_err_set(err, LLM_EINVAL, "vocab_size must be > 0, got %d", vocab_size);
    size_t v = (size_t)vocab_size;
    s->counts = calloc(v, sizeof *s->counts);
    s->seen = calloc(v, sizeof *s->seen);
    s->probs = malloc(v * sizeof *s->probs);
    s->idx = malloc(v * sizeof *s->idx);
    if (!s->counts || !s->seen || !s->probs || !s->idx) goto fail;
    s->params = *p;
    s->vocab_size = vocab_size;
    rng_seed(s->rng, p->has_seed ? p->seed : os_seed(s));
    return 0;
fail:
    smp_deinit(s);
    return llm_err_set(err, LLM_ENOMEM, "sampler: out of memory for a vocabulary of %d",
                       vocab_size);
}

void smp_deinit(smp_sampler_t *s) {
    if (!s) return;
    free(s->idx);
    free(s->probs);
    free(s->seen);
    free(s->counts);
    memset(s, 0, sizeof *s);
}

/* Out-of-range ids are ignored: the penalties cannot act on a token the vocabulary lacks. */
void smp_observe(smp_sampler_t *s, int32_t token, int is_prompt) {
    if (token < 0 || token >= s->vocab_size) return;
    s->seen[token] = 1;
    if (!is_prompt && s->counts[token] != UINT32_MAX) s->counts[token]++;
}

int32_t smp_sample(smp_sampler_t *s, float *logits) {
    const smp_params_t *p = &s->params;
    const int v = s->vocab_size;
    assert(v > 0 && logits);
    apply_penalties(s, logits);
    if (p->temperature == 0) return smp_argmax(logits, v);

    /* Temperature. NaN logits become -inf so that no ordering below sees a NaN. */
    const float t = p->temperature;
    for (int i = 0; i < v; i++) {
        float l = logits[i] / t;
        logits[i] = isnan(l) ? -INFINITY : l;
    }

    /* Top-k. */
    int32_t *idx = s->idx;
    float *pr = s->probs;
    int n = v;
    if (p->top_k > 0 && p->top_k < v) {
        n = p->top_k;
        select_top_k(logits, v, n, idx);
    } else {
        for (int i = 0; i < v; i++) idx[i] = i;
    }

    /* Softmax numerators. A non-finite max means every candidate is -inf, or a tiny
     * temperature overflowed to +inf; argmax is then the only sensible answer (and the
     * limit of T -> 0). */
    float mx = -INFINITY;
    for (int j = 0; j < n; j++)
        if (logits[idx[j]] > mx) mx = logits[idx[j]];
    if (!isfinite(mx)) return smp_argmax(logits, v);
    double total = 0;
    for (int j = 0; j < n; j++) {
        pr[j] = expf(logits[idx[j]] - mx);
        total += pr[j];
    }

    /* Top-p. */
    int lo = 0;
    if (p->top_p < 1.0f && n > 1) {
        lo = nucleus(pr, idx, n, (double)p->top_p * total);
        total = 0;
        for (int j = lo; j < n; j++) total += pr[j];
    }

    /* Min-p: relative to the best kept candidate, so independent of normalisation. */
    if (p->min_p > 0) {
        float pmax = 0;
        for (int j = lo; j < n; j++)
            if (pr[j] > pmax) pmax = pr[j];
        const float thr = p->min_p * pmax;
        int m = lo;
        total = 0;
        for (int j = lo; j < n; j++) {
            if (pr[j] < thr) continue;
            pr[m] = pr[j];
            idx[m] = idx[j];
            total += pr[m++];
        }
        n = m;
    }

    /* Draw. Zero-probability candidates can never be hit (r < acc is strict); rounding that
     * leaves r past the end falls back to the last candidate with mass. */
    const double r = rng_uniform(s->rng) * total;
    double acc = 0;
    int32_t last = idx[lo];
    for (int j = lo; j < n; j++) {
        if (pr[j] <= 0) continue;
        acc += pr[j];
        last = idx[j];
        if (r < acc) return idx[j];
    }
    return last;
}

/* Returns -1 when n <= 0. NaN entries are skipped; all -inf/NaN gives 0.
 * Two passes instead of one loop that tracks the index: the max is a plain reduction the
 * compiler turns into vmaxps (whose "v > m ? v : m" skips NaN exactly like the scalar
 * comparison), then the first element equal to it, 256 at a time. A 49,152-entry vocabulary
 * took 35–40 µs per token in the branchy single loop (~1 ms of serial engine time per
 * 32-token step). */
int32_t smp_argmax(const float *logits, int n) {
    if (n <= 0) return -1;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    if (!(mx > -INFINITY)) return 0; /* all -inf or NaN: nothing beats the first */
    for (int i0 = 0; i0 < n; i0 += 256) { /* blocks tested as vectors, then the hit scanned */
        const int e = n - i0 < 256 ? n : i0 + 256;
        int hit = 0;
#pragma omp simd reduction(| : hit)
        for (int i = i0; i < e; i++) hit |= logits[i] == mx;
        if (hit)
            for (int i = i0; i < e; i++)
                if (logits[i] == mx) return i;
    }
    return 0; /* not reached */
}
