/* adp_load.c: adapter files → validated, compute-ready adp_adapter_t (adapters.md §2–§6, §10). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "adapter.h"
#include "adp_config.h"
#include "safetensors.h"

/* ---- tensor roles ---- */

typedef enum {
    R_A = 0,   /* lora_A / lorma_A / lora2_A */
    R_B,       /* lora_B / lorma_B / lora2_B */
    R_BIAS,    /* lora_B.bias */
    R_MAG,     /* lora_magnitude_vector */
    R_E,       /* lora2_E */
    R_AA,      /* lora2_aa */
    R_BB,      /* lora2_bb */
    R_COUNT
} role_t;

typedef struct {
    const core_st_tensor_t *t[R_COUNT];
} slot_t;

static const char *const k_proj_group[CORE_PROJ_COUNT] = {
    "self_attn", "self_attn", "self_attn", "self_attn", "mlp", "mlp", "mlp",
};

/* Splits "[base_model.model.]model.layers.{i}.{self_attn|mlp}.{proj}.{rest}" and maps rest to
 * a role for the method. Returns 0, or a negative code with err naming the key. */
static int parse_key(const char *key, const adp_config_t *c, int n_layers, const char *file,
                     int *layer, core_proj_t *proj, role_t *role, llm_error_t *err) {
    const char *k = key;
    if (strncmp(k, "base_model.model.", 17) == 0) k += 17;
    char grp[16], pname[16];
    int li, used = 0;
    if (sscanf(k, "model.layers.%d.%15[a-z_].%15[a-z_].%n", &li, grp, pname, &used) != 3 ||
        used == 0)
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tensor \"%s\" does not name a projection of a decoder layer "
                           "(q/k/v/o/gate/up/down_proj)", file, key);
    int p;
    for (p = 0; p < CORE_PROJ_COUNT; p++)
        if (!strcmp(pname, core_proj_name((core_proj_t)p)) && !strcmp(grp, k_proj_group[p]))
            break;
    if (p == CORE_PROJ_COUNT)
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tensor \"%s\": module %s.%s does not exist in the base", file,
                           key, grp, pname);
    if (li < 0 || li >= n_layers)
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tensor \"%s\": layer %d does not exist (base has %d layers)",
                           file, key, li, n_layers);
    /* rest: "<name>[.<adapter name>][.weight|.bias]"; the adapter-name infix is dropped */
    char rest[128];
    snprintf(rest, sizeof rest, "%s", k + used);
    char *parts[4], *save = NULL;
    int np = 0;
    for (char *s = strtok_r(rest, ".", &save); s && np < 4; s = strtok_r(NULL, ".", &save))
        parts[np++] = s;
    const char *tail = np > 1 ? parts[np - 1] : "";
    int is_bias = !strcmp(tail, "bias");
    int ok_tail = np == 1 || (np <= 3 && (!strcmp(tail, "weight") || is_bias));
    role_t r = R_COUNT;
    const char *n0 = np ? parts[0] : "";
    if (ok_tail) {
        switch (c->method) {
        case ADP_METHOD_LORA: case ADP_METHOD_RSLORA: case ADP_METHOD_DORA: case ADP_METHOD_MORA:
            if (!strcmp(n0, "lora_A") && !is_bias) r = R_A;
            else if (!strcmp(n0, "lora_B")) r = is_bias ? R_BIAS : R_B;
            else if (!strcmp(n0, "lora_magnitude_vector") && c->method == ADP_METHOD_DORA)
                r = R_MAG;
            break;
        case ADP_METHOD_LORMA:
            if (!strcmp(n0, "lorma_A") && !is_bias) r = R_A;
            else if (!strcmp(n0, "lorma_B") && !is_bias) r = R_B;
            break;
        case ADP_METHOD_LORA2:
            if (is_bias) break;
            if (!strcmp(n0, "lora2_A")) r = R_A;
            else if (!strcmp(n0, "lora2_B")) r = R_B;
            else if (!strcmp(n0, "lora2_E")) r = R_E;
            else if (!strcmp(n0, "lora2_aa")) r = R_AA;
            else if (!strcmp(n0, "lora2_bb")) r = R_BB;
            break;
        }
    }
    if (r == R_COUNT || (r == R_BIAS && !c->lora_bias))
        return llm_err_set(err, LLM_EFORMAT, "%s: tensor \"%s\" is not a %s tensor", file, key,
                           adp_method_name(c->method));
    *layer = li;
    *proj = (core_proj_t)p;
    *role = r;
    return 0;
}

