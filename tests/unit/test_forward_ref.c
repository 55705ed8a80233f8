/* test_forward_ref.c: the core forward against an independent naive reference.
 *
 * The reference below is written from the maths of HuggingFace's LlamaForCausalLM /
 * MistralForCausalLM / Qwen2ForCausalLM (modeling_llama.py), not from core/forward.c: double
 * precision, no KV cache (full causal attention over the whole sequence), rotate-half RoPE
 * with HF's llama3 frequency rule, RMSNorm, GQA, SwiGLU, biases, tied head. It reads the
 * weights from synth_model's fp32 arrays (already rounded to the storage dtype), while the
 * core reads the safetensors files synth_model wrote, so config parsing, the loader, the dtype
 * conversions, the paged KV cache and batching are all inside the comparison.
 *
 * Each model configuration runs three scenarios: one sequence (prompt then decode), a batch of
 * five sequences mixing prefill chunks and decode tokens in single steps, and a prompt chunked
 * over three steps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "kv_cache.h"
#include "model.h"
#include "synth_model.h"
#include "test_util.h"

/* Tolerance: a core logit may differ from the fp64 reference by at most
 * REL_TOL · max_i |ref logit_i| of its row. The core computes in fp32 (BLAS GEMMs, float
 * softmax and RoPE angles); on these shapes its error is ~1e-6 of the row's scale, so 1e-4
 * leaves margin for BLAS kernel differences while a wrong RoPE pair, head mapping, bias or
 * scaling shows up at 1e-2 or more. */
#define REL_TOL 1e-4

#define MAX_SEQS 8

/* ---- reference forward (fp64, from the HF maths) ---- */

/* HF LlamaRotaryEmbedding: inv_freq[i] = theta^(-2i/d); with rope_scaling llama3 then
 * _compute_llama3_parameters: wavelen = 2π/inv_freq; wavelen > orig/low → inv_freq/factor;
 * wavelen < orig/high → unchanged; otherwise smooth = (orig/wavelen − low)/(high − low) and
 * (1 − smooth)·inv_freq/factor + smooth·inv_freq. */
static void ref_inv_freq(const synth_model_opts_t *o, double *inv_freq) {
    const int hd = synth_head_dim(o);
    const double theta = o->rope_theta > 0 ? o->rope_theta : 10000.0;
    for (int i = 0; i < hd / 2; i++) {
        double f = 1.0 / pow(theta, (double)(2 * i) / hd);
        if (o->rope_llama3) {
            const double orig = o->rope_orig_max_pos, factor = o->rope_factor;
            const double low = o->rope_low_freq_factor, high = o->rope_high_freq_factor;
            const double wavelen = 2.0 * M_PI / f;
            if (wavelen > orig / low) {
                f = f / factor;
            } else if (wavelen < orig / high) {
                /* high frequency: kept */
            } else {
                const double smooth = (orig / wavelen - low) / (high - low);
                f = (1.0 - smooth) * f / factor + smooth * f;
            }
        }
        inv_freq[i] = f;
    }
}

/* y[t, r] = Σ_c x[t, c]·W[r, c] + b[r] */
static void ref_linear(const double *x, int T, const float *W, const float *b, int rows,
                       int cols, double *y) {
    for (int t = 0; t < T; t++)
        for (int r = 0; r < rows; r++) {
            double s = b ? b[r] : 0.0;
            const float *wr = W + (size_t)r * cols;
            for (int c = 0; c < cols; c++) s += x[(size_t)t * cols + c] * wr[c];
            y[(size_t)t * rows + r] = s;
        }
}

/* LlamaRMSNorm: x / sqrt(mean(x²) + eps) · w */
static void ref_rmsnorm(const double *x, int T, const float *w, int d, double eps, double *y) {
    for (int t = 0; t < T; t++) {
        const double *xr = x + (size_t)t * d;
        double ss = 0.0;
        for (int i = 0; i < d; i++) ss += xr[i] * xr[i];
        const double inv = 1.0 / sqrt(ss / d + eps);
        for (int i = 0; i < d; i++) y[(size_t)t * d + i] = xr[i] * inv * w[i];
    }
}

/* apply_rotary_pos_emb: x·cos + rotate_half(x)·sin, rotate_half(x) = (−x2, x1), with
 * cos/sin of pos·inv_freq repeated over both halves. */
