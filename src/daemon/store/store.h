/* hutchd's persistent state in SQLite (<state_dir>/hutch.db): API tokens
 * (only their SHA-256 is stored), sandboxes and usage records. One
 * connection, used from the event loop thread only. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include "lib/err.h"

struct store;

/* Opens (creating with mode 0600, and the directory with 0700 if missing)
 * and migrates the database. */
int store_open(const char *state_dir, struct store **out, struct hx_err *e);
void store_close(struct store *s);

/* ---- tokens ----
 * Token text: "ddo_" + 40 characters [a-z0-9] from getrandom (≈206 bits);
 * the SDK treats the "ddo_" prefix as "org comes with the token". Only the
 * hex SHA-256 of the text is stored. Ids: "tok_" + 12 characters [a-z0-9].
 * Org names: [a-z0-9-]{1,63}; token names: 1..128 bytes of printable UTF-8. */
#define STORE_TOKEN_LEN 44
int store_token_create(struct store *s, const char *org, const char *name, bool admin,
                       char token_out[64], char id_out[32], struct hx_err *e);
/* -EACCES for unknown, revoked or malformed tokens. Updates lastUsedAt (at
 * most once a minute per token, to keep checks from writing every time). */
/* id_out (32 bytes, may be NULL) gets the token's id, e.g. to close the
 * connections it opened once it is revoked. */
int store_token_check(struct store *s, const char *token, char org_out[64], bool *admin_out, char *id_out,
                      struct hx_err *e);
/* New array of {id, name, org, admin, createdAt, lastUsedAt (ISO|null)} of the
 * tokens not revoked, oldest first; org NULL = all orgs. */
int store_token_list(struct store *s, const char *org, json_t **out, struct hx_err *e);
/* -ENOENT if no such token or already revoked. */
int store_token_revoke(struct store *s, const char *id, struct hx_err *e);
/* Tokens not revoked (hutchd creates a first admin token when 0). */
int store_token_count(struct store *s, int *n, struct hx_err *e);

/* ---- sandboxes ---- */
struct sandbox_rec {
    char id[32];
    char org[64];
    int64_t created_ms;     /* ms since the epoch */
    int64_t stopped_ms;     /* 0 = running */
    int64_t stop_at_ms;     /* 0 = lives as long as its session */
    uint32_t memory_mb;
    uint32_t uid_base;
    int32_t init_pid;
    char region[8];
    /* JSON object of string labels. store_sandbox_insert borrows it (NULL =
     * no labels); store_sandbox_get sets an owned reference that
     * sandbox_rec_clear releases; in store_sandbox_each_running it is
     * borrowed for the duration of the callback. */
    json_t *labels;
};
/* -EEXIST if the id is taken, -EINVAL for an invalid id/org/labels. */
int store_sandbox_insert(struct store *s, const struct sandbox_rec *r, struct hx_err *e);
/* Marks stopped; a second call keeps the first stop time. -ENOENT. */
int store_sandbox_set_stopped(struct store *s, const char *id, int64_t stopped_ms, struct hx_err *e);
/* -ENOENT. */
int store_sandbox_set_stop_at(struct store *s, const char *id, int64_t stop_at_ms, struct hx_err *e);
/* Live restore: PID 1's start time (clock ticks after boot, /proc/PID/stat
 * field 22: a reused pid has another) and a JSON object of what adoption
 * needs (borrowed; NULL = not adoptable). -ENOENT. */
int store_sandbox_set_restore(struct store *s, const char *id, uint64_t init_start, json_t *restore,
                              struct hx_err *e);
/* *restore: new reference, NULL when none (or not an object). -ENOENT. */
int store_sandbox_get_restore(struct store *s, const char *id, uint64_t *init_start, json_t **restore,
                              struct hx_err *e);
/* -ENOENT. Call sandbox_rec_clear(out) afterwards (also safe on failure). */
int store_sandbox_get(struct store *s, const char *id, struct sandbox_rec *out, struct hx_err *e);
/* New array in the SDK's shape: [{id, createdAt, stoppedAt (ISO|null),
 * region, status "running"|"stopped", labels}], newest first, only org's,
 * at most STORE_LIST_MAX entries. label_filter (object of strings or NULL):
 * a sandbox matches when it has every given key with the given value. */