/* ---- small helpers ---- */

typedef struct {
    const char *name;  /* adapter name, for messages */
    const char *file;
    llm_error_t *err;
    size_t bytes;
} ctx_t;

static int shape_is(const core_st_tensor_t *t, int64_t d0, int64_t d1) {
    if (d1 < 0) return t->n_dims == 1 && t->shape[0] == d0;
    return t->n_dims == 2 && t->shape[0] == d0 && t->shape[1] == d1;
}

static int bad_shape(ctx_t *x, const core_st_tensor_t *t, int64_t d0, int64_t d1,
                     const char *why) {
    char got[96] = "", *p = got;
    for (int i = 0; i < t->n_dims && p < got + 64; i++)
        p += sprintf(p, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (d1 < 0)
        return llm_err_set(x->err, LLM_ESHAPE,
                           "adapter \"%s\": %s: tensor \"%s\" has shape [%s], expected [%lld]%s",
                           x->name, x->file, t->name, got, (long long)d0, why);
    return llm_err_set(x->err, LLM_ESHAPE,
                       "adapter \"%s\": %s: tensor \"%s\" has shape [%s], expected [%lld, %lld]%s",
                       x->name, x->file, t->name, got, (long long)d0, (long long)d1, why);
}

/* New fp32 copy of a tensor, checked finite. */
static float *to_f32(ctx_t *x, const core_st_tensor_t *t, int *rc) {
    float *d = malloc((size_t)(t->n_elems ? t->n_elems : 1) * sizeof(float));
    if (!d) {
        *rc = llm_err_set(x->err, LLM_ENOMEM, "adapter \"%s\": out of memory", x->name);
        return NULL;
    }
    core_convert_to_f32(t->dtype, t->data, d, (size_t)t->n_elems);
    for (int64_t i = 0; i < t->n_elems; i++) {
        if (!isfinite(d[i])) {
            *rc = llm_err_set(x->err, LLM_EFORMAT,
                              "adapter \"%s\": %s: tensor \"%s\" holds a non-finite value at "
                              "element %lld", x->name, x->file, t->name, (long long)i);
            free(d);
            return NULL;
        }
    }
    return d;
}

static float *alloc_f32(ctx_t *x, size_t n, int *rc) {
    float *d = calloc(n ? n : 1, sizeof(float));
    if (!d) *rc = llm_err_set(x->err, LLM_ENOMEM, "adapter \"%s\": out of memory", x->name);
    return d;
}

/* W0 of a base projection, row o, as fp32 (the base may later be stored as bf16/int8). */
static void base_row(const core_model_t *m, int l, core_proj_t p, int64_t o, float *out) {
    core_weight_row(&m->layers[l].proj[p], o, out);
}

/* ---- per-method builders: fill mod from the slot's tensors ---- */

static int build_lora(ctx_t *x, const core_model_t *m, const adp_config_t *c, int l,
                      core_proj_t p, int r, double alpha, const slot_t *s, adp_module_t *mod) {
    const core_weight_t *w = &m->layers[l].proj[p];
    const int64_t in = w->cols, out = w->rows;
    int rc = 0;
    if (r > in + out) /* a rank past in + out adds nothing and would only cost memory */
        return llm_err_set(x->err, LLM_EFORMAT,
                           "adapter \"%s\": layer %d %s: rank %d exceeds in + out = %lld",
                           x->name, l, core_proj_name(p), r, (long long)(in + out));
    if (!shape_is(s->t[R_A], r, in)) return bad_shape(x, s->t[R_A], r, in, " (r from config)");
    if (!shape_is(s->t[R_B], out, r)) return bad_shape(x, s->t[R_B], out, r, " (r from config)");
    const double sc = c->use_rslora ? alpha / sqrt((double)r) : alpha / r;
    mod->kind = c->method == ADP_METHOD_DORA ? ADP_K_DORA : ADP_K_LORA;
    mod->r = r;
    mod->d_in = (int)in;
    mod->d_out = (int)out;
    if (!(mod->a = to_f32(x, s->t[R_A], &rc)) || !(mod->b = to_f32(x, s->t[R_B], &rc))) return rc;
    for (int64_t i = 0; i < out * r; i++) mod->b[i] = (float)(mod->b[i] * sc);
    x->bytes += (size_t)(in + out) * (size_t)r * sizeof(float);
    if (s->t[R_BIAS]) {
        if (!shape_is(s->t[R_BIAS], out, -1)) return bad_shape(x, s->t[R_BIAS], out, -1, "");
        if (!(mod->bias = to_f32(x, s->t[R_BIAS], &rc))) return rc;
        for (int64_t i = 0; i < out; i++) mod->bias[i] = (float)(mod->bias[i] * sc);
        x->bytes += (size_t)out * sizeof(float);
    }
    if (mod->kind == ADP_K_DORA) {
        /* g = m / ||W0 + s·B·A|| per output row (§3.2), computed once here in double from the
         * base weights as served. */
        if (!s->t[R_MAG])
            return llm_err_set(x->err, LLM_EFORMAT,
                               "adapter \"%s\": %s: layer %d %s has no lora_magnitude_vector",
                               x->name, x->file, l, core_proj_name(p));
        if (!shape_is(s->t[R_MAG], out, -1)) return bad_shape(x, s->t[R_MAG], out, -1, "");
        float *mag = to_f32(x, s->t[R_MAG], &rc);
        float *row = alloc_f32(x, (size_t)in, &rc);
        if (!mag || !row || !(mod->g = alloc_f32(x, (size_t)out, &rc))) {
            free(mag);
            free(row);
            return rc;
        }
        for (int64_t o = 0; o < out; o++) {
            base_row(m, l, p, o, row);
            double ss = 0;
            for (int64_t i = 0; i < in; i++) {
                double v = row[i];
                for (int k = 0; k < r; k++)
                    v += (double)mod->b[o * r + k] * mod->a[(int64_t)k * in + i];
                ss += v * v;
            }
            double g = mag[o] / sqrt(ss);
            if (!isfinite(g)) {
                free(mag);
                free(row);
                return llm_err_set(x->err, LLM_EFORMAT,
                                   "adapter \"%s\": layer %d %s row %lld: DoRA norm is zero or "
                                   "the magnitude is not finite", x->name, l, core_proj_name(p),
                                   (long long)o);
            }
            mod->g[o] = (float)g;
        }
        free(mag);
        free(row);
        x->bytes += (size_t)out * sizeof(float);
    } else if (s->t[R_MAG]) {
        return llm_err_set(x->err, LLM_EFORMAT,
                           "adapter \"%s\": %s: lora_magnitude_vector without use_dora", x->name,
                           x->file);
    }
    return 0;
}

static int build_mora(ctx_t *x, const core_model_t *m, const adp_config_t *c, int l,
                      core_proj_t p, int r, const slot_t *s, adp_module_t *mod) {
    const core_weight_t *w = &m->layers[l].proj[p];
    const int64_t in = w->cols, out = w->rows;
    if (r > in + out)
        return llm_err_set(x->err, LLM_EFORMAT,
                           "adapter \"%s\": layer %d %s: rank %d exceeds in + out = %lld",
                           x->name, l, core_proj_name(p), r, (long long)(in + out));
    int rh = (int)(sqrt((double)(in + out) * r) + 0.5);
    if (c->mora_type == 6) rh = rh / 2 * 2;
    int rc = 0;
    /* lora_A and lora_B are one shared module in the MoRA fork; lora_B is what it uses. */
    const core_st_tensor_t *t = s->t[R_B] ? s->t[R_B] : s->t[R_A];
    if (!shape_is(t, rh, rh)) return bad_shape(x, t, rh, rh, " (MoRA r-hat from r, in, out)");
    if (s->t[R_A] && !shape_is(s->t[R_A], rh, rh)) return bad_shape(x, s->t[R_A], rh, rh, "");
    const int pad = (int)((rh - in % rh) % rh);
    if (pad > in)
        return llm_err_set(x->err, LLM_EFORMAT,
                           "adapter \"%s\": layer %d %s: MoRA padding %d exceeds the input "
                           "size %lld", x->name, l, core_proj_name(p), pad, (long long)in);
    mod->kind = ADP_K_MORA;
    mod->mora_type = c->mora_type;
    mod->r = rh;
    mod->d_in = (int)in;
    mod->d_out = (int)out;
    if (!(mod->m = to_f32(x, t, &rc))) return rc;
    x->bytes += (size_t)rh * rh * sizeof(float);
    if (c->mora_type == 6) {
        /* Built in fp32 exactly as the fork does (inv_freq, then angle = c·inv_freq). */
        const int h = rh / 2;
        mod->nb = (int)((in + pad) / rh);
        if (!(mod->cos_t = alloc_f32(x, (size_t)mod->nb * h, &rc)) ||
            !(mod->sin_t = alloc_f32(x, (size_t)mod->nb * h, &rc)))
            return rc;
        for (int j = 0; j < h; j++) {
            float e = (float)(2 * j) / (float)rh;
            float inv = 1.0f / powf(10000.0f, e);
            for (int cb = 0; cb < mod->nb; cb++) {
                float ang = (float)cb * inv;
                mod->cos_t[(size_t)cb * h + j] = cosf(ang);
                mod->sin_t[(size_t)cb * h + j] = sinf(ang);
            }
        }
        x->bytes += (size_t)mod->nb * h * 2 * sizeof(float);
    }
    return 0;
}

static int build_lorma(ctx_t *x, const core_model_t *m, const adp_config_t *c, int l,
                       core_proj_t p, const slot_t *s, adp_module_t *mod) {
    const core_weight_t *w = &m->layers[l].proj[p];
    const int64_t in = w->cols, out = w->rows, n = c->lorma_pre ? out : in;
    const int r = c->r;
    const double sc = c->alpha / r;
    int rc = 0;
    if (r > 2 * n)
        return llm_err_set(x->err, LLM_EFORMAT, "adapter \"%s\": LoRMA rank %d exceeds 2n = %lld",
                           x->name, r, (long long)(2 * n));
    if (!shape_is(s->t[R_A], r, n)) return bad_shape(x, s->t[R_A], r, n, " (LoRMA A is [r, n])");
    if (!shape_is(s->t[R_B], n, r)) return bad_shape(x, s->t[R_B], n, r, " (LoRMA B is [n, r])");
    float *A = to_f32(x, s->t[R_A], &rc), *B = A ? to_f32(x, s->t[R_B], &rc) : NULL;
    if (!B) {
        free(A);
        return rc;
    }
    mod->d_in = (int)in;
    mod->d_out = (int)out;
    float *row = NULL;
    if (c->inflation == ADP_INFL_RRI) {
        /* LoRMA+ is exactly a LoRA (§5.2): pre → A' = A·W0, post → B' = W0·B; s folded into B. */
        mod->kind = ADP_K_LORA;
        mod->r = r;
        if (!(row = alloc_f32(x, (size_t)in, &rc))) goto out;
        if (c->lorma_pre) {
            double *acc = calloc((size_t)r * in, sizeof(double));
            if (!acc || !(mod->a = alloc_f32(x, (size_t)r * in, &rc))) {
                free(acc);
                rc = rc ? rc : LLM_ENOMEM;
                goto out;
            }
            for (int64_t o = 0; o < out; o++) { /* A'[k,:] += A[k,o] · W0[o,:] */
                base_row(m, l, p, o, row);
                for (int k = 0; k < r; k++) {
                    double a = A[(int64_t)k * out + o];
                    for (int64_t i = 0; i < in; i++) acc[(int64_t)k * in + i] += a * row[i];
                }
            }
            for (int64_t i = 0; i < (int64_t)r * in; i++) mod->a[i] = (float)acc[i];
            free(acc);
            mod->b = B;
            B = NULL;
            for (int64_t i = 0; i < out * r; i++) mod->b[i] = (float)(mod->b[i] * sc);
        } else {
            if (!(mod->b = alloc_f32(x, (size_t)out * r, &rc))) goto out;
            for (int64_t o = 0; o < out; o++) { /* B'[o,k] = s · Σ_i W0[o,i] · B[i,k] */
                base_row(m, l, p, o, row);
                for (int k = 0; k < r; k++) {
                    double acc = 0;
                    for (int64_t i = 0; i < in; i++) acc += (double)row[i] * B[i * r + k];
                    mod->b[o * r + k] = (float)(acc * sc);
                }
            }
            mod->a = A;
            A = NULL;
        }
        x->bytes += (size_t)(in + out) * r * sizeof(float);
    } else if (c->inflation == ADP_INFL_NONE) {
        mod->kind = c->lorma_pre ? ADP_K_OUT_LR : ADP_K_IN_LR;
        mod->r = r;
        mod->a = A;
        mod->b = B;
        A = B = NULL;
        for (int64_t i = 0; i < n * r; i++) mod->b[i] = (float)(mod->b[i] * sc);
        x->bytes += (size_t)2 * n * r * sizeof(float);
    } else {
        /* LoRMA_π: P = s·π(BA), π(M)[i][j] = M[i][(j − i) mod n], materialised per layer.
         * Chosen over the FFT route because it is exact (no FFT rounding), one GEMM per
         * segment, and needs no FFT dependency; it costs n² floats and +100 % of the base
         * FLOPs for the layer, which adapters.md §5.5 documents. */
        mod->kind = c->lorma_pre ? ADP_K_OUT_FULL : ADP_K_IN_FULL;
        mod->r = (int)n;
        if (!(mod->b = alloc_f32(x, (size_t)(n * n), &rc))) goto out;
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j < n; j++) {
                int64_t col = ((j - i) % n + n) % n;
                double v = 0;
                for (int k = 0; k < r; k++) v += (double)B[i * r + k] * A[(int64_t)k * n + col];
                mod->b[i * n + j] = (float)(sc * v);
            }
        }
        x->bytes += (size_t)(n * n) * sizeof(float);
    }
