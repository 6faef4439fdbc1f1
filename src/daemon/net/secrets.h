/* Secrets of a sandbox on the host side (issue 5): validation of the SDK's
 * `secrets` ({NAME: {hosts: [..], value: str}}), random placeholders, and
 * the hand-over to hutch-proxy. Values live only in memory (zeroed when
 * freed) and never appear in a log line, an error message or a file. */
#pragma once
#include <jansson.h>
#include <stddef.h>
#include "lib/err.h"

struct secret {
    char name[129];
    char *value, *placeholder;   /* NUL-terminated, len bytes each */
    size_t len;
    json_t *hosts;               /* array of strings, allowNet syntax */
};

struct secret_set {
    size_t n;
    struct secret *s;
};

/* Validates conf (absent/null = none) and draws placeholders. env is the
 * create's env (names may not collide). *out is NULL when there are none.
 * Error messages name the secret, never its value. */
int secrets_parse(json_t *conf, json_t *env, struct secret_set **out, struct hx_err *e);
void secrets_free(struct secret_set *s);
/* {NAME: placeholder}: the sandbox's environment. New reference. */
json_t *secrets_env(const struct secret_set *s);
/* [{"name", "placeholder", "value", "hosts"}] for PX_POLICY. New reference;
 * scrub it with secrets_scrub_json before freeing. */
json_t *secrets_for_proxy(const struct secret_set *s);
/* Zeroes every "value" string in an SDK config's secrets (or a proxy array). */
void secrets_scrub_json(json_t *v);
/* True if name is one of the set's secret names. */
int secrets_has(const struct secret_set *s, const char *name);

/* Live restore (docs/restore.md): the set kept in the kernel keyring under
 * desc (root's user keyring, root-only), read back by the next hutchd, and
 * forgotten when the sandbox stops. */
int secrets_keep(const struct secret_set *s, const char *desc, struct hx_err *e);
int secrets_recall(const char *desc, struct secret_set **out, struct hx_err *e);
void secrets_forget(const char *desc);
