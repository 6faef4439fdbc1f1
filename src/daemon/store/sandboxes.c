/* Sandbox records (what runs, for whom, with which host resources) and
 * usage records for metering. */
#include "daemon/store/db.h"
#include <stdio.h>
#include "lib/strparse.h"

#define SANDBOX_COLS "id, org, created_ms, stopped_ms, stop_at_ms, memory_mb, uid_base, init_pid, region, labels"

void sandbox_rec_clear(struct sandbox_rec *r)
{
    if (!r)
        return;
    json_decref(r->labels);
    memset(r, 0, sizeof *r);
}

/* Parses a stored labels column; a damaged value reads as no labels rather
 * than failing the whole list. */
static json_t *labels_parse(sqlite3_stmt *st, int col)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    json_t *l = t ? json_loads(t, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(l)) {
        json_decref(l);
        l = json_object();
    }
    return l;
}

/* Fills r from a row of SANDBOX_COLS; r->labels is a new reference. */
static void rec_from_row(sqlite3_stmt *st, struct sandbox_rec *r)
{
    memset(r, 0, sizeof *r);
    db_column_copy(st, 0, r->id, sizeof r->id);
    db_column_copy(st, 1, r->org, sizeof r->org);
    r->created_ms = sqlite3_column_int64(st, 2);
    r->stopped_ms = sqlite3_column_int64(st, 3);
    r->stop_at_ms = sqlite3_column_int64(st, 4);
    r->memory_mb = (uint32_t)sqlite3_column_int64(st, 5);
    r->uid_base = (uint32_t)sqlite3_column_int64(st, 6);
    r->init_pid = sqlite3_column_int(st, 7);
    db_column_copy(st, 8, r->region, sizeof r->region);
    r->labels = labels_parse(st, 9);
}

int store_sandbox_insert(struct store *s, const struct sandbox_rec *r, struct hx_err *e)
{
    if (!hx_sandbox_id_valid(r->id))
        return hx_fail(e, EINVAL, "invalid sandbox id");
    if (!hx_org_name_valid(r->org))
        return hx_fail(e, EINVAL, "invalid org name");
    size_t rlen = strnlen(r->region, sizeof r->region);
    if (rlen == 0 || rlen == sizeof r->region || !hx_utf8_printable(r->region, rlen))
        return hx_fail(e, EINVAL, "invalid region");
    int ret;
    if (r->labels && (ret = hx_labels_validate(r->labels, e)) < 0)
        return ret;
    autofree char *labels = r->labels ? json_dumps(r->labels, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}");
    if (!labels)
        return hx_fail(e, ENOMEM, "out of memory");

    autostmt sqlite3_stmt *st = NULL;
    if ((ret = db_prepare(s, "INSERT INTO sandboxes (" SANDBOX_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", &st, e)) < 0 ||
        (ret = db_bind_text(s, st, 1, r->id, e)) < 0 || (ret = db_bind_text(s, st, 2, r->org, e)) < 0 ||
        (ret = db_bind_text(s, st, 9, r->region, e)) < 0 || (ret = db_bind_text(s, st, 10, labels, e)) < 0)
        return ret;
    sqlite3_bind_int64(st, 3, r->created_ms);
    sqlite3_bind_int64(st, 4, r->stopped_ms);
    sqlite3_bind_int64(st, 5, r->stop_at_ms);
    sqlite3_bind_int64(st, 6, r->memory_mb);
    sqlite3_bind_int64(st, 7, r->uid_base);
    sqlite3_bind_int(st, 8, r->init_pid);
    int rc = sqlite3_step(st);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return hx_fail(e, EEXIST, "sandbox %s already exists", r->id);
    if (rc != SQLITE_DONE)
        return db_fail(s, rc, "insert sandbox", e);
    return 0;
}

/* Runs a one-row UPDATE with (?1 = int64 value, ?2 = id); -ENOENT if no row. */
static int update_one(struct store *s, const char *sql, const char *id, int64_t v, const char *what,
                      struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, sql, &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 2, id, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 1, v);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, rc, what, e);
    if (sqlite3_changes(s->db) == 0)
        return hx_fail(e, ENOENT, "no sandbox %s", id && hx_sandbox_id_valid(id) ? id : "(invalid id)");
    return 0;
}

int store_sandbox_set_stopped(struct store *s, const char *id, int64_t stopped_ms, struct hx_err *e)
{
    /* The first stop time wins: a later cleanup pass must not move it. */
    return update_one(s, "UPDATE sandboxes SET stopped_ms = CASE WHEN stopped_ms = 0 THEN ?1 ELSE stopped_ms END "
                         "WHERE id = ?2", id, stopped_ms, "mark sandbox stopped", e);
}

