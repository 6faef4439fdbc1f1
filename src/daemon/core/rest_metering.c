/* REST for metering: GET /api/v2/usage, GET /api/v2/audit, GET /metrics and
 * GET /api/v2/sandboxes/{id}/processes (docs/metering.md, docs/protocol.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "daemon/api/http.h"
#include "daemon/core/metering.h"
#include "daemon/core/metrics.h"
#include "daemon/core/sandbox.h"
#include "daemon/store/store.h"
#include "lib/strparse.h"

/* A query parameter that is a non-negative integer at most max; absent leaves *out. */
static int query_int(struct http_conn *c, const struct http_request *req, const char *name, int64_t max,
                     int64_t *out)
{
    char *v = http_query_get(req, name);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    bool bad = errno || end == v || *end || n < 0 || n > max;
    free(v);
    if (bad) {
        http_respond_error(c, 400, strcmp(name, "limit") == 0 ? "INVALID_LIMIT" : "INVALID_RANGE",
                           "\"%s\" must be %s", name,
                           strcmp(name, "limit") == 0 ? "an integer from 1 to 1000" : "a time in ms since the epoch");
        return -1;
    }
    *out = n;
    return 0;
}

/* ?org=NAME: an admin reads another organization's figures. */
static int query_org(struct http_conn *c, const struct http_request *req, bool admin, const char *own, char out[64])
{
    char *v = http_query_get(req, "org");
    snprintf(out, 64, "%s", v ? v : own);
    bool ok = !v || (admin && hx_org_name_valid(v));
    bool forbidden = v && !admin;
    free(v);
    if (ok)
        return 0;
    if (forbidden)
        http_respond_error(c, 403, "FORBIDDEN", "reading another organization's figures needs an admin token");
    else
        http_respond_error(c, 400, "INVALID_ORG", "\"org\" must be an organization name");
    return -1;
}

void rest_usage(struct http_conn *c, const struct http_request *req, const char *own_org, bool admin)
{
    int64_t from = 0, to = -1;
    char org[64];
    if (query_int(c, req, "from", INT64_MAX, &from) < 0 || query_int(c, req, "to", INT64_MAX, &to) < 0 ||
        query_org(c, req, admin, own_org, org) < 0)
        return;
    struct usage_query q = {.org = org, .from_ms = from, .to_ms = to < 0 ? now_ms() : to};
    char *by = http_query_get(req, "by");
    char *label = http_query_get(req, "label");
    if (!by || strcmp(by, "org") == 0)
        q.by = USAGE_BY_NONE;
    else if (strcmp(by, "sandbox") == 0)
        q.by = USAGE_BY_SANDBOX;
    else if (strcmp(by, "day") == 0)
        q.by = USAGE_BY_DAY;
    else if (strcmp(by, "label") == 0)
        q.by = USAGE_BY_LABEL;
    else {
        http_respond_error(c, 400, "INVALID_GROUPING", "\"by\" must be sandbox, day, label (with label=KEY) or org");
        goto out;
    }
    if (q.by == USAGE_BY_LABEL && (!label || !hx_label_key_valid(label))) {
        http_respond_error(c, 400, "INVALID_GROUPING", "by=label needs label=KEY, a valid label key");
        goto out;
    }
    q.label_key = label;
    json_t *legacy = NULL, *report = NULL;
    struct hx_err e = {0};
    /* The first fields (records, wallMs, cpuMs, ...) are the stopped sandboxes started in the range, as before. */
    if (store_usage_sum(g_daemon.store, org, from, to < 0 ? INT64_MAX : to, &legacy, &e) < 0 ||
        usage_report(&q, &report, &e) < 0) {
        json_decref(legacy);
        http_respond_error(c, e.code == E2BIG ? 400 : 500, e.code == E2BIG ? "TOO_MANY_GROUPS" : "INTERNAL", "%s",
                           e.msg);
        goto out;
    }
    json_object_update(legacy, report);
    json_decref(report);
    http_respond_json(c, 200, legacy);
out:
    free(by);
    free(label);
}

void rest_audit(struct http_conn *c, const struct http_request *req, const char *own_org, bool admin)
{
    int64_t since = 0, limit = 100;
    char org[64];
    if (query_int(c, req, "since", INT64_MAX, &since) < 0 || query_int(c, req, "limit", STORE_AUDIT_MAX, &limit) < 0 ||
        query_org(c, req, admin, own_org, org) < 0)
        return;
    if (limit < 1)
        return http_respond_error(c, 400, "INVALID_LIMIT", "\"limit\" must be an integer from 1 to 1000");
    json_t *out = NULL;
    struct hx_err e = {0};
    if (store_audit_list(g_daemon.store, org, since, (unsigned)limit, &out, &e) < 0)
        return http_respond_error(c, 500, "INTERNAL", "%s", e.msg);
    http_respond_json(c, 200, out);
}

void rest_metrics(struct http_conn *c)
{
    size_t len = 0;
    char *text = metrics_render(&len);
    if (!text)
        return http_respond_error(c, 500, "INTERNAL", "out of memory");
    http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
    free(text);
}

void rest_processes(struct http_conn *c, const struct http_request *req, struct sandbox *sb)
{
    int64_t pid = 0;
    if (query_int(c, req, "pid", UINT32_MAX, &pid) < 0)
        return;
    http_respond_json(c, 200, procstats_report(sb, (uint32_t)pid));
}
