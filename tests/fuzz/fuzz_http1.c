/* The proxy's HTTP/1 request stream (src/proxy/http1.c), driven as tcp.c
 * drives it: request heads collected up to H1_HEAD_MAX, bodies skipped with
 * h1_body_advance, keep-alive. The input is cut into reads at "\n--\n"
 * (a seed may also just be one stream). Also the response status line. */
#include "fuzz.h"
#include <errno.h>
#include "proxy/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    struct h1 t = {0};
    uint8_t *hbuf = malloc(H1_HEAD_MAX);
    size_t hlen = 0;
    const uint8_t *rp;
    size_t rn;
    (void)h1_response_status(data, size);
    (void)h1_looks_like(data, size);
    while (fuzz_part(&in, &rp, &rn)) {
        uint8_t *copy = malloc(rn ? rn : 1);
        memcpy(copy, rp, rn);
        const uint8_t *p = copy;
        size_t n = rn;
        bool dead = false;
        while (n && !dead) {
            if (t.st == H1_TUNNEL)
                break;
            if (t.st == H1_UPGRADE_WAIT) {
                /* the server refused: what follows is a new head */
                t.st = H1_HEAD;
            }
            if (hlen == 0 && t.st != H1_HEAD) {
                long k = h1_body_advance(&t, p, n);
                if (k < 0) {
                    FUZZ_CHECK(k == -EINVAL);
                    dead = true;
                    break;
                }
                FUZZ_CHECK((size_t)k <= n);
                if (t.st != H1_TUNNEL && (size_t)k < n)
                    FUZZ_CHECK(t.st == H1_HEAD);
                p += k;
                n -= (size_t)k;
                continue;
            }
            size_t take = n < H1_HEAD_MAX - hlen ? n : H1_HEAD_MAX - hlen;
            memcpy(hbuf + hlen, p, take);
            hlen += take;
            p += take;
            n -= take;
            char host[256];
            memset(host, 'X', sizeof host);
            int hl = h1_head_parse(&t, hbuf, hlen, host, sizeof host);
            if (hl == 0 && n == 0)
                break;
            if (hl <= 0) {
                FUZZ_CHECK(hl == 0 || hl == -EINVAL || hl == -E2BIG);
                dead = true;
                break;
            }
            FUZZ_CHECK((size_t)hl <= hlen && strlen(host) < sizeof host);
            /* bytes after the head go back to the stream */
            size_t rest = hlen - (size_t)hl;
            hlen = 0;
            if (rest) {
                /* re-feed: the tail of hbuf starts the body or the next head */
                uint8_t *tail = malloc(rest + n);
                memcpy(tail, hbuf + hl, rest);
                memcpy(tail + rest, p, n);
                free(copy);
                copy = tail;
                p = tail;
                n += rest;
            }
        }
        free(copy);
        if (dead)
            break;
    }
    free(hbuf);
    return 0;
}
