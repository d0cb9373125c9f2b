/*
 * config.c: evaluates a cmkflow configuration file (Lua) in a throwaway Lua state of its own, so
 * that the secrets it reads (client secrets, certificate passwords, often from os.getenv) become
 * credentials in C and never Lua strings in the state that runs workflows.
 *
 * Lua view: config.load(path, resolve_cloud) -> cfg
 *   resolve_cloud(cloud_description, emulator_state) -> { authority, ca_file, connect_to } (runs in
 *   the caller's state, before any credential is built); cloud_description is "azure" | "usgov" |
 *   "china" | "emulator" (a running `cmkflow emulator`, found through the state directory
 *   emulator_state, a string or nil) or { emulator = url, ca_cert = path }.
 *   cfg = { path, cloud = <description>, policy = path | nil, state = store | nil,
 *           limits = { instructions = n, memory_mb = n } | nil,
 *           contexts = { isv = { tenant, subscription, credential = <cmkflow.credential>,
 *                                <other string/number/boolean fields> }, customer = {...} },
 *           customers = { ["<tenant>"] = <a context as above, tenant = the key unless given> } | nil }
 * Errors name the file and the field: "config /x/cmkflow.lua: field 'isv.tenant' must be ...".
 *
 * config.state(path) -> store | nil: only the file's `state` (the run store: a postgresql:// URL
 *   or a file name), for commands that open the store before anything else (cmkflow runs, resume).
 */
#include <stdio.h>
#include <string.h>
#include <lualib.h>
#include "cmk.h"
#include "auth.h"

#define CONFIG_STATE_MT "cmkflow.config_state"

/* The throwaway state, owned by a userdata so that a raise in the caller's state closes it. */
struct config_state {
    lua_State *T;
};

static int config_state_gc(lua_State *L)
{
    struct config_state *cs = luaL_checkudata(L, 1, CONFIG_STATE_MT);
    if (cs->T) {
        lua_close(cs->T);
        cs->T = NULL;
    }
    return 0;
}

static const char *const CONTEXTS[] = {"isv", "customer", "default", NULL};
static const char *const SECRET_FIELDS[] = {"client_secret", "certificate_password", NULL};

/* Fields of a credential table copied as plain strings (none secret except SECRET_FIELDS). */
static const char *const CRED_FIELDS[] = {
    "kind", "tenant", "client_id", "client_secret", "certificate_path", "certificate_password",
    "token_file", "federated_token_file", "identity_client_id", "identity_object_id",
    "identity_resource_id", "imds_endpoint", NULL};

static int is_secret(const char *k)
{
    for (int i = 0; SECRET_FIELDS[i]; i++)
        if (strcmp(k, SECRET_FIELDS[i]) == 0)
            return 1;
    return 0;
}

/* [-0, +0, v] raise "config PATH: MESSAGE" in L */
static int config_error(lua_State *L, const char *path, const char *msg)
{
    return luaL_error(L, "config %s: %s", path, msg);
}

/* Copies a non-secret scalar from T's top into L's top (as a string/number/boolean); nil otherwise. */
static void copy_scalar(lua_State *T, lua_State *L, int idx)
{
    switch (lua_type(T, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(T, idx, &len);
        lua_pushlstring(L, s, len);
        break;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(T, idx))
            lua_pushinteger(L, lua_tointeger(T, idx));
        else
            lua_pushnumber(L, lua_tonumber(T, idx));
        break;
    case LUA_TBOOLEAN:
        lua_pushboolean(L, lua_toboolean(T, idx));
        break;
    default:
        lua_pushnil(L);
    }
}

/* Copies a (non-secret) table of scalars and nested tables from T (index idx) into a new table on L.
 * where is the field's dotted name ("isv.tags"). A key named like a secret field at any depth is
 * refused: a misspelt "credential" table (credentials = { client_secret = ... }) must not hand its
 * secret to the workflow state as a plain string. */
