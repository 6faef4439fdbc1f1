/* HTTP routing and authentication: the SDK's WebSocket endpoints, its REST
 * calls (kill, extend, list) and hutch's token administration. */
#include <stdio.h>
#include <string.h>
#include "daemon/api/http.h"
#include "daemon/api/ws.h"
#include "daemon/core/routes.h"
#include "daemon/core/rest_apps.h"
#include "daemon/core/rest_exec.h"
#include "daemon/core/rest_files.h"
#include "daemon/core/expose.h"
#include "daemon/net/net.h"
#include "daemon/net/secrets.h"
#include "daemon/core/rpc.h"
#include "daemon/core/sandbox.h"
#include "daemon/core/volumes.h"
#include "daemon/core/metering.h"
#include "daemon/core/metrics.h"
#include "daemon/core/sbstats.h"
#include "daemon/api/static.h"
#include "daemon/store/store.h"
#include "lib/b64.h"
#include "lib/strparse.h"

#define EXTEND_MAX_MS (30 * 60 * 1000)
#define CONFIG_MAX 65536

struct caller {
    char org[64];
    bool admin;
    char token_id[32];          /* "" on the unix socket */
};

/* dashboard: a browser cannot set Authorization on a WebSocket, and a token in the URL would end up in
 * histories and logs. It offers two subprotocols instead, "hutch.v1" and "hutch.bearer.<token>"
 * (tokens are [a-z0-9_], valid subprotocol characters); the answer names only "hutch.v1". Copies the
 * token into out (size outn) and returns true when the request carries both. */
#define WS_SUBPROTOCOL "hutch.v1"
#define WS_BEARER_PREFIX "hutch.bearer."
static bool ws_subprotocol_token(const struct http_request *req, char *out, size_t outn)
{
    const char *v = req->websocket ? http_header_get(req, "sec-websocket-protocol") : NULL;
    bool v1 = false, tok = false;
    while (v && *v) {
        v += strspn(v, " \t,");
        size_t n = strcspn(v, " \t,");
        if (n == strlen(WS_SUBPROTOCOL) && strncmp(v, WS_SUBPROTOCOL, n) == 0)
            v1 = true;
        else if (n > strlen(WS_BEARER_PREFIX) && strncmp(v, WS_BEARER_PREFIX, strlen(WS_BEARER_PREFIX)) == 0 &&
                 n - strlen(WS_BEARER_PREFIX) < outn && !tok) {
            memcpy(out, v + strlen(WS_BEARER_PREFIX), n - strlen(WS_BEARER_PREFIX));
            out[n - strlen(WS_BEARER_PREFIX)] = 0;
            tok = true;
        }
        v += n;
    }
    return v1 && tok;
}

static bool authenticate(struct http_conn *c, const struct http_request *req, struct caller *who)
{
    if (req->unix_peer) {
        snprintf(who->org, sizeof who->org, "default");
        who->admin = true;
        return true;
    }
    const char *auth = http_header_get(req, "authorization");
    char sub_token[128] = "";
    bool by_sub = !auth && ws_subprotocol_token(req, sub_token, sizeof sub_token); /* dashboard: */
    if (!by_sub && (!auth || strncasecmp(auth, "Bearer ", 7) != 0)) {
        http_respond_error(c, 401, "INVALID_TOKEN", "Missing access token: send \"Authorization: Bearer <token>\"");
        return false;
    }
    struct hx_err e = {0};
    int r = store_token_check(g_daemon.store, by_sub ? sub_token : auth + 7, who->org, &who->admin, who->token_id, &e);
    explicit_bzero(sub_token, sizeof sub_token);
    if (r == -EACCES) {
        http_respond_error(c, 401, "INVALID_TOKEN", "The access token is invalid or has been revoked");
        return false;
    }
    if (r < 0) {
        http_respond_error(c, 500, "INTERNAL", "checking the access token failed: %s", e.msg);
        return false;
    }
    const char *org = http_header_get(req, "x-deno-org");
    if (org && strcmp(org, who->org) != 0) {
        http_respond_error(c, 403, "ORG_MISMATCH", "X-Deno-Org names \"%.64s\", but the token belongs to another organization", org);
        return false;
    }
    return true;
}

