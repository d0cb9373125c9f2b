/*
 * keypool.c: RSA keys generated ahead of time on a background thread, so that the emulator's
 * request thread never stalls for a 4096-bit key generation (hundreds of ms to seconds).
 *
 * Lua view (cmkflow.core.keypool):
 *   pool = keypool.new{ [2048] = 4, [3072] = 4, [4096] = 2 }   -- target stock per size
 *   key = pool:take(bits)   -- a "cmkflow.key" from the stock, or generated inline when empty
 *   pool:stats() -> { [bits] = {ready = n, taken = n, inline = n} }
 *   pool:close()            -- also __gc/__close: stops and joins the thread, frees the stock
 * The pool is a userdata owned by the Lua state that made it; its thread touches only the pool's
 * own queue (under its mutex), never Lua.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include "cmk.h"
#include "crypto.h"
#include "lcrypto.h"

#define KEYPOOL_MT "cmkflow.keypool"
#define KEYPOOL_SIZES 3
#define KEYPOOL_MAX 64

static const int SIZES[KEYPOOL_SIZES] = {2048, 3072, 4096};

struct keypool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int started, stopping;
    int target[KEYPOOL_SIZES];
    int ready[KEYPOOL_SIZES];
    long taken[KEYPOOL_SIZES], inline_made[KEYPOOL_SIZES];
    EVP_PKEY *stock[KEYPOOL_SIZES][KEYPOOL_MAX];
};

static int size_index(int bits)
{
    for (int i = 0; i < KEYPOOL_SIZES; i++)
        if (SIZES[i] == bits)
            return i;
    return -1;
}

/* The size most short of its target, or -1 when every stock is full. Caller holds mu. */
static int neediest(const struct keypool *p)
{
    int best = -1, gap = 0;
    for (int i = 0; i < KEYPOOL_SIZES; i++) {
        int g = p->target[i] - p->ready[i];
        if (g > gap) {
            gap = g;
            best = i;
        }
    }
    return best;
}

static void *keypool_thread(void *arg)
{
    struct keypool *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        int i = neediest(p);
        if (i < 0) {
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
        EVP_PKEY *key = crypto_rsa_generate(SIZES[i]); /* the slow part, outside the lock */
        pthread_mutex_lock(&p->mu);
        if (!key)
            continue; /* out of entropy or memory: try again on the next round */
        if (p->stopping || p->ready[i] >= KEYPOOL_MAX) {
            EVP_PKEY_free(key);
            continue;
        }
        p->stock[i][p->ready[i]++] = key;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void keypool_stop(struct keypool *p)
{
    if (!p->started)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    p->started = 0;
    for (int i = 0; i < KEYPOOL_SIZES; i++) {
        while (p->ready[i] > 0)
            EVP_PKEY_free(p->stock[i][--p->ready[i]]);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

static struct keypool *check_pool(lua_State *L)
{
    struct keypool *p = luaL_checkudata(L, 1, KEYPOOL_MT);
    if (!p->started)
        luaL_error(L, "key pool is closed");
    return p;
}

/* [-1, +1, e] keypool.new{[bits] = count, ...} */
static int keypool_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int target[KEYPOOL_SIZES] = {0};
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        int bits = lua_isinteger(L, -2) ? (int)lua_tointeger(L, -2) : -1;
        int i = size_index(bits);
        if (i < 0)
            return luaL_error(L, "keypool.new: key sizes are 2048, 3072 or 4096");
        lua_Integer n = luaL_checkinteger(L, -1);
        if (n < 0 || n > KEYPOOL_MAX)
            return luaL_error(L, "keypool.new: stock for %d bits must be 0..%d", bits, KEYPOOL_MAX);
        target[i] = (int)n;
        lua_pop(L, 1);
    }
    struct keypool *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    luaL_setmetatable(L, KEYPOOL_MT);
    memcpy(p->target, target, sizeof target);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->thread, NULL, keypool_thread, p) != 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        return luaL_error(L, "keypool.new: cannot start the generator thread");
    }
    p->started = 1;
    return 1;
}

/* [-2, +1, e] pool:take(bits) -> key */
static int keypool_take(lua_State *L)
{
    struct keypool *p = check_pool(L);
    int bits = (int)luaL_checkinteger(L, 2);
    int i = size_index(bits);
    luaL_argcheck(L, i >= 0, 2, "key size must be 2048, 3072 or 4096");
    EVP_PKEY **slot = lcrypto_push_key(L); /* the userdata owns whatever we put here */
    pthread_mutex_lock(&p->mu);
    EVP_PKEY *key = p->ready[i] > 0 ? p->stock[i][--p->ready[i]] : NULL;
    if (key)
        p->taken[i]++;
    pthread_cond_signal(&p->cv); /* refill */
    pthread_mutex_unlock(&p->mu);
    if (!key) {
        key = crypto_rsa_generate(bits);
        if (!key)
            return luaL_error(L, "keypool: RSA key generation failed");
        pthread_mutex_lock(&p->mu);
        p->inline_made[i]++;
        pthread_mutex_unlock(&p->mu);
    }
    *slot = key;
    return 1;
}

/* [-1, +1, m] pool:stats() */
static int keypool_stats(lua_State *L)
{
    struct keypool *p = check_pool(L);
    lua_newtable(L);
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < KEYPOOL_SIZES; i++) {
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, p->ready[i]);
        lua_setfield(L, -2, "ready");
        lua_pushinteger(L, p->taken[i]);
        lua_setfield(L, -2, "taken");
        lua_pushinteger(L, p->inline_made[i]);
        lua_setfield(L, -2, "inline");
        lua_rawseti(L, -2, SIZES[i]);
    }
    pthread_mutex_unlock(&p->mu);
    return 1;
}

/* [-1, +0, -] pool:close(), __gc, __close */
static int keypool_close(lua_State *L)
{
    keypool_stop(luaL_checkudata(L, 1, KEYPOOL_MT));
    return 0;
}

int luaopen_cmkflow_core_keypool(lua_State *L)
{
    static const luaL_Reg methods[] = {{"take", keypool_take}, {"stats", keypool_stats}, {"close", keypool_close},
                                       {NULL, NULL}};
    static const luaL_Reg fns[] = {{"new", keypool_new}, {NULL, NULL}};
    if (luaL_newmetatable(L, KEYPOOL_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, keypool_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, keypool_close);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
