/* The SQLite store: token lifecycle, org isolation, sandbox records and
 * listing, persistence across reopen, file permissions, schema versions.
 * Every test gets a fresh mkdtemp directory, removed afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include "daemon/store/store.h"
#include "lib/strparse.h"

struct fx {
    char dir[64];
    struct store *s;
};

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/hutch-store-test-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    struct hx_err e = { 0 };
    if (store_open(f->dir, &f->s, &e) < 0) {
        fprintf(stderr, "store_open: %s\n", e.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    store_close(f->s);
    nftw(f->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void reopen(struct fx *f)
{
    struct hx_err e = { 0 };
    store_close(f->s);
    f->s = NULL;
    if (store_open(f->dir, &f->s, &e) < 0)
        fail_msg("reopen: %s", e.msg);
}

#define OK(call) do { struct hx_err e_ = { 0 }; int r_ = (call); if (r_ < 0) fail_msg("%s: %s", #call, e_.msg); } while (0)
#define E (&e_)

/* ---- tokens ---- */

static void test_token_create_check_revoke(void **state)
{
    struct fx *f = *state;
    char tok[64], id[32], org[64];
    bool admin = false;
    OK(store_token_create(f->s, "acme", "ci", true, tok, id, E));
    assert_int_equal(strlen(tok), STORE_TOKEN_LEN);
    assert_memory_equal(tok, "ddo_", 4);
    for (int i = 4; i < STORE_TOKEN_LEN; i++)
        assert_true((tok[i] >= 'a' && tok[i] <= 'z') || (tok[i] >= '0' && tok[i] <= '9'));
    assert_int_equal(strlen(id), 16);
    assert_memory_equal(id, "tok_", 4);

    OK(store_token_check(f->s, tok, org, &admin, NULL, E));
    assert_string_equal(org, "acme");
    assert_true(admin);

    OK(store_token_revoke(f->s, id, E));
    struct hx_err e = { 0 };
    assert_int_equal(store_token_check(f->s, tok, org, &admin, NULL, &e), -EACCES);
    assert_int_equal(store_token_revoke(f->s, id, &e), -ENOENT);
    assert_int_equal(store_token_revoke(f->s, "tok_nonexistent0", &e), -ENOENT);
}

static void test_token_non_admin_flag_is_kept(void **state)
{
    struct fx *f = *state;
    char tok[64], id[32], org[64];
    bool admin = true;
    OK(store_token_create(f->s, "acme", "user", false, tok, id, E));
    OK(store_token_check(f->s, tok, org, &admin, NULL, E));
    assert_false(admin);
}

static void test_malformed_and_unknown_tokens_are_refused(void **state)
{
    struct fx *f = *state;
    char tok[64], id[32], org[64];
    bool admin;
    OK(store_token_create(f->s, "acme", "ci", false, tok, id, E));
    char upper[64];
    strcpy(upper, tok);
    upper[10] = 'A';
    char longer[80];
    snprintf(longer, sizeof longer, "%sa", tok);
    char prefix[64];
    strcpy(prefix, tok);
    prefix[3] = '-';
    const char *bad[] = { NULL, "", "ddo_", "ddo_short", upper, longer, prefix,
                          "ddo_0000000000000000000000000000000000000000", "' OR 1=1 --" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct hx_err e = { 0 };
        assert_int_equal(store_token_check(f->s, bad[i], org, &admin, NULL, &e), -EACCES);
    }
}

static void test_token_create_rejects_bad_org_and_name(void **state)
{
    struct fx *f = *state;
    char tok[64], id[32];
    struct hx_err e = { 0 };
    assert_int_equal(store_token_create(f->s, "Acme", "x", false, tok, id, &e), -EINVAL);
    assert_int_equal(store_token_create(f->s, "", "x", false, tok, id, &e), -EINVAL);
    assert_int_equal(store_token_create(f->s, "../etc", "x", false, tok, id, &e), -EINVAL);
    assert_int_equal(store_token_create(f->s, "acme", "", false, tok, id, &e), -EINVAL);
    assert_int_equal(store_token_create(f->s, "acme", "bad\nname", false, tok, id, &e), -EINVAL);
    int n = -1;
    OK(store_token_count(f->s, &n, E));
    assert_int_equal(n, 0);
}

