/* Unit tests for the API's HTTP/1.1 server and WebSocket layer: the pure helpers, and the server
 * driven on loopback by a blocking client socket while the test spins the loop. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "daemon/api/http.h"
#include "daemon/api/ws.h"

/* ---------- pure helpers ---------- */

static struct http_request req_with_query(const char *q)
{
    struct http_request r = { .method = "GET", .path = "/", .query = q };
    return r;
}

static void test_query_get_decodes_percent_and_plus(void **state)
{
    struct http_request r = req_with_query("a=1&path=%2Fhome%2Fapp%20x&q=a+b&empty=&flag&enc%41=z");
    char *v = http_query_get(&r, "path");
    assert_string_equal(v, "/home/app x");
    free(v);
    v = http_query_get(&r, "q");
    assert_string_equal(v, "a b");
    free(v);
    v = http_query_get(&r, "empty");
    assert_string_equal(v, "");
    free(v);
    v = http_query_get(&r, "flag");
    assert_string_equal(v, "");
    free(v);
    v = http_query_get(&r, "encA");  /* names are decoded too */
    assert_string_equal(v, "z");
    free(v);
    assert_null(http_query_get(&r, "missing"));
}

static void test_query_get_keeps_bad_escapes_and_nul_literal(void **state)
{
    struct http_request r = req_with_query("a=%zz%4&b=x%00y&c=%");
    char *v = http_query_get(&r, "a");
    assert_string_equal(v, "%zz%4");
    free(v);
    v = http_query_get(&r, "b");
    assert_string_equal(v, "x%00y");  /* never cut short by an embedded NUL */
    free(v);
    v = http_query_get(&r, "c");
    assert_string_equal(v, "%");
    free(v);
}

static void test_query_get_on_empty_query_is_null(void **state)
{
    struct http_request r = req_with_query("");
    assert_null(http_query_get(&r, "a"));
    r = req_with_query("&&&");
    assert_null(http_query_get(&r, "a"));
}

static void collect(const char *k, const char *v, void *ud)
{
    char *acc = ud;
    strcat(acc, k);
    strcat(acc, "=");
    strcat(acc, v);
    strcat(acc, ";");
}

static void test_query_each_visits_all_in_order(void **state)
{
    struct http_request r = req_with_query("x=1&y=%3D&&z");
    char acc[128] = "";
    http_query_each(&r, collect, acc);
    assert_string_equal(acc, "x=1;y==;z=;");
}

static void test_header_get_is_case_insensitive(void **state)
{
    struct http_header h[] = { { "Content-Type", "application/json" }, { "X-Deno-Sandbox-Config", "e30=" } };
    struct http_request r = { .headers = h, .n_headers = 2 };
    assert_string_equal(http_header_get(&r, "content-type"), "application/json");
    assert_string_equal(http_header_get(&r, "x-deno-sandbox-config"), "e30=");
    assert_null(http_header_get(&r, "authorization"));
}

static void test_header_token_matching(void **state)
{
    assert_true(http_header_has_token("keep-alive, Upgrade", "upgrade"));
    assert_true(http_header_has_token("websocket", "WebSocket"));
    assert_false(http_header_has_token("upgrades", "upgrade"));
    assert_false(http_header_has_token("", "upgrade"));
    assert_false(http_header_has_token(NULL, "upgrade"));
}

