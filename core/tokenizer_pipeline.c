/* tokenizer_pipeline.c: parsing the "normalizer", "pre_tokenizer" and "post_processor" fields
 * of tokenizer.json into the step lists tokenizer_encode.c runs. Every type and key we do not
 * implement is refused with a message naming the file and the field. */
#include "tokenizer_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GPT-2's pre-tokenizer pattern, what HF's ByteLevel(use_regex=true) splits with. */
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* Rust's char::is_numeric (used by HF's Digits). */
static const char RE_DIGIT[] = "\\p{N}";

/* ---- normalizer and pre-tokenizer ---- */

int tok__norm_load(tok_tokenizer_t *tok, const cJSON *o, const char *where, llm_error_t *err) {
    const char *path = tok->path, *type;
    int rc = tok__json_type(path, o, where, &type, err);
    if (rc) return rc;
    if (strcmp(type, "Sequence") == 0) {
        static const char *const keys[] = {"type", "normalizers", NULL};
        if ((rc = tok__json_keys(path, o, where, keys, err))) return rc;
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "normalizers");
        if (!cJSON_IsArray(list))
            return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s.normalizers\" must be an array",
                               path, where);
        int i = 0;
        for (const cJSON *c = list->child; c; c = c->next, i++) {
            char sub[96];
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", where, i);
            if ((rc = tok__norm_load(tok, c, sub, err))) return rc;
        }
        return 0;
    }
    tok__norm_t *nn = realloc(tok->norm, ((size_t)tok->n_norm + 1) * sizeof *nn);
    if (!nn) return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", path);
    tok->norm = nn;
    tok__norm_t *n = memset(&nn[tok->n_norm], 0, sizeof *nn);
    if (strcmp(type, "Prepend") == 0) {
        static const char *const keys[] = {"type", "prepend", NULL};
        const char *s;
        if ((rc = tok__json_keys(path, o, where, keys, err)) ||
            (rc = tok__json_str(path, o, "prepend", where, &s, err)))
            return rc;
        if (!s) return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s.prepend\" is missing", path,
                                   where);
        n->type = TOK_NORM_PREPEND;
        n->a_len = strlen(s);
        if (!(n->a = tok__strndup(s, n->a_len)))
            return llm_err_set(err, LLM_ENOMEM, "out of memory");
    } else if (strcmp(type, "Replace") == 0) {
        static const char *const keys[] = {"type", "pattern", "content", NULL};
        static const char *const pkeys[] = {"String", "Regex", NULL};
        const char *content, *lit, *re;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        char pw[112];
        snprintf(pw, sizeof pw, "%s.pattern", where);
        if ((rc = tok__json_keys(path, o, where, keys, err)) ||
            (rc = tok__json_str(path, o, "content", where, &content, err)))
            return rc;
        if (!cJSON_IsObject(pat) || !content)
            return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s\" needs pattern and content",
                               path, where);
        if ((rc = tok__json_keys(path, pat, pw, pkeys, err)) ||
            (rc = tok__json_str(path, pat, "String", pw, &lit, err)) ||
            (rc = tok__json_str(path, pat, "Regex", pw, &re, err)))
            return rc;
        n->type = TOK_NORM_REPLACE;
        n->b_len = strlen(content);
        if (!(n->b = tok__strndup(content, n->b_len)))
            return llm_err_set(err, LLM_ENOMEM, "out of memory");
        if (lit && *lit) {
            n->a_len = strlen(lit);
            if (!(n->a = tok__strndup(lit, n->a_len)))
                return llm_err_set(err, LLM_ENOMEM, "out of memory");
        } else if (re && *re) {
            if ((rc = tok__compile_re(path, pw, re, strlen(re), &n->re, err))) return rc;
        } else {
            return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s\" is empty", path, pw);
        }
    } else if (strcmp(type, "Strip") == 0) {
        static const char *const keys[] = {"type", "strip_left", "strip_right", NULL};
        if ((rc = tok__json_keys(path, o, where, keys, err)) ||
            (rc = tok__json_bool(path, o, "strip_left", where, 1, &n->left, err)) ||
            (rc = tok__json_bool(path, o, "strip_right", where, 1, &n->right, err)))
            return rc;
        n->type = TOK_NORM_STRIP;
    } else if (strcmp(type, "NFC") == 0 || strcmp(type, "NFD") == 0) { /* Qwen2 has NFC */
        static const char *const keys[] = {"type", NULL};
        if ((rc = tok__json_keys(path, o, where, keys, err))) return rc;
        n->type = strcmp(type, "NFC") == 0 ? TOK_NORM_NFC : TOK_NORM_NFD;
    } else {
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: field \"%s.type\": normalizer \"%s\" is not supported (only "
                           "Sequence, Prepend, Replace, Strip, NFC, NFD)", path, where, type);
    }
    tok->n_norm++;
    return 0;
}

static int parse_behavior(const char *path, const cJSON *o, const char *where, int *out,
                          llm_error_t *err) {
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                        "MergedWithNext", "Contiguous"};
    const char *s;
    int rc = tok__json_str(path, o, "behavior", where, &s, err);
    if (rc) return rc;
    for (int i = 0; s && i < 5; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    return llm_err_set(err, LLM_EUNSUPPORTED, "%s: field \"%s.behavior\": \"%s\" is not supported",
                       path, where, s ? s : "(absent)");
}

