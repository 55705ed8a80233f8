/* bench_kernels.c: decode-sized linear kernels (core/kernels) against OpenBLAS sgemm.
 *
 * For the projection shapes of SmolLM-135M (576×576, 192×576, 1536×576, 576×1536) and
 * TinyLlama-1.1B (2048×2048, 256×2048, 5632×2048, 2048×5632), rows × cols = out × in, and
 * n = 1, 8, 32 tokens: the median time of one call of every backend and weight dtype, on 1
 * thread and on 2 threads (our kern_pool_t; OpenBLAS's own threads for sgemm), and the weight
 * bytes streamed per second. The reference is OpenBLAS cblas_sgemm (RowMajor, NoTrans, Trans)
 * on fp32 weights of the same shape; at n = 1 also cblas_sgemv, its better call there.
 *
 * "Cold-ish": every call uses the next matrix of a pool laid end to end in a 1 GiB (fp32),
 * 512 MiB (bf16) or 256 MiB (int8) arena, so the weights come from DRAM as in decode (the
 * ~32 MiB L3 holds none of them when they come round again). The machine's read bandwidth is
 * measured in the same run (a streaming sum over the 1 GiB arena, 1 and 2 threads, at the
 * start and at the end), because on this shared host it moves by ±40 % from minute to minute.
 *
 * OpenBLAS reads OPENBLAS_CORETYPE when it loads; on an AVX-512 CPU without it, Debian's
 * 0.3.21 picks its Haswell kernels. Like the server, the bench re-executes itself once with
 * OPENBLAS_CORETYPE=SkylakeX in that case, so the comparison is against OpenBLAS at its best.
 * Then the low-rank adapter kernels (lr_shrink + lr_expand, BGMV): 32 distinct adapters of
 * rank 16 per step on a 576- or 2048-wide projection, one or 8 tokens per adapter, f32 and
 * bf16 factors from a pool far larger than the L3, every backend; µs per step and factor GB/s.
 * Usage: bench_kernels [--quick] [--lora]   (--quick: fewer repetitions, for a smoke run;
 *                                            --lora: only the low-rank adapter section)
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_stream.h"
#include "kern.h"

/* ---- setup ---- */

#define F32_ARENA ((size_t)1 << 30)
#define MAX_N 32
#define MAX_COLS 5632

enum { NSHAPES = 8, NNS = 3 };
static const struct {
    const char *model, *name;
    int64_t rows, cols;
} SHAPES[NSHAPES] = {
    {"SmolLM", "q/o 576x576", 576, 576},      {"SmolLM", "k/v 192x576", 192, 576},
    {"SmolLM", "gate/up 1536x576", 1536, 576}, {"SmolLM", "down 576x1536", 576, 1536},
    {"TinyLlama", "q/o 2048x2048", 2048, 2048}, {"TinyLlama", "k/v 256x2048", 256, 2048},
    {"TinyLlama", "gate/up 5632x2048", 5632, 2048}, {"TinyLlama", "down 2048x5632", 2048, 5632},
};
static const int NS[NNS] = {1, 8, 32};

/* Implementations compared (columns). */
enum {
    I_OB_GEMM, I_OB_GEMV, /* OpenBLAS fp32 */
    I_F32,                /* avx512 f32 fma */
    I_BF16_DP, I_BF16_P32, I_BF16_W, /* avx512-bf16 dpbf16 row-major and in 32-row panels
                                        (what the server loads), avx512 widen */
    I_I8_VNNI, I_I8_W,    /* avx512-vnni, avx512 widen */
    I_AVX2_F32, I_AVX2_BF16, I_AVX2_I8,
    I_REF_F32, I_REF_BF16, I_REF_I8,
    NIMPL
};
static const char *IMPL_NAME[NIMPL] = {
    "OB sgemm", "OB sgemv", "f32", "bf16-dp", "bf16-p32", "bf16-wid", "i8-vnni", "i8-wid",
    "avx2 f32", "avx2 bf16", "avx2 i8", "ref f32", "ref bf16", "ref i8",
};

