/* Framework presets (apps.h, docs/apps.md "Framework presets"): a table of
 * defaults, filled into a config where it says nothing itself. */
#include <string.h>
#include "daemon/apps/apps.h"

/* install and build run with `sh -c` in the app directory; `deno install`
 * and `deno task build` read package.json as well as deno.json, so one pair
 * serves npm and Deno projects. The runtimes are where each framework's
 * own build puts a server (dynamic, a module deno runs with PORT=8000) or a
 * finished site (static). */
static const struct app_preset presets[] = {
    {"astro", "deno install", "deno task build", true, "dist", {NULL}},
    {"fresh", "deno install", "deno task build", false, "_fresh/server.js", {NULL}, true},
    {"lume", "deno install", "deno task build", true, "_site", {NULL}},
    {"nextjs", "deno install", "deno task build", false, "node_modules/next/dist/bin/next", {"start", NULL}},
    {"nuxt", "deno install", "deno task build", false, ".output/server/index.mjs", {NULL}},
    {"remix", "deno install", "deno task build", false, "node_modules/@remix-run/serve/dist/cli.js",
     {"build/server/index.js", NULL}},
    {"solidstart", "deno install", "deno task build", false, ".output/server/index.mjs", {NULL}},
    {"sveltekit", "deno install", "deno task build", false, "build/index.js", {NULL}},
    {"tanstackstart", "deno install", "deno task build", false, ".output/server/index.mjs", {NULL}},
};

const struct app_preset *app_preset_find(const char *name)
{
    for (size_t i = 0; name && i < HX_ARRAY_LEN(presets); i++)
        if (strcmp(presets[i].name, name) == 0)
            return &presets[i];
    return NULL;
}

const char *app_preset_names(void)
{
    return "astro, fresh, lume, nextjs, nuxt, remix, solidstart, sveltekit, tanstackstart";
}

json_t *app_preset_runtime(const struct app_preset *p)
{
    if (p->is_static)
        return json_pack("{s:s, s:s}", "type", "static", "cwd", p->target);
    json_t *args = json_array();
    for (size_t i = 0; i < HX_ARRAY_LEN(p->args) && p->args[i]; i++)
        json_array_append_new(args, json_string(p->args[i]));
    return json_pack("{s:s, s:s, s:o}", "type", "dynamic", "entrypoint", p->target, "args", args);
}

int app_config_resolve(json_t *config, struct hx_err *e)
{
    const char *fw = json_string_value(json_object_get(config, "framework"));
    if (!fw || !*fw)
        return 0;
    const struct app_preset *p = app_preset_find(fw);
    if (!p)
        return hx_fail(e, EINVAL, "unknown framework preset \"%.32s\" (known: %s)", fw, app_preset_names());
    if (!json_object_get(config, "install"))
        json_object_set_new(config, "install", json_string(p->install));
    if (!json_object_get(config, "build"))
        json_object_set_new(config, "build", json_string(p->build));
    if (!json_object_get(config, "runtime"))
        json_object_set_new(config, "runtime", app_preset_runtime(p));
    return 0;
}
