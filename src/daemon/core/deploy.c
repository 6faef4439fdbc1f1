/* Building and serving apps' revisions (deploy.h, docs/apps.md). Builds and
 * app instances are ordinary sandboxes; a revision's files are an image in
 * the storage pool, kept as a snapshot; the ingress is the front door. */
#include "daemon/core/deploy.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "daemon/api/http.h"
#include "daemon/apps/apps.h"
#include "daemon/apps/stage.h"
#include "daemon/core/expose.h"
#include "daemon/core/sandbox.h"
#include "daemon/core/volumes.h"
#include "daemon/storage/names.h"
#include "daemon/storage/pool.h"
#include "daemon/store/store.h"
#include "lib/b64.h"
#include "lib/strparse.h"
#include "static_server_js.h" /* generated (src/daemon/meson.build) from static_server.js: static_server_js[] */

#define APP_DIR "/app/src"            /* where a revision's files are inside its sandboxes */
#define LOG_LINE_MAX 4096             /* bytes of one log line; longer lines are cut */
#define BUILD_LOGS_MAX 5000           /* build log lines kept per revision */
#define BUILD_LOG_BYTES_MAX (1 << 20) /* and their bytes */
#define RUNTIME_LOGS_KEEP 10000       /* runtime log lines kept per app */
#define RUNTIME_LOG_RATE 200          /* lines per second per instance, then dropped (counted) */
#define START_TIMEOUT_MS 60000        /* an entrypoint's time to listen */
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define STABLE_MS 60000               /* up this long: the backoff starts again from its minimum */
#define PENDING_MAX 64                /* requests waiting for a waking instance */
#define DROP_TRIES 120                /* removing an image waits this many times 250 ms for its loop device */
#define SERVE_PORT 8000
#define BUILDS_MAX 8                  /* builds in progress at once, all organizations */

/* ---- build jobs ---------------------------------------------------- */

enum phase { P_PREPARING, P_BUILDING, P_DEPLOYING, P_DONE };

struct watcher {
    struct watcher *next;
    struct http_conn *c;
    struct job *j;
    bool logs;
    char step[16];
    size_t sent;            /* log lines sent */
};

struct linebuf {
    char b[LOG_LINE_MAX];
    size_t n;
};

struct job {
    struct job *next;
    char rev_id[32], app_id[32], org[64], app_slug[40];
    json_t *rev;                 /* the stored doc; written back at each change */
    json_t *progress;            /* RevisionProgress */
    json_t *logs;                /* BuildLog[] */
    size_t log_bytes;
    unsigned log_dropped;
    struct watcher *watchers;
    enum phase phase;
    int src_root;                /* O_PATH /proc/PID/root of the source sandbox, or -1 */
    char src_path[4096];
    json_t *assets;
    char stage[4300];
    char vol_id[32], snap_id[32];
    uint64_t capacity, staged_bytes;
    bool has_commands;
    uv_work_t work;
    bool working;
    int wrc;
    struct hx_err werr;
    void (*after)(struct job *j);
    char build_sb[32];
    int step;                    /* 0 install, 1 build */
    bool spawn_pending, proc_live;
    uv_timer_t timer;
    bool timer_on;
    int clone_tries;
    bool cancelled, timed_out;
    struct linebuf lb[2];
    char fail_msg[512];
};

static struct job *jobs;

/* ---- instances ----------------------------------------------------- */

enum inst_state { I_BOOTING, I_STARTING, I_READY, I_BACKOFF, I_STOPPED };

struct instance {
    struct instance *next;
    char rev_id[32], app_id[32], org[64], app_slug[40];
    char context[16];
    char sb_id[32], vol_id[32];
    enum inst_state state;
    uint32_t pid;
    int port;
    int restarts;
    int want;                    /* instances its revision runs (the app's hutch.instances label) */
    int64_t up_ms, last_req_ms, start_deadline;
    uv_timer_t timer;
    bool stopping;               /* we stopped its sandbox on purpose */
    bool spawn_pending, working;
    uv_work_t work;
    int wrc;
    struct hx_err werr;
    uint32_t reqs[PENDING_MAX];
    unsigned n_reqs;
    struct job *job;             /* a deploy waiting for it to listen */
    json_t *env, *args;
    char cmd_desc[256];
    struct linebuf lb[2];
    double tokens;
    int64_t tok_ms;
    unsigned dropped;
    char last_err[512];
};

static struct instance *instances;

struct route {
    struct route *next;
    char key[48];                /* "p:APP_ID" (production) or "r:REV_ID" (a preview) */
    char org[64];
    char app_id[32];
    char rev_id[32];             /* what it serves now; "" = nothing yet */
    unsigned rr;                 /* round robin over its revision's ready instances */
    char name[27];
    char domain[300];
};

static struct route *routes;
static void on_app_connect(const char *key, uint32_t req);

void deploy_storage_org(const char *org, char out[80])
{
    snprintf(out, 80, "apps:%s", org);
}

static const char *cfg_state(void)
{
    return g_daemon.cfg->state_dir;
}

static void iso_now(char out[32])
{
    hx_format_iso8601_ms(hx_now_ms(), out);
}

/* ---- stopping sandboxes from inside their own callbacks ------------- */

struct stop_soon {
    uv_timer_t t;
    char id[32];
    char why[96];
};

static void on_stop_soon_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_stop_soon(uv_timer_t *t)
{
    struct stop_soon *x = t->data;
    struct sandbox *sb = sandbox_find(x->id);
    if (sb)
        sandbox_stop(sb, x->why);
    uv_close((uv_handle_t *)t, on_stop_soon_closed);
}

/* Stops a sandbox from the loop, not now: the callers run inside that
 * sandbox's own agent callbacks (a process's exit, its output), which go on
 * using its process list after they return. */
static void sandbox_stop_soon(const char *id, const char *why)
{
    struct stop_soon *x = calloc(1, sizeof *x);
    if (!x)
        return;
    snprintf(x->id, sizeof x->id, "%s", id);
    snprintf(x->why, sizeof x->why, "%s", why);
    uv_timer_init(g_daemon.loop, &x->t);
    x->t.data = x;
    uv_timer_start(&x->t, on_stop_soon, 0, 0);
}

/* ---- images in the pool -------------------------------------------- */

struct drop {
    uv_timer_t t;
    char id[32];
    int tries;
};

static void on_drop_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_drop(uv_timer_t *t)
{
    struct drop *d = t->data;
    struct hx_err e = {0};
    int r = storage_image_remove(d->id, 0, &e); /* on the loop: never wait, the timer retries */
    if (r == -EBUSY && ++d->tries < DROP_TRIES)
        return; /* its loop device goes with the sandbox's last mount */
    if (r < 0 && r != -ENOENT)
        fprintf(stderr, "hutchd: apps: removing image %s: %s\n", d->id, e.msg);
    store_vol_delete(g_daemon.store, d->id, &e);
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, on_drop_closed);
}

/* Removes an image once nothing holds it (a stopping sandbox may still). */
static void image_drop_later(const char *id)
{
    if (!id[0])
        return;
    struct drop *d = calloc(1, sizeof *d);
    if (!d)
        return;
    snprintf(d->id, sizeof d->id, "%s", id);
    uv_timer_init(g_daemon.loop, &d->t);
    d->t.data = d;
    uv_timer_start(&d->t, on_drop, 0, 250);
}

static int pool_budget(uint64_t want, struct hx_err *e)
{
    uint64_t total, reserve, committed;
    storage_pool_space(&total, &reserve);
    int r = store_vol_committed(g_daemon.store, &committed, e);
    if (r < 0)
        return r;
    return vol_budget_check(total, reserve, committed, want, "an app image", e);
}

static int image_record(const char *org, const char *id, const char *kind, uint64_t capacity, const char *base,
                        struct hx_err *e)
{
    struct vol_rec v = {0};
    snprintf(v.id, sizeof v.id, "%s", id);
    snprintf(v.org, sizeof v.org, "apps:%s", org); /* deploy_storage_org */
    snprintf(v.kind, sizeof v.kind, "%s", kind);
    snprintf(v.slug, sizeof v.slug, "%s", id);
    snprintf(v.region, sizeof v.region, "%s", g_daemon.cfg->node);
    v.capacity = capacity;
    v.allocated = v.flattened = strcmp(kind, "snapshot") == 0 ? capacity : 0;
    if (base)
        snprintf(v.base_id, sizeof v.base_id, "%s", base);
    v.created_ms = hx_now_ms();
    return store_vol_insert(g_daemon.store, &v, e);
}

/* ---- revision docs, progress, logs --------------------------------- */

static json_t *stage_obj(const char *status)
{
    return json_pack("{s:s}", "status", status);
}

static json_t *progress_new(bool install, bool build, const char *install_cmd, const char *build_cmd,
                            const char *timeline)
{
    json_t *inst = stage_obj(install ? "pending" : "skipped"), *bld = stage_obj(build ? "pending" : "skipped");
    json_object_set_new(inst, "command", install_cmd ? json_string(install_cmd) : json_null());
    json_object_set_new(bld, "command", build_cmd ? json_string(build_cmd) : json_null());
    json_t *tl = json_pack("{s:s, s:s, s:{}, s:o, s:{s:s, s:n}, s:o, s:o}", "status", "pending", "slug", timeline,
                           "partition", "database", stage_obj("skipped"), "predeploy", "status", "skipped", "command",
                           "warmup", stage_obj("pending"), "routing", stage_obj("pending"));
    return json_pack("{s:o, s:o, s:o, s:o, s:{s:s, s:[o]}}", "queued", stage_obj("succeeded"), "preparing",
                     stage_obj("pending"), "installing", inst, "building", bld, "deploying", "status", "pending",
                     "timelines", tl);
}

