/* test_metrics.c: unit tests of server/srv_metrics.c.
 *
 * The exposition is checked by a small, strict parser of text format 0.0.4 written here
 * independently of the renderer: every line is a HELP, a TYPE or `name{labels} value`; every
 * sample belongs to a family with HELP and TYPE given before it; families are contiguous;
 * no series appears twice; label values use only the \\ \" \n escapes and are valid UTF-8;
 * histogram buckets are cumulative, end with le="+Inf" and agree with _count.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "srv_metrics.h"

/* ---- a strict exposition parser ---- */

typedef struct {
    char name[128];
    char labels[1024]; /* raw text between the braces, escapes kept; "" when none */
    double value;
} sample_t;

typedef struct {
    char name[128];
    char type[16];
    int has_help, n_samples;
} family_t;

typedef struct {
    sample_t *s;
    int ns, caps;
    family_t *f;
    int nf, capf;
} expo_t;

static int is_name_char(int c, int first, int colon) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return 1;
    if (colon && c == ':') return 1;
    return !first && c >= '0' && c <= '9';
}

/* Reads a metric (colon = 1) or label name at *p; returns its length, 0 if none. */
static size_t read_name(const char **p, char *out, size_t cap, int colon) {
    size_t n = 0;
    while (is_name_char((unsigned char)(*p)[n], n == 0, colon)) n++;
    if (n == 0 || n >= cap) return 0;
    memcpy(out, *p, n);
    out[n] = '\0';
    *p += n;
    return n;
}

/* Independent UTF-8 check (overlongs, surrogates, > U+10FFFF rejected). */
static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned long cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 2, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 3, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 4, cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + k > n) return 0;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        static const unsigned long min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += k;
    }
    return 1;
}

