/* test_store.c: unit tests of server/srv_store.c (the adapter registry on disk).
 *
 * Versions are checked against a second implementation of the canonical hash written here
 * with nettle directly, and once against a value computed with Python's hashlib. Crash
 * safety is tested twice: deterministically (a forked child _exit()s at each crash point of a
 * commit) and at random (a child uploading, moving, pinning and deleting names in a loop is
 * SIGKILLed at random moments; a journal it appends to before and after each operation tells
 * the parent which states are acceptable). The 10,000-name test prints the open time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <nettle/sha2.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "srv_store.h"
#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* ---- helpers ---- */

typedef struct {
    char *dir;       /* the test's temporary directory */
    char root[4200]; /* dir/store */
} fx_t;

static int setup(void **state) {
    fx_t *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = tu_mkdtemp())) return -1;
    snprintf(f->root, sizeof f->root, "%s/store", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx_t *f = *state;
    tu_rm_rf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* The canonical hash, independently: sha256(le64(|config|) || config || weights). */
static void ref_version(const void *cfg, size_t cn, const void *w, size_t wn, char *out) {
    struct sha256_ctx c;
    uint8_t le[8], d[SHA256_DIGEST_SIZE];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)cn >> (8 * i));
    sha256_init(&c);
    sha256_update(&c, 8, le);
    sha256_update(&c, cn, cfg);
    sha256_update(&c, wn, w);
    sha256_digest(&c, sizeof d, d);
    strcpy(out, "sha256:");
    for (int i = 0; i < 32; i++) sprintf(out + 7 + 2 * i, "%02x", d[i]);
}

static srv_store_t *open_store(const char *root, int64_t max) {
    srv_store_t *s = NULL;
    llm_error_t err = {0};
    int rc = srv_store_open(root, max, &s, &err);
    if (rc) fprintf(stderr, "srv_store_open: %s\n", err.msg);
    assert_int_equal(rc, 0);
    return s;
}

static int upload(srv_store_t *s, const char *name, const void *cfg, size_t cn, const void *w,
                  size_t wn, srv_store_desc_t *d, int *created) {
    llm_error_t err = {0};
    srv_store_upload_t *up = srv_store_begin(s, &err);
    assert_non_null(up);
    int rc = srv_store_write(up, SRV_STORE_CONFIG, cfg, cn);
    if (!rc) rc = srv_store_write(up, SRV_STORE_WEIGHTS, w, wn);
    if (rc) {
        srv_store_abort(up);
        return rc;
    }
    return srv_store_commit(up, name, d, created, &err);
}

static int upload_str(srv_store_t *s, const char *name, const char *cfg, const char *w,
                      srv_store_desc_t *d, int *created) {
    return upload(s, name, cfg, strlen(cfg), w, strlen(w), d, created);
}

/* Number of entries in dir (without . and ..); -1 if it cannot be read. */
static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(d);
    return n;
}

static int count_sub(const fx_t *f, const char *sub) {
    char p[4300];
    snprintf(p, sizeof p, "%s/%s", f->root, sub);
    return count_entries(p);
}

static int blob_dir_exists(const fx_t *f, const char *version) {
    char p[4400];
    struct stat st;
    snprintf(p, sizeof p, "%s/blobs/%s", f->root, version + 7);
    return stat(p, &st) == 0;
}

/* Reads a stored version's files back and checks that they hash to it. */
static void check_blob_hash(srv_store_t *s, const char *version) {
    char cp[4400], wp[4400], got[80];
    assert_int_equal(srv_store_paths(s, version, cp, wp, sizeof cp), 0);
    size_t cn = 0, wn = 0;
    char *c = tu_read_file(cp, &cn), *w = tu_read_file(wp, &wn);
    assert_non_null(c);
    assert_non_null(w);
    ref_version(c, cn, w, wn, got);
    assert_string_equal(got, version);
    free(c);
    free(w);
    llm_error_t err = {0};
    assert_int_equal(srv_store_verify(s, version, &err), 0);
}

static uint64_t rng_next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* ---- versions and uploads ---- */

static void test_golden_version(void **state) {
    fx_t *f = *state;
    /* Expected value from Python: hashlib.sha256(struct.pack("<Q", len(c)) + c + w). */
    const char cfg[] = "{\"peft_type\": \"LORA\", \"r\": 8}";
    const char w[] = "\x08\x00\x00\x00\x00\x00\x00\x00{}      ";
    const char *want = "sha256:d6b01318345b00c83a5a451746fbefc1b06b0685555f7951eb2ac680ae2a4d8a";
    char ref[80];
    ref_version(cfg, strlen(cfg), w, sizeof w - 1, ref);
    assert_string_equal(ref, want);
    srv_store_t *s = open_store(f->root, 0);
    srv_store_desc_t d;
    assert_int_equal(upload(s, "golden", cfg, strlen(cfg), w, sizeof w - 1, &d, NULL), 0);
    assert_string_equal(d.version, want);
    srv_store_free(s);
}

