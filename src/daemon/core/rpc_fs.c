/* File-system RPCs of @deno/sandbox 0.13.2 (readFile ... expandGlob, file
 * handles): checked here, performed by the sandbox's fs worker (hutch-init,
 * as app, inside the sandbox), with streams in both directions under credit
 * flow control. File handles belong to the session that opened them. */
#include <stdio.h>
#include <string.h>
#include "daemon/api/ws.h"
#include "daemon/core/metrics.h"
#include "daemon/core/rpc.h"
#include "daemon/core/sandbox.h"
#include "lib/b64.h"

#define FS_HANDLES_PER_SESSION 256
/* readFile/readTextFile answer in one WebSocket message, and the SDK's `ws`
 * client refuses messages over 100 MiB (maxPayload): beyond that the answer
 * is an EFBIG error naming the streaming alternatives. */
#define FS_READFILE_MAX ((100ull << 20) - 4096)
#define FS_READDIR_MAX 200000            /* entries in one readDir answer */
#define FS_FILEWRITE_CHARS 196608        /* base64 chars of fileWrite forwarded per call (144 KiB) */
#define FS_ENTRY_MAX (40u * 1024u)       /* one walk/readDir line */

enum fs_kind { FS_READ_BYTES, FS_READ_TEXT, FS_READ_DIR, FS_STREAM, FS_DOWNLOAD, FS_WRITE };

/* One transfer between the client and the fs worker, keyed by its agent
 * channel; it lives exactly as long as the agent call behind it. */
struct fs_op {
    struct fs_op *next;
    struct sandbox *sb;
    struct session *s;            /* NULL once the client left */
    uint32_t chan;
    enum fs_kind kind;
    char *buf;                    /* READ_*: the answer being built */
    size_t len, cap;
    uint8_t carry[4];             /* bytes not yet encoded (base64: <3, UTF-8: <4) */
    size_t ncarry;
    json_t *entries;              /* READ_DIR */
    uint64_t stream_id;           /* STREAM, DOWNLOAD: the client's stream id */
    bool stream_live;             /* STREAM, DOWNLOAD: not cancelled by the client */
    uint32_t owed;                /* STREAM, DOWNLOAD: credit held while the client's socket is backed up */
    int failed;                   /* an errno when we gave up on the transfer */
    int64_t abort_id;             /* the client's abortId, or -1 */
    json_t *abort_rpc_id;         /* the request to answer when aborted */
};

/* fileRead's read-ahead (the SDK reads a file with one 64 KiB fileRead after
 * another, each a round trip to the fs worker): see "read-ahead" below. */
#define FS_RA_PER_SESSION 4       /* handles of one session reading ahead at once */
#define FS_RA_DEPTH 4             /* reads ahead out or answered and held, per handle (an answer < 200 KiB) */
#define FS_RA_PARKED_MAX 64       /* calls on one handle waiting behind its read-ahead */

enum fs_ra_state { RA_UNKNOWN, RA_PROBING, RA_ON, RA_OFF };

struct fs_ra_answer {
    uint8_t *p;                   /* the worker's reply to a read ahead, not asked for yet */
    size_t n;
    uint64_t bytes;               /* file bytes in it (the position moved by them) */
    bool more;                    /* it was data: the next chunk may be read ahead */
    bool plain;                   /* it is {"ok":{"data":"<base64>"}}, checked */
};

struct fs_parked {
    struct fs_parked *next;
    const char *method;           /* a literal of FILEOP's */
    json_t *rpc_id, *params;
};

struct fs_handle {
    struct fs_handle *next;
    struct session *s;            /* NULL once closed: then freed when ra_calls reaches 0 */
    uint32_t id;                  /* the worker's id, also the client's */
    enum fs_ra_state ra;
    unsigned ra_calls;            /* read-ahead's agent calls out (probe, read, seek back); ud = this */
    unsigned inflight;            /* reads of ours out (the worker answers them in order) ... */
    uint64_t len;                 /* ... of this length (also the held answers') */
    json_t *waiter;               /* the client's fileRead the oldest of them answers, or NULL */
    uint64_t epoch;               /* sb->io_epoch at the last fileRead read-ahead took on this handle */
    struct fs_ra_answer held[FS_RA_DEPTH]; /* answers read ahead, oldest at held_head */
    unsigned held_head, nheld;
    bool tail_more;               /* the last answer read was data: more may follow */
    bool undoing;                 /* the seek back over discarded answers is out */
    struct fs_parked *parked, **parked_tail;
    unsigned nparked;
};

static struct fs_op *g_ops;
static struct fs_handle *g_handles;
static uint32_t g_next_chan;

/* ---- errors ----------------------------------------------------------- */

/* errno names → the Deno error classes the SDK revives under Deno; under
 * Node it keeps Error with .code = "ENOENT" etc. */
static const struct { const char *code, *cls; } err_classes[] = {
    {"ENOENT", "NotFound"}, {"EEXIST", "AlreadyExists"}, {"EACCES", "PermissionDenied"},
    {"EPERM", "PermissionDenied"}, {"EISDIR", "IsADirectory"}, {"ENOTDIR", "NotADirectory"},
    {"ELOOP", "FilesystemLoop"}, {"EBADF", "BadResource"}, {"EAGAIN", "WouldBlock"},
    {"EWOULDBLOCK", "WouldBlock"}, {"EBUSY", "Busy"}, {"ETIMEDOUT", "TimedOut"},
    {"ECANCELED", "Interrupted"}, {"EINTR", "Interrupted"}, {"ENOSYS", "NotSupported"},
    {"EINVAL", "TypeError"},
};

static json_t *fs_error(const char *code, const char *msg)
{
    const char *cls = "Error";
    for (size_t i = 0; i < HX_ARRAY_LEN(err_classes); i++)
        if (strcmp(err_classes[i].code, code) == 0)
            cls = err_classes[i].cls;
    return json_pack("{s:{s:s, s:s, s:s}}", "error", "constructorName", cls, "message", msg, "code", code);
}

