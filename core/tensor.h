/* tensor.h: dtypes and the weight type the forward pass computes with.
 *
 * A core_weight_t is a 2-D matrix [rows, cols] (rows = output features of a linear layer) in
 * one of several storage dtypes. The forward never reads .data directly: it calls
 * core_linear() and core_weight_row(), so adding bf16/int8 storage touches this file and the
 * kernels, not the forward.
 */
#ifndef CORE_TENSOR_H
#define CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "llm_error.h"

typedef enum {
    CORE_DT_F32 = 0,
    CORE_DT_F16,
    CORE_DT_BF16,
} core_dtype_t;

const char *core_dtype_name(core_dtype_t dt);
size_t core_dtype_size(core_dtype_t dt);

float core_bf16_to_f32(uint16_t h);
float core_f16_to_f32(uint16_t h);
uint16_t core_f32_to_bf16(float f); /* round to nearest even */
uint16_t core_f32_to_f16(float f);  /* round to nearest even */

/* Converts n elements of src (dtype dt, little-endian) to fp32 in dst. */
void core_convert_to_f32(core_dtype_t dt, const void *src, float *dst, size_t n);

typedef struct core_weight_s {
    /* read-only */
    core_dtype_t dtype; /* storage dtype (F32 for now; BF16/INT8 come with the kernels) */
    int64_t rows;       /* output features */
    int64_t cols;       /* input features */
    void *data;         /* (rows, cols) row-major, dtype; owned: freed by core_weight_deinit */
} core_weight_t;

/* Takes a tensor of any supported dtype and stores it as fp32 (new allocation).
 * Returns 0 or LLM_ENOMEM. */
int core_weight_init_f32(core_weight_t *w, core_dtype_t src_dt, const void *src, int64_t rows,
                         int64_t cols);
/* Accepts NULL and zeroed structs. */
void core_weight_deinit(core_weight_t *w);

/* y[n, rows] = x[n, cols] · wᵀ (beta = 0: y is overwritten). One BLAS call over all n tokens. */
void core_linear(const core_weight_t *w, const float *x, int n, float *y);

/* Copies row r (e.g. an embedding) to out[cols] as fp32. */
void core_weight_row(const core_weight_t *w, int64_t r, float *out);

#endif
