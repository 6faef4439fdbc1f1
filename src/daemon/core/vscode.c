/* VS Code in the browser (issue 8): the SDK's `vscode` RPC. code-server,
 * from the read-only vscode layer bound at /opt/hutch/vscode in every
 * sandbox (scripts/build-vscode-layer.sh), runs as app on 127.0.0.1:PORT
 * inside the sandbox; hutchd answers {pid, port, stdoutStreamId,
 * stderrStreamId} once it listens, and the SDK exposes that port with
 * POST /expose/vscode + exposeHttp (expose.c). The process is an ordinary
 * one for processWait / processKill. docs/expose.md. */
#include "daemon/core/vscode.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "daemon/core/rpc.h"
#include "daemon/net/net.h"
#include "proxy/policy.h"

#define LAUNCHER "/opt/hutch/vscode/bin/hutch-vscode"
#define START_TIMEOUT_MS (180 * 1000) /* extensions install before the server starts */
#define POLL_MS 100
#define TAIL_MAX 2048                 /* the last stderr bytes kept for an error message */
#define EXTENSIONS_MAX 32
#define SETTINGS_MAX (64 * 1024)      /* editorSettings, as JSON */
#define ENV_MAX 4096
#define DEFAULT_GALLERY "https://open-vsx.org/vscode/gallery"

/* A `vscode` call waiting for its server to listen. */
struct vstart {
    struct vstart *next;
    struct session *s;        /* NULL once the client left */
    json_t *rpc_id;
    char sandbox[32];
    uint32_t pid;             /* 0 until the agent answered the spawn */
    int port;
    bool extensions;          /* some were asked for */
    json_t *result;           /* the spawn's {"ok": ...}, sent when the port answers */
    uv_timer_t timer;
    int probe_fd;             /* a connect to the port in progress, else -1 */
    int64_t deadline_ms;
    size_t tail_len;
    char tail[TAIL_MAX];
};

static struct vstart *starts;

const char *vscode_layer_ready(void)
{
    static bool ready;
    const char *dir = g_daemon.cfg->vscode_layer;
    if (ready)
        return dir;
    char stamp[4200];
    struct stat st;
    snprintf(stamp, sizeof stamp, "%s/.complete", dir);
    ready = stat(stamp, &st) == 0; /* checked per sandbox until it is built (microseconds) */
    return ready ? dir : NULL;
}

/* ---- the start ---- */

static void on_start_closed(uv_handle_t *h)
{
    struct vstart *v = h->data;
    json_decref(v->rpc_id);
    json_decref(v->result);
    free(v);
}

static void start_free(struct vstart *v)
{
    if (v->probe_fd >= 0)
        close(v->probe_fd);
    v->probe_fd = -1;
    for (struct vstart **pp = &starts; *pp; pp = &(*pp)->next)
        if (*pp == v) {
            *pp = v->next;
            break;
        }
    uv_timer_stop(&v->timer);
    uv_close((uv_handle_t *)&v->timer, on_start_closed);
}

static void on_kill_reply(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *reply, void *ud)
{
    (void)sb, (void)s, (void)rpc_id, (void)reply, (void)ud;
}

static void kill_server(struct sandbox *sb, uint32_t pid)
{
    agent_call(sb, "kill", json_pack("{s:I, s:i}", "pid", (json_int_t)pid, "signal", SIGKILL), on_kill_reply, NULL,
               NULL, NULL);
}

/* The tail of what it wrote to stderr, printable ASCII only (hostile bytes
 * from the sandbox; jansson also wants valid UTF-8). */
static void tail_text(const struct vstart *v, char *out, size_t cap)
{
    size_t from = v->tail_len > 400 ? v->tail_len - 400 : 0, o = 0;
    while (from < v->tail_len && (v->tail[from] & 0xc0) == 0x80)
        from++;
    for (size_t i = from; i < v->tail_len && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)v->tail[i];
        out[o++] = c == '\n' || c == '\t' ? ' ' : (c >= 0x20 && c < 0x7f ? (char)c : '?');
    }
    while (o && out[o - 1] == ' ')
        o--;
    out[o] = 0;
}

static void fail(struct vstart *v, json_t *err)
{
    if (v->s)
        rpc_reply_result(v->s, v->rpc_id, err);
    else
        json_decref(err);
    start_free(v);
}

