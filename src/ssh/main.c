/* hutch-ssh: the SSH server of one client connection (docs/ssh.md).
 *
 * hutchd accepts the TCP connection and starts one hutch-ssh for it with
 * the socket and a control socketpair (ctl.h). Before it reads a byte from
 * the client it confines itself (empty chroot, uid 65534, no_new_privs,
 * seccomp without socket/connect/open). It knows no sandbox: it asks hutchd
 * whether the login name is valid, and hutchd binds the connection to that
 * name's sandbox. For each channel hutchd hands over a socket: a socketpair
 * to a process it spawned in the sandbox (shell, exec, sftp-server) or a TCP
 * socket it connected to 127.0.0.1:PORT inside the sandbox (ssh -L).
 *
 * One libssh event loop (ssh_event) drives the session, the control socket
 * and the channels' sockets. Buffers are bounded both ways: a channel reads
 * its socket only while the client's window has room, and takes the
 * client's data only while its own outgoing buffer has room (the rest stays
 * in libssh, whose window then stops the client). libssh runs this loop
 * again from inside its own calls (a write flushes): the bytes toward the
 * client move in chanout.c, which does not nest. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
/* libssh 0.10 marks parts of its message API deprecated (for the server
 * callbacks); direct-tcpip opens only come through messages, so all of
 * authentication and channel opening goes one way, through them. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/server.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "lib/confine.h"
#include "lib/fdrecv.h"
#include "lib/wire.h"
#include "ssh/chanout.h"
#include "ssh/ctl.h"

#define OBUF_MAX (256u * 1024u)   /* bytes queued toward a channel's socket */
#define CTL_BUF (64u * 1024u)
#define AUTH_TRIES_MAX 6          /* distinct names asked about per connection */

struct chan {
    struct chan *next;
    ssh_channel ch;
    uint32_t id;
    int fd;                       /* the channel's socket from hutchd, -1 before */
    bool started;                 /* shell/exec/subsystem already asked for */
    bool pty;
    int rows, cols;
    char term[64];
    short events;                 /* what the event loop watches on fd (0: not added) */
    short want;                   /* what it should watch: applied between turns of the loop, never
                                     inside one (libssh's poll context must not change under its feet) */
    bool client_eof, client_eof_sent, backend_eof, write_dead, leftover, done, closed, free_me;
    bool eof_queued;              /* framed: the empty SSP_IN (end of stdin) is in obuf */
    bool have_exit;
    int exit_code;
    char exit_signal[16];
    uint8_t *obuf;                /* toward fd */
    size_t olen;
    struct chanout out;           /* toward the client (chanout.h): framed, rbuf, pend */
    struct ssh_channel_callbacks_struct cb;
};

static ssh_session g_sess;
static ssh_event g_ev;
static struct chan *g_chans;
static unsigned g_nchans, g_chans_max = 10;
static uint32_t g_next_id = 1;
static bool g_authed;
static char g_failed_user[80];
static unsigned g_auth_tries;
static uint8_t g_cbuf[CTL_BUF];
static size_t g_clen;
static int g_fdq[8];
static unsigned g_nfd;

static void die(const char *what)
{
    fprintf(stderr, "hutch-ssh: %s\n", what);
    _exit(1);
}

/* ---- control socket (blocking; one request at a time) ---- */

static void ctl_send(uint16_t type, uint32_t chan, const void *data, size_t len)
{
    uint8_t hdr[HX_FRAME_HDR];
    hx_frame_hdr_encode(hdr, type, chan, (uint32_t)len);
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)data, len}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = len ? 2 : 1};
    size_t want = sizeof hdr + len, done = 0;
    while (done < want) {
        ssize_t n = sendmsg(SSH_FD_CTL, &m, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0); /* hutchd went away: so does this connection */
        done += (size_t)n;
        while (n > 0 && m.msg_iovlen) {
            size_t k = (size_t)n < m.msg_iov[0].iov_len ? (size_t)n : m.msg_iov[0].iov_len;
            m.msg_iov[0].iov_base = (char *)m.msg_iov[0].iov_base + k;
            m.msg_iov[0].iov_len -= k;
            n -= (ssize_t)k;
            if (m.msg_iov[0].iov_len == 0) {
                m.msg_iov++;
                m.msg_iovlen--;
            }
        }
    }
}

