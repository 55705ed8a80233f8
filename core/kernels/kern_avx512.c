/* kern_avx512.c: AVX-512 streaming kernels for decode-sized linears, three tables.
 *
 *   avx512       AVX-512 F/BW/VL/DQ + FMA. f32: fp32 FMA. bf16: each weight widened to fp32 by
 *                a 16-bit shift (exact), fp32 FMA. int8: widened to fp32 (exact), fp32 FMA,
 *                times the row scale at the end. Accuracy: the reference's products, summed in
 *                a different order (|err| ≤ ~1e-6 · Σ|x·w| in practice).
 *   avx512-vnni  int8 through vpdpbusd. The activations are quantised once per call, per token,
 *                to int8 with sx = max|x_t| / 127 (prep_quant_i8). Accuracy: each activation
 *                moves by up to sx/2, so an output moves by up to scale_r · sx · ½ · Σ_k |q_k|.
 *                Measured on uniform random data (1000×1537, n = 8): 0.39 % rms of |y| —
 *                as much again as the int8 weight rounding itself — and more for a token whose
 *                one outlier activation sets a coarse sx. Hence int8 weights are opt-in.
 *   avx512-bf16  bf16 through vdpbf16ps with the activations rounded to bf16 (RNE, 8
 *                significant bits) once per call, plus int8 vnni. Accuracy: each activation
 *                has a relative error ≤ 2⁻⁸, so |err| ≤ 2⁻⁸ · Σ|x·w|; measured 0.15 % rms of
 *                |y| on the same data, as much as the bf16 weight rounding itself. vdpbf16ps
 *                also treats denormal inputs as zero and flushes denormal results (changes
 *                below 1e-38 per term). For exact bf16 products, LORAMUX_KERNELS=avx512f.
 *
 * Shape of every kernel (performance.md §2.5/§6.2): a block of R weight rows is streamed
 * from DRAM once and dotted against T tokens at a time (R·T accumulators in registers; R = 4,
 * T ≤ 4 balanced over n), the later token tiles finding the rows in L1/L2. At n = 1 the block
 * is R = 8 rows, which gives 8 independent accumulator chains and 8 concurrent streams. When
 * n ≥ PF_MIN_N the first token tile of a block prefetches the next block, since the compute
 * on a block is then long enough that the hardware prefetcher lets DRAM idle. Long rows are
 * cut into column chunks so a tile's rows and tokens stay in L1 across the token tiles.
 * Horizontal sums: 16 accumulators are reduced by one transposing shuffle tree (~45 ops)
 * instead of 16 separate reductions (~160).
 *
 * The low-rank adapter kernels (lr_shrink, lr_expand; the same code in all three tables)
 * always compute in fp32: bf16 factors are widened, activations never rounded. Shrink is the
 * widening rows kernel with an output stride; expand streams Bt in 16-column vectors, r summed
 * in registers per (token, vector) before y is touched (see expand_tile).
 *
 * Everything carries function-level target attributes; this file is safe to compile and link
 * into a binary for any x86-64 and only runs after kern_dispatch.c checked the CPU.
 */
#include <immintrin.h>
#include <string.h>

#include "kern_int.h"

/* ---- target attributes and tuning ---- */

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define T512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512vnni")))
#define T512BF16                                                                            \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512vnni,avx512bf16")))
#define INL static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 16")
/* Keeps a loaded vector in a register: without it GCC folds the weight (or activation) load
 * into each of the T (or R) multiply-adds as a memory operand, i.e. 20 loads per 16 FMAs
 * instead of 8. */
#define IN_REG(v) __asm__("" : "+v"(v))

#ifndef PF_MIN_N
#define PF_MIN_N 4     /* prefetch the next row block when n ≥ this (measured: bench) */
#endif
#ifndef PF_ROWS
#define PF_ROWS 4      /* n ≥ PF_MIN_N: prefetch this many rows ahead (the next 4-row block) */
#endif
#ifndef PF_ROWS_N1
#define PF_ROWS_N1 0   /* n = 1: rows ahead, 0 = none (8, 16, 32 measured: no gain, as §2.5) */
#endif
#define VNNI_MAX_COLS 65536 /* int32 lane sums stay < 2³¹ up to here (255·127·cols) */

/* k-chunk (columns) per pass when n ≥ 2: 4 weight rows + 4 tokens of one chunk are 16–32 KiB
 * and stay in L1 across the token tiles. Without it a 5632-column block (4 × 11 KiB of bf16
 * weights, and 4 × 11 KiB of activations per token tile) is re-read from L2 by every token
 * tile: dpbf16 at n = 32 went from ~215 to ~290 GFLOP/s with 2048-column chunks (hot); for
 * the other paths the effect was within the noise, and 2× smaller chunks were slower. */
#ifndef KC_F32
#define KC_F32 1024
#endif
#ifndef KC_BF16W
#define KC_BF16W 1024
#endif
#ifndef KC_I8W
#define KC_I8W 1024
#endif
#ifndef KC_BF16D
#define KC_BF16D 2048
#endif
#ifndef KC_I8V
#define KC_I8V 4096
#endif
#define MAX_TILES 8 /* chunking keeps partial sums of ≤ 8 token tiles (n ≤ 32) */

/* ---- helpers ---- */

/* Accumulators of a tile are indexed m = t·R + i (token t, row i). They are reduced by one
 * transposing shuffle tree (~45 ops instead of 16 separate reductions): after it, lane
 * 4L + e holds input vector base[L] + off[e] with base = {0, 8, 4, 12} and off =
 * {0, 2, 1, 3}, so the inputs are fed in that permuted order (ID) and lane m of the result
 * is the sum of accumulator m. The tree is used for every tile shape, zero-padded: each
 * vector's lanes are then summed in the same order whatever the tile, so an output does not
 * depend on which block (or which thread's row range) computed it. */
static const int ID[16] = {0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15};

INL T512 __m512 tree16_ps(const __m512 *v) {
    __m512 u[8], s[4], p[2];
    UNROLL for (int j = 0; j < 8; j++) {
        __m512 lo = _mm512_shuffle_f32x4(v[j], v[j + 8], _MM_SHUFFLE(1, 0, 1, 0));
        __m512 hi = _mm512_shuffle_f32x4(v[j], v[j + 8], _MM_SHUFFLE(3, 2, 3, 2));
        u[j] = _mm512_add_ps(lo, hi);
    }
    UNROLL for (int j = 0; j < 4; j++) {
        __m512 lo = _mm512_shuffle_f32x4(u[j], u[j + 4], _MM_SHUFFLE(2, 0, 2, 0));
        __m512 hi = _mm512_shuffle_f32x4(u[j], u[j + 4], _MM_SHUFFLE(3, 1, 3, 1));
        s[j] = _mm512_add_ps(lo, hi);
    }
    UNROLL for (int j = 0; j < 2; j++) {
        __m512 lo = _mm512_shuffle_ps(s[j], s[j + 2], _MM_SHUFFLE(1, 0, 1, 0));
        __m512 hi = _mm512_shuffle_ps(s[j], s[j + 2], _MM_SHUFFLE(3, 2, 3, 2));
        p[j] = _mm512_add_ps(lo, hi);
    }
    __m512 lo = _mm512_shuffle_ps(p[0], p[1], _MM_SHUFFLE(2, 0, 2, 0));
    __m512 hi = _mm512_shuffle_ps(p[0], p[1], _MM_SHUFFLE(3, 1, 3, 1));
    return _mm512_add_ps(lo, hi);
}

