/* srv_http.c: routes, auth, bodies, streaming (see srv_http.h). */
#include "srv_http.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "srv_api.h"

#if MHD_VERSION < 0x00097002
typedef int mhd_result_t;
#else
typedef enum MHD_Result mhd_result_t;
#endif

struct srv_http_s {
    struct MHD_Daemon *d;
    srv_server_t *s;
};

/* Per-connection state, kept in MHD's con_cls. */
typedef struct conn_s {
    srv_server_t *s;
    char *body;
    size_t len, cap;
    int too_large;
    int status;            /* HTTP status sent (metrics) */
    /* streaming */
    srv_api_call_t call;
    int has_call;
    srv_api_sent_t *sent;
    char *sbuf;
    size_t slen, scap, soff;
    uint64_t seen;         /* request version already turned into events */
    int stream_done;
    int recorded;          /* metrics recorded */
    int is_api;            /* a /v1/ request (probes and scrapes are not counted) */
    int refs;              /* MHD's completion callback, plus the streaming response */
    /* adapter upload (multipart, streamed into the store) */
    struct MHD_PostProcessor *pp;
    srv_store_upload_t *up;
    char up_name[SRV_STORE_NAME_MAX + 2];
    size_t up_name_len;
    char up_bad[64];       /* first unexpected part name */
    int up_err;            /* first store write error */
} conn_t;

/* cn is shared by MHD's completion callback and, for a stream, the response's free callback,
 * which MHD may run in either order: the last one frees it. */
