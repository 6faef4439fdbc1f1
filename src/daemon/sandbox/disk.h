/* The writable layer of a sandbox on disk: a sparse ext4 image of --disk
 * MiB on a loop device, so disk use has its own limit (ENOSPC) and does not
 * count toward the sandbox's memory. */
#pragma once
#include <stdint.h>
#include "lib/err.h"

/* Creates STATE/sandboxes/ID.disk (sparse, ext4), attaches it to a free loop
 * device with autoclear and unlinks the file: the device, and the space it
 * holds, go when the last mount and fd of it close. Returns an fd holding
 * the device (keep it until hutch-init has mounted it) and its path in dev.
 * Runs on a worker thread: no shared state. */
int disk_prepare(const char *state_dir, const char *id, uint32_t disk_mb, char dev[32], struct hx_err *e);
