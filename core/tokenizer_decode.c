/* tokenizer_decode.c: ids -> text, as HF's decode(ids, skip_special_tokens), whole or streamed.
 *
 * HF runs a decoder chain over the list of token strings. The chains we accept have the shape
 *   [per-token steps: Replace, Strip, Metaspace] [ByteFallback | ByteLevel] [Fuse] [Strip(start)]
 * which lets us precompute every token's string at load time and decode with one small state
 * machine that assembles UTF-8 byte by byte. Streaming and whole decoding share that machine,
 * so tok_stream_* output always equals tok_decode().
 *
 * Invalid UTF-8 (only possible from byte tokens): ByteLevel follows Rust's from_utf8_lossy (one
 * U+FFFD per maximal invalid subpart), as HF does. ByteFallback gives one U+FFFD per byte token
 * of an incomplete sequence, as HF does; HF would also turn the *valid* characters of a run of
 * byte tokens that contains an invalid byte into U+FFFD, which a streaming decoder cannot know
 * in advance: there we emit the valid characters and replace only the invalid bytes.
 */
#include "tokenizer_int.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */

/* ---- loading the decoder chain ---- */

enum { STEP_REPLACE, STEP_STRIP, STEP_METASPACE };

typedef struct step_s {
    int type;
    const char *a, *b; /* Replace: pattern, content (borrowed from the JSON tree) */
    size_t la, lb;
    char ch[8];        /* Strip / Metaspace: the character */
    int lch, start, stop;
} step_t;

typedef struct chain_s {
    step_t steps[16];
    int n;
    int phase; /* 0: per-token; 1: after ByteFallback; 2: joined (Fuse or ByteLevel) */
} chain_t;

static int one_char(const char *s, char out[8], int *len) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 4 || tok__utf8_valid_prefix(s, n) != n) return -1;
    int cl;
    tok__utf8_decode(s, n, &cl);
    if ((size_t)cl != n) return -1;
    memcpy(out, s, n);
    *len = (int)n;
    return 0;
}

