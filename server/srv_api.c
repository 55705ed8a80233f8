/* srv_api.c: OpenAI completions / chat completions, request parsing and response shapes. */
#include "srv_api.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- errors ---- */

int srv_api_fail(srv_api_err_t *e, int status, const char *type, const char *param,
                 const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->status = status;
    e->type = type;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    return status;
}

char *srv_api_error_json(const srv_api_err_t *e) {
    cJSON *root = cJSON_CreateObject(), *o = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(o, "message", e->msg);
    cJSON_AddStringToObject(o, "type", e->type ? e->type : "server_error");
    if (e->param[0]) cJSON_AddStringToObject(o, "param", e->param);
    else cJSON_AddNullToObject(o, "param");
    if (e->code[0]) cJSON_AddStringToObject(o, "code", e->code);
    else cJSON_AddNullToObject(o, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

#define BAD(param, ...) srv_api_fail(e, 400, "invalid_request_error", param, NULL, __VA_ARGS__)

/* ---- field helpers ---- */

static const cJSON *field(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static int get_number(const cJSON *o, const char *k, double lo, double hi, double *out,
                      srv_api_err_t *e) {
    const cJSON *v = field(o, k);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return BAD(k, "'%s' must be a number", k);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return BAD(k, "'%s' must be between %g and %g, got %g", k, lo, hi, v->valuedouble);
    *out = v->valuedouble;
    return 0;
}

static int get_int(const cJSON *o, const char *k, double lo, double hi, long long *out,
                   srv_api_err_t *e) {
    const cJSON *v = field(o, k);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return BAD(k, "'%s' must be an integer", k);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return BAD(k, "'%s' must be between %.0f and %.0f, got %.0f", k, lo, hi, v->valuedouble);
    *out = (long long)v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *o, const char *k, int *out, srv_api_err_t *e) {
    const cJSON *v = field(o, k);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return BAD(k, "'%s' must be true or false", k);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* Fields each endpoint understands; anything else is refused by name rather than ignored. */
static const char *const k_common[] = {
    "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "stop", "seed", "n", "stream", "stream_options",
    "logprobs", "ignore_eos", "adapters", "user", NULL};
static const char *const k_completions[] = {"prompt", "echo", NULL};
static const char *const k_chat[] = {"messages", "top_logprobs", "max_completion_tokens", NULL};

static int known(const char *const *l, const char *k) {
    for (int i = 0; l[i]; i++)
        if (!strcmp(l[i], k)) return 1;
    return 0;
}

/* ---- prompts ---- */

static int set_prompt_ids(srv_server_t *s, srv_request_t *r, int i, const int32_t *ids, size_t n,
                          srv_api_err_t *e) {
    r->prompts[i] = malloc((n ? n : 1) * sizeof(int32_t));
    if (!r->prompts[i]) return srv_api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    memcpy(r->prompts[i], ids, n * sizeof(int32_t));
    r->prompt_lens[i] = (int)n;
    if (n == 0) { /* empty prompt: start from BOS, as `generate --prompt ""` */
        int32_t bos = tok_bos_id(s->tok) >= 0 ? tok_bos_id(s->tok) : s->model->cfg.bos_id;
        if (bos < 0) return BAD("prompt", "the prompt is empty and the model has no BOS token");
        r->prompts[i][0] = bos;
        r->prompt_lens[i] = 1;
    }
    return 0;
}

static int encode_text(srv_server_t *s, srv_request_t *r, int i, const char *text,
                       int add_special, const char *param, srv_api_err_t *e) {
    llm_error_t err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    if (tok_encode(s->tok, text, strlen(text), add_special, 1, &ids, &n, &err))
        return BAD(param, "'%s' cannot be tokenized: %s", param, err.msg);
    int rc = set_prompt_ids(s, r, i, ids, n, e);
    free(ids);
    return rc;
}

static int parse_token_list(srv_server_t *s, const cJSON *arr, srv_request_t *r, int i,
                            srv_api_err_t *e) {
    int n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc(((size_t)n + 1) * sizeof(int32_t));
    if (!ids) return srv_api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
    int k = 0;
    for (const cJSON *t = arr->child; t; t = t->next, k++) {
        if (!cJSON_IsNumber(t) || t->valuedouble != floor(t->valuedouble) || t->valuedouble < 0 ||
            t->valuedouble >= s->model->cfg.vocab_size) {
            free(ids);
            return BAD("prompt", "'prompt' token ids must be integers in [0, %d)",
                       s->model->cfg.vocab_size);
        }
        ids[k] = (int32_t)t->valuedouble;
    }
    int rc = set_prompt_ids(s, r, i, ids, (size_t)n, e);
    free(ids);
    return rc;
}

/* prompt: string | [string, ...] | [int, ...] | [[int, ...], ...] */
static int count_prompts(const cJSON *p, srv_api_err_t *e) {
    if (!p) return BAD("prompt", "'prompt' is required");
    if (cJSON_IsString(p)) return -1;
    if (!cJSON_IsArray(p) || !p->child)
        return BAD("prompt", "'prompt' must be a string, a list of strings, a list of token ids "
                             "or a list of lists of token ids");
    if (cJSON_IsNumber(p->child)) return -1;
    int n = cJSON_GetArraySize(p);
    for (const cJSON *c = p->child; c; c = c->next)
        if (!cJSON_IsString(c) && !cJSON_IsArray(c))
            return BAD("prompt", "'prompt' list entries must all be strings or all be lists of "
                                 "token ids");
    return -n - 1000; /* encoded so that callers tell "one" from "n" without another out-param */
}

/* ---- chat ---- */

static int render_chat(srv_server_t *s, const cJSON *msgs, srv_request_t *r, srv_api_err_t *e) {
    if (!msgs || !cJSON_IsArray(msgs) || !msgs->child)
        return BAD("messages", "'messages' must be a non-empty list");
    if (!s->chat)
        return BAD("messages", "the model has no usable chat template (%s); use /v1/completions",
                   s->chat_error);
    int n = cJSON_GetArraySize(msgs);
    srv_chat_msg_t *m = calloc((size_t)n, sizeof *m);
    char **owned = calloc((size_t)n, sizeof *owned);
    int rc = 0, i = 0;
    if (!m || !owned) {
        rc = srv_api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    for (const cJSON *it = msgs->child; it; it = it->next, i++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        char param[48];
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!cJSON_IsObject(it) || !cJSON_IsString(role)) {
            rc = BAD(param, "'%s' must be a string", param);
            goto done;
        }
        if (strcmp(role->valuestring, "system") && strcmp(role->valuestring, "user") &&
            strcmp(role->valuestring, "assistant") && strcmp(role->valuestring, "developer")) {
            rc = BAD(param, "'%s' must be system, developer, user or assistant (got '%s')",
                     param, role->valuestring);
            goto done;
        }
        m[i].role = !strcmp(role->valuestring, "developer") ? "system" : role->valuestring;
        snprintf(param, sizeof param, "messages[%d].content", i);
        if (cJSON_IsString(content)) {
            m[i].content = content->valuestring;
        } else if (cJSON_IsArray(content)) { /* [{"type": "text", "text": ...}, ...] */
            size_t len = 0;
            for (const cJSON *p = content->child; p; p = p->next) {
                const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
                const cJSON *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
                if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx)) {
                    rc = BAD(param, "'%s' parts must be {\"type\": \"text\", \"text\": ...}; "
                                    "other content types are not supported", param);
                    goto done;
                }
                len += strlen(tx->valuestring);
            }
            owned[i] = calloc(len + 1, 1);
            if (!owned[i]) {
                rc = srv_api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
                goto done;
            }
            for (const cJSON *p = content->child; p; p = p->next)
                strcat(owned[i], cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring);
            m[i].content = owned[i];
        } else {
            rc = BAD(param, "'%s' must be a string or a list of text parts", param);
            goto done;
        }
    }
    char *text = NULL;
    llm_error_t err = {0};
    if (srv_chat_render(s->chat, m, n, 1, &text, &err)) {
        rc = BAD("messages", "chat template: %s", err.msg);
        goto done;
    }
    /* Templates write BOS and other special tokens themselves (HF apply_chat_template
     * tokenizes with add_special_tokens=False). */
    rc = encode_text(s, r, 0, text, 0, "messages", e);
    free(text);
done:
    for (int k = 0; owned && k < n; k++) free(owned[k]);
    free(owned);
    free(m);
    return rc;
}

/* ---- adapters ---- */

static int add_adapter(srv_server_t *s, srv_request_t *r, const char *name, float w,
                       const char *param, srv_api_err_t *e) {
    if (r->adapters.n == ADP_SET_MAX)
        return BAD(param, "at most %d adapters may be combined", ADP_SET_MAX);
    llm_error_t err = {0};
    adp_adapter_t *a = srv_reg_acquire(s->reg, name, &err); /* loads it if not resident */
    if (!a && err.code == LLM_ENOTFOUND)
        return srv_api_fail(e, 404, "not_found_error", param, "model_not_found",
                            "The model '%s' does not exist.", name);
    if (!a)
        return srv_api_fail(e, 500, "server_error", param, NULL, "adapter '%s' cannot be loaded: %s",
                            name, err.msg);
    if (r->adapters.n == 0) snprintf(r->label, sizeof r->label, "%s", name);
    r->adapters.a[r->adapters.n] = a;
    r->adapters.w[r->adapters.n++] = w;
    return 0;
}

static int parse_adapters(srv_server_t *s, const cJSON *root, srv_request_t *r,
                          srv_api_err_t *e) {
    const char *model = cJSON_GetObjectItemCaseSensitive(root, "model")->valuestring;
    int rc;
    if (strcmp(model, s->model_name) != 0 && (rc = add_adapter(s, r, model, 1.0f, "model", e)))
        return rc;
    const cJSON *list = field(root, "adapters");
    if (list) {
        if (!cJSON_IsArray(list)) return BAD("adapters", "'adapters' must be a list");
        int i = 0;
        for (const cJSON *it = list->child; it; it = it->next, i++) {
            char param[48];
            snprintf(param, sizeof param, "adapters[%d].name", i);
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
            if (!cJSON_IsObject(it)) return BAD("adapters", "'adapters[%d]' must be an object", i);
            for (const cJSON *f = it->child; f; f = f->next)
                if (strcmp(f->string, "name") && strcmp(f->string, "scale"))
                    return BAD("adapters", "'adapters[%d].%s' is not supported (name, scale)", i,
                               f->string);
            if (!cJSON_IsString(nm)) return BAD(param, "'%s' must be a string", param);
            double sc = 1.0;
            const cJSON *scv = field(it, "scale");
            if (scv && (!cJSON_IsNumber(scv) || !isfinite(scv->valuedouble)))
                return BAD("adapters", "'adapters[%d].scale' must be a number", i);
            if (scv) sc = scv->valuedouble;
            if ((rc = add_adapter(s, r, nm->valuestring, (float)sc, param, e))) return rc;
        }
    }
    llm_error_t err = {0};
    if (adp_set_validate(&r->adapters, &err)) return BAD("adapters", "%s", err.msg);
    /* the fairness / metrics key: adapter names and scales */
    size_t off = 0;
    for (int i = 0; i < r->adapters.n && off < sizeof r->adapter_key; i++)
        off += (size_t)snprintf(r->adapter_key + off, sizeof r->adapter_key - off, "%s%s*%g",
                                i ? "+" : "", r->adapters.a[i]->name, r->adapters.w[i]);
    return 0;
}

/* ---- public: parse ---- */

int srv_api_parse(srv_server_t *s, int is_chat, const char *body, size_t len,
                  srv_api_call_t *call, srv_api_err_t *e) {
    memset(call, 0, sizeof *call);
    call->is_chat = is_chat;
    call->created = (long)time(NULL);
    cJSON *root = cJSON_ParseWithLength(body, len);
    int rc = 0;
    if (!root || !cJSON_IsObject(root)) {
        rc = BAD(NULL, "the body is not a JSON object");
        goto done;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!known(k_common, it->string) &&
            !known(is_chat ? k_chat : k_completions, it->string)) {
            rc = BAD(it->string, "'%s' is not supported by this server", it->string);
            goto done;
        }
    }
    const cJSON *model = field(root, "model");
    if (!cJSON_IsString(model)) {
        rc = BAD("model", "'model' is required and must be a string");
        goto done;
    }
    snprintf(call->model, sizeof call->model, "%s", model->valuestring);

    /* prompts and n */
    long long n = 1;
    if ((rc = get_int(root, "n", 1, SRV_MAX_CHOICES, &n, e))) goto done;
    int n_prompts = 1;
    const cJSON *prompt = is_chat ? NULL : field(root, "prompt");
    if (!is_chat) {
        int c = count_prompts(prompt, e);
        if (c >= 400) {
            rc = c;
            goto done;
        }
        n_prompts = c == -1 ? 1 : -(c + 1000);
    }
    if (n_prompts * n > SRV_MAX_CHOICES) {
        rc = BAD("n", "prompts x n must be at most %d", SRV_MAX_CHOICES);
        goto done;
    }
    srv_request_t *r = call->req = srv_req_create(n_prompts, (int)n);
    call->prompt_text = calloc((size_t)n_prompts, sizeof(char *));
    if (!r || !call->prompt_text) {
        rc = srv_api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        goto done;
    }
    if ((rc = parse_adapters(s, root, r, e))) goto done;
    if (is_chat) {
        if ((rc = render_chat(s, field(root, "messages"), r, e))) goto done;
    } else if (cJSON_IsString(prompt)) {
        call->prompt_text[0] = strdup(prompt->valuestring);
        if ((rc = encode_text(s, r, 0, prompt->valuestring, 1, "prompt", e))) goto done;
    } else if (cJSON_IsNumber(prompt->child)) {
        if ((rc = parse_token_list(s, prompt, r, 0, e))) goto done;
    } else {
        int i = 0;
        for (const cJSON *p = prompt->child; p; p = p->next, i++) {
            if (cJSON_IsString(p)) {
                call->prompt_text[i] = strdup(p->valuestring);
                rc = encode_text(s, r, i, p->valuestring, 1, "prompt", e);
            } else {
                rc = parse_token_list(s, p, r, i, e);
            }
            if (rc) goto done;
        }
    }

    /* limits */
    const int ctx = s->model->cfg.max_pos;
    const int max_prompt = s->cfg->max_prompt_tokens > 0 && s->cfg->max_prompt_tokens < ctx
                               ? s->cfg->max_prompt_tokens : ctx - 1;
    const int max_total = s->cfg->max_total_tokens > 0 && s->cfg->max_total_tokens < ctx
                              ? s->cfg->max_total_tokens : ctx;
    int longest = 0;
    for (int i = 0; i < n_prompts; i++) {
        if (r->prompt_lens[i] > longest) longest = r->prompt_lens[i];
        r->prompt_tokens += r->prompt_lens[i];
    }
    if (longest > max_prompt) {
        rc = BAD(is_chat ? "messages" : "prompt",
                 "the prompt has %d tokens; the limit is %d", longest, max_prompt);
        goto done;
    }
    long long max_tokens = -1;
    if ((rc = get_int(root, "max_tokens", 1, 1e9, &max_tokens, e))) goto done;
    if (is_chat && (rc = get_int(root, "max_completion_tokens", 1, 1e9, &max_tokens, e)))
        goto done;
    if (max_tokens < 0) {
        max_tokens = s->cfg->max_tokens_default;
        if (longest + max_tokens > max_total) max_tokens = max_total - longest;
    } else if (longest + max_tokens > max_total) {
        rc = BAD("max_tokens", "prompt (%d tokens) + max_tokens (%lld) exceed the limit of %d",
                 longest, max_tokens, max_total);
        goto done;
    }
    r->max_tokens = (int)max_tokens;

    /* sampling */
    smp_params_t sp = smp_params_default();
    double v;
    long long iv;
    v = 1.0;
    if ((rc = get_number(root, "temperature", 0, 2, &v, e))) goto done;
    sp.temperature = (float)v;
    v = 1.0;
    if ((rc = get_number(root, "top_p", 1e-9, 1, &v, e))) goto done;
    sp.top_p = (float)v;
    iv = 0;
    if ((rc = get_int(root, "top_k", -1, 1e9, &iv, e))) goto done;
    sp.top_k = iv < 0 ? 0 : (int)iv;
    v = 0;
    if ((rc = get_number(root, "min_p", 0, 1, &v, e))) goto done;
    sp.min_p = (float)v;
    v = 0;
    if ((rc = get_number(root, "presence_penalty", -2, 2, &v, e))) goto done;
    sp.presence_penalty = (float)v;
    v = 0;
    if ((rc = get_number(root, "frequency_penalty", -2, 2, &v, e))) goto done;
    sp.frequency_penalty = (float)v;
    v = 1;
    if ((rc = get_number(root, "repetition_penalty", 1e-3, 100, &v, e))) goto done;
    sp.repetition_penalty = (float)v;
    if (field(root, "seed")) {
        if ((rc = get_int(root, "seed", -9.2e18, 9.2e18, &iv, e))) goto done;
        sp.seed = (uint64_t)iv;
        sp.has_seed = 1;
    }
    r->sampling = sp;
    if ((rc = get_bool(root, "ignore_eos", &r->ignore_eos, e))) goto done;
    if ((rc = get_bool(root, "stream", &r->stream, e))) goto done;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) {
            rc = BAD("stream_options", "'stream_options' must be an object");
            goto done;
        }
        for (const cJSON *f = so->child; f; f = f->next) {
            if (strcmp(f->string, "include_usage")) {
                rc = BAD("stream_options", "'stream_options.%s' is not supported", f->string);
                goto done;
            }
        }
        if ((rc = get_bool(so, "include_usage", &call->include_usage, e))) goto done;
    }
    if (!is_chat && (rc = get_bool(root, "echo", &call->echo, e))) goto done;

    /* logprobs: completions take an int (top alternatives); chat a bool + top_logprobs */
    if (is_chat) {
        int lp = 0;
        long long top = 0;
        if ((rc = get_bool(root, "logprobs", &lp, e)) ||
            (rc = get_int(root, "top_logprobs", 0, 20, &top, e)))
            goto done;
        if (top > 0 && !lp) {
            rc = BAD("top_logprobs", "'top_logprobs' needs 'logprobs': true");
            goto done;
        }
        r->logprobs = lp ? (int)top + 1 : 0;
    } else if (field(root, "logprobs")) {
        long long lp = 0;
        if ((rc = get_int(root, "logprobs", 0, 20, &lp, e))) goto done;
        r->logprobs = (int)lp + 1;
    }

    /* stop */
    const cJSON *stop = field(root, "stop");
    if (stop) {
        if (cJSON_IsString(stop)) {
            if (*stop->valuestring) r->stop[r->n_stop++] = strdup(stop->valuestring);
        } else if (cJSON_IsArray(stop)) {
            if (cJSON_GetArraySize(stop) > SRV_MAX_STOP) {
                rc = BAD("stop", "'stop' may hold at most %d strings", SRV_MAX_STOP);
                goto done;
            }
            for (const cJSON *it = stop->child; it; it = it->next) {
                if (!cJSON_IsString(it)) {
                    rc = BAD("stop", "'stop' must be a string or a list of strings");
                    goto done;
                }
                if (*it->valuestring) r->stop[r->n_stop++] = strdup(it->valuestring);
            }
        } else {
            rc = BAD("stop", "'stop' must be a string or a list of strings");
            goto done;
        }
    }
    snprintf(r->id, sizeof r->id, "%s-%08x%08x", is_chat ? "chatcmpl" : "cmpl",
             (unsigned)rand(), (unsigned)rand());
    r->is_chat = is_chat;
    if (s->cfg->request_timeout > 0) r->deadline = r->t_arrival + s->cfg->request_timeout;
