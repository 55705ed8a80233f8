/* test_kernels.c: unit tests of core/kernels (dispatch table, backends, pool, conversions).
 *
 * Every backend this CPU can run is compared with kern_ref on random shapes including odd
 * sizes (rows 1, 3, 17, 576, 1000 × cols 1, 7, 64, 576, 1537 × n up to 32, plus shapes that
 * span several column chunks, up to 8257 columns and n = 40), per output, with
 * tolerances derived from what each path does (S = Σ_k |x_k · w_k| in double, w as stored):
 *   - paths with fp32 activations (f32, bf16 widen, int8 widen): |y − ref| ≤ 1e-5 · S. The
 *     products are the reference's exact products; only the fp32 summation order differs
 *     (observed ≤ ~1e-6 · S);
 *   - bf16 via vdpbf16ps: activations rounded to bf16 (relative error ≤ 2⁻⁸), so
 *     |y − ref| ≤ (2⁻⁸ + 1e-5) · S;
 *   - int8 via VNNI: activations quantised per token with step sx = max|x_t| / 127, each moved
 *     by ≤ sx/2, so |y − ref| ≤ (1 + 1e-4) · scale_r · sx · ½ · Σ_k |q_k| + 1e-5 · S.
 * The worst observed error / tolerance ratio of each (backend, dtype) is printed.
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
#include <time.h>

#include "kern.h"
#include "llm_error.h"

/* ---- helpers ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd_u32(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return (uint32_t)(x >> 32);
}

/* uniform in [-a, a) */
static float rnd_f(float a) { return ((float)rnd_u32() * 0x1.0p-32f * 2.0f - 1.0f) * a; }

static float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* A weight matrix in all three storage types, from the same random fp32 values. */
typedef struct {
    int64_t rows, cols;
    float *f32;
    uint16_t *bf16;
    int8_t *q;
    float *scale;
    float *wf[KERN_W_COUNT]; /* the stored values as fp32 (bf16 widened, q · scale unscaled) */
} mats_t;

static void mats_make(mats_t *m, int64_t rows, int64_t cols) {
    size_t e = (size_t)rows * (size_t)cols;
    m->rows = rows;
    m->cols = cols;
    m->f32 = xmalloc(e * 4);
    m->bf16 = xmalloc(e * 2);
    m->q = xmalloc(e);
    m->scale = xmalloc((size_t)rows * 4);
    for (size_t i = 0; i < e; i++) m->f32[i] = rnd_f(1.0f);
    /* a few rows with a different magnitude, so scales differ between rows */
    for (int64_t r = 0; r < rows; r += 5)
        for (int64_t k = 0; k < cols; k++) m->f32[(size_t)r * (size_t)cols + (size_t)k] *= 0.01f;
    kern_f32_to_bf16_n(m->f32, m->bf16, e);
    kern_quant_i8_rows(m->f32, rows, cols, m->q, m->scale);
    for (int t = 0; t < KERN_W_COUNT; t++) m->wf[t] = xmalloc(e * 4);
    for (size_t i = 0; i < e; i++) {
        m->wf[KERN_W_F32][i] = m->f32[i];
        m->wf[KERN_W_BF16][i] = kern_bf16_to_f32(m->bf16[i]);
        m->wf[KERN_W_I8][i] = (float)m->q[i];
    }
}

static void mats_free(mats_t *m) {
    free(m->f32);
    free(m->bf16);
    free(m->q);
    free(m->scale);
    for (int t = 0; t < KERN_W_COUNT; t++) free(m->wf[t]);
}

static kern_mat_t mat_of(const mats_t *m, kern_wtype_t t) {
    kern_mat_t w = {.type = t, .rows = m->rows, .cols = m->cols};
    w.data = t == KERN_W_F32 ? (const void *)m->f32
             : t == KERN_W_BF16 ? (const void *)m->bf16
                                : (const void *)m->q;
    w.scale = t == KERN_W_I8 ? m->scale : NULL;
    return w;
}

