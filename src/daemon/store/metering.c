/* Metering state: the usage records joined with their sandboxes, volume
 * sizes over time (one row per change), and the audit of who did what. */
#include "daemon/store/db.h"
#include <stdio.h>
#include <string.h>
#include "lib/strparse.h"

int store_usage_each(struct store *s, const char *org, int64_t from_ms, int64_t to_ms,
                     int (*cb)(const struct usage_item *it, void *ud), void *ud, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    /* memory_mb and labels come from the sandbox row (kept after it stops). */
    int r = db_prepare(s, "SELECT u.sandbox_id, u.start_ms, u.end_ms, coalesce(u.cpu_us, u.cpu_ms * 1000), "
                          "coalesce(b.memory_mb, 0), u.net_tx_bytes, coalesce(b.labels, '{}') "
                          "FROM usage u LEFT JOIN sandboxes b ON b.id = u.sandbox_id "
                          "WHERE u.org = ?1 AND u.end_ms >= ?2 AND u.start_ms < ?3 ORDER BY u.start_ms", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, org, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 2, from_ms);
    sqlite3_bind_int64(st, 3, to_ms);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char id[32];
        db_column_copy(st, 0, id, sizeof id);
        const unsigned char *lt = sqlite3_column_text(st, 6);
        json_t *labels = lt ? json_loads((const char *)lt, 0, NULL) : NULL;
        if (!json_is_object(labels)) { /* a damaged column reads as no labels */
            json_decref(labels);
            labels = json_object();
        }
        int64_t cpu = sqlite3_column_int64(st, 3), mem = sqlite3_column_int64(st, 4), tx = sqlite3_column_int64(st, 5);
        struct usage_item it = {
            .sandbox_id = id,
            .start_ms = sqlite3_column_int64(st, 1),
            .end_ms = sqlite3_column_int64(st, 2),
            .cpu_us = cpu > 0 ? (uint64_t)cpu : 0,
            .memory_mb = mem > 0 && mem < UINT32_MAX ? (uint32_t)mem : 0,
            .egress_bytes = tx > 0 ? (uint64_t)tx : 0,
            .labels = labels,
        };
        r = labels ? cb(&it, ud) : hx_fail(e, ENOMEM, "out of memory");
        json_decref(labels);
        if (r < 0)
            return r;
    }
    return rc == SQLITE_DONE ? 0 : db_fail(s, rc, "read usage", e);
}

int store_vol_usage_mark(struct store *s, const char *id, uint64_t bytes, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    /* Volumes only (snapshots are not billed as volume storage); MiB rounded
     * up, so a volume holding anything is never free. */
    int r = db_prepare(s, "INSERT INTO volume_usage (volume_id, org, at_ms, mib) "
                          "SELECT id, org, ?2, ?3 FROM storage WHERE id = ?1 AND kind = 'volume'", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, id, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 2, hx_now_ms());
    sqlite3_bind_int64(st, 3, (sqlite3_int64)((bytes + (1u << 20) - 1) >> 20));
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : db_fail(s, rc, "mark volume usage", e);
}

int store_vol_usage_each(struct store *s, const char *org, int64_t now_ms,
                         int (*cb)(const struct vol_span *sp, void *ud), void *ud, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "SELECT volume_id, at_ms, mib FROM volume_usage WHERE org = ?1 "
                          "ORDER BY volume_id, at_ms, rowid", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, org, e)) < 0)
        return r;
    /* Each row's level holds until the volume's next row (or now). */
    char cur[32] = "";
    int64_t at = 0;
    uint64_t mib = 0;
    int rc;
    for (;;) {
        rc = sqlite3_step(st);
        char id[32] = "";
        int64_t next_at = now_ms;
        if (rc == SQLITE_ROW) {
            db_column_copy(st, 0, id, sizeof id);
            next_at = sqlite3_column_int64(st, 1);
        } else if (rc != SQLITE_DONE) {
            return db_fail(s, rc, "read volume usage", e);
        }
        if (cur[0] && mib) {
            int64_t end = strcmp(id, cur) == 0 ? next_at : now_ms;
            struct vol_span sp = {.volume_id = cur, .start_ms = at, .end_ms = end > at ? end : at, .mib = mib};
            if ((r = cb(&sp, ud)) < 0)
                return r;
        }
        if (rc == SQLITE_DONE)
            return 0;
        snprintf(cur, sizeof cur, "%s", id);
        at = next_at;
        int64_t m = sqlite3_column_int64(st, 2);
        mib = m > 0 ? (uint64_t)m : 0;
    }
}

int store_audit_add(struct store *s, const char *org, const char *token_id, const char *action, const char *target,
                    const char *detail, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "INSERT INTO audit (at_ms, org, token_id, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
                       &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 2, org, e)) < 0 || (r = db_bind_text(s, st, 3, token_id ? token_id : "", e)) < 0 ||
        (r = db_bind_text(s, st, 4, action, e)) < 0 || (r = db_bind_text(s, st, 5, target ? target : "", e)) < 0 ||
        (r = db_bind_text(s, st, 6, detail ? detail : "", e)) < 0)
        return r;
    sqlite3_bind_int64(st, 1, hx_now_ms());
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : db_fail(s, rc, "add audit entry", e);
}

int store_audit_list(struct store *s, const char *org, int64_t since_ms, unsigned limit, json_t **out,
                     struct hx_err *e)
{
    *out = NULL;
    if (limit < 1 || limit > STORE_AUDIT_MAX)
        return hx_fail(e, EINVAL, "limit must be between 1 and %d", STORE_AUDIT_MAX);
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "SELECT seq, at_ms, token_id, action, target, detail FROM audit "
                          "WHERE org = ?1 AND at_ms >= ?2 ORDER BY at_ms, seq LIMIT ?3", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, org, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 2, since_ms);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)limit + 1);
    json_t *arr = json_array();
    bool more = false;
    int rc = SQLITE_DONE;
    while (arr && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (json_array_size(arr) == limit) {
            more = true;
            break;
        }
        char iso[32], tok[32], action[32], target[64], detail[256];
        hx_format_iso8601_ms(sqlite3_column_int64(st, 1), iso);
        db_column_copy(st, 2, tok, sizeof tok);
        db_column_copy(st, 3, action, sizeof action);
        db_column_copy(st, 4, target, sizeof target);
        db_column_copy(st, 5, detail, sizeof detail);
        json_array_append_new(arr, json_pack("{s:I, s:s, s:I, s:s, s:s, s:s, s:s}", "seq",
                                             (json_int_t)sqlite3_column_int64(st, 0), "time", iso, "timeMs",
                                             (json_int_t)sqlite3_column_int64(st, 1), "tokenId", tok, "action", action,
                                             "target", target, "detail", detail));
    }
    if (!arr)
        return hx_fail(e, ENOMEM, "out of memory");
    if (!more && rc != SQLITE_DONE) {
        json_decref(arr);
        return db_fail(s, rc, "list audit", e);
    }
    *out = json_pack("{s:o, s:b}", "entries", arr, "more", more);
    return *out ? 0 : hx_fail(e, ENOMEM, "out of memory");
}
