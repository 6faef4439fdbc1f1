/* Fair shares of the proxy's upstream lookups: a flooding client keeps to
 * its slots and its own queue; others run at once or get the next turn. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "proxy/fairq.h"

#define N 200

static struct fq_item items[N];

static int idx(struct fq_item *it)
{
    return it ? (int)(it - items) : -1;
}

static void test_flood_keeps_to_its_share_and_queue(void **state)
{
    struct fq q = {.slots = 8, .per_client = 3, .queue_max = 4};
    struct fq_client a = {0}, b = {0};
    int run = 0, queued = 0, full = 0;
    for (int i = 0; i < 100; i++) {
        enum fq_verdict v = fq_submit(&q, &a, &items[i]);
        run += v == FQ_RUN;
        queued += v == FQ_QUEUED;
        full += v == FQ_FULL;
    }
    assert_int_equal(run, 3);
    assert_int_equal(queued, 4);
    assert_int_equal(full, 93);
    assert_int_equal(q.running, 3);
    /* b is not behind a's queue */
    assert_int_equal(fq_submit(&q, &b, &items[100]), FQ_RUN);
    assert_true(fq_can_run(&q, &b));
}

static void test_freed_slot_goes_round_robin(void **state)
{
    struct fq q = {.slots = 2, .per_client = 2, .queue_max = 10};
    struct fq_client a = {0}, b = {0};
    assert_int_equal(fq_submit(&q, &a, &items[0]), FQ_RUN);
    assert_int_equal(fq_submit(&q, &a, &items[1]), FQ_RUN);
    for (int i = 2; i < 6; i++)
        assert_int_equal(fq_submit(&q, &a, &items[i]), FQ_QUEUED);
    assert_int_equal(fq_submit(&q, &b, &items[10]), FQ_QUEUED); /* all slots busy */
    assert_int_equal(fq_submit(&q, &b, &items[11]), FQ_QUEUED);
    assert_null(fq_next(&q));
    /* a's lookups finish one by one: turns alternate a, b, a, b in FIFO order per client */
    int order[6], k = 0;
    struct fq_client *owner[N] = {0};
    for (int i = 0; i < 6; i++)
        owner[i] = &a;
    owner[10] = owner[11] = &b;
    int running[2] = {0, 1};
    for (int round = 0; round < 6; round++) {
        int done = running[round % 2];
        fq_done(&q, owner[done]);
        struct fq_item *it = fq_next(&q);
        assert_non_null(it);
        order[k++] = idx(it);
        running[round % 2] = idx(it);
        assert_null(fq_next(&q)); /* one slot freed, one started */
    }
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 10);
    assert_int_equal(order[2], 3);
    assert_int_equal(order[3], 11);
    assert_int_equal(order[4], 4);
    assert_int_equal(order[5], 5);
}

static void test_client_at_its_share_is_skipped(void **state)
{
    struct fq q = {.slots = 4, .per_client = 2, .queue_max = 10};
    struct fq_client a = {0}, b = {0};
    fq_submit(&q, &a, &items[0]);
    fq_submit(&q, &a, &items[1]);
    assert_int_equal(fq_submit(&q, &a, &items[2]), FQ_QUEUED); /* at its share although slots are free */
    assert_null(fq_next(&q));
    assert_int_equal(fq_submit(&q, &b, &items[3]), FQ_RUN);
    fq_done(&q, &b);
    assert_null(fq_next(&q)); /* b's slot does not go to a beyond its share */
    fq_done(&q, &a);
    assert_int_equal(idx(fq_next(&q)), 2);
    assert_int_equal(a.running, 2);
}

static void test_cancel_and_take_over(void **state)
{
    struct fq q = {.slots = 10, .per_client = 1, .queue_max = 10};
    struct fq_client a = {0}, b = {0};
    fq_submit(&q, &a, &items[0]);
    fq_submit(&q, &a, &items[1]);
    fq_submit(&q, &a, &items[2]);
    assert_ptr_equal(items[2].queued_in, &a);
    /* b wants the name behind items[2]: it takes it over into its own free share */
    assert_true(fq_can_run(&q, &b));
    fq_cancel(&q, &items[2]);
    assert_null(items[2].queued_in);
    assert_int_equal(a.queued, 1);
    assert_int_equal(fq_submit(&q, &b, &items[2]), FQ_RUN);
    fq_cancel(&q, &items[1]);
    assert_int_equal(a.queued, 0);
    fq_done(&q, &a);
    assert_null(fq_next(&q));
    fq_cancel(&q, &items[1]); /* not queued: nothing happens */
}

static void test_removed_client_returns_its_queue(void **state)
{
    struct fq q = {.slots = 1, .per_client = 1, .queue_max = 10};
    struct fq_client a = {0}, b = {0};
    fq_submit(&q, &a, &items[0]);
    fq_submit(&q, &a, &items[1]);
    fq_submit(&q, &a, &items[2]);
    fq_submit(&q, &b, &items[3]);
    struct fq_item *list = fq_client_remove(&q, &a);
    assert_int_equal(idx(list), 1);
    assert_int_equal(idx(list->next), 2);
    assert_null(list->next->next);
    fq_done(&q, NULL); /* a's running item ends after a is gone */
    assert_int_equal(idx(fq_next(&q)), 3);
    assert_null(fq_next(&q));
    assert_int_equal(q.running, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flood_keeps_to_its_share_and_queue),
        cmocka_unit_test(test_freed_slot_goes_round_robin),
        cmocka_unit_test(test_client_at_its_share_is_skipped),
        cmocka_unit_test(test_cancel_and_take_over),
        cmocka_unit_test(test_removed_client_returns_its_queue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
