/* srv_chat_str.c: conversions (str(), repr(), tojson, HTML escape) and the string operations
 * behind the filters and str methods (strip, case mapping, replace, split).
 *
 * str() and repr() follow Python: None, True, ['a', 1], {'k': None}, ('x',); strings in repr
 * use single quotes unless they contain one and no double quote. tojson is transformers'
 * (json.dumps with ensure_ascii=False by default), not Jinja's HTML-safe one. "Whitespace" is
 * Python's str.isspace() set throughout.
 */
#include "srv_chat_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- types ---- */

typedef srv_chat__val_t val_t;
typedef srv_chat__rctx_t rctx_t;
typedef srv_chat__buf_t buf_t;
typedef srv_chat__list_t list_t;

static int is_none(const val_t *v) { return !v || v->t == SRV_CHAT__V_NONE; }

/* ---- str() and repr() ---- */

static int put(rctx_t *R, buf_t *b, const char *s, int line) {
    return srv_chat__buf_put(R, b, s, strlen(s), line);
}

static int repr(rctx_t *R, const val_t *v, buf_t *b, int line, int depth);

static int repr_str(rctx_t *R, const char *s, size_t n, buf_t *b, int line) {
    char q = '\'';
    if (memchr(s, '\'', n) && !memchr(s, '"', n)) q = '"';
    int rc = srv_chat__buf_put(R, b, &q, 1, line);
    size_t run = 0; /* pending bytes copied as they are */
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8] = {0};
        if (c == (unsigned char)q || c == '\\') esc[0] = '\\', esc[1] = (char)c;
        else if (c == '\n') memcpy(esc, "\\n", 3);
        else if (c == '\r') memcpy(esc, "\\r", 3);
        else if (c == '\t') memcpy(esc, "\\t", 3);
        else if (c < 0x20 || c == 0x7f) snprintf(esc, sizeof esc, "\\x%02x", c);
        if (!esc[0]) {
            run++;
            continue;
        }
        rc = srv_chat__buf_put(R, b, s + i - run, run, line);
        run = 0;
        if (rc == 0) rc = put(R, b, esc, line);
    }
    if (rc == 0) rc = srv_chat__buf_put(R, b, s + n - run, run, line);
    if (rc == 0) rc = srv_chat__buf_put(R, b, &q, 1, line);
    return rc;
}

static int repr_dict(rctx_t *R, const srv_chat__dict_t *d, buf_t *b, int line, int depth) {
    int rc = put(R, b, "{", line);
    for (size_t i = 0; i < d->n && rc == 0; i++) {
        if (i) rc = put(R, b, ", ", line);
        if (rc == 0) rc = repr_str(R, d->kv[i].k, d->kv[i].kn, b, line);
        if (rc == 0) rc = put(R, b, ": ", line);
        if (rc == 0) rc = repr(R, &d->kv[i].v, b, line, depth + 1);
    }
    return rc ? rc : put(R, b, "}", line);
}

static int repr(rctx_t *R, const val_t *v, buf_t *b, int line, int depth) {
    if (depth > 64) return srv_chat__fail(R, LLM_EINVAL, line, "value nested too deeply to print");
    switch (v->t) {
    case SRV_CHAT__V_UNDEF: return put(R, b, "Undefined", line);
    case SRV_CHAT__V_STR: return repr_str(R, v->u.s, v->n, b, line);
    case SRV_CHAT__V_LIST: {
        int tuple = v->aux == SRV_CHAT__L_TUPLE;
        if (v->aux == SRV_CHAT__L_GEN || v->aux == SRV_CHAT__L_VIEW) /* Python prints an address */
            return srv_chat__fail(R, LLM_EINVAL, line, "cannot print a %s (add |list)",
                                  v->aux == SRV_CHAT__L_GEN ? "generator" : "dict view");
        int rc = put(R, b, tuple ? "(" : "[", line);
        for (size_t i = 0; i < v->u.l->n && rc == 0; i++) {
            if (i) rc = put(R, b, ", ", line);
            if (rc == 0) rc = repr(R, &v->u.l->v[i], b, line, depth + 1);
        }
        if (rc == 0 && tuple && v->u.l->n == 1) rc = put(R, b, ",", line);
        return rc ? rc : put(R, b, tuple ? ")" : "]", line);
    }
    case SRV_CHAT__V_DICT: return repr_dict(R, v->u.d, b, line, depth);
    default: return srv_chat__str(R, v, b, line);
    }
}

