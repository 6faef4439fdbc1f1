/* The fs worker (see fs_worker.h): a blocking loop over the socketpair to
 * hutch-init serving the SDK's file operations as app, inside the sandbox.
 * Its threat model: requests come from hutchd (trusted) through init, but
 * paths name things sandbox code controls, so every operation is an
 * ordinary syscall by an unprivileged process in the sandbox's own mount
 * namespace: a symlink can only lead to what app could open anyway. */
#include "init/init.h"
#include "init/fs_worker.h"
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <time.h>
#include "lib/b64.h"
#include "lib/fdrecv.h"
#include "lib/wire.h"

#define FSW_MAX_HANDLES 1024        /* open file handles per sandbox (the daemon limits per session) */
#define FSW_MAX_WRITES 256          /* concurrent writeFile uploads */
#define FSW_MAX_JOBS 256            /* concurrent readFile/readDir/walk/glob streams */
#define FSW_READ_MAX (144u * 1024u) /* fileRead bytes per reply: base64 fits a frame */
#define FSW_RBUF (HX_FRAME_HDR + HX_FRAME_MAX)

struct fsw_handle {
    uint32_t id;
    int fd;
};

struct fsw_write {
    struct fsw_write *next;
    uint32_t req, chan;
    int fd;
    uint64_t bytes;
    char path[FSW_PATH_MAX + 1];
};

static int g_sock = -1;
static struct fsw_handle g_handles[FSW_MAX_HANDLES];
static uint32_t g_next_handle = 1;
static struct fsw_write *g_writes;
static struct fsw_job *g_jobs;

/* ---- sending ---------------------------------------------------------- */

static _Noreturn void worker_exit(void)
{
    _exit(0);
}

void fsw_send(uint16_t type, uint32_t chan, const void *p, size_t len)
{
    uint8_t hdr[HX_FRAME_HDR];
    if (len > HX_FRAME_MAX)
        len = HX_FRAME_MAX;
    hx_frame_hdr_encode(hdr, type, chan, (uint32_t)len);
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)p, len}};
    int cnt = len ? 2 : 1;
    while (cnt > 0) {
        ssize_t n = writev(g_sock, iov, cnt);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            worker_exit(); /* init is gone */
        size_t left = (size_t)n;
        while (cnt > 0 && left >= iov[0].iov_len) {
            left -= iov[0].iov_len;
            iov[0] = iov[1];
            cnt--;
        }
        if (cnt > 0) {
            iov[0].iov_base = (uint8_t *)iov[0].iov_base + left;
            iov[0].iov_len -= left;
        }
    }
}

static void send_json(uint32_t chan, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    if (!s)
        worker_exit();
    size_t n = strlen(s);
    if (n > HX_FRAME_MAX) {
        free(s);
        s = strdup("{\"error\":{\"code\":\"E2BIG\",\"message\":\"E2BIG: reply too large\"}}");
        if (!s)
            worker_exit();
        n = strlen(s);
    }
    fsw_send(HX_REPLY, chan, s, n);
    free(s);
}

static void reply_ok(uint32_t req, json_t *v)
{
    send_json(req, json_pack("{s:o}", "ok", v ? v : json_null()));
}

static void reply_err(uint32_t req, const struct hx_err *e)
{
    send_json(req, json_pack("{s:{s:s,s:s}}", "error", "code", errno_name(e->code ? e->code : EIO), "message", e->msg));
}

void fsw_reply(uint32_t req, json_t *ok, const struct hx_err *e)
{
    if (e) {
        json_decref(ok);
        reply_err(req, e);
    } else {
        reply_ok(req, ok);
    }
}

/* ---- descriptors from hutchd (spliceFile's socket) ---------------------- */

#define FSW_FDS_MAX 16
static int g_fds[FSW_FDS_MAX];        /* received, oldest first, not yet claimed by their call */
static unsigned g_nfds;

static void fds_push(int fd)
{
    if (g_nfds >= FSW_FDS_MAX) {
        close(fd);
        return;
    }
    g_fds[g_nfds++] = fd;
}

static int fds_pop(void)
{
    if (!g_nfds)
        return -1;
    int fd = g_fds[0];
    memmove(g_fds, g_fds + 1, --g_nfds * sizeof g_fds[0]);
    return fd;
}

static void fds_drop(void)
{
    while (g_nfds)
        close(g_fds[--g_nfds]);
}

static void keep_fd(int fd, void *ud)
{
    (void)ud;
    fds_push(fd);
}

/* read(2) that keeps the descriptors sent along (they come with their
 * call's first byte). */
static ssize_t recv_fds(int sock, uint8_t *buf, size_t n)
{
    return hx_recv_fds(sock, buf, n, keep_fd, NULL);
}

/* Node's message shape, which SDK users match on:
 * "ENOENT: no such file or directory, open '/home/app/x'". */
int fsw_fail_path(struct hx_err *e, int err, const char *op, const char *path)
{
    char what[96];
    snprintf(what, sizeof what, "%s", strerror(err));
    if (what[0] >= 'A' && what[0] <= 'Z')
        what[0] = (char)(what[0] - 'A' + 'a');
    return hx_fail(e, err, "%s: %s, %s '%.3000s'", errno_name(err), what, op, path);
}

/* ---- JSON helpers ----------------------------------------------------- */

/* A string parameter naming a path: non-empty, no NUL, bounded. */
const char *fsw_path(json_t *params, const char *key, struct hx_err *e)
{
    json_t *v = json_object_get(params, key);
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) != json_string_length(v)) {
        hx_fail(e, EINVAL, "EINVAL: \"%s\" must be a non-empty path without NUL bytes", key);
        return NULL;
    }
    if (json_string_length(v) > FSW_PATH_MAX) {
        hx_fail(e, ENAMETOOLONG, "ENAMETOOLONG: \"%s\" is longer than %u bytes", key, FSW_PATH_MAX);
        return NULL;
    }
    return s;
}

