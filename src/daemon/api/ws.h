/* WebSocket (RFC 6455, server side, wslay) over an upgraded hutchd HTTP connection: text
 * messages in and out, the SDK's "ping"/"pong" keep-alive, and output backpressure. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "daemon/api/http.h"

#define WS_IDLE_MS 60000u                   /* a peer silent this long is gone (clients ping every 2 s) */
#define WS_MAX_FRAGMENTS 1024u             /* frames in one received message (close 1009 beyond) */
#define WS_MAX_MESSAGE (16u * 1024 * 1024)  /* bytes in one received message (close 1009 beyond) */
#define WS_LOW_WATER   (256u * 1024)        /* on_drain when queued output falls below this ... */
#define WS_HIGH_WATER  (1024u * 1024)       /* ... after having been above this */

struct ws_handlers {
    /* A complete text message; data is NOT NUL-terminated (use json_loadb) and valid during the call. */
    void (*on_text)(struct ws_conn *w, const char *data, size_t len, void *ud);
    void (*on_close)(struct ws_conn *w, void *ud);  /* peer closed or error; w is freed right after this returns */
    void (*on_drain)(struct ws_conn *w, void *ud);  /* queued output fell below WS_LOW_WATER */
    /* A complete binary message (hutch's own stream frames, docs/protocol.md "Binary streams"), valid
     * during the call; NULL: binary messages close the connection with 1003. */
    void (*on_binary)(struct ws_conn *w, const uint8_t *data, size_t len, void *ud);
};

/* Completes the handshake (101) with extra response headers (e.g. "x-deno-sandbox-id: sbx_...\r\n").
 * Counts as the response to the request. Returns NULL if the request was not a valid upgrade (then a
 * 400 was sent) or the client is gone (the conn is released); on_close is not called then. */
struct ws_conn *http_upgrade_websocket(struct http_conn *c, const char *extra_headers,
                                       const struct ws_handlers *h, void *ud);
int ws_send_text(struct ws_conn *w, const char *data, size_t len);
/* One binary message: head (hl bytes) then data (len bytes), copied; -EPIPE if closing. */
int ws_send_binary(struct ws_conn *w, const uint8_t *head, size_t hl, const uint8_t *data, size_t len);
/* Closes connections silent this long (0: never); default WS_IDLE_MS. */
void ws_set_idle_timeout(uint64_t ms);  /* copies; -EPIPE if closing */
size_t ws_queued_bytes(const struct ws_conn *w);   /* bytes accepted but not yet written to the socket */
/* Backpressure from the app: stop/resume reading the socket. Messages already buffered from the
 * current read (a few KiB at most) may still be delivered after a stop. */
void ws_set_reading(struct ws_conn *w, bool on);
/* Sends a close frame (code 0: none; reason cut to 122 bytes), then closes; on_close follows. */
void ws_close(struct ws_conn *w, uint16_t code, const char *reason);
/* Bytes all WebSockets received and sent so far (for metrics). */
void ws_byte_counts(uint64_t *in, uint64_t *out);
void ws_set_userdata(struct ws_conn *w, void *ud);
/* Lowers this connection's limit on a received data message (default WS_MAX_MESSAGE; 1009 beyond). */
void ws_set_max_message(struct ws_conn *w, size_t max);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + RFC 6455 GUID)), 28 chars + NUL. */
void ws_accept_key(const char *key, char out[29]);
/* The checks behind http_request.websocket, except the HTTP version. */
bool ws_request_valid(const struct http_request *r);

/* ---- called by http.c only ---- */
void ws_conn_data(struct ws_conn *w, const uint8_t *p, size_t n);   /* bytes from the socket */
bool ws_conn_wants_read(const struct ws_conn *w);
void ws_conn_closed(struct ws_conn *w);                             /* socket closed: on_close, free */