int srv_chat__str(rctx_t *R, const val_t *v, buf_t *b, int line) {
    char num[64];
    switch (v->t) {
    case SRV_CHAT__V_UNDEF: return 0;
    case SRV_CHAT__V_NONE: return put(R, b, "None", line);
    case SRV_CHAT__V_BOOL: return put(R, b, v->u.i ? "True" : "False", line);
    case SRV_CHAT__V_INT:
        snprintf(num, sizeof num, "%lld", (long long)v->u.i);
        return put(R, b, num, line);
    case SRV_CHAT__V_STR: return srv_chat__buf_put(R, b, v->u.s, v->n, line);
    case SRV_CHAT__V_LIST:
    case SRV_CHAT__V_DICT: return repr(R, v, b, line, 0);
    case SRV_CHAT__V_NS: {
        int rc = put(R, b, "<Namespace ", line);
        if (rc == 0) rc = repr_dict(R, v->u.d, b, line, 1);
        return rc ? rc : put(R, b, ">", line);
    }
    case SRV_CHAT__V_LOOP:
        snprintf(num, sizeof num, "<LoopContext %lld/%lld>", (long long)v->u.loop->index0 + 1,
                 (long long)v->u.loop->length);
        return put(R, b, num, line);
    default:
        return srv_chat__fail(R, LLM_EINVAL, line,
                              "unsupported conversion of a function to a string");
    }
}

int srv_chat__to_str(rctx_t *R, const val_t *v, int line, val_t *out) {
    if (v->t == SRV_CHAT__V_STR) {
        *out = *v;
        return 0;
    }
    buf_t b = {0};
    int rc = srv_chat__str(R, v, &b, line);
    if (rc == 0) rc = srv_chat__buf_to_str(R, &b, line, out);
    free(b.s);
    return rc;
}

/* ---- tojson (transformers: json.dumps(x, ensure_ascii=False, indent=..., sort_keys=...)) ---- */

typedef struct json_opts_s {
    const char *indent; /* NULL: single line with ", " and ": " */
    size_t indent_n;
    int sort_keys, ascii;
} json_opts_t;

static int json_str(rctx_t *R, const char *s, size_t n, int ascii, buf_t *b, int line) {
    int rc = put(R, b, "\"", line);
    for (size_t i = 0, w; i < n && rc == 0; i += w) {
        unsigned char c = (unsigned char)s[i];
        char esc[16] = {0};
        w = 1;
        if (c == '"') memcpy(esc, "\\\"", 3);
        else if (c == '\\') memcpy(esc, "\\\\", 3);
        else if (c == '\n') memcpy(esc, "\\n", 3);
        else if (c == '\r') memcpy(esc, "\\r", 3);
        else if (c == '\t') memcpy(esc, "\\t", 3);
        else if (c == '\b') memcpy(esc, "\\b", 3);
        else if (c == '\f') memcpy(esc, "\\f", 3);
        else if (c < 0x20 || (ascii && c == 0x7f)) snprintf(esc, sizeof esc, "\\u%04x", c);
        else if (ascii && c >= 0x80) {
            uint32_t cp = srv_chat__utf8_dec(s + i, n - i, &w);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + (cp >> 10),
                         0xDC00 + (cp & 0x3FF));
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", cp);
            }
        }
        rc = esc[0] ? put(R, b, esc, line) : srv_chat__buf_put(R, b, s + i, 1, line);
    }
    return rc ? rc : put(R, b, "\"", line);
}

static int json_nl(rctx_t *R, const json_opts_t *o, int level, buf_t *b, int line) {
    int rc = put(R, b, "\n", line);
    for (int i = 0; i < level && rc == 0; i++)
        rc = srv_chat__buf_put(R, b, o->indent, o->indent_n, line);
    return rc;
}

