/* forward.c: the transformer step, top to bottom like the maths.
 *
 * For every layer: RMSNorm → q,k,v projections (one GEMM each over all tokens of the step) →
 * RoPE → append k,v to each sequence's paged cache → causal attention per sequence and head →
 * o projection + residual → RMSNorm → SwiGLU MLP (gate, up, down GEMMs) + residual.
 * Finally RMSNorm and the LM head, only for the rows whose logits were asked for.
 */
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "linear.h"

struct core_fwd_s {
    const core_model_t *m;
    int max_tokens;
    core_exec_t *ex; /* the worker pool every heavy loop of the step runs on */
    core_lin_hook_t hook;
    int has_hook;
    /* scratch, all (max_tokens, width) row-major */
    float *x;      /* residual stream (dim) */
    float *xb;     /* normalised input of a block (dim) */
    float *q;      /* (q_dim) */
    float *k;      /* (kv_dim) */
    float *v;      /* (kv_dim) */
    float *att;    /* attention output (q_dim) */
    float *hb;     /* gate (ffn) */
    float *hb2;    /* up (ffn) */
    float *xmod;   /* hook input transform (max width) */
    float *out;    /* projection output before the residual add (dim) */
    float *scores; /* (threads, group, max_pos) attention scores of one KV head's query heads */
    float *rcos, *rsin; /* (max_tokens, head_dim/2) RoPE rotation of each row's position:
                         * the same for every layer and head, so computed once per step */
    int32_t *pos;  /* (max_tokens) position of each row */
    int *row0;     /* (max_tokens) first row of each segment */
    int *seg;      /* (max_tokens) segment of each row */
    /* the step being run, for the parallel tasks below */
    const core_step_seg_t *step_segs;
    int step_layer;
    int step_n;          /* rows in the step */
    const float *norm_w; /* norm task: its weight, and whether out is added to x first */
    int norm_add;
};

/* ---- per-row helpers (the heavy loops are in core/kernels) ---- */

static void rmsnorm(float *o, const float *x, const float *w, int n, float eps) {
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) o[i] = w[i] * (x[i] * inv);
}

/* HF rotate-half RoPE on one head vector: pairs (i, i + hd/2), with the row's cos/sin of
 * pos · inv_freq[i]. */
static void rope(float *v, int hd, const float *cs, const float *sn) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * cs[i] - b * sn[i];
        v[i + half] = b * cs[i] + a * sn[i];
    }
}

/* Pool task: hb = silu(hb) ⊙ hb2 over rows [r0, r1) (the kernels' vectorised exponential). */
static void swiglu_range(void *arg, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    core_fwd_t *f = arg;
    const size_t ffn = (size_t)f->m->cfg.intermediate_size, i0 = (size_t)r0 * ffn;
    core_exec_ops(f->ex)->swiglu(f->hb + i0, f->hb2 + i0, (size_t)(r1 - r0) * ffn);
}

/* ---- linears with the adapter hook ---- */

/* The projections ps[0..np) of layer, which all read x, into ys: one base product over all of
 * them (core_linear_multi), then for each the hook's deltas and the bias. A projection whose
 * input the hook transforms (LoRMA post) runs on its own with that input. */
static void linears(core_fwd_t *f, int layer, const core_proj_t *ps, int np, const float *x,
                    int n, float *const *ys, const core_step_seg_t *segs, int n_segs) {
    const core_layer_t *ly = &f->m->layers[layer];
    core_lin_call_t call[4];
    const core_weight_t *shared_w[4];
    float *shared_y[4];
    int n_shared = 0;
    for (int i = 0; i < np; i++) {
        const core_weight_t *w = &ly->proj[ps[i]];
        call[i] = (core_lin_call_t){.layer = layer, .proj = ps[i], .d_in = (int)w->cols,
                                    .d_out = (int)w->rows, .n_rows = n, .n_segs = n_segs,
                                    .segs = segs, .row0 = f->row0, .exec = f->ex};
        if (f->has_hook && f->hook.pre && f->hook.pre(f->hook.ctx, &call[i], x, f->xmod)) {
            core_linear(f->ex, w, f->xmod, n, ys[i]);
        } else {
            shared_w[n_shared] = w;
            shared_y[n_shared++] = ys[i];
        }
    }
    if (n_shared) core_linear_multi(f->ex, shared_w, n_shared, x, n, shared_y);
    for (int i = 0; i < np; i++) {
        if (f->has_hook && f->hook.post) f->hook.post(f->hook.ctx, &call[i], x, ys[i]);
        const float *b = ly->bias[ps[i]];
        if (!b) continue;
        const int64_t rows = call[i].d_out;
        for (int t = 0; t < n; t++) {
            float *yr = ys[i] + (size_t)t * (size_t)rows;
            for (int64_t o = 0; o < rows; o++) yr[o] += b[o];
        }
    }
}

