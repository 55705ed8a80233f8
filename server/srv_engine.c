/* srv_engine.c: the engine thread (see srv_engine.h for the policy). */
#include "srv_engine.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "forward.h"
#include "linear.h"
#include "kv_cache.h"

/* ---- types ---- */

typedef struct seq_s {
    srv_request_t *req;
    int choice;
    const int32_t *prompt;
    int n_prompt, n_fed;
    int32_t next;            /* sampled token to feed next step; -1 before the first */
    core_seq_t kv;
    int32_t reserved;        /* KV blocks reserved for this sequence */
    smp_sampler_t smp;
    tok_stream_t stream;
    char *pend;              /* decoded text held back (may start a stop string) */
    size_t pend_len, pend_cap;
    double t_last;           /* time of the last token, for inter-token latency */
    int done;
} seq_t;

typedef struct rq_node_s {
    srv_request_t *req;
    struct rq_node_s *next;
} rq_node_t;

/* One FIFO of waiting requests per adapter key. */
typedef struct {
    char key[256];
    rq_node_t *head, *tail;
} fifo_t;

struct srv_engine_s {
    const core_model_t *m;
    const tok_tokenizer_t *tok;
    srv_met_t *met;
    srv_engine_opts_t o;
    core_kv_pool_t *pool;
    core_fwd_t *fwd;
    adp_hook_t *hook;
    int32_t kv_reserved;     /* blocks promised to running sequences */

    /* engine thread only */
    seq_t **run;             /* (max_running) */
    int n_run;
    unsigned step_no;
    uintptr_t lora_sig;
    int lora_published;
    fifo_t *fifos;
    int n_fifos, cap_fifos, rr;
    int n_waiting;           /* requests in fifos */
    core_step_seg_t *segs;
    seq_t **seg_seq;
    float *logits;
    float *lp_scratch;
    char *piece;
    size_t piece_cap;
    int *itl_adapter;
    double *itl_s;
    srv_request_t **woken;   /* (max_running) requests with news from this step */
    int n_woken;

    /* shared with other threads, under mu */
    pthread_mutex_t mu;
    rq_node_t *in_head, *in_tail;
    int n_incoming;
    int n_active;            /* requests submitted and not yet finished */
    int n_admitted;          /* of those, admitted to run */
    int draining, stopping;
    srv_engine_stats_t stats;

    uv_loop_t loop;
    uv_async_t wake;
    pthread_t thread;
};

/* ---- helpers ---- */

static int eos(const srv_engine_t *e, int32_t id) {
    for (int i = 0; i < e->m->cfg.n_eos; i++)
        if (e->m->cfg.eos_ids[i] == id) return 1;
    return tok_eos_id(e->tok) == id;
}

static void wake(srv_engine_t *e) { uv_async_send(&e->wake); }

static void on_wake(uv_async_t *h) { (void)h; /* the loop returns; the thread re-checks */ }

static int32_t seq_blocks(const srv_request_t *r, int prompt_idx) {
    return core_kv_blocks_for(r->prompt_lens[prompt_idx] + r->max_tokens);
}

/* Marks one choice finished (with r->mu held) and wakes waiters. */
static void finish_choice(srv_request_t *r, int choice, core_finish_t f, const char *reason) {
    srv_choice_t *c = &r->choices[choice];
    if (c->finished) return;
    c->finished = 1;
    c->finish = f;
    c->finish_reason = reason;
    r->n_done++;
    r->version++;
    pthread_cond_broadcast(&r->cv);
}

/* Emits the part of s->pend that cannot begin a stop string; with flush, emits all of it.
 * Returns 1 when a stop string was found (the text before it is emitted). With r->mu held. */
static int emit_pending(seq_t *s, int flush) {
    srv_request_t *r = s->req;
    srv_choice_t *c = &r->choices[s->choice];
    long at = core_stop_find(s->pend, s->pend_len, 0, (const char *const *)r->stop, r->n_stop);
    size_t n = s->pend_len;
    if (at >= 0) {
        n = (size_t)at;
    } else if (!flush) {
        /* hold back the longest suffix that is a prefix of some stop string */
        size_t hold = 0;
        for (int i = 0; i < r->n_stop; i++) {
            size_t sl = strlen(r->stop[i]);
            for (size_t k = sl > 1 ? sl - 1 : 0; k > hold; k--) {
                if (k <= s->pend_len && memcmp(s->pend + s->pend_len - k, r->stop[i], k) == 0) {
                    hold = k;
                    break;
                }
            }
        }
        n = s->pend_len - hold;
    }
    if (n > 0) {
        srv_choice_append(c, s->pend, n);
        memmove(s->pend, s->pend + n, s->pend_len - n);
        s->pend_len -= n;
        r->version++;
    }
    return at >= 0;
}