/* The same tree on int32 lanes (the shuffles are bitwise; only the adds differ). */
INL T512 __m512i tree16_epi32(const __m512i *v) {
#define SF(a, b, imm) _mm512_castps_si512(_mm512_shuffle_f32x4(_mm512_castsi512_ps(a), \
                                                                _mm512_castsi512_ps(b), imm))
#define SP(a, b, imm) _mm512_castps_si512(_mm512_shuffle_ps(_mm512_castsi512_ps(a), \
                                                             _mm512_castsi512_ps(b), imm))
    __m512i u[8], s[4], p[2];
    UNROLL for (int j = 0; j < 8; j++)
        u[j] = _mm512_add_epi32(SF(v[j], v[j + 8], _MM_SHUFFLE(1, 0, 1, 0)),
                                SF(v[j], v[j + 8], _MM_SHUFFLE(3, 2, 3, 2)));
    UNROLL for (int j = 0; j < 4; j++)
        s[j] = _mm512_add_epi32(SF(u[j], u[j + 4], _MM_SHUFFLE(2, 0, 2, 0)),
                                SF(u[j], u[j + 4], _MM_SHUFFLE(3, 1, 3, 1)));
    UNROLL for (int j = 0; j < 2; j++)
        p[j] = _mm512_add_epi32(SP(s[j], s[j + 2], _MM_SHUFFLE(1, 0, 1, 0)),
                                SP(s[j], s[j + 2], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_epi32(SP(p[0], p[1], _MM_SHUFFLE(2, 0, 2, 0)),
                            SP(p[0], p[1], _MM_SHUFFLE(3, 1, 3, 1)));
#undef SF
#undef SP
}

INL T512 __m512 reduce_ps(const __m512 *acc, const int cnt) {
    __m512 v[16];
    UNROLL for (int m = 0; m < 16; m++) v[ID[m]] = m < cnt ? acc[m] : _mm512_setzero_ps();
    return tree16_ps(v);
}

INL T512 __m512i reduce_epi32(const __m512i *acc, const int cnt) {
    __m512i v[16];
    UNROLL for (int m = 0; m < 16; m++) v[ID[m]] = m < cnt ? acc[m] : _mm512_setzero_si512();
    return tree16_epi32(v);
}

/* 16 bf16 values (masked lanes zero) widened to fp32 exactly: the bf16 bits are the top half of
 * the fp32, so a zero-extend and a 16-bit shift. */
INL T512 __m512 load_bf16x16(__mmask16 m, const void *p) {
    __m256i h = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Lane m = t·R + i of a tile ← p[i] (per-row values, e.g. scales). R ∈ {1, 4, 8}. */
INL T512 __m512 per_row(const float *p, const int R) {
    if (R == 1) return _mm512_set1_ps(p[0]);
    if (R == 4) return _mm512_broadcast_f32x4(_mm_loadu_ps(p));
    return _mm512_maskz_loadu_ps(0xff, p); /* R == 8, T == 1 */
}

/* Lane m = t·R + i ← p[t] (per-token values), for the T tokens at p. */
static const int DIV4[16] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};

INL T512 __m512 per_tok(const float *p, const int R, const int T) {
    if (R == 8) return _mm512_set1_ps(p[0]);
    __m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << T) - 1), p);
    if (R == 1) return v;
    return _mm512_permutexvar_ps(_mm512_loadu_si512(DIV4), v);
}

INL T512 __m512i per_tok_epi32(const int32_t *p, const int R, const int T) {
    if (R == 8) return _mm512_set1_epi32(p[0]);
    __m512i v = _mm512_maskz_loadu_epi32((__mmask16)((1u << T) - 1), p);
    if (R == 1) return v;
    return _mm512_permutexvar_epi32(_mm512_loadu_si512(DIV4), v);
}

/* y[t0 + t, r + i] = lane t·R + i of res; y has row stride ldy. */
INL T512 void store_tile(float *y, int64_t ldy, int64_t r, int t0, const int R, const int T,
                         __m512 res) {
    if (R == 8) {
        _mm256_storeu_ps(y + (size_t)t0 * (size_t)ldy + (size_t)r, _mm512_castps512_ps256(res));
        return;
    }
    float tmp[16];
    _mm512_storeu_ps(tmp, res);
    UNROLL for (int t = 0; t < T; t++) {
        float *yt = y + (size_t)(t0 + t) * (size_t)ldy + (size_t)r;
        if (R == 4)
            _mm_storeu_ps(yt, _mm_loadu_ps(tmp + 4 * t));
        else
            yt[0] = tmp[t];
    }
}

/* One pass of a tile over columns [k0, k1). first: start from zero, else from the partial
 * sums in save; last: k1 = cols (the column tail is done here) and the tile is finished,
 * else the partial sums go back to save. */
typedef struct {
    int64_t k0, k1;
    int first, last;
    void *save; /* 16 vectors */
} chunk_t;

#define TILE_BEGIN(VEC, ZERO)                                                               \
    VEC acc[16];                                                                            \
    UNROLL for (int m = 0; m < R * T; m++) acc[m] = c.first ? ZERO : ((VEC *)c.save)[m];
#define TILE_SAVE(VEC)                                                                      \
    if (!c.last) {                                                                          \
        UNROLL for (int m = 0; m < R * T; m++)((VEC *)c.save)[m] = acc[m];                  \
        return;                                                                             \
    }

/* ---- tile kernels: R rows from r × T tokens from t0 ---- */

/* Each tile kernel is one always_inline body per weight type, instantiated below per (R, T)
 * and inlined into the row drivers. Register use is what decides the speed here: the loop
 * keeps one moving pointer per operand plus strides (row i at pw + i·ws), and IN_REG stops
 * GCC from folding a loaded vector into every multiply-add as a memory operand. Without
 * those two, GCC ran out of general registers, parked pointers in zmm registers and
 * reloaded the weights 4× per step: f32 reached ~55 % of the FMA peak hot, now ~85 %
 * (bf16 dpbf16 ~95 %, int8 vnni ~80 %, 576 columns, L2-resident). Out-of-line tiles
 * (noinline) cost another ~25 % at 576 columns in call and set-up overhead. */
#define TILE_PARAMS                                                                         \
    const kern_mat_t *w, const kern_act_t *a, float *y, int64_t ldy, int64_t r, int t0,     \
        int pf, chunk_t c

/* The k loop: S columns per step, WB / XB bytes per step of a weight row / token row. When
 * pf > 0, the same columns of the R rows pf rows further on (the next block) are prefetched,
 * one line per row whenever the step starts a new 64-byte line of the weights. Those rows
 * may lie past the matrix: prefetches never fault, and the address is kept as an integer. */
#define KLOOP(S, WB, XB, STEP)                                                              \
    if (pf) {                                                                               \
        uintptr_t pp = (uintptr_t)pw + (size_t)pf * ws;                                     \
        for (; k + (S) <= c.k1; k += (S), pw += (WB), px += (XB), pp += (WB)) {             \
            if ((WB) >= 64 || !(((k - c.k0) * (WB) / (S)) & 63))                            \
                UNROLL for (int i = 0; i < R; i++)                                          \
                    _mm_prefetch((const char *)(pp + i * ws), _MM_HINT_T0);                 \
            STEP;                                                                           \
        }                                                                                   \
    } else {                                                                                \
        for (; k + (S) <= c.k1; k += (S), pw += (WB), px += (XB)) STEP;                     \
    }

