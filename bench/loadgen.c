/* loadgen.c: closed-loop load generator for `loramux serve` (run by bench/bench_serve.py).
 *
 *   loadgen [--host H] [--port P] [--concurrency C] --models a,b,c | --models-file F
 *           [--zipf S] [--seed N] [--warmup SECONDS] [--ramp SECONDS] [--duration SECONDS]
 *           [--requests N] [--max-tokens N] [--prompt-tokens N] [--api-key KEY]
 *           [--timeout SECONDS] [--no-ignore-eos]
 *
 * C connections (HTTP/1.1 keep-alive, libuv TCP, our own small response parser) each run a
 * closed loop of streamed completions: POST /v1/completions with stream: true, max_tokens,
 * temperature 0, ignore_eos (so every request runs to max_tokens) and
 * stream_options.include_usage (exact token counts in the last chunk). A request's model is
 * names[stream % N] (round-robin, fixed per stream) or, with --zipf S, drawn per request with
 * probability ∝ 1/rank^S over the N names in the order given (seeded).
 *
 * The streams start together, or evenly over the first --ramp seconds (closed loops of
 * equal-length requests started together stay in lockstep).
 *
 * Per request it records the send time, the arrival of every chunk that carries text (the
 * first is the first token), the usage and the status. The first --warmup seconds are not
 * measured; the window then lasts --duration seconds, or until --requests requests have
 * finished in it. At the end every connection is closed (the server cancels what runs) and
 * one JSON object is printed on stdout; see print_report() for the definitions.
 * Exit status: 0, or 2 for bad arguments / a host that does not resolve.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

/* ---- types ---- */

enum { E_NONE, E_HTTP, E_CONNECT, E_DISCONNECT, E_NO_DONE, E_STREAM, E_TIMEOUT, E_PARSE, NERR };
static const char *const ERR_NAME[NERR] = {"none",       "http_status", "connect",
                                           "disconnect", "no_done",     "stream_error",
                                           "timeout",    "bad_response"};

typedef struct {
    uint64_t t_send, t_first, t_end; /* ns (uv_hrtime); 0 = not reached */
    uint64_t *chunk_t;               /* arrival of each chunk with text, n_chunks of them */
    uint32_t n_chunks, cap_chunks;
    int32_t prompt_tokens, completion_tokens; /* from usage; -1 = none */
    uint32_t model;                           /* index into the names */
    int16_t status;                           /* HTTP status; 0 = no answer */
    uint8_t done;                             /* data: [DONE] received */
    uint8_t err;                              /* E_* */
} rec_t;

/* Response parser states. */
enum { P_STATUS, P_HEADERS, P_BODY_LEN, P_BODY_EOF, P_CH_SIZE, P_CH_DATA, P_CH_CRLF,
       P_CH_TRAILER, P_DONE };

typedef struct lg lg_t;

/* One request's bytes and their write request; freed by on_write. */
typedef struct {
    uv_write_t w;
    long rec; /* the record it belongs to */
    char buf[];
} wreq_t;

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_timer_t backoff;
    lg_t *lg;
    int id;
    int open;       /* tcp handle initialised and not yet closed */
    int connected;  /* connect succeeded */
    int busy;       /* a request is outstanding */
    int failures;   /* consecutive failed requests (backoff) */
    long rec;       /* current record index, -1 = none */
    uint64_t deadline;
    /* response parser */
    int pstate;
    int chunked, close_after, is_sse;
    int64_t remaining; /* body bytes left (Content-Length or current chunk) */
    char *line;        /* current status / header / chunk-size / trailer line */
    size_t line_len, line_cap;
    char *sse;         /* current SSE line of the body (may span HTTP chunks) */
    size_t sse_len, sse_cap;
    char errbody[256]; /* start of a non-200 body, for the report */
    size_t errbody_len;
    char rbuf[65536];
} conn_t;

struct lg {
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    char host[256];
    int port, conc, max_tokens, prompt_tokens, ignore_eos;
    double warmup, duration, timeout, zipf_s, ramp;
    long max_requests;
    const char *api_key;
    char **names;
    int n_names;
    double *zipf_cdf; /* cumulative weights, n_names of them */
    uint64_t rng;         /* Zipf draws */
    uint64_t prompt_seed; /* prompts: a function of (seed, request number) only */
    /* run state */
    uint64_t t0, tw0, tw1; /* start, window start, window end (tw1 = 0 while running) */
    int stopping;
    long done_in_window;
    uv_timer_t tick;
    conn_t *conns;
    rec_t *recs;
    long n_recs, cap_recs;
    char first_error[512];
};

/* ---- small helpers ---- */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) { return (double)(splitmix64(s) >> 11) * 0x1.0p-53; }

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "loadgen: out of memory\n");
        abort(); /* a benchmark tool; nothing useful to do without memory */
    }
    return q;
}

