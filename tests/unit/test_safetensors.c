/* test_safetensors.c: unit tests of core/safetensors.c (and of tools/synth_st_writer.c).
 *
 * Every test gets a fresh temporary directory (setup/teardown). Each refusal test checks the
 * code and that err.msg names the file and the reason, and that *out stays NULL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "synth_st_writer.h"
#include "test_util.h"

/* ---- helpers ---- */

static int setup(void **state) {
    char *dir = tu_mkdtemp();
    *state = dir;
    return dir ? 0 : -1;
}

static int teardown(void **state) {
    tu_rm_rf(*state);
    free(*state);
    return 0;
}

/* dir/name in a rotating set of static buffers (valid for the next 7 calls). */
static const char *in(void **state, const char *name) {
    static char bufs[8][4096];
    static int next;
    char *b = bufs[next++ & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", (const char *)*state, name);
    return b;
}

static void check_err(int rc, const llm_error_t *err, int code, const char *who,
                      const char *reason) {
    if (rc != code || !strstr(err->msg, who) || !strstr(err->msg, reason))
        print_error("rc=%d (%s), want %d (%s); msg: %s\n  want \"%s\" and \"%s\"\n", rc,
                    llm_err_name(rc), code, llm_err_name(code), err->msg, who, reason);
    assert_int_equal(rc, code);
    assert_non_null(strstr(err->msg, who));
    assert_non_null(strstr(err->msg, reason));
}

/* Opens path, expecting a refusal with code and reason (the message must also name the file). */
static void expect_refused(const char *path, int code, const char *reason) {
    core_st_t *st = (core_st_t *)&st; /* must be reset to NULL */
    llm_error_t err = {0};
    int rc = core_st_open(path, &st, &err);
    assert_null(st);
    const char *base = strrchr(path, '/');
    check_err(rc, &err, code, base ? base + 1 : path, reason);
}

static void expect_dir_refused(const char *dir, int code, const char *who, const char *reason) {
    core_st_t *st = (core_st_t *)&st;
    llm_error_t err = {0};
    int rc = core_st_open_dir(dir, &st, &err);
    assert_null(st);
    check_err(rc, &err, code, who, reason);
}

/* A raw file: header text as given, then data_len zero bytes. */
static const char *raw(void **state, const char *name, const char *header, size_t data_len) {
    const char *p = in(state, name);
    void *z = calloc(1, data_len ? data_len : 1);
    assert_non_null(z);
    assert_int_equal(stw_write_raw(p, header, z, data_len), 0);
    free(z);
    return p;
}

static core_st_t *open_ok(const char *path) {
    core_st_t *st = NULL;
    llm_error_t err = {0};
    int rc = core_st_open(path, &st, &err);
    if (rc) print_error("core_st_open(%s): %s\n", path, err.msg);
    assert_int_equal(rc, 0);
    assert_non_null(st);
    return st;
}

static core_st_t *open_dir_ok(const char *dir) {
    core_st_t *st = NULL;
    llm_error_t err = {0};
    int rc = core_st_open_dir(dir, &st, &err);
    if (rc) print_error("core_st_open_dir(%s): %s\n", dir, err.msg);
    assert_int_equal(rc, 0);
    assert_non_null(st);
    return st;
}

static void check_shape(const core_st_tensor_t *t, core_dtype_t dt, int n_dims,
                        const int64_t *shape) {
    assert_non_null(t);
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->n_dims, n_dims);
    int64_t n = 1;
    for (int i = 0; i < n_dims; i++) {
        assert_int_equal(t->shape[i], shape[i]);
        n *= shape[i];
    }
    assert_int_equal(t->n_elems, n);
    assert_int_equal(t->n_bytes, (size_t)n * core_dtype_size(dt));
}

static void write_one_f32(const char *path, const char *name, int64_t n) {
    st_writer_t *w = stw_create();
    assert_non_null(w);
    float *v = calloc((size_t)n, sizeof *v);
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++) v[i] = (float)i;
    assert_int_equal(stw_add(w, name, CORE_DT_F32, 1, &n, v), 0);
    assert_int_equal(stw_write(w, path), 0);
    free(v);
    stw_free(w);
}

