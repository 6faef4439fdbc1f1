/* TLS ClientHello / SNI (src/proxy/sni.c), as tcp.c peeks at a connection's
 * first bytes: every prefix length a read may deliver, then the whole. */
#include "fuzz.h"
#include <errno.h>
#include "proxy/sni.h"

static void parse(const uint8_t *data, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    memcpy(p, data, n);
    char name[256];
    memset(name, 'X', sizeof name);
    (void)tls_looks_like(p, n);
    int r = tls_sni_parse(p, n, name, sizeof name);
    FUZZ_CHECK(r == 0 || r == -ENOENT || r == -EINVAL || (r > 0 && (size_t)r < sizeof name));
    if (r > 0)
        FUZZ_CHECK(name[r] == 0);
    free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > SNI_HELLO_MAX + 64)
        size = SNI_HELLO_MAX + 64;
    /* Short prefixes are where "need more bytes" and "malformed" meet. */
    for (size_t n = 0; n < size && n < 64; n++)
        parse(data, n);
    parse(data, size);
    return 0;
}
