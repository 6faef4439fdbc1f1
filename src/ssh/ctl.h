/* hutchd <-> hutch-ssh: one hutch-ssh process per SSH connection, started
 * by hutchd with the accepted TCP socket (fd SSH_FD_CLIENT) and a control
 * socketpair (fd SSH_FD_CTL) carrying lib/wire.h frames; file descriptors
 * travel with SCM_RIGHTS. hutch-ssh holds no network capability and names
 * no sandbox: it asks whether a username is valid, and hutchd binds the
 * connection to that username's sandbox; every later request is for that
 * sandbox only. hutchd bounds and checks everything it reads (docs/ssh.md).
 *
 * Each channel that runs a process gets its own socketpair (SSH_FD framed
 * with lib/wire.h as well, types SSP_*); a forward gets a TCP socket that
 * hutchd connected inside the sandbox's network namespace (raw bytes). */
#pragma once

#define SSH_FD_CTL 3           /* the control socketpair */
#define SSH_FD_CLIENT 4        /* the accepted TCP connection */

enum ssh_msg {
    /* hutchd -> hutch-ssh */
    SS_CONFIG = 1,     /* JSON {"key": host key (OpenSSH PEM), "channels_max": n, "login_timeout_ms": n} (first) */
    SS_AUTH_OK = 2,    /* the username is valid; the connection is now that sandbox's */
    SS_AUTH_NO = 3,    /* u32 LE errno: unknown username (EACCES) or rate-limited (EAGAIN) */
    SS_OPENED = 4,     /* chan = channel; the channel's socket travels with the frame */
    SS_FAILED = 5,     /* chan = channel; u32 LE errno, then a UTF-8 reason */

    /* hutch-ssh -> hutchd */
    SS_AUTH = 16,      /* payload: the username (1..64 bytes) */
    SS_OPEN = 17,      /* chan = channel; JSON {"kind": "shell"|"exec"|"sftp", "command": str (exec),
                          "pty": {"rows", "cols", "term"} or absent} */
    SS_FORWARD = 18,   /* chan = channel; JSON {"host": str, "port": n} (direct-tcpip) */
};

/* On a process channel's socketpair */
enum ssh_proc_msg {
    /* hutch-ssh -> hutchd */
    SSP_IN = 1,        /* bytes for the process's stdin; len 0 = end of stdin */
    SSP_RESIZE = 2,    /* u32 LE rows, u32 LE cols */
    SSP_SIGNAL = 3,    /* a signal name without "SIG" (RFC 4254 6.9) */
    /* hutchd -> hutch-ssh */
    SSP_OUT = 16,      /* chan 1: stdout, 2: stderr; bytes */
    SSP_EXIT = 17,     /* JSON {"code": n, "signal": "TERM" | null}; the socket closes after it */
};

#define SSH_USER_LEN 26        /* base32 of 128 random bits */
#define SSH_PROC_FRAME_MAX (32u * 1024u) /* payload bytes of an SSP_* frame */