static void linear(core_fwd_t *f, int layer, core_proj_t p, const float *x, int n, float *y,
                   const core_step_seg_t *segs, int n_segs) {
    linears(f, layer, &p, 1, x, n, &y, segs, n_segs);
}

/* ---- attention ---- */

/* Blocks of the KV cache prefetched ahead of the one being read. A block's keys (or values) of
 * one head are a few KB at a random place in the pool: too short a stream for the hardware
 * prefetcher, so without this the attention kernels wait on DRAM at every block. */
#ifndef ATT_PF
#define ATT_PF 1
#endif

static void prefetch_bytes(const void *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch((const char *)p + o, 0, 3);
}

/* Causal attention of one query row for the query heads of one KV head (GQA: `group` heads
 * share it), over the row's sequence cache, which already holds this step's keys and values.
 * Block by block, the kernels score the group's heads against the block's 16 positions (keys
 * stored transposed: one vector per dimension) and then add the block's values weighted by the
 * unnormalised softmax; the output is divided by the sum once at the end. scores: group ×
 * max_pos floats of the calling thread. */
static void attend_group(const core_fwd_t *f, int layer, const core_step_seg_t *sg, int row,
                         int kvh, float *scores) {
    const core_model_config_t *c = &f->m->cfg;
    const core_kv_pool_t *pool = sg->seq->pool;
    const kern_ops_t *ops = core_exec_ops(f->ex);
    const kern_attn_scores_fn scores_fn = ops->attn_scores[pool->type];
    const kern_attn_values_fn values_fn = ops->attn_values[pool->type];
    const int hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
    const int64_t lds = c->max_pos;
    const float scale = 1.0f / sqrtf((float)hd);
    const int32_t *blocks = sg->seq->blocks;
    const int32_t npos = f->pos[row] + 1; /* attends to positions 0..pos */
    /* the group's query heads are consecutive, and so are their outputs */
    const size_t off = (size_t)row * (size_t)(c->n_heads * hd) + (size_t)kvh * group * hd;
    float *o = f->att + off;
    const size_t half = (size_t)CORE_KV_BLOCK * (size_t)hd * kern_wtype_size(pool->type);
    const int32_t nblk = (npos + CORE_KV_BLOCK - 1) / CORE_KV_BLOCK;
    for (int32_t b = 0; b < nblk; b++) {
        const int32_t j0 = b * CORE_KV_BLOCK;
        const int nj = npos - j0 < CORE_KV_BLOCK ? (int)(npos - j0) : CORE_KV_BLOCK;
        if (b + ATT_PF < nblk)
            prefetch_bytes(core_kv_keys(pool, blocks[b + ATT_PF], layer, kvh), half);
        scores_fn(f->q + off, group, hd, core_kv_keys(pool, blocks[b], layer, kvh),
                  CORE_KV_BLOCK, nj, scale, scores + j0, lds);
    }
    for (int32_t b = 0; b < ATT_PF && b < nblk; b++) /* the values' first blocks, for later */
        prefetch_bytes(core_kv_values(pool, blocks[b], layer, kvh), half);
    float inv[CORE_MAX_GQA_GROUP];
    for (int g = 0; g < group; g++) {
        float *sc = scores + (size_t)g * (size_t)lds, mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int32_t j = 0; j < npos; j++) mx = sc[j] > mx ? sc[j] : mx;
        inv[g] = 1.0f / ops->exp_sum(sc, npos, mx);
    }
    memset(o, 0, (size_t)group * (size_t)hd * sizeof(float));
    for (int32_t b = 0; b < nblk; b++) {
        const int32_t j0 = b * CORE_KV_BLOCK;
        const int nj = npos - j0 < CORE_KV_BLOCK ? (int)(npos - j0) : CORE_KV_BLOCK;
        if (b + ATT_PF < nblk)
            prefetch_bytes(core_kv_values(pool, blocks[b + ATT_PF], layer, kvh), half);
        values_fn(scores + j0, lds, group, core_kv_values(pool, blocks[b], layer, kvh), hd, nj,
                  hd, o);
    }
    /* softmax normalised once at the end: o = Σ e^(s−max) v / Σ e^(s−max) */
    for (int g = 0; g < group; g++)
        for (int i = 0; i < hd; i++) o[(size_t)g * hd + i] *= inv[g];
}

