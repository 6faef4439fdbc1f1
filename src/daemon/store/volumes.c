/* Volume and snapshot records (store.h, "volumes and snapshots"). */
#include "daemon/store/db.h"
#include <stdio.h>

#define VOL_COLS "id, org, kind, slug, region, capacity, allocated, flattened, bootable, base_id, base_slug, created_ms, rowid"

static void vol_from_row(sqlite3_stmt *st, struct vol_rec *r)
{
    memset(r, 0, sizeof *r);
    db_column_copy(st, 0, r->id, sizeof r->id);
    db_column_copy(st, 1, r->org, sizeof r->org);
    db_column_copy(st, 2, r->kind, sizeof r->kind);
    db_column_copy(st, 3, r->slug, sizeof r->slug);
    db_column_copy(st, 4, r->region, sizeof r->region);
    r->capacity = (uint64_t)sqlite3_column_int64(st, 5);
    r->allocated = (uint64_t)sqlite3_column_int64(st, 6);
    r->flattened = (uint64_t)sqlite3_column_int64(st, 7);
    r->bootable = sqlite3_column_int(st, 8) != 0;
    db_column_copy(st, 9, r->base_id, sizeof r->base_id);
    db_column_copy(st, 10, r->base_slug, sizeof r->base_slug);
    r->created_ms = sqlite3_column_int64(st, 11);
    r->seq = sqlite3_column_int64(st, 12);
}

int store_vol_insert(struct store *s, const struct vol_rec *r, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int ret;
    if ((ret = db_prepare(s, "INSERT INTO storage (id, org, kind, slug, region, capacity, allocated, flattened, "
                             "bootable, base_id, base_slug, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          &st, e)) < 0 ||
        (ret = db_bind_text(s, st, 1, r->id, e)) < 0 || (ret = db_bind_text(s, st, 2, r->org, e)) < 0 ||
        (ret = db_bind_text(s, st, 3, r->kind, e)) < 0 || (ret = db_bind_text(s, st, 4, r->slug, e)) < 0 ||
        (ret = db_bind_text(s, st, 5, r->region, e)) < 0 ||
        (ret = db_bind_text(s, st, 10, r->base_id[0] ? r->base_id : NULL, e)) < 0 ||
        (ret = db_bind_text(s, st, 11, r->base_slug[0] ? r->base_slug : NULL, e)) < 0)
        return ret;
    sqlite3_bind_int64(st, 6, (sqlite3_int64)r->capacity);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)r->allocated);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)r->flattened);
    sqlite3_bind_int(st, 9, r->bootable);
    sqlite3_bind_int64(st, 12, r->created_ms);
    int rc = sqlite3_step(st);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return hx_fail(e, EEXIST, "the slug \"%s\" is already used by a volume or snapshot", r->slug);
    if (rc != SQLITE_DONE)
        return db_fail(s, rc, "insert volume", e);
    store_vol_usage_mark(s, r->id, r->allocated, e); /* metering: best effort */
    return 0;
}

int store_vol_get(struct store *s, const char *org, const char *kind, const char *id_or_slug, struct vol_rec *out,
                  struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "SELECT " VOL_COLS " FROM storage WHERE org = ?1 AND (?2 IS NULL OR kind = ?2) "
                          "AND (id = ?3 OR slug = ?3)", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, org, e)) < 0 || (r = db_bind_text(s, st, 2, kind, e)) < 0 ||
        (r = db_bind_text(s, st, 3, id_or_slug, e)) < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return hx_fail(e, ENOENT, "no %s \"%.40s\"", kind ? kind : "volume or snapshot", id_or_slug);
    if (rc != SQLITE_ROW)
        return db_fail(s, rc, "get volume", e);
    vol_from_row(st, out);
    return 0;
}

int store_vol_list(struct store *s, const char *org, const char *kind, const char *search, int64_t after_seq,
                   unsigned limit, struct vol_rec *out, unsigned *n, bool *more, struct hx_err *e)
{
    *n = 0;
    *more = false;
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "SELECT " VOL_COLS " FROM storage WHERE org = ?1 AND kind = ?2 AND rowid > ?3 "
                          "AND (?4 IS NULL OR instr(slug, ?4) > 0 OR id = ?4) ORDER BY rowid LIMIT ?5", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, org, e)) < 0 || (r = db_bind_text(s, st, 2, kind, e)) < 0 ||
        (r = db_bind_text(s, st, 4, search && *search ? search : NULL, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 3, after_seq);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)limit + 1);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == limit) {
            *more = true;
            break;
        }
        vol_from_row(st, &out[(*n)++]);
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_fail(s, rc, "list volumes", e);
    return 0;
}

int store_vol_delete(struct store *s, const char *id, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    store_vol_usage_mark(s, id, 0, e); /* metering: it holds nothing from now on */
    int r = db_prepare(s, "DELETE FROM storage WHERE id = ?", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, id, e)) < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, rc, "delete volume", e);
    return sqlite3_changes(s->db) ? 0 : hx_fail(e, ENOENT, "no volume or snapshot %.40s", id);
}

int store_vol_set_sizes(struct store *s, const char *id, uint64_t allocated, uint64_t flattened, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "UPDATE storage SET allocated = ?1, flattened = ?2 WHERE id = ?3", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 3, id, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)allocated);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)flattened);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        store_vol_usage_mark(s, id, allocated, e); /* metering: best effort */
    return rc == SQLITE_DONE ? 0 : db_fail(s, rc, "update volume sizes", e);
}

static int one_int64(struct store *s, const char *sql, const char *arg, int64_t *v, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, sql, &st, e);
    if (r < 0 || (arg && (r = db_bind_text(s, st, 1, arg, e)) < 0))
        return r;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return db_fail(s, rc, "sum", e);
    *v = sqlite3_column_int64(st, 0);
    return 0;
}

int store_vol_committed(struct store *s, uint64_t *bytes, struct hx_err *e)
{
    int64_t v = 0;
    int r = one_int64(s, "SELECT COALESCE(SUM(CASE kind WHEN 'volume' THEN capacity ELSE flattened END), 0) FROM storage",
                      NULL, &v, e);
    *bytes = (uint64_t)v;
    return r;
}

int store_vol_dependents(struct store *s, const char *snapshot_id, int *n, struct hx_err *e)
{
    int64_t v = 0;
    int r = one_int64(s, "SELECT COUNT(*) FROM storage WHERE kind = 'volume' AND base_id = ?1", snapshot_id, &v, e);
    *n = (int)v;
    return r;
}
