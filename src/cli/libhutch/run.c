/* libhutch process runner: spawn a command in a sandbox, copy our stdin to it as an
 * outbound byte stream, its stdout/stderr streams to our fds, and wait for its exit. */
#include <sys/ioctl.h>
#include "cli/libhutch/client.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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

/* ---- hutch's raw exec channel (docs/protocol.md "Raw exec channel") ---------
 * Its own WebSocket of subprotocol hutch-exec.v1: every message is binary, a
 * 1-byte tag and raw bytes. We mask what we send (RFC 6455 requires it of a
 * client) while copying it into the send buffer, so stdin is copied once. */

#define RAW_SUBPROTOCOL  "hutch-exec.v1"
#define RAW_URL_MAX      (12u << 10)   /* our request head must fit hutchd's 16 KiB */
#define RAW_IN_CHUNK     (256u << 10)  /* stdin bytes per message (hutchd takes up to 1 MiB) */
#define RAW_FRAME_MAX    (1u << 20)    /* a server message we accept: output comes in ≤ 256 KiB */
#define RAW_PING_MS      10000         /* hutchd closes connections silent for 60 s */
#define RAW_CLOSE_WAIT_MS 5000         /* after the exit status: the server's close frame */

enum { RT_STDIN, RT_STDOUT, RT_STDERR, RT_EXIT, RT_SIGNAL, RT_RESIZE, RT_CLOSE_STDIN };

struct raw {
    int fd;
    uint8_t *out;                      /* frames to send, in order */
    size_t out_off, out_len, out_cap;
    uint8_t *in;                       /* bytes received, not yet a whole frame */
    size_t in_len;
    bool out_broken[2];
    bool killed_pipe;
    bool exited, closed;
    int64_t last_sent;
};

static char *raw_url(const char *id, const struct hutch_spawn *s)
{
    char *url = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&url, &len);
    if (!f)
        return NULL;
    bool ok = true;
    char *q = hutch_query_escape(s->command);
    ok &= q != NULL;
    fprintf(f, "/hutch/v1/sandboxes/%s/exec?cmd=%s", id, q ? q : "");
    free(q);
    for (size_t i = 0; ok && i < s->nargs; i++) {
        q = hutch_query_escape(s->args[i]);
        ok &= q != NULL;
        fprintf(f, "&arg=%s", q ? q : "");
        free(q);
    }
    const char *k;
    json_t *v;
    json_object_foreach(s->env, k, v) {
        char *kv = NULL;
        ok &= asprintf(&kv, "%s=%s", k, json_string_value(v) ? json_string_value(v) : "") >= 0;
        q = ok ? hutch_query_escape(kv) : NULL;
        ok &= q != NULL;
        fprintf(f, "&env=%s", q ? q : "");
        free(q);
        free(kv);
    }
    if (s->cwd) {
        q = hutch_query_escape(s->cwd);
        ok &= q != NULL;
        fprintf(f, "&cwd=%s", q ? q : "");
        free(q);
    }
    if (s->stdin_fd < 0)
        fputs("&stdin=null", f);
    if (s->stderr_fd < 0)
        fputs("&stderr=null", f);
    if (fclose(f) != 0 || !ok) {
        free(url);
        return NULL;
    }
    return url;
}

/* Appends one masked frame (opcode op) of tag (if >= 0) then n bytes. */
static int raw_queue(struct raw *r, uint8_t op, int tag, const uint8_t *data, size_t n, struct hx_err *e)
{
    size_t plen = n + (tag >= 0);
    size_t need = 14 + plen;
    if (r->out_off == r->out_len)
        r->out_off = r->out_len = 0;
    if (r->out_len + need > r->out_cap) {
        size_t cap = r->out_len + need + 1024;
        uint8_t *nb = realloc(r->out, cap);
        if (!nb)
            return hx_fail(e, ENOMEM, "out of memory");
        r->out = nb;
        r->out_cap = cap;
    }
    uint8_t *h = r->out + r->out_len;
    size_t hl = hutch_ws_client_head(h, op, plen);
    uint8_t key[4];
    if (getrandom(key, sizeof key, 0) != sizeof key)
        return hx_fail(e, EIO, "getrandom: %m");
    memcpy(h + hl, key, 4);
    hl += 4;
    size_t off = 0;
    if (tag >= 0) {
        h[hl] = (uint8_t)tag ^ key[0];
        off = 1;
    }
    if (n)
        hutch_ws_mask(h + hl + off, data, n, key, off);
    r->out_len += hl + plen;
    return 0;
}