/* Activations: uniform [-2, 2); token 1 (if any) gets one large outlier, which sets its int8
 * step; token 2 (if any) is all zero. */
static float *make_x(int n, int64_t cols) {
    float *x = xmalloc((size_t)n * (size_t)cols * 4);
    for (size_t i = 0; i < (size_t)n * (size_t)cols; i++) x[i] = rnd_f(2.0f);
    if (n > 1) x[(size_t)cols + (size_t)(cols / 2)] = 40.0f;
    if (n > 2) memset(x + 2 * (size_t)cols, 0, (size_t)cols * 4);
    return x;
}

static int backend_available(kern_backend_t b) { return kern_get(b) != NULL; }

/* ---- backends vs kern_ref ---- */

typedef struct {
    double worst[KERN_BK_COUNT][KERN_W_COUNT]; /* max err / tol */
    long checked[KERN_BK_COUNT][KERN_W_COUNT];
} stats_t;

/* Compares every available backend with ref on one shape and all three dtypes. */
static void check_shape(stats_t *st, const mats_t *m, int n) {
    const int64_t rows = m->rows, cols = m->cols;
    float *x = make_x(n, cols);
    float *yref = xmalloc((size_t)n * (size_t)rows * 4);
    float *y = xmalloc((size_t)n * (size_t)rows * 4);
    double *S = xmalloc((size_t)n * (size_t)rows * sizeof(double));
    double *Q = xmalloc((size_t)rows * sizeof(double));
    double *sx = xmalloc((size_t)n * sizeof(double));
    for (int t = 0; t < n; t++) {
        float mx = 0.0f;
        for (int64_t k = 0; k < cols; k++) mx = fmaxf(mx, fabsf(x[(size_t)t * cols + k]));
        sx[t] = mx / 127.0;
    }
    for (int ty = 0; ty < KERN_W_COUNT; ty++) {
        kern_mat_t w = mat_of(m, (kern_wtype_t)ty);
        const float *wf = m->wf[ty];
        size_t wsz = kern_work_size(w.type, n, cols);
        void *work = wsz ? xmalloc(wsz) : NULL;
        kern_matmul(kern_get(KERN_BK_REF), &w, x, n, yref, work);
        for (int64_t r = 0; r < rows; r++) {
            double sc = ty == KERN_W_I8 ? m->scale[r] : 1.0, q = 0.0;
            for (int64_t k = 0; k < cols; k++) q += fabs(wf[(size_t)r * cols + k]);
            Q[r] = q * sc;
            for (int t = 0; t < n; t++) {
                double s = 0.0;
                for (int64_t k = 0; k < cols; k++)
                    s += fabs((double)wf[(size_t)r * cols + k] * x[(size_t)t * cols + k]);
                S[(size_t)t * rows + r] = s * sc;
            }
        }
        for (int b = KERN_BK_REF + 1; b < KERN_BK_COUNT; b++) {
            const kern_ops_t *ops = kern_get((kern_backend_t)b);
            if (!ops) continue;
            const int dp = !strcmp(ops->path[ty], "bf16 dpbf16");
            const int vnni = !strcmp(ops->path[ty], "int8 vnni");
            memset(y, 0xff, (size_t)n * (size_t)rows * 4); /* NaN: unwritten outputs fail */
            kern_matmul(ops, &w, x, n, y, work);
            for (int t = 0; t < n; t++) {
                for (int64_t r = 0; r < rows; r++) {
                    size_t i = (size_t)t * rows + r;
                    double tol = 1e-5 * S[i] + 1e-30;
                    if (dp) tol += 0x1.0p-8 * S[i];
                    if (vnni) tol += (1 + 1e-4) * 0.5 * sx[t] * Q[r];
                    double err = fabs((double)y[i] - yref[i]);
                    if (!(err <= tol)) {
                        fprintf(stderr,
                                "%s %s rows=%lld cols=%lld n=%d: y[%d][%lld] = %.9g, ref %.9g,"
                                " |err| %.3g > tol %.3g\n",
                                ops->name, ops->path[ty], (long long)rows, (long long)cols, n,
                                t, (long long)r, y[i], yref[i], err, tol);
                        fail();
                    }
                    if (err / tol > st->worst[b][ty]) st->worst[b][ty] = err / tol;
                    st->checked[b][ty]++;
                }
            }
        }
        free(work);
    }
    free(x);
    free(yref);
    free(y);
    free(S);
    free(Q);
    free(sx);
}

