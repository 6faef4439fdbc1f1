/* The disk promise: a layer is made only while the free space covers it and
 * all that live layers may still grow by, less the reserve. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>
#include "daemon/sandbox/disk.h"

static void test_fits_exactly_at_the_edge(void **state)
{
    (void)state;
    struct hx_err e = {0};
    /* 600 free, 64 reserved, 136 still owed to live layers: 400 fit exactly */
    assert_int_equal(disk_budget_check(600, 64, 136, 400, "/d", &e), 0);
    assert_int_equal(disk_budget_check(600, 64, 137, 400, "/d", &e), -ENOSPC);
    assert_int_equal(e.code, ENOSPC);
    assert_non_null(strstr(e.msg, "399 MiB are left"));
    assert_non_null(strstr(e.msg, "promised 400 MiB"));
}

static void test_reserve_larger_than_free_space_refuses(void **state)
{
    (void)state;
    struct hx_err e = {0};
    assert_int_equal(disk_budget_check(50, 64, 0, 16, "/d", &e), -ENOSPC);
    assert_non_null(strstr(e.msg, " 0 MiB are left"));
}

static void test_owed_space_larger_than_free_space_refuses(void **state)
{
    (void)state;
    struct hx_err e = {0};
    assert_int_equal(disk_budget_check(1000, 0, 5000, 16, "/d", &e), -ENOSPC);
    assert_int_equal(disk_budget_check(1000, 0, 984, 16, "/d", &e), 0);
}

static void test_default_reserve_is_five_percent_within_bounds(void **state)
{
    (void)state;
    assert_int_equal(disk_default_reserve_mb(600), 64);
    assert_int_equal(disk_default_reserve_mb(20000), 1000);
    assert_int_equal(disk_default_reserve_mb(258048), 4096);
}

static void test_allocated_size_of_a_sparse_file(void **state)
{
    (void)state;
    char path[] = "/tmp/hutch-disk-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(ftruncate(fd, 64 << 20), 0);
    assert_true(disk_allocated_mb(fd) <= 1); /* sparse: size is not allocation */
    static char buf[1 << 20];
    memset(buf, 1, sizeof buf);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pwrite(fd, buf, sizeof buf, (off_t)i << 21), (ssize_t)sizeof buf);
    fsync(fd);
    uint64_t mb = disk_allocated_mb(fd);
    assert_true(mb >= 3 && mb <= 4);
    close(fd);
    assert_int_equal(disk_allocated_mb(-1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fits_exactly_at_the_edge),
        cmocka_unit_test(test_reserve_larger_than_free_space_refuses),
        cmocka_unit_test(test_owed_space_larger_than_free_space_refuses),
        cmocka_unit_test(test_default_reserve_is_five_percent_within_bounds),
        cmocka_unit_test(test_allocated_size_of_a_sparse_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
