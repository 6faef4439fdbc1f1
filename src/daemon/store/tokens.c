/* API tokens: creation, checking by SHA-256, listing, revocation. The token
 * text is shown once at creation and never stored. */
#include "daemon/store/db.h"
#include <openssl/evp.h>
#include <stdio.h>
#include "lib/strparse.h"

#define TOKEN_ALPHABET "abcdefghijklmnopqrstuvwxyz0123456789"
#define TOKEN_NAME_MAX 128
/* Don't write last_used_ms on every request: once a minute is precise
 * enough for "when was this token last used". */
#define LAST_USED_GRANULARITY_MS 60000

static bool token_format_ok(const char *t)
{
    if (!t || strnlen(t, STORE_TOKEN_LEN + 1) != STORE_TOKEN_LEN || memcmp(t, "ddo_", 4) != 0)
        return false;
    for (int i = 4; i < STORE_TOKEN_LEN; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9')))
            return false;
    return true;
}

static int token_hash(const char *t, char hex[65], struct hx_err *e)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(t, strlen(t), md, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return hx_fail(e, EIO, "SHA-256 failed");
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
    return 0;
}

int store_token_create(struct store *s, const char *org, const char *name, bool admin,
                       char token_out[64], char id_out[32], struct hx_err *e)
{
    if (!hx_org_name_valid(org))
        return hx_fail(e, EINVAL, "invalid org name: use 1 to %d characters of a-z 0-9 -", HX_ORG_MAX);
    size_t nlen = name ? strnlen(name, TOKEN_NAME_MAX + 1) : 0;
    if (nlen == 0 || nlen > TOKEN_NAME_MAX || !hx_utf8_printable(name, nlen))
        return hx_fail(e, EINVAL, "invalid token name: 1 to %d bytes of printable text", TOKEN_NAME_MAX);

    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "INSERT INTO tokens (id, hash, org, name, admin, created_ms) VALUES (?, ?, ?, ?, ?, ?)", &st, e);
    if (r < 0)
        return r;
    /* A collision (36^12 ids, 36^40 tokens) is practically impossible, but
     * retrying costs nothing and makes the UNIQUE constraints harmless. */
    for (int attempt = 0; attempt < 4; attempt++) {
        char tok[STORE_TOKEN_LEN + 1], id[17], hex[65];
        memcpy(tok, "ddo_", 4);
        memcpy(id, "tok_", 4);
        if ((r = hx_random_chars(TOKEN_ALPHABET, sizeof TOKEN_ALPHABET - 1, tok + 4, 40)) < 0 ||
            (r = hx_random_chars(TOKEN_ALPHABET, sizeof TOKEN_ALPHABET - 1, id + 4, 12)) < 0)
            return hx_fail(e, -r, "getrandom: %s", strerror(-r));
        if ((r = token_hash(tok, hex, e)) < 0)
            return r;
        sqlite3_reset(st);
        if ((r = db_bind_text(s, st, 1, id, e)) < 0 || (r = db_bind_text(s, st, 2, hex, e)) < 0 ||
            (r = db_bind_text(s, st, 3, org, e)) < 0 || (r = db_bind_text(s, st, 4, name, e)) < 0)
            return r;
        sqlite3_bind_int(st, 5, admin ? 1 : 0);
        sqlite3_bind_int64(st, 6, hx_now_ms());
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
            memcpy(token_out, tok, sizeof tok);
            memcpy(id_out, id, sizeof id);
            return 0;
        }
        if ((rc & 0xff) != SQLITE_CONSTRAINT)
            return db_fail(s, rc, "insert token", e);
    }
    return hx_fail(e, EEXIST, "could not allocate a unique token");
}

/* Bookkeeping, never a reason to refuse a valid token: on a full disk or a
 * busy database the check still succeeds (one line a minute says why the
 * last use is not recorded). */