static void print_stats(const stats_t *st) {
    for (int b = KERN_BK_REF + 1; b < KERN_BK_COUNT; b++) {
        const kern_ops_t *ops = kern_get((kern_backend_t)b);
        if (!ops) {
            fprintf(stderr, "  backend %d: not supported by this CPU, skipped\n", b);
            continue;
        }
        for (int ty = 0; ty < KERN_W_COUNT; ty++)
            fprintf(stderr, "  %-12s %-12s %8ld outputs, worst |err|/tol %.3f\n", ops->name,
                    ops->path[ty], st->checked[b][ty], st->worst[b][ty]);
    }
}

static const int64_t ROWS[] = {1, 3, 17, 576, 1000};
static const int64_t COLS[] = {1, 7, 64, 576, 1537};

/* Small shapes (rows ≤ 17 or cols ≤ 64): every n from 1 to 32. */
static void test_backends_small(void **state) {
    (void)state;
    stats_t st = {0};
    for (size_t ri = 0; ri < 5; ri++)
        for (size_t ci = 0; ci < 5; ci++) {
            if (ROWS[ri] > 17 && COLS[ci] > 64) continue;
            mats_t m;
            mats_make(&m, ROWS[ri], COLS[ci]);
            for (int n = 1; n <= 32; n++) check_shape(&st, &m, n);
            mats_free(&m);
        }
    print_stats(&st);
}

/* Large shapes: the n that exercise each token tiling (1, 2, 3, 4, 5, 8, 16, 17, 32). */
static void test_backends_large(void **state) {
    (void)state;
    static const int NS[] = {1, 2, 3, 4, 5, 8, 16, 17, 32};
    stats_t st = {0};
    for (size_t ri = 3; ri < 5; ri++)
        for (size_t ci = 3; ci < 5; ci++) {
            mats_t m;
            mats_make(&m, ROWS[ri], COLS[ci]);
            for (size_t j = 0; j < sizeof NS / sizeof NS[0]; j++) check_shape(&st, &m, NS[j]);
            mats_free(&m);
        }
    print_stats(&st);
}

/* Shapes whose columns span several k-chunks of every SIMD path (f32 and widening paths
 * 1024, dpbf16 2048, vnni 4096 columns per chunk), with n up to 40: n > 32 runs unchunked. */
static void test_backends_chunked(void **state) {
    (void)state;
    static const int64_t rs[] = {5, 67};
    static const int64_t cs[] = {2113, 4099, 8257};
    static const int ns[] = {2, 5, 17, 32, 33, 40};
    stats_t st = {0};
    for (size_t ri = 0; ri < 2; ri++)
        for (size_t ci = 0; ci < 3; ci++) {
            mats_t m;
            mats_make(&m, rs[ri], cs[ci]);
            for (size_t j = 0; j < sizeof ns / sizeof ns[0]; j++) check_shape(&st, &m, ns[j]);
            mats_free(&m);
        }
    print_stats(&st);
}

/* Exact values where the answer is known: w = identity-like rows and small integers, so
 * every path (even dpbf16 and vnni, whose inputs are then exactly representable) is exact. */
