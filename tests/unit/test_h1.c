/* HTTP/1 request heads with bytes RFC 9112 does not allow (src/proxy/http1.c):
 * each is refused, and the same request with the offending bytes made
 * well-formed is accepted, so the refusal is for those bytes and nothing else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "proxy/http1.h"

struct pair {
    const char *what;
    const char *bad, *good;     /* NUL bytes inside: lengths are given */
    size_t bad_len, good_len;
};

#define P(what, bad, good) {what, bad, good, sizeof(bad) - 1, sizeof(good) - 1}
#define TAIL "Host: a.test\r\nAccept: */*\r\n\r\n"

static const struct pair pairs[] = {
    /* the request line */
    P("LF in the target: a second Host for a lenient server", "GET /\nHost:evil.test\nX:y HTTP/1.1\r\n" TAIL,
      "GET /%0AHost:evil.test%0AX:y HTTP/1.1\r\n" TAIL),
    P("CR in the target", "GET /\rHost: evil.test HTTP/1.1\r\n" TAIL, "GET /Host:evil.test HTTP/1.1\r\n" TAIL),
    P("bare CR ends the request line", "GET / HTTP/1.1\rHost: evil.test\r\n" TAIL, "GET / HTTP/1.1\r\n" TAIL),
    P("bare LF ends the request line", "GET / HTTP/1.1\nHost: evil.test\r\n" TAIL, "GET / HTTP/1.1\r\n" TAIL),
    P("NUL in the target", "GET /a\0b HTTP/1.1\r\n" TAIL, "GET /a0b HTTP/1.1\r\n" TAIL),
    P("control byte in the target", "GET /a\x01" "b HTTP/1.1\r\n" TAIL, "GET /a1b HTTP/1.1\r\n" TAIL),
    P("DEL in the target", "GET /a\x7f HTTP/1.1\r\n" TAIL, "GET /a%7F HTTP/1.1\r\n" TAIL),
    P("HTAB in the target", "GET /a\tb HTTP/1.1\r\n" TAIL, "GET /a%09b HTTP/1.1\r\n" TAIL),
    P("SP in the target", "GET /a b HTTP/1.1\r\n" TAIL, "GET /a%20b HTTP/1.1\r\n" TAIL),
    P("non-ASCII in the target", "GET /caf\xc3\xa9 HTTP/1.1\r\n" TAIL, "GET /caf%C3%A9 HTTP/1.1\r\n" TAIL),
    P("two SPs after the method", "GET  / HTTP/1.1\r\n" TAIL, "GET / HTTP/1.1\r\n" TAIL),
    P("no target", "GET  HTTP/1.1\r\n" TAIL, "GET * HTTP/1.1\r\n" TAIL),
    P("NUL in the method", "G\0T / HTTP/1.1\r\n" TAIL, "GXT / HTTP/1.1\r\n" TAIL),
    P("non-token byte in the method", "GE(T / HTTP/1.1\r\n" TAIL, "GE-T / HTTP/1.1\r\n" TAIL),
    P("LF in the method", "GE\nT / HTTP/1.1\r\n" TAIL, "GET / HTTP/1.1\r\n" TAIL),
    /* header lines */
    P("NUL in a field value", "GET / HTTP/1.1\r\nX-A: b\0c\r\n" TAIL, "GET / HTTP/1.1\r\nX-A: b c\r\n" TAIL),
    P("control byte in a field value", "GET / HTTP/1.1\r\nX-A: b\x0b" "c\r\n" TAIL,
      "GET / HTTP/1.1\r\nX-A: b\tc\r\n" TAIL),
    P("ESC in a field value", "GET / HTTP/1.1\r\nX-A: \x1b[2J\r\n" TAIL, "GET / HTTP/1.1\r\nX-A: [2J\r\n" TAIL),
    P("DEL in a field value", "GET / HTTP/1.1\r\nX-A: b\x7f\r\n" TAIL, "GET / HTTP/1.1\r\nX-A: b\x80\r\n" TAIL),
    P("bare LF in a field value", "GET / HTTP/1.1\r\nX-A: b\nHost: evil.test\r\n" TAIL,
      "GET / HTTP/1.1\r\nX-A: b Host: evil.test\r\n" TAIL),
    P("bare CR in a field value", "GET / HTTP/1.1\r\nX-A: b\rHost: evil.test\r\n" TAIL,
      "GET / HTTP/1.1\r\nX-A: b Host: evil.test\r\n" TAIL),
    P("bare LF line end", "GET / HTTP/1.1\r\nX-A: b\n\r\n" TAIL, "GET / HTTP/1.1\r\nX-A: b\r\n" TAIL),
    P("NUL in a field name", "GET / HTTP/1.1\r\nX-\0A: b\r\n" TAIL, "GET / HTTP/1.1\r\nX-_A: b\r\n" TAIL),
    P("SP in a field name", "GET / HTTP/1.1\r\nX A: b\r\n" TAIL, "GET / HTTP/1.1\r\nX-A: b\r\n" TAIL),
    P("SP before the colon", "GET / HTTP/1.1\r\nHost : evil.test\r\nAccept: */*\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n\r\n"),
    P("HTAB before the colon", "GET / HTTP/1.1\r\nX-A\t: b\r\n" TAIL, "GET / HTTP/1.1\r\nX-A:\tb\r\n" TAIL),
    P("non-token byte in a field name", "GET / HTTP/1.1\r\nX(A): b\r\n" TAIL, "GET / HTTP/1.1\r\nX-A-: b\r\n" TAIL),
    P("empty field name", "GET / HTTP/1.1\r\n: b\r\n" TAIL, "GET / HTTP/1.1\r\nb: b\r\n" TAIL),
    P("no colon", "GET / HTTP/1.1\r\nX-A b\r\n" TAIL, "GET / HTTP/1.1\r\nX-A: b\r\n" TAIL),
    P("obs-fold (SP)", "GET / HTTP/1.1\r\nX-A: b\r\n c\r\n" TAIL, "GET / HTTP/1.1\r\nX-A: b c\r\n" TAIL),
    P("obs-fold (HTAB)", "GET / HTTP/1.1\r\nX-A: b\r\n\tc\r\n" TAIL, "GET / HTTP/1.1\r\nX-A: b\tc\r\n" TAIL),
    P("obs-fold of Host", "GET / HTTP/1.1\r\nHost:\r\n a.test\r\nAccept: */*\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n\r\n"),
};

