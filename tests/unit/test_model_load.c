/* test_model_load.c: what core_model_load refuses, with which message, and what it accepts.
 *
 * Every refusal test writes a small synthetic model (tools/synth_model) with exactly
 * one thing wrong and asserts the error code and the parts of err.msg an operator needs: the
 * tensor, key or file, and the reason. Acceptance tests cover sharded checkpoints, Mistral's
 * sliding window and generation_config.json's eos ids.
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
#include <sys/stat.h>
#include <unistd.h>

#include "forward.h"
#include "kv_cache.h"
#include "model.h"
#include "synth_model.h"
#include "test_util.h"

#define MAX_TENSORS 128

/* ---- helpers ---- */

/* hidden 32, 4 heads of 8, 2 kv heads (kv width 16), ffn 64, 2 layers, vocab 128. */
static synth_model_opts_t base_opts(void) {
    synth_model_opts_t o = synth_model_defaults();
    o.seed = 77;
    return o;
}

/* A model directory, removed (with what is in it) by done(). */
typedef struct {
    char *dir;
    synth_weights_t *w;
    synth_tensor_t t[MAX_TENSORS];
    int n;
} mdir_t;

/* Draws the weights of o and lists its tensors, without writing anything yet. */
static void prepare(mdir_t *md, const synth_model_opts_t *o) {
    memset(md, 0, sizeof *md);
    md->dir = tu_mkdtemp();
    assert_non_null(md->dir);
    md->w = synth_weights_create(o);
    assert_non_null(md->w);
    md->n = synth_weights_tensors(md->w, md->t, MAX_TENSORS);
    assert_true(md->n <= MAX_TENSORS);
}

/* Writes config.json and the (possibly edited) tensor list. */
static void write_out(mdir_t *md) {
    assert_int_equal(synth_write_config(&md->w->o, md->dir), 0);
    assert_int_equal(synth_write_tensors(&md->w->o, md->t, md->n, md->dir), 0);
}

static void write_model(mdir_t *md, const synth_model_opts_t *o) {
    prepare(md, o);
    write_out(md);
}

static void done(mdir_t *md) {
    synth_weights_free(md->w);
    tu_rm_rf(md->dir);
    free(md->dir);
}

static int find_tensor(const mdir_t *md, const char *name) {
    for (int i = 0; i < md->n; i++)
        if (strcmp(md->t[i].name, name) == 0) return i;
    fail_msg("no tensor %s", name);
    return -1;
}

static char *path_in(const mdir_t *md, const char *file) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", md->dir, file);
    return buf;
}

/* Loads md->dir expecting failure with code, and every NULL-terminated substring in err.msg. */
static void expect_refusal(const mdir_t *md, int code, ...) {
    core_model_t *m = NULL;
    llm_error_t err = {0};
    const int rc = core_model_load(md->dir, &m, &err);
    if (rc == 0) {
        core_model_free(m);
        fail_msg("model in %s was accepted", md->dir);
    }
    assert_null(m);
    if (rc != code)
        fail_msg("code %s, expected %s (msg: %s)", llm_err_name(rc), llm_err_name(code), err.msg);
    assert_int_equal(err.code, rc);
    va_list ap;
    va_start(ap, code);
    for (const char *s; (s = va_arg(ap, const char *));)
        if (!strstr(err.msg, s)) fail_msg("message \"%s\" lacks \"%s\"", err.msg, s);
    va_end(ap);
}

static core_model_t *expect_load(const mdir_t *md) {
    core_model_t *m = NULL;
    llm_error_t err = {0};
    if (core_model_load(md->dir, &m, &err) != 0) fail_msg("load %s: %s", md->dir, err.msg);
    assert_non_null(m);
    return m;
}

