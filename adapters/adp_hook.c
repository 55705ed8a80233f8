/* adp_hook.c: applies each segment's adapter set inside the core's linear layers.
 *
 * Consecutive segments with the same adp_set_t form one group (the engine sorts a step's
 * sequences by adapter set once per step, so tenants sharing an adapter are contiguous).
 * Every (group, adapter) pair of a low-rank kind is one item. With many groups (tenants with
 * adapters of their own) each group is one task of a single parallel region on the forward's
 * worker pool (linear.h); with few, the items are computed in two parallel phases:
 *   1. shrink, items split across the workers: T = w · X·Aᵀ, (n, r) per item;
 *   2. expand, output columns split across the workers: Y[:, c0:c1] += T · Bᵀ[:, c0:c1]
 *      for every item (DoRA's g and lora_bias applied on the same columns).
 * An item with at least SGMV_MIN tokens (a prompt chunk) runs both products as single-threaded
 * sgemm calls (SGMV); a smaller one, e.g. one decode token of a tenant of its own or a few
 * sequences sharing an adapter, runs the BGMV kernels (kern.h), which read each factor row once
 * for all of the item's tokens. bf16 factors are widened to fp32 a few rows at a time for
 * sgemm; the arithmetic is fp32 either way. Nothing is padded to a maximum rank and no
 * full-width delta is formed. MoRA and the full LoRMA_π transforms run after the phases on
 * the engine thread (they are rare and their tables small).
 * With 32 distinct adapters the hook's cost is reading their factors from DRAM (bench/README.md:
 * bench_adapter_step's reads-only pass). Two ways round that were measured and dropped:
 * prefetching a projection's factors from the base kernel's pass that has no prefetch of its
 * own, so the reads would overlap the base GEMM (the hook got ~1.6 ms faster and the base ~1.9
 * ms slower per SmolLM step), and handing groups out one at a time instead of the static
 * split (no gain in-process; 707–753 against 767–799 tok/s in alternating server windows).
 */
#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "linear.h"

/* Tokens of one item from which SGMV (sgemm) is used. Below it the BGMV kernels, which load
 * each factor row once for all of the item's tokens, are as fast or faster: bench_kernels
 * --lora measures 32 rank-16 adapters × 8 tokens at 52 µs (bf16, 2 threads, d 576), and
 * sgemm on bf16 factors must first widen them. Prompt chunks (64+ tokens) use sgemm. */
#define SGMV_MIN 64
#define WIDEN_ROWS 16
#define MAX_THREADS 64

typedef struct {
    const adp_module_t *md;
    const float *X;   /* (n, ldx) input rows of the group */
    int64_t ldx;
    float *Y;         /* (n, ldy) output rows of the group */
    float *T;         /* (n, r) shrink result */
    int n;
    float w;          /* the set's weight of this adapter */
    int replace;      /* Y = T·Bᵀ (LoRMA none) instead of += */
} item_t;

struct adp_hook_s {
    const core_model_t *m;
    int max_tokens;
    size_t cap;       /* floats in each serial scratch buffer */
    float *t1, *t2;   /* (max_tokens, 2 · widest layer): MoRA and full transforms */
    size_t widest;
    /* the low-rank items of the current call */
    item_t *items;    /* (max_tokens · ADP_SET_MAX) */
    int n_items;
    float *tb;        /* (cap) the items' T matrices */
    size_t tb_used;   /* floats of tb taken by the queued items */
    int *gstart;      /* (max_tokens · ADP_SET_MAX + 1) first item of each group */
    int64_t width;    /* columns of Y in the current call */
    int sgmv_min;     /* SGMV_MIN unless a test moves it */
    int64_t ldy;      /* row stride of Y in the current call */
    const kern_ops_t *ops;
    float *wide[MAX_THREADS]; /* per worker: WIDEN_ROWS × widest, allocated on first use */
};

/* ---- the two phases ---- */

#define is_sgmv(it) ((it)->n >= h->sgmv_min)