static void test_token_list_is_per_org_and_has_no_secrets(void **state)
{
    struct fx *f = *state;
    char tok[64], id_a[32], id_b[32], id_c[32], org[64];
    bool admin;
    OK(store_token_create(f->s, "acme", "one", true, tok, id_a, E));
    OK(store_token_check(f->s, tok, org, &admin, NULL, E));
    OK(store_token_create(f->s, "acme", "two", false, tok, id_b, E));
    OK(store_token_create(f->s, "other", "three", false, tok, id_c, E));

    json_t *l = NULL;
    OK(store_token_list(f->s, "acme", &l, E));
    assert_int_equal(json_array_size(l), 2);
    size_t i;
    json_t *t;
    json_array_foreach(l, i, t) {
        assert_string_equal(json_string_value(json_object_get(t, "org")), "acme");
        assert_null(json_object_get(t, "hash"));
        assert_null(json_object_get(t, "token"));
        const char *created = json_string_value(json_object_get(t, "createdAt"));
        assert_non_null(created);
        assert_int_equal(strlen(created), 24);
        assert_int_equal(created[23], 'Z');
    }
    json_t *first = json_array_get(l, 0);
    assert_string_equal(json_string_value(json_object_get(first, "id")), id_a);
    assert_true(json_is_true(json_object_get(first, "admin")));
    assert_true(json_is_string(json_object_get(first, "lastUsedAt")));   /* checked above */
    assert_true(json_is_null(json_object_get(json_array_get(l, 1), "lastUsedAt")));
    char *dump = json_dumps(l, 0);
    assert_null(strstr(dump, tok));
    free(dump);
    json_decref(l);

    OK(store_token_list(f->s, NULL, &l, E));
    assert_int_equal(json_array_size(l), 3);
    json_decref(l);

    OK(store_token_revoke(f->s, id_b, E));
    OK(store_token_list(f->s, "acme", &l, E));
    assert_int_equal(json_array_size(l), 1);
    json_decref(l);
    int n = 0;
    OK(store_token_count(f->s, &n, E));
    assert_int_equal(n, 2);
}

static void test_database_never_holds_token_text(void **state)
{
    struct fx *f = *state;
    char tok[64], id[32];
    OK(store_token_create(f->s, "acme", "ci", false, tok, id, E));
    store_close(f->s);   /* checkpoints the WAL into the main file */
    f->s = NULL;
    char path[128];
    snprintf(path, sizeof path, "%s/hutch.db", f->dir);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    assert_null(memmem(buf, n, tok + 4, 40));
    reopen(f);
}

/* ---- sandboxes ---- */

static void make_rec(struct sandbox_rec *r, const char *org, int64_t created, json_t *labels)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(hx_sandbox_id_new("loc", r->id), 0);
    snprintf(r->org, sizeof r->org, "%s", org);
    r->created_ms = created;
    r->memory_mb = 1280;
    r->uid_base = 100000 + (uint32_t)(created % 1000) * 65536;
    r->init_pid = 4242;
    strcpy(r->region, "ord");
    r->labels = labels;
}