static void test_roundtrip(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    llm_error_t err = {0};
    const char *cfg = "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8}";
    char w[5000];
    for (size_t i = 0; i < sizeof w; i++) w[i] = (char)(i * 7 + 3);
    time_t t0 = time(NULL);

    srv_store_upload_t *up = srv_store_begin(s, &err);
    assert_non_null(up);
    assert_int_equal(count_sub(f, "tmp"), 1);
    /* pieces of odd sizes, as an HTTP body arrives */
    assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, cfg, 10), 0);
    assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, cfg + 10, strlen(cfg) - 10), 0);
    for (size_t off = 0; off < sizeof w; off += 777) {
        size_t k = sizeof w - off < 777 ? sizeof w - off : 777;
        assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, w + off, k), 0);
    }
    assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, w, 0), 0);
    assert_int_equal(srv_store_write(up, 7, w, 1), LLM_EINVAL);
    assert_int_equal(srv_store_upload_bytes(up, SRV_STORE_CONFIG), (int64_t)strlen(cfg));
    assert_int_equal(srv_store_upload_bytes(up, SRV_STORE_WEIGHTS), (int64_t)sizeof w);
    assert_null(srv_store_upload_path(up, 2));
    /* the caller validates these before committing */
    size_t n = 0;
    char *got = tu_read_file(srv_store_upload_path(up, SRV_STORE_CONFIG), &n);
    assert_non_null(got);
    assert_int_equal(n, strlen(cfg));
    assert_memory_equal(got, cfg, n);
    free(got);
    got = tu_read_file(srv_store_upload_path(up, SRV_STORE_WEIGHTS), &n);
    assert_non_null(got);
    assert_int_equal(n, sizeof w);
    assert_memory_equal(got, w, n);
    free(got);

    srv_store_desc_t d;
    int created = -1;
    assert_int_equal(srv_store_commit(up, "sql-lora", &d, &created, &err), 0);
    assert_int_equal(created, 1);
    char want[80];
    ref_version(cfg, strlen(cfg), w, sizeof w, want);
    assert_string_equal(d.version, want);
    assert_string_equal(d.name, "sql-lora");
    assert_int_equal(d.config_bytes, (int64_t)strlen(cfg));
    assert_int_equal(d.weights_bytes, (int64_t)sizeof w);
    assert_int_equal(d.bytes, (int64_t)(strlen(cfg) + sizeof w));
    assert_true(d.created >= t0 && d.created <= time(NULL));
    assert_int_equal(d.pinned, 0);
    assert_int_equal(count_sub(f, "tmp"), 0);

    srv_store_desc_t g;
    assert_int_equal(srv_store_get(s, "sql-lora", &g), 0);
    assert_memory_equal(&g, &d, sizeof g);
    assert_int_equal(srv_store_get(s, "other", &g), LLM_ENOTFOUND);
    assert_int_equal(srv_store_get_version(s, d.version, &g), 0);
    assert_string_equal(g.name, "");
    assert_int_equal(g.bytes, d.bytes);
    check_blob_hash(s, d.version);

    char cp[4400], wp[4400];
    assert_int_equal(srv_store_paths(s, d.version, cp, wp, sizeof cp), 0);
    assert_non_null(strstr(cp, "/blobs/"));
    assert_non_null(strstr(cp, "adapter_config.json"));
    assert_non_null(strstr(wp, "adapter_model.safetensors"));
    assert_int_equal(srv_store_paths(s, d.version, cp, wp, 20), -ENAMETOOLONG);
    assert_int_equal(srv_store_paths(s, "sha256:00", cp, wp, sizeof cp), LLM_EINVAL);

    srv_store_stats_t st;
    srv_store_stats(s, &st);
    assert_int_equal(st.names, 1);
    assert_int_equal(st.blobs, 1);
    assert_int_equal(st.blob_bytes, d.bytes);
    assert_int_equal(st.holds, 0);
    srv_store_free(s);
}

/* The parts may come in any order; the version does not depend on it. */
static void test_part_order(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    llm_error_t err = {0};
    const char *cfg = "{\"r\": 2}", *w = "weights-bytes-0123456789";
    char want[80];
    ref_version(cfg, strlen(cfg), w, strlen(w), want);
    for (int order = 0; order < 3; order++) {
        srv_store_upload_t *up = srv_store_begin(s, &err);
        assert_non_null(up);
        if (order == 0) { /* weights first */
            assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, w, strlen(w)), 0);
            assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, cfg, strlen(cfg)), 0);
        } else if (order == 1) { /* interleaved */
            assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, cfg, 3), 0);
            assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, w, 5), 0);
            assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, cfg + 3, strlen(cfg) - 3), 0);
            assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, w + 5, strlen(w) - 5), 0);
        } else { /* usual */
            assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, cfg, strlen(cfg)), 0);
            assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, w, strlen(w)), 0);
        }
        char name[16];
        snprintf(name, sizeof name, "order%d", order);
        srv_store_desc_t d;
        assert_int_equal(srv_store_commit(up, name, &d, NULL, &err), 0);
        assert_string_equal(d.version, want);
    }
    srv_store_stats_t st;
    srv_store_stats(s, &st);
    assert_int_equal(st.names, 3);
    assert_int_equal(st.blobs, 1); /* one content, one blob */
    assert_int_equal(count_sub(f, "blobs"), 1);
    srv_store_free(s);
}

static void test_idempotent_reupload(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    srv_store_desc_t d1, d2;
    int created = -1;
    assert_int_equal(upload_str(s, "a", "{\"r\":1}", "WWWW", &d1, &created), 0);
    assert_int_equal(created, 1);
    sleep(1); /* so a rewritten created time would show */
    assert_int_equal(upload_str(s, "a", "{\"r\":1}", "WWWW", &d2, &created), 0);
    assert_int_equal(created, 0);
    assert_string_equal(d2.version, d1.version);
    assert_int_equal(d2.created, d1.created);
    assert_int_equal(count_sub(f, "tmp"), 0);
    assert_int_equal(count_sub(f, "blobs"), 1);
    assert_int_equal(count_sub(f, "names"), 1);
    srv_store_free(s);
}

static void test_new_version_moves_name(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    srv_store_desc_t d1, d2, d3, g;
    int created = -1;
    assert_int_equal(upload_str(s, "a", "{\"r\":1}", "v1", &d1, &created), 0);
    assert_int_equal(upload_str(s, "a", "{\"r\":1}", "v2", &d2, &created), 0);
    assert_int_equal(created, 1);
    assert_string_not_equal(d1.version, d2.version);
    assert_int_equal(srv_store_get(s, "a", &g), 0);
    assert_string_equal(g.version, d2.version);
    /* nothing refers to v1 any more: its blob is gone */
    assert_false(blob_dir_exists(f, d1.version));
    assert_true(blob_dir_exists(f, d2.version));
    assert_int_equal(srv_store_get_version(s, d1.version, &g), LLM_ENOTFOUND);
    /* back to v1 under a second name while a keeps v2; then a moves to v1 too */
    assert_int_equal(upload_str(s, "b", "{\"r\":1}", "v1", &d3, &created), 0);
    assert_string_equal(d3.version, d1.version);
    assert_int_equal(upload_str(s, "a", "{\"r\":1}", "v1", &d3, &created), 0);
    assert_int_equal(created, 1);
    assert_int_equal(count_sub(f, "blobs"), 1);
    srv_store_stats_t st;
    srv_store_stats(s, &st);
    assert_int_equal(st.blobs, 1);
    assert_int_equal(st.names, 2);
    srv_store_free(s);
}

