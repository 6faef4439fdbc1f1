/* The pure part of apps (src/daemon/apps/model.c): relative paths, asset
 * maps (.., absolute paths, escaping symlinks), env var updates and the
 * documented merge order with contexts, secret masking, configs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include "daemon/apps/apps.h"

static void test_rel_paths(void **state)
{
    (void)state;
    struct hx_err e = {0};
    const char *good[] = {"main.ts", "a/b/c.ts", ".env", "a/.hidden/x", "x..y", "..a"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(app_rel_path_check(good[i], &e), 0);
    const char *bad[] = {"", "/etc/passwd", "../x", "a/../../b", "a/..", ".", "./a", "a//b", "a/", "a\nb", "a\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(app_rel_path_check(bad[i], &e), -EINVAL);
    assert_int_equal(app_rel_path_check(NULL, &e), -EINVAL);
    app_rel_path_check("/abs", &e);
    assert_non_null(strstr(e.msg, "absolute"));
}

static void test_assets(void **state)
{
    (void)state;
    struct hx_err e = {0};
    size_t total = 0;
    json_t *ok = json_pack("{s:{s:s}, s:{s:s, s:s}, s:{s:s, s:s}}", "main.ts", "content", "hello", "b.bin", "encoding",
                           "base64", "content", "AAAA", "lib/l", "kind", "symlink", "target", "../main.ts");
    assert_int_equal(app_assets_check(ok, &total, &e), 0);
    assert_int_equal(total, 5 + 3);
    json_decref(ok);
    const char *bad[] = {
        "{\"../x\": {\"content\": \"\"}}",
        "{\"/x\": {\"content\": \"\"}}",
        "{\"a\": {\"kind\": \"symlink\", \"target\": \"/etc/passwd\"}}",
        "{\"a\": {\"kind\": \"symlink\", \"target\": \"../b\"}}",
        "{\"a/b\": {\"kind\": \"symlink\", \"target\": \"../../b\"}}",
        "{\"a\": {\"kind\": \"device\"}}",
        "{\"a\": {\"content\": 5}}",
        "{\"a\": {\"encoding\": \"base64\", \"content\": \"abc\"}}",
        "{}",
        "[]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *j = json_loads(bad[i], 0, NULL);
        assert_int_equal(app_assets_check(j, &total, &e), -EINVAL);
        json_decref(j);
    }
}

static json_t *find(json_t *vars, const char *key)
{
    size_t i;
    json_t *v;
    json_array_foreach(vars, i, v) if (strcmp(json_string_value(json_object_get(v, "key")), key) == 0) return v;
    return NULL;
}

static void test_env_updates_and_secrets(void **state)
{
    (void)state;
    struct hx_err e = {0};
    json_t *init = json_loads("[{\"key\":\"A\",\"value\":\"1\"},{\"key\":\"S\",\"value\":\"hush\",\"secret\":true,"
                              "\"contexts\":[\"production\"]}]", 0, NULL);
    json_t *vars = NULL;
    assert_int_equal(app_env_from_init(init, &vars, &e), 0);
    assert_int_equal(json_array_size(vars), 2);
    assert_string_equal(json_string_value(json_object_get(find(vars, "A"), "contexts")), "all");
    json_t *pub = app_env_public(vars);
    assert_null(json_object_get(find(pub, "S"), "value"));
    assert_string_equal(json_string_value(json_object_get(find(pub, "A"), "value")), "1");
    json_decref(pub);
    /* by key, then by id; delete; a new key needs a value */
    json_t *up = json_loads("[{\"key\":\"A\",\"value\":\"2\"},{\"key\":\"B\",\"value\":\"3\"}]", 0, NULL);
    assert_int_equal(app_env_update(vars, up, &e), 0);
    assert_string_equal(json_string_value(json_object_get(find(vars, "A"), "value")), "2");
    json_decref(up);
    char upd[200];
    snprintf(upd, sizeof upd, "[{\"id\":\"%s\",\"delete\":true}]", json_string_value(json_object_get(find(vars, "B"), "id")));
    up = json_loads(upd, 0, NULL);
    assert_int_equal(app_env_update(vars, up, &e), 0);
    assert_null(find(vars, "B"));
    json_decref(up);
    const char *bad[] = {"[{\"key\":\"C\"}]", "[{\"key\":\"1X\",\"value\":\"v\"}]", "[{\"key\":\"X=\",\"value\":\"v\"}]",
                         "[{\"key\":\"X\",\"value\":\"v\",\"contexts\":[\"nowhere\"]}]", "[{\"id\":\"env_nope\",\"value\":\"v\"}]",
                         "[{\"key\":\"X\",\"value\":7}]", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        up = json_loads(bad[i], 0, NULL);
        assert_true(app_env_update(vars, up, &e) < 0);
        json_decref(up);
    }
    json_decref(init);
    json_decref(vars);
}

