/* The forbidden-range table (src/proxy/ranges.c): what a sandbox may reach
 * by default, what --allow-range opens, and what stays closed whatever is
 * opened. Each closed address is paired with a neighbour just outside its
 * range that is reachable, so a test cannot pass by refusing everything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include "proxy/ranges.h"

static enum range_verdict judge(const struct ranges *r, const char *ip, const char **why)
{
    uint8_t a[16];
    if (inet_pton(AF_INET, ip, a) == 1)
        return ranges_judge(r, AF_INET, a, why);
    assert_int_equal(inet_pton(AF_INET6, ip, a), 1);
    return ranges_judge(r, AF_INET6, a, why);
}

static void add(struct cidr *list, size_t *n, const char *s)
{
    assert_int_equal(cidr_parse(s, true, &list[*n]), 0);
    (*n)++;
}

static void test_closed_by_default_with_a_reachable_neighbour(void **state)
{
    static const char *const closed[][2] = {
        /* closed address, reachable neighbour just outside its range */
        {"10.0.0.1", "11.0.0.1"},
        {"10.255.255.255", "9.255.255.255"},
        {"172.16.0.1", "172.15.255.255"},
        {"172.31.255.254", "172.32.0.1"},
        {"192.168.1.1", "192.169.0.1"},
        {"100.64.0.1", "100.63.255.255"},
        {"100.100.100.200", "100.128.0.1"},     /* Alibaba Cloud metadata */
        {"169.254.169.254", "169.253.255.255"}, /* AWS/GCP/Azure/OCI metadata */
        {"168.63.129.16", "168.63.129.17"},     /* Azure WireServer */
        {"192.0.0.192", "192.0.1.1"},           /* Oracle Cloud legacy metadata */
        {"192.0.0.1", "8.8.8.8"},
        {"192.88.99.1", "192.88.100.1"},
        {"198.18.0.1", "198.17.255.255"},
        {"198.19.255.255", "198.20.0.1"},
        {"240.0.0.1", "223.255.255.255"},
        {"fd00:ec2::254", "2600:1f18::1"},      /* AWS metadata over IPv6 */
        {"fd20:ce::254", "2607:f8b0::1"},       /* GCP metadata over IPv6 */
        {"fc00::1", "fbff:ffff::1"},
        {"fdff:ffff::1", "fe00::1"},
        {"fe80::1", "fe00::1"},
        {"fec0::1", "ff00::1:0"},               /* the neighbour is multicast: checked as NEVER below */
        {"64:ff9b:1::1", "2a00::1"},            /* everything next to it is in ::/8 */
        {"100::1", "100:0:0:2::1"},
        {"100:0:0:1::1", "100:0:0:2::1"},
        {"2001::1", "2001:200::1"},             /* Teredo; 2001:200::/23 is ordinary global space */
        {"2001:2::1", "2001:3::1"},             /* benchmarking; AMT next to it is global */
        {"2001:10::1", "2001:4:112::1"},
        {"2001:20::1", "2001:1::1"},            /* ORCHIDv2; PCP anycast is global */
        {"2001:1::4", "2001:1::2"},
        {"5f00::1", "5e00::1"},
        {"::1.2.3.4", "2a00::1"},               /* IPv4-compatible, deprecated */
        {"::ffff:10.1.2.3", "::ffff:11.1.2.3"}, /* IPv4-mapped: judged as IPv4 */
        {"::ffff:169.254.169.254", "::ffff:8.8.8.8"},
        {"64:ff9b::a00:1", "64:ff9b::808:808"}, /* NAT64: 10.0.0.1 vs 8.8.8.8 */
        {"64:ff9b::a9fe:a9fe", "64:ff9b::c000:201"},
        {"2002:a00:1::1", "2002:808:808::1"},   /* 6to4 of 10.0.0.1 vs of 8.8.8.8 */
        {"2002:c0a8:101::1", "2002:c633:6401::1"},
    };
    for (size_t i = 0; i < sizeof closed / sizeof closed[0]; i++) {
        const char *why = NULL;
        enum range_verdict v = judge(NULL, closed[i][0], &why);
        if (v != RANGE_CLOSED)
            fail_msg("%s: verdict %d, wanted closed", closed[i][0], v);
        assert_non_null(why);
        if (strcmp(closed[i][1], "ff00::1:0") != 0 && judge(NULL, closed[i][1], NULL) != RANGE_REACHABLE)
            fail_msg("%s (next to %s) is not reachable", closed[i][1], closed[i][0]);
    }
}

