/* libhutch: a small blocking C client for hutchd, which speaks the wire protocol of
 * @deno/sandbox 0.13.2: HTTP/1.1 REST plus a WebSocket carrying JSON-RPC 2.0 and byte streams. */
#pragma once
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

/* Where to talk to: a TCP endpoint (http://HOST:PORT) or a unix socket. */
struct hutch_target {
    char *host;      /* NULL for a unix socket */
    char *port;
    char *unix_path; /* set for a unix socket */
    char *token;     /* NULL: send no Authorization header */
};

/* endpoint: "http://HOST[:PORT][/]" (HOST may be [v6]); token may be NULL. */
int hutch_target_init(struct hutch_target *t, const char *endpoint, const char *token, struct hx_err *e);
int hutch_target_init_unix(struct hutch_target *t, const char *path, const char *token, struct hx_err *e);
void hutch_target_free(struct hutch_target *t);

/* ---- REST ---- */

#define HUTCH_HTTP_BODY_MAX (16u << 20) /* bytes of a response body we accept */

struct hutch_http_resp {
    int status;
    char *body; /* NUL-terminated, owned */
    size_t len;
    char link_next[512]; /* Link: <URL>; rel="next" (RFC 8288), "" when none */
};

/* One request, one response (Connection: close). body may be NULL; it is sent
 * as application/json. Any status is returned; only transport errors fail. */
int hutch_http(const struct hutch_target *t, const char *method, const char *path, const char *body,
               struct hutch_http_resp *r, struct hx_err *e);
void hutch_http_resp_free(struct hutch_http_resp *r);
/* GET of a streamed body (server-sent events): a 2xx body goes to sink as it
 * arrives, until the server ends it or timeout_ms passes; a non-2xx status
 * fails with the server's message. */
int hutch_http_stream(const struct hutch_target *t, const char *path, void (*sink)(void *ud, const char *p, size_t n),
                      void *ud, int64_t timeout_ms, struct hx_err *e);

/* JSON REST call: fails with the server's {"code","message"} for a non-2xx
 * status. *out (may be NULL) receives the parsed body, or json null when the
 * body is empty. body is borrowed. */
int hutch_rest(const struct hutch_target *t, const char *method, const char *path, json_t *body,
               json_t **out, struct hx_err *e);

/* GET of a paged list (the SDK's volumes/snapshots lists): follows every
 * Link rel="next" page and appends the items to one array in *out. Only the
 * path and query of a next URL are used, always against t: a server cannot
 * send the client (and its token) elsewhere. A next link that repeats a page
 * already fetched, or more than 10000 pages, fails. */
int hutch_rest_list(const struct hutch_target *t, const char *path, json_t **out, struct hx_err *e);

/* ---- hutch's raw file channel (docs/protocol.md "Raw file transfers") ---- */

/* Downloads the regular file path of sandbox id into out (the bytes come by
 * splice where out allows it); *size receives its size. Uploads size bytes
 * of in (from offset 0, by sendfile) to path, which is replaced whole once
 * they are all in (mode: octal permission bits, or -1 to keep the target's;
 * a new file gets 0644). progress (may be NULL) hears of every chunk moved.
 * -ENOSYS: the server has no raw channel (an older hutchd); fall back. */
int hutch_file_get(const struct hutch_target *t, const char *id, const char *path, int out,
                   void (*progress)(void *ud, size_t n), void *ud, uint64_t *size, struct hx_err *e);
int hutch_file_put(const struct hutch_target *t, const char *id, const char *path, int in, uint64_t size, int mode,
                   void (*progress)(void *ud, size_t n), void *ud, struct hx_err *e);

/* ---- hutch's own WebSocket endpoints that are not JSON-RPC ---- */

/* The upgrade to path offering subprotocol (hutch-exec.v1: docs/protocol.md
 * "Raw exec channel"). On a 101 that names it: *fd (non-blocking, the caller
 * closes it), *extra (malloc'd, may be NULL) the bytes that followed the head,
 * *pid (may be NULL) its x-hutch-pid. Else -ENOSYS when the server has no such
 * route (404 NOT_FOUND or 405: an older hutchd; fall back), or the server's
 * message, with *code (may be NULL; caller frees) a copy of its "code". */
int hutch_ws_upgrade(const struct hutch_target *t, const char *path, const char *subprotocol, int *fd,
                     uint8_t **extra, size_t *extra_len, int64_t *pid, char **code, struct hx_err *e);
/* s percent-encoded for a URL's query value (unreserved characters and '/' kept); NULL: no memory. */
char *hutch_query_escape(const char *s);
/* A sandbox id that may go into a URL path as it is. */
bool hutch_id_safe(const char *id);
/* RFC 6455 masking of n bytes (out may be in), key4 starting at payload offset phase. */
void hutch_ws_mask(uint8_t *out, const uint8_t *in, size_t n, const uint8_t key4[4], size_t phase);
/* A client frame's head before its masking key (RFC 6455 5.2): FIN, opcode op, the mask bit and
 * plen; writes 2, 4 or 10 bytes into h and returns how many. */
size_t hutch_ws_client_head(uint8_t h[10], uint8_t op, uint64_t plen);

/* ---- WebSocket JSON-RPC ---- */

struct hutch_conn;

/* Opens /api/v3/sandboxes/create with config (borrowed, may be NULL; sent as
 * x-deno-sandbox-config: base64(JSON)). */
