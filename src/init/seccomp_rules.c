/* The seccomp filter for user processes: Docker's default profile turned into
 * a deny list (default allow, EPERM), plus hutch's extras. Built at build
 * time (seccomp_gen.c) into the BPF program hutch-init loads (seccomp.c). */
#include "init/seccomp_rules.h"
#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

#ifndef TIOCLINUX
#define TIOCLINUX 0x541C
#endif
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef AF_ALG
#define AF_ALG 38
#endif

/* Denied outright with EPERM. Names unknown to an architecture are skipped. */
static const char *const denied[] = {
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "clock_settime64", "create_module",
    "delete_module", "finit_module", "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl",
    "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount", "mount_setattr",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "move_pages", "name_to_handle_at",
    "nfsservctl", "open_by_handle_at", "perf_event_open", "pivot_root", "process_vm_readv",
    "process_vm_writev", "ptrace", "query_module", "quotactl", "quotactl_fd", "reboot", "request_key",
    "set_mempolicy", "set_mempolicy_home_node", "setns", "settimeofday", "stime", "swapon", "swapoff",
    "sysfs", "_sysctl", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "syslog", "open_tree_attr", "listmount",
    "statmount", "fanotify_init", "lsm_set_self_attr",
};

static const uint64_t clone_ns_flags[] = {
    CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
};

/* personality(2): allow only 0 (PER_LINUX), 0x8 (PER_LINUX32), 0x20000
 * (UNAME26), 0x20008 and 0xffffffff (query), as Docker does.
 * libseccomp cannot AND two comparisons of the same argument, so the
 * complement is written as masked-equality rules: with O = the bits outside
 * 0x20008, x is denied iff x&O is neither 0 nor all of O (then some bit of O
 * is set and the next one, cyclically, clear), or x&O == O but bit 3 or 17
 * is clear, or x has bits above 32. */
static int add_personality_rules(scmp_filter_ctx ctx)
{
    const uint32_t keep = 0x20008u;
    int bits[32], nb = 0, r;
    for (int b = 0; b < 32; b++)
        if (!(keep & (1u << b)))
            bits[nb++] = b;
    for (int i = 0; i < nb; i++) {
        uint64_t set = 1ull << bits[i], clear = 1ull << bits[(i + 1) % nb];
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 1,
                             SCMP_A0(SCMP_CMP_MASKED_EQ, set | clear, set));
        if (r < 0)
            return r;
    }
    uint64_t others = 0xffffffffull & ~(uint64_t)keep;
    uint64_t keep_bits[] = {0x8, 0x20000};
    for (size_t i = 0; i < LEN(keep_bits); i++) {
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 1,
                             SCMP_A0(SCMP_CMP_MASKED_EQ, others | keep_bits[i], others));
        if (r < 0)
            return r;
    }
    return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(personality), 1,
                            SCMP_A0(SCMP_CMP_GT, 0xffffffffull));
}

static int add_rules(scmp_filter_ctx ctx, const char **what)
{
    int r;
    for (size_t i = 0; i < LEN(denied); i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* libseccomp too old to know it: nothing to resolve, nothing to block */
        *what = denied[i];
        if ((r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0)) < 0)
            return r;
    }
    /* ENOSYS, not EPERM: glibc then falls back to clone(), where the
     * namespace flags can be inspected (clone3 passes them in memory). */
    *what = "clone3";
    if ((r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)) < 0)
        return r;
    *what = "clone";
    for (size_t i = 0; i < LEN(clone_ns_flags); i++) {
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                             SCMP_A0(SCMP_CMP_MASKED_EQ, clone_ns_flags[i], clone_ns_flags[i]));
        if (r < 0)
            return r;
    }
    /* TIOCSTI/TIOCLINUX: typing into a terminal someone else reads. The
     * command is an int: compare the low 32 bits only. */
    static const unsigned long ioctls[] = {TIOCSTI, TIOCLINUX};
    *what = "ioctl";
    for (size_t i = 0; i < LEN(ioctls); i++) {
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                             SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, ioctls[i]));
        if (r < 0)
            return r;
    }
    /* AF_VSOCK reaches the hypervisor, AF_ALG is a kernel crypto attack
     * surface. On i386 libseccomp also denies socketcall(SYS_SOCKET), whose
     * arguments it cannot inspect: 32-bit programs must use socket(2). */
    static const int families[] = {AF_VSOCK, AF_ALG};
    *what = "socket";
    for (size_t i = 0; i < LEN(families); i++) {
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1,
                             SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)families[i]));
        if (r < 0)
            return r;
    }
    *what = "personality";
    return add_personality_rules(ctx);
}

scmp_filter_ctx seccomp_rules_build(int *err, const char **what)
{
    *what = "seccomp_init";
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        *err = -ENOMEM;
        return NULL;
    }
    /* Native x86_64 plus the 32-bit and x32 ABIs, which have their own
     * syscall numbers and would otherwise bypass every rule. Calls from an
     * ABI missing from the filter are killed by libseccomp's default
     * bad-arch action. */
    static const uint32_t arches[] = {SCMP_ARCH_X86, SCMP_ARCH_X32};
    int r = 0;
    *what = "seccomp_arch_add";
    for (size_t i = 0; i < LEN(arches) && r >= 0; i++) {
        r = seccomp_arch_add(ctx, arches[i]);
        if (r == -EEXIST)
            r = 0;
    }
    if (r >= 0)
        r = add_rules(ctx, what);
    if (r < 0) {
        seccomp_release(ctx);
        *err = r;
        return NULL;
    }
    return ctx;
}
