/* synth_st_writer.c: see synth_st_writer.h. The header is built with cJSON so names are
 * escaped properly. */
#include "synth_st_writer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- types ---- */

#define STW_MAX_DIMS 8

typedef struct {
    char *name;
    core_dtype_t dt;
    int n_dims;
    int64_t shape[STW_MAX_DIMS];
    void *data; /* owned copy; NULL when n_bytes is 0 or the tensor is deferred */
    size_t n_bytes;
    stw_fill_cb fill; /* deferred: makes the bytes at write time (borrowed ctx) */
    void *fill_ctx;
} stw_tensor_t;

typedef struct {
    char *key, *value;
} stw_meta_t;

struct st_writer_s {
    stw_tensor_t *t;
    size_t n, cap;
    stw_meta_t *meta;
    size_t n_meta;
};

/* ---- helpers ---- */

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const stw_tensor_t *)a)->name, ((const stw_tensor_t *)b)->name);
}

/* Element count of a shape, or -1 when a dim is negative or the product overflows. */
static int64_t count_elems(int n_dims, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < n_dims; i++)
        if (shape[i] < 0) return -1;
    for (int i = 0; i < n_dims; i++)
        if (shape[i] == 0) return 0;
    for (int i = 0; i < n_dims; i++) {
        if (n > INT64_MAX / shape[i]) return -1;
        n *= shape[i];
    }
    return n;
}

static int write_all(FILE *f, const void *p, size_t n) {
    return n == 0 || fwrite(p, 1, n, f) == n ? 0 : -1;
}

static void put_u64le(unsigned char *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

/* Builds the unpadded header; tensors must already be in name order. Returns new string. */
static char *build_header(const st_writer_t *w) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    char *out = NULL;
    if (w->n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        if (!m) goto out;
        for (size_t i = 0; i < w->n_meta; i++)
            if (!cJSON_AddStringToObject(m, w->meta[i].key, w->meta[i].value)) goto out;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const stw_tensor_t *t = &w->t[i];
        cJSON *o = cJSON_AddObjectToObject(root, t->name);
        cJSON *shape, *offs;
        if (!o || !cJSON_AddStringToObject(o, "dtype", core_dtype_name(t->dt)) ||
            !(shape = cJSON_AddArrayToObject(o, "shape")) ||
            !(offs = cJSON_AddArrayToObject(o, "data_offsets")))
            goto out;
        for (int d = 0; d < t->n_dims; d++)
            if (!cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]))) goto out;
        if (!cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off)) ||
            !cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + t->n_bytes))))
            goto out;
        off += t->n_bytes;
    }
    out = cJSON_PrintUnformatted(root);
out:
    cJSON_Delete(root);
    return out;
}

/* ---- public API ---- */

st_writer_t *stw_create(void) { return calloc(1, sizeof(st_writer_t)); }

void stw_free(st_writer_t *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->meta);
    free(w);
}

/* stw_add and stw_add_deferred: data is copied, or (fill set) made at write time. */
static int add_tensor(st_writer_t *w, const char *name, core_dtype_t dt, int n_dims,
                      const int64_t *shape, const void *data, stw_fill_cb fill, void *fill_ctx) {
    if (!w || !name || !*name || !strcmp(name, "__metadata__") || n_dims < 0 ||
        n_dims > STW_MAX_DIMS || (n_dims && !shape) ||
        (dt != CORE_DT_F32 && dt != CORE_DT_F16 && dt != CORE_DT_BF16))
        return LLM_EINVAL;
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) return LLM_EINVAL;
    int64_t n = count_elems(n_dims, shape);
    if (n < 0 || (uint64_t)n > SIZE_MAX / core_dtype_size(dt)) return LLM_EINVAL;
    size_t bytes = (size_t)n * core_dtype_size(dt);
    if (bytes && !data && !fill) return LLM_EINVAL;
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        stw_tensor_t *t = realloc(w->t, cap * sizeof *t);
        if (!t) return LLM_ENOMEM;
        w->t = t;
        w->cap = cap;
    }
    stw_tensor_t *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->dt = dt;
    t->n_dims = n_dims;
    if (n_dims) memcpy(t->shape, shape, (size_t)n_dims * sizeof *shape);
    t->n_bytes = bytes;
    t->fill = fill;
    t->fill_ctx = fill_ctx;
    if (!(t->name = strdup(name))) return LLM_ENOMEM;
    if (bytes && !fill) {
        if (!(t->data = malloc(bytes))) {
            free(t->name);
            return LLM_ENOMEM;
        }
        memcpy(t->data, data, bytes);
    }
    w->n++;
    return 0;
}

int stw_add(st_writer_t *w, const char *name, core_dtype_t dt, int n_dims, const int64_t *shape,
            const void *data) {
    return add_tensor(w, name, dt, n_dims, shape, data, NULL, NULL);
}

