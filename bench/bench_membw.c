/* bench_membw.c: the machine's DRAM read bandwidth, for bench_serve.py's results.
 *
 *   bench_membw [--mib N] [--reps R]      (defaults: 1024 MiB, 7 repetitions)
 *
 * Sums a 1 GiB float buffer (far larger than the ~32 MiB of L3 the VM sees) with 1 thread
 * and with 2 threads (each thread its half), each pass read as 4 interleaved sequential
 * streams like bench_kernels.c (one stream per core reads ~10 % slower on this VM,
 * performance.md §2.2). Prints one JSON object: the median GB/s (1e9 bytes/s) of R passes
 * for each thread count, and the min and max. On this shared host the figure moves by up to
 * ±40 % from one minute to the next, so it is measured in the same run as what it explains.
 *
 * Not run by the kernel-bench loop of `make bench` (the Makefile filters it out of
 * bench/bench_*.c); bench_serve.py runs it at the start and at the end of its scenarios.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_stream.h"

/* ---- helpers ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- threads ---- */

typedef struct {
    const float *p;
    size_t n;
    pthread_barrier_t *start;
    double t0, t1; /* this thread's own start and end */
    volatile float sink;
} part_t;

static void *part_run(void *arg) {
    part_t *t = arg;
    pthread_barrier_wait(t->start);
    t->t0 = now_s();
    t->sink = bench_stream_sum(t->p, t->n);
    t->t1 = now_s();
    return NULL;
}

/* Seconds of one pass over buf (n floats) split over `threads` threads (1 or 2): from the
 * first thread's start to the last one's end, as the threads time themselves (the main
 * thread, waiting, may not be scheduled promptly on a 2-core machine). */
static double pass(const float *buf, size_t n, int threads) {
    if (threads == 1) {
        double t0 = now_s();
        volatile float s = bench_stream_sum(buf, n);
        (void)s;
        return now_s() - t0;
    }
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    part_t parts[2];
    pthread_t tid[2];
    size_t half = n / 2;
    int ok = 1;
    for (int i = 0; i < threads; i++) {
        parts[i] = (part_t){.p = buf + (size_t)i * half, .n = half, .start = &start};
        if (pthread_create(&tid[i], NULL, part_run, &parts[i])) ok = 0;
    }
    if (!ok) {
        fprintf(stderr, "bench_membw: cannot start threads\n");
        exit(1); /* the barrier would never open */
    }
    double t0 = 1e300, t1 = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        t0 = parts[i].t0 < t0 ? parts[i].t0 : t0;
        t1 = parts[i].t1 > t1 ? parts[i].t1 : t1;
    }
    pthread_barrier_destroy(&start);
    return t1 - t0;
}

int main(int argc, char **argv) {
    size_t mib = 1024;
    int reps = 7;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_membw [--mib N] [--reps R]\n");
            return 2;
        }
    }
    if (mib < 64 || reps < 1 || reps > 99) {
        fprintf(stderr, "bench_membw: --mib ≥ 64 and 1 ≤ --reps ≤ 99\n");
        return 2;
    }
    size_t bytes = mib << 20, n = bytes / sizeof(float);
    float *buf = aligned_alloc(64, bytes);
    if (!buf) {
        fprintf(stderr, "bench_membw: cannot allocate %zu MiB\n", mib);
        return 1;
    }
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 1023) * 1e-3f; /* touch every page */
    printf("{\"bytes\": %zu, \"reps\": %d", bytes, reps);
    for (int threads = 1; threads <= 2; threads++) {
        double gbs[99];
        pass(buf, n, threads); /* warm-up: page tables, thread start */
        for (int r = 0; r < reps; r++) gbs[r] = (double)bytes / pass(buf, n, threads) * 1e-9;
        qsort(gbs, (size_t)reps, sizeof *gbs, cmp_d);
        double med = reps % 2 ? gbs[reps / 2] : 0.5 * (gbs[reps / 2 - 1] + gbs[reps / 2]);
        printf(", \"gbps_%dt\": %.2f, \"gbps_%dt_min\": %.2f, \"gbps_%dt_max\": %.2f", threads,
               med, threads, gbs[0], threads, gbs[reps - 1]);
    }
    printf("}\n");
    free(buf);
    return 0;
}
