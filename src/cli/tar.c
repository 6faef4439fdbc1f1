/* Tar streams for 'hutch cp -' on libarchive (see tar.h). libarchive parses the
 * hostile bytes (headers, pax records, GNU long names, base-256 numbers); what
 * stays here is small and judges what comes out: paths are cleaned and refused
 * when absolute or with '..', lengths are bounded, and only tar formats without
 * compression are read (the smallest part of libarchive an archive can reach). */
#include <archive.h>
#include <archive_entry.h>
#include <inttypes.h>
#include <locale.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/tar.h"

#define TAR_BLOCK 512
#define READ_BUF (64u * 1024u) /* bytes per read(2) of the input */

/* ---- writer ----------------------------------------------------------- */

struct tar_writer {
    struct archive *a;
    struct archive_entry *ent;
    locale_t utf8;                 /* C.UTF-8, when the system has it */
    int fd;
};

static la_ssize_t write_cb(struct archive *a, void *ud, const void *p, size_t n)
{
    struct tar_writer *w = ud;
    const uint8_t *b = p;
    for (size_t left = n; left;) {
        ssize_t k = write(w->fd, b, left);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            archive_set_error(a, errno, "write: %s", strerror(errno));
            return -1;
        }
        b += k;
        left -= (size_t)k;
    }
    return (la_ssize_t)n;
}

static int wfail(struct tar_writer *w, const char *what, struct hx_err *e)
{
    int code = archive_errno(w->a);
    return hx_fail(e, code > 0 ? code : EIO, "tar: %s: %s", what,
                   archive_error_string(w->a) ? archive_error_string(w->a) : "failed");
}