static void queue_fd(int fd, void *ud)
{
    (void)ud;
    if (g_nfd < sizeof g_fdq / sizeof g_fdq[0])
        g_fdq[g_nfd++] = fd;
    else
        close(fd);
}

/* Reads one frame (payload copied to out, NUL-terminated); an fd that came
 * with it is queued. Exits when hutchd closed the socket. */
static void ctl_recv(struct hx_frame *f, uint8_t *out, size_t cap)
{
    for (;;) {
        int r = hx_frame_decode(g_cbuf, g_clen, f);
        if (r < 0)
            die("malformed control frame");
        if (r > 0) {
            if (f->len + 1 > cap)
                die("control frame too large");
            memcpy(out, f->payload, f->len);
            out[f->len] = 0;
            f->payload = out;
            memmove(g_cbuf, g_cbuf + r, g_clen - (size_t)r);
            g_clen -= (size_t)r;
            return;
        }
        if (g_clen == sizeof g_cbuf)
            die("control frame too large");
        ssize_t n = hx_recv_fds(SSH_FD_CTL, g_cbuf + g_clen, sizeof g_cbuf - g_clen, queue_fd, NULL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0);
        g_clen += (size_t)n;
    }
}

static int take_fd(void)
{
    if (!g_nfd)
        return -1;
    int fd = g_fdq[0];
    memmove(g_fdq, g_fdq + 1, (--g_nfd) * sizeof(int));
    return fd;
}

/* SS_OPEN / SS_FORWARD: the channel's socket, or -1 with why filled. */
static int ctl_open(uint16_t type, uint32_t id, json_t *req, char *why, size_t whycap)
{
    char *t = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!t)
        return -1;
    ctl_send(type, id, t, strlen(t));
    free(t);
    static uint8_t buf[4096];
    struct hx_frame f;
    ctl_recv(&f, buf, sizeof buf);
    if (f.type == SS_OPENED && f.chan == id) {
        int fd = take_fd();
        if (fd < 0)
            die("SS_OPENED without a socket");
        return fd;
    }
    if (f.type != SS_FAILED || f.chan != id)
        die("unexpected control frame");
    snprintf(why, whycap, "%s", f.len > 4 ? (const char *)f.payload + 4 : "refused");
    return -1;
}

/* ---- channels ---- */

static void set_events(struct chan *c, short want);

static int on_backend(socket_t fd, int revents, void *ud);

static void set_events(struct chan *c, short want)
{
    if (c->fd < 0 || c->events == want)
        return;
    if (c->events)
        ssh_event_remove_fd(g_ev, c->fd);
    c->events = want;
    if (want)
        ssh_event_add_fd(g_ev, c->fd, want, on_backend, c);
}

static void chan_finish(struct chan *c)
{
    if (c->done)
        return;
    c->done = true;
    c->want = 0; /* the socket closes in service(), outside the poll */
    if (!c->closed) {
        if (c->have_exit) {
            if (c->exit_signal[0])
                ssh_channel_request_send_exit_signal(c->ch, c->exit_signal, 0, "", "");
            else
                ssh_channel_request_send_exit_status(c->ch, c->exit_code);
        }
        ssh_channel_send_eof(c->ch);
        ssh_channel_close(c->ch);
    }
    c->free_me = true;
}

/* What the event loop should watch on the channel's socket now. */
/* The client's window is its promise to read, not a bound on our memory: a
 * client may grant gigabytes and read nothing, and libssh queues in memory
 * whatever the kernel does not take. So channels are not read while the
 * socket to the client holds more than half its send buffer unsent. */
static int g_sndbuf;
static bool g_backlogged;

static void check_backlog(void)
{
    int queued = 0;
    g_backlogged = g_sndbuf > 0 && ioctl(SSH_FD_CLIENT, SIOCOUTQ, &queued) == 0 && queued > g_sndbuf / 2;
}

static void update_events(struct chan *c)
{
    if (c->done || c->fd < 0)
        return;
    short want = 0;
    if (!c->backend_eof && chanout_can_read(&c->out) && !g_backlogged && ssh_channel_window_size(c->ch) > 0)
        want |= POLLIN;
    if (c->olen || c->leftover) /* bytes in libssh are pulled from on_backend */
        want |= POLLOUT;
    c->want = want;
}

/* ---- toward the client (chanout.c: never nested, never past the window) ---- */

static uint32_t out_window(void *ud)
{
    struct chan *c = ud;
    return c->done ? 0 : ssh_channel_window_size(c->ch);
}

