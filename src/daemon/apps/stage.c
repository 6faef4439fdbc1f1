/* Staging a revision's files on the host (stage.h). The source is a live
 * sandbox that may change its files while we copy: every directory is
 * opened relative to its parent's fd with O_NOFOLLOW, so a directory
 * swapped for a symlink mid-copy fails that entry instead of leading out;
 * the start path is resolved with openat2 RESOLVE_IN_ROOT, so ".." and
 * absolute symlinks stay inside the sandbox's root. */
#include "daemon/apps/stage.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "daemon/apps/apps.h"
#include "lib/b64.h"

#define APP_UID 1000
#define DEPTH_MAX 64

struct walk {
    const struct app_stage_limits *lim;
    uint64_t bytes;
    uint32_t files;
    dev_t dev;
    struct hx_err *e;
};

static int copy_file(struct walk *w, int sfd, int dfd, const char *name, mode_t mode)
{
    int in = openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (in < 0)
        return hx_fail(w->e, errno, "open %s: %m", name);
    struct stat st;
    if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) { /* swapped meanwhile */
        close(in);
        return 0;
    }
    int out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0755);
    if (out < 0) {
        close(in);
        return hx_fail(w->e, errno, "create %s: %m", name);
    }
    int r = 0;
    for (;;) {
        if (w->bytes >= w->lim->max_bytes) {
            r = hx_fail(w->e, EFBIG, "the app's files are larger than %llu MiB",
                        (unsigned long long)(w->lim->max_bytes >> 20));
            break;
        }
        size_t want = w->lim->max_bytes - w->bytes < (1u << 20) ? (size_t)(w->lim->max_bytes - w->bytes) + 1 : 1u << 20;
        ssize_t n = copy_file_range(in, NULL, out, NULL, want, 0);
        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP)) {
            char buf[65536];
            n = read(in, buf, want < sizeof buf ? want : sizeof buf);
            if (n > 0 && write(out, buf, (size_t)n) != n)
                n = -1;
        }
        if (n < 0) {
            r = hx_fail(w->e, errno, "copy %s: %m", name);
            break;
        }
        if (n == 0)
            break;
        w->bytes += (uint64_t)n;
    }
    if (r == 0 && fchown(out, APP_UID, APP_UID) < 0)
        r = hx_fail(w->e, errno, "chown %s: %m", name);
    close(out);
    close(in);
    return r;
}

