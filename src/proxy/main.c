/* hutch-proxy: the transparent egress proxy and DNS responder for sandboxes.
 * Started by hutchd with its listening sockets already bound; it confines
 * itself (empty chroot, unprivileged uid, no_new_privs, seccomp allowlist)
 * before it reads a single byte from a sandbox. See docs/network.md. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include "lib/confine.h"
#include "lib/err.h"
#include "lib/uvframe.h"
#include "lib/ctlchan.h"
#include "lib/wire.h"
#include "proxy/ctl.h"
#include "proxy/mitm.h"
#include "proxy/proxy.h"
#include "proxy/ranges.h"
#include "proxy/subst.h"

uv_loop_t *g_loop;
static uv_pipe_t ctl;
static struct sbx *sandboxes;
static struct rcache *rcache;
static uint32_t next_req = 1;
static struct ranges ranges; /* what sandboxes may not reach; filled by hutchd's PX_CONFIG */

#define RCACHE_TTL_MS 30000
#define RCACHE_NEG_TTL_MS 5000    /* NXDOMAIN or no address */
#define RCACHE_MAX 4096

int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fmt_addr(int family, const uint8_t *addr, char *out, size_t cap)
{
    if (!family || !inet_ntop(family, addr, out, (socklen_t)cap))
        snprintf(out, cap, "?");
}

/* ---- sandboxes ---- */

struct sbx *sbx_by_addr(int family, const uint8_t *addr)
{
    for (struct sbx *s = sandboxes; s; s = s->next) {
        if (family == AF_INET && s->has4 && memcmp(s->ip4, addr, 4) == 0)
            return s;
        if (family == AF_INET6 && s->has6 && memcmp(s->ip6, addr, 16) == 0)
            return s;
    }
    return NULL;
}

struct sbx *sbx_by_id(const char *id)
{
    for (struct sbx *s = sandboxes; s; s = s->next)
        if (strcmp(s->id, id) == 0)
            return s;
    return NULL;
}

const char *sbx_map_lookup(struct sbx *s, int family, const uint8_t *addr)
{
    size_t alen = family == AF_INET ? 4 : 16;
    /* newest first */
    for (unsigned k = 0; k < DNSMAP_N; k++) {
        struct dnsmap_ent *m = &s->map[(s->map_next + DNSMAP_N - 1 - k) % DNSMAP_N];
        if (m->family == family && memcmp(m->addr, addr, alen) == 0)
            return m->name;
    }
    return NULL;
}

bool sbx_map_has(struct sbx *s, int family, const uint8_t *addr, const char *name)
{
    size_t alen = family == AF_INET ? 4 : 16;
    for (unsigned k = 0; k < DNSMAP_N; k++) {
        struct dnsmap_ent *m = &s->map[k];
        if (m->family == family && memcmp(m->addr, addr, alen) == 0 && strcmp(m->name, name) == 0)
            return true;
    }
    return false;
}

void sbx_map_add(struct sbx *s, int family, const uint8_t *addr, const char *name)
{
    if (sbx_map_has(s, family, addr, name))
        return;
    struct dnsmap_ent *m = &s->map[s->map_next++ % DNSMAP_N];
    m->family = family;
    memset(m->addr, 0, sizeof m->addr);
    memcpy(m->addr, addr, family == AF_INET ? 4 : 16);
    snprintf(m->name, sizeof m->name, "%s", name);
}

bool addr_forbidden(int family, const uint8_t *a, const char **why)
{
    return ranges_judge(&ranges, family, a, why) != RANGE_REACHABLE;
}

/* ---- control channel ---- */

/* hutchd reads us like any hostile peer; if it stops reading, we drop
 * records rather than grow without bound (audit records: counted). */
static bool ctl_full(void)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)&ctl) > 8u << 20;
}

void ctl_send(uint16_t type, uint32_t chan, const void *data, size_t len)
{
    if (ctl_full())
        return;
    hx_uv_send_frame((uv_stream_t *)&ctl, type, chan, data, len, false, NULL);
}

static void send_json(uint16_t type, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (text)
        ctl_send(type, 0, text, strlen(text));
    free(text);
}

