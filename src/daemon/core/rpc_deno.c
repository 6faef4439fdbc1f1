/* sandbox.deno.*: Deno processes started by hutchd (spawnDeno, spawnDenoRepl)
 * as ordinary spawns of /usr/local/bin/deno as `app`, with every Deno
 * permission (the sandbox is the boundary, as in Deno Sandbox), plus what
 * hutchd watches of them: --watch restarts on stderr, whether they answer
 * HTTP (denoHttpWait), and their REPL channel (deno_repl.c). docs/deno.md. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "daemon/core/deno.h"
#include "daemon/core/expose.h"
#include "daemon/core/sandbox.h"
#include "daemon/net/net.h"
#include "deno_repl_js.h"   /* generated (src/daemon/meson.build) from deno_repl.js: const char deno_repl_js[] */

#define WAITS_MAX 64            /* denoHttpWait calls pending per process */
#define EXITED_KEPT 256         /* exited Deno processes remembered per sandbox (a late denoHttpWait: false) */
#define TICK_MS 100             /* how often a pending denoHttpWait looks for the port */
#define PROBE_MS 2000           /* an HTTP probe that got no answer this long counts as no answer */
#define CLOSE_GRACE_MS 3000     /* a closed REPL still running after this is killed */
#define SCRIPT_ARGS_MAX 4096
#define WATCH_PATHS_MAX 256

static const char restart_prefix[] = "Watcher Restarting!";
/* An invalid request line: HTTP servers (Deno.serve, node:http) answer 400
 * without calling the application's handler, so the probe has no side effects. */
static const char probe_req[] = "\x01 / HTTP/1.1\r\nHost: localhost\r\n\r\n";

struct http_wait {
    struct http_wait *next;
    struct session *s;            /* NULL once the session left */
    json_t *rpc_id;
};

struct probe;

struct deno_proc {
    struct deno_proc *next;
    struct sandbox *sb;
    uint32_t pid;
    bool is_repl, exited, http_ready, closed;
    int64_t exited_ms, next_probe_ms, kill_at_ms;
    char watcher_id[40];          /* "" = not watching */
    char line[sizeof restart_prefix]; /* the start of the current stderr line */
    size_t line_len;
    bool line_skip, in_esc;
    struct http_wait *waits;
    struct probe *probe;
    struct deno_repl *repl;       /* REPLs only */
};

struct probe {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    struct deno_proc *dp;         /* NULL once detached */
    char got[8];
    size_t n;
    int64_t deadline_ms;
};

static struct deno_proc *g_procs;
static uv_timer_t g_tick;
static bool g_tick_init;

static struct deno_proc *dp_find(struct sandbox *sb, uint32_t pid)
{
    for (struct deno_proc *d = g_procs; d; d = d->next)
        if (d->sb == sb && d->pid == pid)
            return d;
    return NULL;
}

static void probe_detach(struct deno_proc *dp);

static void waits_answer(struct deno_proc *dp, bool ready)
{
    while (dp->waits) {
        struct http_wait *w = dp->waits;
        dp->waits = w->next;
        if (w->s)
            rpc_reply_result(w->s, w->rpc_id, json_pack("{s:b}", "ok", ready));
        json_decref(w->rpc_id);
        free(w);
    }
}

static void dp_free(struct deno_proc *dp)
{
    for (struct deno_proc **pp = &g_procs; *pp; pp = &(*pp)->next)
        if (*pp == dp) {
            *pp = dp->next;
            break;
        }
    waits_answer(dp, false);
    probe_detach(dp);
    if (dp->repl)
        deno_repl_end(dp->repl, "ENOENT", "the Deno REPL ended");
    free(dp);
}

static void prune(struct sandbox *sb)
{
    unsigned exited = 0;
    struct deno_proc *oldest = NULL;
    for (struct deno_proc *d = g_procs; d; d = d->next)
        if (d->sb == sb && d->exited) {
            exited++;
            if (!oldest || d->exited_ms < oldest->exited_ms)
                oldest = d;
        }
    if (exited > EXITED_KEPT && oldest)
        dp_free(oldest);
}

/* ---- the tick: denoHttpWait and closed REPLs ---------------------------- */

static void on_tick(uv_timer_t *t);

