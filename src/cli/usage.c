/* hutch usage: the organization's metering (GET /api/v2/usage). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "lib/strparse.h"

static const char help[] =
    "usage: hutch usage [--since DURATION] [--json]\n"
    "\n"
    "What the organization's stopped sandboxes used: count, wall time, CPU time,\n"
    "highest peak memory, network bytes.\n"
    "      --since D     only sandboxes started in the last D (e.g. 1h, 30m, 7d is 168h)\n"
    "      --json        the raw JSON object\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

int cmd_usage(struct cli *cli, int argc, char **argv)
{
    enum { O_SINCE = 1000, O_JSON };
    static const struct option opts[] = {
        CLI_COMMON_OPTS, { "since", required_argument, NULL, O_SINCE }, { "json", no_argument, NULL, O_JSON }, { 0 }
    };
    const char *since = NULL;
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
        int r = cli_common_opt(cli, "usage", ch, argv);
        if (r >= 0)
            return r;
    }
    if (optind < argc)
        return cli_usage("usage", "unexpected argument");
    struct hx_err e = { 0 };
    char path[96] = "/api/v2/usage";
    if (since) {
        uint64_t ms;
        if (hx_parse_duration_ms(since, &ms, &e) < 0)
            return cli_usage("usage", "%s", e.msg);
        snprintf(path, sizeof path, "/api/v2/usage?from=%lld", (long long)(hx_now_ms() - (int64_t)ms));
    }
    struct hutch_target t;
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("usage: %s", e.msg);
    json_t *out = NULL;
    int r = hutch_rest(&t, "GET", path, NULL, &out, &e);
    hutch_target_free(&t);
    if (r < 0)
        return cli_error("usage: %s", e.msg);
    if (as_json) {
        char *s = json_dumps(out, JSON_INDENT(2));
        if (s)
            puts(s);
        free(s);
    } else {
        json_int_t n = json_integer_value(json_object_get(out, "records"));
        double wall = (double)json_integer_value(json_object_get(out, "wallMs")) / 1000.0;
        double cpu = (double)json_integer_value(json_object_get(out, "cpuMs")) / 1000.0;
        printf("sandboxes   %lld\nwall time   %.1f s\ncpu time    %.1f s\npeak memory %lld MiB\n"
               "network     %lld bytes out, %lld bytes in\n",
               (long long)n, wall, cpu, (long long)json_integer_value(json_object_get(out, "memPeakMb")),
               (long long)json_integer_value(json_object_get(out, "netTxBytes")),
               (long long)json_integer_value(json_object_get(out, "netRxBytes")));
    }
    json_decref(out);
    return 0;
}
