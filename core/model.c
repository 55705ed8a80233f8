#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "safetensors.h"

static const char *const k_proj_names[CORE_PROJ_COUNT] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

const char *core_proj_name(core_proj_t p) {
    return (unsigned)p < CORE_PROJ_COUNT ? k_proj_names[p] : "?";
}

/* ---- loading helpers ---- */

typedef struct {
    const core_st_t *st;
    unsigned char *used; /* (count) tensors consumed, to find unexpected ones */
    llm_error_t *err;
    const char *dir;     /* the model directory, for messages */
    kern_wtype_t wtype;  /* storage type of the matrices */
    kern_layout_t layout; /* bf16 matrices: the layout of the kernels this process runs */
} loader_t;

/* Finds name with exactly the given shape (n_dims 1 or 2). */
static int find(loader_t *L, const char *name, int n_dims, int64_t d0, int64_t d1,
                const core_st_tensor_t **out) {
    const core_st_tensor_t *t = core_st_find(L->st, name);
    if (!t) return llm_err_set(L->err, LLM_ENOTFOUND, "%s: missing tensor \"%s\"", L->dir, name);
    int ok = t->n_dims == n_dims && t->shape[0] == d0 && (n_dims == 1 || t->shape[1] == d1);
    if (!ok) {
        char got[128] = "", *p = got;
        for (int i = 0; i < t->n_dims && p < got + sizeof got - 24; i++)
            p += sprintf(p, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (n_dims == 1)
            return llm_err_set(L->err, LLM_ESHAPE,
                               "%s: tensor \"%s\" has shape [%s], expected [%lld]", L->dir, name,
                               got, (long long)d0);
        return llm_err_set(L->err, LLM_ESHAPE,
                           "%s: tensor \"%s\" has shape [%s], expected [%lld, %lld]", L->dir, name,
                           got, (long long)d0, (long long)d1);
    }
    for (size_t i = 0; i < core_st_count(L->st); i++)
        if (core_st_at(L->st, i) == t) L->used[i] = 1;
    *out = t;
    return 0;
}

/* Drops the checkpoint's pages of a tensor once it has been copied out: the file stays
 * mapped until the load ends, and without this a model loaded into bf16 from an fp32 file
 * would hold both (peak memory ~3× the served size). A hint: failure changes nothing. */
static void release_pages(const void *p, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + n) & ~(page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

static int load_matrix(loader_t *L, const char *name, int64_t rows, int64_t cols,
                       core_weight_t *w) {
    const core_st_tensor_t *t;
    int rc = find(L, name, 2, rows, cols, &t);
    if (rc) return rc;
    int64_t bad = 0;
    rc = core_weight_init(w, L->wtype, t->dtype, t->data, rows, cols, &bad);
    release_pages(t->data, (size_t)rows * (size_t)cols * core_dtype_size(t->dtype));
    if (!rc) rc = core_weight_pack(w, L->layout);
    if (rc == LLM_EFORMAT)
        return llm_err_set(L->err, LLM_EFORMAT,
                           "%s: tensor \"%s\" holds a non-finite value at element %lld",
                           L->dir, name, (long long)bad);
    if (rc) return llm_err_set(L->err, rc, "%s: out of memory loading \"%s\"", L->dir, name);
    return 0;
}

static int load_vector(loader_t *L, const char *name, int64_t n, float **out) {
    const core_st_tensor_t *t;
    int rc = find(L, name, 1, n, 0, &t);
    if (rc) return rc;
    float *v = malloc((size_t)n * sizeof(float));
    if (!v) return llm_err_set(L->err, LLM_ENOMEM, "%s: out of memory loading \"%s\"", L->dir, name);
    core_convert_to_f32(t->dtype, t->data, v, (size_t)n);
    *out = v;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return llm_err_set(L->err, LLM_EFORMAT,
                               "%s: tensor \"%s\" holds a non-finite value", L->dir, name);
    return 0;
}

/* inv_freq[i] = theta^(-2i/hd), then the llama3 frequency-dependent rescaling (as HF's
 * _compute_llama3_parameters): long wavelengths divided by factor, short ones kept, and a
 * smooth blend in between. */
static void compute_rope(const core_model_config_t *c, float *inv_freq) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = pow((double)c->rope_theta, -(2.0 * i) / c->head_dim);
        if (c->rope_llama3) {
            double old_ctx = c->rope_orig_max_pos;
            double low_wl = old_ctx / c->rope_low_freq_factor;
            double high_wl = old_ctx / c->rope_high_freq_factor;
            double wl = 2.0 * M_PI / f;
            if (wl > low_wl) {
                f = f / c->rope_factor;
            } else if (wl >= high_wl) {
                double smooth = (old_ctx / wl - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1.0 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        inv_freq[i] = (float)f;
    }
}

/* ---- public API ---- */

int core_model_load(const char *dir, core_model_t **out, llm_error_t *err) {
    return core_model_load_as(dir, KERN_W_F32, out, err);
}

int core_model_load_as(const char *dir, kern_wtype_t wtype, core_model_t **out,
                       llm_error_t *err) {
    if ((int)wtype < 0 || wtype >= KERN_W_COUNT)
        return llm_err_set(err, LLM_EINVAL, "unknown weight type %d", (int)wtype);
    core_model_t *m = calloc(1, sizeof *m);
    core_st_t *st = NULL;
    loader_t L = {0};
    int rc;
    if (!m) return llm_err_set(err, LLM_ENOMEM, "out of memory");
    if ((rc = core_model_config_load(dir, &m->cfg, err))) goto fail;
    if ((rc = core_st_open_dir(dir, &st, err))) goto fail;

    const core_model_config_t *c = &m->cfg;
    L.st = st;
    L.err = err;
    L.dir = dir;
    L.wtype = wtype;
    /* the table core_exec_create will pick (kern_select is a pure function of the CPU and
     * LORAMUX_KERNELS); a weight in another layout still runs, on that table's plain C */
    L.layout = kern_select(NULL, 0)->bf16_layout;
    m->wtype = wtype;
    L.used = calloc(core_st_count(st) + 1, 1);
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    m->rope_inv_freq = malloc((size_t)c->head_dim / 2 * sizeof(float));
    if (!L.used || !m->layers || !m->rope_inv_freq) {
        rc = llm_err_set(err, LLM_ENOMEM, "out of memory");
        goto fail;
    }
    const int64_t dim = c->hidden_size, ffn = c->intermediate_size;
    const int64_t q_dim = (int64_t)c->n_heads * c->head_dim;
    const int64_t kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    const int64_t rows[CORE_PROJ_COUNT] = {q_dim, kv_dim, kv_dim, dim, ffn, ffn, dim};
    const int64_t cols[CORE_PROJ_COUNT] = {dim, dim, dim, q_dim, dim, dim, ffn};

    if ((rc = load_matrix(&L, "model.embed_tokens.weight", c->vocab_size, dim, &m->embed)) ||
        (rc = load_vector(&L, "model.norm.weight", dim, &m->final_norm)))
        goto fail;
    char name[256];
    for (int l = 0; l < c->n_layers; l++) {
        core_layer_t *ly = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        if ((rc = load_vector(&L, name, dim, &ly->attn_norm))) goto fail;
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        if ((rc = load_vector(&L, name, dim, &ly->ffn_norm))) goto fail;
        for (int p = 0; p < CORE_PROJ_COUNT; p++) {
            const char *grp = p <= CORE_PROJ_O ? "self_attn" : "mlp";
            snprintf(name, sizeof name, "model.layers.%d.%s.%s.weight", l, grp, k_proj_names[p]);
            if ((rc = load_matrix(&L, name, rows[p], cols[p], &ly->proj[p]))) goto fail;
            int has_bias = (p <= CORE_PROJ_V && c->qkv_bias) || (p == CORE_PROJ_O && c->o_bias);
            if (has_bias) {
                snprintf(name, sizeof name, "model.layers.%d.%s.%s.bias", l, grp,
                         k_proj_names[p]);
                if ((rc = load_vector(&L, name, rows[p], &ly->bias[p]))) goto fail;
            }
        }
    }
    if (c->tie_embeddings) {
        m->lm_head = &m->embed;
        m->owns_lm_head = 0;
    } else {
        if ((rc = load_matrix(&L, "lm_head.weight", c->vocab_size, dim, &m->lm_head_own)))
            goto fail;
        m->lm_head = &m->lm_head_own;
        m->owns_lm_head = 1;
    }
    /* A tensor the forward would not use means the checkpoint is not the model we think
     * (a bias we would drop, an extra norm...): refuse rather than compute something else.
     * Rotary caches are derived data and may be ignored. */
    for (size_t i = 0; i < core_st_count(st); i++) {
        const char *n = core_st_at(st, i)->name;
        if (L.used[i] || strstr(n, "rotary_emb.inv_freq")) continue;
        if (c->tie_embeddings && strcmp(n, "lm_head.weight") == 0) continue; /* tied copy */
        rc = llm_err_set(err, LLM_EUNSUPPORTED,
                         "%s: unexpected tensor \"%s\" (not used by %s with this config)",
                         dir, n, c->arch_name);
        goto fail;
    }
    compute_rope(c, m->rope_inv_freq);
    m->weight_bytes = core_weight_bytes(&m->embed) +
                      (m->owns_lm_head ? core_weight_bytes(&m->lm_head_own) : 0);
    for (int l = 0; l < c->n_layers; l++)
        for (int p = 0; p < CORE_PROJ_COUNT; p++)
            m->weight_bytes += core_weight_bytes(&m->layers[l].proj[p]);
    free(L.used);
    core_st_free(st); /* weights were copied out; the mapping is no longer needed */
    *out = m;
    return 0;
fail:
    free(L.used);
    core_st_free(st);
    core_model_free(m);
    return rc;
}

void core_model_free(core_model_t *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            core_layer_t *ly = &m->layers[l];
            free(ly->attn_norm);
            free(ly->ffn_norm);
            for (int p = 0; p < CORE_PROJ_COUNT; p++) {
                core_weight_deinit(&ly->proj[p]);
                free(ly->bias[p]);
            }
        }
    }
    free(m->layers);
    core_weight_deinit(&m->embed);
    if (m->owns_lm_head) core_weight_deinit(&m->lm_head_own);
    free(m->final_norm);
    free(m->rope_inv_freq);
    free(m);
}
