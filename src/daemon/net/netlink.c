/* rtnetlink requests for sandbox networking (see netlink.h). */
#include "daemon/net/netlink.h"
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

struct nlbuf {
    uint8_t b[1024];
    size_t len;
};

static struct nlmsghdr *nl_hdr(struct nlbuf *m)
{
    return (struct nlmsghdr *)m->b;
}

static void nl_init(struct nlbuf *m, uint16_t type, uint16_t flags, const void *body, size_t blen)
{
    memset(m, 0, sizeof *m);
    struct nlmsghdr *h = nl_hdr(m);
    h->nlmsg_type = type;
    h->nlmsg_flags = (uint16_t)(NLM_F_REQUEST | NLM_F_ACK | flags);
    m->len = NLMSG_HDRLEN;
    memcpy(m->b + m->len, body, blen);
    m->len += NLMSG_ALIGN(blen);
    h->nlmsg_len = (uint32_t)m->len;
}

static struct rtattr *nl_attr(struct nlbuf *m, uint16_t type, const void *data, size_t dlen)
{
    struct rtattr *a = (struct rtattr *)(m->b + m->len);
    if (m->len + RTA_SPACE(dlen) > sizeof m->b)
        return NULL; /* caller's messages are fixed and small: cannot happen */
    a->rta_type = type;
    a->rta_len = (uint16_t)RTA_LENGTH(dlen);
    if (dlen)
        memcpy(RTA_DATA(a), data, dlen);
    m->len += RTA_SPACE(dlen);
    nl_hdr(m)->nlmsg_len = (uint32_t)m->len;
    return a;
}

static void nl_nest_end(struct nlbuf *m, struct rtattr *a)
{
    a->rta_len = (uint16_t)(m->b + m->len - (uint8_t *)a);
}

static int nl_talk(int nl, struct nlbuf *m, const char *what, struct hx_err *e)
{
    static _Thread_local uint32_t seq; /* launches run on several worker threads */
    nl_hdr(m)->nlmsg_seq = ++seq;
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (sendto(nl, m->b, m->len, 0, (struct sockaddr *)&sa, sizeof sa) < 0)
        return hx_fail(e, errno, "netlink %s: send: %m", what);
    uint8_t buf[4096];
    for (;;) {
        ssize_t n = recv(nl, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return hx_fail(e, errno, "netlink %s: recv: %m", what);
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != seq)
                continue;
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *err = NLMSG_DATA(h);
                if (err->error == 0)
                    return 0;
                errno = -err->error;
                return hx_fail(e, -err->error, "netlink %s: %m", what);
            }
        }
    }
}

int nl_open(int nsfd, struct hx_err *e)
{
    int self = -1;
    if (nsfd >= 0) {
        /* per thread: libuv's worker threads keep their namespace */
        self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (self < 0)
            return hx_fail(e, errno, "open own netns: %m");
        if (setns(nsfd, CLONE_NEWNET) < 0) {
            int err = errno;
            close(self);
            errno = err;
            return hx_fail(e, err, "setns into sandbox netns: %m");
        }
    }
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    int err = errno;
    if (self >= 0) {
        if (setns(self, CLONE_NEWNET) < 0) {
            /* hutchd must never keep running inside a sandbox's namespace */
            perror("hutchd: setns back to own netns");
            abort();
        }
        close(self);
    }
    if (fd < 0) {
        errno = err;
        return hx_fail(e, err, "netlink socket: %m");
    }
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Not in every uapi header yet (Linux 6.3, include/uapi/linux/if_link.h). */
#ifndef IFLA_GSO_IPV4_MAX_SIZE
#define IFLA_GSO_IPV4_MAX_SIZE 63
#define IFLA_GRO_IPV4_MAX_SIZE 64
#endif

static void big_tcp4(struct nlbuf *m, uint32_t size)
{
    if (size) {
        nl_attr(m, IFLA_GSO_IPV4_MAX_SIZE, &size, sizeof size);
        nl_attr(m, IFLA_GRO_IPV4_MAX_SIZE, &size, sizeof size);
    }
}

int nl_veth_create(int nl, const char *host_if, const char *peer_if, pid_t pid, uint32_t gso4, struct hx_err *e)
{
    struct nlbuf m;
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC};
    nl_init(&m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifi, sizeof ifi);
    nl_attr(&m, IFLA_IFNAME, host_if, strlen(host_if) + 1);
    big_tcp4(&m, gso4);
    struct rtattr *li = nl_attr(&m, IFLA_LINKINFO, NULL, 0);
    nl_attr(&m, IFLA_INFO_KIND, "veth", 4);
    struct rtattr *data = nl_attr(&m, IFLA_INFO_DATA, NULL, 0);
    struct rtattr *peer = nl_attr(&m, VETH_INFO_PEER, &ifi, sizeof ifi);
    nl_attr(&m, IFLA_IFNAME, peer_if, strlen(peer_if) + 1);
    uint32_t p = (uint32_t)pid;
    nl_attr(&m, IFLA_NET_NS_PID, &p, sizeof p);
    big_tcp4(&m, gso4);
    nl_nest_end(&m, peer);
    nl_nest_end(&m, data);
    nl_nest_end(&m, li);
    return nl_talk(nl, &m, "create veth", e);
}

