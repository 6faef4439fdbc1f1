/* Per-source-address bookkeeping of a listener's unauthenticated connections, so that one address
 * cannot take the whole connection budget. Pure (no sockets, no loop): tests/unit/test_peers.c. */
#pragma once
#include <stdint.h>
#include <sys/socket.h>
#include "daemon/api/link.h"

/* Who a connection is counted against: an IPv4 address (also when it arrives IPv4-mapped on an
 * IPv6 socket) as ::ffff:a.b.c.d, an IPv6 address by its /64, because one host is routinely handed a
 * whole /64 and may pick any address in it. */
struct peer_key {
    uint8_t a[16];
};

struct peer {
    struct peer_key key;
    uint32_t n;          /* connections on conns */
    struct link conns;   /* the caller's nodes, in the order added: the oldest first */
    struct peer *next;   /* hash chain */
};

struct peer_table;

/* 0, or -EAFNOSUPPORT for a family other than AF_INET and AF_INET6. */
int peer_key_from_sockaddr(const struct sockaddr *sa, struct peer_key *out);
/* "192.0.2.1" or "2001:db8::/64", for messages. */
void peer_key_format(const struct peer_key *k, char *buf, size_t n);

struct peer_table *peer_table_new(void);   /* NULL on ENOMEM */
void peer_table_free(struct peer_table *t); /* every peer must have been released */
/* Appends node to k's list (the entry is made on first use) and returns the entry; NULL on ENOMEM. */
struct peer *peer_attach(struct peer_table *t, const struct peer_key *k, struct link *node);
/* Unlinks node from p; p is freed with its last node. */
void peer_detach(struct peer_table *t, struct peer *p, struct link *node);
struct peer *peer_find(const struct peer_table *t, const struct peer_key *k);  /* NULL if none */
size_t peer_table_size(const struct peer_table *t);                          /* peers with a node */
