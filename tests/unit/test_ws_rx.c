/* hutchd's WebSocket receive path (src/daemon/api/ws_rx.c): frames fed whole and one byte at a
 * time give the same messages; every refusal has its close code, and the frame just inside each
 * limit passes (the positive control). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "daemon/api/ws_rx.h"

static const uint8_t key[4] = {0xa1, 0x07, 0x5c, 0xee};

/* A client frame: FIN per fin, opcode op, masked with key, length in its shortest form. */
static size_t frame(uint8_t *out, bool fin, uint8_t op, const void *payload, size_t n)
{
    size_t o = 0;
    out[o++] = (uint8_t)((fin ? 0x80 : 0) | op);
    if (n < 126)
        out[o++] = (uint8_t)(0x80 | n);
    else if (n < 65536) {
        out[o++] = 0x80 | 126;
        out[o++] = (uint8_t)(n >> 8);
        out[o++] = (uint8_t)n;
    } else {
        out[o++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[o++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    memcpy(out + o, key, 4);
    o += 4;
    for (size_t i = 0; i < n; i++)
        out[o + i] = ((const uint8_t *)payload)[i] ^ key[i % 4];
    return o + n;
}

struct got {
    int kind;          /* the last event that ended the feeding: MESSAGE count below, or FAIL */
    uint16_t code;
    unsigned messages;
    uint8_t op[8];
    uint8_t data[8][200000];
    size_t len[8];
};

/* Feeds p in pieces of `piece` bytes (0: whole), until the parser stops for good or the input ends. */
static void feed(const uint8_t *p, size_t n, size_t piece, struct got *g)
{
    struct ws_rx r;
    ws_rx_init(&r, 150000, 4);
    memset(g, 0, sizeof *g);
    g->kind = WS_RX_MORE;
    size_t off = 0;
    while (off < n && !r.failed) {
        size_t k = piece && n - off > piece ? piece : n - off, used;
        struct ws_rx_event ev;
        ws_rx_feed(&r, p + off, k, &used, &ev);
        off += used;
        if (ev.kind == WS_RX_FAIL) {
            g->kind = WS_RX_FAIL;
            g->code = ev.code;
        } else if (ev.kind == WS_RX_MESSAGE && g->messages < 8) {
            g->op[g->messages] = ev.opcode;
            g->len[g->messages] = ev.len;
            memcpy(g->data[g->messages], ev.data, ev.len);
            g->messages++;
            if (ev.opcode == 8)
                g->code = ev.code;
        }
    }
    ws_rx_free(&r);
}

static uint8_t in[400000];
static struct got whole, bytes;

static void test_messages_are_the_same_whole_and_byte_by_byte(void **state)
{
    static uint8_t big[70000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 31 + 7);
    size_t n = 0;
    n += frame(in + n, true, 1, "{\"jsonrpc\":\"2.0\"}", 17);
    n += frame(in + n, true, 2, big, sizeof big);                 /* 64-bit length */
    n += frame(in + n, false, 1, "h\xc3", 2);                     /* UTF-8 cut between fragments */
    n += frame(in + n, true, 9, "ping!", 5);                      /* a control frame between them */
    n += frame(in + n, false, 0, "\xa9llo ", 5);
    n += frame(in + n, true, 0, "\xe2\x82\xac", 3);
    n += frame(in + n, true, 8, "\x03\xe8" "bye", 5);
    n += frame(in + n, true, 1, "after close", 11);               /* never read */
    feed(in, n, 0, &whole);
    feed(in, n, 1, &bytes);
    for (struct got *g = &whole; g; g = g == &whole ? &bytes : NULL) {
        assert_int_equal(g->messages, 5);
        assert_int_equal(g->op[0], 1);
        assert_memory_equal(g->data[0], "{\"jsonrpc\":\"2.0\"}", 17);
        assert_int_equal(g->op[1], 2);
        assert_int_equal(g->len[1], sizeof big);
        assert_memory_equal(g->data[1], big, sizeof big);
        assert_int_equal(g->op[2], 9);
        assert_memory_equal(g->data[2], "ping!", 5);
        assert_int_equal(g->op[3], 1);
        assert_int_equal(g->len[3], 10);
        assert_memory_equal(g->data[3], "h\xc3\xa9llo \xe2\x82\xac", 10);
        assert_int_equal(g->op[4], 8);
        assert_int_equal(g->code, 1000);
    }
}

struct refusal {
    const char *what;
    uint8_t bytes[32];
    size_t n;
    uint16_t code;     /* 0: a close frame without a code, and the connection ends */
};

static void test_each_refusal_has_its_close_code(void **state)
{
    static const struct refusal cases[] = {
        {"unmasked", {0x81, 0x02, 'h', 'i'}, 4, 1002},
        {"rsv bit", {0xc1, 0x80, 0, 0, 0, 0}, 6, 1002},
        {"reserved opcode", {0x83, 0x80, 0, 0, 0, 0}, 6, 1002},
        {"continuation first", {0x80, 0x80, 0, 0, 0, 0}, 6, 1002},
        {"text inside a text", {0x01, 0x81, 0, 0, 0, 0, 'a', 0x81, 0x81, 0, 0, 0, 0, 'b'}, 14, 1002},
        {"fragmented ping", {0x09, 0x80}, 2, 0},
        {"ping of 126", {0x89, 0xfe}, 2, 0},
        {"16-bit length below 126", {0x82, 0xfe, 0, 125}, 4, 0},
        {"64-bit length below 65536", {0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 10, 0},
        {"64-bit length past 2^63", {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, 10, 0},
        {"message too big", {0x82, 0xff, 0, 0, 0, 0, 0, 0x02, 0x49, 0xf1, 0, 0, 0, 0}, 14, 1009},
        {"invalid UTF-8", {0x81, 0x82, 0, 0, 0, 0, 0xed, 0xa0}, 8, 1007},
        {"text ends inside a character", {0x81, 0x81, 0, 0, 0, 0, 0xc3}, 7, 1007},
        {"close code 1005", {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xed}, 8, 1002},
        {"close reason not UTF-8", {0x88, 0x83, 0, 0, 0, 0, 0x03, 0xe8, 0xff}, 9, 1007},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (size_t piece = 0; piece <= 1; piece++) {
            feed(cases[i].bytes, cases[i].n, piece, &whole);
            if (whole.kind != WS_RX_FAIL || whole.code != cases[i].code)
                fail_msg("%s (piece %zu): kind %d code %u, want close %u", cases[i].what, piece, whole.kind,
                         whole.code, cases[i].code);
        }
    }
}

static void test_the_frame_just_inside_each_limit_passes(void **state)
{
    static uint8_t payload[150001];
    memset(payload, 'x', sizeof payload);
    size_t n = frame(in, true, 2, payload, 150000); /* max_message exactly */
    feed(in, n, 0, &whole);
    assert_int_equal(whole.messages, 1);
    assert_int_equal(whole.len[0], 150000);
    n = frame(in, true, 2, payload, 150001);
    feed(in, n, 0, &whole);
    assert_int_equal(whole.kind, WS_RX_FAIL);
    assert_int_equal(whole.code, 1009);
    n = frame(in, true, 9, payload, 125); /* the largest control frame */
    feed(in, n, 0, &whole);
    assert_int_equal(whole.messages, 1);
    assert_int_equal(whole.len[0], 125);
    /* 4 fragments pass, a 5th is refused with 1009 and its reason */
    n = 0;
    n += frame(in + n, false, 2, "a", 1);
    for (int i = 0; i < 2; i++)
        n += frame(in + n, false, 0, "b", 1);
    size_t four = n + frame(in + n, true, 0, "c", 1);
    feed(in, four, 0, &whole);
    assert_int_equal(whole.messages, 1);
    assert_memory_equal(whole.data[0], "abbc", 4);
    n += frame(in + n, false, 0, "b", 1);
    n += frame(in + n, true, 0, "c", 1);
    feed(in, n, 0, &whole);
    assert_int_equal(whole.kind, WS_RX_FAIL);
    assert_int_equal(whole.code, 1009);
    /* close codes an endpoint may send, and a close without a code */
    uint8_t c[8] = {0x88, 0x82, 0, 0, 0, 0, 0x0f, 0xa0}; /* 4000 */
    feed(c, 8, 0, &whole);
    assert_int_equal(whole.messages, 1);
    assert_int_equal(whole.code, 4000);
    uint8_t none[6] = {0x88, 0x80, 0, 0, 0, 0};
    feed(none, 6, 0, &whole);
    assert_int_equal(whole.messages, 1);
    assert_int_equal(whole.op[0], 8);
    assert_int_equal(whole.code, 0);
}

static void test_utf8_validator_takes_rfc3629_only(void **state)
{
    assert_true(ws_utf8_valid((const uint8_t *)"plain ascii, longer than eight bytes", 36));
    assert_true(ws_utf8_valid((const uint8_t *)"\xf4\x8f\xbf\xbf", 4));       /* U+10FFFF */
    assert_true(ws_utf8_valid((const uint8_t *)"\xed\x9f\xbf", 3));           /* U+D7FF */
    assert_false(ws_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4));      /* past U+10FFFF */
    assert_false(ws_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));          /* a surrogate */
    assert_false(ws_utf8_valid((const uint8_t *)"\xc0\xaf", 2));              /* overlong */
    assert_false(ws_utf8_valid((const uint8_t *)"\xe0\x80\xaf", 3));          /* overlong */
    assert_false(ws_utf8_valid((const uint8_t *)"abcdefgh\x80", 9));          /* after an ASCII run */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages_are_the_same_whole_and_byte_by_byte),
        cmocka_unit_test(test_each_refusal_has_its_close_code),
        cmocka_unit_test(test_the_frame_just_inside_each_limit_passes),
        cmocka_unit_test(test_utf8_validator_takes_rfc3629_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
