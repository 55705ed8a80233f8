#include "generate.h"

#include "linear.h"

#include <stdlib.h>
#include <string.h>

const char *core_finish_name(core_finish_t f) {
    return f == CORE_FINISH_LENGTH ? "length" : f == CORE_FINISH_STOP ? "stop" : NULL;
}

long core_stop_find(const char *text, size_t len, size_t from, const char *const *stop,
                    int n_stop) {
    long best = -1;
    for (int i = 0; i < n_stop; i++) {
        size_t sl = strlen(stop[i]);
        if (sl == 0 || sl > len) continue;
        for (size_t p = from; p + sl <= len; p++) {
            if (best >= 0 && (long)p >= best) break;
            if (memcmp(text + p, stop[i], sl) == 0) {
                best = (long)p;
                break;
            }
        }
    }
    return best;
}

void core_gen_req_clear(core_gen_req_t *r) {
    if (!r) return;
    free(r->ids);
    free(r->text);
    r->ids = NULL;
    r->text = NULL;
    r->n_ids = 0;
    r->text_len = 0;
    r->finish = CORE_FINISH_NONE;
}

/* Per-request running state. */
typedef struct {
    core_seq_t seq;
    smp_sampler_t smp;
    tok_stream_t stream;
    int n_fed;          /* prompt tokens already in the cache */
    int32_t next;       /* sampled token not yet fed */
    size_t text_cap;
    size_t max_stop;
    int done;
} run_t;

static int is_eos(const core_model_t *m, const tok_tokenizer_t *tok, int32_t id) {
    for (int i = 0; i < m->cfg.n_eos; i++)
        if (m->cfg.eos_ids[i] == id) return 1;
    return tok && tok_eos_id(tok) == id;
}

static int append_text(core_gen_req_t *r, run_t *st, const char *s, int n) {
    if (r->text_len + (size_t)n + 1 > st->text_cap) {
        size_t cap = st->text_cap ? st->text_cap : 256;
        while (cap < r->text_len + (size_t)n + 1) cap *= 2;
        char *nt = realloc(r->text, cap);
        if (!nt) return LLM_ENOMEM;
        r->text = nt;
        st->text_cap = cap;
    }
    memcpy(r->text + r->text_len, s, (size_t)n);
    r->text_len += (size_t)n;
    r->text[r->text_len] = '\0';
    return 0;
}

/* Records a sampled token: ids, text, stop conditions. */
static int accept_token(const core_model_t *m, const tok_tokenizer_t *tok, core_gen_req_t *r,
                        run_t *st, int32_t id, char *piece, size_t piece_cap) {
    if (!r->ignore_eos && is_eos(m, tok, id)) {
        r->finish = CORE_FINISH_STOP;
        st->done = 1;
        return 0;
    }
    r->ids[r->n_ids++] = id;
    smp_observe(&st->smp, id, 0);
    if (tok) {
        int w = tok_stream_push(tok, &st->stream, id, piece, piece_cap);
        if (w < 0) return w;
        size_t before = r->text_len;
        int rc = append_text(r, st, piece, w);
        if (rc) return rc;
        if (r->n_stop > 0) {
            size_t from = before > st->max_stop ? before - st->max_stop + 1 : 0;
            long at = core_stop_find(r->text, r->text_len, from, r->stop, r->n_stop);
            if (at >= 0) {
                r->text_len = (size_t)at;
                r->text[at] = '\0';
                r->finish = CORE_FINISH_STOP;
                st->done = 1;
                return 0;
            }
        }
    }
    if (r->n_ids >= r->max_tokens) {
        r->finish = CORE_FINISH_LENGTH;
        st->done = 1;
    } else {
        st->next = id;
    }
    return 0;
}

