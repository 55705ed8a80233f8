/* srv_chat_lex.c: chat-template text -> tokens.
 *
 * Whitespace control follows Jinja's lexer with the settings transformers uses
 * (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False):
 *   - newlines (\r\n, \r) in the template are normalized to \n and one trailing \n is dropped;
 *   - `{%-`, `{{-`, `{#-` remove all whitespace before the tag, `-%}`, `-}}`, `-#}` all after;
 *   - otherwise `%}` and `#}` eat the one \n that follows them (trim_blocks) unless written `+%}`;
 *   - otherwise spaces and tabs between the start of a line and `{%` / `{#` are removed
 *     (lstrip_blocks) unless written `{%+`. "Start of a line" includes the very start of the
 *     template and the point after a tag whose match ended in \n.
 * "Whitespace" is Python's (str.isspace), so stripping agrees with Jinja on non-ASCII spaces too.
 */
#include "srv_chat_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- types ---- */

typedef srv_chat__tok_t tok_t;

typedef struct lexer_s {
    const char *src; /* normalized source */
    size_t n;
    srv_chat__arena_t *a;
    tok_t *v; /* malloc'd while lexing, copied into the arena at the end */
    size_t nv, cap;
    llm_error_t *err;
} lexer_t;

/* ---- helpers ---- */

static int fail(lexer_t *L, int code, int line, const char *what) {
    return llm_err_set(L->err, code, "chat template: %s at line %d", what, line);
}

static int push(lexer_t *L, int type, int line, const char *s, size_t n, int64_t i) {
    if (L->nv == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        tok_t *v = realloc(L->v, cap * sizeof *v);
        if (!v) return llm_err_set(L->err, LLM_ENOMEM, "chat template: out of memory");
        L->v = v;
        L->cap = cap;
    }
    tok_t *t = &L->v[L->nv++];
    t->type = type;
    t->line = line;
    t->s = s;
    t->n = n;
    t->i = i;
    return 0;
}

static int starts(const lexer_t *L, size_t p, const char *lit) {
    size_t k = strlen(lit);
    return p + k <= L->n && memcmp(L->src + p, lit, k) == 0;
}

static int count_nl(const char *s, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

/* Skips whitespace from *p; returns 1 if the last character skipped was \n. */
static int skip_ws(const lexer_t *L, size_t *p, int *line) {
    int last_nl = 0;
    size_t w;
    while (*p < L->n && (w = srv_chat__ws_at(L->src, L->n, *p)) > 0) {
        last_nl = L->src[*p] == '\n';
        *line += last_nl;
        *p += w;
    }
    return last_nl;
}

static int is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- strings and numbers ---- */

/* Decodes a string literal body s[0..n) the way Jinja does (Python "unicode-escape"): \\ \' \"
 * \a \b \f \n \r \t \v, \ooo, \xhh, \uhhhh, \Uhhhhhhhh, backslash-newline; any other escape
 * keeps its backslash. The result is never longer than the input. */
static int decode_string(lexer_t *L, const char *s, size_t n, int line, const char **out,
                         size_t *outn) {
    char *o = srv_chat__alloc(L->a, n + 1);
    if (!o) return llm_err_set(L->err, LLM_ENOMEM, "chat template: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\' || i + 1 >= n) {
            o[k++] = s[i++];
            continue;
        }
        char e = s[i + 1];
        i += 2;
        switch (e) {
        case '\\': o[k++] = '\\'; break;
        case '\'': o[k++] = '\''; break;
        case '"': o[k++] = '"'; break;
        case 'a': o[k++] = '\a'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'v': o[k++] = '\v'; break;
        case '\n': break; /* line continuation */
        case 'x': case 'u': case 'U': {
            int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int d = 0; d < nd; d++) {
                int h = i + (size_t)d < n ? hexval(s[i + (size_t)d]) : -1;
                if (h < 0) return fail(L, LLM_EFORMAT, line, "truncated \\x/\\u escape in string");
                cp = cp * 16 + (uint32_t)h;
            }
            i += (size_t)nd;
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return fail(L, LLM_EUNSUPPORTED, line,
                            "unsupported escape (surrogate or out of range)");
            k += put_utf8(o + k, cp);
            break;
        }
        case 'N':
            return fail(L, LLM_EUNSUPPORTED, line, "unsupported \\N{...} escape");
        default:
            if (e >= '0' && e <= '7') {
                uint32_t cp = (uint32_t)(e - '0');
                for (int d = 0; d < 2 && i < n && s[i] >= '0' && s[i] <= '7'; d++)
                    cp = cp * 8 + (uint32_t)(s[i++] - '0');
                k += put_utf8(o + k, cp);
            } else {
                o[k++] = '\\';
                i--; /* the character after the backslash is ordinary text */
            }
        }
    }
    o[k] = '\0';
    *out = o;
    *outn = k;
    return 0;
}

