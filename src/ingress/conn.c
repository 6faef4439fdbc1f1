/* One client connection of hutch-ingress: TLS on memory BIOs, HTTP/1.1
 * request heads parsed with bounds (http-parser), rewritten (secret out,
 * hop-by-hop headers out, X-Forwarded-* in) and relayed to an upstream
 * socket that hutchd connected inside the sandbox. Bodies are streamed in
 * both directions with our own framing (chunked bodies are re-chunked, so
 * what reaches either side is framed by us, never by the other peer), with
 * back-pressure both ways. A 101 turns the connection into a byte tunnel. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <http_parser.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "ingress/head.h"
#include "ingress/ingress.h"

#define URL_MAX 8192           /* request-target bytes (414 beyond) */
#define HEAD_MAX 16384         /* header bytes of a request (431 beyond) */
#define HEADERS_MAX 100        /* header lines of a request (431 beyond) */
#define RHEAD_MAX 65536        /* header bytes of a response (502 beyond) */
#define RHEADERS_MAX 200
#define HIGH_WATER (1u << 20)  /* bytes queued towards one side before the other side stops being read */
#define LOW_WATER (256u << 10)
#define REC_MAX 16384          /* plaintext bytes of a full TLS record */

enum { HOLD_UPQ = 1, HOLD_WAIT = 2, HOLD_CLOSING = 4 };
#define LEFT_MAX 65536         /* client bytes buffered while a response is in flight, then it is not read */
enum { T_NONE, T_HEAD, T_BODY, T_UPSTREAM };

#define CONNS_MAX 1024         /* client connections at once (each holds up to ~110 KiB of buffers) */

struct hdrs {
    char *buf;
    size_t len, max;
    unsigned n, nmax;
    uint32_t f_off[RHEADERS_MAX], f_len[RHEADERS_MAX], v_off[RHEADERS_MAX], v_len[RHEADERS_MAX];
    bool in_value;
};

struct sbuf {
    char *p;
    size_t len, cap;
};

struct ig_conn {
    struct ig_conn *next, *prev;
    struct ig_route *rt;
    bool port_mode;
    uv_tcp_t cli;
    uv_timer_t timer;
    int timer_mode;
    int handles;
    bool closing, cli_reading, up_reading, up_hold, close_after_flush;
    bool batching, cli_eof;   /* batching: TLS output is flushed once per input chunk */
    unsigned hold;
    SSL *ssl;
    BIO *rbio, *wbio;
    bool hs_done;
    char peer[INET6_ADDRSTRLEN];
    http_parser rq, rs;
    struct hdrs *qh, *sh;
    char url[URL_MAX];
    size_t url_len;
    char reason[128];
    int reject;
    bool scan_done, scan_lf, scan_cr; /* the scan of the request head (head_fault) */
    unsigned scan_line, scan_len;
    bool any_bytes, req_chunked, req_done, req_upgrade, req_head, keep_alive, via_path, req_sent;
    bool resp_started, resp_chunked, resp_done, resp_raw, up_keep, tunnel;
    uv_tcp_t *up;
    bool up_wanted;
    uint32_t up_req;
    struct sbuf pend; /* for the upstream: until it is connected, or the end of this batch */
    struct sbuf cpend; /* plaintext for the client not sealed yet: at most one TLS record (REC_MAX) */
    struct sbuf left; /* client bytes not parsed yet (a request in flight) */
};

static struct ig_conn *conns;
static unsigned n_conns;
static uint32_t next_req = 1;
static char iobuf[65536];
static char plain[65536];

static void conn_close(struct ig_conn *c);
static void cli_plain(struct ig_conn *c, const char *p, size_t n);
static void update_reading(struct ig_conn *c);

static int sbuf_add(struct sbuf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

static int sbuf_str(struct sbuf *b, const char *s)
{
    return sbuf_add(b, s, strlen(s));
}

/* The heads the ingress writes are built here, one at a time (one loop, and
 * nothing re-enters while a head is built): no allocation per request. */
static struct sbuf head_out;

/* ---- writing ---- */

struct wreq {
    uv_write_t req;
    struct ig_conn *c;
    bool to_cli;
    char data[];
};

/* The upstream took enough: the client is read again. */
static void up_drained(struct ig_conn *c)
{
    if ((c->hold & HOLD_UPQ) && c->up && c->pend.len + uv_stream_get_write_queue_size((uv_stream_t *)c->up) < LOW_WATER) {
        c->hold &= ~HOLD_UPQ;
        update_reading(c);
    }
}

static void on_up_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct ig_conn *c = r->c;
    free(r);
    if (c->closing || status < 0)
        return; /* a failed upstream write shows up as a read error too */
    up_drained(c);
}

static void on_cli_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct ig_conn *c = r->c;
    free(r);
    if (c->closing)
        return;
    if (status < 0)
        return conn_close(c);
    size_t q = uv_stream_get_write_queue_size((uv_stream_t *)&c->cli);
    if (q == 0 && c->close_after_flush)
        return conn_close(c);
    if (c->up_hold && q < LOW_WATER) {
        c->up_hold = false;
        update_reading(c);
    }
}

