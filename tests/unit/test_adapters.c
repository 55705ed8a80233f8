/* test_adapters.c: adapter loading, validation and the unmerged forward (adapters/).
 *
 * Golden checks: for every method and variant a random adapter (synth_adapter) is applied
 * unmerged through adp_hook and compared with a second model whose weights were merged by an
 * independent double-precision implementation of the spec's formulas (sa_merge). Logits must
 * agree to |diff| <= 1e-4 · max|logit| per row, and differ from the base model's by far more
 * than that, so a no-op adapter cannot pass. Then batching (one batch of many adapters gives
 * every sequence its solo tokens), the stories260K golden ids under a zero adapter, two real
 * PEFT adapters on a SmolLM-135M-shaped base, real configs, and every refusal of adapters.md
 * §2.4 / §10 with its message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "linear.h"
#include "adp_config.h"
#include "forward.h"
#include "generate.h"
#include "model.h"
#include "synth_adapter.h"
#include "synth_model.h"
#include "synth_st_writer.h"
#include "test_util.h"

/* Logits tolerance: |diff| <= TOL · max|logit| of the row. The adapter path runs in fp32 while
 * the merged reference is exact, so differences are a few fp32 ulps amplified through two
 * layers; 1e-4 leaves two orders of magnitude of room and is still far below any real change. */
#define TOL 1e-4
/* An adapter must move the logits by at least this much relative to max|logit|. */
#define VISIBLE 1e-2
#define ALL7 "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"

/* ---- fixture ---- */

typedef struct {
    char *tmp;                /* root of every directory a test writes */
    int n_dirs;
    synth_model_opts_t so;    /* the small synthetic base */
    synth_weights_t *sw;
    core_model_t *base;
    sa_shape_t shape;
    adp_hook_t *hook;
    core_lin_hook_t lh;
    core_model_t *stories;    /* stories260K-hf */
    adp_hook_t *st_hook;
    core_lin_hook_t st_lh;
} fx_t;

