/* Loop devices for file-backed file systems: sandboxes' writable layers
 * (disk.c) and the volume pool and volumes (storage/pool.c). */
#pragma once
#include <stdbool.h>
#include "lib/err.h"

/* Attaches file to a free loop device with autoclear (the device goes with
 * its last opener and mount), read-only if asked. Returns an fd that holds
 * the device and its path in dev; a negative errno otherwise (ENOENT or
 * ENODEV: this host has no loop devices). */
int loop_attach(int file, bool readonly, char dev[32], struct hx_err *e);