/* Writes to a socket: what it takes now goes in at once (uv_try_write: no
 * write request, no allocation, and none of the epoll_ctl calls libuv makes
 * around a queued write, which were two of the six syscalls of every
 * proxied request; docs/performance/ingress.md); only the rest is copied and
 * queued, and later bytes wait behind it (uv_try_write refuses while the
 * queue is not empty, so the order holds). -1: the socket failed. */
static int stream_send(struct ig_conn *c, uv_stream_t *s, const char *p, size_t n, bool to_cli)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int w = uv_try_write(s, &b, 1);
    if (w == (int)n)
        return 0;
    if (w < 0 && w != UV_EAGAIN)
        return -1;
    size_t off = w > 0 ? (size_t)w : 0;
    struct wreq *r = malloc(sizeof *r + (n - off));
    if (!r)
        return -1;
    memcpy(r->data, p + off, n - off);
    r->c = c;
    r->to_cli = to_cli;
    b = uv_buf_init(r->data, (unsigned)(n - off));
    if (uv_write(&r->req, s, &b, 1, to_cli ? on_cli_written : on_up_written) < 0) {
        free(r);
        return -1;
    }
    return 0;
}

static char tls_out[65536]; /* one TLS flush at a time (one loop, one thread) */

/* Seals what cli_send gathered into one TLS record. */
static int seal(struct ig_conn *c, const char *p, size_t n)
{
    return SSL_write(c->ssl, p, (int)n) > 0 ? 0 : -1;
}

static void flush_tls(struct ig_conn *c)
{
    if (!c->closing && c->cpend.len > 0) {
        int r = seal(c, c->cpend.p, c->cpend.len);
        c->cpend.len = 0;
        if (r < 0)
            return conn_close(c);
    }
    while (!c->closing && BIO_ctrl_pending(c->wbio) > 0) {
        int got = BIO_read(c->wbio, tls_out, (int)sizeof tls_out);
        if (got <= 0)
            return;
        if (stream_send(c, (uv_stream_t *)&c->cli, tls_out, (size_t)got, true) < 0)
            return conn_close(c);
    }
    if (!c->closing && uv_stream_get_write_queue_size((uv_stream_t *)&c->cli) > HIGH_WATER && !c->up_hold) {
        c->up_hold = true; /* a slow reader: stop reading the upstream until it drains */
        update_reading(c);
    }
}

/* Plaintext for the client. The pieces of one batch (a response head and
 * its body, a re-chunked piece's size line, data and CRLF) share TLS
 * records: each SSL_write is a record of its own, with its own header, tag
 * and AES-GCM set-up here and its own decryption (and, for OpenSSL clients
 * without read-ahead, two read calls) at the client. Whole records of a
 * large piece are sealed straight from the caller's buffer; only the rest
 * waits in c->cpend, which never holds more than one record. */
static void cli_send(struct ig_conn *c, const void *data, size_t n)
{
    const char *p = data;
    while (!c->closing && n > 0) {
        if (c->cpend.len == 0 && n >= REC_MAX) {
            size_t k = n - n % REC_MAX;
            if (seal(c, p, k) < 0)
                return conn_close(c);
            p += k;
            n -= k;
            continue;
        }
        size_t k = REC_MAX - c->cpend.len < n ? REC_MAX - c->cpend.len : n;
        if (sbuf_add(&c->cpend, p, k) < 0)
            return conn_close(c);
        p += k;
        n -= k;
        if (c->cpend.len == REC_MAX) {
            int r = seal(c, c->cpend.p, REC_MAX);
            c->cpend.len = 0;
            if (r < 0)
                return conn_close(c);
        }
    }
    if (!c->closing && !c->batching) /* else the caller flushes: one write for a response's pieces */
        flush_tls(c);
}

/* c->pend towards the connected upstream, in one write (a re-chunked body
 * piece is three up_send calls: one syscall, not three). */
static void flush_up(struct ig_conn *c)
{
    if (c->closing || !c->up || c->pend.len == 0)
        return;
    /* a failed upstream write shows up as a read error too */
    (void)stream_send(c, (uv_stream_t *)c->up, c->pend.p, c->pend.len, false);
    c->pend.len = 0;
    up_drained(c); /* what the socket took at once brings no write callback */
}

static void up_send(struct ig_conn *c, const void *p, size_t n)
{
    if (c->closing || n == 0)
        return;
    if (sbuf_add(&c->pend, p, n) < 0)
        return conn_close(c);
    if (!c->batching) /* else the caller flushes once */
        flush_up(c);
    size_t q = c->pend.len + (c->up ? uv_stream_get_write_queue_size((uv_stream_t *)c->up) : 0);
    if (q > HIGH_WATER && !(c->hold & HOLD_UPQ)) {
        c->hold |= HOLD_UPQ; /* a fast uploader: stop reading the client until the upstream drains */
        update_reading(c);
    }
}

/* ---- reading state ---- */

static void on_cli_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b)
{
    *b = uv_buf_init(iobuf, sizeof iobuf);
}

static void on_cli_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);
static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