static family_t *family(expo_t *e, const char *name, int create) {
    for (int i = 0; i < e->nf; i++)
        if (!strcmp(e->f[i].name, name)) return &e->f[i];
    if (!create) return NULL;
    if (e->nf == e->capf) {
        e->capf = e->capf ? 2 * e->capf : 64;
        e->f = realloc(e->f, (size_t)e->capf * sizeof *e->f);
        assert_non_null(e->f);
    }
    family_t *f = &e->f[e->nf++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    return f;
}

/* The family a sample name belongs to, or NULL. Histogram samples carry a suffix. */
static family_t *family_of(expo_t *e, const char *name, const char **suffix) {
    family_t *f = family(e, name, 0);
    *suffix = "";
    if (f && f->type[0] && strcmp(f->type, "histogram")) return f;
    static const char *sfx[] = {"_bucket", "_sum", "_count"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(name), k = strlen(sfx[i]);
        if (n > k && !strcmp(name + n - k, sfx[i])) {
            char base[128];
            memcpy(base, name, n - k);
            base[n - k] = '\0';
            f = family(e, base, 0);
            if (f && !strcmp(f->type, "histogram")) {
                *suffix = sfx[i];
                return f;
            }
        }
    }
    return NULL;
}

/* Parses `labels}` at *p (after the '{'), copying the raw text to out. Returns 0 or -1. */
static int parse_labels(const char **p, char *out, size_t cap, char *why) {
    const char *start = *p;
    char lname[128];
    for (;;) {
        if (!read_name(p, lname, sizeof lname, 0)) return sprintf(why, "label name"), -1;
        if (*(*p)++ != '=' || *(*p)++ != '"') return sprintf(why, "expected =\""), -1;
        const char *v = *p;
        while (**p != '"') {
            if (**p == '\0' || **p == '\n') return sprintf(why, "unterminated value"), -1;
            if (**p == '\\') {
                char c = (*p)[1];
                if (c != '\\' && c != '"' && c != 'n') return sprintf(why, "bad escape"), -1;
                (*p)++;
            }
            (*p)++;
        }
        if (!valid_utf8((const unsigned char *)v, (size_t)(*p - v)))
            return sprintf(why, "label %s not UTF-8", lname), -1;
        (*p)++;
        if (**p == ',') {
            (*p)++;
            continue;
        }
        if (**p == '}') break;
        return sprintf(why, "expected , or }"), -1;
    }
    size_t n = (size_t)(*p - start);
    if (n >= cap) return sprintf(why, "labels too long"), -1;
    memcpy(out, start, n);
    out[n] = '\0';
    (*p)++;
    return 0;
}

static int parse_line(expo_t *e, const char *line, family_t **last, char *why) {
    char name[128];
    const char *p = line;
    if (!strncmp(p, "# HELP ", 7) || !strncmp(p, "# TYPE ", 7)) {
        int help = p[2] == 'H';
        p += 7;
        if (!read_name(&p, name, sizeof name, 1) || *p != ' ')
            return sprintf(why, "bad HELP/TYPE name"), -1;
        family_t *f = family(e, name, 1);
        if (f->n_samples) return sprintf(why, "HELP/TYPE after samples of %s", name), -1;
        if (help) {
            if (f->has_help++) return sprintf(why, "second HELP for %s", name), -1;
        } else {
            const char *t = p + 1;
            if (f->type[0]) return sprintf(why, "second TYPE for %s", name), -1;
            if (strcmp(t, "counter") && strcmp(t, "gauge") && strcmp(t, "histogram") &&
                strcmp(t, "summary") && strcmp(t, "untyped"))
                return sprintf(why, "bad type %s", t), -1;
            snprintf(f->type, sizeof f->type, "%s", t);
        }
        return 0;
    }
    if (p[0] == '#') return 0; /* other comments are allowed */
    if (e->ns == e->caps) {
        e->caps = e->caps ? 2 * e->caps : 1024;
        e->s = realloc(e->s, (size_t)e->caps * sizeof *e->s);
        assert_non_null(e->s);
    }
    sample_t *s = &e->s[e->ns];
    memset(s, 0, sizeof *s);
    if (!read_name(&p, s->name, sizeof s->name, 1)) return sprintf(why, "sample name"), -1;
    if (*p == '{') {
        p++;
        if (parse_labels(&p, s->labels, sizeof s->labels, why)) return -1;
    }
    if (*p++ != ' ') return sprintf(why, "expected space before value"), -1;
    char *end;
    s->value = strtod(p, &end);
    if (end == p || *end != '\0') return sprintf(why, "bad value '%s'", p), -1;
    const char *suffix;
    family_t *f = family_of(e, s->name, &suffix);
    if (!f || !f->has_help || !f->type[0])
        return sprintf(why, "sample %s without HELP and TYPE", s->name), -1;
    if (f != *last && f->n_samples) return sprintf(why, "family %s split", f->name), -1;
    if (!strcmp(f->type, "counter") &&
        (strlen(f->name) < 7 || strcmp(f->name + strlen(f->name) - 6, "_total")))
        return sprintf(why, "counter %s without _total", f->name), -1;
    if (!strcmp(suffix, "_bucket") && !strstr(s->labels, "le=\""))
        return sprintf(why, "bucket without le"), -1;
    for (int i = 0; i < e->ns; i++)
        if (!strcmp(e->s[i].name, s->name) && !strcmp(e->s[i].labels, s->labels))
            return sprintf(why, "duplicate series"), -1;
    f->n_samples++;
    *last = f;
    e->ns++;
    return 0;
}

/* Histogram consistency, relying on the format's rule that a series' buckets are contiguous
 * and in increasing le order, followed by _sum and _count. */
static void check_histograms(const expo_t *e) {
    for (int i = 0; i < e->ns; i++) {
        const sample_t *s = &e->s[i];
        size_t n = strlen(s->name);
        if (n < 7 || strcmp(s->name + n - 7, "_bucket")) continue;
        int first = i == 0 || strcmp(e->s[i - 1].name, s->name) ||
                    strncmp(e->s[i - 1].labels, s->labels,
                            (size_t)(strstr(s->labels, "le=\"") - s->labels));
        if (first) continue;
        const sample_t *prev = &e->s[i - 1];
        double le_prev = strtod(strstr(prev->labels, "le=\"") + 4, NULL);
        double le = strtod(strstr(s->labels, "le=\"") + 4, NULL);
        if (!(le > le_prev) || s->value < prev->value)
            fail_msg("%s{%s} not cumulative after {%s}", s->name, s->labels, prev->labels);
        /* last bucket of the series: must be +Inf and equal _count */
        int last = i + 1 >= e->ns || strcmp(e->s[i + 1].name, s->name);
        if (!last) continue;
        if (!strstr(s->labels, "le=\"+Inf\"")) fail_msg("%s{%s} last bucket", s->name, s->labels);
        char count_name[128];
        snprintf(count_name, sizeof count_name, "%.*s_count", (int)(n - 7), s->name);
        assert_true(i + 2 < e->ns);
        const sample_t *c = &e->s[i + 2];
        assert_string_equal(c->name, count_name);
        assert_true(c->value == s->value);
    }
}

static expo_t parse(const char *text) {
    expo_t e = {0};
    family_t *last = NULL;
    char line[4096], why[256] = "";
    assert_non_null(text);
    size_t len = strlen(text);
    assert_true(len > 0 && text[len - 1] == '\n');
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = (size_t)(nl - p);
        assert_true(n > 0 && n < sizeof line);
        memcpy(line, p, n);
        line[n] = '\0';
        if (parse_line(&e, line, &last, why)) fail_msg("exposition line '%s': %s", line, why);
        p = nl + 1;
    }
    check_histograms(&e);
    return e;
}

static void expo_free(expo_t *e) {
    free(e->s);
    free(e->f);
}

static expo_t render_parse(srv_met_t *m) {
    char *t = srv_met_render(m);
    expo_t e = parse(t);
    free(t);
    return e;
}

static const sample_t *find(const expo_t *e, const char *name, const char *labels) {
    for (int i = 0; i < e->ns; i++)
        if (!strcmp(e->s[i].name, name) && !strcmp(e->s[i].labels, labels)) return &e->s[i];
    return NULL;
}

/* Value of one series; fails the test if it is missing. */
static double val(const expo_t *e, const char *name, const char *labels) {
    const sample_t *s = find(e, name, labels);
    if (!s) fail_msg("missing series %s{%s}", name, labels);
    return s->value;
}

