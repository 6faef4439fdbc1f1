/* hutch-init agent loop: frames from hutchd on fd 3 (calls, stdin, credit),
 * process output streaming with a credit window, and reaping of every child
 * (PID 1 adopts orphans). One libuv loop, no threads. */
#include "init/init.h"
#include <signal.h>
#include <stdio.h>
#include <stdarg.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <uv.h>
#include "lib/uvframe.h"
#include "lib/wire.h"

#define RBUF_CAP (HX_FRAME_HDR + HX_FRAME_MAX)
/* An idle sandbox's agent keeps this much of its read buffer resident; a
 * burst of large frames (file writes, stdin) touches the rest, which is handed
 * back to the kernel once the socket was quiet for RBUF_TRIM_MS (issue 15:
 * host memory per idle sandbox). */
#define RBUF_KEEP (16u * 1024u)
#define RBUF_TRIM_MS 2000
#define OUT_CHUNK (64u * 1024u)
#define SPAWN_MAX_ARGS 65536
#define SPAWN_MAX_ARGBYTES (2u * 1024u * 1024u)

struct proc;

struct ostream {
    uv_pipe_t pipe;
    struct proc *p;
    int fd;          /* HX_FD_STDOUT / HX_FD_STDERR */
    bool open;       /* handle initialised and not yet closed */
    bool done;       /* EOF sent (or never piped) */
    bool reading;
    uint32_t inflight; /* bytes sent and not yet credited */
};

struct proc {
    struct proc *next;
    pid_t pid;
    bool exited, exit_sent;
    int status;
    struct rusage ru;   /* wait4's: its own use and that of the children it reaped */
    int64_t started_us; /* CLOCK_MONOTONIC at spawn */
    struct ostream out[2];
    uv_pipe_t in;
    bool in_open, in_close_wanted;
    unsigned in_writes; /* uv_write requests pending on stdin */
    unsigned handles;   /* open uv handles; freed when 0 after exit_sent */
};

struct outreq {
    uv_write_t req;
    uint8_t *buf;
    uint32_t gen;
};

struct inreq {
    uv_write_t req;
    struct proc *p;
    uint32_t len;
    uint8_t data[];
};

/* Live restore (docs/restore.md): while no hutchd is connected, frames for
 * it wait here, in order, and output is read only while they stay under
 * HELD_MAX bytes (then the processes block on their full pipes). */
#define HELD_MAX (4u << 20)

struct held_frame {
    struct held_frame *next;
    uint8_t *buf;            /* header + payload */
    uint32_t len;            /* payload bytes */
};

static struct {
    int listen_fd;           /* INIT_RESTORE_FD once listening, -1 = die with the socket */
    uint64_t wait_ms;        /* how long to wait for a hutchd before ending the sandbox */
    int64_t deadline_ms;     /* the sandbox's timeout (ms since the epoch, 0 = none): no waiting past it */
    bool detached;           /* no hutchd connected */
    bool listening;
    uint32_t gen;            /* connection generation: late write errors of an old one are ignored */
    uv_pipe_t listener;
    uv_timer_t orphan;
    struct held_frame *head, **tail;
    size_t held_bytes;
} g_relink = {.listen_fd = -1};

static uv_loop_t *g_loop;
static uv_pipe_t *g_sock;
static uv_signal_t g_sigchld;
static uint8_t *g_rbuf;         /* RBUF_CAP bytes, its own mapping (see RBUF_KEEP) */
static size_t g_rhigh;          /* bytes of g_rbuf touched since it was last trimmed */
static uv_timer_t g_rtrim;
static size_t g_rlen;
static struct proc *g_procs;

static _Noreturn void shutdown_all(const char *why)
{
    (void)why;
    /* hutchd is gone (or broke the protocol): nobody can see or stop what
     * runs here any more, so nothing may keep running. As PID 1 of the
     * pid namespace, exiting is enough: the kernel then kills every process
     * in it (zap_pid_ns_processes), walking only this namespace's pids,
     * where kill(-1) walks every process of the host. */
    if (getpid() != 1)
        kill(-1, SIGKILL);
    _exit(0);
}

/* ---- sending ---------------------------------------------------------- */

static void sock_lost(const char *why);

static void on_sock_write(uv_write_t *req, int status)
{
    struct outreq *o = (struct outreq *)req;
    uint32_t gen = o->gen;
    free(o->buf);
    free(o);
    if (status < 0 && gen == g_relink.gen)
        sock_lost("write to hutchd failed");
}

/* Keeps a frame for the next hutchd. Diagnostics and file-transfer data are
 * dropped: their reader is gone (the fs worker is restarted on reconnect). */
