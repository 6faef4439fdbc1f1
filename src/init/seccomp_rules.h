/* The seccomp filter of user processes as libseccomp rules. Only the build
 * (seccomp_gen.c, which exports it as BPF into a generated C array) and the
 * unit test that checks that array link this and libseccomp: hutch-init
 * loads the array (seccomp.c). */
#pragma once
#include <seccomp.h>

/* A new filter context holding every rule, or NULL with *err (a negative
 * errno) and *what (the rule that failed) set. The caller releases it. */
scmp_filter_ctx seccomp_rules_build(int *err, const char **what);