static json_t *fs_errorf(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *fs_errorf(const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fs_error(code, msg);
}

/* Agent reply → the SDK's result; the agent's code must look like an errno name. */
static json_t *fs_translate(json_t *reply)
{
    if (!reply)
        return fs_error("EIO", "EIO: the sandbox stopped before answering");
    json_t *err = json_object_get(reply, "error");
    if (!err)
        return json_pack("{s:O}", "ok", json_object_get(reply, "ok"));
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    bool code_ok = code && code[0] == 'E' && strlen(code) < 16;
    for (const char *c = code; code_ok && *c; c++)
        code_ok = (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9');
    return fs_error(code_ok ? code : "EIO", msg && strlen(msg) < 4200 ? msg : "error in the sandbox");
}

/* ---- parameters ------------------------------------------------------- */

/* NUL bytes would cut a path short in the sandbox: refuse, like bounds. */
static const char *check_path(json_t *params, const char *key)
{
    json_t *v = json_object_get(params, key);
    if (!json_is_string(v))
        return "must be a string";
    if (json_string_length(v) == 0)
        return "must not be empty";
    if (json_string_length(v) > SANDBOX_PATH_MAX)
        return "is longer than 4096 bytes";
    if (memchr(json_string_value(v), 0, json_string_length(v)))
        return "contains a NUL byte";
    return NULL;
}

static bool paths_ok(struct session *s, json_t *id, json_t *params, const char *const *keys)
{
    for (; *keys; keys++) {
        const char *why = check_path(params, *keys);
        if (why) {
            rpc_reply_result(s, id, fs_errorf(strstr(why, "longer") ? "ENAMETOOLONG" : "EINVAL",
                                              "%s: \"%s\" %s", strstr(why, "longer") ? "ENAMETOOLONG" : "EINVAL",
                                              *keys, why));
            return false;
        }
    }
    return true;
}

static uint32_t new_chan(void)
{
    g_next_chan = (g_next_chan + 1) & 0x7fffffffu;
    return HX_FS_CHAN_BASE | g_next_chan;
}

/* ---- plain calls ------------------------------------------------------ */

static void on_plain(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    if (s)
        rpc_reply_result(s, rpc_id, fs_translate(reply));
}

/* For calls without transfer state (cb must not need ud freed on failure). */
static void call_agent(struct session *s, json_t *id, const char *method, json_t *ap, agent_reply_cb cb, void *ud)
{
    int r = agent_call(s->sb, method, ap, cb, s, id, ud);
    if (r < 0)
        rpc_reply_result(s, id, fs_errorf(r == -EMSGSIZE ? "E2BIG" : "EIO", "%s: %s", method,
                                          r == -EMSGSIZE ? "request too large" : "cannot reach the sandbox's agent"));
}

#define PATHS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void passthrough(struct session *s, json_t *id, json_t *params, const char *method,
                        const char *const *keys)
{
    if (!paths_ok(s, id, params, keys))
        return;
    call_agent(s, id, method, json_incref(params), on_plain, NULL);
}

#define SIMPLE(fn, name, ...) \
    static void fn(struct session *s, json_t *id, json_t *params) { passthrough(s, id, params, name, PATHS(__VA_ARGS__)); }

SIMPLE(m_remove, "remove", "path")
SIMPLE(m_mkdir, "mkdir", "path")
SIMPLE(m_rename, "rename", "oldPath", "newPath")
SIMPLE(m_stat, "stat", "path")
SIMPLE(m_lstat, "lstat", "path")
SIMPLE(m_chmod, "chmod", "path")
SIMPLE(m_chown, "chown", "path")
SIMPLE(m_copy, "copyFile", "fromPath", "toPath")
SIMPLE(m_link, "link", "target", "path")
SIMPLE(m_symlink, "symlink", "target", "path")
SIMPLE(m_readlink, "readLink", "path")
SIMPLE(m_realpath, "realPath", "path")
SIMPLE(m_truncate, "truncate", "name")
SIMPLE(m_utime, "utime", "path")

static void m_umask(struct session *s, json_t *id, json_t *params)
{
    call_agent(s, id, "umask", json_incref(params), on_plain, NULL);
}

static void m_mktemp(struct session *s, json_t *id, json_t *params, const char *method)
{
    json_t *opts = json_object_get(params, "options");
    json_t *dir = json_object_get(opts, "dir");
    if (dir && !json_is_null(dir) && !paths_ok(s, id, opts, PATHS("dir")))
        return;
    call_agent(s, id, method, json_incref(params), on_plain, NULL);
}
static void m_mktempdir(struct session *s, json_t *id, json_t *params) { m_mktemp(s, id, params, "makeTempDir"); }
static void m_mktempfile(struct session *s, json_t *id, json_t *params) { m_mktemp(s, id, params, "makeTempFile"); }

/* ---- file handles ----------------------------------------------------- */

static unsigned session_handles(struct session *s)
{
    unsigned n = 0;
    for (struct fs_handle *h = g_handles; h; h = h->next)
        n += h->s == s;
    return n;
}

static void on_close_quiet(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud) {}

static void on_opened(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    json_t *jid = json_object_get(json_object_get(reply, "ok"), "fileHandleId");
    if (!reply || !json_is_integer(jid)) {
        if (s)
            rpc_reply_result(s, rpc_id, reply && json_object_get(reply, "error") ? fs_translate(reply)
                                                                                 : fs_error("EIO", "EIO: bad reply from the sandbox"));
        return;
    }
    json_int_t hid = json_integer_value(jid);
    struct fs_handle *h = NULL;
    if (s && hid > 0 && hid <= UINT32_MAX && session_handles(s) < FS_HANDLES_PER_SESSION)
        h = calloc(1, sizeof *h);
    if (!h) {
        /* The client left (or is over its limit): the worker must not keep it. */
        if (hid > 0 && hid <= UINT32_MAX)
            agent_call(sb, "fileClose", json_pack("{s:I}", "fileHandleId", hid), on_close_quiet, NULL, NULL, NULL);
        if (s)
            rpc_reply_result(s, rpc_id, fs_errorf("EMFILE", "EMFILE: too many open files in this session (%d)",
                                                  FS_HANDLES_PER_SESSION));
        return;
    }
    h->s = s;
    h->id = (uint32_t)hid;
    h->parked_tail = &h->parked;
    h->next = g_handles;
    g_handles = h;
    rpc_reply_result(s, rpc_id, json_pack("{s:{s:I}}", "ok", "fileHandleId", hid));
}

static void m_open_common(struct session *s, json_t *id, json_t *params, const char *method)
{
    if (!paths_ok(s, id, params, PATHS("path")))
        return;
    if (session_handles(s) >= FS_HANDLES_PER_SESSION)
        return rpc_reply_result(s, id, fs_errorf("EMFILE", "EMFILE: too many open files in this session (%d)",
                                                 FS_HANDLES_PER_SESSION));
    call_agent(s, id, method, json_incref(params), on_opened, NULL);
}
static void m_open(struct session *s, json_t *id, json_t *params) { m_open_common(s, id, params, "open"); }
static void m_create(struct session *s, json_t *id, json_t *params) { m_open_common(s, id, params, "create"); }

/* A handle id from another session, another sandbox or after close is
 * refused here, before the worker sees it. */
static struct fs_handle *own_handle(struct session *s, json_t *id, json_t *params)
{
    json_t *v = json_object_get(params, "fileHandleId");
    if (json_is_integer(v))
        for (struct fs_handle *h = g_handles; h; h = h->next)
            if (h->s == s && h->id == json_integer_value(v))
                return h;
    rpc_reply_result(s, id, fs_error("EBADF", "EBADF: bad file handle (not open in this session)"));
    return NULL;
}

/* Calls waiting on the handle go, each answered with code/msg unless code is NULL. */
static void ra_drop_parked(struct fs_handle *h, const char *code, const char *msg)
{
    while (h->parked) {
        struct fs_parked *q = h->parked;
        h->parked = q->next;
        if (code && h->s)
            rpc_reply_result(h->s, q->rpc_id, fs_error(code, msg));
        json_decref(q->rpc_id);
        json_decref(q->params);
        free(q);
    }
    h->parked_tail = &h->parked;
    h->nparked = 0;
}

/* All answers held are dropped; returns the file bytes they held. */
static uint64_t ra_held_drop(struct fs_handle *h)
{
    uint64_t bytes = 0;
    for (; h->nheld; h->nheld--, h->held_head = (h->held_head + 1) % FS_RA_DEPTH) {
        bytes += h->held[h->held_head].bytes;
        free(h->held[h->held_head].p);
    }
    h->held_head = 0;
    return bytes;
}

/* The handle is gone for its client (closed, or the session left): what
 * read-ahead holds goes now; the struct when its last agent call returns. */
static void handle_release(struct fs_handle *h, bool answer_parked)
{
    ra_drop_parked(h, answer_parked ? "EBADF" : NULL, "EBADF: bad file handle (not open in this session)");
    json_decref(h->waiter);
    h->waiter = NULL;
    ra_held_drop(h);
    h->s = NULL;
    if (!h->ra_calls)
        free(h);
}

static void handle_remove(struct fs_handle *target)
{
    for (struct fs_handle **pp = &g_handles; *pp; pp = &(*pp)->next)
        if (*pp == target) {
            *pp = target->next;
            handle_release(target, true); /* fileClose: what waited behind it on the handle gets EBADF */
            return;
        }
}

static void ra_file_op(struct session *s, struct fs_handle *h, json_t *id, json_t *params, const char *method);

static void m_file_op(struct session *s, json_t *id, json_t *params, const char *method)
{
    struct fs_handle *h = own_handle(s, id, params);
    if (h)
        ra_file_op(s, h, id, params, method);
}

/* A call on a handle as the worker is to see it, with nothing of read-ahead's
 * out of order with it. */
static void plain_file_op(struct session *s, struct fs_handle *h, json_t *id, json_t *params, const char *method)
{
    json_t *ap = json_incref(params);
    if (strcmp(method, "fileWrite") == 0) {
        /* At most FS_FILEWRITE_CHARS per call (the SDK loops on bytesWritten);
         * the base64 is checked here so the worker never gets garbage. */
        json_t *d = json_object_get(params, "data");
        size_t dl = json_string_length(d);
        const char *ds = json_string_value(d);
        size_t take = dl > FS_FILEWRITE_CHARS ? FS_FILEWRITE_CHARS : dl;
        uint8_t *tmp = ds ? malloc(hx_b64_decoded_max(take) + 1) : NULL;
        size_t n;
        bool ok = tmp && hx_b64_decode(ds, take, tmp, &n) == 0;
        free(tmp);
        if (!ok) {
            json_decref(ap);
            return rpc_reply_result(s, id, fs_error("EINVAL", "EINVAL: fileWrite: \"data\" must be base64"));
        }
        if (take < dl) {
            json_decref(ap);
            ap = json_pack("{s:I, s:s%}", "fileHandleId", (json_int_t)h->id, "data", ds, take);
        }
    }
    if (strcmp(method, "fileClose") == 0)
        handle_remove(h); /* at once: the id is dead for the client whatever the worker says */
    call_agent(s, id, method, ap, on_plain, NULL);
    /* Reads answer with up to 144 KiB of base64: passed through unparsed
     * when they have exactly the shape of data (agent.c checks it). */
    if (strcmp(method, "fileRead") == 0 && s->sb->calls && s->sb->calls->cb == on_plain)
        s->sb->calls->raw_data_ok = true;
}

#define FILEOP(fn, name) \
    static void fn(struct session *s, json_t *id, json_t *params) { m_file_op(s, id, params, name); }
FILEOP(m_fclose, "fileClose")
FILEOP(m_flock, "fileLock")
FILEOP(m_fread, "fileRead")
FILEOP(m_fseek, "fileSeek")
FILEOP(m_fstat, "fileStat")
FILEOP(m_fsync, "fileSync")
FILEOP(m_fsyncdata, "fileSyncData")
FILEOP(m_ftruncate, "fileTruncate")
FILEOP(m_funlock, "fileUnlock")
FILEOP(m_futime, "fileUtime")
FILEOP(m_fwrite, "fileWrite")

/* ---- read-ahead ------------------------------------------------------- */

/* The SDK reads a file (FsFile.readable) with one fileRead of 64 KiB after
 * another, each waiting for the last: every chunk costs a round trip to the
 * fs worker on top of the client's own. For a regular file read again and
 * again with the same length, hutchd keeps the next chunks asked of the
 * worker, so that the client's next fileRead is answered at once from what
 * it holds.
 *
 * What makes it exact:
 * - only regular files of non-zero size at the first read (a fileStat asked
 *   just before it): a pipe or a device could not be given its bytes back;
 * - only a fileRead of the same length as the ones read ahead, and only if
 *   nothing else happened on this sandbox since the handle's last read
 *   (sb->io_epoch: every client message and every agent frame but these
 *   reads' and the probe's replies bumps it): a write, a command's exit or
 *   output, another file's read, any of them and the next read goes to the
 *   worker again. The chain of reads read-ahead answers starts with a read
 *   it sent to the worker itself, and each next read must come with no bump
 *   but its own since the last one (h->epoch); answers read ahead meanwhile
 *   were asked for after that, so they are newer;
 * - otherwise (fileSeek, fileWrite, fileTruncate, another length, a stale
 *   chain) the answers held are dropped and the worker's position moved back
 *   over their bytes (fileSeek -n from the current position, once the reads
 *   out are back) before the call goes on, and calls on the handle wait in
 *   order (FS_RA_PARKED_MAX) until then; position-independent calls
 *   (fileStat, fileSync, locks, fileUtime) go on at once when nothing waits;
 * - an error or the end of the file is held like data and answers the read
 *   that would have met it; nothing more is read ahead after either;
 * - at most FS_RA_DEPTH reads out or answers held per handle (one answer is
 *   the worker's 144 KiB as base64 at most, < 200 KiB), FS_RA_PER_SESSION
 *   handles per session.
 * The fs worker runs one call at a time in order, so what hutchd sends on a
 * handle is what it does, and its answers come in the order asked. */

static bool ra_read_length(json_t *params, uint64_t *len)
{
    json_t *v = json_object_get(params, "length");
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_object_size(params) != 2)
        return false;
    *len = (uint64_t)json_integer_value(v);
    return true;
}

