/* srv_registry.c: names → versions (srv_store) → resident compute-ready adapters. */
#include "srv_registry.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    char version[SRV_STORE_VERSION_LEN + 1];
    adp_adapter_t *a;      /* the cache's own reference; NULL while loading */
    int loading;
    int pinned;
    unsigned long long last_used;
    long long uses;
} entry_t;

struct srv_reg_s {
    const core_model_t *base;
    const char *base_name;
    srv_met_t *met;
    srv_store_t *store;
    size_t budget;
    adp_load_opts_t lo; /* how every version is loaded (factor dtype) */
    entry_t *e;
    int n, cap;
    size_t resident_bytes;
    unsigned long long clock;
    /* where imported names came from (vLLM's "root"); per name, since versions are shared by
     * identical bytes. Not persisted: after a restart "root" is the version. */
    char (*src_name)[SRV_STORE_NAME_MAX + 1];
    char (*src_path)[1024];
    int n_src, cap_src;
    /* pinned names and the version each points at (few): a version is pinned while any
     * pinned name points at it */
    char (*pin_name)[SRV_STORE_NAME_MAX + 1];
    char (*pin_ver)[SRV_STORE_VERSION_LEN + 1];
    int n_pin, cap_pin;
};

static srv_reg_t *g_reg; /* the process's registry, for srv_reg_release's budget check */

/* g_mu held */
static void pin_set(srv_reg_t *r, const char *name, const char *version) {
    int i;
    for (i = 0; i < r->n_pin && strcmp(r->pin_name[i], name); i++) {}
    if (!version) { /* unpinned or deleted */
        if (i < r->n_pin) {
            r->n_pin--;
            memcpy(r->pin_name[i], r->pin_name[r->n_pin], sizeof r->pin_name[0]);
            memcpy(r->pin_ver[i], r->pin_ver[r->n_pin], sizeof r->pin_ver[0]);
        }
        return;
    }
    if (i == r->n_pin) {
        if (r->n_pin == r->cap_pin) {
            int cap = r->cap_pin ? r->cap_pin * 2 : 16;
            void *a = realloc(r->pin_name, (size_t)cap * sizeof *r->pin_name);
            if (!a) return;
            r->pin_name = a;
            void *b = realloc(r->pin_ver, (size_t)cap * sizeof *r->pin_ver);
            if (!b) return;
            r->pin_ver = b;
            r->cap_pin = cap;
        }
        snprintf(r->pin_name[r->n_pin++], sizeof r->pin_name[0], "%s", name);
    }
    snprintf(r->pin_ver[i], sizeof r->pin_ver[0], "%s", version);
}

static int version_pinned(const srv_reg_t *r, const char *version) {
    for (int i = 0; i < r->n_pin; i++)
        if (!strcmp(r->pin_ver[i], version)) return 1;
    return 0;
}

static void set_source(srv_reg_t *r, const char *name, const char *path) {
    int i;
    for (i = 0; i < r->n_src && strcmp(r->src_name[i], name); i++) {}
    if (i == r->n_src) {
        if (!path) return;
        if (r->n_src == r->cap_src) {
            int cap = r->cap_src ? r->cap_src * 2 : 16;
            void *a = realloc(r->src_name, (size_t)cap * sizeof *r->src_name);
            if (!a) return;
            r->src_name = a;
            void *b = realloc(r->src_path, (size_t)cap * sizeof *r->src_path);
            if (!b) return;
            r->src_path = b;
            r->cap_src = cap;
        }
        snprintf(r->src_name[r->n_src++], sizeof r->src_name[0], "%s", name);
    }
    if (path) {
        snprintf(r->src_path[i], sizeof r->src_path[0], "%s", path);
    } else { /* forget */
        r->n_src--;
        memcpy(r->src_name[i], r->src_name[r->n_src], sizeof r->src_name[0]);
        memcpy(r->src_path[i], r->src_path[r->n_src], sizeof r->src_path[0]);
    }
}

/* Adapter reference counts change only under this lock (requests release on the engine
 * thread, loads happen on HTTP threads). There is one registry per process. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- cache (g_mu held) ---- */