/* Logits of every position of a fixed 12-token prompt: (12, vocab), caller frees. */
static float *prompt_logits(const core_model_t *m) {
    const int T = 12, V = m->cfg.vocab_size;
    int32_t tok[12];
    for (int i = 0; i < T; i++) tok[i] = (int32_t)((i * 37 + 5) % V);
    core_kv_pool_t *pool = NULL;
    core_fwd_t *fwd = NULL;
    assert_int_equal(core_kv_pool_create(&m->cfg, 4, &pool), 0);
    assert_int_equal(core_fwd_create(m, T, 0, &fwd), 0);
    core_seq_t seq;
    core_seq_init(&seq, pool, m->cfg.max_pos);
    core_step_seg_t seg = {.seq = &seq, .tokens = tok, .n_tok = T, .logits = CORE_LOGITS_ALL};
    float *logits = malloc((size_t)T * V * sizeof(float));
    assert_non_null(logits);
    llm_error_t err = {0};
    if (core_fwd_step(fwd, &seg, 1, logits, &err) != 0) fail_msg("step: %s", err.msg);
    core_seq_deinit(&seq);
    core_fwd_free(fwd);
    core_kv_pool_free(pool);
    return logits;
}

/* ---- refusals: weights ---- */

static void test_missing_tensor(void **state) {
    synth_model_opts_t o = base_opts();
    mdir_t md;
    prepare(&md, &o);
    const int i = find_tensor(&md, "model.layers.1.mlp.up_proj.weight");
    md.t[i] = md.t[--md.n];
    write_out(&md);
    expect_refusal(&md, LLM_ENOTFOUND, "missing tensor", "model.layers.1.mlp.up_proj.weight",
                   NULL);
    done(&md);
}

/* The untied head is required too. */
static void test_missing_lm_head(void **state) {
    synth_model_opts_t o = base_opts();
    mdir_t md;
    prepare(&md, &o);
    const int i = find_tensor(&md, "lm_head.weight");
    md.t[i] = md.t[--md.n];
    write_out(&md);
    expect_refusal(&md, LLM_ENOTFOUND, "missing tensor", "\"lm_head.weight\"", NULL);
    done(&md);
}

static void test_wrong_shape_matrix(void **state) {
    synth_model_opts_t o = base_opts();
    mdir_t md;
    prepare(&md, &o);
    float *bad = calloc(16 * 40, sizeof(float));
    const int i = find_tensor(&md, "model.layers.0.self_attn.k_proj.weight");
    md.t[i].shape[1] = 40; /* expected [16, 32] */
    md.t[i].data = bad;
    write_out(&md);
    expect_refusal(&md, LLM_ESHAPE, "model.layers.0.self_attn.k_proj.weight", "[16, 40]",
                   "[16, 32]", NULL);
    free(bad);
    done(&md);
}

/* A transposed o_proj (same element count) is refused, not read sideways. */
static void test_wrong_shape_transposed(void **state) {
    synth_model_opts_t o = base_opts();
    o.head_dim = 16; /* o_proj is [32, 64]; store [64, 32] */
    mdir_t md;
    prepare(&md, &o);
    const int i = find_tensor(&md, "model.layers.1.self_attn.o_proj.weight");
    md.t[i].shape[0] = 64;
    md.t[i].shape[1] = 32;
    write_out(&md);
    expect_refusal(&md, LLM_ESHAPE, "model.layers.1.self_attn.o_proj.weight", "[64, 32]",
                   "[32, 64]", NULL);
    done(&md);
}

static void test_wrong_shape_vector(void **state) {
    synth_model_opts_t o = base_opts();
    mdir_t md;
    prepare(&md, &o);
    const int i = find_tensor(&md, "model.norm.weight");
    md.t[i].n_dims = 2; /* [32] written as [1, 32] */
    md.t[i].shape[1] = md.t[i].shape[0];
    md.t[i].shape[0] = 1;
    write_out(&md);
    expect_refusal(&md, LLM_ESHAPE, "model.norm.weight", "[1, 32]", "[32]", NULL);
    done(&md);
}

