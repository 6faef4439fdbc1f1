/* Opening the state database: file creation with safe permissions,
 * connection settings, and schema migrations (PRAGMA user_version). */
#include "daemon/store/db.h"
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

/* Migration i takes the schema from user_version i to i + 1. Append only:
 * never edit a migration that has shipped. */
static const char *const migrations[] = {
    /* 1: tokens, sandboxes, usage */
    "CREATE TABLE tokens ("
    "  id TEXT PRIMARY KEY,"
    "  hash TEXT NOT NULL UNIQUE,"          /* hex SHA-256 of the token text */
    "  org TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  admin INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  last_used_ms INTEGER,"
    "  revoked_ms INTEGER"                  /* NULL = valid; rows are kept for audit */
    ") STRICT;"
    "CREATE TABLE sandboxes ("
    "  id TEXT PRIMARY KEY,"
    "  org TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  stopped_ms INTEGER NOT NULL DEFAULT 0,"
    "  stop_at_ms INTEGER NOT NULL DEFAULT 0,"
    "  memory_mb INTEGER NOT NULL,"
    "  uid_base INTEGER NOT NULL,"
    "  init_pid INTEGER NOT NULL,"
    "  region TEXT NOT NULL,"
    "  labels TEXT NOT NULL DEFAULT '{}'"   /* compact JSON object */
    ") STRICT;"
    "CREATE INDEX sandboxes_by_org ON sandboxes (org, created_ms DESC);"
    "CREATE INDEX sandboxes_running ON sandboxes (stopped_ms) WHERE stopped_ms = 0;"
    "CREATE TABLE usage ("
    "  sandbox_id TEXT NOT NULL,"
    "  org TEXT NOT NULL,"
    "  start_ms INTEGER NOT NULL,"
    "  end_ms INTEGER NOT NULL,"
    "  cpu_ms INTEGER NOT NULL,"
    "  mem_peak_mb INTEGER NOT NULL,"
    "  net_tx_bytes INTEGER NOT NULL,"
    "  net_rx_bytes INTEGER NOT NULL"
    ") STRICT;"
    "CREATE INDEX usage_by_org ON usage (org, start_ms);",
    /* 2: volumes and snapshots (store/volumes.c): one table, so that both
     * share one slug namespace per organization, as the SDK documents */
    "CREATE TABLE storage ("
    "  id TEXT PRIMARY KEY,"                /* vol_... or snp_... */
    "  org TEXT NOT NULL,"
    "  kind TEXT NOT NULL CHECK (kind IN ('volume', 'snapshot')),"
    "  slug TEXT NOT NULL,"
    "  region TEXT NOT NULL,"
    "  capacity INTEGER NOT NULL,"          /* bytes: the size of its ext4 image */
    "  allocated INTEGER NOT NULL DEFAULT 0," /* bytes only it holds in the pool (estimate) */
    "  flattened INTEGER NOT NULL DEFAULT 0," /* bytes it holds, shared ones too (estimate) */
    "  bootable INTEGER NOT NULL,"
    "  base_id TEXT,"                       /* volume: the snapshot it came from; snapshot: its volume */
    "  base_slug TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  UNIQUE (org, slug)"
    ") STRICT;",
    /* 3: metering (store/metering.c): CPU in microseconds, volume sizes over
     * time (a row per change), and who did what (audit) */
    "ALTER TABLE usage ADD COLUMN cpu_us INTEGER;"   /* NULL in older rows: cpu_ms * 1000 */
    "CREATE INDEX usage_by_org_end ON usage (org, end_ms);"
    "CREATE TABLE volume_usage ("
    "  volume_id TEXT NOT NULL,"
    "  org TEXT NOT NULL,"
    "  at_ms INTEGER NOT NULL,"             /* from this time on ... */
    "  mib INTEGER NOT NULL"                /* ... it holds this many MiB (rounded up); 0 = deleted */
    ") STRICT;"
    "CREATE INDEX volume_usage_by_org ON volume_usage (org, volume_id, at_ms);"
    "CREATE TABLE audit ("
    "  seq INTEGER PRIMARY KEY,"
    "  at_ms INTEGER NOT NULL,"
    "  org TEXT NOT NULL,"
    "  token_id TEXT NOT NULL,"             /* '' = the root-only unix socket */
    "  action TEXT NOT NULL,"               /* create, kill, extend, expose, deploy, ... */
    "  target TEXT NOT NULL,"               /* the sandbox (or volume) id */
    "  detail TEXT NOT NULL DEFAULT ''"
    ") STRICT;"
    "CREATE INDEX audit_by_org ON audit (org, at_ms);",
    /* 4: live restore (docs/restore.md): what the next hutchd needs to adopt
     * a sandbox, written when a user gets it */
    "ALTER TABLE sandboxes ADD COLUMN init_start INTEGER NOT NULL DEFAULT 0;" /* PID 1's start time, clock ticks */
    "ALTER TABLE sandboxes ADD COLUMN restore TEXT;",                         /* JSON object; NULL = not adoptable */
    /* 5: apps, layers and revisions (store/apps.c): one table of JSON
     * documents in the SDK's shapes (what is looked up by has a column),
     * and the apps' runtime logs, bounded by the writer */
    "CREATE TABLE app_objects ("
    "  id TEXT PRIMARY KEY,"                /* app_..., lyr_..., rev_... */
    "  org TEXT NOT NULL,"
    "  kind TEXT NOT NULL CHECK (kind IN ('app', 'layer', 'revision')),"
    "  slug TEXT,"                          /* apps and layers; NULL for revisions */
    "  parent TEXT,"                        /* a revision's app id */
    "  doc TEXT NOT NULL,"                  /* compact JSON object */
    "  UNIQUE (org, kind, slug)"
    ") STRICT;"
    "CREATE INDEX app_objects_by_parent ON app_objects (parent);"
    "CREATE TABLE app_logs ("
    "  seq INTEGER PRIMARY KEY,"
    "  app_id TEXT NOT NULL,"
    "  revision_id TEXT NOT NULL,"
    "  at_ms INTEGER NOT NULL,"
    "  level TEXT NOT NULL,"                /* debug | info | warn | error */
    "  message TEXT NOT NULL"
    ") STRICT;"
    "CREATE INDEX app_logs_by_app ON app_logs (app_id, at_ms);",
};