static void update_reading(struct ig_conn *c)
{
    if (c->closing)
        return;
    bool want = c->hold == 0;
    if (want != c->cli_reading) {
        if (want)
            uv_read_start((uv_stream_t *)&c->cli, on_cli_alloc, on_cli_read);
        else
            uv_read_stop((uv_stream_t *)&c->cli);
        c->cli_reading = want;
    }
    bool upw = c->up && !c->up_hold;
    if (c->up && upw != c->up_reading) {
        if (upw)
            uv_read_start((uv_stream_t *)c->up, on_cli_alloc, on_up_read);
        else
            uv_read_stop((uv_stream_t *)c->up);
        c->up_reading = upw;
    }
}

static void on_timer(uv_timer_t *t);

static void timer_set(struct ig_conn *c, int mode, uint32_t ms)
{
    c->timer_mode = mode;
    if (mode == T_NONE)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* ---- closing ---- */

static void on_handle_closed(uv_handle_t *h)
{
    struct ig_conn *c = h->data;
    if (h != (uv_handle_t *)&c->cli && h != (uv_handle_t *)&c->timer)
        free(h); /* an upstream */
    if (--c->handles > 0)
        return;
    SSL_free(c->ssl);
    if (c->qh)
        free(c->qh->buf);
    if (c->sh)
        free(c->sh->buf);
    free(c->qh);
    free(c->sh);
    n_conns--;
    free(c->pend.p);
    free(c->cpend.p);
    free(c->left.p);
    free(c);
}

static void up_close(struct ig_conn *c)
{
    if (!c->up)
        return;
    uv_close((uv_handle_t *)c->up, on_handle_closed);
    c->up = NULL;
    c->up_reading = false;
    c->pend.len = 0; /* bytes for this upstream that it will never get */
}

static void conn_close(struct ig_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    up_close(c);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->cli, on_handle_closed);
}

void conn_route_gone(struct ig_route *rt)
{
    for (struct ig_conn *c = conns, *next; c; c = next) {
        next = c->next;
        if (c->rt == rt) {
            c->rt = NULL;
            conn_close(c);
        }
    }
}

/* A short page of our own, then the connection closes. */
static void reply(struct ig_conn *c, int status, const char *title, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply(struct ig_conn *c, int status, const char *title, const char *fmt, ...)
{
    if (c->closing)
        return;
    if (c->resp_started || !c->hs_done)
        return conn_close(c);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char body[1024];
    int bl = snprintf(body, sizeof body,
                      "<!doctype html><html><head><title>%d %s</title></head><body><h1>%d %s</h1><p>%s</p>"
                      "<p><small>hutch ingress</small></p></body></html>\n",
                      status, title, status, title, msg);
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n"
                      "Cache-Control: no-store\r\nX-Hutch-Ingress: %d\r\n%sConnection: close\r\n\r\n",
                      status, title, bl, status, status == 502 ? "Retry-After: 1\r\n" : "");
    c->resp_started = true;
    up_close(c);
    c->hold |= HOLD_CLOSING;
    update_reading(c);
    timer_set(c, T_NONE, 0);
    bool batching = c->batching;
    c->batching = true; /* head and page in one record */
    cli_send(c, head, (size_t)hl);
    cli_send(c, body, (size_t)bl);
    c->batching = batching;
    if (!c->closing)
        flush_tls(c);
    c->close_after_flush = true;
    if (!c->closing && uv_stream_get_write_queue_size((uv_stream_t *)&c->cli) == 0)
        conn_close(c);
}

static void on_timer(uv_timer_t *t)
{
    struct ig_conn *c = t->data;
    if (c->timer_mode == T_HEAD) {
        if (c->any_bytes)
            reply(c, 408, "Request Timeout", "The request head did not arrive in time.");
        else
            conn_close(c); /* an idle keep-alive connection */
    } else if (c->timer_mode == T_BODY) {
        reply(c, 408, "Request Timeout", "The request body stalled.");
    } else if (c->timer_mode == T_UPSTREAM) {
        reply(c, 504, "Gateway Timeout", "The server in the sandbox did not answer in time.");
    }
}

/* ---- headers ---- */

static int hdr_piece(struct hdrs *h, bool value, const char *at, size_t len)
{
    if (!value && (h->in_value || h->n == 0)) {
        if (h->n >= h->nmax)
            return -1;
        h->f_off[h->n] = (uint32_t)h->len;
        h->f_len[h->n] = 0;
        h->v_len[h->n] = 0;
        h->n++;
        h->in_value = false;
    }
    if (value && !h->in_value) {
        if (h->n == 0)
            return -1;
        h->v_off[h->n - 1] = (uint32_t)h->len;
        h->in_value = true;
    }
    if (h->len + len > h->max)
        return -1;
    memcpy(h->buf + h->len, at, len);
    h->len += len;
    if (value)
        h->v_len[h->n - 1] += (uint32_t)len;
    else
        h->f_len[h->n - 1] += (uint32_t)len;
    return 0;
}

static bool hname(const struct hdrs *h, unsigned i, const char *name)
{
    return h->f_len[i] == strlen(name) && strncasecmp(h->buf + h->f_off[i], name, h->f_len[i]) == 0;
}

