/* Exposures (see expose.h): a name of 128 random bits per exposure, which
 * is the URL's only secret; its listening socket (port mode); its target
 * (a port, or a pid whose listening port is looked up at each connect).
 * When the ingress asks for an upstream, hutchd itself opens a socket in
 * the sandbox's network namespace and connects it to 127.0.0.1 (then ::1)
 * at the exposed port: the only place an exposure can lead. */
#include "daemon/core/expose.h"
#include <time.h>
#include "lib/b64.h"
#include "daemon/core/metering.h"
#include "daemon/core/metrics.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include "daemon/api/http.h"
#include "daemon/core/restore.h"
#include "daemon/ingress/ingress.h"
#include "daemon/ingress/ingress_ca.h"
#include "daemon/net/net.h"
#include "ingress/ctl.h"

#define EXPOSURES_MAX 32          /* per sandbox */
#define CONNECT_TIMEOUT_MS 10000  /* a loopback connect that neither succeeds nor fails (full backlog) */
#define DIALS_MAX 512             /* connects in flight for the ingress (it is not trusted to ask few) */
#define GONE_KEEP_MS (10 * 60 * 1000) /* a stopped sandbox's URLs answer 404 this long, then their ports close */

struct exposure {
    struct exposure *next;
    char name[IG_NAME_LEN + 1];
    char sandbox[32];
    char domain[300];
    int listen_fd;                /* port mode, else -1 */
    uint16_t port;                /* the ingress port (port mode) */
    int target_port, target_pid;  /* 0: not set */
    int64_t gone_at;              /* the sandbox stopped (ms), else 0 */
    char app_key[48];             /* apps: a route whose sandbox the apps code picks at each connect */
};

static struct exposure *exposures;
static void exposure_free(struct exposure *x);
static uv_timer_t sweep_timer;
static bool sweep_ready;

static struct exposure *by_name(const char *name)
{
    for (struct exposure *x = exposures; x; x = x->next)
        if (strcmp(x->name, name) == 0)
            return x;
    return NULL;
}

static void push(struct exposure *x, bool first)
{
    ingress_route(x->name, x->sandbox, x->port, x->target_port > 0 ? x->target_port : 0, x->listen_fd, first,
                  x->gone_at != 0);
}

/* ---- upstream sockets for the ingress ---- */

struct dial {
    uv_poll_t poll;
    uv_timer_t timer;
    int fd, family, port, closing;
    bool polling;
    uint64_t req;
    expose_dial_cb done;
    char sandbox[32];
};

static void dial(struct sandbox *sb, int family, int port, uint64_t req, expose_dial_cb done);
static unsigned n_dials;

static void on_dial_closed(uv_handle_t *h)
{
    struct dial *d = h->data;
    if (--d->closing == 0) {
        free(d);
        n_dials--;
    }
}

static void dial_free(struct dial *d)
{
    d->closing = d->polling ? 2 : 1;
    if (d->polling)
        uv_close((uv_handle_t *)&d->poll, on_dial_closed);
    uv_close((uv_handle_t *)&d->timer, on_dial_closed);
}

/* answers the ingress: the fd (connected, now the ingress's) or err */
static void dial_end(struct dial *d, int err)
{
    if (d->polling)
        uv_poll_stop(&d->poll);
    uv_timer_stop(&d->timer);
    if (err && d->fd >= 0)
        close(d->fd);
    d->done(d->req, err ? -1 : d->fd, err);
    d->fd = -1;
    dial_free(d);
}

static void on_dial_timeout(uv_timer_t *t)
{
    dial_end(t->data, ETIMEDOUT);
}

static void on_dial_ready(uv_poll_t *p, int status, int events)
{
    struct dial *d = p->data;
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err == ECONNREFUSED && d->family == AF_INET) { /* then ::1, as dial() does at once */
        uv_poll_stop(&d->poll);
        uv_timer_stop(&d->timer);
        close(d->fd);
        struct sandbox *sb = sandbox_find(d->sandbox);
        if (sb && sb->state == SB_RUNNING)
            dial(sb, AF_INET6, d->port, d->req, d->done);
        else
            d->done(d->req, -1, ENOENT);
        return dial_free(d);
    }
    dial_end(d, err);
}

