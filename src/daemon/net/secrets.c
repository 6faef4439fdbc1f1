/* Secrets: validation, placeholders and memory hygiene (see secrets.h). */
#include "daemon/net/secrets.h"
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "lib/sanitizer.h"
#include "proxy/policy.h"
#include "proxy/subst.h"

#ifdef HX_LEAK_CHECKED
/* LeakSanitizer checks at exit from a thread that ptraces the process, which
 * fails on a process that is not dumpable ("LeakSanitizer has encountered a
 * fatal error"), so a sanitizer build's hutchd that ever held a secret was
 * never leak-checked. Registered after the sanitizer's own exit hook, this
 * runs before it. Sanitizer builds only: a release hutchd stays undumpable. */
static void dumpable_for_leak_check(void)
{
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}
#endif

static void hold_secrets_undumpable(void)
{
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#ifdef HX_LEAK_CHECKED
    static int registered;
    if (!registered++)
        atexit(dumpable_for_leak_check);
#endif
}

static int name_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 128 || (k[0] >= '0' && k[0] <= '9'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* Header-safe: visible ASCII and space, nothing that could end a header line. */
static int value_ok(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e)
            return 0;
    return 1;
}

/* As long as the value (so substitution never changes framing), letters and
 * digits drawn at random, never equal to the value. */
static int draw_placeholder(char *out, size_t len, const char *value)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char r[SUBST_VALUE_MAX];
    do {
        if (RAND_bytes(r, (int)len) != 1)
            return -1;
        for (size_t i = 0; i < len; i++)
            out[i] = alpha[r[i] % 62]; /* 256 % 62 bias is irrelevant at these lengths */
        out[len] = 0;
    } while (memcmp(out, value, len) == 0);
    return 0;
}

void secrets_free(struct secret_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        if (s->s[i].value)
            explicit_bzero(s->s[i].value, s->s[i].len);
        free(s->s[i].value);
        free(s->s[i].placeholder);
        json_decref(s->s[i].hosts);
    }
    free(s->s);
    free(s);
}

int secrets_parse(json_t *conf, json_t *env, struct secret_set **out, struct hx_err *e)
{
    *out = NULL;
    if (!conf || json_is_null(conf) || (json_is_object(conf) && json_object_size(conf) == 0))
        return 0;
    if (!json_is_object(conf))
        return hx_fail(e, EINVAL, "secrets must be an object {NAME: {hosts: [...], value: string}}");
    if (json_object_size(conf) > SUBST_SECRETS_MAX)
        return hx_fail(e, EINVAL, "at most %d secrets per sandbox", SUBST_SECRETS_MAX);
    const char *k;
    json_t *v;
    json_object_foreach(conf, k, v) {
        if (!name_ok(k))
            return hx_fail(e, EINVAL, "secret name \"%.64s\" is not an environment variable name", k);
        if (env && json_object_get(env, k))
            return hx_fail(e, EINVAL, "secret %s is also set in env", k);
        json_t *val = json_object_get(v, "value"), *hosts = json_object_get(v, "hosts");
        if (!json_is_object(v) || !json_is_string(val))
            return hx_fail(e, EINVAL, "secret %s: value must be a string", k);
        size_t n = json_string_length(val);
        if (n < SUBST_VALUE_MIN || n > SUBST_VALUE_MAX || !value_ok(json_string_value(val), n))
            return hx_fail(e, EINVAL, "secret %s: the value must be %d to %d printable ASCII characters", k,
                           SUBST_VALUE_MIN, SUBST_VALUE_MAX);
        if (!json_is_array(hosts) || json_array_size(hosts) == 0 || json_array_size(hosts) > POLICY_RULES_MAX)
            return hx_fail(e, EINVAL, "secret %s: hosts must be a non-empty array of host names", k);
        size_t i;
        json_t *h;
        json_array_foreach(hosts, i, h) {
            struct policy_rule rule;
            char why[200];
            if (!json_is_string(h) ||
                policy_parse_entry(json_string_value(h), json_string_length(h), &rule, why, sizeof why) < 0)
                return hx_fail(e, EINVAL, "secret %s: %s", k, json_is_string(h) ? why : "hosts must be strings");
            if (rule.kind != RULE_NAME && rule.kind != RULE_WILDCARD)
                return hx_fail(e, EINVAL, "secret %s: hosts must be names (TLS interception needs one), not addresses", k);
        }
    }
    struct secret_set *set = calloc(1, sizeof *set);
    if (!set || !(set->s = calloc(json_object_size(conf), sizeof *set->s))) {
        free(set);
        return hx_fail(e, ENOMEM, "out of memory");
    }
    /* hutchd now holds secret values: no core dump of it may carry them */
    hold_secrets_undumpable();
    json_object_foreach(conf, k, v) {
        json_t *val = json_object_get(v, "value");
        struct secret *s = &set->s[set->n++];
        s->len = json_string_length(val);
        snprintf(s->name, sizeof s->name, "%s", k);
        s->value = malloc(s->len + 1);
        s->placeholder = malloc(s->len + 1);
        s->hosts = json_deep_copy(json_object_get(v, "hosts"));
        if (!s->value || !s->placeholder || !s->hosts) {
            secrets_free(set);
            return hx_fail(e, ENOMEM, "out of memory");
        }
        memcpy(s->value, json_string_value(val), s->len + 1);
        if (draw_placeholder(s->placeholder, s->len, s->value) < 0) {
            secrets_free(set);
            return hx_fail(e, EIO, "could not draw a placeholder");
        }
    }
    *out = set;
    return 0;
}

