/* srv_chat_lib.c: the chat-template library: filters, tests, str/dict methods, global
 * functions, and the conversions str(), repr() and tojson.
 *
 * Filters: trim, length/count, upper, lower, title, capitalize, default/d, tojson, string,
 *   first, last, join, list, items, safe, escape/e, replace, int, abs, reverse, map, select,
 *   reject, selectattr, rejectattr. Other Jinja builtin filters parse but fail when reached.
 * Tests: defined, undefined, none, string, number, integer, float, boolean, true, false,
 *   mapping, iterable, sequence, callable, even, odd, divisibleby, eq/equalto/==, ne/!=,
 *   lt/lessthan/<, le/<=, gt/greaterthan/>, ge/>=, in, lower, upper, sameas, escaped.
 * str methods: strip, lstrip, rstrip, startswith, endswith, upper, lower, title, capitalize,
 *   split, replace, find, count, removeprefix, removesuffix, join, isdigit, isspace;
 *   dict methods: get, items, keys, values; loop.cycle.
 * Globals: raise_exception, range, namespace, dict, strftime_now.
 * Conversions and string operations are in srv_chat_str.c.
 */
#include "srv_chat_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- types ---- */

typedef srv_chat__val_t val_t;
typedef srv_chat__rctx_t rctx_t;
typedef srv_chat__list_t list_t;
typedef srv_chat__buf_t buf_t;
typedef srv_chat__args_t args_t;

enum {
    F_TRIM = 1, F_LENGTH, F_UPPER, F_LOWER, F_TITLE, F_CAPITALIZE, F_DEFAULT, F_TOJSON,
    F_STRING, F_FIRST, F_LAST, F_JOIN, F_LIST, F_ITEMS, F_SAFE, F_ESCAPE, F_REPLACE, F_INT,
    F_ABS, F_REVERSE, F_MAP, F_SELECT, F_REJECT, F_SELECTATTR, F_REJECTATTR
};

enum {
    T_DEFINED = 1, T_UNDEFINED, T_NONE, T_STRING, T_NUMBER, T_INTEGER, T_FLOAT, T_BOOLEAN,
    T_TRUE, T_FALSE, T_MAPPING, T_ITERABLE, T_SEQUENCE, T_CALLABLE, T_EVEN, T_ODD,
    T_DIVISIBLEBY, T_EQ, T_NE, T_LT, T_LE, T_GT, T_GE, T_IN, T_LOWER, T_UPPER, T_SAMEAS,
    T_ESCAPED
};

typedef struct named_s {
    const char *name;
    int id; /* -1: a Jinja builtin that is not implemented here */
} named_t;

static const named_t k_filters[] = {
    {"trim", F_TRIM}, {"length", F_LENGTH}, {"count", F_LENGTH}, {"upper", F_UPPER},
    {"lower", F_LOWER}, {"title", F_TITLE}, {"capitalize", F_CAPITALIZE},
    {"default", F_DEFAULT}, {"d", F_DEFAULT}, {"tojson", F_TOJSON}, {"string", F_STRING},
    {"first", F_FIRST}, {"last", F_LAST}, {"join", F_JOIN}, {"list", F_LIST},
    {"items", F_ITEMS}, {"safe", F_SAFE}, {"escape", F_ESCAPE}, {"e", F_ESCAPE},
    {"forceescape", F_ESCAPE}, {"replace", F_REPLACE}, {"int", F_INT}, {"abs", F_ABS},
    {"reverse", F_REVERSE}, {"map", F_MAP}, {"select", F_SELECT}, {"reject", F_REJECT},
    {"selectattr", F_SELECTATTR}, {"rejectattr", F_REJECTATTR},
    {"attr", -1}, {"batch", -1}, {"center", -1}, {"dictsort", -1}, {"filesizeformat", -1},
    {"float", -1}, {"format", -1}, {"groupby", -1}, {"indent", -1}, {"max", -1}, {"min", -1},
    {"pprint", -1}, {"random", -1}, {"round", -1}, {"slice", -1}, {"sort", -1},
    {"striptags", -1}, {"sum", -1}, {"truncate", -1}, {"unique", -1}, {"urlencode", -1},
    {"urlize", -1}, {"wordcount", -1}, {"wordwrap", -1}, {"xmlattr", -1},
    {NULL, 0},
};

static const named_t k_tests[] = {
    {"defined", T_DEFINED}, {"undefined", T_UNDEFINED}, {"none", T_NONE},
    {"string", T_STRING}, {"number", T_NUMBER}, {"integer", T_INTEGER}, {"float", T_FLOAT},
    {"boolean", T_BOOLEAN}, {"true", T_TRUE}, {"false", T_FALSE}, {"mapping", T_MAPPING},
    {"iterable", T_ITERABLE}, {"sequence", T_SEQUENCE}, {"callable", T_CALLABLE},
    {"even", T_EVEN}, {"odd", T_ODD}, {"divisibleby", T_DIVISIBLEBY}, {"eq", T_EQ},
    {"equalto", T_EQ}, {"==", T_EQ}, {"ne", T_NE}, {"!=", T_NE}, {"lt", T_LT},
    {"lessthan", T_LT}, {"<", T_LT}, {"le", T_LE}, {"<=", T_LE}, {"gt", T_GT},
    {"greaterthan", T_GT}, {">", T_GT}, {"ge", T_GE}, {">=", T_GE}, {"in", T_IN},
    {"lower", T_LOWER}, {"upper", T_UPPER}, {"sameas", T_SAMEAS}, {"escaped", T_ESCAPED},
    {"filter", -1}, {"test", -1},
    {NULL, 0},
};

