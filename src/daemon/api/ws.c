/* WebSocket server side (RFC 6455) on an upgraded hutchd HTTP connection: frames received by
 * ws_rx.c and sent by wslay, the SDK's text "ping" keep-alive, close handshake, and output
 * backpressure. */
#include "daemon/api/ws.h"
#include "daemon/api/ws_rx.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <wslay/wslay.h>

#define WS_WRITE_CHUNK (256 * 1024)   /* most bytes handed to libuv per write; wslay keeps the rest */
#define WS_CLOSE_WAIT_MS 5000         /* after our close frame: wait this long for the peer's */

struct ws_conn {
    struct http_conn *c;
    wslay_event_context_ptr ctx;  /* sending only */
    struct ws_rx rx;              /* receiving */
    struct ws_handlers h;
    void *ud;
    bool paused;           /* the app asked us to stop reading */
    bool backlog;          /* our output to this peer passed WS_HIGH_WATER: read nothing more until it
                              drains, so a client that sends requests but never reads the answers
                              cannot grow our memory */
    bool writing;          /* one libuv write in flight at a time */
    bool in_recv;          /* inside ws_conn_data: do not re-enter wslay_event_send */
    bool closing;          /* a close frame is queued: nothing more for the app */
    bool close_received;   /* the peer's close frame came (ours answers it) */
    bool fatal;            /* protocol or I/O failure: close once the queue is flushed */
    bool above_high;
    bool deadline_set;
    uint8_t more[16];      /* a frame header wslay handed apart from its payload (WSLAY_MSG_MORE) */
    size_t more_len;
};

struct ws_wreq {
    uv_write_t req;
    struct ws_conn *w;
    char data[];
};

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static void b64_encode(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

void ws_accept_key(const char *key, char out[29])
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) || !EVP_DigestUpdate(ctx, key, strlen(key)) ||
        !EVP_DigestUpdate(ctx, ws_guid, sizeof(ws_guid) - 1) || !EVP_DigestFinal_ex(ctx, md, &mdlen) ||
        mdlen != 20) {
        EVP_MD_CTX_free(ctx);
        out[0] = '\0';  /* fails the handshake rather than answering a wrong key */
        return;
    }
    EVP_MD_CTX_free(ctx);
    b64_encode(md, 20, out);
}

/* The key must be base64 of 16 bytes: 22 characters and "==". */
static bool key_valid(const char *k)
{
    if (!k || strlen(k) != 24 || strcmp(k + 22, "==") != 0)
        return false;
    for (int i = 0; i < 22; i++) {
        char ch = k[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '+' ||
              ch == '/'))
            return false;
    }
    /* The last character before "==" carries 2 bits; the 4 padding bits must be zero. */
    return strchr("AQgw", k[21]) != NULL;
}

bool ws_request_valid(const struct http_request *r)
{
    const char *version = http_header_get(r, "sec-websocket-version");
    return strcmp(r->method, "GET") == 0 && http_header_has_token(http_header_get(r, "upgrade"), "websocket") &&
           http_header_has_token(http_header_get(r, "connection"), "upgrade") &&
           key_valid(http_header_get(r, "sec-websocket-key")) && version && strcmp(version, "13") == 0;
}

/* ---------- wslay callbacks ---------- */

/* Bytes through every WebSocket (frames, both ways), for metrics. */
static uint64_t g_ws_bytes_in, g_ws_bytes_out;

void ws_byte_counts(uint64_t *in, uint64_t *out)
{
    *in = g_ws_bytes_in;
    *out = g_ws_bytes_out;
}

static void ws_pump(struct ws_conn *w);

/* A peer that vanished without a FIN (a dead laptop, a dropped NAT entry)
 * would otherwise hold its session, and a session sandbox, forever; the SDK
 * and the CLI ping every 2 s. No deadline while we are the ones not reading
 * (backpressure), and never over a close deadline. */
static uint64_t idle_ms = WS_IDLE_MS;

void ws_set_idle_timeout(uint64_t ms)
{
    idle_ms = ms;
}

static void ws_touch(struct ws_conn *w)
{
    if (!w->deadline_set && !http_conn_closing(w->c))
        http_conn_set_deadline(w->c, w->paused || w->backlog ? 0 : idle_ms);
}