static int out_write(void *ud, const uint8_t *p, uint32_t n, bool is_stderr)
{
    struct chan *c = ud;
    if (c->done)
        return -1; /* closed meanwhile: libssh's loop ran our close callback */
    return is_stderr ? ssh_channel_write_stderr(c->ch, p, n) : ssh_channel_write(c->ch, p, n);
}

static void out_exit(void *ud, const uint8_t *json, size_t n)
{
    struct chan *c = ud;
    json_t *o = n ? json_loadb((const char *)json, n, 0, NULL) : NULL;
    json_t *code = json_object_get(o, "code"), *sig = json_object_get(o, "signal");
    c->have_exit = json_is_integer(code);
    c->exit_code = c->have_exit ? (int)(json_integer_value(code) & 255) : 255;
    if (json_is_string(sig) && json_string_length(sig) < sizeof c->exit_signal)
        snprintf(c->exit_signal, sizeof c->exit_signal, "%s", json_string_value(sig));
    json_decref(o);
}

static const struct chanout_ops out_ops = {out_window, out_write, out_exit};

/* The socket ended and the client has everything it carried: the channel ends. */
static void maybe_end(struct chan *c)
{
    if (!c->done && c->backend_eof && chanout_empty(&c->out))
        chan_finish(c);
}

/* Bytes from the socket to the client while its window has room. */
static void to_client(struct chan *c)
{
    if (c->done)
        return;
    if (chanout_pump(&c->out, &out_ops, c) < 0)
        chan_finish(c);
    if (c->out.broken)
        c->backend_eof = true; /* hutchd broke the framing: the channel ends */
    maybe_end(c);
}

/* ---- toward the channel's socket ---- */

static void obuf_put_eof(struct chan *c);

static void obuf_flush(struct chan *c)
{
    obuf_put_eof(c);
    while (c->olen) {
        ssize_t n = write(c->fd, c->obuf, c->olen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            /* hutchd closed its end (the process ended, say): what is queued is
             * dropped, and the socket is still read to its end, which holds the
             * exit status */
            c->olen = 0;
            c->write_dead = true;
            return;
        }
        memmove(c->obuf, c->obuf + n, c->olen - (size_t)n);
        c->olen -= (size_t)n;
    }
    /* a forward's end of input: after the bytes still waiting in libssh too */
    if (!c->olen && c->client_eof && !c->leftover && !c->client_eof_sent && !c->out.framed) {
        shutdown(c->fd, SHUT_WR);
        c->client_eof_sent = true;
    }
}

/* Queues bytes (framed: as SSP_IN) toward the socket; returns how many it took. */
static size_t obuf_put(struct chan *c, uint16_t type, const uint8_t *p, size_t n)
{
    if (c->write_dead)
        return n; /* nobody reads them any more */
    size_t room = OBUF_MAX - c->olen;
    if (c->out.framed) {
        if (room <= HX_FRAME_HDR)
            return 0;
        size_t k = n < room - HX_FRAME_HDR ? n : room - HX_FRAME_HDR;
        if (k > SSH_PROC_FRAME_MAX)
            k = SSH_PROC_FRAME_MAX;
        if (k == 0 && n > 0)
            return 0;
        hx_frame_hdr_encode(c->obuf + c->olen, type, 0, (uint32_t)k);
        if (k)
            memcpy(c->obuf + c->olen + HX_FRAME_HDR, p, k);
        c->olen += HX_FRAME_HDR + k;
        return k;
    }
    size_t k = n < room ? n : room;
    memcpy(c->obuf + c->olen, p, k);
    c->olen += k;
    return k;
}

/* A process's end of stdin (the empty SSP_IN) goes after every byte the
 * client sent before it: after what still waits in libssh (leftover), and
 * once obuf has room for it. */
static void obuf_put_eof(struct chan *c)
{
    if (!c->out.framed || !c->client_eof || c->eof_queued || c->leftover || c->write_dead ||
        OBUF_MAX - c->olen <= HX_FRAME_HDR)
        return;
    obuf_put(c, SSP_IN, NULL, 0);
    c->eof_queued = true;
}