static int lookup_named(const named_t *t, const char *name, size_t n) {
    for (int i = 0; t[i].name; i++)
        if (strlen(t[i].name) == n && memcmp(t[i].name, name, n) == 0) return t[i].id;
    return 0;
}

int srv_chat__filter_id(const char *name, size_t n) { return lookup_named(k_filters, name, n); }
int srv_chat__test_id(const char *name, size_t n) { return lookup_named(k_tests, name, n); }

static const char *const k_str_methods[] = {
    "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find",
    "format", "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit",
    "isidentifier", "islower", "isnumeric", "isprintable", "isspace", "istitle", "isupper",
    "join", "ljust", "lower", "lstrip", "maketrans", "partition", "removeprefix",
    "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip",
    "split", "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper",
    "zfill", NULL,
};
static const char *const k_dict_methods[] = {
    "clear", "copy", "fromkeys", "get", "items", "keys", "pop", "popitem", "setdefault",
    "update", "values", NULL,
};
static const char *const k_list_methods[] = {
    "append", "clear", "copy", "count", "extend", "index", "insert", "pop", "remove",
    "reverse", "sort", NULL,
};
static const char *const k_loop_methods[] = {"cycle", "changed", NULL};

static int in_names(const char *const *names, const char *s, size_t n) {
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == n && memcmp(names[i], s, n) == 0) return 1;
    return 0;
}

int srv_chat__is_method(const val_t *x, const char *name, size_t n) {
    switch (x->t) {
    case SRV_CHAT__V_STR: return in_names(k_str_methods, name, n);
    case SRV_CHAT__V_DICT: return in_names(k_dict_methods, name, n);
    case SRV_CHAT__V_LIST: return in_names(k_list_methods, name, n);
    case SRV_CHAT__V_LOOP: return in_names(k_loop_methods, name, n);
    default: return 0;
    }
}

/* ---- argument helpers ---- */

/* Positional argument i, else keyword kw, else NULL. */
static const val_t *arg(const args_t *a, int i, const char *kw) {
    if (i >= 0 && i < a->n) return &a->v[i];
    for (int k = 0; kw && k < a->nkw; k++)
        if (strcmp(a->kwn[k], kw) == 0) return &a->kwv[k];
    return NULL;
}

static int is_num(const val_t *v) { return v->t == SRV_CHAT__V_INT || v->t == SRV_CHAT__V_BOOL; }
static int is_none(const val_t *v) { return !v || v->t == SRV_CHAT__V_NONE; }

static int want_str(rctx_t *R, const val_t *v, const char *what, int line) {
    if (v && v->t == SRV_CHAT__V_STR) return 0;
    if (v && v->t == SRV_CHAT__V_UNDEF) return srv_chat__undef_fail(R, v, line);
    return srv_chat__fail(R, LLM_EINVAL, line, "%s must be a string", what);
}

static int want_int(rctx_t *R, const val_t *v, const char *what, int line) {
    if (v && is_num(v)) return 0;
    if (v && v->t == SRV_CHAT__V_UNDEF) return srv_chat__undef_fail(R, v, line);
    return srv_chat__fail(R, LLM_EINVAL, line, "%s must be an integer", what);
}

static val_t vbool(int b) { return (val_t){.t = SRV_CHAT__V_BOOL, .u.i = b != 0}; }
static val_t vint(int64_t i) { return (val_t){.t = SRV_CHAT__V_INT, .u.i = i}; }

static int f_tojson(rctx_t *R, const val_t *x, const args_t *a, int line, val_t *out) {
    const val_t *ea = arg(a, 0, "ensure_ascii"), *ind = arg(a, 1, "indent"),
                *sep = arg(a, 2, "separators"), *sk = arg(a, 3, "sort_keys");
    char spaces[65];
    const char *indent = NULL;
    size_t indent_n = 0;
    if (!is_none(sep)) return srv_chat__fail(R, LLM_EINVAL, line, "unsupported tojson separators");
    if (!is_none(ind)) {
        if (ind->t == SRV_CHAT__V_STR) {
            indent = ind->u.s;
            indent_n = ind->n;
        } else if (is_num(ind)) {
            int64_t k = ind->u.i < 0 ? 0 : ind->u.i > 64 ? 64 : ind->u.i;
            memset(spaces, ' ', (size_t)k);
            indent = spaces;
            indent_n = (size_t)k;
        } else {
            return srv_chat__fail(R, LLM_EINVAL, line,
                                  "tojson indent must be an integer or string");
        }
    }
    return srv_chat__tojson(R, x, indent, indent_n, sk && srv_chat__truthy(sk),
                            ea && srv_chat__truthy(ea), line, out);
}

static int starts_ends(rctx_t *R, const val_t *s, const val_t *x, int ends, int line, int *res) {
    if (x && x->t == SRV_CHAT__V_LIST && x->aux) { /* a tuple of candidates */
        *res = 0;
        for (size_t i = 0; i < x->u.l->n && !*res; i++) {
            int rc = starts_ends(R, s, &x->u.l->v[i], ends, line, res);
            if (rc) return rc;
        }
        return 0;
    }
    int rc = want_str(R, x, ends ? "endswith argument" : "startswith argument", line);
    if (rc) return rc;
    *res = x->n <= s->n && memcmp(s->u.s + (ends ? s->n - x->n : 0), x->u.s, x->n) == 0;
    return 0;
}

