/* libhutch transport: endpoints, blocking HTTP/1.1 over TCP or a unix socket, the
 * WebSocket handshake and JSON-RPC message dispatch (wslay on a non-blocking fd). */
#include "cli/libhutch/client.h"
#include "lib/b64.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <http_parser.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <wslay/wslay.h>

#define CONNECT_TIMEOUT_MS   10000
#define REST_TIMEOUT_MS      60000
/* Creating a sandbox may first build its image (minutes, with progress on the
 * server): the upgrade response may be slow. */
#define UPGRADE_TIMEOUT_MS   (15 * 60 * 1000)
#define WS_MSG_MAX           (64u << 20) /* bytes of one inbound message */
#define PING_INTERVAL_MS     2000
#define CLOSE_WAIT_MS        1000
#define PUMP_READ_MAX        (4u << 20) /* bytes read per hutch_pump: responses are taken between pumps */
#define WS_GUID              "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining(int64_t deadline)
{
    int64_t r = deadline - now_ms();
    return r < 0 ? 0 : (r > INT32_MAX ? INT32_MAX : (int)r);
}

/* ---------------------------------------------------------------- base64 */

char *hutch_b64_encode(const void *data, size_t n)
{
    char *out = malloc(hx_b64_encoded_len(n) + 1);
    if (out)
        hx_b64_encode(data, n, out);
    return out;
}

/* --------------------------------------------------------------- targets */

static bool header_safe(const char *s)
{
    /* A token or id goes into a header line: CR/LF would inject headers. */
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

int hutch_target_init(struct hutch_target *t, const char *endpoint, const char *token, struct hx_err *e)
{
    memset(t, 0, sizeof(*t));
    if (strncmp(endpoint, "http://", 7) != 0) {
        if (strncmp(endpoint, "https://", 8) == 0)
            return hx_fail(e, EPROTONOSUPPORT, "endpoint %s: https is not supported, use http://HOST:PORT", endpoint);
        return hx_fail(e, EINVAL, "endpoint %s: expected http://HOST:PORT", endpoint);
    }
    const char *h = endpoint + 7;
    const char *end = h + strcspn(h, "/?#");
    if (*end && strcmp(end, "/") != 0)
        return hx_fail(e, EINVAL, "endpoint %s: a path is not supported, expected http://HOST:PORT", endpoint);
    const char *host_end, *port = NULL;
    const char *host = h;
    if (*h == '[') {
        host = h + 1;
        host_end = memchr(host, ']', (size_t)(end - host));
        if (!host_end)
            return hx_fail(e, EINVAL, "endpoint %s: unterminated [", endpoint);
        if (host_end + 1 < end) {
            if (host_end[1] != ':')
                return hx_fail(e, EINVAL, "endpoint %s: bad port", endpoint);
            port = host_end + 2;
        }
    } else {
        host_end = memchr(h, ':', (size_t)(end - h));
        if (host_end)
            port = host_end + 1;
        else
            host_end = end;
    }
    if (host_end == host)
        return hx_fail(e, EINVAL, "endpoint %s: no host", endpoint);
    size_t plen = port ? (size_t)(end - port) : 0;
    if (port && (plen == 0 || plen > 5 || strspn(port, "0123456789") < plen))
        return hx_fail(e, EINVAL, "endpoint %s: bad port", endpoint);
    t->host = strndup(host, (size_t)(host_end - host));
    t->port = port ? strndup(port, plen) : strdup("80");
    if (token && !header_safe(token)) {
        hutch_target_free(t);
        return hx_fail(e, EINVAL, "token contains control characters");
    }
    t->token = token ? strdup(token) : NULL;
    if (!t->host || !t->port || (token && !t->token)) {
        hutch_target_free(t);
        return hx_fail(e, ENOMEM, "out of memory");
    }
    return 0;
}

int hutch_target_init_unix(struct hutch_target *t, const char *path, const char *token, struct hx_err *e)
{
    memset(t, 0, sizeof(*t));
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return hx_fail(e, ENAMETOOLONG, "socket path %s is too long", path);
    if (token && !header_safe(token))
        return hx_fail(e, EINVAL, "token contains control characters");
    t->unix_path = strdup(path);
    t->token = token ? strdup(token) : NULL;
    if (!t->unix_path || (token && !t->token)) {
        hutch_target_free(t);
        return hx_fail(e, ENOMEM, "out of memory");
    }
    return 0;
}

void hutch_target_free(struct hutch_target *t)
{
    free(t->host);
    free(t->port);
    free(t->unix_path);
    free(t->token);
    memset(t, 0, sizeof(*t));
}

static void target_desc(const struct hutch_target *t, char *buf, size_t n)
{
    if (t->unix_path)
        snprintf(buf, n, "%s", t->unix_path);
    else if (strchr(t->host, ':'))
        snprintf(buf, n, "[%s]:%s", t->host, t->port);
    else
        snprintf(buf, n, "%s:%s", t->host, t->port);
}

/* ------------------------------------------------------------ socket i/o */

static int wait_fd(int fd, short events, int64_t deadline, const char *what, struct hx_err *e)
{
    for (;;) {
        struct pollfd p = { .fd = fd, .events = events };
        int r = poll(&p, 1, remaining(deadline));
        if (r > 0)
            return 0;
        if (r == 0)
            return hx_fail(e, ETIMEDOUT, "timed out %s", what);
        if (errno != EINTR)
            return hx_fail(e, errno, "poll while %s: %m", what);
    }
}

static int connect_addr(const struct sockaddr *sa, socklen_t salen, int family, int64_t deadline, const char *desc,
                        struct hx_err *e)
{
    autoclose int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return hx_fail(e, errno, "socket for %s: %m", desc);
    if (connect(fd, sa, salen) < 0) {
        if (errno != EINPROGRESS)
            return hx_fail(e, errno, "connect to %s: %m", desc);
        int r = wait_fd(fd, POLLOUT, deadline, "connecting", e);
        if (r < 0)
            return hx_fail(e, ETIMEDOUT, "connect to %s: timed out", desc);
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return hx_fail(e, errno, "getsockopt on %s: %m", desc);
        if (err) {
            errno = err;
            return hx_fail(e, err, "connect to %s: %m", desc);
        }
    }
    if (family != AF_UNIX) {
        int one = 1;
        /* JSON-RPC messages are small and latency-bound. */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return hx_steal_fd(&fd);
}

static int connect_target(const struct hutch_target *t, struct hx_err *e)
{
    char desc[300];
    target_desc(t, desc, sizeof(desc));
    int64_t deadline = now_ms() + CONNECT_TIMEOUT_MS;
    if (t->unix_path) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        memcpy(sun.sun_path, t->unix_path, strlen(t->unix_path) + 1);
        return connect_addr((struct sockaddr *)&sun, sizeof(sun), AF_UNIX, deadline, desc, e);
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG };
    struct addrinfo *res = NULL;
    int gr = getaddrinfo(t->host, t->port, &hints, &res);
    if (gr != 0)
        return hx_fail(e, EHOSTUNREACH, "resolve %s: %s", t->host, gai_strerror(gr));
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = connect_addr(ai->ai_addr, ai->ai_addrlen, ai->ai_family, deadline, desc, e);
        if (fd >= 0)
            break;
    }
    freeaddrinfo(res);
    return fd;
}

static int write_all(int fd, const void *buf, size_t n, int64_t deadline, struct hx_err *e)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                int r = wait_fd(fd, POLLOUT, deadline, "sending the request", e);
                if (r < 0)
                    return r;
                continue;
            }
            return hx_fail(e, errno, "send: %m");
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* -------------------------------------------------------- HTTP responses */

