/* Sending agent-protocol frames (lib/wire.h) on a libuv stream: the one
 * writer shared by hutchd (agent, proxy control), hutch-init (fs worker
 * relay) and hutch-proxy (control). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Queues one frame; the payload is copied and freed once written, zeroed
 * first when scrub (it may hold secrets). on_fail (may be NULL) runs if
 * the write fails later (not for a cancelled one at close). Returns 0, or a
 * negative uv error when the frame could not be queued at all. */
int hx_uv_send_frame(uv_stream_t *s, uint16_t type, uint32_t chan, const void *data, size_t len, bool scrub,
                     void (*on_fail)(uv_stream_t *s, int status));

/* As hx_uv_send_frame, with a descriptor passed alongside (SCM_RIGHTS; s
 * must be an ipc pipe): fdh is a malloc'd uv_pipe_t wrapping it, owned by
 * this call from now on, closed and freed once the frame is written (or
 * could not be queued). The descriptor arrives with the frame's first byte. */
int hx_uv_send_frame_fd(uv_stream_t *s, uint16_t type, uint32_t chan, const void *data, size_t len, bool scrub,
                        uv_pipe_t *fdh, void (*on_fail)(uv_stream_t *s, int status));
/* Wraps fd (consumed, also on failure) in a malloc'd uv_pipe_t for
 * hx_uv_send_frame_fd; NULL on failure. */
uv_pipe_t *hx_uv_fd_handle(uv_loop_t *loop, int fd);
/* Closes every descriptor an ipc pipe received and nobody took (a peer
 * that must not send any); returns how many. */
unsigned hx_uv_drop_fds(uv_pipe_t *p);
/* Takes the oldest descriptor an ipc pipe received, as a malloc'd
 * uv_pipe_t (for hx_uv_send_frame_fd or uv_fileno), or NULL if none. */
uv_pipe_t *hx_uv_take_fd(uv_pipe_t *p);
