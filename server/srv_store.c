/* srv_store.c: the adapter registry on disk. Layout, version and crash-safety rules are in
 * srv_store.h; this file keeps the order of writes that makes them true.
 *
 * In memory: a sorted array of names (entry_t) and a sorted array of blobs (blob_t) with
 * reference counts (refs: names + a commit's reservation; holds: callers). Two locks:
 * wmu serialises everything that changes names/ or adds to blobs/ (so the order of changes
 * on disk is the order in memory), mu protects the arrays and counts and is only ever held
 * for memory work and single metadata syscalls (rename of a dead blob into tmp/), never for
 * an fsync. Lock order: wmu, then mu.
 */
#include "srv_store.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <nettle/sha2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- types ---- */

#define HEX_LEN 64
#define PATH_CAP 4096
#define TMPNAME_CAP 48
#define NOTES_MAX_LINES 32
#define IO_CHUNK 65536

static const char *const k_part_file[2] = {"adapter_config.json", "adapter_model.safetensors"};

typedef struct blob_s {
    char hex[HEX_LEN + 1];
    int64_t size[2];   /* bytes of the config and the weights */
    time_t created;
    int refs;          /* names pointing here, plus a commit's reservation */
    int holds;         /* srv_store_blob_hold / srv_store_acquire */
} blob_t;

typedef struct entry_s {
    char name[SRV_STORE_NAME_MAX + 1];
    blob_t *blob;      /* counted in blob->refs */
    int pinned;
} entry_t;

struct srv_store_s {
    /* private */
    char *root;
    int root_fd, blobs_fd, names_fd, tmp_fd, lock_fd;
    int64_t max_upload;
    int fsync_on;
    pthread_mutex_t mu;  /* everything below */
    pthread_mutex_t wmu; /* writers of names/ and blobs/; taken before mu */
    entry_t **e;         /* (n) sorted by name */
    size_t n, cap;
    blob_t **b;          /* (nb) sorted by hex */
    size_t nb, capb;
    size_t holds;
    uint64_t seq;        /* unique suffixes for files in tmp/ (atomic) */
    srv_store_stats_t open_stats;
    char *notes;
    size_t notes_len, notes_lines, notes_more;
    void (*crash_fn)(int point, void *arg);
    void *crash_arg;
};

struct srv_store_upload_s {
    srv_store_t *s;
    char dir[TMPNAME_CAP];       /* staging directory, relative to tmp/ */
    char path[2][PATH_CAP];      /* absolute paths of the two parts */
    int fd[2];
    int64_t bytes[2];
    struct sha256_ctx ver;       /* running hash of the canonical bytes */
    int ver_state;               /* 0 not started, 1 streaming, 2 stale (re-read at commit) */
    int err;                     /* sticky write failure */
    char errmsg[256];
    char *meta;
};

/* ---- small helpers ---- */

static int sys_fail(llm_error_t *err, int e, const char *what, const char *path) {
    return llm_err_set(err, -e, "adapter store: %s %s: %s", what, path, strerror(e));
}

static uint64_t next_seq(srv_store_t *s) {
    return __atomic_add_fetch(&s->seq, 1, __ATOMIC_RELAXED);
}

static void crash_point(srv_store_t *s, int point) {
    if (s->crash_fn) s->crash_fn(point, s->crash_arg);
}

static int write_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads exactly n bytes at off; -EIO if the file is shorter. */
static int pread_all(int fd, void *data, size_t n, int64_t off) {
    char *p = data;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r == 0) return -EIO;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

static int do_fsync(const srv_store_t *s, int fd) {
    if (!s->fsync_on) return 0;
    while (fsync(fd) != 0)
        if (errno != EINTR) return -errno;
    return 0;
}

/* fsyncs the directory dirfd/name. */
static int fsync_dir_at(const srv_store_t *s, int dirfd, const char *name) {
    if (!s->fsync_on) return 0;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = do_fsync(s, fd);
    close(fd);
    return rc;
}

/* Removes dirfd/name and, if it is a directory, everything under it (at most depth levels).
 * A missing name is not an error. */
static int rm_tree_at(int dirfd, const char *name, int depth) {
    if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT) return 0;
    if (errno != EISDIR && errno != EPERM) return -errno;
    if (depth <= 0) return -ELOOP;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = -errno;
        close(fd);
        return e;
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        int r = rm_tree_at(fd, de->d_name, depth - 1);
        if (r && !rc) rc = r;
    }
    closedir(d);
    if (unlinkat(dirfd, name, AT_REMOVEDIR) != 0 && !rc) rc = -errno;
    return rc;
}

static void to_hex(const uint8_t *d, char *hex) {
    static const char k[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = k[d[i] >> 4];
        hex[2 * i + 1] = k[d[i] & 15];
    }
    hex[HEX_LEN] = '\0';
}

static int is_hex64(const char *p) {
    for (int i = 0; i < HEX_LEN; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return 0;
    return 1;
}

/* The 8-byte little-endian size that starts the canonical bytes. */
static void hash_prefix(struct sha256_ctx *c, int64_t config_bytes) {
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)config_bytes >> (8 * i));
    sha256_update(c, sizeof le, le);
}

static int hash_fd(struct sha256_ctx *c, int fd, int64_t n) {
    uint8_t buf[16384];
    for (int64_t off = 0; off < n;) {
        size_t k = (size_t)(n - off < (int64_t)sizeof buf ? n - off : (int64_t)sizeof buf);
        int rc = pread_all(fd, buf, k, off);
        if (rc) return rc;
        sha256_update(c, k, buf);
        off += (int64_t)k;
    }
    return 0;
}

/* The version of (config, weights) read back from two open files. */
static int hash_files(int cfd, int64_t cn, int wfd, int64_t wn, char *hex) {
    struct sha256_ctx c;
    sha256_init(&c);
    hash_prefix(&c, cn);
    int rc = hash_fd(&c, cfd, cn);
    if (!rc) rc = hash_fd(&c, wfd, wn);
    if (rc) return rc;
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_digest(&c, sizeof d, d);
    to_hex(d, hex);
    return 0;
}

/* Copies name for a message, replacing anything unprintable. */
static void printable(const char *in, char *out, size_t cap) {
    size_t i = 0;
    for (; in[i] && i + 1 < cap; i++)
        out[i] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
    out[i] = '\0';
}

