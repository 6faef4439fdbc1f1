/* Internals shared by the store's files: the connection and small SQLite
 * helpers. Not for use outside src/daemon/store. */
#pragma once
#include <sqlite3.h>
#include "daemon/store/store.h"

struct store {
    sqlite3 *db;
};

static inline void db_finalizep(sqlite3_stmt **st) { if (*st) sqlite3_finalize(*st); }
#define autostmt __attribute__((cleanup(db_finalizep)))

/* Fills e from the connection's last error (rc: an SQLite result code) and
 * returns the matching negative errno. */
int db_fail(struct store *s, int rc, const char *what, struct hx_err *e);
/* Prepares one statement; parameters are always bound, never formatted in. */
int db_prepare(struct store *s, const char *sql, sqlite3_stmt **st, struct hx_err *e);
/* Runs SQL without results (schema, transactions); no parameters. */
int db_exec(struct store *s, const char *sql, struct hx_err *e);
/* Binds text or NULL. */
int db_bind_text(struct store *s, sqlite3_stmt *st, int i, const char *v, struct hx_err *e);
/* Copies column i as text into buf (NUL-terminated, cut to fit). */
void db_column_copy(sqlite3_stmt *st, int i, char *buf, size_t size);
