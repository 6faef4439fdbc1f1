/* Sandbox networking on the host side (see net.h). The proxy process is
 * treated as untrusted: what it sends is bounded and validated here. */
#include "daemon/log.h"
#include "daemon/net/net.h"
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include "daemon/core/sandbox.h"
#include "daemon/helper.h"
#include "daemon/net/ca.h"
#include "daemon/net/secrets.h"
#include "daemon/net/netlink.h"
#include "daemon/net/nft.h"
#include "daemon/net/resolver.h"
#include "lib/tbucket.h"
#include "lib/uvframe.h"
#include "lib/wire.h"
#include "proxy/ctl.h"
#include "proxy/policy.h"
#include "proxy/ranges.h"

#define PROXY_PORT 15001
#define DNS_PORT 15053
#define AUDIT_MAX 1000         /* records kept per sandbox (oldest dropped) */
#define DESTS_MAX 1000         /* distinct destinations counted per sandbox */
#define STATIC_MAX 1024        /* --resolve and --hosts-file entries */
#define LOG_BURST 20           /* log lines per sandbox at once ... */
#define SB_GSO4_MAX 524280     /* bytes per IPv4 packet on a sandbox's veth: BIG TCP, veth's tso_max_size */
/* The congestion control of the sandbox's own connections, which all end at
 * hutch-proxy over the veth: a link with no queue to fill and nothing to
 * share, where the host's default (often BBR, which paces every packet with a
 * timer) is only cost. Reno is built into every kernel and allowed in every
 * namespace. The proxy's upstream connections keep the host's default. */
#define SB_LEG_CC "reno"
#define LOG_PER_SEC 2          /* ... and then a second; the audit API keeps them all */

struct net_sb {
    struct net_sb *next;       /* net's own list of attached sandboxes (g.attached) */
    char id[32];               /* the sandbox's, for log lines */
    char ifname[16];
    uint8_t host4[4], sb4[4], host6[16], sb6[16];
    json_t *allow;             /* the policy as given, or NULL (unrestricted) */
    const struct secret_set *secrets; /* the sandbox's, borrowed: the core frees them only after detach */
    json_t *audit;             /* array, newest last */
    json_t *dests;             /* "host ip port" -> {host, ip, port, up, down, connections} */
    uint64_t up, down, dropped_audit;
    struct hx_tbucket log_tb;  /* its lines in hutchd's log */
    uint64_t log_suppressed, log_suppressed_total;
};

struct static_ent {
    char name[POLICY_NAME_MAX + 1];
    int family;
    uint8_t addr[16];
};

static struct {
    const struct config *cfg; /* given by net_init: net reads no core state */
    uv_loop_t *loop;
    bool on;
    char table[80];
    uint8_t pool4[4], pool6[16];
    int pool4_len, pool6_len;
    struct static_ent *stat;
    size_t n_stat;
    struct helper proxy;       /* hutch-proxy */
    char *proxy_args[6];
    bool proxy_ready;          /* PX_READY seen since the last start */
    int fds[7];                /* listening sockets, kept for restarts */
    uv_timer_t log_flush;      /* says how many lines were suppressed when a sandbox goes quiet */
    uv_timer_t local_refresh;  /* re-reads hutchd's own addresses (on_local_refresh) */
    json_t *sent_local;        /* the "local" list the proxy has */
    char proxy_path[4200], proxy_root[4200];
} g;

static int parse_cidr(const char *s, int family, uint8_t *out, int *len)
{
    char buf[80];
    if (!s || strlen(s) >= sizeof buf)
        return -EINVAL;
    strcpy(buf, s);
    char *slash = strchr(buf, '/');
    if (!slash)
        return -EINVAL;
    *slash = 0;
    char *end;
    long l = strtol(slash + 1, &end, 10);
    if (*end || l < 0 || l > (family == AF_INET ? 32 : 128) || inet_pton(family, buf, out) != 1)
        return -EINVAL;
    *len = (int)l;
    return 0;
}

static int static_add(const char *name, const char *ip, struct hx_err *e)
{
    if (g.n_stat >= STATIC_MAX)
        return hx_fail(e, E2BIG, "too many --resolve/--hosts-file entries (max %d)", STATIC_MAX);
    struct static_ent *s = &g.stat[g.n_stat];
    if (policy_name_normalize(name, strlen(name), s->name) < 0)
        return hx_fail(e, EINVAL, "not a valid host name: \"%.100s\"", name);
    if (inet_pton(AF_INET, ip, s->addr) == 1)
        s->family = AF_INET;
    else if (inet_pton(AF_INET6, ip, s->addr) == 1)
        s->family = AF_INET6;
    else
        return hx_fail(e, EINVAL, "not an IP address: \"%.100s\"", ip);
    g.n_stat++;
    return 0;
}

static int load_hosts_file(const char *path, struct hx_err *e)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return hx_fail(e, errno, "open --hosts-file %s: %m", path);
    char line[1024];
    int r = 0;
    while (r == 0 && fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *save = NULL, *ip = strtok_r(line, " \t\r\n", &save);
        if (!ip)
            continue;
        for (char *name = strtok_r(NULL, " \t\r\n", &save); name && r == 0; name = strtok_r(NULL, " \t\r\n", &save))
            r = static_add(name, ip, e);
    }
    fclose(f);
    return r < 0 ? hx_wrap(e, "%s", path) : 0;
}

/* ---- addresses ---- */

static void slot_addrs(uint32_t slot, struct net_sb *n)
{
    uint32_t base = (uint32_t)g.pool4[0] << 24 | (uint32_t)g.pool4[1] << 16 | (uint32_t)g.pool4[2] << 8 | g.pool4[3];
    uint32_t h = base + slot * 4 + 1, s = h + 1;
    for (int i = 0; i < 4; i++) {
        n->host4[i] = (uint8_t)(h >> (24 - 8 * i));
        n->sb4[i] = (uint8_t)(s >> (24 - 8 * i));
    }
    /* slot i gets the i-th /64 of the pool: added to the upper 64 bits */
    memcpy(n->host6, g.pool6, 16);
    uint64_t hi = 0;
    for (int i = 0; i < 8; i++)
        hi = hi << 8 | g.pool6[i];
    hi += slot;
    for (int i = 0; i < 8; i++)
        n->host6[i] = (uint8_t)(hi >> (56 - 8 * i));
    memset(n->host6 + 8, 0, 8);
    memcpy(n->sb6, n->host6, 16);
    n->host6[15] = 1;
    n->sb6[15] = 2;
}

