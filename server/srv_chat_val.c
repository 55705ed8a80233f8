/* srv_chat_val.c: chat-template values and their Python/Jinja semantics.
 *
 * Undefined prints as "" and is falsy but fails in arithmetic or attribute access; `x.name`
 * tries methods and then dict keys (and x['name'] the reverse), and a failed lookup gives an
 * undefined value rather than an error, as Jinja's getattr/getitem do; `+` works on ints,
 * strings and lists; comparisons, `in`, floor division and modulo follow Python.
 *
 * Every value lives in the render's arena, freed in one go at the end; the arena's limit,
 * max_output and max_steps bound what a runaway template can consume.
 */
#include "srv_chat_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- types ---- */

typedef srv_chat__val_t val_t;
typedef srv_chat__rctx_t rctx_t;
typedef srv_chat__list_t list_t;
typedef srv_chat__buf_t buf_t;

static const val_t k_undef = {.t = SRV_CHAT__V_UNDEF};

/* ---- errors, memory, buffers ---- */

int srv_chat__fail(rctx_t *R, int code, int line, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return llm_err_set(R->err, code, "chat template: %s at line %d", msg, line);
}

int srv_chat__nomem(rctx_t *R, int line) {
    if (R->ar.over)
        return srv_chat__fail(R, LLM_ERANGE, line, "memory limit of %zu bytes exceeded",
                              R->c->lim.max_memory);
    return srv_chat__fail(R, LLM_ENOMEM, line, "out of memory");
}

const char *srv_chat__type_name(const val_t *v) {
    switch (v->t) {
    case SRV_CHAT__V_UNDEF: return "Undefined";
    case SRV_CHAT__V_NONE: return "NoneType";
    case SRV_CHAT__V_BOOL: return "bool";
    case SRV_CHAT__V_INT: return "int";
    case SRV_CHAT__V_STR: return "str";
    case SRV_CHAT__V_LIST:
        return v->aux == SRV_CHAT__L_TUPLE ? "tuple" : v->aux == SRV_CHAT__L_GEN ? "generator"
             : v->aux == SRV_CHAT__L_VIEW ? "dict view" : "list";
    case SRV_CHAT__V_DICT: return "dict";
    case SRV_CHAT__V_NS: return "Namespace";
    case SRV_CHAT__V_FUNC: return "function";
    case SRV_CHAT__V_METHOD: return "method";
    default: return "LoopContext";
    }
}

int srv_chat__undef_fail(rctx_t *R, const val_t *v, int line) {
    int n = (int)(v->n > 100 ? 100 : v->n);
    const char *name = v->name ? v->name : "value";
    if (v->aux == 1)
        return srv_chat__fail(R, LLM_EINVAL, line, "'%s object' has no attribute '%.*s'",
                              v->u.s ? v->u.s : "?", n, name);
    if (v->aux == 2)
        return srv_chat__fail(R, LLM_EINVAL, line, "'%s object' has no element %.*s",
                              v->u.s ? v->u.s : "?", n, name);
    if (v->aux == 3)
        return srv_chat__fail(R, LLM_EINVAL, line, "%.*s", n, name);
    return srv_chat__fail(R, LLM_EINVAL, line, "'%.*s' is undefined", n, name);
}

int srv_chat__step(rctx_t *R, uint64_t k, int line) {
    R->steps += k;
    if (R->steps > R->c->lim.max_steps || k > R->c->lim.max_steps)
        return srv_chat__fail(R, LLM_ERANGE, line,
                              "more than %llu loop steps (iterations and range() items)",
                              (unsigned long long)R->c->lim.max_steps);
    return 0;
}

