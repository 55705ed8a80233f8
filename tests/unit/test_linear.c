/* test_linear.c: core_linear on every weight type, decode-sized and prompt-sized (the kernels in
 * token slices for bf16 and int8, sgemm per worker for fp32), against each other and against an
 * fp64 reference; weight storage and conversion (core_weight_init). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linear.h"
#include "tensor.h"

static uint64_t g_rng = 88172645463325252ull;
static float frand(void) { /* xorshift64, uniform in [-1, 1) */
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

enum { ROWS = 301, COLS = 203, N = 45 }; /* odd sizes; N > CORE_KERN_MAX_N */

typedef struct {
    float w[ROWS * COLS], x[N * COLS];
} data_t;

static data_t *make_data(void) {
    data_t *d = malloc(sizeof *d);
    for (int i = 0; i < ROWS * COLS; i++) d->w[i] = frand() * 0.5f;
    for (int i = 0; i < N * COLS; i++) d->x[i] = frand();
    d->w[7] = 3.0f; /* one outlier, so int8 scales differ across rows */
    return d;
}

/* The same step as one prompt-sized call (N > CORE_KERN_MAX_N: kernel slices, or sgemm for
 * fp32) and as N single-token calls (kernel path): equal to fp32 rounding, since activations
 * are rounded per token whatever the slice. Both are within the kernel's stated accuracy of
 * the fp64 product of the stored weights. */
static void check_paths(kern_wtype_t wt, int threads, kern_layout_t layout) {
    data_t *d = make_data();
    core_weight_t w;
    assert_int_equal(core_weight_init(&w, wt, CORE_DT_F32, d->w, ROWS, COLS, NULL), 0);
    assert_int_equal(core_weight_pack(&w, layout), 0);
    core_exec_t *ex;
    assert_int_equal(core_exec_create(threads, N, COLS, &ex), 0);
    float *yg = malloc(sizeof(float) * N * ROWS), *yk = malloc(sizeof(float) * N * ROWS);
    core_linear(ex, &w, d->x, N, yg);
    for (int t = 0; t < N; t++) core_linear(ex, &w, d->x + (size_t)t * COLS, 1, yk + t * ROWS);
    float *row = malloc(sizeof(float) * COLS);
    double worst_paths = 0, worst_ref = 0;
    for (int r = 0; r < ROWS; r++) {
        core_weight_row(&w, r, row); /* the stored (rounded) weights */
        for (int t = 0; t < N; t++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < COLS; k++) {
                ref += (double)row[k] * d->x[t * COLS + k];
                mag += fabs((double)row[k] * d->x[t * COLS + k]);
            }
            worst_paths = fmax(worst_paths, fabs((double)yg[t * ROWS + r] - yk[t * ROWS + r]) / mag);
            worst_ref = fmax(worst_ref, fabs((double)yk[t * ROWS + r] - ref) / mag);
        }
    }
    /* kern.h: exact activations 1e-5 Σ|x·w|; bf16 activations 2⁻⁸; int8 activations ½ step */
    const double ref_tol = kern_act_rounding(core_exec_ops(ex), wt, COLS) == KERN_ACT_F32 ? 1e-5
                           : wt == KERN_W_BF16                                           ? 4e-3
                                                                                         : 1e-2;
    if (worst_paths > 1e-5 || worst_ref > ref_tol)
        fprintf(stderr, "%s, %d threads: paths differ by %.3g, kernel vs fp64 %.3g (tol %.3g)\n",
                kern_wtype_name(wt), threads, worst_paths, worst_ref, ref_tol);
    assert_true(worst_paths <= 1e-5);
    assert_true(worst_ref <= ref_tol);
    /* bf16 and int8 take the kernels at every n: the step equals its tokens one by one, bit
     * for bit (the kernels sum each output in the same order whatever the tile or slice) */
    if (wt != KERN_W_F32) assert_memory_equal(yg, yk, sizeof(float) * N * ROWS);
    free(row);
    free(yg);
    free(yk);
    core_exec_free(ex);
    core_weight_deinit(&w);
    free(d);
}

static void test_paths_agree_f32(void **s) { (void)s; check_paths(KERN_W_F32, 2, 0); }
static void test_paths_agree_bf16(void **s) { (void)s; check_paths(KERN_W_BF16, 2, 0); }
static void test_paths_agree_int8(void **s) { (void)s; check_paths(KERN_W_I8, 3, 0); }
static void test_paths_agree_one_thread(void **s) { (void)s; check_paths(KERN_W_BF16, 1, 0); }
/* bf16 in 32-row panels (ROWS = 301: the last group is partial; 3 threads split inside
 * groups) */
