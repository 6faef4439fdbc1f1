/* JSON-RPC session layer: one struct session per client WebSocket. */
#pragma once
#include <stddef.h>
#include "daemon/core/sandbox.h"

void rpc_on_text(struct session *s, const char *data, size_t len);
/* hutch's binary stream messages (docs/protocol.md "Binary streams"): a client that sends
 * `x-hutch-streams: binary` with its upgrade gets it back, and then stream bytes travel as
 * binary WebSocket messages of an 8-byte big-endian stream id followed by the bytes. */
#define RPC_STREAMS_HEADER "x-hutch-streams"
#define RPC_BIN_HEAD 8u
void rpc_on_binary(struct session *s, const uint8_t *data, size_t len);
/* Stream bytes to the client: a binary message when negotiated, else $sandbox.stream.enqueue
 * with base64. -EPIPE when the client is gone. */
int rpc_send_stream_data(struct session *s, uint64_t stream_id, const uint8_t *data, size_t len);
void rpc_on_drain(struct session *s);
/* Detaches from the sandbox and frees the session (the ws is gone). */
void rpc_session_free(struct session *s);
int rpc_signal_number(const char *name);
/* Bytes for the session's inbound stream id (as $sandbox.stream.enqueue
 * carries them, without the base64): a sink session's stdin. */
void rpc_session_input(struct session *s, int64_t stream_id, const uint8_t *data, size_t n);
/* A call (id > 0) or a notification (id 0) on a sink session, as its
 * client would send it; params is taken. Nothing happens once the session
 * has no sandbox. */
void rpc_session_call(struct session *s, int64_t id, const char *method, json_t *params);

/* A JSON-RPC method: params is an object (never NULL); the handler answers
 * exactly once, now or later, with rpc_reply_* below. */
struct rpc_method {
    const char *name;
    void (*handler)(struct session *s, json_t *id, json_t *params);
};
const struct rpc_method *rpc_lookup(const char *name);
extern const struct rpc_method rpc_fs_methods[];   /* rpc_fs.c, NULL-terminated */

/* Spawning (rpc.c), shared by spawn, spawnDeno and spawnDenoRepl. */
struct rpc_spawn_req {
    json_t *env;                  /* borrowed from params: an object of strings, or NULL */
    json_t *cwd;                  /* borrowed: a string, or NULL */
    bool clear_env;
    int64_t stdin_stream;         /* the client's stdinStreamId, -1 = none */
    bool out[2];                  /* stdout/stderr streamed to the client */
    bool pipe[2];                 /* piped at the agent (out, or read by hutchd itself) */
};
/* Validates env, clearEnv, cwd, stdinStreamId, stdout, stderr; answers the
 * request with the error and returns false when one is bad. */
bool rpc_spawn_parse(struct session *s, json_t *id, json_t *params, const char *what, struct rpc_spawn_req *r);
/* Answers the client itself with what spawn would have sent
 * ({"ok": {pid, stdoutStreamId, stderrStreamId}} or {"error": ...}; result is
 * its to free, pid 0 on error; s NULL if the client left). */
typedef void (*rpc_spawned_cb)(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *result, uint32_t pid,
                               void *ud);
struct rpc_spawn_hooks {
    json_t *extra;                /* stolen: members added to the {pid, stdoutStreamId, stderrStreamId} answer */
    /* the process exists (before the client hears of it) */
    void (*started)(struct sandbox *sb, struct proc *p, void *ud);
    /* no process, and the request was answered with the error: before the
     * agent was asked (always), or by the agent when there is no answer hook */
    void (*failed)(void *ud);
    rpc_spawned_cb answer;        /* NULL: the client gets spawn's answer (vscode.c answers later itself) */
    void *ud;
};
/* Asks the agent to spawn (ap: its "spawn" params, stolen) and answers the
 * request as the SDK's spawn does. hooks may be NULL. */
void rpc_spawn_start(struct session *s, json_t *id, json_t *ap, const struct rpc_spawn_req *r,
                     const struct rpc_spawn_hooks *hooks);