typedef struct {
    char *s;
    size_t len, cap;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_puts(sbuf_t *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_json_str(sbuf_t *b, const char *s) {
    sb_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_add(b, e, 2);
        } else if (c < 0x20) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_add(b, (const char *)&c, 1);
        }
    }
    sb_add(b, "\"", 1);
}

/* ---- request bodies ---- */

/* Common words that are one token each (with their leading space) in the Llama
 * SentencePiece and the SmolLM/GPT-2 BPE vocabularies, so a prompt of n words is about n
 * tokens. The exact count comes back in the usage of each response. */
static const char *const WORDS[] = {
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "he", "it",
    "as", "at", "his", "by", "from", "they", "this", "had", "not", "are", "but", "one", "all",
    "were", "we", "when", "there", "can", "an", "your", "which", "their", "said", "if", "do",
    "will", "each", "about", "how", "up", "out", "them", "then", "she", "many", "some", "so",
    "these", "would", "other", "into", "has", "more", "her", "two", "like", "him", "see",
    "time", "could", "no", "make", "than", "first", "been", "its", "who", "now", "people",
    "my", "made", "over", "did", "down", "only", "way", "find", "use", "may", "water", "long",
    "little", "very", "after", "words", "called", "just", "where", "most", "know"};
#define N_WORDS (sizeof WORDS / sizeof WORDS[0])

static uint32_t pick_model(lg_t *g, int stream) {
    if (g->zipf_s <= 0 || g->n_names == 1) return (uint32_t)(stream % g->n_names);
    double u = rng_unit(&g->rng) * g->zipf_cdf[g->n_names - 1];
    int lo = 0, hi = g->n_names - 1;
    while (lo < hi) { /* first index whose cumulative weight exceeds u */
        int mid = (lo + hi) / 2;
        if (g->zipf_cdf[mid] > u) hi = mid;
        else lo = mid + 1;
    }
    return (uint32_t)lo;
}

/* The full HTTP request for record r; new string, caller frees. */
static char *build_request(lg_t *g, long r, size_t *len) {
    sbuf_t body = {0}, req = {0};
    sb_puts(&body, "{\"model\":");
    sb_json_str(&body, g->names[g->recs[r].model]);
    /* A distinct start per request (no prefix is shared between requests), then words. */
    sb_printf(&body, ",\"prompt\":\"Request %ld:", r);
    uint64_t s = g->prompt_seed ^ ((uint64_t)r * 0x9E3779B97F4A7C15ULL);
    for (int i = 0; i < g->prompt_tokens - 4; i++) {
        sb_add(&body, " ", 1);
        sb_puts(&body, WORDS[splitmix64(&s) % N_WORDS]);
    }
    sb_printf(&body, "\",\"max_tokens\":%d,\"temperature\":0,\"stream\":true,"
                     "\"stream_options\":{\"include_usage\":true}%s}",
              g->max_tokens, g->ignore_eos ? ",\"ignore_eos\":true" : "");
    sb_printf(&req, "POST /v1/completions HTTP/1.1\r\nHost: %s:%d\r\n"
                    "Content-Type: application/json\r\nAccept: text/event-stream\r\n",
              g->host, g->port);
    if (g->api_key && g->api_key[0]) {
        sb_puts(&req, "Authorization: Bearer ");
        sb_puts(&req, g->api_key);
        sb_puts(&req, "\r\n");
    }
    sb_printf(&req, "Content-Length: %zu\r\n\r\n", body.len);
    sb_add(&req, body.s, body.len);
    free(body.s);
    *len = req.len;
    return req.s;
}

/* ---- records ---- */

static long new_record(lg_t *g, int stream) {
    if (g->n_recs == g->cap_recs) {
        g->cap_recs = g->cap_recs ? g->cap_recs * 2 : 1024;
        g->recs = xrealloc(g->recs, (size_t)g->cap_recs * sizeof *g->recs);
    }
    rec_t *r = &g->recs[g->n_recs];
    memset(r, 0, sizeof *r);
    r->prompt_tokens = r->completion_tokens = -1;
    r->model = pick_model(g, stream);
    return g->n_recs++;
}

static void note_error(lg_t *g, rec_t *r, int kind, const char *detail) {
    if (r->err == E_NONE) r->err = (uint8_t)kind;
    if (!g->first_error[0] && !g->stopping)
        snprintf(g->first_error, sizeof g->first_error, "%s (status %d, model %s): %.400s",
                 ERR_NAME[kind], r->status, g->names[r->model], detail ? detail : "");
}

/* ---- connections ---- */

static void start_request(conn_t *c);
static void conn_connect(conn_t *c);

static void on_backoff(uv_timer_t *t) {
    conn_t *c = t->data;
    if (c->open && c->connected) start_request(c);
    else conn_connect(c);
}

/* After consecutive failures, wait 40, 80, ... up to 500 ms before the next attempt, so a
 * server that refuses or errors is not hammered (and the errors stay countable). */
static uint64_t backoff_ms(const conn_t *c) {
    return c->failures ? (c->failures > 4 ? 500 : 20u << c->failures) : 0;
}