/* A socket in the sandbox's netns, connected to loopback:port there. Not
 * on 127.0.0.1? Then ::1 (a server bound to "localhost" in Node 18+). */
static void dial(struct sandbox *sb, int family, int port, uint64_t req, expose_dial_cb done)
{
    struct hx_err e = {0};
    int fd = net_sandbox_socket(sb, family, SOCK_STREAM, &e);
    if (fd < 0)
        return done(req, -1, e.code ? e.code : EIO);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_loopback;
        sl = sizeof *a;
    }
    int r = connect(fd, (struct sockaddr *)&ss, sl);
    int err = r < 0 ? errno : 0;
    if (err == ECONNREFUSED && family == AF_INET) {
        close(fd);
        return dial(sb, AF_INET6, port, req, done);
    }
    if (err && err != EINPROGRESS) {
        close(fd);
        return done(req, -1, err == EADDRNOTAVAIL || err == ENETUNREACH ? ECONNREFUSED : err);
    }
    if (!err)
        return done(req, fd, 0);
    struct dial *d = n_dials < DIALS_MAX ? calloc(1, sizeof *d) : NULL;
    if (!d) {
        close(fd);
        return done(req, -1, n_dials < DIALS_MAX ? ENOMEM : EAGAIN);
    }
    n_dials++;
    d->fd = fd;
    d->family = family;
    d->port = port;
    d->req = req;
    d->done = done;
    snprintf(d->sandbox, sizeof d->sandbox, "%s", sb->id);
    uv_timer_init(g_daemon.loop, &d->timer);
    d->timer.data = d;
    uv_poll_init(g_daemon.loop, &d->poll, fd);
    d->poll.data = d;
    d->polling = true;
    uv_poll_start(&d->poll, UV_WRITABLE, on_dial_ready);
    uv_timer_start(&d->timer, on_dial_timeout, CONNECT_TIMEOUT_MS, 0);
}

void expose_dial_tagged(struct sandbox *sb, int port, uint64_t tag, expose_dial_cb done)
{
    dial(sb, AF_INET, port, tag, done);
}

/* Every answer to hutch-ingress's connect requests goes through here (metrics). */
static void answer(uint32_t req, int fd, int err)
{
    metrics_ingress_upstream(fd >= 0 ? 0 : err ? err : EIO);
    ingress_connected(req, fd, err);
}

static void ingress_dialed(uint64_t req, int fd, int err)
{
    answer((uint32_t)req, fd, err);
}

static expose_app_connect_fn app_connect;

static void on_ingress_connect(const char *name, uint32_t req)
{
    struct exposure *x = by_name(name);
    if (x && x->app_key[0]) { /* apps: the route's sandbox may change, or be woken */
        if (!app_connect)
            return answer(req, -1, ENOENT);
        return app_connect(x->app_key, req);
    }
    struct sandbox *sb = x && !x->gone_at ? sandbox_find(x->sandbox) : NULL;
    if (!sb || sb->state != SB_RUNNING)
        return answer(req, -1, ENOENT);
    int port = x->target_port;
    if (port <= 0 && x->target_pid > 0)
        port = expose_pid_port(sb, x->target_pid);
    if (port <= 0)
        return answer(req, -1, ECONNREFUSED);
    dial(sb, AF_INET, port, req, ingress_dialed);
}

static void resend_all(void)
{
    for (struct exposure *x = exposures; x; x = x->next)
        push(x, true);
}

static const struct ingress_ops ops = {on_ingress_connect, resend_all};

/* ---- apps (core/deploy.c): stable routes resolved at each connect ---- */

void expose_app_set_connect(expose_app_connect_fn fn)
{
    app_connect = fn;
}

void expose_dial(struct sandbox *sb, int port, uint32_t req)
{
    if (!sb || sb->state != SB_RUNNING || port <= 0)
        return answer(req, -1, sb ? ECONNREFUSED : ENOENT);
    dial(sb, AF_INET, port, req, ingress_dialed);
}

void expose_refuse(uint32_t req, int err)
{
    answer(req, -1, err);
}

static void new_name(char out[IG_NAME_LEN + 1]);

