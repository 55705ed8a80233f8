/* srv_chat_parse.c: tokens -> syntax tree.
 *
 * A recursive-descent parser with Jinja's grammar and precedence (from loosest to tightest):
 *   x if c else y  <  or  <  and  <  not  <  comparisons, in, not in  <  + -  <  ~  <
 *   * / // %  <  **  <  unary - +  <  filters (|f), tests (is t)  <  . [] ()
 * so `'a' + s | trim` trims s only, as in Jinja. Statements: if/elif/else, for (targets, `if`
 * filter, else), set (name, ns.attr, tuples, block form), break/continue (loopcontrols, which
 * transformers enables), generation (transformers' AssistantTracker tag, rendered as is).
 */
#include "srv_chat_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- types ---- */

typedef srv_chat__tok_t tok_t;
typedef srv_chat__node_t node_t;

enum { MAX_DEPTH = 100 }; /* nesting of expressions and blocks; bounds C stack use */

typedef struct parser_s {
    const tok_t *t;
    size_t n, i;
    srv_chat__arena_t *a;
    llm_error_t *err;
    int depth;
    int loops; /* enclosing for loops, for break/continue */
} parser_t;

/* Growable node list in the parse arena (old arrays are left behind: at most 2x waste). */
typedef struct vec_s {
    node_t **v;
    const char **names;
    int n, cap;
} vec_t;

/* ---- helpers ---- */

__attribute__((format(printf, 4, 5)))
static int perr(parser_t *P, int code, int line, const char *fmt, ...) {
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return llm_err_set(P->err, code, "chat template: %s at line %d", msg, line);
}

static int oom(parser_t *P) {
    return llm_err_set(P->err, LLM_ENOMEM, "chat template: out of memory");
}

static const tok_t *cur(const parser_t *P) { return &P->t[P->i]; }
static const tok_t *peek(const parser_t *P, size_t k) {
    return P->i + k < P->n ? &P->t[P->i + k] : &P->t[P->n - 1];
}
static void adv(parser_t *P) {
    if (P->i + 1 < P->n) P->i++;
}

static int tok_eq(const tok_t *t, int type, const char *s) {
    size_t k = strlen(s);
    return t->type == type && t->n == k && memcmp(t->s, s, k) == 0;
}
static int is_op(const parser_t *P, const char *s) { return tok_eq(cur(P), SRV_CHAT__T_OP, s); }
static int is_name(const parser_t *P, const char *s) { return tok_eq(cur(P), SRV_CHAT__T_NAME, s); }

/* Short description of the current token for messages. */
static const char *describe(const tok_t *t, char *buf, size_t cap) {
    switch (t->type) {
    case SRV_CHAT__T_EOF: return "end of template";
    case SRV_CHAT__T_VAR_END: return "'}}'";
    case SRV_CHAT__T_BLOCK_END: return "'%}'";
    case SRV_CHAT__T_STRING: return "string";
    case SRV_CHAT__T_TEXT: return "template text";
    default:
        snprintf(buf, cap, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s ? t->s : "");
        return buf;
    }
}

static int unexpected(parser_t *P, const char *expected) {
    char b[64];
    return perr(P, LLM_EFORMAT, cur(P)->line, "unexpected %s, expected %s",
                describe(cur(P), b, sizeof b), expected);
}

static int expect_op(parser_t *P, const char *op) {
    if (!is_op(P, op)) {
        char e[16];
        snprintf(e, sizeof e, "'%s'", op);
        return unexpected(P, e);
    }
    adv(P);
    return 0;
}

static int expect_type(parser_t *P, int type, const char *what);

/* End of a tag that opens a body: Jinja allows a Python-style ':' before '%}'. */
static int body_start(parser_t *P) {
    if (cur(P)->type == SRV_CHAT__T_OP && cur(P)->n == 1 && cur(P)->s[0] == ':') P->i++;
    return expect_type(P, SRV_CHAT__T_BLOCK_END, "'%}'");
}

static int expect_type(parser_t *P, int type, const char *what) {
    if (cur(P)->type != type) return unexpected(P, what);
    adv(P);
    return 0;
}

static node_t *mk(parser_t *P, int kind, int line) {
    node_t *n = srv_chat__alloc(P->a, sizeof *n);
    if (n) {
        n->kind = kind;
        n->line = line;
    }
    return n;
}

static char *dup_name(parser_t *P, const char *s, size_t n) {
    char *d = srv_chat__alloc(P->a, n + 1);
    if (d) memcpy(d, s, n);
    return d;
}

static int vpush(parser_t *P, vec_t *v, node_t *x, const char *name) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 4;
        node_t **nv = srv_chat__alloc(P->a, (size_t)cap * sizeof *nv);
        const char **nn = srv_chat__alloc(P->a, (size_t)cap * sizeof *nn);
        if (!nv || !nn) return oom(P);
        if (v->n) {
            memcpy(nv, v->v, (size_t)v->n * sizeof *nv);
            memcpy(nn, v->names, (size_t)v->n * sizeof *nn);
        }
        v->v = nv;
        v->names = nn;
        v->cap = cap;
    }
    v->names[v->n] = name;
    v->v[v->n++] = x;
    return 0;
}

