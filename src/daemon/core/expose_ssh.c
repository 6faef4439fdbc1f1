/* SSH into a sandbox (issue 8; docs/ssh.md): POST /expose/ssh gives a
 * sandbox a login name of 128 random bits, the only credential, as the SDK
 * documents. hutch-ssh (daemon/ssh/sshd.c) asks what a name means; its
 * channels become processes spawned through the ordinary RPC layer on a
 * session without a WebSocket (a "sink", rpc.c), and forwards become
 * sockets hutchd connects to 127.0.0.1:PORT inside that sandbox only. */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include "daemon/api/http.h"
#include "daemon/api/ws.h"
#include "daemon/core/expose.h"
#include "daemon/core/restore.h"
#include "lib/b64.h"
#include "daemon/core/metering.h"
#include "daemon/core/metrics.h"
#include "daemon/core/rpc.h"
#include "daemon/ssh/sshd.h"
#include "lib/wire.h"
#include "ssh/ctl.h"

#define SSH_CHANNELS_PER_SANDBOX 64   /* process channels at once, over all its connections */
#define STDIN_ID 1                    /* the sink session's one inbound stream id */

struct login {
    struct login *next;
    char user[SSH_USER_LEN + 1];
    char sandbox[32];
};

static struct login *logins;

static struct login *login_of(const char *sandbox)
{
    for (struct login *l = logins; l; l = l->next)
        if (strcmp(l->sandbox, sandbox) == 0)
            return l;
    return NULL;
}

static int on_auth(const char *user, char sandbox[32])
{
    if (strlen(user) != SSH_USER_LEN) {
        metrics_ssh_login(false);
        return -ENOENT;
    }
    struct login *hit = NULL;
    for (struct login *l = logins; l; l = l->next) /* no early exit on a match: no timing hint */
        if (CRYPTO_memcmp(l->user, user, SSH_USER_LEN) == 0)
            hit = l;
    struct sandbox *sb = hit ? sandbox_find(hit->sandbox) : NULL;
    metrics_ssh_login(sb && sb->state == SB_RUNNING);
    if (!sb || sb->state != SB_RUNNING)
        return -ENOENT;
    snprintf(sandbox, 32, "%s", hit->sandbox);
    return 0;
}

/* ---- process channels ---- */

struct sproc {
    struct sproc *next;
    uint64_t conn;
    uint32_t chan;
    char sandbox[32];
    struct session *s;
    uv_pipe_t pipe;               /* our end of the channel's socketpair */
    int other;                    /* hutch-ssh's end until it is handed over */
    bool ended, spawned, stderr_piped, pty;
    uint32_t pid;
    bool out_end[2], exited;
    int code;
    char signal[16];
    size_t queued;                /* bytes written to the socket, not yet taken by the kernel */
    struct hx_frame_rd rd;        /* over rbuf */
    uint8_t rbuf[HX_FRAME_HDR + SSH_PROC_FRAME_MAX];
};

static struct sproc *sprocs;
static int64_t next_rpc_id = 10;

static void sproc_end(struct sproc *sp);

struct pwrite {
    uv_write_t req;
    struct sproc *sp;
    size_t n;
    uint8_t data[];
};

static void on_written(uv_write_t *req, int status)
{
    struct pwrite *w = (struct pwrite *)req;
    struct sproc *sp = w->sp;
    sp->queued -= w->n;
    free(w);
    if (!sp->ended && sp->s && sp->s->deferred && sp->queued < WS_HIGH_WATER / 2)
        rpc_on_drain(sp->s);
}

static void send_frame(struct sproc *sp, uint16_t type, uint32_t chan, const void *data, size_t len)
{
    struct pwrite *w = malloc(sizeof *w + HX_FRAME_HDR + len);
    if (!w)
        return;
    w->sp = sp;
    w->n = HX_FRAME_HDR + len;
    hx_frame_hdr_encode(w->data, type, chan, (uint32_t)len);
    if (len)
        memcpy(w->data + HX_FRAME_HDR, data, len);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->n);
    sp->queued += w->n;
    if (uv_write(&w->req, (uv_stream_t *)&sp->pipe, &b, 1, on_written) < 0) {
        sp->queued -= w->n;
        free(w);
    }
}

