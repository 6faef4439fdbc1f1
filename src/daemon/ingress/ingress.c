/* Supervising hutch-ingress (see ingress.h). The ingress is treated as
 * untrusted: what it sends is bounded, and it can ask for nothing but a
 * socket to an exposure by name, which the core checks. */
#include "daemon/log.h"
#include "daemon/ingress/ingress.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "daemon/core/sandbox.h"
#include "daemon/helper.h"
#include "daemon/ingress/ingress_ca.h"
#include "ingress/ctl.h"
#include "lib/wire.h"

static struct {
    bool on;
    const struct ingress_ops *ops;
    struct helper h;           /* hutch-ingress */
    char *args[4];
    char path[4200], root[4200];
    char *cert, *key;          /* the leaf (or the operator's) PEM */
    int host_fd;               /* host mode: the shared listener */
    char addr[64];             /* where exposures listen (port mode) */
    int family;
} g = {.host_fd = -1};

const char *ingress_base_domain(void)
{
    return g_daemon.cfg->ingress_domain;
}

void ingress_domain(const char *name, uint16_t port, char *out, size_t cap)
{
    const char *base = ingress_base_domain();
    if (base) {
        int p = g_daemon.cfg->ingress_port;
        if (p == 443)
            snprintf(out, cap, "%s.%s", name, base);
        else
            snprintf(out, cap, "%s.%s:%d", name, base, p);
    } else {
        bool v6 = g.family == AF_INET6;
        snprintf(out, cap, "%s%s%s:%u/%s", v6 ? "[" : "", g.addr, v6 ? "]" : "", port, name);
    }
}

static int bind_listener(uint16_t port, uint16_t *bound, struct hx_err *e)
{
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (g.family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        inet_pton(AF_INET, g.addr, &a->sin_addr);
        sl = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        inet_pton(AF_INET6, g.addr, &a->sin6_addr);
        sl = sizeof *a;
    }
    int fd = socket(g.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return hx_fail(e, errno, "socket: %m");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0) {
        int err = errno;
        close(fd);
        return hx_fail(e, err, "listen on %s port %u: %s", g.addr, port, strerror(err));
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && bound)
        *bound = ntohs(g.family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                           : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return fd;
}

int ingress_listen(uint16_t *port, struct hx_err *e)
{
    return bind_listener(0, port, e);
}

int ingress_listen_at(uint16_t port, struct hx_err *e)
{
    if (port == 0)
        return hx_fail(e, EINVAL, "no port");
    return bind_listener(port, NULL, e);
}

/* ---- control channel ---- */

/* One frame, with fd (>= 0, owned) riding along as SCM_RIGHTS. */
static void send_frame(uint16_t type, uint32_t chan, const void *data, size_t len, int fd)
{
    helper_send(&g.h, type, chan, data, len, fd);
}

static void send_json(uint16_t type, json_t *o, int fd)
{
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (t) {
        send_frame(type, 0, t, strlen(t), fd);
        explicit_bzero(t, strlen(t));
    } else if (fd >= 0) {
        close(fd);
    }
    free(t);
}

void ingress_route(const char *name, const char *sandbox, uint16_t port, int target, int listen_fd, bool first,
                   bool gone)
{
    int fd = first && listen_fd >= 0 ? fcntl(listen_fd, F_DUPFD_CLOEXEC, 3) : -1;
    send_json(IG_ROUTE, json_pack("{s:s, s:s, s:i, s:i, s:b, s:b}", "name", name, "sandbox", sandbox, "port", (int)port,
                                  "target", target, "listener", fd >= 0, "gone", gone), fd);
}

void ingress_gone(const char *name)
{
    send_frame(IG_GONE, 0, name, strlen(name), -1);
}

void ingress_unroute(const char *name)
{
    send_frame(IG_UNROUTE, 0, name, strlen(name), -1);
}

void ingress_connected(uint32_t req, int fd, int err)
{
    uint8_t st[4];
    hx_put_u32(st, fd >= 0 ? 0 : (uint32_t)(err > 0 ? err : EIO));
    send_frame(IG_CONNECTED, req, st, 4, fd);
}

static void send_config(void)
{
    struct config *cfg = g_daemon.cfg;
    int fd = g.host_fd >= 0 ? fcntl(g.host_fd, F_DUPFD_CLOEXEC, 3) : -1;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:b}", "cert", g.cert, "key", g.key, "mode",
                          cfg->ingress_domain ? "host" : "port", "base", cfg->ingress_domain ? cfg->ingress_domain : "",
                          "head_timeout_ms", (int)cfg->ingress_head_timeout_ms, "upstream_timeout_ms",
                          (int)cfg->ingress_upstream_timeout_ms, "listener", fd >= 0);
    json_t *k = json_object_get(o, "key");
    char *t = json_dumps(o, JSON_COMPACT);
    explicit_bzero((char *)json_string_value(k), json_string_length(k));
    json_decref(o);
    if (t) {
        send_frame(IG_CONFIG, 0, t, strlen(t), fd);
        explicit_bzero(t, strlen(t));
    } else if (fd >= 0) {
        close(fd);
    }
    free(t);
}

