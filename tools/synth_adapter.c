/* synth_adapter.c: random adapter directories and a naive merged reference (see synth_adapter.h).
 *
 * Written from adapters.md alone; nothing here is shared with adapters/.
 */
#include "synth_adapter.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth_sbuf.h"
#include "synth_st_writer.h"

/* ---- names and shapes ---- */

static const char *const k_names[SA_NPROJ] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

const char *sa_proj_name(int p) { return p >= 0 && p < SA_NPROJ ? k_names[p] : "?"; }

const char *sa_proj_group(int p) { return p <= SA_O ? "self_attn" : "mlp"; }

const char *sa_method_name(sa_method_t m) {
    static const char *const n[] = {"lora", "rslora", "dora", "mora", "lorma", "lora2"};
    return (unsigned)m < 6 ? n[m] : "?";
}

sa_shape_t sa_shape_from_synth(const synth_model_opts_t *o) {
    const int hd = synth_head_dim(o);
    return (sa_shape_t){.hidden = o->hidden, .intermediate = o->intermediate,
                        .n_layers = o->n_layers, .q_dim = o->n_heads * hd,
                        .kv_dim = synth_n_kv_heads(o) * hd};
}

sa_shape_t sa_shape_from_config(const core_model_config_t *c) {
    return (sa_shape_t){.hidden = c->hidden_size, .intermediate = c->intermediate_size,
                        .n_layers = c->n_layers, .q_dim = c->n_heads * c->head_dim,
                        .kv_dim = c->n_kv_heads * c->head_dim};
}

void sa_proj_dims(const sa_shape_t *s, int p, int *in, int *out) {
    switch (p) {
    case SA_Q: *in = s->hidden; *out = s->q_dim; break;
    case SA_K: case SA_V: *in = s->hidden; *out = s->kv_dim; break;
    case SA_O: *in = s->q_dim; *out = s->hidden; break;
    case SA_GATE: case SA_UP: *in = s->hidden; *out = s->intermediate; break;
    default: *in = s->intermediate; *out = s->hidden; break;
    }
}

int sa_mora_rhat(int in, int out, int r, int type) {
    int rh = (int)floor(sqrt((double)(in + out) * r) + 0.5);
    return type == 6 ? rh / 2 * 2 : rh;
}

int sa_is_additive(const sa_adapter_t *a) {
    if (a->o.method == SA_DORA) return 0;
    if (a->o.method == SA_LORMA && a->o.inflation != SA_RRI) return 0;
    return 1;
}

sa_opts_t sa_opts_defaults(sa_method_t m) {
    sa_opts_t o;
    memset(&o, 0, sizeof o);
    o.method = m;
    o.mora_type = 1;
    o.lorma_pre = 1;
    o.r = 8;
    o.targets = SA_BIT(SA_Q) | SA_BIT(SA_V);
    o.dtype = CORE_DT_F32;
    o.seed = 1;
    o.strength = 0.5f;
    return o;
}

/* ---- random numbers (splitmix64, one stream per tensor) ---- */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static double rng_sym(uint64_t *s) {
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0;
}

/* The stream depends on the seed and the tensor's canonical name only, so the key prefix, the
 * infix and the dtype do not change the drawn values. */
static uint64_t stream_for(uint64_t seed, int layer, int p, const char *role) {
    char name[96];
    snprintf(name, sizeof name, "%d.%s.%s", layer, sa_proj_name(p), role);
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        h = (h ^ *c) * 0x100000001b3ull;
    uint64_t s = seed * 0x2545f4914f6cdd1dull ^ h;
    rng_next(&s);
    return s;
}

/* ---- config ---- */

static int resolved_r(const sa_opts_t *o) { return o->r > 0 ? o->r : 8; }
static int resolved_k(const sa_opts_t *o) { return o->k > 0 ? o->k : 8; }
static double resolved_alpha(const sa_opts_t *o) {
    return o->alpha != 0 ? o->alpha : 2.0 * resolved_r(o);
}

