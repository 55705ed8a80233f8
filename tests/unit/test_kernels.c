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
 *
 * The low-rank adapter kernels (lr_shrink, lr_expand) of every backend, ref included, are
 * compared with a double-precision reference written here (factor values taken from the stored
 * bits, bf16 widened by a shift here, not by kern_*), per output, with the contract's
 * |err| ≤ 1e-5 · Σ|terms| (for expand the prior y is a term), on every combination of
 * r ∈ {1, 3, 16, 64}, d ∈ {1, 7, 33, 576, 2053}, n ∈ {1, 3, 8, 33, 64} with padded strides,
 * misaligned pointers and partial column ranges; NaN in every padding element that must not
 * be read, and bit checks that nothing outside the outputs is written. Each result is also
 * recomputed one token at a time (and, for expand, in two column ranges) and must match bit
 * for bit: a token's result does not depend on its batch-mates.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

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
    double worst_p32[KERN_BK_COUNT]; /* bf16 weights in the P32 layout (rows_p32) */
    long checked_p32[KERN_BK_COUNT];
} stats_t;

/* A P32 copy of m's bf16 weights (kern.h), 64-byte aligned; caller frees. */
static uint16_t *pack_p32(const mats_t *m) {
    uint16_t *p = aligned_alloc(64, kern_p32_bytes(m->rows, m->cols));
    assert_non_null(p);
    kern_pack_p32(m->bf16, m->rows, m->cols, p);
    return p;
}

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
        /* the same bf16 weights in the P32 layout, through every table's rows_p32: the plain C
         * one sums exactly like ref's row-major kernel (bit for bit), the avx512-bf16 outer
         * product rounds activations to bf16 like its row-major dpbf16 kernel */
        if (ty == KERN_W_BF16) {
            uint16_t *pk = pack_p32(m);
            kern_mat_t wp = w;
            wp.data = pk;
            wp.layout = KERN_LAYOUT_P32;
            for (int b = KERN_BK_REF; b < KERN_BK_COUNT; b++) {
                const kern_ops_t *ops = kern_get((kern_backend_t)b);
                if (!ops) continue;
                memset(y, 0xff, (size_t)n * (size_t)rows * 4);
                kern_matmul(ops, &wp, x, n, y, work);
                if (b == KERN_BK_REF) {
                    assert_memory_equal(y, yref, (size_t)n * (size_t)rows * 4);
                    continue;
                }
                const int dp = kern_act_rounding(ops, KERN_W_BF16, cols) == KERN_ACT_BF16;
                for (size_t i = 0; i < (size_t)n * (size_t)rows; i++) {
                    const double tol = (1e-5 + (dp ? 0x1.0p-8 : 0.0)) * S[i] + 1e-30;
                    const double err = fabs((double)y[i] - yref[i]);
                    if (!(err <= tol)) {
                        fprintf(stderr, "%s p32 rows=%lld cols=%lld n=%d: y[%zu] = %.9g, ref "
                                "%.9g, |err| %.3g > tol %.3g\n", ops->name, (long long)rows,
                                (long long)cols, n, i, y[i], yref[i], err, tol);
                        fail();
                    }
                    if (err / tol > st->worst_p32[b]) st->worst_p32[b] = err / tol;
                    st->checked_p32[b]++;
                }
            }
            free(pk);
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
        fprintf(stderr, "  %-12s %-12s %8ld outputs, worst |err|/tol %.3f\n", ops->name,
                "bf16 p32", st->checked_p32[b], st->worst_p32[b]);
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

/* The P32 layout is the one kern.h documents: element (r, k) at (r/32)·32·cp + (k/2)·64 +
 * (r%32)·2 + k%2 (cp = cols rounded up to even), every other element zero, and
 * kern_p32_rows_f32 reads any row range back exactly. */
static void test_p32_layout(void **state) {
    (void)state;
    static const int64_t shapes[][2] = {{37, 5}, {32, 2}, {1, 1}, {70, 64}, {16, 577}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t rows = shapes[si][0], cols = shapes[si][1], cp = (cols + 1) / 2 * 2;
        const size_t bytes = kern_p32_bytes(rows, cols);
        assert_int_equal(bytes, (size_t)((rows + 31) / 32) * 32 * (size_t)cp * 2);
        uint16_t *src = xmalloc((size_t)(rows * cols) * 2), *dst = xmalloc(bytes);
        for (int64_t i = 0; i < rows * cols; i++) /* distinct non-zero bf16 values */
            src[i] = kern_f32_to_bf16((float)(i % 250 + 1) * (i % 2 ? 1.0f : -0.5f));
        memset(dst, 0x5a, bytes); /* padding must be zeroed, not left */
        kern_pack_p32(src, rows, cols, dst);
        size_t placed = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t k = 0; k < cols; k++) {
                const size_t at = (size_t)((r / 32) * 32 * cp + (k / 2) * 64 + (r % 32) * 2 + k % 2);
                assert_int_equal(dst[at], src[r * cols + k]);
                placed++;
            }
        size_t nonzero = 0;
        for (size_t i = 0; i < bytes / 2; i++) nonzero += dst[i] != 0;
        assert_int_equal(nonzero, placed);
        float *back = xmalloc((size_t)(rows * cols) * 4);
        const int64_t r0 = rows / 3, r1 = rows - rows / 4;
        kern_p32_rows_f32(dst, cols, r0, r1, back);
        for (int64_t r = r0; r < r1; r++)
            for (int64_t k = 0; k < cols; k++)
                assert_true(back[(r - r0) * cols + k] == kern_bf16_to_f32(src[r * cols + k]));
        free(back);
        free(src);
        free(dst);
    }
}

