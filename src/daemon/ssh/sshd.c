/* SSH connections on hutchd's side (see sshd.h). hutch-ssh is not trusted:
 * it parses what SSH clients send. What it says is bounded here, it may ask
 * one thing at a time, only after a login for anything but a login, and
 * only for the sandbox hutchd bound the connection to. */
#include "daemon/ssh/sshd.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libssh/libssh.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "daemon/core/sandbox.h"
#include "daemon/helper.h"
#include "lib/uvframe.h"
#include "lib/wire.h"
#include "ssh/ctl.h"

#define CONNS_MAX 128              /* hutch-ssh processes at once */
#define UNAUTH_PER_SOURCE_MAX 8    /* connections not logged in yet, per source address */
#define CONNS_PER_SANDBOX_MAX 16   /* logged-in connections per sandbox */
#define CHANNELS_MAX 10            /* per connection (hutch-ssh enforces, hutchd checks) */
#define LOGIN_TIMEOUT_MS 30000     /* from accept to a valid login name */
#define FAIL_BURST 5.0             /* failed logins a source may have in hand ... */
#define FAIL_DECAY_PER_S 0.2       /* ... one more every 5 s */
#define SOURCES 256                /* source addresses remembered (least recent reused) */
#define CTL_RBUF (HX_FRAME_HDR + 70000u)

struct sconn {
    struct sconn *next;
    uint64_t id;
    uv_process_t proc;
    uv_pipe_t ctl;
    uv_timer_t timer;
    bool proc_alive, ctl_open, authed, dead;
    int handles;
    uint32_t pending;              /* the channel of the request hutch-ssh waits on, 0: none */
    unsigned opened;               /* channels it was given */
    char peer[INET6_ADDRSTRLEN];
    char sandbox[32];
    char user[SSH_USER_LEN + 1];
    struct hx_frame_rd rd;         /* over rbuf */
    uint8_t rbuf[CTL_RBUF];
};

struct source {
    char addr[INET6_ADDRSTRLEN];
    double score;                  /* failed logins, decaying */
    int64_t last_ms, logged_ms;
};

static struct {
    bool on;
    const struct sshd_ops *ops;
    int listen_fd;
    uv_poll_t poll;
    uv_timer_t pause;              /* accept ran out of descriptors */
    char path[4200], root[4200];
    char *key_pem;
    char key_pub[512];
    char host[300];
    int port;
    struct sconn *conns;
    unsigned nconns;
    uint64_t next_id;
    struct source sources[SOURCES];
} g = {.listen_fd = -1};

const char *sshd_host_key(void)
{
    return g.key_pub;
}

const char *sshd_host_name(void)
{
    return g.host;
}

int sshd_port(void)
{
    return g.port;
}

/* ---- failed logins per source ---- */

static struct source *source_get(const char *addr)
{
    struct source *lru = &g.sources[0];
    for (size_t i = 0; i < SOURCES; i++) {
        if (strcmp(g.sources[i].addr, addr) == 0)
            return &g.sources[i];
        if (g.sources[i].last_ms < lru->last_ms)
            lru = &g.sources[i];
    }
    memset(lru, 0, sizeof *lru);
    snprintf(lru->addr, sizeof lru->addr, "%s", addr);
    lru->last_ms = now_ms();
    return lru;
}

static double source_score(struct source *s)
{
    int64_t now = now_ms();
    s->score -= (double)(now - s->last_ms) / 1000.0 * FAIL_DECAY_PER_S;
    if (s->score < 0)
        s->score = 0;
    s->last_ms = now;
    return s->score;
}

/* True (and a log line, at most one per 10 s per source) when addr has used up its failures. */
static bool source_limited(const char *addr)
{
    struct source *s = source_get(addr);
    if (source_score(s) + 1.0 <= FAIL_BURST)
        return false;
    int64_t now = now_ms();
    if (now - s->logged_ms >= 10000) {
        s->logged_ms = now;
        fprintf(stderr, "hutchd: ssh: %s: too many failed logins, refusing its connections for a while\n", addr);
    }
    return true;
}

