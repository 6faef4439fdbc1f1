/* Exposing sandbox ports (issue 8): the SDK's POST /expose/http and its
 * exposeHttp RPC, the exposure registry, and the upstream sockets the
 * ingress asks for. docs/expose.md. */
#pragma once
#include "daemon/core/rpc.h"

struct http_conn;
struct http_request;

/* POST /api/v3/sandbox/{id}/expose/{http,ssh,vscode}; rest is what follows "/expose". */
void expose_handle_rest(struct http_conn *c, const struct http_request *req, struct sandbox *sb, const char *rest);
/* GET /hutch/v1/ingress/ca.crt: the ingress CA (PEM) for clients to trust. */
void expose_handle_ca(struct http_conn *c);
/* exposeHttp, NULL-terminated */
extern const struct rpc_method expose_rpc_methods[];
/* The sandbox is stopping: its exposures end now: 404 for 10 minutes, then
 * their ports close. */
void expose_sandbox_stopped(struct sandbox *sb);

/* expose_pid.c: the TCP port process `pid` (as the sandbox numbers it)
 * listens on, found through /proc from the host side; -ENOENT when it
 * listens on none (yet), -ESRCH when there is no such process. */
int expose_pid_port(struct sandbox *sb, int pid);

/* A socket inside the sandbox's network namespace connected to
 * 127.0.0.1:port there (then [::1]:port): done gets tag and the fd (owned)
 * or -1 and an errno; it runs now or later, exactly once. */
typedef void (*expose_dial_cb)(uint64_t tag, int fd, int err);
void expose_dial(struct sandbox *sb, int port, uint64_t tag, expose_dial_cb done);

/* expose_ssh.c: POST /expose/ssh → {hostname, username, port, hostKey}. */
void expose_ssh(struct http_conn *c, struct sandbox *sb);
/* The sandbox stopped: its SSH login name and connections end. */
void expose_ssh_sandbox_stopped(struct sandbox *sb);
