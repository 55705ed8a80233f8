#include "llm_error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *llm_err_name(int code) {
    switch (code) {
#define XX(name, val, msg) case LLM_E##name: return "LLM_E" #name;
        LLM_ERR_MAP(XX)
#undef XX
    case 0: return "OK";
    case -ENOENT: return "ENOENT";
    case -EACCES: return "EACCES";
    case -ENOMEM: return "ENOMEM";
    case -EINVAL: return "EINVAL";
    default: return "EUNKNOWN";
    }
}

const char *llm_strerror(int code) {
    switch (code) {
#define XX(name, val, msg) case LLM_E##name: return msg;
        LLM_ERR_MAP(XX)
#undef XX
    case 0: return "success";
    default: return code < 0 && code > -4096 ? strerror(-code) : "unknown error";
    }
}

int llm_err_set(llm_error_t *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void llm_err_clear(llm_error_t *err) {
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}
