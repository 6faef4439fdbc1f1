/* sandbox.fetch: an HTTP(S) request made from the sandbox's network position.
 * The HTTP/TLS client is libcurl's multi interface on hutchd's libuv loop
 * (socket and timer callbacks → uv_poll / uv_timer). Every TCP socket it uses
 * is born in the sandbox's netns (CURLOPT_OPENSOCKETFUNCTION →
 * net_sandbox_socket), and names are asked of the sandbox's own resolver
 * (a UDP socket in its netns; libcurl only gets the answer through
 * CURLOPT_CONNECT_TO and never resolves anything itself), so the request
 * leaves through its eth0 → nftables → hutch-proxy: same allowNet, same secret
 * substitution/masking, same audit and counts as sandbox code.
 * Connections are never shared between fetches (FORBID_REUSE/FRESH_CONNECT):
 * a socket in one sandbox's netns is never reused by another's fetch. */
#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
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
#define BUF_SIZE (64L * 1024)        /* libcurl's receive and upload buffers */

/* The DNS question of one fetch: its own handle, closed on its own. */
struct fdns {
    struct fetch *f;                 /* NULL once detached */
    uv_udp_t udp;
    uint16_t id;
};

struct fetch {
    struct fetch *next;
    struct session *s;
    struct sandbox *sb;
    json_t *rpc_id;
    int64_t abort_id;                /* the client's abortId, or -1 */
    /* request */
    char method[32];
    bool tls, follow;
    char host[256];                  /* without brackets */
    uint16_t port;
    uint16_t pid_port;               /* DenoProcess.fetch: that process's port on the sandbox's loopback, 0 = none */
    char *path;                      /* origin-form target */
    json_t *headers;                 /* [[name, value]...] as given (validated) */
    uint32_t body_chan;              /* 0 = no body */
    bool body_ended;
    uint8_t *pend;                   /* request body bytes libcurl has not taken yet */
    size_t pend_off, pend_len, pend_cap;
    int redirects;
    struct fdns *dns;
    CURL *easy;                      /* in g_multi while set */
    struct curl_slist *hdrs, *connect_to;
    char errbuf[CURL_ERROR_SIZE];
    bool send_paused, recv_paused;
    uv_timer_t timer;
    bool timer_init;
    /* response */
    bool replied, dead, redirecting;
    unsigned status;
    uint64_t stream_id;
    json_t *rh;                      /* response headers */
    char status_text[128];
    size_t head_bytes;
    char location[2048];
    const char *fail_code;           /* why a callback stopped the transfer */
    char fail_msg[400];
};

static struct fetch *g_fetches;
static uint32_t g_next_chan = RPC_NET_CHAN_BASE;
static CURLM *g_multi;
static uv_timer_t g_mtimer;
static X509_STORE *g_store;          /* what the sandbox trusts (tls_store) */
static int g_depth;                  /* inside libcurl: fetches are only marked dead */

struct csock {                       /* one socket libcurl watches */
    uv_poll_t poll;
    curl_socket_t fd;
};

