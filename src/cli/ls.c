/* hutch ls: GET /api/v2/sandboxes[?labels[k]=v], as a table or as JSON. */
#include <stdio.h>

#include "cli/cli.h"

static const char help[] =
    "usage: hutch ls [--json] [--label K=V]...\n"
    "\n"
    "Lists sandboxes: ID STATUS CREATED LABELS.\n"
    "\n"
    "  -l, --label K=V   only sandboxes with this label (repeatable: all must match)\n"
    "      --json        print the server's JSON array as is\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

static char *labels_text(json_t *labels)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    const char *k;
    json_t *v;
    bool first = true;
    json_object_foreach(labels, k, v) {
        fprintf(f, "%s%s=%s", first ? "" : ",", k, json_is_string(v) ? json_string_value(v) : "?");
        first = false;
    }
    if (first)
        fputs("-", f);
    fclose(f);
    return buf;
}

static const char *str_or(json_t *v, const char *dflt)
{
    return json_is_string(v) ? json_string_value(v) : dflt;
}

int cmd_ls(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        { "json", no_argument, NULL, 'j' }, { "label", required_argument, NULL, 'l' }, CLI_COMMON_OPTS, { 0 },
    };
    struct hx_err e = { 0 };
    bool as_json = false;
    json_t *labels = json_object();
    json_t *list = NULL;
    struct hutch_target t = { 0 };
    char *path = NULL;
    size_t plen = 0;
    int ret = 1, ch;

    while ((ch = getopt_long(argc, argv, "+:hl:", opts, NULL)) != -1) {
        switch (ch) {
        case 'h':
            fputs(help, stdout);
            ret = 0;
            goto out;
        case 'j':
            as_json = true;
            break;
        case 'l':
            if (cli_parse_kv(optarg, labels, "label", &e) < 0) {
                ret = cli_usage("ls", "%s", e.msg);
                goto out;
            }
            break;
        default: {
            int r = cli_common_opt(cli, "ls", ch, argv);
            if (r >= 0) {
                ret = r;
                goto out;
            }
        }
        }
    }
    if (optind < argc) {
        ret = cli_usage("ls", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    FILE *f = open_memstream(&path, &plen);
    if (!f) {
        cli_error("ls: out of memory");
        goto out;
    }
    fputs("/api/v2/sandboxes", f);
    const char *k;
    json_t *v;
    char sep = '?';
    json_object_foreach(labels, k, v) {
        /* The SDK writes labels[k]=v through URLSearchParams: the brackets are percent-encoded. */
        fputc(sep, f);
        sep = '&';
        fputs("labels%5B", f);
        cli_urlencode(f, k);
        fputs("%5D=", f);
        cli_urlencode(f, json_string_value(v));
    }
    fclose(f);
    if (cli_target(cli, &t, &e) < 0 || hutch_rest(&t, "GET", path, NULL, &list, &e) < 0) {
        cli_error("ls: %s", e.msg);
        goto out;
    }
    if (!json_is_array(list)) {
        cli_error("ls: the server did not return a list");
        goto out;
    }
    if (as_json) {
        if (json_dumpf(list, stdout, JSON_INDENT(2)) < 0)
            goto out;
        putchar('\n');
    } else {
        int wid = 2, wst = 6, wcr = 7;
        size_t i;
        json_t *sb;
        json_array_foreach(list, i, sb) {
            int l = (int)strlen(str_or(json_object_get(sb, "id"), "?"));
            wid = l > wid ? l : wid;
            l = (int)strlen(str_or(json_object_get(sb, "status"), "?"));
            wst = l > wst ? l : wst;
            l = (int)strlen(str_or(json_object_get(sb, "createdAt"), "?"));
            wcr = l > wcr ? l : wcr;
        }
        printf("%-*s  %-*s  %-*s  %s\n", wid, "ID", wst, "STATUS", wcr, "CREATED", "LABELS");
        json_array_foreach(list, i, sb) {
            autofree char *lt = labels_text(json_object_get(sb, "labels"));
            printf("%-*s  %-*s  %-*s  %s\n", wid, str_or(json_object_get(sb, "id"), "?"), wst,
                   str_or(json_object_get(sb, "status"), "?"), wcr, str_or(json_object_get(sb, "createdAt"), "?"),
                   lt ? lt : "?");
        }
    }
    ret = fflush(stdout) == 0 ? 0 : 1;
out:
    free(path);
    hutch_target_free(&t);
    json_decref(labels);
    json_decref(list);
    return ret;
}
