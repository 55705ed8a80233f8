/* test_stories260k.c: golden-value tests of the whole core on a real trained model.
 *
 * ../shared/fixtures/stories260K-hf is Karpathy's stories260K in HF layout; expected_ids.json
 * holds 200 greedy ids from BOS produced by an independent fp32 numpy forward, plus fp64
 * logits after step 0 and step 199. expected.txt is llama2.c's published greedy output.
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

#include "forward.h"
#include "generate.h"
#include "linear.h"
#include "model.h"
#include "test_util.h"
#include "tokenizer.h"

typedef struct {
    core_model_t *m;
    cJSON *expected;
    int32_t ids[200];
} fx_t;

static int setup(void **state) {
    fx_t *fx = calloc(1, sizeof *fx);
    llm_error_t err = {0};
    if (core_model_load(tu_fixture_path("stories260K-hf"), &fx->m, &err)) {
        fprintf(stderr, "load: %s\n", err.msg);
        return -1;
    }
    char *js = tu_read_file(tu_fixture_path("stories260K-hf/expected_ids.json"), NULL);
    if (!js) return -1;
    fx->expected = cJSON_Parse(js);
    free(js);
    const cJSON *ids = cJSON_GetObjectItem(fx->expected, "ids");
    if (cJSON_GetArraySize(ids) != 200) return -1;
    for (int i = 0; i < 200; i++) fx->ids[i] = cJSON_GetArrayItem(ids, i)->valueint;
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fx_t *fx = *state;
    core_model_free(fx->m);
    cJSON_Delete(fx->expected);
    free(fx);
    return 0;
}

static smp_params_t greedy(void) {
    smp_params_t p = smp_params_default();
    p.temperature = 0;
    return p;
}

/* The config and weights are read as SOURCE.txt describes them. */
static void test_config(void **state) {
    fx_t *fx = *state;
    const core_model_config_t *c = &fx->m->cfg;
    assert_int_equal(c->arch, CORE_ARCH_LLAMA);
    assert_int_equal(c->hidden_size, 64);
    assert_int_equal(c->n_layers, 5);
    assert_int_equal(c->n_heads, 8);
    assert_int_equal(c->n_kv_heads, 4);
    assert_int_equal(c->head_dim, 8);
    assert_int_equal(c->vocab_size, 512);
    assert_int_equal(c->tie_embeddings, 1);
    assert_ptr_equal(fx->m->lm_head, &fx->m->embed);
    assert_int_equal(fx->m->owns_lm_head, 0);
    assert_int_equal(c->bos_id, 1);
    assert_int_equal(c->n_eos, 1);
    assert_int_equal(c->eos_ids[0], 2);
}

/* Logits after BOS and after the 199th generated id against the fp64 reference. */
static void check_logits(const float *got, const cJSON *want, const char *what) {
    double max_abs = 0, max_ref = 0;
    for (int i = 0; i < 512; i++) {
        double w = cJSON_GetArrayItem(want, i)->valuedouble;
        double d = fabs(got[i] - w);
        if (d > max_abs) max_abs = d;
        if (fabs(w) > max_ref) max_ref = fabs(w);
    }
    /* fp32 vs fp64 differ by <= 1.6e-5 absolute per SOURCE.txt; the reference is printed with 7
     * significant digits. 1e-4 relative to the largest logit covers both. */
    if (max_abs > 1e-4 * max_ref) {
        fprintf(stderr, "%s: max |diff| %g vs max |logit| %g\n", what, max_abs, max_ref);
        fail();
    }
}