typedef struct {
    float *a32;
    uint16_t *a16;
    int8_t *a8;
    float *scales; /* one per row of the int8 arena, whatever the shape (enough for all) */
    float *x, *y;
    void *work;
    kern_pool_t *pool2;
    int quick;
    int lora_only; /* --lora: only the low-rank adapter section */
} bench_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- memory bandwidth ---- */

typedef struct {
    const float *p;
    volatile float sink[64];
} bw_job_t;

static void bw_range(void *arg, int64_t i0, int64_t i1, int tid) {
    bw_job_t *j = arg;
    j->sink[tid] = bench_stream_sum(j->p + i0, (size_t)(i1 - i0));
}

/* GB/s of a read over the whole fp32 arena (4 streams per thread) on 1 thread (pool NULL) or
 * the pool; median of reps (≤ 9). */
static double bandwidth(const bench_t *b, kern_pool_t *pool, int reps) {
    bw_job_t j = {.p = b->a32};
    const int64_t n = (int64_t)(F32_ARENA / 4);
    double t[9];
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        if (pool)
            kern_pool_run(pool, bw_range, &j, n, 4096);
        else
            bw_range(&j, 0, n, 0);
        t[r] = now_s() - t0;
    }
    return (double)F32_ARENA / median(t, reps) * 1e-9;
}

/* ---- one measurement ---- */

typedef struct {
    double us, gbs, gflops;
    int ok;
} cell_t;

typedef struct {
    const bench_t *b;
    int impl, threads;
    int64_t rows, cols;
    int n;
    size_t mat_bytes, count; /* bytes of one matrix of this dtype, matrices in its arena */
} call_t;

static kern_wtype_t impl_type(int impl) {
    switch (impl) {
    case I_BF16_DP: case I_BF16_P32: case I_BF16_W: case I_AVX2_BF16: case I_REF_BF16:
        return KERN_W_BF16;
    case I_I8_VNNI: case I_I8_W: case I_AVX2_I8: case I_REF_I8: return KERN_W_I8;
    default: return KERN_W_F32;
    }
}

static const kern_ops_t *impl_ops(int impl) {
    switch (impl) {
    case I_F32: case I_BF16_W: case I_I8_W: return kern_get(KERN_BK_AVX512);
    case I_BF16_DP: case I_BF16_P32: return kern_get(KERN_BK_AVX512_BF16);
    case I_I8_VNNI: return kern_get(KERN_BK_AVX512_VNNI);
    case I_AVX2_F32: case I_AVX2_BF16: case I_AVX2_I8: return kern_get(KERN_BK_AVX2);
    case I_REF_F32: case I_REF_BF16: case I_REF_I8: return kern_get(KERN_BK_REF);
    default: return NULL;
    }
}

static void run_once(const call_t *c, size_t idx) {
    const bench_t *b = c->b;
    const int64_t rows = c->rows, cols = c->cols;
    if (c->impl == I_OB_GEMM || c->impl == I_OB_GEMV) {
        const float *w = b->a32 + idx * (size_t)rows * (size_t)cols;
        if (c->impl == I_OB_GEMV)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)cols, 1.0f, w, (int)cols,
                        b->x, 1, 0.0f, b->y, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->n, (int)rows, (int)cols,
                        1.0f, b->x, (int)cols, w, (int)cols, 0.0f, b->y, (int)rows);
        return;
    }
    kern_wtype_t ty = impl_type(c->impl);
    /* the timing does not depend on the values: the arena's bf16 bits serve as a packed
     * matrix (every shape here fills whole 32-row groups, make_call checks) */
    kern_mat_t m = {.type = ty, .rows = rows, .cols = cols,
                    .layout = c->impl == I_BF16_P32 ? KERN_LAYOUT_P32 : KERN_LAYOUT_ROWS};
    size_t e = idx * (size_t)rows * (size_t)cols;
    m.data = ty == KERN_W_F32 ? (const void *)(b->a32 + e)
             : ty == KERN_W_BF16 ? (const void *)(b->a16 + e)
                                 : (const void *)(b->a8 + e);
    m.scale = ty == KERN_W_I8 ? b->scales + idx * (size_t)rows : NULL;
    kern_matmul_mt(impl_ops(c->impl), c->threads == 2 ? b->pool2 : NULL, &m, b->x, c->n, b->y,
                   b->work);
}

