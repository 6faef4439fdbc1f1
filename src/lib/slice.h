/* EEVDF custom slices (Linux >= 6.12): sched_setattr under SCHED_OTHER with
 * sched_runtime, the slice a thread asks for (docs/performance/fairness.md).
 * A system call and nothing else: safe in a CLONE_VM | CLONE_VFORK child. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Gives thread PID (0 = the caller) the slice SLICE_US (µs; the kernel
 * honours 100..100000, kernels before 6.12 accept and ignore it) under
 * SCHED_OTHER at nice 0; SLICE_US 0 puts the kernel's default back.
 * RESET_ON_FORK: whatever the thread forks or clones afterwards starts at the
 * default; without it, they inherit the slice. 0 or -errno. */
int hx_sched_slice(pid_t pid, uint32_t slice_us, bool reset_on_fork);
