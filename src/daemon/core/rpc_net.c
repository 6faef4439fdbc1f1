/* sandbox.fetch: an HTTP(S) request made from the sandbox's network position.
 * The TCP socket (and the DNS query) are born in the sandbox's netns, so the
 * request leaves through its eth0 → nftables → hutch-proxy: same allowNet,
 * same secret substitution/masking, same audit and counts as sandbox code. */
#include <arpa/inet.h>
#include <ctype.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "daemon/api/ws.h"
#include "daemon/core/deno.h"
#include "daemon/core/rpc.h"
#include "daemon/core/sandbox.h"
#include "daemon/net/ca.h"
#include "daemon/net/net.h"
#include "lib/b64.h"

#define FETCH_MAX 64                 /* fetches in flight per session */
#define HEAD_MAX (64u * 1024)        /* response head bytes */
#define HEADERS_MAX 256              /* response header lines */
#define FIELD_MAX 8192               /* one header name or value */
#define REDIRECTS_MAX 20             /* as browsers and undici */
#define DEADLINE_MS 60000            /* no progress for this long: the fetch fails */
#define ENQUEUE_CHUNK (48u * 1024)   /* response bytes per stream.enqueue */
#define POLL_MS 10                   /* client socket backed up: look again this often */

struct fetch;

/* One connection attempt (a redirect makes a new one); freed when its
 * handles are closed. */
struct fconn {
    struct fetch *f;                 /* NULL once detached */
    uv_udp_t udp;
    uv_tcp_t tcp;
    uv_connect_t creq;
    bool udp_init, tcp_init;
    int handles;
    uint16_t dns_id;
    SSL *ssl;
    BIO *rbio, *wbio;                /* network → TLS, TLS → network */
    bool connected, reading;
};

struct wreq {
    uv_write_t req;
    struct fetch *f;
    size_t credit;                   /* request body bytes this write completes */
    char data[];
};

struct fetch {
    struct fetch *next;
    struct session *s;
    struct sandbox *sb;
    json_t *rpc_id;
    int64_t abort_id;                /* the client's abortId, or -1 */
    /* request */
    char method[32];
    bool tls, follow, head_only;
    char host[256];                  /* without brackets */
    uint16_t port;
    uint16_t pid_port;               /* DenoProcess.fetch: that process's port on the sandbox's loopback, 0 = none */
    char *path;                      /* origin-form target */
    json_t *headers;                 /* [[name, value]...] as given (validated) */
    uint32_t body_chan;              /* 0 = no body */
    bool body_ended;
    uint8_t *pend;                   /* plaintext to send (head, body chunks) */
    size_t pend_len, pend_cap, pend_credit; /* credit: body bytes inside pend */
    int redirects;
    struct fconn *c;
    uv_timer_t timer;
    bool timer_init;
    /* response */
    http_parser parser;
    bool replied, done, failed, redirecting;
    uint64_t stream_id;
    json_t *rh;                      /* response headers */
    char status_text[128];
    size_t status_len, head_bytes;
    char field[FIELD_MAX + 1], value[FIELD_MAX + 1];
    size_t field_len, value_len;
    bool in_value;
    char location[2048];
};

static struct fetch *g_fetches;
static uint32_t g_next_chan = RPC_NET_CHAN_BASE;
static SSL_CTX *g_ctx;

static void fetch_start_conn(struct fetch *f);
static void fetch_fail(struct fetch *f, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fetch_finish(struct fetch *f);

/* ---- small helpers --------------------------------------------------- */

static bool is_token(const char *p)
{
    if (!*p)
        return false;
    for (; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("!#$%&'*+-.^_`|~", *p)))
            return false;
    return true;
}

static bool is_field_value(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
            return false;
    return true;
}

static int pend_add(struct fetch *f, const void *p, size_t n, size_t credit)
{
    if (f->pend_len + n > f->pend_cap) {
        size_t cap = f->pend_cap ? f->pend_cap : 4096;
        while (cap < f->pend_len + n)
            cap *= 2;
        uint8_t *np = realloc(f->pend, cap);
        if (!np)
            return -ENOMEM;
        f->pend = np;
        f->pend_cap = cap;
    }
    memcpy(f->pend + f->pend_len, p, n);
    f->pend_len += n;
    f->pend_credit += credit;
    return 0;
}

/* Parses http(s)://host[:port][/path][?query] (no userinfo; a fragment is
 * dropped). */
static int parse_url(struct fetch *f, const char *url, struct hx_err *e)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    size_t ul = strlen(url);
    if (ul > 8192 || http_parser_parse_url(url, ul, 0, &u) != 0)
        return hx_fail(e, EINVAL, "invalid URL");
    if (!(u.field_set & (1 << UF_SCHEMA)) || !(u.field_set & (1 << UF_HOST)))
        return hx_fail(e, EINVAL, "URL needs a scheme and a host");
    if (u.field_set & (1 << UF_USERINFO))
        return hx_fail(e, EINVAL, "credentials in the URL are not supported");
    const char *sch = url + u.field_data[UF_SCHEMA].off;
    size_t sl = u.field_data[UF_SCHEMA].len;
    if (sl == 4 && strncasecmp(sch, "http", 4) == 0)
        f->tls = false;
    else if (sl == 5 && strncasecmp(sch, "https", 5) == 0)
        f->tls = true;
    else
        return hx_fail(e, EINVAL, "only http and https URLs can be fetched");
    size_t hl = u.field_data[UF_HOST].len;
    if (hl == 0 || hl >= sizeof f->host)
        return hx_fail(e, EINVAL, "bad host in URL");
    memcpy(f->host, url + u.field_data[UF_HOST].off, hl);
    f->host[hl] = 0;
    for (char *h = f->host; *h; h++)
        *h = (char)tolower((unsigned char)*h);
    f->port = (u.field_set & (1 << UF_PORT)) ? u.port : (f->tls ? 443 : 80);
    if (f->port == 0)
        return hx_fail(e, EINVAL, "bad port in URL");
    const char *path = "/";
    size_t pl = 1;
    if (u.field_set & (1 << UF_PATH)) {
        path = url + u.field_data[UF_PATH].off;
        pl = u.field_data[UF_PATH].len;
    }
    size_t ql = (u.field_set & (1 << UF_QUERY)) ? u.field_data[UF_QUERY].len + 1 : 0;
    char *np = malloc(pl + ql + 1);
    if (!np)
        return hx_fail(e, ENOMEM, "out of memory");
    memcpy(np, path, pl);
    if (ql)
        memcpy(np + pl, url + u.field_data[UF_QUERY].off - 1, ql);
    np[pl + ql] = 0;
    for (char *q = np; *q; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f)
            *q = '_'; /* http_parser allows none of these; belt and braces */
    free(f->path);
    f->path = np;
    return 0;
}

