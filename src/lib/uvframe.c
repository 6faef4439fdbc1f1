/* Frame writer for libuv streams (see uvframe.h). */
#include "lib/uvframe.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
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

struct frame_write_fd {
    uv_write_t req;
    uv_pipe_t *fdh;
    void (*on_fail)(uv_stream_t *s, int status);
    size_t n;
    bool scrub;
    uint8_t data[];
};

static void on_fdh_closed(uv_handle_t *h)
{
    free(h);
}

static void fdh_release(uv_pipe_t *h)
{
    if (h)
        uv_close((uv_handle_t *)h, on_fdh_closed);
}

static void on_frame_fd_written(uv_write_t *req, int status)
{
    struct frame_write_fd *w = (struct frame_write_fd *)req;
    if (status < 0 && status != UV_ECANCELED && w->on_fail)
        w->on_fail(req->handle, status);
    fdh_release(w->fdh); /* our copy: the peer has its own from the write on */
    if (w->scrub)
        explicit_bzero(w->data, w->n);
    free(w);
}

int hx_uv_send_frame_fd(uv_stream_t *s, uint16_t type, uint32_t chan, const void *data, size_t len, bool scrub,
                        uv_pipe_t *fdh, void (*on_fail)(uv_stream_t *s, int status))
{
    if (len > HX_FRAME_MAX) {
        fdh_release(fdh);
        return UV_EMSGSIZE;
    }
    struct frame_write_fd *w = malloc(sizeof *w + HX_FRAME_HDR + len);
    if (!w) {
        fdh_release(fdh);
        return UV_ENOMEM;
    }
    w->fdh = fdh;
    w->on_fail = on_fail;
    w->n = HX_FRAME_HDR + len;
    w->scrub = scrub;
    hx_frame_hdr_encode(w->data, type, chan, (uint32_t)len);
    if (len)
        memcpy(w->data + HX_FRAME_HDR, data, len);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->n);
    int r = uv_write2(&w->req, s, &b, 1, (uv_stream_t *)fdh, on_frame_fd_written);
    if (r < 0) {
        fdh_release(fdh);
        if (scrub)
            explicit_bzero(w->data, w->n);
        free(w);
    }
    return r;
}

uv_pipe_t *hx_uv_fd_handle(uv_loop_t *loop, int fd)
{
    uv_pipe_t *h = malloc(sizeof *h);
    if (!h || uv_pipe_init(loop, h, 0) < 0) {
        free(h);
        close(fd);
        return NULL;
    }
    if (uv_pipe_open(h, fd) < 0) {
        close(fd);
        uv_close((uv_handle_t *)h, on_fdh_closed);
        return NULL;
    }
    return h;
}

uv_pipe_t *hx_uv_take_fd(uv_pipe_t *p)
{
    if (uv_pipe_pending_count(p) <= 0)
        return NULL;
    uv_pipe_t *h = malloc(sizeof *h);
    if (!h || uv_pipe_init(p->loop, h, 0) < 0) {
        free(h);
        return NULL;
    }
    if (uv_accept((uv_stream_t *)p, (uv_stream_t *)h) < 0) {
        uv_close((uv_handle_t *)h, on_fdh_closed); /* uv_accept closed the descriptor */
        return NULL;
    }
    return h;
}

unsigned hx_uv_drop_fds(uv_pipe_t *p)
{
    unsigned n = 0;
    while (uv_pipe_pending_count(p) > 0) {
        uv_pipe_t *h = hx_uv_take_fd(p);
        if (!h)
            break;
        fdh_release(h);
        n++;
    }
    return n;
}