/* fp32 weights, fp32 activations. */
INL T512 void f32_step(__m512 *acc, const char *pw, size_t ws, const char *px, size_t xs,
                       __mmask16 m, const int R, const int T) {
    __m512 wv[8];
    UNROLL for (int i = 0; i < R; i++) {
        wv[i] = _mm512_maskz_loadu_ps(m, pw + i * ws);
        IN_REG(wv[i]);
    }
    UNROLL for (int t = 0; t < T; t++) {
        __m512 xv = _mm512_maskz_loadu_ps(m, px + t * xs);
        IN_REG(xv);
        UNROLL for (int i = 0; i < R; i++)
            acc[t * R + i] = _mm512_fmadd_ps(wv[i], xv, acc[t * R + i]);
    }
}

INL T512 void tile_f32(TILE_PARAMS, const int R, const int T) {
    const size_t ws = (size_t)w->cols * 4, xs = (size_t)a->ldx * 4;
    const char *pw = (const char *)w->data + (size_t)r * ws + (size_t)c.k0 * 4;
    const char *px = (const char *)(a->x + (size_t)t0 * (size_t)a->ldx) + (size_t)c.k0 * 4;
    TILE_BEGIN(__m512, _mm512_setzero_ps())
    int64_t k = c.k0;
    KLOOP(16, 64, 64, f32_step(acc, pw, ws, px, xs, (__mmask16)0xffff, R, T))
    if (k < c.k1) f32_step(acc, pw, ws, px, xs, (__mmask16)((1u << (c.k1 - k)) - 1), R, T);
    TILE_SAVE(__m512)
    store_tile(y, ldy, r, t0, R, T, reduce_ps(acc, R * T));
}

/* bf16 weights widened to fp32 (<< 16), fp32 activations: exact products. */
INL T512 void bf16w_step(__m512 *acc, const char *pw, size_t ws, const char *px, size_t xs,
                         __mmask16 m, const int R, const int T) {
    __m512 wv[8];
    UNROLL for (int i = 0; i < R; i++) {
        wv[i] = load_bf16x16(m, pw + i * ws);
        IN_REG(wv[i]);
    }
    UNROLL for (int t = 0; t < T; t++) {
        __m512 xv = _mm512_maskz_loadu_ps(m, px + t * xs);
        IN_REG(xv);
        UNROLL for (int i = 0; i < R; i++)
            acc[t * R + i] = _mm512_fmadd_ps(wv[i], xv, acc[t * R + i]);
    }
}

INL T512 void tile_bf16w(TILE_PARAMS, const int R, const int T) {
    const size_t ws = (size_t)w->cols * 2, xs = (size_t)a->ldx * 4;
    const char *pw = (const char *)w->data + (size_t)r * ws + (size_t)c.k0 * 2;
    const char *px = (const char *)(a->x + (size_t)t0 * (size_t)a->ldx) + (size_t)c.k0 * 4;
    TILE_BEGIN(__m512, _mm512_setzero_ps())
    int64_t k = c.k0;
    KLOOP(16, 32, 64, bf16w_step(acc, pw, ws, px, xs, (__mmask16)0xffff, R, T))
    if (k < c.k1) bf16w_step(acc, pw, ws, px, xs, (__mmask16)((1u << (c.k1 - k)) - 1), R, T);
    TILE_SAVE(__m512)
    store_tile(y, ldy, r, t0, R, T, reduce_ps(acc, R * T));
}

/* int8 weights widened to fp32, fp32 activations, row scale applied to the sum. */
INL T512 void i8w_step(__m512 *acc, const char *pw, size_t ws, const char *px, size_t xs,
                       __mmask16 m, const int R, const int T) {
    __m512 wv[8];
    UNROLL for (int i = 0; i < R; i++) {
        __m128i b = _mm_maskz_loadu_epi8(m, pw + i * ws);
        wv[i] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
        IN_REG(wv[i]);
    }
    UNROLL for (int t = 0; t < T; t++) {
        __m512 xv = _mm512_maskz_loadu_ps(m, px + t * xs);
        IN_REG(xv);
        UNROLL for (int i = 0; i < R; i++)
            acc[t * R + i] = _mm512_fmadd_ps(wv[i], xv, acc[t * R + i]);
    }
}

INL T512 void tile_i8w(TILE_PARAMS, const int R, const int T) {
    const size_t ws = (size_t)w->cols, xs = (size_t)a->ldx * 4;
    const char *pw = (const char *)w->data + (size_t)r * ws + (size_t)c.k0;
    const char *px = (const char *)(a->x + (size_t)t0 * (size_t)a->ldx) + (size_t)c.k0 * 4;
    TILE_BEGIN(__m512, _mm512_setzero_ps())
    int64_t k = c.k0;
    KLOOP(16, 16, 64, i8w_step(acc, pw, ws, px, xs, (__mmask16)0xffff, R, T))
    if (k < c.k1) i8w_step(acc, pw, ws, px, xs, (__mmask16)((1u << (c.k1 - k)) - 1), R, T);
    TILE_SAVE(__m512)
    __m512 res = _mm512_mul_ps(reduce_ps(acc, R * T), per_row(w->scale + r, R));
    store_tile(y, ldy, r, t0, R, T, res);
}

/* int8 weights × int8 activations through vpdpbusd (u8 × s8). The weights are made unsigned
 * by flipping the sign bit (w + 128), so Σ (w + 128)·xq = Σ w·xq + 128·Σ xq, and the second
 * term is per token (a->xsum), computed once in prep. Masked-off weight lanes become 128 but
 * meet zero padding in xq, so they add nothing. The int32 arithmetic wraps, and the true
 * Σ w·xq (|.| ≤ 127² · cols) fits, so the difference is exact. */
INL T512VNNI void i8v_step(__m512i *acc, const char *pw, size_t ws, const char *px, size_t xs,
                           __mmask64 m, const int R, const int T) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i wv[8];
    UNROLL for (int i = 0; i < R; i++) {
        wv[i] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, pw + i * ws), flip);
        IN_REG(wv[i]);
    }
    UNROLL for (int t = 0; t < T; t++) {
        __m512i xv = _mm512_load_si512(px + t * xs);
        IN_REG(xv);
        UNROLL for (int i = 0; i < R; i++)
            acc[t * R + i] = _mm512_dpbusd_epi32(acc[t * R + i], wv[i], xv);
    }
}

INL T512VNNI void tile_i8v(TILE_PARAMS, const int R, const int T) {
    const size_t ws = (size_t)w->cols, xs = (size_t)a->ld;
    const char *pw = (const char *)w->data + (size_t)r * ws + (size_t)c.k0;
    const char *px = (const char *)(a->xq + (size_t)t0 * xs) + (size_t)c.k0;
    TILE_BEGIN(__m512i, _mm512_setzero_si512())
    int64_t k = c.k0;
    KLOOP(64, 64, 64, i8v_step(acc, pw, ws, px, xs, ~(__mmask64)0, R, T))
    if (k < c.k1) i8v_step(acc, pw, ws, px, xs, ((__mmask64)1 << (c.k1 - k)) - 1, R, T);
    TILE_SAVE(__m512i)
    __m512i corr = _mm512_slli_epi32(per_tok_epi32(a->xsum + t0, R, T), 7);
    __m512 s = _mm512_cvtepi32_ps(_mm512_sub_epi32(reduce_epi32(acc, R * T), corr));
    __m512 f = _mm512_mul_ps(per_row(w->scale + r, R), per_tok(a->xs + t0, R, T));
    store_tile(y, ldy, r, t0, R, T, _mm512_mul_ps(s, f));
}

