/* bench_stream.h: the streaming read both bandwidth benches time (bench_membw.c,
 * bench_kernels.c), so their GB/s figures are the same measurement.
 *
 * bench_stream_sum(p, n): the sum of n floats read as 4 interleaved sequential streams (the
 * four quarters of the range, any tail beyond a multiple of the vector block left out): on
 * this VM one stream per core reads ~10 % slower than 2–8 (performance.md §2.2), and the
 * kernels stream 4–8 weight rows at once, so this is the fair ceiling. AVX-512, AVX2 or
 * plain C, chosen by the CPU. Header-only (static functions) because bench_membw links
 * nothing of the project.
 */
#ifndef BENCH_STREAM_H
#define BENCH_STREAM_H

#include <immintrin.h>
#include <stddef.h>

__attribute__((target("avx512f"))) static float bench_sum_avx512(const float *p, size_t n) {
    const size_t q = n / 4 / 32 * 32;
    const float *s0 = p, *s1 = p + q, *s2 = p + 2 * q, *s3 = p + 3 * q;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0,
           b3 = a0;
    for (size_t i = 0; i < q; i += 32) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(s0 + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(s1 + i));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(s2 + i));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(s3 + i));
        b0 = _mm512_add_ps(b0, _mm512_loadu_ps(s0 + i + 16));
        b1 = _mm512_add_ps(b1, _mm512_loadu_ps(s1 + i + 16));
        b2 = _mm512_add_ps(b2, _mm512_loadu_ps(s2 + i + 16));
        b3 = _mm512_add_ps(b3, _mm512_loadu_ps(s3 + i + 16));
    }
    __m512 t = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(b0, b1), _mm512_add_ps(b2, b3)));
    return _mm512_reduce_add_ps(t);
}

__attribute__((target("avx2"))) static float bench_sum_avx2(const float *p, size_t n) {
    const size_t q = n / 4 / 8 * 8;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < q; i += 8) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + q + i));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + 2 * q + i));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + 3 * q + i));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

static inline float bench_sum_scalar(const float *p, size_t n) {
    float a[8] = {0};
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) a[k] += p[i + k];
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

static inline float bench_stream_sum(const float *p, size_t n) {
    if (__builtin_cpu_supports("avx512f")) return bench_sum_avx512(p, n);
    if (__builtin_cpu_supports("avx2")) return bench_sum_avx2(p, n);
    return bench_sum_scalar(p, n);
}

#endif
