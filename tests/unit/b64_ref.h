/* The table-driven base64 codec hutch had before src/lib/b64.c went 16 characters
 * at a time, kept as the reference for test_b64.c's differential tests (the new
 * codec must accept, refuse and produce exactly what this one did). */
#pragma once
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

static const char ref_enc_tab[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* 0..63 for alphabet characters, 0xff for everything else (incl. '=' and NUL). */
#define X 0xff
static const uint8_t ref_dec_tab[256] = {
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

static void ref_b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[0] = ref_enc_tab[v >> 18];
        out[1] = ref_enc_tab[(v >> 12) & 63];
        out[2] = ref_enc_tab[(v >> 6) & 63];
        out[3] = ref_enc_tab[v & 63];
        out += 4;
    }
    size_t rest = n - i;
    if (rest == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[0] = ref_enc_tab[v >> 18];
        out[1] = ref_enc_tab[(v >> 12) & 63];
        out[2] = '=';
        out[3] = '=';
        out += 4;
    } else if (rest == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[0] = ref_enc_tab[v >> 18];
        out[1] = ref_enc_tab[(v >> 12) & 63];
        out[2] = ref_enc_tab[(v >> 6) & 63];
        out[3] = '=';
        out += 4;
    }
    *out = '\0';
}

static int ref_b64_decode(const char *in, size_t inlen, uint8_t *out, size_t *outlen)
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
        uint32_t a = ref_dec_tab[p[i]], b = ref_dec_tab[p[i + 1]], c = ref_dec_tab[p[i + 2]], d = ref_dec_tab[p[i + 3]];
        if ((a | b | c | d) & 0x80)
            return -EINVAL;
        uint32_t v = a << 18 | b << 12 | c << 6 | d;
        o[0] = (uint8_t)(v >> 16);
        o[1] = (uint8_t)(v >> 8);
        o[2] = (uint8_t)v;
        o += 3;
    }
    const unsigned char *q = p + full;
    uint32_t a = ref_dec_tab[q[0]], b = ref_dec_tab[q[1]];
    if ((a | b) & 0x80)
        return -EINVAL;
    if (q[2] == '=') {
        /* "xx==": one byte; the low 4 bits of b must be zero. */
        if (q[3] != '=' || (b & 0x0f))
            return -EINVAL;
        *o++ = (uint8_t)(a << 2 | b >> 4);
    } else {
        uint32_t c = ref_dec_tab[q[2]];
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
            uint32_t d = ref_dec_tab[q[3]];
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

