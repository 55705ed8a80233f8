/* srv_config.c: the settings of `loramux serve` from defaults, a JSON file, LORAMUX_*
 * variables and flags. Everything is driven by SRV_CFG_MAP (srv_config.h). */
#include "srv_config.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- types ---- */

typedef enum { K_STR, K_INT, K_I64, K_DBL, K_BOOL, K_LOG, K_ENUM } kind_t;

typedef struct {
    const char *name;
    kind_t kind;
    size_t off;       /* offsetof(srv_config_t, name) */
    const char *def;  /* default, as text */
    double lo, hi;    /* inclusive range of INT/I64/DBL (exact in a double up to 2^53) */
    const char *meta; /* placeholder of the value in --help: "N", "DIR", ... */
    const char *help;
} setting_t;

static const setting_t k_set[SRV_CFG_COUNT] = {
#define XX(name, kind, def, lo, hi, meta, help) \
    {#name, K_##kind, offsetof(srv_config_t, name), def, lo, hi, meta, help},
    SRV_CFG_MAP(XX)
#undef XX
};

static const char *const k_log_names[] = {
#define XX(n, s) s,
    SRV_LOG_LEVEL_MAP(XX)
#undef XX
};
#define N_LOG_LEVELS ((int)(sizeof k_log_names / sizeof k_log_names[0]))

#define ENV_PREFIX "LORAMUX_"
#define ENV_PREFIX_LEN 8
#define NAME_MAX_LEN 64 /* longest setting name + room; names are short identifiers */
#define HELP_COL 32     /* column where the meaning starts in --help */
#define HELP_WIDTH 100

/* LORAMUX_* variables that are not settings but are allowed in the environment (the tests'
 * and benchmarks': LORAMUX_FIXTURES, LORAMUX_BIN, LORAMUX_DOCKER_TEST). */
static const char *const k_env_other[] = {"CONFIG", "FIXTURES", "BIN", "DOCKER_TEST", NULL};

/* ---- enumerations: the choices are the setting's metavar, "a|b|c" ---- */

int srv_cfg_enum_index(const char *choices, const char *text) {
    size_t len = strlen(text);
    int ix = 0;
    for (const char *p = choices; *p; ix++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && len && !strncmp(p, text, n)) return ix;
        if (!bar) break;
        p = bar + 1;
    }
    return -1;
}

const char *srv_cfg_enum_name(const char *choices, int ix, char *buf, size_t cap) {
    const char *p = choices;
    for (int i = 0; i < ix && p; i++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    if (!p) return "?";
    const char *bar = strchr(p, '|');
    size_t n = bar ? (size_t)(bar - p) : strlen(p);
    snprintf(buf, cap, "%.*s", (int)n, p);
    return buf;
}

/* ---- names ---- */

/* "max_running" → "max-running" (kebab) or "MAX_RUNNING" (env). */
static void kebab(const char *name, char *out, size_t n) {
    size_t i = 0;
    for (; name[i] && i + 1 < n; i++) out[i] = name[i] == '_' ? '-' : name[i];
    out[i] = '\0';
}

static void upper(const char *name, char *out, size_t n) {
    size_t i = 0;
    for (; name[i] && i + 1 < n; i++) out[i] = (char)toupper((unsigned char)name[i]);
    out[i] = '\0';
}

/* Levenshtein distance of two short strings (each truncated to NAME_MAX_LEN). */
static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > NAME_MAX_LEN) la = NAME_MAX_LEN;
    if (lb > NAME_MAX_LEN) lb = NAME_MAX_LEN;
    int row[NAME_MAX_LEN + 1];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The setting whose name is closest to what was typed (len bytes; compared in lower case with
 * '-' read as '_'), or NULL when none is close: a typo hint, never a match. */
static const setting_t *suggest(const char *typed, size_t len) {
    char t[NAME_MAX_LEN + 1];
    if (len > NAME_MAX_LEN) return NULL;
    for (size_t i = 0; i < len; i++)
        t[i] = typed[i] == '-' ? '_' : (char)tolower((unsigned char)typed[i]);
    t[len] = '\0';
    const setting_t *best = NULL;
    int best_d = INT_MAX;
    for (int i = 0; i < SRV_CFG_COUNT; i++) {
        int d = edit_distance(t, k_set[i].name);
        if (d < best_d) best_d = d, best = &k_set[i];
    }
    return best_d <= 2 && (size_t)best_d < len ? best : NULL;
}

