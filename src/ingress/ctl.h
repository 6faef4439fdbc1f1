/* hutchd <-> hutch-ingress control channel: lib/wire.h frames over a
 * socketpair in libuv IPC mode (file descriptors travel with SCM_RIGHTS).
 * The ingress holds no network capability of its own: hutchd hands it its
 * listening sockets and, per upstream connection, a socket that hutchd
 * connected inside the sandbox's network namespace to the exposed port.
 * hutchd does not trust the ingress (it parses what browsers send): it
 * bounds what it reads and connects only to exposed ports (docs/expose.md). */
#pragma once

#define IG_FD_CTL 3        /* the control socketpair */

enum ig_msg {
    /* hutchd -> ingress */
    IG_CONFIG = 1,     /* JSON {"cert": PEM chain, "key": PEM, "mode": "port"|"host", "base": str,
                          "head_timeout_ms", "upstream_timeout_ms", "listener": bool}; with "listener"
                          (host mode) the shared listening socket travels with the frame */
    IG_ROUTE = 2,      /* JSON {"name", "sandbox", "port": ingress port, "target": int, "listener": bool};
                          port mode: the exposure's own listening socket travels with the frame */
    IG_UNROUTE = 3,    /* payload: the exposure name */
    IG_CONNECTED = 4,  /* chan = request; u32 LE errno; 0: the connected socket travels with the frame */
    IG_GONE = 5,       /* payload: the exposure name; its sandbox stopped: its connections close, its
                          requests get 404 until IG_UNROUTE (IG_ROUTE "gone": true after a restart) */

    /* ingress -> hutchd */
    IG_READY = 16,     /* no payload: confined and serving */
    IG_CONNECT = 17,   /* chan = request; payload: the exposure name */
};

#define IG_NAME_LEN 26     /* base32 of 128 random bits (130 bits of text, 128 of entropy) */