/* Sets up the call of implementation impl on one shape; 0 if it does not apply here. */
static int make_call(const bench_t *b, int impl, int threads, int64_t rows, int64_t cols, int n,
                     call_t *c) {
    if (impl == I_OB_GEMV && n != 1) return 0;
    if (impl == I_BF16_P32 && kern_p32_bytes(rows, cols) != (size_t)(rows * cols) * 2) return 0;
    if (impl != I_OB_GEMM && impl != I_OB_GEMV && !impl_ops(impl)) return 0;
    kern_wtype_t ty = impl_type(impl);
    size_t esz = kern_wtype_size(ty);
    *c = (call_t){.b = b, .impl = impl, .threads = threads, .rows = rows, .cols = cols, .n = n};
    c->mat_bytes = (size_t)rows * (size_t)cols * esz + (ty == KERN_W_I8 ? (size_t)rows * 4 : 0);
    c->count = F32_ARENA / 4 / ((size_t)rows * (size_t)cols);
    return 1;
}

/* Measures the implementations [im0, im1) on one shape, n and thread count, round-robin: each
 * round makes one call of every implementation, so all of them see the same moments of this
 * shared host, and each cell is the median over the rounds. Every call takes the next matrix
 * of its arena; the position is shared by all implementations reading that arena, so a call
 * never meets a matrix an earlier call left in L3 (the walk wraps only after ≥ 256 MiB).
 * The reference kernels take part in the first rounds only (3 at n = 1, else 1): too slow. */
static void measure_group(const bench_t *b, int im0, int im1, int threads, int64_t rows,
                          int64_t cols, int n, cell_t *out) {
    enum { MAX_ROUNDS = 61 };
    static size_t next_of[KERN_W_COUNT];
    static double t[NIMPL][MAX_ROUNDS];
    call_t calls[NIMPL];
    int on[NIMPL] = {0}, got[NIMPL] = {0};
    for (int im = im0; im < im1; im++) {
        on[im] = make_call(b, im, threads, rows, cols, n, &calls[im]);
        if (on[im] && im < I_REF_F32) /* warm-up: page-table walks, pool wake-up, code */
            for (int w = 0; w < 2; w++)
                run_once(&calls[im], next_of[impl_type(im)]++ % calls[im].count);
    }
    const int max_rounds = b->quick ? 5 : MAX_ROUNDS, ref_rounds = n == 1 ? 3 : 1;
    const double budget = b->quick ? 0.1 : 1.5; /* seconds, not counting the reference */
    double spent = 0;
    for (int round = 0; round < max_rounds; round++) {
        if (round >= 15 && spent > budget) break;
        for (int im = im0; im < im1; im++) {
            if (!on[im] || (im >= I_REF_F32 && round >= ref_rounds)) continue;
            size_t idx = next_of[impl_type(im)]++ % calls[im].count;
            double t0 = now_s();
            run_once(&calls[im], idx);
            double dt = now_s() - t0;
            t[im][got[im]++] = dt;
            if (im < I_REF_F32) spent += dt;
        }
    }
    for (int im = im0; im < im1; im++) {
        out[im] = (cell_t){0};
        if (!on[im]) continue;
        double sec = median(t[im], got[im]);
        out[im].us = sec * 1e6;
        out[im].gbs = (double)calls[im].mat_bytes / sec * 1e-9;
        out[im].gflops = 2.0 * n * (double)rows * (double)cols / sec * 1e-9;
        out[im].ok = 1;
    }
}

/* ---- main ---- */

static void fill(bench_t *b) {
    uint64_t s = 0x2545f4914f6cdd1dull;
    size_t n = F32_ARENA / 4;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        float v = (float)(int32_t)(s >> 32) * 0x1.0p-31f; /* [-1, 1) */
        b->a32[i] = v;
        b->a16[i] = kern_f32_to_bf16(v);
        b->a8[i] = (int8_t)(s >> 24);
    }
    for (size_t i = 0; i < n / 192; i++) b->scales[i] = 1.0f / 127;
}

