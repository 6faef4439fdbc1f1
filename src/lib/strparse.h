/* Parsers and validators for strings that come from clients: memory sizes,
 * durations, sandbox ids, org names and labels; plus random ids and
 * ISO 8601 timestamps. Every function is bounded and takes hostile input. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "lib/err.h"

/* Memory as the SDK's memory.js accepts it: a plain integer number of bytes
 * ("1073741824"), or a number with an optional decimal fraction followed by
 * exactly one of GiB MiB KiB GB MB kB (case as written). *mib gets
 * floor(bytes / MiB), computed exactly (no floating point). Range checks
 * (the SDK's 768..4096) are the caller's. -EINVAL with the SDK's messages,
 * -ERANGE if the value does not fit in 32 bits of MiB. */
int hx_parse_memory_mib(const char *s, uint32_t *mib, struct hx_err *e);

/* Durations: a number (decimal fraction allowed) followed by ms, s, m or h
 * ("1500ms", "30s", "1.5m", "2h"). The result, floor(ms), must be > 0 and
 * <= HX_DURATION_MAX_MS. -EINVAL for bad syntax, -ERANGE for out of range. */
#define HX_DURATION_MAX_MS (7ull * 24 * 3600 * 1000)
int hx_parse_duration_ms(const char *s, uint64_t *ms, struct hx_err *e);

/* Alphabet of sandbox ids (the SDK's [0-9a-hjkmnp-z]: no i, l, o). */
#define HX_ID_ALPHABET "0123456789abcdefghjkmnpqrstuvwxyz"
#define HX_SANDBOX_ID_LEN 28   /* "sbx_" + 3 + "_" + 20 */

/* Fills out with n characters drawn uniformly from alphabet (alen <= 256)
 * using getrandom(2), then a NUL (out needs n + 1 bytes). 0 or -errno. */
int hx_random_chars(const char *alphabet, size_t alen, char *out, size_t n);

/* "sbx_" + node + "_" + 20 random characters of HX_ID_ALPHABET.
 * node must be three characters [a-z] (-EINVAL otherwise). 0 or -errno. */
int hx_sandbox_id_new(const char node[3], char out[32]);
/* Matches the SDK's ^sbx_[a-z]{3}_[0-9a-hjkmnp-z]{20}$ (NULL is invalid). */
bool hx_sandbox_id_valid(const char *s);

/* Org names: [a-z0-9-]{1,63}, so they are safe in paths and log lines. */
#define HX_ORG_MAX 63
bool hx_org_name_valid(const char *s);

/* Labels. The SDK documents at most 5 labels, keys <= 64 bytes and values
 * <= 128 bytes, enforced by Deploy's server. We accept a superset so that
 * every valid SDK call works, while keeping keys safe to print and to use as
 * query-string parameters (`labels[key]=value`) without escaping rules:
 *   key:   [A-Za-z0-9._-]{1,63}
 *   value: 0..256 bytes of valid UTF-8 with no control characters
 *          (C0, DEL, C1), so values are safe in JSON, logs and terminals
 *   count: at most HX_LABELS_MAX per sandbox. */
#define HX_LABEL_KEY_MAX   63
#define HX_LABEL_VALUE_MAX 256
#define HX_LABELS_MAX      32
bool hx_label_key_valid(const char *k);
bool hx_label_value_valid(const char *v);
/* Checks a labels object: a JSON object of at most HX_LABELS_MAX string
 * values, every key and value valid. 0 or -EINVAL with a message. */
int hx_labels_validate(const json_t *labels, struct hx_err *e);

/* Valid UTF-8 (no overlongs, surrogates or code points > U+10FFFF) of
 * exactly n bytes with no control characters. */
bool hx_utf8_printable(const char *s, size_t n);

/* "2025-01-02T03:04:05.678Z" (UTC, millisecond precision) for ms since the
 * Unix epoch; out needs 32 bytes. Negative or absurd times give the epoch. */
void hx_format_iso8601_ms(int64_t ms, char out[32]);
/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t hx_now_ms(void);