struct resp_parser {
    http_parser p;
    bool complete;
    bool in_value;
    char field[64];
    size_t field_len;
    char value[512];
    size_t value_len;
    bool overflow; /* current header longer than we keep: ignored */
    char sandbox_id[128];
    char ws_accept[64];
    bool streams_binary; /* x-hutch-streams: binary (docs/protocol.md "Binary streams") */
    char subprotocol[64]; /* Sec-WebSocket-Protocol */
    char hutch_pid[24];  /* x-hutch-pid (the raw exec channel) */
    char link_next[512]; /* the Link header's rel="next" URL, as sent */
    char *body;
    size_t body_len, body_cap;
    void (*sink)(void *ud, const char *p, size_t n); /* hutch_http_stream: a 2xx body goes here as it comes */
    void *sink_ud;
};

/* RFC 8288: `<URL>; rel="next"[, <URL>; rel="..."]`: the URL of the first
 * link whose rel list holds "next", else "". */
static void link_next_parse(const char *v, char *out, size_t cap)
{
    out[0] = '\0';
    for (const char *p = v; (p = strchr(p, '<'));) {
        const char *end = strchr(p, '>');
        if (!end)
            return;
        const char *params = end + 1, *stop = strchr(params, '<');
        size_t plen = stop ? (size_t)(stop - params) : strlen(params);
        char pbuf[256];
        snprintf(pbuf, sizeof pbuf, "%.*s", (int)(plen < 255 ? plen : 255), params);
        char *rel = strstr(pbuf, "rel=");
        if (rel) {
            rel += 4;
            size_t rl = *rel == '"' ? strcspn(++rel, "\"") : strcspn(rel, ";, ");
            rel[rl] = '\0';
            for (char *tok = strtok(rel, " "); tok; tok = strtok(NULL, " "))
                if (strcasecmp(tok, "next") == 0) {
                    if ((size_t)(end - p - 1) < cap)
                        snprintf(out, cap, "%.*s", (int)(end - p - 1), p + 1);
                    return;
                }
        }
        p = end + 1;
    }
}

static void commit_header(struct resp_parser *rp)
{
    if (!rp->overflow) {
        rp->field[rp->field_len] = '\0';
        rp->value[rp->value_len] = '\0';
        if (strcasecmp(rp->field, "x-deno-sandbox-id") == 0)
            snprintf(rp->sandbox_id, sizeof(rp->sandbox_id), "%s", rp->value);
        else if (strcasecmp(rp->field, "sec-websocket-accept") == 0)
            snprintf(rp->ws_accept, sizeof(rp->ws_accept), "%s", rp->value);
        else if (strcasecmp(rp->field, "x-hutch-streams") == 0)
            rp->streams_binary = strcmp(rp->value, "binary") == 0;
        else if (strcasecmp(rp->field, "sec-websocket-protocol") == 0)
            snprintf(rp->subprotocol, sizeof(rp->subprotocol), "%s", rp->value);
        else if (strcasecmp(rp->field, "x-hutch-pid") == 0)
            snprintf(rp->hutch_pid, sizeof(rp->hutch_pid), "%s", rp->value);
        else if (strcasecmp(rp->field, "link") == 0)
            link_next_parse(rp->value, rp->link_next, sizeof(rp->link_next));
    }
    rp->field_len = rp->value_len = 0;
    rp->overflow = false;
    rp->in_value = false;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct resp_parser *rp = p->data;
    if (rp->in_value)
        commit_header(rp);
    if (rp->field_len + n >= sizeof(rp->field))
        rp->overflow = true;
    else {
        memcpy(rp->field + rp->field_len, at, n);
        rp->field_len += n;
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct resp_parser *rp = p->data;
    rp->in_value = true;
    if (rp->value_len + n >= sizeof(rp->value))
        rp->overflow = true;
    else {
        memcpy(rp->value + rp->value_len, at, n);
        rp->value_len += n;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct resp_parser *rp = p->data;
    if (rp->in_value)
        commit_header(rp);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct resp_parser *rp = p->data;
    if (rp->sink && p->status_code >= 200 && p->status_code <= 299) {
        rp->sink(rp->sink_ud, at, n);
        return 0;
    }
    if (n > HUTCH_HTTP_BODY_MAX - rp->body_len)
        return 1; /* a body this large is not something we asked for */
    if (rp->body_len + n + 1 > rp->body_cap) {
        size_t cap = rp->body_cap ? rp->body_cap : 4096;
        while (cap < rp->body_len + n + 1)
            cap *= 2;
        char *nb = realloc(rp->body, cap);
        if (!nb)
            return 1;
        rp->body = nb;
        rp->body_cap = cap;
    }
    memcpy(rp->body + rp->body_len, at, n);
    rp->body_len += n;
    rp->body[rp->body_len] = '\0';
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct resp_parser *rp = p->data;
    rp->complete = true;
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Reads one response. For a 101 upgrade, bytes past the headers are already
 * WebSocket frames: they are returned in *extra / *extra_len (malloc'd). */
static int fail_http_status(int status, const char *body, size_t len, struct hx_err *e);
static int read_response(int fd, struct resp_parser *rp, int64_t deadline, const char *desc, uint8_t **extra,
                         size_t *extra_len, struct hx_err *e)
{
    http_parser_init(&rp->p, HTTP_RESPONSE);
    rp->p.data = rp;
    char buf[16384];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                int r = wait_fd(fd, POLLIN, deadline, "waiting for the response", e);
                if (r < 0)
                    return hx_fail(e, ETIMEDOUT, "%s: timed out waiting for a response", desc);
                continue;
            }
            return hx_fail(e, errno, "%s: receive: %m", desc);
        }
        size_t parsed = http_parser_execute(&rp->p, &resp_settings, buf, (size_t)n);
        if (rp->p.upgrade && rp->complete) {
            size_t rest = (size_t)n - parsed;
            if (extra && rest) {
                *extra = malloc(rest);
                if (!*extra)
                    return hx_fail(e, ENOMEM, "out of memory");
                memcpy(*extra, buf + parsed, rest);
                *extra_len = rest;
            }
            return 0;
        }
        enum http_errno he = HTTP_PARSER_ERRNO(&rp->p);
        if (he != HPE_OK) {
            if (he == HPE_CB_body)
                return hx_fail(e, EMSGSIZE, "%s: response body larger than %u bytes", desc, HUTCH_HTTP_BODY_MAX);
            return hx_fail(e, EPROTO, "%s: bad HTTP response: %s", desc, http_errno_description(he));
        }
        if (rp->complete)
            return 0;
        if (n == 0)
            return hx_fail(e, ECONNRESET, "%s: connection closed before a complete response", desc);
    }
}

static char *build_request(const struct hutch_target *t, const char *method, const char *path,
                           const char *extra_headers, const char *body)
{
    char *req = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&req, &len);
    if (!f)
        return NULL;
    fprintf(f, "%s %s HTTP/1.1\r\n", method, path);
    if (t->unix_path)
        fprintf(f, "Host: localhost\r\n");
    else if (strchr(t->host, ':'))
        fprintf(f, "Host: [%s]:%s\r\n", t->host, t->port);
    else
        fprintf(f, "Host: %s:%s\r\n", t->host, t->port);
    fprintf(f, "User-Agent: hutch-cli/0.1\r\n");
    if (t->token)
        fprintf(f, "Authorization: Bearer %s\r\n", t->token);
    if (extra_headers)
        fputs(extra_headers, f);
    if (body)
        fprintf(f, "Content-Type: application/json\r\nContent-Length: %zu\r\n", strlen(body));
    else if (strcmp(method, "POST") == 0 || strcmp(method, "PATCH") == 0 || strcmp(method, "PUT") == 0)
        fprintf(f, "Content-Length: 0\r\n");
    fputs("\r\n", f);
    if (body)
        fputs(body, f);
    if (fclose(f) != 0) {
        free(req);
        return NULL;
    }
    return req;
}

