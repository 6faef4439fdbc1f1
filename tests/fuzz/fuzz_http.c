/* hutchd's HTTP/1.1 server and WebSocket framing (src/daemon/api/http.c,
 * ws.c) end to end, with no seam: a real http_server listens on a unix
 * socket in a temp dir, each input is written by a client in pieces (cut at
 * "\n--\n"), then the client half-closes and reads until hutchd closes. The
 * request callback uses the request like routes.c does (headers, query,
 * body) and upgrades WebSocket requests; text messages are echoed, so
 * frames after a valid upgrade head reach ws_rx.c and ws.c. */
#include "fuzz.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>
#include "daemon/api/http.h"
#include "daemon/api/ws.h"

static uv_loop_t *g_loop;
static struct http_server *g_srv;
static char g_path[108];

static void on_text(struct ws_conn *w, const char *data, size_t len, void *ud)
{
    if (len == 5 && memcmp(data, "close", 5) == 0)
        ws_close(w, 1000, "bye");
    else
        ws_send_text(w, data, len);
}
static void on_close(struct ws_conn *w, void *ud) {}
static void on_drain(struct ws_conn *w, void *ud) {}
static const struct ws_handlers handlers = {on_text, on_close, on_drain};

static void each(const char *k, const char *v, void *ud)
{
    FUZZ_CHECK(k && v);
    *(size_t *)ud += strlen(k) + strlen(v);
}

/* hutch's raw file channel's shape (rest_files.c): PUT /raw leaves its body
 * to the app, which takes the socket over and reads what came with the head. */
static bool want_raw(const char *method, const char *url)
{
    return strcmp(method, "PUT") == 0 && strncmp(url, "/raw", 4) == 0;
}

static void on_request(struct http_conn *c, const struct http_request *r, void *ud)
{
    FUZZ_CHECK(r->method && r->path && r->query && r->body);
    if (r->raw_body) {
        FUZZ_CHECK(want_raw(r->method, r->path) && r->body_len == 0);
        uint8_t *pending = NULL;
        size_t plen = 0;
        int fd = http_conn_detach(c, &pending, &plen);
        if (fd >= 0)
            close(fd);
        char msg[64];
        int n = snprintf(msg, sizeof msg, "%zu of %llu", plen, (unsigned long long)r->content_length);
        free(pending);
        http_respond(c, 200, "text/plain", NULL, msg, (size_t)n);
        return;
    }
    if (r->websocket) {
        http_upgrade_websocket(c, "x-fuzz: 1\r\n", &handlers, NULL);
        return;
    }
    const char *auth = http_header_get(r, "authorization");
    const char *conn = http_header_get(r, "connection");
    if (conn)
        (void)http_header_has_token(conn, "keep-alive");
    char *v = http_query_get(r, "labels[a]");
    size_t sum = 0;
    http_query_each(r, each, &sum);
    char *d = http_pct_decode(r->path, strlen(r->path), false);
    if (strcmp(r->method, "POST") == 0 && r->body_len) {
        json_error_t jerr;
        json_t *j = json_loadb((const char *)r->body, r->body_len, 0, &jerr);
        http_respond_json(c, j ? 200 : 400, j ? j : json_pack("{s:s}", "error", jerr.text));
    } else if (auth) {
        http_respond_error(c, 401, "UNAUTHORIZED", "bad token %.20s", auth);
    } else {
        http_respond(c, 200, "text/plain", NULL, d ? d : "", d ? strlen(d) : 0);
    }
    free(v);
    free(d);
}

static char g_dir[64];
static void remove_socket(void)
{
    unlink(g_path);
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    signal(SIGPIPE, SIG_IGN);
    g_loop = uv_default_loop();
    char dir[] = "/tmp/hutch-fuzz-http.XXXXXX";
    if (!mkdtemp(dir))
        abort();
    snprintf(g_path, sizeof g_path, "%s/s", dir);
    snprintf(g_dir, sizeof g_dir, "%s", dir);
    atexit(remove_socket);
    struct hx_err e = {0};
    if (http_server_listen_unix(g_loop, g_path, on_request, NULL, &g_srv, &e) < 0) {
        fprintf(stderr, "fuzz_http: %s\n", e.msg);
        abort();
    }
    ws_set_idle_timeout(0);
    http_server_set_raw_body(g_srv, want_raw);
    return 0;
}

static bool drain(int fd)
{
    char buf[65536];
    for (;;) {
        ssize_t k = read(fd, buf, sizeof buf);
        if (k > 0)
            continue;
        return k == 0 || (errno != EAGAIN && errno != EINTR);  /* true: hutchd closed */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, g_path, strlen(g_path) + 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        abort();
    fcntl(fd, F_SETFL, O_NONBLOCK);
    struct fuzz_in in = {data, size};
    const uint8_t *p;
    size_t n;
    bool closed = false;
    while (!closed && fuzz_part(&in, &p, &n)) {
        while (n && !closed) {
            ssize_t k = write(fd, p, n);
            if (k > 0) {
                p += k;
                n -= (size_t)k;
            } else if (k < 0 && errno != EAGAIN) {
                closed = true;  /* hutchd already closed (e.g. a 400) */
            }
            uv_run(g_loop, UV_RUN_NOWAIT);
            closed |= drain(fd);
        }
        uv_run(g_loop, UV_RUN_NOWAIT);
    }
    shutdown(fd, SHUT_WR);
    /* hutchd closes on our EOF; bounded, in case it waits for something */
    for (int i = 0; i < 2000 && !closed; i++) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        uv_run(g_loop, UV_RUN_NOWAIT);
        poll(&pfd, 1, i < 50 ? 0 : 1);
        closed = drain(fd);
    }
    FUZZ_CHECK(closed);  /* a connection hutchd never closes after EOF is a leak */
    close(fd);
    for (int i = 0; i < 4; i++)
        uv_run(g_loop, UV_RUN_NOWAIT);  /* close callbacks: the conn is freed */
    return 0;
}