done:
    cJSON_Delete(root);
    return rc;
}

void srv_api_call_deinit(srv_api_call_t *call) {
    if (call->prompt_text && call->req)
        for (int i = 0; i < call->req->n_prompts; i++) free(call->prompt_text[i]);
    free(call->prompt_text);
    srv_req_unref(call->req);
    memset(call, 0, sizeof *call);
}

/* ---- responses ---- */

/* A token's text as it reads inside running text (a SentencePiece "▁the" is " the"). */
static char *piece_text(srv_server_t *s, int32_t id) {
    size_t cap = tok_max_piece_bytes(s->tok) + 16;
    char *t = malloc(cap * 2);
    if (!t) return strdup("");
    tok_stream_t st;
    tok_stream_init(&st, 0);
    tok_stream_continue(&st);
    int w = tok_stream_push(s->tok, &st, id, t, cap);
    if (w < 0) w = 0;
    int f = tok_stream_flush(s->tok, &st, t + w, cap);
    t[w + (f > 0 ? f : 0)] = '\0';
    return t;
}

/* The text a chosen token contributed to the choice: the bytes between the previous token's
 * end and its own (clamped to the text emitted, which a stop string may have cut). */
static char *chosen_text(const srv_choice_t *c, int i) {
    size_t a = i > 0 ? c->toks[i - 1].text_end : 0, b = c->toks[i].text_end;
    if (b > c->text_len) b = c->text_len;
    if (a > b) a = b;
    char *t = malloc(b - a + 1);
    if (!t) return strdup("");
    memcpy(t, c->text + a, b - a);
    t[b - a] = '\0';
    return t;
}

