/* srv_metrics.c: Prometheus metrics registry; see srv_metrics.h for the series and the policy.
 *
 * All numbers live in preallocated structs guarded by one mutex. Updates only add to them.
 * Rendering copies them under the lock (a memcpy of (2 + n_named) slots of ~4.8 KB each) and
 * formats the copy without the lock, so a slow scrape never holds up the engine thread.
 */
#include "srv_metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llm_error.h"

/* ---- types ---- */

#define NEL(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define HIST_MAX 20 /* most finite buckets of any histogram below */

typedef struct hist_def_s {
    const char *name;
    const char *help; /* no backslash or newline: printed without escaping */
    const double *le; /* (nb) strictly increasing upper bounds */
    int nb;
} hist_def_t;

/* n[i] counts observations v with le[i-1] < v <= le[i]; n[nb] those above le[nb-1]. The
 * exposition's cumulative buckets are summed at render time, so an update touches one word. */
typedef struct hist_s {
    double sum;
    uint64_t n[HIST_MAX + 1];
} hist_t;

static const double LAT_LE[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                0.3,   0.5,    0.75,  1,    2.5,   5,    10,    20,  30,   60};
static const double LOAD_LE[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                 0.5,   1,      2.5,   5,    10,    20,   30,  60};
static const double TOK_LE[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
static const double ADP_LE[] = {0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64};

enum { H_TTFT, H_ITL, H_E2E, H_QUEUE, N_SLOT_HIST };
static const hist_def_t SLOT_HIST[N_SLOT_HIST] = {
    {"loramux_time_to_first_token_seconds",
     "Time from request arrival to its first generated token.", LAT_LE, NEL(LAT_LE)},
    {"loramux_inter_token_latency_seconds",
     "Time between consecutive generated tokens of one request.", LAT_LE, NEL(LAT_LE)},
    {"loramux_e2e_request_latency_seconds",
     "Time from request arrival to its completion.", LAT_LE, NEL(LAT_LE)},
    {"loramux_request_queue_time_seconds",
     "Time a request waited before its first engine step.", LAT_LE, NEL(LAT_LE)},
};

enum { H_STEP_S, H_STEP_TOK, H_STEP_ADP, H_LOAD_S, N_GLOB_HIST };
static const hist_def_t GLOB_HIST[N_GLOB_HIST] = {
    {"loramux_engine_step_seconds", "Duration of one engine step.", LAT_LE, NEL(LAT_LE)},
    {"loramux_engine_step_tokens", "Tokens (prefill and decode) processed by one engine step.",
     TOK_LE, NEL(TOK_LE)},
    {"loramux_engine_step_adapters", "Distinct adapters in the batch of one engine step.", ADP_LE,
     NEL(ADP_LE)},
    {"loramux_adapter_load_seconds", "Duration of successful adapter loads.", LOAD_LE,
     NEL(LOAD_LE)},
};

/* HTTP status index: 1 .. 500 for codes 100 .. 599, 0 for anything else ("unknown"). */
#define N_STATUS 501

/* The numbers of one adapter label value. */
typedef struct slot_s {
    uint64_t req[N_STATUS];
    uint64_t prompt_tok, gen_tok;
    hist_t h[N_SLOT_HIST];
} slot_t;

/* The numbers not tied to an adapter label. */
typedef struct totals_s {
    uint64_t loads, evictions, load_failures;
    long long running, waiting, kv_used, kv_total, adapters_resident, adapter_bytes;
    hist_t h[N_GLOB_HIST];
    int n_named;   /* slots claimed, 0 .. k; never decreases */
    int lora_set;  /* srv_met_lora_info() called at least once */
    int max_lora;
    double lora_ts; /* Unix seconds */
} totals_t;

struct srv_met_s {
    /* private; everything below mu is guarded by it */
    pthread_mutex_t mu;
    int k;           /* max named label values */
    totals_t t;
    slot_t *slot;    /* (2 + k): SRV_MET_BASE, SRV_MET_OTHER, then named slot i at 2 + i */
    char **name;     /* (k) owned: the name as resolved; set once, immutable afterwards */
    char **label;    /* (k) owned: name with invalid UTF-8 replaced by U+FFFD */
    uint64_t *hash;  /* (k) FNV-1a of name */
    char *lora_run, *lora_wait; /* owned, capacities below; NULL before the first lora_info */
    size_t cap_run, cap_wait;
};

/* ---- helpers: strings ---- */

static uint64_t fnv1a(const char *s) {
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Length of the valid UTF-8 sequence at s, or 0 if s starts an invalid one. Rejects overlong
 * forms, surrogates and code points above U+10FFFF, as Go's utf8.ValidString does: Prometheus
 * rejects the whole scrape if one label value is not valid UTF-8. Stops at a NUL. */
static size_t utf8_seq(const unsigned char *s) {
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

#define REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */

/* Returns: new copy of s with every invalid byte replaced by U+FFFD (caller frees), or NULL. */
static char *utf8_clean(const char *s) {
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t k = utf8_seq(p);
        if (k == 0) {
            memcpy(o, REPLACEMENT, 3), o += 3, p++;
        } else {
            memcpy(o, p, k), o += k, p += k;
        }
    }
    *o = '\0';
    return out;
}

/* Growable output buffer; after a failed allocation it stays in the oom state and drops input. */
typedef struct sb_s {
    char *p;
    size_t len, cap;
    int oom;
} sb_t;

static int sb_reserve(sb_t *b, size_t n) {
    if (b->oom) return -1;
    if (b->len + n + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p, b->cap = cap;
    return 0;
}

static void sb_put(sb_t *b, const char *s, size_t n) {
    if (sb_reserve(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sb_t *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sb_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb_t *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    if (sb_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A label value: \ " and newline escaped as the text format requires, invalid UTF-8 replaced. */
static void sb_label_value(sb_t *b, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t k = utf8_seq(p);
        if (k == 0) {
            sb_put(b, REPLACEMENT, 3), p++;
            continue;
        }
        if (*p == '\\')
            sb_put(b, "\\\\", 2);
        else if (*p == '"')
            sb_put(b, "\\\"", 2);
        else if (*p == '\n')
            sb_put(b, "\\n", 2);
        else
            sb_put(b, (const char *)p, k);
        p += k;
    }
}

/* Shortest of %.15g / %.17g that reads back as v, so 0.1 prints as 0.1 and sums stay exact. */
static void sb_num(sb_t *b, double v) {
    char buf[40];
    if (isnan(v)) {
        sb_puts(b, "NaN");
    } else if (isinf(v)) {
        sb_puts(b, v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(buf, sizeof buf, "%.15g", v);
        if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
        sb_puts(b, buf);
    }
}

static void sb_family(sb_t *b, const char *name, const char *type, const char *help) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Writes `{adapter="x"` (no closing brace) or nothing when adapter is NULL. */
static void sb_adapter_open(sb_t *b, const char *adapter) {
    if (!adapter) return;
    sb_puts(b, "{adapter=\"");
    sb_label_value(b, adapter);
    sb_puts(b, "\"");
}

/* ---- helpers: histograms ---- */

/* Negative and non-finite values mean "not measured" and are dropped. */
static void hist_obs(hist_t *h, const hist_def_t *d, double v) {
    if (!isfinite(v) || v < 0) return;
    int lo = 0, hi = d->nb; /* first i with v <= le[i]; nb when above every bound */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (v <= d->le[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    h->n[lo]++;
    h->sum += v;
}

/* The samples of one histogram series (the family's HELP/TYPE are written by the caller). */
static void hist_render(sb_t *b, const hist_def_t *d, const hist_t *h, const char *adapter) {
    uint64_t cum = 0;
    for (int i = 0; i <= d->nb; i++) {
        cum += h->n[i];
        sb_printf(b, "%s_bucket", d->name);
        if (adapter) {
            sb_adapter_open(b, adapter);
            sb_puts(b, ",le=\"");
        } else {
            sb_puts(b, "{le=\"");
        }
        if (i < d->nb)
            sb_num(b, d->le[i]);
        else
            sb_puts(b, "+Inf");
        sb_printf(b, "\"} %" PRIu64 "\n", cum);
    }
    sb_printf(b, "%s_sum", d->name);
    sb_adapter_open(b, adapter);
    sb_puts(b, adapter ? "} " : " ");
    sb_num(b, h->sum);
    sb_printf(b, "\n%s_count", d->name);
    sb_adapter_open(b, adapter);
    sb_printf(b, "%s%" PRIu64 "\n", adapter ? "} " : " ", cum);
}

/* ---- helpers: registry ---- */

/* An index given by a caller, mapped to a claimed slot (anything else counts as "other").
 * Caller holds m->mu. */
static int slot_ix(const srv_met_t *m, int a) {
    return a >= 0 && a < 2 + m->t.n_named ? a : SRV_MET_OTHER;
}

static int status_ix(int code) { return code >= 100 && code <= 599 ? code - 99 : 0; }

static double now_unix(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Grows *buf to hold n bytes, keeping its contents. */
static int str_reserve(char **buf, size_t *cap, size_t n) {
    if (n <= *cap) return 0;
    char *p = realloc(*buf, n);
    if (!p) return LLM_ENOMEM;
    *buf = p, *cap = n;
    return 0;
}

/* ---- public API ---- */

srv_met_t *srv_met_create(int max_adapter_labels) {
    if (max_adapter_labels < 0 || max_adapter_labels > SRV_MET_MAX_ADAPTER_LABELS) return NULL;
    srv_met_t *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    size_t k = (size_t)max_adapter_labels;
    m->k = max_adapter_labels;
    m->slot = calloc(2 + k, sizeof *m->slot);
    m->name = calloc(k ? k : 1, sizeof *m->name);
    m->label = calloc(k ? k : 1, sizeof *m->label);
    m->hash = calloc(k ? k : 1, sizeof *m->hash);
    if (!m->slot || !m->name || !m->label || !m->hash) goto fail;
    if (pthread_mutex_init(&m->mu, NULL)) goto fail;
    return m;
fail:
    free(m->hash);
    free(m->label);
    free(m->name);
    free(m->slot);
    free(m);
    return NULL;
}

void srv_met_free(srv_met_t *m) {
    if (!m) return;
    for (int i = 0; i < m->t.n_named; i++) {
        free(m->name[i]);
        free(m->label[i]);
    }
    free(m->hash);
    free(m->label);
    free(m->name);
    free(m->slot);
    free(m->lora_run);
    free(m->lora_wait);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

int srv_met_adapter(srv_met_t *m, const char *name) {
    if (!name || !*name) return SRV_MET_BASE;
    /* A named adapter may not pose as the base model or take the aggregate's label. */
    if (!m || !strcmp(name, "base") || !strcmp(name, "other")) return SRV_MET_OTHER;
    uint64_t h = fnv1a(name);
    int ix = SRV_MET_OTHER;
    pthread_mutex_lock(&m->mu);
    int n = m->t.n_named;
    for (int i = 0; i < n; i++) {
        if (m->hash[i] == h && !strcmp(m->name[i], name)) {
            ix = 2 + i;
            goto out;
        }
    }
    if (n == m->k) goto out;
    /* Claiming a slot allocates under the lock; it happens at most k times per registry. */
    char *nm = strdup(name), *lb = utf8_clean(name);
    int clash = !nm || !lb || !strcmp(lb, "base") || !strcmp(lb, "other");
    for (int i = 0; i < n && !clash; i++) clash = !strcmp(m->label[i], lb);
    if (clash) { /* only names with invalid UTF-8 can clash after cleaning */
        free(nm);
        free(lb);
        goto out;
    }
    m->name[n] = nm;
    m->label[n] = lb;
    m->hash[n] = h;
    m->t.n_named = n + 1;
    ix = 2 + n;
out:
    pthread_mutex_unlock(&m->mu);
    return ix;
}

void srv_met_request_done(srv_met_t *m, int adapter, int http_status, int prompt_tokens,
                          int gen_tokens, double e2e_s, double queue_s, double ttft_s) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    slot_t *s = &m->slot[slot_ix(m, adapter)];
    s->req[status_ix(http_status)]++;
    if (prompt_tokens > 0) s->prompt_tok += (uint64_t)prompt_tokens;
    if (gen_tokens > 0) s->gen_tok += (uint64_t)gen_tokens;
    hist_obs(&s->h[H_E2E], &SLOT_HIST[H_E2E], e2e_s);
    hist_obs(&s->h[H_QUEUE], &SLOT_HIST[H_QUEUE], queue_s);
    hist_obs(&s->h[H_TTFT], &SLOT_HIST[H_TTFT], ttft_s);
    pthread_mutex_unlock(&m->mu);
}

void srv_met_itl(srv_met_t *m, const int *adapters, const double *seconds, int n) {
    if (!m || !adapters || !seconds || n <= 0) return;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < n; i++)
        hist_obs(&m->slot[slot_ix(m, adapters[i])].h[H_ITL], &SLOT_HIST[H_ITL], seconds[i]);
    pthread_mutex_unlock(&m->mu);
}

void srv_met_step(srv_met_t *m, double seconds, int tokens, int distinct_adapters) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    hist_obs(&m->t.h[H_STEP_S], &GLOB_HIST[H_STEP_S], seconds);
    hist_obs(&m->t.h[H_STEP_TOK], &GLOB_HIST[H_STEP_TOK], (double)tokens);
    hist_obs(&m->t.h[H_STEP_ADP], &GLOB_HIST[H_STEP_ADP], (double)distinct_adapters);
    pthread_mutex_unlock(&m->mu);
}

void srv_met_gauges(srv_met_t *m, int running, int waiting, int kv_used, int kv_total,
                    int adapters_resident, long long adapter_bytes) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->t.running = running;
    m->t.waiting = waiting;
    m->t.kv_used = kv_used;
    m->t.kv_total = kv_total;
    m->t.adapters_resident = adapters_resident;
    m->t.adapter_bytes = adapter_bytes;
    pthread_mutex_unlock(&m->mu);
}

void srv_met_adapter_load(srv_met_t *m, double seconds, int ok) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    if (ok) {
        m->t.loads++;
        hist_obs(&m->t.h[H_LOAD_S], &GLOB_HIST[H_LOAD_S], seconds);
    } else {
        m->t.load_failures++;
    }
    pthread_mutex_unlock(&m->mu);
}

void srv_met_adapter_evicted(srv_met_t *m) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->t.evictions++;
    pthread_mutex_unlock(&m->mu);
}

int srv_met_lora_info(srv_met_t *m, int max_lora, const char *running_csv,
                      const char *waiting_csv) {
    if (!m) return 0;
    const char *run = running_csv ? running_csv : "", *wait = waiting_csv ? waiting_csv : "";
    size_t nr = strlen(run) + 1, nw = strlen(wait) + 1;
    double ts = now_unix();
    int rc = 0;
    pthread_mutex_lock(&m->mu);
    /* Grow both before copying either, so a failure keeps the previous value whole. */
    if ((rc = str_reserve(&m->lora_run, &m->cap_run, nr)) ||
        (rc = str_reserve(&m->lora_wait, &m->cap_wait, nw)))
        goto out;
    memcpy(m->lora_run, run, nr);
    memcpy(m->lora_wait, wait, nw);
    m->t.max_lora = max_lora;
    m->t.lora_ts = ts;
    m->t.lora_set = 1;
out:
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* Label of slot index i; named labels are immutable once claimed, so reading them after the
 * lock is released is safe. */
static const char *slot_label(const srv_met_t *m, int i) {
    return i == SRV_MET_BASE ? "base" : i == SRV_MET_OTHER ? "other" : m->label[i - 2];
}

/* i-th slot in output order: base, the named slots in claim order, other. */
static int slot_at(int i, int n) {
    return i == 0 ? SRV_MET_BASE : i == n - 1 ? SRV_MET_OTHER : i + 1;
}

static void render_token_counter(sb_t *b, const srv_met_t *m, const slot_t *s, int n, int gen) {
    const char *name = gen ? "loramux_generation_tokens_total" : "loramux_prompt_tokens_total";
    sb_family(b, name, "counter",
              gen ? "Generated tokens of finished requests."
                  : "Prompt tokens of finished requests.");
    for (int i = 0; i < n; i++) {
        int ix = slot_at(i, n);
        sb_puts(b, name);
        sb_adapter_open(b, slot_label(m, ix));
        sb_printf(b, "} %" PRIu64 "\n", gen ? s[ix].gen_tok : s[ix].prompt_tok);
    }
}

static void render_gauge(sb_t *b, const char *name, const char *help, long long v) {
    sb_family(b, name, "gauge", help);
    sb_printf(b, "%s %lld\n", name, v);
}

static void render_counter(sb_t *b, const char *name, const char *help, uint64_t v) {
    sb_family(b, name, "counter", help);
    sb_printf(b, "%s %" PRIu64 "\n", name, v);
}

static void render(sb_t *b, const srv_met_t *m, const totals_t *t, const slot_t *s, int n,
                   const char *run, const char *wait) {
    sb_family(b, "loramux_requests_total", "counter",
              "Finished requests by adapter and HTTP status code.");
    for (int i = 0; i < n; i++) {
        int ix = slot_at(i, n);
        for (int st = 1; st <= N_STATUS; st++) {
            int sx = st % N_STATUS; /* 1 .. 500, then 0 ("unknown") last */
            if (!s[ix].req[sx]) continue;
            sb_puts(b, "loramux_requests_total");
            sb_adapter_open(b, slot_label(m, ix));
            if (sx)
                sb_printf(b, ",status=\"%d\"} %" PRIu64 "\n", sx + 99, s[ix].req[sx]);
            else
                sb_printf(b, ",status=\"unknown\"} %" PRIu64 "\n", s[ix].req[sx]);
        }
    }
    render_token_counter(b, m, s, n, 0);
    render_token_counter(b, m, s, n, 1);
    for (int h = 0; h < N_SLOT_HIST; h++) {
        sb_family(b, SLOT_HIST[h].name, "histogram", SLOT_HIST[h].help);
        for (int i = 0; i < n; i++) {
            int ix = slot_at(i, n);
            hist_render(b, &SLOT_HIST[h], &s[ix].h[h], slot_label(m, ix));
        }
    }

    render_gauge(b, "loramux_requests_running", "Requests in the running batch.", t->running);
    render_gauge(b, "loramux_requests_waiting", "Requests queued for admission.", t->waiting);
    render_gauge(b, "loramux_kv_blocks_used", "KV cache blocks in use.", t->kv_used);
    render_gauge(b, "loramux_kv_blocks_total", "KV cache blocks in the pool.", t->kv_total);
    render_gauge(b, "loramux_adapters_resident", "Adapters loaded in memory.",
                 t->adapters_resident);
    render_gauge(b, "loramux_adapter_bytes_resident", "Bytes of adapter weights in memory.",
                 t->adapter_bytes);
    render_counter(b, "loramux_adapter_loads_total", "Successful adapter loads.", t->loads);
    render_counter(b, "loramux_adapter_evictions_total", "Adapters evicted from memory.",
                   t->evictions);
    render_counter(b, "loramux_adapter_load_failures_total", "Failed adapter loads.",
                   t->load_failures);
    for (int h = 0; h < N_GLOB_HIST; h++) {
        /* Step histograms first, then adapter loads: same order as GLOB_HIST. */
        sb_family(b, GLOB_HIST[h].name, "histogram", GLOB_HIST[h].help);
        hist_render(b, &GLOB_HIST[h], &t->h[h], NULL);
    }

    /* vLLM-compatible series, for LoRA-aware routers. */
    render_gauge(b, "vllm:num_requests_running", "Requests in the running batch (vLLM name).",
                 t->running);
    render_gauge(b, "vllm:num_requests_waiting", "Requests queued (vLLM name).", t->waiting);
    double usage = t->kv_total > 0 ? (double)t->kv_used / (double)t->kv_total : 0.0;
    usage = usage < 0 ? 0 : usage > 1 ? 1 : usage;
    sb_family(b, "vllm:kv_cache_usage_perc", "gauge", "KV cache usage, 0 to 1 (vLLM name).");
    sb_puts(b, "vllm:kv_cache_usage_perc ");
    sb_num(b, usage);
    sb_puts(b, "\n");
    sb_family(b, "vllm:lora_requests_info", "gauge",
              "Adapters of running and waiting requests; the value is the Unix time of the "
              "last update (vLLM name).");
    if (t->lora_set) {
        sb_printf(b, "vllm:lora_requests_info{max_lora=\"%d\",running_lora_adapters=\"",
                  t->max_lora);
        sb_label_value(b, run);
        sb_puts(b, "\",waiting_lora_adapters=\"");
        sb_label_value(b, wait);
        sb_puts(b, "\"} ");
        sb_num(b, t->lora_ts);
        sb_puts(b, "\n");
    }
    uint64_t prompt = 0, gen = 0;
    for (int i = 0; i < n; i++) prompt += s[i].prompt_tok, gen += s[i].gen_tok;
    render_counter(b, "vllm:prompt_tokens_total", "Prompt tokens of finished requests (vLLM name).",
                   prompt);
    render_counter(b, "vllm:generation_tokens_total",
                   "Generated tokens of finished requests (vLLM name).", gen);
}

char *srv_met_render(srv_met_t *m) {
    if (!m) return NULL;
    char *run = NULL, *wait = NULL;
    sb_t b = {0};
    pthread_mutex_lock(&m->mu);
    totals_t t = m->t;
    int n = 2 + t.n_named;
    slot_t *s = malloc((size_t)n * sizeof *s);
    if (s) memcpy(s, m->slot, (size_t)n * sizeof *s);
    if (t.lora_set) {
        run = strdup(m->lora_run);
        wait = strdup(m->lora_wait);
    }
    pthread_mutex_unlock(&m->mu);
    if (!s || (t.lora_set && (!run || !wait))) goto fail;

    render(&b, m, &t, s, n, run, wait);
    if (b.oom) goto fail;
    free(s);
    free(run);
    free(wait);
    return b.p;
fail:
    free(b.p);
    free(wait);
    free(run);
    free(s);
    return NULL;
}
