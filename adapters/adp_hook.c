/* adp_hook.c: applies each segment's adapter set inside the core's linear layers.
 *
 * Consecutive segments with the same adp_set_t form one group (the scheduler orders a step's
 * sequences by adapter set, so tenants sharing an adapter are contiguous). Per group and
 * adapter: LoRA-like modules run as two BLAS calls over the group's rows (shrink X·Aᵀ, then
 * expand T·Bᵀ accumulated into Y): SGMV when the group has several tokens, two sgemv calls
 * for a single token. Nothing is padded to a maximum rank and no full-width delta is formed.
 */
#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"

struct adp_hook_s {
    const core_model_t *m;
    int max_tokens;
    size_t cap;       /* floats in each scratch buffer */
    float *t1, *t2;   /* (max_tokens, 2 · widest layer) */
};

/* ---- kernels on a group of n rows ---- */

/* Y[n, out] += w · (X[n, in] · Aᵀ) · Bᵀ (+ w · bias per row). */
static void lora_add(const adp_module_t *md, const float *X, float *Y, int n, float w, float *T) {
    const int r = md->r, in = md->d_in, out = md->d_out;
    if (n == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, r, in, 1.0f, md->a, in, X, 1, 0.0f, T, 1);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, out, r, w, md->b, r, T, 1, 1.0f, Y, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r, in, 1.0f, X, in, md->a, in,
                    0.0f, T, r);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, r, w, T, r, md->b, r, 1.0f,
                    Y, out);
    }
    if (md->bias)
        for (int t = 0; t < n; t++) cblas_saxpy(out, w, md->bias, 1, Y + (size_t)t * out, 1);
}

/* Y = g ⊙ (Y + X·Aᵀ·Bᵀ): DoRA with g = m/||W0 + sBA|| precomputed at load. */
static void dora_apply(const adp_module_t *md, const float *X, float *Y, int n, float *T) {
    lora_add(md, X, Y, n, 1.0f, T);
    for (int t = 0; t < n; t++) {
        float *y = Y + (size_t)t * md->d_out;
        for (int o = 0; o < md->d_out; o++) y[o] *= md->g[o];
    }
}

/* MoRA grouping of n features into rh contiguous groups, the first n mod rh one larger. */
static int group_of(int i, int n, int rh) {
    const int small = n / rh, q = n % rh, big = small + 1;
    return i < q * big ? i / big : q + (i - q * big) / small;
}

/* Y += w · D(M · C(X)) for MoRA types 1/2/3/4/6 (adapters.md §4.2). Z, U: scratch. */
static void mora_add(const adp_module_t *md, const float *X, float *Y, int n, float w, float *Z,
                     float *U) {
    const int rh = md->r, in = md->d_in, out = md->d_out, type = md->mora_type;
    const int pad = (rh - in % rh) % rh;
    int rows; /* rows of Z: one per token, or nb per token for type 6 */
    if (type == 6) {
        const int h = rh / 2, nb = md->nb;
        rows = n * nb;
        for (int t = 0; t < n; t++) {
            const float *x = X + (size_t)t * in;
            for (int c = 0; c < nb; c++) {
                float *z = Z + ((size_t)t * nb + c) * rh;
                for (int j = 0; j < rh; j++) { /* x_pad repeats the first features */
                    int i = c * rh + j;
                    z[j] = x[i < in ? i : i - in];
                }
                const float *cs = md->cos_t + (size_t)c * h, *sn = md->sin_t + (size_t)c * h;
                for (int j = 0; j < h; j++) {
                    float a = z[j], b = z[j + h];
                    z[j] = a * cs[j] - b * sn[j];
                    z[j + h] = b * cs[j] + a * sn[j];
                }
            }
        }
    } else {
        rows = n;
        memset(Z, 0, (size_t)n * rh * sizeof(float));
        for (int t = 0; t < n; t++) {
            const float *x = X + (size_t)t * in;
            float *z = Z + (size_t)t * rh;
            if (type == 1 || type == 4) {
                for (int i = 0; i < in + pad; i++) z[i % rh] += x[i < in ? i : i - in];
            } else {
                for (int i = 0; i < in; i++) z[group_of(i, in, rh)] += x[i];
            }
        }
    }
    /* U = Z · Mᵀ (nn.Linear convention: u[a] = Σ_j M[a][j] z[j]) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, rh, rh, 1.0f, Z, rh, md->m, rh,
                0.0f, U, rh);
    for (int t = 0; t < n; t++) {
        float *y = Y + (size_t)t * out;
        if (type == 6) {
            const float *u = U + (size_t)t * md->nb * rh;
            const int len = md->nb * rh;
            for (int o = 0; o < out; o++) y[o] += w * u[o % len];
        } else {
            const float *u = U + (size_t)t * rh;
            if (type == 1 || type == 3) {
                for (int o = 0; o < out; o++) y[o] += w * u[o % rh];
            } else {
                for (int o = 0; o < out; o++) y[o] += w * u[group_of(o, out, rh)];
            }
        }
    }
}

/* V[n, d] = (V · Aᵀ) · Bᵀ in place (LoRMA none): T is scratch (n, r). */
static void lowrank_replace(const adp_module_t *md, float *V, const float *Vin, int n, int d,
                            float *T) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, md->r, d, 1.0f, Vin, d, md->a, d,
                0.0f, T, md->r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d, md->r, 1.0f, T, md->r, md->b,
                md->r, 0.0f, V, d);
}

