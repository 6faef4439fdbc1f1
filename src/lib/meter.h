/* Metering arithmetic, all in integers so that totals add up exactly:
 * CPU in microseconds, memory and volume storage in MiB·ms, money in
 * micro-dollars (1e-6 USD). A sandbox's usage is cut into pieces (one per
 * UTC day it ran in, clipped to the asked range); every grouping sums the
 * same pieces, each priced once, so every grouping has the same totals. */
#pragma once
#include <stdint.h>
#include "lib/err.h"

#define METER_DAY_MS 86400000LL
#define METER_HOUR_MS 3600000LL
#define METER_MONTH_MS (30 * METER_DAY_MS)   /* a billing month: 30 days (720 h) */

struct meter_prices {
    uint64_t cpu_hour;          /* micro-dollars per CPU-hour [50000 = $0.05] */
    uint64_t mem_gib_hour;      /* micro-dollars per GiB-hour of memory limit [16000] */
    uint64_t vol_gib_month;     /* micro-dollars per GiB-month of volume storage [200000] */
};

struct meter_qty {
    uint64_t cpu_us, mem_mib_ms, vol_mib_ms, egress_bytes;
    uint64_t cpu_cost, mem_cost, vol_cost;   /* micro-dollars */
};

/* The part of total that falls in [a, b) when total accrued evenly over
 * [start, end): the shares of adjacent pieces add up to total exactly. An
 * empty interval puts everything in the piece holding start. */
uint64_t meter_share(uint64_t total, int64_t start, int64_t end, int64_t a, int64_t b);
/* Prices a piece (rounding each cost down to a micro-dollar). */
void meter_price(struct meter_qty *q, const struct meter_prices *p);
void meter_add(struct meter_qty *sum, const struct meter_qty *q);
static inline uint64_t meter_cost_total(const struct meter_qty *q)
{
    return q->cpu_cost + q->mem_cost + q->vol_cost;
}
/* Start of the UTC day holding ms. */
int64_t meter_day_start(int64_t ms);
/* "0.05" or "$0.05" (dollars, at most 6 decimals) into micro-dollars. */
int meter_parse_price(const char *s, uint64_t *micro, struct hx_err *e);