static void tick_start(void)
{
    if (!g_tick_init) {
        uv_timer_init(g_daemon.loop, &g_tick);
        uv_unref((uv_handle_t *)&g_tick);
        g_tick_init = true;
    }
    if (!uv_is_active((uv_handle_t *)&g_tick))
        uv_timer_start(&g_tick, on_tick, TICK_MS, TICK_MS);
}

static void on_probe_closed(uv_handle_t *h)
{
    free(h->data);
}

static void probe_detach(struct deno_proc *dp)
{
    struct probe *pr = dp->probe;
    if (!pr)
        return;
    dp->probe = NULL;
    pr->dp = NULL;
    if (!uv_is_closing((uv_handle_t *)&pr->tcp))
        uv_close((uv_handle_t *)&pr->tcp, on_probe_closed);
}

static void probe_done(struct probe *pr, bool answered)
{
    struct deno_proc *dp = pr->dp;
    if (!dp)
        return;
    probe_detach(dp);
    if (answered) {
        dp->http_ready = true;
        waits_answer(dp, true);
    } else {
        dp->next_probe_ms = now_ms() + 4 * TICK_MS;
    }
}

static void on_probe_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct probe *pr = h->data;
    (void)hint;
    b->base = pr->got + pr->n;
    b->len = sizeof pr->got - pr->n;
}

static void on_probe_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct probe *pr = st->data;
    (void)b;
    if (nread < 0)
        return probe_done(pr, false);
    pr->n += (size_t)nread;
    size_t cmp = pr->n < 7 ? pr->n : 7;
    if (memcmp(pr->got, "HTTP/1.", cmp) != 0) /* something that is not HTTP/1.x listens there */
        return probe_done(pr, false);
    if (pr->n >= 7)
        probe_done(pr, true);
}

static void on_probe_written(uv_write_t *req, int status)
{
    (void)req;
    (void)status; /* a failed write shows as a failed read */
}

static void on_probe_connected(uv_connect_t *req, int status)
{
    struct probe *pr = req->data;
    if (!pr->dp)
        return;
    if (status < 0)
        return probe_done(pr, false);
    uv_buf_t b = uv_buf_init((char *)probe_req, sizeof probe_req - 1);
    pr->wreq.data = pr;
    if (uv_write(&pr->wreq, (uv_stream_t *)&pr->tcp, &b, 1, on_probe_written) < 0 ||
        uv_read_start((uv_stream_t *)&pr->tcp, on_probe_alloc, on_probe_read) < 0)
        probe_done(pr, false);
}

/* Connects to the port from inside the sandbox's network namespace (its
 * loopback) and sends one invalid request: any HTTP/1.x answer counts. */
static void probe_start(struct deno_proc *dp, int port)
{
    struct hx_err e = {0};
    int fd = net_sandbox_socket(dp->sb, AF_INET, SOCK_STREAM, &e);
    if (fd < 0) {
        dp->next_probe_ms = now_ms() + 10 * TICK_MS;
        return;
    }
    struct probe *pr = calloc(1, sizeof *pr);
    if (!pr) {
        close(fd);
        return;
    }
    uv_tcp_init(g_daemon.loop, &pr->tcp);
    pr->tcp.data = pr;
    pr->dp = dp;
    pr->deadline_ms = now_ms() + PROBE_MS;
    dp->probe = pr;
    if (uv_tcp_open(&pr->tcp, fd) < 0) {
        close(fd);
        return probe_done(pr, false);
    }
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    pr->creq.data = pr;
    if (uv_tcp_connect(&pr->creq, &pr->tcp, (struct sockaddr *)&sin, on_probe_connected) < 0)
        probe_done(pr, false);
}

static void kill_pid(struct sandbox *sb, uint32_t pid, int sig);

static void on_tick(uv_timer_t *t)
{
    int64_t now = now_ms();
    bool busy = false;
    for (struct deno_proc *dp = g_procs; dp; dp = dp->next) {
        if (dp->exited)
            continue;
        if (dp->kill_at_ms && now >= dp->kill_at_ms) {
            dp->kill_at_ms = 0;
            kill_pid(dp->sb, dp->pid, 9); /* a closed REPL that did not end by itself */
        }
        busy |= dp->kill_at_ms != 0;
        if (!dp->waits)
            continue;
        busy = true;
        if (dp->probe) {
            if (now >= dp->probe->deadline_ms)
                probe_done(dp->probe, false);
            continue;
        }
        if (now < dp->next_probe_ms || dp->sb->state != SB_RUNNING)
            continue;
        int port = expose_pid_port(dp->sb, (int)dp->pid); /* the core's /proc lookup, as exposeHttp {pid} */
        if (port > 0)
            probe_start(dp, port);
    }
    if (!busy)
        uv_timer_stop(t);
}

