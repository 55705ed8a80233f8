/* test_sampler.c: unit tests of core/sampler.c.
 *
 * Every statistical test uses a fixed seed, so it is deterministic; the tolerances are still
 * wide (several standard deviations) so that a change of RNG stream would not break them,
 * while a wrong distribution would.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

/* ---- helpers ---- */

static smp_sampler_t make(const smp_params_t *p, int vocab) {
    smp_sampler_t s;
    llm_error_t err = {0};
    int rc = smp_init(&s, p, vocab, &err);
    if (rc) fprintf(stderr, "smp_init: %s\n", err.msg);
    assert_int_equal(rc, 0);
    return s;
}

static smp_params_t seeded(uint64_t seed) {
    smp_params_t p = smp_params_default();
    p.seed = seed;
    p.has_seed = 1;
    return p;
}

/* Draws n tokens from a fresh copy of base (smp_sample modifies logits) and counts them. */
static void draw_counts(smp_sampler_t *s, const float *base, int v, int n, int *counts) {
    float *lg = malloc((size_t)v * sizeof *lg);
    assert_non_null(lg);
    memset(counts, 0, (size_t)v * sizeof *counts);
    for (int i = 0; i < n; i++) {
        memcpy(lg, base, (size_t)v * sizeof *lg);
        int32_t t = smp_sample(s, lg);
        assert_true(t >= 0 && t < v);
        counts[t]++;
    }
    free(lg);
}

/* Deterministic pseudo-random logits in [-4, 4) for the tests' own use (not the sampler RNG). */
static void fill_logits(float *lg, int v, uint64_t seed) {
    uint64_t x = seed * 2654435761u + 1;
    for (int i = 0; i < v; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        lg[i] = (float)((double)(x >> 11) * 0x1.0p-53 * 8.0 - 4.0);
    }
}

static void logits_from_probs(float *lg, const double *p, int v) {
    for (int i = 0; i < v; i++) lg[i] = p[i] > 0 ? (float)log(p[i]) : -INFINITY;
}

/* Descending rank order of lg (ties to the lower id), written to order[0..v). */
static const float *g_sort_lg;
static int by_logit_desc(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_sort_lg[x] != g_sort_lg[y]) return g_sort_lg[x] > g_sort_lg[y] ? -1 : 1;
    return x < y ? -1 : 1;
}
static void rank_order(const float *lg, int v, int32_t *order) {
    for (int i = 0; i < v; i++) order[i] = i;
    g_sort_lg = lg;
    qsort(order, (size_t)v, sizeof *order, by_logit_desc);
}

/* ---- greedy ---- */

static void test_argmax_and_ties(void **state) {
    (void)state;
    const float a[] = {1, 3, 3, 2};
    assert_int_equal(smp_argmax(a, 4), 1);
    const float b[] = {-5, -1, -1, -7};
    assert_int_equal(smp_argmax(b, 4), 1);
    const float c[] = {NAN, 0.5f, 2, 2};
    assert_int_equal(smp_argmax(c, 4), 2);
    const float d[] = {7};
    assert_int_equal(smp_argmax(d, 1), 0);
    assert_int_equal(smp_argmax(d, 0), -1);
    const float e[] = {NAN, -INFINITY, -INFINITY}; /* nothing beats the first */
    assert_int_equal(smp_argmax(e, 3), 0);
    const float f[] = {1, INFINITY, NAN, INFINITY};
    assert_int_equal(smp_argmax(f, 4), 1);
    /* vocabulary-sized rows against the one-loop definition (first strictly greater wins,
     * NaN never does), with NaNs, ±inf, ties and the max in the vector tail */
    enum { V = 49157 };
    static float big[V];
    uint64_t x = 12345;
    for (int trial = 0; trial < 64; trial++) {
        for (int i = 0; i < V; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            big[i] = (float)(x % 2001) - 1000.0f; /* many exact ties */
            if (x % 997 == 0) big[i] = NAN;
            if (x % 1999 == 0) big[i] = -INFINITY;
        }
        if (trial % 4 == 1) big[V - 1] = 5000.0f;
        if (trial % 4 == 2) big[(int)(x % V)] = INFINITY;
        const int ns[2] = {V, trial + 1}; /* the whole row, and short prefixes */
        for (int k = 0; k < 2; k++) {
            int32_t want = 0;
            float bv = -INFINITY;
            for (int i = 0; i < ns[k]; i++)
                if (big[i] > bv) bv = big[i], want = i;
            assert_int_equal(smp_argmax(big, ns[k]), want);
        }
    }

    smp_params_t p = seeded(1);
    p.temperature = 0;
    p.top_k = 3; /* irrelevant when greedy */
    smp_sampler_t s = make(&p, 6);
    for (int rep = 0; rep < 20; rep++) {
        float lg[] = {0.1f, 4, -2, 4, 3.9f, 4};
        assert_int_equal(smp_sample(&s, lg), 1);
        /* Greedy does not scale by temperature. */
        assert_true(lg[1] == 4.0f);
    }
    smp_deinit(&s);
}

