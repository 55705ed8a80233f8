/* adapter.h: adapters loaded against a base model, and the hook that applies them.
 *
 * An adapter directory (adapter_config.json + adapter_model.safetensors) is read, dispatched on
 * its config (adapters.md §10), validated against the loaded base (every key maps to a base
 * module, every shape matches, every value is finite) and turned into a compute-ready form in
 * fp32: scales folded in, DoRA's g = m/||W0 + sBA|| precomputed, LoRMA+ rewritten as LoRA,
 * LoRA² collapsed to a rank-k LoRA, MoRA type-6 rotation tables built in fp32.
 *
 * Every module of every layer ends up as one of a few kernels (adp_kind_t):
 *  - ADP_K_LORA     y += B·(A·x)                     LoRA, rsLoRA, LoRMA+ (rri), LoRA²
 *  - ADP_K_DORA     y  = g ⊙ (y + B·(A·x))          DoRA (y is the base output without bias)
 *  - ADP_K_MORA     y += D(M·C(x))                   MoRA types 1/2/3/4/6
 *  - ADP_K_OUT_LR   y  = B·(A·y)                     LoRMA pre/none
 *  - ADP_K_IN_LR    x' = B·(A·x), then y = W0·x'     LoRMA post/none
 *  - ADP_K_OUT_FULL y  = P·y                         LoRMA pre/shift (P = s·π(BA), materialised)
 *  - ADP_K_IN_FULL  x' = P·x, then y = W0·x'         LoRMA post/shift
 * where the scale s is folded into B (or P).
 *
 * Thread safety: a loaded adapter is immutable and may be shared by any number of requests and
 * threads. Ownership: adp_adapter_t is reference counted (adp_adapter_ref/adp_adapter_unref) so
 * a registry can drop a name while running requests keep their version.
 */
#ifndef ADAPTERS_ADAPTER_H
#define ADAPTERS_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "kern.h"
#include "llm_error.h"
#include "model.h"

typedef enum {
    ADP_METHOD_LORA = 0,
    ADP_METHOD_RSLORA,
    ADP_METHOD_DORA,
    ADP_METHOD_MORA,
    ADP_METHOD_LORMA,
    ADP_METHOD_LORA2,
} adp_method_t;

/* "lora", "rslora", "dora", "mora", "lorma", "lora2" */
const char *adp_method_name(adp_method_t m);

typedef enum {
    ADP_K_NONE = 0,
    ADP_K_LORA,
    ADP_K_DORA,
    ADP_K_MORA,
    ADP_K_OUT_LR,
    ADP_K_IN_LR,
    ADP_K_OUT_FULL,
    ADP_K_IN_FULL,
} adp_kind_t;

/* One adapted (layer, projection). Shapes in HF [out, in] convention.
 * Low-rank kinds (LORA, DORA, OUT_LR, IN_LR) end up as two factor matrices in the load's
 * dtype (fp32 or bf16): fa = A (r, n_in) and fbt = Bᵀ (r, n_out), both row-major so the
 * shrink and the expand each stream contiguous rows; n_in/n_out are the widths of the vector
 * read and written (d_in/d_out for LoRA and DoRA, the output width for OUT_LR, the input
 * width for IN_LR). */
typedef struct adp_module_s {
    adp_kind_t kind;
    int r;          /* rank (LoRA-like), r̂ (MoRA) or n (full transforms) */
    int d_in, d_out;/* the base layer's input and output widths */
    kern_mat_t fa;  /* low-rank kinds: A (r, n_in); data owned */
    kern_mat_t fbt; /* low-rank kinds: Bᵀ (r, n_out), scale folded in; data owned */
    float *a;       /* while loading only: A (r, n_in) fp32; NULL once loaded */
    float *b;       /* full kinds: P (n, n); while loading a low-rank kind: B (n_out, r) */
    float *g;       /* DoRA: (d_out) */
    float *bias;    /* LoRA lora_bias: (d_out), scale folded in; NULL when absent */
    /* MoRA */
    int mora_type;
    float *m;       /* (r̂, r̂) */
    float *cos_t, *sin_t; /* type 6: (nb, r̂/2) fp32 tables */
    int nb;         /* type 6: blocks of the padded input */
} adp_module_t;

