/* tokenizer_encode.c: text -> ids, following HF tokenizers' pipeline:
 *   1. split out added tokens whose "normalized" is false, on the raw text;
 *   2. normalize each remaining segment (Prepend, Replace, Strip, NFC, NFD), then split out
 *      normalized added tokens;
 *   3. pre-tokenize each remaining segment into words (Metaspace, ByteLevel, Split, Digits);
 *   4. BPE each word on its own (merges by rank, byte_fallback, unk, ignore_merges);
 *   5. add what the post-processor / tokenizer_config adds (add_special).
 * BPE cost is O(w log w) per word of w symbols (a heap of candidate merges over a linked list
 * of symbols), so a long prompt is never quadratic, even with no pre-tokenizer (sentencepiece
 * style, where the whole segment is one word).
 */
#include "tokenizer_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- per-call scratch state ---- */

typedef struct ivec_s {
    int32_t *v;
    size_t n, cap;
} ivec_t;

/* A list of pieces; piece i is buf.p[se[2i] .. se[2i+1]); fl[i] = starts at text offset 0. */
typedef struct plist_s {
    tok__buf_t buf;
    size_t *se;
    unsigned char *fl;
    size_t n, cap;
} plist_t;

/* Segment of a text: [s, e) and a tag (added-token index, or -1 / is_match flag). */
typedef struct seg_s {
    size_t s, e;
    int tag;
} seg_t;

typedef struct segv_s {
    seg_t *v;
    size_t n, cap;
} segv_t;

typedef struct sym_s {
    int32_t id, prev, next;
} sym_t;

typedef struct cand_s {
    int32_t rank, pos, left, right, id;
} cand_t;

typedef struct ctx_s {
    const tok_tokenizer_t *tok;
    int parse_special;
    ivec_t out;
    tok__buf_t norm, tmp;
    segv_t seg1, seg2, segs, pieces;
    plist_t pl[2];
    sym_t *sym;
    size_t nsym_cap;
    cand_t *heap;
    size_t nheap, heap_cap;
    pcre2_match_data *md;
} ctx_t;

static int ivec_push(ivec_t *v, int32_t x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->v, cap * sizeof *p);
        if (!p) return LLM_ENOMEM;
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    return 0;
}

static int segv_push(segv_t *v, size_t s, size_t e, int tag) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 32;
        seg_t *p = realloc(v->v, cap * sizeof *p);
        if (!p) return LLM_ENOMEM;
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = (seg_t){s, e, tag};
    return 0;
}

/* Appends a piece made of a+b (either may be empty). Empty pieces are dropped, as HF drops
 * empty splits. */
static int plist_add2(plist_t *l, const char *a, size_t na, const char *b, size_t nb, int first) {
    if (na + nb == 0) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        size_t *se = realloc(l->se, cap * 2 * sizeof *se);
        if (!se) return LLM_ENOMEM;
        l->se = se;
        unsigned char *fl = realloc(l->fl, cap);
        if (!fl) return LLM_ENOMEM;
        l->fl = fl;
        l->cap = cap;
    }
    size_t s = l->buf.len;
    if (tok__buf_put(&l->buf, a, na) || tok__buf_put(&l->buf, b, nb)) return LLM_ENOMEM;
    l->se[2 * l->n] = s;
    l->se[2 * l->n + 1] = l->buf.len;
    l->fl[l->n++] = (unsigned char)first;
    return 0;
}

static void plist_clear(plist_t *l) {
    l->n = 0;
    l->buf.len = 0;
}

static void plist_free(plist_t *l) {
    tok__buf_free(&l->buf);
    free(l->se);
    free(l->fl);
}

/* ---- normalizers ---- */