/* Index of the setting named exactly name[0..len), or -1. */
static int find_name(const char *name, size_t len) {
    for (int i = 0; i < SRV_CFG_COUNT; i++)
        if (strlen(k_set[i].name) == len && memcmp(k_set[i].name, name, len) == 0) return i;
    return -1;
}

/* Index of the setting whose flag (without "--") is exactly flag[0..len), or -1. */
static int find_flag(const char *flag, size_t len) {
    char k[NAME_MAX_LEN];
    for (int i = 0; i < SRV_CFG_COUNT; i++) {
        kebab(k_set[i].name, k, sizeof k);
        if (strlen(k) == len && memcmp(k, flag, len) == 0) return i;
    }
    return -1;
}

/* Index of the setting whose variable is LORAMUX_ + var[0..len), or -1. */
static int find_env(const char *var, size_t len) {
    char u[NAME_MAX_LEN];
    for (int i = 0; i < SRV_CFG_COUNT; i++) {
        upper(k_set[i].name, u, sizeof u);
        if (strlen(u) == len && memcmp(u, var, len) == 0) return i;
    }
    return -1;
}

/* ---- values ---- */

static void *field(srv_config_t *c, int idx) { return (char *)c + k_set[idx].off; }

static const char *range_text(const setting_t *s, char *buf, size_t n) {
    snprintf(buf, n, "%.15g..%.15g", s->lo, s->hi);
    return buf;
}

/* Whole base-10 integer without surrounding blanks. Returns 0, -1 (not an integer) or
 * -2 (an integer too large for long long). */