static void test_logits_match_fp64_reference(void **state) {
    fx_t *fx = *state;
    core_kv_pool_t *pool;
    core_fwd_t *fwd;
    assert_int_equal(core_kv_pool_create(&fx->m->cfg, 16, &pool), 0);
    assert_int_equal(core_fwd_create(fx->m, 256, 0, &fwd), 0);
    core_seq_t seq;
    core_seq_init(&seq, pool, fx->m->cfg.max_pos);
    float logits[512];
    llm_error_t err = {0};
    int32_t bos = 1;
    core_step_seg_t seg = {.seq = &seq, .tokens = &bos, .n_tok = 1, .logits = CORE_LOGITS_LAST};
    assert_int_equal(core_fwd_step(fwd, &seg, 1, logits, &err), 0);
    check_logits(logits, cJSON_GetObjectItem(fx->expected, "logits_step0_fp64"), "step 0");
    /* feed the 199 expected ids as one prompt chunk: step 199's logits come out last */
    seg = (core_step_seg_t){.seq = &seq, .tokens = fx->ids, .n_tok = 199,
                            .logits = CORE_LOGITS_LAST};
    assert_int_equal(core_fwd_step(fwd, &seg, 1, logits, &err), 0);
    assert_int_equal(seq.n_past, 200);
    check_logits(logits, cJSON_GetObjectItem(fx->expected, "logits_step199_fp64"), "step 199");
    core_seq_deinit(&seq);
    assert_int_equal(pool->n_free, pool->n_blocks);
    core_fwd_free(fwd);
    core_kv_pool_free(pool);
}

/* Greedy from BOS for 200 tokens reproduces all 200 expected ids. */
static void test_greedy_200_ids(void **state) {
    fx_t *fx = *state;
    int32_t bos = 1;
    core_gen_req_t r = {.prompt = &bos, .n_prompt = 1, .max_tokens = 200,
                        .sampling = greedy()};
    llm_error_t err = {0};
    assert_int_equal(core_generate(fx->m, NULL, &r, 1, NULL, &err), 0);
    assert_int_equal(r.n_ids, 200);
    for (int i = 0; i < 200; i++) {
        if (r.ids[i] != fx->ids[i]) fprintf(stderr, "first mismatch at %d\n", i);
        assert_int_equal(r.ids[i], fx->ids[i]);
    }
    assert_int_equal(r.finish, CORE_FINISH_LENGTH);
    core_gen_req_clear(&r);
}

/* The decoded text of the first 114 tokens equals the start of llama2.c's expected.txt. */
static void test_text_matches_published(void **state) {
    fx_t *fx = *state;
    llm_error_t err = {0};
    tok_tokenizer_t *tok = NULL;
    assert_int_equal(tok_load(tu_fixture_path("stories260K-hf"), &tok, &err), 0);
    int32_t bos = 1;
    core_gen_req_t r = {.prompt = &bos, .n_prompt = 1, .max_tokens = 114,
                        .sampling = greedy()};
    assert_int_equal(core_generate(fx->m, tok, &r, 1, NULL, &err), 0);
    size_t elen;
    char *expected = tu_read_file(tu_fixture_path("stories260K-hf/expected.txt"), &elen);
    assert_non_null(expected);
    assert_true(r.text_len > 250); /* 114 tokens of TinyStories text */
    assert_true(r.text_len <= elen);
    assert_memory_equal(r.text, expected, r.text_len);
    /* and the 115th token is where the Q8_0 weights part from the fp32 original */
    assert_true(elen > r.text_len);
    free(expected);
    core_gen_req_clear(&r);
    tok_free(tok);
}

/* One prompt alone and inside a batch of 8 sequences of different lengths (with prefill
 * chunked across steps) yields the same greedy tokens. */
static void test_batch_invariance(void **state) {
    fx_t *fx = *state;
    enum { N = 8 };
    static const int lens[N] = {1, 7, 33, 2, 64, 15, 100, 5};
    int32_t prompts[N][100];
    for (int i = 0; i < N; i++) {
        prompts[i][0] = 1;
        for (int t = 1; t < lens[i]; t++) prompts[i][t] = fx->ids[(t * 7 + i * 13) % 200];
    }
    core_gen_req_t alone[N], batch[N];
    llm_error_t err = {0};
    for (int i = 0; i < N; i++) {
        alone[i] = (core_gen_req_t){.prompt = prompts[i], .n_prompt = lens[i],
                                    .max_tokens = 40 + i, .sampling = greedy()};
        batch[i] = alone[i];
        assert_int_equal(core_generate(fx->m, NULL, &alone[i], 1, NULL, &err), 0);
    }
    core_gen_opts_t o = {.max_step_tokens = 24}; /* forces chunked prefill */
    assert_int_equal(core_generate(fx->m, NULL, batch, N, &o, &err), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(batch[i].n_ids, alone[i].n_ids);
        assert_memory_equal(batch[i].ids, alone[i].ids, (size_t)alone[i].n_ids * 4);
        core_gen_req_clear(&alone[i]);
        core_gen_req_clear(&batch[i]);
    }
}