__attribute__((format(printf, 2, 3))) static void note(srv_store_t *s, const char *fmt, ...) {
    if (s->notes_lines >= NOTES_MAX_LINES) {
        s->notes_more++;
        return;
    }
    char line[640];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    size_t len = strlen(line);
    line[len++] = '\n';
    char *nn = realloc(s->notes, s->notes_len + len + 1);
    if (!nn) return;
    memcpy(nn + s->notes_len, line, len);
    s->notes_len += len;
    nn[s->notes_len] = '\0';
    s->notes = nn;
    s->notes_lines++;
}

/* ---- the in-memory index (callers hold mu) ---- */

/* Index of name in s->e, or -1 with *pos = where it would go. */
static long find_entry(const srv_store_t *s, const char *name, size_t *pos) {
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->e[mid]->name, name);
        if (c == 0) return (long)mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    if (pos) *pos = lo;
    return -1;
}

static blob_t *find_blob(const srv_store_t *s, const char *hex, size_t *pos) {
    size_t lo = 0, hi = s->nb;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->b[mid]->hex, hex);
        if (c == 0) {
            if (pos) *pos = mid;
            return s->b[mid];
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    if (pos) *pos = lo;
    return NULL;
}

/* Makes room for one more name and one more blob, so that the memory update that follows a
 * change on disk cannot fail. */
static int reserve_locked(srv_store_t *s) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        entry_t **ne = realloc(s->e, cap * sizeof *ne);
        if (!ne) return LLM_ENOMEM;
        s->e = ne;
        s->cap = cap;
    }
    if (s->nb == s->capb) {
        size_t cap = s->capb ? s->capb * 2 : 64;
        blob_t **nb = realloc(s->b, cap * sizeof *nb);
        if (!nb) return LLM_ENOMEM;
        s->b = nb;
        s->capb = cap;
    }
    return 0;
}

static void insert_blob_locked(srv_store_t *s, blob_t *b) {
    size_t pos;
    if (find_blob(s, b->hex, &pos)) return; /* cannot happen: only wmu holders insert */
    memmove(s->b + pos + 1, s->b + pos, (s->nb - pos) * sizeof *s->b);
    s->b[pos] = b;
    s->nb++;
}

/* Called when b may have lost its last reference. A dead blob leaves the index and its
 * directory is renamed into tmp/ in the same critical section, so a commit of the same bytes
 * either finds it alive or finds blobs/<hex> free; *gc receives the name under tmp/ that the
 * caller removes after unlocking ("" when nothing to remove). */
static void maybe_drop_blob_locked(srv_store_t *s, blob_t *b, char *gc) {
    gc[0] = '\0';
    if (b->refs > 0 || b->holds > 0) return;
    size_t pos;
    if (find_blob(s, b->hex, &pos) == b) {
        memmove(s->b + pos, s->b + pos + 1, (s->nb - pos - 1) * sizeof *s->b);
        s->nb--;
    }
    snprintf(gc, TMPNAME_CAP, "gc-%" PRIu64, next_seq(s));
    /* On failure the directory stays in blobs/: the next open removes it, and a commit of the
     * same bytes moves it out of the way first. */
    if (renameat(s->blobs_fd, b->hex, s->tmp_fd, gc) != 0) gc[0] = '\0';
    free(b);
}

static void finish_gc(srv_store_t *s, const char *gc) {
    if (gc[0]) rm_tree_at(s->tmp_fd, gc, 2);
}

static void fill_desc(const blob_t *b, const entry_t *e, srv_store_desc_t *d) {
    memset(d, 0, sizeof *d);
    if (e) {
        memcpy(d->name, e->name, sizeof d->name);
        d->pinned = e->pinned;
    }
    snprintf(d->version, sizeof d->version, "sha256:%s", b->hex);
    d->created = b->created;
    d->config_bytes = b->size[0];
    d->weights_bytes = b->size[1];
    d->bytes = b->size[0] + b->size[1];
}

/* ---- files: manifest and name files ---- */

static int format_manifest(const char *hex, const int64_t size[2], time_t created, char *buf,
                           size_t cap) {
    return snprintf(buf, cap,
                    "loramux-blob 1\nversion sha256:%s\nconfig_bytes %" PRId64
                    "\nweights_bytes %" PRId64 "\ncreated %lld\n",
                    hex, size[0], size[1], (long long)created);
}

/* Reads and checks blobs/<hex>: manifest consistent with the name, both files regular and of
 * the manifest's sizes. Returns 0 and fills b, or -1 with why filled. */
static int load_blob(const srv_store_t *s, const char *hex, blob_t *b, char *why, size_t cap) {
    char path[HEX_LEN + 32], buf[512];
    snprintf(path, sizeof path, "%s/manifest", hex);
    int fd = openat(s->blobs_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        snprintf(why, cap, "%s", errno == ENOENT ? "is missing" : strerror(errno));
        return -1;
    }
    ssize_t k = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (k <= 0) {
        snprintf(why, cap, "has an unreadable manifest");
        return -1;
    }
    buf[k] = '\0';
    char vhex[HEX_LEN + 2] = "";
    long long cs = -1, ws = -1, created = -1;
    int fmt = 0;
    if (sscanf(buf,
               "loramux-blob %d\nversion sha256:%65s\nconfig_bytes %lld\nweights_bytes %lld\n"
               "created %lld",
               &fmt, vhex, &cs, &ws, &created) != 5 ||
        fmt != 1 || strcmp(vhex, hex) != 0 || cs <= 0 || ws <= 0 || created < 0) {
        snprintf(why, cap, "has a malformed manifest");
        return -1;
    }
    int64_t want[2] = {cs, ws};
    for (int p = 0; p < 2; p++) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", hex, k_part_file[p]);
        if (fstatat(s->blobs_fd, path, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            snprintf(why, cap, "has no %s (%s)", k_part_file[p], strerror(errno));
            return -1;
        }
        if (!S_ISREG(st.st_mode) || (int64_t)st.st_size != want[p]) {
            snprintf(why, cap, "has %s of %lld bytes, manifest says %lld", k_part_file[p],
                     (long long)st.st_size, (long long)want[p]);
            return -1;
        }
    }
    memset(b, 0, sizeof *b);
    memcpy(b->hex, hex, HEX_LEN + 1);
    b->size[0] = cs;
    b->size[1] = ws;
    b->created = (time_t)created;
    return 0;
}