/* bf16 weights × bf16 activations through vdpbf16ps (pairs of products into fp32). */
INL T512BF16 void bf16d_step(__m512 *acc, const char *pw, size_t ws, const char *px, size_t xs,
                             __mmask32 m, const int R, const int T) {
    __m512i wv[8];
    UNROLL for (int i = 0; i < R; i++) {
        wv[i] = _mm512_maskz_loadu_epi16(m, pw + i * ws);
        IN_REG(wv[i]);
    }
    UNROLL for (int t = 0; t < T; t++) {
        __m512i xv = _mm512_load_si512(px + t * xs);
        IN_REG(xv);
        UNROLL for (int i = 0; i < R; i++)
            acc[t * R + i] = _mm512_dpbf16_ps(acc[t * R + i], (__m512bh)wv[i], (__m512bh)xv);
    }
}

INL T512BF16 void tile_bf16d(TILE_PARAMS, const int R, const int T) {
    const size_t ws = (size_t)w->cols * 2, xs = (size_t)a->ld * 2;
    const char *pw = (const char *)w->data + (size_t)r * ws + (size_t)c.k0 * 2;
    const char *px = (const char *)(a->xb + (size_t)t0 * (size_t)a->ld) + (size_t)c.k0 * 2;
    TILE_BEGIN(__m512, _mm512_setzero_ps())
    int64_t k = c.k0;
    KLOOP(32, 64, 64, bf16d_step(acc, pw, ws, px, xs, ~(__mmask32)0, R, T))
    if (k < c.k1)
        bf16d_step(acc, pw, ws, px, xs, (__mmask32)((1u << (c.k1 - k)) - 1), R, T);
    TILE_SAVE(__m512)
    store_tile(y, ldy, r, t0, R, T, reduce_ps(acc, R * T));
}

/* The (R, T) shapes the drivers use, each its own function. */
#ifndef TILE_INLINE
#define TILE_INLINE inline __attribute__((always_inline))
#endif
#define INSTANCE(KIND, ATTR, R, T)                                                          \
    static TILE_INLINE ATTR void KIND##_##R##_##T(TILE_PARAMS) {                           \
        KIND(w, a, y, ldy, r, t0, pf, c, R, T);                                            \
    }
#define INSTANCES(KIND, ATTR)                                                               \
    INSTANCE(KIND, ATTR, 8, 1)                                                              \
    INSTANCE(KIND, ATTR, 4, 1)                                                              \
    INSTANCE(KIND, ATTR, 4, 2)                                                              \
    INSTANCE(KIND, ATTR, 4, 3)                                                              \
    INSTANCE(KIND, ATTR, 4, 4)                                                              \
    INSTANCE(KIND, ATTR, 1, 1)                                                              \
    INSTANCE(KIND, ATTR, 1, 2)                                                              \
    INSTANCE(KIND, ATTR, 1, 3)                                                              \
    INSTANCE(KIND, ATTR, 1, 4)

INSTANCES(tile_f32, T512)
INSTANCES(tile_bf16w, T512)
INSTANCES(tile_i8w, T512)
INSTANCES(tile_i8v, T512VNNI)
INSTANCES(tile_bf16d, T512BF16)

/* ---- row-range drivers ---- */

/* NAME##_ld(w, a, y, ldy, r0, r1, pf1): y with row stride ldy (the lr shrink's v), pf1 rows
 * prefetched ahead at n = 1; NAME: ldy = w->rows and PF_ROWS_N1, the kern_rows_fn.
 * n = 1: blocks of 8 rows (8 chains, 8 streams), then 4, then 1; one pass over all columns.
 * n ≥ 2: blocks of 4 rows; tokens in ceil(n / 4) tiles of balanced size (n = 5 → 3 + 2, not
 * 4 + 1, so every pass has ≥ 8 independent chains); columns in chunks of KC (when n ≤ 32),
 * all token tiles of a chunk before the next chunk, partial sums parked in save. The first
 * tile of each chunk prefetches the same columns of the next block when n ≥ PF_MIN_N. */
#define BLOCK(KIND, R)                                                                      \
    for (int64_t k0 = 0;; k0 += kc) {                                                       \
        chunk_t c = {.k0 = k0, .k1 = k0 + kc < cols ? k0 + kc : cols, .first = k0 == 0,   \
                     .last = k0 + kc >= cols};                                              \
        for (int j = 0, t0 = 0; j < ntile; j++) {                                           \
            const int tt = base + (j < extra);                                              \
            const int pf = R == 4 && j == 0 && n >= PF_MIN_N ? PF_ROWS : 0;                 \
            c.save = save + 16 * j;                                                         \
            switch (tt) {                                                                   \
            case 1: KIND##_##R##_1(w, a, y, ldy, r, t0, pf, c); break;                     \
            case 2: KIND##_##R##_2(w, a, y, ldy, r, t0, pf, c); break;                     \
            case 3: KIND##_##R##_3(w, a, y, ldy, r, t0, pf, c); break;                     \
            default: KIND##_##R##_4(w, a, y, ldy, r, t0, pf, c); break;                    \
            }                                                                               \
            t0 += tt;                                                                       \
        }                                                                                   \
        if (c.last) break;                                                                  \
    }

#define DEFINE_ROWS(NAME, ATTR, KIND, KC, VEC)                                              \
    static ATTR void NAME##_ld(const kern_mat_t *w, const kern_act_t *a, float *y,          \
                               int64_t ldy, int64_t r0, int64_t r1, int pf1) {             \
        const int n = a->n;                                                                 \
        const int64_t cols = w->cols;                                                       \
        int64_t r = r0;                                                                     \
        if (n == 1) {                                                                       \
            const chunk_t c1 = {.k0 = 0, .k1 = cols, .first = 1, .last = 1};                \
            for (; r + 8 <= r1; r += 8) KIND##_8_1(w, a, y, ldy, r, 0, pf1, c1);           \
            for (; r + 4 <= r1; r += 4) KIND##_4_1(w, a, y, ldy, r, 0, 0, c1);             \
            for (; r < r1; r++) KIND##_1_1(w, a, y, ldy, r, 0, 0, c1);                     \
            return;                                                                         \
        }                                                                                   \
        const int ntile = (n + 3) / 4, base = n / ntile, extra = n % ntile;                 \
        const int64_t kc = ntile <= MAX_TILES ? KC : (cols > 0 ? cols : 1);                 \
        VEC save[MAX_TILES * 16];                                                           \
        for (; r + 4 <= r1; r += 4) BLOCK(KIND, 4)                                          \
        for (; r < r1; r++) BLOCK(KIND, 1)                                                  \
    }                                                                                       \
    static ATTR void NAME(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t r0,   \
                          int64_t r1) {                                                     \
        NAME##_ld(w, a, y, w->rows, r0, r1, PF_ROWS_N1);                                    \
    }

