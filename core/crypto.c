/* cmkflow.core.crypto: randomness, SHA-256, base64/base64url, UUIDs, RSA keys and certificates.
 *
 * Everything that can fail because of the environment or remote data (a PEM file, a token, a
 * ciphertext) returns an error; misuse (wrong argument types, unknown algorithms) raises.
 * Error messages name what went wrong and never carry key material or passwords. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include "cmk.h"
#include "crypto.h"
#include "jose.h"
#include "json.h"
#include "redact.h"

/* ---- errors ---------------------------------------------------------------------- */

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
static void fail_with_openssl(char *err, size_t errlen, const char *prefix)
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

/* ---- randomness and digests ------------------------------------------------------- */

int crypto_random(unsigned char *buf, size_t n)
{
    while (n > 0) {
        int chunk = n > INT_MAX ? INT_MAX : (int)n;
        if (RAND_bytes(buf, chunk) != 1) {
            ERR_clear_error();
            return -1;
        }
        buf += chunk;
        n -= (size_t)chunk;
    }
    return 0;
}

void crypto_sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 32;
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1) {
        /* cannot happen with the default provider; never leave out uninitialised */
        memset(out, 0, 32);
        ERR_clear_error();
    }
}

/* ---- base64 ------------------------------------------------------------------------ */

static const char B64_STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64_URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64_encoded_len(size_t len, int pad)
{
    return pad ? (len + 2) / 3 * 4 : len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
}

/* out must hold b64_encoded_len(len, pad) bytes; no NUL is written. Returns the length. */
static size_t b64_encode_to(const unsigned char *in, size_t len, char *out, const char *abc, int pad)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
        out[o++] = abc[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
        if (pad)
            out[o++] = '=';
    }
    return o;
}

static int b64_value(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Validates text and returns the decoded length, or (size_t)-1 when invalid. */
static size_t b64_decoded_len(const char *text, size_t len, int url)
{
    size_t n = len;
    while (n > 0 && text[n - 1] == '=' && len - n < 2)
        n--;
    if (n < len && len % 4 != 0)
        return (size_t)-1; /* padding present but not to a multiple of 4 */
    if (n % 4 == 1)
        return (size_t)-1;
    for (size_t i = 0; i < n; i++)
        if (b64_value((unsigned char)text[i], url) < 0)
            return (size_t)-1;
    if (n < len && (len - n) != (4 - n % 4) % 4)
        return (size_t)-1; /* e.g. "Zg=" or "Zm9v=" */
    return n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
}

/* text must have passed b64_decoded_len; out must hold that many bytes. */
static void b64_decode_to(const char *text, size_t len, unsigned char *out, int url)
{
    size_t n = len, o = 0;
    while (n > 0 && text[n - 1] == '=')
        n--;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 6 | (uint32_t)b64_value((unsigned char)text[i], url);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits & 0xFF);
        }
    }
}

static char *b64_encode_alloc(const unsigned char *data, size_t len, const char *abc, int pad)
{
    size_t n = b64_encoded_len(len, pad);
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    b64_encode_to(data, len, out, abc, pad);
    out[n] = 0;
    return out;
}

static unsigned char *b64_decode_alloc(const char *text, size_t len, size_t *out_len, int url)
{
    size_t n = b64_decoded_len(text, len, url);
    if (n == (size_t)-1)
        return NULL;
    unsigned char *out = malloc(n + 1);
    if (!out)
        return NULL;
    b64_decode_to(text, len, out, url);
    out[n] = 0;
    if (out_len)
        *out_len = n;
    return out;
}

char *crypto_b64url_encode(const unsigned char *data, size_t len)
{
    return b64_encode_alloc(data, len, B64_URL, 0);
}

unsigned char *crypto_b64url_decode(const char *text, size_t text_len, size_t *out_len)
{
    return b64_decode_alloc(text, text_len, out_len, 1);
}

char *crypto_b64_encode(const unsigned char *data, size_t len)
{
    return b64_encode_alloc(data, len, B64_STD, 1);
}

