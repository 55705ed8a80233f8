/* kern_avx2.c: AVX2 + FMA streaming kernels (CPUs without AVX-512).
 *
 * All three weight types compute in fp32 with fp32 activations, so the products are exactly
 * the reference's and only the summation order differs (|err| ≤ ~1e-6 · Σ|x·w|):
 *   f32   8-wide FMA;
 *   bf16  8 weights widened by a 16-bit shift (vpmovzxwd + vpslld), FMA;
 *   int8  8 weights sign-extended (vpmovsxbd) and converted to fp32, FMA; the row scale is
 *         applied once to each sum. (vpmaddubsw on int8 activations would double the compute
 *         ceiling but needs activation quantisation and saturates at 16 bits; on AVX2 machines
 *         these decode kernels are bandwidth-bound at n = 1, so exactness was preferred.)
 *
 * Shape as in kern_avx512.c: each block of weight rows is streamed once for all tokens.
 * n = 1: 8 rows per block (8 FMA chains; weights fold into the FMA as memory operands).
 * n ≥ 2: 4 rows × 2 tokens (8 accumulators, 4 weight vectors, 16 ymm registers in all).
 * Column tails (cols % 8) are finished in scalar code after the horizontal sums.
 * Low-rank adapter kernels: shrink is the rows kernel with an output stride; expand streams Bt
 * in 8-column vectors, r summed in registers per (token, vector) before y is touched.
 *
 * The target attribute adds AVX2/FMA to whatever the command line allows: in a build with
 * -march=native on an AVX-512 machine, GCC may also use EVEX registers in this file (so that
 * build's "avx2" test is not a pure-AVX2 test); a generic build (no -march) has none — checked
 * with objdump, and test_kernels passes in that build too.
 */
#include <immintrin.h>
#include <math.h>

#include "kern_int.h"

#define TAVX2 __attribute__((target("avx2,fma")))
#define INL static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 16")

/* ---- helpers ---- */

