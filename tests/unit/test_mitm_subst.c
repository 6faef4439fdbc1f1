/* Secret substitution (src/proxy/subst.c): placeholders become values in
 * request header values only (Basic credentials too), values become
 * placeholders in response bytes across any split, heads stay bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "lib/b64.h"
#include "proxy/subst.h"

#define PH "PLACEHOLDERxyz01"
#define VAL "realsecretvalue1"

static struct subst_secret one(bool applies)
{
    return (struct subst_secret){.name = "K", .ph = (const uint8_t *)PH, .val = (const uint8_t *)VAL,
                                 .len = strlen(VAL), .applies = applies};
}

static long head(const char *in, struct subst_secret *s, size_t ns, char *out, uint64_t *used)
{
    long n = subst_request_head((const uint8_t *)in, strlen(in), s, ns, (uint8_t *)out,
                                strlen(in) + SUBST_HEAD_SLACK, used);
    if (n >= 0)
        out[n] = 0;
    return n;
}

static void test_placeholder_in_a_header_value_becomes_the_value(void **state)
{
    struct subst_secret s = one(true);
    char out[512];
    uint64_t used;
    assert_true(head("GET /" PH " HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " PH "\r\nX: " PH PH "\r\n\r\n", &s, 1,
                     out, &used) > 0);
    assert_int_equal(used, 1);
    /* the request line is never touched; every header occurrence is */
    assert_string_equal(out, "GET /" PH " HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " VAL "\r\nX: " VAL VAL "\r\n\r\n");
}

static void test_secret_for_another_host_is_left_alone(void **state)
{
    struct subst_secret s = one(false);
    char out[512];
    uint64_t used;
    const char *in = "GET / HTTP/1.1\r\nHost: a\r\nX-Key: " PH "\r\n\r\n";
    assert_true(head(in, &s, 1, out, &used) > 0);
    assert_int_equal(used, 0);
    assert_string_equal(out, in);
}

static void test_basic_credentials_are_substituted_after_base64(void **state)
{
    struct subst_secret s = one(true);
    char in[512], want[512], b1[128], b2[128], out[600];
    hx_b64_encode((const uint8_t *)"user:" PH, strlen("user:" PH), b1);
    hx_b64_encode((const uint8_t *)"user:" VAL, strlen("user:" VAL), b2);
    snprintf(in, sizeof in, "GET / HTTP/1.1\r\nAuthorization: Basic %s\r\n\r\n", b1);
    snprintf(want, sizeof want, "GET / HTTP/1.1\r\nAuthorization: Basic %s\r\n\r\n", b2);
    uint64_t used;
    assert_true(head(in, &s, 1, out, &used) > 0);
    assert_int_equal(used, 1);
    assert_string_equal(out, want);
    /* a malformed credential is passed on unchanged */
    const char *bad = "GET / HTTP/1.1\r\nAuthorization: Basic !!!notbase64\r\n\r\n";
    assert_true(head(bad, &s, 1, out, &used) > 0);
    assert_string_equal(out, bad);
}

static void test_range_requests_are_made_whole(void **state)
{
    struct subst_secret s = one(true);
    const char *h = "GET /e HTTP/1.1\r\nHost: api.test\r\nRange: bytes=5-\r\nIf-Range: \"x\"\r\nX-A: 1\r\n\r\n";
    static uint8_t out[4096];
    uint64_t used = 0;
    long n = subst_request_head((const uint8_t *)h, strlen(h), &s, 1, out, sizeof out, &used);
    assert_true(n > 0);
    out[n] = 0;
    assert_null(strstr((char *)out, "Range"));
    assert_non_null(strstr((char *)out, "X-A: 1\r\n"));
}

static void test_accept_encoding_becomes_identity(void **state)
{
    struct subst_secret s = one(true);
    char out[512];
    uint64_t used;
    assert_true(head("GET / HTTP/1.1\r\naccept-encoding: gzip, br\r\nAccept-Encoding: zstd\r\n\r\n", &s, 1, out, &used) > 0);
    assert_string_equal(out, "GET / HTTP/1.1\r\nAccept-Encoding: identity\r\n\r\n");
}

static void test_small_output_buffer_is_refused(void **state)
{
    struct subst_secret s = one(true);
    uint8_t out[8];
    uint64_t used;
    const char *in = "GET / HTTP/1.1\r\n\r\n";
    assert_int_equal(subst_request_head((const uint8_t *)in, strlen(in), &s, 1, out, sizeof out, &used), -E2BIG);
}

