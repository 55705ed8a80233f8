/* srv_request.h: one API request as the engine sees it, and the channel its results flow back
 * through to the HTTP thread that waits on it.
 *
 * The HTTP thread builds a srv_request_t (prompts already tokenized, sampling checked, adapters
 * referenced), submits it to the engine and then waits on the channel: the engine appends each
 * choice's new text/tokens and finally marks the choice finished. Both sides lock req->mu; the
 * engine takes it once per step per request, never per layer.
 *
 * Ownership: reference counted (srv_req_ref/srv_req_unref): one reference for the HTTP side and
 * one for the engine while the request is queued or running.
 */
#ifndef SRV_REQUEST_H
#define SRV_REQUEST_H

#include <pthread.h>
#include <stdint.h>

#include "adapter.h"
#include "generate.h"
#include "sampler.h"

#define SRV_MAX_STOP 16
#define SRV_MAX_CHOICES 64

typedef struct srv_logprob_s {
    int32_t id;
    float logprob;
} srv_logprob_t;

/* One generated token, recorded only when the request asked for logprobs. */
typedef struct srv_tok_info_s {
    int32_t id;
    float logprob;
    int n_top;
    srv_logprob_t top[20];
    size_t text_end;   /* choice text length after this token (for per-token text) */
} srv_tok_info_t;

typedef struct srv_choice_s {
    /* engine → HTTP, guarded by req->mu */
    char *text;              /* emitted text (stop strings never appear in it) */
    size_t text_len, text_cap;
    int n_gen;               /* generated tokens */
    srv_tok_info_t *toks;    /* (n_gen) when logprobs were asked */
    int toks_cap;
    core_finish_t finish;    /* NONE while running */
    int finished;
    const char *finish_reason; /* "stop", "length", "abort" (shutdown/timeout) */
} srv_choice_t;

typedef struct srv_request_s {
    /* set by the HTTP thread before submit; read-only afterwards */
    char id[48];
    int is_chat;
    int stream;
    int n_prompts;             /* completions may carry several prompts */
    int32_t **prompts;         /* (n_prompts) token ids */
    int *prompt_lens;
    int n_per_prompt;          /* OpenAI n */
    int max_tokens;
    smp_params_t sampling;
    char *stop[SRV_MAX_STOP];
    int n_stop;
    int ignore_eos;
    int logprobs;              /* 0 = off; else number of top alternatives + 1 (>= 1) */
    adp_set_t adapters;        /* the references are held by the request */
    char adapter_key[256];     /* fairness queue key: names and scales ("" = base) */
    char label[128];           /* metrics label: the first adapter's name as requested */
    int metrics_adapter;       /* srv_met_adapter() slot */
    double deadline;           /* monotonic seconds; 0 = none */
    double t_arrival;          /* monotonic seconds */

    /* engine → HTTP */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n_choices;             /* n_prompts * n_per_prompt */
    srv_choice_t *choices;
    int n_done;                /* finished choices */
    int prompt_tokens;         /* usage */
    int completion_tokens;
    int error_status;          /* non-zero: the engine refused or failed the request */
    char error_msg[640];
    double t_first_token;      /* monotonic seconds; 0 until the first token */
    double t_admitted;         /* monotonic seconds; 0 while queued */
    uint64_t version;          /* bumped on every change; waiters compare */

    /* HTTP → engine */
    volatile int cancelled;    /* client went away or deadline passed */

    /* private */
    int refs;
    int eng_seqs;              /* engine thread: sequences of this request still held */
    int eng_wake;              /* engine thread: in this step's list of requests to wake */
} srv_request_t;

/* New request with n_choices choices (caller fills the public fields). Returns NULL on OOM. */
srv_request_t *srv_req_create(int n_prompts, int n_per_prompt);
void srv_req_ref(srv_request_t *r);
/* Drops a reference; the last one frees everything (adapter references are released through
 * release_adapter, which the registry provides, or plain adp_adapter_unref when NULL). */
void srv_req_unref(srv_request_t *r);
void srv_req_set_adapter_release(void (*release)(adp_adapter_t *a));

/* Engine side, with r->mu held: append text / token info to a choice and wake waiters. */
int srv_choice_append(srv_choice_t *c, const char *s, size_t n);
int srv_choice_add_tok(srv_choice_t *c, const srv_tok_info_t *t);

double srv_now(void); /* monotonic seconds */

#endif
