/* core/crypto_*.c: base64/base64url (RFC 4648 vectors), UUIDs (RFC 4122 v5 vectors), SHA-256 and
 * certificate credential loading from PEM and PKCS#12 with the error an operator would see. */
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include "check.h"
#include "crypto.h"

static const char *const PASSWORD = "pw-Sekret-4711";

/* ---- encodings ---------------------------------------------------------------------- */

static void check_b64(const char *in, size_t len, const char *std, const char *url)
{
    char *e = crypto_b64_encode((const unsigned char *)in, len);
    CHECK_STR(e, std);
    free(e);
    e = crypto_b64url_encode((const unsigned char *)in, len);
    CHECK_STR(e, url);
    free(e);

    size_t n = 999;
    unsigned char *d = crypto_b64_decode(std, strlen(std), &n);
    CHECK(d != NULL);
    CHECK_INT(n, len);
    CHECK(d && memcmp(d, in, len) == 0);
    free(d);
    n = 999;
    d = crypto_b64url_decode(url, strlen(url), &n);
    CHECK(d != NULL);
    CHECK_INT(n, len);
    CHECK(d && memcmp(d, in, len) == 0);
    free(d);
}

static void test_base64_rfc4648_vectors(void)
{
    check_b64("", 0, "", "");
    check_b64("f", 1, "Zg==", "Zg");
    check_b64("fo", 2, "Zm8=", "Zm8");
    check_b64("foo", 3, "Zm9v", "Zm9v");
    check_b64("foob", 4, "Zm9vYg==", "Zm9vYg");
    check_b64("fooba", 5, "Zm9vYmE=", "Zm9vYmE");
    check_b64("foobar", 6, "Zm9vYmFy", "Zm9vYmFy");
    /* bytes whose encoding differs between the alphabets */
    check_b64("\xfb\xff", 2, "+/8=", "-_8");
    check_b64("\xfb\xef\xbe", 3, "++++", "----");
}

static void test_base64_decoding_rules(void)
{
    size_t n;
    unsigned char *d;
    /* base64url also accepts padding */
    d = crypto_b64url_decode("Zm9vYg==", 8, &n);
    CHECK(d && n == 4 && memcmp(d, "foob", 4) == 0);
    free(d);
    /* and standard base64 accepts its absence */
    d = crypto_b64_decode("Zm9vYg", 6, &n);
    CHECK(d && n == 4 && memcmp(d, "foob", 4) == 0);
    free(d);
    /* the other alphabet is rejected */
    CHECK(crypto_b64url_decode("+/8=", 4, &n) == NULL);
    CHECK(crypto_b64_decode("-_8", 3, &n) == NULL);
    /* impossible lengths, bad padding, foreign characters */
    CHECK(crypto_b64url_decode("Z", 1, &n) == NULL);
    CHECK(crypto_b64url_decode("Zg=", 3, &n) == NULL);
    CHECK(crypto_b64url_decode("Zm9v=", 5, &n) == NULL);
    CHECK(crypto_b64url_decode("Zm9v====", 8, &n) == NULL);
    CHECK(crypto_b64url_decode("Zm=v", 4, &n) == NULL);
    CHECK(crypto_b64url_decode("Zm9 v", 5, &n) == NULL);
    CHECK(crypto_b64_decode("Zm9v\n", 5, &n) == NULL);
}

/* ---- digests and UUIDs --------------------------------------------------------------- */