typedef struct adp_adapter_s {
    /* read-only */
    char name[128];
    adp_method_t method;
    int additive;           /* may be combined with others in one request */
    int n_layers;
    adp_module_t *mods;     /* (n_layers * CORE_PROJ_COUNT); kind NONE where not targeted */
    int rank_min, rank_max; /* over the adapted modules (r for LoRA-like, r̂ for MoRA) */
    size_t bytes;           /* resident bytes of the compute-ready form */
    char target_modules[256]; /* comma-separated projection names that are adapted */
    /* private */
    int refs;
} adp_adapter_t;

static inline const adp_module_t *adp_module(const adp_adapter_t *a, int layer, core_proj_t p) {
    return &a->mods[(size_t)layer * CORE_PROJ_COUNT + (size_t)p];
}

typedef struct adp_load_opts_s {
    const char *base_name; /* the served base's name; NULL = do not compare */
    int force_base;        /* accept an adapter whose base_model_name_or_path differs */
    kern_wtype_t dtype;    /* storage of low-rank factors: KERN_W_F32 (the zero default) or
                            * KERN_W_BF16 (half the bytes each step reads; computed in fp32) */
} adp_load_opts_t;

/* Loads DIR (adapter_config.json + adapter_model.safetensors) against base.
 * name is copied (used in messages); opts may be NULL. Returns 0 and *out (new, refcount 1,
 * release with adp_adapter_unref()), or a negative code with err naming the file, key and
 * reason. A directory with only a pickled adapter_model.bin is refused (unpickling runs code). */
int adp_load_dir(const core_model_t *base, const char *dir, const char *name,
                 const adp_load_opts_t *opts, adp_adapter_t **out, llm_error_t *err);

/* Same from explicit file paths (uploads are validated before they are stored). */
int adp_load_files(const core_model_t *base, const char *config_path,
                   const char *safetensors_path, const char *name,
                   const adp_load_opts_t *opts, adp_adapter_t **out, llm_error_t *err);

void adp_adapter_ref(adp_adapter_t *a);
/* Accepts NULL. Frees on the last reference. Not thread-safe: callers serialise (the engine
 * thread owns references). */
void adp_adapter_unref(adp_adapter_t *a);

/* ---- per-request adapter sets and the forward hook ---- */

#define ADP_SET_MAX 8

/* What one sequence runs with: up to ADP_SET_MAX adapters with weights (adapters.md §10.3).
 * The core sees a pointer to this as core_step_seg_t.adapter. */
typedef struct adp_set_s {
    int n;
    const adp_adapter_t *a[ADP_SET_MAX]; /* borrowed; the caller keeps references */
    float w[ADP_SET_MAX];
} adp_set_t;

/* Checks the composition rules: at most ADP_SET_MAX, weights finite, non-additive adapters
 * (DoRA, LoRMA shift/none) alone. Fills err with the reason. */
int adp_set_validate(const adp_set_t *set, llm_error_t *err);

/* The linear hook that applies each segment's adp_set_t. Scratch for steps of up to
 * max_tokens tokens is allocated once here. */
typedef struct adp_hook_s adp_hook_t;
int adp_hook_create(const core_model_t *base, int max_tokens, adp_hook_t **out);
void adp_hook_free(adp_hook_t *h);
/* Groups of at least n tokens sharing an adapter use SGMV (sgemm), smaller ones the BGMV
 * kernels (default 64; tests lower it so small models exercise both). n ≤ 0: the default. */
void adp_hook_set_sgmv_min(adp_hook_t *h, int n);

/* Fills hook so that core_fwd_set_hook(fwd, hook) plugs h in. */
void adp_hook_bind(adp_hook_t *h, core_lin_hook_t *hook);

#endif
