/* HTTP/1.x request stream tracking for the transparent proxy: finds the
 * head of every request on a connection (keep-alive included) so the Host of
 * each one is checked, and skips bodies (Content-Length or chunked) without
 * buffering them. Responses are not parsed. Bounded; hostile input. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define H1_HEAD_MAX 16384

/* H1_UPGRADE_WAIT: a CONNECT or Upgrade request was sent; the stream turns
 * opaque (H1_TUNNEL) only if the server agrees (101, or 2xx to CONNECT), else
 * the next bytes are a new request head to check. */
enum h1_state { H1_HEAD, H1_BODY, H1_CHUNK_SIZE, H1_CHUNK_DATA, H1_CHUNK_CRLF, H1_TRAILER, H1_TUNNEL,
                H1_UPGRADE_WAIT };

struct h1 {
    enum h1_state st;
    uint64_t left;            /* H1_BODY / H1_CHUNK_DATA: bytes remaining */
    size_t line;              /* length of the current chunk-size or trailer line */
    bool chunk_hex;           /* saw a hex digit on the size line */
    bool in_ext;              /* after ';' on a size line */
    bool connect;             /* H1_UPGRADE_WAIT for a CONNECT (else an Upgrade) */
};

/* The status code of a response that starts at p[0..n): 100..599, 0 when more
 * bytes are needed, -EINVAL when it is not an HTTP/1 status line. */
int h1_response_status(const uint8_t *p, size_t n);

/* True if the bytes can be the start of an HTTP/1 request ("GET ", ...). */
bool h1_looks_like(const uint8_t *p, size_t n);

/* Parses a request head at p[0..n). Returns its length when complete (> 0;
 * *host gets the Host header or the absolute-form target's authority, with
 * any port stripped, "" if none), 0 if more bytes are needed, -EINVAL if
 * malformed or ambiguous (two Host or Content-Length headers that differ,
 * Transfer-Encoding together with Content-Length, h2c prior knowledge),
 * -E2BIG if longer than H1_HEAD_MAX. Sets t's state for the body. */
int h1_head_parse(struct h1 *t, const uint8_t *p, size_t n, char *host, size_t hostcap);

/* Consumes body bytes of the current request. Returns how many bytes of
 * p[0..n) belong to it (forward them); when that is less than n, t is in
 * H1_HEAD and the rest starts the next request head. -EINVAL on a malformed
 * chunked encoding. In H1_TUNNEL everything is body. */
long h1_body_advance(struct h1 *t, const uint8_t *p, size_t n);
