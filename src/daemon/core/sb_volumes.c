/* What a sandbox does with volumes and snapshots (volumes.h): the create
 * config, the images on loop devices, the setup message, teardown. */
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <string.h>
#include "daemon/core/sandbox.h"
#include "daemon/core/volumes.h"
#include "daemon/storage/names.h"
#include "daemon/storage/pool.h"
#include "daemon/storage/share.h"
#include "daemon/store/store.h"

#define SB_VOL_MAX 8
#define VOL_PATH_MAX 200
/* A volume that the previous sandbox still holds while it stops: wait for
 * it this long on the launch thread before refusing. */
#define ATTACH_WAIT_MS 5000
/* A snapshot root's shared mount outlives its last sandbox this long: the
 * next sandbox booting it right after reuses the mount (and its page cache). */
#define SHARE_LINGER_MS 3000

struct sb_vol {
    char id[32];
    char kind[12];            /* "volume" | "snapshot" */
    char path[VOL_PATH_MAX + 1];
    bool readonly;
    bool held;                /* attached by us, or adopted from a previous hutchd: its sizes are recorded at the end */
    struct storage_attach a;  /* adopted: no fds, only dev */
};

struct sb_storage {
    unsigned n;
    struct sb_vol v[SB_VOL_MAX];
    bool has_root;
    struct sb_vol root;       /* a snapshot: read-only lower layer; a volume: the writable root itself */
    struct storage_share *share; /* a snapshot root: the mount every sandbox booting it shares */
    int root_tree;            /* this sandbox's clone of it, for hutch-init's fd INIT_ROOT_FD; -1 */
};

/* Mount points: absolute, at most VOL_PATH_MAX bytes, components of
 * [A-Za-z0-9._-] other than "." and "..", not "/" and not in /proc, /dev or
 * /sys (mounted over later). hutch-init checks again. */
static int path_check(const char *p, struct hx_err *e)
{
    size_t n = p ? strnlen(p, VOL_PATH_MAX + 1) : 0;
    if (n == 0 || n > VOL_PATH_MAX || p[0] != '/')
        return hx_fail(e, EINVAL, "a volume's mount path must be an absolute path of at most %d bytes", VOL_PATH_MAX);
    for (const char *s = p; *s;) {
        s++; /* the '/' */
        size_t len = strcspn(s, "/");
        if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.') ||
            strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") < len)
            return hx_fail(e, EINVAL, "volume mount path \"%.80s\": components must be [A-Za-z0-9._-], not . or .., "
                                      "without empty ones", p);
        s += len;
    }
    static const char *const off[] = {"/proc", "/dev", "/sys"};
    for (size_t i = 0; i < HX_ARRAY_LEN(off); i++) {
        size_t l = strlen(off[i]);
        if (strncmp(p, off[i], l) == 0 && (p[l] == 0 || p[l] == '/'))
            return hx_fail(e, EINVAL, "volumes cannot be mounted in %s", off[i]);
    }
    return 0;
}

static bool nested(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    const char *s = la < lb ? a : b, *l = la < lb ? b : a;
    size_t ls = strlen(s);
    return strncmp(s, l, ls) == 0 && (l[ls] == 0 || l[ls] == '/');
}

bool sb_storage_in_use(const char *id, char holder[32])
{
    for (struct sandbox *sb = g_daemon.sandboxes; sb; sb = sb->next) {
        struct sb_storage *st = sb->storage;
        if (!st || sb->state >= SB_STOPPING)
            continue;
        bool hit = st->has_root && strcmp(st->root.id, id) == 0;
        for (unsigned i = 0; i < st->n && !hit; i++)
            hit = strcmp(st->v[i].id, id) == 0;
        if (hit) {
            if (holder)
                snprintf(holder, 32, "%s", sb->id);
            return true;
        }
    }
    return false;
}

static int pool_ready(struct hx_err *e)
{
    struct config *cfg = g_daemon.cfg;
    return storage_pool_open(cfg->state_dir, cfg->storage_size, false, e);
}

