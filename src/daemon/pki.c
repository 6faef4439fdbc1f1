/* hutchd's certificate authorities (see pki.h). */
#include "daemon/pki.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CA_DAYS 3650

static char *bio_text(BIO *b)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *out = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (out) {
        memcpy(out, p, (size_t)n);
        out[n] = 0;
    }
    return out;
}

static void bio_free_scrub(BIO *b)
{
    if (!b)
        return;
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    if (n > 0 && p)
        explicit_bzero(p, (size_t)n);
    BIO_free(b);
}

static void free_scrub(char *s)
{
    if (s)
        explicit_bzero(s, strlen(s));
    free(s);
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *v)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, v);
    int ok = ex && X509_add_ext(x, ex, -1) == 1;
    X509_EXTENSION_free(ex);
    return ok ? 0 : -1;
}

/* version 3, a random positive 128-bit serial, valid from before_s ago for days */
static bool set_basics(X509 *x, long before_s, long days)
{
    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof serial) != 1)
        return false;
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    bool ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) && X509_set_version(x, 2) == 1 &&
              X509_gmtime_adj(X509_getm_notBefore(x), -before_s) &&
              X509_gmtime_adj(X509_getm_notAfter(x), days * 86400L);
    BN_free(bn);
    return ok;
}

static bool set_name(X509_NAME *nm, const char *cn)
{
    return X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_ASC, (const unsigned char *)"hutch", -1, -1, 0) == 1 &&
           X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) == 1;
}

/* signs x with signer, then the PEM texts of x and of its key k */
static int sign_pems(X509 *x, EVP_PKEY *k, EVP_PKEY *signer, char **c_out, char **k_out)
{
    BIO *bc = BIO_new(BIO_s_mem()), *bk = BIO_new(BIO_s_mem());
    int r = -1;
    *c_out = *k_out = NULL;
    if (bc && bk && X509_sign(x, signer, EVP_sha256()) > 0 && PEM_write_bio_X509(bc, x) == 1 &&
        PEM_write_bio_PrivateKey(bk, k, NULL, NULL, 0, NULL, NULL) == 1) {
        *c_out = bio_text(bc);
        *k_out = bio_text(bk);
        r = *c_out && *k_out ? 0 : -1;
    }
    if (r < 0) {
        free(*c_out);
        free_scrub(*k_out);
        *c_out = *k_out = NULL;
    }
    BIO_free(bc);
    bio_free_scrub(bk);
    return r;
}

static int generate(const char *label, const char *cn_name, char **c_out, char **k_out, struct hx_err *e)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    char cn[128];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(cn, sizeof cn, "hutch %s CA %04d-%02d-%02d", cn_name, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    X509_NAME *nm = x ? X509_get_subject_name(x) : NULL;
    bool ok = k && x && set_basics(x, 86400, CA_DAYS) && set_name(nm, cn) && X509_set_issuer_name(x, nm) == 1 &&
              X509_set_pubkey(x, k) == 1 && add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") == 0 &&
              add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") == 0 &&
              add_ext(x, x, NID_subject_key_identifier, "hash") == 0 &&
              add_ext(x, x, NID_authority_key_identifier, "keyid:always") == 0 && sign_pems(x, k, k, c_out, k_out) == 0;
    EVP_PKEY_free(k);
    X509_free(x);
    ERR_clear_error();
    return ok ? 0 : hx_fail(e, EIO, "could not generate the %s CA", label);
}

