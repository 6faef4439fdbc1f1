/* The sandboxes' DNS responder (UDP and TCP). It answers A/AAAA only for
 * names the sandbox's allowNet allows (everything else: NXDOMAIN), so DNS
 * cannot carry data out: nothing a sandbox asks is forwarded anywhere unless
 * the name is allowed, and then only the name, as a lookup by hutchd. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include "lib/err.h"
#include "proxy/dns.h"
#include "proxy/proxy.h"

#define DNS_TTL 30
#define DNS_TCP_MAX 4096          /* bytes of queries buffered per TCP connection */
#define DNS_SB_PENDING_MAX 128    /* queries of one sandbox waiting for resolution; more: SERVFAIL */

static uv_udp_t u4, u6;
static uv_tcp_t t4, t6;

struct dtcp {
    uv_tcp_t h;
    uint8_t buf[DNS_TCP_MAX];
    size_t len;
    int refs;                     /* queries in flight */
    bool closed, close_done;
    char sbid[32];
};

struct dq {                       /* a query waiting for the resolver */
    struct dns_query q;
    uint8_t raw[DNS_MSG_MAX];
    size_t raw_len;
    char sbid[32];
    char name[POLICY_NAME_MAX + 1];
    uv_udp_t *udp;                /* UDP: reply there to peer */
    struct sockaddr_storage peer;
    struct dtcp *tcp;             /* TCP: reply on this connection */
    bool counted;                 /* in its sandbox's dns_pending */
};

static void on_udp_sent(uv_udp_send_t *r, int status)
{
    free(r);
}

static void on_tcp_written(uv_write_t *w, int status)
{
    free(w);
}

static void dtcp_unref(struct dtcp *t);

static void reply(struct dq *d, int rcode, const uint8_t *addrs, size_t n, size_t alen)
{
    uint8_t *out = malloc(sizeof(uv_write_t) + sizeof(uv_udp_send_t) + 2 + DNS_MSG_MAX);
    if (!out)
        return;
    uint8_t *msg = out + sizeof(uv_write_t) + sizeof(uv_udp_send_t) + 2;
    int len = dns_build_response(&d->q, rcode, addrs, n, alen, DNS_TTL, msg, DNS_MSG_MAX);
    if (len < 0) {
        free(out);
        return;
    }
    if (d->udp) {
        uv_udp_send_t *r = (uv_udp_send_t *)out;
        uv_buf_t b = uv_buf_init((char *)msg, (unsigned)len);
        if (uv_udp_send(r, d->udp, &b, 1, (struct sockaddr *)&d->peer, on_udp_sent) < 0)
            free(out);
        return;
    }
    if (d->tcp && !d->tcp->closed) {
        uv_write_t *w = (uv_write_t *)out;
        msg[-2] = (uint8_t)(len >> 8);
        msg[-1] = (uint8_t)len;
        uv_buf_t b = uv_buf_init((char *)msg - 2, (unsigned)len + 2);
        if (uv_write(w, (uv_stream_t *)&d->tcp->h, &b, 1, on_tcp_written) < 0)
            free(out);
        return;
    }
    free(out);
}

static void dq_free(struct dq *d)
{
    struct sbx *sb = d->counted ? sbx_by_id(d->sbid) : NULL;
    if (sb && sb->dns_pending)
        sb->dns_pending--;
    if (d->tcp)
        dtcp_unref(d->tcp);
    free(d);
}