static void test_accept_key_matches_rfc6455_example(void **state)
{
    char out[29];
    ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_websocket_request_needs_all_handshake_headers(void **state)
{
    struct http_header h[] = {
        { "Upgrade", "websocket" },
        { "Connection", "Upgrade" },
        { "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==" },
        { "Sec-WebSocket-Version", "13" },
    };
    struct http_request r = { .method = "GET", .headers = h, .n_headers = 4 };
    assert_true(ws_request_valid(&r));
    r.method = "POST";
    assert_false(ws_request_valid(&r));
    r.method = "GET";
    h[3].value = "8";
    assert_false(ws_request_valid(&r));
    h[3].value = "13";
    h[2].value = "short==";
    assert_false(ws_request_valid(&r));
    h[2].value = "dGhlIHNhbXBsZSBub25jZQ==";
    r.n_headers = 3;  /* no version */
    assert_false(ws_request_valid(&r));
}

/* ---------- server on loopback ---------- */

struct fixture {
    uv_loop_t loop;
    struct http_server *srv;
    struct http_conn *held;   /* a request the handler did not answer yet */
    int aborts;
    int ws_closes;
    int requests;
};

static struct fixture *fx;

static void on_hold_abort(struct http_conn *c, void *ud)
{
    fx->aborts++;
}

static void ws_echo_text(struct ws_conn *w, const char *data, size_t len, void *ud)
{
    ws_send_text(w, data, len);
}

static void ws_count_close(struct ws_conn *w, void *ud)
{
    fx->ws_closes++;
}

static const struct ws_handlers echo_handlers = { ws_echo_text, ws_count_close, NULL };

static void handle(struct http_conn *c, const struct http_request *req, void *ud)
{
    fx->requests++;
    if (strcmp(req->path, "/echo") == 0) {
        http_respond(c, 200, "application/octet-stream", "X-Test: 1\r\n", req->body, req->body_len);
    } else if (strcmp(req->path, "/json") == 0) {
        char *v = http_query_get(req, "v");
        http_respond_json(c, 200, json_pack("{s:s}", "v", v ? v : ""));
        free(v);
    } else if (strcmp(req->path, "/peer") == 0) {
        const char *who = req->unix_peer ? "unix" : "tcp";
        http_respond(c, 200, "text/plain", NULL, who, strlen(who));
    } else if (strcmp(req->path, "/hold") == 0) {
        fx->held = c;
        http_conn_on_abort(c, on_hold_abort, NULL);
    } else if (strcmp(req->path, "/ws") == 0) {
        http_upgrade_websocket(c, "x-deno-sandbox-id: sbx_test\r\n", &echo_handlers, NULL);
    } else {
        http_respond_error(c, 404, "NOT_FOUND", "no route for %s", req->path);
    }
}

static int setup(void **state)
{
    fx = calloc(1, sizeof(*fx));
    uv_loop_init(&fx->loop);
    struct hx_err e = { 0 };
    int r = http_server_listen_tcp(&fx->loop, "127.0.0.1", 0, handle, NULL, &fx->srv, &e);
    if (r < 0) {
        fprintf(stderr, "listen: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    if (fx->held) {
        http_respond(fx->held, 200, NULL, NULL, NULL, 0);
        fx->held = NULL;
    }
    http_server_close(fx->srv);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx);
    return 0;
}

static int client_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)http_server_port(fx->srv)) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EAGAIN) {
            uv_run(&fx->loop, UV_RUN_NOWAIT);
            continue;
        }
        assert_true(w > 0);
        c += w;
        n -= (size_t)w;
    }
}

static void spin(int ms)
{
    for (int i = 0; i < ms; i++) {
        uv_run(&fx->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

/* Runs the loop until want bytes arrived, or EOF (*eof set), or 3 s. Returns the byte count. */
static size_t recv_until(int fd, char *buf, size_t cap, size_t want, bool *eof)
{
    size_t got = 0;
    *eof = false;
    for (int i = 0; i < 3000 && got < want; i++) {
        uv_run(&fx->loop, UV_RUN_NOWAIT);
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 1) <= 0)
            continue;
        ssize_t r = recv(fd, buf + got, cap - got - 1, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
            *eof = true;
            break;
        }
        if (r > 0)
            got += (size_t)r;
    }
    buf[got] = '\0';
    return got;
}

/* Reads one full HTTP response (head + Content-Length body). */
static size_t recv_response(int fd, char *buf, size_t cap, bool *eof)
{
    size_t got = 0;
    *eof = false;
    for (int i = 0; i < 3000; i++) {
        char *end = strstr(buf, "\r\n\r\n");
        if (got && end) {
            const char *cl = strcasestr(buf, "content-length: ");
            size_t need = (size_t)(end + 4 - buf) + (cl && cl < end ? strtoul(cl + 16, NULL, 10) : 0);
            if (got >= need)
                return got;
        }
        uv_run(&fx->loop, UV_RUN_NOWAIT);
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 1) <= 0)
            continue;
        ssize_t r = recv(fd, buf + got, cap - got - 1, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
            *eof = true;
            return got;
        }
        if (r > 0) {
            got += (size_t)r;
            buf[got] = '\0';
        }
    }
    return got;
}

static bool peer_closed(int fd)
{
    char b[256];
    bool eof;
    recv_until(fd, b, sizeof(b), sizeof(b), &eof);
    return eof;
}