/* A Qwen3-style q_norm would be silently dropped by a Llama forward: refused. */
static void test_unexpected_tensor(void **state) {
    synth_model_opts_t o = base_opts();
    mdir_t md;
    prepare(&md, &o);
    static const float ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    md.t[md.n] = md.t[find_tensor(&md, "model.norm.weight")];
    snprintf(md.t[md.n].name, sizeof md.t[md.n].name, "model.layers.0.self_attn.q_norm.weight");
    md.t[md.n].shape[0] = 8;
    md.t[md.n].data = ones;
    md.n++;
    write_out(&md);
    expect_refusal(&md, LLM_EUNSUPPORTED, "unexpected tensor",
                   "model.layers.0.self_attn.q_norm.weight", NULL);
    done(&md);
}

/* A bias the config does not announce (attention_bias false) would be dropped: refused. */
static void test_unannounced_bias(void **state) {
    synth_model_opts_t o = base_opts();
    o.attention_bias = 1;
    mdir_t md;
    prepare(&md, &o);
    md.w->o.attention_bias = 0; /* config.json says false, the file has the biases */
    write_out(&md);
    expect_refusal(&md, LLM_EUNSUPPORTED, "unexpected tensor", "_proj.bias", NULL);
    done(&md);
}

static void test_non_finite_matrix(void **state) {
    synth_model_opts_t o = base_opts();
    mdir_t md;
    prepare(&md, &o);
    md.w->layers[1].wv[7] = NAN;
    write_out(&md);
    expect_refusal(&md, LLM_EFORMAT, "model.layers.1.self_attn.v_proj.weight", "non-finite",
                   NULL);
    done(&md);
}

/* BF16 storage and a 1-D tensor: +inf in a norm vector. */
static void test_non_finite_vector_bf16(void **state) {
    synth_model_opts_t o = base_opts();
    o.dtype = CORE_DT_BF16;
    mdir_t md;
    prepare(&md, &o);
    md.w->layers[0].ffn_norm[3] = INFINITY;
    write_out(&md);
    expect_refusal(&md, LLM_EFORMAT, "model.layers.0.post_attention_layernorm.weight",
                   "non-finite", NULL);
    done(&md);
}

/* The file ends inside its data section (an interrupted download). */
static void test_truncated_data(void **state) {
    synth_model_opts_t o = base_opts();
    mdir_t md;
    write_model(&md, &o);
    struct stat sb;
    const char *p = path_in(&md, "model.safetensors");
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(truncate(p, sb.st_size - 100), 0);
    expect_refusal(&md, LLM_EFORMAT, "model.safetensors", "data section", NULL);
    done(&md);
}

/* ---- refusals: config ---- */

static void test_config_unknown_key(void **state) {
    synth_model_opts_t o = base_opts();
    o.extra_config = "\"attn_logit_softcapping\": 50.0";
    mdir_t md;
    write_model(&md, &o);
    expect_refusal(&md, LLM_EUNSUPPORTED, "config.json", "attn_logit_softcapping", NULL);
    done(&md);
}

static void test_config_unsupported_arch(void **state) {
    synth_model_opts_t o = base_opts();
    o.arch = "GemmaForCausalLM";
    mdir_t md;
    write_model(&md, &o);
    expect_refusal(&md, LLM_EUNSUPPORTED, "architectures", "GemmaForCausalLM", NULL);
    done(&md);
}

static void test_config_rope_yarn(void **state) {
    synth_model_opts_t o = base_opts();
    o.rope_scaling_json = "{\"rope_type\": \"yarn\", \"factor\": 4.0, "
                          "\"original_max_position_embeddings\": 64}";
    mdir_t md;
    write_model(&md, &o);
    expect_refusal(&md, LLM_EUNSUPPORTED, "rope_scaling", "yarn", NULL);
    done(&md);
}

