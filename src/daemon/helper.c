/* Starting and supervising hutchd's helper processes (see helper.h). */
#include "daemon/helper.h"
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "daemon/log.h"
#include "lib/strparse.h"
#include "lib/uvframe.h"

#define HELPER_FDS_MAX 8

int helper_find(const char *self_dir, const char *dir, const char *name, char *out, size_t cap, struct hx_err *e)
{
    snprintf(out, cap, "%s/%s", self_dir, name);
    if (access(out, X_OK) != 0)
        snprintf(out, cap, "%s/../%s/%s", self_dir, dir, name);
    if (access(out, X_OK) != 0)
        snprintf(out, cap, "%s/../libexec/hutch/%s", self_dir, name);
    if (access(out, X_OK) != 0)
        return hx_fail(e, ENOENT, "%s not found next to hutchd (%s)", name, self_dir);
    return 0;
}

int helper_spawn(uv_loop_t *loop, uv_process_t *proc, uv_exit_cb on_exit, char **args, const int *fds, int n_fds,
                 int *ctl)
{
    if (n_fds < 0 || n_fds > HELPER_FDS_MAX)
        return UV_EINVAL;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return uv_translate_sys_error(errno);
    uv_stdio_container_t stdio[4 + HELPER_FDS_MAX];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = log_child_fd(1); /* log: JSON mode reads it */
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = log_child_fd(2);
    stdio[3].flags = UV_INHERIT_FD;
    stdio[3].data.fd = sv[1];
    for (int i = 0; i < n_fds; i++) {
        stdio[4 + i].flags = UV_INHERIT_FD;
        stdio[4 + i].data.fd = fds[i];
    }
    static char *env[] = {"PATH=/usr/bin:/bin", NULL};
    uv_process_options_t o = {.exit_cb = on_exit, .file = args[0], .args = args, .env = env,
                              .stdio_count = 4 + n_fds, .stdio = stdio};
    int r = uv_spawn(loop, proc, &o);
    close(sv[1]);
    if (r < 0) {
        close(sv[0]);
        return r;
    }
    *ctl = sv[0];
    return 0;
}

void helper_send_frame(uv_pipe_t *ctl, uint16_t type, uint32_t chan, const void *data, size_t len, int fd)
{
    if (fd < 0) {
        hx_uv_send_frame((uv_stream_t *)ctl, type, chan, data, len, true, NULL);
        return;
    }
    uv_pipe_t *fdh = hx_uv_fd_handle(ctl->loop, fd);
    if (fdh)
        hx_uv_send_frame_fd((uv_stream_t *)ctl, type, chan, data, len, true, fdh, NULL);
}

/* ---- a supervised helper ---- */

static void start(struct helper *h);

static void on_restart(uv_timer_t *t)
{
    struct helper *h = t->data;
    if (h->on && !h->stopping)
        start(h);
}

static void on_proc_closed(uv_handle_t *handle)
{
    /* a crash: start again, at most once a second when it keeps dying young */
    struct helper *h = handle->data;
    if (h->on && !h->stopping)
        uv_timer_start(&h->restart, on_restart, hx_now_ms() - h->last_start < 5000 ? 1000 : 10, 0);
}

static void ctl_close(struct helper *h)
{
    if (!h->ctl_open)
        return;
    h->ctl_open = false;
    uv_close((uv_handle_t *)&h->ctl, NULL);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    struct helper *h = p->data;
    fprintf(stderr, "hutchd: %s exited (status %" PRId64 ", signal %d)\n", h->name, status, sig);
    h->alive = false;
    ctl_close(h);
    uv_close((uv_handle_t *)p, on_proc_closed);
}

void helper_kill(struct helper *h, const char *why)
{
    fprintf(stderr, "hutchd: %s %s; restarting it\n", h->name, why);
    ctl_close(h);
    if (h->alive)
        uv_process_kill(&h->proc, SIGKILL);
}

static void on_ctl_alloc(uv_handle_t *handle, size_t sugg, uv_buf_t *b)
{
    struct helper *h = handle->data;
    *b = uv_buf_init((char *)h->rd.buf + h->rd.len, (unsigned)(h->rd.cap - h->rd.len));
}

static bool on_frame(void *ctx, const struct hx_frame *f)
{
    struct helper *h = ctx;
    return h->on_frame(h, f) && h->ctl_open;
}

static void on_ctl_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct helper *h = s->data;
    if (nread < 0)
        return ctl_close(h);
    if (h->ipc && uv_pipe_pending_count(&h->ctl) > 0)
        return helper_kill(h, "sent a file descriptor"); /* it never has a reason to */
    h->rd.len += (size_t)nread;
    if (hx_frames_take(&h->rd, on_frame, h) < 0)
        helper_kill(h, "sent a malformed frame");
}

static void start(struct helper *h)
{
    int ctl;
    h->last_start = hx_now_ms();
    h->proc.data = h;
    int r = helper_spawn(h->loop, &h->proc, on_exit_cb, h->args, h->fds, h->n_fds, &ctl);
    if (r < 0) {
        fprintf(stderr, "hutchd: start %s: %s\n", h->args[0], uv_strerror(r));
        uv_close((uv_handle_t *)&h->proc, on_proc_closed); /* and try again, as after an exit */
        return;
    }
    h->alive = true;
    uv_pipe_init(h->loop, &h->ctl, h->ipc);
    h->ctl.data = h;
    uv_pipe_open(&h->ctl, ctl);
    h->ctl_open = true;
    h->rd.len = 0;
    uv_read_start((uv_stream_t *)&h->ctl, on_ctl_alloc, on_ctl_read);
    h->on_start(h);
}

int helper_start(struct helper *h, struct hx_err *e)
{
    if (h->on)
        return 0;
    h->rd.cap = HX_FRAME_HDR + HX_FRAME_MAX;
    if (!h->rd.buf && !(h->rd.buf = malloc(h->rd.cap)))
        return hx_fail(e, ENOMEM, "out of memory");
    if (!h->restart.loop) { /* once: a helper started again after helper_stop keeps its timer */
        uv_timer_init(h->loop, &h->restart);
        uv_unref((uv_handle_t *)&h->restart);
    }
    h->restart.data = h;
    h->on = true;
    h->stopping = false;
    start(h);
    if (!h->alive) {
        uv_timer_stop(&h->restart);
        h->on = false;
        return hx_fail(e, EIO, "could not start %s", h->args[0]);
    }
    return 0;
}

void helper_stopping(struct helper *h)
{
    h->stopping = true;
}

void helper_stop(struct helper *h)
{
    if (!h->on)
        return;
    h->on = false;
    uv_timer_stop(&h->restart);
    ctl_close(h);
    if (h->alive)
        uv_process_kill(&h->proc, SIGTERM);
}

void helper_send(struct helper *h, uint16_t type, uint32_t chan, const void *data, size_t len, int fd)
{
    if (!h->ctl_open) {
        if (fd >= 0)
            close(fd);
        return;
    }
    helper_send_frame(&h->ctl, type, chan, data, len, fd);
}
