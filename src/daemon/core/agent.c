/* The daemon's end of the agent socket: framing, calls and replies, output
 * and exit events. Everything hutch-init sends is hostile: sandbox root can
 * take the agent over, so every frame is checked against what we expect. */
#include <stdio.h>
#include <string.h>
#include "daemon/core/rpc.h"
#include "daemon/api/ws.h"
#include "daemon/core/sandbox.h"
#include "daemon/core/metering.h"
#include "daemon/core/metrics.h"
#include "lib/uvframe.h"
#include "lib/b64.h"
#include "daemon/sandbox/cgroup.h"
#include "daemon/core/restore.h"
#include <sys/socket.h>
#include <unistd.h>

#define AGENT_RBUF (HX_FRAME_HDR + HX_FRAME_MAX)
#define MAX_PENDING_CALLS 1024
/* Bytes queued toward an agent that does not read its socket: our own flow
 * control keeps honest traffic far below this (stdin 4 MiB in flight). */
#define AGENT_WRITE_QUEUE_MAX (16u << 20)
#define LOG_BURST 20           /* agent log lines, then LOG_PER_SEC a second */
#define LOG_PER_SEC 20
#define MAX_PROCS 4096

int agent_send(struct sandbox *sb, uint16_t type, uint32_t chan, const void *data, size_t len)
{
    if (!sb->agent_open)
        return -EPIPE;
    if (len > HX_FRAME_MAX)
        return -EMSGSIZE;
    if (sb->agent.write_queue_size > AGENT_WRITE_QUEUE_MAX) {
        sb->agent_overrun = true; /* stopped by the read loop, not from deep in a caller */
        return -ENOBUFS;
    }
    metrics_agent_bytes(false, HX_FRAME_HDR + len); /* metrics: */
    return hx_uv_send_frame((uv_stream_t *)&sb->agent, type, chan, data, len, false, NULL);
}

void agent_credit(struct sandbox *sb, uint32_t chan, uint32_t bytes)
{
    struct proc *p = sandbox_proc(sb, HX_STREAM_PID(chan));
    if (p) {
        uint32_t *in = &p->inflight[HX_STREAM_FD(chan)];
        *in = bytes > *in ? 0 : *in - bytes;
    }
    uint8_t v[4];
    hx_put_u32(v, bytes);
    agent_send(sb, HX_CREDIT, chan, v, 4);
}

/* fd >= 0 goes with the call (SCM_RIGHTS, hx_uv_send_frame_fd) and is
 * consumed, also on failure. */
static int agent_call_with(struct sandbox *sb, const char *method, json_t *params, int fd, agent_reply_cb cb,
                           struct session *s, json_t *rpc_id, void *ud)
{
    int n = 0;
    for (struct pending_call *c = sb->calls; c; c = c->next)
        n++;
    json_t *msg = n < MAX_PENDING_CALLS ? json_pack("{s:s, s:o}", "method", method, "params", params) : NULL;
    if (n >= MAX_PENDING_CALLS)
        json_decref(params);
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    size_t len = text ? strlen(text) : 0;
    struct pending_call *c = text && len <= HX_FRAME_MAX ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        free(text);
        if (fd >= 0)
            close(fd);
        return n >= MAX_PENDING_CALLS ? -EAGAIN : len > HX_FRAME_MAX ? -EMSGSIZE : -ENOMEM;
    }
    c->req = sb->next_req++;
    if (sb->next_req == 0)
        sb->next_req = 1;
    c->cb = cb;
    c->s = s;
    c->rpc_id = json_incref(rpc_id);
    c->ud = ud;
    int r;
    if (fd < 0) {
        r = agent_send(sb, HX_CALL, c->req, text, len);
    } else if (!sb->agent_open || sb->agent.write_queue_size > AGENT_WRITE_QUEUE_MAX) {
        close(fd);
        r = sb->agent_open ? -ENOBUFS : -EPIPE;
    } else {
        uv_pipe_t *fdh = hx_uv_fd_handle(g_daemon.loop, fd);
        metrics_agent_bytes(false, HX_FRAME_HDR + len); /* metrics: */
        r = fdh ? hx_uv_send_frame_fd((uv_stream_t *)&sb->agent, HX_CALL, c->req, text, len, false, fdh, NULL)
                : -ENOMEM;
    }
    free(text);
    if (r < 0) {
        json_decref(c->rpc_id);
        free(c);
        return r;
    }
    c->next = sb->calls;
    sb->calls = c;
    if (s) {
        s->calls++;
        rpc_session_calls_changed(s);
    }
    return 0;
}