static void conn_release(conn_t *cn) {
    if (__atomic_sub_fetch(&cn->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
    if (cn->pp) MHD_destroy_post_processor(cn->pp);
    srv_store_abort(cn->up);
    if (cn->has_call) srv_api_call_deinit(&cn->call);
    free(cn->sent);
    free(cn->sbuf);
    free(cn->body);
    free(cn);
}

/* ---- responses ---- */

static mhd_result_t send_text(struct MHD_Connection *c, conn_t *cn, int status, const char *ctype,
                              char *body /* taken */) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body,
                                                             MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", ctype);
    if (cn) cn->status = status;
    mhd_result_t ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static mhd_result_t send_json(struct MHD_Connection *c, conn_t *cn, int status, char *body) {
    if (!body) body = strdup("{}");
    return send_text(c, cn, status, "application/json", body);
}

static mhd_result_t send_error(struct MHD_Connection *c, conn_t *cn, const srv_api_err_t *e) {
    return send_json(c, cn, e->status, srv_api_error_json(e));
}

static mhd_result_t fail(struct MHD_Connection *c, conn_t *cn, int status, const char *type,
                         const char *param, const char *code, const char *msg) {
    srv_api_err_t e;
    srv_api_fail(&e, status, type, param, code, "%s", msg);
    return send_error(c, cn, &e);
}

/* ---- auth ---- */

static int key_equal(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

static int authorized(srv_server_t *s, struct MHD_Connection *c) {
    if (s->n_keys == 0) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    int ok = 0;
    for (int i = 0; i < s->n_keys; i++) ok |= key_equal(h + 7, s->api_keys[i]);
    return ok;
}

/* ---- metrics for a finished request ---- */

/* The metrics label of a request that failed before it had adapters: the adapter its
 * "model" names when the registry knows it, the base, or "other" (unknown names must not
 * claim label slots). */
static int label_of_model(srv_server_t *s, const char *model) {
    if (!s->ready || !model[0] || !strcmp(model, s->model_name)) return SRV_MET_BASE;
    srv_reg_desc_t d;
    if (srv_reg_get(s->reg, model, &d) != 0) return SRV_MET_OTHER;
    return srv_met_adapter(s->met, model);
}

static void record(conn_t *cn, int status) {
    srv_server_t *s = cn->s;
    if (cn->recorded || !s->met || !cn->is_api) return;
    cn->recorded = 1;
    if (!cn->has_call || cn->call.req->metrics_adapter < 0) {
        int label = cn->has_call ? label_of_model(s, cn->call.model) : SRV_MET_BASE;
        srv_met_request_done(s->met, label, status, 0, 0, -1, -1, -1);
        return;
    }
    srv_request_t *r = cn->call.req;
    pthread_mutex_lock(&r->mu);
    double now = srv_now();
    double queue = r->t_admitted > 0 ? r->t_admitted - r->t_arrival : now - r->t_arrival;
    double ttft = r->t_first_token > 0 ? r->t_first_token - r->t_arrival : -1;
    srv_met_request_done(s->met, r->metrics_adapter, status, r->prompt_tokens,
                         r->completion_tokens, now - r->t_arrival, queue, ttft);
    pthread_mutex_unlock(&r->mu);
}

/* ---- simple routes ---- */

static mhd_result_t do_models(struct MHD_Connection *c, conn_t *cn) {
    srv_server_t *s = cn->s;
    cJSON *o = cJSON_CreateObject(), *data;
    cJSON_AddStringToObject(o, "object", "list");
    data = cJSON_AddArrayToObject(o, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", s->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)s->created);
    cJSON_AddStringToObject(m, "owned_by", "loramux");
    cJSON_AddStringToObject(m, "root", s->cfg->model);
    cJSON_AddNullToObject(m, "parent");
    cJSON_AddNumberToObject(m, "max_model_len", s->model->cfg.max_pos);
    cJSON_AddItemToArray(data, m);
    size_t n = 0, total = 0, names = 0;
    int n_res;
    size_t res_bytes;
    srv_reg_desc_t *list = NULL;
    srv_reg_stats(s->reg, &n_res, &res_bytes, &names);
    srv_reg_list(s->reg, 0, names + 1, &list, &n, &total);
    for (size_t i = 0; list && i < n; i++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddStringToObject(a, "id", list[i].st.name);
        cJSON_AddStringToObject(a, "object", "model");
        cJSON_AddNumberToObject(a, "created", (double)list[i].st.created);
        cJSON_AddStringToObject(a, "owned_by", "loramux");
        cJSON_AddStringToObject(a, "root", list[i].source[0] ? list[i].source : list[i].st.version);
        cJSON_AddStringToObject(a, "version", list[i].st.version);
        cJSON_AddStringToObject(a, "parent", s->model_name);
        cJSON_AddStringToObject(a, "method", list[i].method);
        cJSON_AddNumberToObject(a, "rank", list[i].rank_max);
        cJSON_AddItemToArray(data, a);
    }
    free(list);
    char *js = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return send_json(c, cn, 200, js);
}

static mhd_result_t do_metrics(struct MHD_Connection *c, conn_t *cn) {
    srv_server_t *s = cn->s;
    if (s->ready) {
        srv_engine_stats_t st;
        srv_engine_stats(s->eng, &st);
        int na = 0;
        size_t bytes = 0;
        srv_reg_stats(s->reg, &na, &bytes, NULL);
        srv_met_gauges(s->met, st.running, st.waiting, st.kv_used, st.kv_total, na,
                       (long long)bytes);
    }
    char *text = srv_met_render(s->met);
    if (!text) return fail(c, cn, 500, "server_error", NULL, NULL, "out of memory");
    return send_text(c, cn, 200, "text/plain; version=0.0.4; charset=utf-8", text);
}

static mhd_result_t do_load(struct MHD_Connection *c, conn_t *cn, int unload) {
    srv_server_t *s = cn->s;
    if (!s->cfg->allow_adapter_loading)
        return fail(c, cn, 403, "permission_error", NULL, NULL,
                    "adapter loading is disabled (allow_adapter_loading is false)");
    cJSON *root = cJSON_ParseWithLength(cn->body ? cn->body : "", cn->len);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "lora_name");
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(root, "lora_path");
    mhd_result_t ret;
    if (!root || !cJSON_IsObject(root)) {
        ret = fail(c, cn, 400, "invalid_request_error", NULL, NULL, "the body is not a JSON object");
    } else if (!cJSON_IsString(name)) {
        ret = fail(c, cn, 400, "invalid_request_error", "lora_name", NULL,
                   "'lora_name' is required and must be a string");
    } else if (unload) {
        char msg[300];
        llm_error_t uerr = {0};
        int drc = srv_reg_delete(s->reg, name->valuestring, &uerr);
        if (drc == -EBUSY) {
            ret = fail(c, cn, 409, "conflict_error", "lora_name", NULL,
                       "the adapter is pinned; unpin it first");
        } else if (drc == 0) {
            snprintf(msg, sizeof msg, "Success: LoRA adapter '%s' removed successfully.",
                     name->valuestring);
            ret = send_text(c, cn, 200, "text/plain", strdup(msg));
        } else {
            snprintf(msg, sizeof msg, "The lora adapter '%s' cannot be found.",
                     name->valuestring);
            ret = fail(c, cn, 404, "not_found_error", "lora_name", "model_not_found", msg);
        }
    } else if (!cJSON_IsString(path)) {
        ret = fail(c, cn, 400, "invalid_request_error", "lora_path", NULL,
                   "'lora_path' is required and must be a string");
    } else {
        llm_error_t err = {0};
        int rc = srv_reg_import_dir(s->reg, name->valuestring, path->valuestring, 1, NULL, NULL,
                                    &err);
        if (rc == 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "Success: LoRA adapter '%s' added successfully.",
                     name->valuestring);
            ret = send_text(c, cn, 200, "text/plain", strdup(msg));
        } else if (rc == LLM_ENOTFOUND) {
            ret = fail(c, cn, 404, "not_found_error", "lora_path", NULL, err.msg);
        } else {
            ret = fail(c, cn, 400, "invalid_request_error",
                       strstr(err.msg, "name") ? "lora_name" : "lora_path", NULL, err.msg);
        }
    }
    cJSON_Delete(root);
    return ret;
}

/* ---- adapter registry ---- */

static cJSON *desc_json(const srv_reg_desc_t *d) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "adapter");
    cJSON_AddStringToObject(o, "name", d->st.name);
    cJSON_AddStringToObject(o, "version", d->st.version);
    cJSON_AddStringToObject(o, "method", d->method);
    cJSON_AddNumberToObject(o, "rank", d->rank_max);
    cJSON *rk = cJSON_AddObjectToObject(o, "ranks");
    cJSON_AddNumberToObject(rk, "min", d->rank_min);
    cJSON_AddNumberToObject(rk, "max", d->rank_max);
    cJSON *tm = cJSON_AddArrayToObject(o, "target_modules");
    char buf[256];
    snprintf(buf, sizeof buf, "%s", d->target_modules);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        cJSON_AddItemToArray(tm, cJSON_CreateString(t));
    cJSON_AddNumberToObject(o, "bytes", (double)d->st.bytes);
    cJSON_AddNumberToObject(o, "created", (double)d->st.created);
    cJSON_AddBoolToObject(o, "pinned", d->st.pinned);
    cJSON_AddBoolToObject(o, "resident", d->resident);
    cJSON_AddNumberToObject(o, "resident_bytes", (double)d->resident_bytes);
    cJSON_AddNumberToObject(o, "uses", (double)d->uses);
    return o;
}