static void on_pipe_closed(uv_handle_t *h)
{
    struct sproc *sp = h->data;
    for (struct sproc **pp = &sprocs; *pp; pp = &(*pp)->next)
        if (*pp == sp) {
            *pp = sp->next;
            break;
        }
    if (sp->other >= 0)
        close(sp->other);
    struct session *s = sp->s;
    free(sp);
    rpc_session_free(s); /* detaches; a session sandbox with nothing else attached stops */
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct sproc *sp = req->data;
    free(req);
    uv_close((uv_handle_t *)&sp->pipe, on_pipe_closed);
}

/* The channel is over: our end of the socket closes once what is queued went out. */
static void sproc_end(struct sproc *sp)
{
    if (sp->ended)
        return;
    sp->ended = true;
    uv_read_stop((uv_stream_t *)&sp->pipe);
    uv_shutdown_t *req = malloc(sizeof *req);
    if (req) {
        req->data = sp;
        if (uv_shutdown(req, (uv_stream_t *)&sp->pipe, on_shutdown) == 0)
            return;
        free(req);
    }
    uv_close((uv_handle_t *)&sp->pipe, on_pipe_closed);
}

static void maybe_finish(struct sproc *sp)
{
    if (sp->ended || !sp->exited || !sp->out_end[0] || (sp->stderr_piped && !sp->out_end[1]))
        return;
    json_t *o = json_pack("{s:i, s:o}", "code", sp->code, "signal",
                          sp->signal[0] ? json_string(sp->signal + 3) : json_null());
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (t)
        send_frame(sp, SSP_EXIT, 0, t, strlen(t));
    free(t);
    sproc_end(sp);
}

static void on_pipe_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b);
static void on_pipe_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

static void sink_message(struct session *s, json_t *msg)
{
    struct sproc *sp = s->sink_ud;
    if (sp->ended)
        return;
    json_t *id = json_object_get(msg, "id");
    if (!json_is_integer(id))
        return; /* notifications: the stream starts and ends come through sink_output */
    json_t *res = json_object_get(msg, "result");
    json_t *ok = json_object_get(res, "ok");
    if (json_integer_value(id) == 1) {
        json_t *pid = json_object_get(ok, "pid");
        if (!json_is_integer(pid)) {
            json_t *err = json_object_get(res, "error");
            if (!err)
                err = json_object_get(msg, "error");
            const char *m = json_string_value(json_object_get(err, "message"));
            sshd_failed(sp->conn, sp->chan, EIO, m ? m : "the sandbox refused to start it");
            return sproc_end(sp);
        }
        sp->pid = (uint32_t)json_integer_value(pid);
        sp->spawned = true;
        sshd_opened(sp->conn, sp->chan, sp->other);
        sp->other = -1;
        uv_read_start((uv_stream_t *)&sp->pipe, on_pipe_alloc, on_pipe_read);
        rpc_session_call(sp->s, 2, "processWait", json_pack("{s:I}", "pid", (json_int_t)sp->pid));
        return;
    }
    if (json_integer_value(id) == 2) {
        json_t *code = json_object_get(ok, "code"), *sig = json_object_get(ok, "signal");
        sp->exited = true;
        sp->code = json_is_integer(code) ? (int)json_integer_value(code) : 255;
        if (json_is_string(sig))
            snprintf(sp->signal, sizeof sp->signal, "%s", json_string_value(sig));
        if (!ok) { /* no status (the process record went): its output is over too */
            const char *m = json_string_value(json_object_get(json_object_get(res, "error"), "message"));
            fprintf(stderr, "hutchd: ssh: %s: no exit status for pid %u: %s\n", sp->sandbox, sp->pid, m ? m : "?");
            sp->out_end[0] = sp->out_end[1] = true;
        }
        maybe_finish(sp);
    }
}