static void test_backends_exact_integers(void **state) {
    (void)state;
    enum { R = 9, C = 70, N = 6 };
    float wf[R * C], x[N * C];
    for (int r = 0; r < R; r++)
        for (int k = 0; k < C; k++) wf[r * C + k] = (float)((r + 2 * k) % 7 - 3);
    for (int t = 0; t < N; t++)
        for (int k = 0; k < C; k++) x[t * C + k] = (float)((3 * t + k) % 5 - 2);
    /* one token's max |x| is 127 so its int8 step is exactly 1 */
    for (int k = 0; k < C; k++) x[4 * C + k] = (float)((k * 37) % 255 - 127);
    uint16_t wb[R * C];
    int8_t wq[R * C];
    float sc[R];
    kern_f32_to_bf16_n(wf, wb, R * C);
    kern_quant_i8_rows(wf, R, C, wq, sc);
    for (int r = 0; r < R; r++) assert_true(sc[r] == 3.0f / 127.0f);
    for (int b = 0; b < KERN_BK_COUNT; b++) {
        const kern_ops_t *ops = kern_get((kern_backend_t)b);
        if (!ops) continue;
        for (int ty = 0; ty < KERN_W_COUNT; ty++) {
            kern_mat_t w = {.type = (kern_wtype_t)ty, .rows = R, .cols = C};
            w.data = ty == KERN_W_F32 ? (const void *)wf : ty == KERN_W_BF16 ? (void *)wb : wq;
            w.scale = ty == KERN_W_I8 ? sc : NULL;
            char work[4096];
            assert_true(kern_work_size(w.type, N, C) <= sizeof work);
            float y[N * R];
            kern_matmul(ops, &w, x, N, y, work);
            for (int t = 0; t < N; t++)
                for (int r = 0; r < R; r++) {
                    double e = 0;
                    for (int k = 0; k < C; k++) e += (double)wf[r * C + k] * x[t * C + k];
                    /* int8: q = w · 127/3 exactly for |w| = 3, else rounded: compare with
                     * the stored q · scale, times the int8 step of x for vnni (exact only
                     * for token 4, whose x are integers with max 127) */
                    if (ty == KERN_W_I8) {
                        e = 0;
                        for (int k = 0; k < C; k++) e += (double)wq[r * C + k] * x[t * C + k];
                        e *= sc[r];
                        if (strcmp(ops->path[ty], "int8 vnni") == 0 && t != 4) continue;
                    }
                    if (fabs(y[t * R + r] - e) > 1e-6 * (1 + fabs(e))) {
                        fprintf(stderr, "%s %s t=%d r=%d: %.9g want %.9g\n", ops->name,
                                ops->path[ty], t, r, y[t * R + r], e);
                        fail();
                    }
                }
        }
    }
}

/* ---- threads ---- */

static void test_pool_identical_1_2_threads(void **state) {
    (void)state;
    kern_pool_t *p1, *p2;
    assert_int_equal(kern_pool_create(1, &p1), 0);
    assert_int_equal(kern_pool_create(2, &p2), 0);
    assert_int_equal(kern_pool_size(p1), 1);
    assert_int_equal(kern_pool_size(p2), 2);
    /* 1000 rows split as 512 + 488: the second range starts mid-way through the 8- and
     * 4-row blocks of a single-thread run; 1537 columns are chunked at n > 1 */
    static const int64_t rs[] = {3, 17, 1000};
    static const int64_t cs[] = {7, 1537};
    static const int ns[] = {1, 5, 17, 32};
    for (size_t ri = 0; ri < 3; ri++)
        for (size_t ci = 0; ci < 2; ci++) {
            mats_t m;
            mats_make(&m, rs[ri], cs[ci]);
            for (size_t ni = 0; ni < 4; ni++) {
                int n = ns[ni];
                float *x = make_x(n, cs[ci]);
                size_t ysz = (size_t)n * (size_t)rs[ri] * 4;
                float *y0 = xmalloc(ysz), *y1 = xmalloc(ysz), *y2 = xmalloc(ysz);
                for (int b = 0; b < KERN_BK_COUNT; b++) {
                    const kern_ops_t *ops = kern_get((kern_backend_t)b);
                    if (!ops) continue;
                    for (int ty = 0; ty < KERN_W_COUNT; ty++) {
                        kern_mat_t w = mat_of(&m, (kern_wtype_t)ty);
                        void *work = xmalloc(kern_work_size(w.type, n, w.cols));
                        memset(y1, 0xff, ysz);
                        memset(y2, 0xff, ysz);
                        kern_matmul(ops, &w, x, n, y0, work);
                        kern_matmul_mt(ops, p1, &w, x, n, y1, work);
                        kern_matmul_mt(ops, p2, &w, x, n, y2, work);
                        if (memcmp(y0, y1, ysz) || memcmp(y1, y2, ysz)) {
                            fprintf(stderr, "%s %s rows=%lld cols=%lld n=%d differs\n",
                                    ops->name, ops->path[ty], (long long)rs[ri],
                                    (long long)cs[ci], n);
                            fail();
                        }
                        free(work);
                    }
                }
                free(x);
                free(y0);
                free(y1);
                free(y2);
            }
            mats_free(&m);
        }
    kern_pool_free(p1);
    kern_pool_free(p2);
}