/* ---- WebSocket sessions -------------------------------------------- */

static void on_ws_text(struct ws_conn *w, const char *data, size_t len, void *ud)
{
    rpc_on_text(ud, data, len);
}

static void on_ws_close(struct ws_conn *w, void *ud)
{
    struct session *s = ud;
    s->ws = NULL;
    rpc_session_free(s);
}

static void on_ws_drain(struct ws_conn *w, void *ud)
{
    rpc_on_drain(ud);
}

static void on_ws_binary(struct ws_conn *w, const uint8_t *data, size_t len, void *ud)
{
    rpc_on_binary(ud, data, len);
}

static const struct ws_handlers session_handlers = {on_ws_text, on_ws_close, on_ws_drain, on_ws_binary};

void rpc_session_closed_by_sandbox(struct session *s, const char *reason)
{
    /* Its fetches point at the sandbox, which goes before the session does. */
    rpc_net_session_closed(s);
    if (s->sink)
        return s->sink->closed_by_sandbox(s);
    /* The sandbox is gone; the client learns it from the close frame. */
    if (s->ws)
        ws_close(s->ws, 1000, reason);
}

static bool attach_session(struct http_conn *c, struct sandbox *sb, const char *token_id)
{
    struct session *s = calloc(1, sizeof *s);
    if (!s) {
        http_respond_error(c, 500, "INTERNAL", "out of memory");
        return false;
    }
    snprintf(s->token_id, sizeof s->token_id, "%s", token_id);
    char hdr[200], tok[128];
    const struct http_request *req = http_conn_request(c);
    bool sub = req && !http_header_get(req, "authorization") && ws_subprotocol_token(req, tok, sizeof tok);
    explicit_bzero(tok, sizeof tok);
    /* hutch's own clients ask for stream bytes as binary messages (docs/protocol.md) */
    const char *streams = req ? http_header_get(req, RPC_STREAMS_HEADER) : NULL;
    s->binary = streams && strcmp(streams, "binary") == 0;
    snprintf(hdr, sizeof hdr, "x-deno-sandbox-id: %s\r\n%s%s", sb->id,
             sub ? "Sec-WebSocket-Protocol: " WS_SUBPROTOCOL "\r\n" : "", /* dashboard: */
             s->binary ? RPC_STREAMS_HEADER ": binary\r\n" : "");
    sandbox_session_attach(sb, s);
    s->ws = http_upgrade_websocket(c, hdr, &session_handlers, s);
    if (!s->ws) {
        rpc_session_free(s);
        return false;
    }
    return true;
}

/* Who asked for a sandbox being built: answered when it is ready. */
struct create_req {
    struct http_conn *c;
    char token_id[32];
    uint64_t t0_ns;             /* metrics: when the request came */
};

static void on_created(struct sandbox *sb, const struct hx_err *err, void *ud)
{
    struct create_req *cr = ud;
    struct http_conn *c = cr->c;
    char token_id[32];
    snprintf(token_id, sizeof token_id, "%s", cr->token_id);
    metrics_create_done(cr->t0_ns, sb != NULL); /* metrics: */
    free(cr);
    if (sb) /* audit: */
        audit_log(sb->org, token_id, "create", sb->id, "memory %u MiB, %s", sb->memory_mb,
                  sb->stop_at_ms ? "timed" : "session");
    if (!sb) {
        http_respond_error(c, 500, "SANDBOX_CREATE_FAILED", "%s", err->msg);
        return;
    }
    if (!attach_session(c, sb, token_id) && sb->stop_at_ms == 0)
        sandbox_stop(sb, "its creator went away before the sandbox was ready");
}

static json_t *decode_config(struct http_conn *c, const char *b64)
{
    size_t n = strlen(b64);
    if (n > CONFIG_MAX) {
        http_respond_error(c, 400, "INVALID_CONFIG", "x-deno-sandbox-config is larger than %d bytes", CONFIG_MAX);
        return NULL;
    }
    uint8_t *buf = malloc(hx_b64_decoded_max(n) + 3);
    size_t len = 0;
    if (!buf || hx_b64_decode(b64, n, buf, &len) < 0) {
        free(buf);
        http_respond_error(c, 400, "INVALID_CONFIG", "x-deno-sandbox-config is not valid base64");
        return NULL;
    }
    json_error_t jerr;
    json_t *cfg = json_loadb((const char *)buf, len, 0, &jerr);
    explicit_bzero(buf, len); /* secrets: the decoded config may hold values */
    free(buf);
    if (!cfg || !json_is_object(cfg)) {
        http_respond_error(c, 400, "INVALID_CONFIG", "x-deno-sandbox-config must be a base64 JSON object: %s",
                           cfg ? "not an object" : jerr.text);
        json_decref(cfg);
        return NULL;
    }
    return cfg;
}

