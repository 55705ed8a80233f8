/* kern_ref.c: the reference kernels, plain C in the style of llama2.c's matmul.
 *
 * The oracle every other backend is tested against, and the fallback on CPUs without AVX2.
 * Activations stay fp32; bf16 weights are widened exactly and int8 weights are used as
 * q · scale, so the only rounding is fp32 accumulation in k order. Each weight row is read
 * once and dotted against all n tokens while it is in L1 (the loop order is row, then token).
 */
#include "kern_int.h"

/* ---- rows kernels ---- */

static void rows_f32(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t r0,
                     int64_t r1) {
    const int64_t cols = w->cols, rows = w->rows;
    for (int64_t r = r0; r < r1; r++) {
        const float *wr = (const float *)w->data + (size_t)r * (size_t)cols;
        for (int t = 0; t < a->n; t++) {
            const float *xt = a->x + (size_t)t * (size_t)a->ldx;
            float s = 0.0f;
            for (int64_t k = 0; k < cols; k++) s += wr[k] * xt[k];
            y[(size_t)t * (size_t)rows + (size_t)r] = s;
        }
    }
}

static void rows_bf16(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t r0,
                      int64_t r1) {
    const int64_t cols = w->cols, rows = w->rows;
    for (int64_t r = r0; r < r1; r++) {
        const uint16_t *wr = (const uint16_t *)w->data + (size_t)r * (size_t)cols;
        for (int t = 0; t < a->n; t++) {
            const float *xt = a->x + (size_t)t * (size_t)a->ldx;
            float s = 0.0f;
            for (int64_t k = 0; k < cols; k++) s += kern__bf16f(wr[k]) * xt[k];
            y[(size_t)t * (size_t)rows + (size_t)r] = s;
        }
    }
}

/* Sums q·x in fp32 and scales once per output: the same value as Σ (q·scale)·x up to one
 * rounding, and the form the SIMD widening paths use, so they agree to summation order. */
static void rows_i8(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t r0,
                    int64_t r1) {
    const int64_t cols = w->cols, rows = w->rows;
    for (int64_t r = r0; r < r1; r++) {
        const int8_t *wr = (const int8_t *)w->data + (size_t)r * (size_t)cols;
        for (int t = 0; t < a->n; t++) {
            const float *xt = a->x + (size_t)t * (size_t)a->ldx;
            float s = 0.0f;
            for (int64_t k = 0; k < cols; k++) s += (float)wr[k] * xt[k];
            y[(size_t)t * (size_t)rows + (size_t)r] = s * w->scale[r];
        }
    }
}

/* ---- table ---- */

const kern_ops_t kern__ref_ops = {
    .name = "ref",
    .path = {"f32 scalar", "bf16 scalar", "int8 scalar"},
    .prep = kern__prep_none,
    .rows = {rows_f32, rows_bf16, rows_i8},
};