static void hold_frame(uint16_t type, uint8_t *buf, uint32_t len)
{
    if (type == HX_LOG || type == HX_FS_DATA) {
        free(buf);
        return;
    }
    struct held_frame *h = malloc(sizeof *h);
    if (!h)
        shutdown_all("out of memory");
    h->next = NULL;
    h->buf = buf;
    h->len = len;
    *g_relink.tail = h;
    g_relink.tail = &h->next;
    g_relink.held_bytes += HX_FRAME_HDR + len;
}

/* Sends buf (HX_FRAME_HDR bytes of room, then len payload bytes) and takes
 * ownership of it. */
static void send_owned(uint16_t type, uint32_t chan, uint8_t *buf, uint32_t len)
{
    hx_frame_hdr_encode(buf, type, chan, len);
    if (g_relink.detached) {
        hold_frame(type, buf, len);
        return;
    }
    struct outreq *o = malloc(sizeof *o);
    if (!o)
        shutdown_all("out of memory");
    o->buf = buf;
    o->gen = g_relink.gen;
    uv_buf_t b = uv_buf_init((char *)buf, HX_FRAME_HDR + len);
    if (uv_write(&o->req, (uv_stream_t *)g_sock, &b, 1, on_sock_write) < 0) {
        free(o);
        hold_frame(type, buf, len); /* kept if the link comes back */
        sock_lost("write to hutchd failed");
    }
}

static void send_bytes(uint16_t type, uint32_t chan, const void *p, size_t len)
{
    if (len > HX_FRAME_MAX)
        len = HX_FRAME_MAX; /* callers never get here with more; never send a bad frame */
    uint8_t *buf = malloc(HX_FRAME_HDR + len);
    if (!buf)
        shutdown_all("out of memory");
    if (len)
        memcpy(buf + HX_FRAME_HDR, p, len);
    send_owned(type, chan, buf, (uint32_t)len);
}

/* Sends a JSON value and releases it. */
static void send_json(uint16_t type, uint32_t chan, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    if (!s)
        shutdown_all("out of memory");
    size_t n = strlen(s);
    if (n > HX_FRAME_MAX) {
        free(s);
        s = strdup("{\"error\":{\"code\":\"E2BIG\",\"message\":\"reply too large\"}}");
        if (!s)
            shutdown_all("out of memory");
        n = strlen(s);
    }
    send_bytes(type, chan, s, n);
    free(s);
}

/* For the fs relay (fs_relay.c): the oldest descriptor hutchd sent (it
 * arrives with the first byte of its call, so before the call is whole). */
uv_pipe_t *agent_take_fd(void)
{
    return g_sock ? hx_uv_take_fd(g_sock) : NULL;
}

/* For the fs relay (fs_relay.c): frames it passes on from the fs worker. */
void agent_send_frame(uint16_t type, uint32_t chan, const void *p, size_t len)
{
    send_bytes(type, chan, p, len);
}

static void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void agent_log(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    send_bytes(HX_LOG, 0, line, strnlen(line, sizeof line));
}

static void reply_ok(uint32_t chan, json_t *value)
{
    send_json(HX_REPLY, chan, json_pack("{s:o}", "ok", value ? value : json_null()));
}

static void reply_err(uint32_t chan, const struct hx_err *e)
{
    send_json(HX_REPLY, chan,
              json_pack("{s:{s:s,s:s}}", "error", "code", errno_name(e->code), "message", e->msg));
}

/* ---- processes -------------------------------------------------------- */

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct proc *proc_find(pid_t pid)
{
    for (struct proc *p = g_procs; p; p = p->next)
        if (p->pid == pid)
            return p;
    return NULL;
}