static int dec_step(tok_tokenizer_t *tok, chain_t *ch, const cJSON *o, const char *where,
                    llm_error_t *err) {
    const char *path = tok->path;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (!cJSON_IsObject(o) || !cJSON_IsString(t))
        return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s\" must be an object with a type",
                           path, where);
    const char *type = t->valuestring;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "decoders");
        if (!cJSON_IsArray(list) || cJSON_GetArraySize(o) != 2)
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: field \"%s\" must be {type, decoders: [...]}", path, where);
        int i = 0, rc;
        for (const cJSON *c = list->child; c; c = c->next, i++) {
            char sub[96];
            snprintf(sub, sizeof sub, "%s.decoders[%d]", where, i);
            if ((rc = dec_step(tok, ch, c, sub, err))) return rc;
        }
        return 0;
    }
    /* Unknown keys are refused, as in the rest of tokenizer.json. */
    static const char *const ok_keys[] = {"type", "pattern", "content", "start", "stop",
                                          "add_prefix_space", "trim_offsets", "use_regex",
                                          "replacement", "prepend_scheme", "split", "str_rep",
                                          NULL};
    for (const cJSON *c = o->child; c; c = c->next) {
        int ok = 0;
        for (const char *const *k = ok_keys; *k && !ok; k++) ok = strcmp(*k, c->string) == 0;
        if (!ok)
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "%s: field \"%s.%s\" is not supported by this tokenizer", path,
                               where, c->string);
    }
    if (ch->n == 16)
        return llm_err_set(err, LLM_EUNSUPPORTED, "%s: field \"%s\": too many decoder steps",
                           path, where);
    step_t *s = memset(&ch->steps[ch->n], 0, sizeof *s);
    if (strcmp(type, "Replace") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        const cJSON *lit = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *con = cJSON_GetObjectItemCaseSensitive(o, "content");
        if (!cJSON_IsString(lit) || !*lit->valuestring || !cJSON_IsString(con))
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "%s: field \"%s.pattern\": only a non-empty String pattern is "
                               "supported", path, where);
        if (ch->phase != 0)
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "%s: field \"%s\": Replace after ByteFallback/Fuse/ByteLevel is "
                               "not supported", path, where);
        s->type = STEP_REPLACE;
        s->a = lit->valuestring;
        s->la = strlen(s->a);
        s->b = con->valuestring;
        s->lb = strlen(s->b);
        ch->n++;
    } else if (strcmp(type, "Strip") == 0) {
        const cJSON *con = cJSON_GetObjectItemCaseSensitive(o, "content");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "start");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(o, "stop");
        if (!cJSON_IsString(con) || one_char(con->valuestring, s->ch, &s->lch) != 0 ||
            !cJSON_IsNumber(st) || !cJSON_IsNumber(sp) || st->valuedouble < 0 ||
            sp->valuedouble < 0 || st->valuedouble > 64 || sp->valuedouble > 64)
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: field \"%s\" needs a one-character content, start and stop",
                               path, where);
        s->type = STEP_STRIP;
        s->start = (int)st->valuedouble;
        s->stop = (int)sp->valuedouble;
        if (ch->phase == 0) {
            ch->n++; /* per token */
        } else if (ch->phase == 2 && s->stop == 0 && tok->dec_strip_n == 0) {
            memcpy(tok->dec_strip_ch, s->ch, sizeof s->ch);
            tok->dec_strip_len = s->lch;
            tok->dec_strip_n = s->start;
        } else {
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "%s: field \"%s\": Strip here is not supported (after Fuse only "
                               "a leading strip, \"stop\": 0)", path, where);
        }
    } else if (strcmp(type, "Metaspace") == 0) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "replacement");
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(o, "prepend_scheme");
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(o, "add_prefix_space");
        const char *repl = cJSON_IsString(r) ? r->valuestring : "\xe2\x96\x81";
        if (one_char(repl, s->ch, &s->lch) != 0 || ch->phase != 0 || tok->dec_meta_strip ||
            ch->n != 0)
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "%s: field \"%s\": Metaspace is supported only as the first "
                               "decoder step, with a one-character replacement", path, where);
        int strip = cJSON_IsString(ps) ? strcmp(ps->valuestring, "never") != 0
                                       : !cJSON_IsFalse(aps);
        s->type = STEP_METASPACE;
        tok->dec_meta_strip = strip;
        memcpy(tok->dec_meta_ch, s->ch, sizeof s->ch);
        tok->dec_meta_len = s->lch;
        ch->n++;
    } else if (strcmp(type, "ByteFallback") == 0) {
        if (ch->phase != 0)
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "%s: field \"%s\": ByteFallback after Fuse/ByteLevel is not "
                               "supported", path, where);
        tok->dec_mode = TOK_DEC_BYTEFALLBACK;
        ch->phase = 1;
    } else if (strcmp(type, "Fuse") == 0) {
        ch->phase = 2;
    } else if (strcmp(type, "ByteLevel") == 0) {
        if (tok->dec_mode == TOK_DEC_BYTEFALLBACK || ch->phase == 2)
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "%s: field \"%s\": ByteLevel after ByteFallback/Fuse is not "
                               "supported", path, where);
        tok->dec_mode = TOK_DEC_BYTELEVEL;
        ch->phase = 2;
    } else {
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: field \"%s.type\": decoder \"%s\" is not supported (only Sequence, "
                           "Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace)", path,
                           where, type);
    }
    if (tok->dec_meta_strip && tok->dec_strip_n)
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: field \"%s\": Metaspace together with Strip is not supported",
                           path, where);
    return 0;
}