static unsigned session_ra_handles(struct session *s)
{
    unsigned n = 0;
    for (struct fs_handle *h = g_handles; h; h = h->next)
        n += h->s == s && h->ra == RA_ON;
    return n;
}

/* The client's answer from the worker's reply bytes (hostile: checked; plain: they were
 * found to be {"ok":{"data":"<base64>"}}). */
static void ra_answer(struct session *s, json_t *rpc_id, const uint8_t *p, size_t n, bool plain)
{
    if (!s)
        return;
    if (s->ws && p && plain)
        return agent_forward_raw(s, rpc_id, p, n);
    json_t *m = p ? agent_reply_parse(p, n) : NULL;
    rpc_reply_result(s, rpc_id, fs_translate(m));
    json_decref(m);
}

/* File bytes in a reply; *more: it was data, so there may be more to read. */
static uint64_t ra_reply_bytes(const uint8_t *p, size_t n, bool plain, bool *more)
{
    *more = false;
    size_t chars;
    if (plain) {
        chars = n - strlen("{\"ok\":{\"data\":\"\"}}");
        p += strlen("{\"ok\":{\"data\":\"");
    } else {
        json_t *m = agent_reply_parse(p, n);
        json_t *d = json_object_get(json_object_get(m, "ok"), "data");
        chars = json_is_string(d) ? json_string_length(d) : 0;
        const char *str = json_string_value(d);
        uint64_t b = 0;
        if (str && chars % 4 == 0)
            b = chars / 4 * 3 - (chars && str[chars - 1] == '=') - (chars > 1 && str[chars - 2] == '=');
        json_decref(m);
        *more = b > 0;
        return b;
    }
    if (chars % 4)
        return 0; /* not base64 the client could decode: an error to it, no position to give back */
    uint64_t b = chars / 4 * 3 - (chars && p[chars - 1] == '=') - (chars > 1 && p[chars - 2] == '=');
    *more = b > 0;
    return b;
}

