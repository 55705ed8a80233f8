/* tokenizer_int.h: private types and helpers shared by core/tokenizer*.c. Not public API.
 *
 * Files: tokenizer.c (loading tokenizer.json / tokenizer_config.json, accessors),
 * tokenizer_encode.c (added tokens, normalizers, pre-tokenizers, BPE, post-processing),
 * tokenizer_decode.c (decoder chain, whole and streaming decode), tokenizer_util.c (hash maps,
 * buffers, UTF-8 and byte-level helpers).
 */
#ifndef CORE_TOKENIZER_INT_H
#define CORE_TOKENIZER_INT_H

#include <stddef.h>
#include <stdint.h>

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>
#include <cjson/cJSON.h>

#include "tokenizer.h"

/* ---- growable byte buffer ---- */

typedef struct tok__buf_s {
    char *p;
    size_t len, cap;
} tok__buf_t;

/* Both return 0 or LLM_ENOMEM (buffer unchanged then). */
int tok__buf_reserve(tok__buf_t *b, size_t extra);
int tok__buf_put(tok__buf_t *b, const void *s, size_t n);
void tok__buf_free(tok__buf_t *b);

/* ---- string -> int32 open-addressing map; keys are borrowed (must outlive the map) ---- */

typedef struct tok__sentry_s {
    const char *key; /* NULL: empty slot */
    uint32_t len;
    int32_t val;
} tok__sentry_t;

typedef struct tok__smap_s {
    tok__sentry_t *e;
    size_t cap; /* power of two */
    size_t n;
} tok__smap_t;

int tok__smap_init(tok__smap_t *m, size_t expected);
void tok__smap_deinit(tok__smap_t *m);
/* Inserts or overwrites (the later value wins, as HF's HashMap collect). 0 or LLM_ENOMEM. */
int tok__smap_put(tok__smap_t *m, const char *key, size_t len, int32_t val);
/* Value or -1. */
int32_t tok__smap_get(const tok__smap_t *m, const char *key, size_t len);

/* ---- (id, id) -> (rank, merged id) map for BPE merges ---- */

typedef struct tok__pentry_s {
    uint64_t key; /* UINT64_MAX: empty slot */
    int32_t rank;
    int32_t id;
} tok__pentry_t;

typedef struct tok__pmap_s {
    tok__pentry_t *e;
    size_t cap, n;
} tok__pmap_t;

int tok__pmap_init(tok__pmap_t *m, size_t expected);
void tok__pmap_deinit(tok__pmap_t *m);
int tok__pmap_put(tok__pmap_t *m, int32_t a, int32_t b, int32_t rank, int32_t id);
/* Returns the entry or NULL. */
const tok__pentry_t *tok__pmap_get(const tok__pmap_t *m, int32_t a, int32_t b);

/* ---- UTF-8 and byte-level helpers ---- */

/* Length of a valid UTF-8 prefix of s (stops at the first invalid sequence). */
size_t tok__utf8_valid_prefix(const char *s, size_t n);
/* Decodes one code point of valid UTF-8 at s; stores its byte length in *clen. */
uint32_t tok__utf8_decode(const char *s, size_t n, int *clen);
/* Encodes cp; returns bytes written (1..4) to out (room for 4). */
int tok__utf8_encode(uint32_t cp, char *out);
/* Unicode White_Space (what Rust's char::is_whitespace and regex \s accept). */
int tok__is_space(uint32_t cp);

/* GPT-2 byte <-> unicode table: fwd[b] is the code point standing for byte b; rev[cp] the byte
 * for cp < TOK_BL_NCP, or -1 (code points >= TOK_BL_NCP stand for no byte). */
#define TOK_BL_NCP 324
void tok__bytelevel_tables(uint32_t fwd[256], int16_t rev[TOK_BL_NCP]);

/* ---- the tokenizer ---- */

enum { TOK_NORM_PREPEND, TOK_NORM_REPLACE, TOK_NORM_STRIP };

typedef struct tok__norm_s {
    int type;
    char *a;         /* Prepend: text; Replace: literal pattern (when re == NULL) */
    size_t a_len;
    char *b;         /* Replace: content */
    size_t b_len;
    pcre2_code *re;  /* Replace with a Regex pattern */
    int left, right; /* Strip */
} tok__norm_t;