static bool absent(json_t *v)
{
    return !v || json_is_null(v);
}

static void handle_create(struct http_conn *c, const struct http_request *req, const struct caller *who)
{
    struct create_req *cr = NULL;
    struct config *cfg = g_daemon.cfg;
    if (!req->websocket)
        return http_respond_error(c, 400, "WEBSOCKET_REQUIRED", "this endpoint speaks WebSocket only");
    const char *hdr = http_header_get(req, "x-deno-sandbox-config");
    json_t *conf = hdr ? decode_config(c, hdr) : json_object();
    if (!conf)
        return;
    struct sandbox_params p = {.org = who->org, .memory_mb = cfg->memory_default_mb, .cpu_millis = cfg->cpu_millis};
    json_t *mem = json_object_get(conf, "memory_mb");
    json_t *stop = json_object_get(conf, "stop_at_ms");
    json_t *labels = json_object_get(conf, "labels");
    json_t *env = json_object_get(conf, "env");
    json_t *volumes = json_object_get(conf, "volumes");
    json_t *allow_net = json_object_get(conf, "allow_net");
    struct hx_err e = {0};
    if (!absent(mem)) {
        if (!json_is_integer(mem) || json_integer_value(mem) < cfg->memory_min_mb ||
            json_integer_value(mem) > cfg->memory_max_mb) {
            http_respond_error(c, 400, "INVALID_MEMORY", "memory_mb must be an integer between %u and %u MiB",
                               cfg->memory_min_mb, cfg->memory_max_mb);
            goto out;
        }
        p.memory_mb = (uint32_t)json_integer_value(mem);
    }
    if (!absent(stop)) {
        int64_t now = now_ms();
        if (!json_is_integer(stop) || json_integer_value(stop) <= now ||
            json_integer_value(stop) > now + (int64_t)HX_DURATION_MAX_MS) {
            http_respond_error(c, 400, "INVALID_TIMEOUT", "stop_at_ms must be a time in the future, at most 7 days ahead");
            goto out;
        }
        p.stop_at_ms = json_integer_value(stop);
    }
    if (!absent(labels)) {
        if (hx_labels_validate(labels, &e) < 0) {
            http_respond_error(c, 400, "INVALID_LABELS", "%s", e.msg);
            goto out;
        }
        if (sandbox_cpu_millis(labels, &p.cpu_millis, &e) < 0) {
            http_respond_error(c, 400, "INVALID_CPU", "%s", e.msg);
            goto out;
        }
        p.labels = labels;
    }
    if (!absent(env)) {
        const char *k;
        json_t *v;
        bool ok = json_is_object(env) && json_object_size(env) <= 4096;
        json_object_foreach(env, k, v) ok = ok && json_is_string(v) && *k && !strchr(k, '=');
        if (!ok) {
            http_respond_error(c, 400, "INVALID_ENV", "env must be an object of string values");
            goto out;
        }
        p.env = env;
    }
    (void)volumes;
    { /* storage: volumes and root (core/sb_volumes.c) */
        int st = 400;
        const char *code = "INVALID_VOLUMES";
        if (sb_storage_parse(conf, who->org, &p.storage, &st, &code, &e) < 0) {
            http_respond_error(c, st, code, "%s", e.msg);
            goto out;
        }
    }
    /* secrets: {NAME: {hosts, value}}; values move into memory we zero, the config is scrubbed at out */
    if (secrets_parse(json_object_get(conf, "secrets"), absent(env) ? NULL : env, &p.secrets, &e) < 0) {
        http_respond_error(c, 400, "INVALID_SECRETS", "%s", e.msg);
        goto out;
    }
    /* net: absent = unrestricted (still proxied and audited), [] = loopback only */
    if (net_allow_validate(allow_net, &e) < 0) {
        http_respond_error(c, 400, "INVALID_ALLOW_NET", "%s", e.msg);
        goto out;
    }
    p.allow_net = absent(allow_net) ? NULL : allow_net;
    if (p.secrets && allow_net && json_is_array(allow_net) && json_array_size(allow_net) == 0) {
        http_respond_error(c, 400, "INVALID_SECRETS", "secrets need network access, but allowNet is []");
        goto out;
    }
    cr = calloc(1, sizeof *cr);
    if (!cr) {
        http_respond_error(c, 500, "INTERNAL", "out of memory");
        goto out;
    }
    cr->c = c;
    cr->t0_ns = uv_hrtime(); /* metrics: */
    snprintf(cr->token_id, sizeof cr->token_id, "%s", who->token_id);
    struct sandbox *warm = p.storage ? NULL : pool_take(&p); /* storage: pooled sandboxes booted the image */
    if (warm) {
        p.secrets = NULL; /* secrets: the sandbox has them */
        on_created(warm, NULL, hx_steal(&cr));
    } else if (sandbox_create(&p, on_created, cr, &e) < 0) {
        metrics_create_done(cr->t0_ns, false); /* metrics: */
        if (e.code == ENOSPC) /* the disk promise: see disk_budget_check */
            http_respond_error(c, 507, "INSUFFICIENT_STORAGE", "%s", e.msg);
        else
            http_respond_error(c, e.code == EAGAIN ? 503 : 500, "SANDBOX_CREATE_FAILED", "%s", e.msg);
    } else {
        p.secrets = NULL;
        p.storage = NULL; /* storage: the sandbox owns it */
        cr = NULL; /* on_created owns it now */
    }
out:
    sb_storage_free(p.storage);
    free(cr);
    secrets_free(p.secrets);
    if (!absent(json_object_get(conf, "secrets")) && hdr) /* secrets: the header's base64 carried values too */
        explicit_bzero((char *)hdr, strlen(hdr));
    secrets_scrub_json(json_object_get(conf, "secrets"));
    json_decref(conf);
}