static int replace_all(const tok__norm_t *n, pcre2_match_data *md, const char *s, size_t len,
                       tok__buf_t *out) {
    size_t i = 0, last = 0;
    while (i < len) {
        size_t ms, me;
        if (n->re) {
            int r = pcre2_match(n->re, (PCRE2_SPTR)s, len, i, PCRE2_NO_UTF_CHECK, md, NULL);
            if (r < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            ms = ov[0];
            me = ov[1];
            if (me == ms) { /* skip empty matches: advance one character */
                int cl;
                tok__utf8_decode(s + ms, len - ms, &cl);
                i = ms + (size_t)cl;
                continue;
            }
        } else {
            const char *p = memmem(s + i, len - i, n->a, n->a_len);
            if (!p) break;
            ms = (size_t)(p - s);
            me = ms + n->a_len;
        }
        if (tok__buf_put(out, s + last, ms - last) || tok__buf_put(out, n->b, n->b_len))
            return LLM_ENOMEM;
        last = i = me;
    }
    return tok__buf_put(out, s + last, len - last);
}

static int normalize_md(const tok_tokenizer_t *tok, pcre2_match_data *md, const char *s,
                        size_t n, tok__buf_t *out) {
    tok__buf_t a = {0}, b = {0};
    int rc = tok__buf_put(&a, s, n);
    for (int i = 0; i < tok->n_norm && rc == 0; i++) {
        const tok__norm_t *nm = &tok->norm[i];
        b.len = 0;
        switch (nm->type) {
        case TOK_NORM_PREPEND: /* HF prepends only to a non-empty string */
            if (a.len) rc = tok__buf_put(&b, nm->a, nm->a_len);
            if (!rc) rc = tok__buf_put(&b, a.p, a.len);
            break;
        case TOK_NORM_REPLACE:
            rc = replace_all(nm, md, a.p, a.len, &b);
            break;
        case TOK_NORM_STRIP: {
            size_t st = 0, en = a.len;
            int cl;
            while (nm->left && st < en && tok__is_space(tok__utf8_decode(a.p + st, en - st, &cl)))
                st += (size_t)cl;
            while (nm->right && en > st) {
                size_t k = en - 1;
                while (k > st && ((unsigned char)a.p[k] & 0xC0) == 0x80) k--;
                if (!tok__is_space(tok__utf8_decode(a.p + k, en - k, &cl))) break;
                en = k;
            }
            rc = tok__buf_put(&b, a.p + st, en - st);
            break;
        }
        case TOK_NORM_NFC:
        case TOK_NORM_NFD:
            rc = tok__unorm(a.p, a.len, nm->type == TOK_NORM_NFC, &b);
            break;
        }
        tok__buf_t t = a;
        a = b;
        b = t;
    }
    out->len = 0;
    if (!rc) rc = tok__buf_put(out, a.p, a.len);
    tok__buf_free(&a);
    tok__buf_free(&b);
    return rc;
}

int tok__normalize(const tok_tokenizer_t *tok, const char *s, size_t n, tok__buf_t *out) {
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return LLM_ENOMEM;
    int rc = normalize_md(tok, md, s, n, out);
    pcre2_match_data_free(md);
    return rc;
}

/* ---- added tokens ---- */

static int is_word_at(const ctx_t *c, const char *s, size_t len, size_t at) {
    int r = pcre2_match(c->tok->re_word, (PCRE2_SPTR)s, len, at,
                        PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, c->md, NULL);
    return r >= 0;
}

/* Splits s into segments: tag = index into tok->added for a matched added token, -1 for text.
 * Leftmost-longest matching like HF's Aho-Corasick (MatchKind::LeftmostLongest), then HF's
 * single_word / lstrip / rstrip rules. */
static int split_added(ctx_t *c, const tok__aset_t *set, const char *s, size_t len, segv_t *out) {
    const tok_tokenizer_t *tok = c->tok;
    out->n = 0;
    size_t pos = 0, start_off = 0;
    while (pos < len) {
        unsigned char b = (unsigned char)s[pos];
        int found = -1;
        for (int k = set->first[b]; k < set->first[b + 1]; k++) {
            const tok__added_t *a = &tok->added[set->order[k]];
            if (a->special && !c->parse_special) continue;
            if (a->pat_len <= len - pos && memcmp(s + pos, a->pattern, a->pat_len) == 0) {
                found = set->order[k];
                break;
            }
        }
        if (found < 0) {
            pos++;
            continue;
        }
        const tok__added_t *a = &tok->added[found];
        size_t ms = pos, me = pos + a->pat_len;
        pos = me;
        if (a->single_word) { /* no word character right before or after the match */
            int before = 0;
            if (ms > 0) {
                size_t j = ms - 1;
                while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
                before = is_word_at(c, s, len, j);
            }
            int after = me < len && is_word_at(c, s, len, me);
            if (before || after) continue;
        }
        if (a->lstrip) {
            size_t ns = ms;
            while (ns > start_off) {
                size_t j = ns - 1;
                while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
                int cl;
                if (!tok__is_space(tok__utf8_decode(s + j, ns - j, &cl))) break;
                ns = j;
            }
            ms = ns;
        }
        if (a->rstrip) {
            int cl;
            while (me < len && tok__is_space(tok__utf8_decode(s + me, len - me, &cl)))
                me += (size_t)cl;
            pos = me;
        }
        if (start_off < ms && segv_push(out, start_off, ms, -1)) return LLM_ENOMEM;
        if (segv_push(out, ms, me, found)) return LLM_ENOMEM;
        start_off = me;
    }
    if (start_off < len && segv_push(out, start_off, len, -1)) return LLM_ENOMEM;
    return 0;
}

/* ---- splitting by a pattern (HF NormalizedString::split) ---- */

/* Fills c->segs with a cover of s: tag 1 for matches of re (or of the literal), 0 between. */
static int find_matches(ctx_t *c, const pcre2_code *re, const char *lit, size_t lit_len,
                        const char *s, size_t len) {
    segv_t *v = &c->segs;
    v->n = 0;
    size_t i = 0, prev = 0;
    while (i < len) {
        size_t ms, me;
        if (re) {
            int r = pcre2_match(re, (PCRE2_SPTR)s, len, i, PCRE2_NO_UTF_CHECK, c->md, NULL);
            if (r < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
            ms = ov[0];
            me = ov[1];
            if (me == ms) {
                int cl;
                tok__utf8_decode(s + ms, len - ms, &cl);
                i = ms + (size_t)cl;
                continue;
            }
        } else {
            const char *p = memmem(s + i, len - i, lit, lit_len);
            if (!p) break;
            ms = (size_t)(p - s);
            me = ms + lit_len;
        }
        if (prev < ms && segv_push(v, prev, ms, 0)) return LLM_ENOMEM;
        if (segv_push(v, ms, me, 1)) return LLM_ENOMEM;
        prev = i = me;
    }
    if (prev < len && segv_push(v, prev, len, 0)) return LLM_ENOMEM;
    return 0;
}

/* Turns c->segs into c->pieces following HF's SplitDelimiterBehavior. */
static int apply_behavior(ctx_t *c, int behavior, int invert) {
    segv_t *in = &c->segs, *out = &c->pieces;
    out->n = 0;
    if (invert)
        for (size_t i = 0; i < in->n; i++) in->v[i].tag = !in->v[i].tag;
    if (behavior == TOK_SPLIT_MERGED_NEXT) { /* walk backwards, extend the next piece */
        int prev_match = 0;
        for (size_t k = in->n; k-- > 0;) {
            const seg_t *g = &in->v[k];
            if (g->tag && !prev_match && out->n) out->v[out->n - 1].s = g->s;
            else if (segv_push(out, g->s, g->e, 0)) return LLM_ENOMEM;
            prev_match = g->tag;
        }
        for (size_t i = 0, j = out->n; i < j / 2; i++) { /* reverse */
            seg_t t = out->v[i];
            out->v[i] = out->v[j - 1 - i];
            out->v[j - 1 - i] = t;
        }
        return 0;
    }
    int prev_match = 0;
    for (size_t k = 0; k < in->n; k++) {
        const seg_t *g = &in->v[k];
        int rc = 0;
        switch (behavior) {
        case TOK_SPLIT_REMOVED:
            if (!g->tag) rc = segv_push(out, g->s, g->e, 0);
            break;
        case TOK_SPLIT_ISOLATED:
            rc = segv_push(out, g->s, g->e, 0);
            break;
        case TOK_SPLIT_MERGED_PREV:
            if (g->tag && !prev_match && out->n) out->v[out->n - 1].e = g->e;
            else rc = segv_push(out, g->s, g->e, 0);
            break;
        case TOK_SPLIT_CONTIGUOUS:
            if (g->tag == prev_match && out->n) out->v[out->n - 1].e = g->e;
            else rc = segv_push(out, g->s, g->e, 0);
            break;
        }
        if (rc) return rc;
        prev_match = g->tag;
    }
    return 0;
}

/* ---- pre-tokenizers ---- */

static int bytelevel_map(ctx_t *c, plist_t *out, const char *s, size_t n, int first) {
    c->tmp.len = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        if (tok__buf_put(&c->tmp, c->tok->bl_str[b], c->tok->bl_len[b])) return LLM_ENOMEM;
    }
    return plist_add2(out, c->tmp.p, c->tmp.len, NULL, 0, first);
}

/* Applies one pre-tokenizer to every piece of in, producing out. */
static int pre_step(ctx_t *c, const tok__pre_t *p, const plist_t *in, plist_t *out) {
    plist_clear(out);
    tok__buf_t t = {0}; /* the piece after prefixing / replacing */
    int rc = 0;
    for (size_t i = 0; i < in->n && rc == 0; i++) {
        const char *s = in->buf.p + in->se[2 * i];
        size_t n = in->se[2 * i + 1] - in->se[2 * i];
        int first = in->fl[i];
        t.len = 0;
        if (p->type == TOK_PRE_BYTELEVEL) {
            if (p->add_prefix_space && (n == 0 || s[0] != ' ')) rc = tok__buf_put(&t, " ", 1);
            if (!rc) rc = tok__buf_put(&t, s, n);
            if (rc) break;
            if (!p->re) {
                rc = bytelevel_map(c, out, t.p, t.len, first);
                continue;
            }
            if ((rc = find_matches(c, p->re, NULL, 0, t.p, t.len)) ||
                (rc = apply_behavior(c, TOK_SPLIT_ISOLATED, 0)))
                break;
            for (size_t k = 0; k < c->pieces.n && rc == 0; k++)
                rc = bytelevel_map(c, out, t.p + c->pieces.v[k].s,
                                   c->pieces.v[k].e - c->pieces.v[k].s, first && k == 0);
            continue;
        }
        if (p->type == TOK_PRE_METASPACE) {
            for (size_t k = 0; k < n && rc == 0; k++)
                rc = s[k] == ' ' ? tok__buf_put(&t, p->lit, p->lit_len)
                                 : tok__buf_put(&t, s + k, 1);
            if (rc) break;
            int starts = t.len >= p->lit_len && memcmp(t.p, p->lit, p->lit_len) == 0;
            int prepend = !starts && (p->prepend == TOK_PREPEND_ALWAYS ||
                                      (p->prepend == TOK_PREPEND_FIRST && first));
            if (prepend) { /* rebuild as replacement + text */
                tok__buf_t u = {0};
                if (tok__buf_put(&u, p->lit, p->lit_len) || tok__buf_put(&u, t.p, t.len)) {
                    tok__buf_free(&u);
                    rc = LLM_ENOMEM;
                    break;
                }
                tok__buf_free(&t);
                t = u;
            }
            if (!p->split) {
                rc = plist_add2(out, t.p, t.len, NULL, 0, first);
                continue;
            }
            if ((rc = find_matches(c, NULL, p->lit, p->lit_len, t.p, t.len)) ||
                (rc = apply_behavior(c, TOK_SPLIT_MERGED_NEXT, 0)))
                break;
        } else { /* Split, Digits */
            if ((rc = tok__buf_put(&t, s, n)) ||
                (rc = find_matches(c, p->re, p->lit, p->lit_len, t.p, t.len)) ||
                (rc = apply_behavior(c, p->behavior, p->invert)))
                break;
        }
        for (size_t k = 0; k < c->pieces.n && rc == 0; k++)
            rc = plist_add2(out, t.p + c->pieces.v[k].s, c->pieces.v[k].e - c->pieces.v[k].s,
                            NULL, 0, first && c->pieces.v[k].s == 0);
    }
    tok__buf_free(&t);
    return rc;
}

/* ---- BPE ---- */

static int heap_less(const cand_t *a, const cand_t *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(ctx_t *c, cand_t x) {
    if (c->nheap == c->heap_cap) {
        size_t cap = c->heap_cap ? c->heap_cap * 2 : 64;
        cand_t *h = realloc(c->heap, cap * sizeof *h);
        if (!h) return LLM_ENOMEM;
        c->heap = h;
        c->heap_cap = cap;
    }
    size_t i = c->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&x, &c->heap[p])) break;
        c->heap[i] = c->heap[p];
        i = p;
    }
    c->heap[i] = x;
    return 0;
}

