/* kern_int.h: what the kernel files share and nobody else uses. */
#ifndef KERN_INT_H
#define KERN_INT_H

#include "kern.h"

/* Backend tables; NULL-free static data. The ISA files' tables are only valid on CPUs that
 * kern_dispatch.c found capable. */
extern const kern_ops_t kern__ref_ops;
extern const kern_ops_t kern__avx2_ops;
extern const kern_ops_t kern__avx512_ops;
extern const kern_ops_t kern__avx512_vnni_ops;
extern const kern_ops_t kern__avx512_bf16_ops;

/* Row stride (elements) of the converted activations: cols rounded up to 64, so a 64-byte
 * vector of int8 or 32-pair vector of bf16 never straddles the end of a token. */
static inline int64_t kern__ld(int64_t cols) { return (cols + 63) & ~(int64_t)63; }

/* kern_bf16_to_f32, inlinable in the scalar loops (the reference's bf16 path was 10× slower
 * through the out-of-line call). */
static inline float kern__bf16f(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)h << 16};
    return v.f;
}

/* First 64-byte aligned address in work. */
static inline void *kern__align64(void *work) {
    return (void *)(((uintptr_t)work + 63) & ~(uintptr_t)63);
}

/* Activations that need no conversion: a->x = x (the reference's prep). */
void kern__prep_none(kern_wtype_t wt, const float *x, int n, int64_t cols, void *work,
                     kern_act_t *a);

/* fp32 activations for the SIMD fp32-activation paths: x itself when x and its rows are
 * 64-byte aligned, else a copy in work with rows padded to 64 floats (zeros). */
void kern__prep_f32_aligned(const float *x, int n, int64_t cols, void *work, kern_act_t *a);

/* kern__prep_f32_aligned as a kern_prep_fn (for backends whose paths all read fp32 x). */
void kern__prep_fp32act(kern_wtype_t wt, const float *x, int n, int64_t cols, void *work,
                        kern_act_t *a);

/* Per-token symmetric int8 quantisation of x into the work buffer (scalar; shared by the
 * VNNI prep so every backend quantises identically). */
void kern__prep_quant_i8(const float *x, int n, int64_t cols, void *work, kern_act_t *a);

/* Columns of a P32 matrix with the odd last one padded: cols rounded up to even. */
static inline int64_t kern__p32_cp(int64_t cols) { return (cols + 1) & ~(int64_t)1; }

/* Element (r, k) of a P32 matrix whose padded columns are cp = kern__p32_cp(cols) (kern.h's
 * formula; the packer, the row reader and the plain C kernel all index through this). */
static inline size_t kern__p32_index(int64_t r, int64_t k, int64_t cp) {
    return (size_t)(r / 32) * 32 * (size_t)cp + (size_t)(k / 2) * 64 + (size_t)(r % 32) * 2 +
           (size_t)(k % 2);
}

/* The reference kernel for bf16 weights in the P32 layout (kern_ref.c): every table's
 * rows_p32 except avx512-bf16's. */
void kern__rows_p32(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t r0,
                    int64_t r1);

/* The reference attention kernels (kern_ref.c), also the AVX2 table's: attention is a small
 * share of a step next to the weights, and the AVX2 backend is the fallback of CPUs this
 * server is not tuned for. */
void kern__attn_scores_f32(const float *q, int g, int hd, const void *kt, int64_t ldk, int nj,
                           float scale, float *s, int64_t lds);
void kern__attn_scores_bf16(const float *q, int g, int hd, const void *kt, int64_t ldk, int nj,
                            float scale, float *s, int64_t lds);
void kern__attn_values_f32(const float *p, int64_t ldp, int g, const void *v, int64_t ldv,
                           int nj, int hd, float *o);
void kern__attn_values_bf16(const float *p, int64_t ldp, int g, const void *v, int64_t ldv,
                            int nj, int hd, float *o);
float kern__exp_sum(float *s, int n, float mx);
void kern__swiglu(float *g, const float *u, size_t n);

#endif
