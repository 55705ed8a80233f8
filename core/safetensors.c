/* safetensors.c: mmap-backed reader of .safetensors files, single or sharded.
 *
 * Layout: u64 little-endian N, N bytes of JSON header, then the data section. Each header entry
 * is {"dtype", "shape", "data_offsets": [begin, end]} with offsets relative to the data section;
 * "__metadata__" is an optional string->string object.
 *
 * Everything the header claims is checked at open (see safetensors.h), so callers can read
 * tensor bytes without bounds checks. Tensors of every file are kept in one array sorted by
 * name: core_st_find() is a bsearch and core_st_at() enumerates in name order.
 *
 * cJSON stores numbers as doubles, so offsets and dimensions are accepted only when they are
 * integers in [0, 2^53] (larger would be a 9 PB file, and a double cannot hold them exactly).
 */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- types ---- */

/* The HF implementation refuses headers above 100 MB too; anything bigger is corrupt or hostile. */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
#define ST_MAX_INDEX ((long)100 * 1000 * 1000)
#define ST_MAX_INT ((double)(1ull << 53)) /* largest integer a double holds exactly */

typedef struct {
    char *path;  /* as given or built from dir + shard name; used in messages */
    void *map;   /* whole file, read-only; NULL for an empty mapping */
    size_t size; /* file size in bytes */
} st_file_t;

typedef struct {
    core_st_tensor_t t; /* the public view; core_st_at() returns &ent.t */
    size_t file;        /* index into core_st_s.files */
    uint64_t begin;     /* data_offsets, relative to the file's data section */
    uint64_t end;
} st_ent_t;

struct core_st_s {
    st_file_t *files;
    size_t n_files;
    st_ent_t *ents; /* sorted by name once open succeeds */
    size_t n_ents, cap_ents;
};

/* ---- helpers ---- */

static int cmp_ent_name(const void *a, const void *b) {
    return strcmp(((const st_ent_t *)a)->t.name, ((const st_ent_t *)b)->t.name);
}

static int cmp_key_ent(const void *key, const void *e) {
    return strcmp((const char *)key, ((const st_ent_t *)e)->t.name);
}

