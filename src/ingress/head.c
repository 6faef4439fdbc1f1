/* Request/response head helpers for hutch-ingress (see head.h). */
#include "ingress/head.h"
#include <string.h>
#include <strings.h>
#include "ingress/ctl.h"

bool ig_secret_eq(const char *a, const char *b, size_t n)
{
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

int ig_strip_secret(const char *t, size_t n, const char *name, char *out, size_t cap)
{
    size_t k = strlen(name);
    if (n < k + 1 || t[0] != '/' || !ig_secret_eq(t + 1, name, k))
        return -1;
    const char *rest = t + 1 + k;
    size_t rn = n - 1 - k;
    if (rn > 0 && rest[0] != '/' && rest[0] != '?')
        return -1;
    size_t o = 0;
    if (rn == 0 || rest[0] == '?')
        o = 1;
    if (o + rn + 1 > cap)
        return -1;
    out[0] = '/';
    memcpy(out + o, rest, rn);
    out[o + rn] = 0;
    return (int)(o + rn);
}

/* Walks "a=b; c=d" pairs: calls fn for each with name and value spans. */
static void cookie_each(const char *v, size_t n, void (*fn)(const char *, size_t, const char *, size_t, size_t,
                                                             size_t, void *), void *ud)
{
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && v[i] != ';')
            i++;
        size_t end = i; /* [start, end) is one pair, maybe with spaces */
        size_t a = start;
        while (a < end && (v[a] == ' ' || v[a] == '\t'))
            a++;
        const char *eq = memchr(v + a, '=', end - a);
        size_t nlen = eq ? (size_t)(eq - (v + a)) : end - a;
        const char *val = eq ? eq + 1 : v + end;
        size_t vlen = eq ? (size_t)(v + end - val) : 0;
        while (vlen && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t'))
            vlen--;
        while (nlen && (v[a + nlen - 1] == ' ' || v[a + nlen - 1] == '\t'))
            nlen--;
        fn(v + a, nlen, val, vlen, start, end, ud);
        if (i < n)
            i++; /* the ';' */
    }
}

struct has_ud {
    const char *cname, *name;
    bool found;
};

static void has_one(const char *cn, size_t cl, const char *val, size_t vl, size_t s, size_t e, void *ud)
{
    struct has_ud *h = ud;
    size_t k = strlen(h->name);
    if (cl == strlen(h->cname) && memcmp(cn, h->cname, cl) == 0 && vl == k && ig_secret_eq(val, h->name, k))
        h->found = true;
}

bool ig_cookie_has(const char *v, size_t n, const char *cname, const char *name)
{
    struct has_ud h = {cname, name, false};
    cookie_each(v, n, has_one, &h);
    return h.found;
}

struct strip_ud {
    const char *v;
    char *out;
    size_t o;
};

static void strip_one(const char *cn, size_t cl, const char *val, size_t vl, size_t s, size_t e, void *ud)
{
    struct strip_ud *st = ud;
    size_t pl = strlen(IG_COOKIE_PREFIX);
    if (cl == 0 || (cl >= pl && memcmp(cn, IG_COOKIE_PREFIX, pl) == 0))
        return;
    if (st->o) {
        memcpy(st->out + st->o, "; ", 2);
        st->o += 2;
    }
    size_t len = (size_t)(val + vl - cn);
    memcpy(st->out + st->o, cn, len);
    st->o += len;
}

size_t ig_cookie_strip(const char *v, size_t n, char *out)
{
    struct strip_ud st = {v, out, 0};
    cookie_each(v, n, strip_one, &st);
    return st.o;
}

bool ig_set_cookie_is_ours(const char *v, size_t n)
{
    size_t i = 0;
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
        i++;
    size_t pl = strlen(IG_COOKIE_PREFIX);
    return n - i >= pl && strncasecmp(v + i, IG_COOKIE_PREFIX, pl) == 0;
}

bool ig_hop_header(const char *f, size_t n)
{
    static const char *const hop[] = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te",
                                      "trailer", "proxy-connection", "proxy-authorization", "proxy-authenticate",
                                      "forwarded"};
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        if (n == strlen(hop[i]) && strncasecmp(f, hop[i], n) == 0)
            return true;
    return n >= 12 && strncasecmp(f, "x-forwarded-", 12) == 0;
}

int ig_host_name(const char *host, size_t n, const char *base, char *out)
{
    const char *colon = memchr(host, ':', n);
    if (colon)
        n = (size_t)(colon - host);
    if (n > 0 && host[n - 1] == '.')
        n--; /* "name.base." */
    size_t bl = strlen(base);
    if (n != IG_NAME_LEN + 1 + bl || host[IG_NAME_LEN] != '.' || strncasecmp(host + IG_NAME_LEN + 1, base, bl) != 0)
        return -1;
    for (size_t i = 0; i < IG_NAME_LEN; i++) {
        char c = host[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (!((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7')))
            return -1;
        out[i] = c;
    }
    out[IG_NAME_LEN] = 0;
    return 0;
}