static int n_series(const expo_t *e, const char *name) {
    int n = 0;
    for (int i = 0; i < e->ns; i++) n += !strcmp(e->s[i].name, name);
    return n;
}

static const char *type_of(expo_t *e, const char *name) {
    family_t *f = family(e, name, 0);
    return f ? f->type : "";
}

/* Undoes label escaping of the first value of `key` in labels; returns a static buffer. */
static const char *label_value(const char *labels, const char *key) {
    static char out[1024];
    char pat[64];
    snprintf(pat, sizeof pat, "%s=\"", key);
    const char *p = strstr(labels, pat);
    assert_non_null(p);
    p += strlen(pat);
    size_t n = 0;
    for (; *p != '"'; p++) {
        if (*p == '\\') p++, out[n++] = *p == 'n' ? '\n' : *p;
        else out[n++] = *p;
    }
    out[n] = '\0';
    return out;
}

/* ---- tests ---- */

static const char *const FAMILIES[][2] = {
    {"loramux_requests_total", "counter"},
    {"loramux_prompt_tokens_total", "counter"},
    {"loramux_generation_tokens_total", "counter"},
    {"loramux_time_to_first_token_seconds", "histogram"},
    {"loramux_inter_token_latency_seconds", "histogram"},
    {"loramux_e2e_request_latency_seconds", "histogram"},
    {"loramux_request_queue_time_seconds", "histogram"},
    {"loramux_requests_running", "gauge"},
    {"loramux_requests_waiting", "gauge"},
    {"loramux_kv_blocks_used", "gauge"},
    {"loramux_kv_blocks_total", "gauge"},
    {"loramux_adapters_resident", "gauge"},
    {"loramux_adapter_bytes_resident", "gauge"},
    {"loramux_adapter_loads_total", "counter"},
    {"loramux_adapter_evictions_total", "counter"},
    {"loramux_adapter_load_failures_total", "counter"},
    {"loramux_adapter_load_seconds", "histogram"},
    {"loramux_engine_step_seconds", "histogram"},
    {"loramux_engine_step_tokens", "histogram"},
    {"loramux_engine_step_adapters", "histogram"},
    {"vllm:num_requests_running", "gauge"},
    {"vllm:num_requests_waiting", "gauge"},
    {"vllm:kv_cache_usage_perc", "gauge"},
    {"vllm:lora_requests_info", "gauge"},
    {"vllm:prompt_tokens_total", "counter"},
    {"vllm:generation_tokens_total", "counter"},
};

static void test_exposition_parses(void **state) {
    (void)state;
    srv_met_t *m = srv_met_create(4);
    assert_non_null(m);
    /* empty registry */
    expo_t e = render_parse(m);
    for (size_t i = 0; i < sizeof FAMILIES / sizeof FAMILIES[0]; i++)
        assert_string_equal(type_of(&e, FAMILIES[i][0]), FAMILIES[i][1]);
    assert_int_equal(n_series(&e, "loramux_requests_total"), 0);
    assert_int_equal(n_series(&e, "vllm:lora_requests_info"), 0);
    assert_true(val(&e, "loramux_prompt_tokens_total", "adapter=\"base\"") == 0);
    assert_true(val(&e, "loramux_prompt_tokens_total", "adapter=\"other\"") == 0);
    expo_free(&e);

    /* something of everything */
    int a = srv_met_adapter(m, "sql-lora"), b = srv_met_adapter(m, NULL);
    srv_met_request_done(m, a, 200, 10, 20, 1.5, 0.01, 0.2);
    srv_met_request_done(m, b, 429, 5, 0, 0.001, -1, -1);
    srv_met_request_done(m, a, 42, 0, 0, 0.5, 0.1, -1);
    int ads[3] = {a, b, a};
    double sec[3] = {0.02, 0.03, 0.04};
    srv_met_itl(m, ads, sec, 3);
    srv_met_step(m, 0.05, 17, 2);
    srv_met_gauges(m, 2, 1, 10, 40, 3, 1 << 20);
    srv_met_adapter_load(m, 0.3, 1);
    srv_met_adapter_load(m, 0.3, 0);
    srv_met_adapter_evicted(m);
    assert_int_equal(srv_met_lora_info(m, 4, "sql-lora", ""), 0);
    e = render_parse(m);
    for (size_t i = 0; i < sizeof FAMILIES / sizeof FAMILIES[0]; i++) {
        family_t *f = family(&e, FAMILIES[i][0], 0);
        assert_non_null(f);
        assert_true(f->n_samples > 0);
    }
    assert_true(val(&e, "loramux_requests_total", "adapter=\"sql-lora\",status=\"200\"") == 1);
    assert_true(val(&e, "loramux_requests_total", "adapter=\"base\",status=\"429\"") == 1);
    assert_true(val(&e, "loramux_requests_total", "adapter=\"sql-lora\",status=\"unknown\"") == 1);
    assert_int_equal(n_series(&e, "loramux_requests_total"), 3);
    expo_free(&e);

    char *t = srv_met_render(m);
    assert_non_null(strstr(t, "# TYPE loramux_requests_total counter\n"));
    assert_non_null(strstr(t, "loramux_engine_step_tokens_bucket{le=\"+Inf\"} 1\n"));
    free(t);
    srv_met_free(m);
}