static void fetch_start(struct fetch *f);
static void fetch_fail(struct fetch *f, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fetch_finish(struct fetch *f);
static void multi_settle(void);

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

/* A callback's reason to stop the transfer; reported once libcurl let go. */
static void set_fail(struct fetch *f, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_fail(struct fetch *f, const char *code, const char *fmt, ...)
{
    if (f->fail_code)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->fail_msg, sizeof f->fail_msg, fmt, ap);
    va_end(ap);
    f->fail_code = code;
}

/* Request body bytes the client counts as in flight: given back. */
static void release_credit(struct fetch *f, size_t n)
{
    if (!f->sb || !n)
        return;
    f->sb->stdin_inflight -= n < f->sb->stdin_inflight ? n : f->sb->stdin_inflight;
    rpc_on_stdin_ack(f->sb);
}

/* ---- lifetime --------------------------------------------------------- */

static void on_dns_closed(uv_handle_t *h)
{
    free(h->data);
}

static void dns_close(struct fetch *f)
{
    if (!f->dns)
        return;
    f->dns->f = NULL;
    f->dns->udp.data = f->dns;
    uv_close((uv_handle_t *)&f->dns->udp, on_dns_closed);
    f->dns = NULL;
}

/* Takes the transfer out of libcurl (never from inside one of its callbacks). */
static void easy_detach(struct fetch *f)
{
    if (f->easy) {
        curl_multi_remove_handle(g_multi, f->easy);
        curl_easy_cleanup(f->easy);
        f->easy = NULL;
    }
    curl_slist_free_all(f->hdrs);
    curl_slist_free_all(f->connect_to);
    f->hdrs = f->connect_to = NULL;
    f->send_paused = f->recv_paused = false;
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

static void fetch_destroy(struct fetch *f)
{
    for (struct fetch **pp = &g_fetches; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    release_credit(f, f->pend_len - f->pend_off); /* body bytes never sent: release the client */
    f->pend_off = f->pend_len = 0;
    easy_detach(f);
    dns_close(f);
    f->dead = true;
    if (f->timer_init)
        uv_close((uv_handle_t *)&f->timer, on_timer_closed);
    else
        on_timer_closed((uv_handle_t *)&f->timer);
}

/* Drops the fetch without answering more (done, failed, or its session
 * left). Inside a libcurl callback it is only marked: the sweep after
 * libcurl returns takes it out. Its sandbox may be going: not touched again. */
static void fetch_free(struct fetch *f)
{
    if (g_depth > 0) {
        release_credit(f, f->pend_len - f->pend_off);
        f->pend_off = f->pend_len = 0;
        f->dead = true;
        f->s = NULL;
        f->sb = NULL;
        return;
    }
    fetch_destroy(f);
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

/* ---- libcurl on the loop ---------------------------------------------- */

static void multi_act(curl_socket_t fd, int flags)
{
    int running = 0;
    g_depth++;
    curl_multi_socket_action(g_multi, fd, flags, &running);
    g_depth--;
    multi_settle();
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct csock *cs = h->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    multi_act(cs->fd, flags);
}

static void on_csock_closed(uv_handle_t *h)
{
    free(h->data);
}

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
    (void)e;
    (void)userp;
    struct csock *cs = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (cs) {
            uv_poll_stop(&cs->poll);
            uv_close((uv_handle_t *)&cs->poll, on_csock_closed);
            curl_multi_assign(g_multi, fd, NULL);
        }
        return 0;
    }
    if (!cs) {
        cs = calloc(1, sizeof *cs);
        if (!cs)
            return -1;
        cs->fd = fd;
        if (uv_poll_init_socket(g_daemon.loop, &cs->poll, fd) < 0) {
            free(cs);
            return -1;
        }
        cs->poll.data = cs;
        curl_multi_assign(g_multi, fd, cs);
    }
    int ev = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&cs->poll, ev, on_poll);
    return 0;
}

static void on_mtimer(uv_timer_t *t)
{
    (void)t;
    multi_act(CURL_SOCKET_TIMEOUT, 0);
}

static int on_curl_timer(CURLM *m, long ms, void *userp)
{
    (void)m;
    (void)userp;
    /* 0 becomes 1: libuv (1.44) runs a timer re-armed with 0 from its own
     * callback again in the same turn, and libcurl asks for 0 while data is
     * pending: that would starve every other socket (the client's abort). */
    if (ms < 0)
        uv_timer_stop(&g_mtimer);
    else
        uv_timer_start(&g_mtimer, on_mtimer, ms ? (uint64_t)ms : 1, 0);
    return 0;
}

static int multi_init(struct hx_err *e)
{
    if (g_multi)
        return 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return hx_fail(e, ENOMEM, "curl_global_init failed");
    g_multi = curl_multi_init();
    if (!g_multi)
        return hx_fail(e, ENOMEM, "curl_multi_init failed");
    uv_timer_init(g_daemon.loop, &g_mtimer);
    uv_unref((uv_handle_t *)&g_mtimer);
    curl_multi_setopt(g_multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(g_multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    return 0;
}

static void follow_redirect(struct fetch *f);

/* How libcurl's verdict on a transfer reads to the client. */
static void report_result(struct fetch *f, CURLcode rc, long oserr)
{
    const char *why = f->errbuf[0] ? f->errbuf : curl_easy_strerror(rc);
    switch (rc) {
    case CURLE_OK:
        if (!f->replied)
            fetch_fail(f, "ConnectionReset", "connection to %s closed before a response", f->host);
        else
            fetch_finish(f);
        return;
    case CURLE_COULDNT_CONNECT:
        fetch_fail(f, oserr == ECONNREFUSED ? "ConnectionRefused" : "ConnectionReset",
                   "connecting to %s:%u from the sandbox failed: %s", f->host, f->port,
                   oserr ? strerror((int)oserr) : why);
        return;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
        fetch_fail(f, "InvalidData", "TLS handshake with %s failed: %s", f->host, why);
        return;
    case CURLE_GOT_NOTHING:
        fetch_fail(f, "ConnectionReset", "connection to %s closed before a response", f->host);
        return;
    case CURLE_PARTIAL_FILE:
        if (f->replied)
            fetch_fail(f, "UnexpectedEof", "connection to %s closed in the middle of the body", f->host);
        else
            fetch_fail(f, "ConnectionReset", "connection to %s closed before a response", f->host);
        return;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP2:
        fetch_fail(f, "InvalidData", "bad HTTP response from %s: %s", f->host, why);
        return;
    case CURLE_OPERATION_TIMEDOUT:
        fetch_fail(f, "TimedOut", "no progress from %s: %s", f->host, why);
        return;
    case CURLE_OUT_OF_MEMORY:
        fetch_fail(f, "Busy", "out of memory");
        return;
    default:
        if (f->replied && rc == CURLE_RECV_ERROR)
            fetch_fail(f, "UnexpectedEof", "connection to %s failed in the middle of the body: %s", f->host, why);
        else
            fetch_fail(f, "ConnectionReset", "connection to %s failed: %s", f->host, why);
        return;
    }
}

/* After libcurl returned to us: transfers that ended, fetches marked dead. */
static void multi_settle(void)
{
    if (g_depth > 0 || !g_multi)
        return;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(g_multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURLcode rc = m->data.result;
        struct fetch *f = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&f);
        if (!f)
            continue;
        long oserr = 0;
        curl_easy_getinfo(m->easy_handle, CURLINFO_OS_ERRNO, &oserr);
        easy_detach(f); /* m is gone from here on */
        if (f->dead)
            continue; /* swept below */
        if (f->redirecting)
            follow_redirect(f);
        else if (f->fail_code)
            fetch_fail(f, f->fail_code, "%s", f->fail_msg);
        else
            report_result(f, rc, oserr);
    }
    for (struct fetch *f = g_fetches, *n; f; f = n) {
        n = f->next;
        if (f->dead)
            fetch_destroy(f);
    }
}

/* Sets libcurl's pause bits to ours (CURLPAUSE_* is the whole new state). */
static void easy_repause(struct fetch *f)
{
    if (!f->easy)
        return;
    g_depth++;
    curl_easy_pause(f->easy, (f->recv_paused ? CURLPAUSE_RECV : 0) | (f->send_paused ? CURLPAUSE_SEND : 0));
    g_depth--;
}

static void on_timer(uv_timer_t *t);

/* ---- libcurl's callbacks (g_depth > 0: no fetch is freed in here) ------ */

static curl_socket_t on_opensocket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct fetch *f = ud;
    if (f->dead || !f->sb || purpose != CURLSOCKTYPE_IPCXN || (a->family != AF_INET && a->family != AF_INET6))
        return CURL_SOCKET_BAD;
    struct hx_err e = {0};
    int fd = net_sandbox_socket(f->sb, a->family, a->socktype, &e);
    if (fd < 0) {
        set_fail(f, "NetworkUnreachable", "%s", e.msg);
        return CURL_SOCKET_BAD;
    }
    return fd;
}

/* What the sandbox trusts: the system's CAs, hutch's interception CA (the
 * proxy presents certificates it signs for hosts with secrets) and the
 * operator's extra upstream CA. Built once, shared by every connection. */
static X509_STORE *tls_store(void)
{
    if (g_store)
        return g_store;
    X509_STORE *st = X509_STORE_new();
    if (!st)
        return NULL;
    X509_STORE_set_default_paths(st);
    const char *pem = ca_cert_pem();
    if (pem) {
        BIO *b = BIO_new_mem_buf(pem, -1);
        X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        if (x) {
            X509_STORE_add_cert(st, x);
            X509_free(x);
        }
        BIO_free(b);
    }
    if (g_daemon.cfg && g_daemon.cfg->upstream_ca)
        X509_STORE_load_locations(st, g_daemon.cfg->upstream_ca, NULL);
    ERR_clear_error();
    g_store = st;
    return st;
}

static CURLcode on_ssl_ctx(CURL *e, void *ssl_ctx, void *ud)
{
    (void)e;
    (void)ud;
    X509_STORE *st = tls_store();
    if (!st)
        return CURLE_OUT_OF_MEMORY;
    SSL_CTX_set1_cert_store(ssl_ctx, st);
    return CURLE_OK;
}

static size_t on_read(char *buf, size_t size, size_t nmemb, void *ud)
{
    struct fetch *f = ud;
    if (f->dead)
        return CURL_READFUNC_ABORT;
    size_t room = size * nmemb, avail = f->pend_len - f->pend_off;
    if (avail) {
        size_t k = avail < room ? avail : room;
        memcpy(buf, f->pend + f->pend_off, k);
        f->pend_off += k;
        if (f->pend_off == f->pend_len)
            f->pend_off = f->pend_len = 0;
        uv_timer_again(&f->timer);
        release_credit(f, k); /* the client may send more */
        return k;
    }
    if (f->body_ended)
        return 0;
    f->send_paused = true; /* until rpc_net_on_body has more */
    return CURL_READFUNC_PAUSE;
}

static void head_reset(struct fetch *f)
{
    json_array_clear(f->rh);
    f->status = 0;
    f->status_text[0] = 0;
    f->location[0] = 0;
}

/* The head is complete: follow, or answer the fetch. false: stop the transfer. */
static bool head_done(struct fetch *f)
{
    long code = 0;
    curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &code);
    unsigned st = code > 0 && code < 1000 ? (unsigned)code : f->status;
    f->status = st;
    if (st >= 100 && st < 200) { /* 100 Continue and friends: wait for the real one */
        head_reset(f);
        f->head_bytes = 0;
        return true;
    }
    if (f->follow && !f->body_chan && f->location[0] && f->redirects < REDIRECTS_MAX &&
        (st == 301 || st == 302 || st == 303 || st == 307 || st == 308)) {
        f->redirecting = true;
        return false;
    }
    bool body = strcmp(f->method, "HEAD") != 0 && st != 204 && st != 304;
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
    return true;
}