static int on_backend(socket_t fd, int revents, void *ud)
{
    struct chan *c = ud;
    if (c->done)
        return 0;
    if (revents & POLLOUT)
        obuf_flush(c);
    /* Not while this channel's bytes are on their way to the client further
     * up the stack (libssh's loop called us from inside a write): the next
     * turn reads. */
    uint32_t win = ssh_channel_window_size(c->ch);
    if ((revents & (POLLIN | POLLHUP | POLLERR)) && chanout_can_read(&c->out) && !g_backlogged && win > 0 &&
        (!c->out.framed || c->out.rlen < CHANOUT_RBUF)) {
        ssize_t n = c->out.framed ? read(fd, c->out.rbuf + c->out.rlen, CHANOUT_RBUF - c->out.rlen)
                                  : read(fd, c->out.pend, win < CHANOUT_PEND ? win : CHANOUT_PEND);
        if (n > 0) {
            if (c->out.framed)
                c->out.rlen += (size_t)n;
            else
                chanout_took(&c->out, (size_t)n);
            to_client(c);
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            c->backend_eof = true;
        }
    }
    maybe_end(c);
    if (c->done)
        return 0;
    if (c->leftover && c->olen < OBUF_MAX / 2) {
        /* bytes the data callback could not take wait in libssh: pull them */
        c->leftover = false;
        static uint8_t tmp[SSH_PROC_FRAME_MAX];
        while (c->olen + HX_FRAME_HDR + sizeof tmp <= OBUF_MAX && ssh_channel_poll(c->ch, 0) > 0) {
            int n = ssh_channel_read_nonblocking(c->ch, tmp, sizeof tmp, 0);
            if (n <= 0)
                break;
            obuf_put(c, SSP_IN, tmp, (size_t)n);
        }
        if (ssh_channel_poll(c->ch, 0) > 0)
            c->leftover = true;
        obuf_flush(c);
    }
    update_events(c);
    return 0;
}

static int cb_data(ssh_session s, ssh_channel ch, void *data, uint32_t len, int is_stderr, void *ud)
{
    struct chan *c = ud;
    if (c->done || c->fd < 0 || is_stderr)
        return (int)len; /* nowhere to go: dropped */
    size_t took = 0;
    while (took < len) {
        size_t k = obuf_put(c, SSP_IN, (const uint8_t *)data + took, len - took);
        if (!k)
            break;
        took += k;
    }
    /* libssh hands over all it holds: what is not taken now waits there */
    c->leftover = took < len;
    obuf_flush(c);
    update_events(c);
    return (int)took;
}

static void cb_eof(ssh_session s, ssh_channel ch, void *ud)
{
    struct chan *c = ud;
    c->client_eof = true;
    if (c->fd < 0 || c->done)
        return;
    obuf_flush(c); /* queues the end of stdin when nothing waits before it */
    update_events(c);
}

static void cb_close(ssh_session s, ssh_channel ch, void *ud)
{
    struct chan *c = ud;
    c->closed = true;
    chan_finish(c);
}

/* libssh's socket to the client drained: any channel may send again. */
static int cb_write_wontblock(ssh_session s, ssh_channel ch, uint32_t bytes, void *ud)
{
    struct chan *c = ud;
    if (c->done || c->fd < 0)
        return 0;
    to_client(c);
    update_events(c);
    return 0;
}

