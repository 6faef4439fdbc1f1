/* The REPL channel: hutchd listens on 127.0.0.1 inside a sandbox's network
 * namespace (one listener per sandbox, made at its first spawnDenoRepl);
 * each REPL's driver (deno_repl.js) connects and sends its token first.
 * Requests and answers are JSON objects, one a line. Everything the driver
 * sends is hostile: sandbox code can reach the port, and the driver runs as
 * app beside the code it evaluates. Bounded: connections, line lengths,
 * calls per REPL, bytes queued, time to say hello and to answer. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "daemon/core/deno.h"
#include "daemon/core/deno_answer.h"
#include "daemon/core/sandbox.h"
#include "daemon/net/net.h"

#define CONNS_MAX 32                 /* connections per sandbox, said hello or not */
#define HELLO_MAX 256                /* bytes of the first line */
#define HELLO_MS 10000               /* to connect and say hello, once the channel is up */
#define ANSWER_MAX (16u << 20)       /* bytes of one answer line */
#define CALLS_MAX 64                 /* calls waiting per REPL */
#define QUEUED_MAX (32u << 20)       /* request bytes queued or unsent per REPL */

struct call {
    struct call *next;
    struct session *s;               /* NULL once the session left */
    json_t *rpc_id;
    json_int_t id;
    char *line;                      /* not yet sent (no driver yet); NULL once written */
    size_t len;
    int64_t deadline_ms;
};

struct conn;

struct deno_repl {
    struct deno_repl *next;
    struct deno_sb *ds;
    uint32_t pid;
    char token[33];
    struct conn *conn;
    struct call *calls;
    unsigned n_calls;
    json_int_t next_id;
    int64_t hello_deadline_ms;
};

struct deno_sb {
    struct deno_sb *next;            /* g_sbs */
    struct sandbox *sb;
    uv_tcp_t lis;
    uint16_t port;
    struct conn *conns;
    unsigned n_conns;
    struct deno_repl *repls;
};

struct conn {
    struct conn *next;
    struct deno_sb *ds;              /* NULL once the sandbox stopped */
    struct deno_repl *repl;          /* after its hello */
    uv_tcp_t tcp;
    char *buf;
    size_t len, cap;
    int64_t deadline_ms;             /* for its hello */
    bool closing;
};

struct wreq {
    uv_write_t req;
    char data[];
};

static struct deno_sb *g_sbs;        /* sandboxes with a listener */
static uv_timer_t g_timer;
static bool g_timer_init;
static unsigned g_live;              /* conns + calls: the timer runs while any exist */

static void conn_close(struct conn *c);
static void on_timer(uv_timer_t *t);

static void timer_kick(void)
{
    if (!g_timer_init) {
        uv_timer_init(g_daemon.loop, &g_timer);
        uv_unref((uv_handle_t *)&g_timer);
        g_timer_init = true;
    }
    if (!uv_is_active((uv_handle_t *)&g_timer))
        uv_timer_start(&g_timer, on_timer, 500, 500);
}

/* ---- calls --------------------------------------------------------------- */

static void call_answer(struct deno_repl *r, struct call *c, json_t *result /* stolen */)
{
    for (struct call **pp = &r->calls; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    r->n_calls--;
    g_live--;
    if (c->s)
        rpc_reply_result(c->s, c->rpc_id, result);
    else
        json_decref(result);
    json_decref(c->rpc_id);
    free(c->line);
    free(c);
}

static void on_written(uv_write_t *req, int status)
{
    (void)status; /* a broken channel shows as a read error */
    free(req);
}

static int conn_write(struct conn *c, const char *p, size_t n)
{
    struct wreq *w = malloc(sizeof *w + n);
    if (!w)
        return -ENOMEM;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0)
        free(w);
    return rc;
}

static size_t queued_bytes(struct deno_repl *r)
{
    size_t n = r->conn ? uv_stream_get_write_queue_size((uv_stream_t *)&r->conn->tcp) : 0;
    for (struct call *c = r->calls; c; c = c->next)
        n += c->line ? c->len : 0;
    return n;
}

void deno_repl_request(struct deno_repl *r, struct session *s, json_t *rpc_id, json_t *req)
{
    if (!req)
        return rpc_reply_rpc_error(s, rpc_id, -32603, "out of memory");
    if (r->n_calls >= CALLS_MAX) {
        json_decref(req);
        return rpc_reply_result(s, rpc_id, rpc_app_error("EAGAIN", "%u calls are already waiting for this REPL", r->n_calls));
    }
    json_int_t id = ++r->next_id;
    json_object_set_new(req, "id", json_integer(id));
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    size_t n = text ? strlen(text) : 0;
    if (!text || n > 4 * (size_t)DENO_CODE_MAX || queued_bytes(r) + n > QUEUED_MAX) {
        free(text);
        return rpc_reply_result(s, rpc_id, rpc_app_error(text ? "E2BIG" : "ENOMEM", "the request is too large for the REPL now"));
    }
    struct call *c = calloc(1, sizeof *c);
    char *line = realloc(text, n + 2);
    if (!c || !line) {
        free(c);
        free(line ? line : text);
        return rpc_reply_rpc_error(s, rpc_id, -32603, "out of memory");
    }
    line[n] = '\n';
    line[n + 1] = 0;
    c->s = s;
    c->rpc_id = json_incref(rpc_id);
    c->id = id;
    c->len = n + 1;
    c->deadline_ms = now_ms() + (int64_t)g_daemon.cfg->deno_call_timeout_ms;
    struct call **tail = &r->calls; /* in order: the driver starts them as they come */
    while (*tail)
        tail = &(*tail)->next;
    *tail = c;
    r->n_calls++;
    g_live++;
    if (r->conn && conn_write(r->conn, line, c->len) == 0)
        free(line);
    else
        c->line = line; /* sent when the driver says hello */
    timer_kick();
}

