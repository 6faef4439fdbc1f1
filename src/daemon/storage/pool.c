/* The storage pool and the images in it (pool.h, docs/storage.md). */
#include "daemon/sandbox/loop.h"
#include "daemon/storage/pool.h"
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <linux/mount.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static int pool_mnt = -1;   /* the detached XFS mount; every image path is relative to it */
static int pool_file = -1;  /* pool.img, holding its exclusive lock */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs a mkfs-like tool with fd as its fd 3 (named /dev/fd/3 in argv), its
 * output discarded. Returns its exit status, or a negative errno. */
/* The tool's last words, for the error message of a failed run. */
static __thread char tool_said[160];

static int run_tool(const char *const *paths, char *const argv[], int fd, struct hx_err *e)
{
    tool_said[0] = 0;
    autoclose int errfd = memfd_create("hutch-tool-stderr", MFD_CLOEXEC);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (errfd >= 0)
        posix_spawn_file_actions_adddup2(&fa, errfd, 2);
    else
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    if (fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, fd, 3); /* dup2 clears close-on-exec */
    pid_t pid;
    int r = ENOENT;
    for (size_t i = 0; paths[i] && r == ENOENT; i++)
        r = posix_spawn(&pid, paths[i], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0)
        return hx_fail(e, r, "run %s: %s", argv[0], strerror(r));
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return hx_fail(e, errno, "wait for %s: %m", argv[0]);
    if (errfd >= 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        char buf[4096];
        off_t end = lseek(errfd, 0, SEEK_END);
        off_t from = end > (off_t)sizeof buf - 1 ? end - (off_t)sizeof buf + 1 : 0;
        ssize_t n = pread(errfd, buf, sizeof buf - 1, from);
        if (n > 0) {
            buf[n] = 0;
            while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
                buf[--n] = 0;
            char *last = strrchr(buf, '\n');
            snprintf(tool_said, sizeof tool_said, "%s", last ? last + 1 : buf);
        }
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* F_OFD_SETLK on the whole file: the lock belongs to the open file
 * description, which a loop device keeps for as long as it exists. */
static int lock_file(int fd, bool shared, int wait_ms)
{
    struct flock fl = {.l_type = (short)(shared ? F_RDLCK : F_WRLCK), .l_whence = SEEK_SET};
    for (int waited = 0;; waited += 10) {
        if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
            return 0;
        if (errno != EAGAIN && errno != EACCES)
            return -errno;
        if (waited >= wait_ms)
            return -EBUSY;
        sleep_ms(10);
    }
}

static int create_pool_image(const char *path, uint64_t size, struct hx_err *e)
{
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    unlink(tmp);
    autoclose int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return hx_fail(e, errno, "create %s: %m", tmp);
    /* Allocated in full now: volumes can never fill the host's disk, and the
     * pool can never find its own blocks missing. */
    int r = fallocate(fd, 0, 0, (off_t)size);
    if (r < 0) {
        r = hx_fail(e, errno, "allocate %llu MiB for the storage pool %s: %m", (unsigned long long)(size >> 20), tmp);
        unlink(tmp);
        return r;
    }
    static const char *const paths[] = {"/usr/sbin/mkfs.xfs", "/sbin/mkfs.xfs", NULL};
    char *const argv[] = {"mkfs.xfs", "-q", "-f", "-m", "reflink=1,crc=1", "/dev/fd/3", NULL};
    r = run_tool(paths, argv, fd, e);
    if (r != 0 || fsync(fd) < 0 || rename(tmp, path) < 0) {
        if (r >= 0)
            r = r > 0 ? hx_fail(e, EIO, "mkfs.xfs of the storage pool failed (status %d; is xfsprogs installed?)", r)
                      : hx_fail(e, errno, "finish %s: %m", path);
        unlink(tmp);
        return r;
    }
    return 0;
}

/* The pool's XFS on dev, mounted detached. When dev is already mounted (a
 * previous hutchd's pool that its sandboxes still hold), the kernel hands
 * back that very superblock: one file system, never two on one image. */
static int mount_pool_dev(const char *dev, struct hx_err *e)
{
    autoclose int fs = (int)syscall(SYS_fsopen, "xfs", FSOPEN_CLOEXEC);
    if (fs < 0)
        return hx_fail(e, errno, "fsopen xfs: %m");
    if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", dev, 0) < 0 ||
        syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return hx_fail(e, errno, "mount the storage pool (xfs on %s): %m", dev);
    int m = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
    if (m < 0)
        return hx_fail(e, errno, "fsmount the storage pool: %m");
    if (mkdirat(m, "images", 0700) < 0 && errno != EEXIST) {
        int r = hx_fail(e, errno, "mkdir images in the storage pool: %m");
        close(m);
        return r;
    }
    return m;
}

static int mount_pool(int file, struct hx_err *e)
{
    char dev[32];
    autoclose int dfd = loop_attach(file, false, dev, e);
    if (dfd < 0)
        return dfd;
    return mount_pool_dev(dev, e); /* the mount holds the loop device now; closing dfd lets autoclear work */
}

/* ---- live restore: loop devices a previous hutchd left ---- */

static bool loop_name_ok(const char *dev)
{
    size_t n = strnlen(dev, 32);
    return n > 9 && n < 20 && strncmp(dev, "/dev/loop", 9) == 0 && strspn(dev + 9, "0123456789") == n - 9;
}

/* Opens dev and checks, through the device itself (LOOP_GET_STATUS64), that
 * it is bound to the file st describes, read-only or not as asked. The fd
 * returned holds the device: an autoclear device is not cleared, nor bound
 * to another file, while it is open. -ESTALE when it holds something else. */
static int loop_open_backing(const char *dev, const struct stat *st, bool readonly, struct hx_err *e)
{
    if (!loop_name_ok(dev))
        return hx_fail(e, EINVAL, "bad loop device name");
    autoclose int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return hx_fail(e, errno == ENOENT || errno == ENXIO ? ESTALE : errno, "open %s: %m", dev);
    struct loop_info64 li;
    if (ioctl(fd, LOOP_GET_STATUS64, &li) < 0)
        return hx_fail(e, errno == ENXIO ? ESTALE : errno, "%s is not bound to a file any more", dev);
    /* lo_device is the kernel's new_encode_dev() of the file's device */
    unsigned maj = (unsigned)((li.lo_device & 0xfff00) >> 8);
    unsigned min = (unsigned)((li.lo_device & 0xff) | ((li.lo_device >> 12) & 0xfff00));
    if (maj != major(st->st_dev) || min != minor(st->st_dev) || li.lo_inode != st->st_ino)
        return hx_fail(e, ESTALE, "%s holds another file now", dev);
    if (!!(li.lo_flags & LO_FLAGS_READ_ONLY) != readonly)
        return hx_fail(e, ESTALE, "%s is %s", dev, readonly ? "writable" : "read-only");
    return hx_steal_fd(&fd);
}

/* The previous pool's loop device: its sysfs backing_file names pool.img
 * (the host's path), and the device itself says it is that very file. */
static int adopt_pool(const char *path, int file, struct hx_err *e)
{
    struct stat st;
    char real[4300];
    if (fstat(file, &st) < 0 || !realpath(path, real))
        return hx_fail(e, errno, "stat %s: %m", path);
    DIR *d = opendir("/sys/block");
    if (!d)
        return hx_fail(e, errno, "open /sys/block: %m");
    int r = hx_fail(e, ENOENT, "no loop device holds %s", path);
    for (struct dirent *de; (de = readdir(d));) {
        if (strncmp(de->d_name, "loop", 4) != 0 || strlen(de->d_name) > 16)
            continue;
        char sys[64], back[4300];
        snprintf(sys, sizeof sys, "/sys/block/%s/loop/backing_file", de->d_name);
        autoclose int bf = open(sys, O_RDONLY | O_CLOEXEC);
        ssize_t n = bf >= 0 ? read(bf, back, sizeof back - 1) : -1;
        if (n <= 0)
            continue;
        back[n] = 0;
        back[strcspn(back, "\n")] = 0;
        if (strcmp(back, real) != 0)
            continue;
        char dev[32];
        snprintf(dev, sizeof dev, "/dev/%s", de->d_name);
        struct hx_err le = {0};
        autoclose int dfd = loop_open_backing(dev, &st, false, &le);
        if (dfd < 0)
            continue;
        r = mount_pool_dev(dev, e);
        break;
    }
    closedir(d);
    return r;
}

int storage_pool_open(const char *state_dir, uint64_t size_bytes, bool create, struct hx_err *e)
{
    pthread_mutex_lock(&pool_mu);
    int r = 0;
    if (pool_mnt >= 0)
        goto out;
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/storage", state_dir);
    snprintf(path, sizeof path, "%s/pool.img", dir);
    if (access(path, F_OK) < 0) {
        if (!create) {
            r = hx_fail(e, ENOENT, "no storage pool yet");
            goto out;
        }
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
            r = hx_fail(e, errno, "mkdir %s: %m", dir);
            goto out;
        }
        if ((r = create_pool_image(path, size_bytes, e)) < 0)
            goto out;
    }
    int f = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (f < 0) {
        r = hx_fail(e, errno, "open %s: %m", path);
        goto out;
    }
    /* A previous hutchd's pool holds the lock until its loop device goes:
     * never mount the image twice. While that device is there (sandboxes
     * left running with volumes: live restore), mount it again: the same
     * superblock. Else (its last sandboxes still dying) wait for it. */
    struct hx_err ae = {0};
    int m = -1;
    if (lock_file(f, false, 0) < 0 && (m = adopt_pool(path, f, &ae)) >= 0) {
        printf("hutchd: storage pool: mounted the previous hutchd's pool again (its sandboxes still use it)\n");
        goto mounted;
    }
    if ((r = lock_file(f, false, 10000)) < 0) {
        close(f);
        r = hx_fail(e, -r, "the storage pool %s is still in use by another mount (a previous hutchd?)", path);
        goto out;
    }
    m = mount_pool(f, e);
    if (m < 0) {
        close(f);
        r = m;
        goto out;
    }
mounted:
    pool_file = f;
    pool_mnt = m;
out:
    pthread_mutex_unlock(&pool_mu);
    return r;
}

bool storage_pool_is_open(void)
{
    return pool_mnt >= 0;
}

void storage_pool_space(uint64_t *total_bytes, uint64_t *reserve_bytes)
{
    struct statvfs v;
    *total_bytes = *reserve_bytes = 0;
    if (pool_mnt < 0 || fstatvfs(pool_mnt, &v) < 0)
        return;
    *total_bytes = (uint64_t)v.f_blocks * v.f_frsize;
    /* XFS's own growth (reflink and free-space btrees, the log) comes out
     * of the same blocks: keep 3 % of them, at least 16 MiB. */
    uint64_t r = *total_bytes / 33;
    *reserve_bytes = r < (16u << 20) ? (16u << 20) : r;
}

static int image_path(const char *id, char out[64])
{
    if (strlen(id) > 40 || strchr(id, '/'))
        return -EINVAL;
    snprintf(out, 64, "images/%s.img", id);
    return 0;
}

static int open_image(const char *id, int flags, struct hx_err *e)
{
    char p[64];
    if (pool_mnt < 0)
        return hx_fail(e, ENOENT, "the storage pool is not open");
    if (image_path(id, p) < 0)
        return hx_fail(e, EINVAL, "bad image id");
    int fd = openat(pool_mnt, p, flags | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return hx_fail(e, errno, "open image %s: %m", id);
    return fd;
}

static const char *const mkfs_ext4[] = {"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4", NULL};

int storage_image_create(const char *id, uint64_t bytes, const char *populate_dir, struct hx_err *e)
{
    autoclose int fd = open_image(id, O_RDWR | O_CREAT | O_EXCL, e);
    if (fd < 0)
        return fd;
    int r;
    if (ftruncate(fd, (off_t)bytes) < 0) {
        r = hx_fail(e, errno, "size image %s: %m", id);
        goto fail;
    }
    /* A journal: a volume outlives crashes of its sandbox and of hutchd.
     * root_owner: the volume's top directory belongs to app (uid 1000 in
     * every sandbox, through the idmapped mount). No reserved blocks. */
    char *argv[16] = {"mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,nodiscard,root_owner=1000:1000"};
    int n = 7;
    if (populate_dir) {
        argv[n++] = "-d";
        argv[n++] = (char *)populate_dir;
    }
    argv[n++] = "/dev/fd/3";
    argv[n] = NULL;
    r = run_tool(mkfs_ext4, argv, fd, e);
    if (r > 0)
        r = populate_dir && strstr(tool_said, "space")
                ? hx_fail(e, ENOSPC, "%s does not fit in a volume of %llu MiB", populate_dir,
                          (unsigned long long)(bytes >> 20))
                : hx_fail(e, EIO, "mkfs.ext4 of volume %s failed (status %d): %s", id, r, tool_said);
    if (r == 0 && fsync(fd) < 0)
        r = hx_fail(e, errno, "fsync image %s: %m", id);
    if (r == 0)
        return 0;
fail:;
    char p[64];
    if (image_path(id, p) == 0)
        unlinkat(pool_mnt, p, 0);
    return r;
}

int storage_image_clone(const char *src, const char *dst, uint64_t grow_to, int wait_ms, struct hx_err *e)
{
    autoclose int s = open_image(src, O_RDONLY, e);
    if (s < 0)
        return s;
    /* A shared lock: no loop device may hold it read-write while we copy
     * (a mounted file system's image is not consistent). */
    if (lock_file(s, true, wait_ms) < 0)
        return hx_fail(e, EBUSY, "%s is attached to a sandbox", src);
    autoclose int d = open_image(dst, O_RDWR | O_CREAT | O_EXCL, e);
    if (d < 0)
        return d;
    int r = 0;
    struct stat st;
    if (ioctl(d, FICLONE, s) < 0)
        r = hx_fail(e, errno, "reflink %s to %s: %m", src, dst);
    else if (fstat(d, &st) < 0)
        r = hx_fail(e, errno, "stat %s: %m", dst);
    else if (grow_to > (uint64_t)st.st_size) {
        static const char *const rs[] = {"/usr/sbin/resize2fs", "/sbin/resize2fs", NULL};
        char *const argv[] = {"resize2fs", "-f", "/dev/fd/3", NULL};
        if (ftruncate(d, (off_t)grow_to) < 0)
            r = hx_fail(e, errno, "grow %s: %m", dst);
        else if ((r = run_tool(rs, argv, d, e)) > 0)
            r = hx_fail(e, EIO, "resize2fs of %s failed (status %d)", dst, r);
    }
    if (r == 0 && fsync(d) < 0)
        r = hx_fail(e, errno, "fsync %s: %m", dst);
    if (r < 0) {
        char p[64];
        if (image_path(dst, p) == 0)
            unlinkat(pool_mnt, p, 0);
    }
    return r;
}

int storage_image_remove(const char *id, int wait_ms, struct hx_err *e)
{
    autoclose int fd = open_image(id, O_RDWR, e);
    if (fd < 0)
        return fd == -ENOENT ? 0 : fd;
    if (lock_file(fd, false, wait_ms) < 0)
        return hx_fail(e, EBUSY, "%s is still attached to a sandbox that is stopping", id);
    char p[64];
    image_path(id, p);
    if (unlinkat(pool_mnt, p, 0) < 0)
        return hx_fail(e, errno, "remove image %s: %m", id);
    return 0;
}

void storage_image_sizes(const char *id, uint64_t *exclusive, uint64_t *flattened)
{
    *exclusive = *flattened = 0;
    struct hx_err e;
    autoclose int fd = open_image(id, O_RDONLY, &e);
    if (fd < 0)
        return;
    enum { N = 256 };
    autofree struct fiemap *fm = calloc(1, sizeof *fm + N * sizeof(struct fiemap_extent));
    if (!fm)
        return;
    uint64_t start = 0;
    for (int rounds = 0; rounds < 100000; rounds++) {
        memset(fm, 0, sizeof *fm);
        fm->fm_start = start;
        fm->fm_length = ~0ull - start;
        fm->fm_extent_count = N;
        if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0 || fm->fm_mapped_extents == 0)
            return;
        bool last = false;
        for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
            struct fiemap_extent *x = &fm->fm_extents[i];
            *flattened += x->fe_length;
            if (!(x->fe_flags & FIEMAP_EXTENT_SHARED))
                *exclusive += x->fe_length;
            start = x->fe_logical + x->fe_length;
            last = last || (x->fe_flags & FIEMAP_EXTENT_LAST);
        }
        if (last)
            return;
    }
}

