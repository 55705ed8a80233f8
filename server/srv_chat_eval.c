/* srv_chat_eval.c: rendering a parsed chat template: scopes, expressions, statements.
 *
 * Scoping is Jinja's: `set` writes to the innermost scope; a for loop gives every iteration a
 * fresh scope whose parent is the scope around the loop, so assignments inside a loop are not
 * seen by later iterations or after the loop (which is why templates use namespace()); `if`
 * blocks have no scope of their own. Values and their semantics are in srv_chat_val.c.
 */
#include "srv_chat_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- types ---- */

typedef srv_chat__val_t val_t;
typedef srv_chat__node_t node_t;
typedef srv_chat__rctx_t rctx_t;
typedef srv_chat__list_t list_t;
typedef srv_chat__buf_t buf_t;

typedef struct var_s {
    const char *k;
    size_t kn;
    val_t v;
} var_t;

typedef struct frame_s {
    struct frame_s *parent;
    var_t *v;
    size_t n, cap;
} frame_t;

enum { FLOW_BREAK = 1, FLOW_CONTINUE = 2 };

/* ---- scopes ---- */

static const val_t *lookup(const frame_t *f, const char *k, size_t kn) {
    for (; f; f = f->parent)
        for (size_t i = 0; i < f->n; i++)
            if (f->v[i].kn == kn && memcmp(f->v[i].k, k, kn) == 0) return &f->v[i].v;
    return NULL;
}

static int frame_set(rctx_t *R, frame_t *f, const char *k, size_t kn, const val_t *v, int line) {
    for (size_t i = 0; i < f->n; i++) {
        if (f->v[i].kn == kn && memcmp(f->v[i].k, k, kn) == 0) {
            f->v[i].v = *v;
            return 0;
        }
    }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        var_t *nv = srv_chat__alloc(&R->ar, cap * sizeof *nv);
        if (!nv) return srv_chat__nomem(R, line);
        if (f->n) memcpy(nv, f->v, f->n * sizeof *nv);
        f->v = nv;
        f->cap = cap;
    }
    f->v[f->n++] = (var_t){.k = k, .kn = kn, .v = *v};
    return 0;
}

static int is_num(const val_t *v) { return v->t == SRV_CHAT__V_INT || v->t == SRV_CHAT__V_BOOL; }

/* ---- expressions ---- */

static int eval(rctx_t *R, frame_t *f, const node_t *e, val_t *out);

/* Evaluates call arguments into arena arrays. */
static int eval_args(rctx_t *R, frame_t *f, const node_t *e, srv_chat__args_t *a) {
    val_t *v = NULL, *kv = NULL;
    if (e->nkids) v = srv_chat__alloc(&R->ar, (size_t)e->nkids * sizeof *v);
    if (e->nkw) kv = srv_chat__alloc(&R->ar, (size_t)e->nkw * sizeof *kv);
    if ((e->nkids && !v) || (e->nkw && !kv)) return srv_chat__nomem(R, e->line);
    for (int i = 0; i < e->nkids; i++) {
        int rc = eval(R, f, e->kids[i], &v[i]);
        if (rc) return rc;
    }
    for (int i = 0; i < e->nkw; i++) {
        int rc = eval(R, f, e->kwv[i], &kv[i]);
        if (rc) return rc;
    }
    *a = (srv_chat__args_t){.v = v, .n = e->nkids, .kwn = e->kwn, .kwv = kv, .nkw = e->nkw};
    return 0;
}

static int eval_call(rctx_t *R, frame_t *f, const node_t *e, val_t *out) {
    val_t callee;
    srv_chat__args_t a;
    int rc = eval(R, f, e->a, &callee);
    if (rc) return rc;
    if ((rc = eval_args(R, f, e, &a))) return rc;
    switch (callee.t) {
    case SRV_CHAT__V_FUNC: return srv_chat__func(R, callee.aux, callee.name, &a, e->line, out);
    case SRV_CHAT__V_METHOD:
        return srv_chat__method(R, callee.u.self, callee.name, &a, e->line, out);
    case SRV_CHAT__V_UNDEF: return srv_chat__undef_fail(R, &callee, e->line);
    default:
        return srv_chat__fail(R, LLM_EINVAL, e->line, "'%s' object is not callable",
                              srv_chat__type_name(&callee));
    }
}

