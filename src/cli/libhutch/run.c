/* libhutch process runner: spawn a command in a sandbox, copy our stdin to it as an
 * outbound byte stream, its stdout/stderr streams to our fds, and wait for its exit. */
#include <sys/ioctl.h>
#include "cli/libhutch/client.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#define STDIN_CHUNK       (64u << 10)  /* bytes read from stdin per enqueue */
#define STDIN_QUEUE_MAX   (1u << 20)   /* queued outbound bytes before we stop reading stdin */
#define EARLY_OUTPUT_MAX  (8u << 20)   /* output buffered before the spawn reply names its streams */
#define EARLY_STREAMS     4
#define DRAIN_GRACE_MS    5000         /* wait for stream ends after the exit status */

struct early {
    int64_t sid;
    uint8_t *buf;
    size_t len;
    bool ended;
};

struct run {
    struct hutch_conn *c;
    const struct hutch_spawn *s;
    bool have_sids;
    int64_t out_sid, err_sid; /* -1: none */
    bool out_done, err_done;
    bool out_broken, err_broken; /* our side closed (EPIPE): discard */
    bool pipe_killed;
    int64_t stdin_sid;
    bool stdin_open;
    int64_t pid;
    struct early early[EARLY_STREAMS];
    size_t nearly, early_bytes;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Blocking write of all bytes; 1 when the reader went away (EPIPE). */
static int write_full(int fd, const uint8_t *p, size_t n, struct hx_err *e)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd pf = { .fd = fd, .events = POLLOUT };
                (void)poll(&pf, 1, 1000);
                continue;
            }
            if (errno == EPIPE)
                return 1;
            return hx_fail(e, errno, "write output: %m");
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int deliver(struct run *r, int64_t sid, const uint8_t *data, size_t n, struct hx_err *e)
{
    int fd;
    bool *broken;
    if (sid == r->out_sid) {
        fd = r->s->stdout_fd;
        broken = &r->out_broken;
    } else if (sid == r->err_sid) {
        fd = r->s->stderr_fd;
        broken = &r->err_broken;
    } else {
        return 0;
    }
    if (*broken || fd < 0)
        return 0;
    int rc = write_full(fd, data, n, e);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        *broken = true;
        /* Like a local pipeline: the writer learns its reader is gone. */
        if (!r->pipe_killed && r->pid >= 0) {
            r->pipe_killed = true;
            return hutch_send_request(r->c, "processKill",
                                      json_pack("{s:I, s:s}", "pid", (json_int_t)r->pid, "signal", "SIGPIPE"),
                                      NULL, e);
        }
    }
    return 0;
}

static void mark_done(struct run *r, int64_t sid)
{
    if (sid == r->out_sid)
        r->out_done = true;
    if (sid == r->err_sid)
        r->err_done = true;
}

static struct early *early_find(struct run *r, int64_t sid, bool add)
{
    for (size_t i = 0; i < r->nearly; i++)
        if (r->early[i].sid == sid)
            return &r->early[i];
    if (!add || r->nearly == EARLY_STREAMS)
        return NULL;
    r->early[r->nearly] = (struct early){ .sid = sid };
    return &r->early[r->nearly++];
}

static int on_stream(void *ud, enum hutch_stream_event ev, int64_t sid, const uint8_t *data, size_t n,
                     struct hx_err *e)
{
    struct run *r = ud;
    if (ev == HUTCH_STREAM_CANCEL) {
        /* The process stopped reading its stdin: stop sending it. */
        if (sid == r->stdin_sid)
            r->stdin_open = false;
        return 0;
    }
    if (!r->have_sids) {
        /* Output can arrive before the spawn reply says which stream is which. */
        struct early *x = early_find(r, sid, ev == HUTCH_STREAM_START || ev == HUTCH_STREAM_DATA);
        if (!x)
            return 0;
        if (ev == HUTCH_STREAM_DATA) {
            if (n > EARLY_OUTPUT_MAX - r->early_bytes)
                return hx_fail(e, EMSGSIZE, "server sent more than %u bytes of output before the spawn reply",
                               EARLY_OUTPUT_MAX);
            uint8_t *nb = realloc(x->buf, x->len + n + 1);
            if (!nb)
                return hx_fail(e, ENOMEM, "out of memory");
            memcpy(nb + x->len, data, n);
            x->buf = nb;
            x->len += n;
            r->early_bytes += n;
        } else if (ev == HUTCH_STREAM_END || ev == HUTCH_STREAM_ERROR) {
            x->ended = true;
        }
        return 0;
    }
    switch (ev) {
    case HUTCH_STREAM_DATA:
        return deliver(r, sid, data, n, e);
    case HUTCH_STREAM_END:
    case HUTCH_STREAM_ERROR:
        mark_done(r, sid);
        return 0;
    default:
        return 0;
    }
}

