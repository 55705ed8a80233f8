/* kern.h: weight-matrix kernels for decode-sized steps, behind one dispatch table.
 *
 * The operation is a linear layer over a few tokens:
 *
 *     y[n, rows] = x[n, cols] · Wᵀ        W row-major (rows, cols) = [out, in], as checkpoints
 *                                          store it; x and y fp32, row-major, contiguous
 *
 * for n = 1..32 tokens (any n ≥ 1 works). Every backend streams each weight row from memory once
 * for all n tokens: a block of 4–8 rows is loaded from DRAM once and then dotted against every
 * token while it sits in L1/L2. At n = 1 the cost is the weight bytes ÷ DRAM bandwidth, so the
 * weight dtype is the lever (performance.md §2.5): F32 (4 B), BF16 (2 B), INT8 + one fp32 scale
 * per row (1 B).
 *
 * Backends (kern_ops_t tables), chosen once at start-up by kern_select():
 *   ref          plain C, the oracle, always present (kern_ref.c)
 *   avx2         AVX2+FMA: bf16 widened to fp32 by a shift, int8 widened to fp32 (kern_avx2.c)
 *   avx512       AVX-512F/BW/VL: same widening paths, 16 lanes (kern_avx512.c)
 *   avx512-vnni  + int8 through vpdpbusd with activations quantised to int8 per token
 *   avx512-bf16  + bf16 through vdpbf16ps with activations rounded to bf16, + int8 vnni; its
 *                bf16 weights are fastest in the P32 layout (below: outer products, no
 *                horizontal sums), which the model loader gives them on this backend
 * Each ISA file is compiled with function-level target attributes, not -m flags: a generic
 * build (no -march) runs on any x86-64 and only calls a backend after the CPU reported its
 * features (__builtin_cpu_supports); -march=native is not needed for any kernel.
 *
 * Accuracy contract (what tests/unit/test_kernels.c checks against kern_ref):
 *   - F32 weights, and the widening BF16/INT8 paths: products are exact fp32 products of the
 *     same values the reference uses; only the summation order differs. |y − y_ref| ≤
 *     1e-5 · Σ_k |x_k · w_k|.
 *   - BF16 via vdpbf16ps: activations are rounded to bf16 once per call (relative error ≤ 2⁻⁸
 *     each), so |y − y_ref| ≤ 2⁻⁸ · Σ_k |x_k · w_k| (+ fp32 summation error); ~0.15 % rms of
 *     |y| on random data, the same size as the error of bf16 weights themselves.
 *   - INT8 via VNNI: activations are quantised per token, xq = round(x · 127 / max|x|), step
 *     sx = max|x| / 127, so each activation moves by at most sx/2 and
 *     |y − y_ref| ≤ scale_r · sx · ½ · Σ_k |q_k| (+ fp32 rounding of the final scaling);
 *     ~0.4 % rms of |y| on random data, again the size of the int8 weight error.
 *
 * Threads: the kernels themselves are reentrant and keep no state. kern_matmul_mt() splits the
 * rows over a kern_pool_t the caller owns. Nothing here allocates per call: the caller passes
 * a work buffer of kern_work_size() bytes (for the converted activations).
 */
#ifndef KERN_H
#define KERN_H

#include <stddef.h>
#include <stdint.h>

/* ---- weights ---- */

typedef enum {
    KERN_W_F32 = 0, /* float */
    KERN_W_BF16,    /* uint16_t raw bf16 bits (the top half of an fp32) */
    KERN_W_I8,      /* int8_t q with w ≈ q · scale[row], symmetric, q in [-127, 127] */
    KERN_W_COUNT
} kern_wtype_t;

const char *kern_wtype_name(kern_wtype_t t); /* "f32", "bf16", "int8"; static storage */
size_t kern_wtype_size(kern_wtype_t t);      /* bytes per weight element: 4, 2, 1 */

