/* srv_serve.c: `loramux serve`: start-up order, signals and graceful shutdown.
 *
 * Order: configuration → HTTP listening (so /health answers at once) → model, tokenizer, chat
 * template, adapters → engine with a warm-up step → ready. SIGTERM/SIGINT: /ready turns 503,
 * new requests get 503, running ones get up to shutdown_grace seconds to finish; what is left
 * is cancelled; exit 0.
 */
#include "srv_serve.h"

#include <cblas.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "srv_http.h"
#include "srv_server.h"

extern char **environ;

static srv_log_level_t g_level = SRV_LOG_INFO;

static void logf_(srv_log_level_t lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(srv_log_level_t lvl, const char *fmt, ...) {
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (lvl > g_level) return;
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s loramux %s: ", ts, names[lvl]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int read_keys(srv_server_t *s, const srv_config_t *cfg, llm_error_t *err) {
    s->api_keys = calloc(1024, sizeof(char *));
    if (!s->api_keys) return LLM_ENOMEM;
    if (cfg->api_key[0]) s->api_keys[s->n_keys++] = strdup(cfg->api_key);
    if (cfg->api_key_file[0]) {
        FILE *f = fopen(cfg->api_key_file, "r");
        if (!f) return llm_err_set(err, LLM_ENOTFOUND, "api_key_file %s: cannot read",
                                   cfg->api_key_file);
        char line[1024];
        while (fgets(line, sizeof line, f) && s->n_keys < 1024) {
            line[strcspn(line, "\r\n")] = '\0';
            if (line[0] && line[0] != '#') s->api_keys[s->n_keys++] = strdup(line);
        }
        fclose(f);
    }
    return 0;
}

static int32_t kv_blocks(const srv_config_t *cfg, const core_model_t *m) {
    const core_model_config_t *mc = &m->cfg;
    const double per_block = (double)core_kv_block_bytes(mc, core_kv_type_for(m->wtype));
    if (cfg->kv_cache_mb > 0) return (int32_t)(cfg->kv_cache_mb * 1048576.0 / per_block);
    double want = (double)cfg->max_running * core_kv_blocks_for(mc->max_pos);
    /* at most a quarter of the machine's memory */
    double phys = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    double cap = phys / 4 / per_block;
    return (int32_t)(want < cap ? want : cap);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *dir) { nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

int srv_serve_main(int argc, char **argv) {
    srv_config_t cfg;
    llm_error_t err = {0};
    int rc = srv_cfg_load(argc, argv, environ, &cfg, &err);
    if (rc == 1) return 0;
    if (rc) {
        fprintf(stderr, "loramux serve: %s\n", err.msg);
        return 2;
    }
    g_level = cfg.log_level;
    int threads = cfg.threads > 0 ? cfg.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);

    /* Signals are taken by sigwait below; every thread started from here inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv_server_t s = {.cfg = &cfg, .created = time(NULL), .model_name = cfg.model_name};
    srv_store_t *store = NULL;
    char tmp_root[4096] = "";
    srv_http_t *http = NULL;
    int exit_code = 1;
    s.met = srv_met_create(cfg.metrics_adapter_labels);
    if (!s.met || read_keys(&s, &cfg, &err)) {
        logf_(SRV_LOG_ERROR, "%s", err.msg[0] ? err.msg : "out of memory");
        goto out;
    }
    if (srv_http_start(&s, &http, &err)) {
        logf_(SRV_LOG_ERROR, "%s", err.msg);
        goto out;
    }
    logf_(SRV_LOG_INFO, "listening on http://%s:%d (auth %s)", cfg.host, cfg.port,
          s.n_keys ? "on" : "off");
    {
        const char *core = openblas_get_corename();
        logf_(SRV_LOG_INFO, "OpenBLAS core %s (OPENBLAS_CORETYPE=%s)", core,
              getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset");
        if (core && !strcasecmp(core, "haswell") && __builtin_cpu_supports("avx512f"))
            logf_(SRV_LOG_WARN, "this CPU has AVX-512 but OpenBLAS uses its Haswell kernels; "
                  "set OPENBLAS_CORETYPE=SkylakeX for faster prefill");
    }

    double t0 = srv_now();
    if (core_model_load_as(cfg.model, (kern_wtype_t)cfg.weights, &s.model, &err) ||
        tok_load(cfg.model, &s.tok, &err)) {
        logf_(SRV_LOG_ERROR, "%s", err.msg);
        goto out;
    }
    logf_(SRV_LOG_INFO, "model %s (%s, %d layers, hidden %d, vocab %d, context %d) loaded in "
          "%.2f s: %s weights, %.1f MB; served as \"%s\"", cfg.model, s.model->cfg.arch_name,
          s.model->cfg.n_layers, s.model->cfg.hidden_size, s.model->cfg.vocab_size,
          s.model->cfg.max_pos, srv_now() - t0, kern_wtype_name(s.model->wtype),
          s.model->weight_bytes / 1e6, s.model_name);
    if (srv_chat_load(cfg.model, &s.chat, &err)) {
        snprintf(s.chat_error, sizeof s.chat_error, "%s", err.msg);
        logf_(SRV_LOG_WARN, "chat completions unavailable: %s", err.msg);
        s.chat = NULL;
    }
    /* The adapter registry lives in registry_dir; without one, in a private temporary
     * directory removed at exit (uploads then do not survive a restart). */
    const char *root = cfg.registry_dir;
    if (!root[0]) {
        snprintf(tmp_root, sizeof tmp_root, "%s/loramux-registry-XXXXXX",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(tmp_root)) {
            logf_(SRV_LOG_ERROR, "cannot create a temporary registry directory");
            goto out;
        }
        root = tmp_root;
    }
    double ts = srv_now();
    if (srv_store_open(root, cfg.max_upload_bytes, &store, &err)) {
        logf_(SRV_LOG_ERROR, "registry: %s", err.msg);
        goto out;
    }
    if (srv_store_open_notes(store)[0])
        logf_(SRV_LOG_WARN, "registry repaired at open:\n%s", srv_store_open_notes(store));
    s.store = store;
    /* adapter_dtype's choices are "bf16|fp32" */
    const adp_load_opts_t lo = {.dtype = cfg.adapter_dtype == 0 ? KERN_W_BF16 : KERN_W_F32};
    s.reg = srv_reg_create(s.model, s.model_name, s.met, store,
                           (size_t)cfg.adapter_memory_budget_mb << 20, &lo);
    srv_req_set_adapter_release(srv_reg_release);
    if (!s.reg) goto out;
    if (cfg.adapter_dir[0] && srv_reg_import_all(s.reg, cfg.adapter_dir, &err)) {
        logf_(SRV_LOG_ERROR, "%s", err.msg);
        goto out;
    }
    {
        int n_res;
        size_t bytes, names;
        srv_reg_stats(s.reg, &n_res, &bytes, &names);
        /* adapters present at start-up get the first per-adapter metric labels */
        srv_reg_desc_t *list = NULL;
        size_t n = 0;
        srv_reg_list(s.reg, 0, 1024, &list, &n, NULL);
        for (size_t i = 0; list && i < n; i++) srv_met_adapter(s.met, list[i].st.name);
        free(list);
        logf_(SRV_LOG_INFO, "registry %s%s: %zu adapters (%d resident, %.1f MB), opened in "
              "%.3f s", root, cfg.registry_dir[0] ? "" : " (temporary)", names, n_res,
              bytes / 1e6, srv_now() - ts);
    }
    srv_engine_opts_t eo = {.max_running = cfg.max_running,
                            .max_step_tokens = cfg.max_step_tokens,
                            .max_queue = cfg.max_queue,
                            .kv_blocks = kv_blocks(&cfg, s.model),
                            .max_adapters_per_step = cfg.max_adapters_per_step,
                            .n_threads = threads};
    if (srv_engine_start(s.model, s.tok, s.met, &eo, &s.eng, &err)) {
        logf_(SRV_LOG_ERROR, "%s", err.msg);
        goto out;
    }
    const kern_wtype_t kvt = core_kv_type_for(s.model->wtype);
    logf_(SRV_LOG_INFO, "engine ready: max_running %d, step budget %d tokens, KV cache %d "
          "blocks of %d positions (%s, %.0f MiB); %s; adapters %s", eo.max_running,
          eo.max_step_tokens, eo.kv_blocks, CORE_KV_BLOCK, kern_wtype_name(kvt),
          (double)eo.kv_blocks * (double)core_kv_block_bytes(&s.model->cfg, kvt) / 1048576.0,
          srv_engine_describe(s.eng), kern_wtype_name(lo.dtype));
    s.ready = 1;

    int sig = 0;
    sigwait(&sigs, &sig);
    logf_(SRV_LOG_INFO, "%s: draining (up to %.0f s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
          cfg.shutdown_grace);
    s.draining = 1;
    srv_engine_drain(s.eng);
    srv_http_quiesce(http);
    double deadline = srv_now() + cfg.shutdown_grace;
    while (srv_engine_active(s.eng) > 0 && srv_now() < deadline) usleep(20 * 1000);
    int left = srv_engine_active(s.eng);
    if (left) logf_(SRV_LOG_WARN, "cancelling %d unfinished requests", left);
    srv_engine_stop(s.eng); /* aborts what is left; waiting connections finish */
    s.eng = NULL;
    usleep(100 * 1000);     /* let connection threads write their last bytes */
    exit_code = 0;
out:
    srv_http_stop(http);
    srv_engine_stop(s.eng);
    srv_reg_free(s.reg);
    srv_store_free(store);
    if (tmp_root[0]) rm_tree(tmp_root);
    srv_chat_free(s.chat);
    tok_free(s.tok);
    core_model_free(s.model);
    srv_met_free(s.met);
    for (int i = 0; i < s.n_keys; i++) free(s.api_keys[i]);
    free(s.api_keys);
    srv_cfg_deinit(&cfg);
    if (exit_code == 0) logf_(SRV_LOG_INFO, "stopped");
    return exit_code;
}
