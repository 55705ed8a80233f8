/* synth_model.c: random Llama-family checkpoints in HF layout (see synth_model.h). */
#include "synth_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth_sbuf.h"
#include "synth_st_writer.h"

/* ---- helpers ---- */

/* splitmix64: tiny, good enough for weights, and the same sequence on every platform. */
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

/* Each tensor gets its own stream (seed mixed with its name), so adding or dropping a tensor
 * (tied head, biases) leaves every other tensor's values unchanged. */
static uint64_t stream_for(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    uint64_t s = seed ^ h;
    rng_next(&s);
    return s;
}

static uint16_t f32_to_bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

static float bf16_bits_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half by scaling in double: exact for any float input, rint() rounds ties to even in the
 * default rounding mode. Written differently from core/tensor.c on purpose. */
static uint16_t f32_to_f16_bits(float f) {
    uint16_t sign = signbit(f) ? 0x8000u : 0;
    double a = fabs((double)f);
    if (isnan(f)) return sign | 0x7e00u;
    if (a >= 65520.0) return sign | 0x7c00u; /* rounds to infinity */
    if (a < ldexp(1.0, -14)) {               /* subnormal: units of 2^-24 */
        double q = rint(ldexp(a, 24));       /* q == 1024 is the smallest normal, same bits */
        return sign | (uint16_t)q;
    }
    int e2;
    frexp(a, &e2);                           /* a = m * 2^e2, m in [0.5, 1) */
    int e = e2 - 1;                          /* a = 1.x * 2^e */
    double q = rint(ldexp(a, 10 - e));       /* in [1024, 2048] */
    if (q >= 2048.0) {
        q = 1024.0;
        e++;
    }
    if (e > 15) return sign | 0x7c00u;
    return sign | (uint16_t)(((unsigned)(e + 15) << 10) | ((unsigned)q - 1024u));
}

static float f16_bits_to_f32(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0) v = ldexp((double)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexp((double)(m + 1024), e - 25);
    return (float)((h & 0x8000u) ? -v : v);
}

float synth_round_to(core_dtype_t dt, float x) {
    switch (dt) {
    case CORE_DT_BF16: return bf16_bits_to_f32(f32_to_bf16_bits(x));
    case CORE_DT_F16: return f16_bits_to_f32(f32_to_f16_bits(x));
    default: return x;
    }
}

/* ---- options ---- */

synth_model_opts_t synth_model_defaults(void) {
    synth_model_opts_t o;
    memset(&o, 0, sizeof o);
    o.arch = "LlamaForCausalLM";
    o.hidden = 32;
    o.intermediate = 64;
    o.n_layers = 2;
    o.n_heads = 4;
    o.n_kv_heads = 2;
    o.vocab = 128;
    o.max_pos = 256;
    o.rope_theta = 10000.0f;
    o.rms_eps = 1e-5f;
    o.bos_id = 1;
    o.eos_id = 2;
    o.dtype = CORE_DT_F32;
    o.seed = 1;
    o.w_scale = 1.0f;
    return o;
}

static const char *arch_of(const synth_model_opts_t *o) {
    return o->arch ? o->arch : "LlamaForCausalLM";
}

int synth_head_dim(const synth_model_opts_t *o) {
    return o->head_dim > 0 ? o->head_dim : o->hidden / o->n_heads;
}

int synth_n_kv_heads(const synth_model_opts_t *o) {
    return o->n_kv_heads > 0 ? o->n_kv_heads : o->n_heads;
}

int synth_is_qwen2(const synth_model_opts_t *o) {
    return strcmp(arch_of(o), "Qwen2ForCausalLM") == 0;
}

int synth_has_qkv_bias(const synth_model_opts_t *o) {
    return synth_is_qwen2(o) || o->attention_bias;
}

int synth_has_o_bias(const synth_model_opts_t *o) {
    return !synth_is_qwen2(o) && o->attention_bias;
}

/* ---- weights ---- */

/* What a tensor is drawn from. The one place that says so: synth_weights_create and the
 * streaming writer (synth_model_write_streaming) both go through dist_of, so they agree. */
typedef enum { KIND_EMBED, KIND_NORM, KIND_BIAS, KIND_LINEAR } kind_t;

