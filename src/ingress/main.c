/* hutch-ingress: the HTTPS front door of exposed sandbox ports. Started by
 * hutchd with nothing but a control socket; it confines itself (empty
 * chroot, unprivileged uid, no_new_privs, seccomp allowlist without
 * socket/connect/bind) before it reads a byte from a client. Its listening
 * sockets and every upstream connection come from hutchd (ctl.h), so even a
 * compromised ingress reaches nothing but exposed ports. docs/expose.md. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include "ingress/head.h"
#include "ingress/ingress.h"
#include "lib/confine.h"
#include "lib/err.h"
#include "lib/uvframe.h"
#include "lib/ctlchan.h"
#include "lib/wire.h"

uv_loop_t *g_loop;
struct ig_config g_cfg = {.head_timeout_ms = 15000, .upstream_timeout_ms = 60000};
static uv_pipe_t ctl;
static struct ig_route *routes;
static uv_tcp_t *shared_listener; /* host mode */

struct ig_route *route_by_name(const char *name)
{
    for (struct ig_route *r = routes; r; r = r->next)
        if (strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

void ctl_connect(uint32_t req, const char *name)
{
    hx_uv_send_frame((uv_stream_t *)&ctl, IG_CONNECT, req, name, strlen(name), false, NULL);
}

/* The next socket that came with a frame (SCM_RIGHTS), as a libuv handle. */
static uv_tcp_t *take_socket(void)
{
    if (uv_pipe_pending_count(&ctl) < 1 || uv_pipe_pending_type(&ctl) != UV_TCP)
        return NULL;
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t || uv_tcp_init(g_loop, t) < 0 || uv_accept((uv_stream_t *)&ctl, (uv_stream_t *)t) < 0) {
        fprintf(stderr, "hutch-ingress: cannot take a socket from hutchd\n");
        exit(1);
    }
    return t;
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

static SSL_CTX *tls_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    BIO *bc = BIO_new_mem_buf(cert, -1), *bk = BIO_new_mem_buf(key, -1);
    EVP_PKEY *pk = bk ? PEM_read_bio_PrivateKey(bk, NULL, NULL, NULL) : NULL;
    X509 *x = bc ? PEM_read_bio_X509(bc, NULL, NULL, NULL) : NULL;
    bool ok = ctx && pk && x && SSL_CTX_use_certificate(ctx, x) == 1 && SSL_CTX_use_PrivateKey(ctx, pk) == 1;
    X509_free(x);
    /* the rest of the chain (an operator's intermediates) */
    X509 *extra;
    while (ok && (extra = PEM_read_bio_X509(bc, NULL, NULL, NULL)))
        if (SSL_CTX_add_extra_chain_cert(ctx, extra) != 1) {
            X509_free(extra);
            ok = false;
        }
    ERR_clear_error();
    ok = ok && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(pk);
    BIO_free(bc);
    BIO_free(bk);
    if (!ok) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_alpn_select_cb(ctx, conn_alpn, NULL);
    return ctx;
}

static void scrub(json_t *v)
{
    if (json_is_string(v))
        explicit_bzero((char *)json_string_value(v), json_string_length(v));
}

static void on_config(json_t *o)
{
    const char *cert = json_string_value(json_object_get(o, "cert"));
    const char *key = json_string_value(json_object_get(o, "key"));
    SSL_CTX *ctx = cert && key ? tls_ctx(cert, key) : NULL;
    scrub(json_object_get(o, "key"));
    if (!ctx) {
        fprintf(stderr, "hutch-ingress: unusable certificate or key from hutchd\n");
        exit(1);
    }
    SSL_CTX_free(g_cfg.tls);
    g_cfg.tls = ctx;
    const char *mode = json_string_value(json_object_get(o, "mode"));
    const char *base = json_string_value(json_object_get(o, "base"));
    g_cfg.host_mode = mode && strcmp(mode, "host") == 0;
    snprintf(g_cfg.base, sizeof g_cfg.base, "%s", base ? base : "");
    json_t *ht = json_object_get(o, "head_timeout_ms"), *ut = json_object_get(o, "upstream_timeout_ms");
    if (json_integer_value(ht) > 0)
        g_cfg.head_timeout_ms = (uint32_t)json_integer_value(ht);
    if (json_integer_value(ut) > 0)
        g_cfg.upstream_timeout_ms = (uint32_t)json_integer_value(ut);
    if (json_is_true(json_object_get(o, "listener")) && !shared_listener) {
        shared_listener = take_socket();
        if (!shared_listener) {
            fprintf(stderr, "hutch-ingress: IG_CONFIG without its listening socket\n");
            exit(1);
        }
        conn_listen(shared_listener, NULL);
    }
}

static void route_free(struct ig_route *r)
{
    conn_route_gone(r);
    if (r->listener)
        uv_close((uv_handle_t *)r->listener, free_handle);
    free(r);
}

static void on_unroute(const uint8_t *p, size_t n)
{
    char name[IG_NAME_LEN + 1];
    if (n != IG_NAME_LEN)
        return;
    memcpy(name, p, n);
    name[n] = 0;
    for (struct ig_route **pp = &routes; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->name, name) == 0) {
            struct ig_route *r = *pp;
            *pp = r->next;
            route_free(r);
            return;
        }
}

