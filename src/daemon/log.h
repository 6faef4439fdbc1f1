/* hutchd's log lines: as written (text, the default) or one JSON object per line (--log-format json):
 * {"time": "2026-12-07T12:50:47.123Z", "level": "info"|"warn", "msg": "...", "fields": {"component":
 * "hutchd", "sandbox": "sbx_..."}}. In JSON mode the stdio streams stdout and stderr are replaced by
 * streams that turn each line hutchd prints into one object, so no call site changes; the helpers'
 * (hutch-proxy, hutch-ingress, lxcfs) stdout and stderr go to a pipe the loop reads and logs the same way. */
#pragma once
#include <stddef.h>
#include <uv.h>
#include "lib/err.h"

enum log_format { LOG_TEXT, LOG_JSON };

#define LOG_LINE_MAX 8192   /* longer lines are cut, with "truncated": true */

/* Call first thing in main (JSON mode swaps stdout/stderr). */
int log_init(enum log_format f, struct hx_err *e);
/* JSON mode: starts reading the helpers' pipe on loop. */
void log_start(uv_loop_t *loop);
/* The fd a helper process should get as its stdout and stderr: fd itself in text mode, the pipe in
 * JSON mode. */
int log_child_fd(int fd);
/* One JSON log line for msg (n bytes, no newline) at level ("info", "warn"), into out (cap bytes,
 * newline included, NUL-terminated): the pure part, unit-testable. default_component is used when msg
 * has no "name: " prefix. Returns the length. */
size_t log_format_json(char *out, size_t cap, int64_t time_ms, const char *level, const char *default_component,
                       const char *msg, size_t n, int truncated);
