/* hutch CLI: what `volume` and `snapshot` share: names in URLs, the listing
 * (every Link rel="next" page, a table or JSON) and deletion. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

bool cli_storage_name_ok(const char *s)
{
    /* ids (vol_xxx_…, snp_xxx_…) and slugs ([a-z0-9-]) need no escaping in a path */
    size_t n = strlen(s);
    return n > 0 && n <= 63 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

static const char *str_or(json_t *v, const char *dflt)
{
    return json_is_string(v) ? json_string_value(v) : dflt;
}

/* Bytes as the shortest exact-ish human size: 1 GiB, 96 MiB, 4.2 MiB, 512 B. */
void cli_size_text(json_t *v, char *out, size_t cap)
{
    if (!json_is_integer(v)) {
        snprintf(out, cap, "?");
        return;
    }
    double b = (double)json_integer_value(v);
    static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        u++;
    }
    if (u == 0 || b >= 100 || b == (double)(int64_t)b)
        snprintf(out, cap, "%.0f %s", b, units[u]);
    else
        snprintf(out, cap, "%.1f %s", b, units[u]);
}

int cli_storage_ls(struct cli *cli, const char *verb, const char *kind, const char *help, int argc, char **argv)
{
    enum { O_JSON = 1000, O_SEARCH };
    static const struct option opts[] = {
        { "json", no_argument, NULL, O_JSON }, { "search", required_argument, NULL, O_SEARCH }, CLI_COMMON_OPTS, { 0 },
    };
    bool as_json = false;
    const char *search = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        if (ch == 'h') {
            fputs(help, stdout);
            return 0;
        }
        if (ch == O_JSON) {
            as_json = true;
            continue;
        }
        if (ch == O_SEARCH) {
            search = optarg;
            continue;
        }
        int r = cli_common_opt(cli, verb, ch, argv);
        if (r >= 0)
            return r;
    }
    if (optind < argc)
        return cli_usage(verb, "unexpected argument '%s'", argv[optind]);
    if (search && strlen(search) > 64)
        return cli_usage(verb, "--search is at most 64 bytes");
    char *path = NULL;
    size_t plen = 0;
    FILE *f = open_memstream(&path, &plen);
    if (!f)
        return cli_error("%s: out of memory", verb);
    fprintf(f, "/api/v2/%ss", kind);
    if (search) {
        fputs("?search=", f);
        cli_urlencode(f, search);
    }
    fclose(f);
    struct hx_err e = { 0 };
    struct hutch_target t;
    json_t *list = NULL;
    int ret = 1;
    if (cli_target(cli, &t, &e) < 0) {
        free(path);
        return cli_error("%s: %s", verb, e.msg);
    }
    if (hutch_rest_list(&t, path, &list, &e) < 0) {
        cli_error("%s: %s", verb, e.msg);
        goto out;
    }
    if (as_json) {
        if (json_dumpf(list, stdout, JSON_INDENT(2)) < 0)
            goto out;
        putchar('\n');
    } else {
        bool vol = strcmp(kind, "volume") == 0;
        int wid = 2, wslug = 4, wreg = 6;
        size_t i;
        json_t *o;
        json_array_foreach(list, i, o) {
            int l = (int)strlen(str_or(json_object_get(o, "id"), "?"));
            wid = l > wid ? l : wid;
            l = (int)strlen(str_or(json_object_get(o, "slug"), "?"));
            wslug = l > wslug ? l : wslug;
            l = (int)strlen(str_or(json_object_get(o, "region"), "?"));
            wreg = l > wreg ? l : wreg;
        }
        printf("%-*s  %-*s  %-*s  %10s  %10s  %-8s  %s\n", wid, "ID", wslug, "SLUG", wreg, "REGION",
               vol ? "CAPACITY" : "SIZE", "ALLOCATED", "BOOTABLE", vol ? "BASE" : "VOLUME");
        json_array_foreach(list, i, o) {
            char a[32], b[32];
            cli_size_text(json_object_get(o, vol ? "capacity" : "flattened_size"), a, sizeof a);
            cli_size_text(json_object_get(o, vol ? "estimated_allocated_size" : "allocated_size"), b, sizeof b);
            json_t *rel = json_object_get(o, vol ? "base_snapshot" : "volume");
            printf("%-*s  %-*s  %-*s  %10s  %10s  %-8s  %s\n", wid, str_or(json_object_get(o, "id"), "?"), wslug,
                   str_or(json_object_get(o, "slug"), "?"), wreg, str_or(json_object_get(o, "region"), "?"), a, b,
                   json_is_true(json_object_get(o, "is_bootable")) ? "yes" : "no",
                   str_or(json_object_get(rel, "slug"), "-"));
        }
    }
    ret = fflush(stdout) == 0 ? 0 : 1;
out:
    free(path);
    json_decref(list);
    hutch_target_free(&t);
    return ret;
}

int cli_storage_rm(struct cli *cli, const char *verb, const char *kind, const char *help, int argc, char **argv)
{
    int parsed = cli_common_only(cli, verb, help, argc, argv);
    if (parsed >= 0)
        return parsed;
    if (optind >= argc)
        return cli_usage(verb, "missing %s id or slug", kind);
    for (int i = optind; i < argc; i++)
        if (!cli_storage_name_ok(argv[i]))
            return cli_usage(verb, "invalid %s id or slug '%.100s'", kind, argv[i]);
    struct hx_err e = { 0 };
    struct hutch_target t;
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("%s: %s", verb, e.msg);
    int ret = 0;
    for (int i = optind; i < argc; i++) {
        char path[128];
        snprintf(path, sizeof path, "/api/v2/%ss/%s", kind, argv[i]);
        if (hutch_rest(&t, "DELETE", path, NULL, NULL, &e) < 0)
            ret = cli_error("%s %s: %s", verb, argv[i], e.msg);
    }
    hutch_target_free(&t);
    return ret;
}
