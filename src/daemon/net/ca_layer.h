/* secrets: the CA bundle sandboxes see, prepared once instead of per create. */
#pragma once
#include "lib/err.h"

/* The image's /etc/ssl/certs/ca-certificates.crt with ca_pem appended (the
 * bytes hutch-init used to write into every writable layer), as a tree of
 * its own under STATE/ca-layers/<content hash>/ whose etc, etc/ssl and
 * etc/ssl/certs copy the image's owners, modes and times. hutch-init lays
 * it read-only between the image and the writable layer. Written once per
 * (image bundle, CA); one stat of the image's bundle per call after that.
 * Returns the directory (valid until the next call), or NULL with *e
 * filled (then hutch-init copies the bundle as before). */
const char *ca_layer_get(const char *state_dir, const char *image_root, const char *ca_pem, struct hx_err *e);
