/* Creating and loading the ingress CA, minting its leaves (see ingress_ca.h).
 * The shape of net/ca.c; never its key. */
#include "daemon/ingress/ingress_ca.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CA_DAYS 3650
#define LEAF_DAYS 90

static char *cert_pem, path_buf[4300];
static X509 *ca_x;
static EVP_PKEY *ca_k;

const char *ingress_ca_cert_pem(void) { return cert_pem; }
const char *ingress_ca_path(void) { return path_buf; }

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

static int add_ext(X509 *x, X509 *issuer, int nid, const char *v)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, v);
    int ok = ex && X509_add_ext(x, ex, -1) == 1;
    X509_EXTENSION_free(ex);
    return ok ? 0 : -1;
}

static bool set_serial(X509 *x)
{
    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof serial) != 1)
        return false;
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    bool ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    return ok;
}

/* signs x with signer, then PEM texts of x and its key k */
static int sign_pems(X509 *x, EVP_PKEY *k, EVP_PKEY *signer, char **c_out, char **k_out)
{
    BIO *bc = BIO_new(BIO_s_mem()), *bk = BIO_new(BIO_s_mem());
    int r = -1;
    if (bc && bk && X509_sign(x, signer, EVP_sha256()) > 0 && PEM_write_bio_X509(bc, x) == 1 &&
        PEM_write_bio_PrivateKey(bk, k, NULL, NULL, 0, NULL, NULL) == 1) {
        *c_out = bio_text(bc);
        *k_out = bio_text(bk);
        r = *c_out && *k_out ? 0 : -1;
    }
    BIO_free(bc);
    bio_free_scrub(bk);
    return r;
}

static int generate(char **c_out, char **k_out, struct hx_err *e)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    char cn[128];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(cn, sizeof cn, "hutch ingress CA %04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    X509_NAME *nm = x ? X509_get_subject_name(x) : NULL;
    bool ok = k && x && set_serial(x) && X509_set_version(x, 2) == 1 &&
              X509_gmtime_adj(X509_getm_notBefore(x), -86400) &&
              X509_gmtime_adj(X509_getm_notAfter(x), CA_DAYS * 86400L) &&
              X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_ASC, (const unsigned char *)"hutch", -1, -1, 0) == 1 &&
              X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) == 1 &&
              X509_set_issuer_name(x, nm) == 1 && X509_set_pubkey(x, k) == 1 &&
              add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") == 0 &&
              add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") == 0 &&
              add_ext(x, x, NID_subject_key_identifier, "hash") == 0 &&
              add_ext(x, x, NID_authority_key_identifier, "keyid:always") == 0 && sign_pems(x, k, k, c_out, k_out) == 0;
    EVP_PKEY_free(k);
    X509_free(x);
    ERR_clear_error();
    return ok ? 0 : hx_fail(e, EIO, "could not generate the ingress CA");
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
        int err = errno;
        close(fd);
        unlink(tmp);
        return hx_fail(e, err, "write %s: %s", tmp, strerror(err));
    }
    close(fd);
    if (rename(tmp, path) < 0)
        return hx_fail(e, errno, "rename %s: %m", tmp);
    return 0;
}

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

int ingress_ca_init(const char *state_dir, struct hx_err *e)
{
    if (ca_x)
        return 0;
    char dir[4200], kp[4300];
    snprintf(dir, sizeof dir, "%s/ingress-ca", state_dir);
    snprintf(kp, sizeof kp, "%s/ca.key", dir);
    snprintf(path_buf, sizeof path_buf, "%s/ca.crt", dir);
    /* 0755: ca.crt is public (users point their clients at it); the key is 0600 */
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %m", dir);
    char *c = read_small(path_buf), *k = read_small(kp);
    X509 *x = NULL;
    EVP_PKEY *pk = NULL;
    if (c && k && !parse_pair(c, k, &x, &pk)) {
        fprintf(stderr, "hutchd: the ingress CA in %s is unusable or expired; making a new one\n", dir);
        free(c);
        explicit_bzero(k, strlen(k));
        free(k);
        c = k = NULL;
    }
    if (!c || !k) {
        free(c);
        free(k);
        c = k = NULL;
        int r;
        if ((r = generate(&c, &k, e)) < 0)
            return r;
        if ((r = write_file(kp, k, 0600, e)) < 0 || (r = write_file(path_buf, c, 0644, e)) < 0 ||
            !parse_pair(c, k, &x, &pk)) {
            explicit_bzero(k, strlen(k));
            free(k);
            free(c);
            return r < 0 ? r : hx_fail(e, EIO, "the new ingress CA does not parse");
        }
        printf("hutchd: created the ingress CA in %s\n", dir);
    }
    chmod(kp, 0600);
    explicit_bzero(k, strlen(k));
    free(k);
    cert_pem = c;
    ca_x = x;
    ca_k = pk;
    return 0;
}

int ingress_ca_leaf(const char *const *names, size_t n, char **c_out, char **k_out, struct hx_err *e)
{
    if (!ca_x)
        return hx_fail(e, EINVAL, "no ingress CA");
    char san[2048] = "";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char a[16];
        bool ip = inet_pton(AF_INET, names[i], a) == 1 || inet_pton(AF_INET6, names[i], a) == 1;
        int w = snprintf(san + o, sizeof san - o, "%s%s:%s", o ? "," : "", ip ? "IP" : "DNS", names[i]);
        if (w < 0 || (size_t)w >= sizeof san - o)
            return hx_fail(e, E2BIG, "too many names for the ingress certificate");
        o += (size_t)w;
    }
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *nm = x ? X509_get_subject_name(x) : NULL;
    bool ok = k && x && set_serial(x) && X509_set_version(x, 2) == 1 &&
              X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
              X509_gmtime_adj(X509_getm_notAfter(x), LEAF_DAYS * 86400L) &&
              X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_ASC, (const unsigned char *)"hutch", -1, -1, 0) == 1 &&
              X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)names[0], -1, -1, 0) == 1 &&
              X509_set_issuer_name(x, X509_get_subject_name(ca_x)) == 1 && X509_set_pubkey(x, k) == 1 &&
              add_ext(x, ca_x, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
              add_ext(x, ca_x, NID_key_usage, "critical,digitalSignature") == 0 &&
              add_ext(x, ca_x, NID_ext_key_usage, "serverAuth") == 0 &&
              add_ext(x, ca_x, NID_subject_alt_name, san) == 0 &&
              add_ext(x, ca_x, NID_authority_key_identifier, "keyid:always") == 0 &&
              sign_pems(x, k, ca_k, c_out, k_out) == 0;
    EVP_PKEY_free(k);
    X509_free(x);
    ERR_clear_error();
    return ok ? 0 : hx_fail(e, EIO, "could not mint the ingress certificate");
}
