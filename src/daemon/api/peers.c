/* Per-source-address lists of unauthenticated connections: a chained hash table keyed by the
 * source address (IPv6 by /64), with a per-table random seed so that chains cannot be aimed at. */
#include "daemon/api/peers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* A table holds at most one entry per open unauthenticated connection (4,096 by default), so a
 * fixed size keeps chains short without ever rehashing under a flood. */
#define PEER_BUCKETS 1024u

struct peer_table {
    uint64_t seed[2];
    size_t size;
    struct peer *b[PEER_BUCKETS];
};

static const uint8_t v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

int peer_key_from_sockaddr(const struct sockaddr *sa, struct peer_key *out)
{
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
        memcpy(out->a, v4_mapped, sizeof(v4_mapped));
        memcpy(out->a + 12, &in4->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(out->a, &in6->sin6_addr, 16);
        if (memcmp(out->a, v4_mapped, sizeof(v4_mapped)) != 0)
            memset(out->a + 8, 0, 8);  /* the /64 */
        return 0;
    }
    return -EAFNOSUPPORT;
}

void peer_key_format(const struct peer_key *k, char *buf, size_t n)
{
    char s[INET6_ADDRSTRLEN];
    bool v4 = memcmp(k->a, v4_mapped, sizeof(v4_mapped)) == 0;
    if (!inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? k->a + 12 : k->a, s, sizeof(s)))
        snprintf(s, sizeof(s), "?");
    snprintf(buf, n, "%s%s", s, v4 ? "" : "/64");
}

static uint64_t mix64(uint64_t x)  /* splitmix64's finalizer */
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static size_t bucket(const struct peer_table *t, const struct peer_key *k)
{
    uint64_t hi, lo;
    memcpy(&hi, k->a, 8);
    memcpy(&lo, k->a + 8, 8);
    return (size_t)(mix64(mix64(hi ^ t->seed[0]) ^ lo ^ t->seed[1]) % PEER_BUCKETS);
}

struct peer_table *peer_table_new(void)
{
    struct peer_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    if (getrandom(t->seed, sizeof(t->seed), GRND_NONBLOCK) != (ssize_t)sizeof(t->seed)) {
        /* Early boot without entropy: chains can then be aimed at, which costs time, not safety. */
        t->seed[0] = (uint64_t)(uintptr_t)t;
        t->seed[1] = (uint64_t)(uintptr_t)&t;
    }
    return t;
}

void peer_table_free(struct peer_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < PEER_BUCKETS; i++)
        for (struct peer *p = t->b[i], *next; p; p = next) {
            next = p->next;
            free(p);
        }
    free(t);
}

struct peer *peer_find(const struct peer_table *t, const struct peer_key *k)
{
    for (struct peer *p = t->b[bucket(t, k)]; p; p = p->next)
        if (memcmp(&p->key, k, sizeof(*k)) == 0)
            return p;
    return NULL;
}

struct peer *peer_attach(struct peer_table *t, const struct peer_key *k, struct link *node)
{
    struct peer *p = peer_find(t, k);
    if (!p) {
        p = calloc(1, sizeof(*p));
        if (!p)
            return NULL;
        p->key = *k;
        link_init(&p->conns);
        size_t i = bucket(t, k);
        p->next = t->b[i];
        t->b[i] = p;
        t->size++;
    }
    link_add(&p->conns, node);
    p->n++;
    return p;
}

void peer_detach(struct peer_table *t, struct peer *p, struct link *node)
{
    link_del(node);
    if (--p->n > 0)
        return;
    for (struct peer **pp = &t->b[bucket(t, &p->key)]; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    t->size--;
    free(p);
}

size_t peer_table_size(const struct peer_table *t)
{
    return t->size;
}