/* Jinja's attribute getter for map/selectattr/join: "a.b.0" */
static int get_path(rctx_t *R, const val_t *x, const val_t *path, int line, val_t *out) {
    int rc = want_str(R, path, "attribute", line);
    if (rc) return rc;
    val_t cur = *x;
    for (size_t i = 0; i <= path->n;) {
        const char *dot = memchr(path->u.s + i, '.', path->n - i);
        size_t e = dot ? (size_t)(dot - path->u.s) : path->n;
        val_t key = {.t = SRV_CHAT__V_STR, .n = e - i, .u.s = path->u.s + i};
        int digits = e > i;
        for (size_t k = i; k < e; k++) digits &= path->u.s[k] >= '0' && path->u.s[k] <= '9';
        if (digits) {
            int64_t v = 0;
            for (size_t k = i; k < e && v < INT64_MAX / 10 - 10; k++)
                v = v * 10 + (path->u.s[k] - '0');
            key = vint(v);
        }
        if ((rc = srv_chat__getitem(R, &cur, &key, line, &cur))) return rc;
        i = e + 1;
    }
    *out = cur;
    return 0;
}

/* ---- filters ---- */

static int f_first_last(rctx_t *R, const val_t *x, int last, int line, val_t *out) {
    const list_t *items;
    if (last && x->t == SRV_CHAT__V_LIST && x->aux == SRV_CHAT__L_GEN)
        return srv_chat__fail(R, LLM_EINVAL, line, "'generator' object is not reversible");
    int rc = srv_chat__iterate(R, x, line, &items);
    if (rc) return rc;
    if (items->n == 0) {
        *out = (val_t){.t = SRV_CHAT__V_UNDEF, .aux = 3, .n = 35,
                       .name = "No first item, sequence was empty."};
        return 0;
    }
    *out = items->v[last ? items->n - 1 : 0];
    return 0;
}

static int f_join(rctx_t *R, const val_t *x, const args_t *a, int line, val_t *out) {
    const list_t *items;
    const val_t *d = arg(a, 0, "d"), *attr = arg(a, 1, "attribute");
    val_t sep = {.t = SRV_CHAT__V_STR, .u.s = ""};
    int rc = srv_chat__iterate(R, x, line, &items);
    if (rc == 0 && d) rc = srv_chat__to_str(R, d, line, &sep);
    if (rc) return rc;
    buf_t b = {0};
    for (size_t i = 0; i < items->n && rc == 0; i++) {
        val_t v = items->v[i];
        if (i) rc = srv_chat__buf_put(R, &b, sep.u.s, sep.n, line);
        if (rc == 0 && !is_none(attr)) rc = get_path(R, &items->v[i], attr, line, &v);
        if (rc == 0) rc = srv_chat__str(R, &v, &b, line);
    }
    if (rc == 0) rc = srv_chat__buf_to_str(R, &b, line, out);
    free(b.s);
    return rc;
}

/* select / reject / selectattr / rejectattr / map */
static int f_seq(rctx_t *R, int id, const val_t *x, const args_t *a, int line, val_t *out) {
    const list_t *items;
    int rc = srv_chat__iterate(R, x, line, &items);
    if (rc) return rc;
    int by_attr = id == F_SELECTATTR || id == F_REJECTATTR;
    int want = id == F_SELECT || id == F_SELECTATTR;
    const val_t *attr = NULL;
    int first = 0; /* index of the test/filter name among positional args */
    if (id == F_MAP) {
        attr = arg(a, -1, "attribute");
    } else if (by_attr) {
        attr = arg(a, 0, NULL);
        first = 1;
        if (!attr) return srv_chat__fail(R, LLM_EINVAL, line, "missing attribute for selectattr");
    }
    const val_t *fname = attr && id == F_MAP ? NULL : arg(a, first, NULL);
    int fid = 0;
    if (fname) {
        if ((rc = want_str(R, fname, "test or filter name", line))) return rc;
        fid = id == F_MAP ? srv_chat__filter_id(fname->u.s, fname->n)
                          : srv_chat__test_id(fname->u.s, fname->n);
        if (fid == 0)
            return srv_chat__fail(R, LLM_EINVAL, line, "no %s named '%.*s'",
                                  id == F_MAP ? "filter" : "test", (int)fname->n, fname->u.s);
    } else if (id == F_MAP && !attr) {
        return srv_chat__fail(R, LLM_EINVAL, line, "map needs a filter name or attribute=");
    }
    args_t rest = {.v = a->v + (fname ? first + 1 : a->n), .n = fname ? a->n - first - 1 : 0};
    if (id == F_MAP && fname) { /* keyword arguments go to the mapped filter */
        rest.kwn = a->kwn;
        rest.kwv = a->kwv;
        rest.nkw = a->nkw;
    }
    list_t *l = srv_chat__mklist(R, items->n, line);
    if (!l) return R->err->code;
    l->n = 0;
    char nm[64];
    if (fname) snprintf(nm, sizeof nm, "%.*s", (int)(fname->n > 60 ? 60 : fname->n), fname->u.s);
    for (size_t i = 0; i < items->n; i++) {
        val_t v = items->v[i], r;
        if ((rc = srv_chat__step(R, 1, line))) return rc;
        if (attr && (rc = get_path(R, &items->v[i], attr, line, &v))) return rc;
        if (id == F_MAP) {
            if (!fname) {
                const val_t *def = arg(a, -1, "default");
                if (v.t == SRV_CHAT__V_UNDEF && def) v = *def;
                r = v;
            } else if ((rc = srv_chat__filter(R, fid, nm, &v, &rest, line, &r))) {
                return rc;
            }
            l->v[l->n++] = r;
            continue;
        }
        int keep;
        if (fname) {
            if ((rc = srv_chat__test(R, fid, nm, &v, &rest, line, &keep))) return rc;
        } else {
            keep = srv_chat__truthy(&v);
        }
        if (keep == want) l->v[l->n++] = items->v[i];
    }
    *out = (val_t){.t = SRV_CHAT__V_LIST, .aux = SRV_CHAT__L_GEN, .u.l = l};
    return 0;
}

