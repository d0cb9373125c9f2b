/* Fuzz harness: compact JWS/JWT parsing and verification (core/jose.c), as the emulator checks
 * client assertions and bearer tokens. Each input is a token: jose_decode and jose_verify (against
 * a fixed RSA key whose private half signed the corpus tokens and was thrown away), then
 * jose_key_from_jwk on a "jwk" member of the header or the claims. Findings are sanitizer reports
 * and broken promises of jose.h (decode succeeding without two objects and a string "alg"). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include "crypto.h"
#include "jose.h"

static const char VERIFY_KEY[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtibv590/VfYq94JlL1zN\n"
    "Kz0fWpzaEOCkFTRJqEcjHi4cu5+qWdjYCCFG/yhPec5sQS8+PIKyqI4OzAR/xb7k\n"
    "PMcFJ1yge25c0Jd/Ixc9oXMrB/I2EFY02oJ7o8+aYoUnCwxAOyvlWfMYGngsUyPg\n"
    "xYCEGUbfc7rquf5hBBCLUOmxc4ZabTq867HQk94FfUGg913/e28+Tp7/SvvL3ze5\n"
    "kD2to9KymJ3PEAO5zCfdDHSVHVBpXQm8wMSFC15CgF8GgNXzT4yjyChHxd1xqSZ9\n"
    "qebwdG53R9RyQGlh0fgiQXFSmHn45XpILjdIFl4ssj1M0EHlapNSiMUqs6K/DmPm\n"
    "kQIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

static EVP_PKEY *verify_key;

static void finding(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz jose: %s: %s\n", what, detail);
    abort();
}

/* A key from a "jwk" member: it must verify (or refuse) without trouble and turn back into a JWK. */
static void try_jwk(const char *token, json_t *holder)
{
    json_t *jwk = json_object_get(holder, "jwk");
    if (!jwk)
        return;
    EVP_PKEY *key = jose_key_from_jwk(jwk);
    if (!key)
        return;
    char err[256];
    (void)jose_verify(token, key, err, sizeof err);
    json_t *back = jose_jwk_from_key(key);
    if (!back)
        finding("a key read from a JWK does not write back", "jose_jwk_from_key");
    json_decref(back);
    EVP_PKEY_free(key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!verify_key) {
        char err[256];
        verify_key = crypto_key_from_pem(VERIFY_KEY, sizeof VERIFY_KEY - 1, NULL, err, sizeof err);
        if (!verify_key)
            finding("the verification key does not load", err);
    }
    char *token = malloc(size + 1); /* tokens reach jose.c as C strings (Lua's, MHD's) */
    if (!token)
        return 0;
    memcpy(token, data, size);
    token[size] = 0;

    char err[256] = "";
    json_t *header = NULL, *claims = NULL;
    if (jose_decode(token, &header, &claims, err, sizeof err) == 0) {
        if (!json_is_object(header) || !json_is_object(claims) ||
            !json_is_string(json_object_get(header, "alg")))
            finding("jose_decode succeeded without two objects and a string alg", token);
        try_jwk(token, header);
        try_jwk(token, claims);
    } else if (!err[0] || header || claims) {
        finding("jose_decode failed without a reason, or left references behind", token);
    }
    json_decref(header);
    json_decref(claims);

    err[0] = 0;
    int rc = jose_verify(token, verify_key, err, sizeof err);
    if (rc != 0 && !err[0])
        finding("jose_verify failed without a reason", token);
    free(token);
    return 0;
}
