/* HTTP routing: the request callback handed to the HTTP server. */
#pragma once
struct http_conn;
struct http_request;
void routes_on_request(struct http_conn *c, const struct http_request *req, void *ud);
struct static_site;
/* dashboard: the web dashboard's files, served at "/" and "/ui/" without a token (NULL: not installed). */
void routes_set_site(const struct static_site *site);
