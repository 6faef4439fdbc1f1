/* Confinement of hutch's unprivileged helper processes (hutch-proxy,
 * hutch-ingress), which parse bytes from sandboxes and browsers: chroot,
 * drop to an unprivileged uid/gid, no_new_privs, non-dumpable, and a seccomp
 * allowlist in which every other system call fails with ENOSYS. */
#pragma once
#include <stdbool.h>
#include <sys/types.h>

struct hx_confine {
    const char *who;              /* "hutch-proxy": names the process in messages */
    const char *root;             /* chroot here, or NULL */
    uid_t uid;
    gid_t gid;
    const char *const *extra;     /* system calls beyond the common set (libuv, glibc, OpenSSL), NULL-terminated */
    bool inet_sockets;            /* socket(AF_INET / AF_INET6, ...): new TCP/UDP sockets, nothing else */
};

/* Returns 0, or -1 with the reason on stderr. */
int hx_confine(const struct hx_confine *c);
