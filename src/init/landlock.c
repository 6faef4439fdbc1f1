/* Landlock, a second layer under the capability set and seccomp: sandbox
 * processes may not create device nodes (also refused for lack of
 * CAP_MKNOD). Not used: ABI 6's signal and abstract-socket scoping. Each
 * spawn enters its own domain, so scoping would forbid `kill` between
 * processes of two commands of the same sandbox; PID 1 already ignores
 * signals from inside, and the sandbox has its own network namespace for
 * abstract sockets. */
#include <errno.h>
#include <linux/landlock.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "init/init.h"

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_restrict_self 446
#endif
/* The first member of the kernel's struct landlock_ruleset_attr (ABI 1). */
struct hx_ruleset_attr {
    uint64_t handled_access_fs;
};

static int abi = -1;

void landlock_probe(void)
{
    long v = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    abi = v > 0 ? (int)v : 0;
}

int landlock_abi(void)
{
    return abi;
}

/* Between fork and exec: system calls only. Returns 0 when the kernel has
 * no Landlock (the other layers stand alone). */
int landlock_apply(void)
{
    if (abi <= 0)
        return 0;
    struct hx_ruleset_attr attr = {
        /* handled and granted nowhere: denied everywhere */
        .handled_access_fs = LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_BLOCK,
    };
    int fd = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (fd < 0)
        return -errno;
    /* Allowed without no_new_privs: we still hold CAP_SYS_ADMIN in the
     * sandbox's user namespace here (setuid sudo must keep working). */
    long r = syscall(SYS_landlock_restrict_self, fd, 0);
    int err = errno;
    close(fd);
    return r < 0 ? -err : 0;
}
