/* Per-sandbox disk images on loop devices (see disk.h). */
#include "daemon/sandbox/disk.h"
#include "daemon/sandbox/loop.h"
#include <fcntl.h>
#include <inttypes.h>
#include <linux/loop.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <sys/wait.h>

extern char **environ;

/* mkfs.ext4 of a sparse file writes ~4 MiB and takes ~15 ms: no journal
 * (the layer dies with the sandbox), inode tables initialised lazily, no
 * blocks reserved for root (sandbox root is not the host's). */
static int make_ext4(const char *path, struct hx_err *e)
{
    char *const argv[] = {"mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard",
                          "-m", "0", (char *)path, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    static const char *const dirs[] = {"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"};
    int r = ENOENT;
    for (size_t i = 0; i < HX_ARRAY_LEN(dirs) && r == ENOENT; i++)
        r = posix_spawn(&pid, dirs[i], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0)
        return hx_fail(e, r, "run mkfs.ext4: %s", strerror(r));
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return hx_fail(e, errno, "wait for mkfs.ext4: %m");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return hx_fail(e, EIO, "mkfs.ext4 %s failed (status %d)", path, st);
    return 0;
}

/* The file system every layer starts from: mkfs.ext4 runs once per
 * directory and size (a fork, an exec and ~4 MiB of writes: 15-50 ms of a
 * create on 2 cores), its image is kept open and unlinked, and each layer
 * is a copy of its few allocated extents (0.2 MiB for 16 MiB, 0.7 MiB for
 * 1 GiB: copy_file_range, in the kernel). The copies are byte for byte what
 * mkfs.ext4 made, UUID included: each is mounted only in its own sandbox's
 * mount namespace, where nothing tells two layers apart by it. */
#define TEMPLATE_EXTENTS 512
#define TEMPLATE_DATA_MAX (64u << 20) /* more: no holes on this file system; mkfs each time */
struct extent {
    off_t off, len;
};
static struct {
    pthread_mutex_t mu;
    int fd;                   /* the template, unlinked; -1 until made */
    bool tried;               /* made or given up for (dir, mb): later sizes or dirs run mkfs */
    char dir[4096];
    uint32_t mb;
    struct extent ext[TEMPLATE_EXTENTS];
    size_t n_ext;
} tpl = {.mu = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

static int template_extents(int fd, off_t size)
{
    off_t pos = 0, total = 0;
    tpl.n_ext = 0;
    while (pos < size) {
        off_t d = lseek(fd, pos, SEEK_DATA);
        if (d < 0)
            return errno == ENXIO ? 0 : -errno;
        off_t h = lseek(fd, d, SEEK_HOLE);
        if (h < 0)
            return -errno;
        if (tpl.n_ext == TEMPLATE_EXTENTS || (total += h - d) > (off_t)TEMPLATE_DATA_MAX)
            return -E2BIG;
        tpl.ext[tpl.n_ext++] = (struct extent){d, h - d};
        pos = h;
    }
    return 0;
}

/* Makes the template for (dir, disk_mb) once; 1: use it, 0: run mkfs.ext4
 * for this layer (another size or dir, or a file system without holes),
 * -errno: mkfs.ext4 failed (the caller's fallback codes apply). */
static int template_get(const char *dir, uint32_t disk_mb, struct hx_err *e)
{
    pthread_mutex_lock(&tpl.mu);
    int r;
    if (tpl.tried) {
        r = tpl.fd >= 0 && disk_mb == tpl.mb && strcmp(dir, tpl.dir) == 0;
        pthread_mutex_unlock(&tpl.mu);
        return r; /* made once and never written again: copies need no lock */
    }
    /* Nameless (O_TMPFILE), so a crash leaves nothing; mkfs.ext4 opens it
     * through our /proc fd link. Else a name, unlinked once made. */
    char path[4200];
    bool named = false;
    int fd = open(dir, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
    if (fd >= 0) {
        snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)getpid(), fd);
    } else {
        snprintf(path, sizeof path, "%s/.hutch-template-%d.disk", dir, (int)getpid());
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        named = true;
    }
    if (fd < 0) {
        r = hx_fail(e, errno, "create %s: %m", path);
    } else if (ftruncate(fd, (off_t)disk_mb << 20) < 0) {
        r = hx_fail(e, errno, "size %s: %m", path);
    } else {
        r = make_ext4(path, e);
    }
    if (named)
        unlink(path);
    if (r == 0 && template_extents(fd, (off_t)disk_mb << 20) < 0)
        r = 1; /* no usable holes: mkfs per layer, as before */
    if (r != 0 && fd >= 0)
        close(fd);
    if (r == 0 || r == 1) {
        tpl.tried = true;
        tpl.fd = r == 0 ? fd : -1;
        tpl.mb = disk_mb;
        snprintf(tpl.dir, sizeof tpl.dir, "%s", dir);
    }
    pthread_mutex_unlock(&tpl.mu);
    return r < 0 ? r : r == 0;
}

static int template_copy(int dst, struct hx_err *e)
{
    for (size_t i = 0; i < tpl.n_ext; i++) {
        loff_t in = tpl.ext[i].off, out = tpl.ext[i].off;
        off_t left = tpl.ext[i].len;
        while (left > 0) {
            ssize_t n = copy_file_range(tpl.fd, &in, dst, &out, (size_t)left, 0);
            if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS)) {
                char buf[65536]; /* no in-kernel copy here: through user space */
                size_t want = left < (off_t)sizeof buf ? (size_t)left : sizeof buf;
                n = pread(tpl.fd, buf, want, in);
                if (n > 0 && pwrite(dst, buf, (size_t)n, out) != n)
                    n = -1;
                if (n > 0) {
                    in += n;
                    out += n;
                }
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return hx_fail(e, n < 0 ? errno : EIO, "copy the layer's file system: %m");
            left -= n;
        }
    }
    return 0;
}

