/* DNS query parsing and response building on ldns (RFC 1035 wire format).
 * ldns decodes the message (labels, compression, EDNS); this file only
 * decides what hutch accepts and turns the question into a dotted name. */
#include "proxy/dns.h"
#include <errno.h>
#include <ldns/ldns.h>
#include <string.h>

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* The question's owner name (ldns's uncompressed wire form) as labels
 * joined by '.', raw bytes kept (case included: resolvers randomise it). */
static int name_from_owner(const ldns_rdf *owner, struct dns_query *q)
{
    const uint8_t *d = ldns_rdf_data(owner);
    size_t n = ldns_rdf_size(owner), off = 0, out = 0;
    for (;;) {
        if (off >= n)
            return -EINVAL;
        uint8_t l = d[off++];
        if (l == 0)
            break;
        if (l > 63 || off + l > n)
            return -EINVAL;
        if (out + (out ? 1 : 0) + l > 253)
            return -ENOTSUP;
        if (out)
            q->name[out++] = '.';
        for (size_t i = 0; i < l; i++) {
            uint8_t c = d[off + i];
            if (c == '.' || c == 0) /* would change the label structure once dotted */
                return -ENOTSUP;
            q->name[out++] = (char)c;
        }
        off += l;
    }
    q->name[out] = 0;
    q->name_len = out;
    return out == 0 ? -ENOTSUP : 0; /* the root */
}

int dns_parse_query(const uint8_t *p, size_t n, struct dns_query *q)
{
    memset(q, 0, sizeof *q);
    if (n < 12)
        return -EINVAL;
    /* The header first, by hand: the id and flags are needed to answer
     * NOTIMP even for a message ldns would not decode. */
    q->id = get16(p);
    q->flags = get16(p + 2);
    if (q->flags & 0x8000) /* a response: never answer it (reflection loops) */
        return -EINVAL;
    if (((q->flags >> 11) & 0xf) != 0)
        return -ENOTSUP; /* opcode other than QUERY */
    /* exactly one question, no answers or authority; one additional record
     * (an EDNS OPT) is tolerated and ignored: we answer without EDNS */
    if (get16(p + 4) != 1 || get16(p + 6) != 0 || get16(p + 8) != 0 || get16(p + 10) > 1)
        return -ENOTSUP;
    ldns_pkt *pkt = NULL;
    if (ldns_wire2pkt(&pkt, p, n) != LDNS_STATUS_OK || !pkt)
        return -EINVAL;
    int r = -EINVAL;
    ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_question(pkt), 0);
    if (ldns_pkt_qdcount(pkt) == 1 && rr && ldns_rr_owner(rr)) {
        r = name_from_owner(ldns_rr_owner(rr), q);
        q->qtype = (uint16_t)ldns_rr_get_type(rr);
        q->qclass = (uint16_t)ldns_rr_get_class(rr);
    }
    ldns_pkt_free(pkt);
    return r;
}

/* The question's name back in wire form (from the dotted raw name). */
static ldns_rdf *owner_of(const struct dns_query *q)
{
    uint8_t w[256];
    size_t o = 0;
    const char *s = q->name, *end = q->name + q->name_len;
    while (s < end) {
        const char *dot = memchr(s, '.', (size_t)(end - s));
        size_t l = (size_t)((dot ? dot : end) - s);
        if (l == 0 || l > 63 || o + 1 + l + 1 > sizeof w)
            return NULL;
        w[o++] = (uint8_t)l;
        memcpy(w + o, s, l);
        o += l;
        s += l + (dot ? 1 : 0);
    }
    w[o++] = 0;
    return ldns_dname_new_frm_data((uint16_t)o, w);
}

/* One response with the first naddr answers; its wire length, or -ENOSPC
 * (too big for cap), or -ENOMEM. */
static int build(const struct dns_query *q, int rcode, const uint8_t *addrs, size_t naddr, size_t alen,
                 uint32_t ttl, uint8_t *out, size_t cap)
{
    ldns_pkt *pkt = ldns_pkt_new();
    if (!pkt)
        return -ENOMEM;
    int r = -ENOMEM;
    ldns_pkt_set_id(pkt, q->id);
    ldns_pkt_set_qr(pkt, true);
    ldns_pkt_set_opcode(pkt, LDNS_PACKET_QUERY);
    ldns_pkt_set_aa(pkt, true);
    ldns_pkt_set_rd(pkt, (q->flags & 0x0100) != 0);
    ldns_pkt_set_ra(pkt, true);
    ldns_pkt_set_rcode(pkt, (uint8_t)(rcode & 0xf));
    ldns_rr *qr = NULL;
    if (q->name_len) {
        qr = ldns_rr_new();
        ldns_rdf *owner = owner_of(q);
        if (!qr || !owner) {
            ldns_rdf_deep_free(owner);
            goto out;
        }
        ldns_rr_set_owner(qr, owner);
        ldns_rr_set_type(qr, (ldns_rr_type)q->qtype);
        ldns_rr_set_class(qr, (ldns_rr_class)q->qclass);
        ldns_rr_set_question(qr, true);
        if (!ldns_pkt_push_rr(pkt, LDNS_SECTION_QUESTION, qr))
            goto out;
        qr = NULL; /* owned by pkt */
    }
    for (size_t i = 0; i < naddr && rcode == DNS_RCODE_OK && q->name_len; i++) {
        ldns_rr *a = ldns_rr_new();
        ldns_rdf *owner = owner_of(q);
        ldns_rdf *rd = ldns_rdf_new_frm_data(alen == 16 ? LDNS_RDF_TYPE_AAAA : LDNS_RDF_TYPE_A, alen,
                                             addrs + i * alen);
        if (!a || !owner || !rd) {
            ldns_rr_free(a);
            ldns_rdf_deep_free(owner);
            ldns_rdf_deep_free(rd);
            goto out;
        }
        ldns_rr_set_owner(a, owner);
        ldns_rr_set_type(a, (ldns_rr_type)q->qtype);
        ldns_rr_set_class(a, LDNS_RR_CLASS_IN);
        ldns_rr_set_ttl(a, ttl);
        ldns_rr_push_rdf(a, rd);
        if (!ldns_pkt_push_rr(pkt, LDNS_SECTION_ANSWER, a)) {
            ldns_rr_free(a);
            goto out;
        }
    }
    uint8_t *wire = NULL;
    size_t len = 0;
    if (ldns_pkt2wire(&wire, pkt, &len) != LDNS_STATUS_OK || !wire)
        goto out;
    if (len > cap || len > DNS_MSG_MAX) {
        r = -ENOSPC;
    } else {
        memcpy(out, wire, len);
        r = (int)len;
    }
    free(wire);
out:
    ldns_rr_free(qr);
    ldns_pkt_free(pkt);
    return r;
}

int dns_build_response(const struct dns_query *q, int rcode, const uint8_t *addrs, size_t naddr, size_t alen,
                       uint32_t ttl, uint8_t *out, size_t cap)
{
    if (alen != 4 && alen != 16)
        naddr = 0;
    /* Fewer addresses rather than none when the set does not fit (no TC:
     * a client retrying over TCP would get the same answer). */
    for (;;) {
        int r = build(q, rcode, addrs, naddr, alen, ttl, out, cap);
        if (r != -ENOSPC || naddr == 0)
            return r;
        naddr--;
    }
}