/* Hands v's nodes (and names, if wanted) to a node. */
static void vfinish(const vec_t *v, node_t ***out, const char ***names, int *n) {
    *out = v->v;
    if (names) *names = v->names;
    *n = v->n;
}

/* ---- expressions ---- */

static int parse_expression(parser_t *P, int with_condexpr, node_t **out);
static int parse_or(parser_t *P, node_t **out);
static int parse_unary(parser_t *P, int with_filter, node_t **out);

static int enter(parser_t *P) {
    if (++P->depth > MAX_DEPTH)
        return perr(P, LLM_EUNSUPPORTED, cur(P)->line, "template nested too deeply");
    return 0;
}

static int at_tuple_end(const parser_t *P, const char *extra) {
    int t = cur(P)->type;
    if (t == SRV_CHAT__T_VAR_END || t == SRV_CHAT__T_BLOCK_END || t == SRV_CHAT__T_EOF) return 1;
    if (is_op(P, ")")) return 1;
    return extra && is_name(P, extra);
}

/* expr (',' expr)* [','] -> the expression, or E_TUPLE when a comma was seen. */
static int parse_tuple(parser_t *P, int with_condexpr, int explicit_parens, const char *extra_end,
                       node_t **out) {
    int line = cur(P)->line, is_tuple = 0, rc = 0;
    vec_t items = {0};
    for (;;) {
        if (items.n > 0) {
            if (!is_op(P, ",")) break;
            adv(P);
            is_tuple = 1;
        }
        if (at_tuple_end(P, extra_end)) break;
        node_t *e;
        rc = with_condexpr ? parse_expression(P, 1, &e) : parse_or(P, &e);
        if (rc || (rc = vpush(P, &items, e, NULL))) return rc;
    }
    if (!is_tuple && items.n == 1) {
        *out = items.v[0];
        return 0;
    }
    if (items.n == 0 && !explicit_parens) return unexpected(P, "an expression");
    node_t *t = mk(P, SRV_CHAT__E_TUPLE, line);
    if (!t) return oom(P);
    *out = t;
    vfinish(&items, &t->kids, NULL, &t->nkids);
    return 0;
}

/* '(' [arg {',' arg}] [','] ')' with arg = expr | name '=' expr; fills kids and kw of n. */
static int parse_call_args(parser_t *P, node_t *n) {
    vec_t pos = {0}, kw = {0};
    int rc = expect_op(P, "(");
    while (rc == 0 && !is_op(P, ")")) {
        if (pos.n + kw.n > 0) {
            rc = expect_op(P, ",");
            if (rc || is_op(P, ")")) break;
        }
        if (is_op(P, "*") || is_op(P, "**")) {
            rc = perr(P, LLM_EUNSUPPORTED, cur(P)->line, "unsupported *args/**kwargs in call");
            break;
        }
        node_t *e;
        if (cur(P)->type == SRV_CHAT__T_NAME && tok_eq(peek(P, 1), SRV_CHAT__T_OP, "=")) {
            char *name = dup_name(P, cur(P)->s, cur(P)->n);
            if (!name) {
                rc = oom(P);
                break;
            }
            adv(P);
            adv(P);
            rc = parse_expression(P, 1, &e);
            if (rc == 0) rc = vpush(P, &kw, e, name);
        } else {
            if (kw.n > 0) {
                rc = perr(P, LLM_EFORMAT, cur(P)->line,
                          "positional argument after keyword argument");
                break;
            }
            rc = parse_expression(P, 1, &e);
            if (rc == 0) rc = vpush(P, &pos, e, NULL);
        }
    }
    if (rc || (rc = expect_op(P, ")"))) return rc;
    vfinish(&pos, &n->kids, NULL, &n->nkids);
    vfinish(&kw, &n->kwv, &n->kwn, &n->nkw);
    return 0;
}

/* Dotted name after '|' or 'is' (e.g. `foo.bar`), copied NUL-terminated. */
static int parse_dotted(parser_t *P, const char **name, size_t *len) {
    if (cur(P)->type != SRV_CHAT__T_NAME) return unexpected(P, "a name");
    const char *b = cur(P)->s;
    size_t e = cur(P)->n;
    adv(P);
    while (is_op(P, ".") && peek(P, 1)->type == SRV_CHAT__T_NAME) {
        adv(P);
        e = (size_t)(cur(P)->s + cur(P)->n - b);
        adv(P);
    }
    *name = dup_name(P, b, e);
    *len = e;
    return *name ? 0 : oom(P);
}