char *sa_config_json(const sa_opts_t *o) {
    if (o->config_override) return strdup(o->config_override);
    synth_sbuf_t b = {0};
    const unsigned t = o->targets ? o->targets : (SA_BIT(SA_Q) | SA_BIT(SA_V));
    synth_sb_printf(&b, "{\n");
    switch (o->method) {
    case SA_LORMA:
        synth_sb_printf(&b, "  \"peft_type\": \"LORMA\",\n  \"lorma_mode\": \"%s\",\n"
                  "  \"rank_inflation\": \"%s\",\n", o->lorma_pre ? "pre" : "post",
                  o->inflation == SA_RRI ? "rri" : o->inflation == SA_SHIFT ? "shift" : "none");
        break;
    case SA_LORA2:
        synth_sb_printf(&b, "  \"peft_type\": \"LORA2\",\n  \"k\": %d,\n", resolved_k(o));
        break;
    default:
        synth_sb_printf(&b, "  \"peft_type\": \"LORA\",\n  \"task_type\": \"CAUSAL_LM\",\n"
                  "  \"bias\": \"none\",\n  \"lora_dropout\": 0.0,\n  \"fan_in_fan_out\": false,\n"
                  "  \"use_rslora\": %s,\n  \"use_dora\": %s,\n  \"lora_bias\": %s,\n",
                  o->method == SA_RSLORA ? "true" : "false",
                  o->method == SA_DORA ? "true" : "false", o->lora_bias ? "true" : "false");
        if (o->method == SA_MORA)
            synth_sb_printf(&b, "  \"use_mora\": true,\n  \"mora_type\": %d,\n",
                      o->mora_type ? o->mora_type : 1);
        break;
    }
    const int syn = o->method == SA_LORMA && o->lorma_synonyms;
    synth_sb_printf(&b, "  \"%s\": %d,\n  \"%s\": %.17g,\n", syn ? "lorma_r" : "r", resolved_r(o),
              syn ? "lorma_alpha" : "lora_alpha", resolved_alpha(o));
    if (o->base_name) synth_sb_printf(&b, "  \"base_model_name_or_path\": \"%s\",\n", o->base_name);
    else synth_sb_printf(&b, "  \"base_model_name_or_path\": null,\n");
    if (o->peft_version) synth_sb_printf(&b, "  \"peft_version\": \"%s\",\n", o->peft_version);
    if (o->extra_config) synth_sb_printf(&b, "  %s,\n", o->extra_config);
    if (o->targets_json) {
        synth_sb_printf(&b, "  \"target_modules\": %s\n}\n", o->targets_json);
    } else {
        synth_sb_printf(&b, "  \"target_modules\": [");
        for (int p = 0, n = 0; p < SA_NPROJ; p++)
            if (t & SA_BIT(p)) synth_sb_printf(&b, "%s\"%s\"", n++ ? ", " : "", sa_proj_name(p));
        synth_sb_printf(&b, "]\n}\n");
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* ---- tensors ---- */

typedef struct {
    const sa_opts_t *o;
    st_writer_t *w;
    int layer, p;
    int n_tensors;
    int failed;
} gen_t;

/* Draws (rows, cols) values: U(±amp), plus `add` (may be NULL) elementwise, rounded to the
 * storage dtype; zero when zero is set. Returns new array or NULL. */
static float *draw(gen_t *g, const char *role, int64_t rows, int64_t cols, double amp, int zero) {
    const size_t n = (size_t)(rows * cols);
    float *v = malloc((n ? n : 1) * sizeof(float));
    if (!v) {
        g->failed = 1;
        return NULL;
    }
    uint64_t s = stream_for(g->o->seed, g->layer, g->p, role);
    for (size_t i = 0; i < n; i++) {
        double x = rng_sym(&s) * amp;
        v[i] = zero ? 0.0f : synth_round_to(g->o->dtype, (float)x);
    }
    return v;
}

static void rounded(gen_t *g, float *v, size_t n) {
    for (size_t i = 0; i < n; i++) v[i] = synth_round_to(g->o->dtype, v[i]);
}

/* Adds one tensor "<prefix>model.layers.L.<group>.<proj>.<name>[.<infix>][.weight]"
 * (".bias" instead of ".weight" when weight_suffix is 2). */
static void put(gen_t *g, const char *name, int weight_suffix, int n_dims, int64_t d0,
                int64_t d1, const float *data) {
    if (g->failed || !data) {
        g->failed = 1;
        return;
    }
    char key[256];
    const char *inf = g->o->infix;
    snprintf(key, sizeof key, "%smodel.layers.%d.%s.%s.%s%s%s%s",
             g->o->prefix ? "base_model.model." : "", g->layer, sa_proj_group(g->p),
             sa_proj_name(g->p), name, inf ? "." : "", inf ? inf : "",
             weight_suffix == 2 ? ".bias" : weight_suffix || inf ? ".weight" : "");
    int64_t shape[2] = {d0, d1};
    if (stw_add_f32_as(g->w, key, g->o->dtype, n_dims, shape, data) != 0) g->failed = 1;
    g->n_tensors++;
}

/* Fills mod for one (layer, projection) and adds its tensors. The amplitudes make every factor
 * of a chain roughly gain-preserving (U(±sqrt(3/rows)) keeps |v| on average) and scale the last
 * one so that the change is about `strength` times the base layer's own gain. */
static void gen_module(gen_t *g, const sa_shape_t *sh, int r, double alpha, sa_module_t *m) {
    const sa_opts_t *o = g->o;
    const double st = o->strength > 0 ? o->strength : 0.5;
    int in, out;
    sa_proj_dims(sh, g->p, &in, &out);
    m->present = 1;
    m->d_in = in;
    m->d_out = out;
    m->r = r;
    m->alpha = alpha;
    const double w0_gain = sqrt((double)out / in); /* synth_model's weights have variance 1/in */
    switch (o->method) {
    case SA_LORA: case SA_RSLORA: case SA_DORA: {
        m->scale = o->method == SA_RSLORA ? alpha / sqrt((double)r) : alpha / r;
        m->a = draw(g, "A", r, in, sqrt(3.0 / r), 0);
        m->b = draw(g, "B", out, r, sqrt(3.0 / out) * st * w0_gain / m->scale, o->zero_b);
        put(g, "lora_A", 1, 2, r, in, m->a);
        put(g, "lora_B", 1, 2, out, r, m->b);
        if (o->lora_bias && o->method != SA_DORA) {
            m->bias = draw(g, "bias", out, 1, st * w0_gain / m->scale, o->zero_b);
            put(g, "lora_B", 2, 1, out, 0, m->bias);
        }
        if (o->method == SA_DORA) {
            const double c = o->dora_mag > 0 ? o->dora_mag : 1.0;
            m->mag = draw(g, "m", out, 1, 0.5, 0);
            if (m->mag)
                for (int i = 0; i < out; i++)
                    m->mag[i] = synth_round_to(o->dtype, (float)(c * (1.0 + m->mag[i])));
            if (o->infix) put(g, "lora_magnitude_vector", 1, 1, out, 0, m->mag);
            else put(g, "lora_magnitude_vector", 0, 1, out, 0, m->mag);
        }
        break;
    }
    case SA_MORA: {
        const int type = o->mora_type ? o->mora_type : 1;
        m->rh = sa_mora_rhat(in, out, r, type);
        m->scale = 1.0;
        m->a = draw(g, "M", m->rh, m->rh, st * sqrt(3.0 / in), o->zero_b);
        m->b = m->a; /* one shared module in the fork; saved twice */
        put(g, "lora_A", 1, 2, m->rh, m->rh, m->a);
        put(g, "lora_B", 1, 2, m->rh, m->rh, m->a);
        break;
    }
    case SA_LORMA: {
        const int n = o->lorma_pre ? out : in;
        m->n = n;
        m->scale = alpha / r;
        if (o->inflation == SA_SHIFT) {
            /* LoRMA_π's identity init (B[:,0] = 1, A = e0·e0ᵀ, both / sqrt(s): s·π(BA) = I)
             * plus noise, like a trained adapter that stayed near the identity. */
            const double is = 1.0 / sqrt(m->scale);
            m->a = draw(g, "A", r, n, 0.5 * st * is / sqrt((double)n), 0);
            m->b = draw(g, "B", n, r, 0.5 * st * is, o->zero_b);
            if (m->a && m->b && !o->zero_b) {
                m->a[0] = (float)(m->a[0] + is);
                for (int i = 0; i < n; i++) m->b[(size_t)i * r] = (float)(m->b[(size_t)i * r] + is);
                rounded(g, m->a, 1);
                for (int i = 0; i < n; i++) rounded(g, &m->b[(size_t)i * r], 1);
            }
        } else {
            /* rri: F = I + sBA with sBA of gain ~ strength; none: F = sBA of gain ~ 1 */
            const double gain = o->inflation == SA_RRI ? st : 1.0;
            m->a = draw(g, "A", r, n, sqrt(3.0 / r), 0);
            m->b = draw(g, "B", n, r, sqrt(3.0 / n) * gain / m->scale, o->zero_b);
        }
        put(g, "lorma_A", 1, 2, r, n, m->a);
        put(g, "lorma_B", 1, 2, n, r, m->b);
        break;
    }
    case SA_LORA2: {
        const int k = resolved_k(o);
        m->k = k;
        m->scale = (alpha > 0 ? alpha : r) / (r + 1e-5);
        m->a = draw(g, "A", k, in, sqrt(3.0 / k), 0);
        m->b = draw(g, "B", r, k, sqrt(3.0 / r), 0);
        m->e = draw(g, "E", r, 1, 1.0, 0);
        m->aa = draw(g, "aa", k, r, sqrt(3.0 / k), 0);
        m->bb = draw(g, "bb", out, k, sqrt(3.0 / out) * st * w0_gain / m->scale * 2.0,
                     o->zero_b);
        if (m->e)
            for (int j = 0; j < r; j++)
                if (j % 3 == 1) m->e[j] = 0.0f; /* pruned singular values are exact zeros */
        put(g, "lora2_A", 1, 2, k, in, m->a);
        put(g, "lora2_B", 1, 2, r, k, m->b);
        put(g, "lora2_E", 1, o->e_2d ? 2 : 1, r, 1, m->e);
        put(g, "lora2_aa", 1, 2, k, r, m->aa);
        put(g, "lora2_bb", 1, 2, out, k, m->bb);
        break;
    }
    }
}

static void free_module(sa_module_t *m) {
    if (m->b != m->a) free(m->b);
    free(m->a);
    free(m->mag);
    free(m->e);
    free(m->aa);
    free(m->bb);
    free(m->bias);
}

void sa_adapter_free(sa_adapter_t *a) {
    if (!a) return;
    for (int i = 0; a->mods && i < a->shape.n_layers * SA_NPROJ; i++) free_module(&a->mods[i]);
    free(a->mods);
    free(a);
}

int sa_write(const char *dir, const sa_shape_t *shape, const sa_opts_t *o, sa_adapter_t **out) {
    if (out) *out = NULL;
    char path[4096];
    char *cfg = sa_config_json(o);
    sa_adapter_t *a = calloc(1, sizeof *a);
    st_writer_t *w = stw_create();
    int rc = -1;
    if (!cfg || !a || !w) goto done;
    a->o = *o;
    a->shape = *shape;
    a->mods = calloc((size_t)shape->n_layers * SA_NPROJ, sizeof *a->mods);
    if (!a->mods) goto done;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "sa_write: cannot create %s\n", path);
        goto done;
    }
    size_t len = strlen(cfg);
    int ok = fwrite(cfg, 1, len, f) == len;
    if (fclose(f) != 0 || !ok) goto done;

    const unsigned targets = o->targets ? o->targets : (SA_BIT(SA_Q) | SA_BIT(SA_V));
    gen_t g = {.o = o, .w = w};
    for (int l = 0; l < shape->n_layers; l++) {
        for (int p = 0; p < SA_NPROJ; p++) {
            if (!(targets & SA_BIT(p))) continue;
            int r = resolved_r(o);
            double alpha = resolved_alpha(o);
            if (o->select && !o->select(o->select_ctx, l, p, &r, &alpha)) continue;
            g.layer = l;
            g.p = p;
            gen_module(&g, shape, r, alpha, &a->mods[(size_t)l * SA_NPROJ + p]);
            if (g.failed) {
                fprintf(stderr, "sa_write: out of memory or bad tensor at layer %d %s\n", l,
                        sa_proj_name(p));
                goto done;
            }
        }
    }
    a->n_tensors = g.n_tensors;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (stw_write(w, path) != 0) {
        fprintf(stderr, "sa_write: cannot write %s\n", path);
        goto done;
    }
    rc = 0;
done:
    free(cfg);
    stw_free(w);
    if (rc == 0 && out) *out = a;
    else sa_adapter_free(a);
    return rc;
}

