/* --log-format json (log.h): glibc's stdout and stderr are plain variables, so JSON mode points them at
 * fopencookie streams whose write function cuts lines and writes each as one JSON object to the fd the
 * stream used to write to. Nothing is dropped: a line longer than LOG_LINE_MAX is cut and flagged. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include "daemon/log.h"
#include "lib/strparse.h"

struct sink {
    int fd;                       /* where the JSON lines go */
    const char *level;
    const char *component;        /* when a line names none */
    char line[LOG_LINE_MAX];
    size_t len;
    int truncated;
};

static struct {
    enum log_format fmt;
    struct sink out, err, child;
    int child_r, child_w;         /* the helpers' pipe */
    uv_pipe_t pipe;
    char rbuf[4096];
} g = {.child_r = -1, .child_w = -1};

/* Appends s as a JSON string body (no quotes): escapes, and invalid UTF-8 becomes U+FFFD. */
static size_t put_json_text(char *out, size_t cap, size_t o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n && o + 8 < cap;) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
            i++;
        } else if (ch < 0x20 || ch == 0x7f) {
            o += (size_t)snprintf(out + o, cap - o, "\\u00%c%c", hex[ch >> 4], hex[ch & 15]);
            i++;
        } else if (ch < 0x80) {
            out[o++] = (char)ch;
            i++;
        } else {
            /* one well-formed UTF-8 sequence (no overlongs, no surrogates, <= U+10FFFF) or U+FFFD */
            size_t len = ch >= 0xf0 ? 4 : ch >= 0xe0 ? 3 : ch >= 0xc2 ? 2 : 0;
            bool ok = len && ch <= 0xf4 && i + len <= n;
            for (size_t k = 1; ok && k < len; k++)
                ok = ((unsigned char)s[i + k] & 0xc0) == 0x80;
            if (ok && len == 3) {
                unsigned char c1 = (unsigned char)s[i + 1];
                ok = !(ch == 0xe0 && c1 < 0xa0) && !(ch == 0xed && c1 >= 0xa0);
            }
            if (ok && len == 4) {
                unsigned char c1 = (unsigned char)s[i + 1];
                ok = !(ch == 0xf0 && c1 < 0x90) && !(ch == 0xf4 && c1 >= 0x90);
            }
            if (ok) {
                memcpy(out + o, s + i, len);
                o += len;
                i += len;
            } else {
                memcpy(out + o, "\xef\xbf\xbd", 3);
                o += 3;
                i++;
            }
        }
    }
    return o;
}

size_t log_format_json(char *out, size_t cap, int64_t time_ms, const char *level, const char *default_component,
                       const char *msg, size_t n, int truncated)
{
    /* "name: rest": the program that wrote it (hutchd prefixes its lines "hutchd: ") */
    char component[40];
    snprintf(component, sizeof component, "%s", default_component);
    size_t pl = 0;
    while (pl < n && pl < 32 && ((msg[pl] >= 'a' && msg[pl] <= 'z') || msg[pl] == '-' ||
                                 (pl > 0 && msg[pl] >= '0' && msg[pl] <= '9')))
        pl++;
    if (pl > 0 && pl + 1 < n && msg[pl] == ':' && msg[pl + 1] == ' ') {
        memcpy(component, msg, pl);
        component[pl] = 0;
        msg += pl + 2;
        n -= pl + 2;
    }
    /* the sandbox it is about: the first valid sandbox id in it; "sbx_...: rest" loses the prefix */
    char sandbox[32] = "";
    for (size_t i = 0; i + 4 <= n && !sandbox[0]; i++) {
        if (memcmp(msg + i, "sbx_", 4) != 0 || (i > 0 && (msg[i - 1] == '_' || (msg[i - 1] >= 'a' && msg[i - 1] <= 'z'))))
            continue;
        size_t k = i;
        while (k < n && k - i < 31 && ((msg[k] >= 'a' && msg[k] <= 'z') || (msg[k] >= '0' && msg[k] <= '9') || msg[k] == '_'))
            k++;
        char id[32];
        memcpy(id, msg + i, k - i);
        id[k - i] = 0;
        if (!hx_sandbox_id_valid(id))
            continue;
        memcpy(sandbox, id, sizeof id);
        if (i == 0 && k + 1 < n && msg[k] == ':' && msg[k + 1] == ' ') {
            msg += k + 2;
            n -= k + 2;
        }
    }
    time_t secs = (time_t)(time_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char ts[40];
    size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%03dZ", (int)(time_ms % 1000));
    size_t o = (size_t)snprintf(out, cap, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts, level);
    o = put_json_text(out, cap - 96, o, msg, n);
    o += (size_t)snprintf(out + o, cap - o, "\",\"fields\":{\"component\":\"%s\"", component);
    if (sandbox[0])
        o += (size_t)snprintf(out + o, cap - o, ",\"sandbox\":\"%s\"", sandbox);
    if (truncated)
        o += (size_t)snprintf(out + o, cap - o, ",\"truncated\":true");
    o += (size_t)snprintf(out + o, cap - o, "}}\n");
    return o < cap ? o : cap - 1;
}

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere to log that logging failed */
        p += w;
        n -= (size_t)w;
    }
}

