/* JSON-RPC session layer: one struct session per client WebSocket. */
#pragma once
#include <stddef.h>
#include "daemon/core/sandbox.h"

void rpc_on_text(struct session *s, const char *data, size_t len);
void rpc_on_drain(struct session *s);
/* Detaches from the sandbox and frees the session (the ws is gone). */
void rpc_session_free(struct session *s);
int rpc_signal_number(const char *name);
/* Bytes for the session's inbound stream id (as $sandbox.stream.enqueue
 * carries them, without the base64): a sink session's stdin. */
void rpc_session_input(struct session *s, int64_t stream_id, const uint8_t *data, size_t n);

/* A JSON-RPC method: params is an object (never NULL); the handler answers
 * exactly once, now or later, with rpc_reply_* below. */
struct rpc_method {
    const char *name;
    void (*handler)(struct session *s, json_t *id, json_t *params);
};
const struct rpc_method *rpc_lookup(const char *name);
extern const struct rpc_method rpc_fs_methods[];   /* rpc_fs.c, NULL-terminated */

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