/* Seeded sampling gives the same tokens alone and in a batch, and differs across seeds. */
static void test_seeded_sampling_batch_invariant(void **state) {
    fx_t *fx = *state;
    smp_params_t sp = smp_params_default();
    sp.temperature = 1.0f;
    sp.seed = 42;
    sp.has_seed = 1;
    int32_t bos = 1, other[3] = {1, 403, 407};
    llm_error_t err = {0};
    core_gen_req_t a = {.prompt = &bos, .n_prompt = 1, .max_tokens = 60, .sampling = sp,
                        .ignore_eos = 1};
    core_gen_req_t b[3] = {a, a, a};
    b[1].prompt = other;
    b[1].n_prompt = 3;
    b[2].sampling.seed = 7;
    assert_int_equal(core_generate(fx->m, NULL, &a, 1, NULL, &err), 0);
    assert_int_equal(core_generate(fx->m, NULL, b, 3, NULL, &err), 0);
    assert_int_equal(a.n_ids, 60);
    assert_memory_equal(a.ids, b[0].ids, 60 * 4);
    assert_memory_not_equal(a.ids, b[2].ids, 60 * 4);
    core_gen_req_clear(&a);
    for (int i = 0; i < 3; i++) core_gen_req_clear(&b[i]);
}

/* Stop strings cut the text before the stop string; max_tokens ends with "length". */
static void test_stop_string(void **state) {
    fx_t *fx = *state;
    llm_error_t err = {0};
    tok_tokenizer_t *tok = NULL;
    assert_int_equal(tok_load(tu_fixture_path("stories260K-hf"), &tok, &err), 0);
    int32_t bos = 1;
    const char *stop[] = {"Lily."};
    core_gen_req_t r = {.prompt = &bos, .n_prompt = 1, .max_tokens = 200, .sampling = greedy(),
                        .stop = stop, .n_stop = 1};
    assert_int_equal(core_generate(fx->m, tok, &r, 1, NULL, &err), 0);
    assert_int_equal(r.finish, CORE_FINISH_STOP);
    assert_string_equal(r.text, "Once upon a time, there was a little girl named ");
    assert_true(r.n_ids < 20);
    core_gen_req_clear(&r);
    tok_free(tok);
}

/* A sequence is refused past the context length and nothing advances. */
static void test_context_overflow_refused(void **state) {
    fx_t *fx = *state;
    core_kv_pool_t *pool;
    core_fwd_t *fwd;
    assert_int_equal(core_kv_pool_create(&fx->m->cfg, 64, &pool), 0);
    assert_int_equal(core_fwd_create(fx->m, 600, 0, &fwd), 0);
    core_seq_t seq;
    core_seq_init(&seq, pool, fx->m->cfg.max_pos);
    int32_t toks[513];
    for (int i = 0; i < 513; i++) toks[i] = 5;
    core_step_seg_t seg = {.seq = &seq, .tokens = toks, .n_tok = 513, .logits = CORE_LOGITS_LAST};
    float *logits = malloc(512 * sizeof(float));
    llm_error_t err = {0};
    assert_int_equal(core_fwd_step(fwd, &seg, 1, logits, &err), LLM_ERANGE);
    assert_non_null(strstr(err.msg, "context"));
    assert_int_equal(seq.n_past, 0);
    /* a token id outside the vocabulary */
    toks[0] = 512;
    seg.n_tok = 1;
    assert_int_equal(core_fwd_step(fwd, &seg, 1, logits, &err), LLM_ERANGE);
    core_seq_deinit(&seq);
    free(logits);
    core_fwd_free(fwd);
    core_kv_pool_free(pool);
}