static int f_int(const val_t *x, const val_t *def, val_t *out) {
    *out = def ? *def : vint(0);
    if (is_num(x)) {
        *out = vint(x->u.i);
    } else if (x->t == SRV_CHAT__V_STR) {
        size_t i = 0, e = x->n, w;
        while (i < e && (w = srv_chat__ws_at(x->u.s, e, i)) > 0) i += w;
        while (e > i && (w = srv_chat__ws_before(x->u.s, e)) > 0) e -= w;
        int neg = 0;
        if (i < e && (x->u.s[i] == '-' || x->u.s[i] == '+')) neg = x->u.s[i++] == '-';
        if (i == e) return 0;
        int64_t v = 0;
        for (size_t k = i; k < e; k++) {
            char c = x->u.s[k];
            if (c == '_' && k > i && k + 1 < e && x->u.s[k + 1] != '_') continue;
            if (c < '0' || c > '9' || v > (INT64_MAX - 9) / 10) return 0;
            v = v * 10 + (c - '0');
        }
        *out = vint(neg ? -v : v);
    }
    return 0;
}

static int f_reverse(rctx_t *R, const val_t *x, int line, val_t *out) {
    if (x->t == SRV_CHAT__V_STR) {
        char *d = srv_chat__alloc(&R->ar, x->n + 1);
        if (!d) return srv_chat__nomem(R, line);
        for (size_t i = 0, w; i < x->n; i += w) {
            srv_chat__utf8_dec(x->u.s + i, x->n - i, &w);
            memcpy(d + x->n - i - w, x->u.s + i, w);
        }
        *out = (val_t){.t = SRV_CHAT__V_STR, .n = x->n, .u.s = d};
        return 0;
    }
    const list_t *items;
    int rc = srv_chat__iterate(R, x, line, &items);
    if (rc) return rc;
    list_t *l = srv_chat__mklist(R, items->n, line);
    if (!l) return R->err->code;
    for (size_t i = 0; i < items->n; i++) l->v[i] = items->v[items->n - 1 - i];
    *out = (val_t){.t = SRV_CHAT__V_LIST, .aux = SRV_CHAT__L_GEN, .u.l = l}; /* reversed() */
    return 0;
}