/* More query heads per KV head than the attention supports: refused, naming both fields. */
static void test_config_gqa_group_too_large(void **state) {
    synth_model_opts_t o = base_opts();
    o.n_heads = 2 * CORE_MAX_GQA_GROUP;
    o.n_kv_heads = 1;
    o.head_dim = 2;
    mdir_t md;
    write_model(&md, &o);
    expect_refusal(&md, LLM_EUNSUPPORTED, "num_attention_heads", "query heads per KV head",
                   NULL);
    done(&md);
}

static void test_config_gelu(void **state) {
    synth_model_opts_t o = base_opts();
    o.hidden_act = "gelu";
    mdir_t md;
    write_model(&md, &o);
    expect_refusal(&md, LLM_EUNSUPPORTED, "hidden_act", "gelu", NULL);
    done(&md);
}

static void test_config_missing(void **state) {
    synth_model_opts_t o = base_opts();
    mdir_t md;
    write_model(&md, &o);
    assert_int_equal(unlink(path_in(&md, "config.json")), 0);
    expect_refusal(&md, LLM_ENOTFOUND, "config.json", NULL);
    done(&md);
}

/* ---- acceptance ---- */

/* Two and three shards with an index give bit-identical logits to the single file. */
static void test_sharded_matches_single(void **state) {
    synth_model_opts_t o = base_opts();
    o.dtype = CORE_DT_BF16;
    mdir_t one, two, three;
    write_model(&one, &o);
    o.n_shards = 2;
    write_model(&two, &o);
    o.n_shards = 3;
    write_model(&three, &o);
    struct stat sb;
    assert_int_equal(stat(path_in(&two, "model-00001-of-00002.safetensors"), &sb), 0);
    assert_int_equal(stat(path_in(&two, "model-00002-of-00002.safetensors"), &sb), 0);
    assert_int_equal(stat(path_in(&two, "model.safetensors.index.json"), &sb), 0);
    assert_int_not_equal(stat(path_in(&two, "model.safetensors"), &sb), 0);

    core_model_t *m1 = expect_load(&one), *m2 = expect_load(&two), *m3 = expect_load(&three);
    float *l1 = prompt_logits(m1), *l2 = prompt_logits(m2), *l3 = prompt_logits(m3);
    const size_t bytes = (size_t)12 * m1->cfg.vocab_size * sizeof(float);
    assert_memory_equal(l1, l2, bytes);
    assert_memory_equal(l1, l3, bytes);
    free(l1); free(l2); free(l3);
    core_model_free(m1); core_model_free(m2); core_model_free(m3);
    done(&one); done(&two); done(&three);
}

/* A shard listed in the index but absent is named in the refusal. */
static void test_sharded_missing_shard(void **state) {
    synth_model_opts_t o = base_opts();
    o.n_shards = 2;
    mdir_t md;
    write_model(&md, &o);
    assert_int_equal(unlink(path_in(&md, "model-00002-of-00002.safetensors")), 0);
    core_model_t *m = NULL;
    llm_error_t err = {0};
    assert_int_not_equal(core_model_load(md.dir, &m, &err), 0);
    assert_null(m);
    if (!strstr(err.msg, "model-00002-of-00002.safetensors"))
        fail_msg("message \"%s\" does not name the shard", err.msg);
    done(&md);
}

/* Mistral's active window below the context caps max_pos (windowed and full attention agree
 * below the window); a window at or above the context changes nothing; Qwen2's window is off
 * without use_sliding_window, so it does not cap. */
static void test_sliding_window(void **state) {
    static const struct {
        const char *arch;
        int window, expect;
    } cases[] = {
        {"MistralForCausalLM", 64, 64},
        {"MistralForCausalLM", 4096, 256},
        {"MistralForCausalLM", 0, 256}, /* null */
        {"Qwen2ForCausalLM", 64, 256},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        synth_model_opts_t o = base_opts();
        o.arch = cases[c].arch;
        o.max_pos = 256;
        o.sliding_window = cases[c].window;
        mdir_t md;
        write_model(&md, &o);
        core_model_t *m = expect_load(&md);
        if (m->cfg.max_pos != cases[c].expect)
            fail_msg("%s window %d: max_pos %d, expected %d", cases[c].arch, cases[c].window,
                     m->cfg.max_pos, cases[c].expect);
        core_model_free(m);
        done(&md);
    }
}