static char *newdir(fx_t *fx, const char *what) {
    char *p = malloc(4200);
    snprintf(p, 4200, "%s/%02d-%s", fx->tmp, fx->n_dirs++, what);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", p);
    if (system(cmd) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

static int setup(void **state) {
    fx_t *fx = calloc(1, sizeof *fx);
    llm_error_t err = {0};
    if (!fx || !(fx->tmp = tu_mkdtemp())) return -1;
    /* hidden 48, ffn 80, 2 layers, 4 heads of 12 / 2 kv heads (GQA: k/v out 24), vocab 128,
     * bf16 storage (the adapter math must use the weights as served) */
    fx->so = synth_model_defaults();
    fx->so.hidden = 48;
    fx->so.intermediate = 80;
    fx->so.n_layers = 2;
    fx->so.n_heads = 4;
    fx->so.n_kv_heads = 2;
    fx->so.vocab = 128;
    fx->so.dtype = CORE_DT_BF16;
    fx->so.seed = 7;
    char *dir = newdir(fx, "base");
    if (!dir || synth_model_write(&fx->so, dir, &fx->sw) != 0) return -1;
    if (core_model_load(dir, &fx->base, &err)) {
        fprintf(stderr, "base: %s\n", err.msg);
        return -1;
    }
    free(dir);
    fx->shape = sa_shape_from_synth(&fx->so);
    if (adp_hook_create(fx->base, 512, &fx->hook)) return -1;
    adp_hook_set_sgmv_min(fx->hook, 8); /* segment 0 (9 tokens) takes SGMV, the rest BGMV */
    adp_hook_bind(fx->hook, &fx->lh);
    if (core_model_load(tu_fixture_path("stories260K-hf"), &fx->stories, &err)) {
        fprintf(stderr, "stories260K: %s\n", err.msg);
        return -1;
    }
    if (adp_hook_create(fx->stories, 512, &fx->st_hook)) return -1;
    adp_hook_set_sgmv_min(fx->st_hook, 8); /* prompt chunks SGMV, decode and short BGMV */
    adp_hook_bind(fx->st_hook, &fx->st_lh);
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fx_t *fx = *state;
    adp_hook_free(fx->hook);
    adp_hook_free(fx->st_hook);
    core_model_free(fx->base);
    core_model_free(fx->stories);
    synth_weights_free(fx->sw);
    tu_rm_rf(fx->tmp);
    free(fx->tmp);
    free(fx);
    return 0;
}

/* ---- helpers ---- */

/* Storage of the low-rank factors for load_ok (the server's --adapter-dtype). */
static kern_wtype_t g_factor_dtype = KERN_W_F32;

static adp_adapter_t *load_ok(const core_model_t *m, const char *dir, const char *name) {
    llm_error_t err = {0};
    adp_adapter_t *a = NULL;
    const adp_load_opts_t lo = {.dtype = g_factor_dtype};
    int rc = adp_load_dir(m, dir, name, &lo, &a, &err);
    if (rc) fprintf(stderr, "%s: unexpected refusal: %s\n", name, err.msg);
    assert_int_equal(rc, 0);
    assert_non_null(a);
    return a;
}

static void expect_refused(const core_model_t *m, const char *dir, int code, const char *substr) {
    llm_error_t err = {0};
    adp_adapter_t *a = NULL;
    int rc = adp_load_dir(m, dir, "bad", NULL, &a, &err);
    if (rc != code || !strstr(err.msg, substr))
        fprintf(stderr, "expected %s containing \"%s\", got %s: %s\n", llm_err_name(code), substr,
                llm_err_name(rc), err.msg);
    assert_int_equal(rc, code);
    assert_null(a);
    assert_non_null(strstr(err.msg, substr));
}

static sa_adapter_t *write_adapter(const char *dir, const sa_shape_t *sh, const sa_opts_t *o) {
    sa_adapter_t *sa = NULL;
    assert_int_equal(sa_write(dir, sh, o, &sa), 0);
    return sa;
}

static float *proj_array(synth_layer_t *ly, int p) {
    float *const a[SA_NPROJ] = {ly->wq, ly->wk, ly->wv, ly->wo, ly->w_gate, ly->w_up, ly->w_down};
    return a[p];
}

static void write_merged(fx_t *fx, const char *dir, sa_adapter_t *const *ads, const double *w,
                         int n) {
    assert_int_equal(sa_write_merged_model(fx->sw, dir, (const sa_adapter_t *const *)ads, w, n),
                     0);
}

/* Four prompts and the sets they run with. */
enum { NSEG = 4 };
/* Segment 0 has enough tokens for the SGMV (sgemm) path, segment 2 and the decode step take
 * the BGMV kernels: every merged-weight check covers both. */
static const int k_len[NSEG] = {9, 12, 5, 9};

static void make_prompts(int32_t prompts[NSEG][16], int vocab) {
    uint64_t s = 12345;
    for (int i = 0; i < NSEG; i++)
        for (int t = 0; t < 16; t++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            prompts[i][t] = (int32_t)((s >> 33) % (uint64_t)(vocab - 3)) + 3;
        }
    memcpy(prompts[3], prompts[0], sizeof prompts[0]); /* segment 3 = prompt 0 without adapter */
}

/* Step 1: the four prompts in one step, all logits; step 2: one decode token for sequence 0
 * alone (the single-token path). Returns sum(k_len) + 1 rows of logits (new). */
static float *run_steps(const core_model_t *m, const core_lin_hook_t *hook,
                        const void *const sets[NSEG]) {
    const int V = m->cfg.vocab_size;
    int32_t prompts[NSEG][16];
    make_prompts(prompts, V);
    core_kv_pool_t *pool;
    core_fwd_t *fwd;
    assert_int_equal(core_kv_pool_create(&m->cfg, 16, &pool), 0);
    assert_int_equal(core_fwd_create(m, 64, 0, &fwd), 0);
    core_exec_set_min_parallel(core_fwd_exec(fwd), 0); /* the parallel code, even here */
    if (hook) core_fwd_set_hook(fwd, hook);
    core_seq_t seq[NSEG];
    core_step_seg_t segs[NSEG];
    int rows = 1;
    for (int i = 0; i < NSEG; i++) {
        core_seq_init(&seq[i], pool, m->cfg.max_pos);
        segs[i] = (core_step_seg_t){.seq = &seq[i], .tokens = prompts[i], .n_tok = k_len[i],
                                    .logits = CORE_LOGITS_ALL, .adapter = sets[i]};
        rows += k_len[i];
    }
    float *logits = malloc((size_t)rows * V * sizeof(float));
    assert_non_null(logits);
    llm_error_t err = {0};
    assert_int_equal(core_fwd_step(fwd, segs, NSEG, logits, &err), 0);
    int32_t next = 5;
    core_step_seg_t dec = {.seq = &seq[0], .tokens = &next, .n_tok = 1,
                           .logits = CORE_LOGITS_LAST, .adapter = sets[0]};
    assert_int_equal(core_fwd_step(fwd, &dec, 1, logits + (size_t)(rows - 1) * V, &err), 0);
    for (int i = 0; i < NSEG; i++) core_seq_deinit(&seq[i]);
    core_fwd_free(fwd);
    core_kv_pool_free(pool);
    return logits;
}

/* Max over rows of max|got − want| / max|want|, rows [r0, r0 + n). */
static double row_rel_diff(const float *got, const float *want, int r0, int n, int V) {
    double worst = 0;
    for (int r = r0; r < r0 + n; r++) {
        double md = 0, mx = 0;
        for (int j = 0; j < V; j++) {
            double d = fabs((double)got[(size_t)r * V + j] - want[(size_t)r * V + j]);
            if (d > md) md = d;
            if (fabs(want[(size_t)r * V + j]) > mx) mx = fabs(want[(size_t)r * V + j]);
        }
        if (md / mx > worst) worst = md / mx;
    }
    return worst;
}

/* The adapter set applied through the hook against the merged model; NULL segments against the
 * base; and the adapted rows visibly different from the base ones. */
static void check_against_merged(fx_t *fx, const adp_set_t *set, const char *merged_dir,
                                 const char *what) {
    llm_error_t err = {0};
    core_model_t *merged = NULL;
    if (core_model_load(merged_dir, &merged, &err)) fprintf(stderr, "merged: %s\n", err.msg);
    assert_non_null(merged);
    const int V = fx->base->cfg.vocab_size;
    const void *with[NSEG] = {set, NULL, set, NULL};
    const void *none[NSEG] = {NULL, NULL, NULL, NULL};
    float *got = run_steps(fx->base, &fx->lh, with);
    float *ref = run_steps(merged, NULL, none);
    float *base = run_steps(fx->base, NULL, none);
    const int r1 = k_len[0], r2 = r1 + k_len[1], r3 = r2 + k_len[2], rd = r3 + k_len[3];
    double e0 = row_rel_diff(got, ref, 0, k_len[0], V);
    double e2 = row_rel_diff(got, ref, r2, k_len[2], V);
    double ed = row_rel_diff(got, ref, rd, 1, V);
    double eb1 = row_rel_diff(got, base, r1, k_len[1], V);
    double eb3 = row_rel_diff(got, base, r3, k_len[3], V);
    double vis = row_rel_diff(got, got + (size_t)r3 * V, 0, k_len[0], V); /* seg 0 vs seg 3 */
    if (e0 > TOL || e2 > TOL || ed > TOL || eb1 > TOL || eb3 > TOL || vis < VISIBLE ||
        getenv("TEST_ADAPTERS_VERBOSE"))
        fprintf(stderr,
                "%s: rel diff vs merged %.3g %.3g (decode %.3g), no-adapter rows vs base %.3g "
                "%.3g, adapter effect %.3g\n", what, e0, e2, ed, eb1, eb3, vis);
    assert_true(e0 <= TOL && e2 <= TOL && ed <= TOL);
    assert_true(eb1 <= TOL && eb3 <= TOL);
    assert_true(vis >= VISIBLE);
    free(got);
    free(ref);
    free(base);
    core_model_free(merged);
}

/* Writes adapter o, loads it, checks its modules against the writer's and the logits against a
 * merged model. */
static void check_variant(fx_t *fx, const sa_opts_t *o, const char *what) {
    char *adir = newdir(fx, "adapter"), *mdir = newdir(fx, "merged");
    sa_adapter_t *sa = write_adapter(adir, &fx->shape, o);
    adp_adapter_t *ad = load_ok(fx->base, adir, what);
    assert_int_equal(ad->additive, sa_is_additive(sa));
    for (int l = 0; l < fx->shape.n_layers; l++)
        for (int p = 0; p < SA_NPROJ; p++) {
            const sa_module_t *sm = sa_module(sa, l, p);
            const adp_module_t *am = adp_module(ad, l, (core_proj_t)p);
            assert_int_equal(am->kind != ADP_K_NONE, sm->present);
            if (sm->present && o->method == SA_MORA) assert_int_equal(am->r, sm->rh);
        }
    adp_set_t set = {.n = 1, .a = {ad}, .w = {1.0f}};
    llm_error_t err = {0};
    assert_int_equal(adp_set_validate(&set, &err), 0);
    double one = 1.0;
    write_merged(fx, mdir, &sa, &one, 1);
    check_against_merged(fx, &set, mdir, what);
    adp_adapter_unref(ad);
    sa_adapter_free(sa);
    free(adir);
    free(mdir);
}

/* ---- (a) every method and variant against merged weights ---- */

static void test_merged_lora(void **state) {
    fx_t *fx = *state;
    sa_opts_t o = sa_opts_defaults(SA_LORA);
    o.targets = SA_ALL;
    o.prefix = 1;
    check_variant(fx, &o, "lora r8 f32 all");
    o.r = 4;
    o.alpha = 16; /* s = 4 */
    o.prefix = 0;
    o.dtype = CORE_DT_BF16;
    o.seed = 2;
    check_variant(fx, &o, "lora r4 bf16 no prefix");
    o.r = 16;
    o.alpha = 8;
    o.dtype = CORE_DT_F16;
    o.infix = "default"; /* hand-saved: lora_A.default.weight */
    o.seed = 3;
    check_variant(fx, &o, "lora r16 f16 infix");
}

static void test_merged_rslora(void **state) {
    fx_t *fx = *state;
    sa_opts_t o = sa_opts_defaults(SA_RSLORA);
    o.targets = SA_ALL;
    o.r = 16;
    o.alpha = 8; /* s = 8/4 = 2 (plain LoRA would be 0.5) */
    check_variant(fx, &o, "rslora r16");
    o.r = 4;
    o.dtype = CORE_DT_BF16;
    check_variant(fx, &o, "rslora r4 bf16");
}

static void test_merged_dora(void **state) {
    fx_t *fx = *state;
    sa_opts_t o = sa_opts_defaults(SA_DORA);
    o.targets = SA_ALL;
    o.prefix = 1;
    check_variant(fx, &o, "dora r8");
    o.r = 4;
    o.dtype = CORE_DT_BF16;
    o.infix = "default";
    check_variant(fx, &o, "dora r4 bf16 infix");
}

static void test_merged_mora(void **state) {
    fx_t *fx = *state;
    /* On this base: r = 4 gives padding p > 0 for most layers (q: r̂ 20, p 12; type 6: nb 3);
     * r = 32 gives r̂ > in (q: r̂ 55 > 48, p 7; gate: r̂ 64, p 16) and r̂ > out (k/v: r̂ 48 > 24,
     * down: r̂ 64 > 48), i.e. empty groups in the grouping types; r = 8 for type 6 gives nb 2
     * on q/o and p > 0. */
    static const int types[] = {1, 2, 3, 4, 6};
    static const int ranks[] = {4, 8, 32};
    int padded = 0, rh_gt_in = 0, rh_gt_out = 0, nb2 = 0;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        for (size_t k = 0; k < sizeof ranks / sizeof ranks[0]; k++) {
            sa_opts_t o = sa_opts_defaults(SA_MORA);
            o.targets = SA_ALL;
            o.mora_type = types[t];
            o.r = ranks[k];
            o.prefix = (int)(t & 1);
            o.dtype = k == 1 ? CORE_DT_BF16 : CORE_DT_F32;
            o.seed = 100 + t * 10 + k;
            char what[64];
            snprintf(what, sizeof what, "mora type %d r %d", types[t], ranks[k]);
            check_variant(fx, &o, what);
            for (int p = 0; p < SA_NPROJ; p++) {
                int in, out;
                sa_proj_dims(&fx->shape, p, &in, &out);
                int rh = sa_mora_rhat(in, out, ranks[k], types[t]);
                int pad = (rh - in % rh) % rh;
                padded += pad > 0;
                rh_gt_in += rh > in;
                rh_gt_out += rh > out;
                nb2 += types[t] == 6 && (in + pad) / rh >= 2;
            }
        }
    }
    assert_true(padded > 0 && rh_gt_in > 0 && rh_gt_out > 0 && nb2 > 0);
}

static void test_merged_lorma(void **state) {
    fx_t *fx = *state;
    static const sa_inflation_t infl[] = {SA_RRI, SA_SHIFT, SA_NONE};
    static const char *const iname[] = {"rri", "shift", "none"};
    for (int pre = 1; pre >= 0; pre--) {
        for (int i = 0; i < 3; i++) {
            sa_opts_t o = sa_opts_defaults(SA_LORMA);
            o.targets = SA_ALL;
            o.lorma_pre = pre;
            o.inflation = infl[i];
            o.r = 4;
            o.seed = 200 + (uint64_t)(pre * 3 + i);
            char what[64];
            snprintf(what, sizeof what, "lorma %s %s", pre ? "pre" : "post", iname[i]);
            check_variant(fx, &o, what);
        }
    }
    /* the official scripts' names "lorma_r" / "lorma_alpha" (adapters.md §10.1) */
    sa_opts_t o = sa_opts_defaults(SA_LORMA);
    o.lorma_synonyms = 1;
    o.r = 6;
    o.alpha = 3;
    o.targets = SA_BIT(SA_O) | SA_BIT(SA_UP);
    o.lorma_pre = 0;
    check_variant(fx, &o, "lorma post rri lorma_r/lorma_alpha");
}

static void test_merged_lora2(void **state) {
    fx_t *fx = *state;
    sa_opts_t o = sa_opts_defaults(SA_LORA2);
    o.targets = SA_ALL;
    o.r = 8;
    o.k = 8;
    o.alpha = 16;
    check_variant(fx, &o, "lora2 r8 k8");
    o.r = 6;
    o.k = 4;
    o.alpha = -1; /* <= 0: c = r / (r + 1e-5) */
    o.e_2d = 1;   /* lora2_E as [r, 1] */
    o.dtype = CORE_DT_BF16;
    o.prefix = 1;
    check_variant(fx, &o, "lora2 r6 k4 alpha<=0 bf16");
}

/* Four additive adapters of different methods with weights 0.5, 1.5, −1, 0.7 in one set
 * equal W0 + Σ w_i ΔW_i (adapters.md §10.3). */
/* bf16 factor storage (--adapter-dtype bf16). When the file holds bf16 values and the folded
 * scale is a power of two, storing the factors in bf16 loses nothing, so the merged-weight
 * bound is the fp32 one; the factors must really be bf16 (half the bytes). */
static void test_merged_bf16_factors(void **state) {
    fx_t *fx = *state;
    g_factor_dtype = KERN_W_BF16;
    sa_opts_t o = sa_opts_defaults(SA_LORA);
    o.targets = SA_ALL;
    o.r = 4;
    o.alpha = 16; /* s = 4 */
    o.dtype = CORE_DT_BF16;
    check_variant(fx, &o, "lora r4 bf16 factors");
    o = sa_opts_defaults(SA_RSLORA);
    o.targets = SA_ALL;
    o.r = 4;
    o.alpha = 4; /* s = 4 / sqrt(4) = 2 */
    o.dtype = CORE_DT_BF16;
    check_variant(fx, &o, "rslora r4 bf16 factors");
    o = sa_opts_defaults(SA_DORA);
    o.targets = SA_BIT(SA_Q) | SA_BIT(SA_V) | SA_BIT(SA_DOWN);
    o.r = 4;
    o.alpha = 8;
    o.dtype = CORE_DT_BF16;
    check_variant(fx, &o, "dora r4 bf16 factors");
    o = sa_opts_defaults(SA_LORMA);
    o.r = 4;
    o.inflation = SA_NONE;
    o.targets = SA_BIT(SA_Q) | SA_BIT(SA_UP);
    o.dtype = CORE_DT_BF16;
    o.alpha = 8;
    check_variant(fx, &o, "lorma pre none bf16 factors");
    o.lorma_pre = 0;
    check_variant(fx, &o, "lorma post none bf16 factors");

    /* the stored form: bf16, A (r, in) and Bᵀ (r, out), half the fp32 bytes */
    char *d = newdir(fx, "bf16-bytes");
    o = sa_opts_defaults(SA_LORA);
    o.targets = SA_ALL;
    sa_adapter_t *sa = write_adapter(d, &fx->shape, &o);
    adp_adapter_t *h = load_ok(fx->base, d, "half");
    g_factor_dtype = KERN_W_F32;
    adp_adapter_t *f = load_ok(fx->base, d, "full");
    const adp_module_t *mh = adp_module(h, 0, CORE_PROJ_Q), *mf = adp_module(f, 0, CORE_PROJ_Q);
    assert_int_equal(mh->fa.type, KERN_W_BF16);
    assert_int_equal(mh->fbt.type, KERN_W_BF16);
    assert_int_equal(mf->fa.type, KERN_W_F32);
    assert_int_equal(mh->fa.rows, mh->r);
    assert_int_equal(mh->fa.cols, mh->d_in);
    assert_int_equal(mh->fbt.rows, mh->r);
    assert_int_equal(mh->fbt.cols, mh->d_out);
    assert_int_equal(h->bytes * 2, f->bytes);
    adp_adapter_unref(h);
    adp_adapter_unref(f);
    sa_adapter_free(sa);
    free(d);
}

/* fp32 factors stored as bf16: the adapter's effect on the logits moves by about bf16's
 * relative precision (2⁻⁸), not more. */
static void test_bf16_factors_close_to_fp32(void **state) {
    fx_t *fx = *state;
    const int V = fx->base->cfg.vocab_size;
    const int rows = k_len[0] + k_len[1] + k_len[2] + k_len[3] + 1;
    static const int methods[] = {SA_LORA, SA_DORA, SA_LORA2};
    for (size_t k = 0; k < sizeof methods / sizeof methods[0]; k++) {
        char *d = newdir(fx, "bf16-close");
        sa_opts_t o = sa_opts_defaults((sa_method_t)methods[k]);
        o.targets = SA_ALL;
        o.dtype = CORE_DT_F32;
        sa_adapter_t *sa = write_adapter(d, &fx->shape, &o);
        float *out[2];
        for (int v = 0; v < 2; v++) {
            g_factor_dtype = v ? KERN_W_BF16 : KERN_W_F32;
            adp_adapter_t *ad = load_ok(fx->base, d, "close");
            adp_set_t set = {.n = 1, .a = {ad}, .w = {1.0f}};
            const void *with[NSEG] = {&set, NULL, &set, NULL};
            out[v] = run_steps(fx->base, &fx->lh, with);
            adp_adapter_unref(ad);
        }
        g_factor_dtype = KERN_W_F32;
        const void *none[NSEG] = {NULL, NULL, NULL, NULL};
        float *base = run_steps(fx->base, NULL, none);
        double effect = 0, diff = 0;
        for (size_t i = 0; i < (size_t)rows * V; i++) {
            effect = fmax(effect, fabs((double)out[0][i] - base[i]));
            diff = fmax(diff, fabs((double)out[1][i] - out[0][i]));
        }
        fprintf(stderr, "%s: bf16 vs fp32 factors max |diff| %.3g, adapter effect %.3g\n",
                sa_method_name(o.method), diff, effect);
        assert_true(effect > 1e-3);
        assert_true(diff <= 2e-2 * effect);
        free(out[0]);
        free(out[1]);
        free(base);
        sa_adapter_free(sa);
        free(d);
    }
}

static void test_merged_additive_combination(void **state) {
    fx_t *fx = *state;
    sa_opts_t o[4] = {sa_opts_defaults(SA_LORA), sa_opts_defaults(SA_LORMA),
                      sa_opts_defaults(SA_LORA2), sa_opts_defaults(SA_MORA)};
    o[0].targets = SA_ALL;
    o[1].targets = SA_BIT(SA_Q) | SA_BIT(SA_O) | SA_BIT(SA_DOWN);
    o[1].lorma_pre = 0; /* post rri: a LoRA with B' = W0·B */
    o[1].r = 4;
    o[2].targets = SA_BIT(SA_K) | SA_BIT(SA_UP);
    o[3].targets = SA_ALL;
    o[3].mora_type = 6;
    o[3].r = 4;
    const double w[4] = {0.5, 1.5, -1.0, 0.7};
    sa_adapter_t *sa[4];
    adp_adapter_t *ad[4];
    adp_set_t set = {.n = 4};
    for (int i = 0; i < 4; i++) {
        char *d = newdir(fx, "combo");
        o[i].seed = 300 + (uint64_t)i;
        sa[i] = write_adapter(d, &fx->shape, &o[i]);
        ad[i] = load_ok(fx->base, d, sa_method_name(o[i].method));
        set.a[i] = ad[i];
        set.w[i] = (float)w[i];
        free(d);
    }
    llm_error_t err = {0};
    assert_int_equal(adp_set_validate(&set, &err), 0);
    char *mdir = newdir(fx, "merged-combo");
    write_merged(fx, mdir, sa, w, 4);
    check_against_merged(fx, &set, mdir, "lora+lorma post rri+lora2+mora6");
    for (int i = 0; i < 4; i++) {
        adp_adapter_unref(ad[i]);
        sa_adapter_free(sa[i]);
    }
    free(mdir);
}

/* A config without "mora_type" is type 1 (adapters.md §4.4). */
static void test_mora_type_defaults_to_1(void **state) {
    fx_t *fx = *state;
    sa_opts_t o = sa_opts_defaults(SA_MORA);
    o.mora_type = 1;
    o.r = 4;
    o.targets = SA_ALL;
    o.config_override = "{\"peft_type\": \"LORA\", \"use_mora\": true, \"r\": 4, "
                        "\"lora_alpha\": 999, \"target_modules\": [\"q_proj\", \"k_proj\", "
                        "\"v_proj\", \"o_proj\", \"gate_proj\", \"up_proj\", \"down_proj\"]}";
    check_variant(fx, &o, "mora without mora_type (alpha ignored)");
}

/* lora_A and lora_B of a MoRA file differ (hand-edited): the fork's effective matrix is lora_B
 * (adapters.md §4.3). */
static void test_mora_lora_b_wins(void **state) {
    fx_t *fx = *state;
    char *adir = newdir(fx, "mora-ab"), *mdir = newdir(fx, "mora-ab-merged");
    sa_opts_t o = sa_opts_defaults(SA_MORA);
    o.mora_type = 6;
    o.r = 8;
    o.targets = SA_BIT(SA_Q) | SA_BIT(SA_DOWN);
    sa_adapter_t *sa = write_adapter(adir, &fx->shape, &o);
    st_writer_t *w = stw_create();
    for (int l = 0; l < fx->shape.n_layers; l++)
        for (int p = 0; p < SA_NPROJ; p++) {
            const sa_module_t *m = sa_module(sa, l, p);
            if (!m->present) continue;
            const size_t n = (size_t)m->rh * m->rh;
            float *junk = malloc(n * sizeof(float));
            for (size_t i = 0; i < n; i++) junk[i] = -3.0f * m->a[n - 1 - i];
            int64_t shape[2] = {m->rh, m->rh};
            char key[160];
            snprintf(key, sizeof key, "model.layers.%d.%s.%s.lora_A.weight", l,
                     sa_proj_group(p), sa_proj_name(p));
            assert_int_equal(stw_add_f32_as(w, key, CORE_DT_F32, 2, shape, junk), 0);
            snprintf(key, sizeof key, "model.layers.%d.%s.%s.lora_B.weight", l,
                     sa_proj_group(p), sa_proj_name(p));
            assert_int_equal(stw_add_f32_as(w, key, CORE_DT_F32, 2, shape, m->a), 0);
            free(junk);
        }
    char path[4300];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", adir);
    assert_int_equal(stw_write(w, path), 0);
    stw_free(w);
    adp_adapter_t *ad = load_ok(fx->base, adir, "mora-ab");
    adp_set_t set = {.n = 1, .a = {ad}, .w = {1.0f}};
    double one = 1.0;
    write_merged(fx, mdir, &sa, &one, 1);
    check_against_merged(fx, &set, mdir, "mora lora_A != lora_B");
    adp_adapter_unref(ad);
    sa_adapter_free(sa);
    free(adir);
    free(mdir);
}

/* One linear call through the hook for module (layer, p) of a single-adapter set with weight w,
 * against x·W(merged)ᵀ + w·s·lora_bias in double, for n random rows. */
static void check_hook_call(fx_t *fx, const sa_adapter_t *sa, const adp_adapter_t *ad, float w,
                            int layer, int p, int n) {
    int in, out;
    sa_proj_dims(&fx->shape, p, &in, &out);
    const float *W0 = proj_array(&fx->sw->layers[layer], p);
    double *Wm = malloc((size_t)in * out * sizeof(double));
    assert_int_equal(sa_merge(sa, layer, p, W0, Wm), 0);
    float *x = malloc((size_t)n * in * sizeof(float)), *xo = malloc((size_t)n * in * sizeof(float));
    float *y = malloc((size_t)n * out * sizeof(float));
    uint64_t sd = 5 + (uint64_t)(layer * 7 + p);
    for (int i = 0; i < n * in; i++) {
        sd = sd * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(sd >> 11) / 9007199254740992.0 * 2 - 1);
    }
    for (int t = 0; t < n; t++)
        for (int o = 0; o < out; o++) {
            double a = 0;
            for (int i = 0; i < in; i++)
                a += (double)W0[(size_t)o * in + i] * x[(size_t)t * in + i];
            y[(size_t)t * out + o] = (float)a;
        }
    adp_set_t set = {.n = 1, .a = {ad}, .w = {w}};
    core_step_seg_t seg = {.n_tok = n, .adapter = &set};
    int row0 = 0;
    core_lin_call_t call = {.layer = layer, .proj = (core_proj_t)p, .d_in = in, .d_out = out,
                            .n_rows = n, .n_segs = 1, .segs = &seg, .row0 = &row0};
    assert_int_equal(fx->lh.pre(fx->lh.ctx, &call, x, xo), 0);
    fx->lh.post(fx->lh.ctx, &call, x, y);
    const sa_module_t *m = sa_module(sa, layer, p);
    double md = 0, mx = 0, eff = 0;
    for (int t = 0; t < n; t++)
        for (int o = 0; o < out; o++) {
            double ref = 0, base = 0;
            for (int i = 0; i < in; i++) {
                ref += Wm[(size_t)o * in + i] * x[(size_t)t * in + i];
                base += (double)W0[(size_t)o * in + i] * x[(size_t)t * in + i];
            }
            ref = base + w * (ref - base);
            if (m->bias) ref += w * m->scale * m->bias[o];
            md = fmax(md, fabs(y[(size_t)t * out + o] - ref));
            mx = fmax(mx, fabs(ref));
            eff = fmax(eff, fabs(ref - base));
        }
    if (md > TOL * mx) fprintf(stderr, "layer %d %s: %g vs %g\n", layer, sa_proj_name(p), md, mx);
    assert_true(md <= TOL * mx);
    assert_true(eff >= VISIBLE * mx);
    free(Wm);
    free(x);
    free(xo);
    free(y);
}