static json_t *spawn_params(const struct hutch_spawn *s, int64_t stdin_sid)
{
    json_t *args = json_array();
    for (size_t i = 0; args && i < s->nargs; i++)
        json_array_append_new(args, json_string(s->args[i]));
    json_t *p = json_pack("{s:s, s:o, s:s, s:s}", "command", s->command, "args", args, "stdout", "piped",
                          "stderr", s->pty ? "null" : "piped");
    if (!p)
        return NULL;
    if (s->pty)
        json_object_set_new(p, "pty", json_pack("{s:i, s:i}", "rows", (int)s->rows, "cols", (int)s->cols));
    if (s->env && json_object_size(s->env) > 0)
        json_object_set(p, "env", s->env);
    if (s->cwd)
        json_object_set_new(p, "cwd", json_string(s->cwd));
    if (stdin_sid >= 0)
        json_object_set_new(p, "stdinStreamId", json_integer(stdin_sid));
    return p;
}

static int64_t sid_of(json_t *v)
{
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

static int read_stdin(struct run *r, struct hx_err *e)
{
    static uint8_t buf[STDIN_CHUNK];
    ssize_t n = read(r->s->stdin_fd, buf, sizeof(buf));
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return 0;
        /* An unreadable stdin ends the stream; the process sees EOF. */
        n = 0;
    }
    if (n == 0) {
        r->stdin_open = false;
        return hutch_stream_end(r->c, r->stdin_sid, e);
    }
    return hutch_stream_write(r->c, r->stdin_sid, buf, (size_t)n, e);
}

static int send_kill(struct run *r, int count, struct hx_err *e)
{
    /* First Ctrl-C asks politely, later ones insist. */
    const char *sig = count <= 1 ? "SIGINT" : "SIGKILL";
    return hutch_send_request(r->c, "processKill", json_pack("{s:I, s:s}", "pid", (json_int_t)r->pid, "signal", sig),
                              NULL, e);
}

static void parse_status(json_t *ok, struct hutch_status *st)
{
    memset(st, 0, sizeof(*st));
    st->success = json_is_true(json_object_get(ok, "success"));
    st->code = (int)json_integer_value(json_object_get(ok, "code"));
    const char *sig = json_string_value(json_object_get(ok, "signal"));
    if (sig)
        snprintf(st->signal, sizeof(st->signal), "%s", sig);
    json_t *oom = json_object_get(ok, "oom");
    st->oom = oom && !json_is_null(oom) && !json_is_false(oom);
}

int hutch_run(struct hutch_conn *c, const struct hutch_spawn *s, struct hutch_status *st, char **spawn_code,
              struct hx_err *e)
{
    struct run r = { .c = c, .s = s, .out_sid = -1, .err_sid = -1, .stdin_sid = -1, .pid = -1 };
    int rc;
    int handled_interrupts = 0;
    int handled_winch = s->winch ? *s->winch : 0;
    if (spawn_code)
        *spawn_code = NULL;
    hutch_conn_on_stream(c, on_stream, &r);

