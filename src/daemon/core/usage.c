/* Usage reports in the seed's units (docs/metering.md): every stopped
 * sandbox's record, every running sandbox up to now, every volume's sizes
 * over time, cut into UTC-day pieces clipped to the asked range, priced per
 * piece and summed into the asked grouping. Also the audit log. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "daemon/core/metering.h"
#include "daemon/core/sandbox.h"
#include "daemon/net/net.h"
#include "daemon/sandbox/cgroup.h"
#include "daemon/store/store.h"
#include "lib/meter.h"
#include "lib/strparse.h"

#define GROUPS_MAX 100000      /* by sandbox over a long range: bounded all the same */

uint64_t usage_cpu_ns(struct sandbox *sb)
{
    uint64_t mem = 0, peak = 0, cpu = 0;
    cgroup_usage(sb->id, &mem, &peak, &cpu);
    return cpu;
}

struct group {
    char *key;                  /* NULL: no value for the label */
    struct meter_qty q;
};

struct report {
    const struct usage_query *q;
    const struct meter_prices *prices;
    json_t *index;              /* key -> position in groups */
    struct group *groups;
    size_t n, cap;
    struct meter_qty total;
    json_t *seen;               /* sandbox ids counted */
    unsigned running;
    struct hx_err *e;
};

static int group_of(struct report *r, const char *key, struct group **out)
{
    const char *k = key ? key : "\x01none"; /* label values are printable: never this */
    json_t *at = json_object_get(r->index, k);
    if (at) {
        *out = &r->groups[json_integer_value(at)];
        return 0;
    }
    if (r->n == GROUPS_MAX)
        return hx_fail(r->e, E2BIG, "more than %d groups: narrow the range", GROUPS_MAX);
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        struct group *g = realloc(r->groups, cap * sizeof *g);
        if (!g)
            return hx_fail(r->e, ENOMEM, "out of memory");
        r->groups = g;
        r->cap = cap;
    }
    struct group *g = &r->groups[r->n];
    *g = (struct group){.key = key ? strdup(key) : NULL};
    if ((key && !g->key) || json_object_set_new(r->index, k, json_integer((json_int_t)r->n)) < 0)
        return free(g->key), hx_fail(r->e, ENOMEM, "out of memory");
    r->n++;
    *out = g;
    return 0;
}

static void day_name(int64_t day_ms, char out[16])
{
    time_t t = (time_t)(day_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 16, "%Y-%m-%d", &tm);
}

/* One sandbox's (or volume's) usage over [start, end): cpu and egress
 * accrued evenly, mem_mib and vol_mib held throughout. */
struct span {
    const char *id;
    json_t *labels;             /* NULL for volumes */
    int64_t start, end;
    uint64_t cpu_us, egress, mem_mib, vol_mib;
};

static int add_piece(struct report *r, const struct span *sp, int64_t a, int64_t b, int64_t day)
{
    struct meter_qty q = {
        .cpu_us = meter_share(sp->cpu_us, sp->start, sp->end, a, b),
        .egress_bytes = meter_share(sp->egress, sp->start, sp->end, a, b),
        .mem_mib_ms = sp->mem_mib * (uint64_t)(b - a),
        .vol_mib_ms = sp->vol_mib * (uint64_t)(b - a),
    };
    meter_price(&q, r->prices);
    meter_add(&r->total, &q);
    const char *key = "";
    char dname[16];
    switch (r->q->by) {
    case USAGE_BY_NONE: key = r->q->org; break;
    case USAGE_BY_SANDBOX: key = sp->id; break;
    case USAGE_BY_DAY: day_name(day, dname); key = dname; break;
    case USAGE_BY_LABEL: key = json_string_value(json_object_get(sp->labels, r->q->label_key)); break;
    }
    struct group *g = NULL;
    int ret = group_of(r, key, &g);
    if (ret < 0)
        return ret;
    meter_add(&g->q, &q);
    return 0;
}