int srv_chat__buf_put(rctx_t *R, buf_t *b, const char *s, size_t n, int line) {
    if (n > R->c->lim.max_output || b->n + n > R->c->lim.max_output)
        return srv_chat__fail(R, LLM_ERANGE, line, "output longer than %zu bytes",
                              R->c->lim.max_output);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *s2 = realloc(b->s, cap);
        if (!s2) return srv_chat__fail(R, LLM_ENOMEM, line, "out of memory");
        b->s = s2;
        b->cap = cap;
    }
    if (n) memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return 0;
}

int srv_chat__mkstr(rctx_t *R, const char *s, size_t n, int line, val_t *out) {
    if (n > R->c->lim.max_output)
        return srv_chat__fail(R, LLM_ERANGE, line, "string longer than %zu bytes",
                              R->c->lim.max_output);
    char *d = srv_chat__alloc(&R->ar, n + 1);
    if (!d) return srv_chat__nomem(R, line);
    if (n) memcpy(d, s, n);
    *out = (val_t){.t = SRV_CHAT__V_STR, .n = n, .u.s = d};
    return 0;
}

int srv_chat__buf_to_str(rctx_t *R, buf_t *b, int line, val_t *out) {
    int rc = srv_chat__mkstr(R, b->s ? b->s : "", b->n, line, out);
    b->n = 0;
    return rc;
}

list_t *srv_chat__mklist(rctx_t *R, size_t n, int line) {
    list_t *l = srv_chat__alloc(&R->ar, sizeof *l);
    if (l && n) l->v = srv_chat__alloc(&R->ar, n * sizeof *l->v);
    if (!l || (n && !l->v)) {
        srv_chat__nomem(R, line);
        return NULL;
    }
    l->n = n; /* zeroed memory is V_UNDEF */
    return l;
}

srv_chat__dict_t *srv_chat__mkdict(rctx_t *R, size_t cap, int line) {
    srv_chat__dict_t *d = srv_chat__alloc(&R->ar, sizeof *d);
    if (d && cap) d->kv = srv_chat__alloc(&R->ar, cap * sizeof *d->kv);
    if (!d || (cap && !d->kv)) {
        srv_chat__nomem(R, line);
        return NULL;
    }
    d->cap = cap;
    return d;
}

const val_t *srv_chat__dict_get(const srv_chat__dict_t *d, const char *k, size_t kn) {
    for (size_t i = 0; i < d->n; i++)
        if (d->kv[i].kn == kn && memcmp(d->kv[i].k, k, kn) == 0) return &d->kv[i].v;
    return NULL;
}

int srv_chat__dict_set(rctx_t *R, srv_chat__dict_t *d, const char *k, size_t kn, const val_t *v,
                       int line) {
    for (size_t i = 0; i < d->n; i++) {
        if (d->kv[i].kn == kn && memcmp(d->kv[i].k, k, kn) == 0) {
            d->kv[i].v = *v;
            return 0;
        }
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        srv_chat__kv_t *kv = srv_chat__alloc(&R->ar, cap * sizeof *kv);
        if (!kv) return srv_chat__nomem(R, line);
        if (d->n) memcpy(kv, d->kv, d->n * sizeof *kv);
        d->kv = kv;
        d->cap = cap;
    }
    d->kv[d->n++] = (srv_chat__kv_t){.k = k, .kn = kn, .v = *v};
    return 0;
}

/* ---- Python semantics ---- */

int srv_chat__truthy(const val_t *v) {
    switch (v->t) {
    case SRV_CHAT__V_UNDEF:
    case SRV_CHAT__V_NONE: return 0;
    case SRV_CHAT__V_BOOL:
    case SRV_CHAT__V_INT: return v->u.i != 0;
    case SRV_CHAT__V_STR: return v->n > 0;
    case SRV_CHAT__V_LIST: return v->aux == SRV_CHAT__L_GEN || v->u.l->n > 0;
    case SRV_CHAT__V_DICT: return v->u.d->n > 0;
    default: return 1;
    }
}

