/* The transparent TCP proxy: every TCP connection from a sandbox arrives here
 * (nftables redirect). We learn the original destination, the sandbox (by
 * source address) and the host name (TLS SNI, HTTP Host or the DNS answer we
 * gave), decide, connect upstream and stream both ways with backpressure.
 * A later stage (TLS interception for secrets, issue 5) plugs in between
 * decide() and the pipe; nothing here assumes the bytes pass unchanged. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>
#include <linux/netfilter_ipv4.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include "lib/err.h"
#include "proxy/http1.h"
#include "proxy/mitm.h"
#include "proxy/proxy.h"
#include "proxy/sni.h"
#include "proxy/subst.h"

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

#define PEEK_MAX (SNI_HELLO_MAX + 4096)  /* client bytes held before a decision */
#define PEEK_WAIT_MS 300                  /* server-speaks-first protocols: decide without bytes */
#define PEEK_WAIT_WEB_MS 10000            /* ports 80 and 443: the client speaks first (TLS, HTTP) */
#define READ_CHUNK (256 * 1024)           /* relay reads (one static buffer): fewer syscalls per MB */
#define PEEK_READ (64 * 1024)             /* reads while client bytes are held: PEEK_CAP bounds them */
#define PEEK_CAP (PEEK_MAX + PEEK_READ)
#define WQ_HIGH (1024 * 1024)             /* stop reading the other side above this many queued bytes */
#define BYTES_FLUSH_MS 1000

enum pstate { P_PEEK, P_DECIDING, P_CONNECTING, P_PIPE, P_CLOSING, P_DONE };
enum proto { PR_TCP, PR_TLS, PR_HTTP };
static const char *const proto_names[] = {"tcp", "tls", "http"};

struct pconn {
    uv_tcp_t cli, up;
    uv_timer_t timer;
    uv_connect_t creq;
    int handles;                  /* open libuv handles; freed at 0 */
    int refs;                     /* pending resolver callbacks */
    enum pstate st;
    enum proto proto;
    char sbid[32];
    int family;                   /* of the original destination */
    uint8_t dst[16];
    uint16_t dport;
    char host[POLICY_NAME_MAX + 1];  /* name the decision was made for ("" = address only) */
    uint8_t *peek;                /* client bytes before the decision */
    size_t peek_len;
    struct h1 h1;                 /* PR_HTTP: request framing after the first head */
    uint8_t *hbuf;                /* PR_HTTP: a following request head being collected */
    size_t hbuf_len;
    uint8_t *held;                /* PR_HTTP: client bytes after an Upgrade/CONNECT, until the answer */
    size_t held_len;
    uint8_t status[12];           /* the start of that answer: "HTTP/1.1 101" */
    size_t status_len;
    bool up_open, cli_eof, up_eof, cli_shut, up_shut;
    bool cli_paused, up_paused, peek_expired, head_timer;
    int dirs_done;
    uint64_t up_bytes, down_bytes, up_sent, down_sent;
    int64_t last_flush;
    /* secrets: TLS interception (docs/secrets.md) */
    bool sni_named;               /* c->host came from the TLS SNI */
    bool mitm;                    /* intercepted: plaintext between two TLS sessions */
    SSL *cssl, *ussl;             /* towards the sandbox (we serve), towards the upstream (we verify) */
    bool cssl_up, ussl_up;        /* handshakes complete */
    bool mask_timer_on;
    uv_timer_t mask_timer;        /* flushes a held response tail that turned out not to be a value */
    struct mask_state *mask;
    /* passthrough (no interception, no HTTP parsing): splice(2) between raw
     * fds, the uv_tcp handles closed (libuv cannot share an fd with uv_poll) */
    bool spliced;
    struct sp_side {
        int fd;                   /* our dup of the socket */
        uv_poll_t poll;
        int pipe[2];              /* bytes read from this side, not yet written to the other */
        size_t inpipe;
        bool eof, shut;           /* read EOF seen; the other side's write end shut down */
    } sp[2];                      /* 0: sandbox side, 1: upstream side */
    int sp_polls;
};

static uv_tcp_t lis4, lis6;

static void pconn_close(struct pconn *c);

static void pconn_free(struct pconn *c)
{
    free(c->peek);
    free(c->hbuf);
    free(c->held);
    SSL_free(c->cssl);
    SSL_free(c->ussl);
    free(c->mask);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct pconn *c = h->data;
    if (--c->handles == 0 && c->refs == 0)
        pconn_free(c);
}

static void flush_bytes(struct pconn *c, bool closed)
{
    if (c->up_bytes == c->up_sent && c->down_bytes == c->down_sent && !closed)
        return;
    report_bytes(c->sbid, c->host, c->family, c->dst, c->dport, c->up_bytes - c->up_sent,
                 c->down_bytes - c->down_sent, closed);
    c->up_sent = c->up_bytes;
    c->down_sent = c->down_bytes;
}

/* Splice mode ends: the pollers go, then our fds (the sockets die with the
 * last one). reset: the sandbox side sees ECONNRESET, like pconn_reset. */
