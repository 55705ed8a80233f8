/* synth_st_writer.h: a small safetensors writer for tests and synthetic models.
 *
 * Collects tensors in memory (or callbacks that make them, stw_add_deferred), then writes one
 * file: u64 little-endian header length, the JSON header padded with spaces to a multiple of 8,
 * then the tensors' bytes back to back in name order (the same layout as the Hugging Face
 * writer). Not thread-safe per writer; separate
 * writers are independent.
 */
#ifndef SYNTH_ST_WRITER_H
#define SYNTH_ST_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

typedef struct st_writer_s st_writer_t;

/* Returns: new, caller frees with stw_free(); NULL when out of memory. */
st_writer_t *stw_create(void);

/* Accepts NULL. */
void stw_free(st_writer_t *w);

/* Adds a tensor. shape has n_dims (0..8) non-negative entries (borrowed); n_dims 0 is a scalar.
 * data (borrowed, copied) holds the product of the shape elements of dt in host byte order
 * (little-endian hosts only); it may be NULL when that product is 0.
 * Returns 0, LLM_EINVAL (bad dims, duplicate or empty name, "__metadata__") or LLM_ENOMEM. */
int stw_add(st_writer_t *w, const char *name, core_dtype_t dt, int n_dims, const int64_t *shape,
            const void *data);

/* Like stw_add, but data is fp32 and is stored as dt (F16/BF16: round to nearest even). */
int stw_add_f32_as(st_writer_t *w, const char *name, core_dtype_t dt, int n_dims,
                   const int64_t *shape, const float *data);

/* Produces the bytes of a deferred tensor when stw_write() reaches it: fills dst (n_bytes, the
 * tensor in its storage dtype, little-endian). ctx and name are borrowed from stw_add_deferred.
 * Returns 0, or a negative LLM_E* code / -errno, which stw_write() then returns. */
typedef int (*stw_fill_cb)(void *ctx, const char *name, void *dst, size_t n_bytes);

/* Like stw_add, but the data is made by fill(ctx, ...) only while the file is written, one tensor
 * at a time, so a writer of a multi-GB model holds about one tensor in memory. ctx must stay
 * valid until the last stw_write(); fill may be called once per stw_write().
 * Returns 0, LLM_EINVAL (as stw_add, or fill NULL) or LLM_ENOMEM. */
int stw_add_deferred(st_writer_t *w, const char *name, core_dtype_t dt, int n_dims,
                     const int64_t *shape, stw_fill_cb fill, void *ctx);

/* Adds or replaces a "__metadata__" entry (both strings copied). No entry: no __metadata__.
 * Returns 0 or LLM_ENOMEM. */
int stw_set_meta(st_writer_t *w, const char *key, const char *value);

/* Writes the file (created or truncated). The writer stays usable.
 * Returns 0, LLM_ENOMEM or -errno. */
int stw_write(const st_writer_t *w, const char *path);

/* Writes exactly: u64 LE strlen(header_json), header_json (no padding), data_len bytes of data
 * (data may be NULL when data_len is 0). For tests that need a header of their own making.
 * Returns 0 or -errno. */
int stw_write_raw(const char *path, const char *header_json, const void *data, size_t data_len);

#endif
