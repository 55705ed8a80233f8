/* linear.h: the compute context of the engine thread, and y = x·Wᵀ on it.
 *
 * A core_exec_t owns the engine's worker pool (kern_pool_t: the engine thread plus n − 1
 * workers, one per core), the kernel backend chosen at start-up, and the per-thread scratch
 * the linear layers need. Everything heavy in a step runs on this pool, one parallel region
 * at a time, never nested: OpenBLAS is told to use one thread (openblas_set_num_threads(1))
 * and each of our workers calls it on its own share of the rows.
 *
 * core_linear() runs on one of two paths:
 *   kernels   the streaming kernels (kern.h) for bf16 and int8 weights at any n, and for fp32
 *             weights up to CORE_KERN_MAX_N tokens: rows split across the pool, tokens taken
 *             CORE_KERN_MAX_N at a time, each slice streaming the worker's rows once. With
 *             bf16 weights this is vdpbf16ps at ~2× the fp32 FMA rate: 480-token prompts
 *             went from 961 to 1761 tok/s (SmolLM shape) and 128 to 256 (TinyLlama) against
 *             the sgemm path it replaced, which widened bf16 panels to fp32 for OpenBLAS
 *             (Debian's has no bf16 GEMM).
 *   sgemm     fp32 weights above CORE_KERN_MAX_N tokens: single-threaded sgemm per worker on
 *             its rows (OpenBLAS's SkylakeX kernels reach ~80 % of the FMA peak there).
 * A token's result does not depend on the size of its step beyond fp32 summation order: the
 * kernels round activations per token (bf16 dpbf16, int8 vnni: kern.h), whatever the slice.
 *
 * Thread safety: one thread (the engine) drives a core_exec_t.
 */
#ifndef CORE_LINEAR_H
#define CORE_LINEAR_H

#include "kern.h"
#include "tensor.h"

/* Tokens per kernel call (the kernels keep partial sums of up to 8 tiles of 4 tokens in
 * registers and L1); fp32 weights switch to sgemm above it. */
#define CORE_KERN_MAX_N 32

typedef struct core_exec_s core_exec_t;

/* A pool of n_threads participants (the caller of core_linear counts as one; 0 = the number
 * of online CPUs) and scratch for steps of up to max_tokens tokens of up to max_cols features.
 * Returns 0 and *out (new; free with core_exec_free), LLM_EINVAL or LLM_ENOMEM. */
int core_exec_create(int n_threads, int max_tokens, int64_t max_cols, core_exec_t **out);
/* Accepts NULL. */
void core_exec_free(core_exec_t *ex);

/* Borrowed, valid while ex lives. */
kern_pool_t *core_exec_pool(core_exec_t *ex);
const kern_ops_t *core_exec_ops(const core_exec_t *ex);
int core_exec_threads(const core_exec_t *ex);
/* Calls below macs multiply-adds run on the calling thread (default: about what waking the
 * workers costs). Tests set 0 to run tiny models through the parallel code. */
void core_exec_set_min_parallel(core_exec_t *ex, double macs);

/* One line for the start-up log: threads, kernel backend and paths, OpenBLAS core. Static
 * storage owned by ex. */
const char *core_exec_describe(const core_exec_t *ex);

/* y[n, w->rows] = x[n, w->cols] · wᵀ (y overwritten). x and y row-major and contiguous, not
 * overlapping; n ≤ max_tokens, w->cols ≤ max_cols. No allocation. */
void core_linear(core_exec_t *ex, const core_weight_t *w, const float *x, int n, float *y);

/* core_linear for nw ≤ 4 matrices with the same cols and storage type that read the same x
 * (q, k, v; gate, up): y[m] = x · w[m]ᵀ. One parallel region over all their rows and, on the
 * kernel path, one activation prep, instead of one each. */
void core_linear_multi(core_exec_t *ex, const core_weight_t *const *w, int nw, const float *x,
                       int n, float *const *y);

/* fn over [0, total) split across the pool (kern_pool_run) with boundaries on multiples of
 * align, for the forward's other loops (attention, norms) and the adapter hook; run on the
 * calling thread alone (as participant 0) when work, the call's multiply-adds, is too small
 * to pay for waking the workers. */
void core_exec_run_sized(core_exec_t *ex, kern_range_fn fn, void *arg, int64_t total,
                         int64_t align, double work);

#endif