out:
    free(row);
    free(A);
    free(B);
    return rc;
}

static int build_lora2(ctx_t *x, const core_model_t *m, const adp_config_t *c, int l,
                       core_proj_t p, const slot_t *s, adp_module_t *mod) {
    const core_weight_t *w = &m->layers[l].proj[p];
    const int64_t in = w->cols, out = w->rows;
    const int r = c->r;
    int rc = 0;
    for (int q = R_A; q <= R_BB; q++) {
        if (q == R_BIAS || q == R_MAG) continue;
        if (!s->t[q])
            return llm_err_set(x->err, LLM_EFORMAT,
                               "adapter \"%s\": %s: layer %d %s lacks one of lora2_A/B/E/aa/bb",
                               x->name, x->file, l, core_proj_name(p));
    }
    const int64_t k = s->t[R_A]->n_dims == 2 ? s->t[R_A]->shape[0] : -1;
    if (k != c->k)
        return bad_shape(x, s->t[R_A], c->k, in, " (k from config)");
    if (k < 1 || k > in + out || !shape_is(s->t[R_A], k, in))
        return bad_shape(x, s->t[R_A], k < 1 ? 1 : k, in, " (k must be in [1, in + out])");
    if (!shape_is(s->t[R_B], r, k)) return bad_shape(x, s->t[R_B], r, k, " (r from config)");
    if (!shape_is(s->t[R_E], r, -1) && !shape_is(s->t[R_E], r, 1))
        return bad_shape(x, s->t[R_E], r, 1, "");
    if (!shape_is(s->t[R_AA], k, r)) return bad_shape(x, s->t[R_AA], k, r, "");
    if (!shape_is(s->t[R_BB], out, k)) return bad_shape(x, s->t[R_BB], out, k, "");
    float *A = to_f32(x, s->t[R_A], &rc), *B = NULL, *E = NULL, *aa = NULL, *bb = NULL;
    if (!A || !(B = to_f32(x, s->t[R_B], &rc)) || !(E = to_f32(x, s->t[R_E], &rc)) ||
        !(aa = to_f32(x, s->t[R_AA], &rc)) || !(bb = to_f32(x, s->t[R_BB], &rc)))
        goto out;
    /* ΔW = c·bb·aa·diag(E)·B·A. Only the non-zero E entries contribute (pruned ranks are
     * compacted away), and the chain collapses to a rank-k LoRA: B' = c·bb·(aa·diag(E)·B)
     * [out, k], A' = A [k, in]. c uses the configured initial r (ranknum), not |E ≠ 0|. */
    const double cs = (c->alpha > 0 ? c->alpha : r) / (r + 1e-5);
    double *U = calloc((size_t)(k * k), sizeof(double)); /* aa·diag(E)·B */
    if (!U || !(mod->b = alloc_f32(x, (size_t)(out * k), &rc))) {
        free(U);
        rc = rc ? rc : LLM_ENOMEM;
        goto out;
    }
    for (int j = 0; j < r; j++) {
        if (E[j] == 0.0f) continue; /* compaction */
        for (int64_t a = 0; a < k; a++)
            for (int64_t b = 0; b < k; b++) U[a * k + b] += (double)aa[a * r + j] * E[j] * B[(int64_t)j * k + b];
    }
    for (int64_t o = 0; o < out; o++)
        for (int64_t b = 0; b < k; b++) {
            double v = 0;
            for (int64_t a = 0; a < k; a++) v += (double)bb[o * k + a] * U[a * k + b];
            mod->b[o * k + b] = (float)(cs * v);
        }
    free(U);
    mod->kind = ADP_K_LORA;
    mod->r = (int)k;
    mod->d_in = (int)in;
    mod->d_out = (int)out;
    mod->a = A;
    A = NULL;
    x->bytes += (size_t)(in + out) * (size_t)k * sizeof(float);
out:
    free(A);
    free(B);
    free(E);
    free(aa);
    free(bb);
    return rc;
}

