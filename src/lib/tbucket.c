/* Token bucket arithmetic (see tbucket.h). */
#include "lib/tbucket.h"

void hx_tb_init(struct hx_tbucket *b, uint32_t burst, uint32_t per_sec)
{
    *b = (struct hx_tbucket){.burst = burst, .per_sec = per_sec, .milli_tokens = (uint64_t)burst * 1000};
}

bool hx_tb_take(struct hx_tbucket *b, int64_t now_ms)
{
    if (!b->started) {
        b->started = true;
        b->last_ms = now_ms;
    }
    if (now_ms > b->last_ms) { /* a clock going backwards refills nothing */
        /* 1 ms at per_sec tokens/s is per_sec milli-tokens; milli_tokens <= cap always */
        uint64_t cap = (uint64_t)b->burst * 1000, room = cap - b->milli_tokens;
        uint64_t dt = (uint64_t)(now_ms - b->last_ms);
        if (b->per_sec && dt > room / b->per_sec)
            b->milli_tokens = cap;
        else
            b->milli_tokens += dt * b->per_sec; /* <= room: no overflow */
        b->last_ms = now_ms;
    }
    if (b->milli_tokens < 1000)
        return false;
    b->milli_tokens -= 1000;
    return true;
}