/* A list or a tuple (not a generator or a dict view). */
static int is_seq(const val_t *v) {
    return v->t == SRV_CHAT__V_LIST && (v->aux == SRV_CHAT__L_LIST || v->aux == SRV_CHAT__L_TUPLE);
}

static int is_num(const val_t *v) { return v->t == SRV_CHAT__V_INT || v->t == SRV_CHAT__V_BOOL; }

int srv_chat__eq(const val_t *a, const val_t *b) {
    if (is_num(a) && is_num(b)) return a->u.i == b->u.i;
    if (a->t != b->t) return 0;
    switch (a->t) {
    case SRV_CHAT__V_UNDEF:
    case SRV_CHAT__V_NONE: return 1;
    case SRV_CHAT__V_STR: return a->n == b->n && memcmp(a->u.s, b->u.s, a->n) == 0;
    case SRV_CHAT__V_LIST:
        if (a->aux != b->aux || a->u.l->n != b->u.l->n) return 0;
        for (size_t i = 0; i < a->u.l->n; i++)
            if (!srv_chat__eq(&a->u.l->v[i], &b->u.l->v[i])) return 0;
        return 1;
    case SRV_CHAT__V_DICT:
        if (a->u.d->n != b->u.d->n) return 0;
        for (size_t i = 0; i < a->u.d->n; i++) {
            const val_t *o = srv_chat__dict_get(b->u.d, a->u.d->kv[i].k, a->u.d->kv[i].kn);
            if (!o || !srv_chat__eq(&a->u.d->kv[i].v, o)) return 0;
        }
        return 1;
    case SRV_CHAT__V_NS: return a->u.d == b->u.d;
    case SRV_CHAT__V_FUNC: return a->aux == b->aux;
    case SRV_CHAT__V_METHOD: return a->u.self == b->u.self && strcmp(a->name, b->name) == 0;
    default: return a->u.loop == b->u.loop;
    }
}

/* Byte offsets of the code points of s (n+1 entries, last = len); *ncp = count. */
static int cp_offsets(rctx_t *R, const char *s, size_t len, int line, size_t **offs, size_t *ncp) {
    size_t k = 0;
    for (size_t i = 0, w; i < len; i += w, k++) srv_chat__utf8_dec(s + i, len - i, &w);
    size_t *o = srv_chat__alloc(&R->ar, (k + 1) * sizeof *o);
    if (!o) return srv_chat__nomem(R, line);
    k = 0;
    for (size_t i = 0, w; i < len; i += w) {
        o[k++] = i;
        srv_chat__utf8_dec(s + i, len - i, &w);
    }
    o[k] = len;
    *offs = o;
    *ncp = k;
    return 0;
}

int srv_chat__len(rctx_t *R, const val_t *v, int line, int64_t *out) {
    switch (v->t) {
    case SRV_CHAT__V_UNDEF: *out = 0; return 0;
    case SRV_CHAT__V_STR: {
        int64_t k = 0;
        for (size_t i = 0; i < v->n; i++) k += ((unsigned char)v->u.s[i] & 0xC0) != 0x80;
        *out = k;
        return 0;
    }
    case SRV_CHAT__V_LIST:
        if (v->aux == SRV_CHAT__L_GEN) break;
        *out = (int64_t)v->u.l->n;
        return 0;
    case SRV_CHAT__V_DICT: *out = (int64_t)v->u.d->n; return 0;
    default: break;
    }
    return srv_chat__fail(R, LLM_EINVAL, line, "object of type '%s' has no len()",
                          srv_chat__type_name(v));
}

