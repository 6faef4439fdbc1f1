/* A helper's control channel (see ctlchan.h). One per process. */
#include "lib/ctlchan.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static struct {
    uv_pipe_t *p;
    int fd;
    const char *who;
    struct hx_frame_rd rd;
    void (*on_frame)(const struct hx_frame *f);
} g;

int hx_ctl_open(uv_loop_t *loop, uv_pipe_t *p, int fd, bool ipc, const char *who)
{
    g.p = p;
    g.fd = fd;
    g.who = who;
    g.rd.cap = HX_FRAME_HDR + HX_FRAME_MAX;
    if (!(g.rd.buf = malloc(g.rd.cap)))
        return -1;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (uv_pipe_init(loop, p, ipc) < 0 || uv_pipe_open(p, fd) < 0) {
        fprintf(stderr, "%s: no control channel on fd %d\n", who, fd);
        return -1;
    }
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t sugg, uv_buf_t *b)
{
    *b = uv_buf_init((char *)g.rd.buf + g.rd.len, (unsigned)(g.rd.cap - g.rd.len));
}

static bool take(void *ctx, const struct hx_frame *f)
{
    g.on_frame(f);
    return true;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    if (nread < 0) {
        /* hutchd went away: there is nothing to serve for any more */
        fprintf(stderr, "%s: control channel closed, exiting\n", g.who);
        exit(0);
    }
    g.rd.len += (size_t)nread;
    if (hx_frames_take(&g.rd, take, NULL) < 0) {
        fprintf(stderr, "%s: malformed control frame, exiting\n", g.who);
        exit(1);
    }
}

void hx_ctl_read(void (*on_frame)(const struct hx_frame *f))
{
    g.on_frame = on_frame;
    uv_read_start((uv_stream_t *)g.p, on_alloc, on_read);
}

int hx_ctl_ready(uint16_t ready)
{
    uint8_t hdr[HX_FRAME_HDR];
    hx_frame_hdr_encode(hdr, ready, 0, 0);
    return write(g.fd, hdr, sizeof hdr) == (ssize_t)sizeof hdr ? 0 : -1;
}
