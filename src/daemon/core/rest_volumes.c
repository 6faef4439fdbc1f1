/* REST for volumes and snapshots, as SDK 0.13.2 sends and reads it
 * (client.js VolumesClient/SnapshotsClient; docs/storage.md): create, get,
 * list (limit, cursor, search; Link rel="next"), delete, and snapshot. The
 * slow parts (mkfs, reflink copies, unlink) run on libuv's worker threads;
 * the database is written on the loop. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "daemon/api/http.h"
#include "daemon/core/sandbox.h"
#include "daemon/core/volumes.h"
#include "daemon/sandbox/disk.h"
#include "daemon/storage/names.h"
#include "daemon/storage/pool.h"
#include "daemon/storage/share.h"
#include "daemon/store/store.h"

#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define BUSY_MAX 64
#define BUILTIN "builtin:debian-13"

/* Ids a job works on: a sandbox cannot take them, nothing else may change them. */
static char busy[BUSY_MAX][32];

bool rest_volumes_busy(const char *id)
{
    for (int i = 0; i < BUSY_MAX; i++)
        if (busy[i][0] && strcmp(busy[i], id) == 0)
            return true;
    return false;
}

static bool busy_add(const char *id)
{
    for (int i = 0; i < BUSY_MAX; i++)
        if (!busy[i][0]) {
            snprintf(busy[i], sizeof busy[i], "%s", id);
            return true;
        }
    return false;
}

static void busy_del(const char *id)
{
    for (int i = 0; i < BUSY_MAX; i++)
        if (strcmp(busy[i], id) == 0)
            busy[i][0] = 0;
}

static json_t *vol_json(const struct vol_rec *r)
{
    if (strcmp(r->kind, "volume") == 0)
        return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:b, s:o}", "id", r->id, "slug", r->slug, "region", r->region,
                         "capacity", (json_int_t)r->capacity, "estimated_allocated_size", (json_int_t)r->allocated,
                         "estimated_flattened_size", (json_int_t)r->flattened, "is_bootable", r->bootable,
                         "base_snapshot",
                         r->base_id[0] ? json_pack("{s:s, s:s}", "id", r->base_id, "slug", r->base_slug) : json_null());
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:b, s:{s:s, s:s}}", "id", r->id, "slug", r->slug, "region", r->region,
                     "allocated_size", (json_int_t)r->allocated, "flattened_size", (json_int_t)r->flattened,
                     "is_bootable", r->bootable, "volume", "id", r->base_id, "slug", r->base_slug);
}

static void respond_store_error(struct http_conn *c, const struct hx_err *e, const char *notfound)
{
    if (e->code == ENOENT)
        return http_respond_error(c, 404, notfound, "%s", e->msg);
    http_respond_error(c, 500, "INTERNAL", "%s", e->msg);
}

/* ---- worker jobs ----------------------------------------------------- */

enum job_op { JOB_CREATE, JOB_CLONE, JOB_SNAPSHOT, JOB_DELETE };

struct job {
    uv_work_t w;
    struct http_conn *c;
    enum job_op op;
    struct vol_rec rec;        /* the object made or deleted */
    char src[32];              /* JOB_CLONE / JOB_SNAPSHOT: the image copied */
    char populate[4200];       /* JOB_CREATE from an image: its rootfs */
    bool populate_on;
    uint64_t src_ex, src_flat; /* JOB_SNAPSHOT: the volume's sizes afterwards */
    int rc;
    struct hx_err e;
};