/* T = w · X·Aᵀ for one item. */
static void shrink_one(adp_hook_t *h, const item_t *it, int tid) {
    {
        const kern_mat_t *A = &it->md->fa;
        const int r = (int)A->rows, k = (int)A->cols;
        if (!is_sgmv(it)) {
            h->ops->lr_shrink[A->type](A, it->X, it->ldx, it->n, it->T, r);
        } else if (A->type == KERN_W_F32) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, it->n, r, k, 1.0f, it->X,
                        (int)it->ldx, A->data, k, 0.0f, it->T, r);
        } else {
            const uint16_t *a = A->data;
            for (int j0 = 0; j0 < r; j0 += WIDEN_ROWS) {
                const int nj = r - j0 < WIDEN_ROWS ? r - j0 : WIDEN_ROWS;
                kern_bf16_to_f32_n(a + (size_t)j0 * (size_t)k, h->wide[tid],
                                   (size_t)nj * (size_t)k);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, it->n, nj, k, 1.0f, it->X,
                            (int)it->ldx, h->wide[tid], k, 0.0f, it->T + j0, r);
            }
        }
        if (it->w != 1.0f)
            for (size_t e = 0; e < (size_t)it->n * (size_t)r; e++) it->T[e] *= it->w;
    }
}

/* Phase 1, items [i0, i1). */
static void shrink_range(void *arg, int64_t i0, int64_t i1, int tid) {
    adp_hook_t *h = arg;
    for (int64_t i = i0; i < i1; i++) shrink_one(h, &h->items[i], tid);
}

/* Y[:, c0:c1] (+)= T · Bᵀ[:, c0:c1] for one item, then its bias and DoRA's g there. */
static void expand_one(adp_hook_t *h, const item_t *it, int64_t c0, int64_t c1, int tid) {
    const int nc = (int)(c1 - c0);
    {
        const adp_module_t *md = it->md;
        const kern_mat_t *BT = &md->fbt;
        const int r = (int)BT->rows, ldb = (int)BT->cols;
        if (it->replace)
            for (int t = 0; t < it->n; t++)
                memset(it->Y + (size_t)t * h->ldy + c0, 0, (size_t)nc * sizeof(float));
        if (!is_sgmv(it)) {
            h->ops->lr_expand[BT->type](BT, it->T, r, it->n, it->Y, h->ldy, c0, c1);
        } else if (BT->type == KERN_W_F32) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, it->n, nc, r, 1.0f, it->T, r,
                        (const float *)BT->data + c0, ldb, 1.0f, it->Y + c0, (int)h->ldy);
        } else {
            const uint16_t *b = BT->data;
            for (int j0 = 0; j0 < r; j0 += WIDEN_ROWS) {
                const int nj = r - j0 < WIDEN_ROWS ? r - j0 : WIDEN_ROWS;
                for (int j = 0; j < nj; j++)
                    kern_bf16_to_f32_n(b + (size_t)(j0 + j) * ldb + (size_t)c0,
                                       h->wide[tid] + (size_t)j * nc, (size_t)nc);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, it->n, nc, nj, 1.0f,
                            it->T + j0, r, h->wide[tid], nc, 1.0f, it->Y + c0, (int)h->ldy);
            }
        }
        for (int t = 0; t < it->n; t++) {
            float *y = it->Y + (size_t)t * h->ldy;
            if (md->bias)
                for (int64_t c = c0; c < c1; c++) y[c] += it->w * md->bias[c];
            if (md->kind == ADP_K_DORA) /* y = g ⊙ (y0 + B·A·x); DoRA is alone in its set */
                for (int64_t c = c0; c < c1; c++) y[c] *= md->g[c];
        }
    }
}

/* Phase 2, output columns [c0, c1) of every item. */
static void expand_range(void *arg, int64_t c0, int64_t c1, int tid) {
    adp_hook_t *h = arg;
    for (int i = 0; i < h->n_items; i++) expand_one(h, &h->items[i], c0, c1, tid);
}

/* The single-phase form, groups [g0, g1): each group's items shrunk and expanded whole by one
 * thread (items of different groups write different rows of Y, so groups are independent). */
static void group_range(void *arg, int64_t g0, int64_t g1, int tid) {
    adp_hook_t *h = arg;
    for (int i = h->gstart[g0]; i < h->gstart[g1]; i++) {
        shrink_one(h, &h->items[i], tid);
        expand_one(h, &h->items[i], 0, h->width, tid);
    }
}

/* Runs the collected items on the pool; width = columns of Y. Without a pool (ex NULL: a
 * caller driving the hook by hand) both phases run on the calling thread. */