static void test_paths_agree_bf16_p32(void **s) {
    (void)s;
    check_paths(KERN_W_BF16, 3, KERN_LAYOUT_P32);
    check_paths(KERN_W_BF16, 1, KERN_LAYOUT_P32);
}

/* Decode-sized steps give bit-identical results on any number of threads. */
static void test_threads_bit_identical(void **state) {
    (void)state;
    data_t *d = make_data();
    for (int v = 0; v <= KERN_W_COUNT; v++) { /* every type, then bf16 in 32-row panels */
        const int wt = v < KERN_W_COUNT ? v : KERN_W_BF16;
        core_weight_t w;
        assert_int_equal(core_weight_init(&w, (kern_wtype_t)wt, CORE_DT_F32, d->w, ROWS, COLS,
                                          NULL), 0);
        if (v == KERN_W_COUNT) assert_int_equal(core_weight_pack(&w, KERN_LAYOUT_P32), 0);
        float y[2][8 * ROWS];
        for (int th = 0; th < 2; th++) {
            core_exec_t *ex;
            assert_int_equal(core_exec_create(th ? 4 : 1, 8, COLS, &ex), 0);
            assert_int_equal(core_exec_threads(ex), th ? 4 : 1);
            core_linear(ex, &w, d->x, 8, y[th]);
            core_exec_free(ex);
        }
        assert_memory_equal(y[0], y[1], sizeof y[0]);
        core_weight_deinit(&w);
    }
    free(d);
}

/* core_linear_multi (q, k, v in one parallel region) gives each matrix what core_linear
 * gives it: bit for bit on the kernel path (any n for bf16 and int8), to fp32 rounding on the
 * sgemm path (fp32 weights, n > CORE_KERN_MAX_N). */
static void test_multi_equals_single(void **state) {
    (void)state;
    data_t *d = make_data();
    enum { R0 = 64, R1 = 32, R2 = 96 }; /* sub-matrices of the test weights */
    for (int v = 0; v <= KERN_W_COUNT; v++) { /* every type, then bf16 in 32-row panels */
        const int wt = v < KERN_W_COUNT ? v : KERN_W_BF16;
        core_weight_t w[3];
        const int rows[3] = {R0, R1, R2};
        for (int m = 0, off = 0; m < 3; off += rows[m], m++) {
            assert_int_equal(core_weight_init(&w[m], (kern_wtype_t)wt, CORE_DT_F32,
                                              d->w + (size_t)off * COLS, rows[m], COLS, NULL),
                             0);
            if (v == KERN_W_COUNT) assert_int_equal(core_weight_pack(&w[m], KERN_LAYOUT_P32), 0);
        }
        core_exec_t *ex;
        assert_int_equal(core_exec_create(3, N, COLS, &ex), 0);
        core_exec_set_min_parallel(ex, 0);
        for (int n = 1; n <= N; n += N - 1) { /* 1: kernel path, N: slices or sgemm */
            float *one[3], *multi[3];
            for (int m = 0; m < 3; m++) {
                one[m] = malloc(sizeof(float) * (size_t)n * rows[m]);
                multi[m] = malloc(sizeof(float) * (size_t)n * rows[m]);
                core_linear(ex, &w[m], d->x, n, one[m]);
            }
            const core_weight_t *ws[3] = {&w[0], &w[1], &w[2]};
            core_linear_multi(ex, ws, 3, d->x, n, multi);
            for (int m = 0; m < 3; m++) {
                if (n <= CORE_KERN_MAX_N || wt != KERN_W_F32) {
                    assert_memory_equal(one[m], multi[m], sizeof(float) * (size_t)n * rows[m]);
                } else {
                    for (int i = 0; i < n * rows[m]; i++)
                        assert_true(fabsf(one[m][i] - multi[m][i]) <=
                                    1e-5f * (1.0f + fabsf(one[m][i])));
                }
                free(one[m]);
                free(multi[m]);
            }
        }
        core_exec_free(ex);
        for (int m = 0; m < 3; m++) core_weight_deinit(&w[m]);
    }
    free(d);
}

/* Storage: bf16 rounds to nearest even (and copies a bf16 source bit for bit), int8 keeps
 * every element within half a step of its row's scale, non-finite sources are refused with
 * the element's index, and the sizes are what --weights promises. */
