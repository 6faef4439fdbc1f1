/* TLS ClientHello: finding the server_name (SNI) the client asks for, from
 * the first bytes of a connection. Bounded; the hello may span records. */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define SNI_HELLO_MAX 16384   /* bytes of handshake we are willing to buffer */

/* True if the bytes can only be the start of a TLS handshake record. */
int tls_looks_like(const uint8_t *p, size_t n);

/* Returns the length of the name copied to out (NUL-terminated, raw bytes:
 * validate before use), 0 if more bytes are needed, -ENOENT if the complete
 * ClientHello carries no server_name, -EINVAL if it is not a well-formed
 * ClientHello (or longer than SNI_HELLO_MAX). */
int tls_sni_parse(const uint8_t *p, size_t n, char *out, size_t cap);
