/* A small ustar (POSIX.1-1988 + pax path/linkpath/size records) reader and writer for
 * 'hutch cp -': regular files, directories and symlinks only; the reader treats its
 * input as hostile (checksums, bounded lengths, no absolute or '..' paths). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/err.h"

#define TAR_BLOCK 512
#define TAR_PATH_MAX 4096          /* longest path or link target accepted or written */
#define TAR_PAX_MAX (64u * 1024u)  /* longest pax / GNU long-name record we read */

enum tar_type { TAR_FILE = '0', TAR_DIR = '5', TAR_SYMLINK = '2' };

struct tar_hdr {
    char type;                     /* enum tar_type, or another typeflag the reader skips */
    char path[TAR_PATH_MAX + 1];   /* reader: normalised, relative, "" for the archive root ("./") */
    char link[TAR_PATH_MAX + 1];   /* symlink target, as stored */
    uint32_t mode;                 /* permission bits (07777) */
    uint64_t size;                 /* bytes of data (files) */
    int64_t mtime;                 /* seconds since the epoch */
};

/* ---- writer: blocks go to a callback ---- */
typedef int (*tar_out_fn)(void *ud, const void *p, size_t n, struct hx_err *e);
/* Header block(s) for h (a pax record first when path, link or size do not fit ustar). */
int tar_write_header(tar_out_fn out, void *ud, const struct tar_hdr *h, struct hx_err *e);
/* Zeros up to the next 512-byte boundary after size bytes of data. */
int tar_write_pad(tar_out_fn out, void *ud, uint64_t size, struct hx_err *e);
/* The two zero blocks that end an archive. */
int tar_write_end(tar_out_fn out, void *ud, struct hx_err *e);

/* ---- reader: pulls from an fd ---- */
struct tar_reader {
    int fd;
    uint64_t left;                 /* data bytes of the current entry not yet read */
    uint64_t pad;                  /* padding after them */
    uint64_t offset;               /* bytes consumed, for messages */
};
void tar_reader_init(struct tar_reader *r, int fd);
/* Next entry: 1 (h filled), 0 at the end of the archive, negative on error.
 * Unread data of the previous entry is skipped. */
int tar_next(struct tar_reader *r, struct tar_hdr *h, struct hx_err *e);
/* Up to n bytes of the current entry's data; 0 when it is all read. */
ssize_t tar_read(struct tar_reader *r, void *buf, size_t n, struct hx_err *e);

/* Parses one header block (exposed for tests): 1 ok, 0 a zero block, negative on error.
 * Paths are not normalised here. */
int tar_parse_header(const uint8_t blk[TAR_BLOCK], struct tar_hdr *h, struct hx_err *e);
/* "./a//b/" → "a/b"; "." → ""; fails on absolute paths, '..' components, NUL-free
 * but over-long input. In place. */
int tar_clean_path(char *path, struct hx_err *e);