/* Sets a stage's status, with start (running) and end (finished) times. */
static void stage_set(json_t *st, const char *status)
{
    char now[32];
    iso_now(now);
    char old_buf[24];
    snprintf(old_buf, sizeof old_buf, "%s", json_string_value(json_object_get(st, "status")) ? json_string_value(json_object_get(st, "status")) : "");
    const char *old = old_buf;
    json_object_set_new(st, "status", json_string(status));
    if (strcmp(status, "running") == 0) {
        json_object_set_new(st, "start", json_string(now));
    } else if (strcmp(status, "pending") && strcmp(status, "skipped")) {
        if (!json_object_get(st, "start"))
            json_object_set_new(st, "start", json_string(now));
        if (strcmp(old, "running") == 0)
            json_object_set_new(st, "end", json_string(now));
        else if (!json_object_get(st, "end"))
            json_object_set_new(st, "end", json_string(now));
    }
}

static json_t *timeline_stage(struct job *j)
{
    return json_array_get(json_object_get(json_object_get(j->progress, "deploying"), "timelines"), 0);
}

static void watchers_progress(struct job *j);
static void watchers_log(struct job *j);
static void watchers_end(struct job *j);

static void rev_save(struct job *j)
{
    struct hx_err e = {0};
    json_object_set(j->rev, "_progress", j->progress);
    if (store_obj_put(g_daemon.store, "revision", j->rev_id, j->org, NULL, j->app_id, j->rev, &e) < 0)
        fprintf(stderr, "hutchd: apps: %s: %s\n", j->rev_id, e.msg);
}

static void progress(struct job *j, const char *stage, const char *status)
{
    json_t *st = strcmp(stage, "warmup") == 0 || strcmp(stage, "routing") == 0
                     ? json_object_get(timeline_stage(j), stage)
                     : strcmp(stage, "timeline") == 0 ? timeline_stage(j) : json_object_get(j->progress, stage);
    if (st)
        stage_set(st, status);
    rev_save(j);
    watchers_progress(j);
}

static const char *step_name(struct job *j)
{
    switch (j->phase) {
    case P_PREPARING: return "preparing";
    case P_BUILDING: return j->step == 0 ? "installing" : "building";
    default: return "deploying";
    }
}

static void build_log(struct job *j, const char *level, const char *msg, size_t n)
{
    if (json_array_size(j->logs) >= BUILD_LOGS_MAX || j->log_bytes + n > BUILD_LOG_BYTES_MAX) {
        j->log_dropped++;
        return;
    }
    char now[32];
    iso_now(now);
    json_t *m = json_stringn_nocheck(msg, n);
    if (!hx_utf8_printable(msg, n)) { /* bytes from a sandbox: made printable */
        json_decref(m);
        char *s = malloc(n + 1);
        if (!s)
            return;
        for (size_t i = 0; i < n; i++)
            s[i] = (msg[i] >= 0x20 && msg[i] < 0x7f) || msg[i] == '\t' ? msg[i] : '?';
        m = json_stringn(s, n);
        free(s);
    }
    json_t *line = json_pack("{s:s, s:s, s:o, s:s}", "timestamp", now, "level", level, "message", m, "step",
                             step_name(j));
    if (j->phase >= P_DEPLOYING)
        json_object_set_new(line, "timeline", json_string("production"));
    if (json_object_get(j->rev, "_preview") == json_true() && j->phase >= P_DEPLOYING)
        json_object_set_new(line, "timeline", json_string("preview"));
    json_array_append_new(j->logs, line);
    j->log_bytes += n + 64;
    watchers_log(j);
}

static void build_logf(struct job *j, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void build_logf(struct job *j, const char *level, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    build_log(j, level, buf, n < 0 ? 0 : (size_t)n >= sizeof buf ? sizeof buf - 1 : (size_t)n);
}

/* Splits a process's output into lines (cut at LOG_LINE_MAX). */
static void lines_feed(struct linebuf *lb, const uint8_t *p, size_t n, bool end,
                       void (*emit)(void *ud, const char *s, size_t n), void *ud)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' || lb->n == sizeof lb->b) {
            emit(ud, lb->b, lb->n);
            lb->n = 0;
            if (p[i] == '\n')
                continue;
        }
        if (p[i] != '\r')
            lb->b[lb->n++] = (char)p[i];
    }
    if (end && lb->n) {
        emit(ud, lb->b, lb->n);
        lb->n = 0;
    }
}

/* ---- finishing a build --------------------------------------------- */

static void job_maybe_free(struct job *j);

static void job_finish(struct job *j, const char *failure, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void job_finish(struct job *j, const char *failure, const char *fmt, ...)
{
    if (j->phase == P_DONE)
        return;
    char now[32];
    iso_now(now);
    if (failure) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->fail_msg, sizeof j->fail_msg, fmt, ap);
        va_end(ap);
        build_log(j, "error", j->fail_msg, strlen(j->fail_msg));
        const char *st = strcmp(failure, "cancelled") == 0 ? "cancelled"
                         : strcmp(failure, "timed_out") == 0 ? "timed_out" : "errored";
        /* the running stage ends with the failure; later ones never ran */
        static const char *const stages[] = {"preparing", "installing", "building"};
        for (size_t i = 0; i < HX_ARRAY_LEN(stages); i++) {
            json_t *s = json_object_get(j->progress, stages[i]);
            const char *cur = json_string_value(json_object_get(s, "status"));
            if (cur && strcmp(cur, "running") == 0)
                stage_set(s, st);
        }
        json_t *dep = json_object_get(j->progress, "deploying");
        const char *dcur = json_string_value(json_object_get(dep, "status"));
        if (dcur && strcmp(dcur, "running") == 0) {
            stage_set(dep, st);
            json_t *tl = timeline_stage(j);
            stage_set(tl, st);
            json_t *w = json_object_get(tl, "warmup");
            if (strcmp(json_string_value(json_object_get(w, "status")), "running") == 0)
                stage_set(w, st);
        }
        json_object_set_new(j->rev, "status", json_string("failed"));
        json_object_set_new(j->rev, "failure_reason", json_string(failure));
        json_object_set_new(j->rev, "_failure_message", json_string(j->fail_msg));
    } else {
        json_object_set_new(j->rev, "status", json_string("succeeded"));
    }
    json_object_set_new(j->rev, "build_finished_at", json_string(now));
    if (j->log_dropped)
        build_logf(j, "error", "%u more build log lines were dropped (at most %d lines, %d bytes are kept)",
                   j->log_dropped, BUILD_LOGS_MAX, BUILD_LOG_BYTES_MAX);
    j->phase = P_DONE;
    json_object_set(j->rev, "_build_logs", j->logs);
    rev_save(j);
    fprintf(stderr, "hutchd: apps: revision %s of %s %s%s%s\n", j->rev_id, j->app_slug,
            failure ? "failed: " : "succeeded", failure ? failure : "", failure ? "" : "");
    watchers_progress(j);
    watchers_end(j);
    if (j->build_sb[0]) {
        struct sandbox *sb = sandbox_find(j->build_sb);
        if (sb) {
            sandbox_proc_unsink(sb, j);
            sandbox_stop_soon(sb->id, "the build ended");
        }
        j->build_sb[0] = 0;
    }
    if (failure) {
        image_drop_later(j->vol_id);
        image_drop_later(j->snap_id);
        j->vol_id[0] = j->snap_id[0] = 0;
    }
    if (j->timer_on)
        uv_timer_stop(&j->timer);
    job_maybe_free(j);
}

static void on_job_timer_closed(uv_handle_t *h)
{
    struct job *j = h->data;
    json_decref(j->rev);
    json_decref(j->progress);
    json_decref(j->logs);
    json_decref(j->assets);
    free(j);
}

