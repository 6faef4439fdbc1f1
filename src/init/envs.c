/* The sandbox environment: an insertion-ordered string map that envSet /
 * envDelete change and every later spawn starts from. Bounded in size. */
#include "init/init.h"
#include <stdio.h>

#define ENV_MAX_VARS 4096
#define ENV_MAX_KEY 1024
#define ENV_MAX_VALUE (128u * 1024u)   /* the kernel's MAX_ARG_STRLEN */
#define ENV_MAX_TOTAL (1024u * 1024u)  /* bytes of "K=V\0" in one spawn */

struct env_var {
    char *key, *value;
};
static struct env_var *g_vars;
static size_t g_n, g_cap;

bool env_key_valid(const char *key)
{
    size_t n = key ? strnlen(key, ENV_MAX_KEY + 1) : 0;
    return n > 0 && n <= ENV_MAX_KEY && !strchr(key, '=');
}

static bool value_valid(const char *v)
{
    return v && strnlen(v, ENV_MAX_VALUE + 1) <= ENV_MAX_VALUE;
}

static ssize_t find(const char *key)
{
    for (size_t i = 0; i < g_n; i++)
        if (strcmp(g_vars[i].key, key) == 0)
            return (ssize_t)i;
    return -1;
}

int env_set(const char *key, const char *value, struct hx_err *e)
{
    if (!env_key_valid(key))
        return hx_fail(e, EINVAL, "invalid environment variable name");
    if (!value_valid(value))
        return hx_fail(e, E2BIG, "environment value too long");
    char *v = strdup(value);
    if (!v)
        return hx_fail(e, ENOMEM, "out of memory");
    ssize_t i = find(key);
    if (i >= 0) {
        free(g_vars[i].value);
        g_vars[i].value = v;
        return 0;
    }
    if (g_n >= ENV_MAX_VARS) {
        free(v);
        return hx_fail(e, E2BIG, "too many environment variables");
    }
    if (g_n == g_cap) {
        size_t cap = g_cap ? g_cap * 2 : 32;
        struct env_var *nv = realloc(g_vars, cap * sizeof *nv);
        if (!nv) {
            free(v);
            return hx_fail(e, ENOMEM, "out of memory");
        }
        g_vars = nv;
        g_cap = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return hx_fail(e, ENOMEM, "out of memory");
    }
    g_vars[g_n++] = (struct env_var){k, v};
    return 0;
}

const char *env_get(const char *key)
{
    ssize_t i = key ? find(key) : -1;
    return i >= 0 ? g_vars[i].value : NULL;
}

bool env_delete(const char *key)
{
    ssize_t i = key ? find(key) : -1;
    if (i < 0)
        return false;
    free(g_vars[i].key);
    free(g_vars[i].value);
    memmove(&g_vars[i], &g_vars[i + 1], (g_n - (size_t)i - 1) * sizeof *g_vars);
    g_n--;
    return true;
}

json_t *env_to_json(void)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < g_n; i++)
        json_object_set_new(o, g_vars[i].key, json_string(g_vars[i].value));
    return o;
}

void env_init_defaults(void)
{
    static const char *const defaults[][2] = {
        {"HOME", "/home/app"},
        {"USER", "app"},
        {"LOGNAME", "app"},
        {"SHELL", "/bin/bash"},
        {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        {"LANG", "C.UTF-8"},
    };
    for (size_t i = 0; i < HX_ARRAY_LEN(defaults); i++)
        env_set(defaults[i][0], defaults[i][1], NULL);
}

void env_free_block(char **block)
{
    if (!block)
        return;
    for (char **p = block; *p; p++)
        free(*p);
    free(block);
}

/* Appends or replaces KEY in block[0..*n): later sources win. */
static int block_put(char **block, size_t *n, size_t *total, const char *k, const char *v, struct hx_err *e)
{
    size_t kl = strlen(k), vl = strlen(v);
    *total += kl + vl + 2;
    if (*total > ENV_MAX_TOTAL)
        return hx_fail(e, E2BIG, "environment too large");
    char *s = malloc(kl + vl + 2);
    if (!s)
        return hx_fail(e, ENOMEM, "out of memory");
    memcpy(s, k, kl);
    s[kl] = '=';
    memcpy(s + kl + 1, v, vl + 1);
    for (size_t i = 0; i < *n; i++) {
        if (strncmp(block[i], k, kl) == 0 && block[i][kl] == '=') {
            free(block[i]);
            block[i] = s;
            return 0;
        }
    }
    block[(*n)++] = s;
    return 0;
}

char **env_build(bool clear, json_t *extra, struct hx_err *e)
{
    size_t extra_n = json_is_object(extra) ? json_object_size(extra) : 0;
    if (extra_n > ENV_MAX_VARS) {
        hx_fail(e, E2BIG, "too many environment variables");
        return NULL;
    }
    size_t cap = (clear ? 0 : g_n) + extra_n + 1, n = 0, total = 0;
    char **block = calloc(cap, sizeof *block);
    if (!block) {
        hx_fail(e, ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t i = 0; !clear && i < g_n; i++)
        if (block_put(block, &n, &total, g_vars[i].key, g_vars[i].value, e) < 0)
            goto fail;
    if (extra_n) {
        const char *k;
        json_t *v;
        json_object_foreach(extra, k, v) {
            if (!env_key_valid(k) || !json_is_string(v) || !value_valid(json_string_value(v))) {
                hx_fail(e, EINVAL, "invalid environment variable %.64s", k);
                goto fail;
            }
            if (block_put(block, &n, &total, k, json_string_value(v), e) < 0)
                goto fail;
        }
    }
    return block;
fail:
    env_free_block(block);
    return NULL;
}