/* Orders by begin, then end, so overlaps show up between neighbours. */
static int cmp_ent_ptr_range(const void *a, const void *b) {
    const st_ent_t *x = *(const st_ent_t *const *)a, *y = *(const st_ent_t *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "[512, 64]" into buf (always NUL-terminated). */
static const char *fmt_shape(char *buf, size_t cap, const int64_t *shape, int n) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

/* Returns 1 and *out when item is a JSON number holding an integer in [0, 2^53]. */
static int json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return 0;
    double d = item->valuedouble;
    if (!(d >= 0.0 && d <= ST_MAX_INT) || d != (double)(uint64_t)d) return 0;
    *out = (uint64_t)d;
    return 1;
}

/* Maps dtype strings. Returns 0 and *dt for the accepted ones, LLM_EUNSUPPORTED for other
 * dtypes the safetensors format defines, LLM_EFORMAT for anything else. */
static int parse_dtype(const char *s, core_dtype_t *dt) {
    static const char *const other[] = {"BOOL", "U8",  "I8",  "I16", "U16",     "I32",
                                        "U32",  "I64", "U64", "F64", "F8_E4M3", "F8_E5M2",
                                        "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"};
    if (!strcmp(s, "F32")) *dt = CORE_DT_F32;
    else if (!strcmp(s, "F16")) *dt = CORE_DT_F16;
    else if (!strcmp(s, "BF16")) *dt = CORE_DT_BF16;
    else {
        for (size_t i = 0; i < sizeof other / sizeof *other; i++)
            if (!strcmp(s, other[i])) return LLM_EUNSUPPORTED;
        return LLM_EFORMAT;
    }
    return 0;
}

static char *join_path(const char *dir, const char *name) {
    size_t dl = strlen(dir), nl = strlen(name);
    while (dl > 1 && dir[dl - 1] == '/') dl--; /* "dir/" + "x" -> "dir/x", not "dir//x" */
    char *p = malloc(dl + 1 + nl + 1);
    if (!p) return NULL;
    memcpy(p, dir, dl);
    p[dl] = '/';
    memcpy(p + dl + 1, name, nl + 1);
    return p;
}

static core_st_t *st_new(void) { return calloc(1, sizeof(core_st_t)); }

static int grow_ents(core_st_t *st, size_t extra) {
    if (st->n_ents + extra <= st->cap_ents) return 0;
    size_t cap = st->cap_ents ? st->cap_ents : 64;
    while (cap < st->n_ents + extra) {
        if (cap > SIZE_MAX / 2 / sizeof(st_ent_t)) return LLM_ENOMEM;
        cap *= 2;
    }
    st_ent_t *e = realloc(st->ents, cap * sizeof *e);
    if (!e) return LLM_ENOMEM;
    st->ents = e;
    st->cap_ents = cap;
    return 0;
}

/* Maps path read-only and registers it in st->files (so core_st_free unmaps it on any later
 * failure). Returns 0 or -errno / LLM_E* with err filled. */
static int map_file(core_st_t *st, const char *path, st_file_t **out, llm_error_t *err) {
    st_file_t *files = realloc(st->files, (st->n_files + 1) * sizeof *files);
    if (!files) return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", path);
    st->files = files;
    st_file_t *f = &files[st->n_files];
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", path);
    st->n_files++;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return llm_err_set(err, -e, "%s: cannot open: %s", path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return llm_err_set(err, -e, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return llm_err_set(err, LLM_EFORMAT, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return llm_err_set(err, LLM_ERANGE, "%s: file too large to map", path);
    }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) {
        close(fd);
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: truncated: %zu bytes, shorter than the 8-byte header length",
                           path, f->size);
    }
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file alive */
    if (m == MAP_FAILED) return llm_err_set(err, -e, "%s: cannot mmap: %s", path, strerror(e));
    f->map = m;
    *out = f;
    return 0;
}

/* Checks one header entry and fills e (name excluded); data is the file's data section.
 * Returns 0 or LLM_E* with err filled. */
static int parse_entry(const char *path, const cJSON *item, const unsigned char *data,
                       uint64_t data_size, st_ent_t *e, llm_error_t *err) {
    const char *name = item->string;
    char sbuf[160];
    if (!cJSON_IsObject(item))
        return llm_err_set(err, LLM_EFORMAT, "%s: tensor \"%.200s\": entry is not an object",
                           path, name);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(jd))
        return llm_err_set(err, LLM_EFORMAT, "%s: tensor \"%.200s\": missing or non-string dtype",
                           path, name);
    if (!cJSON_IsArray(js))
        return llm_err_set(err, LLM_EFORMAT, "%s: tensor \"%.200s\": missing or non-array shape",
                           path, name);
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tensor \"%.200s\": data_offsets must be an array [begin, end]",
                           path, name);

    int rc = parse_dtype(jd->valuestring, &e->t.dtype);
    if (rc == LLM_EUNSUPPORTED)
        return llm_err_set(err, rc,
                           "%s: tensor \"%.200s\": dtype \"%.40s\" is not supported "
                           "(only F32, F16, BF16)", path, name, jd->valuestring);
    if (rc)
        return llm_err_set(err, rc, "%s: tensor \"%.200s\": unknown dtype \"%.40s\"", path, name,
                           jd->valuestring);

    int nd = cJSON_GetArraySize(js);
    if (nd > CORE_ST_MAX_DIMS)
        return llm_err_set(err, LLM_EUNSUPPORTED,
                           "%s: tensor \"%.200s\": %d dimensions, at most %d supported", path,
                           name, nd, CORE_ST_MAX_DIMS);
    e->t.n_dims = nd;
    int any_zero = 0;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, js) {
        uint64_t v;
        if (cJSON_IsNumber(d) && d->valuedouble < 0)
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: tensor \"%.200s\": negative dimension %.0f in shape", path,
                               name, d->valuedouble);
        if (!json_uint(d, &v))
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: tensor \"%.200s\": shape dimension %d is not an integer in "
                               "[0, 2^53]", path, name, i);
        e->t.shape[i++] = (int64_t)v;
        any_zero |= v == 0;
    }
    /* Products of huge dims overflow before a later 0 would zero them: test for 0 first. */
    int64_t n = 1;
    if (any_zero) n = 0;
    else
        for (i = 0; i < nd; i++) {
            if (n > INT64_MAX / e->t.shape[i])
                return llm_err_set(err, LLM_EFORMAT,
                                   "%s: tensor \"%.200s\": element count of shape %s overflows",
                                   path, name, fmt_shape(sbuf, sizeof sbuf, e->t.shape, nd));
            n *= e->t.shape[i];
        }
    e->t.n_elems = n;

    if (!json_uint(cJSON_GetArrayItem(jo, 0), &e->begin) ||
        !json_uint(cJSON_GetArrayItem(jo, 1), &e->end))
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tensor \"%.200s\": data_offsets are not integers in [0, 2^53]",
                           path, name);
    if (e->begin > e->end)
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tensor \"%.200s\": data_offsets [%llu, %llu] have begin > end",
                           path, name, (unsigned long long)e->begin,
                           (unsigned long long)e->end);
    if (e->end > data_size)
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tensor \"%.200s\": data_offsets [%llu, %llu] exceed the data "
                           "section (%llu bytes)", path, name, (unsigned long long)e->begin,
                           (unsigned long long)e->end, (unsigned long long)data_size);
    const uint64_t esz = core_dtype_size(e->t.dtype), span = e->end - e->begin;
    if ((uint64_t)n > UINT64_MAX / esz)
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tensor \"%.200s\": shape %s of %s is too large for "
                           "data_offsets [%llu, %llu]", path, name,
                           fmt_shape(sbuf, sizeof sbuf, e->t.shape, nd),
                           core_dtype_name(e->t.dtype), (unsigned long long)e->begin,
                           (unsigned long long)e->end);
    if ((uint64_t)n * esz != span)
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: tensor \"%.200s\": shape %s of %s needs %llu bytes but "
                           "data_offsets [%llu, %llu] hold %llu", path, name,
                           fmt_shape(sbuf, sizeof sbuf, e->t.shape, nd),
                           core_dtype_name(e->t.dtype), (unsigned long long)((uint64_t)n * esz),
                           (unsigned long long)e->begin, (unsigned long long)e->end,
                           (unsigned long long)span);
    e->t.n_bytes = (size_t)span;
    e->t.data = data + e->begin;
    return 0;
}

