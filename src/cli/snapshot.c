/* hutch snapshot ls|rm: snapshots over REST, as SDK 0.13.2's client.snapshots
 * uses them (docs/storage.md). They are taken with 'hutch volume snapshot'. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const char help[] =
    "usage: hutch snapshot ls [--search S] [--json]\n"
    "       hutch snapshot rm ID|SLUG...\n"
    "\n"
    "Snapshots are read-only copies of volumes ('hutch volume snapshot VOL SLUG'); one of a\n"
    "bootable volume is a root many sandboxes boot from at once ('hutch create --root SLUG').\n";

static const char help_ls[] =
    "usage: hutch snapshot ls [--search S] [--json]\n"
    "\n"
    "Lists snapshots (every page): ID SLUG REGION SIZE ALLOCATED BOOTABLE VOLUME.\n"
    "  --search S   only snapshots whose slug or id contains S\n"
    "  --json       one JSON array of the server's snapshot objects\n";

static const char help_rm[] =
    "usage: hutch snapshot rm ID|SLUG...\n"
    "\n"
    "Deletes snapshots. Refused while a running sandbox boots from one, or a volume was made from it.\n";

int cmd_snapshot(struct cli *cli, int argc, char **argv)
{
    int parsed = cli_common_only(cli, "snapshot", help, argc, argv);
    if (parsed >= 0)
        return parsed;
    if (optind >= argc)
        return cli_usage("snapshot", "missing VERB: ls or rm");
    const char *sub = argv[optind];
    int sargc = argc - optind;
    char **sargv = argv + optind;
    cli_getopt_reset();
    if (strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0)
        return cli_storage_ls(cli, "snapshot ls", "snapshot", help_ls, sargc, sargv);
    if (strcmp(sub, "rm") == 0 || strcmp(sub, "delete") == 0)
        return cli_storage_rm(cli, "snapshot rm", "snapshot", help_rm, sargc, sargv);
    if (strcmp(sub, "create") == 0)
        return cli_usage("snapshot", "snapshots are taken from a volume: hutch volume snapshot VOLUME NEW-SLUG");
    return cli_usage("snapshot", "unknown verb '%s': ls or rm", sub);
}