int nl_link_index(int nl, const char *ifname, struct hx_err *e)
{
    (void)nl;
    /* if_nametoindex works in the caller's netns only: look the index up
     * with a request on this socket instead. */
    struct nlbuf m;
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC};
    memset(&m, 0, sizeof m);
    nl_init(&m, RTM_GETLINK, 0, &ifi, sizeof ifi);
    nl_hdr(&m)->nlmsg_flags = NLM_F_REQUEST;
    nl_attr(&m, IFLA_IFNAME, ifname, strlen(ifname) + 1);
    static _Thread_local uint32_t seq = 1u << 30;
    nl_hdr(&m)->nlmsg_seq = ++seq;
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (sendto(nl, m.b, m.len, 0, (struct sockaddr *)&sa, sizeof sa) < 0)
        return hx_fail(e, errno, "netlink get link %s: %m", ifname);
    uint8_t buf[8192];
    for (;;) {
        ssize_t n = recv(nl, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return hx_fail(e, errno, "netlink get link %s: %m", ifname);
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != seq)
                continue;
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *err = NLMSG_DATA(h);
                errno = -err->error;
                return hx_fail(e, err->error ? -err->error : ENODEV, "netlink get link %s: %m", ifname);
            }
            if (h->nlmsg_type == RTM_NEWLINK) {
                struct ifinfomsg *r = NLMSG_DATA(h);
                return r->ifi_index;
            }
        }
    }
}

int nl_link_up(int nl, int ifindex, struct hx_err *e)
{
    struct nlbuf m;
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_index = ifindex, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
    nl_init(&m, RTM_NEWLINK, 0, &ifi, sizeof ifi);
    return nl_talk(nl, &m, "link up", e);
}

int nl_link_del(int nl, const char *ifname, struct hx_err *e)
{
    struct nlbuf m;
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC};
    nl_init(&m, RTM_DELLINK, 0, &ifi, sizeof ifi);
    nl_attr(&m, IFLA_IFNAME, ifname, strlen(ifname) + 1);
    return nl_talk(nl, &m, "delete link", e);
}

int nl_addr_add(int nl, int ifindex, int family, const uint8_t *addr, int prefix, struct hx_err *e)
{
    struct nlbuf m;
    struct ifaddrmsg ifa = {.ifa_family = (uint8_t)family, .ifa_prefixlen = (uint8_t)prefix,
                            .ifa_index = (uint32_t)ifindex, .ifa_scope = RT_SCOPE_UNIVERSE};
    if (family == AF_INET6)
        ifa.ifa_flags = IFA_F_NODAD; /* usable at once: no 1-2 s of tentative address */
    nl_init(&m, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &ifa, sizeof ifa);
    size_t alen = family == AF_INET ? 4 : 16;
    nl_attr(&m, IFA_LOCAL, addr, alen);
    nl_attr(&m, IFA_ADDRESS, addr, alen);
    if (family == AF_INET6) {
        uint32_t flags = IFA_F_NODAD;
        nl_attr(&m, IFA_FLAGS, &flags, sizeof flags);
    }
    return nl_talk(nl, &m, "add address", e);
}