static bool in_prefix(const uint8_t *a, const uint8_t *pfx, int bits)
{
    for (int i = 0; bits > 0; i++, bits -= 8) {
        uint8_t m = bits >= 8 ? 0xff : (uint8_t)(0xff << (8 - bits));
        if ((a[i] & m) != (pfx[i] & m))
            return false;
    }
    return true;
}

/* hutchd's own addresses that the proxy must never connect to, beyond the
 * pools. The host ends of sandbox veths are left out: their addresses lie in
 * the pools (refused whole) and their link-local ones are each sandbox's own
 * link. Listing them made every attach cost a dump of every link (O(n) per
 * sandbox, O(n^2) to start n) and pushed real addresses past the cap. Read
 * from address dumps alone (nl_addr_dump): a veth's IPv4 label names it, and
 * its IPv6 addresses are known by its index. */
struct local_walk {
    json_t *a;
    int *sb_if;               /* indexes of sandbox veths (hxs*), sorted after the IPv4 dump */
    size_t n_sb_if, cap_sb_if;
};

static int cmp_int(const void *x, const void *y)
{
    int a = *(const int *)x, b = *(const int *)y;
    return (a > b) - (a < b);
}

static void on_local_addr(const struct nl_addr *ad, void *ud)
{
    struct local_walk *w = ud;
    char buf[INET6_ADDRSTRLEN];
    if (ad->family == AF_INET) {
        if (strncmp(ad->label, "hxs", 3) == 0) {
            if (w->n_sb_if == w->cap_sb_if) {
                size_t cap = w->cap_sb_if ? w->cap_sb_if * 2 : 256;
                int *n = realloc(w->sb_if, cap * sizeof *n);
                if (!n)
                    return;
                w->sb_if = n;
                w->cap_sb_if = cap;
            }
            w->sb_if[w->n_sb_if++] = ad->ifindex;
            return;
        }
        if (in_prefix(ad->addr, g.pool4, g.pool4_len))
            return;
    } else {
        if (in_prefix(ad->addr, g.pool6, g.pool6_len) ||
            (w->n_sb_if && bsearch(&ad->ifindex, w->sb_if, w->n_sb_if, sizeof *w->sb_if, cmp_int)))
            return;
    }
    if (json_array_size(w->a) < 64 && inet_ntop(ad->family, ad->addr, buf, sizeof buf))
        json_array_append_new(w->a, json_string(buf));
}

static json_t *local_addrs(void)
{
    struct local_walk w = {.a = json_array()};
    struct hx_err e = {0};
    int nl = nl_open(-1, &e);
    if (nl < 0)
        return w.a;
    if (nl_addr_dump(nl, AF_INET, on_local_addr, &w, &e) == 0) {
        if (w.n_sb_if) /* qsort of NULL, even for 0 items, is undefined */
            qsort(w.sb_if, w.n_sb_if, sizeof *w.sb_if, cmp_int);
        nl_addr_dump(nl, AF_INET6, on_local_addr, &w, &e);
    }
    close(nl);
    free(w.sb_if);
    return w.a;
}

/* ---- control channel ---- */

static void ctl_send(uint16_t type, uint32_t chan, const void *data, size_t len)
{
    /* secrets: policies and the CA carry values; nothing stays in freed memory */
    helper_send(&g.proxy, type, chan, data, len, -1);
}

static void ctl_send_json(uint16_t type, json_t *o)
{
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (t)
        ctl_send(type, 0, t, strlen(t));
    free(t);
}

/* local: hutchd's own addresses (local_addrs()), taken */
static void send_config_local(json_t *local)
{
    char p4[64], p6[80], a[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET, g.pool4, a, sizeof a);
    snprintf(p4, sizeof p4, "%s/%d", a, g.pool4_len);
    inet_ntop(AF_INET6, g.pool6, a, sizeof a);
    snprintf(p6, sizeof p6, "%s/%d", a, g.pool6_len);
    json_t *open = json_array(); /* --allow-range, checked in net_init */
    for (unsigned i = 0; i < g.cfg->n_allow_range; i++)
        json_array_append_new(open, json_string(g.cfg->allow_range[i]));
    json_decref(g.sent_local);
    g.sent_local = json_incref(local);
    ctl_send_json(PX_CONFIG, json_pack("{s:s, s:s, s:o, s:o}", "pool4", p4, "pool6", p6, "local", local,
                                       "open", open));
}

static void send_config(void)
{
    send_config_local(local_addrs());
}

/* An address the operator adds to the host later is refused within
 * LOCAL_REFRESH_MS: hutchd's own addresses are re-read on a timer, not on
 * every attach (a sandbox's veth adds only pool addresses). */
#define LOCAL_REFRESH_MS 5000
/* The read runs on a libuv worker, not on the loop: getifaddrs dumps every
 * link and address of hutchd's network namespace (three per sandbox veth)
 * under the kernel's rtnl lock, which is one for the whole host; when other
 * work holds it (a network namespace being torn down, a burst of veths), the
 * dump waited for it for up to hundreds of ms, and the loop with it: every
 * API request, stream and round trip of every sandbox (docs/performance/fairness.md,
 * "1,000 sandboxes"). Only one read is in flight at a time. */
static struct {
    uv_work_t req;
    bool busy;
    json_t *got; /* the worker's result, handed to the loop in on_local_read */
} local_read;

static void local_read_work(uv_work_t *w)
{
    (void)w;
    local_read.got = local_addrs();
}

static void local_read_done(uv_work_t *w, int status)
{
    (void)w;
    json_t *now = local_read.got;
    local_read.got = NULL;
    local_read.busy = false;
    if (status == 0 && now && g.proxy.ctl_open && (!g.sent_local || !json_equal(now, g.sent_local)))
        send_config_local(json_incref(now));
    json_decref(now);
}