#define STORE_LIST_MAX 1000
int store_sandbox_list(struct store *s, const char *org, json_t *label_filter, json_t **out,
                       struct hx_err *e);
/* Calls cb for every sandbox not stopped (for cleanup after a restart). The
 * records are read first, so cb may call other store functions (e.g.
 * store_sandbox_set_stopped). A negative return from cb stops the walk and
 * is returned. */
int store_sandbox_each_running(struct store *s, int (*cb)(const struct sandbox_rec *r, void *ud),
                               void *ud, struct hx_err *e);
void sandbox_rec_clear(struct sandbox_rec *r);

/* ---- usage (metering) ----
 * One record per sandbox run (or per interval, as the caller chooses). */
struct usage_rec {
    const char *sandbox_id;
    const char *org;
    int64_t start_ms, end_ms;   /* wall-clock interval the record covers */
    uint64_t cpu_ms;            /* CPU time used in the interval */
    uint64_t cpu_us;            /* the same in microseconds (metering's unit) */
    uint32_t mem_peak_mb;       /* peak memory in the interval */
    uint64_t net_tx_bytes, net_rx_bytes;
};
int store_usage_add(struct store *s, const struct usage_rec *u, struct hx_err *e);
/* Sums of an org's records with start_ms in [from_ms, to_ms): new object
 * {records, wallMs, cpuMs, memPeakMb (max), netTxBytes, netRxBytes}. */
int store_usage_sum(struct store *s, const char *org, int64_t from_ms, int64_t to_ms, json_t **out,
                    struct hx_err *e);

/* ---- volumes and snapshots (volumes.c) ----
 * One row per volume or snapshot; slugs are unique per organization across
 * both. Sizes in bytes. */
struct vol_rec {
    char id[32];
    char org[64];
    char kind[12];          /* "volume" | "snapshot" */
    char slug[40];
    char region[40];
    uint64_t capacity, allocated, flattened;
    bool bootable;
    char base_id[32];       /* "" = none */
    char base_slug[40];
    int64_t created_ms;
    int64_t seq;            /* list order and cursor */
};
/* -EEXIST (message names the slug) when the slug is taken in the org. */
int store_vol_insert(struct store *s, const struct vol_rec *r, struct hx_err *e);
/* By id or slug within org; kind "volume", "snapshot" or NULL (either). -ENOENT. */
int store_vol_get(struct store *s, const char *org, const char *kind, const char *id_or_slug, struct vol_rec *out,
                  struct hx_err *e);
/* Up to limit rows of kind in org after the cursor seq (0 = from the start),
 * whose slug contains search or whose id equals it (NULL = all). *n rows in
 * out (caller's array of limit); *more set when rows follow. */
int store_vol_list(struct store *s, const char *org, const char *kind, const char *search, int64_t after_seq,
                   unsigned limit, struct vol_rec *out, unsigned *n, bool *more, struct hx_err *e);
int store_vol_delete(struct store *s, const char *id, struct hx_err *e);
int store_vol_set_sizes(struct store *s, const char *id, uint64_t allocated, uint64_t flattened, struct hx_err *e);
/* What the pool promised (every org): volume capacities plus snapshot sizes. */
int store_vol_committed(struct store *s, uint64_t *bytes, struct hx_err *e);
/* Volumes whose base is the snapshot id. */
int store_vol_dependents(struct store *s, const char *snapshot_id, int *n, struct hx_err *e);

/* ---- metering (metering.c): usage items, volume sizes over time, audit ---- */
/* A stopped sandbox's usage record with what its sandbox row adds. */
struct usage_item {
    const char *sandbox_id;
    int64_t start_ms, end_ms;
    uint64_t cpu_us;
    uint32_t memory_mb;         /* its memory limit */
    uint64_t egress_bytes;      /* bytes it sent out */
    json_t *labels;             /* borrowed for the callback; never NULL */
};
/* Calls cb for each of org's records whose interval meets [from_ms, to_ms).
 * A negative return from cb stops the walk and is returned. */