static void test_counters_accumulate(void **state) {
    (void)state;
    srv_met_t *m = srv_met_create(8);
    int a = srv_met_adapter(m, "a"), b = srv_met_adapter(m, "b");
    assert_int_equal(a, 2);
    assert_int_equal(b, 3);
    assert_int_equal(srv_met_adapter(m, "a"), a);
    for (int i = 0; i < 7; i++) srv_met_request_done(m, a, 200, 3, 11, 0.1, 0.0, 0.01);
    srv_met_request_done(m, a, 500, 1, 0, 0.1, 0.0, -1);
    srv_met_request_done(m, b, 200, 100, 1, 0.1, 0.0, 0.01);
    srv_met_request_done(m, SRV_MET_BASE, 200, 2, 2, 0.1, 0.0, 0.01);
    srv_met_request_done(m, a, 200, -5, -5, -1, -1, -1); /* negative counts add nothing */
    for (int i = 0; i < 5; i++) srv_met_adapter_load(m, 0.01, 1);
    for (int i = 0; i < 2; i++) srv_met_adapter_load(m, 0.01, 0);
    for (int i = 0; i < 3; i++) srv_met_adapter_evicted(m);

    expo_t e = render_parse(m);
    assert_true(val(&e, "loramux_requests_total", "adapter=\"a\",status=\"200\"") == 8);
    assert_true(val(&e, "loramux_requests_total", "adapter=\"a\",status=\"500\"") == 1);
    assert_true(val(&e, "loramux_requests_total", "adapter=\"b\",status=\"200\"") == 1);
    assert_true(val(&e, "loramux_requests_total", "adapter=\"base\",status=\"200\"") == 1);
    assert_true(val(&e, "loramux_prompt_tokens_total", "adapter=\"a\"") == 22);
    assert_true(val(&e, "loramux_generation_tokens_total", "adapter=\"a\"") == 77);
    assert_true(val(&e, "loramux_prompt_tokens_total", "adapter=\"b\"") == 100);
    assert_true(val(&e, "loramux_generation_tokens_total", "adapter=\"base\"") == 2);
    assert_true(val(&e, "loramux_prompt_tokens_total", "adapter=\"other\"") == 0);
    assert_true(val(&e, "vllm:prompt_tokens_total", "") == 124);
    assert_true(val(&e, "vllm:generation_tokens_total", "") == 80);
    assert_true(val(&e, "loramux_adapter_loads_total", "") == 5);
    assert_true(val(&e, "loramux_adapter_load_failures_total", "") == 2);
    assert_true(val(&e, "loramux_adapter_evictions_total", "") == 3);
    assert_true(val(&e, "loramux_adapter_load_seconds_count", "") == 5);
    /* the request with all durations negative observed nothing */
    assert_true(val(&e, "loramux_e2e_request_latency_seconds_count", "adapter=\"a\"") == 8);
    assert_true(val(&e, "loramux_time_to_first_token_seconds_count", "adapter=\"a\"") == 7);
    expo_free(&e);

    /* counters keep growing across renders */
    srv_met_request_done(m, a, 200, 1, 1, 0.1, 0.0, 0.01);
    e = render_parse(m);
    assert_true(val(&e, "loramux_requests_total", "adapter=\"a\",status=\"200\"") == 9);
    assert_true(val(&e, "vllm:prompt_tokens_total", "") == 125);
    expo_free(&e);
    srv_met_free(m);
}