/* Every table's rows_p32 on row ranges that start and end inside 32-row groups and 16-row
 * halves (the pool splits on multiples of 16; tests go finer): the rows of the range equal
 * the whole-matrix call bit for bit, nothing outside it is written; and each token alone
 * gives its row of the n-token call bit for bit (one summation order per output whatever the
 * token tile). */
static void test_p32_ranges_and_tokens(void **state) {
    (void)state;
    static const int64_t ranges[][2] = {{0, 77}, {5, 40}, {16, 48}, {31, 33}, {47, 77},
                                        {0, 16}, {70, 77}, {32, 64}, {17, 18}};
    static const int ns[] = {1, 3, 9, 17};
    mats_t m;
    mats_make(&m, 77, 67);
    uint16_t *pk = pack_p32(&m);
    const kern_mat_t w = {.type = KERN_W_BF16, .rows = 77, .cols = 67, .data = pk,
                          .layout = KERN_LAYOUT_P32};
    for (int b = KERN_BK_REF; b < KERN_BK_COUNT; b++) {
        const kern_ops_t *ops = kern_get((kern_backend_t)b);
        if (!ops) continue;
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            const int n = ns[ni];
            float *x = make_x(n, 67), *full = xmalloc((size_t)n * 77 * 4),
                  *y = xmalloc((size_t)n * 77 * 4);
            void *work = xmalloc(kern_work_size(KERN_W_BF16, n, 67));
            kern_act_t a;
            ops->prep(KERN_W_BF16, x, n, 67, work, &a);
            ops->rows_p32(&w, &a, full, 0, 77);
            for (size_t ri = 0; ri < sizeof ranges / sizeof ranges[0]; ri++) {
                const int64_t r0 = ranges[ri][0], r1 = ranges[ri][1];
                memset(y, 0xff, (size_t)n * 77 * 4);
                ops->rows_p32(&w, &a, y, r0, r1);
                for (int t = 0; t < n; t++)
                    for (int64_t r = 0; r < 77; r++) {
                        const float *got = y + t * 77 + r;
                        if (r >= r0 && r < r1)
                            assert_memory_equal(got, full + t * 77 + r, 4);
                        else
                            assert_int_equal(*(const uint32_t *)got, 0xffffffffu);
                    }
            }
            for (int t = 0; t < n; t++) {
                kern_act_t a1;
                void *w1 = xmalloc(kern_work_size(KERN_W_BF16, 1, 67));
                ops->prep(KERN_W_BF16, x + t * 67, 1, 67, w1, &a1);
                ops->rows_p32(&w, &a1, y, 0, 77);
                assert_memory_equal(y, full + t * 77, 77 * 4);
                free(w1);
            }
            free(x);
            free(full);
            free(y);
            free(work);
        }
    }
    free(pk);
    mats_free(&m);
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

/* ---- low-rank adapter kernels (BGMV) vs a double-precision reference ---- */

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const uint32_t LR_POISON = 0x7fc0deadu; /* a NaN, in padding the kernels must not read */

/* The value of stored bf16 bits, widened here (not by kern_*). */
static double bf16_val(uint16_t h) { return (double)bits_f((uint32_t)h << 16); }

/* A random factor (rows, cols) of type ty, its data at an offset of 0 or 1 elements into buf
 * (so 4- and 2-byte aligned data are tested, not only malloc's 16), and val, the stored values
 * in double. bf16: random sign, exponent and 7-bit mantissa, so every stored bit matters;
 * f32: uniform in [-1, 1), full 24-bit mantissas. */
typedef struct {
    kern_mat_t m;
    void *buf;
    double *val; /* (rows, cols) */
} lrfac_t;

static void lrfac_make(lrfac_t *f, kern_wtype_t ty, int64_t rows, int64_t cols) {
    const size_t e = (size_t)rows * (size_t)cols, off = rnd_u32() & 1;
    f->buf = xmalloc((e + 1) * 4);
    f->val = xmalloc(e * sizeof(double));
    f->m = (kern_mat_t){.type = ty, .rows = rows, .cols = cols};
    if (ty == KERN_W_F32) {
        float *d = (float *)f->buf + off;
        for (size_t i = 0; i < e; i++) f->val[i] = d[i] = rnd_f(1.0f);
        f->m.data = d;
    } else {
        uint16_t *d = (uint16_t *)f->buf + off;
        for (size_t i = 0; i < e; i++) {
            uint32_t u = rnd_u32();
            d[i] = (uint16_t)((u & 0x8000u) | ((120u + (u >> 20) % 12) << 7) | (u & 0x7fu));
            f->val[i] = bf16_val(d[i]);
        }
        f->m.data = d;
    }
}

static void lrfac_free(lrfac_t *f) {
    free(f->buf);
    free(f->val);
}

/* n rows of ld floats at an offset of 0–3 floats into a new buffer *buf (the caller frees it):
 * the first cols of each row uniform in [-a, a), the rest LR_POISON. */
static float *lr_rows(void **buf, int n, int64_t cols, int64_t ld, float a) {
    const size_t off = rnd_u32() & 3, e = (size_t)n * (size_t)ld;
    *buf = xmalloc((e + off) * 4);
    float *p = (float *)*buf + off;
    for (size_t i = 0; i < e; i++) {
        if ((int64_t)(i % (size_t)ld) < cols)
            p[i] = rnd_f(a);
        else
            memcpy(&p[i], &LR_POISON, 4);
    }
    return p;
}