/* A request that resolved a name keeps its version's files while the name moves on. */
static void test_hold_keeps_version(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    srv_store_desc_t d1, d2, held;
    assert_int_equal(upload_str(s, "a", "{}", "old", &d1, NULL), 0);
    assert_int_equal(srv_store_acquire(s, "a", &held), 0);
    assert_string_equal(held.version, d1.version);
    assert_int_equal(upload_str(s, "a", "{}", "new", &d2, NULL), 0);
    assert_true(blob_dir_exists(f, d1.version));
    check_blob_hash(s, held.version);
    /* a second hold, and deleting the name, still keep it */
    assert_int_equal(srv_store_blob_hold(s, held.version), 0);
    llm_error_t err = {0};
    assert_int_equal(srv_store_delete(s, "a", 0, &err), 0);
    assert_false(blob_dir_exists(f, d2.version));
    srv_store_blob_release(s, held.version);
    assert_true(blob_dir_exists(f, d1.version));
    srv_store_stats_t st;
    srv_store_stats(s, &st);
    assert_int_equal(st.holds, 1);
    srv_store_blob_release(s, held.version);
    assert_false(blob_dir_exists(f, d1.version));
    assert_int_equal(count_sub(f, "blobs"), 0);
    assert_int_equal(count_sub(f, "tmp"), 0);
    assert_int_equal(srv_store_blob_hold(s, d1.version), LLM_ENOTFOUND);
    assert_int_equal(srv_store_acquire(s, "a", &held), LLM_ENOTFOUND);
    srv_store_free(s);
}

/* A refused adapter leaves nothing behind. */
static void test_abort_and_refusals_leave_nothing(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    llm_error_t err = {0};
    srv_store_upload_t *up = srv_store_begin(s, &err);
    assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, "{}", 2), 0);
    assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, "xx", 2), 0);
    assert_int_equal(count_sub(f, "tmp"), 1);
    srv_store_abort(up);
    srv_store_abort(NULL);
    assert_int_equal(count_sub(f, "tmp"), 0);

    /* bad name at commit */
    up = srv_store_begin(s, &err);
    assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, "{}", 2), 0);
    assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, "xx", 2), 0);
    assert_int_equal(srv_store_commit(up, "../escape", NULL, NULL, &err), LLM_EINVAL);
    /* a missing part */
    up = srv_store_begin(s, &err);
    assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, "{}", 2), 0);
    assert_int_equal(srv_store_commit(up, "a", NULL, NULL, &err), LLM_EINVAL);
    assert_non_null(strstr(err.msg, "adapter_model.safetensors"));
    up = srv_store_begin(s, &err);
    assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, "xx", 2), 0);
    assert_int_equal(srv_store_commit(up, "a", NULL, NULL, &err), LLM_EINVAL);
    assert_non_null(strstr(err.msg, "adapter_config.json"));

    assert_int_equal(count_sub(f, "tmp"), 0);
    assert_int_equal(count_sub(f, "blobs"), 0);
    assert_int_equal(count_sub(f, "names"), 0);
    char p[4300];
    snprintf(p, sizeof p, "%s/escape", f->dir);
    assert_int_equal(access(p, F_OK), -1);
    srv_store_free(s);
}

static void test_max_size(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 100);
    llm_error_t err = {0};
    char buf[200];
    memset(buf, 'x', sizeof buf);
    srv_store_upload_t *up = srv_store_begin(s, &err);
    assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, buf, 60), 0);
    assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, buf, 40), 0); /* exactly 100 */
    assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, buf, 1), LLM_ERANGE);
    assert_int_equal(srv_store_upload_bytes(up, SRV_STORE_WEIGHTS), 40); /* nothing written */
    assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, buf, 0), LLM_ERANGE); /* sticky */
    assert_int_equal(srv_store_commit(up, "big", NULL, NULL, &err), LLM_ERANGE);
    assert_non_null(strstr(err.msg, "100 bytes"));
    up = srv_store_begin(s, &err);
    assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, buf, 101), LLM_ERANGE);
    srv_store_abort(up);
    assert_int_equal(count_sub(f, "tmp"), 0);
    assert_int_equal(count_sub(f, "blobs"), 0);
    /* exactly the limit is accepted */
    assert_int_equal(upload(s, "fits", buf, 50, buf, 50, NULL, NULL), 0);
    srv_store_free(s);
}

static void test_name_validation(void **state) {
    fx_t *f = *state;
    llm_error_t err = {0};
    char longname[130];
    memset(longname, 'a', sizeof longname);
    longname[101] = '\0';
    const char *bad[] = {"",     "../x", "a/b",   ".hidden", "..",  ".",        "a..b",
                         "a b",  "x\ny", "a\\b",  "é",       "a:b", "name?x=1", longname};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = '\0';
        assert_int_equal(srv_store_check_name(bad[i], &err), LLM_EINVAL);
        assert_true(strlen(err.msg) > 10);
    }
    assert_int_equal(srv_store_check_name(NULL, &err), LLM_EINVAL);
    assert_int_equal(srv_store_check_name("../x", &err), LLM_EINVAL);
    assert_non_null(strstr(err.msg, "'.'"));
    assert_int_equal(srv_store_check_name("a/b", &err), LLM_EINVAL);
    assert_non_null(strstr(err.msg, "'/'"));
    longname[100] = '\0';
    const char *good[] = {"a", "sql-lora", "Qwen2.5_lora-v1.2", "-dash", "x.y.z", longname};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_int_equal(srv_store_check_name(good[i], &err), 0);

    srv_store_t *s = open_store(f->root, 0);
    srv_store_desc_t d;
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(upload_str(s, bad[i], "{}", "w", NULL, NULL), LLM_EINVAL);
        assert_int_equal(srv_store_get(s, bad[i], &d), LLM_EINVAL);
        assert_int_equal(srv_store_delete(s, bad[i], 0, &err), LLM_EINVAL);
        assert_int_equal(srv_store_pin(s, bad[i], 1, &err), LLM_EINVAL);
    }
    assert_int_equal(upload_str(s, longname, "{}", "w", &d, NULL), 0);
    assert_string_equal(d.name, longname);
    assert_int_equal(count_sub(f, "names"), 1);
    assert_int_equal(count_entries(f->dir), 1); /* nothing escaped the root */

    assert_int_equal(srv_store_check_version("sha256:abc", &err), LLM_EINVAL);
    assert_int_equal(srv_store_check_version(d.version, &err), 0);
    char upper[80];
    strcpy(upper, d.version);
    for (char *p = upper + 7; *p; p++)
        if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 32);
    if (strcmp(upper, d.version) != 0)
        assert_int_equal(srv_store_check_version(upper, &err), LLM_EINVAL);
    srv_store_free(s);
}

