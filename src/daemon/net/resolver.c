/* DNS lookups with c-ares on the libuv loop (see resolver.h). */
#include "daemon/net/resolver.h"
#include <ares.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define RESOLVER_INFLIGHT_MAX 128  /* at once; the proxy itself asks for at most 64 */
#define RESOLVER_TIMEOUT_MS 2000   /* per try; with 2 tries a dead server costs a lookup about 6 s */
#define RESOLVER_TRIES 2
#define RESOLV_CONF "/etc/resolv.conf"
#define RESOLV_CHECK_MS 2000       /* how often a lookup may stat resolv.conf */

/* One c-ares channel. A changed resolv.conf makes a new one for new lookups;
 * the old one is retired and destroyed when its last lookup is answered. */
struct rchan {
    struct rchan *next;
    ares_channel ch;
    unsigned inflight;
    bool retired;
};

struct rsock {                 /* a socket c-ares asked us to watch */
    uv_poll_t poll;
    ares_socket_t fd;
    struct rchan *c;
    struct rsock *next;
};

struct rlookup {
    resolver_cb cb;
    void *ud;
    struct rchan *c;
};

static struct {
    uv_loop_t *loop;
    char *upstream;
    struct rchan *chans;       /* the first one, unless retired, takes new lookups */
    struct rsock *socks;
    uv_timer_t timer;
    unsigned inflight;
    struct stat conf;
    int64_t conf_checked_ms;
    bool on, lib;
} R;

static void on_poll(uv_poll_t *p, int status, int events);

