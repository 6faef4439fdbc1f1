/* Base64: RFC 4648 vectors, round trips of every length, strict decoding, and
 * the 16-characters-at-a-time codec against the table-driven one it replaced
 * (b64_ref.h) on every edge: lengths around each block, a bad byte of every
 * value at every position, padding inside a block, bytes written past the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <stdlib.h>
#include "lib/b64.h"
#include "b64_ref.h"

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

/* A small deterministic PRNG: the same inputs on every run. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static const char alpha64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Decode with both codecs into exact-size heap buffers (ASan sees any byte read or
 * written past them) and check they agree: same result, same bytes. */
static void decode_both(const char *s, size_t n)
{
    char *in = malloc(n ? n : 1);
    memcpy(in, s, n);
    size_t room = hx_b64_decoded_max(n);
    uint8_t *a = malloc(room ? room : 1), *b = malloc(room ? room : 1);
    size_t an = 0, bn = 0;
    int ra = hx_b64_decode(in, n, a, &an), rb = ref_b64_decode(in, n, b, &bn);
    assert_int_equal(ra, rb);
    if (ra == 0) {
        assert_int_equal(an, bn);
        assert_memory_equal(a, b, an);
    }
    free(in), free(a), free(b);
}

static void test_encode_matches_the_old_codec_for_every_length_to_300(void **state)
{
    for (size_t n = 0; n <= 300; n++) {
        for (int round = 0; round < 8; round++) {
            uint8_t *in = malloc(n ? n : 1); /* exact size: an over-read is an ASan error */
            for (size_t i = 0; i < n; i++)
                in[i] = round == 0 ? 0 : round == 1 ? 0xff : (uint8_t)rnd();
            size_t el = hx_b64_encoded_len(n);
            char *a = malloc(el + 1), *b = malloc(el + 1);
            hx_b64_encode(in, n, a);
            ref_b64_encode(in, n, b);
            assert_memory_equal(a, b, el + 1); /* the NUL too */
            size_t dn = 0;
            uint8_t *back = malloc(n + 1);
            assert_int_equal(hx_b64_decode(a, el, back, &dn), 0);
            assert_int_equal(dn, n);
            assert_memory_equal(back, in, n);
            free(in), free(a), free(b), free(back);
        }
    }
}

static void test_every_6_bit_value_in_every_lane_encodes_as_before(void **state)
{
    /* 48 bytes = 64 characters: value v at character k, for every v and k */
    for (int shift = 0; shift < 64; shift++) {
        uint8_t vals[64], in[48];
        for (int k = 0; k < 64; k++)
            vals[k] = (uint8_t)((k + shift) & 63);
        for (int q = 0; q < 16; q++) {
            uint32_t v = (uint32_t)vals[4 * q] << 18 | (uint32_t)vals[4 * q + 1] << 12 | vals[4 * q + 2] << 6 |
                         vals[4 * q + 3];
            in[3 * q] = (uint8_t)(v >> 16), in[3 * q + 1] = (uint8_t)(v >> 8), in[3 * q + 2] = (uint8_t)v;
        }
        char a[65], b[65];
        hx_b64_encode(in, sizeof in, a);
        ref_b64_encode(in, sizeof in, b);
        assert_string_equal(a, b);
        for (int k = 0; k < 64; k++)
            assert_int_equal(a[k], alpha64[vals[k]]);
    }
}

static void test_a_bad_byte_of_every_value_at_every_position_is_refused_as_before(void **state)
{
    /* lengths that end inside, at and after 16-character blocks */
    static const size_t lens[] = { 4, 8, 16, 20, 32, 36, 48, 64, 68, 100 };
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t n = lens[li];
        char s[128];
        for (size_t i = 0; i < n; i++)
            s[i] = alpha64[rnd() & 63];
        for (size_t pos = 0; pos < n; pos++) {
            char keep = s[pos];
            for (int c = 0; c < 256; c++) {
                s[pos] = (char)c;
                decode_both(s, n);
            }
            s[pos] = keep;
        }
    }
}

static void test_padding_inside_a_block_is_refused(void **state)
{
    char s[64];
    for (size_t i = 0; i < sizeof s; i++)
        s[i] = alpha64[(i * 7) & 63];
    for (size_t pos = 0; pos < 60; pos++) { /* the last quad may hold padding, nothing before it */
        char t[64];
        memcpy(t, s, sizeof t);
        t[pos] = '=';
        uint8_t out[48];
        size_t n;
        assert_int_equal(hx_b64_decode(t, sizeof t, out, &n), -EINVAL);
        t[pos + 1 < 60 ? pos + 1 : pos] = '=';
        assert_int_equal(hx_b64_decode(t, sizeof t, out, &n), -EINVAL);
    }
    /* and the last quad's padding, as before: nonzero bits under it refused */
    for (int c = 0; c < 64; c++) {
        char t[64];
        memcpy(t, s, sizeof t);
        t[61] = alpha64[c], t[62] = '=', t[63] = '=';
        decode_both(t, sizeof t);
        t[62] = alpha64[c], t[63] = '=';
        decode_both(t, sizeof t);
    }
}