static json_t *layers_db;
static json_t *get_layer(const char *id, void *ud)
{
    (void)ud;
    return json_object_get(layers_db, id);
}

static void test_merge_order_and_contexts(void **state)
{
    (void)state;
    /* base: X=base, Y=base; top includes base, sets Y=top; app: layers [top], X=app (production only);
     * revision: Z=rev */
    layers_db = json_loads("{\"lyr_base\": {\"layers\": [], \"env_vars\": [{\"key\":\"X\",\"value\":\"base\"},"
                           "{\"key\":\"Y\",\"value\":\"base\"}]},"
                           " \"lyr_top\": {\"layers\": [{\"id\":\"lyr_base\"}], \"env_vars\": [{\"key\":\"Y\",\"value\":\"top\"}]},"
                           " \"lyr_loop\": {\"layers\": [{\"id\":\"lyr_loop\"}], \"env_vars\": [{\"key\":\"L\",\"value\":\"l\"}]}}",
                           0, NULL);
    json_t *app = json_loads("{\"layers\": [{\"id\":\"lyr_top\"}, {\"id\":\"lyr_loop\"}, {\"id\":\"lyr_missing\"}],"
                             " \"env_vars\": [{\"key\":\"X\",\"value\":\"app\",\"contexts\":[\"production\"]}]}", 0, NULL);
    json_t *rev = json_loads("[{\"key\":\"Z\",\"value\":\"rev\"}]", 0, NULL);
    json_t *prod = app_env_merge(app, rev, "production", get_layer, NULL);
    assert_string_equal(json_string_value(json_object_get(prod, "X")), "app");
    assert_string_equal(json_string_value(json_object_get(prod, "Y")), "top");
    assert_string_equal(json_string_value(json_object_get(prod, "Z")), "rev");
    assert_string_equal(json_string_value(json_object_get(prod, "L")), "l"); /* a cycle is cut, not looped */
    json_t *build = app_env_merge(app, rev, "build", get_layer, NULL);
    assert_string_equal(json_string_value(json_object_get(build, "X")), "base"); /* the app's X is production only */
    json_decref(prod);
    json_decref(build);
    json_decref(app);
    json_decref(rev);
    json_decref(layers_db);
}

static void test_configs(void **state)
{
    (void)state;
    struct hx_err e = {0};
    const char *good[] = {"{}", "{\"install\":\"deno install\",\"build\":null,\"crons\":true}",
                          "{\"runtime\":{\"type\":\"dynamic\",\"entrypoint\":\"main.ts\",\"args\":[\"--x\"]}}",
                          "{\"runtime\":{\"type\":\"static\",\"cwd\":\"dist\",\"spa\":true}}",
                          "{\"runtime\":{\"type\":\"static\",\"cwd\":\".\"}}", "{\"framework\":\"lume\"}",
                          "{\"framework\":\"\",\"runtime\":{\"type\":\"dynamic\"}}"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        json_t *j = json_loads(good[i], 0, NULL);
        assert_int_equal(app_config_check(j, &e), 0);
        json_decref(j);
    }
    const char *bad[] = {"[]", "{\"install\":5}", "{\"runtime\":{\"type\":\"other\"}}",
                         "{\"runtime\":{\"type\":\"dynamic\",\"entrypoint\":\"../x.ts\"}}",
                         "{\"runtime\":{\"type\":\"dynamic\",\"args\":[1]}}", "{\"runtime\":{\"type\":\"static\"}}",
                         "{\"runtime\":{\"type\":\"static\",\"cwd\":\"../out\"}}",
                         "{\"runtime\":{\"type\":\"static\",\"cwd\":\"/etc\"}}",
                         "{\"runtime\":{\"type\":\"static\",\"cwd\":\"dist\",\"spa\":\"yes\"}}",
                         "{\"runtime\":{\"type\":\"static\",\"cwd\":\"dist\",\"entrypoint\":\"x.ts\"}}",
                         "{\"runtime\":{\"type\":\"dynamic\",\"spa\":true}}", "{\"framework\":\"rails\"}",
                         "{\"framework\":\"lume\",\"runtime\":{\"type\":\"dynamic\"}}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_t *j = json_loads(bad[i], 0, NULL);
        assert_true(app_config_check(j, &e) < 0);
        json_decref(j);
    }
}

