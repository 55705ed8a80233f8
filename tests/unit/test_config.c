/* test_config.c: unit tests of server/srv_config.c (the settings of `loramux serve`).
 *
 * Run from the repository root (the Makefile does): one test reads config.example.json there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "srv_config.h"
#include "test_util.h"

/* ---- helpers ---- */

#define EXAMPLE_JSON "config.example.json"

static char *g_dir; /* a fresh temporary directory per test */

static int setup(void **state) {
    g_dir = tu_mkdtemp();
    return g_dir ? 0 : -1;
}

static int teardown(void **state) {
    tu_rm_rf(g_dir);
    free(g_dir);
    g_dir = NULL;
    return 0;
}

/* Writes text to a file in the test directory; returns its path (rotating static buffers). */
static const char *write_tmp(const char *name, const char *text) {
    static char bufs[4][4096];
    static int next;
    char *p = bufs[next++ & 3];
    snprintf(p, sizeof bufs[0], "%s/%s", g_dir, name);
    assert_int_equal(tu_write_file(p, text, strlen(text)), 0);
    return p;
}

static int count(char **v) {
    int n = 0;
    while (v && v[n]) n++;
    return n;
}

/* srv_cfg_load with NULL-terminated argv and envp; prints the error when there is one. */
static int load(char **argv, char **envp, srv_config_t *c, llm_error_t *e) {
    memset(e, 0, sizeof *e);
    int rc = srv_cfg_load(count(argv), argv, envp, c, e);
    if (rc < 0) {
        assert_int_equal(e->code, rc);
        assert_true(e->msg[0] != '\0');
        print_message("    (expected) %s\n", e->msg);
    }
    return rc;
}

/* Loads, expects the code rc, and checks that every needle is in the message and that the
 * configuration was left zeroed. */
static void expect_fail(char **argv, char **envp, int rc, const char *n1, const char *n2) {
    srv_config_t c;
    llm_error_t e;
    memset(&c, 0x5a, sizeof c);
    assert_int_equal(load(argv, envp, &c, &e), rc);
    if (n1 && !strstr(e.msg, n1)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, n1);
    if (n2 && !strstr(e.msg, n2)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, n2);
    srv_config_t zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(&c, &zero, sizeof c);
    srv_cfg_deinit(&c);
}

#define ARGV(...) ((char *[]){__VA_ARGS__, NULL})
#define NOENV ((char **)NULL)

/* Output of a printing function, as a new string (caller frees). */
static char *capture(void (*fn)(FILE *)) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    fn(f);
    fclose(f);
    return buf;
}

/* ---- defaults ---- */

static void defaults(void **state) {
    srv_config_t c;
    llm_error_t e;
    assert_int_equal(load(ARGV("--model", "/models/TinyLlama-1.1B/"), NOENV, &c, &e), 0);
    assert_string_equal(c.model, "/models/TinyLlama-1.1B/");
    assert_string_equal(c.model_name, "TinyLlama-1.1B"); /* resolved from the directory */
    assert_string_equal(c.host, "127.0.0.1");
    assert_int_equal(c.port, 8080);
    assert_string_equal(c.api_key, "");
    assert_string_equal(c.api_key_file, "");
    assert_string_equal(c.adapter_dir, "");
    assert_string_equal(c.registry_dir, "");
    assert_true(c.allow_adapter_loading);
    assert_int_equal(c.adapter_memory_budget_mb, 0);
    assert_int_equal(c.max_adapters_per_step, 0);
    assert_int_equal(c.max_running, 32);
    assert_int_equal(c.max_step_tokens, 512);
    assert_int_equal(c.max_queue, 256);
    assert_int_equal(c.max_prompt_tokens, 0);
    assert_int_equal(c.max_total_tokens, 0);
    assert_int_equal(c.max_tokens_default, 256);
    assert_true(c.request_timeout == 600.0);
    assert_int_equal(c.max_body_bytes, 2 * 1024 * 1024);
    assert_int_equal(c.max_upload_bytes, (int64_t)1 << 30);
    assert_int_equal(c.kv_cache_mb, 0);
    assert_int_equal(c.threads, 0);
    assert_int_equal(c.weights, 1);       /* "bf16" of f32|bf16|int8 */
    assert_int_equal(c.adapter_dtype, 0); /* "bf16" of bf16|fp32 */
    assert_int_equal(c.metrics_adapter_labels, 32);
    assert_true(c.shutdown_grace == 30.0);
    assert_int_equal(c.log_level, SRV_LOG_INFO);
    assert_null(c.config_file);
    assert_int_equal(c.source[SRV_CFG_IDX_model], SRV_CFG_SRC_FLAG);
    assert_int_equal(c.source[SRV_CFG_IDX_port], SRV_CFG_SRC_DEFAULT);
    srv_cfg_deinit(&c);
    srv_cfg_deinit(&c); /* zeroed by the first call */
    srv_cfg_deinit(NULL);
}

