/*
 * certgen.c: throw-away X.509 material for the test server and the emulator (OpenSSL 3).
 *
 * Keys are EC P-256 (fast to generate, fast TLS handshakes; GnuTLS, OpenSSL and libcurl all accept
 * them), signatures ECDSA-SHA256, serials 128-bit random.
 *   CA:   subject CN=<cn>, O=cmkflow test; valid now-1h .. now+10y; basicConstraints CA:TRUE
 *         (critical), keyUsage keyCertSign+cRLSign (critical), subjectKeyIdentifier.
 *   leaf: subject CN=<first DNS name>; valid now-1h .. now+2y; subjectAltName DNS+IP,
 *         extendedKeyUsage serverAuth, basicConstraints CA:FALSE (critical), keyUsage
 *         digitalSignature (critical), subject/authorityKeyIdentifier.
 * Private keys are unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY").
 */
#ifndef CMKFLOW_CERTGEN_H
#define CMKFLOW_CERTGEN_H
#include <stddef.h>

/* Make a self-signed CA. cn may be NULL ("cmkflow test CA"). On success returns 0 and sets
 * *cert_pem and *key_pem to malloc'd NUL-terminated PEM; the caller frees both (the key with
 * OPENSSL_cleanse first). On failure returns -1, sets both to NULL and leaves OpenSSL's error
 * queue for certgen_last_error. */
int certgen_make_ca(const char *cn, char **cert_pem, char **key_pem);

/* Make a server certificate signed by the CA for the names the caller gives (certgen knows no
 * host names: the emulator's come from the cloud table, see core.server.default_names).
 * dns_names and ip_addrs are NULL-terminated arrays (either may be NULL; together at least one
 * name). IP addresses are IPv4 or IPv6 literals.
 * Ownership and failure as for certgen_make_ca; -1 also for a bad IP literal or CA PEM. */
int certgen_make_server(const char *ca_cert_pem, const char *ca_key_pem,
                        const char *const *dns_names, const char *const *ip_addrs,
                        char **cert_pem, char **key_pem);

/* Write the reason for the last failure (OpenSSL's error queue, bounded) into buf and clear the
 * queue. Never contains key material. */
void certgen_last_error(char *buf, size_t len);


#endif