int srv_chat__filter(rctx_t *R, int id, const char *name, const val_t *x, const args_t *a,
                     int line, val_t *out) {
    val_t s;
    int rc;
    int64_t n;
    switch (id) {
    case F_TRIM: /* soft_str(): a Markup input gives a Markup result */
        if ((rc = srv_chat__to_str(R, x, line, &s)) ||
            (rc = srv_chat__strip(R, &s, arg(a, 0, "chars"), 1, 1, line, out)))
            return rc;
        out->aux = s.aux;
        return 0;
    case F_LENGTH:
        if ((rc = srv_chat__len(R, x, line, &n))) return rc;
        *out = vint(n);
        return 0;
    case F_UPPER:
    case F_LOWER:
    case F_TITLE:
    case F_CAPITALIZE:
        if ((rc = srv_chat__to_str(R, x, line, &s)) ||
            (rc = srv_chat__case(R, &s,
                                 id == F_UPPER   ? SRV_CHAT__CASE_UPPER
                                 : id == F_LOWER ? SRV_CHAT__CASE_LOWER
                                 : id == F_TITLE ? SRV_CHAT__CASE_JINJA_TITLE
                                                 : SRV_CHAT__CASE_CAPITALIZE,
                                 line, out)))
            return rc;
        out->aux = id == F_TITLE ? 0 : s.aux; /* title joins plain str pieces */
        return 0;
    case F_DEFAULT: {
        const val_t *d = arg(a, 0, "default_value"), *boolean = arg(a, 1, "boolean");
        int use = x->t == SRV_CHAT__V_UNDEF ||
                  (boolean && srv_chat__truthy(boolean) && !srv_chat__truthy(x));
        *out = use ? (d ? *d : (val_t){.t = SRV_CHAT__V_STR, .u.s = ""}) : *x;
        return 0;
    }
    case F_TOJSON: return f_tojson(R, x, a, line, out);
    case F_STRING: return srv_chat__to_str(R, x, line, out); /* keeps Markup, like soft_str */
    case F_SAFE:
        if ((rc = srv_chat__to_str(R, x, line, out))) return rc;
        out->aux = 1;
        return 0;
    case F_FIRST:
    case F_LAST: return f_first_last(R, x, id == F_LAST, line, out);
    case F_JOIN: return f_join(R, x, a, line, out);
    case F_LIST: {
        const list_t *items;
        if ((rc = srv_chat__iterate(R, x, line, &items))) return rc;
        *out = (val_t){.t = SRV_CHAT__V_LIST, .u.l = (list_t *)items};
        return 0;
    }
    case F_ITEMS: {
        if (x->t == SRV_CHAT__V_UNDEF) {
            list_t *l = srv_chat__mklist(R, 0, line);
            if (!l) return R->err->code;
            *out = (val_t){.t = SRV_CHAT__V_LIST, .aux = SRV_CHAT__L_GEN, .u.l = l};
            return 0;
        }
        if (x->t != SRV_CHAT__V_DICT)
            return srv_chat__fail(R, LLM_EINVAL, line, "can only get item pairs from a mapping");
        if ((rc = srv_chat__method(R, x, "items", a, line, out))) return rc;
        out->aux = SRV_CHAT__L_GEN; /* Jinja's items filter is a generator */
        return 0;
    }
    case F_ESCAPE: return srv_chat__escape(R, x, line, out);
    case F_REPLACE: {
        val_t old, nw;
        const val_t *cnt = arg(a, 2, "count");
        if (!arg(a, 0, "old") || !arg(a, 1, "new"))
            return srv_chat__fail(R, LLM_EINVAL, line, "replace needs old and new");
        if ((rc = srv_chat__to_str(R, x, line, &s)) ||
            (rc = srv_chat__to_str(R, arg(a, 0, "old"), line, &old)) ||
            (rc = srv_chat__to_str(R, arg(a, 1, "new"), line, &nw)))
            return rc;
        if (!is_none(cnt) && (rc = want_int(R, cnt, "count", line))) return rc;
        return srv_chat__replace(R, &s, &old, &nw, is_none(cnt) ? -1 : cnt->u.i, line, out);
    }
    case F_INT: return f_int(x, arg(a, 0, "default"), out);
    case F_ABS:
        if ((rc = want_int(R, x, "abs argument", line))) return rc;
        if (x->u.i == INT64_MIN) return srv_chat__fail(R, LLM_EINVAL, line, "integer overflow");
        *out = vint(x->u.i < 0 ? -x->u.i : x->u.i);
        return 0;
    case F_REVERSE: return f_reverse(R, x, line, out);
    case F_MAP:
    case F_SELECT:
    case F_REJECT:
    case F_SELECTATTR:
    case F_REJECTATTR: return f_seq(R, id, x, a, line, out);
    default:
        return srv_chat__fail(R, LLM_EINVAL, line, id ? "unsupported filter '%s'"
                                                      : "no filter named '%s'", name);
    }
}

/* ---- tests ---- */

int srv_chat__test(rctx_t *R, int id, const char *name, const val_t *x, const args_t *a,
                   int line, int *res) {
    const val_t *y = arg(a, 0, NULL);
    int t = x->t, rc;
    static const int cmp_op[] = {SRV_CHAT__OP_EQ, SRV_CHAT__OP_NE, SRV_CHAT__OP_LT,
                                 SRV_CHAT__OP_LE, SRV_CHAT__OP_GT, SRV_CHAT__OP_GE};
    int want = id == T_DIVISIBLEBY || (id >= T_EQ && id <= T_IN) || id == T_SAMEAS;
    if (id > 0 && (a->n + a->nkw != want))
        return srv_chat__fail(R, LLM_EINVAL, line, "test '%s' takes %s argument", name,
                              want ? "one" : "no");
    switch (id) {
    case T_DEFINED: *res = t != SRV_CHAT__V_UNDEF; return 0;
    case T_UNDEFINED: *res = t == SRV_CHAT__V_UNDEF; return 0;
    case T_NONE: *res = t == SRV_CHAT__V_NONE; return 0;
    case T_STRING: *res = t == SRV_CHAT__V_STR; return 0;
    case T_NUMBER: *res = is_num(x); return 0;
    case T_INTEGER: *res = t == SRV_CHAT__V_INT; return 0;
    case T_FLOAT: *res = 0; return 0;
    case T_BOOLEAN: *res = t == SRV_CHAT__V_BOOL; return 0;
    case T_TRUE: *res = t == SRV_CHAT__V_BOOL && x->u.i; return 0;
    case T_FALSE: *res = t == SRV_CHAT__V_BOOL && !x->u.i; return 0;
    case T_MAPPING: *res = t == SRV_CHAT__V_DICT; return 0;
    case T_ITERABLE:
    case T_SEQUENCE: /* Jinja's Undefined is iterable and has a length */
        *res = t == SRV_CHAT__V_STR || t == SRV_CHAT__V_DICT || t == SRV_CHAT__V_UNDEF ||
               (t == SRV_CHAT__V_LIST && (id == T_ITERABLE || x->aux == SRV_CHAT__L_LIST ||
                                          x->aux == SRV_CHAT__L_TUPLE));
        return 0;
    case T_CALLABLE: /* LoopContext is callable too (recursive loops) */
        *res = t == SRV_CHAT__V_FUNC || t == SRV_CHAT__V_METHOD || t == SRV_CHAT__V_LOOP;
        return 0;
    case T_EVEN:
    case T_ODD:
    case T_DIVISIBLEBY: {
        int64_t d = id == T_DIVISIBLEBY ? 0 : 2;
        if ((rc = want_int(R, x, "test argument", line))) return rc;
        if (id == T_DIVISIBLEBY) {
            if ((rc = want_int(R, y, "divisibleby argument", line))) return rc;
            d = y->u.i;
            if (d == 0) return srv_chat__fail(R, LLM_EINVAL, line, "integer modulo by zero");
        }
        int64_t m = d == -1 ? 0 : x->u.i % d;
        *res = id == T_ODD ? m != 0 : m == 0;
        return 0;
    }
    case T_EQ: case T_NE: case T_LT: case T_LE: case T_GT: case T_GE:
        if (!y) return srv_chat__fail(R, LLM_EINVAL, line, "test '%s' needs an argument", name);
        return srv_chat__compare(R, cmp_op[id - T_EQ], x, y, line, res);
    case T_IN:
        if (!y) return srv_chat__fail(R, LLM_EINVAL, line, "test 'in' needs an argument");
        return srv_chat__compare(R, SRV_CHAT__OP_IN, x, y, line, res);
    case T_LOWER:
    case T_UPPER: {
        val_t s;
        if ((rc = srv_chat__to_str(R, x, line, &s))) return rc;
        *res = srv_chat__is_case(&s, id == T_UPPER);
        return 0;
    }
    case T_SAMEAS:
        if (!y) return srv_chat__fail(R, LLM_EINVAL, line, "test 'sameas' needs an argument");
        *res = x->t == y->t && srv_chat__eq(x, y) &&
               (x->t != SRV_CHAT__V_LIST || x->u.l == y->u.l) &&
               (x->t != SRV_CHAT__V_DICT || x->u.d == y->u.d);
        return 0;
    case T_ESCAPED: *res = 0; return 0;
    default:
        return srv_chat__fail(R, LLM_EINVAL, line, id ? "unsupported test '%s'"
                                                      : "no test named '%s'", name);
    }
}

