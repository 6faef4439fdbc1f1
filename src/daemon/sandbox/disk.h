/* The writable layer of a sandbox on disk: a sparse ext4 image of --disk
 * MiB on a loop device, so disk use has its own limit (ENOSPC) and does not
 * count toward the sandbox's memory; and the space promise that keeps a
 * sandbox filling its layer from filling the host's file system. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "lib/err.h"

/* One sandbox's writable layer, owned by its sandbox. */
struct disk_layer {
    int dev_fd;            /* holds the loop device until hutch-init mounted it; -1 */
    int file_fd;           /* the (unlinked) image, kept to read its allocated size; -1 */
    char dev[32];          /* "/dev/loopN" */
    bool on_loop;          /* the layer is that ext4 image (else a tmpfs inside the sandbox) */
    uint32_t promised_mb;  /* space promised to it in the budget; 0 once released */
};

/* Creates DIR/ID.disk (sparse, ext4), attaches it to a free loop device with
 * autoclear and unlinks the file: the device, and the space it holds, go
 * when the last mount and fd of it close. Fills l->dev_fd (keep it until
 * hutch-init has mounted it), l->file_fd and l->dev. Runs on a worker
 * thread: no shared state. A code of ENOENT, ENODEV or ENXIO means this host
 * has no loop devices or no mkfs.ext4 (a tmpfs layer is the fallback);
 * anything else is this sandbox's failure. */
int disk_prepare(const char *dir, const char *id, uint32_t disk_mb, struct disk_layer *l, struct hx_err *e);

/* Layers made ahead (at most 2, nameless, synced): disk_prepare takes one
 * when its (dir, size) is the template's, so the loop device's set-up finds
 * nothing to write back. disk_stash_wanted: whether the stash for (dir,
 * disk_mb) has room (false until the template exists). disk_stash_fill:
 * adds one, on a worker thread (it writes and syncs). */
bool disk_stash_wanted(const char *dir, uint32_t disk_mb);
int disk_stash_fill(const char *dir, uint32_t disk_mb, struct hx_err *e);

/* Once the layer is mounted: drops the image file's clean page cache. What
 * mkfs wrote and the mount read sits twice in memory (the image file's pages
 * and the loop device's, which the sandbox's ext4 uses); the file's copy is
 * never read again while the device's is cached (~300 KiB per idle sandbox;
 * issue 15). Dirty pages are written back first, never lost. */
void disk_drop_file_cache(const struct disk_layer *l);

/* Closes whatever l still holds. */
void disk_layer_close(struct disk_layer *l);

/* Space actually taken by an image so far, MiB rounded up (0 for fd < 0). */
uint64_t disk_allocated_mb(int file_fd);

/* Free space for unprivileged writers on the file system of dir, and its size. */
int disk_fs_space(const char *dir, uint64_t *avail_mb, uint64_t *total_mb, struct hx_err *e);

/* What hutchd keeps free for itself (its database, logs) and the host when
 * no --disk-reserve is given: 5 % of the file system, within 64 MiB..4 GiB. */
uint64_t disk_default_reserve_mb(uint64_t total_mb);

/* The promise: every layer may grow to its full size. A new layer of want_mb
 * is made only if it, and what the live layers may still grow by
 * (outstanding_mb), fit in avail_mb less reserve_mb. Fails with ENOSPC and a
 * message a person can act on. Pure: unit-tested. */
int disk_budget_check(uint64_t avail_mb, uint64_t reserve_mb, uint64_t outstanding_mb, uint32_t want_mb,
                      const char *dir, struct hx_err *e);