/* ---- lifetime --------------------------------------------------------- */

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct fconn *c = h->data;
    if (--c->handles == 0) {
        SSL_free(c->ssl); /* frees both BIOs */
        free(c);
    }
}

static void conn_close(struct fconn *c)
{
    if (!c)
        return;
    c->f = NULL;
    c->handles = 1; /* held until both closes below ran */
    if (c->udp_init) {
        c->handles++;
        uv_close((uv_handle_t *)&c->udp, on_conn_handle_closed);
    }
    if (c->tcp_init) {
        c->handles++;
        uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    }
    if (--c->handles == 0) {
        SSL_free(c->ssl);
        free(c);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    struct fetch *f = h->data;
    json_decref(f->rpc_id);
    json_decref(f->headers);
    json_decref(f->rh);
    free(f->path);
    free(f->pend);
    free(f);
}

/* Drops the fetch without answering more (done, failed, or its session left). */
static void fetch_free(struct fetch *f)
{
    for (struct fetch **pp = &g_fetches; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    if (f->sb && f->pend_credit) { /* body bytes never sent: release the client */
        f->sb->stdin_inflight -= f->pend_credit < f->sb->stdin_inflight ? f->pend_credit : f->sb->stdin_inflight;
        f->pend_credit = 0;
        rpc_on_stdin_ack(f->sb);
    }
    conn_close(f->c);
    f->c = NULL;
    f->done = true;
    if (f->timer_init)
        uv_close((uv_handle_t *)&f->timer, on_timer_closed);
    else
        on_timer_closed((uv_handle_t *)&f->timer);
}

static void fetch_fail(struct fetch *f, const char *code, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (f->s) {
        if (!f->replied)
            rpc_reply_result(f->s, f->rpc_id, rpc_app_error(code, "%s", msg));
        else if (f->stream_id)
            rpc_notify(f->s, "$sandbox.stream.error",
                       json_pack("{s:I, s:{s:s, s:s, s:s}}", "streamId", (json_int_t)f->stream_id, "error",
                                 "constructorName", "Error", "message", msg, "code", code));
    }
    fetch_free(f);
}

static void fetch_finish(struct fetch *f)
{
    if (f->s && f->stream_id)
        rpc_notify(f->s, "$sandbox.stream.end", json_pack("{s:I}", "streamId", (json_int_t)f->stream_id));
    fetch_free(f);
}

/* ---- sending ---------------------------------------------------------- */

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct fetch *f = w->f;
    if (w->credit) {
        /* f may be gone; the sandbox's counter is what the client waits on */
        for (struct fetch *x = g_fetches; x; x = x->next)
            if (x == f && f->sb) {
                f->sb->stdin_inflight -= w->credit < f->sb->stdin_inflight ? w->credit : f->sb->stdin_inflight;
                rpc_on_stdin_ack(f->sb);
            }
    }
    free(w);
    (void)status; /* a failed write shows up as a read error / EOF */
}

static int conn_write(struct fetch *f, const void *p, size_t n, size_t credit)
{
    struct wreq *w = malloc(sizeof *w + n);
    if (!w)
        return -ENOMEM;
    w->f = f;
    w->credit = credit;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int r = uv_write(&w->req, (uv_stream_t *)&f->c->tcp, &b, 1, on_written);
    if (r < 0) {
        free(w);
        return r;
    }
    return 0;
}

/* Moves what can go now: plaintext straight, or through TLS once the
 * handshake is done; then the TLS engine's output to the socket. */
static int pump(struct fetch *f)
{
    struct fconn *c = f->c;
    if (!c || !c->connected)
        return 0;
    if (!f->tls) {
        if (f->pend_len) {
            int r = conn_write(f, f->pend, f->pend_len, f->pend_credit);
            f->pend_len = 0;
            f->pend_credit = 0;
            return r;
        }
        return 0;
    }
    size_t credit = 0;
    if (!SSL_is_init_finished(c->ssl)) {
        int r = SSL_do_handshake(c->ssl);
        if (r <= 0) {
            int err = SSL_get_error(c->ssl, r);
            if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
                unsigned long ec = ERR_peek_last_error();
                long vr = SSL_get_verify_result(c->ssl);
                char buf[160];
                ERR_error_string_n(ec, buf, sizeof buf);
                ERR_clear_error();
                fetch_fail(f, "InvalidData", "TLS handshake with %s failed: %s%s%s", f->host, buf,
                           vr != X509_V_OK ? ": " : "", vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
                return -EPROTO;
            }
        }
    }
    if (SSL_is_init_finished(c->ssl) && f->pend_len) {
        size_t off = 0;
        while (off < f->pend_len) {
            int r = SSL_write(c->ssl, f->pend + off, (int)(f->pend_len - off > 65536 ? 65536 : f->pend_len - off));
            if (r <= 0)
                break;
            off += (size_t)r;
        }
        /* body credit leaves with the last bytes: exact enough for a bound */
        if (off == f->pend_len) {
            credit = f->pend_credit;
            f->pend_credit = 0;
        }
        memmove(f->pend, f->pend + off, f->pend_len - off);
        f->pend_len -= off;
    }
    char buf[16384];
    int n;
    while ((n = BIO_read(c->wbio, buf, sizeof buf)) > 0) {
        int r = conn_write(f, buf, (size_t)n, BIO_ctrl_pending(c->wbio) ? 0 : credit);
        if (r < 0)
            return r;
        if (!BIO_ctrl_pending(c->wbio))
            credit = 0;
    }
    if (credit && f->sb) { /* nothing left to write it with */
        f->sb->stdin_inflight -= credit < f->sb->stdin_inflight ? credit : f->sb->stdin_inflight;
        rpc_on_stdin_ack(f->sb);
    }
    return 0;
}

static int send_head(struct fetch *f)
{
    char line[1024];
    bool v6 = strchr(f->host, ':') != NULL;
    bool dflt = f->port == (f->tls ? 443 : 80);
    int n = snprintf(line, sizeof line, "%s ", f->method);
    if (pend_add(f, line, (size_t)n, 0) < 0 || pend_add(f, f->path, strlen(f->path), 0) < 0)
        return -ENOMEM;
    n = snprintf(line, sizeof line, " HTTP/1.1\r\nHost: %s%s%s%s%.0u\r\nConnection: close\r\n", v6 ? "[" : "",
                 f->host, v6 ? "]" : "", dflt ? "" : ":", dflt ? 0 : f->port);
    if (!dflt) /* %.0u prints nothing for 0: put the port in explicitly */
        n = snprintf(line, sizeof line, " HTTP/1.1\r\nHost: %s%s%s:%u\r\nConnection: close\r\n", v6 ? "[" : "",
                     f->host, v6 ? "]" : "", f->port);
    if (pend_add(f, line, (size_t)n, 0) < 0)
        return -ENOMEM;
    size_t i;
    json_t *h;
    json_array_foreach(f->headers, i, h) {
        const char *k = json_string_value(json_array_get(h, 0));
        json_t *jv = json_array_get(h, 1);
        /* framing and routing are ours */
        if (!strcasecmp(k, "host") || !strcasecmp(k, "content-length") || !strcasecmp(k, "transfer-encoding") ||
            !strcasecmp(k, "connection") || !strcasecmp(k, "keep-alive") || !strcasecmp(k, "upgrade") ||
            !strcasecmp(k, "te") || !strcasecmp(k, "trailer"))
            continue;
        if (pend_add(f, k, strlen(k), 0) < 0 || pend_add(f, ": ", 2, 0) < 0 ||
            pend_add(f, json_string_value(jv), json_string_length(jv), 0) < 0 || pend_add(f, "\r\n", 2, 0) < 0)
            return -ENOMEM;
    }
    const char *tail = "\r\n";
    if (f->body_chan)
        tail = "Transfer-Encoding: chunked\r\n\r\n";
    else if (strcmp(f->method, "POST") == 0 || strcmp(f->method, "PUT") == 0 || strcmp(f->method, "PATCH") == 0)
        tail = "Content-Length: 0\r\n\r\n";
    return pend_add(f, tail, strlen(tail), 0);
}

/* rpc.c hook: request body bytes (n == 0 and end: the body ended; end < 0:
 * the client's stream failed). */
void rpc_net_on_body(struct session *s, uint32_t chan, const uint8_t *p, size_t n, int end)
{
    struct fetch *f = g_fetches;
    while (f && !(f->s == s && f->body_chan == chan && !f->done))
        f = f->next;
    if (!f)
        return;
    if (end < 0) {
        fetch_fail(f, "ConnectionAborted", "the request body stream failed");
        return;
    }
    if (f->body_ended)
        return;
    if (n) {
        char hd[24];
        int hl = snprintf(hd, sizeof hd, "%zx\r\n", n);
        if (pend_add(f, hd, (size_t)hl, 0) < 0 || pend_add(f, p, n, n) < 0 || pend_add(f, "\r\n", 2, 0) < 0) {
            fetch_fail(f, "Busy", "out of memory for the request body");
            return;
        }
        s->sb->stdin_inflight += n; /* the client pauses while the upstream lags */
    }
    if (end) {
        f->body_ended = true;
        if (pend_add(f, "0\r\n\r\n", 5, 0) < 0) {
            fetch_fail(f, "Busy", "out of memory for the request body");
            return;
        }
    }
    if (pump(f) < 0 && !f->done)
        fetch_fail(f, "ConnectionReset", "writing to %s failed", f->host);
}

/* ---- response --------------------------------------------------------- */

static int push_header(struct fetch *f)
{
    if (!f->field_len)
        return 0;
    if (json_array_size(f->rh) >= HEADERS_MAX)
        return -1;
    f->field[f->field_len] = 0;
    f->value[f->value_len] = 0;
    for (size_t i = 0; i < f->field_len; i++)
        f->field[i] = (char)tolower((unsigned char)f->field[i]);
    /* the SDK's zod wants strings; bytes that are not UTF-8 become '?' */
    json_t *v = json_stringn(f->value, f->value_len);
    if (!v) {
        for (size_t i = 0; i < f->value_len; i++)
            if ((unsigned char)f->value[i] >= 0x80)
                f->value[i] = '?';
        v = json_stringn(f->value, f->value_len);
    }
    json_t *k = json_stringn(f->field, f->field_len);
    if (!k || !v) {
        json_decref(k);
        json_decref(v);
        return -1;
    }
    if (!strcmp(f->field, "location") && f->value_len < sizeof f->location)
        memcpy(f->location, f->value, f->value_len + 1);
    json_array_append_new(f->rh, json_pack("[o,o]", k, v));
    f->field_len = f->value_len = 0;
    f->in_value = false;
    return 0;
}

static int on_status(http_parser *p, const char *at, size_t n)
{
    struct fetch *f = p->data;
    size_t room = sizeof f->status_text - 1 - f->status_len;
    if (n > room)
        n = room;
    memcpy(f->status_text + f->status_len, at, n);
    f->status_len += n;
    f->status_text[f->status_len] = 0;
    return 0;
}

static int on_hfield(http_parser *p, const char *at, size_t n)
{
    struct fetch *f = p->data;
    if (f->in_value && push_header(f) < 0)
        return -1;
    if (f->field_len + n > FIELD_MAX)
        return -1;
    memcpy(f->field + f->field_len, at, n);
    f->field_len += n;
    return 0;
}

static int on_hvalue(http_parser *p, const char *at, size_t n)
{
    struct fetch *f = p->data;
    f->in_value = true;
    if (f->value_len + n > FIELD_MAX)
        return -1;
    memcpy(f->value + f->value_len, at, n);
    f->value_len += n;
    return 0;
}

static int on_headers_done(http_parser *p)
{
    struct fetch *f = p->data;
    if (push_header(f) < 0)
        return -1;
    unsigned st = p->status_code;
    if (st >= 100 && st < 200) { /* 100 Continue and friends: wait for the real one */
        json_array_clear(f->rh);
        f->status_len = 0;
        f->status_text[0] = 0;
        f->head_bytes = 0;
        return 0;
    }
    if (f->follow && !f->body_chan && f->location[0] && f->redirects < REDIRECTS_MAX &&
        (st == 301 || st == 302 || st == 303 || st == 307 || st == 308)) {
        f->redirecting = true;
        http_parser_pause(p, 1);
        return 1;
    }
    bool body = !f->head_only && st != 204 && st != 304;
    if (body)
        f->stream_id = ++g_daemon.next_stream_id;
    if (f->s) {
        if (body)
            rpc_notify(f->s, "$sandbox.stream.start", json_pack("{s:I}", "streamId", (json_int_t)f->stream_id));
        json_t *ok = json_pack("{s:i, s:s, s:O, s:o}", "status", (int)st, "statusText", f->status_text, "headers",
                               f->rh, "bodyStreamId", body ? json_integer((json_int_t)f->stream_id) : json_null());
        rpc_reply_result(f->s, f->rpc_id, json_pack("{s:o}", "ok", ok));
    }
    f->replied = true;
    return body ? 0 : 1;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct fetch *f = p->data;
    if (!f->s || !f->stream_id)
        return 0;
    while (n) {
        size_t k = n > ENQUEUE_CHUNK ? ENQUEUE_CHUNK : n;
        char *enc = malloc(hx_b64_encoded_len(k) + 1);
        if (!enc)
            return -1;
        hx_b64_encode((const uint8_t *)at, k, enc);
        rpc_notify(f->s, "$sandbox.stream.enqueue",
                   json_pack("{s:I, s:s}", "streamId", (json_int_t)f->stream_id, "data", enc));
        free(enc);
        at += k;
        n -= k;
    }
    return 0;
}

static int on_complete(http_parser *p)
{
    struct fetch *f = p->data;
    if (f->replied) {
        f->done = true; /* finished by the caller of http_parser_execute */
        http_parser_pause(p, 1);
    }
    return 0;
}

static const http_parser_settings g_settings = {
    .on_status = on_status,
    .on_header_field = on_hfield,
    .on_header_value = on_hvalue,
    .on_headers_complete = on_headers_done,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

/* Resolves f->location against the current URL and starts over. */
static void follow_redirect(struct fetch *f)
{
    char url[8192 + 600];
    const char *loc = f->location;
    bool v6 = strchr(f->host, ':') != NULL;
    char origin[400];
    snprintf(origin, sizeof origin, "%s://%s%s%s:%u", f->tls ? "https" : "http", v6 ? "[" : "", f->host,
             v6 ? "]" : "", f->port);
    if (!strncasecmp(loc, "http://", 7) || !strncasecmp(loc, "https://", 8))
        snprintf(url, sizeof url, "%s", loc);
    else if (loc[0] == '/' && loc[1] == '/')
        snprintf(url, sizeof url, "%s:%s", f->tls ? "https" : "http", loc);
    else if (loc[0] == '/')
        snprintf(url, sizeof url, "%s%s", origin, loc);
    else {
        const char *slash = strrchr(f->path, '/');
        int dl = slash ? (int)(slash - f->path) + 1 : 1;
        snprintf(url, sizeof url, "%s%.*s%s", origin, dl, slash ? f->path : "/", loc);
    }
    unsigned st = f->parser.status_code;
    if (st == 303 || ((st == 301 || st == 302) && strcmp(f->method, "POST") == 0)) {
        if (strcmp(f->method, "HEAD") != 0)
            snprintf(f->method, sizeof f->method, "GET");
    }
    struct hx_err e = {0};
    char old_origin[400];
    snprintf(old_origin, sizeof old_origin, "%s", origin);
    if (parse_url(f, url, &e) < 0) {
        fetch_fail(f, "InvalidData", "redirect to a bad location: %s", e.msg);
        return;
    }
    /* Credentials are for the origin they were given to (as fetch does):
     * a redirect to another scheme, host or port goes without them. */
    v6 = strchr(f->host, ':') != NULL;
    snprintf(origin, sizeof origin, "%s://%s%s%s:%u", f->tls ? "https" : "http", v6 ? "[" : "", f->host,
             v6 ? "]" : "", f->port);
    if (strcasecmp(origin, old_origin) != 0) {
        f->pid_port = 0; /* a DenoProcess.fetch redirected elsewhere leaves that process */
        json_t *kept = json_array();
        size_t i;
        json_t *h;
        json_array_foreach(f->headers, i, h) {
            const char *name = json_string_value(json_array_get(h, 0));
            if (name && (!strcasecmp(name, "authorization") || !strcasecmp(name, "cookie") ||
                         !strcasecmp(name, "proxy-authorization")))
                continue;
            json_array_append(kept, h);
        }
        json_decref(f->headers);
        f->headers = kept;
    }
    f->redirects++;
    conn_close(f->c);
    f->c = NULL;
    fetch_start_conn(f);
}

static void feed(struct fetch *f, const char *p, size_t n)
{
    if (!f->replied) {
        f->head_bytes += n;
        if (f->head_bytes > HEAD_MAX + 16384) {
            fetch_fail(f, "InvalidData", "response head from %s too large", f->host);
            return;
        }
    }
    size_t used = http_parser_execute(&f->parser, &g_settings, p, n);
    if (f->redirecting) {
        follow_redirect(f);
        return;
    }
    if (f->done) {
        fetch_finish(f);
        return;
    }
    enum http_errno he = HTTP_PARSER_ERRNO(&f->parser);
    if (he == HPE_OK && used != n && f->replied && !f->stream_id) { /* head-only answer */
        fetch_finish(f);
        return;
    }
    if (he != HPE_OK && he != HPE_PAUSED) {
        if (f->replied && !f->stream_id) {
            fetch_finish(f);
            return;
        }
        fetch_fail(f, "InvalidData", "bad HTTP response from %s: %s", f->host, http_errno_description(he));
    }
}

/* ---- connection ------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h;
    (void)hint;
    b->base = malloc(65536);
    b->len = b->base ? 65536 : 0;
}

static void backpressure_check(struct fetch *f);
static void on_timer(uv_timer_t *t);

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct fconn *c = st->data;
    struct fetch *f = c->f;
    if (!f) {
        free(b->base);
        return;
    }
    uv_timer_again(&f->timer);
    if (nread < 0) {
        free(b->base);
        if (nread != UV_EOF) {
            fetch_fail(f, "ConnectionReset", "connection to %s failed: %s", f->host, uv_strerror((int)nread));
            return;
        }
        if (!f->tls || !c->ssl || SSL_is_init_finished(c->ssl))
            feed(f, NULL, 0); /* EOF: ends a read-until-close body */
        else {
            fetch_fail(f, "ConnectionReset", "connection to %s closed during the TLS handshake", f->host);
            return;
        }
        for (struct fetch *x = g_fetches; x; x = x->next)
            if (x == f) { /* still here: EOF before the response ended */
                if (!f->replied)
                    fetch_fail(f, "ConnectionReset", "connection to %s closed before a response", f->host);
                else
                    fetch_fail(f, "UnexpectedEof", "connection to %s closed in the middle of the body", f->host);
                break;
            }
        return;
    }
    if (nread == 0) {
        free(b->base);
        return;
    }
    if (!f->tls) {
        feed(f, b->base, (size_t)nread);
        free(b->base);
    } else {
        BIO_write(c->rbio, b->base, (int)nread);
        free(b->base);
        if (pump(f) < 0)
            return;
        char buf[16384];
        for (;;) {
            if (f->c != c || f->done)
                return;
            int r = SSL_read(c->ssl, buf, sizeof buf);
            if (r <= 0) {
                int err = SSL_get_error(c->ssl, r);
                if (err == SSL_ERROR_ZERO_RETURN) { /* close_notify: as EOF */
                    feed(f, NULL, 0);
                    for (struct fetch *x = g_fetches; x; x = x->next)
                        if (x == f && f->c == c) {
                            fetch_fail(f, "UnexpectedEof", "connection to %s closed early", f->host);
                            break;
                        }
                    return;
                }
                if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
                    ERR_clear_error();
                    fetch_fail(f, "InvalidData", "TLS error from %s", f->host);
                    return;
                }
                break;
            }
            bool alive = false;
            feed(f, buf, (size_t)r);
            for (struct fetch *x = g_fetches; x; x = x->next)
                alive |= x == f;
            if (!alive)
                return;
        }
        if (pump(f) < 0)
            return;
    }
    for (struct fetch *x = g_fetches; x; x = x->next)
        if (x == f && f->c == c) {
            backpressure_check(f);
            break;
        }
}