static void test_value_is_masked_across_every_split(void **state)
{
    struct subst_secret s = one(false); /* masking applies to every secret */
    const char *resp = "HTTP/1.1 200 OK\r\nX-Echo: " VAL "\r\n\r\n{\"auth\":\"Bearer " VAL "\"}";
    size_t n = strlen(resp);
    for (size_t cut = 0; cut <= n; cut++) {
        struct mask_state st = {0};
        static uint8_t out[SUBST_VALUE_MAX + 1024];
        char got[1024];
        size_t g = 0;
        size_t k = mask_stream(&st, &s, 1, (const uint8_t *)resp, cut, out);
        memcpy(got + g, out, k);
        g += k;
        k = mask_stream(&st, &s, 1, (const uint8_t *)resp + cut, n - cut, out);
        memcpy(got + g, out, k);
        g += k;
        k = mask_flush(&st, out);
        memcpy(got + g, out, k);
        g += k;
        got[g] = 0;
        assert_string_equal(got, "HTTP/1.1 200 OK\r\nX-Echo: " PH "\r\n\r\n{\"auth\":\"Bearer " PH "\"}");
    }
}

/* What waits for the next read is the same whatever the bytes are: a hold
 * that depended on content would let the sandbox time guesses at a value. */
static void test_the_held_tail_does_not_depend_on_content(void **state)
{
    struct subst_secret s = one(true);
    static uint8_t out[SUBST_VALUE_MAX + 64];
    const char *tails[] = {"abc real", "abc xyzw"};
    size_t first = 0;
    for (int i = 0; i < 2; i++) {
        struct mask_state st = {0};
        size_t k = mask_stream(&st, &s, 1, (const uint8_t *)tails[i], 8, out);
        if (i == 0)
            first = k;
        assert_int_equal(k, first);
        assert_int_equal(mask_flush(&st, out), 8 - k); /* and the flush releases it unchanged */
        assert_memory_equal(out, tails[i] + k, 8 - k);
    }
}

/* A chunked echo whose chunk boundary falls inside the value: the client
 * joins the chunks, so both halves must be masked, at any split and
 * whichever reads the bytes arrive in. */
static void test_value_split_by_a_chunk_framing_is_masked(void **state)
{
    struct subst_secret s = one(true);
    static uint8_t out[SUBST_HOLD_MAX + 256];
    for (size_t t = 1; t < strlen(VAL); t++) {
        char body[256];
        int n = snprintf(body, sizeof body, "%zx\r\nauth=%.*s\r\n%zx;x=1\r\n%s tail\r\n0\r\n\r\n", 5 + t, (int)t, VAL,
                         strlen(VAL) - t + 5, &VAL[t]);
        for (int cut = 1; cut < n; cut += 7) {
            struct mask_state st = {0};
            char got[512];
            size_t g = 0;
            size_t k = mask_stream(&st, &s, 1, (const uint8_t *)body, (size_t)cut, out);
            memcpy(got + g, out, k), g += k;
            k = mask_stream(&st, &s, 1, (const uint8_t *)body + cut, (size_t)n - (size_t)cut, out);
            memcpy(got + g, out, k), g += k;
            k = mask_flush(&st, out);
            memcpy(got + g, out, k), g += k;
            got[g] = 0;
            assert_int_equal(g, (size_t)n);
            /* exactly the body with the placeholder's halves in the value's places */
            char want[256];
            snprintf(want, sizeof want, "%zx\r\nauth=%.*s\r\n%zx;x=1\r\n%s tail\r\n0\r\n\r\n", 5 + t, (int)t, PH,
                     strlen(PH) - t + 5, &PH[t]);
            assert_string_equal(got, want);
        }
    }
}

static void test_request_line_for_the_audit(void **state)
{
    char m[17], p[201];
    const char *h = "POST /v1/messages?x=1 HTTP/1.1\r\n\r\n";
    subst_request_line((const uint8_t *)h, strlen(h), m, sizeof m, p, sizeof p);
    assert_string_equal(m, "POST");
    assert_string_equal(p, "/v1/messages?x=1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_placeholder_in_a_header_value_becomes_the_value),
        cmocka_unit_test(test_secret_for_another_host_is_left_alone),
        cmocka_unit_test(test_basic_credentials_are_substituted_after_base64),
        cmocka_unit_test(test_accept_encoding_becomes_identity),
        cmocka_unit_test(test_range_requests_are_made_whole),
        cmocka_unit_test(test_small_output_buffer_is_refused),
        cmocka_unit_test(test_value_is_masked_across_every_split),
        cmocka_unit_test(test_the_held_tail_does_not_depend_on_content),
        cmocka_unit_test(test_value_split_by_a_chunk_framing_is_masked),
        cmocka_unit_test(test_request_line_for_the_audit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
