/* llm_error.h: the one error vocabulary of loramux.
 *
 * Functions return int: 0 on success, a negative LLM_E* code on failure. System failures pass
 * through as -errno. Functions that parse outside input (checkpoints, tokenizer files, adapter
 * files, request bodies) also fill an llm_error_t whose message names the input and the reason,
 * so an operator can act on it without a debugger.
 */
#ifndef LLM_ERROR_H
#define LLM_ERROR_H

#include <stddef.h>

/* XX(NAME, value, message). Values stay clear of errno's range (< 4096). */
#define LLM_ERR_MAP(XX)                                                         \
    XX(INVAL, 5001, "invalid argument")                                         \
    XX(NOMEM, 5002, "out of memory")                                            \
    XX(IO, 5003, "input/output error")                                          \
    XX(FORMAT, 5004, "malformed file")                                          \
    XX(UNSUPPORTED, 5005, "unsupported feature")                                \
    XX(NOTFOUND, 5006, "not found")                                             \
    XX(SHAPE, 5007, "shape mismatch")                                           \
    XX(RANGE, 5008, "value out of range")                                       \
    XX(FULL, 5009, "capacity exhausted")

typedef enum {
#define XX(name, val, msg) LLM_E##name = -(val),
    LLM_ERR_MAP(XX)
#undef XX
} llm_err_code_t;

typedef struct llm_error_s {
    int code;       /* 0 or a negative LLM_E* / -errno */
    char msg[512];  /* human-readable, names the input and the reason */
} llm_error_t;

/* Short symbolic name ("LLM_EFORMAT", "ENOENT", ...). Never NULL; static storage. */
const char *llm_err_name(int code);
/* Generic message for a code. Never NULL; static storage. */
const char *llm_strerror(int code);

/* Fills err (which may be NULL) and returns code, so callers write
 * `return llm_err_set(err, LLM_EFORMAT, "%s: ...", path);`. */
int llm_err_set(llm_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears err (may be NULL). */
void llm_err_clear(llm_error_t *err);

#endif
