/* DNS queries from sandboxes (src/proxy/dns.c): dns_parse_query on a UDP
 * payload, then dns_build_response for it as dnssrv.c does (an answer, an
 * error, a name that did not resolve), each answer parsed back. */
#include "fuzz.h"
#include <errno.h>
#include "proxy/dns.h"

static void answer(const struct dns_query *q, int rcode, size_t naddr)
{
    static const uint8_t addrs[4 * 16] = {192, 0, 2, 1, 0x20, 0x01, 0x0d, 0xb8};
    size_t alen = q->qtype == DNS_TYPE_AAAA ? 16 : 4;
    uint8_t out[DNS_MSG_MAX];
    int len = dns_build_response(q, rcode, addrs, naddr, alen, 30, out, sizeof out);
    FUZZ_CHECK(len == -ENOSPC || len == -ENOMEM || (len >= 12 && len <= DNS_MSG_MAX));
    if (len < 12)
        return;
    /* The answer carries the query's id and has QR set. */
    FUZZ_CHECK(out[0] == (uint8_t)(q->id >> 8) && out[1] == (uint8_t)q->id && (out[2] & 0x80));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy the exact size of the datagram: ASan sees any read past it. */
    uint8_t *p = malloc(size ? size : 1);
    memcpy(p, data, size);
    struct dns_query q;
    memset(&q, 0xa5, sizeof q);
    int r = dns_parse_query(p, size, &q);
    FUZZ_CHECK(r == 0 || r == -EINVAL || r == -ENOTSUP);
    if (r == 0) {
        FUZZ_CHECK(q.name_len < sizeof q.name && q.name[q.name_len] == 0);
        answer(&q, DNS_RCODE_OK, (q.qtype == DNS_TYPE_A || q.qtype == DNS_TYPE_AAAA) ? 4 : 0);
        answer(&q, DNS_RCODE_NXDOMAIN, 0);
    } else if (r == -ENOTSUP) {
        answer(&q, DNS_RCODE_NOTIMP, 0);
    }
    free(p);
    return 0;
}