/* An audit record, or a count of it: the audit API says how many it lacks. */
static void send_audit(uint16_t type, const char *sbid, json_t *o)
{
    struct sbx *s = sbx_by_id(sbid);
    if (ctl_full() || !o) {
        if (s)
            s->audit_lost++;
        json_decref(o);
        return;
    }
    if (s && s->audit_lost) {
        json_object_set_new(o, "lost", json_integer((json_int_t)s->audit_lost));
        s->audit_lost = 0;
    }
    send_json(type, o);
}

void audit(const char *sbid, const char *proto, const char *host, int family, const uint8_t *addr, uint16_t port,
           bool allowed, const char *reason)
{
    char ip[INET6_ADDRSTRLEN];
    fmt_addr(family, addr, ip, sizeof ip);
    send_audit(PX_AUDIT, sbid,
               json_pack("{s:s, s:I, s:s, s:s, s:s, s:i, s:s, s:s}", "sandbox", sbid, "time_ms",
                         (json_int_t)wall_ms(), "proto", proto, "host", host ? host : "", "ip", ip, "port", (int)port,
                         "verdict", allowed ? "allowed" : "blocked", "reason", reason));
}

void report_bytes(const char *sbid, const char *host, int family, const uint8_t *addr, uint16_t port, uint64_t up,
                  uint64_t down, bool closed)
{
    char ip[INET6_ADDRSTRLEN];
    fmt_addr(family, addr, ip, sizeof ip);
    send_json(PX_BYTES, json_pack("{s:s, s:s, s:s, s:i, s:I, s:I, s:b}", "sandbox", sbid, "host", host ? host : "",
                                  "ip", ip, "port", (int)port, "up", (json_int_t)up, "down", (json_int_t)down,
                                  "closed", closed));
}

void audit_subst(const char *sbid, const char *secret, const char *host, uint16_t port, const char *method,
                 const char *path)
{
    send_audit(PX_SUBST, sbid,
               json_pack("{s:s, s:I, s:s, s:s, s:i, s:s, s:s}", "sandbox", sbid, "time_ms", (json_int_t)wall_ms(),
                         "secret", secret, "host", host, "port", (int)port, "method", method, "path", path));
}

/* ---- secrets ---- */

static void secrets_free(struct sbx *s)
{
    for (size_t i = 0; i < s->n_secrets; i++) {
        struct psecret *p = &s->secrets[i];
        if (p->val)
            explicit_bzero(p->val, p->len);
        free(p->val);
        free(p->ph);
        policy_free(&p->hosts);
    }
    free(s->secrets);
    s->secrets = NULL;
    s->n_secrets = 0;
}

/* Zeroes a string inside a parsed message before jansson frees it. */
static void scrub(json_t *v)
{
    if (json_is_string(v))
        explicit_bzero((char *)json_string_value(v), json_string_length(v));
}

static void parse_secrets(struct sbx *s, json_t *arr)
{
    size_t n = json_array_size(arr);
    if (n == 0 || n > SUBST_SECRETS_MAX)
        return;
    s->secrets = calloc(n, sizeof *s->secrets);
    if (!s->secrets)
        return;
    json_t *o;
    size_t i;
    json_array_foreach(arr, i, o) {
        const char *name = json_string_value(json_object_get(o, "name"));
        json_t *ph = json_object_get(o, "placeholder"), *val = json_object_get(o, "value");
        json_t *hosts = json_object_get(o, "hosts");
        size_t len = json_string_length(val);
        if (!name || strlen(name) >= sizeof s->secrets[0].name || !json_is_string(ph) || !json_is_string(val) ||
            len < SUBST_VALUE_MIN || len > SUBST_VALUE_MAX || json_string_length(ph) != len || !json_is_array(hosts))
            continue;
        struct psecret *p = &s->secrets[s->n_secrets];
        p->ph = malloc(len);
        p->val = malloc(len);
        p->hosts.rules = calloc(json_array_size(hosts) + 1, sizeof *p->hosts.rules);
        if (!p->ph || !p->val || !p->hosts.rules) {
            free(p->ph);
            free(p->val);
            free(p->hosts.rules);
            memset(p, 0, sizeof *p);
            continue;
        }
        snprintf(p->name, sizeof p->name, "%s", name);
        memcpy(p->ph, json_string_value(ph), len);
        memcpy(p->val, json_string_value(val), len);
        p->len = len;
        json_t *h;
        size_t j;
        json_array_foreach(hosts, j, h) {
            char why[160];
            const char *e = json_string_value(h);
            if (e && policy_parse_entry(e, strlen(e), &p->hosts.rules[p->hosts.n], why, sizeof why) == 0)
                p->hosts.n++;
        }
        s->n_secrets++;
    }
}