static entry_t *find(srv_reg_t *r, const char *version) {
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->e[i].version, version)) return &r->e[i];
    return NULL;
}

static entry_t *add_entry(srv_reg_t *r, const char *version) {
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 64;
        entry_t *ne = realloc(r->e, (size_t)cap * sizeof *ne);
        if (!ne) return NULL;
        r->e = ne;
        r->cap = cap;
    }
    entry_t *e = &r->e[r->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->version, sizeof e->version, "%s", version);
    return e;
}

static void drop_entry(srv_reg_t *r, entry_t *e) {
    if (e->a) {
        r->resident_bytes -= e->a->bytes;
        adp_adapter_unref(e->a);
    }
    *e = r->e[--r->n];
}

/* Evicts least recently used, unpinned, unused entries until the cache fits the budget. */
static void evict(srv_reg_t *r, const char *keep) {
    while (r->budget && r->resident_bytes > r->budget) {
        entry_t *victim = NULL;
        for (int i = 0; i < r->n; i++) {
            entry_t *e = &r->e[i];
            if (!strcmp(e->version, keep) || !e->a || e->loading || e->a->refs > 1 ||
                version_pinned(r, e->version))
                continue;
            if (!victim || e->last_used < victim->last_used) victim = e;
        }
        if (!victim) return; /* everything left is pinned or in use */
        drop_entry(r, victim);
        srv_met_adapter_evicted(r->met);
    }
}

/* ---- descriptors ---- */

static char *meta_json(const adp_adapter_t *a) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "method", adp_method_name(a->method));
    cJSON_AddNumberToObject(o, "rank_min", a->rank_min);
    cJSON_AddNumberToObject(o, "rank_max", a->rank_max);
    cJSON_AddStringToObject(o, "target_modules", a->target_modules);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void fill_desc(srv_reg_t *r, const srv_store_desc_t *st, srv_reg_desc_t *d) {
    memset(d, 0, sizeof *d);
    d->st = *st;
    char *js = NULL;
    if (srv_store_get_meta(r->store, st->version, &js, NULL) == 0) {
        cJSON *o = cJSON_Parse(js);
        const cJSON *m = cJSON_GetObjectItem(o, "method");
        const cJSON *t = cJSON_GetObjectItem(o, "target_modules");
        if (cJSON_IsString(m)) snprintf(d->method, sizeof d->method, "%s", m->valuestring);
        if (cJSON_IsString(t))
            snprintf(d->target_modules, sizeof d->target_modules, "%s", t->valuestring);
        d->rank_min = cJSON_GetObjectItem(o, "rank_min") ? cJSON_GetObjectItem(o, "rank_min")->valueint : 0;
        d->rank_max = cJSON_GetObjectItem(o, "rank_max") ? cJSON_GetObjectItem(o, "rank_max")->valueint : 0;
        cJSON_Delete(o);
        free(js);
    }
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < r->n_src; i++)
        if (!strcmp(r->src_name[i], st->name))
            snprintf(d->source, sizeof d->source, "%s", r->src_path[i]);
    entry_t *e = find(r, st->version);
    if (e && e->a) {
        d->resident = 1;
        d->resident_bytes = e->a->bytes;
    }
    if (e) d->uses = e->uses;
    pthread_mutex_unlock(&g_mu);
}

/* ---- public API ---- */

srv_reg_t *srv_reg_create(const core_model_t *base, const char *base_name, srv_met_t *met,
                          srv_store_t *store, size_t budget_bytes,
                          const adp_load_opts_t *load_opts) {
    srv_reg_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (load_opts) r->lo = *load_opts;
    r->base = base;
    r->base_name = base_name;
    r->met = met;
    r->store = store;
    r->budget = budget_bytes;
    /* pinned names, read once (pins are few; the full scan happens only here) */
    srv_store_desc_t page[256];
    size_t got = 0;
    char after[SRV_STORE_NAME_MAX + 1] = "";
    do {
        srv_store_list(store, after, 0, 256, page, &got, NULL);
        for (size_t i = 0; i < got; i++)
            if (page[i].pinned) pin_set(r, page[i].name, page[i].version);
        if (got) snprintf(after, sizeof after, "%s", page[got - 1].name);
    } while (got == 256);
    g_reg = r;
    return r;
}

