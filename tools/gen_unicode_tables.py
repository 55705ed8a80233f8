#!/usr/bin/python3
"""Generates core/tokenizer_unicode_tables.c, the data behind the NFC / NFD normalizers of
core/tokenizer_nfc.c, from Python's unicodedata module (the Unicode version is recorded in the
generated file's header).

    /usr/bin/python3 tools/gen_unicode_tables.py > core/tokenizer_unicode_tables.c

Only "interesting" code points are listed; everything else has ccc 0, no canonical
decomposition and NFC_Quick_Check=Yes. Hangul syllables are left out entirely: they are
decomposed and composed algorithmically (Unicode 3.12), only the V and T jamo appear here (with
the MAYBE flag, since they can combine with a preceding jamo or syllable).

Three tables, each sorted so that the C side can binary-search it:
  tok__uc_prop[]    P(cp, flags, ccc): cp << 11 | flags << 8 | ccc, for every code point with
                    ccc != 0, a canonical decomposition, or NFC_Quick_Check != Yes.
                    flags: TOK_UC_DECOMP  has a canonical decomposition (in tok__uc_decomp),
                           TOK_UC_QC_NO   NFC_Quick_Check=No (Full_Composition_Exclusion),
                           TOK_UC_QC_MAYBE NFC_Quick_Check=Maybe (second of a composition pair).
  tok__uc_decomp[]  D(cp, a, b): cp << 42 | a << 21 | b, the one-level canonical decomposition
                    cp -> a b (b = 0 for a singleton); the C code applies it recursively.
  tok__uc_comp[]    C(a, b, c): a << 42 | b << 21 | c, the primary composites: a b -> c, sorted
                    by (a, b).
The derived properties are checked here against unicodedata.normalize() (see check()).
"""
import sys
import unicodedata as ud

MAX_CP = 0x110000
S_BASE, L_BASE, V_BASE, T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
L_COUNT, V_COUNT, T_COUNT = 19, 21, 28
S_COUNT = L_COUNT * V_COUNT * T_COUNT

F_DECOMP, F_QC_NO, F_QC_MAYBE = 1, 2, 4


def canon_decomp(cp):
    """One-level canonical decomposition of cp as a list, or None (Hangul excluded)."""
    d = ud.decomposition(chr(cp))
    if not d or d.startswith('<'):
        return None
    return [int(x, 16) for x in d.split()]


def nfc(s):
    return ud.normalize('NFC', s)


def build():
    ccc, decomp, flags = {}, {}, {}
    for cp in range(MAX_CP):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = ud.combining(chr(cp))
        if c:
            ccc[cp] = c
        d = canon_decomp(cp)
        if d is not None:
            decomp[cp] = d
    comp = {}
    for cp, d in decomp.items():
        f = F_DECOMP
        if nfc(chr(cp)) != chr(cp):
            f |= F_QC_NO  # singleton, non-starter decomposition or composition exclusion
        elif len(d) == 2:
            comp[(d[0], d[1])] = cp  # a primary composite
        flags[cp] = flags.get(cp, 0) | f
    for (a, b) in comp:
        flags[b] = flags.get(b, 0) | F_QC_MAYBE
    for v in range(V_BASE, V_BASE + V_COUNT):  # L + V -> LV
        flags[v] = flags.get(v, 0) | F_QC_MAYBE
    for t in range(T_BASE + 1, T_BASE + T_COUNT):  # LV + T -> LVT
        flags[t] = flags.get(t, 0) | F_QC_MAYBE
    return ccc, decomp, flags, comp