static int parse_filter(parser_t *P, node_t *arg, node_t **out) {
    int line = cur(P)->line, rc;
    adv(P); /* '|' */
    node_t *f = mk(P, SRV_CHAT__E_FILTER, line);
    if (!f) return oom(P);
    if ((rc = parse_dotted(P, &f->s, &f->n))) return rc;
    f->op = srv_chat__filter_id(f->s, f->n); /* 0: see check_stmts() in srv_chat.c */
    f->a = arg;
    if (is_op(P, "(") && (rc = parse_call_args(P, f))) return rc;
    *out = f;
    return 0;
}

static int parse_primary(parser_t *P, node_t **out);
static int parse_postfix(parser_t *P, node_t *n, node_t **out);

static int parse_test(parser_t *P, node_t *arg, node_t **out) {
    int line = cur(P)->line, rc, negated = 0;
    adv(P); /* 'is' */
    if (is_name(P, "not")) {
        adv(P);
        negated = 1;
    }
    node_t *t = mk(P, SRV_CHAT__E_TEST, line);
    if (!t) return oom(P);
    if ((rc = parse_dotted(P, &t->s, &t->n))) return rc;
    t->op = srv_chat__test_id(t->s, t->n);
    t->a = arg;
    int ct = cur(P)->type;
    if (is_op(P, "(")) {
        if ((rc = parse_call_args(P, t))) return rc;
    } else if ((ct == SRV_CHAT__T_NAME || ct == SRV_CHAT__T_STRING || ct == SRV_CHAT__T_INT ||
                ct == SRV_CHAT__T_FLOAT || is_op(P, "[") || is_op(P, "{")) &&
               !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and")) {
        if (is_name(P, "is")) return perr(P, LLM_EFORMAT, line, "cannot chain tests with 'is'");
        node_t *x;
        if ((rc = parse_primary(P, &x)) || (rc = parse_postfix(P, x, &x))) return rc;
        t->kids = srv_chat__alloc(P->a, sizeof *t->kids);
        if (!t->kids) return oom(P);
        t->kids[0] = x;
        t->nkids = 1;
    }
    if (negated) {
        node_t *n = mk(P, SRV_CHAT__E_NOT, line);
        if (!n) return oom(P);
        n->a = t;
        t = n;
    }
    *out = t;
    return 0;
}

/* After '[': does a ',' come before the matching ']' (at bracket depth 0)? */
static int tuple_subscript_ahead(const parser_t *P) {
    int depth = 0;
    for (size_t j = P->i; j < P->n; j++) {
        const tok_t *t = &P->t[j];
        if (t->type != SRV_CHAT__T_OP) {
            if (t->type == SRV_CHAT__T_VAR_END || t->type == SRV_CHAT__T_BLOCK_END ||
                t->type == SRV_CHAT__T_EOF)
                return 0;
            continue;
        }
        char c = t->n == 1 ? t->s[0] : 0;
        if (c == '(' || c == '[' || c == '{') depth++;
        else if (c == ')' || c == ']' || c == '}') {
            if (depth-- == 0) return 0;
        } else if (depth == 0 && (c == ',' || c == ':')) {
            return c == ',';
        }
    }
    return 0;
}

/* '[' already current: index or slice. */
static int parse_subscript(parser_t *P, node_t *obj, node_t **out) {
    int line = cur(P)->line, rc;
    adv(P);
    node_t *parts[3] = {NULL, NULL, NULL};
    int colons = 0;
    if (is_op(P, "]") || (!is_op(P, ":") && tuple_subscript_ahead(P))) {
        /* x[] and x[a, b]: Jinja looks the tuple up as a key, which finds nothing */
        node_t *n = mk(P, SRV_CHAT__E_ITEM, line);
        if (!n) return oom(P);
        n->a = obj;
        if (is_op(P, "]")) n->b = mk(P, SRV_CHAT__E_TUPLE, line);
        else if ((rc = parse_tuple(P, 1, 1, NULL, &n->b))) return rc;
        if (!n->b) return oom(P);
        if (n->b->kind != SRV_CHAT__E_TUPLE) {
            node_t *t = mk(P, SRV_CHAT__E_TUPLE, line);
            if (!t || !(t->kids = srv_chat__alloc(P->a, sizeof *t->kids))) return oom(P);
            t->kids[0] = n->b;
            t->nkids = 1;
            n->b = t;
        }
        if ((rc = expect_op(P, "]"))) return rc;
        *out = n;
        return 0;
    }
    if (!is_op(P, ":") && (rc = parse_expression(P, 1, &parts[0]))) return rc;
    while (colons < 2 && is_op(P, ":")) {
        adv(P);
        colons++;
        if (!is_op(P, "]") && !is_op(P, ":") && !is_op(P, ",") &&
            (rc = parse_expression(P, 1, &parts[colons])))
            return rc;
    }
    if ((rc = expect_op(P, "]"))) return rc;
    node_t *n = mk(P, colons ? SRV_CHAT__E_SLICE : SRV_CHAT__E_ITEM, line);
    if (!n) return oom(P);
    n->a = obj;
    n->b = parts[0];
    n->c = parts[1];
    n->d = parts[2];
    *out = n;
    return 0;
}

