/* model.h: a loaded base model: its config and its weights, immutable after load.
 *
 * Tensor names follow HuggingFace: model.embed_tokens.weight, model.layers.{i}.
 * {input_layernorm, post_attention_layernorm}.weight, model.layers.{i}.self_attn.
 * {q,k,v,o}_proj.{weight,bias}, model.layers.{i}.mlp.{gate,up,down}_proj.weight,
 * model.norm.weight, lm_head.weight (absent when tied). Every expected tensor must be present
 * with its exact shape; unexpected tensors (other than rotary caches) are refused.
 */
#ifndef CORE_MODEL_H
#define CORE_MODEL_H

#include "llm_error.h"
#include "model_config.h"
#include "tensor.h"

/* The seven projections an adapter may target, in layer order. */
typedef enum {
    CORE_PROJ_Q = 0,
    CORE_PROJ_K,
    CORE_PROJ_V,
    CORE_PROJ_O,
    CORE_PROJ_GATE,
    CORE_PROJ_UP,
    CORE_PROJ_DOWN,
    CORE_PROJ_COUNT
} core_proj_t;

/* "q_proj", "k_proj", ... */
const char *core_proj_name(core_proj_t p);

typedef struct core_layer_s {
    float *attn_norm;               /* (dim) */
    float *ffn_norm;                /* (dim) */
    core_weight_t proj[CORE_PROJ_COUNT]; /* q (n_heads*hd, dim), k/v (n_kv*hd, dim),
                                           o (dim, n_heads*hd), gate/up (ffn, dim),
                                           down (dim, ffn) */
    float *bias[CORE_PROJ_COUNT];   /* (rows) or NULL */
} core_layer_t;

typedef struct core_model_s {
    /* read-only */
    core_model_config_t cfg;
    core_weight_t embed;            /* (vocab, dim) */
    core_layer_t *layers;           /* (n_layers) */
    float *final_norm;              /* (dim) */
    core_weight_t lm_head_own;      /* (vocab, dim); empty when tied */
    const core_weight_t *lm_head;   /* aliases embed when tied, else &lm_head_own */
    int owns_lm_head;               /* 0 when tied (lm_head aliases embed) */
    float *rope_inv_freq;           /* (head_dim/2) after llama3 scaling */
    kern_wtype_t wtype;             /* storage type of every matrix (embed, projections, head) */
    size_t weight_bytes;            /* resident bytes of those matrices */
} core_model_t;

/* Loads DIR (config.json + safetensors). Returns 0 and *out (new, caller frees with
 * core_model_free()), or a negative code with err naming the file, tensor and reason. */
int core_model_load(const char *dir, core_model_t **out, llm_error_t *err);

/* Same, storing every matrix as wtype (tensor.h: bf16 rounds to nearest even, int8 quantises
 * per row), bf16 in the layout the selected kernels read fastest (kern_select()->bf16_layout:
 * 32-row panels on avx512-bf16); norms, biases and RoPE tables stay fp32. core_model_load is
 * the KERN_W_F32 case. */
int core_model_load_as(const char *dir, kern_wtype_t wtype, core_model_t **out,
                       llm_error_t *err);

/* Accepts NULL. */
void core_model_free(core_model_t *m);

#endif
