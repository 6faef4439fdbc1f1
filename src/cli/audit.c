/* hutch audit: who (which token) created, killed, extended, exposed or
 * deployed what and when in the organization (GET /api/v2/audit). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "lib/strparse.h"

static const char help[] =
    "usage: hutch audit [--since DURATION] [--limit N] [--json]\n"
    "\n"
    "The organization's audit log, oldest first: time, token id (\"root\" for the\n"
    "unix socket), action, target, detail.\n"
    "      --since D     only entries of the last D (e.g. 1h, 30m)\n"
    "      --limit N     at most N entries (1..1000) [100]\n"
    "      --json        the raw JSON object\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

int cmd_audit(struct cli *cli, int argc, char **argv)
{
    enum { O_SINCE = 1000, O_JSON, O_LIMIT };
    static const struct option opts[] = { CLI_COMMON_OPTS,
                                          { "since", required_argument, NULL, O_SINCE },
                                          { "json", no_argument, NULL, O_JSON },
                                          { "limit", required_argument, NULL, O_LIMIT },
                                          { 0 } };
    const char *since = NULL;
    long limit = 100;
    bool as_json = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        if (ch == 'h') {
            fputs(help, stdout);
            return 0;
        }
        if (ch == O_SINCE) {
            since = optarg;
            continue;
        }
        if (ch == O_JSON) {
            as_json = true;
            continue;
        }
        if (ch == O_LIMIT) {
            char *end;
            limit = strtol(optarg, &end, 10);
            if (*end || end == optarg || limit < 1 || limit > 1000)
                return cli_usage("audit", "--limit wants a number from 1 to 1000");
            continue;
        }
        int r = cli_common_opt(cli, "audit", ch, argv);
        if (r >= 0)
            return r;
    }
    if (optind < argc)
        return cli_usage("audit", "unexpected argument");
    struct hx_err e = { 0 };
    long long from = 0;
    if (since) {
        uint64_t ms;
        if (hx_parse_duration_ms(since, &ms, &e) < 0)
            return cli_usage("audit", "%s", e.msg);
        from = (long long)(hx_now_ms() - (int64_t)ms);
    }
    char path[128];
    snprintf(path, sizeof path, "/api/v2/audit?since=%lld&limit=%ld", from, limit);
    struct hutch_target t;
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("audit: %s", e.msg);
    json_t *out = NULL;
    int r = hutch_rest(&t, "GET", path, NULL, &out, &e);
    hutch_target_free(&t);
    if (r < 0)
        return cli_error("audit: %s", e.msg);
    if (as_json) {
        char *s = json_dumps(out, JSON_INDENT(2));
        if (s)
            puts(s);
        free(s);
    } else {
        size_t i;
        json_t *en;
        json_array_foreach(json_object_get(out, "entries"), i, en)
        {
            const char *tok = json_string_value(json_object_get(en, "tokenId"));
            printf("%s  %-16s  %-8s  %s  %s\n", json_string_value(json_object_get(en, "time")),
                   tok && *tok ? tok : "root", json_string_value(json_object_get(en, "action")),
                   json_string_value(json_object_get(en, "target")), json_string_value(json_object_get(en, "detail")));
        }
        if (json_is_true(json_object_get(out, "more")))
            printf("(more: use --limit or a later --since)\n");
    }
    json_decref(out);
    return 0;
}