static void token_touch(struct store *s, const char *id, int64_t now)
{
    static int64_t warned_ms;
    struct hx_err e = {0};
    autostmt sqlite3_stmt *st = NULL;
    int rc = SQLITE_ERROR;
    if (db_prepare(s, "UPDATE tokens SET last_used_ms = ? WHERE id = ?", &st, &e) == 0 &&
        db_bind_text(s, st, 2, id, &e) == 0) {
        sqlite3_bind_int64(st, 1, now);
        if ((rc = sqlite3_step(st)) != SQLITE_DONE)
            db_fail(s, rc, "update token last use", &e);
    }
    if (rc != SQLITE_DONE && now - warned_ms >= 60000) {
        warned_ms = now;
        fprintf(stderr, "hutchd: token %s: last use not recorded: %s\n", id, e.msg);
    }
}

int store_token_check(struct store *s, const char *token, char org_out[64], bool *admin_out,
                      char *id_out, struct hx_err *e)
{
    /* Malformed tokens are refused before hashing, with the same error as
     * unknown ones so probing learns nothing. */
    if (!token_format_ok(token))
        return hx_fail(e, EACCES, "invalid or revoked token");
    char hex[65], id[32];
    int r = token_hash(token, hex, e);
    if (r < 0)
        return r;
    int64_t last_used;
    {
        autostmt sqlite3_stmt *st = NULL;
        if ((r = db_prepare(s, "SELECT id, org, admin, coalesce(last_used_ms, 0) FROM tokens "
                               "WHERE hash = ? AND revoked_ms IS NULL", &st, e)) < 0 ||
            (r = db_bind_text(s, st, 1, hex, e)) < 0)
            return r;
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            return hx_fail(e, EACCES, "invalid or revoked token");
        if (rc != SQLITE_ROW)
            return db_fail(s, rc, "look up token", e);
        db_column_copy(st, 0, id, sizeof id);
        db_column_copy(st, 1, org_out, 64);
        *admin_out = sqlite3_column_int(st, 2) != 0;
        last_used = sqlite3_column_int64(st, 3);
        if (id_out)
            memcpy(id_out, id, sizeof id);
    }
    int64_t now = hx_now_ms();
    if (now - last_used >= LAST_USED_GRANULARITY_MS)
        token_touch(s, id, now);
    return 0;
}

int store_token_list(struct store *s, const char *org, json_t **out, struct hx_err *e)
{
    *out = NULL;
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "SELECT id, name, org, admin, created_ms, last_used_ms FROM tokens "
                          "WHERE revoked_ms IS NULL AND (?1 IS NULL OR org = ?1) ORDER BY created_ms, rowid", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 1, org, e)) < 0)
        return r;
    json_t *arr = json_array();
    if (!arr)
        return hx_fail(e, ENOMEM, "out of memory");
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char created[32], used[32];
        hx_format_iso8601_ms(sqlite3_column_int64(st, 4), created);
        bool has_used = sqlite3_column_type(st, 5) != SQLITE_NULL;
        if (has_used)
            hx_format_iso8601_ms(sqlite3_column_int64(st, 5), used);
        json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:s, s:o}",
                              "id", (const char *)sqlite3_column_text(st, 0),
                              "name", (const char *)sqlite3_column_text(st, 1),
                              "org", (const char *)sqlite3_column_text(st, 2),
                              "admin", sqlite3_column_int(st, 3),
                              "createdAt", created,
                              "lastUsedAt", has_used ? json_string(used) : json_null());
        if (!o || json_array_append_new(arr, o) < 0) {
            json_decref(arr);
            return hx_fail(e, ENOMEM, "building token list");
        }
    }
    if (rc != SQLITE_DONE) {
        json_decref(arr);
        return db_fail(s, rc, "list tokens", e);
    }
    *out = arr;
    return 0;
}

int store_token_revoke(struct store *s, const char *id, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "UPDATE tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL", &st, e);
    if (r < 0 || (r = db_bind_text(s, st, 2, id, e)) < 0)
        return r;
    sqlite3_bind_int64(st, 1, hx_now_ms());
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, rc, "revoke token", e);
    if (sqlite3_changes(s->db) == 0)
        return hx_fail(e, ENOENT, "no such token");
    return 0;
}

int store_token_count(struct store *s, int *n, struct hx_err *e)
{
    autostmt sqlite3_stmt *st = NULL;
    int r = db_prepare(s, "SELECT count(*) FROM tokens WHERE revoked_ms IS NULL", &st, e);
    if (r < 0)
        return r;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return db_fail(s, rc, "count tokens", e);
    *n = sqlite3_column_int(st, 0);
    return 0;
}
