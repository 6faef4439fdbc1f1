/* TLS interception for hosts named in a sandbox's secrets (issue 5): a leaf
 * certificate minted per SNI under hutchd's per-install CA (cached), TLS
 * towards the sandbox with ALPN http/1.1, and verified TLS to the upstream.
 * OpenSSL runs on memory BIOs: the caller moves ciphertext between the BIOs
 * and its libuv sockets. Everything that needs files happens before the
 * proxy confines itself. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

/* Before confinement: OpenSSL, the trust store (system bundle plus an
 * optional extra CA file, both read now) and the leaf key. 0 or -1. */
int mitm_init(const char *upstream_ca);
/* The CA from hutchd (PX_CA): PEM certificate and key. 0 or -1. */
int mitm_set_ca(const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len);
bool mitm_ready(void);

/* A server-side SSL for the sandbox's connection to host (leaf from the
 * cache or minted now), or NULL. */
SSL *mitm_ssl_for_client(const char *host);
/* A client-side SSL to the upstream: SNI host, hostname verification. */
SSL *mitm_ssl_for_upstream(const char *host);

/* Ciphertext in (from the socket) and out (to the socket). */
int tls_feed(SSL *s, const void *p, size_t n);
size_t tls_pending_out(SSL *s);
size_t tls_take_out(SSL *s, void *out, size_t cap);
/* Short reason for a failed handshake (verification result when there is one). */
void tls_fail_reason(SSL *s, char *out, size_t cap);