/* The client's socket is backed up: stop reading the upstream until it drains. */
static void backpressure_check(struct fetch *f)
{
    struct fconn *c = f->c;
    if (!c || !c->tcp_init || !c->reading || !f->s || !f->s->ws)
        return;
    if (ws_queued_bytes(f->s->ws) > WS_HIGH_WATER) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
        uv_timer_start(&f->timer, on_timer, POLL_MS, 0);
    }
}

static void on_timer(uv_timer_t *t)
{
    struct fetch *f = t->data;
    struct fconn *c = f->c;
    if (c && c->tcp_init && !c->reading && f->replied) { /* paused by backpressure */
        if (!f->s || !f->s->ws || ws_queued_bytes(f->s->ws) <= WS_HIGH_WATER / 2) {
            c->reading = true;
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
            uv_timer_start(&f->timer, on_timer, DEADLINE_MS, DEADLINE_MS);
        } else {
            uv_timer_start(&f->timer, on_timer, POLL_MS, 0);
        }
        return;
    }
    fetch_fail(f, "TimedOut", "no progress from %s for %d s", f->host, DEADLINE_MS / 1000);
}

static void on_connected(uv_connect_t *req, int status)
{
    struct fconn *c = req->data;
    struct fetch *f = c->f;
    if (!f)
        return;
    if (status < 0) {
        fetch_fail(f, status == UV_ECONNREFUSED ? "ConnectionRefused" : "ConnectionReset",
                   "connecting to %s:%u from the sandbox failed: %s", f->host, f->port, uv_strerror(status));
        return;
    }
    if (f->tls) {
        c->ssl = SSL_new(g_ctx);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        if (!c->ssl || !c->rbio || !c->wbio) {
            BIO_free(c->rbio);
            BIO_free(c->wbio);
            fetch_fail(f, "Busy", "out of memory for TLS");
            return;
        }
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_connect_state(c->ssl);
        struct in6_addr tmp;
        bool ip = inet_pton(AF_INET, f->host, &tmp) == 1 || inet_pton(AF_INET6, f->host, &tmp) == 1;
        if (!ip)
            SSL_set_tlsext_host_name(c->ssl, f->host);
        X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
        if (ip)
            X509_VERIFY_PARAM_set1_ip_asc(vp, f->host);
        else
            X509_VERIFY_PARAM_set1_host(vp, f->host, 0);
        SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    }
    c->connected = c->reading = true;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (pump(f) < 0 && !f->done)
        fetch_fail(f, "ConnectionReset", "writing to %s failed", f->host);
}