/* Resolves one name to a record the sandbox may use. */
static int resolve(const char *org, const char *name, const char *kind, struct vol_rec *r, int *status,
                   const char **code, struct hx_err *e)
{
    struct hx_err ge = {0};
    if (!name || !*name) {
        *status = 400, *code = "INVALID_VOLUME";
        return hx_fail(e, EINVAL, "a volume must be named by its id or slug");
    }
    if (store_vol_get(g_daemon.store, org, kind, name, r, &ge) < 0) {
        *status = ge.code == ENOENT ? 404 : 500, *code = ge.code == ENOENT ? "VOLUME_NOT_FOUND" : "INTERNAL";
        return hx_fail(e, ge.code, "%s", ge.msg);
    }
    char holder[32];
    if (rest_volumes_busy(r->id)) {
        *status = 409, *code = "VOLUME_BUSY";
        return hx_fail(e, EBUSY, "%s %s is being created, snapshotted or deleted; try again", r->kind, r->slug);
    }
    if (strcmp(r->kind, "volume") == 0 && sb_storage_in_use(r->id, holder)) {
        *status = 409, *code = "VOLUME_IN_USE";
        return hx_fail(e, EBUSY, "volume %s is attached to running sandbox %s: a volume is attached to one "
                                 "running sandbox at a time", r->slug, holder);
    }
    return 0;
}

int sb_storage_parse(json_t *conf, const char *org, struct sb_storage **out, int *status, const char **code,
                     struct hx_err *e)
{
    *out = NULL;
    json_t *vols = json_object_get(conf, "volumes");
    json_t *root = json_object_get(conf, "root");
    bool no_vols = !vols || json_is_null(vols) || (json_is_array(vols) && json_array_size(vols) == 0) ||
                   (json_is_object(vols) && json_object_size(vols) == 0);
    if (no_vols && (!root || json_is_null(root)))
        return 0;
    *status = 400, *code = "INVALID_VOLUMES";
    struct sb_storage *st = calloc(1, sizeof *st);
    if (!st)
        return hx_fail(e, ENOMEM, "out of memory");
    /* Not 0s: a zeroed attach names fd 0, and closing it let the next open
     * anywhere in hutchd become fd 0 (mkfs.ext4 then read /dev/null). */
    st->root = (struct sb_vol){.a = STORAGE_ATTACH_INIT};
    st->root_tree = -1;
    int r = 0;
    /* gather (path, name) pairs from either shape */
    const char *paths[SB_VOL_MAX], *names[SB_VOL_MAX];
    unsigned n = 0;
    if (!no_vols) {
        size_t cnt = json_is_array(vols) ? json_array_size(vols) : json_is_object(vols) ? json_object_size(vols) : 0;
        if (!cnt) {
            r = hx_fail(e, EINVAL, "volumes must be [{\"volume\", \"path\"}] or {\"/path\": \"volume\"}");
            goto fail;
        }
        if (cnt > SB_VOL_MAX) {
            r = hx_fail(e, EINVAL, "at most %d volumes per sandbox", SB_VOL_MAX);
            goto fail;
        }
        if (json_is_array(vols)) {
            size_t i;
            json_t *v;
            json_array_foreach(vols, i, v) {
                paths[n] = json_string_value(json_object_get(v, "path"));
                names[n] = json_string_value(json_object_get(v, "volume"));
                if (!paths[n] || !names[n]) {
                    r = hx_fail(e, EINVAL, "each volume must be {\"volume\": <id or slug>, \"path\": <mount path>}");
                    goto fail;
                }
                n++;
            }
        } else {
            const char *k;
            json_t *v;
            json_object_foreach(vols, k, v) {
                paths[n] = k;
                names[n] = json_string_value(v);
                if (!names[n]) {
                    r = hx_fail(e, EINVAL, "volumes: {\"/path\": \"<volume id or slug>\"}");
                    goto fail;
                }
                n++;
            }
        }
    }
    for (unsigned i = 0; i < n; i++) {
        if ((r = path_check(paths[i], e)) < 0)
            goto fail;
        for (unsigned j = 0; j < i; j++)
            if (nested(paths[i], paths[j])) {
                r = hx_fail(e, EINVAL, "volume paths %.80s and %.80s overlap", paths[j], paths[i]);
                goto fail;
            }
    }
    struct hx_err pe = {0};
    if (pool_ready(&pe) < 0) {
        *status = pe.code == ENOENT ? 404 : 500, *code = pe.code == ENOENT ? "VOLUME_NOT_FOUND" : "STORAGE_UNAVAILABLE";
        r = hx_fail(e, pe.code, pe.code == ENOENT ? "no volumes exist yet" : "storage pool: %s", pe.msg);
        goto fail;
    }
    for (unsigned i = 0; i < n; i++) {
        struct vol_rec rec;
        if ((r = resolve(org, names[i], "volume", &rec, status, code, e)) < 0)
            goto fail;
        for (unsigned j = 0; j < i; j++)
            if (strcmp(st->v[j].id, rec.id) == 0) {
                *status = 400, *code = "INVALID_VOLUMES";
                r = hx_fail(e, EINVAL, "volume %s is given twice", rec.slug);
                goto fail;
            }
        struct sb_vol *sv = &st->v[st->n++];
        *sv = (struct sb_vol){.a = STORAGE_ATTACH_INIT};
        snprintf(sv->id, sizeof sv->id, "%s", rec.id);
        snprintf(sv->kind, sizeof sv->kind, "volume");
        snprintf(sv->path, sizeof sv->path, "%s", paths[i]);
    }
    if (root && !json_is_null(root)) {
        const char *name = json_is_string(root) ? json_string_value(root)
                                                : json_string_value(json_object_get(root, "volume"));
        struct vol_rec rec;
        *code = "INVALID_ROOT";
        if (!name) {
            r = hx_fail(e, EINVAL, "root must be {\"volume\": <bootable volume or snapshot id or slug>}");
            goto fail;
        }
        if ((r = resolve(org, name, NULL, &rec, status, code, e)) < 0)
            goto fail;
        if (!rec.bootable) {
            *status = 400, *code = "INVALID_ROOT";
            r = hx_fail(e, EINVAL, "%s %s is not bootable: create a volume with from: \"builtin:debian-13\" "
                                   "(or from a bootable snapshot) to boot from it", rec.kind, rec.slug);
            goto fail;
        }
        for (unsigned j = 0; j < st->n; j++)
            if (strcmp(st->v[j].id, rec.id) == 0) {
                *status = 400;
                r = hx_fail(e, EINVAL, "volume %s cannot be both the root and mounted at %s", rec.slug, st->v[j].path);
                goto fail;
            }
        st->has_root = true;
        st->root = (struct sb_vol){.a = STORAGE_ATTACH_INIT};
        snprintf(st->root.id, sizeof st->root.id, "%s", rec.id);
        snprintf(st->root.kind, sizeof st->root.kind, "%s", rec.kind);
        st->root.readonly = strcmp(rec.kind, "snapshot") == 0;
    }
    *out = st;
    return 0;
fail:
    free(st);
    return r;
}