/* lora_bias (adapters.md §2.1): y = W0·x + s·(B·A·x + bB), scaled by the set's weight. */
static void test_lora_bias(void **state) {
    fx_t *fx = *state;
    char *d = newdir(fx, "lora-bias");
    sa_opts_t o = sa_opts_defaults(SA_RSLORA);
    o.targets = SA_ALL;
    o.lora_bias = 1;
    o.infix = "default";
    o.prefix = 1;
    sa_adapter_t *sa = write_adapter(d, &fx->shape, &o);
    adp_adapter_t *ad = load_ok(fx->base, d, "lora-bias");
    for (int p = 0; p < SA_NPROJ; p++) {
        check_hook_call(fx, sa, ad, 1.0f, 1, p, 1);
        check_hook_call(fx, sa, ad, 0.75f, 0, p, 4);
    }
    adp_adapter_unref(ad);
    sa_adapter_free(sa);
    free(d);
}

/* ---- (b) one batch of many adapters = each sequence alone ---- */

static smp_params_t greedy(void) {
    smp_params_t p = smp_params_default();
    p.temperature = 0;
    return p;
}

static void test_batch_of_mixed_adapters_matches_solo(void **state) {
    fx_t *fx = *state;
    const core_model_t *m = fx->stories;
    const sa_shape_t sh = sa_shape_from_config(&m->cfg);
    enum { NA = 16, NREQ = 20 };
    sa_opts_t o[NA];
    for (int i = 0; i < NA; i++) o[i] = sa_opts_defaults(SA_LORA);
    o[0].r = 4;
    o[1].targets = SA_ALL;
    o[2].r = 16;
    o[2].targets = SA_BIT(SA_Q) | SA_BIT(SA_K) | SA_BIT(SA_V) | SA_BIT(SA_O);
    o[2].dtype = CORE_DT_BF16;
    o[3] = sa_opts_defaults(SA_RSLORA);
    o[3].targets = SA_ALL;
    o[3].dtype = CORE_DT_F16;
    o[4] = sa_opts_defaults(SA_DORA);
    o[4].targets = SA_BIT(SA_Q) | SA_BIT(SA_V) | SA_BIT(SA_O);
    for (int i = 5; i <= 9; i++) {
        static const int types[] = {1, 6, 2, 3, 4};
        o[i] = sa_opts_defaults(SA_MORA);
        o[i].mora_type = types[i - 5];
        o[i].targets = SA_ALL;
        o[i].r = i == 6 ? 4 : i == 7 ? 16 : 8;
    }
    o[10] = sa_opts_defaults(SA_LORMA);
    o[10].r = 4;
    o[10].targets = SA_ALL;
    o[11] = o[10];
    o[11].lorma_pre = 0;
    o[12] = o[10];
    o[12].inflation = SA_SHIFT;
    o[12].targets = SA_BIT(SA_Q) | SA_BIT(SA_V) | SA_BIT(SA_O);
    o[13] = o[10];
    o[13].lorma_pre = 0;
    o[13].inflation = SA_NONE;
    o[13].targets = SA_BIT(SA_GATE) | SA_BIT(SA_UP);
    o[14] = sa_opts_defaults(SA_LORA2);
    o[14].targets = SA_ALL;
    o[15].r = 4;
    o[15].targets = SA_BIT(SA_DOWN);
    adp_adapter_t *ad[NA];
    adp_set_t sets[NA + 1];
    llm_error_t err = {0};
    for (int i = 0; i < NA; i++) {
        char *d = newdir(fx, "mix");
        o[i].seed = 400 + (uint64_t)i;
        sa_adapter_t *sa = write_adapter(d, &sh, &o[i]);
        sa_adapter_free(sa);
        char name[32];
        snprintf(name, sizeof name, "mix%d-%s", i, sa_method_name(o[i].method));
        ad[i] = load_ok(m, d, name);
        sets[i] = (adp_set_t){.n = 1, .a = {ad[i]}, .w = {1.0f}};
        assert_int_equal(adp_set_validate(&sets[i], &err), 0);
        free(d);
    }
    assert_int_equal(ad[0]->rank_max, 4);
    assert_int_equal(ad[1]->rank_max, 8);
    assert_int_equal(ad[2]->rank_max, 16);
    /* two additive adapters combined 0.5 / 1.5 */
    sets[NA] = (adp_set_t){.n = 2, .a = {ad[0], ad[1]}, .w = {0.5f, 1.5f}};
    assert_int_equal(adp_set_validate(&sets[NA], &err), 0);
    const adp_set_t *which[NREQ];
    for (int i = 0; i < NA; i++) which[i] = &sets[i];
    which[16] = NULL;
    which[17] = &sets[NA];
    which[18] = NULL;
    which[19] = &sets[0]; /* shares its set with request 0 */

    int32_t prompts[NREQ][32];
    int lens[NREQ];
    uint64_t s = 99;
    for (int i = 0; i < NREQ; i++) {
        lens[i] = 1 + (i * 7) % 29;
        prompts[i][0] = 1;
        for (int t = 1; t < lens[i]; t++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            prompts[i][t] = (int32_t)((s >> 33) % 509) + 3;
        }
    }
    core_gen_req_t alone[NREQ], batch[NREQ];
    /* split_tiny: this small model goes through the parallel code (one region per adapter
     * group when there are many, shrink and expand phases when few) as real ones do */
    core_gen_opts_t solo = {.max_step_tokens = 64, .hook = &fx->st_lh, .split_tiny = 1};
    for (int i = 0; i < NREQ; i++) {
        alone[i] = (core_gen_req_t){.prompt = prompts[i], .n_prompt = lens[i],
                                    .max_tokens = 36 + i % 5, .sampling = greedy(),
                                    .ignore_eos = 1, .adapter = which[i]};
        batch[i] = alone[i];
        assert_int_equal(core_generate(m, NULL, &alone[i], 1, &solo, &err), 0);
        assert_int_equal(alone[i].n_ids, alone[i].max_tokens);
    }
    /* the adapters matter: every adapted request departs from the base one somewhere */
    core_gen_req_t plain = alone[0];
    plain.adapter = NULL;
    assert_int_equal(core_generate(m, NULL, &plain, 1, &solo, &err), 0);
    assert_true(memcmp(plain.ids, alone[0].ids, (size_t)plain.n_ids * 4) != 0);
    core_gen_req_clear(&plain);

    core_gen_opts_t chunked = {.max_step_tokens = 7, .hook = &fx->st_lh, .split_tiny = 1};
    assert_int_equal(core_generate(m, NULL, batch, NREQ, &chunked, &err), 0);
    for (int i = 0; i < NREQ; i++) {
        if (batch[i].n_ids != alone[i].n_ids ||
            memcmp(batch[i].ids, alone[i].ids, (size_t)alone[i].n_ids * 4) != 0)
            fprintf(stderr, "request %d (%s) differs in the batch\n", i,
                    which[i] ? which[i]->a[0]->name : "no adapter");
        assert_int_equal(batch[i].n_ids, alone[i].n_ids);
        assert_memory_equal(batch[i].ids, alone[i].ids, (size_t)alone[i].n_ids * 4);
        core_gen_req_clear(&alone[i]);
        core_gen_req_clear(&batch[i]);
    }
    for (int i = 0; i < NA; i++) adp_adapter_unref(ad[i]);
}

