/* The per-install CA for TLS interception (issue 5): created at first start
 * in STATE/ca (key mode 0600, directory 0700), rotated with --rotate-ca.
 * Sandboxes trust its certificate; hutch-proxy gets the key over its
 * control channel to mint leaf certificates. */
#pragma once
#include <stdbool.h>
#include "lib/err.h"

/* Loads STATE/ca/ca.{key,crt}, or creates them (always when rotate). */
int ca_init(const char *state_dir, bool rotate, struct hx_err *e);
/* PEM texts, NULL before a successful ca_init. */
const char *ca_cert_pem(void);
const char *ca_key_pem(void);