static int parse_ll(const char *s, long long *out) {
    if (!*s || isspace((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end) return -1;
    if (errno == ERANGE) return -2;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out) {
    static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0",
                                                                               "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) return *out = true, 0;
        if (strcasecmp(s, no[i]) == 0) return *out = false, 0;
    }
    return -1;
}

/* Sets setting idx of c from text. label names the source in messages ("--port",
 * "LORAMUX_PORT", "cfg.json: \"port\""); shown is how the value is quoted in them (NULL: the
 * text in double quotes). Leaves c unchanged on failure. */
static int set_text(srv_config_t *c, int idx, const char *text, const char *label,
                    const char *shown, llm_error_t *err) {
    const setting_t *s = &k_set[idx];
    char q[160], range[80];
    if (!shown) {
        snprintf(q, sizeof q, "\"%.150s\"", text);
        shown = q;
    }
    switch (s->kind) {
    case K_STR: {
        char *dup = strdup(text);
        if (!dup) return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", label);
        char **p = field(c, idx);
        free(*p);
        *p = dup;
        return 0;
    }
    case K_INT:
    case K_I64: {
        long long v = 0;
        int rc = parse_ll(text, &v);
        if (rc == -1)
            return llm_err_set(err, LLM_EINVAL, "%s: expected an integer in %s, got %s", label,
                               range_text(s, range, sizeof range), shown);
        if (rc == -2 || v < (long long)s->lo || v > (long long)s->hi)
            return llm_err_set(err, LLM_ERANGE, "%s: %s is out of range (%s)", label, shown,
                               range_text(s, range, sizeof range));
        if (s->kind == K_INT) *(int *)field(c, idx) = (int)v;
        else *(int64_t *)field(c, idx) = (int64_t)v;
        return 0;
    }
    case K_DBL: {
        char *end;
        double v = (*text && !isspace((unsigned char)*text)) ? strtod(text, &end) : NAN;
        if (isnan(v) || *end)
            return llm_err_set(err, LLM_EINVAL, "%s: expected a number in %s, got %s", label,
                               range_text(s, range, sizeof range), shown);
        if (!(v >= s->lo && v <= s->hi)) /* also catches inf */
            return llm_err_set(err, LLM_ERANGE, "%s: %s is out of range (%s)", label, shown,
                               range_text(s, range, sizeof range));
        *(double *)field(c, idx) = v;
        return 0;
    }
    case K_BOOL: {
        bool v;
        if (parse_bool(text, &v) != 0)
            return llm_err_set(err, LLM_EINVAL, "%s: expected true or false, got %s", label,
                               shown);
        *(bool *)field(c, idx) = v;
        return 0;
    }
    case K_ENUM: {
        int ix = srv_cfg_enum_index(s->meta, text);
        if (ix >= 0) {
            *(int *)field(c, idx) = ix;
            return 0;
        }
        return llm_err_set(err, LLM_EINVAL, "%s: expected one of %s, got %s", label, s->meta,
                           shown);
    }
    case K_LOG:
        for (int l = 0; l < N_LOG_LEVELS; l++)
            if (strcmp(text, k_log_names[l]) == 0) {
                *(srv_log_level_t *)field(c, idx) = (srv_log_level_t)l;
                return 0;
            }
        return llm_err_set(err, LLM_EINVAL,
                           "%s: expected one of error, warn, info, debug, got %s", label, shown);
    }
    return llm_err_set(err, LLM_EINVAL, "%s: bad setting kind", label); /* not reached */
}

/* What a JSON value of this kind must be, for messages. */
static const char *json_expect(const setting_t *s, char *buf, size_t n) {
    char range[80];
    switch (s->kind) {
    case K_STR: return "a string";
    case K_INT:
    case K_I64: snprintf(buf, n, "an integer in %s", range_text(s, range, sizeof range)); break;
    case K_DBL: snprintf(buf, n, "a number in %s", range_text(s, range, sizeof range)); break;
    case K_BOOL: return "true or false";
    case K_LOG: return "one of \"error\", \"warn\", \"info\", \"debug\"";
    case K_ENUM: snprintf(buf, n, "one of %s", s->meta); break;
    }
    return buf;
}

/* Sets setting idx from a JSON value of the config file: checks the JSON type, then parses
 * the value's text like a flag value, so ranges and messages are the same everywhere. */
static int set_json(srv_config_t *c, int idx, const cJSON *v, const char *file,
                    llm_error_t *err) {
    const setting_t *s = &k_set[idx];
    char label[400], shown[96], expect[96];
    snprintf(label, sizeof label, "%.300s: \"%s\"", file, s->name);
    char *printed = cJSON_PrintUnformatted(v);
    if (!printed) return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", label);
    if (strlen(printed) > 80) snprintf(shown, sizeof shown, "%.77s...", printed);
    else snprintf(shown, sizeof shown, "%s", printed);
    free(printed);

    int ok;
    switch (s->kind) {
    case K_STR:
    case K_ENUM:
    case K_LOG: ok = cJSON_IsString(v); break;
    case K_BOOL: ok = cJSON_IsBool(v); break;
    default: ok = cJSON_IsNumber(v); break;
    }
    if (!ok)
        return llm_err_set(err, LLM_EINVAL, "%s: expected %s, got %s", label,
                           json_expect(s, expect, sizeof expect), shown);
    const char *text;
    char num[64];
    if (cJSON_IsString(v)) {
        text = v->valuestring;
    } else if (cJSON_IsBool(v)) {
        text = cJSON_IsTrue(v) ? "true" : "false";
    } else if ((s->kind == K_INT || s->kind == K_I64) && v->valuedouble == floor(v->valuedouble)) {
        /* exact digits whatever cJSON's %g format does with large values (1e3 is 1000) */
        if (fabs(v->valuedouble) >= 9.0e15)
            return llm_err_set(err, LLM_ERANGE, "%s: %s is out of range (%s)", label, shown,
                               range_text(s, num, sizeof num));
        snprintf(num, sizeof num, "%.0f", v->valuedouble);
        text = num;
    } else {
        text = shown; /* cJSON's own text of the number; 2.5 is then "not an integer" */
    }
    return set_text(c, idx, text, label, shown, err);
}

/* ---- sources ---- */

static int set_defaults(srv_config_t *c, llm_error_t *err) {
    for (int i = 0; i < SRV_CFG_COUNT; i++) {
        char label[NAME_MAX_LEN + 16];
        snprintf(label, sizeof label, "default of %s", k_set[i].name);
        int rc = set_text(c, i, k_set[i].def, label, NULL, err);
        if (rc) return rc;
        c->source[i] = SRV_CFG_SRC_DEFAULT;
    }
    return 0;
}

/* Line and column (1-based) of pos in text, for JSON syntax errors. */
static void line_col(const char *text, const char *pos, int *line, int *col) {
    *line = 1, *col = 1;
    for (const char *p = text; p < pos && *p; p++) {
        if (*p == '\n') ++*line, *col = 1;
        else ++*col;
    }
}

static int read_file(const char *path, char **out, size_t *len, llm_error_t *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return llm_err_set(err, -e, "config file %s: %s", path, strerror(e));
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) {
            char *nb = realloc(buf, cap ? cap * 2 : 8192);
            if (!nb) {
                free(buf);
                fclose(f);
                return llm_err_set(err, LLM_ENOMEM, "config file %s: out of memory", path);
            }
            buf = nb, cap = cap ? cap * 2 : 8192;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    int e = errno;
    fclose(f);
    if (bad) {
        free(buf);
        return llm_err_set(err, e ? -e : LLM_EIO, "config file %s: read error: %s", path,
                           strerror(e ? e : EIO));
    }
    buf[n] = '\0';
    *out = buf, *len = n;
    return 0;
}

static int load_file(srv_config_t *c, const char *path, llm_error_t *err) {
    char *text = NULL;
    size_t len = 0;
    bool seen[SRV_CFG_COUNT] = {0};
    cJSON *root = NULL;
    int rc = read_file(path, &text, &len, err);
    if (rc) return rc;
    if (strlen(text) != len) {
        rc = llm_err_set(err, LLM_EFORMAT, "config file %s: contains a NUL byte", path);
        goto fail;
    }
    const char *end = NULL;
    root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        int line, col;
        line_col(text, end ? end : text, &line, &col);
        rc = llm_err_set(err, LLM_EFORMAT, "config file %s: not valid JSON (line %d, column %d)",
                         path, line, col);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        rc = llm_err_set(err, LLM_EFORMAT, "config file %s: expected a JSON object {...}", path);
        goto fail;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        const char *key = it->string;
        if (strncmp(key, "//", 2) == 0) continue; /* comment */
        int idx = find_name(key, strlen(key));
        if (idx < 0) {
            const setting_t *s = suggest(key, strlen(key));
            char hint[NAME_MAX_LEN + 32] = "";
            if (s) snprintf(hint, sizeof hint, " (did you mean \"%s\"?)", s->name);
            rc = llm_err_set(err, LLM_EINVAL, "%s: key \"%.100s\" is not a setting%s", path, key,
                             hint);
            goto fail;
        }
        if (seen[idx]) {
            rc = llm_err_set(err, LLM_EINVAL, "%s: key \"%s\" appears twice", path, key);
            goto fail;
        }
        seen[idx] = true;
        rc = set_json(c, idx, it, path, err);
        if (rc) goto fail;
        c->source[idx] = SRV_CFG_SRC_FILE;
    }
    rc = 0;
fail:
    cJSON_Delete(root);
    free(text);
    return rc;
}