static int eval(rctx_t *R, frame_t *f, const node_t *e, val_t *out) {
    val_t a, b;
    int rc, res;
    switch (e->kind) {
    case SRV_CHAT__E_NONE: *out = (val_t){.t = SRV_CHAT__V_NONE}; return 0;
    case SRV_CHAT__E_BOOL: *out = (val_t){.t = SRV_CHAT__V_BOOL, .u.i = e->i}; return 0;
    case SRV_CHAT__E_INT: *out = (val_t){.t = SRV_CHAT__V_INT, .u.i = e->i}; return 0;
    case SRV_CHAT__E_STR: *out = (val_t){.t = SRV_CHAT__V_STR, .n = e->n, .u.s = e->s}; return 0;
    case SRV_CHAT__E_FLOAT:
        return srv_chat__fail(R, LLM_EINVAL, e->line, "unsupported float literal '%.*s'",
                              (int)e->n, e->s);
    case SRV_CHAT__E_NAME: {
        const val_t *v = lookup(f, e->s, e->n);
        *out = v ? *v : (val_t){.t = SRV_CHAT__V_UNDEF, .name = e->s, .n = e->n};
        return 0;
    }
    case SRV_CHAT__E_LIST:
    case SRV_CHAT__E_TUPLE: {
        list_t *l = srv_chat__mklist(R, (size_t)e->nkids, e->line);
        if (!l) return R->err->code;
        for (int i = 0; i < e->nkids; i++)
            if ((rc = eval(R, f, e->kids[i], &l->v[i]))) return rc;
        *out = (val_t){.t = SRV_CHAT__V_LIST, .aux = e->kind == SRV_CHAT__E_TUPLE, .u.l = l};
        return 0;
    }
    case SRV_CHAT__E_DICT: {
        srv_chat__dict_t *d = srv_chat__mkdict(R, (size_t)e->nkids, e->line);
        if (!d) return R->err->code;
        for (int i = 0; i < e->nkids; i++) {
            if ((rc = eval(R, f, e->kids[i], &a)) || (rc = eval(R, f, e->vals[i], &b))) return rc;
            if (a.t != SRV_CHAT__V_STR)
                return srv_chat__fail(R, LLM_EINVAL, e->line, "unsupported non-string dict key");
            if ((rc = srv_chat__dict_set(R, d, a.u.s, a.n, &b, e->line))) return rc;
        }
        *out = (val_t){.t = SRV_CHAT__V_DICT, .u.d = d};
        return 0;
    }
    case SRV_CHAT__E_ATTR:
        if ((rc = eval(R, f, e->a, &a))) return rc;
        return srv_chat__getattr(R, &a, e->s, e->n, e->line, out);
    case SRV_CHAT__E_ITEM:
        if ((rc = eval(R, f, e->a, &a)) || (rc = eval(R, f, e->b, &b))) return rc;
        return srv_chat__getitem(R, &a, &b, e->line, out);
    case SRV_CHAT__E_SLICE: {
        val_t parts[3];
        const val_t *p[3] = {NULL, NULL, NULL};
        const node_t *pn[3] = {e->b, e->c, e->d};
        if ((rc = eval(R, f, e->a, &a))) return rc;
        for (int k = 0; k < 3; k++) {
            if (!pn[k]) continue;
            if ((rc = eval(R, f, pn[k], &parts[k]))) return rc;
            p[k] = &parts[k];
        }
        return srv_chat__slice(R, &a, p, e->line, out);
    }
    case SRV_CHAT__E_CALL: return eval_call(R, f, e, out);
    case SRV_CHAT__E_FILTER: {
        srv_chat__args_t args;
        if ((rc = eval(R, f, e->a, &a)) || (rc = eval_args(R, f, e, &args))) return rc;
        return srv_chat__filter(R, e->op, e->s, &a, &args, e->line, out);
    }
    case SRV_CHAT__E_TEST: {
        srv_chat__args_t args;
        if ((rc = eval(R, f, e->a, &a)) || (rc = eval_args(R, f, e, &args))) return rc;
        if ((rc = srv_chat__test(R, e->op, e->s, &a, &args, e->line, &res))) return rc;
        *out = (val_t){.t = SRV_CHAT__V_BOOL, .u.i = res};
        return 0;
    }
    case SRV_CHAT__E_NOT:
        if ((rc = eval(R, f, e->a, &a))) return rc;
        *out = (val_t){.t = SRV_CHAT__V_BOOL, .u.i = !srv_chat__truthy(&a)};
        return 0;
    case SRV_CHAT__E_NEG:
    case SRV_CHAT__E_POS:
        if ((rc = eval(R, f, e->a, &a))) return rc;
        if (a.t == SRV_CHAT__V_UNDEF) return srv_chat__undef_fail(R, &a, e->line);
        if (!is_num(&a))
            return srv_chat__fail(R, LLM_EINVAL, e->line, "bad operand type for unary %c: '%s'",
                                  e->kind == SRV_CHAT__E_NEG ? '-' : '+', srv_chat__type_name(&a));
        if (e->kind == SRV_CHAT__E_NEG && a.u.i == INT64_MIN)
            return srv_chat__fail(R, LLM_EINVAL, e->line, "integer overflow");
        *out = (val_t){.t = SRV_CHAT__V_INT, .u.i = e->kind == SRV_CHAT__E_NEG ? -a.u.i : a.u.i};
        return 0;
    case SRV_CHAT__E_BIN:
        if ((rc = eval(R, f, e->a, &a)) || (rc = eval(R, f, e->b, &b))) return rc;
        return srv_chat__arith(R, e->op, &a, &b, e->line, out);
    case SRV_CHAT__E_AND:
    case SRV_CHAT__E_OR:
        if ((rc = eval(R, f, e->a, &a))) return rc;
        if (srv_chat__truthy(&a) == (e->kind == SRV_CHAT__E_OR)) {
            *out = a;
            return 0;
        }
        return eval(R, f, e->b, out);
    case SRV_CHAT__E_CMP:
        if ((rc = eval(R, f, e->a, &a))) return rc;
        res = 1;
        for (int i = 0; i < e->nkids && res; i++) {
            if ((rc = eval(R, f, e->kids[i], &b)) ||
                (rc = srv_chat__compare(R, e->ops[i], &a, &b, e->line, &res)))
                return rc;
            a = b;
        }
        *out = (val_t){.t = SRV_CHAT__V_BOOL, .u.i = res};
        return 0;
    case SRV_CHAT__E_COND:
        if ((rc = eval(R, f, e->b, &a))) return rc;
        if (srv_chat__truthy(&a)) return eval(R, f, e->a, out);
        if (e->c) return eval(R, f, e->c, out);
        *out = (val_t){.t = SRV_CHAT__V_UNDEF, .aux = 3, .n = 57,
                       .name = "the inline if-expression evaluated to false without else"};
        return 0;
    case SRV_CHAT__E_CONCAT: {
        buf_t buf = {0};
        rc = 0;
        for (int i = 0; i < e->nkids && rc == 0; i++) {
            rc = eval(R, f, e->kids[i], &a);
            if (rc == 0) rc = srv_chat__str(R, &a, &buf, e->line);
        }
        if (rc == 0) rc = srv_chat__buf_to_str(R, &buf, e->line, out);
        free(buf.s);
        return rc;
    }
    default:
        return srv_chat__fail(R, LLM_EINVAL, e->line, "internal error: bad expression node");
    }
}

