/* srv_http.h: the HTTP front end (libmicrohttpd, one thread per connection).
 *
 * Routes: GET /health, GET /ready, GET /metrics, GET /v1/models, POST /v1/completions,
 * POST /v1/chat/completions, POST /v1/load_lora_adapter, POST /v1/unload_lora_adapter.
 * Handlers parse and validate, hand the work to the engine and wait for it; they never run
 * model code. A streaming response is written by MHD's content-reader callback, which waits on
 * the request's channel; when the client goes away MHD frees the response and the request is
 * cancelled, which frees its KV blocks at the engine's next step.
 */
#ifndef SRV_HTTP_H
#define SRV_HTTP_H

#include "llm_error.h"
#include "srv_server.h"

typedef struct srv_http_s srv_http_t;

/* Listens on cfg->host:cfg->port. s is borrowed and must outlive the server. */
int srv_http_start(srv_server_t *s, srv_http_t **out, llm_error_t *err);
/* Stops accepting new connections (running ones continue). */
void srv_http_quiesce(srv_http_t *h);
/* Closes every connection and frees h. */
void srv_http_stop(srv_http_t *h);

#endif
