/* Bounded parsers and validators for client-supplied strings (memory sizes,
 * durations, ids, labels) and the random ids hutch hands out. */
#include "lib/strparse.h"
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

#define MIB (1024u * 1024u)
/* Longer inputs cannot be meaningful sizes or durations; cap the scan. */
#define NUM_INPUT_MAX 128
/* Fraction digits beyond this are dropped: they change the value by less
 * than 1e-18 of a unit, which never moves floor() for realistic inputs. */
#define FRAC_DIGITS_MAX 18

/* Copies s into dst for an error message: printable ASCII only (others
 * become '?'), at most max characters, "..." when cut. Keeps messages
 * valid UTF-8 for JSON and harmless on a terminal. */
static void quote_for_msg(char *dst, size_t dstsz, const char *s, size_t max)
{
    size_t o = 0, i = 0;
    if (max + 4 > dstsz)
        max = dstsz - 4;
    for (; s[i] && i < max; i++)
        dst[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (s[i]) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

struct decimal {
    uint64_t ip;        /* integer part */
    uint64_t frac;      /* fraction digits as an integer ... */
    uint64_t frac_div;  /* ... over this power of ten (1 if no fraction) */
    bool has_frac;
    bool overflow;      /* integer part did not fit in 64 bits */
};

/* Parses \d+(\.\d+)? at *pp; advances *pp. false if no number is there. */
static bool parse_decimal(const char **pp, struct decimal *d)
{
    const char *p = *pp;
    *d = (struct decimal){ .frac_div = 1 };
    if (*p < '0' || *p > '9')
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned dig = (unsigned)(*p - '0');
        if (d->ip > (UINT64_MAX - dig) / 10)
            d->overflow = true;
        else
            d->ip = d->ip * 10 + dig;
    }
    if (*p == '.') {
        if (p[1] < '0' || p[1] > '9')
            return false;
        p++;
        d->has_frac = true;
        unsigned n = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (n++ < FRAC_DIGITS_MAX) {
                d->frac = d->frac * 10 + (uint64_t)(*p - '0');
                d->frac_div *= 10;
            }
        }
    }
    *pp = p;
    return true;
}

/* floor(d * mult), exactly: floor(ip*m + f*m) = ip*m + floor(f*m) since ip*m
 * is an integer. Both products fit in 128 bits (2^64 * 2^30, 2^60 * 2^30). */
static unsigned __int128 decimal_times(const struct decimal *d, uint64_t mult)
{
    return (unsigned __int128)d->ip * mult + (unsigned __int128)d->frac * mult / d->frac_div;
}

static bool all_alpha(const char *p)
{
    if (!*p)
        return false;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            return false;
    return true;
}

int hx_parse_memory_mib(const char *s, uint32_t *mib, struct hx_err *e)
{
    static const struct { const char *name; uint64_t bytes; } units[] = {
        { "GiB", 1024ull * 1024 * 1024 }, { "MiB", MIB }, { "KiB", 1024 },
        { "GB", 1000ull * 1000 * 1000 },  { "MB", 1000ull * 1000 }, { "kB", 1000 },
    };
    char q[80];
    if (!s)
        return hx_fail(e, EINVAL, "Invalid memory format: missing value");
    quote_for_msg(q, sizeof q, s, 64);
    const char *p = s;
    struct decimal d;
    if (strnlen(s, NUM_INPUT_MAX + 1) > NUM_INPUT_MAX || !parse_decimal(&p, &d))
        goto bad_format;

    uint64_t mult = 0;
    if (*p == '\0') {
        /* A bare number is bytes (the SDK's numeric form); a fraction of a
         * byte makes no sense and memory.js refuses "1.5" too. */
        if (d.has_frac)
            goto bad_format;
        mult = 1;
    } else {
        for (size_t i = 0; i < HX_ARRAY_LEN(units); i++)
            if (strcmp(p, units[i].name) == 0)
                mult = units[i].bytes;
        if (!mult) {
            if (all_alpha(p)) {
                char u[40];
                quote_for_msg(u, sizeof u, p, 32);
                return hx_fail(e, EINVAL, "Unknown memory unit \"%s\". Supported units: GiB, MiB, KiB, GB, MB, kB", u);
            }
            goto bad_format;
        }
    }
    unsigned __int128 v = d.overflow ? ~(unsigned __int128)0 : decimal_times(&d, mult) / MIB;
    if (d.overflow || v > UINT32_MAX)
        return hx_fail(e, ERANGE, "Memory value \"%s\" is too large", q);
    *mib = (uint32_t)v;
    return 0;

bad_format:
    return hx_fail(e, EINVAL, "Invalid memory format: \"%s\". Expected a number or a string like \"1GiB\", \"1280MiB\", \"1GB\", etc.", q);
}