/* Embeddings are U(±1), norm weights 1 + U(±0.25), biases U(±0.2). Linear weights:
 * U(±w_scale·sqrt(3/fan_in)) has variance w_scale²/fan_in, so with unit w_scale a projection
 * keeps the variance of its input and attention scores are O(1): the softmax is neither flat
 * nor one-hot, which is what makes a logits comparison sensitive. */
static void dist_of(const synth_model_opts_t *o, kind_t kind, int64_t cols, double *center,
                    double *half_width) {
    switch (kind) {
    case KIND_EMBED: *center = 0.0; *half_width = 1.0; break;
    case KIND_NORM: *center = 1.0; *half_width = 0.25; break;
    case KIND_BIAS: *center = 0.0; *half_width = 0.2; break;
    default:
        *center = 0.0;
        *half_width = (o->w_scale > 0 ? o->w_scale : 1.0) * sqrt(3.0 / (double)cols);
    }
}

/* The next value of a tensor's stream, rounded to the storage dtype. */
static inline float next_value(uint64_t *s, double center, double half_width, core_dtype_t dt) {
    return synth_round_to(dt, (float)(center + half_width * rng_sym(s)));
}

/* A (rows, cols) tensor (cols 1 for a vector); returns new array or NULL. */
static float *draw(const synth_model_opts_t *o, const char *name, kind_t kind, int64_t rows,
                   int64_t cols) {
    size_t n = (size_t)rows * (size_t)cols;
    float *v = malloc((n ? n : 1) * sizeof(float));
    if (!v) return NULL;
    double center, half_width;
    dist_of(o, kind, cols, &center, &half_width);
    uint64_t s = stream_for(o->seed, name);
    for (size_t i = 0; i < n; i++) v[i] = next_value(&s, center, half_width, o->dtype);
    return v;
}

static int opts_ok(const synth_model_opts_t *o) {
    return o->hidden > 0 && o->intermediate > 0 && o->n_layers > 0 && o->n_heads > 0 &&
           o->vocab > 0 && synth_head_dim(o) > 0 && o->n_heads % synth_n_kv_heads(o) == 0;
}

synth_weights_t *synth_weights_create(const synth_model_opts_t *o) {
    if (!opts_ok(o)) {
        fprintf(stderr, "synth_weights_create: bad options\n");
        return NULL;
    }
    synth_weights_t *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->o = *o;
    const int d = o->hidden, ffn = o->intermediate, hd = synth_head_dim(o);
    const int q_dim = o->n_heads * hd, kv_dim = synth_n_kv_heads(o) * hd;
    char n[128];
    int ok = 1;
    w->embed = draw(o, "model.embed_tokens.weight", KIND_EMBED, o->vocab, d);
    w->final_norm = draw(o, "model.norm.weight", KIND_NORM, d, 1);
    if (o->tie_embeddings) w->lm_head = w->embed;
    else w->lm_head = draw(o, "lm_head.weight", KIND_LINEAR, o->vocab, d);
    w->layers = calloc((size_t)o->n_layers, sizeof *w->layers);
    ok = w->embed && w->final_norm && w->lm_head && w->layers;
    for (int l = 0; ok && l < o->n_layers; l++) {
        synth_layer_t *ly = &w->layers[l];
#define NAME(fmt) (snprintf(n, sizeof n, "model.layers.%d." fmt, l), n)
        ly->attn_norm = draw(o, NAME("input_layernorm.weight"), KIND_NORM, d, 1);
        ly->ffn_norm = draw(o, NAME("post_attention_layernorm.weight"), KIND_NORM, d, 1);
        ly->wq = draw(o, NAME("self_attn.q_proj.weight"), KIND_LINEAR, q_dim, d);
        ly->wk = draw(o, NAME("self_attn.k_proj.weight"), KIND_LINEAR, kv_dim, d);
        ly->wv = draw(o, NAME("self_attn.v_proj.weight"), KIND_LINEAR, kv_dim, d);
        ly->wo = draw(o, NAME("self_attn.o_proj.weight"), KIND_LINEAR, d, q_dim);
        ly->w_gate = draw(o, NAME("mlp.gate_proj.weight"), KIND_LINEAR, ffn, d);
        ly->w_up = draw(o, NAME("mlp.up_proj.weight"), KIND_LINEAR, ffn, d);
        ly->w_down = draw(o, NAME("mlp.down_proj.weight"), KIND_LINEAR, d, ffn);
        ok = ly->attn_norm && ly->ffn_norm && ly->wq && ly->wk && ly->wv && ly->wo &&
             ly->w_gate && ly->w_up && ly->w_down;
        if (ok && synth_has_qkv_bias(o)) {
            ly->bq = draw(o, NAME("self_attn.q_proj.bias"), KIND_BIAS, q_dim, 1);
            ly->bk = draw(o, NAME("self_attn.k_proj.bias"), KIND_BIAS, kv_dim, 1);
            ly->bv = draw(o, NAME("self_attn.v_proj.bias"), KIND_BIAS, kv_dim, 1);
            ok = ly->bq && ly->bk && ly->bv;
        }
        if (ok && synth_has_o_bias(o)) {
            ly->bo = draw(o, NAME("self_attn.o_proj.bias"), KIND_BIAS, d, 1);
            ok = ly->bo != NULL;
        }
#undef NAME
    }
    if (!ok) {
        fprintf(stderr, "synth_weights_create: out of memory\n");
        synth_weights_free(w);
        return NULL;
    }
    return w;
}

