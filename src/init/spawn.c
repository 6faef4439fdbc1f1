/* Starting a user process: fork, confine (capabilities, seccomp, ids) and
 * exec, reporting a failed exec back to the caller through a CLOEXEC pipe. */
#include "init/init.h"
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Docker's default capability set: meaningful only in the sandbox's own
 * user namespace, which owns no other namespace. */
static const int keep_caps[] = {
    CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID,
    CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_SETFCAP, CAP_AUDIT_WRITE,
};

enum spawn_stage { STAGE_EXEC = 0, STAGE_CHDIR = 1, STAGE_CONFINE = 2, STAGE_STDIO = 3 };

static uint64_t g_nofile = 65536;

void spawn_set_nofile(uint64_t nofile)
{
    g_nofile = nofile;
}

static int g_cpu_cgroup_fd = -1;

void spawn_set_cpu_cgroup(int fd)
{
    g_cpu_cgroup_fd = fd;
}

static bool cap_kept(int cap)
{
    for (size_t i = 0; i < HX_ARRAY_LEN(keep_caps); i++)
        if (keep_caps[i] == cap)
            return true;
    return false;
}

/* Child side, between fork and exec: writes {stage, errno} to report fd and
 * exits on failure. Everything here is async-signal-safe. */
static _Noreturn void child_fail(int report, int stage, int err)
{
    int msg[2] = {stage, err};
    ssize_t n = write(report, msg, sizeof msg);
    (void)n;
    _exit(127);
}

static int confine(uid_t uid)
{
    for (int cap = 0; cap <= 63; cap++) {
        if (cap_kept(cap))
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL)
                break; /* past the kernel's last capability */
            return -errno;
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        return -errno;
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) < 0)
        return -errno;
    data[0].inheritable = data[1].inheritable = 0;
    if (syscall(SYS_capset, &hdr, data) < 0)
        return -errno;
    int r = landlock_apply();
    if (r < 0)
        return r;
    /* While still CAP_SYS_ADMIN in the user namespace: a filter without
     * no_new_privs, so the image's setuid sudo keeps working. */
    r = seccomp_apply();
    if (r < 0)
        return r;
    gid_t gid = (gid_t)uid; /* app is 1000:1000, root 0:0 */
    if (setgroups(0, NULL) < 0)
        return -errno;
    if (setresgid(gid, gid, gid) < 0)
        return -errno;
    /* Leaving uid 0 clears the permitted/effective sets too. */
    if (setresuid(uid, uid, uid) < 0)
        return -errno;
    return 0;
}

static _Noreturn void child_main(const struct spawn_req *r, int stdio[3], int report)
{
    if (setsid() < 0)
        child_fail(report, STAGE_STDIO, errno);
    /* the new session's controlling terminal: ^C, ^Z and SIGWINCH reach its foreground group */
    if (r->pty && ioctl(stdio[0], TIOCSCTTY, 0) < 0)
        child_fail(report, STAGE_STDIO, errno);
    for (int i = 0; i < 3; i++)
        if (dup2(stdio[i], i) < 0)
            child_fail(report, STAGE_STDIO, errno);
    /* Everything else is closed at exec; report closes there too, which
     * tells the parent the exec succeeded. */
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        child_fail(report, STAGE_STDIO, errno);

    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* PID 1 ignores SIGPIPE; its children must not */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

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
        child_fail(report, STAGE_CONFINE, errno);

    int c = confine(r->uid);
    if (c < 0)
        child_fail(report, STAGE_CONFINE, -c);
    /* After dropping to the user: it may only enter what it may read. */
    if (chdir(r->cwd) < 0)
        child_fail(report, STAGE_CHDIR, errno);
    /* Out of the agents' cpu cgroup (hutch's weight, for the control path:
     * everything above is hutch's code) into the sandbox's, with its quota,
     * right before the sandbox's own code runs; "0" is the writer itself
     * (one thread, and this child has no other: its children and threads
     * follow it).
     * The kernel checks the opener's credentials (real root), so the user
     * may write it. No way to stay behind: a failure fails the spawn. */
    if (g_cpu_cgroup_fd >= 0 && write(g_cpu_cgroup_fd, "0", 1) != 1)
        child_fail(report, STAGE_CONFINE, errno ? errno : EIO);
    /* execvpe searches the PATH of environ, so make it the spawn's. */
    environ = r->envp;
    execvpe(r->command, (char *const *)r->argv, r->envp);
    child_fail(report, STAGE_EXEC, errno);
}

int spawn_process(const struct spawn_req *r, struct spawn_res *out, struct hx_err *e)
{
    int ret = 0;
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1}, report[2] = {-1, -1};
    int ptm = -1, pts = -1;
    autoclose int devnull = -1;
    out->pid = -1;
    out->in_fd = out->out_fd = out->err_fd = -1;

    if (!r->pty && (!r->pipe_in || !r->pipe_out || !r->pipe_err)) {
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0)
            return hx_fail(e, errno, "open /dev/null: %m");
    }
    bool pipes = !r->pty;
    if ((pipes && r->pipe_in && pipe2(pin, O_CLOEXEC) < 0) || (pipes && r->pipe_out && pipe2(pout, O_CLOEXEC) < 0) ||
        (pipes && r->pipe_err && pipe2(perr, O_CLOEXEC) < 0) || pipe2(report, O_CLOEXEC) < 0) {
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

    pid_t pid = fork();
    if (pid < 0) {
        ret = hx_fail(e, errno, "spawn %s: fork: %m", r->command);
        goto out;
    }
    if (pid == 0) {
        close(report[0]);
        child_main(r, stdio, report[1]);
    }
    close(report[1]);
    report[1] = -1;

    /* Blocks only until the child has exec'd (or failed to): a few ms. */
    int msg[2];
    ssize_t n;
    do
        n = read(report[0], msg, sizeof msg);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof msg) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        int err = msg[1] > 0 ? msg[1] : EIO;
        switch (msg[0]) {
        case STAGE_CHDIR:
            ret = hx_fail(e, err, "spawn %s: chdir %s: %s", r->command, r->cwd, strerror(err));
            break;
        case STAGE_EXEC:
            ret = hx_fail(e, err, "spawn %s: %s", r->command, strerror(err));
            break;
        default:
            ret = hx_fail(e, err, "spawn %s: confining the process: %s", r->command, strerror(err));
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
        hx_closep(&report[i]);
    }
    return ret;
}