int tar_writer_open(struct tar_writer **out, int fd, struct hx_err *e)
{
    struct tar_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->a = archive_write_new()) || !(w->ent = archive_entry_new())) {
        tar_writer_free(w);
        return hx_fail(e, ENOMEM, "out of memory");
    }
    w->fd = fd;
    w->utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    /* pax-restricted: plain ustar headers, a pax record only for what ustar
     * cannot hold (long paths and links, sizes of 8 GiB and more) */
    if (archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
        archive_write_add_filter_none(w->a) != ARCHIVE_OK ||
        archive_write_open(w->a, w, NULL, write_cb, NULL) != ARCHIVE_OK) {
        int rc = wfail(w, "start", e);
        tar_writer_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int tar_write_header(struct tar_writer *w, const struct tar_hdr *h, struct hx_err *e)
{
    if (strlen(h->path) > TAR_PATH_MAX || strlen(h->link) > TAR_PATH_MAX)
        return hx_fail(e, ENAMETOOLONG, "path too long for the archive: %.100s", h->path);
    struct archive_entry *ent = archive_entry_clear(w->ent);
    unsigned ft = h->type == TAR_DIR ? AE_IFDIR : h->type == TAR_SYMLINK ? AE_IFLNK : AE_IFREG;
    archive_entry_copy_pathname(ent, h->path);
    archive_entry_set_mode(ent, (mode_t)(ft | (h->mode & 07777)));
    archive_entry_set_size(ent, h->type == TAR_FILE ? (la_int64_t)h->size : 0);
    archive_entry_set_mtime(ent, h->mtime > 0 ? h->mtime : 0, 0);
    /* uid, gid 0 and no user or group names: the extractor's own */
    if (h->type == TAR_SYMLINK)
        archive_entry_copy_symlink(ent, h->link);
    /* Names are bytes, almost always UTF-8. In the CLI's "C" locale libarchive
     * would call every non-ASCII name unconvertible and add a pax record with
     * hdrcharset=BINARY (GNU tar warns on each); under C.UTF-8, for this call
     * only, a UTF-8 name is written as it is. */
    locale_t prev = w->utf8 ? uselocale(w->utf8) : (locale_t)0;
    int r = archive_write_header(w->a, ent);
    if (prev)
        uselocale(prev);
    if (r < ARCHIVE_WARN) /* WARN: a name not in the locale's charset, written as bytes */
        return wfail(w, h->path, e);
    return 0;
}

int tar_write_data(struct tar_writer *w, const void *p, size_t n, struct hx_err *e)
{
    const uint8_t *b = p;
    while (n) {
        la_ssize_t k = archive_write_data(w->a, b, n);
        if (k < 0)
            return wfail(w, "write", e);
        if (k == 0) /* past the declared size */
            return 0;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

int tar_writer_close(struct tar_writer *w, struct hx_err *e)
{
    int rc = archive_write_close(w->a) == ARCHIVE_OK ? 0 : wfail(w, "end", e);
    tar_writer_free(w);
    return rc;
}

void tar_writer_free(struct tar_writer *w)
{
    if (!w)
        return;
    if (w->a)
        archive_write_free(w->a); /* after close; otherwise the archive is left unended */
    archive_entry_free(w->ent);
    if (w->utf8)
        freelocale(w->utf8);
    free(w);
}

/* ---- reader ----------------------------------------------------------- */

struct tar_reader {
    struct archive *a;
    int fd;
    uint64_t total;                /* bytes read from fd */
    bool at_eof;                   /* read(2) returned 0 */
    uint8_t tail[TAR_BLOCK];       /* the last block read (at_eof: is it an end block?) */
    size_t tail_len;
    uint8_t buf[READ_BUF];
};

static la_ssize_t read_cb(struct archive *a, void *ud, const void **out)
{
    struct tar_reader *r = ud;
    ssize_t k;
    do
        k = read(r->fd, r->buf, sizeof r->buf);
    while (k < 0 && errno == EINTR);
    if (k < 0) {
        archive_set_error(a, errno, "read: %s", strerror(errno));
        return -1;
    }
    if (k == 0)
        r->at_eof = true;
    size_t n = (size_t)k;
    if (n >= TAR_BLOCK) {
        memcpy(r->tail, r->buf + n - TAR_BLOCK, TAR_BLOCK);
        r->tail_len = TAR_BLOCK;
    } else if (n) {
        size_t keep = r->tail_len + n > TAR_BLOCK ? TAR_BLOCK - n : r->tail_len;
        memmove(r->tail, r->tail + r->tail_len - keep, keep);
        memcpy(r->tail + keep, r->buf, n);
        r->tail_len = keep + n;
    }
    r->total += n;
    *out = r->buf;
    return k;
}

static int rfail(struct tar_reader *r, struct hx_err *e)
{
    const char *msg = archive_error_string(r->a);
    int code = archive_errno(r->a);
    int64_t at = archive_filter_bytes(r->a, 0);
    if (msg && strstr(msg, "runcated"))
        return hx_fail(e, EPIPE, "tar: archive truncated at byte %" PRId64, at);
    return hx_fail(e, code > 0 ? code : EINVAL, "tar: %s (at byte %" PRId64 ")", msg ? msg : "read error", at);
}

int tar_reader_open(struct tar_reader **out, int fd, struct hx_err *e)
{
    struct tar_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->a = archive_read_new())) {
        free(r);
        return hx_fail(e, ENOMEM, "out of memory");
    }
    r->fd = fd;
    /* tar only (ustar, pax, GNU, v7), no decompression filters */
    if (archive_read_support_format_tar(r->a) != ARCHIVE_OK ||
        archive_read_open(r->a, r, NULL, read_cb, NULL) != ARCHIVE_OK) {
        int rc = rfail(r, e);
        tar_reader_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

static int copy_bounded(char *dst, const char *src, const char *what, struct hx_err *e)
{
    size_t n = src ? strlen(src) : 0;
    if (n > TAR_PATH_MAX)
        return hx_fail(e, ENAMETOOLONG, "tar: %s too long", what);
    memcpy(dst, src ? src : "", n + 1);
    return 0;
}

int tar_next(struct tar_reader *r, struct tar_hdr *h, struct hx_err *e)
{
    struct archive_entry *ent;
    int k = archive_read_next_header(r->a, &ent);
    if (k == ARCHIVE_EOF) {
        /* libarchive also ends at the end of its input; a stream cut between two
         * entries has no zero block at its end: that is a truncation */
        bool zero = r->tail_len == TAR_BLOCK;
        for (size_t i = 0; zero && i < TAR_BLOCK; i++)
            zero = r->tail[i] == 0;
        if (r->at_eof && (uint64_t)archive_filter_bytes(r->a, 0) == r->total && !zero)
            return hx_fail(e, EPIPE, "tar: archive truncated at byte %" PRIu64 " (no end-of-archive block)",
                           r->total);
        return 0;
    }
    /* WARN: a name not in the locale's charset (kept as bytes) or an ignored
     * extension; RETRY (a damaged header) and worse end the copy */
    if (k < ARCHIVE_WARN)
        return rfail(r, e);
    memset(h, 0, sizeof *h);
    int rc;
    const char *path = archive_entry_pathname(ent);
    if (!path) /* not convertible to this locale: never read as "" (the root) */
        return hx_fail(e, EILSEQ, "tar: an entry's path cannot be read (at byte %" PRId64 ")",
                       archive_filter_bytes(r->a, 0));
    if ((rc = copy_bounded(h->path, path, "path", e)) < 0 ||
        (rc = copy_bounded(h->link, archive_entry_symlink(ent), "link target", e)) < 0)
        return rc;
    h->mode = (uint32_t)archive_entry_perm(ent) & 07777;
    la_int64_t size = archive_entry_size_is_set(ent) ? archive_entry_size(ent) : 0;
    h->size = size > 0 ? (uint64_t)size : 0;
    h->mtime = archive_entry_mtime_is_set(ent) ? archive_entry_mtime(ent) : 0;
    if (archive_entry_hardlink(ent))
        h->type = '1';
    else
        switch (archive_entry_filetype(ent)) {
        case AE_IFREG: h->type = TAR_FILE; break;
        case AE_IFDIR: h->type = TAR_DIR; break;
        case AE_IFLNK: h->type = TAR_SYMLINK; break;
        case AE_IFCHR: h->type = '3'; break;
        case AE_IFBLK: h->type = '4'; break;
        case AE_IFIFO: h->type = '6'; break;
        default: h->type = '?';
        }
    if (h->type != TAR_SYMLINK)
        h->link[0] = 0;
    if ((rc = tar_clean_path(h->path, e)) < 0)
        return rc;
    return 1;
}

ssize_t tar_read(struct tar_reader *r, void *buf, size_t n, struct hx_err *e)
{
    la_ssize_t k = archive_read_data(r->a, buf, n);
    if (k < 0)
        return rfail(r, e);
    return (ssize_t)k;
}

void tar_reader_free(struct tar_reader *r)
{
    if (!r)
        return;
    archive_read_free(r->a);
    free(r);
}

/* ---- paths ------------------------------------------------------------ */

int tar_clean_path(char *path, struct hx_err *e)
{
    if (path[0] == '/')
        return hx_fail(e, EPERM, "tar: absolute path '%.100s' refused", path);
    char out[TAR_PATH_MAX + 1];
    size_t o = 0;
    const char *p = path;
    while (*p) {
        const char *s = strchr(p, '/');
        size_t n = s ? (size_t)(s - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return hx_fail(e, EPERM, "tar: path with '..' refused: '%.100s'", path);
        if (n && !(n == 1 && p[0] == '.')) {
            if (o + n + 1 > TAR_PATH_MAX)
                return hx_fail(e, ENAMETOOLONG, "tar: path too long");
            if (o)
                out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
        while (*p == '/')
            p++;
    }
    out[o] = 0;
    memcpy(path, out, o + 1);
    return 0;
}