static void run_items(adp_hook_t *h, core_exec_t *ex, int64_t width) {
    if (!h->n_items) return;
    h->ops = ex ? core_exec_ops(ex) : kern_select(NULL, 0);
    const int nt = ex ? core_exec_threads(ex) : 1;
    for (int t = 0; t < nt && t < MAX_THREADS; t++)
        if (!h->wide[t]) { /* once per worker, on the first call that has one */
            h->wide[t] = malloc(WIDEN_ROWS * h->widest * sizeof(float));
            if (!h->wide[t]) abort(); /* scratch of a few hundred KB at start-up */
        }
    /* groups: runs of items writing the same rows (they were queued group by group) */
    int ng = 0;
    for (int i = 0; i < h->n_items; i++)
        if (i == 0 || h->items[i].Y != h->items[i - 1].Y) h->gstart[ng++] = i;
    h->gstart[ng] = h->n_items;
    h->width = width;
    if (ex) {
        double macs = 0; /* shrink and expand: (in + out) · r per token */
        for (int i = 0; i < h->n_items; i++)
            macs += (double)h->items[i].n * h->items[i].md->r *
                    (double)(h->items[i].md->fa.cols + h->items[i].md->fbt.cols);
        if (ng >= 2 * nt) {
            /* many tenants (distinct-adapter decode): one parallel region, split by group */
            core_exec_run_sized(ex, group_range, h, ng, 1, macs);
        } else {
            /* few groups (shared adapters, prompt chunks): split each phase finer */
            core_exec_run_sized(ex, shrink_range, h, h->n_items, 1, macs / 2);
            core_exec_run_sized(ex, expand_range, h, width, 16, macs / 2);
        }
    } else {
        shrink_range(h, 0, h->n_items, 0);
        expand_range(h, 0, width, 0);
    }
    h->n_items = 0;
    h->tb_used = 0;
}

/* Queues a low-rank item; runs the queue first when its T would not fit. */
static void add_item(adp_hook_t *h, core_exec_t *ex, int64_t width, const adp_module_t *md,
                     const float *X, int64_t ldx, float *Y, int n, float w, int replace) {
    const size_t need = (size_t)n * (size_t)md->r; /* ≤ max_tokens · widest ≤ cap */
    if (h->tb_used + need > h->cap || h->n_items == h->max_tokens * ADP_SET_MAX)
        run_items(h, ex, width);
    h->items[h->n_items++] = (item_t){.md = md, .X = X, .ldx = ldx, .Y = Y,
                                      .T = h->tb + h->tb_used, .n = n, .w = w,
                                      .replace = replace};
    h->tb_used += need;
}

/* MoRA grouping of n features into rh contiguous groups, the first n mod rh one larger. */
static int group_of(int i, int n, int rh) {
    const int small = n / rh, q = n % rh, big = small + 1;
    return i < q * big ? i / big : q + (i - q * big) / small;
}