static void sink_output(struct session *s, uint32_t pid, unsigned fd, const uint8_t *data, size_t len)
{
    struct sproc *sp = s->sink_ud;
    if (sp->ended || pid != sp->pid || fd > 1)
        return;
    if (len == 0) {
        sp->out_end[fd] = true;
        return maybe_finish(sp);
    }
    while (len) {
        size_t n = len > SSH_PROC_FRAME_MAX ? SSH_PROC_FRAME_MAX : len;
        send_frame(sp, SSP_OUT, fd + 1, data, n);
        data += n;
        len -= n;
    }
}

static size_t sink_queued(struct session *s)
{
    struct sproc *sp = s->sink_ud;
    return sp->ended ? 0 : sp->queued;
}

static void on_pipe_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b)
{
    struct sproc *sp = h->data;
    *b = uv_buf_init((char *)sp->rd.buf + sp->rd.len, (unsigned)(sp->rd.cap - sp->rd.len));
}

static bool signal_ok(const uint8_t *p, size_t n)
{
    if (n == 0 || n > 8)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(p[i] >= 'A' && p[i] <= 'Z') && !(p[i] >= '0' && p[i] <= '9'))
            return false;
    return true;
}

/* One frame hutch-ssh sent on a channel: input, a resize, a signal. */
static bool on_channel_frame(void *ctx, const struct hx_frame *f)
{
    struct sproc *sp = ctx;
    if (f->type == SSP_IN && f->len)
        rpc_session_input(sp->s, STDIN_ID, f->payload, f->len);
    else if (f->type == SSP_IN)
        rpc_session_call(sp->s, 0, "$sandbox.stream.end", json_pack("{s:i}", "streamId", STDIN_ID));
    else if (f->type == SSP_RESIZE && f->len == 8 && sp->pty)
        rpc_session_call(sp->s, next_rpc_id++, "ptyResize",
                         json_pack("{s:I, s:I, s:I}", "pid", (json_int_t)sp->pid, "rows",
                                   (json_int_t)hx_get_u32(f->payload), "cols", (json_int_t)hx_get_u32(f->payload + 4)));
    else if (f->type == SSP_SIGNAL && signal_ok(f->payload, f->len)) {
        char name[16];
        snprintf(name, sizeof name, "SIG%.*s", (int)f->len, (const char *)f->payload);
        rpc_session_call(sp->s, next_rpc_id++, "processKill",
                         json_pack("{s:I, s:s}", "pid", (json_int_t)sp->pid, "signal", name));
    }
    return !sp->ended && sp->s->sb;
}

static void on_pipe_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct sproc *sp = st->data;
    if (sp->ended)
        return;
    if (nread < 0) { /* the channel closed (or hutch-ssh went): a hangup for the process */
        if (sp->spawned && !sp->exited)
            rpc_session_call(sp->s, next_rpc_id++, "processKill",
                             json_pack("{s:I, s:s}", "pid", (json_int_t)sp->pid, "signal", "SIGHUP"));
        return sproc_end(sp);
    }
    sp->rd.len += (size_t)nread;
    if (hx_frames_take(&sp->rd, on_channel_frame, sp) < 0) {
        fprintf(stderr, "hutchd: ssh: %s: a malformed channel frame from hutch-ssh; closing the channel\n",
                sp->sandbox);
        sproc_end(sp);
    }
}

static void sink_set_reading(struct session *s, bool on)
{
    struct sproc *sp = s->sink_ud;
    if (sp->ended || !sp->spawned)
        return;
    if (on)
        uv_read_start((uv_stream_t *)&sp->pipe, on_pipe_alloc, on_pipe_read);
    else
        uv_read_stop((uv_stream_t *)&sp->pipe);
}

static void sink_closed_by_sandbox(struct session *s)
{
    sproc_end(s->sink_ud);
}

static const struct session_sink sink = {sink_message, sink_output, sink_queued, sink_set_reading,
                                         sink_closed_by_sandbox};