static void job_maybe_free(struct job *j)
{
    if (j->phase != P_DONE || j->watchers || j->working || j->spawn_pending)
        return;
    for (struct instance *i = instances; i; i = i->next)
        if (i->job == j)
            i->job = NULL;
    for (struct job **pp = &jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    if (j->src_root >= 0)
        close(j->src_root);
    uv_close((uv_handle_t *)&j->timer, on_job_timer_closed);
}

static struct job *job_find(const char *rev_id)
{
    for (struct job *j = jobs; j; j = j->next)
        if (strcmp(j->rev_id, rev_id) == 0)
            return j;
    return NULL;
}

/* ---- worker steps ---------------------------------------------------- */

static void on_work(uv_work_t *w);
static void on_work_done(uv_work_t *w, int status)
{
    (void)status;
    struct job *j = w->data;
    j->working = false;
    if (j->phase == P_DONE) /* cancelled meanwhile */
        return job_maybe_free(j);
    j->after(j);
}

static void run_work(struct job *j, void (*after)(struct job *))
{
    j->after = after;
    j->working = true;
    j->work.data = j;
    j->wrc = 0;
    memset(&j->werr, 0, sizeof j->werr);
    uv_queue_work(g_daemon.loop, &j->work, on_work, on_work_done);
}

enum { W_STAGE = 1, W_IMAGE };
static int work_kind(struct job *j)
{
    return j->vol_id[0] || j->snap_id[0] ? W_IMAGE : W_STAGE;
}

/* worker thread: stage the files, or turn the stage into an image */
static void on_work(uv_work_t *w)
{
    struct job *j = w->data;
    struct config *cfg = g_daemon.cfg;
    if (work_kind(j) == W_STAGE) {
        if ((j->wrc = storage_pool_open(cfg->state_dir, cfg->storage_size, true, &j->werr)) < 0)
            return;
        char dir[4300];
        snprintf(dir, sizeof dir, "%s/apps", cfg->state_dir);
        mkdir(dir, 0700);
        snprintf(dir, sizeof dir, "%s/apps/stage", cfg->state_dir);
        mkdir(dir, 0700);
        app_stage_remove(j->stage);
        if (mkdir(j->stage, 0755) < 0 || chown(j->stage, 1000, 1000) < 0) {
            j->wrc = hx_fail(&j->werr, errno, "mkdir %s: %m", j->stage);
            return;
        }
        struct app_stage_limits lim = {.max_bytes = j->capacity / 4 * 3, .max_files = 100000};
        if (j->assets)
            j->wrc = app_stage_assets(j->assets, j->stage, &lim, &j->werr);
        else
            j->wrc = app_stage_copy(j->src_root, j->src_path, j->stage, &lim, &j->staged_bytes, &j->werr);
        return;
    }
    const char *id = j->vol_id[0] ? j->vol_id : j->snap_id;
    j->wrc = storage_image_create(id, j->capacity, j->stage, &j->werr);
    app_stage_remove(j->stage);
}

/* ---- the pipeline ----------------------------------------------------- */

static void build_next_step(struct job *j);
static void deploy_serve(struct job *j);

static const char *cmd_of(struct job *j, const char *k)
{
    return json_string_value(json_object_get(json_object_get(j->rev, "config"), k));
}

static json_t *get_layer_cb(const char *id, void *ud)
{
    json_t **cache = ud; /* an object id -> doc, owned by the caller */
    json_t *l = json_object_get(*cache, id);
    if (l)
        return l;
    json_t *doc = NULL;
    struct hx_err e = {0};
    const char *org = json_string_value(json_object_get(*cache, "\x01org"));
    if (store_obj_get(g_daemon.store, "layer", org, id, &doc, &e) < 0)
        return NULL;
    json_object_set_new(*cache, id, doc);
    return doc;
}

/* The env of org's app app for context, with rev's own vars last. */
static json_t *env_for(const char *org, json_t *app, json_t *rev, const char *context)
{
    json_t *cache = json_pack("{s:s}", "\x01org", org);
    json_t *env = app_env_merge(app, json_object_get(rev, "env_vars"), context, get_layer_cb, &cache);
    json_decref(cache);
    return env;
}

static json_t *load_app(const char *org, const char *app_id)
{
    json_t *doc = NULL;
    struct hx_err e = {0};
    store_obj_get(g_daemon.store, "app", org, app_id, &doc, &e);
    return doc;
}

static void after_image(struct job *j)
{
    if (j->cancelled)
        return job_finish(j, "cancelled", "the build was cancelled");
    if (j->wrc < 0)
        return job_finish(j, "error", "making the revision's image: %s", j->werr.msg);
    progress(j, "preparing", "succeeded");
    if (!j->has_commands) {
        json_object_set_new(j->rev, "_snapshot", json_string(j->snap_id));
        return deploy_serve(j);
    }
    j->phase = P_BUILDING;
    j->step = -1;
    build_next_step(j);
}

static void after_stage(struct job *j)
{
    struct hx_err e = {0};
    if (j->cancelled) {
        app_stage_remove(j->stage);
        return job_finish(j, "cancelled", "the build was cancelled");
    }
    if (j->wrc < 0) {
        app_stage_remove(j->stage);
        return job_finish(j, "error", "copying the app's files: %s", j->werr.msg);
    }
    build_logf(j, "info", "copied %llu bytes of files", (unsigned long long)j->staged_bytes);
    if (!j->has_commands) {
        /* Deployed as it is: the entrypoint must be there. */
        const char *ep = json_string_value(
            json_object_get(json_object_get(json_object_get(j->rev, "config"), "runtime"), "entrypoint"));
        if (ep && !app_stage_has_file(j->stage, ep)) {
            app_stage_remove(j->stage);
            return job_finish(j, "error", "the entrypoint %.200s does not exist in the deployed files", ep);
        }
    }
    { /* `deno serve` when the entrypoint's module has a default export (its fetch handler) */
        const char *ep = json_string_value(
            json_object_get(json_object_get(json_object_get(j->rev, "config"), "runtime"), "entrypoint"));
        static char text[256 * 1024]; /* the loop thread only */
        if (ep && app_stage_read(j->stage, ep, text, sizeof text) > 0 && strstr(text, "export default"))
            json_object_set_new(j->rev, "_serve", json_true());
        /* a preset's entrypoint, made by the build, is known to be one */
        const struct app_preset *fp =
            app_preset_find(json_string_value(json_object_get(json_object_get(j->rev, "config"), "framework")));
        if (ep && fp && fp->serve && strcmp(ep, fp->target) == 0)
            json_object_set_new(j->rev, "_serve", json_true());
    }
    char id[32];
    if (vol_id_new(j->has_commands ? "vol" : "snp", NULL, g_daemon.cfg->node, id) < 0 ||
        pool_budget(j->capacity, &e) < 0 ||
        image_record(j->org, id, j->has_commands ? "volume" : "snapshot", j->capacity, NULL, &e) < 0) {
        app_stage_remove(j->stage);
        return job_finish(j, "error", "no room for the revision's image: %s", e.msg[0] ? e.msg : "no id");
    }
    snprintf(j->has_commands ? j->vol_id : j->snap_id, 32, "%s", id);
    run_work(j, after_image);
}

static void on_build_out_line(void *ud, const char *s, size_t n)
{
    build_log(ud, "info", s, n);
}

static void on_build_err_line(void *ud, const char *s, size_t n)
{
    build_log(ud, "error", s, n);
}

static bool on_build_spawned(void *ud, uint32_t pid, const struct hx_err *err)
{
    struct job *j = ud;
    j->spawn_pending = false;
    if (j->phase == P_DONE) {
        job_maybe_free(j);
        return false;
    }
    if (err) {
        job_finish(j, "error", "starting the %s command: %s", step_name(j), err->msg);
        return false;
    }
    j->proc_live = true;
    (void)pid;
    return true;
}

static void on_build_output(void *ud, unsigned fd, const uint8_t *p, size_t n)
{
    struct job *j = ud;
    if (j->phase == P_DONE || fd > 1)
        return;
    lines_feed(&j->lb[fd], p, n, n == 0, fd ? on_build_err_line : on_build_out_line, j);
}

static void on_build_exit(void *ud, int code, const char *sig, bool oom)
{
    struct job *j = ud;
    j->proc_live = false;
    if (j->phase == P_DONE)
        return;
    for (unsigned fd = 0; fd < 2; fd++)
        lines_feed(&j->lb[fd], NULL, 0, true, fd ? on_build_err_line : on_build_out_line, j);
    if (code != 0 || (sig && sig[0])) {
        if (oom)
            return job_finish(j, "error", "the %s command ran out of memory", step_name(j));
        if (sig && sig[0])
            return job_finish(j, "error", "the %s command was killed by %s", step_name(j), sig);
        return job_finish(j, "error", "the %s command exited with code %d", step_name(j), code);
    }
    progress(j, j->step == 0 ? "installing" : "building", "succeeded");
    build_next_step(j);
}

static const struct proc_sink build_sink = {on_build_spawned, on_build_output, on_build_exit};

static void run_step(struct job *j)
{
    struct sandbox *sb = sandbox_find(j->build_sb);
    const char *cmd = cmd_of(j, j->step == 0 ? "install" : "build");
    progress(j, j->step == 0 ? "installing" : "building", "running");
    build_logf(j, "info", "$ %s", cmd);
    json_t *app = load_app(j->org, j->app_id);
    json_t *env = env_for(j->org, app, j->rev, "build");
    json_decref(app);
    json_object_set_new(env, "CI", json_string("1"));
    json_t *args = json_pack("[s, s]", "-c", cmd);
    struct hx_err e = {0};
    j->spawn_pending = true;
    int r = sb ? sandbox_spawn_internal(sb, "/bin/sh", args, env, APP_DIR, &build_sink, j, &e) : -ESRCH;
    json_decref(args);
    json_decref(env);
    if (r < 0) {
        j->spawn_pending = false;
        job_finish(j, "error", "starting the %s command: %s", step_name(j), sb ? e.msg : "the build sandbox is gone");
    }
}

static void on_build_timeout(uv_timer_t *t)
{
    struct job *j = t->data;
    j->timed_out = true;
    job_finish(j, "timed_out", "the build took longer than %u s and was stopped",
               g_daemon.cfg->app_build_timeout_s);
}

static void on_build_sandbox(struct sandbox *sb, const struct hx_err *err, void *ud)
{
    struct job *j = ud;
    j->spawn_pending = false;
    if (j->phase == P_DONE) {
        if (sb)
            sandbox_stop_soon(sb->id, "the build ended");
        return job_maybe_free(j);
    }
    if (!sb)
        return job_finish(j, "error", "starting the build sandbox: %s", err ? err->msg : "failed");
    snprintf(j->build_sb, sizeof j->build_sb, "%s", sb->id);
    build_logf(j, "info", "build sandbox %s is up", sb->id);
    run_step(j);
}

static void on_clone_retry(uv_timer_t *t);

static void snapshot_build(struct job *j)
{
    struct hx_err e = {0};
    char id[32];
    if (!j->snap_id[0]) {
        if (vol_id_new("snp", NULL, g_daemon.cfg->node, id) < 0 ||
            image_record(j->org, id, "snapshot", j->capacity, j->vol_id, &e) < 0)
            return job_finish(j, "error", "recording the revision's snapshot: %s", e.msg);
        snprintf(j->snap_id, sizeof j->snap_id, "%s", id);
    }
    int r = storage_image_clone(j->vol_id, j->snap_id, 0, 0, &e); /* on the loop: on_clone_retry waits */
    if (r == -EBUSY && ++j->clone_tries < DROP_TRIES) { /* the build sandbox's mount is going away */
        uv_timer_start(&j->timer, on_clone_retry, 250, 0);
        j->timer_on = true;
        return;
    }
    if (r < 0)
        return job_finish(j, "error", "snapshotting the build: %s", e.msg);
    image_drop_later(j->vol_id);
    j->vol_id[0] = 0;
    json_object_set_new(j->rev, "_snapshot", json_string(j->snap_id));
    deploy_serve(j);
}

static void on_clone_retry(uv_timer_t *t)
{
    struct job *j = t->data;
    j->timer_on = false;
    if (j->phase != P_DONE)
        snapshot_build(j);
}

static void build_next_step(struct job *j)
{
    for (j->step++; j->step < 2; j->step++) {
        const char *cmd = cmd_of(j, j->step == 0 ? "install" : "build");
        if (cmd && *cmd)
            break;
    }
    if (j->step >= 2) { /* the build is done: its volume becomes the revision's snapshot */
        uv_timer_stop(&j->timer);
        struct sandbox *sb = sandbox_find(j->build_sb);
        if (sb) {
            sandbox_proc_unsink(sb, j);
            sandbox_stop_soon(sb->id, "the build ended");
        }
        j->build_sb[0] = 0;
        j->phase = P_DEPLOYING;
        return snapshot_build(j);
    }
    if (j->build_sb[0])
        return run_step(j);
    /* first command: a fresh sandbox with the revision's volume at APP_DIR */
    struct hx_err e = {0};
    char sorg[80];
    deploy_storage_org(j->org, sorg);
    json_t *conf = json_pack("{s:[{s:s, s:s}]}", "volumes", "volume", j->vol_id, "path", APP_DIR);
    json_t *labels = json_pack("{s:s, s:s, s:s}", "hutch.app", j->app_slug, "hutch.revision", j->rev_id, "hutch.role",
                               "build");
    struct sandbox_params p = {.org = j->org, .memory_mb = g_daemon.cfg->memory_default_mb, .labels = labels};
    p.stop_at_ms = now_ms() + (int64_t)g_daemon.cfg->app_build_timeout_s * 1000 + 60000;
    int st = 0;
    const char *code = NULL;
    int r = sb_storage_parse(conf, sorg, &p.storage, &st, &code, &e);
    json_decref(conf);
    if (r == 0) {
        j->spawn_pending = true;
        r = sandbox_create(&p, on_build_sandbox, j, &e);
        if (r < 0) {
            j->spawn_pending = false;
            sb_storage_free(p.storage);
        }
    }
    json_decref(labels);
    if (r < 0)
        return job_finish(j, "error", "starting the build sandbox: %s", e.msg);
    uv_timer_start(&j->timer, on_build_timeout, (uint64_t)g_daemon.cfg->app_build_timeout_s * 1000, 0);
}

/* ---- routes ----------------------------------------------------------- */

static struct route *route_find(const char *key)
{
    for (struct route *r = routes; r; r = r->next)
        if (strcmp(r->key, key) == 0)
            return r;
    return NULL;
}

/* Makes (or repoints) the route key at rev; name: the stored name ("" =
 * new, filled in). */
static struct route *route_set(const char *key, const char *org, const char *app_id, const char *label,
                               const char *rev_id, char name[27], struct hx_err *e)
{
    struct route *r = route_find(key);
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) {
            hx_fail(e, ENOMEM, "out of memory");
            return NULL;
        }
        snprintf(r->key, sizeof r->key, "%s", key);
        snprintf(r->org, sizeof r->org, "%s", org);
        snprintf(r->app_id, sizeof r->app_id, "%s", app_id);
        snprintf(r->name, sizeof r->name, "%s", name);
        if (expose_app_route(r->name, key, label, r->domain, sizeof r->domain, e) < 0) {
            free(r);
            return NULL;
        }
        expose_app_set_connect(on_app_connect);
        r->next = routes;
        routes = r;
        snprintf(name, 27, "%s", r->name);
    }
    snprintf(r->rev_id, sizeof r->rev_id, "%s", rev_id ? rev_id : "");
    return r;
}

