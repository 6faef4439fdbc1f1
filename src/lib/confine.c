/* See confine.h. */
#include "lib/confine.h"
#include <errno.h>
#include <grp.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "lib/sanitizer.h"

/* What libuv, glibc's malloc, OpenSSL and hutch's own event-loop code need,
 * nothing more: no open, no exec, no new sockets (see inet_sockets). */
static const char *const common[] = {
    "read", "write", "readv", "writev", "close", "recvfrom", "sendto", "recvmsg", "sendmsg", "accept4",
    "setsockopt", "getsockopt", "getsockname", "getpeername", "shutdown", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "fcntl", "ioctl", "clock_gettime", "clock_getres",
    "gettimeofday", "nanosleep", "clock_nanosleep", "mmap", "munmap", "mremap", "brk", "madvise", "mprotect",
    "futex", "exit", "exit_group", "getpid", "gettid", "tgkill", "rt_sigaction", "rt_sigprocmask",
    "rt_sigreturn", "restart_syscall", "getrandom", "eventfd2", "pipe2", "fstat", "newfstatat", "statx",
    "lseek", "dup", "dup3", "getrlimit", "prlimit64", "sched_yield", "uname", "getuid", "geteuid", "getgid",
    "getegid", "rseq", "set_robust_list",
    "sigaltstack", /* glibc and ASan read the signal stack at thread and process exit */
    NULL,
};

static int allow_names(scmp_filter_ctx ctx, const char *const *names)
{
    int r = 0;
    for (size_t i = 0; names && names[i] && r == 0; i++) {
        int nr = seccomp_syscall_resolve_name(names[i]);
        if (nr != __NR_SCMP_ERROR) /* a name this architecture lacks */
            r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    }
    return r;
}

#ifdef HX_LEAK_CHECKED
/* LeakSanitizer checks at exit by tracing the process from a helper thread,
 * which a confined process forbids (not dumpable, no ptrace in its filter):
 * every exit then printed "LeakSanitizer has encountered a fatal error" and
 * checked nothing. Registered after the sanitizer's own exit hook, this runs
 * before it and ends the process with its status; ASan's other checks
 * (overflows, use after free) still run for its whole life. */
static void exit_without_leak_check(int status, void *unused)
{
    (void)unused;
    fflush(NULL);
    _exit(status);
}
#endif

int hx_confine(const struct hx_confine *c)
{
#ifdef HX_LEAK_CHECKED
    on_exit(exit_without_leak_check, NULL);
#endif
    if (c->root && (chroot(c->root) < 0 || chdir("/") < 0)) {
        fprintf(stderr, "%s: chroot %s: %s\n", c->who, c->root, strerror(errno));
        return -1;
    }
    if (setgroups(0, NULL) < 0 || setresgid(c->gid, c->gid, c->gid) < 0 || setresuid(c->uid, c->uid, c->uid) < 0) {
        fprintf(stderr, "%s: drop privileges: %s\n", c->who, strerror(errno));
        return -1;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
        fprintf(stderr, "%s: prctl: %s\n", c->who, strerror(errno));
        return -1;
    }
    /* ENOSYS, not a kill: glibc then takes a fallback or reports an error. */
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(ENOSYS));
    if (!ctx) {
        fprintf(stderr, "%s: seccomp_init failed\n", c->who);
        return -1;
    }
    int r = allow_names(ctx, common);
    if (r == 0)
        r = allow_names(ctx, c->extra);
    if (r == 0 && c->inet_sockets)
        r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, AF_INET));
    if (r == 0 && c->inet_sockets)
        r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, AF_INET6));
    if (r == 0)
        r = seccomp_load(ctx);
    seccomp_release(ctx);
    if (r < 0) {
        fprintf(stderr, "%s: seccomp: %s\n", c->who, strerror(-r));
        return -1;
    }
    return 0;
}