/* V[n, d] = Vin · Pᵀ (LoRMA shift, P materialised). */
static void full_replace(const adp_module_t *md, float *V, const float *Vin, int n, int d) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d, d, 1.0f, Vin, d, md->b, d, 0.0f,
                V, d);
}

/* ---- hook callbacks ---- */

/* Group [i, j) of segments sharing one set; returns j. */
static int group_end(const core_lin_call_t *c, int i) {
    int j = i + 1;
    while (j < c->n_segs && c->segs[j].adapter == c->segs[i].adapter) j++;
    return j;
}

static int group_rows(const core_lin_call_t *c, int i, int j) {
    return c->row0[j - 1] + c->segs[j - 1].n_tok - c->row0[i];
}

static int hook_pre(void *ctx, const core_lin_call_t *c, const float *x, float *x_out) {
    adp_hook_t *h = ctx;
    assert(c->n_rows <= h->max_tokens); /* scratch was sized for the forward's step limit */
    int copied = 0;
    for (int i = 0, j; i < c->n_segs; i = j) {
        j = group_end(c, i);
        const adp_set_t *set = c->segs[i].adapter;
        if (!set || set->n != 1) continue; /* input transforms are non-additive: alone */
        const adp_module_t *md = adp_module(set->a[0], c->layer, c->proj);
        if (md->kind != ADP_K_IN_LR && md->kind != ADP_K_IN_FULL) continue;
        if (!copied) {
            memcpy(x_out, x, (size_t)c->n_rows * c->d_in * sizeof(float));
            copied = 1;
        }
        const size_t off = (size_t)c->row0[i] * c->d_in;
        const int n = group_rows(c, i, j);
        if (md->kind == ADP_K_IN_LR) lowrank_replace(md, x_out + off, x + off, n, c->d_in, h->t1);
        else full_replace(md, x_out + off, x + off, n, c->d_in);
    }
    return copied;
}

static void hook_post(void *ctx, const core_lin_call_t *c, const float *x, float *y) {
    adp_hook_t *h = ctx;
    assert(c->n_rows <= h->max_tokens);
    for (int i = 0, j; i < c->n_segs; i = j) {
        j = group_end(c, i);
        const adp_set_t *set = c->segs[i].adapter;
        if (!set) continue;
        const int n = group_rows(c, i, j);
        const float *X = x + (size_t)c->row0[i] * c->d_in;
        float *Y = y + (size_t)c->row0[i] * c->d_out;
        for (int k = 0; k < set->n; k++) {
            const adp_module_t *md = adp_module(set->a[k], c->layer, c->proj);
            switch (md->kind) {
            case ADP_K_LORA: lora_add(md, X, Y, n, set->w[k], h->t1); break;
            case ADP_K_DORA: dora_apply(md, X, Y, n, h->t1); break;
            case ADP_K_MORA: mora_add(md, X, Y, n, set->w[k], h->t1, h->t2); break;
            case ADP_K_OUT_LR: lowrank_replace(md, Y, Y, n, c->d_out, h->t1); break;
            case ADP_K_OUT_FULL:
                memcpy(h->t1, Y, (size_t)n * c->d_out * sizeof(float));
                full_replace(md, Y, h->t1, n, c->d_out);
                break;
            default: break; /* NONE, or an input transform done in hook_pre */
            }
        }
    }
}

/* ---- public API ---- */

int adp_hook_create(const core_model_t *m, int max_tokens, adp_hook_t **out) {
    const core_model_config_t *c = &m->cfg;
    size_t w = (size_t)c->hidden_size;
    if ((size_t)c->intermediate_size > w) w = (size_t)c->intermediate_size;
    if ((size_t)c->n_heads * c->head_dim > w) w = (size_t)c->n_heads * c->head_dim;
    adp_hook_t *h = calloc(1, sizeof *h);
    if (!h) return LLM_ENOMEM;
    h->m = m;
    h->max_tokens = max_tokens;
    h->cap = (size_t)max_tokens * 2 * w;
    h->t1 = malloc(h->cap * sizeof(float));
    h->t2 = malloc(h->cap * sizeof(float));
    if (!h->t1 || !h->t2) {
        adp_hook_free(h);
        return LLM_ENOMEM;
    }
    *out = h;
    return 0;
}

void adp_hook_free(adp_hook_t *h) {
    if (!h) return;
    free(h->t1);
    free(h->t2);
    free(h);
}

void adp_hook_bind(adp_hook_t *h, core_lin_hook_t *hook) {
    hook->pre = hook_pre;
    hook->post = hook_post;
    hook->ctx = h;
}

int adp_set_validate(const adp_set_t *set, llm_error_t *err) {
    if (set->n < 0 || set->n > ADP_SET_MAX)
        return llm_err_set(err, LLM_EINVAL, "at most %d adapters may be combined", ADP_SET_MAX);
    for (int i = 0; i < set->n; i++) {
        if (!isfinite(set->w[i]))
            return llm_err_set(err, LLM_EINVAL, "adapter \"%s\": scale must be finite",
                               set->a[i]->name);
        if (!set->a[i]->additive && set->n > 1)
            return llm_err_set(err, LLM_EINVAL,
                               "adapter \"%s\" (%s) is not additive and must be the only adapter "
                               "of a request", set->a[i]->name,
                               adp_method_name(set->a[i]->method));
        if (!set->a[i]->additive && set->w[i] != 1.0f)
            return llm_err_set(err, LLM_EINVAL,
                               "adapter \"%s\" (%s) is not additive; its scale must be 1",
                               set->a[i]->name, adp_method_name(set->a[i]->method));
    }
    return 0;
}