static void on_resolved(struct rcache *rc, void *ud)
{
    struct dq *d = ud;
    struct sbx *sb = sbx_by_id(d->sbid);
    if (!rc || !sb || rc->n4 + rc->n6 == 0) {
        reply(d, rc && sb ? DNS_RCODE_NXDOMAIN : DNS_RCODE_SERVFAIL, NULL, 0, 0);
        dq_free(d);
        return;
    }
    uint8_t addrs[8 * 16];
    size_t n = 0, alen = d->q.qtype == DNS_TYPE_A ? 4 : 16;
    int fam = alen == 4 ? AF_INET : AF_INET6;
    unsigned avail = alen == 4 ? rc->n4 : rc->n6;
    for (unsigned i = 0; i < avail; i++) {
        const uint8_t *a = alen == 4 ? rc->a4[i] : rc->a6[i];
        const char *range;
        if (addr_forbidden(fam, a, &range)) {
            /* never hand out a way to hutch's own addresses, the host's LAN
             * or a metadata service (DNS rebinding): the record is left out */
            char why[300];
            snprintf(why, sizeof why, "answer left out: the address is in a forbidden range: %s", range);
            audit(sb->id, "dns", d->name, fam, a, 53, false, why);
            continue;
        }
        memcpy(addrs + n * alen, a, alen);
        sbx_map_add(sb, fam, a, d->name);
        n++;
    }
    reply(d, DNS_RCODE_OK, addrs, n, alen);
    dq_free(d);
}

/* One query from sandbox sb. raw is copied; d->udp or d->tcp set by the caller. */
static void handle_query(struct sbx *sb, const uint8_t *raw, size_t n, uv_udp_t *udp, const struct sockaddr *peer,
                         struct dtcp *tcp)
{
    if (n > DNS_MSG_MAX)
        return;
    struct dq *d = calloc(1, sizeof *d);
    if (!d)
        return;
    memcpy(d->raw, raw, n);
    d->raw_len = n;
    d->udp = udp;
    if (peer)
        memcpy(&d->peer, peer, peer->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    d->tcp = tcp;
    if (tcp)
        tcp->refs++;
    snprintf(d->sbid, sizeof d->sbid, "%s", sb->id);
    int r = dns_parse_query(raw, n, &d->q);
    if (r == -EINVAL) {
        dq_free(d);
        return;
    }
    if (r < 0) {
        reply(d, DNS_RCODE_REFUSED, NULL, 0, 0);
        dq_free(d);
        return;
    }
    if (d->q.qclass != 1) {
        reply(d, DNS_RCODE_REFUSED, NULL, 0, 0);
        dq_free(d);
        return;
    }
    bool ok_name = policy_name_normalize(d->q.name, d->q.name_len, d->name) >= 0;
    bool allowed = ok_name && policy_allows_name(&sb->pol, d->name, 0);
    if (!allowed) {
        /* Audited, but the name is cut short: a tunnelling sandbox must not
         * be able to fill hutchd's audit log with its payload either. */
        char shown[80];
        snprintf(shown, sizeof shown, "%.64s%s", ok_name ? d->name : "(invalid name)",
                 ok_name && strlen(d->name) > 64 ? "..." : "");
        audit(sb->id, "dns", shown, 0, NULL, 53, false, "name not in allowNet: NXDOMAIN");
        reply(d, DNS_RCODE_NXDOMAIN, NULL, 0, 0);
        dq_free(d);
        return;
    }
    if (d->q.qtype != DNS_TYPE_A && d->q.qtype != DNS_TYPE_AAAA) {
        reply(d, DNS_RCODE_OK, NULL, 0, 0); /* the name exists; nothing of that type from us */
        dq_free(d);
        return;
    }
    /* Each sandbox waits on its own: beyond its bound it is told SERVFAIL
     * at once (no silent drop, so its resolver does not retry in a loop). */
    if (sb->dns_pending >= DNS_SB_PENDING_MAX) {
        reply(d, DNS_RCODE_SERVFAIL, NULL, 0, 0);
        dq_free(d);
        return;
    }
    sb->dns_pending++;
    d->counted = true;
    resolve_name(sb, d->name, on_resolved, d);
}

static void on_udp_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b)
{
    static char buf[2048];
    *b = uv_buf_init(buf, sizeof buf);
}

static struct sbx *sbx_of(const struct sockaddr *peer)
{
    if (!peer)
        return NULL;
    if (peer->sa_family == AF_INET)
        return sbx_by_addr(AF_INET, (const uint8_t *)&((const struct sockaddr_in *)peer)->sin_addr);
    if (peer->sa_family == AF_INET6)
        return sbx_by_addr(AF_INET6, (const uint8_t *)&((const struct sockaddr_in6 *)peer)->sin6_addr);
    return NULL;
}