void synth_weights_free(synth_weights_t *w) {
    if (!w) return;
    for (int l = 0; w->layers && l < w->o.n_layers; l++) {
        synth_layer_t *ly = &w->layers[l];
        float *arr[] = {ly->attn_norm, ly->ffn_norm, ly->wq, ly->wk, ly->wv, ly->wo,
                        ly->w_gate, ly->w_up, ly->w_down, ly->bq, ly->bk, ly->bv, ly->bo};
        for (size_t i = 0; i < sizeof arr / sizeof arr[0]; i++) free(arr[i]);
    }
    free(w->layers);
    if (w->lm_head != w->embed) free(w->lm_head);
    free(w->embed);
    free(w->final_norm);
    free(w);
}

static void put(synth_tensor_t *out, kind_t *kinds, int cap, int *n, const char *name,
                kind_t kind, int n_dims, int64_t d0, int64_t d1, const float *data) {
    if (*n < cap) {
        synth_tensor_t *t = &out[*n];
        snprintf(t->name, sizeof t->name, "%s", name);
        t->n_dims = n_dims;
        t->shape[0] = d0;
        t->shape[1] = n_dims == 2 ? d1 : 0;
        t->data = data;
        if (kinds) kinds[*n] = kind;
    }
    (*n)++;
}

/* The tensors in file order. With w: data points into w, and a bias is listed when w has it.
 * Without w (the streaming writer): data is NULL, biases follow the options, and kinds[i]
 * (when non-NULL) says how tensor i is drawn. Returns the count (which may exceed cap). */
static int enumerate(const synth_model_opts_t *o, const synth_weights_t *w, synth_tensor_t *out,
                     kind_t *kinds, int cap) {
    const int d = o->hidden, ffn = o->intermediate, hd = synth_head_dim(o);
    const int q_dim = o->n_heads * hd, kv_dim = synth_n_kv_heads(o) * hd;
    const int qkv_b = synth_has_qkv_bias(o), o_b = synth_has_o_bias(o);
    int n = 0;
    char nm[128];
    put(out, kinds, cap, &n, "model.embed_tokens.weight", KIND_EMBED, 2, o->vocab, d,
        w ? w->embed : NULL);
    for (int l = 0; l < o->n_layers; l++) {
        const synth_layer_t *ly = w ? &w->layers[l] : NULL;
#define NAME(fmt) (snprintf(nm, sizeof nm, "model.layers.%d." fmt, l), nm)
#define DATA(f) (ly ? ly->f : NULL)
#define HAS(f, dflt) (ly ? ly->f != NULL : (dflt))
#define PUT(suffix, kind, nd, d0, d1, f) \
    put(out, kinds, cap, &n, NAME(suffix), kind, nd, d0, d1, DATA(f))
        PUT("input_layernorm.weight", KIND_NORM, 1, d, 0, attn_norm);
        PUT("self_attn.q_proj.weight", KIND_LINEAR, 2, q_dim, d, wq);
        if (HAS(bq, qkv_b)) PUT("self_attn.q_proj.bias", KIND_BIAS, 1, q_dim, 0, bq);
        PUT("self_attn.k_proj.weight", KIND_LINEAR, 2, kv_dim, d, wk);
        if (HAS(bk, qkv_b)) PUT("self_attn.k_proj.bias", KIND_BIAS, 1, kv_dim, 0, bk);
        PUT("self_attn.v_proj.weight", KIND_LINEAR, 2, kv_dim, d, wv);
        if (HAS(bv, qkv_b)) PUT("self_attn.v_proj.bias", KIND_BIAS, 1, kv_dim, 0, bv);
        PUT("self_attn.o_proj.weight", KIND_LINEAR, 2, d, q_dim, wo);
        if (HAS(bo, o_b)) PUT("self_attn.o_proj.bias", KIND_BIAS, 1, d, 0, bo);
        PUT("post_attention_layernorm.weight", KIND_NORM, 1, d, 0, ffn_norm);
        PUT("mlp.gate_proj.weight", KIND_LINEAR, 2, ffn, d, w_gate);
        PUT("mlp.up_proj.weight", KIND_LINEAR, 2, ffn, d, w_up);
        PUT("mlp.down_proj.weight", KIND_LINEAR, 2, d, ffn, w_down);
#undef PUT
#undef HAS
#undef DATA
#undef NAME
    }
    put(out, kinds, cap, &n, "model.norm.weight", KIND_NORM, 1, d, 0, w ? w->final_norm : NULL);
    if (!o->tie_embeddings)
        put(out, kinds, cap, &n, "lm_head.weight", KIND_LINEAR, 2, o->vocab, d,
            w ? w->lm_head : NULL);
    return n;
}

