/* Metering arithmetic: day pieces add up exactly to the whole, prices are
 * the published ones, and price flags parse as dollars. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "lib/meter.h"

static void test_shares_of_adjacent_pieces_add_up(void **state)
{
    /* 7 units over 3 ms in three 1 ms pieces: 2 + 2 + 3 (floors of 7/3, 14/3, 21/3) */
    uint64_t sum = 0;
    for (int64_t a = 0; a < 3; a++)
        sum += meter_share(7, 0, 3, a, a + 1);
    assert_int_equal(sum, 7);
    assert_int_equal(meter_share(7, 0, 3, 0, 1), 2);
    /* irregular cuts of a long interval (days, a range boundary) */
    uint64_t total = 123456789012ull, got = 0;
    int64_t cuts[] = {1000, 86400000, 86400001, 99999999, 172800000, 200000000};
    int64_t prev = 1000;
    for (size_t i = 1; i < sizeof cuts / sizeof *cuts; i++) {
        got += meter_share(total, 1000, 200000000, prev, cuts[i]);
        prev = cuts[i];
    }
    assert_int_equal(got, total);
    /* outside and clipped */
    assert_int_equal(meter_share(100, 10, 20, 0, 5), 0);
    assert_int_equal(meter_share(100, 10, 20, 0, 100), 100);
    assert_int_equal(meter_share(100, 10, 20, 15, 100), 50);
    /* empty interval: all in the piece holding its start */
    assert_int_equal(meter_share(9, 10, 10, 0, 11), 9);
    assert_int_equal(meter_share(9, 10, 10, 11, 20), 0);
}

static void test_prices_are_the_published_ones(void **state)
{
    struct meter_prices p = {50000, 16000, 200000};
    struct meter_qty q = {.cpu_us = 3600ull * 1000000,                     /* 1 CPU-hour */
                          .mem_mib_ms = 1024ull * 3600000,                  /* 1 GiB-hour */
                          .vol_mib_ms = 1024ull * 30 * 86400000};           /* 1 GiB-month */
    meter_price(&q, &p);
    assert_int_equal(q.cpu_cost, 50000);
    assert_int_equal(q.mem_cost, 16000);
    assert_int_equal(q.vol_cost, 200000);
    assert_int_equal(meter_cost_total(&q), 266000);
    struct meter_qty two = {.cpu_us = 2000000};                             /* 2 CPU-seconds: 27.7 µ$ */
    meter_price(&two, &p);
    assert_int_equal(two.cpu_cost, 27);
}

static void test_day_start_is_utc_midnight(void **state)
{
    assert_int_equal(meter_day_start(0), 0);
    assert_int_equal(meter_day_start(86399999), 0);
    assert_int_equal(meter_day_start(86400000), 86400000);
    assert_int_equal(meter_day_start(-1), -86400000);
}

static void test_price_flags_parse_as_dollars(void **state)
{
    struct hx_err e;
    uint64_t v;
    assert_int_equal(meter_parse_price("0.05", &v, &e), 0);
    assert_int_equal(v, 50000);
    assert_int_equal(meter_parse_price("$0.016", &v, &e), 0);
    assert_int_equal(v, 16000);
    assert_int_equal(meter_parse_price("2", &v, &e), 0);
    assert_int_equal(v, 2000000);
    assert_int_equal(meter_parse_price("0", &v, &e), 0);
    assert_int_equal(v, 0);
    assert_true(meter_parse_price("0.0000001", &v, &e) < 0);
    assert_true(meter_parse_price("-1", &v, &e) < 0);
    assert_true(meter_parse_price("", &v, &e) < 0);
    assert_true(meter_parse_price("1e3", &v, &e) < 0);
    assert_true(meter_parse_price("99999999999999999999", &v, &e) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shares_of_adjacent_pieces_add_up),
        cmocka_unit_test(test_prices_are_the_published_ones),
        cmocka_unit_test(test_day_start_is_utc_midnight),
        cmocka_unit_test(test_price_flags_parse_as_dollars),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
