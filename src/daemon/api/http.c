/* HTTP/1.1 server for hutchd's API on libuv: accepts connections, parses requests under fixed
 * limits, hands each complete request to the app, writes its response, keeps the connection alive. */
#include "daemon/api/http.h"

#include <ctype.h>
#include <http_parser.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "daemon/api/link.h"
#include "daemon/api/peers.h"
#include "daemon/api/ws.h"

#define HTTP_PENDING_MAX (64 * 1024)  /* input read ahead while the app holds a request, bytes */
#define HTTP_READ_BUF    (64 * 1024)
#define HTTP_LINGER_MS   2000         /* after our FIN, how long we drain the client's leftovers */
#define HTTP_SWEEP_MS    1000

union stream_handle {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
};

struct http_server {
    uv_loop_t *loop;
    union stream_handle lis;
    uv_timer_t sweep;        /* enforces connection deadlines */
    uv_idle_t kick;          /* processes stashed input outside of the app's calls */
    http_request_cb cb;
    void *ud;
    bool (*raw_want)(const char *method, const char *url);
    bool unix_peer;
    bool closing;
    int open_handles;        /* the server is freed when these and all conns are gone */
    struct link conns, kicks;
    struct link spent;       /* conns whose answered request's head and body go at the next idle turn */
    size_t n_conns;          /* allocated conns, closing ones included */
    struct http_limits lim;
    size_t n_open;           /* conns that hold a slot of lim.max_conns: accepted and not closing */
    struct link untrusted;   /* the untrusted ones among them, oldest first: who is displaced first */
    struct peer_table *peers;  /* TCP: the untrusted ones by source address */
    int port;
    char *unix_path;
    uint8_t rbuf[HTTP_READ_BUF];  /* one loop, one thread: every read is consumed or copied at once */
};

enum conn_state {
    C_READ,    /* receiving a request */
    C_APP,     /* the app holds the request */
    C_WRITE,   /* the response is being written */
    C_WS,      /* upgraded: bytes go to ws.c */
    C_LINGER,  /* response sent, FIN sent: draining until the client closes */
};

enum { H_URL, H_FIELD, H_VALUE, H_DONE };

struct http_conn {
    union stream_handle h;
    struct http_server *srv;
    struct link node, kick_node, spent_node;
    struct link untrusted_node, peer_node;  /* on srv->untrusted and peer->conns while untrusted */
    struct peer *peer;
    enum conn_state state;
    bool closing;      /* uv_close called */
    bool closed;       /* close callback ran; kept only until the app's response */
    bool reading;
    bool kicked;
    bool msg_done;
    bool keep_alive;
    bool upgrade;
    bool trusted;      /* see http_limits */
    bool streaming;    /* http_stream_begin sent the head */
    bool counted;      /* holds a slot of srv->lim.max_conns */
    bool got_bytes;    /* part of the current request has arrived */
    bool spent;        /* on srv->spent: the answered request's head and body go soon */
    bool cr_last;      /* the head so far ends in CR: the next byte must be LF */
    uint8_t eoh;       /* bytes of the blank line's "\r\n\r\n" the head so far ends with */
    bool raw_body;     /* the body is left to the app (http_server_set_raw_body) */
    bool detached;     /* http_conn_detach: the app reads and writes the socket */
    uint64_t raw_len;
    int fail_status;   /* set by a parser callback that refuses the request */
    uint64_t deadline; /* uv_now() in ms after which the sweep closes the conn; 0: none */
    size_t wq_mark;
    http_parser parser;
    uv_shutdown_t shut;

    /* The request being parsed: every string lives in rq->head, NUL-terminated. rq exists from a
     * request's first byte until its response is out: an idle keep-alive conn and a WebSocket hold
     * none of its ~19 KiB (issue 15: memory per connected client). */
    struct http_reqbuf *rq;
    size_t head_len;
    int hstate;
    size_t n_headers;
    uint8_t *body;
    size_t body_len, body_cap;
    struct http_request req;

    uint8_t *pending;  /* received but not yet consumed */
    size_t pending_len;

    void (*on_abort)(struct http_conn *c, void *ud);
    void *abort_ud;
    struct ws_conn *ws;
};

struct http_reqbuf {
    char head[HTTP_MAX_HEAD + 2 * HTTP_MAX_HEADERS + 8];
    struct { uint32_t name, value; } hoff[HTTP_MAX_HEADERS];
    struct http_header hdrs[HTTP_MAX_HEADERS];
};

struct http_wreq {
    uv_write_t req;
    struct http_conn *c;
    bool final;        /* the response: what follows depends on keep-alive */
    char data[];
};

static void conn_feed(struct http_conn *c, const uint8_t *p, size_t n);
static void conn_close(struct http_conn *c);
static void server_maybe_free(struct http_server *s);

/* ---------- pure helpers ---------- */

const char *http_header_get(const struct http_request *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

bool http_header_has_token(const char *value, const char *token)
{
    if (!value)
        return false;
    size_t tl = strlen(token);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if ((size_t)(end - start) == tl && strncasecmp(start, token, tl) == 0)
            return true;
    }
    return false;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

char *http_pct_decode(const char *s, size_t n, bool plus_is_space)
{
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%' && i + 2 < n) {
            int hi = hexval(s[i + 1]);
            int lo = hexval(s[i + 2]);
            /* A NUL would silently cut the value short for every C caller: keep it escaped. */
            if (hi >= 0 && lo >= 0 && (hi | lo) != 0) {
                out[o++] = (char)(hi << 4 | lo);
                i += 2;
                continue;
            }
        }
        out[o++] = (ch == '+' && plus_is_space) ? ' ' : ch;
    }
    out[o] = '\0';
    return out;
}