static void test_delete_then_list(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    llm_error_t err = {0};
    srv_store_desc_t da, db, dc, out[8];
    assert_int_equal(upload_str(s, "c", "{}", "cc", &dc, NULL), 0);
    assert_int_equal(upload_str(s, "a", "{}", "aa", &da, NULL), 0);
    assert_int_equal(upload_str(s, "b", "{}", "bb", &db, NULL), 0);
    assert_int_equal(srv_store_delete(s, "b", 0, &err), 0);
    assert_false(blob_dir_exists(f, db.version));
    size_t n = 0, total = 0;
    assert_int_equal(srv_store_list(s, NULL, 0, 8, out, &n, &total), 0);
    assert_int_equal(n, 2);
    assert_int_equal(total, 2);
    assert_string_equal(out[0].name, "a");
    assert_string_equal(out[0].version, da.version);
    assert_string_equal(out[1].name, "c");
    assert_int_equal(srv_store_delete(s, "b", 0, &err), LLM_ENOTFOUND);
    assert_non_null(strstr(err.msg, "\"b\""));
    /* pinned names can be protected */
    assert_int_equal(srv_store_pin(s, "a", 1, &err), 0);
    assert_int_equal(srv_store_delete(s, "a", SRV_STORE_DEL_UNPINNED, &err), -EBUSY);
    assert_int_equal(srv_store_delete(s, "a", 0, &err), 0);
    assert_int_equal(srv_store_delete(s, "c", SRV_STORE_DEL_UNPINNED, &err), 0);
    assert_int_equal(srv_store_list(s, NULL, 0, 8, out, &n, &total), 0);
    assert_int_equal(n, 0);
    assert_int_equal(total, 0);
    assert_int_equal(count_sub(f, "names"), 0);
    assert_int_equal(count_sub(f, "blobs"), 0);
    assert_int_equal(count_sub(f, "tmp"), 0);
    /* a deleted name can come back */
    assert_int_equal(upload_str(s, "b", "{}", "bb", &dc, NULL), 0);
    assert_string_equal(dc.version, db.version);
    srv_store_free(s);
    s = open_store(f->root, 0);
    assert_int_equal(srv_store_list(s, NULL, 0, 8, out, &n, &total), 0);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].name, "b");
    srv_store_free(s);
}

static void test_pin_persists(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    llm_error_t err = {0};
    srv_store_desc_t d;
    assert_int_equal(upload_str(s, "p", "{}", "v1", NULL, NULL), 0);
    assert_int_equal(upload_str(s, "q", "{}", "v1", NULL, NULL), 0);
    assert_int_equal(srv_store_pin(s, "p", 1, &err), 0);
    assert_int_equal(srv_store_pin(s, "p", 1, &err), 0); /* no-op */
    assert_int_equal(srv_store_pin(s, "nope", 1, &err), LLM_ENOTFOUND);
    assert_int_equal(srv_store_get(s, "p", &d), 0);
    assert_int_equal(d.pinned, 1);
    /* a new version keeps the pin */
    assert_int_equal(upload_str(s, "p", "{}", "v2", &d, NULL), 0);
    assert_int_equal(d.pinned, 1);
    srv_store_free(s);

    s = open_store(f->root, 0);
    assert_int_equal(srv_store_get(s, "p", &d), 0);
    assert_int_equal(d.pinned, 1);
    assert_int_equal(srv_store_get(s, "q", &d), 0);
    assert_int_equal(d.pinned, 0);
    assert_int_equal(srv_store_pin(s, "p", 0, &err), 0);
    srv_store_free(s);
    s = open_store(f->root, 0);
    assert_int_equal(srv_store_get(s, "p", &d), 0);
    assert_int_equal(d.pinned, 0);
    srv_store_free(s);
}

static void test_reopen_sees_everything(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    llm_error_t err = {0};
    srv_store_desc_t before[6], after[6];
    for (int i = 0; i < 6; i++) {
        char name[16], cfg[32], w[64];
        snprintf(name, sizeof name, "n%d", i);
        snprintf(cfg, sizeof cfg, "{\"r\": %d}", i % 3);
        snprintf(w, sizeof w, "weights-%d", i % 4); /* some names share a version */
        assert_int_equal(upload_str(s, name, cfg, w, &before[i], NULL), 0);
    }
    srv_store_upload_t *up = srv_store_begin(s, &err);
    assert_int_equal(srv_store_upload_set_meta(up, "{\"method\":\"lora\",\"rank\":8}"), 0);
    assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, "{}", 2), 0);
    assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, "m", 1), 0);
    srv_store_desc_t dm;
    assert_int_equal(srv_store_commit(up, "with-meta", &dm, NULL, &err), 0);
    assert_int_equal(srv_store_pin(s, "n2", 1, &err), 0);
    before[2].pinned = 1;
    srv_store_stats_t st1, st2;
    srv_store_stats(s, &st1);
    srv_store_free(s);

    s = open_store(f->root, 0);
    assert_string_equal(srv_store_open_notes(s), "");
    srv_store_stats(s, &st2);
    assert_int_equal(st2.names, st1.names);
    assert_int_equal(st2.blobs, st1.blobs);
    assert_int_equal(st2.blob_bytes, st1.blob_bytes);
    assert_int_equal(st2.dropped_names + st2.gc_blobs + st2.tmp_removed, 0);
    size_t n = 0, total = 0;
    assert_int_equal(srv_store_list(s, "n", 0, 6, after, &n, &total), 0);
    assert_int_equal(n, 6);
    assert_int_equal(total, 7);
    for (int i = 0; i < 6; i++) {
        assert_memory_equal(&after[i], &before[i], sizeof after[i]);
        check_blob_hash(s, after[i].version);
    }
    char *meta = NULL;
    assert_int_equal(srv_store_get_meta(s, dm.version, &meta, &err), 0);
    assert_string_equal(meta, "{\"method\":\"lora\",\"rank\":8}");
    free(meta);
    srv_store_free(s);
}

