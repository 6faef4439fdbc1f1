/* hutch create: open /api/v3/sandboxes/create with a config, set env, print the id. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>

#include "cli/cli.h"

#define DEFAULT_TIMEOUT "10m"
#define DEFAULT_MEMORY_MIB 1280 /* the SDK's default */

static const char help[] =
    "usage: hutch create [--memory SIZE] [--timeout DUR] [--label K=V]... [--env K=V]...\n"
    "                    [--allow-net HOST]... [--no-net]\n"
    "                    [--secret NAME=@FILE --secret-host NAME=HOST...]...\n"
    "                    [--volume SLUG:/PATH]... [--root SLUG] [--json]\n"
    "\n"
    "Creates a sandbox and prints its id. The sandbox keeps running after this\n"
    "command returns, until its timeout or 'hutch kill ID'.\n"
    "\n"
    "  -m, --memory SIZE   memory limit, e.g. 2GiB, 1280MiB (default 1280MiB)\n"
    "  -t, --timeout DUR   lifetime from now, e.g. 90s, 30m, 2h (default " DEFAULT_TIMEOUT ").\n"
    "                      The SDK's \"session\" timeout (die with the connection) makes no\n"
    "                      sense for a CLI that exits at once, so there is always one.\n"
    "  -l, --label K=V     label the sandbox (repeatable; 'hutch ls --label' filters on them)\n"
    "  -e, --env K=V       set an environment variable for later commands (repeatable)\n"
    "  -a, --allow-net HOST  allow outbound connections to HOST only (repeatable): example.com,\n"
    "                      example.com:443, *.example.com, 203.0.113.10, [2001:db8::1]:443.\n"
    "                      Without it the sandbox may connect anywhere (audited: 'hutch net ID')\n"
    "      --no-net        no network at all (loopback only)\n"
    "      --secret NAME=@FILE  a secret read from FILE (one trailing newline dropped): inside,\n"
    "                      $NAME holds a placeholder; HTTPS to the secret's hosts carries the\n"
    "                      real value in request headers (docs/secrets.md). Never on the command line.\n"
    "      --secret-host NAME=HOST  a host that may receive secret NAME (repeatable, at least one)\n"
    "  -v, --volume VOL:/PATH  mount volume VOL (id or slug) at /PATH, writable by app (repeatable;\n"
    "                      a volume is attached to one running sandbox at a time)\n"
    "  -r, --root VOL      boot from VOL: a bootable volume (a persistent, writable root) or a\n"
    "                      snapshot (read-only, with this sandbox's own writable layer)\n"
    "      --json          print {\"id\": ...} instead of the bare id\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

/* --secret NAME=@FILE / --secret-host NAME=HOST into {NAME: {value, hosts}}. */
static int secret_opt(json_t *secrets, const char *arg, bool is_value, struct hx_err *e)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || eq - arg > 128)
        return hx_fail(e, EINVAL, "--secret%s wants NAME=%s", is_value ? "" : "-host", is_value ? "@FILE" : "HOST");
    char name[129];
    memcpy(name, arg, (size_t)(eq - arg));
    name[eq - arg] = 0;
    json_t *s = json_object_get(secrets, name);
    if (!s) {
        s = json_pack("{s:[]}", "hosts");
        json_object_set_new(secrets, name, s);
    }
    if (!is_value)
        return json_array_append_new(json_object_get(s, "hosts"), json_string(eq + 1)) == 0
                   ? 0 : hx_fail(e, ENOMEM, "out of memory");
    if (eq[1] != '@')
        return hx_fail(e, EINVAL, "--secret %s: give the value as @FILE (a value on the command line is visible to "
                                  "every user in ps)", name);
    int fd = open(eq + 2, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return hx_fail(e, errno, "--secret %s: open %s: %m", name, eq + 2);
    char buf[4098];
    size_t n = 0;
    ssize_t k;
    while (n < sizeof buf - 1 && (k = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)k;
    close(fd);
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = 0;
    json_object_set_new(s, "value", json_stringn(buf, n));
    explicit_bzero(buf, sizeof buf);
    return 0;
}

/* --volume VOL:/PATH into {volume, path}. The server checks the path's rules
 * (absolute, no nesting, not /proc ...); here only the shape. */
static int volume_opt(json_t *volumes, const char *arg, struct hx_err *e)
{
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg || colon[1] != '/')
        return hx_fail(e, EINVAL, "--volume wants VOLUME:/PATH (e.g. my-vol:/data), not '%.100s'", arg);
    char name[64];
    if ((size_t)(colon - arg) >= sizeof name)
        return hx_fail(e, EINVAL, "--volume: the volume name is too long");
    memcpy(name, arg, (size_t)(colon - arg));
    name[colon - arg] = 0;
    if (!cli_storage_name_ok(name))
        return hx_fail(e, EINVAL, "--volume: invalid volume id or slug '%s'", name);
    json_t *v = json_pack("{s:s, s:s}", "volume", name, "path", colon + 1);
    if (!v)
        return hx_fail(e, EINVAL, "--volume: the path must be UTF-8 text");
    return json_array_append_new(volumes, v) == 0 ? 0 : hx_fail(e, ENOMEM, "out of memory");
}

