/* cmkflow.core: the C primitives as one Lua module, for the host and for stock lua5.4. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <sqlite3.h>
#include "cmkflow.h"
#include "cmk.h"
#include "embedded.h"

/* [-1, +2, -] embedded_source(module) -> source, chunkname | nil */
static int core_embedded_source(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    for (const struct embedded_lua *e = embedded_lua_sources; e->module; e++) {
        if (strcmp(e->module, name) == 0) {
            lua_pushlstring(L, (const char *)e->source, e->len);
            lua_pushstring(L, e->chunkname);
            return 2;
        }
    }
    lua_pushnil(L);
    return 1;
}

/* [-1, +1, m] embedded_modules(prefix) -> the names of the embedded modules that start with prefix
 * ("workflows." lists the stock workflows: `cmkflow workflows`) */
static int core_embedded_modules(lua_State *L)
{
    size_t plen;
    const char *prefix = luaL_checklstring(L, 1, &plen);
    lua_newtable(L);
    lua_Integer n = 0;
    for (const struct embedded_lua *e = embedded_lua_sources; e->module; e++) {
        if (strncmp(e->module, prefix, plen) == 0) {
            lua_pushstring(L, e->module);
            lua_rawseti(L, -2, ++n);
        }
    }
    return 1;
}

/* [-1, +1, -] isatty(fd): is the descriptor a terminal (progress output is for people) */
static int core_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)) == 1);
    return 1;
}

/* [-0, +1, m] versions of cmkflow and the libraries it runs on */
static int core_versions(lua_State *L)
{
    lua_createtable(L, 0, 7);
    lua_pushliteral(L, CMKFLOW_VERSION);
    lua_setfield(L, -2, "cmkflow");
    lua_pushliteral(L, LUA_RELEASE);
    lua_setfield(L, -2, "lua");
    lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
    lua_setfield(L, -2, "libcurl");
    lua_pushstring(L, OpenSSL_version(OPENSSL_VERSION));
    lua_setfield(L, -2, "openssl");
    lua_pushstring(L, sqlite3_libversion());
    lua_setfield(L, -2, "sqlite");
    lua_pushstring(L, MHD_get_version());
    lua_setfield(L, -2, "libmicrohttpd");
    lua_pushliteral(L, JANSSON_VERSION);
    lua_setfield(L, -2, "jansson");
    return 1;
}

/* [-0, +1, -] monotonic_ms(): milliseconds of a clock that never goes back (the engine's). */
static int core_monotonic_ms(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    return 1;
}

/* [-0, +1, -] realtime_ms(): milliseconds since the epoch (the wall clock, sub-second: the
 * emulator's journal times what it draws with it; os.time() has whole seconds). */
static int core_realtime_ms(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    return 1;
}

static const struct {
    const char *name;
    lua_CFunction open;
} submodules[] = {
    {"error", luaopen_cmkflow_core_error},   {"json", luaopen_cmkflow_core_json},
    {"crypto", luaopen_cmkflow_core_crypto}, {"jose", luaopen_cmkflow_core_jose},
    {"http", luaopen_cmkflow_core_http},     {"auth", luaopen_cmkflow_core_auth},
    {"server", luaopen_cmkflow_core_server},
    {"store", luaopen_cmkflow_core_store},
    {"config", luaopen_cmkflow_core_config},
    {"keypool", luaopen_cmkflow_core_keypool},
    {"exit", luaopen_cmkflow_core_exit},
    {"fs", luaopen_cmkflow_core_fs},         {"limits", luaopen_cmkflow_core_limits},
    {"durable", luaopen_cmkflow_core_durable},
};

/* [-0, +1, e] require "cmkflow.core" */
int luaopen_cmkflow_core(lua_State *L)
{
#ifdef CMKFLOW_SANITIZE_PRELOAD
    /* Sanitizer builds only: the specs preload the sanitizer runtime into the uninstrumented
     * lua5.4 that loads this module. Its children (curl, sleep, the instrumented cmkflow) must not
     * inherit it: under a preloaded libasan, glibc's setlocale() deadlocks in curl and friends. */
    const char *preload = getenv("LD_PRELOAD");
    if (preload && *preload) {
        /* kept for the specs' own child lua5.4 processes (spec/support/files.lua: files.lua5_4) */
        setenv("CMKFLOW_SANITIZER_PRELOAD", preload, 1);
        unsetenv("LD_PRELOAD");
    }
#endif
    lua_newtable(L);
    for (size_t i = 0; i < sizeof submodules / sizeof submodules[0]; i++) {
        luaL_requiref(L, lua_pushfstring(L, "cmkflow.core.%s", submodules[i].name), submodules[i].open, 0);
        lua_setfield(L, -3, submodules[i].name);
        lua_pop(L, 1); /* the name */
    }
    lua_pushliteral(L, CMKFLOW_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushcfunction(L, core_embedded_source);
    lua_setfield(L, -2, "embedded_source");
    lua_pushcfunction(L, core_embedded_modules);
    lua_setfield(L, -2, "embedded_modules");
    lua_pushcfunction(L, core_isatty);
    lua_setfield(L, -2, "isatty");
    lua_pushcfunction(L, core_versions);
    lua_setfield(L, -2, "versions");
    lua_pushcfunction(L, core_monotonic_ms);
    lua_setfield(L, -2, "monotonic_ms");
    lua_pushcfunction(L, core_realtime_ms);
    lua_setfield(L, -2, "realtime_ms");
    return 1;
}
