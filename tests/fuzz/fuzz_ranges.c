/* CIDR parsing (src/proxy/ranges.c), as hutchd reads --allow-range, and the
 * verdict for the address that came out of it. */
#include "fuzz.h"
#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>
#include "proxy/ranges.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    bool exact = fuzz_u8(&in) & 1;
    char *s = fuzz_strndup(in.p, in.n);
    struct cidr c;
    int r = cidr_parse(s, exact, &c);
    FUZZ_CHECK(r == 0 || r == -EINVAL);
    if (r == 0) {
        FUZZ_CHECK(c.family == AF_INET || c.family == AF_INET6);
        FUZZ_CHECK(c.len >= 0 && c.len <= (c.family == AF_INET ? 32 : 128));
        /* a range holds its own base address */
        FUZZ_CHECK(cidr_contains(&c, c.family, c.addr));
        const char *why = NULL;
        enum range_verdict v = ranges_judge(NULL, c.family, c.addr, &why);
        FUZZ_CHECK(v == RANGE_REACHABLE || why != NULL);
        struct ranges rs = {0};
        rs.open[rs.n_open++] = c;
        (void)ranges_judge(&rs, c.family, c.addr, &why);
    }
    free(s);
    return 0;
}