static void test_histogram_buckets(void **state) {
    (void)state;
    srv_met_t *m = srv_met_create(1);
    int a = srv_met_adapter(m, "h");
    /* e2e observations: below the first bound, on a bound (le is inclusive), between bounds,
     * above the last; NaN and inf are dropped. */
    double obs[] = {0.0005, 0.001, 0.3, 0.31, 100.0};
    for (int i = 0; i < 5; i++) srv_met_request_done(m, a, 200, 0, 0, obs[i], -1, -1);
    srv_met_request_done(m, a, 200, 0, 0, NAN, INFINITY, -INFINITY);
    int toks[] = {1, 3, 4096, 5000, 0};
    for (int i = 0; i < 5; i++) srv_met_step(m, 0.001 * (i + 1), toks[i], i);

    expo_t e = render_parse(m);
    const char *h = "loramux_e2e_request_latency_seconds_bucket";
    assert_true(val(&e, h, "adapter=\"h\",le=\"0.001\"") == 2);
    assert_null(find(&e, h, "adapter=\"h\",le=\"0.25\"")); /* not a bound */
    assert_true(val(&e, h, "adapter=\"h\",le=\"0.2\"") == 2);
    assert_true(val(&e, h, "adapter=\"h\",le=\"0.3\"") == 3);
    assert_true(val(&e, h, "adapter=\"h\",le=\"0.5\"") == 4);
    assert_true(val(&e, h, "adapter=\"h\",le=\"60\"") == 4);
    assert_true(val(&e, h, "adapter=\"h\",le=\"+Inf\"") == 5);
    assert_true(val(&e, "loramux_e2e_request_latency_seconds_count", "adapter=\"h\"") == 5);
    assert_true(val(&e, "loramux_e2e_request_latency_seconds_sum", "adapter=\"h\"") ==
                0.0005 + 0.001 + 0.3 + 0.31 + 100.0);
    assert_true(val(&e, "loramux_request_queue_time_seconds_count", "adapter=\"h\"") == 0);
    assert_true(val(&e, "loramux_e2e_request_latency_seconds_count", "adapter=\"base\"") == 0);
    int n_buckets = 0;
    for (int i = 0; i < e.ns; i++)
        n_buckets += !strcmp(e.s[i].name, h) && !strncmp(e.s[i].labels, "adapter=\"h\"", 11);
    assert_int_equal(n_buckets, 21); /* 20 bounds + +Inf */

    const char *t = "loramux_engine_step_tokens_bucket";
    assert_true(val(&e, t, "le=\"1\"") == 2); /* 0 and 1 */
    assert_true(val(&e, t, "le=\"2\"") == 2);
    assert_true(val(&e, t, "le=\"4\"") == 3);
    assert_true(val(&e, t, "le=\"2048\"") == 3);
    assert_true(val(&e, t, "le=\"4096\"") == 4);
    assert_true(val(&e, t, "le=\"+Inf\"") == 5);
    assert_true(val(&e, "loramux_engine_step_tokens_sum", "") == 1 + 3 + 4096 + 5000);
    const char *ad = "loramux_engine_step_adapters_bucket";
    assert_true(val(&e, ad, "le=\"0\"") == 1);
    assert_true(val(&e, ad, "le=\"2\"") == 3);
    assert_true(val(&e, ad, "le=\"+Inf\"") == 5);
    assert_true(val(&e, "loramux_engine_step_seconds_count", "") == 5);

    /* ITL: a whole step in one call; out-of-range indices count as "other". */
    int ads[4] = {a, a, SRV_MET_BASE, 99};
    double sec[4] = {0.004, 0.02, 0.5, 0.003};
    srv_met_itl(m, ads, sec, 4);
    expo_free(&e);
    e = render_parse(m);
    const char *itl = "loramux_inter_token_latency_seconds_bucket";
    assert_true(val(&e, itl, "adapter=\"h\",le=\"0.005\"") == 1);
    assert_true(val(&e, itl, "adapter=\"h\",le=\"0.025\"") == 2);
    assert_true(val(&e, "loramux_inter_token_latency_seconds_count", "adapter=\"h\"") == 2);
    assert_true(val(&e, "loramux_inter_token_latency_seconds_sum", "adapter=\"h\"") ==
                0.004 + 0.02);
    assert_true(val(&e, "loramux_inter_token_latency_seconds_count", "adapter=\"base\"") == 1);
    assert_true(val(&e, "loramux_inter_token_latency_seconds_count", "adapter=\"other\"") == 1);
    expo_free(&e);
    srv_met_free(m);
}

/* Distinct adapter label values of one family. */
static int distinct_adapters(const expo_t *e, const char *name, char seen[][64]) {
    int n = 0;
    for (int i = 0; i < e->ns; i++) {
        if (strcmp(e->s[i].name, name)) continue;
        const char *v = label_value(e->s[i].labels, "adapter");
        int dup = 0;
        for (int j = 0; j < n; j++) dup |= !strcmp(seen[j], v);
        if (!dup) snprintf(seen[n++], 64, "%s", v);
    }
    return n;
}

