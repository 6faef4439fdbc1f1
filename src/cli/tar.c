/* ustar reader and writer for 'hutch cp -' (see tar.h). Everything read is
 * hostile: fixed-size fields are parsed with bounds, pax records are length-
 * checked, and no path leaves the extraction root ('..', absolute paths). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/tar.h"

/* ustar header field offsets and sizes */
#define F_NAME 0, 100
#define F_MODE 100, 8
#define F_SIZE 124, 12
#define F_MTIME 136, 12
#define F_CHKSUM 148, 8
#define F_TYPE 156
#define F_LINK 157, 100
#define F_MAGIC 257, 6
#define F_PREFIX 345, 155

/* ---- writer ----------------------------------------------------------- */

static void put_octal(uint8_t *blk, size_t off, size_t len, uint64_t v)
{
    /* len-1 digits and a NUL; callers check the value fits */
    snprintf((char *)blk + off, len, "%0*" PRIo64, (int)len - 1, v);
}

static bool fits_octal(uint64_t v, size_t len)
{
    return len - 1 >= 22 || v < ((uint64_t)1 << (3 * (len - 1)));
}

static void put_str(uint8_t *blk, size_t off, size_t len, const char *s)
{
    size_t n = strlen(s);
    memcpy(blk + off, s, n < len ? n : len); /* no NUL needed when it fills the field */
}

static void finish_block(uint8_t *blk)
{
    memset(blk + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < TAR_BLOCK; i++)
        sum += blk[i];
    snprintf((char *)blk + 148, 8, "%06o", sum & 0777777);
    blk[155] = ' ';
}

/* Splits path into ustar prefix/name: true when it fits. */
static bool split_path(const char *path, const char **name, size_t *prefix_len)
{
    size_t n = strlen(path);
    if (n <= 100) {
        *name = path;
        *prefix_len = 0;
        return true;
    }
    for (size_t i = n - 1; i > 0; i--) {
        if (path[i] == '/' && i <= 155 && n - i - 1 <= 100 && n - i - 1 > 0) {
            *name = path + i + 1;
            *prefix_len = i;
            return true;
        }
    }
    return false;
}

static int pax_record(char *out, size_t cap, size_t *len, const char *key, const char *val)
{
    /* "LEN key=value\n" where LEN counts itself */
    size_t body = strlen(key) + strlen(val) + 3; /* ' ', '=', '\n' */
    size_t digits = 1;
    for (;;) { /* the length counts its own digits */
        size_t d = 0;
        for (size_t t = body + digits; t; t /= 10)
            d++;
        if (d == digits)
            break;
        digits = d;
    }
    int n = snprintf(out + *len, cap - *len, "%zu %s=%s\n", body + digits, key, val);
    if (n < 0 || (size_t)n >= cap - *len || (size_t)n != body + digits)
        return -1;
    *len += (size_t)n;
    return 0;
}

