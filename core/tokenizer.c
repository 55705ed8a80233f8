/* tokenizer.c: loading HuggingFace tokenizer.json (+ tokenizer_config.json and
 * special_tokens_map.json) into an immutable tok_tokenizer_t, and the small accessors.
 *
 * Every field we read is checked for its type, and every object we understand is checked for
 * unknown keys: a tokenizer.json feature we do not implement is refused here with a message
 * naming the file and the field, instead of giving different token ids than HF at run time.
 * Two top-level fields are accepted but not applied: "truncation" and "padding" are batch
 * policies (the server limits prompt length against the model context itself), they never
 * change which ids a text maps to.
 */
#include "tokenizer_int.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* Rust regex's \w (used by HF for single_word): alphabetic, marks, digits, connectors. */
static const char RE_WORD[] = "[\\p{L}\\p{M}\\p{N}\\p{Pc}\\x{200C}\\x{200D}]";

/* ---- file and JSON helpers ---- */

static char *read_file(const char *path, size_t *len, llm_error_t *err, int *rc) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        *rc = llm_err_set(err, -e, "%s: cannot open: %s", path, strerror(e));
        return NULL;
    }
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        *rc = llm_err_set(err, LLM_EIO, "%s: cannot read (not a regular file?)", path);
        return NULL;
    }
    buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        *rc = llm_err_set(err, LLM_ENOMEM, "%s: out of memory reading %ld bytes", path, n);
        return NULL;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        *rc = llm_err_set(err, LLM_EIO, "%s: short read", path);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

/* Parses a whole JSON file; on failure names the byte offset where parsing stopped. */
static cJSON *parse_json_file(const char *path, llm_error_t *err, int *rc) {
    size_t len = 0;
    char *buf = read_file(path, &len, err, rc);
    if (!buf) return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(buf, &end, 1);
    if (!j) {
        size_t off = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : len;
        *rc = llm_err_set(err, LLM_EFORMAT, "%s: malformed JSON near byte %zu of %zu", path, off,
                          len);
    }
    free(buf);
    return j;
}

/* ---- model: vocab and merges ---- */

static int load_vocab(tok_tokenizer_t *tok, const cJSON *vocab, int32_t *max_id,
                      llm_error_t *err) {
    const char *path = tok->path;
    if (!cJSON_IsObject(vocab))
        return llm_err_set(err, LLM_EFORMAT, "%s: field \"model.vocab\" must be an object", path);
    size_t n = 0, bytes = 0;
    *max_id = -1;
    for (const cJSON *c = vocab->child; c; c = c->next) {
        double d = c->valuedouble;
        if (!cJSON_IsNumber(c) || d < 0 || d >= TOK_MAX_ID || d != (double)(int32_t)d)
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: field \"model.vocab\": id of \"%s\" is not an integer in "
                               "[0, %d)", path, c->string, TOK_MAX_ID);
        if ((int32_t)d > *max_id) *max_id = (int32_t)d;
        bytes += strlen(c->string) + 1;
        n++;
    }
    tok->vocab_arena = malloc(bytes ? bytes : 1);
    if (!tok->vocab_arena || tok__smap_init(&tok->vocab, n) != 0)
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory for the vocabulary", path);
    char *p = tok->vocab_arena;
    for (const cJSON *c = vocab->child; c; c = c->next) {
        size_t l = strlen(c->string);
        memcpy(p, c->string, l + 1);
        if (tok__smap_put(&tok->vocab, p, l, (int32_t)c->valuedouble) != 0)
            return llm_err_set(err, LLM_ENOMEM, "%s: out of memory for the vocabulary", path);
        p += l + 1;
    }
    return 0;
}

static int32_t vocab_id(const tok_tokenizer_t *tok, const char *s, size_t n) {
    return tok__smap_get(&tok->vocab, s, n);
}