int hutch_http(const struct hutch_target *t, const char *method, const char *path, const char *body,
               struct hutch_http_resp *r, struct hx_err *e)
{
    memset(r, 0, sizeof(*r));
    char desc[300];
    target_desc(t, desc, sizeof(desc));
    autoclose int fd = connect_target(t, e);
    if (fd < 0)
        return fd;
    autofree char *req = build_request(t, method, path, "Accept: application/json\r\nConnection: close\r\n", body);
    if (!req)
        return hx_fail(e, ENOMEM, "out of memory");
    int64_t deadline = now_ms() + REST_TIMEOUT_MS;
    int rc = write_all(fd, req, strlen(req), deadline, e);
    if (rc < 0)
        return rc;
    struct resp_parser rp = { 0 };
    rc = read_response(fd, &rp, deadline, desc, NULL, NULL, e);
    if (rc < 0) {
        free(rp.body);
        return rc;
    }
    r->status = rp.p.status_code;
    snprintf(r->link_next, sizeof r->link_next, "%s", rp.link_next);
    r->body = rp.body ? rp.body : strdup("");
    r->len = rp.body_len;
    if (!r->body)
        return hx_fail(e, ENOMEM, "out of memory");
    return 0;
}

int hutch_http_stream(const struct hutch_target *t, const char *path, void (*sink)(void *ud, const char *p, size_t n),
                      void *ud, int64_t timeout_ms, struct hx_err *e)
{
    char desc[300];
    target_desc(t, desc, sizeof(desc));
    autoclose int fd = connect_target(t, e);
    if (fd < 0)
        return fd;
    autofree char *req = build_request(t, "GET", path, "Accept: text/event-stream\r\nConnection: close\r\n", NULL);
    if (!req)
        return hx_fail(e, ENOMEM, "out of memory");
    int64_t deadline = now_ms() + timeout_ms;
    int rc = write_all(fd, req, strlen(req), deadline, e);
    if (rc < 0)
        return rc;
    struct resp_parser rp = { 0 };
    rp.sink = sink;
    rp.sink_ud = ud;
    rc = read_response(fd, &rp, deadline, desc, NULL, NULL, e);
    if (rc == 0 && (rp.p.status_code < 200 || rp.p.status_code > 299))
        rc = fail_http_status(rp.p.status_code, rp.body ? rp.body : "", rp.body_len, e);
    free(rp.body);
    return rc;
}

void hutch_http_resp_free(struct hutch_http_resp *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static int status_errno(int status)
{
    switch (status) {
    case 400: return EINVAL;
    case 401: case 403: return EACCES;
    case 404: return ENOENT;
    case 409: return EEXIST;
    case 429: return EAGAIN;
    default: return EPROTO;
    }
}

/* The server's errors are {"code","message"}: show the message. */
static int fail_http_status(int status, const char *body, size_t len, struct hx_err *e)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
    int rc;
    if (msg && *msg)
        rc = hx_fail(e, status_errno(status), "%s", msg);
    else
        rc = hx_fail(e, status_errno(status), "HTTP %d from server: %.160s", status, len ? body : "(empty body)");
    json_decref(j);
    return rc;
}

int hutch_rest(const struct hutch_target *t, const char *method, const char *path, json_t *body, json_t **out,
               struct hx_err *e)
{
    if (out)
        *out = NULL;
    autofree char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text)
        return hx_fail(e, ENOMEM, "out of memory");
    struct hutch_http_resp r;
    int rc = hutch_http(t, method, path, text, &r, e);
    if (rc < 0)
        return rc;
    if (r.status < 200 || r.status > 299) {
        rc = fail_http_status(r.status, r.body, r.len, e);
        hutch_http_resp_free(&r);
        return rc;
    }
    if (out) {
        if (r.len == 0)
            *out = json_null();
        else {
            json_error_t je;
            *out = json_loadb(r.body, r.len, JSON_DECODE_ANY, &je);
            if (!*out)
                rc = hx_fail(e, EPROTO, "invalid JSON from server: %s", je.text);
        }
    }
    hutch_http_resp_free(&r);
    return rc;
}

/* ------------------------------------------- raw file channel (hutch's) */


#define FILE_IDLE_MS 60000  /* no byte moved for this long: the transfer failed */

/* path, percent-encoded for a query value ('/' kept) */
char *hutch_query_escape(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-._~/", *p))
            *o++ = (char)*p;
        else
            o += sprintf(o, "%%%02X", *p);
    }
    *o = 0;
    return out;
}

static char *file_url(const char *id, const char *path, int mode)
{
    autofree char *q = hutch_query_escape(path);
    char *url = NULL;
    if (!q || !hutch_id_safe(id))
        return NULL;
    if (mode >= 0 ? asprintf(&url, "/hutch/v1/sandboxes/%s/files?path=%s&mode=%o", id, q, (unsigned)mode) < 0
                  : asprintf(&url, "/hutch/v1/sandboxes/%s/files?path=%s", id, q) < 0)
        return NULL;
    return url;
}

/* A non-2xx answer: -ENOSYS when the server has no such route (an older
 * hutchd: the caller falls back), else the server's message. */
static int file_fail(int status, const char *body, size_t len, struct hx_err *e)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    const char *code = json_string_value(json_object_get(j, "code"));
    bool no_route = (status == 404 && code && strcmp(code, "NOT_FOUND") == 0) || status == 405;
    json_decref(j);
    if (no_route)
        return hx_fail(e, ENOSYS, "the server has no raw file channel");
    return fail_http_status(status, body, len, e);
}

static int on_file_head(http_parser *p)
{
    return 1; /* no body: only the head is parsed here */
}

