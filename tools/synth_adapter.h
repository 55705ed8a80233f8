/* synth_adapter.h: random adapter directories for tests and benches, with a merged reference
 * (and `loramux synth-adapter`, tools/synth_cli.c).
 *
 * sa_write() draws deterministic random adapter tensors (same options and seed → same bytes)
 * for every method this server accepts and writes DIR/adapter_config.json plus
 * DIR/adapter_model.safetensors in the formats of adapters.md §2.2 (LoRA, rsLoRA), §3.3 (DoRA),
 * §4.3 (MoRA types 1/2/3/4/6: lora_A and lora_B both written, identical, [r̂, r̂]), §10.1 (LoRMA)
 * and §10.2 (LoRA², with some lora2_E entries exactly 0). It hands back the tensors as fp32
 * arrays holding the values after rounding to the storage dtype, i.e. exactly what a correct
 * loader reads.
 *
 * sa_merge() is an independent, naive double-precision implementation of the spec's merged
 * formulas (LoRA ΔW = s·B·A; DoRA row rescale; MoRA ΔW built column by column from the
 * operator applied to unit vectors; LoRMA W' = F·W0 or W0·F; LoRA² ΔW = c·bb·aa·diag(E)·B·A).
 * It shares no code with adapters/ on purpose: a test comparing the two checks both.
 *
 * Single-threaded; no global state.
 */
#ifndef SYNTH_ADAPTER_H
#define SYNTH_ADAPTER_H

#include <stdint.h>

#include "model_config.h"
#include "synth_model.h"
#include "tensor.h"

typedef enum { SA_LORA = 0, SA_RSLORA, SA_DORA, SA_MORA, SA_LORMA, SA_LORA2 } sa_method_t;
typedef enum { SA_RRI = 0, SA_SHIFT, SA_NONE } sa_inflation_t;

/* Projections in decoder-layer order (the same order as core_proj_t). */
enum { SA_Q = 0, SA_K, SA_V, SA_O, SA_GATE, SA_UP, SA_DOWN, SA_NPROJ };
#define SA_BIT(p) (1u << (p))
#define SA_ALL 0x7fu

/* "q_proj", ... and "self_attn" / "mlp". */
const char *sa_proj_name(int p);
const char *sa_proj_group(int p);
/* "lora", "rslora", "dora", "mora", "lorma", "lora2". */
const char *sa_method_name(sa_method_t m);

/* The base model's shape, as far as adapters care. */
typedef struct sa_shape_s {
    int hidden, intermediate, n_layers;
    int q_dim;   /* n_heads * head_dim */
    int kv_dim;  /* n_kv_heads * head_dim */
} sa_shape_t;

sa_shape_t sa_shape_from_synth(const synth_model_opts_t *o);
sa_shape_t sa_shape_from_config(const core_model_config_t *c);
/* in/out features of projection p (HF [out, in] layout). */
void sa_proj_dims(const sa_shape_t *s, int p, int *in, int *out);

/* MoRA's r̂ for one layer (§4.1): round-half-up sqrt((in + out)·r), even for type 6. */
int sa_mora_rhat(int in, int out, int r, int type);

/* Optional per-module selection: return 0 to write no tensors for (layer, p); may change *r and
 * *alpha (write the matching rank_pattern / alpha_pattern into extra_config yourself). */
typedef int (*sa_select_cb)(void *ctx, int layer, int p, int *r, double *alpha);

typedef struct sa_opts_s {
    sa_method_t method;
    int mora_type;            /* MoRA: 1, 2, 3, 4 or 6 (0 = 1) */
    int lorma_pre;            /* LoRMA: 1 = pre (W' = F·W0), 0 = post (W' = W0·F) */
    sa_inflation_t inflation; /* LoRMA */
    int r;                    /* config r (MoRA: the LoRA rank r̂ derives from); 0 = 8 */
    int k;                    /* LoRA²: k; 0 = 8 */
    double alpha;             /* lora_alpha; 0 = 2r (LoRA²: a negative value means "use r") */
    unsigned targets;         /* SA_BIT mask of targeted projections; 0 = q and v */
    sa_select_cb select;      /* NULL: every layer of every target gets tensors */
    void *select_ctx;
    int prefix;               /* keys start with "base_model.model." */
    const char *infix;        /* adapter-name infix ("default": lora_A.default.weight) or NULL */
    core_dtype_t dtype;       /* storage dtype of every tensor */
    uint64_t seed;
    int zero_b;               /* write lora_B / lorma_B / lora2_bb / MoRA's M as zeros: a no-op
                                 for LoRA, rsLoRA, MoRA, LoRMA rri and LoRA² (not DoRA) */
    float strength;           /* size of the change relative to the base weights; 0 = 0.5 */
    float dora_mag;           /* DoRA: m ~ dora_mag·U(0.5, 1.5); 0 = 1 (≈ the row norm of a
                                 synth_model base with w_scale 1) */
    int e_2d;                 /* LoRA²: lora2_E written as [r, 1] instead of [r] */
    int lora_bias;            /* LoRA/rsLoRA: "lora_bias": true and a lora_B.bias per module */
    int lorma_synonyms;       /* LoRMA: write "lorma_r" / "lorma_alpha" instead of r / alpha */
    const char *base_name;    /* base_model_name_or_path; NULL writes null */
    const char *peft_version; /* written when non-NULL */
    const char *targets_json; /* non-NULL: the target_modules value, verbatim (e.g. a regex
                                 string); tensors still follow `targets` */
    const char *extra_config; /* raw JSON members appended to the config ("\"k\": 1"), or NULL */
    const char *config_override; /* non-NULL: written as adapter_config.json instead */
} sa_opts_t;