static void test_the_range_is_named(void **state)
{
    const char *why = NULL;
    judge(NULL, "100.100.100.200", &why);
    assert_non_null(strstr(why, "100.64.0.0/10"));
    judge(NULL, "168.63.129.16", &why);
    assert_non_null(strstr(why, "Azure"));
    judge(NULL, "fd00:ec2::254", &why);
    assert_non_null(strstr(why, "fc00::/7"));
    judge(NULL, "64:ff9b::a9fe:a9fe", &why); /* the IPv4 range inside, not the NAT64 prefix */
    assert_non_null(strstr(why, "169.254.0.0/16"));
}

static void test_never_reachable(void **state)
{
    static const char *const never[] = {
        "127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.255",
        "255.255.255.255", "::", "::1", "ff02::1", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1",
    };
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        if (judge(NULL, never[i], NULL) != RANGE_NEVER)
            fail_msg("%s is not refused as never reachable", never[i]);
    assert_int_equal(judge(NULL, "128.0.0.1", NULL), RANGE_REACHABLE); /* next to loopback */
    assert_int_equal(judge(NULL, "1.0.0.1", NULL), RANGE_REACHABLE);   /* next to "this network" */
    assert_int_equal(judge(NULL, "::2", NULL), RANGE_CLOSED);          /* reserved ::/8, not loopback */
}

/* Documentation ranges stay open (docs/network.md): the test suite's
 * upstream hosts live there, and no network routes them. */
static void test_documentation_and_global_exceptions_are_reachable(void **state)
{
    static const char *const open[] = {
        "192.0.2.1", "198.51.100.7", "203.0.113.200", "2001:db8::2", "3fff::1",
        "192.0.0.9", "192.0.0.10", "2001:1::1", "2001:3::1", "2001:4:112::1",
        "8.8.8.8", "2606:4700::1111", "::ffff:192.0.2.2", "64:ff9b::c000:202",
    };
    for (size_t i = 0; i < sizeof open / sizeof open[0]; i++)
        if (judge(NULL, open[i], NULL) != RANGE_REACHABLE)
            fail_msg("%s should be reachable", open[i]);
    assert_int_equal(judge(NULL, "192.0.0.11", NULL), RANGE_CLOSED); /* beside TURN anycast */
}

static void test_opened_ranges_open_only_themselves(void **state)
{
    static struct ranges r;
    memset(&r, 0, sizeof r);
    add(r.open, &r.n_open, "192.168.7.0/24");
    add(r.open, &r.n_open, "fd00:ec2::254");
    add(r.open, &r.n_open, "169.254.169.254/32");
    assert_int_equal(judge(&r, "192.168.7.7", NULL), RANGE_REACHABLE);
    assert_int_equal(judge(&r, "::ffff:192.168.7.7", NULL), RANGE_REACHABLE);
    assert_int_equal(judge(&r, "192.168.8.8", NULL), RANGE_CLOSED);
    assert_int_equal(judge(&r, "fd00:ec2::254", NULL), RANGE_REACHABLE);
    assert_int_equal(judge(&r, "fd00:ec2::253", NULL), RANGE_CLOSED);
    assert_int_equal(judge(&r, "169.254.169.254", NULL), RANGE_REACHABLE);
    assert_int_equal(judge(&r, "169.254.170.2", NULL), RANGE_CLOSED);
    assert_int_equal(judge(&r, "10.0.0.1", NULL), RANGE_CLOSED);
}

