/* The lane (lib/lane.c): jobs run one at a time on the lane's own thread,
 * in the order queued, and their done callbacks run on the loop in that
 * order; a blocked job holds neither the loop nor later jobs' queueing; a
 * queued job keeps the loop alive and an idle lane does not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>
#include "lib/lane.h"

struct job {
    struct hx_lane_job j;
    int id;
    pthread_t ran_on;
    int order_run, order_done;
    int requeue; /* done queues it again this many times */
};

static atomic_int run_seq;
static int done_seq;
static pthread_t loop_thread;
static struct hx_lane lane;
static atomic_int gate_open; /* the first job of the blocking test waits for it */

static void job_work(struct hx_lane_job *j)
{
    struct job *x = (struct job *)j;
    x->ran_on = pthread_self();
    x->order_run = atomic_fetch_add(&run_seq, 1);
}

static void job_done(struct hx_lane_job *j)
{
    struct job *x = (struct job *)j;
    assert_true(pthread_equal(pthread_self(), loop_thread));
    x->order_done = done_seq++;
    if (x->requeue-- > 0)
        hx_lane_queue(&lane, j, job_work, job_done);
}

/* a loop and the lane on it, fresh counters */
static void lane_up(uv_loop_t *loop)
{
    uv_loop_init(loop);
    loop_thread = pthread_self();
    run_seq = 0;
    done_seq = 0;
    assert_int_equal(hx_lane_start(&lane, loop, "test-lane"), 0);
}

/* the lane's thread joined, its handle closed, the loop closes clean */
static void lane_down(uv_loop_t *loop)
{
    hx_lane_stop(&lane);
    uv_run(loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_jobs_run_in_order_off_the_loop_and_finish_on_it(void **state)
{
    (void)state;
    uv_loop_t loop;
    lane_up(&loop);
    struct job jobs[50];
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < 50; i++) {
        jobs[i].id = i;
        hx_lane_queue(&lane, &jobs[i].j, job_work, job_done);
    }
    /* the loop runs until every job is done, then returns on its own: the lane's handle no longer keeps it */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    for (int i = 0; i < 50; i++) {
        assert_false(pthread_equal(jobs[i].ran_on, loop_thread));
        assert_true(pthread_equal(jobs[i].ran_on, jobs[0].ran_on)); /* one thread */
        assert_int_equal(jobs[i].order_run, i);
        assert_int_equal(jobs[i].order_done, i);
    }
    lane_down(&loop);
}

static void test_a_done_may_queue_its_job_again(void **state)
{
    (void)state;
    uv_loop_t loop;
    lane_up(&loop);
    struct job x = {.requeue = 3};
    hx_lane_queue(&lane, &x.j, job_work, job_done);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(run_seq, 4); /* once and three more */
    assert_int_equal(done_seq, 4);
    lane_down(&loop);
}

static void gate_work(struct hx_lane_job *j)
{
    while (!atomic_load(&gate_open))
        usleep(1000);
    job_work(j);
}

static int ticks;
static void on_tick(uv_timer_t *t)
{
    /* the loop runs while the lane's job blocks; after a few ticks it lets the job go */
    if (++ticks == 5)
        atomic_store(&gate_open, 1);
    if (ticks >= 5)
        uv_timer_stop(t);
}

static void test_a_blocked_job_does_not_hold_the_loop(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    loop_thread = pthread_self();
    run_seq = 0;
    done_seq = 0;
    ticks = 0;
    atomic_store(&gate_open, 0);
    assert_int_equal(hx_lane_start(&lane, &loop, "test-lane"), 0);
    struct job a = {0}, b = {0};
    hx_lane_queue(&lane, &a.j, gate_work, job_done);
    hx_lane_queue(&lane, &b.j, job_work, job_done);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_tick, 1, 1);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(ticks, 5); /* the timer ran while a blocked */
    assert_int_equal(a.order_run, 0);
    assert_int_equal(b.order_run, 1); /* b waited for a: one at a time */
    assert_int_equal(done_seq, 2);
    uv_close((uv_handle_t *)&t, NULL);
    lane_down(&loop);
}

static void test_an_idle_lane_lets_the_loop_end(void **state)
{
    (void)state;
    uv_loop_t loop;
    lane_up(&loop);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* returns at once */
    lane_down(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_run_in_order_off_the_loop_and_finish_on_it),
        cmocka_unit_test(test_a_done_may_queue_its_job_again),
        cmocka_unit_test(test_a_blocked_job_does_not_hold_the_loop),
        cmocka_unit_test(test_an_idle_lane_lets_the_loop_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
