/* Periodic cgroup samples of running sandboxes into a bounded ring each (docs/dashboard.md). The timer
 * runs on the daemon's loop; a sample is two or three small reads from the cgroup file system. */
#include <stdlib.h>
#include "daemon/core/sbstats.h"
#include "daemon/core/sandbox.h"
#include "daemon/sandbox/cgroup.h"

struct sample {
    int64_t t_ms;                 /* wall clock, ms since the epoch */
    uint64_t cpu_ns;              /* cgroup CPU since its owner got it (pool boot not counted) */
    uint64_t mem_bytes;           /* memory charged to its cgroup now (page cache included) */
};

struct sb_samples {
    uint32_t head;                /* next slot to write */
    uint32_t n;                   /* kept, <= cap */
    uint32_t cap;
    struct sample s[];
};

static struct {
    uv_timer_t timer;
    bool started;
    uint32_t interval_ms, tick_ms, cap;
} g;

void sbstats_sample(struct sandbox *sb)
{
    if (g.cap == 0 || sb->state != SB_RUNNING || sb->pooled)
        return;
    struct sb_samples *r = sb->samples;
    if (!r) {
        r = calloc(1, sizeof *r + (size_t)g.cap * sizeof r->s[0]);
        if (!r)
            return; /* no plot for it this time; the sandbox is unaffected */
        r->cap = g.cap;
        sb->samples = r;
    }
    uint64_t mem = 0, peak = 0, cpu = 0;
    cgroup_usage(sb->id, &mem, &peak, &cpu);
    cpu = cpu > sb->cpu_base_ns ? cpu - sb->cpu_base_ns : 0;
    r->s[r->head] = (struct sample){now_ms(), cpu, mem};
    r->head = (r->head + 1) % r->cap;
    if (r->n < r->cap)
        r->n++;
}

/* A sample costs about 180 us on these machines (three cgroup v1 reads). Taking all at once would stall
 * the loop for 180 ms every interval with 1,000 sandboxes; instead the timer ticks every TICK_MS and
 * takes a slice of the samples due (sandboxes whose last one is an interval old): at least BATCH, and
 * enough to keep up (n x TICK_MS / interval), so 1,000 sandboxes at 2 s cost ~9 ms slices. */
#define TICK_MS 100u
#define BATCH 32u

static bool due(const struct sandbox *sb, int64_t now)
{
    const struct sb_samples *r = sb->samples;
    if (!r || r->n == 0)
        return true;
    const struct sample *last = &r->s[(r->head + r->cap - 1) % r->cap];
    return now - last->t_ms >= (int64_t)g.interval_ms - (int64_t)g.tick_ms / 2;
}

static void on_stats_tick(uv_timer_t *t)
{
    (void)t;
    int64_t now = now_ms();
    unsigned taken = 0, budget = g_daemon.n_sandboxes * g.tick_ms / g.interval_ms + 1;
    if (budget < BATCH)
        budget = BATCH;
    for (struct sandbox *sb = g_daemon.sandboxes; sb && taken < budget; sb = sb->next) {
        if (sb->state != SB_RUNNING || sb->pooled || !due(sb, now))
            continue;
        sbstats_sample(sb);
        taken++;
    }
}

void sbstats_start(uv_loop_t *loop, uint32_t interval_ms, uint32_t samples)
{
    g.interval_ms = interval_ms;
    g.cap = interval_ms ? samples : 0;
    if (!interval_ms || !samples)
        return;
    uv_timer_init(loop, &g.timer);
    uv_unref((uv_handle_t *)&g.timer); /* never what keeps the loop alive */
    g.tick_ms = interval_ms < TICK_MS ? interval_ms : TICK_MS;
    uv_timer_start(&g.timer, on_stats_tick, g.tick_ms, g.tick_ms);
    g.started = true;
}

void sbstats_stop(void)
{
    if (g.started) {
        uv_timer_stop(&g.timer);
        uv_close((uv_handle_t *)&g.timer, NULL);
        g.started = false;
    }
}

/* The i-th kept sample, oldest first. */
static const struct sample *nth(const struct sb_samples *r, uint32_t i)
{
    return &r->s[(r->head + r->cap - r->n + i) % r->cap];
}

static json_t *cpu_rate(const struct sample *prev, const struct sample *cur)
{
    if (!prev || cur->t_ms <= prev->t_ms || cur->cpu_ns < prev->cpu_ns)
        return json_null();
    /* ns of CPU per ms of wall = thousandths of a CPU, times 1000: keep it integral */
    uint64_t d_ns = cur->cpu_ns - prev->cpu_ns;
    uint64_t d_ms = (uint64_t)(cur->t_ms - prev->t_ms);
    return json_integer((json_int_t)(d_ns / 1000 / d_ms));
}

static json_t *sample_json(const struct sample *prev, const struct sample *s)
{
    return json_pack("{s:I, s:I, s:I, s:o}", "t", (json_int_t)s->t_ms, "cpuUs", (json_int_t)(s->cpu_ns / 1000),
                     "memBytes", (json_int_t)s->mem_bytes, "cpuMillis", cpu_rate(prev, s));
}

json_t *sbstats_json(const struct sandbox *sb, int64_t since_ms)
{
    json_t *arr = json_array();
    const struct sb_samples *r = sb->samples;
    for (uint32_t i = 0; r && arr && i < r->n; i++) {
        const struct sample *s = nth(r, i);
        if (s->t_ms > since_ms)
            json_array_append_new(arr, sample_json(i ? nth(r, i - 1) : NULL, s));
    }
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:o}", "id", sb->id, "intervalMs", (json_int_t)g.interval_ms,
                     "capacity", (json_int_t)g.cap, "memoryLimitBytes", (json_int_t)sb->memory_mb << 20,
                     "cpuLimitMillis", (json_int_t)sb->cpu_millis, "samples", arr ? arr : json_array());
}

json_t *sbstats_latest_json(const struct sandbox *sb)
{
    const struct sb_samples *r = sb->samples;
    if (!r || r->n == 0)
        return NULL;
    json_t *o = sample_json(r->n > 1 ? nth(r, r->n - 2) : NULL, nth(r, r->n - 1));
    json_object_set_new(o, "id", json_string(sb->id));
    json_object_set_new(o, "memoryLimitBytes", json_integer((json_int_t)sb->memory_mb << 20));
    return o;
}

void sbstats_free(struct sandbox *sb)
{
    free(sb->samples);
    sb->samples = NULL;
}
