#include "adp_config.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- key tables ---- */

/* Fields with no effect on the inference forward (bookkeeping and training settings). */
static const char *const k_inert[] = {
    "task_type", "revision", "inference_mode", "lora_dropout", "lorma_dropout",
    "auto_mapping", "megatron_core", "peft_version", "base_model_name_or_path",
    "fan_in_fan_out", /* PEFT resets it to false for nn.Linear targets (all Llama ones) */
    /* initialisation-time settings: init_lora_weights decides whether the base was changed */
    "eva_config", "corda_config", "lora_ga_config",
    NULL,
};

/* Fields interpreted below. */
static const char *const k_known[] = {
    "peft_type", "r", "lora_alpha", "use_rslora", "use_dora", "use_mora", "mora_type",
    "lora_bias", "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern",
    "rank_pattern", "alpha_pattern", "bias", "modules_to_save", "init_lora_weights",
    "layer_replication", "lorma_r", "lorma_alpha", "lorma_mode", "rank_inflation", "k",
    "loftq_config", "megatron_config", NULL,
};

static int in_list(const char *const *l, const char *s) {
    for (int i = 0; l[i]; i++)
        if (strcmp(l[i], s) == 0) return 1;
    return 0;
}

/* "Not enabled" values: what PEFT writes for the default of a feature it does not use. */
static int is_off(const cJSON *v) {
    return !v || cJSON_IsNull(v) || cJSON_IsFalse(v) ||
           ((cJSON_IsObject(v) || cJSON_IsArray(v)) && !v->child) ||
           (cJSON_IsString(v) && !*v->valuestring);
}

/* ---- regex helpers (PCRE2, Python re semantics for the patterns PEFT uses) ---- */

static void *re_compile(const char *pat, int full, const char *file, const char *what,
                        llm_error_t *err, int *rc) {
    int ec;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | PCRE2_ANCHORED | (full ? PCRE2_ENDANCHORED : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &ec, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(ec, msg, sizeof msg);
        *rc = llm_err_set(err, LLM_EFORMAT, "%s: %s: bad regular expression \"%s\": %s", file,
                          what, pat, (char *)msg);
    }
    return re;
}

static int re_match(void *re, const char *s) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) return 0;
    int rc = pcre2_match(re, (PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* ---- field parsers ---- */

/* A list of names or a regex string (target_modules, exclude_modules). */
static int parse_names(const cJSON *v, const char *file, const char *what, char ***list, int *n,
                       void **re, llm_error_t *err) {
    int rc = 0;
    if (cJSON_IsString(v)) {
        *re = re_compile(v->valuestring, 1, file, what, err, &rc);
        return rc;
    }
    if (!cJSON_IsArray(v))
        return llm_err_set(err, LLM_EFORMAT, "%s: \"%s\" must be a list of names or a regex",
                           file, what);
    int cnt = cJSON_GetArraySize(v);
    *list = calloc((size_t)cnt + 1, sizeof(char *));
    if (!*list) return LLM_ENOMEM;
    for (const cJSON *it = v->child; it; it = it->next) {
        if (!cJSON_IsString(it))
            return llm_err_set(err, LLM_EFORMAT, "%s: \"%s\" entries must be strings", file, what);
        if (!((*list)[(*n)++] = strdup(it->valuestring))) return LLM_ENOMEM;
    }
    return 0;
}

static int parse_patterns(const cJSON *v, const adp_config_t *c, const char *file,
                          const char *what, int want_int, adp_pattern_t **out, int *n,
                          llm_error_t *err) {
    if (is_off(v)) return 0;
    if (!cJSON_IsObject(v))
        return llm_err_set(err, LLM_EFORMAT, "%s: \"%s\" must be an object", file, what);
    *out = calloc((size_t)cJSON_GetArraySize(v), sizeof **out);
    if (!*out) return LLM_ENOMEM;
    /* PEFT >= 0.15 matches (.*\.)?(k)$; before, .*\.k$ (a dot before the key is required). */
    int modern = c->peft_major == 0 && c->peft_minor == 0 ? 1
                 : (c->peft_major > 0 || c->peft_minor >= 15);
    for (const cJSON *it = v->child; it; it = it->next) {
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) ||
            (want_int && (it->valuedouble != floor(it->valuedouble) || it->valuedouble <= 0)))
            return llm_err_set(err, LLM_EFORMAT, "%s: \"%s\" entry \"%s\" must be a %s", file,
                               what, it->string, want_int ? "positive integer" : "number");
        adp_pattern_t *p = &(*out)[(*n)++];
        size_t len = strlen(it->string) + 16;
        char *wrapped = malloc(len);
        if (!(p->key = strdup(it->string)) || !wrapped) { free(wrapped); return LLM_ENOMEM; }
        snprintf(wrapped, len, modern ? "(.*\\.)?(%s)$" : ".*\\.%s$", it->string);
        int rc = 0;
        p->re = re_compile(wrapped, 0, file, what, err, &rc);
        free(wrapped);
        if (rc) return rc;
        p->value = it->valuedouble;
    }
    return 0;
}