static int pend_add(seq_t *s, const char *p, int n) {
    if (s->pend_len + (size_t)n + 1 > s->pend_cap) {
        size_t cap = s->pend_cap ? s->pend_cap * 2 : 128;
        while (cap < s->pend_len + (size_t)n + 1) cap *= 2;
        char *np = realloc(s->pend, cap);
        if (!np) return LLM_ENOMEM;
        s->pend = np;
        s->pend_cap = cap;
    }
    memcpy(s->pend + s->pend_len, p, (size_t)n);
    s->pend_len += (size_t)n;
    return 0;
}

static void seq_free(srv_engine_t *e, seq_t *s) {
    core_seq_deinit(&s->kv);
    e->kv_reserved -= s->reserved;
    smp_deinit(&s->smp);
    free(s->pend);
    free(s);
}

/* Ends a sequence with a finish reason. flush: emit text still held back (EOS, length); not
 * after a stop string (what follows it is dropped) or an abort. */
static void seq_end(srv_engine_t *e, seq_t *s, core_finish_t f, const char *reason, int flush) {
    srv_request_t *r = s->req;
    pthread_mutex_lock(&r->mu);
    if (flush) {
        char tail[16];
        int w = tok_stream_flush(e->tok, &s->stream, tail, sizeof tail);
        if (w > 0) pend_add(s, tail, w);
        emit_pending(s, 1);
    }
    finish_choice(r, s->choice, f, reason);
    int all = r->n_done == r->n_choices;
    pthread_mutex_unlock(&r->mu);
    s->done = 1;
    if (all) {
        pthread_mutex_lock(&e->mu);
        e->n_active--;
        e->n_admitted--;
        pthread_mutex_unlock(&e->mu);
    }
}

/* ---- admission ---- */

static fifo_t *fifo_for(srv_engine_t *e, const char *key) {
    for (int i = 0; i < e->n_fifos; i++)
        if (strcmp(e->fifos[i].key, key) == 0) return &e->fifos[i];
    if (e->n_fifos == e->cap_fifos) {
        int cap = e->cap_fifos ? e->cap_fifos * 2 : 16;
        fifo_t *nf = realloc(e->fifos, (size_t)cap * sizeof *nf);
        if (!nf) return NULL;
        e->fifos = nf;
        e->cap_fifos = cap;
    }
    fifo_t *f = &e->fifos[e->n_fifos++];
    memset(f, 0, sizeof *f);
    snprintf(f->key, sizeof f->key, "%s", key);
    return f;
}

/* Moves newly submitted requests into their adapter's FIFO. */
static void take_incoming(srv_engine_t *e) {
    pthread_mutex_lock(&e->mu);
    rq_node_t *n = e->in_head;
    e->in_head = e->in_tail = NULL;
    e->n_incoming = 0;
    pthread_mutex_unlock(&e->mu);
    while (n) {
        rq_node_t *next = n->next;
        n->next = NULL;
        fifo_t *f = fifo_for(e, n->req->adapter_key);
        if (!f) { /* out of memory: fail the request */
            pthread_mutex_lock(&n->req->mu);
            n->req->error_status = 500;
            snprintf(n->req->error_msg, sizeof n->req->error_msg, "out of memory");
            for (int c = 0; c < n->req->n_choices; c++)
                finish_choice(n->req, c, CORE_FINISH_NONE, "abort");
            pthread_mutex_unlock(&n->req->mu);
            srv_req_unref(n->req);
            free(n);
        } else {
            if (f->tail) f->tail->next = n;
            else f->head = n;
            f->tail = n;
            e->n_waiting++;
        }
        n = next;
    }
}

/* Starts every choice of r as a running sequence. */
static int start_request(srv_engine_t *e, srv_request_t *r) {
    llm_error_t err = {0};
    pthread_mutex_lock(&r->mu);
    r->t_admitted = srv_now();
    pthread_mutex_unlock(&r->mu);
    for (int c = 0; c < r->n_choices; c++) {
        int pi = c / r->n_per_prompt;
        seq_t *s = calloc(1, sizeof *s);
        if (!s) return LLM_ENOMEM;
        s->req = r;
        s->choice = c;
        s->prompt = r->prompts[pi];
        s->n_prompt = r->prompt_lens[pi];
        s->next = -1;
        s->reserved = seq_blocks(r, pi);
        core_seq_init(&s->kv, e->pool, e->m->cfg.max_pos);
        e->kv_reserved += s->reserved;
        smp_params_t sp = r->sampling;
        if (sp.has_seed) sp.seed += (uint64_t)(c % r->n_per_prompt); /* n > 1: distinct draws */
        if (smp_init(&s->smp, &sp, e->m->cfg.vocab_size, &err)) {
            seq_free(e, s);
            return LLM_ENOMEM;
        }
        for (int t = 0; t < s->n_prompt; t++) smp_observe(&s->smp, s->prompt[t], 1);
        tok_stream_init(&s->stream, 1);
        if (tok_has_text(e->tok, s->prompt, (size_t)s->n_prompt)) tok_stream_continue(&s->stream);
        e->run[e->n_run++] = s;
        r->eng_seqs++;
    }
    return 0;
}