static void on_close(uv_handle_t *h) {
    conn_t *c = h->data;
    c->open = c->connected = 0;
    if (c->lg->stopping) return;
    uv_timer_start(&c->backoff, on_backoff, backoff_ms(c), 0);
}

static void conn_close(conn_t *c) {
    if (c->open && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

/* The current request is over (answered or failed); err is E_NONE unless the transport
 * failed. Counts the connection's consecutive failures (for the backoff). */
static void finish_request(conn_t *c, int err, const char *detail) {
    lg_t *g = c->lg;
    if (c->rec >= 0) {
        rec_t *r = &g->recs[c->rec];
        r->t_end = uv_hrtime();
        if (err != E_NONE) {
            note_error(g, r, err, detail);
        } else if (r->status != 200) {
            char d[300];
            snprintf(d, sizeof d, "%.*s", (int)c->errbody_len, c->errbody);
            note_error(g, r, E_HTTP, d);
        } else if (!r->done) {
            note_error(g, r, E_NO_DONE, "stream ended without data: [DONE]");
        }
        if (!r->err && g->tw0 && r->t_end >= g->tw0) g->done_in_window++;
        c->failures = r->err ? c->failures + 1 : 0;
    }
    c->rec = -1;
    c->busy = 0;
    c->deadline = 0;
}

static void parser_reset(conn_t *c) {
    c->pstate = P_STATUS;
    c->chunked = c->close_after = c->is_sse = 0;
    c->remaining = -1;
    c->line_len = c->sse_len = 0;
    c->errbody_len = 0;
}

static void on_write(uv_write_t *w, int status) {
    conn_t *c = w->data;
    long rec = ((wreq_t *)w)->rec;
    free(w);
    if (status < 0 && !c->lg->stopping && c->busy && c->rec == rec) {
        finish_request(c, E_DISCONNECT, uv_strerror(status));
        conn_close(c);
    }
}

static void start_request(conn_t *c) {
    lg_t *g = c->lg;
    if (g->stopping || c->busy || !c->connected) return;
    c->rec = new_record(g, c->id);
    size_t len;
    char *req = build_request(g, c->rec, &len);
    wreq_t *w = xrealloc(NULL, sizeof *w + len);
    memcpy(w->buf, req, len);
    free(req);
    w->rec = c->rec;
    w->w.data = c;
    parser_reset(c);
    c->busy = 1;
    rec_t *r = &g->recs[c->rec];
    r->t_send = uv_hrtime();
    c->deadline = g->timeout > 0 ? r->t_send + (uint64_t)(g->timeout * 1e9) : 0;
    uv_buf_t b = uv_buf_init(w->buf, (unsigned)len);
    int rc = uv_write(&w->w, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) { /* the callback will not be called */
        free(w);
        finish_request(c, E_DISCONNECT, uv_strerror(rc));
        conn_close(c);
    }
}

/* ---- response parsing ---- */

static void grow_add(char **buf, size_t *len, size_t *cap, const char *p, size_t n) {
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = xrealloc(*buf, *cap);
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static void line_add(conn_t *c, const char *p, size_t n) {
    grow_add(&c->line, &c->line_len, &c->line_cap, p, n);
}

/* One SSE line of a 200 response (without its newline). */
static void sse_line(conn_t *c, char *s, size_t n) {
    lg_t *g = c->lg;
    rec_t *r = &g->recs[c->rec];
    if (n && s[n - 1] == '\r') s[--n] = '\0';
    if (n < 6 || strncmp(s, "data: ", 6)) return; /* blank separators, comments, other fields */
    const char *p = s + 6;
    if (!strcmp(p, "[DONE]")) {
        r->done = 1;
        return;
    }
    uint64_t now = uv_hrtime();
    cJSON *o = cJSON_Parse(p);
    if (!o) {
        note_error(g, r, E_PARSE, p);
        return;
    }
    cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (e) {
        char *t = cJSON_PrintUnformatted(e);
        note_error(g, r, E_STREAM, t);
        free(t);
    }
    int has_text = 0;
    cJSON *ch, *choices = cJSON_GetObjectItemCaseSensitive(o, "choices");
    cJSON_ArrayForEach(ch, choices) {
        cJSON *t = cJSON_GetObjectItemCaseSensitive(ch, "text");
        if (!t) t = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(ch, "delta"), "content");
        if (cJSON_IsString(t) && t->valuestring[0]) has_text = 1;
    }
    cJSON *u = cJSON_GetObjectItemCaseSensitive(o, "usage");
    if (cJSON_IsObject(u)) {
        cJSON *pt = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens");
        cJSON *ct = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
        if (cJSON_IsNumber(pt)) r->prompt_tokens = (int32_t)pt->valuedouble;
        if (cJSON_IsNumber(ct)) r->completion_tokens = (int32_t)ct->valuedouble;
    }
    cJSON_Delete(o);
    if (has_text) {
        if (!r->t_first) r->t_first = now;
        if (r->n_chunks == r->cap_chunks) {
            r->cap_chunks = r->cap_chunks ? r->cap_chunks * 2 : 64;
            r->chunk_t = xrealloc(r->chunk_t, r->cap_chunks * sizeof *r->chunk_t);
        }
        r->chunk_t[r->n_chunks++] = now;
    }
}

/* Body bytes (de-chunked). */
static void body_bytes(conn_t *c, const char *p, size_t n) {
    if (!c->is_sse) {
        size_t k = sizeof c->errbody - 1 - c->errbody_len;
        if (k > n) k = n;
        memcpy(c->errbody + c->errbody_len, p, k);
        c->errbody_len += k;
        return;
    }
    while (n) {
        const char *nl = memchr(p, '\n', n);
        if (!nl) {
            grow_add(&c->sse, &c->sse_len, &c->sse_cap, p, n);
            return;
        }
        grow_add(&c->sse, &c->sse_len, &c->sse_cap, p, (size_t)(nl - p));
        sse_line(c, c->sse, c->sse_len);
        c->sse_len = 0;
        n -= (size_t)(nl - p) + 1;
        p = nl + 1;
    }
}

static void header_line(conn_t *c, char *s) {
    rec_t *r = &c->lg->recs[c->rec];
    char *colon = strchr(s, ':');
    if (!colon) return;
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    if (!strcasecmp(s, "content-length")) {
        c->remaining = strtoll(v, NULL, 10);
    } else if (!strcasecmp(s, "transfer-encoding")) {
        c->chunked = strcasestr(v, "chunked") != NULL;
    } else if (!strcasecmp(s, "connection")) {
        if (strcasestr(v, "close")) c->close_after = 1;
    } else if (!strcasecmp(s, "content-type")) {
        c->is_sse = r->status == 200 && strcasestr(v, "text/event-stream") != NULL;
    }
}

/* Consumes one CRLF-terminated line from p[0..n) into c->line; returns the bytes used, and
 * sets *got when the line is complete (CR stripped). */
static size_t take_line(conn_t *c, const char *p, size_t n, int *got) {
    const char *nl = memchr(p, '\n', n);
    size_t k = nl ? (size_t)(nl - p) + 1 : n;
    line_add(c, p, nl ? k - 1 : k);
    *got = nl != NULL;
    if (*got && c->line_len && c->line[c->line_len - 1] == '\r') c->line[--c->line_len] = '\0';
    return k;
}

/* Feeds received bytes; returns 0, or -1 on a malformed response. */
static int parse(conn_t *c, const char *p, size_t n) {
    rec_t *r = c->rec >= 0 ? &c->lg->recs[c->rec] : NULL;
    if (!r) return n ? -1 : 0; /* bytes with no request outstanding */
    while (n && c->pstate != P_DONE) {
        int got;
        size_t k;
        switch (c->pstate) {
        case P_STATUS:
            k = take_line(c, p, n, &got);
            p += k, n -= k;
            if (!got) break;
            if (strncmp(c->line, "HTTP/1.", 7) || strlen(c->line) < 12) return -1;
            r->status = (int16_t)atoi(c->line + 9);
            c->line_len = 0;
            c->pstate = P_HEADERS;
            break;
        case P_HEADERS:
            k = take_line(c, p, n, &got);
            p += k, n -= k;
            if (!got) break;
            if (c->line_len) {
                header_line(c, c->line);
                c->line_len = 0;
                break;
            }
            if (r->status >= 100 && r->status < 200) { /* 1xx: another head follows */
                c->pstate = P_STATUS;
                break;
            }
            c->pstate = c->chunked ? P_CH_SIZE : c->remaining >= 0 ? P_BODY_LEN : P_BODY_EOF;
            if (c->pstate == P_BODY_LEN && c->remaining == 0) c->pstate = P_DONE;
            break;
        case P_BODY_LEN:
            k = n < (size_t)c->remaining ? n : (size_t)c->remaining;
            body_bytes(c, p, k);
            p += k, n -= k;
            if ((c->remaining -= (int64_t)k) == 0) c->pstate = P_DONE;
            break;
        case P_BODY_EOF:
            body_bytes(c, p, n);
            n = 0;
            break;
        case P_CH_SIZE:
            k = take_line(c, p, n, &got);
            p += k, n -= k;
            if (!got) break;
            {
                char *end;
                c->remaining = strtoll(c->line, &end, 16);
                if (end == c->line || c->remaining < 0) return -1;
            }
            c->line_len = 0;
            c->pstate = c->remaining ? P_CH_DATA : P_CH_TRAILER;
            break;
        case P_CH_DATA:
            k = n < (size_t)c->remaining ? n : (size_t)c->remaining;
            body_bytes(c, p, k);
            p += k, n -= k;
            if ((c->remaining -= (int64_t)k) == 0) c->pstate = P_CH_CRLF;
            break;
        case P_CH_CRLF:
            if (*p == '\r') {
                p++, n--;
            } else if (*p == '\n') {
                p++, n--;
                c->pstate = P_CH_SIZE;
            } else {
                return -1;
            }
            break;
        case P_CH_TRAILER:
            k = take_line(c, p, n, &got);
            p += k, n -= k;
            if (!got) break;
            if (c->line_len == 0) c->pstate = P_DONE;
            c->line_len = 0;
            break;
        }
    }
    return n ? -1 : 0; /* bytes beyond the response: not expected without pipelining */
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    conn_t *c = h->data;
    (void)suggested;
    *b = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    conn_t *c = s->data;
    lg_t *g = c->lg;
    if (g->stopping) return;
    if (n < 0) {
        if (c->busy) {
            if (c->pstate == P_BODY_EOF) finish_request(c, E_NONE, NULL); /* body ended by close */
            else finish_request(c, E_DISCONNECT, n == UV_EOF ? "connection closed by server"
                                                             : uv_strerror((int)n));
        }
        conn_close(c);
        return;
    }
    if (n == 0) return;
    if (parse(c, b->base, (size_t)n) < 0) {
        finish_request(c, E_PARSE, "malformed HTTP response");
        conn_close(c);
        return;
    }
    if (c->pstate == P_DONE) {
        finish_request(c, E_NONE, NULL);
        if (c->close_after) conn_close(c);
        else if (c->failures) uv_timer_start(&c->backoff, on_backoff, backoff_ms(c), 0);
        else start_request(c);
    }
}

static void on_connect(uv_connect_t *req, int status) {
    conn_t *c = req->data;
    lg_t *g = c->lg;
    if (g->stopping) return;
    if (status < 0) {
        long r = new_record(g, c->id); /* a failed connection counts as a failed request */
        c->rec = r;
        g->recs[r].t_send = uv_hrtime();
        finish_request(c, E_CONNECT, uv_strerror(status));
        conn_close(c);
        return;
    }
    c->connected = 1;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    start_request(c);
}

static void conn_connect(conn_t *c) {
    lg_t *g = c->lg;
    if (g->stopping || c->open) return;
    uv_tcp_init(g->loop, &c->tcp);
    c->tcp.data = c;
    c->open = 1;
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&g->addr,
                            on_connect);
    if (rc < 0) {
        c->rec = new_record(g, c->id);
        g->recs[c->rec].t_send = uv_hrtime();
        finish_request(c, E_CONNECT, uv_strerror(rc));
        conn_close(c);
    }
}

/* ---- run control ---- */

static void stop_all(lg_t *g) {
    g->stopping = 1;
    g->tw1 = uv_hrtime();
    for (int i = 0; i < g->conc; i++) {
        conn_t *c = &g->conns[i];
        c->busy = 0; /* a request still running is cut: its record keeps t_end = 0 */
        if (c->open && !uv_is_closing((uv_handle_t *)&c->tcp))
            uv_close((uv_handle_t *)&c->tcp, NULL);
        uv_timer_stop(&c->backoff);
        uv_close((uv_handle_t *)&c->backoff, NULL);
    }
    uv_timer_stop(&g->tick);
    uv_close((uv_handle_t *)&g->tick, NULL);
}

static void on_tick(uv_timer_t *t) {
    lg_t *g = t->data;
    uint64_t now = uv_hrtime();
    if (!g->tw0 && now >= g->t0 + (uint64_t)(g->warmup * 1e9)) g->tw0 = now;
    for (int i = 0; i < g->conc; i++) {
        conn_t *c = &g->conns[i];
        if (c->busy && c->deadline && now > c->deadline) {
            finish_request(c, E_TIMEOUT, "no complete answer within --timeout");
            conn_close(c);
        }
    }
    int end = g->tw0 && ((g->duration > 0 && now >= g->tw0 + (uint64_t)(g->duration * 1e9)) ||
                         (g->max_requests > 0 && g->done_in_window >= g->max_requests));
    if (end) stop_all(g);
}

/* ---- report ---- */

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double *v;
    size_t n, cap;
} dvec_t;