void srv_reg_free(srv_reg_t *r) {
    if (!r) return;
    pthread_mutex_lock(&g_mu);
    while (r->n) drop_entry(r, &r->e[r->n - 1]);
    pthread_mutex_unlock(&g_mu);
    free(r->e);
    free(r->src_name);
    free(r->src_path);
    free(r->pin_name);
    free(r->pin_ver);
    if (g_reg == r) g_reg = NULL;
    free(r);
}

int srv_reg_check_name(const srv_reg_t *r, const char *name, llm_error_t *err) {
    int rc = srv_store_check_name(name, err);
    if (rc) return rc;
    if (r->base_name && !strcmp(name, r->base_name))
        return llm_err_set(err, LLM_EINVAL, "adapter name \"%s\" is the base model's name", name);
    return 0;
}

static void forget_if_unnamed(srv_reg_t *r, const char *version);

static int commit(srv_reg_t *r, srv_store_upload_t *up, const char *name, const char *source,
                  srv_reg_desc_t *out, int *created, llm_error_t *err) {
    int rc = srv_reg_check_name(r, name, err);
    if (rc) {
        srv_store_abort(up);
        return rc;
    }
    adp_adapter_t *a = NULL;
    double t0 = now_s();
    rc = adp_load_files(r->base, srv_store_upload_path(up, SRV_STORE_CONFIG),
                        srv_store_upload_path(up, SRV_STORE_WEIGHTS), name, &r->lo, &a, err);
    srv_met_adapter_load(r->met, now_s() - t0, rc == 0);
    if (rc) {
        /* messages name the part, not the server's temporary paths */
        for (int part = 0; err && part < 2; part++) {
            const char *tp = srv_store_upload_path(up, part);
            char *at;
            while (tp && (at = strstr(err->msg, tp))) {
                const char *nm = part ? "adapter_model.safetensors" : "adapter_config.json";
                size_t tl = strlen(tp), nl = strlen(nm);
                memmove(at + nl, at + tl, strlen(at + tl) + 1);
                memcpy(at, nm, nl);
            }
        }
        srv_store_abort(up); /* a refused adapter leaves nothing behind */
        return rc;
    }
    srv_store_desc_t old;
    int had_old = srv_store_get(r->store, name, &old) == 0;
    char *meta = meta_json(a);
    if (meta) srv_store_upload_set_meta(up, meta);
    free(meta);
    srv_store_desc_t st;
    int newv = 0;
    if ((rc = srv_store_commit(up, name, &st, &newv, err))) {
        pthread_mutex_lock(&g_mu);
        adp_adapter_unref(a);
        pthread_mutex_unlock(&g_mu);
        return rc;
    }
    /* keep the validated form resident under its version: the first request is warm */
    pthread_mutex_lock(&g_mu);
    set_source(r, name, source);
    if (st.pinned) pin_set(r, name, st.version); /* a pinned name's new version is pinned */
    entry_t *e = find(r, st.version);
    if (!e && (e = add_entry(r, st.version))) {
        e->a = a;
        a = NULL;
        e->pinned = st.pinned;
        e->last_used = ++r->clock;
        r->resident_bytes += e->a->bytes;
        evict(r, st.version);
    }
    if (a) adp_adapter_unref(a);
    pthread_mutex_unlock(&g_mu);
    if (had_old && strcmp(old.version, st.version)) forget_if_unnamed(r, old.version);
    if (created) *created = newv;
    if (out) fill_desc(r, &st, out);
    return 0;
}

int srv_reg_commit_upload(srv_reg_t *r, srv_store_upload_t *up, const char *name,
                          srv_reg_desc_t *out, int *created, llm_error_t *err) {
    return commit(r, up, name, NULL, out, created, err);
}

