/* The forbidden-range table (see ranges.h). Sources: the IANA IPv4 and IPv6
 * Special-Purpose Address Registries (every block whose "Globally
 * Reachable" is False or N/A), RFC 1918/4193 private space and the cloud
 * metadata addresses that sit outside those blocks. */
#include "proxy/ranges.h"
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

enum kind {
    K_NEVER,     /* closed even when an opened range covers it */
    K_CLOSED,    /* closed unless opened */
    K_GLOBAL,    /* reachable: an exception inside a closed block, or documentation */
    K_EMBED4,    /* carries an IPv4 address at byte `off`: judged as that address */
};

struct special {
    const char *cidr;
    enum kind kind;
    const char *what;
    int off;     /* K_EMBED4 */
};

/* First match wins: exceptions come before the block they are cut from. */
static const struct special table[] = {
    /* IPv4 */
    {"0.0.0.0/8", K_NEVER, "\"this network\", RFC 791: connecting to 0.0.0.0 reaches the local host", 0},
    {"127.0.0.0/8", K_NEVER, "loopback, RFC 1122", 0},
    {"224.0.0.0/4", K_NEVER, "multicast, RFC 5771", 0},
    {"255.255.255.255/32", K_NEVER, "limited broadcast, RFC 919", 0},
    {"10.0.0.0/8", K_CLOSED, "private network, RFC 1918", 0},
    {"172.16.0.0/12", K_CLOSED, "private network, RFC 1918", 0},
    {"192.168.0.0/16", K_CLOSED, "private network, RFC 1918", 0},
    {"100.64.0.0/10", K_CLOSED, "shared address space (carrier-grade NAT), RFC 6598; Alibaba Cloud metadata is "
                                "100.100.100.200", 0},
    {"169.254.0.0/16", K_CLOSED, "link-local, RFC 3927; cloud metadata (AWS, GCP, Azure, OCI, OpenStack) is "
                                 "169.254.169.254, AWS ECS task metadata 169.254.170.2", 0},
    {"168.63.129.16/32", K_CLOSED, "Azure WireServer and platform DNS", 0},
    {"192.0.0.9/32", K_GLOBAL, "PCP anycast, RFC 7723", 0},
    {"192.0.0.10/32", K_GLOBAL, "TURN anycast, RFC 8155", 0},
    {"192.0.0.0/24", K_CLOSED, "IETF protocol assignments, RFC 6890; Oracle Cloud's legacy metadata is "
                               "192.0.0.192", 0},
    {"192.88.99.0/24", K_CLOSED, "6to4 relay anycast (deprecated), RFC 7526", 0},
    {"198.18.0.0/15", K_CLOSED, "benchmarking, RFC 2544", 0},
    {"240.0.0.0/4", K_CLOSED, "reserved, RFC 1112", 0},
    /* Documentation (RFC 5737) is not globally reachable either, but no
     * network routes it: left open, so that examples and the test suite's
     * upstream hosts exercise the default policy (docs/network.md). */
    {"192.0.2.0/24", K_GLOBAL, "documentation, RFC 5737", 0},
    {"198.51.100.0/24", K_GLOBAL, "documentation, RFC 5737", 0},
    {"203.0.113.0/24", K_GLOBAL, "documentation, RFC 5737", 0},

    /* IPv6 */
    {"::/128", K_NEVER, "unspecified, RFC 4291: connecting to :: reaches the local host", 0},
    {"::1/128", K_NEVER, "loopback, RFC 4291", 0},
    {"ff00::/8", K_NEVER, "multicast, RFC 4291", 0},
    {"::ffff:0:0/96", K_EMBED4, "IPv4-mapped, RFC 4291", 12},
    {"64:ff9b::/96", K_EMBED4, "NAT64 well-known prefix, RFC 6052", 12},
    {"2002::/16", K_EMBED4, "6to4, RFC 3056", 2},
    /* the position of the IPv4 address depends on a prefix length only the
     * site knows (RFC 6052): closed as a whole */
    {"64:ff9b:1::/48", K_CLOSED, "local-use NAT64, RFC 8215", 0},
    /* after the 64:ff9b blocks, which it contains */
    {"::/8", K_CLOSED, "reserved by the IETF (IPv4-compatible and IPv4-translated), RFC 4291", 0},
    {"100::/64", K_CLOSED, "discard-only, RFC 6666", 0},
    {"100:0:0:1::/64", K_CLOSED, "dummy prefix, RFC 9780", 0},
    {"2001:1::1/128", K_GLOBAL, "PCP anycast, RFC 7723", 0},
    {"2001:1::2/128", K_GLOBAL, "TURN anycast, RFC 8155", 0},
    {"2001:1::3/128", K_GLOBAL, "DNS-SD SRP anycast, RFC 9665", 0},
    {"2001:3::/32", K_GLOBAL, "AMT, RFC 7450", 0},
    {"2001:4:112::/48", K_GLOBAL, "AS112-v6, RFC 7535", 0},
    {"2001::/32", K_CLOSED, "Teredo, RFC 4380", 0},
    {"2001:2::/48", K_CLOSED, "benchmarking, RFC 5180", 0},
    {"2001:10::/28", K_CLOSED, "ORCHID (deprecated), RFC 4843", 0},
    {"2001:20::/28", K_CLOSED, "ORCHIDv2, RFC 7343: identifiers, not locators", 0},
    {"2001:30::/28", K_CLOSED, "drone remote ID tags, RFC 9374: identifiers, not locators", 0},
    {"2001::/23", K_CLOSED, "IETF protocol assignments, RFC 2928", 0},
    {"5f00::/16", K_CLOSED, "SRv6 SIDs, RFC 9602", 0},
    {"fc00::/7", K_CLOSED, "unique local, RFC 4193; AWS metadata is fd00:ec2::254, GCP's fd20:ce::254", 0},
    {"fe80::/10", K_CLOSED, "link-local, RFC 4291", 0},
    {"fec0::/10", K_CLOSED, "site-local (deprecated), RFC 3879", 0},
    {"2001:db8::/32", K_GLOBAL, "documentation, RFC 3849", 0},
    {"3fff::/20", K_GLOBAL, "documentation, RFC 9637", 0},
};