static void on_open(uint64_t conn, uint32_t chan, const char *sandbox, json_t *req)
{
    struct sandbox *sb = sandbox_find(sandbox);
    if (!sb || sb->state != SB_RUNNING)
        return sshd_failed(conn, chan, ENOENT, "the sandbox is not running");
    unsigned n = 0;
    for (struct sproc *x = sprocs; x; x = x->next)
        n += !x->ended && strcmp(x->sandbox, sandbox) == 0;
    if (n >= SSH_CHANNELS_PER_SANDBOX)
        return sshd_failed(conn, chan, EAGAIN, "too many SSH sessions in this sandbox");
    const char *kind = json_string_value(json_object_get(req, "kind"));
    const char *command = json_string_value(json_object_get(req, "command"));
    json_t *pty = json_object_get(req, "pty");
    json_t *params;
    if (kind && strcmp(kind, "shell") == 0)
        params = json_pack("{s:s, s:[s]}", "command", "bash", "args", "-l");
    else if (kind && strcmp(kind, "exec") == 0 && command && json_string_length(json_object_get(req, "command")) <= 65536)
        params = json_pack("{s:s, s:[s, s]}", "command", "bash", "args", "-c", command);
    else if (kind && strcmp(kind, "sftp") == 0)
        params = json_pack("{s:s, s:[]}", "command", "/usr/lib/openssh/sftp-server", "args");
    else
        return sshd_failed(conn, chan, EINVAL, "unknown channel kind");
    bool with_pty = json_is_object(pty) && strcmp(kind, "sftp") != 0;
    json_object_set_new(params, "stdinStreamId", json_integer(STDIN_ID));
    json_object_set_new(params, "stdout", json_string("piped"));
    json_object_set_new(params, "stderr", json_string(strcmp(kind, "sftp") == 0 ? "null" : "piped"));
    if (with_pty) {
        const char *term = json_string_value(json_object_get(pty, "term"));
        json_object_set_new(params, "pty", json_pack("{s:O, s:O}", "rows", json_object_get(pty, "rows"), "cols",
                                                     json_object_get(pty, "cols")));
        json_object_set_new(params, "env", json_pack("{s:s}", "TERM", term && *term && strlen(term) < 64 ? term : "xterm"));
    }
    int sv[2];
    struct sproc *sp = calloc(1, sizeof *sp);
    struct session *s = calloc(1, sizeof *s);
    if (!sp || !s || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        free(sp);
        free(s);
        json_decref(params);
        return sshd_failed(conn, chan, ENOMEM, "out of resources");
    }
    sp->conn = conn;
    sp->chan = chan;
    sp->rd = (struct hx_frame_rd){.buf = sp->rbuf, .cap = sizeof sp->rbuf};
    snprintf(sp->sandbox, sizeof sp->sandbox, "%s", sandbox);
    sp->other = sv[1];
    sp->pty = with_pty;
    sp->stderr_piped = strcmp(kind, "sftp") != 0 && !with_pty;
    sp->out_end[1] = !sp->stderr_piped;
    sp->s = s;
    s->sink = &sink;
    s->sink_ud = sp;
    uv_pipe_init(g_daemon.loop, &sp->pipe, 0);
    sp->pipe.data = sp;
    uv_pipe_open(&sp->pipe, sv[0]);
    sp->next = sprocs;
    sprocs = sp;
    sandbox_session_attach(sb, s);
    rpc_session_call(sp->s, 1, "spawn", params); /* answered in sink_message, id 1 */
}

/* ---- forwards ---- */

static void on_dialed(uint64_t tag, int fd, int err)
{
    uint64_t conn = tag >> 20;
    uint32_t chan = (uint32_t)(tag & 0xfffff);
    if (fd >= 0)
        sshd_opened(conn, chan, fd);
    else
        sshd_failed(conn, chan, err, strerror(err));
}

