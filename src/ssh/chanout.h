/* hutch-ssh: one channel's bytes toward the client (src/ssh/main.c).
 *
 * A process channel's socket carries SSP_* frames (ctl.h), a forward's raw
 * bytes; either way the bytes wait here until the client's window takes
 * them. libssh runs its poll loop from inside its own calls (ssh_channel_write
 * flushes, and would wait for window; the channel read calls poll too), and
 * that loop calls hutch-ssh's callbacks again, for this very channel among
 * others. So the pump does not nest: a call made while it runs returns at
 * once, and the running one (or the next turn of the loop) carries on. It
 * never writes past the client's window, so libssh never waits for one. And
 * a frame leaves the read buffer before its bytes go out, so nothing that
 * runs meanwhile can see it twice. The code knows no libssh (ops), so a
 * unit test can drive it with partial writes and nested calls
 * (tests/unit/test_chanout.c). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lib/wire.h"
#include "ssh/ctl.h"

#define CHANOUT_RBUF (HX_FRAME_HDR + SSH_PROC_FRAME_MAX)  /* bytes of rbuf */
#define CHANOUT_PEND SSH_PROC_FRAME_MAX                   /* bytes of pend */

struct chanout {
    bool framed;          /* SSP frames (a process) rather than raw bytes (a forward) */
    bool sending;         /* chanout_pump is running (further up the stack) */
    bool broken;          /* hutchd broke the framing: nothing more is cut from rbuf */
    uint8_t *rbuf;        /* framed: read from the socket, not cut into frames yet */
    size_t rlen;
    uint8_t *pend;        /* the bytes being handed to the client */
    size_t plen, poff;
    bool pend_stderr;
};

struct chanout_ops {
    /* bytes the client's window takes now */
    uint32_t (*window)(void *ud);
    /* writes p[0..n) (n <= window): bytes taken, 0 for none now, < 0 when
     * the channel is gone; may call chanout_pump again (libssh's loop) */
    int (*write)(void *ud, const uint8_t *p, uint32_t n, bool is_stderr);
    /* an SSP_EXIT frame's JSON (n = 0 for one longer than 255 bytes: no status) */
    void (*exit)(void *ud, const uint8_t *json, size_t n);
};

/* Hands pend, then rbuf's whole frames, to the client while its window has
 * room. Returns 0 (also when it was already running, or the window is
 * shut), or -EPIPE when a write failed (the channel is gone). A frame
 * larger than SSH_PROC_FRAME_MAX or a malformed one sets broken and empties
 * rbuf. */
int chanout_pump(struct chanout *o, const struct chanout_ops *ops, void *ud);

/* Whether the channel's socket may be read now: into rbuf + rlen (framed,
 * CHANOUT_RBUF - rlen bytes) or into pend (raw, then chanout_took). */
static inline bool chanout_can_read(const struct chanout *o)
{
    return !o->sending && o->plen == 0 && !o->broken;
}

/* Raw: n bytes were read into pend. */
static inline void chanout_took(struct chanout *o, size_t n)
{
    o->plen = n;
    o->poff = 0;
    o->pend_stderr = false;
}

/* Nothing left to hand on (the channel may end once its socket did). */
static inline bool chanout_empty(const struct chanout *o)
{
    return !o->sending && o->plen == 0 && (!o->framed || o->rlen == 0);
}
