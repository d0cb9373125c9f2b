/* ljose.c: cmkflow.core.jose - jose.c's JWS functions for Lua (sign with a "cmkflow.key",
 * decode, verify with a key, PEM or JWK). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cmk.h"
#include "jose.h"
#include "json.h"
#include "lcrypto.h"

static void json_release(void *p) { json_decref((json_t *)p); }

/* [-(2|3), +1, e] jose.sign(claims, key [, {alg="RS256"|"PS256", header={kid=, x5t=, ...}}])
 * -> compact JWS. Raises for misuse (claims that are not JSON, a public key, an unknown alg). */
static int l_sign(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    EVP_PKEY *key = lcrypto_check_key(L, 2);
    lua_settop(L, 3);
    int alg = JOSE_RS256;
    if (!lua_isnil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "alg"); /* 4 */
        if (!lua_isnil(L, 4)) {
            alg = jose_alg_from_name(lua_tostring(L, 4));
            luaL_argcheck(L, alg >= 0, 3, "alg must be \"RS256\" or \"PS256\"");
        }
        lua_getfield(L, 3, "header"); /* 5 */
        if (!lua_isnil(L, 5))
            luaL_argcheck(L, lua_istable(L, 5), 3, "header must be a table");
    } else {
        lua_pushnil(L);
        lua_pushnil(L);
    }
    struct lcrypto_guard *gh = lcrypto_push_guard(L); /* 6 */
    gh->free_fn = json_release;
    struct lcrypto_guard *gc = lcrypto_push_guard(L); /* 7 */
    gc->free_fn = json_release;
    struct lcrypto_guard *gt = lcrypto_push_guard(L); /* 8: the token */
    char err[256];
    if (!lua_isnil(L, 5)) {
        gh->p = json_from_lua(L, 5, err, sizeof err);
        if (!gh->p)
            return luaL_error(L, "jose.sign: header: %s", err);
        if (!json_is_object((json_t *)gh->p))
            return luaL_error(L, "jose.sign: header must be a JSON object");
    }
    gc->p = json_from_lua(L, 1, err, sizeof err);
    if (!gc->p)
        return luaL_error(L, "jose.sign: claims: %s", err);
    gt->p = jose_sign(gh->p, gc->p, key, (enum jose_alg)alg);
    if (!gt->p)
        return luaL_error(L, "jose.sign: signing failed (is it a private RSA key?)");
    gt->len = strlen(gt->p);
    lua_pushlstring(L, gt->p, gt->len);
    return 1;
}

/* [-1, +2, e] jose.decode(token) -> header, claims | nil, err (no verification) */
static int l_decode(lua_State *L)
{
    const char *token = luaL_checkstring(L, 1);
    struct lcrypto_guard *gh = lcrypto_push_guard(L);
    gh->free_fn = json_release;
    struct lcrypto_guard *gc = lcrypto_push_guard(L);
    gc->free_fn = json_release;
    char err[256];
    json_t *h, *c;
    if (jose_decode(token, &h, &c, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    gh->p = h;
    gc->p = c;
    json_to_lua(L, h);
    json_to_lua(L, c);
    return 2;
}

/* [-2, +1|2, e] jose.verify(token, key | jwk | pem) -> claims | nil, err (signature only) */
static int l_verify(lua_State *L)
{
    const char *token = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    char err[256];
    EVP_PKEY *key = lcrypto_key_from_lua(L, 2, err, sizeof err); /* pushes its owner */
    if (!key) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    if (jose_verify(token, key, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    struct lcrypto_guard *gh = lcrypto_push_guard(L);
    gh->free_fn = json_release;
    struct lcrypto_guard *gc = lcrypto_push_guard(L);
    gc->free_fn = json_release;
    json_t *h, *c;
    if (jose_decode(token, &h, &c, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    gh->p = h;
    gc->p = c;
    json_to_lua(L, c);
    return 1;
}

/* [-0, +1, e] require "cmkflow.core.jose" */
int luaopen_cmkflow_core_jose(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"sign", l_sign},
        {"decode", l_decode},
        {"verify", l_verify},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
