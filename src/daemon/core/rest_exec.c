/* hutch's raw exec channel (docs/protocol.md "Raw exec channel"): one process
 * whose stdin, stdout and stderr travel as raw bytes in binary WebSocket
 * messages of the subprotocol hutch-exec.v1, a 1-byte tag and the bytes; no
 * JSON, no base64.
 *
 * GET /hutch/v1/sandboxes/{id}/exec?cmd=C&arg=A&env=K=V&cwd=D&tty=RxC spawns
 * first and upgrades only then, so every refusal (bad options, command not
 * found, too many channels) is an ordinary HTTP error. The process runs
 * through the RPC layer on a session without a WebSocket of its own (a sink,
 * as SSH's channels are, expose_ssh.c): the same spawn, the same checks,
 * the same agent credit for output (credited once the bytes are queued on
 * this WebSocket below its high-water mark, held while above) and the same
 * stdin bound (4 MiB in flight per sandbox, then the client is not read). */
#include <stdio.h>
#include <string.h>
#include "daemon/api/http.h"
#include "daemon/api/ws.h"
#include "daemon/core/exec_opts.h"
#include "daemon/core/rest_exec.h"
#include "daemon/core/rpc.h"
#include "daemon/core/sandbox.h"

#define EXEC_PER_SANDBOX 64          /* channels at once in one sandbox (429 beyond) */
#define EXEC_MESSAGE_MAX ((1u << 20) + 1) /* a client message: tag + 1 MiB (1009 beyond) */
#define EXEC_DRAIN_MS 5000           /* after the exit: how long output may still end (a background child
                                      * that inherited the pipes keeps them open) */
#define STDIN_ID 1                   /* the sink session's one inbound stream */
#define RPC_SPAWN 1                  /* ids of the calls made on the sink session */
#define RPC_WAIT 2
#define RPC_OTHER 3

/* Message tags: the first byte of every binary message. */
enum {
    TAG_STDIN = 0,        /* client: bytes for the process's stdin */
    TAG_STDOUT = 1,       /* server: bytes it wrote to stdout; empty: stdout ended */
    TAG_STDERR = 2,       /* server: the same for stderr */
    TAG_EXIT = 3,         /* server: {"code", "signal", "oom"}, the last message */
    TAG_SIGNAL = 4,       /* client: a signal name ("SIGINT" or "INT") for the process */
    TAG_RESIZE = 5,       /* client: rows, cols (u16 big-endian each) of its terminal */
    TAG_CLOSE_STDIN = 6,  /* client: end of stdin */
};

struct xexec {
    struct xexec *next;
    char sb_id[32];
    struct session *s;            /* the sink session: owned, freed once the timer closed */
    struct http_conn *c;          /* until the 101 (or the refusal) */
    struct ws_conn *ws;           /* after the 101, until its on_close */
    uv_timer_t timer;             /* the drain grace; closing it frees everything */
    bool spawned, exited, released, finished;
    bool stdin_piped, stdin_closed, pty;
    bool out_end[2];
    uint32_t pid;
    int code;
    char signal[16];
    bool oom;
};

static struct xexec *g_execs;

/* ---- calls on the sink session ----------------------------------------- */

static void kill_process(struct xexec *x, const char *sig)
{
    if (x->spawned && !x->exited && x->s->sb)
        rpc_session_call(x->s, RPC_OTHER, "processKill",
                         json_pack("{s:I, s:s}", "pid", (json_int_t)x->pid, "signal", sig));
}

static void on_group_killed(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
}

/* The client left before the exit: SIGKILL to the process's whole group (it
 * leads a session of its own), so that what it started goes with it too. An
 * older hutch-init ignores "group" and kills the process alone. */
static void kill_group(struct xexec *x)
{
    struct sandbox *sb = x->s->sb;
    if (!x->spawned || x->exited || !sb || sb->state != SB_RUNNING)
        return;
    json_t *p = json_pack("{s:I, s:i, s:b}", "pid", (json_int_t)x->pid, "signal", 9, "group", 1);
    if (p)
        (void)agent_call(sb, "kill", p, on_group_killed, NULL, NULL, NULL);
}

/* ---- the end ------------------------------------------------------------ */

static void on_timer_closed(uv_handle_t *h)
{
    struct xexec *x = h->data;
    rpc_session_free(x->s); /* detaches; a session sandbox with nothing else attached stops */
    free(x);
}

/* Nothing more goes to the client: the process is killed if it still runs
 * (a client that left does not leave it behind, nor blocked on a pipe nobody
 * reads), and everything is freed from the loop (this may run inside the
 * session's own reply). */
static void release(struct xexec *x)
{
    if (x->released)
        return;
    x->released = true;
    kill_group(x);
    for (struct xexec **pp = &g_execs; *pp; pp = &(*pp)->next)
        if (*pp == x) {
            *pp = x->next;
            break;
        }
    uv_close((uv_handle_t *)&x->timer, on_timer_closed);
}

