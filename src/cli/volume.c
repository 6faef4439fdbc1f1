/* hutch volume create|ls|rm|snapshot: volumes over REST, as SDK 0.13.2's
 * client.volumes uses them (docs/storage.md). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

#define DEFAULT_REGION "loc"

static const char help[] =
    "usage: hutch volume create SLUG --capacity SIZE [--region R] [--from builtin:debian-13|SNAPSHOT] [--json]\n"
    "       hutch volume ls [--search S] [--json]\n"
    "       hutch volume rm ID|SLUG...\n"
    "       hutch volume snapshot ID|SLUG NEW-SLUG [--json]\n"
    "\n"
    "Volumes are file systems that outlive sandboxes: 'hutch create --volume SLUG:/data'\n"
    "mounts one, 'hutch create --root SLUG' boots from a bootable one. See 'hutch volume VERB --help'.\n";

static const char help_create[] =
    "usage: hutch volume create SLUG --capacity SIZE [--region R] [--from SOURCE] [--json]\n"
    "\n"
    "Creates a volume and prints its id (the volume as JSON with --json).\n"
    "\n"
    "  SLUG               2-32 of a-z 0-9 -, shared with snapshots\n"
    "  -c, --capacity SIZE  a hard limit: 1GiB, 512MiB, 2GB or a number of bytes\n"
    "  -r, --region R     region recorded with it (default $HUTCH_REGION, else " DEFAULT_REGION ")\n"
    "  -f, --from SOURCE  builtin:debian-13 (a bootable copy of the image) or a snapshot id or slug\n"
    "      --json         print the volume as the server returned it\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

static const char help_ls[] =
    "usage: hutch volume ls [--search S] [--json]\n"
    "\n"
    "Lists volumes (every page): ID SLUG REGION CAPACITY ALLOCATED BOOTABLE BASE.\n"
    "  --search S   only volumes whose slug or id contains S\n"
    "  --json       one JSON array of the server's volume objects\n";

static const char help_rm[] =
    "usage: hutch volume rm ID|SLUG...\n"
    "\n"
    "Deletes volumes and their data. A volume attached to a running sandbox is refused.\n";

static const char help_snapshot[] =
    "usage: hutch volume snapshot ID|SLUG NEW-SLUG [--json]\n"
    "\n"
    "Takes a copy-on-write snapshot of a volume (not attached to a running sandbox)\n"
    "and prints its id. A snapshot of a bootable volume is a read-only root:\n"
    "'hutch create --root NEW-SLUG'.\n";

/* What the server parses (storage/names.c): digits, an optional fraction, an optional unit. */
static bool capacity_shape_ok(const char *s)
{
    static const char *units[] = { "", "GiB", "MiB", "KiB", "GB", "MB", "kB" };
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return false;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    for (size_t i = 0; i < HX_ARRAY_LEN(units); i++)
        if (strcmp(p, units[i]) == 0)
            return true;
    return false;
}