static void on_local_refresh(uv_timer_t *t)
{
    (void)t;
    if (!g.proxy.ctl_open || local_read.busy)
        return;
    if (uv_queue_work(g.loop, &local_read.req, local_read_work, local_read_done) == 0)
        local_read.busy = true;
}

/* secrets: the JSON text of a message with values is zeroed before it is freed */
static void ctl_send_json_secret(uint16_t type, json_t *o, json_t *with_values)
{
    char *t = json_dumps(o, JSON_COMPACT);
    secrets_scrub_json(with_values);
    json_decref(o);
    if (t) {
        ctl_send(type, 0, t, strlen(t));
        explicit_bzero(t, strlen(t));
    }
    free(t);
}

static void send_ca(void)
{
    if (!ca_cert_pem() || !ca_key_pem())
        return;
    json_t *o = json_pack("{s:s, s:s}", "cert", ca_cert_pem(), "key", ca_key_pem());
    json_t *k = json_object_get(o, "key");
    char *t = json_dumps(o, JSON_COMPACT);
    if (k)
        explicit_bzero((char *)json_string_value(k), json_string_length(k));
    json_decref(o);
    if (t) {
        ctl_send(PX_CA, 0, t, strlen(t));
        explicit_bzero(t, strlen(t));
    }
    free(t);
}

static void send_policy(const struct net_sb *n)
{
    char a4[INET_ADDRSTRLEN], a6[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET, n->sb4, a4, sizeof a4);
    inet_ntop(AF_INET6, n->sb6, a6, sizeof a6);
    json_t *sec = secrets_for_proxy(n->secrets); /* secrets: */
    ctl_send_json_secret(PX_POLICY, json_pack("{s:s, s:s, s:s, s:O?, s:O}", "id", n->id, "ip4", a4, "ip6", a6,
                                              "allow", n->allow, "secrets", sec), sec);
    json_decref(sec);
}

int net_sandbox_set_policy(struct sandbox *sb, json_t *allow_net, struct hx_err *e)
{
    struct net_sb *n = sb->net;
    if (!n)
        return hx_fail(e, ENETDOWN, "sandbox %s has no network interface", sb->id);
    json_decref(n->allow);
    n->allow = allow_net && !json_is_null(allow_net) ? json_incref(allow_net) : NULL;
    n->secrets = sb->secrets; /* a pooled sandbox gets them at hand-over, with its policy */
    send_policy(n);
    return 0;
}

/* Resolution for the proxy: --resolve/--hosts-file first (exact names), then
 * DNS (resolver.c). The reply carries at most PX_RESOLVE_MAX per family. */
_Static_assert(RESOLVER_ADDRS_MAX == PX_RESOLVE_MAX, "one limit for the proxy and the resolver");

static void send_resolved(uint32_t chan, const uint8_t (*a4)[4], unsigned n4, const uint8_t (*a6)[16], unsigned n6)
{
    uint8_t out[2 + PX_RESOLVE_MAX * 20];
    size_t o = 0;
    out[o++] = (uint8_t)n4;
    if (n4) /* a4 may be NULL then */
        memcpy(out + o, a4, n4 * 4);
    o += n4 * 4;
    out[o++] = (uint8_t)n6;
    if (n6)
        memcpy(out + o, a6, n6 * 16);
    o += n6 * 16;
    ctl_send(PX_RESOLVED, chan, out, o);
}

static void on_looked_up(enum resolver_status st, const struct resolver_answer *a, void *ud)
{
    uint32_t chan = (uint32_t)(uintptr_t)ud;
    if (st == RESOLVER_FAIL)
        ctl_send(PX_RESOLVED, chan, NULL, 0); /* SERVFAIL for the sandbox, not cached */
    else if (st == RESOLVER_NONAME)
        send_resolved(chan, NULL, 0, NULL, 0);
    else
        send_resolved(chan, (const uint8_t(*)[4])a->a4, a->n4, (const uint8_t(*)[16])a->a6, a->n6);
}

static void on_resolve(uint32_t chan, const uint8_t *p, size_t n)
{
    char name[POLICY_NAME_MAX + 1];
    if (n == 0 || n > POLICY_NAME_MAX || policy_name_normalize((const char *)p, n, name) < 0) {
        send_resolved(chan, NULL, 0, NULL, 0);
        return;
    }
    uint8_t a4[PX_RESOLVE_MAX][4], a6[PX_RESOLVE_MAX][16];
    unsigned n4 = 0, n6 = 0;
    for (size_t i = 0; i < g.n_stat; i++) {
        if (strcmp(g.stat[i].name, name) != 0)
            continue;
        if (g.stat[i].family == AF_INET && n4 < PX_RESOLVE_MAX)
            memcpy(a4[n4++], g.stat[i].addr, 4);
        if (g.stat[i].family == AF_INET6 && n6 < PX_RESOLVE_MAX)
            memcpy(a6[n6++], g.stat[i].addr, 16);
    }
    if (n4 + n6) {
        send_resolved(chan, (const uint8_t(*)[4])a4, n4, (const uint8_t(*)[16])a6, n6);
        return;
    }
    resolver_lookup(name, on_looked_up, (void *)(uintptr_t)chan);
}

static const char *jstr(json_t *o, const char *k, size_t max)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s && strlen(s) <= max ? s : NULL;
}

/* Keeps rec (newest last, the last AUDIT_MAX) and counts every record not
 * kept: pushed out, malformed (rec NULL), or one the proxy says it could
 * not send ("lost"), so the audit API is complete or says what it lacks. */
static void audit_keep(struct net_sb *n, json_t *o, json_t *rec)
{
    json_t *lost = json_object_get(o, "lost");
    if (json_is_integer(lost) && json_integer_value(lost) > 0)
        n->dropped_audit += (uint64_t)json_integer_value(lost);
    if (!rec) {
        n->dropped_audit++;
        return;
    }
    if (json_array_size(n->audit) >= AUDIT_MAX) {
        json_array_remove(n->audit, 0);
        n->dropped_audit++;
    }
    json_array_append_new(n->audit, rec);
}