/* Padding of a row stride: none in a third of the cases, else 1–8 elements. */
static int64_t lr_pad(void) { return rnd_u32() % 3 ? 1 + (int64_t)(rnd_u32() % 8) : 0; }

typedef struct {
    double worst[2][KERN_BK_COUNT][2]; /* [shrink, expand][backend][f32, bf16]: max err/tol */
    long checked[2][KERN_BK_COUNT][2];
} lr_stats_t;

static void lr_stats_print(const lr_stats_t *st, int op) {
    for (int b = 0; b < KERN_BK_COUNT; b++) {
        const kern_ops_t *ops = kern_get((kern_backend_t)b);
        for (int ty = 0; ops && ty < 2; ty++)
            fprintf(stderr, "  %-12s %-6s %-4s %8ld outputs, worst |err|/tol %.4f\n", ops->name,
                    op ? "expand" : "shrink", kern_wtype_name((kern_wtype_t)ty),
                    st->checked[op][b][ty], st->worst[op][b][ty]);
    }
}

/* One output: |got − want| ≤ tol (NaN fails), else a message with the case and fail(). */
static void lr_check_one(lr_stats_t *st, int op, int b, kern_wtype_t ty, float got, double want,
                         double tol, const char *shape, int t, int64_t i) {
    const double err = fabs((double)got - want);
    if (!(err <= tol)) {
        fprintf(stderr, "%s %s %s %s: out[%d][%lld] = %.9g, want %.9g, |err| %.3g > tol %.3g\n",
                kern_get((kern_backend_t)b)->name, op ? "expand" : "shrink",
                kern_wtype_name(ty), shape, t, (long long)i, got, want, err, tol);
        fail();
    }
    if (tol > 0 && err / tol > st->worst[op][b][ty]) st->worst[op][b][ty] = err / tol;
    st->checked[op][b][ty]++;
}

/* v = x · Aᵀ, A (r, d), n tokens: every backend against double; then each token alone. */
static void lr_check_shrink(lr_stats_t *st, kern_wtype_t ty, int64_t r, int64_t d, int n) {
    lrfac_t a;
    lrfac_make(&a, ty, r, d);
    const int64_t ldx = d + lr_pad(), ldv = r + lr_pad();
    void *xb, *pb, *vb;
    const float *x = lr_rows(&xb, n, d, ldx, 2.0f);
    const float *poison = lr_rows(&pb, n, 0, ldv, 0); /* all NaN: unwritten outputs fail */
    float *v = lr_rows(&vb, n, 0, ldv, 0);
    double *want = xmalloc((size_t)n * (size_t)r * sizeof(double));
    double *S = xmalloc((size_t)n * (size_t)r * sizeof(double));
    for (int t = 0; t < n; t++)
        for (int64_t j = 0; j < r; j++) {
            double e = 0, sa = 0;
            for (int64_t k = 0; k < d; k++) {
                const double p = (double)x[t * ldx + k] * a.val[j * d + k];
                e += p;
                sa += fabs(p);
            }
            want[t * r + j] = e;
            S[t * r + j] = sa;
        }
    char shape[96];
    snprintf(shape, sizeof shape, "r=%lld d=%lld n=%d ldx=%lld ldv=%lld", (long long)r,
             (long long)d, n, (long long)ldx, (long long)ldv);
    for (int b = 0; b < KERN_BK_COUNT; b++) {
        const kern_ops_t *ops = kern_get((kern_backend_t)b);
        if (!ops) continue;
        const size_t vsz = (size_t)n * (size_t)ldv;
        memcpy(v, poison, vsz * 4);
        ops->lr_shrink[ty](&a.m, x, ldx, n, v, ldv);
        for (int t = 0; t < n; t++) {
            for (int64_t j = 0; j < r; j++)
                lr_check_one(st, 0, b, ty, v[t * ldv + j], want[t * r + j], 1e-5 * S[t * r + j],
                             shape, t, j);
            for (int64_t j = r; j < ldv; j++) assert_memory_equal(&v[t * ldv + j], poison, 4);
        }
        for (int t = 0; t < n; t++) {
            float vt[64 + 8]; /* ldv ≤ r + 8 */
            assert_true(ldv <= (int64_t)COUNT(vt));
            memcpy(vt, poison, (size_t)ldv * 4);
            ops->lr_shrink[ty](&a.m, x + t * ldx, ldx, 1, vt, ldv);
            if (memcmp(vt, v + t * ldv, (size_t)ldv * 4)) {
                fprintf(stderr, "%s shrink %s %s: token %d alone differs from the batch\n",
                        ops->name, kern_wtype_name(ty), shape, t);
                fail();
            }
        }
    }
    free(want);
    free(S);
    free(xb);
    free(pb);
    free(vb);
    lrfac_free(&a);
}

/* y[:, c0:c1) += v · Bt, Bt (r, d), n tokens, y pre-filled: every backend against double;
 * nothing else of y written; then each token alone, in the two column ranges [c0, cm) and
 * [cm, c1), must give the same bits. */
