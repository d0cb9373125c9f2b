/* The crypto module: plain C over OpenSSL 3, no Lua.
 *   crypto_encode.c  base64, base64url, hex
 *   crypto_hash.c    randomness, SHA-256, UUIDs
 *   crypto_key.c     RSA keys, certificates, signatures, RSA-OAEP, OpenSSL's error queue
 * The key userdata and the Lua bindings are lcrypto.h (above jose, which uses this module). */
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

/* Write "prefix (<OpenSSL reasons>)" (or just prefix when the queue is empty) into err and clear
 * the queue. */
void crypto_openssl_reason(char *err, size_t errlen, const char *prefix);

/* 1 when the RSA key holds its private part. */
int crypto_key_has_private(EVP_PKEY *key);
/* Big-endian magnitude of an RSA parameter (OSSL_PKEY_PARAM_RSA_N, _E) into buf; its length or -1. */
int crypto_rsa_param(EVP_PKEY *key, const char *name, unsigned char *buf, size_t cap);

/* RSA-OAEP (RFC 8017 section 7.1). crypto_oaep_md: the digest of a JWA key-wrap algorithm name,
 * "RSA-OAEP" (SHA-1) or "RSA-OAEP-256"; 0, or -1 for another name. crypto_rsa_oaep encrypts
 * (decrypt = 0) or decrypts in[0..len) into out; *outlen holds out's capacity on entry and the
 * length on return. 0 on success, -1 on failure (the error queue is left for the caller). */
int crypto_oaep_md(const char *alg, const EVP_MD **md);
int crypto_rsa_oaep(EVP_PKEY *key, int decrypt, const EVP_MD *md, const unsigned char *in,
                    size_t len, unsigned char *out, size_t *outlen);

/* Building blocks of the encoders, for callers that write into their own memory (Lua buffers):
 * the encoded length; encode into out (no NUL; returns the length); the decoded length of a
 * valid text or (size_t)-1; decode a text that passed crypto_b64_decoded_len into out. url
 * selects the base64url alphabet. */
size_t crypto_b64_encoded_len(size_t len, int pad);
size_t crypto_b64_encode_to(const unsigned char *in, size_t len, char *out, int url, int pad);
size_t crypto_b64_decoded_len(const char *text, size_t len, int url);
void crypto_b64_decode_to(const char *text, size_t len, unsigned char *out, int url);
/* Lower-case hex of data; out must hold 2 * len + 1 bytes (NUL-terminated). */
void crypto_hex_encode(const unsigned char *data, size_t len, char *out);

#endif
