/* srv_chat_int.h: internals shared by the srv_chat_*.c files (not public API).
 *
 *   srv_chat.c        public API: loading files, special tokens, render entry point
 *   srv_chat_lex.c    template text -> tokens (whitespace control, string escapes)
 *   srv_chat_parse.c  tokens -> syntax tree
 *   srv_chat_eval.c   scopes, expressions, statements, the render entry point
 *   srv_chat_val.c    values: Python/Jinja semantics of lookups, operators, comparisons
 *   srv_chat_lib.c    filters, tests, methods, global functions
 *   srv_chat_str.c    str()/repr()/tojson/escape and string operations (strip, case, split)
 */
#ifndef SRV_CHAT_INT_H
#define SRV_CHAT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "srv_chat.h"

/* ---- arena ---- */

/* Bump allocator. Parse trees live in one without a limit; each render uses one whose
 * limit is srv_chat_limits_t.max_memory. */
typedef struct srv_chat__blk_s srv_chat__blk_t;
typedef struct srv_chat__arena_s {
    srv_chat__blk_t *head;
    size_t used;  /* bytes of all blocks */
    size_t limit; /* 0 = none */
    int over;     /* set when an allocation failed because of limit (not malloc) */
} srv_chat__arena_t;

/* Returns 8-aligned zeroed memory or NULL (malloc failure, or limit reached: over = 1). */
void *srv_chat__alloc(srv_chat__arena_t *a, size_t n);
void srv_chat__arena_free(srv_chat__arena_t *a);

/* ---- UTF-8 / Python str helpers ---- */

/* Decodes one code point at s[0..n) (n > 0); invalid bytes decode as themselves, length 1. */
uint32_t srv_chat__utf8_dec(const char *s, size_t n, size_t *len);
/* Byte length of the Python-whitespace character (str.isspace) at s[i], or 0. */
size_t srv_chat__ws_at(const char *s, size_t n, size_t i);
/* Byte length of the Python-whitespace character that ends at s[i-1] (i > 0), or 0. */
size_t srv_chat__ws_before(const char *s, size_t i);

/* ---- tokens ---- */

typedef enum {
    SRV_CHAT__T_EOF,
    SRV_CHAT__T_TEXT,        /* template data between tags, already whitespace-controlled */
    SRV_CHAT__T_VAR_BEGIN,   /* {{ */
    SRV_CHAT__T_VAR_END,     /* }} */
    SRV_CHAT__T_BLOCK_BEGIN, /* {% */
    SRV_CHAT__T_BLOCK_END,   /* %} */
    SRV_CHAT__T_NAME,
    SRV_CHAT__T_STRING,
    SRV_CHAT__T_INT,
    SRV_CHAT__T_FLOAT,
    SRV_CHAT__T_OP
} srv_chat__tok_type_t;

typedef struct srv_chat__tok_s {
    int type;
    int line;
    const char *s; /* TEXT, STRING: decoded bytes; NAME, OP, FLOAT: source text */
    size_t n;
    int64_t i; /* INT */
} srv_chat__tok_t;

/* Tokenizes src[0..n) (borrowed). Tokens and decoded strings live in a. Returns 0, or
 * LLM_EFORMAT / LLM_EUNSUPPORTED / LLM_ENOMEM with err filled ("chat template: ... at line N").
 * The last token is T_EOF. */
int srv_chat__lex(const char *src, size_t n, srv_chat__arena_t *a, srv_chat__tok_t **toks,
                  size_t *ntok, llm_error_t *err);

/* ---- syntax tree ---- */

