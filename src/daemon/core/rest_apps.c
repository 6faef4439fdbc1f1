/* REST for apps, layers, revisions and timelines, as SDK 0.13.2 sends and
 * reads them (client.js AppsClient, LayersClient, RevisionsClient,
 * TimelinesClient; deno.js deploy), and POST /api/v2/sandboxes/{id}/deploy.
 * Documents are stored whole (store/apps.c); what a client sees has no
 * secret values and none of hutch's own "_" fields. docs/apps.md. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "daemon/api/http.h"
#include "daemon/apps/apps.h"
#include "daemon/core/deploy.h"
#include "daemon/core/metering.h"
#include "daemon/core/rest_apps.h"
#include "daemon/core/sandbox.h"
#include "daemon/store/store.h"
#include "lib/strparse.h"

#define LIST_MAX 100
#define SCAN_MAX 1000    /* apps of an org looked through for a layer's users */

/* ---- helpers ----------------------------------------------------------- */

static json_t *body_object(struct http_conn *c, const struct http_request *req, bool empty_ok)
{
    if (req->body_len == 0 && empty_ok)
        return json_object();
    json_error_t je;
    json_t *b = json_loadb((const char *)req->body, req->body_len, 0, &je);
    if (!b || !json_is_object(b)) {
        http_respond_error(c, 400, "INVALID_BODY", "the body must be a JSON object%s%s", b ? "" : ": ", b ? "" : je.text);
        json_decref(b);
        return NULL;
    }
    return b;
}

static void strip_private(json_t *doc)
{
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(doc, tmp, k, v) if (k[0] == '_') json_object_del(doc, k);
}

static json_t *app_public(json_t *app)
{
    json_t *o = json_deep_copy(app);
    strip_private(o);
    json_object_set_new(o, "env_vars", app_env_public(json_object_get(app, "env_vars")));
    return o;
}

static int layer_app_count(const char *org, const char *layer_id);

static json_t *layer_public(const char *org, json_t *layer)
{
    json_t *o = json_deep_copy(layer);
    strip_private(o);
    json_object_set_new(o, "env_vars", app_env_public(json_object_get(layer, "env_vars")));
    json_object_set_new(o, "app_count", json_integer(layer_app_count(org, json_string_value(json_object_get(layer, "id")))));
    return o;
}

static json_t *rev_public(json_t *rev)
{
    json_t *o = json_deep_copy(rev);
    strip_private(o);
    return o;
}

static void link_base(const struct http_request *req, char *out, size_t cap)
{
    const char *h = http_header_get(req, "host");
    if (!h || !*h || strlen(h) > 255 ||
        strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") != strlen(h))
        h = "localhost";
    snprintf(out, cap, "http://%s", h);
}

static void respond_page(struct http_conn *c, const struct http_request *req, json_t *body, int64_t next,
                         unsigned limit)
{
    char hdr[800] = "", base[300];
    if (next) {
        link_base(req, base, sizeof base);
        snprintf(hdr, sizeof hdr, "Link: <%s%.300s?cursor=%" PRId64 "&limit=%u>; rel=\"next\"\r\n", base, req->path,
                 next, limit);
    }
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!s)
        return http_respond_error(c, 500, "INTERNAL", "cannot encode the answer");
    http_respond(c, 200, "application/json", hdr[0] ? hdr : NULL, s, strlen(s));
    free(s);
}

static bool page_args(struct http_conn *c, const struct http_request *req, unsigned *limit, int64_t *cursor,
                      unsigned max)
{
    char *l = http_query_get(req, "limit"), *cu = http_query_get(req, "cursor");
    *limit = max < LIST_MAX ? max : LIST_MAX;
    *cursor = 0;
    bool ok = true;
    if (l) {
        char *end;
        long v = strtol(l, &end, 10);
        ok = *l && !*end && v >= 1 && v <= (long)max;
        *limit = (unsigned)v;
    }
    if (ok && cu) {
        char *end;
        long long v = strtoll(cu, &end, 10);
        ok = *cu && !*end && v >= 0;
        *cursor = v;
    }
    free(l);
    free(cu);
    if (!ok)
        http_respond_error(c, 400, "INVALID_QUERY", "limit must be 1..%u and cursor a value from a Link header", max);
    return ok;
}

static int err_status(int code)
{
    switch (code) {
    case ENOENT: return 404;
    case EEXIST: return 409;
    case EOPNOTSUPP: return 400;
    case EINVAL: case E2BIG: return 400;
    default: return 500;
    }
}

static void now_iso(char out[32])
{
    hx_format_iso8601_ms(hx_now_ms(), out);
}

/* Resolves layer references (ids or slugs) to [{id, slug}]; NULL and a
 * response sent when one does not exist. */
static json_t *resolve_layers(struct http_conn *c, const char *org, json_t *refs, const char *self_id)
{
    struct hx_err e = {0};
    if (app_layer_refs_check(refs, &e) < 0) {
        http_respond_error(c, 400, "INVALID_LAYERS", "%s", e.msg);
        return NULL;
    }
    json_t *out = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(refs, i, v) {
        json_t *l = NULL;
        if (store_obj_get(g_daemon.store, "layer", org, json_string_value(v), &l, &e) < 0) {
            json_decref(out);
            http_respond_error(c, e.code == ENOENT ? 400 : 500, e.code == ENOENT ? "LAYER_NOT_FOUND" : "INTERNAL",
                               "layer \"%.64s\": %s", json_string_value(v), e.msg);
            return NULL;
        }
        if (self_id && strcmp(self_id, json_string_value(json_object_get(l, "id"))) == 0) {
            json_decref(l);
            json_decref(out);
            http_respond_error(c, 400, "INVALID_LAYERS", "a layer cannot include itself");
            return NULL;
        }
        json_array_append_new(out, json_pack("{s:O, s:O}", "id", json_object_get(l, "id"), "slug",
                                             json_object_get(l, "slug")));
        json_decref(l);
    }
    return out;
}