static bool opt_bool(json_t *params, const char *k, bool dflt)
{
    json_t *v = json_object_get(params, k);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* An optional integer in [lo, hi]; false if present but not such an integer. */
static bool opt_int(json_t *params, const char *k, int64_t lo, int64_t hi, int64_t dflt, int64_t *out)
{
    json_t *v = json_object_get(params, k);
    *out = dflt;
    if (!v || json_is_null(v))
        return true;
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != (double)(int64_t)d)
            return false;
        *out = (int64_t)d;
    } else if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else if (json_is_string(v)) { /* the SDK sends bigint offsets as strings */
        char *end;
        errno = 0;
        long long x = strtoll(json_string_value(v), &end, 10);
        if (errno || *end || end == json_string_value(v))
            return false;
        *out = x;
    } else {
        return false;
    }
    return *out >= lo && *out <= hi;
}

bool fsw_json_str(char *out, size_t cap, size_t *len, const char *s)
{
    size_t n = *len;
    const unsigned char *p = (const unsigned char *)s;
#define PUT(c) do { if (n >= cap) return false; out[n++] = (char)(c); } while (0)
    PUT('"');
    while (*p) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT(c);
            p++;
        } else if (c < 0x20) {
            if (n + 6 > cap)
                return false;
            n += (size_t)snprintf(out + n, 7, "\\u%04x", c);
            p++;
        } else if (c < 0x80) {
            PUT(c);
            p++;
        } else {
            /* Valid UTF-8 is copied; anything else becomes U+FFFD, so the
             * daemon's strict JSON parser always accepts what we send. */
            int need = (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
            bool ok = need > 0 && c != 0xc0 && c != 0xc1 && c < 0xf5;
            for (int i = 1; ok && i <= need; i++)
                ok = (p[i] & 0xc0) == 0x80;
            if (ok && need == 2 && ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0)))
                ok = false;
            if (ok && need == 3 && ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90)))
                ok = false;
            if (ok) {
                for (int i = 0; i <= need; i++)
                    PUT(p[i]);
                p += need + 1;
            } else {
                PUT(0xef);
                PUT(0xbf);
                PUT(0xbd);
                p++;
            }
        }
    }
    PUT('"');
#undef PUT
    *len = n;
    return true;
}

static json_t *iso_date(int64_t sec, uint32_t nsec)
{
    struct tm tm;
    time_t t = (time_t)sec;
    char buf[64];
    if (!gmtime_r(&t, &tm))
        return json_string("1970-01-01T00:00:00.000Z");
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, nsec / 1000000u);
    return json_string(buf);
}

