/* Minimal rtnetlink: a veth pair with its peer born in a sandbox's network
 * namespace, addresses, routes, link state. Synchronous (a few syscalls). */
#pragma once
#include <stdint.h>
#include <sys/types.h>
#include "lib/err.h"

/* A NETLINK_ROUTE socket in the calling thread's network namespace, or, with
 * nsfd >= 0 (a pidfd or /proc/PID/ns/net), in that one: the socket stays
 * bound to the namespace it was created in. */
int nl_open(int nsfd, struct hx_err *e);

/* Creates veth host_if <-> peer_if with the peer created directly inside the
 * network namespace of pid (IFLA_NET_NS_PID), so it never exists here.
 * gso4 > 0: both ends take IPv4 packets of up to gso4 bytes (BIG TCP,
 * IFLA_GSO/GRO_IPV4_MAX_SIZE; a kernel before 6.3 ignores the attributes,
 * one whose veth cannot send that much refuses the creation with EINVAL). */
int nl_veth_create(int nl, const char *host_if, const char *peer_if, pid_t pid, uint32_t gso4, struct hx_err *e);
int nl_link_index(int nl, const char *ifname, struct hx_err *e);   /* >0 or -errno */
int nl_link_up(int nl, int ifindex, struct hx_err *e);
int nl_link_del(int nl, const char *ifname, struct hx_err *e);
/* family AF_INET/AF_INET6, addr 4/16 bytes; IPv6 without duplicate address detection. */
int nl_addr_add(int nl, int ifindex, int family, const uint8_t *addr, int prefix, struct hx_err *e);
/* cc: a TCP congestion control for the connections that take the route
 * (RTAX_CC_ALGO, as `ip route ... congctl`), or NULL for the namespace's. */
int nl_route_default(int nl, int ifindex, int family, const uint8_t *gw, const char *cc, struct hx_err *e);

/* One address of a RTM_GETADDR dump: label is the IPv4 address's label (its
 * interface's name, or NAME:ALIAS), "" for IPv6. */
struct nl_addr {
    int family, ifindex;
    uint8_t scope;
    uint8_t addr[16];
    char label[16];
};
/* Calls cb for every address of `family` (AF_INET or AF_INET6) in nl's
 * namespace: one dump of addresses only. (getifaddrs(3) dumps every link
 * first, and each veth's peer namespace id costs a walk of all namespace
 * ids: O(n^2) with n sandboxes.) */
int nl_addr_dump(int nl, int family, void (*cb)(const struct nl_addr *a, void *ud), void *ud, struct hx_err *e);