static int cmp_set(const adp_set_t *a, const adp_set_t *b);

/* A request waiting this long is admitted in plain round-robin order even when the adapter
 * preference below would pass it over: the preference saves bandwidth, never starves. */
#define SHARED_PREF_MAX_WAIT 0.5

/* Whether admitting r adds an adapter set the running sequences do not have while the step
 * cap on distinct sets is already reached (the new sequence would then sit out steps). */
static int adds_set_over_cap(const srv_engine_t *e, const srv_request_t *r) {
    const int cap = e->o.max_adapters_per_step;
    if (cap <= 0 || r->adapters.n == 0) return 0;
    int distinct = 0, shared = 0;
    for (int i = 0; i < e->n_run && !shared; i++) {
        const adp_set_t *si = &e->run[i]->req->adapters;
        if (si->n == 0) continue;
        if (cmp_set(si, &r->adapters) == 0) shared = 1;
        int first = 1;
        for (int j = 0; j < i && first; j++)
            if (cmp_set(&e->run[j]->req->adapters, si) == 0) first = 0;
        distinct += first;
    }
    return !shared && distinct >= cap;
}

/* Whether r's sequences fit under max_running and the KV blocks not yet reserved. */
static int fits(const srv_engine_t *e, const srv_request_t *r) {
    int32_t need = 0;
    for (int c = 0; c < r->n_choices; c++) need += seq_blocks(r, c / r->n_per_prompt);
    return e->n_run + r->n_choices <= e->o.max_running &&
           e->kv_reserved + need <= e->pool->n_blocks;
}

/* Round-robin over adapter FIFOs: admits heads that fit. With max_adapters_per_step, heads
 * whose adapter set is already running go first while the cap is reached (they fill the step
 * without adding adapter bytes; performance.md §6.4), unless another head has waited longer
 * than SHARED_PREF_MAX_WAIT. */
static void admit(srv_engine_t *e) {
    int progress = 1;
    const double now = srv_now();
    while (progress && e->n_waiting > 0) {
        progress = 0;
        /* is there a head that prefers (shares a running set) or may not be passed over? */
        int prefer = 0;
        if (e->o.max_adapters_per_step > 0)
            for (int k = 0; k < e->n_fifos && !prefer; k++) {
                const rq_node_t *h = e->fifos[k].head;
                if (h && fits(e, h->req) && !adds_set_over_cap(e, h->req)) prefer = 1;
            }
        for (int k = 0; k < e->n_fifos && e->n_waiting > 0; k++) {
            fifo_t *f = &e->fifos[(e->rr + k) % e->n_fifos];
            rq_node_t *n = f->head;
            if (!n) continue;
            srv_request_t *r = n->req;
            if (prefer && !r->cancelled && now - r->t_arrival < SHARED_PREF_MAX_WAIT &&
                adds_set_over_cap(e, r))
                continue;
            int32_t need = 0;
            for (int c = 0; c < r->n_choices; c++) need += seq_blocks(r, c / r->n_per_prompt);
            if (!r->cancelled &&
                (e->n_run + r->n_choices > e->o.max_running ||
                 e->kv_reserved + need > e->pool->n_blocks))
                continue;
            f->head = n->next;
            if (!f->head) f->tail = NULL;
            e->n_waiting--;
            free(n);
            e->rr = (e->rr + k + 1) % e->n_fifos;
            progress = 1;
            if (r->cancelled) {
                pthread_mutex_lock(&r->mu);
                for (int c = 0; c < r->n_choices; c++)
                    finish_choice(r, c, CORE_FINISH_NONE, "abort");
                pthread_mutex_unlock(&r->mu);
                pthread_mutex_lock(&e->mu);
                e->n_active--;
                pthread_mutex_unlock(&e->mu);
                srv_req_unref(r);
                break;
            }
            pthread_mutex_lock(&e->mu);
            e->n_admitted++;
            pthread_mutex_unlock(&e->mu);
            if (start_request(e, r)) {
                pthread_mutex_lock(&r->mu);
                r->error_status = 500;
                snprintf(r->error_msg, sizeof r->error_msg, "out of memory starting request");
                for (int c = 0; c < r->n_choices; c++) /* choices that never started */
                    finish_choice(r, c, CORE_FINISH_NONE, "abort");
                pthread_mutex_unlock(&r->mu);
                for (int i = 0; i < e->n_run; i++)
                    if (e->run[i]->req == r) e->run[i]->done = 1;
                if (r->eng_seqs == 0) {
                    pthread_mutex_lock(&e->mu);
                    e->n_active--;
                    e->n_admitted--;
                    pthread_mutex_unlock(&e->mu);
                    srv_req_unref(r);
                }
            }
            break;
        }
    }
}

