/* jose.c: compact JWS signing (RS256, PS256) checked against raw OpenSSL, tampering, wrong keys,
 * malformed tokens and JWK round trips. */
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include "check.h"
#include "crypto.h"
#include "jose.h"

static EVP_PKEY *KEY, *OTHER;

/* Verify a compact JWS with OpenSSL directly (PSS salt length 32 = SHA-256 output, per JWA). */
static int raw_verify(const char *token, EVP_PKEY *key, int pss)
{
    const char *last = strrchr(token, '.');
    size_t siglen = 0;
    unsigned char *sig = crypto_b64url_decode(last + 1, strlen(last + 1), &siglen);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = sig && EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, key) == 1;
    if (ok && pss)
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) > 0 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0;
    else if (ok)
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0;
    ok = ok && EVP_DigestVerify(md, sig, siglen, (const unsigned char *)token,
                                (size_t)(last - token)) == 1;
    EVP_MD_CTX_free(md);
    free(sig);
    ERR_clear_error();
    return ok;
}

static char *make_token(enum jose_alg alg)
{
    json_t *header = json_pack("{s:s, s:s}", "kid", "key-1", "x5t", "abc");
    json_t *claims = json_pack("{s:s, s:s, s:i, s:[]}", "aud", "api://AzureADTokenExchange",
                               "sub", "subject", "exp", 1700000000, "roles");
    char *t = jose_sign(header, claims, KEY, alg);
    json_decref(header);
    json_decref(claims);
    return t;
}

static void round_trip(enum jose_alg alg, const char *name)
{
    char *t = make_token(alg);
    CHECK(t != NULL);
    if (!t)
        return;
    char err[256] = "";
    CHECK_INT(jose_verify(t, KEY, err, sizeof err), 0);
    CHECK_STR(err, "");
    CHECK(raw_verify(t, KEY, alg == JOSE_PS256));
    CHECK(!raw_verify(t, KEY, alg != JOSE_PS256)); /* the other padding does not verify */

    json_t *h, *c;
    CHECK_INT(jose_decode(t, &h, &c, err, sizeof err), 0);
    CHECK_STR(json_string_value(json_object_get(h, "alg")), name);
    CHECK_STR(json_string_value(json_object_get(h, "typ")), "JWT");
    CHECK_STR(json_string_value(json_object_get(h, "kid")), "key-1");
    CHECK_STR(json_string_value(json_object_get(h, "x5t")), "abc");
    CHECK_STR(json_string_value(json_object_get(c, "sub")), "subject");
    CHECK_INT(json_integer_value(json_object_get(c, "exp")), 1700000000);
    CHECK(json_is_array(json_object_get(c, "roles")));
    json_decref(h);
    json_decref(c);
    free(t);
}

static void test_rs256_round_trip(void) { round_trip(JOSE_RS256, "RS256"); }
static void test_ps256_round_trip(void) { round_trip(JOSE_PS256, "PS256"); }

static void test_ps256_is_randomised(void)
{
    char *a = make_token(JOSE_PS256), *b = make_token(JOSE_PS256);
    char *c = make_token(JOSE_RS256), *d = make_token(JOSE_RS256);
    CHECK(strcmp(a, b) != 0); /* random salt */
    CHECK_STR(c, d);          /* PKCS#1 v1.5 is deterministic */
    free(a);
    free(b);
    free(c);
    free(d);
}

static void test_tampered_payload_fails(void)
{
    char *t = make_token(JOSE_RS256);
    const char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
    static const char evil[] = "{\"aud\":\"api://AzureADTokenExchange\",\"sub\":\"admin\"}";
    char *payload = crypto_b64url_encode((const unsigned char *)evil, sizeof evil - 1);
    size_t n = (size_t)(d1 - t) + 1 + strlen(payload) + strlen(d2) + 1;
    char *forged = malloc(n);
    snprintf(forged, n, "%.*s%s%s", (int)(d1 - t) + 1, t, payload, d2);
    char err[256];
    CHECK_INT(jose_verify(forged, KEY, err, sizeof err), -1);
    CHECK_STR(err, "RS256 signature does not match the key");
    CHECK(!raw_verify(forged, KEY, 0));
    /* one flipped signature character */
    char *flipped = strdup(t);
    size_t last = strlen(flipped) - 5;
    flipped[last] = flipped[last] == 'A' ? 'B' : 'A';
    CHECK_INT(jose_verify(flipped, KEY, err, sizeof err), -1);
    free(flipped);
    free(forged);
    free(payload);
    free(t);
}

static void test_wrong_key_fails(void)
{
    char *t = make_token(JOSE_PS256);
    char err[256];
    CHECK_INT(jose_verify(t, OTHER, err, sizeof err), -1);
    CHECK_STR(err, "PS256 signature does not match the key");
    free(t);
}

static char *token_of(const char *header_json, const char *payload_json, const char *sig)
{
    char *h = crypto_b64url_encode((const unsigned char *)header_json, strlen(header_json));
    char *p = crypto_b64url_encode((const unsigned char *)payload_json, strlen(payload_json));
    size_t n = strlen(h) + strlen(p) + strlen(sig) + 3;
    char *t = malloc(n);
    snprintf(t, n, "%s.%s.%s", h, p, sig);
    free(h);
    free(p);
    return t;
}

