/* DNS messages for the sandbox-facing responder: parsing one query and
 * building its answer, on ldns (the wire format is ldns's; what hutch
 * accepts is decided here). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28
#define DNS_RCODE_OK 0
#define DNS_RCODE_FORMERR 1
#define DNS_RCODE_SERVFAIL 2
#define DNS_RCODE_NXDOMAIN 3
#define DNS_RCODE_NOTIMP 4
#define DNS_RCODE_REFUSED 5
#define DNS_MSG_MAX 512       /* our answers always fit in classic UDP size */

struct dns_query {
    uint16_t id, flags, qtype, qclass;
    char name[256];           /* labels joined by '.', raw bytes (not yet validated as a host name) */
    size_t name_len;
};

/* Parses a query: header with QR=0, opcode 0, exactly one question (with
 * at most one additional record, EDNS, ignored). 0, or -EINVAL (malformed: drop silently) or
 * -ENOTSUP (well-formed header but something we do not answer: the caller
 * replies NOTIMP/FORMERR using q->id). */
int dns_parse_query(const uint8_t *p, size_t n, struct dns_query *q);

/* Builds the response to q (its question rebuilt from q's raw name, type
 * and class) into out. addrs: naddr addresses of alen bytes each (4 for A,
 * 16 for AAAA), placed as answers of type q->qtype; as many as fit in
 * DNS_MSG_MAX and cap. Returns the length, -ENOSPC or -ENOMEM. */
int dns_build_response(const struct dns_query *q, int rcode, const uint8_t *addrs, size_t naddr,
                       size_t alen, uint32_t ttl, uint8_t *out, size_t cap);
