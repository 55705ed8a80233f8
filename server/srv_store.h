/* srv_store.h: the adapter registry on disk (uploaded adapters, their versions and names).
 *
 * Layout under the root directory:
 *
 *   root/LOCK                      flock()ed by the process that has the store open
 *   root/blobs/<hex>/              one immutable version, content addressed:
 *       adapter_config.json
 *       adapter_model.safetensors
 *       manifest                   "loramux-blob 1", version, both sizes, created (written last
 *                                  into the staging directory, before the directory is renamed
 *                                  into blobs/, so a blob directory is always complete)
 *       meta.json                  optional, the caller's descriptor fields (method, ranks, ...)
 *   root/names/<name>              "sha256:<hex>\n", then "pinned\n" when pinned
 *   root/tmp/                      uploads in progress, temporary files, blobs being deleted;
 *                                  emptied by srv_store_open
 *
 * Version. version = "sha256:" + lowercase hex of SHA-256 over the canonical bytes:
 *
 *   le64(size of adapter_config.json) || adapter_config.json || adapter_model.safetensors
 *
 * (le64 = the size as 8 bytes, little-endian). The length prefix makes the split between the
 * two files part of the hash, so no two different (config, weights) pairs share a version.
 * It can be recomputed with standard tools:
 *   python3 -c 'import hashlib,struct,sys; c=open(sys.argv[1],"rb").read();
 *     print("sha256:"+hashlib.sha256(struct.pack("<Q",len(c))+c+open(sys.argv[2],"rb").read())
 *     .hexdigest())' adapter_config.json adapter_model.safetensors
 * The hash is computed while the weights stream in when the config part arrives first (the
 * usual multipart order); otherwise srv_store_commit re-reads the files once.
 *
 * Crash safety. An upload is written into root/tmp/up-XXXXXX/, fsynced (files, manifest,
 * directory), then renamed into blobs/<hex> (blobs/ fsynced); only then is names/<name>
 * replaced (temporary file in tmp/, fsync, rename, fsync of names/). So a kill -9 or power
 * loss at any instant leaves each name at its old version or its new one, and a name never
 * points at a partial blob. srv_store_open removes what such a crash can leave behind
 * (tmp/ contents, blobs no name refers to) and verifies that every name points at a complete
 * blob (manifest present and consistent, both files present with the manifest's sizes);
 * a name that does not is dropped (its name file removed) and reported in the open notes.
 * Open does not re-hash blobs (10,000 adapters of several MB each would take minutes); use
 * srv_store_verify for that.
 *
 * Blob lifetime. A blob is deleted (renamed into tmp/, then removed) as soon as no name refers
 * to it and no caller holds it (srv_store_blob_hold / srv_store_acquire). So a request that
 * resolved a name keeps its version's files even if the name moves or is deleted meanwhile.
 *
 * Thread safety: every function may be called from any thread. One mutex protects the
 * in-memory index; a second one serialises the writers of names/ and blobs/ (commit, delete,
 * pin) so that the disk and memory agree on the order of changes. Readers (get, list, paths,
 * hold) never wait for an fsync. The bytes of an upload are written and fsynced with no lock.
 * Only one process may have a root open (LOCK; a second open fails with -EWOULDBLOCK).
 *
 * Errors: 0 or a negative LLM_E* code / -errno, with llm_error_t messages naming the name,
 * version or path where a function takes one.
 */
#ifndef SRV_STORE_H
#define SRV_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "llm_error.h"

#define SRV_STORE_NAME_MAX 100    /* longest adapter name, in bytes */
#define SRV_STORE_VERSION_LEN 71  /* strlen("sha256:") + 64 */
#define SRV_STORE_META_MAX 65536  /* largest meta.json, in bytes */

/* Parts of an upload (srv_store_write). */
#define SRV_STORE_CONFIG 0  /* adapter_config.json */
#define SRV_STORE_WEIGHTS 1 /* adapter_model.safetensors */

/* srv_store_delete flags */
#define SRV_STORE_DEL_UNPINNED 1 /* refuse (-EBUSY) when the name is pinned */

typedef struct srv_store_s srv_store_t;
typedef struct srv_store_upload_s srv_store_upload_t;

typedef struct srv_store_desc_s {
    char name[SRV_STORE_NAME_MAX + 1];       /* "" when describing a bare version */
    char version[SRV_STORE_VERSION_LEN + 1]; /* "sha256:<64 hex>" */
    time_t created;                          /* when this version was first stored */
    int64_t config_bytes, weights_bytes;     /* sizes of the two files */
    int64_t bytes;                           /* config_bytes + weights_bytes */
    int pinned;                              /* the name's pin flag (0 for a bare version) */
} srv_store_desc_t;