static void ref_rope(double *v, int hd, int pos, const double *inv_freq) {
    const int half = hd / 2;
    for (int i = 0; i < half; i++) {
        const double c = cos(pos * inv_freq[i]), s = sin(pos * inv_freq[i]);
        const double x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c - x2 * s;
        v[i + half] = x2 * c + x1 * s;
    }
}

/* Logits (T, vocab) for every position of tokens[0..T). Returns new array (caller frees). */
static double *ref_forward(const synth_weights_t *w, const int32_t *tokens, int T) {
    const synth_model_opts_t *o = &w->o;
    const int d = o->hidden, ffn = o->intermediate, hd = synth_head_dim(o);
    const int nh = o->n_heads, nkv = synth_n_kv_heads(o), V = o->vocab;
    const int qd = nh * hd, kvd = nkv * hd;
    const double eps = o->rms_eps > 0 ? o->rms_eps : 1e-5;
    double *x = calloc((size_t)T * d, sizeof(double));
    double *xn = calloc((size_t)T * d, sizeof(double));
    double *q = calloc((size_t)T * qd, sizeof(double));
    double *k = calloc((size_t)T * kvd, sizeof(double));
    double *v = calloc((size_t)T * kvd, sizeof(double));
    double *att = calloc((size_t)T * qd, sizeof(double));
    double *g = calloc((size_t)T * ffn, sizeof(double));
    double *u = calloc((size_t)T * ffn, sizeof(double));
    double *out = calloc((size_t)T * d, sizeof(double));
    double *p = calloc((size_t)T, sizeof(double));
    double *inv_freq = calloc((size_t)hd / 2, sizeof(double));
    double *logits = calloc((size_t)T * V, sizeof(double));
    assert_non_null(x && xn && q && k && v && att && g && u && out && p && inv_freq && logits);
    ref_inv_freq(o, inv_freq);

    for (int t = 0; t < T; t++)
        for (int i = 0; i < d; i++) x[(size_t)t * d + i] = w->embed[(size_t)tokens[t] * d + i];

    for (int l = 0; l < o->n_layers; l++) {
        const synth_layer_t *ly = &w->layers[l];
        /* self-attention */
        ref_rmsnorm(x, T, ly->attn_norm, d, eps, xn);
        ref_linear(xn, T, ly->wq, ly->bq, qd, d, q);
        ref_linear(xn, T, ly->wk, ly->bk, kvd, d, k);
        ref_linear(xn, T, ly->wv, ly->bv, kvd, d, v);
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < nh; h++) ref_rope(q + (size_t)t * qd + h * hd, hd, t, inv_freq);
            for (int h = 0; h < nkv; h++) ref_rope(k + (size_t)t * kvd + h * hd, hd, t, inv_freq);
        }
        /* repeat_kv: query head h reads kv head h / (nh / nkv); causal softmax(q·k/√hd)·v */
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < nh; h++) {
                const int kh = h / (nh / nkv);
                const double *qh = q + (size_t)t * qd + h * hd;
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j <= t; j++) {
                    const double *kj = k + (size_t)j * kvd + kh * hd;
                    double s = 0.0;
                    for (int i = 0; i < hd; i++) s += qh[i] * kj[i];
                    p[j] = s / sqrt((double)hd);
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j <= t; j++) sum += (p[j] = exp(p[j] - mx));
                double *oh = att + (size_t)t * qd + h * hd;
                for (int i = 0; i < hd; i++) {
                    double s = 0.0;
                    for (int j = 0; j <= t; j++) s += p[j] / sum * v[(size_t)j * kvd + kh * hd + i];
                    oh[i] = s;
                }
            }
        }
        ref_linear(att, T, ly->wo, ly->bo, d, qd, out);
        for (size_t i = 0; i < (size_t)T * d; i++) x[i] += out[i];
        /* MLP: down(silu(gate(x)) · up(x)) */
        ref_rmsnorm(x, T, ly->ffn_norm, d, eps, xn);
        ref_linear(xn, T, ly->w_gate, NULL, ffn, d, g);
        ref_linear(xn, T, ly->w_up, NULL, ffn, d, u);
        for (size_t i = 0; i < (size_t)T * ffn; i++) g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
        ref_linear(g, T, ly->w_down, NULL, d, ffn, out);
        for (size_t i = 0; i < (size_t)T * d; i++) x[i] += out[i];
    }
    ref_rmsnorm(x, T, w->final_norm, d, eps, xn);
    ref_linear(xn, T, w->lm_head, NULL, V, d, logits);

    free(x); free(xn); free(q); free(k); free(v); free(att); free(g); free(u); free(out);
    free(p); free(inv_freq);
    return logits;
}