int synth_weights_tensors(const synth_weights_t *w, synth_tensor_t *out, int cap) {
    return enumerate(&w->o, w, out, NULL, cap);
}

/* ---- config.json ---- */

static const char *model_type_of(const synth_model_opts_t *o) {
    const char *a = arch_of(o);
    if (strcmp(a, "MistralForCausalLM") == 0) return "mistral";
    if (strcmp(a, "Qwen2ForCausalLM") == 0) return "qwen2";
    return "llama";
}

static const char *torch_dtype_of(core_dtype_t dt) {
    return dt == CORE_DT_BF16 ? "bfloat16" : dt == CORE_DT_F16 ? "float16" : "float32";
}

char *synth_config_json(const synth_model_opts_t *o) {
    synth_sbuf_t b = {0};
    const char *arch = arch_of(o);
    synth_sb_printf(&b, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n", arch,
              model_type_of(o));
    synth_sb_printf(&b, "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n", o->hidden,
              o->intermediate);
    synth_sb_printf(&b, "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n", o->n_layers,
              o->n_heads);
    synth_sb_printf(&b, "  \"num_key_value_heads\": %d,\n", synth_n_kv_heads(o));
    if (o->head_dim > 0) synth_sb_printf(&b, "  \"head_dim\": %d,\n", o->head_dim);
    synth_sb_printf(&b, "  \"vocab_size\": %d,\n  \"max_position_embeddings\": %d,\n", o->vocab,
              o->max_pos);
    synth_sb_printf(&b, "  \"rms_norm_eps\": %.9g,\n  \"rope_theta\": %.9g,\n",
              o->rms_eps > 0 ? o->rms_eps : 1e-5, o->rope_theta > 0 ? o->rope_theta : 10000.0);
    if (o->rope_scaling_json)
        synth_sb_printf(&b, "  \"rope_scaling\": %s,\n", o->rope_scaling_json);
    else if (o->rope_llama3)
        synth_sb_printf(&b,
                  "  \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": %.9g, "
                  "\"low_freq_factor\": %.9g, \"high_freq_factor\": %.9g, "
                  "\"original_max_position_embeddings\": %d},\n",
                  o->rope_factor, o->rope_low_freq_factor, o->rope_high_freq_factor,
                  o->rope_orig_max_pos);
    else
        synth_sb_printf(&b, "  \"rope_scaling\": null,\n");
    synth_sb_printf(&b, "  \"hidden_act\": \"%s\",\n", o->hidden_act ? o->hidden_act : "silu");
    synth_sb_printf(&b, "  \"tie_word_embeddings\": %s,\n", o->tie_embeddings ? "true" : "false");
    if (synth_is_qwen2(o)) {
        /* What Qwen2 checkpoints carry: a window that is off unless use_sliding_window. */
        synth_sb_printf(&b,
                  "  \"use_sliding_window\": false,\n  \"sliding_window\": %d,\n"
                  "  \"max_window_layers\": %d,\n",
                  o->sliding_window > 0 ? o->sliding_window : o->max_pos, o->n_layers);
    } else if (strcmp(model_type_of(o), "mistral") == 0) {
        if (o->sliding_window > 0) synth_sb_printf(&b, "  \"sliding_window\": %d,\n", o->sliding_window);
        else synth_sb_printf(&b, "  \"sliding_window\": null,\n");
        if (o->attention_bias) synth_sb_printf(&b, "  \"attention_bias\": true,\n");
    } else {
        synth_sb_printf(&b, "  \"attention_bias\": %s,\n  \"mlp_bias\": false,\n",
                  o->attention_bias ? "true" : "false");
        synth_sb_printf(&b, "  \"pretraining_tp\": 1,\n");
    }
    if (o->bos_id >= 0) synth_sb_printf(&b, "  \"bos_token_id\": %d,\n", o->bos_id);
    if (o->eos_id >= 0) synth_sb_printf(&b, "  \"eos_token_id\": %d,\n", o->eos_id);
    if (o->extra_config) synth_sb_printf(&b, "  %s,\n", o->extra_config);
    synth_sb_printf(&b,
              "  \"initializer_range\": 0.02,\n  \"use_cache\": true,\n"
              "  \"torch_dtype\": \"%s\",\n  \"transformers_version\": \"4.45.0\"\n}\n",
              torch_dtype_of(o->dtype));
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

static int write_text(const char *dir, const char *file, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "synth: cannot write %s\n", path);
        return -1;
    }
    size_t len = strlen(text);
    size_t w = fwrite(text, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

int synth_write_config(const synth_model_opts_t *o, const char *dir) {
    char *js = synth_config_json(o);
    if (!js) return -1;
    int rc = write_text(dir, "config.json", js);
    free(js);
    return rc;
}

/* ---- safetensors ---- */

/* Encodes n fp32 values as dt (little-endian); returns new buffer or NULL. */
static void *encode(core_dtype_t dt, const float *v, size_t n) {
    if (dt == CORE_DT_F32) {
        void *b = malloc(n ? n * 4 : 1);
        if (b) memcpy(b, v, n * 4);
        return b;
    }
    unsigned char *b = malloc(n ? n * 2 : 1);
    if (!b) return NULL;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = dt == CORE_DT_BF16 ? f32_to_bf16_bits(v[i]) : f32_to_f16_bits(v[i]);
        b[2 * i] = (unsigned char)(h & 0xff);
        b[2 * i + 1] = (unsigned char)(h >> 8);
    }
    return b;
}