/* One response head line (status line, field, or the empty line). Hostile
 * bytes: bounded in size and count as before libcurl. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    struct fetch *f = ud;
    size_t n = size * nmemb;
    if (f->dead)
        return 0;
    if (f->replied)
        return n; /* trailers: not passed on */
    uv_timer_again(&f->timer);
    f->head_bytes += n;
    if (f->head_bytes > HEAD_MAX + 16384) {
        set_fail(f, "InvalidData", "response head from %s too large", f->host);
        return 0;
    }
    size_t l = n;
    while (l && (p[l - 1] == '\n' || p[l - 1] == '\r'))
        l--;
    if (l == 0)
        return head_done(f) ? n : 0;
    if (l >= 5 && !memcmp(p, "HTTP/", 5)) { /* a status line: a new head begins */
        head_reset(f);
        const char *sp = memchr(p, ' ', l);
        if (sp) {
            /* three digits, read within the line (not NUL-terminated: no strtoul) */
            size_t at = (size_t)(sp + 1 - p);
            f->status = 0;
            for (size_t i = at; i < l && i < at + 3 && p[i] >= '0' && p[i] <= '9'; i++)
                f->status = f->status * 10 + (unsigned)(p[i] - '0');
            const char *sp2 = memchr(sp + 1, ' ', l - (size_t)(sp + 1 - p));
            if (sp2) {
                size_t tl = l - (size_t)(sp2 + 1 - p);
                if (tl >= sizeof f->status_text)
                    tl = sizeof f->status_text - 1;
                memcpy(f->status_text, sp2 + 1, tl);
                f->status_text[tl] = 0;
                /* the SDK's zod wants strings; bytes that are not UTF-8 become '?' */
                json_t *t = json_string(f->status_text);
                if (!t)
                    for (char *q = f->status_text; *q; q++)
                        if ((unsigned char)*q >= 0x80)
                            *q = '?';
                json_decref(t);
            }
        }
        return n;
    }
    if ((p[0] == ' ' || p[0] == '\t') && json_array_size(f->rh)) { /* obs-fold: more of the last value */
        json_t *last = json_array_get(f->rh, json_array_size(f->rh) - 1);
        json_t *jv = json_array_get(last, 1);
        size_t a = 0;
        while (a < l && (p[a] == ' ' || p[a] == '\t'))
            a++;
        size_t ol = json_string_length(jv);
        if (ol + 1 + (l - a) > FIELD_MAX) {
            set_fail(f, "InvalidData", "bad HTTP response from %s: header value too long", f->host);
            return 0;
        }
        char val[FIELD_MAX + 1];
        memcpy(val, json_string_value(jv), ol);
        val[ol] = ' ';
        memcpy(val + ol + 1, p + a, l - a);
        size_t vl = ol + 1 + (l - a);
        for (size_t i = ol + 1; i < vl; i++)
            if ((unsigned char)val[i] >= 0x80)
                val[i] = '?';
        json_array_set_new(last, 1, json_stringn(val, vl));
        return n;
    }
    const char *colon = memchr(p, ':', l);
    if (!colon || colon == p || (size_t)(colon - p) > FIELD_MAX || p[0] == ' ' || p[0] == '\t') {
        set_fail(f, "InvalidData", "bad HTTP response from %s: invalid header line", f->host);
        return 0;
    }
    if (json_array_size(f->rh) >= HEADERS_MAX) {
        set_fail(f, "InvalidData", "bad HTTP response from %s: too many header lines", f->host);
        return 0;
    }
    size_t kl = (size_t)(colon - p);
    const char *v = colon + 1, *end = p + l;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vl = (size_t)(end - v);
    if (vl > FIELD_MAX) {
        set_fail(f, "InvalidData", "bad HTTP response from %s: header value too long", f->host);
        return 0;
    }
    char key[FIELD_MAX + 1], val[FIELD_MAX + 1];
    for (size_t i = 0; i < kl; i++)
        key[i] = (char)tolower((unsigned char)p[i]);
    key[kl] = 0;
    memcpy(val, v, vl);
    val[vl] = 0;
    if (!is_token(key)) {
        set_fail(f, "InvalidData", "bad HTTP response from %s: invalid header name", f->host);
        return 0;
    }
    json_t *jv = json_stringn(val, vl);
    if (!jv) {
        for (size_t i = 0; i < vl; i++)
            if ((unsigned char)val[i] >= 0x80)
                val[i] = '?';
        jv = json_stringn(val, vl);
    }
    json_t *jk = json_stringn(key, kl);
    if (!jk || !jv) {
        json_decref(jk);
        json_decref(jv);
        set_fail(f, "Busy", "out of memory");
        return 0;
    }
    if (!strcmp(key, "location") && vl < sizeof f->location)
        memcpy(f->location, val, vl + 1);
    json_array_append_new(f->rh, json_pack("[o,o]", jk, jv));
    return n;
}