unsigned char *crypto_b64_decode(const char *text, size_t text_len, size_t *out_len)
{
    return b64_decode_alloc(text, text_len, out_len, 0);
}

/* ---- UUIDs -------------------------------------------------------------------------- */

static void uuid_format(const unsigned char b[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int crypto_is_guid(const char *s)
{
    if (!s)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (hex_value(s[i]) < 0) {
            return 0; /* also catches an early NUL */
        }
    }
    return s[36] == 0;
}

static int uuid_parse(const char *s, unsigned char b[16])
{
    if (!crypto_is_guid(s))
        return -1;
    for (int i = 0, o = 0; i < 36; i++) {
        if (s[i] == '-')
            continue;
        b[o / 2] = (unsigned char)(o % 2 ? b[o / 2] | hex_value(s[i]) : hex_value(s[i]) << 4);
        o++;
    }
    return 0;
}

int crypto_uuid4(char out[37])
{
    unsigned char b[16];
    if (crypto_random(b, sizeof b) != 0)
        return -1;
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
    uuid_format(b, out);
    return 0;
}

int crypto_uuid5(const char *ns, const char *name, size_t name_len, char out[37])
{
    unsigned char nsb[16], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (uuid_parse(ns, nsb) != 0)
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, nsb, sizeof nsb) == 1 &&
             EVP_DigestUpdate(ctx, name, name_len) == 1 &&
             EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen >= 16;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        ERR_clear_error();
        return -1;
    }
    md[6] = (unsigned char)((md[6] & 0x0F) | 0x50);
    md[8] = (unsigned char)((md[8] & 0x3F) | 0x80);
    uuid_format(md, out);
    return 0;
}