/* Walks "a=1&b=2": calls fn with the raw (undecoded) name and value spans; stops when fn returns true. */
static void query_walk(const char *q, bool (*fn)(const char *k, size_t kn, const char *v, size_t vn, void *ud),
                       void *ud)
{
    const char *p = q ? q : "";
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > 0) {
            const char *eq = memchr(p, '=', len);
            size_t kn = eq ? (size_t)(eq - p) : len;
            const char *v = eq ? eq + 1 : p + len;
            size_t vn = eq ? len - kn - 1 : 0;
            if (fn(p, kn, v, vn, ud))
                return;
        }
        if (!amp)
            break;
        p = amp + 1;
    }
}

struct query_find {
    const char *name;
    char *value;
};

static bool query_find_fn(const char *k, size_t kn, const char *v, size_t vn, void *ud)
{
    struct query_find *f = ud;
    char *key = http_pct_decode(k, kn, true);
    if (!key)
        return false;
    bool match = strcmp(key, f->name) == 0;
    free(key);
    if (!match)
        return false;
    f->value = http_pct_decode(v, vn, true);
    return true;
}

char *http_query_get(const struct http_request *r, const char *name)
{
    struct query_find f = { name, NULL };
    query_walk(r->query, query_find_fn, &f);
    return f.value;
}

struct query_each {
    void (*cb)(const char *k, const char *v, void *ud);
    void *ud;
};

static bool query_each_fn(const char *k, size_t kn, const char *v, size_t vn, void *ud)
{
    struct query_each *qe = ud;
    char *key = http_pct_decode(k, kn, true);
    char *val = http_pct_decode(v, vn, true);
    if (key && val)
        qe->cb(key, val, qe->ud);
    free(key);
    free(val);
    return false;
}

void http_query_each(const struct http_request *r, void (*cb)(const char *k, const char *v, void *ud), void *ud)
{
    struct query_each qe = { cb, ud };
    query_walk(r->query, query_each_fn, &qe);
}

static const char *status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default:  return "Status";
    }
}

/* ---------- parser callbacks: every byte goes into bounded storage ---------- */

static int head_append(struct http_conn *c, const char *at, size_t len)
{
    /* +1 keeps room for the NUL that ends this string. */
    if (len > HTTP_MAX_HEAD || c->head_len + len + 1 > HTTP_MAX_HEAD) {
        c->fail_status = 431;
        return -1;
    }
    memcpy(c->rq->head + c->head_len, at, len);
    c->head_len += len;
    return 0;
}

static void head_end_string(struct http_conn *c)
{
    c->rq->head[c->head_len++] = '\0';
}

