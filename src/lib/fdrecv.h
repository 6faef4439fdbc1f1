/* Reading a stream socket that carries descriptors (SCM_RIGHTS) beside its
 * bytes, for the programs that read with plain read(2) loops rather than
 * libuv (hutch-init's fs worker, hutch-ssh). */
#pragma once
#include <stddef.h>
#include <sys/types.h>

/* recvmsg of up to n bytes into buf; each descriptor that came along (at
 * most 8 per call; the kernel closes any beyond) is handed to keep(fd, ud),
 * close-on-exec, and becomes keep's to own or close. Returns recvmsg's
 * result (-1 with errno). */
ssize_t hx_recv_fds(int sock, void *buf, size_t n, void (*keep)(int fd, void *ud), void *ud);