/* Whether layer `target` is reachable from the layers `refs` include
 * (a cycle if target is the layer being given those refs). */
static bool layer_reaches(const char *org, json_t *refs, const char *target, int depth)
{
    if (depth > APP_LAYER_DEPTH)
        return true; /* too deep counts as a cycle: refused */
    size_t i;
    json_t *r;
    json_array_foreach(refs, i, r) {
        const char *id = json_string_value(json_object_get(r, "id"));
        if (!id)
            continue;
        if (strcmp(id, target) == 0)
            return true;
        json_t *l = NULL;
        struct hx_err e = {0};
        if (store_obj_get(g_daemon.store, "layer", org, id, &l, &e) == 0) {
            bool hit = layer_reaches(org, json_object_get(l, "layers"), target, depth + 1);
            json_decref(l);
            if (hit)
                return true;
        }
    }
    return false;
}

static json_t *all_apps(const char *org)
{
    json_t *arr = NULL;
    int64_t next = 0;
    struct hx_err e = {0};
    if (store_obj_list(g_daemon.store, "app", org, NULL, 0, SCAN_MAX, &arr, &next, &e) < 0)
        return json_array();
    return arr;
}

static int layer_app_count(const char *org, const char *layer_id)
{
    json_t *apps = all_apps(org);
    int n = 0;
    size_t i, k;
    json_t *a, *r;
    json_array_foreach(apps, i, a) json_array_foreach(json_object_get(a, "layers"), k, r) if (
        json_string_value(json_object_get(r, "id")) && strcmp(json_string_value(json_object_get(r, "id")), layer_id) == 0)
    {
        n++;
        break;
    }
    json_decref(apps);
    return n;
}

/* ---- apps ------------------------------------------------------------------ */

static json_t *app_get(struct http_conn *c, const char *org, const char *id_or_slug)
{
    json_t *app = NULL;
    struct hx_err e = {0};
    if (store_obj_get(g_daemon.store, "app", org, id_or_slug, &app, &e) < 0) {
        http_respond_error(c, e.code == ENOENT ? 404 : 500, e.code == ENOENT ? "APP_NOT_FOUND" : "INTERNAL",
                           e.code == ENOENT ? "no app \"%.64s\"" : "%s", e.code == ENOENT ? id_or_slug : e.msg);
        return NULL;
    }
    return app;
}

static int app_save(const char *org, json_t *app, struct hx_err *e)
{
    return store_obj_put(g_daemon.store, "app", json_string_value(json_object_get(app, "id")), org,
                         json_string_value(json_object_get(app, "slug")), NULL, app, e);
}

/* A new app doc from an AppInit (b); NULL and a response sent on bad input. */
static json_t *app_new(struct http_conn *c, const char *org, json_t *b)
{
    struct hx_err e = {0};
    json_t *jslug = json_object_get(b, "slug");
    char slug[40];
    if (jslug && !json_is_null(jslug)) {
        if (!json_is_string(jslug) || app_slug_check(json_string_value(jslug), &e) < 0) {
            http_respond_error(c, 400, "INVALID_SLUG", "%s", e.msg[0] ? e.msg : "slug must be a string");
            return NULL;
        }
        snprintf(slug, sizeof slug, "%s", json_string_value(jslug));
    } else if (app_slug_new(slug) < 0) {
        http_respond_error(c, 500, "INTERNAL", "no randomness for a slug");
        return NULL;
    }
    json_t *labels = json_object_get(b, "labels"), *config = json_object_get(b, "config");
    if (app_labels_check(labels, &e) < 0) {
        http_respond_error(c, 400, "INVALID_LABELS", "%s", e.msg);
        return NULL;
    }
    if (app_config_check(config, &e) < 0) {
        http_respond_error(c, 400, "INVALID_CONFIG", "%s", e.msg);
        return NULL;
    }
    json_t *env = NULL;
    if (app_env_from_init(json_object_get(b, "env_vars"), &env, &e) < 0) {
        http_respond_error(c, 400, "INVALID_ENV_VARS", "%s", e.msg);
        return NULL;
    }
    json_t *layers = resolve_layers(c, org, json_object_get(b, "layers"), NULL);
    if (!layers) {
        json_decref(env);
        return NULL;
    }
    char id[32], now[32];
    app_id_new("app", id);
    now_iso(now);
    json_t *app = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:s, s:s, s:s}", "id", id, "slug", slug, "labels",
                            labels && !json_is_null(labels) ? json_deep_copy(labels) : json_object(), "env_vars", env,
                            "config", config && !json_is_null(config) ? json_deep_copy(config) : json_object(),
                            "layers", layers, "created_at", now, "updated_at", now, "_org", org);
    if (app_save(org, app, &e) < 0) {
        http_respond_error(c, err_status(e.code), e.code == EEXIST ? "SLUG_TAKEN" : "INTERNAL", "%s",
                           e.code == EEXIST ? "an app with this slug already exists" : e.msg);
        json_decref(app);
        return NULL;
    }
    return app;
}

static bool labels_match(json_t *labels, const struct http_request *req)
{
    /* labels[k]=v parameters: every one must match */
    const char *q = req->query;
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        char *kv = http_pct_decode(q, n, true);
        if (kv && strncmp(kv, "labels[", 7) == 0) {
            char *close = strstr(kv, "]=");
            if (close) {
                *close = 0;
                const char *want = close + 2;
                const char *have = json_string_value(json_object_get(labels, kv + 7));
                if (!have || strcmp(have, want) != 0) {
                    free(kv);
                    return false;
                }
            }
        }
        free(kv);
        q = amp ? amp + 1 : NULL;
    }
    return true;
}