static void copy_table(lua_State *T, lua_State *L, int idx, int depth, const char *path, const char *where)
{
    idx = lua_absindex(T, idx);
    luaL_checkstack(L, 4, "config: tables nested too deep");
    if (!lua_checkstack(T, 4))
        luaL_error(L, "config %s: tables nested too deep", path);
    lua_newtable(L);
    if (depth > 8)
        return;
    lua_pushnil(T);
    while (lua_next(T, idx)) {
        if (lua_type(T, -2) == LUA_TSTRING || lua_isinteger(T, -2)) {
            char sub[256];
            if (lua_type(T, -2) == LUA_TSTRING) {
                const char *k = lua_tostring(T, -2);
                snprintf(sub, sizeof sub, "%s.%s", where, k);
                if (is_secret(k))
                    luaL_error(L, "config %s: field '%s' is a secret: it belongs inside a context's 'credential' table",
                               path, sub);
            } else {
                snprintf(sub, sizeof sub, "%s[%lld]", where, (long long)lua_tointeger(T, -2));
            }
            copy_scalar(T, L, -2);
            if (lua_type(T, -1) == LUA_TTABLE)
                copy_table(T, L, -1, depth + 1, path, sub);
            else
                copy_scalar(T, L, -1);
            if (lua_isnil(L, -2) || lua_isnil(L, -1))
                lua_pop(L, 2);
            else
                lua_settable(L, -3);
        }
        lua_pop(T, 1);
    }
}

/* [-1, +1, e] protected trampoline: the spec (lightuserdata) -> a credential */
static int push_credential_from_spec(lua_State *L)
{
    auth_push_credential(L, lua_touserdata(L, 1));
    return 1;
}

/* [-0, +1, e] Build the credential of context `ctx` from the table at T's top (the context table
 * just below it) and push it on L. routing is the index in L of {authority, ca_file, connect_to}. */
static void build_credential(lua_State *T, lua_State *L, const char *path, const char *ctx, int routing)
{
    const char *vals[sizeof CRED_FIELDS / sizeof CRED_FIELDS[0]] = {0};
    int t = lua_gettop(T);
    for (int i = 0; CRED_FIELDS[i]; i++) {
        lua_getfield(T, t, CRED_FIELDS[i]); /* stays on T's stack: vals point into it */
        if (!lua_isnil(T, -1) && lua_type(T, -1) != LUA_TSTRING) {
            lua_settop(T, t);
            luaL_error(L, "config %s: field '%s.credential.%s' must be a string%s", path, ctx, CRED_FIELDS[i],
                       is_secret(CRED_FIELDS[i]) ? " (is the environment variable meant to hold it set?)" : "");
        }
        vals[i] = lua_tostring(T, -1);
    }
    struct auth_spec s = {0};
    s.kind = vals[0];
    s.tenant = vals[1];
    s.client_id = vals[2];
    s.client_secret = vals[3];
    s.certificate_path = vals[4];
    s.certificate_password = vals[5];
    s.token_file = vals[6] ? vals[6] : vals[7];
    s.identity_client_id = vals[8];
    s.identity_object_id = vals[9];
    s.identity_resource_id = vals[10];
    s.imds_endpoint = vals[11];
    if (!s.kind) {
        if (s.client_secret)
            s.kind = "client_secret";
        else if (s.certificate_path)
            s.kind = "client_certificate";
        else if (s.token_file)
            s.kind = "workload_identity";
        else if (s.identity_client_id || s.identity_object_id || s.identity_resource_id)
            s.kind = "managed_identity";
        else if (s.client_id) {
            lua_settop(T, t);
            luaL_error(L, "config %s: field '%s.credential' has a client_id but no client_secret, certificate_path, "
                          "federated_token_file or identity (is the environment variable meant to hold the secret set?)",
                       path, ctx);
        } else
            s.kind = "environment";
    }
    /* the context's tenant serves the credential unless the credential names its own */
    lua_getfield(T, t - 1, "tenant");
    if (!s.tenant && lua_type(T, -1) == LUA_TSTRING)
        s.tenant = lua_tostring(T, -1);

    int top = lua_gettop(L);
    lua_getfield(L, routing, "authority");
    s.authority = lua_tostring(L, -1);
    lua_getfield(L, routing, "ca_file");
    s.ca_file = lua_tostring(L, -1);
    const char *routes[33] = {0};
    lua_getfield(L, routing, "connect_to");
    if (lua_istable(L, -1)) {
        for (lua_Integer i = 1, n = 0; i <= 32; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING) {
                lua_pop(L, 1);
                break;
            }
            routes[n++] = lua_tostring(L, -1);
            lua_pop(L, 1); /* the table keeps the string alive */
        }
        s.connect_to = routes;
    }
    lua_pushcfunction(L, push_credential_from_spec);
    lua_pushlightuserdata(L, &s);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_settop(T, t);
        luaL_error(L, "config %s: context '%s': %s", path, ctx, lua_tostring(L, -1));
    }
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    lua_settop(T, t);
}