/* A tensor of the streaming writer, drawn while stw_write() writes it. */
typedef struct {
    const synth_model_opts_t *o;
    kind_t kind;
    int64_t cols; /* fan-in of a linear weight; 1 for a vector */
} deferred_t;

/* stw_fill_cb: the same values, in the same order, as draw() followed by encode(). */
static int fill_deferred(void *ctx, const char *name, void *dst, size_t n_bytes) {
    const deferred_t *d = ctx;
    const core_dtype_t dt = d->o->dtype;
    double center, half_width;
    dist_of(d->o, d->kind, d->cols, &center, &half_width);
    uint64_t s = stream_for(d->o->seed, name);
    if (dt == CORE_DT_F32) {
        float *v = dst;
        for (size_t i = 0; i < n_bytes / 4; i++) v[i] = next_value(&s, center, half_width, dt);
        return 0;
    }
    unsigned char *b = dst;
    for (size_t i = 0; i < n_bytes / 2; i++) {
        float v = next_value(&s, center, half_width, dt);
        uint16_t h = dt == CORE_DT_BF16 ? f32_to_bf16_bits(v) : f32_to_f16_bits(v);
        b[2 * i] = (unsigned char)(h & 0xff);
        b[2 * i + 1] = (unsigned char)(h >> 8);
    }
    return 0;
}

/* Writes tensors [lo, hi) to path. A tensor with data is encoded now; one without (kinds
 * non-NULL: the streaming writer) is drawn while the file is written. */