static bool app_has_layer(json_t *a, const char *layer)
{
    size_t k;
    json_t *r;
    json_array_foreach(json_object_get(a, "layers"), k, r) {
        const char *id = json_string_value(json_object_get(r, "id")), *slug = json_string_value(json_object_get(r, "slug"));
        if ((id && strcmp(id, layer) == 0) || (slug && strcmp(slug, layer) == 0))
            return true;
    }
    return false;
}

static void apps_list(struct http_conn *c, const struct http_request *req, const char *org)
{
    unsigned limit;
    int64_t cursor, next = 0;
    if (!page_args(c, req, &limit, &cursor, LIST_MAX))
        return;
    char *layer = http_query_get(req, "layer");
    json_t *rows = NULL;
    struct hx_err e = {0};
    if (store_obj_list(g_daemon.store, "app", org, NULL, cursor, limit, &rows, &next, &e) < 0) {
        free(layer);
        return http_respond_error(c, 500, "INTERNAL", "%s", e.msg);
    }
    json_t *out = json_array();
    size_t i;
    json_t *a;
    /* filters apply within the page: a page may hold fewer than limit, the Link still leads on */
    json_array_foreach(rows, i, a) if (labels_match(json_object_get(a, "labels"), req) && (!layer || app_has_layer(a, layer)))
        json_array_append_new(out, app_public(a));
    json_decref(rows);
    free(layer);
    respond_page(c, req, out, next, limit);
}

static void app_update(struct http_conn *c, const struct http_request *req, const char *org, json_t *app)
{
    json_t *b = body_object(c, req, false);
    if (!b)
        return;
    struct hx_err e = {0};
    json_t *v;
    if ((v = json_object_get(b, "slug")) && !json_is_null(v)) {
        if (!json_is_string(v) || app_slug_check(json_string_value(v), &e) < 0) {
            json_decref(b);
            return http_respond_error(c, 400, "INVALID_SLUG", "%s", e.msg[0] ? e.msg : "slug must be a string");
        }
        json_object_set(app, "slug", v);
    }
    if ((v = json_object_get(b, "labels")) && !json_is_null(v)) {
        if (app_labels_check(v, &e) < 0) {
            json_decref(b);
            return http_respond_error(c, 400, "INVALID_LABELS", "%s", e.msg);
        }
        json_object_set(app, "labels", v);
    }
    if ((v = json_object_get(b, "config")) && !json_is_null(v)) {
        if (app_config_check(v, &e) < 0) {
            json_decref(b);
            return http_respond_error(c, 400, "INVALID_CONFIG", "%s", e.msg);
        }
        json_object_set(app, "config", v);
    }
    if ((v = json_object_get(b, "env_vars")) && app_env_update(json_object_get(app, "env_vars"), v, &e) < 0) {
        json_decref(b);
        return http_respond_error(c, e.code == ENOENT ? 404 : 400, "INVALID_ENV_VARS", "%s", e.msg);
    }
    if ((v = json_object_get(b, "layers")) && !json_is_null(v)) {
        json_t *l = resolve_layers(c, org, v, NULL);
        if (!l) {
            json_decref(b);
            return;
        }
        json_object_set_new(app, "layers", l);
    }
    json_decref(b);
    char now[32];
    now_iso(now);
    json_object_set_new(app, "updated_at", json_string(now));
    if (app_save(org, app, &e) < 0)
        return http_respond_error(c, err_status(e.code), e.code == EEXIST ? "SLUG_TAKEN" : "INTERNAL", "%s", e.msg);
    http_respond_json(c, 200, app_public(app));
}

static void app_delete(struct http_conn *c, const char *org, json_t *app)
{
    const char *id = json_string_value(json_object_get(app, "id"));
    deploy_app_deleted(app);
    struct hx_err e = {0};
    for (;;) { /* its revisions, with their images */
        json_t *revs = NULL;
        int64_t next = 0;
        if (store_obj_list(g_daemon.store, "revision", org, id, 0, 100, &revs, &next, &e) < 0 || !json_array_size(revs)) {
            json_decref(revs);
            break;
        }
        size_t i;
        json_t *r;
        json_array_foreach(revs, i, r) {
            deploy_revision_deleted(r);
            store_obj_delete(g_daemon.store, json_string_value(json_object_get(r, "id")), &e);
        }
        json_decref(revs);
    }
    store_log_delete_app(g_daemon.store, id, &e);
    store_obj_delete(g_daemon.store, id, &e);
    http_respond_json(c, 200, json_object());
}

/* The revision doc common to both deploy paths; config already checked. */
static json_t *rev_new(const char *org, json_t *app, json_t *config, json_t *layers, json_t *env_vars,
                       json_t *labels, bool production, bool preview)
{
    char id[32], now[32];
    app_id_new("rev", id);
    now_iso(now);
    return json_pack("{s:s, s:s, s:n, s:o, s:o, s:o, s:o, s:s, s:n, s:n, s:n, s:s, s:O, s:b, s:b}", "id", id,
                     "status", "queued", "failure_reason", "labels", labels ? json_deep_copy(labels) : json_object(),
                     "layers", layers ? json_incref(layers) : json_deep_copy(json_object_get(app, "layers")),
                     "env_vars", env_vars ? json_deep_copy(env_vars) : json_array(), "config", json_deep_copy(config),
                     "created_at", now, "cancellation_requested_at", "build_finished_at", "deleted_at", "_org", org,
                     "_app", json_object_get(app, "id"), "_production", production, "_preview", preview);
}

