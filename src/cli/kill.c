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
    static const struct option opts[] = { CLI_COMMON_OPTS, { 0 } };
    int ch;
    while ((ch = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        if (ch == 'h') {
            fputs(help, stdout);
            return 0;
        }
        int r = cli_common_opt(cli, "kill", ch, argv);
        if (r >= 0)
            return r;
    }
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