static void on_ws_written(uv_write_t *req, int status)
{
    struct ws_wreq *wr = (struct ws_wreq *)req;
    struct ws_conn *w = wr->w;
    free(wr);
    if (status == UV_ECANCELED || http_conn_closing(w->c))
        return;
    w->writing = false;
    if (status < 0) {
        http_conn_close(w->c);
        return;
    }
    ws_pump(w);
}

static ssize_t on_wslay_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct ws_conn *w = ud;
    if (w->writing || http_conn_closing(w->c)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    /* wslay hands a frame's header apart from its payload: kept and sent with it, one write
     * and one packet (TCP_NODELAY) instead of two, and one wake-up of the client. */
    if ((flags & WSLAY_MSG_MORE) && w->more_len + len <= sizeof w->more) {
        memcpy(w->more + w->more_len, data, len);
        w->more_len += len;
        return (ssize_t)len;
    }
    uv_stream_t *s = http_conn_stream(w->c);
    /* Straight to the socket when it takes it; copy only what it does not. */
    size_t hl = w->more_len;
    uv_buf_t b[2];
    unsigned nb = 0;
    if (hl)
        b[nb++] = uv_buf_init((char *)w->more, (unsigned)hl);
    b[nb++] = uv_buf_init((char *)data, (unsigned)(len > UINT32_MAX - 64 ? UINT32_MAX - 64 : len));
    int n = uv_try_write(s, b, nb);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    g_ws_bytes_out += (size_t)n;
    if ((size_t)n == hl + len) {
        w->more_len = 0;
        return (ssize_t)len;
    }
    /* the rest of the header first, then as much of the payload as one write request takes */
    size_t hsent = (size_t)n < hl ? (size_t)n : hl;
    size_t dsent = (size_t)n - hsent;
    size_t hrest = hl - hsent, drest = len - dsent;
    if (drest > WS_WRITE_CHUNK)
        drest = WS_WRITE_CHUNK;
    struct ws_wreq *wr = malloc(sizeof(*wr) + hrest + drest);
    if (!wr) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    wr->w = w;
    memcpy(wr->data, w->more + hsent, hrest);
    memcpy(wr->data + hrest, data + dsent, drest);
    b[0] = uv_buf_init(wr->data, (unsigned)(hrest + drest));
    if (uv_write(&wr->req, s, b, 1, on_ws_written) < 0) {
        free(wr);
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    w->more_len = 0;
    w->writing = true;
    g_ws_bytes_out += hrest + drest;
    return (ssize_t)(dsent + drest);
}

static void begin_close(struct ws_conn *w, uint16_t code, const char *reason)
{
    if (w->closing)
        return;
    w->closing = true;
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > 122)
        rl = 122;  /* a control frame payload is at most 125 bytes, 2 of them the code */
    wslay_event_queue_close(w->ctx, code, (const uint8_t *)reason, code ? rl : 0);
}

static const struct wslay_event_callbacks wslay_callbacks = {
    .send_callback = on_wslay_send,
};

/* ---------- input ---------- */

static void on_message(struct ws_conn *w, uint8_t opcode, const uint8_t *msg, size_t len)
{
    if (w->closing || http_conn_closing(w->c))
        return;
    if (opcode == WSLAY_BINARY_FRAME) {
        if (w->h.on_binary)
            w->h.on_binary(w, msg, len, w->ud);
        else
            begin_close(w, WSLAY_CODE_UNSUPPORTED_DATA, "binary messages are not supported");
        return;
    }
    if (len == 4 && memcmp(msg, "ping", 4) == 0) {
        /* The SDK's keep-alive, every 2 s: answered here, never seen by the app. */
        struct wslay_event_msg m = { WSLAY_TEXT_FRAME, (const uint8_t *)"pong", 4 };
        wslay_event_queue_msg(w->ctx, &m);
        return;
    }
    if (w->h.on_text)
        w->h.on_text(w, (const char *)msg, len, w->ud);
}

/* Frames from the peer until the input is used up, the app pauses, our output backs up, or
 * reading stops for good (a close frame, a protocol error). Returns the bytes used. */
