/* The /proc files that hutchd's lxcfs serves per sandbox: hutchd and
 * hutch-init agree on this list (docs/security.md, "resource views"). */
#pragma once

/* Each is <lxcfs mount>/proc/NAME bound read-only over /proc/NAME. */
#define HX_VIEW_FILES {"meminfo", "cpuinfo", "stat", "uptime", "loadavg", "swaps", "diskstats"}
#define HX_VIEW_N 7
/* Most CPUs a setup message may name (the kernel's CPU_SETSIZE). */
#define HX_VIEW_CPUS_MAX 1024
