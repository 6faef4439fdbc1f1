/* The confined helper processes hutchd starts: hutch-proxy, hutch-ingress
 * (one each, restarted after a crash) and hutch-ssh (one per connection).
 * Each gets its control channel as fd 3, a socketpair carrying lib/wire.h
 * frames, and is treated as untrusted: what it sends is bounded here and
 * checked by its owner (net, ingress, ssh). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "lib/err.h"
#include "lib/wire.h"

/* Where the binary NAME is: next to hutchd (installed side by side), in the
 * build tree (SELF_DIR/../DIR/NAME), or in SELF_DIR/../libexec/hutch. */
int helper_find(const char *self_dir, const char *dir, const char *name, char *out, size_t cap, struct hx_err *e);

/* Starts args[0] with args, an empty environment but PATH, stdin closed,
 * stdout and stderr to hutchd's log (log_child_fd), fd 3 a control socket,
 * and fds[0..n_fds) as fds 4, 5, ...; nothing else is inherited. On success
 * *ctl is hutchd's end of the control socket (the caller's to close) and proc
 * is live (on_exit will run). Returns 0 or a negative uv error; as after a
 * failed uv_spawn, the caller still closes proc then. */
int helper_spawn(uv_loop_t *loop, uv_process_t *proc, uv_exit_cb on_exit, char **args, const int *fds, int n_fds,
                 int *ctl);

/* One frame on a control pipe, with fd (>= 0, owned; it needs an ipc pipe)
 * passed alongside; the payload is zeroed once written (config and policies
 * carry keys and secret values). Nothing is sent, and fd is closed, when the
 * pipe could not take it. */
void helper_send_frame(uv_pipe_t *ctl, uint16_t type, uint32_t chan, const void *data, size_t len, int fd);

/* A long-lived helper, started again (at most once a second) whenever it
 * exits until helper_stop. */
struct helper {
    /* the owner's, set before helper_start */
    const char *name;               /* "hutch-proxy": for log lines */
    uv_loop_t *loop;
    char **args;                    /* argv, args[0] the binary; read at each start */
    const int *fds;                 /* more descriptors for it, kept open by the owner */
    int n_fds;
    bool ipc;                       /* its control pipe may carry descriptors to it */
    /* Runs once its control channel is open, before any frame is read: send
     * it its configuration and state. */
    void (*on_start)(struct helper *h);
    /* Each whole frame it sends. Returns false once the helper was killed
     * (helper_kill): the rest of the read is dropped. */
    bool (*on_frame)(struct helper *h, const struct hx_frame *f);
    void *data;
    /* the helper's own */
    bool on, stopping, alive, ctl_open;
    uv_process_t proc;
    uv_pipe_t ctl;
    uv_timer_t restart;
    int64_t last_start;
    struct hx_frame_rd rd;
};

/* Starts it (and from now on keeps it running). Fails when even the first
 * start fails; a helper that started and then died is restarted instead. */
int helper_start(struct helper *h, struct hx_err *e);
/* It misbehaved: the log says why, its channel is cut, it is killed and
 * then started again. */
void helper_kill(struct helper *h, const char *why);
/* A helper that exits from now on stays down (hutchd is shutting down). */
void helper_stopping(struct helper *h);
/* Asks it to exit (SIGTERM) and starts it no more. */
void helper_stop(struct helper *h);
/* One frame to it; see helper_send_frame. Dropped while it is down. */
void helper_send(struct helper *h, uint16_t type, uint32_t chan, const void *data, size_t len, int fd);
