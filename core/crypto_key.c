/* crypto_key.c: RSA keys and certificates - loading PEM and PKCS#12, thumbprints, RS256/PS256
 * signatures and RSA-OAEP key wrapping - and draining OpenSSL's error queue (crypto.h). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rsa.h>
#include "crypto.h"

void crypto_drain_errors(char *buf, size_t len)
{
    size_t used = buf && len ? strlen(buf) : 0;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        if (!buf || used + 3 >= len)
            continue; /* keep draining */
        if (used > 0) {
            buf[used++] = ';';
            buf[used++] = ' ';
            buf[used] = 0;
        }
        ERR_error_string_n(e, buf + used, len - used);
        used += strlen(buf + used);
    }
    ERR_clear_error();
}

/* Write "prefix: <openssl reasons>" (or just prefix when the queue is empty). */
void crypto_openssl_reason(char *err, size_t errlen, const char *prefix)
{
    if (!err || !errlen) {
        ERR_clear_error();
        return;
    }
    char reasons[256] = "";
    unsigned long e;
    size_t used = 0;
    while ((e = ERR_get_error()) != 0) {
        if (used + 3 >= sizeof reasons)
            continue;
        if (used) {
            reasons[used++] = ';';
            reasons[used++] = ' ';
        }
        /* only the reason: library/function names add noise */
        const char *r = ERR_reason_error_string(e);
        int w = snprintf(reasons + used, sizeof reasons - used, "%s", r ? r : "unknown error");
        used += w < 0 ? 0 : (size_t)w;
        if (used >= sizeof reasons)
            used = sizeof reasons - 1;
    }
    ERR_clear_error();
    if (used)
        snprintf(err, errlen, "%s (%s)", prefix, reasons);
    else
        snprintf(err, errlen, "%s", prefix);
}

EVP_PKEY *crypto_rsa_generate(int bits)
{
    EVP_PKEY *key = EVP_RSA_gen((unsigned int)bits);
    ERR_clear_error();
    return key;
}

/* Password callback: never prompts; records that a password was asked for. */
struct pw_state {
    const char *password;
    int asked;
};

static int pw_cb(char *buf, int size, int rwflag, void *u)
{
    struct pw_state *st = u;
    (void)rwflag;
    st->asked = 1;
    if (!st->password)
        return -1;
    size_t n = strlen(st->password);
    if (n > (size_t)size)
        return -1;
    memcpy(buf, st->password, n);
    return (int)n;
}

static int contains(const void *data, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    const char *p = data;
    for (size_t i = 0; n <= len && i <= len - n; i++)
        if (p[i] == needle[0] && memcmp(p + i, needle, n) == 0)
            return 1;
    return 0;
}

/* Read the first private key of a PEM text. Returns NULL with a reason on failure. */
static EVP_PKEY *pem_private_key(const void *data, size_t len, const char *password,
                                 const char *what, char *err, size_t errlen)
{
    if (!contains(data, len, "PRIVATE KEY-----")) {
        snprintf(err, errlen, "%s: no private key found", what);
        return NULL;
    }
    BIO *bio = BIO_new_mem_buf(data, len > INT_MAX ? INT_MAX : (int)len);
    struct pw_state st = {password, 0};
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, pw_cb, &st) : NULL;
    BIO_free(bio);
    if (key) {
        ERR_clear_error();
        return key;
    }
    if (st.asked && !password) {
        ERR_clear_error();
        snprintf(err, errlen, "%s: the private key is encrypted and no password was given", what);
    } else if (st.asked) {
        ERR_clear_error();
        snprintf(err, errlen, "%s: wrong password for the encrypted private key", what);
    } else {
        char prefix[96];
        snprintf(prefix, sizeof prefix, "%s: cannot read the private key", what);
        crypto_openssl_reason(err, errlen, prefix);
    }
    return NULL;
}

EVP_PKEY *crypto_key_from_pem(const char *pem, size_t len, const char *password, char *err,
                              size_t errlen)
{
    ERR_clear_error();
    if (contains(pem, len, "PRIVATE KEY-----"))
        return pem_private_key(pem, len, password, "PEM", err, errlen);
    BIO *bio = BIO_new_mem_buf(pem, len > INT_MAX ? INT_MAX : (int)len);
    EVP_PKEY *key = NULL;
    if (bio && contains(pem, len, "PUBLIC KEY-----")) {
        /* SPKI "PUBLIC KEY" and PKCS#1 "RSA PUBLIC KEY" both through the decoders */
        OSSL_DECODER_CTX *dctx = OSSL_DECODER_CTX_new_for_pkey(&key, "PEM", NULL, "RSA",
                                                               EVP_PKEY_PUBLIC_KEY, NULL, NULL);
        if (!dctx || OSSL_DECODER_from_bio(dctx, bio) != 1) {
            EVP_PKEY_free(key);
            key = NULL;
        }
        OSSL_DECODER_CTX_free(dctx);
    } else if (bio && contains(pem, len, "-----BEGIN CERTIFICATE-----")) {
        X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (cert) {
            key = X509_get_pubkey(cert);
            X509_free(cert);
        }
    } else {
        BIO_free(bio);
        ERR_clear_error();
        snprintf(err, errlen, "PEM: no key or certificate found");
        return NULL;
    }
    BIO_free(bio);
    if (!key) {
        crypto_openssl_reason(err, errlen, "PEM: cannot read the key");
        return NULL;
    }
    ERR_clear_error();
    return key;
}

