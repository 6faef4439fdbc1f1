/* hutch's raw file channel (docs/protocol.md "Raw file transfers"):
 * GET and PUT /hutch/v1/sandboxes/{id}/files?path=P move one regular file's
 * bytes as a plain HTTP body, with splice(2) and no copy through user space.
 *
 * hutchd makes a socketpair and passes one end to the sandbox's fs worker
 * with a spliceFile call (SCM_RIGHTS, through hutch-init); the worker opens
 * the file as app, with the same path rules as every fs call, and splices
 * between it and its end. hutchd splices between its end and the client's
 * socket through a pipe of its own. Why a socketpair and not a pipe to the
 * worker: every operation on a pipe takes the pipe's mutex, which a process
 * holding the other end can keep for as long as it likes (a splice from a
 * socket that never delivers, into the pipe); nothing a socket's peer does
 * makes our non-blocking send or receive wait. So hutchd's event loop only
 * ever touches descriptors it made and the sandbox never holds: its own pipe
 * and its own end of the socketpair, both non-blocking; it never receives a
 * descriptor from the sandbox. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "daemon/api/http.h"
#include "daemon/core/rest_files.h"
#include "daemon/core/metrics.h"
#include "daemon/core/sandbox.h"

#define XFER_PIPE (1u << 20)          /* bytes our pipe holds */
#define XFER_SOCKBUF (4 << 20)        /* send buffer of each end of the socketpair */
#define XFER_TURN (16u << 20)         /* bytes one transfer moves before the loop serves others */
#define XFER_IDLE_MS 60000            /* no byte moved for this long: the transfer is cut */
#define XFER_PER_SANDBOX 16

struct xfer {
    struct xfer *next;
    char sb_id[32];
    struct http_conn *c;              /* NULL once the response was given */
    int refs;                         /* the conn, the agent call, each poll handle closing */
    bool up;                          /* PUT */
    bool relaying, relayed;           /* bytes are moving / all of them moved */
    int us;                           /* our end of the socketpair */
    int tcp;                          /* the client's socket (a duplicate, http_conn_detach) */
    int a, b;                         /* bytes go from a to b: tcp → us (PUT), us → tcp (GET) */
    int p[2];
    size_t pcap, inpipe;
    bool pipe_full;                   /* a splice into it was refused while a had bytes */
    uint64_t left;                    /* bytes still to take from a */
    uint64_t size;
    uint8_t *pre;                     /* bytes for the pipe before a's: the body's start (PUT), the head (GET) */
    size_t pre_len, pre_off;
    uv_poll_t pa, pb;
    bool pa_init, pb_init;
    int pa_ev, pb_ev;
    char path[SANDBOX_PATH_MAX + 1];
};

static struct xfer *g_xfers;

static void xfer_unref(struct xfer *x)
{
    if (--x->refs > 0)
        return;
    for (struct xfer **pp = &g_xfers; *pp; pp = &(*pp)->next)
        if (*pp == x) {
            *pp = x->next;
            break;
        }
    free(x->pre);
    free(x);
}

static void on_poll_closed(uv_handle_t *h)
{
    xfer_unref(h->data);
}

/* Stops moving bytes and closes everything but the conn. Closing our end of
 * the socketpair is how the worker learns that a transfer was cut. */
static void relay_stop(struct xfer *x)
{
    x->relaying = false;
    if (x->pa_init) {
        x->pa_init = false;
        x->refs++;
        uv_close((uv_handle_t *)&x->pa, on_poll_closed);
    }
    if (x->pb_init) {
        x->pb_init = false;
        x->refs++;
        uv_close((uv_handle_t *)&x->pb, on_poll_closed);
    }
    int *fds[] = {&x->us, &x->tcp, &x->p[0], &x->p[1]};
    for (size_t i = 0; i < HX_ARRAY_LEN(fds); i++)
        if (*fds[i] >= 0) {
            close(*fds[i]);
            *fds[i] = -1;
        }
}

/* The response is given (or the conn released): the conn's reference goes. */
static void conn_done_ok(struct xfer *x, bool ok)
{
    metrics_raw_file(x->up, ok, ok ? x->size : 0); /* metrics: */
    x->c = NULL;
    xfer_unref(x);
}

static void conn_done(struct xfer *x)
{
    conn_done_ok(x, false);
}

static void respond_error(struct xfer *x, int status, const char *code, const char *msg)
{
    relay_stop(x);
    struct http_conn *c = x->c;
    conn_done(x);
    http_respond_error(c, status, code, "%s", msg);
}

