/* Exposing sandbox ports (issue 8): the SDK's POST /expose/http and its
 * exposeHttp RPC, the exposure registry, and the upstream sockets the
 * ingress asks for. docs/expose.md. */
#pragma once
#include "daemon/core/rpc.h"

struct http_conn;
struct http_request;

/* POST /api/v3/sandbox/{id}/expose/{http,ssh,vscode}; rest is what follows "/expose". */
/* token_id: who asked (the audit log's "who"). */
void expose_handle_rest(struct http_conn *c, const struct http_request *req, struct sandbox *sb, const char *rest,
                        const char *token_id);
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

/* Live restore (core/restore.c): the sandbox's live exposures as
 * [{name, port, target_port, target_pid}] (new reference) to keep, and
 * their re-creation for an adopted sandbox (same names, same ports; each
 * entry validated, one that cannot be made again is logged and skipped). */
json_t *expose_sandbox_saved(const char *sandbox_id);
void expose_sandbox_restore(struct sandbox *sb, json_t *saved);
/* Apps (core/deploy.c): a route at a stable name whose sandbox is chosen at
 * each connect by fn(key, req), which answers with expose_dial or
 * expose_refuse (now or later: a woken app). name: in, a stored name to keep
 * (IG_NAME_LEN characters), or "" for a new one (out). label names the app
 * in the ingress's error pages. */
typedef void (*expose_app_connect_fn)(const char *key, uint32_t req);
void expose_app_set_connect(expose_app_connect_fn fn);
int expose_app_route(char name[27], const char *key, const char *label, char *domain, size_t dsz, struct hx_err *e);
void expose_app_unroute(const char *name);
void expose_dial(struct sandbox *sb, int port, uint32_t req);
void expose_refuse(uint32_t req, int err);

/* A socket inside the sandbox's network namespace connected to
 * 127.0.0.1:port there (then [::1]:port): done gets tag and the fd (owned)
 * or -1 and an errno; it runs now or later, exactly once. */
typedef void (*expose_dial_cb)(uint64_t tag, int fd, int err);
void expose_dial_tagged(struct sandbox *sb, int port, uint64_t tag, expose_dial_cb done);

/* expose_ssh.c: POST /expose/ssh → {hostname, username, port, hostKey}. */
void expose_ssh(struct http_conn *c, struct sandbox *sb, const char *token_id);
/* The sandbox stopped: its SSH login name and connections end. */
void expose_ssh_sandbox_stopped(struct sandbox *sb);
/* Live restore: the sandbox's login name (NULL: none), kept in its row; and
 * the same name given back to an adopted sandbox (validated; the SSH port is
 * opened as at the first expose/ssh; logged and skipped when it cannot be). */
const char *expose_ssh_login(const char *sandbox_id);
void expose_ssh_restore(struct sandbox *sb, const char *user);
