/* hutch CLI: what the verbs share (global flags, target resolution, parsers, errors). */
#pragma once
#include <getopt.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdint.h>

#include "cli/libhutch/client.h"

#define DEFAULT_ENDPOINT "http://127.0.0.1:7070"
#define DEFAULT_SOCKET   "/run/hutch/hutchd.sock"
#define EXIT_USAGE 2

struct cli {
    const char *endpoint_flag; /* --endpoint */
    const char *token_flag;    /* --token */
};

/* Long options every verb accepts (values 'E', 'T', 'h'). */
#define CLI_COMMON_OPTS \
    { "endpoint", required_argument, NULL, 'E' }, { "token", required_argument, NULL, 'T' }, \
    { "help", no_argument, NULL, 'h' }

/* "hutch: <msg>" on stderr; returns 1. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "hutch <verb>: <msg> (see 'hutch <verb> --help')" on stderr; returns EXIT_USAGE. */
int cli_usage(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Handles getopt's '?' / ':' and the common options. Returns -1 when the
 * option was consumed, else the exit code to return. */
int cli_common_opt(struct cli *cli, const char *verb, int ch, char **argv);
/* Option parsing for a verb that takes only the common options and --help:
 * returns -1 with optind at the first operand, else the exit code. */
int cli_common_only(struct cli *cli, const char *verb, const char *help, int argc, char **argv);
/* Resets getopt for a new argv (argv[0] is the verb). */
void cli_getopt_reset(void);

const char *cli_endpoint(const struct cli *cli);
const char *cli_token(const struct cli *cli);
/* Target for sandbox verbs: endpoint + token (required). */
int cli_target(const struct cli *cli, struct hutch_target *t, struct hx_err *e);

/* "30m", "600s", "2h", "1h30m" → milliseconds (> 0). */
int cli_parse_duration(const char *s, int64_t *ms, struct hx_err *e);
/* "2GiB", "1280MiB", "1.5GB" → MiB. */
int cli_parse_memory(const char *s, int64_t *mib, struct hx_err *e);
/* "K=V" → sets key/value in obj (a json object). */
int cli_parse_kv(const char *s, json_t *obj, const char *what, struct hx_err *e);
int64_t cli_now_ms(void);                 /* wall clock, ms since the epoch */
void cli_iso8601(int64_t ms, char *buf, size_t n);
/* application/x-www-form-urlencoded, as URLSearchParams writes it. */
void cli_urlencode(FILE *f, const char *s);

int cmd_create(struct cli *cli, int argc, char **argv);
int cmd_ls(struct cli *cli, int argc, char **argv);
int cmd_exec(struct cli *cli, int argc, char **argv);
int cmd_sh(struct cli *cli, int argc, char **argv);
int cmd_kill(struct cli *cli, int argc, char **argv);
int cmd_usage(struct cli *cli, int argc, char **argv);
int cmd_audit(struct cli *cli, int argc, char **argv);
int cmd_extend(struct cli *cli, int argc, char **argv);
int cmd_expose(struct cli *cli, int argc, char **argv);
int cmd_vscode(struct cli *cli, int argc, char **argv);
int cmd_shell(struct cli *cli, int argc, char **argv);
int cmd_ssh(struct cli *cli, int argc, char **argv);
int cmd_token(struct cli *cli, int argc, char **argv);
int cmd_net(struct cli *cli, int argc, char **argv);
int cmd_cp(struct cli *cli, int argc, char **argv);
int cmd_volume(struct cli *cli, int argc, char **argv);
int cmd_snapshot(struct cli *cli, int argc, char **argv);
int cmd_app(struct cli *cli, int argc, char **argv);
int cmd_deploy(struct cli *cli, int argc, char **argv);

/* storage.c: what 'volume' and 'snapshot' share. kind is "volume" or "snapshot". */
bool cli_storage_name_ok(const char *s); /* an id or slug that may go into a URL path */
void cli_size_text(json_t *bytes, char *out, size_t cap);
int cli_storage_ls(struct cli *cli, const char *verb, const char *kind, const char *help, int argc, char **argv);
int cli_storage_rm(struct cli *cli, const char *verb, const char *kind, const char *help, int argc, char **argv);