/* What hutch-ingress asks for: a socket to an exposure, by name. */
static bool on_ctl_frame(struct helper *h, const struct hx_frame *f)
{
    if (f->type != IG_CONNECT)
        return true; /* IG_READY and anything else: nothing to do */
    char name[IG_NAME_LEN + 1];
    if (f->len != IG_NAME_LEN) {
        ingress_connected(f->chan, -1, ENOENT);
        return true;
    }
    memcpy(name, f->payload, f->len);
    name[f->len] = 0;
    g.ops->connect(name, f->chan);
    return h->ctl_open;
}

static void on_ingress_start(struct helper *h)
{
    send_config();
    g.ops->resend();
}

static char *read_file(const char *path, struct hx_err *e)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        hx_fail(e, errno, "open %s: %m", path);
        return NULL;
    }
    char *buf = calloc(1, 1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (!buf || n == 0) {
        free(buf);
        hx_fail(e, EINVAL, "%s is empty or unreadable", path);
        return NULL;
    }
    return buf;
}

int ingress_start(const struct ingress_ops *ops, struct hx_err *e)
{
    struct config *cfg = g_daemon.cfg;
    if (g.on)
        return 0;
    int r;
    g.ops = ops;
    snprintf(g.addr, sizeof g.addr, "%s", cfg->ingress_addr);
    unsigned char tmp[16];
    if (inet_pton(AF_INET, g.addr, tmp) == 1)
        g.family = AF_INET;
    else if (inet_pton(AF_INET6, g.addr, tmp) == 1)
        g.family = AF_INET6;
    else
        return hx_fail(e, EINVAL, "--ingress-addr wants an IP address, got \"%.100s\"", g.addr);
    static const unsigned char any[16];
    if (!cfg->ingress_domain && memcmp(tmp, any, g.family == AF_INET ? 4 : 16) == 0)
        return hx_fail(e, EINVAL, "--ingress-addr %s cannot be in a URL: give the address clients reach "
                                  "(or --ingress-domain)", g.addr);
    if ((r = helper_find(cfg->self_dir, "ingress", "hutch-ingress", g.path, sizeof g.path, e)) < 0)
        return r;
    snprintf(g.root, sizeof g.root, "%s/ingress-root", cfg->state_dir);
    if (mkdir(g.root, 0555) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %m", g.root);
    chmod(g.root, 0555);
    if ((r = ingress_ca_init(cfg->state_dir, e)) < 0)
        return r;
    if (cfg->ingress_cert) { /* the operator's (wildcard) certificate and key */
        if (!(g.cert = read_file(cfg->ingress_cert, e)) || !(g.key = read_file(cfg->ingress_key, e)))
            return -e->code;
    } else if (cfg->ingress_domain) {
        char wild[300];
        snprintf(wild, sizeof wild, "*.%s", cfg->ingress_domain);
        const char *names[] = {wild, cfg->ingress_domain};
        if ((r = ingress_ca_leaf(names, 2, &g.cert, &g.key, e)) < 0)
            return r;
    } else {
        const char *names[] = {g.addr, "localhost", "127.0.0.1", "::1"};
        if ((r = ingress_ca_leaf(names, strcmp(g.addr, "127.0.0.1") == 0 ? 2 : 4, &g.cert, &g.key, e)) < 0)
            return r;
    }
    if (cfg->ingress_domain && (g.host_fd = bind_listener((uint16_t)cfg->ingress_port, NULL, e)) < 0)
        return g.host_fd;
    g.args[0] = g.path;
    g.args[1] = "--root";
    g.args[2] = g.root;
    g.args[3] = NULL;
    g.h.name = "hutch-ingress";
    g.h.loop = g_daemon.loop;
    g.h.args = g.args;
    g.h.ipc = true; /* it gets listeners and connections */
    g.h.on_start = on_ingress_start;
    g.h.on_frame = on_ctl_frame;
    if ((r = helper_start(&g.h, e)) < 0)
        return r;
    g.on = true;
    if (cfg->ingress_domain)
        printf("hutchd: ingress: https://NAME.%s:%d/ (certificate %s)\n", cfg->ingress_domain, cfg->ingress_port,
               cfg->ingress_cert ? cfg->ingress_cert : ingress_ca_path());
    else
        printf("hutchd: ingress: a port per exposure on %s; trust %s (NODE_EXTRA_CA_CERTS, curl --cacert)\n",
               g.addr, ingress_ca_path());
    return 0;
}

void ingress_stopping(void)
{
    helper_stopping(&g.h);
}

void ingress_fini(void)
{
    if (!g.on)
        return;
    g.on = false;
    helper_stop(&g.h);
    if (g.host_fd >= 0)
        close(g.host_fd);
    g.host_fd = -1;
    if (g.key)
        explicit_bzero(g.key, strlen(g.key));
}