int sb_storage_attach(struct sb_storage *st, struct hx_err *e)
{
    int r;
    for (unsigned i = 0; i < st->n; i++) {
        if ((r = storage_image_attach(st->v[i].id, false, ATTACH_WAIT_MS, &st->v[i].a, e)) < 0)
            return r;
        st->v[i].held = true;
    }
    if (!st->has_root)
        return 0;
    if (!st->root.readonly) {
        if ((r = storage_image_attach(st->root.id, false, ATTACH_WAIT_MS, &st->root.a, e)) < 0)
            return r;
        st->root.held = true;
        return 0;
    }
    /* a snapshot: one loop device and one mount for every sandbox booting it */
    if ((r = storage_share_get(st->root.id, ATTACH_WAIT_MS, &st->share, e)) < 0)
        return r;
    if ((r = storage_share_tree(st->share, e)) < 0)
        return r;
    st->root_tree = r;
    return 0;
}

int sb_storage_root_tree(const struct sb_storage *st)
{
    return st ? st->root_tree : -1;
}

void sb_storage_setup(const struct sb_storage *st, json_t *setup)
{
    if (!st)
        return;
    if (st->n) {
        json_t *arr = json_array();
        for (unsigned i = 0; i < st->n; i++)
            json_array_append_new(arr, json_pack("{s:s, s:s}", "dev", st->v[i].a.dev, "path", st->v[i].path));
        json_object_set_new(setup, "volumes", arr);
    }
    if (st->has_root && st->share) /* the mount comes as fd 7 (sandbox_launch), cloned from the shared one */
        json_object_set_new(setup, "root", json_pack("{s:i, s:b}", "fd", 7, "writable", false));
    else if (st->has_root)
        json_object_set_new(setup, "root", json_pack("{s:s, s:b}", "dev", st->root.a.dev, "writable", !st->root.readonly));
}