static int print_object(json_t *o, bool as_json)
{
    if (as_json) {
        if (json_dumpf(o, stdout, JSON_INDENT(2)) < 0)
            return 1;
        putchar('\n');
    } else {
        const char *id = json_string_value(json_object_get(o, "id"));
        if (!id)
            return cli_error("the server's answer has no id");
        puts(id);
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

static int volume_create(struct cli *cli, int argc, char **argv)
{
    const char *verb = "volume create";
    static const struct option opts[] = {
        { "capacity", required_argument, NULL, 'c' }, { "region", required_argument, NULL, 'r' },
        { "from", required_argument, NULL, 'f' },     { "json", no_argument, NULL, 'j' },
        CLI_COMMON_OPTS,                              { 0 },
    };
    const char *capacity = NULL, *from = NULL, *region = getenv("HUTCH_REGION");
    bool as_json = false;
    int ch;
    if (!region || !*region)
        region = DEFAULT_REGION;
    /* no '+': options may follow SLUG */
    while ((ch = getopt_long(argc, argv, ":hc:r:f:", opts, NULL)) != -1) {
        switch (ch) {
        case 'h':
            fputs(help_create, stdout);
            return 0;
        case 'c': capacity = optarg; break;
        case 'r': region = optarg; break;
        case 'f': from = optarg; break;
        case 'j': as_json = true; break;
        default: {
            int r = cli_common_opt(cli, verb, ch, argv);
            if (r >= 0)
                return r;
        }
        }
    }
    if (optind >= argc)
        return cli_usage(verb, "missing SLUG");
    if (argc - optind > 1)
        return cli_usage(verb, "unexpected argument '%s'", argv[optind + 1]);
    const char *slug = argv[optind];
    if (!capacity)
        return cli_usage(verb, "--capacity is required (e.g. --capacity 1GiB)");
    if (!capacity_shape_ok(capacity))
        return cli_usage(verb, "invalid capacity '%s' (examples: 1GiB, 512MiB, 2GB, 1073741824)", capacity);
    if (from && !cli_storage_name_ok(from) && strcmp(from, "builtin:debian-13") != 0)
        return cli_usage(verb, "--from must be builtin:debian-13 or a snapshot id or slug, not '%.100s'", from);
    struct hx_err e = { 0 };
    json_t *body = json_pack("{s:s, s:s, s:s}", "slug", slug, "region", region, "capacity", capacity);
    if (!body)
        return cli_usage(verb, "slug and region must be UTF-8 text");
    if (from)
        json_object_set_new(body, "from", json_string(from));
    struct hutch_target t;
    json_t *out = NULL;
    int ret = 1;
    if (cli_target(cli, &t, &e) < 0) {
        json_decref(body);
        return cli_error("%s: %s", verb, e.msg);
    }
    if (hutch_rest(&t, "POST", "/api/v2/volumes", body, &out, &e) < 0)
        cli_error("%s %s: %s", verb, slug, e.msg);
    else
        ret = print_object(out, as_json);
    json_decref(out);
    json_decref(body);
    hutch_target_free(&t);
    return ret;
}

static int volume_snapshot(struct cli *cli, int argc, char **argv)
{
    const char *verb = "volume snapshot";
    static const struct option opts[] = { { "json", no_argument, NULL, 'j' }, CLI_COMMON_OPTS, { 0 } };
    bool as_json = false;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (ch == 'h') {
            fputs(help_snapshot, stdout);
            return 0;
        }
        if (ch == 'j') {
            as_json = true;
            continue;
        }
        int r = cli_common_opt(cli, verb, ch, argv);
        if (r >= 0)
            return r;
    }
    if (argc - optind < 2)
        return cli_usage(verb, "want a volume (ID or SLUG) and the new snapshot's slug");
    if (argc - optind > 2)
        return cli_usage(verb, "unexpected argument '%s'", argv[optind + 2]);
    const char *vol = argv[optind], *slug = argv[optind + 1];
    if (!cli_storage_name_ok(vol))
        return cli_usage(verb, "invalid volume id or slug '%.100s'", vol);
    json_t *body = json_pack("{s:s}", "slug", slug);
    if (!body)
        return cli_usage(verb, "the slug must be UTF-8 text");
    struct hx_err e = { 0 };
    struct hutch_target t;
    json_t *out = NULL;
    int ret = 1;
    char path[128];
    snprintf(path, sizeof path, "/api/v2/volumes/%s/snapshot", vol);
    if (cli_target(cli, &t, &e) < 0) {
        json_decref(body);
        return cli_error("%s: %s", verb, e.msg);
    }
    if (hutch_rest(&t, "POST", path, body, &out, &e) < 0)
        cli_error("%s %s: %s", verb, vol, e.msg);
    else
        ret = print_object(out, as_json);
    json_decref(out);
    json_decref(body);
    hutch_target_free(&t);
    return ret;
}

int cmd_volume(struct cli *cli, int argc, char **argv)
{
    int parsed = cli_common_only(cli, "volume", help, argc, argv);
    if (parsed >= 0)
        return parsed;
    if (optind >= argc)
        return cli_usage("volume", "missing VERB: create, ls, rm or snapshot");
    const char *sub = argv[optind];
    int sargc = argc - optind;
    char **sargv = argv + optind;
    cli_getopt_reset();
    if (strcmp(sub, "create") == 0)
        return volume_create(cli, sargc, sargv);
    if (strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0)
        return cli_storage_ls(cli, "volume ls", "volume", help_ls, sargc, sargv);
    if (strcmp(sub, "rm") == 0 || strcmp(sub, "delete") == 0)
        return cli_storage_rm(cli, "volume rm", "volume", help_rm, sargc, sargv);
    if (strcmp(sub, "snapshot") == 0)
        return volume_snapshot(cli, sargc, sargv);
    return cli_usage("volume", "unknown verb '%s': create, ls, rm or snapshot", sub);
}
