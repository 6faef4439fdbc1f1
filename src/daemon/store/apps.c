/* Apps, layers and revisions as JSON documents, and apps' runtime logs
 * (store.h, "apps, layers, revisions"). */
#include "daemon/store/db.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int store_obj_put(struct store *s, const char *kind, const char *id, const char *org, const char *slug,
                  const char *parent, json_t *doc, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    char *text = json_dumps(doc, JSON_COMPACT);
    if (!text)
        return hx_fail(e, ENOMEM, "cannot encode %s %s", kind, id);
    int r = db_prepare(s, "INSERT INTO app_objects (id, org, kind, slug, parent, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
                          "ON CONFLICT (id) DO UPDATE SET slug = ?4, parent = ?5, doc = ?6", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, id, e)) < 0 || (r = db_bind_text(s, st, 2, org, e)) < 0 ||
        (r = db_bind_text(s, st, 3, kind, e)) < 0 || (r = db_bind_text(s, st, 4, slug, e)) < 0 ||
        (r = db_bind_text(s, st, 5, parent, e)) < 0 || (r = db_bind_text(s, st, 6, text, e)) < 0) {
        free(text);
        return r;
    }
    free(text);
    int rc = sqlite3_step(st);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return hx_fail(e, EEXIST, "the slug \"%s\" is already used by another %s", slug ? slug : "", kind);
    if (rc != SQLITE_DONE)
        return db_fail(s, rc, "store app object", e);
    return 0;
}

static json_t *doc_of(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? json_loads((const char *)t, 0, NULL) : NULL;
}

int store_obj_get(struct store *s, const char *kind, const char *org, const char *id_or_slug, json_t **doc,
                  struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    *doc = NULL;
    int r = db_prepare(s, "SELECT doc FROM app_objects WHERE kind = ?1 AND org = ?2 AND (id = ?3 OR slug = ?3)", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, kind, e)) < 0 || (r = db_bind_text(s, st, 2, org, e)) < 0 ||
        (r = db_bind_text(s, st, 3, id_or_slug, e)) < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return hx_fail(e, ENOENT, "no %s \"%.100s\"", kind, id_or_slug);
    if (rc != SQLITE_ROW)
        return db_fail(s, rc, "get app object", e);
    *doc = doc_of(st, 0);
    return *doc ? 0 : hx_fail(e, EUCLEAN, "%s %.100s: stored document is not JSON", kind, id_or_slug);
}

int store_obj_list(struct store *s, const char *kind, const char *org, const char *parent, int64_t after_seq,
                   unsigned limit, json_t **out, int64_t *next_seq, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    *out = NULL;
    *next_seq = 0;
    int r = db_prepare(s, "SELECT doc, rowid FROM app_objects WHERE kind = ?1 AND org = ?2 AND "
                          "(?3 IS NULL OR parent = ?3) AND rowid > ?4 ORDER BY rowid LIMIT ?5", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, kind, e)) < 0 || (r = db_bind_text(s, st, 2, org, e)) < 0 ||
        (r = db_bind_text(s, st, 3, parent, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 4, after_seq);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)limit + 1);
    json_t *arr = json_array();
    unsigned n = 0;
    int rc;
    int64_t last = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == limit) {
            *next_seq = last;
            break;
        }
        json_t *d = doc_of(st, 0);
        if (d)
            json_array_append_new(arr, d);
        last = sqlite3_column_int64(st, 1);
        n++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        json_decref(arr);
        return db_fail(s, rc, "list app objects", e);
    }
    *out = arr;
    return 0;
}

int store_obj_delete(struct store *s, const char *id, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "DELETE FROM app_objects WHERE id = ?1", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, id, e)) < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, rc, "delete app object", e);
    return sqlite3_changes(s->db) ? 0 : hx_fail(e, ENOENT, "no object %.100s", id);
}

