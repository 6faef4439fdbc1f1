/* allowNet policy: parsing the SDK's entries ("example.com", "*.example.com:443",
 * "203.0.113.10:80", "[2001:db8::1]:443") and matching names and addresses.
 * Pure functions over bounded input, shared by hutchd (validation) and hutch-proxy. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POLICY_NAME_MAX 253   /* DNS limit for a name in dotted form */
#define POLICY_RULES_MAX 256  /* entries per sandbox */

enum policy_kind { RULE_NAME, RULE_WILDCARD, RULE_IP4, RULE_IP6 };

struct policy_rule {
    enum policy_kind kind;
    uint16_t port;                      /* 0 = any port */
    uint8_t addr[16];                   /* RULE_IP4: first 4 bytes */
    char name[POLICY_NAME_MAX + 1];     /* normalized; for RULE_WILDCARD the suffix without "*." */
};

struct policy {
    bool unrestricted;                  /* allowNet absent: everything (still proxied and audited) */
    size_t n;
    struct policy_rule *rules;          /* owned */
};

/* Normalizes a host name: ASCII letters lowercased, one trailing dot removed,
 * labels of 1..63 characters [a-z0-9_-] (no leading/trailing '-'), at most
 * 253 characters. Non-ASCII (unencoded IDN) is refused: write it as "xn--".
 * Names that the C library would read as an IPv4 address in another
 * spelling ("2130706433", "0x7f.1", "127.1") are refused too, so a name rule
 * can never silently mean an address. Returns the length or -EINVAL. */
int policy_name_normalize(const char *in, size_t n, char out[POLICY_NAME_MAX + 1]);

/* Parses one allowNet entry. 0, or -EINVAL with a reason in why. */
int policy_parse_entry(const char *s, size_t n, struct policy_rule *out, char *why, size_t whycap);

/* True if the normalized name is allowed for port (0 = "for some port",
 * used by DNS). Wildcards match any depth of subdomain, never the apex. */
bool policy_allows_name(const struct policy *p, const char *name, uint16_t port);
/* True if an IP literal rule allows the address (family AF_INET/AF_INET6). */
bool policy_allows_addr(const struct policy *p, int family, const uint8_t *addr, uint16_t port);

void policy_free(struct policy *p);