typedef enum {
    /* statements */
    SRV_CHAT__N_TEXT,     /* s, n */
    SRV_CHAT__N_OUTPUT,   /* a */
    SRV_CHAT__N_IF,       /* a = test, body, orelse (an elif is an N_IF alone in orelse) */
    SRV_CHAT__N_FOR,      /* kids = target names, a = iterable, b = filter or NULL, body, orelse */
    SRV_CHAT__N_SET,      /* a = target (E_NAME, E_ATTR on a name, E_TUPLE of names), b = value */
    SRV_CHAT__N_SETBLOCK, /* a = target name, body */
    SRV_CHAT__N_BREAK,
    SRV_CHAT__N_CONTINUE,
    SRV_CHAT__N_SCOPE, /* body ({% generation %}: rendered as is) */
    /* expressions */
    SRV_CHAT__E_NONE,
    SRV_CHAT__E_BOOL,   /* i */
    SRV_CHAT__E_INT,    /* i */
    SRV_CHAT__E_STR,    /* s, n */
    SRV_CHAT__E_FLOAT,  /* s, n (source text; evaluating it is unsupported) */
    SRV_CHAT__E_NAME,   /* s, n */
    SRV_CHAT__E_LIST,   /* kids */
    SRV_CHAT__E_TUPLE,  /* kids */
    SRV_CHAT__E_DICT,   /* kids = keys, vals = values */
    SRV_CHAT__E_ATTR,   /* a . s */
    SRV_CHAT__E_ITEM,   /* a [ b ] */
    SRV_CHAT__E_SLICE,  /* a [ b : c : d ], each of b, c, d may be NULL */
    SRV_CHAT__E_CALL,   /* a ( kids, kwn = kwv ) */
    SRV_CHAT__E_FILTER, /* a | s ( kids, kwn = kwv ); op = filter id */
    SRV_CHAT__E_TEST,   /* a is s ( kids ); op = test id */
    SRV_CHAT__E_NOT,    /* a */
    SRV_CHAT__E_NEG,    /* a */
    SRV_CHAT__E_POS,    /* a */
    SRV_CHAT__E_BIN,    /* a op b (arithmetic) */
    SRV_CHAT__E_AND,    /* a, b */
    SRV_CHAT__E_OR,     /* a, b */
    SRV_CHAT__E_CMP,    /* a, then ops[i] kids[i] */
    SRV_CHAT__E_COND,   /* a if b else c (c may be NULL) */
    SRV_CHAT__E_CONCAT  /* kids joined with ~ */
} srv_chat__kind_t;

/* Binary / comparison operators (node op). */
enum {
    SRV_CHAT__OP_ADD = 1, SRV_CHAT__OP_SUB, SRV_CHAT__OP_MUL, SRV_CHAT__OP_DIV,
    SRV_CHAT__OP_FLOORDIV, SRV_CHAT__OP_MOD, SRV_CHAT__OP_POW,
    SRV_CHAT__OP_EQ, SRV_CHAT__OP_NE, SRV_CHAT__OP_LT, SRV_CHAT__OP_LE, SRV_CHAT__OP_GT,
    SRV_CHAT__OP_GE, SRV_CHAT__OP_IN, SRV_CHAT__OP_NOTIN
};

typedef struct srv_chat__node_s srv_chat__node_t;
struct srv_chat__node_s {
    int kind;
    int line;
    int op;
    const char *s;
    size_t n;
    int64_t i;
    srv_chat__node_t *a, *b, *c, *d;
    srv_chat__node_t **kids; /* list items, call/filter args, for targets, cmp operands */
    int nkids;
    int *ops;                /* E_CMP operators, nkids of them */
    srv_chat__node_t **vals; /* E_DICT values (nkids) */
    const char **kwn;        /* keyword argument names (NUL-terminated) */
    srv_chat__node_t **kwv;
    int nkw;
    srv_chat__node_t **body;
    int nbody;
    srv_chat__node_t **orelse;
    int norelse;
};

/* Parses toks into the statement list *body / *nbody (nodes in a). Returns 0, LLM_EFORMAT
 * (syntax), LLM_EUNSUPPORTED (known Jinja construct not implemented) or LLM_ENOMEM. */
int srv_chat__parse(const srv_chat__tok_t *toks, size_t ntok, srv_chat__arena_t *a,
                    srv_chat__node_t ***body, int *nbody, llm_error_t *err);

/* Filter / test names -> ids (0 = not a Jinja filter/test at all; < 0 = a Jinja builtin this
 * interpreter does not implement, which fails when evaluated). */
