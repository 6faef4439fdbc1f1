/* An event loop's stall detector (a debug aid, off unless started): at the
 * end of every loop iteration it measures how long the iteration was busy
 * (wall time outside the poll's wait) and how that time was spent, and
 * reports an iteration busier than a threshold, or one in which the thread
 * waited longer than the threshold for a CPU. Costs nothing until started;
 * when started, three system calls per iteration. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct loopwatch_stall {
    double busy_ms;     /* wall time of the iteration outside the poll's wait */
    double cpu_ms;      /* CPU time the loop's thread used in it */
    double runq_ms;     /* time it waited for a CPU, the poll's wait included (schedstat run_delay) */
    double idle_ms;     /* time it slept in the poll */
    long vol_switches;  /* voluntary context switches (blocking calls, the poll's sleep) */
    long invol_switches; /* involuntary ones (preempted) */
    uint64_t iteration; /* which iteration of the loop, from 1 */
    int64_t end_ms;     /* when it ended, ms since the epoch (CLOCK_REALTIME) */
};

/* Starts watching loop (from its own thread; call once). report runs, on
 * the loop, after each iteration that stalled: busy_ms or runq_ms >=
 * threshold_ms. Returns 0 or a negative uv error. */
int loopwatch_start(uv_loop_t *loop, uint32_t threshold_ms,
                    void (*report)(const struct loopwatch_stall *s, void *arg), void *arg);
/* Stops it (its handles close with the loop's next iteration). */
void loopwatch_stop(void);
/* One line for s into out (cap bytes, NUL-terminated), for a log. */
void loopwatch_format(const struct loopwatch_stall *s, char *out, size_t cap);