static int parse_postfix(parser_t *P, node_t *n, node_t **out) {
    int rc;
    for (;;) {
        int line = cur(P)->line;
        if (is_op(P, ".")) {
            adv(P);
            if (cur(P)->type == SRV_CHAT__T_NAME) {
                node_t *m = mk(P, SRV_CHAT__E_ATTR, line);
                if (!m) return oom(P);
                m->a = n;
                m->s = dup_name(P, cur(P)->s, cur(P)->n);
                if (!m->s) return oom(P);
                m->n = cur(P)->n;
                adv(P);
                n = m;
            } else if (cur(P)->type == SRV_CHAT__T_INT) {
                node_t *m = mk(P, SRV_CHAT__E_ITEM, line), *k = mk(P, SRV_CHAT__E_INT, line);
                if (!m || !k) return oom(P);
                k->i = cur(P)->i;
                m->a = n;
                m->b = k;
                adv(P);
                n = m;
            } else {
                return unexpected(P, "a name or number after '.'");
            }
        } else if (is_op(P, "[")) {
            if ((rc = parse_subscript(P, n, &n))) return rc;
        } else if (is_op(P, "(")) {
            node_t *m = mk(P, SRV_CHAT__E_CALL, line);
            if (!m) return oom(P);
            m->a = n;
            if ((rc = parse_call_args(P, m))) return rc;
            n = m;
        } else {
            break;
        }
    }
    *out = n;
    return 0;
}

static int parse_filter_expr(parser_t *P, node_t *n, node_t **out) {
    int rc;
    for (;;) {
        if (is_op(P, "|")) {
            if ((rc = parse_filter(P, n, &n))) return rc;
        } else if (is_name(P, "is")) {
            if ((rc = parse_test(P, n, &n))) return rc;
        } else if (is_op(P, "(")) {
            node_t *m = mk(P, SRV_CHAT__E_CALL, cur(P)->line);
            if (!m) return oom(P);
            m->a = n;
            if ((rc = parse_call_args(P, m))) return rc;
            n = m;
        } else {
            break;
        }
    }
    *out = n;
    return 0;
}

/* '[' a, b, ... ']' or '{' k: v, ... '}' */
static int parse_list_or_dict(parser_t *P, int dict, node_t **out) {
    int line = cur(P)->line, rc = 0;
    const char *close = dict ? "}" : "]";
    vec_t keys = {0}, vals = {0};
    adv(P);
    while (!is_op(P, close)) {
        if (keys.n > 0) {
            if ((rc = expect_op(P, ","))) break;
            if (is_op(P, close)) break;
        }
        node_t *k, *v = NULL;
        if ((rc = parse_expression(P, 1, &k))) break;
        if (dict && ((rc = expect_op(P, ":")) || (rc = parse_expression(P, 1, &v)))) break;
        if ((rc = vpush(P, &keys, k, NULL)) || (dict && (rc = vpush(P, &vals, v, NULL)))) break;
    }
    if (rc || (rc = expect_op(P, close))) return rc;
    node_t *n = mk(P, dict ? SRV_CHAT__E_DICT : SRV_CHAT__E_LIST, line);
    if (!n) return oom(P);
    int nv;
    vfinish(&keys, &n->kids, NULL, &n->nkids);
    vfinish(&vals, &n->vals, NULL, &nv);
    *out = n;
    return 0;
}

static int parse_primary(parser_t *P, node_t **out) {
    const tok_t *t = cur(P);
    node_t *n;
    int rc;
    switch (t->type) {
    case SRV_CHAT__T_NAME:
        if (tok_eq(t, t->type, "true") || tok_eq(t, t->type, "True") ||
            tok_eq(t, t->type, "false") || tok_eq(t, t->type, "False")) {
            n = mk(P, SRV_CHAT__E_BOOL, t->line);
            if (n) n->i = t->s[0] == 't' || t->s[0] == 'T';
        } else if (tok_eq(t, t->type, "none") || tok_eq(t, t->type, "None")) {
            n = mk(P, SRV_CHAT__E_NONE, t->line);
        } else {
            n = mk(P, SRV_CHAT__E_NAME, t->line);
            if (n && !(n->s = dup_name(P, t->s, t->n))) n = NULL;
            if (n) n->n = t->n;
        }
        if (!n) return oom(P);
        adv(P);
        break;
    case SRV_CHAT__T_STRING: {
        /* adjacent string literals concatenate */
        size_t total = 0, k = 0;
        for (size_t j = P->i; j < P->n && P->t[j].type == SRV_CHAT__T_STRING; j++)
            total += P->t[j].n;
        char *s = srv_chat__alloc(P->a, total + 1);
        n = mk(P, SRV_CHAT__E_STR, t->line);
        if (!s || !n) return oom(P);
        while (cur(P)->type == SRV_CHAT__T_STRING) {
            memcpy(s + k, cur(P)->s, cur(P)->n);
            k += cur(P)->n;
            adv(P);
        }
        n->s = s;
        n->n = total;
        break;
    }
    case SRV_CHAT__T_INT:
    case SRV_CHAT__T_FLOAT:
        n = mk(P, t->type == SRV_CHAT__T_INT ? SRV_CHAT__E_INT : SRV_CHAT__E_FLOAT, t->line);
        if (!n) return oom(P);
        n->i = t->i;
        n->s = t->s;
        n->n = t->n;
        adv(P);
        break;
    case SRV_CHAT__T_OP:
        if (is_op(P, "(")) {
            adv(P);
            if ((rc = parse_tuple(P, 1, 1, NULL, &n)) || (rc = expect_op(P, ")"))) return rc;
            break;
        }
        if (is_op(P, "[") || is_op(P, "{")) return parse_list_or_dict(P, is_op(P, "{"), out);
        /* fall through */
    default:
        return unexpected(P, "an expression");
    }
    *out = n;
    return 0;
}

