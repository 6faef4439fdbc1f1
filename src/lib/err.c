/* Error struct helpers (see err.h). */
#include "lib/err.h"
#include <stdarg.h>
#include <stdio.h>

int hx_fail(struct hx_err *e, int code, const char *fmt, ...)
{
    if (code <= 0)
        code = EIO;
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return -code;
}

int hx_wrap(struct hx_err *e, const char *fmt, ...)
{
    if (!e)
        return -EIO;
    char prefix[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t plen = strnlen(prefix, sizeof prefix - 1);
    size_t olen = strnlen(e->msg, sizeof e->msg - 1);
    if (plen + 2 >= sizeof e->msg)
        plen = sizeof e->msg - 3;
    if (plen + 2 + olen >= sizeof e->msg)
        olen = sizeof e->msg - plen - 3;
    memmove(e->msg + plen + 2, e->msg, olen);
    memcpy(e->msg, prefix, plen);
    e->msg[plen] = ':';
    e->msg[plen + 1] = ' ';
    e->msg[plen + 2 + olen] = '\0';
    return -(e->code ? e->code : EIO);
}

_Noreturn void hx_die(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    fputs("hutch: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (saved)
        fprintf(stderr, ": %s", strerror(saved));
    fputc('\n', stderr);
    _exit(127);
}