/* ---- model configurations ---- */

typedef struct {
    const char *name;
    synth_model_opts_t o;
} model_case_t;

static model_case_t make_case(int c) {
    synth_model_opts_t o = synth_model_defaults();
    o.hidden = 48;
    o.intermediate = 96;
    o.n_layers = 2;
    o.n_heads = 4;
    o.n_kv_heads = 2;
    o.vocab = 200;
    o.max_pos = 128;
    o.seed = 1000 + (uint64_t)c;
    const char *name = "?";
    switch (c) {
    case 0:
        name = "llama_gqa"; /* 4 query heads over 2 kv heads, untied head */
        break;
    case 1:
        name = "llama_tied";
        o.tie_embeddings = 1;
        o.n_kv_heads = 4;
        o.vocab = 131; /* odd size */
        break;
    case 2:
        /* head_dim 16, theta 1e4: wavelengths 6.3, 20, 63, 199, ... against orig 64 with
         * low 1 / high 4 (thresholds 64 and 16) put pair 0 in the kept band, pairs 1–2 in the
         * smoothed band and the rest in the divided band: all three branches are used. */
        name = "llama3_rope";
        o.hidden = 64;
        o.intermediate = 112;
        o.rope_llama3 = 1;
        o.rope_factor = 8.0f;
        o.rope_low_freq_factor = 1.0f;
        o.rope_high_freq_factor = 4.0f;
        o.rope_orig_max_pos = 64;
        break;
    case 3:
        name = "qwen2_bias"; /* q/k/v biases, tied, eps 1e-6 */
        o.arch = "Qwen2ForCausalLM";
        o.tie_embeddings = 1;
        o.rms_eps = 1e-6f;
        o.rope_theta = 1000000.0f;
        o.vocab = 256;
        break;
    case 4:
        name = "mistral_mqa"; /* one kv head shared by all query heads */
        o.arch = "MistralForCausalLM";
        o.n_kv_heads = 1;
        o.rope_theta = 1000000.0f;
        break;
    case 5:
        name = "llama_attention_bias"; /* q/k/v/o biases */
        o.attention_bias = 1;
        break;
    case 6:
        name = "explicit_head_dim"; /* head_dim 16 with hidden 32: q width 64 ≠ hidden */
        o.hidden = 32;
        o.intermediate = 80;
        o.head_dim = 16;
        break;
    case 7:
        name = "bf16_tied_bias"; /* BF16 storage, including bias and norm vectors */
        o.dtype = CORE_DT_BF16;
        o.tie_embeddings = 1;
        o.attention_bias = 1;
        break;
    case 8:
        name = "f16_qwen2"; /* F16 storage (some weights land in the subnormal range) */
        o.dtype = CORE_DT_F16;
        o.arch = "Qwen2ForCausalLM";
        o.vocab = 300;
        break;
    }
    return (model_case_t){name, o};
}

#define N_CASES 9

/* ---- fixture ---- */

typedef struct {
    const model_case_t *mc;
    char *dir;
    synth_weights_t *w;
    core_model_t *m;
    core_kv_pool_t *pool;
    core_fwd_t *fwd;
} fx_t;

static int setup(void **state) {
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    fx->mc = *state;
    *state = fx;
    llm_error_t err = {0};
    fx->dir = tu_mkdtemp();
    if (!fx->dir || synth_model_write(&fx->mc->o, fx->dir, &fx->w) != 0) return -1;
    if (core_model_load(fx->dir, &fx->m, &err) != 0) {
        fprintf(stderr, "%s: load: %s\n", fx->mc->name, err.msg);
        return -1;
    }
    if (core_kv_pool_create(&fx->m->cfg, 48, &fx->pool) != 0) return -1;
    if (core_fwd_create(fx->m, 64, 0, &fx->fwd) != 0) return -1;
    return 0;
}

static int teardown(void **state) {
    fx_t *fx = *state;
    if (!fx) return 0;
    core_fwd_free(fx->fwd);
    core_kv_pool_free(fx->pool);
    core_model_free(fx->m);
    synth_weights_free(fx->w);
    if (fx->dir) tu_rm_rf(fx->dir);
    free(fx->dir);
    free(fx);
    return 0;
}