/* ---- statements ---- */

static int exec(rctx_t *R, frame_t *f, node_t *const *body, int n);

/* Binds a target (name or tuple of names) in frame f. */
static int bind_targets(rctx_t *R, frame_t *f, node_t *const *names, int nnames, const val_t *v,
                        int line) {
    if (nnames == 1) return frame_set(R, f, names[0]->s, names[0]->n, v, line);
    if (v->t != SRV_CHAT__V_LIST)
        return srv_chat__fail(R, LLM_EINVAL, line, "cannot unpack non-sequence '%s'",
                              srv_chat__type_name(v));
    if (v->u.l->n != (size_t)nnames)
        return srv_chat__fail(R, LLM_EINVAL, line, "expected %d values to unpack, got %zu", nnames,
                              v->u.l->n);
    for (int i = 0; i < nnames; i++) {
        int rc = frame_set(R, f, names[i]->s, names[i]->n, &v->u.l->v[i], line);
        if (rc) return rc;
    }
    return 0;
}

static int assign(rctx_t *R, frame_t *f, const node_t *target, const val_t *v, int line) {
    if (target->kind == SRV_CHAT__E_NAME) return frame_set(R, f, target->s, target->n, v, line);
    if (target->kind == SRV_CHAT__E_TUPLE)
        return bind_targets(R, f, target->kids, target->nkids, v, line);
    /* ns.attr */
    const val_t *ns = lookup(f, target->a->s, target->a->n);
    if (!ns || ns->t != SRV_CHAT__V_NS)
        return srv_chat__fail(R, LLM_EINVAL, line,
                              "cannot assign attribute on non-namespace object '%s'", target->a->s);
    return srv_chat__dict_set(R, ns->u.d, target->s, target->n, v, line);
}