/* Applies the per-token steps to one token string. */
static int apply_steps(const chain_t *ch, const char *s, size_t n, tok__buf_t *out) {
    tok__buf_t a = {0}, b = {0};
    int rc = tok__buf_put(&a, s, n);
    for (int i = 0; i < ch->n && rc == 0; i++) {
        const step_t *st = &ch->steps[i];
        b.len = 0;
        if (st->type == STEP_REPLACE || st->type == STEP_METASPACE) {
            const char *pat = st->type == STEP_REPLACE ? st->a : st->ch;
            size_t lp = st->type == STEP_REPLACE ? st->la : (size_t)st->lch;
            const char *rep = st->type == STEP_REPLACE ? st->b : " ";
            size_t lr = st->type == STEP_REPLACE ? st->lb : 1;
            size_t last = 0;
            for (const char *p; rc == 0 && (p = memmem(a.p + last, a.len - last, pat, lp));) {
                rc = tok__buf_put(&b, a.p + last, (size_t)(p - a.p) - last);
                if (!rc) rc = tok__buf_put(&b, rep, lr);
                last = (size_t)(p - a.p) + lp;
            }
            if (!rc) rc = tok__buf_put(&b, a.p + last, a.len - last);
        } else { /* per-token Strip: up to start leading / stop trailing copies of ch */
            size_t s0 = 0, e0 = a.len, l = (size_t)st->lch;
            for (int k = 0; k < st->start && e0 - s0 >= l && !memcmp(a.p + s0, st->ch, l); k++)
                s0 += l;
            for (int k = 0; k < st->stop && e0 - s0 >= l && !memcmp(a.p + e0 - l, st->ch, l); k++)
                e0 -= l;
            rc = tok__buf_put(&b, a.p + s0, e0 - s0);
        }
        tok__buf_t t = a;
        a = b;
        b = t;
    }
    out->len = 0;
    if (!rc) rc = tok__buf_put(out, a.p ? a.p : "", a.len);
    tok__buf_free(&a);
    tok__buf_free(&b);
    return rc;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int tok__decoder_load(tok_tokenizer_t *tok, const cJSON *dec, llm_error_t *err) {
    chain_t ch = {0};
    int rc;
    if (!dec || cJSON_IsNull(dec)) tok->dec_join_space = 1; /* HF joins tokens with ' ' */
    else if ((rc = dec_step(tok, &ch, dec, "decoder", err))) return rc;

    int16_t rev[TOK_BL_NCP];
    uint32_t fwd[256];
    tok__bytelevel_tables(fwd, rev);
    size_t n = (size_t)tok->n_vocab;
    tok->dec_off = malloc((n + 1) * sizeof *tok->dec_off);
    tok->dec_len = malloc((n + 1) * sizeof *tok->dec_len);
    tok->dec_byte = malloc((n + 1) * sizeof *tok->dec_byte);
    tok__buf_t arena = {0}, one = {0};
    if (!tok->dec_off || !tok->dec_len || !tok->dec_byte) goto nomem;
    size_t maxlen = 0;
    for (size_t id = 0; id < n; id++) {
        const char *p = tok->piece[id];
        size_t l = tok->piece_len[id];
        tok->dec_byte[id] = -1;
        tok->dec_off[id] = (uint32_t)arena.len;
        tok->dec_len[id] = 0;
        if (!p) continue;
        if (apply_steps(&ch, p, l, &one)) goto nomem;
        const char *s = one.p;
        size_t sl = one.len;
        if (tok->dec_mode == TOK_DEC_BYTEFALLBACK && sl == 6 && !memcmp(s, "<0x", 3) &&
            s[5] == '>' && hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
            tok->dec_byte[id] = (int16_t)(hexval(s[3]) * 16 + hexval(s[4]));
            sl = 0;
        } else if (tok->dec_mode == TOK_DEC_BYTELEVEL) {
            /* Every char must stand for a byte; otherwise HF keeps the token's own UTF-8. */
            size_t k = 0, w = 0;
            while (k < sl) {
                int cl;
                uint32_t cp = tok__utf8_decode(s + k, sl - k, &cl);
                if (cp >= TOK_BL_NCP || rev[cp] < 0) break;
                k += (size_t)cl;
                w++;
            }
            if (k == sl) {
                size_t j = 0;
                for (k = 0; k < sl; j++) {
                    int cl;
                    one.p[j] = (char)rev[tok__utf8_decode(s + k, sl - k, &cl)];
                    k += (size_t)cl;
                }
                sl = w;
            }
        }
        if (arena.len + sl > UINT32_MAX || tok__buf_put(&arena, s, sl)) goto nomem;
        tok->dec_len[id] = (uint32_t)sl;
        if (l > maxlen) maxlen = l;
        if (sl > maxlen) maxlen = sl;
    }
    tok__buf_free(&one);
    tok->dec_arena = arena.p;
    /* Worst case for one push: each byte of the token becomes U+FFFD (3 bytes), plus up to 3
     * held-back bytes replaced one by one, plus a joining space. */
    tok->max_piece = 3 * maxlen + 3 * 3 + 1;
    return 0;
nomem:
    tok__buf_free(&arena);
    tok__buf_free(&one);
    return llm_err_set(err, LLM_ENOMEM, "%s: out of memory for the decoder", tok->path);
}

/* ---- the decoding state machine ---- */

typedef struct sink_s {
    char *p;
    size_t len, cap;
    int grow; /* tok_decode: realloc as needed */
    int full; /* a write did not fit (or realloc failed) */
} sink_t;

static void put(sink_t *s, const char *b, size_t n) {
    if (s->full) return;
    if (s->len + n + 1 > s->cap) {
        if (!s->grow) {
            s->full = 1;
            return;
        }
        size_t cap = s->cap ? s->cap : 256;
        while (s->len + n + 1 > cap) cap *= 2;
        char *p = realloc(s->p, cap);
        if (!p) {
            s->full = 1;
            return;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, b, n);
    s->len += n;
}

/* One complete character. While the decoder's leading Strip is active, st->n_fed counts the
 * characters stripped so far; INT_MAX means the text has started. (Chains with a leading Strip
 * have neither Metaspace nor the joining space, the other users of n_fed.) */
static void emit_char(const tok_tokenizer_t *tok, tok_stream_t *st, sink_t *s, const char *c,
                      size_t n) {
    if (tok->dec_strip_n > 0 && st->n_fed != INT_MAX) {
        if (st->n_fed < tok->dec_strip_n && n == (size_t)tok->dec_strip_len &&
            memcmp(c, tok->dec_strip_ch, n) == 0) {
            st->n_fed++;
            return;
        }
        st->n_fed = INT_MAX;
    }
    put(s, c, n);
}

static void emit_repl(const tok_tokenizer_t *tok, tok_stream_t *st, sink_t *s, int nbytes) {
    int k = tok->dec_mode == TOK_DEC_BYTEFALLBACK ? nbytes : 1;
    for (int i = 0; i < k; i++) emit_char(tok, st, s, REPLACEMENT, 3);
}

static void feed_byte(const tok_tokenizer_t *tok, tok_stream_t *st, sink_t *s, unsigned char b) {
    if (st->n_pending > 0) {
        unsigned char lead = st->pending[0];
        int need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
        unsigned char lo = 0x80, hi = 0xBF;
        if (st->n_pending == 1) {
            if (lead == 0xE0) lo = 0xA0;
            else if (lead == 0xED) hi = 0x9F;
            else if (lead == 0xF0) lo = 0x90;
            else if (lead == 0xF4) hi = 0x8F;
        }
        if (b >= lo && b <= hi) {
            st->pending[st->n_pending++] = b;
            if (st->n_pending == need) {
                emit_char(tok, st, s, (const char *)st->pending, (size_t)need);
                st->n_pending = 0;
            }
            return;
        }
        emit_repl(tok, st, s, st->n_pending); /* then b starts afresh */
        st->n_pending = 0;
    }
    if (b < 0x80) {
        char c = (char)b;
        emit_char(tok, st, s, &c, 1);
    } else if (b >= 0xC2 && b <= 0xF4) {
        st->pending[0] = b;
        st->n_pending = 1;
    } else {
        emit_repl(tok, st, s, 1);
    }
}

static void push_token(const tok_tokenizer_t *tok, tok_stream_t *st, sink_t *s, int32_t id) {
    /* HF drops ids it has no token for, and special tokens when skipping them, before the
     * decoder chain sees the list. */
    if (id < 0 || id >= tok->n_vocab || !tok->piece[id]) return;
    if (st->skip_special && tok->special[id]) return;
    int first = 0;
    if (tok->dec_join_space || tok->dec_meta_strip) {
        first = st->n_fed == 0;
        if (st->n_fed < INT_MAX) st->n_fed++;
    }
    if (tok->dec_join_space && !first) feed_byte(tok, st, s, ' ');
    if (tok->dec_mode == TOK_DEC_BYTEFALLBACK) {
        if (tok->dec_byte[id] >= 0) {
            feed_byte(tok, st, s, (unsigned char)tok->dec_byte[id]);
            return;
        }
        if (st->n_pending) { /* the run of byte tokens ended inside a character */
            emit_repl(tok, st, s, st->n_pending);
            st->n_pending = 0;
        }
    }
    if (tok->dec_meta_strip && first) { /* HF: the first token loses every replacement char */
        const char *p = tok->piece[id];
        size_t n = tok->piece_len[id], l = (size_t)tok->dec_meta_len;
        for (size_t i = 0; i < n;) {
            if (n - i >= l && memcmp(p + i, tok->dec_meta_ch, l) == 0) {
                i += l;
                continue;
            }
            feed_byte(tok, st, s, (unsigned char)p[i++]);
        }
        return;
    }
    const char *p = tok->dec_arena + tok->dec_off[id];
    for (uint32_t i = 0; i < tok->dec_len[id]; i++) feed_byte(tok, st, s, (unsigned char)p[i]);
}

static void flush(const tok_tokenizer_t *tok, tok_stream_t *st, sink_t *s) {
    if (st->n_pending) emit_repl(tok, st, s, st->n_pending);
    st->n_pending = 0;
}

/* ---- public API ---- */

int tok_decode(const tok_tokenizer_t *tok, const int32_t *ids, size_t n_ids, int skip_special,
               char **text, size_t *len, llm_error_t *err) {
    llm_err_clear(err);
    if (!tok || (!ids && n_ids) || !text)
        return llm_err_set(err, LLM_EINVAL, "tok_decode: NULL argument");
    *text = NULL;
    if (len) *len = 0;
    tok_stream_t st;
    tok_stream_init(&st, skip_special);
    sink_t s = {NULL, 0, 0, 1, 0};
    put(&s, "", 0); /* allocate, so that an empty result is still a string */
    for (size_t i = 0; i < n_ids && !s.full; i++) push_token(tok, &st, &s, ids[i]);
    flush(tok, &st, &s);
    if (s.full) {
        free(s.p);
        return llm_err_set(err, LLM_ENOMEM, "tok_decode: out of memory");
    }
    s.p[s.len] = '\0';
    *text = s.p;
    if (len) *len = s.len;
    return 0;
}

void tok_stream_init(tok_stream_t *st, int skip_special) {
    memset(st, 0, sizeof *st);
    st->skip_special = skip_special;
}

/* Runs f on a copy of the state into out; commits only if everything fitted. */
static int stream_run(const tok_tokenizer_t *tok, tok_stream_t *st, int32_t id, int do_flush,
                      char *out, size_t cap) {
    if (!tok || !st || (!out && cap)) return LLM_EINVAL;
    tok_stream_t t = *st;
    sink_t s = {out, 0, cap, 0, 0};
    if (do_flush) flush(tok, &t, &s);
    else push_token(tok, &t, &s, id);
    if (s.full) {
        if (cap) out[0] = '\0';
        return LLM_ERANGE;
    }
    if (cap) out[s.len] = '\0';
    *st = t;
    return (int)s.len;
}

int tok_stream_push(const tok_tokenizer_t *tok, tok_stream_t *st, int32_t id, char *out,
                    size_t cap) {
    return stream_run(tok, st, id, 0, out, cap);
}

int tok_stream_flush(const tok_tokenizer_t *tok, tok_stream_t *st, char *out, size_t cap) {
    return stream_run(tok, st, 0, 1, out, cap);
}

void tok_stream_continue(tok_stream_t *st) { st->n_fed = INT_MAX; }

int tok_has_text(const tok_tokenizer_t *tok, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!tok_is_special(tok, ids[i])) return 1;
    return 0;
}