/* VS Code (vscode.c): the `vscode` method and the hooks rpc.c calls. */
extern const struct rpc_method vscode_rpc_methods[];                        /* NULL-terminated */
void vscode_on_stderr(struct sandbox *sb, uint32_t pid, const uint8_t *p, size_t n);
void vscode_session_closed(struct session *s);

/* Answers for handlers. */
void rpc_send_json(struct session *s, json_t *msg /* stolen */);
void rpc_reply_result(struct session *s, json_t *id, json_t *result /* stolen; {"ok":..} or {"error":..} */);
json_t *rpc_app_error(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The result of a request the client cancelled with the `abort` RPC: the SDK
 * revives it as a DOMException named AbortError, as an aborted fetch() is. */
json_t *rpc_abort_error(void);
json_t *rpc_abort_error_object(void); /* its inner object, for a stream's error */
/* The abortId a request carries ({"abortId": N}, set when the caller passed
 * an AbortSignal), or -1. */
int64_t rpc_abort_id(json_t *params);
void rpc_reply_rpc_error(struct session *s, json_t *id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void rpc_notify(struct session *s, const char *method, json_t *params /* stolen */);
/* Agent reply {"ok"} / {"error": {code, message}} (or NULL: sandbox gone) → SDK result. */
json_t *rpc_translate_reply(json_t *reply);

/* Files (rpc_fs.c). Hooks rpc.c calls: */
void rpc_fs_on_drain(struct session *s);                           /* the client's socket drained */
void rpc_fs_stream_cancel(struct session *s, int64_t stream_id);   /* $sandbox.stream.cancel */
void rpc_fs_session_closed(struct session *s);                     /* before the session detaches */
bool rpc_fs_abort(struct session *s, int64_t abort_id);            /* `abort`: true if it was a file transfer */
/* agent.c: HX_FS_DATA from the sandbox (hostile bytes). */
void rpc_fs_on_data(struct sandbox *sb, uint32_t chan, const uint8_t *p, size_t n);
/* rpc.c: binds the client's upload stream (held bytes and all) to an agent
 * fs channel, like stdin to a pid; false when the stream cannot be used. */
bool rpc_inbound_bind_chan(struct session *s, int64_t client_id, uint32_t chan);
/* rpc.c: the client's upload stream for an fs channel failed ($sandbox.stream.error
 * or the client left before .end): the write is cancelled and, while the client
 * is still there, answered with an error instead of success. */
void rpc_fs_upload_failed(struct sandbox *sb, uint32_t chan, int why);
/* rpc_fs.c: writes a new file (createNew, mode 0600) as `app` through the fs
 * worker, for hutchd's own use (spawnDeno's code); cb gets the worker's reply. */
int rpc_fs_put(struct session *s, json_t *rpc_id, const char *path, const void *data, size_t n, agent_reply_cb cb,
               void *ud);

/* Network (rpc_net.c): sandbox.fetch from the sandbox's network position.
 * Request bodies are inbound streams bound (rpc_inbound_bind_chan) to a
 * channel >= RPC_NET_CHAN_BASE; rpc.c hands their bytes to rpc_net_on_body
 * instead of the agent (end 1: the stream ended, -1: it failed). */
#define RPC_NET_CHAN_BASE 0xC0000000u
extern const struct rpc_method rpc_net_methods[];   /* NULL-terminated */
void rpc_net_on_body(struct session *s, uint32_t chan, const uint8_t *p, size_t n, int end);
void rpc_net_on_drain(struct session *s);
void rpc_net_stream_cancel(struct session *s, int64_t stream_id);
void rpc_net_session_closed(struct session *s);
bool rpc_net_abort(struct session *s, int64_t abort_id);           /* `abort`: true if it was a fetch */

/* agent.c: a session's count of calls waiting for the agent changed (it may
 * stop or start reading its client). */
void rpc_session_calls_changed(struct session *s);