static void test_sandbox_insert_get_and_update(void **state)
{
    struct fx *f = *state;
    struct sandbox_rec r, g;
    json_t *labels = json_pack("{s:s, s:s}", "env", "prod", "team", "ü");
    make_rec(&r, "acme", 1700000000000LL, labels);
    r.stop_at_ms = 1700000600000LL;
    OK(store_sandbox_insert(f->s, &r, E));

    OK(store_sandbox_get(f->s, r.id, &g, E));
    assert_string_equal(g.id, r.id);
    assert_string_equal(g.org, "acme");
    assert_int_equal(g.created_ms, r.created_ms);
    assert_int_equal(g.stopped_ms, 0);
    assert_int_equal(g.stop_at_ms, r.stop_at_ms);
    assert_int_equal(g.memory_mb, 1280);
    assert_int_equal(g.uid_base, r.uid_base);
    assert_int_equal(g.init_pid, 4242);
    assert_string_equal(g.region, "ord");
    assert_true(json_equal(g.labels, labels));
    sandbox_rec_clear(&g);

    OK(store_sandbox_set_stop_at(f->s, r.id, 0, E));
    OK(store_sandbox_set_stopped(f->s, r.id, 1700000001000LL, E));
    OK(store_sandbox_set_stopped(f->s, r.id, 1700000009000LL, E));   /* first stop time wins */
    OK(store_sandbox_get(f->s, r.id, &g, E));
    assert_int_equal(g.stop_at_ms, 0);
    assert_int_equal(g.stopped_ms, 1700000001000LL);
    sandbox_rec_clear(&g);

    struct hx_err e = { 0 };
    assert_int_equal(store_sandbox_insert(f->s, &r, &e), -EEXIST);
    json_decref(labels);
}

static void test_sandbox_unknown_ids_are_enoent(void **state)
{
    struct fx *f = *state;
    struct sandbox_rec g;
    struct hx_err e = { 0 };
    assert_int_equal(store_sandbox_get(f->s, "sbx_loc_0123456789abcdefghjk", &g, &e), -ENOENT);
    sandbox_rec_clear(&g);
    assert_int_equal(store_sandbox_set_stopped(f->s, "sbx_loc_0123456789abcdefghjk", 1, &e), -ENOENT);
    assert_int_equal(store_sandbox_set_stop_at(f->s, "nonsense", 1, &e), -ENOENT);
}

static void test_sandbox_insert_validates(void **state)
{
    struct fx *f = *state;
    struct sandbox_rec r;
    struct hx_err e = { 0 };
    make_rec(&r, "acme", 1, NULL);
    strcpy(r.id, "sbx_loc_bad");
    assert_int_equal(store_sandbox_insert(f->s, &r, &e), -EINVAL);
    make_rec(&r, "ACME", 1, NULL);
    assert_int_equal(store_sandbox_insert(f->s, &r, &e), -EINVAL);
    json_t *bad = json_pack("{s:i}", "k", 1);
    make_rec(&r, "acme", 1, bad);
    assert_int_equal(store_sandbox_insert(f->s, &r, &e), -EINVAL);
    json_decref(bad);
}

static void test_sandbox_list_is_per_org_newest_first(void **state)
{
    struct fx *f = *state;
    struct sandbox_rec a, b, c;
    make_rec(&a, "acme", 1000, NULL);
    make_rec(&b, "acme", 3000, NULL);
    make_rec(&c, "other", 2000, NULL);
    OK(store_sandbox_insert(f->s, &a, E));
    OK(store_sandbox_insert(f->s, &b, E));
    OK(store_sandbox_insert(f->s, &c, E));
    OK(store_sandbox_set_stopped(f->s, a.id, 5000, E));

    json_t *l = NULL;
    OK(store_sandbox_list(f->s, "acme", NULL, &l, E));
    assert_int_equal(json_array_size(l), 2);
    json_t *x0 = json_array_get(l, 0), *x1 = json_array_get(l, 1);
    assert_string_equal(json_string_value(json_object_get(x0, "id")), b.id);
    assert_string_equal(json_string_value(json_object_get(x0, "status")), "running");
    assert_true(json_is_null(json_object_get(x0, "stoppedAt")));
    assert_string_equal(json_string_value(json_object_get(x0, "createdAt")), "1970-01-01T00:00:03.000Z");
    assert_string_equal(json_string_value(json_object_get(x0, "region")), "ord");
    assert_true(json_is_object(json_object_get(x0, "labels")));
    assert_null(json_object_get(x0, "org"));   /* the SDK shape only */
    assert_string_equal(json_string_value(json_object_get(x1, "id")), a.id);
    assert_string_equal(json_string_value(json_object_get(x1, "status")), "stopped");
    assert_string_equal(json_string_value(json_object_get(x1, "stoppedAt")), "1970-01-01T00:00:05.000Z");
    json_decref(l);

    OK(store_sandbox_list(f->s, "nobody", NULL, &l, E));
    assert_int_equal(json_array_size(l), 0);
    json_decref(l);
}