int store_sandbox_set_restore(struct store *s, const char *id, uint64_t init_start, json_t *restore,
                              struct hx_err *e)
{
    autofree char *text = restore ? json_dumps(restore, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (restore && !text)
        return hx_fail(e, ENOMEM, "out of memory");
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "UPDATE sandboxes SET init_start = ?1, restore = ?3 WHERE id = ?2", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 2, id, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)init_start);
    if (text && (r = db_bind_text(s, st, 3, text, e)) < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, rc, "record sandbox restore state", e);
    if (sqlite3_changes(s->db) == 0)
        return hx_fail(e, ENOENT, "no sandbox %s", hx_sandbox_id_valid(id) ? id : "(invalid id)");
    return 0;
}

int store_sandbox_get_restore(struct store *s, const char *id, uint64_t *init_start, json_t **restore,
                              struct hx_err *e)
{
    *init_start = 0;
    *restore = NULL;
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "SELECT init_start, restore FROM sandboxes WHERE id = ?1", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, id, e)) < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return hx_fail(e, ENOENT, "no sandbox %s", hx_sandbox_id_valid(id) ? id : "(invalid id)");
    if (rc != SQLITE_ROW)
        return db_fail(s, rc, "read sandbox restore state", e);
    *init_start = (uint64_t)sqlite3_column_int64(st, 0);
    const char *t = (const char *)sqlite3_column_text(st, 1);
    json_t *v = t ? json_loads(t, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    *restore = v;
    return 0;
}

int store_sandbox_set_stop_at(struct store *s, const char *id, int64_t stop_at_ms, struct hx_err *e)
{
    return update_one(s, "UPDATE sandboxes SET stop_at_ms = ?1 WHERE id = ?2", id, stop_at_ms,
                      "set sandbox stop time", e);
}

int store_sandbox_get(struct store *s, const char *id, struct sandbox_rec *out, struct hx_err *e)
{
    memset(out, 0, sizeof *out);
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "SELECT " SANDBOX_COLS " FROM sandboxes WHERE id = ?", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, id, e)) < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return hx_fail(e, ENOENT, "no sandbox %s", id && hx_sandbox_id_valid(id) ? id : "(invalid id)");
    if (rc != SQLITE_ROW)
        return db_fail(s, rc, "get sandbox", e);
    rec_from_row(st, out);
    if (!out->labels)
        return hx_fail(e, ENOMEM, "out of memory");
    return 0;
}

static bool labels_match(json_t *labels, json_t *filter)
{
    const char *k;
    json_t *want;
    json_object_foreach(filter, k, want) {
        json_t *have = json_object_get(labels, k);
        if (!json_is_string(have) || !json_equal(have, want))
            return false;
    }
    return true;
}

int store_sandbox_list(struct store *s, const char *org, json_t *label_filter, json_t **out,
                       struct hx_err *e)
{
    *out = NULL;
    if (label_filter) {
        const char *k;
        json_t *v;
        if (!json_is_object(label_filter))
            return hx_fail(e, EINVAL, "label filter must be an object");
        json_object_foreach(label_filter, k, v)
            if (!json_is_string(v))
                return hx_fail(e, EINVAL, "label filter values must be strings");
        if (json_object_size(label_filter) == 0)
            label_filter = NULL;
    }
    /* Without a filter SQLite applies the limit; with one we filter in C
     * and stop at the limit (labels are a handful of bytes per row). */
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "SELECT " SANDBOX_COLS " FROM sandboxes WHERE org = ?1 "
                          "ORDER BY created_ms DESC, rowid DESC LIMIT ?2", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, org, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 2, label_filter ? -1 : STORE_LIST_MAX);
    json_t *arr = json_array();
    if (!arr)
        return hx_fail(e, ENOMEM, "out of memory");
    int rc = SQLITE_DONE;
    while (json_array_size(arr) < STORE_LIST_MAX && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct sandbox_rec rec;
        rec_from_row(st, &rec);
        if (!rec.labels)
            goto nomem;
        if (label_filter && !labels_match(rec.labels, label_filter)) {
            sandbox_rec_clear(&rec);
            continue;
        }
        char created[32], stopped[32];
        hx_format_iso8601_ms(rec.created_ms, created);
        if (rec.stopped_ms)
            hx_format_iso8601_ms(rec.stopped_ms, stopped);
        json_t *o = json_pack("{s:s, s:s, s:o, s:s, s:s, s:O}",
                              "id", rec.id, "createdAt", created,
                              "stoppedAt", rec.stopped_ms ? json_string(stopped) : json_null(),
                              "region", rec.region,
                              "status", rec.stopped_ms ? "stopped" : "running",
                              "labels", rec.labels);
        sandbox_rec_clear(&rec);
        if (!o || json_array_append_new(arr, o) < 0)
            goto nomem;
        rc = SQLITE_DONE;
    }
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return db_fail(s, rc, "list sandboxes", e);
    }
    *out = arr;
    return 0;

