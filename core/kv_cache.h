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
#include "model_config.h"

#define CORE_KV_BLOCK 16 /* positions per block */

typedef struct core_kv_pool_s {
    /* read-only */
    int n_layers;
    int kv_dim;            /* n_kv_heads * head_dim */
    int32_t n_blocks;
    int32_t n_free;
    /* private */
    float *data;           /* (n_blocks, n_layers, 2, CORE_KV_BLOCK, kv_dim) */
    int32_t *free_list;    /* (n_blocks) stack of free block ids */
} core_kv_pool_t;

/* Allocates a pool of n_blocks blocks for the model shape in cfg.
 * Returns 0 and *out (new, free with core_kv_pool_free()), or LLM_ENOMEM / LLM_EINVAL. */
int core_kv_pool_create(const core_model_config_t *cfg, int32_t n_blocks, core_kv_pool_t **out);
void core_kv_pool_free(core_kv_pool_t *pool);

/* Pointer to the key (kv = 0) or value (kv = 1) row of one position in one block. */
static inline float *core_kv_row(const core_kv_pool_t *p, int32_t block, int layer, int kv,
                                 int slot) {
    size_t i = ((((size_t)block * (size_t)p->n_layers + (size_t)layer) * 2 + (size_t)kv) *
                    CORE_KV_BLOCK + (size_t)slot) * (size_t)p->kv_dim;
    return p->data + i;
}

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