static int raw_flush(struct raw *r, struct hx_err *e)
{
    while (r->out_off < r->out_len) {
        ssize_t w = send(r->fd, r->out + r->out_off, r->out_len - r->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return hx_fail(e, errno, "send to hutchd: %m");
        }
        r->out_off += (size_t)w;
        r->last_sent = mono_ms();
    }
    return 0;
}

static int raw_signal(struct raw *r, const char *sig, struct hx_err *e)
{
    return raw_queue(r, 0x2, RT_SIGNAL, (const uint8_t *)sig, strlen(sig), e);
}

/* One whole server message: output, the exit status, or a control frame. */
static int raw_message(struct raw *r, const struct hutch_spawn *s, uint8_t op, const uint8_t *p, size_t n,
                       struct hutch_status *st, struct hx_err *e)
{
    if (op == 0x9)
        return raw_queue(r, 0xA, -1, p, n, e);
    if (op == 0xA)
        return 0;
    if (op == 0x8) {
        r->closed = true;
        (void)raw_queue(r, 0x8, -1, p, n >= 2 ? 2 : 0, e); /* the close handshake: its code back */
        if (r->exited)
            return 0;
        unsigned code = n >= 2 ? (unsigned)p[0] << 8 | p[1] : 1005;
        return hx_fail(e, ECONNRESET, "hutchd closed the channel without an exit status (%u%s%.*s)", code,
                       n > 2 ? ": " : "", n > 2 ? (int)(n - 2) : 0, (const char *)p + 2);
    }
    if (op != 0x2 || n == 0)
        return hx_fail(e, EPROTO, "hutchd sent a message that is not hutch-exec.v1 (opcode %u, %zu bytes)", op, n);
    switch (p[0]) {
    case RT_STDOUT:
    case RT_STDERR: {
        unsigned i = p[0] - RT_STDOUT;
        int fd = i ? s->stderr_fd : s->stdout_fd;
        if (n == 1 || fd < 0 || r->out_broken[i])
            return 0;
        int rc = write_full(fd, p + 1, n - 1, e);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            /* Like a local pipeline: the writer learns its reader is gone. */
            r->out_broken[i] = true;
            if (!r->killed_pipe) {
                r->killed_pipe = true;
                return raw_signal(r, "SIGPIPE", e);
            }
        }
        return 0;
    }
    case RT_EXIT: {
        json_t *j = json_loadb((const char *)p + 1, n - 1, 0, NULL);
        json_t *code = json_object_get(j, "code"), *sig = json_object_get(j, "signal");
        if (!json_is_integer(code)) {
            json_decref(j);
            return hx_fail(e, EPROTO, "hutchd sent a malformed exit status");
        }
        int64_t pid = st->pid;
        memset(st, 0, sizeof *st);
        st->pid = pid;
        st->code = (int)json_integer_value(code);
        if (json_is_string(sig))
            snprintf(st->signal, sizeof st->signal, "%s", json_string_value(sig));
        st->oom = json_is_true(json_object_get(j, "oom"));
        st->success = st->code == 0 && !st->signal[0];
        json_decref(j);
        r->exited = true;
        return 0;
    }
    default:
        return hx_fail(e, EPROTO, "hutchd sent a message with tag %u", p[0]);
    }
}

