/* Sandbox networking on the host: the address pool, a veth per sandbox, the
 * nftables table, the hutch-proxy process (policy in, audit out) and the
 * per-sandbox network report. docs/network.md has the design. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "lib/err.h"

struct sandbox;

struct config;
typedef struct uv_loop_s uv_loop_t;

/* At daemon start (after the config is parsed): loads --resolve and
 * --hosts-file, sets up our nftables table, starts hutch-proxy. cfg and
 * loop stay the caller's and outlive net. */
int net_init(const struct config *cfg, uv_loop_t *loop, struct hx_err *e);
/* hutchd is shutting down: a proxy that exits is no longer restarted. */
void net_stopping(void);
/* At exit: stops the proxy, deletes our table. */
void net_fini(void);

/* Validates an SDK allowNet value (absent/null, or an array of strings). */
int net_allow_validate(json_t *allow_net, struct hx_err *e);

/* A create's network, in three steps. On the loop, before the launch:
 * decides whether the sandbox gets a veth (1, sb->net set), none (0:
 * networking off, or allowNet []: loopback only) or fails (-errno); a
 * sandbox with sb->net is detached at teardown whatever happens next. */
int net_sandbox_prepare(struct sandbox *sb, struct hx_err *e);
/* On the launch's worker thread, once PID 1 exists: its veth (peer "eth0"
 * inside), addresses and routes on both ends. Touches nothing of the loop's. */
struct net_sb;
int net_sandbox_plumb(const struct net_sb *n, pid_t pid, int pidfd, struct hx_err *e);
/* Back on the loop, before HX_SETUP: hands the policy to the proxy;
 * *setup_net gets the object for the HX_SETUP "net" member (NULL without
 * a veth). */
int net_sandbox_attach(struct sandbox *sb, json_t **setup_net, struct hx_err *e);
/* Live restore: takes over the veth a previous hutchd made for the sandbox
 * (same slot, same addresses) and hands its policy to the proxy. */
int net_sandbox_adopt(struct sandbox *sb, struct hx_err *e);
/* Replaces the policy of an attached sandbox (a pooled one handed over). */
int net_sandbox_set_policy(struct sandbox *sb, json_t *allow_net, struct hx_err *e);
/* At teardown: forgets the policy and frees the audit log. Idempotent.
 * The veth is net_link_remove's, before the slot (its name) is reused. */
void net_sandbox_detach(struct sandbox *sb);
/* The name of the host-side veth of a sandbox's net state (sb->net, may be
 * NULL) into out (16 bytes); false when it has none. */
bool net_link_name(const struct net_sb *n, char out[16]);
/* Removes a veth by name if its namespace has not taken it already (any
 * thread: it opens its own netlink socket; it waits for the host-wide
 * rtnl_lock, so never on the loop). who names it in a log line. */
void net_link_remove(const char *ifname, const char *who);

/* Live restore: forgets the sandbox's network state in memory only (its
 * veth, addresses and policy stay for the next hutchd). */
void net_sandbox_forget(struct sandbox *sb);
/* At exit: stops the proxy; the nftables table stays when keep_table (sandboxes
 * left running keep their firewall while no hutchd runs). */
void net_fini_keep(bool keep_table);

/* What hutch-proxy reported for all sandboxes since hutchd started (metrics). */
struct net_counts {
    uint64_t allowed, blocked;  /* connections and lookups, by verdict */
    uint64_t bytes_out, bytes_in;
    uint64_t substitutions;     /* secrets substituted */
};
void net_counts(struct net_counts *out);

/* Bytes the sandbox sent and received through the proxy so far (metering). */
void net_sandbox_bytes(const struct sandbox *sb, uint64_t *out, uint64_t *in);

/* GET /api/v2/sandboxes/{id}/network: addresses, policy, per-destination
 * byte counts and the audit log (newest last). New reference. */
json_t *net_sandbox_report(struct sandbox *sb);

/* fetch (rpc_net.c): a socket born in the sandbox's network namespace, so
 * that what it connects to goes out of the sandbox's eth0, through the
 * nftables redirect and hutch-proxy exactly like the sandbox's own traffic
 * (allowNet, secrets, audit, counts). O_CLOEXEC|O_NONBLOCK. -errno. */
int net_sandbox_socket(struct sandbox *sb, int domain, int type, struct hx_err *e);
/* The sandbox's resolver as it sees it (its gateway, port 53: the DNS
 * responder with the sandbox's policy). -ENETUNREACH without a veth. */
int net_sandbox_resolver(struct sandbox *sb, uint8_t addr4[4]);