INL TAVX2 float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INL TAVX2 __m256 load_bf16x8(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INL TAVX2 __m256 load_i8x8(const int8_t *p) {
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

INL float wval(kern_wtype_t ty, const void *wp, size_t idx) {
    switch (ty) {
    case KERN_W_F32: return ((const float *)wp)[idx];
    case KERN_W_BF16: return kern__bf16f(((const uint16_t *)wp)[idx]);
    default: return (float)((const int8_t *)wp)[idx];
    }
}

/* ---- tile: R rows from r × T tokens from t0, weight type TY (compile-time) ---- */

INL TAVX2 void tile(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t ldy, int64_t r,
                    int t0, const int R, const int T, const kern_wtype_t TY) {
    const int64_t cols = w->cols, kmain = cols & ~(int64_t)7;
    const size_t off = (size_t)r * (size_t)cols;
    const int64_t ldx = a->ldx;
    const float *xp = a->x + (size_t)t0 * (size_t)ldx;
    __m256 acc[8];
    UNROLL for (int m = 0; m < R * T; m++) acc[m] = _mm256_setzero_ps();
    for (int64_t k = 0; k < kmain; k += 8) {
        __m256 xv[2];
        UNROLL for (int t = 0; t < T; t++) xv[t] = _mm256_loadu_ps(xp + t * ldx + k);
        UNROLL for (int i = 0; i < R; i++) {
            const size_t e = off + (size_t)i * (size_t)cols + (size_t)k;
            __m256 wv = TY == KERN_W_F32    ? _mm256_loadu_ps((const float *)w->data + e)
                        : TY == KERN_W_BF16 ? load_bf16x8((const uint16_t *)w->data + e)
                                            : load_i8x8((const int8_t *)w->data + e);
            UNROLL for (int t = 0; t < T; t++)
                acc[i * T + t] = _mm256_fmadd_ps(wv, xv[t], acc[i * T + t]);
        }
    }
    UNROLL for (int i = 0; i < R; i++) UNROLL for (int t = 0; t < T; t++) {
            float s = hsum256(acc[i * T + t]);
            for (int64_t k = kmain; k < cols; k++)
                s += wval(TY, w->data, off + (size_t)i * (size_t)cols + (size_t)k) *
                     xp[(size_t)t * (size_t)ldx + (size_t)k];
            if (TY == KERN_W_I8) s *= w->scale[r + i];
            y[(size_t)(t0 + t) * (size_t)ldy + (size_t)(r + i)] = s;
        }
}

/* n = 1: 8-row blocks, then 4, then 1. n ≥ 2: 4-row blocks × token pairs (an odd n ends with
 * a single-token tile). y has row stride ldy (w->rows for a matmul). */
INL TAVX2 void rows_any(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t ldy,
                        int64_t r0, int64_t r1, const kern_wtype_t TY) {
    const int n = a->n;
    int64_t r = r0;
    if (n == 1) {
        for (; r + 8 <= r1; r += 8) tile(w, a, y, ldy, r, 0, 8, 1, TY);
        for (; r + 4 <= r1; r += 4) tile(w, a, y, ldy, r, 0, 4, 1, TY);
        for (; r < r1; r++) tile(w, a, y, ldy, r, 0, 1, 1, TY);
        return;
    }
    for (; r + 4 <= r1; r += 4) {
        int t0 = 0;
        for (; t0 + 2 <= n; t0 += 2) tile(w, a, y, ldy, r, t0, 4, 2, TY);
        if (t0 < n) tile(w, a, y, ldy, r, t0, 4, 1, TY);
    }
    for (; r < r1; r++) {
        int t0 = 0;
        for (; t0 + 2 <= n; t0 += 2) tile(w, a, y, ldy, r, t0, 1, 2, TY);
        if (t0 < n) tile(w, a, y, ldy, r, t0, 1, 1, TY);
    }
}

static TAVX2 void rows_f32(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t r0,
                           int64_t r1) {
    rows_any(w, a, y, w->rows, r0, r1, KERN_W_F32);
}

static TAVX2 void rows_bf16(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t r0,
                            int64_t r1) {
    rows_any(w, a, y, w->rows, r0, r1, KERN_W_BF16);
}

static TAVX2 void rows_i8(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t r0,
                          int64_t r1) {
    rows_any(w, a, y, w->rows, r0, r1, KERN_W_I8);
}

/* ---- low-rank adapter kernels ---- */

/* Shrink is a matmul of A against the caller's x with an output stride: the rows kernel above
 * as it is (4–8 A rows per pass against the tokens; x read unaligned, in place). */
static TAVX2 void lr_shrink_f32(const kern_mat_t *a, const float *x, int64_t ldx, int n,
                                float *v, int64_t ldv) {
    const kern_act_t act = {.x = x, .ldx = ldx, .n = n, .cols = a->cols};
    if (n > 0) rows_any(a, &act, v, ldv, 0, a->rows, KERN_W_F32);
}

static TAVX2 void lr_shrink_bf16(const kern_mat_t *a, const float *x, int64_t ldx, int n,
                                 float *v, int64_t ldv) {
    const kern_act_t act = {.x = x, .ldx = ldx, .n = n, .cols = a->cols};
    if (n > 0) rows_any(a, &act, v, ldv, 0, a->rows, KERN_W_BF16);
}

/* Expand tile: T tokens from t0 × CW vectors of 8 columns from c. For each of the r rows of Bt
 * the CW vectors are loaded (widened) once and used by all T tokens; the T·CW sums stay in
 * registers until the end, then each y vector is loaded, added to and stored once. 4 × 2:
 * 8 accumulators + 4 Bt vectors + 1 broadcast of 16 ymm registers. Each output is one FMA
 * chain over j in order, then + y: the same value whatever tile computes it. */
INL TAVX2 void expand_tile(const kern_mat_t *bt, const float *v, int64_t ldv, int t0, float *y,
                           int64_t ldy, int64_t c, const int T, const int CW,
                           const kern_wtype_t TY) {
    __m256 acc[8];
    UNROLL for (int m = 0; m < T * CW; m++) acc[m] = _mm256_setzero_ps();
    const float *vp = v + (size_t)t0 * (size_t)ldv;
    for (int64_t j = 0; j < bt->rows; j++) {
        const size_t e = (size_t)j * (size_t)bt->cols + (size_t)c;
        __m256 b[4];
        UNROLL for (int q = 0; q < CW; q++)
            b[q] = TY == KERN_W_F32 ? _mm256_loadu_ps((const float *)bt->data + e + 8 * q)
                                    : load_bf16x8((const uint16_t *)bt->data + e + 8 * q);
        UNROLL for (int t = 0; t < T; t++) {
            const __m256 vv = _mm256_broadcast_ss(vp + (size_t)t * (size_t)ldv + (size_t)j);
            UNROLL for (int q = 0; q < CW; q++)
                acc[t * CW + q] = _mm256_fmadd_ps(b[q], vv, acc[t * CW + q]);
        }
    }
    UNROLL for (int t = 0; t < T; t++) UNROLL for (int q = 0; q < CW; q++) {
            float *yp = y + (size_t)(t0 + t) * (size_t)ldy + (size_t)c + 8 * (size_t)q;
            _mm256_storeu_ps(yp, _mm256_add_ps(_mm256_loadu_ps(yp), acc[t * CW + q]));
        }
}

/* Token pairs (an odd n ends with a single token) over column groups of 32, then of 8; the
 * last c1 − c0 mod 8 columns in scalar code with fmaf, which rounds like the vector FMA. */
INL TAVX2 void expand_any(const kern_mat_t *bt, const float *v, int64_t ldv, int n, float *y,
                          int64_t ldy, int64_t c0, int64_t c1, const kern_wtype_t TY) {
    int64_t c = c0;
    for (; c + 32 <= c1; c += 32) {
        int t0 = 0;
        for (; t0 + 2 <= n; t0 += 2) expand_tile(bt, v, ldv, t0, y, ldy, c, 2, 4, TY);
        if (t0 < n) expand_tile(bt, v, ldv, t0, y, ldy, c, 1, 4, TY);
    }
    for (; c + 8 <= c1; c += 8) {
        int t0 = 0;
        for (; t0 + 2 <= n; t0 += 2) expand_tile(bt, v, ldv, t0, y, ldy, c, 2, 1, TY);
        if (t0 < n) expand_tile(bt, v, ldv, t0, y, ldy, c, 1, 1, TY);
    }
    for (; c < c1; c++)
        for (int t = 0; t < n; t++) {
            const float *vt = v + (size_t)t * (size_t)ldv;
            float s = 0.0f;
            for (int64_t j = 0; j < bt->rows; j++)
                s = fmaf(wval(TY, bt->data, (size_t)j * (size_t)bt->cols + (size_t)c), vt[j], s);
            y[(size_t)t * (size_t)ldy + (size_t)c] += s;
        }
}

static TAVX2 void lr_expand_f32(const kern_mat_t *bt, const float *v, int64_t ldv, int n,
                                float *y, int64_t ldy, int64_t c0, int64_t c1) {
    expand_any(bt, v, ldv, n, y, ldy, c0, c1, KERN_W_F32);
}

static TAVX2 void lr_expand_bf16(const kern_mat_t *bt, const float *v, int64_t ldv, int n,
                                 float *y, int64_t ldy, int64_t c0, int64_t c1) {
    expand_any(bt, v, ldv, n, y, ldy, c0, c1, KERN_W_BF16);
}

/* ---- table ---- */

const kern_ops_t kern__avx2_ops = {
    .name = "avx2",
    .path = {"f32 fma", "bf16 widen", "int8 widen"},
    .prep = kern__prep_fp32act,
    .rows = {rows_f32, rows_bf16, rows_i8},
    .rows_p32 = kern__rows_p32,
    .lr_shrink = {lr_shrink_f32, lr_shrink_bf16, NULL},
    .lr_expand = {lr_expand_f32, lr_expand_bf16, NULL},
    .attn_scores = {kern__attn_scores_f32, kern__attn_scores_bf16, NULL},
    .attn_values = {kern__attn_values_f32, kern__attn_values_bf16, NULL},
    .exp_sum = kern__exp_sum,
    .swiglu = kern__swiglu,
};