static void source_failed(const char *addr)
{
    struct source *s = source_get(addr);
    source_score(s);
    s->score += 1.0;
}

/* ---- connections ---- */

static struct sconn *conn_find(uint64_t id)
{
    for (struct sconn *c = g.conns; c; c = c->next)
        if (c->id == id && !c->dead)
            return c;
    return NULL;
}

static void conn_maybe_free(struct sconn *c)
{
    if (c->handles > 0)
        return;
    for (struct sconn **pp = &g.conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    g.nconns--;
    free(c);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct sconn *c = h->data;
    c->handles--;
    conn_maybe_free(c);
}

/* Ends the connection: the control socket closes (hutch-ssh exits on it) and the process is killed. */
static void conn_kill(struct sconn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    if (c->ctl_open) {
        c->ctl_open = false;
        uv_close((uv_handle_t *)&c->ctl, on_conn_handle_closed);
    }
    uv_timer_stop(&c->timer);
    if (c->proc_alive)
        uv_process_kill(&c->proc, SIGKILL);
}

static void conn_broken(struct sconn *c, const char *why)
{
    fprintf(stderr, "hutchd: ssh: connection from %s: hutch-ssh %s; ending it\n", c->peer, why);
    conn_kill(c);
}

/* One frame to hutch-ssh, with fd (>= 0, owned) as SCM_RIGHTS. */
static void conn_send(struct sconn *c, uint16_t type, uint32_t chan, const void *data, size_t len, int fd)
{
    if (!c->ctl_open) {
        if (fd >= 0)
            close(fd);
        return;
    }
    helper_send_frame(&c->ctl, type, chan, data, len, fd);
}

void sshd_opened(uint64_t conn, uint32_t chan, int fd)
{
    struct sconn *c = conn_find(conn);
    if (!c || c->pending != chan) {
        close(fd);
        return;
    }
    c->pending = 0;
    c->opened++;
    conn_send(c, SS_OPENED, chan, NULL, 0, fd);
}

void sshd_failed(uint64_t conn, uint32_t chan, int err, const char *why)
{
    struct sconn *c = conn_find(conn);
    if (!c || c->pending != chan)
        return;
    c->pending = 0;
    uint8_t buf[4 + 200];
    hx_put_u32(buf, (uint32_t)(err > 0 ? err : EIO));
    size_t n = strnlen(why, 200);
    memcpy(buf + 4, why, n);
    conn_send(c, SS_FAILED, chan, buf, 4 + n, -1);
}

void sshd_sandbox_gone(const char *sandbox)
{
    for (struct sconn *c = g.conns; c; c = c->next)
        if (c->authed && !c->dead && strcmp(c->sandbox, sandbox) == 0) {
            fprintf(stderr, "hutchd: ssh: %s: its sandbox stopped; closing the connection from %s\n", sandbox, c->peer);
            conn_kill(c);
        }
}

unsigned sshd_sandbox_conns(const char *sandbox)
{
    unsigned n = 0;
    for (struct sconn *c = g.conns; c; c = c->next)
        n += c->authed && !c->dead && strcmp(c->sandbox, sandbox) == 0;
    return n;
}

static void auth(struct sconn *c, const uint8_t *p, size_t n)
{
    uint32_t no = EACCES;
    char name[65];
    if (n == 0 || n > 64)
        return conn_broken(c, "sent a bad login name");
    memcpy(name, p, n);
    name[n] = 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e)
            name[i] = '?'; /* for the log line only: such a name is never valid */
    char sandbox[32] = "";
    if (source_limited(c->peer)) {
        no = EAGAIN;
    } else if (g.ops->auth(name, sandbox) == 0) {
        if (sshd_sandbox_conns(sandbox) >= CONNS_PER_SANDBOX_MAX) {
            fprintf(stderr, "hutchd: ssh: %s: already %d connections; refusing one from %s\n", sandbox,
                    CONNS_PER_SANDBOX_MAX, c->peer);
            no = EUSERS;
        } else {
            c->authed = true;
            snprintf(c->sandbox, sizeof c->sandbox, "%s", sandbox);
            snprintf(c->user, sizeof c->user, "%s", name);
            uv_timer_stop(&c->timer);
            fprintf(stderr, "hutchd: ssh: %s: login from %s\n", sandbox, c->peer);
            conn_send(c, SS_AUTH_OK, 0, NULL, 0, -1);
            return;
        }
    } else {
        source_failed(c->peer);
        fprintf(stderr, "hutchd: ssh: failed login from %s (unknown user \"%.*s...\")\n", c->peer, 4, name);
    }
    uint8_t v[4];
    hx_put_u32(v, no);
    conn_send(c, SS_AUTH_NO, 0, v, 4, -1);
}