DEFINE_ROWS(rows_f32, T512, tile_f32, KC_F32, __m512)
DEFINE_ROWS(rows_bf16w, T512, tile_bf16w, KC_BF16W, __m512)
DEFINE_ROWS(rows_i8w, T512, tile_i8w, KC_I8W, __m512)
DEFINE_ROWS(rows_i8v_core, T512VNNI, tile_i8v, KC_I8V, __m512i)
DEFINE_ROWS(rows_bf16d, T512BF16, tile_bf16d, KC_BF16D, __m512)

/* Past VNNI_MAX_COLS the int32 lane sums could overflow: take the (exact) widening path,
 * whose prep (prep_vnni) then made the aligned fp32 copy instead of quantising. */
static T512VNNI void rows_i8v(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t r0,
                              int64_t r1) {
    if (w->cols > VNNI_MAX_COLS) {
        rows_i8w(w, a, y, r0, r1);
        return;
    }
    rows_i8v_core(w, a, y, r0, r1);
}

/* ---- bf16 weights in the P32 layout: outer products ----
 *
 * A step of the k loop is one pair of columns: R (1 or 2) 16-row vectors of the weights (one
 * 64-byte line of a 32-row group) times, for each of T tokens, that token's bf16 pair broadcast
 * to all lanes (a 32-bit broadcast load). Accumulator (i, t) holds 16 rows
 * of one token: no horizontal sums, stored straight to y. Loads per step are R weight vectors
 * and T broadcasts for R·T products, and 2 × 8 = 16 independent chains hide the latency.
 * A group of 32 rows is one contiguous stream. Token tiles after the first read it from L1
 * (576 columns: 36 KiB) or L2 (2048: 128 KiB), so with n > 8 the first pass over a group waits
 * on DRAM at several times the step's average bandwidth while the later ones need none. The
 * later passes therefore prefetch the next group into L2 (P32_PF): the second and third pass
 * one line per step each (two when there is only a second), so the first pass of the next
 * group finds it there. Server A/B, 32 streams, alternating 15–20-s loadgen windows (3 each):
 * TinyLlama 173–186 → 213–217 tok/s, SmolLM 1,058–1,117 → 1,111–1,196. Prefetching during the
 * first pass instead (competing with its own demand stream) was slower at every shape.
 * Against rows_bf16d before that prefetch (bench_kernels --quick, one thread, cold weights,
 * same run), n = 32:
 * 576×576 111 → 80 µs, 1536×576 327 → 267, 5632×2048 2945 → 2213, 2048×5632 3009 → 2200;
 * n = 8 up to 1.7× (2048×5632 1483 → 856); n = 1 about even (bandwidth-bound either way).
 * Every output lane sums its products in k order whatever R, T and the row range, so a token's
 * result is the same bit for bit in any step and on any thread. */
#ifndef P32_PF
#define P32_PF 1
#endif
INL T512BF16 void tile_p32(const uint16_t *wp, const int32_t *px, size_t ldp, int64_t kp,
                           float *y, size_t ldy, __mmask16 m0, __mmask16 m1, uintptr_t pf,
                           const int R, const int T, const int PF) {
    __m512 acc[2 * 8];
    UNROLL for (int m = 0; m < R * T; m++) acc[m] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < kp; kk++, wp += 64, px++, pf += 64 * PF) {
        UNROLL for (int l = 0; l < PF; l++) _mm_prefetch((const char *)pf + 64 * l, _MM_HINT_T1);
        __m512i wv[2];
        UNROLL for (int i = 0; i < R; i++) {
            wv[i] = _mm512_load_si512(wp + 32 * i);
            IN_REG(wv[i]);
        }
        UNROLL for (int t = 0; t < T; t++) {
            const __m512i b = _mm512_set1_epi32(px[(size_t)t * ldp]);
            UNROLL for (int i = 0; i < R; i++)
                acc[i * T + t] = _mm512_dpbf16_ps(acc[i * T + t], (__m512bh)wv[i], (__m512bh)b);
        }
    }
    UNROLL for (int i = 0; i < R; i++) UNROLL for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * ldy + 16 * i, i ? m1 : m0, acc[i * T + t]);
}

#define P32_CASE(R, T)                                                                      \
    case T:                                                                                 \
        if (pfl == 2) tile_p32(wp, px, ldp, kp, yt, ldy, m0, m1, pfa, R, T, 2);             \
        else if (pfl == 1) tile_p32(wp, px, ldp, kp, yt, ldy, m0, m1, pfa, R, T, 1);        \
        else tile_p32(wp, px, ldp, kp, yt, ldy, m0, m1, 0, R, T, 0);                        \
        break;
#define P32_TILES(R)                                                                        \
    for (int j = 0, t0 = 0; j < ntile; j++) {                                               \
        const int tt = base + (j < extra);                                                  \
        const int32_t *px = (const int32_t *)a->xb + (size_t)t0 * ldp;                      \
        float *yt = y + (size_t)t0 * ldy + (size_t)hs;                                      \
        /* passes after the first fetch the next group (see above) */                       \
        const int pfl = !P32_PF || j == 0 || j > 2 ? 0 : ntile == 2 ? 2 : 1;                \
        const uintptr_t pfa = next + (j == 2 ? 64 * (size_t)kp : 0);                        \
        switch (tt) {                                                                       \
            P32_CASE(R, 1) P32_CASE(R, 2) P32_CASE(R, 3) P32_CASE(R, 4)                     \
            P32_CASE(R, 5) P32_CASE(R, 6) P32_CASE(R, 7) P32_CASE(R, 8)                     \
        }                                                                                   \
        t0 += tt;                                                                           \
    }

/* Whole 32-row groups with R = 2; a range that starts or ends inside a group does its
 * 16-row halves with R = 1 and masked stores (the pool splits on 16-row boundaries). Tokens
 * in ceil(n / 8) balanced tiles (n = 12 → 6 + 6). */
static T512BF16 void rows_p32(const kern_mat_t *w, const kern_act_t *a, float *y, int64_t r0,
                              int64_t r1) {
    const int64_t kp = kern__p32_cp(w->cols) / 2; /* column pairs */
    const size_t ldp = (size_t)a->ld / 2, ldy = (size_t)w->rows, gs = 64 * (size_t)kp;
    if (a->n < 1) return;
    const int n = a->n, ntile = (n + 7) / 8, base = n / ntile, extra = n % ntile;
    for (int64_t r = r0; r < r1;) {
        const int64_t g0 = r & ~(int64_t)31;
        const uint16_t *wp = (const uint16_t *)w->data + (size_t)(g0 / 32) * gs;
        const uintptr_t next = (uintptr_t)(wp + gs); /* may lie past the matrix: never read */
        if (r == g0 && r + 32 <= r1) {
            const int64_t hs = g0;
            const __mmask16 m0 = 0xffff, m1 = 0xffff;
            P32_TILES(2)
            r += 32;
        } else {
            const int64_t hs = r & ~(int64_t)15, end = r1 < hs + 16 ? r1 : hs + 16;
            const __mmask16 m0 = (__mmask16)(((1u << (end - hs)) - 1) & ~((1u << (r - hs)) - 1)),
                            m1 = 0;
            wp += hs - g0 == 16 ? 32 : 0;
            P32_TILES(1)
            r = end;
        }
    }
}
#undef P32_CASE
#undef P32_TILES

