/* test_util.h: small helpers shared by the C unit tests (cmocka). */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <stddef.h>

/* Directory of the shared third-party fixtures: $LORAMUX_FIXTURES, else ../shared/fixtures.
 * Static storage. */
const char *tu_fixtures(void);

/* tu_fixture_path("stories260K-hf/config.json"): a path inside the fixtures, in a rotating set
 * of static buffers (valid for the next 7 calls). */
const char *tu_fixture_path(const char *rel);

/* Reads a whole file; returns new NUL-terminated buffer (caller frees) or NULL. */
char *tu_read_file(const char *path, size_t *len);

/* Writes len bytes to path; returns 0 or -1. */
int tu_write_file(const char *path, const void *data, size_t len);

/* Creates a fresh temporary directory (mkdtemp under $TMPDIR or /tmp); returns new string
 * (caller frees) or NULL. tu_rm_rf removes it again. */
char *tu_mkdtemp(void);
void tu_rm_rf(const char *path);

#endif
