/* Base64 encode/decode (RFC 4648). See b64.h for the accepted forms.
 *
 * Both directions run on every byte of every SDK file transfer (writeFile's
 * enqueue notifications are decoded in hutchd, fileRead answers encoded in the
 * sandbox's fs worker), so the bulk of each runs 16 characters at a time in
 * GCC/Clang vector types (SSE2 on x86-64, NEON on arm64; no instruction set
 * beyond the baseline, no tables): a character's 6-bit value comes from range
 * compares, 4 values pack into 3 bytes with shifts in 32-bit lanes. The edges
 * (the last quad, with its padding, and what is left of a block) are scalar. */
#include "lib/b64.h"
#include <sys/types.h>
#include <sys/random.h>
#include <stdbool.h>
#include <string.h>
#include <stdlib.h>
#include <errno.h>

#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define B64_VEC 1
typedef uint8_t u8x16 __attribute__((vector_size(16)));
typedef uint32_t u32x4 __attribute__((vector_size(16)));
typedef uint64_t u64x2 __attribute__((vector_size(16)));
#endif

static const char enc_tab[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The value of one alphabet character, or 0xff (bit 7 set) for any other byte
 * ('=' and NUL included). Branch-free: the scalar edges use it too. */
static inline uint32_t dec1(uint8_t c)
{
    uint32_t v = 0xff;
    v = (uint8_t)(c - 'A') < 26 ? (uint32_t)(c - 'A') : v;
    v = (uint8_t)(c - 'a') < 26 ? (uint32_t)(c - 'a' + 26) : v;
    v = (uint8_t)(c - '0') < 10 ? (uint32_t)(c - '0' + 52) : v;
    v = c == '+' ? 62 : v;
    v = c == '/' ? 63 : v;
    return v;
}

#ifdef B64_VEC
/* 16 characters to their 6-bit values; *bad gets a set bit for any character
 * outside the alphabet. (u8x16) compares give 0 or -1 per lane. */
static inline u8x16 dec16(u8x16 c, u8x16 *bad)
{
    u8x16 up = (u8x16)((u8x16)(c - 'A') < 26), lo = (u8x16)((u8x16)(c - 'a') < 26);
    u8x16 dg = (u8x16)((u8x16)(c - '0') < 10), pl = (u8x16)(c == '+'), sl = (u8x16)(c == '/');
    *bad |= ~(up | lo | dg | pl | sl);
    return ((c - 'A') & up) | ((c - ('a' - 26)) & lo) | ((c + (52 - '0')) & dg) | (62 & pl) | (63 & sl);
}

static inline bool any16(u8x16 v)
{
    u64x2 w = (u64x2)v;
    return (w[0] | w[1]) != 0;
}

/* 16 values (4 per little-endian lane) to 12 bytes at o, written as four
 * 4-byte stores: o must have room for 13. */
static inline void pack16(u8x16 v, uint8_t *o)
{
    u32x4 x = (u32x4)v;
    u32x4 t = ((x & 0x3f) << 18) | ((x & 0x3f00) << 4) | ((x >> 10) & 0xfc0) | (x >> 24);
    u32x4 s = (t >> 16) | (t & 0xff00) | ((t & 0xff) << 16); /* the 3 bytes in output order */
    for (int k = 0; k < 4; k++) {
        uint32_t w = s[k];
        memcpy(o + 3 * k, &w, 4);
    }
}
#endif

void hx_b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i = 0;
#ifdef B64_VEC
    /* 12 bytes to 16 characters; each lane loads 4 bytes, hence i + 16 <= n */
    for (; i + 16 <= n; i += 12) {
        uint32_t w0, w1, w2, w3;
        memcpy(&w0, in + i, 4);
        memcpy(&w1, in + i + 3, 4);
        memcpy(&w2, in + i + 6, 4);
        memcpy(&w3, in + i + 9, 4);
        u32x4 y = { w0, w1, w2, w3 };
        u32x4 v = ((y & 0xff) << 16) | (y & 0xff00) | ((y >> 16) & 0xff);
        u32x4 ix = (v >> 18) | (((v >> 12) & 63) << 8) | (((v >> 6) & 63) << 16) | ((v & 63) << 24);
        u8x16 c = (u8x16)ix;
        /* 0-25 'A'.., 26-51 'a'.., 52-61 '0'.., 62 '+', 63 '/': the offset added to each value */
        u8x16 off = 65 + (6 & (u8x16)(c >= 26)) + ((uint8_t)-75 & (u8x16)(c >= 52)) +
                    ((uint8_t)-15 & (u8x16)(c >= 62)) + (3 & (u8x16)(c == 63));
        c += off;
        memcpy(out, &c, 16);
        out += 16;
    }
#endif
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
    /* All quads but the last carry no padding. */
    size_t full = inlen - 4, i = 0;
    uint8_t *o = out;
#ifdef B64_VEC
    /* 16 characters a step, one check of them all at the end (an error
     * returns -EINVAL, whatever was written). pack16 writes 13 bytes for its
     * 12: the byte past them is within the last quad's 3 that follow. */
    u8x16 bad = { 0 };
    for (; i + 16 <= full; i += 16) {
        u8x16 c;
        memcpy(&c, p + i, 16);
        pack16(dec16(c, &bad), o);
        o += 12;
    }
    if (any16(bad))
        return -EINVAL;
#endif
    for (; i < full; i += 4) {
        uint32_t a = dec1(p[i]), b = dec1(p[i + 1]), c = dec1(p[i + 2]), d = dec1(p[i + 3]);
        if ((a | b | c | d) & 0x80)
            return -EINVAL;
        uint32_t v = a << 18 | b << 12 | c << 6 | d;
        o[0] = (uint8_t)(v >> 16);
        o[1] = (uint8_t)(v >> 8);
        o[2] = (uint8_t)v;
        o += 3;
    }
    const unsigned char *q = p + full;
    uint32_t a = dec1(q[0]), b = dec1(q[1]);
    if ((a | b) & 0x80)
        return -EINVAL;
    if (q[2] == '=') {
        /* "xx==": one byte; the low 4 bits of b must be zero. */
        if (q[3] != '=' || (b & 0x0f))
            return -EINVAL;
        *o++ = (uint8_t)(a << 2 | b >> 4);
    } else {
        uint32_t c = dec1(q[2]);
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
            uint32_t d = dec1(q[3]);
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

bool hx_b64_charset_ok(const uint8_t *p, size_t n)
{
    size_t i = 0;
#ifdef B64_VEC
    u8x16 bad = { 0 };
    for (; i + 16 <= n; i += 16) {
        u8x16 c, b = { 0 };
        memcpy(&c, p + i, 16);
        (void)dec16(c, &b);
        bad |= b & (u8x16)(c != '=');
    }
    if (any16(bad))
        return false;
#endif
    uint32_t all = 0;
    for (; i < n; i++)
        all |= p[i] == '=' ? 0 : dec1(p[i]);
    return !(all & 0x80);
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
