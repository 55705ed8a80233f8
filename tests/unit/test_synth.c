/* test_synth.c: unit tests of tools/ (the generators behind `loramux synth-model`).
 *
 * The streaming model writer (synth_model_write_streaming, used by the CLI so a TinyLlama shape
 * does not need ~9 GB of memory) must write exactly the bytes of the in-memory writer the other
 * unit tests compare against; and the deferred tensors of synth_st_writer must land in the file
 * like ordinary ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "synth_model.h"
#include "synth_st_writer.h"
#include "test_util.h"

/* ---- helpers ---- */

/* Asserts that dir_a/name and dir_b/name exist and have the same bytes. */
static void assert_same_file(const char *dir_a, const char *dir_b, const char *name) {
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/%s", dir_a, name);
    snprintf(pb, sizeof pb, "%s/%s", dir_b, name);
    size_t la = 0, lb = 0;
    char *a = tu_read_file(pa, &la), *b = tu_read_file(pb, &lb);
    if (!a || !b || la != lb || memcmp(a, b, la) != 0)
        print_error("%s differs (%zu vs %zu bytes)\n", name, la, lb);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);
}

/* Writes o both ways and compares every file; the streamed model must also load. */
static void check_streaming_matches(const synth_model_opts_t *o) {
    char *eager = tu_mkdtemp(), *streamed = tu_mkdtemp();
    assert_non_null(eager);
    assert_non_null(streamed);
    assert_int_equal(synth_model_write(o, eager, NULL), 0);
    assert_int_equal(synth_model_write_streaming(o, streamed), 0);
    assert_same_file(eager, streamed, "config.json");
    if (o->n_shards <= 1) {
        assert_same_file(eager, streamed, "model.safetensors");
    } else {
        assert_same_file(eager, streamed, "model.safetensors.index.json");
        for (int s = 0; s < o->n_shards; s++) {
            char f[64];
            snprintf(f, sizeof f, "model-%05d-of-%05d.safetensors", s + 1, o->n_shards);
            assert_same_file(eager, streamed, f);
        }
    }
    llm_error_t err = {0};
    core_model_t *m = NULL;
    int rc = core_model_load(streamed, &m, &err);
    if (rc) print_error("%s\n", err.msg);
    assert_int_equal(rc, 0);
    core_model_free(m);
    tu_rm_rf(eager);
    tu_rm_rf(streamed);
    free(eager);
    free(streamed);
}

/* ---- streaming model writer ---- */

static void test_streaming_f32(void **state) {
    synth_model_opts_t o = synth_model_defaults();
    o.seed = 5;
    check_streaming_matches(&o);
}

static void test_streaming_bf16_tied(void **state) {
    synth_model_opts_t o = synth_model_defaults();
    o.dtype = CORE_DT_BF16;
    o.tie_embeddings = 1;
    o.seed = 6;
    check_streaming_matches(&o);
}

static void test_streaming_f16_qwen2_biases(void **state) {
    synth_model_opts_t o = synth_model_defaults();
    o.arch = "Qwen2ForCausalLM";
    o.dtype = CORE_DT_F16;
    o.w_scale = 0.5f;
    check_streaming_matches(&o);
}

static void test_streaming_sharded_attention_bias(void **state) {
    synth_model_opts_t o = synth_model_defaults();
    o.attention_bias = 1; /* q/k/v and o biases */
    o.n_shards = 3;
    o.n_layers = 3;
    check_streaming_matches(&o);
}

static void test_streaming_bad_opts(void **state) {
    synth_model_opts_t o = synth_model_defaults();
    o.n_kv_heads = 3; /* 4 heads are not a multiple of 3 */
    char *d = tu_mkdtemp();
    assert_non_null(d);
    assert_int_equal(synth_model_write_streaming(&o, d), -1);
    tu_rm_rf(d);
    free(d);
}

/* ---- deferred tensors of the safetensors writer ---- */