static void proc_unlink(struct proc *p)
{
    for (struct proc **pp = &g_procs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

static void on_handle_closed(uv_handle_t *h)
{
    struct proc *p = h->data;
    if (--p->handles == 0 && p->exit_sent)
        free(p);
}

static void close_stdin(struct proc *p)
{
    if (!p->in_open)
        return;
    p->in_open = false;
    uv_close((uv_handle_t *)&p->in, on_handle_closed);
}

/* The exit status is reported when the process is reaped, like Deno's
 * child.status; its output streams may outlive it (a background child can
 * hold the pipes), so the record stays until both have ended. */
static void send_exit(struct proc *p)
{
    int code = 0;
    const char *sig = NULL;
    char signame[32];
    if (WIFEXITED(p->status)) {
        code = WEXITSTATUS(p->status);
    } else if (WIFSIGNALED(p->status)) {
        int s = WTERMSIG(p->status);
        code = 128 + s;
        const char *abbrev = sigabbrev_np(s);
        if (abbrev)
            snprintf(signame, sizeof signame, "SIG%s", abbrev);
        else
            snprintf(signame, sizeof signame, "SIG%d", s);
        sig = signame;
    }
    /* usage: per-command metering (docs/agent-protocol.md); ru_maxrss is in KiB,
     * ru_inblock/ru_oublock in 512-byte blocks. */
    const struct rusage *ru = &p->ru;
    int64_t wall = mono_us() - p->started_us;
    json_t *usage = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}",
        "cpuUserUs", (json_int_t)ru->ru_utime.tv_sec * 1000000 + ru->ru_utime.tv_usec,
        "cpuSystemUs", (json_int_t)ru->ru_stime.tv_sec * 1000000 + ru->ru_stime.tv_usec,
        "maxRssKib", (json_int_t)ru->ru_maxrss, "blockReadBytes", (json_int_t)ru->ru_inblock * 512,
        "blockWriteBytes", (json_int_t)ru->ru_oublock * 512, "wallUs", (json_int_t)(wall > 0 ? wall : 0));
    send_json(HX_EXIT, (uint32_t)p->pid,
              json_pack("{s:i,s:o,s:o}", "code", code, "signal", sig ? json_string(sig) : json_null(), "usage",
                        usage));
    p->exit_sent = true;
    /* Writes queued on stdin complete (with ECANCELED) and are acked. */
    close_stdin(p);
}

static void maybe_finish(struct proc *p)
{
    if (!p->exit_sent || !p->out[0].done || !p->out[1].done)
        return;
    proc_unlink(p);
    if (p->handles == 0)
        free(p);
}

static void on_sigchld(uv_signal_t *h, int signum)
{
    int st;
    pid_t pid;
    struct rusage ru;
    while ((pid = wait4(-1, &st, WNOHANG, &ru)) > 0) {
        struct proc *p = NULL;
        for (struct proc *q = g_procs; q; q = q->next)
            if (q->pid == pid && !q->exited)
                p = q;
        if (!p)
            continue; /* an orphan we adopted, or a failed spawn: just reaped */
        p->exited = true;
        p->status = st;
        p->ru = ru;
        send_exit(p);
        maybe_finish(p);
    }
}

/* ---- output streams --------------------------------------------------- */

static void out_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct ostream *s = (struct ostream *)((char *)h - offsetof(struct ostream, pipe));
    uint32_t room = HX_OUTPUT_WINDOW - (s->inflight < HX_OUTPUT_WINDOW ? s->inflight : HX_OUTPUT_WINDOW);
    if (g_relink.detached && g_relink.held_bytes >= HELD_MAX)
        room = 0; /* live restore: what waits for hutchd is bounded */
    size_t n = room < OUT_CHUNK ? room : OUT_CHUNK;
    if (n == 0) {
        *buf = uv_buf_init(NULL, 0); /* libuv treats this as ENOBUFS: we stop reading below */
        return;
    }
    char *mem = malloc(HX_FRAME_HDR + n);
    *buf = mem ? uv_buf_init(mem + HX_FRAME_HDR, (unsigned)n) : uv_buf_init(NULL, 0);
}

static void out_stop(struct ostream *s)
{
    if (s->reading) {
        uv_read_stop((uv_stream_t *)&s->pipe);
        s->reading = false;
    }
}

static void out_finish(struct ostream *s)
{
    out_stop(s);
    send_bytes(HX_OUTPUT, HX_STREAM_CHAN(s->p->pid, (uint32_t)s->fd), NULL, 0);
    s->done = true;
    s->open = false;
    uv_close((uv_handle_t *)&s->pipe, on_handle_closed);
    maybe_finish(s->p);
}

static void on_out_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    struct ostream *s = (struct ostream *)((char *)h - offsetof(struct ostream, pipe));
    uint8_t *frame = buf->base ? (uint8_t *)buf->base - HX_FRAME_HDR : NULL;
    if (nread > 0) {
        s->inflight += (uint32_t)nread;
        send_owned(HX_OUTPUT, HX_STREAM_CHAN(s->p->pid, (uint32_t)s->fd), frame, (uint32_t)nread);
        if (s->inflight >= HX_OUTPUT_WINDOW)
            out_stop(s); /* backpressure: the process blocks on a full pipe */
        return;
    }
    free(frame);
    if (nread == UV_ENOBUFS) {
        out_stop(s);
        return;
    }
    if (nread < 0)
        out_finish(s);
}

static void on_credit(uint32_t chan, const uint8_t *p, uint32_t len)
{
    if (len != 4)
        return;
    struct proc *pr = proc_find((pid_t)HX_STREAM_PID(chan));
    if (!pr)
        return;
    struct ostream *s = &pr->out[HX_STREAM_FD(chan)];
    uint32_t n = hx_get_u32(p);
    s->inflight -= n < s->inflight ? n : s->inflight;
    if (s->open && !s->done && !s->reading && s->inflight < HX_OUTPUT_WINDOW) {
        if (uv_read_start((uv_stream_t *)&s->pipe, out_alloc, on_out_read) == 0)
            s->reading = true;
    }
}

