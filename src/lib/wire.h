/* Agent wire format: framed messages between hutchd and hutch-init over a
 * SOCK_STREAM socketpair. Everything read from the agent is hostile: the
 * decoder is bounded and can be fuzzed alone.
 *
 * Frame = 12-byte header (little-endian) + payload:
 *   u32 len   payload length, <= HX_FRAME_MAX
 *   u16 type  enum hx_msg
 *   u16 flags reserved, 0
 *   u32 chan  request id, process id or stream id depending on type
 *
 * Control payloads are JSON objects; data payloads are raw bytes.
 * See docs/agent-protocol.md for the message catalogue. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HX_FRAME_HDR 12u
#define HX_FRAME_MAX (256u * 1024u)   /* payload bytes */

/* Output stream ids: chan = pid << 1 | HX_FD_STDOUT / HX_FD_STDERR */
#define HX_FD_STDOUT 0u
#define HX_FD_STDERR 1u
#define HX_STREAM_CHAN(pid, fd) (((uint32_t)(pid) << 1) | (fd))
#define HX_STREAM_PID(chan) ((chan) >> 1)
#define HX_STREAM_FD(chan) ((chan) & 1u)

/* Bytes of output a stream may have in flight before the agent stops reading
 * the process's pipe (per stream); the daemon returns credit with HX_CREDIT
 * once it has handed the bytes to the client's socket. */
#define HX_OUTPUT_WINDOW (512u * 1024u)

enum hx_msg {
    /* hutchd -> hutch-init */
    HX_SETUP  = 1,  /* chan 0; JSON sandbox spec (first frame, exactly once) */
    HX_CALL   = 2,  /* chan = request id; JSON {"method": str, "params": obj} */
    HX_STDIN  = 3,  /* chan = pid; bytes for the process's stdin; len 0 = close stdin */
    HX_CREDIT = 4,  /* chan = stream id; payload u32 LE bytes the daemon consumed */
    HX_GO     = 5,  /* chan 0; empty: PID 1 is in its cgroups and has its veth (after HX_SETUP with "hold") */

    /* hutch-init -> hutchd */
    HX_READY  = 16, /* chan 0; JSON {"pid": host-visible nothing, "ok": true} after setup */
    HX_REPLY  = 17, /* chan = request id; JSON {"ok": value} or {"error": {"code": "ENOENT", "message": str}} */
    HX_OUTPUT = 18, /* chan = stream id; bytes; len 0 = end of stream */
    HX_EXIT   = 19, /* chan = pid; JSON {"code": int, "signal": str|null} */
    HX_STDIN_ACK = 20, /* chan = pid; payload u32 LE bytes written to the pipe (or discarded) */
    HX_LOG    = 21, /* chan 0; UTF-8 text, a diagnostic line from the agent (bounded, for logs only) */
    HX_FS_DATA = 22, /* chan = fs stream (>= HX_FS_CHAN_BASE); bytes of a file read / listing (credited) */
    HX_HELLO  = 23, /* chan 0; JSON {"pids": [int], "held": int}: first frame to a hutchd that reconnected (live restore) */
};

/* File streams (docs/agent-protocol.md "Files"): chans at or above this are
 * fs streams, never process ids (pid_max <= 2^22). HX_STDIN carries upload
 * bytes to them, HX_STDIN_ACK acknowledges, HX_FS_DATA carries downloads and
 * HX_CREDIT returns their credit. */
#define HX_FS_CHAN_BASE 0x80000000u
#define HX_FS_WINDOW (1024u * 1024u)   /* HX_FS_DATA bytes in flight per stream */

struct hx_frame {
    uint32_t len;
    uint16_t type;
    uint16_t flags;
    uint32_t chan;
    const uint8_t *payload; /* points into the caller's buffer */
};

/* Writes a header for a frame into out[HX_FRAME_HDR]. */
void hx_frame_hdr_encode(uint8_t out[HX_FRAME_HDR], uint16_t type, uint32_t chan, uint32_t len);

/* Parses one frame from p[0..n). Returns the number of bytes consumed (>0)
 * and fills *f, 0 if more bytes are needed, or -EPROTO / -EMSGSIZE when the
 * input is malformed (the peer must then be treated as broken). */
int hx_frame_decode(const uint8_t *p, size_t n, struct hx_frame *f);

/* A stream's read side: bytes as they arrived, cut into frames. The owner
 * reads into buf + len (at most cap - len bytes) and adds what came to len. */
struct hx_frame_rd {
    uint8_t *buf;
    size_t cap, len;
};
/* Hands each whole frame in r to on_frame, in order, then moves what is
 * left of a partial frame to the start of buf. on_frame returns false to
 * stop (its peer is gone: r may be freed with it), and then r is left as it
 * is. Returns 0 when every whole frame was handed on, 1 when on_frame
 * stopped, -EPROTO or -EMSGSIZE for a malformed frame or one that cannot fit
 * in cap (the peer is broken). */
int hx_frames_take(struct hx_frame_rd *r, bool (*on_frame)(void *ctx, const struct hx_frame *f), void *ctx);

static inline uint32_t hx_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void hx_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