/* Debian's OpenBLAS 0.3.21 does not know Zen 5 and picks Haswell kernels; SkylakeX is ~1.7×
 * faster here (performance.md §0). It reads the variable at load time, hence the re-exec. */
static void maybe_reexec(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || !__builtin_cpu_supports("avx512f")) return;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); /* exec failed: go on with the default core */
}

/* ---- linears: every shape × n × implementation × threads ---- */

static void bench_linears(bench_t *b) {
    double la[3] = {0};
    static cell_t cell[NSHAPES][NNS][2][NIMPL];
    /* Throw-away pass: the first group measured used to come out ~2× slow (page tables and
     * code cold, the worker thread not yet running, frequency ramp). */
    measure_group(b, 0, I_REF_F32, 1, SHAPES[0].rows, SHAPES[0].cols, 1, cell[0][0][0]);
    measure_group(b, I_F32, I_REF_F32, 2, SHAPES[0].rows, SHAPES[0].cols, 8, cell[0][0][1]);
    double bws[NSHAPES][2]; /* bandwidth measured just before each shape's runs */
    for (int si = 0; si < NSHAPES; si++) {
        const int64_t rows = SHAPES[si].rows, cols = SHAPES[si].cols;
        bws[si][0] = bandwidth(b, NULL, 3);
        bws[si][1] = bandwidth(b, b->pool2, 3);
        for (int ni = 0; ni < NNS; ni++) {
            /* 1 thread: everything round-robin (OpenBLAS set to 1 thread). */
            openblas_set_num_threads(1);
            measure_group(b, 0, NIMPL, 1, rows, cols, NS[ni], cell[si][ni][0]);
            /* 2 threads: OpenBLAS's idle workers busy-wait for ~0.1 s after a call, and ours
             * for ~0.1 ms, each stealing the other's second core; so OpenBLAS runs as its own
             * group, then a pause, then ours. */
            openblas_set_num_threads(2);
            measure_group(b, I_OB_GEMM, I_OB_GEMV + 1, 2, rows, cols, NS[ni],
                          cell[si][ni][1]);
            openblas_set_num_threads(1);
            sleep_ms(250);
            measure_group(b, I_F32, NIMPL, 2, rows, cols, NS[ni], cell[si][ni][1]);
        }
        fprintf(stderr, "  %s done\n", SHAPES[si].name);
    }
    double bw1b = bandwidth(b, NULL, 5), bw2b = bandwidth(b, b->pool2, 5);
    printf("# DRAM read bandwidth at end: 1 thread %.1f GB/s, 2 threads %.1f GB/s\n", bw1b, bw2b);
    if (getloadavg(la, 3) > 0) printf("# load average at end %.2f\n", la[0]);

    for (int what = 0; what < 2; what++) {
        printf("\n## %s per call (median); cold weights\n",
               what == 0 ? "µs" : "weight GB/s (weight bytes incl. int8 scales ÷ time)");
        printf("%-10s %-18s %2s %2s", "model", "shape (rows x cols)", "n", "th");
        for (int im = 0; im < NIMPL; im++) printf(" %9s", IMPL_NAME[im]);
        printf("\n");
        for (int si = 0; si < NSHAPES; si++)
            for (int ni = 0; ni < NNS; ni++)
                for (int th = 0; th < 2; th++) {
                    printf("%-10s %-18s %2d %2d", SHAPES[si].model, SHAPES[si].name, NS[ni],
                           th + 1);
                    for (int im = 0; im < NIMPL; im++) {
                        const cell_t *c = &cell[si][ni][th][im];
                        if (!c->ok)
                            printf(" %9s", "-");
                        else
                            printf(what == 0 ? " %9.1f" : " %9.2f", what == 0 ? c->us : c->gbs);
                    }
                    printf("\n");
                }
    }

    printf("\n## Summary. bw: read bandwidth measured just before the shape's runs (GB/s, "
           "1t/2t); dp%%: n = 1 bf16-dp weight GB/s as %% of it; speedup: OpenBLAS time / "
           "ours, against the faster of OpenBLAS sgemm and (n = 1) sgemv on fp32\n");
    printf("%-18s %2s | %11s | %9s | %-26s | %-26s\n", "shape", "n", "bw 1t/2t", "dp% 1t/2t",
           "1t: f32 / bf16-dp / i8-vnni", "2t: f32 / bf16-dp / i8-vnni");
    for (int si = 0; si < NSHAPES; si++)
        for (int ni = 0; ni < NNS; ni++) {
            printf("%-18s %2d |", SHAPES[si].name, NS[ni]);
            if (ni == 0)
                printf(" %5.1f/%5.1f |", bws[si][0], bws[si][1]);
            else
                printf(" %11s |", "");
            const cell_t *d1 = &cell[si][ni][0][I_BF16_DP], *d2 = &cell[si][ni][1][I_BF16_DP];
            if (NS[ni] == 1 && d1->ok && d2->ok)
                printf(" %3.0f%%/%3.0f%% |", 100.0 * d1->gbs / bws[si][0],
                       100.0 * d2->gbs / bws[si][1]);
            else
                printf(" %9s |", "");
            for (int th = 0; th < 2; th++) {
                const cell_t *g = &cell[si][ni][th][I_OB_GEMM], *v = &cell[si][ni][th][I_OB_GEMV];
                double ob = g->ok ? g->us : 1e30;
                if (v->ok && v->us < ob) ob = v->us;
                const int ims[3] = {I_F32, I_BF16_DP, I_I8_VNNI};
                for (int k = 0; k < 3; k++) {
                    const cell_t *c = &cell[si][ni][th][ims[k]];
                    if (c->ok && ob < 1e30)
                        printf(" %6.2fx%s", ob / c->us, k < 2 ? " /" : "");
                    else
                        printf(" %7s%s", "-", k < 2 ? " /" : "");
                }
                printf(" |");
            }
            printf("\n");
        }
}

