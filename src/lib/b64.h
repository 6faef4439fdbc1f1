/* Standard base64 (RFC 4648 §4, '+' '/', '=' padding). Used for the
 * x-deno-sandbox-config header and for byte streams to the SDK, so the
 * encoder is on the stdout hot path and the decoder sees hostile input. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Characters hx_b64_encode writes for n input bytes, without the NUL. */
static inline size_t hx_b64_encoded_len(size_t n) { return (n + 2) / 3 * 4; }
/* Bytes of room hx_b64_decode needs for inlen characters. */
static inline size_t hx_b64_decoded_max(size_t inlen) { return inlen / 4 * 3; }

/* Writes hx_b64_encoded_len(n) characters and a NUL to out. */
void hx_b64_encode(const uint8_t *in, size_t n, char *out);

/* Decodes exactly inlen characters (no NUL needed) into out, which must have
 * room for inlen/4*3 bytes; *outlen gets the byte count. Strict: the length
 * must be a multiple of 4, only the alphabet and trailing '=' (at most two)
 * are accepted, no whitespace, and the unused bits before padding must be
 * zero (so every byte string has exactly one accepted encoding).
 * Returns 0 or -EINVAL; on error out may hold partial output. */
int hx_b64_decode(const char *in, size_t inlen, uint8_t *out, size_t *outlen);

/* Every one of the n bytes is an alphabet character or '=' (anywhere): the
 * check of a string that will be passed on as base64 without decoding it. */
bool hx_b64_charset_ok(const uint8_t *p, size_t n);

/* An unguessable name: 128 bits from getrandom as lowercase base32
 * (a-z, 2-7), HX_RANDOM_NAME_LEN characters and a NUL. Used where a name is
 * the credential (exposed URLs, SSH login names). Aborts rather than return
 * a guessable name if the kernel has no randomness to give. */
#define HX_RANDOM_NAME_LEN 26
void hx_random_name(char out[HX_RANDOM_NAME_LEN + 1]);
