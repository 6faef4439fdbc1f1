/* secrets: the sandboxes' CA bundle as a shared read-only layer (ca_layer.h).
 * Layout, relative to the directory returned:
 *   etc/ssl/certs/ca-certificates.crt   root:root 0644, image bundle + CA
 * The directory name is a hash of the file's bytes, so a restarted hutchd
 * (or one with the same image and CA) finds the layer it wrote before, and
 * running sandboxes keep the layer they were given: a layer is never
 * rewritten in place. */
#include "daemon/net/ca_layer.h"
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUNDLE "etc/ssl/certs/ca-certificates.crt"
#define BUNDLE_MAX (4u << 20) /* as hutch-init's copy: a bigger image bundle is cut there */

static struct {
    bool ok;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    const char *ca; /* the PEM text's address: ca.c keeps one for the process */
    char dir[4200];
} g_cache;

static int read_bundle(const char *image_root, char **out, size_t *len, struct stat *st, struct hx_err *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/" BUNDLE, image_root);
    *out = NULL;
    *len = 0;
    autoclose int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : hx_fail(e, errno, "open %s: %m", path);
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode))
        return hx_fail(e, EINVAL, "%s is not a regular file", path);
    char *buf = malloc(BUNDLE_MAX);
    if (!buf)
        return hx_fail(e, ENOMEM, "out of memory");
    ssize_t k;
    while (*len < BUNDLE_MAX && (k = read(fd, buf + *len, BUNDLE_MAX - *len)) > 0)
        *len += (size_t)k;
    *out = buf;
    return 0;
}

/* a directory of the layer with the owner, mode and times of the image's */
static int copy_dir(const char *image_root, const char *tmp, const char *rel, struct hx_err *e)
{
    char src[4200], dst[4200];
    snprintf(src, sizeof src, "%s/%s", image_root, rel);
    snprintf(dst, sizeof dst, "%s/%s", tmp, rel);
    struct stat st;
    if (stat(src, &st) < 0) {
        st.st_mode = S_IFDIR | 0755;
        st.st_uid = st.st_gid = 0;
        clock_gettime(CLOCK_REALTIME, &st.st_atim);
        st.st_mtim = st.st_atim;
    }
    if (mkdir(dst, 0700) < 0 || chown(dst, st.st_uid, st.st_gid) < 0 || chmod(dst, st.st_mode & 07777) < 0)
        return hx_fail(e, errno, "ca layer %s: %m", dst);
    return 0;
}

static int set_times(const char *image_root, const char *tmp, const char *rel, struct hx_err *e)
{
    char src[4200], dst[4200];
    snprintf(src, sizeof src, "%s/%s", image_root, rel);
    snprintf(dst, sizeof dst, "%s/%s", tmp, rel);
    struct stat st;
    if (stat(src, &st) < 0)
        return 0;
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    if (utimensat(AT_FDCWD, dst, ts, 0) < 0)
        return hx_fail(e, errno, "ca layer times %s: %m", dst);
    return 0;
}