def full_decomp(cp, decomp):
    if S_BASE <= cp < S_BASE + S_COUNT:
        i = cp - S_BASE
        out = [L_BASE + i // (V_COUNT * T_COUNT), V_BASE + (i % (V_COUNT * T_COUNT)) // T_COUNT]
        if i % T_COUNT:
            out.append(T_BASE + i % T_COUNT)
        return out
    if cp not in decomp:
        return [cp]
    return [x for y in decomp[cp] for x in full_decomp(y, decomp)]


def check(ccc, decomp, flags, comp):
    """Asserts the properties tokenizer_nfc.c relies on."""
    depth = 0
    for cp, d in decomp.items():
        assert 1 <= len(d) <= 2 and all(0 < x < MAX_CP for x in d), hex(cp)
        # Only the first element of a mapping decomposes further (bounded recursion).
        assert len(d) == 1 or d[1] not in decomp, hex(cp)
        n, x = 0, cp
        while x in decomp:
            x, n = decomp[x][0], n + 1
        depth = max(depth, n)
        fd = ''.join(map(chr, full_decomp(cp, decomp)))
        assert fd == ud.normalize('NFD', chr(cp)), hex(cp)
    assert depth <= 4, depth
    for (a, b), c in comp.items():
        # Only a starter composes with what follows, and the composite is a starter too.
        assert ccc.get(a, 0) == 0 and ccc.get(c, 0) == 0, hex(c)
        assert nfc(chr(a) + chr(b)) == chr(c), hex(c)
    # A "boundary" (ccc 0, QC Yes, not MAYBE) never interacts with what precedes it: its full
    # decomposition starts with a starter that cannot be the second of a composition.
    for cp, d in decomp.items():
        if ccc.get(cp, 0) == 0 and not flags[cp] & (F_QC_NO | F_QC_MAYBE):
            first = full_decomp(cp, decomp)[0]
            assert ccc.get(first, 0) == 0 and not flags.get(first, 0) & F_QC_MAYBE, hex(cp)
    # Exactly the NFC_QC=No code points change when normalized on their own.
    for cp in range(MAX_CP):
        if not 0xD800 <= cp <= 0xDFFF:
            assert bool(flags.get(cp, 0) & F_QC_NO) == (nfc(chr(cp)) != chr(cp)), hex(cp)


def emit(ccc, decomp, flags, comp, out):
    w = out.write
    w('/* tokenizer_unicode_tables.c: GENERATED by tools/gen_unicode_tables.py from Python %s\'s\n'
      ' * unicodedata, Unicode %s. Do not edit; rerun:\n'
      ' *     /usr/bin/python3 tools/gen_unicode_tables.py > core/tokenizer_unicode_tables.c\n'
      ' * Data for the NFC / NFD normalizers (tokenizer_nfc.c); layout in tokenizer_int.h. */\n'
      % (sys.version.split()[0], ud.unidata_version))
    w('#include "tokenizer_int.h"\n\n')
    w('const char tok__uc_version[] = "%s";\n\n' % ud.unidata_version)

    props = sorted(set(ccc) | set(flags))
    w('#define P(cp, f, ccc) ((uint32_t)(cp) << 11 | (uint32_t)(f) << 8 | (uint32_t)(ccc))\n')
    w('#define N TOK_UC_QC_NO\n#define M TOK_UC_QC_MAYBE\n#define D TOK_UC_DECOMP\n')
    w('const uint32_t tok__uc_prop[] = {\n')
    items = []
    for cp in props:
        f = flags.get(cp, 0)
        fs = '|'.join(n for bit, n in ((F_DECOMP, 'D'), (F_QC_NO, 'N'), (F_QC_MAYBE, 'M'))
                      if f & bit) or '0'
        items.append('P(0x%04X,%s,%d)' % (cp, fs, ccc.get(cp, 0)))
    lines(items, w)
    w('};\nconst size_t tok__uc_prop_n = sizeof tok__uc_prop / sizeof tok__uc_prop[0];\n')
    w('#undef N\n#undef M\n#undef D\n#undef P\n\n')

    w('#define D(cp, a, b) ((uint64_t)(cp) << 42 | (uint64_t)(a) << 21 | (uint64_t)(b))\n')
    w('const uint64_t tok__uc_decomp[] = {\n')
    items = []
    for cp in sorted(decomp):
        d = decomp[cp] + [0]
        items.append('D(0x%04X,0x%04X,0x%04X)' % (cp, d[0], d[1]))
    lines(items, w)
    w('};\nconst size_t tok__uc_decomp_n = sizeof tok__uc_decomp / sizeof tok__uc_decomp[0];\n')
    w('#undef D\n\n')

    w('#define C(a, b, c) ((uint64_t)(a) << 42 | (uint64_t)(b) << 21 | (uint64_t)(c))\n')
    w('const uint64_t tok__uc_comp[] = {\n')
    items = ['C(0x%04X,0x%04X,0x%04X)' % (a, b, c) for (a, b), c in sorted(comp.items())]
    lines(items, w)
    w('};\nconst size_t tok__uc_comp_n = sizeof tok__uc_comp / sizeof tok__uc_comp[0];\n')
    w('#undef C\n\n')

    # One bit per 256-code-point block holding any tok__uc_prop entry: most text (CJK, Hangul
    # syllables, Cyrillic, ...) is then settled without a binary search.
    nblk = MAX_CP // 256
    bits = [0] * (nblk // 32)
    for cp in props:
        bits[(cp >> 8) // 32] |= 1 << ((cp >> 8) % 32)
    w('const uint32_t tok__uc_blocks[%d] = {\n' % len(bits))
    lines(['0x%08x' % b for b in bits], w)
    w('};\n')
    return len(props), len(decomp), len(comp)


def lines(items, w, width=99):
    line = '   '
    for it in items:
        if len(line) + 1 + len(it) + 1 > width:
            w(line + '\n')
            line = '   '
        line += ' ' + it + ','
    if line.strip():
        w(line + '\n')


def main():
    ccc, decomp, flags, comp = build()
    check(ccc, decomp, flags, comp)
    n = emit(ccc, decomp, flags, comp, sys.stdout)
    sys.stderr.write('Unicode %s: %d properties, %d decompositions, %d compositions\n'
                     % ((ud.unidata_version,) + n))


if __name__ == '__main__':
    main()