/* ---- the driver's answers ------------------------------------------------ */

static void repl_fail_conn(struct conn *c, const char *why)
{
    struct deno_repl *r = c->repl;
    fprintf(stderr, "hutchd: %s: REPL %u: %s\n", c->ds ? c->ds->sb->id : "?", r ? r->pid : 0, why);
    if (r) {
        while (r->calls)
            call_answer(r, r->calls, rpc_app_error("EIO", "the Deno REPL broke its channel: %s", why));
        r->conn = NULL;
    }
    c->repl = NULL;
    conn_close(c);
}

static void on_hello(struct conn *c, const char *line, size_t n)
{
    json_error_t je;
    json_t *m = json_loadb(line, n, 0, &je);
    const char *tok = json_string_value(json_object_get(m, "token"));
    struct deno_repl *found = NULL;
    for (struct deno_repl *r = c->ds->repls; tok && strlen(tok) == 32 && r; r = r->next)
        if (!r->conn && CRYPTO_memcmp(r->token, tok, 32) == 0)
            found = r;
    json_decref(m);
    if (!found) {
        conn_close(c); /* not one of our drivers */
        return;
    }
    c->repl = found;
    found->conn = c;
    c->deadline_ms = 0;
    g_live--; /* no hello deadline any more */
    for (struct call *k = found->calls; k; k = k->next)
        if (k->line && conn_write(c, k->line, k->len) == 0) {
            free(k->line);
            k->line = NULL;
        }
}

static void on_line(struct conn *c, const char *line, size_t n)
{
    if (!c->repl)
        return on_hello(c, line, n);
    int64_t id;
    json_t *result;
    if (deno_answer_parse((const uint8_t *)line, n, &id, &result) < 0)
        return repl_fail_conn(c, "an answer that is not {id, ok|error}");
    struct deno_repl *r = c->repl;
    for (struct call *k = r->calls; k; k = k->next)
        if (k->id == id && !k->line) {
            call_answer(r, k, result);
            return;
        }
    json_decref(result); /* an id nobody waits for (it timed out): dropped */
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char buf[64 * 1024];
    (void)h;
    (void)hint;
    b->base = buf;
    b->len = sizeof buf;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = st->data;
    if (c->closing)
        return;
    if (nread < 0) {
        /* Usually the process is ending: its exit answers the calls in
         * flight ("exited"); should it live on, they time out. */
        return conn_close(c);
    }
    size_t limit = c->repl ? ANSWER_MAX : HELLO_MAX;
    const char *p = b->base;
    size_t n = (size_t)nread;
    while (n > 0 && !c->closing) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (c->len + take > limit)
            return repl_fail_conn(c, c->repl ? "an answer larger than 16 MiB" : "a hello line too long");
        if (c->len + take > c->cap) {
            size_t cap = c->cap ? c->cap : 4096;
            while (cap < c->len + take)
                cap *= 2;
            char *nb = realloc(c->buf, cap);
            if (!nb)
                return repl_fail_conn(c, "out of memory");
            c->buf = nb;
            c->cap = cap;
        }
        memcpy(c->buf + c->len, p, take);
        c->len += take;
        if (!nl)
            break;
        size_t len = c->len;
        c->len = 0;
        on_line(c, c->buf, len);
        p = nl + 1;
        n -= take + 1;
        limit = c->repl ? ANSWER_MAX : HELLO_MAX;
    }
}