static void model_name_resolution(void **state) {
    srv_config_t c;
    llm_error_t e;
    assert_int_equal(load(ARGV("--model", "smol"), NOENV, &c, &e), 0);
    assert_string_equal(c.model_name, "smol");
    srv_cfg_deinit(&c);
    assert_int_equal(load(ARGV("--model", "/a/b//", "--model-name", "base"), NOENV, &c, &e), 0);
    assert_string_equal(c.model_name, "base");
    srv_cfg_deinit(&c);
    /* "." names the directory itself, so the name is the real directory's */
    assert_int_equal(load(ARGV("--model", g_dir), NOENV, &c, &e), 0);
    char *expect = strdup(c.model_name); /* the temporary directory's own name */
    srv_cfg_deinit(&c);
    char *cwd = getcwd(NULL, 0);
    assert_int_equal(chdir(g_dir), 0);
    assert_int_equal(load(ARGV("--model", "."), NOENV, &c, &e), 0);
    assert_int_equal(chdir(cwd), 0);
    assert_string_equal(c.model_name, expect);
    srv_cfg_deinit(&c);
    free(expect);
    free(cwd);
}

/* ---- precedence ---- */

static void precedence_file_env_flag(void **state) {
    const char *file = write_tmp("cfg.json", "{\"model\": \"/m/file\", \"port\": 1000,"
                                             " \"host\": \"file-host\", \"max_running\": 5,"
                                             " \"request_timeout\": 10, \"log_level\": \"warn\","
                                             " \"allow_adapter_loading\": false,"
                                             " \"max_upload_bytes\": 4096}");
    char *env[] = {"PATH=/usr/bin", "LORAMUX_PORT=2000", "LORAMUX_HOST=env-host",
                   "LORAMUX_REQUEST_TIMEOUT=20", "LORAMUX_LOG_LEVEL=error",
                   "LORAMUX_MAX_UPLOAD_BYTES=8192", NULL};
    srv_config_t c;
    llm_error_t e;
    assert_int_equal(load(ARGV("--config", (char *)file, "--port", "3000", "--request-timeout",
                               "30.5", "--max-upload-bytes=1099511627776"),
                          env, &c, &e),
                     0);
    assert_string_equal(c.config_file, file);
    assert_string_equal(c.model, "/m/file");           /* file only */
    assert_int_equal(c.max_running, 5);                /* file only */
    assert_false(c.allow_adapter_loading);             /* file only */
    assert_string_equal(c.host, "env-host");           /* env over file */
    assert_int_equal(c.log_level, SRV_LOG_ERROR);      /* env over file */
    assert_int_equal(c.port, 3000);                    /* flag over env over file */
    assert_true(c.request_timeout == 30.5);            /* flag, double */
    assert_int_equal(c.max_upload_bytes, 1099511627776LL); /* flag, int64 beyond int */
    assert_int_equal(c.max_step_tokens, 512);          /* default */
    assert_int_equal(c.source[SRV_CFG_IDX_model], SRV_CFG_SRC_FILE);
    assert_int_equal(c.source[SRV_CFG_IDX_host], SRV_CFG_SRC_ENV);
    assert_int_equal(c.source[SRV_CFG_IDX_port], SRV_CFG_SRC_FLAG);
    assert_int_equal(c.source[SRV_CFG_IDX_max_step_tokens], SRV_CFG_SRC_DEFAULT);
    srv_cfg_deinit(&c);

    /* without the flags: env wins over the file */
    assert_int_equal(load(ARGV("--config", (char *)file), env, &c, &e), 0);
    assert_int_equal(c.port, 2000);
    assert_true(c.request_timeout == 20.0);
    assert_int_equal(c.max_upload_bytes, 8192);
    srv_cfg_deinit(&c);

    /* without the environment: the file wins over the defaults */
    assert_int_equal(load(ARGV("--config", (char *)file), NOENV, &c, &e), 0);
    assert_int_equal(c.port, 1000);
    assert_string_equal(c.host, "file-host");
    assert_int_equal(c.log_level, SRV_LOG_WARN);
    srv_cfg_deinit(&c);
}

