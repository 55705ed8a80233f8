/* tokenizer_nfc.c: Unicode NFC and NFD (UAX #15) for the "NFC" / "NFD" normalizers of
 * tokenizer.json (Qwen2 / Qwen2.5 files have {"type": "NFC"}).
 *
 * A quick check (UAX #15 section 9) walks the text and copies what is already normalized: ASCII,
 * and code points with NFC_Quick_Check=Yes (NFD: no decomposition) whose combining classes are
 * in canonical order. Where the check fails, the chunk from the last "boundary" before the
 * failure to the next boundary after it is decoded, fully decomposed, canonically ordered and
 * (NFC) recomposed, then encoded again. A boundary is a starter that is not a possible second
 * element of a composition (NFD: a starter without decomposition); nothing after it can reorder
 * or compose across it, so chunks normalize independently (tools/gen_unicode_tables.py asserts
 * the table properties this relies on). Every byte is visited a bounded number of times and a
 * long run of combining marks is ordered by a counting sort, so the cost is O(n).
 *
 * The data is in tokenizer_unicode_tables.c (generated from Python's unicodedata; the Unicode
 * version is tok__uc_version).
 */
#include "tokenizer_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- types ---- */

/* Hangul syllables (Unicode 3.12, "Conjoining Jamo Behavior"). */
enum {
    S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7,
    L_COUNT = 19, V_COUNT = 21, T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT,
    S_COUNT = L_COUNT * N_COUNT
};

/* A decoded code point and its property bits (flags << 8 | ccc, as in tok__uc_prop). */
typedef struct uc_s {
    uint32_t cp;
    uint32_t info;
} uc_t;

/* Per-call scratch, reused across chunks. */
typedef struct scratch_s {
    uc_t *v, *tmp;
    size_t n, cap, tmp_cap;
} scratch_t;

#define CCC(info) ((info) & 0xFFu)
#define FLAGS(info) ((info) >> 8)

/* Runs of combining marks up to this length are insertion-sorted; longer ones (only seen in
 * adversarial text) are counting-sorted so that ordering stays linear. */
#define SHORT_RUN 32

/* ---- table lookups ---- */

/* flags << 8 | ccc of cp; 0 for most code points (ccc 0, no decomposition, QC Yes). */
static uint32_t prop(uint32_t cp) {
    if (cp < 0xC0 || cp >= 0x110000) return 0;
    if (!((tok__uc_blocks[cp >> 13] >> ((cp >> 8) & 31)) & 1)) return 0;
    uint32_t key = cp << 11;
    size_t lo = 0, hi = tok__uc_prop_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (tok__uc_prop[mid] < key) lo = mid + 1;
        else hi = mid;
    }
    if (lo < tok__uc_prop_n && (tok__uc_prop[lo] >> 11) == cp) return tok__uc_prop[lo] & 0x7FF;
    return 0;
}

/* Index of the first entry of a sorted uint64 table that is >= key. */
static size_t lower_bound64(const uint64_t *t, size_t n, uint64_t key) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t[mid] < key) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static int is_hangul_s(uint32_t cp) { return cp - S_BASE < S_COUNT; }

/* The primary composite of a b, or 0. */
static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a - L_BASE < L_COUNT && b - V_BASE < V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (is_hangul_s(a) && (a - S_BASE) % T_COUNT == 0 && b - T_BASE - 1 < T_COUNT - 1)
        return a + (b - T_BASE);
    uint64_t key = (uint64_t)a << 42 | (uint64_t)b << 21;
    size_t i = lower_bound64(tok__uc_comp, tok__uc_comp_n, key);
    if (i < tok__uc_comp_n && (tok__uc_comp[i] >> 21) == (key >> 21))
        return (uint32_t)(tok__uc_comp[i] & 0x1FFFFF);
    return 0;
}

/* ---- one chunk: decompose, order, compose ---- */

static int push(scratch_t *sc, uint32_t cp, uint32_t info) {
    if (sc->n == sc->cap) {
        size_t cap = sc->cap ? sc->cap * 2 : 64;
        uc_t *v = realloc(sc->v, cap * sizeof *v);
        if (!v) return LLM_ENOMEM;
        sc->v = v;
        sc->cap = cap;
    }
    sc->v[sc->n++] = (uc_t){cp, info};
    return 0;
}

/* Appends the full canonical decomposition of cp. The recursion is at most 4 deep (asserted by
 * the generator). */
static int push_decomposed(scratch_t *sc, uint32_t cp, uint32_t info) {
    if (is_hangul_s(cp)) {
        uint32_t i = cp - S_BASE, t = i % T_COUNT;
        uint32_t v = V_BASE + (i % N_COUNT) / T_COUNT;
        int rc = push(sc, L_BASE + i / N_COUNT, 0);
        if (!rc) rc = push(sc, v, prop(v));
        if (!rc && t) rc = push(sc, T_BASE + t, prop(T_BASE + t));
        return rc;
    }
    if (!(FLAGS(info) & TOK_UC_DECOMP)) return push(sc, cp, info);
    size_t k = lower_bound64(tok__uc_decomp, tok__uc_decomp_n, (uint64_t)cp << 42);
    uint64_t d = tok__uc_decomp[k]; /* present: the flag says so */
    uint32_t a = (uint32_t)(d >> 21) & 0x1FFFFF, b = (uint32_t)d & 0x1FFFFF;
    int rc = push_decomposed(sc, a, prop(a));
    if (!rc && b) rc = push_decomposed(sc, b, prop(b));
    return rc;
}

