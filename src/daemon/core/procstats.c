/* Per-command usage: what every process a sandbox ran used (CPU, peak RSS,
 * block I/O, wall time), from the rusage hutch-init got when it reaped it.
 * The last PROCSTATS_MAX per sandbox are kept, older ones counted. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "daemon/core/metering.h"
#include "daemon/core/sandbox.h"
#include "lib/strparse.h"

/* The ring grows by doubling from PROCSTATS_FIRST to PROCSTATS_MAX entries
 * (88 bytes each): most sandboxes run a few commands, and a full ring made at
 * the first one cost hutchd 88 KiB per sandbox (440 MB with 5,000 alive). */
#define PROCSTATS_FIRST 8
struct proc_stats {
    struct proc_usage *ring;    /* cap entries */
    size_t cap, head, n;        /* oldest at head */
    uint64_t dropped;
};

static bool ring_grow(struct proc_stats *ps)
{
    size_t cap = ps->cap ? ps->cap * 2 : PROCSTATS_FIRST;
    if (cap > PROCSTATS_MAX)
        cap = PROCSTATS_MAX;
    struct proc_usage *r = malloc(cap * sizeof *r);
    if (!r)
        return false;
    for (size_t i = 0; i < ps->n; i++) /* oldest first, from index 0 */
        r[i] = ps->ring[(ps->head + i) % ps->cap];
    free(ps->ring);
    ps->ring = r;
    ps->cap = cap;
    ps->head = 0;
    return true;
}

/* A hijacked agent can send anything: a field is a non-negative integer
 * below 2^53 or the frame is refused; nothing here is trusted beyond being
 * shown back to the sandbox's owner. */
static int u64_field(json_t *o, const char *k, uint64_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1LL << 53))
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

int procstats_parse(json_t *usage, struct proc_usage *out)
{
    if (!usage)
        return 0;
    if (!json_is_object(usage))
        return -1;
    return u64_field(usage, "cpuUserUs", &out->cpu_user_us) < 0 ||
                   u64_field(usage, "cpuSystemUs", &out->cpu_system_us) < 0 ||
                   u64_field(usage, "maxRssKib", &out->max_rss_kib) < 0 ||
                   u64_field(usage, "blockReadBytes", &out->blk_read_bytes) < 0 ||
                   u64_field(usage, "blockWriteBytes", &out->blk_write_bytes) < 0 ||
                   u64_field(usage, "wallUs", &out->wall_us) < 0
               ? -1
               : 1;
}

void procstats_add(struct sandbox *sb, const struct proc_usage *u)
{
    if (!sb->proc_stats && !(sb->proc_stats = calloc(1, sizeof *sb->proc_stats)))
        return;
    struct proc_stats *ps = sb->proc_stats;
    if (ps->n == ps->cap && ps->cap < PROCSTATS_MAX && !ring_grow(ps) && ps->cap == 0)
        return; /* no memory for its first entry: this one goes uncounted */
    if (ps->n == ps->cap) { /* full at its size: the oldest goes */
        ps->head = (ps->head + 1) % ps->cap;
        ps->n--;
        ps->dropped++;
    }
    ps->ring[(ps->head + ps->n++) % ps->cap] = *u;
}

json_t *procstats_report(struct sandbox *sb, uint32_t pid)
{
    struct proc_stats *ps = sb->proc_stats;
    json_t *arr = json_array();
    for (size_t i = 0; ps && arr && i < ps->n; i++) {
        const struct proc_usage *u = &ps->ring[(ps->head + i) % ps->cap];
        if (pid && u->pid != pid)
            continue;
        char started[32], ended[32];
        hx_format_iso8601_ms(u->started_ms, started);
        hx_format_iso8601_ms(u->ended_ms, ended);
        json_array_append_new(arr, json_pack("{s:I, s:i, s:o, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "pid",
                                             (json_int_t)u->pid, "code", u->code, "signal",
                                             u->signal[0] ? json_string(u->signal) : json_null(), "startedAt", started,
                                             "endedAt", ended, "cpuUserUs", (json_int_t)u->cpu_user_us, "cpuSystemUs",
                                             (json_int_t)u->cpu_system_us, "maxRssKib", (json_int_t)u->max_rss_kib,
                                             "blockReadBytes", (json_int_t)u->blk_read_bytes, "blockWriteBytes",
                                             (json_int_t)u->blk_write_bytes, "wallUs", (json_int_t)u->wall_us,
                                             "cpuUs", (json_int_t)(u->cpu_user_us + u->cpu_system_us)));
    }
    return json_pack("{s:s, s:o, s:I, s:I}", "id", sb->id, "processes", arr ? arr : json_array(), "dropped",
                     (json_int_t)(ps ? ps->dropped : 0), "kept", (json_int_t)PROCSTATS_MAX);
}

void procstats_free(struct sandbox *sb)
{
    if (sb->proc_stats)
        free(sb->proc_stats->ring);
    free(sb->proc_stats);
    sb->proc_stats = NULL;
}