int cmd_create(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        { "memory", required_argument, NULL, 'm' }, { "timeout", required_argument, NULL, 't' },
        { "label", required_argument, NULL, 'l' },  { "env", required_argument, NULL, 'e' },
        { "allow-net", required_argument, NULL, 'a' }, { "no-net", no_argument, NULL, 'N' },
        { "secret", required_argument, NULL, 'S' }, { "secret-host", required_argument, NULL, 'H' },
        { "volume", required_argument, NULL, 'v' }, { "root", required_argument, NULL, 'r' },
        { "json", no_argument, NULL, 'j' },
        CLI_COMMON_OPTS,                            { 0 },
    };
    struct hx_err e = { 0 };
    int64_t memory = DEFAULT_MEMORY_MIB, timeout_ms = 0;
    json_t *labels = json_object();
    json_t *env = json_object();
    json_t *config = NULL;
    json_t *allow_net = NULL; /* absent: unrestricted */
    json_t *secrets = json_object();
    json_t *volumes = json_array();
    const char *root = NULL;
    bool as_json = false;
    struct hutch_target t = { 0 };
    struct hutch_conn *c = NULL;
    int ret = 1, ch;
    (void)cli_parse_duration(DEFAULT_TIMEOUT, &timeout_ms, &e);

    while ((ch = getopt_long(argc, argv, "+:hm:t:l:e:a:S:H:v:r:", opts, NULL)) != -1) {
        switch (ch) {
        case 'h':
            fputs(help, stdout);
            ret = 0;
            goto out;
        case 'm':
            if (cli_parse_memory(optarg, &memory, &e) < 0) {
                ret = cli_usage("create", "%s", e.msg);
                goto out;
            }
            break;
        case 't':
            if (cli_parse_duration(optarg, &timeout_ms, &e) < 0) {
                ret = cli_usage("create", "%s", e.msg);
                goto out;
            }
            break;
        case 'l':
        case 'e':
            if (cli_parse_kv(optarg, ch == 'l' ? labels : env, ch == 'l' ? "label" : "env", &e) < 0) {
                ret = cli_usage("create", "%s", e.msg);
                goto out;
            }
            break;
        case 'a':
        case 'N':
            if (!allow_net)
                allow_net = json_array();
            if (ch == 'a')
                json_array_append_new(allow_net, json_string(optarg)); /* the server validates */
            break;
        case 'S':
        case 'H':
            if (secret_opt(secrets, optarg, ch == 'S', &e) < 0) {
                ret = cli_usage("create", "%s", e.msg);
                goto out;
            }
            break;
        case 'v':
            if (volume_opt(volumes, optarg, &e) < 0) {
                ret = cli_usage("create", "%s", e.msg);
                goto out;
            }
            break;
        case 'r':
            if (!cli_storage_name_ok(optarg)) {
                ret = cli_usage("create", "--root wants a volume or snapshot id or slug, not '%.100s'", optarg);
                goto out;
            }
            root = optarg;
            break;
        case 'j':
            as_json = true;
            break;
        default: {
            int r = cli_common_opt(cli, "create", ch, argv);
            if (r >= 0) {
                ret = r;
                goto out;
            }
        }
        }
    }
    if (optind < argc) {
        ret = cli_usage("create", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    config = json_pack("{s:I, s:I, s:O}", "memory_mb", (json_int_t)memory, "stop_at_ms",
                       (json_int_t)(cli_now_ms() + timeout_ms), "labels", labels);
    if (config && allow_net)
        json_object_set(config, "allow_net", allow_net);
    const char *sk;
    json_t *sv;
    json_object_foreach(secrets, sk, sv) {
        if (json_array_size(json_object_get(sv, "hosts")) == 0 || !json_object_get(sv, "value")) {
            ret = cli_usage("create", "secret %s needs --secret %s=@FILE and at least one --secret-host %s=HOST", sk,
                            sk, sk);
            goto out;
        }
    }
    if (config && json_object_size(secrets))
        json_object_set(config, "secrets", secrets);
    /* the SDK's wire form (sandbox.js): volumes [{volume, path}], root {volume} */
    if (config && json_array_size(volumes))
        json_object_set(config, "volumes", volumes);
    if (config && root)
        json_object_set_new(config, "root", json_pack("{s:s}", "volume", root));
    if (!config || cli_target(cli, &t, &e) < 0 || hutch_create(&t, config, &c, &e) < 0) {
        cli_error("create: %s", config ? e.msg : "out of memory");
        goto out;
    }
    const char *id = hutch_conn_sandbox_id(c);
    if (!*id) {
        cli_error("create: the server did not return a sandbox id (no x-deno-sandbox-id header)");
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(env, k, v) {
        if (hutch_call(c, "envSet", json_pack("{s:s, s:O}", "key", k, "value", v), NULL, NULL, &e) < 0) {
            cli_error("create: setting %s in %s: %s", k, id, e.msg);
            /* A sandbox without the env asked for is not what the user wanted: remove it. */
            char path[200];
            snprintf(path, sizeof(path), "/api/v3/sandbox/%s", id);
            (void)hutch_rest(&t, "DELETE", path, NULL, NULL, &e);
            goto out;
        }
    }
    if (as_json) {
        json_t *o = json_pack("{s:s}", "id", id);
        if (o && json_dumpf(o, stdout, JSON_INDENT(2)) == 0)
            putchar('\n');
        json_decref(o);
    } else
        printf("%s\n", id);
    ret = fflush(stdout) == 0 ? 0 : 1;
out:
    hutch_conn_close(c);
    hutch_target_free(&t);
    json_decref(config);
    json_decref(labels);
    json_decref(env);
    json_decref(allow_net);
    json_decref(volumes);
    json_t *v2; /* the values: zeroed before jansson frees them */
    const char *k2;
    json_object_foreach(secrets, k2, v2) {
        json_t *val = json_object_get(v2, "value");
        if (json_is_string(val))
            explicit_bzero((char *)json_string_value(val), json_string_length(val));
    }
    json_decref(secrets);
    return ret;
}