static void test_cardinality_bounded(void **state) {
    (void)state;
    srv_met_t *m = srv_met_create(2);
    const char *names[5] = {"a", "b", "c", "d", "e"};
    int ix[5];
    for (int i = 0; i < 5; i++) ix[i] = srv_met_adapter(m, names[i]);
    assert_int_equal(ix[0], 2);
    assert_int_equal(ix[1], 3);
    for (int i = 2; i < 5; i++) assert_int_equal(ix[i], SRV_MET_OTHER);
    /* sticky: slots do not move however the traffic goes */
    assert_int_equal(srv_met_adapter(m, "b"), 3);
    assert_int_equal(srv_met_adapter(m, "e"), SRV_MET_OTHER);
    assert_int_equal(srv_met_adapter(m, NULL), SRV_MET_BASE);
    assert_int_equal(srv_met_adapter(m, ""), SRV_MET_BASE);
    for (int i = 0; i < 5; i++) srv_met_request_done(m, ix[i], 200, i + 1, 1, 0.1, 0.01, 0.05);
    srv_met_request_done(m, SRV_MET_BASE, 200, 100, 1, 0.1, 0.01, 0.05);

    expo_t e = render_parse(m);
    char seen[16][64];
    assert_int_equal(distinct_adapters(&e, "loramux_requests_total", seen), 4);
    assert_int_equal(distinct_adapters(&e, "loramux_prompt_tokens_total", seen), 4);
    assert_string_equal(seen[0], "base");
    assert_string_equal(seen[1], "a");
    assert_string_equal(seen[2], "b");
    assert_string_equal(seen[3], "other");
    assert_int_equal(n_series(&e, "loramux_time_to_first_token_seconds_count"), 4);
    /* "other" aggregates c, d and e */
    assert_true(val(&e, "loramux_requests_total", "adapter=\"other\",status=\"200\"") == 3);
    assert_true(val(&e, "loramux_prompt_tokens_total", "adapter=\"other\"") == 3 + 4 + 5);
    assert_true(val(&e, "loramux_e2e_request_latency_seconds_count", "adapter=\"other\"") == 3);
    assert_true(val(&e, "loramux_prompt_tokens_total", "adapter=\"base\"") == 100);
    assert_true(val(&e, "vllm:prompt_tokens_total", "") == 115);
    expo_free(&e);
    srv_met_free(m);

    /* K = 0: every adapter is "other"; the base model is still "base" */
    m = srv_met_create(0);
    assert_non_null(m);
    assert_int_equal(srv_met_adapter(m, "a"), SRV_MET_OTHER);
    assert_int_equal(srv_met_adapter(m, NULL), SRV_MET_BASE);
    srv_met_request_done(m, srv_met_adapter(m, "a"), 200, 1, 1, 0.1, 0.01, 0.05);
    e = render_parse(m);
    assert_int_equal(distinct_adapters(&e, "loramux_generation_tokens_total", seen), 2);
    assert_true(val(&e, "loramux_requests_total", "adapter=\"other\",status=\"200\"") == 1);
    expo_free(&e);
    srv_met_free(m);

    /* names that would pose as a fixed label take no slot */
    m = srv_met_create(2);
    assert_int_equal(srv_met_adapter(m, "base"), SRV_MET_OTHER);
    assert_int_equal(srv_met_adapter(m, "other"), SRV_MET_OTHER);
    assert_int_equal(srv_met_adapter(m, "x"), 2);
    /* two names equal after invalid UTF-8 is replaced: the second cannot get its own label */
    assert_int_equal(srv_met_adapter(m, "q\xff"), 3);
    srv_met_free(m);
    m = srv_met_create(3);
    assert_int_equal(srv_met_adapter(m, "q\xff"), 2);
    assert_int_equal(srv_met_adapter(m, "q\xfe"), SRV_MET_OTHER);
    assert_int_equal(srv_met_adapter(m, "q\xef\xbf\xbd"), SRV_MET_OTHER);
    assert_int_equal(srv_met_adapter(m, "r"), 3);
    srv_met_free(m);

    assert_null(srv_met_create(-1));
    assert_null(srv_met_create(SRV_MET_MAX_ADAPTER_LABELS + 1));
}

static void test_label_escaping(void **state) {
    (void)state;
    srv_met_t *m = srv_met_create(4);
    const char *weird = "we\"ird\\na\nme";
    int a = srv_met_adapter(m, weird);
    int u = srv_met_adapter(m, "caf\xc3\xa9-\xff-\xed\xa0\x80"); /* é, a stray byte, a surrogate */
    assert_int_equal(a, 2);
    assert_int_equal(u, 3);
    srv_met_request_done(m, a, 200, 1, 1, 0.1, 0.01, 0.05);
    srv_met_request_done(m, u, 200, 1, 1, 0.1, 0.01, 0.05);
    srv_met_lora_info(m, 2, weird, "x\"y");

    char *t = srv_met_render(m);
    assert_non_null(strstr(
        t, "loramux_requests_total{adapter=\"we\\\"ird\\\\na\\nme\",status=\"200\"} 1\n"));
    assert_non_null(strstr(t, "running_lora_adapters=\"we\\\"ird\\\\na\\nme\""));
    assert_non_null(strstr(t, "waiting_lora_adapters=\"x\\\"y\""));
    free(t);

    expo_t e = render_parse(m); /* the parser rejects bad escapes and invalid UTF-8 */
    char seen[16][64];
    assert_int_equal(distinct_adapters(&e, "loramux_prompt_tokens_total", seen), 4);
    assert_string_equal(seen[1], weird);
    assert_string_equal(seen[2], "caf\xc3\xa9-\xef\xbf\xbd-\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    for (int i = 0; i < e.ns; i++) {
        if (strcmp(e.s[i].name, "vllm:lora_requests_info")) continue;
        assert_string_equal(label_value(e.s[i].labels, "running_lora_adapters"), weird);
        assert_string_equal(label_value(e.s[i].labels, "waiting_lora_adapters"), "x\"y");
    }
    expo_free(&e);
    srv_met_free(m);
}