static void connect_addr(struct fetch *f, int family, const void *addr)
{
    struct fconn *c = f->c;
    struct hx_err e = {0};
    int fd = net_sandbox_socket(f->sb, family, SOCK_STREAM, &e);
    if (fd < 0) {
        fetch_fail(f, "NetworkUnreachable", "%s", e.msg);
        return;
    }
    uv_tcp_init(g_daemon.loop, &c->tcp);
    c->tcp.data = c;
    c->tcp_init = true;
    if (uv_tcp_open(&c->tcp, fd) < 0) {
        close(fd);
        fetch_fail(f, "Busy", "cannot use the socket");
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss = {0};
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(f->pid_port ? f->pid_port : f->port);
        memcpy(&sin->sin_addr, addr, 4);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(f->port);
        memcpy(&sin6->sin6_addr, addr, 16);
    }
    c->creq.data = c;
    int r = uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&ss, on_connected);
    if (r < 0)
        fetch_fail(f, "ConnectionRefused", "connecting to %s failed: %s", f->host, uv_strerror(r));
}

/* DNS: one A question to the sandbox's own resolver (the proxy's responder:
 * it answers only names the sandbox's policy allows). The answer is hostile
 * input, parsed with bounds. */
static int dns_answer_a(const uint8_t *p, size_t n, uint16_t id, uint8_t out[4], int *rcode)
{
    if (n < 12 || ((p[0] << 8) | p[1]) != id || !(p[2] & 0x80))
        return -1;
    *rcode = p[3] & 0x0f;
    unsigned qd = (p[4] << 8) | p[5], an = (p[6] << 8) | p[7];
    size_t off = 12;
    for (unsigned i = 0; i < qd; i++) { /* skip the question(s): name, type, class */
        while (off < n && p[off] != 0) {
            if ((p[off] & 0xc0) == 0xc0) {
                off++;
                break;
            }
            off += (size_t)p[off] + 1;
        }
        off += 1 + 4;
        if (off > n)
            return -1;
    }
    for (unsigned i = 0; i < an && off < n; i++) {
        while (off < n && p[off] != 0) {
            if ((p[off] & 0xc0) == 0xc0) {
                off++;
                break;
            }
            off += (size_t)p[off] + 1;
        }
        off++;
        if (off + 10 > n)
            return -1;
        unsigned type = (p[off] << 8) | p[off + 1], cls = (p[off + 2] << 8) | p[off + 3];
        size_t rdl = ((size_t)p[off + 8] << 8) | p[off + 9];
        off += 10;
        if (off + rdl > n)
            return -1;
        if (type == 1 && cls == 1 && rdl == 4) {
            memcpy(out, p + off, 4);
            return 0;
        }
        off += rdl;
    }
    return -1;
}