static mhd_result_t send_desc(struct MHD_Connection *c, conn_t *cn, int status,
                              const srv_reg_desc_t *d) {
    cJSON *o = desc_json(d);
    char *js = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return send_json(c, cn, status, js);
}

static mhd_result_t post_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *filename, const char *content_type,
                              const char *transfer_encoding, const char *data, uint64_t off,
                              size_t size) {
    conn_t *cn = cls;
    (void)kind, (void)filename, (void)content_type, (void)transfer_encoding, (void)off;
    if (!strcmp(key, "name")) {
        if (cn->up_name_len + size < sizeof cn->up_name) {
            memcpy(cn->up_name + cn->up_name_len, data, size);
            cn->up_name_len += size;
            cn->up_name[cn->up_name_len] = '\0';
        } else {
            cn->up_name_len = sizeof cn->up_name; /* too long: refused at the end */
        }
        return MHD_YES;
    }
    int part = !strcmp(key, "adapter_config.json")         ? SRV_STORE_CONFIG
               : !strcmp(key, "adapter_model.safetensors") ? SRV_STORE_WEIGHTS : -1;
    if (part < 0) {
        if (!cn->up_bad[0]) snprintf(cn->up_bad, sizeof cn->up_bad, "%s", key);
        return MHD_YES;
    }
    if (cn->up_err || cn->too_large || size == 0) return MHD_YES;
    if (!cn->up && !(cn->up = srv_store_begin(cn->s->store, NULL))) {
        cn->up_err = LLM_EIO;
        return MHD_YES;
    }
    int rc = srv_store_write(cn->up, part, data, size);
    if (rc == LLM_ERANGE) cn->too_large = 1;
    else if (rc) cn->up_err = rc;
    return MHD_YES;
}

