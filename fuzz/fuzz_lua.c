/* fuzz_lua.c: the libFuzzer entry of the Lua-level harnesses. Built once per harness with
 * FUZZ_HARNESS = its name: fuzz/<name>.lua returns the function each input is given to, in a
 * state set up as the server's own (core/server.c load_handler: the standard libraries, the
 * embedded modules with CMKFLOW_LUA_PATH first, cmkflow.core). A raise out of that function is
 * a finding: its traceback goes to stderr and the process aborts, so libFuzzer keeps the input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <lauxlib.h>
#include <lualib.h>
#include "cmk.h"

static lua_State *L;
static int harness_ref = LUA_NOREF;

/* Lua code is not instrumented: a line hook gives libFuzzer its coverage, AFL-style, as edges
 * between consecutive lines (chunk, line) hashed into extra counters that libFuzzer reads along
 * with the C code's own. */
#define LUA_EDGES 65536
__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_edges[LUA_EDGES];
static uintptr_t previous_line;

static void line_hook(lua_State *H, lua_Debug *ar)
{
    if (!lua_getinfo(H, "S", ar))
        return;
    uintptr_t here = ((uintptr_t)ar->source * 2654435761u) ^ ((uintptr_t)ar->currentline * 40503u);
    uint8_t *c = &lua_edges[(here ^ previous_line) % LUA_EDGES];
    if (*c < 255)
        (*c)++;
    previous_line = here >> 1;
}

static void die(const char *what)
{
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "fuzz %s: %s: %s\n", FUZZ_HARNESS, what, msg ? msg : "(an error table)");
    abort();
}

/* libFuzzer ends with exit(): close the state first, as the server does, so that what it owns
 * stops cleanly (the emulator's key pool joins its generator thread) before OpenSSL's own atexit
 * cleanup, registered earlier, runs. */
static void close_state(void)
{
    if (L)
        lua_close(L);
    L = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    L = luaL_newstate();
    if (!L)
        abort();
    luaL_openlibs(L);
    host_install_searcher(L);
    /* the harnesses' own modules (pooled_keys) sit next to them */
    lua_getglobal(L, "package");
    lua_pushliteral(L, FUZZ_DIR "/?.lua");
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    lua_pushcfunction(L, cmk_msghandler);
    if (luaL_loadfile(L, FUZZ_DIR "/" FUZZ_HARNESS ".lua") != LUA_OK ||
        lua_pcall(L, 0, 1, 1) != LUA_OK)
        die("loading " FUZZ_DIR "/" FUZZ_HARNESS ".lua");
    if (!lua_isfunction(L, -1)) {
        lua_pushliteral(L, "it must return a function");
        die(FUZZ_HARNESS ".lua");
    }
    harness_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    lua_sethook(L, line_hook, LUA_MASKLINE, 0); /* threads made from now on inherit it */
    atexit(close_state);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_settop(L, 0);
    previous_line = 0;
    lua_pushcfunction(L, cmk_msghandler);
    lua_rawgeti(L, LUA_REGISTRYINDEX, harness_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 1) != LUA_OK)
        die("finding");
    lua_settop(L, 0);
    /* what the input allocated is freed before the next one: libFuzzer's leak check (LSan after
     * any input whose mallocs and frees do not balance) stays quiet and cheap */
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