static int walk_dir(struct walk *w, int sfd, int dfd, int depth)
{
    if (depth > DEPTH_MAX)
        return hx_fail(w->e, ELOOP, "directories nested more than %d deep", DEPTH_MAX);
    int dup_fd = dup(sfd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) {
        if (dup_fd >= 0)
            close(dup_fd);
        return hx_fail(w->e, errno, "read directory: %m");
    }
    int r = 0;
    struct dirent *de;
    while (r == 0 && (errno = 0, de = readdir(d))) {
        const char *n = de->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
            continue;
        if (++w->files > w->lim->max_files) {
            r = hx_fail(w->e, EMFILE, "the app has more than %u files", w->lim->max_files);
            break;
        }
        struct stat st;
        if (fstatat(sfd, n, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* gone meanwhile */
        if (S_ISDIR(st.st_mode)) {
            if (st.st_dev != w->dev)
                continue; /* another file system (/proc, a volume): not the app's */
            int s2 = openat(sfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (s2 < 0)
                continue;
            if (mkdirat(dfd, n, 0755) < 0) {
                close(s2);
                r = hx_fail(w->e, errno, "mkdir %s: %m", n);
                break;
            }
            int d2 = openat(dfd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (d2 < 0 || fchown(d2, APP_UID, APP_UID) < 0) {
                r = hx_fail(w->e, errno, "open %s: %m", n);
            } else {
                r = walk_dir(w, s2, d2, depth + 1);
            }
            if (d2 >= 0)
                close(d2);
            close(s2);
        } else if (S_ISREG(st.st_mode)) {
            r = copy_file(w, sfd, dfd, n, st.st_mode);
        } else if (S_ISLNK(st.st_mode)) {
            char t[4096];
            ssize_t len = readlinkat(sfd, n, t, sizeof t - 1);
            if (len < 0)
                continue;
            t[len] = 0;
            /* Copied as it is: inside a sandbox it resolves inside that sandbox. */
            if (symlinkat(t, dfd, n) < 0 || fchownat(dfd, n, APP_UID, APP_UID, AT_SYMLINK_NOFOLLOW) < 0)
                r = hx_fail(w->e, errno, "symlink %s: %m", n);
        }
    }
    closedir(d);
    return r;
}

int app_stage_copy(int root_fd, const char *path, const char *dst, const struct app_stage_limits *lim,
                   uint64_t *bytes_out, struct hx_err *e)
{
    if (!path || path[0] != '/' || strlen(path) > 4000 || strlen(path) == 0)
        return hx_fail(e, EINVAL, "path must be an absolute path in the sandbox");
    struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV};
    int sfd = (int)syscall(SYS_openat2, root_fd, path + 1 + strspn(path + 1, "/"), &how, sizeof how);
    if (sfd < 0 && errno == EXDEV) { /* the path is on another mount (a volume): allowed, still inside */
        how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        sfd = (int)syscall(SYS_openat2, root_fd, path + 1 + strspn(path + 1, "/"), &how, sizeof how);
    }
    if (sfd < 0)
        return hx_fail(e, errno, "path %.200s in the sandbox: %m", path);
    int dfd = open(dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        int err = errno;
        close(sfd);
        return hx_fail(e, err, "open %s: %m", dst);
    }
    struct stat st;
    fstat(sfd, &st);
    struct walk w = {.lim = lim, .dev = st.st_dev, .e = e};
    int r = walk_dir(&w, sfd, dfd, 0);
    close(dfd);
    close(sfd);
    *bytes_out = w.bytes;
    return r;
}

/* mkdir -p of rel's parent under dfd, every component O_NOFOLLOW; returns
 * the parent's fd and its last component in *leaf. */
static int open_parent(int root, const char *rel, char *buf, size_t cap, const char **leaf, struct hx_err *e)
{
    snprintf(buf, cap, "%s", rel);
    int fd = dup(root);
    char *s = buf;
    for (;;) {
        char *slash = strchr(s, '/');
        if (!slash)
            break;
        *slash = 0;
        if (mkdirat(fd, s, 0755) == 0) {
            int c = openat(fd, s, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (c >= 0 && fchown(c, APP_UID, APP_UID) < 0) {
                close(c);
                c = -1;
            }
            close(fd);
            fd = c;
        } else if (errno == EEXIST) {
            int c = openat(fd, s, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            close(fd);
            fd = c;
        } else {
            close(fd);
            fd = -1;
        }
        if (fd < 0)
            return hx_fail(e, errno ? errno : EIO, "asset %.200s: cannot make directory %.100s: %m", rel, s);
        s = slash + 1;
    }
    *leaf = s;
    return fd;
}

int app_stage_assets(json_t *assets, const char *dst, const struct app_stage_limits *lim, struct hx_err *e)
{
    int root = open(dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root < 0)
        return hx_fail(e, errno, "open %s: %m", dst);
    const char *k;
    json_t *a;
    int r = 0;
    uint64_t total = 0;
    json_object_foreach(assets, k, a) {
        char buf[APP_ASSET_PATH_MAX + 1];
        const char *leaf = NULL;
        if (app_rel_path_check(k, e) < 0) {
            r = -EINVAL;
            break;
        }
        int pfd = open_parent(root, k, buf, sizeof buf, &leaf, e);
        if (pfd < 0) {
            r = pfd;
            break;
        }
        const char *kind = json_string_value(json_object_get(a, "kind"));
        if (kind && strcmp(kind, "symlink") == 0) {
            if (symlinkat(json_string_value(json_object_get(a, "target")), pfd, leaf) < 0 ||
                fchownat(pfd, leaf, APP_UID, APP_UID, AT_SYMLINK_NOFOLLOW) < 0)
                r = hx_fail(e, errno, "asset %.200s: %m", k);
            close(pfd);
            if (r < 0)
                break;
            continue;
        }
        const char *content = json_string_value(json_object_get(a, "content"));
        size_t clen = json_string_length(json_object_get(a, "content"));
        const char *enc = json_string_value(json_object_get(a, "encoding"));
        uint8_t *data = NULL;
        size_t len = clen;
        if (enc && strcmp(enc, "base64") == 0) {
            data = malloc(hx_b64_decoded_max(clen) + 3);
            if (!data || hx_b64_decode(content, clen, data, &len) < 0) {
                free(data);
                close(pfd);
                r = hx_fail(e, EINVAL, "asset %.200s: content is not valid base64", k);
                break;
            }
        }
        total += len;
        if (total > lim->max_bytes) {
            free(data);
            close(pfd);
            r = hx_fail(e, EFBIG, "the assets are larger than %llu MiB", (unsigned long long)(lim->max_bytes >> 20));
            break;
        }
        int fd = openat(pfd, leaf, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
        const uint8_t *p = data ? data : (const uint8_t *)content;
        size_t off = 0;
        while (fd >= 0 && off < len) {
            ssize_t n = write(fd, p + off, len - off);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        if (fd < 0 || off < len || fchown(fd, APP_UID, APP_UID) < 0)
            r = hx_fail(e, errno ? errno : EIO, "asset %.200s: %m", k);
        if (fd >= 0)
            close(fd);
        free(data);
        close(pfd);
        if (r < 0)
            break;
    }
    close(root);
    return r;
}

bool app_stage_has_file(const char *dst, const char *rel)
{
    char buf[8192];
    return app_stage_read(dst, rel, buf, 2) >= 0;
}

int app_stage_read(const char *dst, const char *rel, char *buf, size_t cap)
{
    int root = open(dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root < 0)
        return -errno;
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK, .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
    int fd = (int)syscall(SYS_openat2, root, rel, &how, sizeof how);
    int err = errno;
    close(root);
    if (fd < 0)
        return -err;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -EISDIR;
    }
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return -EIO;
    buf[n] = 0;
    return (int)n;
}

static void remove_at(int dfd, int depth)
{
    int dup_fd = dup(dfd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) {
        if (dup_fd >= 0)
            close(dup_fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (unlinkat(dfd, de->d_name, 0) == 0)
            continue;
        int c = depth < DEPTH_MAX + 2 ? openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
        if (c >= 0) {
            remove_at(c, depth + 1);
            close(c);
            unlinkat(dfd, de->d_name, AT_REMOVEDIR);
        }
    }
    closedir(d);
}

void app_stage_remove(const char *dst)
{
    int fd = open(dst, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    remove_at(fd, 0);
    close(fd);
    rmdir(dst);
}