/* Stable sort of v[0..n) by combining class. */
static int sort_run(scratch_t *sc, uc_t *v, size_t n) {
    if (n <= SHORT_RUN) {
        for (size_t i = 1; i < n; i++) {
            uc_t x = v[i];
            size_t j = i;
            for (; j > 0 && CCC(v[j - 1].info) > CCC(x.info); j--) v[j] = v[j - 1];
            v[j] = x;
        }
        return 0;
    }
    if (n > sc->tmp_cap) {
        uc_t *t = realloc(sc->tmp, n * sizeof *t);
        if (!t) return LLM_ENOMEM;
        sc->tmp = t;
        sc->tmp_cap = n;
    }
    size_t start[257] = {0};
    for (size_t i = 0; i < n; i++) start[CCC(v[i].info) + 1]++;
    for (int c = 0; c < 256; c++) start[c + 1] += start[c];
    for (size_t i = 0; i < n; i++) sc->tmp[start[CCC(v[i].info)]++] = v[i];
    memcpy(v, sc->tmp, n * sizeof *v);
    return 0;
}

static int canonical_order(scratch_t *sc) {
    for (size_t i = 0; i < sc->n;) {
        if (CCC(sc->v[i].info) == 0) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < sc->n && CCC(sc->v[j].info) != 0) j++;
        if (j - i > 1) {
            int rc = sort_run(sc, sc->v + i, j - i);
            if (rc) return rc;
        }
        i = j;
    }
    return 0;
}

/* Canonical composition (UAX #15 / Unicode 3.11) in place. A character composes with the last
 * starter when nothing between them has a combining class >= its own (last == 0: they are
 * adjacent). */
static void compose(scratch_t *sc) {
    uc_t *v = sc->v;
    if (sc->n == 0) return;
    size_t starter = 0, out = 1;
    uint32_t last = CCC(v[0].info) ? 256 : 0; /* text opening with a mark: nothing composes yet */
    for (size_t i = 1; i < sc->n; i++) {
        uc_t c = v[i];
        uint32_t cc = CCC(c.info);
        if ((last < cc || last == 0) && (FLAGS(c.info) & TOK_UC_QC_MAYBE)) {
            uint32_t comp = compose_pair(v[starter].cp, c.cp);
            if (comp) { /* composites are starters (asserted by the generator) */
                v[starter] = (uc_t){comp, prop(comp)};
                continue;
            }
        }
        if (cc == 0) starter = out;
        last = cc;
        v[out++] = c;
    }
    sc->n = out;
}

/* Normalizes the valid UTF-8 chunk s[0..n) and appends it to out. */
static int normalize_chunk(scratch_t *sc, const char *s, size_t n, int do_compose,
                           tok__buf_t *out) {
    sc->n = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        int cl;
        uint32_t cp = tok__utf8_decode(s + i, n - i, &cl);
        rc = push_decomposed(sc, cp, prop(cp));
        i += (size_t)cl;
    }
    if (rc || (rc = canonical_order(sc))) return rc;
    if (do_compose) compose(sc);
    if (sc->n > SIZE_MAX / 4 || tok__buf_reserve(out, sc->n * 4)) return LLM_ENOMEM;
    char *o = out->p + out->len;
    for (size_t i = 0; i < sc->n; i++) o += tok__utf8_encode(sc->v[i].cp, o);
    out->len = (size_t)(o - out->p);
    out->p[out->len] = '\0';
    return 0;
}

/* ---- quick check and chunking ---- */

/* Decodes the character at s[i] (n bytes in all) for the scan: *info its properties, *bad
 * whether it fails the quick check on its own. An invalid byte is reported as length 1 with
 * *inval set; it is copied through unchanged. */
static void scan_char(const char *s, size_t n, size_t i, int do_compose, int *cl,
                      uint32_t *info, int *bad, int *inval) {
    uint32_t cp = tok__utf8_decode(s + i, n - i, cl);
    *inval = *cl == 1 && cp >= 0x80;
    *info = *inval ? 0 : prop(cp);
    if (do_compose) *bad = (FLAGS(*info) & (TOK_UC_QC_NO | TOK_UC_QC_MAYBE)) != 0;
    else *bad = (FLAGS(*info) & TOK_UC_DECOMP) || is_hangul_s(cp);
}

int tok__unorm(const char *s, size_t n, int do_compose, tok__buf_t *out) {
    scratch_t sc = {0};
    int rc = 0;
    size_t i = 0, done = 0, safe = 0; /* done: copied so far; safe: last boundary */
    uint32_t last = 0;                /* combining class of the previous character */
    while (i < n && rc == 0) {
        if ((unsigned char)s[i] < 0x80) { /* ASCII: already normalized, each a boundary */
            while (i + 1 < n && (unsigned char)s[i + 1] < 0x80) i++;
            safe = i++;
            last = 0;
            continue;
        }
        int cl, bad, inval;
        uint32_t info;
        scan_char(s, n, i, do_compose, &cl, &info, &bad, &inval);
        uint32_t cc = CCC(info);
        if (inval) { /* nothing combines across it; never put it in a chunk */
            safe = ++i;
            last = 0;
            continue;
        }
        if (!bad && (cc == 0 || last <= cc)) {
            if (cc == 0) safe = i;
            last = cc;
            i += (size_t)cl;
            continue;
        }
        size_t end = i + (size_t)cl; /* extend to the next boundary */
        while (end < n && (unsigned char)s[end] >= 0x80) {
            scan_char(s, n, end, do_compose, &cl, &info, &bad, &inval);
            if (inval || (CCC(info) == 0 && !bad)) break;
            end += (size_t)cl;
        }
        if ((rc = tok__buf_put(out, s + done, safe - done)) == 0)
            rc = normalize_chunk(&sc, s + safe, end - safe, do_compose, out);
        done = safe = i = end;
        last = 0;
    }
    if (rc == 0) rc = tok__buf_put(out, s + done, n - done);
    free(sc.v);
    free(sc.tmp);
    return rc;
}
