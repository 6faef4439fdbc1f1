/* Scheduling of hutch's control path: hutchd's event loop and each
 * sandbox's agent ask the kernel for a short EEVDF slice, so that their
 * wake-ups run ahead of a sandbox's busy loops (docs/performance/fairness.md, "CPU
 * fairness"). */
#pragma once
#include <stdint.h>
#include <sys/types.h>
#include "lib/err.h"

/* Gives thread/process PID (0 = the caller's thread) the slice SLICE_US
 * (µs; Linux >= 6.12 honours 100..100000, older kernels ignore it) under
 * SCHED_OTHER at nice 0, with SCHED_FLAG_RESET_ON_FORK: whatever it forks
 * or clones afterwards starts at the kernel's default slice (user
 * processes never inherit it). SLICE_US 0 puts the default back. */
int sched_control_slice(pid_t pid, uint32_t slice_us, struct hx_err *e);
