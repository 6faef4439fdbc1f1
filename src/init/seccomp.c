/* Applying the seccomp filter of user processes (rules: seccomp_rules.c),
 * whose BPF program the build generated once (seccomp_gen.c): nothing is
 * compiled at run time and hutch-init does not link libseccomp. Applied
 * between fork and exec without no_new_privs (so setuid sudo works), which
 * needs CAP_SYS_ADMIN in the sandbox's user namespace. */
#include "init/init.h"
#include "init/seccomp_bpf.h"
#include <linux/seccomp.h>
#include <sys/syscall.h>
#include <unistd.h>

int seccomp_apply(void)
{
    struct sock_fprog prog = {.len = seccomp_bpf_len, .filter = (struct sock_filter *)seccomp_bpf_insns};
    /* No SECCOMP_FILTER_FLAG_* and no PR_SET_NO_NEW_PRIVS: allowed because
     * the caller holds CAP_SYS_ADMIN in its (the sandbox's) user namespace. */
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return -errno;
    return 0;
}
