/* hutch exec / hutch sh: connect to a sandbox, run one command with our stdio, and exit
 * with its status (128+n when killed by signal n), like a local command would. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/* Exit codes of our own, in the docker/shell tradition, so they do not hide
 * behind the remote command's codes. */
#define EXIT_HUTCH_FAILED 125 /* hutch could not run it: connection, protocol */
#define EXIT_NOT_RUNNABLE 126 /* the sandbox refused the spawn */
#define EXIT_NOT_FOUND    127 /* no such command */

static const char exec_help[] =
    "usage: hutch exec ID [OPTIONS] [--] CMD [ARGS...]\n"
    "\n"
    "Runs CMD in sandbox ID with our stdin/stdout/stderr and exits with its exit\n"
    "code (128+N when it died of signal N). Ctrl-C sends SIGINT to the process, a\n"
    "second Ctrl-C SIGKILL. Exit 125: hutch failed; 126: the sandbox could not\n"
    "start CMD; 127: CMD not found.\n"
    "\n"
    "  -w, --cwd DIR     working directory inside the sandbox\n"
    "  -e, --env K=V     environment variable for CMD (repeatable)\n"
    "      --sudo        run as root (prefixes 'sudo', as the SDK's .sudo() does)\n"
    "  -i, --stdin       forward stdin even when it is a terminal\n"
    "  -n, --no-stdin    never forward stdin (CMD gets no input)\n"
    "      --stats       after CMD, print what it used to stderr: CPU, peak memory, block I/O,\n"
    "                    wall time (GET /api/v2/sandboxes/ID/processes)\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n"
    "\n"
    "By default stdin is forwarded when it is not a terminal (a pipe or a file):\n"
    "  head -c 10M /dev/urandom | hutch exec ID -- sha256sum\n"
    "There is no pseudo-terminal (-t) yet: the protocol has none.\n";

static const char sh_help[] =
    "usage: hutch sh ID [OPTIONS] 'SCRIPT'\n"
    "\n"
    "Runs SCRIPT with 'bash -c' in sandbox ID; same options and exit codes as\n"
    "'hutch exec' (see 'hutch exec --help').\n";

static volatile sig_atomic_t interrupts;

static void on_sigint(int sig)
{
    (void)sig;
    interrupts++;
}

enum stdin_mode { STDIN_AUTO, STDIN_ALWAYS, STDIN_NEVER };

struct exec_opts {
    const char *cwd;
    bool sudo;
    enum stdin_mode stdin_mode;
    json_t *env;
    bool stats;
};

static int signal_number(const char *name)
{
    if (strncmp(name, "SIG", 3) == 0)
        name += 3;
    for (int i = 1; i < NSIG; i++) {
        const char *abbrev = sigabbrev_np(i);
        if (abbrev && strcmp(abbrev, name) == 0)
            return i;
    }
    return 0;
}

static int exit_code_of(const struct hutch_status *st)
{
    if (st->oom)
        cli_error("the process ran out of memory");
    if (st->signal[0]) {
        int n = signal_number(st->signal);
        if (n > 0)
            return 128 + n;
    }
    if (st->code < 0 || st->code > 255)
        return 255;
    return st->code;
}

/* --stats: the process's usage as hutchd recorded it when hutch-init reaped it. */
static void print_stats(const struct hutch_target *t, const char *id, int64_t pid)
{
    char path[160];
    snprintf(path, sizeof path, "/api/v2/sandboxes/%s/processes?pid=%lld", id, (long long)pid);
    json_t *out = NULL;
    struct hx_err e = { 0 };
    if (hutch_rest(t, "GET", path, NULL, &out, &e) < 0) {
        cli_error("--stats: %s", e.msg);
        return;
    }
    json_t *procs = json_object_get(out, "processes");
    json_t *p = json_array_get(procs, json_array_size(procs) - 1);
    if (!p) {
        cli_error("--stats: hutchd has no usage for pid %lld", (long long)pid);
    } else {
#define F(k) ((long long)json_integer_value(json_object_get(p, k)))
        fprintf(stderr,
                "hutch: pid %lld: cpu %.3f s (user %.3f s, system %.3f s), peak rss %lld KiB, "
                "block read %lld B, block write %lld B, wall %.3f s\n",
                (long long)pid, (double)F("cpuUs") / 1e6, (double)F("cpuUserUs") / 1e6,
                (double)F("cpuSystemUs") / 1e6, F("maxRssKib"), F("blockReadBytes"), F("blockWriteBytes"),
                (double)F("wallUs") / 1e6);
#undef F
    }
    json_decref(out);
}

