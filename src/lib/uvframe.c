/* Frame writer for libuv streams (see uvframe.h). */
#include "lib/uvframe.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "lib/wire.h"

struct frame_write {
    uv_write_t req;
    void (*on_fail)(uv_stream_t *s, int status);
    size_t n;
    bool scrub;
    uint8_t data[];
};

static void on_frame_written(uv_write_t *req, int status)
{
    struct frame_write *w = (struct frame_write *)req;
    if (status < 0 && status != UV_ECANCELED && w->on_fail)
        w->on_fail(req->handle, status);
    if (w->scrub)
        explicit_bzero(w->data, w->n);
    free(w);
}

int hx_uv_send_frame(uv_stream_t *s, uint16_t type, uint32_t chan, const void *data, size_t len, bool scrub,
                     void (*on_fail)(uv_stream_t *s, int status))
{
    if (len > HX_FRAME_MAX)
        return UV_EMSGSIZE;
    struct frame_write *w = malloc(sizeof *w + HX_FRAME_HDR + len);
    if (!w)
        return UV_ENOMEM;
    w->on_fail = on_fail;
    w->scrub = scrub;
    w->n = HX_FRAME_HDR + len;
    hx_frame_hdr_encode(w->data, type, chan, (uint32_t)len);
    if (len)
        memcpy(w->data + HX_FRAME_HDR, data, len);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->n);
    int r = uv_write(&w->req, s, &b, 1, on_frame_written);
    if (r < 0) {
        if (scrub)
            explicit_bzero(w->data, w->n);
        free(w);
    }
    return r;
}
