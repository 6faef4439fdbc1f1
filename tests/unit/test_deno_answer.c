/* deno_answer_parse: a REPL driver's answer lines (hostile) → the SDK's result. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <stdlib.h>
#include "daemon/core/deno_answer.h"

static int parse(const char *s, int64_t *id, json_t **r)
{
    return deno_answer_parse((const uint8_t *)s, strlen(s), id, r);
}

static void test_ok_values_pass_through(void **st)
{
    int64_t id = 0;
    json_t *r = NULL;
    assert_int_equal(parse("{\"id\":7,\"ok\":{\"a\":[1,\"x\",null]}}", &id, &r), 0);
    assert_int_equal(id, 7);
    char *t = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(t, "{\"ok\":{\"a\":[1,\"x\",null]}}");
    free(t);
    json_decref(r);
    assert_int_equal(parse("{\"id\":1,\"ok\":null}", &id, &r), 0); /* undefined arrives as null */
    assert_true(json_is_null(json_object_get(r, "ok")));
    json_decref(r);
}

static void test_error_keeps_only_the_sdk_fields(void **st)
{
    int64_t id = 0;
    json_t *r = NULL;
    assert_int_equal(parse("{\"id\":2,\"error\":{\"constructorName\":\"TypeError\",\"message\":\"bad\",\"stack\":\"TypeError: bad\","
                           "\"name\":\"TypeError\",\"code\":null,\"extra\":{\"x\":1}}}", &id, &r), 0);
    json_t *e = json_object_get(r, "error");
    assert_string_equal(json_string_value(json_object_get(e, "constructorName")), "TypeError");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "bad");
    assert_true(json_is_null(json_object_get(e, "code")));
    assert_null(json_object_get(e, "extra"));
    assert_int_equal(json_object_size(e), 5);
    json_decref(r);
}

static void test_hostile_error_fields_are_tamed(void **st)
{
    int64_t id = 0;
    json_t *r = NULL;
    /* a constructorName that is not an identifier, a message that is not a string, a huge stack */
    enum { BIG = DENO_ANSWER_TEXT_MAX + 5000 };
    static char line[BIG + 200];
    static const char head[] = "{\"id\":3,\"error\":{\"constructorName\":\"__proto__ x\",\"message\":5,\"stack\":\"";
    size_t n = sizeof head - 1;
    memcpy(line, head, n);
    memset(line + n, 'a', BIG);
    memcpy(line + n + BIG, "\"}}", 4);
    assert_int_equal(parse(line, &id, &r), 0);
    json_t *e = json_object_get(r, "error");
    assert_string_equal(json_string_value(json_object_get(e, "constructorName")), "Error");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "the REPL threw a value without a message");
    assert_int_equal(json_string_length(json_object_get(e, "stack")), DENO_ANSWER_TEXT_MAX);
    json_decref(r);
}

static void test_a_long_message_is_cut_on_a_character_boundary(void **st)
{
    int64_t id = 0;
    json_t *r = NULL;
    enum { CHARS = DENO_ANSWER_TEXT_MAX / 2 + 10 }; /* "é" is 2 bytes: the cut falls after a whole one */
    static char line[CHARS * 2 + 100];
    static const char head[] = "{\"id\":4,\"error\":{\"message\":\"x";
    size_t n = sizeof head - 1;
    memcpy(line, head, n);
    for (size_t i = 0; i < CHARS; i++)
        memcpy(line + n + 2 * i, "\xc3\xa9", 2);
    memcpy(line + n + 2 * CHARS, "\"}}", 4);
    assert_int_equal(parse(line, &id, &r), 0);
    size_t len = json_string_length(json_object_get(json_object_get(r, "error"), "message"));
    assert_true(len <= DENO_ANSWER_TEXT_MAX && len >= DENO_ANSWER_TEXT_MAX - 1);
    json_decref(r);
}

static void test_malformed_lines_are_refused(void **st)
{
    int64_t id = 0;
    json_t *r = (json_t *)0x1;
    const char *bad[] = {
        "", "null", "[]", "{\"ok\":1}", "{\"id\":\"1\",\"ok\":1}", "{\"id\":1}", "{\"id\":1,\"ok\":1,\"error\":{}}",
        "{\"id\":1,\"error\":\"string\"}", "{\"id\":1,\"ok\":1", "{\"id\":1.5,\"ok\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(parse(bad[i], &id, &r), -EINVAL);
    assert_ptr_equal(r, (json_t *)0x1); /* untouched */
    /* control: the same shape, well formed, passes */
    assert_int_equal(parse("{\"id\":1,\"error\":{}}", &id, &r), 0);
    json_decref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_values_pass_through),
        cmocka_unit_test(test_error_keeps_only_the_sdk_fields),
        cmocka_unit_test(test_hostile_error_fields_are_tamed),
        cmocka_unit_test(test_a_long_message_is_cut_on_a_character_boundary),
        cmocka_unit_test(test_malformed_lines_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