static struct sandbox *find_own(struct http_conn *c, const char *id, const struct caller *who)
{
    struct sandbox *sb = hx_sandbox_id_valid(id) ? sandbox_find(id) : NULL;
    if (!sb || strcmp(sb->org, who->org) != 0 || sb->state >= SB_STOPPING) {
        http_respond_error(c, 404, "SANDBOX_NOT_FOUND", "no running sandbox with id \"%.40s\"", id);
        return NULL;
    }
    return sb;
}

static void handle_extend(struct http_conn *c, const struct http_request *req, struct sandbox *sb,
                          const struct caller *who)
{
    json_error_t jerr;
    json_t *body = json_loadb((const char *)req->body, req->body_len, 0, &jerr);
    json_t *stop = json_object_get(body, "stop_at_ms");
    if (!json_is_integer(stop) || json_integer_value(stop) <= now_ms()) {
        json_decref(body);
        return http_respond_error(c, 400, "INVALID_TIMEOUT", "body must be {\"stop_at_ms\": <a future time in ms>}");
    }
    int64_t want = json_integer_value(stop);
    json_decref(body);
    int64_t base = sb->stop_at_ms > now_ms() ? sb->stop_at_ms : now_ms();
    int64_t granted = want < base + EXTEND_MAX_MS ? want : base + EXTEND_MAX_MS;
    /* Never past the longest lifetime a create may ask for. */
    if (granted > now_ms() + (int64_t)HX_DURATION_MAX_MS)
        granted = now_ms() + (int64_t)HX_DURATION_MAX_MS;
    if (granted < sb->stop_at_ms)
        granted = sb->stop_at_ms; /* extending never shortens */
    sandbox_set_stop_at(sb, granted);
    struct hx_err e = {0};
    store_sandbox_set_stop_at(g_daemon.store, sb->id, granted, &e);
    audit_log(sb->org, who->token_id, "extend", sb->id, "stop_at_ms %lld", (long long)granted); /* audit: */
    http_respond_json(c, 200, json_pack("{s:I}", "stop_at_ms", (json_int_t)granted));
}

