/* Metering (usage.c, procstats.c, audit in usage.c): usage in the seed's
 * units for an organization, per-command figures of a sandbox, and the
 * audit of who did what. docs/metering.md has the design. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "lib/err.h"

struct sandbox;

/* CPU time its cgroup used so far (ns; 0 when it cannot be read). */
uint64_t usage_cpu_ns(struct sandbox *sb);

enum usage_by { USAGE_BY_NONE, USAGE_BY_SANDBOX, USAGE_BY_DAY, USAGE_BY_LABEL };
struct usage_query {
    const char *org;
    int64_t from_ms, to_ms;     /* the range the report covers: [from, to) */
    enum usage_by by;
    const char *label_key;      /* USAGE_BY_LABEL */
};
/* New object {from, to, by, prices, total, groups: [{key, ...}]} for the
 * org's stopped and running sandboxes and its volumes. */
int usage_report(const struct usage_query *q, json_t **out, struct hx_err *e);

/* Audit: one entry in the store (and a log line when that fails). */
void audit_log(const char *org, const char *token_id, const char *action, const char *target, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Per-command usage (procstats.c): what each reaped process used, the last
 * PROCSTATS_MAX of a sandbox kept. */
#define PROCSTATS_MAX 1000
struct proc_usage {
    uint32_t pid;
    int code;
    char signal[16];
    int64_t started_ms, ended_ms;
    uint64_t cpu_user_us, cpu_system_us, max_rss_kib, blk_read_bytes, blk_write_bytes, wall_us;
};
/* Validates the "usage" member of an exit frame (hostile: the agent may be
 * the sandbox's). 1 = filled, 0 = absent (an older agent), -1 = malformed. */
int procstats_parse(json_t *usage, struct proc_usage *out);
void procstats_add(struct sandbox *sb, const struct proc_usage *u);
/* New object {processes: [...] oldest first, dropped}; pid > 0: only that pid. */
json_t *procstats_report(struct sandbox *sb, uint32_t pid);
void procstats_free(struct sandbox *sb);

/* REST (rest_metering.c). org: the caller's; admin may name another with ?org=. */
struct http_conn;
struct http_request;
void rest_usage(struct http_conn *c, const struct http_request *req, const char *org, bool admin);
void rest_audit(struct http_conn *c, const struct http_request *req, const char *org, bool admin);
void rest_metrics(struct http_conn *c);
void rest_processes(struct http_conn *c, const struct http_request *req, struct sandbox *sb);