static void dv_push(dvec_t *d, double x) {
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 1024;
        d->v = xrealloc(d->v, d->cap * sizeof *d->v);
    }
    d->v[d->n++] = x;
}

/* p-th percentile with linear interpolation (sorted in place); NAN when empty. */
static double pct(dvec_t *d, double p) {
    if (!d->n) return NAN;
    qsort(d->v, d->n, sizeof *d->v, cmp_d);
    double k = (double)(d->n - 1) * p / 100.0;
    size_t lo = (size_t)k, hi = lo + 1 < d->n ? lo + 1 : lo;
    return d->v[lo] + (d->v[hi] - d->v[lo]) * (k - (double)lo);
}

static void put_num(const char *key, double x, int last) {
    if (isnan(x) || isinf(x)) printf("\"%s\": null%s", key, last ? "" : ", ");
    else printf("\"%s\": %.6g%s", key, x, last ? "" : ", ");
}

static void put_dist(const char *key, dvec_t *d, double scale) {
    printf("\"%s\": {", key);
    put_num("p50", pct(d, 50) * scale, 0);
    put_num("p90", pct(d, 90) * scale, 0);
    put_num("p99", pct(d, 99) * scale, 0);
    double s = 0;
    for (size_t i = 0; i < d->n; i++) s += d->v[i];
    put_num("mean", d->n ? s / (double)d->n * scale : NAN, 0);
    printf("\"n\": %zu}", d->n);
}