int hx_parse_duration_ms(const char *s, uint64_t *ms, struct hx_err *e)
{
    static const struct { const char *name; uint64_t ms; } units[] = {
        { "ms", 1 }, { "s", 1000 }, { "m", 60 * 1000 }, { "h", 3600 * 1000 },
    };
    char q[80];
    if (!s)
        return hx_fail(e, EINVAL, "Invalid duration: missing value");
    quote_for_msg(q, sizeof q, s, 64);
    const char *p = s;
    struct decimal d;
    uint64_t mult = 0;
    if (strnlen(s, NUM_INPUT_MAX + 1) <= NUM_INPUT_MAX && parse_decimal(&p, &d))
        for (size_t i = 0; i < HX_ARRAY_LEN(units); i++)
            if (strcmp(p, units[i].name) == 0)
                mult = units[i].ms;
    if (!mult)
        return hx_fail(e, EINVAL, "Invalid duration \"%s\": expected a number followed by ms, s, m or h (like \"30s\" or \"5m\")", q);
    unsigned __int128 v = d.overflow ? ~(unsigned __int128)0 : decimal_times(&d, mult);
    if (v == 0)
        return hx_fail(e, ERANGE, "Invalid duration \"%s\": must be greater than zero", q);
    if (v > HX_DURATION_MAX_MS)
        return hx_fail(e, ERANGE, "Invalid duration \"%s\": must be at most 7 days", q);
    *ms = (uint64_t)v;
    return 0;
}

int hx_random_chars(const char *alphabet, size_t alen, char *out, size_t n)
{
    if (alen == 0 || alen > 256)
        return -EINVAL;
    /* Rejection sampling: bytes >= limit would make the first
     * (256 % alen) characters more likely than the others. */
    unsigned limit = 256u - 256u % (unsigned)alen;
    uint8_t buf[64];
    size_t have = 0, used = 0, o = 0;
    while (o < n) {
        if (used == have) {
            ssize_t r = getrandom(buf, sizeof buf, 0);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            have = (size_t)r;
            used = 0;
            continue;
        }
        uint8_t b = buf[used++];
        if (b < limit)
            out[o++] = alphabet[b % alen];
    }
    out[n] = '\0';
    return 0;
}

static bool id_char_ok(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z' && c != 'i' && c != 'l' && c != 'o');
}

int hx_sandbox_id_new(const char node[3], char out[32])
{
    for (int i = 0; i < 3; i++)
        if (node[i] < 'a' || node[i] > 'z')
            return -EINVAL;
    memcpy(out, "sbx_", 4);
    memcpy(out + 4, node, 3);
    out[7] = '_';
    return hx_random_chars(HX_ID_ALPHABET, sizeof HX_ID_ALPHABET - 1, out + 8, 20);
}

bool hx_sandbox_id_valid(const char *s)
{
    if (!s || strnlen(s, HX_SANDBOX_ID_LEN + 1) != HX_SANDBOX_ID_LEN || memcmp(s, "sbx_", 4) != 0 || s[7] != '_')
        return false;
    for (int i = 4; i < 7; i++)
        if (s[i] < 'a' || s[i] > 'z')
            return false;
    for (int i = 8; i < HX_SANDBOX_ID_LEN; i++)
        if (!id_char_ok(s[i]))
            return false;
    return true;
}

bool hx_org_name_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, HX_ORG_MAX + 1);
    if (n == 0 || n > HX_ORG_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

bool hx_label_key_valid(const char *k)
{
    if (!k)
        return false;
    size_t n = strnlen(k, HX_LABEL_KEY_MAX + 1);
    if (n == 0 || n > HX_LABEL_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool hx_utf8_printable(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        uint32_t cp;
        size_t len;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return false;
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            cp = c & 0x1f; len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            cp = c & 0x0f; len = 3;
        } else if (c >= 0xf0 && c <= 0xf4) {
            cp = c & 0x07; len = 4;
        } else {
            return false;   /* continuation byte, overlong lead 0xc0/0xc1, or > U+10FFFF */
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
            return false;
        i += len;
    }
    return true;
}

bool hx_label_value_valid(const char *v)
{
    if (!v)
        return false;
    size_t n = strnlen(v, HX_LABEL_VALUE_MAX + 1);
    return n <= HX_LABEL_VALUE_MAX && hx_utf8_printable(v, n);
}

int hx_labels_validate(const json_t *labels, struct hx_err *e)
{
    if (!json_is_object(labels))
        return hx_fail(e, EINVAL, "labels must be an object of strings");
    if (json_object_size(labels) > HX_LABELS_MAX)
        return hx_fail(e, EINVAL, "too many labels (%zu, at most %d)", json_object_size(labels), HX_LABELS_MAX);
    const char *k;
    json_t *v;
    char q[80];
    /* json_object_foreach wants a non-const object; iteration does not modify it. */
    json_object_foreach((json_t *)labels, k, v) {
        if (!hx_label_key_valid(k)) {
            quote_for_msg(q, sizeof q, k, 64);
            return hx_fail(e, EINVAL, "invalid label key \"%s\": use 1 to %d characters of A-Z a-z 0-9 . _ -",
                           q, HX_LABEL_KEY_MAX);
        }
        if (!json_is_string(v))
            return hx_fail(e, EINVAL, "label \"%s\" must have a string value", k);
        const char *sv = json_string_value(v);
        size_t n = json_string_length(v);
        if (n > HX_LABEL_VALUE_MAX || !hx_utf8_printable(sv, n))
            return hx_fail(e, EINVAL, "invalid value for label \"%s\": at most %d bytes of printable text",
                           k, HX_LABEL_VALUE_MAX);
    }
    return 0;
}

void hx_format_iso8601_ms(int64_t ms, char out[32])
{
    /* Clamp to years 1970..9999 so the output always has the same shape. */
    if (ms < 0 || ms > 253402300799999LL)
        ms = 0;
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);   /* 19 characters */
    snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000));
}

int64_t hx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
