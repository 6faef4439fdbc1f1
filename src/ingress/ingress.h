/* hutch-ingress internals shared by its files: the routing table hutchd
 * pushes, the configuration, the control channel and the connections. */
#pragma once
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>
#include "ingress/ctl.h"

struct ig_conn;

struct ig_route {
    struct ig_route *next;
    char name[IG_NAME_LEN + 1];
    char sandbox[32];
    uint16_t port;             /* the ingress port (port mode) */
    int target;                /* the sandbox port (for pages and logs) */
    char cookie[40];           /* IG_COOKIE_PREFIX "<port>" */
    uv_tcp_t *listener;        /* port mode: the exposure's own socket */
    bool gone;                 /* the sandbox stopped: 404, no upstream */
};

struct ig_config {
    bool host_mode;
    char base[256];
    uint32_t head_timeout_ms, upstream_timeout_ms;
    SSL_CTX *tls;
};

extern uv_loop_t *g_loop;
extern struct ig_config g_cfg;

struct ig_route *route_by_name(const char *name);

/* conn.c: serve a listening socket; route NULL in host mode (by Host) */
void conn_listen(uv_tcp_t *listener, struct ig_route *rt);
/* the route is going: its connections close */
void conn_route_gone(struct ig_route *rt);
/* hutchd answered an IG_CONNECT: up (heap, initialized, owned by the callee) is the
 * connected socket, or NULL and err (an errno) */
void conn_upstream_ready(uint32_t req, uv_tcp_t *up, int err);

/* ALPN: http/1.1 only (for SSL_CTX_set_alpn_select_cb) */
int conn_alpn(SSL *s, const unsigned char **out, unsigned char *outlen, const unsigned char *in, unsigned int inlen,
              void *arg);

/* main.c: ask hutchd for an upstream socket; the answer comes to conn_upstream_ready */
void ctl_connect(uint32_t req, const char *name);