static void test_pools_locals_and_loopback_stay_closed_when_opened(void **state)
{
    static struct ranges r;
    memset(&r, 0, sizeof r);
    add(r.never, &r.n_never, "10.200.0.0/16");          /* pool4 */
    add(r.never, &r.n_never, "fd68:7574:6368::/48");    /* pool6 */
    add(r.never, &r.n_never, "192.0.2.1");              /* hutchd's own address */
    add(r.never, &r.n_never, "127.0.0.1");              /* so is this one */
    add(r.open, &r.n_open, "10.0.0.0/8");
    add(r.open, &r.n_open, "fc00::/7");
    add(r.open, &r.n_open, "127.0.0.0/8");
    add(r.open, &r.n_open, "0.0.0.0/0");
    add(r.open, &r.n_open, "::/0");
    assert_int_equal(judge(&r, "10.1.2.3", NULL), RANGE_REACHABLE);  /* opened */
    assert_int_equal(judge(&r, "fd12::1", NULL), RANGE_REACHABLE);
    assert_int_equal(judge(&r, "10.200.0.1", NULL), RANGE_NEVER);
    assert_int_equal(judge(&r, "::ffff:10.200.0.1", NULL), RANGE_NEVER);
    assert_int_equal(judge(&r, "64:ff9b::ac8:1", NULL), RANGE_NEVER); /* NAT64 of 10.200.0.1 */
    assert_int_equal(judge(&r, "fd68:7574:6368:5::2", NULL), RANGE_NEVER);
    assert_int_equal(judge(&r, "192.0.2.1", NULL), RANGE_NEVER);
    assert_int_equal(judge(&r, "192.0.2.2", NULL), RANGE_REACHABLE);
    const char *why = NULL;
    assert_int_equal(judge(&r, "127.0.0.1", &why), RANGE_NEVER);
    assert_non_null(strstr(why, "loopback")); /* the range, not "one of hutchd's own" */
    assert_int_equal(judge(&r, "192.0.2.1", &why), RANGE_NEVER);
    assert_non_null(strstr(why, "hutchd's own"));
    assert_int_equal(judge(&r, "::1", NULL), RANGE_NEVER);
    assert_int_equal(judge(&r, "0.0.0.0", NULL), RANGE_NEVER);
}

static void test_cidr_parse(void **state)
{
    struct cidr c;
    assert_int_equal(cidr_parse("10.0.0.0/8", true, &c), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.len, 8);
    assert_int_equal(cidr_parse("fd00:ec2::254", true, &c), 0);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.len, 128);
    assert_int_equal(cidr_parse("192.168.1.0/24", true, &c), 0);
    assert_true(cidr_contains(&c, AF_INET, (const uint8_t *)"\xc0\xa8\x01\xff"));
    assert_false(cidr_contains(&c, AF_INET, (const uint8_t *)"\xc0\xa8\x02\x00"));
    static const char *const bad[] = {"", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/8x",
                                      "fd00::/129", "10.1.2.3/8", "fd00::1/64", "example.test/8", "10.0.0/8",
                                      "10.0.0.0/8/8"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (cidr_parse(bad[i], true, &c) != -EINVAL)
            fail_msg("\"%s\" parsed", bad[i]);
    /* hutchd's pools may carry host bits (--net-pool4 10.200.0.1/16): cleared, not refused */
    assert_int_equal(cidr_parse("10.200.0.1/16", false, &c), 0);
    assert_memory_equal(c.addr, "\x0a\xc8\x00\x00", 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_closed_by_default_with_a_reachable_neighbour),
        cmocka_unit_test(test_the_range_is_named),
        cmocka_unit_test(test_never_reachable),
        cmocka_unit_test(test_documentation_and_global_exceptions_are_reachable),
        cmocka_unit_test(test_opened_ranges_open_only_themselves),
        cmocka_unit_test(test_pools_locals_and_loopback_stay_closed_when_opened),
        cmocka_unit_test(test_cidr_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
