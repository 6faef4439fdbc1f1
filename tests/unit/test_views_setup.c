/* Unit tests for HX_SETUP's "views" member as hutch-init parses it
 * (src/init/views.c): what hutchd sends is taken, anything else refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include "init/init.h"
#include "init/views.h"
#include "lib/views.h"

static int parse(const char *text)
{
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr);
    assert_non_null(root);
    struct hx_err e = {0};
    int r = views_parse(root, &e);
    if (r < 0)
        assert_true(e.msg[0] != 0);
    json_decref(root);
    return r;
}

static void test_absent_or_null_views_are_fine(void **state)
{
    assert_int_equal(parse("{}"), 0);
    assert_int_equal(parse("{\"views\": null}"), 0);
    assert_int_equal(parse("{\"views\": {}}"), 0);
}

static void test_what_hutchd_sends_is_taken(void **state)
{
    assert_int_equal(parse("{\"views\": {\"lxcfs\": \"/var/lib/hutch/lxcfs\", \"cpus\": [0, 3]}}"), 0);
    assert_int_equal(parse("{\"views\": {\"cpus\": [1023]}}"), 0);
}

static void test_bad_lxcfs_paths_are_refused(void **state)
{
    static const char *const bad[] = {
        "{\"views\": {\"lxcfs\": \"relative/dir\"}}",
        "{\"views\": {\"lxcfs\": \"/var/../etc\"}}",
        "{\"views\": {\"lxcfs\": \"/..\"}}",
        "{\"views\": {\"lxcfs\": 7}}",
        "{\"views\": {\"lxcfs\": \"\"}}",
        "{\"views\": \"/var/lib/hutch/lxcfs\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(parse(bad[i]), -EINVAL);
    char big[5000];
    int n = snprintf(big, sizeof big, "{\"views\": {\"lxcfs\": \"/");
    memset(big + n, 'a', 4200);
    snprintf(big + n + 4200, sizeof big - (size_t)n - 4200, "\"}}");
    assert_int_equal(parse(big), -EINVAL);
    /* ".." inside a name is a name, not a step up */
    assert_int_equal(parse("{\"views\": {\"lxcfs\": \"/var/a..b\"}}"), 0);
}

static void test_bad_cpu_lists_are_refused(void **state)
{
    static const char *const bad[] = {
        "{\"views\": {\"cpus\": []}}",      "{\"views\": {\"cpus\": [-1]}}",
        "{\"views\": {\"cpus\": [1024]}}",  "{\"views\": {\"cpus\": [1.5]}}",
        "{\"views\": {\"cpus\": [\"0\"]}}", "{\"views\": {\"cpus\": 2}}",
        "{\"views\": {\"cpus\": [9223372036854775807]}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(parse(bad[i]), -EINVAL);
    /* more entries than CPU_SETSIZE */
    char *many = malloc(1025 * 3 + 64);
    assert_non_null(many);
    char *w = many + sprintf(many, "{\"views\": {\"cpus\": [");
    for (int i = 0; i < 1025; i++)
        w += sprintf(w, "%s0", i ? "," : "");
    sprintf(w, "]}}");
    assert_int_equal(parse(many), -EINVAL);
    free(many);
}

static void test_passed_trees_need_their_fds(void **state)
{
    /* "trees": hutchd's clones of lxcfs's files at fds 8..14: refused unless
     * exactly 8 and every one of them open (EBADF names the first missing) */
    for (int i = 0; i < HX_VIEW_N; i++)
        close(INIT_VIEWS_FD + i);
    assert_int_equal(parse("{\"views\": {\"trees\": 8}}"), -EBADF);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(devnull >= 0);
    for (int i = 0; i < HX_VIEW_N - 1; i++)
        assert_int_equal(dup2(devnull, INIT_VIEWS_FD + i), INIT_VIEWS_FD + i);
    assert_int_equal(parse("{\"views\": {\"trees\": 8}}"), -EBADF); /* the last one missing */
    for (int i = 0; i < HX_VIEW_N; i++)
        assert_int_equal(dup2(devnull, INIT_VIEWS_FD + i), INIT_VIEWS_FD + i);
    static const char *const bad[] = {
        "{\"views\": {\"trees\": 7}}", "{\"views\": {\"trees\": 9}}",
        "{\"views\": {\"trees\": \"8\"}}", "{\"views\": {\"trees\": [8]}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(parse(bad[i]), -EINVAL);
    assert_int_equal(parse("{\"views\": {\"trees\": 8, \"cpus\": [0]}}"), 0);
    for (int i = 0; i < HX_VIEW_N; i++)
        close(INIT_VIEWS_FD + i);
    close(devnull);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absent_or_null_views_are_fine),
        cmocka_unit_test(test_what_hutchd_sends_is_taken),
        cmocka_unit_test(test_bad_lxcfs_paths_are_refused),
        cmocka_unit_test(test_bad_cpu_lists_are_refused),
        cmocka_unit_test(test_passed_trees_need_their_fds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