static void lr_check_expand(lr_stats_t *st, kern_wtype_t ty, int64_t r, int64_t d, int n,
                            int64_t c0, int64_t c1) {
    lrfac_t bt;
    lrfac_make(&bt, ty, r, d);
    const int64_t ldv = r + lr_pad(), ldy = d + lr_pad();
    const int64_t cm = c0 + (int64_t)(rnd_u32() % (uint32_t)(c1 - c0 + 1));
    void *vb, *y0b, *yb, *y1b;
    const float *v = lr_rows(&vb, n, r, ldv, 2.0f);
    float *y0 = lr_rows(&y0b, n, d, ldy, 3.0f); /* non-zero: checks the accumulation */
    /* -0 outside the range: a kernel that writes y + 0 back there (a full-width store
     * over a tail, say) turns it into +0, which the bit check below sees */
    for (int t = 0; t < n; t++)
        for (int64_t c = 0; c < ldy; c++)
            if (c < c0 || c >= c1) y0[t * ldy + c] = -0.0f;
    float *y = lr_rows(&yb, n, 0, ldy, 0), *y1 = lr_rows(&y1b, n, 0, ldy, 0);
    const size_t ysz = (size_t)n * (size_t)ldy;
    double *want = xmalloc((size_t)n * (size_t)d * sizeof(double));
    double *S = xmalloc((size_t)n * (size_t)d * sizeof(double));
    for (int t = 0; t < n; t++)
        for (int64_t c = 0; c < d; c++) {
            double e = y0[t * ldy + c], sa = fabs(e);
            for (int64_t j = 0; j < r; j++) {
                const double p = (double)v[t * ldv + j] * bt.val[j * d + c];
                e += p;
                sa += fabs(p);
            }
            want[t * d + c] = e;
            S[t * d + c] = sa;
        }
    char shape[128];
    snprintf(shape, sizeof shape, "r=%lld d=%lld n=%d c=[%lld,%lld) ldv=%lld ldy=%lld",
             (long long)r, (long long)d, n, (long long)c0, (long long)c1, (long long)ldv,
             (long long)ldy);
    for (int b = 0; b < KERN_BK_COUNT; b++) {
        const kern_ops_t *ops = kern_get((kern_backend_t)b);
        if (!ops) continue;
        memcpy(y, y0, ysz * 4);
        ops->lr_expand[ty](&bt.m, v, ldv, n, y, ldy, c0, c1);
        for (int t = 0; t < n; t++)
            for (int64_t c = 0; c < ldy; c++) {
                const size_t i = (size_t)t * (size_t)ldy + (size_t)c;
                if (c >= c0 && c < c1)
                    lr_check_one(st, 1, b, ty, y[i], want[t * d + c], 1e-5 * S[t * d + c],
                                 shape, t, c);
                else if (memcmp(&y[i], &y0[i], 4)) {
                    fprintf(stderr, "%s expand %s %s: y[%d][%lld] outside the range written\n",
                            ops->name, kern_wtype_name(ty), shape, t, (long long)c);
                    fail();
                }
            }
        memcpy(y1, y0, ysz * 4);
        for (int t = 0; t < n; t++) {
            ops->lr_expand[ty](&bt.m, v + t * ldv, ldv, 1, y1 + t * ldy, ldy, c0, cm);
            ops->lr_expand[ty](&bt.m, v + t * ldv, ldv, 1, y1 + t * ldy, ldy, cm, c1);
        }
        if (memcmp(y, y1, ysz * 4)) {
            fprintf(stderr, "%s expand %s %s: one token at a time, split at %lld, differs\n",
                    ops->name, kern_wtype_name(ty), shape, (long long)cm);
            fail();
        }
    }
    free(want);
    free(S);
    free(vb);
    free(y0b);
    free(yb);
    free(y1b);
    lrfac_free(&bt);
}

static const int64_t LR_RS[] = {1, 3, 16, 64};
static const int64_t LR_DS[] = {1, 7, 33, 576, 2053};
static const int LR_NS[] = {1, 3, 8, 33, 64};

static void test_lr_shrink(void **state) {
    (void)state;
    lr_stats_t st = {0};
    for (int ty = 0; ty < 2; ty++)
        for (size_t ri = 0; ri < COUNT(LR_RS); ri++)
            for (size_t di = 0; di < COUNT(LR_DS); di++)
                for (size_t ni = 0; ni < COUNT(LR_NS); ni++)
                    lr_check_shrink(&st, (kern_wtype_t)ty, LR_RS[ri], LR_DS[di], LR_NS[ni]);
    lr_stats_print(&st, 0);
}

/* Every shape with all columns, then with a random range 0 ≤ c0 ≤ c1 ≤ d (possibly empty). */
static void test_lr_expand(void **state) {
    (void)state;
    lr_stats_t st = {0};
    for (int ty = 0; ty < 2; ty++)
        for (size_t ri = 0; ri < COUNT(LR_RS); ri++)
            for (size_t di = 0; di < COUNT(LR_DS); di++)
                for (size_t ni = 0; ni < COUNT(LR_NS); ni++) {
                    const int64_t r = LR_RS[ri], d = LR_DS[di];
                    const int64_t c0 = rnd_u32() % (uint32_t)(d + 1);
                    const int64_t c1 = c0 + rnd_u32() % (uint32_t)(d - c0 + 1);
                    lr_check_expand(&st, (kern_wtype_t)ty, r, d, LR_NS[ni], 0, d);
                    lr_check_expand(&st, (kern_wtype_t)ty, r, d, LR_NS[ni], c0, c1);
                }
    lr_stats_print(&st, 1);
}

