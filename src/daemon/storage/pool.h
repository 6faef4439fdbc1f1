/* The storage pool: an XFS file system (reflink) in one preallocated image,
 * STATE/storage/pool.img, holding every volume and snapshot as a sparse ext4
 * image (docs/storage.md). Mounted detached (fsmount, never attached to any
 * mount tree), so nothing of it is visible on the host and it goes away with
 * hutchd and the last volume in use. Runs as root in hutchd; the functions
 * marked "any thread" may run on libuv's worker threads. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "lib/err.h"

/* Opens the pool, creating it (fallocate of size_bytes, mkfs.xfs) when it
 * does not exist and create is set; -ENOENT when it does not and create is
 * not. Idempotent (later calls return 0 at once). A previous hutchd's pool
 * whose loop device is still there (sandboxes left running with volumes:
 * live restore) is mounted again through that device (the same superblock);
 * else waits up to 10 s for it to let go of the image (kill -9, then a
 * restart). Any thread. */
int storage_pool_open(const char *state_dir, uint64_t size_bytes, bool create, struct hx_err *e);
bool storage_pool_is_open(void);
/* Size of the pool's file system and what it keeps for its own metadata. */
void storage_pool_space(uint64_t *total_bytes, uint64_t *reserve_bytes);

/* A new volume image of bytes: sparse, ext4 with a journal (a volume must
 * survive a crash), root directory owned by 1000:1000 (app). populate_dir:
 * copy that tree into it (a bootable volume from an image), else empty.
 * -ENOSPC when the tree does not fit. Any thread. */
int storage_image_create(const char *id, uint64_t bytes, const char *populate_dir, struct hx_err *e);
/* A sandbox that is stopping lets go of its loop device within milliseconds
 * of its init's exit: a worker thread waits this long before refusing. The
 * event loop never waits (wait_ms 0) and retries on a timer instead. */
#define STORAGE_RELEASE_WAIT_MS 5000
/* dst = a reflink copy of src (shares every block), grown to grow_to bytes
 * when larger. src must not be attached read-write: waits up to wait_ms for
 * a holder that is going away, -EBUSY then. Any thread. */
int storage_image_clone(const char *src, const char *dst, uint64_t grow_to, int wait_ms, struct hx_err *e);
/* Removes an image; -EBUSY while a loop device still holds it after
 * wait_ms. Any thread. */
int storage_image_remove(const char *id, int wait_ms, struct hx_err *e);
/* Allocated bytes only this image holds, and all its allocated bytes
 * (counting blocks shared with snapshots). 0 when unknown. Any thread. */
void storage_image_sizes(const char *id, uint64_t *exclusive, uint64_t *flattened);

/* An image on a loop device, for one sandbox. */
struct storage_attach {
    int file_fd;   /* the image, holding the attach lock; -1 */
    int dev_fd;    /* holds the loop device until hutch-init mounted it; -1 */
    char dev[32];  /* "/dev/loopN" */
};
#define STORAGE_ATTACH_INIT {-1, -1, ""}
/* Attaches the image (autoclear: the device goes with its last mount).
 * Read-write takes the image's exclusive lock, read-only a shared one; the
 * lock lives as long as the loop device, so a volume is never mounted twice
 * even across a crash of hutchd. Waits up to wait_ms for a previous holder
 * that is going away; -EBUSY then. Any thread. */
int storage_image_attach(const char *id, bool readonly, int wait_ms, struct storage_attach *a, struct hx_err *e);
void storage_attach_close(struct storage_attach *a);
/* Live restore: whether loop device dev (as a previous hutchd recorded it)
 * still holds image id as an attach made it: bound to that very file
 * (LOOP_GET_STATUS64), read-only or not, and the attach's lock (exclusive,
 * or shared when read-only) still held through it. Returns an fd holding
 * the device (while it is open, the device is neither cleared nor bound to
 * another file), or a negative errno: -ESTALE when it no longer holds it.
 * storage_pool_open likewise mounts the previous pool's device again when
 * one is left. Any thread. */
int storage_image_held(const char *id, const char *dev, bool readonly, struct hx_err *e);
