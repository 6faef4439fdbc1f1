/* TLS interception engine of hutch-proxy (see mitm.h): contexts, the leaf
 * certificate cache and memory-BIO helpers. The CA key arrives from hutchd
 * over the control channel and lives only in this process's memory. */
#include "proxy/mitm.h"
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LEAF_CACHE_MAX 512          /* minted certificates kept (one per host name) */
#define LEAF_DAYS 7                 /* validity of a leaf; re-minted when it ages */
#define SYSTEM_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

struct leaf {
    struct leaf *next;
    char host[256];
    X509 *cert;
    time_t minted;
};

static SSL_CTX *srv_ctx, *up_ctx;
static EVP_PKEY *leaf_key, *ca_key;
static X509 *ca_cert;
static struct leaf *leaves;
static size_t n_leaves;

static EVP_PKEY *ec_key(void)
{
    return EVP_EC_gen("P-256");
}

static int on_alpn_select(SSL *s, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg)
{
    /* HTTP/1.1 only: we parse HTTP/1 heads. A client offering only h2 goes on without ALPN. */
    for (unsigned i = 0; i < inlen;) {
        unsigned l = in[i];
        if (i + 1 + l > inlen)
            break;
        if (l == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)l;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + l;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

int mitm_init(const char *upstream_ca)
{
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS | OPENSSL_INIT_LOAD_CONFIG,
                     NULL);
    srv_ctx = SSL_CTX_new(TLS_server_method());
    up_ctx = SSL_CTX_new(TLS_client_method());
    if (!srv_ctx || !up_ctx)
        return -1;
    SSL_CTX_set_min_proto_version(srv_ctx, TLS1_2_VERSION);
    SSL_CTX_set_min_proto_version(up_ctx, TLS1_2_VERSION);
    SSL_CTX_set_alpn_select_cb(srv_ctx, on_alpn_select, NULL);
    SSL_CTX_set_mode(srv_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_mode(up_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(up_ctx, SSL_VERIFY_PEER, NULL);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(up_ctx, alpn, sizeof alpn - 1);
    /* The trust store is read in full now: after the chroot there are no files. */
    X509_STORE *st = SSL_CTX_get_cert_store(up_ctx);
    const char *bundle = access(SYSTEM_BUNDLE, R_OK) == 0 ? SYSTEM_BUNDLE : X509_get_default_cert_file();
    if (X509_STORE_load_file(st, bundle) != 1)
        fprintf(stderr, "hutch-proxy: no system CA bundle at %s\n", bundle);
    ERR_clear_error();
    if (upstream_ca && X509_STORE_load_file(st, upstream_ca) != 1) {
        fprintf(stderr, "hutch-proxy: cannot load --upstream-ca %s\n", upstream_ca);
        return -1;
    }
    leaf_key = ec_key();
    if (!leaf_key)
        return -1;
    /* Warm-up: the algorithms a handshake and a minting fetch are loaded now, while files can still be read. */
    EVP_PKEY *tmp = ec_key();
    X509 *x = X509_new();
    if (x && tmp) {
        X509_set_pubkey(x, tmp);
        X509_sign(x, tmp, EVP_sha256());
    }
    X509_free(x);
    EVP_PKEY_free(tmp);
    ERR_clear_error();
    return 0;
}

int mitm_set_ca(const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len)
{
    BIO *b1 = BIO_new_mem_buf(cert_pem, (int)cert_len), *b2 = BIO_new_mem_buf(key_pem, (int)key_len);
    X509 *c = b1 ? PEM_read_bio_X509(b1, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k = b2 ? PEM_read_bio_PrivateKey(b2, NULL, NULL, NULL) : NULL;
    BIO_free(b1);
    BIO_free(b2);
    if (!c || !k || X509_check_private_key(c, k) != 1) {
        X509_free(c);
        EVP_PKEY_free(k);
        ERR_clear_error();
        return -1;
    }
    X509_free(ca_cert);
    EVP_PKEY_free(ca_key);
    ca_cert = c;
    ca_key = k;
    /* leaves of an older CA must not be served any more */
    while (leaves) {
        struct leaf *l = leaves;
        leaves = l->next;
        X509_free(l->cert);
        free(l);
    }
    n_leaves = 0;
    return 0;
}

bool mitm_ready(void)
{
    return ca_cert && ca_key && srv_ctx;
}

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (!ex)
        return -1;
    int r = X509_add_ext(cert, ex, -1);
    X509_EXTENSION_free(ex);
    return r == 1 ? 0 : -1;
}

/* A leaf for host: what Python's strict verification and every browser
 * library expect (SAN, SKI/AKI, EKU serverAuth, not a CA). */
static X509 *mint(const char *host)
{
    X509 *x = X509_new();
    if (!x)
        return NULL;
    unsigned char serial[16];
    char san[300];
    int ok = RAND_bytes(serial, sizeof serial) == 1;
    serial[0] &= 0x7f;
    BIGNUM *bn = ok ? BN_bin2bn(serial, sizeof serial, NULL) : NULL;
    ok = bn && X509_set_version(x, 2) == 1 && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), -3600) && X509_gmtime_adj(X509_getm_notAfter(x), LEAF_DAYS * 86400L);
    X509_NAME *nm = X509_get_subject_name(x);
    ok = ok && X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)host, -1, -1, 0) == 1;
    ok = ok && X509_set_issuer_name(x, X509_get_subject_name(ca_cert)) == 1 && X509_set_pubkey(x, leaf_key) == 1;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca_cert, x, NULL, NULL, 0);
    snprintf(san, sizeof san, "DNS:%s", host);
    ok = ok && add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
         add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature") == 0 &&
         add_ext(x, &ctx, NID_ext_key_usage, "serverAuth") == 0 && add_ext(x, &ctx, NID_subject_alt_name, san) == 0 &&
         add_ext(x, &ctx, NID_subject_key_identifier, "hash") == 0 &&
         add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always") == 0;
    ok = ok && X509_sign(x, ca_key, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(x);
        ERR_clear_error();
        return NULL;
    }
    return x;
}

