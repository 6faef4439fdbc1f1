/* Starting a user process: clone, confine (capabilities, seccomp, ids) and
 * exec, reporting a failed step back to the caller.
 *
 * The child is clone(CLONE_VM | CLONE_VFORK), as posix_spawn does: it runs
 * on a stack of its own inside hutch-init's memory and hutch-init's thread
 * waits until it has exec'd or exited, so no page table is copied and no
 * page is copied on write. What that asks of the child (child_main):
 *  - system calls only, no malloc, no lock, no write to hutch-init's data
 *    except its own struct spawn_child; ids are changed with raw syscalls
 *    (glibc's setresuid would ask every thread of hutch-init to change too);
 *  - every signal is blocked in hutch-init's thread from before the clone
 *    until after it (the child inherits that mask), and the child sets
 *    the signals hutch-init handles or ignores back to SIG_DFL before it
 *    unblocks them, so none of hutch-init's handlers runs in the child;
 *  - PATH is searched here (exec_search) from the spawn's own environment:
 *    execvpe reads the global environ, which the child must not change.
 * What the bounding set, the ambient set and the inheritable set hold does
 * not depend on the spawn: hutch-init empties them of everything but
 * Docker's set once (spawn_prepare), and each child inherits that.
 *
 * Where the agent sits in a cpu cgroup of its own (cgroup v1, the agents'
 * cgroup: docs/performance/fairness.md), the clone is made by hutch-init's second
 * thread, the spawner, which moved itself into the sandbox's cpu cgroup once
 * at setup: a child starts where its creating thread is, so it needs no move
 * of its own. A move through `tasks` takes the kernel's cgroup_mutex, one
 * for the whole host, which other work holds for whole RCU grace periods
 * (another daemon's cgroup.procs writes, cgroup mkdir and rmdir): under load
 * a move waited for it for up to seconds, on every command's path. The loop
 * thread hands the spawner one clone at a time and waits for it, as it
 * waited for the clone itself; the child still runs nothing but system
 * calls. If the spawner could not move, each child moves itself, as
 * before. */
#include "init/init.h"
#include "lib/slice.h"
#include <fcntl.h>
#include <linux/capability.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Docker's default capability set: meaningful only in the sandbox's own
 * user namespace, which owns no other namespace. */
static const int keep_caps[] = {
    CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID,
    CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_SETFCAP, CAP_AUDIT_WRITE,
};

enum spawn_stage { STAGE_NONE = 0, STAGE_EXEC, STAGE_CHDIR, STAGE_CONFINE, STAGE_STDIO };

static uint64_t g_nofile = 65536;

/* The child's stack (g_stack, CHILD_STACK): one, reused (one spawn at a
 * time: the loop thread waits for each child to exec). Its pages are touched
 * by one call chain of system call wrappers and a PATH_MAX buffer. */

/* The signals hutch-init does not leave at SIG_DFL (SIGPIPE ignored, libuv's
 * SIGCHLD handler), read once at the first spawn, when the agent loop has
 * installed its handlers. A handler installed later must be added here. */
static sigset_t g_sig_changed;
static bool g_sig_known;

void spawn_set_nofile(uint64_t nofile)
{
    g_nofile = nofile;
}

static uint32_t g_slice_us;

void spawn_set_slice(uint64_t slice_us)
{
    g_slice_us = (uint32_t)slice_us;
}

static int g_cpu_cgroup_fd = -1;

void spawn_set_cpu_cgroup(int fd)
{
    g_cpu_cgroup_fd = fd;
}

struct spawn_child;
static int child_main(void *arg);

/* The spawner thread (see the top of this file). state: SP_OFF until
 * spawn_prepare starts it, SP_READY once it is in the sandbox's cpu
 * cgroup (SP_FAILED if it could not get there: then it has ended). job is
 * the loop thread's request, cleared by the spawner once the clone
 * returned (the child exec'd or exited), with pid and err set. */