/* Layers made ahead: a copy of the template, written back and synced, with
 * no name, not yet on a loop device. Since 6.14 LOOP_CONFIGURE syncs its
 * backing file first (it may switch to direct I/O), so a layer copied just
 * before waited for its writeback and a journal commit on the create's
 * path: 0.2 ms on a quiet disk, 10-300 ms while other work writes
 * (docs/performance/create.md). disk_stash_fill makes them off that path; a
 * stashed file is as fresh as one made on demand (never attached, never
 * mounted, byte for byte the template). For the template's (dir, size). */
#define STASH_MAX 2 /* a burst's next creates; hutchd's fd count stays within 2 of its resting one */
static struct {
    int fd[STASH_MAX];
    size_t n;
    unsigned seq;   /* names of the fallback (no O_TMPFILE) */
} stash;            /* guarded by tpl.mu */

static int stash_take(const char *dir, uint32_t disk_mb)
{
    int fd = -1;
    pthread_mutex_lock(&tpl.mu);
    if (stash.n && tpl.fd >= 0 && disk_mb == tpl.mb && strcmp(dir, tpl.dir) == 0)
        fd = stash.fd[--stash.n];
    pthread_mutex_unlock(&tpl.mu);
    return fd;
}

bool disk_stash_wanted(const char *dir, uint32_t disk_mb)
{
    pthread_mutex_lock(&tpl.mu);
    bool want = tpl.tried && tpl.fd >= 0 && disk_mb == tpl.mb && strcmp(dir, tpl.dir) == 0 && stash.n < STASH_MAX;
    pthread_mutex_unlock(&tpl.mu);
    return want;
}