static size_t ws_receive(struct ws_conn *w, const uint8_t *p, size_t n)
{
    size_t done = 0;
    while (done < n && !w->rx.failed && !http_conn_closing(w->c)) {
        if (!w->backlog && ws_queued_bytes(w) > WS_HIGH_WATER)
            w->backlog = w->above_high = true; /* stop mid-input too: the rest is stashed until the peer reads */
        if (w->paused || w->backlog)
            break;
        size_t used;
        struct ws_rx_event ev;
        ws_rx_feed(&w->rx, p + done, n - done, &used, &ev);
        done += used;
        g_ws_bytes_in += used;
        if (ev.kind == WS_RX_FAIL) {
            if (ev.code == 0)
                w->fatal = true; /* a broken frame: a close frame without a code, then the end */
            if (!w->closing) {
                w->closing = true;
                wslay_event_queue_close(w->ctx, ev.code, (const uint8_t *)ev.reason, ev.reason_len);
            }
        } else if (ev.kind == WS_RX_MESSAGE) {
            if (ev.opcode == WSLAY_CONNECTION_CLOSE) {
                /* answered with the peer's code and reason (none if it gave none) */
                w->close_received = w->closing = true;
                wslay_event_queue_close(w->ctx, ev.code, (const uint8_t *)ev.reason, ev.reason_len);
            } else if (ev.opcode == WSLAY_PING) {
                struct wslay_event_msg m = { WSLAY_PONG, ev.data, ev.len };
                int r = wslay_event_queue_msg(w->ctx, &m);
                if (r < 0 && r != WSLAY_ERR_NO_MORE_MSG) {
                    w->fatal = true;
                    break;
                }
            } else if (ev.opcode == WSLAY_TEXT_FRAME || ev.opcode == WSLAY_BINARY_FRAME) {
                on_message(w, ev.opcode, ev.data, ev.len);
            }
        }
    }
    return done;
}

/* ---------- output ---------- */

size_t ws_queued_bytes(const struct ws_conn *w)
{
    return wslay_event_get_queued_msg_length(w->ctx) +
           uv_stream_get_write_queue_size((const uv_stream_t *)http_conn_stream(w->c));
}

static void ws_pump(struct ws_conn *w)
{
    if (w->in_recv || http_conn_closing(w->c))
        return;
    if (wslay_event_want_write(w->ctx) && wslay_event_send(w->ctx) < 0) {
        http_conn_close(w->c);
        return;
    }
    if (w->above_high && ws_queued_bytes(w) < WS_LOW_WATER) {
        w->above_high = false;
        if (w->h.on_drain && !w->closing)
            w->h.on_drain(w, w->ud);  /* may send, which pumps again: bounded by the water marks */
        if (http_conn_closing(w->c))
            return;
        if (w->backlog && !w->above_high) {
            w->backlog = false;
            if (!w->paused)
                http_conn_resume(w->c);
            ws_touch(w);
        }
    }
    if (w->writing || wslay_event_want_write(w->ctx))
        return;
    if (w->fatal || (wslay_event_get_close_sent(w->ctx) && w->close_received)) {
        http_conn_close(w->c);
        return;
    }
    if (wslay_event_get_close_sent(w->ctx) && !w->deadline_set) {
        /* Wait for the peer's close frame: closing now, with its input unread, could reset the
         * connection before it has read ours. */
        w->deadline_set = true;
        http_conn_set_deadline(w->c, WS_CLOSE_WAIT_MS);
    }
}

static int ws_queue(struct ws_conn *w, uint8_t opcode, const uint8_t *data, size_t len)
{
    if (!w || w->closing || http_conn_closing(w->c))
        return -EPIPE;
    struct wslay_event_msg m = { opcode, data, len };
    int r = wslay_event_queue_msg(w->ctx, &m);  /* copies */
    if (r == WSLAY_ERR_NOMEM)
        return -ENOMEM;
    if (r < 0)
        return -EPIPE;
    if (ws_queued_bytes(w) > WS_HIGH_WATER)
        w->above_high = true;
    ws_pump(w);
    return 0;
}

int ws_send_text(struct ws_conn *w, const char *data, size_t len)
{
    return ws_queue(w, WSLAY_TEXT_FRAME, (const uint8_t *)data, len);
}

int ws_send_binary(struct ws_conn *w, const uint8_t *head, size_t hl, const uint8_t *data, size_t len)
{
    if (!w || w->closing || http_conn_closing(w->c))
        return -EPIPE;
    uint8_t *buf = malloc(hl + len ? hl + len : 1);
    if (!buf)
        return -ENOMEM;
    memcpy(buf, head, hl);
    if (len)
        memcpy(buf + hl, data, len);
    int r = ws_queue(w, WSLAY_BINARY_FRAME, buf, hl + len);
    free(buf);
    return r;
}

