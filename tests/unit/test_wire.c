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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_frame),
        cmocka_unit_test(test_partial_frame_needs_more),
        cmocka_unit_test(test_oversized_frame_is_refused),
        cmocka_unit_test(test_zero_type_and_flags_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