int srv_chat__iterate(rctx_t *R, const val_t *x, int line, const list_t **out) {
    static const list_t empty = {NULL, 0};
    switch (x->t) {
    case SRV_CHAT__V_UNDEF: *out = &empty; return 0;
    case SRV_CHAT__V_LIST: *out = x->u.l; return 0;
    case SRV_CHAT__V_DICT: {
        list_t *l = srv_chat__mklist(R, x->u.d->n, line);
        if (!l) return R->err->code;
        for (size_t i = 0; i < x->u.d->n; i++)
            l->v[i] = (val_t){.t = SRV_CHAT__V_STR, .n = x->u.d->kv[i].kn, .u.s = x->u.d->kv[i].k};
        *out = l;
        return 0;
    }
    case SRV_CHAT__V_STR: {
        size_t *o, ncp;
        int rc = cp_offsets(R, x->u.s, x->n, line, &o, &ncp);
        if (rc) return rc;
        list_t *l = srv_chat__mklist(R, ncp, line);
        if (!l) return R->err->code;
        for (size_t i = 0; i < ncp; i++)
            l->v[i] = (val_t){.t = SRV_CHAT__V_STR, .n = o[i + 1] - o[i], .u.s = x->u.s + o[i]};
        *out = l;
        return 0;
    }
    default:
        return srv_chat__fail(R, LLM_EINVAL, line, "'%s' object is not iterable",
                              srv_chat__type_name(x));
    }
}

static val_t undef_attr(const val_t *owner, const char *name, size_t n, int aux) {
    val_t u = {.t = SRV_CHAT__V_UNDEF, .aux = aux, .name = name, .n = n};
    u.u.s = owner->t == SRV_CHAT__V_DICT ? "dict" : srv_chat__type_name(owner);
    return u;
}

static int bind_method(rctx_t *R, const val_t *x, const char *name, size_t n, int line,
                       val_t *out) {
    val_t *self = srv_chat__alloc(&R->ar, sizeof *self);
    char *nm = srv_chat__alloc(&R->ar, n + 1);
    if (!self || !nm) return srv_chat__nomem(R, line);
    *self = *x;
    memcpy(nm, name, n);
    *out = (val_t){.t = SRV_CHAT__V_METHOD, .name = nm, .u.self = self};
    return 0;
}

static int loop_attr(const val_t *x, const char *name, size_t n, val_t *out) {
    const srv_chat__loop_t *L = x->u.loop;
    static const char *const names[] = {"index", "index0", "first", "last", "length",
                                        "revindex", "revindex0", "previtem", "nextitem",
                                        "depth", "depth0", NULL};
    int k = -1;
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == n && memcmp(names[i], name, n) == 0) k = i;
    val_t v = {.t = SRV_CHAT__V_INT};
    switch (k) {
    case 0: v.u.i = L->index0 + 1; break;
    case 1: v.u.i = L->index0; break;
    case 2: v.t = SRV_CHAT__V_BOOL; v.u.i = L->index0 == 0; break;
    case 3: v.t = SRV_CHAT__V_BOOL; v.u.i = L->index0 == L->length - 1; break;
    case 4: v.u.i = L->length; break;
    case 5: v.u.i = L->length - L->index0; break;
    case 6: v.u.i = L->length - L->index0 - 1; break;
    case 7: v = L->index0 > 0 ? L->items->v[L->index0 - 1] : k_undef; break;
    case 8: v = L->index0 + 1 < L->length ? L->items->v[L->index0 + 1] : k_undef; break;
    case 9: v.u.i = 1; break;
    case 10: v.u.i = 0; break;
    default: return 0;
    }
    *out = v;
    return 1;
}

int srv_chat__getattr(rctx_t *R, const val_t *x, const char *name, size_t n, int line,
                      val_t *out) {
    const val_t *v;
    switch (x->t) {
    case SRV_CHAT__V_UNDEF: return srv_chat__undef_fail(R, x, line);
    case SRV_CHAT__V_DICT:
        if (srv_chat__is_method(x, name, n)) return bind_method(R, x, name, n, line, out);
        v = srv_chat__dict_get(x->u.d, name, n);
        *out = v ? *v : undef_attr(x, name, n, 1);
        return 0;
    case SRV_CHAT__V_NS:
        v = srv_chat__dict_get(x->u.d, name, n);
        *out = v ? *v : undef_attr(x, name, n, 1);
        return 0;
    case SRV_CHAT__V_LOOP:
        if (loop_attr(x, name, n, out)) return 0;
        break;
    default: break;
    }
    if (srv_chat__is_method(x, name, n)) return bind_method(R, x, name, n, line, out);
    *out = undef_attr(x, name, n, 1);
    return 0;
}