static mhd_result_t do_upload(struct MHD_Connection *c, conn_t *cn) {
    srv_server_t *s = cn->s;
    if (cn->too_large) {
        srv_store_abort(cn->up);
        cn->up = NULL;
        return fail(c, cn, 413, "invalid_request_error", NULL, "request_too_large",
                    "the upload is larger than max_upload_bytes");
    }
    if (!cn->pp)
        return fail(c, cn, 400, "invalid_request_error", NULL, NULL,
                    "POST /v1/adapters takes multipart/form-data with the parts name, "
                    "adapter_config.json and adapter_model.safetensors");
    if (cn->up_bad[0]) {
        char m[160];
        snprintf(m, sizeof m, "unexpected part '%s' (name, adapter_config.json, "
                 "adapter_model.safetensors)", cn->up_bad);
        return fail(c, cn, 400, "invalid_request_error", cn->up_bad, NULL, m);
    }
    llm_error_t err = {0};
    if (!cn->up_name_len)
        return fail(c, cn, 400, "invalid_request_error", "name", NULL, "the part 'name' is required");
    if (cn->up_name_len >= sizeof cn->up_name - 1 || srv_reg_check_name(s->reg, cn->up_name, &err))
        return fail(c, cn, 400, "invalid_request_error", "name", NULL,
                    err.msg[0] ? err.msg : "'name' is too long");
    if (cn->up_err == LLM_EFORMAT)
        return fail(c, cn, 400, "invalid_request_error", NULL, NULL, "malformed multipart body");
    if (cn->up_err)
        return fail(c, cn, 500, "server_error", NULL, NULL, "the upload could not be stored");
    if (!cn->up || srv_store_upload_bytes(cn->up, SRV_STORE_CONFIG) <= 0 ||
        srv_store_upload_bytes(cn->up, SRV_STORE_WEIGHTS) <= 0)
        return fail(c, cn, 400, "invalid_request_error",
                    !cn->up || srv_store_upload_bytes(cn->up, SRV_STORE_CONFIG) <= 0
                        ? "adapter_config.json" : "adapter_model.safetensors",
                    NULL, "both adapter_config.json and adapter_model.safetensors are required");
    srv_reg_desc_t d;
    int created = 0;
    srv_store_upload_t *up = cn->up;
    cn->up = NULL; /* consumed by the commit, whatever happens */
    int rc = srv_reg_commit_upload(s->reg, up, cn->up_name, &d, &created, &err);
    if (rc == LLM_ERANGE)
        return fail(c, cn, 413, "invalid_request_error", NULL, "request_too_large", err.msg);
    if (rc == LLM_ENOMEM || (rc < 0 && rc > -4096 && rc != -EINVAL))
        return fail(c, cn, 500, "server_error", NULL, NULL, err.msg);
    if (rc) return fail(c, cn, 400, "invalid_request_error", "adapter", "invalid_adapter", err.msg);
    return send_desc(c, cn, created ? 201 : 200, &d);
}