static void splice_close(struct pconn *c, bool reset)
{
    for (int i = 0; i < 2; i++) {
        struct sp_side *d = &c->sp[i];
        if (reset && i == 0) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(d->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        if (c->sp_polls & (1 << i))
            uv_close((uv_handle_t *)&d->poll, on_handle_closed);
        close(d->fd);
        close(d->pipe[0]);
        close(d->pipe[1]);
        d->fd = d->pipe[0] = d->pipe[1] = -1;
    }
    c->sp_polls = 0;
}

static void pconn_close(struct pconn *c)
{
    if (c->st == P_DONE)
        return;
    if (c->st == P_PIPE || c->st == P_CONNECTING)
        flush_bytes(c, true);
    c->st = P_DONE;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (c->spliced) {
        splice_close(c, false);
        return;
    }
    uv_close((uv_handle_t *)&c->cli, on_handle_closed);
    if (c->up_open)
        uv_close((uv_handle_t *)&c->up, on_handle_closed);
    if (c->mask_timer_on)
        uv_close((uv_handle_t *)&c->mask_timer, on_handle_closed);
}

/* A blocked connection is reset: the client sees ECONNRESET at once. */
static void pconn_reset(struct pconn *c)
{
    if (c->st == P_DONE)
        return;
    if (c->st == P_PIPE || c->st == P_CONNECTING)
        flush_bytes(c, true);
    c->st = P_DONE;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (c->spliced) {
        splice_close(c, true);
        return;
    }
    if (uv_tcp_close_reset(&c->cli, on_handle_closed) < 0)
        uv_close((uv_handle_t *)&c->cli, on_handle_closed);
    if (c->up_open)
        uv_close((uv_handle_t *)&c->up, on_handle_closed);
    if (c->mask_timer_on)
        uv_close((uv_handle_t *)&c->mask_timer, on_handle_closed);
}

struct wreq {
    uv_write_t w;
    struct pconn *c;
    bool to_up;
    char data[];
};

static void on_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b);
static void on_cli_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void on_up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static int upgrade_answer(struct pconn *c, const uint8_t *p, size_t n);

static void on_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct pconn *c = r->c;
    free(r);
    if (c->st == P_DONE)
        return;
    if (status < 0) {
        pconn_close(c);
        return;
    }
    /* backpressure: resume the side that feeds this stream once drained */
    if (c->cli_paused && uv_stream_get_write_queue_size((uv_stream_t *)&c->up) < WQ_HIGH / 2 && !c->cli_eof) {
        c->cli_paused = false;
        uv_read_start((uv_stream_t *)&c->cli, on_alloc, on_cli_read);
    }
    if (c->up_paused && uv_stream_get_write_queue_size((uv_stream_t *)&c->cli) < WQ_HIGH / 2 && !c->up_eof) {
        c->up_paused = false;
        uv_read_start((uv_stream_t *)&c->up, on_alloc, on_up_read);
    }
}

/* What the socket takes now goes in at once (uv_try_write: no copy, no
 * allocation, no write request, and none of the epoll_ctl calls libuv makes
 * around a queued write; docs/performance/proxy.md); only the rest is copied and
 * queued. uv_try_write refuses while bytes are queued, so the order holds;
 * a write error is left to the queued write, whose callback closes as before. */
static int send_bytes(struct pconn *c, bool to_up, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    uv_stream_t *s = (uv_stream_t *)(to_up ? &c->up : &c->cli);
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int w = uv_try_write(s, &b, 1);
    size_t off = w > 0 ? (size_t)w : 0;
    if (off < n) {
        struct wreq *r = malloc(sizeof *r + (n - off));
        if (!r)
            return -ENOMEM;
        r->c = c;
        r->to_up = to_up;
        memcpy(r->data, (const char *)p + off, n - off);
        b = uv_buf_init(r->data, (unsigned)(n - off));
        int e = uv_write(&r->w, s, &b, 1, on_written);
        if (e < 0) {
            free(r);
            return e;
        }
    }
    if (to_up)
        c->up_bytes += n;
    else
        c->down_bytes += n;
    return 0;
}

/* ---- secrets: TLS interception plumbing ---- */

/* Ciphertext the SSL produced goes to its socket. */
static int tls_flush(struct pconn *c, bool to_up)
{
    SSL *s = to_up ? c->ussl : c->cssl;
    char buf[16384];
    while (s && tls_pending_out(s) > 0) {
        size_t k = tls_take_out(s, buf, sizeof buf);
        if (k == 0)
            break;
        if (send_bytes(c, to_up, buf, k) < 0)
            return -EIO;
    }
    return 0;
}

/* Plaintext to one side: through its TLS session when intercepted. */
static int deliver(struct pconn *c, bool to_up, const void *p, size_t n)
{
    if (!c->mitm)
        return send_bytes(c, to_up, p, n);
    SSL *s = to_up ? c->ussl : c->cssl;
    while (n > 0) {
        int k = SSL_write(s, p, n > (1u << 30) ? 1 << 30 : (int)n);
        if (k <= 0)
            return -EIO;
        p = (const char *)p + k;
        n -= (size_t)k;
    }
    return tls_flush(c, to_up);
}

/* The secrets of the connection's sandbox as the substitution code sees them. */
static size_t conn_secrets(struct pconn *c, struct subst_secret *out)
{
    struct sbx *sb = sbx_by_id(c->sbid);
    size_t n = 0;
    for (size_t i = 0; sb && i < sb->n_secrets && n < SUBST_SECRETS_MAX; i++) {
        struct psecret *p = &sb->secrets[i];
        out[n++] = (struct subst_secret){.name = p->name, .ph = p->ph, .val = p->val, .len = p->len,
                                         .applies = c->sni_named && policy_allows_name(&p->hosts, c->host, c->dport)};
    }
    return n;
}

static void on_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b)
{
    static char buf[READ_CHUNK]; /* one loop, one thread: data is copied out before the next read */
    struct pconn *c = h->data;
    /* before the decision, and while an intercepted client's bytes wait for
     * the upstream handshake, what is read is held in c->peek (PEEK_CAP) */
    bool holding = c->st != P_PIPE || (c->mitm && !c->cssl);
    *b = uv_buf_init(buf, holding ? PEEK_READ : sizeof buf);
}

/* A direction is finished when its source sent EOF and the shutdown of its
 * destination completed (after every queued write); the connection closes
 * when both are. */
static void direction_done(struct pconn *c)
{
    if (++c->dirs_done >= 2)
        pconn_close(c);
}

static void on_shutdown(uv_shutdown_t *r, int status)
{
    struct pconn *c = r->data;
    free(r);
    if (c->st != P_DONE)
        direction_done(c);
}

static void half_close(struct pconn *c, bool up_side)
{
    if (up_side ? c->up_shut : c->cli_shut)
        return;
    if (up_side)
        c->up_shut = true;
    else
        c->cli_shut = true;
    uv_shutdown_t *r = malloc(sizeof *r);
    if (r) {
        r->data = c;
        if (uv_shutdown(r, (uv_stream_t *)(up_side ? &c->up : &c->cli), on_shutdown) == 0)
            return;
        free(r);
    }
    direction_done(c);
}