/* ---- low-rank adapter kernels ---- */

/* Shrink is a matmul of A against the caller's x with an output stride: the widening rows
 * kernels above as they are (8 A rows per pass at n = 1, else 4 rows × up to 4 tokens; x read
 * unaligned, in place). Never dpbf16, not even in the avx512-bf16 table: the adapter path
 * keeps fp32 activations. Unlike a base matrix, a factor is a few short rows read once (a
 * tenant's lone decode token): at n = 1 the next 8 rows are prefetched while these are summed
 * (past the last row, the prefetches fall on whatever follows: harmless). With LR_PF_N1 below
 * this cut the adapter path's share of a 32-tenant SmolLM-shape decode step from +44–48 % to
 * +35–37 % (bench_adapter_step, alternating runs); base matrices are long rows the hardware
 * prefetcher follows, and gain nothing (PF_ROWS_N1). */
#ifndef LR_PF_ROWS_N1
#define LR_PF_ROWS_N1 8
#endif
static T512 void lr_shrink_f32(const kern_mat_t *a, const float *x, int64_t ldx, int n,
                               float *v, int64_t ldv) {
    const kern_act_t act = {.x = x, .ldx = ldx, .n = n, .cols = a->cols};
    if (n > 0) rows_f32_ld(a, &act, v, ldv, 0, a->rows, LR_PF_ROWS_N1);
}

static T512 void lr_shrink_bf16(const kern_mat_t *a, const float *x, int64_t ldx, int n,
                                float *v, int64_t ldv) {
    const kern_act_t act = {.x = x, .ldx = ldx, .n = n, .cols = a->cols};
    if (n > 0) rows_bf16w_ld(a, &act, v, ldv, 0, a->rows, LR_PF_ROWS_N1);
}

/* expand: prefetch the Bt rows this many column groups ahead, 0 = none (n ≥ 2; LR_PF_N1 for
 * a lone token). Measured cold, r = 16, d = 576 and 2048: at n = 8, 1 is 15–40 % faster than
 * none and 2–4 are no better than 1. At n = 1 bench_kernels saw no consistent difference, but
 * in the decode step (32 tenants, bench_adapter_step, 3 alternating runs) 1 took the adapter
 * cost from +44–48 % to +40–42 %, and to +35–37 % with the shrink's row prefetch above. */
#ifndef LR_PF
#define LR_PF 1
#endif
#ifndef LR_PF_N1
#define LR_PF_N1 1
#endif

/* Expand tile: T tokens from t0 × CW vectors of 16 columns from c (the last vector masked by
 * ml). For each of the r rows of Bt the CW vectors are loaded (widened) once and used by all
 * T tokens; the T·CW sums stay in registers until the end, then each y vector is loaded,
 * added to and stored once. T × CW ≤ 4 × 4 (16 accumulators + 4 Bt vectors + 1 broadcast),
 * or 1 × 8 for a lone token. Each output is one FMA chain over j in order, then + y: the same
 * value whatever tile computes it.
 * pf > 0: the same rows pf groups further right are prefetched, one line per 64 bytes (past
 * the end of a row they are only wasted prefetches, which never fault). */
INL T512 void expand_tile(const kern_mat_t *bt, const float *v, int64_t ldv, int t0, float *y,
                          int64_t ldy, int64_t c, __mmask16 ml, int pf, const int T,
                          const int CW, const kern_wtype_t TY) {
    const size_t es = TY == KERN_W_F32 ? 4 : 2, rs = (size_t)bt->cols * es;
    const char *pb = (const char *)bt->data + (size_t)c * es;
    const float *vp = v + (size_t)t0 * (size_t)ldv;
    uintptr_t pp = (uintptr_t)pb + (size_t)pf * CW * 16 * es;
    __m512 acc[16];
    UNROLL for (int m = 0; m < T * CW; m++) acc[m] = _mm512_setzero_ps();
    for (int64_t j = 0; j < bt->rows; j++, pb += rs, pp += rs) {
        if (pf)
            UNROLL for (size_t l = 0; l < CW * 16 * es; l += 64)
                _mm_prefetch((const char *)(pp + l), _MM_HINT_T0);
        __m512 b[8];
        UNROLL for (int q = 0; q < CW; q++) {
            const __mmask16 m = q == CW - 1 ? ml : (__mmask16)0xffff;
            b[q] = TY == KERN_W_F32 ? _mm512_maskz_loadu_ps(m, pb + 64 * q)
                                    : load_bf16x16(m, pb + 32 * q);
            IN_REG(b[q]);
        }
        UNROLL for (int t = 0; t < T; t++) {
            const __m512 vv = _mm512_set1_ps(vp[(size_t)t * (size_t)ldv + (size_t)j]);
            UNROLL for (int q = 0; q < CW; q++)
                acc[t * CW + q] = _mm512_fmadd_ps(b[q], vv, acc[t * CW + q]);
        }
    }
    UNROLL for (int t = 0; t < T; t++) UNROLL for (int q = 0; q < CW; q++) {
            const __mmask16 m = q == CW - 1 ? ml : (__mmask16)0xffff;
            float *yp = y + (size_t)(t0 + t) * (size_t)ldy + (size_t)c + 16 * (size_t)q;
            _mm512_mask_storeu_ps(yp, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, yp),
                                                       acc[t * CW + q]));
        }
}

#define EXPAND_TILES(CW, ML, PF0)                                                           \
    for (int i = 0, t0 = 0; i < ntile; i++) {                                               \
        const int tt = base + (i < extra), pf = i == 0 ? (PF0) : 0;                         \
        switch (tt) {                                                                       \
        case 1: expand_tile(bt, v, ldv, t0, y, ldy, c, ML, pf, 1, CW, TY); break;          \
        case 2: expand_tile(bt, v, ldv, t0, y, ldy, c, ML, pf, 2, CW, TY); break;          \
        case 3: expand_tile(bt, v, ldv, t0, y, ldy, c, ML, pf, 3, CW, TY); break;          \
        default: expand_tile(bt, v, ldv, t0, y, ldy, c, ML, pf, 4, CW, TY); break;         \
        }                                                                                   \
        t0 += tt;                                                                           \
    }

/* Column groups of 64 (4 vectors), then single vectors, the last one masked; tokens in
 * ceil(n / 4) tiles of balanced size, as in the rows drivers. The first token tile of a group
 * streams its Bt block (r × 64 columns, ≤ 16 KiB at r = 64) from DRAM and prefetches the next
 * group's; the other token tiles find the block in L1. A lone token (BGMV decode) takes
 * groups of 128 first: 4 FMA chains leave the two FMA pipes half idle when Bt is in cache
 * (r = 16, d = 2048, f32 hot: 2.1 → 1.2 µs) and it streamed ~10 % faster cold. */
