/* X.509 CA and server certificates for the test server and the emulator (see certgen.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include "buf.h"
#include "certgen.h"

#define HOUR 3600L
#define YEAR (365L * 24 * HOUR)

void certgen_last_error(char *buf, size_t len)
{
    if (!buf || len == 0)
        return;
    buf[0] = '\0';
    size_t used = 0;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        if (used + 3 >= len)
            continue; /* keep draining */
        if (used) {
            buf[used++] = ';';
            buf[used++] = ' ';
            buf[used] = '\0';
        }
        ERR_error_string_n(e, buf + used, len - used);
        used += strlen(buf + used);
    }
    if (!used)
        snprintf(buf, len, "certificate generation failed");
}

static EVP_PKEY *gen_key(void)
{
    return EVP_EC_gen("P-256");
}

/* 0 on success. The serial is 128 random bits with the top bit clear (positive, DER-minimal). */
static int set_serial(X509 *x)
{
    unsigned char r[16];
    if (RAND_bytes(r, sizeof r) != 1)
        return -1;
    r[0] &= 0x7f;
    r[0] |= 0x40;
    BIGNUM *bn = BN_bin2bn(r, sizeof r, NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok ? 0 : -1;
}

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (!ex)
        return -1;
    int ok = X509_add_ext(cert, ex, -1);
    X509_EXTENSION_free(ex);
    return ok ? 0 : -1;
}

static int set_name(X509_NAME *n, const char *cn)
{
    if (!X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"cmkflow test", -1,
                                    -1, 0))
        return -1;
    if (!X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0))
        return -1;
    return 0;
}

/* malloc'd copy of a memory BIO's contents, NUL-terminated; the BIO's buffer is wiped. */
static char *bio_to_string(BIO *bio)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    if (n <= 0)
        return NULL;
    char *out = malloc((size_t)n + 1);
    if (out) {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
    }
    OPENSSL_cleanse(data, (size_t)n);
    return out;
}

static int to_pem(X509 *cert, EVP_PKEY *key, char **cert_pem, char **key_pem)
{
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    int rc = -1;
    if (!cb || !kb)
        goto out;
    if (!PEM_write_bio_X509(cb, cert) || !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL))
        goto out;
    *cert_pem = bio_to_string(cb);
    *key_pem = bio_to_string(kb);
    if (!*cert_pem || !*key_pem) {
        free(*cert_pem);
        *cert_pem = NULL;
        buf_secret_free(key_pem);
        goto out;
    }
    rc = 0;
out:
    BIO_free(cb);
    BIO_free(kb);
    return rc;
}

static int set_validity(X509 *x, long years)
{
    if (!X509_gmtime_adj(X509_getm_notBefore(x), -HOUR))
        return -1;
    if (!X509_gmtime_adj(X509_getm_notAfter(x), years * YEAR))
        return -1;
    return 0;
}

int certgen_make_ca(const char *cn, char **cert_pem, char **key_pem)
{
    *cert_pem = *key_pem = NULL;
    EVP_PKEY *key = gen_key();
    X509 *x = X509_new();
    int rc = -1;
    if (!key || !x)
        goto out;
    if (!X509_set_version(x, 2) || set_serial(x) || set_validity(x, 10))
        goto out;
    if (set_name(X509_get_subject_name(x), cn ? cn : "cmkflow test CA"))
        goto out;
    if (!X509_set_issuer_name(x, X509_get_subject_name(x)) || !X509_set_pubkey(x, key))
        goto out;
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE") ||
        add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") ||
        add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
        add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always"))
        goto out;
    if (!X509_sign(x, key, EVP_sha256()))
        goto out;
    rc = to_pem(x, key, cert_pem, key_pem);
out:
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

static X509 *read_cert(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return x;
}

static EVP_PKEY *read_key(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return k;
}

/* Build the subjectAltName extension from the two lists. */
static int add_san(X509 *x, const char *const *dns, const char *const *ip)
{
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    int rc = -1;
    if (!names)
        return -1;
    for (size_t i = 0; dns && dns[i]; i++) {
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        if (!g || !s || !ASN1_STRING_set(s, dns[i], -1)) {
            GENERAL_NAME_free(g);
            ASN1_IA5STRING_free(s);
            goto out;
        }
        GENERAL_NAME_set0_value(g, GEN_DNS, s);
        if (!sk_GENERAL_NAME_push(names, g)) {
            GENERAL_NAME_free(g);
            goto out;
        }
    }
    for (size_t i = 0; ip && ip[i]; i++) {
        unsigned char addr[16];
        int len;
        if (inet_pton(AF_INET, ip[i], addr) == 1)
            len = 4;
        else if (inet_pton(AF_INET6, ip[i], addr) == 1)
            len = 16;
        else {
            ERR_raise_data(ERR_LIB_X509V3, X509V3_R_BAD_IP_ADDRESS, "not an IP address literal");
            goto out;
        }
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_OCTET_STRING *s = ASN1_OCTET_STRING_new();
        if (!g || !s || !ASN1_OCTET_STRING_set(s, addr, len)) {
            GENERAL_NAME_free(g);
            ASN1_OCTET_STRING_free(s);
            goto out;
        }
        GENERAL_NAME_set0_value(g, GEN_IPADD, s);
        if (!sk_GENERAL_NAME_push(names, g)) {
            GENERAL_NAME_free(g);
            goto out;
        }
    }
    if (sk_GENERAL_NAME_num(names) == 0) {
        ERR_raise_data(ERR_LIB_X509V3, X509V3_R_MISSING_VALUE, "no DNS names or IP addresses");
        goto out;
    }
    rc = X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1 ? 0 : -1;
out:
    GENERAL_NAMES_free(names);
    return rc;
}

int certgen_make_server(const char *ca_cert_pem, const char *ca_key_pem,
                        const char *const *dns_names, const char *const *ip_addrs,
                        char **cert_pem, char **key_pem)
{
    *cert_pem = *key_pem = NULL;
    X509 *ca = read_cert(ca_cert_pem);
    EVP_PKEY *ca_key = read_key(ca_key_pem);
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    int rc = -1;
    if (!ca || !ca_key)
        goto out;
    if (!X509_check_private_key(ca, ca_key))
        goto out;
    key = gen_key();
    x = X509_new();
    if (!key || !x)
        goto out;
    if (!X509_set_version(x, 2) || set_serial(x) || set_validity(x, 2))
        goto out;
    const char *cn = dns_names && dns_names[0] ? dns_names[0]
                     : ip_addrs && ip_addrs[0] ? ip_addrs[0]
                                               : "cmkflow server";
    if (set_name(X509_get_subject_name(x), cn))
        goto out;
    if (!X509_set_issuer_name(x, X509_get_subject_name(ca)) || !X509_set_pubkey(x, key))
        goto out;
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
    if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") ||
        add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature") ||
        add_ext(x, &ctx, NID_ext_key_usage, "serverAuth") ||
        add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
        add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always") ||
        add_san(x, dns_names, ip_addrs))
        goto out;
    if (!X509_sign(x, ca_key, EVP_sha256()))
        goto out;
    rc = to_pem(x, key, cert_pem, key_pem);
out:
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    return rc;
}