/* Pool task: items are (row, KV head) pairs, each independent. A row's cost grows with its
 * position, so rows are visited in the order 0, n−1, 1, n−2, …: every contiguous range the
 * pool hands a thread then holds pairs of rows with the same total cost (a 480-token prompt
 * split in two plain halves gave one thread three times the other's work). */
static void attend_range(void *arg, int64_t i0, int64_t i1, int tid) {
    const core_fwd_t *f = arg;
    const int nkv = f->m->cfg.n_kv_heads, group = f->m->cfg.n_heads / nkv;
    const int n = f->step_n;
    float *scores = f->scores + (size_t)tid * (size_t)group * (size_t)f->m->cfg.max_pos;
    for (int64_t i = i0; i < i1; i++) {
        const int h = (int)(i / nkv), kvh = (int)(i % nkv);
        const int row = h % 2 ? n - 1 - h / 2 : h / 2;
        attend_group(f, f->step_layer, &f->step_segs[f->seg[row]], row, kvh, scores);
    }
}

/* Pool task over rows: x += out (when norm_add: the residual of the block before), then
 * xb = rmsnorm(x) · norm_w. */
static void addnorm_range(void *arg, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    core_fwd_t *f = arg;
    const int dim = f->m->cfg.hidden_size;
    for (int64_t r = r0; r < r1; r++) {
        float *x = f->x + (size_t)r * dim;
        if (f->norm_add) {
            const float *o = f->out + (size_t)r * dim;
            for (int i = 0; i < dim; i++) x[i] += o[i];
        }
        rmsnorm(f->xb + (size_t)r * dim, x, f->norm_w, dim, f->m->cfg.rms_eps);
    }
}

/* Pool task over rows: RoPE on the row's q and k heads, then its k and v into the sequence's
 * cache slot at the row's position. */
static void rope_kv_range(void *arg, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    core_fwd_t *f = arg;
    const core_model_config_t *c = &f->m->cfg;
    const int hd = c->head_dim, q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    const int l = f->step_layer;
    for (int64_t r = r0; r < r1; r++) {
        const float *cs = f->rcos + (size_t)r * (hd / 2), *sn = f->rsin + (size_t)r * (hd / 2);
        for (int h = 0; h < c->n_heads; h++)
            rope(f->q + (size_t)r * q_dim + (size_t)h * hd, hd, cs, sn);
        for (int h = 0; h < c->n_kv_heads; h++)
            rope(f->k + (size_t)r * kv_dim + (size_t)h * hd, hd, cs, sn);
        const core_seq_t *s = f->step_segs[f->seg[r]].seq;
        const int p = f->pos[r];
        core_kv_store(s->pool, s->blocks[p / CORE_KV_BLOCK], l, p % CORE_KV_BLOCK,
                      f->k + (size_t)r * kv_dim, f->v + (size_t)r * kv_dim);
    }
}

/* ---- public API ---- */

int core_fwd_create(const core_model_t *m, int max_tokens, int n_threads, core_fwd_t **out) {
    if (max_tokens <= 0 || n_threads < 0) return LLM_EINVAL;
    const core_model_config_t *c = &m->cfg;
    core_fwd_t *f = calloc(1, sizeof *f);
    if (!f) return LLM_ENOMEM;
    f->m = m;
    f->max_tokens = max_tokens;
    const size_t n = (size_t)max_tokens, dim = (size_t)c->hidden_size;
    const size_t q_dim = (size_t)c->n_heads * c->head_dim;
    const size_t kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    const size_t ffn = (size_t)c->intermediate_size;
    size_t wmax = dim > ffn ? dim : ffn;
    if (q_dim > wmax) wmax = q_dim;
    int rc = core_exec_create(n_threads, max_tokens, (int64_t)wmax, &f->ex);
    if (rc) {
        free(f);
        return rc;
    }
    f->x = malloc(n * dim * sizeof(float));
    f->xb = malloc(n * dim * sizeof(float));
    f->q = malloc(n * q_dim * sizeof(float));
    f->k = malloc(n * kv_dim * sizeof(float));
    f->v = malloc(n * kv_dim * sizeof(float));
    f->att = malloc(n * q_dim * sizeof(float));
    f->hb = malloc(n * ffn * sizeof(float));
    f->hb2 = malloc(n * ffn * sizeof(float));
    f->xmod = malloc(n * wmax * sizeof(float));
    f->out = malloc(n * dim * sizeof(float));
    f->scores = malloc((size_t)core_exec_threads(f->ex) * (size_t)(c->n_heads / c->n_kv_heads) *
                       (size_t)c->max_pos * sizeof(float));
    f->rcos = malloc(n * (size_t)(c->head_dim / 2 + 1) * sizeof(float));
    f->rsin = malloc(n * (size_t)(c->head_dim / 2 + 1) * sizeof(float));
    f->pos = malloc(n * sizeof(int32_t));
    f->row0 = malloc(n * sizeof(int));
    f->seg = malloc(n * sizeof(int));
    if (!f->seg || !f->rcos || !f->rsin || !f->x || !f->xb || !f->q || !f->k || !f->v || !f->att || !f->hb || !f->hb2 ||
        !f->xmod || !f->out || !f->scores || !f->pos || !f->row0) {
        core_fwd_free(f);
        return LLM_ENOMEM;
    }
    *out = f;
    return 0;
}