int stw_add_deferred(st_writer_t *w, const char *name, core_dtype_t dt, int n_dims,
                     const int64_t *shape, stw_fill_cb fill, void *ctx) {
    if (!fill) return LLM_EINVAL;
    return add_tensor(w, name, dt, n_dims, shape, NULL, fill, ctx);
}

int stw_add_f32_as(st_writer_t *w, const char *name, core_dtype_t dt, int n_dims,
                   const int64_t *shape, const float *data) {
    if (dt == CORE_DT_F32 || (dt != CORE_DT_F16 && dt != CORE_DT_BF16))
        return stw_add(w, name, dt, n_dims, shape, data);
    int64_t n = n_dims >= 0 && n_dims <= STW_MAX_DIMS && (n_dims == 0 || shape)
                    ? count_elems(n_dims, shape)
                    : -1;
    if (n < 0 || (uint64_t)n > SIZE_MAX / 2 || (n && !data)) return LLM_EINVAL;
    uint16_t *h = malloc(n ? (size_t)n * 2 : 1);
    if (!h) return LLM_ENOMEM;
    for (int64_t i = 0; i < n; i++)
        h[i] = dt == CORE_DT_F16 ? core_f32_to_f16(data[i]) : core_f32_to_bf16(data[i]);
    int rc = stw_add(w, name, dt, n_dims, shape, h);
    free(h);
    return rc;
}

int stw_set_meta(st_writer_t *w, const char *key, const char *value) {
    if (!w || !key || !value) return LLM_EINVAL;
    char *v = strdup(value);
    if (!v) return LLM_ENOMEM;
    for (size_t i = 0; i < w->n_meta; i++)
        if (!strcmp(w->meta[i].key, key)) {
            free(w->meta[i].value);
            w->meta[i].value = v;
            return 0;
        }
    char *k = strdup(key);
    stw_meta_t *m = realloc(w->meta, (w->n_meta + 1) * sizeof *m);
    if (!k || !m) {
        free(k);
        free(v);
        if (m) w->meta = m;
        return LLM_ENOMEM;
    }
    w->meta = m;
    m[w->n_meta++] = (stw_meta_t){k, v};
    return 0;
}

int stw_write(const st_writer_t *w, const char *path) {
    if (!w || !path) return LLM_EINVAL;
    /* Sort a copy of the table so the writer itself stays const (and in insertion order). */
    stw_tensor_t *sorted = malloc((w->n ? w->n : 1) * sizeof *sorted);
    if (!sorted) return LLM_ENOMEM;
    if (w->n) memcpy(sorted, w->t, w->n * sizeof *sorted);
    qsort(sorted, w->n, sizeof *sorted, cmp_tensor);
    st_writer_t view = *w;
    view.t = sorted;
    char *hdr = build_header(&view);
    if (!hdr) {
        free(sorted);
        return LLM_ENOMEM;
    }
    size_t len = strlen(hdr), padded = (len + 7) / 8 * 8;
    int rc = 0;
    FILE *f = fopen(path, "wb");
    if (!f) {
        rc = -errno;
        goto out;
    }
    unsigned char lenb[8];
    put_u64le(lenb, padded);
    static const char spaces[] = "        ";
    if (write_all(f, lenb, 8) || write_all(f, hdr, len) || write_all(f, spaces, padded - len))
        rc = -EIO;
    /* Deferred tensors share one buffer, sized for the largest of them. */
    void *buf = NULL;
    size_t buf_cap = 0;
    for (size_t i = 0; i < w->n && !rc; i++) {
        const stw_tensor_t *t = &sorted[i];
        const void *p = t->data;
        if (t->fill && t->n_bytes) {
            if (t->n_bytes > buf_cap) {
                free(buf);
                buf_cap = 0;
                if (!(buf = malloc(t->n_bytes))) {
                    rc = LLM_ENOMEM;
                    break;
                }
                buf_cap = t->n_bytes;
            }
            if ((rc = t->fill(t->fill_ctx, t->name, buf, t->n_bytes))) break;
            p = buf;
        }
        if (write_all(f, p, t->n_bytes)) rc = -EIO;
    }
    free(buf);
    if (fclose(f) != 0 && !rc) rc = -errno;
out:
    free(hdr);
    free(sorted);
    return rc;
}

int stw_write_raw(const char *path, const char *header_json, const void *data, size_t data_len) {
    if (!path || !header_json || (data_len && !data)) return -EINVAL;
    FILE *f = fopen(path, "wb");
    if (!f) return -errno;
    unsigned char lenb[8];
    size_t len = strlen(header_json);
    put_u64le(lenb, len);
    int rc = 0;
    if (write_all(f, lenb, 8) || write_all(f, header_json, len) || write_all(f, data, data_len))
        rc = -EIO;
    if (fclose(f) != 0 && !rc) rc = -errno;
    return rc;
}
