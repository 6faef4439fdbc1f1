/* hutchd <-> hutch-proxy control channel: wire.h frames over a socketpair.
 * hutchd is trusted by the proxy; the proxy is NOT trusted by hutchd (it
 * parses sandbox traffic and may be compromised), so hutchd bounds and
 * validates everything it receives (docs/network.md). */
#pragma once

/* fds the proxy inherits (hutchd creates them; the proxy needs no privilege) */
#define PX_FD_CTL 3       /* control socketpair */
#define PX_FD_TCP4 4      /* transparent TCP listener, 0.0.0.0:proxy_port */
#define PX_FD_TCP6 5      /* [::]:proxy_port, v6only */
#define PX_FD_DNSU4 6     /* DNS over UDP */
#define PX_FD_DNSU6 7
#define PX_FD_DNST4 8     /* DNS over TCP (listening) */
#define PX_FD_DNST6 9

enum px_msg {
    /* hutchd -> proxy */
    PX_CONFIG = 1,    /* JSON {"pool4": "a.b.c.d/len", "pool6": "x::/len", "local": ["addr", ...]} */
    PX_POLICY = 2,    /* JSON {"id", "ip4", "ip6", "allow": [str] | null (unrestricted)} */
    PX_FORGET = 3,    /* payload: sandbox id */
    PX_RESOLVED = 4,  /* chan = request; u8 n4, n4 x 4 bytes, u8 n6, n6 x 16 bytes (0, 0: no such name or
                       * no address, cached; empty payload: lookup failed, SERVFAIL, not cached) */
    PX_CA = 5,        /* secrets: JSON {"cert": PEM, "key": PEM}, the per-install CA for interception */
    /* secrets: PX_POLICY also carries "secrets": [{"name", "placeholder", "value", "hosts": [str]}] */

    /* proxy -> hutchd */
    PX_AUDIT = 16,    /* JSON {"sandbox", "time_ms", "proto", "host", "ip", "port", "verdict", "reason"}; with
                       * "lost": N when N records of that sandbox could not be sent before this one */
    PX_BYTES = 17,    /* JSON {"sandbox", "host", "ip", "port", "up", "down", "closed": bool}; byte deltas */
    PX_RESOLVE = 18,  /* chan = request; payload: a normalized host name */
    PX_READY = 20,    /* no payload: confined and serving (sent once, right before the event loop runs) */
    PX_SUBST = 19,    /* secrets: JSON {"sandbox", "time_ms", "secret", "host", "port", "method", "path"}; never a value
                       * ("lost" as in PX_AUDIT) */
};

#define PX_RESOLVE_MAX 8  /* addresses per family in a PX_RESOLVED */