/* RevisionEnvVar[]: [{key, value}] */
static int rev_env_check(json_t *v, struct hx_err *e)
{
    if (!v || json_is_null(v))
        return 0;
    json_t *tmp = NULL;
    int r = app_env_from_init(v, &tmp, e); /* the same rules for keys and values */
    json_decref(tmp);
    return r;
}

static void respond_deploy_started(struct http_conn *c, json_t *app, json_t *rev, struct sandbox *src,
                                   const char *path, json_t *assets, bool sdk_sandbox)
{
    struct hx_err e = {0};
    const char *org = json_string_value(json_object_get(rev, "_org"));
    if (store_obj_put(g_daemon.store, "revision", json_string_value(json_object_get(rev, "id")), org, NULL,
                      json_string_value(json_object_get(app, "id")), rev, &e) < 0)
        return http_respond_error(c, 500, "INTERNAL", "%s", e.msg);
    if (deploy_start(app, rev, src, path, assets, &e) < 0) {
        struct hx_err de = {0};
        store_obj_delete(g_daemon.store, json_string_value(json_object_get(rev, "id")), &de);
        if (e.code == EAGAIN)
            return http_respond_error(c, 429, "TOO_MANY_BUILDS", "%s", e.msg);
        return http_respond_error(c, 500, "DEPLOY_FAILED", "%s", e.msg);
    }
    if (sdk_sandbox)
        return http_respond_json(c, 200, json_pack("{s:O}", "revision_id", json_object_get(rev, "id")));
    http_respond_json(c, 200, rev_public(rev));
}

static bool flags(struct http_conn *c, json_t *b, bool *production, bool *preview)
{
    json_t *pr = json_object_get(b, "production"), *pv = json_object_get(b, "preview");
    if ((pr && !json_is_null(pr) && !json_is_boolean(pr)) || (pv && !json_is_null(pv) && !json_is_boolean(pv))) {
        http_respond_error(c, 400, "INVALID_BODY", "production and preview must be booleans");
        return false;
    }
    *preview = json_is_true(pv);
    *production = pr && json_is_boolean(pr) ? json_is_true(pr) : !*preview;
    if (!*production && !*preview) {
        http_respond_error(c, 400, "INVALID_BODY", "a deploy goes to production, to a preview, or both");
        return false;
    }
    return true;
}

/* POST /api/v2/apps/{app}/deploy: DeployInit with assets */
static void app_deploy_assets(struct http_conn *c, const struct http_request *req, const char *org, json_t *app,
                              const char *token_id)
{
    json_t *b = body_object(c, req, false);
    if (!b)
        return;
    struct hx_err e = {0};
    json_t *assets = json_object_get(b, "assets"), *config = json_object_get(b, "config");
    size_t total = 0;
    bool production, preview;
    json_t *layers = NULL, *rev = NULL, *cfg = NULL;
    if (app_assets_check(assets, &total, &e) < 0) {
        http_respond_error(c, 400, "INVALID_ASSETS", "%s", e.msg);
        goto out;
    }
    if (total > (uint64_t)g_daemon.cfg->app_volume_mb << 19) {
        http_respond_error(c, 413, "ASSETS_TOO_LARGE", "the assets hold %zu bytes; at most half the app volume "
                                                       "(%u MiB) may be deployed as assets", total,
                           g_daemon.cfg->app_volume_mb);
        goto out;
    }
    if (!config || json_is_null(config))
        config = json_object_get(app, "config");
    if (app_config_check(config, &e) < 0) {
        http_respond_error(c, 400, "INVALID_CONFIG", "%s", e.msg);
        goto out;
    }
    if (app_labels_check(json_object_get(b, "labels"), &e) < 0) {
        http_respond_error(c, 400, "INVALID_LABELS", "%s", e.msg);
        goto out;
    }
    if (rev_env_check(json_object_get(b, "env_vars"), &e) < 0) {
        http_respond_error(c, 400, "INVALID_ENV_VARS", "%s", e.msg);
        goto out;
    }
    if (!flags(c, b, &production, &preview))
        goto out;
    if (json_object_get(b, "layers") && !json_is_null(json_object_get(b, "layers")) &&
        !(layers = resolve_layers(c, org, json_object_get(b, "layers"), NULL)))
        goto out;
    cfg = json_deep_copy(config ? config : json_object());
    if (app_config_resolve(cfg, &e) < 0) { /* a framework preset fills what the config leaves out */
        http_respond_error(c, 400, "INVALID_CONFIG", "%s", e.msg);
        goto out;
    }
    if (!json_object_get(cfg, "runtime"))
        json_object_set_new(cfg, "runtime", json_pack("{s:s, s:s}", "type", "dynamic", "entrypoint", "main.ts"));
    json_t *rt = json_object_get(cfg, "runtime");
    if (!json_object_get(rt, "entrypoint") && strcmp(json_string_value(json_object_get(rt, "type")), "dynamic") == 0)
        json_object_set_new(rt, "entrypoint", json_string("main.ts"));
    rev = rev_new(org, app, cfg, layers, json_object_get(b, "env_vars"), json_object_get(b, "labels"), production, preview);
    audit_log(org, token_id, "deploy", json_string_value(json_object_get(rev, "id")), "app %s, %zu asset bytes",
              json_string_value(json_object_get(app, "slug")), total); /* audit: */
    respond_deploy_started(c, app, rev, NULL, NULL, assets, false);
out:
    json_decref(layers);
    json_decref(rev);
    json_decref(cfg);
    json_decref(b);
}