/* Two shards: shard-1 holds a, b; shard-2 holds c. */
static void write_shards(void **state) {
    st_writer_t *w = stw_create();
    const int64_t s2[] = {2};
    const float a[] = {1, 2}, b[] = {3, 4}, c[] = {5, 6};
    assert_int_equal(stw_add(w, "a", CORE_DT_F32, 1, s2, a), 0);
    assert_int_equal(stw_add(w, "b", CORE_DT_F32, 1, s2, b), 0);
    assert_int_equal(stw_write(w, in(state, "shard-1.safetensors")), 0);
    stw_free(w);
    w = stw_create();
    assert_int_equal(stw_add_f32_as(w, "c", CORE_DT_BF16, 1, s2, c), 0);
    assert_int_equal(stw_write(w, in(state, "shard-2.safetensors")), 0);
    stw_free(w);
}

static void write_index(void **state, const char *weight_map) {
    char buf[2048];
    snprintf(buf, sizeof buf, "{\"metadata\": {\"total_size\": 12}, \"weight_map\": %s}",
             weight_map);
    assert_int_equal(
        tu_write_file(in(state, "model.safetensors.index.json"), buf, strlen(buf)), 0);
}

/* ---- round trips ---- */

static void test_round_trip(void **state) {
    const float f32[6] = {1.5f, -2.25f, 3.0e-8f, 1.0e30f, 0.0f, -7.0f};
    const float f16v[4] = {0.5f, -2.0f, 1024.0f, 3.140625f}; /* exact in f16 */
    const float bf16v[8] = {1.5f, -0.25f, 3.0f, 65536.0f, -1.0e-3f, 0, 7.0f, 1.0e20f};
    const uint16_t f16raw[3] = {0x3c00, 0xc000, 0x7bff}; /* 1, -2, 65504 */
    const float scalar = 42.0f;
    const int64_t s23[] = {2, 3}, s4[] = {4}, s222[] = {2, 2, 2}, s05[] = {0, 5}, s3[] = {3};
    const int64_t s8d[8] = {1, 1, 1, 1, 1, 1, 1, 1};

    st_writer_t *w = stw_create();
    assert_non_null(w);
    assert_int_equal(stw_set_meta(w, "format", "pt"), 0);
    assert_int_equal(stw_add_f32_as(w, "w.f32", CORE_DT_F32, 2, s23, f32), 0);
    assert_int_equal(stw_add_f32_as(w, "w.f16", CORE_DT_F16, 1, s4, f16v), 0);
    assert_int_equal(stw_add_f32_as(w, "w.bf16", CORE_DT_BF16, 3, s222, bf16v), 0);
    assert_int_equal(stw_add(w, "raw.f16", CORE_DT_F16, 1, s3, f16raw), 0);
    assert_int_equal(stw_add(w, "scalar", CORE_DT_F32, 0, NULL, &scalar), 0);
    assert_int_equal(stw_add(w, "empty", CORE_DT_F32, 2, s05, NULL), 0);
    assert_int_equal(stw_add(w, "eight\"dims\\", CORE_DT_BF16, 8, s8d, f16raw), 0);
    /* writer refusals */
    assert_int_equal(stw_add(w, "scalar", CORE_DT_F32, 0, NULL, &scalar), LLM_EINVAL);
    assert_int_equal(stw_add(w, "__metadata__", CORE_DT_F32, 0, NULL, &scalar), LLM_EINVAL);
    const int64_t neg[] = {-1};
    assert_int_equal(stw_add(w, "neg", CORE_DT_F32, 1, neg, f32), LLM_EINVAL);
    const char *p = in(state, "rt.safetensors");
    assert_int_equal(stw_write(w, p), 0);
    stw_free(w);

    /* header length is a multiple of 8 */
    size_t len = 0;
    unsigned char *bytes = (unsigned char *)tu_read_file(p, &len);
    assert_non_null(bytes);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | bytes[i];
    assert_int_equal(hlen % 8, 0);
    assert_true(8 + hlen <= len);
    free(bytes);

    core_st_t *st = open_ok(p);
    assert_int_equal(core_st_count(st), 7);
    /* core_st_at enumerates in name order */
    for (size_t i = 1; i < core_st_count(st); i++)
        assert_true(strcmp(core_st_at(st, i - 1)->name, core_st_at(st, i)->name) < 0);
    assert_null(core_st_at(st, 7));
    assert_null(core_st_find(st, "nope"));
    assert_null(core_st_find(st, "__metadata__"));

    const core_st_tensor_t *t = core_st_find(st, "w.f32");
    check_shape(t, CORE_DT_F32, 2, s23);
    assert_memory_equal(t->data, f32, sizeof f32);

    t = core_st_find(st, "w.f16");
    check_shape(t, CORE_DT_F16, 1, s4);
    float back[8];
    core_convert_to_f32(CORE_DT_F16, t->data, back, 4);
    assert_memory_equal(back, f16v, sizeof f16v);

    t = core_st_find(st, "w.bf16");
    check_shape(t, CORE_DT_BF16, 3, s222);
    core_convert_to_f32(CORE_DT_BF16, t->data, back, 8);
    for (int i = 0; i < 8; i++)
        assert_true(back[i] == core_bf16_to_f32(core_f32_to_bf16(bf16v[i])));
    assert_true(back[0] == 1.5f && back[1] == -0.25f && back[3] == 65536.0f);

    t = core_st_find(st, "raw.f16");
    check_shape(t, CORE_DT_F16, 1, s3);
    assert_memory_equal(t->data, f16raw, sizeof f16raw);

    t = core_st_find(st, "scalar");
    check_shape(t, CORE_DT_F32, 0, NULL);
    assert_int_equal(t->n_elems, 1);
    assert_memory_equal(t->data, &scalar, 4);

    t = core_st_find(st, "empty");
    check_shape(t, CORE_DT_F32, 2, s05);
    assert_int_equal(t->n_elems, 0);
    assert_int_equal(t->n_bytes, 0);

    t = core_st_find(st, "eight\"dims\\");
    check_shape(t, CORE_DT_BF16, 8, s8d);
    assert_memory_equal(t->data, f16raw, 2);
    core_st_free(st);
    core_st_free(NULL);
    assert_int_equal(core_st_count(NULL), 0);
}

