/* hutch's interception CA (see ca.h): a pki CA in STATE/ca, 0700. */
#include "daemon/net/ca.h"
#include <stdio.h>
#include "daemon/pki.h"

static struct pki_ca ca;

const char *ca_cert_pem(void) { return ca.cert_pem; }
const char *ca_key_pem(void) { return ca.key_pem; }

int ca_init(const char *state_dir, bool rotate, struct hx_err *e)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/ca", state_dir);
    return pki_ca_load(dir, 0700, "interception", "sandbox interception", rotate, &ca, e);
}