static cand_t heap_pop(ctx_t *c) {
    cand_t top = c->heap[0], x = c->heap[--c->nheap];
    size_t i = 0, n = c->nheap;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand_t *best = &x;
        if (l < n && heap_less(&c->heap[l], best)) { m = l; best = &c->heap[l]; }
        if (r < n && heap_less(&c->heap[r], best)) { m = r; }
        if (m == i) break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n) c->heap[i] = x;
    return top;
}

static int try_pair(ctx_t *c, int32_t pos) {
    const sym_t *a = &c->sym[pos];
    if (a->next < 0) return 0;
    const tok__pentry_t *m = tok__pmap_get(&c->tok->merges, a->id, c->sym[a->next].id);
    if (!m) return 0;
    return heap_push(c, (cand_t){m->rank, pos, a->id, c->sym[a->next].id, m->id});
}

static int add_sym(ctx_t *c, size_t *n, int32_t id) {
    if (*n == c->nsym_cap) {
        size_t cap = c->nsym_cap ? c->nsym_cap * 2 : 64;
        sym_t *s = realloc(c->sym, cap * sizeof *s);
        if (!s) return LLM_ENOMEM;
        c->sym = s;
        c->nsym_cap = cap;
    }
    c->sym[*n] = (sym_t){id, (int32_t)*n - 1, (int32_t)*n + 1};
    (*n)++;
    return 0;
}

