/* Base64 encode/decode (RFC 4648) with a strict, table-driven decoder.
 * See b64.h for the accepted forms. */
#include "lib/b64.h"
#include <sys/types.h>
#include <sys/random.h>
#include <string.h>
#include <stdlib.h>
#include <errno.h>

static const char enc_tab[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* 0..63 for alphabet characters, 0xff for everything else (incl. '=' and NUL). */
#define X 0xff
static const uint8_t dec_tab[256] = {
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, 62, X, X, X, 63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, X, X, X, X, X, X,
    X, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, X, X, X, X, X,
    X, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
};
#undef X

void hx_b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[0] = enc_tab[v >> 18];
        out[1] = enc_tab[(v >> 12) & 63];
        out[2] = enc_tab[(v >> 6) & 63];
        out[3] = enc_tab[v & 63];
        out += 4;
    }
    size_t rest = n - i;
    if (rest == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[0] = enc_tab[v >> 18];
        out[1] = enc_tab[(v >> 12) & 63];
        out[2] = '=';
        out[3] = '=';
        out += 4;
    } else if (rest == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[0] = enc_tab[v >> 18];
        out[1] = enc_tab[(v >> 12) & 63];
        out[2] = enc_tab[(v >> 6) & 63];
        out[3] = '=';
        out += 4;
    }
    *out = '\0';
}

int hx_b64_decode(const char *in, size_t inlen, uint8_t *out, size_t *outlen)
{
    const unsigned char *p = (const unsigned char *)in;
    *outlen = 0;
    if (inlen % 4)
        return -EINVAL;
    if (inlen == 0)
        return 0;
    /* All quads but the last carry no padding: OR-ing the table values lets
     * one branch per quad catch any invalid character (0xff sets bit 7). */
    size_t full = inlen - 4;
    uint8_t *o = out;
    for (size_t i = 0; i < full; i += 4) {
        uint32_t a = dec_tab[p[i]], b = dec_tab[p[i + 1]], c = dec_tab[p[i + 2]], d = dec_tab[p[i + 3]];
        if ((a | b | c | d) & 0x80)
            return -EINVAL;
        uint32_t v = a << 18 | b << 12 | c << 6 | d;
        o[0] = (uint8_t)(v >> 16);
        o[1] = (uint8_t)(v >> 8);
        o[2] = (uint8_t)v;
        o += 3;
    }
    const unsigned char *q = p + full;
    uint32_t a = dec_tab[q[0]], b = dec_tab[q[1]];
    if ((a | b) & 0x80)
        return -EINVAL;
    if (q[2] == '=') {
        /* "xx==": one byte; the low 4 bits of b must be zero. */
        if (q[3] != '=' || (b & 0x0f))
            return -EINVAL;
        *o++ = (uint8_t)(a << 2 | b >> 4);
    } else {
        uint32_t c = dec_tab[q[2]];
        if (c & 0x80)
            return -EINVAL;
        if (q[3] == '=') {
            /* "xxx=": two bytes; the low 2 bits of c must be zero. */
            if (c & 0x03)
                return -EINVAL;
            uint32_t v = a << 18 | b << 12 | c << 6;
            *o++ = (uint8_t)(v >> 16);
            *o++ = (uint8_t)(v >> 8);
        } else {
            uint32_t d = dec_tab[q[3]];
            if (d & 0x80)
                return -EINVAL;
            uint32_t v = a << 18 | b << 12 | c << 6 | d;
            *o++ = (uint8_t)(v >> 16);
            *o++ = (uint8_t)(v >> 8);
            *o++ = (uint8_t)v;
        }
    }
    *outlen = (size_t)(o - out);
    return 0;
}

void hx_random_name(char out[HX_RANDOM_NAME_LEN + 1])
{
    static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint8_t r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        abort(); /* never a guessable name */
    uint32_t acc = 0;
    int bits = 0, o = 0;
    for (size_t i = 0; i < sizeof r; i++) {
        acc = acc << 8 | r[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = b32[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits)
        out[o++] = b32[(acc << (5 - bits)) & 31];
    out[o] = 0;
    explicit_bzero(r, sizeof r);
}