/* ---- RNG ---- */

static void test_seed_reproducible(void **state) {
    (void)state;
    enum { V = 1000, N = 64 };
    float base[V] = {0}; /* uniform: every draw exposes the RNG */
    int32_t seq[3][N];
    const uint64_t seeds[3] = {42, 42, 43};
    for (int k = 0; k < 3; k++) {
        smp_params_t p = seeded(seeds[k]);
        smp_sampler_t s = make(&p, V);
        for (int i = 0; i < N; i++) {
            float lg[V];
            memcpy(lg, base, sizeof lg);
            seq[k][i] = smp_sample(&s, lg);
        }
        smp_deinit(&s);
    }
    assert_memory_equal(seq[0], seq[1], sizeof seq[0]);
    assert_memory_not_equal(seq[0], seq[2], sizeof seq[0]);
    int distinct = 0;
    for (int i = 1; i < N; i++) distinct += seq[0][i] != seq[0][0];
    assert_true(distinct > N / 2); /* not a constant stream */

    /* Two samplers with the same seed stay in lock-step however their calls interleave. */
    smp_params_t p = seeded(42);
    smp_sampler_t a = make(&p, V), b = make(&p, V);
    p.seed = 7;
    smp_sampler_t other = make(&p, V);
    for (int i = 0; i < N; i++) {
        float lg[V];
        memcpy(lg, base, sizeof lg);
        (void)smp_sample(&other, lg);
        memcpy(lg, base, sizeof lg);
        assert_int_equal(smp_sample(&a, lg), seq[0][i]);
        if (i % 2 == 0) {
            memcpy(lg, base, sizeof lg);
            (void)smp_sample(&other, lg);
        }
    }
    for (int i = 0; i < N; i++) {
        float lg[V];
        memcpy(lg, base, sizeof lg);
        assert_int_equal(smp_sample(&b, lg), seq[0][i]);
    }
    smp_deinit(&a);
    smp_deinit(&b);
    smp_deinit(&other);
}

static void test_unseeded_differs(void **state) {
    (void)state;
    enum { V = 1000, N = 32 };
    smp_params_t p = smp_params_default(); /* has_seed = 0: OS entropy */
    assert_int_equal(p.has_seed, 0);
    int32_t seq[2][N];
    for (int k = 0; k < 2; k++) {
        smp_sampler_t s = make(&p, V);
        for (int i = 0; i < N; i++) {
            float lg[V] = {0};
            seq[k][i] = smp_sample(&s, lg);
        }
        smp_deinit(&s);
    }
    assert_memory_not_equal(seq[0], seq[1], sizeof seq[0]);
}

/* ---- top-k ---- */

static void test_top_k_1_is_greedy(void **state) {
    (void)state;
    enum { V = 300 };
    const float temps[] = {0.3f, 1, 2, 10, 100};
    for (int ti = 0; ti < 5; ti++) {
        smp_params_t p = seeded(100 + ti);
        p.temperature = temps[ti];
        p.top_k = 1;
        smp_sampler_t s = make(&p, V);
        for (int rep = 0; rep < 50; rep++) {
            float lg[V], copy[V];
            fill_logits(lg, V, (uint64_t)rep + 1);
            if (rep % 5 == 0) lg[V - 1] = lg[V / 2] = 9; /* tie at the top: lower id wins */
            memcpy(copy, lg, sizeof lg);
            assert_int_equal(smp_sample(&s, lg), smp_argmax(copy, V));
        }
        smp_deinit(&s);
    }
}