static void ra_drain(struct fs_handle *h);
static void ra_undo(struct sandbox *sb, struct fs_handle *h, uint64_t back);
static void ra_dispatch(struct session *s, struct fs_handle *h, json_t *id, json_t *params, const char *method,
                        bool first);

/* An agent call of read-ahead returned: the handle may be freed now. */
static bool ra_call_back(struct fs_handle *h)
{
    h->ra_calls--;
    if (h->s)
        return true;
    if (!h->ra_calls)
        free(h);
    return false;
}

static bool ra_fetch(struct sandbox *sb, struct fs_handle *h, uint64_t len, json_t *waiter);

/* More reads ahead, up to FS_RA_DEPTH, until the end of the file or an error. */
static void ra_ahead(struct sandbox *sb, struct fs_handle *h)
{
    while (h->ra == RA_ON && !h->parked && h->tail_more && h->nheld + h->inflight < FS_RA_DEPTH)
        if (!ra_fetch(sb, h, h->len, NULL))
            return;
}

static void on_ra_read(struct sandbox *sb, const uint8_t *p, size_t n, void *ud)
{
    struct fs_handle *h = ud;
    h->inflight--;
    json_t *waiter = h->waiter; /* waits for the oldest read out: this one */
    h->waiter = NULL;
    if (!ra_call_back(h))
        return json_decref(waiter);
    bool more, plain = agent_reply_is_plain_data(p, n);
    uint64_t bytes = ra_reply_bytes(p, n, plain, &more);
    h->tail_more = more;
    if (waiter) {
        ra_answer(h->s, waiter, p, n, plain);
        json_decref(waiter);
    } else {
        struct fs_ra_answer *a = &h->held[(h->held_head + h->nheld) % FS_RA_DEPTH];
        a->p = malloc(n ? n : 1);
        if (!a->p) { /* as if never read: given back with the rest */
            h->tail_more = false;
            a->p = NULL;
        } else
            memcpy(a->p, p, n);
        a->n = n;
        a->bytes = bytes;
        a->more = more;
        a->plain = plain;
        h->nheld++;
        if (!a->p && !h->parked) /* nothing may be answered past a hole: all of it goes back */
            h->ra = RA_OFF;
    }
    if (h->parked || (h->ra == RA_OFF && h->nheld)) { /* a call waits for the position the client knows */
        if (!h->inflight)
            h->nheld ? ra_undo(sb, h, ra_held_drop(h)) : ra_drain(h);
        return;
    }
    ra_ahead(sb, h);
}

/* The sandbox stopped (or the call could not be sent) before the reply. */
static void on_ra_read_lost(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    struct fs_handle *h = ud;
    h->inflight--;
    json_t *waiter = h->waiter;
    h->waiter = NULL;
    if (ra_call_back(h)) {
        h->ra = RA_OFF;
        if (waiter)
            rpc_reply_result(h->s, waiter, fs_error("EIO", "EIO: the sandbox stopped before answering"));
        if (!h->inflight) {
            ra_held_drop(h);
            ra_drain(h);
        }
    }
    json_decref(waiter);
}

static bool ra_fetch(struct sandbox *sb, struct fs_handle *h, uint64_t len, json_t *waiter)
{
    int r = agent_call(sb, "fileRead", json_pack("{s:I, s:I}", "fileHandleId", (json_int_t)h->id, "length",
                                                 (json_int_t)len), on_ra_read_lost, NULL, NULL, h);
    if (r < 0) {
        if (waiter)
            rpc_reply_result(h->s, waiter, fs_errorf("EIO", "fileRead: %s", r == -EAGAIN ? "too many calls in flight"
                                                                            : "cannot reach the sandbox's agent"));
        return false;
    }
    sb->calls->raw_reply = on_ra_read;
    h->ra_calls++;
    h->inflight++;
    h->len = len;
    if (waiter) {
        h->waiter = json_incref(waiter);
        h->epoch = sb->io_epoch; /* a chain of reads starts (again) here */
    }
    return true;
}

static void on_ra_stat(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    struct fs_handle *h = ud;
    if (!ra_call_back(h))
        return;
    json_t *ok = json_object_get(reply, "ok");
    json_t *size = json_object_get(ok, "size");
    bool on = json_is_true(json_object_get(ok, "isFile")) && json_is_integer(size) && json_integer_value(size) > 0;
    if (h->ra == RA_PROBING)
        h->ra = on && session_ra_handles(h->s) < FS_RA_PER_SESSION ? RA_ON : RA_OFF;
}

/* The probe's reply, unparsed so that it does not count as something else happening (io_epoch). */
static void on_ra_stat_raw(struct sandbox *sb, const uint8_t *p, size_t n, void *ud)
{
    json_t *m = agent_reply_parse(p, n);
    on_ra_stat(sb, NULL, NULL, m, ud);
    json_decref(m);
}

static void on_ra_seek(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    struct fs_handle *h = ud;
    h->undoing = false;
    if (!ra_call_back(h))
        return;
    if (!reply || !json_object_get(reply, "ok")) {
        /* Cannot happen to a regular file at a position past the bytes read;
         * if it does, the position is not the client's: what waits fails. */
        h->ra = RA_OFF;
        ra_drop_parked(h, "EIO", "EIO: the read-ahead could not be undone");
        return;
    }
    ra_drain(h);
}

/* Moves the worker's position back over `back` bytes read ahead and dropped. */
static void ra_undo(struct sandbox *sb, struct fs_handle *h, uint64_t back)
{
    if (!back)
        return ra_drain(h);
    int r = agent_call(sb, "fileSeek", json_pack("{s:I, s:I, s:i}", "fileHandleId", (json_int_t)h->id, "offset",
                                                 -(json_int_t)back, "whence", 1), on_ra_seek, NULL, NULL, h);
    if (r < 0)
        return on_ra_seek(sb, NULL, NULL, NULL, (h->ra_calls++, h));
    h->ra_calls++;
    h->undoing = true;
    metrics_readahead(READAHEAD_UNDONE);
}

/* Calls that waited, in order, until one has to wait again. */
static void ra_drain(struct fs_handle *h)
{
    while (h->s && h->parked && !h->inflight && !h->undoing && !h->nheld) {
        struct fs_parked *q = h->parked;
        h->parked = q->next;
        if (!h->parked)
            h->parked_tail = &h->parked;
        h->nparked--;
        struct session *s = h->s;
        bool closing = strcmp(q->method, "fileClose") == 0;
        ra_dispatch(s, h, q->rpc_id, q->params, q->method, true);
        json_decref(q->rpc_id);
        json_decref(q->params);
        free(q);
        if (closing) /* h may be gone; later calls on it get EBADF, as they would have */
            return;
    }
}