/* Starts a connect to 127.0.0.1:port inside the sandbox's network
 * namespace, as the ingress's upstream does: 1 connected, 0 refused, 2 in
 * progress (*fd kept: the caller polls it), -errno. */
static int probe_start(struct sandbox *sb, int port, int *fd)
{
    struct hx_err e = {0};
    *fd = net_sandbox_socket(sb, AF_INET, SOCK_STREAM, &e);
    if (*fd < 0)
        return *fd;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = connect(*fd, (struct sockaddr *)&a, sizeof a);
    if (r < 0 && errno == EINPROGRESS) /* the usual answer of a non-blocking connect, even on loopback */
        return 2;
    close(*fd);
    *fd = -1;
    return r == 0 ? 1 : 0;
}

/* An in-progress probe: 1 connected, 0 refused, 2 still in progress. */
static int probe_check(int *fd, int wait_ms)
{
    struct pollfd pfd = {.fd = *fd, .events = POLLOUT};
    int n = poll(&pfd, 1, wait_ms);
    if (n == 0)
        return 2;
    int err = 0;
    socklen_t el = sizeof err;
    if (n < 0 || getsockopt(*fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno ? errno : EIO;
    close(*fd);
    *fd = -1;
    return err == 0 ? 1 : 0;
}

static void on_tick(uv_timer_t *t)
{
    struct vstart *v = t->data;
    struct sandbox *sb = sandbox_find(v->sandbox);
    if (!sb || sb->state != SB_RUNNING)
        return fail(v, rpc_app_error("EIO", "the sandbox stopped while VS Code was starting"));
    if (!v->s) { /* the client left: nobody will have the URL */
        kill_server(sb, v->pid);
        return start_free(v);
    }
    struct proc *p = sandbox_proc(sb, v->pid);
    if (!p || p->exited) {
        char tail[420];
        tail_text(v, tail, sizeof tail);
        if (p && p->code == 3 && v->extensions) /* the launcher's "an extension did not install" */
            return fail(v, rpc_app_error("EXTENSION_INSTALL_FAILED", "%s", tail));
        return fail(v, rpc_app_error("EIO", "VS Code exited before it listened (exit code %d%s%s): %s",
                                     p ? p->code : -1, p && p->signal[0] ? ", " : "", p ? p->signal : "",
                                     tail[0] ? tail : "(no output)"));
    }
    int listening = 0;
    if (v->probe_fd >= 0) { /* the last tick's connect, 100 ms on */
        listening = probe_check(&v->probe_fd, 0);
        if (listening == 2) { /* a full backlog: try again */
            close(v->probe_fd);
            v->probe_fd = -1;
        }
    }
    if (v->probe_fd < 0 && listening != 1)
        listening = probe_start(sb, v->port, &v->probe_fd);
    if (listening == 1) {
        rpc_reply_result(v->s, v->rpc_id, v->result);
        v->result = NULL;
        fprintf(stderr, "hutchd: %s: VS Code (pid %u) listens on port %d\n", sb->id, v->pid, v->port);
        return start_free(v);
    }
    if (now_ms() >= v->deadline_ms) {
        kill_server(sb, v->pid);
        char tail[420];
        tail_text(v, tail, sizeof tail);
        return fail(v, rpc_app_error("ETIMEDOUT", "VS Code did not listen within %d s: %s", START_TIMEOUT_MS / 1000,
                                     tail[0] ? tail : "(no output)"));
    }
}

/* Refused before the agent was asked (too many processes, no agent): the
 * client already has the error. */
static void on_spawn_refused(void *ud)
{
    start_free(ud);
}

static void on_spawned(struct sandbox *sb, struct session *s, json_t *rpc_id, json_t *result, uint32_t pid, void *ud)
{
    (void)rpc_id;
    struct vstart *v = ud;
    if (!pid) {
        json_t *err = json_object_get(result, "error");
        const char *code = json_string_value(json_object_get(err, "code"));
        if (code && strcmp(code, "ENOENT") == 0) { /* no launcher in this sandbox */
            json_decref(result);
            result = rpc_app_error("ENOTSUP", "this sandbox has no VS Code layer: it started before the layer was "
                                              "built, or its root is a writable volume or has no place for "
                                              "/opt/hutch/vscode; create a new sandbox from the image");
        }
        return fail(v, result);
    }
    v->pid = pid;
    v->result = result;
    json_object_set_new(json_object_get(result, "ok"), "port", json_integer(v->port));
    if (!s) {
        kill_server(sb, pid);
        return start_free(v);
    }
    uv_timer_start(&v->timer, on_tick, POLL_MS, POLL_MS);
}

void vscode_on_stderr(struct sandbox *sb, uint32_t pid, const uint8_t *p, size_t n)
{
    for (struct vstart *v = starts; v; v = v->next) {
        if (v->pid != pid || strcmp(v->sandbox, sb->id) != 0)
            continue;
        if (n >= TAIL_MAX) {
            memcpy(v->tail, p + n - TAIL_MAX, TAIL_MAX);
            v->tail_len = TAIL_MAX;
        } else {
            if (v->tail_len + n > TAIL_MAX) {
                size_t drop = v->tail_len + n - TAIL_MAX;
                memmove(v->tail, v->tail + drop, v->tail_len - drop);
                v->tail_len -= drop;
            }
            memcpy(v->tail + v->tail_len, p, n);
            v->tail_len += n;
        }
        return;
    }
}

void vscode_session_closed(struct session *s)
{
    for (struct vstart *v = starts; v; v = v->next)
        if (v->s == s)
            v->s = NULL; /* the next tick kills the server */
}

/* ---- checking the call ---- */

/* "publisher.name" or "publisher.name@version", as Open VSX and the
 * Marketplace spell ids; never starts with '-' (it becomes an argument). */
static bool extension_id_ok(const char *x, size_t n)
{
    if (n == 0 || n > 200)
        return false;
    size_t dots = 0, i = 0;
    for (; i < n && x[i] != '@'; i++) {
        char c = x[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (c == '.') {
            if (i == 0 || x[i - 1] == '.' || dots++)
                return false;
        } else if (!alnum && !((c == '-' || c == '_') && i > 0 && x[i - 1] != '.')) {
            return false;
        }
    }
    if (dots != 1 || x[i - 1] == '.')
        return false;
    if (i < n) { /* @version */
        if (i + 1 == n)
            return false;
        for (size_t j = i + 1; j < n; j++) {
            char c = x[j];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' ||
                  c == '-' || c == '+'))
                return false;
        }
    }
    return true;
}

/* The gallery's host and port: EXTENSIONS_GALLERY's serviceUrl (code-server
 * reads that variable) or Open VSX. 0, or -EINVAL. */
static int gallery_of(json_t *env, char *host, size_t hcap, int *port, char *url, size_t ucap)
{
    const char *u = DEFAULT_GALLERY;
    json_t *g = NULL;
    const char *gv = json_string_value(json_object_get(env, "EXTENSIONS_GALLERY"));
    if (gv) {
        g = json_loads(gv, 0, NULL);
        u = json_string_value(json_object_get(g, "serviceUrl"));
    }
    int r = -EINVAL;
    if (!u)
        goto out;
    snprintf(url, ucap, "%s", u);
    bool tls = strncmp(u, "https://", 8) == 0;
    if (!tls && strncmp(u, "http://", 7) != 0)
        goto out;
    const char *h = u + (tls ? 8 : 7);
    size_t hl = strcspn(h, ":/?#");
    if (hl == 0 || hl >= hcap || h[0] == '[') /* IPv6 literals: not for a gallery */
        goto out;
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = tls ? 443 : 80;
    if (h[hl] == ':') {
        char *end;
        long p = strtol(h + hl + 1, &end, 10);
        if (p < 1 || p > 65535 || (*end && *end != '/'))
            goto out;
        *port = (int)p;
    }
    r = 0;
out:
    json_decref(g);
    return r;
}

/* Would hutch-proxy let the sandbox reach host:port? The same allowNet
 * rules (proxy/policy.c), asked before anything runs, so the caller gets
 * hutch's own refusal rather than a download that times out. */
static bool allow_net_permits(json_t *allow_net, const char *host, int port)
{
    if (!allow_net || json_is_null(allow_net))
        return true;
    if (strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0)
        return true; /* the sandbox's own loopback: never through the proxy */
    struct policy pol = {.unrestricted = false};
    pol.rules = calloc(json_array_size(allow_net) + 1, sizeof *pol.rules);
    if (!pol.rules)
        return false;
    size_t i;
    json_t *v;
    char why[128];
    json_array_foreach(allow_net, i, v) {
        if (json_is_string(v) &&
            policy_parse_entry(json_string_value(v), json_string_length(v), &pol.rules[pol.n], why, sizeof why) == 0)
            pol.n++;
    }
    bool ok = false;
    uint8_t a[16];
    char name[POLICY_NAME_MAX + 1];
    if (inet_pton(AF_INET, host, a) == 1)
        ok = policy_allows_addr(&pol, AF_INET, a, (uint16_t)port);
    else if (policy_name_normalize(host, strlen(host), name) >= 0)
        ok = policy_allows_name(&pol, name, (uint16_t)port);
    free(pol.rules);
    return ok;
}

/* A free port inside the sandbox for code-server: random in 20000..59999
 * (probed: nothing answers there yet). */
static int pick_port(struct sandbox *sb)
{
    for (int i = 0; i < 16; i++) {
        uint16_t r;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
            return -EIO;
        int port = 20000 + r % 40000, fd;
        int l = probe_start(sb, port, &fd);
        if (l == 2)
            l = probe_check(&fd, 50); /* loopback: answered at once unless a backlog is full */
        if (fd >= 0)
            close(fd);
        if (l < 0)
            return l;
        if (l == 0)
            return port;
    }
    return -EADDRINUSE;
}

static void m_vscode(struct session *s, json_t *id, json_t *params)
{
    struct sandbox *sb = s->sb;
    json_t *path = json_object_get(params, "path");
    json_t *env = json_object_get(params, "env");
    json_t *exts = json_object_get(params, "extensions");
    json_t *settings = json_object_get(params, "editorSettings");
    json_t *stop = json_object_get(params, "disableStopButton");
    json_t *preview = json_object_get(params, "preview");
    if (!json_is_string(path) || json_string_length(path) == 0 || json_string_length(path) > 4096 ||
        memchr(json_string_value(path), 0, json_string_length(path)))
        return rpc_reply_rpc_error(s, id, -32602, "vscode: \"path\" must be a non-empty string without NUL bytes");
    if (strcmp(json_string_value(path), "/") == 0)
        return rpc_reply_result(s, id, rpc_app_error("EINVAL", "vscode: \"path\" cannot be the root directory"));
    if (json_string_value(path)[0] == '-') /* it is code-server's last argument */
        return rpc_reply_result(s, id, rpc_app_error("EINVAL", "vscode: \"path\" cannot start with '-' (write ./%s)",
                                                     json_string_value(path)));
    if (env && !json_is_null(env) && (!json_is_object(env) || json_object_size(env) > ENV_MAX))
        return rpc_reply_rpc_error(s, id, -32602, "vscode: \"env\" must be an object of strings");
    const char *k;
    json_t *v;
    json_object_foreach(env, k, v) if (!json_is_string(v) || !*k || strchr(k, '=') ||
                                       memchr(json_string_value(v), 0, json_string_length(v)))
        return rpc_reply_rpc_error(s, id, -32602, "vscode: env \"%.64s\" must be a string (names without '=')", k);
    if (exts && !json_is_null(exts) && (!json_is_array(exts) || json_array_size(exts) > EXTENSIONS_MAX))
        return rpc_reply_rpc_error(s, id, -32602, "vscode: \"extensions\" must be an array of at most %d ids",
                                   EXTENSIONS_MAX);
    size_t i;
    json_array_foreach(exts, i, v) if (!json_is_string(v) || !extension_id_ok(json_string_value(v), json_string_length(v)))
        return rpc_reply_result(s, id, rpc_app_error("EINVAL", "vscode: extensions[%zu] is not an extension id "
                                                     "(\"publisher.name\" or \"publisher.name@version\")", i));
    if (settings && !json_is_null(settings) && !json_is_object(settings))
        return rpc_reply_rpc_error(s, id, -32602, "vscode: \"editorSettings\" must be an object");
    if (stop && !json_is_null(stop) && !json_is_boolean(stop))
        return rpc_reply_rpc_error(s, id, -32602, "vscode: \"disableStopButton\" must be a boolean");
    if (preview && !json_is_null(preview) && !json_is_string(preview))
        return rpc_reply_rpc_error(s, id, -32602, "vscode: \"preview\" must be a string");
    if (!vscode_layer_ready())
        return rpc_reply_result(s, id, rpc_app_error("ENOTSUP", "VS Code is not installed on this host: build its "
                                                     "layer with `make vscode-layer`, then create a new sandbox"));
    size_t n_exts = json_is_array(exts) ? json_array_size(exts) : 0;
    if (n_exts) {
        char host[256], url[300];
        int gport;
        if (gallery_of(env, host, sizeof host, &gport, url, sizeof url) < 0)
            return rpc_reply_result(s, id, rpc_app_error("EINVAL", "vscode: EXTENSIONS_GALLERY must be JSON with an "
                                                         "http(s) \"serviceUrl\""));
        if (!allow_net_permits(sb->allow_net, host, gport))
            return rpc_reply_result(s, id, rpc_app_error(
                "EPERM", "vscode: cannot install extensions: this sandbox's allowNet does not allow %s:%d, the "
                "extension gallery (%s); add \"%s\" to allowNet or ask for no extensions", host, gport, url, host));
    }
    /* The user settings: telemetry and update checks off, then the caller's. */
    json_t *all = json_pack("{s:s, s:s, s:b, s:b, s:b, s:s}", "telemetry.telemetryLevel", "off", "update.mode", "none",
                            "extensions.autoCheckUpdates", 0, "extensions.autoUpdate", 0,
                            "workbench.enableExperiments", 0, "workbench.startupEditor", "none");
    if (json_is_object(settings))
        json_object_update(all, settings);
    char *stext = json_dumps(all, JSON_COMPACT);
    json_decref(all);
    if (!stext || strlen(stext) > SETTINGS_MAX) {
        free(stext);
        return rpc_reply_result(s, id, rpc_app_error("E2BIG", "vscode: \"editorSettings\" is larger than %d bytes as "
                                                     "JSON", SETTINGS_MAX));
    }
    char extlist[EXTENSIONS_MAX * 202] = "";
    size_t el = 0;
    json_array_foreach(exts, i, v) el += (size_t)snprintf(extlist + el, sizeof extlist - el, "%s\n", json_string_value(v));
    int port = pick_port(sb);
    if (port < 0) {
        free(stext);
        return rpc_reply_result(s, id, rpc_app_error("EIO", "vscode: no free port in the sandbox: %s", strerror(-port)));
    }
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%d", port);
    json_t *penv = json_is_object(env) ? json_deep_copy(env) : json_object();
    json_object_set_new(penv, "HUTCH_VSCODE_SETTINGS", json_string(stext));
    json_object_set_new(penv, "HUTCH_VSCODE_EXTENSIONS", json_string(extlist));
    free(stext);
    json_t *ap = json_pack("{s:s, s:[O, s], s:o, s:b, s:n, s:b, s:b, s:b, s:i}", "command", LAUNCHER, "args", path,
                           portstr, "env", penv, "clearEnv", 0, "cwd", "stdin", 0, "stdout", 1, "stderr", 1, "uid", 1000);
    struct vstart *vs = calloc(1, sizeof *vs);
    if (!vs || !ap) {
        free(vs);
        json_decref(ap);
        return rpc_reply_rpc_error(s, id, -32603, "out of memory");
    }
    vs->s = s;
    vs->rpc_id = json_incref(id);
    snprintf(vs->sandbox, sizeof vs->sandbox, "%s", sb->id);
    vs->port = port;
    vs->extensions = n_exts > 0;
    vs->probe_fd = -1;
    vs->deadline_ms = now_ms() + START_TIMEOUT_MS;
    uv_timer_init(g_daemon.loop, &vs->timer);
    vs->timer.data = vs;
    vs->next = starts;
    starts = vs;
    /* the shared spawn path; on_spawned answers the client once code-server listens */
    const struct rpc_spawn_req req = {.stdin_stream = -1, .out = {true, true}, .pipe = {true, true}};
    const struct rpc_spawn_hooks h = {.answer = on_spawned, .failed = on_spawn_refused, .ud = vs};
    rpc_spawn_start(s, id, ap, &req, &h);
}

const struct rpc_method vscode_rpc_methods[] = {
    {"vscode", m_vscode},
    {NULL, NULL},
};