static void test_top_k_stays_in_top(void **state) {
    (void)state;
    enum { V = 500, N = 4000 };
    const int ks[] = {2, 5, 17};
    float base[V];
    int32_t order[V];
    int counts[V];
    fill_logits(base, V, 77);
    rank_order(base, V, order);
    for (int ki = 0; ki < 3; ki++) {
        int k = ks[ki];
        smp_params_t p = seeded(5 + ki);
        p.temperature = 50; /* nearly flat: without top-k almost every draw would escape */
        p.top_k = k;
        smp_sampler_t s = make(&p, V);
        draw_counts(&s, base, V, N, counts);
        int inside = 0;
        for (int r = 0; r < k; r++) {
            assert_true(counts[order[r]] > 0); /* every one of the k is reachable */
            inside += counts[order[r]];
        }
        assert_int_equal(inside, N);
        smp_deinit(&s);
    }

    /* Ties at the boundary keep the lower ids; top_k >= vocab or < 0 is off. */
    smp_params_t p = seeded(9);
    p.top_k = 2;
    smp_sampler_t s = make(&p, 5);
    const float tied[5] = {1, 5, 5, 5, 0};
    int c5[5];
    draw_counts(&s, tied, 5, 2000, c5);
    assert_int_equal(c5[1] + c5[2], 2000);
    assert_true(c5[1] > 800 && c5[2] > 800);
    smp_deinit(&s);
    const int offs[] = {5, 1000, -3};
    for (int i = 0; i < 3; i++) {
        p.top_k = offs[i];
        s = make(&p, 5);
        const float flat[5] = {0, 0, 0, 0, 0};
        draw_counts(&s, flat, 5, 2000, c5);
        for (int t = 0; t < 5; t++) assert_true(c5[t] > 250);
        smp_deinit(&s);
    }
}

/* ---- top-p ---- */

static void test_top_p_nucleus(void **state) {
    (void)state;
    /* Shuffled ids so that position does not equal rank. */
    const double prob[6] = {0.07, 0.5, 0.03, 0.15, 0.25, 0.0};
    float base[6];
    int counts[6];
    logits_from_probs(base, prob, 6);

    /* p = 0.8: 0.5 + 0.25 = 0.75 < 0.8, + 0.15 = 0.9 -> {1, 4, 3}, renormalised by 0.9. */
    smp_params_t p = seeded(11);
    p.top_p = 0.8f;
    smp_sampler_t s = make(&p, 6);
    enum { N = 20000 };
    draw_counts(&s, base, 6, N, counts);
    assert_int_equal(counts[0] + counts[2] + counts[5], 0);
    assert_int_equal(counts[1] + counts[4] + counts[3], N);
    assert_true(fabs(counts[1] / (double)N - 0.5 / 0.9) < 0.02);
    assert_true(fabs(counts[4] / (double)N - 0.25 / 0.9) < 0.02);
    assert_true(fabs(counts[3] / (double)N - 0.15 / 0.9) < 0.02);
    smp_deinit(&s);

    /* p = 0.45: the top token alone reaches it. A tiny p still keeps one token. */
    const float ps[] = {0.45f, 1e-6f};
    for (int i = 0; i < 2; i++) {
        p.top_p = ps[i];
        s = make(&p, 6);
        draw_counts(&s, base, 6, 500, counts);
        assert_int_equal(counts[1], 500);
        smp_deinit(&s);
    }

    /* p = 0.3 after temperature 2 on a larger random vocabulary, checked against a sort. */
    enum { V = 1000 };
    float lg[V], scaled[V];
    int32_t order[V];
    int cv[V];
    fill_logits(lg, V, 3);
    for (int i = 0; i < V; i++) scaled[i] = lg[i] / 2;
    rank_order(scaled, V, order);
    double z = 0, cum = 0;
    for (int i = 0; i < V; i++) z += exp(scaled[i]);
    int m = 0;
    while (m < V && cum < 0.3 * z) cum += exp(scaled[order[m++]]);
    p = seeded(12);
    p.temperature = 2;
    p.top_p = 0.3f;
    s = make(&p, V);
    draw_counts(&s, lg, V, 5000, cv);
    int inside = 0;
    for (int r = 0; r < m; r++) inside += cv[order[r]];
    assert_int_equal(inside, 5000);
    assert_true(m > 10);             /* a real nucleus, not just argmax */
    assert_true(cv[order[m - 1]] > 0); /* the last member is reachable */
    smp_deinit(&s);
}