/* ---- plans: a list of steps, each a list of (sequence, tokens, logits mode) ---- */

typedef struct {
    int seq;
    int n_tok;
    core_logits_mode_t mode;
} plan_seg_t;

typedef struct {
    int n_segs;
    plan_seg_t segs[MAX_SEQS];
} plan_step_t;

/* Results of a plan: per sequence its tokens, the reference and the core's logits rows. */
typedef struct {
    int n_seqs;
    int len[MAX_SEQS];
    int32_t *tokens[MAX_SEQS];
    double *ref[MAX_SEQS];          /* (len, vocab) */
    float *got[MAX_SEQS];           /* (len, vocab) core rows that were requested */
    unsigned char *have[MAX_SEQS];  /* (len) */
    int n_rows_checked;
} run_t;

/* Deterministic token stream for a sequence; token_seed 0..n. */
static void fill_tokens(int32_t *t, int n, int vocab, unsigned token_seed) {
    uint32_t s = 2463534242u ^ (token_seed * 2654435761u);
    for (int i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        t[i] = (int32_t)(s % (uint32_t)vocab);
    }
}

static double row_scale(const double *ref, int V) {
    double mx = 0.0;
    for (int i = 0; i < V; i++)
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    return mx;
}

/* The tolerance of expect_row: REL_TOL, or BF16_KV_TOL while a scenario runs on a bf16 cache. */
static double g_tol = REL_TOL;
static double g_worst; /* largest |diff| / scale seen, for the log */

/* Fails unless |got − ref| ≤ g_tol · max|ref| over the row. */
static void expect_row(const char *model, int seq, int pos, const float *got, const double *ref,
                       int V) {
    const double scale = row_scale(ref, V);
    /* A degenerate row (all logits ~0) would make the tolerance meaningless. */
    if (scale < 0.05) fail_msg("%s: seq %d pos %d: reference row scale %g too small", model, seq,
                               pos, scale);
    double worst = 0.0;
    int wi = 0;
    for (int i = 0; i < V; i++) {
        const double dlt = fabs((double)got[i] - ref[i]);
        if (!(dlt <= worst)) { worst = dlt; wi = i; } /* also catches NaN */
    }
    if (worst / scale > g_worst) g_worst = worst / scale;
    if (!(worst <= g_tol * scale))
        fail_msg("%s: seq %d pos %d: logit %d core %.7g ref %.7g (|diff| %.3g > %.1e * %.4g)",
                 model, seq, pos, wi, (double)got[wi], ref[wi], worst, g_tol, scale);
}

/* Two core rows for the same position agree to the same tolerance (both are fp32 results;
 * only the GEMM shapes, hence the BLAS blocking, differ between them). */
static void expect_same(const char *model, int pos, const float *a, const float *b,
                        const double *ref, int V) {
    const double tol = REL_TOL * row_scale(ref, V);
    for (int i = 0; i < V; i++)
        if (!(fabs((double)a[i] - b[i]) <= tol))
            fail_msg("%s: pos %d logit %d: one step %.7g, chunked %.7g", model, pos, i,
                     (double)a[i], (double)b[i]);
}

/* Runs the plan through core_fwd_step and checks every returned row against the reference of
 * its own sequence. token_seed[s] picks sequence s's token stream (equal seeds: same prompt). */
