#include "model_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- key tables ---- */

/* Keys that change nothing at inference time (training settings, bookkeeping, dtype hints:
 * weights are converted to the serving dtype whatever torch_dtype says). */
static const char *const k_inert[] = {
    "_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache",
    "initializer_range", "attention_dropout", "pad_token_id", "tokenizer_class",
    "output_attentions", "output_hidden_states", "return_dict", "is_llama_config",
    "transformers.js_config", "unsloth_version", "unsloth_fixed", "embd_pdrop", "resid_pdrop",
    "model_type", "pretraining_tp", /* pretraining_tp only splits the same matmuls in HF */
    "max_window_layers",             /* Qwen2: meaningful only with use_sliding_window */
    NULL,
};

/* Keys this file interprets. */
static const char *const k_known[] = {
    "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
    "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters",
    "hidden_act", "tie_word_embeddings", "attention_bias", "mlp_bias", "bos_token_id",
    "eos_token_id", "sliding_window", "use_sliding_window", "rope_interleaved", "layer_types",
    "use_mrope", NULL,
};

static int in_list(const char *const *list, const char *s) {
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], s) == 0) return 1;
    return 0;
}

/* ---- helpers ---- */

static int get_int(const cJSON *root, const char *key, int required, int def, int lo, int *out,
                   llm_error_t *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return llm_err_set(err, LLM_EFORMAT, "config.json: missing \"%s\"", key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble < lo || v->valuedouble > 1e9)
        return llm_err_set(err, LLM_EFORMAT,
                           "config.json: \"%s\" must be an integer >= %d", key, lo);
    *out = (int)v->valuedouble;
    return 0;
}

static int get_float(const cJSON *root, const char *key, double def, float *out,
                     llm_error_t *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        *out = (float)def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble <= 0)
        return llm_err_set(err, LLM_EFORMAT, "config.json: \"%s\" must be a positive number",
                           key);
    *out = (float)v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *root, const char *key, int def, int *out, llm_error_t *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return llm_err_set(err, LLM_EFORMAT, "config.json: \"%s\" must be true or false", key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* eos_token_id may be an int or a list of ints; appends unique ids to cfg. */
static int add_eos(core_model_config_t *cfg, const cJSON *v, const char *file,
                   llm_error_t *err) {
    if (!v || cJSON_IsNull(v)) return 0;
    const cJSON *it;
    int is_list = cJSON_IsArray(v);
    if (!is_list && !cJSON_IsNumber(v))
        return llm_err_set(err, LLM_EFORMAT, "%s: \"eos_token_id\" must be an integer or a list",
                           file);
    for (it = is_list ? v->child : v; it; it = is_list ? it->next : NULL) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0)
            return llm_err_set(err, LLM_EFORMAT, "%s: \"eos_token_id\" has a bad entry", file);
        int id = (int)it->valuedouble, dup = 0;
        for (int i = 0; i < cfg->n_eos; i++) dup |= cfg->eos_ids[i] == id;
        if (!dup && cfg->n_eos < (int)(sizeof cfg->eos_ids / sizeof cfg->eos_ids[0]))
            cfg->eos_ids[cfg->n_eos++] = id;
    }
    return 0;
}

/* rope_scaling: null, or {"rope_type"|"type": "llama3", factor, low_freq_factor,
 * high_freq_factor, original_max_position_embeddings}; "default" is plain RoPE. */