/* ---- low-rank adapters (BGMV) ---- */

/* One step of a multi-adapter batch on one projection: LR_NA distinct adapters of rank LR_R,
 * each shared by tpa consecutive tokens; per adapter one shrink (v = x·Aᵀ) and one expand
 * (y += v·Bt) over all columns. Every step takes the next LR_NA adapters of a pool laid end to
 * end in the 1 GiB (f32) or 512 MiB (bf16) arena, so the factors come from DRAM, as when each
 * token of a decode step has its own adapter. */
enum { LR_R = 16, LR_NA = 32, LR_MAX_TPA = 8, LR_MAX_D = 2048 };

typedef struct {
    const bench_t *b;
    const kern_ops_t *ops;
    kern_wtype_t ty;
    int64_t d;
    int tpa;        /* tokens per adapter */
    size_t first;   /* the step's first adapter in the pool */
    float *x, *v, *y; /* (LR_NA · tpa, d), (LR_NA · tpa, LR_R), (LR_NA · tpa, d) */
} lr_step_t;

static size_t lr_adapter_bytes(kern_wtype_t ty, int64_t d) {
    return (size_t)LR_R * 2 * (size_t)d * kern_wtype_size(ty);
}

static void lr_range(void *arg, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    const lr_step_t *s = arg;
    const size_t fe = (size_t)LR_R * (size_t)s->d; /* elements of one factor */
    const char *arena = s->ty == KERN_W_F32 ? (const char *)s->b->a32 : (const char *)s->b->a16;
    for (int64_t i = i0; i < i1; i++) {
        const char *f = arena + (s->first + (size_t)i) * lr_adapter_bytes(s->ty, s->d);
        const kern_mat_t a = {.type = s->ty, .rows = LR_R, .cols = s->d, .data = f};
        const kern_mat_t bt = {.type = s->ty, .rows = LR_R, .cols = s->d,
                               .data = f + fe * kern_wtype_size(s->ty)};
        const size_t t0 = (size_t)i * (size_t)s->tpa;
        float *v = s->v + t0 * LR_R, *y = s->y + t0 * (size_t)s->d;
        s->ops->lr_shrink[s->ty](&a, s->x + t0 * (size_t)s->d, s->d, s->tpa, v, LR_R);
        s->ops->lr_expand[s->ty](&bt, v, LR_R, s->tpa, y, s->d, 0, s->d);
    }
}