/* eos ids from config.json (2) and generation_config.json ([2, 5, 7]) are merged, once each. */
static void test_generation_config_eos(void **state) {
    synth_model_opts_t o = base_opts();
    mdir_t md;
    write_model(&md, &o);
    const char *gen = "{\"bos_token_id\": 1, \"eos_token_id\": [2, 5, 7], "
                      "\"do_sample\": true, \"temperature\": 0.6, \"top_p\": 0.9}\n";
    assert_int_equal(tu_write_file(path_in(&md, "generation_config.json"), gen, strlen(gen)), 0);
    core_model_t *m = expect_load(&md);
    assert_int_equal(m->cfg.n_eos, 3);
    int seen[3] = {0};
    for (int i = 0; i < m->cfg.n_eos; i++) {
        const int id = m->cfg.eos_ids[i];
        assert_true(id == 2 || id == 5 || id == 7);
        seen[id == 2 ? 0 : id == 5 ? 1 : 2]++;
    }
    assert_int_equal(seen[0] * seen[1] * seen[2], 1);
    assert_int_equal(m->cfg.bos_id, 1);
    core_model_free(m);
    done(&md);
}

/* Derived rotary caches may ride along, and a tied model may still carry lm_head.weight
 * (some exporters write the shared matrix twice): both are accepted. */
static void test_ignorable_tensors(void **state) {
    synth_model_opts_t o = base_opts();
    o.tie_embeddings = 1;
    mdir_t md;
    prepare(&md, &o);
    float inv_freq[4] = {1.0f, 0.1f, 0.01f, 0.001f};
    synth_tensor_t *t = &md.t[md.n++];
    snprintf(t->name, sizeof t->name, "model.layers.0.self_attn.rotary_emb.inv_freq");
    t->n_dims = 1;
    t->shape[0] = 4;
    t->data = inv_freq;
    t = &md.t[md.n++];
    snprintf(t->name, sizeof t->name, "lm_head.weight");
    t->n_dims = 2;
    t->shape[0] = o.vocab;
    t->shape[1] = o.hidden;
    t->data = md.w->embed;
    write_out(&md);
    core_model_t *m = expect_load(&md);
    assert_ptr_equal(m->lm_head, &m->embed);
    assert_int_equal(m->owns_lm_head, 0);
    core_model_free(m);
    done(&md);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_tensor),
        cmocka_unit_test(test_missing_lm_head),
        cmocka_unit_test(test_wrong_shape_matrix),
        cmocka_unit_test(test_wrong_shape_transposed),
        cmocka_unit_test(test_wrong_shape_vector),
        cmocka_unit_test(test_unexpected_tensor),
        cmocka_unit_test(test_unannounced_bias),
        cmocka_unit_test(test_non_finite_matrix),
        cmocka_unit_test(test_non_finite_vector_bf16),
        cmocka_unit_test(test_truncated_data),
        cmocka_unit_test(test_config_unknown_key),
        cmocka_unit_test(test_config_unsupported_arch),
        cmocka_unit_test(test_config_rope_yarn),
        cmocka_unit_test(test_config_gelu),
        cmocka_unit_test(test_config_missing),
        cmocka_unit_test(test_sharded_matches_single),
        cmocka_unit_test(test_sharded_missing_shard),
        cmocka_unit_test(test_sliding_window),
        cmocka_unit_test(test_generation_config_eos),
        cmocka_unit_test(test_ignorable_tensors),
        cmocka_unit_test(test_config_gqa_group_too_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
