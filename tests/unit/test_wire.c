/* Agent frame decoding: bounds and malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include "lib/wire.h"

static void test_roundtrip_frame(void **state)
{
    uint8_t buf[HX_FRAME_HDR + 5];
    hx_frame_hdr_encode(buf, HX_OUTPUT, 77, 5);
    memcpy(buf + HX_FRAME_HDR, "hello", 5);
    struct hx_frame f;
    assert_int_equal(hx_frame_decode(buf, sizeof buf, &f), (int)sizeof buf);
    assert_int_equal(f.type, HX_OUTPUT);
    assert_int_equal(f.chan, 77);
    assert_int_equal(f.len, 5);
    assert_memory_equal(f.payload, "hello", 5);
}

static void test_partial_frame_needs_more(void **state)
{
    uint8_t buf[HX_FRAME_HDR + 5];
    hx_frame_hdr_encode(buf, HX_OUTPUT, 1, 5);
    struct hx_frame f;
    for (size_t n = 0; n < sizeof buf; n++)
        assert_int_equal(hx_frame_decode(buf, n, &f), 0);
}

static void test_oversized_frame_is_refused(void **state)
{
    uint8_t buf[HX_FRAME_HDR];
    hx_frame_hdr_encode(buf, HX_OUTPUT, 1, HX_FRAME_MAX + 1);
    struct hx_frame f;
    assert_int_equal(hx_frame_decode(buf, sizeof buf, &f), -EMSGSIZE);
}

static void test_zero_type_and_flags_are_refused(void **state)
{
    uint8_t buf[HX_FRAME_HDR];
    struct hx_frame f;
    hx_frame_hdr_encode(buf, 0, 1, 0);
    assert_int_equal(hx_frame_decode(buf, sizeof buf, &f), -EPROTO);
    hx_frame_hdr_encode(buf, HX_EXIT, 1, 0);
    buf[6] = 1;
    assert_int_equal(hx_frame_decode(buf, sizeof buf, &f), -EPROTO);
}

/* hx_frames_take: what a reader gets, byte by byte or all at once */
struct seen {
    unsigned n, stop_after;
    uint16_t types[8];
    uint32_t chans[8];
    char payloads[8][8];
};

static bool record(void *ctx, const struct hx_frame *f)
{
    struct seen *s = ctx;
    s->types[s->n] = f->type;
    s->chans[s->n] = f->chan;
    memcpy(s->payloads[s->n], f->payload, f->len);
    s->payloads[s->n][f->len] = 0;
    s->n++;
    return s->n != s->stop_after;
}

static size_t put_frame(uint8_t *p, uint16_t type, uint32_t chan, const char *payload)
{
    size_t len = strlen(payload);
    hx_frame_hdr_encode(p, type, chan, (uint32_t)len);
    memcpy(p + HX_FRAME_HDR, payload, len);
    return HX_FRAME_HDR + len;
}

static void test_frames_take_hands_on_whole_frames_and_keeps_the_rest(void **state)
{
    uint8_t wire[128];
    size_t n = put_frame(wire, HX_OUTPUT, 1, "ab");
    n += put_frame(wire + n, HX_EXIT, 2, "");
    n += put_frame(wire + n, HX_OUTPUT, 3, "xyz");
    /* the same stream fed one byte at a time and all at once */
    for (size_t step = 1; step <= n; step += n - 1) {
        uint8_t buf[64];
        struct hx_frame_rd rd = {.buf = buf, .cap = sizeof buf};
        struct seen s = {0};
        for (size_t at = 0; at < n; at += step) {
            size_t k = at + step > n ? n - at : step;
            memcpy(rd.buf + rd.len, wire + at, k);
            rd.len += k;
            assert_int_equal(hx_frames_take(&rd, record, &s), 0);
        }
        assert_int_equal(s.n, 3);
        assert_int_equal(rd.len, 0);
        assert_int_equal(s.types[0], HX_OUTPUT);
        assert_int_equal(s.chans[1], 2);
        assert_string_equal(s.payloads[0], "ab");
        assert_string_equal(s.payloads[1], "");
        assert_string_equal(s.payloads[2], "xyz");
    }
}

static void test_frames_take_stops_when_told_and_leaves_the_buffer(void **state)
{
    uint8_t buf[64];
    struct hx_frame_rd rd = {.buf = buf, .cap = sizeof buf};
    rd.len = put_frame(buf, HX_OUTPUT, 1, "a");
    rd.len += put_frame(buf + rd.len, HX_OUTPUT, 2, "b");
    size_t len = rd.len;
    struct seen s = {.stop_after = 1};
    assert_int_equal(hx_frames_take(&rd, record, &s), 1);
    assert_int_equal(s.n, 1);          /* the second frame was not handed on */
    assert_int_equal(rd.len, len);     /* and nothing moved: the owner may be gone */
}

static void test_frames_take_refuses_a_broken_stream(void **state)
{
    uint8_t buf[HX_FRAME_HDR + 4];
    struct hx_frame_rd rd = {.buf = buf, .cap = sizeof buf};
    struct seen s = {0};
    /* a frame larger than the reader's buffer can ever hold */
    hx_frame_hdr_encode(buf, HX_OUTPUT, 1, 5);
    memset(buf + HX_FRAME_HDR, 'x', 4);
    rd.len = sizeof buf;
    assert_int_equal(hx_frames_take(&rd, record, &s), -EMSGSIZE);
    /* the positive control: one byte less fits */
    hx_frame_hdr_encode(buf, HX_OUTPUT, 1, 4);
    assert_int_equal(hx_frames_take(&rd, record, &s), 0);
    assert_int_equal(s.n, 1);
    /* a frame with type 0 after a good one: the good one is handed on first */
    uint8_t two[2 * HX_FRAME_HDR];
    struct hx_frame_rd rd2 = {.buf = two, .cap = sizeof two};
    rd2.len = put_frame(two, HX_OUTPUT, 1, "");
    hx_frame_hdr_encode(two + rd2.len, 0, 1, 0);
    rd2.len += HX_FRAME_HDR;
    assert_int_equal(hx_frames_take(&rd2, record, &s), -EPROTO);
    assert_int_equal(s.n, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_frame),
        cmocka_unit_test(test_partial_frame_needs_more),
        cmocka_unit_test(test_oversized_frame_is_refused),
        cmocka_unit_test(test_zero_type_and_flags_are_refused),
        cmocka_unit_test(test_frames_take_hands_on_whole_frames_and_keeps_the_rest),
        cmocka_unit_test(test_frames_take_stops_when_told_and_leaves_the_buffer),
        cmocka_unit_test(test_frames_take_refuses_a_broken_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