static void maybe_pause(struct pconn *c, bool to_up)
{
    uv_stream_t *dst = (uv_stream_t *)(to_up ? &c->up : &c->cli);
    if (uv_stream_get_write_queue_size(dst) < WQ_HIGH)
        return;
    if (to_up) {
        c->cli_paused = true;
        uv_read_stop((uv_stream_t *)&c->cli);
    } else {
        c->up_paused = true;
        uv_read_stop((uv_stream_t *)&c->up);
    }
}

static const char *const refusal =
    "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s";

/* 403 for what the policy refuses, 400 for a request head we will not judge */
static void refuse_http(struct pconn *c, const char *status, const char *lead, const char *why)
{
    char body[512], resp[900];
    snprintf(body, sizeof body, "hutch: %s: %s\n", lead, why);
    int n = snprintf(resp, sizeof resp, refusal, status, strlen(body), body);
    if (c->up_open) {
        uv_close((uv_handle_t *)&c->up, on_handle_closed);
        c->up_open = false;
    }
    uv_read_stop((uv_stream_t *)&c->cli);
    c->st = P_CLOSING;
    deliver(c, false, resp, (size_t)n);
    if (c->mitm && c->cssl_up) { /* secrets: a TLS close before the TCP one */
        SSL_shutdown(c->cssl);
        tls_flush(c, false);
    }
    c->dirs_done = 1;
    half_close(c, false);
}

static void block_http(struct pconn *c, const char *why)
{
    refuse_http(c, "403 Forbidden", "blocked by the sandbox's network policy", why);
}

/* RFC 9112 section 2.2: a head with bytes outside the grammar is answered
 * 400; such a head is read one way by us and another by the server (the
 * smuggling the checks in http1.c stop). */
static void bad_request_http(struct pconn *c, const char *why)
{
    audit(c->sbid, "http", c->host, c->family, c->dst, c->dport, false, why);
    refuse_http(c, "400 Bad Request", "bad request", why);
}

/* Client -> upstream for HTTP: every request head is checked before a byte
 * of it goes upstream; a different Host on a kept-alive connection (domain
 * fronting, a second virtual host on an allowed address) is blocked. */
static int pipe_http(struct pconn *c, const uint8_t *p, size_t n)
{
    while (n > 0 || c->hbuf_len > 0) {
        if (c->h1.st == H1_UPGRADE_WAIT) {
            /* Nothing goes upstream until the server has answered the
             * Upgrade/CONNECT: agreed, the stream is opaque; refused, these
             * bytes are the next request, Host checked like any other. */
            if (n > H1_HEAD_MAX - c->held_len)
                return -EPROTO;
            if (!c->held && !(c->held = malloc(H1_HEAD_MAX)))
                return -ENOMEM;
            memcpy(c->held + c->held_len, p, n);
            c->held_len += n;
            return 0;
        }
        if (c->hbuf_len == 0 && c->h1.st != H1_HEAD) {
            long k = h1_body_advance(&c->h1, p, n);
            if (k < 0)
                return -EPROTO;
            if (deliver(c, true, p, (size_t)k) < 0)
                return -EIO;
            p += k;
            n -= (size_t)k;
            if (n == 0)
                return 0;
        }
        /* collecting a head */
        if (!c->hbuf && !(c->hbuf = malloc(H1_HEAD_MAX)))
            return -ENOMEM;
        size_t take = n < H1_HEAD_MAX - c->hbuf_len ? n : H1_HEAD_MAX - c->hbuf_len;
        memcpy(c->hbuf + c->hbuf_len, p, take);
        c->hbuf_len += take;
        p += take;
        n -= take;
        char host[256], norm[POLICY_NAME_MAX + 1] = "";
        int hl = h1_head_parse(&c->h1, c->hbuf, c->hbuf_len, host, sizeof host);
        if (hl == 0 && n == 0)
            return 0;
        if (hl == -EINVAL) {
            bad_request_http(c, "malformed or ambiguous HTTP request head (RFC 9112)");
            return 1;
        }
        if (hl <= 0)
            return -EPROTO;
        if (host[0]) {
            uint8_t lit[16];
            bool literal = inet_pton(AF_INET, host, lit) == 1 || inet_pton(AF_INET6, host, lit) == 1;
            if ((!literal && policy_name_normalize(host, strlen(host), norm) < 0) || strcmp(norm, c->host) != 0) {
                audit(c->sbid, "http", host, c->family, c->dst, c->dport, false,
                      "a later request on the connection named a different host");
                block_http(c, "a later request on this connection names a different host");
                return 1;
            }
        }
        if (c->mitm) {
            /* secrets: placeholders become values in this head's header values */
            struct subst_secret sec[SUBST_SECRETS_MAX];
            size_t ns = conn_secrets(c, sec);
            uint8_t *nh = malloc((size_t)hl + SUBST_HEAD_SLACK);
            uint64_t used = 0;
            long nl = nh ? subst_request_head(c->hbuf, (size_t)hl, sec, ns, nh, (size_t)hl + SUBST_HEAD_SLACK, &used)
                         : -ENOMEM;
            int r = nl < 0 ? (int)nl : deliver(c, true, nh, (size_t)nl);
            if (nh) {
                explicit_bzero(nh, (size_t)hl + SUBST_HEAD_SLACK);
                free(nh);
            }
            if (r < 0)
                return -EIO;
            if (used) {
                char method[17], path[201];
                subst_request_line(c->hbuf, (size_t)hl, method, sizeof method, path, sizeof path);
                for (size_t k = 0; k < ns; k++)
                    if (used & (1ull << k))
                        audit_subst(c->sbid, sec[k].name, c->host, c->dport, method, path);
            }
        } else if (send_bytes(c, true, c->hbuf, (size_t)hl) < 0) {
            return -EIO;
        }
        size_t rest = c->hbuf_len - (size_t)hl;
        /* what followed the head is processed as body (and maybe more heads) */
        uint8_t *tmp = NULL;
        if (rest) {
            tmp = malloc(rest);
            if (!tmp)
                return -ENOMEM;
            memcpy(tmp, c->hbuf + hl, rest);
        }
        c->hbuf_len = 0;
        if (rest) {
            int r = pipe_http(c, tmp, rest);
            free(tmp);
            if (r != 0)
                return r;
        }
    }
    return 0;
}