static void job_work(uv_work_t *w)
{
    struct job *j = w->data;
    struct config *cfg = g_daemon.cfg;
    if ((j->rc = storage_pool_open(cfg->state_dir, cfg->storage_size, j->op == JOB_CREATE || j->op == JOB_CLONE,
                                   &j->e)) < 0)
        return;
    switch (j->op) {
    case JOB_CREATE:
        j->rc = storage_image_create(j->rec.id, j->rec.capacity, j->populate_on ? j->populate : NULL, &j->e);
        break;
    case JOB_CLONE:
    case JOB_SNAPSHOT:
        j->rc = storage_image_clone(j->src, j->rec.id, j->rec.capacity, STORAGE_RELEASE_WAIT_MS, &j->e);
        if (j->op == JOB_SNAPSHOT && j->rc == 0)
            storage_image_sizes(j->src, &j->src_ex, &j->src_flat);
        break;
    case JOB_DELETE:
        /* a snapshot root's shared mount, lingering or held by a sandbox
         * that is stopping, holds the image's lock: let it go first */
        for (int waited = 0; storage_share_drop(j->rec.id) == -EBUSY && waited < 5000; waited += 10)
            usleep(10000);
        j->rc = storage_image_remove(j->rec.id, STORAGE_RELEASE_WAIT_MS, &j->e);
        return;
    }
    if (j->rc == 0)
        storage_image_sizes(j->rec.id, &j->rec.allocated, &j->rec.flattened);
}

static void job_done(uv_work_t *w, int status)
{
    struct job *j = w->data;
    struct hx_err e = {0};
    busy_del(j->rec.id);
    busy_del(j->src);
    if (status < 0 && j->rc == 0)
        j->rc = hx_fail(&j->e, EIO, "the job was cancelled");
    if (j->op == JOB_DELETE) {
        if (j->rc < 0)
            http_respond_error(j->c, j->rc == -EBUSY ? 409 : 500, j->rc == -EBUSY ? "VOLUME_IN_USE" : "INTERNAL", "%s",
                               j->e.msg);
        else if (store_vol_delete(g_daemon.store, j->rec.id, &e) < 0)
            respond_store_error(j->c, &e, "NOT_FOUND");
        else {
            printf("hutchd: %s %s (%s) deleted\n", j->rec.kind, j->rec.slug, j->rec.id);
            http_respond(j->c, 200, "application/json", NULL, "{}", 2);
        }
        free(j);
        return;
    }
    if (j->rc < 0) {
        /* the row was the reservation of the slug and the space: give both back */
        store_vol_delete(g_daemon.store, j->rec.id, &e);
        int st = j->rc == -ENOSPC ? 507 : j->rc == -EBUSY ? 409 : 500;
        http_respond_error(j->c, st, st == 507 ? "INSUFFICIENT_STORAGE" : st == 409 ? "VOLUME_IN_USE" : "STORAGE_FAILED",
                           "%s", j->e.msg);
        free(j);
        return;
    }
    store_vol_set_sizes(g_daemon.store, j->rec.id, j->rec.allocated, j->rec.flattened, &e);
    if (j->op == JOB_SNAPSHOT)
        store_vol_set_sizes(g_daemon.store, j->src, j->src_ex, j->src_flat, &e);
    printf("hutchd: %s %s (%s) created in %s: %" PRIu64 " MiB\n", j->rec.kind, j->rec.slug, j->rec.id, j->rec.region,
           j->rec.capacity >> 20);
    http_respond_json(j->c, 200, vol_json(&j->rec));
    free(j);
}

/* Reserves the slug and the pool space (the row), then runs the job. */
static void start_job(struct http_conn *c, struct job *j)
{
    struct hx_err e = {0};
    if (!busy_add(j->rec.id) || (j->src[0] && !busy_add(j->src))) {
        busy_del(j->rec.id);
        free(j);
        return http_respond_error(c, 503, "BUSY", "too many volume operations at once; try again");
    }
    if (j->op != JOB_DELETE && store_vol_insert(g_daemon.store, &j->rec, &e) < 0) {
        busy_del(j->rec.id);
        busy_del(j->src);
        free(j);
        return http_respond_error(c, e.code == EEXIST ? 409 : 500, e.code == EEXIST ? "SLUG_TAKEN" : "INTERNAL", "%s",
                                  e.msg);
    }
    j->c = c;
    j->w.data = j;
    uv_queue_work(g_daemon.loop, &j->w, job_work, job_done);
}

/* The pool promise, with the size the pool will have once it exists. */
static int budget(uint64_t want, const char *what, struct hx_err *e)
{
    uint64_t total, reserve, committed;
    storage_pool_space(&total, &reserve);
    if (!total) {
        total = g_daemon.cfg->storage_size;
        reserve = total / 33 < (16u << 20) ? (16u << 20) : total / 33;
    }
    int r = store_vol_committed(g_daemon.store, &committed, e);
    if (r < 0)
        return r;
    return vol_budget_check(total, reserve, committed, want, what, e);
}