static mhd_result_t do_list_adapters(struct MHD_Connection *c, conn_t *cn) {
    const char *so = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "offset");
    const char *sl = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    long off = so ? strtol(so, NULL, 10) : 0, lim = sl ? strtol(sl, NULL, 10) : 100;
    if (off < 0 || lim < 1 || lim > 1000)
        return fail(c, cn, 400, "invalid_request_error", off < 0 ? "offset" : "limit", NULL,
                    "offset must be >= 0 and limit in [1, 1000]");
    srv_reg_desc_t *list = NULL;
    size_t n = 0, total = 0;
    if (srv_reg_list(cn->s->reg, (size_t)off, (size_t)lim, &list, &n, &total))
        return fail(c, cn, 500, "server_error", NULL, NULL, "out of memory");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(data, desc_json(&list[i]));
    cJSON_AddNumberToObject(o, "total", (double)total);
    cJSON_AddNumberToObject(o, "offset", (double)off);
    cJSON_AddNumberToObject(o, "limit", (double)lim);
    free(list);
    char *js = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return send_json(c, cn, 200, js);
}

/* /v1/adapters/{name}[/pin|/unpin] */
static mhd_result_t do_adapter(struct MHD_Connection *c, conn_t *cn, const char *rest,
                               const char *method) {
    srv_server_t *s = cn->s;
    char name[SRV_STORE_NAME_MAX + 2];
    const char *slash = strchr(rest, '/');
    size_t nl = slash ? (size_t)(slash - rest) : strlen(rest);
    if (nl == 0 || nl >= sizeof name)
        return fail(c, cn, 400, "invalid_request_error", "name", NULL, "bad adapter name");
    memcpy(name, rest, nl);
    name[nl] = '\0';
    llm_error_t err = {0};
    if (srv_reg_check_name(s->reg, name, &err))
        return fail(c, cn, 400, "invalid_request_error", "name", NULL, err.msg);
    srv_reg_desc_t d;
    if (slash) {
        int on = !strcmp(slash, "/pin");
        if ((!on && strcmp(slash, "/unpin")) || strcmp(method, "POST"))
            return fail(c, cn, 404, "not_found_error", NULL, NULL, "no such route");
        if (srv_reg_pin(s->reg, name, on, &err) == LLM_ENOTFOUND)
            return fail(c, cn, 404, "not_found_error", "name", "model_not_found",
                        "no adapter with this name");
        if (srv_reg_get(s->reg, name, &d))
            return fail(c, cn, 404, "not_found_error", "name", "model_not_found",
                        "no adapter with this name");
        return send_desc(c, cn, 200, &d);
    }
    if (!strcmp(method, "DELETE")) {
        int rc = srv_reg_delete(s->reg, name, &err);
        if (rc == LLM_ENOTFOUND)
            return fail(c, cn, 404, "not_found_error", "name", "model_not_found",
                        "no adapter with this name");
        if (rc == -EBUSY)
            return fail(c, cn, 409, "conflict_error", "name", NULL,
                        "the adapter is pinned; unpin it first");
        if (rc) return fail(c, cn, 500, "server_error", NULL, NULL, err.msg);
        char js[256];
        snprintf(js, sizeof js, "{\"object\":\"adapter.deleted\",\"name\":\"%s\",\"deleted\":true}",
                 name);
        return send_json(c, cn, 200, strdup(js));
    }
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return fail(c, cn, 405, "invalid_request_error", NULL, NULL, "method not allowed");
    if (srv_reg_get(s->reg, name, &d))
        return fail(c, cn, 404, "not_found_error", "name", "model_not_found",
                    "no adapter with this name");
    return send_desc(c, cn, 200, &d);
}

/* ---- completions ---- */