static int exec_for(rctx_t *R, frame_t *f, const node_t *s) {
    val_t it;
    const list_t *items;
    int rc = eval(R, f, s->a, &it);
    if (rc || (rc = srv_chat__iterate(R, &it, s->line, &items))) return rc;

    frame_t *iter = srv_chat__alloc(&R->ar, sizeof *iter);
    if (!iter) return srv_chat__nomem(R, s->line);
    iter->parent = f;
    if (s->b) { /* `for x in xs if cond`: loop.length counts the kept items only */
        list_t *kept = srv_chat__mklist(R, items->n, s->line);
        if (!kept) return R->err->code;
        kept->n = 0;
        for (size_t i = 0; i < items->n; i++) {
            val_t c;
            iter->n = 0;
            if ((rc = srv_chat__step(R, 1, s->line)) ||
                (rc = bind_targets(R, iter, s->kids, s->nkids, &items->v[i], s->line)) ||
                (rc = eval(R, iter, s->b, &c)))
                return rc;
            if (srv_chat__truthy(&c)) kept->v[kept->n++] = items->v[i];
        }
        items = kept;
    }
    srv_chat__loop_t *L = srv_chat__alloc(&R->ar, sizeof *L);
    if (!L) return srv_chat__nomem(R, s->line);
    L->length = (int64_t)items->n;
    L->items = items;
    val_t loopv = {.t = SRV_CHAT__V_LOOP, .u.loop = L};
    for (size_t i = 0; i < items->n; i++) {
        L->index0 = (int64_t)i;
        iter->n = 0; /* a fresh scope for every iteration */
        if ((rc = srv_chat__step(R, 1, s->line)) ||
            (rc = bind_targets(R, iter, s->kids, s->nkids, &items->v[i], s->line)) ||
            (rc = frame_set(R, iter, "loop", 4, &loopv, s->line)))
            return rc;
        rc = exec(R, iter, s->body, s->nbody);
        if (rc < 0) return rc;
        if (rc == FLOW_BREAK) break;
    }
    if (items->n == 0 && s->norelse) {
        iter->n = 0;
        rc = exec(R, iter, s->orelse, s->norelse);
        return rc < 0 ? rc : 0;
    }
    return 0;
}

static int exec(rctx_t *R, frame_t *f, node_t *const *body, int n) {
    for (int i = 0; i < n; i++) {
        const node_t *s = body[i];
        val_t v;
        int rc = 0;
        switch (s->kind) {
        case SRV_CHAT__N_TEXT: rc = srv_chat__buf_put(R, R->out, s->s, s->n, s->line); break;
        case SRV_CHAT__N_OUTPUT:
            rc = eval(R, f, s->a, &v);
            if (rc == 0) rc = srv_chat__str(R, &v, R->out, s->line);
            break;
        case SRV_CHAT__N_IF:
            rc = eval(R, f, s->a, &v);
            if (rc == 0)
                rc = srv_chat__truthy(&v) ? exec(R, f, s->body, s->nbody)
                                          : exec(R, f, s->orelse, s->norelse);
            break;
        case SRV_CHAT__N_FOR: rc = exec_for(R, f, s); break;
        case SRV_CHAT__N_SET:
            rc = eval(R, f, s->b, &v);
            if (rc == 0) rc = assign(R, f, s->a, &v, s->line);
            break;
        case SRV_CHAT__N_SETBLOCK: {
            buf_t cap = {0}, *saved = R->out;
            R->out = &cap;
            rc = exec(R, f, s->body, s->nbody);
            R->out = saved;
            if (rc == 0) rc = srv_chat__buf_to_str(R, &cap, s->line, &v);
            free(cap.s);
            if (rc == 0) rc = assign(R, f, s->a, &v, s->line);
            break;
        }
        case SRV_CHAT__N_BREAK: return FLOW_BREAK;
        case SRV_CHAT__N_CONTINUE: return FLOW_CONTINUE;
        case SRV_CHAT__N_SCOPE: rc = exec(R, f, s->body, s->nbody); break;
        default: rc = srv_chat__fail(R, LLM_EINVAL, s->line, "internal error: bad statement");
        }
        if (rc) return rc; /* errors, and break/continue from inside an if */
    }
    return 0;
}

/* ---- entry point ---- */

static int set_str(rctx_t *R, frame_t *g, const char *name, const char *s) {
    val_t v = {.t = SRV_CHAT__V_STR, .n = strlen(s), .u.s = s};
    return frame_set(R, g, name, strlen(name), &v, 0);
}

static int set_func(rctx_t *R, frame_t *g, const char *name, int id) {
    val_t v = {.t = SRV_CHAT__V_FUNC, .aux = id, .name = name};
    return frame_set(R, g, name, strlen(name), &v, 0);
}