/* names/<name> holds "sha256:<hex>\n" then "pinned\n" when pinned. */
static int parse_name_file(const char *buf, size_t len, char *hex, int *pinned) {
    const size_t vl = 7 + HEX_LEN + 1;
    if (len < vl || memcmp(buf, "sha256:", 7) != 0 || !is_hex64(buf + 7) || buf[vl - 1] != '\n')
        return -1;
    memcpy(hex, buf + 7, HEX_LEN);
    hex[HEX_LEN] = '\0';
    if (len == vl) *pinned = 0;
    else if (len == vl + 7 && memcmp(buf + vl, "pinned\n", 7) == 0) *pinned = 1;
    else return -1;
    return 0;
}

/* Writes a small file into tmp/ (O_EXCL, fsynced); *tmpname receives its name. */
static int write_tmp_file(srv_store_t *s, const char *prefix, const void *data, size_t n,
                          char *tmpname) {
    snprintf(tmpname, TMPNAME_CAP, "%s-%" PRIu64, prefix, next_seq(s));
    int fd = openat(s->tmp_fd, tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return -errno;
    int rc = write_all(fd, data, n);
    if (!rc) rc = do_fsync(s, fd);
    if (close(fd) != 0 && !rc) rc = -errno;
    if (rc) unlinkat(s->tmp_fd, tmpname, 0);
    return rc;
}

/* Replaces names/<name> atomically: temporary file in tmp/, fsync, rename, fsync names/.
 * Caller holds wmu. */
static int write_name_file(srv_store_t *s, const char *name, const char *hex, int pinned,
                           llm_error_t *err) {
    char buf[128], tmp[TMPNAME_CAP];
    int len = snprintf(buf, sizeof buf, "sha256:%s\n%s", hex, pinned ? "pinned\n" : "");
    int rc = write_tmp_file(s, "name", buf, (size_t)len, tmp);
    if (rc) return sys_fail(err, -rc, "cannot write", "tmp/name-*");
    crash_point(s, SRV_STORE_CP_NAME_TMP);
    if (renameat(s->tmp_fd, tmp, s->names_fd, name) != 0) {
        rc = -errno;
        unlinkat(s->tmp_fd, tmp, 0);
        return llm_err_set(err, rc, "adapter store: cannot rename into names/%s: %s", name,
                           strerror(-rc));
    }
    crash_point(s, SRV_STORE_CP_NAME_RENAMED);
    /* The new mapping is in place; if names/ cannot be synced it may not survive a power
     * loss, which the caller reports, but memory follows the file system either way. */
    rc = do_fsync(s, s->names_fd);
    crash_point(s, SRV_STORE_CP_DONE);
    if (rc) return sys_fail(err, -rc, "cannot fsync", "names/");
    return 0;
}

/* Writes meta.json into blobs/<hex>/ atomically. The blob must be held or reserved. */
static int write_meta(srv_store_t *s, const char *hex, const char *json, llm_error_t *err) {
    char tmp[TMPNAME_CAP], dst[HEX_LEN + 16];
    int rc = write_tmp_file(s, "meta", json, strlen(json), tmp);
    if (rc) return sys_fail(err, -rc, "cannot write", "tmp/meta-*");
    snprintf(dst, sizeof dst, "%s/meta.json", hex);
    if (renameat(s->tmp_fd, tmp, s->blobs_fd, dst) != 0) {
        rc = -errno;
        unlinkat(s->tmp_fd, tmp, 0);
        return llm_err_set(err, rc, "adapter store: cannot rename into blobs/%s: %s", dst,
                           strerror(-rc));
    }
    if ((rc = fsync_dir_at(s, s->blobs_fd, hex)))
        return llm_err_set(err, rc, "adapter store: cannot fsync blobs/%s: %s", hex,
                           strerror(-rc));
    return 0;
}

/* ---- names and versions ---- */

int srv_store_check_name(const char *name, llm_error_t *err) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > SRV_STORE_NAME_MAX)
        return llm_err_set(err, LLM_EINVAL, "adapter name must be 1 to %d characters (got %zu)",
                           SRV_STORE_NAME_MAX, n);
    if (name[0] == '.')
        return llm_err_set(err, LLM_EINVAL, "adapter name must not start with '.'");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-')) {
            char shown[8];
            if (c >= 0x20 && c < 0x7f) snprintf(shown, sizeof shown, "'%c'", c);
            else snprintf(shown, sizeof shown, "0x%02x", c);
            return llm_err_set(err, LLM_EINVAL,
                               "adapter name contains %s at position %zu; allowed are letters, "
                               "digits, '.', '_' and '-'",
                               shown, i);
        }
    }
    if (strstr(name, ".."))
        return llm_err_set(err, LLM_EINVAL, "adapter name must not contain \"..\"");
    return 0;
}

int srv_store_check_version(const char *version, llm_error_t *err) {
    if (!version || strlen(version) != SRV_STORE_VERSION_LEN ||
        memcmp(version, "sha256:", 7) != 0 || !is_hex64(version + 7))
        return llm_err_set(err, LLM_EINVAL,
                           "version must be \"sha256:\" followed by 64 lowercase hex digits");
    return 0;
}

/* ---- open / close ---- */

typedef struct {
    entry_t *e;
    char hex[HEX_LEN + 1];
} pending_t;

static int cmp_pending(const void *a, const void *b) {
    return strcmp(((const pending_t *)a)->hex, ((const pending_t *)b)->hex);
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp((*(entry_t *const *)a)->name, (*(entry_t *const *)b)->name);
}

static int open_dir_at(int dirfd, const char *name, int *out) {
    if (mkdirat(dirfd, name, 0755) != 0 && errno != EEXIST) return -errno;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    *out = fd;
    return 0;
}

/* Opens dirfd's directory for listing without moving dirfd's own position. */
static DIR *list_dir(int dirfd) {
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return NULL;
    DIR *d = fdopendir(fd);
    if (!d) close(fd);
    return d;
}

static int is_dot(const char *n) {
    return strcmp(n, ".") == 0 || strcmp(n, "..") == 0;
}

static int clear_tmp(srv_store_t *s) {
    DIR *d = list_dir(s->tmp_fd);
    if (!d) return -errno;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (is_dot(de->d_name)) continue;
        int r = rm_tree_at(s->tmp_fd, de->d_name, 3);
        if (r && !rc) rc = r;
        if (!r) s->open_stats.tmp_removed++;
    }
    closedir(d);
    return rc;
}

/* Reads names/: every valid name file becomes a pending entry (name + hex). Broken name
 * files are removed (*changed = 1). */
