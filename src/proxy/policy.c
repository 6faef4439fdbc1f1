/* allowNet entries: parsing and matching (see policy.h). Every input is
 * hostile (it comes from API clients or from sandbox traffic). */
#include "proxy/policy.h"
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int policy_name_normalize(const char *in, size_t n, char out[POLICY_NAME_MAX + 1])
{
    if (n > 0 && in[n - 1] == '.')
        n--;
    if (n == 0 || n > POLICY_NAME_MAX)
        return -EINVAL;
    size_t label = 0;
    bool all_numeric = true; /* digits, dots and hex-ish spellings */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c == '.') {
            if (label == 0 || out[i - 1] == '-')
                return -EINVAL;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            if (c == '-' && label == 0)
                return -EINVAL;
            if (++label > 63)
                return -EINVAL;
            if (!((c >= '0' && c <= '9') || c == 'x' || (c >= 'a' && c <= 'f')))
                all_numeric = false;
        } else {
            return -EINVAL; /* includes bytes >= 0x80: IDN must come as punycode */
        }
        out[i] = (char)c;
    }
    if (out[n - 1] == '-')
        return -EINVAL;
    out[n] = 0;
    /* "2130706433", "0x7f.1", "127.1": inet_aton accepts them as addresses,
     * and so do curl and glibc's resolver. A name rule must never be one. */
    struct in_addr a;
    if (all_numeric && inet_aton(out, &a))
        return -EINVAL;
    return (int)n;
}

static int why_fail(char *why, size_t cap, const char *msg, const char *s, size_t n)
{
    if (why && cap)
        snprintf(why, cap, "%s: \"%.*s\"", msg, (int)(n > 100 ? 100 : n), s);
    return -EINVAL;
}

static int parse_port(const char *s, size_t n, uint16_t *port)
{
    if (n == 0 || n > 5)
        return -EINVAL;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -EINVAL;
    *port = (uint16_t)v;
    return 0;
}

int policy_parse_entry(const char *s, size_t n, struct policy_rule *out, char *why, size_t whycap)
{
    memset(out, 0, sizeof *out);
    if (n == 0 || n > 300)
        return why_fail(why, whycap, "allowNet entry is empty or too long", s, n);
    char buf[302];
    memcpy(buf, s, n);
    buf[n] = 0;
    if (memchr(s, 0, n))
        return why_fail(why, whycap, "allowNet entry contains a NUL byte", s, n);

    const char *host = buf;
    size_t hlen = n;
    /* "[v6]" or "[v6]:port" */
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (!close)
            return why_fail(why, whycap, "unterminated [ in allowNet entry", s, n);
        *close = 0;
        if (close[1] == ':') {
            if (parse_port(close + 2, strlen(close + 2), &out->port) < 0)
                return why_fail(why, whycap, "bad port in allowNet entry", s, n);
        } else if (close[1]) {
            return why_fail(why, whycap, "unexpected text after ] in allowNet entry", s, n);
        }
        if (inet_pton(AF_INET6, buf + 1, out->addr) != 1)
            return why_fail(why, whycap, "not an IPv6 address", s, n);
        out->kind = RULE_IP6;
        return 0;
    }
    /* A bare IPv6 address (two or more colons), no port possible. */
    const char *c1 = strchr(buf, ':');
    if (c1 && strchr(c1 + 1, ':')) {
        if (inet_pton(AF_INET6, buf, out->addr) != 1)
            return why_fail(why, whycap, "not an IPv6 address (write [addr]:port for a port)", s, n);
        out->kind = RULE_IP6;
        return 0;
    }
    if (c1) {
        if (parse_port(c1 + 1, strlen(c1 + 1), &out->port) < 0)
            return why_fail(why, whycap, "bad port in allowNet entry", s, n);
        hlen = (size_t)(c1 - buf);
        buf[hlen] = 0;
    }
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->kind = RULE_IP4;
        return 0;
    }
    if (hlen > 2 && host[0] == '*' && host[1] == '.') {
        if (policy_name_normalize(host + 2, hlen - 2, out->name) < 0)
            return why_fail(why, whycap, "bad host name in allowNet wildcard", s, n);
        out->kind = RULE_WILDCARD;
        return 0;
    }
    if (policy_name_normalize(host, hlen, out->name) < 0)
        return why_fail(why, whycap, "not a valid host name or IP address (IDN names must be written as xn--)", s, n);
    out->kind = RULE_NAME;
    return 0;
}

bool policy_allows_name(const struct policy *p, const char *name, uint16_t port)
{
    if (p->unrestricted)
        return true;
    size_t nl = strlen(name);
    for (size_t i = 0; i < p->n; i++) {
        const struct policy_rule *r = &p->rules[i];
        if (r->port && port && r->port != port)
            continue;
        if (r->kind == RULE_NAME && strcmp(r->name, name) == 0)
            return true;
        if (r->kind == RULE_WILDCARD) {
            size_t sl = strlen(r->name);
            /* "*.example.com" matches "a.example.com", "a.b.example.com", not "example.com" or "xexample.com" */
            if (nl > sl + 1 && name[nl - sl - 1] == '.' && memcmp(name + nl - sl, r->name, sl) == 0)
                return true;
        }
    }
    return false;
}

bool policy_allows_addr(const struct policy *p, int family, const uint8_t *addr, uint16_t port)
{
    if (p->unrestricted)
        return true;
    for (size_t i = 0; i < p->n; i++) {
        const struct policy_rule *r = &p->rules[i];
        if (r->port && r->port != port)
            continue;
        if (family == AF_INET && r->kind == RULE_IP4 && memcmp(r->addr, addr, 4) == 0)
            return true;
        if (family == AF_INET6 && r->kind == RULE_IP6 && memcmp(r->addr, addr, 16) == 0)
            return true;
    }
    return false;
}

void policy_free(struct policy *p)
{
    free(p->rules);
    p->rules = NULL;
    p->n = 0;
}