static int add_span(struct report *r, const struct span *sp)
{
    int64_t from = r->q->from_ms, to = r->q->to_ms;
    if (sp->end <= sp->start) { /* an instant: all of it in the day that holds it */
        if (sp->start < from || sp->start >= to)
            return 0;
        return add_piece(r, sp, sp->start, sp->start, meter_day_start(sp->start));
    }
    int64_t a0 = sp->start > from ? sp->start : from, b0 = sp->end < to ? sp->end : to;
    if (b0 <= a0)
        return 0;
    if (sp->labels)
        json_object_set_new(r->seen, sp->id, json_true());
    for (int64_t day = meter_day_start(a0); day < b0; day += METER_DAY_MS) {
        int64_t a = day > a0 ? day : a0, b = day + METER_DAY_MS < b0 ? day + METER_DAY_MS : b0;
        int ret = add_piece(r, sp, a, b, day);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int on_record(const struct usage_item *it, void *ud)
{
    struct span sp = {.id = it->sandbox_id, .labels = it->labels, .start = it->start_ms, .end = it->end_ms,
                      .cpu_us = it->cpu_us, .egress = it->egress_bytes, .mem_mib = it->memory_mb};
    return add_span(ud, &sp);
}

static int on_volume(const struct vol_span *v, void *ud)
{
    struct span sp = {.id = v->volume_id, .start = v->start_ms, .end = v->end_ms, .vol_mib = v->mib};
    return add_span(ud, &sp);
}

static json_t *qty_json(const struct meter_qty *q)
{
    return json_pack("{s:I, s:f, s:I, s:I, s:f, s:I, s:I, s:f, s:I, s:I, s:I, s:f}",
                     "cpuUs", (json_int_t)q->cpu_us, "cpuHours", (double)q->cpu_us / 3.6e9,
                     "cpuCostMicroUsd", (json_int_t)q->cpu_cost,
                     "memoryMibMs", (json_int_t)q->mem_mib_ms, "memoryGibHours", (double)q->mem_mib_ms / (1024.0 * 3.6e6),
                     "memoryCostMicroUsd", (json_int_t)q->mem_cost,
                     "volumeMibMs", (json_int_t)q->vol_mib_ms,
                     "volumeGibMonths", (double)q->vol_mib_ms / (1024.0 * (double)METER_MONTH_MS),
                     "volumeCostMicroUsd", (json_int_t)q->vol_cost, "egressBytes", (json_int_t)q->egress_bytes,
                     "costMicroUsd", (json_int_t)meter_cost_total(q), "costUsd", (double)meter_cost_total(q) / 1e6);
}

static int cmp_group(const void *a, const void *b)
{
    const struct group *x = a, *y = b;
    if (!x->key || !y->key)
        return !x->key - !y->key; /* "no value" last */
    return strcmp(x->key, y->key);
}

int usage_report(const struct usage_query *q, json_t **out, struct hx_err *e)
{
    *out = NULL;
    struct report r = {.q = q, .prices = &g_daemon.cfg->prices, .index = json_object(), .seen = json_object(), .e = e};
    int ret = r.index && r.seen ? 0 : hx_fail(e, ENOMEM, "out of memory");
    if (ret == 0)
        ret = store_usage_each(g_daemon.store, q->org, q->from_ms, q->to_ms, on_record, &r, e);
    /* Running sandboxes up to now: not yet in the store (record_usage has not run). */
    int64_t now = now_ms();
    for (struct sandbox *sb = g_daemon.sandboxes; ret == 0 && sb; sb = sb->next) {
        if (sb->pooled || !sb->recorded || sb->usage_recorded || strcmp(sb->org, q->org) != 0)
            continue;
        uint64_t cpu = usage_cpu_ns(sb), tx = 0, rx = 0;
        net_sandbox_bytes(sb, &tx, &rx);
        struct span sp = {.id = sb->id, .labels = sb->labels, .start = sb->created_ms, .end = now,
                          .cpu_us = (cpu > sb->cpu_base_ns ? cpu - sb->cpu_base_ns : 0) / 1000, .egress = tx,
                          .mem_mib = sb->memory_mb};
        if (!sp.labels)
            continue;
        r.running += sb->created_ms < q->to_ms;
        ret = add_span(&r, &sp);
    }
    if (ret == 0)
        ret = store_vol_usage_each(g_daemon.store, q->org, now, on_volume, &r, e);
    if (ret == 0) {
        if (r.n)
            qsort(r.groups, r.n, sizeof *r.groups, cmp_group);
        json_t *groups = json_array();
        for (size_t i = 0; groups && i < r.n; i++) {
            json_t *g = qty_json(&r.groups[i].q);
            json_object_set_new(g, "key", r.groups[i].key ? json_string(r.groups[i].key) : json_null());
            json_array_append_new(groups, g);
        }
        static const char *const by_names[] = {"org", "sandbox", "day", "label"};
        json_t *total = qty_json(&r.total);
        json_object_set_new(total, "sandboxes", json_integer((json_int_t)json_object_size(r.seen)));
        json_object_set_new(total, "running", json_integer(r.running));
        *out = json_pack("{s:I, s:I, s:s, s:o*, s:{s:I, s:I, s:I}, s:o, s:o}", "from", (json_int_t)q->from_ms, "to",
                         (json_int_t)q->to_ms, "by", by_names[q->by], "label",
                         q->by == USAGE_BY_LABEL ? json_string(q->label_key) : NULL, "prices", "cpuHourMicroUsd",
                         (json_int_t)r.prices->cpu_hour, "memoryGibHourMicroUsd", (json_int_t)r.prices->mem_gib_hour,
                         "volumeGibMonthMicroUsd", (json_int_t)r.prices->vol_gib_month, "total", total, "groups",
                         groups);
        if (!*out)
            ret = hx_fail(e, ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < r.n; i++)
        free(r.groups[i].key);
    free(r.groups);
    json_decref(r.index);
    json_decref(r.seen);
    return ret;
}

void audit_log(const char *org, const char *token_id, const char *action, const char *target, const char *fmt, ...)
{
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    struct hx_err e = {0};
    if (store_audit_add(g_daemon.store, org, token_id, action, target, detail, &e) < 0)
        fprintf(stderr, "hutchd: audit %s %s by %s: %s\n", action, target, token_id && *token_id ? token_id : "root",
                e.msg);
}