/* How data holds the matrix. Row-major is how checkpoints store it and what every weight type
 * and backend reads. P32 is a bf16 layout for the outer-product kernel of the avx512-bf16
 * backend (the table's bf16_layout): rows in groups of 32 (the last padded with zero rows),
 * a group's columns in pairs (an odd last column padded with a zero), and for each pair of
 * columns the 32 rows' two values side by side: 64 bf16 = one cache line, two 16-row vectors
 * that vdpbf16ps multiplies by one broadcast pair of activations. Element (r, k) of a matrix
 * with cp = cols rounded up to even sits at
 *     (r / 32) · 32 · cp  +  (k / 2) · 64  +  (r % 32) · 2  +  k % 2.
 * A group is one contiguous stream (the hardware prefetcher's best case), its outputs are 32
 * rows of each token with no horizontal sums, and each weight vector is loaded once per
 * 8 tokens. kern_pack_p32() makes it, kern_p32_rows_f32() reads rows back. */
typedef enum {
    KERN_LAYOUT_ROWS = 0, /* (rows, cols) row-major, any type */
    KERN_LAYOUT_P32,      /* KERN_W_BF16 only, as above */
} kern_layout_t;

typedef struct kern_mat_s {
    /* public: filled by the caller, borrowed by every kernel call */
    kern_wtype_t type;
    int64_t rows;       /* output features */
    int64_t cols;       /* input features */
    const void *data;   /* layout (default row-major), type; any alignment (64 B is fastest;
                           P32 needs 64) */
    const float *scale; /* (rows) fp32; KERN_W_I8 only, NULL otherwise */
    kern_layout_t layout;
} kern_mat_t;

/* ---- activations as a backend reads them (filled by ops->prep) ---- */

typedef struct kern_act_s {
    /* read-only: written by ops->prep, read by ops->rows */
    const float *x;      /* (n, ldx) fp32: the caller's x (ldx = cols), or an aligned copy */
    int64_t ldx;         /* row stride of x in floats */
    int n;               /* tokens */
    int64_t cols;
    int64_t ld;          /* row stride of xb / xq in elements (cols rounded up to 64) */
    const uint16_t *xb;  /* (n, ld) bf16, zero padded; dpbf16 path only, else NULL */
    const int8_t *xq;    /* (n, ld) int8, zero padded; vnni path only, else NULL */
    const float *xs;     /* (n) per-token scale, x ≈ xq · xs; vnni path only */
    const int32_t *xsum; /* (n) Σ_k xq[t][k]; vnni path only (for the u8 offset correction) */
} kern_act_t;

/* ---- the dispatch table ---- */

/* Converts x[n, cols] into what this backend's rows kernel for weights of type wt reads
 * (bf16 or int8 copies in work, a 64-byte aligned fp32 copy when x or its rows are not
 * aligned, or nothing) and fills *a. work: kern_work_size(wt, n, cols) bytes, any alignment,
 * borrowed for as long as *a is used; x likewise. Runs on one thread, O(n · cols).
 * Cannot fail. */
typedef void (*kern_prep_fn)(kern_wtype_t wt, const float *x, int n, int64_t cols, void *work,
                             kern_act_t *a);

/* y[t, r] = Σ_k x[t, k] · W[r, k] for every token t < a->n and every row r in [r0, r1) of w
 * (y has row stride w->rows; other rows are not touched). a comes from the same backend's
 * prep with the same weight type. Reentrant: threads may run disjoint row ranges of one call
 * concurrently. Cannot fail; w->cols must equal a->cols. */
typedef void (*kern_rows_fn)(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t r0,
                             int64_t r1);

/* ---- low-rank adapter kernels (BGMV) ----
 * One adapter's factors applied to n tokens that share it: shrink v = x·Aᵀ (A (r, d_in)), then
 * expand y += v·Bt (Bt = Bᵀ, (r, d_out), the scale already folded in). Each factor row is loaded
 * once for all n tokens. Factors are F32 or BF16 (kern_mat_t.type; I8 is not supported: NULL
 * slot). Activations stay fp32 and products are exact fp32 products of the stored values (bf16 is
 * widened, never activations rounded — the adapter path is computed in fp32), only summation
 * order differs from the reference: |err| <= 1e-5 * sum|terms| (for expand, the prior y[t, c]
 * counts as one of the terms: it is added once, after the r products are summed).
 * A token's result does not depend on n or on [c0, c1) (the same value, bit for bit, whatever
 * tokens share the call and however the columns are split, e.g. across threads).
 * Any n ≥ 1 (n ≤ 0 does nothing), any sizes and strides, any alignment of every pointer.
 * All pointers borrowed for the call; outputs must not overlap inputs. Reentrant, no
 * allocation, cannot fail.
 */
