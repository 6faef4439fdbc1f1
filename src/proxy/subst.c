/* Placeholder <-> value substitution on HTTP/1 heads and response streams
 * (see subst.h). Input is from the sandbox or the upstream: bounded, never
 * trusted, never longer on output than the caller's buffer. */
#include "proxy/subst.h"
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include "lib/b64.h"

static bool name_is(const uint8_t *p, size_t n, const char *want)
{
    size_t wl = strlen(want);
    if (n != wl)
        return false;
    for (size_t i = 0; i < n; i++)
        if (tolower(p[i]) != want[i])
            return false;
    return true;
}

/* Replaces every placeholder of an applicable secret in p[0..n) in place. */
static void replace_ph(uint8_t *p, size_t n, const struct subst_secret *s, size_t ns, uint64_t *used)
{
    for (size_t k = 0; k < ns; k++) {
        if (!s[k].applies || s[k].len == 0 || s[k].len > n)
            continue;
        uint8_t *at = p;
        size_t left = n;
        while (left >= s[k].len) {
            uint8_t *f = memmem(at, left, s[k].ph, s[k].len);
            if (!f)
                break;
            memcpy(f, s[k].val, s[k].len);
            *used |= 1ull << k;
            left -= (size_t)(f - at) + s[k].len;
            at = f + s[k].len;
        }
    }
}

/* "Basic <b64>": the credential is decoded, substituted and re-encoded; the
 * same number of bytes gives the same number of characters. */
static void replace_basic(uint8_t *v, size_t n, const struct subst_secret *s, size_t ns, uint64_t *used)
{
    size_t i = 0;
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
        i++;
    if (n - i < 6 || !name_is(v + i, 5, "basic") || v[i + 5] != ' ')
        return;
    i += 6;
    while (i < n && v[i] == ' ')
        i++;
    size_t e = i;
    while (e < n && v[e] != ' ' && v[e] != '\t' && v[e] != '\r')
        e++;
    size_t tl = e - i;
    if (tl == 0 || tl > 3 * SUBST_VALUE_MAX || tl % 4)
        return;
    uint8_t dec[3 * SUBST_VALUE_MAX];
    char enc[4 * SUBST_VALUE_MAX + 4];
    size_t dl;
    if (hx_b64_decode((const char *)v + i, tl, dec, &dl) < 0)
        return;
    uint64_t before = *used, mine = 0;
    replace_ph(dec, dl, s, ns, &mine);
    if (!mine)
        return;
    hx_b64_encode(dec, dl, enc);
    if (strlen(enc) == tl)
        memcpy(v + i, enc, tl);
    *used = before | mine;
    memset(dec, 0, sizeof dec);
    memset(enc, 0, sizeof enc);
}

long subst_request_head(const uint8_t *head, size_t n, const struct subst_secret *s, size_t ns, uint8_t *out,
                        size_t cap, uint64_t *used)
{
    *used = 0;
    if (cap < n + SUBST_HEAD_SLACK)
        return -E2BIG;
    static const char ae[] = "Accept-Encoding: identity\r\n";
    size_t o = 0, i = 0;
    bool first = true, ae_done = false;
    while (i < n) {
        const uint8_t *nl = memchr(head + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - head) + 1 : n; /* line is head[i..end) */
        const uint8_t *line = head + i;
        size_t ll = end - i;
        const uint8_t *colon = first ? NULL : memchr(line, ':', ll);
        if (colon && name_is(line, (size_t)(colon - line), "accept-encoding")) {
            if (!ae_done) { /* one line, whatever the client listed (the slack covers it) */
                if (o + sizeof ae - 1 > cap)
                    return -E2BIG;
                memcpy(out + o, ae, sizeof ae - 1);
                o += sizeof ae - 1;
                ae_done = true;
            }
            i = end;
            continue;
        }
        /* A range starting inside an echoed value would return its second
         * half, which masking cannot recognise: intercepted responses are whole. */
        if (colon && (name_is(line, (size_t)(colon - line), "range") ||
                      name_is(line, (size_t)(colon - line), "if-range"))) {
            i = end;
            continue;
        }
        if (o + ll > cap)
            return -E2BIG;
        memcpy(out + o, line, ll);
        if (colon) {
            size_t vo = o + (size_t)(colon - line) + 1, vl = ll - (size_t)(colon - line) - 1;
            if (name_is(line, (size_t)(colon - line), "authorization") ||
                name_is(line, (size_t)(colon - line), "proxy-authorization"))
                replace_basic(out + vo, vl, s, ns, used);
            replace_ph(out + vo, vl, s, ns, used);
        }
        o += ll;
        first = false;
        i = end;
    }
    return (long)o;
}