int store_log_add(struct store *s, const char *app_id, const char *revision_id, int64_t at_ms, const char *level,
                  const char *message, unsigned keep, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "INSERT INTO app_logs (app_id, revision_id, at_ms, level, message) VALUES (?, ?, ?, ?, ?)",
                       &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, app_id, e)) < 0 || (r = db_bind_text(s, st, 2, revision_id, e)) < 0 ||
        (r = db_bind_text(s, st, 4, level, e)) < 0 || (r = db_bind_text(s, st, 5, message, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 3, at_ms);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, rc, "add log line", e);
    int64_t seq = sqlite3_last_insert_rowid(s->db);
    /* Trim now and then (every 64 lines), not per line. */
    if (seq % 64 == 0) {
        autostmt sqlite3_stmt *del = NULL;
        if ((r = db_prepare(s, "DELETE FROM app_logs WHERE app_id = ?1 AND seq <= (SELECT seq FROM app_logs "
                               "WHERE app_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)", &del, e)) < 0 ||
            (r = db_bind_text(s, del, 1, app_id, e)) < 0)
            return r;
        sqlite3_bind_int64(del, 2, keep);
        rc = sqlite3_step(del);
        if (rc != SQLITE_DONE)
            return db_fail(s, rc, "trim logs", e);
    }
    return 0;
}

static const char *const levels[] = {"debug", "info", "warn", "error"};

int store_log_query(struct store *s, const char *app_id, int64_t from_ms, int64_t to_ms, const char *revision,
                    int min_level, const char *query, int64_t after_seq, unsigned limit, json_t **out,
                    int64_t *next_seq, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    *out = NULL;
    *next_seq = 0;
    int r = db_prepare(s, "SELECT seq, revision_id, at_ms, level, message FROM app_logs WHERE app_id = ?1 AND "
                          "at_ms >= ?2 AND at_ms < ?3 AND seq > ?4 AND (?5 IS NULL OR revision_id = ?5) AND "
                          "(CASE level WHEN 'debug' THEN 0 WHEN 'info' THEN 1 WHEN 'warn' THEN 2 ELSE 3 END) >= ?6 "
                          "AND (?7 IS NULL OR instr(message, ?7) > 0) ORDER BY seq LIMIT ?8", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, app_id, e)) < 0 || (r = db_bind_text(s, st, 5, revision, e)) < 0 ||
        (r = db_bind_text(s, st, 7, query, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 2, from_ms);
    sqlite3_bind_int64(st, 3, to_ms);
    sqlite3_bind_int64(st, 4, after_seq);
    sqlite3_bind_int(st, 6, min_level);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)limit + 1);
    json_t *arr = json_array();
    unsigned n = 0;
    int64_t last = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == limit) {
            *next_seq = last;
            break;
        }
        last = sqlite3_column_int64(st, 0);
        int64_t ms = sqlite3_column_int64(st, 2);
        time_t t = (time_t)(ms / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        char ts[40];
        snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
        const char *lvl = (const char *)sqlite3_column_text(st, 3);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s}", "timestamp", ts, "level", lvl ? lvl : levels[1],
                                             "message", (const char *)sqlite3_column_text(st, 4), "revision_id",
                                             (const char *)sqlite3_column_text(st, 1)));
        n++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        json_decref(arr);
        return db_fail(s, rc, "query logs", e);
    }
    *out = arr;
    return 0;
}

int store_log_delete_app(struct store *s, const char *app_id, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "DELETE FROM app_logs WHERE app_id = ?1", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, app_id, e)) < 0)
        return r;
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : db_fail(s, rc, "delete logs", e);
}

int store_obj_each(struct store *s, const char *kind, void (*cb)(const char *org, json_t *doc, void *ud), void *ud,
                   struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "SELECT org, doc FROM app_objects WHERE kind = ?1 ORDER BY rowid", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, kind, e)) < 0)
        return r;
    json_t *all = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *d = doc_of(st, 1);
        if (d)
            json_array_append_new(all, json_pack("{s:s, s:o}", "org", (const char *)sqlite3_column_text(st, 0), "doc", d));
    }
    if (rc != SQLITE_DONE) {
        json_decref(all);
        return db_fail(s, rc, "walk app objects", e);
    }
    /* read first, then call: cb may write */
    size_t i;
    json_t *x;
    json_array_foreach(all, i, x) cb(json_string_value(json_object_get(x, "org")), json_object_get(x, "doc"), ud);
    json_decref(all);
    return 0;
}

int store_app_volumes(struct store *s, json_t **out, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    *out = NULL;
    int r = db_prepare(s, "SELECT id FROM storage WHERE kind = 'volume' AND org LIKE 'apps:%'", &st, e);
    if (r < 0)
        return r;
    json_t *arr = json_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(arr, json_string((const char *)sqlite3_column_text(st, 0)));
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return db_fail(s, rc, "list app volumes", e);
    }
    *out = arr;
    return 0;
}