static void test_pagination(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    srv_store_set_fsync(s, 0);
    for (int i = 24; i >= 0; i--) { /* inserted in reverse order */
        char name[16], w[16];
        snprintf(name, sizeof name, "ad-%02d", i);
        snprintf(w, sizeof w, "w%d", i);
        assert_int_equal(upload_str(s, name, "{}", w, NULL, NULL), 0);
    }
    srv_store_desc_t page[10];
    size_t n = 0, total = 0, seen = 0;
    for (size_t off = 0; off < 30; off += 10) {
        assert_int_equal(srv_store_list(s, NULL, off, 10, page, &n, &total), 0);
        assert_int_equal(total, 25);
        assert_int_equal(n, off < 20 ? 10 : 5);
        for (size_t i = 0; i < n; i++) {
            char want[16];
            snprintf(want, sizeof want, "ad-%02zu", seen++);
            assert_string_equal(page[i].name, want);
        }
    }
    assert_int_equal(srv_store_list(s, NULL, 25, 10, page, &n, &total), 0);
    assert_int_equal(n, 0);
    assert_int_equal(srv_store_list(s, NULL, (size_t)-1, 10, page, &n, &total), 0);
    assert_int_equal(n, 0);
    /* cursor: after a name (present or not) */
    assert_int_equal(srv_store_list(s, "ad-09", 0, 3, page, &n, &total), 0);
    assert_int_equal(n, 3);
    assert_string_equal(page[0].name, "ad-10");
    assert_int_equal(srv_store_list(s, "ad-09x", 1, 3, page, &n, &total), 0);
    assert_string_equal(page[0].name, "ad-11");
    assert_int_equal(srv_store_list(s, "zzz", 0, 3, page, &n, &total), 0);
    assert_int_equal(n, 0);
    assert_int_equal(srv_store_list(s, "", 0, 1, page, &n, NULL), 0);
    assert_string_equal(page[0].name, "ad-00");
    srv_store_free(s);
}

static void test_meta(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    llm_error_t err = {0};
    srv_store_desc_t d;
    char *json = NULL;
    assert_int_equal(upload_str(s, "m", "{}", "w", &d, NULL), 0);
    assert_int_equal(srv_store_get_meta(s, d.version, &json, &err), LLM_ENOTFOUND);
    assert_null(json);
    assert_int_equal(srv_store_set_meta(s, d.version, "{\"rank\":4}", &err), 0);
    assert_int_equal(srv_store_get_meta(s, d.version, &json, &err), 0);
    assert_string_equal(json, "{\"rank\":4}");
    free(json);
    assert_int_equal(srv_store_set_meta(s, d.version, "{\"rank\":5}", &err), 0);
    assert_int_equal(srv_store_get_meta(s, d.version, &json, &err), 0);
    assert_string_equal(json, "{\"rank\":5}");
    free(json);
    /* a re-upload with meta keeps the existing meta.json */
    srv_store_upload_t *up = srv_store_begin(s, &err);
    assert_int_equal(srv_store_upload_set_meta(up, "{\"rank\":6}"), 0);
    assert_int_equal(srv_store_write(up, SRV_STORE_CONFIG, "{}", 2), 0);
    assert_int_equal(srv_store_write(up, SRV_STORE_WEIGHTS, "w", 1), 0);
    assert_int_equal(srv_store_commit(up, "m2", NULL, NULL, &err), 0);
    assert_int_equal(srv_store_get_meta(s, d.version, &json, &err), 0);
    assert_string_equal(json, "{\"rank\":5}");
    free(json);

    char *big = malloc(SRV_STORE_META_MAX + 2);
    memset(big, ' ', SRV_STORE_META_MAX + 1);
    big[SRV_STORE_META_MAX + 1] = '\0';
    assert_int_equal(srv_store_set_meta(s, d.version, big, &err), LLM_ERANGE);
    up = srv_store_begin(s, &err);
    assert_int_equal(srv_store_upload_set_meta(up, big), LLM_ERANGE);
    srv_store_abort(up);
    free(big);
    const char *missing = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    assert_int_equal(srv_store_set_meta(s, missing, "{}", &err), LLM_ENOTFOUND);
    assert_int_equal(srv_store_get_meta(s, missing, &json, &err), LLM_ENOTFOUND);
    assert_int_equal(srv_store_get_meta(s, "sha256:zz", &json, &err), LLM_EINVAL);
    assert_int_equal(count_sub(f, "tmp"), 0);
    srv_store_free(s);
}

static void test_open_repairs(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    srv_store_desc_t da, db;
    assert_int_equal(upload_str(s, "a", "{}", "aaaa", &da, NULL), 0);
    assert_int_equal(upload_str(s, "b", "{}", "bbbb", &db, NULL), 0);
    char cp[4400], wp[4400], p[4400];
    assert_int_equal(srv_store_paths(s, da.version, cp, wp, sizeof cp), 0);
    srv_store_free(s);

    /* damage that a crash cannot cause, but a disk or an operator can */
    assert_int_equal(truncate(wp, 2), 0);                               /* a's blob short */
    snprintf(p, sizeof p, "%s/names/garbage", f->root);
    assert_int_equal(tu_write_file(p, "not a version\n", 14), 0);       /* malformed name */
    snprintf(p, sizeof p, "%s/names/ghost", f->root);
    const char *gv = "sha256:1111111111111111111111111111111111111111111111111111111111111111\n";
    assert_int_equal(tu_write_file(p, gv, strlen(gv)), 0);              /* missing blob */
    snprintf(p, sizeof p, "%s/names/.editor-swap", f->root);
    assert_int_equal(tu_write_file(p, "x", 1), 0);                      /* not a name */
    /* what a crash can leave: staging dirs, temp files, unreferenced blobs */
    snprintf(p, sizeof p, "%s/tmp/up-abcdef", f->root);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/tmp/up-abcdef/adapter_model.safetensors", f->root);
    assert_int_equal(tu_write_file(p, "half", 4), 0);
    snprintf(p, sizeof p, "%s/tmp/name-7", f->root);
    assert_int_equal(tu_write_file(p, "x", 1), 0);
    snprintf(p, sizeof p, "%s/blobs/%064d", f->root, 2);
    assert_int_equal(mkdir(p, 0700), 0);

    s = open_store(f->root, 0);
    const char *notes = srv_store_open_notes(s);
    fprintf(stderr, "open notes:\n%s", notes);
    assert_non_null(strstr(notes, "name \"a\""));
    assert_non_null(strstr(notes, "name \"garbage\""));
    assert_non_null(strstr(notes, "name \"ghost\""));
    assert_non_null(strstr(notes, ".editor-swap"));
    srv_store_stats_t st;
    srv_store_stats(s, &st);
    assert_int_equal(st.dropped_names, 3);
    assert_int_equal(st.names, 1);
    assert_int_equal(st.blobs, 1);
    assert_int_equal(st.gc_blobs, 2); /* a's broken blob and the stray one */
    assert_int_equal(st.tmp_removed, 2);
    srv_store_desc_t g;
    assert_int_equal(srv_store_get(s, "a", &g), LLM_ENOTFOUND);
    assert_int_equal(srv_store_get(s, "b", &g), 0);
    check_blob_hash(s, g.version);
    assert_int_equal(count_sub(f, "tmp"), 0);
    assert_int_equal(count_sub(f, "blobs"), 1);
    assert_int_equal(count_sub(f, "names"), 2); /* b and the ignored .editor-swap */
    srv_store_free(s);
    /* repaired: a second open finds nothing new */
    s = open_store(f->root, 0);
    srv_store_stats(s, &st);
    assert_int_equal(st.dropped_names + st.gc_blobs + st.tmp_removed, 0);
    srv_store_free(s);
}

