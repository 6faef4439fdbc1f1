/* TLS ClientHello SNI extraction (RFC 8446 4.1.2, RFC 6066 3). */
#include "proxy/sni.h"
#include <errno.h>
#include <string.h>

int tls_looks_like(const uint8_t *p, size_t n)
{
    return n >= 1 && p[0] == 0x16 && (n < 2 || p[1] == 0x03);
}

/* Reassembles the handshake bytes of consecutive handshake records into hs
 * (at most SNI_HELLO_MAX). Returns bytes gathered, or -EINVAL. */
static int gather(const uint8_t *p, size_t n, uint8_t *hs, size_t *hl, int *complete)
{
    size_t off = 0;
    *hl = 0;
    *complete = 0;
    while (off + 5 <= n) {
        if (p[off] != 0x16 || p[off + 1] != 0x03)
            return -EINVAL;
        size_t rl = (size_t)p[off + 3] << 8 | p[off + 4];
        if (rl == 0 || rl > 16384 + 2048)
            return -EINVAL;
        if (off + 5 + rl > n)
            return 0; /* wait for the whole record */
        if (*hl + rl > SNI_HELLO_MAX)
            return -EINVAL;
        memcpy(hs + *hl, p + off + 5, rl);
        *hl += rl;
        off += 5 + rl;
        if (*hl >= 4) {
            size_t ml = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
            if (hs[0] != 1 || ml + 4 > SNI_HELLO_MAX)
                return -EINVAL;
            if (*hl >= ml + 4) {
                *complete = 1;
                *hl = ml + 4;
                return 0;
            }
        }
    }
    return 0;
}

int tls_sni_parse(const uint8_t *p, size_t n, char *out, size_t cap)
{
    static __thread uint8_t hs[SNI_HELLO_MAX + 16384 + 2048];
    size_t hl;
    int complete;
    if (n >= 1 && p[0] != 0x16)
        return -EINVAL;
    if (gather(p, n, hs, &hl, &complete) < 0)
        return -EINVAL;
    if (!complete)
        return n > SNI_HELLO_MAX + 5 * 8 ? -EINVAL : 0;

    /* ClientHello body: version(2) random(32) session_id<1> suites<2> compression<1> extensions<2> */
    const uint8_t *b = hs + 4;
    size_t bl = hl - 4, o = 34;
    if (o + 1 > bl)
        return -EINVAL;
    o += 1 + b[o];
    if (o + 2 > bl)
        return -EINVAL;
    o += 2 + ((size_t)b[o] << 8 | b[o + 1]);
    if (o + 1 > bl)
        return -EINVAL;
    o += 1 + b[o];
    if (o == bl)
        return -ENOENT; /* no extensions at all */
    if (o + 2 > bl)
        return -EINVAL;
    size_t el = (size_t)b[o] << 8 | b[o + 1];
    o += 2;
    if (o + el > bl)
        return -EINVAL;
    size_t end = o + el;
    while (o + 4 <= end) {
        uint16_t type = (uint16_t)(b[o] << 8 | b[o + 1]);
        size_t len = (size_t)b[o + 2] << 8 | b[o + 3];
        o += 4;
        if (o + len > end)
            return -EINVAL;
        if (type == 0) {
            /* server_name_list<2> of { name_type(1) host_name<2> } */
            const uint8_t *s = b + o;
            if (len < 2)
                return -EINVAL;
            size_t ll = (size_t)s[0] << 8 | s[1];
            if (ll + 2 > len)
                return -EINVAL;
            size_t so = 2;
            while (so + 3 <= ll + 2) {
                uint8_t nt = s[so];
                size_t nl = (size_t)s[so + 1] << 8 | s[so + 2];
                so += 3;
                if (so + nl > ll + 2)
                    return -EINVAL;
                if (nt == 0) {
                    if (nl == 0 || nl >= cap || memchr(s + so, 0, nl))
                        return -EINVAL;
                    memcpy(out, s + so, nl);
                    out[nl] = 0;
                    return (int)nl;
                }
                so += nl;
            }
            return -ENOENT;
        }
        o += len;
    }
    return -ENOENT;
}
