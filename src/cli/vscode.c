/* hutch vscode: the `vscode` RPC over /connect (VS Code starts inside the
 * sandbox), then POST /api/v3/sandbox/ID/expose/vscode and exposeHttp on the
 * port it answered, as the SDK's exposeVscode does; prints the URL. */
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char help[] =
    "usage: hutch vscode ID [PATH]\n"
    "\n"
    "Starts VS Code (code-server) inside the sandbox on PATH (default /home/app)\n"
    "and prints its URL (https://...). Anyone who has the URL gets VS Code, and\n"
    "with it a shell in the sandbox, until the sandbox stops: the URL's random\n"
    "part is its only credential. Browsers trust the ingress CA (docs/expose.md).\n"
    "VS Code keeps running after this command returns; `hutch exec ID pkill -f\n"
    "code-server` or the end of the sandbox stops it.\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

int cmd_vscode(struct cli *cli, int argc, char **argv)
{
    int parsed = cli_common_only(cli, "vscode", help, argc, argv);
    if (parsed >= 0)
        return parsed;
    if (argc - optind < 1 || argc - optind > 2)
        return cli_usage("vscode", "expected ID and an optional PATH");
    const char *id = argv[optind];
    const char *dir = argc - optind == 2 ? argv[optind + 1] : "/home/app";
    if (!*id || strlen(id) > 100 ||
        strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != strlen(id))
        return cli_error("vscode: invalid sandbox id '%.100s'", id);
    if (!*dir || strlen(dir) > 4096)
        return cli_usage("vscode", "PATH must be 1..4096 characters");
    struct hx_err e = { 0 };
    struct hutch_target t;
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("vscode: %s", e.msg);
    struct hutch_conn *c = NULL;
    json_t *ok = NULL, *res = NULL;
    int rc = hutch_connect(&t, id, &c, &e);
    if (rc == 0)
        rc = hutch_call(c, "vscode", json_pack("{s:s, s:{}, s:[]}", "path", dir, "env", "extensions"), &ok, NULL, &e);
    json_int_t port = json_integer_value(json_object_get(ok, "port"));
    if (rc == 0 && (port < 1 || port > 65535)) {
        hx_fail(&e, EPROTO, "the server's answer has no port");
        rc = -EPROTO;
    }
    const char *domain = NULL;
    if (rc == 0) {
        char path[160];
        snprintf(path, sizeof(path), "/api/v3/sandbox/%s/expose/vscode", id);
        json_t *body = json_object();
        rc = hutch_rest(&t, "POST", path, body, &res, &e);
        json_decref(body);
        domain = json_string_value(json_object_get(res, "domain"));
        if (rc == 0 && !domain) {
            hx_fail(&e, EPROTO, "the server's answer has no domain");
            rc = -EPROTO;
        }
    }
    if (rc == 0)
        rc = hutch_call(c, "exposeHttp", json_pack("{s:s, s:I}", "domain", domain, "port", port), NULL, NULL, &e);
    hutch_conn_close(c);
    hutch_target_free(&t);
    json_decref(ok);
    if (rc < 0) {
        json_decref(res);
        return cli_error("vscode %s: %s", id, e.msg);
    }
    printf("https://%s\n", domain);
    json_decref(res);
    return fflush(stdout) == 0 ? 0 : 1;
}
