/* The pure part of apps (apps.h): validation, ids, env vars and the merge. */
#include "daemon/apps/apps.h"
#include <ctype.h>
#include <stdio.h>
#include <time.h>
#include <string.h>
#include "daemon/storage/names.h"
#include "lib/b64.h"
#include "lib/strparse.h"

int app_id_new(const char *prefix, char out[32])
{
    size_t n = strlen(prefix);
    if (n != 3)
        return -EINVAL;
    memcpy(out, prefix, 3);
    out[3] = '_';
    return hx_random_chars(HX_ID_ALPHABET, sizeof HX_ID_ALPHABET - 1, out + 4, 20);
}

int app_slug_check(const char *s, struct hx_err *e)
{
    return vol_slug_check(s, e);
}

int app_slug_new(char out[40])
{
    memcpy(out, "app-", 4);
    return hx_random_chars("abcdefghijklmnopqrstuvwxyz0123456789", 36, out + 4, 8);
}

static bool env_key_valid(const char *k)
{
    size_t n = k ? strlen(k) : 0;
    if (n == 0 || n > APP_ENV_KEY_MAX || (k[0] >= '0' && k[0] <= '9'))
        return false;
    return strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

static const char *const contexts[] = {"build", "production", "preview"};

static int contexts_check(json_t *c, struct hx_err *e)
{
    if (!c || json_is_null(c))
        return 0;
    if (json_is_string(c) && strcmp(json_string_value(c), "all") == 0)
        return 0;
    if (!json_is_array(c) || json_array_size(c) > 8)
        return hx_fail(e, EINVAL, "contexts must be \"all\" or an array of \"build\", \"production\", \"preview\"");
    size_t i;
    json_t *v;
    json_array_foreach(c, i, v) {
        bool ok = false;
        for (size_t k = 0; k < HX_ARRAY_LEN(contexts) && json_is_string(v); k++)
            ok |= strcmp(json_string_value(v), contexts[k]) == 0;
        if (!ok)
            return hx_fail(e, EINVAL, "contexts: unknown context (use \"build\", \"production\", \"preview\")");
    }
    return 0;
}

static int value_check(json_t *v, const char *key, struct hx_err *e)
{
    const char *s = json_string_value(v);
    size_t n = s ? json_string_length(v) : 0;
    if (!s || n > APP_ENV_VALUE_MAX || strlen(s) != n)
        return hx_fail(e, EINVAL, "env var %s: value must be a string of at most %d bytes without NUL", key,
                       APP_ENV_VALUE_MAX);
    return 0;
}

static json_t *contexts_copy(json_t *c)
{
    return !c || json_is_null(c) ? json_string("all") : json_deep_copy(c);
}

int app_env_from_init(json_t *init, json_t **out, struct hx_err *e)
{
    *out = json_array();
    if (!init || json_is_null(init))
        return 0;
    if (!json_is_array(init) || json_array_size(init) > APP_ENV_MAX) {
        json_decref(*out);
        *out = NULL;
        return hx_fail(e, EINVAL, "env_vars must be an array of at most %d {key, value, secret?, contexts?}",
                       APP_ENV_MAX);
    }
    int r = app_env_update(*out, init, e);
    if (r < 0) {
        json_decref(*out);
        *out = NULL;
    }
    return r;
}

static json_t *find_var(json_t *vars, const char *id, const char *key, size_t *idx)
{
    size_t i;
    json_t *v;
    json_array_foreach(vars, i, v) {
        const char *vid = json_string_value(json_object_get(v, "id"));
        const char *vk = json_string_value(json_object_get(v, "key"));
        if ((id && vid && strcmp(id, vid) == 0) || (!id && key && vk && strcmp(key, vk) == 0)) {
            *idx = i;
            return v;
        }
    }
    return NULL;
}

int app_env_update(json_t *vars, json_t *updates, struct hx_err *e)
{
    if (!updates || json_is_null(updates))
        return 0;
    if (!json_is_array(updates) || json_array_size(updates) > APP_ENV_MAX)
        return hx_fail(e, EINVAL, "env_vars must be an array of at most %d entries", APP_ENV_MAX);
    size_t i;
    json_t *u;
    json_array_foreach(updates, i, u) {
        if (!json_is_object(u))
            return hx_fail(e, EINVAL, "env_vars[%zu] must be an object", i);
        json_t *jid = json_object_get(u, "id"), *jkey = json_object_get(u, "key"), *jval = json_object_get(u, "value");
        json_t *jsec = json_object_get(u, "secret"), *jctx = json_object_get(u, "contexts");
        json_t *jdel = json_object_get(u, "delete");
        const char *id = json_string_value(jid), *key = json_string_value(jkey);
        if ((jid && !id) || (jkey && !key) || (jsec && !json_is_boolean(jsec)) || (jdel && !json_is_boolean(jdel)))
            return hx_fail(e, EINVAL, "env_vars[%zu]: id and key are strings, secret and delete booleans", i);
        if (key && !env_key_valid(key))
            return hx_fail(e, EINVAL, "env_vars[%zu]: key must be [A-Za-z_][A-Za-z0-9_]* of at most %d bytes", i,
                           APP_ENV_KEY_MAX);
        if (contexts_check(jctx, e) < 0)
            return hx_wrap(e, "env_vars[%zu]", i);
        size_t idx = 0;
        json_t *cur = (id || key) ? find_var(vars, id, key, &idx) : NULL;
        if (id && !cur)
            return hx_fail(e, ENOENT, "env_vars[%zu]: no variable with id %.40s", i, id);
        if (json_is_true(jdel)) {
            if (cur)
                json_array_remove(vars, idx);
            continue;
        }
        if (jval && value_check(jval, key ? key : id, e) < 0)
            return -EINVAL;
        if (!cur) {
            if (!key || !jval)
                return hx_fail(e, EINVAL, "env_vars[%zu]: a new variable needs a key and a value", i);
            if (json_array_size(vars) >= APP_ENV_MAX)
                return hx_fail(e, E2BIG, "at most %d env vars", APP_ENV_MAX);
            char vid[32];
            if (app_id_new("env", vid) < 0)
                return hx_fail(e, EIO, "no randomness for an id");
            json_array_append_new(vars, json_pack("{s:s, s:s, s:O, s:b, s:o}", "id", vid, "key", key, "value", jval,
                                                  "secret", json_is_true(jsec), "contexts", contexts_copy(jctx)));
            continue;
        }
        if (key)
            json_object_set(cur, "key", jkey);
        if (jval)
            json_object_set(cur, "value", jval);
        if (jsec)
            json_object_set(cur, "secret", jsec);
        if (jctx)
            json_object_set_new(cur, "contexts", contexts_copy(jctx));
    }
    /* one value per key */
    for (size_t a = 0; a < json_array_size(vars); a++)
        for (size_t b = a + 1; b < json_array_size(vars); b++)
            if (json_equal(json_object_get(json_array_get(vars, a), "key"), json_object_get(json_array_get(vars, b), "key")))
                return hx_fail(e, EEXIST, "env var %s is given twice",
                               json_string_value(json_object_get(json_array_get(vars, a), "key")));
    return 0;
}

json_t *app_env_public(json_t *vars)
{
    json_t *out = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(vars, i, v) {
        json_t *c = json_deep_copy(v);
        if (json_is_true(json_object_get(c, "secret")))
            json_object_del(c, "value"); /* write-only: never shown again */
        json_array_append_new(out, c);
    }
    return out;
}

bool app_env_applies(json_t *var, const char *context)
{
    json_t *c = json_object_get(var, "contexts");
    if (!c || json_is_string(c))
        return true;
    size_t i;
    json_t *v;
    json_array_foreach(c, i, v) if (json_is_string(v) && strcmp(json_string_value(v), context) == 0) return true;
    return false;
}

int app_labels_check(json_t *labels, struct hx_err *e)
{
    if (!labels || json_is_null(labels))
        return 0;
    if (json_is_object(labels) && json_object_size(labels) > 5)
        return hx_fail(e, EINVAL, "at most 5 labels");
    int r = hx_labels_validate(labels, e);
    if (r < 0)
        return r;
    json_t *n = json_object_get(labels, APP_INSTANCES_LABEL);
    if (n && app_instances(labels) == 0)
        return hx_fail(e, EINVAL, "label %s must be a number of instances from 1 to %d", APP_INSTANCES_LABEL,
                       APP_INSTANCES_MAX);
    return 0;
}

int app_instances(json_t *labels)
{
    const char *s = json_string_value(json_object_get(labels, APP_INSTANCES_LABEL));
    if (!json_object_get(labels, APP_INSTANCES_LABEL))
        return 1;
    if (!s || strlen(s) != 1 || s[0] < '1' || s[0] > '0' + APP_INSTANCES_MAX)
        return 0;
    return s[0] - '0';
}

static int opt_cmd(json_t *c, const char *k, struct hx_err *e)
{
    json_t *v = json_object_get(c, k);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) > APP_CMD_MAX || strlen(json_string_value(v)) != json_string_length(v))
        return hx_fail(e, EINVAL, "config.%s must be a command string of at most %d bytes, or null", k, APP_CMD_MAX);
    return 0;
}

