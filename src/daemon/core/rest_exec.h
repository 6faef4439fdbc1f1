/* hutch's raw exec channel: GET /hutch/v1/sandboxes/{id}/exec?cmd=..., a WebSocket with the
 * subprotocol hutch-exec.v1 (docs/protocol.md "Raw exec channel"). */
#pragma once
struct http_conn;
struct http_request;
struct sandbox;
#define REST_EXEC_SUBPROTOCOL "hutch-exec.v1"
/* The route, once the caller was authenticated and owns sb. */
void rest_exec_handle(struct http_conn *c, const struct http_request *req, struct sandbox *sb, const char *token_id);
