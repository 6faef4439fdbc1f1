/* hutch expose: POST /api/v3/sandbox/ID/expose/http, then the exposeHttp RPC
 * over /connect (as the SDK does); prints the URL. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char help[] =
    "usage: hutch expose ID PORT\n"
    "\n"
    "Publishes the HTTP server on PORT inside the sandbox and prints its URL\n"
    "(https://...). Anyone who has the URL reaches that port, and only that port,\n"
    "until the sandbox stops: the URL's random part is its only credential.\n"
    "Clients trust the ingress CA: curl --cacert STATE/ingress-ca/ca.crt,\n"
    "NODE_EXTRA_CA_CERTS=... for Node (docs/expose.md).\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

int cmd_expose(struct cli *cli, int argc, char **argv)
{
    int parsed = cli_common_only(cli, "expose", help, argc, argv);
    if (parsed >= 0)
        return parsed;
    if (argc - optind != 2)
        return cli_usage("expose", "expected ID and PORT");
    const char *id = argv[optind];
    char *end = NULL;
    long port = strtol(argv[optind + 1], &end, 10);
    if (!end || *end || port < 1 || port > 65535)
        return cli_usage("expose", "PORT must be a number in 1..65535, got '%.20s'", argv[optind + 1]);
    if (!*id || strlen(id) > 100 ||
        strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != strlen(id))
        return cli_error("expose: invalid sandbox id '%.100s'", id);
    struct hx_err e = { 0 };
    struct hutch_target t;
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("expose: %s", e.msg);
    char path[160];
    snprintf(path, sizeof(path), "/api/v3/sandbox/%s/expose/http", id);
    json_t *body = json_object();
    json_t *res = NULL;
    int rc = hutch_rest(&t, "POST", path, body, &res, &e);
    json_decref(body);
    const char *domain = json_string_value(json_object_get(res, "domain"));
    if (rc < 0 || !domain) {
        hutch_target_free(&t);
        json_decref(res);
        return cli_error("expose %s: %s", id, rc < 0 ? e.msg : "the server's answer has no domain");
    }
    struct hutch_conn *c = NULL;
    if ((rc = hutch_connect(&t, id, &c, &e)) == 0)
        rc = hutch_call(c, "exposeHttp", json_pack("{s:s, s:i}", "domain", domain, "port", (int)port), NULL, NULL, &e);
    hutch_conn_close(c);
    hutch_target_free(&t);
    if (rc < 0) {
        json_decref(res);
        return cli_error("expose %s: %s", id, e.msg);
    }
    printf("https://%s\n", domain);
    json_decref(res);
    return fflush(stdout) == 0 ? 0 : 1;
}
