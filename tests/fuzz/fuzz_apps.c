/* What clients send for apps (src/daemon/apps/model.c): relative paths,
 * ISO 8601 times, asset maps, env var updates, configs and layer refs. The
 * first byte picks the parser, the rest is the string (or JSON text). */
#include "fuzz.h"
#include <errno.h>
#include <jansson.h>
#include "daemon/apps/apps.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    uint8_t which = fuzz_u8(&in);
    char *s = fuzz_strndup(in.p, in.n);
    struct hx_err e = {0};
    switch (which % 6) {
    case 0:
        if (app_rel_path_check(s, &e) == 0)
            FUZZ_CHECK(s[0] != '/' && !strstr(s, "//") && strcmp(s, "..") && strncmp(s, "../", 3));
        break;
    case 1: {
        int64_t ms = app_parse_iso8601_ms(s);
        FUZZ_CHECK(ms >= -1);
        break;
    }
    default: {
        json_t *j = json_loadb((const char *)in.p, in.n, 0, NULL);
        if (which % 6 == 2) {
            size_t total = 0;
            if (app_assets_check(j, &total, &e) == 0) {
                const char *k;
                json_t *v;
                json_object_foreach(j, k, v) FUZZ_CHECK(app_rel_path_check(k, &e) == 0);
            }
        } else if (which % 6 == 3) {
            json_t *vars = json_array();
            if (app_env_update(vars, j, &e) == 0) {
                FUZZ_CHECK(json_array_size(vars) <= APP_ENV_MAX);
                json_t *pub = app_env_public(vars);
                size_t i;
                json_t *v;
                json_array_foreach(pub, i, v) if (json_is_true(json_object_get(v, "secret")))
                    FUZZ_CHECK(!json_object_get(v, "value"));
                json_decref(pub);
            }
            json_decref(vars);
        } else if (which % 6 == 4) {
            app_config_check(j, &e);
        } else {
            app_layer_refs_check(j, &e);
        }
        json_decref(j);
    }
    }
    free(s);
    return 0;
}
