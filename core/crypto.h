/* crypto.c: randomness, digests, encodings, UUIDs, RSA keys and X.509 certificates (OpenSSL 3). */
#ifndef CMKFLOW_CRYPTO_H
#define CMKFLOW_CRYPTO_H
#include <stddef.h>
#include <stdint.h>
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
/* Standard base64 (with padding), same ownership rules. */
char *crypto_b64_encode(const unsigned char *data, size_t len);
unsigned char *crypto_b64_decode(const char *text, size_t text_len, size_t *out_len);

/* UUIDs in lower-case 8-4-4-4-12 form; out must hold 37 bytes. */
int crypto_uuid4(char out[37]);
/* RFC 4122 version 5 (SHA-1) of name in namespace ns (text form). Returns 0, or -1 for a bad namespace. */
int crypto_uuid5(const char *ns, const char *name, size_t name_len, char out[37]);
/* 1 when s is a GUID in 8-4-4-4-12 hex form (either case). */
int crypto_is_guid(const char *s);

/* RSA keys. Returned EVP_PKEY * are owned by the caller (EVP_PKEY_free). */
EVP_PKEY *crypto_rsa_generate(int bits);
/* Load a private key and its certificate from PEM text or a PKCS#12 blob (password may be NULL).
 * On failure returns -1 and writes a message (no secret material) to err. */
int crypto_load_credential_cert(const unsigned char *data, size_t len, const char *password,
                                EVP_PKEY **key, X509 **cert, STACK_OF(X509) **chain,
                                char *err, size_t errlen);
/* base64url SHA-256 (x5t#S256) / SHA-1 (x5t) thumbprints of the DER certificate; caller frees. */
char *crypto_cert_thumbprint_s256(X509 *cert);
char *crypto_cert_thumbprint_sha1(X509 *cert);
/* Standard base64 DER (an x5c entry); caller frees. */
char *crypto_cert_der_b64(X509 *cert);

/* Append OpenSSL's error queue to buf (bounded) and clear it. */
void crypto_drain_errors(char *buf, size_t len);

#endif