static int make_globals(rctx_t *R, frame_t *g, const srv_chat_msg_t *msgs, int n, int add_gen) {
    const srv_chat_t *c = R->c;
    list_t *ml = srv_chat__mklist(R, (size_t)n, 0);
    if (!ml) return R->err->code;
    for (int i = 0; i < n; i++) {
        srv_chat__dict_t *d = srv_chat__mkdict(R, 2, 0);
        if (!d) return R->err->code;
        val_t role = {.t = SRV_CHAT__V_STR, .n = strlen(msgs[i].role), .u.s = msgs[i].role};
        val_t content = {.t = SRV_CHAT__V_NONE};
        if (msgs[i].content)
            content =
                (val_t){.t = SRV_CHAT__V_STR, .n = strlen(msgs[i].content), .u.s = msgs[i].content};
        d->kv[0] = (srv_chat__kv_t){.k = "role", .kn = 4, .v = role};
        d->kv[1] = (srv_chat__kv_t){.k = "content", .kn = 7, .v = content};
        d->n = 2;
        ml->v[i] = (val_t){.t = SRV_CHAT__V_DICT, .u.d = d};
    }
    val_t v = {.t = SRV_CHAT__V_LIST, .u.l = ml};
    int rc = frame_set(R, g, "messages", 8, &v, 0);
    v = (val_t){.t = SRV_CHAT__V_BOOL, .u.i = add_gen != 0};
    if (rc == 0) rc = frame_set(R, g, "add_generation_prompt", 21, &v, 0);
    /* transformers passes tools=None and documents=None when there are none */
    v = (val_t){.t = SRV_CHAT__V_NONE};
    if (rc == 0) rc = frame_set(R, g, "tools", 5, &v, 0);
    if (rc == 0) rc = frame_set(R, g, "documents", 9, &v, 0);
    for (int i = 0; i < SRV_CHAT__NTOK && rc == 0; i++)
        if (c->tok[i]) rc = set_str(R, g, srv_chat__tok_names[i], c->tok[i]);
    if (rc == 0 && c->has_extra_tok) {
        list_t *l = srv_chat__mklist(R, (size_t)c->n_extra_tok, 0);
        if (!l) return R->err->code;
        for (int i = 0; i < c->n_extra_tok; i++)
            l->v[i] =
                (val_t){.t = SRV_CHAT__V_STR, .n = strlen(c->extra_tok[i]), .u.s = c->extra_tok[i]};
        v = (val_t){.t = SRV_CHAT__V_LIST, .u.l = l};
        rc = frame_set(R, g, "additional_special_tokens", 25, &v, 0);
    }
    if (rc == 0) rc = set_func(R, g, "raise_exception", SRV_CHAT__FN_RAISE);
    if (rc == 0) rc = set_func(R, g, "range", SRV_CHAT__FN_RANGE);
    if (rc == 0) rc = set_func(R, g, "namespace", SRV_CHAT__FN_NAMESPACE);
    if (rc == 0) rc = set_func(R, g, "dict", SRV_CHAT__FN_DICT);
    if (rc == 0) rc = set_func(R, g, "strftime_now", SRV_CHAT__FN_STRFTIME);
    if (rc == 0) rc = set_func(R, g, "lipsum", SRV_CHAT__FN_UNSUPPORTED);
    if (rc == 0) rc = set_func(R, g, "cycler", SRV_CHAT__FN_UNSUPPORTED);
    if (rc == 0) rc = set_func(R, g, "joiner", SRV_CHAT__FN_UNSUPPORTED);
    return rc;
}

int srv_chat__eval(const srv_chat_t *c, const srv_chat_msg_t *msgs, int n, int add_gen,
                   char **text, llm_error_t *err) {
    llm_error_t local;
    rctx_t R = {.c = c, .err = err ? err : &local}; /* code paths read R.err->code */
    buf_t out = {0};
    frame_t globals = {0}, root = {.parent = &globals};
    R.ar.limit = c->lim.max_memory;
    R.out = &out;
    int rc = make_globals(&R, &globals, msgs, n, add_gen);
    if (rc == 0) rc = exec(&R, &root, c->body, c->nbody);
    if (rc == 0 && !out.s) rc = srv_chat__buf_put(&R, &out, "", 0, 0);
    /* the result is a C string: a NUL from a template literal ('\0') would cut it short */
    if (rc == 0 && memchr(out.s, '\0', out.n))
        rc = llm_err_set(R.err, LLM_EINVAL, "chat template: the rendered text contains a NUL "
                                            "character");
    srv_chat__arena_free(&R.ar);
    if (rc < 0) {
        free(out.s);
        return rc;
    }
    *text = out.s;
    return 0;
}
