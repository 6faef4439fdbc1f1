/* DNS query parsing and response building (RFC 1035 wire format). */
#include "proxy/dns.h"
#include <errno.h>
#include <string.h>

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

int dns_parse_query(const uint8_t *p, size_t n, struct dns_query *q)
{
    memset(q, 0, sizeof *q);
    if (n < 12)
        return -EINVAL;
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
    size_t off = 12;
    size_t out = 0;
    for (;;) {
        if (off >= n)
            return -EINVAL;
        uint8_t l = p[off++];
        if (l == 0)
            break;
        if (l > 63) /* compression pointer or reserved bits: not in a question we accept */
            return -ENOTSUP;
        if (off + l > n)
            return -EINVAL;
        if (out + (out ? 1 : 0) + l > 253)
            return -ENOTSUP;
        if (out)
            q->name[out++] = '.';
        for (size_t i = 0; i < l; i++) {
            uint8_t c = p[off + i];
            if (c == '.' || c == 0) /* would change the label structure once dotted */
                return -ENOTSUP;
            q->name[out++] = (char)c;
        }
        off += l;
    }
    q->name[out] = 0;
    q->name_len = out;
    if (off + 4 > n)
        return -EINVAL;
    q->qtype = get16(p + off);
    q->qclass = get16(p + off + 2);
    q->qend = off + 4;
    if (out == 0)
        return -ENOTSUP; /* the root */
    return 0;
}

int dns_build_response(const struct dns_query *q, const uint8_t *p, int rcode, const uint8_t *addrs, size_t naddr,
                       size_t alen, uint32_t ttl, uint8_t *out, size_t cap)
{
    size_t qlen = q->qend >= 12 ? q->qend - 12 : 0;
    if (12 + qlen > cap)
        return -ENOSPC;
    put16(out, q->id);
    /* QR, opcode 0, AA, RD copied, RA, rcode */
    uint16_t flags = (uint16_t)(0x8000 | 0x0400 | (q->flags & 0x0100) | 0x0080 | (rcode & 0xf));
    put16(out + 2, flags);
    put16(out + 4, qlen ? 1 : 0);
    put16(out + 6, 0);
    put16(out + 8, 0);
    put16(out + 10, 0);
    memcpy(out + 12, p + 12, qlen);
    size_t off = 12 + qlen;
    uint16_t an = 0;
    for (size_t i = 0; i < naddr && rcode == DNS_RCODE_OK; i++) {
        if (off + 12 + alen > cap)
            break; /* truncating the answer set is fine: fewer addresses */
        put16(out + off, 0xc00c); /* pointer to the question name */
        put16(out + off + 2, q->qtype);
        put16(out + off + 4, 1);
        out[off + 6] = (uint8_t)(ttl >> 24);
        out[off + 7] = (uint8_t)(ttl >> 16);
        out[off + 8] = (uint8_t)(ttl >> 8);
        out[off + 9] = (uint8_t)ttl;
        put16(out + off + 10, (uint16_t)alen);
        memcpy(out + off + 12, addrs + i * alen, alen);
        off += 12 + alen;
        an++;
    }
    put16(out + 6, an);
    return (int)off;
}