/* A file with no tensors at all (header "{}") is valid. */
static void test_empty_header(void **state) {
    st_writer_t *w = stw_create();
    const char *p = in(state, "none.safetensors");
    assert_int_equal(stw_write(w, p), 0);
    stw_free(w);
    core_st_t *st = open_ok(p);
    assert_int_equal(core_st_count(st), 0);
    assert_null(core_st_find(st, "x"));
    core_st_free(st);
}

/* Holes between tensors, empty tensors inside others' ranges and unaligned offsets are fine. */
static void test_raw_accepted(void **state) {
    const char *p = raw(state, "ok.safetensors",
                        "{\"__metadata__\":{\"format\":\"pt\"},"
                        "\"b\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[10,12]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"e\":{\"dtype\":\"BF16\",\"shape\":[4,0],\"data_offsets\":[4,4]}}  \n",
                        16);
    core_st_t *st = open_ok(p);
    assert_int_equal(core_st_count(st), 3);
    assert_string_equal(core_st_at(st, 0)->name, "a");
    const core_st_tensor_t *a = core_st_find(st, "a"), *b = core_st_find(st, "b");
    assert_int_equal((const char *)b->data - (const char *)a->data, 10);
    core_st_free(st);
}

/* ---- the real fixture ---- */

static void test_stories260k(void **state) {
    (void)state;
    core_st_t *st = open_ok(tu_fixture_path("stories260K-hf/model.safetensors"));
    assert_int_equal(core_st_count(st), 47);
    const int64_t emb[] = {512, 64}, d64[] = {64};
    const core_st_tensor_t *t = core_st_find(st, "model.embed_tokens.weight");
    check_shape(t, CORE_DT_F32, 2, emb);
    float v[4];
    memcpy(v, t->data, sizeof v);
    assert_float_equal(v[0], -0.29129287600517273, 1e-7);
    assert_float_equal(v[1], 0.5617791414260864, 1e-7);
    memcpy(v, (const float *)t->data + 511 * 64 + 63, 4);
    assert_float_equal(v[0], -0.42190518975257874, 1e-7);
    check_shape(core_st_find(st, "model.norm.weight"), CORE_DT_F32, 1, d64);
    assert_non_null(core_st_find(st, "model.layers.4.mlp.down_proj.weight"));
    assert_null(core_st_find(st, "lm_head.weight"));
    size_t total = 0;
    for (size_t i = 0; i < core_st_count(st); i++) {
        assert_int_equal(core_st_at(st, i)->dtype, CORE_DT_F32);
        total += core_st_at(st, i)->n_bytes;
    }
    assert_int_equal(total, 1040128); /* the whole data section: no holes */
    core_st_free(st);

    st = open_dir_ok(tu_fixture_path("stories260K-hf"));
    assert_int_equal(core_st_count(st), 47);
    core_st_free(st);
}