static void request(struct sconn *c, const struct hx_frame *f)
{
    if (!c->authed)
        return conn_broken(c, "asked for a channel before a login");
    if (c->pending || f->chan == 0)
        return conn_broken(c, "asked for two things at once");
    if (c->opened >= 4096)
        return conn_broken(c, "opened too many channels");
    json_t *o = json_loadb((const char *)f->payload, f->len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return conn_broken(c, "sent a malformed request");
    }
    c->pending = f->chan;
    struct sandbox *sb = sandbox_find(c->sandbox);
    if (!sb || sb->state != SB_RUNNING) {
        json_decref(o);
        return sshd_failed(c->id, f->chan, ENOENT, "the sandbox is not running");
    }
    if (f->type == SS_OPEN) {
        g.ops->open(c->id, f->chan, c->sandbox, o);
    } else {
        const char *host = json_string_value(json_object_get(o, "host"));
        json_t *port = json_object_get(o, "port");
        if (!host || !json_is_integer(port))
            sshd_failed(c->id, f->chan, EINVAL, "bad forward request");
        else
            g.ops->forward(c->id, f->chan, c->sandbox, host, (int)json_integer_value(port));
    }
    json_decref(o);
}

static void on_ctl_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b)
{
    struct sconn *c = h->data;
    *b = uv_buf_init((char *)c->rd.buf + c->rd.len, (unsigned)(c->rd.cap - c->rd.len));
}

static bool on_ctl_frame(void *ctx, const struct hx_frame *f)
{
    struct sconn *c = ctx;
    uint64_t id = c->id;
    if (f->type == SS_AUTH && !c->authed && !c->pending)
        auth(c, f->payload, f->len);
    else if (f->type == SS_OPEN || f->type == SS_FORWARD)
        request(c, f);
    else
        conn_broken(c, "sent an unexpected frame");
    return conn_find(id) && c->ctl_open;
}

static void on_ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct sconn *c = s->data;
    if (nread < 0)
        return conn_kill(c);
    if (uv_pipe_pending_count(&c->ctl) > 0)
        return conn_broken(c, "sent a file descriptor");
    c->rd.len += (size_t)nread;
    if (hx_frames_take(&c->rd, on_ctl_frame, c) < 0)
        conn_broken(c, "sent a malformed frame");
}

static void on_login_timeout(uv_timer_t *t)
{
    struct sconn *c = t->data;
    fprintf(stderr, "hutchd: ssh: connection from %s: no login within %d s; closing it\n", c->peer,
            LOGIN_TIMEOUT_MS / 1000);
    conn_kill(c);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    struct sconn *c = p->data;
    c->proc_alive = false;
    if (status != 0 || (sig && sig != SIGKILL))
        fprintf(stderr, "hutchd: ssh: hutch-ssh for %s exited (status %" PRId64 ", signal %d)\n", c->peer, status, sig);
    conn_kill(c);
    uv_close((uv_handle_t *)p, on_conn_handle_closed);
}