/* Paged KV: blocks are taken as a sequence grows, refused when the pool is empty (nothing taken
 * then), and all returned when it ends. */
static void test_kv_blocks(void **state) {
    fx_t *fx = *state;
    core_kv_pool_t *pool;
    assert_int_equal(core_kv_pool_create(&fx->m->cfg, 3, &pool), 0);
    core_seq_t a, b;
    core_seq_init(&a, pool, 512);
    core_seq_init(&b, pool, 512);
    assert_int_equal(core_seq_reserve(&a, CORE_KV_BLOCK + 1), 0);
    assert_int_equal(a.n_blocks, 2);
    assert_int_equal(pool->n_free, 1);
    assert_int_equal(core_seq_reserve(&b, 2 * CORE_KV_BLOCK), LLM_EFULL);
    assert_int_equal(b.n_blocks, 0);
    assert_int_equal(pool->n_free, 1);
    assert_int_equal(core_seq_reserve(&b, CORE_KV_BLOCK), 0);
    assert_int_equal(pool->n_free, 0);
    core_seq_deinit(&a);
    assert_int_equal(pool->n_free, 2);
    core_seq_deinit(&b);
    assert_int_equal(pool->n_free, 3);
    core_kv_pool_free(pool);
}

/* ---- weight types (--weights) ---- */

/* Greedy ids from BOS with the model stored as wt, into out200; returns how many of them
 * equal the fp32 expected ids from the start. */
static int greedy_agreement(fx_t *fx, kern_wtype_t wt, int32_t *out200) {
    core_model_t *m = NULL;
    llm_error_t err = {0};
    assert_int_equal(core_model_load_as(tu_fixture_path("stories260K-hf"), wt, &m, &err), 0);
    assert_int_equal(m->wtype, wt);
    int32_t bos = 1;
    core_gen_req_t r = {.prompt = &bos, .n_prompt = 1, .max_tokens = 200, .sampling = greedy()};
    assert_int_equal(core_generate(m, NULL, &r, 1, NULL, &err), 0);
    assert_int_equal(r.n_ids, 200);
    int agree = 0;
    while (agree < 200 && r.ids[agree] == fx->ids[agree]) agree++;
    memcpy(out200, r.ids, sizeof(int32_t) * 200);
    core_gen_req_clear(&r);
    core_model_free(m);
    return agree;
}

/* Logits after each of toks[0..n) (n ≤ 200) fed as one prompt to m, with the KV cache type the
 * server gives m's weights; out (n, 512). */
static void teacher_logits(core_model_t *m, const int32_t *toks, int n, float *out) {
    core_kv_pool_t *pool;
    core_fwd_t *fwd;
    assert_int_equal(core_kv_pool_create_as(&m->cfg, 16, core_kv_type_for(m->wtype), &pool), 0);
    assert_int_equal(core_fwd_create(m, 256, 0, &fwd), 0);
    core_seq_t seq;
    core_seq_init(&seq, pool, m->cfg.max_pos);
    llm_error_t err = {0};
    core_step_seg_t seg = {.seq = &seq, .tokens = toks, .n_tok = n, .logits = CORE_LOGITS_ALL};
    assert_int_equal(core_fwd_step(fwd, &seg, 1, out, &err), 0);
    core_seq_deinit(&seq);
    core_fwd_free(fwd);
    core_kv_pool_free(pool);
}