static int load_merges(tok_tokenizer_t *tok, const cJSON *merges, llm_error_t *err) {
    const char *path = tok->path;
    if (!merges || cJSON_IsNull(merges)) merges = NULL;
    else if (!cJSON_IsArray(merges))
        return llm_err_set(err, LLM_EFORMAT, "%s: field \"model.merges\" must be an array", path);
    int n = merges ? cJSON_GetArraySize(merges) : 0;
    if (tok__pmap_init(&tok->merges, (size_t)n) != 0)
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory for the merges", path);
    tok__buf_t cat = {0};
    int rank = 0, rc = 0;
    for (const cJSON *m = merges ? merges->child : NULL; m; m = m->next, rank++) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(m)) { /* "a b": exactly one space, as HF requires */
            a = m->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                rc = llm_err_set(err, LLM_EFORMAT,
                                 "%s: field \"model.merges[%d]\": \"%s\" is not \"a b\"", path,
                                 rank, a);
                break;
            }
            la = (size_t)(sp - a);
            b = sp + 1;
            lb = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 &&
                   cJSON_IsString(m->child) && cJSON_IsString(m->child->next)) {
            a = m->child->valuestring;
            b = m->child->next->valuestring;
            la = strlen(a);
            lb = strlen(b);
        } else {
            rc = llm_err_set(err, LLM_EFORMAT,
                             "%s: field \"model.merges[%d]\" must be \"a b\" or [\"a\", \"b\"]",
                             path, rank);
            break;
        }
        int32_t ia = vocab_id(tok, a, la), ib = vocab_id(tok, b, lb);
        cat.len = 0;
        if (tok__buf_put(&cat, a, la) || tok__buf_put(&cat, b, lb)) {
            rc = llm_err_set(err, LLM_ENOMEM, "%s: out of memory for the merges", path);
            break;
        }
        int32_t inew = vocab_id(tok, cat.p, cat.len);
        if (ia < 0 || ib < 0 || inew < 0) {
            rc = llm_err_set(err, LLM_EFORMAT,
                             "%s: field \"model.merges[%d]\": \"%s\" is not in model.vocab",
                             path, rank, ia < 0 ? a : ib < 0 ? b : cat.p);
            break;
        }
        if (tok__pmap_put(&tok->merges, ia, ib, rank, inew) != 0) {
            rc = llm_err_set(err, LLM_ENOMEM, "%s: out of memory for the merges", path);
            break;
        }
    }
    tok__buf_free(&cat);
    return rc;
}

static int load_model(tok_tokenizer_t *tok, const cJSON *model, int32_t *max_id,
                      llm_error_t *err) {
    static const char *const keys[] = {"type", "dropout", "unk_token",
                                       "continuing_subword_prefix", "end_of_word_suffix",
                                       "fuse_unk", "byte_fallback", "ignore_merges", "vocab",
                                       "merges", NULL};
    const char *path = tok->path, *type = NULL, *s;
    if (!cJSON_IsObject(model))
        return llm_err_set(err, LLM_EFORMAT, "%s: field \"model\" is missing or not an object",
                           path);
    int rc = tok__json_str(path, model, "type", "model", &type, err);
    if (rc) return rc;
    /* HF guesses the model from its fields when "type" is absent; vocab + merges means BPE. */
    if (type ? strcmp(type, "BPE") != 0 : !cJSON_GetObjectItemCaseSensitive(model, "merges"))
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: field \"model.type\": \"%s\" is not supported (only \"BPE\")",
                           path, type ? type : "(absent)");
    if ((rc = tok__json_keys(path, model, "model", keys, err))) return rc;
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dr && !cJSON_IsNull(dr) && !(cJSON_IsNumber(dr) && dr->valuedouble == 0.0))
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: field \"model.dropout\": BPE dropout is not supported", path);
    if ((rc = tok__json_str(path, model, "continuing_subword_prefix", "model", &s, err))) return rc;
    if (s && *s)
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: field \"model.continuing_subword_prefix\" \"%s\" is not supported",
                           path, s);
    if ((rc = tok__json_str(path, model, "end_of_word_suffix", "model", &s, err))) return rc;
    if (s && *s)
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: field \"model.end_of_word_suffix\" \"%s\" is not supported", path,
                           s);
    if ((rc = tok__json_bool(path, model, "fuse_unk", "model", 0, &tok->fuse_unk, err)) ||
        (rc = tok__json_bool(path, model, "byte_fallback", "model", 0, &tok->byte_fallback, err)) ||
        (rc = tok__json_bool(path, model, "ignore_merges", "model", 0, &tok->ignore_merges, err)))
        return rc;
    if ((rc = load_vocab(tok, cJSON_GetObjectItemCaseSensitive(model, "vocab"), max_id, err)))
        return rc;
    if ((rc = load_merges(tok, cJSON_GetObjectItemCaseSensitive(model, "merges"), err)))
        return rc;
    tok->unk_id = -1;
    if ((rc = tok__json_str(path, model, "unk_token", "model", &s, err))) return rc;
    if (s && (tok->unk_id = vocab_id(tok, s, strlen(s))) < 0)
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: field \"model.unk_token\": \"%s\" is not in model.vocab", path, s);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        tok->byte_id[b] = tok->byte_fallback ? vocab_id(tok, name, 6) : -1;
    }
    return 0;
}

