/* hutch net: GET /api/v2/sandboxes/ID/network; prints addresses, bytes per destination and the audit log. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const char help[] =
    "usage: hutch net [--json] ID\n"
    "\n"
    "Shows a running sandbox's network: its addresses, its allowNet policy, the\n"
    "bytes sent and received per destination, and the audit log of every\n"
    "connection and DNS decision (allowed or blocked, and why).\n"
    "      --json          print the server's JSON as is\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

/* Prints s with control characters replaced: audit text comes from sandboxes. */
static void safe(const char *s)
{
    for (; s && *s; s++)
        putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
}

int cmd_net(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = { { "json", no_argument, NULL, 'j' }, CLI_COMMON_OPTS, { 0 } };
    int ch;
    bool as_json = false;
    while ((ch = getopt_long(argc, argv, "+:hj", opts, NULL)) != -1) {
        if (ch == 'h') {
            fputs(help, stdout);
            return 0;
        }
        if (ch == 'j') {
            as_json = true;
            continue;
        }
        int r = cli_common_opt(cli, "net", ch, argv);
        if (r >= 0)
            return r;
    }
    if (argc - optind != 1)
        return cli_usage("net", "expected ID");
    const char *id = argv[optind];
    if (!*id || strlen(id) > 100 ||
        strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != strlen(id))
        return cli_error("net: invalid sandbox id '%.100s'", id);
    struct hx_err e = { 0 };
    struct hutch_target t;
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("net: %s", e.msg);
    char path[200];
    snprintf(path, sizeof(path), "/api/v2/sandboxes/%s/network", id);
    json_t *res = NULL;
    int rc = hutch_rest(&t, "GET", path, NULL, &res, &e);
    hutch_target_free(&t);
    if (rc < 0)
        return cli_error("net %s: %s", id, e.msg);
    if (as_json) {
        json_dumpf(res, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(res);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    if (!json_is_true(json_object_get(res, "network"))) {
        printf("no network (allowNet [] or networking off): loopback only\n");
        json_decref(res);
        return 0;
    }
    json_t *a = json_object_get(res, "addresses"), *allow = json_object_get(res, "allow_net");
    printf("address   %s, %s (gateway and DNS %s, %s)\n", json_string_value(json_object_get(a, "ipv4")),
           json_string_value(json_object_get(a, "ipv6")), json_string_value(json_object_get(a, "gateway4")),
           json_string_value(json_object_get(a, "gateway6")));
    printf("allowNet  ");
    if (!json_is_array(allow)) {
        printf("(any host)");
    } else {
        size_t i;
        json_t *v;
        json_array_foreach(allow, i, v) {
            printf(i ? ", " : "");
            safe(json_string_value(v));
        }
    }
    printf("\nbytes     out %" JSON_INTEGER_FORMAT ", in %" JSON_INTEGER_FORMAT "\n\n",
           json_integer_value(json_object_get(res, "bytes_out")), json_integer_value(json_object_get(res, "bytes_in")));
    printf("%-40s %-6s %12s %12s %6s\n", "DESTINATION", "PORT", "OUT", "IN", "CONNS");
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(res, "destinations"), i, d) {
        char dest[300];
        const char *h = json_string_value(json_object_get(d, "host"));
        snprintf(dest, sizeof dest, "%s%s%s%s", h && *h ? h : "", h && *h ? " (" : "",
                 json_string_value(json_object_get(d, "ip")), h && *h ? ")" : "");
        safe(dest);
        printf("%*s %-6" JSON_INTEGER_FORMAT " %12" JSON_INTEGER_FORMAT " %12" JSON_INTEGER_FORMAT " %6" JSON_INTEGER_FORMAT "\n",
               (int)(strlen(dest) < 40 ? 40 - strlen(dest) : 0), "", json_integer_value(json_object_get(d, "port")),
               json_integer_value(json_object_get(d, "bytes_out")), json_integer_value(json_object_get(d, "bytes_in")),
               json_integer_value(json_object_get(d, "connections")));
    }
    printf("\n%-24s %-8s %-5s %-30s %s\n", "TIME", "VERDICT", "PROTO", "HOST:PORT", "REASON");
    json_array_foreach(json_object_get(res, "audit"), i, d) {
        char iso[64], hp[400];
        cli_iso8601(json_integer_value(json_object_get(d, "time_ms")), iso, sizeof iso);
        const char *h = json_string_value(json_object_get(d, "host"));
        snprintf(hp, sizeof hp, "%s:%" JSON_INTEGER_FORMAT, h && *h ? h : json_string_value(json_object_get(d, "ip")),
                 json_integer_value(json_object_get(d, "port")));
        printf("%-24s %-8s %-5s ", iso, json_string_value(json_object_get(d, "verdict")),
               json_string_value(json_object_get(d, "proto")));
        safe(hp);
        printf(" ");
        safe(json_string_value(json_object_get(d, "reason")));
        printf("\n");
    }
    json_decref(res);
    return fflush(stdout) == 0 ? 0 : 1;
}
