/* HTTP routing: the request callback handed to the HTTP server. */
#pragma once
struct http_conn;
struct http_request;
void routes_on_request(struct http_conn *c, const struct http_request *req, void *ud);