/* ---- stdin ------------------------------------------------------------ */

static void send_stdin_ack(pid_t pid, uint32_t n)
{
    uint8_t b[4];
    hx_put_u32(b, n);
    send_bytes(HX_STDIN_ACK, (uint32_t)pid, b, 4);
}

static void on_stdin_written(uv_write_t *req, int status)
{
    struct inreq *w = (struct inreq *)req;
    struct proc *p = w->p;
    /* Acked whether written or discarded: the daemon only counts bytes in flight. */
    send_stdin_ack(p->pid, w->len);
    free(w);
    p->in_writes--;
    if (status < 0 && status != UV_ECANCELED)
        close_stdin(p); /* EPIPE: the reader is gone, discard what follows */
    else if (p->in_close_wanted && p->in_writes == 0)
        close_stdin(p);
}

static void on_stdin(uint32_t chan, const uint8_t *data, uint32_t len)
{
    struct proc *p = proc_find((pid_t)chan);
    if (!p || !p->in_open) {
        if (len)
            send_stdin_ack((pid_t)chan, len);
        return;
    }
    if (len == 0) {
        p->in_close_wanted = true;
        if (p->in_writes == 0)
            close_stdin(p);
        return;
    }
    struct inreq *w = malloc(sizeof *w + len);
    if (!w)
        shutdown_all("out of memory");
    w->p = p;
    w->len = len;
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init((char *)w->data, len);
    if (uv_write(&w->req, (uv_stream_t *)&p->in, &b, 1, on_stdin_written) < 0) {
        free(w);
        send_stdin_ack(p->pid, len);
        close_stdin(p);
        return;
    }
    p->in_writes++;
}

/* ---- calls ------------------------------------------------------------ */

static bool opt_bool(json_t *params, const char *k, bool dflt, bool *out)
{
    json_t *v = json_object_get(params, k);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return true;
    }
    if (!json_is_boolean(v))
        return false;
    *out = json_is_true(v);
    return true;
}

/* Wraps fd in h; on failure fd and h are closed (h counted until its close callback). */
static int open_pipe_handle(struct proc *p, uv_pipe_t *h, int fd, struct hx_err *e)
{
    int r = uv_pipe_init(g_loop, h, 0);
    if (r < 0) {
        close(fd);
        return hx_fail(e, -r, "uv_pipe_init: %s", uv_strerror(r));
    }
    h->data = p;
    p->handles++;
    r = uv_pipe_open(h, fd);
    if (r < 0) {
        close(fd);
        uv_close((uv_handle_t *)h, on_handle_closed);
        return hx_fail(e, -r, "uv_pipe_open: %s", uv_strerror(r));
    }
    return 0;
}