int srv_chat__getitem(rctx_t *R, const val_t *x, const val_t *key, int line, val_t *out) {
    if (x->t == SRV_CHAT__V_UNDEF) return srv_chat__undef_fail(R, x, line);
    if (key->t == SRV_CHAT__V_STR) {
        if (x->t == SRV_CHAT__V_DICT) {
            const val_t *v = srv_chat__dict_get(x->u.d, key->u.s, key->n);
            if (v) {
                *out = *v;
                return 0;
            }
        }
        return srv_chat__getattr(R, x, key->u.s, key->n, line, out);
    }
    if (is_num(key) && (is_seq(x) || x->t == SRV_CHAT__V_STR)) {
        int64_t i = key->u.i, len = 0;
        int rc = srv_chat__len(R, x, line, &len);
        if (rc) return rc;
        if (i < 0) i += len;
        if (i < 0 || i >= len) {
            char *num = srv_chat__alloc(&R->ar, 24);
            if (!num) return srv_chat__nomem(R, line);
            int k = snprintf(num, 24, "%lld", (long long)key->u.i);
            *out = undef_attr(x, num, (size_t)k, 2);
            return 0;
        }
        if (x->t == SRV_CHAT__V_LIST) {
            *out = x->u.l->v[i];
            return 0;
        }
        size_t *o, ncp;
        if ((rc = cp_offsets(R, x->u.s, x->n, line, &o, &ncp))) return rc;
        *out = (val_t){
            .t = SRV_CHAT__V_STR, .aux = x->aux, .n = o[i + 1] - o[i], .u.s = x->u.s + o[i]};
        return 0;
    }
    /* Jinja turns the TypeError/LookupError of e.g. 5[0] or dict[0] into an undefined value */
    *out = (val_t){.t = SRV_CHAT__V_UNDEF, .aux = 3, .name = "no such item", .n = 12};
    return 0;
}

/* Python's slice.indices() + the selection, for lists/tuples and (by code point) strings.
 * (Jinja folds constant expressions at compile time, where e.g. 5[1:] becomes undefined
 * instead of an error; that quirk is not reproduced.) */
