/* hutchd's WebSocket receive path (src/daemon/api/ws_rx.c) against the
 * library it replaced: the same client bytes, cut into the same pieces, go
 * to ws_rx and to a wslay 1.1 server context set up as ws.c had it
 * (max message length, the fragment count check in on_frame_recv_start).
 * Oracle: both hand out the same messages (opcode and bytes, pings, pongs,
 * the peer's close code) in the same order, and stop with the same close code
 * (none, 1002, 1007, 1009), except where wslay has not yet decided because
 * the offending frame's payload has not arrived (it checks a frame when its
 * first payload byte comes, ws_rx when its header is whole), and wslay's
 * misreading of a close reason cut across reads (below).
 * Input: byte 0 picks the piece size (0: all at once), the rest is the stream. */
#include "fuzz.h"
#include <wslay/wslay.h>
#include "daemon/api/ws_rx.h"

#define MAX_MSG 4096
#define MAX_FRAGS 8
#define MAX_EVENTS 512

struct ev {
    uint8_t op;
    uint16_t code;
    size_t len;
    uint64_t sum;  /* FNV-1a of the bytes */
};

struct side {
    struct ev evs[MAX_EVENTS];
    size_t n;
    int close_code;      /* -1: none; else the code of the close frame queued (0: without a code) */
    bool closing;        /* wslay side: ws.c's begin_close had run, messages were ignored */
};

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void add(struct side *s, uint8_t op, uint16_t code, const uint8_t *p, size_t n)
{
    if (s->n < MAX_EVENTS)
        s->evs[s->n++] = (struct ev){op, code, n, fnv(p, n)};
}

/* ---- wslay, as ws.c used it ---- */
struct wl {
    const uint8_t *p;
    size_t n, off, piece;
    struct side *s;
    unsigned fragments;
};

static ssize_t wl_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    struct wl *w = ud;
    size_t left = w->n - w->off;
    if (!left) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t k = left < len ? left : len;
    if (w->piece && k > w->piece)
        k = w->piece;
    memcpy(buf, w->p + w->off, k);
    w->off += k;
    return (ssize_t)k;
}

static void wl_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
    struct wl *w = ud;
    if (w->s->closing && arg->opcode != WSLAY_CONNECTION_CLOSE)
        return;
    add(w->s, arg->opcode, arg->opcode == WSLAY_CONNECTION_CLOSE ? arg->status_code : 0,
        arg->msg ? arg->msg : (const uint8_t *)"", arg->msg_length);
}

static void wl_frame_start(wslay_event_context_ptr ctx, const struct wslay_event_on_frame_recv_start_arg *arg, void *ud)
{
    struct wl *w = ud;
    if (arg->opcode & 0x8)
        return;
    w->fragments = arg->opcode == WSLAY_CONTINUATION_FRAME ? w->fragments + 1 : 1;
    if (w->fragments > MAX_FRAGS) {
        if (!w->s->closing) {
            w->s->closing = true;
            wslay_event_queue_close(ctx, 1009, (const uint8_t *)"too many fragments in one message", 33);
        }
        wslay_event_shutdown_read(ctx);
    }
}

/* The code of the first close frame wslay queued: sent into a buffer and parsed. */
static uint8_t g_out[1 << 16];
static size_t g_out_len;
static ssize_t wl_send_capture(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
    size_t k = len < sizeof g_out - g_out_len ? len : sizeof g_out - g_out_len;
    memcpy(g_out + g_out_len, data, k);
    g_out_len += k;
    return (ssize_t)len;
}

static int first_close_code(void)
{
    size_t i = 0;
    while (i + 2 <= g_out_len) {
        uint8_t op = g_out[i] & 0xf, l7 = g_out[i + 1] & 0x7f;
        size_t hl = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
        uint64_t pl = l7;
        if (l7 == 126 && i + 4 <= g_out_len)
            pl = (uint64_t)g_out[i + 2] << 8 | g_out[i + 3];
        else if (l7 == 127)
            return -2; /* we send no such frames here */
        if (op == 0x8)
            return pl >= 2 && i + 4 <= g_out_len ? g_out[i + 2] << 8 | g_out[i + 3] : 0;
        i += hl + (size_t)pl;
    }
    return -1;
}

