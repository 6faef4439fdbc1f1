/* hutch-proxy internals shared by its files: sandboxes and their policies,
 * the resolver cache, the control channel, the TCP proxy and DNS server. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <uv.h>
#include "proxy/fairq.h"
#include "proxy/policy.h"

#define DNSMAP_N 256          /* per sandbox: addresses we answered with, and for which name */

struct dnsmap_ent {
    int family;               /* 0 = unused */
    uint8_t addr[16];
    char name[POLICY_NAME_MAX + 1];
};

/* secrets: a secret of a sandbox, as the proxy holds it (value zeroed on free) */
struct psecret {
    char name[129];
    uint8_t *ph, *val;        /* placeholder and value, len bytes each */
    size_t len;
    struct policy hosts;      /* where the value may go (names, wildcards, ports) */
};

struct sbx {
    struct sbx *next;
    char id[32];
    bool has4, has6;
    uint8_t ip4[4], ip6[16];
    struct policy pol;
    struct dnsmap_ent map[DNSMAP_N];
    unsigned map_next;
    struct psecret *secrets;  /* secrets: */
    size_t n_secrets;
    struct fq_client dnsq;    /* its share of the upstream lookups (main.c) */
    unsigned dns_pending;     /* its DNS queries waiting for an answer (dnssrv.c) */
    uint64_t audit_lost;      /* audit records not sent yet (control channel full): told to hutchd later */
};

struct sbx *sbx_by_addr(int family, const uint8_t *addr);
struct sbx *sbx_by_id(const char *id);
/* The name the sandbox was told has this address (most recent), or NULL. */
const char *sbx_map_lookup(struct sbx *s, int family, const uint8_t *addr);
bool sbx_map_has(struct sbx *s, int family, const uint8_t *addr, const char *name);
void sbx_map_add(struct sbx *s, int family, const uint8_t *addr, const char *name);

/* Addresses a sandbox must not reach through us (ranges.h): loopback, the
 * sandbox pools and hutchd's own addresses always; private, metadata and
 * other special-purpose ranges unless hutchd --allow-range opened them.
 * *why (why may be NULL) names the range. */
bool addr_forbidden(int family, const uint8_t *addr, const char **why);

/* Resolver: names are resolved by hutchd (--resolve, --hosts-file, system
 * DNS), cached here, answers and "no such name" alike. A lookup that goes
 * upstream takes one of the sandbox's fair share of slots (fairq.h); beyond
 * it the sandbox waits in its own bounded queue. cb runs exactly once, maybe
 * synchronously; rc is NULL when the lookup failed (SERVFAIL). */
struct rcache {
    struct rcache *next;
    char name[POLICY_NAME_MAX + 1];
    uint8_t a4[8][4], a6[8][16];
    unsigned n4, n6;
    int64_t expires_ms;
    bool pending;             /* waiting: queued in owner's share, or asked (req != 0) */
    uint32_t req;
    struct fq_item fq;
    char owner[32];           /* the sandbox whose share the lookup takes */
    struct rwait *waiters;
};
typedef void (*resolve_cb)(struct rcache *rc, void *ud);
struct rwait {
    struct rwait *next;
    resolve_cb cb;
    void *ud;
};
void resolve_name(struct sbx *who, const char *name, resolve_cb cb, void *ud);
bool rcache_has(const struct rcache *rc, int family, const uint8_t *addr);

/* Control channel to hutchd. */
void ctl_send(uint16_t type, uint32_t chan, const void *data, size_t len);
void audit(const char *sbid, const char *proto, const char *host, int family, const uint8_t *addr, uint16_t port,
           bool allowed, const char *reason);
void report_bytes(const char *sbid, const char *host, int family, const uint8_t *addr, uint16_t port, uint64_t up,
                  uint64_t down, bool closed);

extern uv_loop_t *g_loop;
int64_t mono_ms(void);
void fmt_addr(int family, const uint8_t *addr, char *out, size_t cap);

/* secrets: one substitution happened (never the value) */
void audit_subst(const char *sbid, const char *secret, const char *host, uint16_t port, const char *method,
                 const char *path);

/* tcp.c */
int tcp_proxy_start(int fd4, int fd6);
/* dnssrv.c */
int dns_server_start(int u4, int u6, int t4, int t6);
