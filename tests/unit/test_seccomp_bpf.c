/* The seccomp program hutch-init loads (generated at build time,
 * src/init/seccomp_gen.c) is exactly what libseccomp builds from the rules
 * now, and applied it denies what the rules deny and nothing else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include "init/init.h"
#include "init/seccomp_bpf.h"
#include "init/seccomp_rules.h"

static void test_generated_program_is_what_libseccomp_builds_now(void **state)
{
    int err = 0;
    const char *what = "";
    scmp_filter_ctx ctx = seccomp_rules_build(&err, &what);
    assert_non_null(ctx);
    int fd = memfd_create("bpf", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(seccomp_export_bpf(ctx, fd), 0);
    seccomp_release(ctx);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal((size_t)st.st_size, (size_t)seccomp_bpf_len * sizeof(struct sock_filter));
    void *now = malloc((size_t)st.st_size);
    assert_non_null(now);
    assert_int_equal(pread(fd, now, (size_t)st.st_size, 0), st.st_size);
    assert_memory_equal(now, seccomp_bpf_insns, (size_t)st.st_size);
    free(now);
    close(fd);
    /* not a trivial program: three ABIs, ~70 denied calls, argument rules */
    assert_true(seccomp_bpf_len > 100);
}

/* Each probe's errno, as a small number the child can exit with. */
enum { OK = 0, E_PERM = 1, E_NOSYS = 2, E_BADF = 3, OTHER = 9 };
static int code(long r)
{
    if (r >= 0)
        return OK;
    return errno == EPERM ? E_PERM : errno == ENOSYS ? E_NOSYS : errno == EBADF ? E_BADF : OTHER;
}

/* Runs probe number `which` in a child, before (filtered == 0) or after the
 * generated filter is applied (with no_new_privs, so no privilege is needed). */
static int probe(int which, int filtered)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (filtered && (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || seccomp_apply() < 0))
            _exit(100);
        long r;
        switch (which) {
        case 0: r = syscall(SYS_getppid); break;
        case 1: r = syscall(SYS_unshare, 0); break; /* a no-op unless denied */
        case 2: r = syscall(SYS_ioctl, -1, TIOCSTI, NULL); break;
        case 3: r = syscall(SYS_clone3, NULL, 0); break;
        case 4: r = syscall(SYS_personality, 0xffffffffUL); break; /* the query stays allowed */
        case 5: r = syscall(SYS_personality, 0x0001UL); break;
        case 6: r = syscall(SYS_ioctl, -1, TIOCGWINSZ, NULL); break;
        default: r = syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0); break;
        }
        _exit(code(r));
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_applied_program_denies_what_the_rules_deny(void **state)
{
    /* before the filter: the probes work (positive controls) */
    assert_int_equal(probe(1, 0), OK);
    assert_int_equal(probe(2, 0), E_BADF);
    assert_int_equal(probe(3, 0) == E_NOSYS, 0);
    /* after it: hutch's errnos */
    assert_int_equal(probe(0, 1), OK);
    assert_int_equal(probe(1, 1), E_PERM);
    assert_int_equal(probe(2, 1), E_PERM);
    assert_int_equal(probe(3, 1), E_NOSYS);
    assert_int_equal(probe(4, 1), OK);
    assert_int_equal(probe(5, 1), E_PERM);
    assert_int_equal(probe(6, 1), E_BADF); /* other ioctls pass */
    assert_int_equal(probe(7, 1), OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generated_program_is_what_libseccomp_builds_now),
        cmocka_unit_test(test_applied_program_denies_what_the_rules_deny),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
