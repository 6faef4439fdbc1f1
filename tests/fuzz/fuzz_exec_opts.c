/* The raw exec channel's options (src/daemon/core/exec_opts.c): a client's
 * query string, into the params of a spawn. */
#include "fuzz.h"
#include "daemon/core/exec_opts.h"

static bool all_strings(json_t *v)
{
    size_t i;
    const char *k;
    json_t *x;
    if (json_is_array(v)) {
        json_array_foreach(v, i, x) if (!json_is_string(x)) return false;
    } else {
        json_object_foreach(v, k, x) if (!json_is_string(x) || !*k || strchr(k, '=')) return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *params = json_object();
    bool stdin_piped = true, pty = false;
    char err[160] = "";
    bool ok = exec_opts_parse((const char *)data, size, params, &stdin_piped, &pty, err, sizeof err);
    if (ok) {
        json_t *cmd = json_object_get(params, "command"), *args = json_object_get(params, "args");
        json_t *env = json_object_get(params, "env"), *tty = json_object_get(params, "pty");
        FUZZ_CHECK(json_is_string(cmd) && strlen(json_string_value(cmd)) == json_string_length(cmd)); /* no NUL */
        FUZZ_CHECK(json_is_array(args) && json_array_size(args) <= EXEC_OPTS_MAX_ARGS && all_strings(args));
        FUZZ_CHECK(json_is_object(env) && json_object_size(env) <= EXEC_OPTS_MAX_ENV && all_strings(env));
        FUZZ_CHECK(pty == (tty != NULL));
        if (tty) {
            json_int_t r = json_integer_value(json_object_get(tty, "rows"));
            json_int_t c = json_integer_value(json_object_get(tty, "cols"));
            FUZZ_CHECK(r >= 1 && r <= 1000 && c >= 1 && c <= 1000);
        }
        for (size_t i = 0; i < json_array_size(args); i++) {
            json_t *a = json_array_get(args, i);
            FUZZ_CHECK(strlen(json_string_value(a)) == json_string_length(a));
        }
        char *t = json_dumps(params, JSON_COMPACT); /* what goes to the spawn must serialise */
        FUZZ_CHECK(t != NULL);
        free(t);
    } else {
        FUZZ_CHECK(err[0] != 0);
    }
    json_decref(params);
    return 0;
}