static void on_sock_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct rchan *c = data;
    struct rsock **pp = &R.socks;
    while (*pp && !((*pp)->fd == fd && (*pp)->c == c))
        pp = &(*pp)->next;
    struct rsock *s = *pp;
    if (!readable && !writable) {
        if (s) {
            *pp = s->next;
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, on_sock_closed);
        }
        return;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return; /* the query then times out */
        if (uv_poll_init_socket(R.loop, &s->poll, fd) < 0) {
            free(s);
            return;
        }
        s->poll.data = s;
        s->fd = fd;
        s->c = c;
        s->next = R.socks;
        R.socks = s;
    }
    uv_poll_start(&s->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

static void on_timer(uv_timer_t *t);

/* After c-ares ran: retired channels with nothing left go, and the timer
 * is set for the earliest timeout of any channel. */
static void after_process(void)
{
    for (struct rchan **pp = &R.chans; *pp;) {
        struct rchan *c = *pp;
        if (c->retired && c->inflight == 0) {
            *pp = c->next;
            ares_destroy(c->ch); /* closes its sockets through on_sock_state */
            free(c);
            continue;
        }
        pp = &c->next;
    }
    int64_t best = -1;
    for (struct rchan *c = R.chans; c; c = c->next) {
        struct timeval tv, *t = ares_timeout(c->ch, NULL, &tv);
        if (t) {
            int64_t ms = (int64_t)t->tv_sec * 1000 + t->tv_usec / 1000 + 1;
            if (best < 0 || ms < best)
                best = ms;
        }
    }
    if (best >= 0)
        uv_timer_start(&R.timer, on_timer, (uint64_t)best, 0);
    else
        uv_timer_stop(&R.timer);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct rsock *s = p->data;
    ares_socket_t fd = s->fd; /* s may be closed while c-ares runs */
    struct rchan *c = s->c;
    bool rd = status < 0 || (events & UV_READABLE), wr = status == 0 && (events & UV_WRITABLE);
    ares_process_fd(c->ch, rd ? fd : ARES_SOCKET_BAD, wr ? fd : ARES_SOCKET_BAD);
    after_process();
}

static void on_timer(uv_timer_t *t)
{
    for (struct rchan *c = R.chans; c; c = c->next)
        ares_process_fd(c->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    after_process();
}

static int chan_new(struct hx_err *e)
{
    struct rchan *c = calloc(1, sizeof *c);
    if (!c)
        return hx_fail(e, ENOMEM, "out of memory");
    struct ares_options o = {0};
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = c;
    o.timeout = RESOLVER_TIMEOUT_MS;
    o.tries = RESOLVER_TRIES;
    o.ndomains = 0; /* no search list: a sandbox's names are absolute, never one of the host's domains */
    int r = ares_init_options(&c->ch, &o,
                              ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_DOMAINS);
    if (r != ARES_SUCCESS) {
        free(c);
        return hx_fail(e, EIO, "DNS client (c-ares): %s", ares_strerror(r));
    }
    if (R.upstream && (r = ares_set_servers_ports_csv(c->ch, R.upstream)) != ARES_SUCCESS) {
        ares_destroy(c->ch);
        free(c);
        return hx_fail(e, EINVAL, "--dns-upstream %s: %s", R.upstream, ares_strerror(r));
    }
    for (struct rchan *old = R.chans; old; old = old->next)
        old->retired = true;
    c->next = R.chans;
    R.chans = c;
    return 0;
}

static int64_t loop_ms(void)
{
    uv_update_time(R.loop);
    return (int64_t)uv_now(R.loop);
}

/* The system's servers changed (DHCP, a VPN): what glibc's resolver notices
 * by itself, c-ares needs a new channel for. */
static void conf_check(void)
{
    if (R.upstream || loop_ms() - R.conf_checked_ms < RESOLV_CHECK_MS)
        return;
    R.conf_checked_ms = loop_ms();
    struct stat st = {0};
    stat(RESOLV_CONF, &st);
    if (st.st_ino == R.conf.st_ino && st.st_dev == R.conf.st_dev && st.st_size == R.conf.st_size &&
        st.st_mtim.tv_sec == R.conf.st_mtim.tv_sec && st.st_mtim.tv_nsec == R.conf.st_mtim.tv_nsec)
        return;
    R.conf = st;
    struct hx_err e = {0};
    if (chan_new(&e) < 0)
        fprintf(stderr, "hutchd: %s: keeping the old DNS servers\n", e.msg);
}

int resolver_init(uv_loop_t *loop, const char *upstream, struct hx_err *e)
{
    if (R.on)
        return 0;
    if (!R.lib) {
        int r = ares_library_init(ARES_LIB_INIT_ALL);
        if (r != ARES_SUCCESS)
            return hx_fail(e, EIO, "c-ares: %s", ares_strerror(r));
        R.lib = true;
    }
    R.loop = loop;
    free(R.upstream);
    R.upstream = upstream ? strdup(upstream) : NULL;
    if (upstream && !R.upstream)
        return hx_fail(e, ENOMEM, "out of memory");
    if (!upstream) {
        stat(RESOLV_CONF, &R.conf);
        R.conf_checked_ms = loop_ms();
    }
    int r = chan_new(e);
    if (r < 0)
        return r;
    uv_timer_init(loop, &R.timer);
    uv_unref((uv_handle_t *)&R.timer);
    R.on = true;
    return 0;
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct rlookup *l = arg;
    l->c->inflight--;
    R.inflight--;
    struct resolver_answer a = {0};
    for (struct ares_addrinfo_node *n = status == ARES_SUCCESS && res ? res->nodes : NULL; n; n = n->ai_next) {
        if (n->ai_family == AF_INET && a.n4 < RESOLVER_ADDRS_MAX) {
            const uint8_t *p = (const uint8_t *)&((struct sockaddr_in *)n->ai_addr)->sin_addr;
            bool dup = false;
            for (unsigned i = 0; i < a.n4; i++)
                dup = dup || memcmp(a.a4[i], p, 4) == 0;
            if (!dup)
                memcpy(a.a4[a.n4++], p, 4);
        } else if (n->ai_family == AF_INET6 && a.n6 < RESOLVER_ADDRS_MAX) {
            const uint8_t *p = (const uint8_t *)&((struct sockaddr_in6 *)n->ai_addr)->sin6_addr;
            bool dup = false;
            for (unsigned i = 0; i < a.n6; i++)
                dup = dup || memcmp(a.a6[i], p, 16) == 0;
            if (!dup)
                memcpy(a.a6[a.n6++], p, 16);
        }
    }
    if (res)
        ares_freeaddrinfo(res);
    enum resolver_status st;
    if (status == ARES_SUCCESS)
        st = a.n4 + a.n6 ? RESOLVER_OK : RESOLVER_NONAME;
    else if (status == ARES_ENOTFOUND || status == ARES_ENODATA || status == ARES_ENONAME || status == ARES_EBADNAME)
        st = RESOLVER_NONAME; /* an answer: cached by the proxy */
    else
        st = RESOLVER_FAIL;   /* no answer: asked again next time */
    l->cb(st, st == RESOLVER_OK ? &a : NULL, l->ud);
    free(l);
}

void resolver_lookup(const char *name, resolver_cb cb, void *ud)
{
    if (!R.on || R.inflight >= RESOLVER_INFLIGHT_MAX) {
        cb(RESOLVER_FAIL, NULL, ud);
        return;
    }
    conf_check();
    struct rchan *c = R.chans;
    struct rlookup *l = c && !c->retired ? malloc(sizeof *l) : NULL;
    if (!l) {
        cb(RESOLVER_FAIL, NULL, ud);
        return;
    }
    *l = (struct rlookup){.cb = cb, .ud = ud, .c = c};
    c->inflight++;
    R.inflight++;
    /* NOSORT: RFC 6724 sorting would connect() a UDP socket to each address */
    struct ares_addrinfo_hints h = {.ai_family = AF_UNSPEC, .ai_flags = ARES_AI_NOSORT};
    ares_getaddrinfo(c->ch, name, NULL, &h, on_addrinfo, l);
    after_process();
}

static void on_timer_closed(uv_handle_t *h)
{
}

void resolver_fini(void)
{
    if (!R.on)
        return;
    R.on = false;
    for (struct rchan *c = R.chans; c; c = c->next)
        c->retired = true;
    /* ares_destroy answers what is in flight (ARES_EDESTRUCTION: RESOLVER_FAIL) */
    while (R.chans) {
        struct rchan *c = R.chans;
        R.chans = c->next;
        ares_destroy(c->ch);
        free(c);
    }
    uv_close((uv_handle_t *)&R.timer, on_timer_closed);
    free(R.upstream);
    R.upstream = NULL;
    if (R.lib) {
        ares_library_cleanup();
        R.lib = false;
    }
}
