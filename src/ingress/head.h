/* Pure helpers of hutch-ingress for request and response heads: where the
 * exposure's secret is (path prefix, cookie, host name), which headers never
 * cross the proxy. No I/O: each takes (pointer, length) and can be tested
 * and fuzzed alone. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* hutch's own cookie: "__Host-hutch-<port>=<name>". The __Host- prefix
 * binds it to this host with Path=/ and Secure; the port in the name keeps
 * exposures on one host apart (browsers share cookies across ports). */
#define IG_COOKIE_PREFIX "__Host-hutch-"

/* Constant-time equality of two strings of length n. */
bool ig_secret_eq(const char *a, const char *b, size_t n);

/* If target (the request-target, length n) starts with "/" name and then
 * ends, or continues with '/' or '?', writes the rest into out (always
 * starting with '/') and returns its length; otherwise (or if it does not
 * fit in cap) returns -1. */
int ig_strip_secret(const char *target, size_t n, const char *name, char *out, size_t cap);

/* Does the Cookie header value (length n) carry cookie cname with value
 * name (IG_NAME_LEN characters)? */
bool ig_cookie_has(const char *v, size_t n, const char *cname, const char *name);
/* Copies the Cookie header value without any cookie whose name starts with
 * IG_COOKIE_PREFIX; returns the new length (0: nothing left). out holds 2 * n
 * (pairs are rejoined with "; "). */
size_t ig_cookie_strip(const char *v, size_t n, char *out);
/* A Set-Cookie value (length n) that sets one of hutch's cookies. */
bool ig_set_cookie_is_ours(const char *v, size_t n);

/* Headers that describe one hop and are never forwarded as received
 * (Connection, Keep-Alive, Transfer-Encoding, Upgrade, TE, Trailer,
 * Proxy-*, X-Forwarded-*, Forwarded): the ingress writes its own. */
bool ig_hop_header(const char *field, size_t n);

/* Host mode: "<name>.<base>[:port]" (case-insensitive) -> name (IG_NAME_LEN
 * characters of [a-z2-7]) into out[IG_NAME_LEN + 1]. 0, or -1. */
int ig_host_name(const char *host, size_t n, const char *base, char *out);
