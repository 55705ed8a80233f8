#include "srv_registry.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    srv_reg_info_t info;
    adp_adapter_t *a; /* the registry's own reference */
} entry_t;

struct srv_reg_s {
    const core_model_t *base;
    const char *base_name;
    srv_met_t *met;
    entry_t *e;
    int n, cap;
};

/* Adapter reference counts are changed only under this lock (requests release on the engine
 * thread, loads happen on HTTP threads). One lock for all registries: there is one. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

srv_reg_t *srv_reg_create(const core_model_t *base, const char *base_name, srv_met_t *met) {
    srv_reg_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->met = met;
    r->base = base;
    r->base_name = base_name;
    return r;
}

void srv_reg_free(srv_reg_t *r) {
    if (!r) return;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < r->n; i++) adp_adapter_unref(r->e[i].a);
    pthread_mutex_unlock(&g_mu);
    free(r->e);
    free(r);
}

int srv_reg_check_name(const srv_reg_t *r, const char *name, llm_error_t *err) {
    size_t n = strlen(name);
    if (n == 0 || n > 100)
        return llm_err_set(err, LLM_EINVAL, "adapter name must be 1 to 100 characters");
    if (name[0] == '.')
        return llm_err_set(err, LLM_EINVAL, "adapter name must not start with '.'");
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return llm_err_set(err, LLM_EINVAL,
                               "adapter name may only contain letters, digits, '.', '_' and '-'");
    }
    if (r->base_name && strcmp(name, r->base_name) == 0)
        return llm_err_set(err, LLM_EINVAL, "adapter name \"%s\" is the base model's name",
                           name);
    return 0;
}

static int find(const srv_reg_t *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->e[i].info.name, name) == 0) return i;
    return -1;
}

int srv_reg_load(srv_reg_t *r, const char *name, const char *dir, llm_error_t *err) {
    int rc = srv_reg_check_name(r, name, err);
    if (rc) return rc;
    pthread_mutex_lock(&g_mu);
    int exists = find(r, name) >= 0;
    pthread_mutex_unlock(&g_mu);
    if (exists)
        return llm_err_set(err, LLM_EINVAL, "The lora adapter '%s' has already been loaded.",
                           name);
    adp_adapter_t *a = NULL;
    adp_load_opts_t opts = {.base_name = NULL};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = adp_load_dir(r->base, dir, name, &opts, &a, err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    srv_met_adapter_load(r->met, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
                         rc == 0);
    if (rc) return rc;
    pthread_mutex_lock(&g_mu);
    if (find(r, name) >= 0) { /* lost a race with a concurrent load of the same name */
        adp_adapter_unref(a);
        pthread_mutex_unlock(&g_mu);
        return llm_err_set(err, LLM_EINVAL, "The lora adapter '%s' has already been loaded.",
                           name);
    }
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 16;
        entry_t *ne = realloc(r->e, (size_t)cap * sizeof *ne);
        if (!ne) {
            adp_adapter_unref(a);
            pthread_mutex_unlock(&g_mu);
            return llm_err_set(err, LLM_ENOMEM, "out of memory");
        }
        r->e = ne;
        r->cap = cap;
    }
    entry_t *e = &r->e[r->n++];
    memset(e, 0, sizeof *e);
    e->a = a;
    snprintf(e->info.name, sizeof e->info.name, "%s", name);
    snprintf(e->info.path, sizeof e->info.path, "%s", dir);
    e->info.created = time(NULL);
    e->info.method = a->method;
    e->info.rank_min = a->rank_min;
    e->info.rank_max = a->rank_max;
    e->info.bytes = a->bytes;
    snprintf(e->info.target_modules, sizeof e->info.target_modules, "%s", a->target_modules);
    pthread_mutex_unlock(&g_mu);
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int srv_reg_load_dir(srv_reg_t *r, const char *dir, llm_error_t *err) {
    DIR *d = opendir(dir);
    if (!d) return llm_err_set(err, LLM_ENOTFOUND, "adapter_dir %s: cannot open", dir);
    char *names[4096];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 4096) {
        if (de->d_name[0] == '.') continue;
        char p[4096];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        if (!rc) rc = srv_reg_load(r, names[i], p, err);
        free(names[i]);
    }
    return rc;
}

int srv_reg_unload(srv_reg_t *r, const char *name) {
    pthread_mutex_lock(&g_mu);
    int i = find(r, name);
    if (i < 0) {
        pthread_mutex_unlock(&g_mu);
        return LLM_ENOTFOUND;
    }
    adp_adapter_unref(r->e[i].a);
    r->e[i] = r->e[--r->n];
    pthread_mutex_unlock(&g_mu);
    return 0;
}

adp_adapter_t *srv_reg_acquire(srv_reg_t *r, const char *name) {
    pthread_mutex_lock(&g_mu);
    int i = find(r, name);
    adp_adapter_t *a = i >= 0 ? r->e[i].a : NULL;
    if (a) adp_adapter_ref(a);
    pthread_mutex_unlock(&g_mu);
    return a;
}

void srv_reg_release(adp_adapter_t *a) {
    if (!a) return;
    pthread_mutex_lock(&g_mu);
    adp_adapter_unref(a);
    pthread_mutex_unlock(&g_mu);
}

srv_reg_info_t *srv_reg_list(srv_reg_t *r, int *n) {
    pthread_mutex_lock(&g_mu);
    srv_reg_info_t *out = malloc(((size_t)r->n + 1) * sizeof *out);
    if (out)
        for (int i = 0; i < r->n; i++) out[i] = r->e[i].info;
    *n = out ? r->n : 0;
    pthread_mutex_unlock(&g_mu);
    return out;
}

void srv_reg_stats(srv_reg_t *r, int *count, size_t *bytes) {
    pthread_mutex_lock(&g_mu);
    *count = r->n;
    *bytes = 0;
    for (int i = 0; i < r->n; i++) *bytes += r->e[i].info.bytes;
    pthread_mutex_unlock(&g_mu);
}