int hutch_file_get(const struct hutch_target *t, const char *id, const char *path, int out,
                   void (*progress)(void *ud, size_t n), void *ud, uint64_t *size, struct hx_err *e)
{
    char desc[300];
    target_desc(t, desc, sizeof(desc));
    autofree char *url = file_url(id, path, -1);
    if (!url)
        return hx_fail(e, EINVAL, "bad sandbox id or out of memory");
    autoclose int fd = connect_target(t, e);
    if (fd < 0)
        return fd;
    autofree char *req = build_request(t, "GET", url, "Connection: close\r\n", NULL);
    if (!req)
        return hx_fail(e, ENOMEM, "out of memory");
    int rc = write_all(fd, req, strlen(req), now_ms() + REST_TIMEOUT_MS, e);
    if (rc < 0)
        return rc;
    /* the head, up to its blank line; what came after it is the body's start */
    char head[16384];
    size_t hl = 0;
    char *end = NULL;
    int64_t deadline = now_ms() + REST_TIMEOUT_MS;
    while (!end) {
        if (hl == sizeof head - 1)
            return hx_fail(e, EPROTO, "%s: response head too large", desc);
        ssize_t n = recv(fd, head + hl, sizeof head - 1 - hl, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if ((rc = wait_fd(fd, POLLIN, deadline, "waiting for the response", e)) < 0)
                return rc;
            continue;
        }
        if (n <= 0)
            return hx_fail(e, n < 0 ? errno : ECONNRESET, "%s: connection closed before a response", desc);
        hl += (size_t)n;
        head[hl] = 0;
        end = strstr(head, "\r\n\r\n");
    }
    size_t body_at = (size_t)(end + 4 - head);
    http_parser hp;
    http_parser_init(&hp, HTTP_RESPONSE);
    static const http_parser_settings hs = {.on_headers_complete = on_file_head};
    http_parser_execute(&hp, &hs, head, body_at);
    if (HTTP_PARSER_ERRNO(&hp) != HPE_OK)
        return hx_fail(e, EPROTO, "%s: bad HTTP response: %s", desc, http_errno_description(HTTP_PARSER_ERRNO(&hp)));
    if (hp.status_code != 200) {
        /* an error's body is small JSON: the rest of it through the ordinary reader */
        struct resp_parser rp = {0};
        http_parser_init(&rp.p, HTTP_RESPONSE);
        rp.p.data = &rp;
        http_parser_execute(&rp.p, &resp_settings, head, hl);
        while (!rp.complete && HTTP_PARSER_ERRNO(&rp.p) == HPE_OK) {
            char buf[4096];
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
                if (errno == EAGAIN && (rc = wait_fd(fd, POLLIN, deadline, "reading the error", e)) < 0)
                    break;
                continue;
            }
            http_parser_execute(&rp.p, &resp_settings, buf, n > 0 ? (size_t)n : 0);
            if (n <= 0)
                break;
        }
        rc = file_fail(hp.status_code, rp.body ? rp.body : "", rp.body_len, e);
        free(rp.body);
        return rc;
    }
    if (!(hp.flags & F_CONTENTLENGTH) || hp.content_length == ULLONG_MAX)
        return hx_fail(e, EPROTO, "%s: the download has no Content-Length", desc);
    uint64_t total = hp.content_length, got = 0;
    *size = total;
    size_t early = hl - body_at;
    if (early > total)
        early = (size_t)total;
    if (early) {
        for (size_t off = 0; off < early;) {
            ssize_t w = write(out, head + body_at + off, early - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return hx_fail(e, errno, "write: %m");
            off += (size_t)w;
        }
        got = early;
        if (progress)
            progress(ud, early);
    }
    /* the rest: socket → pipe → file with splice (no copy here), or read/write where out cannot splice */
    int p[2] = {-1, -1};
    if (pipe2(p, O_CLOEXEC) < 0)
        return hx_fail(e, errno, "pipe: %m");
    (void)fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    bool copy = false;
    autofree uint8_t *buf = NULL;
    rc = 0;
    while (got < total && rc == 0) {
        size_t want = total - got > (1u << 20) ? (1u << 20) : (size_t)(total - got);
        ssize_t n;
        if (!copy) {
            n = splice(fd, NULL, p[1], NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n < 0 && errno == EINVAL) {
                copy = true;
                continue;
            }
        } else {
            if (!buf && !(buf = malloc(1u << 20))) {
                rc = hx_fail(e, ENOMEM, "out of memory");
                break;
            }
            n = recv(fd, buf, want, 0);
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            rc = wait_fd(fd, POLLIN, now_ms() + FILE_IDLE_MS, "receiving the file", e);
            continue;
        }
        if (n <= 0) {
            rc = hx_fail(e, n < 0 ? errno : ECONNRESET, "%s: the download of %s ended after %" PRIu64 " of %" PRIu64
                         " bytes (the file changed or the sandbox stopped)", desc, path, got, total);
            break;
        }
        for (size_t left = (size_t)n; left > 0 && rc == 0;) {
            ssize_t w = copy ? write(out, buf + ((size_t)n - left), left) : splice(p[0], NULL, out, NULL, left, SPLICE_F_MOVE);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno == EINVAL && !copy) {
                /* out cannot take a splice: drain the pipe through a buffer */
                uint8_t tmp[65536];
                ssize_t r = read(p[0], tmp, left < sizeof tmp ? left : sizeof tmp);
                if (r > 0)
                    for (ssize_t o = 0; o < r && rc == 0;) {
                        ssize_t ww = write(out, tmp + o, (size_t)(r - o));
                        if (ww < 0 && errno == EINTR)
                            continue;
                        if (ww <= 0)
                            rc = hx_fail(e, errno, "write: %m");
                        else
                            o += ww;
                    }
                w = r;
            }
            if (w <= 0 && rc == 0)
                rc = hx_fail(e, w < 0 ? errno : EIO, "write: %m");
            if (w > 0)
                left -= (size_t)w;
        }
        got += (uint64_t)n;
        if (progress)
            progress(ud, (size_t)n);
    }
    close(p[0]);
    close(p[1]);
    return rc;
}

int hutch_file_put(const struct hutch_target *t, const char *id, const char *path, int in, uint64_t size, int mode,
                   void (*progress)(void *ud, size_t n), void *ud, struct hx_err *e)
{
    char desc[300];
    target_desc(t, desc, sizeof(desc));
    autofree char *url = file_url(id, path, mode);
    if (!url)
        return hx_fail(e, EINVAL, "bad sandbox id or out of memory");
    autoclose int fd = connect_target(t, e);
    if (fd < 0)
        return fd;
    char extra[160];
    snprintf(extra, sizeof extra, "Content-Type: application/octet-stream\r\nContent-Length: %" PRIu64
             "\r\nConnection: close\r\n", size);
    autofree char *req = build_request(t, "PUT", url, extra, NULL);
    if (!req)
        return hx_fail(e, ENOMEM, "out of memory");
    /* build_request adds "Content-Length: 0" to a PUT without a body: take ours only */
    char *dup = strstr(req, "Content-Length: 0\r\n");
    if (dup)
        memmove(dup, dup + 19, strlen(dup + 19) + 1);
    int rc = write_all(fd, req, strlen(req), now_ms() + REST_TIMEOUT_MS, e);
    if (rc < 0)
        return rc;
    /* the body with sendfile; an answer that comes first (an error) stops it */
    uint64_t sent = 0;
    off_t off = 0;
    while (sent < size) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT | POLLIN};
        int pr = poll(&pf, 1, FILE_IDLE_MS);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0)
            return hx_fail(e, ETIMEDOUT, "%s: the upload of %s stalled", desc, path);
        if (pf.revents & POLLIN)
            break; /* the server answered early */
        size_t want = size - sent > (8u << 20) ? (8u << 20) : (size_t)(size - sent);
        ssize_t n = sendfile(fd, in, &off, want);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
            break; /* the answer may say why */
        if (n < 0)
            return hx_fail(e, errno, "sendfile: %m");
        if (n == 0)
            return hx_fail(e, EIO, "%s shrank while it was sent", path);
        sent += (uint64_t)n;
        if (progress)
            progress(ud, (size_t)n);
    }
    struct resp_parser rp = {0};
    rc = read_response(fd, &rp, now_ms() + REST_TIMEOUT_MS, desc, NULL, NULL, e);
    if (rc == 0 && rp.p.status_code != 200)
        rc = file_fail(rp.p.status_code, rp.body ? rp.body : "", rp.body_len, e);
    else if (rc == 0 && sent < size)
        rc = hx_fail(e, EPROTO, "%s: the server answered before the upload ended", desc);
    free(rp.body);
    return rc;
}

#define LIST_PAGES_MAX 10000