static void on_forward(uint64_t conn, uint32_t chan, const char *sandbox, const char *host, int port)
{
    static const char *const local[] = {"localhost", "127.0.0.1", "::1", "[::1]", "ip6-localhost"};
    bool ok = false;
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++)
        ok |= strcmp(host, local[i]) == 0;
    struct sandbox *sb = sandbox_find(sandbox);
    if (!ok || port < 1 || port > 65535 || chan >= (1u << 20)) {
        fprintf(stderr, "hutchd: ssh: %s: refused a forward to %.100s:%d (only the sandbox's own localhost ports)\n",
                sandbox, host, port);
        return sshd_failed(conn, chan, EPERM, "forwards reach only localhost ports inside the sandbox");
    }
    if (!sb || sb->state != SB_RUNNING)
        return sshd_failed(conn, chan, ENOENT, "the sandbox is not running");
    expose_dial_tagged(sb, port, conn << 20 | chan, on_dialed);
}

static const struct sshd_ops ops = {on_auth, on_open, on_forward};

/* ---- REST ---- */

_Static_assert(SSH_USER_LEN == HX_RANDOM_NAME_LEN, "names are hx_random_name()s");
static void new_user(char out[SSH_USER_LEN + 1])
{
    hx_random_name(out);
}

void expose_ssh(struct http_conn *c, struct sandbox *sb, const char *token_id)
{
    struct hx_err e = {0};
    if (sshd_start(&ops, &e) < 0)
        return http_respond_error(c, 503, "SSH_UNAVAILABLE", "%s", e.msg);
    struct login *l = login_of(sb->id);
    if (!l) {
        l = calloc(1, sizeof *l);
        if (!l)
            return http_respond_error(c, 500, "INTERNAL", "out of memory");
        new_user(l->user);
        snprintf(l->sandbox, sizeof l->sandbox, "%s", sb->id);
        l->next = logins;
        logins = l;
        restore_exposures_changed(sb); /* restore: the same name works after a restart */
        fprintf(stderr, "hutchd: %s: exposed over SSH\n", sb->id);
        audit_log(sb->org, token_id, "expose", sb->id, "%s", "ssh"); /* audit: when its login name is made (later calls return the same one) */
    }
    http_respond_json(c, 200, json_pack("{s:s, s:s, s:i, s:s}", "hostname", sshd_host_name(), "username", l->user,
                                        "port", sshd_port(), "hostKey", sshd_host_key()));
}

/* ---- live restore ---- */

const char *expose_ssh_login(const char *sandbox_id)
{
    struct login *l = login_of(sandbox_id);
    return l ? l->user : NULL;
}

static bool user_ok(const char *u)
{
    if (!u || strlen(u) != SSH_USER_LEN)
        return false;
    for (const char *p = u; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '2' && *p <= '7')))
            return false;
    return true;
}

void expose_ssh_restore(struct sandbox *sb, const char *user)
{
    struct hx_err e = {0};
    bool taken = false;
    for (struct login *l = logins; l && user_ok(user); l = l->next)
        taken |= CRYPTO_memcmp(l->user, user, SSH_USER_LEN) == 0;
    if (!user_ok(user) || taken || login_of(sb->id)) {
        fprintf(stderr, "hutchd: %s: its kept SSH login name is malformed; not restored\n", sb->id);
        return;
    }
    /* The port opens as at the first expose/ssh: a login is useless without it */
    if (sshd_start(&ops, &e) < 0) {
        fprintf(stderr, "hutchd: %s: SSH login not restored: %s\n", sb->id, e.msg);
        return;
    }
    struct login *l = calloc(1, sizeof *l);
    if (!l)
        return;
    snprintf(l->user, sizeof l->user, "%s", user);
    snprintf(l->sandbox, sizeof l->sandbox, "%s", sb->id);
    l->next = logins;
    logins = l;
    printf("hutchd: %s: SSH login restored (port %d)\n", sb->id, sshd_port());
}

void expose_ssh_sandbox_stopped(struct sandbox *sb)
{
    for (struct login **pp = &logins; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->sandbox, sb->id) == 0) {
            struct login *l = *pp;
            *pp = l->next;
            explicit_bzero(l->user, sizeof l->user);
            free(l);
            break;
        }
    }
    sshd_sandbox_gone(sb->id);
}