int nl_route_default(int nl, int ifindex, int family, const uint8_t *gw, const char *cc, struct hx_err *e)
{
    struct nlbuf m;
    struct rtmsg rt = {.rtm_family = (uint8_t)family, .rtm_table = RT_TABLE_MAIN, .rtm_protocol = RTPROT_STATIC,
                       .rtm_scope = RT_SCOPE_UNIVERSE, .rtm_type = RTN_UNICAST};
    nl_init(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &rt, sizeof rt);
    nl_attr(&m, RTA_GATEWAY, gw, family == AF_INET ? 4 : 16);
    uint32_t oif = (uint32_t)ifindex;
    nl_attr(&m, RTA_OIF, &oif, sizeof oif);
    if (cc) { /* `ip route ... congctl CC`: the congestion control of the connections that take it */
        struct rtattr *mx = nl_attr(&m, RTA_METRICS, NULL, 0);
        nl_attr(&m, RTAX_CC_ALGO, cc, strlen(cc) + 1);
        nl_nest_end(&m, mx);
    }
    return nl_talk(nl, &m, "add default route", e);
}

int nl_addr_dump(int nl, int family, void (*cb)(const struct nl_addr *a, void *ud), void *ud, struct hx_err *e)
{
    static _Thread_local uint32_t seq;
    struct {
        struct nlmsghdr h;
        struct ifaddrmsg ifa;
    } req = {.h = {.nlmsg_len = sizeof req, .nlmsg_type = RTM_GETADDR, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
                   .nlmsg_seq = ++seq},
             .ifa = {.ifa_family = (uint8_t)family}};
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (sendto(nl, &req, sizeof req, 0, (struct sockaddr *)&sa, sizeof sa) < 0)
        return hx_fail(e, errno, "netlink address dump: send: %m");
    static _Thread_local uint8_t buf[32768]; /* the kernel fills up to 32 KiB per read */
    size_t alen = family == AF_INET ? 4 : 16;
    for (;;) {
        ssize_t n = recv(nl, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return hx_fail(e, errno, "netlink address dump: recv: %m");
        if (n == 0)
            return hx_fail(e, EIO, "netlink address dump: closed");
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != seq)
                continue;
            if (h->nlmsg_type == NLMSG_DONE)
                return 0;
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *err = NLMSG_DATA(h);
                errno = -err->error;
                return hx_fail(e, -err->error, "netlink address dump: %m");
            }
            if (h->nlmsg_type != RTM_NEWADDR || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifaddrmsg)))
                continue;
            struct ifaddrmsg *ifa = NLMSG_DATA(h);
            if (ifa->ifa_family != family)
                continue;
            struct nl_addr a = {.family = family, .ifindex = (int)ifa->ifa_index, .scope = ifa->ifa_scope};
            bool have = false, local = false;
            int rl = (int)IFA_PAYLOAD(h);
            for (struct rtattr *r = IFA_RTA(ifa); RTA_OK(r, rl); r = RTA_NEXT(r, rl)) {
                size_t dl = RTA_PAYLOAD(r);
                /* IFA_LOCAL is the address itself; IFA_ADDRESS the peer's on point-to-point links */
                if ((r->rta_type == IFA_LOCAL || (r->rta_type == IFA_ADDRESS && !local)) && dl == alen) {
                    memcpy(a.addr, RTA_DATA(r), alen);
                    have = true;
                    local |= r->rta_type == IFA_LOCAL;
                } else if (r->rta_type == IFA_LABEL && dl > 0) {
                    size_t l = dl < sizeof a.label ? dl : sizeof a.label - 1;
                    memcpy(a.label, RTA_DATA(r), l);
                    a.label[l] = 0;
                }
            }
            if (have)
                cb(&a, ud);
        }
    }
}