static int cb_pty(ssh_session s, ssh_channel ch, const char *term, int width, int height, int pxw, int pxh, void *ud)
{
    struct chan *c = ud;
    if (c->started)
        return -1;
    c->pty = true;
    c->cols = width < 1 ? 80 : width > 1000 ? 1000 : width;
    c->rows = height < 1 ? 24 : height > 1000 ? 1000 : height;
    size_t n = strlen(term);
    snprintf(c->term, sizeof c->term, "%s", n && n < sizeof c->term && strspn(term,
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+") == n ? term : "xterm");
    return 0;
}

static int cb_window(ssh_session s, ssh_channel ch, int width, int height, int pxw, int pxh, void *ud)
{
    struct chan *c = ud;
    if (!c->pty)
        return -1;
    c->cols = width < 1 ? 1 : width > 1000 ? 1000 : width;
    c->rows = height < 1 ? 1 : height > 1000 ? 1000 : height;
    if (c->fd >= 0 && c->out.framed && !c->done && c->olen + HX_FRAME_HDR + 8 <= OBUF_MAX) {
        uint8_t v[8];
        hx_put_u32(v, (uint32_t)c->rows);
        hx_put_u32(v + 4, (uint32_t)c->cols);
        hx_frame_hdr_encode(c->obuf + c->olen, SSP_RESIZE, 0, 8);
        memcpy(c->obuf + c->olen + HX_FRAME_HDR, v, 8);
        c->olen += HX_FRAME_HDR + 8;
        obuf_flush(c);
        update_events(c);
    }
    return 0;
}

static void cb_signal(ssh_session s, ssh_channel ch, const char *sig, void *ud)
{
    struct chan *c = ud;
    size_t n = strlen(sig);
    if (c->fd < 0 || !c->out.framed || c->done || n == 0 || n > 10 || c->olen + HX_FRAME_HDR + n > OBUF_MAX)
        return;
    hx_frame_hdr_encode(c->obuf + c->olen, SSP_SIGNAL, 0, (uint32_t)n);
    memcpy(c->obuf + c->olen + HX_FRAME_HDR, sig, n);
    c->olen += HX_FRAME_HDR + n;
    obuf_flush(c);
    update_events(c);
}

static int start(struct chan *c, const char *kind, const char *command)
{
    if (c->started)
        return -1;
    c->started = true;
    json_t *req = json_pack("{s:s}", "kind", kind);
    if (command)
        json_object_set_new(req, "command", json_string(command));
    if (c->pty)
        json_object_set_new(req, "pty", json_pack("{s:i, s:i, s:s}", "rows", c->rows, "cols", c->cols, "term", c->term));
    char why[256];
    int fd = ctl_open(SS_OPEN, c->id, req, why, sizeof why);
    if (fd < 0) {
        fprintf(stderr, "hutch-ssh: %s refused: %s\n", kind, why);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->out.framed = true;
    obuf_flush(c); /* an end of stdin that came first */
    update_events(c);
    return 0;
}

static int cb_shell(ssh_session s, ssh_channel ch, void *ud)
{
    return start(ud, "shell", NULL);
}

static int cb_exec(ssh_session s, ssh_channel ch, const char *command, void *ud)
{
    if (strlen(command) > 65536)
        return -1;
    return start(ud, "exec", command);
}

static int cb_subsystem(ssh_session s, ssh_channel ch, const char *name, void *ud)
{
    if (strcmp(name, "sftp") != 0)
        return -1;
    return start(ud, "sftp", NULL);
}

static int cb_env(ssh_session s, ssh_channel ch, const char *name, const char *value, void *ud)
{
    return -1; /* LANG and friends: refused, the sandbox's own environment stands */
}

static struct chan *chan_new(void)
{
    struct chan *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->obuf = malloc(OBUF_MAX);
    c->out.rbuf = malloc(CHANOUT_RBUF);
    c->out.pend = malloc(CHANOUT_PEND);
    if (!c->obuf || !c->out.rbuf || !c->out.pend) {
        free(c->obuf);
        free(c->out.rbuf);
        free(c->out.pend);
        free(c);
        return NULL;
    }
    c->fd = -1;
    c->id = g_next_id++;
    c->cb.userdata = c;
    c->cb.channel_data_function = cb_data;
    c->cb.channel_eof_function = cb_eof;
    c->cb.channel_close_function = cb_close;
    c->cb.channel_write_wontblock_function = cb_write_wontblock;
    c->cb.channel_pty_request_function = cb_pty;
    c->cb.channel_pty_window_change_function = cb_window;
    c->cb.channel_shell_request_function = cb_shell;
    c->cb.channel_exec_request_function = cb_exec;
    c->cb.channel_subsystem_request_function = cb_subsystem;
    c->cb.channel_env_request_function = cb_env;
    c->cb.channel_signal_function = cb_signal;
    ssh_callbacks_init(&c->cb);
    return c;
}

static void chan_free(struct chan *c)
{
    set_events(c, 0);
    if (c->fd >= 0)
        close(c->fd);
    if (c->ch) {
        /* libssh keeps a channel whose close is not confirmed yet: it must not call back into c */
        ssh_remove_channel_callbacks(c->ch, &c->cb);
        ssh_channel_free(c->ch);
    }
    free(c->obuf);
    free(c->out.rbuf);
    free(c->out.pend);
    free(c);
}

static void chan_link(struct chan *c, ssh_channel ch)
{
    c->ch = ch;
    ssh_set_channel_callbacks(ch, &c->cb);
    c->next = g_chans;
    g_chans = c;
    g_nchans++;
}

/* ---- authentication and channel opening (libssh messages) ---- */

/* Asks hutchd about name (cached per connection): true when it is valid. */
static bool user_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64)
        return false;
    if (strcmp(name, g_failed_user) == 0)
        return false;
    if (++g_auth_tries > AUTH_TRIES_MAX) {
        ssh_disconnect(g_sess);
        return false;
    }
    ctl_send(SS_AUTH, 0, name, n);
    static uint8_t buf[256];
    struct hx_frame f;
    ctl_recv(&f, buf, sizeof buf);
    if (f.type == SS_AUTH_OK)
        return true;
    if (f.type != SS_AUTH_NO)
        die("unexpected control frame");
    snprintf(g_failed_user, sizeof g_failed_user, "%s", name);
    return false;
}

static int on_message(ssh_session s, ssh_message msg, void *ud)
{
    int type = ssh_message_type(msg), sub = ssh_message_subtype(msg);
    if (type == SSH_REQUEST_AUTH) {
        const char *user = ssh_message_auth_user(msg);
        bool ok = false;
        if (!g_authed && user && (sub == SSH_AUTH_METHOD_NONE || sub == SSH_AUTH_METHOD_PASSWORD ||
                                  sub == SSH_AUTH_METHOD_INTERACTIVE || sub == SSH_AUTH_METHOD_PUBLICKEY)) {
            if (sub == SSH_AUTH_METHOD_PUBLICKEY) {
                enum ssh_publickey_state_e st = ssh_message_auth_publickey_state(msg);
                if (st == SSH_PUBLICKEY_STATE_NONE && user_valid(user)) {
                    ssh_message_auth_reply_pk_ok_simple(msg); /* then it signs; the name is the credential */
                    return 0;
                }
                ok = st == SSH_PUBLICKEY_STATE_VALID && user_valid(user);
            } else {
                ok = user_valid(user);
            }
        }
        if (ok) {
            g_authed = true;
            ssh_message_auth_reply_success(msg, 0);
            return 0;
        }
        /* After a refused name only publickey is offered, so a client does
         * not prompt for a password that would not help. */
        ssh_message_auth_set_methods(msg, SSH_AUTH_METHOD_PUBLICKEY);
        ssh_message_reply_default(msg);
        return 0;
    }
    if (type == SSH_REQUEST_CHANNEL_OPEN && g_authed && g_nchans < g_chans_max) {
        if (sub == SSH_CHANNEL_SESSION) {
            struct chan *c = chan_new();
            ssh_channel ch = c ? ssh_message_channel_request_open_reply_accept(msg) : NULL;
            if (!ch) {
                if (c)
                    chan_free(c);
                return 1;
            }
            chan_link(c, ch);
            return 0;
        }
        if (sub == SSH_CHANNEL_DIRECT_TCPIP) {
            const char *host = ssh_message_channel_request_open_destination(msg);
            int port = ssh_message_channel_request_open_destination_port(msg);
            struct chan *c = chan_new();
            if (!c || !host)
                return chan_free(c), 1;
            char why[256];
            int fd = ctl_open(SS_FORWARD, c->id, json_pack("{s:s, s:i}", "host", host, "port", port), why, sizeof why);
            if (fd < 0) {
                fprintf(stderr, "hutch-ssh: forward to %.100s:%d refused: %s\n", host, port, why);
                chan_free(c);
                return 1;
            }
            ssh_channel ch = ssh_message_channel_request_open_reply_accept(msg);
            if (!ch) {
                close(fd);
                chan_free(c);
                return 1;
            }
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            c->fd = fd;
            c->started = true;
            chan_link(c, ch);
            update_events(c);
            return 0;
        }
    }
    return 1; /* everything else: the default refusal */
}

static int on_ctl(socket_t fd, int revents, void *ud)
{
    /* hutchd sends nothing unasked: readable means it closed (the sandbox stopped) */
    _exit(0);
}

/* After each turn of the loop: a window adjust from the client reaches no
 * callback of ours (libssh's write_wontblock is about its socket), so every
 * channel that waits for window tries again here. */
static void service(void)
{
    check_backlog();
    for (struct chan *c = g_chans; c; c = c->next) {
        if (!c->done && c->fd >= 0) {
            to_client(c);
            update_events(c);
        }
        set_events(c, c->done ? 0 : c->want);
        if (c->done && c->fd >= 0) {
            close(c->fd);
            c->fd = -1;
        }
    }
}

static void reap(void)
{
    for (struct chan **pp = &g_chans; *pp;) {
        struct chan *c = *pp;
        if (c->free_me && (c->closed || ssh_channel_is_closed(c->ch))) {
            *pp = c->next;
            g_nchans--;
            chan_free(c);
            continue;
        }
        pp = &c->next;
    }
}

int main(int argc, char **argv)
{
    const char *root = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--root") == 0)
            root = argv[++i];
    signal(SIGPIPE, SIG_IGN);
    static uint8_t cfgbuf[32768];
    struct hx_frame f;
    ctl_recv(&f, cfgbuf, sizeof cfgbuf);
    if (f.type != SS_CONFIG)
        die("expected the configuration first");
    json_t *cfg = json_loadb((const char *)f.payload, f.len, 0, NULL);
    explicit_bzero(cfgbuf, sizeof cfgbuf);
    const char *pem = json_string_value(json_object_get(cfg, "key"));
    json_int_t cm = json_integer_value(json_object_get(cfg, "channels_max"));
    if (cm > 0 && cm <= 1000)
        g_chans_max = (unsigned)cm;
    ssh_key key = NULL;
    if (ssh_init() < 0 || !pem || ssh_pki_import_privkey_base64(pem, NULL, NULL, NULL, &key) != SSH_OK)
        die("cannot load the host key");
    explicit_bzero((char *)pem, strlen(pem));
    json_decref(cfg);
    ssh_bind bind = ssh_bind_new();
    bool no = false;
    if (!bind || ssh_bind_options_set(bind, SSH_BIND_OPTIONS_PROCESS_CONFIG, &no) < 0 ||
        ssh_bind_options_set(bind, SSH_BIND_OPTIONS_IMPORT_KEY, key) < 0)
        die("ssh_bind setup failed");
    g_sess = ssh_new();
    if (!g_sess)
        die("out of memory");
    static const char *const extra[] = {"poll", "ppoll", "select", "pselect6", NULL};
    struct hx_confine conf = {.who = "hutch-ssh", .root = root, .uid = 65534, .gid = 65534, .extra = extra};
    if (hx_confine(&conf) < 0)
        _exit(1);
    if (ssh_bind_accept_fd(bind, g_sess, SSH_FD_CLIENT) != SSH_OK)
        die(ssh_get_error(bind));
    long timeout = 20;
    ssh_options_set(g_sess, SSH_OPTIONS_TIMEOUT, &timeout);
    ssh_set_auth_methods(g_sess, SSH_AUTH_METHOD_NONE | SSH_AUTH_METHOD_PASSWORD | SSH_AUTH_METHOD_PUBLICKEY |
                                     SSH_AUTH_METHOD_INTERACTIVE);
    /* Server callbacks, even empty, make libssh hand channel requests (pty,
     * shell, exec, subsystem, window-change) to the channels' callbacks; what
     * they leave (authentication, channel opens) comes to on_message. Set
     * before the key exchange: the client's first request may arrive with
     * its last packet and would otherwise sit in a queue unanswered. */
    static struct ssh_server_callbacks_struct server_cb = {.userdata = NULL};
    ssh_callbacks_init(&server_cb);
    ssh_set_server_callbacks(g_sess, &server_cb);
    ssh_set_message_callback(g_sess, on_message, NULL);
    if (ssh_handle_key_exchange(g_sess) != SSH_OK) {
        fprintf(stderr, "hutch-ssh: key exchange: %s\n", ssh_get_error(g_sess));
        _exit(0);
    }
    g_ev = ssh_event_new();
    if (!g_ev || ssh_event_add_session(g_ev, g_sess) != SSH_OK ||
        ssh_event_add_fd(g_ev, SSH_FD_CTL, POLLIN, on_ctl, NULL) != SSH_OK)
        die("event setup failed");
    ssh_set_blocking(g_sess, 0);
    socklen_t sl = sizeof g_sndbuf;
    if (getsockopt(SSH_FD_CLIENT, SOL_SOCKET, SO_SNDBUF, &g_sndbuf, &sl) < 0)
        g_sndbuf = 0;
    for (;;) {
        int r = ssh_event_dopoll(g_ev, g_backlogged ? 100 : 1000); /* nothing wakes us when the kernel drains */
        service();
        reap();
        if (r == SSH_ERROR || !ssh_is_connected(g_sess)) {
            if (r == SSH_ERROR)
                fprintf(stderr, "hutch-ssh: session ends: %s\n", ssh_get_error(g_sess));
            break;
        }
    }
    _exit(0);
}