static void route_remove(const char *key)
{
    for (struct route **pp = &routes; *pp; pp = &(*pp)->next) {
        struct route *r = *pp;
        if (strcmp(r->key, key) == 0) {
            *pp = r->next;
            expose_app_unroute(r->name);
            free(r);
            return;
        }
    }
}

static bool rev_routed(const char *rev_id)
{
    for (struct route *r = routes; r; r = r->next)
        if (strcmp(r->rev_id, rev_id) == 0)
            return true;
    return false;
}

/* ---- instances ------------------------------------------------------------ */

static void inst_stop(struct instance *in, const char *why);

static void on_inst_closed(uv_handle_t *h)
{
    struct instance *in = h->data;
    json_decref(in->env);
    json_decref(in->args);
    free(in);
}

static void inst_free(struct instance *in)
{
    for (struct instance **pp = &instances; *pp; pp = &(*pp)->next)
        if (*pp == in) {
            *pp = in->next;
            break;
        }
    uv_close((uv_handle_t *)&in->timer, on_inst_closed);
}

/* Stops every instance of rev_id. */
static void inst_stop_rev(const char *rev_id, const char *why)
{
    for (struct instance *in = instances, *nx; in; in = nx) {
        nx = in->next;
        if (strcmp(in->rev_id, rev_id) == 0)
            inst_stop(in, why);
    }
}

static void inst_refuse_all(struct instance *in, int err)
{
    for (unsigned i = 0; i < in->n_reqs; i++)
        expose_refuse(in->reqs[i], err);
    in->n_reqs = 0;
}

static void runtime_log(struct instance *in, const char *level, const char *s, size_t n)
{
    int64_t now = now_ms();
    in->tokens += (double)(now - in->tok_ms) * RUNTIME_LOG_RATE / 1000.0;
    if (in->tokens > RUNTIME_LOG_RATE)
        in->tokens = RUNTIME_LOG_RATE;
    in->tok_ms = now;
    if (in->tokens < 1) {
        in->dropped++;
        return;
    }
    in->tokens -= 1;
    char msg[LOG_LINE_MAX + 1];
    size_t k = 0;
    if (in->dropped) {
        char note[96];
        int m = snprintf(note, sizeof note, "(%u log lines dropped: more than %d a second)", in->dropped,
                         RUNTIME_LOG_RATE);
        struct hx_err e = {0};
        store_log_add(g_daemon.store, in->app_id, in->rev_id, hx_now_ms(), "warn", note, RUNTIME_LOGS_KEEP, &e);
        (void)m;
        in->dropped = 0;
    }
    for (size_t i = 0; i < n && k < LOG_LINE_MAX; i++)
        msg[k++] = (unsigned char)s[i] >= 0x20 || s[i] == '\t' ? s[i] : '?';
    msg[k] = 0;
    if (!hx_utf8_printable(msg, k))
        for (size_t i = 0; i < k; i++)
            if ((unsigned char)msg[i] >= 0x80)
                msg[i] = '?';
    struct hx_err e = {0};
    if (store_log_add(g_daemon.store, in->app_id, in->rev_id, hx_now_ms(), level, msg, RUNTIME_LOGS_KEEP, &e) < 0)
        fprintf(stderr, "hutchd: apps: log: %s\n", e.msg);
    if (!strcmp(level, "error")) {
        size_t l = strlen(in->last_err);
        if (l + k + 2 >= sizeof in->last_err)
            in->last_err[0] = 0, l = 0;
        snprintf(in->last_err + l, sizeof in->last_err - l, "%s%s", l ? " | " : "", msg);
    }
}

static void on_inst_line_out(void *ud, const char *s, size_t n)
{
    runtime_log(ud, "info", s, n);
}

static void on_inst_line_err(void *ud, const char *s, size_t n)
{
    runtime_log(ud, "error", s, n);
}