static void config_from_env(void **state) {
    const char *a = write_tmp("a.json", "{\"model\": \"/m/a\", \"port\": 1111}");
    const char *b = write_tmp("b.json", "{\"model\": \"/m/b\", \"port\": 2222}");
    char env_a[4200];
    snprintf(env_a, sizeof env_a, "LORAMUX_CONFIG=%s", a);
    char *env[] = {env_a, NULL};
    srv_config_t c;
    llm_error_t e;
    assert_int_equal(load(ARGV("--threads", "2"), env, &c, &e), 0);
    assert_int_equal(c.port, 1111);
    assert_string_equal(c.config_file, a);
    srv_cfg_deinit(&c);
    /* --config wins over LORAMUX_CONFIG; a repeated --config: the last one */
    assert_int_equal(load(ARGV("--config", "/nonexistent.json", "--config", (char *)b), env, &c,
                          &e),
                     0);
    assert_int_equal(c.port, 2222);
    srv_cfg_deinit(&c);
    /* an empty LORAMUX_CONFIG means no file */
    char *empty[] = {"LORAMUX_CONFIG=", "LORAMUX_MODEL=/m/env", NULL};
    assert_int_equal(load(ARGV("--threads", "2"), empty, &c, &e), 0);
    assert_null(c.config_file);
    assert_string_equal(c.model, "/m/env");
    srv_cfg_deinit(&c);
}

/* ---- flag forms ---- */

static void flag_forms(void **state) {
    srv_config_t c;
    llm_error_t e;
    assert_int_equal(load(ARGV("--model=/m/x", "--port=9000", "--api-key=--starts-with-dashes",
                               "--host", "0.0.0.0", "--port", "9001", "--log-level=debug"),
                          NOENV, &c, &e),
                     0);
    assert_string_equal(c.model, "/m/x");
    assert_int_equal(c.port, 9001); /* a repeated flag: the last wins */
    assert_string_equal(c.api_key, "--starts-with-dashes");
    assert_string_equal(c.host, "0.0.0.0");
    assert_int_equal(c.log_level, SRV_LOG_DEBUG);
    srv_cfg_deinit(&c);
    /* enumerations: flag and environment forms, by name */
    char *envw[] = {"LORAMUX_ADAPTER_DTYPE=fp32", NULL};
    assert_int_equal(load(ARGV("--model", "m", "--weights", "int8"), envw, &c, &e), 0);
    assert_int_equal(c.weights, 2);
    assert_int_equal(c.adapter_dtype, 1);
    srv_cfg_deinit(&c);
    expect_fail(ARGV("--model", "m", "--weights=BF16"), NOENV, LLM_EINVAL, "--weights",
                "expected one of f32|bf16|int8, got \"BF16\"");
    /* --name= sets a string to "" (clears a key set by the file or the environment) */
    char *env[] = {"LORAMUX_API_KEY=secret", NULL};
    assert_int_equal(load(ARGV("--model", "/m/x", "--api-key="), env, &c, &e), 0);
    assert_string_equal(c.api_key, "");
    srv_cfg_deinit(&c);
}