static void on_cli_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

static void decide(struct pconn *c);

static void on_timer(uv_timer_t *t)
{
    struct pconn *c = t->data;
    if (c->st == P_PEEK) {
        c->peek_expired = true;
        decide(c);
        return;
    }
    if (c->st == P_PIPE) {
        flush_bytes(c, false);
    }
}

/* ---- secrets: the intercepted connection's two TLS sessions ---- */

static void cli_tls_pump(struct pconn *c);

static void on_mask_timer(uv_timer_t *t)
{
    struct pconn *c = t->data;
    static uint8_t out[SUBST_HOLD_MAX];
    if (c->st != P_PIPE || !c->mask || !c->cssl_up)
        return;
    size_t k = mask_flush(c->mask, out);
    if (k && deliver(c, false, out, k) < 0)
        pconn_close(c);
}

/* Upstream plaintext (after the sandbox's handshake): masked, to the sandbox. */
static void up_tls_pump(struct pconn *c)
{
    static uint8_t in[16384], out[16384 + SUBST_HOLD_MAX];
    if (!c->cssl_up || c->st != P_PIPE)
        return;
    struct subst_secret sec[SUBST_SECRETS_MAX];
    size_t ns = conn_secrets(c, sec);
    for (;;) {
        int k = SSL_read(c->ussl, in, sizeof in);
        if (k <= 0) {
            int err = SSL_get_error(c->ussl, k);
            if (err == SSL_ERROR_WANT_READ)
                break;
            /* close_notify or a broken session: the response stream ends here */
            size_t f = mask_flush(c->mask, out);
            if (f)
                deliver(c, false, out, f);
            c->up_eof = true;
            uv_read_stop((uv_stream_t *)&c->up);
            SSL_shutdown(c->cssl);
            tls_flush(c, false);
            half_close(c, false);
            return;
        }
        if (c->h1.st == H1_UPGRADE_WAIT && upgrade_answer(c, in, (size_t)k) < 0) {
            pconn_reset(c);
            return;
        }
        size_t m = mask_stream(c->mask, sec, ns, in, (size_t)k, out);
        if (deliver(c, false, out, m) < 0) {
            pconn_close(c);
            return;
        }
        if (c->st != P_PIPE)
            return;
    }
    tls_flush(c, true);
    if (c->mask->held && c->mask_timer_on)
        uv_timer_start(&c->mask_timer, on_mask_timer, 20, 0);
    maybe_pause(c, false);
}

/* The upstream is verified: now we answer the sandbox's ClientHello. */
static void mitm_client_start(struct pconn *c)
{
    c->cssl = mitm_ssl_for_client(c->host);
    if (!c->cssl || tls_feed(c->cssl, c->peek, c->peek_len) < 0) {
        audit(c->sbid, "tls", c->host, c->family, c->dst, c->dport, false, "could not mint a certificate");
        pconn_reset(c);
        return;
    }
    free(c->peek);
    c->peek = NULL;
    c->peek_len = 0;
    cli_tls_pump(c);
}

/* One step of a TLS handshake with the upstream or with the sandbox:
 * 1 done, 0 waiting for bytes, -1 failed (audited as pre + why + post, reset). */