/* ---- public API ---- */

const char *adp_method_name(adp_method_t mth) {
    static const char *const n[] = {"lora", "rslora", "dora", "mora", "lorma", "lora2"};
    return (unsigned)mth < 6 ? n[mth] : "?";
}

void adp_adapter_ref(adp_adapter_t *a) { a->refs++; }

static void free_module(adp_module_t *mod) {
    free((void *)mod->fa.data);
    free((void *)mod->fbt.data);
    free(mod->a);
    free(mod->b);
    free(mod->g);
    free(mod->bias);
    free(mod->m);
    free(mod->cos_t);
    free(mod->sin_t);
}

void adp_adapter_unref(adp_adapter_t *a) {
    if (!a || --a->refs > 0) return;
    for (int i = 0; a->mods && i < a->n_layers * CORE_PROJ_COUNT; i++) free_module(&a->mods[i]);
    free(a->mods);
    free(a);
}

static const char *base_of(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *b = n >= 0 && n < (64 << 20) ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = '\0';
    return b;
}

/* Turns a low-rank module's fp32 loading form (A (r, n_in), B (n_out, r)) into its compute
 * form: fa = A and fbt = Bᵀ in dtype, 64-byte aligned (kern.h). Transposing B makes the
 * expand stream r contiguous rows instead of n_out strided ones. Returns the new resident
 * bytes of the factors, or 0 on allocation failure (*rc set). */