static void test_top_k_then_top_p(void **state) {
    (void)state;
    /* top-p acts on the distribution renormalised over the top-k survivors. Probabilities
     * 0.4, 0.3, 0.2, 0.1; top_k = 2 leaves 4/7 and 3/7; top_p = 0.5 then keeps only id 0. */
    const double prob[4] = {0.4, 0.3, 0.2, 0.1};
    float base[4];
    int counts[4];
    logits_from_probs(base, prob, 4);
    smp_params_t p = seeded(13);
    p.top_k = 2;
    p.top_p = 0.5f;
    smp_sampler_t s = make(&p, 4);
    draw_counts(&s, base, 4, 1000, counts);
    assert_int_equal(counts[0], 1000);
    smp_deinit(&s);
    p.top_p = 0.6f; /* 4/7 = 0.571 < 0.6 -> {0, 1} */
    s = make(&p, 4);
    draw_counts(&s, base, 4, 4000, counts);
    assert_int_equal(counts[0] + counts[1], 4000);
    assert_true(fabs(counts[0] / 4000.0 - 4.0 / 7) < 0.03);
    smp_deinit(&s);
}

/* ---- min-p ---- */

static void test_min_p(void **state) {
    (void)state;
    /* max 0.4; min_p 0.2 -> threshold 0.08: drops 0.06 and 0.04. */
    const double prob[5] = {0.06, 0.4, 0.2, 0.04, 0.3};
    float base[5];
    int counts[5];
    logits_from_probs(base, prob, 5);
    smp_params_t p = seeded(21);
    p.min_p = 0.2f;
    smp_sampler_t s = make(&p, 5);
    enum { N = 20000 };
    draw_counts(&s, base, 5, N, counts);
    assert_int_equal(counts[0] + counts[3], 0);
    assert_true(fabs(counts[1] / (double)N - 0.4 / 0.9) < 0.02);
    assert_true(fabs(counts[4] / (double)N - 0.3 / 0.9) < 0.02);
    assert_true(fabs(counts[2] / (double)N - 0.2 / 0.9) < 0.02);
    smp_deinit(&s);

    /* min_p 0.7 -> threshold 0.28: keeps 0.4 and 0.3. min_p 1 keeps only the max. */
    p.min_p = 0.7f;
    s = make(&p, 5);
    draw_counts(&s, base, 5, 2000, counts);
    assert_int_equal(counts[1] + counts[4], 2000);
    assert_true(counts[4] > 600);
    smp_deinit(&s);
    p.min_p = 1;
    s = make(&p, 5);
    draw_counts(&s, base, 5, 500, counts);
    assert_int_equal(counts[1], 500);
    smp_deinit(&s);
}

/* ---- penalties ---- */

static void test_repetition_penalty_values(void **state) {
    (void)state;
    smp_params_t p = seeded(1);
    p.temperature = 0;
    p.repetition_penalty = 2;
    smp_sampler_t s = make(&p, 6);
    smp_observe(&s, 0, 1); /* prompt counts for repetition */
    smp_observe(&s, 1, 0);
    smp_observe(&s, 3, 1);
    smp_observe(&s, 3, 0);
    smp_observe(&s, 5, 0);
    smp_observe(&s, -1, 0); /* out of range: ignored */
    smp_observe(&s, 6, 1);
    float lg[6] = {2, -2, 1.5f, -1, 0.5f, 0};
    /* id 0: 2 / 2 = 1 < 1.5, so greedy moves to id 2. */
    assert_int_equal(smp_sample(&s, lg), 2);
    const float want[6] = {1, -4, 1.5f, -2, 0.5f, 0};
    for (int i = 0; i < 6; i++) assert_true(lg[i] == want[i]);
    smp_deinit(&s);

    /* A penalty below 1 rewards repeats the same way. */
    p.repetition_penalty = 0.5f;
    s = make(&p, 3);
    smp_observe(&s, 1, 0);
    smp_observe(&s, 2, 1);
    float lg2[3] = {1.5f, 1, -1};
    assert_int_equal(smp_sample(&s, lg2), 1);
    assert_true(lg2[0] == 1.5f && lg2[1] == 2 && lg2[2] == -0.5f);
    smp_deinit(&s);
}

