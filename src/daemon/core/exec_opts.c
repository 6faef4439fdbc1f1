/* The raw exec channel's spawn options: a query string from the client,
 * hostile, into the params of the JSON-RPC spawn (docs/protocol.md "Raw exec
 * channel"). Fuzzed alone (tests/fuzz/fuzz_exec_opts.c). */
#include "daemon/core/exec_opts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "daemon/api/http.h"

/* A decoded value as a JSON string; NULL when it is not UTF-8 (JSON cannot carry it, nor can spawn). */
static json_t *str(const char *v)
{
    return json_string(v);
}

static bool one(json_t *params, const char *name, const char *key, const char *val, char *err, size_t errn)
{
    if (json_object_get(params, name)) {
        snprintf(err, errn, "\"%s\" given twice", key);
        return false;
    }
    json_t *s = str(val);
    if (!s) {
        snprintf(err, errn, "\"%s\" is not UTF-8", key);
        return false;
    }
    json_object_set_new(params, name, s);
    return true;
}

static bool option(json_t *params, const char *key, char *val, bool *stdin_piped, bool *pty, char *err, size_t errn)
{
    json_t *args = json_object_get(params, "args"), *env = json_object_get(params, "env");
    if (strcmp(key, "cmd") == 0)
        return one(params, "command", key, val, err, errn);
    if (strcmp(key, "cwd") == 0)
        return one(params, "cwd", key, val, err, errn);
    if (strcmp(key, "arg") == 0) {
        json_t *s = json_array_size(args) < EXEC_OPTS_MAX_ARGS ? str(val) : NULL;
        if (!s) {
            snprintf(err, errn, json_array_size(args) < EXEC_OPTS_MAX_ARGS ? "\"arg\" is not UTF-8"
                                                                            : "more than %d args", EXEC_OPTS_MAX_ARGS);
            return false;
        }
        json_array_append_new(args, s);
        return true;
    }
    if (strcmp(key, "env") == 0) {
        char *e = strchr(val, '=');
        if (!e || e == val) {
            snprintf(err, errn, "env must be NAME=VALUE, got \"%.64s\"", val);
            return false;
        }
        if (json_object_size(env) >= EXEC_OPTS_MAX_ENV) {
            snprintf(err, errn, "more than %d env entries", EXEC_OPTS_MAX_ENV);
            return false;
        }
        *e = 0;
        json_t *s = str(e + 1);
        if (!s || json_object_set_new(env, val, s) < 0) { /* set_new takes s also when it fails */
            snprintf(err, errn, "\"env\" is not UTF-8");
            return false;
        }
        return true;
    }
    if (strcmp(key, "clearEnv") == 0) {
        bool t = strcmp(val, "true") == 0 || strcmp(val, "1") == 0;
        if (!t && strcmp(val, "false") != 0 && strcmp(val, "0") != 0) {
            snprintf(err, errn, "clearEnv must be true or false");
            return false;
        }
        json_object_set_new(params, "clearEnv", json_boolean(t));
        return true;
    }
    if (strcmp(key, "tty") == 0) {
        unsigned rows = 0, cols = 0;
        char tail;
        if (sscanf(val, "%4ux%4u%c", &rows, &cols, &tail) != 2 || rows < 1 || rows > 1000 || cols < 1 || cols > 1000 ||
            val[0] < '0' || val[0] > '9') {
            snprintf(err, errn, "tty must be ROWSxCOLS, each 1..1000");
            return false;
        }
        json_object_set_new(params, "pty", json_pack("{s:i, s:i}", "rows", (int)rows, "cols", (int)cols));
        *pty = true;
        return true;
    }
    if (strcmp(key, "stdin") == 0 || strcmp(key, "stderr") == 0) {
        if (strcmp(val, "piped") != 0 && strcmp(val, "null") != 0) {
            snprintf(err, errn, "%s must be \"piped\" or \"null\"", key);
            return false;
        }
        if (key[3] == 'i')
            *stdin_piped = val[0] == 'p';
        else
            json_object_set_new(params, "stderr", json_string(val));
        return true;
    }
    snprintf(err, errn, "unknown option \"%s\"", key);
    return false;
}

bool exec_opts_parse(const char *q, size_t qn, json_t *params, bool *stdin_piped, bool *pty, char *err, size_t errn)
{
    json_object_set_new(params, "args", json_array());
    json_object_set_new(params, "env", json_object());
    const char *end = q + qn;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        size_t n = amp ? (size_t)(amp - q) : (size_t)(end - q);
        const char *eq = memchr(q, '=', n);
        size_t kn = eq ? (size_t)(eq - q) : n;
        const char *v = eq ? eq + 1 : q + n;
        size_t vn = (size_t)(q + n - v);
        char key[16];
        if (kn == 0 || kn >= sizeof key || memchr(q, 0, kn)) {
            snprintf(err, errn, "unknown option \"%.*s\"", (int)(kn > 32 ? 32 : kn), q);
            return false;
        }
        memcpy(key, q, kn);
        key[kn] = 0;
        q += n + (amp != NULL);
        bool nul = memchr(v, 0, vn) != NULL;
        for (size_t i = 0; i + 2 < vn && !nul; i++) /* http_pct_decode leaves "%00" as it is */
            nul = v[i] == '%' && v[i + 1] == '0' && v[i + 2] == '0';
        if (nul) {
            snprintf(err, errn, "\"%s\" contains a NUL byte", key);
            return false;
        }
        char *val = http_pct_decode(v, vn, true);
        if (!val) {
            snprintf(err, errn, "out of memory");
            return false;
        }
        bool ok = option(params, key, val, stdin_piped, pty, err, errn);
        free(val);
        if (!ok)
            return false;
    }
    if (!json_object_get(params, "command")) {
        snprintf(err, errn, "the command is missing: ?cmd=NAME[&arg=...]");
        return false;
    }
    return true;
}
