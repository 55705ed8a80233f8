/* model_config.h: config.json of a HuggingFace Llama-family model.
 *
 * Architectures: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM. Every key of
 * config.json is either understood, or known to have no effect on inference; anything else,
 * and any value the forward does not implement (another rope_scaling type, an activation
 * other than silu, an active sliding window, ...), is refused with a message naming the key.
 */
#ifndef CORE_MODEL_CONFIG_H
#define CORE_MODEL_CONFIG_H

#include <stdint.h>

#include "llm_error.h"

/* Query heads per KV head the attention supports (Llama-family models use 1–8). */
#define CORE_MAX_GQA_GROUP 64

typedef enum { CORE_ARCH_LLAMA = 0, CORE_ARCH_MISTRAL, CORE_ARCH_QWEN2 } core_arch_t;

typedef struct core_model_config_s {
    core_arch_t arch;
    char arch_name[64];
    int hidden_size;        /* dim */
    int intermediate_size;  /* ffn hidden */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;           /* hidden_size / n_heads unless config.json says otherwise */
    int vocab_size;
    int max_pos;            /* max_position_embeddings (capped by an inactive sliding window) */
    float rms_eps;
    float rope_theta;
    int tie_embeddings;
    int qkv_bias;           /* q/k/v projections have biases (Qwen2, attention_bias) */
    int o_bias;             /* o_proj has a bias (Llama attention_bias) */
    /* rope_scaling type "llama3" */
    int rope_llama3;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    int32_t bos_id;         /* -1 when absent */
    int32_t eos_ids[8];     /* config.json and generation_config.json eos_token_id (int or list) */
    int n_eos;
    /* sampling defaults from generation_config.json (HF generate's defaults) */
    int gen_do_sample;      /* 0 = greedy */
    float gen_temperature;  /* 1 when absent */
    float gen_top_p;        /* 1 when absent */
    int gen_top_k;          /* 50 when absent, as HF GenerationConfig */
} core_model_config_t;

/* Parses DIR/config.json and, when present, DIR/generation_config.json (for eos ids).
 * Returns 0, or a negative code with err naming the file and key. */
int core_model_config_load(const char *dir, core_model_config_t *cfg, llm_error_t *err);

/* Parses a config.json text (tests use it directly). generation_json may be NULL. */
int core_model_config_parse(const char *config_json, const char *generation_json,
                            core_model_config_t *cfg, llm_error_t *err);

#endif