int agent_call(struct sandbox *sb, const char *method, json_t *params, agent_reply_cb cb,
               struct session *s, json_t *rpc_id, void *ud)
{
    return agent_call_with(sb, method, params, -1, cb, s, rpc_id, ud);
}

int agent_call_fd(struct sandbox *sb, const char *method, json_t *params, int fd, agent_reply_cb cb, void *ud)
{
    return agent_call_with(sb, method, params, fd, cb, NULL, NULL, ud);
}

/* A call is answered: its session may read its client again (before the
 * callback, which may end the session). */
static void call_done(struct pending_call *c)
{
    if (c->s && c->s->calls) {
        c->s->calls--;
        rpc_session_calls_changed(c->s);
    }
}

struct proc *sandbox_proc(struct sandbox *sb, uint32_t pid)
{
    for (struct proc *p = sb->procs; p; p = p->next)
        if (p->pid == pid)
            return p;
    return NULL;
}

static json_t *parse_json_object(const uint8_t *p, size_t n)
{
    json_error_t jerr;
    json_t *v = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr);
    if (v && !json_is_object(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

static void agent_broken(struct sandbox *sb, const char *why)
{
    fprintf(stderr, "hutchd: %s: agent protocol violation: %s; stopping the sandbox\n", sb->id, why);
    sandbox_stop(sb, "the sandbox's agent misbehaved");
}

static bool signal_name_ok(const char *s)
{
    if (!s)
        return false;
    size_t n = strlen(s);
    if (n < 4 || n > 12 || strncmp(s, "SIG", 3) != 0)
        return false;
    for (size_t i = 3; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '+'))
            return false;
    return true;
}

static void handle_exit(struct sandbox *sb, uint32_t pid, const uint8_t *payload, size_t len)
{
    struct proc *p = sandbox_proc(sb, pid);
    if (!p || p->exited)
        return; /* not one of ours (or a duplicate): ignore, do not trust */
    json_t *m = parse_json_object(payload, len);
    if (!m) {
        agent_broken(sb, "malformed exit message");
        return;
    }
    json_t *code = json_object_get(m, "code");
    json_t *sig = json_object_get(m, "signal");
    struct proc_usage pu = {.pid = pid};
    int has_usage = procstats_parse(json_object_get(m, "usage"), &pu); /* metering: absent from older agents */
    if (!json_is_integer(code) || (!json_is_null(sig) && sig && !signal_name_ok(json_string_value(sig))) ||
        has_usage < 0) {
        json_decref(m);
        agent_broken(sb, "bad exit fields");
        return;
    }
    json_int_t c = json_integer_value(code);
    p->code = (c < 0 || c > 255) ? 255 : (int)c;
    p->signal[0] = 0;
    if (json_is_string(sig))
        snprintf(p->signal, sizeof p->signal, "%s", json_string_value(sig));
    json_decref(m);
    p->exited = true;
    p->exited_ms = now_ms();
    if (has_usage > 0) { /* metering: per-command usage (procstats.c) */
        pu.code = p->code;
        snprintf(pu.signal, sizeof pu.signal, "%s", p->signal);
        pu.ended_ms = p->exited_ms;
        pu.started_ms = pu.ended_ms - (int64_t)(pu.wall_us / 1000);
        procstats_add(sb, &pu);
    }
    /* The kernel's OOM killer counts its kills per memory cgroup; a SIGKILL
     * while that count grew is the OOM killer's doing. */
    uint64_t kills = 0;
    if (cgroup_oom_kills(sb->id, &kills) == 0 && kills > sb->oom_seen) {
        sb->oom_seen = kills;
        if (strcmp(p->signal, "SIGKILL") == 0)
            p->oom = true;
    }
    rpc_on_exit(sb, p);
}

/* {"ok":{"data":"<base64>"}} and nothing else: such a reply is valid JSON of
 * a known shape without parsing it, so large reads skip a parse and a dump
 * of their base64 (measured: 1.4 ms of 2.7 ms per 64 KiB fileRead). */
bool agent_reply_is_plain_data(const uint8_t *p, size_t n)
{
    static const char head[] = "{\"ok\":{\"data\":\"", tail[] = "\"}}";
    size_t hl = sizeof head - 1, tl = sizeof tail - 1;
    if (n < hl + tl || memcmp(p, head, hl) != 0 || memcmp(p + n - tl, tail, tl) != 0)
        return false;
    /* every byte of every fileRead answer: 16 at a time (lib/b64.c) */
    return hx_b64_charset_ok(p + hl, n - hl - tl);
}

void agent_forward_raw(struct session *s, json_t *rpc_id, const uint8_t *p, size_t n)
{
    char *id = json_dumps(rpc_id, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!id)
        return;
    static const char a[] = "{\"jsonrpc\":\"2.0\",\"id\":", b[] = ",\"result\":";
    size_t il = strlen(id), total = sizeof a - 1 + il + sizeof b - 1 + n + 1;
    char *msg = malloc(total);
    if (msg) {
        char *o = msg;
        memcpy(o, a, sizeof a - 1), o += sizeof a - 1;
        memcpy(o, id, il), o += il;
        memcpy(o, b, sizeof b - 1), o += sizeof b - 1;
        memcpy(o, p, n), o += n;
        *o = '}';
        ws_send_text(s->ws, msg, total);
        free(msg);
    }
    free(id);
}

json_t *agent_reply_parse(const uint8_t *p, size_t n)
{
    json_t *m = parse_json_object(p, n);
    json_t *ok = m ? json_object_get(m, "ok") : NULL;
    json_t *err = m ? json_object_get(m, "error") : NULL;
    if (!m || (!ok && !json_is_object(err))) {
        json_decref(m);
        m = json_pack("{s:{s:s, s:s}}", "error", "code", "EIO", "message", "the sandbox agent sent a malformed reply");
    }
    return m;
}

static void handle_frame(struct sandbox *sb, const struct hx_frame *f)
{
    if (f->type != HX_REPLY)
        sb->io_epoch++; /* replies: below, except read-ahead's own (rpc_fs.c) */
    /* restore: an adopted sandbox's agent speaks HX_HELLO first, and only
     * then; a fresh one never does */
    if (sb->restore.adopting && f->type != HX_HELLO)
        return agent_broken(sb, "expected a hello after the reconnect");
    if (!sb->restore.adopting && f->type == HX_HELLO)
        return agent_broken(sb, "an unexpected hello");
    switch (f->type) {
    case HX_HELLO: {
        json_t *m = parse_json_object(f->payload, f->len);
        if (!m)
            return agent_broken(sb, "malformed hello");
        restore_on_hello(sb, m);
        json_decref(m);
        return;
    }
    case HX_READY: {
        json_t *m = parse_json_object(f->payload, f->len);
        if (!m) {
            agent_broken(sb, "malformed ready message");
            return;
        }
        sandbox_on_ready(sb, m);
        json_decref(m);
        return;
    }
    case HX_REPLY: {
        struct pending_call **pp = &sb->calls, *c = NULL;
        for (; *pp; pp = &(*pp)->next) {
            if ((*pp)->req == f->chan) {
                c = *pp;
                *pp = c->next;
                break;
            }
        }
        if (!c)
            return; /* a reply nobody asked for */
        call_done(c);
        if (c->raw_reply) {
            c->raw_reply(sb, f->payload, f->len, c->ud);
            json_decref(c->rpc_id);
            free(c);
            return;
        }
        sb->io_epoch++;
        if (c->raw_data_ok && c->s && c->s->ws && agent_reply_is_plain_data(f->payload, f->len)) {
            agent_forward_raw(c->s, c->rpc_id, f->payload, f->len);
            json_decref(c->rpc_id);
            free(c);
            return;
        }
        json_t *m = agent_reply_parse(f->payload, f->len);
        c->cb(sb, c->s, c->rpc_id, m, c->ud);
        json_decref(m);
        json_decref(c->rpc_id);
        free(c);
        return;
    }
    case HX_OUTPUT: {
        uint32_t pid = HX_STREAM_PID(f->chan);
        unsigned fd = HX_STREAM_FD(f->chan);
        struct proc *p = sandbox_proc(sb, pid);
        if (!p || !p->stream_open[fd]) {
            if (f->len)
                agent_credit(sb, f->chan, f->len); /* keep the process from blocking forever */
            return;
        }
        if (f->len == 0)
            p->stream_open[fd] = false;
        /* An honest agent stops at the credit window; a hijacked one that
         * does not would fill the client's queue without bound. */
        p->inflight[fd] += f->len;
        if (p->inflight[fd] > HX_OUTPUT_WINDOW)
            return agent_broken(sb, "output beyond its credit window");
        rpc_on_output(sb, p, fd, f->payload, f->len);
        return;
    }
    case HX_EXIT:
        handle_exit(sb, f->chan, f->payload, f->len);
        return;
    case HX_STDIN_ACK: {
        if (f->len != 4)
            return agent_broken(sb, "bad stdin ack");
        uint32_t n = hx_get_u32(f->payload);
        sb->stdin_inflight = n > sb->stdin_inflight ? 0 : sb->stdin_inflight - n;
        rpc_on_stdin_ack(sb);
        return;
    }
    case HX_FS_DATA: /* file transfers (rpc_fs.c checks the channel and the bytes) */
        if (f->chan < HX_FS_CHAN_BASE)
            return agent_broken(sb, "fs data on a process channel");
        rpc_fs_on_data(sb, f->chan, f->payload, f->len);
        return;
    case HX_LOG: {
        /* Rate-limited: a hijacked agent must not fill the host's logs. */
        int64_t now = now_ms();
        sb->log_tokens += (double)(now - sb->log_last_ms) * LOG_PER_SEC / 1000.0;
        if (sb->log_tokens > LOG_BURST)
            sb->log_tokens = LOG_BURST;
        sb->log_last_ms = now;
        if (sb->log_tokens < 1) {
            sb->log_suppressed++;
            return;
        }
        sb->log_tokens -= 1;
        if (sb->log_suppressed) {
            fprintf(stderr, "hutchd: %s: agent: (%u lines suppressed)\n", sb->id, sb->log_suppressed);
            sb->log_suppressed = 0;
        }
        int n = (int)(f->len > 300 ? 300 : f->len);
        char line[301];
        for (int i = 0; i < n; i++) {
            unsigned char ch = f->payload[i];
            line[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
        }
        line[n] = 0;
        fprintf(stderr, "hutchd: %s: agent: %s\n", sb->id, line);
        return;
    }
    default:
        agent_broken(sb, "unknown frame type");
    }
}

/* Reading: one loop, one thread, so every agent reads into one scratch
 * buffer and its frames are handled from there before the next read. A
 * sandbox holds memory of its own only for a frame that arrived in part (a
 * buffer of that frame's size, read into until it is whole), kept while
 * large frames keep coming (no allocation per frame) and freed once the
 * sandbox sent none for AGENT_RBUF_IDLE_MS: an idle sandbox holds none, where
 * a buffer of the largest frame each cost 256 KiB of heap, touched more and
 * more by a busy loop (issue 15). */
#define AGENT_RBUF_IDLE_MS 2000
static uint8_t g_agent_scratch[AGENT_RBUF];
static uv_timer_t g_rbuf_sweep;
static bool g_rbuf_sweep_init;

static void on_rbuf_sweep(uv_timer_t *t)
{
    uint64_t now = uv_now(g_daemon.loop);
    bool held = false;
    for (struct sandbox *sb = g_daemon.sandboxes; sb; sb = sb->next) {
        if (!sb->rbuf)
            continue;
        if (sb->rlen == 0 && now - sb->rbuf_used_ms >= AGENT_RBUF_IDLE_MS) {
            free(sb->rbuf);
            sb->rbuf = NULL;
            sb->rcap = 0;
        } else {
            held = true;
        }
    }
    if (!held)
        uv_timer_stop(t);
}

static void rbuf_sweep_start(void)
{
    if (!g_rbuf_sweep_init) {
        uv_timer_init(g_daemon.loop, &g_rbuf_sweep);
        uv_unref((uv_handle_t *)&g_rbuf_sweep); /* never what keeps the loop running */
        g_rbuf_sweep_init = true;
    }
    if (!uv_is_active((uv_handle_t *)&g_rbuf_sweep))
        uv_timer_start(&g_rbuf_sweep, on_rbuf_sweep, AGENT_RBUF_IDLE_MS, AGENT_RBUF_IDLE_MS);
}

static void on_agent_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct sandbox *sb = h->data;
    (void)hint;
    if (sb->rlen == 0)
        *buf = uv_buf_init((char *)g_agent_scratch, sizeof g_agent_scratch);
    else  /* the rest of the partial frame, never more: the buffer holds one frame */
        *buf = uv_buf_init((char *)sb->rbuf + sb->rlen, (unsigned)(sb->rneed - sb->rlen));
}

/* Keeps p[0..n), the start of a frame (n < its size), in a buffer of the
 * frame's size (of the header's while the header is not whole). */
static int agent_hold(struct sandbox *sb, const uint8_t *p, size_t n)
{
    size_t need = n < HX_FRAME_HDR ? HX_FRAME_HDR : HX_FRAME_HDR + hx_get_u32(p);
    if (need > sb->rcap) {
        /* the largest frame yet: a new buffer of at least 64 KiB, so that a
         * stream of growing frames does not allocate for each */
        size_t cap = need < (64u << 10) ? (64u << 10) : need;
        uint8_t *nb = malloc(cap);
        if (!nb)
            return -ENOMEM;
        memcpy(nb, p, n);
        free(sb->rbuf);
        sb->rbuf = nb;
        sb->rcap = cap;
        rbuf_sweep_start();
    } else if (p != sb->rbuf) {
        memmove(sb->rbuf, p, n);
    }
    sb->rlen = n;
    sb->rneed = need;
    sb->rbuf_used_ms = uv_now(g_daemon.loop);
    return 0;
}

static void on_agent_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct sandbox *sb = st->data;
    if (n < 0) {
        if (sb->state < SB_STOPPING)
            sandbox_stop(sb, n == UV_EOF ? "the sandbox's agent exited" : "lost the sandbox's agent");
        return;
    }
    /* hutchd passes descriptors to its agent, never the other way: one
     * from the sandbox is closed unread (libuv queued it for us) */
    if (hx_uv_drop_fds(&sb->agent))
        return agent_broken(sb, "it sent a file descriptor");
    if (n == 0)
        return;
    metrics_agent_bytes(true, (size_t)n); /* metrics: */
    const uint8_t *p;
    size_t len;
    if (sb->rlen) {  /* more of the held frame: it grows to the header's size once that is whole */
        sb->rlen += (size_t)n;
        if (sb->rlen == sb->rneed && sb->rlen == HX_FRAME_HDR) {
            struct hx_frame hf;
            if (hx_frame_decode(sb->rbuf, HX_FRAME_HDR, &hf) < 0) /* length, type and flags, as below */
                return agent_broken(sb, "bad frame header");
            if (hx_get_u32(sb->rbuf) > 0) {
                if (agent_hold(sb, sb->rbuf, sb->rlen) < 0)
                    return agent_broken(sb, "out of memory for its frame");
                return;
            }
        }
        if (sb->rlen < sb->rneed)
            return;
        p = sb->rbuf;
        len = sb->rlen;
    } else {
        p = (const uint8_t *)buf->base;
        len = (size_t)n;
    }
    size_t off = 0;
    while (sb->state < SB_STOPPING) {
        struct hx_frame f;
        int r = hx_frame_decode(p + off, len - off, &f);
        if (r == 0)
            break;
        if (r < 0) {
            agent_broken(sb, "bad frame header");
            return;
        }
        off += (size_t)r;
        handle_frame(sb, &f);
    }
    if (sb->state >= SB_STOPPING)
        return;
    if (sb->agent_overrun)
        return agent_broken(sb, "it does not read its socket");
    if (off == len)
        sb->rlen = 0; /* the buffer stays for the next partial frame; the sweep frees it when idle */
    else if (agent_hold(sb, p + off, len - off) < 0)
        agent_broken(sb, "out of memory for its frame");
}

