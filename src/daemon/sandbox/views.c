/* Honest resource views: hutchd runs its own lxcfs (not the system's
 * service) on a directory of its state dir, restarts it when it dies, and
 * re-binds its files in every running sandbox; the CPUs for affinities.
 *
 * Why our own instance: its mount point, options and lifetime are ours
 * (--enable-cfs for CPU views from the quota, -u because sandboxes have no
 * swap, -l for load averages), and a system lxcfs that an administrator
 * restarts would break every sandbox's /proc files.
 *
 * When lxcfs dies, its FUSE mount answers ENOTCONN, in every sandbox that
 * bound its files. So at once: the dead mount is detached here, every
 * running sandbox's binds are removed (its /proc/meminfo is the kernel's
 * again: readable, the host's numbers, as before lxcfs), lxcfs is started
 * again with a backoff, and once it serves its files are bound again. A
 * reader sees ENOTCONN only between the death and the removal (a few ms). */
#include "daemon/log.h"
#include "daemon/sandbox/views.h"
#include "lib/views.h"
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_POLL_MS 50
#define READY_TIMEOUT_MS 10000  /* lxcfs that has not mounted by then is killed and restarted */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000
#define STABLE_MS 60000         /* up this long: the next death restarts at once again */

static const char *const view_files[HX_VIEW_N] = HX_VIEW_FILES;

static struct {
    uv_loop_t *loop;
    char bin[PATH_MAX], mnt[PATH_MAX - 16], pidfile[PATH_MAX];
    uv_process_t proc;
    uv_timer_t timer;
    bool inited, running, closing, ready, stopping;
    pid_t pid;
    unsigned failures;
    uint64_t started_ms, waited_ms, gen;
    views_changed_cb cb;
    void *ud;
} g;

/* The generation of the lxcfs that serves now, 0 while none does: written
 * by the loop (changed, views_stop), read by launch workers. */
static _Atomic uint64_t serving_gen;

/* O_PATH fds of lxcfs's view files, opened once per lxcfs instance by the
 * first launch worker that needs them (views_clone_trees); launch workers
 * only, never the loop (a FUSE lookup waits for lxcfs). */
static struct {
    pthread_mutex_t mu;
    uint64_t gen; /* 0: none open */
    int fd[HX_VIEW_N];
} files = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void files_close(void)
{
    for (int i = 0; files.gen && i < HX_VIEW_N; i++)
        close(files.fd[i]);
    files.gen = 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const char *views_dir(void) { return g.ready ? g.mnt : NULL; }
uint64_t views_generation(void) { return g.gen; }
pid_t views_pid(void) { return g.running ? g.pid : 0; }

/* Is a FUSE file system mounted on g.mnt? Read from mountinfo, never by a
 * call into the mount: a hung lxcfs must not hang the daemon's loop. */
static bool lxcfs_mounted(void)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return false;
    char line[4096];
    bool found = false;
    size_t ml = strlen(g.mnt);
    while (!found && fgets(line, sizeof line, f)) {
        char *p = line;
        for (int i = 0; i < 4 && p; i++) /* field 5 is the mount point */
            if ((p = strchr(p, ' ')))
                p++;
        const char *sep = strstr(line, " - ");
        found = p && sep && strncmp(p, g.mnt, ml) == 0 && p[ml] == ' ' && strncmp(sep + 3, "fuse", 4) == 0;
    }
    fclose(f);
    return found;
}

/* A dead lxcfs leaves its mount behind (ENOTCONN); a live one is unmounted
 * lazily, after its last open file. Only mounts on g.mnt itself. */
static void detach_mount(void)
{
    for (int i = 0; i < 8 && umount2(g.mnt, MNT_DETACH | UMOUNT_NOFOLLOW) == 0; i++) {
    }
}

static void changed(void)
{
    g.gen++;
    atomic_store(&serving_gen, g.ready ? g.gen : 0);
    if (g.cb)
        g.cb(g.ud);
}

