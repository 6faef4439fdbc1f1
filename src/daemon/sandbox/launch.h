/* Host side of sandbox start-up: a sealed memfd holding hutch-init, the
 * sandbox's user namespace, and the clone3() of PID 1 (docs/agent-protocol.md). */
#pragma once
#include <stdint.h>
#include <sys/types.h>
#include "lib/err.h"

struct launch_spec {
    const char *id;        /* sandbox id, for messages only */
    uint32_t uid_base;     /* first host uid/gid of the sandbox's range (maps to 0 inside) */
    uint32_t uid_count;    /* size of the range (65536) */
    int init_memfd;        /* from sandbox_init_memfd(), shared by every launch */
    int restore_fd;        /* live restore: a bound unix socket, fd 6 of hutch-init (it listens); -1 = none */
    int root_tree_fd;      /* a snapshot root: a detached mount, fd 7 of hutch-init (it moves it into place); -1 = none */
    const int *view_trees; /* views: HX_VIEW_N detached mounts, fds 8.. of hutch-init (views_clone_trees); NULL = none */
};

/* Copies the hutch-init binary into a sealed, executable memfd (once, at
 * daemon start). Returns the fd (O_CLOEXEC) or a negative errno. */
int sandbox_init_memfd(const char *init_path, struct hx_err *e);

/* Creates the user namespace, then clone3()s hutch-init as real root in new
 * pid/mount/net/ipc/uts namespaces. On success *agent_fd is the daemon's end
 * of the agent socket (O_CLOEXEC, blocking), *pid the host pid of PID 1 and
 * *pidfd a pidfd for it (O_CLOEXEC). The child is an ordinary child of the
 * caller (exit signal SIGCHLD): the caller reaps it. Blocking, a few ms. */
int sandbox_launch(const struct launch_spec *s, int *agent_fd, pid_t *pid, int *pidfd, struct hx_err *e);