static void test_weight_storage(void **state) {
    (void)state;
    float src[2 * 3] = {1.0f, -2.5f, 0.1f, 0.0f, 0.0f, 0.0f};
    core_weight_t w;
    assert_int_equal(core_weight_init(&w, KERN_W_BF16, CORE_DT_F32, src, 2, 3, NULL), 0);
    assert_int_equal(((const uint16_t *)w.data)[2], kern_f32_to_bf16(0.1f));
    assert_int_equal((uintptr_t)w.data % 64, 0);
    assert_int_equal(core_weight_bytes(&w), 12);
    float row[3];
    core_weight_row(&w, 0, row);
    assert_true(row[0] == 1.0f && row[1] == -2.5f && fabsf(row[2] - 0.1f) < 1e-3f);
    core_weight_deinit(&w);

    uint16_t b16[3] = {0x3f80, 0xc020, 0x3dcd}; /* 1, -2.5, ~0.1 */
    assert_int_equal(core_weight_init(&w, KERN_W_BF16, CORE_DT_BF16, b16, 1, 3, NULL), 0);
    assert_memory_equal(w.data, b16, sizeof b16);
    core_weight_deinit(&w);

    assert_int_equal(core_weight_init(&w, KERN_W_I8, CORE_DT_F32, src, 2, 3, NULL), 0);
    assert_non_null(w.scale);
    assert_true(w.scale[0] == 2.5f / 127.0f && w.scale[1] == 0.0f); /* all-zero row: scale 0 */
    assert_int_equal(core_weight_bytes(&w), 6 + 2 * sizeof(float));
    core_weight_row(&w, 0, row);
    for (int k = 0; k < 3; k++) assert_true(fabsf(row[k] - src[k]) <= w.scale[0] / 2 * 1.0001f);
    core_weight_row(&w, 1, row);
    assert_true(row[0] == 0.0f && row[1] == 0.0f && row[2] == 0.0f);
    core_weight_deinit(&w);

    src[4] = NAN;
    int64_t bad = -1;
    assert_int_equal(core_weight_init(&w, KERN_W_BF16, CORE_DT_F32, src, 2, 3, &bad),
                     LLM_EFORMAT);
    assert_int_equal(bad, 4);
    assert_null(w.data);
    src[4] = INFINITY;
    assert_int_equal(core_weight_init(&w, KERN_W_I8, CORE_DT_F32, src, 2, 3, &bad), LLM_EFORMAT);

    /* re-laid out in 32-row panels: every row reads back the same, the bytes count the
     * padding (2 rows → one group of 32, 3 columns → 4), other types are left alone */
    src[4] = 7.0f;
    assert_int_equal(core_weight_init(&w, KERN_W_BF16, CORE_DT_F32, src, 2, 3, NULL), 0);
    float before[2][3], after[3];
    for (int r = 0; r < 2; r++) core_weight_row(&w, r, before[r]);
    assert_int_equal(core_weight_pack(&w, KERN_LAYOUT_P32), 0);
    assert_int_equal(w.layout, KERN_LAYOUT_P32);
    assert_int_equal((uintptr_t)w.data % 64, 0);
    assert_int_equal(core_weight_bytes(&w), 32 * 4 * 2);
    assert_int_equal(core_weight_mat(&w).layout, KERN_LAYOUT_P32);
    for (int r = 0; r < 2; r++) {
        core_weight_row(&w, r, after);
        assert_memory_equal(after, before[r], sizeof after);
    }
    core_weight_deinit(&w);
    assert_int_equal(core_weight_init(&w, KERN_W_I8, CORE_DT_F32, src, 2, 3, NULL), 0);
    assert_int_equal(core_weight_pack(&w, KERN_LAYOUT_P32), 0);
    assert_int_equal(w.layout, KERN_LAYOUT_ROWS);
    core_weight_deinit(&w);

    kern_wtype_t t;
    assert_int_equal(core_wtype_parse("int8", &t), 0);
    assert_int_equal(t, KERN_W_I8);
    assert_int_equal(core_wtype_parse("fp16", &t), LLM_EINVAL);
    assert_int_equal(core_wtype_parse(NULL, &t), LLM_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paths_agree_f32),
        cmocka_unit_test(test_paths_agree_bf16),
        cmocka_unit_test(test_paths_agree_int8),
        cmocka_unit_test(test_paths_agree_one_thread),
        cmocka_unit_test(test_paths_agree_bf16_p32),
        cmocka_unit_test(test_threads_bit_identical),
        cmocka_unit_test(test_multi_equals_single),
        cmocka_unit_test(test_weight_storage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
