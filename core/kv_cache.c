#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>

kern_wtype_t core_kv_type_for(kern_wtype_t wt) {
    return wt == KERN_W_F32 ? KERN_W_F32 : KERN_W_BF16;
}

size_t core_kv_block_bytes(const core_model_config_t *cfg, kern_wtype_t type) {
    return (size_t)cfg->n_layers * 2 * CORE_KV_BLOCK * (size_t)cfg->n_kv_heads *
           (size_t)cfg->head_dim * kern_wtype_size(type);
}

int core_kv_pool_create_as(const core_model_config_t *cfg, int32_t n_blocks, kern_wtype_t type,
                           core_kv_pool_t **out) {
    if (n_blocks <= 0 || (type != KERN_W_F32 && type != KERN_W_BF16)) return LLM_EINVAL;
    core_kv_pool_t *p = calloc(1, sizeof *p);
    if (!p) return LLM_ENOMEM;
    p->n_layers = cfg->n_layers;
    p->n_kv_heads = cfg->n_kv_heads;
    p->head_dim = cfg->head_dim;
    p->kv_dim = cfg->n_kv_heads * cfg->head_dim;
    p->type = type;
    p->n_blocks = n_blocks;
    /* calloc: untouched pages cost nothing until a block is first written */
    p->data = calloc((size_t)n_blocks, core_kv_block_bytes(cfg, type));
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

int core_kv_pool_create(const core_model_config_t *cfg, int32_t n_blocks, core_kv_pool_t **out) {
    return core_kv_pool_create_as(cfg, n_blocks, KERN_W_F32, out);
}

void core_kv_store(const core_kv_pool_t *p, int32_t block, int layer, int slot, const float *k,
                   const float *v) {
    const int hd = p->head_dim;
    for (int h = 0; h < p->n_kv_heads; h++) {
        const float *kh = k + (size_t)h * hd, *vh = v + (size_t)h * hd;
        void *kt = core_kv_keys(p, block, layer, h), *vr = core_kv_values(p, block, layer, h);
        if (p->type == KERN_W_BF16) {
            uint16_t *kb = kt;
            for (int i = 0; i < hd; i++) kb[(size_t)i * CORE_KV_BLOCK + slot] = kern_f32_to_bf16(kh[i]);
            kern_f32_to_bf16_n(vh, (uint16_t *)vr + (size_t)slot * hd, (size_t)hd);
        } else {
            float *kf = kt;
            for (int i = 0; i < hd; i++) kf[(size_t)i * CORE_KV_BLOCK + slot] = kh[i];
            memcpy((float *)vr + (size_t)slot * hd, vh, (size_t)hd * sizeof(float));
        }
    }
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