/* Pick the certificate matching key out of certs; the rest become the chain. */
static int split_certs(EVP_PKEY *key, STACK_OF(X509) *certs, X509 **cert, STACK_OF(X509) **chain,
                       const char *what, char *err, size_t errlen)
{
    X509 *leaf = NULL;
    for (int i = 0; i < sk_X509_num(certs); i++) {
        X509 *c = sk_X509_value(certs, i);
        if (X509_check_private_key(c, key) == 1) {
            leaf = c;
            sk_X509_delete(certs, i);
            break;
        }
    }
    ERR_clear_error();
    if (!leaf) {
        snprintf(err, errlen, "%s: the private key does not match any certificate in the file", what);
        return -1;
    }
    *cert = leaf;
    if (chain) {
        *chain = certs;
    } else {
        sk_X509_pop_free(certs, X509_free);
    }
    return 0;
}

static int load_pem_credential(const unsigned char *data, size_t len, const char *password,
                               EVP_PKEY **key, X509 **cert, STACK_OF(X509) **chain, char *err,
                               size_t errlen)
{
    const char *what = "certificate file";
    if (!contains(data, len, "-----BEGIN CERTIFICATE-----")) {
        snprintf(err, errlen, "%s: no certificate found", what);
        return -1;
    }
    EVP_PKEY *k = pem_private_key(data, len, password, what, err, errlen);
    if (!k)
        return -1;
    STACK_OF(X509) *certs = sk_X509_new_null();
    BIO *bio = BIO_new_mem_buf(data, len > INT_MAX ? INT_MAX : (int)len);
    X509 *c;
    while (bio && certs && (c = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(certs, c)) {
            X509_free(c);
            break;
        }
    }
    BIO_free(bio);
    ERR_clear_error(); /* the loop ends on "no start line" */
    if (!certs || sk_X509_num(certs) == 0) {
        sk_X509_pop_free(certs, X509_free);
        EVP_PKEY_free(k);
        snprintf(err, errlen, "%s: no readable certificate found", what);
        return -1;
    }
    if (split_certs(k, certs, cert, chain, what, err, errlen) != 0) {
        sk_X509_pop_free(certs, X509_free);
        EVP_PKEY_free(k);
        return -1;
    }
    *key = k;
    return 0;
}

static int load_pkcs12_credential(const unsigned char *data, size_t len, const char *password,
                                  EVP_PKEY **key, X509 **cert, STACK_OF(X509) **chain, char *err,
                                  size_t errlen)
{
    const unsigned char *p = data;
    PKCS12 *p12 = d2i_PKCS12(NULL, &p, len > LONG_MAX ? LONG_MAX : (long)len);
    if (!p12) {
        ERR_clear_error();
        snprintf(err, errlen, "certificate file: neither PEM nor PKCS#12");
        return -1;
    }
    if (PKCS12_mac_present(p12)) {
        int mac_ok = PKCS12_verify_mac(p12, password, -1) == 1 ||
                     (!password && PKCS12_verify_mac(p12, "", 0) == 1) ||
                     (password && !*password && PKCS12_verify_mac(p12, NULL, 0) == 1);
        if (!mac_ok) {
            PKCS12_free(p12);
            ERR_clear_error();
            snprintf(err, errlen, "PKCS#12: wrong password or corrupt file");
            return -1;
        }
    }
    EVP_PKEY *k = NULL;
    X509 *c = NULL;
    STACK_OF(X509) *ca = NULL;
    int ok = PKCS12_parse(p12, password, &k, &c, &ca);
    PKCS12_free(p12);
    if (!ok) {
        crypto_openssl_reason(err, errlen,
                          "PKCS#12: wrong password or corrupt file (or a legacy algorithm such "
                          "as RC2; re-export with AES-256)");
        return -1;
    }
    ERR_clear_error();
    if (!k || !c) {
        snprintf(err, errlen, "PKCS#12: no %s found", !k ? "private key" : "certificate");
        EVP_PKEY_free(k);
        X509_free(c);
        sk_X509_pop_free(ca, X509_free);
        return -1;
    }
    *key = k;
    *cert = c;
    if (chain)
        *chain = ca ? ca : sk_X509_new_null();
    else
        sk_X509_pop_free(ca, X509_free);
    return 0;
}