static void never_add(const char *s)
{
    if (s && ranges.n_never < RANGES_NEVER_MAX && cidr_parse(s, false, &ranges.never[ranges.n_never]) == 0)
        ranges.n_never++;
}

static void on_config(json_t *o)
{
    ranges.n_never = ranges.n_open = 0;
    never_add(json_string_value(json_object_get(o, "pool4")));
    never_add(json_string_value(json_object_get(o, "pool6")));
    json_t *v;
    size_t i;
    json_array_foreach(json_object_get(o, "local"), i, v) never_add(json_string_value(v)); /* hutchd's own */
    json_array_foreach(json_object_get(o, "open"), i, v) {                                  /* --allow-range */
        if (ranges.n_open < RANGES_OPEN_MAX && cidr_parse(json_string_value(v), true, &ranges.open[ranges.n_open]) == 0)
            ranges.n_open++;
    }
}

static void on_policy(json_t *o)
{
    const char *id = json_string_value(json_object_get(o, "id"));
    if (!id || strlen(id) >= 32)
        return;
    struct sbx *s = sbx_by_id(id);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return;
        snprintf(s->id, sizeof s->id, "%s", id);
        s->next = sandboxes;
        sandboxes = s;
    }
    secrets_free(s); /* secrets: replaced with the policy */
    parse_secrets(s, json_object_get(o, "secrets"));
    const char *ip4 = json_string_value(json_object_get(o, "ip4"));
    const char *ip6 = json_string_value(json_object_get(o, "ip6"));
    s->has4 = ip4 && inet_pton(AF_INET, ip4, s->ip4) == 1;
    s->has6 = ip6 && inet_pton(AF_INET6, ip6, s->ip6) == 1;
    policy_free(&s->pol);
    json_t *allow = json_object_get(o, "allow");
    if (!json_is_array(allow)) {
        s->pol.unrestricted = true;
        return;
    }
    s->pol.unrestricted = false;
    size_t n = json_array_size(allow);
    s->pol.rules = calloc(n ? n : 1, sizeof *s->pol.rules);
    if (!s->pol.rules)
        return;
    for (size_t i = 0; i < n; i++) {
        const char *e = json_string_value(json_array_get(allow, i));
        char why[160];
        if (e && policy_parse_entry(e, strlen(e), &s->pol.rules[s->pol.n], why, sizeof why) == 0)
            s->pol.n++;
    }
}

static void lookups_forget(struct sbx *s);

static void on_forget(const uint8_t *p, size_t n)
{
    char id[32];
    if (n == 0 || n >= sizeof id)
        return;
    memcpy(id, p, n);
    id[n] = 0;
    for (struct sbx **pp = &sandboxes; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, id) == 0) {
            struct sbx *s = *pp;
            lookups_forget(s);
            *pp = s->next;
            policy_free(&s->pol);
            secrets_free(s);
            free(s);
            return;
        }
    }
}

/* ---- resolver cache ---- */

bool rcache_has(const struct rcache *rc, int family, const uint8_t *addr)
{
    if (family == AF_INET) {
        for (unsigned i = 0; i < rc->n4; i++)
            if (memcmp(rc->a4[i], addr, 4) == 0)
                return true;
    } else {
        for (unsigned i = 0; i < rc->n6; i++)
            if (memcmp(rc->a6[i], addr, 16) == 0)
                return true;
    }
    return false;
}

static void rcache_evict(void)
{
    /* drop expired, non-pending entries; bounded memory */
    int64_t now = mono_ms();
    size_t count = 0;
    for (struct rcache **pp = &rcache; *pp;) {
        struct rcache *rc = *pp;
        if (!rc->pending && (rc->expires_ms < now || count > RCACHE_MAX)) {
            *pp = rc->next;
            free(rc);
            continue;
        }
        count++;
        pp = &rc->next;
    }
}

/* Shares of the upstream lookups: hutchd asks upstream for at most
 * LOOKUP_SLOTS names at once for us; one sandbox holds at most
 * LOOKUP_PER_SB of them and queues at most LOOKUP_QUEUE more, so a sandbox
 * that floods unique names (a slow upstream makes that cheap) only ever
 * waits behind itself. hutchd bounds what it does for us on its own too. */
