/* hutch app ls|logs|rm and hutch deploy: apps over REST, as SDK 0.13.2's
 * client.apps and sandbox.deploy() use them (docs/apps.md). deploy follows
 * the build logs (server-sent events) as they come. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char help_app[] =
    "usage: hutch app ls [--json]\n"
    "       hutch app logs APP [--since DURATION] [--revision REV] [--level L] [--query Q] [--json]\n"
    "       hutch app rm APP...\n"
    "\n"
    "Apps serve revisions deployed with 'hutch deploy' or sandbox.deploy(). APP is an id or slug.\n";

static const char help_ls[] =
    "usage: hutch app ls [--json]\n"
    "\n"
    "Lists apps: SLUG ID PRODUCTION-URL (\"-\" before the first production deploy).\n";

static const char help_logs[] =
    "usage: hutch app logs APP [--since DURATION] [--revision REV] [--level L] [--query Q] [--json]\n"
    "\n"
    "Prints an app's runtime logs (what its processes wrote): TIME LEVEL REVISION MESSAGE.\n"
    "  --since DURATION  how far back (default 1h): 30s, 10m, 2h\n"
    "  --revision REV    one revision's lines only\n"
    "  --level L         at least this level: debug, info, warn, error\n"
    "  --query Q         lines that contain Q\n";

static const char help_rm[] =
    "usage: hutch app rm APP...\n"
    "\n"
    "Deletes apps: their sandboxes stop, their revisions, images, routes and logs go.\n";

static const char help_deploy[] =
    "usage: hutch deploy SANDBOX APP [--prod] [--path DIR] [--entrypoint FILE] [--arg A]...\n"
    "                    [--install CMD] [--build CMD] [--no-follow] [--json]\n"
    "\n"
    "Deploys a directory of a running sandbox to APP (made if it does not exist): its files\n"
    "become a new revision, the install and build commands run in a fresh build sandbox,\n"
    "then the revision is served. The build logs are followed as they come; at the end the\n"
    "revision's URL is printed. Exit status 0 when the revision is served, 1 when it failed.\n"
    "\n"
    "  --prod             deploy to production (the app's stable URL); default: a preview URL\n"
    "  --path DIR         the directory in the sandbox (default /home/app)\n"
    "  --entrypoint FILE  relative to DIR (default main.ts); run with deno serve or deno run\n"
    "  --arg A            an argument for the entrypoint (repeatable)\n"
    "  --install CMD      e.g. 'deno install'; --build CMD e.g. 'deno task build'\n"
    "  --no-follow        print the revision id and return at once\n";

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 63 && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

static const char *str(json_t *v, const char *d)
{
    return json_is_string(v) ? json_string_value(v) : d;
}

static int parse_flags_only(struct cli *cli, const char *verb, const char *help, int argc, char **argv, bool *as_json)
{
    enum { O_JSON = 1000 };
    static const struct option opts[] = { { "json", no_argument, NULL, O_JSON }, CLI_COMMON_OPTS, { 0 } };
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (ch == 'h') {
            fputs(help, stdout);
            return 0;
        }
        if (ch == O_JSON) {
            *as_json = true;
            continue;
        }
        int r = cli_common_opt(cli, verb, ch, argv);
        if (r >= 0)
            return r;
    }
    return -1;
}

static int app_ls(struct cli *cli, int argc, char **argv)
{
    bool as_json = false;
    int r = parse_flags_only(cli, "app ls", help_ls, argc, argv, &as_json);
    if (r >= 0)
        return r;
    if (optind < argc)
        return cli_usage("app ls", "unexpected argument '%s'", argv[optind]);
    struct hutch_target t;
    struct hx_err e = { 0 };
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("%s", e.msg);
    json_t *apps = NULL;
    if (hutch_rest_list(&t, "/api/v2/apps", &apps, &e) < 0) {
        hutch_target_free(&t);
        return cli_error("app ls: %s", e.msg);
    }
    if (as_json) {
        char *s = json_dumps(apps, JSON_INDENT(2));
        if (s)
            puts(s);
        free(s);
    } else {
        printf("%-32s  %-24s  %s\n", "SLUG", "ID", "PRODUCTION-URL");
        size_t i;
        json_t *a;
        json_array_foreach(apps, i, a) {
            char path[128];
            snprintf(path, sizeof path, "/api/v2/apps/%s/timelines", str(json_object_get(a, "id"), "?"));
            json_t *tls = NULL;
            const char *url = NULL;
            struct hx_err te = { 0 };
            if (name_ok(str(json_object_get(a, "id"), "")) && hutch_rest_list(&t, path, &tls, &te) == 0) {
                size_t k;
                json_t *tl;
                json_array_foreach(tls, k, tl) if (strcmp(str(json_object_get(json_object_get(tl, "context"), "slug"), ""),
                                                          "production") == 0)
                    url = str(json_object_get(json_array_get(json_object_get(tl, "domains"), 0), "domain"), NULL);
            }
            printf("%-32s  %-24s  %s%s\n", str(json_object_get(a, "slug"), "?"), str(json_object_get(a, "id"), "?"),
                   url ? "https://" : "", url ? url : "-");
            json_decref(tls);
        }
    }
    json_decref(apps);
    hutch_target_free(&t);
    return 0;
}

static int app_logs(struct cli *cli, int argc, char **argv)
{
    enum { O_JSON = 1000, O_SINCE, O_REV, O_LEVEL, O_QUERY };
    static const struct option opts[] = {
        { "json", no_argument, NULL, O_JSON },          { "since", required_argument, NULL, O_SINCE },
        { "revision", required_argument, NULL, O_REV }, { "level", required_argument, NULL, O_LEVEL },
        { "query", required_argument, NULL, O_QUERY },  CLI_COMMON_OPTS,
        { 0 },
    };
    bool as_json = false;
    const char *since = "1h", *rev = NULL, *level = NULL, *query = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (ch) {
        case 'h': fputs(help_logs, stdout); return 0;
        case O_JSON: as_json = true; continue;
        case O_SINCE: since = optarg; continue;
        case O_REV: rev = optarg; continue;
        case O_LEVEL: level = optarg; continue;
        case O_QUERY: query = optarg; continue;
        default: {
            int r = cli_common_opt(cli, "app logs", ch, argv);
            if (r >= 0)
                return r;
        }
        }
    }
    if (optind + 1 != argc)
        return cli_usage("app logs", "give one APP");
    const char *app = argv[optind];
    if (!name_ok(app) || (rev && !name_ok(rev)))
        return cli_usage("app logs", "APP and REV are ids or slugs ([A-Za-z0-9_-])");
    struct hx_err e = { 0 };
    int64_t back;
    if (cli_parse_duration(since, &back, &e) < 0)
        return cli_usage("app logs", "--since: %s", e.msg);
    char start[40];
    cli_iso8601(cli_now_ms() - back, start, sizeof start);
    char *path = NULL;
    size_t plen = 0;
    FILE *f = open_memstream(&path, &plen);
    if (!f)
        return cli_error("out of memory");
    fprintf(f, "/api/v2/apps/%s/logs?limit=1000&start=", app);
    cli_urlencode(f, start);
    if (rev)
        fprintf(f, "&revision_id=%s", rev);
    if (level) {
        fputs("&level=", f);
        cli_urlencode(f, level);
    }
    if (query) {
        fputs("&query=", f);
        cli_urlencode(f, query);
    }
    fclose(f);
    struct hutch_target t;
    if (cli_target(cli, &t, &e) < 0) {
        free(path);
        return cli_error("%s", e.msg);
    }
    json_t *body = NULL;
    int rc = hutch_rest(&t, "GET", path, NULL, &body, &e);
    free(path);
    hutch_target_free(&t);
    if (rc < 0)
        return cli_error("app logs: %s", e.msg);
    json_t *logs = json_object_get(body, "logs");
    if (as_json) {
        char *s = json_dumps(logs, JSON_INDENT(2));
        if (s)
            puts(s);
        free(s);
    } else {
        size_t i;
        json_t *l;
        json_array_foreach(logs, i, l) printf("%s  %-5s  %s  %s\n", str(json_object_get(l, "timestamp"), "?"),
                                              str(json_object_get(l, "level"), "?"),
                                              str(json_object_get(l, "revision_id"), "-"),
                                              str(json_object_get(l, "message"), ""));
    }
    json_decref(body);
    return 0;
}

static int app_rm(struct cli *cli, int argc, char **argv)
{
    bool as_json = false;
    int r = parse_flags_only(cli, "app rm", help_rm, argc, argv, &as_json);
    if (r >= 0)
        return r;
    if (optind >= argc)
        return cli_usage("app rm", "give at least one APP");
    struct hutch_target t;
    struct hx_err e = { 0 };
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("%s", e.msg);
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        if (!name_ok(argv[i])) {
            rc = cli_error("app rm: '%s' is not an app id or slug", argv[i]);
            continue;
        }
        char path[128];
        snprintf(path, sizeof path, "/api/v2/apps/%s", argv[i]);
        if (hutch_rest(&t, "DELETE", path, NULL, NULL, &e) < 0)
            rc = cli_error("app rm %s: %s", argv[i], e.msg);
    }
    hutch_target_free(&t);
    return rc;
}

int cmd_app(struct cli *cli, int argc, char **argv)
{
    int parsed = cli_common_only(cli, "app", help_app, argc, argv);
    if (parsed >= 0)
        return parsed;
    if (optind >= argc)
        return cli_usage("app", "missing VERB: ls, logs or rm");
    const char *sub = argv[optind];
    int sargc = argc - optind;
    char **sargv = argv + optind;
    cli_getopt_reset();
    if (strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0)
        return app_ls(cli, sargc, sargv);
    if (strcmp(sub, "logs") == 0)
        return app_logs(cli, sargc, sargv);
    if (strcmp(sub, "rm") == 0 || strcmp(sub, "delete") == 0)
        return app_rm(cli, sargc, sargv);
    return cli_usage("app", "unknown verb '%s': ls, logs or rm", sub);
}

/* ---- deploy --------------------------------------------------------- */