static void test_sha256(void)
{
    static const unsigned char abc[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
        0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    unsigned char md[32];
    crypto_sha256("abc", 3, md);
    CHECK(memcmp(md, abc, 32) == 0);
    crypto_sha256("abd", 3, md);
    CHECK(memcmp(md, abc, 32) != 0);
}

static void test_uuid5_vectors(void)
{
    char out[37];
    /* RFC 4122 DNS namespace; the value Python's uuid.uuid5 gives too */
    CHECK_INT(crypto_uuid5("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "www.example.com", 15, out), 0);
    CHECK_STR(out, "2ed6657d-e927-568b-95e1-2665a8aea6a2");
    /* URL namespace, checked with python3 -c 'uuid.uuid5(uuid.NAMESPACE_URL, ...)' */
    CHECK_INT(crypto_uuid5("6ba7b811-9dad-11d1-80b4-00c04fd430c8", "https://www.example.com", 23, out), 0);
    CHECK_STR(out, "a0787afd-c170-5773-8d60-02739168de9f");
    /* upper-case namespace text is the same namespace */
    CHECK_INT(crypto_uuid5("6BA7B810-9DAD-11D1-80B4-00C04FD430C8", "www.example.com", 15, out), 0);
    CHECK_STR(out, "2ed6657d-e927-568b-95e1-2665a8aea6a2");
    CHECK_INT(crypto_uuid5("not-a-uuid", "x", 1, out), -1);
    CHECK_INT(crypto_uuid5("6ba7b810-9dad-11d1-80b4-00c04fd430c", "x", 1, out), -1);
}

static void test_uuid4_format(void)
{
    char a[37], b[37];
    CHECK_INT(crypto_uuid4(a), 0);
    CHECK_INT(crypto_uuid4(b), 0);
    CHECK_INT(strlen(a), 36);
    CHECK(crypto_is_guid(a));
    CHECK(a[14] == '4');                   /* version */
    CHECK(strchr("89ab", a[19]) != NULL);  /* RFC 4122 variant */
    CHECK(strcmp(a, b) != 0);
    for (int i = 0; i < 36; i++)
        CHECK(a[i] == '-' || (a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'f'));
}

static void test_is_guid(void)
{
    CHECK(crypto_is_guid("72f988bf-86f1-41af-91ab-2d7cd011db47"));
    CHECK(crypto_is_guid("72F988BF-86F1-41AF-91AB-2D7CD011DB47"));
    CHECK(!crypto_is_guid("72f988bf-86f1-41af-91ab-2d7cd011db4"));
    CHECK(!crypto_is_guid("72f988bf-86f1-41af-91ab-2d7cd011db470"));
    CHECK(!crypto_is_guid("72f988bf86f1-41af-91ab-2d7cd011db47-"));
    CHECK(!crypto_is_guid("72f988bg-86f1-41af-91ab-2d7cd011db47"));
    CHECK(!crypto_is_guid("contoso.onmicrosoft.com"));
    CHECK(!crypto_is_guid(""));
    CHECK(!crypto_is_guid(NULL));
}

/* ---- credential material, generated here --------------------------------------------- */

struct material {
    EVP_PKEY *key, *other_key;
    X509 *cert;
    char *key_pem, *enc_key_pem, *cert_pem, *other_key_pem;
    unsigned char *p12, *p12_nokey;
    int p12_len, p12_nokey_len;
};

static X509 *self_signed(EVP_PKEY *key, const char *cn)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 4711);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_sign(x, key, EVP_sha256());
    return x;
}

static char *bio_text(BIO *bio)
{
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    char *s = malloc((size_t)n + 1);
    memcpy(s, p, (size_t)n);
    s[n] = 0;
    BIO_free(bio);
    return s;
}

static void make_material(struct material *m)
{
    m->key = crypto_rsa_generate(2048);
    m->other_key = crypto_rsa_generate(2048);
    m->cert = self_signed(m->key, "cmkflow-test");

    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, m->key, NULL, NULL, 0, NULL, NULL);
    m->key_pem = bio_text(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, m->key, EVP_aes_256_cbc(), (const unsigned char *)PASSWORD,
                             (int)strlen(PASSWORD), NULL, NULL);
    m->enc_key_pem = bio_text(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, m->cert);
    m->cert_pem = bio_text(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, m->other_key, NULL, NULL, 0, NULL, NULL);
    m->other_key_pem = bio_text(b);

    PKCS12 *p12 = PKCS12_create(PASSWORD, "cmkflow", m->key, m->cert, NULL, 0, 0, 0, 0, 0);
    m->p12 = NULL;
    m->p12_len = i2d_PKCS12(p12, &m->p12);
    PKCS12_free(p12);
    p12 = PKCS12_create(PASSWORD, "cmkflow", NULL, m->cert, NULL, 0, 0, 0, 0, 0);
    m->p12_nokey = NULL;
    m->p12_nokey_len = p12 ? i2d_PKCS12(p12, &m->p12_nokey) : 0;
    PKCS12_free(p12);
    ERR_clear_error();
}

