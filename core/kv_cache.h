/* kv_cache.h: paged key/value cache.
 *
 * A pool owns n_blocks fixed-size blocks; each block holds CORE_KV_BLOCK consecutive positions
 * of one sequence, for every layer, keys and values. A sequence owns a table of block indices
 * and grows it one block at a time; freeing a sequence returns its blocks to the pool.
 * Not thread-safe: the engine thread owns the pool and its sequences.
 */
#ifndef CORE_KV_CACHE_H
#define CORE_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "llm_error.h"
#include "kern.h"
#include "model_config.h"

#define CORE_KV_BLOCK 16 /* positions per block */

typedef struct core_kv_pool_s {
    /* read-only */
    int n_layers;
    int n_kv_heads;
    int head_dim;
    int kv_dim;            /* n_kv_heads * head_dim */
    kern_wtype_t type;     /* KERN_W_F32 or KERN_W_BF16 */
    int32_t n_blocks;
    int32_t n_free;
    /* private */
    void *data;            /* (n_blocks, n_layers, n_kv_heads, 2, CORE_KV_BLOCK · head_dim) */
    int32_t *free_list;    /* (n_blocks) stack of free block ids */
} core_kv_pool_t;

/* Allocates a pool of n_blocks blocks for the model shape in cfg, elements of type (F32 or
 * BF16: half the memory and the attention's reads, keys and values rounded to bf16).
 * Returns 0 and *out (new, free with core_kv_pool_free()), or LLM_ENOMEM / LLM_EINVAL. */
int core_kv_pool_create_as(const core_model_config_t *cfg, int32_t n_blocks, kern_wtype_t type,
                           core_kv_pool_t **out);
/* core_kv_pool_create_as with F32 elements. */
int core_kv_pool_create(const core_model_config_t *cfg, int32_t n_blocks, core_kv_pool_t **out);
void core_kv_pool_free(core_kv_pool_t *pool);

/* The cache's element type for a model whose weights are stored as wt: F32 for F32 weights
 * (the exact reference path), BF16 otherwise. */
kern_wtype_t core_kv_type_for(kern_wtype_t wt);
/* Bytes of one block (every layer, keys and values) for cfg and type. */
size_t core_kv_block_bytes(const core_model_config_t *cfg, kern_wtype_t type);

/* One block's keys of KV head kvh in a layer, transposed: (head_dim, CORE_KV_BLOCK), the
 * element of dimension i and slot j at [i · CORE_KV_BLOCK + j] (attention reads 16 positions
 * as one vector per dimension, kern.h). Elements of p->type. */
static inline void *core_kv_keys(const core_kv_pool_t *p, int32_t block, int layer, int kvh) {
    size_t i = ((((size_t)block * (size_t)p->n_layers + (size_t)layer) * (size_t)p->n_kv_heads +
                 (size_t)kvh) * 2) * CORE_KV_BLOCK * (size_t)p->head_dim;
    return (char *)p->data + i * kern_wtype_size(p->type);
}
/* The same block's values: (CORE_KV_BLOCK, head_dim), row-major. */
static inline void *core_kv_values(const core_kv_pool_t *p, int32_t block, int layer, int kvh) {
    return (char *)core_kv_keys(p, block, layer, kvh) +
           (size_t)CORE_KV_BLOCK * (size_t)p->head_dim * kern_wtype_size(p->type);
}

/* Writes one position's keys and values (k, v: (kv_dim) fp32, every KV head) into slot of a
 * block for one layer, rounding to the pool's type. */
void core_kv_store(const core_kv_pool_t *p, int32_t block, int layer, int slot, const float *k,
                   const float *v);

typedef struct core_seq_s {
    /* read-only */
    int32_t n_past;        /* positions already in the cache */
    int32_t n_blocks;      /* blocks held */
    int32_t *blocks;       /* (cap_blocks) block ids; owned */
    int32_t cap_blocks;
    int32_t max_pos;       /* the model's context length */
    core_kv_pool_t *pool;  /* borrowed */
} core_seq_t;

/* Caller memory. Allocates nothing until core_seq_reserve(). */
void core_seq_init(core_seq_t *s, core_kv_pool_t *pool, int32_t max_pos);
/* Returns every block to the pool. Accepts NULL; the sequence may be reused after init. */
void core_seq_deinit(core_seq_t *s);

/* Makes room for n more positions. Returns 0; LLM_EFULL when the pool lacks blocks (nothing is
 * taken then); LLM_ERANGE when n_past + n would exceed max_pos; LLM_ENOMEM. */
int core_seq_reserve(core_seq_t *s, int32_t n);

/* Blocks needed to hold n positions. */
static inline int32_t core_kv_blocks_for(int32_t n) {
    return (n + CORE_KV_BLOCK - 1) / CORE_KV_BLOCK;
}

#endif