static bool env_is_other(const char *var, size_t len) {
    for (int i = 0; k_env_other[i]; i++)
        if (strlen(k_env_other[i]) == len && memcmp(k_env_other[i], var, len) == 0) return true;
    return false;
}

/* Applies every LORAMUX_<NAME>=VALUE of envp, in envp's order. */
static int load_env(srv_config_t *c, char **envp, llm_error_t *err) {
    for (size_t e = 0; envp && envp[e]; e++) {
        const char *kv = envp[e];
        if (strncmp(kv, ENV_PREFIX, ENV_PREFIX_LEN) != 0) continue;
        const char *eq = strchr(kv, '=');
        if (!eq) continue;
        const char *var = kv + ENV_PREFIX_LEN;
        size_t vlen = (size_t)(eq - var), full = (size_t)(eq - kv);
        if (env_is_other(var, vlen)) continue;
        int idx = find_env(var, vlen);
        if (idx < 0) {
            const setting_t *s = suggest(var, vlen);
            char hint[NAME_MAX_LEN + 40] = "", u[NAME_MAX_LEN];
            if (s) {
                upper(s->name, u, sizeof u);
                snprintf(hint, sizeof hint, " (did you mean " ENV_PREFIX "%s?)", u);
            }
            return llm_err_set(err, LLM_EINVAL,
                               "%.*s: not a setting%s; see loramux serve --help", (int)full, kv,
                               hint);
        }
        char label[NAME_MAX_LEN + ENV_PREFIX_LEN];
        snprintf(label, sizeof label, "%.*s", (int)full, kv);
        int rc = set_text(c, idx, eq + 1, label, NULL, err);
        if (rc) return rc;
        c->source[idx] = SRV_CFG_SRC_ENV;
    }
    return 0;
}