static int get_num(const cJSON *root, const char *key, const char *file, int required,
                   double def, double *out, llm_error_t *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return llm_err_set(err, LLM_EFORMAT, "%s: missing \"%s\"", file, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return llm_err_set(err, LLM_EFORMAT, "%s: \"%s\" must be a number", file, key);
    *out = v->valuedouble;
    return 0;
}

static const char *get_str(const cJSON *root, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- public API ---- */

int adp_config_parse(const char *json, const char *file, adp_config_t *c, llm_error_t *err) {
    memset(c, 0, sizeof *c);
    int rc = 0;
    cJSON *root = cJSON_Parse(json);
    if (!root || !cJSON_IsObject(root)) {
        rc = llm_err_set(err, LLM_EFORMAT, "%s: not a JSON object", file);
        goto done;
    }
    const char *pt = get_str(root, "peft_type");
    if (!pt) {
        rc = llm_err_set(err, LLM_EFORMAT, "%s: missing \"peft_type\"", file);
        goto done;
    }
    const char *ver = get_str(root, "peft_version");
    if (ver) sscanf(ver, "%d.%d", &c->peft_major, &c->peft_minor);

    /* Unknown fields: refuse unless they hold a "feature off" value. */
    for (const cJSON *it = root->child; it; it = it->next) {
        if (in_list(k_known, it->string) || in_list(k_inert, it->string)) continue;
        if (is_off(it)) continue;
        rc = llm_err_set(err, LLM_EUNSUPPORTED,
                         "%s: \"%s\" is set, and this server does not implement what it changes",
                         file, it->string);
        goto done;
    }

    int use_mora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "use_mora"));
    c->use_dora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "use_dora"));
    c->use_rslora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "use_rslora"));
    c->lora_bias = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "lora_bias"));
    double r = 0, alpha = 0, k = 8;
    if (strcmp(pt, "LORA") == 0) {
        if (use_mora) {
            double mt;
            if ((rc = get_num(root, "mora_type", file, 0, 1, &mt, err))) goto done;
            c->mora_type = (int)mt;
            if (mt != floor(mt) || !(mt == 1 || mt == 2 || mt == 3 || mt == 4 || mt == 6)) {
                rc = llm_err_set(err, LLM_EUNSUPPORTED,
                                 "%s: \"mora_type\" %g is not supported (1, 2, 3, 4 or 6)", file,
                                 mt);
                goto done;
            }
            if (c->use_dora) {
                rc = llm_err_set(err, LLM_EUNSUPPORTED,
                                 "%s: \"use_dora\" and \"use_mora\" cannot be combined", file);
                goto done;
            }
            c->method = ADP_METHOD_MORA;
        } else if (c->use_dora) {
            c->method = ADP_METHOD_DORA;
            if (c->lora_bias) {
                rc = llm_err_set(err, LLM_EUNSUPPORTED,
                                 "%s: \"lora_bias\" with \"use_dora\" is refused (as by PEFT)",
                                 file);
                goto done;
            }
        } else {
            c->method = c->use_rslora ? ADP_METHOD_RSLORA : ADP_METHOD_LORA;
        }
        if ((rc = get_num(root, "r", file, 0, 8, &r, err)) ||
            (rc = get_num(root, "lora_alpha", file, 0, 8, &alpha, err)))
            goto done;
    } else if (strcmp(pt, "LORMA") == 0) {
        c->method = ADP_METHOD_LORMA;
        const char *rk = cJSON_GetObjectItemCaseSensitive(root, "r") ? "r" : "lorma_r";
        const char *ak = cJSON_GetObjectItemCaseSensitive(root, "lora_alpha") ? "lora_alpha"
                                                                              : "lorma_alpha";
        if ((rc = get_num(root, rk, file, 1, 0, &r, err)) ||
            (rc = get_num(root, ak, file, 1, 0, &alpha, err)))
            goto done;
        const char *mode = get_str(root, "lorma_mode");
        const char *infl = get_str(root, "rank_inflation");
        if (!mode || (strcmp(mode, "pre") && strcmp(mode, "post"))) {
            rc = llm_err_set(err, LLM_EFORMAT,
                             "%s: \"lorma_mode\" must be \"pre\" or \"post\" (it cannot be "
                             "inferred from square tensors)", file);
            goto done;
        }
        if (!infl || (strcmp(infl, "rri") && strcmp(infl, "shift") && strcmp(infl, "none"))) {
            rc = llm_err_set(err, LLM_EFORMAT,
                             "%s: \"rank_inflation\" must be \"rri\", \"shift\" or \"none\"", file);
            goto done;
        }
        c->lorma_pre = strcmp(mode, "pre") == 0;
        c->inflation = !strcmp(infl, "rri") ? ADP_INFL_RRI
                       : !strcmp(infl, "shift") ? ADP_INFL_SHIFT : ADP_INFL_NONE;
    } else if (strcmp(pt, "LORA2") == 0) {
        c->method = ADP_METHOD_LORA2;
        if ((rc = get_num(root, "r", file, 1, 0, &r, err)) ||
            (rc = get_num(root, "lora_alpha", file, 0, 0, &alpha, err)) ||
            (rc = get_num(root, "k", file, 0, 8, &k, err)))
            goto done;
        if (k != floor(k) || k < 1 || k > 65536) {
            rc = llm_err_set(err, LLM_EFORMAT, "%s: \"k\" must be a positive integer", file);
            goto done;
        }
        c->k = (int)k;
    } else {
        rc = llm_err_set(err, LLM_EUNSUPPORTED,
                         "%s: peft_type \"%s\" is not supported (LORA, LORMA, LORA2)", file, pt);
        goto done;
    }
    if (r != floor(r) || r <= 0 || r > 65536) {
        rc = llm_err_set(err, LLM_EFORMAT, "%s: rank \"r\" must be a positive integer, got %g",
                         file, r);
        goto done;
    }
    c->r = (int)r;
    c->alpha = alpha;

    /* Fields that change the model beyond what the adapter tensors express. */
    const char *bias = get_str(root, "bias");
    if (bias && strcmp(bias, "none") != 0) {
        rc = llm_err_set(err, LLM_EUNSUPPORTED,
                         "%s: \"bias\": \"%s\" replaces base biases; only \"none\" is served",
                         file, bias);
        goto done;
    }
    static const char *const must_be_off[] = {"modules_to_save", "layer_replication",
                                              "megatron_config", NULL};
    for (int i = 0; must_be_off[i]; i++) {
        if (!is_off(cJSON_GetObjectItemCaseSensitive(root, must_be_off[i]))) {
            rc = llm_err_set(err, LLM_EUNSUPPORTED, "%s: \"%s\" is not supported by this server",
                             file, must_be_off[i]);
            goto done;
        }
    }
    const char *init = get_str(root, "init_lora_weights");
    if (init && (!strncmp(init, "pissa", 5) || !strcmp(init, "olora") || !strcmp(init, "corda") ||
                 !strcmp(init, "lora_ga") || !strcmp(init, "mica"))) {
        rc = llm_err_set(err, LLM_EUNSUPPORTED,
                         "%s: \"init_lora_weights\": \"%s\" trains against a modified base "
                         "model; convert the adapter to a plain LoRA first", file, init);
        goto done;
    }
    const char *task = get_str(root, "task_type");
    if (task && strcmp(task, "CAUSAL_LM") != 0) {
        rc = llm_err_set(err, LLM_EUNSUPPORTED,
                         "%s: \"task_type\" %s is not served (only CAUSAL_LM)", file, task);
        goto done;
    }
    const char *bm = get_str(root, "base_model_name_or_path");
    snprintf(c->base_model, sizeof c->base_model, "%s", bm ? bm : "");

    /* Targets. */
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(root, "target_modules");
    if (cJSON_IsString(tm) && strcmp(tm->valuestring, "all-linear") == 0) {
        /* PEFT's shorthand for every linear layer but the output head */
        cJSON_ReplaceItemInObjectCaseSensitive(
            root, "target_modules",
            cJSON_CreateStringArray((const char *const[]){"q_proj", "k_proj", "v_proj", "o_proj",
                                                          "gate_proj", "up_proj", "down_proj"},
                                    7));
        tm = cJSON_GetObjectItemCaseSensitive(root, "target_modules");
    }
    if (is_off(tm)) {
        if (c->method == ADP_METHOD_LORMA || c->method == ADP_METHOD_LORA2) {
            rc = llm_err_set(err, LLM_EFORMAT, "%s: missing \"target_modules\"", file);
            goto done;
        }
        /* PEFT's default for Llama-family models */
        static const char *const dflt[] = {"q_proj", "v_proj"};
        c->targets = calloc(3, sizeof(char *));
        if (!c->targets || !(c->targets[0] = strdup(dflt[0])) ||
            !(c->targets[1] = strdup(dflt[1]))) {
            rc = LLM_ENOMEM;
            goto done;
        }
        c->n_targets = 2;
    } else if ((rc = parse_names(tm, file, "target_modules", &c->targets, &c->n_targets,
                                 &c->target_re, err))) {
        goto done;
    }
    if (c->targets) {
        for (int i = 0; i < c->n_targets; i++) {
            if (strcmp(c->targets[i], "all-linear") == 0) {
                rc = llm_err_set(err, LLM_EFORMAT,
                                 "%s: \"target_modules\": \"all-linear\" must be expanded to "
                                 "module names before saving (PEFT does this)", file);
                goto done;
            }
        }
    }
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(root, "exclude_modules");
    if (!is_off(ex) && (rc = parse_names(ex, file, "exclude_modules", &c->excludes,
                                         &c->n_excludes, &c->exclude_re, err)))
        goto done;
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layers_to_transform");
    if (!is_off(lt) || cJSON_IsNumber(lt)) {
        if (!c->targets) {
            rc = llm_err_set(err, LLM_EFORMAT,
                             "%s: \"layers_to_transform\" needs a list \"target_modules\"", file);
            goto done;
        }
        int cnt = cJSON_IsArray(lt) ? cJSON_GetArraySize(lt) : 1;
        c->layers = calloc((size_t)cnt, sizeof(int));
        if (!c->layers) { rc = LLM_ENOMEM; goto done; }
        for (const cJSON *it = cJSON_IsArray(lt) ? lt->child : lt; it;
             it = cJSON_IsArray(lt) ? it->next : NULL) {
            if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble != floor(it->valuedouble)) {
                rc = llm_err_set(err, LLM_EFORMAT,
                                 "%s: \"layers_to_transform\" entries must be layer indices", file);
                goto done;
            }
            c->layers[c->n_layers++] = (int)it->valuedouble;
        }
    }
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(root, "layers_pattern");
    if (!is_off(lp)) {
        int ok = cJSON_IsString(lp) && strcmp(lp->valuestring, "layers") == 0;
        for (const cJSON *it = cJSON_IsArray(lp) ? lp->child : NULL; it; it = it->next)
            ok |= cJSON_IsString(it) && strcmp(it->valuestring, "layers") == 0;
        if (!ok) {
            rc = llm_err_set(err, LLM_EFORMAT,
                             "%s: \"layers_pattern\" names no layer list of a Llama-family model "
                             "(expected \"layers\")", file);
            goto done;
        }
    }
    if ((rc = parse_patterns(cJSON_GetObjectItemCaseSensitive(root, "rank_pattern"), c, file,
                             "rank_pattern", 1, &c->rank_pat, &c->n_rank_pat, err)) ||
        (rc = parse_patterns(cJSON_GetObjectItemCaseSensitive(root, "alpha_pattern"), c, file,
                             "alpha_pattern", 0, &c->alpha_pat, &c->n_alpha_pat, err)))
        goto done;
    if ((c->n_rank_pat || c->n_alpha_pat) &&
        (c->method == ADP_METHOD_LORMA || c->method == ADP_METHOD_LORA2)) {
        rc = llm_err_set(err, LLM_EUNSUPPORTED,
                         "%s: rank_pattern/alpha_pattern are not defined for %s", file, pt);
        goto done;
    }