enum { SP_OFF, SP_STARTING, SP_READY, SP_FAILED };
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state;
    struct spawn_child *job;
    pid_t pid;
    int err;
} g_spawner = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

#define CHILD_STACK (128u * 1024u)
static void *g_stack;

static void *spawner_main(void *arg)
{
    (void)arg;
    prctl(PR_SET_NAME, "hutch-spawner", 0, 0, 0);
    bool moved = write(g_cpu_cgroup_fd, "0", 1) == 1;
    pthread_mutex_lock(&g_spawner.mu);
    g_spawner.state = moved ? SP_READY : SP_FAILED;
    pthread_cond_broadcast(&g_spawner.cv);
    while (moved) {
        while (!g_spawner.job)
            pthread_cond_wait(&g_spawner.cv, &g_spawner.mu);
        struct spawn_child *c = g_spawner.job;
        pthread_mutex_unlock(&g_spawner.mu); /* the child takes no lock; none is held while it runs */
        pid_t pid = clone(child_main, (char *)g_stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, c);
        int err = errno;
        pthread_mutex_lock(&g_spawner.mu);
        g_spawner.pid = pid;
        g_spawner.err = err;
        g_spawner.job = NULL;
        pthread_cond_broadcast(&g_spawner.cv);
    }
    pthread_mutex_unlock(&g_spawner.mu);
    return NULL;
}

/* Starts the spawner, once, with every signal blocked (it never unblocks
 * one: no handler of hutch-init runs on it, and its children start with all
 * blocked, as the loop thread's did). Does not wait for its move: until it
 * is ready, children move themselves. */
static void spawner_start(void)
{
    if (g_cpu_cgroup_fd < 0 || g_spawner.state != SP_OFF)
        return;
    pthread_attr_t a;
    pthread_t t;
    sigset_t all, old;
    if (pthread_attr_init(&a) != 0)
        return;
    pthread_attr_setstacksize(&a, 64u * 1024u);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    g_spawner.state = SP_STARTING;
    if (pthread_create(&t, &a, spawner_main, NULL) != 0)
        g_spawner.state = SP_FAILED;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&a);
}

/* Whether children are cloned by the spawner (already in the sandbox's cpu cgroup). */
static bool spawn_by_spawner(void)
{
    pthread_mutex_lock(&g_spawner.mu);
    bool ready = g_spawner.state == SP_READY;
    pthread_mutex_unlock(&g_spawner.mu);
    return ready;
}

/* The clone, on the spawner when it is ready, else here; returns the pid or
 * -1 with *err set. */
static pid_t clone_child(struct spawn_child *c, bool by_spawner, int *err)
{
    if (!by_spawner) {
        pid_t pid = clone(child_main, (char *)g_stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, c);
        *err = errno;
        return pid;
    }
    pthread_mutex_lock(&g_spawner.mu);
    g_spawner.job = c;
    pthread_cond_broadcast(&g_spawner.cv);
    while (g_spawner.job)
        pthread_cond_wait(&g_spawner.cv, &g_spawner.mu);
    pid_t pid = g_spawner.pid;
    *err = g_spawner.err;
    pthread_mutex_unlock(&g_spawner.mu);
    return pid;
}

static bool cap_kept(int cap)
{
    for (size_t i = 0; i < HX_ARRAY_LEN(keep_caps); i++)
        if (keep_caps[i] == cap)
            return true;
    return false;
}

int spawn_prepare(struct hx_err *e)
{
    for (int cap = 0; cap <= 63; cap++) {
        if (cap_kept(cap))
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL)
                break; /* past the kernel's last capability */
            return hx_fail(e, errno, "drop capability %d from the bounding set: %m", cap);
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        return hx_fail(e, errno, "clear the ambient capabilities: %m");
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) < 0)
        return hx_fail(e, errno, "capget: %m");
    data[0].inheritable = data[1].inheritable = 0;
    if (syscall(SYS_capset, &hdr, data) < 0)
        return hx_fail(e, errno, "clear the inheritable capabilities: %m");
    g_stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (g_stack == MAP_FAILED) {
        g_stack = NULL;
        return hx_fail(e, errno, "mmap the spawn stack: %m");
    }
    /* Last: the spawner inherits the capability sets made above. */
    spawner_start();
    return 0;
}