static const char *hget(const struct hdrs *h, const char *name, size_t *len)
{
    for (unsigned i = 0; i < h->n; i++)
        if (hname(h, i, name)) {
            *len = h->v_len[i];
            return h->buf + h->v_off[i];
        }
    return NULL;
}

static void hdrs_reset(struct hdrs *h, size_t max, unsigned nmax)
{
    h->len = 0;
    h->n = 0;
    h->in_value = false;
    h->max = max;
    h->nmax = nmax;
}

/* ---- requests ---- */

static int rq_begin(http_parser *p)
{
    struct ig_conn *c = p->data;
    hdrs_reset(c->qh, HEAD_MAX, HEADERS_MAX);
    c->url_len = 0;
    c->any_bytes = true;
    return 0;
}

static int rq_url(http_parser *p, const char *at, size_t len)
{
    struct ig_conn *c = p->data;
    if (c->url_len + len >= sizeof c->url) {
        c->reject = 414;
        return 1;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    return 0;
}

static int rq_field(http_parser *p, const char *at, size_t len)
{
    struct ig_conn *c = p->data;
    if (hdr_piece(c->qh, false, at, len) < 0) {
        c->reject = 431;
        return 1;
    }
    return 0;
}

static int rq_value(http_parser *p, const char *at, size_t len)
{
    struct ig_conn *c = p->data;
    if (memchr(at, '\r', len) || memchr(at, '\n', len) || memchr(at, 0, len)) {
        c->reject = 400; /* obs-fold or a bare CR/LF: never re-emitted */
        return 1;
    }
    if (hdr_piece(c->qh, true, at, len) < 0) {
        c->reject = 431;
        return 1;
    }
    return 0;
}

static int rq_headers_done(http_parser *p)
{
    struct ig_conn *c = p->data;
    struct hdrs *h = c->qh;
    timer_set(c, T_NONE, 0);
    if (p->method == HTTP_CONNECT) {
        c->reject = 405;
        return -1;
    }
    c->url[c->url_len] = 0;
    size_t hostlen = 0;
    const char *host = hget(h, "host", &hostlen);
    if (!c->port_mode) {
        char name[IG_NAME_LEN + 1];
        struct ig_route *rt = host && ig_host_name(host, hostlen, g_cfg.base, name) == 0 ? route_by_name(name) : NULL;
        if (!rt) {
            c->reject = 404;
            return -1;
        }
        if (c->rt && c->rt != rt) {
            c->reject = 421; /* one connection, one exposure: its upstream belongs to the first */
            return -1;
        }
        c->rt = rt;
    }
    if (!c->rt) {
        c->reject = 404;
        return -1;
    }
    char path[URL_MAX + 2];
    c->via_path = false;
    if (!c->port_mode) {
        snprintf(path, sizeof path, "%s", c->url);
    } else if (ig_strip_secret(c->url, c->url_len, c->rt->name, path, sizeof path) >= 0) {
        c->via_path = true;
    } else {
        bool ok = false;
        for (unsigned i = 0; i < h->n && !ok; i++)
            ok = hname(h, i, "cookie") && ig_cookie_has(h->buf + h->v_off[i], h->v_len[i], c->rt->cookie, c->rt->name);
        if (!ok) {
            c->reject = 404;
            return -1;
        }
        snprintf(path, sizeof path, "%s", c->url);
    }
    if (c->rt->gone) { /* only after the secret matched: a wrong one learns nothing */
        c->reject = 4040;
        return -1;
    }
    c->req_upgrade = p->upgrade;
    c->req_chunked = (p->flags & F_CHUNKED) != 0;
    c->req_head = p->method == HTTP_HEAD;
    c->keep_alive = http_should_keep_alive(p) && p->http_major == 1 && p->http_minor >= 1;
    struct sbuf out = head_out;
    out.len = 0;
    int r = sbuf_str(&out, http_method_str(p->method));
    r |= sbuf_add(&out, " ", 1);
    r |= sbuf_add(&out, path, strlen(path));
    r |= sbuf_add(&out, " HTTP/1.1\r\n", 11);
    char *cookie = NULL;
    for (unsigned i = 0; i < h->n && r == 0; i++) {
        const char *f = h->buf + h->f_off[i], *v = h->buf + h->v_off[i];
        size_t fl = h->f_len[i], vl = h->v_len[i];
        if (ig_hop_header(f, fl))
            continue;
        if (hname(h, i, "cookie")) { /* hutch's own cookie never reaches a sandbox */
            free(cookie);
            cookie = malloc(2 * vl + 1);
            if (!cookie) {
                r = -1;
                break;
            }
            vl = ig_cookie_strip(v, vl, cookie);
            v = cookie;
            if (vl == 0)
                continue;
        }
        r |= sbuf_add(&out, f, fl);
        r |= sbuf_add(&out, ": ", 2);
        r |= sbuf_add(&out, v, vl);
        r |= sbuf_add(&out, "\r\n", 2);
    }
    free(cookie);
    r |= sbuf_str(&out, "X-Forwarded-For: ");
    r |= sbuf_str(&out, c->peer);
    r |= sbuf_str(&out, "\r\nX-Forwarded-Proto: https\r\n");
    if (host) {
        r |= sbuf_add(&out, "X-Forwarded-Host: ", 18);
        r |= sbuf_add(&out, host, hostlen);
        r |= sbuf_add(&out, "\r\n", 2);
    }
    if (c->req_chunked)
        r |= sbuf_add(&out, "Transfer-Encoding: chunked\r\n", 28);
    size_t ul = 0;
    const char *upg = c->req_upgrade ? hget(h, "upgrade", &ul) : NULL;
    if (upg) {
        r |= sbuf_add(&out, "Connection: Upgrade\r\nUpgrade: ", 30);
        r |= sbuf_add(&out, upg, ul);
        r |= sbuf_add(&out, "\r\n\r\n", 4);
    } else {
        c->req_upgrade = false;
        r |= sbuf_add(&out, "Connection: keep-alive\r\n\r\n", 26);
    }
    head_out = out; /* keeps what it grew to */
    if (r == 0)
        up_send(c, out.p, out.len);
    if (r != 0) {
        c->reject = 500;
        return -1;
    }
    c->req_sent = true;
    if (!c->up && !c->up_wanted) {
        c->up_wanted = true;
        c->up_req = next_req++;
        ctl_connect(c->up_req, c->rt->name);
    }
    /* a body that stops coming holds a connection: bounded like a head */
    if (c->req_chunked || (p->content_length > 0 && p->content_length != ULLONG_MAX))
        timer_set(c, T_BODY, g_cfg.upstream_timeout_ms);
    return 0;
}

static int rq_body(http_parser *p, const char *at, size_t len)
{
    struct ig_conn *c = p->data;
    if (c->req_chunked) {
        char sz[24];
        int n = snprintf(sz, sizeof sz, "%zx\r\n", len);
        up_send(c, sz, (size_t)n);
        up_send(c, at, len);
        up_send(c, "\r\n", 2);
    } else {
        up_send(c, at, len);
    }
    return 0;
}

static int rq_done(http_parser *p)
{
    struct ig_conn *c = p->data;
    if (c->req_chunked)
        up_send(c, "0\r\n\r\n", 5);
    c->req_done = true;
    if (!c->resp_started) /* "an upstream that never answers": bounded from the request's end */
        timer_set(c, T_UPSTREAM, g_cfg.upstream_timeout_ms);
    else
        timer_set(c, T_NONE, 0);
    http_parser_pause(p, 1); /* no pipelining: the next request waits (in c->left) for this response */
    return 0;
}

static const http_parser_settings rq_settings = {
    .on_message_begin = rq_begin, .on_url = rq_url, .on_header_field = rq_field, .on_header_value = rq_value,
    .on_headers_complete = rq_headers_done, .on_body = rq_body, .on_message_complete = rq_done,
};

static void left_add(struct ig_conn *c, const char *p, size_t n)
{
    if (sbuf_add(&c->left, p, n) < 0)
        return conn_close(c);
    if (c->left.len > LEFT_MAX && !(c->hold & HOLD_WAIT)) {
        c->hold |= HOLD_WAIT;
        update_reading(c);
    }
}

static void parse_req(struct ig_conn *c, const char *p, size_t n)
{
    size_t used = http_parser_execute(&c->rq, &rq_settings, p, n);
    if (c->closing)
        return;
    enum http_errno en = HTTP_PARSER_ERRNO(&c->rq);
    if (en == HPE_PAUSED || (en == HPE_OK && c->rq.upgrade)) {
        if (used < n)
            left_add(c, p + used, n - used);
        return;
    }
    if (en == HPE_OK)
        return;
    int st = c->reject ? c->reject : en == HPE_HEADER_OVERFLOW ? 431 : 400;
    switch (st) {
    case 404:
        return reply(c, 404, "Not Found", "No exposed sandbox port here. It may have stopped, or the URL is incomplete.");
    case 4040:
        return reply(c, 404, "Not Found", "This sandbox is not running any more.");
    case 405:
        return reply(c, 405, "Method Not Allowed", "CONNECT is not served here.");
    case 414:
        return reply(c, 414, "URI Too Long", "The request-target is longer than %d bytes.", URL_MAX - 1);
    case 421:
        return reply(c, 421, "Misdirected Request", "This connection belongs to another exposure.");
    case 431:
        return reply(c, 431, "Request Header Fields Too Large",
                     "At most %d header lines and %d bytes of headers.", HEADERS_MAX, HEAD_MAX);
    case 500:
        return reply(c, 500, "Internal Server Error", "Out of memory.");
    default:
        return reply(c, 400, "Bad Request", "Malformed request: %s.", http_errno_description(en));
    }
}

/* What the head scan refuses before http-parser sees it, where peers would
 * disagree about where headers end (RFC 9112): a header line continued on
 * the next (obs-fold, 5.2) rather than joined, and a bare CR, one not
 * followed by LF (2.2), which Debian's lenient http-parser takes as a line
 * end in some places and not in others. Scans the head only: it stops at
 * the empty line; the state carries across reads. NULL if the head is fine
 * so far, else what is wrong. */
static const char *head_fault(struct ig_conn *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !c->scan_done; i++) {
        char ch = p[i];
        if (c->scan_cr && ch != '\n')
            return "a bare CR in the head (lines end in CRLF)";
        c->scan_cr = ch == '\r';
        if (c->scan_lf && c->scan_line > 0 && (ch == ' ' || ch == '\t'))
            return "a folded header line (obs-fold)";
        if (ch == '\n') {
            if (c->scan_len == 0 && c->scan_line > 0)
                c->scan_done = true;
            c->scan_len = 0;
            c->scan_lf = true;
            c->scan_line++;
        } else {
            if (ch != '\r')
                c->scan_len++;
            c->scan_lf = false;
        }
    }
    return NULL;
}