static void test_presence_frequency_values(void **state) {
    (void)state;
    smp_params_t p = seeded(1);
    p.temperature = 0;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    smp_sampler_t s = make(&p, 5);
    smp_observe(&s, 0, 1); /* prompt: no presence/frequency effect */
    smp_observe(&s, 0, 1);
    smp_observe(&s, 1, 0);
    for (int i = 0; i < 3; i++) smp_observe(&s, 2, 0);
    smp_observe(&s, 4, 1);
    float lg[5] = {1, 1, 1, 1, -1};
    assert_int_equal(smp_sample(&s, lg), 0);
    const float want[5] = {1, 1 - 0.75f, 1 - 1.25f, 1, -1};
    for (int i = 0; i < 5; i++) assert_true(fabsf(lg[i] - want[i]) < 1e-6f);
    /* The penalties accumulate with further observations and are reapplied per call. */
    smp_observe(&s, 2, 0);
    float lg2[5] = {0, 0, 0, 0, 0};
    smp_sample(&s, lg2);
    assert_true(fabsf(lg2[2] - -1.5f) < 1e-6f);
    assert_true(lg2[0] == 0 && lg2[3] == 0 && lg2[4] == 0);
    smp_deinit(&s);

    /* Negative values encourage; and repetition is applied before presence/frequency:
     * token 1 (logit 2, generated once): 2 / 2 - (-1) - 0 = 2 (the other order would give 1.5). */
    p = seeded(1);
    p.temperature = 0;
    p.repetition_penalty = 2;
    p.presence_penalty = -1;
    s = make(&p, 3);
    smp_observe(&s, 1, 0);
    float lg3[3] = {1.9f, 2, 0};
    assert_int_equal(smp_sample(&s, lg3), 1);
    assert_true(fabsf(lg3[1] - 2.0f) < 1e-6f);
    assert_true(lg3[0] == 1.9f && lg3[2] == 0);
    smp_deinit(&s);
}

/* ---- distribution ---- */

static void test_distribution_matches(void **state) {
    (void)state;
    const double prob[5] = {0.1, 0.35, 0.05, 0.3, 0.2};
    float base[5];
    int counts[5];
    logits_from_probs(base, prob, 5);
    /* Shift every logit: softmax must not care. */
    for (int i = 0; i < 5; i++) base[i] += 30;
    smp_params_t p = seeded(2024);
    smp_sampler_t s = make(&p, 5);
    enum { N = 20000 };
    draw_counts(&s, base, 5, N, counts);
    double chi2 = 0;
    for (int i = 0; i < 5; i++) {
        double e = prob[i] * N;
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
        assert_true(fabs(counts[i] / (double)N - prob[i]) < 0.02);
    }
    /* 4 degrees of freedom: P(chi2 > 18.47) = 0.001. */
    if (chi2 >= 18.47) fprintf(stderr, "chi2 = %g\n", chi2);
    assert_true(chi2 < 18.47);
    smp_deinit(&s);
}