/* ---- (c) stories260K golden ids under a zero adapter ---- */

static void test_stories_zero_adapter_keeps_golden_ids(void **state) {
    fx_t *fx = *state;
    const core_model_t *m = fx->stories;
    char *js = tu_read_file(tu_fixture_path("stories260K-hf/expected_ids.json"), NULL);
    assert_non_null(js);
    cJSON *root = cJSON_Parse(js);
    free(js);
    const cJSON *ids = cJSON_GetObjectItem(root, "ids");
    assert_int_equal(cJSON_GetArraySize(ids), 200);
    char *d = newdir(fx, "zero");
    sa_opts_t o = sa_opts_defaults(SA_LORA);
    o.targets = SA_ALL;
    o.zero_b = 1;
    o.prefix = 1;
    const sa_shape_t sh = sa_shape_from_config(&m->cfg);
    sa_adapter_free(write_adapter(d, &sh, &o));
    adp_adapter_t *ad = load_ok(m, d, "zero");
    assert_string_equal(ad->target_modules, ALL7);
    adp_set_t set = {.n = 1, .a = {ad}, .w = {1.0f}};
    int32_t bos = 1;
    core_gen_req_t r = {.prompt = &bos, .n_prompt = 1, .max_tokens = 200, .sampling = greedy(),
                        .adapter = &set};
    core_gen_opts_t go = {.max_step_tokens = 64, .hook = &fx->st_lh};
    llm_error_t err = {0};
    assert_int_equal(core_generate(m, NULL, &r, 1, &go, &err), 0);
    assert_int_equal(r.n_ids, 200);
    for (int i = 0; i < 200; i++) {
        if (r.ids[i] != cJSON_GetArrayItem(ids, i)->valueint)
            fprintf(stderr, "first mismatch at %d\n", i);
        assert_int_equal(r.ids[i], cJSON_GetArrayItem(ids, i)->valueint);
    }
    core_gen_req_clear(&r);
    adp_adapter_unref(ad);
    cJSON_Delete(root);
    free(d);
}