static void free_material(struct material *m)
{
    EVP_PKEY_free(m->key);
    EVP_PKEY_free(m->other_key);
    X509_free(m->cert);
    free(m->key_pem);
    free(m->enc_key_pem);
    free(m->cert_pem);
    free(m->other_key_pem);
    OPENSSL_free(m->p12);
    OPENSSL_free(m->p12_nokey);
}

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static struct material M;

/* Load and return the error text ("" on success); checks the outputs are consistent. */
static const char *load(const void *data, size_t len, const char *password, int *ok)
{
    static char err[256];
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    STACK_OF(X509) *chain = NULL;
    err[0] = 0;
    int rc = crypto_load_credential_cert(data, len, password, &key, &cert, &chain, err, sizeof err);
    *ok = rc == 0;
    if (rc == 0) {
        CHECK(key != NULL && cert != NULL && chain != NULL);
        CHECK_INT(EVP_PKEY_eq(key, M.key), 1);
        CHECK_INT(X509_cmp(cert, M.cert), 0);
        err[0] = 0;
    } else {
        CHECK(key == NULL && cert == NULL);
        CHECK(strstr(err, PASSWORD) == NULL);
        CHECK(strstr(err, "PRIVATE KEY-----") == NULL);
    }
    EVP_PKEY_free(key);
    X509_free(cert);
    sk_X509_pop_free(chain, X509_free);
    CHECK_INT(ERR_peek_error(), 0); /* the error queue is left empty */
    return err;
}

static void test_pem_credential(void)
{
    int ok;
    char *both = concat(M.key_pem, M.cert_pem);
    load(both, strlen(both), NULL, &ok);
    CHECK(ok);
    free(both);
    /* certificate first, key second also works */
    both = concat(M.cert_pem, M.key_pem);
    load(both, strlen(both), NULL, &ok);
    CHECK(ok);
    free(both);

    char *enc = concat(M.enc_key_pem, M.cert_pem);
    CHECK(strstr(enc, "ENCRYPTED PRIVATE KEY") != NULL);
    load(enc, strlen(enc), PASSWORD, &ok);
    CHECK(ok);
    CHECK_STR(load(enc, strlen(enc), "wrong", &ok), "certificate file: wrong password for the encrypted private key");
    CHECK(!ok);
    CHECK_STR(load(enc, strlen(enc), NULL, &ok),
              "certificate file: the private key is encrypted and no password was given");
    CHECK(!ok);
    free(enc);

    CHECK_STR(load(M.cert_pem, strlen(M.cert_pem), NULL, &ok), "certificate file: no private key found");
    CHECK(!ok);
    CHECK_STR(load(M.key_pem, strlen(M.key_pem), NULL, &ok), "certificate file: no certificate found");
    CHECK(!ok);
    char *mismatch = concat(M.other_key_pem, M.cert_pem);
    CHECK_STR(load(mismatch, strlen(mismatch), NULL, &ok),
              "certificate file: the private key does not match any certificate in the file");
    CHECK(!ok);
    free(mismatch);
}

static void test_pkcs12_credential(void)
{
    int ok;
    CHECK(M.p12_len > 0);
    load(M.p12, (size_t)M.p12_len, PASSWORD, &ok);
    CHECK(ok);
    CHECK_STR(load(M.p12, (size_t)M.p12_len, "wrong", &ok), "PKCS#12: wrong password or corrupt file");
    CHECK(!ok);
    CHECK_STR(load(M.p12, (size_t)M.p12_len, NULL, &ok), "PKCS#12: wrong password or corrupt file");
    CHECK(!ok);
    /* a flipped byte in the middle: the MAC no longer matches */
    unsigned char *bad = malloc((size_t)M.p12_len);
    memcpy(bad, M.p12, (size_t)M.p12_len);
    bad[M.p12_len / 2] ^= 0x55;
    const char *err = load(bad, (size_t)M.p12_len, PASSWORD, &ok);
    CHECK(!ok);
    CHECK(strncmp(err, "PKCS#12: ", 9) == 0 || strcmp(err, "certificate file: neither PEM nor PKCS#12") == 0);
    free(bad);
    if (M.p12_nokey_len > 0) {
        CHECK_STR(load(M.p12_nokey, (size_t)M.p12_nokey_len, PASSWORD, &ok), "PKCS#12: no private key found");
        CHECK(!ok);
    }
    static const char garbage[] = "\x30\x82 this is not a certificate at all";
    CHECK_STR(load(garbage, sizeof garbage - 1, NULL, &ok), "certificate file: neither PEM nor PKCS#12");
    CHECK(!ok);
    CHECK_STR(load("", 0, NULL, &ok), "certificate file: empty");
    CHECK(!ok);
}