static json_t *call_spawn(json_t *params, struct hx_err *e)
{
    const char *command = json_string_value(json_object_get(params, "command"));
    if (!command || !*command || strnlen(command, 4097) > 4096) {
        hx_fail(e, EINVAL, "spawn: command must be a non-empty string");
        return NULL;
    }
    json_t *args = json_object_get(params, "args");
    if (args && !json_is_null(args) && !json_is_array(args)) {
        hx_fail(e, EINVAL, "spawn: args must be an array");
        return NULL;
    }
    size_t nargs = json_is_array(args) ? json_array_size(args) : 0;
    if (nargs > SPAWN_MAX_ARGS) {
        hx_fail(e, E2BIG, "spawn: too many arguments");
        return NULL;
    }
    json_t *env = json_object_get(params, "env");
    if (env && !json_is_null(env) && !json_is_object(env)) {
        hx_fail(e, EINVAL, "spawn: env must be an object");
        return NULL;
    }
    bool clear, pin, pout, perr;
    if (!opt_bool(params, "clearEnv", false, &clear) || !opt_bool(params, "stdin", false, &pin) ||
        !opt_bool(params, "stdout", true, &pout) || !opt_bool(params, "stderr", true, &perr)) {
        hx_fail(e, EINVAL, "spawn: clearEnv/stdin/stdout/stderr must be booleans");
        return NULL;
    }
    json_t *jcwd = json_object_get(params, "cwd");
    const char *cwd = "/home/app";
    if (jcwd && !json_is_null(jcwd)) {
        cwd = json_string_value(jcwd);
        if (!cwd || !*cwd || strnlen(cwd, 4097) > 4096) {
            hx_fail(e, EINVAL, "spawn: cwd must be a non-empty string");
            return NULL;
        }
    }
    json_t *juid = json_object_get(params, "uid");
    uid_t uid = INIT_APP_UID;
    if (juid && !json_is_null(juid)) {
        if (!json_is_integer(juid) || (json_integer_value(juid) != 0 && json_integer_value(juid) != INIT_APP_UID)) {
            hx_fail(e, EINVAL, "spawn: uid must be 0 or 1000");
            return NULL;
        }
        uid = (uid_t)json_integer_value(juid);
    }

    json_t *jpty = json_object_get(params, "pty");
    unsigned short rows = 0, cols = 0;
    if (jpty && !json_is_null(jpty)) {
        json_int_t r = json_integer_value(json_object_get(jpty, "rows")), c = json_integer_value(json_object_get(jpty, "cols"));
        if (!json_is_object(jpty) || r < 1 || r > 1000 || c < 1 || c > 1000) {
            hx_fail(e, EINVAL, "spawn: pty must be {rows, cols} of 1..1000");
            return NULL;
        }
        rows = (unsigned short)r;
        cols = (unsigned short)c;
    }

    const char **argv = calloc(nargs + 2, sizeof *argv);
    if (!argv) {
        hx_fail(e, ENOMEM, "out of memory");
        return NULL;
    }
    argv[0] = command;
    size_t bytes = strlen(command);
    for (size_t i = 0; i < nargs; i++) {
        const char *a = json_string_value(json_array_get(args, i));
        if (!a) {
            free(argv);
            hx_fail(e, EINVAL, "spawn: args must be strings");
            return NULL;
        }
        bytes += strlen(a) + 1;
        argv[i + 1] = a;
    }
    if (bytes > SPAWN_MAX_ARGBYTES) {
        free(argv);
        hx_fail(e, E2BIG, "spawn: arguments too long");
        return NULL;
    }
    char **envp = env_build(clear, env, e);
    if (!envp) {
        free(argv);
        return NULL;
    }
    struct spawn_req req = {.command = command, .argv = argv, .envp = envp, .cwd = cwd, .uid = uid,
                            .pipe_in = pin, .pipe_out = pout, .pipe_err = perr, .pty = rows > 0, .rows = rows,
                            .cols = cols};
    struct spawn_res res;
    int r = spawn_process(&req, &res, e);
    free(argv);
    env_free_block(envp);
    if (r < 0)
        return NULL;

    struct proc *p = calloc(1, sizeof *p);
    if (!p)
        shutdown_all("out of memory");
    p->pid = res.pid;
    p->started_us = mono_us();
    for (int i = 0; i < 2; i++) {
        p->out[i].p = p;
        p->out[i].fd = i;
        p->out[i].done = true;
    }
    p->next = g_procs;
    g_procs = p;
    /* From here the process runs: failures below only lose its streams. */
    int fds[2] = {res.out_fd, res.err_fd};
    for (int i = 0; i < 2; i++) {
        if (fds[i] < 0)
            continue;
        struct ostream *s = &p->out[i];
        struct hx_err pe = {0};
        if (open_pipe_handle(p, &s->pipe, fds[i], &pe) < 0) {
            agent_log("pid %d: %s", (int)p->pid, pe.msg);
            continue;
        }
        s->open = true;
        s->done = false;
        if (uv_read_start((uv_stream_t *)&s->pipe, out_alloc, on_out_read) == 0)
            s->reading = true;
    }
    if (res.in_fd >= 0) {
        struct hx_err pe = {0};
        if (open_pipe_handle(p, &p->in, res.in_fd, &pe) < 0) {
            agent_log("pid %d: %s", (int)p->pid, pe.msg);
        } else {
            p->in_open = true;
        }
    }
    /* The child may already be gone (SIGCHLD is delivered through the loop). */
    return json_pack("{s:i}", "pid", (int)p->pid);
}

static json_t *call_kill(json_t *params, struct hx_err *e)
{
    json_t *jpid = json_object_get(params, "pid"), *jsig = json_object_get(params, "signal");
    if (!json_is_integer(jpid) || json_integer_value(jpid) <= 1 || json_integer_value(jpid) > INT32_MAX) {
        hx_fail(e, EINVAL, "kill: bad pid");
        return NULL;
    }
    int sig = SIGKILL;
    if (jsig && !json_is_null(jsig)) {
        if (!json_is_integer(jsig) || json_integer_value(jsig) < 1 || json_integer_value(jsig) >= NSIG) {
            hx_fail(e, EINVAL, "kill: bad signal");
            return NULL;
        }
        sig = (int)json_integer_value(jsig);
    }
    pid_t pid = (pid_t)json_integer_value(jpid);
    struct proc *p = proc_find(pid);
    /* Only our own live children: never an orphan whose pid was reused. */
    if (!p || p->exited) {
        hx_fail(e, ESRCH, "kill %d: no such process", (int)pid);
        return NULL;
    }
    /* group: its whole process group (it leads its own session, so the group
     * is its id), e.g. what it started in the background; only hutchd asks */
    bool group = json_is_true(json_object_get(params, "group"));
    if (kill(group ? -pid : pid, sig) < 0) {
        hx_fail(e, errno, "kill %d: %m", (int)pid);
        return NULL;
    }
    return json_null();
}