/* The path and query of a next link: "/p?q" as is, or "http[s]://host/p?q". */
static int next_path(const char *url, char *out, size_t cap, struct hx_err *e)
{
    const char *p = url;
    if (strncasecmp(p, "http://", 7) == 0 || strncasecmp(p, "https://", 8) == 0) {
        p = strchr(strstr(p, "//") + 2, '/');
        if (!p)
            p = "/";
    }
    if (*p != '/' || strlen(p) >= cap)
        return hx_fail(e, EPROTO, "the server's next link is not a URL of this server: %.120s", url);
    for (const char *c = p; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return hx_fail(e, EPROTO, "the server's next link has a space or control character");
    snprintf(out, cap, "%s", p);
    return 0;
}

int hutch_rest_list(const struct hutch_target *t, const char *path, json_t **out, struct hx_err *e)
{
    *out = NULL;
    json_t *all = json_array(), *seen = json_object();
    char cur[512];
    int rc = 0;
    if (!all || !seen) {
        rc = hx_fail(e, ENOMEM, "out of memory");
        goto done;
    }
    snprintf(cur, sizeof cur, "%s", path);
    for (int page = 0;; page++) {
        if (page >= LIST_PAGES_MAX) {
            rc = hx_fail(e, E2BIG, "the list has more than %d pages", LIST_PAGES_MAX);
            goto done;
        }
        if (json_object_get(seen, cur)) {
            rc = hx_fail(e, ELOOP, "the server's next link repeats a page (%.120s)", cur);
            goto done;
        }
        json_object_set_new(seen, cur, json_true());
        struct hutch_http_resp r;
        if ((rc = hutch_http(t, "GET", cur, NULL, &r, e)) < 0)
            goto done;
        if (r.status < 200 || r.status > 299) {
            rc = fail_http_status(r.status, r.body, r.len, e);
            hutch_http_resp_free(&r);
            goto done;
        }
        json_error_t je;
        json_t *items = json_loadb(r.body, r.len, 0, &je);
        char next[512];
        snprintf(next, sizeof next, "%s", r.link_next);
        hutch_http_resp_free(&r);
        if (!json_is_array(items)) {
            json_decref(items);
            rc = hx_fail(e, EPROTO, "the server did not return a list");
            goto done;
        }
        json_array_extend(all, items);
        json_decref(items);
        if (!next[0])
            break;
        if ((rc = next_path(next, cur, sizeof cur, e)) < 0)
            goto done;
    }
    *out = all;
    all = NULL;
done:
    json_decref(all);
    json_decref(seen);
    return rc;
}

/* ------------------------------------------------------------- WebSocket */

struct hutch_conn {
    int fd;
    wslay_event_context_ptr ws;
    uint8_t *extra; /* bytes read with the 101 response: frames, consumed first */
    size_t extra_len, extra_off;
    char sandbox_id[128];
    char desc[300];
    int64_t next_id;
    int64_t next_stream_id;
    json_t *responses; /* "id" -> response message, until taken */
    hutch_stream_cb scb;
    void *sud;
    bool binary;       /* stream bytes travel as binary messages, both ways */
    /* Binary frames we build ourselves (whole frames, masked, in order), sent before anything
     * wslay queues after them: wslay masks into a 4 KiB buffer, one send() per 4 KiB. */
    uint8_t *raw;
    size_t raw_len, raw_off, raw_cap;
    bool eof;          /* the peer closed the TCP connection */
    bool closed;       /* we received a close frame */
    uint16_t close_code;
    char close_reason[124];
    int cb_err;        /* sticky error raised inside a wslay callback */
    struct hx_err cb_e;
    int64_t last_ping;
    size_t recv_budget; /* bytes one hutch_pump may still read (callers take responses between pumps) */
};

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    struct hutch_conn *c = ud;
    if (c->extra_off < c->extra_len) {
        size_t n = c->extra_len - c->extra_off;
        if (n > len)
            n = len;
        memcpy(buf, c->extra + c->extra_off, n);
        c->extra_off += n;
        return (ssize_t)n;
    }
    if (c->recv_budget == 0) { /* back to the caller, who may be waiting for a response read already */
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > c->recv_budget)
        len = c->recv_budget;
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, MSG_DONTWAIT);
        if (n > 0) {
            c->recv_budget -= (size_t)n;
            return n;
        }
        if (n == 0) {
            c->eof = true;
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        else {
            c->eof = true;
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        }
        return -1;
    }
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct hutch_conn *c = ud;
    for (;;) {
        ssize_t n = send(c->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL | ((flags & WSLAY_MSG_MORE) ? MSG_MORE : 0));
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        else {
            c->eof = true;
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        }
        return -1;
    }
}

static int ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    /* RFC 6455 10.3: masking keys must be unpredictable. */
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

static void conn_set_error(struct hutch_conn *c, int rc, const struct hx_err *e)
{
    if (!c->cb_err) {
        c->cb_err = rc;
        c->cb_e = *e;
    }
}

static void dispatch_stream(struct hutch_conn *c, const char *method, json_t *params)
{
    static const struct { const char *name; enum hutch_stream_event ev; } kinds[] = {
        { "$sandbox.stream.start", HUTCH_STREAM_START },   { "$sandbox.stream.enqueue", HUTCH_STREAM_DATA },
        { "$sandbox.stream.end", HUTCH_STREAM_END },       { "$sandbox.stream.error", HUTCH_STREAM_ERROR },
        { "$sandbox.stream.cancel", HUTCH_STREAM_CANCEL },
    };
    size_t k = 0;
    while (k < HX_ARRAY_LEN(kinds) && strcmp(kinds[k].name, method) != 0)
        k++;
    if (k == HX_ARRAY_LEN(kinds))
        return; /* other notifications (deno watcher, ...) are not ours */
    json_t *sid = json_object_get(params, "streamId");
    if (!json_is_integer(sid) || !c->scb)
        return;
    struct hx_err e = { 0 };
    int rc;
    if (kinds[k].ev == HUTCH_STREAM_DATA) {
        json_t *d = json_object_get(params, "data");
        if (!json_is_string(d)) {
            hx_fail(&e, EPROTO, "stream data without a base64 string");
            conn_set_error(c, -EPROTO, &e);
            return;
        }
        size_t slen = json_string_length(d);
        size_t cap = hx_b64_decoded_max(slen);
        autofree uint8_t *buf = malloc(cap ? cap : 1);
        if (!buf) {
            hx_fail(&e, ENOMEM, "out of memory");
            conn_set_error(c, -ENOMEM, &e);
            return;
        }
        if (hx_b64_decode(json_string_value(d), slen, buf, &cap) < 0) {
            hx_fail(&e, EPROTO, "stream data is not valid base64");
            conn_set_error(c, -EPROTO, &e);
            return;
        }
        rc = c->scb(c->sud, HUTCH_STREAM_DATA, json_integer_value(sid), buf, cap, &e);
    } else if (kinds[k].ev == HUTCH_STREAM_ERROR) {
        /* the error's message, for whoever reports it */
        json_t *m = json_object_get(json_object_get(params, "error"), "message");
        const char *msg = json_is_string(m) ? json_string_value(m) : "";
        rc = c->scb(c->sud, HUTCH_STREAM_ERROR, json_integer_value(sid), (const uint8_t *)msg, strlen(msg), &e);
    } else {
        rc = c->scb(c->sud, kinds[k].ev, json_integer_value(sid), NULL, 0, &e);
    }
    if (rc < 0)
        conn_set_error(c, rc, &e);
}

/* hutch's binary stream message: an 8-byte big-endian stream id, then the bytes. */
static void handle_binary(struct hutch_conn *c, const uint8_t *msg, size_t len)
{
    struct hx_err e = { 0 };
    if (!c->binary || len < 8) {
        hx_fail(&e, EPROTO, "%s", !c->binary ? "a binary message the server was not asked for"
                                             : "a binary message shorter than its stream id");
        conn_set_error(c, -EPROTO, &e);
        return;
    }
    uint64_t sid = 0;
    for (int i = 0; i < 8; i++)
        sid = sid << 8 | msg[i];
    if (sid >= (1ull << 53) || !c->scb)
        return;
    int rc = c->scb(c->sud, HUTCH_STREAM_DATA, (int64_t)sid, msg + 8, len - 8, &e);
    if (rc < 0)
        conn_set_error(c, rc, &e);
}

static void handle_text(struct hutch_conn *c, const uint8_t *msg, size_t len)
{
    if (len == 4 && memcmp(msg, "pong", 4) == 0)
        return;
    json_error_t je;
    json_t *j = json_loadb((const char *)msg, len, 0, &je);
    if (!j || !json_is_object(j)) {
        struct hx_err e;
        hx_fail(&e, EPROTO, "invalid JSON-RPC message from server: %s", j ? "not an object" : je.text);
        conn_set_error(c, -EPROTO, &e);
        json_decref(j);
        return;
    }
    json_t *id = json_object_get(j, "id");
    const char *method = json_string_value(json_object_get(j, "method"));
    if (json_is_integer(id) && (json_object_get(j, "result") || json_object_get(j, "error"))) {
        char key[32];
        snprintf(key, sizeof(key), "%" JSON_INTEGER_FORMAT, json_integer_value(id));
        json_object_set(c->responses, key, j);
    } else if (method && !id) {
        dispatch_stream(c, method, json_object_get(j, "params"));
    }
    /* requests from the server (id + method) are not part of the protocol: ignored */
    json_decref(j);
}