static double realtime_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void test_vllm_series(void **state) {
    (void)state;
    srv_met_t *m = srv_met_create(4);
    srv_met_gauges(m, 3, 5, 25, 100, 2, 123456789012LL);
    /* The value is CLOCK_REALTIME at the update; time() may read a coarser clock that
     * disagrees by a tick on some kernels, so bracket with the same clock and a second's slack. */
    double t0 = realtime_now() - 1;
    assert_int_equal(srv_met_lora_info(m, 4, "finance,support", ""), 0);
    double t1 = realtime_now() + 1;
    expo_t e = render_parse(m);
    assert_true(val(&e, "vllm:num_requests_running", "") == 3);
    assert_true(val(&e, "vllm:num_requests_waiting", "") == 5);
    assert_true(val(&e, "vllm:kv_cache_usage_perc", "") == 0.25);
    assert_true(val(&e, "loramux_requests_running", "") == 3);
    assert_true(val(&e, "loramux_requests_waiting", "") == 5);
    assert_true(val(&e, "loramux_kv_blocks_used", "") == 25);
    assert_true(val(&e, "loramux_kv_blocks_total", "") == 100);
    assert_true(val(&e, "loramux_adapters_resident", "") == 2);
    assert_true(val(&e, "loramux_adapter_bytes_resident", "") == 123456789012.0);
    double ts = val(&e, "vllm:lora_requests_info",
                    "max_lora=\"4\",running_lora_adapters=\"finance,support\","
                    "waiting_lora_adapters=\"\"");
    assert_true(ts >= t0 && ts <= t1);
    assert_true(val(&e, "vllm:prompt_tokens_total", "") == 0);
    assert_true(val(&e, "vllm:generation_tokens_total", "") == 0);
    expo_free(&e);

    /* an update replaces the info series, it does not add one */
    srv_met_gauges(m, 0, 0, 0, 0, 0, 0);
    assert_int_equal(srv_met_lora_info(m, 2, NULL, "support"), 0);
    e = render_parse(m);
    assert_int_equal(n_series(&e, "vllm:lora_requests_info"), 1);
    assert_non_null(find(&e, "vllm:lora_requests_info",
                         "max_lora=\"2\",running_lora_adapters=\"\","
                         "waiting_lora_adapters=\"support\""));
    assert_true(val(&e, "vllm:kv_cache_usage_perc", "") == 0); /* kv_total 0 */
    expo_free(&e);

    /* a longer list than before (the buffers grow), then a shorter one */
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(srv_met_lora_info(m, 8, big, big), 0);
    assert_int_equal(srv_met_lora_info(m, 8, "z", ""), 0);
    e = render_parse(m);
    assert_non_null(find(&e, "vllm:lora_requests_info",
                         "max_lora=\"8\",running_lora_adapters=\"z\",waiting_lora_adapters=\"\""));
    expo_free(&e);
    srv_met_free(m);
}

/* ---- concurrency ---- */

#define N_THREADS 4
#define N_ITER 20000
static const char *const CNAMES[3] = {"x", "y", "z"};

typedef struct {
    srv_met_t *m;
    int id;
    int renders_ok;
} worker_t;

static void *worker(void *arg) {
    worker_t *w = arg;
    for (int i = 0; i < N_ITER; i++) {
        int a = srv_met_adapter(w->m, CNAMES[(w->id + i) % 3]);
        srv_met_request_done(w->m, a, 200, 3, 5, 0.0078125, 0.0009765625, 0.001953125);
        int ads[4] = {a, a, SRV_MET_BASE, a};
        double sec[4] = {0.0078125, 0.0078125, 0.0078125, 0.0078125};
        srv_met_itl(w->m, ads, sec, 4);
        srv_met_step(w->m, 0.015625, 7, 2);
        srv_met_gauges(w->m, w->id, i, 1, 2, 3, 4);
        srv_met_adapter_load(w->m, 0.03125, i % 2);
        srv_met_adapter_evicted(w->m);
        srv_met_lora_info(w->m, 4, CNAMES[i % 3], i % 2 ? "x,y,z" : "");
        if (w->id == 0 && i % 2000 == 0) {
            char *t = srv_met_render(w->m);
            w->renders_ok += t != NULL;
            free(t);
        }
    }
    return NULL;
}