typedef struct srv_store_stats_s {
    size_t names, blobs;   /* now */
    int64_t blob_bytes;    /* sum of desc.bytes over the blobs, now */
    size_t holds;          /* outstanding srv_store_blob_hold/acquire, now */
    /* what srv_store_open found and did */
    size_t dropped_names;  /* names removed: blob missing or incomplete, or name file broken */
    size_t gc_blobs;       /* blobs no name referred to, removed */
    size_t tmp_removed;    /* leftovers removed from tmp/ */
    double open_ms;        /* wall time of srv_store_open */
} srv_store_stats_t;

/* ---- open / close ---- */

/* Opens (creating if needed) the store under root: creates root, blobs/, names/, tmp/ and
 * LOCK, takes the lock, empties tmp/, verifies every name (see "Crash safety" above), removes
 * unreferenced blobs and builds the in-memory index. max_upload_bytes bounds the sum of both
 * parts of one upload (0 = unlimited). root is copied (made absolute: the paths the store
 * hands out are absolute).
 * Returns 0 and *out (new, caller frees with srv_store_free()), or -errno / LLM_E* with err
 * naming the path (-EWOULDBLOCK: another process has the store open). Problems that open
 * repaired are not errors: see srv_store_open_notes and srv_store_stats. */
int srv_store_open(const char *root, int64_t max_upload_bytes, srv_store_t **out,
                   llm_error_t *err);

/* Closes the store and releases the lock. Accepts NULL. All uploads must have been committed
 * or aborted; outstanding holds are simply forgotten. */
void srv_store_free(srv_store_t *s);

/* Turns fsync off (on = 0) or back on (default). Without fsync the store is still consistent
 * after a process crash (kill -9) but not after a power loss: for tests and bulk imports. */
void srv_store_set_fsync(srv_store_t *s, int on);

/* What srv_store_open repaired, one line per problem ("name \"x\": blob sha256:... is
 * missing; name removed"), at most 32 lines then a count; "" when nothing.
 * Returns: borrowed, valid until srv_store_free(). */
const char *srv_store_open_notes(const srv_store_t *s);

void srv_store_stats(srv_store_t *s, srv_store_stats_t *out);

/* ---- names and versions ---- */

/* A name is 1..SRV_STORE_NAME_MAX characters of [A-Za-z0-9._-], not starting with '.' and
 * not containing "..". Returns 0 or LLM_EINVAL with err saying why. Never touches the disk. */
int srv_store_check_name(const char *name, llm_error_t *err);

/* A version is "sha256:" followed by 64 lowercase hex digits. 0 or LLM_EINVAL. */
int srv_store_check_version(const char *version, llm_error_t *err);

/* ---- uploads ---- */

/* Starts an upload: creates root/tmp/up-XXXXXX/ with the two (empty) part files.
 * Returns new upload (finish with srv_store_commit() or srv_store_abort()), or NULL with err
 * set. The upload may be written from any one thread at a time. */
srv_store_upload_t *srv_store_begin(srv_store_t *s, llm_error_t *err);

/* Appends n bytes of data (borrowed) to part (SRV_STORE_CONFIG or SRV_STORE_WEIGHTS). The
 * parts may arrive in either order and in any number of pieces.
 * Returns 0; LLM_ERANGE when the upload would exceed max_upload_bytes (nothing written;
 * HTTP 413); LLM_EINVAL for a bad part; -errno on a write failure. After a failure every
 * further write and the commit fail with the same code: abort the upload. */
int srv_store_write(srv_store_upload_t *up, int part, const void *data, size_t n);

/* Path of a part's temporary file, for validation (adp_load_files) before the commit.
 * Returns: borrowed, valid until commit/abort; NULL for a bad part. */
const char *srv_store_upload_path(const srv_store_upload_t *up, int part);

/* Bytes written to part so far (-1 for a bad part). */
int64_t srv_store_upload_bytes(const srv_store_upload_t *up, int part);

/* Attaches meta.json (json is copied; at most SRV_STORE_META_MAX bytes, else LLM_ERANGE) to
 * the version this upload creates: it is written into the blob before the blob becomes
 * visible. If the version already exists without meta.json, commit adds it; an existing
 * meta.json is kept. The store does not parse json. */
int srv_store_upload_set_meta(srv_store_upload_t *up, const char *json);

/* Makes the upload durable and points name at it: fsyncs the parts, computes the version,
 * moves the blob into blobs/ (or discards the copy when that version is already stored),
 * then replaces names/<name> atomically. The pin flag of an existing name is kept.
 * *created_new_version (may be NULL) = 1 if the name was absent or pointed at another
 * version, 0 if it already pointed at this one (idempotent re-upload; nothing on disk
 * changes). out_desc (may be NULL) receives the name's new descriptor.
 * Consumes up in every case: on failure its temporary files are removed and the store is
 * unchanged. Errors: LLM_EINVAL (bad name, empty part, earlier write failure: err says which),
 * LLM_ERANGE (earlier size overflow), -errno (I/O; err names the path). */
int srv_store_commit(srv_store_upload_t *up, const char *name, srv_store_desc_t *out_desc,
                     int *created_new_version, llm_error_t *err);

