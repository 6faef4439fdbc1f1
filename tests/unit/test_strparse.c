/* Client-string parsers: memory sizes as the SDK writes them, durations,
 * sandbox ids, org names, labels, timestamps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "lib/strparse.h"

static void expect_mib(const char *s, uint32_t want)
{
    struct hx_err e = { 0 };
    uint32_t mib = 0xdeadbeef;
    int r = hx_parse_memory_mib(s, &mib, &e);
    if (r != 0)
        fail_msg("\"%s\": %s", s, e.msg);
    assert_int_equal(mib, want);
}

static void expect_mem_error(const char *s, int code, const char *msg_prefix)
{
    struct hx_err e = { 0 };
    uint32_t mib = 0;
    assert_int_equal(hx_parse_memory_mib(s, &mib, &e), -code);
    assert_int_equal(e.code, code);
    if (msg_prefix && strncmp(e.msg, msg_prefix, strlen(msg_prefix)) != 0)
        fail_msg("\"%s\": got message \"%s\", want prefix \"%s\"", s ? s : "(null)", e.msg, msg_prefix);
}

static void test_memory_every_unit(void **state)
{
    expect_mib("1GiB", 1024);
    expect_mib("1280MiB", 1280);
    expect_mib("2048KiB", 2);
    expect_mib("1GB", 953);          /* 1e9 / 2^20 = 953.67 */
    expect_mib("1000MB", 953);
    expect_mib("1000000kB", 953);
    expect_mib("4GiB", 4096);
    expect_mib("768MiB", 768);
}

static void test_memory_fractions_floor_like_the_sdk(void **state)
{
    expect_mib("1.5GiB", 1536);
    expect_mib("0.75GiB", 768);
    expect_mib("1.25GB", 1192);      /* 1.25e9 / 2^20 = 1192.09 */
    expect_mib("0.5KiB", 0);
    expect_mib("1023.999MiB", 1023);
    expect_mib("2.000GiB", 2048);
    expect_mib("0.0009765625GiB", 1);  /* exactly 1 MiB: no float rounding down to 0 */
}

static void test_memory_plain_integer_is_bytes(void **state)
{
    expect_mib("1073741824", 1024);
    expect_mib("1073741823", 1023);
    expect_mib("0", 0);
    expect_mib("1048575", 0);
}

static void test_memory_unknown_unit_has_sdk_message(void **state)
{
    struct hx_err e = { 0 };
    uint32_t mib;
    assert_int_equal(hx_parse_memory_mib("10XB", &mib, &e), -EINVAL);
    assert_string_equal(e.msg, "Unknown memory unit \"XB\". Supported units: GiB, MiB, KiB, GB, MB, kB");
    expect_mem_error("1gib", EINVAL, "Unknown memory unit \"gib\"");
    expect_mem_error("1KB", EINVAL, "Unknown memory unit \"KB\"");   /* exact case: kB */
    expect_mem_error("1.5gb", EINVAL, "Unknown memory unit \"gb\"");
}