static int lex_string(lexer_t *L, size_t *pp, int *line) {
    size_t p = *pp;
    char q = L->src[p];
    size_t b = p + 1, e = b;
    int start_line = *line, nl = 0;
    while (e < L->n && L->src[e] != q) {
        if (L->src[e] == '\\' && e + 1 < L->n) {
            nl += L->src[e + 1] == '\n';
            e += 2;
        } else {
            nl += L->src[e] == '\n';
            e++;
        }
    }
    if (e >= L->n) return fail(L, LLM_EFORMAT, start_line, "unterminated string literal");
    const char *s = NULL;
    size_t sn = 0;
    int rc = decode_string(L, L->src + b, e - b, start_line, &s, &sn);
    if (rc) return rc;
    *line += nl;
    *pp = e + 1;
    return push(L, SRV_CHAT__T_STRING, start_line, s, sn, 0);
}

/* Digits with Python-style single underscores between them: (\d+_)*\d+ */
static size_t scan_digits(const lexer_t *L, size_t p) {
    size_t q = p;
    while (q < L->n && is_digit(L->src[q])) {
        q++;
        if (q + 1 < L->n && L->src[q] == '_' && is_digit(L->src[q + 1])) q++;
    }
    return q;
}

static int lex_number(lexer_t *L, size_t *pp, int line) {
    size_t p = *pp, q = scan_digits(L, p);
    int is_float = 0;
    if (q + 1 < L->n && L->src[q] == '.' && is_digit(L->src[q + 1])) {
        q = scan_digits(L, q + 1);
        is_float = 1;
    }
    if (q < L->n && L->src[q] == 'e') {
        size_t r = q + 1;
        if (r < L->n && (L->src[r] == '+' || L->src[r] == '-')) r++;
        if (r < L->n && is_digit(L->src[r])) {
            q = scan_digits(L, r);
            is_float = 1;
        }
    }
    if (is_float) {
        *pp = q;
        return push(L, SRV_CHAT__T_FLOAT, line, L->src + p, q - p, 0);
    }
    /* Jinja's integers: [1-9](_?\d)*, 0(_?0)*, 0x.., 0o.., 0b..; so "02" is "0" then "2" */
    int base = 10;
    size_t i = p;
    if (L->src[p] == '0') {
        char x = p + 1 < L->n ? (char)(L->src[p + 1] | 0x20) : 0;
        base = x == 'x' ? 16 : x == 'o' ? 8 : x == 'b' ? 2 : 0;
        if (base) {
            i = p + 2;
        } else {
            q = p + 1;
            while (q + 1 < L->n && L->src[q] == '_' && L->src[q + 1] == '0') q += 2;
            while (q < L->n && L->src[q] == '0') q++;
        }
    }
    int64_t v = 0;
    int nd = 0;
    if (base) {
        for (q = i; q < L->n; q++) {
            int d = hexval(L->src[q]);
            if (L->src[q] == '_' && q + 1 < L->n && hexval(L->src[q + 1]) >= 0 &&
                hexval(L->src[q + 1]) < base && nd)
                continue;
            if (d < 0 || d >= base) break;
            if (v > (INT64_MAX - d) / base)
                return fail(L, LLM_EUNSUPPORTED, line, "integer literal too large");
            v = v * base + d;
            nd++;
        }
        if (nd == 0) return fail(L, LLM_EFORMAT, line, "invalid integer literal");
    }
    *pp = q;
    return push(L, SRV_CHAT__T_INT, line, L->src + p, q - p, v);
}

/* ---- tags ---- */

/* Lexes the inside of a {{ }} or {% %} tag starting at *pp (after the opener and its
 * modifier), up to and including the end tag. */