static void bool_forms(void **state) {
    static const struct {
        const char *arg;
        bool want;
    } cases[] = {
        {"--allow-adapter-loading", true},        {"--no-allow-adapter-loading", false},
        {"--allow-adapter-loading=false", false}, {"--allow-adapter-loading=true", true},
        {"--allow-adapter-loading=0", false},     {"--allow-adapter-loading=on", true},
    };
    char *env_off[] = {"LORAMUX_ALLOW_ADAPTER_LOADING=false", NULL};
    char *env_on[] = {"LORAMUX_ALLOW_ADAPTER_LOADING=yes", NULL};
    srv_config_t c;
    llm_error_t e;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* start from the opposite value in the environment so the flag must act */
        assert_int_equal(load(ARGV("--model", "m", (char *)cases[i].arg),
                              cases[i].want ? env_off : env_on, &c, &e),
                         0);
        if (c.allow_adapter_loading != cases[i].want) fail_msg("%s", cases[i].arg);
        srv_cfg_deinit(&c);
    }
    assert_int_equal(load(ARGV("--model", "m"), env_off, &c, &e), 0);
    assert_false(c.allow_adapter_loading);
    srv_cfg_deinit(&c);

    expect_fail(ARGV("--model", "m", "--allow-adapter-loading=maybe"), NOENV, LLM_EINVAL,
                "--allow-adapter-loading", "maybe");
    expect_fail(ARGV("--model", "m", "--no-allow-adapter-loading=1"), NOENV, LLM_EINVAL,
                "--no-allow-adapter-loading", "no value");
    expect_fail(ARGV("--model", "m", "--no-port"), NOENV, LLM_EINVAL, "--no-port", "unknown");
    /* a bool does not take the next argument as its value */
    expect_fail(ARGV("--model", "m", "--allow-adapter-loading", "false"), NOENV, LLM_EINVAL,
                "\"false\"", NULL);
    char *env_bad[] = {"LORAMUX_ALLOW_ADAPTER_LOADING=2", NULL};
    expect_fail(ARGV("--model", "m"), env_bad, LLM_EINVAL, "LORAMUX_ALLOW_ADAPTER_LOADING",
                "true or false");
}

/* ---- errors ---- */

static void unknown_flag(void **state) {
    expect_fail(ARGV("--model", "m", "--prot", "80"), NOENV, LLM_EINVAL, "--prot: unknown option",
                "did you mean --port?");
    expect_fail(ARGV("--model", "m", "--max_running=3"), NOENV, LLM_EINVAL, "--max_running",
                "--max-running");
    expect_fail(ARGV("--model", "m", "--zzzzzzzz"), NOENV, LLM_EINVAL, "--zzzzzzzz", NULL);
    expect_fail(ARGV("--model", "m", "extra"), NOENV, LLM_EINVAL, "\"extra\"", NULL);
    expect_fail(ARGV("-p", "80", "--model", "m"), NOENV, LLM_EINVAL, "\"-p\"", NULL);
    expect_fail(ARGV("--model"), NOENV, LLM_EINVAL, "--model: missing value", NULL);
    expect_fail(ARGV("--model", "--port", "80"), NOENV, LLM_EINVAL, "--model: missing value",
                NULL);
    expect_fail(ARGV("--model", "m", "--config"), NOENV, LLM_EINVAL, "--config", "missing");
    expect_fail(ARGV("--model", "m", "--config="), NOENV, LLM_EINVAL, "--config", NULL);
}

static void unknown_env(void **state) {
    char *typo[] = {"HOME=/root", "LORAMUX_PROT=80", NULL};
    expect_fail(ARGV("--model", "m"), typo, LLM_EINVAL, "LORAMUX_PROT",
                "did you mean LORAMUX_PORT?");
    char *lower[] = {"LORAMUX_port=80", NULL}; /* names are upper case */
    expect_fail(ARGV("--model", "m"), lower, LLM_EINVAL, "LORAMUX_port", NULL);
    /* variables of the tests and of the config file are not settings but allowed */
    char *ok[] = {"LORAMUX_FIXTURES=/x", "LORAMUX_BIN=/y", "LORAMUXPORT=1", "OTHER_PORT=x",
                  "LORAMUX_CONFIG=", NULL};
    srv_config_t c;
    llm_error_t e;
    assert_int_equal(load(ARGV("--model", "m"), ok, &c, &e), 0);
    assert_int_equal(c.port, 8080);
    srv_cfg_deinit(&c);
}