static void test_temperature_sharpens(void **state) {
    (void)state;
    const float base[3] = {1, 0.5f, 0};
    int counts[3];
    enum { N = 20000 };
    /* T = 1: softmax(1, .5, 0) = .506, .307, .186. */
    smp_params_t p = seeded(31);
    smp_sampler_t s = make(&p, 3);
    draw_counts(&s, base, 3, N, counts);
    const double e1 = exp(1), eh = exp(0.5), z1 = e1 + eh + 1;
    assert_true(fabs(counts[0] / (double)N - e1 / z1) < 0.02);
    assert_true(fabs(counts[2] / (double)N - 1 / z1) < 0.02);
    smp_deinit(&s);
    /* T = 0.1: softmax(10, 5, 0) puts 99.3% on id 0. */
    p.temperature = 0.1f;
    s = make(&p, 3);
    draw_counts(&s, base, 3, N, counts);
    assert_true(counts[0] > 0.98 * N);
    float lg[3] = {1, 0.5f, 0};
    smp_sample(&s, lg);
    assert_true(fabsf(lg[0] - 10) < 1e-4f && fabsf(lg[1] - 5) < 1e-4f && lg[2] == 0);
    smp_deinit(&s);
    /* T = 10: nearly flat, the top token's share drops to ~.351. */
    p.temperature = 10;
    s = make(&p, 3);
    draw_counts(&s, base, 3, N, counts);
    const double zt = exp(0.1) + exp(0.05) + 1;
    assert_true(fabs(counts[0] / (double)N - exp(0.1) / zt) < 0.02);
    assert_true(counts[2] > 0.28 * N);
    smp_deinit(&s);
}

static void test_masked_logits(void **state) {
    (void)state;
    /* -inf (masked) tokens are never drawn, with or without filters; all masked but one
     * gives that one. */
    enum { V = 50 };
    float base[V];
    int counts[V];
    fill_logits(base, V, 8);
    for (int i = 0; i < V; i += 2) base[i] = -INFINITY;
    smp_params_t p = seeded(41);
    p.temperature = 5;
    for (int mode = 0; mode < 3; mode++) {
        p.top_k = mode == 1 ? 40 : 0; /* more than the 25 unmasked tokens */
        p.top_p = mode == 2 ? 0.99f : 1;
        smp_sampler_t s = make(&p, V);
        draw_counts(&s, base, V, 3000, counts);
        for (int i = 0; i < V; i += 2) assert_int_equal(counts[i], 0);
        smp_deinit(&s);
    }
    /* NaN logits (a numerical bug upstream) are treated as masked, not propagated. */
    fill_logits(base, V, 9);
    base[0] = base[V - 1] = base[20] = NAN;
    p.top_k = 0;
    p.top_p = 1;
    smp_sampler_t sn = make(&p, V);
    draw_counts(&sn, base, V, 3000, counts);
    assert_int_equal(counts[0] + counts[20] + counts[V - 1], 0);
    assert_true(counts[1] > 0 && counts[V - 2] > 0);
    smp_deinit(&sn);

    for (int i = 0; i < V; i++) base[i] = -INFINITY;
    base[17] = -3;
    smp_sampler_t s = make(&p, V);
    draw_counts(&s, base, V, 100, counts);
    assert_int_equal(counts[17], 100);
    smp_deinit(&s);
}

/* ---- validation and lifecycle ---- */

static void expect_invalid(smp_params_t p, const char *msg) {
    llm_error_t err = {0};
    assert_int_equal(smp_params_validate(&p, &err), LLM_EINVAL);
    assert_int_equal(err.code, LLM_EINVAL);
    if (strcmp(err.msg, msg) != 0) fprintf(stderr, "got \"%s\", want \"%s\"\n", err.msg, msg);
    assert_string_equal(err.msg, msg);
    /* smp_init refuses the same way and leaves a struct smp_deinit accepts. */
    smp_sampler_t s;
    memset(&s, 0xab, sizeof s);
    llm_error_t err2 = {0};
    assert_int_equal(smp_init(&s, &p, 10, &err2), LLM_EINVAL);
    assert_string_equal(err2.msg, msg);
    assert_null(s.counts);
    smp_deinit(&s);
}