/* An lxcfs of an earlier hutchd (killed with -9) still serving g.mnt. */
static void stop_stale(void)
{
    char buf[64];
    autoclose int fd = open(g.pidfile, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (n > 0) {
        buf[n] = 0;
        long pid = strtol(buf, NULL, 10);
        char path[64], cmd[PATH_MAX + 256];
        snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
        autoclose int cfd = pid > 1 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        ssize_t cn = cfd >= 0 ? read(cfd, cmd, sizeof cmd - 1) : -1;
        bool ours = false;
        if (cn > 0) { /* argv[0] ends in lxcfs and one argument is our mount point */
            cmd[cn] = 0;
            size_t l0 = strlen(cmd);
            ours = l0 >= 5 && strcmp(cmd + l0 - 5, "lxcfs") == 0;
            bool has_mnt = false;
            for (char *a = cmd; a < cmd + cn; a += strlen(a) + 1)
                has_mnt |= strcmp(a, g.mnt) == 0;
            ours &= has_mnt;
        }
        if (ours) {
            fprintf(stderr, "hutchd: stopping the lxcfs of an earlier hutchd (pid %ld)\n", pid);
            kill((pid_t)pid, SIGTERM);
            for (int i = 0; i < 100 && kill((pid_t)pid, 0) == 0; i++)
                usleep(10000);
            kill((pid_t)pid, SIGKILL);
        }
    }
    unlink(g.pidfile);
    detach_mount();
}

static void on_timer(uv_timer_t *t);

static void arm(uint64_t ms)
{
    uv_timer_start(&g.timer, on_timer, ms, 0);
}

static void on_proc_closed(uv_handle_t *h)
{
    (void)h;
    g.closing = false;
}

static void on_lxcfs_exit(uv_process_t *p, int64_t status, int sig)
{
    bool was_ready = g.ready;
    g.running = g.ready = false;
    g.closing = true;
    uv_close((uv_handle_t *)p, on_proc_closed);
    uv_timer_stop(&g.timer);
    detach_mount();
    if (mono_ms() - g.started_ms >= STABLE_MS)
        g.failures = 0;
    uint64_t delay = BACKOFF_MIN_MS << (g.failures < 9 ? g.failures : 9);
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    g.failures++;
    if (g.stopping)
        return;
    fprintf(stderr, "hutchd: lxcfs (pid %d) %s %d: sandboxes see the kernel's /proc views until it serves "
                    "again; restarting it in %llu ms\n", (int)g.pid, sig ? "was killed by signal" : "exited with",
            sig ? sig : (int)status, (unsigned long long)delay);
    if (was_ready)
        changed();
    arm(delay);
}

static int spawn_lxcfs(void)
{
    /* -f: our child, so that we see it die; -u: sandboxes have no swap;
     * -l: load averages per cgroup; --enable-cfs: cpuinfo, stat and
     * cpu/online from the CFS quota; --enable-pidfd: no pid reuse races. */
    char *args[] = {g.bin, "-f", "-u", "-l", "--enable-cfs", "--enable-pidfd", "-p", g.pidfile, g.mnt, NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE}, {.flags = UV_IGNORE}, {.flags = UV_INHERIT_FD, .data.fd = log_child_fd(2)}}; /* log: */
    uv_process_options_t o = {
        .exit_cb = on_lxcfs_exit, .file = g.bin, .args = args, .stdio_count = 3, .stdio = stdio};
    int r = uv_spawn(g.loop, &g.proc, &o);
    if (r < 0) {
        /* uv_spawn initialised the handle: close it before the next try */
        g.closing = true;
        uv_close((uv_handle_t *)&g.proc, on_proc_closed);
        return r;
    }
    g.running = true;
    g.pid = g.proc.pid;
    g.started_ms = mono_ms();
    g.waited_ms = 0;
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    (void)t;
    if (g.stopping)
        return;
    if (!g.running) { /* restart after a death */
        if (g.closing) {
            arm(READY_POLL_MS);
            return;
        }
        detach_mount();
        int r = spawn_lxcfs();
        if (r < 0) {
            fprintf(stderr, "hutchd: cannot start %s: %s (retrying in %d ms)\n", g.bin, uv_strerror(r), BACKOFF_MAX_MS);
            arm(BACKOFF_MAX_MS);
            return;
        }
        arm(READY_POLL_MS);
        return;
    }
    if (g.ready)
        return;
    if (lxcfs_mounted()) {
        g.ready = true;
        fprintf(stderr, "hutchd: lxcfs (pid %d) serves sandboxes' resource views from %s\n", (int)g.pid, g.mnt);
        changed();
        return;
    }
    g.waited_ms += READY_POLL_MS;
    if (g.waited_ms >= READY_TIMEOUT_MS) {
        fprintf(stderr, "hutchd: lxcfs (pid %d) did not mount %s in %d ms: killing it\n", (int)g.pid, g.mnt,
                READY_TIMEOUT_MS);
        uv_process_kill(&g.proc, SIGKILL); /* on_lxcfs_exit restarts it */
        return;
    }
    arm(READY_POLL_MS);
}

