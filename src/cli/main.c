/* hutch: command-line client for hutchd (the self-hosted Deno Sandbox service).
 * Parses the global flags and dispatches to one function per verb. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const char usage[] =
    "usage: hutch [--endpoint URL] [--token TOKEN] VERB [ARGS...]\n"
    "\n"
    "Verbs:\n"
    "  create [--memory SIZE] [--timeout DUR] [--label K=V]... [--env K=V]...\n"
    "         [--volume SLUG:/PATH]... [--root SLUG] [--json]\n"
    "                               create a sandbox, print its id\n"
    "  ls [--json] [--label K=V]... list sandboxes\n"
    "  exec ID [OPTIONS] -- CMD [ARGS...]\n"
    "                               run a command in a sandbox, exit with its status\n"
    "  sh ID 'SCRIPT'               run a bash script in a sandbox\n"
    "  kill ID...                   stop and delete sandboxes\n"
    "  extend ID DUR                move a sandbox's stop time to now + DUR\n"
    "  expose ID PORT               publish PORT inside the sandbox at an https URL (prints it)\n"
    "  vscode ID [PATH]             start VS Code in the sandbox on PATH; prints its https URL\n"
    "  shell ID [-- CMD...]         an interactive shell in a sandbox on a pseudo-terminal\n"
    "  ssh ID [-- CMD...]           the system ssh into a sandbox (exposes it over SSH)\n"
    "  net ID                       a sandbox's network: addresses, bytes per destination, audit log\n"
    "  cp SRC DST                   copy files and trees: LOCAL, ID:PATH or - (tar) on each side\n"
    "  volume create|ls|rm|snapshot volumes: file systems that outlive sandboxes\n"
    "  snapshot ls|rm               snapshots of volumes (read-only roots)\n"
    "  deploy ID APP [--prod]       deploy a sandbox's directory as a revision of APP (follows the build)\n"
    "  app ls|logs|rm               apps: their URLs, runtime logs, deletion\n"
    "  usage [--since 1h] [--by day|sandbox|label=KEY]\n"
    "                               what the organization used and what it costs (metering)\n"
    "  audit [--since 1h]           who created, killed, extended what and when\n"
    "  token create|list|revoke     manage API tokens (admin)\n"
    "\n"
    "Run 'hutch VERB --help' for a verb's options.\n"
    "\n"
    "Environment:\n"
    "  HUTCH_ENDPOINT   http://HOST:PORT of hutchd (default " DEFAULT_ENDPOINT "),\n"
    "                   else DENO_SANDBOX_ENDPOINT\n"
    "  HUTCH_TOKEN      API token, else DENO_DEPLOY_TOKEN\n"
    "  HUTCH_SOCKET     hutchd's admin unix socket for 'token' verbs without a token\n"
    "                   (default " DEFAULT_SOCKET ")\n";

static const struct {
    const char *name;
    int (*fn)(struct cli *, int, char **);
} verbs[] = {
    { "create", cmd_create }, { "ls", cmd_ls },         { "list", cmd_ls },     { "exec", cmd_exec },
    { "sh", cmd_sh },         { "kill", cmd_kill },     { "rm", cmd_kill },     { "extend", cmd_extend },
    { "expose", cmd_expose }, { "vscode", cmd_vscode }, { "shell", cmd_shell }, { "ssh", cmd_ssh },
    { "token", cmd_token },   { "net", cmd_net },
    { "cp", cmd_cp },         { "usage", cmd_usage },
    { "volume", cmd_volume }, { "snapshot", cmd_snapshot },
    { "audit", cmd_audit },
    { "app", cmd_app },       { "deploy", cmd_deploy },
};

int main(int argc, char **argv)
{
    struct cli cli = { 0 };
    static const struct option opts[] = {
        CLI_COMMON_OPTS,
        { "version", no_argument, NULL, 'V' },
        { 0 },
    };
    cli_getopt_reset();
    int ch;
    /* '+': stop at the verb; what follows belongs to it. */
    while ((ch = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'h':
            fputs(usage, stdout);
            return 0;
        case 'V':
            puts("hutch 0.1.0");
            return 0;
        case 'E':
            cli.endpoint_flag = optarg;
            break;
        case 'T':
            cli.token_flag = optarg;
            break;
        case ':':
            fprintf(stderr, "hutch: option '%s' needs a value (see 'hutch --help')\n", argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "hutch: unknown option '%s' (see 'hutch --help')\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    const char *verb = argv[optind];
    if (strcmp(verb, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    for (size_t i = 0; i < HX_ARRAY_LEN(verbs); i++) {
        if (strcmp(verbs[i].name, verb) == 0) {
            /* The verb sees argv[0] = its own name, like a program. */
            int vargc = argc - optind;
            char **vargv = argv + optind;
            cli_getopt_reset();
            return verbs[i].fn(&cli, vargc, vargv);
        }
    }
    fprintf(stderr, "hutch: unknown verb '%s' (see 'hutch --help')\n", verb);
    return EXIT_USAGE;
}