static void head_end_value(struct http_conn *c)
{
    /* http-parser skips leading blanks; trailing ones are ours to drop. */
    size_t start = c->rq->hoff[c->n_headers].value;
    while (c->head_len > start && (c->rq->head[c->head_len - 1] == ' ' || c->rq->head[c->head_len - 1] == '\t'))
        c->head_len--;
    head_end_string(c);
    c->n_headers++;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    return head_append(p->data, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    if (c->hstate != H_FIELD) {  /* a new header (fields split across reads arrive as several calls) */
        if (c->hstate == H_URL)
            head_end_string(c);
        else if (c->hstate == H_VALUE)
            head_end_value(c);
        if (c->n_headers >= HTTP_MAX_HEADERS) {
            c->fail_status = 431;
            return -1;
        }
        c->rq->hoff[c->n_headers].name = (uint32_t)c->head_len;
        c->hstate = H_FIELD;
    }
    return head_append(c, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    if (c->hstate != H_VALUE) {
        head_end_string(c);
        c->rq->hoff[c->n_headers].value = (uint32_t)c->head_len;
        c->hstate = H_VALUE;
    }
    return head_append(c, at, len);
}

static void conn_write_raw(struct http_conn *c, const char *data, size_t len, bool final);

static int on_headers_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    if (c->hstate == H_URL)
        head_end_string(c);
    else if (c->hstate == H_VALUE)
        head_end_value(c);
    c->hstate = H_DONE;
    if (c->srv->raw_want && c->srv->raw_want(http_method_str((enum http_method)p->method), c->rq->head)) {
        if (!(p->flags & F_CONTENTLENGTH) || (p->flags & F_CHUNKED) || p->upgrade) {
            c->fail_status = 411;
            return -1;
        }
        c->raw_body = true;
        c->raw_len = p->content_length;
        /* 1: "no body" to the parser, which ends the message here; what follows is stashed as pending */
        for (size_t i = 0; i < c->n_headers; i++)
            if (strcasecmp(c->rq->head + c->rq->hoff[i].name, "expect") == 0 &&
                strcasecmp(c->rq->head + c->rq->hoff[i].value, "100-continue") == 0) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                conn_write_raw(c, cont, sizeof(cont) - 1, false);
            }
        return 1;
    }
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > HTTP_MAX_BODY) {
        c->fail_status = 413;  /* refuse before reading any of it */
        return -1;
    }
    for (size_t i = 0; i < c->n_headers; i++) {
        if (strcasecmp(c->rq->head + c->rq->hoff[i].name, "expect") == 0 &&
            strcasecmp(c->rq->head + c->rq->hoff[i].value, "100-continue") == 0 && !p->upgrade) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            conn_write_raw(c, cont, sizeof(cont) - 1, false);
        }
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    if (len > HTTP_MAX_BODY - c->body_len) {
        c->fail_status = 413;  /* chunked bodies have no length up front */
        return -1;
    }
    if (c->body_len + len > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;
        while (cap < c->body_len + len)
            cap *= 2;
        if (cap > HTTP_MAX_BODY)
            cap = HTTP_MAX_BODY;
        uint8_t *nb = realloc(c->body, cap);
        if (!nb) {
            c->fail_status = 503;
            return -1;
        }
        c->body = nb;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    if (c->hstate == H_VALUE)  /* a chunked trailer */
        head_end_value(c);
    c->hstate = H_DONE;
    c->msg_done = true;
    /* One request at a time: bytes after it wait until the response is out. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---------- connection plumbing ---------- */

static uint64_t now_ms(struct http_conn *c)
{
    return uv_now(c->srv->loop);
}

/* How long a conn may take for its next request, or for its response to leave. An untrusted one is
 * bounded however much progress it makes (slow loris: a head dribbled byte by byte, or a body). */
static uint64_t conn_wait_ms(const struct http_conn *c)
{
    return c->trusted ? HTTP_IDLE_TIMEOUT_MS : c->srv->lim.request_timeout_ms;
}

void http_conn_set_deadline(struct http_conn *c, uint64_t ms)
{
    c->deadline = ms ? now_ms(c) + ms : 0;
}

uv_stream_t *http_conn_stream(struct http_conn *c)
{
    return &c->h.stream;
}

bool http_conn_closing(const struct http_conn *c)
{
    return c->closing;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct http_conn *c = container_of(h, struct http_conn, h);
    buf->base = (char *)c->srv->rbuf;
    buf->len = sizeof(c->srv->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

void http_conn_read(struct http_conn *c, bool on)
{
    if (c->closing || on == c->reading)
        return;
    int r = on ? uv_read_start(&c->h.stream, on_alloc, on_read) : uv_read_stop(&c->h.stream);
    if (r < 0) {
        conn_close(c);
        return;
    }
    c->reading = on;
}

int http_conn_stash(struct http_conn *c, const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    if (c->detached) { /* the app took the input over: bytes kept here would be lost to it */
        conn_close(c);
        return -EPIPE;
    }
    uint8_t *np = realloc(c->pending, c->pending_len + n);
    if (!np) {
        conn_close(c);
        return -ENOMEM;
    }
    memcpy(np + c->pending_len, p, n);
    c->pending = np;
    c->pending_len += n;
    return 0;
}

static void on_kick(uv_idle_t *h);

static void conn_kick(struct http_conn *c)
{
    if (c->kicked || c->closing)
        return;
    c->kicked = true;
    link_add(&c->srv->kicks, &c->kick_node);
    uv_idle_start(&c->srv->kick, on_kick);
}

void http_conn_resume(struct http_conn *c)
{
    if (c->pending_len)
        conn_kick(c);   /* not now: the app may be inside one of its own callbacks */
    else
        http_conn_read(c, true);
}

static void on_conn_closed(uv_handle_t *h);

static void conn_untrust_release(struct http_conn *c)
{
    if (c->peer) {
        peer_detach(c->srv->peers, c->peer, &c->peer_node);
        c->peer = NULL;
    }
    if (!link_empty(&c->untrusted_node))
        link_del(&c->untrusted_node);
}

static void conn_close(struct http_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    /* Its slot is free at once: the memory follows from the loop, so that "at most N" holds for
     * what can still send us anything. */
    if (c->counted) {
        c->counted = false;
        c->srv->n_open--;
    }
    conn_untrust_release(c);
    c->reading = false;
    if (c->kicked) {
        link_del(&c->kick_node);
        c->kicked = false;
    }
    uv_close(&c->h.handle, on_conn_closed);
}

void http_conn_close(struct http_conn *c)
{
    conn_close(c);
}

/* The request was answered: its head and its body go, but not now. The app
 * may still be inside its handler, reading a header it answered from (a
 * secret scrubbed after the response); they go at the next idle turn of the
 * loop, unless a new request has begun with them by then. */
static void conn_request_done(struct http_conn *c)
{
    memset(&c->req, 0, sizeof(c->req));
    c->body_len = 0;
    if (c->spent || (!c->rq && c->body_cap <= 4096))
        return;
    c->spent = true;
    link_add(&c->srv->spent, &c->spent_node);
    uv_idle_start(&c->srv->kick, on_kick);
}

static void conn_spent_free(struct http_conn *c)
{
    link_del(&c->spent_node);
    c->spent = false;
    if (c->state == C_READ && c->got_bytes)
        return; /* a new request uses them */
    free(c->rq);
    c->rq = NULL;
    if (c->body_cap > 4096) {  /* do not keep an upload's buffer on an idle conn */
        free(c->body);
        c->body = NULL;
        c->body_cap = 0;
    }
}

static void conn_free(struct http_conn *c)
{
    struct http_server *s = c->srv;
    link_del(&c->node);
    if (c->spent)
        link_del(&c->spent_node);
    s->n_conns--;
    free(c->rq);
    free(c->body);
    free(c->pending);
    free(c);
    server_maybe_free(s);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct http_conn *c = container_of(h, struct http_conn, h);
    if (c->ws) {
        struct ws_conn *w = c->ws;
        c->ws = NULL;
        ws_conn_closed(w);
    }
    c->closed = true;
    if (c->state == C_APP) {
        /* The app still owes a response; its response call releases the conn. */
        if (c->on_abort)
            c->on_abort(c, c->abort_ud);  /* may respond and so free c: touch nothing after */
        return;
    }
    conn_free(c);
}

static void on_http_written(uv_write_t *req, int status);

static void conn_write_raw(struct http_conn *c, const char *data, size_t len, bool final)
{
    struct http_wreq *wr = malloc(sizeof(*wr) + len);
    if (!wr) {
        conn_close(c);
        return;
    }
    wr->c = c;
    wr->final = final;
    memcpy(wr->data, data, len);
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
    if (uv_write(&wr->req, &c->h.stream, &b, 1, on_http_written) < 0) {
        free(wr);
        conn_close(c);
    }
}

static void reset_request(struct http_conn *c)
{
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->head_len = 0;
    c->hstate = H_URL;
    c->n_headers = 0;
    conn_request_done(c);
    c->msg_done = false;
    c->cr_last = false;
    c->eoh = 0;
    c->got_bytes = false;
    c->fail_status = 0;
    c->raw_body = false;
    c->raw_len = 0;
    c->on_abort = NULL;
    c->abort_ud = NULL;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;  /* the linger deadline closes the conn in any case */
}

static void on_http_written(uv_write_t *req, int status)
{
    struct http_wreq *wr = container_of(req, struct http_wreq, req);
    struct http_conn *c = wr->c;
    bool final = wr->final;
    free(wr);
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (!final || c->state != C_WRITE)
        return;
    if (!c->keep_alive) {
        /* Half-close and drain: closing with unread input would make the kernel send a RST that
         * can destroy the response before the client has read it. */
        c->state = C_LINGER;
        http_conn_set_deadline(c, HTTP_LINGER_MS);
        free(c->pending);
        c->pending = NULL;
        c->pending_len = 0;
        if (uv_shutdown(&c->shut, &c->h.stream, on_shutdown) < 0) {
            conn_close(c);
            return;
        }
        http_conn_read(c, true);
        return;
    }
    reset_request(c);
    c->state = C_READ;
    http_conn_set_deadline(c, conn_wait_ms(c));
    if (c->pending_len) {
        uint8_t *p = c->pending;
        size_t n = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        conn_feed(c, p, n);
        free(p);
    }
    if (c->state == C_READ)
        http_conn_read(c, true);
}

/* ---------- requests ---------- */

static void fail_request(struct http_conn *c, int status, const char *code, const char *msg)
{
    c->state = C_APP;
    c->keep_alive = false;
    http_respond_error(c, status, code, "%s", msg);
}

static void dispatch(struct http_conn *c)
{
    struct http_request *r = &c->req;
    /* HTTP/0.9 ("GET /" with no version) and made-up versions never reach a
     * route: the public dashboard at / must not answer them as if they were
     * HTTP/1.x requests. */
    if (c->parser.http_major != 1)
        return fail_request(c, 505, "HTTP_VERSION_NOT_SUPPORTED", "this server speaks HTTP versions 1.0 and 1.1 only");
    r->method = http_method_str((enum http_method)c->parser.method);
    char *url = c->rq->head;
    char *q = strchr(url, '?');
    if (q) {
        *q = '\0';
        r->query = q + 1;
    } else {
        r->query = "";
    }
    r->path = url;
    for (size_t i = 0; i < c->n_headers; i++) {
        c->rq->hdrs[i].name = c->rq->head + c->rq->hoff[i].name;
        c->rq->hdrs[i].value = c->rq->head + c->rq->hoff[i].value;
    }
    r->headers = c->rq->hdrs;
    r->n_headers = c->n_headers;
    r->body = c->body ? c->body : (const uint8_t *)"";
    r->body_len = c->body_len;
    r->unix_peer = c->srv->unix_peer;
    r->websocket = c->parser.http_major == 1 && c->parser.http_minor >= 1 && ws_request_valid(r);
    c->keep_alive = http_should_keep_alive(&c->parser) && !c->raw_body; /* an unread body ends the conn */
    c->upgrade = c->parser.upgrade;
    r->raw_body = c->raw_body;
    r->content_length = c->raw_len;
    c->state = C_APP;
    c->deadline = 0;
    /* Keep reading while the app works: that is how a disconnect is noticed (input is stashed). */
    c->srv->cb(c, r, c->srv->ud);
}

static void conn_parse(struct http_conn *c, const uint8_t *p, size_t n);

/* Where the first bare CR (one not followed by LF) of p is; n if none. A CR
 * that ends p is settled by the next read (c->cr_last). */
static size_t bare_cr(const struct http_conn *c, const uint8_t *p, size_t n)
{
    if (c->cr_last && p[0] != '\n')
        return 0;
    for (const uint8_t *q = p; (q = memchr(q, '\r', (size_t)(p + n - q))) != NULL; q++)
        if (q + 1 < p + n && q[1] != '\n')
            return (size_t)(q - p);
    return n;
}

/* Where the head ends in p: just past its blank line (which may have begun
 * in an earlier read), or n when it goes on; c->eoh follows it across reads.
 * What lies beyond is a body, or the next request, never looked at here. */
static size_t head_end(struct http_conn *c, const uint8_t *p, size_t n)
{
    static const char blank[] = "\r\n\r\n";
    unsigned m = c->eoh;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == (uint8_t)blank[m]) {
            if (++m == 4)
                return i + 1;
        } else {
            m = p[i] == '\r' ? 1 : 0;
        }
    }
    c->eoh = (uint8_t)m;
    return n;
}

/* RFC 9112 §2.2: a bare CR in a request head is refused. Debian's lenient
 * http-parser would end the head at the next CRLF after an empty value
 * ended by a bare CR (`X-A: \r\r\nHost: ...`) and read what follows as the
 * body or the next request: framing no strict parser in front of hutchd
 * would agree with (docs/network.md). Body bytes are not looked at. */
static void conn_feed(struct http_conn *c, const uint8_t *p, size_t n)
{
    if (c->state != C_READ || n == 0 || c->hstate == H_DONE)
        return conn_parse(c, p, n);
    /* only the head's bytes: a body in the same read (binary, any CR) is the
     * parser's, and after a raw body's head the app's (http_conn_detach) */
    size_t lim = head_end(c, p, n);
    size_t k = bare_cr(c, p, lim);
    if (k == lim) {
        conn_parse(c, p, n);
        c->cr_last = c->state == C_READ && c->hstate != H_DONE && !c->closing && p[n - 1] == '\r';
        return;
    }
    if (k)
        conn_parse(c, p, k);
    if (c->closing)
        return;
    if (c->state != C_READ || c->hstate == H_DONE) /* the head ended before it: body or the next request */
        return conn_feed(c, p + k, n - k);
    fail_request(c, 400, "BAD_REQUEST", "bare CR in the request head (RFC 9112: lines end in CRLF)");
}

static void conn_parse(struct http_conn *c, const uint8_t *p, size_t n)
{
    if (c->state != C_READ || n == 0) {
        if (n)
            http_conn_stash(c, p, n);
        return;
    }
    c->got_bytes = true;
    if (!c->rq && !(c->rq = malloc(sizeof *c->rq))) {
        c->keep_alive = false;
        fail_request(c, 503, "OUT_OF_MEMORY", "out of memory");
        return;
    }
    size_t done = http_parser_execute(&c->parser, &parser_settings, (const char *)p, n);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (c->msg_done) {
        if (done < n && http_conn_stash(c, p + done, n - done) < 0)
            return;
        dispatch(c);
        return;
    }
    if (err != HPE_OK || done != n) {
        switch (c->fail_status) {
        case 413:
            fail_request(c, 413, "REQUEST_TOO_LARGE", "request body exceeds 1 MiB");
            break;
        case 431:
            fail_request(c, 431, "HEADERS_TOO_LARGE", "request head exceeds 16 KiB or 100 headers");
            break;
        case 411:
            fail_request(c, 411, "LENGTH_REQUIRED", "this endpoint needs a Content-Length (no chunked bodies)");
            break;
        case 503:
            fail_request(c, 503, "OUT_OF_MEMORY", "out of memory");
            break;
        default:
            fail_request(c, 400, "BAD_REQUEST", http_errno_description(err));
        }
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct http_conn *c = container_of(s, struct http_conn, h);
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {  /* EOF or error, at any point of a request, response or frame */
        conn_close(c);
        return;
    }
    const uint8_t *p = (const uint8_t *)buf->base;
    size_t n = (size_t)nread;
    switch (c->state) {
    case C_READ:
        conn_feed(c, p, n);
        break;
    case C_APP:
    case C_WRITE:
        http_conn_stash(c, p, n);
        if (c->pending_len > HTTP_PENDING_MAX)
            http_conn_read(c, false);  /* a pipelining client waits for us */
        break;
    case C_WS:
        if (c->pending_len) {  /* keep order behind what is already stashed */
            http_conn_stash(c, p, n);
            http_conn_read(c, false);
            conn_kick(c);
        } else {
            ws_conn_data(c->ws, p, n);
            if (!c->closing && c->ws && !ws_conn_wants_read(c->ws))
                http_conn_read(c, false);
        }
        break;
    case C_LINGER:
        break;  /* discarded */
    }
}

static void on_kick(uv_idle_t *h)
{
    struct http_server *s = container_of(h, struct http_server, kick);
    while (!link_empty(&s->spent))
        conn_spent_free(container_of(s->spent.next, struct http_conn, spent_node));
    struct link todo;
    link_init(&todo);
    /* Move the list aside: processing may kick again, which is then for the next turn. */
    if (!link_empty(&s->kicks)) {
        todo.next = s->kicks.next;
        todo.prev = s->kicks.prev;
        todo.next->prev = &todo;
        todo.prev->next = &todo;
        link_init(&s->kicks);
    }
    while (!link_empty(&todo)) {
        struct http_conn *c = container_of(todo.next, struct http_conn, kick_node);
        link_del(&c->kick_node);
        c->kicked = false;
        if (c->closing)
            continue;
        uint8_t *p = c->pending;
        size_t n = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        if (c->state == C_WS) {
            if (n)
                ws_conn_data(c->ws, p, n);
            if (!c->closing && c->ws && !c->pending_len)
                http_conn_read(c, ws_conn_wants_read(c->ws));
        } else if (c->state == C_READ) {
            conn_feed(c, p, n);
            if (c->state == C_READ)
                http_conn_read(c, true);
        } else if (n) {
            http_conn_stash(c, p, n);
        }
        free(p);
    }
    if (link_empty(&s->kicks) && link_empty(&s->spent))
        uv_idle_stop(&s->kick);
}

/* ---------- responses ---------- */

/* True if the caller may write the response; false if c was misused or is now released. */
static bool conn_take_response(struct http_conn *c)
{
    if (c->state != C_APP) {
        fprintf(stderr, "hutchd: http: response on a connection not awaiting one (ignored)\n");
        return false;
    }
    if (c->closed) {
        conn_free(c);
        return false;
    }
    return true;
}

void http_respond(struct http_conn *c, int status, const char *content_type, const char *extra_headers,
                  const void *body, size_t len)
{
    if (!conn_take_response(c))
        return;
    /* After an Upgrade or CONNECT the parser treats what follows as another protocol. */
    if (c->upgrade || c->srv->closing || c->closing)
        c->keep_alive = false;
    bool no_body = status == 204 || status == 304 || (status >= 100 && status < 200);
    bool head_only = c->parser.method == HTTP_HEAD;
    if (no_body)
        len = 0;
    size_t cap = 256 + (content_type ? strlen(content_type) : 0) + (extra_headers ? strlen(extra_headers) : 0);
    char *out = malloc(cap + len);
    if (!out) {
        c->state = C_WRITE;
        conn_close(c);
        return;
    }
    int h = snprintf(out, cap, "HTTP/1.1 %d %s\r\n%s%s%s", status, status_text(status),
                     content_type ? "Content-Type: " : "", content_type ? content_type : "",
                     content_type ? "\r\n" : "");
    size_t off = (size_t)h;
    if (!no_body)
        off += (size_t)snprintf(out + off, cap - off, "Content-Length: %zu\r\n", len);
    if (!c->keep_alive)
        off += (size_t)snprintf(out + off, cap - off, "Connection: close\r\n");
    else if (c->parser.http_major == 1 && c->parser.http_minor == 0)
        off += (size_t)snprintf(out + off, cap - off, "Connection: keep-alive\r\n");
    off += (size_t)snprintf(out + off, cap - off, "%s\r\n", extra_headers ? extra_headers : "");
    if (len && !head_only) {
        memcpy(out + off, body, len);
        off += len;
    }
    c->state = C_WRITE;
    c->wq_mark = 0;
    http_conn_set_deadline(c, conn_wait_ms(c));
    conn_write_raw(c, out, off, true);
    free(out);
    conn_request_done(c);  /* after the write: body and extra_headers may point into the request */
}

/* A streamed response (server-sent events): the head now, then chunks as they
 * come, then the end, which closes the conn (no length, no chunked coding:
 * "Connection: close" delimits the body, so a streamed conn is never reused).
 * The conn stays the app's (C_APP) until http_stream_end: a client that
 * leaves meanwhile triggers on_abort as for any pending request. */
bool http_stream_begin(struct http_conn *c, int status, const char *content_type, const char *extra_headers)
{
    if (c->state != C_APP || c->closed || c->closing || c->streaming)
        return false;
    c->keep_alive = false;
    c->streaming = true;
    char head[512];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nCache-Control: no-cache\r\n"
                     "Connection: close\r\n%s\r\n", status, status_text(status), content_type,
                     extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof head) {
        c->streaming = false;
        return false;
    }
    conn_write_raw(c, head, (size_t)n, false);
    return true;
}

bool http_stream_write(struct http_conn *c, const void *data, size_t len)
{
    if (c->state != C_APP || !c->streaming || c->closed || c->closing)
        return false;
    /* A reader that does not keep up loses its stream rather than growing our memory. */
    if (c->h.stream.write_queue_size + len > HTTP_STREAM_QUEUE_MAX) {
        conn_close(c);
        return false;
    }
    if (len)
        conn_write_raw(c, data, len, false);
    return !c->closing;
}

void http_stream_end(struct http_conn *c)
{
    if (!conn_take_response(c))
        return;
    c->state = C_WRITE;
    c->keep_alive = false;
    conn_request_done(c);
    if (c->closing)
        return;
    http_conn_set_deadline(c, conn_wait_ms(c));
    conn_write_raw(c, "", 0, true);
}

void http_respond_json(struct http_conn *c, int status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    if (!s) {
        static const char oom[] = "{\"code\":\"INTERNAL_ERROR\",\"message\":\"cannot encode response\"}";
        http_respond(c, 500, "application/json", NULL, oom, sizeof(oom) - 1);
        return;
    }
    http_respond(c, status, "application/json", NULL, s, strlen(s));
    free(s);
}

void http_respond_error(struct http_conn *c, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    http_respond_json(c, status, json_pack("{s:s, s:s}", "code", code, "message", msg));
}

void http_conn_mark_trusted(struct http_conn *c)
{
    if (c->trusted || c->closing)
        return;
    c->trusted = true;
    conn_untrust_release(c);
}

void http_conn_on_abort(struct http_conn *c, void (*cb)(struct http_conn *c, void *ud), void *ud)
{
    c->on_abort = cb;
    c->abort_ud = ud;
}

void http_server_set_raw_body(struct http_server *s, bool (*want)(const char *method, const char *url))
{
    s->raw_want = want;
}

int http_conn_detach(struct http_conn *c, uint8_t **pending, size_t *pending_len)
{
    *pending = NULL;
    *pending_len = 0;
    if (c->state != C_APP || c->closing || c->detached || c->streaming)
        return -EINVAL;
    uv_os_fd_t fd;
    if (uv_fileno(&c->h.handle, &fd) < 0)
        return -EBADF;
    /* A duplicate: libuv keeps its handle on the original, the app polls its own. */
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (dup < 0)
        return -errno;
    http_conn_read(c, false);
    c->detached = true;
    c->keep_alive = false;
    *pending = c->pending;
    *pending_len = c->pending_len;
    c->pending = NULL;
    c->pending_len = 0;
    if (c->kicked) {
        link_del(&c->kick_node);
        c->kicked = false;
    }
    return dup;
}

const struct http_request *http_conn_request(struct http_conn *c)
{
    return c->state == C_APP ? &c->req : NULL;
}

bool http_conn_start_ws(struct http_conn *c, struct ws_conn *w, const char *head, size_t len)
{
    if (!conn_take_response(c))
        return false;
    if (c->closing) {  /* closed moments ago: on_conn_closed frees it when not in C_APP */
        c->state = C_WRITE;
        return false;
    }
    c->state = C_WS;
    c->ws = w;
    c->deadline = 0;
    conn_write_raw(c, head, len, false);
    conn_request_done(c);  /* after the write: head may be built from the request */
    if (!c->closing)
        http_conn_resume(c);
    return true;
}

/* ---------- budgets: who may hold a connection ---------- */

/* Tells the client why in one best-effort write (nothing is queued for someone we drop), then
 * closes: the client sees the answer, then our FIN (or a RST if it left input we never read). */
static void conn_bounce(struct http_conn *c, int status, const char *code, const char *msg)
{
    if (c->closing)
        return;
    if (c->state == C_READ) {  /* not into a response being written, nor after our FIN */
        char body[256], out[512];
        int bl = snprintf(body, sizeof(body), "{\"code\":\"%s\",\"message\":\"%s\"}", code, msg);
        int n = snprintf(out, sizeof(out),
                         "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         "Connection: close\r\n%s\r\n%s",
                         status, status_text(status), bl, status == 503 ? "Retry-After: 1\r\n" : "", body);
        uv_buf_t b = uv_buf_init(out, (unsigned)n);
        (void)uv_try_write(&c->h.stream, &b, 1);
    }
    conn_close(c);
}

/* A deadline passed: mid-request the client learns it was too slow; an idle keep-alive conn just goes. */
static void conn_expire(struct http_conn *c)
{
    if (c->state == C_READ && c->got_bytes)
        conn_bounce(c, 408, "REQUEST_TIMEOUT", c->trusted ? "the request did not arrive in time"
                    : "the request did not arrive in time; unauthenticated connections must send it whole "
                      "within the server's request timeout");
    else
        conn_close(c);
}

/* The oldest untrusted conn on list (linked through untrusted_node, or peer_node when by_peer) that can
 * go now. One the app holds (C_APP) stays: the app owes it a response. */
static struct http_conn *oldest_evictable(struct link *list, bool by_peer)
{
    for (struct link *l = list->next; l != list; l = l->next) {
        struct http_conn *c = by_peer ? container_of(l, struct http_conn, peer_node)
                                      : container_of(l, struct http_conn, untrusted_node);
        if (c->state != C_APP)
            return c;
    }
    return NULL;
}

/* Finds c a slot, displacing an untrusted conn if need be; false if c was refused (and closed).
 * A full budget displaces the oldest untrusted conn rather than refusing the new one: refusing would
 * let a flood keep the budget by refilling each slot the moment it frees, and shut out everyone who
 * shares its address (loopback, a NAT); displacing costs an honest client nothing unless a whole
 * budget's worth of connections arrive while it sends its first request. */
static bool conn_admit(struct http_conn *c)
{
    struct http_server *s = c->srv;
    struct peer_key key;
    if (!c->trusted) {
        union {
            struct sockaddr sa;
            struct sockaddr_storage ss;
        } addr;
        int len = sizeof(addr);
        if (uv_tcp_getpeername(&c->h.tcp, &addr.sa, &len) < 0 || peer_key_from_sockaddr(&addr.sa, &key) < 0) {
            conn_close(c);  /* gone already */
            return false;
        }
        struct peer *p = peer_find(s->peers, &key);
        if (p && p->n >= s->lim.max_conns_per_ip) {
            struct http_conn *old = oldest_evictable(&p->conns, true);
            if (!old) {
                conn_bounce(c, 503, "TOO_MANY_CONNECTIONS", "too many unauthenticated connections from this address");
                return false;
            }
            conn_bounce(old, 503, "TOO_MANY_CONNECTIONS",
                        "too many unauthenticated connections from this address; this was the oldest");
        }
    }
    if (s->n_open >= s->lim.max_conns) {
        struct http_conn *old = oldest_evictable(&s->untrusted, false);
        if (!old) {  /* every slot is trusted, or held by the app */
            conn_bounce(c, 503, "TOO_MANY_CONNECTIONS", "the server has no connection to spare");
            return false;
        }
        conn_bounce(old, 503, "TOO_MANY_CONNECTIONS",
                    "the server's connections are all taken; this was the oldest unauthenticated one");
    }
    if (!c->trusted) {
        c->peer = peer_attach(s->peers, &key, &c->peer_node);
        if (!c->peer) {
            conn_bounce(c, 503, "OUT_OF_MEMORY", "out of memory");
            return false;
        }
        link_add(&s->untrusted, &c->untrusted_node);
    }
    c->counted = true;
    s->n_open++;
    return true;
}

void http_server_set_limits(struct http_server *s, const struct http_limits *l)
{
    s->lim = *l;
    if (s->lim.max_conns == 0)
        s->lim.max_conns = 1;
    if (s->lim.max_conns_per_ip == 0)
        s->lim.max_conns_per_ip = 1;
    if (s->lim.request_timeout_ms == 0)
        s->lim.request_timeout_ms = HTTP_REQUEST_TIMEOUT_MS;
}

/* ---------- servers ---------- */

static void on_sweep(uv_timer_t *t)
{
    struct http_server *s = container_of(t, struct http_server, sweep);
    uint64_t now = uv_now(s->loop);
    for (struct link *l = s->conns.next; l != &s->conns;) {
        struct http_conn *c = container_of(l, struct http_conn, node);
        l = l->next;
        if (c->closing)
            continue;
        if (c->state == C_WRITE && c->trusted) {  /* a slow reader that still makes progress keeps its conn */
            size_t q = uv_stream_get_write_queue_size(&c->h.stream);
            if (q != c->wq_mark) {
                c->wq_mark = q;
                http_conn_set_deadline(c, HTTP_IDLE_TIMEOUT_MS);
            }
        }
        if (c->deadline && now >= c->deadline)
            conn_expire(c);
    }
}

static void on_server_handle_closed(uv_handle_t *h)
{
    struct http_server *s = h->data;
    s->open_handles--;
    server_maybe_free(s);
}

static void server_maybe_free(struct http_server *s)
{
    if (s->closing && s->open_handles == 0 && s->n_conns == 0) {
        peer_table_free(s->peers);
        free(s->unix_path);
        free(s);
    }
}

static void on_rejected_closed(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct http_server *s = ls->data;
    if (status < 0 || s->closing)
        return;
    bool is_unix = ls->type == UV_NAMED_PIPE;
    struct http_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        /* Still accept: libuv stops watching the listener until the connection is taken. */
        union stream_handle *tmp = malloc(sizeof(*tmp));
        if (!tmp)
            return;
        if (is_unix)
            uv_pipe_init(s->loop, &tmp->pipe, 0);
        else
            uv_tcp_init(s->loop, &tmp->tcp);
        uv_accept(ls, &tmp->stream);
        uv_close(&tmp->handle, on_rejected_closed);
        return;
    }
    c->srv = s;
    link_init(&c->kick_node);
    link_init(&c->untrusted_node);
    link_init(&c->peer_node);
    link_add(&s->conns, &c->node);
    s->n_conns++;
    if (is_unix)
        uv_pipe_init(s->loop, &c->h.pipe, 0);
    else
        uv_tcp_init(s->loop, &c->h.tcp);
    c->state = C_READ;
    reset_request(c);
    if (uv_accept(ls, &c->h.stream) < 0) {
        conn_close(c);
        return;
    }
    c->trusted = is_unix;  /* the socket is root's alone (mode 0600) */
    if (!conn_admit(c))
        return;
    if (!is_unix)
        uv_tcp_nodelay(&c->h.tcp, 1);  /* RPC replies are small and latency-bound */
    http_conn_set_deadline(c, conn_wait_ms(c));
    http_conn_read(c, true);
}