static int kv_cmp(const void *x, const void *y) {
    const srv_chat__kv_t *a = *(const srv_chat__kv_t *const *)x,
                         *b = *(const srv_chat__kv_t *const *)y;
    size_t n = a->kn < b->kn ? a->kn : b->kn;
    int c = n ? memcmp(a->k, b->k, n) : 0;
    return c ? c : (a->kn > b->kn) - (a->kn < b->kn);
}

static int json(rctx_t *R, const val_t *v, const json_opts_t *o, int level, buf_t *b, int line) {
    char num[32];
    int rc = 0;
    if (level > 64)
        return srv_chat__fail(R, LLM_EINVAL, line, "value nested too deeply for tojson");
    switch (v->t) {
    case SRV_CHAT__V_NONE: return put(R, b, "null", line);
    case SRV_CHAT__V_BOOL: return put(R, b, v->u.i ? "true" : "false", line);
    case SRV_CHAT__V_INT:
        snprintf(num, sizeof num, "%lld", (long long)v->u.i);
        return put(R, b, num, line);
    case SRV_CHAT__V_STR: return json_str(R, v->u.s, v->n, o->ascii, b, line);
    case SRV_CHAT__V_LIST: {
        size_t n = v->u.l->n;
        if (v->aux == SRV_CHAT__L_GEN || v->aux == SRV_CHAT__L_VIEW)
            return srv_chat__fail(R, LLM_EINVAL, line, "Object of type %s is not JSON serializable",
                                  v->aux == SRV_CHAT__L_GEN ? "generator" : "dict view");
        if (n == 0) return put(R, b, "[]", line);
        rc = put(R, b, "[", line);
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (i) rc = put(R, b, o->indent ? "," : ", ", line);
            if (rc == 0 && o->indent) rc = json_nl(R, o, level + 1, b, line);
            if (rc == 0) rc = json(R, &v->u.l->v[i], o, level + 1, b, line);
        }
        if (rc == 0 && o->indent) rc = json_nl(R, o, level, b, line);
        return rc ? rc : put(R, b, "]", line);
    }
    case SRV_CHAT__V_DICT: {
        const srv_chat__dict_t *d = v->u.d;
        if (d->n == 0) return put(R, b, "{}", line);
        const srv_chat__kv_t **order = srv_chat__alloc(&R->ar, d->n * sizeof *order);
        if (!order) return srv_chat__nomem(R, line);
        for (size_t i = 0; i < d->n; i++) order[i] = &d->kv[i];
        if (o->sort_keys) qsort(order, d->n, sizeof *order, kv_cmp);
        rc = put(R, b, "{", line);
        for (size_t i = 0; i < d->n && rc == 0; i++) {
            if (i) rc = put(R, b, o->indent ? "," : ", ", line);
            if (rc == 0 && o->indent) rc = json_nl(R, o, level + 1, b, line);
            if (rc == 0) rc = json_str(R, order[i]->k, order[i]->kn, o->ascii, b, line);
            if (rc == 0) rc = put(R, b, ": ", line);
            if (rc == 0) rc = json(R, &order[i]->v, o, level + 1, b, line);
        }
        if (rc == 0 && o->indent) rc = json_nl(R, o, level, b, line);
        return rc ? rc : put(R, b, "}", line);
    }
    default:
        return srv_chat__fail(R, LLM_EINVAL, line, "Object of type %s is not JSON serializable",
                              v->t == SRV_CHAT__V_UNDEF ? "Undefined"
                              : v->t == SRV_CHAT__V_NS  ? "Namespace" : "function");
    }
}

int srv_chat__tojson(rctx_t *R, const val_t *x, const char *indent, size_t indent_n,
                     int sort_keys, int ensure_ascii, int line, val_t *out) {
    json_opts_t o = {indent, indent_n, sort_keys, ensure_ascii};
    buf_t b = {0};
    int rc = json(R, x, &o, 0, &b, line);
    if (rc == 0) rc = srv_chat__buf_to_str(R, &b, line, out);
    free(b.s);
    return rc;
}

/* ---- string operations ---- */

static int in_chars(const val_t *chars, uint32_t cp) {
    for (size_t i = 0, w; i < chars->n; i += w)
        if (srv_chat__utf8_dec(chars->u.s + i, chars->n - i, &w) == cp) return 1;
    return 0;
}