/* The transfer was cut after bytes went out: only closing says so now. */
static void cut(struct xfer *x)
{
    relay_stop(x);
    struct http_conn *c = x->c;
    conn_done(x);
    http_conn_close(c);
    http_stream_end(c); /* releases it */
}

static int errno_status(const char *code)
{
    static const struct { const char *code; int status; } map[] = {
        {"ENOENT", 404}, {"EISDIR", 409}, {"ENOTDIR", 409}, {"EEXIST", 409}, {"EACCES", 403}, {"EPERM", 403},
        {"EROFS", 403}, {"EINVAL", 400}, {"ENAMETOOLONG", 400}, {"ELOOP", 400}, {"ENOSPC", 507}, {"EDQUOT", 507},
        {"EFBIG", 507}, {"EAGAIN", 429}, {"EMFILE", 503}, {"ENFILE", 503}, {"ENOMEM", 503},
    };
    for (size_t i = 0; i < HX_ARRAY_LEN(map); i++)
        if (strcmp(map[i].code, code) == 0)
            return map[i].status;
    return 502;
}

/* The worker's {"error": {"code", "message"}} as the client's answer; the
 * code must look like an errno name (the sandbox is not trusted). */
static void respond_agent_error(struct xfer *x, json_t *reply)
{
    if (!reply)
        return respond_error(x, 503, "SANDBOX_STOPPED", "the sandbox stopped during the transfer");
    json_t *err = json_object_get(reply, "error");
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    bool ok = code && code[0] == 'E' && strlen(code) < 16;
    for (const char *p = code; ok && *p; p++)
        ok = (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9');
    if (!ok)
        return respond_error(x, 502, "EIO", "the sandbox's file worker sent a malformed answer");
    respond_error(x, errno_status(code), code, msg && strlen(msg) < 4200 ? msg : code);
}

/* ---- moving the bytes ------------------------------------------------- */

static void pump(struct xfer *x);

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct xfer *x = h->data;
    if (x->relaying)
        pump(x);
}

/* False when the transfer had to be cut (x may be gone). */
static bool poll_want(struct xfer *x, uv_poll_t *h, bool *init, int *cur, int fd, int ev)
{
    if (ev == *cur)
        return true;
    if (!*init) {
        if (uv_poll_init(g_daemon.loop, h, fd) < 0) {
            cut(x);
            return false;
        }
        h->data = x;
        *init = true;
    }
    *cur = ev;
    if (ev)
        uv_poll_start(h, ev, on_poll);
    else
        uv_poll_stop(h);
    return true;
}

/* Everything moved: a download's response is complete; an upload waits for
 * the worker to say that the file took its name (on_reply). */
static void relay_done(struct xfer *x)
{
    x->relayed = true;
    relay_stop(x); /* the worker has every byte it was promised, or the client every byte */
    if (!x->up) {
        struct http_conn *c = x->c;
        conn_done_ok(x, true);
        http_stream_end(c);
    }
}

static void pump(struct xfer *x)
{
    size_t moved = 0;
    for (;;) {
        bool progress = false;
        if (x->pre_off < x->pre_len) {
            ssize_t n = write(x->p[1], x->pre + x->pre_off, x->pre_len - x->pre_off);
            if (n > 0) {
                x->pre_off += (size_t)n;
                x->inpipe += (size_t)n;
                progress = true;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                return cut(x);
            }
        }
        if (x->pre_off == x->pre_len && x->left > 0 && !x->pipe_full && x->inpipe < x->pcap) {
            size_t want = x->pcap - x->inpipe;
            ssize_t n = splice(x->a, NULL, x->p[1], NULL, x->left < want ? (size_t)x->left : want,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                x->inpipe += (size_t)n;
                x->left -= (uint64_t)n;
                progress = true;
            } else if (n == 0) {
                /* PUT: the client stopped before its Content-Length; GET: the
                 * worker did before the size it announced (file shrank, read
                 * error, sandbox gone). Either way the transfer is cut. */
                return cut(x);
            } else if (errno == EAGAIN) {
                int avail = 0;
                /* refused with bytes waiting: the pipe is out of slots, not a empty */
                if (ioctl(x->a, FIONREAD, &avail) == 0 && avail > 0 && x->inpipe > 0)
                    x->pipe_full = true;
            } else if (errno != EINTR) {
                return cut(x);
            }
        }
        if (x->inpipe > 0) {
            bool more = x->left > 0 || x->pre_off < x->pre_len;
            ssize_t n = splice(x->p[0], NULL, x->b, NULL, x->inpipe,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (more ? SPLICE_F_MORE : 0));
            if (n > 0) {
                x->inpipe -= (size_t)n;
                x->pipe_full = false;
                moved += (size_t)n;
                progress = true;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                if (!x->up)
                    return cut(x); /* the client left */
                /* the worker closed its end: its answer (on_reply) says why */
                relay_stop(x);
                return;
            }
        }
        if (x->left == 0 && x->inpipe == 0 && x->pre_off == x->pre_len)
            return relay_done(x);
        if (!progress || moved >= XFER_TURN)
            break;
    }
    if (moved && x->c)
        http_conn_set_deadline(x->c, XFER_IDLE_MS);
    int a_ev = x->pre_off == x->pre_len && x->left > 0 && !x->pipe_full && x->inpipe < x->pcap ? UV_READABLE : 0;
    int b_ev = x->inpipe > 0 ? UV_WRITABLE : 0;
    if (poll_want(x, &x->pa, &x->pa_init, &x->pa_ev, x->a, a_ev))
        poll_want(x, &x->pb, &x->pb_init, &x->pb_ev, x->b, b_ev);
}