/* A preset fills what the config leaves out; explicit values (also null) win. */
static void test_presets(void **state)
{
    (void)state;
    struct hx_err e = {0};
    json_t *c = json_loads("{\"framework\":\"lume\"}", 0, NULL);
    assert_int_equal(app_config_resolve(c, &e), 0);
    assert_string_equal(json_string_value(json_object_get(c, "build")), "deno task build");
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "runtime"), "type")), "static");
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "runtime"), "cwd")), "_site");
    assert_int_equal(app_revision_config_check(c, &e), 0);
    assert_true(app_config_check(c, &e) < 0); /* as an AppConfig: framework and runtime are exclusive */
    json_decref(c);
    c = json_loads("{\"framework\":\"fresh\",\"install\":null,\"build\":\"make\"}", 0, NULL);
    assert_int_equal(app_config_resolve(c, &e), 0);
    assert_true(json_is_null(json_object_get(c, "install")));
    assert_string_equal(json_string_value(json_object_get(c, "build")), "make");
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "runtime"), "entrypoint")),
                        "_fresh/server.js");
    json_decref(c);
    c = json_loads("{\"framework\":\"rails\"}", 0, NULL);
    assert_int_equal(app_config_resolve(c, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "unknown framework preset"));
    json_decref(c);
    c = json_loads("{}", 0, NULL);
    assert_int_equal(app_config_resolve(c, &e), 0);
    assert_int_equal(json_object_size(c), 0);
    json_decref(c);
    const char *names[] = {"astro", "fresh", "lume", "nextjs", "nuxt", "remix", "solidstart", "sveltekit",
                           "tanstackstart"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const struct app_preset *p = app_preset_find(names[i]);
        assert_non_null(p);
        json_t *rt = app_preset_runtime(p);
        json_t *cfg = json_pack("{s:o}", "runtime", rt);
        assert_int_equal(app_revision_config_check(cfg, &e), 0);
        json_decref(cfg);
    }
}

static void test_instances_label(void **state)
{
    (void)state;
    struct hx_err e = {0};
    json_t *l = json_pack("{s:s}", "hutch.instances", "3");
    assert_int_equal(app_labels_check(l, &e), 0);
    assert_int_equal(app_instances(l), 3);
    json_decref(l);
    const char *bad[] = {"0", "9", "12", "", "x", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        l = json_pack("{s:s}", "hutch.instances", bad[i]);
        assert_true(app_labels_check(l, &e) < 0);
        json_decref(l);
    }
    l = json_object();
    assert_int_equal(app_instances(l), 1);
    json_decref(l);
}

static void test_iso8601(void **state)
{
    (void)state;
    assert_int_equal(app_parse_iso8601_ms("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(app_parse_iso8601_ms("1970-01-01T00:00:01.5Z"), 1500);
    assert_int_equal(app_parse_iso8601_ms("1970-01-02"), 86400000);
    assert_int_equal(app_parse_iso8601_ms("1970-01-01T01:00:00+01:00"), 0);
    assert_int_equal(app_parse_iso8601_ms("2026-12-07T13:14:44.816Z"), 1796649284816LL);
    const char *bad[] = {"", "2026", "2026-1-01", "2026- 1- 1", "2026-+1-01", "2026-13-01", "1969-12-31",
                         "2026-01-01T25:00:00Z", "2026-01-01T00:00:00.Z", "2026-01-01T00:00:00Zjunk",
                         "2026-01-01T00:00:00+1:00", "2026-01-01T0:00:00Z", "x026-01-01"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(app_parse_iso8601_ms(bad[i]), -1);
    assert_int_equal(app_parse_iso8601_ms(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rel_paths),
        cmocka_unit_test(test_assets),
        cmocka_unit_test(test_env_updates_and_secrets),
        cmocka_unit_test(test_merge_order_and_contexts),
        cmocka_unit_test(test_configs),
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_instances_label),
        cmocka_unit_test(test_iso8601),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