static int lex_tag(lexer_t *L, char kind, size_t *pp, int *line, int *line_starting) {
    static const char *const ops2[] = {"//", "**", "==", "!=", ">=", "<=", NULL};
    static const char ops1[] = "+-/*%~[](){}><=.:|,;";
    char stack[64];
    int depth = 0, open_line = *line, rc;
    size_t p = *pp;
    rc = push(L, kind == '%' ? SRV_CHAT__T_BLOCK_BEGIN : SRV_CHAT__T_VAR_BEGIN, *line, NULL, 0, 0);
    if (rc) return rc;
    for (;;) {
        skip_ws(L, &p, line);
        if (p >= L->n)
            return fail(L, LLM_EFORMAT, open_line,
                        kind == '%' ? "unexpected end of template, missing '%}'"
                                    : "unexpected end of template, missing '}}'");
        if (depth == 0) {
            int end = 0, strip = 0, trim = 0;
            if (kind == '%') {
                if (starts(L, p, "+%}")) end = 3;
                else if (starts(L, p, "-%}")) end = 3, strip = 1;
                else if (starts(L, p, "%}")) end = 2, trim = 1;
            } else {
                if (starts(L, p, "-}}")) end = 3, strip = 1;
                else if (starts(L, p, "}}")) end = 2;
            }
            if (end) {
                rc = push(L, kind == '%' ? SRV_CHAT__T_BLOCK_END : SRV_CHAT__T_VAR_END, *line,
                          NULL, 0, 0);
                if (rc) return rc;
                p += (size_t)end;
                *line_starting = 0;
                if (strip) {
                    *line_starting = skip_ws(L, &p, line);
                } else if (trim && p < L->n && L->src[p] == '\n') {
                    p++;
                    (*line)++;
                    *line_starting = 1;
                }
                *pp = p;
                return 0;
            }
        }
        char c = L->src[p];
        if (is_alpha(c)) {
            size_t q = p + 1;
            while (q < L->n && (is_alpha(L->src[q]) || is_digit(L->src[q]))) q++;
            rc = push(L, SRV_CHAT__T_NAME, *line, L->src + p, q - p, 0);
            p = q;
        } else if (is_digit(c)) {
            rc = lex_number(L, &p, *line);
        } else if (c == '\'' || c == '"') {
            rc = lex_string(L, &p, line);
        } else {
            size_t len = 0;
            for (int k = 0; ops2[k]; k++)
                if (starts(L, p, ops2[k])) len = 2;
            if (!len && strchr(ops1, c)) len = 1;
            if (!len) return fail(L, LLM_EFORMAT, *line, "unexpected character in tag");
            if (len == 1 && (c == '(' || c == '[' || c == '{')) {
                if (depth == (int)sizeof stack)
                    return fail(L, LLM_EUNSUPPORTED, *line, "brackets nested too deeply");
                stack[depth++] = c == '(' ? ')' : c == '[' ? ']' : '}';
            } else if (len == 1 && (c == ')' || c == ']' || c == '}')) {
                if (depth == 0 || stack[depth - 1] != c)
                    return fail(L, LLM_EFORMAT, *line, "unbalanced bracket");
                depth--;
            }
            rc = push(L, SRV_CHAT__T_OP, *line, L->src + p, len, 0);
            p += len;
        }
        if (rc) return rc;
    }
}

/* `{%[-+]? raw [-]?%}` at the opener: returns the end position of the raw-begin tag, or 0. */
static size_t match_raw_begin(const lexer_t *L, size_t p, int *strip_after) {
    int line = 0;
    skip_ws(L, &p, &line);
    if (!starts(L, p, "raw")) return 0;
    p += 3;
    if (p < L->n && (is_alpha(L->src[p]) || is_digit(L->src[p]))) return 0;
    skip_ws(L, &p, &line);
    *strip_after = 0;
    if (starts(L, p, "-%}")) {
        *strip_after = 1;
        return p + 3;
    }
    return starts(L, p, "%}") ? p + 2 : 0;
}

/* Removes the whitespace before a tag from text [b, *e) as Jinja's OptionalLStrip does. */
static void strip_before(const lexer_t *L, size_t b, size_t *e, char mod, int lstrip_ok,
                         int line_starting) {
    size_t w;
    if (mod == '-') {
        while (*e > b && (w = srv_chat__ws_before(L->src, *e)) > 0 && *e - w >= b) *e -= w;
        return;
    }
    if (mod == '+' || !lstrip_ok) return;
    size_t l = *e;
    while (l > b && L->src[l - 1] != '\n') l--;
    if (l == b && !line_starting) return;
    if (l == *e) return; /* nothing between the line start and the tag */
    for (size_t i = l; i < *e; i += w)
        if ((w = srv_chat__ws_at(L->src, *e, i)) == 0) return;
    *e = l;
}