/* Whether the peer closed the connection (checked while a non-streaming request waits). */
static int peer_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) return 1;
    char b;
    ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    conn_t *cn = cls;
    srv_request_t *r = cn->call.req;
    (void)pos;
    for (;;) {
        if (cn->soff < cn->slen) {
            size_t n = cn->slen - cn->soff;
            if (n > max) n = max;
            memcpy(buf, cn->sbuf + cn->soff, n);
            cn->soff += n;
            return (ssize_t)n;
        }
        if (cn->stream_done) {
            record(cn, 200);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        pthread_mutex_lock(&r->mu);
        while (r->version == cn->seen) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        }
        cn->seen = r->version;
        cn->slen = cn->soff = 0;
        cn->stream_done = srv_api_stream_events(cn->s, &cn->call, cn->sent, &cn->sbuf, &cn->slen,
                                                &cn->scap);
        pthread_mutex_unlock(&r->mu);
    }
}

static void stream_free(void *cls) {
    conn_t *cn = cls;
    /* The response is gone: finished, or the client disconnected mid-stream. */
    if (!cn->stream_done) {
        srv_engine_cancel(cn->s->eng, cn->call.req);
        record(cn, 499); /* nginx's "client closed request" */
    }
    conn_release(cn);
}

static mhd_result_t do_completion(struct MHD_Connection *c, conn_t *cn, int is_chat) {
    srv_server_t *s = cn->s;
    srv_api_err_t e;
    int rc = srv_api_parse(s, is_chat, cn->body ? cn->body : "", cn->len, &cn->call, &e);
    cn->has_call = cn->call.req != NULL;
    if (cn->has_call) cn->call.req->metrics_adapter = -1; /* until the request is valid */
    if (rc) return send_error(c, cn, &e);
    srv_request_t *r = cn->call.req;
    r->metrics_adapter = srv_met_adapter(s->met, r->adapters.n ? r->label : NULL);
    if (r->n_choices > s->cfg->max_running)
        return fail(c, cn, 400, "invalid_request_error", "n", NULL,
                    "prompts x n exceed max_running, the most sequences the server runs at once");
    rc = srv_engine_submit(s->eng, r);
    if (rc == LLM_EFULL)
        return fail(c, cn, 429, "rate_limit_error", NULL, "queue_full",
                    "the server is at capacity (request queue full); retry later");
    if (rc == LLM_ERANGE)
        return fail(c, cn, 400, "invalid_request_error", "max_tokens", NULL,
                    "the request needs more KV cache than the server has (lower max_tokens or n)");
    if (rc)
        return fail(c, cn, 503, "unavailable_error", NULL, NULL, "the server is shutting down");

    if (r->stream) {
        cn->sent = calloc((size_t)r->n_choices, sizeof *cn->sent);
        if (!cn->sent) {
            srv_engine_cancel(s->eng, r);
            return fail(c, cn, 500, "server_error", NULL, NULL, "out of memory");
        }
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, cn,
                                              stream_free);
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        cn->status = 200;
        __atomic_add_fetch(&cn->refs, 1, __ATOMIC_ACQ_REL); /* released by stream_free */
        mhd_result_t ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    /* Non-streaming: wait here (this connection's own thread), watching for a hang-up. */
    pthread_mutex_lock(&r->mu);
    while (r->n_done < r->n_choices) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        if (r->n_done < r->n_choices && peer_gone(c)) {
            pthread_mutex_unlock(&r->mu);
            srv_engine_cancel(s->eng, r);
            record(cn, 499);
            return MHD_NO; /* closes the connection */
        }
    }
    int err_status = r->error_status;
    char err_msg[sizeof r->error_msg];
    snprintf(err_msg, sizeof err_msg, "%s", r->error_msg);
    int aborted = 0;
    for (int i = 0; i < r->n_choices; i++)
        aborted |= r->choices[i].finish_reason && !strcmp(r->choices[i].finish_reason, "abort");
    pthread_mutex_unlock(&r->mu);
    if (err_status) return fail(c, cn, err_status, "server_error", NULL, NULL, err_msg);
    if (aborted)
        return s->draining
                   ? fail(c, cn, 503, "unavailable_error", NULL, NULL,
                          "the request was cancelled: the server is shutting down")
                   : fail(c, cn, 504, "timeout_error", NULL, NULL,
                          "the request did not finish within request_timeout");
    return send_json(c, cn, 200, srv_api_response(s, &cn->call));
}