/* ---- merged reference (double precision, naive) ---- */

/* C = A (m×k) · B (k×n), all double, row-major. */
static void matmul(const double *A, const double *B, double *C, int m, int k, int n) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int t = 0; t < k; t++) s += A[(size_t)i * k + t] * B[(size_t)t * n + j];
            C[(size_t)i * n + j] = s;
        }
}

static double *to_double(const float *v, size_t n) {
    double *d = malloc((n ? n : 1) * sizeof(double));
    if (d)
        for (size_t i = 0; i < n; i++) d[i] = v[i];
    return d;
}

/* Start index of each of rh contiguous groups over n features (the first n mod rh groups one
 * larger); start[rh] = n. Empty groups when n < rh. */
static void group_starts(int n, int rh, int *start) {
    const int q = n % rh, base = n / rh;
    start[0] = 0;
    for (int g = 0; g < rh; g++) start[g + 1] = start[g] + base + (g < q ? 1 : 0);
}

/* d (out) = D(M · C(x)) for one input x (in), by the definitions of adapters.md §4.2. */
static void mora_apply(const sa_module_t *m, int type, const double *x, double *d, double *work,
                       const int *gin, const int *gout) {
    const int in = m->d_in, out = m->d_out, rh = m->rh;
    const int pad = (rh - in % rh) % rh, nb = (in + pad) / rh;
    double *xp = work;              /* (in + pad) */
    double *z = xp + in + pad;      /* (nb·rh) */
    double *u = z + (size_t)nb * rh; /* (nb·rh) */
    for (int i = 0; i < in + pad; i++) xp[i] = i < in ? x[i] : x[i - in];
    int rows = 1;
    if (type == 1 || type == 4) {
        for (int j = 0; j < rh; j++) {
            z[j] = 0;
            for (int c = 0; c < nb; c++) z[j] += xp[c * rh + j];
        }
    } else if (type == 2 || type == 3) {
        for (int g = 0; g < rh; g++) {
            z[g] = 0;
            for (int i = gin[g]; i < gin[g + 1]; i++) z[g] += x[i];
        }
    } else { /* 6: every block rotated by c·θ_j, θ_j = 10000^(−2j/rh) */
        rows = nb;
        const int h = rh / 2;
        for (int c = 0; c < nb; c++) {
            const double *X = xp + (size_t)c * rh;
            double *R = z + (size_t)c * rh;
            for (int j = 0; j < h; j++) {
                const double th = c * pow(10000.0, -2.0 * j / rh);
                R[j] = X[j] * cos(th) - X[j + h] * sin(th);
                R[j + h] = X[j + h] * cos(th) + X[j] * sin(th);
            }
        }
    }
    for (int c = 0; c < rows; c++)
        for (int a = 0; a < rh; a++) {
            double s = 0;
            for (int j = 0; j < rh; j++)
                s += (double)m->a[(size_t)a * rh + j] * z[(size_t)c * rh + j];
            u[(size_t)c * rh + a] = s;
        }
    for (int o = 0; o < out; o++) {
        if (type == 1 || type == 3) {
            d[o] = u[o % rh];
        } else if (type == 2 || type == 4) {
            int g = 0;
            while (!(o >= gout[g] && o < gout[g + 1])) g++;
            d[o] = u[g];
        } else {
            d[o] = u[o % (nb * rh)];
        }
    }
}