static int relay_start(struct xfer *x)
{
    uint8_t *pending = NULL;
    size_t plen = 0;
    int fd = http_conn_detach(x->c, &pending, &plen);
    if (fd < 0)
        return fd;
    x->tcp = fd;
    if (x->up) {
        /* the body's start came with the head; what may follow it (a pipelined request) is dropped */
        x->pre = pending;
        x->pre_len = plen < x->size ? plen : (size_t)x->size;
        x->left = x->size - x->pre_len;
        x->a = x->tcp;
        x->b = x->us;
    } else {
        free(pending);
        char head[256];
        int n = snprintf(head, sizeof head,
                         "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %llu\r\n"
                         "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                         (unsigned long long)x->size);
        if (!(x->pre = malloc((size_t)n)))
            return -ENOMEM;
        memcpy(x->pre, head, (size_t)n);
        x->pre_len = (size_t)n;
        x->left = x->size;
        x->a = x->us;
        x->b = x->tcp;
    }
    x->relaying = true;
    http_conn_set_deadline(x->c, XFER_IDLE_MS);
    pump(x);
    return 0;
}

/* ---- the worker's answer ---------------------------------------------- */

static void on_reply(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    struct xfer *x = ud;
    if (!x->c) /* the client left first */
        return xfer_unref(x);
    json_t *ok = reply ? json_object_get(reply, "ok") : NULL;
    if (!x->up) {
        json_t *size = json_object_get(ok, "size");
        if (!ok)
            respond_agent_error(x, reply);
        else if (!json_is_integer(size) || json_integer_value(size) < 0)
            respond_error(x, 502, "EIO", "the sandbox's file worker sent a malformed answer");
        else {
            x->size = (uint64_t)json_integer_value(size);
            int r = relay_start(x);
            if (r < 0)
                respond_error(x, 503, "INTERNAL", "cannot start the transfer");
        }
        return xfer_unref(x);
    }
    if (!reply || !ok) { /* also while the client still sends: the rest of its body is drained unread */
        respond_agent_error(x, reply);
        return xfer_unref(x);
    }
    if (!x->relayed) {
        respond_error(x, 502, "EIO", "the sandbox's file worker answered before the upload ended");
        return xfer_unref(x);
    }
    struct http_conn *c = x->c;
    conn_done_ok(x, true);
    http_respond_json(c, 200, json_pack("{s:s, s:I}", "path", x->path, "size", (json_int_t)x->size));
    xfer_unref(x);
}

static void on_conn_abort(struct http_conn *c, void *ud)
{
    struct xfer *x = ud;
    relay_stop(x);
    conn_done(x);
    http_stream_end(c); /* releases the conn */
}

/* ---- the request ------------------------------------------------------ */

bool rest_files_raw_body(const char *method, const char *url)
{
    if (strcmp(method, "PUT") != 0 || strncmp(url, "/hutch/v1/sandboxes/", 20) != 0)
        return false;
    size_t n = strcspn(url, "?");
    return n >= 6 && strncmp(url + n - 6, "/files", 6) == 0;
}

static int socketpair_for_worker(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    for (int i = 0; i < 2; i++) { /* larger than the default 208 KiB: fewer wake-ups (root only) */
        int v = XFER_SOCKBUF;
        (void)setsockopt(sv[i], SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof v);
    }
    int fl = fcntl(sv[0], F_GETFL);
    if (fl < 0 || fcntl(sv[0], F_SETFL, fl | O_NONBLOCK) < 0) {
        int err = errno;
        close(sv[0]);
        close(sv[1]);
        return -err;
    }
    return 0;
}

void rest_files_handle(struct http_conn *c, const struct http_request *req, struct sandbox *sb)
{
    bool up = strcmp(req->method, "PUT") == 0;
    if (!up && strcmp(req->method, "GET") != 0)
        return http_respond_error(c, 405, "METHOD_NOT_ALLOWED", "use GET (download) or PUT (upload)");
    if (sb->state != SB_RUNNING || sb->pooled)
        return http_respond_error(c, 409, "SANDBOX_NOT_RUNNING", "the sandbox is not running");
    /* the fs calls' rules (rpc_fs.c check_path): non-empty, at most SANDBOX_PATH_MAX bytes, no NUL */
    char *path = http_query_get(req, "path");
    if (!path || !*path) {
        free(path);
        return http_respond_error(c, 400, "EINVAL", "EINVAL: the query parameter \"path\" is required");
    }
    bool nul = strstr(path, "%00") != NULL; /* http_query_get leaves "%00" undecoded */
    size_t plen = strlen(path);
    if (nul || plen > SANDBOX_PATH_MAX) {
        free(path);
        return http_respond_error(c, 400, nul ? "EINVAL" : "ENAMETOOLONG", nul ? "EINVAL: \"path\" contains a NUL byte"
                                  : "ENAMETOOLONG: \"path\" is longer than 4096 bytes");
    }
    int64_t mode = -1;
    char *m = up ? http_query_get(req, "mode") : NULL;
    if (m) {
        char *end;
        errno = 0;
        long v = strtol(m, &end, 8);
        bool bad = errno || end == m || *end || v < 0 || v > 07777;
        free(m);
        if (bad) {
            free(path);
            return http_respond_error(c, 400, "EINVAL", "EINVAL: \"mode\" must be octal, 0 to 7777");
        }
        mode = v;
    }
    if (up && req->content_length > INT64_MAX) {
        free(path);
        return http_respond_error(c, 413, "EFBIG", "EFBIG: Content-Length is too large");
    }
    unsigned n = 0;
    for (struct xfer *o = g_xfers; o; o = o->next)
        n += strcmp(o->sb_id, sb->id) == 0;
    if (n >= XFER_PER_SANDBOX) {
        free(path);
        return http_respond_error(c, 429, "EAGAIN", "EAGAIN: %u raw file transfers are running in this sandbox already",
                                  n);
    }
    struct xfer *x = calloc(1, sizeof *x);
    if (!x) {
        free(path);
        return http_respond_error(c, 503, "OUT_OF_MEMORY", "out of memory");
    }
    snprintf(x->path, sizeof x->path, "%s", path);
    free(path);
    snprintf(x->sb_id, sizeof x->sb_id, "%s", sb->id);
    x->c = c;
    x->up = up;
    x->size = up ? req->content_length : 0;
    x->us = x->tcp = x->p[0] = x->p[1] = -1;
    x->refs = 1;
    x->next = g_xfers;
    g_xfers = x;
    int sv[2];
    int r = socketpair_for_worker(sv);
    if (r < 0)
        return respond_error(x, 503, "INTERNAL", "cannot make the transfer's socket");
    x->us = sv[0];
    if (pipe2(x->p, O_CLOEXEC | O_NONBLOCK) < 0) {
        close(sv[1]);
        return respond_error(x, 503, "INTERNAL", "cannot make the transfer's pipe");
    }
    int cap = fcntl(x->p[1], F_SETPIPE_SZ, XFER_PIPE);
    if (cap < 0)
        cap = fcntl(x->p[1], F_GETPIPE_SZ);
    x->pcap = cap > 0 ? (size_t)cap : 65536;
    json_t *params = json_pack("{s:s, s:s}", "path", x->path, "direction", up ? "write" : "read");
    if (params && up) {
        json_object_set_new(params, "size", json_integer((json_int_t)x->size));
        if (mode >= 0)
            json_object_set_new(params, "fileMode", json_integer(mode));
    }
    if (!params) {
        close(sv[1]);
        return respond_error(x, 503, "OUT_OF_MEMORY", "out of memory");
    }
    r = agent_call_fd(sb, "spliceFile", params, sv[1], on_reply, x);
    if (r < 0)
        return respond_error(x, r == -EAGAIN || r == -ENOBUFS ? 503 : 502, "SANDBOX_BUSY",
                             "cannot reach the sandbox's agent");
    x->refs++;
    http_conn_on_abort(c, on_conn_abort, x);
    /* an upload's bytes start now: the worker reads them once it has the call */
    if (up && (r = relay_start(x)) < 0)
        return respond_error(x, 503, "INTERNAL", "cannot start the transfer");
}