/* The config file named by LORAMUX_CONFIG (NULL when unset or empty). Borrowed from envp. */
static const char *env_config(char **envp) {
    const char *path = NULL;
    for (size_t e = 0; envp && envp[e]; e++)
        if (strncmp(envp[e], ENV_PREFIX "CONFIG=", ENV_PREFIX_LEN + 7) == 0)
            path = envp[e] + ENV_PREFIX_LEN + 7;
    return path && *path ? path : NULL;
}

/* One pass over argv. With c == NULL it only checks the flags' syntax and names and records
 * the last --config (borrowed from argv) and whether --help was given (returns 1 at it);
 * with c it applies the values. */
static int scan_flags(int argc, char **argv, srv_config_t *c, const char **config,
                      llm_error_t *err) {
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            if (!c) return 1;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
            return llm_err_set(err, LLM_EINVAL,
                               "unexpected argument \"%.100s\"; serve takes only --options "
                               "(see loramux serve --help)",
                               arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        char label[NAME_MAX_LEN + 8];
        snprintf(label, sizeof label, "--%.*s", (int)(len < NAME_MAX_LEN ? len : NAME_MAX_LEN),
                 name);

        bool is_config = len == 6 && memcmp(name, "config", 6) == 0;
        int idx = is_config ? -1 : find_flag(name, len);
        const char *value = NULL;
        if (idx < 0 && !is_config && len > 3 && memcmp(name, "no-", 3) == 0) {
            int b = find_flag(name + 3, len - 3);
            if (b >= 0 && k_set[b].kind == K_BOOL) {
                if (eq)
                    return llm_err_set(err, LLM_EINVAL, "%s: takes no value (got \"%.100s\")",
                                       label, eq + 1);
                idx = b, value = "false";
            }
        }
        if (idx < 0 && !is_config) {
            const setting_t *s = suggest(name, len);
            char hint[NAME_MAX_LEN + 32] = "", k[NAME_MAX_LEN];
            if (s) {
                kebab(s->name, k, sizeof k);
                snprintf(hint, sizeof hint, " (did you mean --%s?)", k);
            }
            return llm_err_set(err, LLM_EINVAL, "%s: unknown option%s; see loramux serve --help",
                               label, hint);
        }
        if (!value) {
            if (eq) {
                value = eq + 1;
            } else if (!is_config && k_set[idx].kind == K_BOOL) {
                value = "true";
            } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
                value = argv[++i];
            } else {
                return llm_err_set(err, LLM_EINVAL, "%s: missing value (%s %s)", label, label,
                                   is_config ? "FILE" : k_set[idx].meta);
            }
        }
        if (is_config) {
            if (!*value) return llm_err_set(err, LLM_EINVAL, "--config: empty file name");
            *config = value;
            continue;
        }
        if (!c) continue;
        int rc = set_text(c, idx, value, label, NULL, err);
        if (rc) return rc;
        c->source[idx] = SRV_CFG_SRC_FLAG;
    }
    return 0;
}

/* model_name defaults to the last component of model ("/models/TinyLlama/" → "TinyLlama"). */
static int resolve_model_name(srv_config_t *c, llm_error_t *err) {
    if (c->model_name[0]) return 0;
    char *copy = strdup(c->model), *abs = NULL;
    if (!copy) return llm_err_set(err, LLM_ENOMEM, "model_name: out of memory");
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/') copy[--n] = '\0';
    const char *slash = strrchr(copy, '/');
    const char *base = slash && slash[1] ? slash + 1 : copy;
    /* "." or "..": the directory's real name says more (the model need not exist yet here) */
    if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
        abs = realpath(copy, NULL);
        if (abs && strrchr(abs, '/') && strrchr(abs, '/')[1]) base = strrchr(abs, '/') + 1;
    }
    char *name = strdup(base);
    free(abs);
    free(copy);
    if (!name) return llm_err_set(err, LLM_ENOMEM, "model_name: out of memory");
    free(c->model_name);
    c->model_name = name;
    return 0;
}