static void test_thumbprints(void)
{
    unsigned char *der = NULL;
    int n = i2d_X509(M.cert, &der);
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha1(), NULL);
    char *expect = crypto_b64url_encode(md, mdlen);
    char *got = crypto_cert_thumbprint_sha1(M.cert);
    CHECK_INT(strlen(got), 27); /* 20 bytes unpadded */
    CHECK_STR(got, expect);
    free(expect);
    free(got);
    EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
    expect = crypto_b64url_encode(md, mdlen);
    got = crypto_cert_thumbprint_s256(M.cert);
    CHECK_INT(strlen(got), 43);
    CHECK_STR(got, expect);
    free(expect);
    free(got);
    /* x5c: standard base64 of the DER */
    char *x5c = crypto_cert_der_b64(M.cert);
    size_t dlen = 0;
    unsigned char *back = crypto_b64_decode(x5c, strlen(x5c), &dlen);
    CHECK(back && dlen == (size_t)n && memcmp(back, der, dlen) == 0);
    free(back);
    free(x5c);
    OPENSSL_free(der);
}

static void test_key_from_pem(void)
{
    char err[256];
    EVP_PKEY *k = crypto_key_from_pem(M.key_pem, strlen(M.key_pem), NULL, err, sizeof err);
    CHECK(k && EVP_PKEY_eq(k, M.key) == 1);
    EVP_PKEY_free(k);
    k = crypto_key_from_pem(M.cert_pem, strlen(M.cert_pem), NULL, err, sizeof err);
    CHECK(k && EVP_PKEY_eq(k, M.key) == 1);
    EVP_PKEY_free(k);
    k = crypto_key_from_pem(M.enc_key_pem, strlen(M.enc_key_pem), "nope", err, sizeof err);
    CHECK(k == NULL);
    CHECK_STR(err, "PEM: wrong password for the encrypted private key");
    k = crypto_key_from_pem("hello", 5, NULL, err, sizeof err);
    CHECK(k == NULL);
    CHECK_STR(err, "PEM: no key or certificate found");
    static const char broken[] = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    k = crypto_key_from_pem(broken, sizeof broken - 1, NULL, err, sizeof err);
    CHECK(k == NULL);
    CHECK(strncmp(err, "PEM: cannot read the key", 24) == 0);
    CHECK_INT(ERR_peek_error(), 0);
}

static void test_sign_verify_primitives(void)
{
    unsigned char sig[512];
    size_t siglen = sizeof sig;
    CHECK_INT(crypto_sign(M.key, 1, "data", 4, sig, &siglen), 0);
    CHECK_INT(siglen, 256);
    CHECK_INT(crypto_verify(M.key, 1, "data", 4, sig, siglen), 1);
    CHECK_INT(crypto_verify(M.key, 0, "data", 4, sig, siglen), 0);   /* wrong padding */
    CHECK_INT(crypto_verify(M.key, 1, "datA", 4, sig, siglen), 0);   /* other data */
    CHECK_INT(crypto_verify(M.other_key, 1, "data", 4, sig, siglen), 0);
    CHECK_INT(ERR_peek_error(), 0);
}

static void test_drain_errors(void)
{
    ERR_raise(ERR_LIB_EVP, EVP_R_BAD_DECRYPT);
    char buf[128] = "";
    crypto_drain_errors(buf, sizeof buf);
    CHECK(strstr(buf, "bad decrypt") != NULL);
    CHECK_INT(ERR_peek_error(), 0);
}

int main(void)
{
    make_material(&M);
    RUN(test_base64_rfc4648_vectors);
    RUN(test_base64_decoding_rules);
    RUN(test_sha256);
    RUN(test_uuid5_vectors);
    RUN(test_uuid4_format);
    RUN(test_is_guid);
    RUN(test_pem_credential);
    RUN(test_pkcs12_credential);
    RUN(test_thumbprints);
    RUN(test_key_from_pem);
    RUN(test_sign_verify_primitives);
    RUN(test_drain_errors);
    free_material(&M);
    DONE();
}