static struct http_server *server_new(uv_loop_t *loop, http_request_cb cb, void *ud)
{
    struct http_server *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->loop = loop;
    s->cb = cb;
    s->ud = ud;
    link_init(&s->conns);
    link_init(&s->kicks);
    link_init(&s->spent);
    link_init(&s->untrusted);
    s->lim = (struct http_limits){ HTTP_MAX_CONNS, HTTP_MAX_CONNS_PER_IP, HTTP_REQUEST_TIMEOUT_MS };
    uv_timer_init(loop, &s->sweep);
    uv_idle_init(loop, &s->kick);
    s->sweep.data = s;
    s->kick.data = s;
    s->open_handles = 2;
    return s;
}

static int server_start(struct http_server *s, struct hx_err *e, const char *what)
{
    s->lis.handle.data = s;
    int r = uv_listen(&s->lis.stream, 511, on_connection);
    if (r < 0) {
        hx_fail(e, -r, "listen on %s: %s", what, uv_strerror(r));
        http_server_close(s);
        return r;
    }
    uv_timer_start(&s->sweep, on_sweep, HTTP_SWEEP_MS, HTTP_SWEEP_MS);
    return 0;
}

int http_server_listen_tcp(uv_loop_t *loop, const char *host, int port, http_request_cb cb, void *ud,
                           struct http_server **out, struct hx_err *e)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_storage ss;
    } addr;
    char what[128];
    snprintf(what, sizeof(what), "%s:%d", host, port);
    if (port < 0 || port > 65535)
        return hx_fail(e, EINVAL, "bad listen port in %s", what);
    int r = strchr(host, ':') ? uv_ip6_addr(host, port, &addr.in6) : uv_ip4_addr(host, port, &addr.in4);
    if (r < 0)
        return hx_fail(e, EINVAL, "bad listen address %s (an IPv4 or IPv6 literal)", host);
    struct peer_table *peers = peer_table_new();
    struct http_server *s = peers ? server_new(loop, cb, ud) : NULL;
    if (!s) {
        peer_table_free(peers);
        return hx_fail(e, ENOMEM, "allocate server for %s", what);
    }
    s->peers = peers;
    uv_tcp_init(loop, &s->lis.tcp);
    s->lis.handle.data = s;
    s->open_handles++;
    r = uv_tcp_bind(&s->lis.tcp, &addr.sa, 0);
    if (r < 0) {
        hx_fail(e, -r, "bind %s: %s", what, uv_strerror(r));
        http_server_close(s);
        return r;
    }
    r = server_start(s, e, what);
    if (r < 0)
        return r;
    int len = sizeof(addr);
    if (uv_tcp_getsockname(&s->lis.tcp, &addr.sa, &len) == 0)
        s->port = ntohs(addr.sa.sa_family == AF_INET6 ? addr.in6.sin6_port : addr.in4.sin_port);
    *out = s;
    return 0;
}