/* Before the pool image is allocated: the host file system must hold it
 * beside the reserve (--disk-reserve) hutchd keeps for itself. */
static int host_room_for_pool(struct hx_err *e)
{
    struct config *cfg = g_daemon.cfg;
    if (storage_pool_is_open())
        return 0;
    char dir[4200], img[4300];
    snprintf(dir, sizeof dir, "%s/storage", cfg->state_dir);
    snprintf(img, sizeof img, "%s/pool.img", dir);
    if (access(img, F_OK) == 0)
        return 0;
    uint64_t avail, total;
    int r = disk_fs_space(cfg->state_dir, &avail, &total, e);
    if (r < 0)
        return r;
    uint64_t need = cfg->storage_size >> 20, reserve = cfg->disk_reserve_mb > 0 ? (uint64_t)cfg->disk_reserve_mb : 0;
    if (avail >= reserve && avail - reserve >= need)
        return 0;
    return hx_fail(e, ENOSPC, "the storage pool needs %" PRIu64 " MiB (--storage-size) on %s, which has %" PRIu64
                              " MiB free beside the %" PRIu64 " MiB reserve", need, cfg->state_dir,
                   avail > reserve ? avail - reserve : 0, reserve);
}

static bool region_allowed(const char *r)
{
    const char *list = g_daemon.cfg->regions;
    if (!vol_region_valid(r))
        return false;
    if (!list)
        return true;
    size_t n = strlen(r);
    for (const char *p = list; *p;) {
        size_t l = strcspn(p, ",");
        if (l == n && strncmp(p, r, n) == 0)
            return true;
        p += l;
        if (*p == ',')
            p++;
    }
    return false;
}

static json_t *body_object(struct http_conn *c, const struct http_request *req)
{
    json_error_t jerr;
    json_t *b = json_loadb((const char *)req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(b)) {
        json_decref(b);
        http_respond_error(c, 400, "INVALID_BODY", "the body must be a JSON object");
        return NULL;
    }
    return b;
}

static void new_id(const char *prefix, const char *region, char out[32])
{
    if (vol_id_new(prefix, region, g_daemon.cfg->node, out) < 0)
        snprintf(out, 32, "%s", "");
}

