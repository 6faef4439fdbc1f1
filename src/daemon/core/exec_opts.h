/* The raw exec channel's spawn options (docs/protocol.md "Raw exec channel"):
 * a request's query, hostile, into the JSON-RPC spawn's params. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define EXEC_OPTS_MAX_ARGS 4096
#define EXEC_OPTS_MAX_ENV 4096

/* q (qn bytes, not NUL-terminated) is form-encoded ('+' is a space): cmd
 * once, arg and env (NAME=VALUE) repeated in order, cwd once, clearEnv,
 * tty=ROWSxCOLS, stdin and stderr ("piped" or "null"). Sets "command",
 * "args", "env" and the others given in params (an object), *stdin_piped
 * (false for stdin=null) and *pty. False on the first bad option, with err
 * saying which; the RPC layer's spawn checks the rest (lengths, env names). */
bool exec_opts_parse(const char *q, size_t qn, json_t *params, bool *stdin_piped, bool *pty, char *err, size_t errn);