typedef struct {
    int *hits;
    int64_t align;
    int bad;
} cover_t;

static void cover_fn(void *arg, int64_t i0, int64_t i1, int tid) {
    cover_t *c = arg;
    if (i0 >= i1 || i0 % c->align || tid < 0) c->bad = 1;
    for (int64_t i = i0; i < i1; i++) __atomic_fetch_add(&c->hits[i], 1, __ATOMIC_RELAXED);
}

/* Every index exactly once, ranges on align boundaries, for many sizes and many runs. */
static void test_pool_run_covers(void **state) {
    (void)state;
    static const int threads[] = {1, 2, 3};
    for (size_t ti = 0; ti < 3; ti++) {
        kern_pool_t *p;
        assert_int_equal(kern_pool_create(threads[ti], &p), 0);
        int hits[300];
        for (int64_t total = 0; total <= 300; total += 7) {
            for (int64_t align = 1; align <= 64; align *= 4) {
                memset(hits, 0, sizeof hits);
                cover_t c = {.hits = hits, .align = align};
                kern_pool_run(p, cover_fn, &c, total, align);
                assert_int_equal(c.bad, 0);
                for (int64_t i = 0; i < total; i++) assert_int_equal(hits[i], 1);
            }
        }
        /* many back-to-back runs: shakes out lost wake-ups and early returns (fewer with 3
         * threads: on a 2-core machine each run may wait for a descheduled participant) */
        for (int it = 0; it < (threads[ti] <= 2 ? 20000 : 1000); it++) {
            hits[0] = hits[1] = hits[2] = hits[3] = 0;
            cover_t c = {.hits = hits, .align = 1};
            kern_pool_run(p, cover_fn, &c, 4, 1);
            assert_int_equal(hits[0] + hits[1] + hits[2] + hits[3], 4);
        }
        kern_pool_free(p);
    }
    kern_pool_t *p = (kern_pool_t *)1;
    assert_int_equal(kern_pool_create(0, &p), LLM_EINVAL);
    assert_null(p);
    assert_int_equal(kern_pool_create(65, &p), LLM_EINVAL);
    kern_pool_free(NULL);
}

/* Workers that went to sleep (idle > spin time) must wake up for the next run. */
static void test_pool_wakes_after_sleep(void **state) {
    (void)state;
    kern_pool_t *p;
    assert_int_equal(kern_pool_create(2, &p), 0);
    for (int it = 0; it < 5; it++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int hits[64] = {0};
        cover_t c = {.hits = hits, .align = 16};
        kern_pool_run(p, cover_fn, &c, 64, 16);
        for (int i = 0; i < 64; i++) assert_int_equal(hits[i], 1);
    }
    kern_pool_free(p);
}

/* ---- dispatch ---- */