static void on_dns_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    struct fconn *c = h->data;
    static char buf[1500];
    (void)c;
    b->base = buf;
    b->len = sizeof buf;
}

static void on_dns(uv_udp_t *u, ssize_t nread, const uv_buf_t *b, const struct sockaddr *from, unsigned flags)
{
    struct fconn *c = u->data;
    struct fetch *f = c->f;
    (void)flags;
    if (!f || nread <= 0 || !from)
        return;
    uint8_t a[4];
    int rcode = 0;
    if (dns_answer_a((const uint8_t *)b->base, (size_t)nread, c->dns_id, a, &rcode) < 0) {
        if (nread >= 12 && (((uint8_t)b->base[0] << 8) | (uint8_t)b->base[1]) == c->dns_id)
            fetch_fail(f, "NotFound", "%s does not resolve in the sandbox (%s)", f->host,
                       rcode == 3 ? "not allowed by allowNet, or no such name" : "no IPv4 address");
        return;
    }
    uv_udp_recv_stop(u);
    connect_addr(f, AF_INET, a);
}

static void resolve(struct fetch *f)
{
    struct fconn *c = f->c;
    uint8_t gw[4];
    if (net_sandbox_resolver(f->sb, gw) < 0) {
        fetch_fail(f, "NotFound", "%s does not resolve: the sandbox has no network", f->host);
        return;
    }
    struct hx_err e = {0};
    int fd = net_sandbox_socket(f->sb, AF_INET, SOCK_DGRAM, &e);
    if (fd < 0) {
        fetch_fail(f, "NetworkUnreachable", "%s", e.msg);
        return;
    }
    uv_udp_init(g_daemon.loop, &c->udp);
    c->udp.data = c;
    c->udp_init = true;
    if (uv_udp_open(&c->udp, fd) < 0) {
        close(fd);
        fetch_fail(f, "Busy", "cannot use the DNS socket");
        return;
    }
    uint8_t q[300];
    RAND_bytes((unsigned char *)&c->dns_id, sizeof c->dns_id);
    q[0] = (uint8_t)(c->dns_id >> 8);
    q[1] = (uint8_t)c->dns_id;
    q[2] = 0x01; /* RD */
    q[3] = 0;
    memset(q + 4, 0, 8);
    q[5] = 1;
    size_t off = 12;
    const char *h = f->host;
    while (*h) {
        const char *dot = strchr(h, '.');
        size_t l = dot ? (size_t)(dot - h) : strlen(h);
        if (l == 0 && !dot)
            break;
        if (l == 0 || l > 63 || off + l + 1 > 255 + 12) {
            fetch_fail(f, "InvalidData", "bad host name %s", f->host);
            return;
        }
        q[off++] = (uint8_t)l;
        memcpy(q + off, h, l);
        off += l;
        h += l + (dot ? 1 : 0);
    }
    q[off++] = 0;
    q[off++] = 0;
    q[off++] = 1; /* A */
    q[off++] = 0;
    q[off++] = 1; /* IN */
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(53)};
    memcpy(&sin.sin_addr, gw, 4);
    uv_buf_t b = uv_buf_init((char *)q, (unsigned)off);
    if (uv_udp_try_send(&c->udp, &b, 1, (struct sockaddr *)&sin) < 0) {
        fetch_fail(f, "NetworkUnreachable", "cannot ask the sandbox's resolver about %s", f->host);
        return;
    }
    uv_udp_recv_start(&c->udp, on_dns_alloc, on_dns);
}

