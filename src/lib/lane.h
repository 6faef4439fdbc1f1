/* A lane: one thread of its own that runs jobs one at a time, in the order
 * they were queued, and hands each back to the event loop when it is done.
 * For blocking work that must neither hold the loop nor take one of
 * libuv's shared workers while it waits (hutchd's cgroup directories: each
 * mkdir and rmdir waits for the host-wide cgroup_mutex, for seconds when
 * another process holds it; docs/performance/fairness.md). A queued job
 * keeps the loop alive, like a uv_work_t. */
#pragma once
#include <pthread.h>
#include <stdbool.h>
#include <uv.h>

struct hx_lane_job {
    void (*work)(struct hx_lane_job *j); /* on the lane's thread */
    void (*done)(struct hx_lane_job *j); /* on the loop, after work */
    struct hx_lane_job *next;            /* the lane's */
};

struct hx_lane {
    uv_loop_t *loop;
    uv_async_t async;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct hx_lane_job *todo, *todo_tail; /* under mu */
    struct hx_lane_job *done, *done_tail; /* under mu */
    bool stop;                            /* under mu */
    bool started;
    unsigned pending;                     /* the loop's count of queued, not yet done */
};

/* Starts the lane's thread (named name, at most 15 characters). Returns 0
 * or a negative errno. */
int hx_lane_start(struct hx_lane *l, uv_loop_t *loop, const char *name);
/* Queues j (owned by the caller, untouched until its done runs). */
void hx_lane_queue(struct hx_lane *l, struct hx_lane_job *j, void (*work)(struct hx_lane_job *),
                   void (*done)(struct hx_lane_job *));
/* After the loop has ended: lets the thread finish the job in hand, joins
 * it, closes the async handle (run the loop once more to free it). Jobs
 * still queued are dropped without their done. */
void hx_lane_stop(struct hx_lane *l);