static void test_keep_alive_serves_two_requests_on_one_connection(void **state)
{
    int fd = client_connect();
    char buf[4096] = "";
    bool eof;
    const char *r1 = "GET /json?v=a%20b HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, r1, strlen(r1));
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(buf, "{\"v\":\"a b\"}"));
    assert_null(strstr(buf, "Connection: close"));
    memset(buf, 0, sizeof(buf));
    const char *r2 = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    send_all(fd, r2, strlen(r2));
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "X-Test: 1\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\nhello"));
    assert_int_equal(fx->requests, 2);
    close(fd);
}

/* The request head and a large body are let go once each response is out
 * (an idle conn holds neither): the next requests on the conn parse into
 * fresh ones and see only their own bytes. */
static void test_keep_alive_requests_after_a_large_body_see_only_their_own(void **state)
{
    int fd = client_connect();
    static char buf[65536];
    bool eof;
    static char big[20000 + 128];
    int n = snprintf(big, sizeof(big), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n");
    memset(big + n, 'a', 20000);
    send_all(fd, big, (size_t)n + 20000);
    size_t got = recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "Content-Length: 20000\r\n"));
    char *body = strstr(buf, "\r\n\r\n") + 4;
    assert_int_equal(got - (size_t)(body - buf), 20000);
    assert_int_equal(strspn(body, "a"), 20000);
    memset(buf, 0, sizeof(buf));
    const char *r2 = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz";
    send_all(fd, r2, strlen(r2));
    got = recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "Content-Length: 3\r\n"));
    assert_string_equal(strstr(buf, "\r\n\r\n") + 4, "xyz");
    memset(buf, 0, sizeof(buf));
    const char *r3 = "GET /json?v=after HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, r3, strlen(r3));
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "{\"v\":\"after\"}"));
    assert_false(eof);
    assert_int_equal(fx->requests, 3);
    close(fd);
}

static void test_pipelined_requests_are_answered_in_order(void **state)
{
    int fd = client_connect();
    const char *r = "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\noneGET /nope HTTP/1.1\r\n\r\n"
                    "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthree\r\n0\r\n\r\n";
    send_all(fd, r, strlen(r));
    char buf[8192] = "";
    bool eof;
    recv_until(fd, buf, sizeof(buf), 100000, &eof);  /* all of it, until the 3 s end */
    char *a = strstr(buf, "\r\n\r\none");
    char *b = strstr(buf, "404 Not Found");
    char *c = strstr(buf, "\r\n\r\nthree");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_true(a < b && b < c);
    close(fd);
}

static void test_malformed_request_gets_400_json_and_close(void **state)
{
    int fd = client_connect();
    const char *r = "GET / HTTP/1.1\r\nBad Header\r\n\r\n";
    send_all(fd, r, strlen(r));
    char buf[4096] = "";
    bool eof;
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "HTTP/1.1 400 Bad Request\r\n"));
    assert_non_null(strstr(buf, "Connection: close\r\n"));
    assert_non_null(strstr(buf, "\"code\":\"BAD_REQUEST\""));
    assert_true(peer_closed(fd));
    assert_int_equal(fx->requests, 0);
    close(fd);
}

static void test_content_length_with_chunked_is_refused(void **state)
{
    /* Both framings at once is the classic request-smuggling shape. */
    int fd = client_connect();
    const char *r = "POST /echo HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    send_all(fd, r, strlen(r));
    char buf[4096] = "";
    bool eof;
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "HTTP/1.1 400 "));
    assert_int_equal(fx->requests, 0);
    close(fd);
}

static void test_body_over_limit_is_refused_with_413(void **state)
{
    int fd = client_connect();
    const char *r = "POST /echo HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n";
    send_all(fd, r, strlen(r));
    char buf[4096] = "";
    bool eof;
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "HTTP/1.1 413 "));
    assert_true(peer_closed(fd));
    close(fd);
}

static void test_chunked_body_over_limit_is_refused_with_413(void **state)
{
    int fd = client_connect();
    const char *r = "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    send_all(fd, r, strlen(r));
    static char chunk[70000];
    memset(chunk, 'x', sizeof(chunk));
    char hdr[32];
    for (int i = 0; i < 16; i++) {  /* 16 * 65536 = 1 MiB, then one more byte */
        snprintf(hdr, sizeof(hdr), "10000\r\n");
        send_all(fd, hdr, strlen(hdr));
        send_all(fd, chunk, 65536);
        send_all(fd, "\r\n", 2);
    }
    send_all(fd, "1\r\nx\r\n", 6);
    char buf[4096] = "";
    bool eof;
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "HTTP/1.1 413 "));
    assert_int_equal(fx->requests, 0);
    close(fd);
}

