/* lcrypto_key.c: the "cmkflow.key" userdata (an EVP_PKEY it owns) with its methods, and the
 * guard userdata that owns C memory across Lua calls that may raise (lcrypto.h). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include "cmk.h"
#include "crypto.h"
#include "jose.h"
#include "json.h"
#include "lcrypto.h"

#define GUARD_MT "cmkflow.crypto.guard"
#define MAX_RSA_BYTES 2048 /* 16384-bit keys; larger ones are refused */

struct key_ud {
    EVP_PKEY *pkey;
};

/* [-0, +0, -] __gc / __close of a guard */
static int guard_gc(lua_State *L)
{
    struct lcrypto_guard *g = luaL_checkudata(L, 1, GUARD_MT);
    if (g->p && g->free_fn) {
        g->free_fn(g->p);
    } else if (g->p) {
        OPENSSL_cleanse(g->p, g->len);
        free(g->p);
    }
    g->p = NULL;
    return 0;
}

struct lcrypto_guard *lcrypto_push_guard(lua_State *L)
{
    struct lcrypto_guard *g = lua_newuserdatauv(L, sizeof *g, 0);
    memset(g, 0, sizeof *g);
    if (luaL_newmetatable(L, GUARD_MT)) {
        lua_pushcfunction(L, guard_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, guard_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    return g;
}

/* [-0, +0, -] key __gc / __close */
static int key_gc(lua_State *L)
{
    struct key_ud *k = luaL_checkudata(L, 1, LCRYPTO_KEY_MT);
    EVP_PKEY_free(k->pkey);
    k->pkey = NULL;
    return 0;
}

EVP_PKEY *lcrypto_check_key(lua_State *L, int idx)
{
    struct key_ud *k = luaL_checkudata(L, idx, LCRYPTO_KEY_MT);
    if (!k->pkey)
        luaL_argerror(L, idx, "key has been closed");
    return k->pkey;
}

/* [-0, +1, m] key:bits() -> integer */
static int key_bits(lua_State *L)
{
    lua_pushinteger(L, EVP_PKEY_get_bits(lcrypto_check_key(L, 1)));
    return 1;
}

/* [-0, +1, m] key:has_private() -> boolean */
static int key_has_private_l(lua_State *L)
{
    lua_pushboolean(L, crypto_key_has_private(lcrypto_check_key(L, 1)));
    return 1;
}

/* [-0, +1, m] __tostring: "cmkflow.key (RSA 2048, private)" - never key material */
static int key_tostring(lua_State *L)
{
    struct key_ud *k = luaL_checkudata(L, 1, LCRYPTO_KEY_MT);
    if (!k->pkey)
        lua_pushliteral(L, "cmkflow.key (closed)");
    else
        lua_pushfstring(L, "cmkflow.key (RSA %d, %s)", EVP_PKEY_get_bits(k->pkey),
                        crypto_key_has_private(k->pkey) ? "private" : "public");
    return 1;
}

/* Write the key to PEM through a secure-memory BIO and push the text. */
static int push_pem(lua_State *L, EVP_PKEY *key, int private_part)
{
    struct lcrypto_guard *g = lcrypto_push_guard(L);
    BIO *bio = BIO_new(BIO_s_secmem());
    int ok = bio && (private_part ? PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)
                                  : PEM_write_bio_PUBKEY(bio, key)) == 1;
    char *p = NULL;
    long n = ok ? BIO_get_mem_data(bio, &p) : 0;
    if (ok && n > 0 && (g->p = malloc((size_t)n)) != NULL) {
        memcpy(g->p, p, (size_t)n);
        g->len = (size_t)n;
    }
    BIO_free(bio);
    ERR_clear_error();
    if (!g->p)
        return luaL_error(L, "cannot write the key as PEM");
    lua_pushlstring(L, g->p, g->len);
    lua_remove(L, -2);
    return 1;
}

/* [-0, +1, e] key:public_pem() -> SPKI PEM text */
static int key_public_pem(lua_State *L) { return push_pem(L, lcrypto_check_key(L, 1), 0); }

/* [-0, +1, e] key:private_pem() -> unencrypted PKCS#8 PEM (the emulator's own keys) */
static int key_private_pem(lua_State *L)
{
    EVP_PKEY *key = lcrypto_check_key(L, 1);
    if (!crypto_key_has_private(key))
        return luaL_error(L, "key:private_pem(): this is a public key");
    return push_pem(L, key, 1);
}

static void push_b64url(lua_State *L, const unsigned char *data, size_t len)
{
    luaL_Buffer b;
    size_t n = crypto_b64_encoded_len(len, 0);
    char *out = luaL_buffinitsize(L, &b, n);
    crypto_b64_encode_to(data, len, out, 1, 0);
    luaL_pushresultsize(&b, n);
}

/* [-0, +1, e] key:jwk() -> {kty="RSA", n=b64url, e=b64url} (public part only) */
static int key_jwk(lua_State *L)
{
    EVP_PKEY *key = lcrypto_check_key(L, 1);
    unsigned char n[MAX_RSA_BYTES], e[16];
    int nlen = crypto_rsa_param(key, OSSL_PKEY_PARAM_RSA_N, n, sizeof n);
    int elen = crypto_rsa_param(key, OSSL_PKEY_PARAM_RSA_E, e, sizeof e);
    if (nlen <= 0 || elen <= 0)
        return luaL_error(L, "key:jwk(): not an RSA key");
    lua_createtable(L, 0, 3);
    lua_pushliteral(L, "RSA");
    lua_setfield(L, -2, "kty");
    push_b64url(L, n, (size_t)nlen);
    lua_setfield(L, -2, "n");
    push_b64url(L, e, (size_t)elen);
    lua_setfield(L, -2, "e");
    luaL_getmetatable(L, JSON_OBJECT_MT);
    if (lua_istable(L, -1))
        lua_setmetatable(L, -2);
    else
        lua_pop(L, 1);
    return 1;
}

int lcrypto_check_sig_alg(lua_State *L, int idx)
{
    static const char *const algs[] = {"RS256", "PS256", NULL};
    return luaL_checkoption(L, idx, NULL, algs); /* 0 RS256, 1 PS256 */
}

/* [-0, +1, e] key:sign(data, "RS256"|"PS256") -> signature bytes */
static int key_sign(lua_State *L)
{
    EVP_PKEY *key = lcrypto_check_key(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    int pss = lcrypto_check_sig_alg(L, 3);
    if (!crypto_key_has_private(key))
        return luaL_argerror(L, 1, "signing needs a private key");
    unsigned char sig[MAX_RSA_BYTES];
    size_t siglen = sizeof sig;
    if (EVP_PKEY_get_size(key) > (int)sizeof sig || crypto_sign(key, pss, data, len, sig, &siglen) != 0)
        return luaL_error(L, "key:sign(): signing failed");
    lua_pushlstring(L, (const char *)sig, siglen);
    return 1;
}

/* [-0, +1|2, e] key:wrap(plaintext, "RSA-OAEP"|"RSA-OAEP-256") -> ciphertext | nil, err */
static int key_wrap(lua_State *L)
{
    EVP_PKEY *key = lcrypto_check_key(L, 1);
    size_t len;
    const char *pt = luaL_checklstring(L, 2, &len);
    const EVP_MD *md;
    if (crypto_oaep_md(luaL_checkstring(L, 3), &md) != 0)
        return luaL_argerror(L, 3, "expected \"RSA-OAEP\" or \"RSA-OAEP-256\"");
    int k = EVP_PKEY_get_size(key);
    int max = k - 2 * EVP_MD_get_size(md) - 2;
    if (k > MAX_RSA_BYTES)
        return luaL_argerror(L, 1, "key too large");
    if ((long long)len > max)
        return luaL_error(L, "key:wrap(): %d bytes is more than %s with a %d-bit key can carry (%d)",
                          (int)(len > INT_MAX ? INT_MAX : len), lua_tostring(L, 3),
                          EVP_PKEY_get_bits(key), max);
    unsigned char out[MAX_RSA_BYTES];
    size_t outlen = sizeof out;
    int ok = crypto_rsa_oaep(key, 0, md, (const unsigned char *)pt, len, out, &outlen) == 0;
    if (!ok) {
        char err[256];
        crypto_openssl_reason(err, sizeof err, "RSA-OAEP encryption failed");
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushlstring(L, (const char *)out, outlen);
    return 1;
}

/* [-0, +1|2, e] key:unwrap(ciphertext, alg) -> plaintext | nil, err */
static int key_unwrap(lua_State *L)
{
    EVP_PKEY *key = lcrypto_check_key(L, 1);
    size_t len;
    const char *ct = luaL_checklstring(L, 2, &len);
    const EVP_MD *md;
    if (crypto_oaep_md(luaL_checkstring(L, 3), &md) != 0)
        return luaL_argerror(L, 3, "expected \"RSA-OAEP\" or \"RSA-OAEP-256\"");
    if (!crypto_key_has_private(key))
        return luaL_argerror(L, 1, "unwrapping needs a private key");
    if (EVP_PKEY_get_size(key) > MAX_RSA_BYTES)
        return luaL_argerror(L, 1, "key too large");
    unsigned char out[MAX_RSA_BYTES];
    size_t outlen = sizeof out;
    int ok = crypto_rsa_oaep(key, 1, md, (const unsigned char *)ct, len, out, &outlen) == 0;
    ERR_clear_error(); /* the reason would only help an oracle */
    if (!ok) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s decryption failed (wrong key, algorithm or corrupt ciphertext)",
                        lua_tostring(L, 3));
        return 2;
    }
    /* copy into a guard so the stack copy can be cleansed before a possible raise */
    struct lcrypto_guard *g = lcrypto_push_guard(L);
    g->p = malloc(outlen ? outlen : 1);
    if (g->p) {
        memcpy(g->p, out, outlen);
        g->len = outlen;
    }
    OPENSSL_cleanse(out, sizeof out);
    if (!g->p)
        return luaL_error(L, "out of memory");
    lua_pushlstring(L, g->p, g->len);
    return 1;
}

static const luaL_Reg key_methods[] = {
    {"bits", key_bits},
    {"has_private", key_has_private_l},
    {"public_pem", key_public_pem},
    {"private_pem", key_private_pem},
    {"jwk", key_jwk},
    {"sign", key_sign},
    {"wrap", key_wrap},
    {"unwrap", key_unwrap},
    {"close", key_gc},
    {NULL, NULL},
};

/* [-0, +1, m] the "cmkflow.key" metatable, created on first use in this state */
void lcrypto_key_metatable(lua_State *L)
{
    if (luaL_newmetatable(L, LCRYPTO_KEY_MT)) {
        lua_pushcfunction(L, key_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, key_gc);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, key_tostring);
        lua_setfield(L, -2, "__tostring");
        luaL_newlib(L, key_methods);
        lua_setfield(L, -2, "__index");
    }
}