static int parse_unary(parser_t *P, int with_filter, node_t **out) {
    int rc = enter(P);
    node_t *n;
    if (rc) return rc;
    if (is_op(P, "-") || is_op(P, "+")) {
        node_t *u = mk(P, is_op(P, "-") ? SRV_CHAT__E_NEG : SRV_CHAT__E_POS, cur(P)->line);
        if (!u) return oom(P);
        adv(P);
        if ((rc = parse_unary(P, 0, &u->a))) return rc;
        n = u;
    } else if ((rc = parse_primary(P, &n))) {
        return rc;
    }
    if ((rc = parse_postfix(P, n, &n))) return rc;
    if (with_filter && (rc = parse_filter_expr(P, n, &n))) return rc;
    P->depth--;
    *out = n;
    return 0;
}

static int bin(parser_t *P, int kind, int op, int line, node_t *l, node_t *r, node_t **out) {
    node_t *n = mk(P, kind, line);
    if (!n) return oom(P);
    n->op = op;
    n->a = l;
    n->b = r;
    *out = n;
    return 0;
}

static int parse_pow(parser_t *P, node_t **out) {
    node_t *l, *r;
    int rc = parse_unary(P, 1, &l);
    while (rc == 0 && is_op(P, "**")) {
        int line = cur(P)->line;
        adv(P);
        if ((rc = parse_unary(P, 1, &r)) == 0)
            rc = bin(P, SRV_CHAT__E_BIN, SRV_CHAT__OP_POW, line, l, r, &l);
    }
    *out = l;
    return rc;
}

static int parse_math2(parser_t *P, node_t **out) {
    node_t *l, *r;
    int rc = parse_pow(P, &l);
    for (;;) {
        int op = is_op(P, "*") ? SRV_CHAT__OP_MUL : is_op(P, "/") ? SRV_CHAT__OP_DIV
               : is_op(P, "//") ? SRV_CHAT__OP_FLOORDIV : is_op(P, "%") ? SRV_CHAT__OP_MOD : 0;
        if (rc || !op) break;
        int line = cur(P)->line;
        adv(P);
        if ((rc = parse_pow(P, &r)) == 0) rc = bin(P, SRV_CHAT__E_BIN, op, line, l, r, &l);
    }
    *out = l;
    return rc;
}

static int parse_concat(parser_t *P, node_t **out) {
    node_t *first;
    int rc = parse_math2(P, &first);
    if (rc || !is_op(P, "~")) {
        *out = first;
        return rc;
    }
    vec_t args = {0};
    int line = cur(P)->line;
    rc = vpush(P, &args, first, NULL);
    while (rc == 0 && is_op(P, "~")) {
        adv(P);
        node_t *x;
        if ((rc = parse_math2(P, &x)) == 0) rc = vpush(P, &args, x, NULL);
    }
    if (rc) return rc;
    node_t *n = mk(P, SRV_CHAT__E_CONCAT, line);
    if (!n) return oom(P);
    *out = n;
    vfinish(&args, &n->kids, NULL, &n->nkids);
    return 0;
}

static int parse_math1(parser_t *P, node_t **out) {
    node_t *l, *r;
    int rc = parse_concat(P, &l);
    for (;;) {
        int op = is_op(P, "+") ? SRV_CHAT__OP_ADD : is_op(P, "-") ? SRV_CHAT__OP_SUB : 0;
        if (rc || !op) break;
        int line = cur(P)->line;
        adv(P);
        if ((rc = parse_concat(P, &r)) == 0) rc = bin(P, SRV_CHAT__E_BIN, op, line, l, r, &l);
    }
    *out = l;
    return rc;
}

