/* Per-sandbox cgroups: memory (with OOM accounting), CPU quota, pids, on
 * cgroup v2 or on v1 controllers (hybrid hosts, like these machines). */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "lib/err.h"

struct cgroup_limits {
    uint64_t memory_bytes;
    uint32_t cpu_millis;   /* 1000 = one CPU */
    uint32_t pids_max;
    const char *cpus;      /* v1 cpuset.cpus ("0,3"), NULL = as before (at creation: the parent's) */
};

/* Detects the hierarchy and creates the parent directory NAME under every
 * controller hutch uses. */
int cgroup_init(const char *name, struct hx_err *e);
bool cgroup_is_v2(void);
int cgroup_create(const char *id, const struct cgroup_limits *l, struct hx_err *e);
int cgroup_attach(const char *id, pid_t pid, struct hx_err *e);

/* v1: the way back for a thread cgroup_enter moved: the `tasks` file of
 * each hierarchy's cgroup it was in, open (-1: none). */
#define CGROUP_V1_MAX 6
struct cgroup_home {
    int tasks[CGROUP_V1_MAX];
};
/* v1 only: moves the calling thread (not its process) into sandbox ID's
 * cgroups, so that a child it clones starts in them: a thread moving itself
 * (`0` into `tasks`) needs none of the global lock whose RCU grace period
 * makes a cgroup_attach of another process wait ~10 ms (docs/performance/create.md).
 * -ENOTSUP on v2 (use cgroup_attach); on any failure the thread is back home. */
int cgroup_enter(const char *id, struct cgroup_home *home, struct hx_err *e);
/* Moves the thread back where cgroup_enter found it; closes home's fds. */
int cgroup_leave(struct cgroup_home *home, struct hx_err *e);
/* v1: the `tasks` files of the agents' cpu cgroup (NAME-agents) and
 * of sandbox ID's (where its processes run); -ENOTSUP on v2 (the agent then
 * stays in its sandbox's cgroup). */
int cgroup_agent_cpu_paths(const char *id, char *agent, size_t acap, char *user, size_t ucap);
/* v1: moves hutchd's process (every thread; helpers it starts later
 * inherit it) into a cpu cgroup of its own, NAME-daemon beside NAME, with
 * `shares`; -ENOTSUP on v2 or without a whole cpu hierarchy (a service
 * manager's CPUWeight= is the way there). */
int cgroup_daemon_enter(uint32_t shares, struct hx_err *e);
/* Moves it back where cgroup_daemon_enter found it and removes NAME-daemon
 * (call once hutchd's helpers have exited). */
void cgroup_daemon_leave(void);
/* Number of OOM kills in the sandbox's memory cgroup so far. */
int cgroup_oom_kills(const char *id, uint64_t *n);
/* Usage: memory now/peak bytes, CPU ns. Missing values are 0. */
int cgroup_usage(const char *id, uint64_t *mem_bytes, uint64_t *mem_peak, uint64_t *cpu_ns);
/* Kills whatever is left in the sandbox's cgroups and removes them.
 * Returns -EBUSY while processes are still exiting (retry later). */
int cgroup_destroy(const char *id, struct hx_err *e);
/* Calls cb for every sandbox cgroup directory found under NAME (stale ones after a crash). */
/* Removes the (empty) parent directories made by cgroup_init. */
void cgroup_fini(void);
int cgroup_each(void (*cb)(const char *id, void *ud), void *ud);
