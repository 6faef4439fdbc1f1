/* Honest resource views: /proc/meminfo, cpuinfo, stat, uptime, ... from
 * hutchd's lxcfs (numbers of this sandbox's cgroups and PID 1), and a CPU
 * affinity as wide as the CPU quota, so that free, nproc, Node's
 * availableParallelism() and the JVM size themselves to the sandbox.
 *
 * Threat model: the bind mounts are single files (never lxcfs's directory,
 * whose cgroup/ and sys/ trees would show the host's), read-only, nosuid,
 * nodev, noexec, made by real root in a mount namespace the host user
 * namespace owns: sandbox root cannot unmount them to reach the host's
 * numbers, nor write through them. lxcfs picks the numbers by the reader's
 * pid namespace (its PID 1's cgroups), which no sandbox can leave (seccomp
 * refuses new pid namespaces), so it never answers with another sandbox's. */
#include "init/views.h"
#include "init/init.h"
#include "lib/views.h"
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *const view_files[HX_VIEW_N] = HX_VIEW_FILES;

static struct {
    const char *lxcfs;              /* points into the setup message, which outlives setup */
    cpu_set_t cpus;
    bool has_cpus;
    int tree[HX_VIEW_N];            /* detached clones of lxcfs's files, -1 = none */
    bool passed;                    /* tree[] came from hutchd (views.trees) */
    bool prepared;
} g;

/* Absolute, bounded, no ".." component: opened in the host's mount namespace. */
static bool dir_ok(const char *p)
{
    if (!p || p[0] != '/' || strnlen(p, PATH_MAX) >= PATH_MAX - 64)
        return false;
    for (const char *s = p; (s = strstr(s, "..")) != NULL; s += 2)
        if ((s == p || s[-1] == '/') && (s[2] == '/' || s[2] == '\0'))
            return false;
    return true;
}

static void close_trees(void)
{
    for (int i = 0; i < HX_VIEW_N; i++)
        if (g.tree[i] >= 0) {
            close(g.tree[i]);
            g.tree[i] = -1;
        }
}

int views_parse(json_t *root, struct hx_err *e)
{
    memset(&g, 0, sizeof g);
    for (int i = 0; i < HX_VIEW_N; i++)
        g.tree[i] = -1;
    json_t *v = json_object_get(root, "views");
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return hx_fail(e, EINVAL, "setup: views must be an object");
    json_t *trees = json_object_get(v, "trees");
    if (trees && !json_is_null(trees)) {
        /* hutchd's clones of lxcfs's files (fds 8..): bound without a
         * lookup through lxcfs */
        if (!json_is_integer(trees) || json_integer_value(trees) != INIT_VIEWS_FD)
            return hx_fail(e, EINVAL, "setup: bad views.trees");
        for (int i = 0; i < HX_VIEW_N; i++) {
            if (fcntl(INIT_VIEWS_FD + i, F_GETFD) < 0) {
                close_trees();
                return hx_fail(e, EBADF, "setup: views.trees: fd %d is not open", INIT_VIEWS_FD + i);
            }
            g.tree[i] = INIT_VIEWS_FD + i;
        }
        g.passed = true;
    }
    json_t *dir = json_object_get(v, "lxcfs");
    if (dir && !json_is_null(dir)) {
        if (!json_is_string(dir) || !dir_ok(json_string_value(dir)))
            return hx_fail(e, EINVAL, "setup: bad views.lxcfs");
        g.lxcfs = json_string_value(dir);
    }
    json_t *cpus = json_object_get(v, "cpus");
    if (cpus && !json_is_null(cpus)) {
        size_t n = json_is_array(cpus) ? json_array_size(cpus) : 0;
        if (n == 0 || n > HX_VIEW_CPUS_MAX)
            return hx_fail(e, EINVAL, "setup: views.cpus must be a list of 1..%d CPUs", HX_VIEW_CPUS_MAX);
        CPU_ZERO(&g.cpus);
        size_t i;
        json_t *c;
        json_array_foreach(cpus, i, c) {
            json_int_t k = json_is_integer(c) ? json_integer_value(c) : -1;
            if (k < 0 || k >= CPU_SETSIZE)
                return hx_fail(e, EINVAL, "setup: bad CPU number in views.cpus");
            CPU_SET((int)k, &g.cpus);
        }
        g.has_cpus = true;
    }
    return 0;
}

int views_prepare(struct hx_err *e)
{
    /* nproc, os.availableParallelism(), os.process_cpu_count() and the JVM
     * count the affinity mask; every process inherits it from PID 1. Sandbox
     * root may widen its own again: that changes what it counts, not the
     * quota it gets. */
    if (g.has_cpus && sched_setaffinity(0, sizeof g.cpus, &g.cpus) < 0)
        return hx_fail(e, errno, "sched_setaffinity: %m");
    struct mount_attr attr = {
        .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    };
    if (g.passed) {
        for (int i = 0; i < HX_VIEW_N; i++)
            if (syscall(SYS_mount_setattr, g.tree[i], "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) {
                int err = errno;
                close_trees();
                return hx_fail(e, err, "views: the mount passed for /proc/%s: %m", view_files[i]);
            }
        g.prepared = true;
        return 0;
    }
    if (!g.lxcfs)
        return 0;
    char path[PATH_MAX];
    for (int i = 0; i < HX_VIEW_N; i++) {
        snprintf(path, sizeof path, "%s/proc/%s", g.lxcfs, view_files[i]);
        /* A clone of one file, not of lxcfs's tree; AT_SYMLINK_NOFOLLOW: lxcfs
         * serves regular files, anything else is not bound. */
        int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW);
        if (fd < 0 || syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) {
            /* lxcfs died or restarts (ENOTCONN): the kernel's views for now;
             * hutchd binds the new instance's files once it serves. */
            if (fd >= 0)
                close(fd);
            close_trees();
            return 0;
        }
        g.tree[i] = fd;
    }
    g.prepared = true;
    return 0;
}

int views_attach(struct hx_err *e)
{
    if (!g.prepared)
        return 0;
    char dst[64];
    for (int i = 0; i < HX_VIEW_N; i++) {
        snprintf(dst, sizeof dst, "/proc/%s", view_files[i]);
        if (access(dst, F_OK) < 0)
            continue; /* this kernel has no such file */
        if (syscall(SYS_move_mount, g.tree[i], "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) < 0) {
            int err = errno;
            close_trees();
            return hx_fail(e, err, "bind the lxcfs view over %s: %m", dst);
        }
    }
    close_trees();
    return 0;
}
