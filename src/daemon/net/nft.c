/* The sandbox firewall as one nftables table (see nft.h), loaded atomically
 * with libnftables. Rules match the interface-name prefix, so a sandbox is
 * covered from the moment its veth exists, before any per-sandbox step. */
#include "daemon/net/nft.h"
#include <nftables/libnftables.h>
#include <stdio.h>
#include <string.h>

#define SB_IF "\"hxs*\""

static int run(const char *cmd, struct hx_err *e)
{
    struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!ctx)
        return hx_fail(e, ENOMEM, "nft_ctx_new failed");
    nft_ctx_buffer_output(ctx);
    nft_ctx_buffer_error(ctx);
    int r = nft_run_cmd_from_buffer(ctx, cmd);
    if (r != 0) {
        const char *err = nft_ctx_get_error_buffer(ctx);
        hx_fail(e, EINVAL, "nftables: %.200s", err ? err : "failed");
    }
    nft_ctx_free(ctx);
    return r != 0 ? -EINVAL : 0;
}

int nft_setup(const char *table, uint16_t pp, uint16_t dp, struct hx_err *e)
{
    char cmd[4096];
    /* "add" then "delete" of our own table: removes a stale copy left by a
     * crashed hutchd without touching anything else, in one transaction
     * with the new ruleset. */
    snprintf(cmd, sizeof cmd,
             "add table inet %1$s\n"
             "delete table inet %1$s\n"
             "table inet %1$s {\n"
             "  chain sb_pre {\n"
             "    type nat hook prerouting priority dstnat; policy accept;\n"
             "    iifname " SB_IF " udp dport 53 redirect to :%3$u\n"
             "    iifname " SB_IF " tcp dport 53 redirect to :%3$u\n"
             /* hutchd's own addresses (the gateway, the API, host services) are
              * not "the internet": not proxied, refused in sb_from */
             "    iifname " SB_IF " fib daddr type local return\n"
             "    iifname " SB_IF " meta l4proto tcp redirect to :%2$u\n"
             "  }\n"
             "  chain sb_in {\n"
             "    type filter hook input priority filter - 5; policy accept;\n"
             "    iifname " SB_IF " jump sb_from\n"
             /* nothing but sandboxes may talk to the proxy or its DNS */
             "    tcp dport { %2$u, %3$u } drop\n"
             "    udp dport %3$u drop\n"
             "  }\n"
             "  chain sb_from {\n"
             "    tcp dport { %2$u, %3$u } ct status dnat accept\n"
             "    udp dport %3$u ct status dnat accept\n"
             "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } ip6 hoplimit 255 accept\n"
             /* a refused connection fails fast instead of hanging */
             "    meta l4proto tcp counter reject with tcp reset\n"
             "    counter drop\n"
             "  }\n"
             "  chain sb_fwd {\n"
             "    type filter hook forward priority filter - 5; policy accept;\n"
             /* no routing: sandbox to sandbox, to the host's networks, or in */
             "    iifname " SB_IF " counter drop\n"
             "    oifname " SB_IF " counter drop\n"
             "  }\n"
             "  chain sb_out {\n"
             "    type filter hook output priority filter - 5; policy accept;\n"
             "    oifname " SB_IF " meta l4proto { tcp, udp } accept\n"
             "    oifname " SB_IF " icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept\n"
             "    oifname " SB_IF " drop\n"
             "  }\n"
             "}\n",
             table, pp, dp);
    return run(cmd, e);
}

void nft_teardown(const char *table)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "add table inet %1$s\ndelete table inet %1$s\n", table);
    struct hx_err e = {0};
    if (run(cmd, &e) < 0)
        fprintf(stderr, "hutchd: %s\n", e.msg);
}
