/* Apps, layers and revisions (issue 10; docs/apps.md): the pure part.
 * Validation of what clients send (slugs, env vars and their updates,
 * configs, asset maps), ids, the documented env merge order, and what the
 * REST answers show (secret values never). No I/O, no sandbox, no HTTP:
 * the core (core/rest_apps.c, core/deploy.c) calls this, never the other
 * way round. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lib/err.h"

#define APP_ENV_MAX 256            /* env vars per app, layer or revision */
#define APP_ENV_KEY_MAX 128
#define APP_ENV_VALUE_MAX (32 * 1024)
#define APP_LAYERS_MAX 16          /* layers an app, revision or layer names */
#define APP_LAYER_DEPTH 8          /* layers including layers, this deep at most */
#define APP_ARGS_MAX 64
#define APP_CMD_MAX 4096           /* install / build command bytes */
#define APP_ASSETS_MAX 10000       /* files in an asset map */
#define APP_ASSET_PATH_MAX 1024

/* "app_", "lyr_", "rev_" + 20 characters of the sandbox id alphabet. */
int app_id_new(const char *prefix, char out[32]);
/* The SDK's slug rule (as volumes: 2..32 of [a-z0-9-], ...). */
int app_slug_check(const char *s, struct hx_err *e);
/* A random slug for an app created without one: "app-" + 8 characters. */
int app_slug_new(char out[40]);

/* env_vars as EnvVarInit[] → a new array of stored vars
 * {id, key, value, secret, contexts}. */
int app_env_from_init(json_t *init, json_t **out, struct hx_err *e);
/* Applies EnvVarUpdate[] to stored vars (in place): match by id, else by
 * key; {delete: true} removes; a new key needs a value. */
int app_env_update(json_t *vars, json_t *updates, struct hx_err *e);
/* What answers show: secret values removed (the SDK: "undefined if the
 * variable is a secret"). A new array. */
json_t *app_env_public(json_t *vars);
/* Whether a stored var applies in context ("build", "production",
 * "preview"). */
bool app_env_applies(json_t *var, const char *context);

/* Labels: at most 5 (the SDK's rule), keys and values as sandbox labels;
 * hutch's own label APP_INSTANCES_LABEL, when there, a number 1..APP_INSTANCES_MAX. */
int app_labels_check(json_t *labels, struct hx_err *e);
#define APP_INSTANCES_LABEL "hutch.instances"
#define APP_INSTANCES_MAX 8
/* How many instances a revision of an app with these labels runs (1 when
 * the label is absent). */
int app_instances(json_t *labels);
/* An AppConfig / DeployConfig: object with install, build, predeploy
 * (string|null), crons (bool), framework (a preset name or "") or runtime
 * ({type dynamic: entrypoint, args} | {type static: cwd, spa}), not both
 * (the SDK: mutually exclusive). */
int app_config_check(json_t *config, struct hx_err *e);
/* The same for a revision's config after app_config_resolve (framework and
 * runtime may both be there). */
int app_revision_config_check(json_t *config, struct hx_err *e);

/* Framework presets (presets.c, docs/apps.md): defaults for the install
 * and build commands and the runtime. */
struct app_preset {
    const char *name, *install, *build;
    bool is_static;         /* runtime static at target, else dynamic with entrypoint target */
    const char *target;
    const char *args[3];    /* a dynamic runtime's args, NULL-terminated */
    bool serve;             /* the entrypoint is a module with `export default {fetch}`: `deno serve` */
};
const struct app_preset *app_preset_find(const char *name);
/* "astro, fresh, ..." for messages. */
const char *app_preset_names(void);
/* The preset's runtime config (a new object). */
json_t *app_preset_runtime(const struct app_preset *p);
/* Fills a config's absent install, build and runtime from its framework's
 * preset, in place (explicit values, also null, win). -EINVAL for an
 * unknown preset. */
int app_config_resolve(json_t *config, struct hx_err *e);

/* A relative path inside the app directory: no absolute path, no "..",
 * no empty or "." component, no NUL, at most APP_ASSET_PATH_MAX bytes. */
int app_rel_path_check(const char *p, struct hx_err *e);
/* An asset map {path: {kind?: "file", encoding?, content} | {kind:
 * "symlink", target}}: every path checked, symlink targets relative and
 * inside (no escaping with ".."), content decodable. */
int app_assets_check(json_t *assets, size_t *total_bytes, struct hx_err *e);

/* Layer references as given (ids or slugs): an array of at most
 * APP_LAYERS_MAX strings. */
int app_layer_refs_check(json_t *refs, struct hx_err *e);

/* ISO 8601 "YYYY-MM-DD[THH:MM:SS[.fff]][Z|+HH:MM|-HH:MM]" (years 1970..9999)
 * as ms since the epoch; -1 when malformed. */
int64_t app_parse_iso8601_ms(const char *s);

/* The merge (docs/apps.md): start empty; for each of the app's layers in
 * order, its included layers first (depth first, in order), then its own
 * vars; then the app's vars; then the revision's vars (every context).
 * Later wins. Only vars that apply in context count. get_layer(id, ud)
 * returns a borrowed layer doc or NULL. Cycles and depth past
 * APP_LAYER_DEPTH are skipped. A new object {KEY: value}. */
json_t *app_env_merge(json_t *app, json_t *revision_vars, const char *context,
                      json_t *(*get_layer)(const char *id, void *ud), void *ud);
