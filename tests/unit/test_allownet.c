/* allowNet parsing and matching, DNS query parsing, TLS SNI and HTTP/1
 * request framing: the proxy's parsers of hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "proxy/dns.h"
#include "proxy/http1.h"
#include "proxy/policy.h"
#include "proxy/sni.h"

static struct policy make(const char *const *entries, size_t n)
{
    struct policy p = {.rules = calloc(n ? n : 1, sizeof(struct policy_rule))};
    char why[200];
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(policy_parse_entry(entries[i], strlen(entries[i]), &p.rules[p.n], why, sizeof why), 0);
        p.n++;
    }
    return p;
}

static void test_entry_forms_parse(void **state)
{
    struct policy_rule r;
    char why[200];
    assert_int_equal(policy_parse_entry("Example.COM.", 12, &r, why, sizeof why), 0);
    assert_int_equal(r.kind, RULE_NAME);
    assert_string_equal(r.name, "example.com");
    assert_int_equal(r.port, 0);
    assert_int_equal(policy_parse_entry("example.com:443", 15, &r, why, sizeof why), 0);
    assert_int_equal(r.port, 443);
    assert_int_equal(policy_parse_entry("*.example.com", 13, &r, why, sizeof why), 0);
    assert_int_equal(r.kind, RULE_WILDCARD);
    assert_int_equal(policy_parse_entry("203.0.113.10:80", 15, &r, why, sizeof why), 0);
    assert_int_equal(r.kind, RULE_IP4);
    assert_int_equal(r.port, 80);
    assert_int_equal(policy_parse_entry("[2001:db8::1]:443", 17, &r, why, sizeof why), 0);
    assert_int_equal(r.kind, RULE_IP6);
    assert_int_equal(r.port, 443);
    assert_int_equal(policy_parse_entry("[2001:db8::1]", 13, &r, why, sizeof why), 0);
    assert_int_equal(r.port, 0);
}

static void test_bad_entries_are_refused(void **state)
{
    static const char *const bad[] = {"", "exa mple.com", "ex\xc3\xa4mple.com", "a..b", "-a.com", "a-.com",
                                      "a.com:0", "a.com:65536", "a.com:x", "[::1", "[::1]x", "[zz::1]",
                                      "2130706433", "0x7f.1", "127.1", "*.", "a.com:", ":80"};
    struct policy_rule r;
    char why[200];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(policy_parse_entry(bad[i], strlen(bad[i]), &r, why, sizeof why), -EINVAL);
    char embedded[] = {'a', 0, 'b'};
    assert_int_equal(policy_parse_entry(embedded, 3, &r, why, sizeof why), -EINVAL);
}

static void test_wildcard_matches_subdomains_not_apex(void **state)
{
    static const char *const e[] = {"*.example.com"};
    struct policy p = make(e, 1);
    assert_true(policy_allows_name(&p, "a.example.com", 443));
    assert_true(policy_allows_name(&p, "a.b.example.com", 80));
    assert_false(policy_allows_name(&p, "example.com", 443));
    assert_false(policy_allows_name(&p, "xexample.com", 443));
    assert_false(policy_allows_name(&p, "example.com.evil", 443));
    policy_free(&p);
}

static void test_ports_and_addresses(void **state)
{
    static const char *const e[] = {"example.com:443", "203.0.113.10", "[2001:db8::1]:80"};
    struct policy p = make(e, 3);
    assert_true(policy_allows_name(&p, "example.com", 443));
    assert_false(policy_allows_name(&p, "example.com", 80));
    assert_true(policy_allows_name(&p, "example.com", 0)); /* DNS: some port */
    uint8_t a[16];
    inet_pton(AF_INET, "203.0.113.10", a);
    assert_true(policy_allows_addr(&p, AF_INET, a, 1234));
    inet_pton(AF_INET, "203.0.113.11", a);
    assert_false(policy_allows_addr(&p, AF_INET, a, 1234));
    inet_pton(AF_INET6, "2001:db8::1", a);
    assert_true(policy_allows_addr(&p, AF_INET6, a, 80));
    assert_false(policy_allows_addr(&p, AF_INET6, a, 443));
    struct policy none = {0};
    assert_false(policy_allows_name(&none, "example.com", 443));
    struct policy all = {.unrestricted = true};
    assert_true(policy_allows_name(&all, "anything.test", 1));
    policy_free(&p);
}