static void ws_on_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
    struct hutch_conn *c = ud;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        handle_text(c, arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_BINARY_FRAME) {
        handle_binary(c, arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        c->closed = true;
        c->close_code = arg->status_code;
        if (arg->msg_length > 2) {
            size_t n = arg->msg_length - 2;
            if (n >= sizeof(c->close_reason))
                n = sizeof(c->close_reason) - 1;
            memcpy(c->close_reason, arg->msg + 2, n);
            c->close_reason[n] = '\0';
            for (char *p = c->close_reason; *p; p++)
                if ((unsigned char)*p < 0x20)
                    *p = '?'; /* keep the terminal sane */
        }
    }
}

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv_cb,
    .send_callback = ws_send_cb,
    .genmask_callback = ws_genmask_cb,
    .on_msg_recv_callback = ws_on_msg_cb,
};

bool hutch_id_safe(const char *id)
{
    /* The id goes into a URL path: no '/', '?', '%', '..' tricks. */
    if (!*id || strlen(id) > 100)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '-'))
            return false;
    return true;
}

/* The opening handshake of a WebSocket on fd (RFC 6455 4.1): the request
 * with a fresh key and more_headers, then the answer's head in rp (a body
 * too, which the caller frees) and any bytes after it in *extra. Returns 0
 * with rp's status (for a 101 the accept value is checked), or a negative
 * errno. */
static int ws_handshake(int fd, const struct hutch_target *t, const char *path, const char *more_headers,
                        int64_t deadline, const char *desc, struct resp_parser *rp, uint8_t **extra,
                        size_t *extra_len, struct hx_err *e)
{
    uint8_t raw[16];
    if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
        return hx_fail(e, EIO, "getrandom: %m");
    autofree char *key = hutch_b64_encode(raw, sizeof(raw));
    autofree char *hdrs = NULL;
    if (!key || asprintf(&hdrs, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                                "Sec-WebSocket-Version: 13\r\n%s", key, more_headers) < 0) {
        hdrs = NULL;
        return hx_fail(e, ENOMEM, "out of memory");
    }
    autofree char *req = build_request(t, "GET", path, hdrs, NULL);
    if (!req)
        return hx_fail(e, ENOMEM, "out of memory");
    int rc = write_all(fd, req, strlen(req), now_ms() + REST_TIMEOUT_MS, e);
    if (rc < 0)
        return rc;
    rc = read_response(fd, rp, deadline, desc, extra, extra_len, e);
    if (rc < 0 || rp->p.status_code != 101)
        return rc;
    /* the accept value proves the server understood our key */
    char concat[64];
    snprintf(concat, sizeof(concat), "%s%s", key, WS_GUID);
    uint8_t digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)concat, strlen(concat), digest);
    autofree char *expect = hutch_b64_encode(digest, sizeof(digest));
    if (!expect || strcmp(expect, rp->ws_accept) != 0)
        return hx_fail(e, EPROTO, "%s: bad Sec-WebSocket-Accept in the upgrade response", desc);
    return 0;
}

static int ws_open(const struct hutch_target *t, const char *path, json_t *config, struct hutch_conn **out,
                   struct hx_err *e)
{
    *out = NULL;
    char desc[300];
    target_desc(t, desc, sizeof(desc));
    autoclose int fd = connect_target(t, e);
    if (fd < 0)
        return fd;

    autofree char *cfg_json = config ? json_dumps(config, JSON_COMPACT) : NULL;
    autofree char *cfg_b64 = cfg_json ? hutch_b64_encode(cfg_json, strlen(cfg_json)) : NULL;
    autofree char *hdrs = NULL;
    if ((config && !cfg_b64) || asprintf(&hdrs, "x-hutch-streams: binary\r\n%s%s%s",
                                         cfg_b64 ? "x-deno-sandbox-config: " : "", cfg_b64 ? cfg_b64 : "",
                                         cfg_b64 ? "\r\n" : "") < 0) {
        hdrs = NULL;
        return hx_fail(e, ENOMEM, "out of memory");
    }
    struct resp_parser rp = { 0 };
    uint8_t *extra = NULL;
    size_t extra_len = 0;
    int rc = ws_handshake(fd, t, path, hdrs, now_ms() + UPGRADE_TIMEOUT_MS, desc, &rp, &extra, &extra_len, e);
    if (rc == 0 && rp.p.status_code != 101)
        rc = fail_http_status(rp.p.status_code, rp.body ? rp.body : "", rp.body_len, e);
    free(rp.body);
    if (rc < 0) {
        free(extra);
        return rc;
    }

    struct hutch_conn *c = calloc(1, sizeof(*c));
    if (!c || !(c->responses = json_object())) {
        free(c);
        free(extra);
        return hx_fail(e, ENOMEM, "out of memory");
    }
    c->extra = extra;
    c->extra_len = extra_len;
    c->binary = rp.streams_binary;
    snprintf(c->desc, sizeof(c->desc), "%s", desc);
    if (header_safe(rp.sandbox_id))
        snprintf(c->sandbox_id, sizeof(c->sandbox_id), "%s", rp.sandbox_id);
    if (wslay_event_context_client_init(&c->ws, &ws_callbacks, c) != 0) {
        json_decref(c->responses);
        free(c->extra);
        free(c);
        return hx_fail(e, ENOMEM, "wslay: out of memory");
    }
    wslay_event_config_set_max_recv_msg_length(c->ws, WS_MSG_MAX);
    c->fd = hx_steal_fd(&fd);
    c->last_ping = now_ms();
    *out = c;
    return 0;
}

int hutch_ws_upgrade(const struct hutch_target *t, const char *path, const char *subprotocol, int *fd_out,
                     uint8_t **extra, size_t *extra_len, int64_t *pid, char **code, struct hx_err *e)
{
    *fd_out = -1;
    *extra = NULL;
    *extra_len = 0;
    if (code)
        *code = NULL;
    char desc[300];
    target_desc(t, desc, sizeof(desc));
    autoclose int fd = connect_target(t, e);
    if (fd < 0)
        return fd;
    autofree char *hdrs = NULL;
    if (asprintf(&hdrs, "Sec-WebSocket-Protocol: %s\r\n", subprotocol) < 0) {
        hdrs = NULL;
        return hx_fail(e, ENOMEM, "out of memory");
    }
    struct resp_parser rp = { 0 };
    int rc = ws_handshake(fd, t, path, hdrs, now_ms() + REST_TIMEOUT_MS, desc, &rp, extra, extra_len, e);
    if (rc == 0 && rp.p.status_code != 101) {
        json_t *j = json_loadb(rp.body ? rp.body : "", rp.body_len, 0, NULL);
        const char *c = json_string_value(json_object_get(j, "code"));
        if ((rp.p.status_code == 404 && c && strcmp(c, "NOT_FOUND") == 0) || rp.p.status_code == 405)
            rc = hx_fail(e, ENOSYS, "the server has no %s endpoint", subprotocol);
        else
            rc = fail_http_status(rp.p.status_code, rp.body ? rp.body : "", rp.body_len, e);
        if (code && c)
            *code = strdup(c);
        json_decref(j);
    } else if (rc == 0) {
        if (strcmp(rp.subprotocol, subprotocol) != 0)
            rc = hx_fail(e, EPROTO, "%s: the upgrade answered subprotocol \"%.60s\", not %s", desc, rp.subprotocol,
                         subprotocol);
        else if (pid)
            *pid = strtoll(rp.hutch_pid, NULL, 10);
    }
    free(rp.body);
    if (rc < 0) {
        free(*extra);
        *extra = NULL;
        *extra_len = 0;
        return rc;
    }
    *fd_out = hx_steal_fd(&fd);
    return 0;
}

int hutch_create(const struct hutch_target *t, json_t *config, struct hutch_conn **out, struct hx_err *e)
{
    return ws_open(t, "/api/v3/sandboxes/create", config, out, e);
}

