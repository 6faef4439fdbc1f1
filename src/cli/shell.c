/* hutch shell: an interactive shell in a sandbox on a pseudo-terminal, as
 * `docker exec -it` does: the local terminal in raw mode, its size sent at
 * start and on every SIGWINCH (ptyResize), the shell's exit status as ours.
 * hutch's own extension of the SDK protocol (docs/protocol.md). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "cli/cli.h"

static const char help[] =
    "usage: hutch shell ID [-- CMD [ARGS...]]\n"
    "\n"
    "Opens an interactive login shell (bash -l, as app) in the sandbox on a\n"
    "pseudo-terminal, or runs CMD on one. The terminal is put in raw mode, so\n"
    "Ctrl-C and Ctrl-D reach the shell; window-size changes follow. Exits with\n"
    "the shell's status (128+N for signal N).\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

static volatile sig_atomic_t winch;
static struct termios saved;
static bool raw;

static void on_winch(int sig)
{
    (void)sig;
    winch++;
}

static void restore_terminal(void)
{
    if (raw)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    raw = false;
}

static int exit_code(const struct hutch_status *st)
{
    if (st->signal[0]) {
        const char *n = strncmp(st->signal, "SIG", 3) == 0 ? st->signal + 3 : st->signal;
        for (int i = 1; i < NSIG; i++) {
            const char *ab = sigabbrev_np(i);
            if (ab && strcmp(ab, n) == 0)
                return 128 + i;
        }
    }
    return st->code < 0 || st->code > 255 ? 255 : st->code;
}

int cmd_shell(struct cli *cli, int argc, char **argv)
{
    int parsed = cli_common_only(cli, "shell", help, argc, argv);
    if (parsed >= 0)
        return parsed;
    if (argc - optind < 1)
        return cli_usage("shell", "expected ID");
    const char *id = argv[optind];
    if (!*id || strlen(id) > 100 ||
        strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != strlen(id))
        return cli_error("shell: invalid sandbox id '%.100s'", id);
    const char *command = "bash";
    static const char *const login[] = {"-l"};
    const char *const *args = login;
    size_t nargs = 1;
    if (argc - optind > 1) {
        int first = optind + 1;
        if (strcmp(argv[first], "--") == 0)
            first++;
        if (first >= argc)
            return cli_usage("shell", "expected a command after '--'");
        command = argv[first];
        args = (const char *const *)argv + first + 1;
        nargs = (size_t)(argc - first - 1);
    }
    struct winsize ws = {.ws_row = 24, .ws_col = 80};
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0 || ws.ws_row == 0 || ws.ws_col == 0) {
        ws.ws_row = 24;
        ws.ws_col = 80;
    }
    struct hx_err e = { 0 };
    struct hutch_target t;
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("shell: %s", e.msg);
    struct hutch_conn *c = NULL;
    if (hutch_connect(&t, id, &c, &e) < 0) {
        hutch_target_free(&t);
        return cli_error("shell %s: %s", id, e.msg);
    }
    const char *term = getenv("TERM");
    json_t *env = json_pack("{s:s}", "TERM", term && *term && strlen(term) < 64 ? term : "xterm-256color");
    struct sigaction sa = {.sa_handler = on_winch}; /* no SA_RESTART: the wait returns to send the size */
    sigaction(SIGWINCH, &sa, NULL);
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
        struct termios r = saved;
        cfmakeraw(&r);
        if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &r) == 0) {
            raw = true;
            atexit(restore_terminal);
        }
    }
    struct hutch_spawn sp = {.command = command, .args = args, .nargs = nargs, .env = env, .stdin_fd = STDIN_FILENO,
                             .stdout_fd = STDOUT_FILENO, .stderr_fd = STDERR_FILENO, .pty = true, .rows = ws.ws_row,
                             .cols = ws.ws_col, .winch = &winch, .winch_fd = STDIN_FILENO};
    struct hutch_status st;
    char *code = NULL;
    int rc = hutch_run(c, &sp, &st, &code, &e);
    restore_terminal();
    json_decref(env);
    free(code);
    hutch_conn_close(c);
    hutch_target_free(&t);
    if (rc < 0)
        return cli_error("shell %s: %s", id, e.msg);
    return exit_code(&st);
}
