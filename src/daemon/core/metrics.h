/* Prometheus metrics (metrics.c): counters the rest of hutchd bumps with
 * one-line hooks, rendered in the text exposition format 0.0.4 for
 * GET /metrics. Gauges (sandboxes by state, pool, hutchd's memory and fds)
 * are read when scraped. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum metrics_rpc_outcome { RPC_DISPATCHED, RPC_UNKNOWN_METHOD, RPC_SANDBOX_STOPPING, RPC_INVALID, RPC_OUTCOMES };

/* A create answered (ok or not), started at uv_hrtime() t0_ns. */
void metrics_create_done(uint64_t t0_ns, bool ok);
/* method: a static name from the method tables, or NULL (not one we know). */
void metrics_rpc(const char *method, enum metrics_rpc_outcome outcome);
void metrics_agent_bytes(bool in, size_t n);
/* A transfer on the raw file channel (rest_files.c) ended. */
void metrics_raw_file(bool upload, bool ok, uint64_t bytes);
/* fileRead's read-ahead (rpc_fs.c): a read answered at once by it, one that waited for the read
 * ahead already out, or a read-ahead given back (seek). */
enum metrics_readahead { READAHEAD_HIT, READAHEAD_WAITED, READAHEAD_UNDONE };
void metrics_readahead(enum metrics_readahead what);
/* hutch-ingress's request for an upstream connection answered: 0 = made, else the errno it got. */
void metrics_ingress_upstream(int err);
void metrics_ssh_login(bool ok);
/* New text (malloc'd, *len bytes). */
char *metrics_render(size_t *len);