/* [-0, +1, e] The context table at T's top (named `name` in errors: "isv", "customers[\"T\"]") as a
 * table on L: its non-secret fields copied, its credential built in C. */
static void load_context(lua_State *T, lua_State *L, const char *path, const char *name, int routing)
{
    lua_newtable(L);
    int ctx = lua_gettop(L);
    lua_pushnil(T);
    while (lua_next(T, -2)) {
        if (lua_type(T, -2) == LUA_TSTRING && strcmp(lua_tostring(T, -2), "credential") != 0) {
            const char *k = lua_tostring(T, -2);
            if (is_secret(k)) {
                lua_pushfstring(L, "field '%s.%s' belongs inside '%s.credential'", name, k, name);
                config_error(L, path, lua_tostring(L, -1));
            }
            if (lua_istable(T, -1)) {
                char where[192];
                snprintf(where, sizeof where, "%s.%s", name, k);
                copy_table(T, L, -1, 0, path, where);
            } else {
                copy_scalar(T, L, -1);
            }
            lua_setfield(L, ctx, k);
        }
        lua_pop(T, 1);
    }
    lua_getfield(T, -1, "credential");
    if (lua_istable(T, -1)) {
        build_credential(T, L, path, name, routing);
        lua_setfield(L, ctx, "credential");
    } else if (!lua_isnil(T, -1)) {
        lua_pushfstring(L, "field '%s.credential' must be a table", name);
        config_error(L, path, lua_tostring(L, -1));
    }
    lua_pop(T, 1);
}

/* [-2, +1, e] config.load(path, resolve_cloud) */
/* [-0, +1, e] Evaluate the file at path in a new throwaway state, owned by a to-be-closed
 * userdata pushed on L (its slot closes the state); returns that state with the file's table on
 * its top, or raises naming the file. */