static void run_plan(fx_t *fx, const plan_step_t *steps, int n_steps, int n_seqs,
                     const unsigned *token_seed, run_t *run) {
    const int V = fx->m->cfg.vocab_size;
    memset(run, 0, sizeof *run);
    run->n_seqs = n_seqs;
    for (int i = 0; i < n_steps; i++)
        for (int j = 0; j < steps[i].n_segs; j++)
            run->len[steps[i].segs[j].seq] += steps[i].segs[j].n_tok;
    core_seq_t seqs[MAX_SEQS];
    for (int s = 0; s < n_seqs; s++) {
        run->tokens[s] = calloc((size_t)run->len[s], sizeof(int32_t));
        run->got[s] = calloc((size_t)run->len[s] * V, sizeof(float));
        run->have[s] = calloc((size_t)run->len[s], 1);
        assert_non_null(run->tokens[s] && run->got[s] && run->have[s]);
        fill_tokens(run->tokens[s], run->len[s], V, token_seed[s]);
        run->ref[s] = ref_forward(fx->w, run->tokens[s], run->len[s]);
        core_seq_init(&seqs[s], fx->pool, fx->m->cfg.max_pos);
    }

    int pos[MAX_SEQS] = {0};
    for (int i = 0; i < n_steps; i++) {
        core_step_seg_t segs[MAX_SEQS];
        for (int j = 0; j < steps[i].n_segs; j++) {
            const plan_seg_t *ps = &steps[i].segs[j];
            segs[j] = (core_step_seg_t){.seq = &seqs[ps->seq],
                                        .tokens = run->tokens[ps->seq] + pos[ps->seq],
                                        .n_tok = ps->n_tok, .logits = ps->mode};
        }
        const int rows = core_fwd_logit_rows(segs, steps[i].n_segs);
        float *logits = malloc((size_t)(rows > 0 ? rows : 1) * V * sizeof(float));
        assert_non_null(logits);
        llm_error_t err = {0};
        const int rc = core_fwd_step(fx->fwd, segs, steps[i].n_segs, logits, &err);
        if (rc != 0) fail_msg("%s: step %d: %s (%s)", fx->mc->name, i, err.msg, llm_err_name(rc));
        /* Rows come in segment order: n_tok rows for ALL, the last token's row for LAST. */
        int r = 0;
        for (int j = 0; j < steps[i].n_segs; j++) {
            const plan_seg_t *ps = &steps[i].segs[j];
            const int s = ps->seq;
            assert_int_equal(seqs[s].n_past, pos[s] + ps->n_tok);
            const int first = ps->mode == CORE_LOGITS_ALL ? 0
                              : ps->mode == CORE_LOGITS_LAST ? ps->n_tok - 1 : ps->n_tok;
            for (int t = first; t < ps->n_tok; t++, r++) {
                const int p = pos[s] + t;
                memcpy(run->got[s] + (size_t)p * V, logits + (size_t)r * V,
                       (size_t)V * sizeof(float));
                run->have[s][p] = 1;
                expect_row(fx->mc->name, s, p, logits + (size_t)r * V, run->ref[s] + (size_t)p * V,
                           V);
                run->n_rows_checked++;
            }
            pos[s] += ps->n_tok;
        }
        assert_int_equal(r, rows);
        free(logits);
    }
    for (int s = 0; s < n_seqs; s++) core_seq_deinit(&seqs[s]);
    assert_int_equal(fx->pool->n_free, fx->pool->n_blocks);
}

static void run_free(run_t *run) {
    for (int s = 0; s < run->n_seqs; s++) {
        free(run->tokens[s]);
        free(run->ref[s]);
        free(run->got[s]);
        free(run->have[s]);
    }
}

/* ---- scenarios ---- */

#define ALL CORE_LOGITS_ALL
#define LAST CORE_LOGITS_LAST
#define NONE CORE_LOGITS_NONE

/* (a) One sequence: a 20-token prompt (crossing the 16-position KV block) in one step with
 * every row's logits, then six single-token decode steps. */
static void test_unbatched(void **state) {
    fx_t *fx = *state;
    const plan_step_t plan[] = {
        {1, {{0, 20, ALL}}}, {1, {{0, 1, LAST}}}, {1, {{0, 1, LAST}}}, {1, {{0, 1, ALL}}},
        {1, {{0, 1, LAST}}}, {1, {{0, 1, LAST}}}, {1, {{0, 1, LAST}}},
    };
    const unsigned seeds[] = {1};
    run_t run;
    run_plan(fx, plan, sizeof plan / sizeof plan[0], 1, seeds, &run);
    assert_int_equal(run.n_rows_checked, 26);
    run_free(&run);
}

/* (b) Five sequences of different lengths sharing steps: prefill chunks next to decode tokens,
 * LAST/ALL/NONE segments mixed, segments not in sequence order, a sequence joining late.
 * Their KV blocks interleave in the pool, so a paging mix-up would mix sequences. */
