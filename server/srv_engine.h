/* srv_engine.h: the engine thread: continuous, mixed-adapter batching over the core.
 *
 * Requests arrive from HTTP threads (srv_engine_submit) and wait in one FIFO per adapter set;
 * the scheduler admits them round-robin across adapter sets (so one adapter's flood cannot
 * starve the others), as long as running sequences stay under max_running and the KV pool can
 * hold each admitted sequence's prompt plus max_tokens (reserved up front, so a running sequence
 * never has to be preempted). Every step then takes one decode token of each running sequence
 * plus prompt chunks of admitted ones up to max_step_tokens (chunked prefill), sorted so that
 * sequences sharing an adapter set are contiguous, and runs one core_fwd_step for all of them.
 *
 * The engine thread sleeps in a libuv loop while idle; submit and cancel wake it through a
 * uv_async_t. HTTP threads never run model code.
 */
#ifndef SRV_ENGINE_H
#define SRV_ENGINE_H

#include "llm_error.h"
#include "model.h"
#include "srv_metrics.h"
#include "srv_request.h"
#include "tokenizer.h"

typedef struct srv_engine_opts_s {
    int max_running;           /* sequences per step */
    int max_step_tokens;       /* token budget per step */
    int max_queue;             /* waiting requests before submit says LLM_EFULL */
    int32_t kv_blocks;         /* KV pool size in blocks; 0 = max_running full contexts */
    int max_adapters_per_step; /* 0 = unlimited */
    int n_threads;             /* compute threads, the engine thread included; 0 = cores */
} srv_engine_opts_t;

typedef struct srv_engine_s srv_engine_t;

/* Starts the engine thread and runs one warm-up step. m, tok and met are borrowed and must
 * outlive the engine. Returns 0 and *out, or a negative code with err filled. */
int srv_engine_start(const core_model_t *m, const tok_tokenizer_t *tok, srv_met_t *met,
                     const srv_engine_opts_t *o, srv_engine_t **out, llm_error_t *err);

/* One line for the start-up log: compute threads, kernels, OpenBLAS core. Static storage. */
const char *srv_engine_describe(const srv_engine_t *e);

/* Queues r (takes a reference). Returns 0; LLM_EFULL when max_queue requests already wait;
 * LLM_ERANGE when a sequence of r could never fit the KV cache; LLM_EINVAL once draining.
 * Any thread. */
int srv_engine_submit(srv_engine_t *e, srv_request_t *r);

/* Marks r cancelled and wakes the engine, which frees its sequences at the next step. */
void srv_engine_cancel(srv_engine_t *e, srv_request_t *r);

/* Refuse new requests from now on (shutdown). */
void srv_engine_drain(srv_engine_t *e);
/* Number of requests queued or running. */
int srv_engine_active(srv_engine_t *e);
/* Aborts what is left (finish_reason "abort"), stops and joins the thread, frees e. */
void srv_engine_stop(srv_engine_t *e);

typedef struct srv_engine_stats_s {
    int running, waiting;
    int32_t kv_used, kv_total;
} srv_engine_stats_t;
void srv_engine_stats(srv_engine_t *e, srv_engine_stats_t *s);

#endif