/* v[t*ldv + j] = Σ_k x[t*ldx + k] · A[j, k]  for t < n, j < a->rows; k < a->cols. */
typedef void (*kern_lr_shrink_fn)(const kern_mat_t *a, const float *x, int64_t ldx, int n,
                                  float *v, int64_t ldv);
/* y[t*ldy + c] += Σ_j v[t*ldv + j] · Bt[j, c]  for t < n, c in [c0, c1), j < bt->rows.
 * 0 ≤ c0 ≤ c1 ≤ bt->cols; other columns of y are not touched, so threads may run disjoint
 * column ranges of one call concurrently. */
typedef void (*kern_lr_expand_fn)(const kern_mat_t *bt, const float *v, int64_t ldv, int n,
                                  float *y, int64_t ldy, int64_t c0, int64_t c1);

/* ---- attention kernels ----
 * One KV head's block of nj cached positions against the g query heads that share it (GQA),
 * head dimension hd. The cache stores keys transposed, kt[i·ldk + j] (dimension i < hd,
 * position j < nj ≤ ldk), so that 16 positions' scores are one vector per dimension and no
 * horizontal sum is needed; values row-major, v[j·ldv + i]. Cache elements are F32 or BF16
 * (the slot of the table; I8 is NULL). Math is fp32 (bf16 widened exactly); only summation
 * order differs from the reference: |err| ≤ 1e-5 · Σ|terms|. Any g ≥ 1, hd ≥ 1, nj ≥ 1; any
 * alignment. Pointers borrowed for the call; outputs do not overlap inputs. Reentrant, no
 * allocation, cannot fail.
 */
/* s[h·lds + j] = scale · Σ_i q[h·hd + i] · kt[i·ldk + j]   for h < g, j < nj. */
typedef void (*kern_attn_scores_fn)(const float *q, int g, int hd, const void *kt, int64_t ldk,
                                    int nj, float scale, float *s, int64_t lds);
/* o[h·hd + i] += Σ_j p[h·ldp + j] · v[j·ldv + i]   for h < g, i < hd (j < nj, in order of j
 * only in the reference). */
typedef void (*kern_attn_values_fn)(const float *p, int64_t ldp, int g, const void *v,
                                    int64_t ldv, int nj, int hd, float *o);
/* s[j] = e^(s[j] − mx) for j < n; returns their sum (fp32). Each value within 2 ulp of
 * expf's (|rel err| ≤ 3e-7); arguments below −87.3 give 0 or a denormal, like expf. */
typedef float (*kern_exp_sum_fn)(float *s, int n, float mx);
/* SwiGLU in place: g[i] = silu(g[i]) · u[i] = g[i] / (1 + e^(−g[i])) · u[i] for i < n, with the
 * exponential of exp_sum; within 1e-6 relative (+1e-30) of the exact value. */
typedef void (*kern_swiglu_fn)(float *g, const float *u, size_t n);

typedef struct kern_ops_s {
    /* read-only: static tables, valid for the life of the process */
    const char *name;                /* "ref", "avx2", "avx512", "avx512-vnni", "avx512-bf16" */
    const char *path[KERN_W_COUNT];  /* per weight type, e.g. "bf16 dpbf16", "int8 vnni" */
    kern_prep_fn prep;
    kern_rows_fn rows[KERN_W_COUNT]; /* row-major weights, indexed by kern_wtype_t */
    kern_rows_fn rows_p32;           /* KERN_W_BF16 in KERN_LAYOUT_P32 (every table has one;
                                        only avx512-bf16's is fast: the others are the plain C) */
    kern_layout_t bf16_layout;       /* the layout this table's bf16 weights are fastest in */
    kern_lr_shrink_fn lr_shrink[KERN_W_COUNT]; /* F32 and BF16 factors; NULL for I8 */
    kern_lr_expand_fn lr_expand[KERN_W_COUNT]; /* F32 and BF16 factors; NULL for I8 */
    kern_attn_scores_fn attn_scores[KERN_W_COUNT]; /* F32 and BF16 caches; NULL for I8 */
    kern_attn_values_fn attn_values[KERN_W_COUNT]; /* F32 and BF16 caches; NULL for I8 */
    kern_exp_sum_fn exp_sum;
    kern_swiglu_fn swiglu;
} kern_ops_t;

