/* srv_chat.h: HuggingFace chat templates for /v1/chat/completions.
 *
 * A model's tokenizer_config.json carries a Jinja2 `chat_template` that turns a list of
 * {role, content} messages into the prompt text the model was trained on. This module holds a
 * small Jinja interpreter (a subset, written for this project) that renders those templates
 * the way transformers' `apply_chat_template` does: the same environment settings
 * (trim_blocks, lstrip_blocks, no trailing newline kept, loop controls), the same globals
 * (`messages`, `add_generation_prompt`, `tools` = none, `documents` = none, the special-token
 * strings, `raise_exception`, `strftime_now`, `namespace`, `range`, `dict`) and the same
 * `tojson` (json.dumps with ensure_ascii=False).
 *
 * The template is parsed once (srv_chat_load / srv_chat_from_string) into a syntax tree that is
 * never modified afterwards; every srv_chat_render call evaluates it with its own scratch
 * memory, so one srv_chat_t may be rendered from many threads at once.
 *
 * Supported: {{ }}, {% %}, {# #}, whitespace control (-, +), {% raw %}, if/elif/else,
 * for (with `if` filter, else, loop.*, tuple targets, break/continue), set (incl. ns.attr and
 * {% set %}...{% endset %}), {% generation %}; literals (strings with Python escapes, ints,
 * lists, tuples, dicts, true/false/none), + - * // % ** ~, comparisons, and/or/not, in / not in,
 * `x if c else y`, subscripts, attributes, slices; the common filters, tests and str/dict
 * methods (listed in srv_chat_lib.c). Not supported, with a clear error: macros, call/filter
 * blocks, include/extends/import, recursive loops, floats and true division, '%' string
 * formatting, and a few rarely used filters/methods. Those fail only when a render reaches
 * them, so a template whose tool-calling branch uses them still renders plain conversations;
 * a name that is no Jinja filter or test at all fails at load unless it sits inside an if
 * (as in Jinja). Known differences from Python: case mapping covers Latin, Greek, Cyrillic and
 * Armenian only; a generator (|map, |select, ...) can be consumed more than once.
 */
#ifndef SRV_CHAT_H
#define SRV_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "llm_error.h"

/* One chat message. Both strings are borrowed for the duration of srv_chat_render. */
typedef struct srv_chat_msg_s {
    const char *role;    /* "system", "user", "assistant", ...; must not be NULL */
    const char *content; /* UTF-8 text; NULL is passed to the template as none */
} srv_chat_msg_t;

typedef struct srv_chat_s srv_chat_t;

/* Per-render resource limits. A template that exceeds one fails with LLM_ERANGE. */
typedef struct srv_chat_limits_s {
    size_t max_output;  /* bytes of rendered text, and of any single string value (8 MiB) */
    size_t max_memory;  /* bytes of scratch memory one render may use (128 MiB) */
    uint64_t max_steps; /* loop iterations + range() elements per render (4M) */
} srv_chat_limits_t;

/* Loads the chat template of the model directory DIR (borrowed).
 *
 * The template comes from DIR/chat_template.jinja if it exists (as in transformers, where that
 * file takes priority), else from tokenizer_config.json's "chat_template" (a string, or a list
 * of {"name", "template"} of which "default" is used), else from DIR/chat_template.json's
 * "chat_template". The special-token strings bos_token, eos_token, unk_token, pad_token,
 * sep_token, cls_token, mask_token (each a string or an {"content": ...} object) and
 * additional_special_tokens are read from tokenizer_config.json and then special_tokens_map.json
 * (which wins, as in transformers); tokens that are absent or null are undefined in the template.
 *
 * Returns 0 and *out (new, caller frees with srv_chat_free()); LLM_ENOTFOUND and *out = NULL
 * when the model has no chat template; LLM_EFORMAT when a file is not valid JSON or the template
 * does not parse; LLM_EUNSUPPORTED when the template uses a construct this interpreter does not
 * have (e.g. {% macro %}); LLM_EIO / -errno when a file cannot be read; LLM_ENOMEM.
 * err (may be NULL) names the file and, for template errors, the line. Thread-safe. */
int srv_chat_load(const char *dir, srv_chat_t **out, llm_error_t *err);

/* Parses the template text tmpl (borrowed, copied). bos and eos (borrowed, copied) may be NULL:
 * the variables are then undefined. Returns 0 and *out (new, caller frees with srv_chat_free()),
 * LLM_EFORMAT / LLM_EUNSUPPORTED with the line in err, LLM_EINVAL if tmpl is NULL, LLM_ENOMEM. */
int srv_chat_from_string(const char *tmpl, const char *bos, const char *eos, srv_chat_t **out,
                         llm_error_t *err);

/* Replaces the default limits (values of 0 keep the default). Call it before the object is
 * shared between threads: it is the only function that modifies a srv_chat_t. */
void srv_chat_set_limits(srv_chat_t *c, const srv_chat_limits_t *lim);

/* Renders msgs[0..n) (borrowed) with add_generation_prompt (0 or 1).
 * Returns 0 and *text (new NUL-terminated string, caller frees with free()); on failure *text
 * is NULL and:
 *   LLM_EINVAL  the template called raise_exception (err->msg is exactly the template's message,
 *               e.g. "Conversation roles must alternate user/assistant/user/assistant/..."),
 *               or failed for these messages ("chat template: ... at line N": an undefined
 *               value used in an operation, a type error, an unsupported filter/method reached);
 *               also for bad arguments (c or text NULL, n < 0, a NULL role).
 *   LLM_ERANGE  a limit of srv_chat_limits_t was exceeded.
 *   LLM_ENOMEM  out of memory.
 * Thread-safe: c is only read. */
int srv_chat_render(const srv_chat_t *c, const srv_chat_msg_t *msgs, int n,
                    int add_generation_prompt, char **text, llm_error_t *err);

/* Frees c. Accepts NULL. */
void srv_chat_free(srv_chat_t *c);

#endif