/* ---- directories ---- */

static void test_dir_single(void **state) {
    write_one_f32(in(state, "model.safetensors"), "x", 3);
    write_index(state, "{\"ignored\": \"nope.safetensors\"}"); /* the single file wins */
    core_st_t *st = open_dir_ok(*state);
    assert_int_equal(core_st_count(st), 1);
    assert_non_null(core_st_find(st, "x"));
    core_st_free(st);
}

static void test_dir_sharded(void **state) {
    write_shards(state);
    write_index(state, "{\"a\": \"shard-1.safetensors\", \"c\": \"shard-2.safetensors\", "
                       "\"b\": \"shard-1.safetensors\"}");
    char dir_slash[4200];
    snprintf(dir_slash, sizeof dir_slash, "%s/", (const char *)*state);
    core_st_t *st = open_dir_ok(dir_slash);
    assert_int_equal(core_st_count(st), 3);
    const int64_t s2[] = {2};
    check_shape(core_st_find(st, "a"), CORE_DT_F32, 1, s2);
    check_shape(core_st_find(st, "c"), CORE_DT_BF16, 1, s2);
    float v[2];
    core_convert_to_f32(CORE_DT_F32, core_st_find(st, "b")->data, v, 2);
    assert_true(v[0] == 3 && v[1] == 4);
    core_convert_to_f32(CORE_DT_BF16, core_st_find(st, "c")->data, v, 2);
    assert_true(v[0] == 5 && v[1] == 6);
    core_st_free(st);
}

static void test_dir_missing(void **state) {
    const char *d = in(state, "no-such-model");
    expect_dir_refused(d, LLM_ENOTFOUND, "no-such-model", "does not exist");
}

static void test_dir_empty(void **state) {
    expect_dir_refused(*state, LLM_ENOTFOUND, (const char *)*state,
                       "no model.safetensors or model.safetensors.index.json");
}

static void test_index_missing_shard(void **state) {
    write_shards(state);
    write_index(state, "{\"a\": \"shard-1.safetensors\", \"z\": \"shard-9.safetensors\"}");
    expect_dir_refused(*state, LLM_ENOTFOUND, "model.safetensors.index.json",
                       "shard \"shard-9.safetensors\" does not exist");
}

static void test_index_tensor_absent(void **state) {
    write_shards(state);
    write_index(state, "{\"a\": \"shard-1.safetensors\", \"q\": \"shard-2.safetensors\"}");
    expect_dir_refused(*state, LLM_EFORMAT, "model.safetensors.index.json",
                       "tensor \"q\" is not in shard \"shard-2.safetensors\"");
}