/* front: the call was first in line already (taken from the queue by ra_drain). */
static void ra_park(struct session *s, struct fs_handle *h, json_t *id, json_t *params, const char *method, bool front)
{
    struct fs_parked *q = front || h->nparked < FS_RA_PARKED_MAX ? calloc(1, sizeof *q) : NULL;
    if (!q)
        return rpc_reply_result(s, id, fs_errorf("EAGAIN", "EAGAIN: %s: too many calls waiting on this file handle "
                                                 "(%d)", method, FS_RA_PARKED_MAX));
    q->method = method;
    q->rpc_id = json_incref(id);
    q->params = json_incref(params);
    if (front) {
        q->next = h->parked;
        h->parked = q;
        if (!q->next)
            h->parked_tail = &q->next;
    } else {
        *h->parked_tail = q;
        h->parked_tail = &q->next;
    }
    h->nparked++;
}

static bool position_free(const char *method)
{
    static const char *const m[] = {"fileStat", "fileSync", "fileSyncData", "fileLock", "fileUnlock", "fileUtime"};
    for (size_t i = 0; i < HX_ARRAY_LEN(m); i++)
        if (strcmp(method, m[i]) == 0)
            return true;
    return false;
}

static void ra_file_op(struct session *s, struct fs_handle *h, json_t *id, json_t *params, const char *method)
{
    if (h->parked || h->undoing) /* behind what already waits */
        return ra_park(s, h, id, params, method, false);
    ra_dispatch(s, h, id, params, method, false);
}

/* A call on the handle with nothing in line before it (first: it was taken from the line). */
static void ra_dispatch(struct session *s, struct fs_handle *h, json_t *id, json_t *params, const char *method,
                        bool first)
{
    struct sandbox *sb = s->sb;
    uint64_t len = 0;
    bool read = strcmp(method, "fileRead") == 0 && ra_read_length(params, &len);
    if ((h->ra == RA_OFF && !h->nheld && !h->inflight) ||
        (!read && (position_free(method) || (!h->nheld && !h->inflight))))
        return plain_file_op(s, h, id, params, method);
    bool fresh = h->epoch + 1 == sb->io_epoch && len == h->len;
    if (read && h->nheld && fresh && h->held[h->held_head].p) {
        metrics_readahead(READAHEAD_HIT);
        struct fs_ra_answer *a = &h->held[h->held_head];
        ra_answer(s, id, a->p, a->n, a->plain);
        free(a->p);
        h->held_head = (h->held_head + 1) % FS_RA_DEPTH;
        h->nheld--;
        h->epoch = sb->io_epoch;
        ra_ahead(sb, h);
        return;
    }
    if (read && !h->nheld && h->inflight && fresh && !h->waiter) {
        metrics_readahead(READAHEAD_WAITED);
        h->waiter = json_incref(id);
        h->epoch = sb->io_epoch;
        return;
    }
    if (read && !h->nheld && !h->inflight && h->ra != RA_OFF) {
        if (h->ra == RA_UNKNOWN &&
            agent_call(sb, "fileStat", json_pack("{s:I}", "fileHandleId", (json_int_t)h->id), on_ra_stat, NULL,
                       NULL, h) == 0) {
            sb->calls->raw_reply = on_ra_stat_raw;
            h->ra_calls++;
            h->ra = RA_PROBING;
        }
        ra_fetch(sb, h, len, id);
        return;
    }
    if (strcmp(method, "fileClose") == 0)
        return plain_file_op(s, h, id, params, method); /* its position no longer matters */
    /* A call that needs the position the client knows: after the held answer is given back. */
    ra_park(s, h, id, params, method, first);
    if (h->nheld && !h->inflight)
        ra_undo(sb, h, ra_held_drop(h));
}

/* ---- transfers -------------------------------------------------------- */

static struct fs_op *op_new(struct session *s, enum fs_kind kind)
{
    struct fs_op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->sb = s->sb;
    op->s = s;
    op->kind = kind;
    op->chan = new_chan();
    op->abort_id = -1;
    op->next = g_ops;
    g_ops = op;
    return op;
}

static void op_free(struct fs_op *op)
{
    for (struct fs_op **pp = &g_ops; *pp; pp = &(*pp)->next)
        if (*pp == op) {
            *pp = op->next;
            break;
        }
    free(op->buf);
    json_decref(op->entries);
    json_decref(op->abort_rpc_id);
    free(op);
}

static struct fs_op *op_find(struct sandbox *sb, uint32_t chan)
{
    for (struct fs_op *op = g_ops; op; op = op->next)
        if (op->sb == sb && op->chan == chan)
            return op;
    return NULL;
}

static void op_cancel(struct fs_op *op, int why)
{
    if (op->failed)
        return;
    op->failed = why;
    if (op->sb->state == SB_RUNNING)
        agent_call(op->sb, "fsCancel", json_pack("{s:I}", "chan", (json_int_t)op->chan), on_close_quiet, NULL, NULL,
                   NULL);
}

/* readFile/writeFile with an AbortSignal: remember which request to answer. */
static void op_abortable(struct fs_op *op, json_t *params, json_t *id)
{
    op->abort_id = rpc_abort_id(params);
    if (op->abort_id >= 0)
        op->abort_rpc_id = json_incref(id);
}

/* Drops what the client still sends for an upload that has ended. */
static void op_unbind_upload(struct session *s, struct fs_op *op)
{
    for (struct inbound *in = s->inbound; in; in = in->next)
        if (in->pid == op->chan)
            in->bound_closed = true;
}

bool rpc_fs_abort(struct session *s, int64_t abort_id)
{
    for (struct fs_op *op = g_ops; op; op = op->next) {
        if (op->s != s || op->abort_id != abort_id || !op->abort_rpc_id)
            continue;
        rpc_reply_result(s, op->abort_rpc_id, rpc_abort_error());
        if (op->kind == FS_WRITE)
            op_unbind_upload(s, op);
        op->s = NULL; /* answered: the agent's late reply goes nowhere */
        op_cancel(op, ECANCELED); /* the worker stops reading or writing the file */
        return true;
    }
    return false;
}

static bool buf_reserve(struct fs_op *op, size_t more)
{
    if (op->len + more + 1 <= op->cap)
        return true;
    size_t cap = op->cap ? op->cap : 64 * 1024;
    while (cap < op->len + more + 1)
        cap *= 2;
    char *nb = realloc(op->buf, cap);
    if (!nb)
        return false;
    op->buf = nb;
    op->cap = cap;
    return true;
}

/* Appends bytes as base64, carrying a partial group to the next chunk. */
static bool append_b64(struct fs_op *op, const uint8_t *p, size_t n)
{
    if (!buf_reserve(op, hx_b64_encoded_len(n + op->ncarry)))
        return false;
    while (op->ncarry && op->ncarry < 3 && n) {
        op->carry[op->ncarry++] = *p++;
        n--;
    }
    if (op->ncarry == 3) {
        hx_b64_encode(op->carry, 3, op->buf + op->len);
        op->len += 4;
        op->ncarry = 0;
    }
    size_t whole = n / 3 * 3;
    hx_b64_encode(p, whole, op->buf + op->len);
    op->len += hx_b64_encoded_len(whole);
    for (size_t i = whole; i < n; i++)
        op->carry[op->ncarry++] = p[i];
    return true;
}

