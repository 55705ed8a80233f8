/* kern_pool.c: a tiny fork-join pool for splitting a kernel call's rows over threads.
 *
 * The caller is participant 0 and n − 1 workers wait for a generation counter to move. A run
 * publishes the job, bumps the counter, does range 0 itself and spins until the workers have
 * counted themselves done. Workers spin for WORKER_SPIN_NS after their last job (yielding now
 * and then after WORKER_YIELD_NS) and then sleep on a condition variable, so an idle server
 * does not burn its cores. Measured here: a run whose worker is spinning costs ~0.6 µs; one
 * that has to wake a sleeping worker ~80–130 µs (futex wake-up in this VM under load), more
 * than a whole cold 576×576 bf16 matmul. Decode issues runs every few µs to ms, hence the
 * generous spin. kern_pool_park cuts the spin short when the caller knows it will be away for
 * a while. No allocation after create, no OpenMP, and no nesting: fn must not run the same
 * pool (asserted).
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "kern_int.h"
#include "llm_error.h"

/* ---- types ---- */

/* How long a worker spins after its last job before it sleeps, and after how long of that it
 * starts yielding the core between checks. */
#define WORKER_SPIN_NS 2000000L
#define WORKER_YIELD_NS 200000L
/* The caller's wait: spin with PAUSE, yield now and then in case a worker was descheduled. */
#define CALLER_SPINS_PER_YIELD 1024
#define MAX_THREADS 64

typedef struct worker_s {
    struct kern_pool_s *p;
    int tid;
} worker_t;

struct kern_pool_s {
    /* read-only after create */
    int n;
    pthread_t th[MAX_THREADS];
    worker_t wk[MAX_THREADS];
    /* the job: written by the caller before gen is bumped, read by workers after */
    kern_range_fn fn;
    void *arg;
    int64_t total, align;
    int stop;
    /* synchronisation */
    atomic_uint gen;   /* bumped once per run (and once to stop) */
    atomic_int done;   /* workers finished with the current run */
    atomic_int in_run; /* nesting / concurrent-use guard */
    atomic_int park;   /* set by kern_pool_park, cleared by the next run: sleep, do not spin */
    atomic_llong spin_ns; /* WORKER_SPIN_NS unless a test changes it */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int nsleep; /* workers waiting on cv (under mu) */
};

/* ---- helpers ---- */

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Participant tid's share of [0, total): equal chunks rounded up to align. */
static void range_of(const kern_pool_t *p, int64_t total, int64_t align, int tid, int64_t *i0,
                     int64_t *i1) {
    int64_t per = (total + p->n - 1) / p->n;
    per = (per + align - 1) / align * align;
    int64_t a = per * tid, b = a + per;
    *i0 = a < total ? a : total;
    *i1 = b < total ? b : total;
}

static void *worker_main(void *arg) {
    worker_t *me = arg;
    kern_pool_t *p = me->p;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        const int64_t idle_since = now_ns();
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            /* PAUSE takes 10–150 cycles depending on the CPU: count time, not iterations. */
            if (++spins % 256) {
                cpu_relax();
                continue;
            }
            int64_t idle = now_ns() - idle_since;
            if (idle < atomic_load_explicit(&p->spin_ns, memory_order_relaxed) &&
                !atomic_load_explicit(&p->park, memory_order_relaxed)) {
                /* after a while, let any runnable thread (another participant, when the pool
                 * has more threads than free cores) have this core now and then */
                if (idle > WORKER_YIELD_NS) sched_yield();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            p->nsleep++;
            while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen)
                pthread_cond_wait(&p->cv, &p->mu);
            p->nsleep--;
            pthread_mutex_unlock(&p->mu);
            break;
        }
        seen = g;
        if (p->stop) return NULL;
        int64_t i0, i1;
        range_of(p, p->total, p->align, me->tid, &i0, &i1);
        if (i0 < i1) p->fn(p->arg, i0, i1, me->tid);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
}

/* Publishes the current job (or stop) to the workers. */
static void wake_workers(kern_pool_t *p) {
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    if (p->nsleep) pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- public API ---- */

int kern_pool_create(int n_threads, kern_pool_t **out) {
    *out = NULL;
    if (n_threads < 1 || n_threads > MAX_THREADS) return LLM_EINVAL;
    kern_pool_t *p = calloc(1, sizeof *p);
    if (!p) return LLM_ENOMEM;
    p->n = 1;
    atomic_init(&p->gen, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->in_run, 0);
    atomic_init(&p->park, 0);
    atomic_init(&p->spin_ns, WORKER_SPIN_NS);
    int rc = pthread_mutex_init(&p->mu, NULL);
    if (rc) {
        free(p);
        return -rc;
    }
    rc = pthread_cond_init(&p->cv, NULL);
    if (rc) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return -rc;
    }
    for (int t = 1; t < n_threads; t++) {
        p->wk[t] = (worker_t){.p = p, .tid = t};
        rc = pthread_create(&p->th[t], NULL, worker_main, &p->wk[t]);
        if (rc) {
            kern_pool_free(p); /* joins the p->n − 1 workers started so far */
            return -rc;
        }
        p->n = t + 1;
    }
    *out = p;
    return 0;
}

void kern_pool_free(kern_pool_t *p) {
    if (!p) return;
    if (p->n > 1) {
        p->stop = 1;
        wake_workers(p);
        for (int t = 1; t < p->n; t++) pthread_join(p->th[t], NULL);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int kern_pool_size(const kern_pool_t *p) { return p->n; }

void kern_pool_run(kern_pool_t *p, kern_range_fn fn, void *arg, int64_t total, int64_t align) {
    if (total <= 0) return;
    if (align < 1) align = 1;
    int was = atomic_exchange_explicit(&p->in_run, 1, memory_order_acq_rel);
    assert(!was && "kern_pool_run: nested or concurrent run on one pool");
    (void)was;
    int64_t i0, i1;
    range_of(p, total, align, 0, &i0, &i1);
    if (p->n == 1 || i1 >= total) { /* one range: no need to wake anybody */
        fn(arg, 0, total, 0);
        atomic_store_explicit(&p->in_run, 0, memory_order_release);
        return;
    }
    atomic_store_explicit(&p->park, 0, memory_order_relaxed); /* gen's release publishes it */
    p->fn = fn;
    p->arg = arg;
    p->total = total;
    p->align = align;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    wake_workers(p);
    fn(arg, i0, i1, 0);
    int spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < p->n - 1) {
        cpu_relax();
        if (++spins % CALLER_SPINS_PER_YIELD == 0) sched_yield();
    }
    atomic_store_explicit(&p->in_run, 0, memory_order_release);
}

void kern_pool_park(kern_pool_t *p) {
    if (p->n > 1) atomic_store_explicit(&p->park, 1, memory_order_relaxed);
}

void kern_pool_set_spin(kern_pool_t *p, int64_t ns) {
    atomic_store_explicit(&p->spin_ns, ns, memory_order_relaxed);
}

int kern_pool_sleeping(kern_pool_t *p) {
    pthread_mutex_lock(&p->mu);
    int n = p->nsleep;
    pthread_mutex_unlock(&p->mu);
    return n;
}