#define LOOKUP_SLOTS 64
#define LOOKUP_PER_SB 8
#define LOOKUP_QUEUE 32
static struct fq lookups = {.slots = LOOKUP_SLOTS, .per_client = LOOKUP_PER_SB, .queue_max = LOOKUP_QUEUE};

static struct rcache *rcache_of(struct fq_item *it)
{
    return (struct rcache *)((char *)it - offsetof(struct rcache, fq));
}

static void rcache_ask(struct rcache *rc)
{
    rc->req = next_req++;
    if (rc->req == 0) /* 0 marks "not asked" */
        rc->req = next_req++;
    ctl_send(PX_RESOLVE, rc->req, rc->name, strlen(rc->name));
}

/* The lookup is over: rc holds the answer (ok) or nothing; waiters get it. */
static void rcache_finish(struct rcache *rc, bool ok, int64_t ttl_ms)
{
    rc->pending = false;
    rc->req = 0;
    rc->expires_ms = ok ? mono_ms() + ttl_ms : 0; /* a failure is not cached: the next query asks again */
    struct rwait *w = rc->waiters;
    rc->waiters = NULL;
    while (w) {
        struct rwait *next = w->next;
        w->cb(ok ? rc : NULL, w->ud);
        free(w);
        w = next;
    }
}

void resolve_name(struct sbx *who, const char *name, resolve_cb cb, void *ud)
{
    int64_t now = mono_ms();
    struct rcache *rc = NULL;
    for (struct rcache *r = rcache; r; r = r->next)
        if (strcmp(r->name, name) == 0)
            rc = r;
    if (rc && !rc->pending && rc->expires_ms >= now) {
        cb(rc, ud);
        return;
    }
    struct rwait *w = malloc(sizeof *w);
    if (!w) {
        cb(NULL, ud);
        return;
    }
    w->cb = cb;
    w->ud = ud;
    if (!rc) {
        rcache_evict();
        rc = calloc(1, sizeof *rc);
        if (!rc) {
            free(w);
            cb(NULL, ud);
            return;
        }
        snprintf(rc->name, sizeof rc->name, "%s", name);
        rc->next = rcache;
        rcache = rc;
    }
    w->next = rc->waiters;
    rc->waiters = w;
    if (rc->pending) {
        /* Queued in another sandbox's share (a flood can hold our names
         * there): taken over when our own share has room. */
        if (rc->fq.queued_in && rc->fq.queued_in != &who->dnsq && fq_can_run(&lookups, &who->dnsq)) {
            fq_cancel(&lookups, &rc->fq);
            fq_submit(&lookups, &who->dnsq, &rc->fq);
            snprintf(rc->owner, sizeof rc->owner, "%s", who->id);
            rcache_ask(rc);
        }
        return;
    }
    rc->pending = true;
    snprintf(rc->owner, sizeof rc->owner, "%s", who->id);
    switch (fq_submit(&lookups, &who->dnsq, &rc->fq)) {
    case FQ_RUN:
        rcache_ask(rc);
        break;
    case FQ_QUEUED:
        break;
    case FQ_FULL:
        rcache_finish(rc, false, 0); /* SERVFAIL: this sandbox has enough lookups waiting */
        break;
    }
}

/* A slot was given back: the next sandbox in turn asks. */
static void lookups_release(const char *owner)
{
    struct sbx *s = sbx_by_id(owner);
    fq_done(&lookups, s ? &s->dnsq : NULL);
    struct fq_item *it;
    while ((it = fq_next(&lookups)))
        rcache_ask(rcache_of(it));
}

/* A sandbox is forgotten: its queued lookups fail (waiters of other
 * sandboxes on them get SERVFAIL and ask again in their own share). */
static void lookups_forget(struct sbx *s)
{
    struct fq_item *it = fq_client_remove(&lookups, &s->dnsq);
    while (it) {
        struct fq_item *next = it->next;
        rcache_finish(rcache_of(it), false, 0);
        it = next;
    }
}