struct sse {
    char *buf;
    size_t len, cap;
    bool as_json;
};

static void sse_event(struct sse *s, const char *ev)
{
    for (const char *line = ev; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        if (n > 5 && strncmp(line, "data:", 5) == 0) {
            json_t *j = json_loadb(line + 5, n - 5, 0, NULL);
            if (s->as_json) {
                printf("%.*s\n", (int)(n - 5), line + 5);
            } else if (j) {
                const char *lvl = str(json_object_get(j, "level"), "info");
                FILE *out = strcmp(lvl, "error") == 0 ? stderr : stdout;
                fprintf(out, "[%s] %s\n", str(json_object_get(j, "step"), "?"), str(json_object_get(j, "message"), ""));
                fflush(out);
            }
            json_decref(j);
        }
        line = nl ? nl + 1 : NULL;
    }
}

static void on_sse(void *ud, const char *p, size_t n)
{
    struct sse *s = ud;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8192;
        while (cap < s->len + n + 1)
            cap *= 2;
        if (cap > (8u << 20)) { /* one event is never this long: drop what we hold */
            s->len = 0;
            return;
        }
        char *nb = realloc(s->buf, cap);
        if (!nb)
            return;
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->buf[s->len] = 0;
    char *end;
    while ((end = strstr(s->buf, "\n\n"))) {
        *end = 0;
        sse_event(s, s->buf);
        size_t used = (size_t)(end + 2 - s->buf);
        memmove(s->buf, end + 2, s->len - used + 1);
        s->len -= used;
    }
}