/* ---- methods ---- */

static int str_method(rctx_t *R, const val_t *s, const char *name, const args_t *a, int line,
                      val_t *out) {
    const val_t *x = arg(a, 0, NULL), *y = arg(a, 1, NULL);
    int rc, res;
    if (!strcmp(name, "strip")) return srv_chat__strip(R, s, x, 1, 1, line, out);
    if (!strcmp(name, "lstrip")) return srv_chat__strip(R, s, x, 1, 0, line, out);
    if (!strcmp(name, "rstrip")) return srv_chat__strip(R, s, x, 0, 1, line, out);
    if (!strcmp(name, "upper")) return srv_chat__case(R, s, SRV_CHAT__CASE_UPPER, line, out);
    if (!strcmp(name, "lower")) return srv_chat__case(R, s, SRV_CHAT__CASE_LOWER, line, out);
    if (!strcmp(name, "title")) return srv_chat__case(R, s, SRV_CHAT__CASE_PY_TITLE, line, out);
    if (!strcmp(name, "capitalize"))
        return srv_chat__case(R, s, SRV_CHAT__CASE_CAPITALIZE, line, out);
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        if (a->n > 1) return srv_chat__fail(R, LLM_EINVAL, line, "unsupported start/end arguments");
        if ((rc = starts_ends(R, s, x, name[0] == 'e', line, &res))) return rc;
        *out = vbool(res);
        return 0;
    }
    if (!strcmp(name, "split")) {
        const val_t *sep = arg(a, 0, "sep"), *mx = arg(a, 1, "maxsplit");
        if (!is_none(mx) && (rc = want_int(R, mx, "maxsplit", line))) return rc;
        return srv_chat__split(R, s, sep, is_none(mx) ? -1 : mx->u.i, line, out);
    }
    if (!strcmp(name, "replace")) {
        const val_t *cnt = arg(a, 2, "count");
        if ((rc = want_str(R, x, "replace argument", line)) ||
            (rc = want_str(R, y, "replace argument", line)))
            return rc;
        if (!is_none(cnt) && (rc = want_int(R, cnt, "count", line))) return rc;
        val_t ex, ey; /* Markup.replace escapes its arguments */
        if (s->aux &&
            ((rc = srv_chat__escape(R, x, line, &ex)) || (rc = srv_chat__escape(R, y, line, &ey))))
            return rc;
        return srv_chat__replace(R, s, s->aux ? &ex : x, s->aux ? &ey : y,
                                 is_none(cnt) ? -1 : cnt->u.i, line, out);
    }
    if (!strcmp(name, "find") || !strcmp(name, "count")) {
        if (a->n > 1) return srv_chat__fail(R, LLM_EINVAL, line, "unsupported start/end arguments");
        if ((rc = want_str(R, x, "argument", line))) return rc;
        int64_t cps = 0;
        if (name[0] == 'f') {
            const char *p = x->n == 0 ? s->u.s : memmem(s->u.s, s->n, x->u.s, x->n);
            if (!p) {
                *out = vint(-1);
                return 0;
            }
            for (const char *q = s->u.s; q < p; q++) cps += ((unsigned char)*q & 0xC0) != 0x80;
            *out = vint(cps);
            return 0;
        }
        if (x->n == 0) {
            if ((rc = srv_chat__len(R, s, line, &cps))) return rc;
            *out = vint(cps + 1);
            return 0;
        }
        for (size_t i = 0; i + x->n <= s->n;) {
            const char *p = memmem(s->u.s + i, s->n - i, x->u.s, x->n);
            if (!p) break;
            cps++;
            i = (size_t)(p - s->u.s) + x->n;
        }
        *out = vint(cps);
        return 0;
    }
    if (!strcmp(name, "removeprefix") || !strcmp(name, "removesuffix")) {
        int suffix = name[6] == 's';
        if ((rc = want_str(R, x, "argument", line)) ||
            (rc = starts_ends(R, s, x, suffix, line, &res)))
            return rc;
        *out = *s;
        if (res) {
            out->n -= x->n;
            if (!suffix) out->u.s += x->n;
        }
        return 0;
    }
    if (!strcmp(name, "join")) {
        const list_t *items;
        buf_t b = {0};
        if (!x) return srv_chat__fail(R, LLM_EINVAL, line, "join needs an argument");
        rc = srv_chat__iterate(R, x, line, &items);
        for (size_t i = 0; i < (rc ? 0 : items->n) && rc == 0; i++) {
            val_t item = items->v[i];
            if (item.t != SRV_CHAT__V_STR)
                rc = srv_chat__fail(R, LLM_EINVAL, line, "sequence item %zu: expected str", i);
            if (rc == 0 && s->aux) rc = srv_chat__escape(R, &items->v[i], line, &item);
            if (rc == 0 && i) rc = srv_chat__buf_put(R, &b, s->u.s, s->n, line);
            if (rc == 0) rc = srv_chat__buf_put(R, &b, item.u.s, item.n, line);
        }
        if (rc == 0) rc = srv_chat__buf_to_str(R, &b, line, out);
        free(b.s);
        return rc;
    }
    if (!strcmp(name, "isdigit") || !strcmp(name, "isspace")) {
        res = s->n > 0;
        for (size_t i = 0, w; i < s->n && res; i += w) {
            if (name[2] == 'd') {
                w = 1;
                res = s->u.s[i] >= '0' && s->u.s[i] <= '9';
            } else {
                res = (w = srv_chat__ws_at(s->u.s, s->n, i)) > 0;
            }
        }
        *out = vbool(res);
        return 0;
    }
    return srv_chat__fail(R, LLM_EINVAL, line, "unsupported string method '%s'", name);
}

