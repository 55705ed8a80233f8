/* bench_adapter_step.c: cost of the adapter path in one decode step.
 *
 * A synthetic model of SmolLM-135M's shape (hidden 576, 30 layers, 9/3 heads, ffn 1536,
 * vocab 49152) and 32 distinct rank-16 LoRA adapters on all 7 projections. 32 sequences with a
 * 32-token prompt each; then decode steps of 32 tokens, alternating base-only steps and steps
 * where every sequence has its own adapter, so both are measured in the same conditions.
 * A third kind of step has every sequence in a set of its own that names adapter 0 ("hot":
 * the same items, tiles and parallel regions, but one adapter's factors stay in cache instead
 * of 32 adapters' streaming from DRAM): hot − base is the arithmetic and regions with no
 * factor traffic. A fourth pass reads the 32 adapters' factors and does nothing else: same
 * order, same split over the forward's pool, same 8-stream access as the BGMV kernels. When
 * cold − base is no more than that pass, the arithmetic is hidden under the reads (so cold −
 * hot is not the cost of the reads, and its bytes over it no bandwidth), and only fewer bytes
 * or more bandwidth can make the adapter path cheaper.
 * Prints medians and ratios, for fp32 weights and factors (the reference) and for bf16
 * weights and factors (the server's default), in one run. Not a test: run by `make bench`.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "adapter.h"
#include "forward.h"
#include "linear.h"
#include "model.h"
#include "synth_adapter.h"
#include "synth_model.h"
#include "test_util.h"

enum { NSEQ = 32, PROMPT = 32, STEPS = 15 };

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run(const char *dir, kern_wtype_t wt, kern_wtype_t at);

/* ---- the reads-only pass ---- */

/* One (layer, projection) of the reads-only pass: the factors of the sequences' adapters. */
typedef struct {
    adp_adapter_t *const *ad;
    int layer;
    core_proj_t proj;
    volatile uint64_t sink[64];
} reads_job_t;

/* Reads n bytes as 8 interleaved streams of whole 64-byte lines (the rest word by word),
 * like the BGMV kernels' 8 A rows at a time: the same access pattern without the arithmetic.
 * Not bench_stream_sum (bench_stream.h): that one reads 4 streams, leaves the tail out and
 * adds the bf16 bits as floats.
 * AVX-512 where the CPU has it, else plain C (which the compiler vectorises less well: the
 * figure is then only an upper bound of the floor). */
__attribute__((target("avx512f"))) static uint64_t read_bytes_avx512(const void *p, size_t n) {
    const char *c = p;
    const size_t q = n / 64 / 8 * 64; /* bytes per stream */
    __m512i a[8];
    for (int s = 0; s < 8; s++) a[s] = _mm512_setzero_si512();
    for (size_t i = 0; i < q; i += 64)
        for (int s = 0; s < 8; s++)
            a[s] = _mm512_add_epi64(a[s], _mm512_loadu_si512(c + (size_t)s * q + i));
    for (int s = 1; s < 8; s++) a[0] = _mm512_add_epi64(a[0], a[s]);
    uint64_t t = (uint64_t)_mm512_reduce_add_epi64(a[0]);
    for (size_t i = 8 * q; i + 8 <= n; i += 8) t += *(const uint64_t *)(c + i);
    return t;
}

static uint64_t read_bytes(const void *p, size_t n) {
    if (__builtin_cpu_supports("avx512f")) return read_bytes_avx512(p, n);
    const uint64_t *w = p;
    uint64_t t = 0;
    for (size_t i = 0; i < n / 8; i++) t += w[i];
    return t;
}

static void reads_range(void *arg, int64_t i0, int64_t i1, int tid) {
    reads_job_t *j = arg;
    uint64_t acc = 0;
    for (int64_t i = i0; i < i1; i++) {
        const adp_module_t *md = adp_module(j->ad[i], j->layer, j->proj);
        if (md->kind == ADP_K_NONE) continue;
        acc += read_bytes(md->fa.data, (size_t)md->fa.rows * (size_t)md->fa.cols *
                                            kern_wtype_size(md->fa.type));
        acc += read_bytes(md->fbt.data, (size_t)md->fbt.rows * (size_t)md->fbt.cols *
                                             kern_wtype_size(md->fbt.type));
    }
    j->sink[tid % 64] += acc;
}

