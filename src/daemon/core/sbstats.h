/* Live resource samples of running sandboxes (the dashboard's CPU and memory plots): one timer reads
 * every running sandbox's cgroup each interval into a bounded ring per sandbox. */
#pragma once
#include <jansson.h>
#include <stdint.h>
#include <uv.h>

struct sandbox;

#define SBSTATS_SAMPLES_MAX 100000u   /* --stats-samples ceiling: 24 bytes each, per sandbox */

/* interval_ms 0: no sampling (the stats endpoints answer with no samples). samples: ring size. */
void sbstats_start(uv_loop_t *loop, uint32_t interval_ms, uint32_t samples);
void sbstats_stop(void);
/* Takes one sample of sb now (also called by the timer). */
void sbstats_sample(struct sandbox *sb);
/* {id, intervalMs, capacity, memoryLimitBytes, cpuLimitMillis, samples: [{t, cpuUs, memBytes, cpuMillis}]}
 * oldest first, samples newer than since_ms only (0: all). cpuMillis: CPU used per second of wall time
 * since the previous sample, in thousandths of a CPU (null for the first one kept). */
json_t *sbstats_json(const struct sandbox *sb, int64_t since_ms);
/* The newest sample as {id, t, cpuUs, memBytes, cpuMillis, memoryLimitBytes}, or NULL when none yet. */
json_t *sbstats_latest_json(const struct sandbox *sb);
void sbstats_free(struct sandbox *sb);
