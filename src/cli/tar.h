/* Tar streams for 'hutch cp -', on libarchive: a reader that treats its input as
 * hostile (tar formats only: ustar, pax, GNU; no compression; no absolute or '..'
 * paths come out) and a writer of pax-restricted archives (plain ustar unless a
 * path, link or size needs a pax record). Both stream: memory stays bounded
 * whatever the archive's size. Regular files, directories and symlinks are what
 * 'hutch cp' copies; other entry types are reported for the caller to skip. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/err.h"

#define TAR_PATH_MAX 4096          /* longest path or link target accepted or written */

/* The typeflags of ustar: what 'hutch cp' handles, and what the reader reports
 * for the rest ('1' hard link, '3' char device, '4' block device, '6' fifo, '?'). */
enum tar_type { TAR_FILE = '0', TAR_DIR = '5', TAR_SYMLINK = '2' };

struct tar_hdr {
    char type;                     /* enum tar_type, or another typeflag the caller skips */
    char path[TAR_PATH_MAX + 1];   /* reader: normalised, relative, "" for the archive root ("./") */
    char link[TAR_PATH_MAX + 1];   /* symlink target, as stored */
    uint32_t mode;                 /* permission bits (07777) */
    uint64_t size;                 /* bytes of data (files) */
    int64_t mtime;                 /* seconds since the epoch */
};

/* ---- writer: an archive on an fd ---- */
struct tar_writer;
int tar_writer_open(struct tar_writer **w, int fd, struct hx_err *e);
/* The header of the next entry (directories get their trailing '/'). */
int tar_write_header(struct tar_writer *w, const struct tar_hdr *h, struct hx_err *e);
/* Data of the current file entry: at most the size its header declared is kept. */
int tar_write_data(struct tar_writer *w, const void *p, size_t n, struct hx_err *e);
/* Ends the archive (its end-of-archive blocks) and frees w. */
int tar_writer_close(struct tar_writer *w, struct hx_err *e);
/* Frees w without ending the archive (after an error); NULL is fine. */
void tar_writer_free(struct tar_writer *w);

/* ---- reader: pulls from an fd ---- */
struct tar_reader;
int tar_reader_open(struct tar_reader **r, int fd, struct hx_err *e);
/* Next entry: 1 (h filled), 0 at the end of the archive, negative on error.
 * Unread data of the previous entry is skipped. */
int tar_next(struct tar_reader *r, struct tar_hdr *h, struct hx_err *e);
/* Up to n bytes of the current entry's data; 0 when it is all read. */
ssize_t tar_read(struct tar_reader *r, void *buf, size_t n, struct hx_err *e);
void tar_reader_free(struct tar_reader *r);

/* "./a//b/" → "a/b"; "." → ""; fails on absolute paths, '..' components,
 * over-long input. In place. What keeps every entry beneath the destination:
 * libarchive reads archives, it does not judge their paths. */
int tar_clean_path(char *path, struct hx_err *e);
