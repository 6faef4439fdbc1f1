/* hutch token: manage API tokens through hutchd's admin API (/hutch/v1/tokens), with an
 * admin token over TCP or, without one, over hutchd's root-only unix socket. */
#include <stdio.h>

#include "cli/cli.h"

static const char help[] =
    "usage: hutch token create [--org ORG] [--name NAME] [--json]\n"
    "       hutch token list [--json]\n"
    "       hutch token revoke ID...\n"
    "\n"
    "create prints the new token on stdout (it is shown only once) and its id on\n"
    "stderr. With --token or HUTCH_TOKEN (an admin token) the request goes to the\n"
    "endpoint; otherwise to hutchd's unix socket HUTCH_SOCKET (default\n"
    DEFAULT_SOCKET "), which needs no token but root on the hutchd host.\n"
    "DENO_DEPLOY_TOKEN is not used here: it is a sandbox token, not an admin one.\n";

static int admin_target(const struct cli *cli, struct hutch_target *t, struct hx_err *e)
{
    const char *token = cli->token_flag;
    if (!token) {
        const char *v = getenv("HUTCH_TOKEN");
        token = v && *v ? v : NULL;
    }
    if (token)
        return hutch_target_init(t, cli_endpoint(cli), token, e);
    const char *sock = getenv("HUTCH_SOCKET");
    return hutch_target_init_unix(t, sock && *sock ? sock : DEFAULT_SOCKET, NULL, e);
}

static const char *str_or(json_t *v, const char *dflt)
{
    return json_is_string(v) ? json_string_value(v) : dflt;
}

static int token_fail(const char *what, const struct hutch_target *t, const struct hx_err *e)
{
    /* Only a socket we could not reach deserves the hint, not an API error. */
    if (t->unix_path && strncmp(e->msg, "connect to ", 11) == 0)
        return cli_error("token %s: %s (set HUTCH_TOKEN to an admin token, or run as root where hutchd runs)",
                         what, e->msg);
    return cli_error("token %s: %s", what, e->msg);
}

int cmd_token(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        { "org", required_argument, NULL, 'o' }, { "name", required_argument, NULL, 'N' },
        { "json", no_argument, NULL, 'j' },      CLI_COMMON_OPTS, { 0 },
    };
    const char *org = NULL, *name = NULL;
    bool as_json = false;
    int ch;
    /* token's own options may come before or after the sub-verb */
    const char *sub = NULL;
    int first = 0;
    for (int pass = 0; pass < 2; pass++) {
        cli_getopt_reset();
        while ((ch = getopt_long(argc - first, argv + first, "+:h", opts, NULL)) != -1) {
            switch (ch) {
            case 'h':
                fputs(help, stdout);
                return 0;
            case 'o':
                org = optarg;
                break;
            case 'N':
                name = optarg;
                break;
            case 'j':
                as_json = true;
                break;
            default: {
                int r = cli_common_opt(cli, "token", ch, argv + first);
                if (r >= 0)
                    return r;
            }
            }
        }
        if (pass == 0) {
            if (first + optind >= argc)
                return cli_usage("token", "missing sub-command: create, list or revoke");
            first += optind;
            sub = argv[first];
        } else {
            first += optind;
        }
    }
    int nrest = argc - first;
    char **rest = argv + first;
    bool is_create = strcmp(sub, "create") == 0, is_list = strcmp(sub, "list") == 0 || strcmp(sub, "ls") == 0;
    bool is_revoke = strcmp(sub, "revoke") == 0 || strcmp(sub, "rm") == 0;
    if (!is_create && !is_list && !is_revoke)
        return cli_usage("token", "unknown sub-command '%s' (create, list or revoke)", sub);
    if ((is_create || is_list) && nrest > 0)
        return cli_usage("token", "unexpected argument '%s'", rest[0]);
    if (is_revoke && nrest == 0)
        return cli_usage("token", "revoke needs a token ID");
    if (!is_create && (org || name))
        return cli_usage("token", "--org and --name go with 'create'");

    struct hx_err e = { 0 };
    struct hutch_target t;
    if (admin_target(cli, &t, &e) < 0)
        return cli_error("token: %s", e.msg);
    int ret = 0;
    json_t *res = NULL;
    if (is_create) {
        json_t *body = json_object();
        if (org)
            json_object_set_new(body, "org", json_string(org));
        if (name)
            json_object_set_new(body, "name", json_string(name));
        int rc = hutch_rest(&t, "POST", "/hutch/v1/tokens", body, &res, &e);
        json_decref(body);
        if (rc < 0)
            ret = token_fail("create", &t, &e);
        else if (as_json) {
            json_dumpf(res, stdout, JSON_INDENT(2));
            putchar('\n');
        } else if (!json_is_string(json_object_get(res, "token"))) {
            ret = cli_error("token create: the server's answer has no token");
        } else {
            printf("%s\n", json_string_value(json_object_get(res, "token")));
            fprintf(stderr, "token id: %s\n", str_or(json_object_get(res, "id"), "?"));
        }
    } else if (is_list) {
        if (hutch_rest(&t, "GET", "/hutch/v1/tokens", NULL, &res, &e) < 0)
            ret = token_fail("list", &t, &e);
        else if (as_json) {
            json_dumpf(res, stdout, JSON_INDENT(2));
            putchar('\n');
        } else if (!json_is_array(res)) {
            ret = cli_error("token list: the server did not return a list");
        } else {
            size_t i;
            json_t *tk;
            printf("%-28s  %-16s  %-20s  %s\n", "ID", "ORG", "NAME", "CREATED");
            json_array_foreach(res, i, tk) {
                json_t *created = json_object_get(tk, "createdAt");
                if (!created)
                    created = json_object_get(tk, "created_at");
                printf("%-28s  %-16s  %-20s  %s\n", str_or(json_object_get(tk, "id"), "?"),
                       str_or(json_object_get(tk, "org"), "-"), str_or(json_object_get(tk, "name"), "-"),
                       str_or(created, "-"));
            }
        }
    } else {
        for (int i = 0; i < nrest; i++) {
            char *path = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&path, &len);
            if (!f)
                return cli_error("token revoke: out of memory");
            fputs("/hutch/v1/tokens/", f);
            cli_urlencode(f, rest[i]);
            fclose(f);
            if (hutch_rest(&t, "DELETE", path, NULL, NULL, &e) < 0)
                ret = token_fail("revoke", &t, &e);
            free(path);
        }
    }
    json_decref(res);
    hutch_target_free(&t);
    return fflush(stdout) == 0 ? ret : 1;
}