json_t *secrets_env(const struct secret_set *s)
{
    json_t *o = json_object();
    for (size_t i = 0; s && i < s->n; i++)
        json_object_set_new(o, s->s[i].name, json_string(s->s[i].placeholder));
    return o;
}

json_t *secrets_for_proxy(const struct secret_set *s)
{
    json_t *a = json_array();
    for (size_t i = 0; s && i < s->n; i++)
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:O}", "name", s->s[i].name, "placeholder",
                                           s->s[i].placeholder, "value", s->s[i].value, "hosts", s->s[i].hosts));
    return a;
}

static void scrub_value(json_t *o)
{
    json_t *v = json_object_get(o, "value");
    if (json_is_string(v))
        explicit_bzero((char *)json_string_value(v), json_string_length(v));
}

void secrets_scrub_json(json_t *v)
{
    const char *k;
    json_t *x;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach(v, k, x) scrub_value(x);
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x) scrub_value(x);
    }
}

int secrets_has(const struct secret_set *s, const char *name)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (strcmp(s->s[i].name, name) == 0)
            return 1;
    return 0;
}

/* ---- live restore: values kept in the kernel's keyring ----------------
 * A sandbox that outlives hutchd keeps its secrets in a "user" key on root's
 * user keyring (kernel memory: never a file, never the database), readable
 * by root only; the next hutchd reads them back once and then removes the
 * key when the sandbox stops. */
#define KEY_SPEC_USER_KEYRING (-4)
#define KEYCTL_SETPERM 5
#define KEYCTL_SEARCH 10
#define KEYCTL_READ 11
#define KEYCTL_INVALIDATE 21
#define KEY_POS_ALL 0x3f000000u
#define KEY_USR_ALL 0x003f0000u
#define KEY_PAYLOAD_MAX 32767 /* the "user" key type's limit */

static long key_search(const char *desc)
{
    return syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", desc, 0);
}

int secrets_keep(const struct secret_set *s, const char *desc, struct hx_err *e)
{
    json_t *a = secrets_for_proxy(s);
    char *t = json_dumps(a, JSON_COMPACT);
    secrets_scrub_json(a);
    json_decref(a);
    if (!t)
        return hx_fail(e, ENOMEM, "out of memory");
    size_t n = strlen(t);
    long id = n <= KEY_PAYLOAD_MAX ? syscall(SYS_add_key, "user", desc, t, n, KEY_SPEC_USER_KEYRING) : -1;
    int err = n <= KEY_PAYLOAD_MAX ? errno : E2BIG;
    explicit_bzero(t, n);
    free(t);
    if (id < 0)
        return hx_fail(e, err, "keep secrets in the kernel keyring: %s", strerror(err));
    /* root (any session keyring: systemd gives services a private one) may read it, nobody else */
    if (syscall(SYS_keyctl, KEYCTL_SETPERM, id, KEY_POS_ALL | KEY_USR_ALL) < 0) {
        err = errno;
        syscall(SYS_keyctl, KEYCTL_INVALIDATE, id);
        return hx_fail(e, err, "keyring permissions: %s", strerror(err));
    }
    return 0;
}

void secrets_forget(const char *desc)
{
    long id = key_search(desc);
    if (id >= 0)
        syscall(SYS_keyctl, KEYCTL_INVALIDATE, id);
}

int secrets_recall(const char *desc, struct secret_set **out, struct hx_err *e)
{
    *out = NULL;
    long id = key_search(desc);
    if (id < 0)
        return hx_fail(e, ENOENT, "no secrets kept for %s", desc);
    char *buf = malloc(KEY_PAYLOAD_MAX + 1);
    if (!buf)
        return hx_fail(e, ENOMEM, "out of memory");
    long n = syscall(SYS_keyctl, KEYCTL_READ, id, buf, KEY_PAYLOAD_MAX);
    if (n < 0 || n > KEY_PAYLOAD_MAX) {
        int err = n < 0 ? errno : E2BIG;
        free(buf);
        return hx_fail(e, err, "read kept secrets: %s", strerror(err));
    }
    json_t *a = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    explicit_bzero(buf, (size_t)n);
    free(buf);
    /* Back into the SDK's shape, then through the same checks as a create. */
    json_t *conf = json_object();
    size_t i;
    json_t *x;
    json_array_foreach(a, i, x) {
        const char *name = json_string_value(json_object_get(x, "name"));
        if (name)
            json_object_set(conf, name, x);
    }
    int r = json_is_array(a) && json_object_size(conf) == json_array_size(a) ? secrets_parse(conf, NULL, out, e)
                                                                              : hx_fail(e, EINVAL, "kept secrets are malformed");
    /* the placeholders the sandbox has are the kept ones, not fresh draws */
    for (size_t k = 0; r == 0 && *out && k < (*out)->n; k++) {
        struct secret *s = &(*out)->s[k];
        json_t *ph = json_object_get(json_object_get(conf, s->name), "placeholder");
        if (!json_is_string(ph) || json_string_length(ph) != s->len) {
            secrets_free(*out);
            *out = NULL;
            r = hx_fail(e, EINVAL, "kept secrets are malformed");
            break;
        }
        memcpy(s->placeholder, json_string_value(ph), s->len + 1);
    }
    secrets_scrub_json(a);
    json_decref(conf);
    json_decref(a);
    return r;
}