/* Ends sequences whose request was cancelled or timed out, then removes finished sequences;
 * the engine's request reference goes with the request's last sequence. */
static void reap(srv_engine_t *e) {
    const double now = srv_now();
    int w = 0;
    for (int i = 0; i < e->n_run; i++) {
        seq_t *s = e->run[i];
        if (!s->done && (s->req->cancelled || (s->req->deadline > 0 && now > s->req->deadline)))
            seq_end(e, s, CORE_FINISH_NONE, "abort", 0);
        if (!s->done) {
            e->run[w++] = s;
            continue;
        }
        srv_request_t *r = s->req;
        seq_free(e, s);
        if (--r->eng_seqs == 0) srv_req_unref(r);
    }
    e->n_run = w;
}

/* ---- one step ---- */

static int cmp_set(const adp_set_t *a, const adp_set_t *b) {
    if (a->n != b->n) return a->n - b->n;
    for (int i = 0; i < a->n; i++) {
        if (a->a[i] != b->a[i]) return a->a[i] < b->a[i] ? -1 : 1;
        if (a->w[i] != b->w[i]) return a->w[i] < b->w[i] ? -1 : 1;
    }
    return 0;
}

static void sort_by_adapter(srv_engine_t *e, int n) {
    /* insertion sort, stable; n <= max_running + a few prompt chunks */
    for (int i = 1; i < n; i++) {
        core_step_seg_t sg = e->segs[i];
        seq_t *ss = e->seg_seq[i];
        int j = i - 1;
        while (j >= 0 && cmp_set(&e->seg_seq[j]->req->adapters, &ss->req->adapters) > 0) {
            e->segs[j + 1] = e->segs[j];
            e->seg_seq[j + 1] = e->seg_seq[j];
            j--;
        }
        e->segs[j + 1] = sg;
        e->seg_seq[j + 1] = ss;
    }
    /* equal sets share one pointer so the hook treats them as one group */
    for (int i = 0; i < n; i++) {
        const adp_set_t *set = &e->seg_seq[i]->req->adapters;
        e->segs[i].adapter = set->n ? set : NULL;
        if (i > 0 && e->segs[i - 1].adapter &&
            cmp_set(e->segs[i - 1].adapter, set) == 0)
            e->segs[i].adapter = e->segs[i - 1].adapter;
    }
}

/* log-softmax helpers for logprobs */
static void fill_logprobs(srv_engine_t *e, const float *lg, int32_t id, int top,
                          srv_tok_info_t *ti) {
    const int V = e->m->cfg.vocab_size;
    float mx = -INFINITY;
    for (int i = 0; i < V; i++)
        if (lg[i] > mx) mx = lg[i];
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp((double)lg[i] - mx);
    const float lse = mx + (float)log(sum);
    ti->id = id;
    ti->logprob = lg[id] - lse;
    ti->n_top = 0;
    if (top > 20) top = 20;
    for (int k = 0; k < top; k++) { /* top-k by repeated selection; k <= 20 */
        int best = -1;
        for (int i = 0; i < V; i++) {
            int taken = 0;
            for (int j = 0; j < ti->n_top; j++) taken |= ti->top[j].id == i;
            if (!taken && (best < 0 || lg[i] > lg[best])) best = i;
        }
        ti->top[ti->n_top++] = (srv_logprob_t){best, lg[best] - lse};
    }
}