static void handle_volume_create(struct http_conn *c, const struct http_request *req, const char *org)
{
    struct config *cfg = g_daemon.cfg;
    json_t *b = body_object(c, req);
    if (!b)
        return;
    struct hx_err e = {0};
    struct job *j = calloc(1, sizeof *j);
    json_t *slug = json_object_get(b, "slug"), *region = json_object_get(b, "region");
    json_t *cap = json_object_get(b, "capacity"), *from = json_object_get(b, "from");
    uint64_t bytes = 0;
    char captext[64];
    if (!j) {
        http_respond_error(c, 500, "INTERNAL", "out of memory");
        goto out;
    }
    if (vol_slug_check(json_string_value(slug), &e) < 0) {
        http_respond_error(c, 400, "INVALID_SLUG", "%s", e.msg);
        goto out;
    }
    if (!json_is_string(region) || !region_allowed(json_string_value(region))) {
        if (!json_is_string(region))
            http_respond_error(c, 400, "INVALID_REGION", "region is required (a region name such as \"ord\")");
        else
            http_respond_error(c, 400, "INVALID_REGION", "unknown region \"%.40s\"%s%s", json_string_value(region),
                               cfg->regions ? ": this hutch serves " : "", cfg->regions ? cfg->regions : "");
        goto out;
    }
    if (json_is_integer(cap) && json_integer_value(cap) > 0)
        snprintf(captext, sizeof captext, "%" JSON_INTEGER_FORMAT, json_integer_value(cap));
    else if (json_is_string(cap))
        snprintf(captext, sizeof captext, "%.60s", json_string_value(cap));
    else {
        http_respond_error(c, 400, "INVALID_CAPACITY", "capacity is required: a positive number of bytes or a string such as \"1GiB\"");
        goto out;
    }
    if (vol_parse_capacity(captext, &bytes, &e) < 0) {
        http_respond_error(c, 400, "INVALID_CAPACITY", "%s", e.msg);
        goto out;
    }
    if (bytes < cfg->volume_min || bytes > cfg->volume_max) {
        http_respond_error(c, 400, "INVALID_CAPACITY", "capacity must be between %" PRIu64 " MiB and %" PRIu64
                           " MiB, got %" PRIu64 " bytes", cfg->volume_min >> 20, cfg->volume_max >> 20, bytes);
        goto out;
    }
    struct vol_rec *r = &j->rec;
    snprintf(r->org, sizeof r->org, "%s", org);
    snprintf(r->kind, sizeof r->kind, "volume");
    snprintf(r->slug, sizeof r->slug, "%s", json_string_value(slug));
    snprintf(r->region, sizeof r->region, "%s", json_string_value(region));
    r->capacity = bytes;
    r->created_ms = now_ms();
    new_id("vol", r->region, r->id);
    j->op = JOB_CREATE;
    if (from && !json_is_null(from)) {
        const char *f = json_string_value(from);
        if (!f) {
            http_respond_error(c, 400, "INVALID_FROM", "from must be \"" BUILTIN "\" or a snapshot id or slug");
            goto out;
        }
        if (strcmp(f, BUILTIN) == 0) {
            snprintf(j->populate, sizeof j->populate, "%s", g_daemon.image_root);
            j->populate_on = true;
            r->bootable = true;
        } else {
            struct vol_rec snap;
            if (store_vol_get(g_daemon.store, org, "snapshot", f, &snap, &e) < 0) {
                http_respond_error(c, e.code == ENOENT ? 404 : 500, "SNAPSHOT_NOT_FOUND", "from: %s", e.msg);
                goto out;
            }
            if (snap.capacity > bytes) {
                http_respond_error(c, 400, "INVALID_CAPACITY", "capacity must be at least the snapshot's %" PRIu64
                                   " bytes (%s)", snap.capacity, snap.slug);
                goto out;
            }
            if (rest_volumes_busy(snap.id)) {
                http_respond_error(c, 409, "VOLUME_BUSY", "snapshot %s is being changed; try again", snap.slug);
                goto out;
            }
            j->op = JOB_CLONE;
            snprintf(j->src, sizeof j->src, "%s", snap.id);
            snprintf(r->base_id, sizeof r->base_id, "%s", snap.id);
            snprintf(r->base_slug, sizeof r->base_slug, "%s", snap.slug);
            r->bootable = snap.bootable;
        }
    }
    if (host_room_for_pool(&e) < 0 || budget(bytes, "a volume", &e) < 0) {
        http_respond_error(c, 507, "INSUFFICIENT_STORAGE", "%s", e.msg);
        goto out;
    }
    if (!r->id[0]) {
        http_respond_error(c, 500, "INTERNAL", "could not draw an id");
        goto out;
    }
    start_job(c, hx_steal(&j));
out:
    free(j);
    json_decref(b);
}

