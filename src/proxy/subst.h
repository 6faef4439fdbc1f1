/* Secret substitution on intercepted HTTP/1 traffic (issue 5): the
 * placeholder becomes the real value in request header values (also inside
 * "Authorization: Basic"), and the real value becomes the placeholder again
 * in everything the upstream sends back. Pure functions over bounded input;
 * a placeholder is exactly as long as its value, so no framing changes. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SUBST_VALUE_MIN 8        /* shorter values cannot get a placeholder that is safe to search for */
#define SUBST_VALUE_MAX 4096
#define SUBST_SECRETS_MAX 32     /* per sandbox (a bit per secret in a uint64_t) */
#define SUBST_HEAD_SLACK 64      /* a rewritten head is at most this much longer than the original */

struct subst_secret {
    const char *name;
    const uint8_t *ph;           /* placeholder, len bytes */
    const uint8_t *val;          /* real value, len bytes */
    size_t len;
    bool applies;                /* the connection's host is one of the secret's hosts */
};

/* Rewrites a complete request head (request line, headers, empty line) into
 * out (cap >= n + SUBST_HEAD_SLACK): in header values the placeholder of
 * every applicable secret becomes its value, also inside a base64
 * "Authorization: Basic" credential; "Accept-Encoding" becomes "identity"
 * so that responses stay maskable. The request line is never changed.
 * *used gets a bit per secret that was substituted. Returns the new length
 * or -E2BIG. */
long subst_request_head(const uint8_t *head, size_t n, const struct subst_secret *s, size_t ns, uint8_t *out,
                        size_t cap, uint64_t *used);

/* Streaming mask for the response direction: every value of every secret
 * (applicable or not) becomes its placeholder, across read boundaries. */
/* A chunked body may put one chunk framing ("\r\n" hex [;ext] "\r\n") inside a
 * value: the held tail covers the longest value and such a framing. */
#define SUBST_FRAMING_MAX 40
#define SUBST_HOLD_MAX (SUBST_VALUE_MAX + SUBST_FRAMING_MAX)

struct mask_state {
    uint8_t hold[SUBST_HOLD_MAX];  /* a tail that may hold the start of a value */
    size_t held;
};

/* Masks p[0..n) after the held tail into out (cap >= SUBST_HOLD_MAX + n);
 * returns the bytes to forward now. The last bytes (the same number whatever
 * they are) are kept back for the next call (or mask_flush). */
size_t mask_stream(struct mask_state *st, const struct subst_secret *s, size_t ns, const uint8_t *p, size_t n,
                   uint8_t *out);
/* Returns the held tail (no complete value can be in it) and clears it. */
size_t mask_flush(struct mask_state *st, uint8_t *out);

/* Method and path (bounded, for the audit) from a request head. */
void subst_request_line(const uint8_t *head, size_t n, char *method, size_t mcap, char *path, size_t pcap);