static int fill_iota(void *ctx, const char *name, void *dst, size_t n_bytes) {
    int *calls = ctx;
    (*calls)++;
    float *v = dst;
    for (size_t i = 0; i < n_bytes / 4; i++) v[i] = (float)i + (name[0] == 'b' ? 100.0f : 0.0f);
    return 0;
}

static int fill_fail(void *ctx, const char *name, void *dst, size_t n_bytes) {
    return LLM_EIO;
}

static void test_deferred_matches_plain(void **state) {
    char *d = tu_mkdtemp();
    assert_non_null(d);
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/a.safetensors", d);
    snprintf(pb, sizeof pb, "%s/b.safetensors", d);
    const int64_t sa[2] = {3, 4}, sb[1] = {5};
    float va[12], vb[5], vc[2] = {7.0f, 8.0f};
    for (int i = 0; i < 12; i++) va[i] = (float)i;
    for (int i = 0; i < 5; i++) vb[i] = (float)i + 100.0f;
    const int64_t sc[1] = {2};

    st_writer_t *w = stw_create();
    assert_non_null(w);
    int calls = 0;
    /* "b" and "a" deferred, "c" plain, "z" deferred and empty: written in name order */
    assert_int_equal(stw_add_deferred(w, "b", CORE_DT_F32, 1, sb, fill_iota, &calls), 0);
    assert_int_equal(stw_add(w, "c", CORE_DT_F32, 1, sc, vc), 0);
    assert_int_equal(stw_add_deferred(w, "a", CORE_DT_F32, 2, sa, fill_iota, &calls), 0);
    const int64_t sz[1] = {0};
    assert_int_equal(stw_add_deferred(w, "z", CORE_DT_F32, 1, sz, fill_iota, &calls), 0);
    assert_int_equal(stw_add_deferred(w, "a", CORE_DT_F32, 1, sb, fill_iota, &calls),
                     LLM_EINVAL); /* duplicate name */
    assert_int_equal(stw_add_deferred(w, "n", CORE_DT_F32, 1, sb, NULL, NULL), LLM_EINVAL);
    assert_int_equal(stw_write(w, pa), 0);
    assert_int_equal(calls, 2); /* not for the empty tensor */
    stw_free(w);

    w = stw_create();
    assert_non_null(w);
    assert_int_equal(stw_add(w, "a", CORE_DT_F32, 2, sa, va), 0);
    assert_int_equal(stw_add(w, "b", CORE_DT_F32, 1, sb, vb), 0);
    assert_int_equal(stw_add(w, "c", CORE_DT_F32, 1, sc, vc), 0);
    assert_int_equal(stw_add(w, "z", CORE_DT_F32, 1, sz, NULL), 0);
    assert_int_equal(stw_write(w, pb), 0);
    stw_free(w);

    size_t la = 0, lb = 0;
    char *a = tu_read_file(pa, &la), *b = tu_read_file(pb, &lb);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);
    tu_rm_rf(d);
    free(d);
}

static void test_deferred_fill_error(void **state) {
    char *d = tu_mkdtemp();
    assert_non_null(d);
    char p[4096];
    snprintf(p, sizeof p, "%s/x.safetensors", d);
    const int64_t s[1] = {4};
    st_writer_t *w = stw_create();
    assert_non_null(w);
    assert_int_equal(stw_add_deferred(w, "x", CORE_DT_BF16, 1, s, fill_fail, NULL), 0);
    assert_int_equal(stw_write(w, p), LLM_EIO);
    stw_free(w);
    tu_rm_rf(d);
    free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streaming_f32),
        cmocka_unit_test(test_streaming_bf16_tied),
        cmocka_unit_test(test_streaming_f16_qwen2_biases),
        cmocka_unit_test(test_streaming_sharded_attention_bias),
        cmocka_unit_test(test_streaming_bad_opts),
        cmocka_unit_test(test_deferred_matches_plain),
        cmocka_unit_test(test_deferred_fill_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