/* Bit-exact cases. Each A row and each Bt column has a single non-zero factor, so every output
 * is one product: the kernels must return fl(x · a) and fl(y + fl(v · b)) exactly, where a and b
 * are the stored values (bf16 widened) and x, v carry full 24-bit mantissas. A kernel that
 * rounded the activations to bf16, or misread a stored factor, gets a different value. */
static void test_lr_exact_products(void **state) {
    (void)state;
    enum { R = 19, D = 83, N = 5 };
    static const uint16_t BF[] = {0x3fff, 0xc0a5, 0x3e81, 0x4b7f, 0xbf01};
    float x[N * D], v[N * R], y0[N * D];
    for (int i = 0; i < N * D; i++) x[i] = bits_f(0x3f800001u + (rnd_u32() & 0x7fffffu)) - 1.5f;
    for (int i = 0; i < N * R; i++) v[i] = bits_f(0x3fc00001u + (rnd_u32() & 0x3fffffu));
    for (int i = 0; i < N * D; i++) y0[i] = rnd_f(4.0f);
    for (int ty = 0; ty < 2; ty++) {
        float af[R * D] = {0}, bf[R * D] = {0};
        uint16_t ah[R * D] = {0}, bh[R * D] = {0};
        double aval[R], bval[D] = {0};
        int acol[R], brow[D];
        for (int j = 0; j < R; j++) { /* A row j: one factor, at column acol[j] */
            acol[j] = (j * 37 + 11) % D;
            ah[j * D + acol[j]] = BF[j % 5];
            af[j * D + acol[j]] = bits_f(0x3f800001u + (rnd_u32() & 0x7fffffu));
            aval[j] = ty ? bf16_val(BF[j % 5]) : af[j * D + acol[j]];
        }
        for (int c = 0; c < D; c++) { /* Bt column c: one factor, in row brow[c] */
            brow[c] = (c * 7) % R;
            bh[brow[c] * D + c] = BF[c % 5];
            bf[brow[c] * D + c] = bits_f(0xbf800001u + (rnd_u32() & 0x7fffffu));
            bval[c] = ty ? bf16_val(BF[c % 5]) : bf[brow[c] * D + c];
        }
        const kern_wtype_t t = ty ? KERN_W_BF16 : KERN_W_F32;
        const kern_mat_t a = {.type = t, .rows = R, .cols = D, .data = ty ? (void *)ah : af};
        const kern_mat_t bt = {.type = t, .rows = R, .cols = D, .data = ty ? (void *)bh : bf};
        for (int b = 0; b < KERN_BK_COUNT; b++) {
            const kern_ops_t *ops = kern_get((kern_backend_t)b);
            if (!ops) continue;
            float vo[N * R], y[N * D];
            ops->lr_shrink[t](&a, x, D, N, vo, R);
            memcpy(y, y0, sizeof y);
            ops->lr_expand[t](&bt, v, R, N, y, D, 0, D);
            for (int k = 0; k < N; k++) {
                for (int j = 0; j < R; j++) {
                    const float want = (float)((double)x[k * D + acol[j]] * aval[j]);
                    if (vo[k * R + j] != want) {
                        fprintf(stderr, "%s shrink %s: v[%d][%d] = %a, want %a\n", ops->name,
                                kern_wtype_name(t), k, j, vo[k * R + j], want);
                        fail();
                    }
                }
                for (int c = 0; c < D; c++) {
                    const float p = (float)((double)v[k * R + brow[c]] * bval[c]);
                    const float want = y0[k * D + c] + p;
                    if (y[k * D + c] != want) {
                        fprintf(stderr, "%s expand %s: y[%d][%d] = %a, want %a\n", ops->name,
                                kern_wtype_name(t), k, c, y[k * D + c], want);
                        fail();
                    }
                }
            }
        }
    }
}

/* Size bytes ending exactly where a PROT_NONE page starts: a read or write past the end
 * faults (cmocka reports the signal as a failure). *map, *len: what to munmap. */
static void *guarded(size_t size, void **map, size_t *len) {
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE), body = (size + pg - 1) / pg * pg;
    *len = body + pg;
    *map = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(*map != MAP_FAILED);
    assert_int_equal(mprotect((char *)*map + body, pg, PROT_NONE), 0);
    return (char *)*map + body - size;
}

/* Nothing is read or written past the end of x, A, v, Bt or y, with unpadded strides and
 * the last column in range: the tails must be masked. */