static void app_logs(struct http_conn *c, const struct http_request *req, json_t *app)
{
    char *start = http_query_get(req, "start"), *end = http_query_get(req, "end");
    char *rid = http_query_get(req, "revision_id"), *lvl = http_query_get(req, "level");
    char *q = http_query_get(req, "query");
    int64_t from = app_parse_iso8601_ms(start), to = end ? app_parse_iso8601_ms(end) : hx_now_ms() + 1;
    int min = -1;
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4 && lvl; i++)
        if (strcmp(lvl, levels[i]) == 0)
            min = i;
    unsigned limit = 100;
    int64_t cursor = 0, next = 0;
    if (!start || from < 0 || to < 0) {
        http_respond_error(c, 400, "INVALID_QUERY", "start (and end) must be ISO 8601 times");
    } else if (lvl && min < 0) {
        http_respond_error(c, 400, "INVALID_QUERY", "level must be debug, info, warn or error");
    } else if (page_args(c, req, &limit, &cursor, 1000)) {
        json_t *out = NULL;
        struct hx_err e = {0};
        if (store_log_query(g_daemon.store, json_string_value(json_object_get(app, "id")), from, to, rid,
                            min < 0 ? 0 : min, q && *q ? q : NULL, cursor, limit, &out, &next, &e) < 0)
            http_respond_error(c, 500, "INTERNAL", "%s", e.msg);
        else
            respond_page(c, req, json_pack("{s:o}", "logs", out), next, limit);
    }
    free(start);
    free(end);
    free(rid);
    free(lvl);
    free(q);
}

static void rev_list(struct http_conn *c, const struct http_request *req, const char *org, json_t *app)
{
    unsigned limit;
    int64_t cursor, next = 0;
    if (!page_args(c, req, &limit, &cursor, LIST_MAX))
        return;
    char *status = http_query_get(req, "status");
    json_t *rows = NULL;
    struct hx_err e = {0};
    if (store_obj_list(g_daemon.store, "revision", org, json_string_value(json_object_get(app, "id")), cursor, limit,
                       &rows, &next, &e) < 0) {
        free(status);
        return http_respond_error(c, 500, "INTERNAL", "%s", e.msg);
    }
    json_t *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) if (!status || strcmp(status, json_string_value(json_object_get(r, "status"))) == 0)
        json_array_append_new(out, rev_public(r));
    json_decref(rows);
    free(status);
    respond_page(c, req, out, next, limit);
}

static void route_app(struct http_conn *c, const struct http_request *req, const char *org, const char *rest,
                      const char *token_id)
{
    char key[80];
    size_t n = strcspn(rest, "/");
    if (n == 0 || n >= sizeof key)
        return http_respond_error(c, 404, "APP_NOT_FOUND", "bad app id or slug");
    memcpy(key, rest, n);
    key[n] = 0;
    char *dec = http_pct_decode(key, n, false);
    const char *sub = rest + n;
    json_t *app = app_get(c, org, dec ? dec : key);
    free(dec);
    if (!app)
        return;
    const char *m = req->method;
    if (!*sub && strcmp(m, "GET") == 0)
        http_respond_json(c, 200, app_public(app));
    else if (!*sub && strcmp(m, "PATCH") == 0)
        app_update(c, req, org, app);
    else if (!*sub && strcmp(m, "DELETE") == 0)
        app_delete(c, org, app);
    else if (strcmp(sub, "/deploy") == 0 && strcmp(m, "POST") == 0)
        app_deploy_assets(c, req, org, app, token_id);
    else if (strcmp(sub, "/logs") == 0 && strcmp(m, "GET") == 0)
        app_logs(c, req, app);
    else if (strcmp(sub, "/revisions") == 0 && strcmp(m, "GET") == 0)
        rev_list(c, req, org, app);
    else if (strcmp(sub, "/timelines") == 0 && strcmp(m, "GET") == 0)
        respond_page(c, req, deploy_app_timelines(app), 0, LIST_MAX);
    else
        http_respond_error(c, 404, "NOT_FOUND", "no route %s %.200s", m, req->path);
    json_decref(app);
}

/* ---- revisions ----------------------------------------------------------- */

static void route_revision(struct http_conn *c, const struct http_request *req, const char *org, const char *rest)
{
    char id[40];
    size_t n = strcspn(rest, "/");
    if (n == 0 || n >= sizeof id)
        return http_respond_error(c, 404, "REVISION_NOT_FOUND", "bad revision id");
    memcpy(id, rest, n);
    id[n] = 0;
    const char *sub = rest + n, *m = req->method;
    json_t *rev = NULL;
    struct hx_err e = {0};
    if (store_obj_get(g_daemon.store, "revision", org, id, &rev, &e) < 0)
        return http_respond_error(c, e.code == ENOENT ? 404 : 500, e.code == ENOENT ? "REVISION_NOT_FOUND" : "INTERNAL",
                                  "%s", e.code == ENOENT ? "no such revision" : e.msg);
    if (!*sub && strcmp(m, "GET") == 0) {
        http_respond_json(c, 200, rev_public(rev));
    } else if (!*sub && strcmp(m, "DELETE") == 0) {
        deploy_revision_deleted(rev);
        store_obj_delete(g_daemon.store, id, &e);
        http_respond_json(c, 200, json_object());
    } else if (strcmp(sub, "/progress") == 0 && strcmp(m, "GET") == 0) {
        deploy_stream(c, rev, false, NULL);
    } else if (strcmp(sub, "/build_logs") == 0 && strcmp(m, "GET") == 0) {
        char *step = http_query_get(req, "step");
        if (step && strcmp(step, "preparing") && strcmp(step, "installing") && strcmp(step, "building") &&
            strcmp(step, "deploying"))
            http_respond_error(c, 400, "INVALID_QUERY", "step must be preparing, installing, building or deploying");
        else
            deploy_stream(c, rev, true, step);
        free(step);
    } else if (strcmp(sub, "/cancel") == 0 && strcmp(m, "POST") == 0) {
        if (deploy_cancel(id, &e) < 0) {
            http_respond_error(c, 409, "REVISION_NOT_BUILDING", "%s", e.msg);
        } else {
            json_decref(rev);
            rev = NULL;
            store_obj_get(g_daemon.store, "revision", org, id, &rev, &e);
            http_respond_json(c, 200, rev ? rev_public(rev) : json_object());
        }
    } else if (strcmp(sub, "/timelines") == 0 && strcmp(m, "GET") == 0) {
        json_t *app = NULL;
        store_obj_get(g_daemon.store, "app", org, json_string_value(json_object_get(rev, "_app")), &app, &e);
        http_respond_json(c, 200, app ? deploy_revision_timelines(app, rev) : json_array());
        json_decref(app);
    } else {
        http_respond_error(c, 404, "NOT_FOUND", "no route %s %.200s", m, req->path);
    }
    json_decref(rev);
}

