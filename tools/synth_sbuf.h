/* synth_sbuf.h: a growable string for the JSON texts the synthetic writers produce
 * (config.json, adapter_config.json, safetensors index). */
#ifndef TOOLS_SYNTH_SBUF_H
#define TOOLS_SYNTH_SBUF_H

#include <stddef.h>

typedef struct synth_sbuf_s {
    /* s: owned, NUL-terminated once anything was written; free(s) when done. oom: an
     * allocation failed, later appends do nothing and the text is incomplete. */
    char *s;
    size_t len, cap;
    int oom;
} synth_sbuf_t;

/* Appends printf-formatted text, growing the buffer as needed. */
__attribute__((format(printf, 2, 3))) void synth_sb_printf(synth_sbuf_t *b, const char *fmt,
                                                           ...);

#endif
