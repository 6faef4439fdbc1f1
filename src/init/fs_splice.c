/* The fs worker's side of hutch's raw file channel (spliceFile, docs/agent-
 * protocol.md "Raw file transfers"): hutchd passes one end of a socketpair
 * with the call, and the worker moves a regular file's bytes between it and
 * the file with splice(2) through a pipe of its own, in its poll loop (the
 * socket is non-blocking; only the file side waits, on the disk).
 *
 * Downloads answer at once with the file's size and then send exactly that
 * many bytes (fewer when the file shrank or a read failed: hutchd sees the
 * end early and cuts the client's connection). Uploads go to an unnamed
 * file (O_TMPFILE, or a hidden temporary name where the file system lacks
 * it) in the target's directory, which replaces the target by rename once
 * the size announced has arrived, and only then: an upload cut short
 * leaves the target as it was and no temporary file behind. */

#include "init/init.h"
#include "init/fs_worker.h"
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include "lib/wire.h"

#define SPLICE_MAX_JOBS FSW_SPLICE_MAX
#define SPLICE_PIPE (1u << 20)        /* bytes the worker's own pipe holds */
#define SPLICE_TURN (8u << 20)        /* bytes one job moves before others get a turn */

struct splice_job {
    struct splice_job *next;
    uint32_t req;
    bool up;
    int file, sock, p[2];
    size_t pcap, inpipe;
    uint64_t left, total;
    bool copy;                        /* the file system refused splice: through a buffer */
    short wait;                       /* poll events the job waits for on sock */
    /* uploads */
    int dirfd;
    char tmp[NAME_MAX + 1];           /* a named temporary file ("" with O_TMPFILE) */
    char base[NAME_MAX + 1];
    char path[FSW_PATH_MAX + 1];
};

static struct splice_job *g_sjobs;
static unsigned g_nsjobs;

