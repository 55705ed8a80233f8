/* tokenizer.h: HuggingFace tokenizer.json BPE tokenizers (encode and streaming-safe decode).
 *
 * Supported: BPE models in two families (normalizers: Prepend, Replace, NFC, NFD).
 *  - sentencepiece style (Llama 2, TinyLlama, Phi-3, stories260K): normalizer Prepend/Replace
 *    "▁" (or the legacy Metaspace pre-tokenizer), byte_fallback (<0xNN> pieces).
 *  - byte-level (GPT-2, Llama 3, Qwen2, SmolLM): ByteLevel pre-tokenizer and/or Split with the
 *    GPT-2 / Llama-3 / Qwen2 regexes (Unicode classes via PCRE2), ignore_merges, digit splitting.
 * Merges as "a b" strings or ["a","b"] pairs. Added/special tokens are matched before BPE,
 * honouring lstrip/rstrip/single_word/normalized. BOS/EOS come from tokenizer_config.json
 * (add_bos_token/add_eos_token, bos_token/eos_token) and the TemplateProcessing post-processor.
 * Anything in tokenizer.json the encoder does not implement is refused at load with a message
 * naming the field, never silently ignored.
 *
 * Thread safety: a loaded tokenizer is immutable; encode/decode may run on any thread at once.
 */
#ifndef CORE_TOKENIZER_H
#define CORE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "llm_error.h"

typedef struct tok_tokenizer_s tok_tokenizer_t;

/* Loads DIR/tokenizer.json plus, when present, DIR/tokenizer_config.json and
 * DIR/special_tokens_map.json. Needs no weights.
 * Returns 0 and *out (new, caller frees with tok_free()), or a negative code with err filled
 * (the message names the file and the field). */
int tok_load(const char *dir, tok_tokenizer_t **out, llm_error_t *err);

/* Same, from explicit paths; config_path and special_map_path may be NULL. */
int tok_load_files(const char *tokenizer_json_path, const char *config_path,
                   const char *special_map_path, tok_tokenizer_t **out, llm_error_t *err);

/* Accepts NULL. */
void tok_free(tok_tokenizer_t *tok);

/* Encodes len bytes of text (need not be NUL-terminated; invalid UTF-8 is an error).
 * add_special: add what the post-processor / tokenizer_config adds (BOS, EOS) — like HF's
 * encode(add_special_tokens=True). parse_special: match added special tokens in the text
 * (HF always does; a server may turn it off for untrusted prompts).
 * Returns 0 and *ids (new, caller frees with free()) and *n_ids; or a negative code. */
int tok_encode(const tok_tokenizer_t *tok, const char *text, size_t len, int add_special,
               int parse_special, int32_t **ids, size_t *n_ids, llm_error_t *err);

int tok_vocab_size(const tok_tokenizer_t *tok); /* highest id + 1, added tokens included */
int32_t tok_bos_id(const tok_tokenizer_t *tok); /* -1 when the tokenizer has none */
int32_t tok_eos_id(const tok_tokenizer_t *tok); /* -1 when the tokenizer has none */
/* Whether id is an added token marked special (skipped by decode with skip_special). */
int tok_is_special(const tok_tokenizer_t *tok, int32_t id);
/* The token's string as stored in the vocabulary ("▁the", "Ġthe", "<0x0A>"); borrowed, valid
 * until tok_free(); NULL when out of range. */
const char *tok_piece(const tok_tokenizer_t *tok, int32_t id);
/* Id of an exact vocabulary or added-token string, or -1. */
int32_t tok_piece_id(const tok_tokenizer_t *tok, const char *piece);

/* Whole-sequence decode, as HF's decode(ids, skip_special_tokens=skip_special).
 * Returns 0 and *text (new, NUL-terminated, caller frees with free()) and *len. */
int tok_decode(const tok_tokenizer_t *tok, const int32_t *ids, size_t n_ids, int skip_special,
               char **text, size_t *len, llm_error_t *err);

/* Streaming decode. Feed ids one by one; each call appends to out only complete UTF-8
 * sequences, holding back bytes of a token that ends inside a multi-byte character until a
 * later token completes it. The concatenation of everything emitted plus tok_stream_flush()
 * equals tok_decode() of all ids fed. Caller memory; no allocation. */
typedef struct tok_stream_s {
    /* private */
    unsigned char pending[8]; /* bytes of an incomplete UTF-8 sequence */
    int n_pending;
    int n_fed;                /* tokens fed so far (the first piece may lose a leading space) */
    int skip_special;
} tok_stream_t;

void tok_stream_init(tok_stream_t *st, int skip_special);
/* Marks the stream as continuing text that has already started (a completion after its
 * prompt): a decoder's leading-space strip then no longer applies to the first token, so
 * "Lily" + "▁and" reads "Lily and", as incremental detokenization in vLLM/llama.cpp does. */
void tok_stream_continue(tok_stream_t *st);
/* Whether ids hold any token that is not special (i.e. text a completion continues). */
int tok_has_text(const tok_tokenizer_t *tok, const int32_t *ids, size_t n);
/* Appends the text of id to out (capacity cap, always NUL-terminated when cap > 0).
 * Returns the number of bytes written (>= 0), or LLM_ERANGE when cap is too small (nothing is
 * consumed then). 64 bytes of room always suffice for one token of a supported vocabulary plus
 * held-back bytes unless a piece is longer; callers use tok_max_piece_bytes() + 8 to be safe. */
int tok_stream_push(const tok_tokenizer_t *tok, tok_stream_t *st, int32_t id, char *out,
                    size_t cap);
/* Emits any held-back bytes (as U+FFFD replacement for an incomplete sequence). Returns bytes
 * written or LLM_ERANGE. */
int tok_stream_flush(const tok_tokenizer_t *tok, tok_stream_t *st, char *out, size_t cap);
/* Longest decoded piece in bytes. */
size_t tok_max_piece_bytes(const tok_tokenizer_t *tok);

#endif
