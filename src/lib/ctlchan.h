/* A helper process's end of its control channel from hutchd (hutch-proxy,
 * hutch-ingress; hutchd's end is daemon/helper.h): lib/wire.h frames on an
 * inherited socket. The helper lives only as long as the channel: it exits
 * when hutchd goes, and at once on a frame it cannot parse. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>
#include "lib/wire.h"

/* Takes fd as the channel (close-on-exec from now on) into p, ipc when
 * hutchd passes descriptors on it. who names the program in log lines.
 * Returns 0, or -1 after saying why. Reading starts with hx_ctl_read. */
int hx_ctl_open(uv_loop_t *loop, uv_pipe_t *p, int fd, bool ipc, const char *who);
/* Starts reading: on_frame gets every whole frame (its payload lives until
 * on_frame returns). */
void hx_ctl_read(void (*on_frame)(const struct hx_frame *f));
/* Tells hutchd the helper serves: one empty frame of type ready, written
 * before the loop runs. Returns 0 or -1. */
int hx_ctl_ready(uint16_t ready);
