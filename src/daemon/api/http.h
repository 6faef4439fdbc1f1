/* HTTP/1.1 server for hutchd's API on libuv: bounded request parsing (http-parser), one request
 * callback, keep-alive, responses; WebSocket upgrade lives in ws.h. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include <jansson.h>
#include "lib/err.h"

/* Limits on what a client may make us hold. */
#define HTTP_MAX_HEAD        (16 * 1024)    /* request line + headers, bytes (431 beyond) */
#define HTTP_MAX_HEADERS     100            /* header lines (431 beyond) */
#define HTTP_MAX_BODY        (1024 * 1024)  /* request body, bytes (413 beyond) */
#define HTTP_IDLE_TIMEOUT_MS 60000          /* a trusted conn's keep-alive idle, and its time to send one request */
/* Defaults of struct http_limits. */
#define HTTP_MAX_CONNS       4096           /* per listener, trusted or not */
#define HTTP_MAX_CONNS_PER_IP 1024          /* untrusted conns of one source address (IPv6: its /64) */
#define HTTP_REQUEST_TIMEOUT_MS 10000       /* an untrusted conn's time to deliver a whole request */

struct http_server;
struct http_conn;
struct ws_conn;

struct http_header {
    const char *name;
    const char *value;   /* leading and trailing blanks removed */
};

/* Valid from the request callback until the response call (or until on_abort returns). */
struct http_request {
    const char *method;          /* "GET", ... */
    const char *path;            /* raw path without the query, e.g. "/api/v3/sandbox/sbx_x/connect" */
    const char *query;           /* raw query string without '?', "" if none */
    const struct http_header *headers;
    size_t n_headers;
    const uint8_t *body;         /* never NULL; body_len may be 0 */
    size_t body_len;
    bool websocket;              /* a valid Upgrade: websocket request (GET, HTTP/1.1, Connection: upgrade,
                                    a 16-byte key, version 13) */
    bool unix_peer;              /* arrived on the root-only unix socket */
    bool raw_body;               /* the body was left unread (http_server_set_raw_body): content_length bytes
                                    are the app's to take with http_conn_detach; the conn closes after the
                                    response */
    uint64_t content_length;     /* with raw_body */
};

/* Case-insensitive; the first match, NULL if absent. */
const char *http_header_get(const struct http_request *r, const char *name);
/* True if a comma-separated header value holds token (case-insensitive), e.g. Connection: keep-alive, Upgrade. */
bool http_header_has_token(const char *value, const char *token);
/* Query parameter by name, percent-decoded ('+' is a space) into a malloc'd string (caller frees),
 * NULL if absent. "%00" is left undecoded so that a value is never cut short. */
char *http_query_get(const struct http_request *r, const char *name);
/* Calls cb(name, value, ud) with decoded strings for each parameter, in order. */
void http_query_each(const struct http_request *r, void (*cb)(const char *k, const char *v, void *ud), void *ud);
/* Percent-decodes n bytes of s into a malloc'd NUL-terminated string (NULL on ENOMEM); '+' becomes a
 * space when plus_is_space. Invalid escapes and "%00" are copied as they are. */
char *http_pct_decode(const char *s, size_t n, bool plus_is_space);

typedef void (*http_request_cb)(struct http_conn *c, const struct http_request *req, void *ud);

/* host: an IPv4 or IPv6 literal; port 0 picks a free port (see http_server_port). */
int http_server_listen_tcp(uv_loop_t *loop, const char *host, int port, http_request_cb cb, void *ud,
                           struct http_server **out, struct hx_err *e);
/* The socket is created mode 0600; a stale socket at path is replaced, any other file is refused. */
int http_server_listen_unix(uv_loop_t *loop, const char *path, http_request_cb cb, void *ud,
                            struct http_server **out, struct hx_err *e);
int http_server_port(const struct http_server *s);   /* bound TCP port, 0 for unix */

/* What a listener's clients may hold before and after authentication. A conn is untrusted until the
 * app calls http_conn_mark_trusted (unix socket conns are trusted from the start: the socket is
 * root-only). An untrusted conn has request_timeout_ms to deliver each request, head and body,
 * however much it sends meanwhile (then a 408 and close). At max_conns_per_ip untrusted conns from
 * one address, or at max_conns in all, a new conn displaces the oldest untrusted one (a 503 and
 * close); trusted conns are never displaced, and when only they fill max_conns a new conn gets the
 * 503. Each listener has its own budget: a TCP flood cannot starve the unix socket. */
