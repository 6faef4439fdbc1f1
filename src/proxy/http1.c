/* HTTP/1.x request framing (RFC 9112): heads, Content-Length and chunked bodies. */
#include "proxy/http1.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool tchar(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* RFC 9112 3.2 / RFC 3986: a request-target is visible ASCII only. A space,
 * CR, LF or NUL in it would let "GET /\nHost: evil\nX: HTTP/1.1" be one
 * request line to us and several header lines to a lenient server. */
static bool target_char(uint8_t c)
{
    return c > 0x20 && c < 0x7f;
}

/* RFC 9110 5.5: field-content is VCHAR, obs-text, SP and HTAB; no other
 * control (NUL, bare CR or LF, DEL). */
static bool value_char(uint8_t c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

bool h1_looks_like(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && i < 16 && p[i] >= 'A' && p[i] <= 'Z')
        i++;
    if (i == n)
        return i > 0 && i < 16;
    return i > 0 && p[i] == ' ';
}

static bool value_is(const uint8_t *v, size_t vl, const char *word)
{
    size_t wl = strlen(word);
    return vl == wl && strncasecmp((const char *)v, word, wl) == 0;
}

/* "host[:port]" or "[v6]:port" → host without port (brackets kept off). */
static int authority_host(const uint8_t *a, size_t al, char *host, size_t cap)
{
    while (al && (a[al - 1] == ' ' || a[al - 1] == '\t'))
        al--;
    while (al && (*a == ' ' || *a == '\t'))
        a++, al--;
    const uint8_t *h = a;
    size_t hl = al;
    if (al && a[0] == '[') {
        const uint8_t *close = memchr(a, ']', al);
        if (!close)
            return -EINVAL;
        h = a + 1;
        hl = (size_t)(close - a) - 1;
    } else {
        const uint8_t *colon = memchr(a, ':', al);
        if (colon)
            hl = (size_t)(colon - a);
    }
    if (hl >= cap)
        return -EINVAL;
    for (size_t i = 0; i < hl; i++)
        if (h[i] < 0x21 || h[i] == 0x7f || h[i] == '@' || h[i] == '/')
            return -EINVAL; /* userinfo or controls: never a plain host */
    memcpy(host, h, hl);
    host[hl] = 0;
    return 0;
}