static bool run_wslay(const uint8_t *p, size_t n, size_t piece, struct side *s)
{
    struct wl w = {p, n, 0, piece, s, 0};
    struct wslay_event_callbacks cb = {
        .recv_callback = wl_recv,
        .send_callback = wl_send_capture,
        .on_frame_recv_start_callback = wl_frame_start,
        .on_msg_recv_callback = wl_msg,
    };
    wslay_event_context_ptr ctx;
    if (wslay_event_context_server_init(&ctx, &cb, &w) != 0)
        return false;
    wslay_event_config_set_max_recv_msg_length(ctx, MAX_MSG);
    g_out_len = 0;
    /* wslay stops at each incomplete header (ws.c called it again on the next read) */
    for (size_t before = SIZE_MAX; w.off != before && wslay_event_get_read_enabled(ctx);) {
        before = w.off;
        if (wslay_event_recv(ctx) < 0)
            break;
    }
    while (wslay_event_want_write(ctx) && wslay_event_send(ctx) == 0 && wslay_event_want_write(ctx))
        ;
    s->close_code = first_close_code();
    wslay_event_context_free(ctx);
    return true;
}

/* ---- ws_rx ---- */
static bool g_undecided; /* ws_rx failed at a frame whose payload had not come (wslay waits for it) */
static bool g_close_verdict; /* ws_rx stopped at a close frame (its own, or one it refused) */

static void run_rx(const uint8_t *p, size_t n, size_t piece, struct side *s)
{
    struct ws_rx r;
    ws_rx_init(&r, MAX_MSG, MAX_FRAGS);
    s->close_code = -1;
    g_undecided = g_close_verdict = false;
    for (size_t off = 0; off < n && !r.failed;) {
        size_t k = piece && n - off > piece ? piece : n - off;
        size_t used;
        struct ws_rx_event ev;
        ws_rx_feed(&r, p + off, k, &used, &ev);
        FUZZ_CHECK(used <= k);
        off += used;
        if (ev.kind == WS_RX_MORE)
            FUZZ_CHECK(used == k);
        else if (ev.kind == WS_RX_FAIL) {
            FUZZ_CHECK(r.failed);
            s->close_code = ev.code;
            g_undecided = r.plen > 0 && off == n && r.poff == 0 && !r.in_payload;
            g_close_verdict = r.op == 8 && ev.code != 0;
        } else {
            FUZZ_CHECK(ev.len <= (ev.opcode & 8 ? 125 : MAX_MSG));
            if (ev.opcode == 1)
                FUZZ_CHECK(ws_utf8_valid(ev.data, ev.len));
            add(s, ev.opcode, ev.code, ev.data, ev.len);
            if (ev.opcode == 8) { /* echoed, as ws.c does */
                s->close_code = ev.code;
                g_close_verdict = true;
            }
        }
    }
    if (!r.failed && r.in_payload && r.op == 8)
        g_close_verdict = true; /* the input ends inside a close frame: wslay may have judged its piece */
    ws_rx_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t piece = data[0] % 16 == 0 ? 0 : data[0] % 16 == 15 ? 1 : (size_t)data[0];
    static struct side a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    run_rx(data + 1, size - 1, piece, &a);
    if (!run_wslay(data + 1, size - 1, piece, &b))
        return 0;
    /* wslay checks a close frame's reason as UTF-8 from byte 2 of each piece of it it reads,
     * not of the payload: a reason cut across reads is judged wrongly either way (ws_rx
     * checks the whole reason; inputs fit wslay's 4 KiB buffer, so piece 0 is exact).
     * Only that difference is let through: the events before the close still agree. */
    if (piece && g_close_verdict) {
        size_t k = a.n && a.evs[a.n - 1].op == 8 ? a.n - 1 : a.n;
        FUZZ_CHECK(b.n >= k && b.n <= k + 1);
        a.n = b.n = k;
    } else if (g_undecided && b.close_code == -1) {
        FUZZ_CHECK(a.n == b.n); /* the messages before it still agree */
    } else {
        if (a.close_code != b.close_code)
            fprintf(stderr, "close code: ws_rx %d, wslay %d\n", a.close_code, b.close_code);
        FUZZ_CHECK(a.close_code == b.close_code);
        FUZZ_CHECK(a.n == b.n);
    }
    for (size_t i = 0; i < a.n && i < b.n; i++) {
        FUZZ_CHECK(a.evs[i].op == b.evs[i].op);
        FUZZ_CHECK(a.evs[i].code == b.evs[i].code);
        FUZZ_CHECK(a.evs[i].len == b.evs[i].len);
        FUZZ_CHECK(a.evs[i].sum == b.evs[i].sum);
    }
    return 0;
}