/* "2024-01-02T03:04:05.678Z" (Date.toISOString) → timespec. */
static bool parse_iso(json_t *v, struct timespec *ts)
{
    const char *s = json_string_value(v);
    if (!s || strlen(s) > 40)
        return false;
    int y, mo, d, h, mi, sec, n = 0;
    unsigned ms = 0;
    if (sscanf(s, "%d-%d-%dT%d:%d:%d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6)
        return false;
    const char *rest = s + n;
    if (*rest == '.') {
        int m = 0;
        if (sscanf(rest, ".%3u%n", &ms, &m) != 1)
            return false;
        rest += m;
        while (*rest >= '0' && *rest <= '9')
            rest++;
    }
    if (strcmp(rest, "Z") != 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < -9999 ||
        y > 99999)
        return false;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = sec};
    ts->tv_sec = timegm(&tm);
    ts->tv_nsec = (long)ms * 1000000L;
    return true;
}

json_t *fsw_stat_json(const struct statx *st)
{
    mode_t m = st->stx_mode;
    struct statx_timestamp bt = (st->stx_mask & STATX_BTIME) ? st->stx_btime : st->stx_ctime;
    json_t *o = json_object();
    json_object_set_new(o, "isFile", json_boolean(S_ISREG(m)));
    json_object_set_new(o, "isDirectory", json_boolean(S_ISDIR(m)));
    json_object_set_new(o, "isSymlink", json_boolean(S_ISLNK(m)));
    json_object_set_new(o, "size", json_integer((json_int_t)st->stx_size));
    json_object_set_new(o, "mtime", iso_date(st->stx_mtime.tv_sec, st->stx_mtime.tv_nsec));
    json_object_set_new(o, "atime", iso_date(st->stx_atime.tv_sec, st->stx_atime.tv_nsec));
    json_object_set_new(o, "birthtime", iso_date(bt.tv_sec, bt.tv_nsec));
    json_object_set_new(o, "ctime", iso_date(st->stx_ctime.tv_sec, st->stx_ctime.tv_nsec));
    json_object_set_new(o, "mode", json_integer(m));
    json_object_set_new(o, "dev", json_integer((json_int_t)makedev(st->stx_dev_major, st->stx_dev_minor)));
    json_object_set_new(o, "ino", json_integer((json_int_t)st->stx_ino));
    json_object_set_new(o, "nlink", json_integer(st->stx_nlink));
    json_object_set_new(o, "uid", json_integer(st->stx_uid));
    json_object_set_new(o, "gid", json_integer(st->stx_gid));
    json_object_set_new(o, "rdev", json_integer((json_int_t)makedev(st->stx_rdev_major, st->stx_rdev_minor)));
    json_object_set_new(o, "blksize", json_integer(st->stx_blksize));
    json_object_set_new(o, "blocks", json_integer((json_int_t)st->stx_blocks));
    json_object_set_new(o, "isBlockDevice", json_boolean(S_ISBLK(m)));
    json_object_set_new(o, "isCharDevice", json_boolean(S_ISCHR(m)));
    json_object_set_new(o, "isFifo", json_boolean(S_ISFIFO(m)));
    json_object_set_new(o, "isSocket", json_boolean(S_ISSOCK(m)));
    return o;
}

/* ---- opening ---------------------------------------------------------- */

/* Opens without blocking on a FIFO (a writer that never comes would hang
 * every fs operation of the sandbox), then restores blocking mode. */
static int open_nb(const char *path, int flags, mode_t mode)
{
    int fd = open(path, flags | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, mode);
    if (fd < 0)
        return -1;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

struct open_opts {
    bool read, write, append, truncate, create, create_new;
    bool has_mode;
    mode_t mode;
};

static int open_with(const char *path, const struct open_opts *o, const char *op, struct hx_err *e)
{
    int acc = (o->write || o->append) ? (o->read ? O_RDWR : O_WRONLY) : O_RDONLY;
    int flags = acc;
    if (o->append)
        flags |= O_APPEND;
    if (o->truncate && (o->write || o->append))
        flags |= O_TRUNC;
    if (o->create_new)
        flags |= O_CREAT | O_EXCL;
    else if (o->create)
        flags |= O_CREAT;
    if ((flags & O_CREAT) && !(o->write || o->append))
        return hx_fail(e, EINVAL, "EINVAL: 'create' or 'createNew' needs 'write' or 'append', %s '%.3000s'", op, path);
    int fd = open_nb(path, flags, o->has_mode ? o->mode : 0666);
    if (fd < 0)
        return fsw_fail_path(e, errno, op, path);
    return fd;
}

static bool parse_mode(json_t *obj, const char *key, struct open_opts *o, struct hx_err *e)
{
    int64_t m;
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return true;
    if (!opt_int(obj, key, 0, 07777, 0, &m)) {
        hx_fail(e, EINVAL, "EINVAL: \"%s\" must be an integer between 0 and 0o7777", key);
        return false;
    }
    o->has_mode = true;
    o->mode = (mode_t)m;
    return true;
}

/* ---- file handles ----------------------------------------------------- */

static struct fsw_handle *handle_get(json_t *params, struct hx_err *e)
{
    int64_t id;
    if (!opt_int(params, "fileHandleId", 1, UINT32_MAX, 0, &id) || id == 0) {
        hx_fail(e, EBADF, "EBADF: bad file handle");
        return NULL;
    }
    for (unsigned i = 0; i < FSW_MAX_HANDLES; i++)
        if (g_handles[i].id == (uint32_t)id)
            return &g_handles[i];
    hx_fail(e, EBADF, "EBADF: bad file handle %lld", (long long)id);
    return NULL;
}

static json_t *handle_new(int fd, struct hx_err *e)
{
    for (unsigned i = 0; i < FSW_MAX_HANDLES; i++) {
        if (g_handles[i].id == 0) {
            g_handles[i].id = g_next_handle++;
            if (g_next_handle == 0)
                g_next_handle = 1;
            g_handles[i].fd = fd;
            return json_pack("{s:I}", "fileHandleId", (json_int_t)g_handles[i].id);
        }
    }
    close(fd);
    hx_fail(e, EMFILE, "EMFILE: too many open file handles in this sandbox (%u)", FSW_MAX_HANDLES);
    return NULL;
}

static json_t *op_open(json_t *params, bool create, struct hx_err *e)
{
    const char *path = fsw_path(params, "path", e);
    if (!path)
        return NULL;
    struct open_opts o = {.read = true};
    json_t *opts = json_object_get(params, "options");
    if (create) {
        o = (struct open_opts){.read = true, .write = true, .create = true, .truncate = true};
    } else if (json_is_object(opts)) {
        o.read = opt_bool(opts, "read", false);
        o.write = opt_bool(opts, "write", false);
        o.append = opt_bool(opts, "append", false);
        o.truncate = opt_bool(opts, "truncate", false);
        o.create = opt_bool(opts, "create", false);
        o.create_new = opt_bool(opts, "createNew", false);
        if (!parse_mode(opts, "mode", &o, e))
            return NULL;
        if (!o.read && !o.write && !o.append)
            o.read = true;
    }
    int fd = open_with(path, &o, "open", e);
    if (fd < 0)
        return NULL;
    return handle_new(fd, e);
}

/* fileRead: data is answered here, without jansson (*sent), as {"ok":{"data":"<base64>"}}
 * exactly, the shape hutchd passes on unparsed: building and dumping a 192 KiB JSON
 * string cost more than the read itself. EOF and errors go back to the caller. */
static json_t *op_file_read(uint32_t req, json_t *params, bool *sent, struct hx_err *e)
{
    static const char head[] = "{\"ok\":{\"data\":\"", tail[] = "\"}}";
    struct fsw_handle *h = handle_get(params, e);
    if (!h)
        return NULL;
    int64_t want;
    if (!opt_int(params, "length", 0, INT64_MAX, -1, &want) || want < 0) {
        hx_fail(e, EINVAL, "EINVAL: \"length\" must be a non-negative integer");
        return NULL;
    }
    size_t n = want > FSW_READ_MAX ? FSW_READ_MAX : (size_t)want;
    uint8_t *buf = malloc(n + 1);
    size_t hl = sizeof head - 1, el = hx_b64_encoded_len(n);
    char *out = malloc(hl + el + sizeof tail);
    ssize_t r = -1;
    if (buf && out) {
        do
            r = read(h->fd, buf, n);
        while (r < 0 && errno == EINTR);
    }
    json_t *res = NULL;
    if (!buf || !out)
        hx_fail(e, ENOMEM, "ENOMEM: out of memory");
    else if (r < 0)
        hx_fail(e, errno, "%s: read: %m", errno_name(errno));
    else if (r == 0 && n > 0)
        res = json_pack("{s:n}", "data");
    else {
        memcpy(out, head, hl);
        hx_b64_encode(buf, (size_t)r, out + hl);
        size_t len = hl + hx_b64_encoded_len((size_t)r);
        memcpy(out + len, tail, sizeof tail - 1);
        fsw_send(HX_REPLY, req, out, len + sizeof tail - 1);
        *sent = true;
    }
    free(buf);
    free(out);
    return res;
}

static json_t *op_handle(const char *method, json_t *params, struct hx_err *e)
{
    struct fsw_handle *h = handle_get(params, e);
    if (!h)
        return NULL;
    if (strcmp(method, "fileClose") == 0) {
        close(h->fd);
        h->id = 0;
        h->fd = -1;
        return json_null();
    }
    if (strcmp(method, "fileWrite") == 0) {
        json_t *d = json_object_get(params, "data");
        const char *s = json_string_value(d);
        size_t sl = json_string_length(d);
        if (!s) {
            hx_fail(e, EINVAL, "EINVAL: \"data\" must be base64");
            return NULL;
        }
        uint8_t *buf = malloc(hx_b64_decoded_max(sl) + 1);
        size_t n = 0;
        if (!buf || hx_b64_decode(s, sl, buf, &n) < 0) {
            free(buf);
            hx_fail(e, EINVAL, "EINVAL: \"data\" must be base64");
            return NULL;
        }
        ssize_t w;
        do
            w = write(h->fd, buf, n);
        while (w < 0 && errno == EINTR);
        free(buf);
        if (w < 0) {
            hx_fail(e, errno, "%s: write: %m", errno_name(errno));
            return NULL;
        }
        return json_pack("{s:I}", "bytesWritten", (json_int_t)w);
    }
    if (strcmp(method, "fileSeek") == 0) {
        int64_t off, whence;
        if (!opt_int(params, "offset", INT64_MIN, INT64_MAX, 0, &off) ||
            !opt_int(params, "whence", 0, 2, -1, &whence) || whence < 0) {
            hx_fail(e, EINVAL, "EINVAL: \"offset\" must be an integer and \"whence\" 0, 1 or 2");
            return NULL;
        }
        off_t pos = lseek(h->fd, (off_t)off, (int)whence);
        if (pos < 0) {
            hx_fail(e, errno, "%s: seek: %m", errno_name(errno));
            return NULL;
        }
        return json_pack("{s:I}", "position", (json_int_t)pos);
    }
    if (strcmp(method, "fileStat") == 0) {
        struct statx st;
        if (statx(h->fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS | STATX_BTIME, &st) < 0) {
            hx_fail(e, errno, "%s: fstat: %m", errno_name(errno));
            return NULL;
        }
        return fsw_stat_json(&st);
    }
    int r = 0;
    if (strcmp(method, "fileSync") == 0) {
        r = fsync(h->fd);
    } else if (strcmp(method, "fileSyncData") == 0) {
        r = fdatasync(h->fd);
    } else if (strcmp(method, "fileTruncate") == 0) {
        int64_t len;
        if (!opt_int(params, "len", 0, INT64_MAX, 0, &len)) {
            hx_fail(e, EINVAL, "EINVAL: \"len\" must be a non-negative integer");
            return NULL;
        }
        r = ftruncate(h->fd, (off_t)len);
    } else if (strcmp(method, "fileUtime") == 0) {
        struct timespec ts[2];
        if (!parse_iso(json_object_get(params, "atime"), &ts[0]) ||
            !parse_iso(json_object_get(params, "mtime"), &ts[1])) {
            hx_fail(e, EINVAL, "EINVAL: \"atime\" and \"mtime\" must be ISO dates");
            return NULL;
        }
        r = futimens(h->fd, ts);
    } else if (strcmp(method, "fileLock") == 0) {
        /* Non-blocking: a lock held elsewhere must not stall every other fs
         * operation of the sandbox in this single worker. */
        r = flock(h->fd, (opt_bool(params, "exclusive", false) ? LOCK_EX : LOCK_SH) | LOCK_NB);
    } else if (strcmp(method, "fileUnlock") == 0) {
        r = flock(h->fd, LOCK_UN);
    } else {
        hx_fail(e, ENOSYS, "ENOSYS: unknown file method");
        return NULL;
    }
    if (r < 0) {
        hx_fail(e, errno, "%s: %s: %m", errno_name(errno), method);
        return NULL;
    }
    return json_null();
}

/* ---- path operations -------------------------------------------------- */

/* Removes the tree under dirfd without following symlinks (unlinkat only
 * ever removes the link itself); depth is bounded by the fds it may hold. */
static int remove_tree_at(int parent, const char *name, int depth)
{
    if (unlinkat(parent, name, 0) == 0)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -errno;
    if (depth > 256)
        return -ELOOP;
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int err = errno;
        close(fd);
        return -err;
    }
    int ret = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        int r = remove_tree_at(dirfd(d), de->d_name, depth + 1);
        if (r < 0 && r != -ENOENT) {
            ret = r;
            break;
        }
    }
    closedir(d);
    if (ret == 0 && unlinkat(parent, name, AT_REMOVEDIR) < 0)
        ret = -errno;
    return ret;
}