static int config_check(json_t *config, bool resolved, struct hx_err *e)
{
    if (!config || json_is_null(config))
        return 0;
    if (!json_is_object(config))
        return hx_fail(e, EINVAL, "config must be an object");
    int r;
    if ((r = opt_cmd(config, "install", e)) < 0 || (r = opt_cmd(config, "build", e)) < 0 ||
        (r = opt_cmd(config, "predeploy", e)) < 0)
        return r;
    json_t *crons = json_object_get(config, "crons");
    if (crons && !json_is_boolean(crons))
        return hx_fail(e, EINVAL, "config.crons must be a boolean");
    json_t *fw = json_object_get(config, "framework");
    if (fw && !json_is_null(fw) && !json_is_string(fw))
        return hx_fail(e, EINVAL, "config.framework must be a framework preset name");
    const char *fws = json_string_value(fw);
    if (fws && *fws && !app_preset_find(fws))
        return hx_fail(e, EINVAL, "config.framework: unknown framework preset \"%.32s\" (known: %s)", fws,
                       app_preset_names());
    json_t *rt = json_object_get(config, "runtime");
    if (!rt || json_is_null(rt))
        return 0;
    if (fws && *fws && !resolved)
        return hx_fail(e, EINVAL, "config.framework and config.runtime are mutually exclusive");
    const char *type = json_string_value(json_object_get(rt, "type"));
    if (!json_is_object(rt) || !type || (strcmp(type, "dynamic") && strcmp(type, "static")))
        return hx_fail(e, EINVAL, "config.runtime must be {type: \"dynamic\" | \"static\", ...}");
    json_t *ep = json_object_get(rt, "entrypoint"), *args = json_object_get(rt, "args");
    json_t *cwd = json_object_get(rt, "cwd"), *spa = json_object_get(rt, "spa");
    if (strcmp(type, "static") == 0) {
        if ((ep && !json_is_null(ep)) || (args && !json_is_null(args)))
            return hx_fail(e, EINVAL, "config.runtime: entrypoint and args are for type \"dynamic\"");
        const char *c = json_string_value(cwd);
        if (!c)
            return hx_fail(e, EINVAL, "config.runtime.cwd (the directory to serve) is required for type \"static\"");
        if (strcmp(c, ".") && app_rel_path_check(c, e) < 0)
            return hx_fail(e, EINVAL, "config.runtime.cwd must be \".\" or a relative path inside the app: %s", e->msg);
        if (spa && !json_is_null(spa) && !json_is_boolean(spa))
            return hx_fail(e, EINVAL, "config.runtime.spa must be a boolean");
        return 0;
    }
    if ((cwd && !json_is_null(cwd)) || (spa && !json_is_null(spa)))
        return hx_fail(e, EINVAL, "config.runtime: cwd and spa are for type \"static\"");
    if (ep && !json_is_null(ep) && (!json_is_string(ep) || app_rel_path_check(json_string_value(ep), e) < 0))
        return hx_fail(e, EINVAL, "config.runtime.entrypoint must be a relative path inside the app");
    if (args && !json_is_null(args)) {
        if (!json_is_array(args) || json_array_size(args) > APP_ARGS_MAX)
            return hx_fail(e, EINVAL, "config.runtime.args must be an array of at most %d strings", APP_ARGS_MAX);
        size_t i;
        json_t *a;
        json_array_foreach(args, i, a) if (!json_is_string(a) || json_string_length(a) > 4096 ||
                                           strlen(json_string_value(a)) != json_string_length(a)) return hx_fail(
            e, EINVAL, "config.runtime.args[%zu] must be a string without NUL", i);
    }
    return 0;
}