/* The exit status, once the output ended (or the grace ran out): the last message. */
static void maybe_finish(struct xexec *x, bool grace_over)
{
    if (x->finished || !x->ws || !x->exited || (!grace_over && (!x->out_end[0] || !x->out_end[1])))
        return;
    x->finished = true;
    uv_timer_stop(&x->timer);
    json_t *o = json_pack("{s:i, s:o, s:b}", "code", x->code, "signal",
                          x->signal[0] ? json_string(x->signal) : json_null(), "oom", x->oom);
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    uint8_t tag = TAG_EXIT;
    if (t)
        ws_send_binary(x->ws, &tag, 1, (const uint8_t *)t, strlen(t));
    free(t);
    ws_close(x->ws, 1000, "exited");
}

static void on_drain_timeout(uv_timer_t *t)
{
    maybe_finish(t->data, true);
}

/* ---- the WebSocket ------------------------------------------------------- */

static void refuse(struct xexec *x, uint16_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refuse(struct xexec *x, uint16_t code, const char *fmt, ...)
{
    char reason[123];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    ws_close(x->ws, code, reason); /* on_close follows, and kills the process */
}

/* A signal name, with or without "SIG" ("SIGINT", "INT"), as processKill knows them: out gets "SIGINT". */
static bool signal_ok(const uint8_t *p, size_t n, char out[16])
{
    if (n == 0 || n > 12)
        return false;
    size_t off = n > 3 && memcmp(p, "SIG", 3) == 0 ? 3 : 0;
    for (size_t i = off; i < n; i++)
        if (!(p[i] >= 'A' && p[i] <= 'Z') && !(p[i] >= '0' && p[i] <= '9'))
            return false;
    snprintf(out, 16, "SIG%.*s", (int)(n - off), (const char *)p + off);
    return rpc_signal_number(out) > 0;
}

static void on_ws_binary(struct ws_conn *w, const uint8_t *data, size_t len, void *ud)
{
    struct xexec *x = ud;
    if (x->released || !x->s->sb)
        return;
    x->s->sb->io_epoch++;
    if (len == 0)
        return refuse(x, 1002, "a message starts with a 1-byte tag");
    const uint8_t *p = data + 1;
    size_t n = len - 1;
    char sig[16];
    switch (data[0]) {
    case TAG_STDIN:
        if (!x->stdin_piped)
            return refuse(x, 1002, "stdin: the process has no stdin (stdin=null)");
        if (x->stdin_closed)
            return refuse(x, 1002, "stdin after close-stdin");
        if (n && !x->exited) /* after the exit: dropped, the client may not know yet */
            rpc_session_input(x->s, STDIN_ID, p, n);
        return;
    case TAG_CLOSE_STDIN:
        if (n)
            return refuse(x, 1007, "close-stdin carries no bytes");
        if (!x->stdin_piped || x->stdin_closed)
            return refuse(x, 1002, "close-stdin: stdin is not open");
        x->stdin_closed = true;
        static const char end[] = "{\"jsonrpc\":\"2.0\",\"method\":\"$sandbox.stream.end\",\"params\":{\"streamId\":1}}";
        _Static_assert(STDIN_ID == 1, "the stream id in end[]");
        rpc_on_text(x->s, end, sizeof end - 1);
        return;
    case TAG_SIGNAL:
        if (!signal_ok(p, n, sig))
            return refuse(x, 1007, "signal: not a signal name (e.g. SIGINT)");
        return kill_process(x, sig);
    case TAG_RESIZE: {
        if (n != 4)
            return refuse(x, 1007, "resize carries rows and cols, 2 bytes each");
        unsigned rows = (unsigned)p[0] << 8 | p[1], cols = (unsigned)p[2] << 8 | p[3];
        if (rows < 1 || rows > 1000 || cols < 1 || cols > 1000)
            return refuse(x, 1007, "resize: rows and cols must be 1..1000");
        if (!x->pty)
            return refuse(x, 1002, "resize: the process has no terminal (tty=)");
        if (!x->exited)
            rpc_session_call(x->s, RPC_OTHER, "ptyResize",
                     json_pack("{s:I, s:i, s:i}", "pid", (json_int_t)x->pid, "rows", (int)rows, "cols", (int)cols));
        return;
    }
    case TAG_STDOUT:
    case TAG_STDERR:
    case TAG_EXIT:
        return refuse(x, 1002, "tag %u is sent by the server only", data[0]);
    default:
        return refuse(x, 1002, "unknown tag %u", data[0]);
    }
}

static void on_ws_text(struct ws_conn *w, const char *data, size_t len, void *ud)
{
    struct xexec *x = ud;
    if (!x->released)
        refuse(x, 1003, "%s carries binary messages only", REST_EXEC_SUBPROTOCOL);
}

static void on_ws_drain(struct ws_conn *w, void *ud)
{
    struct xexec *x = ud;
    if (!x->released && x->s->sb)
        rpc_on_drain(x->s); /* the output credit held while the socket was backed up */
}

static void on_ws_close(struct ws_conn *w, void *ud)
{
    struct xexec *x = ud;
    x->ws = NULL;
    release(x);
}

static const struct ws_handlers exec_handlers = {on_ws_text, on_ws_close, on_ws_drain, on_ws_binary};

/* ---- the sink: what the RPC layer hands the session ---------------------- */

static int errno_status(const char *code)
{
    static const struct { const char *code; int status; } map[] = {
        {"ENOENT", 404}, {"EACCES", 403}, {"EPERM", 403}, {"ENOTDIR", 400}, {"EINVAL", 400}, {"E2BIG", 400},
        {"ENAMETOOLONG", 400}, {"ENOEXEC", 400}, {"ELOOP", 400}, {"EAGAIN", 429}, {"ENOMEM", 503}, {"EMFILE", 503},
    };
    for (size_t i = 0; i < HX_ARRAY_LEN(map); i++)
        if (code && strcmp(map[i].code, code) == 0)
            return map[i].status;
    return 502;
}

static void on_spawned(struct xexec *x, json_t *msg)
{
    json_t *res = json_object_get(msg, "result");
    json_t *pid = json_object_get(json_object_get(res, "ok"), "pid");
    if (!json_is_integer(pid)) {
        json_t *rerr = json_object_get(msg, "error"); /* a JSON-RPC error: the options were invalid */
        json_t *err = rerr ? rerr : json_object_get(res, "error");
        const char *code = rerr ? "EINVAL" : json_string_value(json_object_get(err, "code"));
        const char *m = json_string_value(json_object_get(err, "message"));
        if (x->c)
            http_respond_error(x->c, rerr ? 400 : errno_status(code), code && strlen(code) < 32 ? code : "EIO", "%s",
                               m ? m : "the sandbox refused to start it");
        x->c = NULL;
        return release(x);
    }
    x->pid = (uint32_t)json_integer_value(pid);
    x->spawned = true;
    if (!x->c) /* the client left while the process started */
        return release(x);
    char hdr[128];
    snprintf(hdr, sizeof hdr, "Sec-WebSocket-Protocol: %s\r\nx-hutch-pid: %u\r\n", REST_EXEC_SUBPROTOCOL, x->pid);
    struct http_conn *c = x->c;
    x->c = NULL;
    x->ws = http_upgrade_websocket(c, hdr, &exec_handlers, x);
    if (!x->ws)
        return release(x);
    ws_set_max_message(x->ws, EXEC_MESSAGE_MAX);
    rpc_session_call(x->s, RPC_WAIT, "processWait", json_pack("{s:I}", "pid", (json_int_t)x->pid));
}

static void sink_message(struct session *s, json_t *msg)
{
    struct xexec *x = s->sink_ud;
    json_t *id = json_object_get(msg, "id");
    if (x->released || !json_is_integer(id))
        return; /* notifications: stream starts and ends come through sink_output */
    if (json_integer_value(id) == RPC_SPAWN)
        return on_spawned(x, msg);
    if (json_integer_value(id) != RPC_WAIT)
        return; /* kills and resizes of a process that may have gone meanwhile */
    json_t *ok = json_object_get(json_object_get(msg, "result"), "ok");
    json_t *code = json_object_get(ok, "code"), *sig = json_object_get(ok, "signal"), *oom = json_object_get(ok, "oom");
    x->exited = true;
    x->code = json_is_integer(code) ? (int)json_integer_value(code) : 255;
    if (json_is_string(sig))
        snprintf(x->signal, sizeof x->signal, "%s", json_string_value(sig));
    x->oom = oom && !json_is_null(oom) && !json_is_false(oom);
    if (!ok)
        x->out_end[0] = x->out_end[1] = true; /* no status (the record went): its output is over too */
    maybe_finish(x, false);
    if (!x->finished)
        uv_timer_start(&x->timer, on_drain_timeout, EXEC_DRAIN_MS, 0);
}

static void sink_output(struct session *s, uint32_t pid, unsigned fd, const uint8_t *data, size_t len)
{
    struct xexec *x = s->sink_ud;
    if (x->released || !x->ws || x->finished || pid != x->pid || fd > 1)
        return; /* the RPC layer credits what is not queued */
    uint8_t tag = (uint8_t)(TAG_STDOUT + fd);
    ws_send_binary(x->ws, &tag, 1, data, len); /* an agent frame is at most 256 KiB: one message each */
    if (len == 0) {
        x->out_end[fd] = true;
        maybe_finish(x, false);
    }
}

static size_t sink_queued(struct session *s)
{
    struct xexec *x = s->sink_ud;
    return x->ws && !x->released ? ws_queued_bytes(x->ws) : 0;
}

static void sink_set_reading(struct session *s, bool on)
{
    struct xexec *x = s->sink_ud;
    if (x->ws && !x->released)
        ws_set_reading(x->ws, on);
}

static void sink_closed_by_sandbox(struct session *s)
{
    struct xexec *x = s->sink_ud;
    struct sandbox *sb = sandbox_find(x->sb_id);
    const char *why = sb && sb->stop_reason[0] ? sb->stop_reason : "stopped";
    if (x->c) {
        http_respond_error(x->c, 503, "SANDBOX_STOPPED", "the sandbox stopped: %s", why);
        x->c = NULL;
    }
    if (x->ws && !x->finished)
        return refuse(x, 1001, "the sandbox stopped: %s", why); /* its on_close releases */
    if (!x->ws)
        release(x);
}

static const struct session_sink exec_sink = {sink_message, sink_output, sink_queued, sink_set_reading,
                                              sink_closed_by_sandbox};

static void on_conn_abort(struct http_conn *c, void *ud)
{
    struct xexec *x = ud;
    if (x->c == c) {
        x->c = NULL;
        http_respond_error(c, 503, "GONE", "the client left"); /* only releases the conn */
    }
}

/* ---- the request ----------------------------------------------------------- */

static bool offers_subprotocol(const struct http_request *req)
{
    const char *v = http_header_get(req, "sec-websocket-protocol");
    size_t want = strlen(REST_EXEC_SUBPROTOCOL);
    while (v && *v) {
        v += strspn(v, " \t,");
        size_t n = strcspn(v, " \t,");
        if (n == want && strncmp(v, REST_EXEC_SUBPROTOCOL, n) == 0)
            return true;
        v += n;
    }
    return false;
}

void rest_exec_handle(struct http_conn *c, const struct http_request *req, struct sandbox *sb, const char *token_id)
{
    if (!req->websocket)
        return http_respond_error(c, 400, "WEBSOCKET_REQUIRED",
                                  "this endpoint is a WebSocket with the subprotocol " REST_EXEC_SUBPROTOCOL);
    if (!offers_subprotocol(req))
        return http_respond_error(c, 400, "SUBPROTOCOL_REQUIRED",
                                  "offer Sec-WebSocket-Protocol: " REST_EXEC_SUBPROTOCOL);
    if (sb->state != SB_RUNNING || sb->pooled)
        return http_respond_error(c, 409, "SANDBOX_NOT_RUNNING", "the sandbox is not running");
    json_t *params = json_pack("{s:s, s:s}", "stdout", "piped", "stderr", "piped");
    bool stdin_piped = true, pty = false;
    char err[160];
    if (!params)
        return http_respond_error(c, 503, "OUT_OF_MEMORY", "out of memory");
    if (!exec_opts_parse(req->query, strlen(req->query), params, &stdin_piped, &pty, err, sizeof err)) {
        json_decref(params);
        return http_respond_error(c, 400, "EINVAL", "EINVAL: %s", err);
    }
    unsigned n = 0;
    for (struct xexec *o = g_execs; o; o = o->next)
        n += strcmp(o->sb_id, sb->id) == 0;
    if (n >= EXEC_PER_SANDBOX) {
        json_decref(params);
        return http_respond_error(c, 429, "EAGAIN", "EAGAIN: %u exec channels are open in this sandbox already", n);
    }
    struct xexec *x = calloc(1, sizeof *x);
    struct session *s = calloc(1, sizeof *s);
    if (!x || !s) {
        free(x);
        free(s);
        json_decref(params);
        return http_respond_error(c, 503, "OUT_OF_MEMORY", "out of memory");
    }
    if (stdin_piped)
        json_object_set_new(params, "stdinStreamId", json_integer(STDIN_ID));
    snprintf(x->sb_id, sizeof x->sb_id, "%s", sb->id);
    x->s = s;
    x->c = c;
    x->stdin_piped = stdin_piped;
    x->pty = pty;
    /* a terminal has one output (stdout carries stderr), and stderr=null has none */
    const char *se = json_string_value(json_object_get(params, "stderr"));
    x->out_end[1] = pty || strcmp(se, "null") == 0;
    uv_timer_init(g_daemon.loop, &x->timer);
    x->timer.data = x;
    s->sink = &exec_sink;
    s->sink_ud = x;
    snprintf(s->token_id, sizeof s->token_id, "%s", token_id);
    x->next = g_execs;
    g_execs = x;
    sandbox_session_attach(sb, s);
    http_conn_on_abort(c, on_conn_abort, x);
    rpc_session_call(x->s, RPC_SPAWN, "spawn", params); /* answered in sink_message */
}