int tar_write_header(tar_out_fn out, void *ud, const struct tar_hdr *h, struct hx_err *e)
{
    uint8_t blk[TAR_BLOCK];
    const char *name = h->path;
    size_t prefix_len = 0;
    bool path_ok = split_path(h->path, &name, &prefix_len);
    bool link_ok = strlen(h->link) <= 100;
    bool size_ok = fits_octal(h->size, 12);
    if (strlen(h->path) > TAR_PATH_MAX || strlen(h->link) > TAR_PATH_MAX)
        return hx_fail(e, ENAMETOOLONG, "path too long for the archive: %.100s", h->path);
    if (!path_ok || !link_ok || !size_ok) {
        char pax[3 * TAR_PATH_MAX];
        size_t plen = 0;
        char num[32];
        snprintf(num, sizeof num, "%" PRIu64, h->size);
        if ((!path_ok && pax_record(pax, sizeof pax, &plen, "path", h->path) < 0) ||
            (!link_ok && pax_record(pax, sizeof pax, &plen, "linkpath", h->link) < 0) ||
            (!size_ok && pax_record(pax, sizeof pax, &plen, "size", num) < 0))
            return hx_fail(e, ENAMETOOLONG, "pax record for %.100s", h->path);
        memset(blk, 0, sizeof blk);
        put_str(blk, F_NAME, "././@PaxHeader");
        put_octal(blk, F_MODE, 0644);
        put_octal(blk, F_SIZE, plen);
        put_octal(blk, F_MTIME, 0);
        blk[F_TYPE] = 'x';
        memcpy(blk + 257, "ustar\0" "00", 8);
        finish_block(blk);
        int r = out(ud, blk, sizeof blk, e);
        if (r < 0 || (r = out(ud, pax, plen, e)) < 0 || (r = tar_write_pad(out, ud, plen, e)) < 0)
            return r;
        if (!path_ok) { /* a truncated fallback for readers without pax */
            name = h->path + strlen(h->path) - 100;
            prefix_len = 0;
        }
    }
    memset(blk, 0, sizeof blk);
    put_str(blk, F_NAME, name);
    put_octal(blk, F_MODE, h->mode & 07777);
    put_octal(blk, 108, 8, 0); /* uid, gid: the extractor's own */
    put_octal(blk, 116, 8, 0);
    put_octal(blk, F_SIZE, size_ok && h->type == TAR_FILE ? h->size : 0);
    put_octal(blk, F_MTIME, h->mtime > 0 && fits_octal((uint64_t)h->mtime, 12) ? (uint64_t)h->mtime : 0);
    blk[F_TYPE] = h->type;
    if (link_ok)
        put_str(blk, F_LINK, h->link);
    memcpy(blk + 257, "ustar\0" "00", 8);
    if (prefix_len)
        memcpy(blk + 345, h->path, prefix_len);
    finish_block(blk);
    return out(ud, blk, sizeof blk, e);
}

int tar_write_pad(tar_out_fn out, void *ud, uint64_t size, struct hx_err *e)
{
    static const uint8_t zero[TAR_BLOCK];
    size_t rem = (size_t)(size % TAR_BLOCK);
    return rem ? out(ud, zero, TAR_BLOCK - rem, e) : 0;
}

int tar_write_end(tar_out_fn out, void *ud, struct hx_err *e)
{
    static const uint8_t zero[2 * TAR_BLOCK];
    return out(ud, zero, sizeof zero, e);
}

/* ---- reader ----------------------------------------------------------- */

static int parse_num(const uint8_t *f, size_t len, uint64_t *v)
{
    *v = 0;
    if (f[0] & 0x80) { /* GNU base-256: positive values only */
        if (f[0] != 0x80)
            return -1;
        for (size_t i = 1; i < len; i++) {
            if (*v >> 56)
                return -1;
            *v = (*v << 8) | f[i];
        }
        return 0;
    }
    size_t i = 0;
    while (i < len && f[i] == ' ')
        i++;
    bool any = false;
    for (; i < len && f[i] >= '0' && f[i] <= '7'; i++) {
        if (*v >> 60)
            return -1;
        *v = (*v << 3) | (uint64_t)(f[i] - '0');
        any = true;
    }
    for (; i < len; i++) /* terminators only */
        if (f[i] != ' ' && f[i] != 0)
            return -1;
    return any || f[0] == 0 ? 0 : -1;
}

static void get_str(const uint8_t *blk, size_t off, size_t len, char *out)
{
    size_t n = strnlen((const char *)blk + off, len);
    memcpy(out, blk + off, n);
    out[n] = 0;
}