struct http_limits {
    uint32_t max_conns;
    uint32_t max_conns_per_ip;
    uint32_t request_timeout_ms;
};
void http_server_set_limits(struct http_server *s, const struct http_limits *l);  /* copies */
/* Raw bodies (hutch's file channel, core/rest_files.c): a request for which want(method, url) is
 * true at the end of its head reaches the app then, its body unread (req->raw_body). It must have
 * a Content-Length (411 otherwise: no chunked bodies) and may have any size. */
void http_server_set_raw_body(struct http_server *s, bool (*want)(const char *method, const char *url));
/* Stops listening and closes every connection (WebSockets get on_close, pending requests on_abort).
 * Memory is released once the loop has run the close callbacks and every pending request was
 * answered. */
void http_server_close(struct http_server *s);

/* Responses. The request callback must eventually call exactly one of http_respond*,
 * or http_upgrade_websocket, for every request, possibly later (asynchronously). The conn stays
 * valid until then, even if the client went away: on_abort tells about that, and the response
 * call then only releases the conn. */
void http_respond(struct http_conn *c, int status, const char *content_type,
                  const char *extra_headers /* "K: V\r\n"... or NULL */, const void *body, size_t len);
void http_respond_json(struct http_conn *c, int status, json_t *body /* stolen */);
/* Streamed responses (server-sent events): begin sends the head (the body
 * ends with the connection), write queues bytes (false once the client is
 * gone or fell more than HTTP_STREAM_QUEUE_MAX behind: the conn is closed),
 * end finishes it and counts as the response (call it exactly once after a
 * successful begin, also from on_abort). */
#define HTTP_STREAM_QUEUE_MAX (4 * 1024 * 1024)
bool http_stream_begin(struct http_conn *c, int status, const char *content_type, const char *extra_headers);
bool http_stream_write(struct http_conn *c, const void *data, size_t len);
void http_stream_end(struct http_conn *c);
/* The SDK's error shape: {"code": code, "message": msg} with the status. */
void http_respond_error(struct http_conn *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The client proved who it is (a valid token): from now on its conn counts as trusted (see
 * http_limits). Budgets only: it grants nothing, each request is still the app's to authorize. */
void http_conn_mark_trusted(struct http_conn *c);
/* Called (once, from the loop) when the client disconnects before the response was given. */
void http_conn_on_abort(struct http_conn *c, void (*cb)(struct http_conn *c, void *ud), void *ud);

/* Takes the socket of a conn awaiting its response over, for a body that the app moves itself
 * (splice): http.c stops reading it; *pending (malloc'd, the caller frees; may be NULL) receives the
 * bytes read past the request's head, and the result is a duplicate of the socket's descriptor
 * (O_CLOEXEC, non-blocking; the caller closes it), or a negative errno. The response is still
 * owed: http_respond* (nothing was sent on the descriptor) or http_stream_end (after what the app
 * sent itself, as the whole response); the conn closes after it, and its deadline (see
 * http_conn_set_deadline) still applies. */
int http_conn_detach(struct http_conn *c, uint8_t **pending, size_t *pending_len);

/* ---- between http.c and ws.c only: the connection as a byte pipe ---- */
uv_stream_t *http_conn_stream(struct http_conn *c);
bool http_conn_closing(const struct http_conn *c);
void http_conn_close(struct http_conn *c);                      /* ws_conn_closed follows from the loop */
void http_conn_read(struct http_conn *c, bool on);
void http_conn_resume(struct http_conn *c);                     /* read again, stashed input first */
int http_conn_stash(struct http_conn *c, const uint8_t *p, size_t n);  /* keep unconsumed input */
void http_conn_set_deadline(struct http_conn *c, uint64_t ms);  /* closed after ms; 0: no deadline */
const struct http_request *http_conn_request(struct http_conn *c);    /* NULL unless awaiting a response */
/* Sends the 101 head and hands the socket to w. False (and the conn released) if the client is gone. */
bool http_conn_start_ws(struct http_conn *c, struct ws_conn *w, const char *head, size_t len);