static void handle_snapshot_create(struct http_conn *c, const struct http_request *req, const char *org,
                                   const char *vol)
{
    json_t *b = body_object(c, req);
    if (!b)
        return;
    struct hx_err e = {0};
    struct vol_rec v;
    char holder[32];
    struct job *j = NULL;
    if (vol_slug_check(json_string_value(json_object_get(b, "slug")), &e) < 0) {
        http_respond_error(c, 400, "INVALID_SLUG", "%s", e.msg);
        goto out;
    }
    if (store_vol_get(g_daemon.store, org, "volume", vol, &v, &e) < 0) {
        respond_store_error(c, &e, "VOLUME_NOT_FOUND");
        goto out;
    }
    /* A mounted file system's image is not consistent: snapshot it once its sandbox stopped. */
    if (sb_storage_in_use(v.id, holder)) {
        http_respond_error(c, 409, "VOLUME_IN_USE", "volume %s is attached to running sandbox %s: stop it first, "
                           "then snapshot the volume", v.slug, holder);
        goto out;
    }
    if (rest_volumes_busy(v.id)) {
        http_respond_error(c, 409, "VOLUME_BUSY", "volume %s is being changed; try again", v.slug);
        goto out;
    }
    if (budget(v.flattened, "a snapshot", &e) < 0) {
        http_respond_error(c, 507, "INSUFFICIENT_STORAGE", "%s", e.msg);
        goto out;
    }
    if (!(j = calloc(1, sizeof *j))) {
        http_respond_error(c, 500, "INTERNAL", "out of memory");
        goto out;
    }
    struct vol_rec *r = &j->rec;
    j->op = JOB_SNAPSHOT;
    snprintf(j->src, sizeof j->src, "%s", v.id);
    snprintf(r->org, sizeof r->org, "%s", org);
    snprintf(r->kind, sizeof r->kind, "snapshot");
    snprintf(r->slug, sizeof r->slug, "%s", json_string_value(json_object_get(b, "slug")));
    snprintf(r->region, sizeof r->region, "%s", v.region);
    snprintf(r->base_id, sizeof r->base_id, "%s", v.id);
    snprintf(r->base_slug, sizeof r->base_slug, "%s", v.slug);
    r->capacity = v.capacity;
    r->flattened = v.flattened; /* charged from now on; measured once copied */
    r->bootable = v.bootable;
    r->created_ms = now_ms();
    new_id("snp", r->region, r->id);
    start_job(c, hx_steal(&j));
out:
    json_decref(b);
}

static void handle_delete(struct http_conn *c, const char *org, const char *kind, const char *name)
{
    struct hx_err e = {0};
    struct vol_rec v;
    char holder[32];
    if (store_vol_get(g_daemon.store, org, kind, name, &v, &e) < 0)
        return respond_store_error(c, &e, strcmp(kind, "volume") == 0 ? "VOLUME_NOT_FOUND" : "SNAPSHOT_NOT_FOUND");
    if (sb_storage_in_use(v.id, holder))
        return http_respond_error(c, 409, "VOLUME_IN_USE", "%s %s is in use by running sandbox %s", kind, v.slug, holder);
    if (rest_volumes_busy(v.id))
        return http_respond_error(c, 409, "VOLUME_BUSY", "%s %s is being changed; try again", kind, v.slug);
    int deps = 0;
    if (strcmp(kind, "snapshot") == 0 && store_vol_dependents(g_daemon.store, v.id, &deps, &e) == 0 && deps > 0)
        return http_respond_error(c, 409, "SNAPSHOT_IN_USE", "snapshot %s is the base of %d volume%s: delete %s first",
                                  v.slug, deps, deps == 1 ? "" : "s", deps == 1 ? "it" : "them");
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return http_respond_error(c, 500, "INTERNAL", "out of memory");
    j->op = JOB_DELETE;
    j->rec = v;
    start_job(c, j);
}

static void handle_get(struct http_conn *c, const char *org, const char *kind, const char *name)
{
    struct hx_err e = {0};
    struct vol_rec v;
    if (store_vol_get(g_daemon.store, org, kind, name, &v, &e) < 0)
        return respond_store_error(c, &e, strcmp(kind, "volume") == 0 ? "VOLUME_NOT_FOUND" : "SNAPSHOT_NOT_FOUND");
    http_respond_json(c, 200, vol_json(&v));
}

/* The Host header goes into the Link URL: only characters of a host[:port]. */
static void link_base(const struct http_request *req, char *out, size_t cap)
{
    const char *h = http_header_get(req, "host");
    if (!h || !*h || strlen(h) > 255 || strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") != strlen(h))
        h = "localhost";
    snprintf(out, cap, "http://%s", h);
}

static void url_escape(const char *s, char *out, size_t cap)
{
    size_t j = 0;
    for (; *s && j + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr("-._~", ch))
            out[j++] = (char)ch;
        else
            j += (size_t)snprintf(out + j, cap - j, "%%%02X", ch);
    }
    out[j] = 0;
}