static int list_count(struct fx *f, const char *filter_json)
{
    json_t *filter = filter_json ? json_loads(filter_json, 0, NULL) : NULL;
    json_t *l = NULL;
    struct hx_err e = { 0 };
    int r = store_sandbox_list(f->s, "acme", filter, &l, &e);
    json_decref(filter);
    if (r < 0)
        return r;
    int n = (int)json_array_size(l);
    json_decref(l);
    return n;
}

static void test_sandbox_list_label_filter_needs_all_pairs(void **state)
{
    struct fx *f = *state;
    struct sandbox_rec r;
    json_t *l1 = json_pack("{s:s, s:s}", "env", "prod", "team", "web");
    json_t *l2 = json_pack("{s:s, s:s}", "env", "prod", "team", "db");
    json_t *l3 = json_pack("{s:s}", "env", "dev");
    make_rec(&r, "acme", 1, l1);
    OK(store_sandbox_insert(f->s, &r, E));
    make_rec(&r, "acme", 2, l2);
    OK(store_sandbox_insert(f->s, &r, E));
    make_rec(&r, "acme", 3, l3);
    OK(store_sandbox_insert(f->s, &r, E));
    make_rec(&r, "acme", 4, NULL);
    OK(store_sandbox_insert(f->s, &r, E));
    make_rec(&r, "other", 5, l1);
    OK(store_sandbox_insert(f->s, &r, E));
    json_decref(l1);
    json_decref(l2);
    json_decref(l3);

    assert_int_equal(list_count(f, NULL), 4);
    assert_int_equal(list_count(f, "{}"), 4);
    assert_int_equal(list_count(f, "{\"env\":\"prod\"}"), 2);
    assert_int_equal(list_count(f, "{\"env\":\"prod\",\"team\":\"db\"}"), 1);
    assert_int_equal(list_count(f, "{\"env\":\"prod\",\"team\":\"ops\"}"), 0);
    assert_int_equal(list_count(f, "{\"env\":\"dev\"}"), 1);
    assert_int_equal(list_count(f, "{\"missing\":\"\"}"), 0);
    assert_int_equal(list_count(f, "{\"env\":\"PROD\"}"), 0);
    assert_int_equal(list_count(f, "{\"env\":1}"), -EINVAL);
    assert_int_equal(list_count(f, "[]"), -EINVAL);
}

static void test_sandbox_list_stops_at_limit(void **state)
{
    struct fx *f = *state;
    struct sandbox_rec r;
    json_t *lab = json_pack("{s:s}", "k", "v");
    for (int i = 0; i < STORE_LIST_MAX + 5; i++) {
        make_rec(&r, "acme", 1000 + i, lab);
        OK(store_sandbox_insert(f->s, &r, E));
    }
    json_decref(lab);
    assert_int_equal(list_count(f, NULL), STORE_LIST_MAX);
    assert_int_equal(list_count(f, "{\"k\":\"v\"}"), STORE_LIST_MAX);
}

struct walk { int n; struct store *s; char seen[8][32]; };

static int on_running(const struct sandbox_rec *r, void *ud)
{
    struct walk *w = ud;
    if (w->n < 8)
        strcpy(w->seen[w->n], r->id);
    w->n++;
    /* Cleanup after restart marks each one stopped while walking. */
    return store_sandbox_set_stopped(w->s, r->id, 99, NULL);
}