/* ---- layers ------------------------------------------------------------------ */

static void layer_create(struct http_conn *c, const struct http_request *req, const char *org)
{
    json_t *b = body_object(c, req, false);
    if (!b)
        return;
    struct hx_err e = {0};
    const char *slug = json_string_value(json_object_get(b, "slug"));
    json_t *desc = json_object_get(b, "description"), *env = NULL, *layers = NULL;
    if (!slug || app_slug_check(slug, &e) < 0) {
        http_respond_error(c, 400, "INVALID_SLUG", "%s", e.msg[0] ? e.msg : "a layer needs a slug");
    } else if (desc && !json_is_null(desc) && (!json_is_string(desc) || json_string_length(desc) > 1024)) {
        http_respond_error(c, 400, "INVALID_BODY", "description must be a string of at most 1024 bytes");
    } else if (app_env_from_init(json_object_get(b, "env_vars"), &env, &e) < 0) {
        http_respond_error(c, 400, "INVALID_ENV_VARS", "%s", e.msg);
    } else if ((layers = resolve_layers(c, org, json_object_get(b, "layers"), NULL))) {
        char id[32], now[32];
        app_id_new("lyr", id);
        now_iso(now);
        json_t *l = json_pack("{s:s, s:s, s:s, s:O, s:O, s:s, s:s}", "id", id, "slug", slug, "description",
                              json_is_string(desc) ? json_string_value(desc) : "", "layers", layers, "env_vars", env,
                              "created_at", now, "updated_at", now);
        if (store_obj_put(g_daemon.store, "layer", id, org, slug, NULL, l, &e) < 0)
            http_respond_error(c, err_status(e.code), e.code == EEXIST ? "SLUG_TAKEN" : "INTERNAL", "%s",
                               e.code == EEXIST ? "a layer with this slug already exists" : e.msg);
        else
            http_respond_json(c, 200, layer_public(org, l));
        json_decref(l);
    }
    json_decref(env);
    json_decref(layers);
    json_decref(b);
}

static void layer_update(struct http_conn *c, const struct http_request *req, const char *org, json_t *l)
{
    json_t *b = body_object(c, req, false);
    if (!b)
        return;
    struct hx_err e = {0};
    json_t *v;
    const char *id = json_string_value(json_object_get(l, "id"));
    if ((v = json_object_get(b, "slug")) && !json_is_null(v)) {
        if (!json_is_string(v) || app_slug_check(json_string_value(v), &e) < 0) {
            json_decref(b);
            return http_respond_error(c, 400, "INVALID_SLUG", "%s", e.msg[0] ? e.msg : "slug must be a string");
        }
        json_object_set(l, "slug", v);
    }
    if ((v = json_object_get(b, "description")) && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) > 1024) {
            json_decref(b);
            return http_respond_error(c, 400, "INVALID_BODY", "description must be a string of at most 1024 bytes");
        }
        json_object_set(l, "description", v);
    }
    if ((v = json_object_get(b, "env_vars")) && app_env_update(json_object_get(l, "env_vars"), v, &e) < 0) {
        json_decref(b);
        return http_respond_error(c, e.code == ENOENT ? 404 : 400, "INVALID_ENV_VARS", "%s", e.msg);
    }
    if ((v = json_object_get(b, "layers")) && !json_is_null(v)) {
        json_t *refs = resolve_layers(c, org, v, id);
        if (!refs) {
            json_decref(b);
            return;
        }
        if (layer_reaches(org, refs, id, 0)) {
            json_decref(refs);
            json_decref(b);
            return http_respond_error(c, 400, "INVALID_LAYERS", "layers may not include one another in a cycle "
                                                                "(nor more than %d deep)", APP_LAYER_DEPTH);
        }
        json_object_set_new(l, "layers", refs);
    }
    json_decref(b);
    char now[32];
    now_iso(now);
    json_object_set_new(l, "updated_at", json_string(now));
    if (store_obj_put(g_daemon.store, "layer", id, org, json_string_value(json_object_get(l, "slug")), NULL, l, &e) < 0)
        return http_respond_error(c, err_status(e.code), e.code == EEXIST ? "SLUG_TAKEN" : "INTERNAL", "%s", e.msg);
    http_respond_json(c, 200, layer_public(org, l));
}

static void layer_apps(struct http_conn *c, const struct http_request *req, const char *org, json_t *l)
{
    const char *id = json_string_value(json_object_get(l, "id"));
    json_t *apps = all_apps(org), *out = json_array();
    size_t i, k;
    json_t *a, *r;
    json_array_foreach(apps, i, a) json_array_foreach(json_object_get(a, "layers"), k, r) if (
        json_string_value(json_object_get(r, "id")) && strcmp(json_string_value(json_object_get(r, "id")), id) == 0)
    {
        json_array_append_new(out, json_pack("{s:O, s:O, s:I}", "id", json_object_get(a, "id"), "slug",
                                             json_object_get(a, "slug"), "layer_position", (json_int_t)k));
        break;
    }
    json_decref(apps);
    respond_page(c, req, out, 0, LIST_MAX);
}