int store_usage_each(struct store *s, const char *org, int64_t from_ms, int64_t to_ms,
                     int (*cb)(const struct usage_item *it, void *ud), void *ud, struct hx_err *e);
/* Volume storage over time: from at_ms on, the volume holds bytes (0 once
 * deleted). volumes.c marks every insert, size change and delete. */
int store_vol_usage_mark(struct store *s, const char *id, uint64_t bytes, struct hx_err *e);
struct vol_span {
    const char *volume_id;
    int64_t start_ms, end_ms;   /* end_ms = now_ms for a volume that still holds it */
    uint64_t mib;
};
int store_vol_usage_each(struct store *s, const char *org, int64_t now_ms,
                         int (*cb)(const struct vol_span *sp, void *ud), void *ud, struct hx_err *e);
/* Audit: who (token id, "" = unix socket) did what to which target. */
int store_audit_add(struct store *s, const char *org, const char *token_id, const char *action, const char *target,
                    const char *detail, struct hx_err *e);
/* New object {entries: [{seq, time (ISO), timeMs, tokenId, action, target, detail}], more}:
 * org's entries at or after since_ms, oldest first, at most limit (1..1000). */
#define STORE_AUDIT_MAX 1000
int store_audit_list(struct store *s, const char *org, int64_t since_ms, unsigned limit, json_t **out,
                     struct hx_err *e);

/* ---- apps, layers, revisions (apps.c) ----
 * Each is one JSON document (the SDK's shape, secrets included: the REST
 * layer masks them) with id, org, kind, slug (apps and layers, unique per
 * org and kind) and parent (a revision's app). */
/* Inserts or replaces by id. -EEXIST when the slug is taken. doc borrowed. */
int store_obj_put(struct store *s, const char *kind, const char *id, const char *org, const char *slug,
                  const char *parent, json_t *doc, struct hx_err *e);
/* By id, or slug within org and kind. -ENOENT. *doc is new. */
int store_obj_get(struct store *s, const char *kind, const char *org, const char *id_or_slug, json_t **doc,
                  struct hx_err *e);
/* Up to limit docs of kind in org (parent: only those, NULL = any) after the
 * cursor seq (0 = from the start), oldest first. *out a new array; *next_seq
 * the cursor of the next page, 0 when no more follow. */
int store_obj_list(struct store *s, const char *kind, const char *org, const char *parent, int64_t after_seq,
                   unsigned limit, json_t **out, int64_t *next_seq, struct hx_err *e);
int store_obj_delete(struct store *s, const char *id, struct hx_err *e);
/* Every doc of kind in every org (at start-up): cb(org, doc, ud), doc borrowed. */
int store_obj_each(struct store *s, const char *kind, void (*cb)(const char *org, json_t *doc, void *ud), void *ud,
                   struct hx_err *e);
/* Ids of the volumes apps' code made (org "apps:..."): build and instance
 * images, none of which outlives a hutchd. A new array of strings. */
int store_app_volumes(struct store *s, json_t **out, struct hx_err *e);

/* Runtime logs: one row per line; at most keep rows per app are kept (the
 * oldest go). */
int store_log_add(struct store *s, const char *app_id, const char *revision_id, int64_t at_ms, const char *level,
                  const char *message, unsigned keep, struct hx_err *e);
/* Lines of app_id with at_ms in [from_ms, to_ms), seq > after_seq, level at
 * least min_level (0 debug .. 3 error), revision (NULL = any), containing
 * query (NULL = any): a new array of {timestamp, level, message,
 * revision_id}; *next_seq 0 when no more follow. */
int store_log_query(struct store *s, const char *app_id, int64_t from_ms, int64_t to_ms, const char *revision,
                    int min_level, const char *query, int64_t after_seq, unsigned limit, json_t **out,
                    int64_t *next_seq, struct hx_err *e);
int store_log_delete_app(struct store *s, const char *app_id, struct hx_err *e);