/* Response body bytes → $sandbox.stream.enqueue; a backed-up client pauses
 * the upstream (libcurl keeps the bytes and hands them again). */
static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    struct fetch *f = ud;
    size_t n = size * nmemb;
    if (f->dead)
        return 0;
    if (!f->s || !f->stream_id)
        return n;
    if (f->s->ws && ws_queued_bytes(f->s->ws) > WS_HIGH_WATER) {
        f->recv_paused = true;
        uv_timer_start(&f->timer, on_timer, POLL_MS, 0);
        return CURL_WRITEFUNC_PAUSE;
    }
    uv_timer_again(&f->timer);
    for (size_t off = 0; off < n;) {
        size_t k = n - off > ENQUEUE_CHUNK ? ENQUEUE_CHUNK : n - off;
        char *enc = malloc(hx_b64_encoded_len(k) + 1);
        if (!enc) {
            set_fail(f, "Busy", "out of memory");
            return 0;
        }
        hx_b64_encode((const uint8_t *)p + off, k, enc);
        rpc_notify(f->s, "$sandbox.stream.enqueue",
                   json_pack("{s:I, s:s}", "streamId", (json_int_t)f->stream_id, "data", enc));
        free(enc);
        off += k;
    }
    return n;
}

/* Backpressure poll (the client's socket drained?) and the no-progress deadline. */
static void on_timer(uv_timer_t *t)
{
    struct fetch *f = t->data;
    if (f->dead)
        return;
    if (f->recv_paused && f->easy) {
        /* below WS_LOW_WATER, where the session reads the client again (its abort) */
        if (!f->s || !f->s->ws || ws_queued_bytes(f->s->ws) < WS_LOW_WATER) {
            f->recv_paused = false;
            uv_timer_start(&f->timer, on_timer, DEADLINE_MS, DEADLINE_MS);
            easy_repause(f); /* libcurl hands the kept bytes to on_write again */
            multi_settle();
        } else {
            uv_timer_start(&f->timer, on_timer, POLL_MS, 0);
        }
        return;
    }
    fetch_fail(f, "TimedOut", "no progress from %s for %d s", f->host, DEADLINE_MS / 1000);
}

