/* Agent frame encoding and bounded decoding (see wire.h). */
#include "lib/wire.h"
#include <errno.h>
#include <string.h>

void hx_frame_hdr_encode(uint8_t out[HX_FRAME_HDR], uint16_t type, uint32_t chan, uint32_t len)
{
    hx_put_u32(out, len);
    out[4] = (uint8_t)type;
    out[5] = (uint8_t)(type >> 8);
    out[6] = 0;
    out[7] = 0;
    hx_put_u32(out + 8, chan);
}

int hx_frame_decode(const uint8_t *p, size_t n, struct hx_frame *f)
{
    if (n < HX_FRAME_HDR)
        return 0;
    uint32_t len = hx_get_u32(p);
    if (len > HX_FRAME_MAX)
        return -EMSGSIZE;
    uint16_t type = (uint16_t)(p[4] | p[5] << 8);
    uint16_t flags = (uint16_t)(p[6] | p[7] << 8);
    if (type == 0 || flags != 0)
        return -EPROTO;
    if (n - HX_FRAME_HDR < len)
        return 0;
    f->len = len;
    f->type = type;
    f->flags = flags;
    f->chan = hx_get_u32(p + 8);
    f->payload = p + HX_FRAME_HDR;
    return (int)(HX_FRAME_HDR + len);
}

int hx_frames_take(struct hx_frame_rd *r, bool (*on_frame)(void *ctx, const struct hx_frame *f), void *ctx)
{
    size_t off = 0;
    for (;;) {
        struct hx_frame f;
        int n = hx_frame_decode(r->buf + off, r->len - off, &f);
        if (n == 0 && off == 0 && r->len == r->cap)
            n = -EMSGSIZE; /* full, and still no whole frame */
        if (n < 0)
            return n;
        if (n == 0)
            break;
        off += (size_t)n;
        if (!on_frame(ctx, &f))
            return 1;
    }
    memmove(r->buf, r->buf + off, r->len - off);
    r->len -= off;
    return 0;
}