INL T512 void expand_any(const kern_mat_t *bt, const float *v, int64_t ldv, int n, float *y,
                         int64_t ldy, int64_t c0, int64_t c1, const kern_wtype_t TY) {
    if (n <= 0) return;
    const int ntile = (n + 3) / 4, base = n / ntile, extra = n % ntile;
    int64_t c = c0;
    if (n == 1)
        for (; c + 128 <= c1; c += 128)
            expand_tile(bt, v, ldv, 0, y, ldy, c, 0xffff, LR_PF_N1, 1, 8, TY);
    for (; c + 64 <= c1; c += 64) EXPAND_TILES(4, (__mmask16)0xffff, LR_PF)
    for (; c < c1; c += 16) {
        const __mmask16 ml = c1 - c >= 16 ? 0xffff : (__mmask16)((1u << (c1 - c)) - 1);
        EXPAND_TILES(1, ml, 0)
    }
}

static T512 void lr_expand_f32(const kern_mat_t *bt, const float *v, int64_t ldv, int n,
                               float *y, int64_t ldy, int64_t c0, int64_t c1) {
    expand_any(bt, v, ldv, n, y, ldy, c0, c1, KERN_W_F32);
}

static T512 void lr_expand_bf16(const kern_mat_t *bt, const float *v, int64_t ldv, int n,
                                float *y, int64_t ldy, int64_t c0, int64_t c1) {
    expand_any(bt, v, ldv, n, y, ldy, c0, c1, KERN_W_BF16);
}

/* ---- activation prep ---- */

/* Per-token int8 quantisation, vectorised; bit-identical to kern__prep_quant_i8 (same
 * 127/max product, same round-half-even conversion, same clamp). */
static T512 void prep_quant_i8(const float *x, int n, int64_t cols, void *work, kern_act_t *a) {
    const int64_t ld = kern__ld(cols);
    int8_t *xq = kern__align64(work);
    float *xs = (float *)(xq + (size_t)n * (size_t)ld);
    int32_t *xsum = (int32_t *)(xs + n);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * (size_t)cols;
        int8_t *qt = xq + (size_t)t * (size_t)ld;
        __m512 mx = _mm512_setzero_ps();
        for (int64_t k = 0; k < cols; k += 16) {
            __mmask16 m = cols - k >= 16 ? 0xffff : (__mmask16)((1u << (cols - k)) - 1);
            mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, xt + k)));
        }
        float amax = _mm512_reduce_max_ps(mx);
        xs[t] = amax / 127.0f;
        __m512 inv = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        __m512i sum = _mm512_setzero_si512();
        for (int64_t k = 0; k < ld; k += 16) { /* writes the zero padding too */
            __mmask16 m = k >= cols ? 0
                          : cols - k >= 16 ? 0xffff
                                           : (__mmask16)((1u << (cols - k)) - 1);
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, xt + k), inv));
            q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
            sum = _mm512_add_epi32(sum, q);
            _mm_store_si128((__m128i *)(qt + k), _mm512_cvtepi32_epi8(q));
        }
        xsum[t] = _mm512_reduce_add_epi32(sum);
    }
    a->x = x;
    a->ldx = cols;
    a->n = n;
    a->cols = cols;
    a->ld = ld;
    a->xb = NULL;
    a->xq = xq;
    a->xs = xs;
    a->xsum = xsum;
}

static T512VNNI void prep_vnni(kern_wtype_t wt, const float *x, int n, int64_t cols, void *work,
                               kern_act_t *a) {
    if (wt == KERN_W_I8 && cols <= VNNI_MAX_COLS)
        prep_quant_i8(x, n, cols, work, a);
    else
        kern__prep_f32_aligned(x, n, cols, work, a);
}

/* bf16 activations by vcvtneps2bf16: round to nearest even like kern_f32_to_bf16 (except
 * that it flushes denormals, see the top of the file). */
static T512BF16 void prep_bf16(kern_wtype_t wt, const float *x, int n, int64_t cols, void *work,
                               kern_act_t *a) {
    if (wt != KERN_W_BF16) {
        prep_vnni(wt, x, n, cols, work, a);
        return;
    }
    const int64_t ld = kern__ld(cols);
    uint16_t *xb = kern__align64(work);
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * (size_t)cols;
        uint16_t *bt = xb + (size_t)t * (size_t)ld;
        for (int64_t k = 0; k < ld; k += 16) {
            __mmask16 m = k >= cols ? 0
                          : cols - k >= 16 ? 0xffff
                                           : (__mmask16)((1u << (cols - k)) - 1);
            __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, xt + k));
            __m256i hv;
            memcpy(&hv, &h, sizeof hv);
            _mm256_store_si256((__m256i *)(bt + k), hv);
        }
    }
    memset(a, 0, sizeof *a);
    a->x = x;
    a->ldx = cols;
    a->n = n;
    a->cols = cols;
    a->ld = ld;
    a->xb = xb;
}

/* ---- attention kernels ---- */

/* 16 cache elements at p + i (masked lanes zero) as fp32; BF16 caches widened exactly. */
INL T512 __m512 kv_load(const void *p, size_t i, __mmask16 m, const int BF) {
    if (BF) return load_bf16x16(m, (const uint16_t *)p + i);
    return _mm512_maskz_loadu_ps(m, (const float *)p + i);
}

/* Scores of HG ≤ 4 heads for the 16 positions j0.. (mask m): one key vector per dimension,
 * broadcast query elements, no horizontal sums. The dimensions are split four ways (i mod 4)
 * so that 4·HG FMA chains are in flight instead of HG. */
INL T512 void scores_tile(const float *q, int hd, const void *kt, int64_t ldk, int j0,
                          __mmask16 m, float scale, float *s, int64_t lds, const int HG,
                          const int BF) {
    __m512 acc[4][4];
    UNROLL for (int u = 0; u < 4; u++) UNROLL for (int h = 0; h < HG; h++) acc[u][h] =
        _mm512_setzero_ps();
    int i = 0;
    for (; i + 4 <= hd; i += 4) {
        UNROLL for (int u = 0; u < 4; u++) {
            __m512 kv = kv_load(kt, (size_t)(i + u) * (size_t)ldk + (size_t)j0, m, BF);
            IN_REG(kv);
            UNROLL for (int h = 0; h < HG; h++)
                acc[u][h] = _mm512_fmadd_ps(_mm512_set1_ps(q[(size_t)h * hd + i + u]), kv,
                                            acc[u][h]);
        }
    }
    for (; i < hd; i++) {
        __m512 kv = kv_load(kt, (size_t)i * (size_t)ldk + (size_t)j0, m, BF);
        UNROLL for (int h = 0; h < HG; h++)
            acc[0][h] = _mm512_fmadd_ps(_mm512_set1_ps(q[(size_t)h * hd + i]), kv, acc[0][h]);
    }
    const __m512 sc = _mm512_set1_ps(scale);
    UNROLL for (int h = 0; h < HG; h++) {
        __m512 r = _mm512_add_ps(_mm512_add_ps(acc[0][h], acc[1][h]),
                                 _mm512_add_ps(acc[2][h], acc[3][h]));
        _mm512_mask_storeu_ps(s + (size_t)h * (size_t)lds + j0, m, _mm512_mul_ps(r, sc));
    }
}

/* o of HG ≤ 4 heads, dimensions i0 .. i0 + 63 (chunk c's lanes masked by mc[c]), plus the
 * nj positions' values weighted by p: the 4·HG accumulators stay in registers over all j. */