static int handshake_step(struct pconn *c, SSL *ssl, bool upstream, const char *pre, const char *post)
{
    int r = SSL_do_handshake(ssl);
    tls_flush(c, upstream);
    if (r == 1)
        return 1;
    int err = SSL_get_error(ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
        return 0;
    char why[300], msg[400];
    tls_fail_reason(ssl, why, sizeof why);
    snprintf(msg, sizeof msg, "%s%s%s", pre, why, post);
    audit(c->sbid, "tls", c->host, c->family, c->dst, c->dport, false, msg);
    pconn_reset(c);
    return -1;
}

static void mitm_up_data(struct pconn *c, const void *p, size_t n)
{
    if (n && tls_feed(c->ussl, p, n) < 0) {
        pconn_reset(c);
        return;
    }
    if (!c->ussl_up) {
        if (handshake_step(c, c->ussl, true, "upstream ", " (interception for secrets)") <= 0)
            return;
        c->ussl_up = true;
        mitm_client_start(c);
        return;
    }
    up_tls_pump(c);
}

static void cli_tls_pump(struct pconn *c)
{
    static uint8_t in[16384];
    if (!c->cssl_up) {
        /* a client that pins its own certificate (or lacks our CA) ends here */
        if (handshake_step(c, c->cssl, false, "the sandbox refused the interception certificate: ", "") <= 0)
            return;
        c->cssl_up = true;
        up_tls_pump(c); /* what the upstream sent meanwhile */
        if (c->st != P_PIPE)
            return;
    }
    for (;;) {
        int k = SSL_read(c->cssl, in, sizeof in);
        if (k <= 0) {
            int err = SSL_get_error(c->cssl, k);
            if (err == SSL_ERROR_WANT_READ)
                break;
            c->cli_eof = true;
            uv_read_stop((uv_stream_t *)&c->cli);
            SSL_shutdown(c->ussl);
            tls_flush(c, true);
            half_close(c, true);
            return;
        }
        int r = pipe_http(c, in, (size_t)k);
        if (r < 0) {
            pconn_reset(c);
            return;
        }
        if (r > 0 || c->st != P_PIPE)
            return;
    }
    tls_flush(c, false);
    maybe_pause(c, true);
}

static void mitm_cli_data(struct pconn *c, const void *p, size_t n)
{
    if (!c->cssl) { /* upstream handshake still running: hold (bounded) */
        if (c->peek_len + n > PEEK_CAP) {
            pconn_reset(c);
            return;
        }
        memcpy(c->peek + c->peek_len, p, n);
        c->peek_len += n;
        return;
    }
    if (tls_feed(c->cssl, p, n) < 0) {
        pconn_reset(c);
        return;
    }
    cli_tls_pump(c);
}

static void mitm_begin(struct pconn *c)
{
    c->ussl = mitm_ssl_for_upstream(c->host);
    c->mask = calloc(1, sizeof *c->mask);
    if (!c->ussl || !c->mask) {
        pconn_reset(c);
        return;
    }
    c->proto = PR_HTTP; /* plaintext inside is HTTP/1, checked head by head */
    memset(&c->h1, 0, sizeof c->h1);
    mitm_up_data(c, NULL, 0);
}

/* The first bytes of the answer to an Upgrade/CONNECT decide what the
 * client's following bytes are (see pipe_http). Returns -1 on failure. */
static int upgrade_answer(struct pconn *c, const uint8_t *p, size_t n)
{
    size_t take = n < sizeof c->status - c->status_len ? n : sizeof c->status - c->status_len;
    memcpy(c->status + c->status_len, p, take);
    c->status_len += take;
    int code = h1_response_status(c->status, c->status_len);
    if (code == 0)
        return 0; /* the status line is still arriving */
    bool opaque = code == 101 || (c->h1.connect && code >= 200 && code < 300);
    c->status_len = 0;
    uint8_t *held = c->held;
    size_t held_len = c->held_len;
    c->held = NULL;
    c->held_len = 0;
    int r = 0;
    if (code > 0 && opaque) {
        c->h1.st = H1_TUNNEL;
        if (held_len)
            r = send_bytes(c, true, held, held_len);
    } else {
        c->h1.st = H1_HEAD; /* not an HTTP answer at all: back to checking heads */
        if (held_len)
            r = pipe_http(c, held, held_len);
    }
    free(held);
    return r < 0 ? -1 : 0;
}

static void on_up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct pconn *c = s->data;
    if (c->st != P_PIPE)
        return;
    if (c->mitm && n > 0) {
        mitm_up_data(c, b->base, (size_t)n);
        return;
    }
    if (n > 0 && c->proto == PR_HTTP && c->h1.st == H1_UPGRADE_WAIT &&
        upgrade_answer(c, (const uint8_t *)b->base, (size_t)n) < 0) {
        pconn_reset(c);
        return;
    }
    if (n < 0) {
        c->up_eof = true;
        uv_read_stop(s);
        if (n != UV_EOF) {
            pconn_reset(c);
            return;
        }
        if (c->mitm && c->cssl_up) { /* a TCP close without close_notify: end the sandbox's session too */
            static uint8_t out[SUBST_HOLD_MAX];
            size_t f = mask_flush(c->mask, out);
            if (f)
                deliver(c, false, out, f);
            SSL_shutdown(c->cssl);
            tls_flush(c, false);
        } else if (c->mitm) {
            pconn_reset(c);
            return;
        }
        half_close(c, false);
        return;
    }
    if (send_bytes(c, false, b->base, (size_t)n) < 0) {
        pconn_close(c);
        return;
    }
    maybe_pause(c, false);
}

static void on_cli_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct pconn *c = s->data;
    if (n == 0)
        return;
    if (n < 0) {
        c->cli_eof = true;
        uv_read_stop(s);
        if (c->st == P_PEEK) {
            decide(c); /* whatever we have is all there is */
            return;
        }
        if (c->st == P_PIPE) {
            if (n != UV_EOF) {
                pconn_reset(c);
                return;
            }
            if (c->mitm && c->ussl_up) {
                SSL_shutdown(c->ussl);
                tls_flush(c, true);
            }
            half_close(c, true);
        }
        return;
    }
    if (c->st == P_PEEK || c->st == P_DECIDING || c->st == P_CONNECTING) {
        /* reading stops at PEEK_MAX, so one more read always fits */
        if (c->peek_len + (size_t)n > PEEK_CAP) {
            pconn_reset(c);
            return;
        }
        memcpy(c->peek + c->peek_len, b->base, (size_t)n);
        c->peek_len += (size_t)n;
        if (c->st == P_PEEK)
            decide(c);
        if ((c->st == P_DECIDING || c->st == P_CONNECTING) && c->peek_len >= PEEK_MAX) {
            uv_read_stop(s);
            c->cli_paused = true;
        }
        return;
    }
    if (c->st != P_PIPE)
        return;
    if (c->mitm) {
        mitm_cli_data(c, b->base, (size_t)n);
        return;
    }
    int r = c->proto == PR_HTTP ? pipe_http(c, (const uint8_t *)b->base, (size_t)n)
                                : send_bytes(c, true, b->base, (size_t)n);
    if (r < 0) {
        pconn_reset(c);
        return;
    }
    if (r == 0)
        maybe_pause(c, true);
}

/* ---- passthrough: splice(2) relay ---- */

#define SP_PIPE (1 << 20)   /* pipe per direction: bytes read, not yet written (the backpressure bound) */
#define SP_ROUNDS 16        /* splice rounds per wakeup per direction, so one busy pair cannot starve the loop */

/* Moves bytes of one direction (side `from` → the other) until both ends
 * would block. -1: the connection failed (reset it). */