static void bad_numbers(void **state) {
    expect_fail(ARGV("--model", "m", "--port", "abc"), NOENV, LLM_EINVAL, "--port",
                "expected an integer in 1..65535, got \"abc\"");
    expect_fail(ARGV("--model", "m", "--port", "80x"), NOENV, LLM_EINVAL, "\"80x\"", NULL);
    expect_fail(ARGV("--model", "m", "--port", " 80"), NOENV, LLM_EINVAL, "--port", NULL);
    expect_fail(ARGV("--model", "m", "--port="), NOENV, LLM_EINVAL, "--port", NULL);
    expect_fail(ARGV("--model", "m", "--port", "1.5"), NOENV, LLM_EINVAL, "--port", NULL);
    expect_fail(ARGV("--model", "m", "--port", "0"), NOENV, LLM_ERANGE, "--port",
                "out of range (1..65535)");
    expect_fail(ARGV("--model", "m", "--port", "65536"), NOENV, LLM_ERANGE, "65536", NULL);
    expect_fail(ARGV("--model", "m", "--max-queue", "99999999999999999999999"), NOENV,
                LLM_ERANGE, "--max-queue", "0..1000000");
    expect_fail(ARGV("--model", "m", "--max-step-tokens", "15"), NOENV, LLM_ERANGE,
                "--max-step-tokens", "16..65536");
    expect_fail(ARGV("--model", "m", "--max-upload-bytes", "1099511627777"), NOENV, LLM_ERANGE,
                "--max-upload-bytes", NULL);
    expect_fail(ARGV("--model", "m", "--request-timeout", "soon"), NOENV, LLM_EINVAL,
                "--request-timeout", "expected a number");
    expect_fail(ARGV("--model", "m", "--request-timeout", "-1"), NOENV, LLM_ERANGE,
                "--request-timeout", NULL);
    expect_fail(ARGV("--model", "m", "--shutdown-grace", "inf"), NOENV, LLM_ERANGE,
                "--shutdown-grace", NULL);
    expect_fail(ARGV("--model", "m", "--shutdown-grace", "nan"), NOENV, LLM_EINVAL,
                "--shutdown-grace", NULL);
    char *env[] = {"LORAMUX_PORT=http", NULL};
    expect_fail(ARGV("--model", "m"), env, LLM_EINVAL, "LORAMUX_PORT: expected an integer",
                "\"http\"");
    /* a bad value in the environment is an error even when a flag sets the same setting */
    expect_fail(ARGV("--model", "m", "--port", "80"), env, LLM_EINVAL, "LORAMUX_PORT", NULL);
}

static void bad_enum(void **state) {
    expect_fail(ARGV("--model", "m", "--log-level", "verbose"), NOENV, LLM_EINVAL, "--log-level",
                "\"verbose\"");
    expect_fail(ARGV("--model", "m", "--log-level", "INFO"), NOENV, LLM_EINVAL, "--log-level",
                "error, warn, info, debug");
    char *env[] = {"LORAMUX_LOG_LEVEL=trace", NULL};
    expect_fail(ARGV("--model", "m"), env, LLM_EINVAL, "LORAMUX_LOG_LEVEL", "trace");
}

static void missing_model(void **state) {
    expect_fail(ARGV("--port", "80"), NOENV, LLM_EINVAL,
                "model is required (--model, LORAMUX_MODEL or \"model\" in the config file)",
                NULL);
    expect_fail(ARGV("--model="), NOENV, LLM_EINVAL, "model is required", NULL);
    char *env[] = {"LORAMUX_MODEL=", NULL};
    expect_fail(NULL, env, LLM_EINVAL, "model is required", NULL);
}

/* ---- the config file ---- */