static void collect_label(const char *k, const char *v, void *ud)
{
    if (strncmp(k, "labels[", 7) != 0)
        return;
    size_t n = strlen(k);
    if (n < 9 || k[n - 1] != ']')
        return;
    char key[128];
    if (n - 8 >= sizeof key)
        return;
    memcpy(key, k + 7, n - 8);
    key[n - 8] = 0;
    json_object_set_new(ud, key, json_string(v));
}

static void handle_list(struct http_conn *c, const struct http_request *req, const struct caller *who)
{
    json_t *filter = json_object();
    http_query_each(req, collect_label, filter);
    json_t *out = NULL;
    struct hx_err e = {0};
    if (store_sandbox_list(g_daemon.store, who->org, filter, &out, &e) < 0)
        http_respond_error(c, 500, "INTERNAL", "%s", e.msg);
    else
        http_respond_json(c, 200, out);
    json_decref(filter);
}

/* metering (rest_metering.c): usage, audit, metrics, per-command usage */
static void handle_usage(struct http_conn *c, const struct http_request *req, const struct caller *who)
{
    rest_usage(c, req, who->org, who->admin);
}

static void handle_audit(struct http_conn *c, const struct http_request *req, const struct caller *who)
{
    rest_audit(c, req, who->org, who->admin);
}

static void handle_metrics(struct http_conn *c, const struct caller *who)
{
    if (!who->admin)
        return http_respond_error(c, 403, "FORBIDDEN", "metrics need an admin token or the unix socket");
    rest_metrics(c);
}

static void handle_processes(struct http_conn *c, const struct http_request *req, const struct caller *who,
                             const char *id)
{
    struct sandbox *sb = hx_sandbox_id_valid(id) ? sandbox_find(id) : NULL;
    if (!sb || strcmp(sb->org, who->org) != 0 || sb->pooled)
        return http_respond_error(c, 404, "SANDBOX_NOT_FOUND", "no running sandbox with id \"%.40s\"", id);
    rest_processes(c, req, sb);
}

static void handle_tokens(struct http_conn *c, const struct http_request *req, const struct caller *who,
                          const char *rest)
{
    if (!who->admin)
        return http_respond_error(c, 403, "FORBIDDEN", "token administration needs an admin token or the unix socket");
    struct hx_err e = {0};
    if (!*rest && strcmp(req->method, "POST") == 0) {
        json_t *body = req->body_len ? json_loadb((const char *)req->body, req->body_len, 0, NULL) : json_object();
        const char *org = json_string_value(json_object_get(body, "org"));
        const char *name = json_string_value(json_object_get(body, "name"));
        bool admin = json_is_true(json_object_get(body, "admin"));
        char tok[64], id[32];
        if (!body || !json_is_object(body))
            http_respond_error(c, 400, "INVALID_BODY", "body must be a JSON object {\"org\", \"name\"}");
        else if (store_token_create(g_daemon.store, org ? org : who->org, name && *name ? name : "token", admin, tok, id, &e) < 0)
            http_respond_error(c, e.code == EINVAL ? 400 : 500, "TOKEN_CREATE_FAILED", "%s", e.msg);
        else
            http_respond_json(c, 201, json_pack("{s:s, s:s, s:s}", "id", id, "token", tok, "org", org ? org : who->org));
        json_decref(body);
        return;
    }
    if (!*rest && strcmp(req->method, "GET") == 0) {
        json_t *out = NULL;
        if (store_token_list(g_daemon.store, NULL, &out, &e) < 0)
            return http_respond_error(c, 500, "INTERNAL", "%s", e.msg);
        return http_respond_json(c, 200, out);
    }
    if (rest[0] == '/' && strcmp(req->method, "DELETE") == 0) {
        if (store_token_revoke(g_daemon.store, rest + 1, &e) < 0)
            return http_respond_error(c, e.code == ENOENT ? 404 : 400, "TOKEN_NOT_FOUND", "%s", e.msg);
        /* A revoked token's open connections go too, not only new ones. */
        for (struct sandbox *sb = g_daemon.sandboxes; sb; sb = sb->next)
            for (struct session *s = sb->sessions; s; s = s->next)
                if (s->ws && strcmp(s->token_id, rest + 1) == 0)
                    ws_close(s->ws, 1008, "the access token was revoked");
        return http_respond_json(c, 200, json_pack("{s:b}", "revoked", 1));
    }
    http_respond_error(c, 405, "METHOD_NOT_ALLOWED", "%s is not supported here", req->method);
}