static void on_udp_read(uv_udp_t *h, ssize_t n, const uv_buf_t *b, const struct sockaddr *peer, unsigned flags)
{
    if (n <= 0 || (flags & UV_UDP_PARTIAL))
        return;
    struct sbx *sb = sbx_of(peer);
    if (!sb)
        return; /* only sandboxes get answers */
    handle_query(sb, (const uint8_t *)b->base, (size_t)n, h, peer, NULL);
}

static void on_dtcp_closed(uv_handle_t *h)
{
    struct dtcp *t = h->data;
    t->close_done = true;
    if (t->refs == 0)
        free(t);
}

/* freed once closed and no query in flight still points at it */
static void dtcp_unref(struct dtcp *t)
{
    if (--t->refs == 0 && t->close_done)
        free(t);
}

static void dtcp_close(struct dtcp *t)
{
    if (t->closed)
        return;
    t->closed = true;
    uv_close((uv_handle_t *)&t->h, on_dtcp_closed);
}

static void on_dtcp_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b)
{
    struct dtcp *t = h->data;
    *b = uv_buf_init((char *)t->buf + t->len, (unsigned)(DNS_TCP_MAX - t->len));
}

static void on_dtcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct dtcp *t = s->data;
    if (n < 0 || (n == 0 && t->len == DNS_TCP_MAX)) {
        dtcp_close(t);
        return;
    }
    t->len += (size_t)n;
    struct sbx *sb = sbx_by_id(t->sbid);
    size_t off = 0;
    while (t->len - off >= 2) {
        size_t ml = (size_t)t->buf[off] << 8 | t->buf[off + 1];
        if (ml == 0 || ml > DNS_MSG_MAX) {
            dtcp_close(t);
            return;
        }
        if (t->len - off < 2 + ml)
            break;
        if (sb)
            handle_query(sb, t->buf + off + 2, ml, NULL, NULL, t);
        off += 2 + ml;
    }
    memmove(t->buf, t->buf + off, t->len - off);
    t->len -= off;
}

static void on_dtcp_accept(uv_stream_t *lis, int status)
{
    if (status < 0)
        return;
    struct dtcp *t = calloc(1, sizeof *t);
    if (!t)
        return;
    uv_tcp_init(g_loop, &t->h);
    t->h.data = t;
    if (uv_accept(lis, (uv_stream_t *)&t->h) < 0) {
        dtcp_close(t);
        return;
    }
    struct sockaddr_storage peer;
    int pl = sizeof peer;
    struct sbx *sb = uv_tcp_getpeername(&t->h, (struct sockaddr *)&peer, &pl) == 0 ? sbx_of((struct sockaddr *)&peer) : NULL;
    if (!sb) {
        dtcp_close(t);
        return;
    }
    snprintf(t->sbid, sizeof t->sbid, "%s", sb->id);
    uv_read_start((uv_stream_t *)&t->h, on_dtcp_alloc, on_dtcp_read);
}

int dns_server_start(int fu4, int fu6, int ft4, int ft6)
{
    int ok = 0;
    if (uv_udp_init(g_loop, &u4) == 0 && uv_udp_open(&u4, fu4) == 0 && uv_udp_recv_start(&u4, on_udp_alloc, on_udp_read) == 0)
        ok++;
    if (uv_udp_init(g_loop, &u6) == 0 && uv_udp_open(&u6, fu6) == 0 && uv_udp_recv_start(&u6, on_udp_alloc, on_udp_read) == 0)
        ok++;
    if (uv_tcp_init(g_loop, &t4) == 0 && uv_tcp_open(&t4, ft4) == 0)
        uv_listen((uv_stream_t *)&t4, 256, on_dtcp_accept);
    if (uv_tcp_init(g_loop, &t6) == 0 && uv_tcp_open(&t6, ft6) == 0)
        uv_listen((uv_stream_t *)&t6, 256, on_dtcp_accept);
    if (!ok) {
        fprintf(stderr, "hutch-proxy: no DNS socket\n");
        return -1;
    }
    return 0;
}
