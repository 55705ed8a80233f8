#include "tensor.h"

#include <math.h>
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

float core_bf16_to_f32(uint16_t h) { return kern_bf16_to_f32(h); }

uint16_t core_f32_to_bf16(float f) { return kern_f32_to_bf16(f); }

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

int core_wtype_parse(const char *s, kern_wtype_t *out) {
    for (int t = 0; t < KERN_W_COUNT; t++)
        if (s && !strcmp(s, kern_wtype_name((kern_wtype_t)t))) {
            *out = (kern_wtype_t)t;
            return 0;
        }
    return LLM_EINVAL;
}

/* Source rows go through one fp32 row buffer: the finiteness check and the rounding to the
 * storage type both need fp32 values, and a row keeps the extra memory small. */
int core_weight_init(core_weight_t *w, kern_wtype_t type, core_dtype_t src_dt, const void *src,
                     int64_t rows, int64_t cols, int64_t *bad) {
    memset(w, 0, sizeof *w);
    const size_t n = (size_t)rows * (size_t)cols, es = kern_wtype_size(type);
    /* 64-byte alignment: the kernels' vector loads never straddle cache lines (kern.h) */
    void *d = aligned_alloc(64, ((n * es + 63) / 64) * 64 + 64);
    float *row = malloc(((size_t)cols + 1) * sizeof(float));
    float *scale = type == KERN_W_I8 ? malloc(((size_t)rows + 1) * sizeof(float)) : NULL;
    if (!d || !row || (type == KERN_W_I8 && !scale)) {
        free(d), free(row), free(scale);
        return LLM_ENOMEM;
    }
    const size_t src_row = (size_t)cols * core_dtype_size(src_dt);
    for (int64_t r = 0; r < rows; r++) {
        const unsigned char *sp = (const unsigned char *)src + (size_t)r * src_row;
        core_convert_to_f32(src_dt, sp, row, (size_t)cols);
        for (int64_t k = 0; k < cols; k++)
            if (!isfinite(row[k])) {
                if (bad) *bad = r * cols + k;
                free(d), free(row), free(scale);
                return LLM_EFORMAT;
            }
        const size_t off = (size_t)r * (size_t)cols;
        switch (type) {
        case KERN_W_F32: memcpy((float *)d + off, row, (size_t)cols * sizeof(float)); break;
        case KERN_W_BF16:
            if (src_dt == CORE_DT_BF16) memcpy((uint16_t *)d + off, sp, src_row);
            else kern_f32_to_bf16_n(row, (uint16_t *)d + off, (size_t)cols);
            break;
        default: kern_quant_i8_rows(row, 1, cols, (int8_t *)d + off, scale + r); break;
        }
    }
    free(row);
    *w = (core_weight_t){.type = type, .rows = rows, .cols = cols, .data = d, .scale = scale};
    return 0;
}

int core_weight_pack(core_weight_t *w, kern_layout_t layout) {
    if (w->type != KERN_W_BF16 || w->layout == layout || layout != KERN_LAYOUT_P32) return 0;
    uint16_t *d = aligned_alloc(64, kern_p32_bytes(w->rows, w->cols));
    if (!d) return LLM_ENOMEM;
    kern_pack_p32(w->data, w->rows, w->cols, d);
    free(w->data);
    w->data = d;
    w->layout = layout;
    return 0;
}

void core_weight_deinit(core_weight_t *w) {
    if (!w) return;
    free(w->data);
    free(w->scale);
    memset(w, 0, sizeof *w);
}

size_t core_weight_bytes(const core_weight_t *w) {
    if (w->layout == KERN_LAYOUT_P32) return kern_p32_bytes(w->rows, w->cols);
    return (size_t)w->rows * (size_t)w->cols * kern_wtype_size(w->type) +
           (w->scale ? (size_t)w->rows * sizeof(float) : 0);
}

void core_weight_rows_f32(const core_weight_t *w, int64_t r0, int64_t r1, float *out) {
    const size_t cols = (size_t)w->cols;
    if (w->layout == KERN_LAYOUT_P32) {
        kern_p32_rows_f32(w->data, w->cols, r0, r1, out);
        return;
    }
    for (int64_t r = r0; r < r1; r++, out += cols) {
        const size_t off = (size_t)r * cols;
        switch (w->type) {
        case KERN_W_F32: memcpy(out, (const float *)w->data + off, cols * sizeof(float)); break;
        case KERN_W_BF16: /* vectorised: the prompt path widens every weight each step */
            kern_bf16_to_f32_n((const uint16_t *)w->data + off, out, cols);
            break;
        default: {
            const int8_t *p = (const int8_t *)w->data + off;
            const float s = w->scale[r];
#pragma omp simd
            for (size_t k = 0; k < cols; k++) out[k] = (float)p[k] * s;
            break;
        }
        }
    }
}

void core_weight_row(const core_weight_t *w, int64_t r, float *out) {
    core_weight_rows_f32(w, r, r + 1, out);
}
