/* Which destination addresses a sandbox may reach through hutch-proxy, by
 * range (docs/network.md, "Forbidden ranges"): the IANA special-purpose
 * blocks that are not globally reachable, private networks and cloud
 * metadata services are closed unless the operator opens them
 * (hutchd --allow-range); loopback, the sandbox pools and hutchd's own
 * addresses are closed whatever is opened. Pure functions over bounded
 * input, shared by hutchd (validating --allow-range) and hutch-proxy. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RANGES_OPEN_MAX 64     /* --allow-range entries */
#define RANGES_NEVER_MAX 72    /* two pools and up to 64 of hutchd's addresses, with room */

struct cidr {
    int family;                /* AF_INET or AF_INET6 */
    uint8_t addr[16];          /* AF_INET: first 4 bytes */
    int len;                   /* prefix length in bits */
};

struct ranges {
    struct cidr never[RANGES_NEVER_MAX];   /* the pools and hutchd's own addresses */
    size_t n_never;
    struct cidr open[RANGES_OPEN_MAX];     /* opened by the operator */
    size_t n_open;
};

enum range_verdict {
    RANGE_REACHABLE,           /* globally reachable, or opened by the operator */
    RANGE_CLOSED,              /* closed by default; --allow-range opens it */
    RANGE_NEVER,               /* loopback, "this network", multicast, pools, hutchd's own */
};

/* "10.0.0.0/8", "fd00:ec2::254" (a bare address is a /32 or /128). With
 * exact, bits after the prefix must be zero, so that "10.1.2.3/8" from an
 * operator is not read as something they did not mean; else they are
 * cleared. 0, or -EINVAL. */
int cidr_parse(const char *s, bool exact, struct cidr *out);
bool cidr_contains(const struct cidr *c, int family, const uint8_t *addr);

/* The verdict for a destination (family AF_INET/AF_INET6, addr 4 or 16
 * bytes). An IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64
 * 64:ff9b::/96, 6to4 2002::/16) is judged as that IPv4 address as well.
 * *why (when why is not NULL and the verdict is not RANGE_REACHABLE) gets
 * a static text naming the range, e.g. "10.0.0.0/8 (private network,
 * RFC 1918)". r may be NULL (no pools, locals or opened ranges). */
enum range_verdict ranges_judge(const struct ranges *r, int family, const uint8_t *addr, const char **why);