static void handle_list(struct http_conn *c, const struct http_request *req, const char *org, const char *kind,
                        const char *path)
{
    autofree char *lim = http_query_get(req, "limit");
    autofree char *cur = http_query_get(req, "cursor");
    autofree char *search = http_query_get(req, "search");
    unsigned limit = LIST_DEFAULT;
    int64_t after = 0;
    if (lim) {
        char *end;
        long v = strtol(lim, &end, 10);
        if (end == lim || *end || v < 1 || v > LIST_MAX)
            return http_respond_error(c, 400, "INVALID_LIMIT", "limit must be 1..%d", LIST_MAX);
        limit = (unsigned)v;
    }
    if (cur && *cur) {
        char *end;
        long long v = strtoll(cur, &end, 10);
        if (end == cur || *end || v < 0)
            return http_respond_error(c, 400, "INVALID_CURSOR", "cursor is not one this server gave");
        after = v;
    }
    if (search && strlen(search) > 64)
        return http_respond_error(c, 400, "INVALID_SEARCH", "search is at most 64 bytes");
    autofree struct vol_rec *rows = calloc(limit, sizeof *rows);
    unsigned n = 0;
    bool more = false;
    struct hx_err e = {0};
    if (!rows)
        return http_respond_error(c, 500, "INTERNAL", "out of memory");
    if (store_vol_list(g_daemon.store, org, kind, search, after, limit, rows, &n, &more, &e) < 0)
        return http_respond_error(c, 500, "INTERNAL", "%s", e.msg);
    json_t *arr = json_array();
    for (unsigned i = 0; i < n; i++)
        json_array_append_new(arr, vol_json(&rows[i]));
    autofree char *body = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (!body)
        return http_respond_error(c, 500, "INTERNAL", "out of memory");
    char hdr[1024] = "", base[300], qs[200] = "";
    if (more && n) {
        link_base(req, base, sizeof base);
        if (search && *search) {
            char esc[200];
            url_escape(search, esc, sizeof esc);
            snprintf(qs, sizeof qs, "&search=%s", esc);
        }
        snprintf(hdr, sizeof hdr, "Link: <%s%s?cursor=%" PRId64 "&limit=%u%s>; rel=\"next\"\r\n", base, path,
                 rows[n - 1].seq, limit, qs);
    }
    http_respond(c, 200, "application/json", hdr[0] ? hdr : NULL, body, strlen(body));
}

bool rest_volumes_route(struct http_conn *c, const struct http_request *req, const char *org)
{
    const char *path = req->path, *kind, *base;
    if (strncmp(path, "/api/v2/volumes", 15) == 0 && (path[15] == 0 || path[15] == '/'))
        kind = "volume", base = "/api/v2/volumes";
    else if (strncmp(path, "/api/v2/snapshots", 17) == 0 && (path[17] == 0 || path[17] == '/'))
        kind = "snapshot", base = "/api/v2/snapshots";
    else
        return false;
    const char *rest = path + strlen(base);
    const char *m = req->method;
    if (*rest == 0 || strcmp(rest, "/") == 0) {
        if (strcmp(m, "GET") == 0)
            handle_list(c, req, org, kind, base);
        else if (strcmp(m, "POST") == 0 && kind[0] == 'v')
            handle_volume_create(c, req, org);
        else
            http_respond_error(c, 405, "METHOD_NOT_ALLOWED", "%s is not supported on %s", m, base);
        return true;
    }
    /* "/{idOrSlug}" or "/{idOrSlug}/snapshot"; the SDK percent-encodes, ids and slugs need none */
    rest++;
    size_t n = strcspn(rest, "/");
    char name[64];
    if (n == 0 || n >= sizeof name) {
        http_respond_error(c, 404, kind[0] == 'v' ? "VOLUME_NOT_FOUND" : "SNAPSHOT_NOT_FOUND", "no such %s", kind);
        return true;
    }
    memcpy(name, rest, n);
    name[n] = 0;
    const char *tail = rest + n;
    if (*tail == 0 && strcmp(m, "GET") == 0)
        handle_get(c, org, kind, name);
    else if (*tail == 0 && strcmp(m, "DELETE") == 0)
        handle_delete(c, org, kind, name);
    else if (kind[0] == 'v' && strcmp(tail, "/snapshot") == 0 && strcmp(m, "POST") == 0)
        handle_snapshot_create(c, req, org, name);
    else
        http_respond_error(c, 404, "NOT_FOUND", "no route %s %.200s", m, path);
    return true;
}
