/* srv_registry.h: adapters by name, backed by the on-disk store, with a resident cache.
 *
 * Names and versions live in srv_store (durable, content addressed). Compute-ready adapters
 * (adp_adapter_t) are cached in memory by VERSION, never by name, so a name that moves to a
 * new version can never be served from the old one's cache entry. The cache is bounded by a
 * byte budget: when a load pushes it over, the least recently used entries that are neither
 * pinned nor in use by a request are evicted. A request whose adapter is not resident loads it
 * on its own (HTTP) thread: it waits only for its own load (concurrent requests for the same
 * version wait for that one load), and the engine keeps stepping everyone else meanwhile.
 *
 * Thread-safe: one mutex guards the cache and every adapter reference count; loads and file
 * copies happen outside it.
 */
#ifndef SRV_REGISTRY_H
#define SRV_REGISTRY_H

#include <stddef.h>
#include <time.h>

#include "adapter.h"
#include "llm_error.h"
#include "model.h"
#include "srv_metrics.h"
#include "srv_store.h"

typedef struct srv_reg_s srv_reg_t;

typedef struct srv_reg_desc_s {
    srv_store_desc_t st;      /* name, version, created, bytes (files), pinned */
    char method[16];
    int rank_min, rank_max;
    char target_modules[256];
    char source[1024];        /* directory it was imported from ("" for uploads) */
    int resident;             /* compute-ready form in memory */
    size_t resident_bytes;
    long long uses;           /* requests that used this version since start */
} srv_reg_desc_t;

/* base, base_name, met (may be NULL) and store are borrowed and must outlive the registry.
 * budget_bytes bounds the resident cache (0 = unlimited). Every adapter is loaded with
 * load_opts (copied; NULL = defaults: fp32 factors). */
srv_reg_t *srv_reg_create(const core_model_t *base, const char *base_name, srv_met_t *met,
                          srv_store_t *store, size_t budget_bytes,
                          const adp_load_opts_t *load_opts);
void srv_reg_free(srv_reg_t *reg);

/* Name rules of the store, and the base's own name is reserved. 0 or LLM_EINVAL. */
int srv_reg_check_name(const srv_reg_t *reg, const char *name, llm_error_t *err);

/* Validates an upload against the base (exactly as loading does), records its descriptor and
 * commits it under name. The adapter stays resident (it was just loaded). Consumes up.
 * *created: 1 new name or new version, 0 identical re-upload. Returns 0, or the validation /
 * store error (nothing is stored then). */
int srv_reg_commit_upload(srv_reg_t *reg, srv_store_upload_t *up, const char *name,
                          srv_reg_desc_t *out, int *created, llm_error_t *err);

/* Copies DIR (adapter_config.json + adapter_model.safetensors) into the store under name and
 * validates it. exclusive: fail with LLM_EEXIST-like LLM_EINVAL when name exists (vLLM's
 * load_lora_adapter). */
int srv_reg_import_dir(srv_reg_t *reg, const char *name, const char *dir, int exclusive,
                       srv_reg_desc_t *out, int *created, llm_error_t *err);
/* Imports every subdirectory of dir (name = subdirectory name). Stops at the first failure. */
int srv_reg_import_all(srv_reg_t *reg, const char *dir, llm_error_t *err);

/* Removes name; running requests keep their version. LLM_ENOTFOUND; -EBUSY when pinned. */
int srv_reg_delete(srv_reg_t *reg, const char *name, llm_error_t *err);
/* Pins (never evicted) or unpins name's current version. */
int srv_reg_pin(srv_reg_t *reg, const char *name, int on, llm_error_t *err);

int srv_reg_get(srv_reg_t *reg, const char *name, srv_reg_desc_t *out);
/* Names in order from offset; *out new array (caller frees), *n entries, *total names. */
int srv_reg_list(srv_reg_t *reg, size_t offset, size_t limit, srv_reg_desc_t **out, size_t *n,
                 size_t *total);

/* Resolves name to its current version and returns a reference to the compute-ready adapter,
 * loading it first when it is not resident. Returns NULL with err: LLM_ENOTFOUND for an
 * unknown name, or the load error. Release with srv_reg_release. */
adp_adapter_t *srv_reg_acquire(srv_reg_t *reg, const char *name, llm_error_t *err);
void srv_reg_release(adp_adapter_t *a);

/* Resident adapters and their bytes; registered names. */
void srv_reg_stats(srv_reg_t *reg, int *resident, size_t *bytes, size_t *names);

#endif
