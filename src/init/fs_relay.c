/* hutch-init's side of file operations: starts the fs worker (fsops.c) on
 * first use and relays frames between hutchd and it. PID 1 never touches a
 * path itself; what the worker sends back is checked (it runs as app, so
 * it is no more trusted than sandbox code) before it goes to hutchd. */
#include "init/init.h"
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <uv.h>
#include "lib/uvframe.h"
#include "lib/wire.h"

#define RELAY_MAX_CALLS 1024   /* fs calls outstanding in the worker */
#define RELAY_RBUF (HX_FRAME_HDR + HX_FRAME_MAX)

static const char *const fs_methods[] = {
    "readFile", "readTextFile", "writeFile", "writeTextFile", "readDir", "remove", "mkdir", "rename", "stat",
    "lstat", "chmod", "chown", "copyFile", "link", "symlink", "readLink", "realPath", "truncate", "umask", "utime",
    "makeTempDir", "makeTempFile", "open", "create", "fileClose", "fileLock", "fileRead", "fileSeek", "fileStat",
    "fileSync", "fileSyncData", "fileTruncate", "fileUnlock", "fileUtime", "fileWrite", "walk", "expandGlob",
    "fsCancel", "spliceFile",
};

static uv_pipe_t g_wpipe;
static bool g_up, g_closing;
static pid_t g_wpid = -1;
static struct hx_frame_rd g_wrd; /* what the worker sends */
static uint32_t g_calls[RELAY_MAX_CALLS];  /* request ids forwarded and not answered */
static unsigned g_ncalls;

static void send_error(uint32_t chan, int code, const char *msg)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", errno_name(code), msg);
    agent_send_frame(HX_REPLY, chan, buf, (size_t)n);
}

static void on_pipe_closed(uv_handle_t *h)
{
    (void)h;
    g_closing = false;
}

/* The worker died or misbehaved: fail what it owed, so hutchd's callers
 * (and the transfers behind them) end; the next call starts a new one. */
static void worker_lost(const char *why)
{
    if (!g_up)
        return;
    g_up = false;
    if (g_wpid > 0)
        kill(g_wpid, SIGKILL); /* reaped by PID 1's SIGCHLD handler as an unknown child */
    g_wpid = -1;
    g_closing = true;
    uv_close((uv_handle_t *)&g_wpipe, on_pipe_closed);
    for (unsigned i = 0; i < g_ncalls; i++)
        send_error(g_calls[i], EIO, why);
    g_ncalls = 0;
    g_wrd.len = 0;
}

void fsrelay_reset(void)
{
    worker_lost("hutchd went away");
}

static bool call_done(uint32_t req)
{
    for (unsigned i = 0; i < g_ncalls; i++)
        if (g_calls[i] == req) {
            g_calls[i] = g_calls[--g_ncalls];
            return true;
        }
    return false;
}

static void worker_frame(const struct hx_frame *f)
{
    switch (f->type) {
    case HX_REPLY:
        if (!call_done(f->chan))
            return worker_lost("EIO: the fs worker answered a call it was not given");
        break;
    case HX_FS_DATA:
    case HX_STDIN_ACK:
        if (f->chan < HX_FS_CHAN_BASE || (f->type == HX_STDIN_ACK && f->len != 4))
            return worker_lost("EIO: the fs worker sent a bad stream frame");
        break;
    default:
        return worker_lost("EIO: the fs worker sent an unexpected frame");
    }
    agent_send_frame(f->type, f->chan, f->payload, f->len);
}

static bool take_worker_frame(void *ctx, const struct hx_frame *f)
{
    worker_frame(f);
    return g_up; /* worker_lost: the rest is not read */
}

static void on_worker_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    *buf = uv_buf_init((char *)g_wrd.buf + g_wrd.len, (unsigned)(g_wrd.cap - g_wrd.len));
}

static void on_worker_read(uv_stream_t *h, ssize_t n, const uv_buf_t *buf)
{
    if (n < 0)
        return worker_lost("EIO: the fs worker exited");
    if (hx_uv_drop_fds(&g_wpipe)) /* descriptors go to the worker, never from it */
        return worker_lost("EIO: the fs worker sent a file descriptor");
    g_wrd.len += (size_t)n;
    if (hx_frames_take(&g_wrd, take_worker_frame, NULL) < 0)
        worker_lost("EIO: the fs worker sent a malformed frame");
}