static json_t *op_remove(json_t *params, struct hx_err *e)
{
    const char *path = fsw_path(params, "path", e);
    if (!path)
        return NULL;
    bool recursive = opt_bool(json_object_get(params, "options"), "recursive", false);
    if (recursive) {
        int r = remove_tree_at(AT_FDCWD, path, 0);
        if (r < 0) {
            fsw_fail_path(e, -r, "rm", path);
            return NULL;
        }
        return json_null();
    }
    if (unlinkat(AT_FDCWD, path, 0) < 0) {
        int err = errno;
        if ((err == EISDIR || err == EPERM) && unlinkat(AT_FDCWD, path, AT_REMOVEDIR) == 0)
            return json_null();
        if (err == EISDIR || err == EPERM)
            err = errno;
        fsw_fail_path(e, err, "remove", path);
        return NULL;
    }
    return json_null();
}

static json_t *op_mkdir(json_t *params, struct hx_err *e)
{
    const char *path = fsw_path(params, "path", e);
    if (!path)
        return NULL;
    json_t *opts = json_object_get(params, "options");
    struct open_opts o = {0};
    if (json_is_object(opts) && !parse_mode(opts, "mode", &o, e))
        return NULL;
    mode_t mode = o.has_mode ? o.mode : 0777;
    if (!opt_bool(opts, "recursive", false)) {
        if (mkdir(path, mode) < 0) {
            fsw_fail_path(e, errno, "mkdir", path);
            return NULL;
        }
        return json_null();
    }
    char buf[FSW_PATH_MAX + 1];
    snprintf(buf, sizeof buf, "%s", path);
    size_t n = strlen(buf);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0)
            continue;
        char saved = buf[i];
        buf[i] = 0;
        if (mkdir(buf, mode) < 0) {
            int err = errno;
            struct stat st;
            if (err != EEXIST || stat(buf, &st) < 0 || !S_ISDIR(st.st_mode)) {
                fsw_fail_path(e, err == EEXIST ? ENOTDIR : err, "mkdir", path);
                return NULL;
            }
        }
        buf[i] = saved;
    }
    return json_null();
}