EVP_PKEY **lcrypto_push_key(lua_State *L)
{
    struct key_ud *k = lua_newuserdatauv(L, sizeof *k, 0);
    k->pkey = NULL;
    lcrypto_key_metatable(L);
    lua_setmetatable(L, -2);
    return &k->pkey;
}

EVP_PKEY *lcrypto_key_from_lua(lua_State *L, int idx, char *err, size_t errlen)
{
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TUSERDATA: {
        EVP_PKEY *key = lcrypto_check_key(L, idx);
        lua_pushvalue(L, idx);
        return key;
    }
    case LUA_TSTRING: {
        size_t len;
        const char *pem = lua_tolstring(L, idx, &len);
        EVP_PKEY **slot = lcrypto_push_key(L);
        *slot = crypto_key_from_pem(pem, len, NULL, err, errlen);
        if (!*slot) {
            lua_pop(L, 1);
            lua_pushnil(L);
        }
        return *slot;
    }
    case LUA_TTABLE: {
        EVP_PKEY **slot = lcrypto_push_key(L);
        json_t *jwk = json_from_lua(L, idx, err, errlen);
        if (jwk) {
            *slot = jose_key_from_jwk(jwk);
            json_decref(jwk);
            if (!*slot)
                snprintf(err, errlen, "JWK: not an RSA public key {kty=\"RSA\", n, e}");
        }
        if (!*slot) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return NULL;
        }
        return *slot;
    }
    default:
        luaL_typeerror(L, idx, "cmkflow.key, PEM text or JWK table");
        return NULL;
    }
}