static void test_single_process_lock(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0), *s2 = NULL;
    llm_error_t err = {0};
    assert_int_equal(srv_store_open(f->root, 0, &s2, &err), -EWOULDBLOCK);
    assert_null(s2);
    assert_non_null(strstr(err.msg, "another process"));
    srv_store_free(s);
    s = open_store(f->root, 0);
    srv_store_free(s);
    srv_store_free(NULL);
    char p[4300];
    snprintf(p, sizeof p, "%s/missing-parent/store", f->dir);
    assert_int_equal(srv_store_open(p, 0, &s2, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "missing-parent"));
    /* a relative root still hands out absolute paths */
    char cwd[4096], cp[4400], wp[4400];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(f->dir), 0);
    s = open_store("rel-store", 0);
    assert_int_equal(chdir(cwd), 0);
    srv_store_desc_t d;
    assert_int_equal(upload_str(s, "r", "{}", "w", &d, NULL), 0);
    assert_int_equal(srv_store_paths(s, d.version, cp, wp, sizeof cp), 0);
    assert_int_equal(cp[0], '/');
    assert_int_equal(access(wp, R_OK), 0);
    srv_store_free(s);
}

/* ---- crash safety ---- */

typedef struct {
    int point;
} crash_arg_t;

static void crash_hook(int point, void *arg) {
    if (point == ((crash_arg_t *)arg)->point) _exit(42); /* like kill -9: no cleanup */
}