static cJSON *bytes_array(const char *t) {
    cJSON *a = cJSON_CreateArray();
    for (const unsigned char *p = (const unsigned char *)t; *p; p++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(*p));
    return a;
}

/* Logprobs of tokens [from, to) of a choice, in the endpoint's shape. */
static cJSON *logprobs_json(srv_server_t *s, const srv_api_call_t *call, const srv_choice_t *c,
                            int from, int to, size_t text_base) {
    if (!call->req->logprobs) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    if (call->is_chat) {
        cJSON *content = cJSON_AddArrayToObject(o, "content");
        for (int i = from; i < to; i++) {
            const srv_tok_info_t *t = &c->toks[i];
            cJSON *it = cJSON_CreateObject();
            char *pt = chosen_text(c, i);
            cJSON_AddStringToObject(it, "token", pt);
            cJSON_AddNumberToObject(it, "logprob", t->logprob);
            cJSON_AddItemToObject(it, "bytes", bytes_array(pt));
            free(pt);
            cJSON *top = cJSON_AddArrayToObject(it, "top_logprobs");
            for (int k = 0; k < t->n_top; k++) {
                cJSON *tk = cJSON_CreateObject();
                char *p2 = piece_text(s, t->top[k].id);
                cJSON_AddStringToObject(tk, "token", p2);
                cJSON_AddNumberToObject(tk, "logprob", t->top[k].logprob);
                cJSON_AddItemToObject(tk, "bytes", bytes_array(p2));
                free(p2);
                cJSON_AddItemToArray(top, tk);
            }
            cJSON_AddItemToArray(content, it);
        }
    } else {
        cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
        cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
        cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
        cJSON *offs = cJSON_AddArrayToObject(o, "text_offset");
        size_t off = text_base;
        for (int i = from; i < to; i++) {
            const srv_tok_info_t *t = &c->toks[i];
            char *pt = chosen_text(c, i);
            cJSON_AddItemToArray(toks, cJSON_CreateString(pt));
            free(pt);
            cJSON_AddItemToArray(lps, cJSON_CreateNumber(t->logprob));
            cJSON *top = cJSON_CreateObject();
            for (int k = 0; k < t->n_top; k++) {
                char *p2 = piece_text(s, t->top[k].id);
                if (!cJSON_GetObjectItemCaseSensitive(top, p2))
                    cJSON_AddNumberToObject(top, p2, t->top[k].logprob);
                free(p2);
            }
            cJSON_AddItemToArray(tops, top);
            cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
            off = text_base + t->text_end;
        }
    }
    return o;
}