int agent_start(struct sandbox *sb, int fd, struct hx_err *e)
{
    /* ipc: calls may carry a descriptor (agent_call_fd); one the agent
     * sends is a protocol violation (on_agent_read) */
    uv_pipe_init(g_daemon.loop, &sb->agent, 1);
    sb->agent.data = sb;
    sb->open_handles++;
    sb->agent_open = true;
    int r = uv_pipe_open(&sb->agent, fd);
    if (r < 0) {
        close(fd);
        return hx_fail(e, -r, "open agent socket: %s", uv_strerror(r));
    }
    r = uv_read_start((uv_stream_t *)&sb->agent, on_agent_alloc, on_agent_read);
    if (r < 0)
        return hx_fail(e, -r, "read agent socket: %s", uv_strerror(r));
    return 0;
}

/* ---- restore: reconnecting to an adopted sandbox's agent ---------------- */

static void on_agent_connected(uv_connect_t *req, int status)
{
    struct sandbox *sb = req->data;
    free(req);
    if (sb->state >= SB_STOPPING || !sb->agent_open)
        return;
    if (status < 0) {
        char why[160];
        snprintf(why, sizeof why, "could not reach its agent after hutchd came back: %s", uv_strerror(status));
        sandbox_stop(sb, why);
        return;
    }
    /* The listener's credentials are those of the process that called
     * listen(): hutch-init, the PID 1 we checked. Anything else is not it. */
    uv_os_fd_t fd = -1;
    struct ucred cred = {0};
    socklen_t cl = sizeof cred;
    if (uv_fileno((uv_handle_t *)&sb->agent, &fd) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 || cred.pid != sb->pid)
        return agent_broken(sb, "its agent socket is not served by its init");
    int r = uv_read_start((uv_stream_t *)&sb->agent, on_agent_alloc, on_agent_read);
    if (r < 0)
        sandbox_stop(sb, "could not read its agent after hutchd came back");
}

int agent_reconnect(struct sandbox *sb, const char *path, struct hx_err *e)
{
    uv_connect_t *req = malloc(sizeof *req);
    if (!req) {
        return hx_fail(e, ENOMEM, "out of memory");
    }
    uv_pipe_init(g_daemon.loop, &sb->agent, 1); /* ipc: as agent_start */
    sb->agent.data = sb;
    sb->open_handles++;
    sb->agent_open = true;
    req->data = sb;
    uv_pipe_connect(req, &sb->agent, path, on_agent_connected);
    return 0;
}