static void test_bad_bytes_are_refused_and_the_fixed_request_accepted(void **state)
{
    int accepted = 0;
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        const struct pair *p = &pairs[i];
        struct h1 t;
        char host[256];
        int r = h1_head_parse(&t, (const uint8_t *)p->good, p->good_len, host, sizeof host);
        if (r != (int)p->good_len)
            fail_msg("%s: the well-formed request gave %d, wanted %zu", p->what, r, p->good_len);
        if (strcmp(host, "a.test") != 0)
            fail_msg("%s: the well-formed request's host is \"%s\"", p->what, host);
        r = h1_head_parse(&t, (const uint8_t *)p->bad, p->bad_len, host, sizeof host);
        if (r != -EINVAL) {
            print_message("%s: accepted (%d, host \"%s\")\n", p->what, r, r > 0 ? host : "");
            accepted++;
        }
    }
    assert_int_equal(accepted, 0);
}

/* Every single byte value in the target, a field name and a field value:
 * exactly the ones the grammar allows are accepted. */
static void test_every_byte_value(void **state)
{
    for (int c = 0; c < 256; c++) {
        struct h1 t;
        char host[256], req[128];
        int n = snprintf(req, sizeof req, "GET /aXb HTTP/1.1\r\n" TAIL);
        req[6] = (char)c;
        bool ok = c > 0x20 && c < 0x7f;
        if (h1_head_parse(&t, (const uint8_t *)req, (size_t)n, host, sizeof host) != (ok ? n : -EINVAL))
            fail_msg("byte 0x%02x in the target", c);

        n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nX-aXb: v\r\n" TAIL);
        req[19] = (char)c;
        ok = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
             (c && strchr("!#$%&'*+-.^_`|~", c)) || c == ':'; /* "X-a:b: v" is a good field */
        if (h1_head_parse(&t, (const uint8_t *)req, (size_t)n, host, sizeof host) != (ok ? n : -EINVAL))
            fail_msg("byte 0x%02x in a field name", c);

        n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nX-A: aXb\r\n" TAIL);
        req[22] = (char)c;
        ok = c == '\t' || (c >= 0x20 && c != 0x7f);
        int r = h1_head_parse(&t, (const uint8_t *)req, (size_t)n, host, sizeof host);
        if (r != (ok ? n : -EINVAL))
            fail_msg("byte 0x%02x in a field value: %d", c, r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_bytes_are_refused_and_the_fixed_request_accepted),
        cmocka_unit_test(test_every_byte_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