static void add_usage(cJSON *o, const srv_request_t *r) {
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", r->prompt_tokens); /* once per prompt, as OpenAI */
    cJSON_AddNumberToObject(u, "completion_tokens", r->completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", r->prompt_tokens + r->completion_tokens);
}

static const char *reason_of(const srv_choice_t *c) {
    return c->finish_reason ? c->finish_reason : "stop";
}

char *srv_api_response(srv_server_t *s, srv_api_call_t *call) {
    srv_request_t *r = call->req;
    pthread_mutex_lock(&r->mu);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "object", call->is_chat ? "chat.completion" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)call->created);
    cJSON_AddStringToObject(o, "model", call->model);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; i < r->n_choices; i++) {
        const srv_choice_t *c = &r->choices[i];
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddNumberToObject(ch, "index", i);
        if (call->is_chat) {
            cJSON *msg = cJSON_AddObjectToObject(ch, "message");
            cJSON_AddStringToObject(msg, "role", "assistant");
            cJSON_AddStringToObject(msg, "content", c->text ? c->text : "");
            cJSON_AddItemToObject(ch, "logprobs", logprobs_json(s, call, c, 0, c->n_gen, 0));
        } else {
            const char *pt = call->echo ? call->prompt_text[i / r->n_per_prompt] : NULL;
            char *echo_ids = NULL;
            if (call->echo && !pt) {
                size_t n;
                tok_decode(s->tok, r->prompts[i / r->n_per_prompt],
                           (size_t)r->prompt_lens[i / r->n_per_prompt], 1, &echo_ids, &n, NULL);
                pt = echo_ids;
            }
            size_t plen = pt ? strlen(pt) : 0;
            char *text = malloc(plen + c->text_len + 1);
            if (text) {
                if (plen) memcpy(text, pt, plen);
                if (c->text_len) memcpy(text + plen, c->text, c->text_len);
                text[plen + c->text_len] = '\0';
                cJSON_AddStringToObject(ch, "text", text);
                free(text);
            }
            free(echo_ids);
            cJSON_AddItemToObject(ch, "logprobs", logprobs_json(s, call, c, 0, c->n_gen, plen));
        }
        cJSON_AddStringToObject(ch, "finish_reason", reason_of(c));
        cJSON_AddItemToArray(choices, ch);
    }
    add_usage(o, r);
    pthread_mutex_unlock(&r->mu);
    char *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