static int sp_pump(struct pconn *c, int from)
{
    struct sp_side *src = &c->sp[from], *dst = &c->sp[1 - from];
    for (int round = 0; round < SP_ROUNDS; round++) {
        bool progress = false;
        if (src->inpipe) {
            ssize_t n = splice(src->pipe[0], NULL, dst->fd, NULL, src->inpipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (n < 0 && errno != EAGAIN)
                return -1;
            if (n > 0) {
                src->inpipe -= (size_t)n;
                if (from == 0)
                    c->up_bytes += (uint64_t)n;
                else
                    c->down_bytes += (uint64_t)n;
                progress = true;
            }
        }
        if (!src->eof && src->inpipe < SP_PIPE) {
            ssize_t n = splice(src->fd, NULL, src->pipe[1], NULL, SP_PIPE - src->inpipe,
                               SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (n < 0 && errno != EAGAIN)
                return -1;
            if (n == 0)
                src->eof = true;
            if (n > 0)
                src->inpipe += (size_t)n;
            progress |= n >= 0;
        }
        if (!progress)
            break;
    }
    /* half-close: the source's EOF reaches the destination after its last byte */
    if (src->eof && !src->inpipe && !dst->shut) {
        dst->shut = true;
        shutdown(dst->fd, SHUT_WR);
    }
    return 0;
}

static void on_sp_poll(uv_poll_t *p, int status, int events);

static void sp_update(struct pconn *c)
{
    for (int i = 0; i < 2; i++) {
        struct sp_side *d = &c->sp[i], *o = &c->sp[1 - i];
        int ev = 0;
        if (!d->eof && d->inpipe < SP_PIPE)
            ev |= UV_READABLE;
        if (o->inpipe)
            ev |= UV_WRITABLE;
        if (ev)
            uv_poll_start(&d->poll, ev, on_sp_poll);
        else
            uv_poll_stop(&d->poll);
    }
}

static void on_sp_poll(uv_poll_t *p, int status, int events)
{
    struct pconn *c = p->data;
    if (c->st == P_DONE)
        return;
    if (status < 0 || sp_pump(c, 0) < 0 || sp_pump(c, 1) < 0) {
        pconn_reset(c);
        return;
    }
    if (c->sp[0].shut && c->sp[1].shut) { /* both directions ended */
        pconn_close(c);
        return;
    }
    sp_update(c);
}

/* Hands a plain passthrough connection over to the splice relay. The held
 * client bytes must already be written. false: stay with the libuv relay. */
static bool splice_begin(struct pconn *c)
{
    uv_os_fd_t fd[2];
    if (uv_fileno((uv_handle_t *)&c->cli, &fd[0]) < 0 || uv_fileno((uv_handle_t *)&c->up, &fd[1]) < 0)
        return false;
    for (int i = 0; i < 2; i++)
        c->sp[i].fd = c->sp[i].pipe[0] = c->sp[i].pipe[1] = -1;
    bool ok = true;
    for (int i = 0; i < 2 && ok; i++) {
        struct sp_side *d = &c->sp[i];
        /* our own fd number: the uv_tcp's goes away with it (uv_close removes it from epoll first) */
        d->fd = fcntl(fd[i], F_DUPFD_CLOEXEC, 3);
        ok = d->fd >= 0 && pipe2(d->pipe, O_CLOEXEC | O_NONBLOCK) == 0;
        if (ok)
            fcntl(d->pipe[1], F_SETPIPE_SZ, SP_PIPE); /* fewer wakeups; the default 64 KiB works too */
    }
    if (ok && (uv_poll_init(g_loop, &c->sp[0].poll, c->sp[0].fd) < 0)) /* NOLINT: init of 1 below */
        ok = false;
    if (ok && uv_poll_init(g_loop, &c->sp[1].poll, c->sp[1].fd) < 0) {
        uv_close((uv_handle_t *)&c->sp[0].poll, NULL); /* not counted yet: nothing to free with it */
        ok = false;
    }
    if (!ok) {
        for (int i = 0; i < 2; i++) {
            struct sp_side *d = &c->sp[i];
            if (d->fd >= 0)
                close(d->fd);
            if (d->pipe[0] >= 0) {
                close(d->pipe[0]);
                close(d->pipe[1]);
            }
        }
        return false;
    }
    c->sp[0].poll.data = c->sp[1].poll.data = c;
    c->handles += 2;
    c->sp_polls = 3;
    uv_read_stop((uv_stream_t *)&c->cli);
    uv_read_stop((uv_stream_t *)&c->up);
    uv_close((uv_handle_t *)&c->cli, on_handle_closed);
    uv_close((uv_handle_t *)&c->up, on_handle_closed);
    c->up_open = false;
    c->spliced = true;
    c->sp[0].eof = c->cli_eof;
    sp_update(c);
    return true;
}

static void on_up_connected(uv_connect_t *req, int status)
{
    struct pconn *c = req->data;
    if (c->st == P_DONE)
        return;
    if (status < 0) {
        char why[128];
        snprintf(why, sizeof why, "upstream connect failed: %s", uv_strerror(status));
        audit(c->sbid, proto_names[c->proto], c->host, c->family, c->dst, c->dport, true, why);
        pconn_reset(c);
        return;
    }
    c->st = P_PIPE;
    uv_tcp_nodelay(&c->up, 1);
    if (c->mitm) { /* secrets: TLS to the upstream first; the sandbox's hello waits in peek */
        uv_read_start((uv_stream_t *)&c->up, on_alloc, on_up_read);
        c->cli_paused = false;
        if (!c->cli_eof)
            uv_read_start((uv_stream_t *)&c->cli, on_alloc, on_cli_read);
        uv_timer_start(&c->timer, on_timer, BYTES_FLUSH_MS, BYTES_FLUSH_MS);
        mitm_begin(c);
        return;
    }
    /* the held bytes: the first HTTP head was already checked in decide() */
    int r = 0;
    if (c->proto == PR_HTTP) {
        r = pipe_http(c, c->peek, c->peek_len);
    } else {
        /* plain passthrough: the held bytes straight into the fresh socket,
         * then splice; a short write keeps the libuv relay */
        size_t off = 0;
        if (c->peek_len) {
            uv_buf_t b = uv_buf_init((char *)c->peek, (unsigned)c->peek_len);
            int w = uv_try_write((uv_stream_t *)&c->up, &b, 1);
            off = w > 0 ? (size_t)w : 0;
            c->up_bytes += off;
        }
        if (off == c->peek_len && splice_begin(c)) {
            free(c->peek);
            c->peek = NULL;
            c->peek_len = 0;
            uv_timer_start(&c->timer, on_timer, BYTES_FLUSH_MS, BYTES_FLUSH_MS);
            if (c->sp[0].eof)
                on_sp_poll(&c->sp[0].poll, 0, 0); /* the EOF travels now */
            return;
        }
        r = send_bytes(c, true, c->peek + off, c->peek_len - off);
    }
    free(c->peek);
    c->peek = NULL;
    c->peek_len = 0;
    if (r < 0) {
        pconn_reset(c);
        return;
    }
    if (r > 0)
        return;
    uv_read_start((uv_stream_t *)&c->up, on_alloc, on_up_read);
    if (c->cli_eof) {
        half_close(c, true);
    } else {
        c->cli_paused = false;
        uv_read_start((uv_stream_t *)&c->cli, on_alloc, on_cli_read);
    }
    uv_timer_start(&c->timer, on_timer, BYTES_FLUSH_MS, BYTES_FLUSH_MS);
}

/* secrets: TLS to a host named in one of the sandbox's secrets is intercepted. */
static bool wants_mitm(struct pconn *c)
{
    if (c->proto != PR_TLS || !c->sni_named || !mitm_ready())
        return false;
    struct sbx *sb = sbx_by_id(c->sbid);
    for (size_t i = 0; sb && i < sb->n_secrets; i++)
        if (policy_allows_name(&sb->secrets[i].hosts, c->host, c->dport))
            return true;
    return false;
}

static void allow(struct pconn *c, const char *reason)
{
    audit(c->sbid, proto_names[c->proto], c->host, c->family, c->dst, c->dport, true, reason);
    c->mitm = wants_mitm(c);
    if (c->mitm) {
        if (uv_timer_init(g_loop, &c->mask_timer) < 0) {
            pconn_reset(c);
            return;
        }
        c->mask_timer.data = c;
        c->mask_timer_on = true;
        c->handles++;
        audit(c->sbid, "tls", c->host, c->family, c->dst, c->dport, true, "intercepted: a secret is bound to this host");
    }
    c->st = P_CONNECTING;
    uv_timer_stop(&c->timer);
    if (uv_tcp_init(g_loop, &c->up) < 0) {
        pconn_reset(c);
        return;
    }
    c->up.data = c;
    c->up_open = true;
    c->handles++;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (c->family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(c->dport);
        memcpy(&a->sin_addr, c->dst, 4);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(c->dport);
        memcpy(&a->sin6_addr, c->dst, 16);
    }
    c->creq.data = c;
    if (uv_tcp_connect(&c->creq, &c->up, (struct sockaddr *)&ss, on_up_connected) < 0)
        pconn_reset(c);
}

static void block(struct pconn *c, const char *reason)
{
    audit(c->sbid, proto_names[c->proto], c->host, c->family, c->dst, c->dport, false, reason);
    if (c->proto == PR_HTTP) {
        c->st = P_DECIDING;
        block_http(c, reason);
        return;
    }
    pconn_reset(c);
}

static void on_name_resolved(struct rcache *rc, void *ud)
{
    struct pconn *c = ud;
    c->refs--;
    if (c->st == P_DONE) {
        if (c->refs == 0 && c->handles == 0)
            pconn_free(c);
        return;
    }
    if (rc && rcache_has(rc, c->family, c->dst)) {
        allow(c, "host name allowed; the address is one of its addresses");
        return;
    }
    char why[400];
    char ip[INET6_ADDRSTRLEN];
    fmt_addr(c->family, c->dst, ip, sizeof ip);
    snprintf(why, sizeof why, "%s is not an address of %s", ip, c->host);
    block(c, why);
}

/* Called once the first client bytes tell us the protocol (or the peek
 * deadline passed, or the client closed). */
static void decide(struct pconn *c)
{
    char name[300] = "";
    if (c->st != P_PEEK)
        return;
    /* protocol and claimed name */
    if (c->peek_len > 0 && tls_looks_like(c->peek, c->peek_len)) {
        c->proto = PR_TLS;
        int r = tls_sni_parse(c->peek, c->peek_len, name, sizeof name);
        if (r == 0 && !c->cli_eof && c->peek_len < PEEK_MAX) {
            if (c->peek_expired) {
                block(c, "incomplete request head (timeout)");
                return;
            }
            if (!c->head_timer) { /* a slow head gets 10 s, then it is refused (never decided without it) */
                c->head_timer = true;
                uv_timer_start(&c->timer, on_timer, 10000, 0);
            }
            return;
        }
        if (r == -EINVAL || r == 0) {
            block(c, "malformed TLS ClientHello");
            return;
        }
        if (r < 0)
            name[0] = 0;
    } else if (c->peek_len > 0 && h1_looks_like(c->peek, c->peek_len)) {
        c->proto = PR_HTTP;
        struct h1 tmp;
        int r = h1_head_parse(&tmp, c->peek, c->peek_len, name, sizeof name);
        if (r == 0 && !c->cli_eof && c->peek_len < PEEK_MAX) {
            if (c->peek_expired) {
                block(c, "incomplete request head (timeout)");
                return;
            }
            if (!c->head_timer) { /* a slow head gets 10 s, then it is refused (never decided without it) */
                c->head_timer = true;
                uv_timer_start(&c->timer, on_timer, 10000, 0);
            }
            return;
        }
        if (r == -EINVAL) {
            uv_timer_stop(&c->timer);
            c->st = P_DECIDING;
            bad_request_http(c, "malformed or ambiguous HTTP request head (RFC 9112)");
            return;
        }
        if (r <= 0) {
            block(c, "malformed or ambiguous HTTP request head");
            return;
        }
    } else if (c->peek_len == 0 && !c->cli_eof && !c->peek_expired) {
        return; /* still waiting for a first byte */
    } else {
        c->proto = PR_TCP;
    }
    uv_timer_stop(&c->timer);
    c->st = P_DECIDING;

    struct sbx *sb = sbx_by_id(c->sbid);
    if (!sb) {
        block(c, "the sandbox is gone");
        return;
    }
    const char *range;
    if (addr_forbidden(c->family, c->dst, &range)) {
        char why[300];
        snprintf(why, sizeof why, "destination is in a forbidden range: %s", range);
        block(c, why);
        return;
    }
    /* a name given as an address literal is just that address */
    uint8_t lit[16];
    if (name[0] && (inet_pton(AF_INET, name, lit) == 1 || inet_pton(AF_INET6, name, lit) == 1))
        name[0] = 0;
    if (name[0]) {
        if (policy_name_normalize(name, strlen(name), c->host) < 0) {
            block(c, "the host name in the request is not a valid name");
            return;
        }
        c->sni_named = c->proto == PR_TLS; /* secrets: interception needs the name the client asked for */
    } else {
        const char *m = sbx_map_lookup(sb, c->family, c->dst);
        snprintf(c->host, sizeof c->host, "%s", m ? m : "");
    }
    if (sb->pol.unrestricted) {
        allow(c, "no allowNet restriction");
        return;
    }
    if (policy_allows_addr(&sb->pol, c->family, c->dst, c->dport)) {
        allow(c, "address allowed by allowNet");
        return;
    }
    if (!c->host[0]) {
        block(c, "no host name (TLS SNI, HTTP Host or an earlier DNS answer) and the address is not in allowNet");
        return;
    }
    if (!policy_allows_name(&sb->pol, c->host, c->dport)) {
        char why[400];
        snprintf(why, sizeof why, "host %s port %u is not in allowNet", c->host, c->dport);
        block(c, why);
        return;
    }
    /* The name is allowed; the address must be one of its addresses, or a
     * sandbox could send "Host: allowed" to any server it likes. */
    if (sbx_map_has(sb, c->family, c->dst, c->host)) {
        allow(c, "host name allowed; the address came from our DNS answer for it");
        return;
    }
    c->refs++;
    resolve_name(sb, c->host, on_name_resolved, c);
}

static bool original_dst(int fd, int family, uint8_t *addr, uint16_t *port)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (family == AF_INET) {
        if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &sl) < 0)
            return false;
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        memcpy(addr, &a->sin_addr, 4);
        *port = ntohs(a->sin_port);
    } else {
        if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &sl) < 0)
            return false;
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        memcpy(addr, &a->sin6_addr, 16);
        *port = ntohs(a->sin6_port);
    }
    return true;
}