static void test_lr_no_overrun(void **state) {
    (void)state;
    static const int64_t ds[] = {1, 7, 33, 95, 2053};
    static const int64_t rs[] = {1, 3, 16};
    static const int ns[] = {1, 3, 8};
    for (size_t di = 0; di < COUNT(ds); di++)
        for (size_t ri = 0; ri < COUNT(rs); ri++)
            for (size_t ni = 0; ni < COUNT(ns); ni++)
                for (int ty = 0; ty < 2; ty++) {
                    const int64_t d = ds[di], r = rs[ri];
                    const int n = ns[ni];
                    const size_t es = ty ? 2 : 4, fe = (size_t)r * (size_t)d;
                    void *m[5];
                    size_t len[5];
                    float *x = guarded((size_t)n * (size_t)d * 4, &m[0], &len[0]);
                    void *a = guarded(fe * es, &m[1], &len[1]);
                    float *v = guarded((size_t)n * (size_t)r * 4, &m[2], &len[2]);
                    void *b = guarded(fe * es, &m[3], &len[3]);
                    float *y = guarded((size_t)n * (size_t)d * 4, &m[4], &len[4]);
                    for (size_t i = 0; i < (size_t)n * (size_t)d; i++) x[i] = rnd_f(1.0f);
                    for (size_t i = 0; i < fe; i++) {
                        float f = rnd_f(1.0f);
                        if (ty)
                            ((uint16_t *)a)[i] = ((uint16_t *)b)[i] = kern_f32_to_bf16(f);
                        else
                            ((float *)a)[i] = ((float *)b)[i] = f;
                    }
                    const kern_wtype_t t = ty ? KERN_W_BF16 : KERN_W_F32;
                    const kern_mat_t am = {.type = t, .rows = r, .cols = d, .data = a};
                    const kern_mat_t bm = {.type = t, .rows = r, .cols = d, .data = b};
                    for (int k = 0; k < KERN_BK_COUNT; k++) {
                        const kern_ops_t *ops = kern_get((kern_backend_t)k);
                        if (!ops) continue;
                        memset(y, 0, (size_t)n * (size_t)d * 4);
                        ops->lr_shrink[t](&am, x, d, n, v, r);
                        ops->lr_expand[t](&bm, v, r, n, y, d, 0, d);
                        ops->lr_expand[t](&bm, v, r, n, y, d, d / 2, d);
                    }
                    for (int i = 0; i < 5; i++) munmap(m[i], len[i]);
                }
}

/* Every backend fills the f32 and bf16 slots and leaves int8 NULL (unsupported). */
static void test_lr_table(void **state) {
    (void)state;
    for (int b = 0; b < KERN_BK_COUNT; b++) {
        const kern_ops_t *ops = kern_get((kern_backend_t)b);
        if (!ops) continue;
        assert_non_null(ops->lr_shrink[KERN_W_F32]);
        assert_non_null(ops->lr_shrink[KERN_W_BF16]);
        assert_non_null(ops->lr_expand[KERN_W_F32]);
        assert_non_null(ops->lr_expand[KERN_W_BF16]);
        assert_null(ops->lr_shrink[KERN_W_I8]);
        assert_null(ops->lr_expand[KERN_W_I8]);
    }
}

/* ---- attention kernels ---- */

/* Cache element i of a block as the kernels read it. */
static double kv_val(const void *p, size_t i, kern_wtype_t ty) {
    return ty == KERN_W_BF16 ? bf16_val(((const uint16_t *)p)[i]) : (double)((const float *)p)[i];
}

static void *kv_make(kern_wtype_t ty, size_t n) {
    void *p = xmalloc(n * (ty == KERN_W_BF16 ? 2 : 4));
    for (size_t i = 0; i < n; i++) {
        const float f = rnd_f(2.0f);
        if (ty == KERN_W_BF16) ((uint16_t *)p)[i] = kern_f32_to_bf16(f);
        else ((float *)p)[i] = f;
    }
    return p;
}

/* Scores and weighted values of every backend against an fp64 sum of the same stored values,
 * within 1e-5 of the sum of |terms| (kern.h), on odd head counts, head sizes, block lengths and
 * key strides; outputs outside the stated ranges untouched. */
static void test_attn_kernels(void **state) {
    (void)state;
    static const int gs[] = {1, 2, 3, 4, 5, 8};
    static const int hds[] = {1, 7, 16, 64, 80, 128};
    static const int njs[] = {1, 5, 16, 19};
    int checked = 0;
    for (int ty = 0; ty < 2; ty++)
        for (size_t gi = 0; gi < COUNT(gs); gi++)
            for (size_t hi = 0; hi < COUNT(hds); hi++)
                for (size_t ji = 0; ji < COUNT(njs); ji++) {
                    const kern_wtype_t t = ty ? KERN_W_BF16 : KERN_W_F32;
                    const int g = gs[gi], hd = hds[hi], nj = njs[ji];
                    const int64_t ldk = nj + (int64_t)(rnd_u32() % 3), lds = nj + 3;
                    const int64_t ldv = hd + (int64_t)(rnd_u32() % 3);
                    float *q = xmalloc(sizeof(float) * (size_t)g * hd);
                    float *p = xmalloc(sizeof(float) * (size_t)g * lds);
                    float *o0 = xmalloc(sizeof(float) * (size_t)g * hd);
                    for (int i = 0; i < g * hd; i++) q[i] = rnd_f(1.0f), o0[i] = rnd_f(1.0f);
                    for (int i = 0; i < g * lds; i++) p[i] = rnd_f(1.0f) * 0.5f + 0.5f;
                    void *kt = kv_make(t, (size_t)hd * (size_t)ldk);
                    void *v = kv_make(t, (size_t)nj * (size_t)ldv);
                    float *s = xmalloc(sizeof(float) * (size_t)g * lds);
                    float *o = xmalloc(sizeof(float) * (size_t)g * hd);
                    for (int b = 0; b < KERN_BK_COUNT; b++) {
                        const kern_ops_t *ops = kern_get((kern_backend_t)b);
                        if (!ops) continue;
                        for (int i = 0; i < g * lds; i++) s[i] = -7.0f; /* poison */
                        ops->attn_scores[t](q, g, hd, kt, ldk, nj, 0.125f, s, lds);
                        memcpy(o, o0, sizeof(float) * (size_t)g * hd);
                        ops->attn_values[t](p, lds, g, v, ldv, nj, hd, o);
                        for (int h = 0; h < g; h++) {
                            for (int j = 0; j < lds; j++) {
                                const float got = s[(size_t)h * lds + j];
                                if (j >= nj) {
                                    assert_true(got == -7.0f);
                                    continue;
                                }
                                double want = 0, mag = 0;
                                for (int i = 0; i < hd; i++) {
                                    const double term = (double)q[h * hd + i] *
                                                        kv_val(kt, (size_t)i * ldk + j, t);
                                    want += term, mag += fabs(term);
                                }
                                want *= 0.125, mag *= 0.125;
                                if (fabs(got - want) > 1e-5 * mag + 1e-30) {
                                    fprintf(stderr, "%s scores %s g %d hd %d nj %d: [%d][%d] "
                                            "%.9g want %.9g\n", ops->name, kern_wtype_name(t),
                                            g, hd, nj, h, j, got, want);
                                    fail();
                                }
                            }
                            for (int i = 0; i < hd; i++) {
                                double want = o0[h * hd + i], mag = fabs(want);
                                for (int j = 0; j < nj; j++) {
                                    const double term = (double)p[(size_t)h * lds + j] *
                                                        kv_val(v, (size_t)j * ldv + i, t);
                                    want += term, mag += fabs(term);
                                }
                                if (fabs(o[h * hd + i] - want) > 1e-5 * mag) {
                                    fprintf(stderr, "%s values %s g %d hd %d nj %d: [%d][%d] "
                                            "%.9g want %.9g\n", ops->name, kern_wtype_name(t),
                                            g, hd, nj, h, i, o[h * hd + i], want);
                                    fail();
                                }
                            }
                        }
                        checked++;
                    }
                    free(q), free(p), free(o0), free(kt), free(v), free(s), free(o);
                }
    assert_true(checked >= 2 * 6 * 6 * 4 * 2); /* ref and at least one SIMD backend */
}