/* dashboard: CPU and memory samples of one sandbox, and the live figures of all of the caller's */
static void handle_stats(struct http_conn *c, const struct http_request *req, const struct caller *who,
                         const char *id)
{
    struct sandbox *sb = hx_sandbox_id_valid(id) ? sandbox_find(id) : NULL;
    if (!sb || strcmp(sb->org, who->org) != 0 || sb->pooled)
        return http_respond_error(c, 404, "SANDBOX_NOT_FOUND", "no running sandbox with id \"%.40s\"", id);
    int64_t since = 0;
    char *v = http_query_get(req, "since");
    if (v) {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        bool bad = errno || end == v || *end || n < 0;
        free(v);
        if (bad)
            return http_respond_error(c, 400, "INVALID_RANGE", "\"since\" must be a time in ms since the epoch");
        since = n;
    }
    http_respond_json(c, 200, sbstats_json(sb, since));
}

static void handle_live(struct http_conn *c, const struct caller *who)
{
    static const char *const states[] = {"starting", "running", "stopping", "stopped"};
    json_t *arr = json_array();
    for (struct sandbox *sb = g_daemon.sandboxes; arr && sb; sb = sb->next) {
        if (sb->pooled || strcmp(sb->org, who->org) != 0)
            continue;
        json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:O}", "id", sb->id, "state", states[sb->state],
                              "createdAt", (json_int_t)sb->created_ms, "stopAtMs", (json_int_t)sb->stop_at_ms,
                              "memoryLimitBytes", (json_int_t)sb->memory_mb << 20, "cpuLimitMillis",
                              (json_int_t)sb->cpu_millis, "labels", sb->labels ? sb->labels : json_null());
        json_t *last = sbstats_latest_json(sb);
        if (!o) {
            json_decref(last);
            continue;
        }
        json_object_set_new(o, "sample", last ? last : json_null());
        json_array_append_new(arr, o);
    }
    http_respond_json(c, 200, json_pack("{s:o}", "sandboxes", arr ? arr : json_array()));
}

static const struct static_site *g_site;

void routes_set_site(const struct static_site *site)
{
    g_site = site;
}