int cmd_deploy(struct cli *cli, int argc, char **argv)
{
    enum { O_PROD = 1000, O_PATH, O_ENTRY, O_ARG, O_INSTALL, O_BUILD, O_NOFOLLOW, O_JSON };
    static const struct option opts[] = {
        { "prod", no_argument, NULL, O_PROD },          { "path", required_argument, NULL, O_PATH },
        { "entrypoint", required_argument, NULL, O_ENTRY }, { "arg", required_argument, NULL, O_ARG },
        { "install", required_argument, NULL, O_INSTALL }, { "build", required_argument, NULL, O_BUILD },
        { "no-follow", no_argument, NULL, O_NOFOLLOW }, { "json", no_argument, NULL, O_JSON },
        CLI_COMMON_OPTS,                                { 0 },
    };
    bool prod = false, follow = true, as_json = false;
    const char *path = NULL, *entry = "main.ts", *install = NULL, *build = NULL;
    json_t *args = json_array();
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (ch) {
        case 'h': fputs(help_deploy, stdout); json_decref(args); return 0;
        case O_PROD: prod = true; continue;
        case O_PATH: path = optarg; continue;
        case O_ENTRY: entry = optarg; continue;
        case O_ARG: json_array_append_new(args, json_string(optarg)); continue;
        case O_INSTALL: install = optarg; continue;
        case O_BUILD: build = optarg; continue;
        case O_NOFOLLOW: follow = false; continue;
        case O_JSON: as_json = true; continue;
        default: {
            int r = cli_common_opt(cli, "deploy", ch, argv);
            if (r >= 0) {
                json_decref(args);
                return r;
            }
        }
        }
    }
    if (optind + 2 != argc) {
        json_decref(args);
        return cli_usage("deploy", "give SANDBOX and APP");
    }
    const char *sb = argv[optind], *app = argv[optind + 1];
    if (!name_ok(sb) || !name_ok(app)) {
        json_decref(args);
        return cli_usage("deploy", "SANDBOX is a sandbox id and APP an app id or slug");
    }
    json_t *body = json_pack("{s:s, s:s, s:o, s:b, s:b, s:s}", "app", app, "entrypoint", entry, "args", args,
                             "production", prod, "preview", !prod, "mode", install || build ? "local" : "none");
    if (path)
        json_object_set_new(body, "path", json_string(path));
    if (install)
        json_object_set_new(body, "installCommand", json_string(install));
    if (build)
        json_object_set_new(body, "buildCommand", json_string(build));
    struct hutch_target t;
    struct hx_err e = { 0 };
    if (cli_target(cli, &t, &e) < 0) {
        json_decref(body);
        return cli_error("%s", e.msg);
    }
    char p[160];
    snprintf(p, sizeof p, "/api/v2/sandboxes/%s/deploy", sb);
    json_t *out = NULL;
    int rc = hutch_rest(&t, "POST", p, body, &out, &e);
    json_decref(body);
    if (rc < 0) {
        hutch_target_free(&t);
        return cli_error("deploy: %s", e.msg);
    }
    char rev[64];
    snprintf(rev, sizeof rev, "%s", str(json_object_get(out, "revision_id"), ""));
    json_decref(out);
    if (!name_ok(rev)) {
        hutch_target_free(&t);
        return cli_error("deploy: the server answered no revision id");
    }
    if (!follow) {
        puts(rev);
        hutch_target_free(&t);
        return 0;
    }
    fprintf(stderr, "revision %s\n", rev);
    struct sse s = { .as_json = as_json };
    snprintf(p, sizeof p, "/api/v2/revisions/%s/build_logs", rev);
    rc = hutch_http_stream(&t, p, on_sse, &s, 3600 * 1000, &e);
    if (s.len) {
        s.buf[s.len] = 0;
        sse_event(&s, s.buf);
    }
    free(s.buf);
    if (rc < 0) {
        hutch_target_free(&t);
        return cli_error("deploy: following the build logs: %s", e.msg);
    }
    snprintf(p, sizeof p, "/api/v2/revisions/%s", rev);
    json_t *r = NULL;
    if (hutch_rest(&t, "GET", p, NULL, &r, &e) < 0) {
        hutch_target_free(&t);
        return cli_error("deploy: %s", e.msg);
    }
    const char *status = str(json_object_get(r, "status"), "?");
    int ret = 0;
    if (strcmp(status, "succeeded") == 0) {
        snprintf(p, sizeof p, "/api/v2/revisions/%s/timelines", rev);
        json_t *tls = NULL;
        if (hutch_rest(&t, "GET", p, NULL, &tls, &e) == 0) {
            size_t i;
            json_t *tl;
            json_array_foreach(tls, i, tl) printf("%s: https://%s\n",
                                                  str(json_object_get(json_object_get(tl, "context"), "slug"), "?"),
                                                  str(json_object_get(json_array_get(json_object_get(tl, "domains"), 0),
                                                                      "domain"), "?"));
        }
        json_decref(tls);
    } else {
        ret = cli_error("deploy: revision %s %s (%s)", rev, status, str(json_object_get(r, "failure_reason"), "?"));
    }
    json_decref(r);
    hutch_target_free(&t);
    return ret;
}