/* Nothing is read or written past the ends of q, kt, v, s, p or o with unpadded strides. */
static void test_attn_no_overrun(void **state) {
    (void)state;
    static const int hds[] = {1, 7, 64, 80};
    static const int njs[] = {1, 5, 16};
    for (size_t hi = 0; hi < COUNT(hds); hi++)
        for (size_t ji = 0; ji < COUNT(njs); ji++)
            for (int g = 1; g <= 5; g += 2)
                for (int ty = 0; ty < 2; ty++) {
                    const int hd = hds[hi], nj = njs[ji];
                    const kern_wtype_t t = ty ? KERN_W_BF16 : KERN_W_F32;
                    const size_t es = ty ? 2 : 4;
                    void *m[5];
                    size_t len[5];
                    float *q = guarded((size_t)g * hd * 4, &m[0], &len[0]);
                    void *kt = guarded((size_t)hd * nj * es, &m[1], &len[1]);
                    void *v = guarded((size_t)nj * hd * es, &m[2], &len[2]);
                    float *s = guarded((size_t)g * nj * 4, &m[3], &len[3]);
                    float *o = guarded((size_t)g * hd * 4, &m[4], &len[4]);
                    memset(q, 0, (size_t)g * hd * 4);
                    memset(kt, 0, (size_t)hd * nj * es);
                    memset(v, 0, (size_t)nj * hd * es);
                    memset(o, 0, (size_t)g * hd * 4);
                    for (int k = 0; k < KERN_BK_COUNT; k++) {
                        const kern_ops_t *ops = kern_get((kern_backend_t)k);
                        if (!ops) continue;
                        ops->attn_scores[t](q, g, hd, kt, nj, nj, 1.0f, s, nj);
                        ops->attn_values[t](s, nj, g, v, hd, nj, hd, o);
                        (void)ops->exp_sum(s, g * nj, 0.0f);
                    }
                    for (int i = 0; i < 5; i++) munmap(m[i], len[i]);
                }
}

/* exp_sum: every value within 3e-7 relative of the fp64 exponential of the (fp32) difference
 * where the result is
 * normal (the vectorised exponential's stated bound), ≤ FLT_MIN where it is not, and the sum
 * their sum within fp32 summation error; checked over the whole argument range softmax meets, including
 * arguments far below the maximum (0 or denormal). */
static void test_exp_sum(void **state) {
    (void)state;
    enum { N = 4099 };
    float *x = xmalloc(sizeof(float) * N), *s = xmalloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) x[i] = -110.0f + 170.0f * (float)i / (N - 1);
    x[0] = -INFINITY;
    x[1] = 0.0f;
    x[2] = -0.0f;
    x[3] = 80.5f; /* e^79: large, and the sum still finite */
    x[4] = -87.3f;
    for (int b = 0; b < KERN_BK_COUNT; b++) {
        const kern_ops_t *ops = kern_get((kern_backend_t)b);
        if (!ops) continue;
        for (int n = 1; n <= N; n += n < 40 ? 1 : 1000) {
            const float mx = 1.5f;
            memcpy(s, x, sizeof(float) * N);
            const float sum = ops->exp_sum(s, n, mx);
            double want_sum = 0;
            for (int i = 0; i < n; i++) {
                const double want = exp((double)(x[i] - mx)); /* the fp32 difference */
                want_sum += want;
                if (want >= FLT_MIN ? fabs(s[i] - want) > 3e-7 * want
                                    : !(s[i] >= 0.0f && s[i] <= FLT_MIN)) {
                    fprintf(stderr, "%s exp(%.9g) = %.9g, want %.9g\n", ops->name,
                            (double)x[i] - mx, s[i], want);
                    fail();
                }
            }
            /* fp32 summation of n positive terms: n·2⁻²⁴ relative, plus the values' own 3e-7 */
            if (!(fabs(sum - want_sum) <= (n * 0x1p-24 + 3e-7) * want_sum))
                fprintf(stderr, "%s n %d sum %.9g want %.9g\n", ops->name, n, sum, want_sum);
            assert_true(fabs(sum - want_sum) <= (n * 0x1p-24 + 3e-7) * want_sum);
            for (int i = n; i < N; i++) assert_true(s[i] == x[i] || (isnan(s[i]) && isnan(x[i])));
        }
    }
    free(x), free(s);
}