static size_t finish_lowrank(adp_module_t *mod, kern_wtype_t dtype, int *rc) {
    const int r = mod->r;
    const int64_t n_in = mod->kind == ADP_K_OUT_LR ? mod->d_out : mod->d_in;
    const int64_t n_out = mod->kind == ADP_K_IN_LR ? mod->d_in : mod->d_out;
    const size_t es = kern_wtype_size(dtype);
    const size_t na = (size_t)r * (size_t)n_in, nb = (size_t)r * (size_t)n_out;
    void *A = aligned_alloc(64, (na * es + 63) / 64 * 64);
    void *BT = aligned_alloc(64, (nb * es + 63) / 64 * 64);
    float *bt = malloc(nb * sizeof(float));
    if (!A || !BT || !bt) {
        free(A), free(BT), free(bt);
        *rc = LLM_ENOMEM;
        return 0;
    }
    for (int k = 0; k < r; k++)
        for (int64_t o = 0; o < n_out; o++) bt[(size_t)k * n_out + o] = mod->b[o * r + k];
    if (dtype == KERN_W_BF16) {
        kern_f32_to_bf16_n(mod->a, A, na);
        kern_f32_to_bf16_n(bt, BT, nb);
    } else {
        memcpy(A, mod->a, na * sizeof(float));
        memcpy(BT, bt, nb * sizeof(float));
    }
    free(bt);
    free(mod->a);
    free(mod->b);
    mod->a = mod->b = NULL;
    mod->fa = (kern_mat_t){.type = dtype, .rows = r, .cols = n_in, .data = A};
    mod->fbt = (kern_mat_t){.type = dtype, .rows = r, .cols = n_out, .data = BT};
    return (na + nb) * es;
}

