/* --log-format json's line formatter (src/daemon/log.c): valid JSON for any bytes (quotes, control
 * characters, invalid UTF-8), the component and sandbox taken from the line, the cut flagged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <string.h>
#include "daemon/log.h"

#define T0 1796648447123LL /* 2026-12-07T13:00:47.123Z */

static json_t *fmt(const char *level, const char *def, const char *msg, size_t n, int truncated)
{
    static char out[LOG_LINE_MAX * 6 + 512];
    size_t len = log_format_json(out, sizeof out, T0, level, def, msg, n, truncated);
    assert_true(len > 0 && out[len - 1] == '\n');
    assert_null(memchr(out, '\n', len - 1)); /* one line */
    json_error_t err;
    json_t *o = json_loadb(out, len, JSON_ALLOW_NUL, &err);
    if (!o)
        fail_msg("not JSON (%s): %.*s", err.text, (int)len, out);
    return o;
}

static const char *s(json_t *o, const char *path1, const char *path2)
{
    json_t *v = json_object_get(o, path1);
    if (path2)
        v = json_object_get(v, path2);
    return json_string_value(v);
}

static void test_hutchd_line_keeps_its_text_and_names_component_and_sandbox(void **st)
{
    const char *m = "hutchd: sbx_loc_abcdefghjkmnpqrstvwx: agent protocol violation: bad frame";
    json_t *o = fmt("warn", "hutchd", m, strlen(m), 0);
    assert_string_equal(s(o, "time", NULL), "2026-12-07T13:00:47.123Z");
    assert_string_equal(s(o, "level", NULL), "warn");
    assert_string_equal(s(o, "msg", NULL), "agent protocol violation: bad frame");
    assert_string_equal(s(o, "fields", "component"), "hutchd");
    assert_string_equal(s(o, "fields", "sandbox"), "sbx_loc_abcdefghjkmnpqrstvwx");
    assert_int_equal(json_object_size(o), 4);
    json_decref(o);
}

static void test_sandbox_in_the_middle_is_a_field_and_stays_in_msg(void **st)
{
    const char *m = "hutchd: sbx_loc_abcdefghjkmnpqrstvwx stopped (killed) after 1.0 s";
    json_t *o = fmt("info", "hutchd", m, strlen(m), 0);
    assert_string_equal(s(o, "msg", NULL), "sbx_loc_abcdefghjkmnpqrstvwx stopped (killed) after 1.0 s");
    assert_string_equal(s(o, "fields", "sandbox"), "sbx_loc_abcdefghjkmnpqrstvwx");
    json_decref(o);
    /* not an id (wrong length, letters outside the alphabet): no field */
    const char *m2 = "hutchd: sbx_loc_short stopped";
    o = fmt("info", "hutchd", m2, strlen(m2), 0);
    assert_null(json_object_get(json_object_get(o, "fields"), "sandbox"));
    json_decref(o);
}

static void test_helper_line_names_the_helper(void **st)
{
    const char *m = "hutch-proxy: listening";
    json_t *o = fmt("warn", "helper", m, strlen(m), 0);
    assert_string_equal(s(o, "fields", "component"), "hutch-proxy");
    assert_string_equal(s(o, "msg", NULL), "listening");
    json_decref(o);
    const char *m2 = "  export X=1";
    o = fmt("info", "hutchd", m2, strlen(m2), 0);
    assert_string_equal(s(o, "fields", "component"), "hutchd");
    assert_string_equal(s(o, "msg", NULL), "  export X=1");
    json_decref(o);
}

static void test_quotes_controls_and_invalid_utf8_stay_valid_json(void **st)
{
    const char m[] = "hutchd: \"q\" \\ \t\r\x01\x7f caf\xc3\xa9 \xff\xfe \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82";
    json_t *o = fmt("warn", "hutchd", m, sizeof m - 1, 0);
    const char *msg = s(o, "msg", NULL);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "\"q\" \\ \t\r\x01\x7f caf\xc3\xa9 "));
    /* each invalid byte became U+FFFD; nothing invalid got through (jansson would refuse it) */
    assert_non_null(strstr(msg, "\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd "));
    json_decref(o);
    const char nul[] = "a\0b";
    o = fmt("warn", "hutchd", nul, 3, 0);
    assert_int_equal(json_string_length(json_object_get(o, "msg")), 3);
    json_decref(o);
}

static void test_a_cut_line_says_so(void **st)
{
    static char big[LOG_LINE_MAX];
    memset(big, '"', sizeof big); /* the worst case: every byte escaped */
    json_t *o = fmt("warn", "hutchd", big, sizeof big, 1);
    assert_true(json_is_true(json_object_get(json_object_get(o, "fields"), "truncated")));
    assert_int_equal(json_string_length(json_object_get(o, "msg")), LOG_LINE_MAX);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hutchd_line_keeps_its_text_and_names_component_and_sandbox),
        cmocka_unit_test(test_sandbox_in_the_middle_is_a_field_and_stays_in_msg),
        cmocka_unit_test(test_helper_line_names_the_helper),
        cmocka_unit_test(test_quotes_controls_and_invalid_utf8_stay_valid_json),
        cmocka_unit_test(test_a_cut_line_says_so),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
