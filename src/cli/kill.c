/* hutch kill: DELETE /api/v3/sandbox/ID for each id given. */
#include <stdio.h>

#include "cli/cli.h"

static const char help[] =
    "usage: hutch kill ID...\n"
    "\n"
    "Stops and deletes the sandboxes (their processes and files are gone).\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

int cmd_kill(struct cli *cli, int argc, char **argv)
{
    int parsed = cli_common_only(cli, "kill", help, argc, argv);
    if (parsed >= 0)
        return parsed;
    if (optind >= argc)
        return cli_usage("kill", "missing sandbox ID");
    struct hx_err e = { 0 };
    struct hutch_target t;
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("kill: %s", e.msg);
    int ret = 0;
    for (int i = optind; i < argc; i++) {
        const char *id = argv[i];
        char path[160];
        if (!*id || strlen(id) > 100 || strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
                                            strlen(id)) {
            ret = cli_error("kill: invalid sandbox id '%.100s'", id);
            continue;
        }
        snprintf(path, sizeof(path), "/api/v3/sandbox/%s", id);
        if (hutch_rest(&t, "DELETE", path, NULL, NULL, &e) < 0)
            ret = cli_error("kill %s: %s", id, e.msg);
    }
    hutch_target_free(&t);
    return ret;
}
