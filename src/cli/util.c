/* hutch CLI helpers: error output, getopt glue, endpoint/token resolution, and the
 * parsers for durations, memory sizes and K=V pairs. */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "cli/cli.h"

int cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hutch: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_usage(const char *verb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "hutch %s: ", verb);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'hutch %s --help')\n", verb);
    va_end(ap);
    return EXIT_USAGE;
}

void cli_getopt_reset(void)
{
    optind = 0; /* glibc: 0 reinitialises, scanning starts at argv[1] */
    opterr = 0;
}

int cli_common_opt(struct cli *cli, const char *verb, int ch, char **argv)
{
    switch (ch) {
    case 'E':
        cli->endpoint_flag = optarg;
        return -1;
    case 'T':
        cli->token_flag = optarg;
        return -1;
    case ':':
        return cli_usage(verb, "option '%s' needs a value", argv[optind - 1]);
    default:
        if (optopt && optopt != '?')
            return cli_usage(verb, "unknown option '-%c'", optopt);
        return cli_usage(verb, "unknown option '%s'", argv[optind - 1]);
    }
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

const char *cli_endpoint(const struct cli *cli)
{
    if (cli->endpoint_flag)
        return cli->endpoint_flag;
    const char *v = env_nonempty("HUTCH_ENDPOINT");
    if (!v)
        v = env_nonempty("DENO_SANDBOX_ENDPOINT");
    return v ? v : DEFAULT_ENDPOINT;
}

const char *cli_token(const struct cli *cli)
{
    if (cli->token_flag)
        return cli->token_flag;
    const char *v = env_nonempty("HUTCH_TOKEN");
    return v ? v : env_nonempty("DENO_DEPLOY_TOKEN");
}

int cli_target(const struct cli *cli, struct hutch_target *t, struct hx_err *e)
{
    const char *token = cli_token(cli);
    if (!token)
        return hx_fail(e, EACCES, "no token: set HUTCH_TOKEN (or DENO_DEPLOY_TOKEN) or pass --token");
    return hutch_target_init(t, cli_endpoint(cli), token, e);
}

int cli_parse_duration(const char *s, int64_t *ms, struct hx_err *e)
{
    const char *p = s;
    int64_t total = 0;
    if (!*p)
        return hx_fail(e, EINVAL, "empty duration");
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return hx_fail(e, EINVAL, "invalid duration '%s' (examples: 90s, 30m, 2h, 1h30m)", s);
        int64_t n = 0;
        while (isdigit((unsigned char)*p)) {
            n = n * 10 + (*p++ - '0');
            if (n > 100000000)
                return hx_fail(e, ERANGE, "duration '%s' is too long", s);
        }
        int64_t unit;
        switch (*p) {
        case 's': unit = 1000; break;
        case 'm': unit = 60 * 1000; break;
        case 'h': unit = 3600 * 1000; break;
        case 'd': unit = 86400 * 1000; break;
        default:
            return hx_fail(e, EINVAL, "invalid duration '%s': a unit is required (s, m, h or d; e.g. 30m)", s);
        }
        p++;
        total += n * unit;
        if (total > (int64_t)366 * 86400 * 1000)
            return hx_fail(e, ERANGE, "duration '%s' is too long", s);
    }
    if (total <= 0)
        return hx_fail(e, EINVAL, "duration '%s' must be positive", s);
    *ms = total;
    return 0;
}

int cli_parse_memory(const char *s, int64_t *mib, struct hx_err *e)
{
    static const struct { const char *unit; double bytes; } units[] = {
        { "GiB", 1073741824.0 }, { "MiB", 1048576.0 }, { "KiB", 1024.0 },
        { "GB", 1e9 },           { "MB", 1e6 },        { "kB", 1e3 },
    };
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isdigit((unsigned char)*s) || !isfinite(v))
        return hx_fail(e, EINVAL, "invalid memory size '%s' (examples: 2GiB, 1280MiB)", s);
    for (size_t i = 0; i < HX_ARRAY_LEN(units); i++) {
        if (strcasecmp(end, units[i].unit) == 0) {
            double m = floor(v * units[i].bytes / 1048576.0);
            if (m < 1 || m > 1048576)
                return hx_fail(e, ERANGE, "memory size '%s' is out of range", s);
            *mib = (int64_t)m;
            return 0;
        }
    }
    return hx_fail(e, EINVAL, "invalid memory size '%s': unit must be GiB, MiB, KiB, GB, MB or kB", s);
}

int cli_parse_kv(const char *s, json_t *obj, const char *what, struct hx_err *e)
{
    const char *eq = strchr(s, '=');
    if (!eq || eq == s)
        return hx_fail(e, EINVAL, "invalid %s '%s': expected KEY=VALUE", what, s);
    char key[256];
    size_t klen = (size_t)(eq - s);
    if (klen >= sizeof(key))
        return hx_fail(e, EINVAL, "%s key is too long", what);
    memcpy(key, s, klen);
    key[klen] = '\0';
    json_t *v = json_string(eq + 1);
    if (!v)
        return hx_fail(e, EINVAL, "%s '%s' is not valid UTF-8", what, key);
    if (json_object_set_new(obj, key, v) < 0)
        return hx_fail(e, EINVAL, "%s key '%s' is not valid UTF-8", what, key);
    return 0;
}

int64_t cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cli_iso8601(int64_t ms, char *buf, size_t n)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) {
        snprintf(buf, n, "%" PRId64, ms);
        return;
    }
    char tmp[40];
    strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, n, "%s.%03dZ", tmp, (int)(ms % 1000));
}

void cli_urlencode(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || ch == '*' || ch == '-' || ch == '.' || ch == '_')
            fputc(ch, f);
        else if (ch == ' ')
            fputc('+', f);
        else
            fprintf(f, "%%%02X", ch);
    }
}

int cli_common_only(struct cli *cli, const char *verb, const char *help, int argc, char **argv)
{
    static const struct option opts[] = { CLI_COMMON_OPTS, { 0 } };
    int ch;
    while ((ch = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        if (ch == 'h') {
            fputs(help, stdout);
            return 0;
        }
        int r = cli_common_opt(cli, verb, ch, argv);
        if (r >= 0)
            return r;
    }
    return -1;
}