static void job_free(struct splice_job *j)
{
    for (struct splice_job **pp = &g_sjobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    g_nsjobs--;
    if (j->tmp[0] && j->dirfd >= 0)
        unlinkat(j->dirfd, j->tmp, 0);
    int fds[] = {j->file, j->sock, j->p[0], j->p[1], j->dirfd};
    for (size_t i = 0; i < HX_ARRAY_LEN(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    free(j);
}

static struct splice_job *job_new(uint32_t req, int sock, struct hx_err *e)
{
    if (g_nsjobs >= SPLICE_MAX_JOBS) {
        hx_fail(e, EAGAIN, "EAGAIN: too many raw file transfers at once in this sandbox (%u)", SPLICE_MAX_JOBS);
        return NULL;
    }
    struct splice_job *j = calloc(1, sizeof *j);
    if (!j) {
        hx_fail(e, ENOMEM, "ENOMEM: out of memory");
        return NULL;
    }
    j->req = req;
    j->file = j->p[0] = j->p[1] = j->dirfd = -1;
    j->sock = sock;
    j->next = g_sjobs;
    g_sjobs = j;
    g_nsjobs++;
    if (pipe2(j->p, O_CLOEXEC) < 0) {
        hx_fail(e, errno, "%s: pipe: %s", errno_name(errno), strerror(errno));
        job_free(j);
        return NULL;
    }
    int cap = fcntl(j->p[1], F_SETPIPE_SZ, SPLICE_PIPE);
    if (cap < 0)
        cap = fcntl(j->p[1], F_GETPIPE_SZ);
    j->pcap = cap > 0 ? (size_t)cap : 65536;
    int fl = fcntl(sock, F_GETFL);
    if (fl < 0 || fcntl(sock, F_SETFL, fl | O_NONBLOCK) < 0) {
        hx_fail(e, errno, "%s: the transfer's socket: %s", errno_name(errno), strerror(errno));
        job_free(j);
        return NULL;
    }
    return j;
}

static void rand_name(char *out, size_t n)
{
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    uint8_t r[16];
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
        for (size_t i = 0; i < sizeof r; i++)
            r[i] = (uint8_t)(i * 37 + (unsigned)getpid());
    for (size_t i = 0; i + 1 < n && i < sizeof r; i++)
        out[i] = alpha[r[i] % 36];
    out[n - 1 < sizeof r ? n - 1 : sizeof r] = 0;
}

/* An optional non-negative integer parameter; false if present and not one. */
static bool param_u64(json_t *params, const char *k, uint64_t *out)
{
    json_t *v = json_object_get(params, k);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* ---- starting --------------------------------------------------------- */

static json_t *start_read(uint32_t req, const char *path, int sock, struct hx_err *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        fsw_fail_path(e, errno, "open", path);
        close(sock);
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        if (err == EINVAL)
            hx_fail(e, EINVAL, "EINVAL: not a regular file, read '%.3000s'", path);
        else
            fsw_fail_path(e, err, "read", path);
        close(fd);
        close(sock);
        return NULL;
    }
    /* blocking reads from here on: a regular file's read waits on the disk only */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    json_t *ok = json_pack("{s:I, s:i}", "size", (json_int_t)st.st_size, "mode", (int)(st.st_mode & 07777));
    struct splice_job *j = ok ? job_new(req, sock, e) : NULL;
    if (!j) {
        if (!ok) {
            hx_fail(e, ENOMEM, "ENOMEM: out of memory");
            close(sock);
        }
        json_decref(ok);
        close(fd);
        return NULL;
    }
    j->file = fd;
    j->left = (uint64_t)st.st_size;
    j->total = j->left;
    snprintf(j->path, sizeof j->path, "%s", path);
    return ok;
}

/* Where the upload goes until it is whole: an unnamed file in the target's
 * directory, or a hidden name there where O_TMPFILE is not supported. */
static int open_temp(struct splice_job *j, struct hx_err *e)
{
    j->file = openat(j->dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (j->file >= 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
        return fsw_fail_path(e, errno, "open", j->path);
    for (int attempt = 0; attempt < 16; attempt++) {
        char r[11];
        rand_name(r, sizeof r);
        snprintf(j->tmp, sizeof j->tmp, ".%.200s.hutch-%s", j->base, r);
        j->file = openat(j->dirfd, j->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (j->file >= 0)
            return 0;
        if (errno != EEXIST)
            break;
    }
    int err = errno;
    j->tmp[0] = 0;
    return fsw_fail_path(e, err, "open", j->path);
}

static bool start_write(uint32_t req, const char *path, json_t *params, int sock, struct hx_err *e)
{
    uint64_t size = 0, mode = UINT64_MAX;
    if (!param_u64(params, "size", &size) || size > INT64_MAX || !param_u64(params, "fileMode", &mode) ||
        (mode != UINT64_MAX && mode > 07777)) {
        hx_fail(e, EINVAL, "EINVAL: spliceFile: \"size\" and \"fileMode\" must be non-negative integers (mode <= 0o7777)");
        close(sock);
        return false;
    }
    struct splice_job *j = job_new(req, sock, e);
    if (!j)
        return false;
    j->up = true;
    j->left = j->total = size;
    snprintf(j->path, sizeof j->path, "%s", path);
    /* dir and base: "a/b" → "a", "b"; "b" → ".", "b"; "/b" → "/", "b" */
    char dir[FSW_PATH_MAX + 1];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    const char *base = slash ? slash + 1 : dir;
    if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0 || strlen(base) > NAME_MAX) {
        fsw_fail_path(e, *base && strlen(base) > NAME_MAX ? ENAMETOOLONG : EISDIR, "open", path);
        job_free(j);
        return false;
    }
    snprintf(j->base, sizeof j->base, "%s", base);
    if (slash == dir)
        dir[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    j->dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (j->dirfd < 0) {
        fsw_fail_path(e, errno, "open", path);
        job_free(j);
        return false;
    }
    struct stat st;
    bool exists = fstatat(j->dirfd, j->base, &st, 0) == 0;
    if (exists && S_ISDIR(st.st_mode)) {
        fsw_fail_path(e, EISDIR, "open", path);
        job_free(j);
        return false;
    }
    if (mode == UINT64_MAX) /* the file it replaces keeps its mode; a new one gets 0666 & ~umask */
        mode = exists ? (st.st_mode & 07777) : (0666 & ~022u);
    if (open_temp(j, e) < 0) {
        job_free(j);
        return false;
    }
    if (fchmod(j->file, (mode_t)mode) < 0) {
        fsw_fail_path(e, errno, "chmod", path);
        job_free(j);
        return false;
    }
    return true;
}

json_t *fsw_splice_call(uint32_t req, json_t *params, int sock, bool *later, struct hx_err *e)
{
    *later = false;
    const char *path = fsw_path(params, "path", e);
    const char *dir = json_string_value(json_object_get(params, "direction"));
    if (!path || !dir || (strcmp(dir, "read") && strcmp(dir, "write"))) {
        if (path)
            hx_fail(e, EINVAL, "EINVAL: spliceFile: \"direction\" must be \"read\" or \"write\"");
        close(sock);
        return NULL;
    }
    if (dir[0] == 'r')
        return start_read(req, path, sock, e);
    *later = start_write(req, path, params, sock, e);
    return NULL;
}

/* ---- moving bytes ----------------------------------------------------- */

/* The file system would not splice (EINVAL): the same through a buffer. */
static ssize_t copy_fd(int in, int out, size_t n)
{
    static uint8_t buf[64 * 1024];
    if (n > sizeof buf)
        n = sizeof buf;
    ssize_t r = read(in, buf, n);
    if (r <= 0)
        return r;
    for (ssize_t off = 0; off < r;) {
        ssize_t w = write(out, buf + off, (size_t)(r - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1; /* the pipe is ours and had room: a real error */
        off += w;
    }
    return r;
}

static ssize_t file_side(struct splice_job *j, int in, int out, size_t n)
{
    ssize_t r;
    do
        r = j->copy ? copy_fd(in, out, n) : splice(in, NULL, out, NULL, n, SPLICE_F_MOVE);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno == EINVAL && !j->copy) {
        j->copy = true;
        return file_side(j, in, out, n);
    }
    return r;
}

/* The upload is whole: it takes the target's name. */
static int finish_write(struct splice_job *j, struct hx_err *e)
{
    if (!j->tmp[0]) {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", j->file);
        for (int attempt = 0; attempt < 16; attempt++) {
            char r[11];
            rand_name(r, sizeof r);
            snprintf(j->tmp, sizeof j->tmp, ".%.200s.hutch-%s", j->base, r);
            if (linkat(AT_FDCWD, proc, j->dirfd, j->tmp, AT_SYMLINK_FOLLOW) == 0)
                break;
            int err = errno;
            j->tmp[0] = 0;
            if (err != EEXIST)
                return fsw_fail_path(e, err, "link", j->path);
        }
        if (!j->tmp[0])
            return fsw_fail_path(e, EEXIST, "link", j->path);
    }
    if (close(j->file) < 0) {
        j->file = -1;
        return fsw_fail_path(e, errno, "write", j->path);
    }
    j->file = -1;
    if (renameat(j->dirfd, j->tmp, j->dirfd, j->base) < 0)
        return fsw_fail_path(e, errno, "rename", j->path);
    j->tmp[0] = 0; /* it is the target now: job_free must not remove it */
    return 0;
}

/* 1: wait for j->wait on the socket; 0: the job ended (and was freed). */
static int pump_read(struct splice_job *j)
{
    for (size_t moved = 0; moved < SPLICE_TURN;) {
        if (j->inpipe == 0) {
            /* all sent, or the file shrank or failed: hutchd sees the end
             * come early and cuts the client's connection */
            ssize_t n = j->left ? file_side(j, j->file, j->p[1], j->left < j->pcap ? (size_t)j->left : j->pcap) : 0;
            if (n <= 0) {
                job_free(j);
                return 0;
            }
            j->inpipe += (size_t)n;
            j->left -= (uint64_t)n;
        }
        ssize_t n = splice(j->p[0], NULL, j->sock, NULL, j->inpipe,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (j->left ? SPLICE_F_MORE : 0));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) { /* hutchd closed its end: the client left */
            job_free(j);
            return 0;
        }
        j->inpipe -= (size_t)n;
        moved += (size_t)n;
    }
    j->wait = POLLOUT;
    return 1;
}

static void fail_job(struct splice_job *j, const struct hx_err *e)
{
    fsw_reply(j->req, NULL, e);
    job_free(j);
}

static int pump_write(struct splice_job *j)
{
    struct hx_err e = {0};
    for (size_t moved = 0; moved < SPLICE_TURN;) {
        if (j->inpipe == 0 && j->left > 0) {
            ssize_t n = splice(j->sock, NULL, j->p[1], NULL, j->left < j->pcap ? (size_t)j->left : j->pcap,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN) {
                j->wait = POLLIN;
                return 1;
            }
            if (n <= 0) {
                hx_fail(&e, ECONNABORTED, "ECONNABORTED: the upload ended after %llu of %llu bytes; '%.3000s' is "
                        "unchanged", (unsigned long long)(j->total - j->left), (unsigned long long)j->total, j->path);
                fail_job(j, &e);
                return 0;
            }
            j->inpipe += (size_t)n;
            j->left -= (uint64_t)n;
        }
        while (j->inpipe > 0) {
            ssize_t n = file_side(j, j->p[0], j->file, j->inpipe);
            if (n <= 0) {
                fsw_fail_path(&e, n < 0 ? errno : EIO, "write", j->path);
                fail_job(j, &e);
                return 0;
            }
            j->inpipe -= (size_t)n;
            moved += (size_t)n;
        }
        if (j->left == 0)
            break;
    }
    if (j->left > 0) {
        j->wait = POLLIN;
        return 1;
    }
    if (finish_write(j, &e) < 0) {
        fail_job(j, &e);
        return 0;
    }
    fsw_reply(j->req, json_pack("{s:I}", "size", (json_int_t)j->total), NULL);
    job_free(j);
    return 0;
}

int fsw_splice_pollfds(struct pollfd *p, int max)
{
    int n = 0;
    for (struct splice_job *j = g_sjobs; j && n < max; j = j->next)
        p[n++] = (struct pollfd){.fd = j->sock, .events = j->wait};
    return n;
}

void fsw_splice_pump(const struct pollfd *p, int n)
{
    for (int i = 0; i < n; i++) {
        if (!p[i].revents)
            continue;
        for (struct splice_job *j = g_sjobs; j; j = j->next)
            if (j->sock == p[i].fd) {
                (void)(j->up ? pump_write(j) : pump_read(j));
                break;
            }
    }
}

/* Jobs that have not waited yet (new ones) run once now. */
void fsw_splice_kick(void)
{
    for (struct splice_job *j = g_sjobs, *next; j; j = next) {
        next = j->next;
        if (!j->wait)
            (void)(j->up ? pump_write(j) : pump_read(j));
    }
}