/* Appends bytes as the inside of a JSON string: UTF-8 checked (invalid
 * bytes become U+FFFD, as TextDecoder does), controls escaped. */
static bool append_text(struct fs_op *op, const uint8_t *p, size_t n, bool final)
{
    uint8_t tmp[4 + 65536];
    while (n || (final && op->ncarry)) {
        size_t k = op->ncarry;
        memcpy(tmp, op->carry, k);
        size_t take = n > 65536 ? 65536 : n;
        memcpy(tmp + k, p, take);
        p += take;
        n -= take;
        size_t m = k + take, i = 0;
        op->ncarry = 0;
        if (!buf_reserve(op, m * 6 + 8))
            return false;
        char *o = op->buf + op->len;
        while (i < m) {
            uint8_t c = tmp[i];
            if (c < 0x80) {
                if (c == '"' || c == '\\') {
                    *o++ = '\\';
                    *o++ = (char)c;
                } else if (c < 0x20) {
                    o += sprintf(o, "\\u%04x", c);
                } else {
                    *o++ = (char)c;
                }
                i++;
                continue;
            }
            int need = (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
            if (need > 0 && i + (size_t)need >= m && !final) {
                /* A sequence cut by the chunk boundary: finish it with the next bytes. */
                bool prefix_ok = true;
                for (size_t q = i + 1; q < m; q++)
                    prefix_ok &= (tmp[q] & 0xc0) == 0x80;
                if (prefix_ok) {
                    op->ncarry = m - i;
                    memcpy(op->carry, tmp + i, op->ncarry);
                    break;
                }
            }
            bool ok = need > 0 && c >= 0xc2 && c < 0xf5 && i + (size_t)need < m;
            for (int q = 1; ok && q <= need; q++)
                ok = (tmp[i + (size_t)q] & 0xc0) == 0x80;
            if (ok && need == 2 && ((c == 0xe0 && tmp[i + 1] < 0xa0) || (c == 0xed && tmp[i + 1] >= 0xa0)))
                ok = false;
            if (ok && need == 3 && ((c == 0xf0 && tmp[i + 1] < 0x90) || (c == 0xf4 && tmp[i + 1] >= 0x90)))
                ok = false;
            if (ok) {
                memcpy(o, tmp + i, (size_t)need + 1);
                o += need + 1;
                i += (size_t)need + 1;
            } else {
                memcpy(o, "\xef\xbf\xbd", 3);
                o += 3;
                i++;
            }
        }
        op->len = (size_t)(o - op->buf);
        if (!n)
            break;
    }
    return true;
}

/* Sends {"jsonrpc":"2.0","id":..,"result":{"ok":"<buf>"}} built by hand:
 * jansson would copy a large string twice more. */
static void send_string_result(struct session *s, json_t *id, struct fs_op *op)
{
    char *idtxt = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!idtxt)
        return;
    char head[320];
    int hl = snprintf(head, sizeof head, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"ok\":\"", idtxt);
    free(idtxt);
    if (hl < 0 || (size_t)hl >= sizeof head || !buf_reserve(op, (size_t)hl + 4)) {
        rpc_reply_result(s, id, fs_error("ENOMEM", "ENOMEM: out of memory"));
        return;
    }
    memmove(op->buf + hl, op->buf, op->len);
    memcpy(op->buf, head, (size_t)hl);
    memcpy(op->buf + hl + op->len, "\"}}", 3);
    if (s->ws)
        ws_send_text(s->ws, op->buf, (size_t)hl + op->len + 3);
}

static void on_read_done(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    struct fs_op *op = ud;
    s = op->s;
    if (s) {
        if (op->failed == EFBIG)
            rpc_reply_result(s, rpc_id, fs_errorf("EFBIG", "EFBIG: the file does not fit one message (about %llu MiB "
                                                  "of file): read it with open() and its readable, or download()",
                                                  (FS_READFILE_MAX * 3 / 4) >> 20));
        else if (op->failed)
            rpc_reply_result(s, rpc_id, fs_error("EIO", "EIO: the sandbox sent malformed data"));
        else if (!reply || json_object_get(reply, "error"))
            rpc_reply_result(s, rpc_id, fs_translate(reply));
        else if (op->kind == FS_READ_DIR)
            rpc_reply_result(s, rpc_id, json_pack("{s:O}", "ok", op->entries));
        else {
            bool ok = op->kind == FS_READ_BYTES ? append_b64(op, op->carry, 0) : append_text(op, NULL, 0, true);
            if (op->kind == FS_READ_BYTES && op->ncarry) {
                ok = buf_reserve(op, 4);
                if (ok) {
                    hx_b64_encode(op->carry, op->ncarry, op->buf + op->len);
                    op->len += 4;
                }
            }
            if (ok)
                send_string_result(s, rpc_id, op);
            else
                rpc_reply_result(s, rpc_id, fs_error("ENOMEM", "ENOMEM: out of memory"));
        }
    }
    op_free(op);
}

static void m_read(struct session *s, json_t *id, json_t *params, enum fs_kind kind)
{
    if (!paths_ok(s, id, params, PATHS("path")))
        return;
    struct fs_op *op = op_new(s, kind);
    if (!op)
        return rpc_reply_result(s, id, fs_error("ENOMEM", "ENOMEM: out of memory"));
    if (kind == FS_READ_DIR)
        op->entries = json_array();
    else
        op_abortable(op, params, id);
    json_t *ap = json_pack("{s:O, s:I}", "path", json_object_get(params, "path"), "chan", (json_int_t)op->chan);
    if (kind != FS_READ_DIR) /* the worker refuses larger regular files up front */
        json_object_set_new(ap, "max", json_integer((json_int_t)(kind == FS_READ_BYTES ? FS_READFILE_MAX / 4 * 3
                                                                                        : FS_READFILE_MAX)));
    if (agent_call(s->sb, kind == FS_READ_DIR ? "readDir" : "readFile", ap, on_read_done, s, id, op) < 0) {
        op_free(op);
        rpc_reply_result(s, id, fs_error("EIO", "EIO: cannot reach the sandbox's agent"));
    }
}
static void m_readfile(struct session *s, json_t *id, json_t *params) { m_read(s, id, params, FS_READ_BYTES); }
static void m_readtext(struct session *s, json_t *id, json_t *params) { m_read(s, id, params, FS_READ_TEXT); }
static void m_readdir(struct session *s, json_t *id, json_t *params) { m_read(s, id, params, FS_READ_DIR); }

/* One listing line from the worker: exactly the fields the SDK expects. */
static json_t *parse_entry(const uint8_t *p, size_t n, bool with_path)
{
    json_error_t jerr;
    json_t *v = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr);
    bool ok = json_is_object(v) && json_is_string(json_object_get(v, "name")) &&
              json_is_boolean(json_object_get(v, "isFile")) && json_is_boolean(json_object_get(v, "isDirectory")) &&
              json_is_boolean(json_object_get(v, "isSymlink")) &&
              json_object_size(v) == (with_path ? 5u : 4u) &&
              (!with_path || json_is_string(json_object_get(v, "path")));
    if (!ok) {
        json_decref(v);
        return NULL;
    }
    return v;
}

