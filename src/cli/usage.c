/* hutch usage: the organization's metering (GET /api/v2/usage): quantities
 * in the seed's units with their cost, optionally grouped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "lib/strparse.h"

static const char help[] =
    "usage: hutch usage [--since DURATION] [--by day|sandbox|label=KEY] [--json]\n"
    "\n"
    "What the organization used, running sandboxes included up to now: CPU-hours,\n"
    "memory GiB-hours (of the memory limit a sandbox holds), volume GiB-months,\n"
    "egress bytes, each with its cost at hutchd's prices. Totals are the same in\n"
    "every grouping. The first lines count the stopped sandboxes started in the range.\n"
    "      --since D     only usage in the last D (e.g. 1h, 30m, 7d is 168h)\n"
    "      --by G        one row per day (UTC), per sandbox (or volume), or per value of label KEY\n"
    "      --json        the raw JSON object\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

static long long jint(json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

static double jnum(json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

static void row(const char *key, json_t *q)
{
    printf("%-28.28s %10.6f %10.6f %10.6f %10.6f %10.6f %10.6f %12lld %10.6f\n", key, jnum(q, "cpuHours"),
           (double)jint(q, "cpuCostMicroUsd") / 1e6, jnum(q, "memoryGibHours"),
           (double)jint(q, "memoryCostMicroUsd") / 1e6, jnum(q, "volumeGibMonths"),
           (double)jint(q, "volumeCostMicroUsd") / 1e6, jint(q, "egressBytes"), (double)jint(q, "costMicroUsd") / 1e6);
}

int cmd_usage(struct cli *cli, int argc, char **argv)
{
    enum { O_SINCE = 1000, O_JSON, O_BY };
    static const struct option opts[] = { CLI_COMMON_OPTS,
                                          { "since", required_argument, NULL, O_SINCE },
                                          { "json", no_argument, NULL, O_JSON },
                                          { "by", required_argument, NULL, O_BY },
                                          { 0 } };
    const char *since = NULL, *by = NULL;
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
        if (ch == O_BY) {
            by = optarg;
            continue;
        }
        int r = cli_common_opt(cli, "usage", ch, argv);
        if (r >= 0)
            return r;
    }
    if (optind < argc)
        return cli_usage("usage", "unexpected argument");
    struct hx_err e = { 0 };
    char path[512] = "/api/v2/usage?";
    size_t n = strlen(path);
    if (since) {
        uint64_t ms;
        if (hx_parse_duration_ms(since, &ms, &e) < 0)
            return cli_usage("usage", "%s", e.msg);
        n += (size_t)snprintf(path + n, sizeof path - n, "from=%lld&", (long long)(hx_now_ms() - (int64_t)ms));
    }
    if (by) {
        if (strcmp(by, "day") == 0 || strcmp(by, "sandbox") == 0) {
            snprintf(path + n, sizeof path - n, "by=%s", by);
        } else if (strncmp(by, "label=", 6) == 0 && by[6] && strlen(by + 6) <= 128 &&
                   strspn(by + 6, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") ==
                       strlen(by + 6)) {
            snprintf(path + n, sizeof path - n, "by=label&label=%s", by + 6);
        } else {
            return cli_usage("usage", "--by wants day, sandbox or label=KEY (KEY of letters, digits, - _ .)");
        }
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
        json_decref(out);
        return 0;
    }
    json_int_t nrec = json_integer_value(json_object_get(out, "records"));
    double wall = (double)json_integer_value(json_object_get(out, "wallMs")) / 1000.0;
    double cpu = (double)json_integer_value(json_object_get(out, "cpuMs")) / 1000.0;
    printf("sandboxes   %lld\nwall time   %.1f s\ncpu time    %.1f s\npeak memory %lld MiB\n"
           "network     %lld bytes out, %lld bytes in\n",
           (long long)nrec, wall, cpu, jint(out, "memPeakMb"), jint(out, "netTxBytes"), jint(out, "netRxBytes"));
    json_t *prices = json_object_get(out, "prices");
    printf("\nprices: $%.6f/CPU-hour, $%.6f/GiB-hour memory, $%.6f/GiB-month volume storage\n",
           (double)jint(prices, "cpuHourMicroUsd") / 1e6, (double)jint(prices, "memoryGibHourMicroUsd") / 1e6,
           (double)jint(prices, "volumeGibMonthMicroUsd") / 1e6);
    printf("%-28s %10s %10s %10s %10s %10s %10s %12s %10s\n", by ? by : "", "CPU-h", "CPU $", "MEM GiB-h", "MEM $",
           "VOL GiB-mo", "VOL $", "EGRESS B", "TOTAL $");
    if (by) {
        size_t i;
        json_t *g;
        json_array_foreach(json_object_get(out, "groups"), i, g)
        {
            const char *key = json_string_value(json_object_get(g, "key"));
            row(key ? key : "(none)", g);
        }
    }
    json_t *total = json_object_get(out, "total");
    row("total", total);
    printf("(%lld sandboxes, %lld running)\n", jint(total, "sandboxes"), jint(total, "running"));
    json_decref(out);
    return 0;
}