static int dict_method(rctx_t *R, const val_t *d, const char *name, const args_t *a, int line,
                       val_t *out) {
    const srv_chat__dict_t *D = d->u.d;
    if (!strcmp(name, "get")) {
        const val_t *k = arg(a, 0, NULL), *def = arg(a, 1, NULL);
        if (!k) return srv_chat__fail(R, LLM_EINVAL, line, "get needs a key");
        const val_t *v = k->t == SRV_CHAT__V_STR ? srv_chat__dict_get(D, k->u.s, k->n) : NULL;
        *out = v ? *v : def ? *def : (val_t){.t = SRV_CHAT__V_NONE};
        return 0;
    }
    int which = !strcmp(name, "items")    ? 0
                : !strcmp(name, "keys")   ? 1
                : !strcmp(name, "values") ? 2
                                          : -1;
    if (which < 0) return srv_chat__fail(R, LLM_EINVAL, line, "unsupported dict method '%s'", name);
    list_t *l = srv_chat__mklist(R, D->n, line);
    if (!l) return R->err->code;
    for (size_t i = 0; i < D->n; i++) {
        val_t k = {.t = SRV_CHAT__V_STR, .n = D->kv[i].kn, .u.s = D->kv[i].k};
        if (which == 0) {
            list_t *pair = srv_chat__mklist(R, 2, line);
            if (!pair) return R->err->code;
            pair->v[0] = k;
            pair->v[1] = D->kv[i].v;
            l->v[i] = (val_t){.t = SRV_CHAT__V_LIST, .aux = 1, .u.l = pair};
        } else {
            l->v[i] = which == 1 ? k : D->kv[i].v;
        }
    }
    *out = (val_t){.t = SRV_CHAT__V_LIST, .aux = SRV_CHAT__L_VIEW, .u.l = l};
    return 0;
}

int srv_chat__method(rctx_t *R, const val_t *self, const char *name, const args_t *a, int line,
                     val_t *out) {
    static const char *const keeps_markup[] = {"strip", "lstrip", "rstrip", "upper", "lower",
                                               "title", "capitalize", "replace", "removeprefix",
                                               "removesuffix", "join", NULL};
    int rc;
    switch (self->t) {
    case SRV_CHAT__V_STR:
        rc = str_method(R, self, name, a, line, out);
        /* Markup's methods return Markup (and Markup.join escapes the items) */
        if (rc == 0 && self->aux && out->t == SRV_CHAT__V_STR &&
            in_names(keeps_markup, name, strlen(name)))
            out->aux = 1;
        return rc;
    case SRV_CHAT__V_DICT: return dict_method(R, self, name, a, line, out);
    case SRV_CHAT__V_LIST:
        if ((!strcmp(name, "count") || !strcmp(name, "index")) && a->n == 1 && a->nkw == 0) {
            int64_t k = 0, at = -1;
            for (size_t i = 0; i < self->u.l->n; i++)
                if (srv_chat__eq(&self->u.l->v[i], &a->v[0]) && k++ == 0) at = (int64_t)i;
            if (name[0] == 'i' && at < 0)
                return srv_chat__fail(R, LLM_EINVAL, line, "list.index(x): x not in list");
            *out = vint(name[0] == 'c' ? k : at);
            return 0;
        }
        break;
    case SRV_CHAT__V_LOOP:
        if (!strcmp(name, "cycle") && a->n > 0) {
            *out = a->v[self->u.loop->index0 % a->n];
            return 0;
        }
        break;
    default: break;
    }
    return srv_chat__fail(R, LLM_EINVAL, line, "unsupported method '%s'", name);
}