typedef enum {
    KERN_BK_REF = 0,
    KERN_BK_AVX2,
    KERN_BK_AVX512,      /* AVX-512 F/BW/VL/DQ + FMA: widening bf16 and int8 paths */
    KERN_BK_AVX512_VNNI, /* + AVX512_VNNI: int8 through vpdpbusd */
    KERN_BK_AVX512_BF16, /* + AVX512_BF16 and VNNI: bf16 through vdpbf16ps, int8 vnni */
    KERN_BK_COUNT
} kern_backend_t;

/* The table of backend b, or NULL when this CPU lacks its instructions (ref never is).
 * Returns: borrowed, static. Thread-safe. */
const kern_ops_t *kern_get(kern_backend_t b);

/* The rows kernel of ops for w's type and layout. */
static inline kern_rows_fn kern_rows_for(const kern_ops_t *ops, const kern_mat_t *w) {
    return w->layout == KERN_LAYOUT_P32 ? ops->rows_p32 : ops->rows[w->type];
}

/* Picks the best backend this CPU runs, unless the environment variable LORAMUX_KERNELS
 * names one: ref | avx2 | avx512 (the best AVX-512 variant available) | avx512f |
 * avx512-vnni | avx512-bf16. A value the CPU cannot run, or an unknown one, falls back to
 * the best available and says so in desc. Writes a one-line description for the log into
 * desc (cap bytes, always NUL-terminated when cap > 0; desc may be NULL), e.g.
 * "kernels: avx512-bf16 (f32 fma, bf16 dpbf16, int8 vnni)".
 * Returns: borrowed, static, never NULL. Call at start-up; thread-safe (reads getenv). */
const kern_ops_t *kern_select(char *desc, size_t cap);

/* ---- calls ---- */

/* Bytes of work buffer any backend needs for n tokens of cols inputs against weights of
 * type wt (room for an aligned fp32 copy of x plus int8 scales; about 4·n·cols). Includes
 * alignment slack; the caller allocates it once, for its largest n and cols, and reuses it. */
size_t kern_work_size(kern_wtype_t wt, int n, int64_t cols);

/* y[n, w->rows] = x[n, w->cols] · wᵀ on the calling thread. x, y, work borrowed; y must not
 * overlap x or work. work: kern_work_size(w->type, n, w->cols) bytes. n ≥ 1.
 * Speed: the SIMD kernels load 64-byte vectors, and a load that straddles two cache lines
 * costs about twice as much; keep w->data 64-byte aligned and rows a multiple of 64 bytes
 * (true of every Llama-family shape) — hot matmuls run ~2× faster than from malloc's 16-byte
 * alignment. x needs nothing: it is copied into aligned work when it is not aligned. */
void kern_matmul(const kern_ops_t *ops, const kern_mat_t *w, const float *x, int n, float *y,
                 void *work);

/* ---- thread pool ---- */

typedef struct kern_pool_s kern_pool_t;

/* fn over [i0, i1) (non-empty) as participant tid (0 = the thread that called run). */
typedef void (*kern_range_fn)(void *arg, int64_t i0, int64_t i1, int tid);

/* A pool of n_threads participants: the calling thread of kern_pool_run plus n_threads − 1
 * workers started here (1 ≤ n_threads ≤ 64; 1 starts no thread). After each run a worker
 * spins for up to 2 ms (waking a sleeping one costs ~100 µs here), yielding the core now and
 * then after the first 0.2 ms, then sleeps on a condition variable: an idle pool costs no CPU.
 * Size it to the cores it may use (the caller counts as one).
 * Returns 0, LLM_EINVAL or LLM_ENOMEM / -errno (pthread_create); *out is a new pool, caller
 * frees with kern_pool_free(). */