/* ptyResize {pid, rows, cols}: the kernel tells the terminal's foreground group (SIGWINCH) */
static json_t *call_pty_resize(json_t *params, struct hx_err *e)
{
    json_int_t pid = json_integer_value(json_object_get(params, "pid"));
    json_int_t r = json_integer_value(json_object_get(params, "rows")), c = json_integer_value(json_object_get(params, "cols"));
    if (pid <= 1 || pid > INT32_MAX || r < 1 || r > 1000 || c < 1 || c > 1000) {
        hx_fail(e, EINVAL, "ptyResize: wants {pid, rows, cols} with 1..1000");
        return NULL;
    }
    struct proc *p = proc_find((pid_t)pid);
    uv_os_fd_t fd = -1;
    if (!p || p->exited || !p->out[0].open || uv_fileno((uv_handle_t *)&p->out[0].pipe, &fd) < 0 || !isatty(fd)) {
        hx_fail(e, ESRCH, "ptyResize %d: no such process on a pseudo-terminal", (int)pid);
        return NULL;
    }
    struct winsize ws = {.ws_row = (unsigned short)r, .ws_col = (unsigned short)c};
    if (ioctl(fd, TIOCSWINSZ, &ws) < 0) {
        hx_fail(e, errno, "ptyResize %d: %m", (int)pid);
        return NULL;
    }
    return json_null();
}

static const char *key_param(json_t *params, struct hx_err *e)
{
    const char *k = json_string_value(json_object_get(params, "key"));
    if (!env_key_valid(k)) {
        hx_fail(e, EINVAL, "invalid environment variable name");
        return NULL;
    }
    return k;
}

static void on_call(uint32_t chan, const uint8_t *payload, uint32_t len)
{
    struct hx_err e = {0};
    json_error_t jerr;
    json_t *msg = json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *result = NULL;
    bool ok = false;
    const char *method = msg ? json_string_value(json_object_get(msg, "method")) : NULL;
    json_t *params = msg ? json_object_get(msg, "params") : NULL;
    if (!method) {
        hx_fail(&e, EINVAL, "call: expected {\"method\": str, \"params\": obj}");
    } else if (params && !json_is_null(params) && !json_is_object(params)) {
        hx_fail(&e, EINVAL, "call: params must be an object");
    } else if (fsrelay_call(chan, method, payload, len)) {
        /* File methods run in the fs worker (fs_relay.c), which answers. */
        json_decref(msg);
        return;
    } else {
        json_t *empty = NULL;
        if (!json_is_object(params))
            params = empty = json_object();
        if (strcmp(method, "spawn") == 0) {
            result = call_spawn(params, &e);
            ok = result != NULL;
        } else if (strcmp(method, "kill") == 0) {
            result = call_kill(params, &e);
            ok = result != NULL;
        } else if (strcmp(method, "ptyResize") == 0) {
            result = call_pty_resize(params, &e);
            ok = result != NULL;
        } else if (strcmp(method, "envGet") == 0) {
            const char *k = key_param(params, &e);
            if (k) {
                const char *v = env_get(k);
                result = v ? json_string(v) : json_null();
                ok = true;
            }
        } else if (strcmp(method, "envSet") == 0) {
            const char *k = key_param(params, &e);
            const char *v = json_string_value(json_object_get(params, "value"));
            if (k && !v)
                hx_fail(&e, EINVAL, "envSet: value must be a string");
            else if (k && env_set(k, v, &e) == 0) {
                result = json_null();
                ok = true;
            }
        } else if (strcmp(method, "envDelete") == 0) {
            const char *k = key_param(params, &e);
            if (k) {
                env_delete(k);
                result = json_null();
                ok = true;
            }
        } else if (strcmp(method, "restoreDeadline") == 0) {
            /* live restore: the sandbox's timeout, which a wait for hutchd never outlasts */
            json_t *at = json_object_get(params, "at_ms");
            if (!json_is_integer(at) || json_integer_value(at) < 0) {
                hx_fail(&e, EINVAL, "restoreDeadline: at_ms must be a non-negative integer");
            } else {
                g_relink.deadline_ms = (int64_t)json_integer_value(at);
                result = json_null();
                ok = true;
            }
        } else if (strcmp(method, "envToObject") == 0) {
            result = env_to_json();
            ok = result != NULL;
            if (!ok)
                hx_fail(&e, ENOMEM, "out of memory");
        } else {
            hx_fail(&e, ENOSYS, "unknown method %.64s", method);
        }
        json_decref(empty);
    }
    json_decref(msg);
    if (ok)
        reply_ok(chan, result);
    else
        reply_err(chan, &e);
}