done:
    cJSON_Delete(root);
    if (rc) adp_config_deinit(c);
    return rc;
}

static void free_names(char **l, int n) {
    for (int i = 0; l && i < n; i++) free(l[i]);
    free(l);
}

static void free_patterns(adp_pattern_t *p, int n) {
    for (int i = 0; p && i < n; i++) {
        free(p[i].key);
        pcre2_code_free(p[i].re);
    }
    free(p);
}

void adp_config_deinit(adp_config_t *c) {
    if (!c) return;
    free_names(c->targets, c->n_targets);
    free_names(c->excludes, c->n_excludes);
    pcre2_code_free(c->target_re);
    pcre2_code_free(c->exclude_re);
    free(c->layers);
    free_patterns(c->rank_pat, c->n_rank_pat);
    free_patterns(c->alpha_pat, c->n_alpha_pat);
    memset(c, 0, sizeof *c);
}

/* PEFT's list rule: key == name or key ends with "." + name. */
static int name_matches(char **l, int n, void *re, const char *key) {
    if (re) return re_match(re, key);
    size_t kl = strlen(key);
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(l[i]);
        if (strcmp(key, l[i]) == 0) return 1;
        if (kl > nl && key[kl - nl - 1] == '.' && strcmp(key + kl - nl, l[i]) == 0) return 1;
    }
    return 0;
}