int db_fail(struct store *s, int rc, const char *what, struct hx_err *e)
{
    int code;
    switch (rc & 0xff) {
    case SQLITE_BUSY: case SQLITE_LOCKED: code = EBUSY; break;
    case SQLITE_CONSTRAINT: code = EEXIST; break;
    case SQLITE_NOMEM: code = ENOMEM; break;
    case SQLITE_FULL: code = ENOSPC; break;
    case SQLITE_READONLY: case SQLITE_PERM: case SQLITE_AUTH: case SQLITE_CANTOPEN: code = EACCES; break;
    case SQLITE_CORRUPT: case SQLITE_NOTADB: code = EUCLEAN; break;
    case SQLITE_TOOBIG: code = E2BIG; break;
    default: code = EIO; break;
    }
    return hx_fail(e, code, "database: %s: %s", what,
                   s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
}

int db_prepare(struct store *s, const char *sql, sqlite3_stmt **st, struct hx_err *e)
{
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
    if (rc != SQLITE_OK)
        return db_fail(s, rc, "prepare", e);
    return 0;
}

int db_exec(struct store *s, const char *sql, struct hx_err *e)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return db_fail(s, rc, "exec", e);
    return 0;
}

int db_bind_text(struct store *s, sqlite3_stmt *st, int i, const char *v, struct hx_err *e)
{
    int rc = v ? sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, i);
    if (rc != SQLITE_OK)
        return db_fail(s, rc, "bind", e);
    return 0;
}

void db_column_copy(sqlite3_stmt *st, int i, char *buf, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(buf, size, "%s", t ? (const char *)t : "");
}

static int pragma_int(struct store *s, const char *sql, int *v, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, sql, &st, e);
    if (r < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return db_fail(s, rc, sql, e);
    *v = sqlite3_column_int(st, 0);
    return 0;
}