void core_fwd_free(core_fwd_t *f) {
    if (!f) return;
    free(f->x);
    free(f->xb);
    free(f->q);
    free(f->k);
    free(f->v);
    free(f->att);
    free(f->hb);
    free(f->hb2);
    free(f->xmod);
    free(f->out);
    free(f->scores);
    free(f->pos);
    free(f->row0);
    free(f->seg);
    free(f->rcos);
    free(f->rsin);
    core_exec_free(f->ex);
    free(f);
}

void core_fwd_set_hook(core_fwd_t *f, const core_lin_hook_t *hook) {
    f->has_hook = hook && (hook->pre || hook->post);
    if (f->has_hook) f->hook = *hook;
    else memset(&f->hook, 0, sizeof f->hook);
}

int core_fwd_logit_rows(const core_step_seg_t *segs, int n_segs) {
    int rows = 0;
    for (int i = 0; i < n_segs; i++)
        rows += segs[i].logits == CORE_LOGITS_ALL ? segs[i].n_tok
                : segs[i].logits == CORE_LOGITS_LAST ? 1 : 0;
    return rows;
}

/* Checks the step and reserves cache room; on failure no sequence has advanced. */
static int prepare(core_fwd_t *f, const core_step_seg_t *segs, int n_segs, llm_error_t *err) {
    const core_model_config_t *c = &f->m->cfg;
    if (n_segs <= 0) return llm_err_set(err, LLM_EINVAL, "step has no segments");
    int n = 0;
    for (int i = 0; i < n_segs; i++) {
        const core_step_seg_t *sg = &segs[i];
        if (sg->n_tok <= 0 || !sg->tokens || !sg->seq)
            return llm_err_set(err, LLM_EINVAL, "segment %d is empty", i);
        for (int j = 0; j < i; j++)
            if (segs[j].seq == sg->seq)
                return llm_err_set(err, LLM_EINVAL, "segments %d and %d share a sequence", j, i);
        for (int t = 0; t < sg->n_tok; t++)
            if (sg->tokens[t] < 0 || sg->tokens[t] >= c->vocab_size)
                return llm_err_set(err, LLM_ERANGE, "segment %d: token id %d outside [0, %d)", i,
                                   sg->tokens[t], c->vocab_size);
        if (sg->seq->max_pos > c->max_pos)
            return llm_err_set(err, LLM_EINVAL, "segment %d: sequence max_pos %d > model's %d",
                               i, sg->seq->max_pos, c->max_pos);
        n += sg->n_tok;
        if (n > f->max_tokens)
            return llm_err_set(err, LLM_EINVAL, "step has more than %d tokens", f->max_tokens);
    }
    for (int i = 0; i < n_segs; i++) {
        int rc = core_seq_reserve(segs[i].seq, segs[i].n_tok);
        if (rc == LLM_ERANGE)
            return llm_err_set(err, rc, "segment %d: %d + %d tokens exceed the context of %d", i,
                               segs[i].seq->n_past, segs[i].n_tok, segs[i].seq->max_pos);
        if (rc == LLM_EFULL)
            return llm_err_set(err, rc, "segment %d: KV cache full", i);
        if (rc) return llm_err_set(err, rc, "segment %d: cannot grow the KV cache", i);
    }
    return 0;
}