static void test_each_running_sees_only_running_and_may_update(void **state)
{
    struct fx *f = *state;
    struct sandbox_rec a, b, c;
    make_rec(&a, "acme", 1, NULL);
    make_rec(&b, "acme", 2, NULL);
    make_rec(&c, "other", 3, NULL);
    OK(store_sandbox_insert(f->s, &a, E));
    OK(store_sandbox_insert(f->s, &b, E));
    OK(store_sandbox_insert(f->s, &c, E));
    OK(store_sandbox_set_stopped(f->s, b.id, 10, E));

    struct walk w = { .s = f->s };
    OK(store_sandbox_each_running(f->s, on_running, &w, E));
    assert_int_equal(w.n, 2);
    assert_string_equal(w.seen[0], a.id);
    assert_string_equal(w.seen[1], c.id);

    w.n = 0;
    OK(store_sandbox_each_running(f->s, on_running, &w, E));
    assert_int_equal(w.n, 0);
}

static int stop_walk(const struct sandbox_rec *r, void *ud)
{
    (*(int *)ud)++;
    return -EINTR;
}

static void test_each_running_stops_on_callback_error(void **state)
{
    struct fx *f = *state;
    struct sandbox_rec a, b;
    make_rec(&a, "acme", 1, NULL);
    make_rec(&b, "acme", 2, NULL);
    OK(store_sandbox_insert(f->s, &a, E));
    OK(store_sandbox_insert(f->s, &b, E));
    int calls = 0;
    struct hx_err e = { 0 };
    assert_int_equal(store_sandbox_each_running(f->s, stop_walk, &calls, &e), -EINTR);
    assert_int_equal(calls, 1);
}

/* ---- persistence and the file ---- */

static void test_reopen_keeps_tokens_and_sandboxes(void **state)
{
    struct fx *f = *state;
    char tok[64], id[32], org[64];
    bool admin;
    struct sandbox_rec r, g;
    json_t *lab = json_pack("{s:s}", "a", "b");
    OK(store_token_create(f->s, "acme", "ci", true, tok, id, E));
    make_rec(&r, "acme", 7, lab);
    OK(store_sandbox_insert(f->s, &r, E));
    json_decref(lab);

    reopen(f);
    reopen(f);   /* migrations run once; a second reopen is a no-op */
    OK(store_token_check(f->s, tok, org, &admin, NULL, E));
    assert_string_equal(org, "acme");
    OK(store_sandbox_get(f->s, r.id, &g, E));
    assert_string_equal(json_string_value(json_object_get(g.labels, "a")), "b");
    sandbox_rec_clear(&g);
}

static void test_db_files_are_private(void **state)
{
    struct fx *f = *state;
    char tok[64], id[32];
    OK(store_token_create(f->s, "acme", "ci", true, tok, id, E));   /* make the WAL exist */
    const char *names[] = { "hutch.db", "hutch.db-wal", "hutch.db-shm" };
    for (size_t i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s/%s", f->dir, names[i]);
        struct stat st;
        if (stat(p, &st) < 0) {
            assert_int_not_equal(i, 0);
            continue;
        }
        assert_int_equal(st.st_mode & 07777, 0600);
    }
}

static void test_permissive_umask_and_loose_existing_mode_still_give_0600(void **state)
{
    struct fx *f = *state;
    char p[128];
    snprintf(p, sizeof p, "%s/hutch.db", f->dir);
    store_close(f->s);
    f->s = NULL;
    assert_int_equal(chmod(p, 0666), 0);
    mode_t old = umask(0);
    reopen(f);
    umask(old);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
}

static void test_fresh_state_dir_is_created_private(void **state)
{
    struct fx *f = *state;
    char sub[128];
    snprintf(sub, sizeof sub, "%s/state", f->dir);
    struct store *s2 = NULL;
    OK(store_open(sub, &s2, E));
    store_close(s2);
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
}