/* rpc.c hook: request body bytes (n == 0 and end: the body ended; end < 0:
 * the client's stream failed). */
void rpc_net_on_body(struct session *s, uint32_t chan, const uint8_t *p, size_t n, int end)
{
    struct fetch *f = g_fetches;
    while (f && !(f->s == s && f->body_chan == chan && !f->dead))
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
        if (f->pend_off && f->pend_off == f->pend_len)
            f->pend_off = f->pend_len = 0;
        if (f->pend_len + n > f->pend_cap) {
            if (f->pend_off) { /* compact first */
                memmove(f->pend, f->pend + f->pend_off, f->pend_len - f->pend_off);
                f->pend_len -= f->pend_off;
                f->pend_off = 0;
            }
            size_t cap = f->pend_cap ? f->pend_cap : 65536;
            while (cap < f->pend_len + n)
                cap *= 2;
            if (cap != f->pend_cap) {
                uint8_t *np = realloc(f->pend, cap);
                if (!np) {
                    fetch_fail(f, "Busy", "out of memory for the request body");
                    return;
                }
                f->pend = np;
                f->pend_cap = cap;
            }
        }
        memcpy(f->pend + f->pend_len, p, n);
        f->pend_len += n;
        s->sb->stdin_inflight += n; /* the client pauses while the upstream lags */
    }
    if (end)
        f->body_ended = true;
    if (f->send_paused) {
        f->send_paused = false;
        easy_repause(f); /* on_read takes the new bytes */
        multi_settle();
    }
}

