/* A snapshot booted as a root, shared: one read-only loop device and one
 * detached ext4 mount per snapshot, however many sandboxes boot from it
 * (docs/storage.md). Each sandbox gets its own detached clone of the mount
 * (OPEN_TREE_CLONE), which hutch-init idmaps and lays under its writable
 * layer: one superblock, so one page cache, and no loop device or ext4 mount
 * per boot. Refcounted; once the last sandbox lets go the share lingers
 * briefly (a sandbox booting right after reuses it) and is then released.
 * Runs as root in hutchd; every function may run on any thread. */
#pragma once
#include <stdint.h>
#include "lib/err.h"

struct storage_share;

/* Takes a reference on snapshot id's share, making it when there is none:
 * the image is opened read-only, shared-locked (F_OFD_SETLK, through the
 * file description the loop device keeps, as storage_image_attach does),
 * put on a read-only loop device and mounted (ext4, ro, noload, nodev,
 * noatime), detached. wait_ms: how long to wait for the lock. */
int storage_share_get(const char *id, int wait_ms, struct storage_share **out, struct hx_err *e);
/* Live restore: a reference on the share a previous hutchd made for
 * snapshot id on loop device dev, which the adopted sandboxes booting it
 * still use. Checked (storage_image_held: that device, that image,
 * read-only, shared-locked) and mounted again from that device, so the
 * kernel hands back the superblock their clones are on: one page cache as
 * before, and sandboxes booting it later join it. -ESTALE when the device
 * no longer holds the snapshot. */
int storage_share_adopt(const char *id, const char *dev, struct storage_share **out, struct hx_err *e);
/* A detached clone of the share's mount for one sandbox (O_CLOEXEC fd). */
int storage_share_tree(struct storage_share *s, struct hx_err *e);
/* "/dev/loopN" the share is on. */
const char *storage_share_dev(const struct storage_share *s);
/* Drops a reference; the last one starts the linger (now_ms: a monotonic
 * clock in ms). NULL is fine. */
void storage_share_put(struct storage_share *s, uint64_t now_ms);
/* Releases every share nobody holds that has been idle linger_ms or more
 * (0: every idle share). Returns how many idle shares remain. */
unsigned storage_share_reap(uint64_t linger_ms, uint64_t now_ms);
/* Releases id's share at once if nobody holds it (deleting the snapshot
 * needs its exclusive lock); -EBUSY when a sandbox still does. */
int storage_share_drop(const char *id);