int srv_chat__filter_id(const char *name, size_t n);
int srv_chat__test_id(const char *name, size_t n);

/* ---- the loaded template ---- */

#define SRV_CHAT__NTOK 7 /* bos, eos, unk, pad, sep, cls, mask */
extern const char *const srv_chat__tok_names[SRV_CHAT__NTOK];

struct srv_chat_s {
    /* private; immutable after load except limits (srv_chat_set_limits) */
    srv_chat__arena_t ar; /* tokens and syntax tree */
    srv_chat__node_t **body;
    int nbody;
    char *tok[SRV_CHAT__NTOK]; /* special-token strings, NULL = undefined */
    char **extra_tok;          /* additional_special_tokens */
    int n_extra_tok;
    int has_extra_tok;         /* additional_special_tokens was given (maybe empty) */
    srv_chat_limits_t lim;
};

/* Renders c (see srv_chat_render; arguments already checked). */
int srv_chat__eval(const srv_chat_t *c, const srv_chat_msg_t *msgs, int n, int add_gen,
                   char **text, llm_error_t *err);

/* ---- values (render time; all memory in the render's arena) ---- */

typedef enum {
    SRV_CHAT__V_UNDEF, /* Jinja Undefined: prints as "", falsy, fails in operations */
    SRV_CHAT__V_NONE,
    SRV_CHAT__V_BOOL,
    SRV_CHAT__V_INT,
    SRV_CHAT__V_STR,
    SRV_CHAT__V_LIST,   /* list, or tuple when aux = 1; immutable once built */
    SRV_CHAT__V_DICT,   /* string keys, insertion order; immutable once built */
    SRV_CHAT__V_NS,     /* namespace(): a dict whose entries `set ns.x` may change */
    SRV_CHAT__V_FUNC,   /* global function, aux = id */
    SRV_CHAT__V_METHOD, /* bound method: u.self = receiver, name = method name */
    SRV_CHAT__V_LOOP    /* the `loop` variable of a for loop */
} srv_chat__vtype_t;

typedef struct srv_chat__val_s srv_chat__val_t;
typedef struct srv_chat__list_s srv_chat__list_t;
typedef struct srv_chat__dict_s srv_chat__dict_t;
typedef struct srv_chat__loop_s srv_chat__loop_t;

struct srv_chat__val_s {
    int t;
    int aux;          /* LIST: SRV_CHAT__L_*; STR: 1 = Markup (from safe/escape); FUNC: id;
                       * UNDEF: 0 = missing name, 1 = attribute, 2 = element, 3 = message */
    const char *name; /* UNDEF: what was missing (n bytes); METHOD: method name (NUL-ended) */
    size_t n;         /* STR: byte length; UNDEF: length of name */
    union {
        int64_t i; /* BOOL, INT */
        const char *s;
        srv_chat__list_t *l;
        srv_chat__dict_t *d; /* DICT, NS */
        const srv_chat__val_t *self;
        srv_chat__loop_t *loop;
    } u;
};

/* Kinds of V_LIST (aux). Generators (what map/select/reject/selectattr/rejectattr/items and
 * reverse return in Jinja) and dict views (dict.items()/keys()/values()) can be iterated but
 * not indexed or printed; a generator is always true and has no length. */
enum { SRV_CHAT__L_LIST = 0, SRV_CHAT__L_TUPLE = 1, SRV_CHAT__L_GEN = 2, SRV_CHAT__L_VIEW = 3 };

struct srv_chat__list_s {
    srv_chat__val_t *v;
    size_t n;
};

typedef struct srv_chat__kv_s {
    const char *k;
    size_t kn;
    srv_chat__val_t v;
} srv_chat__kv_t;

struct srv_chat__dict_s {
    srv_chat__kv_t *kv;
    size_t n, cap;
};

struct srv_chat__loop_s {
    int64_t index0, length;
    const srv_chat__list_t *items;
};