/* ---- starting a transfer ----------------------------------------------- */

/* Hands the request to libcurl. `ip`: where to connect instead of the URL's
 * host (the sandbox resolver's answer, its loopback), NULL for an address
 * literal. libcurl never resolves a name itself. */
static void fetch_begin(struct fetch *f, const char *ip, uint16_t port)
{
    struct hx_err e = {0};
    if (multi_init(&e) < 0) {
        fetch_fail(f, "Busy", "%s", e.msg);
        return;
    }
    CURL *c = curl_easy_init();
    if (!c) {
        fetch_fail(f, "Busy", "out of memory");
        return;
    }
    f->easy = c;
    f->errbuf[0] = 0;
    bool v6 = strchr(f->host, ':') != NULL;
    size_t ul = strlen(f->path) + strlen(f->host) + 32;
    char *url = malloc(ul);
    if (!url) {
        fetch_fail(f, "Busy", "out of memory");
        return;
    }
    snprintf(url, ul, "%s://%s%s%s:%u%s", f->tls ? "https" : "http", v6 ? "[" : "", f->host, v6 ? "]" : "", f->port,
             f->path);
    if (ip) {
        char ct[128];
        snprintf(ct, sizeof ct, "::%s:%u", ip, port);
        f->connect_to = curl_slist_append(NULL, ct);
    }
    /* request headers: the client's, minus framing and routing (ours); and
     * none of libcurl's defaults the client did not ask for */
    bool has_accept = false, has_ctype = false, has_expect = false;
    struct curl_slist *hl = curl_slist_append(NULL, "Connection: close");
    size_t i;
    json_t *h;
    json_array_foreach(f->headers, i, h) {
        const char *k = json_string_value(json_array_get(h, 0));
        json_t *jv = json_array_get(h, 1);
        if (!strcasecmp(k, "host") || !strcasecmp(k, "content-length") || !strcasecmp(k, "transfer-encoding") ||
            !strcasecmp(k, "connection") || !strcasecmp(k, "keep-alive") || !strcasecmp(k, "upgrade") ||
            !strcasecmp(k, "te") || !strcasecmp(k, "trailer"))
            continue;
        has_accept |= !strcasecmp(k, "accept");
        has_ctype |= !strcasecmp(k, "content-type");
        has_expect |= !strcasecmp(k, "expect");
        size_t vl = json_string_length(jv), kl = strlen(k);
        char *line = malloc(kl + vl + 3);
        if (!line) {
            curl_slist_free_all(hl);
            free(url);
            fetch_fail(f, "Busy", "out of memory");
            return;
        }
        /* "name;" is libcurl's spelling of a header with an empty value */
        if (vl)
            snprintf(line, kl + vl + 3, "%s: %s", k, json_string_value(jv));
        else
            snprintf(line, kl + vl + 3, "%s;", k);
        struct curl_slist *nl = hl ? curl_slist_append(hl, line) : NULL;
        free(line);
        if (!nl) {
            curl_slist_free_all(hl);
            free(url);
            fetch_fail(f, "Busy", "out of memory");
            return;
        }
        hl = nl;
    }
    if (hl && !has_accept)
        hl = curl_slist_append(hl, "Accept:");
    if (hl && !has_ctype)
        hl = curl_slist_append(hl, "Content-Type:");
    if (hl && !has_expect)
        hl = curl_slist_append(hl, "Expect:");
    if (hl && f->body_chan)
        hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
    f->hdrs = hl;
    if (!hl || (ip && !f->connect_to)) {
        free(url);
        fetch_fail(f, "Busy", "out of memory");
        return;
    }
    curl_easy_setopt(c, CURLOPT_PRIVATE, (char *)f);
    curl_easy_setopt(c, CURLOPT_URL, url);
    free(url); /* libcurl keeps its copy */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L); /* redirects are ours: follow_redirect */
    curl_easy_setopt(c, CURLOPT_PROXY, "");          /* no proxy from the environment */
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);     /* the target as given, no dot-segment folding */
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);   /* a socket in this sandbox's netns serves only this fetch */
    curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_SESSIONID_CACHE, 0L);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_CAINFO, NULL);       /* the trust is tls_store's, set in on_ssl_ctx */
    curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
    if (curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx) != CURLE_OK) {
        fetch_fail(f, "NotSupported", "this libcurl is not built with OpenSSL: the sandbox's trust cannot be set");
        return;
    }
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, BUF_SIZE);
    curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, BUF_SIZE);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, f->errbuf);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, on_opensocket);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, f);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, f->hdrs);
    if (f->connect_to)
        curl_easy_setopt(c, CURLOPT_CONNECT_TO, f->connect_to);
    bool post_like = !strcmp(f->method, "POST") || !strcmp(f->method, "PUT") || !strcmp(f->method, "PATCH");
    if (f->body_chan) { /* streamed: chunked, from on_read */
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, f);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
    } else if (post_like) { /* no body: Content-Length: 0 */
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
    } else if (!strcmp(f->method, "HEAD")) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    if (strcmp(f->method, "GET") && strcmp(f->method, "HEAD") && strcmp(f->method, "POST"))
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, f->method);
    uv_timer_start(&f->timer, on_timer, DEADLINE_MS, DEADLINE_MS);
    if (curl_multi_add_handle(g_multi, c) != CURLM_OK) {
        fetch_fail(f, "Busy", "cannot start the transfer");
        return;
    }
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
    (void)h;
    (void)hint;
    static char buf[1500];
    b->base = buf;
    b->len = sizeof buf;
}