int expose_app_route(char name[IG_NAME_LEN + 1], const char *key, const char *label, char *domain, size_t dsz,
                     struct hx_err *e)
{
    if (ingress_start(&ops, e) < 0)
        return -e->code;
    struct exposure *x = name[0] ? by_name(name) : NULL;
    if (!x) {
        if (name[0] && (strlen(name) != IG_NAME_LEN || strspn(name, "abcdefghijklmnopqrstuvwxyz234567") != IG_NAME_LEN))
            return hx_fail(e, EINVAL, "bad route name");
        x = calloc(1, sizeof *x);
        if (!x)
            return hx_fail(e, ENOMEM, "out of memory");
        if (!name[0])
            new_name(name);
        snprintf(x->name, sizeof x->name, "%s", name);
        x->listen_fd = -1;
        if (!ingress_base_domain() && (x->listen_fd = ingress_listen(&x->port, e)) < 0) {
            free(x);
            return -e->code;
        }
        ingress_domain(x->name, x->port, x->domain, sizeof x->domain);
        x->next = exposures;
        exposures = x;
    }
    snprintf(x->app_key, sizeof x->app_key, "%s", key);
    snprintf(x->sandbox, sizeof x->sandbox, "%s", label); /* shown in the ingress's error pages */
    x->gone_at = 0;
    push(x, true);
    snprintf(domain, dsz, "%s", x->domain);
    return 0;
}

void expose_app_unroute(const char *name)
{
    for (struct exposure **pp = &exposures; *pp; pp = &(*pp)->next) {
        struct exposure *x = *pp;
        if (strcmp(x->name, name) == 0 && x->app_key[0]) {
            *pp = x->next;
            exposure_free(x);
            return;
        }
    }
}

/* ---- REST ---- */

_Static_assert(IG_NAME_LEN == HX_RANDOM_NAME_LEN, "names are hx_random_name()s");
static void new_name(char out[IG_NAME_LEN + 1])
{
    hx_random_name(out);
}

static void expose_http(struct http_conn *c, struct sandbox *sb, const char *kind, const char *token_id)
{
    struct hx_err e = {0};
    unsigned n = 0;
    for (struct exposure *x = exposures; x; x = x->next)
        n += strcmp(x->sandbox, sb->id) == 0 && !x->gone_at;
    if (n >= EXPOSURES_MAX)
        return http_respond_error(c, 429, "TOO_MANY_EXPOSURES", "a sandbox has at most %d exposures", EXPOSURES_MAX);
    if (ingress_start(&ops, &e) < 0)
        return http_respond_error(c, 503, "INGRESS_UNAVAILABLE", "%s", e.msg);
    struct exposure *x = calloc(1, sizeof *x);
    if (!x)
        return http_respond_error(c, 500, "INTERNAL", "out of memory");
    new_name(x->name);
    snprintf(x->sandbox, sizeof x->sandbox, "%s", sb->id);
    x->listen_fd = -1;
    if (!ingress_base_domain() && (x->listen_fd = ingress_listen(&x->port, &e)) < 0) {
        free(x);
        return http_respond_error(c, 503, "INGRESS_UNAVAILABLE", "%s", e.msg);
    }
    ingress_domain(x->name, x->port, x->domain, sizeof x->domain);
    x->next = exposures;
    exposures = x;
    push(x, true); /* answers 502 until exposeHttp names a target */
    restore_exposures_changed(sb); /* restore: kept for the next hutchd */
    fprintf(stderr, "hutchd: %s: exposure on ingress port %u\n", sb->id, x->port);
    audit_log(sb->org, token_id, "expose", sb->id, "%s, ingress port %u", kind, x->port); /* audit: */
    http_respond_json(c, 200, json_pack("{s:s}", "domain", x->domain));
}

void expose_handle_rest(struct http_conn *c, const struct http_request *req, struct sandbox *sb, const char *rest,
                        const char *token_id)
{
    if (strcmp(req->method, "POST") != 0)
        return http_respond_error(c, 405, "METHOD_NOT_ALLOWED", "use POST");
    /* /vscode is an exposure like any other: the SDK then names the port
     * the `vscode` RPC answered (vscode.c) with exposeHttp. */
    if (strcmp(rest, "/http") == 0 || strcmp(rest, "/vscode") == 0)
        return expose_http(c, sb, rest + 1, token_id);
    if (strcmp(rest, "/ssh") == 0)
        return expose_ssh(c, sb, token_id);
    http_respond_error(c, 404, "NOT_FOUND", "no route POST /expose%.100s", rest);
}