static void test_newer_schema_is_refused(void **state)
{
    struct fx *f = *state;
    store_close(f->s);
    f->s = NULL;
    char p[128];
    snprintf(p, sizeof p, "%s/hutch.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    struct hx_err e = { 0 };
    assert_int_equal(store_open(f->dir, &f->s, &e), -EPROTO);
    assert_null(f->s);
    assert_non_null(strstr(e.msg, "newer"));
}

static void test_symlinked_db_is_refused(void **state)
{
    struct fx *f = *state;
    char sub[128], p[160];
    snprintf(sub, sizeof sub, "%s/evil", f->dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(p, sizeof p, "%s/hutch.db", sub);
    assert_int_equal(symlink("/tmp/hutch-store-test-target-does-not-exist", p), 0);
    struct store *s2 = NULL;
    struct hx_err e = { 0 };
    assert_true(store_open(sub, &s2, &e) < 0);
    assert_null(s2);
}

/* ---- usage ---- */

static void test_usage_add_and_sum_per_org(void **state)
{
    struct fx *f = *state;
    struct usage_rec u = { .sandbox_id = "sbx_loc_0123456789abcdefghjk", .org = "acme", .start_ms = 1000,
                           .end_ms = 4000, .cpu_ms = 500, .mem_peak_mb = 300, .net_tx_bytes = 10, .net_rx_bytes = 20 };
    OK(store_usage_add(f->s, &u, E));
    u.start_ms = 5000; u.end_ms = 6000; u.cpu_ms = 100; u.mem_peak_mb = 700;
    OK(store_usage_add(f->s, &u, E));
    u.org = "other";
    OK(store_usage_add(f->s, &u, E));
    u.org = "Bad";
    struct hx_err e = { 0 };
    assert_int_equal(store_usage_add(f->s, &u, &e), -EINVAL);

    json_t *sum = NULL;
    OK(store_usage_sum(f->s, "acme", 0, 10000, &sum, E));
    assert_int_equal(json_integer_value(json_object_get(sum, "records")), 2);
    assert_int_equal(json_integer_value(json_object_get(sum, "wallMs")), 4000);
    assert_int_equal(json_integer_value(json_object_get(sum, "cpuMs")), 600);
    assert_int_equal(json_integer_value(json_object_get(sum, "memPeakMb")), 700);
    assert_int_equal(json_integer_value(json_object_get(sum, "netRxBytes")), 40);
    json_decref(sum);
    OK(store_usage_sum(f->s, "acme", 2000, 10000, &sum, E));
    assert_int_equal(json_integer_value(json_object_get(sum, "records")), 1);
    json_decref(sum);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_token_create_check_revoke),
        T(test_token_non_admin_flag_is_kept),
        T(test_malformed_and_unknown_tokens_are_refused),
        T(test_token_create_rejects_bad_org_and_name),
        T(test_token_list_is_per_org_and_has_no_secrets),
        T(test_database_never_holds_token_text),
        T(test_sandbox_insert_get_and_update),
        T(test_sandbox_unknown_ids_are_enoent),
        T(test_sandbox_insert_validates),
        T(test_sandbox_list_is_per_org_newest_first),
        T(test_sandbox_list_label_filter_needs_all_pairs),
        T(test_sandbox_list_stops_at_limit),
        T(test_each_running_sees_only_running_and_may_update),
        T(test_each_running_stops_on_callback_error),
        T(test_reopen_keeps_tokens_and_sandboxes),
        T(test_db_files_are_private),
        T(test_permissive_umask_and_loose_existing_mode_still_give_0600),
        T(test_fresh_state_dir_is_created_private),
        T(test_newer_schema_is_refused),
        T(test_symlinked_db_is_refused),
        T(test_usage_add_and_sum_per_org),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
