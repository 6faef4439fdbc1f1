/* JSON-RPC 2.0 over a client's WebSocket, in the @deno/sandbox 0.13.2
 * shapes: process methods, env methods and $sandbox.stream.* in both
 * directions, with backpressure toward the agent and the client. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include "daemon/api/ws.h"
#include "daemon/core/rpc.h"
#include "daemon/core/deno.h"
#include "daemon/core/expose.h"
#include "daemon/core/sandbox.h"
#include "daemon/core/metrics.h"
#include "lib/b64.h"

#define INBOUND_HOLD_MAX (1u << 20)        /* stdin bytes held before their spawn, per session */
#define STDIN_INFLIGHT_MAX (4u << 20)      /* stdin bytes sent to the agent, per sandbox */
#define SESSION_CALLS_MAX 256               /* agent calls one client may have waiting; then it is not read */
#define MAX_INBOUND_STREAMS 256
#define MAX_LIVE_PROCS 2048
#define MAX_EXITED_KEPT 1024

struct held_chunk {
    struct held_chunk *next;
    size_t len;
    uint8_t data[];
};

/* ---- replies -------------------------------------------------------- */

void rpc_send_json(struct session *s, json_t *msg /* stolen */)
{
    if (s->sink) {
        if (msg)
            s->sink->message(s, msg);
        json_decref(msg);
        return;
    }
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (text && s->ws)
        ws_send_text(s->ws, text, strlen(text));
    free(text);
}

void rpc_reply_result(struct session *s, json_t *id, json_t *result /* stolen */)
{
    if (!s)
        return json_decref(result);
    rpc_send_json(s, json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result));
}

/* An application error inside a successful JSON-RPC response: the SDK's
 * resultSchema {error: {constructorName, message, code}}. */