static void on_gone(const uint8_t *p, size_t n)
{
    char name[IG_NAME_LEN + 1];
    if (n != IG_NAME_LEN)
        return;
    memcpy(name, p, n);
    name[n] = 0;
    struct ig_route *r = route_by_name(name);
    if (r && !r->gone) {
        r->gone = true;
        conn_route_gone(r); /* keep-alive connections to the dead sandbox end now */
    }
}

static void on_route(json_t *o)
{
    const char *name = json_string_value(json_object_get(o, "name"));
    const char *sbid = json_string_value(json_object_get(o, "sandbox"));
    json_int_t port = json_integer_value(json_object_get(o, "port"));
    bool with_listener = json_is_true(json_object_get(o, "listener"));
    uv_tcp_t *l = with_listener ? take_socket() : NULL;
    if (!name || strlen(name) != IG_NAME_LEN || !sbid || strlen(sbid) >= 32 || port < 0 || port > 65535 ||
        (with_listener && !l)) {
        fprintf(stderr, "hutch-ingress: malformed IG_ROUTE\n");
        exit(1);
    }
    struct ig_route *r = route_by_name(name);
    if (r) { /* re-exposed with another target: same listener, new target */
        r->target = (int)json_integer_value(json_object_get(o, "target"));
        if (l)
            uv_close((uv_handle_t *)l, free_handle);
        return;
    }
    r = calloc(1, sizeof *r);
    if (!r)
        exit(1);
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->sandbox, sizeof r->sandbox, "%s", sbid);
    r->port = (uint16_t)port;
    r->target = (int)json_integer_value(json_object_get(o, "target"));
    snprintf(r->cookie, sizeof r->cookie, IG_COOKIE_PREFIX "%u", r->port);
    r->listener = l;
    r->gone = json_is_true(json_object_get(o, "gone"));
    r->next = routes;
    routes = r;
    if (l)
        conn_listen(l, r);
}

static void on_ctl_frame(const struct hx_frame *f)
{
    if (f->type == IG_UNROUTE)
        return on_unroute(f->payload, f->len);
    if (f->type == IG_GONE)
        return on_gone(f->payload, f->len);
    if (f->type == IG_CONNECTED) {
        uint32_t err = f->len >= 4 ? hx_get_u32(f->payload) : EPROTO;
        uv_tcp_t *t = err == 0 ? take_socket() : NULL;
        if (err == 0 && !t)
            err = EPROTO;
        return conn_upstream_ready(f->chan, t, (int)err);
    }
    json_t *o = json_loadb((const char *)f->payload, f->len, 0, NULL);
    if (json_is_object(o)) {
        if (f->type == IG_CONFIG)
            on_config(o);
        else if (f->type == IG_ROUTE)
            on_route(o);
    }
    json_decref(o);
    explicit_bzero((void *)f->payload, f->len); /* the config carried the key */
}

static int confine(const char *root, uid_t uid, gid_t gid)
{
    /* No socket, bind or connect: every socket comes from hutchd. */
    static const char *const extra[] = {"listen", NULL};
    struct hx_confine c = {.who = "hutch-ingress", .root = root, .uid = uid, .gid = gid, .extra = extra,
                           .inet_sockets = false};
    return hx_confine(&c);
}

int main(int argc, char **argv)
{
    /* argv: hutch-ingress [--root DIR] [--uid N --gid N] */
    const char *root = NULL;
    uid_t uid = 65534;
    gid_t gid = 65534;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--root") == 0)
            root = argv[i + 1];
        else if (strcmp(argv[i], "--uid") == 0)
            uid = (uid_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--gid") == 0)
            gid = (gid_t)strtoul(argv[i + 1], NULL, 10);
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stderr, NULL, _IOLBF, 0);
    g_loop = uv_default_loop();
    if (hx_ctl_open(g_loop, &ctl, IG_FD_CTL, true, "hutch-ingress") < 0)
        return 1;
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
    SSL_CTX_free(SSL_CTX_new(TLS_server_method())); /* loads what OpenSSL loads once, before seccomp */
    json_t *warm = json_pack("{s:s}", "a", "b"); /* jansson's hash seed: before seccomp */
    json_decref(warm);
    if (confine(root, uid, gid) < 0)
        return 1;
    hx_ctl_read(on_ctl_frame);
    if (hx_ctl_ready(IG_READY) < 0)
        return 1;
    return uv_run(g_loop, UV_RUN_DEFAULT);
}