/* Median seconds per step of every (backend, dtype), round-robin as in measure_group, each
 * step on the next LR_NA adapters of its dtype's pool; 2 threads split the adapters. */
static void lr_measure(const bench_t *b, int64_t d, int tpa, int threads, float *x, float *v,
                       float *y, double out[KERN_BK_COUNT][2]) {
    enum { ROUNDS = 41 };
    static size_t next[2];
    static double t[KERN_BK_COUNT][2][ROUNDS];
    int got[KERN_BK_COUNT][2] = {{0}};
    const size_t count[2] = {F32_ARENA / lr_adapter_bytes(KERN_W_F32, d) - LR_NA,
                             F32_ARENA / 2 / lr_adapter_bytes(KERN_W_BF16, d) - LR_NA};
    const int rounds = b->quick ? 5 : ROUNDS;
    for (int round = -2; round < rounds; round++) /* two warm-up rounds */
        for (int bk = 0; bk < KERN_BK_COUNT; bk++)
            for (int ty = 0; ty < 2; ty++) {
                const kern_ops_t *ops = kern_get((kern_backend_t)bk);
                if (!ops || (bk == KERN_BK_REF && round >= 3)) continue; /* ref: slow */
                lr_step_t s = {.b = b, .ops = ops, .ty = (kern_wtype_t)ty, .d = d, .tpa = tpa,
                               .x = x, .v = v, .y = y};
                s.first = next[ty] % count[ty]; /* count differs between the shapes */
                next[ty] = s.first + LR_NA;
                double t0 = now_s();
                if (threads == 2)
                    kern_pool_run(b->pool2, lr_range, &s, LR_NA, 1);
                else
                    lr_range(&s, 0, LR_NA, 0);
                if (round >= 0) t[bk][ty][got[bk][ty]++] = now_s() - t0;
            }
    for (int bk = 0; bk < KERN_BK_COUNT; bk++)
        for (int ty = 0; ty < 2; ty++)
            out[bk][ty] = got[bk][ty] ? median(t[bk][ty], got[bk][ty]) : 0;
}

static void bench_lora(bench_t *b) {
    static const int64_t DS[2] = {576, 2048};
    static const int TPAS[2] = {1, LR_MAX_TPA};
    const size_t nt = (size_t)LR_NA * LR_MAX_TPA;
    float *x = aligned_alloc(64, nt * LR_MAX_D * 4), *y = aligned_alloc(64, nt * LR_MAX_D * 4);
    float *v = aligned_alloc(64, nt * LR_R * 4);
    if (!x || !y || !v) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < nt * LR_MAX_D; i++) {
        x[i] = (float)((i * 7919) % 201) / 100 - 1;
        y[i] = 0;
    }
    sleep_ms(250); /* OpenBLAS's workers may still be spinning after the linears */
    double bw1 = bandwidth(b, NULL, 5), bw2 = bandwidth(b, b->pool2, 5);
    static double sec[2][2][2][KERN_BK_COUNT][2]; /* [d][tpa][threads][backend][dtype] */
    /* throw-away pass, as for the linears: the first group measured comes out slow */
    lr_measure(b, DS[0], 1, 1, x, v, y, sec[0][0][0]);
    lr_measure(b, DS[0], 1, 2, x, v, y, sec[0][0][1]);
    for (int di = 0; di < 2; di++)
        for (int ti = 0; ti < 2; ti++)
            for (int th = 0; th < 2; th++)
                lr_measure(b, DS[di], TPAS[ti], th + 1, x, v, y, sec[di][ti][th]);

    printf("\n# Low-rank adapters (BGMV): one step = %d distinct adapters, r = %d, d_in = d_out "
           "= d, each adapter shared by tok consecutive tokens; per adapter lr_shrink + "
           "lr_expand (all columns); cold factors (pool: 1 GiB f32 / 512 MiB bf16); 2 threads "
           "split the adapters\n", LR_NA, LR_R);
    double la[3] = {0};
    printf("# DRAM read bandwidth just before (1 GiB sum): 1 thread %.1f GB/s, 2 threads %.1f "
           "GB/s; load average after %.2f\n", bw1, bw2, getloadavg(la, 3) > 0 ? la[0] : -1.0);
    for (int what = 0; what < 2; what++) {
        printf("\n## %s\n", what == 0 ? "BGMV µs per step (median)"
                                      : "BGMV factor GB/s (32 adapters' A + Bt bytes ÷ time)");
        printf("%5s %3s %2s %-5s", "d", "tok", "th", "dtype");
        for (int bk = 0; bk < KERN_BK_COUNT; bk++)
            if (kern_get((kern_backend_t)bk)) printf(" %12s", kern_get((kern_backend_t)bk)->name);
        printf("\n");
        for (int di = 0; di < 2; di++)
            for (int ti = 0; ti < 2; ti++)
                for (int ty = 0; ty < 2; ty++)
                    for (int th = 0; th < 2; th++) {
                        printf("%5lld %3d %2d %-5s", (long long)DS[di], TPAS[ti], th + 1,
                               kern_wtype_name((kern_wtype_t)ty));
                        const double bytes = (double)LR_NA *
                                             (double)lr_adapter_bytes((kern_wtype_t)ty, DS[di]);
                        for (int bk = 0; bk < KERN_BK_COUNT; bk++) {
                            const double s = sec[di][ti][th][bk][ty];
                            if (!kern_get((kern_backend_t)bk)) continue;
                            printf(what == 0 ? " %12.1f" : " %12.2f",
                                   what == 0 ? s * 1e6 : bytes / s * 1e-9);
                        }
                        printf("\n");
                    }
    }
    free(x);
    free(y);
    free(v);
}

