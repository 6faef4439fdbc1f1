/* hutchd's descriptor headroom (lib/fds.c): the count of open descriptors
 * follows opens and closes, and a piece of work fits only while the reserve
 * stays free below the limit. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>
#include <cmocka.h>
#include "lib/fds.h"

static void test_count_follows_opens_and_closes(void **state)
{
    (void)state;
    int before = hx_fds_open();
    assert_true(before >= 0);
    int fds[40];
    for (int i = 0; i < 40; i++)
        assert_true((fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0);
    assert_int_equal(hx_fds_open(), before + 40);
    for (int i = 0; i < 40; i++)
        close(fds[i]);
    assert_int_equal(hx_fds_open(), before);
}

static void test_count_matches_a_listing(void **state)
{
    (void)state;
    /* the kernel's count (a size of /proc/self/fd) against a walk of it */
    int n = hx_fds_open();
    int found = 0;
    for (int fd = 0; fd < 4096; fd++)
        found += fcntl(fd, F_GETFD) >= 0;
    assert_int_equal(n, found);
}

static void test_room_until_the_reserve(void **state)
{
    (void)state;
    assert_int_equal(hx_fds_room(100, 1000, 8, 256), 0);
    assert_int_equal(hx_fds_room(736, 1000, 8, 256), 0);        /* exactly fits */
    assert_int_equal(hx_fds_room(737, 1000, 8, 256), -EMFILE);  /* one over */
    assert_int_equal(hx_fds_room(19700, 20000, 8, 256), 0);
    assert_int_equal(hx_fds_room(19800, 20000, 8, 256), -EMFILE);
}

static void test_nonsense_never_fits(void **state)
{
    (void)state;
    assert_int_equal(hx_fds_room(-1, 1000, 8, 256), -EMFILE);
    assert_int_equal(hx_fds_room(10, 1000, -8, 256), -EMFILE);
    assert_int_equal(hx_fds_room(10, 100, 8, 256), -EMFILE);    /* the reserve alone is over */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_follows_opens_and_closes),
        cmocka_unit_test(test_count_matches_a_listing),
        cmocka_unit_test(test_room_until_the_reserve),
        cmocka_unit_test(test_nonsense_never_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