static void cli_plain(struct ig_conn *c, const char *p, size_t n)
{
    if (c->tunnel)
        return up_send(c, p, n);
    if (c->req_done || c->req_upgrade)
        return left_add(c, p, n);
    const char *fault = head_fault(c, p, n);
    if (fault)
        return reply(c, 400, "Bad Request", "Malformed request: %s.", fault);
    parse_req(c, p, n);
}

/* ---- responses ---- */

static int rs_begin(http_parser *p)
{
    struct ig_conn *c = p->data;
    hdrs_reset(c->sh, RHEAD_MAX, RHEADERS_MAX);
    c->reason[0] = 0;
    return 0;
}

static int rs_status(http_parser *p, const char *at, size_t len)
{
    struct ig_conn *c = p->data;
    size_t have = strlen(c->reason);
    if (have + len < sizeof c->reason) {
        memcpy(c->reason + have, at, len);
        c->reason[have + len] = 0;
    }
    return 0;
}

static int rs_field(http_parser *p, const char *at, size_t len)
{
    struct ig_conn *c = p->data;
    return hdr_piece(c->sh, false, at, len) < 0 ? 1 : 0;
}

static int rs_value(http_parser *p, const char *at, size_t len)
{
    struct ig_conn *c = p->data;
    if (memchr(at, '\r', len) || memchr(at, '\n', len) || memchr(at, 0, len))
        return 1;
    return hdr_piece(c->sh, true, at, len) < 0 ? 1 : 0;
}