int tok__pre_load(tok_tokenizer_t *tok, const cJSON *o, const char *where, llm_error_t *err) {
    const char *path = tok->path, *type;
    int rc = tok__json_type(path, o, where, &type, err);
    if (rc) return rc;
    if (strcmp(type, "Sequence") == 0) {
        static const char *const keys[] = {"type", "pretokenizers", NULL};
        if ((rc = tok__json_keys(path, o, where, keys, err))) return rc;
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers");
        if (!cJSON_IsArray(list))
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: field \"%s.pretokenizers\" must be an array", path, where);
        int i = 0;
        for (const cJSON *c = list->child; c; c = c->next, i++) {
            char sub[96];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", where, i);
            if ((rc = tok__pre_load(tok, c, sub, err))) return rc;
        }
        return 0;
    }
    tok__pre_t *pp = realloc(tok->pre, ((size_t)tok->n_pre + 1) * sizeof *pp);
    if (!pp) return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", path);
    tok->pre = pp;
    tok__pre_t *p = memset(&pp[tok->n_pre], 0, sizeof *pp);
    if (strcmp(type, "ByteLevel") == 0) {
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets",
                                           "use_regex", NULL};
        int use_regex, trim;
        if ((rc = tok__json_keys(path, o, where, keys, err)) ||
            (rc = tok__json_bool(path, o, "add_prefix_space", where, 1, &p->add_prefix_space,
                                 err)) ||
            (rc = tok__json_bool(path, o, "trim_offsets", where, 1, &trim, err)) ||
            (rc = tok__json_bool(path, o, "use_regex", where, 1, &use_regex, err)))
            return rc;
        p->type = TOK_PRE_BYTELEVEL;
        if (use_regex) {
            if (!tok->re_bytelevel &&
                (rc = tok__compile_re(path, where, RE_GPT2, sizeof RE_GPT2 - 1, &tok->re_bytelevel,
                                      err)))
                return rc;
            p->re = tok->re_bytelevel;
        }
    } else if (strcmp(type, "Split") == 0) {
        static const char *const keys[] = {"type", "pattern", "behavior", "invert", NULL};
        static const char *const pkeys[] = {"String", "Regex", NULL};
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        const char *lit, *re;
        char pw[112];
        snprintf(pw, sizeof pw, "%s.pattern", where);
        if ((rc = tok__json_keys(path, o, where, keys, err)) ||
            (rc = parse_behavior(path, o, where, &p->behavior, err)) ||
            (rc = tok__json_bool(path, o, "invert", where, 0, &p->invert, err)))
            return rc;
        if (!cJSON_IsObject(pat))
            return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s\" must be an object", path, pw);
        if ((rc = tok__json_keys(path, pat, pw, pkeys, err)) ||
            (rc = tok__json_str(path, pat, "String", pw, &lit, err)) ||
            (rc = tok__json_str(path, pat, "Regex", pw, &re, err)))
            return rc;
        p->type = TOK_PRE_SPLIT;
        if (lit && *lit) {
            p->lit_len = strlen(lit);
            if (!(p->lit = tok__strndup(lit, p->lit_len)))
                return llm_err_set(err, LLM_ENOMEM, "out of memory");
        } else if (re && *re) {
            if ((rc = tok__compile_re(path, pw, re, strlen(re), &p->re, err))) return rc;
            p->owns_re = 1;
        } else {
            return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s\" is empty", path, pw);
        }
    } else if (strcmp(type, "Digits") == 0) {
        static const char *const keys[] = {"type", "individual_digits", NULL};
        int ind;
        if ((rc = tok__json_keys(path, o, where, keys, err)) ||
            (rc = tok__json_bool(path, o, "individual_digits", where, 0, &ind, err)))
            return rc;
        if (!tok->re_digit &&
            (rc = tok__compile_re(path, where, RE_DIGIT, sizeof RE_DIGIT - 1, &tok->re_digit, err)))
            return rc;
        p->type = TOK_PRE_DIGITS;
        p->re = tok->re_digit;
        p->behavior = ind ? TOK_SPLIT_ISOLATED : TOK_SPLIT_CONTIGUOUS;
    } else if (strcmp(type, "Metaspace") == 0) {
        static const char *const keys[] = {"type", "replacement", "str_rep", "add_prefix_space",
                                           "prepend_scheme", "split", NULL};
        const char *repl, *scheme;
        int aps;
        if ((rc = tok__json_keys(path, o, where, keys, err)) ||
            (rc = tok__json_str(path, o, "replacement", where, &repl, err)) ||
            (rc = tok__json_str(path, o, "prepend_scheme", where, &scheme, err)) ||
            (rc = tok__json_bool(path, o, "add_prefix_space", where, 1, &aps, err)) ||
            (rc = tok__json_bool(path, o, "split", where, 1, &p->split, err)))
            return rc;
        if (!repl) repl = "\xe2\x96\x81";
        p->type = TOK_PRE_METASPACE;
        p->lit_len = strlen(repl);
        if (!(p->lit = tok__strndup(repl, p->lit_len)))
            return llm_err_set(err, LLM_ENOMEM, "out of memory");
        if (!scheme) p->prepend = aps ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
        else if (strcmp(scheme, "always") == 0) p->prepend = TOK_PREPEND_ALWAYS;
        else if (strcmp(scheme, "first") == 0) p->prepend = TOK_PREPEND_FIRST;
        else if (strcmp(scheme, "never") == 0) p->prepend = TOK_PREPEND_NEVER;
        else
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "%s: field \"%s.prepend_scheme\": \"%s\" is not supported", path,
                               where, scheme);
    } else {
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: field \"%s.type\": pre-tokenizer \"%s\" is not supported (only "
                           "Sequence, ByteLevel, Split, Digits, Metaspace)", path, where, type);
    }
    tok->n_pre++;
    return 0;
}