static kern_backend_t best_backend(void) {
    kern_backend_t b = KERN_BK_REF;
    for (int i = 0; i < KERN_BK_COUNT; i++)
        if (backend_available((kern_backend_t)i)) b = (kern_backend_t)i;
    return b;
}

static void test_select_and_override(void **state) {
    (void)state;
    char desc[256];
    assert_non_null(kern_get(KERN_BK_REF));
    assert_null(kern_get(KERN_BK_COUNT));

    unsetenv("LORAMUX_KERNELS");
    const kern_ops_t *k = kern_select(desc, sizeof desc);
    assert_ptr_equal(k, kern_get(best_backend()));
    assert_true(strncmp(desc, "kernels: ", 9) == 0);
    assert_non_null(strstr(desc, k->name));
    fprintf(stderr, "  default: %s\n", desc);

    setenv("LORAMUX_KERNELS", "ref", 1);
    k = kern_select(desc, sizeof desc);
    assert_string_equal(k->name, "ref");
    assert_non_null(strstr(desc, "[LORAMUX_KERNELS=ref]"));

    setenv("LORAMUX_KERNELS", "avx2", 1);
    k = kern_select(desc, sizeof desc);
    if (backend_available(KERN_BK_AVX2)) {
        assert_string_equal(k->name, "avx2");
    } else {
        assert_non_null(strstr(desc, "not supported"));
    }

    setenv("LORAMUX_KERNELS", "avx512", 1);
    k = kern_select(desc, sizeof desc);
    if (backend_available(KERN_BK_AVX512)) {
        assert_ptr_equal(k, kern_get(best_backend()));
        assert_true(strncmp(k->name, "avx512", 6) == 0);
    } else {
        assert_non_null(strstr(desc, "not supported"));
    }

    setenv("LORAMUX_KERNELS", "avx512f", 1);
    k = kern_select(desc, sizeof desc);
    if (backend_available(KERN_BK_AVX512)) assert_string_equal(k->name, "avx512");
    fprintf(stderr, "  forced:  %s\n", desc);

    setenv("LORAMUX_KERNELS", "sse9", 1);
    k = kern_select(desc, sizeof desc);
    assert_ptr_equal(k, kern_get(best_backend()));
    assert_non_null(strstr(desc, "not recognised"));

    /* truncation and NULL desc */
    char small[12];
    k = kern_select(small, sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_non_null(kern_select(NULL, 0));
    unsetenv("LORAMUX_KERNELS");
}

/* ---- conversions ---- */

static void test_bf16_round_nearest_even(void **state) {
    (void)state;
    static const struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        {0x3f800000u, 0x3f80}, /* 1.0 */
        {0x3f808000u, 0x3f80}, /* 1 + 2⁻⁸: tie, 0x3f80 is even → down */
        {0x3f818000u, 0x3f82}, /* tie between 0x3f81 and 0x3f82 → up to even */
        {0x3f808001u, 0x3f81}, /* just above the tie → up */
        {0x3f807fffu, 0x3f80}, /* just below → down */
        {0xbfc00000u, 0xbfc0}, /* -1.5 */
        {0xbf818000u, 0xbf82}, /* negative tie → even magnitude */
        {0x3f7fffffu, 0x3f80}, /* 0.99999994 rounds up across the exponent */
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds past the largest bf16 → Inf */
        {0x7f7f7fffu, 0x7f7f}, /* stays finite */
        {0x7f800000u, 0x7f80}, /* +Inf */
        {0xff800000u, 0xff80}, /* -Inf */
        {0x7fc00000u, 0x7fc0}, /* quiet NaN */
        {0x7f800001u, 0x7fc0}, /* signalling NaN whose payload is below bit 16 stays NaN */
        {0x00000000u, 0x0000},
        {0x80000000u, 0x8000}, /* -0 */
        {0x00008000u, 0x0000}, /* denormal tie → even (0) */
        {0x00018000u, 0x0002}, /* denormal tie → even (2) */
        {0x00010001u, 0x0001},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = kern_f32_to_bf16(bits_f(cases[i].in));
        if (got != cases[i].out) {
            fprintf(stderr, "bf16(0x%08x) = 0x%04x, want 0x%04x\n", cases[i].in, got,
                    cases[i].out);
            fail();
        }
    }
    assert_true(kern_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(kern_bf16_to_f32(0xc040) == -3.0f);
    /* round trip of every finite bf16 value */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7f80) == 0x7f80) continue;
        assert_int_equal(kern_f32_to_bf16(kern_bf16_to_f32((uint16_t)h)), h);
    }
    /* the array form matches the scalar one */
    float src[37];
    uint16_t dst[37];
    for (int i = 0; i < 37; i++) src[i] = rnd_f(100.0f);
    kern_f32_to_bf16_n(src, dst, 37);
    for (int i = 0; i < 37; i++) assert_int_equal(dst[i], kern_f32_to_bf16(src[i]));
}

