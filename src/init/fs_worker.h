/* The fs worker: a child of hutch-init running as app (uid 1000, no
 * capabilities, seccomp, no_new_privs) that performs every file operation
 * of the SDK's fs API inside the sandbox. Shared by fsops.c and fs_walk.c. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include "lib/err.h"

#define FSW_PATH_MAX 4096
#define FSW_CHUNK (128u * 1024u)      /* bytes of one HX_FS_DATA frame */

/* A resumable producer of HX_FS_DATA (readFile, readDir, walk, expandGlob):
 * step() appends at most about FSW_CHUNK bytes to out and returns 1 while
 * more may follow, 0 when done, or a negative errno (e filled). */
struct fsw_job {
    struct fsw_job *next;
    uint32_t req, chan;
    uint32_t inflight;                /* bytes sent and not yet credited */
    uint64_t total;
    int (*step)(struct fsw_job *j, uint8_t *out, size_t cap, size_t *len, struct hx_err *e);
    void (*done)(struct fsw_job *j);  /* frees what step used */
    void *state;
};

/* fsops.c */
void fsw_send(uint16_t type, uint32_t chan, const void *p, size_t len);
int fsw_fail_path(struct hx_err *e, int err, const char *op, const char *path);
const char *fsw_path(json_t *params, const char *key, struct hx_err *e);
json_t *fsw_stat_json(const struct statx *st);
void fsw_job_add(struct fsw_job *j);
/* Appends a JSON-escaped copy of s to a buffer; returns false when it does not fit. */
bool fsw_json_str(char *out, size_t cap, size_t *len, const char *s);

/* fs_walk.c: jobs for readDir, walk and expandGlob; NULL and e filled on a bad request. */
struct fsw_job *fsw_readdir_job(json_t *params, struct hx_err *e);
struct fsw_job *fsw_walk_job(json_t *params, struct hx_err *e);
struct fsw_job *fsw_glob_job(json_t *params, struct hx_err *e);
/* fs_walk.c, exposed for unit tests: glob segment matching with ** (globstar). */
bool fsw_glob_match(const char *pattern, const char *path, bool globstar, bool extended, bool casefold);

/* fsops.c: answers call req with {"ok": ok} (stolen; NULL: null) or, when e
 * is not NULL, with its error. */
void fsw_reply(uint32_t req, json_t *ok, const struct hx_err *e);

/* fs_splice.c: hutch's raw file channel (spliceFile). sock, the socket
 * hutchd sent with the call, is consumed. Returns the answer to send now,
 * or NULL with *later (the answer comes when the upload ends) or e filled. */
struct pollfd;
json_t *fsw_splice_call(uint32_t req, json_t *params, int sock, bool *later, struct hx_err *e);
/* The loop's share: what the transfers wait for, moving their bytes once
 * poll said so, and a first turn for new ones. */
int fsw_splice_pollfds(struct pollfd *p, int max);
void fsw_splice_pump(const struct pollfd *p, int n);
void fsw_splice_kick(void);
#define FSW_SPLICE_MAX 64