static char *read_small(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return NULL;
    char *buf = calloc(1, 16384);
    ssize_t n = buf ? read(fd, buf, 16383) : -1;
    close(fd);
    if (n <= 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Written beside, then renamed: a crash never leaves half a key. */
static int write_file(const char *path, const char *text, mode_t mode, struct hx_err *e)
{
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return hx_fail(e, errno, "create %s: %m", tmp);
    size_t n = strlen(text);
    if (fchmod(fd, mode) < 0 || write(fd, text, n) != (ssize_t)n || fsync(fd) < 0) {
        int err = errno ? errno : EIO;
        close(fd);
        unlink(tmp);
        return hx_fail(e, err, "write %s: %s", tmp, strerror(err));
    }
    close(fd);
    if (rename(tmp, path) < 0)
        return hx_fail(e, errno, "rename %s: %m", tmp);
    return 0;
}

/* Both texts parse, the key is the certificate's and it has not expired. */
static bool parse_pair(const char *c, const char *k, X509 **xo, EVP_PKEY **ko)
{
    BIO *b1 = BIO_new_mem_buf(c, -1), *b2 = BIO_new_mem_buf(k, -1);
    X509 *x = b1 ? PEM_read_bio_X509(b1, NULL, NULL, NULL) : NULL;
    EVP_PKEY *pk = b2 ? PEM_read_bio_PrivateKey(b2, NULL, NULL, NULL) : NULL;
    bool good = x && pk && X509_check_private_key(x, pk) == 1 && X509_cmp_current_time(X509_get0_notAfter(x)) > 0;
    BIO_free(b1);
    BIO_free(b2);
    ERR_clear_error();
    if (!good) {
        X509_free(x);
        EVP_PKEY_free(pk);
        return false;
    }
    *xo = x;
    *ko = pk;
    return true;
}

int pki_ca_load(const char *dir, mode_t dir_mode, const char *label, const char *cn_name, bool rotate,
                struct pki_ca *ca, struct hx_err *e)
{
    char kp[4300], cp[4300];
    snprintf(kp, sizeof kp, "%s/ca.key", dir);
    snprintf(cp, sizeof cp, "%s/ca.crt", dir);
    if (mkdir(dir, dir_mode) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %m", dir);
    if (chmod(dir, dir_mode) < 0)
        return hx_fail(e, errno, "chmod %s: %m", dir);
    char *c = rotate ? NULL : read_small(cp), *k = rotate ? NULL : read_small(kp);
    X509 *x = NULL;
    EVP_PKEY *pk = NULL;
    if (c && k && !parse_pair(c, k, &x, &pk))
        fprintf(stderr, "hutchd: the %s CA in %s is unusable or expired; making a new one\n", label, dir);
    if (!x) {
        free(c);
        free_scrub(k);
        c = k = NULL;
        int r;
        if ((r = generate(label, cn_name, &c, &k, e)) < 0)
            return r;
        if ((r = write_file(kp, k, 0600, e)) < 0 || (r = write_file(cp, c, 0644, e)) < 0 ||
            !parse_pair(c, k, &x, &pk)) {
            free_scrub(k);
            free(c);
            return r < 0 ? r : hx_fail(e, EIO, "the new %s CA does not parse", label);
        }
        printf("hutchd: %s %s CA in %s\n", rotate ? "rotated the" : "created the", label, dir);
    }
    chmod(kp, 0600);
    pki_ca_free(ca);
    *ca = (struct pki_ca){.cert_pem = c, .key_pem = k, .x = x, .k = pk};
    return 0;
}

void pki_ca_free(struct pki_ca *ca)
{
    free(ca->cert_pem);
    free_scrub(ca->key_pem);
    X509_free(ca->x);
    EVP_PKEY_free(ca->k);
    *ca = (struct pki_ca){0};
}

int pki_leaf(const struct pki_ca *ca, const char *const *names, size_t n, int days, char **c_out, char **k_out,
             struct hx_err *e)
{
    if (!ca->x || n == 0)
        return hx_fail(e, EINVAL, "no CA or no names for a certificate");
    char san[2048] = "";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char a[16];
        bool ip = inet_pton(AF_INET, names[i], a) == 1 || inet_pton(AF_INET6, names[i], a) == 1;
        int w = snprintf(san + o, sizeof san - o, "%s%s:%s", o ? "," : "", ip ? "IP" : "DNS", names[i]);
        if (w < 0 || (size_t)w >= sizeof san - o)
            return hx_fail(e, E2BIG, "too many names for one certificate");
        o += (size_t)w;
    }
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *nm = x ? X509_get_subject_name(x) : NULL;
    bool ok = k && x && set_basics(x, 3600, days) && set_name(nm, names[0]) &&
              X509_set_issuer_name(x, X509_get_subject_name(ca->x)) == 1 && X509_set_pubkey(x, k) == 1 &&
              add_ext(x, ca->x, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
              add_ext(x, ca->x, NID_key_usage, "critical,digitalSignature") == 0 &&
              add_ext(x, ca->x, NID_ext_key_usage, "serverAuth") == 0 &&
              add_ext(x, ca->x, NID_subject_alt_name, san) == 0 &&
              add_ext(x, ca->x, NID_authority_key_identifier, "keyid:always") == 0 &&
              sign_pems(x, k, ca->k, c_out, k_out) == 0;
    EVP_PKEY_free(k);
    X509_free(x);
    ERR_clear_error();
    return ok ? 0 : hx_fail(e, EIO, "could not mint a certificate for %s", names[0]);
}
