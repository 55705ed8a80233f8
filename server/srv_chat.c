/* srv_chat.c: chat templates, public API (see srv_chat.h): finding the template and the
 * special tokens of a model directory, parsing once, rendering per request.
 */
#include "srv_chat_int.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

struct srv_chat__blk_s {
    srv_chat__blk_t *next;
    size_t cap, used;
};

#define BLK_HDR ((sizeof(srv_chat__blk_t) + 15) & ~(size_t)15)
enum { BLK_MIN = 16 << 10, BLK_MAX = 1 << 20 };

void *srv_chat__alloc(srv_chat__arena_t *a, size_t n) {
    if (n > ((size_t)1 << 40)) return NULL;
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    srv_chat__blk_t *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = b ? b->cap * 2 : BLK_MIN;
        if (cap > BLK_MAX) cap = BLK_MAX;
        if (cap < n) cap = n;
        if (a->limit && a->used + BLK_HDR + cap > a->limit) {
            cap = n; /* try a block of just what is needed before giving up */
            if (a->used + BLK_HDR + cap > a->limit) {
                a->over = 1;
                return NULL;
            }
        }
        b = malloc(BLK_HDR + cap);
        if (!b) return NULL;
        b->next = a->head;
        b->cap = cap;
        b->used = 0;
        a->head = b;
        a->used += BLK_HDR + cap;
    }
    char *p = (char *)b + BLK_HDR + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

void srv_chat__arena_free(srv_chat__arena_t *a) {
    srv_chat__blk_t *b = a->head;
    while (b) {
        srv_chat__blk_t *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- UTF-8 / Python whitespace ---- */

uint32_t srv_chat__utf8_dec(const char *s, size_t n, size_t *len) {
    unsigned char c = (unsigned char)s[0];
    *len = 1;
    if (c < 0x80) return c;
    int k;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) k = 1, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) k = 2, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) k = 3, cp = c & 0x07;
    else return 0xFFFD;
    if ((size_t)k >= n) return 0xFFFD;
    for (int i = 1; i <= k; i++) {
        unsigned char d = (unsigned char)s[i];
        if ((d & 0xC0) != 0x80) return 0xFFFD;
        cp = (cp << 6) | (d & 0x3F);
    }
    *len = (size_t)k + 1;
    return cp;
}

/* Python's str.isspace() set (also what `\s` matches in Jinja's lexer). */
static int py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

size_t srv_chat__ws_at(const char *s, size_t n, size_t i) {
    if (i >= n) return 0;
    size_t len;
    uint32_t c = srv_chat__utf8_dec(s + i, n - i, &len);
    return py_space(c) ? len : 0;
}

