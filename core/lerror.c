/* Error tables handed to Lua: {code, message, status, target, request_id, retryable, tenant, kind}.
 * status is nil when there was no HTTP answer; kind says what kind of local failure it was
 * ("network", "tls", "config") and is nil for a remote service's own answer. */
#include "cmk.h"

#define ERROR_MT "cmkflow.error"

/* [-0, +1, m] __tostring: "code: message (HTTP status; tenant T; request id R)". The pieces are
   joined with lua_concat: a luaL_Buffer with other values pushed above it corrupts the stack as
   soon as it outgrows LUAL_BUFFERSIZE (a long remote message). */
static int error_tostring(lua_State *L)
{
    int n = 0;
    lua_getfield(L, 1, "code");
    lua_getfield(L, 1, "message");
    int has_code = lua_isstring(L, -2), has_message = lua_isstring(L, -1);
    lua_settop(L, 1);
    if (has_code) {
        lua_getfield(L, 1, "code");
        lua_pushliteral(L, ": ");
        n += 2;
    }
    if (has_message) {
        lua_getfield(L, 1, "message");
        n++;
    }
    int detail = 0;
    static const char *const fields[] = {"status", "tenant", "request_id"};
    static const char *const labels[] = {"HTTP ", "tenant ", "request id "};
    for (int i = 0; i < 3; i++) {
        lua_getfield(L, 1, fields[i]);
        if (lua_isstring(L, -1) && !(i == 0 && lua_tointeger(L, -1) == 0)) {
            lua_pushstring(L, detail++ ? "; " : " (");
            lua_pushstring(L, labels[i]);
            lua_rotate(L, -3, -1); /* separator, label, value */
            n += 3;
        } else {
            lua_pop(L, 1);
        }
    }
    if (detail) {
        lua_pushliteral(L, ")");
        n++;
    }
    lua_concat(L, n);
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

/* The interruption sentinel: one error table per Lua state, kept in the registry. Code compares
 * it by identity (error.is_interrupt), never by its text: a remote message that says
 * "interrupted" is an ordinary failure. */
static const char interrupt_key = 'i';

void cmk_push_interrupt(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &interrupt_key) == LUA_TTABLE)
        return;
    lua_pop(L, 1);
    struct cmk_error e = {.code = "Interrupted", .message = "interrupted by a signal (Ctrl-C or SIGTERM)"};
    cmk_push_error(L, &e);
    lua_pushliteral(L, "interrupt");
    lua_setfield(L, -2, "kind");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &interrupt_key);
}

int cmk_is_interrupt(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE)
        return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &interrupt_key);
    int is = lua_rawequal(L, idx, -1);
    lua_pop(L, 1);
    return is;
}

/* [-0, +1, m] error.interrupt(): the sentinel the signal hook raises. */
static int error_interrupt(lua_State *L)
{
    cmk_push_interrupt(L);
    return 1;
}

/* [-1, +1, -] error.is_interrupt(v) */
static int error_is_interrupt(lua_State *L)
{
    lua_pushboolean(L, cmk_is_interrupt(L, 1));
    return 1;
}

static int is_error_table(lua_State *L, int idx)
{
    int is = 0;
    if (lua_getmetatable(L, idx)) {
        luaL_getmetatable(L, ERROR_MT);
        is = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    return is;
}

/* Error tables pass through unchanged (they are data: the host reads their fields); anything
 * else becomes its message with a traceback. */
int cmk_msghandler(lua_State *L)
{
    if (is_error_table(L, 1))
        return 1;
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
    static const luaL_Reg fns[] = {{"new", error_new},
                                   {"is", error_is},
                                   {"interrupt", error_interrupt},
                                   {"is_interrupt", error_is_interrupt},
                                   {NULL, NULL}};
    push_metatable(L);
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