int adp_load_files(const core_model_t *m, const char *config_path, const char *st_path,
                   const char *name, const adp_load_opts_t *opts, adp_adapter_t **out,
                   llm_error_t *err) {
    adp_config_t c;
    core_st_t *st = NULL;
    slot_t *slots = NULL;
    adp_adapter_t *a = NULL;
    const int L = m->cfg.n_layers, NM = L * CORE_PROJ_COUNT;
    ctx_t x = {.name = name, .file = "adapter_model.safetensors", .err = err};
    char *json = read_all(config_path);
    if (!json)
        return llm_err_set(err, LLM_ENOTFOUND, "adapter \"%s\": cannot read adapter_config.json",
                           name);
    int rc = adp_config_parse(json, "adapter_config.json", &c, err);
    free(json);
    if (rc) return rc;

    if (opts && opts->base_name && *opts->base_name && c.base_model[0] && !opts->force_base &&
        strcasecmp(base_of(c.base_model), base_of(opts->base_name)) != 0) {
        rc = llm_err_set(err, LLM_EINVAL,
                         "adapter \"%s\": adapter_config.json: base_model_name_or_path \"%s\" "
                         "does not match the served base \"%s\" (force to override)", name,
                         c.base_model, opts->base_name);
        goto fail;
    }
    if ((rc = core_st_open(st_path, &st, err))) {
        char inner[sizeof err->msg];
        snprintf(inner, sizeof inner, "%s", err ? err->msg : "");
        rc = llm_err_set(err, rc, "adapter \"%s\": %s", name, inner);
        goto fail;
    }
    slots = calloc((size_t)NM, sizeof *slots);
    a = calloc(1, sizeof *a);
    if (!slots || !a || !(a->mods = calloc((size_t)NM, sizeof *a->mods))) {
        rc = llm_err_set(err, LLM_ENOMEM, "adapter \"%s\": out of memory", name);
        goto fail;
    }
    a->refs = 1;
    a->n_layers = L;
    a->method = c.method;
    snprintf(a->name, sizeof a->name, "%s", name);

    /* Every tensor maps to a targeted module of the base, once. */
    for (size_t i = 0; i < core_st_count(st); i++) {
        const core_st_tensor_t *t = core_st_at(st, i);
        int l = 0;
        core_proj_t p = CORE_PROJ_Q;
        role_t role = R_A;
        if ((rc = parse_key(t->name, &c, L, x.file, &l, &p, &role, err))) {
            char inner[sizeof err->msg];
            snprintf(inner, sizeof inner, "%s", err ? err->msg : "");
            rc = llm_err_set(err, rc, "adapter \"%s\": %s", name, inner);
            goto fail;
        }
        char key[96];
        int r;
        double alpha;
        snprintf(key, sizeof key, "model.layers.%d.%s.%s", l, k_proj_group[p], core_proj_name(p));
        if (!adp_config_module(&c, key, l, &r, &alpha)) {
            rc = llm_err_set(err, LLM_EFORMAT,
                             "adapter \"%s\": tensor \"%s\": module %s is not selected by "
                             "target_modules/exclude_modules/layers_to_transform", name, t->name,
                             key);
            goto fail;
        }
        slot_t *s = &slots[l * CORE_PROJ_COUNT + p];
        if (s->t[role]) {
            rc = llm_err_set(err, LLM_EFORMAT, "adapter \"%s\": tensors \"%s\" and \"%s\" "
                             "hold the same weight", name, s->t[role]->name, t->name);
            goto fail;
        }
        s->t[role] = t;
    }

    /* Every targeted module has its tensors; build its compute-ready form. */
    int n_mod = 0;
    char targeted[CORE_PROJ_COUNT] = {0};
    for (int l = 0; l < L; l++) {
        for (int p = 0; p < CORE_PROJ_COUNT; p++) {
            char key[96];
            int r;
            double alpha;
            snprintf(key, sizeof key, "model.layers.%d.%s.%s", l, k_proj_group[p],
                     core_proj_name((core_proj_t)p));
            if (!adp_config_module(&c, key, l, &r, &alpha)) continue;
            const slot_t *s = &slots[l * CORE_PROJ_COUNT + p];
            int has_pair = c.method == ADP_METHOD_MORA ? (s->t[R_A] || s->t[R_B])
                                                       : (s->t[R_A] && s->t[R_B]);
            if (!has_pair) {
                rc = llm_err_set(err, LLM_EFORMAT,
                                 "adapter \"%s\": module %s is targeted but %s", name, key,
                                 s->t[R_A] || s->t[R_B] ? "half of its A/B pair is missing"
                                                        : "has no tensors");
                goto fail;
            }
            if (r <= 0) {
                rc = llm_err_set(err, LLM_EFORMAT, "adapter \"%s\": module %s has rank %d",
                                 name, key, r);
                goto fail;
            }
            adp_module_t *mod = &a->mods[l * CORE_PROJ_COUNT + p];
            switch (c.method) {
            case ADP_METHOD_LORA: case ADP_METHOD_RSLORA: case ADP_METHOD_DORA:
                rc = build_lora(&x, m, &c, l, (core_proj_t)p, r, alpha, s, mod);
                break;
            case ADP_METHOD_MORA:
                rc = build_mora(&x, m, &c, l, (core_proj_t)p, r, s, mod);
                break;
            case ADP_METHOD_LORMA:
                rc = build_lorma(&x, m, &c, l, (core_proj_t)p, s, mod);
                break;
            case ADP_METHOD_LORA2:
                rc = build_lora2(&x, m, &c, l, (core_proj_t)p, s, mod);
                break;
            }
            if (rc) goto fail;
            if (n_mod == 0 || mod->r < a->rank_min) a->rank_min = mod->r;
            if (mod->r > a->rank_max) a->rank_max = mod->r;
            targeted[p] = 1;
            n_mod++;
        }
    }
    if (n_mod == 0) {
        rc = llm_err_set(err, LLM_EFORMAT,
                         "adapter \"%s\": target_modules select no module of the base model",
                         name);
        goto fail;
    }
    /* compute form of the low-rank factors, in the requested dtype */
    const kern_wtype_t dtype = opts && opts->dtype == KERN_W_BF16 ? KERN_W_BF16 : KERN_W_F32;
    for (int i = 0; i < a->n_layers * CORE_PROJ_COUNT; i++) {
        adp_module_t *mod = &a->mods[i];
        if (mod->kind != ADP_K_LORA && mod->kind != ADP_K_DORA && mod->kind != ADP_K_OUT_LR &&
            mod->kind != ADP_K_IN_LR)
            continue;
        const int64_t n_in = mod->kind == ADP_K_OUT_LR ? mod->d_out : mod->d_in;
        const int64_t n_out = mod->kind == ADP_K_IN_LR ? mod->d_in : mod->d_out;
        x.bytes -= (size_t)(n_in + n_out) * (size_t)mod->r * sizeof(float);
        size_t nb = finish_lowrank(mod, dtype, &rc);
        if (!nb) {
            rc = llm_err_set(err, rc, "adapter \"%s\": out of memory", name);
            goto fail;
        }
        x.bytes += nb;
    }
    a->additive = !(c.method == ADP_METHOD_DORA ||
                    (c.method == ADP_METHOD_LORMA && c.inflation != ADP_INFL_RRI));
    a->bytes = x.bytes;
    for (int p = 0, n = 0; p < CORE_PROJ_COUNT; p++) {
        if (!targeted[p]) continue;
        n += snprintf(a->target_modules + n, sizeof a->target_modules - (size_t)n, "%s%s",
                      n ? "," : "", core_proj_name((core_proj_t)p));
    }
    free(slots);
    core_st_free(st);
    adp_config_deinit(&c);
    *out = a;
    return 0;
fail:
    free(slots);
    core_st_free(st);
    adp_config_deinit(&c);
    adp_adapter_unref(a);
    return rc;
}

int adp_load_dir(const core_model_t *m, const char *dir, const char *name,
                 const adp_load_opts_t *opts, adp_adapter_t **out, llm_error_t *err) {
    char cfg[4096], st[4096], bin[4096];
    struct stat sb;
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", dir);
    snprintf(bin, sizeof bin, "%s/adapter_model.bin", dir);
    if (stat(st, &sb) != 0 && stat(bin, &sb) == 0)
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "adapter \"%s\": adapter_model.bin is a pickle, which this server "
                           "will not load (unpickling can run code); convert it with PEFT "
                           "(save_pretrained(..., safe_serialization=True))", name);
    if (stat(cfg, &sb) != 0)
        return llm_err_set(err, LLM_ENOTFOUND, "adapter \"%s\": %s: no adapter_config.json",
                           name, dir);
    return adp_load_files(m, cfg, st, name, opts, out, err);
}