int app_config_check(json_t *config, struct hx_err *e)
{
    return config_check(config, false, e);
}

int app_revision_config_check(json_t *config, struct hx_err *e)
{
    return config_check(config, true, e);
}

int app_rel_path_check(const char *p, struct hx_err *e)
{
    size_t n = p ? strnlen(p, APP_ASSET_PATH_MAX + 1) : 0;
    if (n == 0 || n > APP_ASSET_PATH_MAX)
        return hx_fail(e, EINVAL, "a path must be 1..%d bytes", APP_ASSET_PATH_MAX);
    if (p[0] == '/')
        return hx_fail(e, EINVAL, "path \"%.100s\" is absolute: paths are relative to the app directory", p);
    for (const char *s = p;;) {
        size_t len = strcspn(s, "/");
        if (len == 0 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
            return hx_fail(e, EINVAL, "path \"%.100s\" has an empty, \".\" or \"..\" component", p);
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                return hx_fail(e, EINVAL, "path \"%.100s\" has a control character", p);
        if (!s[len])
            break;
        s += len + 1;
    }
    return 0;
}

/* A symlink's target, resolved lexically from the link's directory, stays
 * inside the app directory. */
static bool link_inside(const char *path, const char *target)
{
    if (!*target || target[0] == '/')
        return false;
    int depth = 0;
    for (const char *s = path; *s; s++)
        depth += *s == '/';
    for (const char *s = target;;) {
        size_t len = strcspn(s, "/");
        if (len == 2 && s[0] == '.' && s[1] == '.')
            depth--;
        else if (len && !(len == 1 && s[0] == '.'))
            depth++;
        if (depth < 0)
            return false;
        if (!s[len])
            break;
        s += len + 1;
    }
    return true;
}

int app_assets_check(json_t *assets, size_t *total_bytes, struct hx_err *e)
{
    *total_bytes = 0;
    if (!json_is_object(assets) || json_object_size(assets) == 0 || json_object_size(assets) > APP_ASSETS_MAX)
        return hx_fail(e, EINVAL, "assets must be a non-empty object of at most %d {path: asset}", APP_ASSETS_MAX);
    const char *k;
    json_t *a;
    json_object_foreach(assets, k, a) {
        if (app_rel_path_check(k, e) < 0)
            return hx_wrap(e, "assets");
        const char *kind = json_string_value(json_object_get(a, "kind"));
        if (!json_is_object(a) || (kind && strcmp(kind, "file") && strcmp(kind, "symlink")))
            return hx_fail(e, EINVAL, "assets[\"%.100s\"] must be {kind?: \"file\", encoding?, content} or "
                                      "{kind: \"symlink\", target}", k);
        if (kind && strcmp(kind, "symlink") == 0) {
            const char *t = json_string_value(json_object_get(a, "target"));
            if (!t || strlen(t) > APP_ASSET_PATH_MAX || !link_inside(k, t))
                return hx_fail(e, EINVAL, "assets[\"%.100s\"]: a symlink target must be a relative path that stays "
                                          "inside the app", k);
            continue;
        }
        json_t *c = json_object_get(a, "content");
        const char *enc = json_string_value(json_object_get(a, "encoding"));
        if (!json_is_string(c) || (enc && strcmp(enc, "utf-8") && strcmp(enc, "base64")))
            return hx_fail(e, EINVAL, "assets[\"%.100s\"]: content must be a string, encoding \"utf-8\" or \"base64\"", k);
        size_t n = json_string_length(c);
        if (enc && strcmp(enc, "base64") == 0) {
            if (n % 4)
                return hx_fail(e, EINVAL, "assets[\"%.100s\"]: content is not valid base64", k);
            n = n / 4 * 3;
        }
        *total_bytes += n;
    }
    return 0;
}

int app_layer_refs_check(json_t *refs, struct hx_err *e)
{
    if (!refs || json_is_null(refs))
        return 0;
    if (!json_is_array(refs) || json_array_size(refs) > APP_LAYERS_MAX)
        return hx_fail(e, EINVAL, "layers must be an array of at most %d layer ids or slugs", APP_LAYERS_MAX);
    size_t i;
    json_t *v;
    json_array_foreach(refs, i, v) if (!json_is_string(v) || json_string_length(v) == 0 ||
                                       json_string_length(v) > 40) return hx_fail(e, EINVAL,
                                                                                  "layers[%zu] must be an id or slug", i);
    return 0;
}

static void merge_vars(json_t *out, json_t *vars, const char *context)
{
    size_t i;
    json_t *v;
    json_array_foreach(vars, i, v) {
        const char *k = json_string_value(json_object_get(v, "key"));
        json_t *val = json_object_get(v, "value");
        if (k && json_is_string(val) && app_env_applies(v, context))
            json_object_set(out, k, val);
    }
}

static void merge_layer(json_t *out, const char *id, const char *context, json_t *(*get)(const char *, void *),
                        void *ud, const char **stack, int depth)
{
    if (depth >= APP_LAYER_DEPTH)
        return;
    for (int i = 0; i < depth; i++)
        if (strcmp(stack[i], id) == 0)
            return; /* a cycle */
    json_t *l = get(id, ud);
    if (!l)
        return;
    stack[depth] = id;
    size_t i;
    json_t *ref;
    json_array_foreach(json_object_get(l, "layers"), i, ref) {
        const char *rid = json_string_value(json_object_get(ref, "id"));
        if (rid)
            merge_layer(out, rid, context, get, ud, stack, depth + 1);
    }
    merge_vars(out, json_object_get(l, "env_vars"), context);
}

json_t *app_env_merge(json_t *app, json_t *revision_vars, const char *context,
                      json_t *(*get_layer)(const char *id, void *ud), void *ud)
{
    json_t *out = json_object();
    const char *stack[APP_LAYER_DEPTH];
    size_t i;
    json_t *ref;
    json_array_foreach(json_object_get(app, "layers"), i, ref) {
        const char *id = json_string_value(json_object_get(ref, "id"));
        if (id)
            merge_layer(out, id, context, get_layer, ud, stack, 0);
    }
    merge_vars(out, json_object_get(app, "env_vars"), context);
    size_t k;
    json_t *v;
    json_array_foreach(revision_vars, k, v) {
        const char *key = json_string_value(json_object_get(v, "key"));
        json_t *val = json_object_get(v, "value");
        if (key && json_is_string(val))
            json_object_set(out, key, val);
    }
    return out;
}

/* Digits at s[0..n): their value, or -1 (no signs, no blanks: sscanf's %d would take both). */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int64_t app_parse_iso8601_ms(const char *s)
{
    if (!s || strnlen(s, 64) < 10 || s[4] != '-' || s[7] != '-')
        return -1;
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2), h = 0, mi = 0, sec = 0;
    const char *p = s + 10;
    int64_t ms = 0;
    if (*p == 'T' || *p == ' ') {
        if (strnlen(p, 9) < 9 || p[3] != ':' || p[6] != ':')
            return -1;
        h = digits(p + 1, 2), mi = digits(p + 4, 2), sec = digits(p + 7, 2);
        p += 9;
        if (*p == '.') {
            int nd = 0;
            for (p++; isdigit((unsigned char)*p) && nd < 9; p++, nd++)
                if (nd < 3)
                    ms = ms * 10 + (*p - '0');
            if (nd == 0)
                return -1;
            for (; nd < 3; nd++)
                ms *= 10;
        }
    }
    int off = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        if (strnlen(p, 6) < 6 || p[3] != ':')
            return -1;
        int oh = digits(p + 1, 2), om = digits(p + 4, 2);
        if (oh < 0 || om < 0 || oh > 23 || om > 59)
            return -1;
        off = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    }
    if (*p || y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 ||
        mi > 59 || sec < 0 || sec > 60)
        return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = sec};
    time_t t = timegm(&tm);
    return ((int64_t)t - off * 60) * 1000 + ms;
}
