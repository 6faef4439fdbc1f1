/* The user processes' seccomp filter as BPF, generated at build time by
 * seccomp_gen.c from seccomp_rules.c (meson: seccomp_bpf.c in the build tree). */
#pragma once
#include <linux/filter.h>

extern const struct sock_filter seccomp_bpf_insns[];
extern const unsigned short seccomp_bpf_len;