int disk_stash_fill(const char *dir, uint32_t disk_mb, struct hx_err *e)
{
    if (disk_stash_wanted(dir, disk_mb)) { /* one layer a call: a shutdown waits for one sync at most */
        int file = open(dir, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
        if (file < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
            char path[4200];
            pthread_mutex_lock(&tpl.mu);
            unsigned n = stash.seq++;
            pthread_mutex_unlock(&tpl.mu);
            snprintf(path, sizeof path, "%s/.hutch-layer-%d-%u.disk", dir, (int)getpid(), n);
            file = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
            if (file >= 0)
                unlink(path);
        }
        if (file < 0)
            return hx_fail(e, errno, "create a layer in %s: %m", dir);
        int r = 0;
        if (ftruncate(file, (off_t)disk_mb << 20) < 0)
            r = hx_fail(e, errno, "size a layer in %s: %m", dir);
        else if ((r = template_copy(file, e)) == 0 && fsync(file) < 0)
            r = hx_fail(e, errno, "write back a layer in %s: %m", dir);
        if (r == 0) {
            pthread_mutex_lock(&tpl.mu);
            if (stash.n < STASH_MAX && tpl.fd >= 0 && disk_mb == tpl.mb && strcmp(dir, tpl.dir) == 0) {
                stash.fd[stash.n++] = file;
                file = -1;
            }
            pthread_mutex_unlock(&tpl.mu);
        }
        if (file >= 0)
            close(file);
        if (r < 0)
            return r;
    }
    return 0;
}

int disk_prepare(const char *dir, const char *id, uint32_t disk_mb, struct disk_layer *l, struct hx_err *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.disk", dir, id);
    int t = template_get(dir, disk_mb, e);
    if (t < 0)
        return t;
    int ready = t ? stash_take(dir, disk_mb) : -1;
    if (ready >= 0) {
        int r = loop_attach(ready, false, l->dev, e);
        if (r < 0) {
            close(ready);
            return r;
        }
        l->dev_fd = r;
        l->file_fd = ready;
        return 0;
    }
    int file = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (file < 0)
        return hx_fail(e, errno, "create %s: %m", path);
    int r;
    if (ftruncate(file, (off_t)disk_mb << 20) < 0)
        r = hx_fail(e, errno, "size %s: %m", path);
    else if ((r = t ? template_copy(file, e) : make_ext4(path, e)) == 0)
        r = loop_attach(file, false, l->dev, e);
    /* The loop device holds the file now: its name can go at once, so a
     * crash leaves no image behind. */
    unlink(path);
    if (r < 0) {
        close(file);
        return r;
    }
    l->dev_fd = r;
    l->file_fd = file;
    return 0;
}

void disk_drop_file_cache(const struct disk_layer *l)
{
    if (l->file_fd >= 0)
        (void)posix_fadvise(l->file_fd, 0, 0, POSIX_FADV_DONTNEED); /* advice: nothing to fail */
}

void disk_layer_close(struct disk_layer *l)
{
    if (l->dev_fd >= 0)
        close(l->dev_fd); /* autoclear: the device goes with its last mount */
    if (l->file_fd >= 0)
        close(l->file_fd);
    l->dev_fd = l->file_fd = -1;
}

uint64_t disk_allocated_mb(int file_fd)
{
    struct stat st;
    if (file_fd < 0 || fstat(file_fd, &st) < 0)
        return 0;
    return ((uint64_t)st.st_blocks * 512 + (1u << 20) - 1) >> 20;
}

int disk_fs_space(const char *dir, uint64_t *avail_mb, uint64_t *total_mb, struct hx_err *e)
{
    struct statvfs v;
    if (statvfs(dir, &v) < 0)
        return hx_fail(e, errno, "statvfs %s: %m", dir);
    *avail_mb = (uint64_t)v.f_bavail * v.f_frsize >> 20;
    *total_mb = (uint64_t)v.f_blocks * v.f_frsize >> 20;
    return 0;
}

uint64_t disk_default_reserve_mb(uint64_t total_mb)
{
    uint64_t r = total_mb / 20;
    return r < 64 ? 64 : r > 4096 ? 4096 : r;
}

int disk_budget_check(uint64_t avail_mb, uint64_t reserve_mb, uint64_t outstanding_mb, uint32_t want_mb,
                      const char *dir, struct hx_err *e)
{
    uint64_t usable = avail_mb > reserve_mb ? avail_mb - reserve_mb : 0;
    uint64_t left = usable > outstanding_mb ? usable - outstanding_mb : 0;
    if (want_mb <= left)
        return 0;
    /* the directory last: a long path is what the 256-byte message cuts */
    return hx_fail(e, ENOSPC,
                   "not enough disk for another sandbox: each is promised %u MiB (--disk), %" PRIu64
                   " MiB are left after what running sandboxes may still write and the %" PRIu64
                   " MiB reserve (--disk-reserve) on %s",
                   want_mb, left, reserve_mb, dir);
}
