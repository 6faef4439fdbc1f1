/* Unit tests for the per-source-address table behind the API's connection budgets
 * (src/daemon/api/peers.c): which addresses count as one source, and the per-source lists. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "daemon/api/peers.h"

static struct peer_key key4(const char *ip)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(1234) };
    assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    struct peer_key k;
    assert_int_equal(peer_key_from_sockaddr((struct sockaddr *)&a, &k), 0);
    return k;
}

static struct peer_key key6(const char *ip, uint16_t port)
{
    struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };
    assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
    struct peer_key k;
    assert_int_equal(peer_key_from_sockaddr((struct sockaddr *)&a, &k), 0);
    return k;
}

static bool same(struct peer_key a, struct peer_key b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

static void test_ipv4_is_one_source_per_address_whatever_the_socket_family(void **state)
{
    assert_true(same(key4("127.0.0.1"), key6("::ffff:127.0.0.1", 9)));  /* dual-stack listener */
    assert_false(same(key4("127.0.0.1"), key4("127.0.0.2")));            /* 127/8: each its own */
    assert_false(same(key4("10.0.0.1"), key6("::a00:1", 1)));             /* IPv4-compatible is IPv6 */
    char buf[64];
    struct peer_key k = key4("192.0.2.7");
    peer_key_format(&k, buf, sizeof(buf));
    assert_string_equal(buf, "192.0.2.7");
}

static void test_ipv6_is_one_source_per_64(void **state)
{
    assert_true(same(key6("2001:db8:1:2::1", 1), key6("2001:db8:1:2:ffff:ffff:ffff:ffff", 2)));
    assert_false(same(key6("2001:db8:1:2::1", 1), key6("2001:db8:1:3::1", 1)));
    assert_true(same(key6("::1", 1), key6("::2", 1)));  /* loopback's /64 */
    char buf[64];
    struct peer_key k = key6("2001:db8:1:2:3:4:5:6", 1);
    peer_key_format(&k, buf, sizeof(buf));
    assert_string_equal(buf, "2001:db8:1:2::/64");
}

static void test_other_families_are_refused(void **state)
{
    struct sockaddr_un u = { .sun_family = AF_UNIX };
    struct peer_key k;
    assert_int_equal(peer_key_from_sockaddr((struct sockaddr *)&u, &k), -EAFNOSUPPORT);
}

static void test_attach_counts_in_order_and_last_detach_frees(void **state)
{
    struct peer_table *t = peer_table_new();
    assert_non_null(t);
    struct peer_key a = key4("198.51.100.1"), b = key4("198.51.100.2");
    struct link n[4];
    struct peer *pa = peer_attach(t, &a, &n[0]);
    assert_ptr_equal(peer_attach(t, &a, &n[1]), pa);
    assert_ptr_equal(peer_attach(t, &a, &n[2]), pa);
    struct peer *pb = peer_attach(t, &b, &n[3]);
    assert_ptr_not_equal(pa, pb);
    assert_int_equal(pa->n, 3);
    assert_int_equal(pb->n, 1);
    assert_int_equal(peer_table_size(t), 2);
    assert_ptr_equal(pa->conns.next, &n[0]);  /* the oldest first: who is displaced first */
    assert_ptr_equal(peer_find(t, &a), pa);

    peer_detach(t, pa, &n[0]);
    assert_int_equal(pa->n, 2);
    assert_ptr_equal(pa->conns.next, &n[1]);
    peer_detach(t, pa, &n[2]);
    peer_detach(t, pa, &n[1]);
    assert_null(peer_find(t, &a));            /* freed with its last conn */
    assert_int_equal(peer_table_size(t), 1);
    peer_detach(t, pb, &n[3]);
    assert_int_equal(peer_table_size(t), 0);
    peer_table_free(t);
}

static void test_many_sources_stay_apart(void **state)
{
    /* More sources than buckets: every chain must keep its own. */
    enum { N = 5000 };
    struct peer_table *t = peer_table_new();
    struct link *nodes = calloc(N, sizeof(*nodes));
    struct peer **ps = calloc(N, sizeof(*ps));
    for (int i = 0; i < N; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.%d.%d.1", i / 256, i % 256);
        struct peer_key k = key4(ip);
        ps[i] = peer_attach(t, &k, &nodes[i]);
        assert_non_null(ps[i]);
    }
    assert_int_equal(peer_table_size(t), N);
    for (int i = 0; i < N; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "10.%d.%d.1", i / 256, i % 256);
        struct peer_key k = key4(ip);
        assert_ptr_equal(peer_find(t, &k), ps[i]);
        assert_int_equal(ps[i]->n, 1);
    }
    for (int i = 0; i < N; i += 2)
        peer_detach(t, ps[i], &nodes[i]);
    assert_int_equal(peer_table_size(t), N / 2);
    for (int i = 1; i < N; i += 2)
        assert_ptr_equal(ps[i]->conns.next, &nodes[i]);
    peer_table_free(t);  /* frees the entries still attached */
    free(nodes);
    free(ps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4_is_one_source_per_address_whatever_the_socket_family),
        cmocka_unit_test(test_ipv6_is_one_source_per_64),
        cmocka_unit_test(test_other_families_are_refused),
        cmocka_unit_test(test_attach_counts_in_order_and_last_detach_frees),
        cmocka_unit_test(test_many_sources_stay_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