static int rs_headers_done(http_parser *p)
{
    struct ig_conn *c = p->data;
    struct hdrs *h = c->sh;
    unsigned st = p->status_code;
    if (st == 101 && !c->req_upgrade)
        return -1;
    bool interim = st >= 100 && st < 200 && st != 101;
    if (!interim)
        timer_set(c, T_NONE, 0);
    bool nobody = c->req_head || st == 204 || st == 304 || interim || st == 101;
    c->resp_chunked = c->resp_raw = false;
    if (!nobody && ((p->flags & F_CHUNKED) || p->content_length == ULLONG_MAX)) {
        if (c->keep_alive)
            c->resp_chunked = true; /* re-chunked: an until-close body keeps the client connection */
        else
            c->resp_raw = true;     /* HTTP/1.0 client: the body ends when we close */
    }
    struct sbuf out = head_out;
    out.len = 0;
    char code[16] = "HTTP/1.1 "; /* http_parser: at most three digits */
    size_t cl = 9;
    if (st >= 100)
        code[cl++] = (char)('0' + st / 100);
    if (st >= 10)
        code[cl++] = (char)('0' + st / 10 % 10);
    code[cl++] = (char)('0' + st % 10);
    code[cl++] = ' ';
    int r = sbuf_add(&out, code, cl);
    r |= sbuf_str(&out, c->reason);
    r |= sbuf_add(&out, "\r\n", 2);
    for (unsigned i = 0; i < h->n && r == 0; i++) {
        const char *f = h->buf + h->f_off[i], *v = h->buf + h->v_off[i];
        size_t fl = h->f_len[i], vl = h->v_len[i];
        if (ig_hop_header(f, fl) || (hname(h, i, "set-cookie") && ig_set_cookie_is_ours(v, vl)))
            continue; /* a sandbox cannot set or clear hutch's cookie */
        if (hname(h, i, "content-length") && (c->resp_chunked || c->resp_raw))
            continue;
        r |= sbuf_add(&out, f, fl);
        r |= sbuf_add(&out, ": ", 2);
        r |= sbuf_add(&out, v, vl);
        r |= sbuf_add(&out, "\r\n", 2);
    }
    if (c->via_path && !interim && st != 101) {
        r |= sbuf_str(&out, "Set-Cookie: ");
        r |= sbuf_str(&out, c->rt->cookie);
        r |= sbuf_add(&out, "=", 1);
        r |= sbuf_str(&out, c->rt->name);
        r |= sbuf_str(&out, "; Path=/; Secure; HttpOnly; SameSite=Lax\r\n");
    }
    if (st == 101) {
        size_t ul = 0;
        const char *upg = hget(h, "upgrade", &ul);
        r |= sbuf_add(&out, "Connection: Upgrade\r\n", 21);
        if (upg) {
            r |= sbuf_add(&out, "Upgrade: ", 9);
            r |= sbuf_add(&out, upg, ul);
            r |= sbuf_add(&out, "\r\n", 2);
        }
    } else if (!interim) {
        if (c->resp_chunked)
            r |= sbuf_add(&out, "Transfer-Encoding: chunked\r\n", 28);
        r |= sbuf_str(&out, c->keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    }
    r |= sbuf_add(&out, "\r\n", 2);
    head_out = out; /* keeps what it grew to */
    if (r == 0) {
        if (!interim)
            c->resp_started = true;
        cli_send(c, out.p, out.len);
    }
    if (r != 0)
        return -1;
    return c->req_head && !interim && st != 101 ? 1 : 0;
}

static int rs_body(http_parser *p, const char *at, size_t len)
{
    struct ig_conn *c = p->data;
    if (c->resp_chunked) {
        char sz[24];
        int n = snprintf(sz, sizeof sz, "%zx\r\n", len);
        cli_send(c, sz, (size_t)n);
        cli_send(c, at, len);
        cli_send(c, "\r\n", 2);
    } else {
        cli_send(c, at, len);
    }
    return 0;
}

static int rs_done(http_parser *p)
{
    struct ig_conn *c = p->data;
    unsigned st = p->status_code;
    if (st >= 100 && st < 200 && st != 101)
        return 0; /* 100 Continue, 103 Early Hints: the real answer follows */
    if (st == 101) {
        c->tunnel = true;
    } else {
        if (c->resp_chunked)
            cli_send(c, "0\r\n\r\n", 5);
        c->resp_done = true;
        c->up_keep = http_should_keep_alive(p);
    }
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings rs_settings = {
    .on_message_begin = rs_begin, .on_status = rs_status, .on_header_field = rs_field,
    .on_header_value = rs_value, .on_headers_complete = rs_headers_done, .on_body = rs_body,
    .on_message_complete = rs_done,
};

static void exchange_reset(struct ig_conn *c)
{
    http_parser_init(&c->rq, HTTP_REQUEST);
    http_parser_init(&c->rs, HTTP_RESPONSE);
    c->rq.data = c->rs.data = c;
    c->reject = 0;
    c->scan_done = c->scan_lf = c->scan_cr = false;
    c->scan_line = c->scan_len = 0;
    c->any_bytes = c->req_chunked = c->req_done = c->req_upgrade = c->req_head = c->via_path = false;
    c->req_sent = c->resp_started = c->resp_chunked = c->resp_done = c->resp_raw = c->up_keep = false;
}

/* The response is complete: next request on this connection, or close. */
static void exchange_done(struct ig_conn *c)
{
    if (!c->up_keep)
        up_close(c);
    if (!c->keep_alive || !c->req_done || c->cli_eof) {
        c->close_after_flush = true;
        c->hold |= HOLD_CLOSING;
        update_reading(c);
        flush_tls(c);
        if (!c->closing && uv_stream_get_write_queue_size((uv_stream_t *)&c->cli) == 0)
            conn_close(c);
        return;
    }
    exchange_reset(c);
    c->hold &= ~HOLD_WAIT;
    timer_set(c, T_HEAD, g_cfg.head_timeout_ms);
    if (c->left.len) { /* a pipelined request, read while the last one was served */
        struct sbuf l = c->left;
        c->left = (struct sbuf){0};
        cli_plain(c, l.p, l.len);
        free(l.p);
    }
    update_reading(c);
}

static void enter_tunnel(struct ig_conn *c)
{
    timer_set(c, T_NONE, 0);
    if (c->left.len) {
        up_send(c, c->left.p, c->left.len);
        c->left.len = 0;
    }
    c->hold &= ~HOLD_WAIT;
    update_reading(c);
}

static void parse_resp(struct ig_conn *c, const char *p, size_t n)
{
    if (!c->req_sent) {
        up_close(c); /* bytes nobody asked for */
        return;
    }
    size_t used = http_parser_execute(&c->rs, &rs_settings, p, n);
    if (c->closing)
        return;
    enum http_errno en = HTTP_PARSER_ERRNO(&c->rs);
    if (en == HPE_PAUSED || en == HPE_OK) {
        if (c->tunnel) {
            if (used < n)
                cli_send(c, p + used, n - used);
            enter_tunnel(c);
        } else if (c->resp_done) {
            exchange_done(c);
        }
        return;
    }
    if (!c->resp_started)
        return reply(c, 502, "Bad Gateway", "The server in the sandbox sent a malformed response (%s).",
                     http_errno_description(en));
    conn_close(c);
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct ig_conn *c = s->data;
    if (c->closing)
        return;
    if (nread == 0)
        return;
    if (nread > 0) {
        c->batching = true;
        if (c->tunnel)
            cli_send(c, b->base, (size_t)nread);
        else
            parse_resp(c, b->base, (size_t)nread);
        c->batching = false;
        flush_up(c); /* a pipelined request or a tunnel's first bytes */
        if (!c->closing)
            flush_tls(c);
        return;
    }
    /* the upstream closed */
    if (c->tunnel) {
        c->close_after_flush = true;
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->cli) == 0)
            conn_close(c);
        up_close(c);
        return;
    }
    if (c->resp_started && !c->resp_done) {
        http_parser_execute(&c->rs, &rs_settings, NULL, 0); /* an until-close body ends here */
        if (c->closing)
            return;
        up_close(c);
        if (c->resp_done) {
            c->up_keep = false;
            return exchange_done(c);
        }
        return conn_close(c); /* cut short: the client sees a truncated body */
    }
    up_close(c);
    if (c->req_sent && !c->resp_started)
        reply(c, 502, "Bad Gateway", "The server on port %d in the sandbox closed the connection without answering.",
              c->rt ? c->rt->target : 0);
}