size_t srv_chat__ws_before(const char *s, size_t i) {
    if (i == 0) return 0;
    size_t p = i - 1;
    while (p > 0 && i - p < 4 && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
    size_t len;
    uint32_t c = srv_chat__utf8_dec(s + p, i - p, &len);
    if (len != i - p) return py_space((unsigned char)s[i - 1]) ? 1 : 0;
    return py_space(c) ? len : 0;
}

/* ---- creating ---- */

const char *const srv_chat__tok_names[SRV_CHAT__NTOK] = {
    "bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token",
};

static const srv_chat_limits_t k_default_limits = {
    .max_output = 8u << 20,
    .max_memory = 128u << 20,
    .max_steps = 4u << 20,
};

/* ---- unknown filter and test names (after parsing) ---- */

/* Jinja rejects a filter or test name it does not know when compiling, except in a "soft"
 * frame: the test and the bodies of an if statement, and all of a conditional expression
 * (not nested for loops or set blocks, which get frames of their own). There the error is
 * raised only if the code runs, so a template may guard filters it is unsure of. */
static int check_stmts(llm_error_t *err, srv_chat__node_t *const *v, int n, int soft);

static int check_expr(llm_error_t *err, const srv_chat__node_t *e, int soft) {
    if (!e) return 0;
    if (e->kind == SRV_CHAT__E_COND) soft = 1;
    if ((e->kind == SRV_CHAT__E_FILTER || e->kind == SRV_CHAT__E_TEST) && e->op == 0 && !soft)
        return llm_err_set(err, LLM_EFORMAT, "chat template: no %s named '%s' at line %d",
                           e->kind == SRV_CHAT__E_FILTER ? "filter" : "test", e->s, e->line);
    const srv_chat__node_t *sub[4] = {e->a, e->b, e->c, e->d};
    int rc = 0;
    for (int k = 0; k < 4 && rc == 0; k++) rc = check_expr(err, sub[k], soft);
    for (int k = 0; k < e->nkids && rc == 0; k++) rc = check_expr(err, e->kids[k], soft);
    for (int k = 0; e->vals && k < e->nkids && rc == 0; k++) rc = check_expr(err, e->vals[k], soft);
    for (int k = 0; k < e->nkw && rc == 0; k++) rc = check_expr(err, e->kwv[k], soft);
    return rc;
}

static int check_stmts(llm_error_t *err, srv_chat__node_t *const *v, int n, int soft) {
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const srv_chat__node_t *s = v[i];
        switch (s->kind) {
        case SRV_CHAT__N_OUTPUT: rc = check_expr(err, s->a, soft); break;
        case SRV_CHAT__N_IF:
            if ((rc = check_expr(err, s->a, 1)) == 0 &&
                (rc = check_stmts(err, s->body, s->nbody, 1)) == 0)
                rc = check_stmts(err, s->orelse, s->norelse, 1);
            break;
        case SRV_CHAT__N_FOR:
            if ((rc = check_expr(err, s->a, soft)) == 0 && (rc = check_expr(err, s->b, 0)) == 0 &&
                (rc = check_stmts(err, s->body, s->nbody, 0)) == 0)
                rc = check_stmts(err, s->orelse, s->norelse, 0);
            break;
        case SRV_CHAT__N_SET: rc = check_expr(err, s->b, soft); break;
        case SRV_CHAT__N_SETBLOCK:
        case SRV_CHAT__N_SCOPE: rc = check_stmts(err, s->body, s->nbody, 0); break;
        default: break;
        }
    }
    return rc;
}