/* ---- post-processor ---- */

int tok__push_ids(int32_t **arr, int *n, const int32_t *ids, int k) {
    int32_t *a = realloc(*arr, ((size_t)*n + (size_t)k + 1) * sizeof *a);
    if (!a) return LLM_ENOMEM;
    memcpy(a + *n, ids, (size_t)k * sizeof *a);
    *arr = a;
    *n += k;
    return 0;
}

static int load_template(tok_tokenizer_t *tok, const cJSON *o, const char *where,
                         llm_error_t *err) {
    static const char *const keys[] = {"type", "single", "pair", "special_tokens", NULL};
    const char *path = tok->path;
    int rc = tok__json_keys(path, o, where, keys, err);
    if (rc) return rc;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
    if (!cJSON_IsArray(single) || (st && !cJSON_IsObject(st) && !cJSON_IsNull(st)))
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: field \"%s\" needs a \"single\" array and \"special_tokens\"",
                           path, where);
    int seen_a = 0, i = 0;
    for (const cJSON *it = single->child; it; it = it->next, i++) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        const cJSON *sq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        const cJSON *idj = cJSON_GetObjectItemCaseSensitive(sp ? sp : sq, "id");
        if (!cJSON_IsString(idj) || (sp && sq))
            return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s.single[%d]\" is malformed",
                               path, where, i);
        if (sq) {
            if (strcmp(idj->valuestring, "A") != 0 || seen_a)
                return llm_err_set(err, LLM_EUNSUPPORTED,
                                   "%s: field \"%s.single[%d]\": sequence \"%s\" is not "
                                   "supported (only one $A)", path, where, i, idj->valuestring);
            seen_a = 1;
            continue;
        }
        const cJSON *def = st ? cJSON_GetObjectItemCaseSensitive(st, idj->valuestring) : NULL;
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
        if (!cJSON_IsArray(ids))
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: field \"%s.special_tokens\" has no ids for \"%s\"", path,
                               where, idj->valuestring);
        for (const cJSON *x = ids->child; x; x = x->next) {
            if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble >= tok->n_vocab)
                return llm_err_set(err, LLM_EFORMAT,
                                   "%s: field \"%s.special_tokens.%s.ids\": id out of range",
                                   path, where, idj->valuestring);
            int32_t id = (int32_t)x->valuedouble;
            if (tok__push_ids(seen_a ? &tok->suffix : &tok->prefix,
                              seen_a ? &tok->n_suffix : &tok->n_prefix, &id, 1) != 0)
                return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", path);
        }
    }
    if (!seen_a)
        return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s.single\" has no $A sequence", path,
                           where);
    return 0;
}

int tok__post_load(tok_tokenizer_t *tok, const cJSON *o, const char *where, int *has_template,
                   llm_error_t *err) {
    const char *path = tok->path, *type;
    int rc = tok__json_type(path, o, where, &type, err);
    if (rc) return rc;
    if (strcmp(type, "Sequence") == 0) {
        static const char *const keys[] = {"type", "processors", NULL};
        if ((rc = tok__json_keys(path, o, where, keys, err))) return rc;
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "processors");
        if (!cJSON_IsArray(list))
            return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s.processors\" must be an array",
                               path, where);
        int i = 0;
        for (const cJSON *c = list->child; c; c = c->next, i++) {
            char sub[96];
            snprintf(sub, sizeof sub, "%s.processors[%d]", where, i);
            if ((rc = tok__post_load(tok, c, sub, has_template, err))) return rc;
        }
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) { /* only adjusts offsets; ids are unchanged */
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets",
                                           "use_regex", NULL};
        return tok__json_keys(path, o, where, keys, err);
    }
    if (strcmp(type, "TemplateProcessing") == 0) {
        if (*has_template)
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "%s: field \"%s\": more than one TemplateProcessing", path, where);
        *has_template = 1;
        return load_template(tok, o, where, err);
    }
    return llm_err_set(err, LLM_EUNSUPPORTED,
                       "%s: field \"%s.type\": post-processor \"%s\" is not supported (only "
                       "Sequence, ByteLevel, TemplateProcessing)", path, where, type);
}