static void stream_credit(struct fs_op *op, uint32_t n)
{
    if (op->s && op->s->ws && ws_queued_bytes(op->s->ws) >= WS_HIGH_WATER)
        op->owed += n; /* returned by rpc_fs_on_drain */
    else
        agent_credit(op->sb, op->chan, n);
}

void rpc_fs_on_data(struct sandbox *sb, uint32_t chan, const uint8_t *p, size_t n)
{
    struct fs_op *op = op_find(sb, chan);
    if (!op || op->kind == FS_WRITE || op->failed || n == 0)
        return; /* nothing asked for it: no credit either, the worker's stream stalls */
    switch (op->kind) {
    case FS_READ_BYTES:
    case FS_READ_TEXT:
        if (op->len + (op->kind == FS_READ_BYTES ? hx_b64_encoded_len(n + op->ncarry) : n) > FS_READFILE_MAX)
            return op_cancel(op, EFBIG);
        if (!(op->kind == FS_READ_BYTES ? append_b64(op, p, n) : append_text(op, p, n, false)))
            return op_cancel(op, ENOMEM);
        agent_credit(sb, chan, (uint32_t)n);
        return;
    case FS_DOWNLOAD:
        /* The file's bytes as they are: no parsing, no re-encoding on a binary session. */
        if (op->s && op->stream_live && rpc_send_stream_data(op->s, op->stream_id, p, n) == -ENOMEM)
            return op_cancel(op, ENOMEM);
        return stream_credit(op, (uint32_t)n);
    case FS_READ_DIR:
    case FS_STREAM:
        break;
    case FS_WRITE:
        return;
    }
    /* Listings: whole lines per frame, one JSON object each. */
    if (p[n - 1] != '\n')
        return op_cancel(op, EPROTO);
    for (size_t off = 0; off < n;) {
        const uint8_t *nl = memchr(p + off, '\n', n - off);
        size_t l = (size_t)(nl - (p + off));
        json_t *e = l <= FS_ENTRY_MAX ? parse_entry(p + off, l, op->kind == FS_STREAM) : NULL;
        if (!e)
            return op_cancel(op, EPROTO);
        if (op->kind == FS_READ_DIR) {
            if (json_array_size(op->entries) >= FS_READDIR_MAX) {
                json_decref(e);
                return op_cancel(op, EFBIG);
            }
            json_array_append_new(op->entries, e);
        } else {
            json_decref(e);
            if (op->s && op->stream_live) {
                /* The SDK parses each chunk as one JSON value: one entry per enqueue. */
                rpc_send_stream_data(op->s, op->stream_id, p + off, l);
            }
        }
        off += l + 1;
    }
    if (op->kind == FS_STREAM)
        stream_credit(op, (uint32_t)n);
    else
        agent_credit(sb, chan, (uint32_t)n);
}

static void on_stream_done(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    struct fs_op *op = ud;
    s = op->s;
    if (s && op->stream_live) {
        json_t *sid = json_integer((json_int_t)op->stream_id);
        if (reply && !json_object_get(reply, "error") && !op->failed) {
            rpc_notify(s, "$sandbox.stream.end", json_pack("{s:o}", "streamId", sid));
        } else {
            json_t *r = op->failed == ENOMEM ? fs_error("ENOMEM", "ENOMEM: out of memory")
                        : op->failed && op->kind == FS_DOWNLOAD ? fs_error("EIO", "EIO: the transfer was cut short")
                        : op->failed ? fs_error("EIO", "EIO: the sandbox sent a malformed listing")
                        : fs_translate(reply);
            json_t *err = json_object_get(r, "error");
            rpc_notify(s, "$sandbox.stream.error", json_pack("{s:o, s:O}", "streamId", sid, "error", err));
            json_decref(r);
        }
    }
    op_free(op);
}

static void m_listing(struct session *s, json_t *id, json_t *params, const char *method, const char *key)
{
    if (!paths_ok(s, id, params, PATHS(key)))
        return;
    json_t *root = json_object_get(params, "root");
    if (root && !json_is_null(root) && !paths_ok(s, id, params, PATHS("root")))
        return;
    struct fs_op *op = op_new(s, FS_STREAM);
    if (!op)
        return rpc_reply_result(s, id, fs_error("ENOMEM", "ENOMEM: out of memory"));
    op->stream_id = ++g_daemon.next_stream_id;
    op->stream_live = true;
    json_t *ap = json_deep_copy(params);
    json_object_set_new(ap, "chan", json_integer((json_int_t)op->chan));
    if (agent_call(s->sb, method, ap, on_stream_done, NULL, NULL, op) < 0) {
        op_free(op);
        return rpc_reply_result(s, id, fs_error("EIO", "EIO: cannot reach the sandbox's agent"));
    }
    rpc_notify(s, "$sandbox.stream.start", json_pack("{s:I}", "streamId", (json_int_t)op->stream_id));
    rpc_reply_result(s, id, json_pack("{s:{s:I}}", "ok", "streamId", (json_int_t)op->stream_id));
}
static void m_walk(struct session *s, json_t *id, json_t *params) { m_listing(s, id, params, "walk", "path"); }

/* hutch's own (docs/protocol.md "Binary streams"): a file of any size as a server stream
 * under credit, for `hutch cp`; readFile answers in one message and stops at ~74 MiB. */
static void m_readstream(struct session *s, json_t *id, json_t *params)
{
    if (!paths_ok(s, id, params, PATHS("path")))
        return;
    struct fs_op *op = op_new(s, FS_DOWNLOAD);
    if (!op)
        return rpc_reply_result(s, id, fs_error("ENOMEM", "ENOMEM: out of memory"));
    op->stream_id = ++g_daemon.next_stream_id;
    op->stream_live = true;
    json_t *ap = json_pack("{s:O, s:I}", "path", json_object_get(params, "path"), "chan", (json_int_t)op->chan);
    if (agent_call(s->sb, "readFile", ap, on_stream_done, NULL, NULL, op) < 0) {
        op_free(op);
        return rpc_reply_result(s, id, fs_error("EIO", "EIO: cannot reach the sandbox's agent"));
    }
    rpc_notify(s, "$sandbox.stream.start", json_pack("{s:I}", "streamId", (json_int_t)op->stream_id));
    rpc_reply_result(s, id, json_pack("{s:{s:I}}", "ok", "streamId", (json_int_t)op->stream_id));
}
static void m_glob(struct session *s, json_t *id, json_t *params) { m_listing(s, id, params, "expandGlob", "glob"); }

/* ---- uploads ---------------------------------------------------------- */

static void on_write_done(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    struct fs_op *op = ud;
    s = op->s;
    if (s) {
        op_unbind_upload(s, op); /* a failed upload: drop what the client still sends for it */
        if (op->failed == EPIPE && reply && json_object_get(reply, "error"))
            rpc_reply_result(s, rpc_id, fs_error("EPIPE", "EPIPE: the upload stream failed on the client; "
                                                          "the file was not completely written"));
        else
            rpc_reply_result(s, rpc_id, fs_translate(reply));
    }
    op_free(op);
}

void rpc_fs_upload_failed(struct sandbox *sb, uint32_t chan, int why)
{
    /* Like Deno's writeFile of a stream, what was written stays (no atomicity
     * is promised); the caller learns that the write failed. */
    for (struct fs_op *op = g_ops; op; op = op->next)
        if (op->sb == sb && op->chan == chan && op->kind == FS_WRITE) {
            op_cancel(op, why);
            return;
        }
}