static void test_index_wrong_shard(void **state) {
    write_shards(state);
    write_index(state, "{\"a\": \"shard-2.safetensors\", \"b\": \"shard-1.safetensors\", "
                       "\"c\": \"shard-2.safetensors\"}");
    expect_dir_refused(*state, LLM_EFORMAT, "model.safetensors.index.json",
                       "tensor \"a\" is listed in shard \"shard-2.safetensors\" but is in");
}

static void test_index_bad_shard_name(void **state) {
    write_shards(state);
    write_index(state, "{\"a\": \"../shard-1.safetensors\"}");
    expect_dir_refused(*state, LLM_EFORMAT, "index.json", "must be a plain file name");
    write_index(state, "{\"a\": \"sub/shard-1.safetensors\"}");
    expect_dir_refused(*state, LLM_EFORMAT, "index.json", "must be a plain file name");
    write_index(state, "{\"a\": 3}");
    expect_dir_refused(*state, LLM_EFORMAT, "index.json", "is not a string");
    write_index(state, "{}");
    expect_dir_refused(*state, LLM_EFORMAT, "index.json", "weight_map");
    assert_int_equal(tu_write_file(in(state, "model.safetensors.index.json"), "{\"w", 3), 0);
    expect_dir_refused(*state, LLM_EFORMAT, "index.json", "not valid JSON");
}

static void test_index_duplicate_across_shards(void **state) {
    write_shards(state);
    write_one_f32(in(state, "shard-3.safetensors"), "a", 2);
    write_index(state, "{\"a\": \"shard-1.safetensors\", \"c\": \"shard-2.safetensors\", "
                       "\"b\": \"shard-3.safetensors\"}");
    expect_dir_refused(*state, LLM_EFORMAT, "shard-3.safetensors", "tensor \"a\" is in both");
}

/* ---- refusals: truncation and header length ---- */

static void test_truncated_mid_data(void **state) {
    const char *p = in(state, "cut.safetensors");
    write_one_f32(p, "x.weight", 100);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(truncate(p, sb.st_size - 10), 0);
    expect_refused(p, LLM_EFORMAT, "tensor \"x.weight\": data_offsets [0, 400] exceed the data "
                                   "section (390 bytes)");
}

static void test_truncated_mid_header(void **state) {
    const char *p = in(state, "cut.safetensors");
    write_one_f32(p, "x.weight", 100);
    assert_int_equal(truncate(p, 20), 0);
    expect_refused(p, LLM_EFORMAT, "truncated: header length");
}

static void test_truncated_short(void **state) {
    const char *p = in(state, "tiny.safetensors");
    assert_int_equal(tu_write_file(p, "\x10\0\0\0\0", 5), 0);
    expect_refused(p, LLM_EFORMAT, "truncated: 5 bytes");
    assert_int_equal(tu_write_file(p, "", 0), 0);
    expect_refused(p, LLM_EFORMAT, "truncated: 0 bytes");
}