/* What the child reads (the request, its stdio) and writes (how it failed). */
struct spawn_child {
    const struct spawn_req *r;
    const int *stdio;
    const char *path;      /* the PATH to search, from the spawn's environment */
    const char **sh_argv;  /* {"/bin/sh", NULL (the file), argv[1..], NULL}: a script without #! */
    int stage, err;        /* written by the child when a step fails */
    bool in_cpu_cgroup;    /* cloned by the spawner: already in the sandbox's cpu cgroup */
};

static _Noreturn void child_fail(struct spawn_child *c, int stage, int err)
{
    c->err = err > 0 ? err : EIO;
    c->stage = stage;
    _exit(127);
}

/* Capabilities (the bounding, ambient and inheritable sets are hutch-init's,
 * see spawn_prepare), Landlock, seccomp and ids. */
static int confine(uid_t uid)
{
    int r = landlock_apply();
    if (r < 0)
        return r;
    /* While still CAP_SYS_ADMIN in the user namespace: a filter without
     * no_new_privs, so the image's setuid sudo keeps working. */
    r = seccomp_apply();
    if (r < 0)
        return r;
    gid_t gid = (gid_t)uid; /* app is 1000:1000, root 0:0 */
    if (syscall(SYS_setgroups, 0, NULL) < 0)
        return -errno;
    if (syscall(SYS_setresgid, gid, gid, gid) < 0)
        return -errno;
    /* Leaving uid 0 clears the permitted/effective sets too. */
    if (syscall(SYS_setresuid, uid, uid, uid) < 0)
        return -errno;
    return 0;
}

/* execve, and a file the kernel does not know how to run (no #!) through
 * /bin/sh, as execvpe does. Returns the errno. */
static int exec_one(struct spawn_child *c, const char *file)
{
    execve(file, (char *const *)c->r->argv, c->r->envp);
    if (errno == ENOEXEC) {
        c->sh_argv[1] = file;
        execve("/bin/sh", (char *const *)c->sh_argv, c->r->envp);
        errno = ENOEXEC;
    }
    return errno;
}

/* execvpe's search, over the spawn's PATH: a name with a slash is run as
 * it is; otherwise each PATH entry in turn (empty = the current directory),
 * going on past ENOENT, ENOTDIR, EACCES and the like, and answering EACCES
 * if any entry said so. */
static int exec_search(struct spawn_child *c)
{
    const char *file = c->r->command;
    if (strchr(file, '/'))
        return exec_one(c, file);
    size_t flen = strlen(file);
    if (flen > NAME_MAX)
        return ENAMETOOLONG;
    char buf[PATH_MAX];
    bool eacces = false;
    int err = ENOENT;
    for (const char *p = c->path;; p++) {
        const char *end = strchrnul(p, ':');
        size_t dlen = (size_t)(end - p);
        if (dlen + 1 + flen + 1 <= sizeof buf) {
            memcpy(buf, p, dlen);
            size_t n = dlen;
            if (n > 0)
                buf[n++] = '/';
            memcpy(buf + n, file, flen + 1);
            err = exec_one(c, buf);
            switch (err) {
            case EACCES:
                eacces = true;
                break;
            case ENOENT: case ENOTDIR: case ESTALE: case ENODEV: case ETIMEDOUT: case ENAMETOOLONG:
                break;
            default:
                return err;
            }
        }
        if (!*end)
            break;
        p = end;
    }
    return eacces ? EACCES : err;
}

