/* Client frames → messages for hutchd's WebSocket server (ws_rx.h). The
 * limits and close codes are wslay 1.1's, which this replaced on the
 * receiving side: frame-level errors (a control frame over 125 bytes or
 * fragmented, a length not in its shortest form or past 2^63) close with no
 * code and end the connection; RSV bits, an unmasked frame, an unknown
 * opcode or a broken fragment sequence close with 1002; a message over
 * max_message or max_fragments with 1009; text that is not UTF-8 (also a
 * close frame's reason) with 1007; a close code no endpoint may send with
 * 1002. */
#include "daemon/api/ws_rx.h"

#include <stdlib.h>
#include <string.h>

#define OP_CONT 0x0
#define OP_TEXT 0x1
#define OP_BINARY 0x2
#define OP_CLOSE 0x8
#define OP_PING 0x9
#define OP_PONG 0xA
#define MSG_KEEP (64u * 1024)  /* a message buffer up to this is kept for the next message */

/* ---- UTF-8: state 0 = between characters; else continuation bytes still
 * due (bits 0-1) and the range the next one must fall in (bits 8-23). */
#define U8_BAD 0xffffffffu
static uint32_t u8_want(uint32_t need, uint32_t lo, uint32_t hi) { return need | lo << 8 | hi << 16; }

static uint32_t u8_step(uint32_t st, uint8_t c)
{
    if (st == 0) {
        if (c < 0x80)
            return 0;
        if (c < 0xC2)            /* a continuation byte, or an overlong 2-byte form */
            return U8_BAD;
        if (c < 0xE0)
            return u8_want(1, 0x80, 0xBF);
        if (c == 0xE0)           /* overlong 3-byte forms */
            return u8_want(2, 0xA0, 0xBF);
        if (c == 0xED)           /* UTF-16 surrogates */
            return u8_want(2, 0x80, 0x9F);
        if (c < 0xF0)
            return u8_want(2, 0x80, 0xBF);
        if (c == 0xF0)           /* overlong 4-byte forms */
            return u8_want(3, 0x90, 0xBF);
        if (c < 0xF4)
            return u8_want(3, 0x80, 0xBF);
        if (c == 0xF4)           /* past U+10FFFF */
            return u8_want(3, 0x80, 0x8F);
        return U8_BAD;
    }
    if (c < ((st >> 8) & 0xff) || c > ((st >> 16) & 0xff))
        return U8_BAD;
    return (st & 3) == 1 ? 0 : u8_want((st & 3) - 1, 0x80, 0xBF);
}

static uint32_t u8_run(uint32_t st, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && st != U8_BAD) {
        if (st == 0) { /* ASCII, 8 bytes at a time (all of the SDK's JSON and base64) */
            while (n - i >= 8) {
                uint64_t v;
                memcpy(&v, p + i, 8);
                if (v & 0x8080808080808080ull)
                    break;
                i += 8;
            }
            if (i == n)
                break;
        }
        st = u8_step(st, p[i++]);
    }
    return st;
}

bool ws_utf8_valid(const uint8_t *p, size_t n)
{
    return u8_run(0, p, n) == 0;
}

/* ---- unmasking: the key turned to where the payload is, 8 bytes a step ---- */