static json_t *op_stat(json_t *params, bool follow, struct hx_err *e)
{
    const char *path = fsw_path(params, "path", e);
    if (!path)
        return NULL;
    struct statx st;
    if (statx(AT_FDCWD, path, follow ? 0 : AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME, &st) < 0) {
        fsw_fail_path(e, errno, follow ? "stat" : "lstat", path);
        return NULL;
    }
    return fsw_stat_json(&st);
}

static json_t *op_copy(json_t *params, struct hx_err *e)
{
    const char *from = fsw_path(params, "fromPath", e), *to = from ? fsw_path(params, "toPath", e) : NULL;
    if (!to)
        return NULL;
    autoclose int in = open_nb(from, O_RDONLY, 0);
    if (in < 0) {
        fsw_fail_path(e, errno, "copyfile", from);
        return NULL;
    }
    struct stat st;
    if (fstat(in, &st) < 0 || S_ISDIR(st.st_mode)) {
        fsw_fail_path(e, S_ISDIR(st.st_mode) ? EISDIR : errno, "copyfile", from);
        return NULL;
    }
    autoclose int out = open_nb(to, O_WRONLY | O_CREAT | O_TRUNC, st.st_mode & 07777);
    if (out < 0) {
        fsw_fail_path(e, errno, "copyfile", to);
        return NULL;
    }
    for (;;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, 1u << 30, 0);
        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
            /* Not for every pair of filesystems or file kinds: plain copy. */
            static uint8_t buf[64 * 1024];
            ssize_t r = read(in, buf, sizeof buf);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                fsw_fail_path(e, errno, "copyfile", from);
                return NULL;
            }
            if (r == 0)
                break;
            for (ssize_t off = 0; off < r;) {
                ssize_t w = write(out, buf + off, (size_t)(r - off));
                if (w < 0 && errno == EINTR)
                    continue;
                if (w < 0) {
                    fsw_fail_path(e, errno, "copyfile", to);
                    return NULL;
                }
                off += w;
            }
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fsw_fail_path(e, errno, "copyfile", to);
            return NULL;
        }
        if (n == 0)
            break;
    }
    fchmod(out, st.st_mode & 07777);
    return json_null();
}

/* Random names for makeTemp*: 12 characters of [a-z0-9] from getrandom. */
static void rand_name(char out[13])
{
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    uint8_t r[12];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        for (int i = 0; i < 12; i++)
            r[i] = (uint8_t)(ts.tv_nsec >> (i % 4 * 8)) ^ (uint8_t)(i * 37);
    }
    for (int i = 0; i < 12; i++)
        out[i] = alpha[r[i] % 36];
    out[12] = 0;
}

static json_t *op_mktemp(json_t *params, bool dir, struct hx_err *e)
{
    json_t *opts = json_object_get(params, "options");
    const char *base = "/tmp", *prefix = "", *suffix = "";
    json_t *v;
    if ((v = json_object_get(opts, "dir")) && !json_is_null(v) && !(base = fsw_path(opts, "dir", e)))
        return NULL;
    const char *keys[2] = {"prefix", "suffix"};
    const char **vals[2] = {&prefix, &suffix};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(opts, keys[i]);
        if (!v || json_is_null(v))
            continue;
        const char *s = json_string_value(v);
        if (!s || strlen(s) != json_string_length(v) || strchr(s, '/') || strlen(s) > 255) {
            hx_fail(e, EINVAL, "EINVAL: \"%s\" must be a file name part without '/' or NUL", keys[i]);
            return NULL;
        }
        *vals[i] = s;
    }
    char path[FSW_PATH_MAX + 600];
    for (int attempt = 0; attempt < 100; attempt++) {
        char r[13];
        rand_name(r);
        snprintf(path, sizeof path, "%s/%s%s%s", base, prefix, r, suffix);
        int rc;
        if (dir) {
            rc = mkdir(path, 0700);
        } else {
            rc = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (rc >= 0)
                close(rc);
        }
        if (rc >= 0)
            return json_string(path);
        if (errno != EEXIST) {
            fsw_fail_path(e, errno, dir ? "mkdtemp" : "mkstemp", path);
            return NULL;
        }
    }
    fsw_fail_path(e, EEXIST, dir ? "mkdtemp" : "mkstemp", path);
    return NULL;
}

