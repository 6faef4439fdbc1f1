/* hutchd's JSON-RPC dispatch (src/daemon/core/rpc.c rpc_on_text, rpc_fs.c)
 * and its side of the agent protocol (agent.c frame validation), together:
 * a sandbox in SB_RUNNING whose agent is the other end of a socketpair, and
 * one client session. Each input is a sequence of parts cut at "\n--\n":
 * a part starting with 'A' is bytes from the agent (frames, any split), any
 * other part is one WebSocket text message from the client. Request ids of
 * calls to the agent count from 1, so seeds can answer them.
 *
 * A link seam, no source change: this file defines what agent.c and rpc.c
 * call in the rest of hutchd (lifecycle, WebSocket, cgroup, fetch), so no
 * sandbox, cgroup or network is touched. Oracles: every message hutchd
 * sends the client is valid JSON, every frame it sends the agent is well
 * formed, and a misbehaving agent gets its sandbox stopped, never a crash.
 * sandbox.fetch (rpc_net.c) is left out: it opens real connections. */
#include "fuzz.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "daemon/api/ws.h"
#include "daemon/core/metering.h"
#include "daemon/core/metrics.h"
#include "daemon/core/rpc.h"
#include "daemon/core/sandbox.h"
#include "daemon/sandbox/cgroup.h"
#include "lib/wire.h"

struct daemon_ctx g_daemon;
static int g_stops;

/* ---- the rest of hutchd, as far as agent.c and rpc*.c reach ---- */
int64_t now_ms(void) { return 1700000000000; }
void metrics_agent_bytes(bool in, size_t n) {}
void metrics_rpc(const char *method, enum metrics_rpc_outcome outcome) {}
void metrics_readahead(enum metrics_readahead what) {}
int cgroup_oom_kills(const char *id, uint64_t *kills) { return -ENOENT; }
void sandbox_on_ready(struct sandbox *sb, json_t *msg) { FUZZ_CHECK(json_is_object(msg)); }
void sandbox_on_handle_closed(uv_handle_t *h) {}

/* As lifecycle.c's, less the processes, cgroups and records. */
void sandbox_stop(struct sandbox *sb, const char *reason)
{
    if (sb->state >= SB_STOPPING)
        return;
    sb->state = SB_STOPPING;
    g_stops++;
    while (sb->calls) {
        struct pending_call *c = sb->calls;
        sb->calls = c->next;
        c->cb(sb, c->s, c->rpc_id, NULL, c->ud);
        json_decref(c->rpc_id);
        free(c);
    }
    while (sb->sessions) {
        struct session *s = sb->sessions;
        sb->sessions = s->next;
        s->sb = NULL;
        rpc_session_closed_by_sandbox(s, reason);
    }
    while (sb->procs) {
        struct proc *p = sb->procs;
        sb->procs = p->next;
        while (p->waiters) {
            struct waiter *w = p->waiters;
            p->waiters = w->next;
            json_decref(w->rpc_id);
            free(w);
        }
        free(p);
    }
    if (sb->agent_open) {
        sb->agent_open = false;
        uv_close((uv_handle_t *)&sb->agent, NULL);
    }
}

void sandbox_session_detach(struct session *s)
{
    struct sandbox *sb = s->sb;
    if (!sb)
        return;
    for (struct session **pp = &sb->sessions; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    for (struct pending_call *c = sb->calls; c; c = c->next)
        if (c->s == s)
            c->s = NULL;
    for (struct proc *p = sb->procs; p; p = p->next) {
        if (p->owner == s)
            p->owner = NULL;
        for (struct waiter *w = p->waiters; w; w = w->next)
            if (w->s == s)
                w->s = NULL;
    }
    s->sb = NULL;
}

void rpc_session_closed_by_sandbox(struct session *s, const char *reason) { s->ws = NULL; }

/* The client's WebSocket: what hutchd sends it must parse as JSON. */
int ws_send_text(struct ws_conn *w, const char *data, size_t len)
{
    FUZZ_CHECK(w != NULL);
    json_error_t jerr;
    json_t *v = json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!v)
        fprintf(stderr, "hutchd sent invalid JSON: %.*s\n", (int)(len > 200 ? 200 : len), data);
    FUZZ_CHECK(v != NULL);
    json_decref(v);
    return 0;
}
size_t ws_queued_bytes(const struct ws_conn *w) { return 0; }
void ws_set_reading(struct ws_conn *w, bool on) {}
/* binary stream messages (hutch's own clients): an 8-byte stream id first */
int ws_send_binary(struct ws_conn *w, const uint8_t *head, size_t hl, const uint8_t *data, size_t len)
{
    FUZZ_CHECK(w != NULL && hl == 8);
    return 0;
}
void ws_close(struct ws_conn *w, uint16_t code, const char *reason) {}