/* The dpbf16 backend's activation rounding (vcvtneps2bf16 in prep) equals kern_f32_to_bf16
 * on normal numbers, ties included. */
static void test_bf16_prep_matches_scalar(void **state) {
    (void)state;
    const kern_ops_t *ops = kern_get(KERN_BK_AVX512_BF16);
    if (!ops) {
        fprintf(stderr, "  avx512-bf16 not supported, skipped\n");
        return;
    }
    enum { N = 3, C = 77 };
    float x[N * C];
    for (int i = 0; i < N * C; i++) x[i] = rnd_f(10.0f);
    x[0] = bits_f(0x3f808000u);
    x[1] = bits_f(0x3f818000u);
    x[2] = bits_f(0xbf818000u);
    x[3] = bits_f(0x3f7fffffu);
    char work[2048];
    assert_true(kern_work_size(KERN_W_BF16, N, C) <= sizeof work);
    kern_act_t a;
    ops->prep(KERN_W_BF16, x, N, C, work, &a);
    assert_non_null(a.xb);
    for (int t = 0; t < N; t++) {
        for (int k = 0; k < C; k++)
            assert_int_equal(a.xb[t * a.ld + k], kern_f32_to_bf16(x[t * C + k]));
        for (int64_t k = C; k < a.ld; k++) assert_int_equal(a.xb[t * a.ld + k], 0);
    }
}

static void test_quant_i8_known_values(void **state) {
    (void)state;
    const float src[3 * 6] = {
        0.5f, -1.0f, 0.25f, 0.0f,  1.0f / 127, -0.75f, /* max 1: q = round(x·127) */
        127,  0.5f,  1.5f,  2.5f,  -0.5f,      -2.5f,  /* max 127: step 1, ties to even */
        0,    0,     0,     0,     0,          0,      /* all zero: scale 0, q 0 */
    };
    static const int8_t want[3 * 6] = {
        64, -127, 32, 0, 1, -95, /* 63.5 → 64 (even), 31.75 → 32, -95.25 → -95 */
        127, 0, 2, 2, 0, -2,     /* 0.5 → 0, 1.5 → 2, 2.5 → 2, -0.5 → -0, -2.5 → -2 */
        0, 0, 0, 0, 0, 0,
    };
    int8_t q[18];
    float sc[3];
    kern_quant_i8_rows(src, 3, 6, q, sc);
    assert_true(sc[0] == 1.0f / 127.0f);
    assert_true(sc[1] == 1.0f);
    assert_true(sc[2] == 0.0f);
    for (int i = 0; i < 18; i++) {
        if (q[i] != want[i]) {
            fprintf(stderr, "q[%d] = %d, want %d\n", i, q[i], want[i]);
            fail();
        }
    }
    /* random rows: |src − q·scale| ≤ scale/2, and max |q| = 127 */
    enum { R = 7, C = 301 };
    float *s = xmalloc(R * C * 4);
    int8_t *qq = xmalloc(R * C);
    float sc2[R];
    for (int i = 0; i < R * C; i++) s[i] = rnd_f(3.0f);
    kern_quant_i8_rows(s, R, C, qq, sc2);
    for (int r = 0; r < R; r++) {
        int mx = 0;
        for (int k = 0; k < C; k++) {
            double e = fabs(s[r * C + k] - (double)qq[r * C + k] * sc2[r]);
            assert_true(e <= 0.5 * sc2[r] * (1 + 1e-5));
            if (abs(qq[r * C + k]) > mx) mx = abs(qq[r * C + k]);
        }
        assert_int_equal(mx, 127);
    }
    free(s);
    free(qq);
}