static void route_layers(struct http_conn *c, const struct http_request *req, const char *org, const char *rest)
{
    const char *m = req->method;
    if (!*rest) {
        if (strcmp(m, "POST") == 0)
            return layer_create(c, req, org);
        if (strcmp(m, "GET") != 0)
            return http_respond_error(c, 405, "METHOD_NOT_ALLOWED", "use GET or POST");
        unsigned limit;
        int64_t cursor, next = 0;
        if (!page_args(c, req, &limit, &cursor, LIST_MAX))
            return;
        char *search = http_query_get(req, "search");
        json_t *rows = NULL;
        struct hx_err e = {0};
        if (store_obj_list(g_daemon.store, "layer", org, NULL, cursor, limit, &rows, &next, &e) < 0) {
            free(search);
            return http_respond_error(c, 500, "INTERNAL", "%s", e.msg);
        }
        json_t *out = json_array();
        size_t i;
        json_t *l;
        json_array_foreach(rows, i, l) if (!search || strstr(json_string_value(json_object_get(l, "slug")), search))
            json_array_append_new(out, layer_public(org, l));
        json_decref(rows);
        free(search);
        return respond_page(c, req, out, next, limit);
    }
    rest++; /* the '/' */
    char key[80];
    size_t n = strcspn(rest, "/");
    if (n == 0 || n >= sizeof key)
        return http_respond_error(c, 404, "LAYER_NOT_FOUND", "bad layer id or slug");
    memcpy(key, rest, n);
    key[n] = 0;
    const char *sub = rest + n;
    json_t *l = NULL;
    struct hx_err e = {0};
    if (store_obj_get(g_daemon.store, "layer", org, key, &l, &e) < 0)
        return http_respond_error(c, e.code == ENOENT ? 404 : 500, e.code == ENOENT ? "LAYER_NOT_FOUND" : "INTERNAL",
                                  "%s", e.msg);
    if (!*sub && strcmp(m, "GET") == 0) {
        http_respond_json(c, 200, layer_public(org, l));
    } else if (!*sub && strcmp(m, "PATCH") == 0) {
        layer_update(c, req, org, l);
    } else if (!*sub && strcmp(m, "DELETE") == 0) {
        int users = layer_app_count(org, json_string_value(json_object_get(l, "id")));
        if (users)
            http_respond_error(c, 409, "LAYER_IN_USE", "%d app%s use%s this layer: remove it from them first", users,
                               users == 1 ? "" : "s", users == 1 ? "s" : "");
        else if (store_obj_delete(g_daemon.store, json_string_value(json_object_get(l, "id")), &e) < 0)
            http_respond_error(c, 500, "INTERNAL", "%s", e.msg);
        else
            http_respond_json(c, 200, json_object());
    } else if (strcmp(sub, "/apps") == 0 && strcmp(m, "GET") == 0) {
        layer_apps(c, req, org, l);
    } else {
        http_respond_error(c, 404, "NOT_FOUND", "no route %s %.200s", m, req->path);
    }
    json_decref(l);
}

/* ---- POST /api/v2/sandboxes/{id}/deploy -------------------------------------- */