/* ---- the socket to hutchd -------------------------------------------- */

static void dispatch(const struct hx_frame *f)
{
    switch (f->type) {
    case HX_CALL:
        on_call(f->chan, f->payload, f->len);
        break;
    case HX_STDIN:
        if (!fsrelay_frame(f->type, f->chan, f->payload, f->len)) /* fs upload streams: fs_relay.c */
            on_stdin(f->chan, f->payload, f->len);
        break;
    case HX_CREDIT:
        if (!fsrelay_frame(f->type, f->chan, f->payload, f->len)) /* fs download streams: fs_relay.c */
            on_credit(f->chan, f->payload, f->len);
        break;
    default:
        agent_log("ignoring frame type %u", (unsigned)f->type);
        break;
    }
}

/* Quiet for a while: the read buffer beyond RBUF_KEEP and the heap's free
 * pages go back to the kernel. The sandbox's memory limit counts them, and so
 * does the host for every idle sandbox. */
static void on_rbuf_trim(uv_timer_t *t)
{
    if (g_rlen) /* a frame is still arriving: later */
        return (void)uv_timer_start(t, on_rbuf_trim, RBUF_TRIM_MS, 0);
    if (g_rhigh > RBUF_KEEP) {
        madvise(g_rbuf + RBUF_KEEP, RBUF_CAP - RBUF_KEEP, MADV_DONTNEED);
        g_rhigh = RBUF_KEEP;
    }
    malloc_trim(0);
}

static void sock_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init((char *)g_rbuf + g_rlen, (unsigned)(RBUF_CAP - g_rlen));
}

static void on_sock_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0) {
        sock_lost("hutchd closed the agent socket");
        return;
    }
    g_rlen += (size_t)nread;
    if (g_rlen > g_rhigh) {
        g_rhigh = g_rlen;
        if (g_rhigh > RBUF_KEEP)
            uv_timer_start(&g_rtrim, on_rbuf_trim, RBUF_TRIM_MS, 0);
    }
    size_t off = 0;
    for (;;) {
        struct hx_frame f;
        int n = hx_frame_decode(g_rbuf + off, g_rlen - off, &f);
        if (n < 0)
            shutdown_all("malformed frame from hutchd");
        if (n == 0)
            break;
        dispatch(&f);
        off += (size_t)n;
        if (g_relink.detached)
            return; /* the link broke while answering: g_rbuf was reset */
    }
    if (off) {
        memmove(g_rbuf, g_rbuf + off, g_rlen - off);
        g_rlen -= off;
    }
    /* A descriptor comes with its call's first byte: with no call left in
     * part, one still here was not claimed by its call (a call refused
     * before the fs relay saw it). Never let it pair with a later call. */
    if (g_rlen == 0 && g_sock)
        hx_uv_drop_fds(g_sock);
}

/* ---- live restore: losing hutchd and getting one back ------------------ */

static void on_sock_closed(uv_handle_t *h)
{
    free(h);
}

static void on_orphan_timeout(uv_timer_t *t)
{
    (void)t;
    shutdown_all("no hutchd came back in time");
}

/* Starts reading every stream that has room again (after a reconnect, or
 * when the held frames drained). */
static void resume_streams(void)
{
    for (struct proc *p = g_procs; p; p = p->next)
        for (int i = 0; i < 2; i++) {
            struct ostream *s = &p->out[i];
            if (s->open && !s->done && !s->reading && s->inflight < HX_OUTPUT_WINDOW &&
                uv_read_start((uv_stream_t *)&s->pipe, out_alloc, on_out_read) == 0)
                s->reading = true;
        }
}