static void inst_ready(struct instance *in)
{
    in->state = I_READY;
    in->up_ms = now_ms();
    in->last_req_ms = in->up_ms; /* idle counts from when it could first answer (a wake-up may take seconds) */
    struct sandbox *sb = sandbox_find(in->sb_id);
    for (unsigned i = 0; i < in->n_reqs; i++)
        expose_dial(sb, in->port, in->reqs[i]);
    in->n_reqs = 0;
    if (in->job) {
        struct job *j = in->job;
        in->job = NULL;
        build_logf(j, "info", "the app listens on port %d in sandbox %s", in->port, in->sb_id);
        progress(j, "warmup", "succeeded");
        deploy_serve(j); /* routing */
    }
}

static void on_inst_timer(uv_timer_t *t);

static void inst_arm(struct instance *in, uint64_t ms)
{
    uv_timer_start(&in->timer, on_inst_timer, ms, 0);
}

static bool on_inst_spawned(void *ud, uint32_t pid, const struct hx_err *err)
{
    struct instance *in = ud;
    in->spawn_pending = false;
    if (in->state == I_STOPPED) {
        if (!in->working)
            inst_free(in);
        return false;
    }
    if (err) {
        snprintf(in->last_err, sizeof in->last_err, "%s", err->msg);
        inst_stop(in, "the entrypoint could not be started");
        return false;
    }
    in->pid = pid;
    in->state = I_STARTING;
    in->start_deadline = now_ms() + START_TIMEOUT_MS;
    inst_arm(in, 50);
    return true;
}

static void on_inst_output(void *ud, unsigned fd, const uint8_t *p, size_t n)
{
    struct instance *in = ud;
    if (fd > 1)
        return;
    lines_feed(&in->lb[fd], p, n, n == 0, fd ? on_inst_line_err : on_inst_line_out, in);
}

static void inst_spawn(struct instance *in);

static void on_inst_exit(void *ud, int code, const char *sig, bool oom)
{
    struct instance *in = ud;
    in->pid = 0;
    if (in->state == I_STOPPED)
        return;
    char what[160];
    snprintf(what, sizeof what, "the app exited (%s%s%d%s)", sig && sig[0] ? sig : "code ", sig && sig[0] ? "" : "",
             sig && sig[0] ? 0 : code, oom ? ", out of memory" : "");
    if (sig && sig[0])
        snprintf(what, sizeof what, "the app was killed by %s%s", sig, oom ? " (out of memory)" : "");
    else
        snprintf(what, sizeof what, "the app exited with code %d", code);
    runtime_log(in, "error", what, strlen(what));
    inst_refuse_all(in, ECONNREFUSED);
    if (in->job) { /* never listened: the deploy fails, production stays where it was */
        struct job *j = in->job;
        in->job = NULL;
        job_finish(j, "error", "%s before it listened: %.300s", what, in->last_err);
        return inst_stop(in, "its deploy failed");
    }
    /* a crash: again after a backoff that doubles while it keeps crashing */
    if (now_ms() - in->up_ms > STABLE_MS)
        in->restarts = 0;
    uint64_t delay = BACKOFF_MIN_MS;
    for (int i = 0; i < in->restarts && delay < BACKOFF_MAX_MS; i++)
        delay *= 2;
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    in->restarts++;
    in->state = I_BACKOFF;
    char note[96];
    snprintf(note, sizeof note, "restarting in %llu ms (restart %d)", (unsigned long long)delay, in->restarts);
    runtime_log(in, "warn", note, strlen(note));
    inst_arm(in, delay);
}

static const struct proc_sink inst_sink = {on_inst_spawned, on_inst_output, on_inst_exit};

static void inst_spawn(struct instance *in)
{
    struct sandbox *sb = sandbox_find(in->sb_id);
    struct hx_err e = {0};
    if (!sb)
        return inst_stop(in, "its sandbox is gone");
    in->spawn_pending = true;
    in->state = I_STARTING;
    in->last_err[0] = 0;
    if (sandbox_spawn_internal(sb, "/usr/local/bin/deno", in->args, in->env, APP_DIR, &inst_sink, in, &e) < 0) {
        in->spawn_pending = false;
        snprintf(in->last_err, sizeof in->last_err, "%s", e.msg);
        inst_stop(in, "the entrypoint could not be started");
    }
}

static void on_inst_timer(uv_timer_t *t)
{
    struct instance *in = t->data;
    int64_t now = now_ms();
    struct sandbox *sb = sandbox_find(in->sb_id);
    switch (in->state) {
    case I_STARTING:
        if (!in->pid || !sb)
            return inst_arm(in, 50);
        in->port = expose_pid_port(sb, (int)in->pid);
        if (in->port > 0)
            return inst_ready(in), inst_arm(in, 1000);
        if (now > in->start_deadline) {
            snprintf(in->last_err, sizeof in->last_err, "it did not listen on a port within %d s",
                     START_TIMEOUT_MS / 1000);
            if (in->job) {
                struct job *j = in->job;
                in->job = NULL;
                job_finish(j, "error", "the app %s", in->last_err);
            }
            return inst_stop(in, "the app did not listen");
        }
        return inst_arm(in, 100);
    case I_BACKOFF:
        return inst_spawn(in);
    case I_READY: {
        uint64_t idle = (uint64_t)g_daemon.cfg->app_idle_s * 1000;
        if (idle && now - in->last_req_ms >= (int64_t)idle && !in->job)
            return inst_stop(in, "idle: scaled to zero");
        return inst_arm(in, 1000);
    }
    default:
        return;
    }
}

static void on_inst_sandbox(struct sandbox *sb, const struct hx_err *err, void *ud)
{
    struct instance *in = ud;
    in->spawn_pending = false;
    if (in->state == I_STOPPED) {
        if (sb)
            sandbox_stop_soon(sb->id, "the app instance was stopped");
        if (!in->working)
            inst_free(in);
        return;
    }
    if (!sb) {
        snprintf(in->last_err, sizeof in->last_err, "%s", err ? err->msg : "failed");
        if (in->job) {
            struct job *j = in->job;
            in->job = NULL;
            job_finish(j, "error", "starting the app's sandbox: %s", in->last_err);
        }
        return inst_stop(in, "its sandbox did not start");
    }
    snprintf(in->sb_id, sizeof in->sb_id, "%s", sb->id);
    inst_spawn(in);
}

static void on_inst_work(uv_work_t *w)
{
    struct instance *in = w->data;
    struct config *cfg = g_daemon.cfg;
    const char *snap = in->cmd_desc; /* the snapshot id travels in cmd_desc until the clone is made */
    if ((in->wrc = storage_pool_open(cfg->state_dir, cfg->storage_size, false, &in->werr)) < 0)
        return;
    in->wrc = storage_image_clone(snap, in->vol_id, 0, STORAGE_RELEASE_WAIT_MS, &in->werr);
}

static void on_inst_work_done(uv_work_t *w, int status)
{
    (void)status;
    struct instance *in = w->data;
    in->working = false;
    if (in->state == I_STOPPED) {
        image_drop_later(in->vol_id);
        if (!in->spawn_pending)
            inst_free(in);
        return;
    }
    if (in->wrc < 0) {
        snprintf(in->last_err, sizeof in->last_err, "%s", in->werr.msg);
        if (in->job) {
            struct job *j = in->job;
            in->job = NULL;
            job_finish(j, "error", "making the app instance's volume: %s", in->werr.msg);
        }
        return inst_stop(in, "no volume");
    }
    struct hx_err e = {0};
    char sorg[80];
    deploy_storage_org(in->org, sorg);
    json_t *conf = json_pack("{s:[{s:s, s:s}]}", "volumes", "volume", in->vol_id, "path", APP_DIR);
    json_t *labels = json_pack("{s:s, s:s, s:s}", "hutch.app", in->app_slug, "hutch.revision", in->rev_id,
                               "hutch.role", "app");
    /* no_adopt: the instance registry lives in this hutchd only; the next one
     * starts fresh instances (and removes this one's volume), so this sandbox
     * is not left running for it (live restore). */
    struct sandbox_params p = {.org = in->org, .memory_mb = g_daemon.cfg->memory_default_mb, .labels = labels,
                               .no_adopt = true};
    int st = 0;
    const char *code = NULL;
    int r = sb_storage_parse(conf, sorg, &p.storage, &st, &code, &e);
    json_decref(conf);
    if (r == 0) {
        in->spawn_pending = true;
        r = sandbox_create(&p, on_inst_sandbox, in, &e);
        if (r < 0) {
            in->spawn_pending = false;
            sb_storage_free(p.storage);
        }
    }
    json_decref(labels);
    if (r < 0) {
        snprintf(in->last_err, sizeof in->last_err, "%s", e.msg);
        if (in->job) {
            struct job *j = in->job;
            in->job = NULL;
            job_finish(j, "error", "starting the app's sandbox: %s", e.msg);
        }
        inst_stop(in, "its sandbox did not start");
    }
}

/* A static runtime's deno arguments: hutch's static file server
 * (static_server.js) as a data: URL, reading only the app directory,
 * listening only on its port; ROOT = APP_DIR/cwd. */