static int parse_compare(parser_t *P, node_t **out) {
    static const struct { const char *s; int op; } cmp[] = {
        {"==", SRV_CHAT__OP_EQ}, {"!=", SRV_CHAT__OP_NE}, {"<", SRV_CHAT__OP_LT},
        {"<=", SRV_CHAT__OP_LE}, {">", SRV_CHAT__OP_GT}, {">=", SRV_CHAT__OP_GE},
    };
    node_t *first;
    int rc = parse_math1(P, &first), line = cur(P)->line;
    if (rc) return rc;
    vec_t opnds = {0};
    int ops[64], nops = 0;
    for (;;) {
        int op = 0;
        for (size_t k = 0; k < sizeof cmp / sizeof cmp[0]; k++)
            if (is_op(P, cmp[k].s)) op = cmp[k].op;
        if (op) {
            adv(P);
        } else if (is_name(P, "in")) {
            adv(P);
            op = SRV_CHAT__OP_IN;
        } else if (is_name(P, "not") && tok_eq(peek(P, 1), SRV_CHAT__T_NAME, "in")) {
            adv(P);
            adv(P);
            op = SRV_CHAT__OP_NOTIN;
        } else {
            break;
        }
        if (nops == 64) return perr(P, LLM_EUNSUPPORTED, line, "comparison chain too long");
        node_t *x;
        if ((rc = parse_math1(P, &x)) || (rc = vpush(P, &opnds, x, NULL))) return rc;
        ops[nops++] = op;
    }
    if (nops == 0) {
        *out = first;
        return 0;
    }
    node_t *n = mk(P, SRV_CHAT__E_CMP, line);
    int *o = srv_chat__alloc(P->a, (size_t)nops * sizeof *o);
    if (!n || !o) return oom(P);
    memcpy(o, ops, (size_t)nops * sizeof *o);
    n->a = first;
    n->ops = o;
    *out = n;
    vfinish(&opnds, &n->kids, NULL, &n->nkids);
    return 0;
}

static int parse_not(parser_t *P, node_t **out) {
    if (is_name(P, "not")) {
        int rc = enter(P);
        if (rc) return rc;
        node_t *n = mk(P, SRV_CHAT__E_NOT, cur(P)->line);
        if (!n) return oom(P);
        adv(P);
        if ((rc = parse_not(P, &n->a))) return rc;
        P->depth--;
        *out = n;
        return 0;
    }
    return parse_compare(P, out);
}

static int parse_and(parser_t *P, node_t **out) {
    node_t *l, *r;
    int rc = parse_not(P, &l);
    while (rc == 0 && is_name(P, "and")) {
        int line = cur(P)->line;
        adv(P);
        if ((rc = parse_not(P, &r)) == 0) rc = bin(P, SRV_CHAT__E_AND, 0, line, l, r, &l);
    }
    *out = l;
    return rc;
}

static int parse_or(parser_t *P, node_t **out) {
    node_t *l, *r;
    int rc = parse_and(P, &l);
    while (rc == 0 && is_name(P, "or")) {
        int line = cur(P)->line;
        adv(P);
        if ((rc = parse_and(P, &r)) == 0) rc = bin(P, SRV_CHAT__E_OR, 0, line, l, r, &l);
    }
    *out = l;
    return rc;
}

static int parse_expression(parser_t *P, int with_condexpr, node_t **out) {
    node_t *e;
    int rc = enter(P);
    if (rc || (rc = parse_or(P, &e))) return rc;
    while (with_condexpr && is_name(P, "if")) {
        node_t *c = mk(P, SRV_CHAT__E_COND, cur(P)->line);
        if (!c) return oom(P);
        adv(P);
        c->a = e;
        if ((rc = parse_or(P, &c->b))) return rc;
        if (is_name(P, "else")) {
            adv(P);
            if ((rc = parse_expression(P, 1, &c->c))) return rc;
        }
        e = c;
    }
    P->depth--;
    *out = e;
    return 0;
}

/* ---- statements ---- */

static int parse_body(parser_t *P, const char *const *ends, const char *opener, int open_line,
                      node_t ***body, int *nbody);

static int is_end_name(const parser_t *P, const char *const *ends) {
    for (int k = 0; ends && ends[k]; k++)
        if (tok_eq(peek(P, 1), SRV_CHAT__T_NAME, ends[k])) return 1;
    return 0;
}

/* Consumes `{% name %}` where name is the current block's end tag. */
static int close_tag(parser_t *P, const char *name) {
    adv(P); /* {% */
    if (!is_name(P, name)) return unexpected(P, name);
    adv(P);
    return expect_type(P, SRV_CHAT__T_BLOCK_END, "'%}'");
}

/* After `{% if` / `{% elif`: test %} body (elif ... | else body | ) endif */
static int parse_if(parser_t *P, int line, node_t **out) {
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    static const char *const end_only[] = {"endif", NULL};
    node_t *n = mk(P, SRV_CHAT__N_IF, line);
    int rc;
    if (!n) return oom(P);
    if ((rc = enter(P))) return rc;
    if ((rc = parse_tuple(P, 0, 0, NULL, &n->a)) ||
        (rc = body_start(P)) ||
        (rc = parse_body(P, ends, "if", line, &n->body, &n->nbody)))
        return rc;
    const tok_t *name = peek(P, 1);
    if (tok_eq(name, SRV_CHAT__T_NAME, "elif")) {
        int l2 = name->line;
        adv(P);
        adv(P);
        n->orelse = srv_chat__alloc(P->a, sizeof *n->orelse);
        if (!n->orelse) return oom(P);
        n->norelse = 1;
        rc = parse_if(P, l2, &n->orelse[0]);
    } else if (tok_eq(name, SRV_CHAT__T_NAME, "else")) {
        adv(P);
        adv(P);
        if ((rc = body_start(P)) ||
            (rc = parse_body(P, end_only, "if", line, &n->orelse, &n->norelse)))
            return rc;
        rc = close_tag(P, "endif");
    } else {
        rc = close_tag(P, "endif");
    }
    P->depth--;
    *out = n;
    return rc;
}

