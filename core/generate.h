/* generate.h: run several generation requests to completion, batched together.
 *
 * The reference driver of the forward pass: every step takes one decode token of each running
 * request plus prompt chunks of waiting ones up to a token budget (so a long prompt is split
 * across steps), exactly the shape of step the server's engine builds. Used by the command line
 * and by tests; the server has its own engine loop with the same rules.
 */
#ifndef CORE_GENERATE_H
#define CORE_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "llm_error.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

typedef enum { CORE_FINISH_NONE = 0, CORE_FINISH_LENGTH, CORE_FINISH_STOP } core_finish_t;

/* "length", "stop" (OpenAI's finish_reason), or NULL for NONE. */
const char *core_finish_name(core_finish_t f);

typedef struct core_gen_req_s {
    /* in */
    const int32_t *prompt;      /* (n_prompt) >= 1 token; borrowed */
    int n_prompt;
    int max_tokens;             /* >= 1 */
    smp_params_t sampling;
    const char *const *stop;    /* (n_stop) stop strings; need a tokenizer */
    int n_stop;
    int ignore_eos;
    const void *adapter;        /* handed to the linear hook for this request's tokens */
    /* out */
    int32_t *ids;               /* (n_ids) generated ids; new, caller frees with free() */
    int n_ids;
    char *text;                 /* decoded completion, stop string cut off; new, or NULL
                                 * without a tokenizer; caller frees with free() */
    size_t text_len;
    core_finish_t finish;
} core_gen_req_t;

typedef struct core_gen_opts_s {
    int max_step_tokens;        /* token budget of one step (chunked prefill); >= 1 */
    const core_lin_hook_t *hook;/* NULL: base model only */
    int n_threads;              /* compute threads; 0 = one per online CPU */
    int split_tiny;             /* split even tiny layers across the threads (tests of the
                                 * parallel code on small models); 0 = only where it pays */
} core_gen_opts_t;

/* Runs every request to completion (EOS of the model or tokenizer unless ignore_eos, a stop
 * string, or max_tokens). tok may be NULL (then stop strings are refused and no text is made).
 * Returns 0, or a negative code with err filled (bad request fields name the request index);
 * on failure outputs are freed and zeroed. */
int core_generate(const core_model_t *m, const tok_tokenizer_t *tok, core_gen_req_t *reqs,
                  int n_reqs, const core_gen_opts_t *opts, llm_error_t *err);

/* Frees a request's outputs (ids, text) and zeroes them. Accepts NULL. */
void core_gen_req_clear(core_gen_req_t *r);

/* Stop-string search helper shared with the server: the earliest position >= from at which any
 * stop string starts in text[0..len), or -1. */
long core_stop_find(const char *text, size_t len, size_t from, const char *const *stop,
                    int n_stop);

#endif