json_t *rpc_app_error(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
json_t *rpc_app_error(const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return json_pack("{s:{s:s, s:s, s:s}}", "error", "constructorName", "Error", "message", msg, "code", code);
}

json_t *rpc_abort_error_object(void)
{
    return json_pack("{s:s, s:s, s:s}", "constructorName", "DOMException", "name", "AbortError", "message",
                     "The operation was aborted.");
}

json_t *rpc_abort_error(void)
{
    return json_pack("{s:o}", "error", rpc_abort_error_object());
}

int64_t rpc_abort_id(json_t *params)
{
    json_t *a = json_object_get(params, "abortId");
    return json_is_integer(a) && json_integer_value(a) >= 0 ? (int64_t)json_integer_value(a) : -1;
}

/* A JSON-RPC protocol error (bad request, unknown method, bad params). */
void rpc_reply_rpc_error(struct session *s, json_t *id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void rpc_reply_rpc_error(struct session *s, json_t *id, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rpc_send_json(s, json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error",
                           "code", code, "message", msg));
}

void rpc_notify(struct session *s, const char *method, json_t *params /* stolen */)
{
    rpc_send_json(s, json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", method, "params", params));
}

/* Agent error objects {"code":"ENOENT","message":...} → the SDK's error shape. */
json_t *rpc_translate_reply(json_t *reply)
{
    if (!reply)
        return rpc_app_error("EIO", "the sandbox stopped before answering");
    json_t *err = json_object_get(reply, "error");
    if (err) {
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        return rpc_app_error(code ? code : "EIO", "%s", msg ? msg : "error in the sandbox");
    }
    return json_pack("{s:O}", "ok", json_object_get(reply, "ok"));
}

/* ---- processes ------------------------------------------------------ */

static json_t *status_json(const struct proc *p)
{
    return json_pack("{s:{s:b, s:i, s:o, s:o}}", "ok", "success", p->code == 0 && !p->signal[0], "code", p->code,
                     "signal", p->signal[0] ? json_string(p->signal) : json_null(),
                     "oom", p->oom ? json_string("high-confidence") : json_null());
}

static void proc_remove(struct sandbox *sb, struct proc *p)
{
    for (struct proc **pp = &sb->procs; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    sb->n_procs--;
    while (p->waiters) {
        struct waiter *w = p->waiters;
        p->waiters = w->next;
        rpc_reply_result(w->s, w->rpc_id, rpc_app_error("ENOENT", "process %u is gone", p->pid));
        json_decref(w->rpc_id);
        free(w);
    }
    free(p);
}

/* A record goes once its status was handed out and its output ended. */
static void proc_maybe_remove(struct sandbox *sb, struct proc *p)
{
    if (p->exited && p->reported && !p->stream_open[0] && !p->stream_open[1] && !p->waiters)
        proc_remove(sb, p);
}

static void prune_exited(struct sandbox *sb)
{
    unsigned exited = 0;
    struct proc *oldest = NULL;
    for (struct proc *p = sb->procs; p; p = p->next) {
        if (p->exited && !p->waiters) {
            exited++;
            if (!oldest || p->exited_ms < oldest->exited_ms)
                oldest = p;
        }
    }
    if (exited > MAX_EXITED_KEPT && oldest)
        proc_remove(sb, oldest);
}

void rpc_on_exit(struct sandbox *sb, struct proc *p)
{
    deno_on_exit(sb, p->pid); /* deno: its REPL channel and HTTP waits end */
    if (p->sink) { /* apps: hutchd's own process */
        const struct proc_sink *k = p->sink;
        p->reported = true;
        k->on_exit(p->sink_ud, p->code, p->signal, p->oom);
        return proc_maybe_remove(sb, p);
    }
    while (p->waiters) {
        struct waiter *w = p->waiters;
        p->waiters = w->next;
        rpc_reply_result(w->s, w->rpc_id, status_json(p));
        json_decref(w->rpc_id);
        free(w);
        p->reported = true;
    }
    if (p->reported)
        proc_maybe_remove(sb, p);
    else
        prune_exited(sb);
}

/* Output credit is returned to the agent once the bytes are handed to the
 * client's socket; while that socket is backed up, credit waits for drain,
 * and the process blocks on its pipe. */
struct deferred_credit {
    struct deferred_credit *next;
    uint32_t chan, bytes;
};

static void defer_credit(struct session *s, struct sandbox *sb, uint32_t chan, uint32_t len)
{
    struct deferred_credit *d = malloc(sizeof *d);
    if (!d) {
        agent_credit(sb, chan, len);
        return;
    }
    d->chan = chan;
    d->bytes = len;
    d->next = (struct deferred_credit *)s->deferred;
    s->deferred = d;
}

int rpc_send_stream_data(struct session *s, uint64_t stream_id, const uint8_t *data, size_t len)
{
    if (!s->ws && s->sink) { /* a session without a WebSocket gets the notification as JSON */
        char *enc = malloc(hx_b64_encoded_len(len) + 1);
        if (!enc)
            return -ENOMEM;
        hx_b64_encode(data, len, enc);
        rpc_notify(s, "$sandbox.stream.enqueue", json_pack("{s:I, s:s}", "streamId", (json_int_t)stream_id, "data", enc));
        free(enc);
        return 0;
    }
    if (!s->ws)
        return -EPIPE;
    if (s->binary) {
        uint8_t head[RPC_BIN_HEAD];
        for (unsigned i = 0; i < RPC_BIN_HEAD; i++)
            head[i] = (uint8_t)(stream_id >> (56 - 8 * i));
        return ws_send_binary(s->ws, head, sizeof head, data, len);
    }
    /* Built by hand: jansson would copy the (large) base64 string twice. */
    char head[112];
    int hl = snprintf(head, sizeof head,
                      "{\"jsonrpc\":\"2.0\",\"method\":\"$sandbox.stream.enqueue\",\"params\":{\"streamId\":%llu,\"data\":\"",
                      (unsigned long long)stream_id);
    size_t elen = hx_b64_encoded_len(len);
    size_t total = (size_t)hl + elen + 3;
    char *msg = malloc(total + 1);
    if (!msg)
        return -ENOMEM;
    memcpy(msg, head, (size_t)hl);
    hx_b64_encode(data, len, msg + hl);
    memcpy(msg + hl + elen, "\"}}", 4);
    int r = ws_send_text(s->ws, msg, total);
    free(msg);
    return r;
}

void rpc_on_output(struct sandbox *sb, struct proc *p, unsigned fd, const uint8_t *data, size_t len)
{
    struct session *s = p->owner;
    if (fd == 1 && len)
        vscode_on_stderr(sb, p->pid, data, len); /* a starting VS Code's last words (vscode.c) */
    uint32_t chan = HX_STREAM_CHAN(p->pid, fd);
    if (p->deno_watch && fd == 1)
        deno_on_stderr(sb, p, data, len); /* deno --watch: its restart lines (rpc_deno.c) */
    if (p->sink) { /* apps: hutchd's own process: the sink keeps what it wants, bounded */
        if (len)
            agent_credit(sb, chan, (uint32_t)len);
        p->sink->on_output(p->sink_ud, fd, data, len);
        if (len == 0)
            proc_maybe_remove(sb, p);
        return;
    }
    if (s && s->sink) { /* SSH (expose_ssh.c): raw bytes; it credits them itself once handed on */
        if (!p->stream_id[fd]) {
            if (len)
                agent_credit(sb, chan, (uint32_t)len);
        } else {
            s->sink->output(s, p->pid, fd, data, len);
        }
        if (len == 0)
            proc_maybe_remove(sb, p);
        else if (p->stream_id[fd] && s->sink->queued(s) < WS_HIGH_WATER)
            agent_credit(sb, chan, (uint32_t)len);
        else if (p->stream_id[fd])
            defer_credit(s, sb, chan, (uint32_t)len);
        return;
    }
    if (len == 0) {
        if (s && s->ws && p->stream_id[fd])
            rpc_notify(s, "$sandbox.stream.end", json_pack("{s:I}", "streamId", (json_int_t)p->stream_id[fd]));
        proc_maybe_remove(sb, p);
        return;
    }
    if (!s || !s->ws || !p->stream_id[fd]) {
        agent_credit(sb, chan, (uint32_t)len);
        return;
    }
    rpc_send_stream_data(s, p->stream_id[fd], data, len);
    if (ws_queued_bytes(s->ws) < WS_HIGH_WATER)
        agent_credit(sb, chan, (uint32_t)len);
    else
        defer_credit(s, sb, chan, (uint32_t)len);
}

static void flush_deferred(struct session *s, bool send)
{
    struct deferred_credit *d = s->deferred;
    s->deferred = NULL;
    while (d) {
        struct deferred_credit *n = d->next;
        if (send && s->sb)
            agent_credit(s->sb, d->chan, d->bytes);
        free(d);
        d = n;
    }
}

/* ---- stdin streams -------------------------------------------------- */

static struct inbound *inbound_get(struct session *s, int64_t id, bool create)
{
    for (struct inbound *in = s->inbound; in; in = in->next)
        if (in->client_id == id)
            return in;
    if (!create)
        return NULL;
    unsigned n = 0;
    for (struct inbound *in = s->inbound; in; in = in->next)
        n++;
    if (n >= MAX_INBOUND_STREAMS)
        return NULL;
    struct inbound *in = calloc(1, sizeof *in);
    if (!in)
        return NULL;
    in->client_id = id;
    in->held_tail = &in->held;
    in->next = s->inbound;
    s->inbound = in;
    return in;
}

static void inbound_free(struct session *s, struct inbound *target)
{
    for (struct inbound **pp = &s->inbound; *pp; pp = &(*pp)->next) {
        if (*pp == target) {
            *pp = target->next;
            break;
        }
    }
    while (target->held) {
        struct held_chunk *c = target->held;
        target->held = c->next;
        free(c);
    }
    free(target);
}

static size_t session_held(struct session *s)
{
    size_t n = 0;
    for (struct inbound *in = s->inbound; in; in = in->next)
        n += in->held_len;
    return n;
}

static void update_reading(struct session *s)
{
    if ((!s->ws && !s->sink) || !s->sb)
        return;
    /* Calls in flight count too: replies come later, so the output queue
     * alone let a client that never reads queue 1,024 large replies. */
    bool over = s->sb->stdin_inflight > STDIN_INFLIGHT_MAX || session_held(s) > INBOUND_HOLD_MAX ||
                s->calls >= SESSION_CALLS_MAX;
    if (over != s->paused) {
        s->paused = over;
        if (s->sink)
            s->sink->set_reading(s, !over);
        else
            ws_set_reading(s->ws, !over);
    }
}

void rpc_session_calls_changed(struct session *s)
{
    update_reading(s);
}

void rpc_on_stdin_ack(struct sandbox *sb)
{
    for (struct session *s = sb->sessions; s; s = s->next)
        update_reading(s);
}

static void stdin_send(struct session *s, struct inbound *in, const uint8_t *data, size_t len)
{
    struct sandbox *sb = s->sb;
    if (in->pid >= RPC_NET_CHAN_BASE) { /* a fetch's request body (rpc_net.c) */
        if (len)
            rpc_net_on_body(s, in->pid, data, len, 0);
        return;
    }
    while (len > 0) {
        size_t n = len > HX_FRAME_MAX ? HX_FRAME_MAX : len;
        if (agent_send(sb, HX_STDIN, in->pid, data, n) == 0)
            sb->stdin_inflight += n;
        data += n;
        len -= n;
    }
}

static void inbound_bind(struct session *s, struct inbound *in, uint32_t pid)
{
    in->pid = pid;
    while (in->held) {
        struct held_chunk *c = in->held;
        in->held = c->next;
        stdin_send(s, in, c->data, c->len);
        free(c);
    }
    in->held_tail = &in->held;
    in->held_len = 0;
    if (in->ended) {
        /* ended + bound_closed before a bind: the client's stream errored. An
         * upload must then fail; a process's stdin just closes. */
        if (pid >= RPC_NET_CHAN_BASE)
            rpc_net_on_body(s, pid, NULL, 0, in->bound_closed ? -1 : 1);
        else if (in->bound_closed && pid >= HX_FS_CHAN_BASE)
            rpc_fs_upload_failed(s->sb, pid, EPIPE);
        else
            agent_send(s->sb, HX_STDIN, pid, NULL, 0);
        inbound_free(s, in);
    }
}

/* Files: an upload (writeFile's contentStreamId) is an inbound stream bound
 * to an fs channel of the agent (>= HX_FS_CHAN_BASE) instead of a pid. */
bool rpc_inbound_bind_chan(struct session *s, int64_t client_id, uint32_t chan)
{
    struct inbound *in = inbound_get(s, client_id, true);
    if (!in || in->pid)
        return false;
    inbound_bind(s, in, chan);
    update_reading(s);
    return true;
}

static void stream_input(struct session *s, struct inbound *in, const uint8_t *buf, size_t n);

/* $sandbox.stream.enqueue: data (base64, dl characters) for the client's stream id. False: not
 * base64 (dropped, as the SDK's own server would), nothing done. */
static bool stream_enqueue(struct session *s, int64_t id, const char *data, size_t dl)
{
    uint8_t *buf = malloc(hx_b64_decoded_max(dl) + 3);
    size_t n = 0;
    if (!buf || hx_b64_decode(data, dl, buf, &n) < 0) {
        free(buf);
        return !buf;
    }
    struct inbound *in = inbound_get(s, id, true);
    if (in && !in->ended)
        stream_input(s, in, buf, n);
    free(buf);
    return true;
}

void rpc_on_binary(struct session *s, const uint8_t *data, size_t len)
{
    if (!s->ws)
        return;
    if (s->sb)
        s->sb->io_epoch++;
    if (!s->binary)
        return ws_close(s->ws, 1003, "binary messages need x-hutch-streams: binary at the upgrade");
    if (len < RPC_BIN_HEAD)
        return ws_close(s->ws, 1002, "a binary message starts with an 8-byte stream id");
    uint64_t id = 0;
    for (unsigned i = 0; i < RPC_BIN_HEAD; i++)
        id = id << 8 | data[i];
    if (id >= (1ull << 53)) /* stream ids are JSON numbers elsewhere: the same range */
        return ws_close(s->ws, 1002, "a binary message's stream id is 2^53 or more");
    rpc_session_input(s, (int64_t)id, data + RPC_BIN_HEAD, len - RPC_BIN_HEAD);
}

void rpc_session_call(struct session *s, int64_t id, const char *method, json_t *params)
{
    json_t *m = id ? json_pack("{s:s, s:I, s:s, s:o}", "jsonrpc", "2.0", "id", (json_int_t)id, "method", method,
                               "params", params)
                   : json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", method, "params", params);
    char *t = m ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    if (t && s->sb)
        rpc_on_text(s, t, strlen(t));
    free(t);
}

void rpc_session_input(struct session *s, int64_t id, const uint8_t *data, size_t n)
{
    struct inbound *in = s->sb ? inbound_get(s, id, true) : NULL;
    if (in && !in->ended)
        stream_input(s, in, data, n);
}

static void stream_input(struct session *s, struct inbound *in, const uint8_t *buf, size_t n)
{
    if (in->pid) {
        if (!in->bound_closed)
            stdin_send(s, in, buf, n);
    } else if (n) {
        struct held_chunk *c = malloc(sizeof *c + n);
        if (c) {
            c->next = NULL;
            c->len = n;
            memcpy(c->data, buf, n);
            *in->held_tail = c;
            in->held_tail = &c->next;
            in->held_len += n;
        }
    }
    update_reading(s);
}

/* The bulk of an upload is enqueue notifications of up to ~1 MiB of base64
 * in the exact shape the SDK (and libhutch) write:
 *   {"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":N,"data":"B64"}}
 * Parsing that by hand skips jansson's copy and unescape of the base64 (a
 * third of hutchd's CPU on uploads). Anything else, including any escape or
 * whitespace, returns false and goes the general way. */
static bool fast_enqueue(struct session *s, const char *p, size_t len)
{
    static const char head[] = "{\"jsonrpc\":\"2.0\",\"method\":\"$sandbox.stream.enqueue\",\"params\":{\"streamId\":";
    static const char mid[] = ",\"data\":\"";
    size_t hl = sizeof head - 1, ml = sizeof mid - 1;
    if (len < hl + 1 + ml + 3 || memcmp(p, head, hl) != 0)
        return false;
    size_t i = hl;
    int64_t id = 0;
    size_t digits = 0;
    while (i < len && p[i] >= '0' && p[i] <= '9' && digits < 15) { /* ids below 2^53, as JSON numbers */
        id = id * 10 + (p[i++] - '0');
        digits++;
    }
    if (digits == 0 || (digits > 1 && p[hl] == '0') || len - i < ml + 3 || memcmp(p + i, mid, ml) != 0)
        return false;
    i += ml;
    if (len - i < 3 || memcmp(p + len - 3, "\"}}", 3) != 0)
        return false;
    /* The string runs to the '"' before "}}": no search for it or for a '\\'. Either one
     * inside is no base64 character, so the decoder refuses the string, and then the message
     * goes the general way (an escaped string, or a string that ends earlier). */
    return stream_enqueue(s, id, p + i, len - 3 - i);
}

static void handle_stream_notification(struct session *s, const char *method, json_t *params)
{
    json_t *jid = json_object_get(params, "streamId");
    if (!json_is_integer(jid))
        return;
    int64_t id = json_integer_value(jid);
    if (strcmp(method, "$sandbox.stream.start") == 0) {
        inbound_get(s, id, true);
        return;
    }
    if (strcmp(method, "$sandbox.stream.cancel") == 0) {
        rpc_fs_stream_cancel(s, id); /* walk/expandGlob listings (rpc_fs.c) */
        rpc_net_stream_cancel(s, id); /* fetch response bodies (rpc_net.c) */
        /* The client stopped reading one of our output streams: its bytes
         * are dropped (and credited, so the process never blocks on it). */
        for (struct proc *p = s->sb->procs; p; p = p->next)
            for (unsigned fd = 0; fd < 2; fd++)
                if (p->owner == s && p->stream_id[fd] == (uint64_t)id)
                    p->stream_id[fd] = 0;
        return;
    }
    if (strcmp(method, "$sandbox.stream.enqueue") == 0) {
        json_t *jd = json_object_get(params, "data");
        if (json_is_string(jd) && !stream_enqueue(s, id, json_string_value(jd), json_string_length(jd)))
            inbound_get(s, id, true); /* the stream is known from here on, its bad chunk dropped */
        return;
    }
    struct inbound *in = inbound_get(s, id, false);
    if (!in)
        return;
    bool is_end = strcmp(method, "$sandbox.stream.end") == 0;
    if (is_end || strcmp(method, "$sandbox.stream.error") == 0) {
        if (in->ended)
            return;
        in->ended = true;
        if (in->pid) {
            /* An upload whose stream errored must not be reported as written:
             * the end of stdin is the end of the file. */
            if (in->pid >= RPC_NET_CHAN_BASE)
                rpc_net_on_body(s, in->pid, NULL, 0, is_end ? 1 : -1);
            else if (!is_end && in->pid >= HX_FS_CHAN_BASE)
                rpc_fs_upload_failed(s->sb, in->pid, EPIPE);
            else
                agent_send(s->sb, HX_STDIN, in->pid, NULL, 0);
            inbound_free(s, in);
        } else if (!is_end) {
            in->bound_closed = true; /* remembered for the bind (see inbound_bind) */
            while (in->held) {
                struct held_chunk *c = in->held;
                in->held = c->next;
                free(c);
            }
            in->held_tail = &in->held;
            in->held_len = 0;
            update_reading(s);
        }
    }
}

/* ---- processes hutchd runs itself (apps) ----------------------------- */

struct internal_spawn {
    const struct proc_sink *sink;
    void *ud;
};

static void on_internal_spawn_reply(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    (void)s;
    (void)rpc_id;
    struct internal_spawn is = *(struct internal_spawn *)ud;
    free(ud);
    json_t *jpid = json_object_get(reply ? json_object_get(reply, "ok") : NULL, "pid");
    struct hx_err e = {0};
    if (sb->state >= SB_STOPPING) { /* its owner stopped the sandbox meanwhile: nobody to hand it to */
        hx_fail(&e, ESRCH, "the sandbox is stopping");
        if (is.sink->on_spawned)
            is.sink->on_spawned(is.ud, 0, &e);
        return;
    }
    if (!json_is_integer(jpid) || json_integer_value(jpid) <= 0 || json_integer_value(jpid) > 0x7fffffff) {
        const char *msg = json_string_value(json_object_get(json_object_get(reply, "error"), "message"));
        hx_fail(&e, EIO, "spawn failed: %s", msg ? msg : reply ? "bad answer from the agent" : "the sandbox stopped");
        if (is.sink->on_spawned)
            is.sink->on_spawned(is.ud, 0, &e);
        return;
    }
    uint32_t pid = (uint32_t)json_integer_value(jpid);
    struct proc *p = sandbox_proc(sb, pid);
    if (p)
        proc_remove(sb, p);
    p = calloc(1, sizeof *p);
    if (!p) {
        hx_fail(&e, ENOMEM, "out of memory");
        if (is.sink->on_spawned)
            is.sink->on_spawned(is.ud, 0, &e);
        return;
    }
    p->pid = pid;
    p->stream_open[0] = p->stream_open[1] = true;
    p->reported = true;
    p->next = sb->procs;
    sb->procs = p;
    sb->n_procs++;
    if (!is.sink->on_spawned || is.sink->on_spawned(is.ud, pid, NULL)) {
        p->sink = is.sink;
        p->sink_ud = is.ud;
        p->reported = false;
    }
}

int sandbox_spawn_internal(struct sandbox *sb, const char *command, json_t *args, json_t *env, const char *cwd,
                           const struct proc_sink *sink, void *ud, struct hx_err *e)
{
    struct internal_spawn *is = malloc(sizeof *is);
    if (!is)
        return hx_fail(e, ENOMEM, "out of memory");
    is->sink = sink;
    is->ud = ud;
    json_t *ap = json_pack("{s:s, s:o, s:o, s:b, s:o, s:b, s:b, s:b, s:i}", "command", command, "args",
                           args ? json_incref(args) : json_array(), "env", env ? json_incref(env) : json_object(),
                           "clearEnv", 0, "cwd", cwd ? json_string(cwd) : json_null(), "stdin", 0, "stdout", 1,
                           "stderr", 1, "uid", 1000);
    int r = ap ? agent_call(sb, "spawn", ap, on_internal_spawn_reply, NULL, NULL, is) : -ENOMEM;
    if (r < 0) {
        free(is);
        return hx_fail(e, -r, "cannot reach the sandbox's agent: %s", strerror(-r));
    }
    return 0;
}

void sandbox_proc_unsink(struct sandbox *sb, void *ud)
{
    for (struct proc *p = sb->procs; p; p = p->next)
        if (p->sink && p->sink_ud == ud)
            p->sink = NULL, p->sink_ud = NULL, p->reported = true;
}

/* ---- methods -------------------------------------------------------- */

struct spawn_ctx {
    int64_t stdin_stream;   /* -1 = none */
    bool out[2];            /* a stream to the client */
    bool pipe[2];           /* piped at the agent (to the client, or read by hutchd itself) */
    struct rpc_spawn_hooks hooks;
};

/* A spawn that did not start: its answer r (taken) goes to the answer hook,
 * else to the client after the failed hook; the context goes. */
static void spawn_failed(struct spawn_ctx *ctx, struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *r)
{
    json_decref(ctx->hooks.extra);
    if (ctx->hooks.answer) {
        ctx->hooks.answer(sb, s, rpc_id, r, 0, ctx->hooks.ud);
    } else {
        if (ctx->hooks.failed)
            ctx->hooks.failed(ctx->hooks.ud);
        if (s)
            rpc_reply_result(s, rpc_id, r);
        else
            json_decref(r);
    }
    free(ctx);
}

static void on_spawn_reply(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    struct spawn_ctx *ctx = ud;
    json_t *ok = reply ? json_object_get(reply, "ok") : NULL;
    json_t *jpid = json_object_get(ok, "pid");
    if (!reply || !json_is_integer(jpid) || json_integer_value(jpid) <= 0 ||
        json_integer_value(jpid) > 0x7fffffff) {
        return spawn_failed(ctx, sb, s, rpc_id,
                            rpc_translate_reply(reply && json_object_get(reply, "error") ? reply : NULL));
    }
    uint32_t pid = (uint32_t)json_integer_value(jpid);
    struct proc *p = sandbox_proc(sb, pid);
    if (p) /* pid reused after an unwaited exit: the old record goes */
        proc_remove(sb, p);
    p = calloc(1, sizeof *p);
    if (!p) {
        return spawn_failed(ctx, sb, s, rpc_id, rpc_app_error("ENOMEM", "out of memory"));
    }
    p->pid = pid;
    p->owner = s;
    p->next = sb->procs;
    sb->procs = p;
    sb->n_procs++;
    json_t *ids[2];
    for (unsigned fd = 0; fd < 2; fd++) {
        if (ctx->out[fd] && s) {
            p->stream_id[fd] = ++g_daemon.next_stream_id;
            p->stream_open[fd] = true;
            rpc_notify(s, "$sandbox.stream.start", json_pack("{s:I}", "streamId", (json_int_t)p->stream_id[fd]));
            ids[fd] = json_integer((json_int_t)p->stream_id[fd]);
        } else {
            p->stream_open[fd] = ctx->pipe[fd]; /* output still flows (and is credited) if the client left */
            ids[fd] = json_null();
        }
    }
    /* before the reply: a hook may watch the output that follows it */
    if (ctx->hooks.started)
        ctx->hooks.started(sb, p, ctx->hooks.ud);
    if (s || ctx->hooks.answer) {
        json_t *res = json_pack("{s:I, s:o, s:o}", "pid", (json_int_t)pid, "stdoutStreamId", ids[0], "stderrStreamId", ids[1]);
        if (ctx->hooks.extra)
            json_object_update(res, ctx->hooks.extra);
        if (ctx->hooks.answer)
            ctx->hooks.answer(sb, s, rpc_id, json_pack("{s:o}", "ok", res), pid, ctx->hooks.ud);
        else
            rpc_reply_result(s, rpc_id, json_pack("{s:o}", "ok", res));
        if (s && ctx->stdin_stream >= 0) {
            struct inbound *in = inbound_get(s, ctx->stdin_stream, true);
            if (in)
                inbound_bind(s, in, pid);
        }
    } else {
        json_decref(ids[0]);
        json_decref(ids[1]);
    }
    json_decref(ctx->hooks.extra);
    free(ctx);
}

static void on_plain_reply(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    (void)sb;
    intptr_t kind = (intptr_t)ud;
    if (!s)
        return;
    json_t *r = rpc_translate_reply(reply);
    /* The SDK ignores ENOENT from processKill (the process is already gone). */
    if (kind == 1) {
        json_t *err = json_object_get(r, "error");
        const char *code = json_string_value(json_object_get(err, "code"));
        if (code && strcmp(code, "ESRCH") == 0)
            json_object_set_new(err, "code", json_string("ENOENT"));
    }
    rpc_reply_result(s, rpc_id, r);
}

static const struct { const char *name; int num; } signals[] = {
    {"SIGHUP", SIGHUP}, {"SIGINT", SIGINT}, {"SIGQUIT", SIGQUIT}, {"SIGILL", SIGILL}, {"SIGTRAP", SIGTRAP},
    {"SIGABRT", SIGABRT}, {"SIGBUS", SIGBUS}, {"SIGFPE", SIGFPE}, {"SIGKILL", SIGKILL}, {"SIGUSR1", SIGUSR1},
    {"SIGSEGV", SIGSEGV}, {"SIGUSR2", SIGUSR2}, {"SIGPIPE", SIGPIPE}, {"SIGALRM", SIGALRM}, {"SIGTERM", SIGTERM},
    {"SIGCHLD", SIGCHLD}, {"SIGCONT", SIGCONT}, {"SIGSTOP", SIGSTOP}, {"SIGTSTP", SIGTSTP}, {"SIGTTIN", SIGTTIN},
    {"SIGTTOU", SIGTTOU}, {"SIGURG", SIGURG}, {"SIGXCPU", SIGXCPU}, {"SIGXFSZ", SIGXFSZ}, {"SIGVTALRM", SIGVTALRM},
    {"SIGPROF", SIGPROF}, {"SIGWINCH", SIGWINCH}, {"SIGIO", SIGIO}, {"SIGPWR", SIGPWR}, {"SIGSYS", SIGSYS},
};

int rpc_signal_number(const char *name)
{
    for (size_t i = 0; i < HX_ARRAY_LEN(signals); i++)
        if (strcmp(signals[i].name, name) == 0)
            return signals[i].num;
    return -1;
}

static bool opt_bool(json_t *params, const char *key, bool def, bool *ok)
{
    json_t *v = json_object_get(params, key);
    if (!v || json_is_null(v))
        return def;
    if (!json_is_boolean(v))
        *ok = false;
    return json_is_true(v);
}

#define MAX_ARGS 4096
#define MAX_ENV 4096

bool rpc_spawn_parse(struct session *s, json_t *id, json_t *params, const char *what, struct rpc_spawn_req *r)
{
    json_t *env = json_object_get(params, "env");
    json_t *cwd = json_object_get(params, "cwd");
    json_t *jstdin = json_object_get(params, "stdinStreamId");
    bool ok = true;
    memset(r, 0, sizeof *r);
    r->clear_env = opt_bool(params, "clearEnv", false, &ok);
    if (!ok) {
        rpc_reply_rpc_error(s, id, -32602, "%s: \"clearEnv\" must be a boolean", what);
        return false;
    }
    if (env && !json_is_null(env) && (!json_is_object(env) || json_object_size(env) > MAX_ENV)) {
        rpc_reply_rpc_error(s, id, -32602, "%s: \"env\" must be an object of strings", what);
        return false;
    }
    const char *k;
    json_t *v;
    json_object_foreach(env, k, v) if (!json_is_string(v) || !*k || strchr(k, '=') ||
                                       memchr(json_string_value(v), 0, json_string_length(v))) {
        rpc_reply_rpc_error(s, id, -32602, "%s: env \"%.64s\" must be a string (names without '=')", what, k);
        return false;
    }
    if (cwd && !json_is_null(cwd) && (!json_is_string(cwd) || json_string_length(cwd) > 4096)) {
        rpc_reply_rpc_error(s, id, -32602, "%s: \"cwd\" must be a string", what);
        return false;
    }
    if (jstdin && !json_is_null(jstdin) && (!json_is_integer(jstdin) || json_integer_value(jstdin) < 0)) {
        rpc_reply_rpc_error(s, id, -32602, "%s: \"stdinStreamId\" must be a stream id", what);
        return false;
    }
    r->env = json_is_object(env) ? env : NULL;
    r->cwd = json_is_string(cwd) ? cwd : NULL;
    r->stdin_stream = json_is_integer(jstdin) ? json_integer_value(jstdin) : -1;
    const char *names[2] = {"stdout", "stderr"};
    for (unsigned fd = 0; fd < 2; fd++) {
        const char *mode = json_string_value(json_object_get(params, names[fd]));
        if (!mode || (strcmp(mode, "piped") && strcmp(mode, "null"))) {
            rpc_reply_rpc_error(s, id, -32602, "%s: \"%s\" must be \"piped\" or \"null\"", what, names[fd]);
            return false;
        }
        r->out[fd] = r->pipe[fd] = strcmp(mode, "piped") == 0;
    }
    return true;
}

void rpc_spawn_start(struct session *s, json_t *id, json_t *ap, const struct rpc_spawn_req *r,
                     const struct rpc_spawn_hooks *hooks)
{
    struct sandbox *sb = s->sb;
    struct spawn_ctx *ctx = calloc(1, sizeof *ctx);
    unsigned live = 0;
    for (struct proc *p = sb->procs; p; p = p->next)
        live += !p->exited;
    const char *err = !ctx || !ap ? "out of memory" : live >= MAX_LIVE_PROCS ? "too many processes" : NULL;
    if (err) {
        free(ctx);
        json_decref(ap);
        if (hooks && hooks->failed)
            hooks->failed(hooks->ud);
        if (hooks)
            json_decref(hooks->extra);
        if (live >= MAX_LIVE_PROCS)
            return rpc_reply_result(s, id, rpc_app_error("EAGAIN", "too many processes running in this sandbox (%u)", live));
        return rpc_reply_rpc_error(s, id, -32603, "out of memory");
    }
    ctx->stdin_stream = r->stdin_stream;
    memcpy(ctx->out, r->out, sizeof ctx->out);
    memcpy(ctx->pipe, r->pipe, sizeof ctx->pipe);
    if (hooks)
        ctx->hooks = *hooks;
    int rc = agent_call(sb, "spawn", ap, on_spawn_reply, s, id, ctx);
    if (rc < 0) {
        if (ctx->hooks.failed)
            ctx->hooks.failed(ctx->hooks.ud);
        json_decref(ctx->hooks.extra);
        free(ctx);
        rpc_reply_result(s, id, rpc_app_error("EAGAIN", "cannot reach the sandbox's agent: %s", strerror(-rc)));
    }
}

static void m_spawn(struct session *s, json_t *id, json_t *params)
{
    json_t *cmd = json_object_get(params, "command");
    json_t *args = json_object_get(params, "args");
    if (!json_is_string(cmd) || json_string_length(cmd) == 0 || json_string_length(cmd) > 4096 ||
        memchr(json_string_value(cmd), 0, json_string_length(cmd)))
        return rpc_reply_rpc_error(s, id, -32602, "spawn: \"command\" must be a non-empty string without NUL bytes");
    if (args && !json_is_null(args) && (!json_is_array(args) || json_array_size(args) > MAX_ARGS))
        return rpc_reply_rpc_error(s, id, -32602, "spawn: \"args\" must be an array of at most %d strings", MAX_ARGS);
    size_t i;
    json_t *v;
    json_array_foreach(args, i, v) if (!json_is_string(v) || memchr(json_string_value(v), 0, json_string_length(v)))
        return rpc_reply_rpc_error(s, id, -32602, "spawn: args[%zu] must be a string without NUL bytes", i);
    struct rpc_spawn_req r;
    if (!rpc_spawn_parse(s, id, params, "spawn", &r))
        return;
    /* hutch's own: "pty": {rows, cols} runs it on a pseudo-terminal (docs/protocol.md) */
    json_t *pty = json_object_get(params, "pty");
    if (pty && !json_is_null(pty)) {
        json_int_t pr = json_integer_value(json_object_get(pty, "rows")), pc = json_integer_value(json_object_get(pty, "cols"));
        if (!json_is_object(pty) || pr < 1 || pr > 1000 || pc < 1 || pc > 1000)
            return rpc_reply_rpc_error(s, id, -32602, "spawn: \"pty\" must be {\"rows\", \"cols\"}, each 1..1000");
    } else {
        pty = NULL;
    }
    if (pty)
        r.out[1] = r.pipe[1] = false; /* a terminal has one output: stdout carries both */
    json_t *ap = json_pack("{s:O, s:o, s:o, s:b, s:o, s:b, s:b, s:b, s:i}", "command", cmd, "args",
                           json_is_array(args) ? json_incref(args) : json_array(), "env",
                           r.env ? json_incref(r.env) : json_object(), "clearEnv", r.clear_env, "cwd",
                           r.cwd ? json_incref(r.cwd) : json_null(), "stdin", r.stdin_stream >= 0,
                           "stdout", r.pipe[0], "stderr", r.pipe[1], "uid", 1000);
    if (pty && ap)
        json_object_set_new(ap, "pty", json_pack("{s:I, s:I}", "rows", json_integer_value(json_object_get(pty, "rows")),
                                                 "cols", json_integer_value(json_object_get(pty, "cols"))));
    rpc_spawn_start(s, id, ap, &r, NULL);
}

static bool get_pid(struct session *s, json_t *id, json_t *params, uint32_t *pid)
{
    json_t *v = json_object_get(params, "pid");
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 0x7fffffff) {
        rpc_reply_rpc_error(s, id, -32602, "\"pid\" must be a positive integer");
        return false;
    }
    *pid = (uint32_t)json_integer_value(v);
    return true;
}

static void m_process_wait(struct session *s, json_t *id, json_t *params)
{
    uint32_t pid;
    if (!get_pid(s, id, params, &pid))
        return;
    struct proc *p = sandbox_proc(s->sb, pid);
    if (!p)
        return rpc_reply_result(s, id, rpc_app_error("ENOENT", "no process with pid %u in this sandbox", pid));
    if (p->exited) {
        rpc_reply_result(s, id, status_json(p));
        p->reported = true;
        proc_maybe_remove(s->sb, p);
        return;
    }
    unsigned n = 0;
    for (struct waiter *x = p->waiters; x; x = x->next)
        n++;
    if (n >= 64)
        return rpc_reply_result(s, id, rpc_app_error("EAGAIN", "too many processWait calls pending for pid %u", pid));
    struct waiter *w = calloc(1, sizeof *w);
    if (!w)
        return rpc_reply_rpc_error(s, id, -32603, "out of memory");
    w->s = s;
    w->rpc_id = json_incref(id);
    w->next = p->waiters;
    p->waiters = w;
}

static void m_process_kill(struct session *s, json_t *id, json_t *params)
{
    uint32_t pid;
    if (!get_pid(s, id, params, &pid))
        return;
    json_t *jsig = json_object_get(params, "signal");
    int sig = SIGTERM;
    if (jsig && !json_is_null(jsig)) {
        if (!json_is_string(jsig) || (sig = rpc_signal_number(json_string_value(jsig))) < 0)
            return rpc_reply_rpc_error(s, id, -32602, "unknown signal %s", json_is_string(jsig) ? json_string_value(jsig) : "(not a string)");
    }
    struct proc *p = sandbox_proc(s->sb, pid);
    if (!p || p->exited)
        return rpc_reply_result(s, id, rpc_app_error("ENOENT", "no running process with pid %u", pid));
    int r = agent_call(s->sb, "kill", json_pack("{s:I, s:i}", "pid", (json_int_t)pid, "signal", sig), on_plain_reply,
                       s, id, (void *)(intptr_t)1);
    if (r < 0)
        rpc_reply_result(s, id, rpc_app_error("EIO", "cannot reach the sandbox's agent"));
}

/* hutch's own: ptyResize {pid, rows, cols} for a process spawned with "pty" */
static void m_pty_resize(struct session *s, json_t *id, json_t *params)
{
    uint32_t pid;
    if (!get_pid(s, id, params, &pid))
        return;
    json_int_t rows = json_integer_value(json_object_get(params, "rows"));
    json_int_t cols = json_integer_value(json_object_get(params, "cols"));
    if (rows < 1 || rows > 1000 || cols < 1 || cols > 1000)
        return rpc_reply_rpc_error(s, id, -32602, "ptyResize: \"rows\" and \"cols\" must be 1..1000");
    struct proc *p = sandbox_proc(s->sb, pid);
    if (!p || p->exited)
        return rpc_reply_result(s, id, rpc_app_error("ENOENT", "no running process with pid %u", pid));
    int r = agent_call(s->sb, "ptyResize", json_pack("{s:I, s:I, s:I}", "pid", (json_int_t)pid, "rows", rows, "cols", cols),
                       on_plain_reply, s, id, (void *)(intptr_t)1);
    if (r < 0)
        rpc_reply_result(s, id, rpc_app_error("EIO", "cannot reach the sandbox's agent"));
}

static void m_env(struct session *s, json_t *id, const char *method, json_t *params)
{
    json_t *key = json_object_get(params, "key");
    json_t *val = json_object_get(params, "value");
    json_t *ap;
    if (strcmp(method, "envToObject") == 0) {
        ap = json_object();
    } else {
        if (!json_is_string(key) || json_string_length(key) == 0 || json_string_length(key) > 4096 ||
            strchr(json_string_value(key), '=') || memchr(json_string_value(key), 0, json_string_length(key)))
            return rpc_reply_result(s, id, rpc_app_error("EINVAL", "environment variable names must be non-empty, without '=' or NUL"));
        if (strcmp(method, "envSet") == 0 &&
            (!json_is_string(val) || json_string_length(val) > (1u << 17) ||
             memchr(json_string_value(val), 0, json_string_length(val))))
            return rpc_reply_result(s, id, rpc_app_error("EINVAL", "environment values must be strings without NUL, at most 128 KiB"));
        ap = strcmp(method, "envSet") == 0 ? json_pack("{s:O, s:O}", "key", key, "value", val)
                                           : json_pack("{s:O}", "key", key);
    }
    if (agent_call(s->sb, method, ap, on_plain_reply, s, id, (void *)(intptr_t)0) < 0)
        rpc_reply_result(s, id, rpc_app_error("EIO", "cannot reach the sandbox's agent"));
}

static void m_env_get(struct session *s, json_t *id, json_t *params) { m_env(s, id, "envGet", params); }
static void m_env_set(struct session *s, json_t *id, json_t *params) { m_env(s, id, "envSet", params); }
static void m_env_delete(struct session *s, json_t *id, json_t *params) { m_env(s, id, "envDelete", params); }
static void m_env_to_object(struct session *s, json_t *id, json_t *params) { m_env(s, id, "envToObject", params); }

/* `abort {abortId}`: the SDK's AbortSignal fired. The request that carried
 * that id is answered at once with an AbortError and its work stops (the fs
 * worker's transfer, the fetch's connection). An id that names nothing (the
 * request already finished) is no error: the signal may fire at any time. */
static void m_abort(struct session *s, json_t *id, json_t *params)
{
    json_t *a = json_object_get(params, "abortId");
    if (!json_is_integer(a))
        return rpc_reply_rpc_error(s, id, -32602, "Invalid params: \"abortId\" must be an integer");
    int64_t aid = json_integer_value(a);
    if (aid >= 0 && !rpc_fs_abort(s, aid))
        rpc_net_abort(s, aid);
    rpc_reply_result(s, id, json_pack("{s:n}", "ok"));
}

static const struct rpc_method core_methods[] = {
    {"abort", m_abort},
    {"spawn", m_spawn},
    {"processWait", m_process_wait},
    {"processKill", m_process_kill},
    {"ptyResize", m_pty_resize},
    {"envGet", m_env_get},
    {"envSet", m_env_set},
    {"envDelete", m_env_delete},
    {"envToObject", m_env_to_object},
    {NULL, NULL},
};

/* Each concern registers its methods in its own table (rpc_fs.c, ...). */
static const struct rpc_method *const method_tables[] = {core_methods, rpc_fs_methods, rpc_net_methods, expose_rpc_methods,
                                                         deno_rpc_methods, vscode_rpc_methods};

const struct rpc_method *rpc_lookup(const char *name)
{
    for (size_t t = 0; t < HX_ARRAY_LEN(method_tables); t++)
        for (const struct rpc_method *m = method_tables[t]; m->name; m++)
            if (strcmp(m->name, name) == 0)
                return m;
    return NULL;
}

/* Methods the SDK knows that belong to later issues. */
static const char *const later_methods[] = {
    "readFile", "readTextFile", "writeFile", "writeTextFile", "readDir", "remove", "mkdir", "rename", "stat",
    "lstat", "chmod", "chown", "copyFile", "link", "symlink", "readLink", "realPath", "truncate", "umask", "utime",
    "makeTempDir", "makeTempFile", "open", "create", "fileClose", "fileLock", "fileRead", "fileSeek", "fileStat",
    "fileSync", "fileSyncData", "fileTruncate", "fileUnlock", "fileUtime", "fileWrite", "walk", "expandGlob",
};

void rpc_on_text(struct session *s, const char *data, size_t len)
{
    if (!s->sb)
        return;
    s->sb->io_epoch++; /* fileRead's read-ahead holds only while nothing else happens (rpc_fs.c) */
    if (fast_enqueue(s, data, len))
        return;
    json_error_t jerr;
    /* JSON_ALLOW_NUL (files): a \u0000 inside a string, a path say, gets that
     * method's own clear error (handlers check with memchr) instead of a parse
     * error with a null id, on which the SDK drops the whole connection. */
    json_t *msg = json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!msg)
        return rpc_reply_rpc_error(s, NULL, -32700, "Parse error: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
    json_t *id = json_object_get(msg, "id");
    json_t *method = json_object_get(msg, "method");
    json_t *params = json_object_get(msg, "params");
    if (!json_is_object(msg) || !json_is_string(json_object_get(msg, "jsonrpc")) ||
        strcmp(json_string_value(json_object_get(msg, "jsonrpc")), "2.0") != 0) {
        rpc_reply_rpc_error(s, json_is_integer(id) || json_is_string(id) ? id : NULL, -32600,
                        "Invalid Request: expected a JSON-RPC 2.0 object");
        json_decref(msg);
        return;
    }
    if (!json_is_string(method)) {
        /* A response from the client (we send no requests) or garbage. */
        if (!json_object_get(msg, "result") && !json_object_get(msg, "error"))
            rpc_reply_rpc_error(s, json_is_integer(id) || json_is_string(id) ? id : NULL, -32600,
                            "Invalid Request: \"method\" must be a string");
        json_decref(msg);
        return;
    }
    const char *m = json_string_value(method);
    if (!id || json_is_null(id)) {
        if (strncmp(m, "$sandbox.stream.", 16) == 0 && json_is_object(params))
            handle_stream_notification(s, m, params);
        json_decref(msg);
        return;
    }
    if (!json_is_integer(id) && !json_is_string(id)) {
        rpc_reply_rpc_error(s, NULL, -32600, "Invalid Request: \"id\" must be a number or a string");
        json_decref(msg);
        return;
    }
    if (params && !json_is_object(params) && !json_is_null(params)) {
        rpc_reply_rpc_error(s, id, -32602, "Invalid params: \"params\" must be an object");
        json_decref(msg);
        return;
    }
    if (!params || json_is_null(params))
        params = NULL;
    json_t *empty = json_object();
    if (!params)
        params = empty;
    const struct rpc_method *fn = rpc_lookup(m);
    metrics_rpc(fn ? fn->name : NULL, s->sb->state != SB_RUNNING ? RPC_SANDBOX_STOPPING : fn ? RPC_DISPATCHED : RPC_UNKNOWN_METHOD);
    if (s->sb->state != SB_RUNNING)
        rpc_reply_result(s, id, rpc_app_error("EIO", "the sandbox is stopping"));
    else if (fn)
        fn->handler(s, id, params);
    else {
        bool later = false;
        for (size_t i = 0; i < HX_ARRAY_LEN(later_methods); i++)
            later |= strcmp(later_methods[i], m) == 0;
        if (later)
            rpc_reply_rpc_error(s, id, -32601, "Method not found: %s is not implemented by this hutch version yet", m);
        else
            rpc_reply_rpc_error(s, id, -32601, "Method not found: %.100s", m);
    }
    json_decref(empty);
    json_decref(msg);
}

void rpc_on_drain(struct session *s)
{
    flush_deferred(s, true);
    rpc_fs_on_drain(s); /* listing credit held back (rpc_fs.c) */
    rpc_net_on_drain(s);
}

void rpc_session_free(struct session *s)
{
    /* Credit what this client will never read, close the stdin it fed:
     * its processes keep running without blocking on it. */
    flush_deferred(s, true);
    rpc_fs_session_closed(s); /* file handles and transfers of this session (rpc_fs.c) */
    rpc_net_session_closed(s); /* fetches of this session (rpc_net.c) */
    deno_session_closed(s); /* its HTTP waits and REPL calls (rpc_deno.c) */
    vscode_session_closed(s); /* VS Code starts it was waiting for (vscode.c) */
    while (s->inbound) {
        struct inbound *in = s->inbound;
        if (s->sb && in->pid && !in->ended) {
            /* A client gone mid-upload: the file is incomplete, so the write fails. */
            if (in->pid >= RPC_NET_CHAN_BASE)
                ; /* its fetch went with rpc_net_session_closed */
            else if (in->pid >= HX_FS_CHAN_BASE)
                rpc_fs_upload_failed(s->sb, in->pid, ECONNRESET);
            else
                agent_send(s->sb, HX_STDIN, in->pid, NULL, 0);
        }
        inbound_free(s, in);
    }
    sandbox_session_detach(s);
    free(s);
}
