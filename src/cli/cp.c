/* hutch cp: copies files and trees between this machine and a sandbox, between two
 * sandboxes, or between a sandbox and a tar stream on stdin/stdout ('-'), over the fs RPCs. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "cli/cli.h"
#include "cli/tar.h"
#include "lib/b64.h"

#define READ_CHUNK (144u * 1024u)  /* the most one fileRead returns (docs/protocol.md) */
#define READ_WINDOW 8              /* fileRead calls in flight: hides the round trip */
#define WRITE_CHUNK (512u * 1024u) /* bytes per $sandbox.stream.enqueue */
#define QUEUE_MAX (2u << 20)       /* bytes queued toward hutchd before we wait for the socket */
#define IO_CHUNK (1u << 20)        /* local read size */
#define MAX_DEPTH 256              /* directory nesting we follow (a hostile tree may be deeper) */
#define PROGRESS_MIN (8u << 20)    /* files at least this large show progress on a terminal */
#define RPATH_MAX 4096             /* the server's path limit */
#define RAW_MIN (256u << 10)       /* files in a tree at least this large take the raw channel */

static const char cp_help[] =
    "usage: hutch cp [OPTIONS] SRC DST\n"
    "\n"
    "Copies files and directories (recursively, with modes and symlinks) where\n"
    "SRC and DST are each LOCAL_PATH, ID:PATH (a path in sandbox ID; relative\n"
    "paths start at /home/app) or '-':\n"
    "  hutch cp ./src ID:proj          upload (into proj/ when it is a directory)\n"
    "  hutch cp ID:/tmp/out.log .      download\n"
    "  hutch cp ID1:data ID2:data      sandbox to sandbox\n"
    "  tar -c dir | hutch cp - ID:dst  unpack a tar stream from stdin into directory dst\n"
    "  hutch cp ID:proj - | tar -t     a tar stream of proj on stdout\n"
    "When DST is an existing directory, SRC is copied into it under its own name.\n"
    "Symlinks are copied as symlinks, never followed; on this machine, files are\n"
    "never written through a symlink, and set-user/group-id bits are dropped.\n"
    "\n"
    "  -q, --quiet       no progress on stderr\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

/* ---- progress on a terminal ------------------------------------------- */

static struct {
    bool on;
    const char *name;
    uint64_t size, done;
    int64_t start_ms, last_ms;
    uint64_t files, bytes;
} pg;

static void pg_draw(bool final)
{
    int64_t now = cli_now_ms();
    if (!final && now - pg.last_ms < 200)
        return;
    pg.last_ms = now;
    double secs = (double)(now - pg.start_ms) / 1000.0;
    double rate = secs > 0 ? (double)pg.done / secs / 1e6 : 0;
    fprintf(stderr, "\r\033[K%.60s  %.1f / %.1f MiB  %.1f MB/s%s", pg.name, (double)pg.done / 1048576.0,
            (double)pg.size / 1048576.0, rate, final ? "\n" : "");
}

static void pg_begin(const char *name, uint64_t size)
{
    pg.files++;
    pg.name = pg.on && size >= PROGRESS_MIN ? name : NULL;
    pg.size = size;
    pg.done = 0;
    pg.start_ms = pg.last_ms = cli_now_ms();
}

static void pg_add(size_t n)
{
    pg.bytes += n;
    pg.done += n;
    if (pg.name)
        pg_draw(false);
}

static void pg_end(void)
{
    if (pg.name)
        pg_draw(true);
    pg.name = NULL;
}

/* ---- hutch's raw file channel ------------------------------------------ */

/* Regular files go as plain HTTP bodies (hutch_file_get/put: spliced by
 * hutchd and the sandbox, no JSON, no base64, no WebSocket) when the copy
 * names a single file, or the file is at least RAW_MIN in a tree; a hutchd
 * without the channel (-ENOSYS) turns it off for the rest of the run. */
static struct {
    const struct hutch_target *t;
    const char *src_id, *dst_id;
    bool off;
} raw;

static void raw_progress(void *ud, size_t n)
{
    pg_add(n);
}

static bool raw_wanted(const char *rel, uint64_t size)
{
    return !raw.off && raw.t && (!rel[0] || size >= RAW_MIN);
}

/* ---- sinks: where entries go ------------------------------------------ */

enum sink_kind { SINK_LOCAL, SINK_REMOTE, SINK_TAR };

struct sink {
    enum sink_kind kind;
    /* local: the copy's root is base under pfd (a directory we trust: the user named it) */
    int pfd;
    char base[NAME_MAX + 1];
    int fd;                  /* file being written */
    /* remote */
    struct hutch_conn *c;
    char root[RPATH_MAX + 1];
    int64_t wreq, wsid;      /* writeFile in flight */
    bool wdone;              /* its answer came early (an error) */
    struct hx_err werr;
    /* tar: entries are named prefix/rel */
    char prefix[NAME_MAX + 1];
    struct tar_writer *tw;
    uint64_t tsize, twritten;
    /* directories whose final mode is set once their contents are in */
    struct dir_mode { char *rel; uint32_t mode; } *dirs;
    size_t ndirs, capdirs;
    /* what the current file is called, for progress and messages */
    char cur[RPATH_MAX + NAME_MAX + 2];
};

static int join(char *out, size_t cap, const char *a, const char *b, struct hx_err *e)
{
    int n = !*b ? snprintf(out, cap, "%s", a) : !*a ? snprintf(out, cap, "%s", b) : snprintf(out, cap, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= cap)
        return hx_fail(e, ENAMETOOLONG, "path too long: %.100s/%.100s", a, b);
    return 0;
}