/* The VNNI backends quantise activations exactly like kern_quant_i8_rows does rows, and
 * record the per-token sums the offset correction needs. */
static void test_vnni_prep_matches_scalar(void **state) {
    (void)state;
    for (int b = KERN_BK_AVX512_VNNI; b <= KERN_BK_AVX512_BF16; b++) {
        const kern_ops_t *ops = kern_get((kern_backend_t)b);
        if (!ops) {
            fprintf(stderr, "  backend %d not supported, skipped\n", b);
            continue;
        }
        enum { N = 4, C = 130 };
        float x[N * C];
        for (int i = 0; i < N * C; i++) x[i] = rnd_f(5.0f);
        memset(x + 2 * C, 0, C * 4);
        x[3 * C + 5] = 63.5f / 127.0f * 9.0f; /* exact tie when max is 9 */
        x[3 * C + 6] = -9.0f;
        int8_t q[N * C];
        float sc[N];
        kern_quant_i8_rows(x, N, C, q, sc);
        char work[4096];
        assert_true(kern_work_size(KERN_W_I8, N, C) <= sizeof work);
        kern_act_t a;
        ops->prep(KERN_W_I8, x, N, C, work, &a);
        assert_non_null(a.xq);
        for (int t = 0; t < N; t++) {
            assert_true(a.xs[t] == sc[t]);
            int32_t sum = 0;
            for (int k = 0; k < C; k++) {
                assert_int_equal(a.xq[t * a.ld + k], q[t * C + k]);
                sum += q[t * C + k];
            }
            for (int64_t k = C; k < a.ld; k++) assert_int_equal(a.xq[t * a.ld + k], 0);
            assert_int_equal(a.xsum[t], sum);
        }
    }
}

static void test_names_and_sizes(void **state) {
    (void)state;
    assert_string_equal(kern_wtype_name(KERN_W_F32), "f32");
    assert_string_equal(kern_wtype_name(KERN_W_BF16), "bf16");
    assert_string_equal(kern_wtype_name(KERN_W_I8), "int8");
    assert_int_equal(kern_wtype_size(KERN_W_F32), 4);
    assert_int_equal(kern_wtype_size(KERN_W_BF16), 2);
    assert_int_equal(kern_wtype_size(KERN_W_I8), 1);
    /* room for an aligned fp32 copy of x (the largest prep), for every weight type */
    for (int ty = 0; ty < KERN_W_COUNT; ty++) {
        assert_true(kern_work_size((kern_wtype_t)ty, 32, 2048) >= 32 * 2048 * 4);
        assert_true(kern_work_size((kern_wtype_t)ty, 3, 7) >= 3 * 64 * 4);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_sizes),
        cmocka_unit_test(test_bf16_round_nearest_even),
        cmocka_unit_test(test_bf16_prep_matches_scalar),
        cmocka_unit_test(test_quant_i8_known_values),
        cmocka_unit_test(test_vnni_prep_matches_scalar),
        cmocka_unit_test(test_select_and_override),
        cmocka_unit_test(test_backends_exact_integers),
        cmocka_unit_test(test_backends_small),
        cmocka_unit_test(test_backends_large),
        cmocka_unit_test(test_backends_chunked),
        cmocka_unit_test(test_pool_identical_1_2_threads),
        cmocka_unit_test(test_pool_run_covers),
        cmocka_unit_test(test_pool_wakes_after_sleep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