void sb_storage_mounted(struct sb_storage *st)
{
    if (!st)
        return;
    for (unsigned i = 0; i < st->n; i++)
        if (st->v[i].a.dev_fd >= 0)
            close(st->v[i].a.dev_fd), st->v[i].a.dev_fd = -1;
    if (st->has_root && st->root.a.dev_fd >= 0)
        close(st->root.a.dev_fd), st->root.a.dev_fd = -1;
    if (st->root_tree >= 0) /* hutch-init has moved its copy into place */
        close(st->root_tree), st->root_tree = -1;
}

/* Releases shares idle for SHARE_LINGER_MS; runs while any is idle. */
static uv_timer_t linger_timer;
static bool linger_ready;

static void on_linger(uv_timer_t *t)
{
    if (storage_share_reap(SHARE_LINGER_MS, uv_now(g_daemon.loop)) > 0)
        uv_timer_start(t, on_linger, SHARE_LINGER_MS / 4, 0);
}

static void share_release(struct storage_share *s)
{
    storage_share_put(s, uv_now(g_daemon.loop));
    if (!linger_ready) {
        uv_timer_init(g_daemon.loop, &linger_timer);
        uv_unref((uv_handle_t *)&linger_timer); /* never keeps hutchd's loop alive at exit */
        linger_ready = true;
    }
    if (!uv_is_active((uv_handle_t *)&linger_timer))
        uv_timer_start(&linger_timer, on_linger, SHARE_LINGER_MS + 10, 0);
}

/* A volume's sizes as the sandbox left them ("estimated" in the SDK). */
static void record_sizes(const struct sb_vol *v)
{
    if (v->readonly || !v->held)
        return;
    uint64_t ex, flat;
    storage_image_sizes(v->id, &ex, &flat);
    struct hx_err e = {0};
    if (store_vol_set_sizes(g_daemon.store, v->id, ex, flat, &e) < 0)
        fprintf(stderr, "hutchd: volume %s: %s\n", v->id, e.msg);
}

void sb_storage_free(struct sb_storage *st)
{
    if (!st)
        return;
    for (unsigned i = 0; i < st->n; i++) {
        record_sizes(&st->v[i]);
        storage_attach_close(&st->v[i].a);
    }
    if (st->has_root) {
        record_sizes(&st->root);
        storage_attach_close(&st->root.a);
    }
    if (st->root_tree >= 0)
        close(st->root_tree);
    if (st->share)
        share_release(st->share);
    free(st);
}

/* ---- live restore ---- */

json_t *sb_storage_saved(const struct sb_storage *st)
{
    if (!st)
        return NULL;
    json_t *vols = json_array();
    for (unsigned i = 0; i < st->n; i++)
        json_array_append_new(vols, json_pack("{s:s, s:s, s:s}", "id", st->v[i].id, "path", st->v[i].path, "dev",
                                              st->v[i].a.dev));
    json_t *root = json_null();
    if (st->has_root)
        root = json_pack("{s:s, s:s, s:s}", "id", st->root.id, "kind", st->root.kind, "dev",
                         st->share ? storage_share_dev(st->share) : st->root.a.dev);
    return json_pack("{s:o, s:o}", "volumes", vols, "root", root);
}

/* Whether block device rdev backs a mount in the mount namespace of pid
 * (/proc/PID/mountinfo, field 3 "major:minor"). The sandbox cannot mount
 * anything itself (its mount namespace belongs to the host's user
 * namespace), so the list is hutch-init's own few mounts. */