static void handle_token(srv_engine_t *e, seq_t *s, const float *lg_raw, float *lg, int *n_itl) {
    srv_request_t *r = s->req;
    srv_tok_info_t ti = {0};
    if (r->logprobs) fill_logprobs(e, lg_raw, 0, r->logprobs - 1, &ti);
    int32_t id = smp_sample(&s->smp, lg);
    if (r->logprobs) {
        const float lse = lg_raw[0] - ti.logprob; /* ti.logprob was for id 0 */
        ti.id = id;
        ti.logprob = lg_raw[id] - lse;
    }
    const double now = srv_now();
    pthread_mutex_lock(&r->mu);
    srv_choice_t *c = &r->choices[s->choice];
    if (r->t_first_token == 0) r->t_first_token = now;
    if (s->t_last > 0 && *n_itl < e->o.max_running) {
        e->itl_adapter[*n_itl] = r->metrics_adapter;
        e->itl_s[(*n_itl)++] = now - s->t_last;
    }
    s->t_last = now;
    if (!r->ignore_eos && eos(e, id)) {
        pthread_mutex_unlock(&r->mu);
        seq_end(e, s, CORE_FINISH_STOP, "stop", 1);
        return;
    }
    c->n_gen++;
    r->completion_tokens++;
    smp_observe(&s->smp, id, 0);
    int w = tok_stream_push(e->tok, &s->stream, id, e->piece, e->piece_cap);
    if (w > 0) pend_add(s, e->piece, w);
    int stopped = emit_pending(s, 0);
    if (r->logprobs) {
        ti.text_end = c->text_len + s->pend_len;
        srv_choice_add_tok(c, &ti);
    }
    r->version++;
    pthread_mutex_unlock(&r->mu);
    if (!r->eng_wake && e->n_woken < e->o.max_running) { /* woken once the step's tokens are in */
        r->eng_wake = 1;
        e->woken[e->n_woken++] = r;
    } else if (!r->eng_wake) { /* list full: cannot happen, one entry per request of the step */
        pthread_cond_broadcast(&r->cv);
    }
    if (stopped) seq_end(e, s, CORE_FINISH_STOP, "stop", 0);
    else if (c->n_gen >= r->max_tokens) seq_end(e, s, CORE_FINISH_LENGTH, "length", 1);
    else s->next = id;
}

/* Steps that sample for fewer sequences leave the worker spinning: their few wake-ups cost
 * less than the parked worker's (~0.1 ms, kern_pool.c). */
#define PARK_MIN_STREAMS 8

/* Wakes the HTTP threads of the requests that got tokens in this step, after all of them are
 * handled and outside their locks. A woken thread needs a core, and with the pool's worker
 * spinning on the other one it took the engine thread's: woken per token, the connections
 * preempted the engine ~33 times in a 32-token step (its involuntary context switches) while
 * it handled the step's tokens. So the pool is parked first and the wake-ups come last.
 * SmolLM shape, 32 streams of `loadgen`, alternating 15-s windows (2026-11-24): handling a
 * step's tokens took 1.92–1.97 ms before, 1.30–1.45 after (timers in a test build); base
 * 1,258/1,238/1,180 → 1,274/1,247/1,254 tok/s; 32 adapters within the noise (medians of 6:
 * 791 → 815). The version bump was made under the lock, so no waiter misses this broadcast. */
static void wake_readers(srv_engine_t *e) {
    for (int i = 0; i < e->n_woken; i++) {
        e->woken[i]->eng_wake = 0;
        pthread_cond_broadcast(&e->woken[i]->cv);
    }
    e->n_woken = 0;
}

/* Whether s may join a step that already holds the adapter sets of segs[0..n): with
 * max_adapters_per_step, a sequence whose set is not yet in the step waits once the cap is
 * reached (the start offset rotates, so every set gets its turn). */
static int set_allowed(srv_engine_t *e, const seq_t *s, int n, int *distinct) {
    const adp_set_t *set = &s->req->adapters;
    if (e->o.max_adapters_per_step <= 0 || set->n == 0) return 1;
    for (int i = 0; i < n; i++)
        if (cmp_set(&e->seg_seq[i]->req->adapters, set) == 0) return 1;
    if (*distinct >= e->o.max_adapters_per_step) return 0;
    (*distinct)++;
    return 1;
}

