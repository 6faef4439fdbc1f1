/* The SSH front door on hutchd's side (docs/ssh.md): the listening port,
 * the persistent host key, one hutch-ssh process per connection (started,
 * bounded, timed out, killed here), per-source rate limits on failed
 * logins, and the control channel to each hutch-ssh. What a login name
 * means and what a channel may reach is the core's business, through ops. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "lib/err.h"

struct sshd_ops {
    /* Is `user` a valid login? Fills sandbox (the sandbox it belongs to) and returns 0, or -ENOENT. */
    int (*auth)(const char *user, char sandbox[32]);
    /* A process channel {"kind","command","pty"} of connection conn in sandbox: answer exactly
     * once with sshd_opened or sshd_failed (now or later). */
    void (*open)(uint64_t conn, uint32_t chan, const char *sandbox, json_t *req);
    /* ssh -L to host:port: the same answer. */
    void (*forward)(uint64_t conn, uint32_t chan, const char *sandbox, const char *host, int port);
};

/* Idempotent: host key, listener. -errno when SSH is off or cannot listen. */
int sshd_start(const struct sshd_ops *ops, struct hx_err *e);
void sshd_fini(void);
/* The public host key, "ssh-ed25519 AAAA..." (after sshd_start), and where clients connect. */
const char *sshd_host_key(void);
const char *sshd_host_name(void);
int sshd_port(void);

/* Answers to ops->open / ops->forward: fd is owned from here (sent, then closed). */
void sshd_opened(uint64_t conn, uint32_t chan, int fd);
void sshd_failed(uint64_t conn, uint32_t chan, int err, const char *why);
/* The sandbox stopped: its SSH connections end now. */
void sshd_sandbox_gone(const char *sandbox);
/* Connections (authenticated) to a sandbox right now. */
unsigned sshd_sandbox_conns(const char *sandbox);