/* ---- hooks -------------------------------------------------------------- */

void deno_on_exit(struct sandbox *sb, uint32_t pid)
{
    struct deno_proc *dp = dp_find(sb, pid);
    if (!dp || dp->exited)
        return;
    dp->exited = true;
    dp->exited_ms = now_ms();
    dp->kill_at_ms = 0;
    probe_detach(dp);
    waits_answer(dp, false); /* "false: it exited before an HTTP server could be started" */
    if (dp->repl) {
        deno_repl_end(dp->repl, "ENOENT", "the Deno REPL process exited");
        dp->repl = NULL;
    }
    prune(sb);
}

void deno_session_closed(struct session *s)
{
    for (struct deno_proc *dp = g_procs; dp; dp = dp->next) {
        for (struct http_wait *w = dp->waits; w; w = w->next)
            if (w->s == s)
                w->s = NULL;
        if (dp->repl)
            deno_repl_session_closed(dp->repl, s);
    }
}

void deno_sandbox_stopped(struct sandbox *sb)
{
    struct deno_proc *dp = g_procs;
    while (dp) {
        struct deno_proc *n = dp->next;
        if (dp->sb == sb) {
            dp->repl = NULL; /* ended below, with the listener */
            dp_free(dp);
        }
        dp = n;
    }
    deno_repl_sandbox_stopped(sb);
}

int deno_http_port(struct sandbox *sb, uint32_t pid)
{
    struct deno_proc *dp = dp_find(sb, pid);
    if (!dp || dp->exited)
        return -ESRCH;
    return expose_pid_port(sb, (int)pid);
}

/* deno --watch prints "Watcher Restarting! File change detected: ..." on
 * stderr each time it restarts the script (same process, same pid). */