/* ---- dispatch ---- */

static mhd_result_t route(struct MHD_Connection *c, conn_t *cn, const char *url,
                          const char *method) {
    srv_server_t *s = cn->s;
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    int post = !strcmp(method, "POST");
    if (!strcmp(url, "/health")) {
        if (!get) goto not_allowed;
        return send_json(c, cn, 200, strdup("{\"status\":\"ok\"}"));
    }
    if (!strcmp(url, "/ready")) {
        if (!get) goto not_allowed;
        if (s->ready && !s->draining) return send_json(c, cn, 200, strdup("{\"status\":\"ready\"}"));
        return fail(c, cn, 503, "unavailable_error", NULL, NULL,
                    s->draining ? "draining: the server is shutting down"
                                : "loading: the model is not ready yet");
    }
    if (!strcmp(url, "/metrics")) {
        if (!get) goto not_allowed;
        return do_metrics(c, cn);
    }
    int is_api = !strncmp(url, "/v1/", 4);
    if (!is_api) return fail(c, cn, 404, "not_found_error", NULL, NULL, "no such route");
    cn->is_api = 1;
    if (!authorized(s, c))
        return fail(c, cn, 401, "authentication_error", NULL, "invalid_api_key",
                    "missing or invalid API key (Authorization: Bearer KEY)");
    if (cn->too_large) {
        srv_store_abort(cn->up);
        cn->up = NULL;
        return fail(c, cn, 413, "invalid_request_error", NULL, "request_too_large",
                    !strcmp(url, "/v1/adapters") ? "the upload is larger than max_upload_bytes"
                                                 : "the request body is larger than max_body_bytes");
    }
    if (s->draining)
        return fail(c, cn, 503, "unavailable_error", NULL, NULL, "the server is shutting down");
    if (!s->ready)
        return fail(c, cn, 503, "unavailable_error", NULL, NULL,
                    "the model is still loading; retry when /ready says ready");
    if (!strcmp(url, "/v1/models")) {
        if (!get) goto not_allowed;
        return do_models(c, cn);
    }
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/v1/chat/completions")) {
        if (!post) goto not_allowed;
        return do_completion(c, cn, !strcmp(url, "/v1/chat/completions"));
    }
    if (!strcmp(url, "/v1/adapters")) {
        if (post) return do_upload(c, cn);
        if (!get) goto not_allowed;
        return do_list_adapters(c, cn);
    }
    if (!strncmp(url, "/v1/adapters/", 13)) return do_adapter(c, cn, url + 13, method);
    if (!strcmp(url, "/v1/load_lora_adapter") || !strcmp(url, "/v1/unload_lora_adapter")) {
        if (!post) goto not_allowed;
        return do_load(c, cn, !strcmp(url, "/v1/unload_lora_adapter"));
    }
    return fail(c, cn, 404, "not_found_error", NULL, NULL, "no such route");
not_allowed:
    return fail(c, cn, 405, "invalid_request_error", NULL, NULL, "method not allowed");
}