static void on_accept(uv_stream_t *lis, int status)
{
    if (status < 0)
        return;
    struct pconn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    uv_tcp_init(g_loop, &c->cli);
    uv_timer_init(g_loop, &c->timer);
    c->cli.data = c->timer.data = c;
    c->handles = 2;
    if (uv_accept(lis, (uv_stream_t *)&c->cli) < 0) {
        c->st = P_DONE;
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        uv_close((uv_handle_t *)&c->cli, on_handle_closed);
        return;
    }
    struct sockaddr_storage peer;
    int pl = sizeof peer;
    uv_os_fd_t fd;
    uv_fileno((uv_handle_t *)&c->cli, &fd);
    struct sbx *sb = NULL;
    if (uv_tcp_getpeername(&c->cli, (struct sockaddr *)&peer, &pl) == 0) {
        if (peer.ss_family == AF_INET) {
            c->family = AF_INET;
            sb = sbx_by_addr(AF_INET, (uint8_t *)&((struct sockaddr_in *)&peer)->sin_addr);
        } else if (peer.ss_family == AF_INET6) {
            c->family = AF_INET6;
            sb = sbx_by_addr(AF_INET6, (uint8_t *)&((struct sockaddr_in6 *)&peer)->sin6_addr);
        }
    }
    /* Only sandboxes talk to us; anything else (the host, a LAN peer if a
     * firewall is missing) is cut at once. */
    if (!sb || !original_dst(fd, c->family, c->dst, &c->dport)) {
        c->st = P_PEEK;
        pconn_reset(c);
        return;
    }
    snprintf(c->sbid, sizeof c->sbid, "%s", sb->id);
    if (sb->pol.n == 0 && !sb->pol.unrestricted) {
        block(c, "allowNet is empty");
        return;
    }
    c->peek = malloc(PEEK_CAP);
    if (!c->peek) {
        pconn_reset(c);
        return;
    }
    c->st = P_PEEK;
    uv_tcp_nodelay(&c->cli, 1);
    /* On the web's ports nobody speaks first but the client: a hello that is
     * late (a loaded sandbox, a client that connects early) must still be
     * read, or the connection would be spliced as raw TCP and a secret
     * bound to the host never substituted. */
    bool web = c->dport == 443 || c->dport == 80;
    uv_timer_start(&c->timer, on_timer, web ? PEEK_WAIT_WEB_MS : PEEK_WAIT_MS, 0);
    uv_read_start((uv_stream_t *)&c->cli, on_alloc, on_cli_read);
}