    if (s->stdin_fd >= 0) {
        /* As the SDK does: announce the stream before the spawn that names it. */
        r.stdin_sid = hutch_stream_new_id(c);
        rc = hutch_stream_start(c, r.stdin_sid, e);
        if (rc < 0)
            goto out;
    }
    json_t *params = spawn_params(s, r.stdin_sid);
    if (!params) {
        rc = hx_fail(e, ENOMEM, "building spawn params");
        goto out;
    }
    int64_t spawn_id;
    rc = hutch_send_request(c, "spawn", params, &spawn_id, e);
    if (rc < 0)
        goto out;
    json_t *ok = NULL;
    for (;;) {
        rc = hutch_take_response(c, spawn_id, &ok, spawn_code, e);
        if (rc < 0)
            goto out;
        if (rc == 1)
            break;
        rc = hutch_pump(c, NULL, 0, 1000, e);
        if (rc < 0 && rc != -EINTR)
            goto out;
    }
    r.pid = json_integer_value(json_object_get(ok, "pid"));
    r.out_sid = sid_of(json_object_get(ok, "stdoutStreamId"));
    r.err_sid = sid_of(json_object_get(ok, "stderrStreamId"));
    json_decref(ok);
    r.out_done = r.out_sid < 0;
    r.err_done = r.err_sid < 0;
    r.have_sids = true;
    r.stdin_open = s->stdin_fd >= 0;
    for (size_t i = 0; i < r.nearly; i++) {
        rc = deliver(&r, r.early[i].sid, r.early[i].buf, r.early[i].len, e);
        if (rc < 0)
            goto out;
        if (r.early[i].ended)
            mark_done(&r, r.early[i].sid);
    }

    int64_t wait_id;
    rc = hutch_send_request(c, "processWait", json_pack("{s:I}", "pid", (json_int_t)r.pid), &wait_id, e);
    if (rc < 0)
        goto out;
    bool exited = false;
    int64_t drain_deadline = 0;
    for (;;) {
        if (exited && ((r.out_done && r.err_done) || mono_ms() >= drain_deadline))
            break;
        if (s->interrupts && *s->interrupts > handled_interrupts && !exited) {
            handled_interrupts = *s->interrupts;
            rc = send_kill(&r, handled_interrupts, e);
            if (rc < 0)
                goto out;
        }
        if (s->winch && *s->winch != handled_winch && !exited) {
            handled_winch = *s->winch;
            struct winsize ws;
            if (ioctl(s->winch_fd, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
                rc = hutch_send_request(c, "ptyResize", json_pack("{s:I, s:i, s:i}", "pid", (json_int_t)r.pid, "rows",
                                                                  (int)ws.ws_row, "cols", (int)ws.ws_col), NULL, e);
                if (rc < 0)
                    goto out;
            }
        }
        struct pollfd pfd[1];
        nfds_t n = 0;
        if (r.stdin_open && hutch_conn_queued(c) < STDIN_QUEUE_MAX) {
            pfd[0] = (struct pollfd){ .fd = s->stdin_fd, .events = POLLIN };
            n = 1;
        }
        int timeout = 1000;
        if (exited) {
            int64_t left = drain_deadline - mono_ms();
            timeout = left < 0 ? 0 : (int)left;
        }
        rc = hutch_pump(c, pfd, n, timeout, e);
        if (rc == -EINTR)
            continue;
        if (rc < 0) {
            /* The status may have arrived just before the server closed. */
            if (exited)
                rc = 0;
            else if (hutch_take_response(c, wait_id, &ok, NULL, e) == 1) {
                parse_status(ok, st);
                st->pid = r.pid;
                json_decref(ok);
                rc = 0;
            }
            goto out;
        }
        if (n && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) && r.stdin_open) {
            rc = read_stdin(&r, e);
            if (rc < 0)
                goto out;
        }
        if (!exited) {
            rc = hutch_take_response(c, wait_id, &ok, NULL, e);
            if (rc < 0)
                goto out;
            if (rc == 1) {
                parse_status(ok, st);
                st->pid = r.pid;
                json_decref(ok);
                exited = true;
                drain_deadline = mono_ms() + DRAIN_GRACE_MS;
            }
        }
    }
    rc = 0;
out:
    hutch_conn_on_stream(c, NULL, NULL);
    for (size_t i = 0; i < r.nearly; i++)
        free(r.early[i].buf);
    return rc;
}