static struct net_sb *g_attached; /* every net_sb, so that net walks its own state, not the core's registry */

static void log_flush_suppressed(struct net_sb *n)
{
    if (n->log_suppressed)
        fprintf(stderr, "hutchd: %s: net: %" PRIu64 " similar lines suppressed (see hutch net %s)\n", n->id,
                n->log_suppressed, n->id);
    n->log_suppressed = 0;
}

static void on_log_flush(uv_timer_t *t)
{
    for (struct net_sb *n = g_attached; n; n = n->next)
        log_flush_suppressed(n);
}

/* A sandbox cannot grow hutchd's log without bound (thousands of blocked
 * lookups a second): its lines pass a token bucket, the rest are counted
 * and the count is logged with its next line, a second later at most (or
 * when it goes). */
static bool log_line_ok(struct net_sb *n)
{
    if (!hx_tb_take(&n->log_tb, (int64_t)uv_now(g.loop))) {
        n->log_suppressed++;
        n->log_suppressed_total++;
        if (!uv_is_active((uv_handle_t *)&g.log_flush))
            uv_timer_start(&g.log_flush, on_log_flush, 1000, 0);
        return false;
    }
    log_flush_suppressed(n);
    return true;
}

static struct net_counts g_counts;

/* The attached sandbox a proxy report names (net's own list: the core's
 * registry is not ours to walk). */
static struct net_sb *net_sb_find(const char *id)
{
    for (struct net_sb *n = g_attached; n; n = n->next)
        if (strcmp(n->id, id) == 0)
            return n;
    return NULL;
}

void net_counts(struct net_counts *out)
{
    *out = g_counts;
}

static void on_audit(json_t *o)
{
    const char *id = jstr(o, "sandbox", 40);
    struct net_sb *n = id ? net_sb_find(id) : NULL;
    if (!n)
        return;
    const char *host = jstr(o, "host", 260), *ip = jstr(o, "ip", 64), *verdict = jstr(o, "verdict", 16);
    const char *reason = jstr(o, "reason", 512), *proto = jstr(o, "proto", 8);
    json_t *port = json_object_get(o, "port");
    if (!host || !ip || !verdict || !reason || !proto || !json_is_integer(port))
        return audit_keep(n, o, NULL);
    *(strcmp(verdict, "allowed") == 0 ? &g_counts.allowed : &g_counts.blocked) += 1; /* metrics: */
    audit_keep(n, o,
               json_pack("{s:I, s:s, s:s, s:s, s:I, s:s, s:s}", "time_ms", (json_int_t)now_ms(), "proto", proto, "host",
                         host, "ip", ip, "port", json_integer_value(port), "verdict",
                         strcmp(verdict, "allowed") == 0 ? "allowed" : "blocked", "reason", reason));
    if (log_line_ok(n))
        fprintf(stderr, "hutchd: %s: net %s %s %s [%s]:%" JSON_INTEGER_FORMAT " (%s)\n", n->id, verdict, proto,
            host, ip, json_integer_value(port), reason);
}

static void on_bytes(json_t *o)
{
    const char *id = jstr(o, "sandbox", 40);
    struct net_sb *n = id ? net_sb_find(id) : NULL;
    if (!n)
        return;
    const char *host = jstr(o, "host", 260), *ip = jstr(o, "ip", 64);
    json_t *port = json_object_get(o, "port"), *up = json_object_get(o, "up"), *down = json_object_get(o, "down");
    if (!host || !ip || !json_is_integer(port) || !json_is_integer(up) || !json_is_integer(down) ||
        json_integer_value(up) < 0 || json_integer_value(down) < 0)
        return;
    char key[400];
    snprintf(key, sizeof key, "%s %s %" JSON_INTEGER_FORMAT, host, ip, json_integer_value(port));
    json_t *d = json_object_get(n->dests, key);
    if (!d) {
        if (json_object_size(n->dests) >= DESTS_MAX)
            d = json_object_get(n->dests, "(other)");
        if (!d) {
            d = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "host", host, "ip", ip, "port",
                          json_integer_value(port), "bytes_out", (json_int_t)0, "bytes_in", (json_int_t)0,
                          "connections", (json_int_t)0);
            json_object_set_new(n->dests, json_object_size(n->dests) >= DESTS_MAX ? "(other)" : key, d);
        }
    }
    json_int_t u = json_integer_value(up), dn = json_integer_value(down);
    json_object_set_new(d, "bytes_out", json_integer(json_integer_value(json_object_get(d, "bytes_out")) + u));
    json_object_set_new(d, "bytes_in", json_integer(json_integer_value(json_object_get(d, "bytes_in")) + dn));
    if (json_is_true(json_object_get(o, "closed")))
        json_object_set_new(d, "connections", json_integer(json_integer_value(json_object_get(d, "connections")) + 1));
    n->up += (uint64_t)u;
    n->down += (uint64_t)dn;
    g_counts.bytes_out += (uint64_t)u; /* metrics: */
    g_counts.bytes_in += (uint64_t)dn;
}

/* secrets: one substitution by the proxy; validated, audited without a value */
static void on_subst(json_t *o)
{
    const char *id = jstr(o, "sandbox", 40);
    struct net_sb *n = id ? net_sb_find(id) : NULL;
    if (!n)
        return;
    const char *secret = jstr(o, "secret", 128), *host = jstr(o, "host", 260), *method = jstr(o, "method", 16);
    const char *path = jstr(o, "path", 200);
    json_t *port = json_object_get(o, "port");
    if (!secret || !host || !method || !path || !json_is_integer(port) || !secrets_has(n->secrets, secret))
        return audit_keep(n, o, NULL);
    char reason[512];
    g_counts.substitutions++; /* metrics: */
    snprintf(reason, sizeof reason, "secret %s substituted in %s %s", secret, method, path);
    json_t *rec = json_pack("{s:I, s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:s}", "time_ms", (json_int_t)now_ms(),
                            "proto", "https", "host", host, "ip", "", "port", json_integer_value(port), "verdict",
                            "substituted", "reason", reason, "secret", secret, "method", method, "path", path);
    audit_keep(n, o, rec);
    if (log_line_ok(n))
        fprintf(stderr, "hutchd: %s: net secret %s substituted for %s:%" JSON_INTEGER_FORMAT " (%s %s)\n", n->id,
            secret, host, json_integer_value(port), method, path);
}