static int scan_names(srv_store_t *s, pending_t **out, size_t *n_out, int *changed) {
    DIR *d = list_dir(s->names_fd);
    if (!d) return -errno;
    pending_t *p = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        if (is_dot(nm)) continue;
        char shown[SRV_STORE_NAME_MAX + 8];
        printable(nm, shown, sizeof shown);
        llm_error_t e;
        if (srv_store_check_name(nm, &e)) {
            note(s, "names/%s: not a valid adapter name (%s); ignored", shown, e.msg);
            continue;
        }
        char buf[128], hex[HEX_LEN + 1];
        int pinned = 0;
        ssize_t k = -1;
        int fd = openat(s->names_fd, nm, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            k = read(fd, buf, sizeof buf);
            close(fd);
        }
        if (k < 0 || parse_name_file(buf, (size_t)k, hex, &pinned) != 0) {
            note(s, "name \"%s\": unreadable or malformed name file; name removed", shown);
            unlinkat(s->names_fd, nm, 0);
            s->open_stats.dropped_names++;
            *changed = 1;
            continue;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            pending_t *np = realloc(p, nc * sizeof *np);
            if (!np) {
                rc = LLM_ENOMEM;
                break;
            }
            p = np;
            cap = nc;
        }
        entry_t *e2 = calloc(1, sizeof *e2);
        if (!e2) {
            rc = LLM_ENOMEM;
            break;
        }
        memcpy(e2->name, nm, strlen(nm) + 1);
        e2->pinned = pinned;
        p[n].e = e2;
        memcpy(p[n].hex, hex, sizeof p[n].hex);
        n++;
    }
    closedir(d);
    *out = p;
    *n_out = n;
    return rc;
}

/* Builds the index from the pending names: one blob_t per distinct hex, checked on disk.
 * Names whose blob is not complete are removed. */
static int build_index(srv_store_t *s, pending_t *p, size_t n, int *changed) {
    if (n) qsort(p, n, sizeof *p, cmp_pending);
    s->cap = n ? n : 1;
    s->capb = n ? n : 1;
    s->e = malloc(s->cap * sizeof *s->e);
    s->b = malloc(s->capb * sizeof *s->b);
    if (!s->e || !s->b) return LLM_ENOMEM;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && strcmp(p[j].hex, p[i].hex) == 0) j++;
        blob_t tmp;
        char why[256];
        if (load_blob(s, p[i].hex, &tmp, why, sizeof why) != 0) {
            for (size_t k = i; k < j; k++) {
                note(s, "name \"%s\": blob sha256:%s %s; name removed", p[k].e->name, p[i].hex,
                     why);
                unlinkat(s->names_fd, p[k].e->name, 0);
                s->open_stats.dropped_names++;
                free(p[k].e);
                p[k].e = NULL;
            }
            *changed = 1;
            i = j;
            continue;
        }
        blob_t *b = malloc(sizeof *b);
        if (!b) return LLM_ENOMEM;
        *b = tmp;
        b->refs = (int)(j - i);
        s->b[s->nb++] = b; /* p is sorted by hex, so s->b is too */
        for (size_t k = i; k < j; k++) {
            p[k].e->blob = b;
            s->e[s->n++] = p[k].e;
            p[k].e = NULL;
        }
        i = j;
    }
    if (s->n) qsort(s->e, s->n, sizeof *s->e, cmp_entry);
    return 0;
}

/* Removes everything in blobs/ that the index does not know. */
static int gc_blobs_at_open(srv_store_t *s) {
    DIR *d = list_dir(s->blobs_fd);
    if (!d) return -errno;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        if (is_dot(nm)) continue;
        if (strlen(nm) == HEX_LEN && is_hex64(nm) && find_blob(s, nm, NULL)) continue;
        int r = rm_tree_at(s->blobs_fd, nm, 2);
        if (r && !rc) rc = r;
        if (!r) s->open_stats.gc_blobs++;
    }
    closedir(d);
    return rc;
}