/* ---- public API ---- */

int srv_cfg_load(int argc, char **argv, char **envp, srv_config_t *cfg, llm_error_t *err) {
    srv_config_t c;
    memset(&c, 0, sizeof c);
    memset(cfg, 0, sizeof *cfg);
    llm_err_clear(err);

    const char *config = NULL;
    int rc = scan_flags(argc, argv, NULL, &config, err);
    if (rc == 1) {
        srv_cfg_help(stdout);
        return 1;
    }
    if (rc) return rc;
    if (!config) config = env_config(envp);

    if ((rc = set_defaults(&c, err))) goto fail;
    if (config) {
        if (!(c.config_file = strdup(config))) {
            rc = llm_err_set(err, LLM_ENOMEM, "config file: out of memory");
            goto fail;
        }
        if ((rc = load_file(&c, config, err))) goto fail;
    }
    if ((rc = load_env(&c, envp, err))) goto fail;
    if ((rc = scan_flags(argc, argv, &c, &config, err))) goto fail;
    if (!c.model[0]) {
        rc = llm_err_set(err, LLM_EINVAL,
                         "model is required (--model, " ENV_PREFIX
                         "MODEL or \"model\" in the config file)");
        goto fail;
    }
    if ((rc = resolve_model_name(&c, err))) goto fail;
    *cfg = c;
    return 0;
fail:
    srv_cfg_deinit(&c);
    return rc;
}

void srv_cfg_deinit(srv_config_t *cfg) {
    if (!cfg) return;
    for (int i = 0; i < SRV_CFG_COUNT; i++)
        if (k_set[i].kind == K_STR) free(*(char **)field(cfg, i));
    free(cfg->config_file);
    memset(cfg, 0, sizeof *cfg);
}

const char *srv_cfg_log_level_name(srv_log_level_t level) {
    return (int)level >= 0 && (int)level < N_LOG_LEVELS ? k_log_names[level] : "?";
}

/* ---- generated documentation ---- */

/* Writes text from column col, wrapped at HELP_WIDTH; the first line continues the current
 * one. Words longer than a line are not split. */
static void wrap(FILE *out, const char *text, int col) {
    int x = col;
    const char *p = text;
    while (*p) {
        while (*p == ' ') p++;
        size_t w = strcspn(p, " ");
        if (!w) break;
        if (x > col && x + 1 + (int)w > HELP_WIDTH) {
            fprintf(out, "\n%*s", col, "");
            x = col;
        }
        if (x > col) fputc(' ', out), x++;
        fprintf(out, "%.*s", (int)w, p);
        x += (int)w;
        p += w;
    }
    fputc('\n', out);
}

/* "default 8080; range 1..65535" etc., the second part of a --help entry. */
static void help_facts(const setting_t *s, char *buf, size_t n) {
    char u[NAME_MAX_LEN], range[80];
    upper(s->name, u, sizeof u);
    int k = snprintf(buf, n, "[env " ENV_PREFIX "%s; ", u);
    if (k < 0 || (size_t)k >= n) return;
    if (strcmp(s->name, "model") == 0) snprintf(buf + k, n - (size_t)k, "required]");
    else if (s->kind == K_STR && !s->def[0]) snprintf(buf + k, n - (size_t)k, "default \"\"]");
    else if (s->kind == K_INT || s->kind == K_I64 || s->kind == K_DBL)
        snprintf(buf + k, n - (size_t)k, "default %s; range %s]", s->def,
                 range_text(s, range, sizeof range));
    else snprintf(buf + k, n - (size_t)k, "default %s]", s->def);
}

