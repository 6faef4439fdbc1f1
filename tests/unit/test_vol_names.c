/* Volume and snapshot names (the SDK's slug rule), capacities, ids and the
 * pool promise (src/daemon/storage/names.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include "daemon/storage/names.h"

static void test_slug_rule(void **state)
{
    (void)state;
    struct hx_err e = {0};
    const char *good[] = {"ab", "a-b", "0a9", "abc--d", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(vol_slug_check(good[i], &e), 0);
    const char *bad[] = {"", "a", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "Ab", "a_b", "-ab", "ab-", "ab--c", "a b", "\xc3\xa9t"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(vol_slug_check(bad[i], &e), -EINVAL);
    assert_int_equal(vol_slug_check(NULL, &e), -EINVAL);
    vol_slug_check("ab--cd", &e);
    assert_non_null(strstr(e.msg, "positions 3 and 4"));
}

static void test_capacity(void **state)
{
    (void)state;
    struct hx_err e = {0};
    uint64_t b;
    assert_int_equal(vol_parse_capacity("1GiB", &b, &e), 0);
    assert_int_equal(b, 1ull << 30);
    assert_int_equal(vol_parse_capacity("1.5GiB", &b, &e), 0);
    assert_int_equal(b, 3ull << 29);
    assert_int_equal(vol_parse_capacity("10GB", &b, &e), 0);
    assert_int_equal(b, 10000000000ull / 4096 * 4096 + 4096); /* rounded up to a block */
    assert_int_equal(vol_parse_capacity("4096", &b, &e), 0);
    assert_int_equal(b, 4096);
    assert_int_equal(vol_parse_capacity("1", &b, &e), 0);
    assert_int_equal(b, 4096);
    const char *bad[] = {"", "GiB", "1 GiB", "1gib", "1.5", "-1", "1.GiB", "12 parsecs", "1e9"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(vol_parse_capacity(bad[i], &b, &e), -EINVAL);
    assert_int_equal(vol_parse_capacity("99999999999999999999GiB", &b, &e), -ERANGE);
}

static void test_ids(void **state)
{
    (void)state;
    char id[32];
    assert_int_equal(vol_id_new("vol", "ord", "loc", id), 0);
    assert_true(vol_id_valid(id));
    assert_memory_equal(id, "vol_ord_", 8);
    assert_int_equal(vol_id_new("snp", "eu-west-1", "loc", id), 0);
    assert_memory_equal(id, "snp_loc_", 8);
    assert_false(vol_id_valid("sbx_ord_0123456789abcdefghjk"));
    assert_false(vol_id_valid("vol_ord_0123456789abcdefghji")); /* no i */
    assert_false(vol_id_valid("vol_ord_short"));
    assert_true(vol_region_valid("ord") && vol_region_valid("eu-west-1"));
    assert_false(vol_region_valid("") || vol_region_valid("ORD") || vol_region_valid("a/b"));
}

static void test_pool_promise(void **state)
{
    (void)state;
    struct hx_err e = {0};
    /* 1000 in the pool, 100 reserved, 600 promised: 300 fit exactly */
    assert_int_equal(vol_budget_check(1000, 100, 600, 300, "a volume", &e), 0);
    assert_int_equal(vol_budget_check(1000, 100, 601, 300, "a volume", &e), -ENOSPC);
    assert_int_equal(vol_budget_check(1000, 2000, 0, 1, "a volume", &e), -ENOSPC);
    assert_int_equal(vol_budget_check(1000, 0, 5000, 1, "a snapshot", &e), -ENOSPC);
    assert_non_null(strstr(e.msg, "a snapshot"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slug_rule),
        cmocka_unit_test(test_capacity),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_pool_promise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
