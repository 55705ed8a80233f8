/* tokenizer_util.c: small helpers for the tokenizer: buffers, hash maps, UTF-8, the GPT-2
 * byte<->unicode table. */
#include "tokenizer_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- growable byte buffer ---- */

int tok__buf_reserve(tok__buf_t *b, size_t extra) {
    if (b->cap - b->len > extra) return 0; /* keeps room for a NUL */
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len <= extra) {
        if (cap > SIZE_MAX / 2) return LLM_ENOMEM;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) return LLM_ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int tok__buf_put(tok__buf_t *b, const void *s, size_t n) {
    if (tok__buf_reserve(b, n) != 0) return LLM_ENOMEM;
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

void tok__buf_free(tok__buf_t *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- string map ---- */

static uint64_t hash_bytes(const char *s, size_t n) {
    /* FNV-1a, then a final mix so that the low bits (the slot index) depend on every byte. */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return h;
}

static size_t pow2_for(size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2 + 1) cap *= 2;
    return cap;
}

int tok__smap_init(tok__smap_t *m, size_t expected) {
    m->cap = pow2_for(expected);
    m->n = 0;
    m->e = calloc(m->cap, sizeof *m->e);
    return m->e ? 0 : LLM_ENOMEM;
}

void tok__smap_deinit(tok__smap_t *m) {
    free(m->e);
    m->e = NULL;
    m->cap = m->n = 0;
}

static int smap_grow(tok__smap_t *m) {
    tok__smap_t g;
    if (tok__smap_init(&g, m->cap) != 0) return LLM_ENOMEM; /* doubles the capacity */
    for (size_t i = 0; i < m->cap; i++)
        if (m->e[i].key) tok__smap_put(&g, m->e[i].key, m->e[i].len, m->e[i].val);
    free(m->e);
    *m = g;
    return 0;
}

int tok__smap_put(tok__smap_t *m, const char *key, size_t len, int32_t val) {
    if ((m->n + 1) * 4 > m->cap * 3 && smap_grow(m) != 0) return LLM_ENOMEM;
    size_t mask = m->cap - 1, i = hash_bytes(key, len) & mask;
    for (;; i = (i + 1) & mask) {
        tok__sentry_t *e = &m->e[i];
        if (!e->key) {
            e->key = key;
            e->len = (uint32_t)len;
            e->val = val;
            m->n++;
            return 0;
        }
        if (e->len == len && memcmp(e->key, key, len) == 0) {
            e->val = val;
            return 0;
        }
    }
}

int32_t tok__smap_get(const tok__smap_t *m, const char *key, size_t len) {
    if (!m->e) return -1;
    size_t mask = m->cap - 1, i = hash_bytes(key, len) & mask;
    for (;; i = (i + 1) & mask) {
        const tok__sentry_t *e = &m->e[i];
        if (!e->key) return -1;
        if (e->len == len && memcmp(e->key, key, len) == 0) return e->val;
    }
}

/* ---- pair map ---- */

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

int tok__pmap_init(tok__pmap_t *m, size_t expected) {
    m->cap = pow2_for(expected);
    m->n = 0;
    m->e = malloc(m->cap * sizeof *m->e);
    if (!m->e) return LLM_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) m->e[i].key = UINT64_MAX;
    return 0;
}

void tok__pmap_deinit(tok__pmap_t *m) {
    free(m->e);
    m->e = NULL;
    m->cap = m->n = 0;
}

static int pmap_grow(tok__pmap_t *m) {
    tok__pmap_t g;
    if (tok__pmap_init(&g, m->cap) != 0) return LLM_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        const tok__pentry_t *e = &m->e[i];
        if (e->key != UINT64_MAX)
            tok__pmap_put(&g, (int32_t)(e->key >> 32), (int32_t)(e->key & 0xffffffffu), e->rank,
                          e->id);
    }
    free(m->e);
    *m = g;
    return 0;
}

int tok__pmap_put(tok__pmap_t *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    if ((m->n + 1) * 4 > m->cap * 3 && pmap_grow(m) != 0) return LLM_ENOMEM;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = m->cap - 1, i = hash_u64(key) & mask;
    for (;; i = (i + 1) & mask) {
        tok__pentry_t *e = &m->e[i];
        if (e->key == UINT64_MAX) {
            e->key = key;
            e->rank = rank;
            e->id = id;
            m->n++;
            return 0;
        }
        if (e->key == key) {
            e->rank = rank;
            e->id = id;
            return 0;
        }
    }
}