int hutch_connect(const struct hutch_target *t, const char *id, struct hutch_conn **out, struct hx_err *e)
{
    *out = NULL;
    if (!hutch_id_safe(id))
        return hx_fail(e, EINVAL, "invalid sandbox id '%.100s'", id);
    char path[160];
    snprintf(path, sizeof(path), "/api/v3/sandbox/%s/connect", id);
    return ws_open(t, path, NULL, out, e);
}

const char *hutch_conn_sandbox_id(const struct hutch_conn *c)
{
    return c->sandbox_id;
}

void hutch_conn_on_stream(struct hutch_conn *c, hutch_stream_cb cb, void *ud)
{
    c->scb = cb;
    c->sud = ud;
}

size_t hutch_conn_queued(const struct hutch_conn *c)
{
    return wslay_event_get_queued_msg_length(c->ws) + (c->raw_len - c->raw_off);
}

static bool want_write(const struct hutch_conn *c)
{
    return c->raw_off < c->raw_len || wslay_event_want_write(c->ws);
}

/* Our own frames first, then wslay's queue. Nonzero only when the connection broke. */
static int flush_out(struct hutch_conn *c)
{
    while (c->raw_off < c->raw_len) {
        ssize_t n = send(c->fd, c->raw + c->raw_off, c->raw_len - c->raw_off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n < 0) {
            c->eof = true;
            return -1;
        }
        c->raw_off += (size_t)n;
    }
    c->raw_off = c->raw_len = 0;
    return wslay_event_want_write(c->ws) ? wslay_event_send(c->ws) : 0;
}

/* RFC 6455 5.3 masking, a word at a time: key4 repeated, starting at payload offset 0. */
void hutch_ws_mask(uint8_t *out, const uint8_t *in, size_t n, const uint8_t key4[4], size_t phase)
{
    uint8_t k8[8];
    for (int i = 0; i < 8; i++)
        k8[i] = key4[(phase + (size_t)i) & 3];
    uint64_t k;
    memcpy(&k, k8, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, in + i, 8);
        v ^= k;
        memcpy(out + i, &v, 8);
    }
    for (; i < n; i++)
        out[i] = in[i] ^ k8[i & 7];
}

size_t hutch_ws_client_head(uint8_t h[10], uint8_t op, uint64_t plen)
{
    h[0] = (uint8_t)(0x80 | op); /* FIN: one frame a message */
    if (plen < 126) {
        h[1] = (uint8_t)(0x80 | plen);
        return 2;
    }
    if (plen < 65536) {
        h[1] = 0x80 | 126;
        h[2] = (uint8_t)(plen >> 8);
        h[3] = (uint8_t)plen;
        return 4;
    }
    h[1] = 0x80 | 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)(plen >> (56 - 8 * i));
    return 10;
}

/* One binary message [8-byte stream id][data] as a frame we mask and send ourselves. Only
 * while wslay holds nothing (a frame of its own half sent, or queued before this one). */
static int queue_raw_binary(struct hutch_conn *c, int64_t sid, const void *data, size_t n, struct hx_err *e)
{
    if (c->raw_off) { /* what went out is not kept */
        memmove(c->raw, c->raw + c->raw_off, c->raw_len - c->raw_off);
        c->raw_len -= c->raw_off;
        c->raw_off = 0;
    }
    size_t plen = 8 + n, hl = plen < 126 ? 2 : plen < 65536 ? 4 : 10;
    size_t need = c->raw_len + hl + 4 + plen;
    if (need > c->raw_cap) {
        size_t cap = c->raw_cap ? c->raw_cap : 1 << 20;
        while (cap < need)
            cap *= 2;
        uint8_t *nb = realloc(c->raw, cap);
        if (!nb)
            return hx_fail(e, ENOMEM, "out of memory");
        c->raw = nb;
        c->raw_cap = cap;
    }
    uint8_t *f = c->raw + c->raw_len;
    hutch_ws_client_head(f, WSLAY_BINARY_FRAME, plen);
    uint8_t *key = f + hl;
    if (ws_genmask_cb(c->ws, key, 4, c) != 0) /* RFC 6455 10.3: unpredictable keys, as wslay's */
        return hx_fail(e, EIO, "getrandom: %m");
    uint8_t head[8];
    for (int i = 0; i < 8; i++)
        head[i] = (uint8_t)((uint64_t)sid >> (56 - 8 * i));
    hutch_ws_mask(key + 4, head, 8, key, 0);
    hutch_ws_mask(key + 12, data, n, key, 8);
    c->raw_len = need;
    if (flush_out(c) != 0 && c->eof)
        return hx_fail(e, ECONNRESET, "connection to %s lost", c->desc);
    return 0;
}

static int conn_broken(struct hutch_conn *c, struct hx_err *e)
{
    if (c->cb_err) {
        *e = c->cb_e;
        return c->cb_err;
    }
    if (c->closed) {
        if (c->close_reason[0])
            return hx_fail(e, ECONNRESET, "connection closed by server (%u: %s)", c->close_code, c->close_reason);
        return hx_fail(e, ECONNRESET, "connection closed by server (code %u)", c->close_code);
    }
    if (c->eof)
        return hx_fail(e, ECONNRESET, "connection to %s lost", c->desc);
    return 0;
}

static int queue_msg(struct hutch_conn *c, uint8_t opcode, const uint8_t *msg, size_t len, struct hx_err *e)
{
    int rc = conn_broken(c, e);
    if (rc < 0)
        return rc;
    struct wslay_event_msg m = { .opcode = opcode, .msg = msg, .msg_length = len };
    if (wslay_event_queue_msg(c->ws, &m) != 0)
        return hx_fail(e, ECONNRESET, "connection to %s is closing", c->desc);
    /* Push out what the socket takes now; the rest goes in hutch_pump. */
    if (flush_out(c) != 0 && c->eof)
        return hx_fail(e, ECONNRESET, "connection to %s lost", c->desc);
    return 0;
}

static int queue_json(struct hutch_conn *c, json_t *msg, struct hx_err *e)
{
    /* stream data is base64 and other text is ours: compact ASCII JSON */
    autofree char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text)
        return hx_fail(e, ENOMEM, "out of memory");
    return queue_msg(c, WSLAY_TEXT_FRAME, (const uint8_t *)text, strlen(text), e);
}

int hutch_send_request(struct hutch_conn *c, const char *method, json_t *params, int64_t *id, struct hx_err *e)
{
    int64_t rid = c->next_id++;
    json_t *msg = json_pack("{s:s, s:I, s:s, s:o}", "jsonrpc", "2.0", "id", (json_int_t)rid, "method", method,
                            "params", params ? params : json_object());
    if (!msg)
        return hx_fail(e, ENOMEM, "building %s request", method);
    if (id)
        *id = rid;
    return queue_json(c, msg, e);
}

