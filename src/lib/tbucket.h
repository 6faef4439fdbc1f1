/* A token bucket: at most `burst` events at once, refilled at `per_sec`
 * events a second. Pure arithmetic on a caller's millisecond clock, so the
 * rate limits it backs (log lines per sandbox) can be tested without time. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

struct hx_tbucket {
    uint32_t burst, per_sec;
    uint64_t milli_tokens;     /* tokens x 1000: a refill of 1/s still counts every millisecond */
    int64_t last_ms;
    bool started;
};

void hx_tb_init(struct hx_tbucket *b, uint32_t burst, uint32_t per_sec);
/* Takes one token at time now_ms (monotonic); false when the bucket is empty. */
bool hx_tb_take(struct hx_tbucket *b, int64_t now_ms);
