/* One error convention for all of hutch: a function that can fail returns a
 * negative errno-style value and fills a struct hx_err with a message that
 * says what was being done and on what. */
#pragma once
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct hx_err {
    int code;        /* an errno value (positive), 0 when no error */
    char msg[256];
};

/* Fills e (may be NULL) and returns -code. The message is used as given;
 * write ": %m" in fmt (glibc) to add strerror(errno) for system calls. */
int hx_fail(struct hx_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefixes e->msg with more context; returns -e->code. */
int hx_wrap(struct hx_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline void hx_freep(void *p) { free(*(void **)p); }
static inline void hx_closep(int *fd) { if (*fd >= 0) close(*fd); }
#define autofree  __attribute__((cleanup(hx_freep)))
#define autoclose __attribute__((cleanup(hx_closep)))

/* Moves ownership out of a cleanup variable. */
static inline void *hx_steal_ptr(void *pp) { void **p = pp; void *v = *p; *p = NULL; return v; }
#define hx_steal(pp) hx_steal_ptr(pp)
static inline int hx_steal_fd(int *fd) { int v = *fd; *fd = -1; return v; }

/* Terminates the process with a message: only for short privileged setup
 * paths where a half-built sandbox is torn down whole by the caller. */
_Noreturn void hx_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define HX_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
