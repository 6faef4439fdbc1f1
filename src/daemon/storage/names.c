/* Volume and snapshot names, capacities, ids and the pool promise (names.h). */
#include "daemon/storage/names.h"
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "lib/strparse.h"

#define MIB ((uint64_t)1024 * 1024)

static void quote(char *out, size_t cap, const char *s)
{
    size_t j = 0;
    for (size_t i = 0; s[i] && j + 5 < cap && i < 40; i++)
        out[j++] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"') ? s[i] : '?';
    if (s[0] && strnlen(s, 41) > 40 && j + 4 < cap)
        out[j++] = '.', out[j++] = '.', out[j++] = '.';
    out[j] = 0;
}

int vol_slug_check(const char *s, struct hx_err *e)
{
    if (!s)
        return hx_fail(e, EINVAL, "slug is required: 2-32 characters of a-z, 0-9 and -");
    char q[64];
    quote(q, sizeof q, s);
    size_t n = strnlen(s, VOL_SLUG_MAX + 1);
    if (n < 2 || n > VOL_SLUG_MAX)
        return hx_fail(e, EINVAL, "slug \"%s\" must be 2-32 characters long", q);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return hx_fail(e, EINVAL, "slug \"%s\" may contain only lowercase letters a-z, digits 0-9 and -", q);
    }
    if (s[0] == '-' || s[n - 1] == '-')
        return hx_fail(e, EINVAL, "slug \"%s\" must not start or end with -", q);
    if (n >= 4 && s[2] == '-' && s[3] == '-')
        return hx_fail(e, EINVAL, "slug \"%s\" must not contain -- at positions 3 and 4", q);
    return 0;
}

int vol_parse_capacity(const char *s, uint64_t *bytes, struct hx_err *e)
{
    static const struct { const char *name; uint64_t mult; } units[] = {
        {"GiB", 1024ull * MIB}, {"MiB", MIB}, {"KiB", 1024}, {"GB", 1000000000ull}, {"MB", 1000000}, {"kB", 1000},
    };
    char q[64];
    if (!s)
        return hx_fail(e, EINVAL, "capacity is required: bytes or a string such as \"1GiB\"");
    quote(q, sizeof q, s);
    const char *p = s;
    unsigned __int128 whole = 0, frac = 0, frac_div = 1;
    size_t digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 24)
        whole = whole * 10 + (unsigned)(*p++ - '0'), digits++;
    bool has_frac = false;
    if (digits && *p == '.') {
        p++;
        has_frac = true;
        size_t fd = 0;
        while (*p >= '0' && *p <= '9' && fd < 18)
            frac = frac * 10 + (unsigned)(*p++ - '0'), frac_div *= 10, fd++;
        if (fd == 0)
            digits = 0;
    }
    uint64_t mult = 0;
    if (digits && *p == 0 && !has_frac)
        mult = 1;
    for (size_t i = 0; digits && !mult && i < HX_ARRAY_LEN(units); i++)
        if (strcmp(p, units[i].name) == 0)
            mult = units[i].mult;
    if (!mult)
        return hx_fail(e, EINVAL,
                       "capacity \"%s\" is not a number of bytes or a size such as \"512MiB\", \"1GiB\", \"10GB\" "
                       "(units GiB, MiB, KiB, GB, MB, kB)", q);
    unsigned __int128 v = whole * mult + (frac * mult + frac_div - 1) / frac_div;
    v = (v + 4095) / 4096 * 4096;
    if (v > (unsigned __int128)1 << 60)
        return hx_fail(e, ERANGE, "capacity \"%s\" is too large", q);
    *bytes = (uint64_t)v;
    return 0;
}

bool vol_region_valid(const char *s)
{
    size_t n = s ? strnlen(s, 33) : 0;
    if (n == 0 || n > 32)
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

int vol_id_new(const char *prefix, const char *region, const char node[3], char out[32])
{
    const char *mid = region && strlen(region) == 3 && strspn(region, "abcdefghijklmnopqrstuvwxyz") == 3 ? region : node;
    if (strlen(prefix) != 3 || strlen(mid) < 3)
        return -EINVAL;
    memcpy(out, prefix, 3);
    out[3] = '_';
    memcpy(out + 4, mid, 3);
    out[7] = '_';
    return hx_random_chars(HX_ID_ALPHABET, sizeof HX_ID_ALPHABET - 1, out + 8, 20);
}

bool vol_id_valid(const char *s)
{
    if (!s || strnlen(s, VOL_ID_LEN + 1) != VOL_ID_LEN || s[3] != '_' || s[7] != '_' ||
        (memcmp(s, "vol", 3) != 0 && memcmp(s, "snp", 3) != 0))
        return false;
    for (int i = 4; i < 7; i++)
        if (s[i] < 'a' || s[i] > 'z')
            return false;
    return strspn(s + 8, HX_ID_ALPHABET) == 20;
}

int vol_budget_check(uint64_t pool_bytes, uint64_t reserve_bytes, uint64_t committed_bytes, uint64_t want_bytes,
                     const char *what, struct hx_err *e)
{
    uint64_t usable = pool_bytes > reserve_bytes ? pool_bytes - reserve_bytes : 0;
    uint64_t left = usable > committed_bytes ? usable - committed_bytes : 0;
    if (want_bytes <= left)
        return 0;
    return hx_fail(e, ENOSPC,
                   "not enough room in the storage pool for %s of %" PRIu64 " MiB: %" PRIu64
                   " MiB of its %" PRIu64 " MiB are promised to volumes (their full capacity) and snapshots, "
                   "%" PRIu64 " MiB are left (--storage-size)",
                   what, (want_bytes + MIB - 1) / MIB, (committed_bytes + MIB - 1) / MIB, usable / MIB, left / MIB);
}