INL T512 void values_tile(const float *p, int64_t ldp, const void *v, int64_t ldv, int nj,
                          int hd, int i0, const __mmask16 *mc, float *o, const int HG,
                          const int BF) {
    __m512 acc[4][4];
    UNROLL for (int h = 0; h < HG; h++) UNROLL for (int c = 0; c < 4; c++) acc[h][c] =
        _mm512_maskz_loadu_ps(mc[c], o + (size_t)h * hd + i0 + 16 * c);
    for (int j = 0; j < nj; j++) {
        __m512 vv[4];
        UNROLL for (int c = 0; c < 4; c++) {
            vv[c] = kv_load(v, (size_t)j * (size_t)ldv + (size_t)(i0 + 16 * c), mc[c], BF);
            IN_REG(vv[c]);
        }
        UNROLL for (int h = 0; h < HG; h++) {
            const __m512 pb = _mm512_set1_ps(p[(size_t)h * (size_t)ldp + j]);
            UNROLL for (int c = 0; c < 4; c++) acc[h][c] = _mm512_fmadd_ps(pb, vv[c], acc[h][c]);
        }
    }
    UNROLL for (int h = 0; h < HG; h++) UNROLL for (int c = 0; c < 4; c++)
        _mm512_mask_storeu_ps(o + (size_t)h * hd + i0 + 16 * c, mc[c], acc[h][c]);
}

#define ATTN_KERNELS(SUF, BF)                                                               \
    static T512 void attn_scores_##SUF(const float *q, int g, int hd, const void *kt,       \
                                       int64_t ldk, int nj, float scale, float *s,          \
                                       int64_t lds) {                                       \
        for (int j0 = 0; j0 < nj; j0 += 16) {                                               \
            const __mmask16 m = nj - j0 >= 16 ? 0xffff : (__mmask16)((1u << (nj - j0)) - 1); \
            for (int h = 0; h < g; h += 4) {                                                \
                const float *qh = q + (size_t)h * hd;                                       \
                float *sh = s + (size_t)h * (size_t)lds;                                    \
                switch (g - h) {                                                            \
                case 1: scores_tile(qh, hd, kt, ldk, j0, m, scale, sh, lds, 1, BF); break;  \
                case 2: scores_tile(qh, hd, kt, ldk, j0, m, scale, sh, lds, 2, BF); break;  \
                case 3: scores_tile(qh, hd, kt, ldk, j0, m, scale, sh, lds, 3, BF); break;  \
                default: scores_tile(qh, hd, kt, ldk, j0, m, scale, sh, lds, 4, BF); break; \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    static T512 void attn_values_##SUF(const float *p, int64_t ldp, int g, const void *v,  \
                                       int64_t ldv, int nj, int hd, float *o) {             \
        for (int i0 = 0; i0 < hd; i0 += 64) {                                               \
            __mmask16 mc[4];                                                                \
            for (int c = 0; c < 4; c++) {                                                   \
                const int rem = hd - i0 - 16 * c;                                           \
                mc[c] = rem >= 16 ? 0xffff : rem > 0 ? (__mmask16)((1u << rem) - 1) : 0;    \
            }                                                                               \
            for (int h = 0; h < g; h += 4) {                                                \
                const float *ph = p + (size_t)h * (size_t)ldp;                              \
                float *oh = o + (size_t)h * hd;                                             \
                switch (g - h) {                                                            \
                case 1: values_tile(ph, ldp, v, ldv, nj, hd, i0, mc, oh, 1, BF); break;     \
                case 2: values_tile(ph, ldp, v, ldv, nj, hd, i0, mc, oh, 2, BF); break;     \
                case 3: values_tile(ph, ldp, v, ldv, nj, hd, i0, mc, oh, 3, BF); break;     \
                default: values_tile(ph, ldp, v, ldv, nj, hd, i0, mc, oh, 4, BF); break;    \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }

ATTN_KERNELS(f32, 0)
ATTN_KERNELS(bf16, 1)

/* e^x for 16 lanes: x = n·ln2 + r with n = round(x·log2 e) and |r| ≤ ln2/2 (ln2 in two parts,
 * Cody–Waite, so r is exact to ~1e-10), e^r by its degree-7 Taylor polynomial (truncation
 * < 6e-9 relative), times 2ⁿ by vscalefps, which also makes the denormal and zero results of
 * large negative x. Within 2 ulp of expf for results ≥ FLT_MIN. */
INL T512 __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(88.72f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 e = _mm512_set1_ps(1.0f / 5040.0f);
    e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.0f / 720.0f));
    e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.0f / 120.0f));
    e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.0f / 24.0f));
    e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.0f / 6.0f));
    e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(0.5f));
    e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.0f));
    e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(e, n);
}

static T512 float exp_sum(float *s, int n, float mx) {
    const __m512 m = _mm512_set1_ps(mx);
    __m512 acc = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        const __mmask16 k = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), m));
        _mm512_mask_storeu_ps(s + j, k, e);
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(k, e));
    }
    return _mm512_reduce_add_ps(acc);
}

static T512 void swiglu(float *g, const float *u, size_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        const __m512 x = _mm512_maskz_loadu_ps(k, g + i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
        const __m512 s = _mm512_div_ps(x, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(g + i, k, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(k, u + i)));
    }
}

/* ---- tables ---- */

const kern_ops_t kern__avx512_ops = {
    .name = "avx512",
    .path = {"f32 fma", "bf16 widen", "int8 widen"},
    .prep = kern__prep_fp32act,
    .rows = {rows_f32, rows_bf16w, rows_i8w},
    .rows_p32 = kern__rows_p32,
    .lr_shrink = {lr_shrink_f32, lr_shrink_bf16, NULL},
    .lr_expand = {lr_expand_f32, lr_expand_bf16, NULL},
    .attn_scores = {attn_scores_f32, attn_scores_bf16, NULL},
    .attn_values = {attn_values_f32, attn_values_bf16, NULL},
    .exp_sum = exp_sum,
    .swiglu = swiglu,
};

const kern_ops_t kern__avx512_vnni_ops = {
    .name = "avx512-vnni",
    .path = {"f32 fma", "bf16 widen", "int8 vnni"},
    .prep = prep_vnni,
    .rows = {rows_f32, rows_bf16w, rows_i8v},
    .rows_p32 = kern__rows_p32,
    .lr_shrink = {lr_shrink_f32, lr_shrink_bf16, NULL},
    .lr_expand = {lr_expand_f32, lr_expand_bf16, NULL},
    .attn_scores = {attn_scores_f32, attn_scores_bf16, NULL},
    .attn_values = {attn_values_f32, attn_values_bf16, NULL},
    .exp_sum = exp_sum,
    .swiglu = swiglu,
};

const kern_ops_t kern__avx512_bf16_ops = {
    .name = "avx512-bf16",
    .path = {"f32 fma", "bf16 dpbf16", "int8 vnni"},
    .prep = prep_bf16,
    .rows = {rows_f32, rows_bf16d, rows_i8v},
    .rows_p32 = rows_p32,
    .bf16_layout = KERN_LAYOUT_P32,
    .lr_shrink = {lr_shrink_f32, lr_shrink_bf16, NULL},
    .lr_expand = {lr_expand_f32, lr_expand_bf16, NULL},
    .attn_scores = {attn_scores_f32, attn_scores_bf16, NULL},
    .attn_values = {attn_values_f32, attn_values_bf16, NULL},
    .exp_sum = exp_sum,
    .swiglu = swiglu,
};