/* BPE of one word (HF BPE::tokenize), appending ids to c->out. */
static int bpe_word(ctx_t *c, const char *w, size_t len) {
    const tok_tokenizer_t *tok = c->tok;
    if (len == 0) return 0;
    if (tok->ignore_merges) { /* Llama 3: a word that is itself a token is emitted whole */
        int32_t id = tok__smap_get(&tok->vocab, w, len);
        if (id >= 0) return ivec_push(&c->out, id);
    }
    if (len > INT32_MAX / 2) return LLM_ERANGE;
    size_t n = 0;
    int pending_unk = 0;
    for (size_t i = 0; i < len;) {
        int cl;
        tok__utf8_decode(w + i, len - i, &cl);
        int32_t id = tok__smap_get(&tok->vocab, w + i, (size_t)cl);
        if (id < 0 && tok->byte_fallback) {
            int all = 1;
            for (int k = 0; k < cl; k++) all &= tok->byte_id[(unsigned char)w[i + k]] >= 0;
            if (all) {
                if (pending_unk && add_sym(c, &n, tok->unk_id)) return LLM_ENOMEM;
                pending_unk = 0;
                for (int k = 0; k < cl; k++)
                    if (add_sym(c, &n, tok->byte_id[(unsigned char)w[i + k]])) return LLM_ENOMEM;
                i += (size_t)cl;
                continue;
            }
        }
        if (id >= 0) {
            if (pending_unk && add_sym(c, &n, tok->unk_id)) return LLM_ENOMEM;
            pending_unk = 0;
            if (add_sym(c, &n, id)) return LLM_ENOMEM;
        } else if (tok->unk_id >= 0) { /* fuse_unk: a run of unknown chars is one <unk> */
            if (pending_unk && !tok->fuse_unk && add_sym(c, &n, tok->unk_id)) return LLM_ENOMEM;
            pending_unk = 1;
        } /* no unk token: HF drops the character */
        i += (size_t)cl;
    }
    if (pending_unk && add_sym(c, &n, tok->unk_id)) return LLM_ENOMEM;
    if (n == 0) return 0;
    c->sym[n - 1].next = -1;
    c->nheap = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (try_pair(c, (int32_t)i)) return LLM_ENOMEM;
    while (c->nheap) {
        cand_t m = heap_pop(c);
        sym_t *a = &c->sym[m.pos];
        if (a->id != m.left || a->next < 0 || c->sym[a->next].id != m.right) continue; /* stale */
        sym_t *b = &c->sym[a->next];
        a->id = m.id;
        a->next = b->next;
        if (b->next >= 0) c->sym[b->next].prev = m.pos;
        b->id = -1;
        if (a->prev >= 0 && try_pair(c, a->prev)) return LLM_ENOMEM;
        if (try_pair(c, m.pos)) return LLM_ENOMEM;
    }
    for (int32_t i = 0; i >= 0; i = c->sym[i].next)
        if (ivec_push(&c->out, c->sym[i].id)) return LLM_ENOMEM;
    return 0;
}