static void on_dns(uv_udp_t *u, ssize_t nread, const uv_buf_t *b, const struct sockaddr *from, unsigned flags)
{
    struct fdns *d = u->data;
    struct fetch *f = d->f;
    (void)flags;
    if (!f || nread <= 0 || !from)
        return;
    uint8_t a[4];
    int rcode = 0;
    if (dns_answer_a((const uint8_t *)b->base, (size_t)nread, d->id, a, &rcode) < 0) {
        if (nread >= 12 && (((uint8_t)b->base[0] << 8) | (uint8_t)b->base[1]) == d->id)
            fetch_fail(f, "NotFound", "%s does not resolve in the sandbox (%s)", f->host,
                       rcode == 3 ? "not allowed by allowNet, or no such name" : "no IPv4 address");
        return;
    }
    dns_close(f);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, a, ip, sizeof ip);
    fetch_begin(f, ip, f->port);
    multi_settle();
}

static void resolve(struct fetch *f)
{
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
    struct fdns *d = calloc(1, sizeof *d);
    if (!d) {
        close(fd);
        fetch_fail(f, "Busy", "out of memory");
        return;
    }
    uv_udp_init(g_daemon.loop, &d->udp);
    d->udp.data = d;
    d->f = f;
    f->dns = d;
    if (uv_udp_open(&d->udp, fd) < 0) {
        close(fd);
        fetch_fail(f, "Busy", "cannot use the DNS socket");
        return;
    }
    uint8_t q[300];
    RAND_bytes((unsigned char *)&d->id, sizeof d->id);
    q[0] = (uint8_t)(d->id >> 8);
    q[1] = (uint8_t)d->id;
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
    if (uv_udp_try_send(&d->udp, &b, 1, (struct sockaddr *)&sin) < 0) {
        fetch_fail(f, "NetworkUnreachable", "cannot ask the sandbox's resolver about %s", f->host);
        return;
    }
    uv_udp_recv_start(&d->udp, on_dns_alloc, on_dns);
}