int srv_chat__slice(rctx_t *R, const val_t *x, const val_t *const b[3], int line, val_t *out) {
    int64_t idx[3];
    int has[3], bad = 0;
    if (x->t == SRV_CHAT__V_UNDEF) return srv_chat__undef_fail(R, x, line);
    for (int k = 0; k < 3; k++) {
        has[k] = b[k] && b[k]->t != SRV_CHAT__V_NONE;
        bad |= has[k] && !is_num(b[k]);
        idx[k] = has[k] && !bad ? b[k]->u.i : 0;
    }
    /* Jinja compiles slices to a plain Python subscript (not its forgiving getitem), so
     * these are TypeErrors */
    if (!is_seq(x) && x->t != SRV_CHAT__V_STR)
        return srv_chat__fail(R, LLM_EINVAL, line, "'%s' object is not subscriptable",
                              srv_chat__type_name(x));
    if (bad) return srv_chat__fail(R, LLM_EINVAL, line, "slice indices must be integers or None");
    int64_t step = has[2] ? idx[2] : 1, len;
    if (step == 0) return srv_chat__fail(R, LLM_EINVAL, line, "slice step cannot be zero");
    int rc = srv_chat__len(R, x, line, &len);
    if (rc) return rc;
    int64_t se[2];
    for (int k = 0; k < 2; k++) {
        int64_t v;
        if (!has[k]) {
            v = k == 0 ? (step > 0 ? 0 : len - 1) : (step > 0 ? len : -1);
        } else {
            v = idx[k];
            if (v < 0) {
                v += len;
                if (v < 0) v = step < 0 ? -1 : 0;
            } else if (v >= len) {
                v = step < 0 ? len - 1 : len;
            }
        }
        se[k] = v;
    }
    int64_t count = 0;
    if (step > 0 && se[1] > se[0]) count = (se[1] - se[0] - 1) / step + 1;
    if (step < 0 && se[0] > se[1]) count = (se[0] - se[1] - 1) / (-step) + 1;
    if (x->t == SRV_CHAT__V_LIST) {
        list_t *l = srv_chat__mklist(R, (size_t)count, line);
        if (!l) return R->err->code;
        for (int64_t i = 0; i < count; i++) l->v[i] = x->u.l->v[se[0] + i * step];
        *out = (val_t){.t = SRV_CHAT__V_LIST, .aux = x->aux, .u.l = l};
        return 0;
    }
    size_t *o, ncp;
    if ((rc = cp_offsets(R, x->u.s, x->n, line, &o, &ncp))) return rc;
    if (step == 1) {
        *out = (val_t){.t = SRV_CHAT__V_STR, .aux = x->aux,
                       .n = count ? o[se[0] + count] - o[se[0]] : 0,
                       .u.s = x->u.s + (count ? o[se[0]] : 0)};
        return 0;
    }
    buf_t b2 = {0};
    for (int64_t i = 0; i < count && rc == 0; i++) {
        int64_t c = se[0] + i * step;
        rc = srv_chat__buf_put(R, &b2, x->u.s + o[c], o[c + 1] - o[c], line);
    }
    if (rc == 0) rc = srv_chat__buf_to_str(R, &b2, line, out);
    free(b2.s);
    out->aux = x->aux;
    return rc;
}

/* ---- operators ---- */

static int type_error(rctx_t *R, const char *op, const val_t *a, const val_t *b, int line) {
    return srv_chat__fail(R, LLM_EINVAL, line, "unsupported operand types for %s: '%s' and '%s'",
                          op, srv_chat__type_name(a), srv_chat__type_name(b));
}

static int repeat(rctx_t *R, const val_t *x, int64_t k, int line, val_t *out) {
    if (k < 0) k = 0;
    if (x->t == SRV_CHAT__V_STR) {
        if (x->n && (uint64_t)k > R->c->lim.max_output / x->n)
            return srv_chat__fail(R, LLM_ERANGE, line, "string longer than %zu bytes",
                                  R->c->lim.max_output);
        buf_t b = {0};
        int rc = 0;
        for (int64_t i = 0; i < k && rc == 0; i++)
            rc = srv_chat__buf_put(R, &b, x->u.s, x->n, line);
        if (rc == 0) rc = srv_chat__buf_to_str(R, &b, line, out);
        free(b.s);
        return rc;
    }
    size_t n = x->u.l->n;
    int rc = srv_chat__step(R, (uint64_t)k * n, line);
    if (rc) return rc;
    list_t *l = srv_chat__mklist(R, (size_t)k * n, line);
    if (!l) return R->err->code;
    for (int64_t i = 0; i < k; i++) memcpy(l->v + (size_t)i * n, x->u.l->v, n * sizeof *l->v);
    *out = (val_t){.t = SRV_CHAT__V_LIST, .aux = x->aux, .u.l = l};
    return 0;
}