static int buf_add(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap * 2 : 1024;
        while (c < *len + n + 1) c *= 2;
        char *nb = realloc(*buf, c);
        if (!nb) return -1;
        *buf = nb;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

static void emit_event(cJSON *o, char **buf, size_t *len, size_t *cap) {
    char *js = cJSON_PrintUnformatted(o);
    if (js) {
        buf_add(buf, len, cap, "data: ", 6);
        buf_add(buf, len, cap, js, strlen(js));
        buf_add(buf, len, cap, "\n\n", 2);
        free(js);
    }
    cJSON_Delete(o);
}

static cJSON *chunk_head(const srv_api_call_t *call) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", call->req->id);
    cJSON_AddStringToObject(o, "object",
                            call->is_chat ? "chat.completion.chunk" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)call->created);
    cJSON_AddStringToObject(o, "model", call->model);
    return o;
}

int srv_api_stream_events(srv_server_t *s, srv_api_call_t *call, srv_api_sent_t *sent,
                          char **buf, size_t *len, size_t *cap) {
    srv_request_t *r = call->req;
    int all_done = 1;
    for (int i = 0; i < r->n_choices; i++) {
        const srv_choice_t *c = &r->choices[i];
        srv_api_sent_t *st = &sent[i];
        int has_text = c->text_len > st->text;
        int echo_now = !call->is_chat && call->echo && !st->started;
        if (call->is_chat && !st->started) { /* first chunk: the role */
            cJSON *o = chunk_head(call);
            cJSON *ch = cJSON_CreateObject();
            cJSON_AddNumberToObject(ch, "index", i);
            cJSON *d = cJSON_AddObjectToObject(ch, "delta");
            cJSON_AddStringToObject(d, "role", "assistant");
            cJSON_AddStringToObject(d, "content", "");
            cJSON_AddNullToObject(ch, "logprobs");
            cJSON_AddNullToObject(ch, "finish_reason");
            cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), ch);
            emit_event(o, buf, len, cap);
            st->started = 1;
        }
        if (echo_now) {
            const char *pt = call->prompt_text[i / r->n_per_prompt];
            char *dec = NULL;
            size_t n;
            if (!pt) {
                tok_decode(s->tok, r->prompts[i / r->n_per_prompt],
                           (size_t)r->prompt_lens[i / r->n_per_prompt], 1, &dec, &n, NULL);
                pt = dec;
            }
            cJSON *o = chunk_head(call);
            cJSON *ch = cJSON_CreateObject();
            cJSON_AddNumberToObject(ch, "index", i);
            cJSON_AddStringToObject(ch, "text", pt ? pt : "");
            cJSON_AddNullToObject(ch, "logprobs");
            cJSON_AddNullToObject(ch, "finish_reason");
            cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), ch);
            emit_event(o, buf, len, cap);
            free(dec);
            st->started = 1;
        }
        st->started = 1;
        if (has_text) {
            /* only whole tokens' text with logprobs; text is UTF-8 complete by construction */
            size_t upto = c->text_len;
            int tok_upto = c->n_gen;
            if (r->logprobs && c->toks) {
                while (tok_upto > st->toks && c->toks[tok_upto - 1].text_end > c->text_len)
                    tok_upto--;
            }
            char *piece = malloc(upto - st->text + 1);
            if (piece) {
                memcpy(piece, c->text + st->text, upto - st->text);
                piece[upto - st->text] = '\0';
                cJSON *o = chunk_head(call);
                cJSON *ch = cJSON_CreateObject();
                cJSON_AddNumberToObject(ch, "index", i);
                if (call->is_chat) {
                    cJSON_AddStringToObject(cJSON_AddObjectToObject(ch, "delta"), "content",
                                            piece);
                } else {
                    cJSON_AddStringToObject(ch, "text", piece);
                }
                cJSON_AddItemToObject(ch, "logprobs",
                                      logprobs_json(s, call, c, st->toks, tok_upto, st->text));
                cJSON_AddNullToObject(ch, "finish_reason");
                cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), ch);
                emit_event(o, buf, len, cap);
                free(piece);
            }
            st->text = upto;
            st->toks = tok_upto;
        }
        if (c->finished && !st->finished) {
            cJSON *o = chunk_head(call);
            cJSON *ch = cJSON_CreateObject();
            cJSON_AddNumberToObject(ch, "index", i);
            if (call->is_chat) cJSON_AddObjectToObject(ch, "delta");
            else cJSON_AddStringToObject(ch, "text", "");
            cJSON_AddNullToObject(ch, "logprobs");
            cJSON_AddStringToObject(ch, "finish_reason", reason_of(c));
            cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), ch);
            emit_event(o, buf, len, cap);
            st->finished = 1;
        }
        if (!st->finished) all_done = 0;
    }
    if (all_done) {
        if (call->include_usage) {
            cJSON *o = chunk_head(call);
            cJSON_AddArrayToObject(o, "choices");
            add_usage(o, r);
            emit_event(o, buf, len, cap);
        }
        buf_add(buf, len, cap, "data: [DONE]\n\n", 14);
    }
    return all_done;
}