static void expect_error(const char *token, const char *want)
{
    char err[256] = "";
    CHECK_INT(jose_verify(token, KEY, err, sizeof err), -1);
    CHECK_STR(err, want);
}

static void test_malformed_tokens(void)
{
    expect_error("abc.def", "malformed token: expected three dot-separated parts");
    expect_error("a.b.c.d", "malformed token: expected three dot-separated parts");
    expect_error("", "malformed token: expected three dot-separated parts");
    expect_error("!!!.e30.AAAA", "malformed token: the header is not base64url");
    char *t = token_of("{\"alg\":\"RS256\"}", "{}", "AAAA");
    CHECK_INT(jose_verify(t, KEY, (char[256]){0}, 256), -1);
    free(t);
    t = token_of("not json", "{}", "AAAA");
    char err[256];
    CHECK_INT(jose_verify(t, KEY, err, sizeof err), -1);
    CHECK(strncmp(err, "malformed token: the header is not JSON", 39) == 0);
    free(t);
    t = token_of("[1]", "{}", "AAAA");
    expect_error(t, "malformed token: the header is not a JSON object");
    free(t);
    t = token_of("{\"typ\":\"JWT\"}", "{}", "AAAA");
    expect_error(t, "malformed token: the header has no \"alg\"");
    free(t);
    t = token_of("{\"alg\":\"none\"}", "{\"sub\":\"admin\"}", "");
    expect_error(t, "unsigned token (alg \"none\") rejected");
    free(t);
    t = token_of("{\"alg\":\"HS256\"}", "{}", "AAAA");
    expect_error(t, "unsupported token alg \"HS256\" (expected RS256 or PS256)");
    free(t);
    t = token_of("{\"alg\":\"RS256\"}", "{\"a\":", "AAAA");
    CHECK_INT(jose_verify(t, KEY, err, sizeof err), -1);
    CHECK(strncmp(err, "malformed token: the payload is not JSON", 40) == 0);
    free(t);
    t = token_of("{\"alg\":\"RS256\"}", "{}", "");
    expect_error(t, "malformed token: the signature is empty");
    free(t);
    t = token_of("{\"alg\":\"RS256\"}", "{}", "A+B/");
    expect_error(t, "malformed token: the signature is not base64url");
    free(t);
    json_t *h = NULL, *c = NULL;
    CHECK_INT(jose_decode("x.y", &h, &c, err, sizeof err), -1);
    CHECK(h == NULL && c == NULL);
}

static BIGNUM *modulus(EVP_PKEY *k)
{
    BIGNUM *n = NULL;
    EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &n);
    return n;
}

static void test_jwk_round_trip(void)
{
    json_t *jwk = jose_jwk_from_key(KEY);
    CHECK(jwk != NULL);
    CHECK_STR(json_string_value(json_object_get(jwk, "kty")), "RSA");
    CHECK_STR(json_string_value(json_object_get(jwk, "e")), "AQAB");
    CHECK_INT(strlen(json_string_value(json_object_get(jwk, "n"))), 342); /* 256 bytes */
    CHECK(json_object_get(jwk, "d") == NULL);                              /* public only */
    EVP_PKEY *back = jose_key_from_jwk(jwk);
    CHECK(back != NULL);
    BIGNUM *n1 = modulus(KEY), *n2 = modulus(back);
    CHECK(n1 && n2 && BN_cmp(n1, n2) == 0);
    BN_free(n1);
    BN_free(n2);
    CHECK_INT(EVP_PKEY_eq(KEY, back), 1);
    /* the public key from the JWK verifies tokens signed by the private key */
    char *t = make_token(JOSE_PS256);
    char err[256];
    CHECK_INT(jose_verify(t, back, err, sizeof err), 0);
    free(t);
    /* it cannot sign: a public key */
    json_t *claims = json_object();
    CHECK(jose_sign(NULL, claims, back, JOSE_RS256) == NULL);
    json_decref(claims);
    EVP_PKEY_free(back);

    /* not RSA, missing members, a toy modulus */
    json_object_set_new(jwk, "kty", json_string("EC"));
    CHECK(jose_key_from_jwk(jwk) == NULL);
    json_object_set_new(jwk, "kty", json_string("RSA"));
    json_object_set_new(jwk, "n", json_string("AQAB"));
    CHECK(jose_key_from_jwk(jwk) == NULL);
    json_object_del(jwk, "n");
    CHECK(jose_key_from_jwk(jwk) == NULL);
    json_decref(jwk);
    CHECK_INT(ERR_peek_error(), 0);
}

int main(void)
{
    KEY = crypto_rsa_generate(2048);
    OTHER = crypto_rsa_generate(2048);
    RUN(test_rs256_round_trip);
    RUN(test_ps256_round_trip);
    RUN(test_ps256_is_randomised);
    RUN(test_tampered_payload_fails);
    RUN(test_wrong_key_fails);
    RUN(test_malformed_tokens);
    RUN(test_jwk_round_trip);
    EVP_PKEY_free(KEY);
    EVP_PKEY_free(OTHER);
    DONE();
}
