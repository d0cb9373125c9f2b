/* jose.c: compact JWS/JWT (RS256, PS256) over OpenSSL; claims and headers as jansson objects. */
#ifndef CMKFLOW_JOSE_H
#define CMKFLOW_JOSE_H
#include <jansson.h>
#include <openssl/evp.h>

enum jose_alg { JOSE_RS256, JOSE_PS256 };

/* JOSE_RS256 / JOSE_PS256 for "RS256" / "PS256"; -1 for anything else (including "none"). */
int jose_alg_from_name(const char *name);

/* Sign header+claims (the "alg" header is set from alg; "typ":"JWT" added when absent).
 * Returns the compact JWS (malloc'd; caller cleanses and frees), or NULL. */
char *jose_sign(json_t *header, json_t *claims, EVP_PKEY *key, enum jose_alg alg);

/* Split and decode without verifying. On success *header and *claims are new references
 * (both JSON objects; the header has a string "alg"). -1 with a reason in err otherwise. */
int jose_decode(const char *token, json_t **header, json_t **claims, char *err, size_t errlen);

/* Verify the signature (RS256 or PS256 as the header says) with pub. 0 when valid;
 * -1 with a reason in err otherwise. Does not check claims. */
int jose_verify(const char *token, EVP_PKEY *pub, char *err, size_t errlen);

/* Public key <-> JWK {"kty":"RSA","n","e"}: new reference / new key owned by the caller, or NULL.
 * jose_key_from_jwk ignores private members and accepts 1024..16384-bit moduli. */
json_t *jose_jwk_from_key(EVP_PKEY *key);
EVP_PKEY *jose_key_from_jwk(json_t *jwk);

#endif