static void on_reconnect(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    uv_pipe_t *c = malloc(sizeof *c);
    if (!c || uv_pipe_init(g_loop, c, 1) < 0) { /* ipc: as in agent_run */
        free(c);
        return;
    }
    if (uv_accept(server, (uv_stream_t *)c) < 0 || !g_relink.detached) {
        uv_close((uv_handle_t *)c, on_sock_closed); /* one hutchd at a time */
        return;
    }
    g_sock = c;
    g_relink.gen++;
    g_relink.detached = false;
    uv_timer_stop(&g_relink.orphan);
    g_rlen = 0;
    if (uv_read_start((uv_stream_t *)g_sock, sock_alloc, on_sock_read) < 0) {
        sock_lost("read from the new hutchd failed");
        return;
    }
    /* HX_HELLO first, then what waited, in order */
    json_t *pids = json_array();
    for (struct proc *p = g_procs; p; p = p->next)
        if (!p->exit_sent)
            json_array_append_new(pids, json_integer(p->pid));
    send_json(HX_HELLO, 0, json_pack("{s:o, s:I}", "pids", pids, "held", (json_int_t)g_relink.held_bytes));
    struct held_frame *h = g_relink.head;
    g_relink.head = NULL;
    g_relink.tail = &g_relink.head;
    g_relink.held_bytes = 0;
    while (h && !g_relink.detached) {
        struct held_frame *next = h->next;
        uint16_t type = (uint16_t)(h->buf[4] | h->buf[5] << 8);
        send_owned(type, hx_get_u32(h->buf + 8), h->buf, h->len);
        free(h);
        h = next;
    }
    while (h) { /* lost again while flushing: keep the rest */
        struct held_frame *next = h->next;
        h->next = NULL;
        *g_relink.tail = h;
        g_relink.tail = &h->next;
        g_relink.held_bytes += HX_FRAME_HDR + h->len;
        h = next;
    }
    if (!g_relink.detached)
        resume_streams();
}

/* The link to hutchd broke. Without live restore nothing may keep running
 * that nobody can see or stop; with it, wait (bounded) for a hutchd. */
static void sock_lost(const char *why)
{
    if (g_relink.listen_fd < 0)
        shutdown_all(why);
    if (g_relink.detached)
        return;
    g_relink.detached = true;
    uv_read_stop((uv_stream_t *)g_sock);
    uv_close((uv_handle_t *)g_sock, on_sock_closed); /* its queued writes end with ECANCELED, ignored */
    g_sock = NULL;
    g_rlen = 0;
    /* what the old hutchd never credited will never be: start the windows afresh */
    for (struct proc *p = g_procs; p; p = p->next)
        p->out[0].inflight = p->out[1].inflight = 0;
    fsrelay_reset(); /* file transfers in flight had their reader in the old hutchd */
    if (!g_relink.listening) {
        if (uv_pipe_init(g_loop, &g_relink.listener, 0) < 0 || uv_pipe_open(&g_relink.listener, g_relink.listen_fd) < 0 ||
            uv_listen((uv_stream_t *)&g_relink.listener, 4, on_reconnect) < 0)
            shutdown_all("cannot listen for hutchd");
        g_relink.listening = true;
    }
    uint64_t wait = g_relink.wait_ms;
    if (g_relink.deadline_ms > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t left = g_relink.deadline_ms - ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        if (left < 0)
            left = 0;
        if ((uint64_t)left < wait)
            wait = (uint64_t)left;
    }
    uv_timer_start(&g_relink.orphan, on_orphan_timeout, wait, 0);
    resume_streams(); /* output keeps flowing into the held queue, bounded */
}

int agent_run(int fd, int restore_fd, uint64_t wait_ms)
{
    signal(SIGPIPE, SIG_IGN);
    g_loop = uv_default_loop();
    /* RBUF_KEEP is a multiple of the page size: the trim starts on a page */
    void *rb = mmap(NULL, RBUF_CAP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_rbuf = rb == MAP_FAILED ? NULL : rb;
    g_sock = malloc(sizeof *g_sock);
    if (!g_rbuf || !g_sock)
        return -ENOMEM;
    /* setup's buffers (the spec, the CA bundle) are
     * freed: their pages need not stay with every idle sandbox */
    malloc_trim(0);
    g_relink.listen_fd = restore_fd;
    g_relink.wait_ms = wait_ms;
    g_relink.tail = &g_relink.head;
    int r;
    if ((r = uv_timer_init(g_loop, &g_relink.orphan)) < 0 || (r = uv_timer_init(g_loop, &g_rtrim)) < 0)
        return r;
    uv_unref((uv_handle_t *)&g_rtrim);
    /* ipc: hutchd passes a socket with spliceFile calls (agent_take_fd) */
    if ((r = uv_pipe_init(g_loop, g_sock, 1)) < 0 || (r = uv_pipe_open(g_sock, fd)) < 0)
        return r;
    if ((r = uv_signal_init(g_loop, &g_sigchld)) < 0 || (r = uv_signal_start(&g_sigchld, on_sigchld, SIGCHLD)) < 0)
        return r;
    if ((r = uv_read_start((uv_stream_t *)g_sock, sock_alloc, on_sock_read)) < 0)
        return r;
    on_sigchld(&g_sigchld, SIGCHLD); /* anything that exited before the handler existed */
    uv_run(g_loop, UV_RUN_DEFAULT);
    shutdown_all("loop ended");
}
