/* linear.c: the engine's compute context and the two paths of y = x·Wᵀ (see linear.h). */
#include "linear.h"

#include <assert.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Below this many multiply-adds a call runs on the calling thread alone: handing work to a
 * worker and waiting for it costs a few microseconds, as much as ~64K FMAs. Tiny models
 * (stories260K's 64-wide layers) and small adapters stay serial; real layers never are. */
#define MIN_PARALLEL_MACS (1 << 16)

struct core_exec_s {
    kern_pool_t *pool;
    const kern_ops_t *ops;
    int n_threads;
    int64_t max_cols;
    int max_tokens;
    double min_parallel;  /* MIN_PARALLEL_MACS unless a test lowers it */
    void *work;           /* kernel activation work buffer (prep runs once per call) */
    char desc[256];
};

int core_exec_create(int n_threads, int max_tokens, int64_t max_cols, core_exec_t **out) {
    if (n_threads < 0 || max_cols <= 0 || max_tokens <= 0) return LLM_EINVAL;
    if (n_threads == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    if (n_threads > 64) n_threads = 64;
    core_exec_t *ex = calloc(1, sizeof *ex);
    if (!ex) return LLM_ENOMEM;
    ex->n_threads = n_threads;
    ex->max_cols = max_cols;
    ex->max_tokens = max_tokens;
    ex->min_parallel = MIN_PARALLEL_MACS;
    char kdesc[160];
    ex->ops = kern_select(kdesc, sizeof kdesc);
    size_t work = 0;
    for (int t = 0; t < KERN_W_COUNT; t++) {
        size_t s = kern_work_size((kern_wtype_t)t, max_tokens, max_cols);
        if (s > work) work = s;
    }
    ex->work = malloc(work);
    int rc = ex->work ? 0 : LLM_ENOMEM;
    if (!rc) rc = kern_pool_create(n_threads, &ex->pool);
    if (rc) {
        core_exec_free(ex);
        return rc;
    }
    /* One level of parallelism: ours. OpenBLAS threads inside our workers would fight them
     * for the same cores (performance.md §2.6: 2–4× slower on small calls). */
    openblas_set_num_threads(1);
    snprintf(ex->desc, sizeof ex->desc, "%d compute threads; %s; OpenBLAS %s, 1 thread per call",
             n_threads, kdesc, openblas_get_corename());
    *out = ex;
    return 0;
}

void core_exec_free(core_exec_t *ex) {
    if (!ex) return;
    kern_pool_free(ex->pool);
    free(ex->work);
    free(ex);
}

kern_pool_t *core_exec_pool(core_exec_t *ex) { return ex->pool; }
const kern_ops_t *core_exec_ops(const core_exec_t *ex) { return ex->ops; }
int core_exec_threads(const core_exec_t *ex) { return ex->n_threads; }
const char *core_exec_describe(const core_exec_t *ex) { return ex->desc; }
void core_exec_set_min_parallel(core_exec_t *ex, double macs) { ex->min_parallel = macs; }

void core_exec_run_sized(core_exec_t *ex, kern_range_fn fn, void *arg, int64_t total,
                         int64_t align, double work) {
    if (total <= 0) return;
    if (work < ex->min_parallel) fn(arg, 0, total, 0);
    else kern_pool_run(ex->pool, fn, arg, total, align);
}

/* ---- both paths, over the rows of several matrices that read the same x ---- */

#define MAX_MULTI 4

typedef struct {
    core_exec_t *ex;
    int nw;
    const core_weight_t *const *w;
    float *const *y;
    const float *x;       /* the sgemm path's input */
    int n;
    int kernels;          /* 1: kernel path (a is prepared), 0: sgemm path */
    kern_act_t a;
    int64_t off[MAX_MULTI + 1]; /* first row of each matrix in the concatenation */
} multi_job_t;

/* Tokens [t0, t0 + n) of prepared activations, as the kernels read them. */
static kern_act_t act_slice(const kern_act_t *a, int t0, int n) {
    kern_act_t s = *a;
    s.n = n;
    s.x = a->x + (size_t)t0 * (size_t)a->ldx;
    if (a->xb) s.xb = a->xb + (size_t)t0 * (size_t)a->ld;
    if (a->xq) s.xq = a->xq + (size_t)t0 * (size_t)a->ld;
    if (a->xs) s.xs = a->xs + t0;
    if (a->xsum) s.xsum = a->xsum + t0;
    return s;
}

/* Rows [r0, r1) of matrix w for all n tokens on the kernel path: slices of up to
 * CORE_KERN_MAX_N tokens, each streaming the rows once (from cache after the first slice:
 * a worker's share of one matrix is at most a few MB). */
static void kernel_rows(const multi_job_t *j, const core_weight_t *w, float *y, int64_t r0,
                        int64_t r1) {
    const kern_mat_t km = core_weight_mat(w);
    for (int t0 = 0; t0 < j->n; t0 += CORE_KERN_MAX_N) {
        const int nt = j->n - t0 < CORE_KERN_MAX_N ? j->n - t0 : CORE_KERN_MAX_N;
        const kern_act_t s = act_slice(&j->a, t0, nt);
        kern_rows_for(j->ex->ops, &km)(&km, &s, y + (size_t)t0 * (size_t)w->rows, r0, r1);
    }
}

/* Rows [i0, i1) of the concatenated matrices. */
static void multi_rows(void *arg, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    const multi_job_t *j = arg;
    for (int m = 0; m < j->nw; m++) {
        const int64_t lo = i0 > j->off[m] ? i0 : j->off[m];
        const int64_t hi = i1 < j->off[m + 1] ? i1 : j->off[m + 1];
        if (lo >= hi) continue;
        const core_weight_t *w = j->w[m];
        const int64_t r0 = lo - j->off[m], k = w->cols;
        if (j->kernels)
            kernel_rows(j, w, j->y[m], r0, hi - j->off[m]);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, (int)(hi - lo), (int)k,
                        1.0f, j->x, (int)k, (const float *)w->data + (size_t)r0 * (size_t)k,
                        (int)k, 0.0f, j->y[m] + r0, (int)w->rows);
    }
}

void core_linear_multi(core_exec_t *ex, const core_weight_t *const *w, int nw, const float *x,
                       int n, float *const *y) {
    assert(nw >= 1 && nw <= MAX_MULTI);
    const kern_wtype_t wt = w[0]->type;
    multi_job_t j = {.ex = ex, .nw = nw, .w = w, .y = y, .x = x, .n = n,
                     .kernels = n <= CORE_KERN_MAX_N || wt != KERN_W_F32};
    double macs = 0;
    for (int m = 0; m < nw; m++) {
        assert(w[m]->cols == w[0]->cols && w[m]->type == wt);
        j.off[m + 1] = j.off[m] + w[m]->rows;
        macs += (double)n * (double)w[m]->rows * (double)w[m]->cols;
    }
    if (j.kernels) ex->ops->prep(wt, x, n, w[0]->cols, ex->work, &j.a); /* once for all */
    /* boundaries on 16-row multiples keep each worker's output columns on whole cache lines */
    core_exec_run_sized(ex, multi_rows, &j, j.off[nw], 16, macs);
}

void core_linear(core_exec_t *ex, const core_weight_t *w, const float *x, int n, float *y) {
    core_linear_multi(ex, &w, 1, x, n, &y);
}
