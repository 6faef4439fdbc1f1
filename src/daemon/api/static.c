/* In-memory static files for the dashboard (static.h). Loaded once at start with O_NOFOLLOW from one
 * directory, so a request can never name a file outside the set: the path is looked up, not opened. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include "daemon/api/static.h"

struct static_file {
    char name[64];
    const char *type;
    char etag[24];
    uint8_t *data;
    size_t len;
};

struct static_site {
    struct static_file f[STATIC_MAX_FILES];
    size_t n, bytes;
};

/* script-src 'self' only: no inline script, no eval. style-src allows inline styles because xterm.js's
 * DOM renderer sets its theme in a <style> it creates; no user text ever becomes markup (the page
 * writes labels and names with textContent). connect-src 'self' covers the API and the terminal's
 * WebSocket (same origin, ws: or wss:). */
const char static_csp[] = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                          "img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; "
                          "form-action 'none'; frame-ancestors 'none'";

static const struct {
    const char *ext, *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},     {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},                  {".png", "image/png"},
    {".ico", "image/x-icon"},                   {".txt", "text/plain; charset=utf-8"},
};

static const char *type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < HX_ARRAY_LEN(types); i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return NULL;
}

static bool name_ok(const char *n)
{
    size_t len = strlen(n);
    return len > 0 && len < 64 && n[0] != '.' && strspn(n, "abcdefghijklmnopqrstuvwxyz0123456789._-") == len;
}

static int load_one(int dfd, const char *name, struct static_file *f, size_t budget, struct hx_err *e)
{
    autoclose int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno == ELOOP ? 1 : hx_fail(e, errno, "open %s: %m", name); /* a symlink: skipped */
    struct stat st;
    if (fstat(fd, &st) < 0)
        return hx_fail(e, errno, "stat %s: %m", name);
    if (!S_ISREG(st.st_mode))
        return 1;
    if ((uint64_t)st.st_size > budget)
        return hx_fail(e, EFBIG, "%s: the dashboard's files exceed %u bytes", name, STATIC_MAX_BYTES);
    autofree uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf)
        return hx_fail(e, ENOMEM, "%s: out of memory", name);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return hx_fail(e, r < 0 ? errno : EIO, "read %s: %s", name, r < 0 ? strerror(errno) : "short file");
        got += (size_t)r;
    }
    f->data = hx_steal(&buf);
    f->len = got;
    snprintf(f->name, sizeof f->name, "%s", name);
    f->type = type_of(name);
    uint64_t h = 1469598103934665603ull; /* FNV-1a: an ETag that changes with the content */
    for (size_t i = 0; i < got; i++)
        h = (h ^ f->data[i]) * 1099511628211ull;
    snprintf(f->etag, sizeof f->etag, "\"%016" PRIx64 "\"", h);
    return 0;
}

int static_site_load(const char *dir, struct static_site **out, struct hx_err *e)
{
    struct static_site *s = calloc(1, sizeof *s);
    if (!s)
        return hx_fail(e, ENOMEM, "out of memory");
    DIR *d = opendir(dir);
    if (!d) {
        free(s);
        return hx_fail(e, errno, "dashboard directory %s: %m", dir);
    }
    int r = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!name_ok(de->d_name) || !type_of(de->d_name))
            continue;
        if (s->n == STATIC_MAX_FILES) {
            r = hx_fail(e, EFBIG, "dashboard directory %s: more than %d files", dir, STATIC_MAX_FILES);
            break;
        }
        r = load_one(dirfd(d), de->d_name, &s->f[s->n], STATIC_MAX_BYTES - s->bytes, e);
        if (r < 0)
            break;
        if (r == 0)
            s->bytes += s->f[s->n++].len;
        r = 0;
    }
    closedir(d);
    bool has_index = false;
    for (size_t i = 0; i < s->n; i++)
        has_index = has_index || strcmp(s->f[i].name, "index.html") == 0;
    if (r == 0 && !has_index)
        r = hx_fail(e, ENOENT, "dashboard directory %s has no index.html", dir);
    if (r < 0) {
        static_site_free(s);
        return r;
    }
    *out = s;
    return 0;
}

static const struct static_file *find(const struct static_site *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->f[i].name, name) == 0)
            return &s->f[i];
    return NULL;
}

bool static_site_serve(const struct static_site *s, struct http_conn *c, const struct http_request *req)
{
    const char *name;
    if (strcmp(req->path, "/") == 0 || strcmp(req->path, "/index.html") == 0)
        name = "index.html";
    else if (strncmp(req->path, "/ui/", 4) == 0)
        name = req->path + 4;
    else
        return false;
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        http_respond(c, 405, "text/plain; charset=utf-8", "Allow: GET, HEAD\r\n", "method not allowed\n", 19);
        return true;
    }
    const struct static_file *f = s ? find(s, name) : NULL;
    if (!f) {
        static const char none[] = "not found\n", missing[] = "the dashboard is not installed (make dashboard)\n";
        const char *msg = s ? none : missing;
        http_respond(c, 404, "text/plain; charset=utf-8", "X-Content-Type-Options: nosniff\r\n", msg, strlen(msg));
        return true;
    }
    char hdr[1024];
    snprintf(hdr, sizeof hdr,
             "Content-Security-Policy: %s\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n"
             "Referrer-Policy: no-referrer\r\nCross-Origin-Opener-Policy: same-origin\r\n"
             "Cross-Origin-Resource-Policy: same-origin\r\nCache-Control: no-cache\r\nETag: %s\r\n",
             static_csp, f->etag);
    const char *inm = http_header_get(req, "if-none-match");
    if (inm && strcmp(inm, f->etag) == 0) {
        http_respond(c, 304, NULL, hdr, NULL, 0);
        return true;
    }
    http_respond(c, 200, f->type, hdr, f->data, f->len);
    return true;
}

size_t static_site_count(const struct static_site *s)
{
    return s ? s->n : 0;
}

void static_site_free(struct static_site *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->f[i].data);
    free(s);
}