static void conn_start(int fd, const char *peer)
{
    struct sconn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->id = ++g.next_id;
    c->rd = (struct hx_frame_rd){.buf = c->rbuf, .cap = sizeof c->rbuf};
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    char *args[] = {g.path, "--root", g.root, NULL};
    c->proc.data = c;
    int ctl, r = helper_spawn(g_daemon.loop, &c->proc, on_exit_cb, args, &fd, 1, &ctl); /* the client's: fd 4 */
    close(fd);
    if (r < 0) {
        fprintf(stderr, "hutchd: ssh: start %s: %s\n", g.path, uv_strerror(r));
        c->dead = true;
        c->handles = 1;
        c->next = g.conns;
        g.conns = c;
        g.nconns++;
        uv_close((uv_handle_t *)&c->proc, on_conn_handle_closed); /* freed once libuv lets go of it */
        return;
    }
    c->proc_alive = true;
    c->handles = 3;
    c->next = g.conns;
    g.conns = c;
    g.nconns++;
    uv_pipe_init(g_daemon.loop, &c->ctl, 1);
    c->ctl.data = c;
    uv_pipe_open(&c->ctl, ctl);
    c->ctl_open = true;
    uv_timer_init(g_daemon.loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, on_login_timeout, LOGIN_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&c->ctl, on_ctl_alloc, on_ctl_read);
    json_t *cfg = json_pack("{s:s, s:i}", "key", g.key_pem, "channels_max", CHANNELS_MAX);
    char *t = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
    json_t *k = json_object_get(cfg, "key");
    if (k)
        explicit_bzero((char *)json_string_value(k), json_string_length(k));
    json_decref(cfg);
    if (!t)
        return conn_kill(c);
    conn_send(c, SS_CONFIG, 0, t, strlen(t), -1);
    explicit_bzero(t, strlen(t));
    free(t);
}

static void on_listen(uv_poll_t *p, int status, int events);

static void on_pause_over(uv_timer_t *t)
{
    if (g.on)
        uv_poll_start(&g.poll, UV_READABLE, on_listen);
}

static void on_listen(uv_poll_t *p, int status, int events)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(g.listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)) {
            /* out of descriptors: the connection waits in the backlog; try again in a while
             * instead of spinning on a listener that stays readable */
            fprintf(stderr, "hutchd: ssh: accept: %s; pausing the SSH port for 1 s\n", strerror(errno));
            uv_poll_stop(&g.poll);
            uv_timer_start(&g.pause, on_pause_over, 1000, 0);
            return;
        }
        if (fd < 0)
            return;
        char peer[INET6_ADDRSTRLEN] = "?";
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, peer, sizeof peer);
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, peer, sizeof peer);
        unsigned unauth = 0;
        for (struct sconn *c = g.conns; c; c = c->next)
            unauth += !c->authed && !c->dead && strcmp(c->peer, peer) == 0;
        if (g.nconns >= CONNS_MAX || unauth >= UNAUTH_PER_SOURCE_MAX || source_limited(peer)) {
            if (g.nconns >= CONNS_MAX || unauth >= UNAUTH_PER_SOURCE_MAX)
                fprintf(stderr, "hutchd: ssh: refusing a connection from %s (%s)\n", peer,
                        g.nconns >= CONNS_MAX ? "too many connections" : "too many logins under way from it");
            close(fd);
            continue;
        }
        int one = 1; /* small packets both ways (keystrokes, exec round trips): no Nagle delay */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_start(fd, peer);
    }
}

/* ---- host key ---- */

