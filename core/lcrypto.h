/*
 * lcrypto: the crypto module's Lua side (above crypto and jose).
 *   lcrypto_key.c  the "cmkflow.key" userdata and its methods; the guard userdata
 *   lcrypto.c      cmkflow.core.crypto
 * Other modules' Lua bindings (ljose.c, keypool.c) use these helpers.
 */
#ifndef CMKFLOW_LCRYPTO_H
#define CMKFLOW_LCRYPTO_H
#include <stddef.h>
#include <lua.h>
#include <openssl/evp.h>

#define LCRYPTO_KEY_MT "cmkflow.key"

/* [-0, +1, m] The "cmkflow.key" metatable, created on first use in this state. */
void lcrypto_key_metatable(lua_State *L);
/* [-0, +1, m] Push a new empty key userdata; returns the slot to store the EVP_PKEY * in (the
 * userdata then owns it and frees it on __gc / __close). */
EVP_PKEY **lcrypto_push_key(lua_State *L);
/* [-0, +0, v] The key held by the "cmkflow.key" at idx; raises if it is not one or was closed. */
EVP_PKEY *lcrypto_check_key(lua_State *L, int idx);
/* [-0, +1, e] Resolve idx - a "cmkflow.key", PEM text (key, public key, certificate) or a JWK
 * table {kty="RSA", n, e} - to a key. Pushes the userdata owning it and returns the key; on a
 * malformed PEM/JWK pushes nil and returns NULL with a reason in err. Raises for other types. */
EVP_PKEY *lcrypto_key_from_lua(lua_State *L, int idx, char *err, size_t errlen);
/* [-0, +0, v] 0 for "RS256", 1 for "PS256" at idx; raises otherwise. */
int lcrypto_check_sig_alg(lua_State *L, int idx);

/* Owns C memory while Lua calls that may raise are made (a raise would leak a local).
 * On __gc / __close: free_fn(p) when set, else OPENSSL_cleanse(p, len) and free(p). */
struct lcrypto_guard {
    void *p;
    size_t len;
    void (*free_fn)(void *);
};
/* [-0, +1, m] Push an empty guard userdata; fill it right after. */
struct lcrypto_guard *lcrypto_push_guard(lua_State *L);

#endif