static int write_layer(const char *base, const char *image_root, const char *name, const char *text, size_t len,
                       char *out, size_t cap, struct hx_err *e)
{
    snprintf(out, cap, "%s/%s", base, name);
    struct stat st;
    if (stat(out, &st) == 0 && S_ISDIR(st.st_mode))
        return 0; /* written before, by us or an earlier hutchd: the name is its content */
    char tmp[4200], file[4300] = "";
    snprintf(tmp, sizeof tmp, "%s/.tmp-%d-%s", base, (int)getpid(), name);
    int r;
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %m", tmp);
    static const char *const dirs[] = {"etc", "etc/ssl", "etc/ssl/certs"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        if ((r = copy_dir(image_root, tmp, dirs[i], e)) < 0)
            goto fail;
    snprintf(file, sizeof file, "%s/" BUNDLE, tmp);
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        r = hx_fail(e, errno, "create %s: %m", file);
        goto fail;
    }
    bool ok = write(fd, text, len) == (ssize_t)len && fchown(fd, 0, 0) == 0 && fchmod(fd, 0644) == 0 && fsync(fd) == 0;
    int err = errno;
    close(fd);
    if (!ok) {
        r = hx_fail(e, err, "write %s: %s", file, strerror(err));
        goto fail;
    }
    for (size_t i = sizeof dirs / sizeof dirs[0]; i-- > 0;) /* deepest first: a file made in one changes its mtime */
        if ((r = set_times(image_root, tmp, dirs[i], e)) < 0)
            goto fail;
    if (rename(tmp, out) == 0 || errno == EEXIST || errno == ENOTEMPTY) {
        if (access(tmp, F_OK) == 0) /* another wrote the same name first */
            goto cleanup;
        return 0;
    }
    r = hx_fail(e, errno, "rename %s: %m", tmp);
fail:
cleanup:
    if (file[0])
        unlink(file);
    for (size_t i = sizeof dirs / sizeof dirs[0]; i-- > 0;) {
        char d[4300];
        snprintf(d, sizeof d, "%s/%s", tmp, dirs[i]);
        rmdir(d);
    }
    rmdir(tmp);
    return r < 0 ? r : 0;
}

const char *ca_layer_get(const char *state_dir, const char *image_root, const char *ca_pem, struct hx_err *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/" BUNDLE, image_root);
    struct stat st;
    bool have = lstat(path, &st) == 0;
    if (g_cache.ok && g_cache.ca == ca_pem && have && st.st_dev == g_cache.dev && st.st_ino == g_cache.ino &&
        st.st_size == g_cache.size && st.st_mtim.tv_sec == g_cache.mtime.tv_sec &&
        st.st_mtim.tv_nsec == g_cache.mtime.tv_nsec)
        return g_cache.dir;
    g_cache.ok = false;

    /* the bytes hutch-init's add_ca_bundle writes: the image's bundle (up
     * to 4 MiB), a newline if it lacks one, the CA, a newline if it lacks one */
    char *img = NULL;
    size_t ilen = 0;
    struct stat bst = {0};
    if (read_bundle(image_root, &img, &ilen, &bst, e) < 0)
        return NULL;
    size_t pl = strlen(ca_pem);
    autofree char *text = malloc(ilen + pl + 2);
    if (!text) {
        free(img);
        hx_fail(e, ENOMEM, "out of memory");
        return NULL;
    }
    size_t len = 0;
    if (ilen)
        memcpy(text, img, ilen);
    len = ilen;
    free(img);
    if (len > 0 && text[len - 1] != '\n')
        text[len++] = '\n';
    memcpy(text + len, ca_pem, pl);
    len += pl;
    if (len > 0 && text[len - 1] != '\n')
        text[len++] = '\n';

    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!EVP_Digest(text, len, md, &mdlen, EVP_sha256(), NULL) || mdlen < 16) {
        hx_fail(e, EIO, "sha256 of the CA bundle failed");
        return NULL;
    }
    char name[40];
    for (int i = 0; i < 16; i++)
        snprintf(name + 2 * i, 3, "%02x", md[i]);
    char base[4200];
    snprintf(base, sizeof base, "%s/ca-layers", state_dir);
    if (mkdir(base, 0755) < 0 && errno != EEXIST) {
        hx_fail(e, errno, "mkdir %s: %m", base);
        return NULL;
    }
    if (write_layer(base, image_root, name, text, len, g_cache.dir, sizeof g_cache.dir, e) < 0)
        return NULL;
    if (have) {
        g_cache.dev = st.st_dev;
        g_cache.ino = st.st_ino;
        g_cache.size = st.st_size;
        g_cache.mtime = st.st_mtim;
        g_cache.ca = ca_pem;
        g_cache.ok = true;
    }
    return g_cache.dir;
}