static mhd_result_t on_request(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls) {
    srv_server_t *s = cls;
    conn_t *cn = *con_cls;
    (void)version;
    if (!cn) { /* first call: headers only */
        cn = calloc(1, sizeof *cn);
        if (!cn) return MHD_NO;
        cn->s = s;
        cn->refs = 1;
        *con_cls = cn;
        if (!strncmp(url, "/v1/", 4) && !authorized(s, c)) {
            /* before any byte of the body is read, let alone stored */
            cn->is_api = 1;
            return fail(c, cn, 401, "authentication_error", NULL, "invalid_api_key",
                        "missing or invalid API key (Authorization: Bearer KEY)");
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        int upload = !strcmp(method, "POST") && !strcmp(url, "/v1/adapters");
        long long limit = upload ? s->cfg->max_upload_bytes : s->cfg->max_body_bytes;
        if (cl && strtoll(cl, NULL, 10) > limit + (upload ? 65536 : 0)) {
            /* refuse before the body is read: nobody should stream a gigabyte to get a 413 */
            cn->too_large = 1;
            cn->is_api = !strncmp(url, "/v1/", 4);
            return fail(c, cn, 413, "invalid_request_error", NULL, "request_too_large",
                        upload ? "the upload is larger than max_upload_bytes"
                               : "the request body is larger than max_body_bytes");
        }
        /* uploads stream through the multipart parser into the store, never into memory */
        if (upload && s->ready && !cn->too_large) cn->pp = MHD_create_post_processor(c, 65536, post_iter, cn);
        return MHD_YES;
    }
    if (*upload_size && cn->pp) {
        if (MHD_post_process(cn->pp, upload, *upload_size) != MHD_YES && !cn->up_err)
            cn->up_err = LLM_EFORMAT;
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cn->too_large) {
            if (cn->len + *upload_size > (size_t)s->cfg->max_body_bytes) {
                cn->too_large = 1;
            } else {
                if (cn->len + *upload_size + 1 > cn->cap) {
                    size_t cap = cn->cap ? cn->cap * 2 : 4096;
                    while (cap < cn->len + *upload_size + 1) cap *= 2;
                    char *nb = realloc(cn->body, cap);
                    if (!nb) return MHD_NO;
                    cn->body = nb;
                    cn->cap = cap;
                }
                memcpy(cn->body + cn->len, upload, *upload_size);
                cn->len += *upload_size;
                cn->body[cn->len] = '\0';
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    return route(c, cn, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    conn_t *cn = *con_cls;
    (void)cls;
    (void)c;
    if (!cn) return;
    int gone = 0;
    if (cn->has_call && cn->call.req && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK &&
        cn->call.req->metrics_adapter >= 0) {
        int finished;
        pthread_mutex_lock(&cn->call.req->mu);
        finished = cn->call.req->n_done == cn->call.req->n_choices;
        pthread_mutex_unlock(&cn->call.req->mu);
        if (!finished) {
            srv_engine_cancel(cn->s->eng, cn->call.req);
            gone = 1;
        }
    }
    record(cn, gone || !cn->status ? 499 : cn->status);
    *con_cls = NULL;
    conn_release(cn);
}

/* ---- public API ---- */

int srv_http_start(srv_server_t *s, srv_http_t **out, llm_error_t *err) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", s->cfg->port);
    int gai = getaddrinfo(s->cfg->host, port, &hints, &ai);
    if (gai != 0)
        return llm_err_set(err, LLM_EINVAL, "host \"%s\": %s", s->cfg->host, gai_strerror(gai));
    /* No MHD_USE_ERROR_LOG: it reports every client hang-up mid-stream, which is routine. */
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ITC;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    srv_http_t *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        return llm_err_set(err, LLM_ENOMEM, "out of memory");
    }
    h->s = s;
    h->d = MHD_start_daemon(flags, (uint16_t)s->cfg->port, NULL, NULL, on_request, s,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->d) {
        free(h);
        return llm_err_set(err, -EADDRINUSE, "cannot listen on %s:%d (%s)", s->cfg->host,
                           s->cfg->port, strerror(errno ? errno : EADDRINUSE));
    }
    *out = h;
    return 0;
}

void srv_http_quiesce(srv_http_t *h) {
    if (h && h->d) {
        MHD_socket fd = MHD_quiesce_daemon(h->d);
        if (fd != MHD_INVALID_SOCKET) close(fd);
    }
}

void srv_http_stop(srv_http_t *h) {
    if (!h) return;
    if (h->d) MHD_stop_daemon(h->d);
    free(h);
}