static json_t *static_args(const char *cwd, bool spa, const char *port)
{
    static const char prefix[] = "data:application/javascript;base64,";
    size_t n = sizeof static_server_js - 1;
    char *url = malloc(sizeof prefix + hx_b64_encoded_len(n));
    if (!url)
        return NULL;
    memcpy(url, prefix, sizeof prefix - 1);
    hx_b64_encode((const uint8_t *)static_server_js, n, url + sizeof prefix - 1);
    char root[APP_ASSET_PATH_MAX + 16], net[32];
    snprintf(root, sizeof root, "%s%s%s", APP_DIR, strcmp(cwd, ".") ? "/" : "", strcmp(cwd, ".") ? cwd : "");
    snprintf(net, sizeof net, "--allow-net=0.0.0.0:%s", port);
    json_t *args = json_pack("[s, s, s, s, s, s, s, s]", "run", "--allow-read=" APP_DIR, net, url, root, APP_DIR, port,
                             spa ? "spa" : "");
    free(url);
    return args;
}

/* Boots an instance of rev: a volume cloned from its snapshot at APP_DIR
 * in a fresh sandbox, then deno with its entrypoint (or hutch's static
 * file server). */
static struct instance *inst_new(const char *org, json_t *app, json_t *rev, const char *context, struct hx_err *e)
{
    const char *snap = json_string_value(json_object_get(rev, "_snapshot"));
    json_t *cfgj = json_object_get(rev, "config");
    json_t *rt = json_object_get(cfgj, "runtime");
    const char *entry = json_string_value(json_object_get(rt, "entrypoint"));
    const char *cwd = json_string_value(json_object_get(rt, "cwd"));
    bool is_static = strcmp(json_string_value(json_object_get(rt, "type")) ?: "", "static") == 0;
    if (!snap || (is_static ? !cwd : !entry)) {
        hx_fail(e, ENOENT, "the revision has no files or no %s", is_static ? "static directory" : "entrypoint");
        return NULL;
    }
    uint64_t cap = (uint64_t)json_integer_value(json_object_get(rev, "_capacity"));
    char vol[32];
    /* after a restart the pool opens at the first wake (it exists: the snapshot is in it) */
    if (!storage_pool_is_open() &&
        storage_pool_open(g_daemon.cfg->state_dir, g_daemon.cfg->storage_size, false, e) < 0)
        return NULL;
    if (vol_id_new("vol", NULL, g_daemon.cfg->node, vol) < 0 || pool_budget(cap, e) < 0 ||
        image_record(org, vol, "volume", cap, snap, e) < 0)
        return NULL;
    struct instance *in = calloc(1, sizeof *in);
    if (!in) {
        image_drop_later(vol);
        hx_fail(e, ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(in->vol_id, sizeof in->vol_id, "%s", vol);
    snprintf(in->rev_id, sizeof in->rev_id, "%s", json_string_value(json_object_get(rev, "id")));
    snprintf(in->app_id, sizeof in->app_id, "%s", json_string_value(json_object_get(app, "id")));
    snprintf(in->app_slug, sizeof in->app_slug, "%s", json_string_value(json_object_get(app, "slug")));
    snprintf(in->org, sizeof in->org, "%s", org);
    snprintf(in->context, sizeof in->context, "%s", context);
    snprintf(in->cmd_desc, sizeof in->cmd_desc, "%s", snap);
    in->env = env_for(org, app, rev, context);
    char port[8];
    snprintf(port, sizeof port, "%d", SERVE_PORT);
    json_object_set_new(in->env, "PORT", json_string(port));
    json_object_set_new(in->env, "DENO_DEPLOYMENT_ID", json_string(in->rev_id));
    in->want = app_instances(json_object_get(app, "labels"));
    if (in->want < 1)
        in->want = 1;
    if (is_static) {
        in->args = static_args(cwd, json_is_true(json_object_get(rt, "spa")), port);
    } else {
        /* `deno serve` for a module whose default export has fetch(), else `deno run` (Deno.serve) */
        bool serve = json_is_true(json_object_get(rev, "_serve"));
        in->args = serve ? json_pack("[s, s, s, s]", "serve", "--allow-all", "--port", port)
                         : json_pack("[s, s]", "run", "--allow-all");
        json_array_append_new(in->args, json_string(entry));
        size_t i;
        json_t *a;
        json_array_foreach(json_object_get(rt, "args"), i, a) json_array_append(in->args, a);
    }
    if (!in->args) {
        json_decref(in->env);
        free(in);
        image_drop_later(vol);
        hx_fail(e, ENOMEM, "out of memory");
        return NULL;
    }
    uv_timer_init(g_daemon.loop, &in->timer);
    in->timer.data = in;
    in->last_req_ms = now_ms();
    in->state = I_BOOTING;
    in->next = instances;
    instances = in;
    in->working = true;
    in->work.data = in;
    uv_queue_work(g_daemon.loop, &in->work, on_inst_work, on_inst_work_done);
    return in;
}

static void inst_stop(struct instance *in, const char *why)
{
    if (in->state == I_STOPPED)
        return;
    fprintf(stderr, "hutchd: apps: %s instance of %s stops: %s\n", in->rev_id, in->app_slug, why);
    in->state = I_STOPPED;
    uv_timer_stop(&in->timer);
    inst_refuse_all(in, ENOENT);
    struct sandbox *sb = in->sb_id[0] ? sandbox_find(in->sb_id) : NULL;
    if (sb) {
        in->stopping = true;
        sandbox_proc_unsink(sb, in);
        sandbox_stop_soon(sb->id, why);
    }
    if (in->working)
        return; /* on_inst_work_done drops the volume and frees */
    image_drop_later(in->vol_id);
    in->vol_id[0] = 0;
    if (!in->spawn_pending)
        inst_free(in);
}

void deploy_sandbox_stopped(struct sandbox *sb)
{
    for (struct job *j = jobs; j; j = j->next)
        if (j->build_sb[0] && strcmp(j->build_sb, sb->id) == 0 && j->phase != P_DONE) {
            j->build_sb[0] = 0;
            if (j->phase == P_BUILDING)
                job_finish(j, j->cancelled ? "cancelled" : j->timed_out ? "timed_out" : "error",
                           "the build sandbox stopped: %s", sb->stop_reason[0] ? sb->stop_reason : "unknown");
        }
    for (struct instance *in = instances; in; in = in->next)
        if (in->sb_id[0] && strcmp(in->sb_id, sb->id) == 0 && in->state != I_STOPPED) {
            sandbox_proc_unsink(sb, in);
            in->sb_id[0] = 0;
            if (in->job) {
                struct job *j = in->job;
                in->job = NULL;
                job_finish(j, "error", "the app's sandbox stopped: %s", sb->stop_reason);
            }
            inst_stop(in, "its sandbox stopped"); /* the next request wakes a new one */
            return;
        }
}

/* Starts one more instance of route r's revision (a wake-up, or topping
 * up to the app's instance count); NULL and e filled when it cannot. */
static struct instance *inst_wake(struct route *r, struct hx_err *e)
{
    json_t *app = load_app(r->org, r->app_id), *rev = NULL;
    store_obj_get(g_daemon.store, "revision", r->org, r->rev_id, &rev, e);
    struct instance *in = NULL;
    if (app && rev)
        in = inst_new(r->org, app, rev, r->key[0] == 'p' ? "production" : "preview", e);
    else if (!e->msg[0])
        hx_fail(e, ENOENT, "the app is gone");
    json_decref(app);
    json_decref(rev);
    return in;
}

/* A new connection to route key: dialed to one of its revision's ready
 * instances, in turn; held by a starting (or restarting) one when none is
 * ready; or it wakes one. While fewer than the app's instance count run
 * and none is starting, one more starts. */
static void on_app_connect(const char *key, uint32_t req)
{
    struct route *r = route_find(key);
    if (!r || !r->rev_id[0])
        return expose_refuse(req, ENOENT);
    struct instance *ready[APP_INSTANCES_MAX * 2], *starting = NULL, *waiting = NULL;
    unsigned nready = 0, live = 0;
    int want = 1;
    for (struct instance *in = instances; in; in = in->next) {
        if (in->state == I_STOPPED || strcmp(in->rev_id, r->rev_id))
            continue;
        live++;
        if (in->want > want)
            want = in->want;
        if (in->state == I_READY && nready < HX_ARRAY_LEN(ready))
            ready[nready++] = in;
        else if (in->state == I_BOOTING || in->state == I_STARTING)
            starting = in;
        else
            waiting = in;
    }
    struct hx_err e = {0};
    if (live && live < (unsigned)want && !starting) {
        starting = inst_wake(r, &e);
        if (!starting)
            fprintf(stderr, "hutchd: apps: one more instance of %s: %s\n", r->rev_id, e.msg);
        else
            fprintf(stderr, "hutchd: apps: starting instance %u of %d of %s\n", live + 1, want, r->rev_id);
    }
    if (nready) {
        struct instance *in = ready[r->rr++ % nready];
        in->last_req_ms = now_ms();
        return expose_dial(sandbox_find(in->sb_id), in->port, req);
    }
    struct instance *in = starting ? starting : waiting;
    if (!in) { /* scaled to zero (or never started since hutchd started): wake one */
        in = inst_wake(r, &e);
        if (!in) {
            fprintf(stderr, "hutchd: apps: waking %s: %s\n", r->rev_id, e.msg);
            return expose_refuse(req, ECONNREFUSED);
        }
        fprintf(stderr, "hutchd: apps: waking an instance of %s for a request\n", r->rev_id);
    }
    in->last_req_ms = now_ms();
    if (in->n_reqs >= PENDING_MAX)
        return expose_refuse(req, EAGAIN);
    in->reqs[in->n_reqs++] = req;
}

/* ---- deploying --------------------------------------------------------- */

/* Called when the snapshot is ready (start an instance) and again when it
 * listens (route traffic to it). */
static void deploy_serve(struct job *j)
{
    struct hx_err e = {0};
    j->phase = P_DEPLOYING;
    json_t *dep = json_object_get(j->progress, "deploying");
    json_t *tl = timeline_stage(j);
    if (strcmp(json_string_value(json_object_get(dep, "status")), "pending") == 0) {
        stage_set(dep, "running");
        stage_set(tl, "running");
        progress(j, "warmup", "running");
        json_t *rt = json_object_get(json_object_get(j->rev, "config"), "runtime");
        if (strcmp(json_string_value(json_object_get(rt, "type")) ?: "", "static") == 0)
            build_logf(j, "info", "serving %s/%s as a static site%s", APP_DIR, json_string_value(json_object_get(rt, "cwd")),
                       json_is_true(json_object_get(rt, "spa")) ? " (single-page app: index.html for unknown paths)" : "");
        else
            build_logf(j, "info", "starting the app: deno %s %s",
                       json_is_true(json_object_get(j->rev, "_serve")) ? "serve" : "run",
                       json_string_value(json_object_get(rt, "entrypoint")));
        json_t *app = load_app(j->org, j->app_id);
        bool prod = json_is_true(json_object_get(j->rev, "_production"));
        struct instance *in = app ? inst_new(j->org, app, j->rev, prod ? "production" : "preview", &e) : NULL;
        json_decref(app);
        if (!in)
            return job_finish(j, "error", "starting the app: %s", app ? e.msg : "the app was deleted");
        in->job = j;
        return;
    }
    /* it listens: route */
    progress(j, "routing", "running");
    json_t *app = load_app(j->org, j->app_id);
    if (!app)
        return job_finish(j, "error", "the app was deleted during the deploy");
    const char *slug = json_string_value(json_object_get(app, "slug"));
    char key[48], name[27];
    if (json_is_true(json_object_get(j->rev, "_production"))) {
        snprintf(key, sizeof key, "p:%s", j->app_id);
        snprintf(name, sizeof name, "%s", json_string_value(json_object_get(app, "_route")) ? json_string_value(json_object_get(app, "_route")) : "");
        struct route *old = route_find(key);
        char old_rev[32] = "";
        if (old)
            snprintf(old_rev, sizeof old_rev, "%s", old->rev_id);
        struct route *r = route_set(key, j->org, j->app_id, slug, j->rev_id, name, &e);
        if (!r) {
            json_decref(app);
            return job_finish(j, "error", "routing: %s", e.msg);
        }
        json_object_set_new(app, "_route", json_string(name));
        json_object_set_new(app, "_production", json_string(j->rev_id));
        store_obj_put(g_daemon.store, "app", j->app_id, j->org, slug, NULL, app, &e);
        build_logf(j, "info", "production: https://%s", r->domain);
        /* the revision it replaced stops serving (unless a preview URL still names it) */
        if (old_rev[0] && strcmp(old_rev, j->rev_id) && !rev_routed(old_rev)) {
            inst_stop_rev(old_rev, "production moved to a newer revision");
        }
    }
    if (json_is_true(json_object_get(j->rev, "_preview"))) {
        snprintf(key, sizeof key, "r:%s", j->rev_id);
        name[0] = 0;
        struct route *r = route_set(key, j->org, j->app_id, slug, j->rev_id, name, &e);
        if (!r) {
            json_decref(app);
            return job_finish(j, "error", "routing: %s", e.msg);
        }
        json_object_set_new(j->rev, "_route", json_string(name));
        build_logf(j, "info", "preview: https://%s", r->domain);
    }
    int want = app_instances(json_object_get(app, "labels"));
    json_decref(app);
    /* the app's other instances start now; the first one already serves */
    if (json_is_true(json_object_get(j->rev, "_production")))
        snprintf(key, sizeof key, "p:%s", j->app_id);
    struct route *rt = route_find(key);
    for (int n = 1; rt && n < want; n++) {
        if (!inst_wake(rt, &e)) {
            build_logf(j, "error", "starting instance %d of %d: %s", n + 1, want, e.msg);
            break;
        }
        build_logf(j, "info", "starting instance %d of %d", n + 1, want);
    }
    stage_set(json_object_get(tl, "routing"), "succeeded");
    stage_set(tl, "succeeded");
    stage_set(dep, "succeeded");
    job_finish(j, NULL, NULL);
}

int deploy_start(json_t *app, json_t *rev, struct sandbox *src, const char *path, json_t *assets, struct hx_err *e)
{
    unsigned active = 0;
    for (struct job *k = jobs; k; k = k->next)
        active += k->phase != P_DONE;
    if (active >= BUILDS_MAX) /* each is a sandbox and an image: a flood of deploys waits its turn at the client */
        return hx_fail(e, EAGAIN, "%u builds are running, the most this node runs at once; try again later", active);
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return hx_fail(e, ENOMEM, "out of memory");
    j->src_root = -1;
    snprintf(j->rev_id, sizeof j->rev_id, "%s", json_string_value(json_object_get(rev, "id")));
    snprintf(j->app_id, sizeof j->app_id, "%s", json_string_value(json_object_get(app, "id")));
    snprintf(j->app_slug, sizeof j->app_slug, "%s", json_string_value(json_object_get(app, "slug")));
    snprintf(j->org, sizeof j->org, "%s", json_string_value(json_object_get(rev, "_org")));
    j->capacity = (uint64_t)g_daemon.cfg->app_volume_mb << 20;
    json_object_set_new(rev, "_capacity", json_integer((json_int_t)j->capacity));
    if (src) {
        char p[64];
        snprintf(p, sizeof p, "/proc/%d/root", (int)src->pid);
        j->src_root = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (j->src_root < 0) {
            int err = errno;
            free(j);
            return hx_fail(e, err, "the sandbox's files cannot be reached: %s", strerror(err));
        }
        snprintf(j->src_path, sizeof j->src_path, "%s", path);
    } else {
        j->assets = json_incref(assets);
    }
    snprintf(j->stage, sizeof j->stage, "%s/apps/stage/%s", cfg_state(), j->rev_id);
    json_t *config = json_object_get(rev, "config");
    const char *ic = json_string_value(json_object_get(config, "install"));
    const char *bc = json_string_value(json_object_get(config, "build"));
    j->has_commands = (ic && *ic) || (bc && *bc);
    const char *tlname = json_is_true(json_object_get(rev, "_production")) ? "production" : "preview";
    j->progress = progress_new(ic && *ic, bc && *bc, ic, bc, tlname);
    j->logs = json_array();
    j->rev = json_incref(rev);
    uv_timer_init(g_daemon.loop, &j->timer);
    j->timer.data = j;
    j->next = jobs;
    jobs = j;
    json_object_set_new(rev, "status", json_string("building"));
    j->phase = P_PREPARING;
    progress(j, "preparing", "running");
    build_logf(j, "info", "preparing revision %s of %s from %s", j->rev_id, j->app_slug,
               src ? j->src_path : "an asset map");
    run_work(j, after_stage);
    return 0;
}

int deploy_cancel(const char *rev_id, struct hx_err *e)
{
    struct job *j = job_find(rev_id);
    if (!j || j->phase == P_DONE)
        return hx_fail(e, EALREADY, "revision %s is not building", rev_id);
    char now[32];
    iso_now(now);
    json_object_set_new(j->rev, "cancellation_requested_at", json_string(now));
    j->cancelled = true;
    if (j->working) { /* the worker's result is dropped when it returns */
        rev_save(j);
        return 0;
    }
    for (struct instance *in = instances; in; in = in->next)
        if (in->job == j) {
            in->job = NULL;
            inst_stop(in, "its deploy was cancelled");
        }
    job_finish(j, "cancelled", "the build was cancelled");
    return 0;
}

/* ---- SSE ----------------------------------------------------------------- */

static void sse_send(struct http_conn *c, json_t *doc)
{
    char *s = json_dumps(doc, JSON_COMPACT);
    if (!s)
        return;
    size_t n = strlen(s);
    char *msg = malloc(n + 8);
    if (msg) {
        memcpy(msg, "data: ", 6);
        memcpy(msg + 6, s, n);
        memcpy(msg + 6 + n, "\n\n", 2);
        http_stream_write(c, msg, n + 8);
        free(msg);
    }
    free(s);
}

static bool step_match(const char *filter, json_t *line)
{
    const char *st = json_string_value(json_object_get(line, "step"));
    return !filter[0] || (st && strcmp(filter, st) == 0);
}

static void watcher_flush(struct watcher *w)
{
    if (!w->logs)
        return sse_send(w->c, w->j->progress);
    while (w->sent < json_array_size(w->j->logs)) {
        json_t *line = json_array_get(w->j->logs, w->sent++);
        if (step_match(w->step, line))
            sse_send(w->c, line);
    }
}

static void watchers_progress(struct job *j)
{
    for (struct watcher *w = j->watchers; w; w = w->next)
        if (!w->logs)
            watcher_flush(w);
}

static void watchers_log(struct job *j)
{
    for (struct watcher *w = j->watchers; w; w = w->next)
        if (w->logs)
            watcher_flush(w);
}

static void watcher_unlink(struct watcher *w)
{
    for (struct watcher **pp = &w->j->watchers; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
}

static void watchers_end(struct job *j)
{
    while (j->watchers) {
        struct watcher *w = j->watchers;
        j->watchers = w->next;
        http_conn_on_abort(w->c, NULL, NULL);
        http_stream_end(w->c);
        free(w);
    }
}

static void on_watcher_abort(struct http_conn *c, void *ud)
{
    struct watcher *w = ud;
    struct job *j = w->j;
    watcher_unlink(w);
    free(w);
    http_stream_end(c);
    job_maybe_free(j);
}

void deploy_stream(struct http_conn *c, json_t *rev, bool logs, const char *step)
{
    const char *id = json_string_value(json_object_get(rev, "id"));
    struct job *j = id ? job_find(id) : NULL;
    if (!http_stream_begin(c, 200, "text/event-stream", NULL))
        return http_respond_error(c, 500, "INTERNAL", "cannot stream");
    if (!j || j->phase == P_DONE) { /* finished: what was kept, then the end */
        if (logs) {
            size_t i;
            json_t *line;
            json_array_foreach(json_object_get(rev, "_build_logs"), i, line) if (step_match(step ? step : "", line))
                sse_send(c, line);
        } else if (json_object_get(rev, "_progress")) {
            sse_send(c, json_object_get(rev, "_progress"));
        }
        return http_stream_end(c);
    }
    struct watcher *w = calloc(1, sizeof *w);
    if (!w)
        return http_stream_end(c);
    w->c = c;
    w->j = j;
    w->logs = logs;
    snprintf(w->step, sizeof w->step, "%s", step ? step : "");
    w->next = j->watchers;
    j->watchers = w;
    http_conn_on_abort(c, on_watcher_abort, w);
    watcher_flush(w);
}

/* ---- timelines ------------------------------------------------------------ */

static json_t *timeline(json_t *app, const char *slug, const char *context, const char *domain)
{
    return json_pack("{s:s, s:{}, s:{s:O, s:O}, s:{s:s}, s:[{s:s}]}", "slug", slug, "partition", "app", "id",
                     json_object_get(app, "id"), "slug", json_object_get(app, "slug"), "context", "slug", context,
                     "domains", "domain", domain);
}

static const char *route_domain(const char *key)
{
    struct route *r = route_find(key);
    return r ? r->domain : NULL;
}

json_t *deploy_app_timelines(json_t *app)
{
    json_t *out = json_array();
    char key[48];
    snprintf(key, sizeof key, "p:%s", json_string_value(json_object_get(app, "id")));
    const char *d = route_domain(key);
    if (d)
        json_array_append_new(out, timeline(app, "production", "production", d));
    for (struct route *r = routes; r; r = r->next)
        if (r->key[0] == 'r' && strcmp(r->app_id, json_string_value(json_object_get(app, "id"))) == 0) {
            char slug[64];
            snprintf(slug, sizeof slug, "preview-%s", r->rev_id);
            json_array_append_new(out, timeline(app, slug, "preview", r->domain));
        }
    return out;
}

json_t *deploy_revision_timelines(json_t *app, json_t *rev)
{
    json_t *out = json_array();
    const char *rid = json_string_value(json_object_get(rev, "id"));
    char key[48];
    snprintf(key, sizeof key, "p:%s", json_string_value(json_object_get(app, "id")));
    struct route *r = route_find(key);
    if (r && rid && strcmp(r->rev_id, rid) == 0)
        json_array_append_new(out, timeline(app, "production", "production", r->domain));
    snprintf(key, sizeof key, "r:%s", rid ? rid : "");
    r = route_find(key);
    if (r) {
        char slug[64];
        snprintf(slug, sizeof slug, "preview-%s", rid);
        json_array_append_new(out, timeline(app, slug, "preview", r->domain));
    }
    return out;
}

void deploy_revision_deleted(json_t *rev)
{
    const char *rid = json_string_value(json_object_get(rev, "id"));
    if (!rid)
        return;
    struct hx_err e = {0};
    deploy_cancel(rid, &e);
    char key[48];
    snprintf(key, sizeof key, "r:%s", rid);
    route_remove(key);
    inst_stop_rev(rid, "its revision was deleted");
    const char *snap = json_string_value(json_object_get(rev, "_snapshot"));
    if (snap)
        image_drop_later(snap);
}

void deploy_app_deleted(json_t *app)
{
    const char *aid = json_string_value(json_object_get(app, "id"));
    for (struct job *j = jobs; j; j = j->next)
        if (strcmp(j->app_id, aid) == 0 && j->phase != P_DONE) {
            struct hx_err e = {0};
            deploy_cancel(j->rev_id, &e);
        }
    for (struct instance *in = instances, *nx; in; in = nx) {
        nx = in->next;
        if (strcmp(in->app_id, aid) == 0)
            inst_stop(in, "its app was deleted");
    }
    for (struct route *r = routes, *nx; r; r = nx) {
        nx = r->next;
        if (strcmp(r->app_id, aid) == 0)
            route_remove(r->key);
    }
}

/* ---- start and stop ------------------------------------------------------- */

/* A previous hutchd's apps: production and preview routes come back at
 * their stored names (their sandboxes start at the first request); builds
 * it left unfinished failed; its build and instance images go. */
static void restore_app(const char *org, json_t *app, void *ud)
{
    (void)ud;
    const char *prod = json_string_value(json_object_get(app, "_production"));
    const char *name = json_string_value(json_object_get(app, "_route"));
    if (!prod || !name)
        return;
    struct hx_err e = {0};
    char key[48], nm[27];
    snprintf(key, sizeof key, "p:%s", json_string_value(json_object_get(app, "id")));
    snprintf(nm, sizeof nm, "%s", name);
    if (!route_set(key, org, json_string_value(json_object_get(app, "id")), json_string_value(json_object_get(app, "slug")),
                   prod, nm, &e))
        fprintf(stderr, "hutchd: apps: %s: route: %s\n", json_string_value(json_object_get(app, "slug")), e.msg);
}

static void restore_revision(const char *org, json_t *rev, void *ud)
{
    (void)ud;
    const char *status = json_string_value(json_object_get(rev, "status"));
    const char *id = json_string_value(json_object_get(rev, "id"));
    const char *app_id = json_string_value(json_object_get(rev, "_app"));
    struct hx_err e = {0};
    if (!status || !id || !app_id)
        return;
    if (strcmp(status, "queued") == 0 || strcmp(status, "building") == 0) {
        char now[32];
        iso_now(now);
        json_object_set_new(rev, "status", json_string("failed"));
        json_object_set_new(rev, "failure_reason", json_string("error"));
        json_object_set_new(rev, "_failure_message", json_string("hutchd restarted during the build"));
        json_object_set_new(rev, "build_finished_at", json_string(now));
        json_t *logs = json_object_get(rev, "_build_logs");
        if (!json_is_array(logs))
            json_object_set_new(rev, "_build_logs", logs = json_array());
        json_array_append_new(logs, json_pack("{s:s, s:s, s:s, s:s}", "timestamp", now, "level", "error", "message",
                                              "hutchd restarted during the build", "step", "preparing"));
        store_obj_put(g_daemon.store, "revision", id, org, NULL, app_id, rev, &e);
        const char *snap = json_string_value(json_object_get(rev, "_snapshot"));
        if (snap)
            image_drop_later(snap);
        return;
    }
    const char *name = json_string_value(json_object_get(rev, "_route"));
    if (strcmp(status, "succeeded") == 0 && name && json_is_true(json_object_get(rev, "_preview"))) {
        char key[48], nm[27];
        snprintf(key, sizeof key, "r:%s", id);
        snprintf(nm, sizeof nm, "%s", name);
        json_t *app = load_app(org, app_id);
        if (app && !route_set(key, org, app_id, json_string_value(json_object_get(app, "slug")), id, nm, &e))
            fprintf(stderr, "hutchd: apps: %s: route: %s\n", id, e.msg);
        json_decref(app);
    }
}

void deploy_init(void)
{
    struct hx_err e = {0};
    struct config *cfg = g_daemon.cfg;
    char stage[4300];
    snprintf(stage, sizeof stage, "%s/apps/stage", cfg->state_dir);
    app_stage_remove(stage);
    json_t *vols = NULL;
    if (store_app_volumes(g_daemon.store, &vols, &e) == 0 && json_array_size(vols) &&
        storage_pool_open(cfg->state_dir, cfg->storage_size, false, &e) == 0) {
        size_t i;
        json_t *v;
        json_array_foreach(vols, i, v) image_drop_later(json_string_value(v));
    }
    json_decref(vols);
    expose_app_set_connect(on_app_connect);
    if (store_obj_each(g_daemon.store, "revision", restore_revision, NULL, &e) < 0 ||
        store_obj_each(g_daemon.store, "app", restore_app, NULL, &e) < 0)
        fprintf(stderr, "hutchd: apps: %s\n", e.msg);
}

void deploy_fini(void)
{
    for (struct job *j = jobs, *nx; j; j = nx) {
        nx = j->next;
        if (j->phase != P_DONE)
            job_finish(j, "error", "hutchd stopped during the build");
    }
    for (struct instance *in = instances, *nx; in; in = nx) {
        nx = in->next;
        inst_stop(in, "hutchd stops");
    }
}
