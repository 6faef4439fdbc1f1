/* Honest resource views inside the sandbox (views.c): lxcfs's per-sandbox
 * /proc files and a CPU affinity matching the CPU quota. */
#pragma once
#include <jansson.h>
#include "lib/err.h"

/* Validates HX_SETUP's optional "views" member (hostile input):
 * {"lxcfs": "/abs/dir", "cpus": [n, ...]}. Keeps what it needs. */
int views_parse(json_t *root, struct hx_err *e);
/* While the host's paths are still reachable: sets the CPU affinity and
 * clones lxcfs's files as detached read-only mounts. A missing or dead
 * lxcfs is not an error: the sandbox keeps the kernel's views. */
int views_prepare(struct hx_err *e);
/* After /proc is mounted: puts the clones over /proc/NAME. */
int views_attach(struct hx_err *e);
