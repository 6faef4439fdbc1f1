/* Honest resource views (views.c): hutchd's own lxcfs, started and
 * supervised here, whose per-sandbox /proc files hutch-init binds over
 * /proc/meminfo, cpuinfo, stat, uptime, loadavg, swaps and diskstats; and
 * the CPUs a sandbox's affinity names, as many as its CPU quota. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>
#include "lib/err.h"

/* Called on the loop whenever what sandboxes should see changed: lxcfs
 * began serving, or died (then views_dir() is NULL). */
typedef void (*views_changed_cb)(void *ud);

/* Starts lxcfs (binary BIN, "" = off) on MNT (a directory hutchd owns),
 * replacing a stale instance of an earlier hutchd; waits for it briefly.
 * A missing binary is logged once and leaves the kernel's views. */
void views_start(uv_loop_t *loop, const char *bin, const char *mnt, views_changed_cb cb, void *ud);
/* The lxcfs mount while it serves, else NULL (sandboxes get the kernel's views). */
const char *views_dir(void);
/* Bumped at every change: a sandbox whose views were set at another
 * generation needs views_apply(). */
uint64_t views_generation(void);
/* lxcfs's pid while it runs, else 0 (tests, logs). */
pid_t views_pid(void);
/* Stops lxcfs and removes its mount (hutchd's exit). */
void views_stop(void);

/* Blocking (a worker thread): inside the mount namespace of the process
 * PIDFD refers to (a sandbox's PID 1, set up), removes hutch's binds over
 * the view files, then binds DIR's (NULL: none, the kernel's own files). */
int views_apply(int pidfd, const char *dir, struct hx_err *e);

/* For a new sandbox, on a launch worker: tree[i] a detached, read-only
 * clone of lxcfs's view file HX_VIEW_FILES[i] (each hutch-init moves its
 * own over /proc), made from fds opened once per lxcfs instance, so that
 * no create looks the files up through lxcfs (each lookup makes lxcfs read
 * the host's whole /proc file for its size: /proc/diskstats lists every
 * block device of the host). *gen is the lxcfs generation they show; all -1
 * and *gen 0 when no lxcfs serves, or on failure (then a negative errno). */
int views_clone_trees(int tree[], uint64_t *gen, struct hx_err *e);

/* The "cpus" list for HX_SETUP: CPU_MILLIS/1000 CPUs (rounded up) of
 * hutchd's own affinity, rotating so that sandboxes spread over the
 * machine; NULL when the quota covers every CPU. */
json_t *views_pick_cpus(uint32_t cpu_millis);
/* "0,3": the same list for cgroup v1's cpuset.cpus (malloc'd; NULL for none). */
char *views_cpus_list(json_t *cpus);