static void step(srv_engine_t *e) {
    const int budget = e->o.max_step_tokens;
    int n = 0, used = 0, n_sets = 0;
    const int off = e->n_run && e->o.max_adapters_per_step > 0
                        ? (int)(e->step_no++ % (unsigned)e->n_run) : 0;
    for (int k = 0; k < e->n_run; k++) {
        seq_t *s = e->run[(k + off) % e->n_run];
        if (s->done || s->next < 0 || !set_allowed(e, s, n, &n_sets)) continue;
        e->segs[n] = (core_step_seg_t){.seq = &s->kv, .tokens = &s->next, .n_tok = 1,
                                       .logits = CORE_LOGITS_LAST};
        e->seg_seq[n++] = s;
        used++;
    }
    for (int i = 0; i < e->n_run && used < budget; i++) {
        seq_t *s = e->run[i];
        if (s->done || s->n_fed >= s->n_prompt || !set_allowed(e, s, n, &n_sets)) continue;
        int take = s->n_prompt - s->n_fed;
        if (take > budget - used) take = budget - used;
        int last = s->n_fed + take == s->n_prompt;
        e->segs[n] = (core_step_seg_t){.seq = &s->kv, .tokens = s->prompt + s->n_fed,
                                       .n_tok = take,
                                       .logits = last ? CORE_LOGITS_LAST : CORE_LOGITS_NONE};
        e->seg_seq[n++] = s;
        used += take;
    }
    if (n == 0) return;
    sort_by_adapter(e, n);
    int distinct = 0;
    for (int i = 0; i < n; i++)
        if (e->segs[i].adapter && (i == 0 || e->segs[i].adapter != e->segs[i - 1].adapter))
            distinct++;
    llm_error_t err = {0};
    double t0 = srv_now();
    int rc = core_fwd_step(e->fwd, e->segs, n, e->logits, &err);
    if (rc) {
        /* Cannot happen with reserved blocks; fail the step's requests rather than spin. */
        for (int i = 0; i < n; i++) {
            seq_t *s = e->seg_seq[i];
            pthread_mutex_lock(&s->req->mu);
            s->req->error_status = 500;
            snprintf(s->req->error_msg, sizeof s->req->error_msg, "engine: %s", err.msg);
            pthread_mutex_unlock(&s->req->mu);
            seq_end(e, s, CORE_FINISH_NONE, "abort", 0);
        }
        return;
    }
    if (core_fwd_logit_rows(e->segs, n) >= PARK_MIN_STREAMS) /* see wake_readers */
        core_fwd_park(e->fwd);
    int row = 0, n_itl = 0;
    const int V = e->m->cfg.vocab_size;
    for (int i = 0; i < n; i++) {
        seq_t *s = e->seg_seq[i];
        if (e->segs[i].tokens != &s->next) s->n_fed += e->segs[i].n_tok;
        if (e->segs[i].logits == CORE_LOGITS_NONE) continue;
        float *lg = e->logits + (size_t)row++ * V;
        const float *raw = lg;
        if (s->req->logprobs) { /* sampling modifies logits; keep the model's distribution */
            memcpy(e->lp_scratch, lg, (size_t)V * sizeof(float));
            raw = e->lp_scratch;
        }
        handle_token(e, s, raw, lg, &n_itl);
    }
    wake_readers(e);
    if (e->met) {
        srv_met_step(e->met, srv_now() - t0, used, distinct);
        if (n_itl) srv_met_itl(e->met, e->itl_adapter, e->itl_s, n_itl);
    }
}

/* ---- thread ---- */

/* Appends the adapter names of set to csv (skipping names already there). */
static void csv_add_names(char *csv, size_t cap, const adp_set_t *set) {
    for (int i = 0; i < set->n; i++) {
        const char *nm = set->a[i]->name;
        size_t len = strlen(csv), nl = strlen(nm);
        int dup = 0;
        for (const char *p = csv; (p = strstr(p, nm)); p += nl)
            if ((p == csv || p[-1] == ',') && (p[nl] == ',' || p[nl] == '\0')) dup = 1;
        if (dup || len + nl + 2 > cap) continue;
        snprintf(csv + len, cap - len, "%s%s", len ? "," : "", nm);
    }
}

/* vllm:lora_requests_info for LoRA-aware routers: refreshed when the running or waiting
 * adapters change (cheap signature check each loop; strings built only on change). */
static void publish_lora_info(srv_engine_t *e) {
    uintptr_t sig = (uintptr_t)e->n_run * 1000003u + (uintptr_t)e->n_waiting;
    for (int i = 0; i < e->n_run; i++)
        for (int k = 0; k < e->run[i]->req->adapters.n; k++)
            sig = sig * 31u + (uintptr_t)e->run[i]->req->adapters.a[k];
    for (int k = 0; k < e->n_fifos; k++)
        if (e->fifos[k].head) sig = sig * 37u + (uintptr_t)e->fifos[k].head->req;
    if (sig == e->lora_sig && e->lora_published) return;
    e->lora_sig = sig;
    e->lora_published = 1;
    char running[2048] = "", waiting[2048] = "";
    for (int i = 0; i < e->n_run; i++) csv_add_names(running, sizeof running, &e->run[i]->req->adapters);
    for (int k = 0; k < e->n_fifos; k++)
        for (rq_node_t *n = e->fifos[k].head; n; n = n->next)
            csv_add_names(waiting, sizeof waiting, &n->req->adapters);
    int max_lora = e->o.max_adapters_per_step > 0 ? e->o.max_adapters_per_step : e->o.max_running;
    srv_met_lora_info(e->met, max_lora, running, waiting);
}