static int fail_rpc_error(json_t *err, char **rpc_code, struct hx_err *e)
{
    const char *ctor = json_string_value(json_object_get(err, "constructorName"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    const char *code = json_string_value(json_object_get(err, "code"));
    if (rpc_code)
        *rpc_code = code ? strdup(code) : NULL;
    if (!msg)
        msg = "(no message)";
    if (ctor && *ctor && strcmp(ctor, "Error") != 0)
        return hx_fail(e, EREMOTEIO, "%.60s: %.180s", ctor, msg);
    return hx_fail(e, EREMOTEIO, "%.240s", msg);
}

int hutch_take_response(struct hutch_conn *c, int64_t id, json_t **ok, char **rpc_code, struct hx_err *e)
{
    if (ok)
        *ok = NULL;
    if (rpc_code)
        *rpc_code = NULL;
    char key[32];
    snprintf(key, sizeof(key), "%" PRId64, id);
    json_t *msg = json_object_get(c->responses, key);
    if (!msg)
        return 0;
    json_incref(msg);
    json_object_del(c->responses, key);
    int rc = 1;
    json_t *result = json_object_get(msg, "result");
    json_t *jerr = json_object_get(msg, "error");
    if (json_is_object(result)) {
        json_t *rerr = json_object_get(result, "error");
        if (rerr && !json_is_null(rerr))
            rc = fail_rpc_error(rerr, rpc_code, e);
        else if (ok) {
            json_t *v = json_object_get(result, "ok");
            *ok = v ? json_incref(v) : json_null();
        }
    } else if (json_is_object(jerr)) {
        /* JSON-RPC level error: unknown method, bad params */
        const char *m = json_string_value(json_object_get(jerr, "message"));
        rc = hx_fail(e, EREMOTEIO, "RPC error %" JSON_INTEGER_FORMAT ": %.200s",
                     json_integer_value(json_object_get(jerr, "code")), m ? m : "(no message)");
    } else {
        rc = hx_fail(e, EPROTO, "malformed JSON-RPC response from server");
    }
    json_decref(msg);
    return rc;
}

int hutch_call(struct hutch_conn *c, const char *method, json_t *params, json_t **ok, char **rpc_code,
               struct hx_err *e)
{
    int64_t id;
    int rc = hutch_send_request(c, method, params, &id, e);
    if (rc < 0)
        return rc;
    for (;;) {
        rc = hutch_take_response(c, id, ok, rpc_code, e);
        if (rc != 0)
            return rc < 0 ? rc : 0;
        rc = hutch_pump(c, NULL, 0, -1, e);
        if (rc < 0 && rc != -EINTR)
            return rc;
    }
}

int64_t hutch_stream_new_id(struct hutch_conn *c)
{
    return c->next_stream_id++;
}

static int stream_notify(struct hutch_conn *c, const char *method, json_t *params, struct hx_err *e)
{
    json_t *msg = json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", method, "params", params);
    if (!msg)
        return hx_fail(e, ENOMEM, "building %s", method);
    return queue_json(c, msg, e);
}

int hutch_stream_start(struct hutch_conn *c, int64_t sid, struct hx_err *e)
{
    return stream_notify(c, "$sandbox.stream.start", json_pack("{s:I}", "streamId", (json_int_t)sid), e);
}

int hutch_stream_end(struct hutch_conn *c, int64_t sid, struct hx_err *e)
{
    return stream_notify(c, "$sandbox.stream.end", json_pack("{s:I}", "streamId", (json_int_t)sid), e);
}

int hutch_stream_write(struct hutch_conn *c, int64_t sid, const void *data, size_t n, struct hx_err *e)
{
    if (c->binary && !wslay_event_want_write(c->ws)) {
        int rc = conn_broken(c, e);
        return rc < 0 ? rc : queue_raw_binary(c, sid, data, n, e);
    }
    if (c->binary) {
        autofree uint8_t *msg = malloc(8 + n);
        if (!msg)
            return hx_fail(e, ENOMEM, "out of memory");
        for (int i = 0; i < 8; i++)
            msg[i] = (uint8_t)((uint64_t)sid >> (56 - 8 * i));
        memcpy(msg + 8, data, n);
        return queue_msg(c, WSLAY_BINARY_FRAME, msg, 8 + n, e);
    }
    /* Built by hand: the base64 needs no escaping, and this path carries all of stdin. */
    autofree char *b64 = hutch_b64_encode(data, n);
    if (!b64)
        return hx_fail(e, ENOMEM, "out of memory");
    autofree char *text = NULL;
    int len = asprintf(&text, "{\"jsonrpc\":\"2.0\",\"method\":\"$sandbox.stream.enqueue\",\"params\":"
                              "{\"streamId\":%" PRId64 ",\"data\":\"%s\"}}", sid, b64);
    if (len < 0) {
        text = NULL;
        return hx_fail(e, ENOMEM, "out of memory");
    }
    return queue_msg(c, WSLAY_TEXT_FRAME, (const uint8_t *)text, (size_t)len, e);
}

static void maybe_ping(struct hutch_conn *c)
{
    int64_t now = now_ms();
    if (now - c->last_ping < PING_INTERVAL_MS || c->closed || c->eof)
        return;
    c->last_ping = now;
    /* The SDK's keep-alive: a text "ping", answered by "pong". */
    struct wslay_event_msg m = { .opcode = WSLAY_TEXT_FRAME, .msg = (const uint8_t *)"ping", .msg_length = 4 };
    (void)wslay_event_queue_msg(c->ws, &m);
}

int hutch_pump(struct hutch_conn *c, struct pollfd *extra, nfds_t nextra, int timeout_ms, struct hx_err *e)
{
    int rc = conn_broken(c, e);
    if (rc < 0)
        return rc;
    maybe_ping(c);
    if (want_write(c) && flush_out(c) != 0) {
        rc = conn_broken(c, e);
        return rc < 0 ? rc : hx_fail(e, ECONNRESET, "connection to %s lost", c->desc);
    }
    for (nfds_t i = 0; i < nextra; i++)
        extra[i].revents = 0;
    bool ready = c->extra_off < c->extra_len; /* frames that came with the 101 */
    if (!ready) {
        struct pollfd pfd[1 + 8];
        if (nextra > 8)
            return hx_fail(e, EINVAL, "too many fds to poll");
        pfd[0] = (struct pollfd){ .fd = c->fd, .events = POLLIN };
        if (want_write(c))
            pfd[0].events |= POLLOUT;
        for (nfds_t i = 0; i < nextra; i++)
            pfd[1 + i] = extra[i];
        int wait = PING_INTERVAL_MS - (int)(now_ms() - c->last_ping);
        if (wait < 0)
            wait = 0;
        if (timeout_ms >= 0 && timeout_ms < wait)
            wait = timeout_ms;
        int r = poll(pfd, 1 + nextra, wait);
        if (r < 0) {
            if (errno == EINTR)
                return -EINTR;
            return hx_fail(e, errno, "poll: %m");
        }
        for (nfds_t i = 0; i < nextra; i++)
            extra[i].revents = pfd[1 + i].revents;
        ready = pfd[0].revents & (POLLIN | POLLHUP | POLLERR);
        if ((pfd[0].revents & POLLOUT) && flush_out(c) != 0 && c->eof)
            return hx_fail(e, ECONNRESET, "connection to %s lost", c->desc);
    }
    c->recv_budget = PUMP_READ_MAX;
    if (ready && wslay_event_recv(c->ws) != 0) {
        rc = conn_broken(c, e);
        return rc < 0 ? rc : hx_fail(e, EPROTO, "WebSocket protocol error from %s", c->desc);
    }
    /* Responses that arrived before a close or error are still delivered by
     * hutch_take_response; the break is reported on the next pump. */
    if (c->cb_err)
        return conn_broken(c, e);
    return 0;
}

void hutch_conn_close(struct hutch_conn *c)
{
    if (!c)
        return;
    if (!c->eof) {
        (void)wslay_event_queue_close(c->ws, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
        int64_t deadline = now_ms() + CLOSE_WAIT_MS;
        /* Flush our close frame and wait for the server's, so it sees a clean close. */
        while (!c->eof && (want_write(c) || wslay_event_want_read(c->ws)) && remaining(deadline) > 0) {
            struct pollfd p = { .fd = c->fd, .events = POLLIN };
            if (want_write(c))
                p.events |= POLLOUT;
            if (poll(&p, 1, remaining(deadline)) <= 0)
                break;
            if ((p.revents & POLLOUT) && flush_out(c) != 0)
                break;
            c->recv_budget = PUMP_READ_MAX;
            if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && wslay_event_recv(c->ws) != 0)
                break;
        }
    }
    wslay_event_context_free(c->ws);
    close(c->fd);
    json_decref(c->responses);
    free(c->extra);
    free(c->raw);
    free(c);
}