/* ---- (d) real adapters and real configs ---- */

/* A minimal F32 safetensors reader for the fixture (independent of core/safetensors.c). */
static float *st_read_f32(const char *path, const char *name, int64_t *d0, int64_t *d1) {
    size_t len;
    char *buf = tu_read_file(path, &len);
    assert_non_null(buf);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | (unsigned char)buf[i];
    char *hdr = strndup(buf + 8, (size_t)hl);
    cJSON *h = cJSON_Parse(hdr);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(h, name);
    assert_non_null(t);
    assert_string_equal(cJSON_GetObjectItem(t, "dtype")->valuestring, "F32");
    const cJSON *shape = cJSON_GetObjectItem(t, "shape");
    const cJSON *off = cJSON_GetObjectItem(t, "data_offsets");
    *d0 = (int64_t)cJSON_GetArrayItem(shape, 0)->valuedouble;
    *d1 = (int64_t)cJSON_GetArrayItem(shape, 1)->valuedouble;
    size_t b0 = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
    size_t b1 = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
    assert_int_equal(b1 - b0, (size_t)(*d0 * *d1) * 4);
    float *v = malloc(b1 - b0);
    memcpy(v, buf + 8 + hl + b0, b1 - b0);
    cJSON_Delete(h);
    free(hdr);
    free(buf);
    return v;
}

/* The hook's output of (layer, proj) for n random rows against x·(W0 + s·B·A)ᵀ in double; the
 * delta alone must agree to TOL of its own size. */
static void check_proj_output(const core_model_t *m, adp_hook_t *h, const adp_set_t *set,
                              const char *st_path, int layer, core_proj_t p, double s, int n) {
    const core_weight_t *w = &m->layers[layer].proj[p];
    const int in = (int)w->cols, out = (int)w->rows;
    char name[128];
    int64_t ar, ac, br, bc;
    snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.%s.lora_A.weight",
             layer, core_proj_name(p));
    float *A = st_read_f32(st_path, name, &ar, &ac);
    snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.%s.lora_B.weight",
             layer, core_proj_name(p));
    float *B = st_read_f32(st_path, name, &br, &bc);
    assert_true(ar == 16 && ac == in && br == out && bc == 16);
    float *x = malloc((size_t)n * in * sizeof(float)), *y = malloc((size_t)n * out * sizeof(float));
    float *y0 = malloc((size_t)n * out * sizeof(float));
    uint64_t sd = 77 + (uint64_t)layer;
    for (int i = 0; i < n * in; i++) {
        sd = sd * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(sd >> 11) / 9007199254740992.0 * 2 - 1);
    }
    const float *W0 = w->data;
    for (int t = 0; t < n; t++)
        for (int o = 0; o < out; o++) {
            double acc = 0;
            for (int i = 0; i < in; i++)
                acc += (double)W0[(size_t)o * in + i] * x[(size_t)t * in + i];
            y[(size_t)t * out + o] = y0[(size_t)t * out + o] = (float)acc;
        }
    core_step_seg_t seg = {.n_tok = n, .adapter = set};
    int row0 = 0;
    core_lin_call_t call = {.layer = layer, .proj = p, .d_in = in, .d_out = out, .n_rows = n,
                            .n_segs = 1, .segs = &seg, .row0 = &row0};
    core_lin_hook_t lh;
    adp_hook_bind(h, &lh);
    float *xo = malloc((size_t)n * in * sizeof(float));
    assert_int_equal(lh.pre(lh.ctx, &call, x, xo), 0); /* LoRA: no input transform */
    free(xo);
    lh.post(lh.ctx, &call, x, y);
    double md = 0, mx = 0;
    for (int t = 0; t < n; t++) {
        double tv[16];
        for (int k = 0; k < 16; k++) {
            tv[k] = 0;
            for (int i = 0; i < in; i++)
                tv[k] += (double)A[(size_t)k * in + i] * x[(size_t)t * in + i];
        }
        for (int o = 0; o < out; o++) {
            double d = 0;
            for (int k = 0; k < 16; k++) d += (double)B[(size_t)o * 16 + k] * tv[k];
            d *= s;
            double got = (double)y[(size_t)t * out + o] - y0[(size_t)t * out + o];
            if (fabs(got - d) > md) md = fabs(got - d);
            if (fabs(d) > mx) mx = fabs(d);
        }
    }
    if (md > TOL * mx)
        fprintf(stderr, "layer %d %s: |delta diff| %g vs max |delta| %g\n", layer,
                core_proj_name(p), md, mx);
    assert_true(mx > 0);
    assert_true(md <= TOL * mx);
    free(A);
    free(B);
    free(x);
    free(y);
    free(y0);
}

static void test_smollm_real_adapters(void **state) {
    fx_t *fx = *state;
    /* SmolLM-135M's layer shapes (hidden 576, 30 layers, 9 heads / 3 kv heads of 64,
     * intermediate 1536, tied embeddings) with a 512-token vocabulary instead of 49152 and BF16
     * storage, to keep the synthetic base (and this test) fast: the adapters only touch q/v. */
    synth_model_opts_t so = synth_model_defaults();
    so.hidden = 576;
    so.intermediate = 1536;
    so.n_layers = 30;
    so.n_heads = 9;
    so.n_kv_heads = 3;
    so.vocab = 512;
    so.max_pos = 128;
    so.tie_embeddings = 1;
    so.dtype = CORE_DT_BF16;
    so.seed = 135;
    char *bdir = newdir(fx, "smollm-base");
    assert_int_equal(synth_model_write(&so, bdir, NULL), 0);
    core_model_t *m = NULL;
    llm_error_t err = {0};
    assert_int_equal(core_model_load(bdir, &m, &err), 0);
    tu_rm_rf(bdir); /* the model is in memory now; free the disk early */
    free(bdir);
    adp_hook_t *h = NULL;
    assert_int_equal(adp_hook_create(m, 16, &h), 0);
    static const char *const which[2] = {"epochs5", "epochs100"};
    adp_adapter_t *ad[2];
    adp_load_opts_t lo = {.base_name = "HuggingFaceTB/SmolLM-135M-Instruct"};
    for (int i = 0; i < 2; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "smollm-135m-instruct-lora-qv-r16/%s", which[i]);
        int rc = adp_load_dir(m, tu_fixture_path(rel), which[i], &lo, &ad[i], &err);
        if (rc) fprintf(stderr, "%s: %s\n", which[i], err.msg);
        assert_int_equal(rc, 0);
        assert_int_equal(ad[i]->method, ADP_METHOD_LORA);
        assert_int_equal(ad[i]->additive, 1);
        assert_int_equal(ad[i]->rank_min, 16);
        assert_int_equal(ad[i]->rank_max, 16);
        assert_string_equal(ad[i]->target_modules, "q_proj,v_proj");
        int pairs = 0;
        for (int l = 0; l < 30; l++)
            for (int p = 0; p < CORE_PROJ_COUNT; p++) {
                const adp_module_t *md = adp_module(ad[i], l, (core_proj_t)p);
                if (p == CORE_PROJ_Q || p == CORE_PROJ_V) {
                    assert_int_equal(md->kind, ADP_K_LORA);
                    assert_int_equal(md->r, 16);
                    assert_int_equal(md->d_in, 576);
                    assert_int_equal(md->d_out, p == CORE_PROJ_Q ? 576 : 192);
                    pairs++;
                } else {
                    assert_int_equal(md->kind, ADP_K_NONE);
                }
            }
        assert_int_equal(pairs, 60);
        /* merged-weight check of q/v outputs, s = 32/16 = 2, batched and single-row paths */
        snprintf(rel, sizeof rel, "smollm-135m-instruct-lora-qv-r16/%s/adapter_model.safetensors",
                 which[i]);
        adp_set_t set = {.n = 1, .a = {ad[i]}, .w = {1.0f}};
        check_proj_output(m, h, &set, tu_fixture_path(rel), 0, CORE_PROJ_Q, 2.0, 5);
        check_proj_output(m, h, &set, tu_fixture_path(rel), 29, CORE_PROJ_V, 2.0, 1);
        check_proj_output(m, h, &set, tu_fixture_path(rel), 17, CORE_PROJ_Q, 2.0, 1);
        check_proj_output(m, h, &set, tu_fixture_path(rel), 11, CORE_PROJ_V, 2.0, 3);
    }
    /* end to end: both adapters and none in one step; the two adapters give different logits */
    core_lin_hook_t lh;
    adp_hook_bind(h, &lh);
    adp_set_t s5 = {.n = 1, .a = {ad[0]}, .w = {1.0f}}, s100 = {.n = 1, .a = {ad[1]}, .w = {1.0f}};
    core_kv_pool_t *pool;
    core_fwd_t *fwd;
    assert_int_equal(core_kv_pool_create(&m->cfg, 4, &pool), 0);
    assert_int_equal(core_fwd_create(m, 16, 0, &fwd), 0);
    core_fwd_set_hook(fwd, &lh);
    core_seq_t sq[3];
    int32_t toks[4] = {1, 17, 300, 42};
    core_step_seg_t segs[3];
    const void *sets[3] = {NULL, &s5, &s100};
    for (int i = 0; i < 3; i++) {
        core_seq_init(&sq[i], pool, m->cfg.max_pos);
        segs[i] = (core_step_seg_t){.seq = &sq[i], .tokens = toks, .n_tok = 4,
                                    .logits = CORE_LOGITS_LAST, .adapter = sets[i]};
    }
    float *lg = malloc(3 * 512 * sizeof(float));
    assert_int_equal(core_fwd_step(fwd, segs, 3, lg, &err), 0);
    assert_true(row_rel_diff(lg + 512, lg, 0, 1, 512) > VISIBLE);
    assert_true(row_rel_diff(lg + 1024, lg + 512, 0, 1, 512) > VISIBLE);
    free(lg);
    for (int i = 0; i < 3; i++) core_seq_deinit(&sq[i]);
    core_fwd_free(fwd);
    core_kv_pool_free(pool);
    /* the base-name check: a different served base is refused unless forced */
    adp_adapter_t *x = NULL;
    adp_load_opts_t other = {.base_name = "meta-llama/Llama-3.2-1B"};
    assert_int_equal(adp_load_dir(m, tu_fixture_path("smollm-135m-instruct-lora-qv-r16/epochs5"),
                                  "e5", &other, &x, &err), LLM_EINVAL);
    assert_non_null(strstr(err.msg, "does not match"));
    for (int i = 0; i < 2; i++) adp_adapter_unref(ad[i]);
    adp_hook_free(h);
    core_model_free(m);
}