static bool on_ctl_frame(struct helper *h, const struct hx_frame *f)
{
    if (f->type == PX_READY) {
        g.proxy_ready = true;
        return true;
    }
    if (f->type == PX_RESOLVE) {
        on_resolve(f->chan, f->payload, f->len);
        return true;
    }
    if (f->type != PX_AUDIT && f->type != PX_BYTES && f->type != PX_SUBST)
        return true;
    json_t *o = json_loadb((const char *)f->payload, f->len, 0, NULL);
    if (json_is_object(o)) {
        if (f->type == PX_AUDIT)
            on_audit(o);
        else if (f->type == PX_SUBST)
            on_subst(o);
        else
            on_bytes(o);
    }
    json_decref(o);
    return true;
}

static void on_ready_deadline(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* A (re)start: the configuration, the CA and every running sandbox's policy. */
static void on_proxy_start(struct helper *h)
{
    g.proxy_ready = false;
    send_config();
    send_ca(); /* secrets: */
    /* net's own list, not the core's registry: everything attached and not
     * yet detached (a stopping sandbox's policy is forgotten at its detach) */
    for (const struct net_sb *n = g_attached; n; n = n->next)
        send_policy(n);
}

static int listen_sock(int family, int type, uint16_t port, struct hx_err *e)
{
    int fd = socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return hx_fail(e, errno, "socket: %m");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        sl = sizeof *a;
    } else {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        sl = sizeof *a;
    }
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return hx_fail(e, err, "bind port %u: %m", port);
    }
    if (type == SOCK_STREAM && listen(fd, 4096) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return hx_fail(e, err, "listen port %u: %m", port);
    }
    return fd;
}

static bool tried, disabled;

/* Safety: hutchd touches nftables only in a network namespace that was made
 * for it and named with `ip netns` (a bind mount in /run/netns), or where
 * an operator said so with --net-host-ns. Anywhere else (a developer's
 * machine, the namespace of whoever started it) sandboxes get loopback only. */
static bool in_named_netns(void)
{
    struct stat self, st;
    if (stat("/proc/self/ns/net", &self) < 0)
        return false;
    DIR *d = opendir("/run/netns");
    if (!d)
        return false;
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        char p[300];
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "/run/netns/%s", de->d_name);
        found = stat(p, &st) == 0 && st.st_ino == self.st_ino && st.st_dev == self.st_dev;
    }
    closedir(d);
    return found;
}

static int net_start(bool wait_ready, struct hx_err *e);

int net_init(const struct config *cfg, uv_loop_t *loop, struct hx_err *e)
{
    g.cfg = cfg;
    g.loop = loop;
    return net_start(true, e);
}

void net_stopping(void)
{
    helper_stopping(&g.proxy);
}

/* wait_ready: at start-up only. A retry from a sandbox's attach must not
 * spin the loop: callbacks run inside it (a teardown, another launch) could
 * free the very sandbox being attached. */
