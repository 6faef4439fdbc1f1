/* Creating, loading and rotating hutch's interception CA (see ca.h). */
#include "daemon/net/ca.h"
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define CA_DAYS 3650

static char *cert_pem, *key_pem;

const char *ca_cert_pem(void) { return cert_pem; }
const char *ca_key_pem(void) { return key_pem; }

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

static int add_ext(X509 *x, int nid, const char *v)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, v);
    int ok = ex && X509_add_ext(x, ex, -1) == 1;
    X509_EXTENSION_free(ex);
    return ok ? 0 : -1;
}

static int generate(char **cert_out, char **key_out, struct hx_err *e)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIO *bc = BIO_new(BIO_s_mem()), *bk = BIO_new(BIO_s_mem());
    int r = -1;
    unsigned char serial[16];
    char cn[128];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(cn, sizeof cn, "hutch sandbox interception CA %04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday);
    if (!k || !x || !bc || !bk || RAND_bytes(serial, sizeof serial) != 1)
        goto out;
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
    int ok = bn && X509_set_version(x, 2) == 1 && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_NAME *nm = X509_get_subject_name(x);
    ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), -86400) && X509_gmtime_adj(X509_getm_notAfter(x), CA_DAYS * 86400L) &&
         X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_ASC, (const unsigned char *)"hutch", -1, -1, 0) == 1 &&
         X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) == 1 &&
         X509_set_issuer_name(x, nm) == 1 && X509_set_pubkey(x, k) == 1 &&
         add_ext(x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") == 0 &&
         add_ext(x, NID_key_usage, "critical,keyCertSign,cRLSign") == 0 &&
         add_ext(x, NID_subject_key_identifier, "hash") == 0 &&
         add_ext(x, NID_authority_key_identifier, "keyid:always") == 0 && X509_sign(x, k, EVP_sha256()) > 0 &&
         PEM_write_bio_X509(bc, x) == 1 && PEM_write_bio_PrivateKey(bk, k, NULL, NULL, 0, NULL, NULL) == 1;
    if (ok) {
        *cert_out = bio_text(bc);
        *key_out = bio_text(bk);
        r = *cert_out && *key_out ? 0 : -1;
    }
out:
    EVP_PKEY_free(k);
    X509_free(x);
    BIO_free(bc);
    if (bk) {
        char *p = NULL;
        long n = BIO_get_mem_data(bk, &p);
        if (n > 0 && p)
            explicit_bzero(p, (size_t)n);
        BIO_free(bk);
    }
    ERR_clear_error();
    return r < 0 ? hx_fail(e, EIO, "could not generate the interception CA") : 0;
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
    char tmp[4300];
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
        errno = err;
        return hx_fail(e, err, "write %s: %m", tmp);
    }
    close(fd);
    if (rename(tmp, path) < 0)
        return hx_fail(e, errno, "rename %s: %m", tmp);
    return 0;
}

int ca_init(const char *state_dir, bool rotate, struct hx_err *e)
{
    char dir[4200], kp[4300], cp[4300];
    snprintf(dir, sizeof dir, "%s/ca", state_dir);
    snprintf(kp, sizeof kp, "%s/ca.key", dir);
    snprintf(cp, sizeof cp, "%s/ca.crt", dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %m", dir);
    if (chmod(dir, 0700) < 0)
        return hx_fail(e, errno, "chmod %s: %m", dir);
    char *c = NULL, *k = NULL;
    if (!rotate) {
        c = read_small(cp);
        k = read_small(kp);
        if (c && k) { /* both must parse and match */
            BIO *b1 = BIO_new_mem_buf(c, -1), *b2 = BIO_new_mem_buf(k, -1);
            X509 *x = b1 ? PEM_read_bio_X509(b1, NULL, NULL, NULL) : NULL;
            EVP_PKEY *pk = b2 ? PEM_read_bio_PrivateKey(b2, NULL, NULL, NULL) : NULL;
            bool good = x && pk && X509_check_private_key(x, pk) == 1 && X509_cmp_current_time(X509_get0_notAfter(x)) > 0;
            X509_free(x);
            EVP_PKEY_free(pk);
            BIO_free(b1);
            BIO_free(b2);
            ERR_clear_error();
            if (!good) {
                fprintf(stderr, "hutchd: the interception CA in %s is unusable or expired; making a new one\n", dir);
                free(c);
                free(k);
                c = k = NULL;
            }
        }
    }
    if (!c || !k) {
        free(c);
        free(k);
        c = k = NULL;
        int r;
        if ((r = generate(&c, &k, e)) < 0)
            return r;
        if ((r = write_file(kp, k, 0600, e)) < 0 || (r = write_file(cp, c, 0644, e)) < 0) {
            explicit_bzero(k, strlen(k));
            free(k);
            free(c);
            return r;
        }
        printf("hutchd: %s interception CA in %s\n", rotate ? "rotated the" : "created the", dir);
    }
    chmod(kp, 0600);
    if (key_pem)
        explicit_bzero(key_pem, strlen(key_pem));
    free(key_pem);
    free(cert_pem);
    cert_pem = c;
    key_pem = k;
    return 0;
}