int http_server_listen_unix(uv_loop_t *loop, const char *path, http_request_cb cb, void *ud,
                            struct http_server **out, struct hx_err *e)
{
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return hx_fail(e, EEXIST, "listen on %s: exists and is not a socket", path);
        if (unlink(path) < 0)  /* stale socket of an earlier run */
            return hx_fail(e, errno, "remove stale socket %s: %m", path);
    }
    struct http_server *s = server_new(loop, cb, ud);
    if (!s)
        return hx_fail(e, ENOMEM, "allocate server for %s", path);
    s->unix_peer = true;
    uv_pipe_init(loop, &s->lis.pipe, 0);
    s->lis.handle.data = s;
    s->open_handles++;
    /* Root only from the first moment: no window where the umask's default mode applies. */
    mode_t old = umask(0177);
    int r = uv_pipe_bind(&s->lis.pipe, path);
    umask(old);
    if (r < 0) {
        hx_fail(e, -r, "bind %s: %s", path, uv_strerror(r));
        http_server_close(s);
        return r;
    }
    s->unix_path = strdup(path);
    if (!s->unix_path || chmod(path, 0600) < 0) {
        hx_fail(e, s->unix_path ? errno : ENOMEM, "chmod 0600 %s: %m", path);
        http_server_close(s);
        return -e->code;
    }
    r = server_start(s, e, path);
    if (r < 0)
        return r;
    *out = s;
    return 0;
}

int http_server_port(const struct http_server *s)
{
    return s->port;
}

void http_server_close(struct http_server *s)
{
    if (!s || s->closing)
        return;
    s->closing = true;
    if (s->unix_path)
        unlink(s->unix_path);
    uv_close((uv_handle_t *)&s->sweep, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->kick, on_server_handle_closed);
    if (s->open_handles > 2)
        uv_close(&s->lis.handle, on_server_handle_closed);
    for (struct link *l = s->conns.next; l != &s->conns; l = l->next)
        conn_close(container_of(l, struct http_conn, node));
}
