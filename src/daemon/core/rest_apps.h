/* REST for apps, layers, revisions, timelines and sandbox deploys
 * (rest_apps.c; docs/apps.md). */
#pragma once
#include <stdbool.h>

struct http_conn;
struct http_request;

/* Answers /api/v2/apps..., /api/v2/revisions/..., /api/v2/layers... and
 * POST /api/v2/sandboxes/{id}/deploy; false when the path is none of them. */
bool rest_apps_route(struct http_conn *c, const struct http_request *req, const char *org, const char *token_id);