nomem:
    json_decref(arr);
    return hx_fail(e, ENOMEM, "building sandbox list");
}

int store_sandbox_each_running(struct store *s, int (*cb)(const struct sandbox_rec *r, void *ud),
                               void *ud, struct hx_err *e)
{
    struct sandbox_rec *recs = NULL;
    size_t n = 0, cap = 0;
    int r = 0;
    {
        autostmt sqlite3_stmt *st = NULL;
        if ((r = db_prepare(s, "SELECT " SANDBOX_COLS " FROM sandboxes WHERE stopped_ms = 0 ORDER BY created_ms, rowid",
                            &st, e)) < 0)
            return r;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                struct sandbox_rec *nr = reallocarray(recs, ncap, sizeof *nr);
                if (!nr) {
                    r = hx_fail(e, ENOMEM, "out of memory");
                    goto out;
                }
                recs = nr;
                cap = ncap;
            }
            rec_from_row(st, &recs[n++]);
        }
        if (rc != SQLITE_DONE) {
            r = db_fail(s, rc, "list running sandboxes", e);
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        int cr = cb(&recs[i], ud);
        if (cr < 0) {
            r = cr;
            break;
        }
    }
out:
    for (size_t i = 0; i < n; i++)
        sandbox_rec_clear(&recs[i]);
    free(recs);
    return r;
}

int store_usage_add(struct store *s, const struct usage_rec *u, struct hx_err *e)
{
    if (!hx_sandbox_id_valid(u->sandbox_id) || !hx_org_name_valid(u->org))
        return hx_fail(e, EINVAL, "invalid usage record");
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "INSERT INTO usage (sandbox_id, org, start_ms, end_ms, cpu_ms, mem_peak_mb, "
                          "net_tx_bytes, net_rx_bytes, cpu_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, u->sandbox_id, e)) < 0 || (r = db_bind_text(s, st, 2, u->org, e)) < 0)
        return r;
    /* SQLite integers are signed 64-bit; counters beyond that are nonsense. */
    sqlite3_bind_int64(st, 3, u->start_ms);
    sqlite3_bind_int64(st, 4, u->end_ms);
    sqlite3_bind_int64(st, 5, (int64_t)(u->cpu_ms & INT64_MAX));
    sqlite3_bind_int64(st, 6, u->mem_peak_mb);
    sqlite3_bind_int64(st, 7, (int64_t)(u->net_tx_bytes & INT64_MAX));
    sqlite3_bind_int64(st, 8, (int64_t)(u->net_rx_bytes & INT64_MAX));
    sqlite3_bind_int64(st, 9, (int64_t)((u->cpu_us ? u->cpu_us : u->cpu_ms * 1000) & INT64_MAX));
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, rc, "add usage", e);
    return 0;
}

int store_usage_sum(struct store *s, const char *org, int64_t from_ms, int64_t to_ms, json_t **out,
                    struct hx_err *e)
{
    *out = NULL;
    autostmt sqlite3_stmt *st = NULL;
    /* total() is a float and never overflows; the values are exact below 2^53. */
    int r = db_prepare(s, "SELECT count(*), total(max(end_ms - start_ms, 0)), total(cpu_ms), "
                          "coalesce(max(mem_peak_mb), 0), total(net_tx_bytes), total(net_rx_bytes) "
                          "FROM usage WHERE org = ?1 AND start_ms >= ?2 AND start_ms < ?3", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, org, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 2, from_ms);
    sqlite3_bind_int64(st, 3, to_ms);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return db_fail(s, rc, "sum usage", e);
    *out = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}",
                     "records", (json_int_t)sqlite3_column_int64(st, 0),
                     "wallMs", (json_int_t)sqlite3_column_double(st, 1),
                     "cpuMs", (json_int_t)sqlite3_column_double(st, 2),
                     "memPeakMb", (json_int_t)sqlite3_column_int64(st, 3),
                     "netTxBytes", (json_int_t)sqlite3_column_double(st, 4),
                     "netRxBytes", (json_int_t)sqlite3_column_double(st, 5));
    if (!*out)
        return hx_fail(e, ENOMEM, "out of memory");
    return 0;
}