int tar_parse_header(const uint8_t blk[TAR_BLOCK], struct tar_hdr *h, struct hx_err *e)
{
    bool zero = true;
    for (size_t i = 0; i < TAR_BLOCK && zero; i++)
        zero = blk[i] == 0;
    if (zero)
        return 0;
    uint64_t want;
    if (parse_num(blk + 148, 8, &want) < 0)
        return hx_fail(e, EINVAL, "tar: bad header checksum field");
    unsigned usum = 0;
    int ssum = 0;
    for (size_t i = 0; i < TAR_BLOCK; i++) {
        uint8_t c = i >= 148 && i < 156 ? ' ' : blk[i];
        usum += c;
        ssum += (int8_t)c;
    }
    if (want != usum && (int64_t)want != ssum)
        return hx_fail(e, EINVAL, "tar: header checksum mismatch (not a tar stream?)");
    memset(h, 0, sizeof *h);
    uint64_t v;
    if (parse_num(blk + 100, 8, &v) < 0)
        return hx_fail(e, EINVAL, "tar: bad mode field");
    h->mode = (uint32_t)(v & 07777);
    if (parse_num(blk + 124, 12, &h->size) < 0)
        return hx_fail(e, EINVAL, "tar: bad size field");
    if (parse_num(blk + 136, 12, &v) < 0)
        v = 0; /* a bad time is not worth refusing the file */
    h->mtime = v > INT64_MAX ? 0 : (int64_t)v;
    h->type = blk[156] ? (char)blk[156] : TAR_FILE;
    if (h->type == '7') /* contiguous file: a regular file */
        h->type = TAR_FILE;
    char name[101], prefix[156];
    get_str(blk, F_NAME, name);
    prefix[0] = 0;
    if (memcmp(blk + 257, "ustar", 5) == 0)
        get_str(blk, F_PREFIX, prefix);
    if (prefix[0])
        snprintf(h->path, sizeof h->path, "%s/%s", prefix, name);
    else
        snprintf(h->path, sizeof h->path, "%s", name);
    get_str(blk, F_LINK, h->link);
    return 1;
}

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

void tar_reader_init(struct tar_reader *r, int fd)
{
    memset(r, 0, sizeof *r);
    r->fd = fd;
}