/* Python str.strip/lstrip/rstrip: chars NULL/none = whitespace. */
int srv_chat__strip(rctx_t *R, const val_t *s, const val_t *chars, int left, int right,
                    int line, val_t *out) {
    if (!is_none(chars) && chars->t != SRV_CHAT__V_STR)
        return srv_chat__fail(R, LLM_EINVAL, line, "strip arg must be None or str");
    if (is_none(chars)) chars = NULL;
    size_t b = 0, e = s->n, w;
    while (left && b < e) {
        if (chars) {
            uint32_t cp = srv_chat__utf8_dec(s->u.s + b, e - b, &w);
            if (!in_chars(chars, cp)) break;
        } else if ((w = srv_chat__ws_at(s->u.s, e, b)) == 0) {
            break;
        }
        b += w;
    }
    while (right && e > b) {
        if (chars) {
            size_t p = e - 1;
            while (p > b && ((unsigned char)s->u.s[p] & 0xC0) == 0x80) p--;
            if (!in_chars(chars, srv_chat__utf8_dec(s->u.s + p, e - p, &w))) break;
            e = p;
        } else {
            w = srv_chat__ws_before(s->u.s, e);
            if (w == 0 || e - w < b) break;
            e -= w;
        }
    }
    *out = (val_t){.t = SRV_CHAT__V_STR, .n = e - b, .u.s = s->u.s + b};
    return 0;
}

/* Unicode case mapping for the scripts chat messages mostly use: Latin (ASCII, Latin-1,
 * Extended-A, Vietnamese), Greek, Cyrillic, Armenian, fullwidth Latin. Other characters are
 * left as they are. Python's full mappings for ß (upper "SS", title "Ss"), İ (lower "i" +
 * U+0307) and the final sigma rule of lower() are applied; rarer ones (ŉ, ǰ, ΐ ...) are not. */