static int migrate(struct store *s, struct hx_err *e)
{
    int version, r;
    if ((r = pragma_int(s, "PRAGMA user_version", &version, e)) < 0)
        return r;
    int latest = (int)HX_ARRAY_LEN(migrations);
    if (version < 0 || version > latest)
        return hx_fail(e, EPROTO, "database schema version %d is newer than this hutchd (%d)", version, latest);
    for (int v = version; v < latest; v++) {
        /* IMMEDIATE: take the write lock first, so two daemons started on
         * one state directory cannot both apply a migration. */
        if ((r = db_exec(s, "BEGIN IMMEDIATE", e)) < 0)
            return r;
        char set[64];
        snprintf(set, sizeof set, "PRAGMA user_version = %d", v + 1);   /* PRAGMA takes no parameters */
        int cur;
        if ((r = pragma_int(s, "PRAGMA user_version", &cur, e)) < 0 ||
            (cur == v && ((r = db_exec(s, migrations[v], e)) < 0 || (r = db_exec(s, set, e)) < 0)) ||
            (r = db_exec(s, "COMMIT", e)) < 0) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return hx_wrap(e, "migrating database to version %d", v + 1);
        }
    }
    return 0;
}

/* Creates the file ourselves so it is never readable by others, whatever the
 * umask: it holds token hashes and every org's sandbox list. SQLite gives
 * the -wal and -shm files the database file's mode. */
static int create_db_file(const char *path, struct hx_err *e)
{
    autoclose int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return hx_fail(e, errno, "open %s: %m", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return hx_fail(e, errno, "stat %s: %m", path);
    if (!S_ISREG(st.st_mode))
        return hx_fail(e, EINVAL, "%s is not a regular file", path);
    if ((st.st_mode & 07777) != 0600 && fchmod(fd, 0600) < 0)
        return hx_fail(e, errno, "chmod %s: %m", path);
    return 0;
}

int store_open(const char *state_dir, struct store **out, struct hx_err *e)
{
    *out = NULL;
    if (!state_dir || !*state_dir)
        return hx_fail(e, EINVAL, "no state directory");
    if (mkdir(state_dir, 0700) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %m", state_dir);
    autofree char *path = NULL;
    if (asprintf(&path, "%s/hutch.db", state_dir) < 0)
        return hx_fail(e, ENOMEM, "out of memory");
    int r = create_db_file(path, e);
    if (r < 0)
        return r;

    struct store *s = calloc(1, sizeof *s);
    if (!s)
        return hx_fail(e, ENOMEM, "out of memory");
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL);
    if (rc != SQLITE_OK) {
        r = db_fail(s, rc, path, e);
        goto fail;
    }
    /* DEFENSIVE: no writable_schema or other ways to corrupt the file by SQL;
     * TRUSTED_SCHEMA off: a tampered schema cannot call functions. */
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    sqlite3_busy_timeout(s->db, 5000);

    {
        /* WAL: readers never block the writer; NORMAL sync is durable
         * against a daemon crash (only an OS crash can lose the last
         * transactions, never corrupt the file). */
        autostmt sqlite3_stmt *st = NULL;
        if ((r = db_prepare(s, "PRAGMA journal_mode = WAL", &st, e)) < 0)
            goto fail;
        rc = sqlite3_step(st);
        const unsigned char *mode = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
        if (!mode || strcmp((const char *)mode, "wal") != 0) {
            r = rc == SQLITE_ROW ? hx_fail(e, EIO, "database %s: cannot switch to WAL mode", path)
                                 : db_fail(s, rc, "journal_mode", e);
            goto fail;
        }
    }
    if ((r = db_exec(s, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON", e)) < 0 ||
        (r = migrate(s, e)) < 0)
        goto fail;
    *out = s;
    return 0;

fail:
    store_close(s);
    return r;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    /* close_v2 finalizes lazily if a statement leaked; none should. */
    sqlite3_close_v2(s->db);
    free(s);
}