int core_generate(const core_model_t *m, const tok_tokenizer_t *tok, core_gen_req_t *reqs,
                  int n_reqs, const core_gen_opts_t *opts, llm_error_t *err) {
    const core_model_config_t *c = &m->cfg;
    const int budget = opts && opts->max_step_tokens > 0 ? opts->max_step_tokens : 512;
    int rc = 0;
    core_kv_pool_t *pool = NULL;
    core_fwd_t *fwd = NULL;
    run_t *run = calloc((size_t)(n_reqs > 0 ? n_reqs : 1), sizeof *run);
    core_step_seg_t *segs = calloc((size_t)(n_reqs > 0 ? n_reqs : 1), sizeof *segs);
    int *seg_req = calloc((size_t)(n_reqs > 0 ? n_reqs : 1), sizeof *seg_req);
    float *logits = NULL;
    size_t piece_cap = tok ? tok_max_piece_bytes(tok) + 16 : 16;
    char *piece = malloc(piece_cap);
    if (!run || !segs || !seg_req || !piece) {
        rc = llm_err_set(err, LLM_ENOMEM, "out of memory");
        goto done;
    }

    int32_t blocks = 0;
    for (int i = 0; i < n_reqs; i++) {
        core_gen_req_t *r = &reqs[i];
        r->ids = NULL;
        r->text = NULL;
        r->n_ids = 0;
        r->text_len = 0;
        r->finish = CORE_FINISH_NONE;
        if (r->n_prompt < 1 || !r->prompt) {
            rc = llm_err_set(err, LLM_EINVAL, "request %d: empty prompt", i);
            goto done;
        }
        if (r->max_tokens < 1) {
            rc = llm_err_set(err, LLM_EINVAL, "request %d: max_tokens must be >= 1", i);
            goto done;
        }
        if (r->n_stop > 0 && !tok) {
            rc = llm_err_set(err, LLM_EINVAL, "request %d: stop strings need a tokenizer", i);
            goto done;
        }
        if ((int64_t)r->n_prompt + r->max_tokens > c->max_pos) {
            rc = llm_err_set(err, LLM_ERANGE,
                             "request %d: prompt (%d) + max_tokens (%d) exceed the context "
                             "length %d", i, r->n_prompt, r->max_tokens, c->max_pos);
            goto done;
        }
        for (int s = 0; s < r->n_stop; s++) {
            size_t sl = strlen(r->stop[s]);
            if (sl > run[i].max_stop) run[i].max_stop = sl;
        }
        if ((rc = smp_init(&run[i].smp, &r->sampling, c->vocab_size, err))) goto done;
        for (int t = 0; t < r->n_prompt; t++) smp_observe(&run[i].smp, r->prompt[t], 1);
        r->ids = malloc((size_t)r->max_tokens * sizeof(int32_t));
        if (!r->ids) {
            rc = llm_err_set(err, LLM_ENOMEM, "out of memory");
            goto done;
        }
        tok_stream_init(&run[i].stream, 1);
        if (tok && tok_has_text(tok, r->prompt, (size_t)r->n_prompt))
            tok_stream_continue(&run[i].stream);
        run[i].next = -1;
        blocks += core_kv_blocks_for(r->n_prompt + r->max_tokens);
    }
    if (n_reqs == 0) goto done;
    if ((rc = core_kv_pool_create_as(c, blocks, core_kv_type_for(m->wtype), &pool)) ||
        (rc = core_fwd_create(m, budget > n_reqs ? budget : n_reqs, opts ? opts->n_threads : 0,
                              &fwd))) {
        rc = llm_err_set(err, rc, "cannot allocate the KV cache or scratch");
        goto done;
    }
    if (opts && opts->hook) core_fwd_set_hook(fwd, opts->hook);
    if (opts && opts->split_tiny) core_exec_set_min_parallel(core_fwd_exec(fwd), 0);
    logits = malloc((size_t)n_reqs * (size_t)c->vocab_size * sizeof(float));
    if (!logits) {
        rc = llm_err_set(err, LLM_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_reqs; i++) core_seq_init(&run[i].seq, pool, c->max_pos);

    for (;;) {
        /* Decode tokens first (one per running request), then prompt chunks in the budget
         * that is left. */
        int n_segs = 0, used = 0;
        for (int i = 0; i < n_reqs; i++) {
            if (run[i].done || run[i].next < 0) continue;
            segs[n_segs] = (core_step_seg_t){.seq = &run[i].seq, .tokens = &run[i].next,
                                             .n_tok = 1, .logits = CORE_LOGITS_LAST,
                                             .adapter = reqs[i].adapter};
            seg_req[n_segs++] = i;
            used++;
        }
        for (int i = 0; i < n_reqs && used < budget; i++) {
            core_gen_req_t *r = &reqs[i];
            if (run[i].done || run[i].n_fed >= r->n_prompt) continue;
            int take = r->n_prompt - run[i].n_fed;
            if (take > budget - used) take = budget - used;
            int last = run[i].n_fed + take == r->n_prompt;
            segs[n_segs] = (core_step_seg_t){.seq = &run[i].seq,
                                             .tokens = r->prompt + run[i].n_fed, .n_tok = take,
                                             .logits = last ? CORE_LOGITS_LAST : CORE_LOGITS_NONE,
                                             .adapter = r->adapter};
            seg_req[n_segs++] = i;
            used += take;
        }
        if (n_segs == 0) break;
        if ((rc = core_fwd_step(fwd, segs, n_segs, logits, err))) goto done;
        int row = 0;
        for (int s = 0; s < n_segs; s++) {
            int i = seg_req[s];
            if (segs[s].tokens != &run[i].next) run[i].n_fed += segs[s].n_tok;
            if (segs[s].logits == CORE_LOGITS_NONE) continue;
            float *lg = logits + (size_t)row++ * c->vocab_size;
            int32_t id = smp_sample(&run[i].smp, lg);
            if ((rc = accept_token(m, tok, &reqs[i], &run[i], id, piece, piece_cap))) goto done;
        }
    }
    /* Flush held-back bytes (an incomplete UTF-8 tail) into the text. */
    for (int i = 0; i < n_reqs && tok; i++) {
        int w = tok_stream_flush(tok, &run[i].stream, piece, piece_cap);
        if (w > 0 && reqs[i].finish != CORE_FINISH_STOP) {
            if ((rc = append_text(&reqs[i], &run[i], piece, w))) goto done;
        }
        if (!reqs[i].text && (rc = append_text(&reqs[i], &run[i], "", 0))) goto done;
    }
done:
    for (int i = 0; run && i < n_reqs; i++) {
        if (pool) core_seq_deinit(&run[i].seq);
        smp_deinit(&run[i].smp);
        if (rc) core_gen_req_clear(&reqs[i]);
    }
    free(logits);
    core_fwd_free(fwd);
    core_kv_pool_free(pool);
    free(run);
    free(segs);
    free(seg_req);
    free(piece);
    return rc;
}