/* LoRMA's F (n×n): rri I + sBA, shift s·π(BA) with π(M)[i][j] = M[i][(j − i) mod n], none sBA. */
static double *lorma_f(const sa_module_t *m, sa_inflation_t infl) {
    const int n = m->n, r = m->r;
    double *F = calloc((size_t)n * n, sizeof(double));
    if (!F) return NULL;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            const int col = infl == SA_SHIFT ? ((j - i) % n + n) % n : j;
            double s = 0;
            for (int t = 0; t < r; t++)
                s += (double)m->b[(size_t)i * r + t] * m->a[(size_t)t * n + col];
            F[(size_t)i * n + j] = m->scale * s + (infl == SA_RRI && i == j ? 1.0 : 0.0);
        }
    return F;
}

int sa_merge(const sa_adapter_t *a, int layer, int p, const float *W0, double *W) {
    const sa_module_t *m = sa_module(a, layer, p);
    int in, out;
    sa_proj_dims(&a->shape, p, &in, &out);
    const size_t n = (size_t)in * out;
    for (size_t i = 0; i < n; i++) W[i] = W0[i];
    if (!m->present) return 0;
    int rc = -1;
    switch (a->o.method) {
    case SA_LORA: case SA_RSLORA: case SA_DORA: {
        for (int o = 0; o < out; o++)
            for (int i = 0; i < in; i++) {
                double s = 0;
                for (int t = 0; t < m->r; t++)
                    s += (double)m->b[(size_t)o * m->r + t] * m->a[(size_t)t * in + i];
                W[(size_t)o * in + i] += m->scale * s;
            }
        if (a->o.method == SA_DORA) {
            for (int o = 0; o < out; o++) {
                double ss = 0;
                for (int i = 0; i < in; i++) ss += W[(size_t)o * in + i] * W[(size_t)o * in + i];
                const double g = m->mag[o] / sqrt(ss);
                for (int i = 0; i < in; i++) W[(size_t)o * in + i] *= g;
            }
        }
        return 0;
    }
    case SA_MORA: {
        const int type = a->o.mora_type ? a->o.mora_type : 1, rh = m->rh;
        double *x = calloc((size_t)in, sizeof(double)), *d = malloc((size_t)out * sizeof(double));
        double *work = malloc((size_t)(3 * (2 * in + 2 * rh) + 8) * sizeof(double));
        int *gin = malloc((size_t)(rh + 1) * sizeof(int));
        int *gout = malloc((size_t)(rh + 1) * sizeof(int));
        if (x && d && work && gin && gout) {
            group_starts(in, rh, gin);
            group_starts(out, rh, gout);
            for (int i = 0; i < in; i++) { /* column i of ΔW = D(M·C(e_i)) */
                x[i] = 1.0;
                mora_apply(m, type, x, d, work, gin, gout);
                x[i] = 0.0;
                for (int o = 0; o < out; o++) W[(size_t)o * in + i] += d[o];
            }
            rc = 0;
        }
        free(x);
        free(d);
        free(work);
        free(gin);
        free(gout);
        return rc;
    }
    case SA_LORMA: {
        double *F = lorma_f(m, a->o.inflation), *W0d = to_double(W0, n);
        if (F && W0d) {
            if (a->o.lorma_pre) matmul(F, W0d, W, out, out, in);  /* W' = F·W0 */
            else matmul(W0d, F, W, out, in, in);                 /* W' = W0·F */
            rc = 0;
        }
        free(F);
        free(W0d);
        return rc;
    }
    case SA_LORA2: {
        const int k = m->k, r = m->r;
        /* ΔW = c · bb (out×k) · aa (k×r) · diag(E) · B (r×k) · A (k×in) */
        double *bb = to_double(m->bb, (size_t)out * k), *aa = to_double(m->aa, (size_t)k * r);
        double *EB = malloc((size_t)r * k * sizeof(double));
        double *A = to_double(m->a, (size_t)k * in);
        double *t1 = malloc((size_t)out * r * sizeof(double));
        double *t2 = malloc((size_t)out * k * sizeof(double));
        double *dW = malloc(n * sizeof(double));
        if (bb && aa && EB && A && t1 && t2 && dW) {
            for (int j = 0; j < r; j++)
                for (int t = 0; t < k; t++)
                    EB[(size_t)j * k + t] = (double)m->e[j] * m->b[(size_t)j * k + t];
            matmul(bb, aa, t1, out, k, r);
            matmul(t1, EB, t2, out, r, k);
            matmul(t2, A, dW, out, k, in);
            for (size_t i = 0; i < n; i++) W[i] += m->scale * dW[i];
            rc = 0;
        }
        free(bb);
        free(aa);
        free(EB);
        free(A);
        free(t1);
        free(t2);
        free(dW);
        return rc;
    }
    }
    return rc;
}