static json_t *op_simple(const char *m, json_t *params, struct hx_err *e)
{
    int64_t n;
    if (strcmp(m, "rename") == 0 || strcmp(m, "link") == 0 || strcmp(m, "symlink") == 0) {
        bool ren = m[0] == 'r';
        const char *a = fsw_path(params, ren ? "oldPath" : "target", e);
        const char *b = a ? fsw_path(params, ren ? "newPath" : "path", e) : NULL;
        if (!b)
            return NULL;
        int r = ren ? rename(a, b) : m[0] == 'l' ? link(a, b) : symlink(a, b);
        if (r < 0) {
            fsw_fail_path(e, errno, m, b);
            return NULL;
        }
        return json_null();
    }
    if (strcmp(m, "umask") == 0) {
        json_t *v = json_object_get(params, "mask");
        if (!v || json_is_null(v)) {
            mode_t old = umask(022);
            umask(old);
            return json_integer(old);
        }
        if (!opt_int(params, "mask", 0, 0777, 0, &n)) {
            hx_fail(e, EINVAL, "EINVAL: \"mask\" must be an integer between 0 and 0o777");
            return NULL;
        }
        return json_integer(umask((mode_t)n));
    }
    const char *key = strcmp(m, "truncate") == 0 ? "name" : "path";
    const char *path = fsw_path(params, key, e);
    if (!path)
        return NULL;
    int r;
    if (strcmp(m, "chmod") == 0) {
        if (!opt_int(params, "mode", 0, 07777, -1, &n) || n < 0) {
            hx_fail(e, EINVAL, "EINVAL: \"mode\" must be an integer between 0 and 0o7777");
            return NULL;
        }
        r = chmod(path, (mode_t)n);
    } else if (strcmp(m, "chown") == 0) {
        int64_t uid, gid;
        if (!opt_int(params, "uid", 0, UINT32_MAX - 1, -1, &uid) || !opt_int(params, "gid", 0, UINT32_MAX - 1, -1, &gid)) {
            hx_fail(e, EINVAL, "EINVAL: \"uid\" and \"gid\" must be ids or null");
            return NULL;
        }
        r = chown(path, (uid_t)uid, (gid_t)gid);
    } else if (strcmp(m, "truncate") == 0) {
        if (!opt_int(params, "length", 0, INT64_MAX, 0, &n)) {
            hx_fail(e, EINVAL, "EINVAL: \"length\" must be a non-negative integer");
            return NULL;
        }
        r = truncate(path, (off_t)n);
    } else if (strcmp(m, "utime") == 0) {
        struct timespec ts[2];
        if (!parse_iso(json_object_get(params, "atime"), &ts[0]) ||
            !parse_iso(json_object_get(params, "mtime"), &ts[1])) {
            hx_fail(e, EINVAL, "EINVAL: \"atime\" and \"mtime\" must be ISO dates");
            return NULL;
        }
        r = utimensat(AT_FDCWD, path, ts, 0);
    } else if (strcmp(m, "readLink") == 0) {
        char buf[FSW_PATH_MAX + 1];
        ssize_t l = readlink(path, buf, sizeof buf - 1);
        if (l < 0) {
            fsw_fail_path(e, errno, "readlink", path);
            return NULL;
        }
        buf[l] = 0;
        json_t *s = json_string(buf);
        if (!s)
            hx_fail(e, EILSEQ, "EILSEQ: the link target is not valid UTF-8");
        return s;
    } else if (strcmp(m, "realPath") == 0) {
        char *rp = realpath(path, NULL);
        if (!rp) {
            fsw_fail_path(e, errno, "realpath", path);
            return NULL;
        }
        json_t *s = json_string(rp);
        free(rp);
        if (!s)
            hx_fail(e, EILSEQ, "EILSEQ: the path is not valid UTF-8");
        return s;
    } else {
        hx_fail(e, ENOSYS, "ENOSYS: unknown fs method %.64s", m);
        return NULL;
    }
    if (r < 0) {
        fsw_fail_path(e, errno, m, path);
        return NULL;
    }
    return json_null();
}

/* ---- uploads (writeFile) ---------------------------------------------- */

static struct fsw_write *write_find(uint32_t chan)
{
    for (struct fsw_write *w = g_writes; w; w = w->next)
        if (w->chan == chan)
            return w;
    return NULL;
}

