/* Unit tests for the fs worker's glob matching (src/init/fs_walk.c):
 * globstar, extended globs, case folding, and hostile patterns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include "init/fs_worker.h"

/* fs_walk.c's neighbours in fsops.c, reduced to what matching needs. */
const char *fsw_path(json_t *params, const char *key, struct hx_err *e)
{
    return json_string_value(json_object_get(params, key));
}
int fsw_fail_path(struct hx_err *e, int err, const char *op, const char *path)
{
    return hx_fail(e, err, "%s %s", op, path);
}
bool fsw_json_str(char *out, size_t cap, size_t *len, const char *s)
{
    return false;
}

static void test_star_stays_in_one_segment(void **state)
{
    assert_true(fsw_glob_match("*.ts", "a.ts", true, true, false));
    assert_false(fsw_glob_match("*.ts", "x/a.ts", true, true, false));
    assert_true(fsw_glob_match("x/*.ts", "x/a.ts", true, true, false));
}

static void test_globstar_matches_zero_or_more_dirs(void **state)
{
    assert_true(fsw_glob_match("**/*.ts", "a.ts", true, true, false));
    assert_true(fsw_glob_match("**/*.ts", "x/y/z/a.ts", true, true, false));
    assert_true(fsw_glob_match("a/**/b", "a/b", true, true, false));
    assert_true(fsw_glob_match("a/**/b", "a/x/y/b", true, true, false));
    assert_false(fsw_glob_match("a/**/b", "a/x/y/c", true, true, false));
    /* without globstar, ** is a plain * */
    assert_false(fsw_glob_match("**/*.ts", "x/y/a.ts", false, true, false));
}

static void test_extended_and_casefold(void **state)
{
    assert_true(fsw_glob_match("*.+(ts|js)", "a.js", true, true, false));
    assert_false(fsw_glob_match("*.+(ts|js)", "a.md", true, true, false));
    assert_true(fsw_glob_match("*.TS", "a.ts", true, true, true));
    assert_false(fsw_glob_match("*.TS", "a.ts", true, true, false));
    assert_true(fsw_glob_match("[ab].txt", "b.txt", true, true, false));
}

static void test_hostile_patterns_are_bounded(void **state)
{
    /* Many globstars against a deep path: folded and budgeted, answers fast. */
    char pat[4096] = "", path[4096] = "";
    for (int i = 0; i < 60; i++)
        strcat(pat, i % 2 ? "**/" : "*/**/");
    strcat(pat, "nomatch");
    for (int i = 0; i < 500; i++)
        strcat(path, "d/");
    strcat(path, "f");
    assert_false(fsw_glob_match(pat, path, true, true, false));
    char longp[5000];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    assert_false(fsw_glob_match(longp, "a", true, true, false));
    assert_false(fsw_glob_match("*", longp, true, true, false));
    assert_true(fsw_glob_match("./a/./b", "a/b", true, true, false));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_star_stays_in_one_segment),
        cmocka_unit_test(test_globstar_matches_zero_or_more_dirs),
        cmocka_unit_test(test_extended_and_casefold),
        cmocka_unit_test(test_hostile_patterns_are_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