static int child_main(void *arg)
{
    struct spawn_child *c = arg;
    const struct spawn_req *r = c->r;
    /* hutch-init's handlers and ignored signals back to the default, while
     * every signal is still blocked (inherited from the parent's thread) */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(&g_sig_changed, sig) == 1)
            sigaction(sig, &dfl, NULL); /* PID 1 ignores SIGPIPE; its children must not */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    if (setsid() < 0)
        child_fail(c, STAGE_STDIO, errno);
    /* the new session's controlling terminal: ^C, ^Z and SIGWINCH reach its foreground group */
    if (r->pty && ioctl(c->stdio[0], TIOCSCTTY, 0) < 0)
        child_fail(c, STAGE_STDIO, errno);
    for (int i = 0; i < 3; i++)
        if (dup2(c->stdio[i], i) < 0)
            child_fail(c, STAGE_STDIO, errno);
    /* Everything else is closed at exec. */
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        child_fail(c, STAGE_STDIO, errno);

    /* hutch-init runs at -1000 so the OOM killer spares it; its children
     * must be fair game again (raising the score needs no privilege). */
    int oom = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (oom >= 0) {
        ssize_t w = write(oom, "0", 1);
        (void)w;
        close(oom);
    }

    struct rlimit nofile = {.rlim_cur = g_nofile, .rlim_max = g_nofile};
    struct rlimit core = {0, 0};
    if (setrlimit(RLIMIT_NOFILE, &nofile) < 0 || setrlimit(RLIMIT_CORE, &core) < 0)
        child_fail(c, STAGE_CONFINE, errno);

    /* --sandbox-slice-us (off by default): the sandbox's processes ask for
     * that EEVDF slice, inherited by everything they fork (no reset on
     * fork), meant to let a command's process woken beside another
     * sandbox's busy loop run at its wake-up rather than at the next tick;
     * measured, it did not shorten the wait (docs/performance/fairness.md).
     * Any process may set its own slice anyway, so nothing depends on it;
     * best effort (kernels before 6.12 ignore it). */
    if (g_slice_us)
        (void)hx_sched_slice(0, g_slice_us, false);

    int k = confine(r->uid);
    if (k < 0)
        child_fail(c, STAGE_CONFINE, -k);
    /* After dropping to the user: it may only enter what it may read. */
    if (chdir(r->cwd) < 0)
        child_fail(c, STAGE_CHDIR, errno);
    /* Out of the agents' cpu cgroup (hutch's weight, for the control path:
     * everything above is hutch's code) into the sandbox's, with its quota,
     * right before the sandbox's own code runs; "0" is the writer itself
     * (one thread, and this child has no other: its children and threads
     * follow it). The kernel checks the opener's credentials (real root),
     * so the user may write it. No way to stay behind: a failure fails the
     * spawn. A child of the spawner thread is there already (the top of
     * this file). */
    if (g_cpu_cgroup_fd >= 0 && !c->in_cpu_cgroup && write(g_cpu_cgroup_fd, "0", 1) != 1)
        child_fail(c, STAGE_CONFINE, errno ? errno : EIO);
    child_fail(c, STAGE_EXEC, exec_search(c));
}

/* glibc's default when the environment has no PATH (confstr _CS_PATH) */
static const char *spawn_path(char **envp)
{
    for (char **p = envp; p && *p; p++)
        if (strncmp(*p, "PATH=", 5) == 0)
            return *p + 5;
    return "/bin:/usr/bin";
}

static void learn_signals(void)
{
    sigemptyset(&g_sig_changed);
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction old;
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler != SIG_DFL)
            sigaddset(&g_sig_changed, sig);
    }
    sigaddset(&g_sig_changed, SIGPIPE);
    g_sig_known = true;
}