static void write_free(struct fsw_write *w)
{
    for (struct fsw_write **pp = &g_writes; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    if (w->fd >= 0)
        close(w->fd);
    free(w);
}

static bool chan_param(json_t *params, uint32_t *chan, struct hx_err *e)
{
    int64_t c;
    if (!opt_int(params, "chan", HX_FS_CHAN_BASE, UINT32_MAX, 0, &c) || c == 0) {
        hx_fail(e, EINVAL, "EINVAL: missing stream channel");
        return false;
    }
    *chan = (uint32_t)c;
    if (write_find(*chan)) {
        hx_fail(e, EBUSY, "EBUSY: stream channel in use");
        return false;
    }
    for (struct fsw_job *j = g_jobs; j; j = j->next)
        if (j->chan == *chan) {
            hx_fail(e, EBUSY, "EBUSY: stream channel in use");
            return false;
        }
    return true;
}

/* Returns true when the reply comes later (at the end of the upload). */
static bool op_write_file(uint32_t req, json_t *params, struct hx_err *e)
{
    const char *path = fsw_path(params, "path", e);
    uint32_t chan;
    if (!path || !chan_param(params, &chan, e))
        return false;
    unsigned n = 0;
    for (struct fsw_write *w = g_writes; w; w = w->next)
        n++;
    if (n >= FSW_MAX_WRITES) {
        hx_fail(e, EAGAIN, "EAGAIN: too many uploads at once in this sandbox");
        return false;
    }
    json_t *opts = json_object_get(params, "options");
    bool append = opt_bool(opts, "append", false);
    struct open_opts o = {.write = true, .append = append, .truncate = !append,
                          .create = opt_bool(opts, "create", true), .create_new = opt_bool(opts, "createNew", false)};
    if (json_is_object(opts) && !parse_mode(opts, "mode", &o, e))
        return false;
    int fd = open_with(path, &o, "open", e);
    if (fd < 0)
        return false;
    if (o.has_mode && fchmod(fd, o.mode) < 0) {
        fsw_fail_path(e, errno, "chmod", path);
        close(fd);
        return false;
    }
    struct fsw_write *w = calloc(1, sizeof *w);
    if (!w) {
        close(fd);
        hx_fail(e, ENOMEM, "ENOMEM: out of memory");
        return false;
    }
    w->req = req;
    w->chan = chan;
    w->fd = fd;
    snprintf(w->path, sizeof w->path, "%s", path);
    w->next = g_writes;
    g_writes = w;
    return true;
}

static void on_upload(uint32_t chan, const uint8_t *p, uint32_t len)
{
    uint8_t ack[4];
    hx_put_u32(ack, len);
    struct fsw_write *w = write_find(chan);
    if (!w) {
        if (len)
            fsw_send(HX_STDIN_ACK, chan, ack, 4); /* a failed or cancelled upload: discard */
        return;
    }
    if (len == 0) {
        struct hx_err e = {0};
        int fd = w->fd;
        w->fd = -1;
        if (close(fd) < 0) {
            fsw_fail_path(&e, errno, "write", w->path);
            reply_err(w->req, &e);
        } else {
            reply_ok(w->req, json_null());
        }
        write_free(w);
        return;
    }
    for (uint32_t off = 0; off < len;) {
        ssize_t n = write(w->fd, p + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            struct hx_err e = {0};
            fsw_fail_path(&e, n < 0 ? errno : EIO, "write", w->path);
            reply_err(w->req, &e);
            write_free(w);
            break;
        }
        off += (uint32_t)n;
    }
    fsw_send(HX_STDIN_ACK, chan, ack, 4);
}

/* ---- downloads (readFile) --------------------------------------------- */

void fsw_job_add(struct fsw_job *j)
{
    j->next = g_jobs;
    g_jobs = j;
}

static void job_free(struct fsw_job *j)
{
    for (struct fsw_job **pp = &g_jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    if (j->done)
        j->done(j);
    free(j);
}

struct read_state {
    int fd;
    char path[FSW_PATH_MAX + 1];
};

static int read_step(struct fsw_job *j, uint8_t *out, size_t cap, size_t *len, struct hx_err *e)
{
    struct read_state *st = j->state;
    ssize_t n;
    do
        n = read(st->fd, out, cap);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return fsw_fail_path(e, errno, "read", st->path);
    *len = (size_t)n;
    return n > 0;
}

static void read_done(struct fsw_job *j)
{
    struct read_state *st = j->state;
    if (st && st->fd >= 0)
        close(st->fd);
    free(st);
}

static struct fsw_job *read_job(json_t *params, struct hx_err *e)
{
    const char *path = fsw_path(params, "path", e);
    if (!path)
        return NULL;
    int fd = open_nb(path, O_RDONLY, 0);
    if (fd < 0) {
        fsw_fail_path(e, errno, "open", path);
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        close(fd);
        fsw_fail_path(e, EISDIR, "read", path);
        return NULL;
    }
    /* hutchd's bound on one readFile answer: refuse before moving a byte. */
    int64_t max;
    if (opt_int(params, "max", 0, INT64_MAX, INT64_MAX, &max) && S_ISREG(sb.st_mode) && sb.st_size > max) {
        close(fd);
        hx_fail(e, EFBIG, "EFBIG: the file is too large for readFile (%lld bytes, at most %lld): read it with open() "
                "and its readable, or download(), read '%.3000s'", (long long)sb.st_size, (long long)max, path);
        return NULL;
    }
    struct fsw_job *j = calloc(1, sizeof *j);
    struct read_state *st = calloc(1, sizeof *st);
    if (!j || !st) {
        free(j);
        free(st);
        close(fd);
        hx_fail(e, ENOMEM, "ENOMEM: out of memory");
        return NULL;
    }
    st->fd = fd;
    snprintf(st->path, sizeof st->path, "%s", path);
    j->state = st;
    j->step = read_step;
    j->done = read_done;
    return j;
}

static bool start_job(uint32_t req, const char *m, json_t *params, struct hx_err *e)
{
    uint32_t chan;
    if (!chan_param(params, &chan, e))
        return false;
    unsigned n = 0;
    for (struct fsw_job *j = g_jobs; j; j = j->next)
        n++;
    if (n >= FSW_MAX_JOBS) {
        hx_fail(e, EAGAIN, "EAGAIN: too many file streams at once in this sandbox");
        return false;
    }
    struct fsw_job *j = strcmp(m, "readDir") == 0   ? fsw_readdir_job(params, e)
                        : strcmp(m, "walk") == 0       ? fsw_walk_job(params, e)
                        : strcmp(m, "expandGlob") == 0 ? fsw_glob_job(params, e)
                                                       : read_job(params, e);
    if (!j)
        return false;
    j->req = req;
    j->chan = chan;
    fsw_job_add(j);
    return true;
}

static void on_credit(uint32_t chan, const uint8_t *p, uint32_t len)
{
    if (len != 4)
        return;
    uint32_t n = hx_get_u32(p);
    for (struct fsw_job *j = g_jobs; j; j = j->next)
        if (j->chan == chan)
            j->inflight -= n < j->inflight ? n : j->inflight;
}

/* Runs one step of every job that has window left; true if any may go on. */
static bool pump_jobs(void)
{
    static uint8_t buf[FSW_CHUNK];
    bool more = false;
    for (struct fsw_job *j = g_jobs, *next; j; j = next) {
        next = j->next;
        if (j->inflight >= HX_FS_WINDOW)
            continue;
        size_t len = 0;
        struct hx_err e = {0};
        int r = j->step(j, buf, sizeof buf, &len, &e);
        if (len) {
            j->inflight += (uint32_t)len;
            j->total += len;
            fsw_send(HX_FS_DATA, j->chan, buf, len);
        }
        if (r < 0) {
            reply_err(j->req, &e);
            job_free(j);
        } else if (r == 0) {
            reply_ok(j->req, json_pack("{s:I}", "size", (json_int_t)j->total));
            job_free(j);
        } else if (j->inflight < HX_FS_WINDOW) {
            more = true;
        }
    }
    return more;
}

static json_t *op_cancel(json_t *params, struct hx_err *e)
{
    int64_t c;
    if (!opt_int(params, "chan", HX_FS_CHAN_BASE, UINT32_MAX, 0, &c) || c == 0) {
        hx_fail(e, EINVAL, "EINVAL: missing stream channel");
        return NULL;
    }
    struct hx_err ce;
    hx_fail(&ce, ECANCELED, "ECANCELED: the transfer was cancelled");
    for (struct fsw_job *j = g_jobs; j; j = j->next)
        if (j->chan == (uint32_t)c) {
            reply_err(j->req, &ce);
            job_free(j);
            break;
        }
    struct fsw_write *w = write_find((uint32_t)c);
    if (w) {
        reply_err(w->req, &ce);
        write_free(w);
    }
    return json_null();
}

/* ---- dispatch --------------------------------------------------------- */

static void on_call(uint32_t req, const uint8_t *payload, uint32_t len)
{
    struct hx_err e = {0};
    json_error_t jerr;
    json_t *msg = json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *m = json_string_value(json_object_get(msg, "method"));
    json_t *params = json_object_get(msg, "params");
    json_t *res = NULL;
    bool later = false;
    if (!m || !json_is_object(params)) {
        if (m && strcmp(m, "spliceFile") == 0 && g_nfds)
            close(fds_pop()); /* its socket, so that it never pairs with a later call */
        hx_fail(&e, EINVAL, "EINVAL: call: expected {\"method\": str, \"params\": obj}");
    } else if (strcmp(m, "writeFile") == 0) {
        later = op_write_file(req, params, &e);
    } else if (strcmp(m, "readFile") == 0 || strcmp(m, "readDir") == 0 || strcmp(m, "walk") == 0 ||
               strcmp(m, "expandGlob") == 0) {
        later = start_job(req, m, params, &e);
    } else if (strcmp(m, "fsCancel") == 0) {
        res = op_cancel(params, &e);
    } else if (strcmp(m, "spliceFile") == 0) {
        int sock = fds_pop();
        if (sock < 0)
            hx_fail(&e, EBADF, "EBADF: spliceFile came without its socket");
        else
            res = fsw_splice_call(req, params, sock, &later, &e);
    } else if (strcmp(m, "open") == 0 || strcmp(m, "create") == 0) {
        res = op_open(params, m[0] == 'c', &e);
    } else if (strcmp(m, "fileRead") == 0) {
        res = op_file_read(req, params, &later, &e);
    } else if (strncmp(m, "file", 4) == 0) {
        res = op_handle(m, params, &e);
    } else if (strcmp(m, "remove") == 0) {
        res = op_remove(params, &e);
    } else if (strcmp(m, "mkdir") == 0) {
        res = op_mkdir(params, &e);
    } else if (strcmp(m, "stat") == 0 || strcmp(m, "lstat") == 0) {
        res = op_stat(params, m[0] == 's', &e);
    } else if (strcmp(m, "copyFile") == 0) {
        res = op_copy(params, &e);
    } else if (strcmp(m, "makeTempDir") == 0 || strcmp(m, "makeTempFile") == 0) {
        res = op_mktemp(params, strcmp(m, "makeTempDir") == 0, &e);
    } else {
        res = op_simple(m, params, &e);
    }
    json_decref(msg);
    if (later)
        return;
    if (res)
        reply_ok(req, res);
    else
        reply_err(req, &e);
}

static void dispatch(const struct hx_frame *f)
{
    switch (f->type) {
    case HX_CALL:
        on_call(f->chan, f->payload, f->len);
        break;
    case HX_STDIN:
        on_upload(f->chan, f->payload, f->len);
        break;
    case HX_CREDIT:
        on_credit(f->chan, f->payload, f->len);
        break;
    default:
        break;
    }
}

/* app's identity, no capabilities (not even in the bounding set: the
 * worker never execs), no_new_privs and the sandbox's seccomp filter;
 * non-dumpable so sandbox code running as app cannot ptrace it. */
static int confine(void)
{
    for (int cap = 0; cap <= 63; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno == EINVAL)
            break;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        return -errno;
    if (setgroups(0, NULL) < 0 || setresgid(INIT_APP_UID, INIT_APP_UID, INIT_APP_UID) < 0 ||
        setresuid(INIT_APP_UID, INIT_APP_UID, INIT_APP_UID) < 0)
        return -errno;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    int r = seccomp_apply();
    if (r < 0)
        return r;
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        return -errno;
    return 0;
}

_Noreturn void fs_worker_main(int sock)
{
    g_sock = sock;
    for (unsigned i = 0; i < FSW_MAX_HANDLES; i++)
        g_handles[i].fd = -1;
    if (confine() < 0)
        _exit(1);
    umask(022);
    if (chdir("/home/app") < 0 && chdir("/") < 0)
        _exit(1);
    uint8_t *rbuf = malloc(FSW_RBUF);
    if (!rbuf)
        _exit(1);
    size_t rlen = 0;
    bool more = false;
    for (;;) {
        struct pollfd pfd[1 + FSW_SPLICE_MAX];
        pfd[0] = (struct pollfd){.fd = sock, .events = POLLIN};
        int np = 1 + fsw_splice_pollfds(pfd + 1, FSW_SPLICE_MAX);
        int pr = poll(pfd, (nfds_t)np, more ? 0 : -1);
        if (pr < 0 && errno != EINTR)
            _exit(1);
        if (pr > 0 && pfd[0].revents) {
            ssize_t n = recv_fds(sock, rbuf + rlen, FSW_RBUF - rlen);
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
                worker_exit();
            if (n > 0) {
                rlen += (size_t)n;
                size_t off = 0;
                for (;;) {
                    struct hx_frame f;
                    int r = hx_frame_decode(rbuf + off, rlen - off, &f);
                    if (r < 0)
                        _exit(1);
                    if (r == 0)
                        break;
                    dispatch(&f);
                    off += (size_t)r;
                }
                memmove(rbuf, rbuf + off, rlen - off);
                rlen -= off;
                if (rlen == 0) /* no call left in part: nothing still here is any call's */
                    fds_drop();
            }
        }
        if (pr > 0)
            fsw_splice_pump(pfd + 1, np - 1);
        fsw_splice_kick();
        more = pump_jobs();
    }
}