static int copy_into(srv_store_upload_t *up, int part, const char *path, llm_error_t *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return llm_err_set(err, LLM_ENOTFOUND, "%s: cannot read", path);
    char buf[1 << 16];
    size_t n;
    int rc = 0;
    while (!rc && (n = fread(buf, 1, sizeof buf, f)) > 0) rc = srv_store_write(up, part, buf, n);
    fclose(f);
    if (rc == LLM_ERANGE) return llm_err_set(err, rc, "%s: larger than max_upload_bytes", path);
    if (rc) return llm_err_set(err, rc, "%s: cannot store", path);
    return 0;
}

int srv_reg_import_dir(srv_reg_t *r, const char *name, const char *dir, int exclusive,
                       srv_reg_desc_t *out, int *created, llm_error_t *err) {
    int rc = srv_reg_check_name(r, name, err);
    if (rc) return rc;
    srv_store_desc_t cur;
    if (exclusive && srv_store_get(r->store, name, &cur) == 0)
        return llm_err_set(err, LLM_EINVAL, "The lora adapter '%s' has already been loaded.",
                           name);
    char cfg[4096], st[4096], bin[4096];
    struct stat sb;
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", dir);
    snprintf(bin, sizeof bin, "%s/adapter_model.bin", dir);
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        srv_met_adapter_load(r->met, -1, 0);
        return llm_err_set(err, LLM_ENOTFOUND, "adapter \"%s\": %s is not a directory", name, dir);
    }
    if (stat(st, &sb) != 0 && stat(bin, &sb) == 0)
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "adapter \"%s\": adapter_model.bin is a pickle, which this server "
                           "will not load (unpickling can run code); convert it with PEFT "
                           "(save_pretrained(..., safe_serialization=True))", name);
    srv_store_upload_t *up = srv_store_begin(r->store, err);
    if (!up) return err ? err->code : LLM_EIO;
    if ((rc = copy_into(up, SRV_STORE_CONFIG, cfg, err)) ||
        (rc = copy_into(up, SRV_STORE_WEIGHTS, st, err))) {
        srv_store_abort(up);
        srv_met_adapter_load(r->met, -1, 0);
        return rc;
    }
    return commit(r, up, name, dir, out, created, err);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int srv_reg_import_all(srv_reg_t *r, const char *dir, llm_error_t *err) {
    DIR *d = opendir(dir);
    if (!d) return llm_err_set(err, LLM_ENOTFOUND, "adapter_dir %s: cannot open", dir);
    size_t n = 0, cap = 64;
    char **names = malloc(cap * sizeof *names);
    struct dirent *de;
    while (names && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[4096];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
        if (n == cap) {
            char **nn = realloc(names, (cap *= 2) * sizeof *names);
            if (!nn) break;
            names = nn;
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (!names) return llm_err_set(err, LLM_ENOMEM, "out of memory");
    qsort(names, n, sizeof *names, cmp_str);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        if (!rc) rc = srv_reg_import_dir(r, names[i], p, 0, NULL, NULL, err);
        free(names[i]);
    }
    free(names);
    return rc;
}

/* Drops the cache entry of version when nothing can reach it any more. */
static void forget_if_unnamed(srv_reg_t *r, const char *version) {
    srv_store_desc_t d;
    if (srv_store_get_version(r->store, version, &d) == 0) return; /* still stored */
    pthread_mutex_lock(&g_mu);
    entry_t *e = find(r, version);
    if (e && e->a && !e->loading) drop_entry(r, e); /* running requests keep their own refs */
    pthread_mutex_unlock(&g_mu);
}

int srv_reg_delete(srv_reg_t *r, const char *name, llm_error_t *err) {
    srv_store_desc_t d;
    int rc = srv_store_get(r->store, name, &d);
    if (rc) return llm_err_set(err, rc, "The lora adapter '%s' cannot be found.", name);
    if ((rc = srv_store_delete(r->store, name, SRV_STORE_DEL_UNPINNED, err))) return rc;
    pthread_mutex_lock(&g_mu);
    set_source(r, name, NULL);
    pthread_mutex_unlock(&g_mu);
    forget_if_unnamed(r, d.version);
    return 0;
}

int srv_reg_pin(srv_reg_t *r, const char *name, int on, llm_error_t *err) {
    int rc = srv_store_pin(r->store, name, on, err);
    if (rc) return rc;
    srv_store_desc_t d;
    if (srv_store_get(r->store, name, &d) == 0) {
        pthread_mutex_lock(&g_mu);
        pin_set(r, name, on ? d.version : NULL);
        if (!on) evict(r, ""); /* an unpinned version may now be over the budget */
        pthread_mutex_unlock(&g_mu);
    }
    return 0;
}

int srv_reg_get(srv_reg_t *r, const char *name, srv_reg_desc_t *out) {
    srv_store_desc_t d;
    int rc = srv_store_get(r->store, name, &d);
    if (rc) return rc;
    fill_desc(r, &d, out);
    return 0;
}

int srv_reg_list(srv_reg_t *r, size_t offset, size_t limit, srv_reg_desc_t **out, size_t *n,
                 size_t *total) {
    srv_store_desc_t *tmp = calloc(limit ? limit : 1, sizeof *tmp);
    *out = calloc(limit ? limit : 1, sizeof **out);
    if (!tmp || !*out) {
        free(tmp);
        free(*out);
        *out = NULL;
        return LLM_ENOMEM;
    }
    srv_store_list(r->store, NULL, offset, limit, tmp, n, total);
    for (size_t i = 0; i < *n; i++) fill_desc(r, &tmp[i], &(*out)[i]);
    free(tmp);
    return 0;
}

adp_adapter_t *srv_reg_acquire(srv_reg_t *r, const char *name, llm_error_t *err) {
    srv_store_desc_t d;
    if (srv_store_acquire(r->store, name, &d) != 0) { /* holds the version's files */
        llm_err_set(err, LLM_ENOTFOUND, "The model '%s' does not exist.", name);
        return NULL;
    }
    adp_adapter_t *a = NULL;
    pthread_mutex_lock(&g_mu);
    for (;;) {
        entry_t *e = find(r, d.version);
        if (e && e->a) {
            adp_adapter_ref(e->a);
            e->last_used = ++r->clock;
            e->uses++;
            a = e->a;
            break;
        }
        if (e && e->loading) { /* someone else is loading this version: wait for it */
            pthread_cond_wait(&g_cv, &g_mu);
            continue;
        }
        if (!(e = add_entry(r, d.version))) {
            llm_err_set(err, LLM_ENOMEM, "out of memory");
            break;
        }
        e->loading = 1;
        e->pinned = d.pinned;
        pthread_mutex_unlock(&g_mu);
        char cfg[4096], st[4096];
        adp_adapter_t *na = NULL;
        double t0 = now_s();
        int rc = srv_store_paths(r->store, d.version, cfg, st, sizeof cfg);
        if (!rc) rc = adp_load_files(r->base, cfg, st, name, &r->lo, &na, err);
        srv_met_adapter_load(r->met, now_s() - t0, rc == 0);
        pthread_mutex_lock(&g_mu);
        e = find(r, d.version);
        e->loading = 0;
        pthread_cond_broadcast(&g_cv);
        if (rc) {
            *e = r->e[--r->n];
            break;
        }
        e->a = na;
        r->resident_bytes += na->bytes;
        evict(r, d.version);
        /* loop: takes the reference through the resident path */
    }
    pthread_mutex_unlock(&g_mu);
    srv_store_blob_release(r->store, d.version);
    return a;
}

void srv_reg_release(adp_adapter_t *a) {
    if (!a) return;
    pthread_mutex_lock(&g_mu);
    adp_adapter_unref(a);
    /* an adapter that was in use could not be evicted: now it can */
    if (g_reg && g_reg->budget && g_reg->resident_bytes > g_reg->budget) evict(g_reg, "");
    pthread_mutex_unlock(&g_mu);
}

void srv_reg_stats(srv_reg_t *r, int *resident, size_t *bytes, size_t *names) {
    pthread_mutex_lock(&g_mu);
    int n = 0;
    for (int i = 0; i < r->n; i++) n += r->e[i].a != NULL;
    *resident = n;
    *bytes = r->resident_bytes;
    pthread_mutex_unlock(&g_mu);
    srv_store_stats_t st;
    srv_store_stats(r->store, &st);
    if (names) *names = st.names;
}