int crypto_load_credential_cert(const unsigned char *data, size_t len, const char *password,
                                EVP_PKEY **key, X509 **cert, STACK_OF(X509) **chain,
                                char *err, size_t errlen)
{
    *key = NULL;
    *cert = NULL;
    if (chain)
        *chain = NULL;
    if (err && errlen)
        err[0] = 0;
    ERR_clear_error();
    if (len == 0) {
        snprintf(err, errlen, "certificate file: empty");
        return -1;
    }
    if (contains(data, len, "-----BEGIN "))
        return load_pem_credential(data, len, password, key, cert, chain, err, errlen);
    return load_pkcs12_credential(data, len, password, key, cert, chain, err, errlen);
}

static char *cert_digest_b64url(X509 *cert, const EVP_MD *md)
{
    unsigned char buf[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (X509_digest(cert, md, buf, &n) != 1) {
        ERR_clear_error();
        return NULL;
    }
    return crypto_b64url_encode(buf, n);
}

char *crypto_cert_thumbprint_s256(X509 *cert) { return cert_digest_b64url(cert, EVP_sha256()); }

char *crypto_cert_thumbprint_sha1(X509 *cert) { return cert_digest_b64url(cert, EVP_sha1()); }

char *crypto_cert_der_b64(X509 *cert)
{
    unsigned char *der = NULL;
    int n = i2d_X509(cert, &der);
    if (n <= 0) {
        ERR_clear_error();
        return NULL;
    }
    char *out = crypto_b64_encode(der, (size_t)n);
    OPENSSL_free(der);
    return out;
}

static int setup_sig_ctx(EVP_PKEY_CTX *pctx, int pss)
{
    if (!pss)
        return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0;
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0;
}

int crypto_sign(EVP_PKEY *key, int pss, const void *data, size_t len, unsigned char *sig,
                size_t *siglen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = md && EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, key) == 1 &&
             setup_sig_ctx(pctx, pss) &&
             EVP_DigestSign(md, sig, siglen, data, len) == 1;
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return ok ? 0 : -1;
}

int crypto_verify(EVP_PKEY *key, int pss, const void *data, size_t len, const unsigned char *sig,
                  size_t siglen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int rc = -1;
    if (md && EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, key) == 1 &&
        setup_sig_ctx(pctx, pss))
        rc = EVP_DigestVerify(md, sig, siglen, data, len) == 1 ? 1 : 0;
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return rc;
}

/* OAEP parameters of a JWA key-wrap algorithm name; -1 for an unknown one. */
int crypto_oaep_md(const char *alg, const EVP_MD **md)
{
    if (strcmp(alg, "RSA-OAEP") == 0) {
        *md = EVP_sha1();
        return 0;
    }
    if (strcmp(alg, "RSA-OAEP-256") == 0) {
        *md = EVP_sha256();
        return 0;
    }
    return -1;
}

static int setup_oaep(EVP_PKEY_CTX *ctx, const EVP_MD *md)
{
    return EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
           EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) > 0 && EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) > 0;
}

int crypto_key_has_private(EVP_PKEY *key)
{
    BIGNUM *d = NULL;
    int has = EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_D, &d) == 1 && d != NULL;
    BN_clear_free(d);
    ERR_clear_error();
    return has;
}

/* Big-endian magnitude of an RSA parameter into buf; returns its length or -1. */
int crypto_rsa_param(EVP_PKEY *key, const char *name, unsigned char *buf, size_t cap)
{
    BIGNUM *bn = NULL;
    int n = -1;
    if (EVP_PKEY_get_bn_param(key, name, &bn) == 1 && (size_t)BN_num_bytes(bn) <= cap)
        n = BN_bn2bin(bn, buf);
    BN_free(bn);
    ERR_clear_error();
    return n;
}

int crypto_rsa_oaep(EVP_PKEY *key, int decrypt, const EVP_MD *md, const unsigned char *in,
                    size_t len, unsigned char *out, size_t *outlen)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    int ok = ctx && (decrypt ? EVP_PKEY_decrypt_init(ctx) : EVP_PKEY_encrypt_init(ctx)) == 1 &&
             setup_oaep(ctx, md) &&
             (decrypt ? EVP_PKEY_decrypt(ctx, out, outlen, in, len)
                      : EVP_PKEY_encrypt(ctx, out, outlen, in, len)) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok ? 0 : -1;
}