/* ---- connections ---------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    free(c->buf);
    free(c);
}

static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->deadline_ms)
        g_live--;
    if (c->repl) {
        c->repl->conn = NULL;
        c->repl = NULL;
    }
    if (c->ds) {
        for (struct conn **pp = &c->ds->conns; *pp; pp = &(*pp)->next)
            if (*pp == c) {
                *pp = c->next;
                break;
            }
        c->ds->n_conns--;
    }
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_connection(uv_stream_t *lis, int status)
{
    struct deno_sb *ds = lis->data;
    if (status < 0)
        return;
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    uv_tcp_init(g_daemon.loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(lis, (uv_stream_t *)&c->tcp) < 0 || ds->n_conns >= CONNS_MAX) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    c->ds = ds;
    c->next = ds->conns;
    ds->conns = c;
    ds->n_conns++;
    c->deadline_ms = now_ms() + HELLO_MS;
    g_live++;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    timer_kick();
}

static void on_timer(uv_timer_t *t)
{
    int64_t now = now_ms();
    for (struct deno_sb *ds = g_sbs; ds; ds = ds->next) {
        struct conn *c = ds->conns;
        while (c) {
            struct conn *n = c->next;
            if (!c->repl && c->deadline_ms && now >= c->deadline_ms)
                conn_close(c); /* no hello in time */
            c = n;
        }
        for (struct deno_repl *r = ds->repls; r; r = r->next) {
            struct call *k = r->calls;
            while (k) {
                struct call *n = k->next;
                if (now >= k->deadline_ms)
                    call_answer(r, k, rpc_app_error("ETIMEDOUT", "the Deno REPL did not answer within %u ms%s",
                                                    g_daemon.cfg->deno_call_timeout_ms,
                                                    r->conn ? "" : " (its driver never connected)"));
                k = n;
            }
        }
    }
    if (g_live == 0)
        uv_timer_stop(t);
}

/* ---- REPLs and the listener ------------------------------------------------ */

static void on_lis_closed(uv_handle_t *h)
{
    free(h->data);
}

static int listener_start(struct sandbox *sb, struct hx_err *e)
{
    if (sb->deno)
        return 0;
    int fd = net_sandbox_socket(sb, AF_INET, SOCK_STREAM, e);
    if (fd < 0)
        return -e->code;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sin;
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &sl) < 0) {
        int err = errno;
        close(fd);
        return hx_fail(e, err, "listen on the sandbox's loopback: %s", strerror(err));
    }
    struct deno_sb *ds = calloc(1, sizeof *ds);
    if (!ds) {
        close(fd);
        return hx_fail(e, ENOMEM, "out of memory");
    }
    ds->sb = sb;
    ds->port = ntohs(sin.sin_port);
    uv_tcp_init(g_daemon.loop, &ds->lis);
    ds->lis.data = ds;
    if (uv_tcp_open(&ds->lis, fd) < 0 || uv_listen((uv_stream_t *)&ds->lis, 16, on_connection) < 0) {
        uv_close((uv_handle_t *)&ds->lis, on_lis_closed); /* closes fd */
        return hx_fail(e, EIO, "cannot listen for REPL drivers");
    }
    sb->deno = ds;
    ds->next = g_sbs;
    g_sbs = ds;
    return 0;
}

struct deno_repl *deno_repl_new(struct sandbox *sb, char token[33], uint16_t *port, struct hx_err *e)
{
    if (listener_start(sb, e) < 0)
        return NULL;
    struct deno_repl *r = calloc(1, sizeof *r);
    uint8_t raw[16];
    if (!r || RAND_bytes(raw, sizeof raw) != 1) {
        free(r);
        hx_fail(e, ENOMEM, "out of memory or randomness");
        return NULL;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(r->token + 2 * i, 3, "%02x", raw[i]);
    memcpy(token, r->token, 33);
    r->ds = sb->deno;
    r->next = sb->deno->repls;
    sb->deno->repls = r;
    *port = sb->deno->port;
    return r;
}

bool deno_repl_set_pid(struct deno_repl *r, uint32_t pid)
{
    r->pid = pid;
    return r->ds != NULL;
}

void deno_repl_end(struct deno_repl *r, const char *code, const char *why)
{
    while (r->calls)
        call_answer(r, r->calls, rpc_app_error(code, "%s", why));
    if (r->conn) {
        struct conn *c = r->conn;
        c->repl = NULL;
        r->conn = NULL;
        conn_close(c); /* the driver sees its channel end and exits */
    }
    if (r->ds)
        for (struct deno_repl **pp = &r->ds->repls; *pp; pp = &(*pp)->next)
            if (*pp == r) {
                *pp = r->next;
                break;
            }
    free(r);
}

void deno_repl_session_closed(struct deno_repl *r, struct session *s)
{
    for (struct call *c = r->calls; c; c = c->next)
        if (c->s == s)
            c->s = NULL;
}

void deno_repl_sandbox_stopped(struct sandbox *sb)
{
    struct deno_sb *ds = sb->deno;
    if (!ds)
        return;
    sb->deno = NULL;
    for (struct deno_sb **pp = &g_sbs; *pp; pp = &(*pp)->next)
        if (*pp == ds) {
            *pp = ds->next;
            break;
        }
    while (ds->repls) {
        struct deno_repl *r = ds->repls;
        ds->repls = r->next;
        r->ds = NULL;
        if (r->pid) {
            deno_repl_end(r, "EIO", "the sandbox is stopping");
        } else { /* its spawn is still in flight: rpc_deno.c's hook ends it */
            while (r->calls)
                call_answer(r, r->calls, rpc_app_error("EIO", "the sandbox is stopping"));
        }
    }
    while (ds->conns)
        conn_close(ds->conns);
    uv_close((uv_handle_t *)&ds->lis, on_lis_closed);
}