static void print_json_str(const char *s) {
    sbuf_t b = {0};
    sb_json_str(&b, s);
    fputs(b.s, stdout);
    free(b.s);
}

/* Definitions (window W = [tw0, tw1], after the warm-up):
 * - decode_tok_s: generated tokens that arrived in W ÷ |W| (aggregate output rate, the first
 *   token of each request included). Each chunk with text counts one token; when the usage
 *   says more tokens than chunks (a token whose text was held back, e.g. half a UTF-8
 *   character), the difference is counted at the request's last chunk.
 * - ttft: first-token time − send time, for the requests whose first token arrived in W.
 * - prefill_tok_s: Σ prompt tokens ÷ Σ TTFT over those same requests, i.e. prompt tokens
 *   over the time requests spent waiting for their first token. On one stream this is the
 *   engine's prefill speed (plus HTTP and tokenisation, ~1 ms); under concurrency TTFT also
 *   holds queueing and the other sequences' decode work that shares the prefill's steps, so
 *   it is a lower bound of the prefill capacity. prompt_tok_s is the rate actually served:
 *   the prompt tokens of those requests ÷ |W|. Requests cut at the end of W have no usage
 *   yet; they count the median prompt length of the finished ones.
 * - itl: gaps between consecutive text chunks of a request, for gaps ending in W.
 * - tpot: per finished request, (last chunk − first chunk) ÷ (completion tokens − 1).
 * - e2e: send to end, for requests finished in W. requests_done: finished without error in
 *   W. errors: every failed request of the run (warm-up included), by kind; the tokens a
 *   failed stream did deliver still count in decode_tok_s and itl. */
