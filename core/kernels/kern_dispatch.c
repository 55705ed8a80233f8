/* kern_dispatch.c: CPU detection, backend choice, and the matmul entry points. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern_int.h"

/* ---- CPU features ---- */

/* __builtin_cpu_supports also checks that the OS saves the AVX / AVX-512 register state
 * (XCR0), so a "yes" here means the instructions can really be executed. */
static int cpu_has(kern_backend_t b) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("avx512dq");
    int vnni = avx512 && __builtin_cpu_supports("avx512vnni");
    int bf16 = vnni && __builtin_cpu_supports("avx512bf16");
    switch (b) {
    case KERN_BK_REF: return 1;
    case KERN_BK_AVX2: return avx2;
    case KERN_BK_AVX512: return avx512;
    case KERN_BK_AVX512_VNNI: return vnni;
    case KERN_BK_AVX512_BF16: return bf16;
    default: return 0;
    }
#else
    return b == KERN_BK_REF;
#endif
}

static const kern_ops_t *const TABLES[KERN_BK_COUNT] = {
    [KERN_BK_REF] = &kern__ref_ops,
    [KERN_BK_AVX2] = &kern__avx2_ops,
    [KERN_BK_AVX512] = &kern__avx512_ops,
    [KERN_BK_AVX512_VNNI] = &kern__avx512_vnni_ops,
    [KERN_BK_AVX512_BF16] = &kern__avx512_bf16_ops,
};

/* ---- public API ---- */

const char *kern_wtype_name(kern_wtype_t t) {
    switch (t) {
    case KERN_W_F32: return "f32";
    case KERN_W_BF16: return "bf16";
    case KERN_W_I8: return "int8";
    default: return "?";
    }
}

size_t kern_wtype_size(kern_wtype_t t) { return t == KERN_W_F32 ? 4 : t == KERN_W_BF16 ? 2 : 1; }

const kern_ops_t *kern_get(kern_backend_t b) {
    if ((int)b < 0 || b >= KERN_BK_COUNT || !cpu_has(b)) return NULL;
    return TABLES[b];
}

static kern_backend_t best_of(kern_backend_t at_most) {
    for (int b = at_most; b > KERN_BK_REF; b--)
        if (cpu_has((kern_backend_t)b)) return (kern_backend_t)b;
    return KERN_BK_REF;
}

const kern_ops_t *kern_select(char *desc, size_t cap) {
    static const struct {
        const char *name;
        kern_backend_t b;
        int best_below; /* "avx512" means the best AVX-512 table available */
    } names[] = {
        {"ref", KERN_BK_REF, 0},
        {"avx2", KERN_BK_AVX2, 0},
        {"avx512", KERN_BK_AVX512_BF16, 1},
        {"avx512f", KERN_BK_AVX512, 0},
        {"avx512-vnni", KERN_BK_AVX512_VNNI, 0},
        {"avx512-bf16", KERN_BK_AVX512_BF16, 0},
    };
    kern_backend_t b = best_of(KERN_BK_AVX512_BF16);
    char note[160] = "";
    const char *env = getenv("LORAMUX_KERNELS");
    if (env && *env) {
        size_t i = 0, cnt = sizeof names / sizeof names[0];
        while (i < cnt && strcmp(env, names[i].name) != 0) i++;
        if (i == cnt) {
            snprintf(note, sizeof note, " [LORAMUX_KERNELS=%.40s not recognised; want "
                     "ref|avx2|avx512|avx512f|avx512-vnni|avx512-bf16]", env);
        } else {
            kern_backend_t want = names[i].b;
            if (names[i].best_below) {
                want = best_of(want);
                if (want < KERN_BK_AVX512) want = KERN_BK_COUNT; /* no AVX-512 at all */
            }
            if (want != KERN_BK_COUNT && cpu_has(want)) {
                b = want;
                snprintf(note, sizeof note, " [LORAMUX_KERNELS=%s]", names[i].name);
            } else {
                snprintf(note, sizeof note, " [LORAMUX_KERNELS=%s not supported by this CPU]",
                         names[i].name);
            }
        }
    }
    const kern_ops_t *k = TABLES[b];
    if (desc && cap)
        snprintf(desc, cap, "kernels: %s (%s, %s, %s)%s", k->name, k->path[KERN_W_F32],
                 k->path[KERN_W_BF16], k->path[KERN_W_I8], note);
    return k;
}

/* The largest layout any prep writes: the aligned fp32 copy (n · ld floats) of the widening
 * and f32 paths; bf16 (n · ld · 2) and int8 (n · ld + 8n) fit in it plus the 8n. Independent
 * of wt so one buffer serves every matrix of a model. */
size_t kern_work_size(kern_wtype_t wt, int n, int64_t cols) {
    (void)wt;
    size_t ld = (size_t)kern__ld(cols), nn = n > 0 ? (size_t)n : 0;
    return 64 + nn * ld * sizeof(float) + nn * (sizeof(float) + sizeof(int32_t));
}

void kern_matmul(const kern_ops_t *ops, const kern_mat_t *w, const float *x, int n, float *y,
                 void *work) {
    kern_act_t a;
    ops->prep(w->type, x, n, w->cols, work, &a);
    kern_rows_for(ops, w)(w, &a, y, 0, w->rows);
}

typedef struct {
    const kern_ops_t *ops;
    const kern_mat_t *w;
    const kern_act_t *a;
    float *y;
} mt_job_t;

static void mt_range(void *arg, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    const mt_job_t *j = arg;
    kern_rows_for(j->ops, j->w)(j->w, j->a, j->y, i0, i1);
}

/* Row ranges are multiples of 16 rows, so threads write disjoint 64-byte lines of y when
 * rows is a multiple of 16, and every range but the last has whole 8- and 4-row blocks. */
void kern_matmul_mt(const kern_ops_t *ops, kern_pool_t *pool, const kern_mat_t *w,
                    const float *x, int n, float *y, void *work) {
    if (!pool || kern_pool_size(pool) == 1) {
        kern_matmul(ops, w, x, n, y, work);
        return;
    }
    kern_act_t a;
    ops->prep(w->type, x, n, w->cols, work, &a);
    mt_job_t j = {.ops = ops, .w = w, .a = &a, .y = y};
    kern_pool_run(pool, mt_range, &j, w->rows, 16);
}

kern_act_round_t kern_act_rounding(const kern_ops_t *ops, kern_wtype_t wt, int64_t cols) {
    if (wt == KERN_W_BF16 && ops == &kern__avx512_bf16_ops) return KERN_ACT_BF16;
    /* the VNNI prep falls back to fp32 activations past the int32-safe width */
    if (wt == KERN_W_I8 && (ops == &kern__avx512_vnni_ops || ops == &kern__avx512_bf16_ops) &&
        cols <= 65536)
        return KERN_ACT_I8;
    return KERN_ACT_F32;
}
