/* lcrypto.c: cmkflow.core.crypto - UUIDs, digests, encodings, randomness, keys and certificates
 * for Lua. Environment or data failures (a bad PEM, a bad base64 text) return nil, err; misuse
 * raises. Messages never carry key material or passwords. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/x509.h>
#include "cmk.h"
#include "crypto.h"
#include "lcrypto.h"
#include "redact.h"

/* [-0, +1|2, e] crypto.rsa_generate(bits) -> key */
static int l_rsa_generate(lua_State *L)
{
    lua_Integer bits = luaL_checkinteger(L, 1);
    luaL_argcheck(L, bits == 2048 || bits == 3072 || bits == 4096, 1, "expected 2048, 3072 or 4096");
    EVP_PKEY **slot = lcrypto_push_key(L);
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
    EVP_PKEY **slot = lcrypto_push_key(L);
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
    if (!lcrypto_key_from_lua(L, 1, err, sizeof err)) {
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
    EVP_PKEY **slot = lcrypto_push_key(L);
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
    struct lcrypto_guard *g1 = lcrypto_push_guard(L), *g2 = lcrypto_push_guard(L), *g3 = lcrypto_push_guard(L);
    g1->p = s256;
    g2->p = sha1;
    g3->p = der;
    for (int i = 0; der && i < ncerts; i++) {
        struct lcrypto_guard *g = lcrypto_push_guard(L);
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
    int pss = lcrypto_check_sig_alg(L, 4);
    char err[256];
    EVP_PKEY *key = lcrypto_key_from_lua(L, 1, err, sizeof err);
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
    crypto_hex_encode(md, sizeof md, hex);
    lua_pushlstring(L, hex, 64);
    return 1;
}

static int encode_l(lua_State *L, int url, int pad)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    size_t n = crypto_b64_encoded_len(len, pad);
    char *out = luaL_buffinitsize(L, &b, n);
    crypto_b64_encode_to((const unsigned char *)s, len, out, url, pad);
    luaL_pushresultsize(&b, n);
    return 1;
}

static int decode_l(lua_State *L, int url)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    size_t n = crypto_b64_decoded_len(s, len, url);
    if (n == (size_t)-1) {
        lua_pushnil(L);
        lua_pushstring(L, url ? "invalid base64url" : "invalid base64");
        return 2;
    }
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, n);
    crypto_b64_decode_to(s, len, out, url);
    luaL_pushresultsize(&b, n);
    return 1;
}

/* [-0, +1, e] crypto.b64url_encode(s) -> unpadded base64url */
static int l_b64url_encode(lua_State *L) { return encode_l(L, 1, 0); }
/* [-0, +1|2, e] crypto.b64url_decode(s) -> bytes | nil, err */
static int l_b64url_decode(lua_State *L) { return decode_l(L, 1); }
/* [-0, +1, e] crypto.b64_encode(s) -> padded base64 */
static int l_b64_encode(lua_State *L) { return encode_l(L, 0, 1); }
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
    struct lcrypto_guard *g = lcrypto_push_guard(L);
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
    lcrypto_key_metatable(L);
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