static int net_start(bool wait_ready, struct hx_err *e)
{
    const struct config *cfg = g.cfg;
    int r;
    if (g.on)
        return 0;
    /* Changing the firewall of the machine itself is opt-in: without
     * --net-host-ns, hutchd in the initial netns gives sandboxes loopback only. */
    if (disabled || (!cfg->net_host_ns && !in_named_netns())) {
        if (!disabled)
            fprintf(stderr, "hutchd: sandbox networking is off: hutchd does not run in a named network namespace "
                            "(ip netns); pass --net-host-ns to let it manage nftables (table inet hutch) here\n");
        disabled = true;
        return hx_fail(e, ENETDOWN, "sandbox networking is off (hutchd is not in a named network namespace "
                                    "and --net-host-ns was not given)");
    }
    tried = true;
    g.n_stat = 0;
    for (int i = 0; i < 6; i++)
        if (g.fds[i] > 0)
            close(g.fds[i]);
    for (int i = 0; i < 7; i++)
        g.fds[i] = -1;
    if (parse_cidr(cfg->net_pool4 ? cfg->net_pool4 : "10.200.0.0/16", AF_INET, g.pool4, &g.pool4_len) < 0)
        return hx_fail(e, EINVAL, "--net-pool4 wants an IPv4 CIDR like 10.200.0.0/16");
    if (parse_cidr(cfg->net_pool6 ? cfg->net_pool6 : "fd68:7574:6368::/48", AF_INET6, g.pool6, &g.pool6_len) < 0 ||
        g.pool6_len > 64)
        return hx_fail(e, EINVAL, "--net-pool6 wants an IPv6 CIDR of /64 or shorter like fd68:7574:6368::/48");
    if (g.pool4_len > 30 || ((uint64_t)1 << (32 - g.pool4_len)) / 4 < cfg->max_sandboxes)
        return hx_fail(e, EINVAL, "--net-pool4 /%d is too small for %u sandboxes (4 addresses each)", g.pool4_len,
                       cfg->max_sandboxes);
    if (g.pool6_len > 48 && ((uint64_t)1 << (64 - g.pool6_len)) < cfg->max_sandboxes)
        return hx_fail(e, EINVAL, "--net-pool6 is too small for %u sandboxes (a /64 each)", cfg->max_sandboxes);
    free(g.stat);
    g.stat = calloc(STATIC_MAX, sizeof *g.stat);
    if (!g.stat)
        return hx_fail(e, ENOMEM, "out of memory");
    for (unsigned i = 0; i < cfg->n_resolve; i++) {
        char buf[400];
        snprintf(buf, sizeof buf, "%s", cfg->resolve[i]);
        char *eq = strchr(buf, '=');
        if (!eq)
            return hx_fail(e, EINVAL, "--resolve wants HOST=IP, got \"%.100s\"", cfg->resolve[i]);
        *eq = 0;
        if ((r = static_add(buf, eq + 1, e)) < 0)
            return hx_wrap(e, "--resolve");
    }
    if (cfg->hosts_file && (r = load_hosts_file(cfg->hosts_file, e)) < 0)
        return r;
    for (unsigned i = 0; i < cfg->n_allow_range; i++) {
        struct cidr c;
        if (cidr_parse(cfg->allow_range[i], true, &c) < 0)
            return hx_fail(e, EINVAL, "--allow-range wants an address or a CIDR with no bits after the prefix "
                                      "(192.168.1.0/24, fd00:ec2::254), got \"%.100s\"", cfg->allow_range[i]);
    }
    if ((r = resolver_init(g.loop, cfg->dns_upstream, e)) < 0)
        return r;

    /* our own table: "hutch" for the default instance, "hutch_<cgroup-name>" otherwise */
    if (strcmp(cfg->cgroup_name, "hutch") == 0) {
        snprintf(g.table, sizeof g.table, "hutch");
    } else {
        snprintf(g.table, sizeof g.table, "hutch_");
        size_t o = 6;
        for (const char *p = cfg->cgroup_name; *p && o < sizeof g.table - 1; p++)
            g.table[o++] = (char)((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ? *p : '_');
        g.table[o] = 0;
    }
    if ((r = helper_find(cfg->self_dir, "proxy", "hutch-proxy", g.proxy_path, sizeof g.proxy_path, e)) < 0)
        return r;
    /* the proxy's chroot: an empty directory nobody can write */
    snprintf(g.proxy_root, sizeof g.proxy_root, "%s/proxy-root", cfg->state_dir);
    if (mkdir(g.proxy_root, 0555) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %m", g.proxy_root);
    chmod(g.proxy_root, 0555);

    static const int fam[6] = {AF_INET, AF_INET6, AF_INET, AF_INET6, AF_INET, AF_INET6};
    static const int type[6] = {SOCK_STREAM, SOCK_STREAM, SOCK_DGRAM, SOCK_DGRAM, SOCK_STREAM, SOCK_STREAM};
    static const uint16_t port[6] = {PROXY_PORT, PROXY_PORT, DNS_PORT, DNS_PORT, DNS_PORT, DNS_PORT};
    for (int i = 0; i < 6; i++)
        if ((g.fds[i] = listen_sock(fam[i], type[i], port[i], e)) < 0)
            return hx_wrap(e, "hutch-proxy sockets");
    if ((r = nft_setup(g.table, PROXY_PORT, DNS_PORT, e)) < 0)
        return r;
    /* secrets: the interception CA, once per hutchd run (rotated on request) */
    static bool ca_done;
    if (!ca_done) {
        struct hx_err ce = {0};
        if (ca_init(cfg->state_dir, cfg->rotate_ca, &ce) < 0)
            fprintf(stderr, "hutchd: %s: TLS interception for secrets is off\n", ce.msg);
        ca_done = true;
    }
    static bool timer_ready;
    if (!timer_ready) {
        uv_timer_init(g.loop, &g.log_flush);
        uv_unref((uv_handle_t *)&g.log_flush);
        uv_timer_init(g.loop, &g.local_refresh);
        uv_unref((uv_handle_t *)&g.local_refresh);
        uv_timer_start(&g.local_refresh, on_local_refresh, LOCAL_REFRESH_MS, LOCAL_REFRESH_MS);
        timer_ready = true;
    }
    char **a = g.proxy_args;
    *a++ = g.proxy_path;
    *a++ = "--root";
    *a++ = g.proxy_root;
    if (cfg->upstream_ca) { /* secrets: read by the proxy before it confines itself */
        *a++ = "--upstream-ca";
        *a++ = (char *)cfg->upstream_ca;
    }
    *a = NULL;
    g.proxy.name = "hutch-proxy";
    g.proxy.loop = g.loop;
    g.proxy.args = g.proxy_args;
    g.proxy.fds = g.fds; /* its listeners: 4, 5 TCP; 6, 7 DNS over UDP; 8, 9 DNS over TCP */
    g.proxy.n_fds = 6;
    g.proxy.on_start = on_proxy_start;
    g.proxy.on_frame = on_ctl_frame;
    if ((r = helper_start(&g.proxy, e)) < 0)
        return r;
    g.on = true;
    printf("hutchd: sandbox network: nftables table inet %s, pools %d.%d.%d.%d/%d and IPv6 /%d, %zu static names, "
           "%u forbidden ranges opened\n", g.table, g.pool4[0], g.pool4[1], g.pool4[2], g.pool4[3], g.pool4_len,
           g.pool6_len, g.n_stat, cfg->n_allow_range);
    if (!wait_ready)
        return 0;
    /* Before the API opens (main() listens after us): wait, bounded, until
     * the proxy serves, so the first sandbox's first lookup is answered. */
    uv_timer_t deadline;
    bool late = false;
    uv_timer_init(g.loop, &deadline);
    deadline.data = &late;
    uv_timer_start(&deadline, on_ready_deadline, 10000, 0);
    while (!g.proxy_ready && g.proxy.alive && !late)
        uv_run(g.loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(g.loop, UV_RUN_NOWAIT); /* lets the close finish: deadline lives on this stack */
    if (!g.proxy_ready)
        fprintf(stderr, "hutchd: hutch-proxy is slow to start; sandbox networking may lag\n");
    return 0;
}

void net_fini(void)
{
    net_fini_keep(false);
}

void net_fini_keep(bool keep_table)
{
    if (!g.on)
        return;
    g.on = false;
    uv_timer_stop(&g.local_refresh);
    json_decref(g.sent_local);
    g.sent_local = NULL;
    helper_stop(&g.proxy);
    resolver_fini();
    if (!keep_table)
        nft_teardown(g.table);
    for (int i = 0; i < 6; i++) {
        if (g.fds[i] >= 0)
            close(g.fds[i]);
        g.fds[i] = -1;
    }
}

int net_allow_validate(json_t *allow, struct hx_err *e)
{
    if (!allow || json_is_null(allow))
        return 0;
    if (!json_is_array(allow))
        return hx_fail(e, EINVAL, "allowNet must be an array of strings");
    if (disabled && json_array_size(allow) > 0)
        return hx_fail(e, ENETDOWN, "allowNet needs sandbox networking, which is off on this hutchd");
    if (json_array_size(allow) > POLICY_RULES_MAX)
        return hx_fail(e, EINVAL, "allowNet has more than %d entries", POLICY_RULES_MAX);
    size_t i;
    json_t *v;
    json_array_foreach(allow, i, v) {
        struct policy_rule rule;
        char why[200];
        if (!json_is_string(v))
            return hx_fail(e, EINVAL, "allowNet entries must be strings");
        if (policy_parse_entry(json_string_value(v), json_string_length(v), &rule, why, sizeof why) < 0)
            return hx_fail(e, EINVAL, "%s", why);
    }
    return 0;
}

/* The sandbox's net state, made and listed (attach and adopt alike): 1 and
 * *out when it has a veth, 0 when it needs none (networking off, or
 * allowNet []: loopback only, which needs neither the proxy nor the
 * firewall, so it starts even where they cannot), or -errno. */
static int net_sb_new(struct sandbox *sb, struct net_sb **out, struct hx_err *e)
{
    *out = NULL;
    if (disabled && !(sb->allow_net && json_is_array(sb->allow_net) && json_array_size(sb->allow_net) > 0))
        return 0;
    json_t *allow = sb->allow_net && !json_is_null(sb->allow_net) ? sb->allow_net : NULL;
    if (allow && json_array_size(allow) == 0)
        return 0;
    if (!g.on && net_start(false, e) < 0)
        return hx_wrap(e, "sandbox networking is not available");
    struct net_sb *n = calloc(1, sizeof *n);
    if (!n)
        return hx_fail(e, ENOMEM, "out of memory");
    n->allow = allow ? json_incref(allow) : NULL;
    n->secrets = sb->secrets;
    n->audit = json_array();
    n->dests = json_object();
    hx_tb_init(&n->log_tb, LOG_BURST, LOG_PER_SEC);
    snprintf(n->ifname, sizeof n->ifname, "hxs%u", sb->slot);
    slot_addrs(sb->slot, n);
    snprintf(n->id, sizeof n->id, "%s", sb->id);
    n->next = g_attached;
    g_attached = n;
    sb->net = n;
    *out = n;
    return 1;
}

int net_sandbox_prepare(struct sandbox *sb, struct hx_err *e)
{
    struct net_sb *n;
    return net_sb_new(sb, &n, e);
}

/* Runs on a worker thread (lifecycle.c launch_work): reads only the
 * net_sb's name and addresses, which no one changes once it is listed, and
 * talks netlink on sockets of its own. ~10 round trips and a veth pair:
 * milliseconds of kernel time the event loop no longer waits for. */
int net_sandbox_plumb(const struct net_sb *n, pid_t pid, int pidfd, struct hx_err *e)
{
    int r, nl = -1, snl = -1, idx, sidx;
    if ((nl = nl_open(-1, e)) < 0)
        return nl;
    /* BIG TCP on the sandbox's link: the sandbox's TCP sends the proxy up to
     * 512 KiB per packet instead of 64 KiB, so both ends of the first leg
     * handle ~8x fewer packets and acknowledgements (docs/performance/proxy.md,
     * "The egress proxy"). A kernel that refuses it gets the plain pair,
     * and is not asked again. */
    static _Atomic bool big_tcp_refused;
    uint32_t gso4 = atomic_load(&big_tcp_refused) ? 0 : SB_GSO4_MAX;
    r = nl_veth_create(nl, n->ifname, "eth0", pid, gso4, e);
    if (r == -EEXIST) { /* a leftover of a crashed hutchd with the same slot: asked only then (each
                         * rtnetlink request waits for the lock that netns teardowns hold) */
        nl_link_del(nl, n->ifname, NULL);
        r = nl_veth_create(nl, n->ifname, "eth0", pid, gso4, e);
    }
    if (r == -EINVAL && gso4) {
        if (!atomic_exchange(&big_tcp_refused, true))
            fprintf(stderr, "hutchd: %s; sandbox veths keep 64 KiB packets (no BIG TCP)\n", e->msg);
        r = nl_veth_create(nl, n->ifname, "eth0", pid, 0, e);
    }
    if (r < 0)
        goto out;
    if ((r = idx = nl_link_index(nl, n->ifname, e)) < 0 ||
        (r = nl_addr_add(nl, idx, AF_INET, n->host4, 30, e)) < 0 ||
        (r = nl_addr_add(nl, idx, AF_INET6, n->host6, 64, e)) < 0 || (r = nl_link_up(nl, idx, e)) < 0)
        goto out;
    /* inside: a socket born in the sandbox's netns (entered through its pidfd) */
    if ((r = snl = nl_open(pidfd, e)) < 0)
        goto out;
    if ((r = sidx = nl_link_index(snl, "eth0", e)) < 0 || (r = nl_addr_add(snl, sidx, AF_INET, n->sb4, 30, e)) < 0 ||
        (r = nl_addr_add(snl, sidx, AF_INET6, n->sb6, 64, e)) < 0 || (r = nl_link_up(snl, sidx, e)) < 0 ||
        (r = nl_route_default(snl, sidx, AF_INET, n->host4, SB_LEG_CC, e)) < 0 ||
        (r = nl_route_default(snl, sidx, AF_INET6, n->host6, SB_LEG_CC, e)) < 0)
        goto out;
    r = 0;
out:
    if (nl >= 0)
        close(nl);
    if (snl >= 0)
        close(snl);
    if (r < 0)
        hx_wrap(e, "sandbox %s network", n->id);
    return r;
}

int net_sandbox_attach(struct sandbox *sb, json_t **setup_net, struct hx_err *e)
{
    (void)e;
    *setup_net = NULL;
    struct net_sb *n = sb->net;
    if (!n)
        return 0;
    send_policy(n);
    char h4[INET_ADDRSTRLEN], h6[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET, n->host4, h4, sizeof h4);
    inet_ntop(AF_INET6, n->host6, h6, sizeof h6);
    *setup_net = json_pack("{s:s, s:s}", "dns4", h4, "dns6", h6);
    if (*setup_net && ca_cert_pem()) /* secrets: the sandbox trusts the interception CA */
        json_object_set_new(*setup_net, "ca", json_string(ca_cert_pem()));
    return 0;
}

int net_sandbox_adopt(struct sandbox *sb, struct hx_err *e)
{
    struct net_sb *n;
    int made = net_sb_new(sb, &n, e);
    if (made <= 0)
        return made;
    /* The veth lives on in our namespace (its peer is in the sandbox's, which
     * the sandbox cannot change); its addresses are put back if missing. */
    int r, idx, nl = nl_open(-1, e);
    if (nl < 0)
        return nl;
    if ((r = idx = nl_link_index(nl, n->ifname, e)) >= 0) {
        struct hx_err ae = {0};
        if ((r = nl_addr_add(nl, idx, AF_INET, n->host4, 30, &ae)) == -EEXIST)
            r = 0;
        if (r == 0 && (r = nl_addr_add(nl, idx, AF_INET6, n->host6, 64, &ae)) == -EEXIST)
            r = 0;
        if (r == 0)
            r = nl_link_up(nl, idx, &ae);
        if (r < 0)
            *e = ae;
    }
    close(nl);
    if (r < 0)
        return hx_wrap(e, "sandbox %s network", sb->id);
    /* no send_config(): the veth and its addresses were there when the
     * proxy started, so its list of our own addresses has them already */
    send_policy(n);
    return 0;
}

/* Off net's list and off the sandbox; the caller frees it (net_sb_free). */
static struct net_sb *net_sb_unlist(struct sandbox *sb)
{
    struct net_sb *n = sb->net;
    if (!n)
        return NULL;
    for (struct net_sb **pp = &g_attached; *pp; pp = &(*pp)->next)
        if (*pp == n) {
            *pp = n->next;
            break;
        }
    sb->net = NULL;
    return n;
}

static void net_sb_free(struct net_sb *n)
{
    json_decref(n->allow);
    json_decref(n->audit);
    json_decref(n->dests);
    free(n);
}

void net_sandbox_forget(struct sandbox *sb)
{
    struct net_sb *n = net_sb_unlist(sb);
    if (n)
        net_sb_free(n);
}

void net_sandbox_detach(struct sandbox *sb)
{
    struct net_sb *n = net_sb_unlist(sb);
    if (!n)
        return;
    log_flush_suppressed(n);
    ctl_send(PX_FORGET, 0, sb->id, strlen(sb->id));
    net_sb_free(n);
}

bool net_link_name(const struct net_sb *n, char out[16])
{
    if (!n)
        return false;
    memcpy(out, n->ifname, 16);
    return out[0] != 0;
}

void net_link_remove(const char *ifname, const char *who)
{
    struct hx_err e = {0};
    int nl = nl_open(-1, &e);
    if (nl < 0) {
        fprintf(stderr, "hutchd: %s: %s\n", who, e.msg);
        return;
    }
    /* usually gone already: a veth dies with the namespace of its peer */
    if (nl_link_del(nl, ifname, &e) < 0 && e.code != ENODEV)
        fprintf(stderr, "hutchd: %s: %s\n", who, e.msg);
    close(nl);
}

json_t *net_sandbox_report(struct sandbox *sb)
{
    struct net_sb *n = sb->net;
    if (!n)
        return json_pack("{s:s, s:b, s:[], s:[], s:I, s:I}", "id", sb->id, "network", 0, "destinations", "audit",
                         "bytes_out", (json_int_t)0, "bytes_in", (json_int_t)0);
    char a4[INET_ADDRSTRLEN], a6[INET6_ADDRSTRLEN], g4[INET_ADDRSTRLEN], g6[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET, n->sb4, a4, sizeof a4);
    inet_ntop(AF_INET6, n->sb6, a6, sizeof a6);
    inet_ntop(AF_INET, n->host4, g4, sizeof g4);
    inet_ntop(AF_INET6, n->host6, g6, sizeof g6);
    json_t *dests = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(n->dests, k, v) json_array_append(dests, v);
    return json_pack("{s:s, s:b, s:O?, s:{s:s, s:s, s:s, s:s}, s:I, s:I, s:o, s:O, s:I, s:I}", "id", sb->id, "network",
                     1, "allow_net", n->allow, "addresses", "ipv4", a4, "ipv6", a6, "gateway4", g4, "gateway6", g6,
                     "bytes_out", (json_int_t)n->up, "bytes_in", (json_int_t)n->down, "destinations", dests, "audit",
                     n->audit, "audit_dropped", (json_int_t)n->dropped_audit, "log_suppressed",
                     (json_int_t)n->log_suppressed_total);
}

int net_sandbox_socket(struct sandbox *sb, int domain, int type, struct hx_err *e)
{
    if (sb->pidfd < 0)
        return hx_fail(e, ESRCH, "sandbox %s has no namespace", sb->id);
    /* per thread: libuv's worker threads keep their namespace */
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0)
        return hx_fail(e, errno, "open own netns: %m");
    if (setns(sb->pidfd, CLONE_NEWNET) < 0) {
        int err = errno;
        close(self);
        errno = err;
        return hx_fail(e, err, "setns into sandbox netns: %m");
    }
    int fd = socket(domain, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int err = errno;
    if (setns(self, CLONE_NEWNET) < 0) {
        /* hutchd must never keep running inside a sandbox's namespace */
        perror("hutchd: setns back to own netns");
        abort();
    }
    close(self);
    if (fd < 0) {
        errno = err;
        return hx_fail(e, err, "socket in sandbox netns: %m");
    }
    return fd;
}

int net_sandbox_resolver(struct sandbox *sb, uint8_t addr4[4])
{
    if (!sb->net)
        return -ENETUNREACH;
    memcpy(addr4, sb->net->host4, 4);
    return 0;
}

void net_sandbox_bytes(const struct sandbox *sb, uint64_t *out, uint64_t *in)
{
    *out = sb->net ? sb->net->up : 0;
    *in = sb->net ? sb->net->down : 0;
}
