/* kern_ref.c: the reference kernels, plain C in the style of llama2.c's matmul.
 *
 * The oracle every other backend is tested against, and the fallback on CPUs without AVX2.
 * Activations stay fp32; bf16 weights are widened exactly and int8 weights are used as
 * q · scale, so the only rounding is fp32 accumulation in k order. Each weight row is read
 * once and dotted against all n tokens while it is in L1 (the loop order is row, then token).
 * The low-rank adapter kernels (lr_shrink, lr_expand) follow the same rules.
 */
#include "kern_int.h"

#include <math.h>

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

/* bf16 weights in the P32 layout (kern.h), the same sums as rows_bf16 bit for bit: the
 * fallback of every table whose CPU lacks the outer-product kernel, and its oracle's twin. */
void kern__rows_p32(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t r0,
                    int64_t r1) {
    const int64_t cols = w->cols, rows = w->rows, cp = kern__p32_cp(cols);
    for (int64_t r = r0; r < r1; r++) {
        const uint16_t *wr = (const uint16_t *)w->data + kern__p32_index(r, 0, cp);
        for (int t = 0; t < a->n; t++) {
            const float *xt = a->x + (size_t)t * (size_t)a->ldx;
            float s = 0.0f;
            for (int64_t k = 0; k < cols; k++)
                s += kern__bf16f(wr[kern__p32_index(0, k, cp)]) * xt[k];
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

/* ---- low-rank adapter kernels ---- */

/* Element i of a factor as fp32; TY is a constant at every call, so the switch folds away. */
static inline __attribute__((always_inline)) float fac(const void *p, size_t i,
                                                      const kern_wtype_t TY) {
    return TY == KERN_W_BF16 ? kern__bf16f(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* Row j of A, then every token against it: A is read once for all n tokens. */
static inline __attribute__((always_inline)) void lr_shrink(const kern_mat_t *a, const float *x,
                                                            int64_t ldx, int n, float *v,
                                                            int64_t ldv, const kern_wtype_t TY) {
    const int64_t d = a->cols;
    for (int64_t j = 0; j < a->rows; j++) {
        const size_t row = (size_t)j * (size_t)d;
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * (size_t)ldx;
            float s = 0.0f;
            for (int64_t k = 0; k < d; k++) s += fac(a->data, row + (size_t)k, TY) * xt[k];
            v[(size_t)t * (size_t)ldv + (size_t)j] = s;
        }
    }
}

/* Columns in tiles of LR_TILE: the tile's r × LR_TILE block of Bt serves every token from L1,
 * and each output sums its r products in j order before it is added to y (once). */
#define LR_TILE 16

static inline __attribute__((always_inline)) void lr_expand(const kern_mat_t *bt,
                                                            const float *v, int64_t ldv, int n,
                                                            float *y, int64_t ldy, int64_t c0,
                                                            int64_t c1, const kern_wtype_t TY) {
    for (int64_t c = c0; c < c1; c += LR_TILE) {
        const int w = c1 - c < LR_TILE ? (int)(c1 - c) : LR_TILE;
        for (int t = 0; t < n; t++) {
            const float *vt = v + (size_t)t * (size_t)ldv;
            float s[LR_TILE] = {0};
            for (int64_t j = 0; j < bt->rows; j++) {
                const size_t row = (size_t)j * (size_t)bt->cols + (size_t)c;
                for (int i = 0; i < w; i++) s[i] += vt[j] * fac(bt->data, row + (size_t)i, TY);
            }
            float *yt = y + (size_t)t * (size_t)ldy + (size_t)c;
            for (int i = 0; i < w; i++) yt[i] += s[i];
        }
    }
}

static void lr_shrink_f32(const kern_mat_t *a, const float *x, int64_t ldx, int n, float *v,
                          int64_t ldv) {
    lr_shrink(a, x, ldx, n, v, ldv, KERN_W_F32);
}

static void lr_shrink_bf16(const kern_mat_t *a, const float *x, int64_t ldx, int n, float *v,
                           int64_t ldv) {
    lr_shrink(a, x, ldx, n, v, ldv, KERN_W_BF16);
}

static void lr_expand_f32(const kern_mat_t *bt, const float *v, int64_t ldv, int n, float *y,
                          int64_t ldy, int64_t c0, int64_t c1) {
    lr_expand(bt, v, ldv, n, y, ldy, c0, c1, KERN_W_F32);
}

static void lr_expand_bf16(const kern_mat_t *bt, const float *v, int64_t ldv, int n, float *y,
                           int64_t ldy, int64_t c0, int64_t c1) {
    lr_expand(bt, v, ldv, n, y, ldy, c0, c1, KERN_W_BF16);
}

/* ---- attention kernels ---- */

static inline __attribute__((always_inline)) float kvel(const void *p, size_t i,
                                                         kern_wtype_t ty) {
    return ty == KERN_W_BF16 ? kern__bf16f(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* Dimension by dimension, as the SIMD kernels sum (one partial sum per position). */
static inline __attribute__((always_inline)) void attn_scores(const float *q, int g, int hd,
                                                               const void *kt, int64_t ldk,
                                                               int nj, float scale, float *s,
                                                               int64_t lds, kern_wtype_t ty) {
    for (int h = 0; h < g; h++)
        for (int j = 0; j < nj; j++) {
            float acc = 0.0f;
            for (int i = 0; i < hd; i++)
                acc += q[(size_t)h * hd + i] * kvel(kt, (size_t)i * (size_t)ldk + j, ty);
            s[(size_t)h * (size_t)lds + j] = scale * acc;
        }
}

static inline __attribute__((always_inline)) void attn_values(const float *p, int64_t ldp,
                                                               int g, const void *v,
                                                               int64_t ldv, int nj, int hd,
                                                               float *o, kern_wtype_t ty) {
    for (int h = 0; h < g; h++)
        for (int i = 0; i < hd; i++) {
            float acc = o[(size_t)h * hd + i];
            for (int j = 0; j < nj; j++)
                acc += p[(size_t)h * (size_t)ldp + j] * kvel(v, (size_t)j * (size_t)ldv + i, ty);
            o[(size_t)h * hd + i] = acc;
        }
}

void kern__attn_scores_f32(const float *q, int g, int hd, const void *kt, int64_t ldk, int nj,
                           float scale, float *s, int64_t lds) {
    attn_scores(q, g, hd, kt, ldk, nj, scale, s, lds, KERN_W_F32);
}
void kern__attn_scores_bf16(const float *q, int g, int hd, const void *kt, int64_t ldk, int nj,
                            float scale, float *s, int64_t lds) {
    attn_scores(q, g, hd, kt, ldk, nj, scale, s, lds, KERN_W_BF16);
}
void kern__attn_values_f32(const float *p, int64_t ldp, int g, const void *v, int64_t ldv,
                           int nj, int hd, float *o) {
    attn_values(p, ldp, g, v, ldv, nj, hd, o, KERN_W_F32);
}
void kern__attn_values_bf16(const float *p, int64_t ldp, int g, const void *v, int64_t ldv,
                            int nj, int hd, float *o) {
    attn_values(p, ldp, g, v, ldv, nj, hd, o, KERN_W_BF16);
}

float kern__exp_sum(float *s, int n, float mx) {
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    return sum;
}

void kern__swiglu(float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ---- table ---- */

const kern_ops_t kern__ref_ops = {
    .name = "ref",
    .path = {"f32 scalar", "bf16 scalar", "int8 scalar"},
    .prep = kern__prep_none,
    .rows = {rows_f32, rows_bf16, rows_i8},
    .rows_p32 = kern__rows_p32,
    .lr_shrink = {lr_shrink_f32, lr_shrink_bf16, NULL},
    .lr_expand = {lr_expand_f32, lr_expand_bf16, NULL},
    .attn_scores = {kern__attn_scores_f32, kern__attn_scores_bf16, NULL},
    .attn_values = {kern__attn_values_f32, kern__attn_values_bf16, NULL},
    .exp_sum = kern__exp_sum,
    .swiglu = kern__swiglu,
};
