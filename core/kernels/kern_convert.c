/* kern_convert.c: fp32 → bf16 rounding and symmetric int8 quantisation (scalar, exact rules). */
#include <math.h>
#include <string.h>

#include "kern_int.h"

/* ---- bf16 ---- */

uint16_t kern_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    /* Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate. A carry out
     * of the mantissa increments the exponent, which is the correct result (up to Inf). */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float kern_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void kern_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = kern_f32_to_bf16(src[i]);
}

void kern_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        const uint32_t u = (uint32_t)src[i] << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        dst[i] = f;
    }
}

/* ---- int8 ---- */

/* Quantises one vector with the given inverse step; round half to even (lrintf in the default
 * rounding mode, which is what the SIMD conversions use as well). */
static void quant_vec(const float *src, int64_t n, float inv, int8_t *q) {
    for (int64_t k = 0; k < n; k++) {
        long v = lrintf(src[k] * inv);
        if (v > 127) v = 127;
        if (v < -127) v = -127;
        q[k] = (int8_t)v;
    }
}

static float absmax(const float *src, int64_t n) {
    float m = 0.0f;
    for (int64_t k = 0; k < n; k++) {
        float a = fabsf(src[k]);
        if (a > m) m = a;
    }
    return m;
}

void kern_quant_i8_rows(const float *src, int64_t rows, int64_t cols, int8_t *q, float *scale) {
    for (int64_t r = 0; r < rows; r++) {
        const float *s = src + (size_t)r * (size_t)cols;
        float m = absmax(s, cols);
        scale[r] = m / 127.0f;
        quant_vec(s, cols, m > 0.0f ? 127.0f / m : 0.0f, q + (size_t)r * (size_t)cols);
    }
}

void kern__prep_quant_i8(const float *x, int n, int64_t cols, void *work, kern_act_t *a) {
    int64_t ld = kern__ld(cols);
    int8_t *xq = kern__align64(work);
    float *xs = (float *)(xq + (size_t)n * (size_t)ld);
    int32_t *xsum = (int32_t *)(xs + n);
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * (size_t)cols;
        int8_t *qt = xq + (size_t)t * (size_t)ld;
        float m = absmax(xt, cols);
        xs[t] = m / 127.0f;
        quant_vec(xt, cols, m > 0.0f ? 127.0f / m : 0.0f, qt);
        memset(qt + cols, 0, (size_t)(ld - cols));
        int32_t s = 0;
        for (int64_t k = 0; k < cols; k++) s += qt[k];
        xsum[t] = s;
    }
    a->x = x;
    a->ldx = cols;
    a->n = n;
    a->cols = cols;
    a->ld = ld;
    a->xb = NULL;
    a->xq = xq;
    a->xs = xs;
    a->xsum = xsum;
}

void kern__prep_none(kern_wtype_t wt, const float *x, int n, int64_t cols, void *work,
                     kern_act_t *a) {
    (void)wt;
    (void)work;
    memset(a, 0, sizeof *a);
    a->x = x;
    a->ldx = cols;
    a->n = n;
    a->cols = cols;
    a->ld = cols;
}

void kern__prep_f32_aligned(const float *x, int n, int64_t cols, void *work, kern_act_t *a) {
    kern__prep_none(KERN_W_F32, x, n, cols, work, a);
    if ((uintptr_t)x % 64 == 0 && (n == 1 || cols % 16 == 0)) return;
    const int64_t ld = kern__ld(cols);
    float *xa = kern__align64(work);
    for (int t = 0; t < n; t++) {
        memcpy(xa + (size_t)t * (size_t)ld, x + (size_t)t * (size_t)cols, (size_t)cols * 4);
        memset(xa + (size_t)t * (size_t)ld + cols, 0, (size_t)(ld - cols) * 4);
    }
    a->x = xa;
    a->ldx = ld;
}

void kern__prep_fp32act(kern_wtype_t wt, const float *x, int n, int64_t cols, void *work,
                        kern_act_t *a) {
    (void)wt;
    kern__prep_f32_aligned(x, n, cols, work, a);
}

/* ---- the P32 layout of bf16 weights (kern.h) ---- */

size_t kern_p32_bytes(int64_t rows, int64_t cols) {
    return (size_t)((rows + 31) / 32) * 32 * (size_t)kern__p32_cp(cols) * 2;
}

void kern_pack_p32(const uint16_t *src, int64_t rows, int64_t cols, uint16_t *dst) {
    const int64_t cp = kern__p32_cp(cols);
    memset(dst, 0, kern_p32_bytes(rows, cols));
    for (int64_t r = 0; r < rows; r++) { /* a row's pairs, 64 elements apart (at load time) */
        const uint16_t *s = src + (size_t)r * (size_t)cols;
        uint16_t *d = dst + kern__p32_index(r, 0, cp);
        int64_t k = 0;
        for (; k + 1 < cols; k += 2, d += 64) memcpy(d, s + k, 4);
        if (k < cols) d[0] = s[k];
    }
}

void kern_p32_rows_f32(const uint16_t *p, int64_t cols, int64_t r0, int64_t r1, float *out) {
    const int64_t cp = kern__p32_cp(cols);
    for (int64_t r = r0; r < r1; r++, out += cols) {
        /* a row's pairs are 64 elements apart: one strided walk */
        const uint16_t *q = p + kern__p32_index(r, 0, cp);
        for (int64_t k = 0; k + 1 < cols; k += 2, q += 64) {
            out[k] = kern__bf16f(q[0]);
            out[k + 1] = kern__bf16f(q[1]);
        }
        if (cols % 2) out[cols - 1] = kern__bf16f(q[0]);
    }
}