static void free_up(uv_handle_t *h)
{
    free(h);
}

void conn_upstream_ready(uint32_t req, uv_tcp_t *up, int err)
{
    struct ig_conn *c = conns;
    while (c && !(c->up_wanted && c->up_req == req))
        c = c->next;
    if (!c) {
        if (up)
            uv_close((uv_handle_t *)up, free_up);
        return;
    }
    c->up_wanted = false;
    if (!up) {
        if (err == ENOENT)
            return reply(c, 404, "Not Found", "This sandbox is not running any more.");
        return reply(c, 502, "Bad Gateway",
                     "Nothing is listening on port %d in sandbox %s yet (%s). Start the server, then reload.",
                     c->rt ? c->rt->target : 0, c->rt ? c->rt->sandbox : "?", strerror(err));
    }
    up->data = c;
    c->handles++;
    c->up = up;
    uv_tcp_nodelay(up, 1);
    flush_up(c);
    update_reading(c);
}

/* ---- client side ---- */

static void on_cli_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct ig_conn *c = s->data;
    if (c->closing || nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF && c->req_done && !c->resp_done && !c->tunnel) {
            c->cli_eof = true; /* a half-close after the request: the answer still goes out */
            c->hold |= HOLD_CLOSING;
            return update_reading(c);
        }
        return conn_close(c);
    }
    if (BIO_write(c->rbio, b->base, (int)nread) != (int)nread)
        return conn_close(c);
    if (c->timer_mode == T_BODY)
        timer_set(c, T_BODY, g_cfg.upstream_timeout_ms); /* bytes came: the body is moving */
    if (!c->hs_done) {
        int r = SSL_do_handshake(c->ssl);
        flush_tls(c);
        if (r != 1) {
            int err = SSL_get_error(c->ssl, r);
            ERR_clear_error();
            if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
                conn_close(c);
            return;
        }
        c->hs_done = true;
    }
    c->batching = true;
    for (;;) {
        if (c->closing)
            return;
        int n = SSL_read(c->ssl, plain, sizeof plain), err = SSL_ERROR_WANT_READ;
        if (n > 0) {
            cli_plain(c, plain, (size_t)n);
            if (c->closing)
                return;
            if (SSL_pending(c->ssl) > 0 || BIO_ctrl_pending(c->rbio) > 0)
                continue;
            /* every byte read is taken: no SSL_read (and error queue) just to hear WANT_READ */
        } else {
            err = SSL_get_error(c->ssl, n);
            ERR_clear_error();
        }
        c->batching = false;
        flush_up(c);
        flush_tls(c);
        if (err == SSL_ERROR_WANT_READ)
            return;
        return conn_close(c); /* close_notify or a TLS error */
    }
}