/* ---- added tokens ---- */

static int load_added(tok_tokenizer_t *tok, const cJSON *arr, int32_t *max_id,
                      llm_error_t *err) {
    static const char *const keys[] = {"id", "content", "single_word", "lstrip", "rstrip",
                                       "normalized", "special", NULL};
    const char *path = tok->path;
    if (!arr || cJSON_IsNull(arr)) return tok__smap_init(&tok->added_map, 0);
    if (!cJSON_IsArray(arr))
        return llm_err_set(err, LLM_EFORMAT, "%s: field \"added_tokens\" must be an array", path);
    int n = cJSON_GetArraySize(arr), rc;
    tok->added = calloc((size_t)n + 1, sizeof *tok->added);
    if (!tok->added || tok__smap_init(&tok->added_map, (size_t)n) != 0)
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory for added_tokens", path);
    int i = 0;
    for (const cJSON *t = arr->child; t; t = t->next, i++) {
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%d]", i);
        if (!cJSON_IsObject(t))
            return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s\" must be an object", path,
                               where);
        if ((rc = tok__json_keys(path, t, where, keys, err))) return rc;
        tok__added_t *a = &tok->added[i];
        const char *content;
        int id = -1, sw = 0, ls = 0, rs = 0, nz = 1, sp = 0;
        if ((rc = tok__json_str(path, t, "content", where, &content, err)) ||
            (rc = tok__json_int(path, t, "id", where, -1, &id, err)) ||
            (rc = tok__json_bool(path, t, "single_word", where, 0, &sw, err)) ||
            (rc = tok__json_bool(path, t, "lstrip", where, 0, &ls, err)) ||
            (rc = tok__json_bool(path, t, "rstrip", where, 0, &rs, err)) ||
            (rc = tok__json_bool(path, t, "normalized", where, 1, &nz, err)) ||
            (rc = tok__json_bool(path, t, "special", where, 0, &sp, err)))
            return rc;
        if (!content || !*content || id < 0 || id >= TOK_MAX_ID)
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: field \"%s\" needs a non-empty \"content\" and an \"id\"",
                               path, where);
        a->len = strlen(content);
        if (!(a->content = tok__strndup(content, a->len)))
            return llm_err_set(err, LLM_ENOMEM, "%s: out of memory for added_tokens", path);
        tok->n_added = i + 1;
        a->id = id;
        a->single_word = (unsigned char)sw;
        a->lstrip = (unsigned char)ls;
        a->rstrip = (unsigned char)rs;
        a->normalized = (unsigned char)nz;
        a->special = (unsigned char)sp;
        if (tok__smap_put(&tok->added_map, a->content, a->len, i) != 0)
            return llm_err_set(err, LLM_ENOMEM, "%s: out of memory for added_tokens", path);
        if (id > *max_id) *max_id = id;
    }
    return 0;
}

static int cmp_by_pattern(const void *x, const void *y, void *ctx) {
    const tok__added_t *ad = ctx;
    const tok__added_t *a = &ad[*(const int *)x], *b = &ad[*(const int *)y];
    unsigned char fa = (unsigned char)a->pattern[0], fb = (unsigned char)b->pattern[0];
    if (fa != fb) return fa < fb ? -1 : 1;
    if (a->pat_len != b->pat_len) return a->pat_len > b->pat_len ? -1 : 1; /* longest first */
    return *(const int *)x - *(const int *)y;
}

/* Builds the two matching sets; normalized tokens are matched by their normalized form, as
 * HF does (so under a Prepend("▁") normalizer their pattern gains the "▁"). */