int kern_pool_create(int n_threads, kern_pool_t **out);

/* Stops and joins the workers. Accepts NULL. Not while a run is in progress. */
void kern_pool_free(kern_pool_t *p);

int kern_pool_size(const kern_pool_t *p); /* participants, ≥ 1 */

/* Splits [0, total) into one contiguous range per participant, boundaries multiples of align
 * (≥ 1), calls fn on each non-empty range (the caller does range 0) and returns when all
 * are done. One run at a time per pool, from one thread at a time; fn must not call
 * kern_pool_run on the same pool (no nesting: asserted). No allocation. */
void kern_pool_run(kern_pool_t *p, kern_range_fn fn, void *arg, int64_t total, int64_t align);

/* Lets the workers go to sleep now instead of spinning until the next run, which then pays
 * their wake-up (~0.1 ms here). For a caller about to spend a while off the pool in work that
 * wakes other threads: a spinning worker holds a core those threads then take from the caller
 * instead. From the thread that runs the pool, between runs. */
void kern_pool_park(kern_pool_t *p);

/* For tests: workers asleep on the condition variable right now; how long a worker spins
 * after a run before it sleeps (default 2 ms). */
int kern_pool_sleeping(kern_pool_t *p);
void kern_pool_set_spin(kern_pool_t *p, int64_t ns);

/* kern_matmul with the rows split across the pool (prep runs once, on the calling thread).
 * pool may be NULL (then it is kern_matmul). Results are bit-identical to kern_matmul:
 * each output is computed by the same code whatever thread computes it. */
void kern_matmul_mt(const kern_ops_t *ops, kern_pool_t *pool, const kern_mat_t *w,
                    const float *x, int n, float *y, void *work);

/* ---- conversion and quantisation ---- */

/* bf16 ↔ fp32. f32 → bf16 rounds to nearest, ties to even; NaN stays a (quiet) NaN; ±Inf and
 * values that round past the largest bf16 become ±Inf. */
uint16_t kern_f32_to_bf16(float f);
float kern_bf16_to_f32(uint16_t h);
void kern_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n);
/* n bf16 values widened to fp32 (exact: a shift), in a loop the compiler vectorises. */
void kern_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n);

/* Bytes of a (rows, cols) bf16 matrix in KERN_LAYOUT_P32 (padding included). */
size_t kern_p32_bytes(int64_t rows, int64_t cols);
/* Packs row-major bf16 src (rows, cols) into dst (kern_p32_bytes, padding zeroed). */
void kern_pack_p32(const uint16_t *src, int64_t rows, int64_t cols, uint16_t *dst);
/* Rows [r0, r1) of a P32 matrix (data p, cols columns) widened to fp32 into out
 * ((r1 − r0), cols) row-major: the exact stored values. */
void kern_p32_rows_f32(const uint16_t *p, int64_t cols, int64_t r0, int64_t r1, float *out);

/* Symmetric per-row int8: scale[r] = max_k |src[r][k]| / 127 (0 for an all-zero row) and
 * q[r][k] = round_half_even(src[r][k] · 127 / max_k |src[r][k]|) clamped to [-127, 127], so
 * |src − q · scale| ≤ scale / 2. src (rows, cols) fp32; q (rows, cols); scale (rows).
 * Non-finite inputs are the caller's problem (the scale becomes Inf/NaN). */
void kern_quant_i8_rows(const float *src, int64_t rows, int64_t cols, int8_t *q, float *scale);

/* ---- activations as the kernels see them ---- */

/* What a backend's rows kernel for weights of type wt multiplies instead of the fp32
 * activations: the fp32 values themselves, their bf16 rounding (dpbf16 path), or their per-token
 * int8 quantisation q · sx (vnni path): what a caller's error bound has to allow for. */
typedef enum { KERN_ACT_F32 = 0, KERN_ACT_BF16, KERN_ACT_I8 } kern_act_round_t;

kern_act_round_t kern_act_rounding(const kern_ops_t *ops, kern_wtype_t wt, int64_t cols);

#endif
