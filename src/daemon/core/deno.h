/* The Deno runtime in every sandbox (issue 10.1, docs/deno.md): the SDK's
 * spawnDeno, denoHttpWait, spawnDenoRepl and denoRepl{Eval,Call,Close}, the
 * watcher's restart notifications, and DenoProcess.fetch's target port. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "daemon/core/rpc.h"

#define DENO_BIN "/usr/local/bin/deno"          /* in the builtin image (scripts/build-image.sh) */
#define DENO_CODE_MAX (8u << 20)                /* bytes of code in one spawnDeno / eval / call */

extern const struct rpc_method deno_rpc_methods[]; /* NULL-terminated */

/* Hooks rpc.c calls. */
void deno_on_exit(struct sandbox *sb, uint32_t pid);          /* a process exited */
void deno_on_stderr(struct sandbox *sb, struct proc *p, const uint8_t *d, size_t n); /* p->deno_watch */
void deno_session_closed(struct session *s);
/* lifecycle.c: the sandbox is stopping: its REPL channels and listener close. */
void deno_sandbox_stopped(struct sandbox *sb);

/* rpc_net.c (DenoProcess.fetch): the TCP port Deno process `pid` of this
 * sandbox listens on; -ENOENT when it listens on none (yet), -ESRCH when
 * pid is not a live Deno process that spawnDeno/spawnDenoRepl started. */
int deno_http_port(struct sandbox *sb, uint32_t pid);

/* deno_repl.c: the REPL channel (hutchd's listener on the sandbox's loopback,
 * the driver's connection, one JSON object per line). */
struct deno_repl;
/* A new REPL for pid-to-be: its token (32 hex digits + NUL) and the port the
 * driver connects to. */
struct deno_repl *deno_repl_new(struct sandbox *sb, char token[33], uint16_t *port, struct hx_err *e);
/* false: the sandbox stopped while the REPL was spawning (then end it). */
bool deno_repl_set_pid(struct deno_repl *r, uint32_t pid);
/* Sends {"id", "op", ...} (members of req, stolen) once the driver is there;
 * the answer goes to (s, rpc_id). */
void deno_repl_request(struct deno_repl *r, struct session *s, json_t *rpc_id, json_t *req);
/* The process exited or the REPL was closed: every call waiting is answered
 * with that reason, the channel closes and r is freed. */
void deno_repl_end(struct deno_repl *r, const char *code, const char *why);
void deno_repl_session_closed(struct deno_repl *r, struct session *s);
void deno_repl_sandbox_stopped(struct sandbox *sb);