void deno_on_stderr(struct sandbox *sb, struct proc *p, const uint8_t *d, size_t n)
{
    struct deno_proc *dp = dp_find(sb, p->pid);
    if (!dp || !dp->watcher_id[0])
        return;
    size_t want = sizeof restart_prefix - 1;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = d[i];
        if (ch == '\n') {
            dp->line_len = 0;
            dp->line_skip = dp->in_esc = false;
            continue;
        }
        if (dp->line_skip)
            continue;
        if (ch == 0x1b || dp->in_esc) { /* colour codes, should NO_COLOR be overridden */
            dp->in_esc = ch == 0x1b || !((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z'));
            continue;
        }
        dp->line[dp->line_len++] = (char)ch;
        if (memcmp(dp->line, restart_prefix, dp->line_len) != 0) {
            dp->line_skip = true;
        } else if (dp->line_len == want) {
            dp->line_skip = true;
            if (p->owner)
                rpc_notify(p->owner, "$sandbox.deno.watcher.restart", json_pack("{s:s}", "watcherId", dp->watcher_id));
        }
    }
}

/* ---- spawning ----------------------------------------------------------- */

static void on_kill_reply(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud) {}

static void kill_pid(struct sandbox *sb, uint32_t pid, int sig)
{
    if (sb->state == SB_RUNNING)
        agent_call(sb, "kill", json_pack("{s:I, s:i}", "pid", (json_int_t)pid, "signal", sig), on_kill_reply, NULL,
                   NULL, NULL);
}

struct start_ctx {
    char watcher_id[40];
    struct deno_repl *repl;
};

static void on_started(struct sandbox *sb, struct proc *p, void *ud)
{
    struct start_ctx *sc = ud;
    struct deno_proc *dp = dp_find(sb, p->pid);
    if (dp) /* a pid reused after an exit */
        dp_free(dp);
    bool live = sb->state == SB_RUNNING && (!sc->repl || deno_repl_set_pid(sc->repl, p->pid));
    dp = live ? calloc(1, sizeof *dp) : NULL;
    if (dp) {
        dp->sb = sb;
        dp->pid = p->pid;
        snprintf(dp->watcher_id, sizeof dp->watcher_id, "%s", sc->watcher_id);
        dp->repl = sc->repl;
        dp->is_repl = sc->repl != NULL;
        dp->next = g_procs;
        g_procs = dp;
        p->deno_watch = sc->watcher_id[0] != 0;
    } else if (sc->repl) {
        deno_repl_end(sc->repl, live ? "ENOMEM" : "EIO", live ? "out of memory" : "the sandbox is stopping");
    }
    free(sc);
}

static void on_start_failed(void *ud)
{
    struct start_ctx *sc = ud;
    if (sc->repl)
        deno_repl_end(sc->repl, "EIO", "the REPL did not start");
    free(sc);
}

/* The environment of a Deno process: the caller's env over the sandbox's,
 * plus defaults it did not set: Deno's cache under app's home (also when
 * clearEnv drops HOME), no colour codes in output read by programs, no
 * update check. */
static json_t *deno_env(const struct rpc_spawn_req *r)
{
    json_t *env = r->env ? json_deep_copy(r->env) : json_object();
    static const char *const defaults[][2] = {
        {"DENO_DIR", "/home/app/.cache/deno"},
        {"NO_COLOR", "1"},
        {"DENO_NO_UPDATE_CHECK", "1"},
    };
    for (size_t i = 0; env && i < HX_ARRAY_LEN(defaults); i++)
        if (!json_object_get(env, defaults[i][0]))
            json_object_set_new(env, defaults[i][0], json_string(defaults[i][1]));
    return env;
}

static void spawn_deno(struct session *s, json_t *id, json_t *args /* stolen */, json_t *env /* stolen */,
                       const struct rpc_spawn_req *r, const char *watcher_id, struct deno_repl *repl, bool with_watcher)
{
    json_t *ap = json_pack("{s:s, s:o, s:o, s:b, s:O, s:b, s:b, s:b, s:i}", "command", DENO_BIN, "args", args, "env",
                           env, "clearEnv", r->clear_env, "cwd", r->cwd ? r->cwd : json_null(), "stdin",
                           r->stdin_stream >= 0, "stdout", r->pipe[0], "stderr", r->pipe[1], "uid", 1000);
    struct start_ctx *sc = calloc(1, sizeof *sc);
    if (!sc) {
        json_decref(ap);
        if (repl)
            deno_repl_end(repl, "ENOMEM", "out of memory");
        return rpc_reply_rpc_error(s, id, -32603, "out of memory");
    }
    snprintf(sc->watcher_id, sizeof sc->watcher_id, "%s", watcher_id ? watcher_id : "");
    sc->repl = repl;
    struct rpc_spawn_hooks h = {.started = on_started, .failed = on_start_failed, .ud = sc};
    if (with_watcher)
        h.extra = json_pack("{s:o}", "watcherId", watcher_id ? json_string(watcher_id) : json_null());
    rpc_spawn_start(s, id, ap, r, &h);
}

static bool check_strings(struct session *s, json_t *id, json_t *arr, const char *what, size_t max)
{
    if (arr && !json_is_null(arr) && (!json_is_array(arr) || json_array_size(arr) > max)) {
        rpc_reply_rpc_error(s, id, -32602, "\"%s\" must be an array of at most %zu strings", what, max);
        return false;
    }
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) if (!json_is_string(v) || memchr(json_string_value(v), 0, json_string_length(v))) {
        rpc_reply_rpc_error(s, id, -32602, "%s[%zu] must be a string without NUL bytes", what, i);
        return false;
    }
    return true;
}

static void append_all(json_t *to, json_t *from)
{
    size_t i;
    json_t *v;
    json_array_foreach(from, i, v) json_array_append(to, v);
}

/* spawnDeno {code, extension}: the code goes to a new file in a fresh
 * directory under /tmp (written by the fs worker as app), then deno runs it. */
struct code_run {
    struct rpc_spawn_req r;       /* env and cwd: references held here */
    json_t *code, *script_args;
    char ext[8];
    char path[512];
};

static void code_run_free(struct code_run *cr)
{
    json_decref(cr->r.env);
    json_decref(cr->r.cwd);
    json_decref(cr->code);
    json_decref(cr->script_args);
    free(cr);
}

static void on_code_written(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    struct code_run *cr = ud;
    if (s && reply && json_object_get(reply, "ok")) {
        json_t *args = json_pack("[s, s, s]", "run", "-A", cr->path);
        append_all(args, cr->script_args);
        spawn_deno(s, rpc_id, args, deno_env(&cr->r), &cr->r, NULL, NULL, true);
    } else if (s) {
        json_t *err = json_object_get(reply, "error");
        rpc_reply_result(s, rpc_id, rpc_app_error("EIO", "cannot write the code to %s in the sandbox: %s", cr->path,
                                                  json_string_value(json_object_get(err, "message")) ?: "no answer"));
    }
    code_run_free(cr);
}