int srv_store_open(const char *root, int64_t max_upload_bytes, srv_store_t **out,
                   llm_error_t *err) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    *out = NULL;
    if (!root || !*root) return llm_err_set(err, LLM_EINVAL, "adapter store: empty root path");
    if (strlen(root) > PATH_CAP - 200)
        return llm_err_set(err, -ENAMETOOLONG, "adapter store: root path too long");
    srv_store_t *s = calloc(1, sizeof *s);
    if (!s) return llm_err_set(err, LLM_ENOMEM, "adapter store: out of memory");
    s->root_fd = s->blobs_fd = s->names_fd = s->tmp_fd = s->lock_fd = -1;
    s->max_upload = max_upload_bytes > 0 ? max_upload_bytes : 0;
    s->fsync_on = 1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->wmu, NULL);
    pending_t *p = NULL;
    size_t np = 0;
    int rc, changed = 0;
    if (mkdir(root, 0755) != 0 && errno != EEXIST) {
        rc = sys_fail(err, errno, "cannot create", root);
        goto fail;
    }
    /* Absolute, so that the paths handed out stay valid if the process changes directory. */
    if (!(s->root = realpath(root, NULL))) {
        rc = sys_fail(err, errno, "cannot resolve", root);
        goto fail;
    }
    if (strlen(s->root) > PATH_CAP - 200) {
        rc = llm_err_set(err, -ENAMETOOLONG, "adapter store: root path too long");
        goto fail;
    }
    if ((s->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        rc = sys_fail(err, errno, "cannot open", root);
        goto fail;
    }
    s->lock_fd = openat(s->root_fd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0) {
        rc = sys_fail(err, errno, "cannot open the lock file in", root);
        goto fail;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        rc = llm_err_set(err, -e, "adapter store %s: %s", root,
                         e == EWOULDBLOCK ? "in use by another process (LOCK is held)"
                                          : strerror(e));
        goto fail;
    }
    const char *dirs[3] = {"blobs", "names", "tmp"};
    int *fds[3] = {&s->blobs_fd, &s->names_fd, &s->tmp_fd};
    for (int i = 0; i < 3; i++) {
        if ((rc = open_dir_at(s->root_fd, dirs[i], fds[i]))) {
            rc = llm_err_set(err, rc, "adapter store: cannot create or open %s/%s: %s", root,
                             dirs[i], strerror(-rc));
            goto fail;
        }
    }
    if ((rc = clear_tmp(s))) {
        rc = llm_err_set(err, rc, "adapter store: cannot empty %s/tmp: %s", root, strerror(-rc));
        goto fail;
    }
    if ((rc = scan_names(s, &p, &np, &changed))) {
        rc = llm_err_set(err, rc, "adapter store: cannot read %s/names: %s", root,
                         rc == LLM_ENOMEM ? "out of memory" : strerror(-rc));
        goto fail;
    }
    if ((rc = build_index(s, p, np, &changed))) {
        rc = llm_err_set(err, rc, "adapter store: out of memory indexing %zu names", np);
        goto fail;
    }
    free(p);
    p = NULL;
    if (changed && (rc = do_fsync(s, s->names_fd))) {
        rc = sys_fail(err, -rc, "cannot fsync", "names/");
        goto fail;
    }
    if ((rc = gc_blobs_at_open(s))) {
        rc = llm_err_set(err, rc, "adapter store: cannot clean %s/blobs: %s", root,
                         strerror(-rc));
        goto fail;
    }
    if (s->notes_more) {
        s->notes_lines = 0; /* let the summary line through */
        note(s, "... and %zu more", s->notes_more);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    s->open_stats.open_ms =
        (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    *out = s;
    return 0;
fail:
    for (size_t i = 0; i < np; i++) free(p[i].e);
    free(p);
    srv_store_free(s);
    return rc;
}

void srv_store_free(srv_store_t *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free(s->e[i]);
    for (size_t i = 0; i < s->nb; i++) free(s->b[i]);
    free(s->e);
    free(s->b);
    int fds[5] = {s->blobs_fd, s->names_fd, s->tmp_fd, s->lock_fd, s->root_fd};
    for (int i = 0; i < 5; i++)
        if (fds[i] >= 0) close(fds[i]); /* closing lock_fd releases the flock */
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->wmu);
    free(s->notes);
    free(s->root);
    free(s);
}

void srv_store_set_fsync(srv_store_t *s, int on) {
    s->fsync_on = on != 0;
}

const char *srv_store_open_notes(const srv_store_t *s) {
    return s->notes ? s->notes : "";
}

void srv_store_stats(srv_store_t *s, srv_store_stats_t *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->open_stats;
    out->names = s->n;
    out->blobs = s->nb;
    out->holds = s->holds;
    out->blob_bytes = 0;
    for (size_t i = 0; i < s->nb; i++) out->blob_bytes += s->b[i]->size[0] + s->b[i]->size[1];
    pthread_mutex_unlock(&s->mu);
}

/* ---- uploads ---- */

srv_store_upload_t *srv_store_begin(srv_store_t *s, llm_error_t *err) {
    srv_store_upload_t *up = calloc(1, sizeof *up);
    if (!up) {
        llm_err_set(err, LLM_ENOMEM, "adapter store: out of memory");
        return NULL;
    }
    up->s = s;
    up->fd[0] = up->fd[1] = -1;
    char dir[PATH_CAP];
    snprintf(dir, sizeof dir, "%s/tmp/up-XXXXXX", s->root);
    if (!mkdtemp(dir)) {
        sys_fail(err, errno, "cannot create", dir);
        free(up);
        return NULL;
    }
    snprintf(up->dir, sizeof up->dir, "%s", strrchr(dir, '/') + 1);
    for (int p = 0; p < 2; p++) {
        int k = snprintf(up->path[p], PATH_CAP, "%s/%s", dir, k_part_file[p]);
        errno = ENAMETOOLONG; /* cannot happen: the root's length is checked at open */
        if (k > 0 && k < PATH_CAP)
            up->fd[p] = open(up->path[p], O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (up->fd[p] < 0) {
            sys_fail(err, errno, "cannot create", up->path[p]);
            srv_store_abort(up);
            return NULL;
        }
    }
    return up;
}

static int upload_fail(srv_store_upload_t *up, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int upload_fail(srv_store_upload_t *up, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(up->errmsg, sizeof up->errmsg, fmt, ap);
    va_end(ap);
    return up->err = code;
}

int srv_store_write(srv_store_upload_t *up, int part, const void *data, size_t n) {
    if (part != SRV_STORE_CONFIG && part != SRV_STORE_WEIGHTS) return LLM_EINVAL;
    if (up->err) return up->err;
    if (n == 0) return 0;
    int64_t max = up->s->max_upload, have = up->bytes[0] + up->bytes[1];
    if (max > 0 && (n > (uint64_t)max || have > max - (int64_t)n))
        return upload_fail(up, LLM_ERANGE, "upload exceeds the limit of %lld bytes",
                           (long long)max);
    int rc;
    if (part == SRV_STORE_WEIGHTS && up->ver_state == 0) {
        /* The config is (normally) complete once the weights begin: hash it now so that the
         * weights can be hashed as they stream in. */
        sha256_init(&up->ver);
        hash_prefix(&up->ver, up->bytes[0]);
        if ((rc = hash_fd(&up->ver, up->fd[0], up->bytes[0])))
            return upload_fail(up, rc, "cannot read back %s: %s", up->path[0], strerror(-rc));
        up->ver_state = 1;
    } else if (part == SRV_STORE_CONFIG && up->ver_state == 1) {
        up->ver_state = 2; /* config changed after the weights began: re-read at commit */
    }
    if ((rc = write_all(up->fd[part], data, n)))
        return upload_fail(up, rc, "cannot write %s: %s", up->path[part], strerror(-rc));
    if (part == SRV_STORE_WEIGHTS && up->ver_state == 1) sha256_update(&up->ver, n, data);
    up->bytes[part] += (int64_t)n;
    return 0;
}

const char *srv_store_upload_path(const srv_store_upload_t *up, int part) {
    return part == SRV_STORE_CONFIG || part == SRV_STORE_WEIGHTS ? up->path[part] : NULL;
}

int64_t srv_store_upload_bytes(const srv_store_upload_t *up, int part) {
    return part == SRV_STORE_CONFIG || part == SRV_STORE_WEIGHTS ? up->bytes[part] : -1;
}

int srv_store_upload_set_meta(srv_store_upload_t *up, const char *json) {
    if (strlen(json) > SRV_STORE_META_MAX) return LLM_ERANGE;
    char *m = strdup(json);
    if (!m) return LLM_ENOMEM;
    free(up->meta);
    up->meta = m;
    return 0;
}

void srv_store_abort(srv_store_upload_t *up) {
    if (!up) return;
    for (int p = 0; p < 2; p++)
        if (up->fd[p] >= 0) close(up->fd[p]);
    if (up->dir[0]) rm_tree_at(up->s->tmp_fd, up->dir, 2);
    free(up->meta);
    free(up);
}

/* Finishes the staging directory: version computed, parts and meta fsynced, manifest written
 * last, directory fsynced. Fills hex and *created. */
static int stage(srv_store_upload_t *up, char *hex, time_t *created, llm_error_t *err) {
    srv_store_t *s = up->s;
    int rc;
    if (up->ver_state == 1) {
        uint8_t d[SHA256_DIGEST_SIZE];
        sha256_digest(&up->ver, sizeof d, d);
        to_hex(d, hex);
    } else if ((rc = hash_files(up->fd[0], up->bytes[0], up->fd[1], up->bytes[1], hex))) {
        return sys_fail(err, -rc, "cannot read back", up->path[1]);
    }
    for (int p = 0; p < 2; p++) {
        rc = do_fsync(s, up->fd[p]);
        if (close(up->fd[p]) != 0 && !rc) rc = -errno;
        up->fd[p] = -1;
        if (rc) return sys_fail(err, -rc, "cannot fsync", up->path[p]);
    }
    char rel[TMPNAME_CAP + 32];
    int dfd = openat(s->tmp_fd, up->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return sys_fail(err, errno, "cannot open", up->dir);
    if (up->meta) {
        int fd = openat(dfd, "meta.json", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        rc = fd < 0 ? -errno : write_all(fd, up->meta, strlen(up->meta));
        if (!rc) rc = do_fsync(s, fd);
        if (fd >= 0 && close(fd) != 0 && !rc) rc = -errno;
        if (rc) {
            close(dfd);
            snprintf(rel, sizeof rel, "tmp/%s/meta.json", up->dir);
            return sys_fail(err, -rc, "cannot write", rel);
        }
    }
    char man[512];
    *created = time(NULL);
    int len = format_manifest(hex, up->bytes, *created, man, sizeof man);
    int fd = openat(dfd, "manifest", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    rc = fd < 0 ? -errno : write_all(fd, man, (size_t)len);
    if (!rc) rc = do_fsync(s, fd);
    if (fd >= 0 && close(fd) != 0 && !rc) rc = -errno;
    if (!rc) rc = do_fsync(s, dfd);
    close(dfd);
    if (rc) {
        snprintf(rel, sizeof rel, "tmp/%s", up->dir);
        return sys_fail(err, -rc, "cannot write the manifest in", rel);
    }
    return 0;
}

/* Moves the staging directory to blobs/<hex> and makes that durable. Caller holds wmu and
 * has checked that hex is not in the index. */
static int publish_blob(srv_store_upload_t *up, const char *hex, llm_error_t *err) {
    srv_store_t *s = up->s;
    if (renameat(s->tmp_fd, up->dir, s->blobs_fd, hex) != 0) {
        if (errno != ENOTEMPTY && errno != EEXIST)
            return llm_err_set(err, -errno, "adapter store: cannot rename tmp/%s to blobs/%s: %s",
                               up->dir, hex, strerror(errno));
        /* A directory the index does not know (a failed rename during an earlier delete):
         * move it out of the way and retry once. */
        char stray[TMPNAME_CAP];
        snprintf(stray, sizeof stray, "stray-%" PRIu64, next_seq(s));
        if (renameat(s->blobs_fd, hex, s->tmp_fd, stray) == 0) rm_tree_at(s->tmp_fd, stray, 2);
        if (renameat(s->tmp_fd, up->dir, s->blobs_fd, hex) != 0)
            return llm_err_set(err, -errno, "adapter store: cannot rename tmp/%s to blobs/%s: %s",
                               up->dir, hex, strerror(errno));
    }
    up->dir[0] = '\0'; /* consumed */
    crash_point(s, SRV_STORE_CP_BLOB_RENAMED);
    int rc = do_fsync(s, s->blobs_fd);
    if (rc) {
        /* Take it back out: a name must never point at a blob that might not survive. */
        snprintf(up->dir, sizeof up->dir, "unsynced-%" PRIu64, next_seq(s));
        if (renameat(s->blobs_fd, hex, s->tmp_fd, up->dir) != 0) up->dir[0] = '\0';
        return sys_fail(err, -rc, "cannot fsync", "blobs/");
    }
    crash_point(s, SRV_STORE_CP_BLOB_DURABLE);
    return 0;
}

int srv_store_commit(srv_store_upload_t *up, const char *name, srv_store_desc_t *out_desc,
                     int *created_new_version, llm_error_t *err) {
    srv_store_t *s = up->s;
    char hex[HEX_LEN + 1], gc[TMPNAME_CAP] = "";
    time_t created = 0;
    blob_t *nb = NULL, *blob = NULL;
    entry_t *ne = NULL;
    int rc, have_wmu = 0;
    if (created_new_version) *created_new_version = 0;
    if ((rc = srv_store_check_name(name, err))) goto out;
    if (up->err) {
        rc = llm_err_set(err, up->err, "adapter upload \"%s\": %s", name, up->errmsg);
        goto out;
    }
    for (int p = 0; p < 2; p++) {
        if (up->bytes[p] == 0) {
            rc = llm_err_set(err, LLM_EINVAL, "adapter upload \"%s\": %s is missing or empty",
                             name, k_part_file[p]);
            goto out;
        }
    }
    if ((rc = stage(up, hex, &created, err))) goto out;
    crash_point(s, SRV_STORE_CP_STAGED);
    nb = calloc(1, sizeof *nb);
    ne = calloc(1, sizeof *ne);
    if (!nb || !ne) {
        rc = llm_err_set(err, LLM_ENOMEM, "adapter store: out of memory");
        goto out;
    }

    pthread_mutex_lock(&s->wmu);
    have_wmu = 1;
    pthread_mutex_lock(&s->mu);
    rc = reserve_locked(s);
    if (!rc && (blob = find_blob(s, hex, NULL))) blob->refs++; /* reserve the existing copy */
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        rc = llm_err_set(err, rc, "adapter store: out of memory");
        goto out;
    }
    if (!blob) {
        if ((rc = publish_blob(up, hex, err))) goto out;
        memcpy(nb->hex, hex, sizeof nb->hex);
        nb->size[0] = up->bytes[0];
        nb->size[1] = up->bytes[1];
        nb->created = created;
        nb->refs = 1; /* the reservation */
        pthread_mutex_lock(&s->mu);
        insert_blob_locked(s, nb);
        pthread_mutex_unlock(&s->mu);
        blob = nb;
        nb = NULL;
    } else if (up->meta) {
        char path[HEX_LEN + 16];
        snprintf(path, sizeof path, "%s/meta.json", hex);
        if (faccessat(s->blobs_fd, path, F_OK, 0) != 0 && errno == ENOENT &&
            (rc = write_meta(s, hex, up->meta, err)))
            goto release;
    }

    /* Only wmu holders change entries, so reading this one without mu is safe. */
    pthread_mutex_lock(&s->mu);
    long i = find_entry(s, name, NULL);
    entry_t *e = i >= 0 ? s->e[i] : NULL;
    pthread_mutex_unlock(&s->mu);
    if (e && e->blob == blob) { /* same bytes under the same name: nothing changes */
        pthread_mutex_lock(&s->mu);
        blob->refs--; /* the name still holds it */
        if (out_desc) fill_desc(blob, e, out_desc);
        pthread_mutex_unlock(&s->mu);
        goto out;
    }
    if ((rc = write_name_file(s, name, hex, e ? e->pinned : 0, err))) goto release;
    pthread_mutex_lock(&s->mu);
    if (e) { /* the reservation becomes the name's reference */
        blob_t *old = e->blob;
        e->blob = blob;
        old->refs--;
        maybe_drop_blob_locked(s, old, gc);
    } else {
        size_t pos = 0;
        find_entry(s, name, &pos);
        memcpy(ne->name, name, strlen(name) + 1);
        ne->blob = blob;
        memmove(s->e + pos + 1, s->e + pos, (s->n - pos) * sizeof *s->e);
        s->e[pos] = e = ne;
        s->n++;
        ne = NULL;
    }
    if (out_desc) fill_desc(blob, e, out_desc);
    pthread_mutex_unlock(&s->mu);
    if (created_new_version) *created_new_version = 1;
    goto out;

release: /* drop the reservation; the blob goes if nothing else wants it */
    pthread_mutex_lock(&s->mu);
    blob->refs--;
    maybe_drop_blob_locked(s, blob, gc);
    pthread_mutex_unlock(&s->mu);
out:
    if (have_wmu) pthread_mutex_unlock(&s->wmu);
    finish_gc(s, gc);
    free(nb);
    free(ne);
    srv_store_abort(up); /* closes what is open, removes the staging copy if still there */
    return rc;
}

/* ---- queries ---- */

int srv_store_get(srv_store_t *s, const char *name, srv_store_desc_t *out) {
    if (srv_store_check_name(name, NULL)) return LLM_EINVAL;
    pthread_mutex_lock(&s->mu);
    long i = find_entry(s, name, NULL);
    if (i >= 0) fill_desc(s->e[i]->blob, s->e[i], out);
    pthread_mutex_unlock(&s->mu);
    return i >= 0 ? 0 : LLM_ENOTFOUND;
}

int srv_store_acquire(srv_store_t *s, const char *name, srv_store_desc_t *out) {
    if (srv_store_check_name(name, NULL)) return LLM_EINVAL;
    pthread_mutex_lock(&s->mu);
    long i = find_entry(s, name, NULL);
    if (i >= 0) {
        fill_desc(s->e[i]->blob, s->e[i], out);
        s->e[i]->blob->holds++;
        s->holds++;
    }
    pthread_mutex_unlock(&s->mu);
    return i >= 0 ? 0 : LLM_ENOTFOUND;
}

int srv_store_get_version(srv_store_t *s, const char *version, srv_store_desc_t *out) {
    if (srv_store_check_version(version, NULL)) return LLM_EINVAL;
    pthread_mutex_lock(&s->mu);
    blob_t *b = find_blob(s, version + 7, NULL);
    if (b) fill_desc(b, NULL, out);
    pthread_mutex_unlock(&s->mu);
    return b ? 0 : LLM_ENOTFOUND;
}

int srv_store_list(srv_store_t *s, const char *after, size_t offset, size_t limit,
                   srv_store_desc_t *out, size_t *n_out, size_t *total) {
    pthread_mutex_lock(&s->mu);
    size_t start = 0;
    if (after && *after) {
        long i = find_entry(s, after, &start);
        if (i >= 0) start = (size_t)i + 1;
    }
    start = offset > s->n - start ? s->n : start + offset;
    size_t k = 0;
    for (; k < limit && start + k < s->n; k++) fill_desc(s->e[start + k]->blob, s->e[start + k],
                                                         &out[k]);
    *n_out = k;
    if (total) *total = s->n;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int srv_store_delete(srv_store_t *s, const char *name, int flags, llm_error_t *err) {
    int rc;
    if ((rc = srv_store_check_name(name, err))) return rc;
    char gc[TMPNAME_CAP] = "";
    pthread_mutex_lock(&s->wmu);
    pthread_mutex_lock(&s->mu);
    long i = find_entry(s, name, NULL);
    int pinned = i >= 0 && s->e[i]->pinned;
    pthread_mutex_unlock(&s->mu);
    if (i < 0) {
        rc = llm_err_set(err, LLM_ENOTFOUND, "adapter \"%s\" not found", name);
        goto out;
    }
    if ((flags & SRV_STORE_DEL_UNPINNED) && pinned) {
        rc = llm_err_set(err, -EBUSY, "adapter \"%s\" is pinned; unpin it first", name);
        goto out;
    }
    if (unlinkat(s->names_fd, name, 0) != 0) {
        rc = llm_err_set(err, -errno, "adapter store: cannot remove names/%s: %s", name,
                         strerror(errno));
        goto out;
    }
    /* The name is gone from the file system even if names/ cannot be synced; memory follows. */
    if ((rc = do_fsync(s, s->names_fd))) rc = sys_fail(err, -rc, "cannot fsync", "names/");
    pthread_mutex_lock(&s->mu);
    i = find_entry(s, name, NULL);
    entry_t *e = s->e[i];
    memmove(s->e + i, s->e + i + 1, (s->n - (size_t)i - 1) * sizeof *s->e);
    s->n--;
    e->blob->refs--;
    maybe_drop_blob_locked(s, e->blob, gc);
    pthread_mutex_unlock(&s->mu);
    free(e);
out:
    pthread_mutex_unlock(&s->wmu);
    finish_gc(s, gc);
    return rc;
}

int srv_store_pin(srv_store_t *s, const char *name, int on, llm_error_t *err) {
    int rc;
    if ((rc = srv_store_check_name(name, err))) return rc;
    on = on != 0;
    pthread_mutex_lock(&s->wmu);
    pthread_mutex_lock(&s->mu);
    long i = find_entry(s, name, NULL);
    entry_t *e = i >= 0 ? s->e[i] : NULL;
    pthread_mutex_unlock(&s->mu);
    if (!e) rc = llm_err_set(err, LLM_ENOTFOUND, "adapter \"%s\" not found", name);
    else if (e->pinned != on && !(rc = write_name_file(s, name, e->blob->hex, on, err))) {
        pthread_mutex_lock(&s->mu);
        e->pinned = on;
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&s->wmu);
    return rc;
}

int srv_store_paths(srv_store_t *s, const char *version, char *config_path, char *st_path,
                    size_t cap) {
    if (srv_store_check_version(version, NULL)) return LLM_EINVAL;
    pthread_mutex_lock(&s->mu);
    int found = find_blob(s, version + 7, NULL) != NULL;
    pthread_mutex_unlock(&s->mu);
    if (!found) return LLM_ENOTFOUND;
    char *out[2] = {config_path, st_path};
    for (int p = 0; p < 2; p++) {
        int k = snprintf(out[p], cap, "%s/blobs/%s/%s", s->root, version + 7, k_part_file[p]);
        if (k < 0 || (size_t)k >= cap) return -ENAMETOOLONG;
    }
    return 0;
}

int srv_store_blob_hold(srv_store_t *s, const char *version) {
    if (srv_store_check_version(version, NULL)) return LLM_EINVAL;
    pthread_mutex_lock(&s->mu);
    blob_t *b = find_blob(s, version + 7, NULL);
    if (b) {
        b->holds++;
        s->holds++;
    }
    pthread_mutex_unlock(&s->mu);
    return b ? 0 : LLM_ENOTFOUND;
}

void srv_store_blob_release(srv_store_t *s, const char *version) {
    char gc[TMPNAME_CAP] = "";
    if (srv_store_check_version(version, NULL)) {
        assert(!"srv_store_blob_release: not a version");
        return;
    }
    pthread_mutex_lock(&s->mu);
    blob_t *b = find_blob(s, version + 7, NULL);
    assert(b && b->holds > 0);
    if (b && b->holds > 0) {
        b->holds--;
        s->holds--;
        maybe_drop_blob_locked(s, b, gc);
    }
    pthread_mutex_unlock(&s->mu);
    finish_gc(s, gc);
}

int srv_store_set_meta(srv_store_t *s, const char *version, const char *json,
                       llm_error_t *err) {
    int rc;
    if ((rc = srv_store_check_version(version, err))) return rc;
    if (strlen(json) > SRV_STORE_META_MAX)
        return llm_err_set(err, LLM_ERANGE, "adapter metadata exceeds %d bytes",
                           SRV_STORE_META_MAX);
    if (srv_store_blob_hold(s, version))
        return llm_err_set(err, LLM_ENOTFOUND, "version %s not found", version);
    rc = write_meta(s, version + 7, json, err);
    srv_store_blob_release(s, version);
    return rc;
}

int srv_store_get_meta(srv_store_t *s, const char *version, char **json, llm_error_t *err) {
    int rc;
    *json = NULL;
    if ((rc = srv_store_check_version(version, err))) return rc;
    if (srv_store_blob_hold(s, version))
        return llm_err_set(err, LLM_ENOTFOUND, "version %s not found", version);
    char path[HEX_LEN + 16];
    snprintf(path, sizeof path, "%s/meta.json", version + 7);
    int fd = openat(s->blobs_fd, path, O_RDONLY | O_CLOEXEC);
    char *buf = NULL;
    if (fd < 0) {
        rc = errno == ENOENT ? llm_err_set(err, LLM_ENOTFOUND, "version %s has no metadata",
                                           version)
                             : sys_fail(err, errno, "cannot open", path);
        goto out;
    }
    if (!(buf = malloc(SRV_STORE_META_MAX + 2))) {
        rc = llm_err_set(err, LLM_ENOMEM, "adapter store: out of memory");
        goto out;
    }
    size_t len = 0;
    for (;;) {
        ssize_t k = read(fd, buf + len, SRV_STORE_META_MAX + 1 - len);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            rc = sys_fail(err, errno, "cannot read", path);
            goto out;
        }
        if (k == 0) break;
        len += (size_t)k;
        if (len > SRV_STORE_META_MAX) {
            rc = llm_err_set(err, LLM_EFORMAT, "blobs/%s is larger than %d bytes", path,
                             SRV_STORE_META_MAX);
            goto out;
        }
    }
    buf[len] = '\0';
    *json = buf;
    buf = NULL;
out:
    free(buf);
    if (fd >= 0) close(fd);
    srv_store_blob_release(s, version);
    return rc;
}

int srv_store_verify(srv_store_t *s, const char *version, llm_error_t *err) {
    int rc;
    if ((rc = srv_store_check_version(version, err))) return rc;
    srv_store_desc_t d;
    pthread_mutex_lock(&s->mu);
    blob_t *b = find_blob(s, version + 7, NULL);
    if (b) {
        fill_desc(b, NULL, &d);
        b->holds++;
        s->holds++;
    }
    pthread_mutex_unlock(&s->mu);
    if (!b) return llm_err_set(err, LLM_ENOTFOUND, "version %s not found", version);
    int fd[2] = {-1, -1};
    char path[HEX_LEN + 48], hex[HEX_LEN + 1];
    int64_t size[2] = {d.config_bytes, d.weights_bytes};
    for (int p = 0; p < 2 && !rc; p++) {
        snprintf(path, sizeof path, "blobs/%s/%s", version + 7, k_part_file[p]);
        struct stat st;
        if ((fd[p] = openat(s->blobs_fd, path + 6, O_RDONLY | O_CLOEXEC)) < 0)
            rc = sys_fail(err, errno, "cannot open", path);
        else if (fstat(fd[p], &st) != 0)
            rc = sys_fail(err, errno, "cannot stat", path);
        else if ((int64_t)st.st_size != size[p])
            rc = llm_err_set(err, LLM_EFORMAT, "%s: size %lld, expected %lld", path,
                             (long long)st.st_size, (long long)size[p]);
    }
    if (!rc && (rc = hash_files(fd[0], size[0], fd[1], size[1], hex)))
        rc = sys_fail(err, -rc, "cannot read", version);
    if (!rc && strcmp(hex, version + 7) != 0)
        rc = llm_err_set(err, LLM_EFORMAT, "blob %s: content hashes to sha256:%s", version, hex);
    for (int p = 0; p < 2; p++)
        if (fd[p] >= 0) close(fd[p]);
    srv_store_blob_release(s, version);
    return rc;
}

/* ---- test hooks ---- */

void srv_store__set_crash_hook(srv_store_t *s, void (*fn)(int point, void *arg), void *arg) {
    s->crash_fn = fn;
    s->crash_arg = arg;
}