void ws_close(struct ws_conn *w, uint16_t code, const char *reason)
{
    if (!w || w->closing || http_conn_closing(w->c))
        return;
    begin_close(w, code, reason);
    if (!w->deadline_set) {  /* a peer that does not read must not keep us forever */
        w->deadline_set = true;
        http_conn_set_deadline(w->c, WS_CLOSE_WAIT_MS);
    }
    ws_pump(w);
}

void ws_set_userdata(struct ws_conn *w, void *ud)
{
    w->ud = ud;
}

void ws_set_max_message(struct ws_conn *w, size_t max)
{
    if (max < w->rx.max_message)
        w->rx.max_message = max;
}

void ws_set_reading(struct ws_conn *w, bool on)
{
    if (!w || http_conn_closing(w->c) || w->paused == !on)
        return;
    w->paused = !on;
    if (!on)
        http_conn_read(w->c, false);
    else if (!w->in_recv && !w->backlog)
        http_conn_resume(w->c);
    ws_touch(w);
    /* else: ws_conn_data resumes once its frames are handled */
}

/* ---------- from http.c ---------- */

void ws_conn_data(struct ws_conn *w, const uint8_t *p, size_t n)
{
    w->in_recv = true;
    size_t used = ws_receive(w, p, n);
    w->in_recv = false;
    /* Keep what a pause left unread, unless reading stopped for good (close, 1009, error):
     * then it is discarded and the peer's close or our deadline ends the conn. */
    if (used < n && !w->fatal && !w->rx.failed && !http_conn_closing(w->c))
        http_conn_stash(w->c, p + used, n - used);
    if (http_conn_closing(w->c))
        return;
    if (w->rx.failed && !w->deadline_set) {
        w->deadline_set = true;  /* e.g. a 1009 close: its frame goes out, then we end */
        http_conn_set_deadline(w->c, WS_CLOSE_WAIT_MS);
    }
    ws_pump(w);
    if (http_conn_closing(w->c))
        return;
    if (ws_queued_bytes(w) > WS_HIGH_WATER) {
        w->above_high = w->backlog = true;
        http_conn_read(w->c, false);
        ws_touch(w);
        return;
    }
    if (!w->paused)
        http_conn_resume(w->c);  /* also after a pause and resume within on_text */
    ws_touch(w);
}

bool ws_conn_wants_read(const struct ws_conn *w)
{
    return !w->paused && !w->backlog;
}

void ws_conn_closed(struct ws_conn *w)
{
    if (w->h.on_close)
        w->h.on_close(w, w->ud);
    wslay_event_context_free(w->ctx);
    ws_rx_free(&w->rx);
    free(w);
}

struct ws_conn *http_upgrade_websocket(struct http_conn *c, const char *extra_headers,
                                       const struct ws_handlers *h, void *ud)
{
    const struct http_request *r = http_conn_request(c);
    if (!r) {
        fprintf(stderr, "hutchd: ws: upgrade on a connection not awaiting a response (ignored)\n");
        return NULL;
    }
    if (!r->websocket) {
        http_respond_error(c, 400, "BAD_REQUEST", "not a valid WebSocket upgrade request");
        return NULL;
    }
    char accept[29];
    ws_accept_key(http_header_get(r, "sec-websocket-key"), accept);
    struct ws_conn *w = calloc(1, sizeof(*w));
    if (!w || wslay_event_context_server_init(&w->ctx, &wslay_callbacks, w) != 0) {
        free(w);
        http_respond_error(c, 503, "OUT_OF_MEMORY", "out of memory");
        return NULL;
    }
    ws_rx_init(&w->rx, WS_MAX_MESSAGE, WS_MAX_FRAGMENTS);  /* beyond: close 1009 */
    w->c = c;
    w->h = *h;
    w->ud = ud;
    const char *extra = extra_headers ? extra_headers : "";
    size_t cap = 160 + strlen(extra);
    char *head = malloc(cap);
    if (!head) {
        wslay_event_context_free(w->ctx);
        free(w);
        http_respond_error(c, 503, "OUT_OF_MEMORY", "out of memory");
        return NULL;
    }
    int n = snprintf(head, cap,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n%s\r\n",
                     accept, extra);
    bool ok = http_conn_start_ws(c, w, head, (size_t)n);
    free(head);
    if (!ok) {
        wslay_event_context_free(w->ctx);
        free(w);
        return NULL;
    }
    ws_touch(w);
    return w;
}
