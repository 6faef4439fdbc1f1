/* hutch extend: PATCH /api/v3/sandbox/ID {"stop_at_ms": now + DUR}; prints the stop time granted. */
#include <inttypes.h>
#include <stdio.h>

#include "cli/cli.h"

static const char help[] =
    "usage: hutch extend ID DUR\n"
    "\n"
    "Asks for the sandbox to stop at now + DUR (e.g. 30m, 2h) instead of its\n"
    "current stop time, and prints the stop time the server granted (ISO 8601,\n"
    "UTC): it may be earlier than asked when the server caps extensions.\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

int cmd_extend(struct cli *cli, int argc, char **argv)
{
    int parsed = cli_common_only(cli, "extend", help, argc, argv);
    if (parsed >= 0)
        return parsed;
    if (argc - optind != 2)
        return cli_usage("extend", "expected ID and DUR");
    const char *id = argv[optind];
    struct hx_err e = { 0 };
    int64_t ms;
    if (cli_parse_duration(argv[optind + 1], &ms, &e) < 0)
        return cli_usage("extend", "%s", e.msg);
    if (!*id || strlen(id) > 100 ||
        strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != strlen(id))
        return cli_error("extend: invalid sandbox id '%.100s'", id);
    struct hutch_target t;
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("extend: %s", e.msg);
    char path[160];
    snprintf(path, sizeof(path), "/api/v3/sandbox/%s", id);
    json_t *body = json_pack("{s:I}", "stop_at_ms", (json_int_t)(cli_now_ms() + ms));
    json_t *res = NULL;
    int rc = hutch_rest(&t, "PATCH", path, body, &res, &e);
    json_decref(body);
    hutch_target_free(&t);
    if (rc < 0)
        return cli_error("extend %s: %s", id, e.msg);
    json_t *granted = json_object_get(res, "stop_at_ms");
    if (!json_is_integer(granted)) {
        json_decref(res);
        return cli_error("extend %s: the server's answer has no stop_at_ms", id);
    }
    char iso[64];
    cli_iso8601(json_integer_value(granted), iso, sizeof(iso));
    json_decref(res);
    printf("%s\n", iso);
    return fflush(stdout) == 0 ? 0 : 1;
}
