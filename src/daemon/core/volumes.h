/* Volumes and snapshots in the core: the REST API (rest_volumes.c) and what
 * a sandbox does with them (sb_volumes.c): the create config's volumes and
 * root, attaching their images, the setup message, release at teardown. */
#pragma once
#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>
#include "lib/err.h"

struct http_conn;
struct http_request;
struct sandbox;

/* routes.c: answers /api/v2/volumes(/...) and /api/v2/snapshots(/...); false when
 * the path is neither (then routes.c carries on). */
bool rest_volumes_route(struct http_conn *c, const struct http_request *req, const char *org);

/* True while a REST job (create, snapshot, delete) works on id. */
bool rest_volumes_busy(const char *id);

/* One sandbox's volumes and root (opaque; owned by the sandbox). */
struct sb_storage;

/* The create config's "volumes" ([{volume, path}] as the SDK sends it, or
 * {path: volume}) and "root" ({volume} or a string). *out stays NULL when
 * neither is given. On failure fills e, and status and code for the client. */
int sb_storage_parse(json_t *conf, const char *org, struct sb_storage **out, int *status, const char **code,
                     struct hx_err *e);
/* Worker thread (launch): attaches every image to a loop device. */
int sb_storage_attach(struct sb_storage *st, struct hx_err *e);
/* A snapshot root: this sandbox's clone of the snapshot's shared mount,
 * handed to hutch-init at launch; -1 otherwise (NULL is fine). */
int sb_storage_root_tree(const struct sb_storage *st);
/* Adds "volumes" and "root" to the HX_SETUP message. */
void sb_storage_setup(const struct sb_storage *st, json_t *setup);
/* hutch-init mounted everything: the mounts hold the loop devices now. */
void sb_storage_mounted(struct sb_storage *st);
/* Teardown: records sizes, lets go of the images. NULL is fine. */
void sb_storage_free(struct sb_storage *st);
/* Whether a live sandbox (starting or running) uses id; its id in holder. */
bool sb_storage_in_use(const char *id, char holder[32]);

/* Live restore (core/restore.c, docs/restore.md): which images the sandbox
 * holds on which loop devices ({"volumes": [{id, path, dev}], "root": {id,
 * kind, dev} | null}; new reference; NULL when it has none), kept in its
 * row; and, for a sandbox a previous hutchd left running, the same taken
 * back: each device checked to still hold its image with the attach's lock
 * (storage_image_held) and to be mounted in the mount namespace of the
 * sandbox's PID 1 (init_pid, checked by the caller), a snapshot root's share mounted again from its
 * device (storage_share_adopt). *out stays NULL when saved is null. */
json_t *sb_storage_saved(const struct sb_storage *st);
int sb_storage_adopt(json_t *saved, pid_t init_pid, struct sb_storage **out, struct hx_err *e);
/* An adoption that did not happen: lets go without recording sizes. */
void sb_storage_forget(struct sb_storage *st);