/* name {',' name} (optionally in parentheses), into kids of n. */
static int parse_targets(parser_t *P, node_t *n) {
    vec_t v = {0};
    int paren = is_op(P, "("), rc = 0;
    if (paren) adv(P);
    for (;;) {
        if (cur(P)->type != SRV_CHAT__T_NAME) {
            rc = unexpected(P, "a variable name");
            break;
        }
        node_t *t = mk(P, SRV_CHAT__E_NAME, cur(P)->line);
        if (!t || !(t->s = dup_name(P, cur(P)->s, cur(P)->n))) {
            rc = oom(P);
            break;
        }
        t->n = cur(P)->n;
        adv(P);
        if ((rc = vpush(P, &v, t, NULL))) break;
        if (!is_op(P, ",")) break;
        adv(P);
    }
    if (rc || (paren && (rc = expect_op(P, ")")))) return rc;
    vfinish(&v, &n->kids, NULL, &n->nkids);
    return 0;
}

static int parse_for(parser_t *P, int line, node_t **out) {
    static const char *const ends[] = {"endfor", "else", NULL};
    static const char *const end_only[] = {"endfor", NULL};
    node_t *n = mk(P, SRV_CHAT__N_FOR, line);
    int rc;
    if (!n) return oom(P);
    if ((rc = parse_targets(P, n))) return rc;
    if (!is_name(P, "in")) return unexpected(P, "'in'");
    adv(P);
    if ((rc = parse_tuple(P, 0, 0, "recursive", &n->a))) return rc;
    if (is_name(P, "if")) {
        adv(P);
        if ((rc = parse_expression(P, 1, &n->b))) return rc;
    }
    if (is_name(P, "recursive"))
        return perr(P, LLM_EUNSUPPORTED, line, "unsupported recursive for loop");
    if ((rc = body_start(P))) return rc;
    P->loops++;
    rc = parse_body(P, ends, "for", line, &n->body, &n->nbody);
    P->loops--;
    if (rc) return rc;
    if (tok_eq(peek(P, 1), SRV_CHAT__T_NAME, "else")) {
        adv(P);
        adv(P);
        if ((rc = body_start(P)) ||
            (rc = parse_body(P, end_only, "for", line, &n->orelse, &n->norelse)))
            return rc;
    }
    *out = n;
    return close_tag(P, "endfor");
}

static int parse_set(parser_t *P, int line, node_t **out) {
    static const char *const ends[] = {"endset", NULL};
    node_t *n = mk(P, SRV_CHAT__N_SET, line), *target;
    int rc;
    if (!n) return oom(P);
    if (cur(P)->type == SRV_CHAT__T_NAME && tok_eq(peek(P, 1), SRV_CHAT__T_OP, ".")) {
        /* namespace attribute: ns.attr */
        target = mk(P, SRV_CHAT__E_ATTR, line);
        node_t *ns = mk(P, SRV_CHAT__E_NAME, line);
        if (!target || !ns || !(ns->s = dup_name(P, cur(P)->s, cur(P)->n))) return oom(P);
        ns->n = cur(P)->n;
        adv(P);
        adv(P);
        if (cur(P)->type != SRV_CHAT__T_NAME) return unexpected(P, "an attribute name");
        if (!(target->s = dup_name(P, cur(P)->s, cur(P)->n))) return oom(P);
        target->n = cur(P)->n;
        target->a = ns;
        adv(P);
    } else {
        node_t tmp = {0};
        if ((rc = parse_targets(P, &tmp))) return rc;
        if (tmp.nkids == 1) {
            target = tmp.kids[0];
        } else {
            target = mk(P, SRV_CHAT__E_TUPLE, line);
            if (!target) return oom(P);
            target->kids = tmp.kids;
            target->nkids = tmp.nkids;
        }
    }
    n->a = target;
    if (is_op(P, "=")) {
        adv(P);
        if ((rc = parse_tuple(P, 1, 0, NULL, &n->b))) return rc;
        *out = n;
        return expect_type(P, SRV_CHAT__T_BLOCK_END, "'%}'");
    }
    if (is_op(P, "|")) return perr(P, LLM_EUNSUPPORTED, line, "unsupported filtered block set");
    if (target->kind == SRV_CHAT__E_TUPLE) return unexpected(P, "'='");
    if ((rc = body_start(P))) return rc;
    n->kind = SRV_CHAT__N_SETBLOCK;
    if ((rc = parse_body(P, ends, "set", line, &n->body, &n->nbody))) return rc;
    *out = n;
    return close_tag(P, "endset");
}