/* Whole frames out of r->in; the rest stays for the next read. */
static int raw_parse(struct raw *r, const struct hutch_spawn *s, struct hutch_status *st, struct hx_err *e)
{
    size_t off = 0;
    int rc = 0;
    while (rc == 0 && !r->closed) {
        const uint8_t *h = r->in + off;
        size_t avail = r->in_len - off;
        if (avail < 2)
            break;
        if (h[1] & 0x80)
            return hx_fail(e, EPROTO, "hutchd sent a masked frame");
        if (!(h[0] & 0x80) || (h[0] & 0x0f) == 0)
            return hx_fail(e, EPROTO, "hutchd sent a fragmented message");
        size_t hl = 2;
        uint64_t n = h[1] & 0x7f;
        if (n == 126) {
            if (avail < 4)
                break;
            n = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (n == 127) {
            if (avail < 10)
                break;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | h[2 + i];
            hl = 10;
        }
        if (n > RAW_FRAME_MAX)
            return hx_fail(e, EMSGSIZE, "hutchd sent a message of %llu bytes", (unsigned long long)n);
        if (avail < hl + n)
            break;
        rc = raw_message(r, s, h[0] & 0x0f, h + hl, (size_t)n, st, e);
        off += hl + (size_t)n;
    }
    memmove(r->in, r->in + off, r->in_len - off);
    r->in_len -= off;
    return rc;
}

int hutch_run_raw(const struct hutch_target *t, const char *id, const struct hutch_spawn *s, struct hutch_status *st,
                  char **spawn_code, struct hx_err *e)
{
    if (spawn_code)
        *spawn_code = NULL;
    memset(st, 0, sizeof *st);
    if (s->pty)
        return hx_fail(e, ENOSYS, "pseudo-terminals go the JSON-RPC way");
    if (!hutch_id_safe(id))
        return hx_fail(e, EINVAL, "invalid sandbox id '%.100s'", id);
    char *url = raw_url(id, s);
    if (!url)
        return hx_fail(e, ENOMEM, "out of memory");
    if (strlen(url) > RAW_URL_MAX) {
        free(url);
        return hx_fail(e, ENOSYS, "the command and its options are too long for a request head");
    }
    struct raw r = { .fd = -1 };
    uint8_t *extra = NULL;
    size_t extra_len = 0;
    char *code = NULL;
    static uint8_t chunk[RAW_IN_CHUNK];
    int rc = hutch_ws_upgrade(t, url, RAW_SUBPROTOCOL, &r.fd, &extra, &extra_len, &st->pid, &code, e);
    free(url);
    if (rc < 0) {
        /* an errno name: the sandbox refused the spawn (ENOENT: no such command) */
        bool errno_name = code && code[0] == 'E' && strspn(code, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") == strlen(code);
        if (errno_name && rc != -ENOSYS) {
            rc = -EREMOTEIO;
            if (spawn_code)
                *spawn_code = code, code = NULL;
        }
        free(code);
        return rc;
    }
    free(code);
    r.in = malloc(RAW_FRAME_MAX + 16);
    if (!r.in) {
        free(extra);
        close(r.fd);
        return hx_fail(e, ENOMEM, "out of memory");
    }
    if (extra_len > RAW_FRAME_MAX + 16)
        extra_len = 0; /* cannot happen: read_response reads 16 KiB at a time */
    memcpy(r.in, extra, extra_len);
    r.in_len = extra_len;
    free(extra);
    bool stdin_open = s->stdin_fd >= 0;
    int handled_interrupts = 0;
    int64_t close_deadline = 0;
    r.last_sent = mono_ms();
    rc = raw_parse(&r, s, st, e);
    while (rc == 0 && !r.closed) {
        if (r.exited && !close_deadline)
            close_deadline = mono_ms() + RAW_CLOSE_WAIT_MS;
        if (close_deadline && mono_ms() >= close_deadline)
            break; /* the status is in; the server's close frame is late */
        if (s->interrupts && *s->interrupts > handled_interrupts && !r.exited) {
            handled_interrupts = *s->interrupts;
            /* First Ctrl-C asks politely, later ones insist. */
            if ((rc = raw_signal(&r, handled_interrupts <= 1 ? "SIGINT" : "SIGKILL", e)) < 0)
                break;
        }
        if (mono_ms() - r.last_sent >= RAW_PING_MS && (rc = raw_queue(&r, 0x9, -1, NULL, 0, e)) < 0)
            break;
        if ((rc = raw_flush(&r, e)) < 0)
            break;
        struct pollfd pfd[2] = { { .fd = r.fd, .events = POLLIN } };
        nfds_t n = 1;
        if (r.out_off < r.out_len)
            pfd[0].events |= POLLOUT;
        else if (stdin_open && !r.exited) {
            pfd[1] = (struct pollfd){ .fd = s->stdin_fd, .events = POLLIN };
            n = 2;
        }
        int pr = poll(pfd, n, 1000);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            rc = hx_fail(e, errno, "poll: %m");
            break;
        }
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t got = recv(r.fd, r.in + r.in_len, RAW_FRAME_MAX + 16 - r.in_len, 0);
            if (got < 0 && errno != EAGAIN && errno != EINTR) {
                rc = r.exited ? 0 : hx_fail(e, errno, "receive from hutchd: %m");
                break;
            }
            if (got == 0) {
                if (!r.exited)
                    rc = hx_fail(e, ECONNRESET, "hutchd closed the connection without an exit status");
                break;
            }
            if (got > 0) {
                r.in_len += (size_t)got;
                rc = raw_parse(&r, s, st, e);
            }
        }
        if (rc == 0 && n == 2 && (pfd[1].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))) {
            ssize_t got = read(s->stdin_fd, chunk, sizeof chunk);
            if (got < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (got <= 0) { /* an unreadable stdin ends it too: the process sees EOF */
                stdin_open = false;
                rc = raw_queue(&r, 0x2, RT_CLOSE_STDIN, NULL, 0, e);
            } else {
                rc = raw_queue(&r, 0x2, RT_STDIN, chunk, (size_t)got, e);
            }
        }
    }
    if (rc == 0 && r.closed)
        (void)raw_flush(&r, e); /* our half of the close handshake, best effort */
    close(r.fd);
    free(r.in);
    free(r.out);
    return rc;
}
