/* A revision's files on the host before they become its image: copied out
 * of a running sandbox (through /proc/PID/root, every step resolved inside
 * the sandbox's root and never following its symlinks) or written from an
 * asset map. Blocking: for libuv's worker threads. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "lib/err.h"

struct app_stage_limits {
    uint64_t max_bytes;     /* file contents in all */
    uint32_t max_files;     /* entries of any kind */
};

/* Copies the directory path (absolute inside the sandbox) under root_fd
 * (an O_PATH fd of /proc/PID/root) into dst (an existing empty directory).
 * Regular files, directories and symlinks (as links) only; set-id bits
 * dropped; owner 1000:1000; other file systems under path (e.g. /proc) are
 * skipped. -EFBIG / -EMFILE past the limits, -ENOENT / -ENOTDIR for path. */
int app_stage_copy(int root_fd, const char *path, const char *dst, const struct app_stage_limits *lim,
                   uint64_t *bytes_out, struct hx_err *e);
/* Writes an asset map (checked with app_assets_check) under dst. */
int app_stage_assets(json_t *assets, const char *dst, const struct app_stage_limits *lim, struct hx_err *e);
/* Whether dst/rel is a regular file (lexically inside dst, no symlinks). */
bool app_stage_has_file(const char *dst, const char *rel);
/* Reads at most cap - 1 bytes of dst/rel into buf (NUL-terminated); -errno. */
int app_stage_read(const char *dst, const char *rel, char *buf, size_t cap);
/* rm -rf dst (no symlink followed). */
void app_stage_remove(const char *dst);
