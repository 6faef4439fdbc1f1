/* A certificate authority hutchd keeps in its state directory, and the leaf
 * certificates it mints: one shape for the interception CA that sandboxes
 * trust (net/ca.c) and the ingress CA that users trust (ingress/ingress_ca.c),
 * each with its own key. P-256, SHA-256, ten years for a CA. */
#pragma once
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include "lib/err.h"

struct pki_ca {
    char *cert_pem, *key_pem; /* key_pem is scrubbed when freed */
    X509 *x;
    EVP_PKEY *k;
};

/* Loads DIR/ca.crt and DIR/ca.key, or makes a new CA (always when rotate, and
 * when the pair does not parse, does not match or has expired) and writes it:
 * each file beside, then renamed, so a crash never leaves half a key; the key
 * 0600, the certificate 0644, DIR made with dir_mode. label names it in log
 * lines ("interception" -> "the interception CA"), cn_name in its subject
 * ("hutch <cn_name> CA <date>"). On success *ca is filled (any old content
 * freed first). */
int pki_ca_load(const char *dir, mode_t dir_mode, const char *label, const char *cn_name, bool rotate,
                struct pki_ca *ca, struct hx_err *e);
void pki_ca_free(struct pki_ca *ca);

/* A fresh leaf (P-256, days long, serverAuth) signed by ca for these names:
 * entries that parse as IP addresses become IP SANs, the rest DNS SANs; the
 * first is the subject's CN. New strings (the key's to be scrubbed). */
int pki_leaf(const struct pki_ca *ca, const char *const *names, size_t n, int days, char **cert_pem,
             char **key_pem, struct hx_err *e);
