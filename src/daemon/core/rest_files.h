/* hutch's raw file channel: GET/PUT /hutch/v1/sandboxes/{id}/files?path=P
 * (docs/protocol.md "Raw file transfers"). */
#pragma once
#include <stdbool.h>
struct http_conn;
struct http_request;
struct sandbox;
/* For http_server_set_raw_body: an upload's body is left unread for the route. */
bool rest_files_raw_body(const char *method, const char *url);
/* The route, once the caller was authenticated and owns sb. */
void rest_files_handle(struct http_conn *c, const struct http_request *req, struct sandbox *sb);
