/* srv_registry.h: the adapters the server knows, by name.
 *
 * Names map to loaded adapters (adp_adapter_t, compute-ready). A request takes references to
 * the adapters it runs with (srv_reg_acquire) and releases them when it ends, so unloading a
 * name never pulls an adapter out from under a running request. All functions are thread-safe
 * (one mutex; loading and validation of files happen outside it).
 */
#ifndef SRV_REGISTRY_H
#define SRV_REGISTRY_H

#include <stddef.h>
#include <time.h>

#include "adapter.h"
#include "llm_error.h"
#include "model.h"
#include "srv_metrics.h"

typedef struct srv_reg_s srv_reg_t;

typedef struct srv_reg_info_s {
    char name[128];
    char path[1024];
    time_t created;
    adp_method_t method;
    int rank_min, rank_max;
    size_t bytes;
    char target_modules[256];
} srv_reg_info_t;

/* base, base_name and met (may be NULL) are borrowed and must outlive the registry; loads are
 * timed into met. */
srv_reg_t *srv_reg_create(const core_model_t *base, const char *base_name, srv_met_t *met);
void srv_reg_free(srv_reg_t *reg);

/* A name is 1..100 characters of [A-Za-z0-9._-], not starting with '.'; the base's own name is
 * reserved. Returns 0 or LLM_EINVAL with err saying why. */
int srv_reg_check_name(const srv_reg_t *reg, const char *name, llm_error_t *err);

/* Loads DIR and registers it under name. LLM_EINVAL (bad name, or already loaded: message
 * says so), or the loader's error. */
int srv_reg_load(srv_reg_t *reg, const char *name, const char *dir, llm_error_t *err);
/* Loads every subdirectory of dir (name = subdirectory name). Stops at the first failure. */
int srv_reg_load_dir(srv_reg_t *reg, const char *dir, llm_error_t *err);
/* Removes name; running requests keep their references. LLM_ENOTFOUND when absent. */
int srv_reg_unload(srv_reg_t *reg, const char *name);

/* Takes a reference to name's adapter, or NULL when absent. Release with srv_reg_release. */
adp_adapter_t *srv_reg_acquire(srv_reg_t *reg, const char *name);
void srv_reg_release(adp_adapter_t *a);

/* Snapshot of the registered adapters (new array, caller frees); *n receives the count. */
srv_reg_info_t *srv_reg_list(srv_reg_t *reg, int *n);
/* Resident adapters and their bytes. */
void srv_reg_stats(srv_reg_t *reg, int *count, size_t *bytes);

#endif