static int lex_raw(lexer_t *L, size_t *pp, int *line, int *line_starting) {
    size_t b = *pp;
    for (size_t q = b; q + 1 < L->n; q++) {
        if (L->src[q] != '{' || L->src[q + 1] != '%') continue;
        size_t p = q + 2;
        char mod = 0;
        if (p < L->n && (L->src[p] == '-' || L->src[p] == '+')) mod = L->src[p++];
        int tmp = 0;
        skip_ws(L, &p, &tmp);
        if (!starts(L, p, "endraw")) continue;
        p += 6;
        skip_ws(L, &p, &tmp);
        int strip = 0, trim = 0;
        if (starts(L, p, "+%}")) p += 3;
        else if (starts(L, p, "-%}")) p += 3, strip = 1;
        else if (starts(L, p, "%}")) p += 2, trim = 1;
        else continue;
        size_t e = q;
        strip_before(L, b, &e, mod, 1, *line_starting);
        int rc = e > b ? push(L, SRV_CHAT__T_TEXT, *line, L->src + b, e - b, 0) : 0;
        if (rc) return rc;
        *line += count_nl(L->src + b, p - b);
        *line_starting = 0;
        if (strip) {
            *line_starting = skip_ws(L, &p, line);
        } else if (trim && p < L->n && L->src[p] == '\n') {
            p++;
            (*line)++;
            *line_starting = 1;
        }
        *pp = p;
        return 0;
    }
    return fail(L, LLM_EFORMAT, *line, "missing end of raw directive");
}

/* ---- entry point ---- */

int srv_chat__lex(const char *src, size_t n, srv_chat__arena_t *a, srv_chat__tok_t **toks,
                  size_t *ntok, llm_error_t *err) {
    lexer_t L = {.a = a, .err = err};
    int rc = 0;

    /* Normalize newlines and drop one trailing \n (keep_trailing_newline=False). */
    char *norm = srv_chat__alloc(a, n + 1);
    if (!norm) return llm_err_set(err, LLM_ENOMEM, "chat template: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            norm[k++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else {
            norm[k++] = src[i];
        }
    }
    if (k > 0 && norm[k - 1] == '\n') k--;
    norm[k] = '\0';
    L.src = norm;
    L.n = k;

    size_t pos = 0;
    int line = 1, line_starting = 1;
    while (pos < L.n && rc == 0) {
        size_t q = pos;
        while (q + 1 < L.n &&
               !(L.src[q] == '{' && (L.src[q + 1] == '{' || L.src[q + 1] == '%' ||
                                     L.src[q + 1] == '#')))
            q++;
        if (q + 1 >= L.n) { /* no tag left */
            rc = push(&L, SRV_CHAT__T_TEXT, line, L.src + pos, L.n - pos, 0);
            break;
        }
        char kind = L.src[q + 1], mod = 0;
        size_t p = q + 2;
        if (p < L.n && (L.src[p] == '-' || L.src[p] == '+')) mod = L.src[p++];
        int raw_strip = 0;
        size_t raw_end = kind == '%' ? match_raw_begin(&L, p, &raw_strip) : 0;

        size_t e = q;
        strip_before(&L, pos, &e, mod, kind != '{', line_starting);
        if (e > pos) rc = push(&L, SRV_CHAT__T_TEXT, line, L.src + pos, e - pos, 0);
        if (rc) break;
        line += count_nl(L.src + pos, q - pos);

        if (raw_end) {
            line += count_nl(L.src + q, raw_end - q);
            p = raw_end;
            line_starting = raw_strip ? skip_ws(&L, &p, &line) : 0;
            rc = lex_raw(&L, &p, &line, &line_starting);
            pos = p;
        } else if (kind == '#') {
            size_t j = p;
            while (j + 1 < L.n && !(L.src[j] == '#' && L.src[j + 1] == '}')) j++;
            if (j + 1 >= L.n) {
                rc = fail(&L, LLM_EFORMAT, line, "missing end of comment tag");
                break;
            }
            char endmod = j > p ? L.src[j - 1] : 0;
            line += count_nl(L.src + p, j - p);
            p = j + 2;
            line_starting = 0;
            if (endmod == '-') {
                line_starting = skip_ws(&L, &p, &line);
            } else if (endmod != '+' && p < L.n && L.src[p] == '\n') {
                p++;
                line++;
                line_starting = 1;
            }
            pos = p;
        } else {
            rc = lex_tag(&L, kind, &p, &line, &line_starting);
            pos = p;
        }
    }
    if (rc == 0) rc = push(&L, SRV_CHAT__T_EOF, line, NULL, 0, 0);
    if (rc == 0) {
        *toks = srv_chat__alloc(a, L.nv * sizeof **toks);
        if (!*toks) rc = llm_err_set(err, LLM_ENOMEM, "chat template: out of memory");
        else memcpy(*toks, L.v, L.nv * sizeof **toks);
        *ntok = L.nv;
    }
    free(L.v);
    return rc;
}