/* Parses tmpl[0..n) into a new object. err gets "chat template: ... at line N". */
static int chat_new(const char *tmpl, size_t n, srv_chat_t **out, llm_error_t *err) {
    srv_chat_t *c = calloc(1, sizeof *c);
    if (!c) return llm_err_set(err, LLM_ENOMEM, "chat template: out of memory");
    c->lim = k_default_limits;
    srv_chat__tok_t *toks;
    size_t ntok;
    int rc = srv_chat__lex(tmpl, n, &c->ar, &toks, &ntok, err);
    if (rc == 0) rc = srv_chat__parse(toks, ntok, &c->ar, &c->body, &c->nbody, err);
    if (rc == 0) rc = check_stmts(err, c->body, c->nbody, 0);
    if (rc) {
        srv_chat_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static int set_tok(srv_chat_t *c, int i, const char *s) {
    free(c->tok[i]);
    c->tok[i] = NULL;
    if (s && !(c->tok[i] = strdup(s))) return LLM_ENOMEM;
    return 0;
}

int srv_chat_from_string(const char *tmpl, const char *bos, const char *eos, srv_chat_t **out,
                         llm_error_t *err) {
    if (!out) return llm_err_set(err, LLM_EINVAL, "chat template: no output pointer");
    *out = NULL;
    if (!tmpl) return llm_err_set(err, LLM_EINVAL, "chat template: NULL template");
    srv_chat_t *c;
    int rc = chat_new(tmpl, strlen(tmpl), &c, err);
    if (rc) return rc;
    if (set_tok(c, 0, bos) || set_tok(c, 1, eos)) {
        srv_chat_free(c);
        return llm_err_set(err, LLM_ENOMEM, "chat template: out of memory");
    }
    *out = c;
    return 0;
}

void srv_chat_set_limits(srv_chat_t *c, const srv_chat_limits_t *lim) {
    if (!c || !lim) return;
    c->lim.max_output = lim->max_output ? lim->max_output : k_default_limits.max_output;
    c->lim.max_memory = lim->max_memory ? lim->max_memory : k_default_limits.max_memory;
    c->lim.max_steps = lim->max_steps ? lim->max_steps : k_default_limits.max_steps;
}

void srv_chat_free(srv_chat_t *c) {
    if (!c) return;
    srv_chat__arena_free(&c->ar);
    for (int i = 0; i < SRV_CHAT__NTOK; i++) free(c->tok[i]);
    for (int i = 0; i < c->n_extra_tok; i++) free(c->extra_tok[i]);
    free(c->extra_tok);
    free(c);
}

/* ---- loading from a model directory ---- */

/* Reads a whole file: 0, LLM_ENOTFOUND (absent; err untouched), or an error with err set. */
static int read_file(const char *path, char **out, size_t *len, llm_error_t *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT || errno == ENOTDIR) return LLM_ENOTFOUND;
        return llm_err_set(err, -errno, "%s: %s", path, strerror(errno));
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            if (cap >= ((size_t)256 << 20)) {
                free(buf);
                fclose(f);
                return llm_err_set(err, LLM_EFORMAT, "%s: file too large", path);
            }
            char *b2 = realloc(buf, cap * 2);
            if (!b2) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b2;
            cap *= 2;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", path);
    if (bad) {
        free(buf);
        return llm_err_set(err, LLM_EIO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return 0;
}

/* Reads and parses a JSON file: 0 and *out (NULL if absent), or an error. */
static int read_json(const char *path, cJSON **out, llm_error_t *err) {
    char *text;
    *out = NULL;
    int rc = read_file(path, &text, NULL, err);
    if (rc == LLM_ENOTFOUND) return 0;
    if (rc) return rc;
    *out = cJSON_Parse(text);
    free(text);
    if (!*out) return llm_err_set(err, LLM_EFORMAT, "%s: not valid JSON", path);
    return 0;
}

/* A special token: "<s>" or {"content": "<s>", ...}; NULL if absent/null/other. */
static const char *token_string(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

/* Takes the special tokens that j defines (j may be NULL). */
static int take_tokens(srv_chat_t *c, const cJSON *j) {
    if (!j) return 0;
    for (int i = 0; i < SRV_CHAT__NTOK; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, srv_chat__tok_names[i]);
        if (v && set_tok(c, i, token_string(v))) return LLM_ENOMEM;
    }
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(j, "additional_special_tokens");
    if (!cJSON_IsArray(extra)) return 0;
    for (int i = 0; i < c->n_extra_tok; i++) free(c->extra_tok[i]);
    free(c->extra_tok);
    c->extra_tok = NULL;
    c->n_extra_tok = 0;
    c->has_extra_tok = 1;
    int n = cJSON_GetArraySize(extra);
    if (n == 0) return 0;
    c->extra_tok = calloc((size_t)n, sizeof *c->extra_tok);
    if (!c->extra_tok) return LLM_ENOMEM;
    const cJSON *e;
    cJSON_ArrayForEach(e, extra) {
        const char *s = token_string(e);
        if (!s) continue;
        if (!(c->extra_tok[c->n_extra_tok] = strdup(s))) return LLM_ENOMEM;
        c->n_extra_tok++;
    }
    return 0;
}

/* tokenizer_config.json "chat_template": a string, or [{"name", "template"}] -> "default". */
static int template_from_config(const cJSON *cfg, const char *path, const char **tmpl,
                                llm_error_t *err) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    *tmpl = NULL;
    if (!t || cJSON_IsNull(t)) return 0;
    if (cJSON_IsString(t)) {
        *tmpl = t->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(t))
        return llm_err_set(err, LLM_EFORMAT, "%s: \"chat_template\" must be a string or a list",
                           path);
    const cJSON *e;
    cJSON_ArrayForEach(e, t) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *tt = cJSON_GetObjectItemCaseSensitive(e, "template");
        if (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0 &&
            cJSON_IsString(tt)) {
            *tmpl = tt->valuestring;
            return 0;
        }
    }
    return llm_err_set(err, LLM_ENOTFOUND, "%s: no \"default\" among the named chat templates",
                       path);
}

int srv_chat_load(const char *dir, srv_chat_t **out, llm_error_t *err) {
    if (!out) return llm_err_set(err, LLM_EINVAL, "srv_chat_load: no output pointer");
    *out = NULL;
    if (!dir) return llm_err_set(err, LLM_EINVAL, "srv_chat_load: no directory");
    size_t dl = strlen(dir);
    char *p_cfg = malloc(dl + 64), *p_jinja = malloc(dl + 64), *p_json = malloc(dl + 64),
         *p_map = malloc(dl + 64);
    cJSON *cfg = NULL, *tjson = NULL, *map = NULL;
    char *jinja = NULL;
    srv_chat_t *c = NULL;
    const char *tmpl = NULL, *src = NULL;
    size_t jlen = 0;
    int rc = 0;
    if (!p_cfg || !p_jinja || !p_json || !p_map) {
        rc = llm_err_set(err, LLM_ENOMEM, "%s: out of memory", dir);
        goto fail;
    }
    sprintf(p_cfg, "%s/tokenizer_config.json", dir);
    sprintf(p_jinja, "%s/chat_template.jinja", dir);
    sprintf(p_json, "%s/chat_template.json", dir);
    sprintf(p_map, "%s/special_tokens_map.json", dir);

    if ((rc = read_json(p_cfg, &cfg, err))) goto fail;
    /* transformers: a chat_template.jinja file takes priority over tokenizer_config.json */
    rc = read_file(p_jinja, &jinja, &jlen, err);
    if (rc == 0) {
        tmpl = jinja;
        src = p_jinja;
    } else if (rc != LLM_ENOTFOUND) {
        goto fail;
    }
    rc = 0;
    if (!tmpl && cfg) {
        if ((rc = template_from_config(cfg, p_cfg, &tmpl, err))) goto fail;
        src = p_cfg;
    }
    if (!tmpl) {
        if ((rc = read_json(p_json, &tjson, err))) goto fail;
        const cJSON *t = tjson ? cJSON_GetObjectItemCaseSensitive(tjson, "chat_template") : NULL;
        if (cJSON_IsString(t)) {
            tmpl = t->valuestring;
            src = p_json;
        }
    }
    if (!tmpl) {
        rc = llm_err_set(err, LLM_ENOTFOUND,
                         "%s: the model has no chat template (tokenizer_config.json, "
                         "chat_template.jinja, chat_template.json)", dir);
        goto fail;
    }
    if ((rc = chat_new(tmpl, tmpl == jinja ? jlen : strlen(tmpl), &c, err))) {
        if (err) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%.200s: %.300s", src, err->msg);
            memcpy(err->msg, msg, sizeof msg);
        }
        goto fail;
    }
    if ((rc = read_json(p_map, &map, err))) goto fail;
    if (take_tokens(c, cfg) || take_tokens(c, map)) { /* special_tokens_map.json wins */
        rc = llm_err_set(err, LLM_ENOMEM, "%s: out of memory", dir);
        goto fail;
    }
    *out = c;
    c = NULL;
fail:
    srv_chat_free(c);
    cJSON_Delete(cfg);
    cJSON_Delete(tjson);
    cJSON_Delete(map);
    free(jinja);
    free(p_cfg);
    free(p_jinja);
    free(p_json);
    free(p_map);
    return rc;
}

/* ---- rendering ---- */

int srv_chat_render(const srv_chat_t *c, const srv_chat_msg_t *msgs, int n,
                    int add_generation_prompt, char **text, llm_error_t *err) {
    if (text) *text = NULL;
    if (!c || !text || n < 0 || (n > 0 && !msgs))
        return llm_err_set(err, LLM_EINVAL, "chat template: invalid arguments");
    for (int i = 0; i < n; i++)
        if (!msgs[i].role)
            return llm_err_set(err, LLM_EINVAL, "chat template: message %d has no role", i);
    llm_err_clear(err);
    return srv_chat__eval(c, msgs, n, add_generation_prompt, text, err);
}