/* ---- RSA keys ----------------------------------------------------------------------- */

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
        fail_with_openssl(err, errlen, prefix);
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
        fail_with_openssl(err, errlen, "PEM: cannot read the key");
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
        fail_with_openssl(err, errlen,
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

/* ---- signatures and key wrapping ----------------------------------------------------- */

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
static int oaep_md(const char *alg, const EVP_MD **md)
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

/* ---- the Lua module ---------------------------------------------------------------------- */

#define GUARD_MT "cmkflow.crypto.guard"
#define MAX_RSA_BYTES 2048 /* 16384-bit keys; larger ones are refused */

struct key_ud {
    EVP_PKEY *pkey;
};

#define guard crypto_guard

/* [-0, +0, -] __gc / __close of a guard */
static int guard_gc(lua_State *L)
{
    struct guard *g = luaL_checkudata(L, 1, GUARD_MT);
    if (g->p && g->free_fn) {
        g->free_fn(g->p);
    } else if (g->p) {
        OPENSSL_cleanse(g->p, g->len);
        free(g->p);
    }
    g->p = NULL;
    return 0;
}

struct crypto_guard *crypto_push_guard(lua_State *L)
{
    struct guard *g = lua_newuserdatauv(L, sizeof *g, 0);
    memset(g, 0, sizeof *g);
    if (luaL_newmetatable(L, GUARD_MT)) {
        lua_pushcfunction(L, guard_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, guard_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    return g;
}

/* [-0, +0, -] key __gc / __close */
static int key_gc(lua_State *L)
{
    struct key_ud *k = luaL_checkudata(L, 1, CRYPTO_KEY_MT);
    EVP_PKEY_free(k->pkey);
    k->pkey = NULL;
    return 0;
}

EVP_PKEY *crypto_check_key(lua_State *L, int idx)
{
    struct key_ud *k = luaL_checkudata(L, idx, CRYPTO_KEY_MT);
    if (!k->pkey)
        luaL_argerror(L, idx, "key has been closed");
    return k->pkey;
}

static int key_has_private(EVP_PKEY *key)
{
    BIGNUM *d = NULL;
    int has = EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_D, &d) == 1 && d != NULL;
    BN_clear_free(d);
    ERR_clear_error();
    return has;
}

/* [-0, +1, m] key:bits() -> integer */
static int key_bits(lua_State *L)
{
    lua_pushinteger(L, EVP_PKEY_get_bits(crypto_check_key(L, 1)));
    return 1;
}

/* [-0, +1, m] key:has_private() -> boolean */
static int key_has_private_l(lua_State *L)
{
    lua_pushboolean(L, key_has_private(crypto_check_key(L, 1)));
    return 1;
}

/* [-0, +1, m] __tostring: "cmkflow.key (RSA 2048, private)" - never key material */
static int key_tostring(lua_State *L)
{
    struct key_ud *k = luaL_checkudata(L, 1, CRYPTO_KEY_MT);
    if (!k->pkey)
        lua_pushliteral(L, "cmkflow.key (closed)");
    else
        lua_pushfstring(L, "cmkflow.key (RSA %d, %s)", EVP_PKEY_get_bits(k->pkey),
                        key_has_private(k->pkey) ? "private" : "public");
    return 1;
}

/* Write the key to PEM through a secure-memory BIO and push the text. */
static int push_pem(lua_State *L, EVP_PKEY *key, int private_part)
{
    struct guard *g = crypto_push_guard(L);
    BIO *bio = BIO_new(BIO_s_secmem());
    int ok = bio && (private_part ? PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)
                                  : PEM_write_bio_PUBKEY(bio, key)) == 1;
    char *p = NULL;
    long n = ok ? BIO_get_mem_data(bio, &p) : 0;
    if (ok && n > 0 && (g->p = malloc((size_t)n)) != NULL) {
        memcpy(g->p, p, (size_t)n);
        g->len = (size_t)n;
    }
    BIO_free(bio);
    ERR_clear_error();
    if (!g->p)
        return luaL_error(L, "cannot write the key as PEM");
    lua_pushlstring(L, g->p, g->len);
    lua_remove(L, -2);
    return 1;
}

/* [-0, +1, e] key:public_pem() -> SPKI PEM text */
static int key_public_pem(lua_State *L) { return push_pem(L, crypto_check_key(L, 1), 0); }

/* [-0, +1, e] key:private_pem() -> unencrypted PKCS#8 PEM (the emulator's own keys) */
static int key_private_pem(lua_State *L)
{
    EVP_PKEY *key = crypto_check_key(L, 1);
    if (!key_has_private(key))
        return luaL_error(L, "key:private_pem(): this is a public key");
    return push_pem(L, key, 1);
}

/* Big-endian magnitude of an RSA parameter into buf; returns its length or -1. */
static int rsa_param(EVP_PKEY *key, const char *name, unsigned char *buf, size_t cap)
{
    BIGNUM *bn = NULL;
    int n = -1;
    if (EVP_PKEY_get_bn_param(key, name, &bn) == 1 && (size_t)BN_num_bytes(bn) <= cap)
        n = BN_bn2bin(bn, buf);
    BN_free(bn);
    ERR_clear_error();
    return n;
}

static void push_b64url(lua_State *L, const unsigned char *data, size_t len)
{
    luaL_Buffer b;
    size_t n = b64_encoded_len(len, 0);
    char *out = luaL_buffinitsize(L, &b, n);
    b64_encode_to(data, len, out, B64_URL, 0);
    luaL_pushresultsize(&b, n);
}

/* [-0, +1, e] key:jwk() -> {kty="RSA", n=b64url, e=b64url} (public part only) */
static int key_jwk(lua_State *L)
{
    EVP_PKEY *key = crypto_check_key(L, 1);
    unsigned char n[MAX_RSA_BYTES], e[16];
    int nlen = rsa_param(key, OSSL_PKEY_PARAM_RSA_N, n, sizeof n);
    int elen = rsa_param(key, OSSL_PKEY_PARAM_RSA_E, e, sizeof e);
    if (nlen <= 0 || elen <= 0)
        return luaL_error(L, "key:jwk(): not an RSA key");
    lua_createtable(L, 0, 3);
    lua_pushliteral(L, "RSA");
    lua_setfield(L, -2, "kty");
    push_b64url(L, n, (size_t)nlen);
    lua_setfield(L, -2, "n");
    push_b64url(L, e, (size_t)elen);
    lua_setfield(L, -2, "e");
    luaL_getmetatable(L, JSON_OBJECT_MT);
    if (lua_istable(L, -1))
        lua_setmetatable(L, -2);
    else
        lua_pop(L, 1);
    return 1;
}

static int check_sig_alg(lua_State *L, int idx)
{
    static const char *const algs[] = {"RS256", "PS256", NULL};
    return luaL_checkoption(L, idx, NULL, algs); /* 0 RS256, 1 PS256 */
}

/* [-0, +1, e] key:sign(data, "RS256"|"PS256") -> signature bytes */
static int key_sign(lua_State *L)
{
    EVP_PKEY *key = crypto_check_key(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    int pss = check_sig_alg(L, 3);
    if (!key_has_private(key))
        return luaL_argerror(L, 1, "signing needs a private key");
    unsigned char sig[MAX_RSA_BYTES];
    size_t siglen = sizeof sig;
    if (EVP_PKEY_get_size(key) > (int)sizeof sig || crypto_sign(key, pss, data, len, sig, &siglen) != 0)
        return luaL_error(L, "key:sign(): signing failed");
    lua_pushlstring(L, (const char *)sig, siglen);
    return 1;
}

/* [-0, +1|2, e] key:wrap(plaintext, "RSA-OAEP"|"RSA-OAEP-256") -> ciphertext | nil, err */
static int key_wrap(lua_State *L)
{
    EVP_PKEY *key = crypto_check_key(L, 1);
    size_t len;
    const char *pt = luaL_checklstring(L, 2, &len);
    const EVP_MD *md;
    if (oaep_md(luaL_checkstring(L, 3), &md) != 0)
        return luaL_argerror(L, 3, "expected \"RSA-OAEP\" or \"RSA-OAEP-256\"");
    int k = EVP_PKEY_get_size(key);
    int max = k - 2 * EVP_MD_get_size(md) - 2;
    if (k > MAX_RSA_BYTES)
        return luaL_argerror(L, 1, "key too large");
    if ((long long)len > max)
        return luaL_error(L, "key:wrap(): %d bytes is more than %s with a %d-bit key can carry (%d)",
                          (int)(len > INT_MAX ? INT_MAX : len), lua_tostring(L, 3),
                          EVP_PKEY_get_bits(key), max);
    unsigned char out[MAX_RSA_BYTES];
    size_t outlen = sizeof out;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    int ok = ctx && EVP_PKEY_encrypt_init(ctx) == 1 && setup_oaep(ctx, md) &&
             EVP_PKEY_encrypt(ctx, out, &outlen, (const unsigned char *)pt, len) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        char err[256];
        fail_with_openssl(err, sizeof err, "RSA-OAEP encryption failed");
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushlstring(L, (const char *)out, outlen);
    return 1;
}

/* [-0, +1|2, e] key:unwrap(ciphertext, alg) -> plaintext | nil, err */
static int key_unwrap(lua_State *L)
{
    EVP_PKEY *key = crypto_check_key(L, 1);
    size_t len;
    const char *ct = luaL_checklstring(L, 2, &len);
    const EVP_MD *md;
    if (oaep_md(luaL_checkstring(L, 3), &md) != 0)
        return luaL_argerror(L, 3, "expected \"RSA-OAEP\" or \"RSA-OAEP-256\"");
    if (!key_has_private(key))
        return luaL_argerror(L, 1, "unwrapping needs a private key");
    if (EVP_PKEY_get_size(key) > MAX_RSA_BYTES)
        return luaL_argerror(L, 1, "key too large");
    unsigned char out[MAX_RSA_BYTES];
    size_t outlen = sizeof out;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    int ok = ctx && EVP_PKEY_decrypt_init(ctx) == 1 && setup_oaep(ctx, md) &&
             EVP_PKEY_decrypt(ctx, out, &outlen, (const unsigned char *)ct, len) == 1;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error(); /* the reason would only help an oracle */
    if (!ok) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s decryption failed (wrong key, algorithm or corrupt ciphertext)",
                        lua_tostring(L, 3));
        return 2;
    }
    /* copy into a guard so the stack copy can be cleansed before a possible raise */
    struct guard *g = crypto_push_guard(L);
    g->p = malloc(outlen ? outlen : 1);
    if (g->p) {
        memcpy(g->p, out, outlen);
        g->len = outlen;
    }
    OPENSSL_cleanse(out, sizeof out);
    if (!g->p)
        return luaL_error(L, "out of memory");
    lua_pushlstring(L, g->p, g->len);
    return 1;
}