/* Y += w · D(M · C(X)) for MoRA types 1/2/3/4/6 (adapters.md §4.2). Z, U: scratch. */
static void mora_add(const adp_module_t *md, const float *X, float *Y, int n, float w, float *Z,
                     float *U) {
    const int rh = md->r, in = md->d_in, out = md->d_out, type = md->mora_type;
    const int pad = (rh - in % rh) % rh;
    int rows; /* rows of Z: one per token, or nb per token for type 6 */
    if (type == 6) {
        const int h = rh / 2, nb = md->nb;
        rows = n * nb;
        for (int t = 0; t < n; t++) {
            const float *x = X + (size_t)t * in;
            for (int c = 0; c < nb; c++) {
                float *z = Z + ((size_t)t * nb + c) * rh;
                for (int j = 0; j < rh; j++) { /* x_pad repeats the first features */
                    int i = c * rh + j;
                    z[j] = x[i < in ? i : i - in];
                }
                const float *cs = md->cos_t + (size_t)c * h, *sn = md->sin_t + (size_t)c * h;
                for (int j = 0; j < h; j++) {
                    float a = z[j], b = z[j + h];
                    z[j] = a * cs[j] - b * sn[j];
                    z[j + h] = b * cs[j] + a * sn[j];
                }
            }
        }
    } else {
        rows = n;
        memset(Z, 0, (size_t)n * rh * sizeof(float));
        for (int t = 0; t < n; t++) {
            const float *x = X + (size_t)t * in;
            float *z = Z + (size_t)t * rh;
            if (type == 1 || type == 4) {
                for (int i = 0; i < in + pad; i++) z[i % rh] += x[i < in ? i : i - in];
            } else {
                for (int i = 0; i < in; i++) z[group_of(i, in, rh)] += x[i];
            }
        }
    }
    /* U = Z · Mᵀ (nn.Linear convention: u[a] = Σ_j M[a][j] z[j]) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, rh, rh, 1.0f, Z, rh, md->m, rh,
                0.0f, U, rh);
    for (int t = 0; t < n; t++) {
        float *y = Y + (size_t)t * out;
        if (type == 6) {
            const float *u = U + (size_t)t * md->nb * rh;
            const int len = md->nb * rh;
            for (int o = 0; o < out; o++) y[o] += w * u[o % len];
        } else {
            const float *u = U + (size_t)t * rh;
            if (type == 1 || type == 3) {
                for (int o = 0; o < out; o++) y[o] += w * u[o % rh];
            } else {
                for (int o = 0; o < out; o++) y[o] += w * u[group_of(o, out, rh)];
            }
        }
    }
}

/* V[n, d] = Vin · Pᵀ (LoRMA shift, P materialised). */
static void full_replace(const adp_module_t *md, float *V, const float *Vin, int n, int d) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d, d, 1.0f, Vin, d, md->b, d, 0.0f,
                V, d);
}

/* ---- hook callbacks ---- */

/* Group [i, j) of segments sharing one set; returns j. */
static int group_end(const core_lin_call_t *c, int i) {
    int j = i + 1;
    while (j < c->n_segs && c->segs[j].adapter == c->segs[i].adapter) j++;
    return j;
}

static int group_rows(const core_lin_call_t *c, int i, int j) {
    return c->row0[j - 1] + c->segs[j - 1].n_tok - c->row0[i];
}

static int hook_pre(void *ctx, const core_lin_call_t *c, const float *x, float *x_out) {
    adp_hook_t *h = ctx;
    assert(c->n_rows <= h->max_tokens); /* scratch was sized for the forward's step limit */
    int copied = 0;
    h->ldy = c->d_in;
    for (int i = 0, j; i < c->n_segs; i = j) {
        j = group_end(c, i);
        const adp_set_t *set = c->segs[i].adapter;
        if (!set || set->n != 1) continue; /* input transforms are non-additive: alone */
        const adp_module_t *md = adp_module(set->a[0], c->layer, c->proj);
        if (md->kind != ADP_K_IN_LR && md->kind != ADP_K_IN_FULL) continue;
        if (!copied) {
            memcpy(x_out, x, (size_t)c->n_rows * c->d_in * sizeof(float));
            copied = 1;
        }
        const size_t off = (size_t)c->row0[i] * c->d_in;
        const int n = group_rows(c, i, j);
        if (md->kind == ADP_K_IN_LR)
            add_item(h, c->exec, c->d_in, md, x + off, c->d_in, x_out + off, n, 1.0f, 1);
        else full_replace(md, x_out + off, x + off, n, c->d_in);
    }
    run_items(h, c->exec, c->d_in);
    return copied;
}