static void unmask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], uint64_t off)
{
    uint8_t k8[8];
    for (unsigned i = 0; i < 8; i++)
        k8[i] = key[(off + i) & 3];
    uint64_t k;
    memcpy(&k, k8, 8);
    size_t i = 0;
    for (; n - i >= 8; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ k8[i & 7];
}

void ws_rx_init(struct ws_rx *r, size_t max_message, unsigned max_fragments)
{
    memset(r, 0, sizeof *r);
    r->max_message = max_message;
    r->max_fragments = max_fragments;
}

void ws_rx_free(struct ws_rx *r)
{
    free(r->msg);
    r->msg = NULL;
    r->msg_cap = r->msg_len = 0;
}

static void fail(struct ws_rx *r, struct ws_rx_event *ev, uint16_t code, const char *reason)
{
    r->failed = true;
    ev->kind = WS_RX_FAIL;
    ev->code = code;
    ev->reason = reason;
    ev->reason_len = reason ? strlen(reason) : 0;
}

static bool close_code_valid(uint16_t c)
{
    return (c >= 1000 && c <= 1011 && c != 1004 && c != 1005 && c != 1006) || (c >= 3000 && c <= 4999);
}

static uint64_t header_length(const uint8_t *hdr)
{
    uint8_t len7 = hdr[1] & 0x7f;
    if (len7 == 126)
        return (uint64_t)hdr[2] << 8 | hdr[3];
    if (len7 < 126)
        return len7;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | hdr[2 + i];
    return v;
}

/* A length in its shortest form, below 2^63 (RFC 6455 5.2). */
static bool length_minimal(const uint8_t *hdr)
{
    uint8_t len7 = hdr[1] & 0x7f;
    uint64_t v = header_length(hdr);
    return len7 < 126 || (len7 == 126 && v >= 126) || (len7 == 127 && v >= 65536 && !(v >> 63));
}

/* The header in r->hdr is whole: checks it and readies the payload. false: *ev says why not. */
static bool frame_start(struct ws_rx *r, struct ws_rx_event *ev)
{
    uint8_t b0 = r->hdr[0], b1 = r->hdr[1];
    uint8_t op = b0 & 0xf, len7 = b1 & 0x7f;
    bool masked = b1 & 0x80;
    uint64_t plen = header_length(r->hdr);
    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    if (!length_minimal(r->hdr)) {
        fail(r, ev, 0, NULL); /* not the shortest form */
        return false;
    }
    r->op = op;
    r->ctl_utf8 = 0;
    r->fin = b0 & 0x80;
    r->plen = plen;
    r->poff = 0;
    if (masked)
        memcpy(r->key, r->hdr + 2 + ext, 4);
    bool control = op & 0x8;
    bool known = op == OP_CONT || op == OP_TEXT || op == OP_BINARY || op == OP_CLOSE || op == OP_PING || op == OP_PONG;
    if ((b0 & 0x70) || !masked || !known || (r->msg_op && (op == OP_TEXT || op == OP_BINARY)) ||
        (!r->msg_op && op == OP_CONT)) {
        fail(r, ev, 1002, NULL);
        return false;
    }
    if (control)
        return true;
    if (r->msg_len + plen > r->max_message) {
        fail(r, ev, 1009, NULL);
        return false;
    }
    /* wslay kept a heap chunk per fragment: a message of a million one-byte
     * fragments cost ~90 bytes of bookkeeping per byte; the bound stays. */
    r->fragments = op == OP_CONT ? r->fragments + 1 : 1;
    if (r->fragments > r->max_fragments) {
        fail(r, ev, 1009, "too many fragments in one message");
        return false;
    }
    if (op != OP_CONT) {
        r->msg_op = op;
        r->utf8 = 0;
    }
    size_t need = r->msg_len + (size_t)plen;
    if (need > r->msg_cap) {
        uint8_t *m = realloc(r->msg, need ? need : 1);
        if (!m) {
            fail(r, ev, 0, NULL);
            return false;
        }
        r->msg = m;
        r->msg_cap = need;
    }
    return true;
}

/* The frame's payload is in: a message to hand out, or nothing yet (fragment). */
static bool frame_end(struct ws_rx *r, struct ws_rx_event *ev)
{
    r->in_payload = false;
    r->hlen = 0;
    if (r->op & 0x8) {
        ev->kind = WS_RX_MESSAGE;
        ev->opcode = r->op;
        ev->data = r->ctl;
        ev->len = (size_t)r->plen;
        ev->code = 0;
        ev->reason = NULL;
        ev->reason_len = 0;
        if (r->op != OP_CLOSE)
            return true;
        r->failed = true; /* nothing is read after a close frame */
        if (r->plen >= 2) {
            if (r->ctl_utf8 != 0) { /* ends inside a character */
                fail(r, ev, 1007, NULL);
                return true;
            }
            uint16_t code = (uint16_t)(r->ctl[0] << 8 | r->ctl[1]);
            if (!close_code_valid(code)) {
                fail(r, ev, 1002, NULL);
                return true;
            }
            ev->code = code;
            ev->reason = (const char *)r->ctl + 2;
            ev->reason_len = (size_t)r->plen - 2;
        }
        return true;
    }
    r->msg_len += (size_t)r->plen;
    if (!r->fin)
        return false;
    if (r->msg_op == OP_TEXT && r->utf8 != 0) {
        fail(r, ev, 1007, NULL); /* ends inside a character */
        return true;
    }
    ev->kind = WS_RX_MESSAGE;
    ev->opcode = r->msg_op;
    ev->data = r->msg ? r->msg : (const uint8_t *)"";
    ev->len = r->msg_len;
    r->msg_op = 0; /* the buffer is reused (or freed) at the next feed */
    return true;
}

void ws_rx_feed(struct ws_rx *r, const uint8_t *p, size_t n, size_t *used, struct ws_rx_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = WS_RX_MORE;
    if (!r->msg_op && r->msg_len) { /* the last message was handed out */
        r->msg_len = 0;
        if (r->msg_cap > MSG_KEEP)
            ws_rx_free(r);
    }
    size_t i = 0;
    while (i < n && !r->failed) {
        if (!r->in_payload) {
            /* header: 2 bytes, then the extended length they announce, then the key; each
             * part is checked as soon as it is in, as wslay did */
            size_t want = 2, ext = 0;
            if (r->hlen >= 2) {
                uint8_t len7 = r->hdr[1] & 0x7f;
                ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
                want = 2 + ext;
                if (r->hlen >= want)
                    want += r->hdr[1] & 0x80 ? 4 : 0;
            }
            size_t k = want - r->hlen < n - i ? want - r->hlen : n - i;
            memcpy(r->hdr + r->hlen, p + i, k);
            r->hlen += (uint8_t)k;
            i += k;
            if (r->hlen < want)
                continue;
            if (want == 2) {
                uint8_t op = r->hdr[0] & 0xf, len7 = r->hdr[1] & 0x7f;
                if ((op & 0x8) && (len7 > 125 || !(r->hdr[0] & 0x80))) {
                    fail(r, ev, 0, NULL); /* a control frame over 125 bytes or fragmented */
                    break;
                }
                if (len7 >= 126 || (r->hdr[1] & 0x80))
                    continue; /* more header to come */
            } else if (ext && want == 2 + ext) {
                if (!length_minimal(r->hdr)) {
                    fail(r, ev, 0, NULL);
                    break;
                }
                if (r->hdr[1] & 0x80)
                    continue; /* the key to come */
            }
            if (!frame_start(r, ev))
                break;
            r->in_payload = true;
        }
        uint64_t left = r->plen - r->poff;
        size_t k = left < n - i ? (size_t)left : n - i;
        if (k) {
            uint8_t *dst = (r->op & 0x8) ? r->ctl + r->poff : r->msg + r->msg_len + r->poff;
            unmask_copy(dst, p + i, k, r->key, r->poff);
            /* text, and a close frame's reason (after its 2-byte code), checked as it comes */
            uint32_t *st = NULL;
            const uint8_t *from = dst;
            if (r->op == OP_CLOSE) {
                st = &r->ctl_utf8;
                from = r->ctl + (r->poff + k > 2 ? (r->poff > 2 ? r->poff : 2) : r->poff + k);
            } else if (r->msg_op == OP_TEXT && !(r->op & 0x8))
                st = &r->utf8;
            if (st) {
                *st = u8_run(*st, from, (size_t)(dst + k - from));
                if (*st == U8_BAD) {
                    i += k;
                    fail(r, ev, 1007, NULL);
                    break;
                }
            }
            r->poff += k;
            i += k;
        }
        if (r->poff == r->plen && frame_end(r, ev))
            break;
    }
    *used = i;
}
