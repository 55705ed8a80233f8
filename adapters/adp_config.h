/* adp_config.h: adapter_config.json, parsed and checked (adapters.md §2.2–§2.4, §10).
 *
 * Parsing decides the method (dispatch table of §10) and refuses every field that would change
 * the forward in a way this server does not implement. Which (layer, projection) is adapted, with
 * which r and alpha, is answered by adp_config_module(), reproducing PEFT's matching rules for
 * the peft_version that saved the file.
 */
#ifndef ADAPTERS_ADP_CONFIG_H
#define ADAPTERS_ADP_CONFIG_H

#include "adapter.h"
#include "llm_error.h"

typedef enum { ADP_INFL_RRI = 0, ADP_INFL_SHIFT, ADP_INFL_NONE } adp_inflation_t;

typedef struct adp_pattern_s {
    char *key;      /* the pattern as written in the config */
    void *re;       /* compiled pcre2_code* of the version-dependent wrapper */
    double value;
} adp_pattern_t;

typedef struct adp_config_s {
    /* read-only */
    adp_method_t method;
    int r;
    double alpha;
    int use_rslora, use_dora, lora_bias;
    int mora_type;                /* MoRA: 1,2,3,4,6 */
    int lorma_pre;                /* LoRMA: 1 pre, 0 post */
    adp_inflation_t inflation;    /* LoRMA */
    int k;                        /* LoRA²: inner rank (8 when absent) */
    char base_model[256];         /* base_model_name_or_path, "" when null */
    int peft_major, peft_minor;   /* 0.0 when absent (treated as current) */
    /* private: target selection */
    char **targets;               /* list form; NULL when regex */
    int n_targets;
    void *target_re;              /* regex form (fullmatch) */
    char **excludes;
    int n_excludes;
    void *exclude_re;
    int *layers;                  /* layers_to_transform; NULL = all */
    int n_layers;
    adp_pattern_t *rank_pat, *alpha_pat;
    int n_rank_pat, n_alpha_pat;
} adp_config_t;

/* Parses the text of adapter_config.json. file names the file in messages.
 * Returns 0 (free with adp_config_deinit()) or a negative code with err naming the key. */
int adp_config_parse(const char *json, const char *file, adp_config_t *cfg, llm_error_t *err);
void adp_config_deinit(adp_config_t *cfg);

/* Whether module key ("model.layers.3.self_attn.q_proj") of layer `layer` is targeted; when it
 * is, *r and *alpha receive its rank and alpha after rank_pattern / alpha_pattern. */
int adp_config_module(const adp_config_t *cfg, const char *key, int layer, int *r,
                      double *alpha);

#endif