static int parse_statement(parser_t *P, node_t **out) {
    static const char *const unsupported[] = {
        "macro", "endmacro", "call", "endcall", "filter", "endfilter", "block", "endblock",
        "extends", "include", "import", "from", "with", "endwith", "autoescape",
        "endautoescape", "trans", "endtrans", "pluralize", NULL,
    };
    static const char *const stray[] = {
        "elif", "else", "endif", "endfor", "endset", "endgeneration", "endraw", NULL,
    };
    static const char *const gen_end[] = {"endgeneration", NULL};
    int line = cur(P)->line, rc;
    adv(P); /* {% */
    const tok_t *t = cur(P);
    char b[64];
    if (t->type != SRV_CHAT__T_NAME) return unexpected(P, "a tag name");
    adv(P);
    if (tok_eq(t, t->type, "if")) return parse_if(P, line, out);
    if (tok_eq(t, t->type, "for")) return parse_for(P, line, out);
    if (tok_eq(t, t->type, "set")) return parse_set(P, line, out);
    if (tok_eq(t, t->type, "break") || tok_eq(t, t->type, "continue")) {
        if (P->loops == 0)
            return perr(P, LLM_EFORMAT, line, "'%s' outside of a for loop",
                        t->s[0] == 'b' ? "break" : "continue");
        node_t *n = mk(P, t->s[0] == 'b' ? SRV_CHAT__N_BREAK : SRV_CHAT__N_CONTINUE, line);
        if (!n) return oom(P);
        *out = n;
        return expect_type(P, SRV_CHAT__T_BLOCK_END, "'%}'");
    }
    if (tok_eq(t, t->type, "generation")) {
        node_t *n = mk(P, SRV_CHAT__N_SCOPE, line);
        if (!n) return oom(P);
        if ((rc = body_start(P)) ||
            (rc = parse_body(P, gen_end, "generation", line, &n->body, &n->nbody)))
            return rc;
        *out = n;
        return close_tag(P, "endgeneration");
    }
    for (int k = 0; unsupported[k]; k++)
        if (tok_eq(t, t->type, unsupported[k]))
            return perr(P, LLM_EUNSUPPORTED, line, "unsupported tag '%s'", unsupported[k]);
    for (int k = 0; stray[k]; k++)
        if (tok_eq(t, t->type, stray[k]))
            return perr(P, LLM_EFORMAT, line, "unexpected tag '%s'", stray[k]);
    return perr(P, LLM_EFORMAT, line, "unknown tag %s", describe(t, b, sizeof b));
}

/* Statements until EOF (ends == NULL) or until `{% <one of ends>` (left unconsumed). */
static int parse_body(parser_t *P, const char *const *ends, const char *opener, int open_line,
                      node_t ***body, int *nbody) {
    vec_t v = {0};
    int rc = 0;
    for (;;) {
        const tok_t *t = cur(P);
        node_t *n = NULL;
        if (t->type == SRV_CHAT__T_EOF) {
            if (ends) {
                const char *closer = ends[0];
                for (int k = 0; ends[k]; k++)
                    if (strncmp(ends[k], "end", 3) == 0) closer = ends[k];
                rc = perr(P, LLM_EFORMAT, t->line,
                          "unexpected end of template, expected '%s' to close '%s' from line %d",
                          closer, opener, open_line);
            }
            break;
        }
        if (t->type == SRV_CHAT__T_TEXT) {
            n = mk(P, SRV_CHAT__N_TEXT, t->line);
            if (!n) rc = oom(P);
            else {
                n->s = t->s;
                n->n = t->n;
                adv(P);
            }
        } else if (t->type == SRV_CHAT__T_VAR_BEGIN) {
            n = mk(P, SRV_CHAT__N_OUTPUT, t->line);
            if (!n) rc = oom(P);
            else {
                adv(P);
                rc = parse_tuple(P, 1, 0, NULL, &n->a);
                if (rc == 0) rc = expect_type(P, SRV_CHAT__T_VAR_END, "'}}'");
            }
        } else if (t->type == SRV_CHAT__T_BLOCK_BEGIN) {
            if (is_end_name(P, ends)) break;
            rc = enter(P);
            if (rc == 0) rc = parse_statement(P, &n);
            P->depth--;
        } else {
            rc = unexpected(P, "template text or a tag");
        }
        if (rc || (rc = vpush(P, &v, n, NULL))) return rc;
    }
    if (rc) return rc;
    vfinish(&v, body, NULL, nbody);
    return 0;
}

/* ---- entry point ---- */

int srv_chat__parse(const srv_chat__tok_t *toks, size_t ntok, srv_chat__arena_t *a,
                    srv_chat__node_t ***body, int *nbody, llm_error_t *err) {
    parser_t P = {.t = toks, .n = ntok, .a = a, .err = err};
    return parse_body(&P, NULL, NULL, 0, body, nbody);
}