static lua_State *eval_config(lua_State *L, const char *path)
{
    struct config_state *cs = lua_newuserdatauv(L, sizeof *cs, 0);
    cs->T = NULL;
    if (luaL_newmetatable(L, CONFIG_STATE_MT)) {
        lua_pushcfunction(L, config_state_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, config_state_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_setmetatable(L, -2);
    lua_toclose(L, -1);

    cs->T = luaL_newstate();
    if (!cs->T)
        luaL_error(L, "config %s: out of memory", path);
    lua_State *T = cs->T;
    luaL_openlibs(T);
    if (luaL_loadfile(T, path) != LUA_OK || lua_pcall(T, 0, 1, 0) != LUA_OK) {
        lua_pushstring(L, lua_tostring(T, -1));
        luaL_error(L, "config %s: %s", path, lua_tostring(L, -1));
    }
    if (!lua_istable(T, -1))
        config_error(L, path, "the file must return a table (return { cloud = ..., isv = {...}, customer = {...} })");
    return T;
}

#define NO_PASSWORD                                                                                \
    "must not hold a password: give it to libpq in PGPASSWORD or a password file (PGPASSFILE, "    \
    "~/.pgpass), or use a client certificate (sslcert, sslkey in the URL)"

/* Does a store URL carry a password (user:password@ or password=)? */
static int has_password(const char *v)
{
    const char *rest = strstr(v, "://");
    size_t auth = rest ? strcspn(rest + 3, "/?") : 0;
    const char *at = rest ? memchr(rest + 3, '@', auth) : NULL;
    return (at && memchr(rest + 3, ':', (size_t)(at - rest - 3))) || strstr(v, "password=");
}

/* [-0, +1, v] The `state` field of the file's table at T's root onto L (nil when absent): the
 * run store, a postgresql:// URL or a file name. A URL carrying a password is refused: it would
 * become a Lua string in the state that runs workflows (libpq reads PGPASSWORD or a password
 * file instead, in C). */
static void push_state_field(lua_State *T, int root, lua_State *L, const char *path)
{
    lua_getfield(T, root, "state");
    if (lua_isnil(T, -1)) {
        lua_pushnil(L);
    } else if (lua_type(T, -1) != LUA_TSTRING || lua_rawlen(T, -1) == 0) {
        config_error(L, path, "field 'state' must be the run store: \"postgresql://user@host/db\" "
                              "or the path of an SQLite file");
    } else {
        const char *v = lua_tostring(T, -1);
        if (has_password(v))
            config_error(L, path, "field 'state' " NO_PASSWORD);
        lua_pushstring(L, v);
    }
    lua_pop(T, 1);
}

/* [-1, +0, v] config.check_state(store): raises when a store location holds a password
 * ($CMKFLOW_STORE is checked as the config's `state` is). */
static int config_check_state(lua_State *L)
{
    if (has_password(luaL_checkstring(L, 1)))
        return luaL_error(L, "CMKFLOW_STORE " NO_PASSWORD);
    return 0;
}

/* [-1, +1, e] config.state(path) -> store | nil */
static int config_state(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_State *T = eval_config(L, path);
    push_state_field(T, lua_gettop(T), L, path);
    lua_closeslot(L, 2);
    return 1;
}

static int config_load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    lua_State *T = eval_config(L, path);
    int guard = lua_gettop(L);
    int root = lua_gettop(T);

    lua_newtable(L); /* cfg */
    int cfg = lua_gettop(L);
    lua_pushstring(L, path);
    lua_setfield(L, cfg, "path");

    /* cloud */
    lua_getfield(T, root, "cloud");
    if (lua_isnil(T, -1)) {
        lua_pushliteral(L, "azure");
    } else if (lua_type(T, -1) == LUA_TSTRING) {
        lua_pushstring(L, lua_tostring(T, -1));
    } else if (lua_istable(T, -1)) {
        copy_table(T, L, -1, 0, path, "cloud");
    } else {
        return config_error(L, path, "field 'cloud' must be \"azure\", \"usgov\", \"china\", \"emulator\" or { emulator = url, ca_cert = path }");
    }
    lua_pop(T, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, cfg, "cloud");
    push_state_field(T, root, L, path);
    lua_setfield(L, cfg, "state");
    /* routing = resolve_cloud(cloud, emulator_state) */
    lua_pushvalue(L, 2);
    lua_insert(L, -2);
    lua_getfield(T, root, "emulator_state");
    if (lua_isnil(T, -1))
        lua_pushnil(L);
    else if (lua_type(T, -1) == LUA_TSTRING)
        lua_pushstring(L, lua_tostring(T, -1));
    else
        return config_error(L, path, "field 'emulator_state' must be the path of a `cmkflow emulator` state directory");
    lua_pop(T, 1);
    lua_call(L, 2, 1);
    if (!lua_istable(L, -1))
        return config_error(L, path, "cloud could not be resolved");
    int routing = lua_gettop(L);

    lua_getfield(T, root, "policy");
    if (!lua_isnil(T, -1)) {
        if (lua_type(T, -1) != LUA_TSTRING)
            return config_error(L, path, "field 'policy' must be the path of a policy file");
        lua_pushstring(L, lua_tostring(T, -1));
        lua_setfield(L, cfg, "policy");
    }
    lua_pop(T, 1);

    /* limits = { instructions = n, memory_mb = n } (docs/configuration.md, "Limits") */
    lua_getfield(T, root, "limits");
    if (!lua_isnil(T, -1)) {
        static const char *const LIMIT_FIELDS[] = {"instructions", "memory_mb", NULL};
        if (!lua_istable(T, -1))
            return config_error(L, path, "field 'limits' must be a table { instructions = n, memory_mb = n }");
        lua_newtable(L);
        for (int i = 0; LIMIT_FIELDS[i]; i++) {
            lua_getfield(T, -1, LIMIT_FIELDS[i]);
            if (!lua_isnil(T, -1)) {
                if (!lua_isinteger(T, -1) || lua_tointeger(T, -1) < 0) {
                    lua_pushfstring(L, "field 'limits.%s' must be a whole number >= 0 (0: no limit)", LIMIT_FIELDS[i]);
                    return config_error(L, path, lua_tostring(L, -1));
                }
                lua_pushinteger(L, lua_tointeger(T, -1));
                lua_setfield(L, -2, LIMIT_FIELDS[i]);
            }
            lua_pop(T, 1);
        }
        lua_setfield(L, cfg, "limits");
    }
    lua_pop(T, 1);

    lua_newtable(L);
    int contexts = lua_gettop(L);
    for (int i = 0; CONTEXTS[i]; i++) {
        lua_getfield(T, root, CONTEXTS[i]);
        if (lua_isnil(T, -1)) {
            lua_pop(T, 1);
            continue;
        }
        if (!lua_istable(T, -1)) {
            lua_pushfstring(L, "field '%s' must be a table { tenant = ..., subscription = ..., credential = {...} }",
                            CONTEXTS[i]);
            return config_error(L, path, lua_tostring(L, -1));
        }
        load_context(T, L, path, CONTEXTS[i], routing);
        lua_pop(T, 1);
        lua_setfield(L, contexts, CONTEXTS[i]);
    }
    lua_setfield(L, cfg, "contexts");

    /* customers = { ["<tenant>"] = { subscription, credential = {...} } }: a context per customer
     * tenant (docs/configuration.md, "Customer tenants") */
    lua_getfield(T, root, "customers");
    if (!lua_isnil(T, -1)) {
        if (!lua_istable(T, -1))
            return config_error(L, path, "field 'customers' must be a table { [\"<tenant>\"] = { subscription = ..., "
                                         "credential = {...} } }");
        lua_newtable(L);
        int customers = lua_gettop(L);
        lua_pushnil(T);
        while (lua_next(T, -2)) {
            char name[160];
            if (lua_type(T, -2) != LUA_TSTRING || lua_rawlen(T, -2) == 0 || lua_rawlen(T, -2) > 128)
                return config_error(L, path, "field 'customers' must be keyed by tenant ids or domains (strings)");
            snprintf(name, sizeof name, "customers[\"%s\"]", lua_tostring(T, -2));
            if (!lua_istable(T, -1)) {
                lua_pushfstring(L, "field '%s' must be a table { subscription = ..., credential = {...} }", name);
                return config_error(L, path, lua_tostring(L, -1));
            }
            /* the key is the context's tenant unless the table names its own */
            lua_getfield(T, -1, "tenant");
            int named = !lua_isnil(T, -1);
            lua_pop(T, 1);
            if (!named) {
                lua_pushvalue(T, -2);
                lua_setfield(T, -2, "tenant");
            }
            load_context(T, L, path, name, routing);
            lua_setfield(L, customers, lua_tostring(T, -2));
            lua_pop(T, 1);
        }
        lua_setfield(L, cfg, "customers");
    }
    lua_pop(T, 1);
    lua_settop(L, cfg);
    /* the throwaway state (and every secret string in it) goes now */
    lua_pushvalue(L, cfg);
    lua_closeslot(L, guard);
    return 1;
}

int luaopen_cmkflow_core_config(lua_State *L)
{
    static const luaL_Reg fns[] = {{"load", config_load}, {"state", config_state}, {"check_state", config_check_state}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
