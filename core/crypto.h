/* crypto.c: randomness, digests, encodings, UUIDs, RSA keys and X.509 certificates (OpenSSL 3). */
#ifndef CMKFLOW_CRYPTO_H
#define CMKFLOW_CRYPTO_H
#include <stddef.h>
#include <stdint.h>
#include <lua.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

/* Fill buf with n bytes from the OpenSSL CSPRNG. Returns 0 on success. */
int crypto_random(unsigned char *buf, size_t n);
/* out must hold 32 bytes. */
void crypto_sha256(const void *data, size_t len, unsigned char out[32]);

/* base64url without padding (RFC 4648 section 5). Returns malloc'd NUL-terminated text; caller frees. */
char *crypto_b64url_encode(const unsigned char *data, size_t len);
/* Accepts padded or unpadded input; rejects other alphabets. Returns malloc'd bytes
 * (NUL-terminated for convenience) and sets *out_len, or NULL on invalid input. Caller frees. */
unsigned char *crypto_b64url_decode(const char *text, size_t text_len, size_t *out_len);
/* Standard base64 (with padding), same ownership rules. Decoding accepts unpadded input too. */
char *crypto_b64_encode(const unsigned char *data, size_t len);
unsigned char *crypto_b64_decode(const char *text, size_t text_len, size_t *out_len);

/* UUIDs in lower-case 8-4-4-4-12 form; out must hold 37 bytes. Returns 0, or -1 when RAND fails. */
int crypto_uuid4(char out[37]);
/* RFC 4122 version 5 (SHA-1) of name in namespace ns (text form). Returns 0, or -1 for a bad namespace. */
int crypto_uuid5(const char *ns, const char *name, size_t name_len, char out[37]);
/* 1 when s is a GUID in 8-4-4-4-12 hex form (either case). */
int crypto_is_guid(const char *s);

/* RSA keys. Returned EVP_PKEY * are owned by the caller (EVP_PKEY_free). */
EVP_PKEY *crypto_rsa_generate(int bits);
/* A key from PEM text: a private key (PKCS#8, PKCS#1, encrypted with password), else a public
 * key (SPKI or PKCS#1), else a certificate's public key. NULL with a reason (never key material)
 * in err. Caller frees. */
EVP_PKEY *crypto_key_from_pem(const char *pem, size_t len, const char *password, char *err,
                              size_t errlen);
/* Load a private key and its certificate from PEM text or a PKCS#12 blob (password may be NULL).
 * The certificate returned is the one matching the key; others go to *chain (chain may be NULL).
 * On failure returns -1 and writes a message (no secret material) to err. Caller frees outputs. */
int crypto_load_credential_cert(const unsigned char *data, size_t len, const char *password,
                                EVP_PKEY **key, X509 **cert, STACK_OF(X509) **chain,
                                char *err, size_t errlen);
/* base64url SHA-256 (x5t#S256) / SHA-1 (x5t) thumbprints of the DER certificate; caller frees. */
char *crypto_cert_thumbprint_s256(X509 *cert);
char *crypto_cert_thumbprint_sha1(X509 *cert);
/* Standard base64 DER (an x5c entry); caller frees. */
char *crypto_cert_der_b64(X509 *cert);

/* RSA signatures over data: pss=0 RSASSA-PKCS1-v1_5 SHA-256 (RS256), pss=1 RSASSA-PSS SHA-256
 * with MGF1-SHA-256 and a 32-byte salt (PS256). sign: *siglen holds the capacity of sig on entry
 * (EVP_PKEY_get_size(key) suffices) and the length on return; 0 on success, -1 on failure.
 * verify: 1 valid, 0 invalid, -1 unusable key. Both leave OpenSSL's error queue empty. */
int crypto_sign(EVP_PKEY *key, int pss, const void *data, size_t len, unsigned char *sig,
                size_t *siglen);
int crypto_verify(EVP_PKEY *key, int pss, const void *data, size_t len, const unsigned char *sig,
                  size_t siglen);

/* Append OpenSSL's error queue to buf (bounded) and clear it. */
void crypto_drain_errors(char *buf, size_t len);

/* ---- the "cmkflow.key" userdata, for other modules' Lua bindings ---- */
#define CRYPTO_KEY_MT "cmkflow.key"
/* [-0, +1, m] Push a new empty key userdata; returns the slot to store the EVP_PKEY * in (the
 * userdata then owns it and frees it on __gc / __close). */
EVP_PKEY **crypto_push_key(lua_State *L);
/* [-0, +0, v] The key held by the "cmkflow.key" at idx; raises if it is not one or was closed. */
EVP_PKEY *crypto_check_key(lua_State *L, int idx);
/* [-0, +1, e] Resolve idx - a "cmkflow.key", PEM text (key, public key, certificate) or a JWK
 * table {kty="RSA", n, e} - to a key. Pushes the userdata owning it and returns the key; on a
 * malformed PEM/JWK pushes nil and returns NULL with a reason in err. Raises for other types. */
EVP_PKEY *crypto_lua_key(lua_State *L, int idx, char *err, size_t errlen);

/* Owns C memory while Lua calls that may raise are made (a raise would leak a local).
 * On __gc / __close: free_fn(p) when set, else OPENSSL_cleanse(p, len) and free(p). */
struct crypto_guard {
    void *p;
    size_t len;
    void (*free_fn)(void *);
};
/* [-0, +1, m] Push an empty guard userdata; fill it right after. */
struct crypto_guard *crypto_push_guard(lua_State *L);

#endif