/* ---- pipeline ---- */

static int pretok_and_bpe(ctx_t *c, const char *s, size_t n, int first) {
    const tok_tokenizer_t *tok = c->tok;
    if (tok->n_pre == 0) return bpe_word(c, s, n);
    plist_t *a = &c->pl[0], *b = &c->pl[1];
    plist_clear(a);
    int rc = plist_add2(a, s, n, NULL, 0, first);
    for (int i = 0; i < tok->n_pre && rc == 0; i++) {
        rc = pre_step(c, &tok->pre[i], a, b);
        plist_t *t = a;
        a = b;
        b = t;
    }
    for (size_t i = 0; i < a->n && rc == 0; i++)
        rc = bpe_word(c, a->buf.p + a->se[2 * i], a->se[2 * i + 1] - a->se[2 * i]);
    return rc;
}

static int encode_segment(ctx_t *c, const char *s, size_t n, int first) {
    const tok_tokenizer_t *tok = c->tok;
    const char *t = s;
    if (tok->n_norm) {
        int rc = normalize_md(tok, c->md, s, n, &c->norm);
        if (rc) return rc;
        t = c->norm.p;
        n = c->norm.len;
    }
    if (n == 0) return 0;
    int rc = split_added(c, &tok->aset_norm, t, n, &c->seg2);
    for (size_t i = 0; i < c->seg2.n && rc == 0; i++) {
        const seg_t *g = &c->seg2.v[i];
        if (g->tag >= 0) rc = ivec_push(&c->out, tok->added[g->tag].id);
        else rc = pretok_and_bpe(c, t + g->s, g->e - g->s, first && g->s == 0);
    }
    return rc;
}

