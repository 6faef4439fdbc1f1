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