/* "__metadata__" is optional; when present it must map strings to strings. */
static int check_metadata(const char *path, const cJSON *meta, llm_error_t *err) {
    if (!cJSON_IsObject(meta))
        return llm_err_set(err, LLM_EFORMAT, "%s: __metadata__ is not an object", path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, meta) {
        if (!cJSON_IsString(kv))
            return llm_err_set(err, LLM_EFORMAT,
                               "%s: __metadata__ value \"%.200s\" is not a string", path,
                               kv->string);
    }
    return 0;
}

/* Tensors of one file, ents[first..n): refuses duplicate names and overlapping byte ranges,
 * and leaves the slice sorted by name. */
static int check_file_ents(core_st_t *st, size_t first, const char *path, llm_error_t *err) {
    st_ent_t *v = st->ents + first;
    size_t n = st->n_ents - first;
    if (n < 2) return 0;
    qsort(v, n, sizeof *v, cmp_ent_name);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(v[i - 1].t.name, v[i].t.name))
            return llm_err_set(err, LLM_EFORMAT, "%s: tensor \"%.200s\": duplicate tensor name",
                               path, v[i].t.name);
    st_ent_t **by = malloc(n * sizeof *by);
    if (!by) return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) by[i] = &v[i];
    qsort(by, n, sizeof *by, cmp_ent_ptr_range);
    /* Empty tensors own no bytes, so they cannot overlap anything. */
    const st_ent_t *prev = NULL;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const st_ent_t *c = by[i];
        if (c->begin == c->end) continue;
        if (prev && c->begin < prev->end)
            rc = llm_err_set(err, LLM_EFORMAT,
                             "%s: tensor \"%.200s\": data_offsets [%llu, %llu] overlap tensor "
                             "\"%.200s\" [%llu, %llu]", path, c->t.name,
                             (unsigned long long)c->begin, (unsigned long long)c->end,
                             prev->t.name, (unsigned long long)prev->begin,
                             (unsigned long long)prev->end);
        if (!prev || c->end > prev->end) prev = c;
    }
    free(by);
    return rc;
}

/* Maps one file and appends its validated tensors to st. On failure st keeps whatever was
 * added (the caller frees it whole). */
