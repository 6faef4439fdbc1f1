/* hutchd's DNS client for the names hutch-proxy asks about: c-ares on the
 * daemon's own loop. No threads: a slow upstream cannot tie up libuv's
 * thread pool (which also launches sandboxes), and at most
 * RESOLVER_INFLIGHT_MAX lookups run at once whatever the proxy sends. */
#pragma once
#include <stdint.h>
#include <uv.h>
#include "lib/err.h"

#define RESOLVER_ADDRS_MAX 8   /* per family in an answer */

enum resolver_status {
    RESOLVER_OK,               /* addresses (at least one) */
    RESOLVER_NONAME,           /* NXDOMAIN, or the name has no address */
    RESOLVER_FAIL,             /* no answer: timeout, SERVFAIL, refused, too many lookups at once */
};

struct resolver_answer {
    uint8_t a4[RESOLVER_ADDRS_MAX][4], a6[RESOLVER_ADDRS_MAX][16];
    unsigned n4, n6;
};

/* a is NULL unless st is RESOLVER_OK */
typedef void (*resolver_cb)(enum resolver_status st, const struct resolver_answer *a, void *ud);

/* upstream: "IP:PORT" or "[IPv6]:PORT" (--dns-upstream), or NULL for the
 * servers of /etc/resolv.conf, re-read when that file changes. */
int resolver_init(uv_loop_t *loop, const char *upstream, struct hx_err *e);
/* cb runs exactly once, maybe before this returns. */
void resolver_lookup(const char *name, resolver_cb cb, void *ud);
/* Fails the lookups in flight (their cb runs) and closes everything. */
void resolver_fini(void);