static void sandbox_deploy(struct http_conn *c, const struct http_request *req, const char *org, const char *sbid,
                           const char *token_id)
{
    struct sandbox *sb = hx_sandbox_id_valid(sbid) ? sandbox_find(sbid) : NULL;
    if (!sb || strcmp(sb->org, org) != 0 || sb->state != SB_RUNNING || sb->pooled)
        return http_respond_error(c, 404, "SANDBOX_NOT_FOUND", "no running sandbox %.40s", sbid);
    json_t *b = body_object(c, req, false);
    if (!b)
        return;
    struct hx_err e = {0};
    json_t *app = NULL, *rev = NULL, *cfg = NULL;
    const char *appname = json_string_value(json_object_get(b, "app"));
    const char *entry = json_string_value(json_object_get(b, "entrypoint"));
    const char *path = json_string_value(json_object_get(b, "path"));
    const char *mode = json_string_value(json_object_get(b, "mode"));
    const char *preset = json_string_value(json_object_get(b, "frameworkPreset"));
    json_t *args = json_object_get(b, "args");
    json_t *ic = json_object_get(b, "installCommand"), *bc = json_object_get(b, "buildCommand");
    json_t *bd = json_object_get(b, "buildDirectory");
    char full[4200], ep[2200];
    bool production, preview;
    if (!appname || !*appname) {
        http_respond_error(c, 400, "INVALID_BODY", "app (an app id or slug) is required");
        goto out;
    }
    if (!entry)
        entry = "main.ts";
    if (app_rel_path_check(entry, &e) < 0) {
        http_respond_error(c, 400, "INVALID_ENTRYPOINT", "entrypoint: %s", e.msg);
        goto out;
    }
    if (mode && strcmp(mode, "none") && strcmp(mode, "local")) {
        http_respond_error(c, 400, "INVALID_BODY", "mode must be \"none\" or \"local\"");
        goto out;
    }
    const struct app_preset *fp = NULL;
    json_t *jfp = json_object_get(b, "frameworkPreset");
    if (jfp && !json_is_null(jfp) && !json_is_string(jfp)) {
        http_respond_error(c, 400, "INVALID_CONFIG", "frameworkPreset must be a string (\"\" or a preset name)");
        goto out;
    }
    if (preset && *preset && !(fp = app_preset_find(preset))) {
        http_respond_error(c, 400, "INVALID_CONFIG", "frameworkPreset: unknown framework preset \"%.32s\" (known: %s)",
                           preset, app_preset_names());
        goto out;
    }
    if ((ic && !json_is_null(ic) && !json_is_string(ic)) || (bc && !json_is_null(bc) && !json_is_string(bc))) {
        http_respond_error(c, 400, "INVALID_CONFIG", "installCommand and buildCommand must be strings");
        goto out;
    }
    if (!path || !*path)
        path = "/home/app";
    if (strlen(path) > 2048 || memchr(path, 0, strlen(path))) {
        http_respond_error(c, 400, "INVALID_PATH", "path is too long");
        goto out;
    }
    snprintf(full, sizeof full, "%s%s", path[0] == '/' ? "" : "/home/app/", path);
    const char *bds = NULL;
    if (bd && !json_is_null(bd)) {
        if (!json_is_string(bd) ||
            (strcmp(json_string_value(bd), ".") && app_rel_path_check(json_string_value(bd), &e) < 0)) {
            http_respond_error(c, 400, "INVALID_BODY", "buildDirectory: %s", e.msg[0] ? e.msg : "must be a string");
            goto out;
        }
        bds = json_string_value(bd);
    }
    /* Explicit options win over the preset's defaults (docs/apps.md): the
     * commands when given, buildDirectory as the static root (or the
     * directory a dynamic entrypoint is in), an entrypoint other than the
     * SDK's default "main.ts" and args as the dynamic runtime's. */
    cfg = json_pack("{s:s}", "framework", fp ? fp->name : "");
    if (json_is_string(ic) || !fp)
        json_object_set(cfg, "install", json_is_string(ic) ? ic : json_null());
    if (json_is_string(bc) || !fp)
        json_object_set(cfg, "build", json_is_string(bc) ? bc : json_null());
    json_t *rt = fp ? app_preset_runtime(fp) : json_pack("{s:s, s:s}", "type", "dynamic", "entrypoint", "main.ts");
    json_object_set_new(cfg, "runtime", rt);
    if (app_config_resolve(cfg, &e) < 0) {
        http_respond_error(c, 400, "INVALID_CONFIG", "%s", e.msg);
        goto out;
    }
    if (fp && fp->is_static) {
        if (bds)
            json_object_set_new(rt, "cwd", json_string(bds));
    } else {
        const char *base = fp && strcmp(entry, "main.ts") == 0 ? fp->target : entry;
        snprintf(ep, sizeof ep, "%s%s%s", bds && strcmp(bds, ".") ? bds : "", bds && strcmp(bds, ".") ? "/" : "", base);
        json_object_set_new(rt, "entrypoint", json_string(ep));
        if (args && !json_is_null(args))
            json_object_set(rt, "args", args);
    }
    if (app_revision_config_check(cfg, &e) < 0) {
        http_respond_error(c, 400, "INVALID_CONFIG", "%s", e.msg);
        goto out;
    }
    if (!flags(c, b, &production, &preview))
        goto out;
    if (store_obj_get(g_daemon.store, "app", org, appname, &app, &e) < 0) {
        if (e.code != ENOENT) {
            http_respond_error(c, 500, "INTERNAL", "%s", e.msg);
            goto out;
        }
        /* an app that does not exist yet is made, with that slug */
        json_t *init = json_pack("{s:s}", "slug", appname);
        app = app_new(c, org, init);
        json_decref(init);
        if (!app)
            goto out;
    }
    rev = rev_new(org, app, cfg, NULL, NULL, NULL, production, preview);
    audit_log(org, token_id, "deploy", json_string_value(json_object_get(rev, "id")), "app %s from %s:%s",
              json_string_value(json_object_get(app, "slug")), sb->id, full); /* audit: */
    respond_deploy_started(c, app, rev, sb, full, NULL, true);
out:
    json_decref(app);
    json_decref(rev);
    json_decref(cfg);
    json_decref(b);
}

/* ---- the router ------------------------------------------------------------------ */

bool rest_apps_route(struct http_conn *c, const struct http_request *req, const char *org, const char *token_id)
{
    const char *p = req->path;
    if (strcmp(p, "/api/v2/apps") == 0) {
        if (strcmp(req->method, "GET") == 0) {
            apps_list(c, req, org);
        } else if (strcmp(req->method, "POST") == 0) {
            json_t *b = body_object(c, req, true);
            json_t *app = b ? app_new(c, org, b) : NULL;
            if (app)
                http_respond_json(c, 200, app_public(app));
            json_decref(app);
            json_decref(b);
        } else {
            http_respond_error(c, 405, "METHOD_NOT_ALLOWED", "use GET or POST");
        }
        return true;
    }
    if (strncmp(p, "/api/v2/apps/", 13) == 0)
        return route_app(c, req, org, p + 13, token_id), true;
    if (strncmp(p, "/api/v2/revisions/", 18) == 0)
        return route_revision(c, req, org, p + 18), true;
    if (strcmp(p, "/api/v2/layers") == 0 || strncmp(p, "/api/v2/layers/", 15) == 0)
        return route_layers(c, req, org, p + 14), true;
    if (strncmp(p, "/api/v2/sandboxes/", 18) == 0 && strcmp(req->method, "POST") == 0) {
        const char *id = p + 18;
        size_t n = strcspn(id, "/");
        if (strcmp(id + n, "/deploy") == 0 && n < 40) {
            char sbid[40];
            memcpy(sbid, id, n);
            sbid[n] = 0;
            sandbox_deploy(c, req, org, sbid, token_id);
            return true;
        }
    }
    return false;
}