/* Runs fn in a child that has the store open with the crash hook at point; waits for it. */
static int child_crash_at(const char *root, int point, const char *name, const char *w,
                          int pin) {
    pid_t pid = fork();
    if (pid == 0) {
        srv_store_t *s = NULL;
        llm_error_t err;
        if (srv_store_open(root, 0, &s, &err)) _exit(3);
        crash_arg_t a = {point};
        srv_store__set_crash_hook(s, crash_hook, &a);
        int rc = pin ? srv_store_pin(s, name, 1, &err) : upload_str(s, name, "{}", w, NULL, NULL);
        _exit(rc ? 4 : 0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_crash_points(void **state) {
    fx_t *f = *state;
    char v_old[80], v_new[80];
    ref_version("{}", 2, "old", 3, v_old);
    for (int point = SRV_STORE_CP_STAGED; point < SRV_STORE_CP_COUNT; point++) {
        for (int moving = 0; moving < 2; moving++) {
            tu_rm_rf(f->root);
            srv_store_t *s = open_store(f->root, 0);
            if (moving) assert_int_equal(upload_str(s, "x", "{}", "old", NULL, NULL), 0);
            srv_store_free(s);
            char w[32];
            snprintf(w, sizeof w, "new-%d-%d", point, moving);
            ref_version("{}", 2, w, strlen(w), v_new);
            assert_int_equal(child_crash_at(f->root, point, "x", w, 0), 42);

            s = open_store(f->root, 0);
            srv_store_stats_t st;
            srv_store_stats(s, &st);
            assert_int_equal(st.dropped_names, 0); /* never a name at a partial blob */
            srv_store_desc_t d;
            int rc = srv_store_get(s, "x", &d);
            /* a process crash after the rename of the name file keeps the new state; before
             * it, the old one */
            if (point >= SRV_STORE_CP_NAME_RENAMED) {
                assert_int_equal(rc, 0);
                assert_string_equal(d.version, v_new);
            } else if (moving) {
                assert_int_equal(rc, 0);
                assert_string_equal(d.version, v_old);
            } else {
                assert_int_equal(rc, LLM_ENOTFOUND);
            }
            if (rc == 0) check_blob_hash(s, d.version);
            assert_int_equal(count_sub(f, "tmp"), 0);
            assert_int_equal(count_sub(f, "blobs"), (int)st.blobs);
            assert_int_equal(st.blobs, rc == 0 ? 1 : 0);
            srv_store_free(s);
        }
    }
    /* pin goes through the same name-file points */
    for (int point = SRV_STORE_CP_NAME_TMP; point < SRV_STORE_CP_COUNT; point++) {
        tu_rm_rf(f->root);
        srv_store_t *s = open_store(f->root, 0);
        assert_int_equal(upload_str(s, "x", "{}", "old", NULL, NULL), 0);
        srv_store_free(s);
        assert_int_equal(child_crash_at(f->root, point, "x", NULL, 1), 42);
        s = open_store(f->root, 0);
        srv_store_desc_t d;
        assert_int_equal(srv_store_get(s, "x", &d), 0);
        assert_string_equal(d.version, v_old);
        assert_int_equal(d.pinned, point >= SRV_STORE_CP_NAME_RENAMED);
        assert_int_equal(count_sub(f, "tmp"), 0);
        srv_store_free(s);
    }
}

/* Journal of the random-kill child: one line before an operation ("U name version",
 * "D name", "P name 0|1") and "K" after it returned. Lines are single write()s to an O_APPEND
 * file: they survive SIGKILL (page cache), and a kill lands between or after them. */
#define RK_NAMES 5
static const char *const k_rk_names[RK_NAMES] = {"alpha", "beta", "gamma.v2", "d-1", "e_e"};

static void jwrite(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jwrite(int fd, const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (write(fd, line, (size_t)n) != n) _exit(5);
}

static void random_kill_child(const char *root, const char *journal, uint64_t seed) {
    int jfd = open(journal, O_WRONLY | O_APPEND | O_CREAT, 0644);
    srv_store_t *s = NULL;
    llm_error_t err;
    if (jfd < 0 || srv_store_open(root, 0, &s, &err)) _exit(3);
    uint64_t x = seed | 1;
    size_t cap = 300000;
    char *w = malloc(cap), cfg[128];
    if (!w) _exit(3);
    for (;;) {
        int op = (int)(rng_next(&x) % 10);
        const char *name = k_rk_names[rng_next(&x) % RK_NAMES];
        if (op < 7) {
            size_t wn = 1 + (size_t)(rng_next(&x) % cap);
            for (size_t i = 0; i < wn; i += 8) {
                uint64_t r = rng_next(&x);
                memcpy(w + i, &r, wn - i < 8 ? wn - i : 8);
            }
            if (rng_next(&x) % 4 == 0) wn = 1 + wn % 3; /* tiny: likely to repeat bytes */
            int cn = snprintf(cfg, sizeof cfg, "{\"r\": %d}", (int)(rng_next(&x) % 3));
            char v[80];
            ref_version(cfg, (size_t)cn, w, wn, v);
            jwrite(jfd, "U %s %s\n", name, v);
            srv_store_desc_t d;
            if (upload(s, name, cfg, (size_t)cn, w, wn, &d, NULL) || strcmp(d.version, v))
                _exit(6);
        } else if (op < 9) {
            jwrite(jfd, "D %s\n", name);
            int rc = srv_store_delete(s, name, 0, &err);
            if (rc && rc != LLM_ENOTFOUND) _exit(7);
        } else {
            int on = (int)(rng_next(&x) % 2);
            jwrite(jfd, "P %s %d\n", name, on);
            int rc = srv_store_pin(s, name, on, &err);
            if (rc && rc != LLM_ENOTFOUND) _exit(8);
        }
        jwrite(jfd, "K\n");
    }
}

typedef struct {
    char version[80]; /* "" = absent */
    int pinned;
} rk_state_t;

/* Applies one journal operation to a model state. */
static void rk_apply(rk_state_t *st, const char *op, const char *arg) {
    if (op[0] == 'U') {
        if (!st->version[0]) st->pinned = 0;
        strcpy(st->version, arg);
    } else if (op[0] == 'D') {
        st->version[0] = '\0';
        st->pinned = 0;
    } else if (op[0] == 'P' && st->version[0]) {
        st->pinned = atoi(arg);
    }
}

static void test_crash_random_kill(void **state) {
    fx_t *f = *state;
    char journal[4300];
    snprintf(journal, sizeof journal, "%s/journal", f->dir);
    rk_state_t model[RK_NAMES];
    memset(model, 0, sizeof model);
    long joff = 0;
    int iters = SANITIZED ? 12 : 30, pending_seen = 0, pending_total = 0, ops_total = 0;
    /* LORAMUX_STORE_SEED=n replays a run */
    const char *env = getenv("LORAMUX_STORE_SEED");
    unsigned seed0 = env && *env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
    uint64_t x = 0x9e3779b97f4a7c15ull ^ seed0;
    fprintf(stderr, "random kill: seed %u (LORAMUX_STORE_SEED)\n", seed0);
    for (int it = 0; it < iters; it++) {
        pid_t pid = fork();
        if (pid == 0) random_kill_child(f->root, journal, rng_next(&x));
        /* mostly mid-work, sometimes while the child is still opening the store */
        long us = (long)(rng_next(&x) % 8 == 0 ? rng_next(&x) % 3000 : rng_next(&x) % 60000);
        usleep((useconds_t)us);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        assert_true(WIFSIGNALED(status)); /* not an _exit from a failed check in the child */

        /* replay the new journal lines: all but a trailing unfinished operation are final */
        size_t jn = 0;
        char *j = tu_read_file(journal, &jn);
        char pend_op[4] = "", pend_name[64] = "", pend_arg[80] = "";
        if (j) {
            char *line = j + joff;
            while (*line) {
                char *nl = strchr(line, '\n');
                assert_non_null(nl); /* single write()s: never a torn line */
                *nl = '\0';
                if (line[0] == 'K') {
                    for (int k = 0; k < RK_NAMES; k++)
                        if (pend_op[0] && strcmp(k_rk_names[k], pend_name) == 0)
                            rk_apply(&model[k], pend_op, pend_arg);
                    pend_op[0] = '\0';
                    ops_total++;
                } else {
                    pend_arg[0] = '\0';
                    assert_true(sscanf(line, "%3s %63s %79s", pend_op, pend_name, pend_arg) >= 2);
                }
                line = nl + 1;
            }
            joff = (long)jn;
            free(j);
        }

        srv_store_t *s = open_store(f->root, 0);
        srv_store_stats_t st;
        srv_store_stats(s, &st);
        assert_int_equal(st.dropped_names, 0); /* no name ever pointed at a partial blob */
        assert_int_equal(count_sub(f, "tmp"), 0);
        size_t expect_names = 0;
        for (int k = 0; k < RK_NAMES; k++) {
            srv_store_desc_t d;
            int rc = srv_store_get(s, k_rk_names[k], &d);
            rk_state_t got = {"", 0};
            if (rc == 0) {
                strcpy(got.version, d.version);
                got.pinned = d.pinned;
                check_blob_hash(s, d.version);
            } else {
                assert_int_equal(rc, LLM_ENOTFOUND);
            }
            rk_state_t alt = model[k];
            int pending_here = pend_op[0] && strcmp(pend_name, k_rk_names[k]) == 0;
            if (pending_here) rk_apply(&alt, pend_op, pend_arg);
            int is_old = strcmp(got.version, model[k].version) == 0 &&
                         (!got.version[0] || got.pinned == model[k].pinned);
            int is_new = pending_here && strcmp(got.version, alt.version) == 0 &&
                         (!got.version[0] || got.pinned == alt.pinned);
            if (!is_old && !is_new)
                fail_msg("iteration %d, name %s: store has \"%s\" pinned %d; expected \"%s\" "
                         "pinned %d%s%s",
                         it, k_rk_names[k], got.version, got.pinned, model[k].version,
                         model[k].pinned, pending_here ? " or the pending " : "",
                         pending_here ? alt.version : "");
            if (pending_here) {
                pending_total++;
                pending_seen += is_new && !is_old;
            }
            model[k] = got; /* the pending operation is settled by what survived */
            expect_names += got.version[0] != 0;
        }
        assert_int_equal(st.names, expect_names);
        /* every blob on disk is referenced: nothing leaked */
        assert_int_equal(count_sub(f, "blobs"), (int)st.blobs);
        srv_store_free(s);
    }
    fprintf(stderr,
            "random kill: %d kills, %d operations completed, %d kills inside an operation "
            "(%d of them found with the new state after restart, the rest with the old)\n",
            iters, ops_total, pending_total, pending_seen);
}

/* ---- concurrency ---- */

typedef struct {
    srv_store_t *s;
    uint64_t seed;
    int failures;
} worker_t;

static void *worker(void *arg) {
    worker_t *wk = arg;
    uint64_t x = wk->seed;
    llm_error_t err;
    char name[16], w[32];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "c%d", (int)(rng_next(&x) % 6));
        int op = (int)(rng_next(&x) % 8);
        int rc = 0;
        if (op < 4) {
            snprintf(w, sizeof w, "content-%d", (int)(rng_next(&x) % 4));
            rc = upload_str(wk->s, name, "{}", w, NULL, NULL);
        } else if (op == 4) {
            rc = srv_store_delete(wk->s, name, 0, &err);
            if (rc == LLM_ENOTFOUND) rc = 0;
        } else if (op == 5) {
            rc = srv_store_pin(wk->s, name, (int)(rng_next(&x) % 2), &err);
            if (rc == LLM_ENOTFOUND) rc = 0;
        } else if (op == 6) { /* a request: resolve, read the files, release */
            srv_store_desc_t d;
            if (srv_store_acquire(wk->s, name, &d) == 0) {
                char cp[4400], wp[4400], got[80];
                rc = srv_store_paths(wk->s, d.version, cp, wp, sizeof cp);
                size_t cn = 0, wn = 0;
                char *c = tu_read_file(cp, &cn), *ww = tu_read_file(wp, &wn);
                if (!c || !ww) rc = -1;
                else {
                    ref_version(c, cn, ww, wn, got);
                    if (strcmp(got, d.version)) rc = -2;
                }
                free(c);
                free(ww);
                srv_store_blob_release(wk->s, d.version);
            }
        } else {
            srv_store_desc_t page[8];
            size_t n, total;
            rc = srv_store_list(wk->s, NULL, 0, 8, page, &n, &total);
            for (size_t k = 1; k < n; k++)
                if (strcmp(page[k - 1].name, page[k].name) >= 0) rc = -3;
        }
        if (rc) wk->failures++;
    }
    return NULL;
}

static void test_concurrent(void **state) {
    fx_t *f = *state;
    srv_store_t *s = open_store(f->root, 0);
    srv_store_set_fsync(s, 0);
    enum { NT = 4 };
    pthread_t th[NT];
    worker_t wk[NT];
    for (int i = 0; i < NT; i++) {
        wk[i] = (worker_t){s, 0x1234567ull * (uint64_t)(i + 1), 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &wk[i]), 0);
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(wk[i].failures, 0);
    }
    srv_store_stats_t st;
    srv_store_stats(s, &st);
    assert_int_equal(st.holds, 0);
    srv_store_desc_t before[8], after[8];
    size_t n1 = 0, n2 = 0;
    srv_store_list(s, NULL, 0, 8, before, &n1, NULL);
    for (size_t i = 0; i < n1; i++) check_blob_hash(s, before[i].version);
    assert_int_equal(count_sub(f, "blobs"), (int)st.blobs);
    assert_int_equal(count_sub(f, "names"), (int)st.names);
    assert_int_equal(count_sub(f, "tmp"), 0);
    srv_store_free(s);
    s = open_store(f->root, 0);
    srv_store_list(s, NULL, 0, 8, after, &n2, NULL);
    assert_int_equal(n1, n2);
    assert_memory_equal(before, after, n1 * sizeof before[0]);
    srv_store_stats(s, &st);
    assert_int_equal(st.gc_blobs + st.dropped_names + st.tmp_removed, 0);
    srv_store_free(s);
}

/* ---- scale ---- */

static void test_10k_names(void **state) {
    fx_t *f = *state;
    enum { N = 10000 };
    srv_store_t *s = open_store(f->root, 0);
    /* fsync on: the rate of durable commits, on a few */
    double t0 = now_ms();
    char name[32], cfg[64], w[128];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "adapter-%05d", i);
        int cn = snprintf(cfg, sizeof cfg, "{\"peft_type\":\"LORA\",\"r\":%d}", 1 + i % 64);
        memset(w, 'w', sizeof w);
        snprintf(w, sizeof w, "weights of adapter %d", i);
        assert_int_equal(upload(s, name, cfg, (size_t)cn, w, 100, NULL, NULL), 0);
    }
    double t_sync = now_ms() - t0;
    srv_store_set_fsync(s, 0); /* the rest as a bulk import */
    t0 = now_ms();
    for (int i = 50; i < N; i++) {
        snprintf(name, sizeof name, "adapter-%05d", i);
        int cn = snprintf(cfg, sizeof cfg, "{\"peft_type\":\"LORA\",\"r\":%d}", 1 + i % 64);
        memset(w, 'w', sizeof w);
        snprintf(w, sizeof w, "weights of adapter %d", i);
        assert_int_equal(upload(s, name, cfg, (size_t)cn, w, 100, NULL, NULL), 0);
    }
    double t_bulk = now_ms() - t0;
    srv_store_free(s);

    t0 = now_ms();
    s = open_store(f->root, 0);
    double t_open = now_ms() - t0;
    srv_store_stats_t st;
    srv_store_stats(s, &st);
    fprintf(stderr,
            "10k names: %d durable commits in %.0f ms (%.1f ms each, fsync on), %d more in "
            "%.0f ms (fsync off); open with %zu names / %zu blobs: %.1f ms (store says %.1f "
            "ms)%s\n",
            50, t_sync, t_sync / 50, N - 50, t_bulk, st.names, st.blobs, t_open, st.open_ms,
            SANITIZED ? " [ASan build]" : "");
    assert_int_equal(st.names, N);
    assert_int_equal(st.blobs, N);
    assert_int_equal(st.dropped_names + st.gc_blobs + st.tmp_removed, 0);
    assert_true(t_open < (SANITIZED ? 3000.0 : 1000.0));
    /* lookups and a full paginated walk */
    srv_store_desc_t d, page[100];
    assert_int_equal(srv_store_get(s, "adapter-09999", &d), 0);
    assert_int_equal(d.weights_bytes, 100);
    size_t n = 0, total = 0, seen = 0;
    const char *after = NULL;
    char cursor[SRV_STORE_NAME_MAX + 1];
    t0 = now_ms();
    do {
        assert_int_equal(srv_store_list(s, after, 0, 100, page, &n, &total), 0);
        for (size_t i = 0; i < n; i++) {
            snprintf(name, sizeof name, "adapter-%05zu", seen++);
            assert_string_equal(page[i].name, name);
        }
        if (n) {
            strcpy(cursor, page[n - 1].name);
            after = cursor;
        }
    } while (n == 100);
    assert_int_equal(seen, N);
    assert_int_equal(total, N);
    fprintf(stderr, "10k names: listed in pages of 100 in %.1f ms\n", now_ms() - t0);
    srv_store_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_golden_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_part_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotent_reupload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_version_moves_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hold_keeps_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_and_refusals_leave_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_then_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pin_persists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_sees_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pagination, setup, teardown),
        cmocka_unit_test_setup_teardown(test_meta, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_repairs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_process_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_points, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_random_kill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_10k_names, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