static void test_name_normalization(void **state)
{
    char out[POLICY_NAME_MAX + 1];
    assert_int_equal(policy_name_normalize("EXAMPLE.Test.", 13, out), 12);
    assert_string_equal(out, "example.test");
    char longlabel[70];
    memset(longlabel, 'a', 64);
    assert_int_equal(policy_name_normalize(longlabel, 64, out), -EINVAL);
    char longname[300];
    memset(longname, 'a', sizeof longname);
    for (int i = 50; i < 300; i += 50)
        longname[i] = '.';
    assert_int_equal(policy_name_normalize(longname, 254, out), -EINVAL);
}

static size_t query(uint8_t *b, const char *name, uint16_t qtype)
{
    static const uint8_t hdr[12] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    memcpy(b, hdr, 12);
    size_t o = 12;
    const char *p = name;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        b[o++] = (uint8_t)l;
        memcpy(b + o, p, l);
        o += l;
        p += l + (dot ? 1 : 0);
    }
    b[o++] = 0;
    b[o++] = (uint8_t)(qtype >> 8);
    b[o++] = (uint8_t)qtype;
    b[o++] = 0;
    b[o++] = 1;
    return o;
}

static void test_dns_query_and_answer(void **state)
{
    uint8_t b[512], out[512];
    size_t n = query(b, "Example.test", DNS_TYPE_A);
    struct dns_query q;
    assert_int_equal(dns_parse_query(b, n, &q), 0);
    assert_string_equal(q.name, "Example.test");
    assert_int_equal(q.qtype, DNS_TYPE_A);
    uint8_t addrs[8] = {10, 0, 0, 1, 10, 0, 0, 2};
    int len = dns_build_response(&q, DNS_RCODE_OK, addrs, 2, 4, 30, out, sizeof out);
    assert_int_equal(len, (int)n + 2 * 16);
    assert_int_equal(out[0], 0x12);
    assert_int_equal(out[3] & 0xf, 0);
    assert_int_equal(out[7], 2);
    len = dns_build_response(&q, DNS_RCODE_NXDOMAIN, NULL, 0, 0, 30, out, sizeof out);
    assert_int_equal(out[3] & 0xf, 3);
    assert_int_equal(out[7], 0);
}

/* ldns decodes the question; the answer repeats it byte for byte (a
 * resolver's 0x20 case randomisation must survive) and drops the EDNS OPT
 * record the query carried. */