int storage_image_attach(const char *id, bool readonly, int wait_ms, struct storage_attach *a, struct hx_err *e)
{
    autoclose int fd = open_image(id, readonly ? O_RDONLY : O_RDWR, e);
    if (fd < 0)
        return fd;
    int r = lock_file(fd, readonly, wait_ms);
    if (r < 0)
        return hx_fail(e, -r, "%s is %s", id, r == -EBUSY ? "attached to another sandbox" : "not lockable");
    r = loop_attach(fd, readonly, a->dev, e);
    if (r < 0)
        return r;
    a->dev_fd = r;
    a->file_fd = hx_steal_fd(&fd);
    return 0;
}

void storage_attach_close(struct storage_attach *a)
{
    if (a->dev_fd >= 0)
        close(a->dev_fd);
    if (a->file_fd >= 0)
        close(a->file_fd);
    a->dev_fd = a->file_fd = -1;
}

int storage_image_held(const char *id, const char *dev, bool readonly, struct hx_err *e)
{
    autoclose int fd = open_image(id, O_RDONLY, e);
    if (fd < 0)
        return fd == -ENOENT ? hx_fail(e, ESTALE, "image %s is gone", id) : fd;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return hx_fail(e, errno, "stat image %s: %m", id);
    /* The attach's lock lives with the loop device's file description: a
     * conflicting lock of the attach's kind says a device still holds it. */
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return hx_fail(e, errno, "lock state of image %s: %m", id);
    if (fl.l_type != (readonly ? F_RDLCK : F_WRLCK))
        return hx_fail(e, ESTALE, "image %s is not attached %s any more", id, readonly ? "read-only" : "read-write");
    return loop_open_backing(dev, &st, readonly, e);
}
