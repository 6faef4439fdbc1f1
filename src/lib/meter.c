/* Metering arithmetic (meter.h): shares of an interval and prices. */
#include "lib/meter.h"
#include <errno.h>
#include <string.h>

uint64_t meter_share(uint64_t total, int64_t start, int64_t end, int64_t a, int64_t b)
{
    if (end <= start)
        return a <= start && start < b ? total : 0;
    if (a < start)
        a = start;
    if (b > end)
        b = end;
    if (b <= a)
        return 0;
    /* floor(total * x / len) at both ends: adjacent pieces telescope to total. */
    unsigned __int128 len = (unsigned __int128)(end - start);
    unsigned __int128 hi = (unsigned __int128)total * (uint64_t)(b - start) / len;
    unsigned __int128 lo = (unsigned __int128)total * (uint64_t)(a - start) / len;
    return (uint64_t)(hi - lo);
}

static uint64_t scale(uint64_t qty, uint64_t price, uint64_t per)
{
    unsigned __int128 v = (unsigned __int128)qty * price / per;
    return v > UINT64_MAX ? UINT64_MAX : (uint64_t)v;
}

void meter_price(struct meter_qty *q, const struct meter_prices *p)
{
    q->cpu_cost = scale(q->cpu_us, p->cpu_hour, (uint64_t)METER_HOUR_MS * 1000);       /* µs per hour */
    q->mem_cost = scale(q->mem_mib_ms, p->mem_gib_hour, 1024 * (uint64_t)METER_HOUR_MS);  /* MiB·ms per GiB-hour */
    q->vol_cost = scale(q->vol_mib_ms, p->vol_gib_month, 1024 * (uint64_t)METER_MONTH_MS);
}

void meter_add(struct meter_qty *sum, const struct meter_qty *q)
{
    sum->cpu_us += q->cpu_us;
    sum->mem_mib_ms += q->mem_mib_ms;
    sum->vol_mib_ms += q->vol_mib_ms;
    sum->egress_bytes += q->egress_bytes;
    sum->cpu_cost += q->cpu_cost;
    sum->mem_cost += q->mem_cost;
    sum->vol_cost += q->vol_cost;
}

int64_t meter_day_start(int64_t ms)
{
    int64_t d = ms / METER_DAY_MS;
    if (ms < 0 && ms % METER_DAY_MS)
        d--;
    return d * METER_DAY_MS;
}

int meter_parse_price(const char *s, uint64_t *micro, struct hx_err *e)
{
    const char *p = s;
    if (*p == '$')
        p++;
    uint64_t whole = 0, frac = 0;
    int nd = 0, nf = 0;
    for (; *p >= '0' && *p <= '9'; p++, nd++) {
        if (whole > 1000000)
            return hx_fail(e, EINVAL, "price \"%s\" is too large (at most $1000000)", s);
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++, nf++) {
            if (nf == 6)
                return hx_fail(e, EINVAL, "price \"%s\": at most 6 decimals (a micro-dollar)", s);
            frac = frac * 10 + (uint64_t)(*p - '0');
        }
    if (*p || (nd == 0 && nf == 0))
        return hx_fail(e, EINVAL, "invalid price \"%s\" (dollars, e.g. 0.05)", s);
    for (int i = nf; i < 6; i++)
        frac *= 10;
    *micro = whole * 1000000 + frac;
    return 0;
}