static int write_all_fd(int fd, const void *p, size_t n, struct hx_err *e)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t k = write(fd, b, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return hx_fail(e, errno, "write: %m");
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

static int remember_dir(struct sink *k, const char *rel, uint32_t mode, struct hx_err *e)
{
    if (k->ndirs == k->capdirs) {
        size_t cap = k->capdirs ? k->capdirs * 2 : 64;
        struct dir_mode *d = realloc(k->dirs, cap * sizeof *d);
        if (!d)
            return hx_fail(e, ENOMEM, "out of memory");
        k->dirs = d;
        k->capdirs = cap;
    }
    char *r = strdup(rel);
    if (!r)
        return hx_fail(e, ENOMEM, "out of memory");
    k->dirs[k->ndirs++] = (struct dir_mode){ r, mode };
    return 0;
}

/* -- local: every path is resolved beneath pfd without following any symlink,
 * so a symlink that came from a sandbox can never redirect a write. */

static int open_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC), .mode = (flags & O_CREAT) ? mode : 0,
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
    long r;
    do
        r = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    while (r < 0 && errno == EINTR);
    return (int)r;
}

/* The parent directory of rel's path (an fd) and its last component. */
static int local_parent(struct sink *k, const char *rel, const char **last, struct hx_err *e)
{
    char path[RPATH_MAX + NAME_MAX + 2];
    int rc = join(path, sizeof path, k->base, rel, e);
    if (rc < 0)
        return rc;
    char *slash = strrchr(path, '/');
    const char *full_last = rel[0] ? strrchr(rel, '/') : NULL;
    *last = !rel[0] ? k->base : full_last ? full_last + 1 : rel;
    if (!slash) {
        int fd = fcntl(k->pfd, F_DUPFD_CLOEXEC, 0);
        return fd < 0 ? hx_fail(e, errno, "dup: %m") : fd;
    }
    *slash = 0;
    int fd = open_beneath(k->pfd, path, O_PATH | O_DIRECTORY, 0);
    if (fd < 0)
        return hx_fail(e, errno, "open %s: %m%s", path, errno == ELOOP ? " (a symlink is in the way)" : "");
    return fd;
}