static int parse_rope_scaling(const cJSON *rs, core_model_config_t *cfg, llm_error_t *err) {
    if (!rs || cJSON_IsNull(rs)) return 0;
    if (!cJSON_IsObject(rs))
        return llm_err_set(err, LLM_EFORMAT, "config.json: \"rope_scaling\" must be an object");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!t) t = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : NULL;
    if (!type)
        return llm_err_set(err, LLM_EFORMAT, "config.json: \"rope_scaling\" has no rope_type");
    if (strcmp(type, "default") == 0) return 0;
    if (strcmp(type, "llama3") != 0)
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "config.json: \"rope_scaling\" type \"%s\" is not supported "
                           "(supported: llama3, default)", type);
    static const char *const keys[] = {"rope_type", "type", "factor", "low_freq_factor",
                                       "high_freq_factor", "original_max_position_embeddings",
                                       "rope_theta", NULL};
    for (const cJSON *it = rs->child; it; it = it->next)
        if (!in_list(keys, it->string))
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "config.json: \"rope_scaling.%s\" is not supported", it->string);
    int rc;
    if ((rc = get_float(rs, "factor", 0, &cfg->rope_factor, err)) ||
        (rc = get_float(rs, "low_freq_factor", 0, &cfg->rope_low_freq_factor, err)) ||
        (rc = get_float(rs, "high_freq_factor", 0, &cfg->rope_high_freq_factor, err)) ||
        (rc = get_int(rs, "original_max_position_embeddings", 1, 0, 1, &cfg->rope_orig_max_pos,
                      err)))
        return rc;
    if (cfg->rope_factor <= 0 || cfg->rope_low_freq_factor <= 0 ||
        cfg->rope_high_freq_factor <= cfg->rope_low_freq_factor)
        return llm_err_set(err, LLM_EFORMAT,
                           "config.json: \"rope_scaling\" llama3 needs factor > 0 and "
                           "high_freq_factor > low_freq_factor > 0");
    cfg->rope_llama3 = 1;
    return 0;
}

/* ---- public API ---- */