static void hook_post(void *ctx, const core_lin_call_t *c, const float *x, float *y) {
    adp_hook_t *h = ctx;
    assert(c->n_rows <= h->max_tokens);
    h->ldy = c->d_out;
    int serial = 0; /* groups with a MoRA or full transform, done after the parallel phases */
    for (int i = 0, j; i < c->n_segs; i = j) {
        j = group_end(c, i);
        const adp_set_t *set = c->segs[i].adapter;
        if (!set) continue;
        const int n = group_rows(c, i, j);
        const float *X = x + (size_t)c->row0[i] * c->d_in;
        float *Y = y + (size_t)c->row0[i] * c->d_out;
        for (int k = 0; k < set->n; k++) {
            const adp_module_t *md = adp_module(set->a[k], c->layer, c->proj);
            switch (md->kind) {
            case ADP_K_LORA:
            case ADP_K_DORA:
                add_item(h, c->exec, c->d_out, md, X, c->d_in, Y, n, set->w[k], 0);
                break;
            /* y = B·(A·y): the shrink reads the base output, the expand replaces it */
            case ADP_K_OUT_LR:
                add_item(h, c->exec, c->d_out, md, Y, c->d_out, Y, n, 1.0f, 1);
                break;
            case ADP_K_MORA:
            case ADP_K_OUT_FULL: serial = 1; break;
            default: break; /* NONE, or an input transform done in hook_pre */
            }
        }
    }
    run_items(h, c->exec, c->d_out);
    for (int i = 0, j; serial && i < c->n_segs; i = j) {
        j = group_end(c, i);
        const adp_set_t *set = c->segs[i].adapter;
        if (!set) continue;
        const int n = group_rows(c, i, j);
        const float *X = x + (size_t)c->row0[i] * c->d_in;
        float *Y = y + (size_t)c->row0[i] * c->d_out;
        for (int k = 0; k < set->n; k++) {
            const adp_module_t *md = adp_module(set->a[k], c->layer, c->proj);
            if (md->kind == ADP_K_MORA) {
                mora_add(md, X, Y, n, set->w[k], h->t1, h->t2);
            } else if (md->kind == ADP_K_OUT_FULL) {
                memcpy(h->t1, Y, (size_t)n * c->d_out * sizeof(float));
                full_replace(md, Y, h->t1, n, c->d_out);
            }
        }
    }
}

/* ---- public API ---- */

int adp_hook_create(const core_model_t *m, int max_tokens, adp_hook_t **out) {
    const core_model_config_t *c = &m->cfg;
    size_t w = (size_t)c->hidden_size;
    if ((size_t)c->intermediate_size > w) w = (size_t)c->intermediate_size;
    if ((size_t)c->n_heads * c->head_dim > w) w = (size_t)c->n_heads * c->head_dim;
    adp_hook_t *h = calloc(1, sizeof *h);
    if (!h) return LLM_ENOMEM;
    h->m = m;
    h->max_tokens = max_tokens;
    h->cap = (size_t)max_tokens * 2 * w;
    h->widest = w;
    h->sgmv_min = SGMV_MIN;
    h->t1 = malloc(h->cap * sizeof(float));
    h->t2 = malloc(h->cap * sizeof(float));
    h->tb = malloc(h->cap * sizeof(float));
    h->items = malloc((size_t)max_tokens * ADP_SET_MAX * sizeof *h->items);
    h->gstart = malloc(((size_t)max_tokens * ADP_SET_MAX + 1) * sizeof *h->gstart);
    if (!h->t1 || !h->t2 || !h->tb || !h->items || !h->gstart) {
        adp_hook_free(h);
        return LLM_ENOMEM;
    }
    *out = h;
    return 0;
}

void adp_hook_free(adp_hook_t *h) {
    if (!h) return;
    free(h->t1);
    free(h->t2);
    free(h->tb);
    free(h->items);
    free(h->gstart);
    for (int t = 0; t < MAX_THREADS; t++) free(h->wide[t]);
    free(h);
}

void adp_hook_bind(adp_hook_t *h, core_lin_hook_t *hook) {
    hook->pre = hook_pre;
    hook->post = hook_post;
    hook->ctx = h;
}

int adp_set_validate(const adp_set_t *set, llm_error_t *err) {
    if (set->n < 0 || set->n > ADP_SET_MAX)
        return llm_err_set(err, LLM_EINVAL, "at most %d adapters may be combined", ADP_SET_MAX);
    for (int i = 0; i < set->n; i++) {
        if (!isfinite(set->w[i]))
            return llm_err_set(err, LLM_EINVAL, "adapter \"%s\": scale must be finite",
                               set->a[i]->name);
        if (!set->a[i]->additive && set->n > 1)
            return llm_err_set(err, LLM_EINVAL,
                               "adapter \"%s\" (%s) is not additive and must be the only adapter "
                               "of a request", set->a[i]->name,
                               adp_method_name(set->a[i]->method));
        if (!set->a[i]->additive && set->w[i] != 1.0f)
            return llm_err_set(err, LLM_EINVAL,
                               "adapter \"%s\" (%s) is not additive; its scale must be 1",
                               set->a[i]->name, adp_method_name(set->a[i]->method));
    }
    return 0;
}

void adp_hook_set_sgmv_min(adp_hook_t *h, int n) { h->sgmv_min = n > 0 ? n : SGMV_MIN; }