int core_fwd_step(core_fwd_t *f, const core_step_seg_t *segs, int n_segs, float *logits,
                  llm_error_t *err) {
    int rc = prepare(f, segs, n_segs, err);
    if (rc) return rc;
    const core_model_t *m = f->m;
    const core_model_config_t *c = &m->cfg;
    const int dim = c->hidden_size, hd = c->head_dim, ffn = c->intermediate_size;
    const int q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;

    /* Rows in segment order; each row's position continues its sequence. */
    int n = 0;
    double att_macs = 0; /* per layer: 2 · heads · head_dim per (query, key) pair */
    for (int i = 0; i < n_segs; i++) {
        f->row0[i] = n;
        for (int t = 0; t < segs[i].n_tok; t++, n++) {
            f->pos[n] = segs[i].seq->n_past + t;
            f->seg[n] = i;
            att_macs += 2.0 * q_dim * (f->pos[n] + 1);
            for (int i = 0; i < hd / 2; i++) {
                const float ang = (float)f->pos[n] * m->rope_inv_freq[i];
                f->rcos[(size_t)n * (hd / 2) + i] = cosf(ang);
                f->rsin[(size_t)n * (hd / 2) + i] = sinf(ang);
            }
            core_weight_row(&m->embed, segs[i].tokens[t], f->x + (size_t)n * dim);
        }
    }

    for (int l = 0; l < c->n_layers; l++) {
        const core_layer_t *ly = &m->layers[l];

        /* attention block (the MLP's residual of the layer before is added here) */
        f->step_segs = segs, f->step_layer = l, f->step_n = n;
        f->norm_w = ly->attn_norm, f->norm_add = l > 0;
        core_exec_run_sized(f->ex, addnorm_range, f, n, 1, 4.0 * n * dim);
        static const core_proj_t qkv[3] = {CORE_PROJ_Q, CORE_PROJ_K, CORE_PROJ_V};
        float *const qkv_out[3] = {f->q, f->k, f->v};
        linears(f, l, qkv, 3, f->xb, n, qkv_out, segs, n_segs);
        core_exec_run_sized(f->ex, rope_kv_range, f, n, 1, 4.0 * n * (q_dim + 2 * kv_dim));
        core_exec_run_sized(f->ex, attend_range, f, (int64_t)n * c->n_kv_heads, 1, att_macs);
        linear(f, l, CORE_PROJ_O, f->att, n, f->out, segs, n_segs);

        /* MLP block: down(silu(gate(x)) * up(x)), after x += o(attention) */
        f->norm_w = ly->ffn_norm, f->norm_add = 1;
        core_exec_run_sized(f->ex, addnorm_range, f, n, 1, 4.0 * n * dim);
        static const core_proj_t gate_up[2] = {CORE_PROJ_GATE, CORE_PROJ_UP};
        float *const gu_out[2] = {f->hb, f->hb2};
        linears(f, l, gate_up, 2, f->xb, n, gu_out, segs, n_segs);
        core_exec_run_sized(f->ex, swiglu_range, f, n, 1, 8.0 * n * ffn); /* ~8 FMA per expf */
        linear(f, l, CORE_PROJ_DOWN, f->hb, n, f->out, segs, n_segs);
    }
    if (c->n_layers > 0) /* the last MLP's residual */
        for (size_t i = 0; i < (size_t)n * dim; i++) f->x[i] += f->out[i];

    /* Final norm and LM head for the requested rows only (gathered into xb). */
    int nl = 0;
    for (int i = 0; i < n_segs; i++) {
        int first = segs[i].logits == CORE_LOGITS_ALL ? 0 : segs[i].n_tok - 1;
        if (segs[i].logits == CORE_LOGITS_NONE) continue;
        for (int t = first; t < segs[i].n_tok; t++, nl++)
            rmsnorm(f->xb + (size_t)nl * dim, f->x + (size_t)(f->row0[i] + t) * dim,
                    m->final_norm, dim, c->rms_eps);
    }
    if (nl > 0) core_linear(f->ex, m->lm_head, f->xb, nl, logits);

    for (int i = 0; i < n_segs; i++) segs[i].seq->n_past += segs[i].n_tok;
    return 0;
}

struct core_exec_s *core_fwd_exec(core_fwd_t *f) { return f->ex; }

void core_fwd_park(core_fwd_t *f) { kern_pool_park(core_exec_pool(f->ex)); }