static int open_into(core_st_t *st, const char *path, llm_error_t *err) {
    st_file_t *f = NULL;
    int rc = map_file(st, path, &f, err);
    if (rc) return rc;
    const size_t file_idx = st->n_files - 1;
    const unsigned char *b = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    if (hlen < 2)
        return llm_err_set(err, LLM_EFORMAT, "%s: header length %llu is too small", path,
                           (unsigned long long)hlen);
    if (hlen > ST_MAX_HEADER)
        return llm_err_set(err, LLM_EFORMAT, "%s: header length %llu exceeds the %llu-byte limit",
                           path, (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    if (hlen > f->size - 8)
        return llm_err_set(err, LLM_EFORMAT,
                           "%s: truncated: header length %llu exceeds the %zu bytes after the "
                           "length field", path, (unsigned long long)hlen, f->size - 8);
    const char *hdr = (const char *)b + 8;
    const uint64_t data_size = f->size - 8 - hlen;

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr && end <= hdr + hlen ? (size_t)(end - hdr) : 0;
        return llm_err_set(err, LLM_EFORMAT, "%s: header is not valid JSON (near byte %zu of %llu)",
                           path, at, (unsigned long long)hlen);
    }
    /* The format pads the header with spaces; anything else after the JSON is corruption. */
    for (const char *p = end; p && p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = llm_err_set(err, LLM_EFORMAT, "%s: header has trailing bytes after the JSON "
                             "(at byte %zu)", path, (size_t)(p - hdr));
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        rc = llm_err_set(err, LLM_EFORMAT, "%s: header is not a JSON object", path);
        goto out;
    }
    const size_t first = st->n_ents;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (!strcmp(item->string, "__metadata__")) {
            if ((rc = check_metadata(path, item, err))) goto out;
            continue;
        }
        if ((rc = grow_ents(st, 1))) {
            rc = llm_err_set(err, rc, "%s: out of memory", path);
            goto out;
        }
        st_ent_t *e = &st->ents[st->n_ents];
        memset(e, 0, sizeof *e);
        if ((rc = parse_entry(path, item, b + 8 + hlen, data_size, e, err))) goto out;
        if (!(e->t.name = strdup(item->string))) {
            rc = llm_err_set(err, LLM_ENOMEM, "%s: out of memory", path);
            goto out;
        }
        e->file = file_idx;
        st->n_ents++;
    }
    rc = check_file_ents(st, first, path, err);
out:
    cJSON_Delete(root);
    return rc;
}

/* Reads a whole small file (the index). Returns new NUL-terminated buffer or NULL with *rc. */
static char *read_small(const char *path, int *rc, llm_error_t *err) {
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    if (!fp) {
        int e = errno;
        *rc = llm_err_set(err, -e, "%s: cannot open: %s", path, strerror(e));
        return NULL;
    }
    long n = -1;
    if (fseek(fp, 0, SEEK_END) == 0) n = ftell(fp);
    if (n < 0 || n > ST_MAX_INDEX) {
        *rc = llm_err_set(err, n < 0 ? LLM_EIO : LLM_EFORMAT, "%s: %s", path,
                          n < 0 ? "cannot determine size" : "larger than 100 MB");
        goto out;
    }
    rewind(fp);
    if (!(buf = malloc((size_t)n + 1))) {
        *rc = llm_err_set(err, LLM_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if (fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
        *rc = llm_err_set(err, LLM_EIO, "%s: read error", path);
        goto out;
    }
    buf[n] = '\0';
out:
    fclose(fp);
    return buf;
}

/* Sorts all tensors by name and refuses a name present in two files. */
static int finish(core_st_t *st, llm_error_t *err) {
    if (st->n_ents < 2) return 0; /* also keeps a NULL array away from qsort */
    qsort(st->ents, st->n_ents, sizeof *st->ents, cmp_ent_name);
    for (size_t i = 1; i < st->n_ents; i++) {
        const st_ent_t *a = &st->ents[i - 1], *b = &st->ents[i];
        if (!strcmp(a->t.name, b->t.name))
            return llm_err_set(err, LLM_EFORMAT, "tensor \"%.200s\" is in both %s and %s",
                               b->t.name, st->files[a->file].path, st->files[b->file].path);
    }
    return 0;
}

static const st_ent_t *find_ent(const core_st_t *st, const char *name) {
    if (!st->n_ents) return NULL; /* bsearch must not see a NULL array */
    return bsearch(name, st->ents, st->n_ents, sizeof *st->ents, cmp_key_ent);
}

static int shard_name_ok(const char *s) {
    return *s && !strchr(s, '/') && !strstr(s, "..");
}

/* Opens the shards listed in DIR/model.safetensors.index.json into st. */
static int open_index(core_st_t *st, const char *dir, const char *ipath, llm_error_t *err) {
    int rc = 0;
    char *text = read_small(ipath, &rc, err);
    if (!text) return rc;
    cJSON *root = cJSON_Parse(text);
    const char **shards = NULL;
    size_t n_shards = 0;
    char *spath = NULL;
    free(text);
    if (!root) return llm_err_set(err, LLM_EFORMAT, "%s: not valid JSON", ipath);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm) || !wm->child) {
        rc = llm_err_set(err, LLM_EFORMAT, "%s: missing, empty or non-object \"weight_map\"",
                         ipath);
        goto out;
    }
    size_t n_map = (size_t)cJSON_GetArraySize(wm);
    if (!(shards = malloc(n_map * sizeof *shards))) {
        rc = llm_err_set(err, LLM_ENOMEM, "%s: out of memory", ipath);
        goto out;
    }
    const cJSON *kv;
    cJSON_ArrayForEach(kv, wm) {
        if (!cJSON_IsString(kv)) {
            rc = llm_err_set(err, LLM_EFORMAT, "%s: weight_map[\"%.200s\"] is not a string",
                             ipath, kv->string);
            goto out;
        }
        if (!shard_name_ok(kv->valuestring)) {
            rc = llm_err_set(err, LLM_EFORMAT,
                             "%s: tensor \"%.200s\": shard name \"%.200s\" must be a plain file "
                             "name in the model directory", ipath, kv->string, kv->valuestring);
            goto out;
        }
        shards[n_shards++] = kv->valuestring;
    }
    /* Each distinct shard is opened once; its file index is its rank in this sorted list. */
    qsort(shards, n_shards, sizeof *shards, cmp_str_ptr);
    size_t u = 0;
    for (size_t i = 0; i < n_shards; i++)
        if (!u || strcmp(shards[u - 1], shards[i])) shards[u++] = shards[i];
    n_shards = u;
    for (size_t i = 0; i < n_shards; i++) {
        free(spath);
        if (!(spath = join_path(dir, shards[i]))) {
            rc = llm_err_set(err, LLM_ENOMEM, "%s: out of memory", ipath);
            goto out;
        }
        if ((rc = open_into(st, spath, err))) {
            if (rc == -ENOENT)
                rc = llm_err_set(err, LLM_ENOTFOUND, "%s: shard \"%.200s\" does not exist (%s)",
                                 ipath, shards[i], spath);
            goto out;
        }
    }
    if ((rc = finish(st, err))) goto out;
    cJSON_ArrayForEach(kv, wm) {
        const st_ent_t *e = find_ent(st, kv->string);
        const char **want = bsearch(&kv->valuestring, shards, n_shards, sizeof *shards,
                                    cmp_str_ptr);
        if (!e) {
            rc = llm_err_set(err, LLM_EFORMAT,
                             "%s: tensor \"%.200s\" is not in shard \"%.200s\"", ipath,
                             kv->string, kv->valuestring);
            goto out;
        }
        if (!want || e->file != (size_t)(want - shards)) {
            rc = llm_err_set(err, LLM_EFORMAT,
                             "%s: tensor \"%.200s\" is listed in shard \"%.200s\" but is in %s",
                             ipath, kv->string, kv->valuestring, st->files[e->file].path);
            goto out;
        }
    }
out:
    free(spath);
    free(shards);
    cJSON_Delete(root);
    return rc;
}