/* ---- global functions ---- */

static int fn_range(rctx_t *R, const args_t *a, int line, val_t *out) {
    int64_t v[3] = {0, 0, 1};
    if (a->n < 1 || a->n > 3 || a->nkw)
        return srv_chat__fail(R, LLM_EINVAL, line, "range expects 1 to 3 integer arguments");
    for (int i = 0; i < a->n; i++) {
        int rc = want_int(R, &a->v[i], "range argument", line);
        if (rc) return rc;
    }
    if (a->n == 1) v[1] = a->v[0].u.i;
    else {
        v[0] = a->v[0].u.i;
        v[1] = a->v[1].u.i;
        if (a->n == 3) v[2] = a->v[2].u.i;
    }
    if (v[2] == 0) return srv_chat__fail(R, LLM_EINVAL, line, "range() arg 3 must not be zero");
    uint64_t count = 0;
    if (v[2] > 0 && v[1] > v[0]) count = ((uint64_t)v[1] - (uint64_t)v[0] - 1) / (uint64_t)v[2] + 1;
    if (v[2] < 0 && v[0] > v[1])
        count = ((uint64_t)v[0] - (uint64_t)v[1] - 1) / ((uint64_t)(-(v[2] + 1)) + 1) + 1;
    int rc = srv_chat__step(R, count, line);
    if (rc) return rc;
    list_t *l = srv_chat__mklist(R, (size_t)count, line);
    if (!l) return R->err->code;
    for (uint64_t i = 0; i < count; i++) l->v[i] = vint(v[0] + (int64_t)i * v[2]);
    *out = (val_t){.t = SRV_CHAT__V_LIST, .u.l = l};
    return 0;
}

static int fn_dict(rctx_t *R, int ns, const args_t *a, int line, val_t *out) {
    srv_chat__dict_t *d = srv_chat__mkdict(R, (size_t)a->nkw + 4, line);
    if (!d) return R->err->code;
    int rc = 0;
    if (a->n > 1 || (a->n == 1 && a->v[0].t != SRV_CHAT__V_DICT))
        return srv_chat__fail(R, LLM_EINVAL, line, "%s() takes keyword arguments or one dict",
                              ns ? "namespace" : "dict");
    for (size_t i = 0; a->n == 1 && i < a->v[0].u.d->n && rc == 0; i++)
        rc = srv_chat__dict_set(R, d, a->v[0].u.d->kv[i].k, a->v[0].u.d->kv[i].kn,
                                &a->v[0].u.d->kv[i].v, line);
    for (int i = 0; i < a->nkw && rc == 0; i++)
        rc = srv_chat__dict_set(R, d, a->kwn[i], strlen(a->kwn[i]), &a->kwv[i], line);
    *out = (val_t){.t = ns ? SRV_CHAT__V_NS : SRV_CHAT__V_DICT, .u.d = d};
    return rc;
}

int srv_chat__func(rctx_t *R, int id, const char *name, const args_t *a, int line, val_t *out) {
    switch (id) {
    case SRV_CHAT__FN_RAISE: {
        /* transformers raises TemplateError(message): the caller gets the text as is */
        val_t s = {.t = SRV_CHAT__V_STR, .u.s = ""};
        int rc = a->n > 0 ? srv_chat__to_str(R, &a->v[0], line, &s) : 0;
        if (rc) return rc;
        R->raised = 1;
        return llm_err_set(R->err, LLM_EINVAL, "%.*s", (int)(s.n > 511 ? 511 : s.n), s.u.s);
    }
    case SRV_CHAT__FN_RANGE: return fn_range(R, a, line, out);
    case SRV_CHAT__FN_NAMESPACE: return fn_dict(R, 1, a, line, out);
    case SRV_CHAT__FN_DICT: return fn_dict(R, 0, a, line, out);
    case SRV_CHAT__FN_STRFTIME: {
        const val_t *fmt = arg(a, 0, NULL);
        int rc = want_str(R, fmt, "strftime_now format", line);
        if (rc) return rc;
        char f[128], o[256];
        if (fmt->n >= sizeof f)
            return srv_chat__fail(R, LLM_EINVAL, line, "strftime_now format too long");
        memcpy(f, fmt->u.s, fmt->n);
        f[fmt->n] = '\0';
        time_t now = time(NULL);
        struct tm tm;
        if (!localtime_r(&now, &tm)) return srv_chat__fail(R, LLM_EINVAL, line, "localtime failed");
        size_t k = strftime(o, sizeof o, f, &tm);
        return srv_chat__mkstr(R, o, k, line, out);
    }
    default: return srv_chat__fail(R, LLM_EINVAL, line, "unsupported function '%s'", name);
    }
}