/* Exactly n bytes, or an error (a truncated archive is an error). */
static int read_full(struct tar_reader *r, void *buf, size_t n, struct hx_err *e)
{
    for (size_t got = 0; got < n;) {
        ssize_t k = read(r->fd, (uint8_t *)buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return hx_fail(e, errno, "tar: read: %m");
        if (k == 0)
            return hx_fail(e, EPIPE, "tar: archive truncated at byte %" PRIu64, r->offset);
        got += (size_t)k;
        r->offset += (uint64_t)k;
    }
    return 0;
}

static int skip(struct tar_reader *r, uint64_t n, struct hx_err *e)
{
    uint8_t buf[16384];
    while (n) {
        size_t k = n > sizeof buf ? sizeof buf : (size_t)n;
        int rc = read_full(r, buf, k, e);
        if (rc < 0)
            return rc;
        n -= k;
    }
    return 0;
}

/* Reads a pax or GNU long-name payload of size bytes (bounded) into a malloc'd buffer. */
static int read_meta(struct tar_reader *r, uint64_t size, char **out, struct hx_err *e)
{
    if (size > TAR_PAX_MAX)
        return hx_fail(e, EFBIG, "tar: extended header of %" PRIu64 " bytes refused", size);
    char *buf = malloc((size_t)size + 1);
    if (!buf)
        return hx_fail(e, ENOMEM, "out of memory");
    int rc = read_full(r, buf, (size_t)size, e);
    if (rc == 0)
        rc = skip(r, (TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK, e);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    buf[size] = 0;
    *out = buf;
    return 0;
}

struct pax_over {
    bool path, link, size;
    char path_v[TAR_PATH_MAX + 1], link_v[TAR_PATH_MAX + 1];
    uint64_t size_v;
};

static int parse_pax(const char *p, size_t n, struct pax_over *o, struct hx_err *e)
{
    size_t off = 0;
    while (off < n) {
        size_t len = 0, i = off;
        while (i < n && p[i] >= '0' && p[i] <= '9' && len < TAR_PAX_MAX)
            len = len * 10 + (size_t)(p[i++] - '0');
        if (i >= n || p[i] != ' ' || len == 0 || len > n - off || p[off + len - 1] != '\n')
            return hx_fail(e, EINVAL, "tar: malformed pax record");
        const char *kv = p + i + 1, *end = p + off + len - 1;
        const char *eq = memchr(kv, '=', (size_t)(end - kv));
        if (!eq)
            return hx_fail(e, EINVAL, "tar: malformed pax record");
        size_t kl = (size_t)(eq - kv), vl = (size_t)(end - eq - 1);
        const char *val = eq + 1;
        if (kl == 4 && memcmp(kv, "path", 4) == 0) {
            if (vl > TAR_PATH_MAX || memchr(val, 0, vl))
                return hx_fail(e, ENAMETOOLONG, "tar: pax path too long");
            memcpy(o->path_v, val, vl);
            o->path_v[vl] = 0;
            o->path = true;
        } else if (kl == 8 && memcmp(kv, "linkpath", 8) == 0) {
            if (vl > TAR_PATH_MAX || memchr(val, 0, vl))
                return hx_fail(e, ENAMETOOLONG, "tar: pax linkpath too long");
            memcpy(o->link_v, val, vl);
            o->link_v[vl] = 0;
            o->link = true;
        } else if (kl == 4 && memcmp(kv, "size", 4) == 0) {
            uint64_t v = 0;
            if (vl == 0 || vl > 19)
                return hx_fail(e, EINVAL, "tar: bad pax size");
            for (size_t k = 0; k < vl; k++) {
                if (val[k] < '0' || val[k] > '9')
                    return hx_fail(e, EINVAL, "tar: bad pax size");
                v = v * 10 + (uint64_t)(val[k] - '0');
            }
            o->size_v = v;
            o->size = true;
        } /* other keys (mtime, uid, xattrs...) are ignored */
        off += len;
    }
    return 0;
}

int tar_next(struct tar_reader *r, struct tar_hdr *h, struct hx_err *e)
{
    int rc = skip(r, r->left + r->pad, e);
    if (rc < 0)
        return rc;
    r->left = r->pad = 0;
    struct pax_over *o = calloc(1, sizeof *o);
    if (!o)
        return hx_fail(e, ENOMEM, "out of memory");
    for (unsigned meta = 0;; meta++) {
        uint8_t blk[TAR_BLOCK];
        if ((rc = read_full(r, blk, sizeof blk, e)) < 0)
            break;
        if ((rc = tar_parse_header(blk, h, e)) <= 0)
            break; /* 0: end of archive (the second zero block is not required) */
        if (meta > 8) {
            rc = hx_fail(e, EINVAL, "tar: too many extended headers in a row");
            break;
        }
        if (h->type == 'x' || h->type == 'g' || h->type == 'L' || h->type == 'K') {
            char *data = NULL;
            if ((rc = read_meta(r, h->size, &data, e)) < 0)
                break;
            if (h->type == 'x')
                rc = parse_pax(data, (size_t)h->size, o, e);
            else if (h->type == 'L' || h->type == 'K') {
                size_t n = strnlen(data, (size_t)h->size);
                if (n > TAR_PATH_MAX)
                    rc = hx_fail(e, ENAMETOOLONG, "tar: long name too long");
                else if (h->type == 'L') {
                    memcpy(o->path_v, data, n + 1);
                    o->path = true;
                } else {
                    memcpy(o->link_v, data, n + 1);
                    o->link = true;
                }
            } /* 'g' global headers are ignored */
            free(data);
            if (rc < 0)
                break;
            continue;
        }
        if (o->path)
            memcpy(h->path, o->path_v, sizeof h->path);
        if (o->link)
            memcpy(h->link, o->link_v, sizeof h->link);
        if (o->size)
            h->size = o->size_v;
        if ((rc = tar_clean_path(h->path, e)) < 0)
            break;
        r->left = h->size;
        r->pad = (TAR_BLOCK - h->size % TAR_BLOCK) % TAR_BLOCK;
        rc = 1;
        break;
    }
    free(o);
    return rc;
}

ssize_t tar_read(struct tar_reader *r, void *buf, size_t n, struct hx_err *e)
{
    if (n > r->left)
        n = (size_t)r->left;
    if (n == 0)
        return 0;
    int rc = read_full(r, buf, n, e);
    if (rc < 0)
        return rc;
    r->left -= n;
    return (ssize_t)n;
}