/* swiglu: silu(g)·u within 1e-6 relative (+1e-30) of fp64 for every backend, over gates from
 * −100 (e^100 in the denominator) to 100, on lengths that leave every tail size; nothing past
 * n is written. */
static void test_swiglu(void **state) {
    (void)state;
    enum { N = 1037 };
    float *g0 = xmalloc(sizeof(float) * (N + 1)), *u = xmalloc(sizeof(float) * N);
    float *g = xmalloc(sizeof(float) * (N + 1));
    for (int i = 0; i < N; i++) g0[i] = -100.0f + 200.0f * (float)i / (N - 1), u[i] = rnd_f(3.0f);
    g0[1] = 0.0f;
    g0[2] = -1e-20f;
    for (int b = 0; b < KERN_BK_COUNT; b++) {
        const kern_ops_t *ops = kern_get((kern_backend_t)b);
        if (!ops) continue;
        for (int n = 1; n <= N; n += n < 40 ? 1 : 331) {
            memcpy(g, g0, sizeof(float) * N);
            g[n] = 12345.0f;
            ops->swiglu(g, u, (size_t)n);
            assert_true(g[n] == 12345.0f);
            for (int i = 0; i < n; i++) {
                const double x = g0[i], want = x / (1.0 + exp(-x)) * u[i];
                if (!(fabs(g[i] - want) <= 1e-6 * fabs(want) + 1e-30)) {
                    fprintf(stderr, "%s swiglu(%.9g, %.9g) = %.9g, want %.9g\n", ops->name, x,
                            (double)u[i], g[i], want);
                    fail();
                }
            }
        }
    }
    free(g0), free(u), free(g);
}

/* Every backend fills the f32 and bf16 cache slots and leaves int8 NULL. */
static void test_attn_table(void **state) {
    (void)state;
    for (int b = 0; b < KERN_BK_COUNT; b++) {
        const kern_ops_t *ops = kern_get((kern_backend_t)b);
        if (!ops) continue;
        assert_non_null(ops->attn_scores[KERN_W_F32]);
        assert_non_null(ops->attn_scores[KERN_W_BF16]);
        assert_non_null(ops->attn_values[KERN_W_F32]);
        assert_non_null(ops->attn_values[KERN_W_BF16]);
        assert_null(ops->attn_scores[KERN_W_I8]);
        assert_null(ops->attn_values[KERN_W_I8]);
        assert_non_null(ops->exp_sum);
        assert_non_null(ops->swiglu);
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

/* kern_pool_park sends a spinning worker to sleep at once (its spin here: a minute), the next
 * run wakes it and clears the park, so after that run the worker spins again. */
static int sleeping_within(kern_pool_t *p, int want, double seconds) {
    for (double t = 0; t < seconds; t += 0.001) {
        if (kern_pool_sleeping(p) == want) return 1;
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return kern_pool_sleeping(p) == want;
}

static void test_pool_park(void **state) {
    (void)state;
    kern_pool_t *p;
    assert_int_equal(kern_pool_create(2, &p), 0);
    kern_pool_set_spin(p, 60LL * 1000 * 1000 * 1000);
    for (int it = 0; it < 3; it++) {
        int hits[64] = {0};
        cover_t c = {.hits = hits, .align = 16};
        kern_pool_run(p, cover_fn, &c, 64, 16);
        for (int i = 0; i < 64; i++) assert_int_equal(hits[i], 1);
        assert_false(sleeping_within(p, 1, 0.05)); /* spinning, not parked */
        kern_pool_park(p);
        assert_true(sleeping_within(p, 1, 10.0));
    }
    kern_pool_free(p); /* wakes the parked worker to stop it */
    kern_pool_t *one;
    assert_int_equal(kern_pool_create(1, &one), 0);
    kern_pool_park(one); /* no workers: nothing to park */
    assert_int_equal(kern_pool_sleeping(one), 0);
    kern_pool_free(one);
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
        cmocka_unit_test(test_p32_layout),
        cmocka_unit_test(test_p32_ranges_and_tokens),
        cmocka_unit_test(test_backends_small),
        cmocka_unit_test(test_backends_large),
        cmocka_unit_test(test_backends_chunked),
        cmocka_unit_test(test_lr_table),
        cmocka_unit_test(test_attn_kernels),
        cmocka_unit_test(test_attn_no_overrun),
        cmocka_unit_test(test_exp_sum),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_attn_table),
        cmocka_unit_test(test_lr_exact_products),
        cmocka_unit_test(test_lr_shrink),
        cmocka_unit_test(test_lr_no_overrun),
        cmocka_unit_test(test_lr_expand),
        cmocka_unit_test(test_pool_identical_1_2_threads),
        cmocka_unit_test(test_pool_run_covers),
        cmocka_unit_test(test_pool_wakes_after_sleep),
        cmocka_unit_test(test_pool_park),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