static const adp_pattern_t *first_match(const adp_pattern_t *p, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (re_match(p[i].re, key)) return &p[i];
    return NULL;
}

int adp_config_module(const adp_config_t *c, const char *key, int layer, int *r,
                      double *alpha) {
    if ((c->excludes || c->exclude_re) && name_matches(c->excludes, c->n_excludes, c->exclude_re, key))
        return 0;
    if (!name_matches(c->targets, c->n_targets, c->target_re, key)) return 0;
    if (c->layers) {
        int in = 0;
        for (int i = 0; i < c->n_layers; i++) in |= c->layers[i] == layer;
        if (!in) return 0;
    }
    *r = c->r;
    *alpha = c->alpha;
    int old = c->peft_major == 0 && c->peft_minor > 0 && c->peft_minor < 14;
    if (old) {
        /* PEFT < 0.14: one search over rank_pattern keys, then alpha_pattern keys; the winning
         * key is looked up in both dicts. */
        const adp_pattern_t *w = first_match(c->rank_pat, c->n_rank_pat, key);
        if (!w) w = first_match(c->alpha_pat, c->n_alpha_pat, key);
        if (w) {
            for (int i = 0; i < c->n_rank_pat; i++)
                if (!strcmp(c->rank_pat[i].key, w->key)) *r = (int)c->rank_pat[i].value;
            for (int i = 0; i < c->n_alpha_pat; i++)
                if (!strcmp(c->alpha_pat[i].key, w->key)) *alpha = c->alpha_pat[i].value;
        }
    } else {
        const adp_pattern_t *pr = first_match(c->rank_pat, c->n_rank_pat, key);
        const adp_pattern_t *pa = first_match(c->alpha_pat, c->n_alpha_pat, key);
        if (pr) *r = (int)pr->value;
        if (pa) *alpha = pa->value;
    }
    return 1;
}