static int host_key(struct hx_err *e)
{
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/ssh", g_daemon.cfg->state_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %m", dir);
    snprintf(path, sizeof path, "%s/host_ed25519", dir);
    ssh_key key = NULL;
    if (access(path, F_OK) == 0) {
        if (ssh_pki_import_privkey_file(path, NULL, NULL, NULL, &key) != SSH_OK)
            return hx_fail(e, EINVAL, "cannot read the SSH host key %s", path);
    } else {
        char *pem = NULL;
        if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &key) != SSH_OK ||
            ssh_pki_export_privkey_base64(key, NULL, NULL, NULL, &pem) != SSH_OK) {
            ssh_key_free(key);
            return hx_fail(e, EIO, "cannot make an SSH host key");
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        size_t n = strlen(pem);
        bool ok = fd >= 0 && write(fd, pem, n) == (ssize_t)n && fsync(fd) == 0;
        if (fd >= 0)
            close(fd);
        explicit_bzero(pem, n);
        ssh_string_free_char(pem);
        if (!ok) {
            ssh_key_free(key);
            unlink(path);
            return hx_fail(e, EIO, "cannot write the SSH host key %s", path);
        }
        fprintf(stderr, "hutchd: ssh: made a host key %s\n", path);
    }
    char *pem = NULL, *pub = NULL;
    if (ssh_pki_export_privkey_base64(key, NULL, NULL, NULL, &pem) != SSH_OK ||
        ssh_pki_export_pubkey_base64(key, &pub) != SSH_OK) {
        ssh_key_free(key);
        return hx_fail(e, EIO, "cannot export the SSH host key");
    }
    snprintf(g.key_pub, sizeof g.key_pub, "%s %s", ssh_key_type_to_char(ssh_key_type(key)), pub);
    g.key_pem = strdup(pem);
    explicit_bzero(pem, strlen(pem));
    ssh_string_free_char(pem);
    ssh_string_free_char(pub);
    ssh_key_free(key);
    return g.key_pem ? 0 : hx_fail(e, ENOMEM, "out of memory");
}

int sshd_start(const struct sshd_ops *ops, struct hx_err *e)
{
    struct config *cfg = g_daemon.cfg;
    if (g.on)
        return 0;
    if (cfg->ssh_port == 0)
        return hx_fail(e, EOPNOTSUPP, "SSH is off on this hutchd (--ssh-port 0)");
    g.ops = ops;
    if (helper_find(cfg->self_dir, "ssh", "hutch-ssh", g.path, sizeof g.path, e) < 0)
        return -e->code;
    snprintf(g.root, sizeof g.root, "%s/ssh-root", cfg->state_dir);
    if (mkdir(g.root, 0555) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %m", g.root);
    chmod(g.root, 0555);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->ssh_addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)cfg->ssh_port);
        sl = sizeof *a4;
    } else if (inet_pton(AF_INET6, cfg->ssh_addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)cfg->ssh_port);
        sl = sizeof *a6;
    } else {
        return hx_fail(e, EINVAL, "--ssh-addr wants an IP address, got \"%.100s\"", cfg->ssh_addr);
    }
    int r = host_key(e);
    if (r < 0)
        return r;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return hx_fail(e, errno, "socket: %m");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 128) < 0) {
        int err = errno;
        close(fd);
        return hx_fail(e, err, "SSH: listen on %s port %d: %s", cfg->ssh_addr, cfg->ssh_port, strerror(err));
    }
    g.listen_fd = fd;
    g.port = cfg->ssh_port;
    snprintf(g.host, sizeof g.host, "%s", cfg->ssh_host ? cfg->ssh_host : cfg->ssh_addr);
    uv_poll_init(g_daemon.loop, &g.poll, fd);
    uv_poll_start(&g.poll, UV_READABLE, on_listen);
    uv_timer_init(g_daemon.loop, &g.pause);
    uv_unref((uv_handle_t *)&g.pause);
    g.on = true;
    printf("hutchd: ssh: listening on %s port %d (host key %s)\n", cfg->ssh_addr, g.port, g.key_pub);
    fflush(stdout);
    return 0;
}

void sshd_fini(void)
{
    if (!g.on)
        return;
    g.on = false;
    for (struct sconn *c = g.conns; c; c = c->next)
        conn_kill(c);
    uv_poll_stop(&g.poll);
    uv_close((uv_handle_t *)&g.poll, NULL);
    uv_close((uv_handle_t *)&g.pause, NULL);
    close(g.listen_fd);
    g.listen_fd = -1;
    if (g.key_pem)
        explicit_bzero(g.key_pem, strlen(g.key_pem));
    free(g.key_pem);
    g.key_pem = NULL;
}