static void test_concurrent_exact(void **state) {
    (void)state;
    srv_met_t *m = srv_met_create(3);
    pthread_t th[N_THREADS];
    worker_t w[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (worker_t){m, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(w[0].renders_ok, N_ITER / 2000);

    long per[3] = {0, 0, 0};
    for (int t = 0; t < N_THREADS; t++)
        for (int i = 0; i < N_ITER; i++) per[(t + i) % 3]++;
    const double total = (double)N_THREADS * N_ITER;

    expo_t e = render_parse(m);
    char lab[64];
    for (int k = 0; k < 3; k++) {
        snprintf(lab, sizeof lab, "adapter=\"%s\",status=\"200\"", CNAMES[k]);
        assert_true(val(&e, "loramux_requests_total", lab) == (double)per[k]);
        snprintf(lab, sizeof lab, "adapter=\"%s\"", CNAMES[k]);
        assert_true(val(&e, "loramux_prompt_tokens_total", lab) == 3.0 * per[k]);
        assert_true(val(&e, "loramux_generation_tokens_total", lab) == 5.0 * per[k]);
        assert_true(val(&e, "loramux_inter_token_latency_seconds_count", lab) == 3.0 * per[k]);
        assert_true(val(&e, "loramux_e2e_request_latency_seconds_sum", lab) ==
                    0.0078125 * per[k]);
    }
    assert_true(val(&e, "loramux_inter_token_latency_seconds_count", "adapter=\"base\"") ==
                total);
    assert_true(val(&e, "vllm:prompt_tokens_total", "") == 3 * total);
    assert_true(val(&e, "vllm:generation_tokens_total", "") == 5 * total);
    assert_true(val(&e, "loramux_engine_step_seconds_count", "") == total);
    assert_true(val(&e, "loramux_engine_step_tokens_sum", "") == 7 * total);
    assert_true(val(&e, "loramux_engine_step_adapters_bucket", "le=\"2\"") == total);
    assert_true(val(&e, "loramux_adapter_loads_total", "") == total / 2);
    assert_true(val(&e, "loramux_adapter_load_failures_total", "") == total / 2);
    assert_true(val(&e, "loramux_adapter_load_seconds_sum", "") == 0.03125 * total / 2);
    assert_true(val(&e, "loramux_adapter_evictions_total", "") == total);
    assert_int_equal(n_series(&e, "vllm:lora_requests_info"), 1);
    expo_free(&e);
    srv_met_free(m);
}

/* The checker itself must reject what Prometheus rejects, or the tests above prove nothing. */
static int parse_ok(const char *text) {
    expo_t e = {0};
    family_t *last = NULL;
    char buf[512], why[256];
    int rc = 0;
    snprintf(buf, sizeof buf, "%s", text);
    for (char *line = strtok(buf, "\n"); line && !rc; line = strtok(NULL, "\n"))
        rc = parse_line(&e, line, &last, why);
    expo_free(&e);
    return rc == 0;
}

static void test_parser_rejects(void **state) {
    (void)state;
    const char *hdr = "# HELP a_total h\n# TYPE a_total counter\n";
    char t[256];
    assert_true(parse_ok("# HELP a_total h\n# TYPE a_total counter\na_total{x=\"1\"} 2\n"));
    assert_false(parse_ok("a_total 1\n"));                               /* no HELP/TYPE */
    assert_false(parse_ok("# TYPE a_total counter\na_total 1\n"));      /* no HELP */
    assert_false(parse_ok("# HELP a h\n# TYPE a counter\na 1\n"));     /* counter w/o _total */
    snprintf(t, sizeof t, "%sa_total{x=\"a\\tb\"} 1\n", hdr);          /* bad escape */
    assert_false(parse_ok(t));
    snprintf(t, sizeof t, "%sa_total{x=\"a\xff\"} 1\n", hdr);           /* bad UTF-8 */
    assert_false(parse_ok(t));
    snprintf(t, sizeof t, "%sa_total{x=\"1\"} 1\na_total{x=\"1\"} 2\n", hdr); /* duplicate */
    assert_false(parse_ok(t));
    snprintf(t, sizeof t, "%sa_total 1x\n", hdr);                        /* bad value */
    assert_false(parse_ok(t));
    snprintf(t, sizeof t, "%sa_total{x=\"1\"} 1\n# HELP b g\n# TYPE b gauge\nb 1\n"
             "a_total{x=\"2\"} 1\n", hdr); /* family split by another */
    assert_false(parse_ok(t));
    assert_false(parse_ok("# HELP h h\n# TYPE h histogram\nh_bucket 1\n")); /* no le */
}

static void test_null_safe(void **state) {
    (void)state;
    srv_met_free(NULL);
    assert_int_equal(srv_met_adapter(NULL, NULL), SRV_MET_BASE);
    assert_int_equal(srv_met_adapter(NULL, "a"), SRV_MET_OTHER);
    srv_met_request_done(NULL, 0, 200, 1, 1, 0.1, 0.1, 0.1);
    srv_met_itl(NULL, NULL, NULL, 3);
    srv_met_step(NULL, 0.1, 1, 1);
    srv_met_gauges(NULL, 1, 1, 1, 1, 1, 1);
    srv_met_adapter_load(NULL, 0.1, 1);
    srv_met_adapter_evicted(NULL);
    assert_int_equal(srv_met_lora_info(NULL, 1, "a", "b"), 0);
    assert_null(srv_met_render(NULL));
    srv_met_t *m = srv_met_create(1);
    srv_met_itl(m, NULL, NULL, 3); /* no arrays: nothing recorded */
    srv_met_request_done(m, -7, 200, 1, 1, 0.1, 0.1, 0.1); /* bad index: "other" */
    srv_met_request_done(m, 3, 200, 1, 1, 0.1, 0.1, 0.1);  /* unclaimed slot: "other" */
    expo_t e = render_parse(m);
    assert_true(val(&e, "loramux_requests_total", "adapter=\"other\",status=\"200\"") == 2);
    assert_true(val(&e, "loramux_inter_token_latency_seconds_count", "adapter=\"other\"") == 0);
    expo_free(&e);
    srv_met_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exposition_parses),
        cmocka_unit_test(test_counters_accumulate),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_cardinality_bounded),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_vllm_series),
        cmocka_unit_test(test_concurrent_exact),
        cmocka_unit_test(test_parser_rejects),
        cmocka_unit_test(test_null_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
