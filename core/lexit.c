/* lexit.c: cmkflow.core.exit - the exit codes of enum cmkflow_status as a read-only Lua table, so
 * the codes are defined once (core/include/cmkflow.h) for C and Lua alike. */
#include "cmkflow.h"
#include "cmk.h"

static const struct {
    const char *name;
    enum cmkflow_status code;
} codes[] = {
    {"ok", CMKFLOW_OK},           {"failed", CMKFLOW_FAILED},
    {"usage", CMKFLOW_USAGE},     {"auth", CMKFLOW_AUTH},
    {"waiting", CMKFLOW_WAITING}, {"unverified", CMKFLOW_UNVERIFIED}, {"interrupted", CMKFLOW_INTERRUPTED},
    {"terminated", CMKFLOW_TERMINATED},
};

/* [-3, +0, v] __newindex: the table is read-only */
static int exit_newindex(lua_State *L)
{
    return luaL_error(L, "cmkflow.core.exit is read-only (assigning '%s')", luaL_tolstring(L, 2, NULL));
}

/* [-1, +3, -] __pairs: iterate the codes behind the proxy */
static int exit_pairs(lua_State *L)
{
    lua_getglobal(L, "next");
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__index");
    lua_remove(L, -2);
    lua_pushnil(L);
    return 3;
}

/* [-0, +1, m] require "cmkflow.core.exit": an empty proxy whose __index holds the codes */
int luaopen_cmkflow_core_exit(lua_State *L)
{
    lua_newtable(L);                                   /* the proxy */
    lua_createtable(L, 0, 4);                          /* its metatable */
    lua_createtable(L, 0, (int)(sizeof codes / sizeof codes[0]));
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        lua_pushinteger(L, codes[i].code);
        lua_setfield(L, -2, codes[i].name);
    }
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, exit_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, exit_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");                /* getmetatable cannot reach the codes */
    lua_setmetatable(L, -2);
    return 1;
}