#define N_TABLE (sizeof table / sizeof table[0])

static struct {
    bool ready;
    struct cidr c[N_TABLE];
    char why[N_TABLE][200];
} parsed;

static void table_init(void)
{
    if (parsed.ready)
        return;
    for (size_t i = 0; i < N_TABLE; i++) {
        if (cidr_parse(table[i].cidr, true, &parsed.c[i]) < 0)
            abort(); /* a typo in the table above: never ship it */
        snprintf(parsed.why[i], sizeof parsed.why[i], "%s (%s)", table[i].cidr, table[i].what);
    }
    parsed.ready = true;
}

int cidr_parse(const char *s, bool exact, struct cidr *out)
{
    char buf[64];
    if (!s || strlen(s) >= sizeof buf)
        return -EINVAL;
    strcpy(buf, s);
    memset(out, 0, sizeof *out);
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = 0;
    if (inet_pton(AF_INET, buf, out->addr) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, buf, out->addr) == 1)
        out->family = AF_INET6;
    else
        return -EINVAL;
    int max = out->family == AF_INET ? 32 : 128;
    out->len = max;
    if (slash) {
        char *end;
        long l = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || l < 0 || l > max)
            return -EINVAL;
        out->len = (int)l;
    }
    for (int b = out->len; b < max; b++) {
        uint8_t bit = (uint8_t)(0x80 >> (b % 8));
        if ((out->addr[b / 8] & bit) && exact)
            return -EINVAL; /* host bits set */
        out->addr[b / 8] &= (uint8_t)~bit;
    }
    return 0;
}

bool cidr_contains(const struct cidr *c, int family, const uint8_t *a)
{
    if (c->family != family)
        return false;
    int bytes = c->len / 8, bits = c->len % 8;
    if (memcmp(a, c->addr, (size_t)bytes) != 0)
        return false;
    return !bits || ((a[bytes] ^ c->addr[bytes]) & (0xff << (8 - bits))) == 0;
}

static bool in_any(const struct cidr *list, size_t n, int family, const uint8_t *a)
{
    for (size_t i = 0; i < n; i++)
        if (cidr_contains(&list[i], family, a))
            return true;
    return false;
}

enum range_verdict ranges_judge(const struct ranges *r, int family, const uint8_t *a, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    table_init();
    if (family != AF_INET && family != AF_INET6) {
        *why = "not an IP address";
        return RANGE_NEVER;
    }
    size_t i = 0;
    while (i < N_TABLE && !cidr_contains(&parsed.c[i], family, a))
        i++;
    if (i < N_TABLE && table[i].kind == K_NEVER) { /* before the pools and locals: 127.0.0.1 is one of those too */
        *why = parsed.why[i];
        return RANGE_NEVER;
    }
    if (r && in_any(r->never, r->n_never, family, a)) {
        *why = "a sandbox pool or one of hutchd's own addresses";
        return RANGE_NEVER;
    }
    if (i == N_TABLE)
        return RANGE_REACHABLE;
    *why = parsed.why[i];
    switch (table[i].kind) {
    case K_NEVER: /* handled above */
    case K_GLOBAL:
        break;
    case K_EMBED4:
        /* a translator or relay on the way would deliver to that address */
        return ranges_judge(r, AF_INET, a + table[i].off, why);
    case K_CLOSED:
        return r && in_any(r->open, r->n_open, family, a) ? RANGE_REACHABLE : RANGE_CLOSED;
    }
    return RANGE_REACHABLE;
}
