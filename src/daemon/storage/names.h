/* Names and numbers of volumes and snapshots as clients send them: slugs
 * (the SDK's rules), capacities ("1GiB" or bytes), region names, ids; and
 * the pool's space promise. Pure functions over hostile input: unit-tested. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "lib/err.h"

/* The SDK's slug rule (types.d.ts, VolumeInit.slug): 2..32 characters of
 * [a-z0-9-], not starting or ending with '-', and not "--" at positions 3
 * and 4 (so "xn--" punycode-like prefixes cannot be used). Fills e with the
 * rule that failed. */
#define VOL_SLUG_MAX 32
int vol_slug_check(const char *s, struct hx_err *e);

/* Capacity as the SDK's VolumeInit.capacity: a JSON integer number of bytes
 * (here given as its decimal text), or a number with an optional decimal
 * fraction followed by one of GiB MiB KiB GB MB kB. The result is bytes,
 * rounded up to whole 4 KiB blocks (the file system's unit). Range checks
 * are the caller's. -EINVAL for bad syntax, -ERANGE for absurd values. */
int vol_parse_capacity(const char *s, uint64_t *bytes, struct hx_err *e);

/* Region names: [a-z0-9-]{1,32} (recorded, printed, used in ids' middle
 * part only when they are three letters). */
bool vol_region_valid(const char *s);

/* Ids: "vol_" or "snp_", the region's three letters (or the node's when the
 * region is not three letters), "_" and 20 characters of the sandbox id
 * alphabet: the shape of sandbox ids. */
#define VOL_ID_LEN 28
int vol_id_new(const char *prefix, const char *region, const char node[3], char out[32]);
bool vol_id_valid(const char *s); /* either prefix */

/* The pool promise: every volume may fill its whole capacity and every
 * snapshot keeps the blocks it had when taken (a volume rewriting shared
 * blocks allocates new ones), so the sum of volume capacities and snapshot
 * sizes (committed) plus the new object (want) must fit in the pool less
 * its reserve. Fails with ENOSPC and a message naming the numbers (MiB). */
int vol_budget_check(uint64_t pool_bytes, uint64_t reserve_bytes, uint64_t committed_bytes, uint64_t want_bytes,
                     const char *what, struct hx_err *e);