static void print_report(lg_t *g) {
    uint64_t tw0 = g->tw0 ? g->tw0 : g->tw1, tw1 = g->tw1;
    double win = (double)(tw1 - tw0) * 1e-9;
    dvec_t ttft = {0}, itl = {0}, tpot = {0}, e2e = {0}, plen = {0};
    double out_tokens = 0, sum_prompt = 0, sum_ttft = 0, chunks_done = 0, toks_done = 0;
    long done = 0, errors = 0, errors_win = 0, started = g->n_recs, n_ttft_noprompt = 0;
    long by_kind[NERR] = {0}, by_status[6] = {0};
    char *used = calloc((size_t)g->n_names, 1);
    long n_used = 0;
    for (long i = 0; i < g->n_recs; i++) {
        rec_t *r = &g->recs[i];
        if (r->err == E_NONE && r->prompt_tokens >= 0 && r->done) dv_push(&plen, r->prompt_tokens);
    }
    double med_prompt = pct(&plen, 50);
    for (long i = 0; i < g->n_recs; i++) {
        rec_t *r = &g->recs[i];
        int in_w = r->t_end >= tw0 && r->t_end <= tw1 && r->t_end;
        if (r->err) {
            errors++;
            by_kind[r->err]++;
            if (r->status >= 100 && r->status < 600) by_status[r->status / 100]++;
            if (in_w) errors_win++;
        }
        if (r->status != 200) continue; /* tokens that did arrive count, even if it failed later */
        int extra = r->completion_tokens > (int32_t)r->n_chunks && r->n_chunks
                        ? r->completion_tokens - (int32_t)r->n_chunks
                        : 0;
        for (uint32_t k = 0; k < r->n_chunks; k++) {
            uint64_t t = r->chunk_t[k];
            if (t < tw0 || t > tw1) continue;
            out_tokens += 1 + (k + 1 == r->n_chunks && r->done ? extra : 0);
            if (k) dv_push(&itl, (double)(t - r->chunk_t[k - 1]) * 1e-9);
            if (!used[r->model]) used[r->model] = 1, n_used++;
        }
        if (r->t_first >= tw0 && r->t_first <= tw1 && r->t_first) {
            double tt = (double)(r->t_first - r->t_send) * 1e-9;
            dv_push(&ttft, tt);
            double pt = r->prompt_tokens >= 0 ? r->prompt_tokens : med_prompt;
            if (r->prompt_tokens < 0) n_ttft_noprompt++;
            if (!isnan(pt)) {
                sum_prompt += pt;
                sum_ttft += tt;
            }
        }
        if (in_w && r->done && !r->err) {
            done++;
            dv_push(&e2e, (double)(r->t_end - r->t_send) * 1e-9);
            chunks_done += r->n_chunks;
            toks_done += r->completion_tokens >= 0 ? (double)r->completion_tokens : r->n_chunks;
            if (r->n_chunks >= 2 && r->completion_tokens >= 2)
                dv_push(&tpot, (double)(r->chunk_t[r->n_chunks - 1] - r->chunk_t[0]) * 1e-9 /
                                   (r->completion_tokens - 1));
        }
    }
    printf("{");
    printf("\"host\": ");
    print_json_str(g->host);
    printf(", \"port\": %d, \"concurrency\": %d, \"models\": %d, ", g->port, g->conc,
           g->n_names);
    put_num("zipf_s", g->zipf_s, 0);
    printf("\"max_tokens\": %d, \"prompt_words\": %d, ", g->max_tokens, g->prompt_tokens);
    put_num("warmup_s", g->warmup, 0);
    put_num("ramp_s", g->ramp, 0);
    put_num("window_s", win, 0);
    printf("\"requests_started\": %ld, \"requests_done\": %ld, \"errors\": %ld, "
           "\"errors_in_window\": %ld, \"errors_by_kind\": {",
           started, done, errors, errors_win);
    int first = 1;
    for (int k = 1; k < NERR; k++) {
        if (!by_kind[k]) continue;
        printf("%s\"%s\": %ld", first ? "" : ", ", ERR_NAME[k], by_kind[k]);
        first = 0;
    }
    printf("}, \"errors_by_status_class\": {");
    first = 1;
    for (int k = 1; k < 6; k++) {
        if (!by_status[k]) continue;
        printf("%s\"%dxx\": %ld", first ? "" : ", ", k, by_status[k]);
        first = 0;
    }
    printf("}, \"first_error\": ");
    if (g->first_error[0]) print_json_str(g->first_error);
    else printf("null");
    printf(", ");
    put_num("decode_tok_s", win > 0 ? out_tokens / win : NAN, 0);
    put_num("output_tokens_in_window", out_tokens, 0);
    put_num("prefill_tok_s", sum_ttft > 0 ? sum_prompt / sum_ttft : NAN, 0);
    put_num("prompt_tok_s", win > 0 ? sum_prompt / win : NAN, 0);
    put_num("prompt_tokens_median", med_prompt, 0);
    printf("\"ttft_prompt_estimated\": %ld, ", n_ttft_noprompt);
    put_num("chunks_per_token", toks_done > 0 ? chunks_done / toks_done : NAN, 0);
    printf("\"distinct_models_in_window\": %ld, ", n_used);
    put_dist("ttft_ms", &ttft, 1e3);
    printf(", ");
    put_dist("itl_ms", &itl, 1e3);
    printf(", ");
    put_dist("tpot_ms", &tpot, 1e3);
    printf(", ");
    put_dist("e2e_ms", &e2e, 1e3);
    printf("}\n");
    fflush(stdout);
    free(ttft.v), free(itl.v), free(tpot.v), free(e2e.v), free(plen.v), free(used);
}