static void test_header_len_beyond_file(void **state) {
    const char *p = in(state, "long.safetensors");
    const unsigned char b[10] = {0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}'}; /* 1000 */
    assert_int_equal(tu_write_file(p, b, sizeof b), 0);
    expect_refused(p, LLM_EFORMAT, "header length 1000 exceeds the 2 bytes");
    const unsigned char h[10] = {0, 0, 0, 0, 0, 0, 0, 0x40, '{', '}'}; /* 2^62 */
    assert_int_equal(tu_write_file(p, h, sizeof h), 0);
    expect_refused(p, LLM_EFORMAT, "exceeds the 100000000-byte limit");
    const unsigned char z[10] = {1, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    assert_int_equal(tu_write_file(p, z, sizeof z), 0);
    expect_refused(p, LLM_EFORMAT, "header length 1 is too small");
}

static void test_not_a_file(void **state) {
    expect_refused(in(state, "absent.safetensors"), -ENOENT, "cannot open");
    expect_refused(*state, LLM_EFORMAT, "not a regular file");
}

/* ---- refusals: header content ---- */

static void test_malformed_json(void **state) {
    expect_refused(raw(state, "bad.safetensors", "{\"x\": {\"dtype\": \"F32\", ", 0), LLM_EFORMAT,
                   "header is not valid JSON");
    expect_refused(raw(state, "bad.safetensors", "[1, 2]", 0), LLM_EFORMAT,
                   "header is not a JSON object");
    expect_refused(raw(state, "bad.safetensors", "{} {}", 0), LLM_EFORMAT, "trailing bytes");
    expect_refused(raw(state, "bad.safetensors", "{\"x\": 1}", 0), LLM_EFORMAT,
                   "tensor \"x\": entry is not an object");
    expect_refused(raw(state, "bad.safetensors",
                       "{\"__metadata__\": {\"format\": 1}}", 0), LLM_EFORMAT,
                   "__metadata__ value \"format\" is not a string");
    expect_refused(raw(state, "bad.safetensors",
                       "{\"x\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4), LLM_EFORMAT,
                   "tensor \"x\": data_offsets must be");
    expect_refused(raw(state, "bad.safetensors",
                       "{\"x\": {\"dtype\": 5, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4),
                   LLM_EFORMAT, "tensor \"x\": missing or non-string dtype");
    expect_refused(raw(state, "bad.safetensors",
                       "{\"x\": {\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}}", 4),
                   LLM_EFORMAT, "tensor \"x\": missing or non-array shape");
}

static void test_offsets_beyond_data(void **state) {
    expect_refused(raw(state, "model.safetensors",
                       "{\"x.weight\": {\"dtype\": \"F32\", \"shape\": [100], "
                       "\"data_offsets\": [0, 400]}}", 256),
                   LLM_EFORMAT,
                   "tensor \"x.weight\": data_offsets [0, 400] exceed the data section "
                   "(256 bytes)");
}

static void test_offsets_bad_values(void **state) {
    expect_refused(raw(state, "o.safetensors",
                       "{\"x\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 4]}}",
                       8), LLM_EFORMAT, "tensor \"x\": data_offsets [8, 4] have begin > end");
    expect_refused(raw(state, "o.safetensors",
                       "{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0.5, 4]}}",
                       8), LLM_EFORMAT, "tensor \"x\": data_offsets are not integers");
    expect_refused(raw(state, "o.safetensors",
                       "{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}",
                       8), LLM_EFORMAT, "tensor \"x\": data_offsets are not integers");
    expect_refused(raw(state, "o.safetensors",
                       "{\"x\": {\"dtype\": \"F32\", \"shape\": [1],"
                       " \"data_offsets\": [0, 1e300]}}",
                       8), LLM_EFORMAT, "tensor \"x\": data_offsets are not integers");
}

static void test_overlapping_offsets(void **state) {
    expect_refused(raw(state, "ov.safetensors",
                       "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                       " \"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [2, 2]},"
                       " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]},"
                       " \"c\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
                       12),
                   LLM_EFORMAT, "tensor \"c\": data_offsets [4, 8] overlap tensor \"a\" [0, 8]");
    /* a range nested inside a longer one, after a short one that ends earlier */
    expect_refused(raw(state, "ov.safetensors",
                       "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                       " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]},"
                       " \"c\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [12, 16]}}",
                       16),
                   LLM_EFORMAT, "overlap tensor \"a\"");
}

static void test_size_mismatch(void **state) {
    expect_refused(raw(state, "sz.safetensors",
                       "{\"x\": {\"dtype\": \"F32\", \"shape\": [2, 3],"
                       " \"data_offsets\": [0, 20]}}",
                       24), LLM_EFORMAT,
                   "tensor \"x\": shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] "
                   "hold 20");
    expect_refused(raw(state, "sz.safetensors",
                       "{\"x\": {\"dtype\": \"BF16\", \"shape\": [], \"data_offsets\": [0, 4]}}",
                       4), LLM_EFORMAT, "shape [] of BF16 needs 2 bytes");
    /* 2^31 * 2^31 * 2^31 elements overflow int64; 2^31 * 2^31 F32 overflow the byte count */
    expect_refused(raw(state, "sz.safetensors",
                       "{\"x\": {\"dtype\": \"F32\", \"shape\": [2147483648, 2147483648, "
                       "2147483648], \"data_offsets\": [0, 4]}}", 4),
                   LLM_EFORMAT, "element count of shape [2147483648, 2147483648, 2147483648] "
                                "overflows");
    expect_refused(raw(state, "sz.safetensors",
                       "{\"x\": {\"dtype\": \"F32\", \"shape\": [2147483648, 2147483648], "
                       "\"data_offsets\": [0, 4]}}", 4),
                   LLM_EFORMAT, "is too large for data_offsets [0, 4]");
    /* a zero dimension makes huge ones harmless */
    core_st_t *st = open_ok(raw(state, "sz.safetensors",
                                "{\"x\": {\"dtype\": \"F32\", \"shape\": [4294967296, "
                                "4294967296, 0], \"data_offsets\": [0, 0]}}", 0));
    assert_int_equal(core_st_find(st, "x")->n_elems, 0);
    core_st_free(st);
}

static void test_unsupported_dtype_i8(void **state) {
    expect_refused(raw(state, "i8.safetensors",
                       "{\"q.weight\": {\"dtype\": \"I8\", \"shape\": [4],"
                       " \"data_offsets\": [0, 4]}}",
                       4), LLM_EUNSUPPORTED,
                   "tensor \"q.weight\": dtype \"I8\" is not supported");
}

static void test_unsupported_dtype_f64(void **state) {
    expect_refused(raw(state, "f64.safetensors",
                       "{\"d\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]}}",
                       8), LLM_EUNSUPPORTED, "tensor \"d\": dtype \"F64\" is not supported");
    expect_refused(raw(state, "f64.safetensors",
                       "{\"d\": {\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 8]}}",
                       8), LLM_EFORMAT, "tensor \"d\": unknown dtype \"F33\"");
}

static void test_negative_dimension(void **state) {
    expect_refused(raw(state, "neg.safetensors",
                       "{\"n\": {\"dtype\": \"F32\", \"shape\": [-1, 2],"
                       " \"data_offsets\": [0, 8]}}",
                       8), LLM_EFORMAT, "tensor \"n\": negative dimension -1");
    expect_refused(raw(state, "neg.safetensors",
                       "{\"n\": {\"dtype\": \"F32\", \"shape\": [\"2\"],"
                       " \"data_offsets\": [0, 8]}}",
                       8), LLM_EFORMAT, "tensor \"n\": shape dimension 0 is not an integer");
}

static void test_too_many_dims(void **state) {
    expect_refused(raw(state, "dims.safetensors",
                       "{\"n\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], "
                       "\"data_offsets\": [0, 4]}}", 4),
                   LLM_EUNSUPPORTED, "tensor \"n\": 9 dimensions, at most 8");
}

static void test_duplicate_name(void **state) {
    expect_refused(raw(state, "dup.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                       " \"v\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]},"
                       " \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
                       12), LLM_EFORMAT, "tensor \"w\": duplicate tensor name");
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_round_trip),
        T(test_empty_header),
        T(test_raw_accepted),
        T(test_stories260k),
        T(test_dir_single),
        T(test_dir_sharded),
        T(test_dir_missing),
        T(test_dir_empty),
        T(test_index_missing_shard),
        T(test_index_tensor_absent),
        T(test_index_wrong_shard),
        T(test_index_bad_shard_name),
        T(test_index_duplicate_across_shards),
        T(test_truncated_mid_data),
        T(test_truncated_mid_header),
        T(test_truncated_short),
        T(test_header_len_beyond_file),
        T(test_not_a_file),
        T(test_malformed_json),
        T(test_offsets_beyond_data),
        T(test_offsets_bad_values),
        T(test_overlapping_offsets),
        T(test_size_mismatch),
        T(test_unsupported_dtype_i8),
        T(test_unsupported_dtype_f64),
        T(test_negative_dimension),
        T(test_too_many_dims),
        T(test_duplicate_name),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