/* bf16 weights. The bar: greedy ids equal to fp32 for the first 100 tokens, or a
 * divergence explained by the tie margins. Greedy decoding is chaotic at near-ties (the same
 * bf16 weights gave 132 equal ids through the row-major dot-product kernel and 71 through the
 * 32-row-panel outer-product kernel, whose teacher-forced logits are as close to fp32: rms
 * 0.034 against 0.036), so the test checks the explanation rather than the luck:
 *   - teacher-forced on the fp32 greedy ids, every bf16 logit row is within 3 % of the
 *     row's largest |logit| of the fp32 one (measured: max 0.20 on logits of ~±10), and
 *   - where greedy decoding first parts (if before 200), the fp32 top-2 gap there is smaller
 *     than twice the bf16 error in that row, and the bf16 model's pick is the fp32 runner-up:
 *     a near-tie flipped by rounding, not a wrong token. */
static void test_bf16_greedy_matches_fp32(void **state) {
    fx_t *fx = *state;
    int32_t ids[200];
    const int agree = greedy_agreement(fx, KERN_W_BF16, ids);
    int32_t toks[200] = {1}; /* BOS, then the fp32 greedy ids */
    memcpy(toks + 1, fx->ids, sizeof(int32_t) * 199);
    float *lf = malloc(sizeof(float) * 200 * 512), *lb = malloc(sizeof(float) * 200 * 512);
    core_model_t *mb = NULL;
    llm_error_t err = {0};
    assert_int_equal(core_model_load_as(tu_fixture_path("stories260K-hf"), KERN_W_BF16, &mb,
                                        &err), 0);
    teacher_logits(fx->m, toks, 200, lf);
    teacher_logits(mb, toks, 200, lb);
    double worst = 0, row_err[200];
    for (int t = 0; t < 200; t++) {
        double mx = 0, e = 0;
        for (int i = 0; i < 512; i++) {
            mx = fmax(mx, fabs(lf[t * 512 + i]));
            e = fmax(e, fabs((double)lb[t * 512 + i] - lf[t * 512 + i]));
        }
        row_err[t] = e;
        worst = fmax(worst, e / mx);
    }
    fprintf(stderr, "bf16: greedy ids equal fp32 for %d of 200; teacher-forced logits within "
            "%.2f %% of the row's max |logit|\n", agree, 100 * worst);
    assert_true(worst <= 0.03);
    if (agree < 200) {
        const float *r = lf + agree * 512;
        int a = 0, b = -1;
        for (int i = 1; i < 512; i++) if (r[i] > r[a]) a = i;
        for (int i = 0; i < 512; i++) if (i != a && (b < 0 || r[i] > r[b])) b = i;
        const double gap = r[a] - r[b];
        fprintf(stderr, "  parted at %d: fp32 top-2 gap %.4f, bf16 error in that row %.4f; fp32 "
                "picks %d, runner-up %d, bf16 picked %d\n", agree, gap, row_err[agree], a, b,
                ids[agree]);
        assert_int_equal(a, fx->ids[agree]);
        assert_int_equal(ids[agree], b);
        assert_true(gap < 2 * row_err[agree]);
    }
    core_model_free(mb);
    free(lf);
    free(lb);
}

/* int8 weights (per-row scales, activations quantised per token): the logits stay within 5 %
 * of the largest logit of the fp64 reference at step 0, and the greedy ids agree with fp32 for
 * a good stretch. A 260K-parameter model is the hard case for int8 (64-wide rows, so one
 * outlier sets a coarse scale); the bound is what this model measures with margin. */