int h1_head_parse(struct h1 *t, const uint8_t *p, size_t n, char *host, size_t hostcap)
{
    size_t lim = n < H1_HEAD_MAX ? n : H1_HEAD_MAX;
    size_t end = 0;
    for (size_t i = 0; i + 3 < lim; i++) {
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') {
            end = i + 4;
            break;
        }
    }
    if (!end)
        return n >= H1_HEAD_MAX ? -E2BIG : 0;
    host[0] = 0;
    /* request line: method SP target SP HTTP/1.x CRLF */
    const uint8_t *le = memchr(p, '\r', end);
    size_t ll = (size_t)(le - p);
    if (le[1] != '\n')
        return -EINVAL; /* a bare CR ends the line for some servers, not for others */
    size_t m = 0;
    while (m < ll && tchar(p[m]))
        m++;
    if (m == 0 || m >= ll || p[m] != ' ')
        return -EINVAL;
    const uint8_t *tgt = p + m + 1;
    const uint8_t *sp = memchr(tgt, ' ', ll - m - 1);
    if (!sp || (size_t)(p + ll - sp) != 9 || memcmp(sp + 1, "HTTP/1.", 7) != 0 || (sp[8] != '0' && sp[8] != '1'))
        return -EINVAL; /* also refuses "PRI * HTTP/2.0": h2c would hide per-request hosts */
    size_t tl = (size_t)(sp - tgt);
    if (tl == 0)
        return -EINVAL;
    for (size_t i = 0; i < tl; i++)
        if (!target_char(tgt[i]))
            return -EINVAL;
    bool connect = m == 7 && memcmp(p, "CONNECT", 7) == 0;
    char target_host[256] = "";
    if (connect) {
        if (authority_host(tgt, tl, target_host, sizeof target_host) < 0)
            return -EINVAL;
    } else if (tl > 7 && (strncasecmp((const char *)tgt, "http://", 7) == 0 || strncasecmp((const char *)tgt, "https://", 8) == 0)) {
        size_t skip = tgt[4] == ':' ? 7 : 8;
        const uint8_t *a = tgt + skip;
        size_t al = tl - skip;
        const uint8_t *slash = memchr(a, '/', al);
        if (slash)
            al = (size_t)(slash - a);
        if (authority_host(a, al, target_host, sizeof target_host) < 0)
            return -EINVAL;
    }

    bool have_host = false, have_cl = false, chunked = false, te = false, upgrade = false;
    uint64_t cl = 0;
    size_t o = ll + 2;
    while (o + 2 <= end - 2) {
        const uint8_t *line = p + o;
        const uint8_t *cr = memchr(line, '\r', end - o);
        size_t len = (size_t)(cr - line);
        if (cr[1] != '\n')
            return -EINVAL;
        o += len + 2;
        if (len == 0)
            break;
        if (line[0] == ' ' || line[0] == '\t')
            return -EINVAL; /* obsolete line folding: a classic smuggling vector */
        const uint8_t *colon = memchr(line, ':', len);
        if (!colon)
            return -EINVAL;
        size_t nl = (size_t)(colon - line);
        if (nl == 0)
            return -EINVAL; /* ": value" has no field name */
        for (size_t i = 0; i < nl; i++)
            if (!tchar(line[i]))
                return -EINVAL; /* also "Host :" with a space */
        const uint8_t *v = colon + 1;
        size_t vl = len - nl - 1;
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        for (size_t i = 0; i < vl; i++)
            if (!value_char(v[i]))
                return -EINVAL;
        if (nl == 4 && strncasecmp((const char *)line, "host", 4) == 0) {
            char h[256];
            if (authority_host(v, vl, h, sizeof h) < 0)
                return -EINVAL;
            if (have_host && strcasecmp(h, host) != 0)
                return -EINVAL;
            if (strlen(h) >= hostcap)
                return -EINVAL;
            strcpy(host, h);
            have_host = true;
        } else if (nl == 14 && strncasecmp((const char *)line, "content-length", 14) == 0) {
            uint64_t x = 0;
            if (vl == 0 || vl > 18)
                return -EINVAL;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return -EINVAL;
                x = x * 10 + (uint64_t)(v[i] - '0');
            }
            if (have_cl && x != cl)
                return -EINVAL;
            cl = x;
            have_cl = true;
        } else if (nl == 17 && strncasecmp((const char *)line, "transfer-encoding", 17) == 0) {
            te = true;
            /* only "chunked" as the final coding is framable; anything else is refused */
            size_t k = vl;
            while (k && v[k - 1] != ',' && v[k - 1] != ' ')
                k--;
            chunked = value_is(v + k, vl - k, "chunked");
            if (!chunked)
                return -EINVAL;
        } else if (nl == 7 && strncasecmp((const char *)line, "upgrade", 7) == 0) {
            upgrade = true;
        }
    }
    if (te && have_cl)
        return -EINVAL;
    if (target_host[0]) {
        if (have_host && strcasecmp(target_host, host) != 0)
            return -EINVAL;
        if (strlen(target_host) >= hostcap)
            return -EINVAL;
        strcpy(host, target_host);
    }
    memset(t, 0, sizeof *t);
    if (connect || upgrade) {
        /* Opaque only once the server agrees (see H1_UPGRADE_WAIT): a server
         * that ignores the Upgrade keeps the connection for more requests,
         * whose Host must still be checked. A body here would blur where the
         * next head starts: refused. */
        if (cl || chunked)
            return -EINVAL;
        t->st = H1_UPGRADE_WAIT;
        t->connect = connect;
    } else if (chunked) {
        t->st = H1_CHUNK_SIZE;
    } else if (cl) {
        t->st = H1_BODY;
        t->left = cl;
    } else {
        t->st = H1_HEAD;
    }
    return (int)end;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long h1_body_advance(struct h1 *t, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        switch (t->st) {
        case H1_HEAD:
            return (long)i;
        case H1_TUNNEL:
            return (long)n;
        case H1_UPGRADE_WAIT:
            return -EINVAL; /* the caller holds these bytes until the answer */
        case H1_BODY: {
            size_t k = n - i < t->left ? n - i : (size_t)t->left;
            i += k;
            t->left -= k;
            if (t->left == 0)
                t->st = H1_HEAD;
            break;
        }
        case H1_CHUNK_SIZE: {
            uint8_t c = p[i++];
            if (++t->line > 1024)
                return -EINVAL;
            if (c == '\n') {
                if (!t->chunk_hex)
                    return -EINVAL;
                t->line = 0;
                t->chunk_hex = t->in_ext = false;
                t->st = t->left ? H1_CHUNK_DATA : H1_TRAILER;
            } else if (c == '\r' || t->in_ext) {
            } else if (c == ';') {
                t->in_ext = true;
            } else {
                int h = hexval(c);
                if (h < 0 || t->left >> 59)
                    return -EINVAL;
                t->left = t->left << 4 | (uint64_t)h;
                t->chunk_hex = true;
            }
            break;
        }
        case H1_CHUNK_DATA: {
            size_t k = n - i < t->left ? n - i : (size_t)t->left;
            i += k;
            t->left -= k;
            if (t->left == 0) {
                t->st = H1_CHUNK_CRLF;
                t->line = 0;
            }
            break;
        }
        case H1_CHUNK_CRLF: {
            uint8_t c = p[i++];
            if (c == '\n') {
                t->st = H1_CHUNK_SIZE;
                t->line = 0;
            } else if (c != '\r' || ++t->line > 1) {
                return -EINVAL;
            }
            break;
        }
        case H1_TRAILER: {
            /* trailer lines until an empty one */
            uint8_t c = p[i++];
            if (c == '\n') {
                if (t->line == 0) {
                    t->st = H1_HEAD;
                } else {
                    t->line = 0;
                }
            } else if (c != '\r') {
                if (++t->line > 8192)
                    return -EINVAL;
            }
            break;
        }
        }
    }
    return (long)i;
}

int h1_response_status(const uint8_t *p, size_t n)
{
    static const char pre[] = "HTTP/1.";
    for (size_t i = 0; i < n && i < 7; i++)
        if (p[i] != (uint8_t)pre[i])
            return -EINVAL;
    if (n < 12)
        return 0;
    if ((p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return -EINVAL;
    int code = 0;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -EINVAL;
        code = code * 10 + (p[i] - '0');
    }
    return code >= 100 && code <= 599 ? code : -EINVAL;
}