/* Every factor the 32-adapter step reads, in its order (layer by layer, projection by
 * projection, sequences split across the forward's own pool as the hook splits them), and
 * nothing else: the floor of that step's adapter cost for this access pattern, on this
 * machine, now. (Each adapter's whole slab read front to back was ~30 % faster, 6.0–6.3 ms
 * against 8.5–9.2, but a layer-by-layer forward cannot read in that order; each module read
 * as one stream instead of 8 was ~15 % faster, but shrinks reading one or four A rows at a
 * time were not faster in the real step: 2026-11-23, alternating runs.) */
static void reads_pass(core_fwd_t *fwd, adp_adapter_t *const *ad, int n_layers) {
    static reads_job_t j;
    j.ad = ad;
    for (int l = 0; l < n_layers; l++)
        for (int p = 0; p < CORE_PROJ_COUNT; p++) {
            j.layer = l;
            j.proj = (core_proj_t)p;
            kern_pool_run(core_exec_pool(core_fwd_exec(fwd)), reads_range, &j, NSEQ, 1);
        }
}

int main(int argc, char **argv) {
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) { /* not a directory to write into */
        const int help = argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"));
        fprintf(help ? stdout : stderr,
                "usage: bench_adapter_step [DIR]\n"
                "  DIR holds the synthetic SmolLM-shaped model and its 32 adapters, written there\n"
                "  on the first run (default /tmp/loramux-bench-smollm)\n");
        return help ? 0 : 2;
    }
    const char *dir = argc > 1 ? argv[1] : "/tmp/loramux-bench-smollm";
    if (run(dir, KERN_W_F32, KERN_W_F32) || run(dir, KERN_W_BF16, KERN_W_BF16)) return 1;
    return 0;
}