void srv_cfg_help(FILE *out) {
    fprintf(out,
            "usage: loramux serve --model DIR [options]\n"
            "\n"
            "Serves the base model in DIR and its adapters over HTTP. Every option is also read\n"
            "from the environment variable " ENV_PREFIX "<NAME> and from the key <name> of a JSON\n"
            "config file; a flag wins over the environment, which wins over the file.\n"
            "Boolean options: --name, --no-name or --name=true|false.\n"
            "\n");
    fprintf(out, "  %-*s", HELP_COL - 2, "--config FILE");
    wrap(out, "JSON object of settings, keys as the names below (keys starting with \"//\" "
              "are comments) [env " ENV_PREFIX "CONFIG]", HELP_COL);
    for (int i = 0; i < SRV_CFG_COUNT; i++) {
        const setting_t *s = &k_set[i];
        char k[NAME_MAX_LEN], left[NAME_MAX_LEN * 2], text[1024], facts[256];
        kebab(s->name, k, sizeof k);
        if (s->kind == K_BOOL) snprintf(left, sizeof left, "--[no-]%s", k);
        else snprintf(left, sizeof left, "--%s %s", k, s->meta);
        help_facts(s, facts, sizeof facts);
        snprintf(text, sizeof text, "%s %s", s->help, facts);
        if ((int)strlen(left) + 2 >= HELP_COL) fprintf(out, "  %s\n%*s", left, HELP_COL, "");
        else fprintf(out, "  %-*s", HELP_COL - 2, left);
        wrap(out, text, HELP_COL);
    }
    fprintf(out, "  %-*s", HELP_COL - 2, "-h, --help");
    wrap(out, "this help", HELP_COL);
}

void srv_cfg_markdown(FILE *out) {
    fprintf(out, "| setting | flag | environment | default | meaning |\n"
                 "|---|---|---|---|---|\n");
    fprintf(out, "| — | `--config FILE` | `" ENV_PREFIX "CONFIG` | none | JSON object of "
                 "settings, keyed by setting name; keys starting with `//` are comments. |\n");
    for (int i = 0; i < SRV_CFG_COUNT; i++) {
        const setting_t *s = &k_set[i];
        char k[NAME_MAX_LEN], u[NAME_MAX_LEN], range[80];
        kebab(s->name, k, sizeof k);
        upper(s->name, u, sizeof u);
        fprintf(out, "| `%s` | ", s->name);
        if (s->kind == K_BOOL) fprintf(out, "`--%s`, `--no-%s`", k, k);
        else {
            /* an ENUM's "a|b" metavar: a bare '|' would end the table cell */
            fprintf(out, "`--%s ", k);
            for (const char *p = s->meta; *p; p++) {
                if (*p == '|') fputc('\\', out);
                fputc(*p, out);
            }
            fprintf(out, "`");
        }
        fprintf(out, " | `" ENV_PREFIX "%s` | ", u);
        if (strcmp(s->name, "model") == 0) fprintf(out, "required");
        else if (s->kind == K_STR && !s->def[0]) fprintf(out, "`\"\"`");
        else fprintf(out, "`%s`", s->def);
        fprintf(out, " | %s", s->help);
        if (s->kind == K_INT || s->kind == K_I64 || s->kind == K_DBL)
            fprintf(out, " Range %s.", range_text(s, range, sizeof range));
        fprintf(out, " |\n");
    }
}

void srv_cfg_dump(const srv_config_t *cfg, FILE *out) {
    static const char *const src[] = {"default", "config file", "environment", "flag"};
    for (int i = 0; i < SRV_CFG_COUNT; i++) {
        const setting_t *s = &k_set[i];
        const void *f = (const char *)cfg + s->off;
        fprintf(out, "%s = ", s->name);
        switch (s->kind) {
        case K_STR:
            if (i == SRV_CFG_IDX_api_key)
                fprintf(out, "%s", *(char *const *)f && **(char *const *)f ? "(set)" : "\"\"");
            else fprintf(out, "\"%s\"", *(char *const *)f ? *(char *const *)f : "");
            break;
        case K_INT: fprintf(out, "%d", *(const int *)f); break;
        case K_I64: fprintf(out, "%lld", (long long)*(const int64_t *)f); break;
        case K_DBL: fprintf(out, "%g", *(const double *)f); break;
        case K_BOOL: fprintf(out, "%s", *(const bool *)f ? "true" : "false"); break;
        case K_LOG: fprintf(out, "%s", srv_cfg_log_level_name(*(const srv_log_level_t *)f)); break;
        case K_ENUM: {
            char name[32];
            fprintf(out, "%s", srv_cfg_enum_name(s->meta, *(const int *)f, name, sizeof name));
            break;
        }
        }
        unsigned so = cfg->source[i];
        fprintf(out, "  (%s)\n", so < 4 ? src[so] : "?");
    }
}
