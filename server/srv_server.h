/* srv_server.h: the state one `loramux serve` process shares between its HTTP threads.
 *
 * Filled by srv_serve.c at start-up: the HTTP server starts first (so /health answers at
 * once), then the model, tokenizer, chat template, adapters and engine are loaded and `ready`
 * is set. Handlers must check `ready` before touching anything below it.
 */
#ifndef SRV_SERVER_H
#define SRV_SERVER_H

#include <time.h>

#include "model.h"
#include "srv_chat.h"
#include "srv_config.h"
#include "srv_engine.h"
#include "srv_metrics.h"
#include "srv_registry.h"
#include "tokenizer.h"

typedef struct srv_server_s {
    const srv_config_t *cfg;
    srv_met_t *met;
    char **api_keys;          /* (n_keys) accepted Bearer keys; none = no auth */
    int n_keys;
    time_t created;
    /* valid once ready */
    core_model_t *model;
    tok_tokenizer_t *tok;
    srv_chat_t *chat;         /* NULL when the model has no chat template */
    char chat_error[512];     /* why chat is unavailable */
    srv_reg_t *reg;
    srv_store_t *store;       /* the registry's durable side (uploads stream into it) */
    srv_engine_t *eng;
    const char *model_name;   /* the base's id in "model" */
    volatile int ready;       /* model loaded and warmed up */
    volatile int draining;    /* SIGTERM received */
} srv_server_t;

#endif