static void test_dns_answer_keeps_question_case_and_drops_edns(void **state)
{
    uint8_t b[512], out[512];
    size_t n = query(b, "wWw.ExAmple.TEST", DNS_TYPE_AAAA);
    b[11] = 1; /* ARCOUNT 1: an OPT pseudo-record, udp size 1232 */
    const uint8_t opt[] = {0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};
    memcpy(b + n, opt, sizeof opt);
    n += sizeof opt;
    struct dns_query q;
    assert_int_equal(dns_parse_query(b, n, &q), 0);
    assert_string_equal(q.name, "wWw.ExAmple.TEST");
    uint8_t addr[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
    int len = dns_build_response(&q, DNS_RCODE_OK, addr, 1, 16, 30, out, sizeof out);
    size_t qlen = n - sizeof opt - 12;
    assert_int_equal(len, (int)(12 + qlen + 2 + 10 + 16)); /* no OPT in the answer */
    assert_memory_equal(out + 12, b + 12, qlen);             /* the question, case and all */
    assert_int_equal(out[11], 0);                            /* ARCOUNT 0 */
    assert_memory_equal(out + len - 16, addr, 16);
    /* 40 AAAA answers do not fit in 512 bytes: as many as fit, never more */
    uint8_t many[40 * 16];
    memset(many, 0x20, sizeof many);
    len = dns_build_response(&q, DNS_RCODE_OK, many, 40, 16, 30, out, sizeof out);
    assert_true(len > 0 && len <= DNS_MSG_MAX);
    assert_true(out[7] > 1 && out[7] < 40 && (size_t)len + 28 > DNS_MSG_MAX);
}

static void test_dns_hostile_queries(void **state)
{
    uint8_t b[512];
    struct dns_query q;
    size_t n = query(b, "a.test", 1);
    for (size_t i = 0; i < n; i++) /* every truncation is refused, never read past */
        assert_true(dns_parse_query(b, i, &q) < 0);
    b[2] |= 0x80; /* a response */
    assert_int_equal(dns_parse_query(b, n, &q), -EINVAL);
    n = query(b, "a.test", 1);
    b[12] = 0xc0; /* compression pointer in the question */
    assert_true(dns_parse_query(b, n, &q) < 0);
    n = query(b, "a.test", 1);
    b[5] = 2; /* two questions */
    assert_int_equal(dns_parse_query(b, n, &q), -ENOTSUP);
    n = query(b, "a.test", 1);
    b[15] = '.'; /* a dot inside a label */
    assert_int_equal(dns_parse_query(b, n, &q), -ENOTSUP);
    /* fuzz-ish: random bytes never crash */
    srand(1);
    for (int it = 0; it < 20000; it++) {
        size_t len = (size_t)(rand() % 300);
        for (size_t i = 0; i < len; i++)
            b[i] = (uint8_t)rand();
        dns_parse_query(b, len, &q);
    }
}

static size_t client_hello(uint8_t *b, const char *sni)
{
    uint8_t body[512];
    size_t o = 0;
    body[o++] = 3, body[o++] = 3;
    memset(body + o, 7, 32), o += 32;
    body[o++] = 0;                                   /* session id */
    body[o++] = 0, body[o++] = 2, body[o++] = 0x13, body[o++] = 1; /* suites */
    body[o++] = 1, body[o++] = 0;                    /* compression */
    size_t sl = strlen(sni);
    size_t ext_len = 4 + 2 + 3 + sl;
    body[o++] = (uint8_t)(ext_len >> 8), body[o++] = (uint8_t)ext_len;
    body[o++] = 0, body[o++] = 0;                    /* server_name */
    body[o++] = (uint8_t)((5 + sl) >> 8), body[o++] = (uint8_t)(5 + sl);
    body[o++] = (uint8_t)((3 + sl) >> 8), body[o++] = (uint8_t)(3 + sl);
    body[o++] = 0, body[o++] = (uint8_t)(sl >> 8), body[o++] = (uint8_t)sl;
    memcpy(body + o, sni, sl), o += sl;
    size_t hl = o + 4;
    b[0] = 0x16, b[1] = 3, b[2] = 1, b[3] = (uint8_t)(hl >> 8), b[4] = (uint8_t)hl;
    b[5] = 1, b[6] = 0, b[7] = (uint8_t)(o >> 8), b[8] = (uint8_t)o;
    memcpy(b + 9, body, o);
    return 9 + o;
}

static void test_sni_found_partial_and_hostile(void **state)
{
    uint8_t b[1024];
    char name[256];
    size_t n = client_hello(b, "example.test");
    assert_int_equal(tls_sni_parse(b, n, name, sizeof name), 12);
    assert_string_equal(name, "example.test");
    for (size_t i = 1; i < n; i++) /* partial: need more, never a wrong answer */
        assert_int_equal(tls_sni_parse(b, i, name, sizeof name), 0);
    b[0] = 0x17;
    assert_int_equal(tls_sni_parse(b, n, name, sizeof name), -EINVAL);
    srand(2);
    for (int it = 0; it < 20000; it++) {
        size_t len = client_hello(b, "example.test");
        b[5 + rand() % (int)(len - 5)] = (uint8_t)rand();
        tls_sni_parse(b, len, name, sizeof name);
    }
}

static void test_http_heads_bodies_and_smuggling(void **state)
{
    struct h1 t;
    char host[256];
    const char *get = "GET / HTTP/1.1\r\nHost: Example.test:8080\r\n\r\n";
    assert_int_equal(h1_head_parse(&t, (const uint8_t *)get, strlen(get), host, sizeof host), (int)strlen(get));
    assert_string_equal(host, "Example.test");
    assert_int_equal(t.st, H1_HEAD);
    assert_int_equal(h1_head_parse(&t, (const uint8_t *)get, 20, host, sizeof host), 0);

    const char *post = "POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhelloGET";
    int hl = h1_head_parse(&t, (const uint8_t *)post, strlen(post), host, sizeof host);
    assert_true(hl > 0);
    assert_int_equal(h1_body_advance(&t, (const uint8_t *)post + hl, strlen(post) - (size_t)hl), 5);
    assert_int_equal(t.st, H1_HEAD);

    const char *ch = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    hl = h1_head_parse(&t, (const uint8_t *)ch, strlen(ch), host, sizeof host);
    const char *body = "5;ext=1\r\nhello\r\n0\r\nX-T: y\r\n\r\nNEXT";
    assert_int_equal(h1_body_advance(&t, (const uint8_t *)body, strlen(body)), (long)strlen(body) - 4);

    static const char *const bad[] = {
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nX: y\r\n folded\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\n",
        "GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: user@a.test\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(h1_head_parse(&t, (const uint8_t *)bad[i], strlen(bad[i]), host, sizeof host), -EINVAL);
    char big[H1_HEAD_MAX + 10];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    assert_int_equal(h1_head_parse(&t, (const uint8_t *)big, sizeof big, host, sizeof host), -E2BIG);
}

/* An Upgrade is only a tunnel once the server agreed: until then the
 * proxy holds the client's bytes and reads the answer's status. */
static void test_upgrade_waits_for_the_answer(void **state)
{
    struct h1 t;
    char host[256];
    const char *up = "GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    assert_int_equal(h1_head_parse(&t, (const uint8_t *)up, strlen(up), host, sizeof host), (int)strlen(up));
    assert_int_equal(t.st, H1_UPGRADE_WAIT);
    assert_false(t.connect);
    assert_true(h1_body_advance(&t, (const uint8_t *)"x", 1) < 0);
    const char *upbody = "POST / HTTP/1.1\r\nHost: a.test\r\nUpgrade: x\r\nContent-Length: 3\r\n\r\nabc";
    assert_true(h1_head_parse(&t, (const uint8_t *)upbody, strlen(upbody), host, sizeof host) < 0);
    const char *con = "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n";
    assert_int_equal(h1_head_parse(&t, (const uint8_t *)con, strlen(con), host, sizeof host), (int)strlen(con));
    assert_int_equal(t.st, H1_UPGRADE_WAIT);
    assert_true(t.connect);
    assert_int_equal(h1_response_status((const uint8_t *)"HTTP/1.1 101 Switching", 22), 101);
    assert_int_equal(h1_response_status((const uint8_t *)"HTTP/1.0 200 OK", 15), 200);
    assert_int_equal(h1_response_status((const uint8_t *)"HTTP/1.1 1", 10), 0);
    assert_int_equal(h1_response_status((const uint8_t *)"HTTX", 4), -EINVAL);
    assert_int_equal(h1_response_status((const uint8_t *)"HTTP/1.1 abc ", 13), -EINVAL);
    assert_int_equal(h1_response_status((const uint8_t *)"HTTP/1.1 999 ", 13), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upgrade_waits_for_the_answer),
        cmocka_unit_test(test_entry_forms_parse),
        cmocka_unit_test(test_bad_entries_are_refused),
        cmocka_unit_test(test_wildcard_matches_subdomains_not_apex),
        cmocka_unit_test(test_ports_and_addresses),
        cmocka_unit_test(test_name_normalization),
        cmocka_unit_test(test_dns_query_and_answer),
        cmocka_unit_test(test_dns_hostile_queries),
        cmocka_unit_test(test_dns_answer_keeps_question_case_and_drops_edns),
        cmocka_unit_test(test_sni_found_partial_and_hostile),
        cmocka_unit_test(test_http_heads_bodies_and_smuggling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