static void test_memory_bad_format_has_sdk_message(void **state)
{
    struct hx_err e = { 0 };
    uint32_t mib;
    assert_int_equal(hx_parse_memory_mib("abc", &mib, &e), -EINVAL);
    assert_string_equal(e.msg, "Invalid memory format: \"abc\". Expected a number or a string like "
                               "\"1GiB\", \"1280MiB\", \"1GB\", etc.");
    static const char *const bad[] = {
        "", "GiB", "1 GiB", " 1GiB", "1GiB ", "-1GiB", "+1GiB", "1.GiB", ".5GiB", "1.5",
        "1e3MiB", "1,5GiB", "0x10MiB", "1GiB1", "1.5.5GiB", "1Gi B", "１GiB",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_mem_error(bad[i], EINVAL, "Invalid memory format: \"");
    expect_mem_error(NULL, EINVAL, NULL);
}

static void test_memory_huge_numbers_are_range_errors(void **state)
{
    expect_mem_error("99999999999999999999999999GiB", ERANGE, NULL);
    expect_mem_error("18446744073709551616", ERANGE, NULL);   /* 2^64 bytes */
    expect_mem_error("4294967296MiB", ERANGE, NULL);
    expect_mem_error("4194304GiB", ERANGE, NULL);             /* 2^32 MiB */
    expect_mib("4294967295MiB", UINT32_MAX);
    expect_mem_error("18446744073709551615", ERANGE, NULL);   /* 2^64-1 bytes */
    expect_mib("4503599627370495", UINT32_MAX);               /* 2^52-1 bytes */
}

static void test_memory_error_message_is_bounded_and_printable(void **state)
{
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[5] = '\x1b';
    struct hx_err e = { 0 };
    uint32_t mib;
    assert_int_equal(hx_parse_memory_mib(big, &mib, &e), -EINVAL);
    for (const char *p = e.msg; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
    assert_non_null(strstr(e.msg, "..."));
}

static void expect_ms(const char *s, uint64_t want)
{
    struct hx_err e = { 0 };
    uint64_t ms = 0;
    int r = hx_parse_duration_ms(s, &ms, &e);
    if (r != 0)
        fail_msg("\"%s\": %s", s, e.msg);
    assert_int_equal(ms, want);
}

static void expect_dur_error(const char *s, int code)
{
    struct hx_err e = { 0 };
    uint64_t ms = 0;
    assert_int_equal(hx_parse_duration_ms(s, &ms, &e), -code);
    assert_true(e.msg[0] != '\0');
}

static void test_duration_units(void **state)
{
    expect_ms("30s", 30000);
    expect_ms("5m", 300000);
    expect_ms("2h", 7200000);
    expect_ms("1500ms", 1500);
    expect_ms("1.5m", 90000);
    expect_ms("0.5s", 500);
    expect_ms("600s", 600000);
    expect_ms("168h", 7ull * 24 * 3600 * 1000);
}

static void test_duration_must_be_positive_and_at_most_a_week(void **state)
{
    expect_dur_error("0s", ERANGE);
    expect_dur_error("0ms", ERANGE);
    expect_dur_error("0.4ms", ERANGE);
    expect_dur_error("169h", ERANGE);
    expect_dur_error("604800001ms", ERANGE);
    expect_dur_error("99999999999999999999999h", ERANGE);
    expect_ms("604800000ms", 604800000);
}

static void test_duration_bad_syntax(void **state)
{
    static const char *const bad[] = {
        "", "s", "30", "30 s", "-5s", "30S", "5M", "1d", "7days", "1.s", ".5s", "30sec", "30s ",
        "session", "1e3s", "ms",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_dur_error(bad[i], EINVAL);
    expect_dur_error(NULL, EINVAL);
}

static void test_new_sandbox_ids_are_valid_and_distinct(void **state)
{
    enum { N = 2000 };
    static char ids[N][32];
    bool seen[256] = { false };
    for (int i = 0; i < N; i++) {
        assert_int_equal(hx_sandbox_id_new("loc", ids[i]), 0);
        assert_int_equal(strlen(ids[i]), HX_SANDBOX_ID_LEN);
        assert_true(hx_sandbox_id_valid(ids[i]));
        assert_memory_equal(ids[i], "sbx_loc_", 8);
        for (int k = 8; k < HX_SANDBOX_ID_LEN; k++)
            seen[(unsigned char)ids[i][k]] = true;
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_string_not_equal(ids[i], ids[j]);
    /* 40000 draws: every alphabet character shows up, nothing else does. */
    for (int c = 0; c < 256; c++)
        assert_int_equal(seen[c], c != 0 && strchr(HX_ID_ALPHABET, c) != NULL);
}

static void test_sandbox_id_needs_lowercase_node(void **state)
{
    char id[32];
    assert_int_equal(hx_sandbox_id_new("AB1", id), -EINVAL);
    assert_int_equal(hx_sandbox_id_new("a_b", id), -EINVAL);
}

static void test_sandbox_id_validation_matches_sdk_regexp(void **state)
{
    assert_true(hx_sandbox_id_valid("sbx_ord_0123456789abcdefghjk"));
    assert_true(hx_sandbox_id_valid("sbx_ams_mnpqrstuvwxyz0123456"));
    static const char *const bad[] = {
        "", "sbx_ord_0123456789abcdefghj",     /* 19 */
        "sbx_ord_0123456789abcdefghjkm",       /* 21 */
        "sbx_ord_0123456789abcdefghji",        /* i */
        "sbx_ord_0123456789abcdefghjl",        /* l */
        "sbx_ord_0123456789abcdefghjo",        /* o */
        "sbx_ord_0123456789abcdefghjK",        /* upper case */
        "sbx_Ord_0123456789abcdefghjk", "sbx_or1_0123456789abcdefghjk", "sbx-ord_0123456789abcdefghjk",
        "sbx_ord-0123456789abcdefghjk", "SBX_ord_0123456789abcdefghjk", "sbx_ord_../../../etc/passwd0",
        "sbx_ord_0123456789abcdefghj\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (hx_sandbox_id_valid(bad[i]))
            fail_msg("accepted \"%s\"", bad[i]);
    assert_false(hx_sandbox_id_valid(NULL));
}

static void test_random_chars_is_uniform_enough(void **state)
{
    /* 33 characters, 330000 draws: each 10000 +- 100 (one sigma); plain
     * modulo would give the 25 first characters 8/256 (10312) and the
     * others 7/256 (9023). */
    enum { N = 330000 };
    static char buf[N + 1];
    int count[256] = { 0 };
    assert_int_equal(hx_random_chars(HX_ID_ALPHABET, 33, buf, N), 0);
    for (int i = 0; i < N; i++)
        count[(unsigned char)buf[i]]++;
    for (const char *c = HX_ID_ALPHABET; *c; c++) {
        assert_in_range(count[(unsigned char)*c], 9500, 10500);
    }
    assert_int_equal(buf[N], '\0');
}

static void test_org_names(void **state)
{
    assert_true(hx_org_name_valid("acme"));
    assert_true(hx_org_name_valid("a-b-9"));
    char long63[64], long64[65];
    memset(long63, 'a', 63); long63[63] = 0;
    memset(long64, 'a', 64); long64[64] = 0;
    assert_true(hx_org_name_valid(long63));
    assert_false(hx_org_name_valid(long64));
    assert_false(hx_org_name_valid(""));
    assert_false(hx_org_name_valid("Acme"));
    assert_false(hx_org_name_valid("ac/me"));
    assert_false(hx_org_name_valid("ac me"));
    assert_false(hx_org_name_valid(".."));
    assert_false(hx_org_name_valid(NULL));
}

static void test_label_keys(void **state)
{
    assert_true(hx_label_key_valid("env"));
    assert_true(hx_label_key_valid("app.kubernetes_io-Name9"));
    char k63[64], k64[65];
    memset(k63, 'k', 63); k63[63] = 0;
    memset(k64, 'k', 64); k64[64] = 0;
    assert_true(hx_label_key_valid(k63));
    assert_false(hx_label_key_valid(k64));
    static const char *const bad[] = { "", "a b", "a=b", "a[b]", "a/b", "ключ", "a\n", "a&b" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(hx_label_key_valid(bad[i]));
    assert_false(hx_label_key_valid(NULL));
}

static void test_label_values(void **state)
{
    assert_true(hx_label_value_valid(""));
    assert_true(hx_label_value_valid("production"));
    assert_true(hx_label_value_valid("héllo wörld ✓ 🦕"));
    char v256[257], v257[258];
    memset(v256, 'v', 256); v256[256] = 0;
    memset(v257, 'v', 257); v257[257] = 0;
    assert_true(hx_label_value_valid(v256));
    assert_false(hx_label_value_valid(v257));
    static const char *const bad[] = {
        "a\x01", "a\n", "a\x7f", "\xc3", "\xc3\x28", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
        "\xf4\x90\x80\x80", "\xc2\x85", "\x80", "\xff", "\xf0\x9f\xa6",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (hx_label_value_valid(bad[i]))
            fail_msg("accepted bad value #%zu", i);
    assert_false(hx_label_value_valid(NULL));
}

static void test_labels_object_limits(void **state)
{
    struct hx_err e = { 0 };
    json_t *l = json_object();
    for (int i = 0; i < HX_LABELS_MAX; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        json_object_set_new(l, k, json_string("v"));
    }
    assert_int_equal(hx_labels_validate(l, &e), 0);
    json_object_set_new(l, "one-more", json_string("v"));
    assert_int_equal(hx_labels_validate(l, &e), -EINVAL);
    json_decref(l);

    l = json_pack("{s:i}", "n", 1);
    assert_int_equal(hx_labels_validate(l, &e), -EINVAL);
    json_decref(l);
    l = json_pack("{s:s}", "bad key", "v");
    assert_int_equal(hx_labels_validate(l, &e), -EINVAL);
    json_decref(l);
    l = json_array();
    assert_int_equal(hx_labels_validate(l, &e), -EINVAL);
    json_decref(l);
    /* A JSON string with an embedded NUL must not slip past as a shorter value. */
    l = json_object();
    json_object_set_new(l, "k", json_stringn("a\0b", 3));
    assert_int_equal(hx_labels_validate(l, &e), -EINVAL);
    json_decref(l);
    assert_int_equal(hx_labels_validate(NULL, &e), -EINVAL);
}

static void test_iso8601_ms(void **state)
{
    char out[32];
    hx_format_iso8601_ms(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    hx_format_iso8601_ms(1700000000123LL, out);
    assert_string_equal(out, "2023-11-14T22:13:20.123Z");
    hx_format_iso8601_ms(-5, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    hx_format_iso8601_ms(INT64_MAX, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    assert_true(hx_now_ms() > 1700000000000LL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_every_unit),
        cmocka_unit_test(test_memory_fractions_floor_like_the_sdk),
        cmocka_unit_test(test_memory_plain_integer_is_bytes),
        cmocka_unit_test(test_memory_unknown_unit_has_sdk_message),
        cmocka_unit_test(test_memory_bad_format_has_sdk_message),
        cmocka_unit_test(test_memory_huge_numbers_are_range_errors),
        cmocka_unit_test(test_memory_error_message_is_bounded_and_printable),
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_must_be_positive_and_at_most_a_week),
        cmocka_unit_test(test_duration_bad_syntax),
        cmocka_unit_test(test_new_sandbox_ids_are_valid_and_distinct),
        cmocka_unit_test(test_sandbox_id_needs_lowercase_node),
        cmocka_unit_test(test_sandbox_id_validation_matches_sdk_regexp),
        cmocka_unit_test(test_random_chars_is_uniform_enough),
        cmocka_unit_test(test_org_names),
        cmocka_unit_test(test_label_keys),
        cmocka_unit_test(test_label_values),
        cmocka_unit_test(test_labels_object_limits),
        cmocka_unit_test(test_iso8601_ms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