int core_model_config_parse(const char *config_json, const char *generation_json,
                            core_model_config_t *cfg, llm_error_t *err) {
    memset(cfg, 0, sizeof *cfg);
    cfg->gen_temperature = 1.0f;
    cfg->gen_top_p = 1.0f;
    cfg->gen_top_k = 50;
    cJSON *root = cJSON_Parse(config_json);
    cJSON *gen = NULL;
    int rc = 0;
    if (!root || !cJSON_IsObject(root)) {
        rc = llm_err_set(err, LLM_EFORMAT, "config.json: not a JSON object");
        goto done;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!in_list(k_known, it->string) && !in_list(k_inert, it->string)) {
            rc = llm_err_set(err, LLM_EUNSUPPORTED,
                             "config.json: key \"%s\" is not implemented by this server's "
                             "forward pass; refusing to ignore it", it->string);
            goto done;
        }
    }

    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    if (!cJSON_IsString(a0) || cJSON_GetArraySize(archs) != 1) {
        rc = llm_err_set(err, LLM_EFORMAT,
                         "config.json: \"architectures\" must list exactly one architecture");
        goto done;
    }
    snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", a0->valuestring);
    if (strcmp(a0->valuestring, "LlamaForCausalLM") == 0) cfg->arch = CORE_ARCH_LLAMA;
    else if (strcmp(a0->valuestring, "MistralForCausalLM") == 0) cfg->arch = CORE_ARCH_MISTRAL;
    else if (strcmp(a0->valuestring, "Qwen2ForCausalLM") == 0) cfg->arch = CORE_ARCH_QWEN2;
    else {
        rc = llm_err_set(err, LLM_EUNSUPPORTED,
                         "config.json: \"architectures\" %s is not supported (supported: "
                         "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
                         a0->valuestring);
        goto done;
    }

    int attn_bias = 0, mlp_bias = 0, sw_on = 0, interleaved = 0, sliding = 0, mrope = 0;
    if ((rc = get_int(root, "hidden_size", 1, 0, 1, &cfg->hidden_size, err)) ||
        (rc = get_int(root, "intermediate_size", 1, 0, 1, &cfg->intermediate_size, err)) ||
        (rc = get_int(root, "num_hidden_layers", 1, 0, 1, &cfg->n_layers, err)) ||
        (rc = get_int(root, "num_attention_heads", 1, 0, 1, &cfg->n_heads, err)) ||
        (rc = get_int(root, "num_key_value_heads", 0, cfg->n_heads, 1, &cfg->n_kv_heads, err)) ||
        (rc = get_int(root, "head_dim", 0, cfg->hidden_size / cfg->n_heads, 1, &cfg->head_dim,
                      err)) ||
        (rc = get_int(root, "vocab_size", 1, 0, 1, &cfg->vocab_size, err)) ||
        (rc = get_int(root, "max_position_embeddings", 0, 2048, 1, &cfg->max_pos, err)) ||
        (rc = get_float(root, "rms_norm_eps", 1e-6, &cfg->rms_eps, err)) ||
        (rc = get_float(root, "rope_theta", 10000.0, &cfg->rope_theta, err)) ||
        (rc = get_bool(root, "tie_word_embeddings", 0, &cfg->tie_embeddings, err)) ||
        (rc = get_bool(root, "attention_bias", 0, &attn_bias, err)) ||
        (rc = get_bool(root, "mlp_bias", 0, &mlp_bias, err)) ||
        (rc = get_bool(root, "use_sliding_window", 0, &sw_on, err)) ||
        (rc = get_bool(root, "rope_interleaved", 0, &interleaved, err)) ||
        (rc = get_bool(root, "use_mrope", 0, &mrope, err)) ||
        (rc = get_int(root, "sliding_window", 0, 0, 0, &sliding, err)))
        goto done;

    if (cfg->n_heads % cfg->n_kv_heads != 0) {
        rc = llm_err_set(err, LLM_EFORMAT,
                         "config.json: num_attention_heads %d is not a multiple of "
                         "num_key_value_heads %d", cfg->n_heads, cfg->n_kv_heads);
        goto done;
    }
    if (cfg->n_heads / cfg->n_kv_heads > CORE_MAX_GQA_GROUP) {
        rc = llm_err_set(err, LLM_EUNSUPPORTED,
                         "config.json: num_attention_heads %d / num_key_value_heads %d = %d query "
                         "heads per KV head; at most %d are supported", cfg->n_heads,
                         cfg->n_kv_heads, cfg->n_heads / cfg->n_kv_heads, CORE_MAX_GQA_GROUP);
        goto done;
    }
    if (cfg->head_dim % 2 != 0) {
        rc = llm_err_set(err, LLM_EFORMAT, "config.json: head_dim %d must be even for RoPE",
                         cfg->head_dim);
        goto done;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && !(cJSON_IsString(act) && strcmp(act->valuestring, "silu") == 0)) {
        rc = llm_err_set(err, LLM_EUNSUPPORTED,
                         "config.json: \"hidden_act\" must be \"silu\" (got %s)",
                         cJSON_IsString(act) ? act->valuestring : "a non-string");
        goto done;
    }
    if (mlp_bias) {
        rc = llm_err_set(err, LLM_EUNSUPPORTED, "config.json: \"mlp_bias\": true is not supported");
        goto done;
    }
    if (interleaved) {
        rc = llm_err_set(err, LLM_EUNSUPPORTED,
                         "config.json: \"rope_interleaved\": true is not supported");
        goto done;
    }
    if (mrope) {
        rc = llm_err_set(err, LLM_EUNSUPPORTED, "config.json: \"use_mrope\": true is not supported");
        goto done;
    }
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
    for (const cJSON *it = cJSON_IsArray(lt) ? lt->child : NULL; it; it = it->next) {
        if (!cJSON_IsString(it) || strcmp(it->valuestring, "full_attention") != 0) {
            rc = llm_err_set(err, LLM_EUNSUPPORTED,
                             "config.json: \"layer_types\" other than \"full_attention\" are "
                             "not supported");
            goto done;
        }
    }

    /* Sliding-window attention is not implemented. Qwen2 carries a window that is off unless
     * use_sliding_window is true. For Mistral an active window is honoured exactly by capping
     * the context at the window: below it, windowed and full attention are the same. */
    /* HF's MistralConfig defaults an absent sliding_window to 4096. */
    if (cfg->arch == CORE_ARCH_MISTRAL && !cJSON_GetObjectItemCaseSensitive(root, "sliding_window"))
        sliding = 4096;
    if (cfg->arch == CORE_ARCH_QWEN2) {
        if (sw_on) {
            rc = llm_err_set(err, LLM_EUNSUPPORTED,
                             "config.json: \"use_sliding_window\": true is not supported");
            goto done;
        }
    } else if (sw_on) {
        rc = llm_err_set(err, LLM_EUNSUPPORTED,
                         "config.json: \"use_sliding_window\": true is not supported");
        goto done;
    } else if (sliding > 0 && sliding < cfg->max_pos) {
        cfg->max_pos = sliding;
    }

    /* Biases: Qwen2 has q/k/v biases always; Llama/Mistral's attention_bias adds q/k/v/o. */
    if (cfg->arch == CORE_ARCH_QWEN2) {
        cfg->qkv_bias = 1;
    } else if (attn_bias) {
        cfg->qkv_bias = 1;
        cfg->o_bias = 1;
    }

    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (rp && !cJSON_IsNull(rp)) {
        /* transformers >= 5 moves rope_theta and the scaling into one object. */
        if ((rc = get_float(rp, "rope_theta", cfg->rope_theta, &cfg->rope_theta, err)) ||
            (rc = parse_rope_scaling(rp, cfg, err)))
            goto done;
    }
    if ((rc = parse_rope_scaling(cJSON_GetObjectItemCaseSensitive(root, "rope_scaling"), cfg,
                                 err)))
        goto done;

    int bos = -1;
    if ((rc = get_int(root, "bos_token_id", 0, -1, 0, &bos, err))) goto done;
    cfg->bos_id = bos;
    if ((rc = add_eos(cfg, cJSON_GetObjectItemCaseSensitive(root, "eos_token_id"), "config.json",
                      err)))
        goto done;
    if (generation_json) {
        gen = cJSON_Parse(generation_json);
        if (!gen || !cJSON_IsObject(gen)) {
            rc = llm_err_set(err, LLM_EFORMAT, "generation_config.json: not a JSON object");
            goto done;
        }
        if ((rc = add_eos(cfg, cJSON_GetObjectItemCaseSensitive(gen, "eos_token_id"),
                          "generation_config.json", err)))
            goto done;
        const cJSON *ds = cJSON_GetObjectItemCaseSensitive(gen, "do_sample");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(gen, "temperature");
        const cJSON *tp = cJSON_GetObjectItemCaseSensitive(gen, "top_p");
        const cJSON *tk = cJSON_GetObjectItemCaseSensitive(gen, "top_k");
        cfg->gen_do_sample = cJSON_IsTrue(ds);
        if (cJSON_IsNumber(t) && t->valuedouble >= 0) cfg->gen_temperature = (float)t->valuedouble;
        if (cJSON_IsNumber(tp) && tp->valuedouble > 0 && tp->valuedouble <= 1)
            cfg->gen_top_p = (float)tp->valuedouble;
        if (cJSON_IsNumber(tk) && tk->valuedouble >= 0) cfg->gen_top_k = (int)tk->valuedouble;
    }
    for (int i = 0; i < cfg->n_eos; i++) {
        if (cfg->eos_ids[i] >= cfg->vocab_size) {
            rc = llm_err_set(err, LLM_EFORMAT, "config.json: eos_token_id %d >= vocab_size %d",
                             cfg->eos_ids[i], cfg->vocab_size);
            goto done;
        }
    }
done:
    cJSON_Delete(root);
    cJSON_Delete(gen);
    return rc;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            char *nb = realloc(buf, cap ? cap * 2 : 8192);
            if (!nb) { free(buf); fclose(f); return NULL; }
            buf = nb;
            cap = cap ? cap * 2 : 8192;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

int core_model_config_load(const char *dir, core_model_config_t *cfg, llm_error_t *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *cj = read_text(path);
    if (!cj) return llm_err_set(err, LLM_ENOTFOUND, "%s: cannot read", path);
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    char *gj = read_text(path); /* optional */
    int rc = core_model_config_parse(cj, gj, cfg, err);
    free(cj);
    free(gj);
    return rc;
}