void views_start(uv_loop_t *loop, const char *bin, const char *mnt, views_changed_cb cb, void *ud)
{
    g.loop = loop;
    g.cb = cb;
    g.ud = ud;
    if (!bin || !bin[0]) {
        fprintf(stderr, "hutchd: resource views off (--lxcfs \"\"): sandboxes see the host's /proc/meminfo, "
                        "cpuinfo, stat and uptime\n");
        return;
    }
    if (access(bin, X_OK) < 0) {
        fprintf(stderr, "hutchd: no lxcfs at %s (%s): sandboxes see the host's /proc/meminfo, cpuinfo, stat "
                        "and uptime; install Debian's lxcfs for views of their own limits\n", bin, strerror(errno));
        return;
    }
    if (strlen(mnt) >= sizeof g.mnt || strlen(bin) >= sizeof g.bin) {
        fprintf(stderr, "hutchd: resource views off: path too long\n");
        return;
    }
    snprintf(g.bin, sizeof g.bin, "%s", bin);
    snprintf(g.mnt, sizeof g.mnt, "%s", mnt);
    snprintf(g.pidfile, sizeof g.pidfile, "%s.pid", mnt);
    stop_stale();
    if (mkdir(g.mnt, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "hutchd: resource views off: mkdir %s: %s\n", g.mnt, strerror(errno));
        return;
    }
    uv_timer_init(loop, &g.timer);
    g.inited = true;
    int r = spawn_lxcfs();
    if (r < 0) {
        fprintf(stderr, "hutchd: cannot start %s: %s (retrying in %d ms)\n", g.bin, uv_strerror(r), BACKOFF_MAX_MS);
        arm(BACKOFF_MAX_MS);
        return;
    }
    /* Start-up only: wait for the mount (tens of ms) so that the first
     * sandboxes, the warm pool's, get the views from their start. */
    for (int i = 0; i < 3000 / 10 && !lxcfs_mounted(); i++)
        usleep(10000);
    on_timer(&g.timer);
}

void views_stop(void)
{
    if (!g.inited)
        return;
    g.stopping = true;
    g.ready = false;
    atomic_store(&serving_gen, 0);
    /* the fds views_clone_trees held (unless a worker still waits in a
     * lookup with the lock: then they go with the process) */
    if (pthread_mutex_trylock(&files.mu) == 0) {
        files_close();
        pthread_mutex_unlock(&files.mu);
    }
    uv_timer_stop(&g.timer);
    if (g.running) {
        /* The loop has stopped: reap by hand. SIGTERM lets it unmount. */
        kill(g.pid, SIGTERM);
        int st;
        pid_t w = 0;
        for (int i = 0; i < 200 && (w = waitpid(g.pid, &st, WNOHANG)) == 0; i++)
            usleep(10000);
        if (w == 0) {
            kill(g.pid, SIGKILL);
            waitpid(g.pid, &st, 0);
        }
        g.running = false;
    }
    detach_mount();
    unlink(g.pidfile);
    rmdir(g.mnt);
}

/* The kernel's struct clone_args, v0 (see launch.c). */
struct views_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