void routes_on_request(struct http_conn *c, const struct http_request *req, void *ud)
{
    const char *path = req->path;
    if (static_site_serve(g_site, c, req)) /* dashboard: public files; every API call below needs a token */
        return;
    if (strcmp(path, "/healthz") == 0)
        return http_respond_json(c, 200, json_pack("{s:b, s:I}", "ok", 1, "sandboxes", (json_int_t)g_daemon.n_sandboxes));
    struct caller who = {0};
    if (!authenticate(c, req, &who))
        return;
    /* The boundary the transport's budgets need: a conn that presented a valid token is never
     * displaced by, nor timed like, the unauthenticated ones (a completed request alone is not
     * enough: /healthz and a 401 answer anyone). */
    http_conn_mark_trusted(c);
    if (strcmp(path, "/api/v3/sandboxes/create") == 0) {
        if (strcmp(req->method, "GET") != 0)
            return http_respond_error(c, 405, "METHOD_NOT_ALLOWED", "use GET with a WebSocket upgrade");
        return handle_create(c, req, &who);
    }
    if (strncmp(path, "/api/v3/sandbox/", 16) == 0) {
        char id[64];
        const char *p = path + 16;
        size_t n = strcspn(p, "/");
        if (n == 0 || n >= sizeof id)
            return http_respond_error(c, 404, "SANDBOX_NOT_FOUND", "bad sandbox id");
        memcpy(id, p, n);
        id[n] = 0;
        const char *rest = p + n;
        struct sandbox *sb = find_own(c, id, &who);
        if (!sb)
            return;
        if (strcmp(rest, "/connect") == 0 && strcmp(req->method, "GET") == 0) {
            if (!req->websocket)
                return http_respond_error(c, 400, "WEBSOCKET_REQUIRED", "this endpoint speaks WebSocket only");
            attach_session(c, sb, who.token_id);
            return;
        }
        if (*rest == 0 && strcmp(req->method, "DELETE") == 0) {
            audit_log(sb->org, who.token_id, "kill", sb->id, "%s", ""); /* audit: */
            sandbox_stop(sb, "killed by request");
            return http_respond_json(c, 200, json_pack("{s:s, s:s}", "id", id, "status", "stopped"));
        }
        if (*rest == 0 && strcmp(req->method, "PATCH") == 0)
            return handle_extend(c, req, sb, &who);
        if (strncmp(rest, "/expose/", 8) == 0)
            return expose_handle_rest(c, req, sb, rest + 7, who.token_id);
        return http_respond_error(c, 404, "NOT_FOUND", "no route %s %s", req->method, path);
    }
    if (strcmp(path, "/api/v2/sandboxes") == 0 && strcmp(req->method, "GET") == 0)
        return handle_list(c, req, &who);
    if (strcmp(path, "/api/v2/usage") == 0 && strcmp(req->method, "GET") == 0)
        return handle_usage(c, req, &who);
    if (strcmp(path, "/api/v2/audit") == 0 && strcmp(req->method, "GET") == 0) /* audit: */
        return handle_audit(c, req, &who);
    if (strcmp(path, "/metrics") == 0 && strcmp(req->method, "GET") == 0) /* metrics: */
        return handle_metrics(c, &who);
    /* net: GET /api/v2/sandboxes/{id}/network: addresses, byte counts, audit log */
    if (strncmp(path, "/api/v2/sandboxes/", 18) == 0 && strcmp(req->method, "GET") == 0) {
        const char *p = path + 18;
        size_t n = strcspn(p, "/");
        char id[64];
        if (n > 0 && n < sizeof id && strcmp(p + n, "/processes") == 0) { /* metering: per-command usage */
            memcpy(id, p, n);
            id[n] = 0;
            return handle_processes(c, req, &who, id);
        }
        if (n > 0 && n < sizeof id && strcmp(p + n, "/stats") == 0) { /* dashboard: */
            memcpy(id, p, n);
            id[n] = 0;
            return handle_stats(c, req, &who, id);
        }
        if (n > 0 && n < sizeof id && strcmp(p + n, "/network") == 0) {
            memcpy(id, p, n);
            id[n] = 0;
            struct sandbox *sb = find_own(c, id, &who);
            if (sb)
                http_respond_json(c, 200, net_sandbox_report(sb));
            return;
        }
    }
    if (rest_volumes_route(c, req, who.org)) /* storage: /api/v2/volumes, /api/v2/snapshots */
        return;
    if (rest_apps_route(c, req, who.org, who.token_id)) /* apps: apps, layers, revisions, deploys */
        return;
    if (strcmp(path, "/hutch/v1/ingress/ca.crt") == 0 && strcmp(req->method, "GET") == 0)
        return expose_handle_ca(c);
    if (strcmp(path, "/hutch/v1/live") == 0 && strcmp(req->method, "GET") == 0) /* dashboard: */
        return handle_live(c, &who);
    /* hutch's raw file channel: GET/PUT /hutch/v1/sandboxes/{id}/files?path=P */
    if (strncmp(path, "/hutch/v1/sandboxes/", 20) == 0) {
        const char *p = path + 20;
        size_t n = strcspn(p, "/");
        char id[64];
        if (n > 0 && n < sizeof id && strcmp(p + n, "/files") == 0) {
            memcpy(id, p, n);
            id[n] = 0;
            struct sandbox *sb = find_own(c, id, &who);
            if (sb)
                rest_files_handle(c, req, sb);
            return;
        }
        if (n > 0 && n < sizeof id && strcmp(p + n, "/exec") == 0) { /* hutch's raw exec channel */
            memcpy(id, p, n);
            id[n] = 0;
            struct sandbox *sb = find_own(c, id, &who);
            if (sb)
                rest_exec_handle(c, req, sb, who.token_id);
            return;
        }
    }
    if (strncmp(path, "/hutch/v1/tokens", 16) == 0)
        return handle_tokens(c, req, &who, path + 16);
    http_respond_error(c, 404, "NOT_FOUND", "no route %s %.200s", req->method, path);
}