static int build_added_sets(tok_tokenizer_t *tok, llm_error_t *err) {
    tok__buf_t nb = {0};
    for (int i = 0; i < tok->n_added; i++) {
        tok__added_t *a = &tok->added[i];
        if (a->normalized && tok->n_norm) {
            if (tok__normalize(tok, a->content, a->len, &nb) != 0 ||
                !(a->pattern = tok__strndup(nb.p ? nb.p : "", nb.len))) {
                tok__buf_free(&nb);
                return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", tok->path);
            }
            a->pat_len = nb.len;
        } else {
            a->pattern = a->content;
            a->pat_len = a->len;
        }
    }
    tok__buf_free(&nb);
    for (int s = 0; s < 2; s++) {
        tok__aset_t *set = s ? &tok->aset_norm : &tok->aset_raw;
        int n = 0;
        set->order = malloc(((size_t)tok->n_added + 1) * sizeof *set->order);
        if (!set->order) return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", tok->path);
        for (int i = 0; i < tok->n_added; i++)
            if (tok->added[i].normalized == s && tok->added[i].pat_len > 0) set->order[n++] = i;
        qsort_r(set->order, (size_t)n, sizeof *set->order, cmp_by_pattern, tok->added);
        int k = 0;
        for (int b = 0; b <= 256; b++) {
            set->first[b] = k;
            while (b < 256 && k < n && (unsigned char)tok->added[set->order[k]].pattern[0] == b)
                k++;
        }
    }
    return 0;
}

/* ---- tokenizer_config.json / special_tokens_map.json ---- */

typedef struct cfg_s {
    int add_bos, add_eos; /* -1: not given */
    char *bos, *eos;      /* NULL: not given; "" when given as null */
} cfg_t;

/* bos_token / eos_token: a string, an {"content": ...} object or null. */
static int cfg_token(const char *path, const cJSON *root, const char *key, char **out,
                     llm_error_t *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v) return 0;
    const char *s = "";
    if (cJSON_IsString(v)) s = v->valuestring;
    else if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (!cJSON_IsString(c))
            return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s.content\" must be a string",
                               path, key);
        s = c->valuestring;
    } else if (!cJSON_IsNull(v)) {
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: field \"%s\" must be a string, an object or null", path, key);
    }
    free(*out);
    if (!(*out = tok__strndup(s, strlen(s)))) return llm_err_set(err, LLM_ENOMEM, "out of memory");
    return 0;
}

static int load_cfg(const char *path, cfg_t *cfg, int with_flags, llm_error_t *err) {
    int rc = 0;
    cJSON *root = parse_json_file(path, err, &rc);
    if (!root) return rc;
    if (!cJSON_IsObject(root)) {
        rc = llm_err_set(err, LLM_EFORMAT, "%s: top level must be an object", path);
    } else if (!(rc = cfg_token(path, root, "bos_token", &cfg->bos, err)) &&
               !(rc = cfg_token(path, root, "eos_token", &cfg->eos, err)) && with_flags) {
        int b, e;
        if (!(rc = tok__json_bool(path, root, "add_bos_token", "(top)", -1, &b, err)) &&
            !(rc = tok__json_bool(path, root, "add_eos_token", "(top)", -1, &e, err))) {
            cfg->add_bos = b;
            cfg->add_eos = e;
        }
    }
    cJSON_Delete(root);
    return rc;
}

/* ---- load ---- */

static int build_pieces(tok_tokenizer_t *tok, llm_error_t *err) {
    size_t n = (size_t)tok->n_vocab;
    tok->piece = calloc(n + 1, sizeof *tok->piece);
    tok->piece_len = calloc(n + 1, sizeof *tok->piece_len);
    tok->special = calloc(n + 1, 1);
    if (!tok->piece || !tok->piece_len || !tok->special)
        return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", tok->path);
    for (size_t i = 0; i < tok->vocab.cap; i++) {
        const tok__sentry_t *e = &tok->vocab.e[i];
        if (!e->key) continue;
        if (tok->piece[e->val] && tok->piece[e->val] != e->key)
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: field \"model.vocab\": id %d is given to \"%s\" and \"%s\"",
                               tok->path, e->val, tok->piece[e->val], e->key);
        tok->piece[e->val] = e->key;
        tok->piece_len[e->val] = e->len;
    }
    for (int i = 0; i < tok->n_added; i++) { /* HF's id_to_token prefers the added content */
        const tok__added_t *a = &tok->added[i];
        tok->piece[a->id] = a->content;
        tok->piece_len[a->id] = (uint32_t)a->len;
        if (a->special) tok->special[a->id] = 1;
    }
    return 0;
}

static int32_t resolve(const tok_tokenizer_t *tok, const char *s) {
    return s && *s ? tok_piece_id(tok, s) : -1;
}