int views_apply(int pidfd, const char *dir, struct hx_err *e)
{
    int tree[HX_VIEW_N];
    char dst[HX_VIEW_N][32];
    for (int i = 0; i < HX_VIEW_N; i++) {
        tree[i] = -1;
        snprintf(dst[i], sizeof dst[i], "/proc/%s", view_files[i]);
    }
    int ret = 0;
    struct mount_attr attr = {
        .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    };
    char src[PATH_MAX];
    for (int i = 0; dir && i < HX_VIEW_N && ret == 0; i++) {
        snprintf(src, sizeof src, "%s/proc/%s", dir, view_files[i]);
        /* detached clones, made here where lxcfs's mount is reachable */
        tree[i] = (int)syscall(SYS_open_tree, AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW);
        if (tree[i] < 0 || syscall(SYS_mount_setattr, tree[i], "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
            ret = hx_fail(e, errno, "clone %s: %m", src);
    }
    if (ret == 0) {
        /* A child of our own, so that setns changes no thread of the
         * daemon; exit_signal 0 (launch.c): no generic reaper takes it. */
        struct views_clone_args a = {.exit_signal = 0};
        pid_t child = (pid_t)syscall(SYS_clone3, &a, sizeof a);
        if (child < 0) {
            ret = hx_fail(e, errno, "clone3: %m");
        } else if (child == 0) {
            /* Async-signal-safe only. The mount namespace is owned by the
             * host user namespace: only real root changes it. */
            if (setns(pidfd, CLONE_NEWNS) < 0)
                _exit(errno & 0xff);
            for (int i = 0; i < HX_VIEW_N; i++) {
                /* Only mounts on exactly this file: /proc itself is not
                 * touched. No stat before: on a dead lxcfs it fails (ENOTCONN). */
                for (int k = 0; k < 8 && umount2(dst[i], MNT_DETACH | UMOUNT_NOFOLLOW) == 0; k++) {
                }
                if (tree[i] < 0 || access(dst[i], F_OK) < 0)
                    continue; /* this kernel has no such file */
                /* move_mount never follows a symlink at the target */
                if (syscall(SYS_move_mount, tree[i], "", AT_FDCWD, dst[i], MOVE_MOUNT_F_EMPTY_PATH) < 0)
                    _exit(errno & 0xff);
            }
            _exit(0);
        } else {
            int st = 0;
            while (waitpid(child, &st, __WALL) < 0 && errno == EINTR) {
            }
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                ret = hx_fail(e, WIFEXITED(st) ? WEXITSTATUS(st) : EIO, "in the sandbox's mount namespace: %s",
                              WIFEXITED(st) ? strerror(WEXITSTATUS(st)) : "helper killed");
        }
    }
    for (int i = 0; i < HX_VIEW_N; i++)
        if (tree[i] >= 0)
            close(tree[i]);
    return ret;
}

/* Under files.mu: the O_PATH fds of generation gen's files. */
static int files_open(uint64_t gen, struct hx_err *e)
{
    if (files.gen == gen)
        return 0;
    files_close();
    char path[PATH_MAX];
    for (int i = 0; i < HX_VIEW_N; i++) {
        snprintf(path, sizeof path, "%s/proc/%s", g.mnt, view_files[i]);
        files.fd[i] = open(path, O_PATH | O_CLOEXEC | O_NOFOLLOW);
        if (files.fd[i] < 0) {
            int r = hx_fail(e, errno, "open %s: %m", path);
            while (i-- > 0)
                close(files.fd[i]);
            return r;
        }
    }
    files.gen = gen;
    return 0;
}

int views_clone_trees(int tree[], uint64_t *gen, struct hx_err *e)
{
    for (int i = 0; i < HX_VIEW_N; i++)
        tree[i] = -1;
    *gen = 0;
    uint64_t want = atomic_load(&serving_gen);
    if (!want)
        return 0; /* no lxcfs serves: the sandbox starts with the kernel's files */
    struct mount_attr attr = {
        .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    };
    int r;
    pthread_mutex_lock(&files.mu);
    if ((r = files_open(want, e)) == 0) {
        for (int i = 0; i < HX_VIEW_N && r == 0; i++) {
            /* The fd's own path: no lookup, so no request to lxcfs */
            tree[i] = (int)syscall(SYS_open_tree, files.fd[i], "", AT_EMPTY_PATH | OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
            if (tree[i] < 0 || syscall(SYS_mount_setattr, tree[i], "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
                r = hx_fail(e, errno, "clone lxcfs's %s: %m", view_files[i]);
        }
    }
    pthread_mutex_unlock(&files.mu);
    if (r == 0 && atomic_load(&serving_gen) == want) {
        *gen = want;
        return 0;
    }
    for (int i = 0; i < HX_VIEW_N; i++) /* failed, or lxcfs changed meanwhile: none */
        if (tree[i] >= 0) {
            close(tree[i]);
            tree[i] = -1;
        }
    return r;
}

json_t *views_pick_cpus(uint32_t cpu_millis)
{
    static unsigned next; /* rotates over the CPUs: sandboxes spread */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) < 0)
        return NULL;
    int have = CPU_COUNT(&set);
    uint32_t want = (cpu_millis + 999) / 1000;
    if (want == 0)
        want = 1;
    if (have <= 0 || want >= (uint32_t)have)
        return NULL; /* the quota covers every CPU: the host's affinity */
    int cpus[CPU_SETSIZE], n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < have; c++)
        if (CPU_ISSET(c, &set))
            cpus[n++] = c;
    json_t *out = json_array();
    for (uint32_t i = 0; i < want; i++)
        json_array_append_new(out, json_integer(cpus[(next + i) % (unsigned)n]));
    next = (next + want) % (unsigned)n;
    return out;
}

char *views_cpus_list(json_t *cpus)
{
    size_t n = json_array_size(cpus), i;
    if (n == 0)
        return NULL;
    char *out = malloc(n * 6 + 1), *w = out;
    if (!out)
        return NULL;
    json_t *c;
    json_array_foreach(cpus, i, c)
        w += sprintf(w, "%s%d", i ? "," : "", (int)json_integer_value(c));
    return out;
}
