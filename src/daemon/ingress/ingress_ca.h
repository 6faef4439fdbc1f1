/* The per-install ingress CA: the root that browsers, curl and Node trust
 * for exposed URLs. A different key from the interception CA (net/ca.c) that
 * sandboxes trust: trusting one never means trusting the other. Created at
 * first start in STATE/ingress-ca (ca.crt 0644 for users to trust, ca.key
 * 0600); leaf certificates are minted from it at each ingress start. */
#pragma once
#include <stddef.h>
#include "lib/err.h"

int ingress_ca_init(const char *state_dir, struct hx_err *e);
const char *ingress_ca_cert_pem(void);
/* STATE/ingress-ca/ca.crt */
const char *ingress_ca_path(void);
/* A fresh leaf (P-256, 90 days, serverAuth) for these names: entries that
 * parse as IP addresses become IP SANs, the rest DNS SANs. New strings. */
int ingress_ca_leaf(const char *const *names, size_t n, char **cert_pem, char **key_pem, struct hx_err *e);