static void test_too_many_headers_get_431(void **state)
{
    int fd = client_connect();
    send_all(fd, "GET / HTTP/1.1\r\n", 16);
    for (int i = 0; i < HTTP_MAX_HEADERS + 1; i++) {
        char h[32];
        snprintf(h, sizeof(h), "X-H%d: v\r\n", i);
        send_all(fd, h, strlen(h));
    }
    send_all(fd, "\r\n", 2);
    char buf[4096] = "";
    bool eof;
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "HTTP/1.1 431 "));
    close(fd);
}

static void test_head_over_16k_gets_431(void **state)
{
    int fd = client_connect();
    static char big[HTTP_MAX_HEAD + 100];
    memset(big, 'a', sizeof(big));
    send_all(fd, "GET /", 5);
    send_all(fd, big, sizeof(big));
    char buf[4096] = "";
    bool eof;
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "HTTP/1.1 431 "));
    close(fd);
}

static void test_client_gone_before_response_is_reported_and_safe(void **state)
{
    int fd = client_connect();
    const char *r = "GET /hold HTTP/1.1\r\n\r\n";
    send_all(fd, r, strlen(r));
    for (int i = 0; i < 2000 && !fx->held; i++)
        spin(1);
    assert_non_null(fx->held);
    close(fd);
    for (int i = 0; i < 2000 && !fx->aborts; i++)
        spin(1);
    assert_int_equal(fx->aborts, 1);
    /* The late response only releases the conn (ASan checks the rest). */
    http_respond(fx->held, 200, NULL, NULL, "late", 4);
    fx->held = NULL;
}

static void test_disconnects_mid_headers_and_mid_body_are_harmless(void **state)
{
    const char *parts[] = { "GET /json HTTP/1.1\r\nHo", "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nab" };
    for (size_t i = 0; i < 2; i++) {
        int fd = client_connect();
        send_all(fd, parts[i], strlen(parts[i]));
        spin(20);
        close(fd);
        spin(20);
    }
    assert_int_equal(fx->requests, 0);
}

/* A masked client frame (RFC 6455 5.3: client frames must be masked). */
static size_t ws_frame(uint8_t *out, uint8_t opcode, const void *payload, size_t n)
{
    const uint8_t mask[4] = { 1, 2, 3, 4 };
    size_t o = 0;
    out[o++] = 0x80 | opcode;
    if (n < 126) {
        out[o++] = 0x80 | (uint8_t)n;
    } else {
        out[o++] = 0x80 | 126;
        out[o++] = (uint8_t)(n >> 8);
        out[o++] = (uint8_t)n;
    }
    memcpy(out + o, mask, 4);
    o += 4;
    for (size_t i = 0; i < n; i++)
        out[o + i] = ((const uint8_t *)payload)[i] ^ mask[i % 4];
    return o + n;
}

static int ws_connect(void)
{
    int fd = client_connect();
    const char *hs = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    send_all(fd, hs, strlen(hs));
    char buf[1024] = "";
    bool eof;
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "HTTP/1.1 101 Switching Protocols\r\n"));
    assert_non_null(strstr(buf, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert_non_null(strstr(buf, "x-deno-sandbox-id: sbx_test\r\n"));
    return fd;
}

static void test_websocket_text_ping_gets_pong_and_messages_echo(void **state)
{
    int fd = ws_connect();
    uint8_t f[256];
    size_t n = ws_frame(f, 0x1, "ping", 4);
    send_all(fd, f, n);
    char buf[256];
    bool eof;
    size_t got = recv_until(fd, buf, sizeof(buf), 6, &eof);
    assert_int_equal(got, 6);
    assert_memory_equal(buf, "\x81\x04pong", 6);
    n = ws_frame(f, 0x1, "{\"id\":1}", 8);
    send_all(fd, f, n);
    got = recv_until(fd, buf, sizeof(buf), 10, &eof);
    assert_int_equal(got, 10);
    assert_memory_equal(buf, "\x81\x08{\"id\":1}", 10);
    /* A protocol ping frame gets a pong frame with the same payload. */
    n = ws_frame(f, 0x9, "hi", 2);
    send_all(fd, f, n);
    got = recv_until(fd, buf, sizeof(buf), 4, &eof);
    assert_int_equal(got, 4);
    assert_memory_equal(buf, "\x8a\x02hi", 4);
    close(fd);
    for (int i = 0; i < 2000 && !fx->ws_closes; i++)
        spin(1);
    assert_int_equal(fx->ws_closes, 1);
}

static void test_websocket_binary_message_is_closed_with_1003(void **state)
{
    int fd = ws_connect();
    uint8_t f[64];
    size_t n = ws_frame(f, 0x2, "\x01\x02", 2);
    send_all(fd, f, n);
    char buf[256];
    bool eof;
    size_t got = recv_until(fd, buf, sizeof(buf), 4, &eof);
    assert_true(got >= 4);
    assert_int_equal((uint8_t)buf[0], 0x88);
    assert_int_equal(((uint8_t)buf[2] << 8) | (uint8_t)buf[3], 1003);
    /* Answer the close: the server then ends the connection. */
    n = ws_frame(f, 0x8, "\x03\xeb", 2);
    send_all(fd, f, n);
    assert_true(peer_closed(fd));
    close(fd);
    spin(10);
    assert_int_equal(fx->ws_closes, 1);
}

static void test_websocket_upgrade_without_key_is_a_normal_request(void **state)
{
    int fd = client_connect();
    const char *hs = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    send_all(fd, hs, strlen(hs));
    char buf[1024] = "";
    bool eof;
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "HTTP/1.1 400 "));
    close(fd);
}