static void sink_flush(struct sink *k)
{
    static char out[LOG_LINE_MAX * 6 + 512]; /* worst case: every byte escaped as \u00XX */
    size_t n = log_format_json(out, sizeof out, wall_ms(), k->level, k->component, k->line, k->len, k->truncated);
    write_all(k->fd, out, n);
    k->len = 0;
    k->truncated = 0;
}

static void sink_feed(struct sink *k, const char *buf, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (buf[i] == '\n') {
            sink_flush(k);
        } else if (k->len < sizeof k->line) {
            k->line[k->len++] = buf[i];
        } else {
            k->truncated = 1;
        }
    }
}

static ssize_t cookie_write(void *cookie, const char *buf, size_t size)
{
    sink_feed(cookie, buf, size);
    return (ssize_t)size;
}

static int cookie_close(void *cookie)
{
    struct sink *k = cookie;
    if (k->len)
        sink_flush(k);
    return 0;
}

static FILE *open_sink(struct sink *k, int fd, const char *level, struct hx_err *e)
{
    k->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (k->fd < 0) {
        hx_fail(e, errno, "dup fd %d for the JSON log: %m", fd);
        return NULL;
    }
    k->level = level;
    k->component = "hutchd";
    FILE *f = fopencookie(k, "w", (cookie_io_functions_t){.write = cookie_write, .close = cookie_close});
    if (!f) {
        hx_fail(e, errno, "fopencookie: %m");
        return NULL;
    }
    setvbuf(f, NULL, _IONBF, 0); /* the sink keeps the partial line itself */
    return f;
}

int log_init(enum log_format f, struct hx_err *e)
{
    g.fmt = f;
    if (f != LOG_JSON)
        return 0;
    fflush(stdout);
    fflush(stderr);
    FILE *o = open_sink(&g.out, STDOUT_FILENO, "info", e);
    if (!o)
        return -e->code;
    FILE *er = open_sink(&g.err, STDERR_FILENO, "warn", e);
    if (!er)
        return -e->code;
    stdout = o; /* glibc: stdout and stderr are ordinary variables */
    stderr = er;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return hx_fail(e, errno, "pipe for the helpers' log: %m");
    g.child_r = p[0];
    g.child_w = p[1];
    g.child.fd = g.err.fd;
    g.child.level = "warn";
    g.child.component = "helper";
    return 0;
}

int log_child_fd(int fd)
{
    return g.fmt == LOG_JSON && g.child_w >= 0 ? g.child_w : fd;
}

static void on_log_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(g.rbuf, sizeof g.rbuf);
}

static void on_log_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n > 0)
        sink_feed(&g.child, buf->base, (size_t)n);
    else if (n < 0)
        uv_read_stop(s);
}

void log_start(uv_loop_t *loop)
{
    if (g.fmt != LOG_JSON || g.child_r < 0)
        return;
    if (uv_pipe_init(loop, &g.pipe, 0) < 0 || uv_pipe_open(&g.pipe, g.child_r) < 0)
        return;
    uv_unref((uv_handle_t *)&g.pipe); /* the loop ends when the daemon's work does */
    uv_read_start((uv_stream_t *)&g.pipe, on_log_alloc, on_log_read);
}