static void publish_stats(srv_engine_t *e) {
    if (e->met) publish_lora_info(e);
    pthread_mutex_lock(&e->mu);
    e->stats.running = e->n_run;
    e->stats.waiting = e->n_waiting + e->n_incoming;
    e->stats.kv_used = e->pool->n_blocks - e->pool->n_free;
    e->stats.kv_total = e->pool->n_blocks;
    pthread_mutex_unlock(&e->mu);
}

static void abort_all(srv_engine_t *e) {
    take_incoming(e);
    for (int i = 0; i < e->n_run; i++)
        if (!e->run[i]->done) seq_end(e, e->run[i], CORE_FINISH_NONE, "abort", 0);
    reap(e);
    for (int k = 0; k < e->n_fifos; k++) {
        while (e->fifos[k].head) {
            rq_node_t *n = e->fifos[k].head;
            e->fifos[k].head = n->next;
            pthread_mutex_lock(&n->req->mu);
            for (int c = 0; c < n->req->n_choices; c++)
                finish_choice(n->req, c, CORE_FINISH_NONE, "abort");
            pthread_mutex_unlock(&n->req->mu);
            srv_req_unref(n->req);
            free(n);
        }
        e->fifos[k].tail = NULL;
    }
    e->n_waiting = 0;
}

static void *engine_main(void *arg) {
    srv_engine_t *e = arg;
    for (;;) {
        take_incoming(e);
        reap(e);
        admit(e);
        publish_stats(e);
        pthread_mutex_lock(&e->mu);
        int stopping = e->stopping;
        pthread_mutex_unlock(&e->mu);
        if (stopping) break;
        if (e->n_run == 0) {
            uv_run(&e->loop, UV_RUN_ONCE); /* sleeps until submit/cancel/stop wakes it */
            continue;
        }
        step(e);
    }
    abort_all(e);
    publish_stats(e);
    return NULL;
}

/* ---- public API ---- */

int srv_engine_start(const core_model_t *m, const tok_tokenizer_t *tok, srv_met_t *met,
                     const srv_engine_opts_t *o, srv_engine_t **out, llm_error_t *err) {
    srv_engine_t *e = calloc(1, sizeof *e);
    if (!e) return llm_err_set(err, LLM_ENOMEM, "out of memory");
    e->m = m;
    e->tok = tok;
    e->met = met;
    e->o = *o;
    if (e->o.max_step_tokens < 1) e->o.max_step_tokens = 512;
    if (e->o.max_running < 1) e->o.max_running = 32;
    const int max_tok = e->o.max_step_tokens + e->o.max_running;
    int32_t blocks = o->kv_blocks > 0 ? o->kv_blocks
                                      : e->o.max_running * core_kv_blocks_for(m->cfg.max_pos);
    int rc;
    core_lin_hook_t lh;
    pthread_mutex_init(&e->mu, NULL);
    if ((rc = core_kv_pool_create_as(&m->cfg, blocks, core_kv_type_for(m->wtype), &e->pool)) ||
        (rc = core_fwd_create(m, max_tok, e->o.n_threads, &e->fwd)) ||
        (rc = adp_hook_create(m, max_tok, &e->hook))) {
        rc = llm_err_set(err, rc, "cannot allocate the KV cache (%d blocks) or scratch", blocks);
        goto fail;
    }
    adp_hook_bind(e->hook, &lh);
    core_fwd_set_hook(e->fwd, &lh);
    e->piece_cap = tok_max_piece_bytes(tok) + 16;
    e->run = calloc((size_t)e->o.max_running, sizeof *e->run);
    e->segs = calloc((size_t)max_tok, sizeof *e->segs);
    e->seg_seq = calloc((size_t)max_tok, sizeof *e->seg_seq);
    e->logits = malloc((size_t)max_tok * m->cfg.vocab_size * sizeof(float));
    e->lp_scratch = malloc((size_t)m->cfg.vocab_size * sizeof(float));
    e->piece = malloc(e->piece_cap);
    e->itl_adapter = calloc((size_t)e->o.max_running, sizeof(int));
    e->itl_s = calloc((size_t)e->o.max_running, sizeof(double));
    e->woken = calloc((size_t)e->o.max_running, sizeof *e->woken);
    if (!e->run || !e->segs || !e->seg_seq || !e->logits || !e->lp_scratch || !e->piece ||
        !e->itl_adapter || !e->itl_s || !e->woken) {
        rc = llm_err_set(err, LLM_ENOMEM, "out of memory");
        goto fail;
    }
    /* Warm-up: one real step, so the first request does not pay for page faults. */
    {
        core_seq_t s;
        core_seq_init(&s, e->pool, m->cfg.max_pos);
        int32_t t = m->cfg.bos_id >= 0 ? m->cfg.bos_id : 0;
        core_step_seg_t sg = {.seq = &s, .tokens = &t, .n_tok = 1, .logits = CORE_LOGITS_LAST};
        rc = core_fwd_step(e->fwd, &sg, 1, e->logits, err);
        core_seq_deinit(&s);
        if (rc) goto fail;
    }
    uv_loop_init(&e->loop);
    uv_async_init(&e->loop, &e->wake, on_wake);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        uv_close((uv_handle_t *)&e->wake, NULL);
        uv_run(&e->loop, UV_RUN_DEFAULT);
        uv_loop_close(&e->loop);
        rc = llm_err_set(err, LLM_ENOMEM, "cannot start the engine thread");
        goto fail;
    }
    *out = e;
    return 0;
