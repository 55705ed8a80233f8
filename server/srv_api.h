/* srv_api.h: OpenAI request bodies → engine requests, and engine results → OpenAI responses.
 *
 * Parsing checks every field and names the first bad one in an OpenAI error object; it takes
 * adapter references for the request (released with the request). Called on HTTP threads.
 */
#ifndef SRV_API_H
#define SRV_API_H

#include <stddef.h>

#include "srv_request.h"
#include "srv_server.h"

typedef struct srv_api_err_s {
    int status;              /* HTTP status */
    const char *type;        /* "invalid_request_error", "not_found_error", ... */
    char param[64];          /* the field, or "" */
    char code[64];           /* machine code, or "" */
    char msg[700];
} srv_api_err_t;

/* Fills e and returns status (so handlers write `return srv_api_fail(...)`). */
int srv_api_fail(srv_api_err_t *e, int status, const char *type, const char *param,
                 const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* {"error": {...}} body for e; new string, caller frees. */
char *srv_api_error_json(const srv_api_err_t *e);

typedef struct srv_api_call_s {
    srv_request_t *req;       /* one reference, owned */
    int is_chat;
    char model[256];          /* as the client named it */
    int include_usage;        /* stream_options.include_usage */
    int echo;                 /* completions: prepend the prompt */
    char **prompt_text;       /* (req->n_prompts) for echo; owned */
    long created;
} srv_api_call_t;

/* Parses a /v1/completions (is_chat 0) or /v1/chat/completions body into call. Returns 0, or
 * the HTTP status with e filled. */
int srv_api_parse(srv_server_t *s, int is_chat, const char *body, size_t len,
                  srv_api_call_t *call, srv_api_err_t *e);
void srv_api_call_deinit(srv_api_call_t *call);

/* The complete (non-streaming) response for a finished request; new string. With req->mu
 * not held (takes it). */
char *srv_api_response(srv_server_t *s, srv_api_call_t *call);

/* Streaming: appends to *buf (growing it) the SSE events for what happened since *sent.
 * sent is (n_choices) per-choice state owned by the caller (zeroed at start); returns 1 when
 * the stream is complete (all choices finished, usage and [DONE] written). With req->mu held. */
typedef struct srv_api_sent_s {
    size_t text;      /* bytes of choice text already sent */
    int toks;         /* tokens already sent (logprobs) */
    int started;      /* chat: role delta sent */
    int finished;     /* finish_reason chunk sent */
} srv_api_sent_t;
int srv_api_stream_events(srv_server_t *s, srv_api_call_t *call, srv_api_sent_t *sent,
                          char **buf, size_t *len, size_t *cap);

#endif