static void file_unknown_key(void **state) {
    const char *f = write_tmp("config.json", "{\"model\": \"m\", \"prot\": 80}");
    expect_fail(ARGV("--config", (char *)f), NOENV, LLM_EINVAL,
                "config.json: key \"prot\" is not a setting", "did you mean \"port\"?");
    /* the file is named as given */
    assert_true(strstr(f, g_dir) == f);
    f = write_tmp("c2.json", "{\"model\": \"m\", \"config\": \"other.json\"}");
    expect_fail(ARGV("--config", (char *)f), NOENV, LLM_EINVAL, "c2.json", "\"config\"");
    f = write_tmp("c3.json", "{\"model\": \"m\", \"port\": 80, \"port\": 81}");
    expect_fail(ARGV("--config", (char *)f), NOENV, LLM_EINVAL, "\"port\" appears twice", NULL);
}

static void file_bad_values(void **state) {
    static const struct {
        const char *json, *n1, *n2;
        int rc;
    } cases[] = {
        {"{\"model\": \"m\", \"port\": \"8080\"}", "\"port\": expected an integer", "\"8080\"",
         LLM_EINVAL},
        {"{\"model\": \"m\", \"port\": 2.5}", "\"port\"", "2.5", LLM_EINVAL},
        {"{\"model\": \"m\", \"port\": 70000}", "\"port\": 70000 is out of range", "1..65535",
         LLM_ERANGE},
        {"{\"model\": \"m\", \"port\": -1}", "\"port\"", "-1", LLM_ERANGE},
        {"{\"model\": \"m\", \"port\": 1e300}", "\"port\"", NULL, LLM_ERANGE},
        {"{\"model\": \"m\", \"host\": 5}", "\"host\": expected a string", "5", LLM_EINVAL},
        {"{\"model\": null}", "\"model\"", "null", LLM_EINVAL},
        {"{\"model\": \"m\", \"allow_adapter_loading\": \"yes\"}", "\"allow_adapter_loading\"",
         "true or false", LLM_EINVAL},
        {"{\"model\": \"m\", \"log_level\": \"loud\"}", "\"log_level\"", "\"loud\"", LLM_EINVAL},
        {"{\"model\": \"m\", \"request_timeout\": [1]}", "\"request_timeout\"", "[1]",
         LLM_EINVAL},
        {"{\"model\": \"m\", \"threads\": -3}", "\"threads\"", "0..64", LLM_ERANGE},
        {"{\"model\": \"m\", \"weights\": \"fp8\"}", "\"weights\": expected one of "
         "f32|bf16|int8", "\"fp8\"", LLM_EINVAL},
        {"{\"model\": \"m\", \"weights\": 16}", "\"weights\": expected one of", "16",
         LLM_EINVAL},
        {"{\"model\": \"m\", \"adapter_dtype\": \"f32\"}", "\"adapter_dtype\"", "bf16|fp32",
         LLM_EINVAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *f = write_tmp("bad.json", cases[i].json);
        expect_fail(ARGV("--config", (char *)f), NOENV, cases[i].rc, cases[i].n1, cases[i].n2);
        expect_fail(ARGV("--config", (char *)f), NOENV, cases[i].rc, "bad.json", NULL);
    }
}

static void file_ok_values(void **state) {
    const char *f = write_tmp("ok.json", "{\"// note\": 1, \"//\": [\"any\"], \"model\": \"m\","
                                         " \"max_queue\": 0, \"max_body_bytes\": 1e4,"
                                         " \"shutdown_grace\": 0.25, \"port\": 1e3}");
    srv_config_t c;
    llm_error_t e;
    assert_int_equal(load(ARGV("--config", (char *)f), NOENV, &c, &e), 0);
    assert_int_equal(c.max_queue, 0);
    assert_int_equal(c.max_body_bytes, 10000);
    assert_int_equal(c.port, 1000);
    assert_true(c.shutdown_grace == 0.25);
    srv_cfg_deinit(&c);
}

static void file_unreadable_or_malformed(void **state) {
    char missing[4200];
    snprintf(missing, sizeof missing, "%s/nope.json", g_dir);
    expect_fail(ARGV("--model", "m", "--config", missing), NOENV, -ENOENT, "nope.json",
                "No such file");
    const char *f = write_tmp("broken.json", "{\n  \"model\": \"m\",\n  \"port\": 80,,\n}\n");
    expect_fail(ARGV("--model", "m", "--config", (char *)f), NOENV, LLM_EFORMAT, "broken.json",
                "line 3");
    f = write_tmp("trailing.json", "{\"model\": \"m\"} x");
    expect_fail(ARGV("--config", (char *)f), NOENV, LLM_EFORMAT, "trailing.json", "not valid");
    f = write_tmp("array.json", "[{\"model\": \"m\"}]");
    expect_fail(ARGV("--config", (char *)f), NOENV, LLM_EFORMAT, "array.json", "JSON object");
    f = write_tmp("empty.json", "");
    expect_fail(ARGV("--model", "m", "--config", (char *)f), NOENV, LLM_EFORMAT, "empty.json",
                NULL);
    expect_fail(ARGV("--model", "m", "--config", g_dir), NOENV, -EISDIR, NULL, NULL);
}

/* config.example.json loads, names every setting of the table, and gives the defaults. */
static void example_file(void **state) {
    size_t len = 0;
    char *text = tu_read_file(EXAMPLE_JSON, &len);
    if (!text) fail_msg("cannot read %s (run the test from the repository root)", EXAMPLE_JSON);
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    static const char *const names[] = {
#define XX(name, kind, def, lo, hi, meta, help) #name,
        SRV_CFG_MAP(XX)
#undef XX
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!cJSON_GetObjectItemCaseSensitive(root, names[i]))
            fail_msg("%s lacks the setting \"%s\"", EXAMPLE_JSON, names[i]);
    cJSON_Delete(root);
    free(text);

    srv_config_t ex, dflt;
    llm_error_t e;
    assert_int_equal(load(ARGV("--config", EXAMPLE_JSON), NOENV, &ex, &e), 0);
    for (int i = 0; i < SRV_CFG_COUNT; i++) assert_int_equal(ex.source[i], SRV_CFG_SRC_FILE);
    /* every value but the model is the default */
    assert_int_equal(load(ARGV("--model", ex.model), NOENV, &dflt, &e), 0);
#define XX(name, kind, def, lo, hi, meta, help) check_##kind(#name, &ex.name, &dflt.name);
#define check_STR(n, a, b) assert_string_equal(*(a), *(b));
#define check_INT(n, a, b) assert_int_equal(*(a), *(b));
#define check_I64(n, a, b) assert_int_equal(*(a), *(b));
#define check_DBL(n, a, b) assert_true(*(a) == *(b));
#define check_BOOL(n, a, b) assert_int_equal(*(a), *(b));
#define check_LOG(n, a, b) assert_int_equal(*(a), *(b));
#define check_ENUM(n, a, b) assert_int_equal(*(a), *(b));
    SRV_CFG_MAP(XX)
#undef XX
    srv_cfg_deinit(&ex);
    srv_cfg_deinit(&dflt);
}

/* ---- help, markdown, dump ---- */

/* Runs srv_cfg_load on argv with stdout sent to /dev/null; returns its result. */
static int load_quiet(char **argv, srv_config_t *c, llm_error_t *e) {
    fflush(stdout);
    int saved = dup(1), null = open("/dev/null", O_WRONLY);
    assert_true(saved >= 0 && null >= 0);
    dup2(null, 1);
    close(null);
    int rc = srv_cfg_load(count(argv), argv, NULL, c, e);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    return rc;
}

static void help_returns_one(void **state) {
    srv_config_t c;
    llm_error_t e;
    assert_int_equal(load_quiet(ARGV("--help"), &c, &e), 1);
    assert_int_equal(load_quiet(ARGV("--port", "1", "-h"), &c, &e), 1); /* no model needed */
    assert_int_equal(load_quiet(ARGV("--port", "oops", "--help"), &c, &e), 1); /* not parsed */
    srv_cfg_deinit(&c);
}

static void help_and_markdown_cover_table(void **state) {
    char *help = capture(srv_cfg_help), *md = capture(srv_cfg_markdown);
    assert_non_null(strstr(help, "--config FILE"));
    assert_non_null(strstr(help, "--[no-]allow-adapter-loading"));
    assert_non_null(strstr(md, "| setting | flag | environment | default | meaning |"));
    assert_non_null(strstr(md, "`--port N` | `LORAMUX_PORT` | `8080` |"));
    int md_rows = 0;
    for (const char *p = md; (p = strstr(p, "\n| `")); p++) md_rows++;
    assert_int_equal(md_rows, SRV_CFG_COUNT);
    static const char *const flags[] = {
#define XX(name, kind, def, lo, hi, meta, help) #name,
        SRV_CFG_MAP(XX)
#undef XX
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        char k[80], u[80];
        size_t j = 0;
        snprintf(k, sizeof k, "--");
        snprintf(u, sizeof u, "LORAMUX_");
        for (; flags[i][j]; j++) {
            k[2 + j] = flags[i][j] == '_' ? '-' : flags[i][j];
            u[8 + j] = (char)(flags[i][j] >= 'a' && flags[i][j] <= 'z' ? flags[i][j] - 32
                                                                       : flags[i][j]);
        }
        k[2 + j] = u[8 + j] = '\0';
        char no[96]; /* booleans are listed as --[no-]name in the help */
        snprintf(no, sizeof no, "--[no-]%s", k + 2);
        if (!strstr(help, k) && !strstr(help, no)) fail_msg("%s missing from the help", k);
        if (!strstr(md, k)) fail_msg("%s missing from the markdown", k);
        if (!strstr(help, u) || !strstr(md, u)) fail_msg("%s missing from help/markdown", u);
    }
    /* help lines fit in 100 columns; the markdown table has no stray cell separators */
    for (const char *p = help; *p;) {
        size_t n = strcspn(p, "\n");
        if (n > 100) fail_msg("help line longer than 100 columns: %.*s", (int)n, p);
        p += n + (p[n] == '\n');
    }
    for (const char *p = md; *p;) {
        size_t n = strcspn(p, "\n"), bars = 0;
        for (size_t i = 0; i < n; i++) bars += p[i] == '|' && (i == 0 || p[i - 1] != '\\');
        if (bars != 6) fail_msg("markdown row with %zu '|': %.*s", bars, (int)n, p);
        p += n + (p[n] == '\n');
    }
    free(help);
    free(md);
}

static void dump_hides_api_key(void **state) {
    srv_config_t c;
    llm_error_t e;
    assert_int_equal(load(ARGV("--model", "m", "--api-key", "sk-very-secret"), NOENV, &c, &e),
                     0);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    srv_cfg_dump(&c, f);
    fclose(f);
    assert_null(strstr(out, "sk-very-secret"));
    assert_non_null(strstr(out, "api_key = (set)  (flag)"));
    assert_non_null(strstr(out, "port = 8080  (default)"));
    assert_non_null(strstr(out, "log_level = info"));
    free(out);
    srv_cfg_deinit(&c);
    assert_string_equal(srv_cfg_log_level_name(SRV_LOG_WARN), "warn");
    assert_string_equal(srv_cfg_log_level_name((srv_log_level_t)99), "?");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test_setup_teardown(model_name_resolution, setup, teardown),
        cmocka_unit_test_setup_teardown(precedence_file_env_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(config_from_env, setup, teardown),
        cmocka_unit_test(flag_forms),
        cmocka_unit_test(bool_forms),
        cmocka_unit_test(unknown_flag),
        cmocka_unit_test(unknown_env),
        cmocka_unit_test(bad_numbers),
        cmocka_unit_test(bad_enum),
        cmocka_unit_test(missing_model),
        cmocka_unit_test_setup_teardown(file_unknown_key, setup, teardown),
        cmocka_unit_test_setup_teardown(file_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(file_ok_values, setup, teardown),
        cmocka_unit_test_setup_teardown(file_unreadable_or_malformed, setup, teardown),
        cmocka_unit_test(example_file),
        cmocka_unit_test(help_returns_one),
        cmocka_unit_test(help_and_markdown_cover_table),
        cmocka_unit_test(dump_hides_api_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