static int run_in(struct cli *cli, const char *verb, const char *id, const char *command, const char *const *args,
                  size_t nargs, const struct exec_opts *o)
{
    struct hx_err e = { 0 };
    struct hutch_target t = { 0 };
    struct hutch_conn *c = NULL;
    char *code = NULL;
    int ret = EXIT_HUTCH_FAILED;

    /* --sudo: command "sudo", args [CMD, ARGS...] */
    const char **argv2 = calloc(nargs + 1, sizeof(*argv2));
    if (!argv2) {
        cli_error("%s: out of memory", verb);
        return EXIT_HUTCH_FAILED;
    }
    size_t n2 = 0;
    if (o->sudo)
        argv2[n2++] = command;
    for (size_t i = 0; i < nargs; i++)
        argv2[n2++] = args[i];

    bool fwd = o->stdin_mode == STDIN_ALWAYS || (o->stdin_mode == STDIN_AUTO && !isatty(STDIN_FILENO));
    struct hutch_spawn sp = {
        .command = o->sudo ? "sudo" : command,
        .args = argv2,
        .nargs = n2,
        .env = o->env,
        .cwd = o->cwd,
        .stdin_fd = fwd ? STDIN_FILENO : -1,
        .stdout_fd = STDOUT_FILENO,
        .stderr_fd = STDERR_FILENO,
        .interrupts = &interrupts,
    };
    /* No SA_RESTART: a Ctrl-C must wake the poll so it becomes a processKill at once. */
    struct sigaction sa = { .sa_handler = on_sigint };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    /* A closed stdout shows up as EPIPE and is forwarded as SIGPIPE to the process. */
    signal(SIGPIPE, SIG_IGN);

    struct hutch_status st;
    if (cli_target(cli, &t, &e) < 0) {
        cli_error("%s: %s", verb, e.msg);
        goto out;
    }
    /* hutch's raw exec channel first; the JSON-RPC way against an older hutchd
     * (or with HUTCH_EXEC_RAW=0, e.g. to compare them) */
    const char *raw = getenv("HUTCH_EXEC_RAW");
    int rc = -ENOSYS;
    if (!raw || strcmp(raw, "0") != 0)
        rc = hutch_run_raw(&t, id, &sp, &st, &code, &e);
    if (rc == -ENOSYS) {
        if (hutch_connect(&t, id, &c, &e) < 0) {
            cli_error("%s: %s", verb, e.msg);
            goto out;
        }
        rc = hutch_run(c, &sp, &st, &code, &e);
    }
    if (rc == -EREMOTEIO) {
        cli_error("%s: %s", verb, e.msg);
        ret = code && strcmp(code, "ENOENT") == 0 ? EXIT_NOT_FOUND : EXIT_NOT_RUNNABLE;
        goto out;
    }
    if (rc < 0) {
        cli_error("%s: %s", verb, e.msg);
        goto out;
    }
    ret = exit_code_of(&st);
    if (o->stats)
        print_stats(&t, id, st.pid);
out:
    free(code);
    free(argv2);
    hutch_conn_close(c);
    hutch_target_free(&t);
    return ret;
}

/* Parses [OPTIONS] ID [OPTIONS] [--] REST...: options may come before or after
 * the id; the first word after the id that is not an option starts REST. */
static int parse_exec_args(struct cli *cli, const char *verb, const char *help, int argc, char **argv,
                           struct exec_opts *o, const char **id, int *rest)
{
    static const struct option opts[] = {
        { "cwd", required_argument, NULL, 'w' }, { "env", required_argument, NULL, 'e' },
        { "sudo", no_argument, NULL, 'S' },      { "stdin", no_argument, NULL, 'i' },
        { "no-stdin", no_argument, NULL, 'n' },  { "stats", no_argument, NULL, 's' }, CLI_COMMON_OPTS, { 0 },
    };
    struct hx_err e;
    int base = 0; /* index in the original argv of the current argv[0] */
    *id = NULL;
    for (int pass = 0; pass < 2; pass++) {
        int ch;
        cli_getopt_reset();
        while ((ch = getopt_long(argc - base, argv + base, "+:hw:e:in", opts, NULL)) != -1) {
            switch (ch) {
            case 'h':
                fputs(help, stdout);
                return 0;
            case 'w':
                o->cwd = optarg;
                break;
            case 'e':
                if (cli_parse_kv(optarg, o->env, "env", &e) < 0)
                    return cli_usage(verb, "%s", e.msg);
                break;
            case 'S':
                o->sudo = true;
                break;
            case 'i':
                o->stdin_mode = STDIN_ALWAYS;
                break;
            case 'n':
                o->stdin_mode = STDIN_NEVER;
                break;
            case 's':
                o->stats = true;
                break;
            default: {
                int r = cli_common_opt(cli, verb, ch, argv + base);
                if (r >= 0)
                    return r;
            }
            }
        }
        int next = base + optind;
        if (pass == 0) {
            if (next >= argc)
                return cli_usage(verb, "missing sandbox ID");
            if (strcmp(argv[next - 1], "--") == 0 && next - 1 > base)
                return cli_usage(verb, "the sandbox ID comes before '--'");
            *id = argv[next];
            base = next; /* the id becomes argv[0] of the second pass */
        } else {
            *rest = next;
        }
    }
    return -1;
}

int cmd_exec(struct cli *cli, int argc, char **argv)
{
    struct exec_opts o = { .env = json_object() };
    const char *id;
    int rest = 0;
    int r = parse_exec_args(cli, "exec", exec_help, argc, argv, &o, &id, &rest);
    if (r < 0) {
        if (rest >= argc)
            r = cli_usage("exec", "missing command (hutch exec ID -- CMD ARGS...)");
        else
            r = run_in(cli, "exec", id, argv[rest], (const char *const *)argv + rest + 1, (size_t)(argc - rest - 1),
                       &o);
    }
    json_decref(o.env);
    return r;
}

int cmd_sh(struct cli *cli, int argc, char **argv)
{
    struct exec_opts o = { .env = json_object() };
    const char *id;
    int rest = 0;
    int r = parse_exec_args(cli, "sh", sh_help, argc, argv, &o, &id, &rest);
    if (r < 0) {
        if (rest >= argc)
            r = cli_usage("sh", "missing script (hutch sh ID 'SCRIPT')");
        else if (argc - rest > 1)
            r = cli_usage("sh", "give the script as one argument (quote it)");
        else {
            const char *args[] = { "-c", argv[rest] };
            r = run_in(cli, "sh", id, "bash", args, 2, &o);
        }
    }
    json_decref(o.env);
    return r;
}