void expose_handle_ca(struct http_conn *c)
{
    struct hx_err e = {0};
    if (ingress_ca_init(g_daemon.cfg->state_dir, &e) < 0)
        return http_respond_error(c, 503, "INGRESS_UNAVAILABLE", "%s", e.msg);
    const char *pem = ingress_ca_cert_pem();
    http_respond(c, 200, "application/x-pem-file", NULL, pem, strlen(pem));
}

/* ---- RPC ---- */

static void m_expose_http(struct session *s, json_t *id, json_t *params)
{
    const char *domain = json_string_value(json_object_get(params, "domain"));
    json_t *port = json_object_get(params, "port"), *pid = json_object_get(params, "pid");
    struct exposure *x = NULL;
    for (struct exposure *y = exposures; domain && y && !x; y = y->next)
        if (strcmp(y->domain, domain) == 0 && strcmp(y->sandbox, s->sb->id) == 0 && !y->gone_at)
            x = y;
    if (!x)
        return rpc_reply_result(s, id, rpc_app_error("ENOENT", "no exposure \"%.200s\" of this sandbox: call "
                                                     "POST /api/v3/sandbox/ID/expose/http first",
                                                     domain ? domain : ""));
    if (port && (!json_is_integer(port) || json_integer_value(port) < 1 || json_integer_value(port) > 65535))
        return rpc_reply_rpc_error(s, id, -32602, "Invalid params: \"port\" must be an integer in 1..65535");
    if (!port && (!json_is_integer(pid) || json_integer_value(pid) < 1 || json_integer_value(pid) > 4194304))
        return rpc_reply_rpc_error(s, id, -32602, "Invalid params: \"port\" or \"pid\" must be given");
    if (!port && expose_pid_port(s->sb, (int)json_integer_value(pid)) == -ESRCH)
        return rpc_reply_result(s, id, rpc_app_error("ESRCH", "no process %" JSON_INTEGER_FORMAT " in the sandbox",
                                                     json_integer_value(pid)));
    x->target_port = port ? (int)json_integer_value(port) : 0;
    x->target_pid = port ? 0 : (int)json_integer_value(pid);
    push(x, false);
    restore_exposures_changed(s->sb); /* restore: */
    rpc_reply_result(s, id, json_pack("{s:n}", "ok"));
}

const struct rpc_method expose_rpc_methods[] = {
    {"exposeHttp", m_expose_http},
    {NULL, NULL},
};

static void exposure_free(struct exposure *x)
{
    ingress_unroute(x->name);
    if (x->listen_fd >= 0)
        close(x->listen_fd);
    explicit_bzero(x->name, sizeof x->name);
    free(x);
}

/* Ports of sandboxes gone for GONE_KEEP_MS close: until then their URLs say
 * 404 ("not running any more") instead of a refused connection, and the
 * kernel cannot hand the port to a new exposure while an old URL is about. */
static void on_sweep(uv_timer_t *t)
{
    int64_t now = now_ms();
    bool more = false;
    for (struct exposure **pp = &exposures; *pp;) {
        struct exposure *x = *pp;
        if (x->gone_at && now - x->gone_at >= GONE_KEEP_MS) {
            *pp = x->next;
            exposure_free(x);
            continue;
        }
        more |= x->gone_at != 0;
        pp = &x->next;
    }
    if (!more)
        uv_timer_stop(t);
}

void expose_sandbox_stopped(struct sandbox *sb)
{
    expose_ssh_sandbox_stopped(sb); /* its SSH login name and connections end too */
    bool any = false;
    for (struct exposure *x = exposures; x; x = x->next) {
        if (strcmp(x->sandbox, sb->id) != 0 || x->gone_at || x->app_key[0])
            continue;
        x->gone_at = now_ms(); /* the connect check fails from now on too */
        ingress_gone(x->name);
        any = true;
    }
    if (!any)
        return;
    if (!sweep_ready) {
        uv_timer_init(g_daemon.loop, &sweep_timer);
        uv_unref((uv_handle_t *)&sweep_timer);
        sweep_ready = true;
    }
    if (!uv_is_active((uv_handle_t *)&sweep_timer))
        uv_timer_start(&sweep_timer, on_sweep, 30000, 30000);
}