static void test_decode_writes_nothing_past_its_room_at_any_length(void **state)
{
    uint8_t in[200];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)rnd();
    for (size_t n = 0; n <= sizeof in; n++) {
        char enc[300];
        hx_b64_encode(in, n, enc);
        size_t el = strlen(enc), room = hx_b64_decoded_max(el);
        uint8_t out[200 + 16];
        memset(out, 0xA5, sizeof out);
        size_t dn = 0;
        assert_int_equal(hx_b64_decode(enc, el, out, &dn), 0);
        assert_int_equal(dn, n);
        assert_memory_equal(out, in, n);
        for (size_t i = room; i < sizeof out; i++)
            assert_int_equal(out[i], 0xA5);
        /* refused inputs stay inside the room too */
        if (el >= 8) {
            enc[el / 2] = '*';
            memset(out, 0xA5, sizeof out);
            assert_int_equal(hx_b64_decode(enc, el, out, &dn), -EINVAL);
            for (size_t i = room; i < sizeof out; i++)
                assert_int_equal(out[i], 0xA5);
        }
    }
}

static void test_random_strings_decode_as_with_the_old_codec(void **state)
{
    /* mostly alphabet, sometimes a stray byte or '=': both results, both kinds */
    int ok = 0, refused = 0;
    for (int round = 0; round < 20000; round++) {
        size_t n = (rnd() % 50) * 4 + (rnd() % 8 == 0 ? rnd() % 4 : 0);
        char s[256];
        for (size_t i = 0; i < n; i++)
            s[i] = alpha64[rnd() & 63];
        if (n >= 4 && rnd() % 2) { /* valid padding, often with clean bits */
            s[n - 1] = '=';
            if (rnd() % 2)
                s[n - 2] = '=';
        }
        if (n && rnd() % 3 == 0)
            s[rnd() % n] = (char)(rnd() & 0xff);
        size_t room = hx_b64_decoded_max(n);
        uint8_t a[256], b[256];
        size_t an = 0, bn = 0;
        int ra = hx_b64_decode(s, n, a, &an), rb = ref_b64_decode(s, n, b, &bn);
        assert_int_equal(ra, rb);
        if (ra == 0) {
            assert_true(an <= room);
            assert_int_equal(an, bn);
            assert_memory_equal(a, b, an);
            ok++;
        } else
            refused++;
    }
    assert_true(ok > 1000 && refused > 1000); /* both paths were exercised */
}

static void test_charset_ok_accepts_only_the_alphabet_and_padding(void **state)
{
    for (size_t n = 0; n <= 40; n++) {
        uint8_t s[40] = { 0 };
        for (size_t i = 0; i < n; i++)
            s[i] = (uint8_t)"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="[rnd() % 65];
        assert_true(hx_b64_charset_ok(s, n));
        for (size_t pos = 0; pos < n; pos++) {
            uint8_t keep = s[pos];
            for (int c = 0; c < 256; c++) {
                s[pos] = (uint8_t)c;
                bool want = c == '=' || (c && strchr(alpha64, c));
                assert_int_equal(hx_b64_charset_ok(s, n), want);
            }
            s[pos] = keep;
        }
    }
    /* a bad byte in an early block is not forgotten when a later block holds '=' */
    uint8_t t[48];
    memset(t, 'A', sizeof t);
    t[3] = '"';
    memset(t + 16, '=', 16);
    assert_false(hx_b64_charset_ok(t, sizeof t));
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
        cmocka_unit_test(test_encode_matches_the_old_codec_for_every_length_to_300),
        cmocka_unit_test(test_every_6_bit_value_in_every_lane_encodes_as_before),
        cmocka_unit_test(test_a_bad_byte_of_every_value_at_every_position_is_refused_as_before),
        cmocka_unit_test(test_padding_inside_a_block_is_refused),
        cmocka_unit_test(test_decode_writes_nothing_past_its_room_at_any_length),
        cmocka_unit_test(test_random_strings_decode_as_with_the_old_codec),
        cmocka_unit_test(test_charset_ok_accepts_only_the_alphabet_and_padding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