static void fetch_start_conn(struct fetch *f)
{
    f->c = calloc(1, sizeof *f->c);
    if (!f->c) {
        fetch_fail(f, "Busy", "out of memory");
        return;
    }
    f->c->f = f;
    /* a fresh request each time (redirects restart here) */
    f->pend_len = 0;
    f->redirecting = false;
    f->location[0] = 0;
    json_decref(f->rh);
    f->rh = json_array();
    f->status_len = 0;
    f->status_text[0] = 0;
    f->head_bytes = 0;
    f->field_len = f->value_len = 0;
    f->in_value = false;
    f->head_only = strcmp(f->method, "HEAD") == 0;
    http_parser_init(&f->parser, HTTP_RESPONSE);
    f->parser.data = f;
    if (send_head(f) < 0) {
        fetch_fail(f, "Busy", "out of memory");
        return;
    }
    uv_timer_start(&f->timer, on_timer, DEADLINE_MS, DEADLINE_MS);
    uint8_t a[16];
    if (f->pid_port) { /* the URL's host only names the Host header */
        a[0] = 127, a[1] = 0, a[2] = 0, a[3] = 1;
        connect_addr(f, AF_INET, a);
    } else if (inet_pton(AF_INET, f->host, a) == 1)
        connect_addr(f, AF_INET, a);
    else if (inet_pton(AF_INET6, f->host, a) == 1)
        connect_addr(f, AF_INET6, a);
    else if (strcmp(f->host, "localhost") == 0 || (strlen(f->host) > 10 &&
                                                   !strcmp(f->host + strlen(f->host) - 10, ".localhost"))) {
        a[0] = 127, a[1] = 0, a[2] = 0, a[3] = 1; /* the sandbox's own loopback */
        connect_addr(f, AF_INET, a);
    } else
        resolve(f);
}

