/* tensor.h: dtypes and the weight type the forward pass computes with.
 *
 * A core_weight_t is a 2-D matrix [rows, cols] (rows = output features of a linear layer)
 * stored as fp32, bf16 or int8 with one fp32 scale per row (kern.h's weight types). The
 * forward never reads .data directly: it goes through core_linear() (linear.h) and
 * core_weight_row(), so the storage type is a load-time choice (--weights).
 */
#ifndef CORE_TENSOR_H
#define CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "kern.h"
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
    kern_wtype_t type;  /* storage: KERN_W_F32, KERN_W_BF16 or KERN_W_I8 (per-row scale) */
    int64_t rows;       /* output features */
    int64_t cols;       /* input features */
    void *data;         /* (rows, cols) in type and layout, 64-byte aligned; owned */
    float *scale;       /* (rows) for KERN_W_I8 (w ≈ q · scale[row]), else NULL; owned */
    kern_layout_t layout; /* row-major unless core_weight_pack changed it */
} core_weight_t;

/* Parses "f32" | "bf16" | "int8" into *out. Returns 0 or LLM_EINVAL. */
int core_wtype_parse(const char *s, kern_wtype_t *out);

/* Stores a tensor of any supported source dtype as type: F32 exactly, BF16 rounded to nearest
 * even (a BF16 source is copied bit for bit), INT8 quantised per row (kern_quant_i8_rows).
 * Every source value must be finite: otherwise returns LLM_EFORMAT with the flat index of the
 * first bad element in *bad (bad may be NULL) and w left empty.
 * Returns 0, LLM_EFORMAT or LLM_ENOMEM. */
int core_weight_init(core_weight_t *w, kern_wtype_t type, core_dtype_t src_dt, const void *src,
                     int64_t rows, int64_t cols, int64_t *bad);
/* Re-lays a row-major BF16 weight out in layout (kern.h: KERN_LAYOUT_P32 for the
 * avx512-bf16 outer-product kernel; a kern_ops_t names its bf16_layout). Other types, or the
 * layout it already has, are left alone. Values unchanged: core_weight_row reads the same.
 * Returns 0 or LLM_ENOMEM (w unchanged). */
int core_weight_pack(core_weight_t *w, kern_layout_t layout);

/* Accepts NULL and zeroed structs. */
void core_weight_deinit(core_weight_t *w);

/* The weight as the kernels see it (borrowed pointers). */
static inline kern_mat_t core_weight_mat(const core_weight_t *w) {
    return (kern_mat_t){.type = w->type, .rows = w->rows, .cols = w->cols, .data = w->data,
                        .scale = w->scale, .layout = w->layout};
}

/* Resident bytes of the stored matrix (data with its layout's padding, plus scales). */
size_t core_weight_bytes(const core_weight_t *w);

/* Copies row r (e.g. an embedding) to out[cols] as fp32 (dequantised for INT8). */
void core_weight_row(const core_weight_t *w, int64_t r, float *out);

/* Widens rows [r0, r1) to fp32 into out ((r1 - r0), cols) row-major. */
void core_weight_rows_f32(const core_weight_t *w, int64_t r0, int64_t r1, float *out);

#endif