int srv_chat__arith(rctx_t *R, int op, const val_t *a, const val_t *b, int line, val_t *out) {
    static const char *const sym[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    if (a->t == SRV_CHAT__V_UNDEF) return srv_chat__undef_fail(R, a, line);
    if (b->t == SRV_CHAT__V_UNDEF) return srv_chat__undef_fail(R, b, line);
    if (op == SRV_CHAT__OP_DIV)
        return srv_chat__fail(R, LLM_EINVAL, line, "unsupported operator '/' (float result)");
    if (is_num(a) && is_num(b)) {
        int64_t x = a->u.i, y = b->u.i, r = 0;
        int ovf = 0;
        switch (op) {
        case SRV_CHAT__OP_ADD: ovf = __builtin_add_overflow(x, y, &r); break;
        case SRV_CHAT__OP_SUB: ovf = __builtin_sub_overflow(x, y, &r); break;
        case SRV_CHAT__OP_MUL: ovf = __builtin_mul_overflow(x, y, &r); break;
        case SRV_CHAT__OP_FLOORDIV:
        case SRV_CHAT__OP_MOD:
            if (y == 0)
                return srv_chat__fail(R, LLM_EINVAL, line, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) { ovf = 1; break; }
            r = op == SRV_CHAT__OP_MOD ? x % y : x / y;
            if (op == SRV_CHAT__OP_MOD && r != 0 && ((r < 0) != (y < 0))) r += y; /* Python sign */
            if (op == SRV_CHAT__OP_FLOORDIV && (x % y != 0) && ((x < 0) != (y < 0))) r -= 1;
            break;
        case SRV_CHAT__OP_POW:
            if (y < 0)
                return srv_chat__fail(R, LLM_EINVAL, line,
                                      "unsupported negative power (float result)");
            r = 1;
            for (int64_t i = 0; i < y && !ovf; i++) ovf = __builtin_mul_overflow(r, x, &r);
            break;
        }
        if (ovf) return srv_chat__fail(R, LLM_EINVAL, line, "integer overflow");
        *out = (val_t){.t = SRV_CHAT__V_INT, .u.i = r};
        return 0;
    }
    if (op == SRV_CHAT__OP_ADD && a->t == SRV_CHAT__V_STR && b->t == SRV_CHAT__V_STR) {
        val_t ea, eb;
        if (a->aux != b->aux) { /* Markup + str escapes the str (markupsafe), and stays Markup */
            int rc = a->aux ? srv_chat__escape(R, b, line, &eb) : srv_chat__escape(R, a, line, &ea);
            if (rc) return rc;
            if (a->aux) b = &eb;
            else a = &ea;
        }
        if (a->n + b->n > R->c->lim.max_output)
            return srv_chat__fail(R, LLM_ERANGE, line, "string longer than %zu bytes",
                                  R->c->lim.max_output);
        char *d = srv_chat__alloc(&R->ar, a->n + b->n + 1);
        if (!d) return srv_chat__nomem(R, line);
        memcpy(d, a->u.s, a->n);
        memcpy(d + a->n, b->u.s, b->n);
        *out = (val_t){.t = SRV_CHAT__V_STR, .aux = a->aux, .n = a->n + b->n, .u.s = d};
        return 0;
    }
    if (op == SRV_CHAT__OP_ADD && is_seq(a) && is_seq(b) && a->aux == b->aux) {
        size_t n = a->u.l->n + b->u.l->n;
        list_t *l = srv_chat__mklist(R, n, line);
        if (!l) return R->err->code;
        if (a->u.l->n) memcpy(l->v, a->u.l->v, a->u.l->n * sizeof *l->v);
        if (b->u.l->n) memcpy(l->v + a->u.l->n, b->u.l->v, b->u.l->n * sizeof *l->v);
        *out = (val_t){.t = SRV_CHAT__V_LIST, .aux = a->aux, .u.l = l};
        return 0;
    }
    if (op == SRV_CHAT__OP_MUL && (a->t == SRV_CHAT__V_STR || is_seq(a)) && is_num(b))
        return repeat(R, a, b->u.i, line, out);
    if (op == SRV_CHAT__OP_MUL && (b->t == SRV_CHAT__V_STR || is_seq(b)) && is_num(a))
        return repeat(R, b, a->u.i, line, out);
    if (op == SRV_CHAT__OP_MOD && a->t == SRV_CHAT__V_STR)
        return srv_chat__fail(R, LLM_EINVAL, line, "unsupported '%%' string formatting");
    return type_error(R, sym[op], a, b, line);
}

static int str_cmp(const val_t *a, const val_t *b) {
    size_t n = a->n < b->n ? a->n : b->n;
    int c = n ? memcmp(a->u.s, b->u.s, n) : 0;
    if (c) return c;
    return a->n < b->n ? -1 : a->n > b->n;
}

static int contains(rctx_t *R, const val_t *hay, const val_t *x, int line, int *res) {
    switch (hay->t) {
    case SRV_CHAT__V_UNDEF: *res = 0; return 0;
    case SRV_CHAT__V_STR:
        if (x->t == SRV_CHAT__V_UNDEF) return srv_chat__undef_fail(R, x, line);
        if (x->t != SRV_CHAT__V_STR)
            return srv_chat__fail(R, LLM_EINVAL, line,
                                  "'in <string>' requires string as left operand, not %s",
                                  srv_chat__type_name(x));
        *res = x->n == 0 || (x->n <= hay->n && memmem(hay->u.s, hay->n, x->u.s, x->n) != NULL);
        return 0;
    case SRV_CHAT__V_LIST:
        *res = 0;
        for (size_t i = 0; i < hay->u.l->n && !*res; i++) *res = srv_chat__eq(&hay->u.l->v[i], x);
        return 0;
    case SRV_CHAT__V_DICT:
        if (x->t == SRV_CHAT__V_LIST || x->t == SRV_CHAT__V_DICT || x->t == SRV_CHAT__V_NS)
            return srv_chat__fail(R, LLM_EINVAL, line, "unhashable type: '%s'",
                                  srv_chat__type_name(x));
        *res = x->t == SRV_CHAT__V_STR && srv_chat__dict_get(hay->u.d, x->u.s, x->n) != NULL;
        return 0;
    default:
        return srv_chat__fail(R, LLM_EINVAL, line, "argument of type '%s' is not iterable",
                              srv_chat__type_name(hay));
    }
}

int srv_chat__compare(rctx_t *R, int op, const val_t *a, const val_t *b, int line, int *res) {
    if (op == SRV_CHAT__OP_EQ || op == SRV_CHAT__OP_NE) {
        *res = srv_chat__eq(a, b) == (op == SRV_CHAT__OP_EQ);
        return 0;
    }
    if (op == SRV_CHAT__OP_IN || op == SRV_CHAT__OP_NOTIN) {
        int rc = contains(R, b, a, line, res);
        if (op == SRV_CHAT__OP_NOTIN) *res = !*res;
        return rc;
    }
    if (a->t == SRV_CHAT__V_UNDEF) return srv_chat__undef_fail(R, a, line);
    if (b->t == SRV_CHAT__V_UNDEF) return srv_chat__undef_fail(R, b, line);
    int c;
    if (is_num(a) && is_num(b)) c = a->u.i < b->u.i ? -1 : a->u.i > b->u.i;
    else if (a->t == SRV_CHAT__V_STR && b->t == SRV_CHAT__V_STR) c = str_cmp(a, b);
    else {
        static const char *const sym[] = {"<", "<=", ">", ">="};
        return srv_chat__fail(
            R, LLM_EINVAL, line, "'%s' not supported between instances of '%s' and '%s'",
            sym[op - SRV_CHAT__OP_LT], srv_chat__type_name(a), srv_chat__type_name(b));
    }
    switch (op) {
    case SRV_CHAT__OP_LT: *res = c < 0; break;
    case SRV_CHAT__OP_LE: *res = c <= 0; break;
    case SRV_CHAT__OP_GT: *res = c > 0; break;
    default: *res = c >= 0; break;
    }
    return 0;
}