static int finish_special(tok_tokenizer_t *tok, const cfg_t *cfg, int has_template,
                          const char *cfg_path, llm_error_t *err) {
    tok->bos_id = resolve(tok, cfg->bos);
    tok->eos_id = resolve(tok, cfg->eos);
    if ((cfg->bos && *cfg->bos && tok->bos_id < 0) || (cfg->eos && *cfg->eos && tok->eos_id < 0))
        return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s\": \"%s\" is not a known token",
                           cfg_path ? cfg_path : tok->path,
                           tok->bos_id < 0 && cfg->bos && *cfg->bos ? "bos_token" : "eos_token",
                           tok->bos_id < 0 && cfg->bos && *cfg->bos ? cfg->bos : cfg->eos);
    /* Without a config, the template's leading/trailing special tokens name BOS/EOS. */
    if (!cfg->bos && tok->n_prefix) tok->bos_id = tok->prefix[0];
    if (!cfg->eos && tok->n_suffix) tok->eos_id = tok->suffix[tok->n_suffix - 1];
    if (has_template) return 0; /* the template decides what add_special adds */
    if (cfg->add_bos == 1 && tok->bos_id >= 0 &&
        tok__push_ids(&tok->prefix, &tok->n_prefix, &tok->bos_id, 1) != 0)
        return llm_err_set(err, LLM_ENOMEM, "out of memory");
    if (cfg->add_eos == 1 && tok->eos_id >= 0 &&
        tok__push_ids(&tok->suffix, &tok->n_suffix, &tok->eos_id, 1) != 0)
        return llm_err_set(err, LLM_ENOMEM, "out of memory");
    return 0;
}

int tok_load_files(const char *tokenizer_json_path, const char *config_path,
                   const char *special_map_path, tok_tokenizer_t **out, llm_error_t *err) {
    static const char *const keys[] = {"version", "truncation", "padding", "added_tokens",
                                       "normalizer", "pre_tokenizer", "post_processor",
                                       "decoder", "model", NULL};
    llm_err_clear(err);
    if (!tokenizer_json_path || !out)
        return llm_err_set(err, LLM_EINVAL, "tok_load_files: NULL argument");
    *out = NULL;
    int rc = 0, has_template = 0;
    cfg_t cfg = {-1, -1, NULL, NULL};
    cJSON *root = NULL;
    tok_tokenizer_t *tok = calloc(1, sizeof *tok);
    if (!tok || !(tok->path = tok__strndup(tokenizer_json_path, strlen(tokenizer_json_path)))) {
        rc = llm_err_set(err, LLM_ENOMEM, "%s: out of memory", tokenizer_json_path);
        goto fail;
    }
    uint32_t fwd[256];
    int16_t rev[TOK_BL_NCP];
    tok__bytelevel_tables(fwd, rev);
    for (int b = 0; b < 256; b++)
        tok->bl_len[b] = (unsigned char)tok__utf8_encode(fwd[b], tok->bl_str[b]);

    if (!(root = parse_json_file(tok->path, err, &rc))) goto fail;
    if (!cJSON_IsObject(root)) {
        rc = llm_err_set(err, LLM_EFORMAT, "%s: top level must be an object", tok->path);
        goto fail;
    }
    if ((rc = tok__json_keys(tok->path, root, "(top)", keys, err))) goto fail;
    int32_t max_model = -1, max_added = -1;
    if ((rc = load_model(tok, cJSON_GetObjectItemCaseSensitive(root, "model"), &max_model, err)))
        goto fail;
    if ((rc = load_added(tok, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), &max_added,
                         err)))
        goto fail;
    tok->n_vocab = (max_model > max_added ? max_model : max_added) + 1;
    if ((rc = build_pieces(tok, err))) goto fail;

    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (x && !cJSON_IsNull(x) && (rc = tok__norm_load(tok, x, "normalizer", err))) goto fail;
    x = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (x && !cJSON_IsNull(x) && (rc = tok__pre_load(tok, x, "pre_tokenizer", err))) goto fail;
    if ((rc = build_added_sets(tok, err))) goto fail;
    for (int i = 0; i < tok->n_added && !tok->re_word; i++)
        if (tok->added[i].single_word &&
            (rc = tok__compile_re(tok->path, "added_tokens", RE_WORD, sizeof RE_WORD - 1,
                                  &tok->re_word, err)))
            goto fail;
    x = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (x && !cJSON_IsNull(x) &&
        (rc = tok__post_load(tok, x, "post_processor", &has_template, err)))
        goto fail;
    if ((rc = tok__decoder_load(tok, cJSON_GetObjectItemCaseSensitive(root, "decoder"), err)))
        goto fail;
    cJSON_Delete(root);
    root = NULL;

    /* special_tokens_map.json is read last: in transformers its values override the config's. */
    if (config_path && (rc = load_cfg(config_path, &cfg, 1, err))) goto fail;
    if (special_map_path && (rc = load_cfg(special_map_path, &cfg, 0, err))) goto fail;
    if ((rc = finish_special(tok, &cfg, has_template, config_path, err))) goto fail;
    free(cfg.bos);
    free(cfg.eos);
    *out = tok;
    return 0;