static int worker_start(struct hx_err *e)
{
    if (g_up)
        return 0;
    if (g_closing)
        return hx_fail(e, EAGAIN, "EAGAIN: the fs worker is restarting");
    g_wrd.cap = RELAY_RBUF;
    if (!g_wrd.buf && !(g_wrd.buf = malloc(g_wrd.cap)))
        return hx_fail(e, ENOMEM, "ENOMEM: out of memory");
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return hx_fail(e, errno, "fs worker: socketpair: %m");
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(sv[0]);
        close(sv[1]);
        return hx_fail(e, err, "fs worker: fork: %s", strerror(err));
    }
    if (pid == 0) {
        /* Only the worker's socket survives: never the socket to hutchd. */
        if (dup2(sv[1], 3) < 0)
            _exit(1);
        close_range(4, ~0U, 0);
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        for (int sig = 1; sig < NSIG; sig++)
            if (sig != SIGPIPE)
                sigaction(sig, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        fs_worker_main(3);
    }
    close(sv[1]);
    int r = uv_pipe_init(uv_default_loop(), &g_wpipe, 1); /* ipc: spliceFile's socket goes along */
    if (r == 0)
        r = uv_pipe_open(&g_wpipe, sv[0]);
    if (r < 0) {
        close(sv[0]);
        kill(pid, SIGKILL);
        return hx_fail(e, -r, "fs worker: %s", uv_strerror(r));
    }
    g_up = true;
    g_wpid = pid;
    g_wrd.len = 0;
    uv_read_start((uv_stream_t *)&g_wpipe, on_worker_alloc, on_worker_read);
    return 0;
}

static void on_relay_failed(uv_stream_t *st, int status)
{
    worker_lost("EIO: writing to the fs worker failed");
}

static int forward(uint16_t type, uint32_t chan, const uint8_t *p, uint32_t len)
{
    return hx_uv_send_frame((uv_stream_t *)&g_wpipe, type, chan, p, len, false, on_relay_failed);
}

static void on_fdh_closed(uv_handle_t *h)
{
    free(h);
}

bool fsrelay_call(uint32_t chan, const char *method, const uint8_t *payload, uint32_t len)
{
    bool fs = false;
    for (size_t i = 0; i < HX_ARRAY_LEN(fs_methods) && !fs; i++)
        fs = strcmp(fs_methods[i], method) == 0;
    if (!fs)
        return false;
    /* hutch's raw file channel: the socket hutchd sent with this call, taken
     * before anything can refuse the call, so that it never pairs with
     * another one */
    uv_pipe_t *fdh = NULL;
    if (strcmp(method, "spliceFile") == 0 && !(fdh = agent_take_fd())) {
        send_error(chan, EBADF, "EBADF: spliceFile came without its socket");
        return true;
    }
    struct hx_err e = {0};
    int code = 0;
    const char *why = NULL;
    if (g_ncalls >= RELAY_MAX_CALLS) {
        code = EAGAIN, why = "EAGAIN: too many file operations in flight";
    } else if (worker_start(&e) < 0) {
        code = e.code, why = "EIO: cannot start the fs worker";
    } else {
        int r = fdh ? hx_uv_send_frame_fd((uv_stream_t *)&g_wpipe, HX_CALL, chan, payload, len, false, fdh,
                                          on_relay_failed)
                    : forward(HX_CALL, chan, payload, len);
        fdh = NULL; /* hx_uv_send_frame_fd owns it, also when it fails */
        if (r < 0)
            code = ENOMEM, why = "ENOMEM: out of memory";
    }
    if (fdh)
        uv_close((uv_handle_t *)fdh, on_fdh_closed);
    if (why) {
        send_error(chan, code, why);
        return true;
    }
    g_calls[g_ncalls++] = chan;
    return true;
}

bool fsrelay_frame(uint16_t type, uint32_t chan, const uint8_t *payload, uint32_t len)
{
    if (chan < HX_FS_CHAN_BASE)
        return false;
    if (!g_up) {
        /* No worker, no stream: acknowledge uploads so hutchd's window moves. */
        if (type == HX_STDIN && len) {
            uint8_t ack[4];
            hx_put_u32(ack, len);
            agent_send_frame(HX_STDIN_ACK, chan, ack, 4);
        }
        return true;
    }
    if (forward(type, chan, payload, len) < 0)
        worker_lost("EIO: out of memory relaying to the fs worker");
    return true;
}