static void test_int8_close_to_fp32(void **state) {
    fx_t *fx = *state;
    core_model_t *m = NULL;
    llm_error_t err = {0};
    assert_int_equal(core_model_load_as(tu_fixture_path("stories260K-hf"), KERN_W_I8, &m, &err),
                     0);
    core_kv_pool_t *pool;
    core_fwd_t *fwd;
    assert_int_equal(core_kv_pool_create(&m->cfg, 16, &pool), 0);
    assert_int_equal(core_fwd_create(m, 256, 0, &fwd), 0);
    core_seq_t seq;
    core_seq_init(&seq, pool, m->cfg.max_pos);
    float logits[512];
    int32_t bos = 1;
    core_step_seg_t seg = {.seq = &seq, .tokens = &bos, .n_tok = 1, .logits = CORE_LOGITS_LAST};
    assert_int_equal(core_fwd_step(fwd, &seg, 1, logits, &err), 0);
    const cJSON *want = cJSON_GetObjectItem(fx->expected, "logits_step0_fp64");
    double max_abs = 0, max_ref = 0;
    for (int i = 0; i < 512; i++) {
        double w = cJSON_GetArrayItem(want, i)->valuedouble;
        if (fabs(logits[i] - w) > max_abs) max_abs = fabs(logits[i] - w);
        if (fabs(w) > max_ref) max_ref = fabs(w);
    }
    fprintf(stderr, "int8: step-0 logits max |diff| %.4f = %.2f %% of max |logit|\n", max_abs,
            100 * max_abs / max_ref);
    assert_true(max_abs <= 0.05 * max_ref);
    core_seq_deinit(&seq);
    core_fwd_free(fwd);
    core_kv_pool_free(pool);
    core_model_free(m);
    int32_t ids[200];
    int agree = greedy_agreement(fx, KERN_W_I8, ids);
    fprintf(stderr, "int8: greedy ids equal fp32 for %d of 200\n", agree);
    assert_true(agree >= 20);
}

/* The compute pool splits rows and (row, head) pairs; every output is computed by the same
 * code whichever thread runs it, so decode-sized steps give bit-identical logits on 1 and 3
 * threads, and prompt-sized steps (sgemm per worker) agree to fp32 rounding. */
static void test_threads_do_not_change_results(void **state) {
    fx_t *fx = *state;
    enum { DEC = 12, PRE = 60 };
    static float dec[2][DEC][512], pre[2][512];
    int32_t toks[PRE] = {1};
    memcpy(toks + 1, fx->ids, sizeof(int32_t) * (PRE - 1));
    for (int v = 0; v < 2; v++) {
        core_kv_pool_t *pool;
        core_fwd_t *fwd;
        assert_int_equal(core_kv_pool_create(&fx->m->cfg, 32, &pool), 0);
        assert_int_equal(core_fwd_create(fx->m, 256, v ? 3 : 1, &fwd), 0);
        core_exec_set_min_parallel(core_fwd_exec(fwd), 0); /* tiny layers: split them anyway */
        core_seq_t a, b;
        core_seq_init(&a, pool, fx->m->cfg.max_pos);
        core_seq_init(&b, pool, fx->m->cfg.max_pos);
        llm_error_t err = {0};
        for (int k = 0; k < DEC; k++) { /* one token per step: the kernel path */
            core_step_seg_t seg = {.seq = &a, .tokens = toks + k, .n_tok = 1,
                                   .logits = CORE_LOGITS_LAST};
            assert_int_equal(core_fwd_step(fwd, &seg, 1, dec[v][k], &err), 0);
        }
        core_step_seg_t seg = {.seq = &b, .tokens = toks, .n_tok = PRE, /* the sgemm path */
                               .logits = CORE_LOGITS_LAST};
        assert_int_equal(core_fwd_step(fwd, &seg, 1, pre[v], &err), 0);
        core_seq_deinit(&a);
        core_seq_deinit(&b);
        core_fwd_free(fwd);
        core_kv_pool_free(pool);
    }
    assert_memory_equal(dec[0], dec[1], sizeof dec[0]);
    for (int i = 0; i < 512; i++)
        assert_true(fabsf(pre[0][i] - pre[1][i]) <= 1e-4f * (1 + fabsf(pre[0][i])));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_logits_match_fp64_reference),
        cmocka_unit_test(test_greedy_200_ids),
        cmocka_unit_test(test_text_matches_published),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_seeded_sampling_batch_invariant),
        cmocka_unit_test(test_stop_string),
        cmocka_unit_test(test_context_overflow_refused),
        cmocka_unit_test(test_kv_blocks),
        cmocka_unit_test(test_bf16_greedy_matches_fp32),
        cmocka_unit_test(test_int8_close_to_fp32),
        cmocka_unit_test(test_threads_do_not_change_results),
    };
    return cmocka_run_group_tests_name("stories260k", tests, setup, teardown);
}