static void on_code_dir(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    struct code_run *cr = ud;
    const char *dir = json_string_value(json_object_get(reply, "ok"));
    if (!s) {
        code_run_free(cr);
        return;
    }
    /* the agent is not trusted: the answer must be the directory asked for */
    if (!dir || strncmp(dir, "/tmp/deno-run-", 14) != 0 || strlen(dir) > 200 || strchr(dir + 5, '/') ||
        strstr(dir, "..")) {
        json_t *err = json_object_get(reply, "error");
        rpc_reply_result(s, rpc_id, rpc_app_error("EIO", "cannot make a directory for the code in the sandbox: %s",
                                                  json_string_value(json_object_get(err, "message")) ?: "bad answer"));
        code_run_free(cr);
        return;
    }
    snprintf(cr->path, sizeof cr->path, "%s/main.%s", dir, cr->ext);
    int rc = rpc_fs_put(s, rpc_id, cr->path, json_string_value(cr->code), json_string_length(cr->code), on_code_written, cr);
    if (rc < 0) {
        rpc_reply_result(s, rpc_id, rpc_app_error("EIO", "cannot reach the sandbox's agent: %s", strerror(-rc)));
        code_run_free(cr);
    }
}

static void random_hex(char *out, size_t bytes)
{
    uint8_t b[32];
    if (bytes > sizeof b)
        bytes = sizeof b;
    if (RAND_bytes(b, (int)bytes) != 1)
        abort(); /* no randomness: nothing here may be guessable */
    for (size_t i = 0; i < bytes; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void m_spawn_deno(struct session *s, json_t *id, json_t *params)
{
    json_t *entry = json_object_get(params, "entrypoint");
    json_t *code = json_object_get(params, "code");
    json_t *script_args = json_object_get(params, "scriptArgs");
    bool has_entry = entry && !json_is_null(entry), has_code = code && !json_is_null(code);
    if (has_entry == has_code)
        return rpc_reply_rpc_error(s, id, -32602, "spawnDeno: give either \"entrypoint\" or \"code\"");
    if (!check_strings(s, id, script_args, "scriptArgs", SCRIPT_ARGS_MAX))
        return;
    struct rpc_spawn_req r;
    if (!rpc_spawn_parse(s, id, params, "spawnDeno", &r))
        return;
    /* hutchd reads a watcher's stderr for its restarts, also when the client does not */
    if (has_entry) {
        json_t *watch = json_object_get(params, "watch");
        if (!json_is_string(entry) || json_string_length(entry) == 0 || json_string_length(entry) > 4096 ||
            memchr(json_string_value(entry), 0, json_string_length(entry)))
            return rpc_reply_rpc_error(s, id, -32602, "spawnDeno: \"entrypoint\" must be a non-empty path without NUL bytes");
        if (watch && !json_is_null(watch) && !json_is_boolean(watch) &&
            !check_strings(s, id, watch, "watch", WATCH_PATHS_MAX))
            return;
        json_t *args = json_pack("[s, s]", "run", "-A");
        char watcher_id[40] = "";
        if (json_is_true(watch) || json_is_array(watch)) {
            size_t i, len = 0;
            json_t *v;
            json_array_foreach(watch, i, v) {
                if (strchr(json_string_value(v), ',')) {
                    json_decref(args);
                    return rpc_reply_rpc_error(s, id, -32602, "spawnDeno: watch paths cannot contain ',' (deno's --watch list separator)");
                }
                len += json_string_length(v) + 1;
            }
            char *flag = malloc(len + 16);
            if (!flag) {
                json_decref(args);
                return rpc_reply_rpc_error(s, id, -32603, "out of memory");
            }
            char *o = flag + sprintf(flag, "--watch");
            json_array_foreach(watch, i, v) o += sprintf(o, "%c%s", i ? ',' : '=', json_string_value(v));
            json_array_append_new(args, json_string(flag));
            json_array_append_new(args, json_string("--no-clear-screen"));
            free(flag);
            memcpy(watcher_id, "watcher_", 8);
            random_hex(watcher_id + 8, 12);
            r.pipe[1] = true;
        }
        const char *ep = json_string_value(entry);
        if (ep[0] == '-') { /* a path, never a flag */
            char *dot = malloc(strlen(ep) + 3);
            if (!dot) {
                json_decref(args);
                return rpc_reply_rpc_error(s, id, -32603, "out of memory");
            }
            sprintf(dot, "./%s", ep);
            json_array_append_new(args, json_string(dot));
            free(dot);
        } else {
            json_array_append(args, entry);
        }
        append_all(args, script_args);
        return spawn_deno(s, id, args, deno_env(&r), &r, watcher_id[0] ? watcher_id : NULL, NULL, true);
    }
    static const char *const exts[] = {"js", "cjs", "mjs", "ts", "cts", "mts", "jsx", "tsx"};
    const char *ext = json_string_value(json_object_get(params, "extension"));
    bool ext_ok = false;
    for (size_t i = 0; ext && i < HX_ARRAY_LEN(exts); i++)
        ext_ok |= strcmp(ext, exts[i]) == 0;
    if (!json_is_string(code) || !ext_ok)
        return rpc_reply_rpc_error(s, id, -32602, "spawnDeno: \"code\" must be a string and \"extension\" one of "
                                                  "js, cjs, mjs, ts, cts, mts, jsx, tsx");
    if (json_string_length(code) > DENO_CODE_MAX)
        return rpc_reply_result(s, id, rpc_app_error("E2BIG", "spawnDeno: the code is %zu bytes, more than %u: "
                                                              "write it to a file and run that as the entrypoint",
                                                     json_string_length(code), DENO_CODE_MAX));
    struct code_run *cr = calloc(1, sizeof *cr);
    if (!cr)
        return rpc_reply_rpc_error(s, id, -32603, "out of memory");
    cr->r = r;
    json_incref(r.env);
    json_incref(r.cwd);
    cr->code = json_incref(code);
    cr->script_args = json_is_array(script_args) ? json_incref(script_args) : json_array();
    snprintf(cr->ext, sizeof cr->ext, "%s", ext);
    int rc = agent_call(s->sb, "makeTempDir", json_pack("{s:{s:s}}", "options", "prefix", "deno-run-"), on_code_dir, s,
                        id, cr);
    if (rc < 0) {
        code_run_free(cr);
        rpc_reply_result(s, id, rpc_app_error("EIO", "cannot reach the sandbox's agent: %s", strerror(-rc)));
    }
}

/* spawnDenoRepl: `deno eval` of hutch's driver (deno_repl.js), which
 * connects back to hutchd with the token it finds in HUTCH_DENO_REPL. */
static void m_spawn_repl(struct session *s, json_t *id, json_t *params)
{
    json_t *script_args = json_object_get(params, "scriptArgs");
    if (!check_strings(s, id, script_args, "scriptArgs", SCRIPT_ARGS_MAX))
        return;
    struct rpc_spawn_req r;
    if (!rpc_spawn_parse(s, id, params, "spawnDenoRepl", &r))
        return;
    char token[33];
    uint16_t port = 0;
    struct hx_err e = {0};
    struct deno_repl *repl = deno_repl_new(s->sb, token, &port, &e);
    if (!repl)
        return rpc_reply_result(s, id, rpc_app_error("EIO", "cannot start a REPL channel: %s", e.msg));
    json_t *env = deno_env(&r);
    char spec[64];
    snprintf(spec, sizeof spec, "%u:%s", port, token);
    json_object_set_new(env, "HUTCH_DENO_REPL", json_string(spec));
    json_t *args = json_pack("[s, s, s]", "eval", "--ext=js", deno_repl_js);
    append_all(args, script_args);
    spawn_deno(s, id, args, env, &r, NULL, repl, false);
}

/* ---- per-process calls -------------------------------------------------- */

static struct deno_proc *get_dp(struct session *s, json_t *id, json_t *params, uint32_t *pid)
{
    json_t *v = json_object_get(params, "pid");
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 0x7fffffff) {
        rpc_reply_rpc_error(s, id, -32602, "\"pid\" must be a positive integer");
        return NULL;
    }
    *pid = (uint32_t)json_integer_value(v);
    struct deno_proc *dp = dp_find(s->sb, *pid);
    if (!dp)
        rpc_reply_result(s, id, rpc_app_error("ENOENT", "process %u is not a Deno process started by spawnDeno or "
                                                        "spawnDenoRepl in this sandbox", *pid));
    return dp;
}

static void m_http_wait(struct session *s, json_t *id, json_t *params)
{
    uint32_t pid;
    struct deno_proc *dp = get_dp(s, id, params, &pid);
    if (!dp)
        return;
    if (dp->http_ready || dp->exited)
        return rpc_reply_result(s, id, json_pack("{s:b}", "ok", dp->http_ready));
    unsigned n = 0;
    for (struct http_wait *w = dp->waits; w; w = w->next)
        n++;
    struct http_wait *w = n < WAITS_MAX ? calloc(1, sizeof *w) : NULL;
    if (!w)
        return rpc_reply_result(s, id, rpc_app_error("EAGAIN", "too many denoHttpWait calls pending for pid %u", pid));
    w->s = s;
    w->rpc_id = json_incref(id);
    w->next = dp->waits;
    dp->waits = w;
    tick_start();
}

static struct deno_proc *live_repl(struct session *s, json_t *id, json_t *params)
{
    uint32_t pid;
    struct deno_proc *dp = get_dp(s, id, params, &pid);
    if (!dp)
        return NULL;
    if (!dp->is_repl) {
        rpc_reply_result(s, id, rpc_app_error("EINVAL", "process %u is a Deno process but not a REPL "
                                                        "(spawnDeno, not spawnDenoRepl)", pid));
        return NULL;
    }
    if (dp->closed || dp->exited || !dp->repl) {
        rpc_reply_result(s, id, rpc_app_error("ENOENT", "the Deno REPL %u is %s", pid,
                                              dp->closed ? "closed" : "no longer running"));
        return NULL;
    }
    return dp;
}

static void m_repl_eval(struct session *s, json_t *id, json_t *params)
{
    json_t *code = json_object_get(params, "code");
    if (!json_is_string(code))
        return rpc_reply_rpc_error(s, id, -32602, "denoReplEval: \"code\" must be a string");
    struct deno_proc *dp = live_repl(s, id, params);
    if (!dp)
        return;
    if (json_string_length(code) > DENO_CODE_MAX)
        return rpc_reply_result(s, id, rpc_app_error("E2BIG", "denoReplEval: the code is %zu bytes, more than %u",
                                                     json_string_length(code), DENO_CODE_MAX));
    deno_repl_request(dp->repl, s, id, json_pack("{s:s, s:O}", "op", "eval", "code", code));
}

static void m_repl_call(struct session *s, json_t *id, json_t *params)
{
    json_t *fn = json_object_get(params, "fn");
    json_t *args = json_object_get(params, "args");
    if (!json_is_string(fn) || !json_is_array(args))
        return rpc_reply_rpc_error(s, id, -32602, "denoReplCall: \"fn\" must be a string and \"args\" an array");
    struct deno_proc *dp = live_repl(s, id, params);
    if (!dp)
        return;
    if (json_string_length(fn) > DENO_CODE_MAX)
        return rpc_reply_result(s, id, rpc_app_error("E2BIG", "denoReplCall: \"fn\" is more than %u bytes", DENO_CODE_MAX));
    deno_repl_request(dp->repl, s, id, json_pack("{s:s, s:O, s:O}", "op", "call", "fn", fn, "args", args));
}

/* denoReplClose: the channel closes, so the driver ends by itself (exit 0);
 * one that is stuck (an endless loop) is killed after CLOSE_GRACE_MS. */
static void m_repl_close(struct session *s, json_t *id, json_t *params)
{
    struct deno_proc *dp = live_repl(s, id, params);
    if (!dp)
        return;
    dp->closed = true;
    deno_repl_end(dp->repl, "ENOENT", "the Deno REPL was closed");
    dp->repl = NULL;
    dp->kill_at_ms = now_ms() + CLOSE_GRACE_MS;
    tick_start();
    rpc_reply_result(s, id, json_pack("{s:n}", "ok"));
}

const struct rpc_method deno_rpc_methods[] = {
    {"spawnDeno", m_spawn_deno},
    {"spawnDenoRepl", m_spawn_repl},
    {"denoHttpWait", m_http_wait},
    {"denoReplEval", m_repl_eval},
    {"denoReplCall", m_repl_call},
    {"denoReplClose", m_repl_close},
    {NULL, NULL},
};