const tok__pentry_t *tok__pmap_get(const tok__pmap_t *m, int32_t a, int32_t b) {
    if (!m->e) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = m->cap - 1, i = hash_u64(key) & mask;
    for (;; i = (i + 1) & mask) {
        const tok__pentry_t *e = &m->e[i];
        if (e->key == UINT64_MAX) return NULL;
        if (e->key == key) return e;
    }
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when invalid/truncated. Follows the
 * Unicode table of well-formed byte sequences (no overlongs, surrogates or > U+10FFFF). */
static int seq_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < (size_t)need) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return need;
}

size_t tok__utf8_valid_prefix(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        int l = seq_len(u + i, n - i);
        if (!l) break;
        i += (size_t)l;
    }
    return i;
}

uint32_t tok__utf8_decode(const char *s, size_t n, int *clen) {
    const unsigned char *u = (const unsigned char *)s;
    int l = seq_len(u, n);
    if (l <= 1) {
        *clen = 1;
        return u[0];
    }
    uint32_t cp = u[0] & (0x7F >> l);
    for (int i = 1; i < l; i++) cp = (cp << 6) | (u[i] & 0x3F);
    *clen = l;
    return cp;
}

int tok__utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

int tok__is_space(uint32_t cp) {
    /* The Unicode White_Space property: a fixed list of 25 code points. */
    if (cp >= 0x09 && cp <= 0x0D) return 1;
    switch (cp) {
    case 0x20: case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F:
    case 0x205F: case 0x3000:
        return 1;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

/* ---- GPT-2 byte <-> unicode ----
 * Printable Latin-1 bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for themselves; the other 68
 * bytes, in increasing order, get U+0100, U+0101, ... so every byte has a visible character. */

static int byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

void tok__bytelevel_tables(uint32_t fwd[256], int16_t rev[TOK_BL_NCP]) {
    uint32_t next = 256;
    for (int i = 0; i < TOK_BL_NCP; i++) rev[i] = -1;
    for (unsigned b = 0; b < 256; b++) {
        fwd[b] = byte_is_printable(b) ? b : next++;
        rev[fwd[b]] = (int16_t)b;
    }
}

/* ---- JSON and regex helpers for the loaders ---- */

int tok__json_keys(const char *path, const cJSON *o, const char *where,
                   const char *const *allowed, llm_error_t *err) {
    for (const cJSON *c = o->child; c; c = c->next) {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(c->string, *a) == 0;
        if (!ok)
            return llm_err_set(err, LLM_EUNSUPPORTED,
                               "%s: field \"%s.%s\" is not supported by this tokenizer", path,
                               where, c->string);
    }
    return 0;
}

/* Optional bool: absent or null gives dflt. */
int tok__json_bool(const char *path, const cJSON *o, const char *key, const char *where,
                   int dflt, int *out, llm_error_t *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s.%s\" must be a boolean", path,
                           where, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* Optional string: absent or null gives NULL (borrowed from the cJSON tree). */
int tok__json_str(const char *path, const cJSON *o, const char *key, const char *where,
                  const char **out, llm_error_t *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsString(v))
        return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s.%s\" must be a string", path, where,
                           key);
    *out = v->valuestring;
    return 0;
}

/* Optional non-negative integer; absent or null gives dflt. */
int tok__json_int(const char *path, const cJSON *o, const char *key, const char *where,
                  int dflt, int *out, llm_error_t *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > TOK_MAX_ID ||
        v->valuedouble != (double)(int)v->valuedouble)
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: field \"%s.%s\" must be a non-negative integer", path, where, key);
    *out = (int)v->valuedouble;
    return 0;
}

int tok__json_type(const char *path, const cJSON *o, const char *where, const char **type,
                   llm_error_t *err) {
    if (!cJSON_IsObject(o))
        return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s\" must be an object or null", path,
                           where);
    int rc = tok__json_str(path, o, "type", where, type, err);
    if (rc) return rc;
    if (!*type)
        return llm_err_set(err, LLM_EFORMAT, "%s: field \"%s.type\" is missing", path, where);
    return 0;
}

char *tok__strndup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

int tok__compile_re(const char *path, const char *where, const char *pat, size_t len,
                    pcre2_code **out, llm_error_t *err) {
    int ecode = 0;
    PCRE2_SIZE eoff = 0;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP, &ecode, &eoff,
                                   NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: field \"%s\": regex not supported by PCRE2 (%s at offset %zu)",
                           path, where, (const char *)msg, (size_t)eoff);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up; falls back to the
                                                      * interpreter when JIT is unavailable */
    *out = re;
    return 0;
}
