/* hutch-ingress head helpers: the secret in the path, hutch's cookie, hop
 * headers, host-mode names (src/ingress/head.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "ingress/ctl.h"
#include "ingress/head.h"

#define NAME "abcdefghijklmnopqrstuvwxyz"

static int strip(const char *t, char *out, size_t cap)
{
    return ig_strip_secret(t, strlen(t), NAME, out, cap);
}

static void test_path_secret_is_stripped_only_at_a_segment_boundary(void **state)
{
    char out[256];
    assert_int_equal(strip("/" NAME, out, sizeof out), 1);
    assert_string_equal(out, "/");
    assert_true(strip("/" NAME "/", out, sizeof out) > 0);
    assert_string_equal(out, "/");
    assert_true(strip("/" NAME "/a/b?c=d", out, sizeof out) > 0);
    assert_string_equal(out, "/a/b?c=d");
    assert_true(strip("/" NAME "?q", out, sizeof out) > 0);
    assert_string_equal(out, "/?q");
    assert_int_equal(strip("/" NAME "x/", out, sizeof out), -1);       /* a longer name is another name */
    assert_int_equal(strip("/abcdefghijklmnopqrstuvwxyZ/", out, sizeof out), -1);
    assert_int_equal(strip("/abcdefghijklmnopqrstuvwxy", out, sizeof out), -1);
    assert_int_equal(strip(NAME "/", out, sizeof out), -1);            /* no leading slash */
    assert_int_equal(strip("http://x/" NAME "/", out, sizeof out), -1); /* absolute form */
    assert_int_equal(strip("/" NAME "/abc", out, 4), -1);              /* does not fit */
}

static void test_cookie_is_found_and_stripped(void **state)
{
    const char *v = "a=1; __Host-hutch-4242=" NAME "; b=2";
    assert_true(ig_cookie_has(v, strlen(v), "__Host-hutch-4242", NAME));
    assert_false(ig_cookie_has(v, strlen(v), "__Host-hutch-4243", NAME));
    const char *wrong = "__Host-hutch-4242=abcdefghijklmnopqrstuvwxyy";
    assert_false(ig_cookie_has(wrong, strlen(wrong), "__Host-hutch-4242", NAME));
    char out[256];
    size_t n = ig_cookie_strip(v, strlen(v), out);
    out[n] = 0;
    assert_string_equal(out, "a=1; b=2");
    const char *only = "__Host-hutch-1=x;__Host-hutch-2=y";
    assert_int_equal(ig_cookie_strip(only, strlen(only), out), 0);
    const char *tight = "a=1;b=2;c";
    n = ig_cookie_strip(tight, strlen(tight), out); /* rejoined with "; ": longer than the input */
    out[n] = 0;
    assert_string_equal(out, "a=1; b=2; c");
    assert_true(ig_set_cookie_is_ours(" __host-HUTCH-1=x; Path=/", 25));
    assert_false(ig_set_cookie_is_ours("sid=1", 5));
}

static void test_hop_headers(void **state)
{
    const char *hop[] = {"Connection", "keep-alive", "Transfer-Encoding", "UPGRADE", "te", "Trailer",
                         "Proxy-Authorization", "X-Forwarded-For", "x-forwarded-host", "Forwarded"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        assert_true(ig_hop_header(hop[i], strlen(hop[i])));
    const char *end[] = {"Host", "Cookie", "Content-Length", "Authorization", "X-Forward", "Tea"};
    for (size_t i = 0; i < sizeof end / sizeof end[0]; i++)
        assert_false(ig_hop_header(end[i], strlen(end[i])));
}

static void test_host_names(void **state)
{
    char out[IG_NAME_LEN + 1];
    const char *h = NAME ".preview.example.com:8443";
    assert_int_equal(ig_host_name(h, strlen(h), "preview.example.com", out), 0);
    assert_string_equal(out, NAME);
    const char *upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ.preview.example.com.";
    assert_int_equal(ig_host_name(upper, strlen(upper), "preview.example.com", out), 0);
    assert_string_equal(out, NAME);
    const char *bad[] = {"x." NAME ".preview.example.com", NAME ".preview.example.com.evil.net",
                         "abcdefghijklmnopqrstuvwxy1.preview.example.com", "preview.example.com",
                         NAME "preview.example.com"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(ig_host_name(bad[i], strlen(bad[i]), "preview.example.com", out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_secret_is_stripped_only_at_a_segment_boundary),
        cmocka_unit_test(test_cookie_is_found_and_stripped),
        cmocka_unit_test(test_hop_headers),
        cmocka_unit_test(test_host_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