static void test_unix_socket_is_mode_0600_and_flags_requests(void **state)
{
    char path[] = "/tmp/hutch-test-http-XXXXXX";
    assert_non_null(mkdtemp(path));
    char sock[96];
    snprintf(sock, sizeof(sock), "%s/api.sock", path);
    struct http_server *us = NULL;
    struct hx_err e = { 0 };
    assert_int_equal(http_server_listen_unix(&fx->loop, sock, handle, NULL, &us, &e), 0);
    struct stat st;
    assert_int_equal(stat(sock, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    const char *r = "GET /peer HTTP/1.0\r\n\r\n";  /* 1.0 without keep-alive: closed after */
    send_all(fd, r, strlen(r));
    char buf[1024] = "";
    bool eof;
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "\r\n\r\nunix"));
    assert_non_null(strstr(buf, "Connection: close\r\n"));
    assert_true(peer_closed(fd));
    close(fd);
    fd = client_connect();
    send_all(fd, r, strlen(r));
    memset(buf, 0, sizeof(buf));
    recv_response(fd, buf, sizeof(buf), &eof);
    assert_non_null(strstr(buf, "\r\n\r\ntcp"));
    close(fd);
    http_server_close(us);
    spin(5);
    assert_int_not_equal(stat(sock, &st), 0);  /* removed on close */
    rmdir(path);
}

static void test_listen_refuses_bad_address(void **state)
{
    struct http_server *s = NULL;
    struct hx_err e = { 0 };
    assert_true(http_server_listen_tcp(&fx->loop, "not-an-ip", 0, handle, NULL, &s, &e) < 0);
    assert_int_equal(e.code, EINVAL);
    assert_null(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_get_decodes_percent_and_plus),
        cmocka_unit_test(test_query_get_keeps_bad_escapes_and_nul_literal),
        cmocka_unit_test(test_query_get_on_empty_query_is_null),
        cmocka_unit_test(test_query_each_visits_all_in_order),
        cmocka_unit_test(test_header_get_is_case_insensitive),
        cmocka_unit_test(test_header_token_matching),
        cmocka_unit_test(test_accept_key_matches_rfc6455_example),
        cmocka_unit_test(test_websocket_request_needs_all_handshake_headers),
        cmocka_unit_test_setup_teardown(test_keep_alive_serves_two_requests_on_one_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_requests_after_a_large_body_see_only_their_own, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_requests_are_answered_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_request_gets_400_json_and_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_content_length_with_chunked_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_over_limit_is_refused_with_413, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_body_over_limit_is_refused_with_413, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_many_headers_get_431, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_over_16k_gets_431, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_gone_before_response_is_reported_and_safe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disconnects_mid_headers_and_mid_body_are_harmless, setup, teardown),
        cmocka_unit_test_setup_teardown(test_websocket_text_ping_gets_pong_and_messages_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_websocket_binary_message_is_closed_with_1003, setup, teardown),
        cmocka_unit_test_setup_teardown(test_websocket_upgrade_without_key_is_a_normal_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unix_socket_is_mode_0600_and_flags_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listen_refuses_bad_address, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
