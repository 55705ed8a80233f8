#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>

int core_kv_pool_create(const core_model_config_t *cfg, int32_t n_blocks, core_kv_pool_t **out) {
    if (n_blocks <= 0) return LLM_EINVAL;
    core_kv_pool_t *p = calloc(1, sizeof *p);
    if (!p) return LLM_ENOMEM;
    p->n_layers = cfg->n_layers;
    p->kv_dim = cfg->n_kv_heads * cfg->head_dim;
    p->n_blocks = n_blocks;
    size_t floats = (size_t)n_blocks * (size_t)p->n_layers * 2 * CORE_KV_BLOCK * (size_t)p->kv_dim;
    /* calloc: untouched pages cost nothing until a block is first written */
    p->data = calloc(floats, sizeof(float));
    p->free_list = malloc((size_t)n_blocks * sizeof(int32_t));
    if (!p->data || !p->free_list) {
        core_kv_pool_free(p);
        return LLM_ENOMEM;
    }
    /* Lowest ids on top of the stack, so a lightly used pool touches few pages. */
    for (int32_t i = 0; i < n_blocks; i++) p->free_list[i] = n_blocks - 1 - i;
    p->n_free = n_blocks;
    *out = p;
    return 0;
}

void core_kv_pool_free(core_kv_pool_t *p) {
    if (!p) return;
    free(p->data);
    free(p->free_list);
    free(p);
}

void core_seq_init(core_seq_t *s, core_kv_pool_t *pool, int32_t max_pos) {
    memset(s, 0, sizeof *s);
    s->pool = pool;
    s->max_pos = max_pos;
}

void core_seq_deinit(core_seq_t *s) {
    if (!s) return;
    for (int32_t i = 0; i < s->n_blocks; i++) s->pool->free_list[s->pool->n_free++] = s->blocks[i];
    free(s->blocks);
    s->blocks = NULL;
    s->n_blocks = s->cap_blocks = 0;
    s->n_past = 0;
}

int core_seq_reserve(core_seq_t *s, int32_t n) {
    if (n < 0) return LLM_EINVAL;
    if ((int64_t)s->n_past + n > s->max_pos) return LLM_ERANGE;
    int32_t need = core_kv_blocks_for(s->n_past + n) - s->n_blocks;
    if (need <= 0) return 0;
    if (need > s->pool->n_free) return LLM_EFULL;
    if (s->n_blocks + need > s->cap_blocks) {
        int32_t cap = s->cap_blocks ? s->cap_blocks : 4;
        while (cap < s->n_blocks + need) cap *= 2;
        int32_t *nb = realloc(s->blocks, (size_t)cap * sizeof(int32_t));
        if (!nb) return LLM_ENOMEM;
        s->blocks = nb;
        s->cap_blocks = cap;
    }
    for (int32_t i = 0; i < need; i++) s->blocks[s->n_blocks++] = s->pool->free_list[--s->pool->n_free];
    return 0;
}
