/* safetensors.h: read-only, mmap-backed safetensors files (single or sharded).
 *
 * The whole header is validated at open: JSON well-formed, every entry with a known dtype,
 * a shape whose element count times the dtype size equals its byte range, offsets inside the
 * data section, no two tensors overlapping. A file that passes can be read without further
 * bounds checks.
 */
#ifndef CORE_SAFETENSORS_H
#define CORE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "llm_error.h"
#include "tensor.h"

#define CORE_ST_MAX_DIMS 8

typedef struct core_st_tensor_s {
    /* read-only */
    char *name;
    core_dtype_t dtype;
    int n_dims;
    int64_t shape[CORE_ST_MAX_DIMS];
    int64_t n_elems;
    const void *data; /* aliases the mapping of the file that holds it */
    size_t n_bytes;
} core_st_tensor_t;

typedef struct core_st_s core_st_t;

/* Opens one .safetensors file. Returns 0 and *out (new, free with core_st_free()), or a
 * negative code with err naming the file and the problem. */
int core_st_open(const char *path, core_st_t **out, llm_error_t *err);

/* Opens a model directory's weights: DIR/model.safetensors, or the shards listed in
 * DIR/model.safetensors.index.json (every listed tensor must be in the shard the index names).
 * Tensor names must be unique across shards. */
int core_st_open_dir(const char *dir, core_st_t **out, llm_error_t *err);

/* Accepts NULL. Unmaps every file. */
void core_st_free(core_st_t *st);

/* Borrowed, valid until core_st_free(); NULL when absent. */
const core_st_tensor_t *core_st_find(const core_st_t *st, const char *name);
size_t core_st_count(const core_st_t *st);
const core_st_tensor_t *core_st_at(const core_st_t *st, size_t i);

#endif