static int run(const char *dir, kern_wtype_t wt, kern_wtype_t at) {
    char path[4096];
    synth_model_opts_t mo = synth_model_defaults();
    mo.hidden = 576;
    mo.intermediate = 1536;
    mo.n_layers = 30;
    mo.n_heads = 9;
    mo.n_kv_heads = 3;
    mo.vocab = 49152;
    mo.max_pos = 2048;
    mo.tie_embeddings = 1;
    mo.dtype = CORE_DT_BF16;
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/config.json", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "writing synthetic SmolLM-135M-shaped model to %s\n", dir);
        if (synth_model_write(&mo, dir, NULL)) return 1;
    }
    llm_error_t err = {0};
    core_model_t *m;
    if (core_model_load_as(dir, wt, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    sa_shape_t shape = sa_shape_from_config(&m->cfg);
    adp_adapter_t *ad[NSEQ];
    adp_set_t sets[NSEQ];
    for (int i = 0; i < NSEQ; i++) {
        snprintf(path, sizeof path, "%s/adapter-%02d", dir, i);
        mkdir(path, 0755);
        char cfgp[4200];
        snprintf(cfgp, sizeof cfgp, "%s/adapter_config.json", path);
        if (stat(cfgp, &sb) != 0) {
            sa_opts_t o = sa_opts_defaults(SA_LORA);
            o.r = 16;
            o.alpha = 32;
            o.targets = SA_ALL;
            o.seed = 100 + (uint64_t)i;
            o.dtype = CORE_DT_BF16;
            if (sa_write(path, &shape, &o, NULL)) return 1;
        }
        const adp_load_opts_t lo = {.dtype = at};
        if (adp_load_dir(m, path, path, &lo, &ad[i], &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        sets[i] = (adp_set_t){.n = 1, .a = {ad[i]}, .w = {1.0f}};
    }
    /* the hot set: 32 distinct sets (the hook groups segments by set) that all name adapter
     * 0, so the step has the same 32 items as the cold one but reads one adapter's factors */
    adp_set_t hot_sets[NSEQ];
    for (int i = 0; i < NSEQ; i++) hot_sets[i] = (adp_set_t){.n = 1, .a = {ad[0]}, .w = {1.0f}};
    core_kv_pool_t *pool;
    core_fwd_t *fwd;
    adp_hook_t *hook;
    core_lin_hook_t lh;
    const int max_tok = NSEQ * PROMPT;
    if (core_kv_pool_create_as(&m->cfg, NSEQ * 8, core_kv_type_for(m->wtype), &pool) ||
        core_fwd_create(m, max_tok, 0, &fwd) ||
        adp_hook_create(m, max_tok, &hook))
        return 1;
    adp_hook_bind(hook, &lh);
    core_fwd_set_hook(fwd, &lh);
    core_seq_t seqs[NSEQ];
    int32_t prompt[PROMPT], toks[NSEQ];
    for (int t = 0; t < PROMPT; t++) prompt[t] = 1 + (t * 37) % 1000;
    core_step_seg_t segs[NSEQ];
    float *logits = malloc((size_t)NSEQ * m->cfg.vocab_size * sizeof(float));
    for (int i = 0; i < NSEQ; i++) {
        core_seq_init(&seqs[i], pool, m->cfg.max_pos);
        segs[i] = (core_step_seg_t){.seq = &seqs[i], .tokens = prompt, .n_tok = PROMPT,
                                    .logits = CORE_LOGITS_LAST, .adapter = &sets[i]};
        toks[i] = 5 + i;
    }
    if (core_fwd_step(fwd, segs, NSEQ, logits, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double st[4][STEPS]; /* base, cold (32 adapters' factors), hot (one adapter's), reads */
    for (int s = -2; s < STEPS; s++) { /* two warm-up rounds */
        for (int mode = 0; mode < 3; mode++) {
            for (int i = 0; i < NSEQ; i++)
                segs[i] = (core_step_seg_t){.seq = &seqs[i], .tokens = &toks[i], .n_tok = 1,
                                            .logits = CORE_LOGITS_LAST,
                                            .adapter = mode == 1   ? &sets[i]
                                                       : mode == 2 ? &hot_sets[i]
                                                                   : NULL};
            double t0 = now_ms();
            if (core_fwd_step(fwd, segs, NSEQ, logits, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            double dt = now_ms() - t0;
            if (s >= 0) st[mode][s] = dt;
        }
        double t0 = now_ms();
        reads_pass(fwd, ad, m->cfg.n_layers);
        if (s >= 0) st[3][s] = now_ms() - t0;
    }
    for (int mode = 0; mode < 4; mode++) qsort(st[mode], STEPS, sizeof(double), cmp_d);
    const double mb = st[0][STEPS / 2], ma = st[1][STEPS / 2], mh = st[2][STEPS / 2],
                 mr = st[3][STEPS / 2];
    size_t bytes = 0;
    for (int i = 0; i < NSEQ; i++) bytes += ad[i]->bytes;
    printf("decode step, %d sequences, SmolLM-135M shape (%s weights, %s adapters), %d steps "
           "each:\n", NSEQ, kern_wtype_name(wt), kern_wtype_name(at), STEPS);
    printf("  base only:                          median %.2f ms  (%.0f tok/s)\n", mb,
           NSEQ / mb * 1e3);
    printf("  32 distinct r=16 LoRA, 7 projections: median %.2f ms  (%.0f tok/s)\n", ma,
           NSEQ / ma * 1e3);
    printf("  32 x one adapter's factors (hot):   median %.2f ms  (%.0f tok/s)\n", mh,
           NSEQ / mh * 1e3);
    printf("  adapter path cost: +%.1f %% (adapters resident: %.1f MB)\n", (ma / mb - 1) * 100,
           bytes / 1e6);
    printf("  arithmetic and regions with the factors hot (hot - base): %+.2f ms; cold - hot: "
           "%+.2f ms\n", mh - mb, ma - mh);
    printf("  reading the 32 adapters' factors alone, no arithmetic: median %.2f ms = %.1f GB/s "
           "(cold - base: %+.2f ms)\n", mr, bytes / mr * 1e-6, ma - mb);
    printf("  85 %% of base would allow +%.2f ms: %.1f GB/s of factor reads with no other cost\n",
           mb / 0.85 - mb, bytes / (mb / 0.85 - mb) * 1e-6);
    for (int i = 0; i < NSEQ; i++) {
        core_seq_deinit(&seqs[i]);
        adp_adapter_unref(ad[i]);
    }
    free(logits);
    adp_hook_free(hook);
    core_fwd_free(fwd);
    core_kv_pool_free(pool);
    core_model_free(m);
    return 0;
}