/* A fresh request (redirects restart here): where to connect, then libcurl. */
static void fetch_start(struct fetch *f)
{
    f->redirecting = false;
    f->fail_code = NULL;
    json_decref(f->rh);
    f->rh = json_array();
    f->status = 0;
    f->status_text[0] = 0;
    f->head_bytes = 0;
    f->location[0] = 0;
    if (!f->rh) {
        fetch_fail(f, "Busy", "out of memory");
        return;
    }
    uv_timer_start(&f->timer, on_timer, DEADLINE_MS, DEADLINE_MS);
    uint8_t a[16];
    size_t hl = strlen(f->host);
    if (f->pid_port) /* the URL's host only names the Host header */
        fetch_begin(f, "127.0.0.1", f->pid_port);
    else if (inet_pton(AF_INET, f->host, a) == 1 || inet_pton(AF_INET6, f->host, a) == 1)
        fetch_begin(f, NULL, 0); /* an address literal: the sandbox's own, through on_opensocket */
    else if (strcmp(f->host, "localhost") == 0 || (hl > 10 && !strcmp(f->host + hl - 10, ".localhost")))
        fetch_begin(f, "127.0.0.1", f->port); /* the sandbox's own loopback */
    else
        resolve(f);
}

/* ---- redirects --------------------------------------------------------- */

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
    unsigned st = f->status;
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
    fetch_start(f);
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
    if (mine >= FETCH_MAX) {
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
        fetch_start(f);
        for (struct fetch *x = g_fetches; x; x = x->next)
            if (x == f && !f->dead) {
                if (!rpc_inbound_bind_chan(s, json_integer_value(jbody), f->body_chan))
                    fetch_fail(f, "InvalidData", "the request body stream cannot be used");
                break;
            }
        return;
    }
    fetch_start(f);
    multi_settle();
}

/* ---- hooks ------------------------------------------------------------ */

/* The client's socket drained (below WS_LOW_WATER): paused fetches go on
 * from the loop's next turn (not from inside the WebSocket's pump). */
void rpc_net_on_drain(struct session *s)
{
    for (struct fetch *f = g_fetches; f; f = f->next)
        if (f->s == s && !f->dead && f->recv_paused)
            uv_timer_start(&f->timer, on_timer, 1, 0);
}

void rpc_net_stream_cancel(struct session *s, int64_t stream_id)
{
    for (struct fetch *f = g_fetches; f; f = f->next)
        if (f->s == s && !f->dead && f->stream_id == (uint64_t)stream_id) {
            fetch_free(f); /* the reader is gone: stop, no more messages */
            return;
        }
}

bool rpc_net_abort(struct session *s, int64_t abort_id)
{
    for (struct fetch *f = g_fetches; f; f = f->next) {
        if (f->s != s || f->dead || f->abort_id != abort_id)
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
