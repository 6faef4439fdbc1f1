/* The ingress CA (see ingress_ca.h): a pki CA in STATE/ingress-ca, 0755 (its
 * certificate is for users to trust); never the interception CA's key. */
#include "daemon/ingress/ingress_ca.h"
#include <errno.h>
#include <stdio.h>
#include "daemon/pki.h"

#define LEAF_DAYS 90

static struct pki_ca ca;
static char path_buf[4300];

const char *ingress_ca_cert_pem(void) { return ca.cert_pem; }
const char *ingress_ca_path(void) { return path_buf; }

int ingress_ca_init(const char *state_dir, struct hx_err *e)
{
    if (ca.x)
        return 0;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/ingress-ca", state_dir);
    snprintf(path_buf, sizeof path_buf, "%s/ca.crt", dir);
    return pki_ca_load(dir, 0755, "ingress", "ingress", false, &ca, e);
}

int ingress_ca_leaf(const char *const *names, size_t n, char **c_out, char **k_out, struct hx_err *e)
{
    if (!ca.x)
        return hx_fail(e, EINVAL, "no ingress CA");
    return pki_leaf(&ca, names, n, LEAF_DAYS, c_out, k_out, e);
}