static uint32_t cp_upper(uint32_t c) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if (c < 0x80) return c;
    if (c == 0xB5) return 0x39C;
    if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
    if (c == 0xFF) return 0x178;
    if ((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
        return c & 1 ? c - 1 : c;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return c & 1 ? c : c - 1;
    if (c == 0x131) return 'I';
    if (c == 0x17F) return 'S';
    if ((c >= 0x3B1 && c <= 0x3C1) || (c >= 0x3C3 && c <= 0x3CB)) return c - 32;
    if (c == 0x3C2) return 0x3A3;
    if (c == 0x3AC) return 0x386;
    if (c >= 0x3AD && c <= 0x3AF) return c - 37;
    if (c == 0x3CC) return 0x38C;
    if (c == 0x3CD || c == 0x3CE) return c - 63;
    if (c >= 0x430 && c <= 0x44F) return c - 32;
    if (c >= 0x450 && c <= 0x45F) return c - 80;
    if ((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF) || (c >= 0x4D0 && c <= 0x52F))
        return c & 1 ? c - 1 : c;
    if (c >= 0x4C1 && c <= 0x4CE) return c & 1 ? c : c - 1;
    if (c == 0x4CF) return 0x4C0;
    if (c >= 0x561 && c <= 0x586) return c - 48;
    if ((c >= 0x1E00 && c <= 0x1E95) || (c >= 0x1EA0 && c <= 0x1EFF)) return c & 1 ? c - 1 : c;
    if (c >= 0xFF41 && c <= 0xFF5A) return c - 32;
    return c;
}

static uint32_t cp_lower(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c < 0x80) return c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c == 0x178) return 0xFF;
    if ((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
        return c & 1 ? c : c + 1;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return c & 1 ? c + 1 : c;
    if ((c >= 0x391 && c <= 0x3A1) || (c >= 0x3A3 && c <= 0x3AB)) return c + 32;
    if (c == 0x386) return 0x3AC;
    if (c >= 0x388 && c <= 0x38A) return c + 37;
    if (c == 0x38C) return 0x3CC;
    if (c == 0x38E || c == 0x38F) return c + 63;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    if ((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF) || (c >= 0x4D0 && c <= 0x52F))
        return c & 1 ? c : c + 1;
    if (c >= 0x4C1 && c <= 0x4CE) return c & 1 ? c + 1 : c;
    if (c == 0x4C0) return 0x4CF;
    if (c >= 0x531 && c <= 0x556) return c + 48;
    if ((c >= 0x1E00 && c <= 0x1E95) || (c >= 0x1EA0 && c <= 0x1EFF)) return c & 1 ? c : c + 1;
    if (c == 0x1E9E) return 0xDF;
    if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
    return c;
}

static int is_lower_cp(uint32_t c) {
    return cp_upper(c) != c || c == 0xDF || c == 0x138 || c == 0x149;
}
static int is_upper_cp(uint32_t c) { return cp_lower(c) != c || c == 0x130; }
static int is_cased(uint32_t c) { return is_lower_cp(c) || is_upper_cp(c); }

/* Python str.islower() (upper = 0) / str.isupper() (upper = 1). */
int srv_chat__is_case(const val_t *s, int upper) {
    int cased = 0;
    for (size_t i = 0, w; i < s->n; i += w) {
        uint32_t c = srv_chat__utf8_dec(s->u.s + i, s->n - i, &w);
        if (upper ? is_lower_cp(c) : is_upper_cp(c)) return 0;
        cased |= is_cased(c);
    }
    return cased;
}

static size_t put_cp(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    o[0] = (char)(0xE0 | (cp >> 12)); /* every mapped character is in the BMP */
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

enum { OP_KEEP, OP_UP, OP_TITLE, OP_LOW };

/* Case-maps s (modes SRV_CHAT__CASE_*). Invalid UTF-8 bytes are copied as they are. */
int srv_chat__case(rctx_t *R, const val_t *s, int mode, int line, val_t *out) {
    buf_t b = {0};
    int rc = 0, prev_cased = 0, word_start = 1;
    for (size_t i = 0, w; i < s->n && rc == 0; i += w) {
        uint32_t c = srv_chat__utf8_dec(s->u.s + i, s->n - i, &w), m = c;
        int op, cased = is_cased(c);
        switch (mode) {
        case SRV_CHAT__CASE_UPPER: op = OP_UP; break;
        case SRV_CHAT__CASE_LOWER: op = OP_LOW; break;
        case SRV_CHAT__CASE_CAPITALIZE: op = i == 0 ? OP_TITLE : OP_LOW; break;
        case SRV_CHAT__CASE_PY_TITLE: op = prev_cased ? OP_LOW : OP_TITLE; break;
        default: { /* Jinja's title filter: words split at runs of [-\s({\[<] */
            int sep = srv_chat__ws_at(s->u.s, s->n, i) > 0 || c == '-' || c == '(' || c == '{' ||
                      c == '[' || c == '<';
            op = sep ? OP_KEEP : word_start ? OP_UP : OP_LOW;
            word_start = sep;
        }
        }
        char tmp[8];
        size_t k = 0;
        if (c == 0xDF && (op == OP_UP || op == OP_TITLE)) {
            tmp[k++] = 'S';
            tmp[k++] = op == OP_UP ? 'S' : 's';
        } else if (c == 0x130 && op == OP_LOW) {
            memcpy(tmp, "i\xCC\x87", 3);
            k = 3;
        } else {
            if (op == OP_UP || op == OP_TITLE) m = cp_upper(c);
            if (op == OP_LOW) m = cp_lower(c);
            if (c == 0x3A3 && op == OP_LOW && prev_cased) { /* final sigma: no cased letter next */
                size_t w2;
                if (i + w >= s->n ||
                    !is_cased(srv_chat__utf8_dec(s->u.s + i + w, s->n - i - w, &w2)))
                    m = 0x3C2;
            }
            if (m != c) k = put_cp(tmp, m);
        }
        rc = k ? srv_chat__buf_put(R, &b, tmp, k, line)
               : srv_chat__buf_put(R, &b, s->u.s + i, w, line);
        prev_cased = cased;
    }
    if (rc == 0) rc = srv_chat__buf_to_str(R, &b, line, out);
    free(b.s);
    return rc;
}

int srv_chat__replace(rctx_t *R, const val_t *s, const val_t *old, const val_t *new_,
                      int64_t count, int line, val_t *out) {
    buf_t b = {0};
    int rc = 0;
    size_t i = 0;
    int64_t done = 0;
    if (old->n == 0) { /* Python inserts new before every character and at the end */
        for (size_t w; rc == 0 && (count < 0 || done < count) && i <= s->n; done++) {
            rc = srv_chat__buf_put(R, &b, new_->u.s, new_->n, line);
            if (i == s->n) {
                i++;
                break;
            }
            srv_chat__utf8_dec(s->u.s + i, s->n - i, &w);
            if (rc == 0) rc = srv_chat__buf_put(R, &b, s->u.s + i, w, line);
            i += w;
        }
        if (rc == 0 && i < s->n) rc = srv_chat__buf_put(R, &b, s->u.s + i, s->n - i, line);
    } else {
        while (rc == 0 && (count < 0 || done < count)) {
            const char *p = memmem(s->u.s + i, s->n - i, old->u.s, old->n);
            if (!p) break;
            size_t at = (size_t)(p - s->u.s);
            rc = srv_chat__buf_put(R, &b, s->u.s + i, at - i, line);
            if (rc == 0) rc = srv_chat__buf_put(R, &b, new_->u.s, new_->n, line);
            i = at + old->n;
            done++;
        }
        if (rc == 0) rc = srv_chat__buf_put(R, &b, s->u.s + i, s->n - i, line);
    }
    if (rc == 0) rc = srv_chat__buf_to_str(R, &b, line, out);
    free(b.s);
    return rc;
}

/* str.split(sep=None, maxsplit=-1) */
int srv_chat__split(rctx_t *R, const val_t *s, const val_t *sep, int64_t maxsplit, int line,
                    val_t *out) {
    list_t *l = srv_chat__mklist(R, s->n + 1, line);
    if (!l) return R->err->code;
    l->n = 0;
    size_t i = 0, w;
    if (is_none(sep)) {
        for (;;) {
            while (i < s->n && (w = srv_chat__ws_at(s->u.s, s->n, i)) > 0) i += w;
            if (i >= s->n) break;
            size_t b = i;
            if (maxsplit >= 0 && (int64_t)l->n == maxsplit) {
                i = s->n;
            } else {
                while (i < s->n && srv_chat__ws_at(s->u.s, s->n, i) == 0) i++;
            }
            l->v[l->n++] = (val_t){.t = SRV_CHAT__V_STR, .n = i - b, .u.s = s->u.s + b};
        }
    } else {
        if (sep->t != SRV_CHAT__V_STR)
            return srv_chat__fail(R, LLM_EINVAL, line, "split separator must be a string");
        if (sep->n == 0) return srv_chat__fail(R, LLM_EINVAL, line, "empty separator");
        for (;;) {
            const char *p = (maxsplit >= 0 && (int64_t)l->n == maxsplit)
                                ? NULL : memmem(s->u.s + i, s->n - i, sep->u.s, sep->n);
            size_t e = p ? (size_t)(p - s->u.s) : s->n;
            l->v[l->n++] = (val_t){.t = SRV_CHAT__V_STR, .n = e - i, .u.s = s->u.s + i};
            if (!p) break;
            i = e + sep->n;
        }
    }
    *out = (val_t){.t = SRV_CHAT__V_LIST, .u.l = l};
    return 0;
}

/* markupsafe.escape: a Markup string is returned as it is, anything else is converted with
 * str() and escaped; the result is Markup, which escapes plain strings added to it. */
int srv_chat__escape(rctx_t *R, const val_t *x, int line, val_t *out) {
    val_t s;
    if (x->t == SRV_CHAT__V_STR && x->aux) {
        *out = *x;
        return 0;
    }
    int rc = srv_chat__to_str(R, x, line, &s);
    buf_t b = {0};
    for (size_t i = 0; i < s.n && rc == 0; i++) {
        char c = s.u.s[i];
        const char *e = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;"
                      : c == '"' ? "&#34;" : c == '\'' ? "&#39;" : NULL;
        rc = e ? put(R, &b, e, line) : srv_chat__buf_put(R, &b, &c, 1, line);
    }
    if (rc == 0) rc = srv_chat__buf_to_str(R, &b, line, out);
    free(b.s);
    out->aux = 1;
    return rc;
}