static const luaL_Reg key_methods[] = {
    {"bits", key_bits},
    {"has_private", key_has_private_l},
    {"public_pem", key_public_pem},
    {"private_pem", key_private_pem},
    {"jwk", key_jwk},
    {"sign", key_sign},
    {"wrap", key_wrap},
    {"unwrap", key_unwrap},
    {"close", key_gc},
    {NULL, NULL},
};

/* [-0, +1, m] the "cmkflow.key" metatable, created on first use in this state */
static void push_key_metatable(lua_State *L)
{
    if (luaL_newmetatable(L, CRYPTO_KEY_MT)) {
        lua_pushcfunction(L, key_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, key_gc);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, key_tostring);
        lua_setfield(L, -2, "__tostring");
        luaL_newlib(L, key_methods);
        lua_setfield(L, -2, "__index");
    }
}

EVP_PKEY **crypto_push_key(lua_State *L)
{
    struct key_ud *k = lua_newuserdatauv(L, sizeof *k, 0);
    k->pkey = NULL;
    push_key_metatable(L);
    lua_setmetatable(L, -2);
    return &k->pkey;
}

EVP_PKEY *crypto_lua_key(lua_State *L, int idx, char *err, size_t errlen)
{
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TUSERDATA: {
        EVP_PKEY *key = crypto_check_key(L, idx);
        lua_pushvalue(L, idx);
        return key;
    }
    case LUA_TSTRING: {
        size_t len;
        const char *pem = lua_tolstring(L, idx, &len);
        EVP_PKEY **slot = crypto_push_key(L);
        *slot = crypto_key_from_pem(pem, len, NULL, err, errlen);
        if (!*slot) {
            lua_pop(L, 1);
            lua_pushnil(L);
        }
        return *slot;
    }
    case LUA_TTABLE: {
        EVP_PKEY **slot = crypto_push_key(L);
        json_t *jwk = json_from_lua(L, idx, err, errlen);
        if (jwk) {
            *slot = jose_key_from_jwk(jwk);
            json_decref(jwk);
            if (!*slot)
                snprintf(err, errlen, "JWK: not an RSA public key {kty=\"RSA\", n, e}");
        }
        if (!*slot) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return NULL;
        }
        return *slot;
    }
    default:
        luaL_typeerror(L, idx, "cmkflow.key, PEM text or JWK table");
        return NULL;
    }
}