int hutch_create(const struct hutch_target *t, json_t *config, struct hutch_conn **out, struct hx_err *e);
/* Opens /api/v3/sandbox/ID/connect. */
int hutch_connect(const struct hutch_target *t, const char *id, struct hutch_conn **out, struct hx_err *e);
/* The id from the 101 response's x-deno-sandbox-id ("" if none). */
const char *hutch_conn_sandbox_id(const struct hutch_conn *c);
/* Sends a close frame, waits briefly for the server's, frees everything. NULL is fine. */
void hutch_conn_close(struct hutch_conn *c);

/* Calls method and waits for its result. params is stolen (NULL = {}).
 * {"ok": v}: *ok (may be NULL) gets a new reference to v, returns 0.
 * {"error": {...}}: returns -EREMOTEIO, e->msg is "<constructorName>: <message>",
 * and *rpc_code (may be NULL) receives a copy of the error's "code" (or NULL). */
int hutch_call(struct hutch_conn *c, const char *method, json_t *params, json_t **ok, char **rpc_code,
               struct hx_err *e);

/* Lower level: what hutch_run is built on. */
enum hutch_stream_event { HUTCH_STREAM_START, HUTCH_STREAM_DATA, HUTCH_STREAM_END, HUTCH_STREAM_ERROR,
                          HUTCH_STREAM_CANCEL };
/* Called for every $sandbox.stream.* notification and binary stream message; data for DATA,
 * and for ERROR the error's message (not NUL-terminated, may be empty). A
 * negative return aborts hutch_pump with that value (fill e first). */
typedef int (*hutch_stream_cb)(void *ud, enum hutch_stream_event ev, int64_t stream_id, const uint8_t *data,
                               size_t n, struct hx_err *e);
void hutch_conn_on_stream(struct hutch_conn *c, hutch_stream_cb cb, void *ud);

/* Queues a request; params stolen. *id receives its id. */
int hutch_send_request(struct hutch_conn *c, const char *method, json_t *params, int64_t *id, struct hx_err *e);
/* 0: no response for id yet; 1: it arrived and was consumed (*ok / error as in
 * hutch_call, error → negative return instead of 1). */
int hutch_take_response(struct hutch_conn *c, int64_t id, json_t **ok, char **rpc_code, struct hx_err *e);
/* Outbound byte stream (our stdin): ids come from the client's own counter. */
int64_t hutch_stream_new_id(struct hutch_conn *c);
int hutch_stream_start(struct hutch_conn *c, int64_t sid, struct hx_err *e);
int hutch_stream_write(struct hutch_conn *c, int64_t sid, const void *data, size_t n, struct hx_err *e);
int hutch_stream_end(struct hutch_conn *c, int64_t sid, struct hx_err *e);
/* Bytes queued for the socket but not yet sent: bound this before queuing more. */
size_t hutch_conn_queued(const struct hutch_conn *c);
/* Flushes, waits up to timeout_ms (-1: forever) for the socket or for one of
 * extra[] (their revents are filled), and dispatches every message received.
 * Returns 0, or -EINTR when a signal interrupted the wait. Sends "ping" every
 * 2 s so that idle-closing proxies and the server keep the connection. */
int hutch_pump(struct hutch_conn *c, struct pollfd *extra, nfds_t nextra, int timeout_ms, struct hx_err *e);

/* ---- running a process (spawn + streams + processWait) ---- */

struct hutch_spawn {
    const char *command;
    const char *const *args; /* nargs strings */
    size_t nargs;
    json_t *env;           /* object of strings, borrowed, NULL = none */
    const char *cwd;       /* NULL = the sandbox default */
    int stdin_fd;          /* -1: the process gets no stdin; else copied until EOF */
    int stdout_fd, stderr_fd;
    volatile sig_atomic_t *interrupts; /* bumped by the caller's SIGINT handler; NULL = none */
    /* hutch's own: on a pseudo-terminal of rows x cols (stdout carries stderr
     * too); when *winch changes (the caller's SIGWINCH handler bumps it), the
     * size of winch_fd (a terminal) is sent with ptyResize. */
    bool pty;
    unsigned rows, cols;
    volatile sig_atomic_t *winch;
    int winch_fd;
};

struct hutch_status {
    bool success;
    int code;
    char signal[32]; /* "" when not killed by a signal */
    bool oom;
    int64_t pid;     /* the process's pid in the sandbox (e.g. for its usage) */
};

/* Spawns, streams stdin/stdout/stderr, waits. The first interrupt sends SIGINT
 * to the process, later ones SIGKILL. Returns 0 when the process ran (its
 * status in *st). A spawn refused by the sandbox returns -EREMOTEIO and, in
 * *spawn_code (may be NULL), the error's code (e.g. "ENOENT"). */
int hutch_run(struct hutch_conn *c, const struct hutch_spawn *s, struct hutch_status *st, char **spawn_code,
              struct hx_err *e);
/* The same over hutch's raw exec channel (docs/protocol.md "Raw exec channel"):
 * its own connection to sandbox id, stdin and output as raw bytes. -ENOSYS:
 * the server has none (an older hutchd), or the spawn does not fit it (a
 * pseudo-terminal, options longer than a request head): use hutch_run. A
 * connection that ends without the exit status fails (the process was killed
 * with it). */
int hutch_run_raw(const struct hutch_target *t, const char *id, const struct hutch_spawn *s, struct hutch_status *st,
                  char **spawn_code, struct hx_err *e);

/* ---- helpers shared with the CLI ---- */

/* Standard base64 with padding (lib/b64.h) into a malloc'd string; NULL when out of memory. */
char *hutch_b64_encode(const void *data, size_t n);