static bool mounted_in(pid_t pid, dev_t rdev)
{
    char path[64], want[40];
    snprintf(path, sizeof path, "/proc/%d/mountinfo", (int)pid);
    snprintf(want, sizeof want, "%u:%u", major(rdev), minor(rdev));
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char line[4096];
    bool hit = false;
    for (int n = 0; !hit && n < 4096 && fgets(line, sizeof line, f); n++) {
        char *p = strchr(line, ' ');          /* after the mount id */
        p = p ? strchr(p + 1, ' ') : NULL;    /* after the parent id */
        if (p) {
            size_t l = strcspn(p + 1, " ");
            hit = l == strlen(want) && strncmp(p + 1, want, l) == 0;
        }
    }
    fclose(f);
    return hit;
}

/* One kept {id, dev}: checked against the kernel (the device still holds
 * that image, with the attach's lock, and is mounted in this sandbox's own
 * mount namespace) before the sandbox is believed to hold it. */
static int adopt_vol(json_t *j, const char *kind, pid_t pid, struct sb_vol *v, struct hx_err *e)
{
    const char *id = json_string_value(json_object_get(j, "id"));
    const char *dev = json_string_value(json_object_get(j, "dev"));
    if (!id || !vol_id_valid(id) || strncmp(id, strcmp(kind, "volume") == 0 ? "vol_" : "snp_", 4) != 0 || !dev ||
        strlen(dev) >= sizeof v->a.dev)
        return hx_fail(e, EINVAL, "a kept %s is malformed", kind);
    *v = (struct sb_vol){.a = STORAGE_ATTACH_INIT};
    snprintf(v->id, sizeof v->id, "%s", id);
    snprintf(v->kind, sizeof v->kind, "%s", kind);
    snprintf(v->a.dev, sizeof v->a.dev, "%s", dev);
    v->readonly = strcmp(kind, "snapshot") == 0;
    if (v->readonly)
        return 0; /* a snapshot root: its share is checked */
    autoclose int fd = storage_image_held(id, dev, false, e);
    if (fd < 0)
        return fd;
    struct stat st;
    if (fstat(fd, &st) < 0 || !mounted_in(pid, st.st_rdev))
        return hx_fail(e, ESTALE, "%s (%s) is not mounted in this sandbox", dev, id);
    v->held = true;
    return 0;
}

int sb_storage_adopt(json_t *saved, pid_t init_pid, struct sb_storage **out, struct hx_err *e)
{
    *out = NULL;
    if (!saved || json_is_null(saved))
        return 0;
    json_t *vols = json_object_get(saved, "volumes"), *root = json_object_get(saved, "root");
    if (!json_is_object(saved) || !json_is_array(vols) || json_array_size(vols) > SB_VOL_MAX ||
        (root && !json_is_null(root) && !json_is_object(root)))
        return hx_fail(e, EINVAL, "its kept volumes are malformed");
    int r = pool_ready(e);
    if (r < 0)
        return r;
    struct sb_storage *st = calloc(1, sizeof *st);
    if (!st)
        return hx_fail(e, ENOMEM, "out of memory");
    st->root = (struct sb_vol){.a = STORAGE_ATTACH_INIT};
    st->root_tree = -1;
    size_t i;
    json_t *v;
    json_array_foreach(vols, i, v) {
        const char *path = json_string_value(json_object_get(v, "path"));
        if ((r = path_check(path, e)) < 0 || (r = adopt_vol(v, "volume", init_pid, &st->v[st->n], e)) < 0)
            goto fail;
        snprintf(st->v[st->n].path, sizeof st->v[st->n].path, "%s", path);
        st->n++;
    }
    if (root && !json_is_null(root)) {
        const char *kind = json_string_value(json_object_get(root, "kind"));
        if (!kind || (strcmp(kind, "volume") != 0 && strcmp(kind, "snapshot") != 0)) {
            r = hx_fail(e, EINVAL, "its kept root is malformed");
            goto fail;
        }
        if ((r = adopt_vol(root, kind, init_pid, &st->root, e)) < 0)
            goto fail;
        st->has_root = true;
        if (st->root.readonly && (r = storage_share_adopt(st->root.id, st->root.a.dev, &st->share, e)) < 0)
            goto fail;
    }
    *out = st;
    return 0;
fail:
    sb_storage_forget(st);
    return r;
}

void sb_storage_forget(struct sb_storage *st)
{
    if (!st)
        return;
    if (st->share)
        share_release(st->share);
    free(st);
}
