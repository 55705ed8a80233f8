/* forward.h: one batched transformer step over several sequences.
 *
 * A step is a list of sequence segments: each segment appends n_tok tokens to one sequence
 * (a prompt chunk, or one decode token). All tokens of the step go through each linear layer
 * in one GEMM; attention runs per sequence over its own paged KV cache. Prompt processing and
 * decoding are the same call.
 *
 * Adapters plug in through core_lin_hook_t: for every linear layer the forward computes the
 * base product y = x·Wᵀ for all tokens, then calls the hook (which adds each segment's adapter
 * delta into y in place), then adds the bias. With no hook nothing extra runs.
 *
 * Not thread-safe per core_fwd_t: one engine thread drives it; the step's heavy loops (linear
 * layers, attention over rows × heads) run on its own pool of compute threads (linear.h).
 */
#ifndef CORE_FORWARD_H
#define CORE_FORWARD_H

#include <stdint.h>

#include "kv_cache.h"
#include "llm_error.h"
#include "model.h"

typedef enum {
    CORE_LOGITS_NONE = 0, /* prompt chunk that is not the last one */
    CORE_LOGITS_LAST,     /* one row: after the segment's last token */
    CORE_LOGITS_ALL,      /* n_tok rows (prompt logprobs / echo) */
} core_logits_mode_t;

typedef struct core_step_seg_s {
    core_seq_t *seq;          /* borrowed; its n_past advances by n_tok on success */
    const int32_t *tokens;    /* (n_tok) */
    int n_tok;
    core_logits_mode_t logits;
    const void *adapter;      /* opaque to the core; handed to the hook; NULL = base */
} core_step_seg_t;

/* What the hook is told about one linear call. Token rows are in segment order: segment i
 * covers rows [row0[i], row0[i] + segs[i].n_tok). */
typedef struct core_lin_call_s {
    int layer;
    core_proj_t proj;
    int d_in, d_out;
    int n_rows;                   /* tokens in the step */
    int n_segs;
    const core_step_seg_t *segs;
    const int *row0;              /* (n_segs) first row of each segment */
    struct core_exec_s *exec;     /* the step's worker pool and kernels (linear.h); a hook
                                   * may run parallel work on it, never nested. NULL when a
                                   * caller drives a hook by hand: run on the calling thread */
} core_lin_call_t;

typedef struct core_lin_hook_s {
    /* Optional input-space transform, run before the base GEMM: may write transformed rows
     * into x_out (n_rows, d_in) and return 1, or return 0 to use x as is. */
    int (*pre)(void *ctx, const core_lin_call_t *call, const float *x, float *x_out);
    /* Adds adapter deltas into y (n_rows, d_out) in place; x (n_rows, d_in) is the layer's
     * input (before any pre transform). The bias is added after this returns. */
    void (*post)(void *ctx, const core_lin_call_t *call, const float *x, float *y);
    void *ctx;
} core_lin_hook_t;

typedef struct core_fwd_s core_fwd_t;

/* Scratch for steps of up to max_tokens tokens, and a pool of n_threads compute threads (the
 * caller of core_fwd_step is one of them; 0 = one per online CPU). Returns 0 and *out (new,
 * free with core_fwd_free()), LLM_ENOMEM or LLM_EINVAL. model is borrowed and must outlive
 * fwd. */
int core_fwd_create(const core_model_t *model, int max_tokens, int n_threads,
                    core_fwd_t **out);

/* The compute context (pool, kernels) of fwd, e.g. for the start-up log. Borrowed. */
struct core_exec_s *core_fwd_exec(core_fwd_t *fwd);
void core_fwd_free(core_fwd_t *fwd);

/* Installs the adapter hook (NULL to remove). hook is copied. */
void core_fwd_set_hook(core_fwd_t *fwd, const core_lin_hook_t *hook);

/* Number of logits rows step will produce (sum over segments of 0, 1 or n_tok). */
int core_fwd_logit_rows(const core_step_seg_t *segs, int n_segs);

/* Runs one step. logits receives core_fwd_logit_rows() rows of vocab_size floats, in segment
 * order. Reserves KV room for every segment first; on any failure nothing has advanced.
 * Returns 0; LLM_EINVAL (too many tokens, empty segment); LLM_EFULL (KV pool exhausted);
 * LLM_ERANGE (a sequence would pass the context length), with err saying which segment. */
int core_fwd_step(core_fwd_t *fwd, const core_step_seg_t *segs, int n_segs, float *logits,
                  llm_error_t *err);

/* Lets fwd's workers sleep until the next step instead of spinning (the step then pays their
 * wake-up, ~0.1 ms here). For a caller whose work between steps wakes other threads, e.g. the
 * engine handing a step's tokens to the HTTP connections: a spinning worker holds a core they
 * would then take from the caller. */
void core_fwd_park(core_fwd_t *fwd);

#endif