static int write_file(const synth_model_opts_t *o, const synth_tensor_t *t, const kind_t *kinds,
                      int lo, int hi, const char *path) {
    st_writer_t *w = stw_create();
    deferred_t *defs = calloc((size_t)(hi > lo ? hi - lo : 1), sizeof *defs);
    int rc = w && defs ? 0 : -1;
    for (int i = lo; i < hi && rc == 0; i++) {
        if (!t[i].data) {
            deferred_t *d = &defs[i - lo];
            *d = (deferred_t){o, kinds ? kinds[i] : KIND_LINEAR,
                              t[i].n_dims == 2 ? t[i].shape[1] : 1};
            rc = kinds && stw_add_deferred(w, t[i].name, o->dtype, t[i].n_dims, t[i].shape,
                                           fill_deferred, d) == 0
                     ? 0
                     : -1;
            continue;
        }
        size_t n = (size_t)t[i].shape[0] * (size_t)(t[i].n_dims == 2 ? t[i].shape[1] : 1);
        void *bytes = encode(o->dtype, t[i].data, n);
        if (!bytes) { rc = -1; break; }
        rc = stw_add(w, t[i].name, o->dtype, t[i].n_dims, t[i].shape, bytes) ? -1 : 0;
        free(bytes);
    }
    if (rc == 0 && stw_write(w, path) != 0) rc = -1;
    if (rc) fprintf(stderr, "synth: cannot write %s\n", path);
    stw_free(w);
    free(defs);
    return rc;
}

/* synth_write_tensors, with kinds for tensors that have no data (see write_file). */
static int write_tensors(const synth_model_opts_t *o, const synth_tensor_t *t,
                         const kind_t *kinds, int n, const char *dir) {
    char path[4096];
    if (o->n_shards <= 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        return write_file(o, t, kinds, 0, n, path);
    }
    const int ns = o->n_shards;
    synth_sbuf_t idx = {0};
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += (size_t)t[i].shape[0] * (size_t)(t[i].n_dims == 2 ? t[i].shape[1] : 1) *
                 core_dtype_size(o->dtype);
    synth_sb_printf(&idx, "{\n  \"metadata\": {\"total_size\": %zu},\n  \"weight_map\": {", total);
    for (int s = 0; s < ns; s++) {
        const int lo = (int)((int64_t)n * s / ns), hi = (int)((int64_t)n * (s + 1) / ns);
        char file[64];
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, ns);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        if (write_file(o, t, kinds, lo, hi, path) != 0) {
            free(idx.s);
            return -1;
        }
        for (int i = lo; i < hi; i++)
            synth_sb_printf(&idx, "%s\n    \"%s\": \"%s\"", i ? "," : "", t[i].name, file);
    }
    synth_sb_printf(&idx, "\n  }\n}\n");
    int rc = idx.oom ? -1 : write_text(dir, "model.safetensors.index.json", idx.s);
    free(idx.s);
    return rc;
}

int synth_write_tensors(const synth_model_opts_t *o, const synth_tensor_t *t, int n,
                        const char *dir) {
    return write_tensors(o, t, NULL, n, dir);
}

int synth_model_write_streaming(const synth_model_opts_t *o, const char *dir) {
    if (!opts_ok(o)) {
        fprintf(stderr, "synth_model_write_streaming: bad options\n");
        return -1;
    }
    const int n = enumerate(o, NULL, NULL, NULL, 0);
    synth_tensor_t *t = malloc((size_t)n * sizeof *t);
    kind_t *kinds = malloc((size_t)n * sizeof *kinds);
    int rc = -1;
    if (t && kinds) {
        enumerate(o, NULL, t, kinds, n);
        rc = synth_write_config(o, dir);
        if (rc == 0) rc = write_tensors(o, t, kinds, n, dir);
    } else {
        fprintf(stderr, "synth_model_write_streaming: out of memory\n");
    }
    free(kinds);
    free(t);
    return rc;
}

int synth_model_write(const synth_model_opts_t *o, const char *dir, synth_weights_t **out) {
    if (out) *out = NULL;
    synth_weights_t *w = synth_weights_create(o);
    if (!w) return -1;
    int n = synth_weights_tensors(w, NULL, 0);
    synth_tensor_t *t = malloc((size_t)n * sizeof *t);
    int rc = -1;
    if (t) {
        synth_weights_tensors(w, t, n);
        rc = synth_write_config(o, dir);
        if (rc == 0) rc = synth_write_tensors(o, t, n, dir);
    }
    free(t);
    if (rc == 0 && out) *out = w;
    else synth_weights_free(w);
    return rc;
}