static void test_batched(void **state) {
    fx_t *fx = *state;
    const plan_step_t plan[] = {
        {4, {{0, 7, ALL}, {1, 18, LAST}, {2, 5, NONE}, {3, 1, ALL}}},
        {5, {{0, 1, LAST}, {1, 1, ALL}, {2, 9, ALL}, {3, 12, LAST}, {4, 20, ALL}}},
        {5, {{4, 1, LAST}, {3, 1, ALL}, {2, 1, LAST}, {1, 1, LAST}, {0, 1, LAST}}},
        {3, {{4, 3, ALL}, {0, 2, ALL}, {2, 1, LAST}}},
    };
    const unsigned seeds[] = {11, 12, 13, 14, 15};
    run_t run;
    run_plan(fx, plan, sizeof plan / sizeof plan[0], 5, seeds, &run);
    assert_int_equal(run.n_rows_checked, (7 + 1 + 1) + (1 + 1 + 9 + 1 + 20) + 5 + (3 + 2 + 1));
    run_free(&run);
}

/* (c) Chunked prefill: sequence 0 takes a 30-token prompt in one step; sequence 1 the same
 * prompt as chunks of 10, 11 and 9 (every row); sequence 2 the same chunks with logits only
 * at the end. All rows match the reference, and the chunked rows match the one-step rows. */
static void test_chunked_prefill(void **state) {
    fx_t *fx = *state;
    const plan_step_t plan[] = {
        {1, {{0, 30, ALL}}},
        {2, {{1, 10, ALL}, {2, 10, NONE}}},
        {2, {{2, 11, NONE}, {1, 11, ALL}}},
        {2, {{1, 9, ALL}, {2, 9, LAST}}},
    };
    const unsigned seeds[] = {7, 7, 7};
    run_t run;
    run_plan(fx, plan, sizeof plan / sizeof plan[0], 3, seeds, &run);
    assert_int_equal(run.n_rows_checked, 30 + 30 + 1);
    const int V = fx->m->cfg.vocab_size;
    for (int p = 0; p < 30; p++)
        expect_same(fx->mc->name, p, run.got[0] + (size_t)p * V, run.got[1] + (size_t)p * V,
                    run.ref[0] + (size_t)p * V, V);
    assert_true(run.have[2][29]);
    expect_same(fx->mc->name, 29, run.got[2] + (size_t)29 * V, run.got[1] + (size_t)29 * V,
                run.ref[0] + (size_t)29 * V, V);
    run_free(&run);
}

/* (d) The batched plan on a bf16 KV cache (the server's cache for bf16 and int8 weights): keys
 * and values rounded to bf16 (relative error ≤ 2⁻⁹ each) move the logits by well under
 * BF16_KV_TOL of the row's scale, while a cache slot mixed up between positions or sequences
 * moves them by O(1). */
#define BF16_KV_TOL 1e-2
static void test_batched_bf16_kv(void **state) {
    fx_t *fx = *state;
    core_kv_pool_t *f32_pool = fx->pool;
    assert_int_equal(core_kv_pool_create_as(&fx->m->cfg, 48, KERN_W_BF16, &fx->pool), 0);
    assert_int_equal(fx->pool->type, KERN_W_BF16);
    g_tol = BF16_KV_TOL;
    g_worst = 0;
    test_batched(state);
    fprintf(stderr, "  %s: bf16 KV cache: worst |logit diff| %.2e of the row's scale\n",
            fx->mc->name, g_worst);
    g_tol = REL_TOL;
    core_kv_pool_free(fx->pool);
    fx->pool = f32_pool;
}

/* ---- runner ---- */

int main(void) {
    static model_case_t cases[N_CASES];
    static const struct {
        const char *name;
        CMUnitTestFunction fn;
    } scen[] = {
        {"unbatched", test_unbatched},
        {"batched", test_batched},
        {"chunked_prefill", test_chunked_prefill},
        {"batched_bf16_kv", test_batched_bf16_kv},
    };
    enum { N_SCEN = sizeof scen / sizeof scen[0] };
    static char names[N_CASES * N_SCEN][96];
    struct CMUnitTest tests[N_CASES * N_SCEN];
    int n = 0;
    for (int c = 0; c < N_CASES; c++) {
        cases[c] = make_case(c);
        for (int s = 0; s < N_SCEN; s++, n++) {
            snprintf(names[n], sizeof names[n], "%s/%s", cases[c].name, scen[s].name);
            tests[n] = (struct CMUnitTest){names[n], scen[s].fn, setup, teardown, &cases[c]};
        }
    }
    return _cmocka_run_group_tests("forward_ref", tests, (size_t)n, NULL, NULL);
}
