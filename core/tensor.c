#include "tensor.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

const char *core_dtype_name(core_dtype_t dt) {
    switch (dt) {
    case CORE_DT_F32: return "F32";
    case CORE_DT_F16: return "F16";
    case CORE_DT_BF16: return "BF16";
    }
    return "?";
}

size_t core_dtype_size(core_dtype_t dt) { return dt == CORE_DT_F32 ? 4 : 2; }

float core_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t core_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float core_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t core_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;          /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00u;         /* overflow (rounds past 65504) */
    if (a < 0x33000001u) return sign;                    /* underflow to zero */
    int32_t e = (int32_t)(a >> 23) - 127 + 15;
    uint32_t man = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = e >= 1 ? 13 : (uint32_t)(14 - e);   /* subnormals shift further */
    if (e < 1) e = 0;
    uint32_t half = 1u << (shift - 1);
    uint32_t rest = man & ((1u << shift) - 1);
    uint32_t m = man >> shift;
    if (rest > half || (rest == half && (m & 1u))) m++;
    /* m may carry into the exponent; adding works because the fields are adjacent */
    uint32_t out = e >= 1 ? (((uint32_t)e << 10) + (m - 0x400u)) : m;
    return sign | (uint16_t)out;
}

void core_convert_to_f32(core_dtype_t dt, const void *src, float *dst, size_t n) {
    const unsigned char *p = src;
    switch (dt) {
    case CORE_DT_F32:
        memcpy(dst, src, n * 4);
        break;
    case CORE_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = core_bf16_to_f32(h);
        }
        break;
    case CORE_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = core_f16_to_f32(h);
        }
        break;
    }
}

int core_weight_init_f32(core_weight_t *w, core_dtype_t src_dt, const void *src, int64_t rows,
                         int64_t cols) {
    memset(w, 0, sizeof *w);
    size_t n = (size_t)rows * (size_t)cols;
    float *d = malloc(n ? n * sizeof(float) : 1);
    if (!d) return LLM_ENOMEM;
    core_convert_to_f32(src_dt, src, d, n);
    w->dtype = CORE_DT_F32;
    w->rows = rows;
    w->cols = cols;
    w->data = d;
    return 0;
}

void core_weight_deinit(core_weight_t *w) {
    if (!w) return;
    free(w->data);
    memset(w, 0, sizeof *w);
}

void core_linear(const core_weight_t *w, const float *x, int n, float *y) {
    /* Only fp32 storage exists so far; bf16/int8 kernels dispatch here later. */
    if (n == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)w->rows, (int)w->cols, 1.0f, w->data,
                    (int)w->cols, x, 1, 0.0f, y, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, (int)w->rows, (int)w->cols, 1.0f,
                    x, (int)w->cols, w->data, (int)w->cols, 0.0f, y, (int)w->rows);
    }
}

void core_weight_row(const core_weight_t *w, int64_t r, float *out) {
    memcpy(out, (const float *)w->data + (size_t)r * (size_t)w->cols,
           (size_t)w->cols * sizeof(float));
}
