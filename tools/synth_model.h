/* synth_model.h: small random Llama-family models in HuggingFace layout, for tests and benches
 * (and `loramux synth-model`, tools/synth_cli.c).
 *
 * synth_model_write() draws deterministic random weights from opts (same opts and seed → same
 * bytes), writes DIR/config.json and DIR/model.safetensors (or two or more shards plus
 * model.safetensors.index.json), and hands back the weights as fp32 arrays. For F16/BF16
 * storage the arrays hold the values after rounding to the storage dtype, i.e. exactly what a
 * correct loader reads back, so an independent reference can compute with the same weights.
 *
 * The rounding and the config text are implemented here, not borrowed from core/, so a test
 * that compares the core against these arrays also checks the core's dtype conversions and
 * config parsing.
 *
 * Lower-level pieces (synth_weights_create, synth_weights_tensors, synth_write_config,
 * synth_write_tensors) let a test write a damaged model: drop, reshape or add a tensor, poke a
 * NaN into an array, or change config.json. Single-threaded; no global state.
 */
#ifndef SYNTH_MODEL_H
#define SYNTH_MODEL_H

#include <stdint.h>

#include "tensor.h"

typedef struct synth_model_opts_s {
    const char *arch;      /* "LlamaForCausalLM" (NULL), "MistralForCausalLM", "Qwen2ForCausalLM";
                              any other string is written as is (tensor layout of Llama) */
    int hidden;            /* hidden_size */
    int intermediate;      /* intermediate_size */
    int n_layers;
    int n_heads;
    int n_kv_heads;        /* 0 = n_heads */
    int head_dim;          /* 0 = hidden / n_heads and no "head_dim" key; else written explicitly */
    int vocab;
    int max_pos;           /* max_position_embeddings */
    int tie_embeddings;    /* no lm_head.weight tensor when set */
    float rope_theta;      /* 0 = 10000 */
    float rms_eps;         /* 0 = 1e-5 */
    /* rope_scaling {"rope_type": "llama3", ...} when rope_llama3 is set */
    int rope_llama3;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    const char *rope_scaling_json; /* non-NULL: written verbatim as the rope_scaling value
                                      (overrides rope_llama3; for refusal tests) */
    const char *hidden_act;        /* NULL = "silu" */
    int attention_bias;    /* Llama/Mistral attention_bias: q/k/v/o biases. Qwen2 always has
                              q/k/v biases (and never o) whatever this says. */
    int sliding_window;    /* Mistral "sliding_window"; 0 = null. Qwen2 writes its usual inactive
                              window (use_sliding_window false) regardless. */
    int bos_id, eos_id;    /* written when >= 0; synth_model_defaults() sets 1 and 2 */
    const char *extra_config; /* raw JSON members appended to config.json ("\"k\": 1"), or NULL */
    core_dtype_t dtype;    /* storage dtype of every tensor */
    int n_shards;          /* 0 or 1: model.safetensors; n >= 2: n shards + index.json */
    uint64_t seed;
    float w_scale;         /* linear weights (q/k/v/o, gate/up/down, untied lm_head) are
                              U(±w_scale·sqrt(3/fan_in)), i.e. std w_scale/sqrt(fan_in): at 1
                              a projection keeps its input's variance. 0 = 1.0. Embeddings
                              are U(±1), norm weights 1 + U(±0.25), biases U(±0.2). */
} synth_model_opts_t;

/* A Llama with GQA, hidden 32, 2 layers, 4 heads, 2 kv heads, vocab 128, F32, seed 1. */
synth_model_opts_t synth_model_defaults(void);

/* Resolved shape numbers (0 fields of opts filled in). */
int synth_head_dim(const synth_model_opts_t *o);
int synth_n_kv_heads(const synth_model_opts_t *o);
int synth_is_qwen2(const synth_model_opts_t *o);
int synth_has_qkv_bias(const synth_model_opts_t *o);
int synth_has_o_bias(const synth_model_opts_t *o);

typedef struct synth_layer_s {
    float *attn_norm;   /* (hidden) input_layernorm */
    float *ffn_norm;    /* (hidden) post_attention_layernorm */
    float *wq;          /* (n_heads*hd, hidden) */
    float *wk, *wv;     /* (n_kv*hd, hidden) */
    float *wo;          /* (hidden, n_heads*hd) */
    float *w_gate;      /* (intermediate, hidden) */
    float *w_up;        /* (intermediate, hidden) */
    float *w_down;      /* (hidden, intermediate) */
    float *bq, *bk, *bv; /* (rows) or NULL */
    float *bo;          /* (hidden) or NULL */
} synth_layer_t;

/* All values fp32, already rounded to opts.dtype. Arrays are owned (one allocation each). */
typedef struct synth_weights_s {
    synth_model_opts_t o;   /* copy of the options (string pointers borrowed from the caller) */
    float *embed;           /* (vocab, hidden) */
    float *lm_head;         /* (vocab, hidden); aliases embed when o.tie_embeddings */
    float *final_norm;      /* (hidden) */
    synth_layer_t *layers;  /* (n_layers) */
} synth_weights_t;

/* Draws the weights for o. Returns new (free with synth_weights_free()) or NULL on bad opts or
 * out of memory (a message goes to stderr). */
synth_weights_t *synth_weights_create(const synth_model_opts_t *o);
/* Accepts NULL. */
void synth_weights_free(synth_weights_t *w);

/* One tensor as it is written: HF name, 1-D or 2-D shape, fp32 data (borrowed). */
typedef struct synth_tensor_s {
    char name[128];
    int n_dims;
    int64_t shape[2];
    const float *data;  /* (shape[0] * shape[1]) values, converted to opts.dtype on write */
} synth_tensor_t;

/* Fills out[0..cap) with the tensors of w in file order (HF names) and returns how many there
 * are (which may exceed cap). Data pointers alias w. */
int synth_weights_tensors(const synth_weights_t *w, synth_tensor_t *out, int cap);

/* The config.json text for o. Returns new string (caller frees) or NULL. */
char *synth_config_json(const synth_model_opts_t *o);

/* Writes DIR/config.json. Returns 0 or -1. */
int synth_write_config(const synth_model_opts_t *o, const char *dir);

/* Writes the tensors to DIR in o->dtype (rounding fp32 to nearest even for F16/BF16), as one
 * file or o->n_shards shards with an index. Returns 0 or -1. */
int synth_write_tensors(const synth_model_opts_t *o, const synth_tensor_t *t, int n,
                        const char *dir);

/* Everything at once: draws weights, writes config.json and the safetensors into DIR (which
 * must exist). Returns 0 or -1. When out is non-NULL, *out receives the weights (new, caller
 * frees with synth_weights_free()); on failure *out is NULL. */
int synth_model_write(const synth_model_opts_t *o, const char *dir, synth_weights_t **out);

/* Writes the same files as synth_model_write(o, dir, NULL), byte for byte, but draws each
 * tensor only while it is written (values are encoded as they are drawn), so memory stays at
 * about one tensor in the storage dtype. For real-sized shapes: synth_model_write holds all
 * weights as fp32 plus a copy in the storage dtype, 8.8 GB for a TinyLlama shape in F32.
 * DIR must exist. Returns 0 or -1 (message on stderr). */
int synth_model_write_streaming(const synth_model_opts_t *o, const char *dir);

/* Storage rounding used by the writer, exposed for references: the fp32 value a loader reads
 * after x is stored as dt. Independent of core/tensor.c. */
float synth_round_to(core_dtype_t dt, float x);

#endif