static void test_validation(void **state) {
    (void)state;
    const smp_params_t d = smp_params_default();
    llm_error_t err = {0};
    assert_int_equal(smp_params_validate(&d, &err), 0);
    assert_true(d.temperature == 1 && d.top_k <= 0 && d.top_p == 1 && d.min_p == 0);
    assert_true(d.repetition_penalty == 1 && d.presence_penalty == 0);
    assert_true(d.frequency_penalty == 0 && d.has_seed == 0);
    assert_int_equal(smp_params_validate(NULL, &err), LLM_EINVAL);

    /* Boundary values that are allowed. */
    smp_params_t p = d;
    p.temperature = 0;
    p.top_k = -1;
    p.top_p = 1;
    p.min_p = 1;
    p.repetition_penalty = 1e-3f;
    p.presence_penalty = -2;
    p.frequency_penalty = 2;
    assert_int_equal(smp_params_validate(&p, NULL), 0);
    p.min_p = 0;
    p.top_p = 1e-6f;
    p.presence_penalty = 2;
    p.frequency_penalty = -2;
    assert_int_equal(smp_params_validate(&p, NULL), 0);

    p = d, p.temperature = -0.5f;
    expect_invalid(p, "temperature must be a finite number >= 0, got -0.5");
    p = d, p.temperature = NAN;
    expect_invalid(p, "temperature must be a finite number >= 0, got nan");
    p = d, p.temperature = INFINITY;
    expect_invalid(p, "temperature must be a finite number >= 0, got inf");
    p = d, p.top_p = 1.5f;
    expect_invalid(p, "top_p must be in (0, 1], got 1.5");
    p = d, p.top_p = 0;
    expect_invalid(p, "top_p must be in (0, 1], got 0");
    p = d, p.top_p = NAN;
    expect_invalid(p, "top_p must be in (0, 1], got nan");
    p = d, p.min_p = -0.25f;
    expect_invalid(p, "min_p must be in [0, 1], got -0.25");
    p = d, p.min_p = 1.25f;
    expect_invalid(p, "min_p must be in [0, 1], got 1.25");
    p = d, p.min_p = NAN;
    expect_invalid(p, "min_p must be in [0, 1], got nan");
    p = d, p.repetition_penalty = 0;
    expect_invalid(p, "repetition_penalty must be a finite number > 0, got 0");
    p = d, p.repetition_penalty = -1;
    expect_invalid(p, "repetition_penalty must be a finite number > 0, got -1");
    p = d, p.repetition_penalty = NAN;
    expect_invalid(p, "repetition_penalty must be a finite number > 0, got nan");
    p = d, p.presence_penalty = 2.5f;
    expect_invalid(p, "presence_penalty must be in [-2, 2], got 2.5");
    p = d, p.presence_penalty = -3;
    expect_invalid(p, "presence_penalty must be in [-2, 2], got -3");
    p = d, p.presence_penalty = NAN;
    expect_invalid(p, "presence_penalty must be in [-2, 2], got nan");
    p = d, p.frequency_penalty = -2.5f;
    expect_invalid(p, "frequency_penalty must be in [-2, 2], got -2.5");
    p = d, p.frequency_penalty = NAN;
    expect_invalid(p, "frequency_penalty must be in [-2, 2], got nan");

    /* A bad vocabulary size is refused too. */
    smp_sampler_t s;
    assert_int_equal(smp_init(&s, &d, 0, &err), LLM_EINVAL);
    assert_string_equal(err.msg, "vocab_size must be > 0, got 0");
    smp_deinit(&s);
}

static void test_deinit_safe(void **state) {
    (void)state;
    smp_deinit(NULL);
    smp_sampler_t z;
    memset(&z, 0, sizeof z);
    smp_deinit(&z);
    smp_deinit(&z);
    smp_params_t p = seeded(1);
    smp_sampler_t s = make(&p, 4);
    assert_int_equal(s.vocab_size, 4);
    smp_deinit(&s);
    assert_null(s.probs);
    smp_deinit(&s); /* twice is fine: deinit zeroes */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argmax_and_ties),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_unseeded_differs),
        cmocka_unit_test(test_top_k_1_is_greedy),
        cmocka_unit_test(test_top_k_stays_in_top),
        cmocka_unit_test(test_top_p_nucleus),
        cmocka_unit_test(test_top_k_then_top_p),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_repetition_penalty_values),
        cmocka_unit_test(test_presence_frequency_values),
        cmocka_unit_test(test_distribution_matches),
        cmocka_unit_test(test_temperature_sharpens),
        cmocka_unit_test(test_masked_logits),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_deinit_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