/* Discards the upload and its temporary files (a refused adapter leaves nothing behind).
 * Accepts NULL. */
void srv_store_abort(srv_store_upload_t *up);

/* ---- queries ---- */

/* Descriptor of name. 0, LLM_EINVAL (bad name) or LLM_ENOTFOUND. */
int srv_store_get(srv_store_t *s, const char *name, srv_store_desc_t *out);

/* srv_store_get plus a hold on the name's version, atomically: the version's files stay on
 * disk until srv_store_blob_release(s, out->version), whatever happens to the name. */
int srv_store_acquire(srv_store_t *s, const char *name, srv_store_desc_t *out);

/* Descriptor of a stored version (name "" and pinned 0). 0, LLM_EINVAL or LLM_ENOTFOUND. */
int srv_store_get_version(srv_store_t *s, const char *version, srv_store_desc_t *out);

/* Names in ascending strcmp order. Skips the names <= after (NULL or "" = none; a cursor that
 * stays valid while names are added or deleted) and then offset more; writes up to limit
 * descriptors to out (room for limit). *n_out = how many were written, *total (may be NULL) =
 * number of names in the store. Returns 0. */
int srv_store_list(srv_store_t *s, const char *after, size_t offset, size_t limit,
                   srv_store_desc_t *out, size_t *n_out, size_t *total);

/* Removes name (names/<name> is unlinked and names/ fsynced). Its blob is deleted unless
 * another name or a hold keeps it. flags: SRV_STORE_DEL_UNPINNED or 0.
 * Returns 0, LLM_EINVAL (bad name), LLM_ENOTFOUND, -EBUSY (pinned and DEL_UNPINNED), -errno. */
int srv_store_delete(srv_store_t *s, const char *name, int flags, llm_error_t *err);

/* Sets or clears name's pin flag (persisted in names/<name>; survives new versions and
 * restarts). What pinning means (residency, delete protection) is the caller's policy.
 * Returns 0, LLM_EINVAL, LLM_ENOTFOUND or -errno. */
int srv_store_pin(srv_store_t *s, const char *name, int on, llm_error_t *err);

/* Paths of a version's two files into config_path and st_path (each cap bytes).
 * The files exist while a name refers to the version or a hold is kept: hold it first
 * (srv_store_acquire) if the name may move meanwhile.
 * Returns 0, LLM_EINVAL, LLM_ENOTFOUND or -ENAMETOOLONG. */
int srv_store_paths(srv_store_t *s, const char *version, char *config_path, char *st_path,
                    size_t cap);

/* Keeps a stored version's files on disk until the matching release. 0, LLM_EINVAL or
 * LLM_ENOTFOUND. */
int srv_store_blob_hold(srv_store_t *s, const char *version);
/* Drops one hold; deletes the blob when it was the last thing keeping it. Releasing a version
 * that is not held is a programmer error (assert). */
void srv_store_blob_release(srv_store_t *s, const char *version);

/* Replaces root/blobs/<hex>/meta.json atomically (json copied; at most SRV_STORE_META_MAX).
 * Returns 0, LLM_EINVAL, LLM_ENOTFOUND, LLM_ERANGE or -errno. */
int srv_store_set_meta(srv_store_t *s, const char *version, const char *json,
                       llm_error_t *err);

/* Reads meta.json of version. Returns 0 and *json (new NUL-terminated string, caller frees
 * with free()), LLM_ENOTFOUND (no such version, or it has no meta.json), LLM_EINVAL or
 * -errno. */
int srv_store_get_meta(srv_store_t *s, const char *version, char **json, llm_error_t *err);

/* Re-hashes version's files and compares with the version: 0, LLM_EFORMAT (mismatch: err
 * says so), LLM_ENOTFOUND, -errno. Reads the whole blob; holds it meanwhile. */
int srv_store_verify(srv_store_t *s, const char *version, llm_error_t *err);

/* ---- test hooks ---- */

/* Crash points inside srv_store_commit, in order. */
typedef enum {
    SRV_STORE_CP_STAGED = 1,     /* parts and manifest fsynced in tmp/up-XXXXXX */
    SRV_STORE_CP_BLOB_RENAMED,   /* blob renamed into blobs/, blobs/ not yet fsynced */
    SRV_STORE_CP_BLOB_DURABLE,   /* blobs/ fsynced */
    SRV_STORE_CP_NAME_TMP,       /* new name file written and fsynced in tmp/ */
    SRV_STORE_CP_NAME_RENAMED,   /* names/<name> replaced, names/ not yet fsynced */
    SRV_STORE_CP_DONE,           /* names/ fsynced, memory not yet updated */
    SRV_STORE_CP_COUNT
} srv_store_crash_point_t;

/* Calls fn(point, arg) at each crash point of every later commit (fn = NULL: off; pin passes
 * the three name-file points too). A test's fn calls _exit() in a forked child to simulate a
 * crash there. */
void srv_store__set_crash_hook(srv_store_t *s, void (*fn)(int point, void *arg), void *arg);

#endif