static int local_dir(struct sink *k, const char *rel, uint32_t mode, struct hx_err *e)
{
    const char *last;
    autoclose int pd = local_parent(k, rel, &last, e);
    if (pd < 0)
        return pd;
    /* owner rwx while we fill it; the real mode comes after (read-only dirs) */
    if (mkdirat(pd, last, (mode & 0777) | 0700) < 0) {
        struct stat st;
        if (errno != EEXIST || fstatat(pd, last, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
            return hx_fail(e, errno == EEXIST ? EEXIST : errno, "mkdir %s%s%s: %s", k->base, rel[0] ? "/" : "", rel,
                           errno == EEXIST ? "exists and is not a directory" : strerror(errno));
    }
    return remember_dir(k, rel, mode & 01777, e);
}

static int local_dir_mode(struct sink *k, const char *rel, uint32_t mode, struct hx_err *e)
{
    char path[RPATH_MAX + NAME_MAX + 2];
    int rc = join(path, sizeof path, k->base, rel, e);
    if (rc < 0)
        return rc;
    autoclose int fd = open_beneath(k->pfd, path, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0 || fchmod(fd, mode & 01777) < 0)
        return hx_fail(e, errno, "chmod %s: %m", path);
    return 0;
}

static int local_symlink(struct sink *k, const char *rel, const char *target, struct hx_err *e)
{
    const char *last;
    autoclose int pd = local_parent(k, rel, &last, e);
    if (pd < 0)
        return pd;
    if (symlinkat(target, pd, last) < 0) {
        struct stat st;
        if (errno == EEXIST && fstatat(pd, last, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode) &&
            unlinkat(pd, last, 0) == 0 && symlinkat(target, pd, last) == 0)
            return 0;
        return hx_fail(e, errno, "symlink %s/%s: %m", k->base, rel);
    }
    return 0;
}

static int local_file_begin(struct sink *k, const char *rel, uint32_t mode, uint64_t size, struct hx_err *e)
{
    (void)mode;
    (void)size;
    char path[RPATH_MAX + NAME_MAX + 2];
    int rc = join(path, sizeof path, k->base, rel, e);
    if (rc < 0)
        return rc;
    k->fd = open_beneath(k->pfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
    if (k->fd < 0)
        return hx_fail(e, errno, "create %s: %m%s", path, errno == ELOOP ? " (a symlink is in the way)" : "");
    return 0;
}

/* -- remote: paths are strings the sandbox resolves as app, inside itself. */

static int rpath(struct sink *k, const char *rel, char *out, struct hx_err *e)
{
    return join(out, RPATH_MAX + 1, k->root, rel, e);
}

static int remote_dir(struct sink *k, const char *rel, uint32_t mode, struct hx_err *e)
{
    char p[RPATH_MAX + 1];
    int rc = rpath(k, rel, p, e);
    if (rc < 0)
        return rc;
    autofree char *code = NULL;
    rc = hutch_call(k->c, "mkdir", json_pack("{s:s, s:{s:i}}", "path", p, "options", "mode", (mode & 0777) | 0700),
                    NULL, &code, e);
    if (rc < 0 && code && strcmp(code, "EEXIST") == 0) {
        json_t *st = NULL;
        struct hx_err e2;
        if (hutch_call(k->c, "lstat", json_pack("{s:s}", "path", p), &st, NULL, &e2) == 0 &&
            json_is_true(json_object_get(st, "isDirectory")))
            rc = 0;
        json_decref(st);
    }
    if (rc < 0)
        return rc;
    return remember_dir(k, rel, mode & 01777, e);
}

static int remote_mkparents(struct sink *k, const char *rel, struct hx_err *e)
{
    char p[RPATH_MAX + 1];
    int rc = rpath(k, rel, p, e);
    if (rc < 0)
        return rc;
    return hutch_call(k->c, "mkdir", json_pack("{s:s, s:{s:b}}", "path", p, "options", "recursive", 1), NULL, NULL, e);
}

static int remote_dir_mode(struct sink *k, const char *rel, uint32_t mode, struct hx_err *e)
{
    char p[RPATH_MAX + 1];
    int rc = rpath(k, rel, p, e);
    if (rc < 0)
        return rc;
    return hutch_call(k->c, "chmod", json_pack("{s:s, s:i}", "path", p, "mode", mode & 07777), NULL, NULL, e);
}

static int remote_symlink(struct sink *k, const char *rel, const char *target, struct hx_err *e)
{
    char p[RPATH_MAX + 1];
    int rc = rpath(k, rel, p, e);
    if (rc < 0)
        return rc;
    autofree char *code = NULL;
    rc = hutch_call(k->c, "symlink", json_pack("{s:s, s:s}", "target", target, "path", p), NULL, &code, e);
    if (rc < 0 && code && strcmp(code, "EEXIST") == 0) {
        /* replace a file or symlink, never a directory */
        json_t *st = NULL;
        struct hx_err e2;
        if (hutch_call(k->c, "lstat", json_pack("{s:s}", "path", p), &st, NULL, &e2) == 0 &&
            !json_is_true(json_object_get(st, "isDirectory")) &&
            hutch_call(k->c, "remove", json_pack("{s:s}", "path", p), NULL, NULL, &e2) == 0)
            rc = hutch_call(k->c, "symlink", json_pack("{s:s, s:s}", "target", target, "path", p), NULL, NULL, e);
        json_decref(st);
    }
    return rc;
}

static int remote_file_begin(struct sink *k, const char *rel, uint32_t mode, uint64_t size, struct hx_err *e)
{
    (void)size;
    char p[RPATH_MAX + 1];
    int rc = rpath(k, rel, p, e);
    if (rc < 0)
        return rc;
    k->wsid = hutch_stream_new_id(k->c);
    k->wdone = false;
    /* the stream starts before the call, as the SDK's writeFile does */
    if ((rc = hutch_stream_start(k->c, k->wsid, e)) < 0)
        return rc;
    return hutch_send_request(k->c, "writeFile",
                              json_pack("{s:s, s:I, s:{s:i, s:b}}", "path", p, "contentStreamId", (json_int_t)k->wsid,
                                        "options", "mode", mode & 07777, "create", 1),
                              &k->wreq, e);
}

/* An early answer to writeFile is an error (permission denied, ...): stop sending. */
static int remote_check_early(struct sink *k, struct hx_err *e)
{
    if (k->wdone)
        return 0;
    int rc = hutch_take_response(k->c, k->wreq, NULL, NULL, &k->werr);
    if (rc == 0)
        return 0;
    k->wdone = true;
    if (rc > 0) /* success before the end of the stream: cannot happen, treat as an error */
        hx_fail(&k->werr, EPROTO, "writeFile answered before its upload ended");
    *e = k->werr;
    return -e->code;
}

static int remote_file_data(struct sink *k, const void *p, size_t n, struct hx_err *e)
{
    const uint8_t *b = p;
    while (n) {
        int rc = remote_check_early(k, e);
        if (rc < 0)
            return rc;
        size_t c = n > WRITE_CHUNK ? WRITE_CHUNK : n;
        if ((rc = hutch_stream_write(k->c, k->wsid, b, c, e)) < 0)
            return rc;
        b += c;
        n -= c;
        /* backpressure: hutchd stops reading us while the sandbox is behind */
        while (hutch_conn_queued(k->c) > QUEUE_MAX) {
            rc = hutch_pump(k->c, NULL, 0, 1000, e);
            if (rc < 0 && rc != -EINTR)
                return rc;
            if ((rc = remote_check_early(k, e)) < 0)
                return rc;
        }
    }
    return 0;
}

static int remote_file_end(struct sink *k, struct hx_err *e)
{
    int rc;
    if (k->wdone) {
        *e = k->werr;
        return -e->code;
    }
    if ((rc = hutch_stream_end(k->c, k->wsid, e)) < 0)
        return rc;
    for (;;) {
        rc = hutch_take_response(k->c, k->wreq, NULL, NULL, e);
        if (rc != 0)
            return rc < 0 ? rc : 0;
        rc = hutch_pump(k->c, NULL, 0, -1, e);
        if (rc < 0 && rc != -EINTR)
            return rc;
    }
}

/* -- tar on stdout */

static int tar_entry(struct sink *k, char type, const char *rel, uint32_t mode, uint64_t size, const char *link,
                     struct hx_err *e)
{
    struct tar_hdr *h = calloc(1, sizeof *h);
    if (!h)
        return hx_fail(e, ENOMEM, "out of memory");
    int rc = join(h->path, sizeof h->path - 1, k->prefix, rel, e);
    if (rc == 0) {
        if (type == TAR_DIR)
            strcat(h->path, "/");
        h->type = type;
        h->mode = mode & 07777;
        h->size = size;
        h->mtime = cli_now_ms() / 1000;
        snprintf(h->link, sizeof h->link, "%s", link ? link : "");
        rc = tar_write_header(k->tw, h, e);
    }
    free(h);
    return rc;
}

/* -- dispatch */

static int sink_dir(struct sink *k, const char *rel, uint32_t mode, struct hx_err *e)
{
    switch (k->kind) {
    case SINK_LOCAL: return local_dir(k, rel, mode, e);
    case SINK_REMOTE: return remote_dir(k, rel, mode, e);
    case SINK_TAR: return tar_entry(k, TAR_DIR, rel, mode, 0, NULL, e);
    }
    return -EINVAL;
}

static int sink_symlink(struct sink *k, const char *rel, const char *target, struct hx_err *e)
{
    switch (k->kind) {
    case SINK_LOCAL: return local_symlink(k, rel, target, e);
    case SINK_REMOTE: return remote_symlink(k, rel, target, e);
    case SINK_TAR: return tar_entry(k, TAR_SYMLINK, rel, 0777, 0, target, e);
    }
    return -EINVAL;
}

static int sink_file_begin(struct sink *k, const char *rel, uint32_t mode, uint64_t size, struct hx_err *e)
{
    join(k->cur, sizeof k->cur, k->kind == SINK_LOCAL ? k->base : k->kind == SINK_TAR ? k->prefix : k->root, rel, e);
    pg_begin(k->cur, size);
    switch (k->kind) {
    case SINK_LOCAL: return local_file_begin(k, rel, mode, size, e);
    case SINK_REMOTE: return remote_file_begin(k, rel, mode, size, e);
    case SINK_TAR:
        k->tsize = size;
        k->twritten = 0;
        return tar_entry(k, TAR_FILE, rel, mode, size, NULL, e);
    }
    return -EINVAL;
}

static int sink_file_data(struct sink *k, const void *p, size_t n, struct hx_err *e)
{
    pg_add(n);
    switch (k->kind) {
    case SINK_LOCAL: return write_all_fd(k->fd, p, n, e);
    case SINK_REMOTE: return remote_file_data(k, p, n, e);
    case SINK_TAR:
        /* the header promised tsize bytes: a file that grew is cut */
        if (n > k->tsize - k->twritten)
            n = (size_t)(k->tsize - k->twritten);
        k->twritten += n;
        return n ? tar_write_data(k->tw, p, n, e) : 0;
    }
    return -EINVAL;
}

/* ok=false: the source failed; the partial file is abandoned (its error wins). */
static int sink_file_end(struct sink *k, uint32_t mode, bool ok, struct hx_err *e)
{
    int rc = 0;
    pg_end();
    switch (k->kind) {
    case SINK_LOCAL:
        /* set-user/group-id bits from a sandbox are never recreated here */
        if (ok && fchmod(k->fd, mode & 0777) < 0)
            rc = hx_fail(e, errno, "chmod %s: %m", k->cur);
        if (close(k->fd) < 0 && ok && rc == 0)
            rc = hx_fail(e, errno, "close %s: %m", k->cur);
        k->fd = -1;
        return rc;
    case SINK_REMOTE:
        /* On a source error the stream is left open: the connection's close
         * then fails the upload on the server (it never reports success). */
        return ok ? remote_file_end(k, e) : 0;
    case SINK_TAR:
        if (!ok)
            return 0;
        if (k->twritten < k->tsize) {
            static const uint8_t zero[65536];
            fprintf(stderr, "hutch: warning: %s shrank while it was copied; padded with zeros\n", k->cur);
            while (k->twritten < k->tsize && rc == 0) {
                size_t n = k->tsize - k->twritten > sizeof zero ? sizeof zero : (size_t)(k->tsize - k->twritten);
                rc = tar_write_data(k->tw, zero, n, e);
                k->twritten += n;
            }
        }
        return rc;
    }
    return -EINVAL;
}

/* Directory modes last, deepest first, so read-only directories can be filled. */
static int sink_finish(struct sink *k, struct hx_err *e)
{
    int rc = 0;
    for (size_t i = k->ndirs; i-- > 0;) {
        if (rc == 0 && k->kind == SINK_LOCAL)
            rc = local_dir_mode(k, k->dirs[i].rel, k->dirs[i].mode, e);
        else if (rc == 0 && k->kind == SINK_REMOTE)
            rc = remote_dir_mode(k, k->dirs[i].rel, k->dirs[i].mode, e);
        free(k->dirs[i].rel);
    }
    free(k->dirs);
    k->dirs = NULL;
    k->ndirs = k->capdirs = 0;
    if (k->kind == SINK_TAR) {
        if (rc == 0)
            rc = tar_writer_close(k->tw, e);
        else /* an archive cut short has no end blocks: a reader sees the truncation */
            tar_writer_free(k->tw);
        k->tw = NULL;
    }
    return rc;
}

/* ---- sources: what entries come from ---------------------------------- */

static bool name_ok(const char *n)
{
    return n && *n && strlen(n) <= NAME_MAX && !strchr(n, '/') && strcmp(n, ".") && strcmp(n, "..");
}

/* -- local tree */

static int local_walk(int dfd, const char *name, const char *rel, struct sink *k, int depth, struct hx_err *e)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return hx_fail(e, errno, "stat %s: %m", rel[0] ? rel : name);
    if (S_ISLNK(st.st_mode)) {
        char target[RPATH_MAX + 1];
        ssize_t n = readlinkat(dfd, name, target, sizeof target - 1);
        if (n < 0)
            return hx_fail(e, errno, "readlink %s: %m", name);
        target[n] = 0;
        return sink_symlink(k, rel, target, e);
    }
    if (S_ISDIR(st.st_mode)) {
        if (depth > MAX_DEPTH)
            return hx_fail(e, ELOOP, "%s: directories nested deeper than %d", rel, MAX_DEPTH);
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return hx_fail(e, errno, "open %s: %m", name);
        DIR *d = fdopendir(fd);
        if (!d) {
            close(fd);
            return hx_fail(e, errno, "opendir %s: %m", name);
        }
        int rc = sink_dir(k, rel, st.st_mode, e);
        struct dirent *de;
        while (rc == 0 && (errno = 0, de = readdir(d))) {
            if (!name_ok(de->d_name))
                continue;
            char child[RPATH_MAX + 1];
            if ((rc = join(child, sizeof child, rel, de->d_name, e)) == 0)
                rc = local_walk(dirfd(d), de->d_name, child, k, depth + 1, e);
        }
        closedir(d);
        return rc;
    }
    if (S_ISREG(st.st_mode)) {
        autoclose int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return hx_fail(e, errno, "open %s: %m", name);
        if (fstat(fd, &st) < 0)
            return hx_fail(e, errno, "stat %s: %m", name);
        int rc;
        if (k->kind == SINK_REMOTE && raw_wanted(rel, (uint64_t)st.st_size)) {
            char p[RPATH_MAX + 1];
            if ((rc = rpath(k, rel, p, e)) < 0)
                return rc;
            snprintf(k->cur, sizeof k->cur, "%s", p);
            pg_begin(k->cur, (uint64_t)st.st_size);
            rc = hutch_file_put(raw.t, raw.dst_id, p, fd, (uint64_t)st.st_size, (int)(st.st_mode & 07777), raw_progress,
                                NULL, e);
            pg_end();
            if (rc != -ENOSYS)
                return rc;
            raw.off = true; /* an older hutchd: the fs RPCs */
            pg.files--;
        }
        rc = sink_file_begin(k, rel, st.st_mode, (uint64_t)st.st_size, e);
        if (rc < 0)
            return rc;
        autofree uint8_t *buf = malloc(IO_CHUNK);
        if (!buf)
            rc = hx_fail(e, ENOMEM, "out of memory");
        for (ssize_t n = 1; rc == 0 && n > 0;) {
            n = read(fd, buf, IO_CHUNK);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                rc = hx_fail(e, errno, "read %s: %m", name);
            else if (n > 0)
                rc = sink_file_data(k, buf, (size_t)n, e);
        }
        int rc2 = sink_file_end(k, st.st_mode, rc == 0, e);
        return rc < 0 ? rc : rc2;
    }
    fprintf(stderr, "hutch: skipping %s: not a file, directory or symlink\n", rel[0] ? rel : name);
    return 0;
}

/* -- sandbox tree */

/* A download as one server stream (hutch's readFileStream, docs/protocol.md "Binary streams"):
 * hutchd sends $sandbox.stream.start before its answer, and the bytes after it, possibly in
 * the same read; the first start after the request is ours, and the answer must confirm it. */
struct dl {
    struct sink *k;
    const char *rel;
    uint32_t mode;
    uint64_t size;
    int64_t sid;           /* -1 until the stream starts */
    bool begun;            /* the sink has the file (only once bytes or the end came: not on an error) */
    bool ended, failed;
    char msg[256];
};

static int dl_begin(struct dl *d, struct hx_err *e)
{
    if (d->begun)
        return 0;
    int rc = sink_file_begin(d->k, d->rel, d->mode, d->size, e);
    d->begun = rc == 0;
    return rc;
}

static int dl_stream(void *ud, enum hutch_stream_event ev, int64_t sid, const uint8_t *data, size_t n,
                     struct hx_err *e)
{
    struct dl *d = ud;
    if (ev == HUTCH_STREAM_START && d->sid < 0) {
        d->sid = sid;
        return 0;
    }
    if (sid != d->sid || d->ended)
        return 0;
    int rc;
    switch (ev) {
    case HUTCH_STREAM_DATA: return (rc = dl_begin(d, e)) < 0 ? rc : sink_file_data(d->k, data, n, e);
    case HUTCH_STREAM_END: d->ended = true; return dl_begin(d, e);
    case HUTCH_STREAM_ERROR:
        d->ended = d->failed = true;
        snprintf(d->msg, sizeof d->msg, "%.*s", (int)(n < 250 ? n : 250), (const char *)data);
        return 0;
    default: return 0;
    }
}

/* 1: the file was copied (or failed: rc in *out), 0: the server has no readFileStream. */
static int remote_read_stream(struct hutch_conn *c, const char *path, const char *rel, uint32_t mode, uint64_t size,
                              struct sink *k, int *out, struct hx_err *e)
{
    struct dl d = { .k = k, .rel = rel, .mode = mode, .size = size, .sid = -1 };
    int64_t req;
    int rc = hutch_send_request(c, "readFileStream", json_pack("{s:s}", "path", path), &req, e);
    hutch_conn_on_stream(c, dl_stream, &d);
    json_t *ok = NULL;
    bool answered = false;
    while (rc >= 0 && (!answered || !d.ended)) {
        if (!answered) {
            autofree char *code = NULL;
            rc = hutch_take_response(c, req, &ok, &code, e);
            if (rc < 0 && !code && strncmp(e->msg, "RPC error -32601:", 17) == 0) {
                hutch_conn_on_stream(c, NULL, NULL);
                return 0; /* an older hutchd: fileRead it is */
            }
            if (rc < 0)
                break;
            if (rc > 0) {
                answered = true;
                json_int_t sid = json_integer_value(json_object_get(ok, "streamId"));
                json_decref(ok);
                if (sid != d.sid)
                    rc = hx_fail(e, EPROTO, "readFileStream %s: the server's stream id does not match", path);
                continue;
            }
        }
        rc = hutch_pump(c, NULL, 0, -1, e);
        if (rc == -EINTR)
            rc = 0;
    }
    hutch_conn_on_stream(c, NULL, NULL);
    if (rc >= 0 && d.failed)
        rc = hx_fail(e, EREMOTEIO, "%s", d.msg[0] ? d.msg : "the download failed");
    if (d.begun) {
        int rc2 = sink_file_end(k, mode, rc >= 0, e);
        if (rc >= 0)
            rc = rc2;
    }
    *out = rc < 0 ? rc : 0;
    return 1;
}

static int remote_read_file(struct hutch_conn *c, const char *path, const char *rel, uint32_t mode, uint64_t size,
                            struct sink *k, struct hx_err *e)
{
    static bool no_stream; /* the server lacks readFileStream */
    int src;
    if (k->kind == SINK_LOCAL && raw_wanted(rel, size)) {
        int rc = sink_file_begin(k, rel, mode, size, e);
        if (rc < 0)
            return rc;
        uint64_t got = 0;
        rc = hutch_file_get(raw.t, raw.src_id, path, k->fd, raw_progress, NULL, &got, e);
        if (rc != -ENOSYS) {
            int rc2 = sink_file_end(k, mode, rc == 0, e);
            return rc < 0 ? rc : rc2;
        }
        struct hx_err e2;
        sink_file_end(k, mode, false, &e2); /* nothing was written: the fs RPCs write it again */
        raw.off = true;
        pg.files--;
    }
    if (!no_stream) {
        if (remote_read_stream(c, path, rel, mode, size, k, &src, e))
            return src;
        no_stream = true;
    }
    json_t *ok = NULL;
    int rc = hutch_call(c, "open", json_pack("{s:s, s:{s:b}}", "path", path, "options", "read", 1), &ok, NULL, e);
    if (rc < 0)
        return rc;
    json_int_t h = json_integer_value(json_object_get(ok, "fileHandleId"));
    json_decref(ok);
    ok = NULL;
    autofree uint8_t *buf = malloc(hx_b64_decoded_max(hx_b64_encoded_len(READ_CHUNK)) + 3);
    if (!buf)
        rc = hx_fail(e, ENOMEM, "out of memory");
    if (rc < 0 || (rc = sink_file_begin(k, rel, mode, size, e)) < 0)
        goto close;
    /* Several reads in flight on the handle: the sandbox answers them in order,
     * each continuing where the last stopped. */
    int64_t ids[READ_WINDOW];
    unsigned head = 0, n = 0;
    bool eof = false;
    while (rc == 0 && (!eof || n)) {
        while (!eof && n < READ_WINDOW && rc == 0) {
            rc = hutch_send_request(c, "fileRead", json_pack("{s:I, s:i}", "fileHandleId", h, "length", READ_CHUNK),
                                    &ids[(head + n) % READ_WINDOW], e);
            n++;
        }
        if (rc < 0)
            break;
        rc = hutch_take_response(c, ids[head], &ok, NULL, e);
        if (rc == 0) {
            rc = hutch_pump(c, NULL, 0, -1, e);
            if (rc == -EINTR)
                rc = 0;
            continue;
        }
        if (rc < 0)
            break;
        rc = 0;
        head = (head + 1) % READ_WINDOW;
        n--;
        json_t *data = json_object_get(ok, "data");
        if (!json_is_string(data)) {
            eof = true;
        } else if (!eof) {
            size_t dl = json_string_length(data), got = 0;
            if (dl > hx_b64_encoded_len(READ_CHUNK) || hx_b64_decode(json_string_value(data), dl, buf, &got) < 0)
                rc = hx_fail(e, EPROTO, "fileRead %s: bad data from the server", path);
            else if (got == 0)
                eof = true;
            else
                rc = sink_file_data(k, buf, got, e);
        }
        json_decref(ok);
        ok = NULL;
    }
    int rc2 = sink_file_end(k, mode, rc == 0, e);
    if (rc == 0)
        rc = rc2;
close:;
    struct hx_err e2;
    /* after an error, responses still in flight are left to the connection's close */
    if (rc == 0)
        rc = hutch_call(c, "fileClose", json_pack("{s:I}", "fileHandleId", h), NULL, NULL, e);
    else
        (void)hutch_send_request(c, "fileClose", json_pack("{s:I}", "fileHandleId", h), NULL, &e2);
    return rc;
}

static int remote_walk(struct hutch_conn *c, const char *path, const char *rel, struct sink *k, int depth,
                       struct hx_err *e)
{
    json_t *st = NULL;
    int rc = hutch_call(c, "lstat", json_pack("{s:s}", "path", path), &st, NULL, e);
    if (rc < 0)
        return rc;
    uint32_t mode = (uint32_t)json_integer_value(json_object_get(st, "mode"));
    json_int_t size = json_integer_value(json_object_get(st, "size"));
    bool is_dir = json_is_true(json_object_get(st, "isDirectory"));
    bool is_link = json_is_true(json_object_get(st, "isSymlink"));
    bool is_file = json_is_true(json_object_get(st, "isFile"));
    json_decref(st);
    if (is_link) {
        json_t *t = NULL;
        if ((rc = hutch_call(c, "readLink", json_pack("{s:s}", "path", path), &t, NULL, e)) < 0)
            return rc;
        if (!json_is_string(t) || json_string_length(t) > RPATH_MAX ||
            memchr(json_string_value(t), 0, json_string_length(t)))
            rc = hx_fail(e, EPROTO, "readLink %s: bad answer", path);
        else
            rc = sink_symlink(k, rel, json_string_value(t), e);
        json_decref(t);
        return rc;
    }
    if (is_dir) {
        if (depth > MAX_DEPTH)
            return hx_fail(e, ELOOP, "%s: directories nested deeper than %d", path, MAX_DEPTH);
        json_t *list = NULL;
        if ((rc = hutch_call(c, "readDir", json_pack("{s:s}", "path", path), &list, NULL, e)) < 0)
            return rc;
        rc = sink_dir(k, rel, mode, e);
        size_t i;
        json_t *ent;
        json_array_foreach(list, i, ent) {
            if (rc < 0)
                break;
            const char *name = json_string_value(json_object_get(ent, "name"));
            if (!name_ok(name) || memchr(name, 0, json_string_length(json_object_get(ent, "name")))) {
                fprintf(stderr, "hutch: skipping a bad name in %s\n", path);
                continue;
            }
            char cp[RPATH_MAX + 1], cr[RPATH_MAX + 1];
            if ((rc = join(cp, sizeof cp, path, name, e)) == 0 && (rc = join(cr, sizeof cr, rel, name, e)) == 0)
                rc = remote_walk(c, cp, cr, k, depth + 1, e);
        }
        json_decref(list);
        return rc;
    }
    if (is_file)
        return remote_read_file(c, path, rel, mode, size > 0 ? (uint64_t)size : 0, k, e);
    fprintf(stderr, "hutch: skipping %s: not a file, directory or symlink\n", path);
    return 0;
}

/* -- tar on stdin */

static bool under_symlink(char **links, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(links[i]);
        if (strncmp(path, links[i], l) == 0 && path[l] == '/')
            return true;
    }
    return false;
}

static int tar_walk(struct sink *k, struct hx_err *e)
{
    struct tar_reader *r = NULL;
    int rc = tar_reader_open(&r, STDIN_FILENO, e);
    if (rc < 0)
        return rc;
    struct tar_hdr *h = calloc(1, sizeof *h);
    autofree uint8_t *buf = malloc(IO_CHUNK);
    char **links = NULL;
    size_t nlinks = 0;
    char parent[TAR_PATH_MAX + 1] = "";
    rc = h && buf ? 0 : hx_fail(e, ENOMEM, "out of memory");
    while (rc == 0 && (rc = tar_next(r, h, e)) > 0) {
        rc = 0;
        /* a symlink this archive made is never a way into other paths (within the sandbox too) */
        if (under_symlink(links, nlinks, h->path)) {
            rc = hx_fail(e, EPERM, "tar: '%.200s' lies under a symlink of the same archive", h->path);
            break;
        }
        char *slash = strrchr(h->path, '/');
        if (slash && k->kind == SINK_REMOTE) {
            /* archives need not list parent directories */
            size_t pl = (size_t)(slash - h->path);
            if (strncmp(parent, h->path, pl) || parent[pl]) {
                memcpy(parent, h->path, pl);
                parent[pl] = 0;
                if ((rc = remote_mkparents(k, parent, e)) < 0)
                    break;
            }
        }
        switch (h->type) {
        case TAR_DIR:
            rc = sink_dir(k, h->path, h->mode, e);
            break;
        case TAR_SYMLINK: {
            if (!h->path[0]) {
                rc = hx_fail(e, EINVAL, "tar: a symlink as the archive's root");
                break;
            }
            char **nl = realloc(links, (nlinks + 1) * sizeof *nl);
            if (!nl || !(nl[nlinks] = strdup(h->path))) {
                if (nl)
                    links = nl;
                rc = hx_fail(e, ENOMEM, "out of memory");
                break;
            }
            links = nl;
            nlinks++;
            rc = sink_symlink(k, h->path, h->link, e);
            break;
        }
        case TAR_FILE: {
            if (!h->path[0]) {
                rc = hx_fail(e, EINVAL, "tar: a file entry without a name");
                break;
            }
            if ((rc = sink_file_begin(k, h->path, h->mode, h->size, e)) < 0)
                break;
            ssize_t n;
            while ((n = tar_read(r, buf, IO_CHUNK, e)) > 0 && (rc = sink_file_data(k, buf, (size_t)n, e)) == 0)
                ;
            if (n < 0)
                rc = (int)n;
            int rc2 = sink_file_end(k, h->mode, rc == 0, e);
            if (rc == 0)
                rc = rc2;
            break;
        }
        default:
            fprintf(stderr, "hutch: skipping %s: tar entry type '%c' is not supported\n", h->path,
                    h->type >= 32 && h->type < 127 ? h->type : '?');
        }
    }
    for (size_t i = 0; i < nlinks; i++)
        free(links[i]);
    free(links);
    free(h);
    tar_reader_free(r);
    return rc;
}

/* ---- the command ------------------------------------------------------ */

enum ep_kind { EP_LOCAL, EP_REMOTE, EP_TAR };
struct ep {
    enum ep_kind kind;
    char id[64];
    const char *path;
};

/* The SDK's sandbox id pattern ^sbx_[a-z]{3}_[0-9a-hjkmnp-z]{20}$, then ':'. */
static bool parse_ep(const char *s, struct ep *ep)
{
    memset(ep, 0, sizeof *ep);
    if (strcmp(s, "-") == 0) {
        ep->kind = EP_TAR;
        return true;
    }
    const char *colon = strchr(s, ':');
    size_t n = colon ? (size_t)(colon - s) : 0;
    bool id = n == 28 && strncmp(s, "sbx_", 4) == 0 && s[7] == '_';
    for (size_t i = 4; id && i < 7; i++)
        id = s[i] >= 'a' && s[i] <= 'z';
    for (size_t i = 8; id && i < 28; i++)
        id = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z' && s[i] != 'i' && s[i] != 'l' && s[i] != 'o');
    if (!id) {
        ep->kind = EP_LOCAL;
        ep->path = s;
        return *s != 0;
    }
    ep->kind = EP_REMOTE;
    memcpy(ep->id, s, n);
    ep->path = colon[1] ? colon + 1 : ".";
    return true;
}

/* The name SRC has when copied into a directory. */
static int src_name(const struct ep *src, struct hutch_conn *c, char *out, struct hx_err *e)
{
    char tmp[RPATH_MAX + 1];
    snprintf(tmp, sizeof tmp, "%s", src->path);
    for (size_t l = strlen(tmp); l > 1 && tmp[l - 1] == '/'; l--)
        tmp[l - 1] = 0;
    const char *b = strrchr(tmp, '/');
    b = b ? b + 1 : tmp;
    if (*b && strcmp(b, ".") && strcmp(b, "..")) {
        snprintf(out, NAME_MAX + 1, "%s", b);
        return 0;
    }
    char real[PATH_MAX];
    if (src->kind == EP_LOCAL) {
        if (!realpath(src->path, real))
            return hx_fail(e, errno, "%s: %m", src->path);
    } else {
        json_t *ok = NULL;
        int rc = hutch_call(c, "realPath", json_pack("{s:s}", "path", src->path), &ok, NULL, e);
        if (rc < 0)
            return rc;
        snprintf(real, sizeof real, "%s", json_is_string(ok) ? json_string_value(ok) : "");
        json_decref(ok);
    }
    b = strrchr(real, '/');
    b = b ? b + 1 : real;
    if (!*b)
        return hx_fail(e, EINVAL, "cannot name a copy of '/': give the destination's full path");
    snprintf(out, NAME_MAX + 1, "%s", b);
    return 0;
}

static int remote_is_dir(struct hutch_conn *c, const char *path, bool *is_dir, bool *exists, struct hx_err *e)
{
    json_t *st = NULL;
    autofree char *code = NULL;
    int rc = hutch_call(c, "stat", json_pack("{s:s}", "path", path), &st, &code, e);
    *exists = rc == 0;
    *is_dir = rc == 0 && json_is_true(json_object_get(st, "isDirectory"));
    json_decref(st);
    if (rc < 0 && code && strcmp(code, "ENOENT") == 0)
        return 0;
    return rc;
}

static int run_copy(const struct ep *src, const struct ep *dst, struct hutch_conn *sc, struct hutch_conn *dc,
                    struct hx_err *e)
{
    struct sink k = { .pfd = -1, .fd = -1 };
    char name[NAME_MAX + 1] = "";
    int rc = 0;
    if (src->kind != EP_TAR && (rc = src_name(src, sc, name, e)) < 0)
        return rc;
    switch (dst->kind) {
    case EP_TAR:
        k.kind = SINK_TAR;
        snprintf(k.prefix, sizeof k.prefix, "%s", name);
        if ((rc = tar_writer_open(&k.tw, STDOUT_FILENO, e)) < 0)
            return rc;
        break;
    case EP_REMOTE: {
        k.kind = SINK_REMOTE;
        k.c = dc;
        bool is_dir, exists;
        if ((rc = remote_is_dir(dc, dst->path, &is_dir, &exists, e)) < 0)
            return rc;
        if (src->kind == EP_TAR) {
            if (exists && !is_dir)
                return hx_fail(e, ENOTDIR, "%s:%s is not a directory (a tar stream unpacks into one)", dst->id, dst->path);
            if (!exists && (rc = hutch_call(dc, "mkdir", json_pack("{s:s, s:{s:b}}", "path", dst->path, "options",
                                                                    "recursive", 1), NULL, NULL, e)) < 0)
                return rc;
            snprintf(k.root, sizeof k.root, "%s", dst->path);
        } else if (is_dir) {
            if ((rc = join(k.root, sizeof k.root, dst->path, name, e)) < 0)
                return rc;
        } else {
            snprintf(k.root, sizeof k.root, "%s", dst->path);
        }
        break;
    }
    case EP_LOCAL: {
        k.kind = SINK_LOCAL;
        struct stat st;
        char root[PATH_MAX];
        if (stat(dst->path, &st) == 0 && S_ISDIR(st.st_mode)) {
            if ((rc = join(root, sizeof root, dst->path, name, e)) < 0)
                return rc;
        } else {
            snprintf(root, sizeof root, "%s", dst->path);
        }
        for (size_t l = strlen(root); l > 1 && root[l - 1] == '/'; l--)
            root[l - 1] = 0;
        char *slash = strrchr(root, '/');
        const char *base = slash ? slash + 1 : root;
        if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
            return hx_fail(e, EINVAL, "%s: name the destination file or directory", dst->path);
        snprintf(k.base, sizeof k.base, "%s", base);
        if (slash == root)
            k.pfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        else if (slash) {
            *slash = 0;
            k.pfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        } else
            k.pfd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (k.pfd < 0)
            return hx_fail(e, errno, "open %s: %m", slash ? root : ".");
        break;
    }
    }
    switch (src->kind) {
    case EP_TAR:
        rc = tar_walk(&k, e);
        break;
    case EP_REMOTE:
        rc = remote_walk(sc, src->path, "", &k, 0, e);
        break;
    case EP_LOCAL: {
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", src->path);
        for (size_t l = strlen(tmp); l > 1 && tmp[l - 1] == '/'; l--)
            tmp[l - 1] = 0;
        char *slash = strrchr(tmp, '/');
        const char *base = slash ? slash + 1 : tmp;
        autoclose int pfd = -1;
        if (!strcmp(base, ".") || !strcmp(base, "..") || !*base) {
            pfd = open(src->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
            base = ".";
        } else if (slash == tmp) {
            pfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        } else if (slash) {
            *slash = 0;
            pfd = open(tmp, O_PATH | O_DIRECTORY | O_CLOEXEC);
        } else {
            pfd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
        }
        if (pfd < 0)
            rc = hx_fail(e, errno, "open %s: %m", src->path);
        else
            rc = local_walk(pfd, base, "", &k, 0, e);
        break;
    }
    }
    struct hx_err e2 = { 0 };
    int rc2 = sink_finish(&k, rc < 0 ? &e2 : e);
    if (k.pfd >= 0)
        close(k.pfd);
    return rc < 0 ? rc : rc2;
}

int cmd_cp(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        CLI_COMMON_OPTS,
        { "quiet", no_argument, NULL, 'q' },
        { 0 },
    };
    bool quiet = false;
    int ch;
    while ((ch = getopt_long(argc, argv, ":hq", opts, NULL)) != -1) {
        if (ch == 'h') {
            fputs(cp_help, stdout);
            return 0;
        }
        if (ch == 'q') {
            quiet = true;
            continue;
        }
        int r = cli_common_opt(cli, "cp", ch, argv);
        if (r >= 0)
            return r;
    }
    if (argc - optind != 2)
        return cli_usage("cp", "expected SRC and DST");
    struct ep src, dst;
    if (!parse_ep(argv[optind], &src) || !parse_ep(argv[optind + 1], &dst))
        return cli_usage("cp", "empty path");
    if (src.kind != EP_REMOTE && dst.kind != EP_REMOTE)
        return cli_usage("cp", "one side must be a sandbox path ID:PATH");
    if (src.kind == EP_TAR && isatty(STDIN_FILENO))
        return cli_usage("cp", "'-' reads a tar stream from stdin, which is a terminal");
    if (dst.kind == EP_TAR && isatty(STDOUT_FILENO))
        return cli_usage("cp", "'-' writes a tar stream to stdout, which is a terminal");
    pg.on = !quiet && isatty(STDERR_FILENO);

    struct hx_err e = { 0 };
    struct hutch_target t = { 0 };
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("cp: %s", e.msg);
    struct hutch_conn *sc = NULL, *dc = NULL;
    int rc = 0;
    if (src.kind == EP_REMOTE && (rc = hutch_connect(&t, src.id, &sc, &e)) < 0)
        goto out;
    if (dst.kind == EP_REMOTE && (rc = hutch_connect(&t, dst.id, &dc, &e)) < 0)
        goto out;
    raw.t = &t;
    raw.src_id = src.id;
    raw.dst_id = dst.id;
    rc = run_copy(&src, &dst, sc, dc, &e);
out:
    hutch_conn_close(sc);
    hutch_conn_close(dc);
    hutch_target_free(&t);
    if (rc < 0)
        return cli_error("cp: %s", e.msg);
    return 0;
}
