/* nftables rules for sandboxes, in hutchd's own table only ("inet hutch" or
 * "inet hutch_<cgroup-name>"), in hutchd's network namespace. No other table
 * is ever read, changed or flushed. */
#pragma once
#include <stdint.h>
#include "lib/err.h"

/* Replaces (deletes, then creates) our table: TCP from sandbox interfaces
 * (ifname prefix "hxs") is redirected to proxy_port, DNS (UDP and TCP 53) to
 * dns_port, everything else from or to a sandbox interface is dropped; the
 * proxy and DNS ports accept nothing from any other interface. */
int nft_setup(const char *table, uint16_t proxy_port, uint16_t dns_port, struct hx_err *e);
/* Deletes our table (only ours). */
void nft_teardown(const char *table);