/* ---- arguments ---- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: loadgen --models a,b,c | --models-file FILE [options]\n"
            "  --host H            server address (default 127.0.0.1)\n"
            "  --port P            server port (default 8080)\n"
            "  --concurrency C     concurrent streams, one connection each (default 1)\n"
            "  --models a,b,c      model names for the requests' \"model\"\n"
            "  --models-file F     the same, one name a line\n"
            "  --zipf S            draw each request's model by Zipf(S) over the names in\n"
            "                      order (default: names[stream %% N], fixed per stream)\n"
            "  --seed N            seed of the Zipf draws and the prompts (default 1)\n"
            "  --warmup S          seconds not measured at the start (default 5)\n"
            "  --duration S        measured seconds after the warm-up (default 30, or none\n"
            "                      with --requests)\n"
            "  --requests N        end the window after N finished requests\n"
            "  --ramp S            start the streams evenly over the first S seconds (default\n"
            "                      0: all at once); equal-length requests started together\n"
            "                      stay in lockstep, every round prefilled in one burst\n"
            "  --max-tokens N      max_tokens of each request (default 128)\n"
            "  --prompt-tokens N   prompt of about N tokens (default 128)\n"
            "  --api-key KEY       Authorization: Bearer KEY\n"
            "  --timeout S         a request without a complete answer after S seconds\n"
            "                      fails (default 600; 0 = none)\n"
            "  --no-ignore-eos     do not send ignore_eos (for servers without it)\n"
            "Prints one JSON object on stdout (see print_report() in bench/loadgen.c).\n");
}

static int split_names(lg_t *g, const char *list, int sep) {
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, sep);
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && (p[n - 1] == '\r' || p[n - 1] == ' ')) n--;
        if (n) {
            g->names = xrealloc(g->names, (size_t)(g->n_names + 1) * sizeof *g->names);
            g->names[g->n_names] = strndup(p, n);
            g->n_names++;
        }
        if (!e) break;
        p = e + 1;
    }
    return g->n_names;
}

static int read_names_file(lg_t *g, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    sbuf_t b = {0};
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) sb_add(&b, tmp, n);
    fclose(f);
    if (b.s) split_names(g, b.s, '\n');
    free(b.s);
    return 0;
}

static int resolve(lg_t *g) {
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", g->port);
    int rc = getaddrinfo(g->host, port, &hints, &ai);
    if (rc || !ai) {
        fprintf(stderr, "loadgen: cannot resolve %s: %s\n", g->host, gai_strerror(rc));
        return -1;
    }
    memcpy(&g->addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    return 0;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"host", required_argument, 0, 'h'},        {"port", required_argument, 0, 'p'},
        {"concurrency", required_argument, 0, 'c'}, {"models", required_argument, 0, 'm'},
        {"models-file", required_argument, 0, 'M'}, {"zipf", required_argument, 0, 'z'},
        {"seed", required_argument, 0, 's'},        {"warmup", required_argument, 0, 'w'},
        {"duration", required_argument, 0, 'd'},    {"requests", required_argument, 0, 'n'},
        {"max-tokens", required_argument, 0, 't'},  {"prompt-tokens", required_argument, 0, 'P'},
        {"api-key", required_argument, 0, 'k'},     {"timeout", required_argument, 0, 'T'},
        {"no-ignore-eos", no_argument, 0, 'E'},     {"help", no_argument, 0, 'H'},
        {"ramp", required_argument, 0, 'R'},
        {0, 0, 0, 0}};
    static lg_t g;
    snprintf(g.host, sizeof g.host, "127.0.0.1");
    g.port = 8080;
    g.conc = 1;
    g.max_tokens = 128;
    g.prompt_tokens = 128;
    g.ignore_eos = 1;
    g.warmup = 5;
    g.duration = -1;
    g.timeout = 600;
    uint64_t seed = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'h': snprintf(g.host, sizeof g.host, "%s", optarg); break;
        case 'p': g.port = atoi(optarg); break;
        case 'c': g.conc = atoi(optarg); break;
        case 'm': split_names(&g, optarg, ','); break;
        case 'M':
            if (read_names_file(&g, optarg)) {
                fprintf(stderr, "loadgen: cannot read %s\n", optarg);
                return 2;
            }
            break;
        case 'z': g.zipf_s = atof(optarg); break;
        case 's': seed = strtoull(optarg, NULL, 10); break;
        case 'w': g.warmup = atof(optarg); break;
        case 'd': g.duration = atof(optarg); break;
        case 'n': g.max_requests = atol(optarg); break;
        case 't': g.max_tokens = atoi(optarg); break;
        case 'P': g.prompt_tokens = atoi(optarg); break;
        case 'k': g.api_key = optarg; break;
        case 'T': g.timeout = atof(optarg); break;
        case 'E': g.ignore_eos = 0; break;
        case 'R': g.ramp = atof(optarg); break;
        case 'H': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (g.duration < 0) g.duration = g.max_requests > 0 ? 0 : 30;
    if (!g.n_names || g.conc < 1 || g.conc > 65536 || g.port < 1 || g.port > 65535 ||
        g.max_tokens < 1 || g.prompt_tokens < 1 || g.warmup < 0 || g.ramp < 0 ||
        (g.duration <= 0 && g.max_requests <= 0)) {
        usage(stderr);
        return 2;
    }
    if (resolve(&g)) return 2;
    g.rng = seed * 0x2545F4914F6CDD1DULL + 1;
    g.prompt_seed = splitmix64(&(uint64_t){seed ^ 0x5DEECE66DULL});
    if (g.zipf_s > 0) {
        g.zipf_cdf = xrealloc(NULL, (size_t)g.n_names * sizeof *g.zipf_cdf);
        double acc = 0;
        for (int i = 0; i < g.n_names; i++) g.zipf_cdf[i] = acc += pow(i + 1.0, -g.zipf_s);
    }
    g.loop = uv_default_loop();
    g.conns = calloc((size_t)g.conc, sizeof *g.conns);
    if (!g.conns) return 1;
    uv_timer_init(g.loop, &g.tick);
    g.tick.data = &g;
    g.t0 = uv_hrtime();
    if (g.warmup == 0) g.tw0 = g.t0;
    uv_timer_start(&g.tick, on_tick, 20, 20);
    for (int i = 0; i < g.conc; i++) {
        conn_t *cn = &g.conns[i];
        cn->lg = &g;
        cn->id = i;
        cn->rec = -1;
        uv_timer_init(g.loop, &cn->backoff);
        cn->backoff.data = cn;
        uv_timer_start(&cn->backoff, on_backoff, (uint64_t)(g.ramp * 1e3 * i / g.conc), 0);
    }
    uv_run(g.loop, UV_RUN_DEFAULT);
    print_report(&g);
    uv_loop_close(g.loop);
    for (long i = 0; i < g.n_recs; i++) free(g.recs[i].chunk_t);
    for (int i = 0; i < g.conc; i++) free(g.conns[i].line), free(g.conns[i].sse);
    for (int i = 0; i < g.n_names; i++) free(g.names[i]);
    free(g.recs), free(g.conns), free(g.names), free(g.zipf_cdf);
    return 0;
}