/* ---- merged model ---- */

static float *proj_of(synth_layer_t *ly, int p) {
    float *const a[SA_NPROJ] = {ly->wq, ly->wk, ly->wv, ly->wo, ly->w_gate, ly->w_up, ly->w_down};
    return a[p];
}

int sa_write_merged_model(const synth_weights_t *base, const char *dir,
                          const sa_adapter_t *const *ads, const double *w, int n) {
    const sa_shape_t sh = sa_shape_from_synth(&base->o);
    synth_weights_t *mw = synth_weights_create(&base->o); /* same opts: same non-linear tensors */
    double *acc = NULL, *Wi = NULL;
    synth_tensor_t *t = NULL;
    int rc = -1;
    if (!mw) goto done;
    for (int k = 0; k < n; k++) {
        if (ads[k]->shape.hidden != sh.hidden || ads[k]->shape.n_layers != sh.n_layers ||
            ads[k]->shape.intermediate != sh.intermediate || ads[k]->shape.q_dim != sh.q_dim ||
            ads[k]->shape.kv_dim != sh.kv_dim) {
            fprintf(stderr, "sa_write_merged_model: adapter %d has another base shape\n", k);
            goto done;
        }
    }
    for (int l = 0; l < sh.n_layers; l++) {
        for (int p = 0; p < SA_NPROJ; p++) {
            int in, out;
            sa_proj_dims(&sh, p, &in, &out);
            const size_t sz = (size_t)in * out;
            const float *W0 = proj_of(&base->layers[l], p);
            free(acc);
            free(Wi);
            acc = malloc(sz * sizeof(double));
            Wi = malloc(sz * sizeof(double));
            if (!acc || !Wi) goto done;
            for (size_t i = 0; i < sz; i++) acc[i] = W0[i];
            for (int k = 0; k < n; k++) {
                if (sa_merge(ads[k], l, p, W0, Wi) != 0) goto done;
                for (size_t i = 0; i < sz; i++) acc[i] += w[k] * (Wi[i] - W0[i]);
            }
            float *dst = proj_of(&mw->layers[l], p);
            for (size_t i = 0; i < sz; i++) dst[i] = (float)acc[i];
        }
    }
    synth_model_opts_t o = base->o;
    o.dtype = CORE_DT_F32;
    o.n_shards = 0;
    int nt = synth_weights_tensors(mw, NULL, 0);
    if (!(t = malloc((size_t)nt * sizeof *t))) goto done;
    synth_weights_tensors(mw, t, nt);
    if (synth_write_config(&o, dir) != 0 || synth_write_tensors(&o, t, nt, dir) != 0) goto done;
    rc = 0;
done:
    free(acc);
    free(Wi);
    free(t);
    synth_weights_free(mw);
    return rc;
}