static void on_resolved(uint32_t req, const uint8_t *p, size_t n)
{
    struct rcache *rc = NULL;
    for (struct rcache *r = rcache; r; r = r->next)
        if (r->pending && r->req == req && req != 0)
            rc = r;
    if (!rc)
        return;
    lookups_release(rc->owner);
    if (n == 0) { /* hutchd could not find out (upstream timeout, SERVFAIL) */
        rcache_finish(rc, false, 0);
        return;
    }
    rc->n4 = rc->n6 = 0;
    unsigned n4 = p[0];
    if (n4 <= 8 && 1 + n4 * 4 + 1 <= n) {
        memcpy(rc->a4, p + 1, n4 * 4);
        rc->n4 = n4;
        unsigned n6 = p[1 + n4 * 4];
        if (n6 <= 8 && 2 + n4 * 4 + n6 * 16 <= n) {
            memcpy(rc->a6, p + 2 + n4 * 4, n6 * 16);
            rc->n6 = n6;
        }
    }
    /* "no such name" is cached too, briefly: repeats do not go upstream */
    rcache_finish(rc, true, rc->n4 + rc->n6 ? RCACHE_TTL_MS : RCACHE_NEG_TTL_MS);
}

static void on_ctl_frame(const struct hx_frame *f)
{
    if (f->type == PX_FORGET)
        return on_forget(f->payload, f->len);
    if (f->type == PX_RESOLVED)
        return on_resolved(f->chan, f->payload, f->len);
    json_t *o = json_loadb((const char *)f->payload, f->len, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return;
    }
    if (f->type == PX_CONFIG) {
        on_config(o);
    } else if (f->type == PX_POLICY) {
        on_policy(o);
        json_t *v;
        size_t i;
        json_array_foreach(json_object_get(o, "secrets"), i, v) scrub(json_object_get(v, "value"));
    } else if (f->type == PX_CA) {
        json_t *c = json_object_get(o, "cert"), *k = json_object_get(o, "key");
        if (!json_is_string(c) || !json_is_string(k) ||
            mitm_set_ca(json_string_value(c), json_string_length(c), json_string_value(k), json_string_length(k)) < 0)
            fprintf(stderr, "hutch-proxy: unusable CA from hutchd: no TLS interception\n");
        scrub(k);
    }
    json_decref(o);
    explicit_bzero((void *)f->payload, f->len); /* secrets: our read buffer held values */
}

/* ---- confinement ---- */

static int confine(const char *root, uid_t uid, gid_t gid)
{
    /* DNS in batches, upstream connections of its own (TCP/UDP over IPv4/IPv6 only). */
    static const char *const extra[] = {"recvmmsg", "sendmmsg", "connect",
                                         "splice" /* tcp.c: passthrough relay, socket → pipe → socket, no copy */, NULL};
    struct hx_confine c = {.who = "hutch-proxy", .root = root, .uid = uid, .gid = gid, .extra = extra,
                           .inet_sockets = true};
    return hx_confine(&c);
}

int main(int argc, char **argv)
{
    /* argv: hutch-proxy [--root DIR] [--uid N --gid N] [--upstream-ca FILE] */
    const char *root = NULL, *upstream_ca = NULL;
    uid_t uid = 65534;
    gid_t gid = 65534;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--root") == 0)
            root = argv[i + 1];
        else if (strcmp(argv[i], "--uid") == 0)
            uid = (uid_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--gid") == 0)
            gid = (gid_t)strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--upstream-ca") == 0)
            upstream_ca = argv[i + 1];
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stderr, NULL, _IOLBF, 0);
    g_loop = uv_default_loop();
    for (int fd = PX_FD_CTL; fd <= PX_FD_DNST6; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (hx_ctl_open(g_loop, &ctl, PX_FD_CTL, false, "hutch-proxy") < 0)
        return 1;
    if (tcp_proxy_start(PX_FD_TCP4, PX_FD_TCP6) < 0 ||
        dns_server_start(PX_FD_DNSU4, PX_FD_DNSU6, PX_FD_DNST4, PX_FD_DNST6) < 0)
        return 1;
    if (mitm_init(upstream_ca) < 0) /* secrets: reads the trust store while there are files */
        fprintf(stderr, "hutch-proxy: TLS interception is unavailable\n");
    json_t *warm = json_pack("{s:s}", "a", "b"); /* jansson allocates its hash seed once: before seccomp */
    json_decref(warm);
    if (confine(root, uid, gid) < 0)
        return 1;
    hx_ctl_read(on_ctl_frame);
    /* hutchd opens its API only after this: a sandbox's first DNS query
     * must not wait out a slow start (the trust store, sanitizers). */
    if (hx_ctl_ready(PX_READY) < 0)
        return 1;
    return uv_run(g_loop, UV_RUN_DEFAULT);
}
