/* The token bucket behind per-sandbox log rate limits: a burst, then the
 * refill rate, never more than the burst after a long quiet spell. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "lib/tbucket.h"

static unsigned takes(struct hx_tbucket *b, int64_t now, unsigned tries)
{
    unsigned n = 0;
    for (unsigned i = 0; i < tries; i++)
        n += hx_tb_take(b, now);
    return n;
}

static void test_burst_then_empty(void **state)
{
    struct hx_tbucket b;
    hx_tb_init(&b, 20, 2);
    assert_int_equal(takes(&b, 1000, 1000), 20);
    assert_false(hx_tb_take(&b, 1000));
}

static void test_refills_at_rate(void **state)
{
    struct hx_tbucket b;
    hx_tb_init(&b, 20, 2);
    takes(&b, 0, 20);
    assert_false(hx_tb_take(&b, 499));   /* 0.998 tokens */
    assert_true(hx_tb_take(&b, 500));    /* 1 token after 500 ms at 2/s */
    assert_false(hx_tb_take(&b, 500));
    assert_int_equal(takes(&b, 10500, 100), 20); /* 10 s at 2/s: 20, the burst */
}

static void test_long_quiet_spell_gives_only_the_burst(void **state)
{
    struct hx_tbucket b;
    hx_tb_init(&b, 5, 1000000);
    takes(&b, 0, 5);
    assert_int_equal(takes(&b, INT64_MAX / 2, 100), 5); /* no overflow in the refill */
}

static void test_clock_going_back_refills_nothing(void **state)
{
    struct hx_tbucket b;
    hx_tb_init(&b, 3, 10);
    takes(&b, 5000, 3);
    assert_false(hx_tb_take(&b, 1000));
    assert_false(hx_tb_take(&b, 5000));
    assert_true(hx_tb_take(&b, 5100));
}

static void test_zero_rate_is_burst_only(void **state)
{
    struct hx_tbucket b;
    hx_tb_init(&b, 2, 0);
    assert_int_equal(takes(&b, 0, 10), 2);
    assert_int_equal(takes(&b, 1000000, 10), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_empty),
        cmocka_unit_test(test_refills_at_rate),
        cmocka_unit_test(test_long_quiet_spell_gives_only_the_burst),
        cmocka_unit_test(test_clock_going_back_refills_nothing),
        cmocka_unit_test(test_zero_rate_is_burst_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