/* ---- TLS context ------------------------------------------------------ */

/* What the sandbox trusts: the system's CAs, hutch's interception CA (the
 * proxy presents certificates it signs for hosts with secrets) and the
 * operator's extra upstream CA. */
static int tls_ctx(struct hx_err *e)
{
    if (g_ctx)
        return 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return hx_fail(e, ENOMEM, "SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_default_verify_paths(ctx);
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    const char *pem = ca_cert_pem();
    if (pem) {
        BIO *b = BIO_new_mem_buf(pem, -1);
        X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        if (x) {
            X509_STORE_add_cert(store, x);
            X509_free(x);
        }
        BIO_free(b);
    }
    if (g_daemon.cfg && g_daemon.cfg->upstream_ca)
        SSL_CTX_load_verify_locations(ctx, g_daemon.cfg->upstream_ca, NULL);
    ERR_clear_error();
    g_ctx = ctx;
    return 0;
}

/* ---- the method ------------------------------------------------------- */

static void m_fetch(struct session *s, json_t *id, json_t *params)
{
    struct sandbox *sb = s->sb;
    const char *url = json_string_value(json_object_get(params, "url"));
    const char *method = json_string_value(json_object_get(params, "method"));
    json_t *headers = json_object_get(params, "headers");
    const char *redirect = json_string_value(json_object_get(params, "redirect"));
    json_t *jbody = json_object_get(params, "bodyStreamId");
    if (!url || !method || !json_is_array(headers) || (jbody && !json_is_null(jbody) && !json_is_integer(jbody)) ||
        json_array_size(headers) > 1000) {
        rpc_reply_rpc_error(s, id, -32602, "fetch needs url, method, headers");
        return;
    }
    if (!sb || sb->state != SB_RUNNING) {
        rpc_reply_result(s, id, rpc_app_error("NotConnected", "the sandbox is not running"));
        return;
    }
    if (!is_token(method) || strlen(method) >= 32) {
        rpc_reply_result(s, id, rpc_app_error("InvalidData", "bad method"));
        return;
    }
    if (!strcasecmp(method, "CONNECT") || !strcasecmp(method, "TRACE")) {
        rpc_reply_result(s, id, rpc_app_error("NotSupported", "method %s is not supported", method));
        return;
    }
    size_t i, hbytes = 0;
    json_t *h;
    json_array_foreach(headers, i, h) {
        json_t *k = json_array_get(h, 0), *v = json_array_get(h, 1);
        if (!json_is_array(h) || json_array_size(h) != 2 || !json_is_string(k) || !json_is_string(v) ||
            !is_token(json_string_value(k)) || !is_field_value(json_string_value(v), json_string_length(v))) {
            rpc_reply_result(s, id, rpc_app_error("InvalidData", "bad request header"));
            return;
        }
        hbytes += json_string_length(k) + json_string_length(v) + 4;
    }
    if (hbytes > HEAD_MAX) {
        rpc_reply_result(s, id, rpc_app_error("InvalidData", "request headers too large"));
        return;
    }
    unsigned mine = 0;
    for (struct fetch *x = g_fetches; x; x = x->next)
        mine += x->s == s;
    struct hx_err e = {0};
    if (mine >= FETCH_MAX || tls_ctx(&e) < 0) {
        rpc_reply_result(s, id, rpc_app_error("Busy", "too many fetches in flight"));
        return;
    }
    struct fetch *f = calloc(1, sizeof *f);
    if (!f) {
        rpc_reply_result(s, id, rpc_app_error("Busy", "out of memory"));
        return;
    }
    f->s = s;
    f->sb = sb;
    f->rpc_id = json_incref(id);
    f->abort_id = rpc_abort_id(params);
    f->headers = json_incref(headers);
    snprintf(f->method, sizeof f->method, "%s", method);
    f->follow = !redirect || strcmp(redirect, "manual") != 0;
    uv_timer_init(g_daemon.loop, &f->timer);
    f->timer.data = f;
    f->timer_init = true;
    f->next = g_fetches;
    g_fetches = f;
    if (parse_url(f, url, &e) < 0) {
        fetch_fail(f, "InvalidData", "%s", e.msg);
        return;
    }
    json_t *jpid = json_object_get(params, "pid");
    if (jpid && !json_is_null(jpid)) { /* DenoProcess.fetch: to the port that Deno process listens on */
        json_int_t pid = json_integer_value(jpid);
        int port = json_is_integer(jpid) && pid > 0 && pid <= 0x7fffffff ? deno_http_port(sb, (uint32_t)pid) : -EINVAL;
        if (port == -EINVAL || port == -ESRCH) {
            fetch_fail(f, "NotFound", "process %lld is not a running Deno process started by spawnDeno or spawnDenoRepl",
                       (long long)pid);
            return;
        }
        if (port < 0) {
            fetch_fail(f, "ConnectionRefused", "Deno process %lld does not listen on a TCP port (yet)", (long long)pid);
            return;
        }
        f->pid_port = (uint16_t)port;
        if (f->tls && f->port == 443)
            f->port = 80;
        f->tls = false; /* plain HTTP on the sandbox's loopback */
    }
    if (json_is_integer(jbody)) {
        f->body_chan = g_next_chan++;
        if (g_next_chan < RPC_NET_CHAN_BASE)
            g_next_chan = RPC_NET_CHAN_BASE;
        fetch_start_conn(f); /* the head goes first into pend */
        for (struct fetch *x = g_fetches; x; x = x->next)
            if (x == f && !f->done) {
                if (!rpc_inbound_bind_chan(s, json_integer_value(jbody), f->body_chan))
                    fetch_fail(f, "InvalidData", "the request body stream cannot be used");
                break;
            }
        return;
    }
    fetch_start_conn(f);
}

/* ---- hooks ------------------------------------------------------------ */

void rpc_net_on_drain(struct session *s)
{
    (void)s; /* the timer notices within POLL_MS */
}

void rpc_net_stream_cancel(struct session *s, int64_t stream_id)
{
    for (struct fetch *f = g_fetches; f; f = f->next)
        if (f->s == s && f->stream_id == (uint64_t)stream_id) {
            fetch_free(f); /* the reader is gone: stop, no more messages */
            return;
        }
}

bool rpc_net_abort(struct session *s, int64_t abort_id)
{
    for (struct fetch *f = g_fetches; f; f = f->next) {
        if (f->s != s || f->abort_id != abort_id)
            continue;
        if (!f->replied) {
            rpc_reply_result(s, f->rpc_id, rpc_abort_error());
        } else if (f->stream_id) { /* aborted while the body streams: the body errors, as fetch()'s does */
            rpc_notify(s, "$sandbox.stream.error", json_pack("{s:I, s:o}", "streamId", (json_int_t)f->stream_id,
                                                             "error", rpc_abort_error_object()));
        }
        fetch_free(f); /* the upstream connection closes */
        return true;
    }
    return false;
}

void rpc_net_session_closed(struct session *s)
{
    struct fetch *f = g_fetches;
    while (f) {
        struct fetch *n = f->next;
        if (f->s == s) {
            f->s = NULL;
            fetch_free(f);
        }
        f = n;
    }
}

const struct rpc_method rpc_net_methods[] = {
    {"fetch", m_fetch},
    {NULL, NULL},
};