/* Defaults for a method: r 8, alpha 2r, targets q and v, F32, seed 1, strength 0.5. */
sa_opts_t sa_opts_defaults(sa_method_t m);

/* One adapted (layer, projection), fp32 values after dtype rounding. Shapes [rows, cols]. */
typedef struct sa_module_s {
    int present;
    int d_in, d_out;  /* the base projection */
    int r;            /* rank after select (MoRA: the config r, see rh) */
    int rh;           /* MoRA: r̂ */
    int k;            /* LoRA²: k */
    int n;            /* LoRMA: out for pre, in for post */
    double alpha;
    double scale;     /* LoRA α/r, rsLoRA α/√r, DoRA α/r, MoRA 1, LoRMA α/r, LoRA² c */
    float *a;         /* LoRA/DoRA (r, in); MoRA M (rh, rh); LoRMA (r, n); LoRA² A (k, in) */
    float *b;         /* LoRA/DoRA (out, r); MoRA: aliases a; LoRMA (n, r); LoRA² B (r, k) */
    float *mag;       /* DoRA (out) */
    float *e;         /* LoRA² (r) */
    float *aa;        /* LoRA² (k, r) */
    float *bb;        /* LoRA² (out, k) */
    float *bias;      /* lora_bias: lora_B.bias (out); the merged layer's bias gains scale·bias */
} sa_module_t;

typedef struct sa_adapter_s {
    sa_opts_t o;          /* copy of the options (string pointers borrowed) */
    sa_shape_t shape;
    sa_module_t *mods;    /* (n_layers * SA_NPROJ); present = 0 where nothing was written */
    int n_tensors;        /* tensors in the safetensors file */
} sa_adapter_t;

static inline const sa_module_t *sa_module(const sa_adapter_t *a, int layer, int p) {
    return &a->mods[(size_t)layer * SA_NPROJ + (size_t)p];
}

/* The adapter_config.json text for o. Returns new string (caller frees) or NULL. */
char *sa_config_json(const sa_opts_t *o);

/* Writes DIR/adapter_config.json and DIR/adapter_model.safetensors (DIR must exist).
 * Returns 0 or -1 (message on stderr). When out is non-NULL, *out receives the tensors (new,
 * caller frees with sa_adapter_free()). */
int sa_write(const char *dir, const sa_shape_t *shape, const sa_opts_t *o, sa_adapter_t **out);

/* Accepts NULL. */
void sa_adapter_free(sa_adapter_t *a);

/* W (d_out, d_in) = the weight of (layer, p) with this adapter merged into W0 (d_out, d_in),
 * in double. Where the adapter has no module, W = W0. Additive adapters combine as
 * W0 + Σ w_i·(W_i − W0). A lora_bias is not part of W (see sa_module_t.bias).
 * Returns 0, or -1 on out of memory. */
int sa_merge(const sa_adapter_t *a, int layer, int p, const float *W0, double *W);

/* Writes DIR/config.json and DIR/model.safetensors (F32, one file): the model `base` (as drawn
 * by synth_model, whose shape the adapters were written for) with every projection replaced by
 * W0 + Σ_i w[i]·(W_i − W0), W_i = sa_merge(ads[i]) (for a non-additive adapter: n == 1 and
 * w[0] == 1). lora_bias terms are not merged. DIR must exist. Returns 0 or -1. */
int sa_write_merged_model(const synth_weights_t *base, const char *dir,
                          const sa_adapter_t *const *ads, const double *w, int n);

/* Whether the method may be combined with others (adapters.md §10.3). */
int sa_is_additive(const sa_adapter_t *a);

#endif