enum { TOK_PRE_BYTELEVEL, TOK_PRE_SPLIT, TOK_PRE_DIGITS, TOK_PRE_METASPACE };
/* HF SplitDelimiterBehavior */
enum { TOK_SPLIT_REMOVED, TOK_SPLIT_ISOLATED, TOK_SPLIT_MERGED_PREV, TOK_SPLIT_MERGED_NEXT,
       TOK_SPLIT_CONTIGUOUS };
enum { TOK_PREPEND_NEVER, TOK_PREPEND_FIRST, TOK_PREPEND_ALWAYS };

typedef struct tok__pre_s {
    int type;
    int add_prefix_space; /* ByteLevel */
    pcre2_code *re;       /* ByteLevel (use_regex), Split (Regex), Digits; borrowed for ByteLevel */
    int owns_re;
    char *lit;            /* Split with a String pattern; Metaspace replacement */
    size_t lit_len;
    int behavior, invert; /* Split, Digits */
    int prepend, split;   /* Metaspace */
} tok__pre_t;

typedef struct tok__added_s {
    char *content;  /* as in tokenizer.json */
    size_t len;
    char *pattern;  /* what is matched in the text: content, or content normalized */
    size_t pat_len;
    int32_t id;
    unsigned char single_word, lstrip, rstrip, normalized, special;
} tok__added_t;

/* Added tokens of one matching pass, bucketed by first byte, longest pattern first. */
typedef struct tok__aset_s {
    int *order;     /* indices into tok->added */
    int first[257]; /* order[first[b] .. first[b+1]) start with byte b */
} tok__aset_t;

enum { TOK_DEC_TEXT, TOK_DEC_BYTEFALLBACK, TOK_DEC_BYTELEVEL };

struct tok_tokenizer_s {
    /* read-only after load */
    char *path;              /* tokenizer.json path, for messages */
    int32_t n_vocab;         /* highest id + 1, added tokens included */
    const char **piece;      /* id -> string (added content wins), NULL for holes */
    uint32_t *piece_len;
    char *vocab_arena;       /* model vocab strings, NUL-separated */
    tok__smap_t vocab;       /* model vocab: string -> id */
    tok__pmap_t merges;
    int32_t unk_id;          /* -1: none */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t byte_id[256];    /* <0xNN> ids for byte_fallback, -1 when absent */

    tok__norm_t *norm;
    int n_norm;
    tok__pre_t *pre;
    int n_pre;
    pcre2_code *re_bytelevel; /* GPT-2 pattern, shared by ByteLevel steps */
    pcre2_code *re_word;      /* one \w-like char, for single_word added tokens */
    pcre2_code *re_digit;     /* one \p{N} char, for Digits */
    char bl_str[256][2];      /* ByteLevel: UTF-8 of the char standing for each byte */
    unsigned char bl_len[256];

    tok__added_t *added;
    int n_added;
    tok__smap_t added_map;   /* content -> index in added */
    tok__aset_t aset_raw;    /* normalized == false: matched before normalization */
    tok__aset_t aset_norm;   /* normalized == true: matched in normalized text */
    unsigned char *special;  /* per id: an added token marked special */

    int32_t *prefix, *suffix; /* what add_special adds around the text */
    int n_prefix, n_suffix;
    int32_t bos_id, eos_id;

    /* decoder: per-token strings precomputed at load, then one byte-assembly mode */
    int dec_mode;            /* TOK_DEC_* */
    int dec_join_space;      /* no decoder: tokens joined with ' ' */
    int dec_meta_strip;      /* Metaspace decoder: the first token drops its replacement chars */
    char dec_meta_ch[8];     /* Metaspace replacement character */
    int dec_meta_len;
    char dec_strip_ch[8];    /* whole-text Strip decoder after Fuse/ByteLevel */
    int dec_strip_len, dec_strip_n;
    char *dec_arena;
    uint32_t *dec_off, *dec_len;
    int16_t *dec_byte;       /* ByteFallback: byte value of a <0xNN> token, else -1 */
    size_t max_piece;
};

/* tokenizer_encode.c: applies the normalizer chain to s; the result replaces out's contents.
 * Returns 0 or LLM_ENOMEM. */
int tok__normalize(const tok_tokenizer_t *tok, const char *s, size_t n, tok__buf_t *out);

/* tokenizer_decode.c: parses the "decoder" field and precomputes the per-token strings.
 * Returns 0 or a negative code with err filled (message names path and field). */
int tok__decoder_load(tok_tokenizer_t *tok, const cJSON *dec, llm_error_t *err);

#endif
