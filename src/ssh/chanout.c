/* hutch-ssh: one channel's bytes toward the client, without nesting (chanout.h). */
#include "ssh/chanout.h"
#include <errno.h>
#include <string.h>

/* pend to the client, as far as its window goes */
static int flush_pend(struct chanout *o, const struct chanout_ops *ops, void *ud)
{
    while (o->poff < o->plen) {
        uint32_t win = ops->window(ud);
        if (win == 0)
            return 0;
        size_t left = o->plen - o->poff;
        uint32_t n = left < win ? (uint32_t)left : win;
        int w = ops->write(ud, o->pend + o->poff, n, o->pend_stderr);
        if (w < 0)
            return -EPIPE;
        if (w == 0)
            return 0;
        o->poff += (size_t)w < n ? (size_t)w : n;
    }
    o->plen = o->poff = 0;
    return 0;
}

/* Cuts the next frame from rbuf: its payload into pend (SSP_OUT) or to
 * ops->exit (SSP_EXIT). False when no whole frame is there. */
static bool next_frame(struct chanout *o, const struct chanout_ops *ops, void *ud)
{
    struct hx_frame f;
    /* a length past what rbuf holds is refused from the header: waiting for
     * the rest would fill rbuf with a frame that never ends */
    bool too_long = o->rlen >= HX_FRAME_HDR && hx_get_u32(o->rbuf) > SSH_PROC_FRAME_MAX;
    int r = too_long ? -EMSGSIZE : hx_frame_decode(o->rbuf, o->rlen, &f);
    if (r == 0)
        return false;
    if (r < 0) { /* hutchd broke the framing */
        o->rlen = 0;
        o->broken = true;
        return false;
    }
    bool out = f.type == SSP_OUT && (f.chan == 1 || f.chan == 2) && f.len;
    if (out) {
        memcpy(o->pend, f.payload, f.len);
        o->plen = f.len;
        o->poff = 0;
        o->pend_stderr = f.chan == 2;
    }
    /* the frame leaves rbuf before anything else runs: the exit callback
     * below, or a write (and whatever libssh calls meanwhile) later */
    uint8_t exit_json[256];
    size_t exit_len = f.type == SSP_EXIT && f.len < sizeof exit_json ? f.len : 0;
    if (exit_len)
        memcpy(exit_json, f.payload, exit_len);
    bool is_exit = f.type == SSP_EXIT;
    memmove(o->rbuf, o->rbuf + r, o->rlen - (size_t)r);
    o->rlen -= (size_t)r;
    if (is_exit)
        ops->exit(ud, exit_json, exit_len);
    return true;
}

int chanout_pump(struct chanout *o, const struct chanout_ops *ops, void *ud)
{
    if (o->sending)
        return 0; /* called from inside a write below: that loop carries on */
    o->sending = true;
    int r = 0;
    for (;;) {
        r = flush_pend(o, ops, ud);
        if (r < 0 || o->plen || !o->framed || !next_frame(o, ops, ud))
            break;
    }
    o->sending = false;
    return r;
}