int conn_alpn(SSL *s, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    /* HTTP/1.1 only: offered by every browser, so ALPN never fails */
    for (unsigned i = 0; i < inlen;) {
        unsigned l = in[i];
        if (i + 1 + l > inlen)
            break;
        if (l == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + l;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0 || !g_cfg.tls)
        return;
    struct ig_conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    n_conns++;
    c->qh = calloc(1, sizeof *c->qh);
    c->sh = calloc(1, sizeof *c->sh);
    if (c->qh)
        c->qh->buf = malloc(HEAD_MAX);
    if (c->sh)
        c->sh->buf = malloc(RHEAD_MAX);
    uv_tcp_init(g_loop, &c->cli);
    c->cli.data = c;
    c->handles = 1;
    /* over the limit: accepted and closed at once, so the backlog never fills */
    if (!c->qh || !c->sh || !c->qh->buf || !c->sh->buf || uv_accept(server, (uv_stream_t *)&c->cli) < 0 ||
        n_conns > CONNS_MAX) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->cli, on_handle_closed);
        return;
    }
    uv_timer_init(g_loop, &c->timer);
    c->timer.data = c;
    c->handles++;
    c->rt = server->data;
    c->port_mode = c->rt != NULL;
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    snprintf(c->peer, sizeof c->peer, "unknown");
    if (uv_tcp_getpeername(&c->cli, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->peer, sizeof c->peer);
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, c->peer, sizeof c->peer);
    }
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    c->ssl = SSL_new(g_cfg.tls);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->rbio || !c->wbio) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        return conn_close(c);
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
    exchange_reset(c);
    uv_tcp_nodelay(&c->cli, 1);
    timer_set(c, T_HEAD, g_cfg.head_timeout_ms); /* the handshake counts towards it */
    update_reading(c);
}

void conn_listen(uv_tcp_t *listener, struct ig_route *rt)
{
    listener->data = rt;
    int r = uv_listen((uv_stream_t *)listener, 1024, on_connection);
    if (r < 0)
        fprintf(stderr, "hutch-ingress: listen: %s\n", uv_strerror(r));
}