int main(int argc, char **argv) {
    maybe_reexec(argv);
    bench_t b = {0};
    for (int i = 1; i < argc; i++) {
        b.quick |= strcmp(argv[i], "--quick") == 0;
        b.lora_only |= strcmp(argv[i], "--lora") == 0;
    }
    char desc[256];
    kern_select(desc, sizeof desc);
    printf("# bench_kernels: y[n, rows] = x[n, cols] · Wᵀ, cold weights (arena of 1 GiB fp32 / "
           "512 MiB bf16 / 256 MiB int8)\n");
    printf("# %s; OpenBLAS core %s (OPENBLAS_CORETYPE=%s)\n", desc, openblas_get_corename(),
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset");

    b.a32 = aligned_alloc(64, F32_ARENA);
    b.a16 = aligned_alloc(64, F32_ARENA / 2);
    b.a8 = aligned_alloc(64, F32_ARENA / 4);
    b.scales = malloc(F32_ARENA / 4 / 192 * sizeof(float));
    b.x = aligned_alloc(64, (size_t)MAX_N * MAX_COLS * 4);
    b.y = aligned_alloc(64, (size_t)MAX_N * MAX_COLS * 4);
    b.work = malloc(kern_work_size(KERN_W_F32, MAX_N, MAX_COLS)); /* same for every type */
    if (!b.a32 || !b.a16 || !b.a8 || !b.scales || !b.x || !b.y || !b.work ||
        kern_pool_create(2, &b.pool2)) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    fill(&b);
    for (size_t i = 0; i < (size_t)MAX_N * MAX_COLS; i++)
        b.x[i] = (float)((i * 7919) % 201) / 100 - 1;

    double la[3] = {0};
    if (getloadavg(la, 3) > 0)
        printf("# load average at start %.2f (this bench needs the 2 cores to itself; other "
               "runnable processes inflate the times, the 2-thread and long ones most)\n", la[0]);
    double bw1a = bandwidth(&b, NULL, 5), bw2a = bandwidth(&b, b.pool2, 5);
    printf("# DRAM read bandwidth (1 GiB sum, 4 streams per thread, median of 5) at start: "
           "1 thread %.1f GB/s, 2 threads %.1f GB/s\n", bw1a, bw2a);

    if (!b.lora_only) bench_linears(&b);
    bench_lora(&b);

    kern_pool_free(b.pool2);
    free(b.a32);
    free(b.a16);
    free(b.a8);
    free(b.scales);
    free(b.x);
    free(b.y);
    free(b.work);
    return 0;
}