static char *fixture_text(const char *rel) {
    char *s = tu_read_file(tu_fixture_path(rel), NULL);
    assert_non_null(s);
    return s;
}

static void test_config_tinyllama_accepted(void **state) {
    (void)state;
    char *js = fixture_text("peft-adapter-configs-only/tinyllama_adapter_config.json");
    adp_config_t c;
    llm_error_t err = {0};
    int rc = adp_config_parse(js, "tinyllama_adapter_config.json", &c, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(c.method, ADP_METHOD_LORA);
    assert_int_equal(c.r, 8);
    assert_true(c.alpha == 32.0);
    assert_string_equal(c.base_model, "");
    int r;
    double alpha;
    assert_int_equal(adp_config_module(&c, "model.layers.3.self_attn.q_proj", 3, &r, &alpha), 1);
    assert_int_equal(r, 8);
    assert_true(alpha == 32.0);
    assert_int_equal(adp_config_module(&c, "model.layers.0.self_attn.v_proj", 0, &r, &alpha), 1);
    assert_int_equal(adp_config_module(&c, "model.layers.0.self_attn.k_proj", 0, &r, &alpha), 0);
    assert_int_equal(adp_config_module(&c, "model.layers.0.mlp.up_proj", 0, &r, &alpha), 0);
    adp_config_deinit(&c);
    free(js);
}

static void test_config_phi3_base_mismatch(void **state) {
    fx_t *fx = *state;
#define PHI3 "peft-adapter-configs-only/phi3-mini-unsloth_adapter_config.json"
    const char *cfg = tu_fixture_path(PHI3);
    char *js = fixture_text(PHI3);
    adp_config_t c;
    llm_error_t err = {0};
    assert_int_equal(adp_config_parse(js, "phi3", &c, &err), 0);
    assert_int_equal(c.method, ADP_METHOD_LORA);
    assert_int_equal(c.r, 16);
    assert_true(c.alpha == 16.0);
    assert_int_equal(c.n_targets, 7);
    assert_string_equal(c.base_model, "unsloth/phi-3-mini-4k-instruct-bnb-4bit");
    adp_config_deinit(&c);
    free(js);
    /* tensors that fit the small base with this config: r 16 on all seven projections */
    char *d = newdir(fx, "phi3");
    sa_opts_t o = sa_opts_defaults(SA_LORA);
    o.r = 16;
    o.alpha = 16;
    o.targets = SA_ALL;
    o.prefix = 1;
    sa_adapter_free(write_adapter(d, &fx->shape, &o));
    char st[4300];
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", d);
    adp_adapter_t *a = NULL;
    adp_load_opts_t lo = {.base_name = "synthetic/tiny-llama"};
    assert_int_equal(adp_load_files(fx->base, cfg, st, "phi3", &lo, &a, &err), LLM_EINVAL);
    assert_null(a);
    assert_non_null(strstr(err.msg, "base_model_name_or_path"));
    assert_non_null(strstr(err.msg, "does not match"));
    lo.force_base = 1;
    int rc = adp_load_files(fx->base, cfg, st, "phi3", &lo, &a, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_string_equal(a->target_modules, ALL7);
    assert_int_equal(a->rank_max, 16);
    adp_adapter_unref(a);
    free(d);
}

static void test_config_gpt2_seqcls_refused(void **state) {
    fx_t *fx = *state;
    char *js = fixture_text("peft-adapter-configs-only/gpt2-seqcls_adapter_config.json");
    adp_config_t c;
    llm_error_t err = {0};
    assert_int_equal(adp_config_parse(js, "gpt2-seqcls", &c, &err), LLM_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "task_type"));
    assert_non_null(strstr(err.msg, "SEQ_CLS"));
    /* and with the task type fixed, its only target (GPT-2's fused c_attn) matches nothing */
    char *p = strstr(js, "SEQ_CLS");
    assert_non_null(p);
    char *fixed = malloc(strlen(js) + 8);
    snprintf(fixed, strlen(js) + 8, "%.*sCAUSAL_LM%s", (int)(p - js), js, p + 7);
    char *d = newdir(fx, "gpt2");
    char path[4300];
    snprintf(path, sizeof path, "%s/adapter_config.json", d);
    assert_int_equal(tu_write_file(path, fixed, strlen(fixed)), 0);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", d);
    st_writer_t *w = stw_create();
    assert_int_equal(stw_write(w, path), 0);
    stw_free(w);
    expect_refused(fx->base, d, LLM_EFORMAT, "select no module");
    free(fixed);
    free(js);
    free(d);
}

/* ---- (e) validation ---- */

/* A LoRA (r 8, q/v) adapter dir whose config is replaced by json. */
static char *lora_dir_with_config(fx_t *fx, const char *json) {
    char *d = newdir(fx, "cfg");
    sa_opts_t o = sa_opts_defaults(SA_LORA);
    o.config_override = json;
    sa_adapter_free(write_adapter(d, &fx->shape, &o));
    return d;
}

#define LORA_CFG(extra)                                                                    \
    "{\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 16, "                             \
    "\"target_modules\": [\"q_proj\", \"v_proj\"]" extra "}"

static void refuse_config(fx_t *fx, const char *json, int code, const char *substr) {
    char *d = lora_dir_with_config(fx, json);
    expect_refused(fx->base, d, code, substr);
    free(d);
}

static void test_refuse_pickle_only(void **state) {
    fx_t *fx = *state;
    char *d = newdir(fx, "pickle");
    char path[4300];
    snprintf(path, sizeof path, "%s/adapter_config.json", d);
    const char *cfg = LORA_CFG("");
    assert_int_equal(tu_write_file(path, cfg, strlen(cfg)), 0);
    snprintf(path, sizeof path, "%s/adapter_model.bin", d);
    static const unsigned char pk[] = {0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e}; /* pickle: {} */
    assert_int_equal(tu_write_file(path, pk, sizeof pk), 0);
    expect_refused(fx->base, d, LLM_EUNSUPPORTED, "pickle");
    free(d);
}

static void test_refuse_unknown_peft_type(void **state) {
    refuse_config(*state,
                  "{\"peft_type\": \"ADALORA\", \"r\": 8, \"lora_alpha\": 16, "
                  "\"target_modules\": [\"q_proj\", \"v_proj\"]}",
                  LLM_EUNSUPPORTED, "ADALORA");
}

static void test_refuse_mora_type_5(void **state) {
    refuse_config(*state, LORA_CFG(", \"use_mora\": true, \"mora_type\": 5"), LLM_EUNSUPPORTED,
                  "mora_type");
}

static void test_refuse_lorma_without_mode(void **state) {
    refuse_config(*state,
                  "{\"peft_type\": \"LORMA\", \"r\": 4, \"lora_alpha\": 8, "
                  "\"rank_inflation\": \"rri\", \"target_modules\": [\"q_proj\"]}",
                  LLM_EFORMAT, "lorma_mode");
}

/* Writes config + a safetensors built by the caller's tensors (f32 values 0.01·(i % 7 − 3)). */
typedef struct {
    const char *name;
    int64_t d0, d1;
    int nan_at; /* element index to make NaN, or -1 */
} tdesc_t;

static char *dir_with_tensors(fx_t *fx, const char *json, const tdesc_t *t, int n) {
    char *d = newdir(fx, "tensors");
    char path[4300];
    snprintf(path, sizeof path, "%s/adapter_config.json", d);
    assert_int_equal(tu_write_file(path, json, strlen(json)), 0);
    st_writer_t *w = stw_create();
    for (int i = 0; i < n; i++) {
        size_t cnt = (size_t)(t[i].d0 * (t[i].d1 > 0 ? t[i].d1 : 1));
        float *v = malloc(cnt * sizeof(float));
        for (size_t j = 0; j < cnt; j++) v[j] = 0.01f * (float)((int)(j % 7) - 3);
        if (t[i].nan_at >= 0) v[t[i].nan_at] = NAN;
        int64_t shape[2] = {t[i].d0, t[i].d1};
        assert_int_equal(stw_add(w, t[i].name, CORE_DT_F32, t[i].d1 > 0 ? 2 : 1, shape, v), 0);
        free(v);
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", d);
    assert_int_equal(stw_write(w, path), 0);
    stw_free(w);
    return d;
}

#define PFX "base_model.model.model.layers."
/* q_proj/v_proj pairs of both layers on the small base (in 48, q out 48, v out 24), r 8 */
#define QV_PAIRS(l)                                                                        \
    {PFX #l ".self_attn.q_proj.lora_A.weight", 8, 48, -1},                                 \
    {PFX #l ".self_attn.q_proj.lora_B.weight", 48, 8, -1},                                 \
    {PFX #l ".self_attn.v_proj.lora_A.weight", 8, 48, -1},                                 \
    {PFX #l ".self_attn.v_proj.lora_B.weight", 24, 8, -1}

static void test_refuse_module_not_in_base(void **state) {
    fx_t *fx = *state;
    const tdesc_t emb[] = {QV_PAIRS(0), QV_PAIRS(1),
                           {"base_model.model.model.embed_tokens.lora_embedding_A", 8, 128, -1},
                           {"base_model.model.model.embed_tokens.lora_embedding_B", 48, 8, -1}};
    char *d = dir_with_tensors(fx, LORA_CFG(""), emb, 10);
    expect_refused(fx->base, d, LLM_EFORMAT, "embed_tokens");
    free(d);
    const tdesc_t l99[] = {QV_PAIRS(0), QV_PAIRS(1),
                           {PFX "99.self_attn.q_proj.lora_A.weight", 8, 48, -1},
                           {PFX "99.self_attn.q_proj.lora_B.weight", 48, 8, -1}};
    d = dir_with_tensors(fx, LORA_CFG(""), l99, 10);
    expect_refused(fx->base, d, LLM_EFORMAT, "layer 99 does not exist");
    free(d);
    const tdesc_t qkv[] = {QV_PAIRS(0), QV_PAIRS(1),
                           {PFX "0.self_attn.qkv_proj.lora_A.weight", 8, 48, -1},
                           {PFX "0.self_attn.qkv_proj.lora_B.weight", 48, 8, -1}};
    d = dir_with_tensors(fx, LORA_CFG(""), qkv, 10);
    expect_refused(fx->base, d, LLM_EFORMAT, "qkv_proj");
    free(d);
}

static void test_refuse_missing_half(void **state) {
    fx_t *fx = *state;
    tdesc_t t[] = {QV_PAIRS(0), QV_PAIRS(1)};
    char *d = dir_with_tensors(fx, LORA_CFG(""), t, 7); /* no layer 1 v_proj lora_B */
    expect_refused(fx->base, d, LLM_EFORMAT, "half of its A/B pair is missing");
    free(d);
    /* a targeted module with no tensors at all */
    d = dir_with_tensors(fx, LORA_CFG(""), t, 6);
    expect_refused(fx->base, d, LLM_EFORMAT, "model.layers.1.self_attn.v_proj is targeted");
    free(d);
}

static void test_refuse_rank_mismatch(void **state) {
    fx_t *fx = *state;
    tdesc_t t[] = {QV_PAIRS(0), QV_PAIRS(1)};
    t[0].d0 = 4; /* layer 0 q_proj lora_A [4, 48] while the config says r 8 */
    t[1].d1 = 4;
    char *d = dir_with_tensors(fx, LORA_CFG(""), t, 8);
    expect_refused(fx->base, d, LLM_ESHAPE, "expected [8, 48]");
    free(d);
}

static void test_refuse_gqa_width(void **state) {
    fx_t *fx = *state;
    const tdesc_t t[] = {{PFX "0.self_attn.k_proj.lora_A.weight", 8, 48, -1},
                         {PFX "0.self_attn.k_proj.lora_B.weight", 48, 8, -1}, /* q's width */
                         {PFX "1.self_attn.k_proj.lora_A.weight", 8, 48, -1},
                         {PFX "1.self_attn.k_proj.lora_B.weight", 24, 8, -1}};
    char *d = dir_with_tensors(fx,
                               "{\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 16, "
                               "\"target_modules\": [\"k_proj\"]}", t, 4);
    expect_refused(fx->base, d, LLM_ESHAPE,
                   "k_proj.lora_B.weight\" has shape [48, 8], expected [24, 8]");
    free(d);
}

static void test_refuse_nan(void **state) {
    fx_t *fx = *state;
    tdesc_t t[] = {QV_PAIRS(0), QV_PAIRS(1)};
    t[5].nan_at = 17; /* layer 1 q_proj lora_B */
    char *d = dir_with_tensors(fx, LORA_CFG(""), t, 8);
    expect_refused(fx->base, d, LLM_EFORMAT, "non-finite");
    free(d);
}

static void test_refuse_nonpositive_rank(void **state) {
    fx_t *fx = *state;
    refuse_config(fx,
                  "{\"peft_type\": \"LORA\", \"r\": 0, \"lora_alpha\": 16, "
                  "\"target_modules\": [\"q_proj\", \"v_proj\"]}", LLM_EFORMAT, "\"r\"");
    refuse_config(fx, LORA_CFG(", \"rank_pattern\": {\"q_proj\": 0}"), LLM_EFORMAT,
                  "rank_pattern");
    refuse_config(fx, LORA_CFG(", \"rank_pattern\": {\"v_proj\": -4}"), LLM_EFORMAT,
                  "rank_pattern");
}

static void test_refuse_modules_to_save(void **state) {
    refuse_config(*state, LORA_CFG(", \"modules_to_save\": [\"lm_head\"]"), LLM_EUNSUPPORTED,
                  "modules_to_save");
}

static void test_refuse_bias_all(void **state) {
    refuse_config(*state, LORA_CFG(", \"bias\": \"all\""), LLM_EUNSUPPORTED, "\"bias\"");
}

static void test_refuse_pissa_init(void **state) {
    refuse_config(*state, LORA_CFG(", \"init_lora_weights\": \"pissa_niter_4\""),
                  LLM_EUNSUPPORTED, "init_lora_weights");
}

static void test_refuse_dora_with_lora_bias(void **state) {
    refuse_config(*state, LORA_CFG(", \"use_dora\": true, \"lora_bias\": true"),
                  LLM_EUNSUPPORTED, "lora_bias");
}

static void test_refuse_tensor_not_targeted(void **state) {
    fx_t *fx = *state;
    char *d = newdir(fx, "untargeted");
    sa_opts_t o = sa_opts_defaults(SA_LORA);
    o.targets = SA_BIT(SA_Q) | SA_BIT(SA_V) | SA_BIT(SA_O); /* tensors for o_proj too */
    o.targets_json = "[\"q_proj\", \"v_proj\"]";
    sa_adapter_free(write_adapter(d, &fx->shape, &o));
    expect_refused(fx->base, d, LLM_EFORMAT, "not selected by target_modules");
    free(d);
}

/* Per-(layer, projection) ranks and alphas for the writer. */
typedef struct {
    int r[2][SA_NPROJ];
    double alpha[2][SA_NPROJ];
    int skip[2][SA_NPROJ];
} table_t;

static int from_table(void *ctx, int layer, int p, int *r, double *alpha) {
    const table_t *t = ctx;
    if (t->skip[layer][p]) return 0;
    if (t->r[layer][p]) *r = t->r[layer][p];
    if (t->alpha[layer][p] != 0) *alpha = t->alpha[layer][p];
    return 1;
}

/* Loads an adapter from the table and checks each module's r and folded scale. */
static void check_patterns(fx_t *fx, const char *extra, const char *version, const table_t *t,
                           const double want_s[2][SA_NPROJ], unsigned targets) {
    char *d = newdir(fx, "patterns");
    sa_opts_t o = sa_opts_defaults(SA_LORA);
    o.r = 8;
    o.alpha = 16;
    o.targets = targets;
    o.extra_config = extra;
    o.peft_version = version;
    o.select = from_table;
    o.select_ctx = (void *)t;
    sa_adapter_t *sa = write_adapter(d, &fx->shape, &o);
    adp_adapter_t *ad = load_ok(fx->base, d, version ? version : "current");
    for (int l = 0; l < 2; l++)
        for (int p = 0; p < SA_NPROJ; p++) {
            const sa_module_t *sm = sa_module(sa, l, p);
            const adp_module_t *am = adp_module(ad, l, (core_proj_t)p);
            if (!sm->present) {
                assert_int_equal(am->kind, ADP_K_NONE);
                continue;
            }
            assert_int_equal(am->kind, ADP_K_LORA);
            if (am->r != sm->r)
                fprintf(stderr, "layer %d %s: r %d, expected %d\n", l, sa_proj_name(p), am->r,
                        sm->r);
            assert_int_equal(am->r, sm->r);
            /* B is stored transposed, (r, out), with s folded in: compare B[0][1] */
            assert_int_equal(am->fbt.type, KERN_W_F32);
            double s = (double)((const float *)am->fbt.data)[am->fbt.cols] / sm->b[1];
            if (fabs(s - want_s[l][p]) > 1e-5 * want_s[l][p])
                fprintf(stderr, "%s layer %d %s: scale %g, expected %g\n",
                        version ? version : "current", l, sa_proj_name(p), s, want_s[l][p]);
            assert_true(fabs(s - want_s[l][p]) <= 1e-5 * want_s[l][p]);
        }
    adp_adapter_unref(ad);
    sa_adapter_free(sa);
    free(d);
}

static void test_rank_and_alpha_patterns(void **state) {
    fx_t *fx = *state;
    const unsigned qv = SA_BIT(SA_Q) | SA_BIT(SA_V);
    /* current PEFT: rank and alpha looked up independently. rank_pattern {"q_proj": 4},
     * alpha_pattern {"layers.0.self_attn.q_proj": 32, "v_proj": 4}. */
    const char *pat = "\"rank_pattern\": {\"q_proj\": 4}, "
                      "\"alpha_pattern\": {\"layers.0.self_attn.q_proj\": 32, \"v_proj\": 4}";
    table_t t = {0};
    t.r[0][SA_Q] = t.r[1][SA_Q] = 4;
    t.alpha[0][SA_Q] = 32;
    t.alpha[0][SA_V] = t.alpha[1][SA_V] = 4;
    double s[2][SA_NPROJ] = {{0}};
    s[0][SA_Q] = 32.0 / 4;
    s[1][SA_Q] = 16.0 / 4;
    s[0][SA_V] = s[1][SA_V] = 4.0 / 8;
    check_patterns(fx, pat, NULL, &t, s, qv);
    check_patterns(fx, pat, "0.17.1", &t, s, qv);
    /* PEFT 0.13: one combined search, rank keys first; layer 0 q_proj's winner is "q_proj",
     * which alpha_pattern lacks, so its alpha stays 16. v_proj wins "v_proj" (alpha 4). */
    t.alpha[0][SA_Q] = 0;
    s[0][SA_Q] = 16.0 / 4;
    check_patterns(fx, pat, "0.13.0", &t, s, qv);
    /* A key naming the full module: (.*\.)?(k)$ since 0.15 matches it, .*\.k$ before never
     * does (a dot must precede the key). */
    const char *full = "\"rank_pattern\": {\"^model.layers.0.self_attn.q_proj\": 4}";
    table_t f = {0};
    double sf[2][SA_NPROJ] = {{0}};
    for (int l = 0; l < 2; l++) sf[l][SA_Q] = sf[l][SA_V] = 2.0;
    check_patterns(fx, full, "0.14.0", &f, sf, qv);
    f.r[0][SA_Q] = 4;
    sf[0][SA_Q] = 4.0;
    check_patterns(fx, full, "0.15.0", &f, sf, qv);
    check_patterns(fx, full, NULL, &f, sf, qv);
}

static void test_layers_to_transform(void **state) {
    fx_t *fx = *state;
    table_t t = {0};
    double s[2][SA_NPROJ] = {{0}};
    for (int p = 0; p < SA_NPROJ; p++) t.skip[0][p] = 1;
    s[1][SA_Q] = s[1][SA_V] = 2.0;
    check_patterns(fx, "\"layers_to_transform\": [1], \"layers_pattern\": \"layers\"", NULL, &t,
                   s, SA_BIT(SA_Q) | SA_BIT(SA_V));
    /* tensors for layer 0 as well: refused */
    char *d = newdir(fx, "ltt");
    sa_opts_t o = sa_opts_defaults(SA_LORA);
    o.extra_config = "\"layers_to_transform\": [1]";
    sa_adapter_free(write_adapter(d, &fx->shape, &o));
    expect_refused(fx->base, d, LLM_EFORMAT, "not selected");
    free(d);
}

static void test_exclude_modules(void **state) {
    fx_t *fx = *state;
    table_t t = {0};
    double s[2][SA_NPROJ] = {{0}};
    for (int l = 0; l < 2; l++) {
        t.skip[l][SA_K] = 1;
        s[l][SA_Q] = s[l][SA_V] = 2.0;
    }
    check_patterns(fx, "\"exclude_modules\": [\"k_proj\"]", NULL, &t, s,
                   SA_BIT(SA_Q) | SA_BIT(SA_K) | SA_BIT(SA_V));
    /* regex form: full match over the module key */
    table_t t2 = {0};
    double s2[2][SA_NPROJ] = {{0}};
    t2.skip[1][SA_Q] = 1;
    s2[0][SA_Q] = s2[0][SA_V] = s2[1][SA_V] = 2.0;
    check_patterns(fx, "\"exclude_modules\": \"model\\\\.layers\\\\.1\\\\.self_attn\\\\.q_proj\"",
                   NULL, &t2, s2, SA_BIT(SA_Q) | SA_BIT(SA_V));
}

static void test_target_modules_regex(void **state) {
    fx_t *fx = *state;
    char *d = newdir(fx, "regex");
    table_t t = {0};
    for (int p = 0; p < SA_NPROJ; p++) t.skip[0][p] = 1;
    sa_opts_t o = sa_opts_defaults(SA_LORA);
    o.targets = SA_BIT(SA_Q) | SA_BIT(SA_V) | SA_BIT(SA_UP);
    o.targets_json = "\"model\\\\.layers\\\\.1\\\\.(self_attn\\\\.(q|v)|mlp\\\\.up)_proj\"";
    o.select = from_table;
    o.select_ctx = &t;
    sa_adapter_free(write_adapter(d, &fx->shape, &o));
    adp_adapter_t *a = load_ok(fx->base, d, "regex");
    for (int p = 0; p < CORE_PROJ_COUNT; p++) {
        assert_int_equal(adp_module(a, 0, (core_proj_t)p)->kind, ADP_K_NONE);
        int want = p == CORE_PROJ_Q || p == CORE_PROJ_V || p == CORE_PROJ_UP;
        assert_int_equal(adp_module(a, 1, (core_proj_t)p)->kind, want ? ADP_K_LORA : ADP_K_NONE);
    }
    assert_string_equal(a->target_modules, "q_proj,v_proj,up_proj");
    adp_adapter_unref(a);
    free(d);
    /* a regex is a full match: "q_proj" alone matches no module key */
    d = newdir(fx, "regex2");
    o = sa_opts_defaults(SA_LORA);
    o.targets_json = "\"q_proj\"";
    sa_adapter_free(write_adapter(d, &fx->shape, &o));
    expect_refused(fx->base, d, LLM_EFORMAT, "not selected");
    free(d);
}

static void test_non_additive_refused_in_combination(void **state) {
    fx_t *fx = *state;
    sa_opts_t o[5] = {sa_opts_defaults(SA_LORA), sa_opts_defaults(SA_DORA),
                      sa_opts_defaults(SA_LORMA), sa_opts_defaults(SA_LORMA),
                      sa_opts_defaults(SA_LORMA)};
    o[2].inflation = SA_SHIFT;
    o[3].inflation = SA_NONE;
    o[3].lorma_pre = 0;
    o[4].inflation = SA_RRI;
    static const char *const names[5] = {"plain", "dora-one", "lorma-shift", "lorma-none",
                                         "lorma-rri"};
    adp_adapter_t *a[5];
    for (int i = 0; i < 5; i++) {
        char *d = newdir(fx, "nonadd");
        o[i].r = 4;
        sa_adapter_free(write_adapter(d, &fx->shape, &o[i]));
        a[i] = load_ok(fx->base, d, names[i]);
        free(d);
    }
    assert_int_equal(a[0]->additive, 1);
    assert_int_equal(a[4]->additive, 1); /* LoRMA+ is a LoRA after the rewrite */
    llm_error_t err = {0};
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(a[i]->additive, 0);
        adp_set_t alone = {.n = 1, .a = {a[i]}, .w = {1.0f}};
        assert_int_equal(adp_set_validate(&alone, &err), 0);
        adp_set_t mix = {.n = 2, .a = {a[0], a[i]}, .w = {1.0f, 1.0f}};
        assert_int_equal(adp_set_validate(&mix, &err), LLM_EINVAL);
        assert_non_null(strstr(err.msg, names[i]));
        assert_non_null(strstr(err.msg, "not additive"));
        assert_non_null(strstr(err.msg, "only adapter"));
        adp_set_t scaled = {.n = 1, .a = {a[i]}, .w = {0.5f}};
        assert_int_equal(adp_set_validate(&scaled, &err), LLM_EINVAL);
        assert_non_null(strstr(err.msg, "not additive"));
    }
    adp_set_t ok = {.n = 3, .a = {a[0], a[4], a[0]}, .w = {0.5f, 2.0f, -1.0f}};
    assert_int_equal(adp_set_validate(&ok, &err), 0);
    adp_set_t nan = {.n = 1, .a = {a[0]}, .w = {NAN}};
    assert_int_equal(adp_set_validate(&nan, &err), LLM_EINVAL);
    for (int i = 0; i < 5; i++) adp_adapter_unref(a[i]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merged_lora),
        cmocka_unit_test(test_merged_rslora),
        cmocka_unit_test(test_merged_dora),
        cmocka_unit_test(test_merged_mora),
        cmocka_unit_test(test_merged_lorma),
        cmocka_unit_test(test_merged_lora2),
        cmocka_unit_test(test_merged_additive_combination),
        cmocka_unit_test(test_mora_type_defaults_to_1),
        cmocka_unit_test(test_mora_lora_b_wins),
        cmocka_unit_test(test_lora_bias),
        cmocka_unit_test(test_merged_bf16_factors),
        cmocka_unit_test(test_bf16_factors_close_to_fp32),
        cmocka_unit_test(test_batch_of_mixed_adapters_matches_solo),
        cmocka_unit_test(test_stories_zero_adapter_keeps_golden_ids),
        cmocka_unit_test(test_smollm_real_adapters),
        cmocka_unit_test(test_config_tinyllama_accepted),
        cmocka_unit_test(test_config_phi3_base_mismatch),
        cmocka_unit_test(test_config_gpt2_seqcls_refused),
        cmocka_unit_test(test_refuse_pickle_only),
        cmocka_unit_test(test_refuse_unknown_peft_type),
        cmocka_unit_test(test_refuse_mora_type_5),
        cmocka_unit_test(test_refuse_lorma_without_mode),
        cmocka_unit_test(test_refuse_module_not_in_base),
        cmocka_unit_test(test_refuse_missing_half),
        cmocka_unit_test(test_refuse_rank_mismatch),
        cmocka_unit_test(test_refuse_gqa_width),
        cmocka_unit_test(test_refuse_nan),
        cmocka_unit_test(test_refuse_nonpositive_rank),
        cmocka_unit_test(test_refuse_modules_to_save),
        cmocka_unit_test(test_refuse_bias_all),
        cmocka_unit_test(test_refuse_pissa_init),
        cmocka_unit_test(test_refuse_dora_with_lora_bias),
        cmocka_unit_test(test_refuse_tensor_not_targeted),
        cmocka_unit_test(test_rank_and_alpha_patterns),
        cmocka_unit_test(test_layers_to_transform),
        cmocka_unit_test(test_exclude_modules),
        cmocka_unit_test(test_target_modules_regex),
        cmocka_unit_test(test_non_additive_refused_in_combination),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