/* Global functions (V_FUNC aux). */
enum {
    SRV_CHAT__FN_RAISE = 1, SRV_CHAT__FN_RANGE, SRV_CHAT__FN_NAMESPACE, SRV_CHAT__FN_DICT,
    SRV_CHAT__FN_STRFTIME, SRV_CHAT__FN_UNSUPPORTED
};

/* Growable output text (malloc'd). */
typedef struct srv_chat__buf_s {
    char *s;
    size_t n, cap;
} srv_chat__buf_t;

/* State of one render. */
typedef struct srv_chat__rctx_s {
    const srv_chat_t *c;
    srv_chat__arena_t ar;
    srv_chat__buf_t *out; /* where {{ }} and text go (a capture buffer inside set blocks) */
    uint64_t steps;
    llm_error_t *err;
    int raised; /* err->msg is a raise_exception message, to be passed on verbatim */
} srv_chat__rctx_t;

/* Evaluated call arguments. */
typedef struct srv_chat__args_s {
    const srv_chat__val_t *v;
    int n;
    const char *const *kwn;
    const srv_chat__val_t *kwv;
    int nkw;
} srv_chat__args_t;

/* Fills err with "chat template: <msg> at line N" and returns code. */
int srv_chat__fail(srv_chat__rctx_t *R, int code, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Fails with "'x' is undefined" (or "... has no attribute 'x'") for the undefined value v. */
int srv_chat__undef_fail(srv_chat__rctx_t *R, const srv_chat__val_t *v, int line);
/* Out-of-memory or memory-limit failure, whichever the arena says. */
int srv_chat__nomem(srv_chat__rctx_t *R, int line);

/* Appends to b; LLM_ERANGE past max_output. */
int srv_chat__buf_put(srv_chat__rctx_t *R, srv_chat__buf_t *b, const char *s, size_t n, int line);
/* Copies s into the arena as a V_STR (LLM_ERANGE past max_output). */
int srv_chat__mkstr(srv_chat__rctx_t *R, const char *s, size_t n, int line, srv_chat__val_t *out);
/* Moves b's text into a V_STR and empties b. */
int srv_chat__buf_to_str(srv_chat__rctx_t *R, srv_chat__buf_t *b, int line, srv_chat__val_t *out);
/* New list of n values (uninitialized UNDEF), or NULL after setting err. */
srv_chat__list_t *srv_chat__mklist(srv_chat__rctx_t *R, size_t n, int line);
/* New empty dict; sets a key (replacing an existing one). */
srv_chat__dict_t *srv_chat__mkdict(srv_chat__rctx_t *R, size_t cap, int line);
int srv_chat__dict_set(srv_chat__rctx_t *R, srv_chat__dict_t *d, const char *k, size_t kn,
                       const srv_chat__val_t *v, int line);
const srv_chat__val_t *srv_chat__dict_get(const srv_chat__dict_t *d, const char *k, size_t kn);

/* Python semantics: truth value, ==, str() appended to b, repr() appended to b. */
int srv_chat__truthy(const srv_chat__val_t *v);
int srv_chat__eq(const srv_chat__val_t *a, const srv_chat__val_t *b);
int srv_chat__str(srv_chat__rctx_t *R, const srv_chat__val_t *v, srv_chat__buf_t *b, int line);
int srv_chat__to_str(srv_chat__rctx_t *R, const srv_chat__val_t *v, int line, srv_chat__val_t *out);
int srv_chat__len(srv_chat__rctx_t *R, const srv_chat__val_t *v, int line, int64_t *out);
/* Jinja's getattr (x.name) and getitem (x[key]). */
int srv_chat__getattr(srv_chat__rctx_t *R, const srv_chat__val_t *x, const char *name, size_t n,
                      int line, srv_chat__val_t *out);
int srv_chat__getitem(srv_chat__rctx_t *R, const srv_chat__val_t *x, const srv_chat__val_t *key,
                      int line, srv_chat__val_t *out);
/* The items a for loop or filter iterates over: a list's items, a dict's keys, a string's
 * characters, nothing for undefined. */
int srv_chat__iterate(srv_chat__rctx_t *R, const srv_chat__val_t *x, int line,
                      const srv_chat__list_t **out);
/* Python type name of v ("str", "list", "NoneType", ...), for messages. */
const char *srv_chat__type_name(const srv_chat__val_t *v);
/* x[b0:b1:b2] (NULL = omitted), and a <op> b for the arithmetic operators (OP_ADD .. OP_POW). */
int srv_chat__slice(srv_chat__rctx_t *R, const srv_chat__val_t *x,
                    const srv_chat__val_t *const b[3], int line, srv_chat__val_t *out);
int srv_chat__arith(srv_chat__rctx_t *R, int op, const srv_chat__val_t *a,
                    const srv_chat__val_t *b, int line, srv_chat__val_t *out);
/* a <op> b for the comparison operators (OP_EQ .. OP_NOTIN; `in` tests b contains a). */
int srv_chat__compare(srv_chat__rctx_t *R, int op, const srv_chat__val_t *a,
                      const srv_chat__val_t *b, int line, int *res);
/* Counts work against max_steps. */
int srv_chat__step(srv_chat__rctx_t *R, uint64_t k, int line);

/* Conversions and string operations (srv_chat_str.c). */
/* HTML-escapes str(x) (markupsafe.escape) into a Markup V_STR; Markup input is returned as is. */
int srv_chat__escape(srv_chat__rctx_t *R, const srv_chat__val_t *x, int line, srv_chat__val_t *out);
/* json.dumps(x, indent=indent (NULL: one line), sort_keys, ensure_ascii) */
int srv_chat__tojson(srv_chat__rctx_t *R, const srv_chat__val_t *x, const char *indent,
                     size_t indent_n, int sort_keys, int ensure_ascii, int line,
                     srv_chat__val_t *out);
/* str.strip/lstrip/rstrip: chars NULL or none strips whitespace. */
int srv_chat__strip(srv_chat__rctx_t *R, const srv_chat__val_t *s, const srv_chat__val_t *chars,
                    int left, int right, int line, srv_chat__val_t *out);
enum {
    SRV_CHAT__CASE_UPPER, SRV_CHAT__CASE_LOWER, SRV_CHAT__CASE_CAPITALIZE,
    SRV_CHAT__CASE_PY_TITLE,   /* str.title() */
    SRV_CHAT__CASE_JINJA_TITLE /* the title filter */
};
int srv_chat__case(srv_chat__rctx_t *R, const srv_chat__val_t *s, int mode, int line,
                   srv_chat__val_t *out);
int srv_chat__is_case(const srv_chat__val_t *s, int upper); /* str.isupper() / islower() */
/* str.replace(old, new, count < 0 = all), str.split(sep (NULL/none = whitespace), maxsplit) */
int srv_chat__replace(srv_chat__rctx_t *R, const srv_chat__val_t *s, const srv_chat__val_t *old,
                      const srv_chat__val_t *new_, int64_t count, int line, srv_chat__val_t *out);
int srv_chat__split(srv_chat__rctx_t *R, const srv_chat__val_t *s, const srv_chat__val_t *sep,
                    int64_t maxsplit, int line, srv_chat__val_t *out);

/* Library (srv_chat_lib.c). name is the filter/test name for messages. */
int srv_chat__filter(srv_chat__rctx_t *R, int id, const char *name, const srv_chat__val_t *x,
                     const srv_chat__args_t *a, int line, srv_chat__val_t *out);
int srv_chat__test(srv_chat__rctx_t *R, int id, const char *name, const srv_chat__val_t *x,
                   const srv_chat__args_t *a, int line, int *res);
int srv_chat__method(srv_chat__rctx_t *R, const srv_chat__val_t *self, const char *name,
                     const srv_chat__args_t *a, int line, srv_chat__val_t *out);
int srv_chat__func(srv_chat__rctx_t *R, int id, const char *name, const srv_chat__args_t *a,
                   int line, srv_chat__val_t *out);
/* 1 if `name` is a method of values of x's type (so x.name is a bound method). */
int srv_chat__is_method(const srv_chat__val_t *x, const char *name, size_t n);

#endif
