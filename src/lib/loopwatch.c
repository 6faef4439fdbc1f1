/* Loop stall detector: a uv_prepare handle runs right before each poll,
 * that is once per iteration; between two of them the loop either waited
 * in the poll (uv_metrics_idle_time) or ran callbacks. What is not idle was
 * busy; the thread's CPU clock, its schedstat run_delay and its rusage
 * switch counts say whether that time went to our code, to waiting for a
 * CPU, or to blocking calls. */
#include "lib/loopwatch.h"
#include <fcntl.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct sample {
    uint64_t wall_ns, idle_ns, cpu_ns, runq_ns;
    long nvcsw, nivcsw;
};

static struct {
    uv_prepare_t prep;
    bool on;
    uint64_t threshold_ns;
    void (*report)(const struct loopwatch_stall *s, void *arg);
    void *arg;
    int schedstat_fd;
    uint64_t iteration;
    struct sample last;
} W = {.schedstat_fd = -1};

static uint64_t ts_ns(const struct timespec *t)
{
    return (uint64_t)t->tv_sec * 1000000000u + (uint64_t)t->tv_nsec;
}

static void take(uv_loop_t *loop, struct sample *s)
{
    s->wall_ns = uv_hrtime();
    s->idle_ns = uv_metrics_idle_time(loop);
    struct timespec t;
    s->cpu_ns = clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) == 0 ? ts_ns(&t) : 0;
    /* /proc/thread-self/schedstat: "on-cpu-ns run-delay-ns timeslices" */
    s->runq_ns = 0;
    char buf[96];
    ssize_t n = W.schedstat_fd >= 0 ? pread(W.schedstat_fd, buf, sizeof buf - 1, 0) : -1;
    if (n > 0) {
        buf[n] = 0;
        uint64_t on_cpu, delay;
        if (sscanf(buf, "%" SCNu64 " %" SCNu64, &on_cpu, &delay) == 2)
            s->runq_ns = delay;
    }
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) == 0) {
        s->nvcsw = ru.ru_nvcsw;
        s->nivcsw = ru.ru_nivcsw;
    } else {
        s->nvcsw = s->nivcsw = 0;
    }
}

static double ms(uint64_t a, uint64_t b)
{
    return b > a ? (double)(b - a) / 1e6 : 0;
}

static void on_prepare(uv_prepare_t *h)
{
    struct sample now;
    take(h->loop, &now);
    W.iteration++;
    uint64_t wall = now.wall_ns - W.last.wall_ns, idle = now.idle_ns - W.last.idle_ns;
    uint64_t busy = wall > idle ? wall - idle : 0;
    uint64_t runq = now.runq_ns > W.last.runq_ns ? now.runq_ns - W.last.runq_ns : 0;
    if (busy >= W.threshold_ns || runq >= W.threshold_ns) {
        struct loopwatch_stall s = {
            .busy_ms = (double)busy / 1e6,
            .cpu_ms = ms(W.last.cpu_ns, now.cpu_ns),
            .runq_ms = (double)runq / 1e6,
            .idle_ms = (double)idle / 1e6,
            .vol_switches = now.nvcsw - W.last.nvcsw,
            .invol_switches = now.nivcsw - W.last.nivcsw,
            .iteration = W.iteration,
        };
        struct timespec rt;
        if (clock_gettime(CLOCK_REALTIME, &rt) == 0)
            s.end_ms = (int64_t)rt.tv_sec * 1000 + rt.tv_nsec / 1000000;
        W.report(&s, W.arg);
        take(h->loop, &now); /* the report's own time is not the next iteration's */
    }
    W.last = now;
}

int loopwatch_start(uv_loop_t *loop, uint32_t threshold_ms,
                    void (*report)(const struct loopwatch_stall *s, void *arg), void *arg)
{
    if (W.on)
        return UV_EBUSY;
    int r = uv_loop_configure(loop, UV_METRICS_IDLE_TIME);
    if (r < 0)
        return r;
    if ((r = uv_prepare_init(loop, &W.prep)) < 0)
        return r;
    W.threshold_ns = (uint64_t)threshold_ms * 1000000u;
    W.report = report;
    W.arg = arg;
    W.iteration = 0;
    W.schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    take(loop, &W.last);
    uv_prepare_start(&W.prep, on_prepare);
    uv_unref((uv_handle_t *)&W.prep);
    W.on = true;
    return 0;
}

void loopwatch_stop(void)
{
    if (!W.on)
        return;
    W.on = false;
    uv_close((uv_handle_t *)&W.prep, NULL);
    if (W.schedstat_fd >= 0)
        close(W.schedstat_fd);
    W.schedstat_fd = -1;
}

void loopwatch_format(const struct loopwatch_stall *s, char *out, size_t cap)
{
    snprintf(out, cap,
             "event loop stalled: iteration %" PRIu64 " busy %.1f ms (its thread on a CPU %.1f ms; waited for a CPU "
             "%.1f ms, the poll's wake-up included; %ld voluntary / %ld involuntary switches), idle before it %.1f ms, "
             "ended at %" PRId64 " ms",
             s->iteration, s->busy_ms, s->cpu_ms, s->runq_ms, s->vol_switches, s->invol_switches, s->idle_ms, s->end_ms);
}