static X509 *leaf_for(const char *host)
{
    time_t now = time(NULL);
    struct leaf **pp = &leaves, *l;
    for (; (l = *pp); pp = &l->next) {
        if (strcmp(l->host, host) == 0) {
            if (now - l->minted > (LEAF_DAYS - 1) * 86400L)
                break; /* aged: mint again below */
            *pp = l->next; /* most recently used first */
            l->next = leaves;
            leaves = l;
            return l->cert;
        }
    }
    if (l) {
        *pp = l->next;
        X509_free(l->cert);
        free(l);
        n_leaves--;
    }
    if (strlen(host) >= sizeof l->host)
        return NULL;
    X509 *x = mint(host);
    if (!x)
        return NULL;
    l = calloc(1, sizeof *l);
    if (!l) {
        X509_free(x);
        return NULL;
    }
    snprintf(l->host, sizeof l->host, "%s", host);
    l->cert = x;
    l->minted = now;
    l->next = leaves;
    leaves = l;
    if (++n_leaves > LEAF_CACHE_MAX) { /* drop the least recently used */
        struct leaf **q = &leaves;
        while ((*q)->next)
            q = &(*q)->next;
        X509_free((*q)->cert);
        free(*q);
        *q = NULL;
        n_leaves--;
    }
    return x;
}

static SSL *with_bios(SSL *s)
{
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    if (!s || !r || !w) {
        BIO_free(r);
        BIO_free(w);
        SSL_free(s);
        return NULL;
    }
    BIO_set_mem_eof_return(r, -1);
    SSL_set_bio(s, r, w);
    return s;
}

SSL *mitm_ssl_for_client(const char *host)
{
    if (!mitm_ready())
        return NULL;
    X509 *leaf = leaf_for(host);
    if (!leaf)
        return NULL;
    SSL *s = SSL_new(srv_ctx);
    if (!s)
        return NULL;
    if (SSL_use_certificate(s, leaf) != 1 || SSL_use_PrivateKey(s, leaf_key) != 1 ||
        SSL_add1_chain_cert(s, ca_cert) != 1) {
        SSL_free(s);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(s);
    return with_bios(s);
}

SSL *mitm_ssl_for_upstream(const char *host)
{
    SSL *s = SSL_new(up_ctx);
    if (!s)
        return NULL;
    if (SSL_set_tlsext_host_name(s, host) != 1 || SSL_set1_host(s, host) != 1) {
        SSL_free(s);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_connect_state(s);
    return with_bios(s);
}

int tls_feed(SSL *s, const void *p, size_t n)
{
    BIO *r = SSL_get_rbio(s);
    while (n > 0) {
        int k = BIO_write(r, p, n > (1u << 30) ? 1 << 30 : (int)n);
        if (k <= 0)
            return -1;
        p = (const char *)p + k;
        n -= (size_t)k;
    }
    return 0;
}

size_t tls_pending_out(SSL *s)
{
    return BIO_ctrl_pending(SSL_get_wbio(s));
}

size_t tls_take_out(SSL *s, void *out, size_t cap)
{
    int k = BIO_read(SSL_get_wbio(s), out, cap > (1u << 30) ? 1 << 30 : (int)cap);
    return k > 0 ? (size_t)k : 0;
}

void tls_fail_reason(SSL *s, char *out, size_t cap)
{
    long v = SSL_get_verify_result(s);
    unsigned long e = ERR_peek_last_error();
    if (v != X509_V_OK)
        snprintf(out, cap, "certificate verification failed: %s", X509_verify_cert_error_string(v));
    else if (e)
        snprintf(out, cap, "TLS handshake failed: %s", ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "?");
    else
        snprintf(out, cap, "TLS handshake failed");
    ERR_clear_error();
}
