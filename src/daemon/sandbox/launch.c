/* Launching a sandbox's PID 1: the user namespace (made first, entered last
 * by hutch-init) and the clone3() of hutch-init from a sealed memfd. */
#include "daemon/sandbox/launch.h"
#include "lib/views.h"
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

/* Both children of a launch share hutchd's memory (CLONE_VM) instead of
 * copying its page tables: a fork of hutchd copied every mapping and then
 * took copy-on-write faults on both sides, a fifth of hutchd's CPU time in
 * a burst of creates (docs/performance/create.md). Each child runs on a stack of
 * its caller's frame, which outlives it: the holder is reaped, and the init
 * child has exec'd (CLONE_VFORK), before the caller returns. */
#define CHILD_STACK 16384

static int hold_userns(void *arg)
{
    (void)arg;
    /* Holds the namespace until the parent kills it. It shares hutchd's fd
     * table (CLONE_FILES): it has no fd of its own to leak into a
     * sibling's child, and must close none. Only raw syscalls: errno and
     * every other thread-local of the caller are the caller's. */
    for (;;)
        syscall(SYS_pause);
    return 0;
}

int sandbox_init_memfd(const char *init_path, struct hx_err *e)
{
    autoclose int src = open(init_path, O_RDONLY | O_CLOEXEC);
    if (src < 0)
        return hx_fail(e, errno, "open %s: %m", init_path);
    struct stat st;
    if (fstat(src, &st) < 0)
        return hx_fail(e, errno, "stat %s: %m", init_path);
    if (!S_ISREG(st.st_mode) || st.st_size <= 0)
        return hx_fail(e, EINVAL, "%s is not a regular, non-empty file", init_path);

    /* MFD_EXEC: kernels with vm.memfd_noexec would otherwise make it non-executable. */
    autoclose int fd = memfd_create("hutch-init", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
    if (fd < 0 && errno == EINVAL)
        fd = memfd_create("hutch-init", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return hx_fail(e, errno, "memfd_create: %m");

    off_t left = st.st_size;
    while (left > 0) {
        ssize_t n = sendfile(fd, src, NULL, (size_t)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return hx_fail(e, errno, "copy %s into memfd: %m", init_path);
        if (n == 0)
            return hx_fail(e, EIO, "copy %s into memfd: file shrank", init_path);
        left -= n;
    }
    /* CVE-2019-5736: once sealed nobody (not even /proc/<pid>/exe from a
     * sandbox) can modify the binary every sandbox's PID 1 runs. */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
        return hx_fail(e, errno, "seal hutch-init memfd: %m");
    return hx_steal_fd(&fd);
}

/* Makes a user namespace mapping 0..count-1 to base..base+count-1 and returns
 * an fd to it. A short-lived child holds the namespace while we, real root in
 * the parent namespace, write its maps. setgroups stays "allow": the idmap is
 * written by a privileged process and sandbox root owns no other namespace. */
static int make_userns(const struct launch_spec *s, struct hx_err *e)
{
    /* exit_signal 0: a generic SIGCHLD reaper in the daemon (waitpid(-1)
     * without __WALL) never steals this child from us. No pipe to wait on:
     * launches run on several threads. */
    _Alignas(16) char stack[CHILD_STACK];
    pid_t child = clone(hold_userns, stack + sizeof stack, CLONE_NEWUSER | CLONE_VM | CLONE_FILES, NULL);
    if (child < 0)
        return hx_fail(e, errno, "clone(CLONE_NEWUSER): %m");

    int ret = 0, nsfd = -1;
    char path[64], map[64];
    snprintf(map, sizeof map, "0 %" PRIu32 " %" PRIu32 "\n", s->uid_base, s->uid_count);
    static const char *const files[] = {"uid_map", "gid_map"};
    for (size_t i = 0; i < HX_ARRAY_LEN(files) && ret == 0; i++) {
        snprintf(path, sizeof path, "/proc/%d/%s", (int)child, files[i]);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) {
            ret = hx_fail(e, errno, "open %s: %m", path);
            break;
        }
        ssize_t n = write(fd, map, strlen(map));
        if (n != (ssize_t)strlen(map))
            ret = hx_fail(e, n < 0 ? errno : EIO, "write %s (%s): %m", path, files[i]);
        close(fd);
    }
    if (ret == 0) {
        snprintf(path, sizeof path, "/proc/%d/ns/user", (int)child);
        nsfd = open(path, O_RDONLY | O_CLOEXEC);
        if (nsfd < 0)
            ret = hx_fail(e, errno, "open %s: %m", path);
    }
    /* Our own unreaped child: its pid cannot have been reused. */
    kill(child, SIGKILL);
    int st;
    while (waitpid(child, &st, __WALL) < 0 && errno == EINTR) {
    }
    return ret < 0 ? ret : nsfd;
}

/* Runs in the init child, in hutchd's memory while its caller waits
 * (CLONE_VM|CLONE_VFORK), with every signal blocked: async-signal-safe
 * calls only, nothing that allocates or locks, never returns. */
struct init_fds {
    int sock, userns, memfd, devnull, restore, tree;
    const int *views; /* HX_VIEW_N fds or NULL */
};

/* fds 8 .. 8 + HX_VIEW_N - 1 of hutch-init: the views' detached mounts */
#define VIEWS_FD 8
#define FIRST_FREE (VIEWS_FD + HX_VIEW_N)

static _Noreturn void exec_init(const struct init_fds *f);

/* Every signal's disposition back to the default before hutch-init's exec:
 * an ignored signal stays ignored across exec, so whatever hutchd's own
 * parent ignored would reach every process of every sandbox. Through the
 * system call, not glibc's sigaction, which refuses the signals glibc keeps
 * for itself (32 and 33): a CI runner was seen handing hutchd signal 32
 * ignored, and every sandboxed process had it ignored too. SIGKILL and
 * SIGSTOP fail, harmlessly. The kernel's struct (x86-64, arm64). */
struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};

static void reset_all_signals(void)
{
    struct kernel_sigaction dfl = {.handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask);
}

static int init_child(void *arg)
{
    exec_init(arg);
}

static _Noreturn void exec_init(const struct init_fds *f)
{
    int restore = f->restore, tree = f->tree;
    /* Move everything above the target numbers first so dup2 cannot
     * clobber a source that happens to be one of them. */
    int s = fcntl(f->sock, F_DUPFD_CLOEXEC, FIRST_FREE);
    int u = fcntl(f->userns, F_DUPFD_CLOEXEC, FIRST_FREE);
    int m = fcntl(f->memfd, F_DUPFD_CLOEXEC, FIRST_FREE);
    int n = fcntl(f->devnull, F_DUPFD_CLOEXEC, FIRST_FREE);
    int rs = restore >= 0 ? fcntl(restore, F_DUPFD_CLOEXEC, FIRST_FREE) : -1;
    int t = tree >= 0 ? fcntl(tree, F_DUPFD_CLOEXEC, FIRST_FREE) : -1;
    if (s < 0 || u < 0 || m < 0 || n < 0 || (restore >= 0 && rs < 0) || (tree >= 0 && t < 0))
        _exit(126);
    int v[HX_VIEW_N];
    for (int i = 0; f->views && i < HX_VIEW_N; i++)
        if ((v[i] = fcntl(f->views[i], F_DUPFD_CLOEXEC, FIRST_FREE)) < 0)
            _exit(126);
    /* stdio is /dev/null: PID 1 reports through HX_LOG, never onto a
     * daemon terminal a compromised agent could inject into. */
    if (dup2(n, 0) < 0 || dup2(n, 1) < 0 || dup2(n, 2) < 0 || dup2(s, 3) < 0 || dup2(u, 4) < 0 ||
        dup3(m, 5, O_CLOEXEC) < 0)
        _exit(126);
    if (rs >= 0 && dup2(rs, 6) < 0) /* kept across exec; hutch-init sets CLOEXEC itself */
        _exit(126);
    if (t >= 0 && dup2(t, 7) < 0) /* likewise */
        _exit(126);
    for (int i = 0; f->views && i < HX_VIEW_N; i++)
        if (dup2(v[i], VIEWS_FD + i) < 0) /* likewise */
            _exit(126);
    if ((rs < 0 && close(6) < 0 && errno != EBADF) || (t < 0 && close(7) < 0 && errno != EBADF) ||
        close_range(f->views ? FIRST_FREE : VIEWS_FD, ~0U, 0) < 0)
        _exit(126);

    sigset_t all;
    sigemptyset(&all);
    reset_all_signals();
    sigprocmask(SIG_SETMASK, &all, NULL);

    static char *const argv[] = {"hutch-init", NULL};
    static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    fexecve(5, argv, envp);
    _exit(127);
}

int sandbox_launch(const struct launch_spec *s, int *agent_fd, pid_t *pid, int *pidfd, struct hx_err *e)
{
    if (!s || s->init_memfd < 0 || s->uid_count == 0 || s->uid_base == 0 ||
        (uint64_t)s->uid_base + s->uid_count > UINT32_MAX)
        return hx_fail(e, EINVAL, "sandbox %s: invalid launch spec", s && s->id ? s->id : "?");

    autoclose int userns = make_userns(s, e);
    if (userns < 0)
        return hx_wrap(e, "sandbox %s: user namespace", s->id ? s->id : "?");

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return hx_fail(e, errno, "socketpair: %m");
    autoclose int ours = sv[0];
    autoclose int theirs = sv[1];
    autoclose int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        return hx_fail(e, errno, "open /dev/null: %m");

    int pfd = -1;
    struct init_fds f = {theirs, userns, s->init_memfd, devnull, s->restore_fd, s->root_tree_fd, s->view_trees};
    _Alignas(16) char stack[CHILD_STACK];
    /* The child starts with every signal blocked: no handler of hutchd's may
     * run in it (it shares our memory); exec_init resets them to default. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* Real root creates (and so owns) every namespace but the user one:
     * sandbox root can never reconfigure mounts, network, hostname or pids. */
    pid_t child = clone(init_child, stack + sizeof stack,
                        CLONE_VM | CLONE_VFORK | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC |
                            CLONE_NEWUTS | CLONE_PIDFD | SIGCHLD,
                        &f, &pfd);
    int err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (child < 0) {
        errno = err;
        return hx_fail(e, err, "sandbox %s: clone: %m", s->id ? s->id : "?");
    }

    *agent_fd = hx_steal_fd(&ours);
    *pid = child;
    *pidfd = pfd;
    return 0;
}