fail:
    cJSON_Delete(root);
    free(cfg.bos);
    free(cfg.eos);
    tok_free(tok);
    return rc ? rc : LLM_EFORMAT;
}

int tok_load(const char *dir, tok_tokenizer_t **out, llm_error_t *err) {
    if (!dir || !out) return llm_err_set(err, LLM_EINVAL, "tok_load: NULL argument");
    size_t n = strlen(dir) + 32;
    char *tj = malloc(n), *cf = malloc(n), *sm = malloc(n);
    int rc;
    if (!tj || !cf || !sm) {
        rc = llm_err_set(err, LLM_ENOMEM, "%s: out of memory", dir);
    } else {
        snprintf(tj, n, "%s/tokenizer.json", dir);
        snprintf(cf, n, "%s/tokenizer_config.json", dir);
        snprintf(sm, n, "%s/special_tokens_map.json", dir);
        rc = tok_load_files(tj, access(cf, F_OK) == 0 ? cf : NULL,
                            access(sm, F_OK) == 0 ? sm : NULL, out, err);
    }
    free(tj);
    free(cf);
    free(sm);
    return rc;
}

void tok_free(tok_tokenizer_t *tok) {
    if (!tok) return;
    for (int i = 0; i < tok->n_norm; i++) {
        free(tok->norm[i].a);
        free(tok->norm[i].b);
        pcre2_code_free(tok->norm[i].re);
    }
    free(tok->norm);
    for (int i = 0; i < tok->n_pre; i++) {
        free(tok->pre[i].lit);
        if (tok->pre[i].owns_re) pcre2_code_free(tok->pre[i].re);
    }
    free(tok->pre);
    pcre2_code_free(tok->re_bytelevel);
    pcre2_code_free(tok->re_word);
    pcre2_code_free(tok->re_digit);
    for (int i = 0; i < tok->n_added; i++) {
        if (tok->added[i].pattern != tok->added[i].content) free(tok->added[i].pattern);
        free(tok->added[i].content);
    }
    free(tok->added);
    free(tok->aset_raw.order);
    free(tok->aset_norm.order);
    tok__smap_deinit(&tok->added_map);
    tok__smap_deinit(&tok->vocab);
    tok__pmap_deinit(&tok->merges);
    free(tok->vocab_arena);
    free(tok->piece);
    free(tok->piece_len);
    free(tok->special);
    free(tok->prefix);
    free(tok->suffix);
    free(tok->dec_arena);
    free(tok->dec_off);
    free(tok->dec_len);
    free(tok->dec_byte);
    free(tok->path);
    free(tok);
}

/* ---- accessors ---- */

int tok_vocab_size(const tok_tokenizer_t *tok) { return tok ? tok->n_vocab : 0; }
int32_t tok_bos_id(const tok_tokenizer_t *tok) { return tok ? tok->bos_id : -1; }
int32_t tok_eos_id(const tok_tokenizer_t *tok) { return tok ? tok->eos_id : -1; }

int tok_is_special(const tok_tokenizer_t *tok, int32_t id) {
    return tok && id >= 0 && id < tok->n_vocab && tok->special[id];
}

const char *tok_piece(const tok_tokenizer_t *tok, int32_t id) {
    return tok && id >= 0 && id < tok->n_vocab ? tok->piece[id] : NULL;
}

int32_t tok_piece_id(const tok_tokenizer_t *tok, const char *piece) {
    if (!tok || !piece) return -1;
    size_t n = strlen(piece);
    int32_t i = tok__smap_get(&tok->added_map, piece, n);
    if (i >= 0) return tok->added[i].id;
    return tok__smap_get(&tok->vocab, piece, n);
}

size_t tok_max_piece_bytes(const tok_tokenizer_t *tok) { return tok ? tok->max_piece : 0; }