static void m_write(struct session *s, json_t *id, json_t *params, bool text)
{
    if (!paths_ok(s, id, params, PATHS("path")))
        return;
    json_t *content = json_object_get(params, "content");
    json_t *jsid = json_object_get(params, "contentStreamId");
    json_t *opts = json_object_get(params, "options");
    if (!json_is_string(content) && !json_is_integer(jsid))
        return rpc_reply_result(s, id, fs_error("EINVAL", "EINVAL: writeFile needs \"content\" or \"contentStreamId\""));
    if (opts && !json_is_null(opts) && !json_is_object(opts))
        return rpc_reply_result(s, id, fs_error("EINVAL", "EINVAL: \"options\" must be an object"));
    uint8_t *data = NULL;
    size_t n = 0;
    if (json_is_string(content)) {
        size_t cl = json_string_length(content);
        if (text) {
            data = malloc(cl + 1);
            if (data)
                memcpy(data, json_string_value(content), cl);
            n = cl;
        } else {
            data = malloc(hx_b64_decoded_max(cl) + 1);
            if (data && hx_b64_decode(json_string_value(content), cl, data, &n) < 0) {
                free(data);
                return rpc_reply_result(s, id, fs_error("EINVAL", "EINVAL: \"content\" must be base64"));
            }
        }
        if (!data)
            return rpc_reply_result(s, id, fs_error("ENOMEM", "ENOMEM: out of memory"));
    }
    struct fs_op *op = op_new(s, FS_WRITE);
    if (!op) {
        free(data);
        return rpc_reply_result(s, id, fs_error("ENOMEM", "ENOMEM: out of memory"));
    }
    op_abortable(op, params, id);
    json_t *ap = json_pack("{s:O, s:I, s:O}", "path", json_object_get(params, "path"), "chan", (json_int_t)op->chan,
                           "options", json_is_object(opts) ? opts : json_null());
    struct sandbox *sb = s->sb;
    if (agent_call(sb, "writeFile", ap, on_write_done, s, id, op) < 0) {
        free(data);
        op_free(op);
        return rpc_reply_result(s, id, fs_error("EIO", "EIO: cannot reach the sandbox's agent"));
    }
    if (data) {
        /* Counted as stdin in flight: the same per-sandbox bound and acks. */
        for (size_t off = 0; off < n;) {
            size_t k = n - off > HX_FRAME_MAX ? HX_FRAME_MAX : n - off;
            if (agent_send(sb, HX_STDIN, op->chan, data + off, k) == 0)
                sb->stdin_inflight += k;
            off += k;
        }
        agent_send(sb, HX_STDIN, op->chan, NULL, 0);
        free(data);
        return;
    }
    if (json_integer_value(jsid) < 0 || !rpc_inbound_bind_chan(s, json_integer_value(jsid), op->chan))
        op_cancel(op, EINVAL); /* the worker answers ECANCELED */
}
static void m_writefile(struct session *s, json_t *id, json_t *params) { m_write(s, id, params, false); }
static void m_writetext(struct session *s, json_t *id, json_t *params) { m_write(s, id, params, true); }

/* ---- hooks from rpc.c ------------------------------------------------- */

void rpc_fs_on_drain(struct session *s)
{
    for (struct fs_op *op = g_ops; op; op = op->next)
        if (op->s == s && op->owed) {
            agent_credit(op->sb, op->chan, op->owed);
            op->owed = 0;
        }
}

void rpc_fs_stream_cancel(struct session *s, int64_t stream_id)
{
    for (struct fs_op *op = g_ops; op; op = op->next)
        if (op->s == s && (op->kind == FS_STREAM || op->kind == FS_DOWNLOAD) && op->stream_id == (uint64_t)stream_id &&
            op->stream_live) {
            op->stream_live = false;
            op_cancel(op, ECANCELED);
        }
}

void rpc_fs_session_closed(struct session *s)
{
    struct sandbox *sb = s->sb;
    for (struct fs_op *op = g_ops; op; op = op->next) {
        if (op->s != s)
            continue;
        op->s = NULL;
        if (op->kind != FS_WRITE) /* uploads end with their stream (rpc.c closes it) */
            op_cancel(op, ECANCELED);
        else if (op->owed && sb)
            agent_credit(sb, op->chan, op->owed);
    }
    for (struct fs_handle **pp = &g_handles; *pp;) {
        struct fs_handle *h = *pp;
        if (h->s != s) {
            pp = &h->next;
            continue;
        }
        *pp = h->next;
        if (sb && sb->state == SB_RUNNING)
            agent_call(sb, "fileClose", json_pack("{s:I}", "fileHandleId", (json_int_t)h->id), on_close_quiet, NULL,
                       NULL, NULL);
        handle_release(h, false);
    }
}

const struct rpc_method rpc_fs_methods[] = {
    {"readFile", m_readfile},      {"readTextFile", m_readtext},   {"writeFile", m_writefile},
    {"writeTextFile", m_writetext}, {"readDir", m_readdir},        {"remove", m_remove},
    {"mkdir", m_mkdir},            {"rename", m_rename},           {"stat", m_stat},
    {"lstat", m_lstat},            {"chmod", m_chmod},             {"chown", m_chown},
    {"copyFile", m_copy},          {"link", m_link},               {"symlink", m_symlink},
    {"readLink", m_readlink},      {"realPath", m_realpath},       {"truncate", m_truncate},
    {"umask", m_umask},            {"utime", m_utime},             {"makeTempDir", m_mktempdir},
    {"makeTempFile", m_mktempfile}, {"open", m_open},              {"create", m_create},
    {"fileClose", m_fclose},       {"fileLock", m_flock},          {"fileRead", m_fread},
    {"fileSeek", m_fseek},         {"fileStat", m_fstat},          {"fileSync", m_fsync},
    {"fileSyncData", m_fsyncdata}, {"fileTruncate", m_ftruncate},  {"fileUnlock", m_funlock},
    {"fileUtime", m_futime},       {"fileWrite", m_fwrite},        {"walk", m_walk},
    {"expandGlob", m_glob},        {"readFileStream", m_readstream}, /* hutch's own */
    {NULL, NULL},
};

/* ---- hutchd's own files ------------------------------------------------ */

int rpc_fs_put(struct session *s, json_t *rpc_id, const char *path, const void *data, size_t n, agent_reply_cb cb,
               void *ud)
{
    struct sandbox *sb = s->sb;
    uint32_t chan = new_chan();
    json_t *ap = json_pack("{s:s, s:I, s:{s:b, s:b, s:i}}", "path", path, "chan", (json_int_t)chan, "options",
                           "create", 1, "createNew", 1, "mode", 0600);
    int r = agent_call(sb, "writeFile", ap, cb, s, rpc_id, ud);
    if (r < 0)
        return r;
    const uint8_t *p = data;
    for (size_t off = 0; off < n;) { /* counted as stdin in flight, as an upload's bytes are */
        size_t k = n - off > HX_FRAME_MAX ? HX_FRAME_MAX : n - off;
        if (agent_send(sb, HX_STDIN, chan, p + off, k) == 0)
            sb->stdin_inflight += k;
        off += k;
    }
    agent_send(sb, HX_STDIN, chan, NULL, 0);
    return 0;
}