fail:
    core_kv_pool_free(e->pool);
    core_fwd_free(e->fwd);
    adp_hook_free(e->hook);
    free(e->run);
    free(e->segs);
    free(e->seg_seq);
    free(e->logits);
    free(e->lp_scratch);
    free(e->piece);
    free(e->itl_adapter);
    free(e->itl_s);
    free(e->woken);
    pthread_mutex_destroy(&e->mu);
    free(e);
    return rc;
}

int srv_engine_submit(srv_engine_t *e, srv_request_t *r) {
    for (int p = 0; p < r->n_prompts; p++)
        if (seq_blocks(r, p) * (int32_t)r->n_per_prompt > e->pool->n_blocks ||
            r->n_choices > e->o.max_running)
            return LLM_ERANGE;
    rq_node_t *n = calloc(1, sizeof *n);
    if (!n) return LLM_ENOMEM;
    pthread_mutex_lock(&e->mu);
    if (e->draining || e->stopping) {
        pthread_mutex_unlock(&e->mu);
        free(n);
        return LLM_EINVAL;
    }
    /* Requests not yet admitted beyond what the free sequence slots will take at once. */
    int waiting = e->n_active - e->n_admitted;
    int free_slots = e->o.max_running - e->stats.running;
    if (free_slots < 0) free_slots = 0;
    if (waiting >= e->o.max_queue + free_slots) {
        pthread_mutex_unlock(&e->mu);
        free(n);
        return LLM_EFULL;
    }
    srv_req_ref(r);
    n->req = r;
    if (e->in_tail) e->in_tail->next = n;
    else e->in_head = n;
    e->in_tail = n;
    e->n_incoming++;
    e->n_active++;
    pthread_mutex_unlock(&e->mu);
    wake(e);
    return 0;
}

void srv_engine_cancel(srv_engine_t *e, srv_request_t *r) {
    r->cancelled = 1;
    wake(e);
}

void srv_engine_drain(srv_engine_t *e) {
    pthread_mutex_lock(&e->mu);
    e->draining = 1;
    pthread_mutex_unlock(&e->mu);
}

int srv_engine_active(srv_engine_t *e) {
    pthread_mutex_lock(&e->mu);
    int n = e->n_active;
    pthread_mutex_unlock(&e->mu);
    return n;
}

void srv_engine_stats(srv_engine_t *e, srv_engine_stats_t *s) {
    pthread_mutex_lock(&e->mu);
    *s = e->stats;
    pthread_mutex_unlock(&e->mu);
}

void srv_engine_stop(srv_engine_t *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stopping = 1;
    pthread_mutex_unlock(&e->mu);
    wake(e);
    pthread_join(e->thread, NULL);
    uv_close((uv_handle_t *)&e->wake, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
    free(e->fifos);
    core_kv_pool_free(e->pool);
    core_fwd_free(e->fwd);
    adp_hook_free(e->hook);
    free(e->run);
    free(e->segs);
    free(e->seg_seq);
    free(e->logits);
    free(e->lp_scratch);
    free(e->piece);
    free(e->itl_adapter);
    free(e->itl_s);
    free(e->woken);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

const char *srv_engine_describe(const srv_engine_t *e) {
    return core_exec_describe(core_fwd_exec(e->fwd));
}
