/* Base64: RFC 4648 vectors, round trips of every length, strict decoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include "lib/b64.h"

static int decode_str(const char *s, uint8_t *out, size_t *outlen)
{
    return hx_b64_decode(s, strlen(s), out, outlen);
}

static void test_rfc4648_vectors_encode_and_decode(void **state)
{
    static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
    static const char *const enc[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
    for (size_t i = 0; i < 7; i++) {
        char out[16];
        size_t n = strlen(plain[i]);
        assert_int_equal(hx_b64_encoded_len(n), strlen(enc[i]));
        hx_b64_encode((const uint8_t *)plain[i], n, out);
        assert_string_equal(out, enc[i]);
        uint8_t dec[16];
        size_t dn = 99;
        assert_int_equal(decode_str(enc[i], dec, &dn), 0);
        assert_int_equal(dn, n);
        assert_memory_equal(dec, plain[i], n);
    }
}

static void test_every_length_0_to_64_round_trips(void **state)
{
    uint8_t in[64];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)(i * 37 + 200);   /* touches high and low byte values */
    for (size_t n = 0; n <= 64; n++) {
        char enc[100];
        memset(enc, 'X', sizeof enc);
        hx_b64_encode(in, n, enc);
        assert_int_equal(strlen(enc), hx_b64_encoded_len(n));
        assert_int_equal(strlen(enc) % 4, 0);
        uint8_t dec[64 + 3];
        assert_true(hx_b64_decoded_max(strlen(enc)) <= sizeof dec);
        size_t dn = 0;
        assert_int_equal(hx_b64_decode(enc, strlen(enc), dec, &dn), 0);
        assert_int_equal(dn, n);
        assert_memory_equal(dec, in, n);
    }
}

static void test_all_byte_values_round_trip(void **state)
{
    uint8_t in[256], dec[258];
    for (int i = 0; i < 256; i++)
        in[i] = (uint8_t)i;
    char enc[400];
    hx_b64_encode(in, sizeof in, enc);
    size_t dn;
    assert_int_equal(decode_str(enc, dec, &dn), 0);
    assert_int_equal(dn, 256);
    assert_memory_equal(dec, in, 256);
}

static void test_bad_length_and_padding_are_refused(void **state)
{
    static const char *const bad[] = {
        "Z", "Zg", "Zg=", "Zm9vY", "====", "Z===", "Zg=a", "Zm9v====", "Zg==Zg==", "Zm=v",
        "Zh==",   /* nonzero bits under the padding */
        "Zm9=",   /* idem, one pad */
        "Zm9vYg=", "=Zm9",
    };
    uint8_t out[16];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n;
        assert_int_equal(decode_str(bad[i], out, &n), -EINVAL);
    }
}

static void test_only_alphabet_characters_are_accepted(void **state)
{
    /* Every byte value in every position of a full quad: only the 64
     * alphabet characters decode. */
    const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int pos = 0; pos < 8; pos++) {
        for (int c = 0; c < 256; c++) {
            char in[8];
            memcpy(in, "Zm9vYmFy", 8);
            in[pos] = (char)c;
            uint8_t out[6];
            size_t n;
            bool ok = c != 0 && strchr(alpha, c) != NULL;
            assert_int_equal(hx_b64_decode(in, 8, out, &n), ok ? 0 : -EINVAL);
        }
    }
}

static void test_whitespace_and_url_alphabet_are_refused(void **state)
{
    static const char *const bad[] = { "Zm9v\n", "Zm 9v", " Zm9", "Zm9v\r\n", "-_-_", "Zm9v\t" };
    uint8_t out[16];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n;
        assert_int_equal(decode_str(bad[i], out, &n), -EINVAL);
    }
}

static void test_decode_never_writes_past_declared_room(void **state)
{
    /* inlen/4*3 is enough even when padding shortens the output. */
    uint8_t out[6 + 8];
    memset(out, 0xAA, sizeof out);
    size_t n;
    assert_int_equal(decode_str("Zm9vYg==", out, &n), 0);
    assert_int_equal(n, 4);
    for (size_t i = 6; i < sizeof out; i++)
        assert_int_equal(out[i], 0xAA);
}

/* Names that are credentials: 26 base32 characters, never the same twice. */
static void test_random_names_are_26_base32_chars_and_differ(void **state)
{
    (void)state;
    char a[HX_RANDOM_NAME_LEN + 1], b[HX_RANDOM_NAME_LEN + 1];
    hx_random_name(a);
    hx_random_name(b);
    assert_int_equal(strlen(a), 26);
    assert_int_equal(strspn(a, "abcdefghijklmnopqrstuvwxyz234567"), 26);
    assert_string_not_equal(a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_names_are_26_base32_chars_and_differ),
        cmocka_unit_test(test_rfc4648_vectors_encode_and_decode),
        cmocka_unit_test(test_every_length_0_to_64_round_trips),
        cmocka_unit_test(test_all_byte_values_round_trip),
        cmocka_unit_test(test_bad_length_and_padding_are_refused),
        cmocka_unit_test(test_only_alphabet_characters_are_accepted),
        cmocka_unit_test(test_whitespace_and_url_alphabet_are_refused),
        cmocka_unit_test(test_decode_never_writes_past_declared_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