/* ---- public API ---- */

int core_st_open(const char *path, core_st_t **out, llm_error_t *err) {
    *out = NULL;
    core_st_t *st = st_new();
    if (!st) return llm_err_set(err, LLM_ENOMEM, "%s: out of memory", path);
    int rc = open_into(st, path, err);
    if (!rc) rc = finish(st, err);
    if (rc) {
        core_st_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

int core_st_open_dir(const char *dir, core_st_t **out, llm_error_t *err) {
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return llm_err_set(err, LLM_ENOTFOUND, "%s: model directory does not exist", dir);
    char *single = join_path(dir, "model.safetensors");
    char *index = join_path(dir, "model.safetensors.index.json");
    core_st_t *st = st_new();
    int rc = 0;
    if (!single || !index || !st) {
        rc = llm_err_set(err, LLM_ENOMEM, "%s: out of memory", dir);
        goto out;
    }
    if (stat(single, &sb) == 0 || errno != ENOENT) {
        rc = open_into(st, single, err);
        if (!rc) rc = finish(st, err);
    } else if (stat(index, &sb) == 0 || errno != ENOENT) {
        rc = open_index(st, dir, index, err);
    } else {
        rc = llm_err_set(err, LLM_ENOTFOUND,
                         "%s: no model.safetensors or model.safetensors.index.json", dir);
    }
out:
    free(single);
    free(index);
    if (rc) {
        core_st_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

void core_st_free(core_st_t *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n_ents; i++) free(st->ents[i].t.name);
    free(st->ents);
    for (size_t i = 0; i < st->n_files; i++) {
        if (st->files[i].map) munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    free(st->files);
    free(st);
}

const core_st_tensor_t *core_st_find(const core_st_t *st, const char *name) {
    const st_ent_t *e = st && name ? find_ent(st, name) : NULL;
    return e ? &e->t : NULL;
}

size_t core_st_count(const core_st_t *st) { return st ? st->n_ents : 0; }

const core_st_tensor_t *core_st_at(const core_st_t *st, size_t i) {
    return st && i < st->n_ents ? &st->ents[i].t : NULL;
}