/* sandbox.fetch is not fuzzed here (it connects out). */
const struct rpc_method rpc_net_methods[] = {{NULL, NULL}};
void restore_on_hello(struct sandbox *sb, json_t *hello) { (void)sb; (void)hello; } /* restore.c: adoption */
const struct rpc_method expose_rpc_methods[] = {{NULL, NULL}}; /* expose.c: exposures need an ingress */
const struct rpc_method deno_rpc_methods[] = {{NULL, NULL}}; /* rpc_deno.c: Deno needs a sandbox's netns */
void deno_on_exit(struct sandbox *sb, uint32_t pid) {}
void deno_on_stderr(struct sandbox *sb, struct proc *p, const uint8_t *d, size_t n) {}
void deno_session_closed(struct session *s) {}
const struct rpc_method vscode_rpc_methods[] = {{NULL, NULL}}; /* vscode.c: needs the layer and a netns */
void vscode_on_stderr(struct sandbox *sb, uint32_t pid, const uint8_t *p, size_t n) {}
void vscode_session_closed(struct session *s) {}
void rpc_net_on_body(struct session *s, uint32_t chan, const uint8_t *p, size_t n, int end) {}
void rpc_net_on_drain(struct session *s) {}
void rpc_net_stream_cancel(struct session *s, int64_t stream_id) {}
void rpc_net_session_closed(struct session *s) {}
bool rpc_net_abort(struct session *s, int64_t abort_id) { return false; }

/* ---- the harness ---- */
static int g_peer = -1;  /* the "agent" end */

/* Reads what hutchd sent the agent; every frame must decode. */
static void drain_agent(void)
{
    static uint8_t buf[HX_FRAME_HDR + HX_FRAME_MAX + 65536];
    static size_t len;
    for (;;) {
        ssize_t k = read(g_peer, buf + len, sizeof buf - len);
        if (k <= 0)
            break;
        len += (size_t)k;
        size_t off = 0;
        for (;;) {
            struct hx_frame f;
            int r = hx_frame_decode(buf + off, len - off, &f);
            FUZZ_CHECK(r >= 0);
            if (r == 0)
                break;
            off += (size_t)r;
        }
        memmove(buf, buf + off, len - off);
        len -= off;
    }
    if (g_peer < 0)
        len = 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    signal(SIGPIPE, SIG_IGN);
    g_daemon.loop = uv_default_loop();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sandbox *sb = calloc(1, sizeof *sb);
    snprintf(sb->id, sizeof sb->id, "sbx_fuz_0123456789abcdefghjk");
    sb->state = SB_RUNNING;
    sb->next_req = 1;
    sb->stop_at_ms = 1;  /* not a session sandbox: the last session leaving stops nothing */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    g_peer = sv[1];
    fcntl(g_peer, F_SETFL, O_NONBLOCK);
    struct hx_err e = {0};
    if (agent_start(sb, sv[0], &e) < 0)
        abort();
    struct session *s = calloc(1, sizeof *s);
    s->ws = (struct ws_conn *)&g_peer;  /* opaque to rpc.c; the stubs above never dereference it */
    s->sb = sb;
    sb->sessions = s;

    struct fuzz_in in = {data, size};
    const uint8_t *p;
    size_t n;
    while (fuzz_part(&in, &p, &n)) {
        if (n && p[0] == 'A') {
            p++, n--;
            while (n) {
                ssize_t k = write(g_peer, p, n);
                if (k <= 0)
                    break;
                p += k;
                n -= (size_t)k;
                uv_run(g_daemon.loop, UV_RUN_NOWAIT);
                drain_agent();
            }
        } else if (s->sb) {
            rpc_on_text(s, (const char *)p, n);
        }
        for (int i = 0; i < 3; i++) {
            uv_run(g_daemon.loop, UV_RUN_NOWAIT);
            drain_agent();
        }
    }
    /* The client leaves, then the sandbox stops: everything is released. */
    rpc_session_free(s);
    sandbox_stop(sb, "fuzz input done");
    close(g_peer);
    g_peer = -1;
    for (int i = 0; i < 3; i++)
        uv_run(g_daemon.loop, UV_RUN_NOWAIT);
    free(sb->rbuf);
    procstats_free(sb); /* exit frames' usage (procstats.c) */
    free(sb);
    return 0;
}