/* Chunked bodies: an echoed value split by one chunk framing
 * ("\r\n" hex [";" ext] "\r\n") is still the value once the client joins the
 * chunks. Both halves are masked in place; placeholders have the value's
 * length, so chunk sizes stay right. */
static void mask_across_framing(const struct subst_secret *s, size_t ns, uint8_t *out, size_t m)
{
    for (size_t i = 0; i + 5 <= m; i++) {
        if (out[i] != '\r' || out[i + 1] != '\n')
            continue;
        size_t j = i + 2, hex = 0;
        while (j < m && hex < 16 && isxdigit(out[j]))
            j++, hex++;
        if (hex == 0)
            continue;
        if (j < m && out[j] == ';')
            while (j < m && out[j] != '\r' && j - i < SUBST_FRAMING_MAX - 2)
                j++;
        if (j + 1 >= m || out[j] != '\r' || out[j + 1] != '\n')
            continue;
        size_t after = j + 2;
        for (size_t k = 0; k < ns; k++) {
            size_t len = s[k].len;
            for (size_t t = 1; t < len && t <= i; t++) {
                if (after + (len - t) > m)
                    continue;
                if (memcmp(out + i - t, s[k].val, t) == 0 && memcmp(out + after, s[k].val + t, len - t) == 0) {
                    memcpy(out + i - t, s[k].ph, t);
                    memcpy(out + after, s[k].ph + t, len - t);
                }
            }
        }
    }
}

size_t mask_stream(struct mask_state *st, const struct subst_secret *s, size_t ns, const uint8_t *p, size_t n,
                   uint8_t *out)
{
    size_t m = st->held;
    memcpy(out, st->hold, st->held);
    memcpy(out + m, p, n);
    m += n;
    st->held = 0;
    for (size_t k = 0; k < ns; k++) {
        if (s[k].len == 0 || s[k].len > m)
            continue;
        uint8_t *at = out;
        size_t left = m;
        while (left >= s[k].len) {
            uint8_t *f = memmem(at, left, s[k].val, s[k].len);
            if (!f)
                break;
            memcpy(f, s[k].ph, s[k].len);
            left -= (size_t)(f - at) + s[k].len;
            at = f + s[k].len;
        }
    }
    mask_across_framing(s, ns, out, m);
    /* A value may continue in the next read: the last (longest value - 1,
     * plus a chunk framing) bytes always wait for more (or the caller's short
     * timer). Always, not only when they could start a value: holding by
     * content would let the sandbox time its guesses at a value against an
     * echo, byte by byte. */
    size_t keep = 0;
    for (size_t k = 0; k < ns; k++)
        if (s[k].len > 0 && s[k].len - 1 + SUBST_FRAMING_MAX > keep)
            keep = s[k].len - 1 + SUBST_FRAMING_MAX;
    if (keep > m)
        keep = m;
    memcpy(st->hold, out + m - keep, keep);
    st->held = keep;
    return m - keep;
}

size_t mask_flush(struct mask_state *st, uint8_t *out)
{
    size_t n = st->held;
    memcpy(out, st->hold, n);
    st->held = 0;
    return n;
}

void subst_request_line(const uint8_t *head, size_t n, char *method, size_t mcap, char *path, size_t pcap)
{
    size_t i = 0, o = 0;
    while (i < n && head[i] != ' ' && head[i] != '\r' && head[i] != '\n') {
        if (o + 1 < mcap && isgraph(head[i]))
            method[o++] = (char)head[i];
        i++;
    }
    method[o] = 0;
    if (i < n && head[i] == ' ')
        i++;
    o = 0;
    while (i < n && head[i] != ' ' && head[i] != '\r' && head[i] != '\n') {
        if (o + 1 < pcap && isgraph(head[i]))
            path[o++] = (char)head[i];
        i++;
    }
    path[o] = 0;
}