/* The sandbox-side connections cross only a veth to the sandbox: set on the
 * listener, the congestion control is inherited by every accepted socket
 * (net/ipv4/tcp_cong.c, tcp_ca_openreq_child). Reno: no pacing timer per
 * packet, as BBR (a common host default) has; the same choice hutchd makes
 * for the sandbox's end (daemon/net/net.c, SB_LEG_CC). Upstream connections
 * keep the host's default. Best effort: a refusal changes only speed. */
static void leg_cc(int fd)
{
    static const char cc[] = "reno";
    if (fd >= 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, sizeof cc - 1);
}

int tcp_proxy_start(int fd4, int fd6)
{
    int ok = 0;
    leg_cc(fd4);
    leg_cc(fd6);
    if (uv_tcp_init(g_loop, &lis4) == 0 && uv_tcp_open(&lis4, fd4) == 0 &&
        uv_listen((uv_stream_t *)&lis4, 4096, on_accept) == 0)
        ok++;
    if (uv_tcp_init(g_loop, &lis6) == 0 && uv_tcp_open(&lis6, fd6) == 0 &&
        uv_listen((uv_stream_t *)&lis6, 4096, on_accept) == 0)
        ok++;
    if (!ok) {
        fprintf(stderr, "hutch-proxy: no TCP listener\n");
        return -1;
    }
    return 0;
}