int tok_encode(const tok_tokenizer_t *tok, const char *text, size_t len, int add_special,
               int parse_special, int32_t **ids, size_t *n_ids, llm_error_t *err) {
    llm_err_clear(err);
    if (!tok || (!text && len) || !ids || !n_ids)
        return llm_err_set(err, LLM_EINVAL, "tok_encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    size_t ok = text ? tok__utf8_valid_prefix(text, len) : 0;
    if (ok != len)
        return llm_err_set(err, LLM_EINVAL, "tok_encode: text is not valid UTF-8 at byte %zu",
                           ok);
    ctx_t c = {0};
    c.tok = tok;
    c.parse_special = parse_special;
    int rc = 0;
    if (!(c.md = pcre2_match_data_create(1, NULL))) rc = LLM_ENOMEM;
    for (int i = 0; add_special && i < tok->n_prefix && rc == 0; i++)
        rc = ivec_push(&c.out, tok->prefix[i]);
    if (rc == 0 && len) rc = split_added(&c, &tok->aset_raw, text, len, &c.seg1);
    for (size_t i = 0; rc == 0 && len && i < c.seg1.n; i++) {
        const seg_t *g = &c.seg1.v[i];
        if (g->tag >= 0) rc = ivec_push(&c.out, tok->added[g->tag].id);
        else rc = encode_segment(&c, text + g->s, g->e - g->s, g->s == 0);
    }
    for (int i = 0; add_special && i < tok->n_suffix && rc == 0; i++)
        rc = ivec_push(&c.out, tok->suffix[i]);
    if (rc == 0 && c.out.n == 0) { /* callers always get a non-NULL array to free */
        rc = ivec_push(&c.out, 0);
        c.out.n = 0;
    }

    pcre2_match_data_free(c.md);
    tok__buf_free(&c.norm);
    tok__buf_free(&c.tmp);
    free(c.seg1.v);
    free(c.seg2.v);
    free(c.segs.v);
    free(c.pieces.v);
    plist_free(&c.pl[0]);
    plist_free(&c.pl[1]);
    free(c.sym);
    free(c.heap);
    if (rc) {
        free(c.out.v);
        return llm_err_set(err, rc, "tok_encode: %s", llm_strerror(rc));
    }
    *ids = c.out.v;
    *n_ids = c.out.n;
    return 0;
}
