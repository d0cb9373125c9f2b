/* Error tables handed to Lua: {code, message, status, target, request_id, retryable, tenant, kind}.
 * status is nil when there was no HTTP answer; kind says what kind of local failure it was
 * ("network", "tls", "config") and is nil for a remote service's own answer. */
#include "cmk.h"

#define ERROR_MT "cmkflow.error"

/* [-0, +1, m] __tostring: "code: message (HTTP status; tenant T; request id R)". */
static int error_tostring(lua_State *L)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_getfield(L, 1, "code");
    lua_getfield(L, 1, "message");
    if (lua_isstring(L, -2)) {
        lua_pushvalue(L, -2);
        luaL_addvalue(&b);
        luaL_addstring(&b, ": ");
    }
    if (lua_isstring(L, -1)) {
        lua_pushvalue(L, -1);
        luaL_addvalue(&b);
    }
    lua_pop(L, 2);
    int detail = 0;
    static const char *const fields[] = {"status", "tenant", "request_id"};
    static const char *const labels[] = {"HTTP ", "tenant ", "request id "};
    for (int i = 0; i < 3; i++) {
        lua_getfield(L, 1, fields[i]);
        if (lua_isstring(L, -1) && !(i == 0 && lua_tointeger(L, -1) == 0)) {
            luaL_addstring(&b, detail++ ? "; " : " (");
            luaL_addstring(&b, labels[i]);
            luaL_addvalue(&b);
        } else {
            lua_pop(L, 1);
        }
    }
    if (detail)
        luaL_addchar(&b, ')');
    luaL_pushresult(&b);
    return 1;
}

static void push_metatable(lua_State *L)
{
    if (luaL_newmetatable(L, ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "cmkflow.error");
        lua_setfield(L, -2, "__name");
    }
}

static void set_string(lua_State *L, const char *k, const char *v)
{
    if (v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, k);
    }
}

void cmk_push_error(lua_State *L, const struct cmk_error *e)
{
    lua_createtable(L, 0, 8);
    set_string(L, "code", e->code ? e->code : "Error");
    set_string(L, "message", e->message ? e->message : "unknown error");
    if (e->status > 0) {
        lua_pushinteger(L, e->status);
        lua_setfield(L, -2, "status");
    }
    set_string(L, "target", e->target);
    set_string(L, "request_id", e->request_id);
    lua_pushboolean(L, e->retryable);
    lua_setfield(L, -2, "retryable");
    set_string(L, "tenant", e->tenant);
    set_string(L, "kind", e->kind);
    push_metatable(L);
    lua_setmetatable(L, -2);
}

int cmk_fail(lua_State *L, const struct cmk_error *e)
{
    lua_pushnil(L);
    cmk_push_error(L, e);
    return 2;
}

/* [-1, +1, m] error.new(t): give a Lua table the error metatable (used by the azure layer). */
static int error_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    push_metatable(L);
    lua_setmetatable(L, 1);
    return 1;
}

/* [-1, +1, -] error.is(v): true when v is an error table. */
static int error_is(lua_State *L)
{
    int is = 0;
    if (lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, ERROR_MT);
        is = lua_rawequal(L, -1, -2);
    }
    lua_pushboolean(L, is);
    return 1;
}

int cmk_msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int luaopen_cmkflow_core_error(lua_State *L)
{
    static const luaL_Reg fns[] = {{"new", error_new}, {"is", error_is}, {NULL, NULL}};
    push_metatable(L);
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