int spawn_process(const struct spawn_req *r, struct spawn_res *out, struct hx_err *e)
{
    int ret = 0;
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    int ptm = -1, pts = -1;
    autoclose int devnull = -1;
    autofree const char **sh_argv = NULL;
    out->pid = -1;
    out->in_fd = out->out_fd = out->err_fd = -1;
    if (!g_stack)
        return hx_fail(e, EINVAL, "spawn %s: the sandbox is not set up", r->command);
    if (!g_sig_known)
        learn_signals();

    size_t argc = 0;
    while (r->argv[argc])
        argc++;
    sh_argv = calloc(argc + 2, sizeof *sh_argv);
    if (!sh_argv)
        return hx_fail(e, ENOMEM, "out of memory");
    sh_argv[0] = "/bin/sh";
    for (size_t i = 1; i < argc; i++)
        sh_argv[i + 1] = r->argv[i];

    if (!r->pty && (!r->pipe_in || !r->pipe_out || !r->pipe_err)) {
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0)
            return hx_fail(e, errno, "open /dev/null: %m");
    }
    bool pipes = !r->pty;
    if ((pipes && r->pipe_in && pipe2(pin, O_CLOEXEC) < 0) || (pipes && r->pipe_out && pipe2(pout, O_CLOEXEC) < 0) ||
        (pipes && r->pipe_err && pipe2(perr, O_CLOEXEC) < 0)) {
        ret = hx_fail(e, errno, "pipe: %m");
        goto out;
    }
    int stdio[3] = {r->pipe_in ? pin[0] : devnull, r->pipe_out ? pout[1] : devnull,
                    r->pipe_err ? perr[1] : devnull};
    if (r->pty) {
        /* opened here, as root in the sandbox: the child cannot open the
         * slave once it is `app` (its mode is 620, its owner the opener) */
        char name[64];
        ptm = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (ptm < 0 || grantpt(ptm) < 0 || unlockpt(ptm) < 0 || ptsname_r(ptm, name, sizeof name) != 0 ||
            (pts = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
            ret = hx_fail(e, errno, "spawn %s: pseudo-terminal: %m", r->command);
            goto out;
        }
        struct winsize ws = {.ws_row = r->rows, .ws_col = r->cols};
        ioctl(ptm, TIOCSWINSZ, &ws);
        if (r->uid != 0) { /* the shell's terminal is its user's (as login(1) does); best effort */
            int rc = fchown(pts, r->uid, (gid_t)-1);
            (void)rc;
        }
        stdio[0] = stdio[1] = stdio[2] = pts;
    }

    bool by_spawner = spawn_by_spawner();
    struct spawn_child c = {.r = r, .stdio = stdio, .path = spawn_path(r->envp), .sh_argv = sh_argv,
                            .in_cpu_cgroup = by_spawner};
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* Returns once the child has exec'd or exited (CLONE_VFORK). */
    int clone_err = 0;
    pid_t pid = clone_child(&c, by_spawner, &clone_err);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        ret = hx_fail(e, clone_err, "spawn %s: clone: %s", r->command, strerror(clone_err));
        goto out;
    }
    if (c.stage != STAGE_NONE) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        switch (c.stage) {
        case STAGE_CHDIR:
            ret = hx_fail(e, c.err, "spawn %s: chdir %s: %s", r->command, r->cwd, strerror(c.err));
            break;
        case STAGE_EXEC:
            ret = hx_fail(e, c.err, "spawn %s: %s", r->command, strerror(c.err));
            break;
        default:
            ret = hx_fail(e, c.err, "spawn %s: confining the process: %s", r->command, strerror(c.err));
            break;
        }
        goto out;
    }
    out->pid = pid;
    if (r->pty) {
        out->in_fd = fcntl(ptm, F_DUPFD_CLOEXEC, 3);
        out->out_fd = hx_steal_fd(&ptm);
        out->err_fd = -1;
    } else {
        out->in_fd = hx_steal_fd(&pin[1]);
        out->out_fd = hx_steal_fd(&pout[0]);
        out->err_fd = hx_steal_fd(&perr[0]);
    }
out:
    hx_closep(&ptm);
    hx_closep(&pts);
    for (int i = 0; i < 2; i++) {
        hx_closep(&pin[i]);
        hx_closep(&pout[i]);
        hx_closep(&perr[i]);
    }
    return ret;
}