/* ---- live restore ---- */

json_t *expose_sandbox_saved(const char *sandbox_id)
{
    json_t *a = json_array();
    for (struct exposure *x = exposures; x; x = x->next)
        if (strcmp(x->sandbox, sandbox_id) == 0 && !x->gone_at)
            json_array_append_new(a, json_pack("{s:s, s:i, s:i, s:i}", "name", x->name, "port", (int)x->port,
                                               "target_port", x->target_port, "target_pid", x->target_pid));
    return a;
}

static bool name_ok(const char *n)
{
    if (!n || strlen(n) != IG_NAME_LEN)
        return false;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '2' && *p <= '7')))
            return false;
    return true;
}

/* The previous hutch-ingress still holds the ports it was handed until it
 * sees hutchd gone: a restart right after a kill -9 waits for it, at most
 * PORT_WAIT_MS in all (at start-up, before the API opens), before a port
 * counts as taken by someone else. */
#define PORT_WAIT_MS 2000
static int listen_again(uint16_t port, struct hx_err *e)
{
    static uint64_t give_up_ns;
    for (;;) {
        int fd = ingress_listen_at(port, e);
        if (fd >= 0 || e->code != EADDRINUSE)
            return fd;
        uint64_t now = uv_hrtime();
        if (!give_up_ns)
            give_up_ns = now + (uint64_t)PORT_WAIT_MS * 1000000u;
        if (now >= give_up_ns)
            return fd;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

void expose_sandbox_restore(struct sandbox *sb, json_t *saved)
{
    if (!json_is_array(saved) || json_array_size(saved) == 0)
        return;
    struct hx_err e = {0};
    if (ingress_start(&ops, &e) < 0) {
        fprintf(stderr, "hutchd: %s: exposures not restored: %s\n", sb->id, e.msg);
        return;
    }
    size_t i;
    json_t *v;
    unsigned n = 0;
    json_array_foreach(saved, i, v) {
        const char *name = json_string_value(json_object_get(v, "name"));
        json_int_t port = json_integer_value(json_object_get(v, "port"));
        json_int_t tport = json_integer_value(json_object_get(v, "target_port"));
        json_int_t tpid = json_integer_value(json_object_get(v, "target_pid"));
        bool host_mode = ingress_base_domain() != NULL;
        if (n >= EXPOSURES_MAX || !name_ok(name) || by_name(name) || port < 0 || port > 65535 ||
            (host_mode != (port == 0)) || tport < 0 || tport > 65535 || tpid < 0 || tpid > 4194304) {
            fprintf(stderr, "hutchd: %s: a kept exposure does not fit this hutchd (its ingress mode changed?); "
                            "skipped\n", sb->id);
            continue;
        }
        struct exposure *x = calloc(1, sizeof *x);
        if (!x)
            break;
        snprintf(x->name, sizeof x->name, "%s", name);
        snprintf(x->sandbox, sizeof x->sandbox, "%s", sb->id);
        x->port = (uint16_t)port;
        x->target_port = (int)tport;
        x->target_pid = (int)tpid;
        x->listen_fd = -1;
        if (!host_mode)
            x->listen_fd = listen_again(x->port, &e);
        if (!host_mode && x->listen_fd < 0 && e.code == EADDRINUSE) {
            /* Another program took the port while hutchd was away: the
             * exposure lives on at a new port (its URL changes with it;
             * the name, its secret, stays). The row is rewritten after. */
            uint16_t was = x->port;
            if ((x->listen_fd = ingress_listen(&x->port, &e)) >= 0)
                fprintf(stderr, "hutchd: %s: exposure moved from ingress port %u (taken meanwhile) to port %u\n",
                        sb->id, was, x->port);
        }
        if (!host_mode && x->listen_fd < 0) {
            fprintf(stderr, "hutchd: %s: exposure on ingress port %u not restored: %s\n", sb->id, x->port, e.msg);
            free(x);
            continue;
        }
        ingress_domain(x->name, x->port, x->domain, sizeof x->domain);
        x->next = exposures;
        exposures = x;
        push(x, true);
        n++;
    }
    if (n)
        printf("hutchd: %s: %u exposures restored\n", sb->id, n);
}