/* [-0, +1|2, e] crypto.rsa_generate(bits) -> key */
static int l_rsa_generate(lua_State *L)
{
    lua_Integer bits = luaL_checkinteger(L, 1);
    luaL_argcheck(L, bits == 2048 || bits == 3072 || bits == 4096, 1, "expected 2048, 3072 or 4096");
    EVP_PKEY **slot = crypto_push_key(L);
    *slot = crypto_rsa_generate((int)bits);
    if (!*slot)
        return luaL_error(L, "RSA key generation failed");
    return 1;
}

/* [-0, +1|2, e] crypto.key_from_pem(pem [, password]) -> key | nil, err */
static int l_key_from_pem(lua_State *L)
{
    size_t len;
    const char *pem = luaL_checklstring(L, 1, &len);
    const char *password = luaL_optstring(L, 2, NULL);
    EVP_PKEY **slot = crypto_push_key(L);
    char err[256];
    *slot = crypto_key_from_pem(pem, len, password, err, sizeof err);
    if (!*slot) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

/* [-0, +1|2, e] crypto.key_from_jwk(jwk) -> key | nil, err (public key) */
static int l_key_from_jwk(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    char err[256];
    if (!crypto_lua_key(L, 1, err, sizeof err)) {
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

/* [-0, +1|2, e] crypto.load_certificate(data [, password]) -> key, info | nil, err
 * info = {x5t=..., x5t_s256=..., x5c={base64 DER, leaf first}, subject=...} */
static int l_load_certificate(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    const char *password = luaL_optstring(L, 2, NULL);
    lua_settop(L, 2);
    EVP_PKEY **slot = crypto_push_key(L);
    X509 *cert = NULL;
    STACK_OF(X509) *chain = NULL;
    char err[256];
    if (crypto_load_credential_cert((const unsigned char *)data, len, password, slot, &cert, &chain,
                                    err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    /* collect the strings first so nothing OpenSSL-owned is held across a Lua raise */
    int ncerts = 1 + sk_X509_num(chain);
    char *s256 = crypto_cert_thumbprint_s256(cert), *sha1 = crypto_cert_thumbprint_sha1(cert);
    char subject[256] = "";
    X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
    char **der = calloc((size_t)ncerts, sizeof *der);
    int ok = s256 && sha1 && der;
    for (int i = 0; ok && i < ncerts; i++)
        ok = (der[i] = crypto_cert_der_b64(i == 0 ? cert : sk_X509_value(chain, i - 1))) != NULL;
    X509_free(cert);
    sk_X509_pop_free(chain, X509_free);
    /* hand the strings to guards so a memory error while pushing leaks nothing */
    struct guard *g1 = crypto_push_guard(L), *g2 = crypto_push_guard(L), *g3 = crypto_push_guard(L);
    g1->p = s256;
    g2->p = sha1;
    g3->p = der;
    for (int i = 0; der && i < ncerts; i++) {
        struct guard *g = crypto_push_guard(L);
        g->p = der[i];
        g->len = 0;
    }
    if (!ok)
        return luaL_error(L, "out of memory reading the certificate");
    lua_createtable(L, 0, 4);
    lua_pushstring(L, sha1);
    lua_setfield(L, -2, "x5t");
    lua_pushstring(L, s256);
    lua_setfield(L, -2, "x5t_s256");
    lua_pushstring(L, subject);
    lua_setfield(L, -2, "subject");
    lua_createtable(L, ncerts, 0);
    for (int i = 0; i < ncerts; i++) {
        lua_pushstring(L, der[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "x5c");
    lua_replace(L, 4); /* info where g1 was; the other guards are dropped */
    lua_settop(L, 4);
    return 2;
}

/* [-0, +1|2, e] crypto.verify(pem | key | jwk, data, sig, "RS256"|"PS256") -> bool | nil, err */
static int l_verify(lua_State *L)
{
    size_t len, siglen;
    const char *data = luaL_checklstring(L, 2, &len);
    const char *sig = luaL_checklstring(L, 3, &siglen);
    int pss = check_sig_alg(L, 4);
    char err[256];
    EVP_PKEY *key = crypto_lua_key(L, 1, err, sizeof err);
    if (!key) {
        lua_pushstring(L, err);
        return 2;
    }
    int rc = crypto_verify(key, pss, data, len, (const unsigned char *)sig, siglen);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "the key cannot verify RSA signatures");
        return 2;
    }
    lua_pushboolean(L, rc == 1);
    return 1;
}

/* [-0, +1, e] crypto.uuid4() -> lower-case UUID text */
static int l_uuid4(lua_State *L)
{
    char out[37];
    if (crypto_uuid4(out) != 0)
        return luaL_error(L, "random generator failure");
    lua_pushstring(L, out);
    return 1;
}

/* [-0, +1, v] crypto.uuid5(namespace_uuid, name) -> UUID text */
static int l_uuid5(lua_State *L)
{
    const char *ns = luaL_checkstring(L, 1);
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);
    char out[37];
    if (crypto_uuid5(ns, name, len, out) != 0)
        return luaL_argerror(L, 1, "namespace is not a UUID");
    lua_pushstring(L, out);
    return 1;
}

/* [-0, +1, -] crypto.is_guid(v) -> boolean */
static int l_is_guid(lua_State *L)
{
    size_t len = 0;
    const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
    lua_pushboolean(L, s && len == 36 && crypto_is_guid(s));
    return 1;
}

/* [-0, +1, e] crypto.sha256(s) -> 32 raw bytes */
static int l_sha256(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char md[32];
    crypto_sha256(s, len, md);
    lua_pushlstring(L, (const char *)md, sizeof md);
    return 1;
}

/* [-0, +1, e] crypto.sha256_hex(s) -> 64 lower-case hex digits */
static int l_sha256_hex(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char md[32];
    char hex[65];
    crypto_sha256(s, len, md);
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = "0123456789abcdef"[md[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[md[i] & 15];
    }
    lua_pushlstring(L, hex, 64);
    return 1;
}

static int encode_l(lua_State *L, const char *abc, int pad)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    size_t n = b64_encoded_len(len, pad);
    char *out = luaL_buffinitsize(L, &b, n);
    b64_encode_to((const unsigned char *)s, len, out, abc, pad);
    luaL_pushresultsize(&b, n);
    return 1;
}

static int decode_l(lua_State *L, int url)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    size_t n = b64_decoded_len(s, len, url);
    if (n == (size_t)-1) {
        lua_pushnil(L);
        lua_pushstring(L, url ? "invalid base64url" : "invalid base64");
        return 2;
    }
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, n);
    b64_decode_to(s, len, out, url);
    luaL_pushresultsize(&b, n);
    return 1;
}

/* [-0, +1, e] crypto.b64url_encode(s) -> unpadded base64url */
static int l_b64url_encode(lua_State *L) { return encode_l(L, B64_URL, 0); }
/* [-0, +1|2, e] crypto.b64url_decode(s) -> bytes | nil, err */
static int l_b64url_decode(lua_State *L) { return decode_l(L, 1); }
/* [-0, +1, e] crypto.b64_encode(s) -> padded base64 */
static int l_b64_encode(lua_State *L) { return encode_l(L, B64_STD, 1); }
/* [-0, +1|2, e] crypto.b64_decode(s) -> bytes | nil, err */
static int l_b64_decode(lua_State *L) { return decode_l(L, 0); }

/* [-0, +1, e] crypto.random_bytes(n) -> n bytes from the CSPRNG (0 <= n <= 1 MiB) */
static int l_random_bytes(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= 1048576, 1, "expected 0 to 1048576");
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
    if (crypto_random(out, (size_t)n) != 0)
        return luaL_error(L, "random generator failure");
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* [-0, +1, e] crypto.redact(s) -> s with secrets replaced by REDACTED */
static int l_redact(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    struct guard *g = crypto_push_guard(L);
    g->p = redact_text_n(s, len, &g->len);
    if (!g->p)
        return luaL_error(L, "out of memory");
    lua_pushlstring(L, g->p, g->len);
    return 1;
}

/* [-0, +1, e] require "cmkflow.core.crypto" */
int luaopen_cmkflow_core_crypto(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"uuid4", l_uuid4},
        {"uuid5", l_uuid5},
        {"is_guid", l_is_guid},
        {"sha256", l_sha256},
        {"sha256_hex", l_sha256_hex},
        {"b64url_encode", l_b64url_encode},
        {"b64url_decode", l_b64url_decode},
        {"b64_encode", l_b64_encode},
        {"b64_decode", l_b64_decode},
        {"random_bytes", l_random_bytes},
        {"rsa_generate", l_rsa_generate},
        {"key_from_pem", l_key_from_pem},
        {"key_from_jwk", l_key_from_jwk},
        {"load_certificate", l_load_certificate},
        {"verify", l_verify},
        {"redact", l_redact},
        {NULL, NULL},
    };
    push_key_metatable(L);
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
