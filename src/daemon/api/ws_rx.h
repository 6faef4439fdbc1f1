/* The receiving half of hutchd's WebSocket server (RFC 6455): client frames
 * parsed, unmasked 8 bytes at a time and checked, messages assembled.
 * wslay does the sending half (ws.c); this replaced its receive loop, which
 * unmasked one byte at a time (over half of hutchd's CPU on an upload).
 * Hostile input: fuzzed alone and against wslay (tests/fuzz/fuzz_wsrx.c). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ws_rx_kind {
    WS_RX_MORE,      /* all input used: nothing complete yet */
    WS_RX_MESSAGE,   /* a text (1) or binary (2) message, or a ping (9) / pong (10) / close (8) frame */
    WS_RX_FAIL,      /* stop reading: close with `code` (0: none, and end the connection) and `reason` */
};

struct ws_rx_event {
    enum ws_rx_kind kind;
    uint8_t opcode;
    const uint8_t *data;   /* MESSAGE: valid until the next ws_rx_feed or ws_rx_free */
    size_t len;
    uint16_t code;         /* FAIL: the close code; MESSAGE close: the peer's (0: none) */
    const char *reason;    /* FAIL: the close frame's reason, or NULL; MESSAGE close: the peer's reason */
    size_t reason_len;
};

struct ws_rx {
    size_t max_message;    /* a data message's bytes (1009 beyond) */
    unsigned max_fragments;/* frames in one data message (1009 beyond) */
    bool failed;           /* after WS_RX_FAIL or a close frame: nothing more is read */
    /* the frame being received */
    uint8_t hdr[14];
    uint8_t hlen;
    bool in_payload;
    uint8_t op;
    bool fin;
    uint8_t key[4];
    uint64_t plen, poff;
    /* the data message being assembled (op 0: none) */
    uint8_t msg_op;
    unsigned fragments;
    uint8_t *msg;
    size_t msg_len, msg_cap;
    uint32_t utf8;         /* the validator's state over the text message */
    uint8_t ctl[125];      /* a control frame's payload (at most 125 bytes) */
    uint32_t ctl_utf8;     /* the validator's state over a close frame's reason */
};

void ws_rx_init(struct ws_rx *r, size_t max_message, unsigned max_fragments);
void ws_rx_free(struct ws_rx *r);
/* Consumes input up to the end of the next event (*used bytes) and describes it in *ev. */
void ws_rx_feed(struct ws_rx *r, const uint8_t *p, size_t n, size_t *used, struct ws_rx_event *ev);
/* UTF-8 as RFC 3629 has it (no overlong forms, surrogates or code points past U+10FFFF). */
bool ws_utf8_valid(const uint8_t *p, size_t n);
