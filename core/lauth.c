/* lauth.c: the Lua view of credentials (cmkflow.core.auth, described in auth.h): the
 * "cmkflow.credential" userdata, which owns its credential before anything can raise. */
#include <stdlib.h>
#include <string.h>
#include "auth_int.h"

#define CRED_MT "cmkflow.credential"

struct cred_ud {
    auth_credential *c;
};

auth_credential *auth_test_credential(lua_State *L, int idx)
{
    struct cred_ud *u = luaL_testudata(L, idx, CRED_MT);
    return u ? u->c : NULL;
}

auth_credential *auth_check_credential(lua_State *L, int idx)
{
    struct cred_ud *u = luaL_checkudata(L, idx, CRED_MT);
    if (!u->c)
        luaL_argerror(L, idx, "credential is closed");
    return u->c;
}

/* [-0, +0, -] __gc / __close: release the callback and our reference. */
static int cred_gc(lua_State *L)
{
    struct cred_ud *u = luaL_checkudata(L, 1, CRED_MT);
    auth_credential *c = u->c;
    if (!c)
        return 0;
    u->c = NULL;
    if (c->cb_thread) {
        luaL_unref(L, LUA_REGISTRYINDEX, c->cb_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, c->thread_ref);
        c->cb_thread = NULL;
        c->cb_ref = c->thread_ref = LUA_NOREF;
    }
    auth_credential_unref(c);
    return 0;
}

/* [-0, +1, m] "cmkflow.credential(kind, client_id)" */
static int cred_tostring(lua_State *L)
{
    struct cred_ud *u = luaL_checkudata(L, 1, CRED_MT);
    if (!u->c) {
        lua_pushliteral(L, "cmkflow.credential(closed)");
        return 1;
    }
    const char *id = u->c->kind == KIND_MI ? u->c->identity_client_id : u->c->client_id;
    lua_pushfstring(L, "cmkflow.credential(%s, %s)", auth_kind_names[u->c->kind],
                    id ? id : "system-assigned");
    return 1;
}

static void set_field(lua_State *L, const char *k, const char *v)
{
    if (v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, k);
    }
}

/* [-0, +1, m] cred:describe() -> {kind, tenant, client_id, authority, ...}; never a secret */
static int cred_describe(lua_State *L)
{
    auth_credential *c = auth_check_credential(L, 1);
    lua_createtable(L, 0, 8);
    set_field(L, "kind", auth_kind_names[c->kind]);
    set_field(L, "tenant", c->tenant);
    set_field(L, "client_id", c->kind == KIND_MI ? c->identity_client_id : c->client_id);
    set_field(L, "authority", c->authority);
    if (c->from_environment)
        set_field(L, "resolved_from", "environment");
    if (c->kind == KIND_MI) {
        set_field(L, "identity_object_id", c->identity_object_id);
        set_field(L, "identity_resource_id", c->identity_resource_id);
        set_field(L, "endpoint", c->app_service_header ? "app_service" : "imds");
    }
    if (c->kind == KIND_CHAINED) {
        set_field(L, "exchange_audience", c->exchange_audience);
        set_field(L, "source_kind", auth_kind_names[c->source->kind]);
    }
    if (c->kind == KIND_CERT) {
        set_field(L, "x5t#S256", c->x5t_s256); /* a public thumbprint */
        lua_pushboolean(L, c->send_x5c);
        lua_setfield(L, -2, "send_x5c");
    }
    return 1;
}

/* [-0, +1, m] cred:stats() -> {token_fetches = n} */
static int cred_stats(lua_State *L)
{
    auth_credential *c = auth_check_credential(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, c->fetches);
    lua_setfield(L, -2, "token_fetches");
    int n = 0;
    for (struct cache_entry *e = c->cache; e; e = e->next)
        n += e->token != NULL;
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "cached_tokens");
    return 1;
}

/* [-0, +1, e] cred:token_status(scope [, tenant]) -> {cached = bool, expires_on = epoch?} */
static int cred_token_status(lua_State *L)
{
    auth_credential *c = auth_check_credential(L, 1);
    const char *scope = luaL_checkstring(L, 2);
    const char *tenant = luaL_optstring(L, 3, NULL);
    if (!auth_uses_tenant(c))
        tenant = "";
    else if (auth_is_empty(tenant))
        tenant = c->tenant;
    int64_t now = http_now_ms(http_session_get(L));
    lua_createtable(L, 0, 2);
    for (struct cache_entry *e = c->cache; e; e = e->next) {
        if (strcmp(e->tenant, tenant) == 0 && strcmp(e->scope, scope) == 0 && e->token) {
            lua_pushboolean(L, auth_entry_fresh(e, now));
            lua_setfield(L, -2, "cached");
            lua_pushinteger(L, (lua_Integer)e->expires_on);
            lua_setfield(L, -2, "expires_on");
            return 1;
        }
    }
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "cached");
    return 1;
}

/* [-0, +0, e] cred:clear_cache(): wipe every cached token (in-flight fetches still complete) */
static int cred_clear_cache(lua_State *L)
{
    auth_credential *c = auth_check_credential(L, 1);
    for (struct cache_entry *e = c->cache; e; e = e->next)
        buf_secret_free(&e->token);
    return 0;
}

static void push_metatable(lua_State *L);

/* [-0, +1, e] Build a credential; callback_idx (0 = none) is an assertion function. */
static void push_credential(lua_State *L, const struct auth_spec *spec, int callback_idx, int source_idx)
{
    if (callback_idx)
        callback_idx = lua_absindex(L, callback_idx);
    if (source_idx)
        source_idx = lua_absindex(L, source_idx);
    struct cred_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->c = NULL;
    push_metatable(L);
    lua_setmetatable(L, -2);
    auth_credential *c = calloc(1, sizeof *c);
    if (!c)
        luaL_error(L, "credential: out of memory");
    c->refs = 1;
    c->cb_ref = c->thread_ref = LUA_NOREF;
    u->c = c; /* from here __gc owns it, so a raise below leaks nothing */
    char err[512];
    if (auth_build(c, spec, callback_idx != 0, err, sizeof err) != 0)
        luaL_error(L, "%s", err);
    if (source_idx) {
        /* keep the source's userdata (and its assertion callback) alive with us */
        lua_pushvalue(L, source_idx);
        lua_setiuservalue(L, -2, 1);
    }
    if (callback_idx && c->kind == KIND_WORKLOAD) {
        c->cb_thread = lua_newthread(L);
        c->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_pushvalue(L, callback_idx);
        c->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
}

void auth_push_credential(lua_State *L, const struct auth_spec *spec)
{
    push_credential(L, spec, 0, 0);
}

static const char *const spec_fields[] = {
    "kind", "tenant", "client_id", "authority", "client_secret", "certificate_path",
    "certificate_password", "send_x5c", "token_file", "assertion", "identity_client_id",
    "identity_object_id", "identity_resource_id", "imds_endpoint", "source", "exchange_audience",
    "ca_file", "connect_to", NULL};

/* A string field of the spec table at index 1, or NULL; raises on another type. */
static const char *opt_field(lua_State *L, const char *name)
{
    int t = lua_getfield(L, 1, name);
    const char *v = NULL;
    if (t == LUA_TSTRING)
        v = lua_tostring(L, -1); /* kept alive by the spec table */
    else if (t != LUA_TNIL)
        luaL_error(L, "credential: field '%s' must be a string", name);
    lua_pop(L, 1);
    return v;
}


/* [-1, +1, e] auth.credential(spec) -> cred; raises on an invalid spec */
static int auth_credential_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        int known = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (const char *const *f = spec_fields; *f && !known; f++)
                known = strcmp(*f, lua_tostring(L, -1)) == 0;
        if (!known)
            return luaL_error(L, "credential: unknown field '%s'",
                              lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
    }
    struct auth_spec s = {0};
    s.kind = opt_field(L, "kind");
    s.tenant = opt_field(L, "tenant");
    s.client_id = opt_field(L, "client_id");
    s.authority = opt_field(L, "authority");
    s.client_secret = opt_field(L, "client_secret");
    s.certificate_path = opt_field(L, "certificate_path");
    s.certificate_password = opt_field(L, "certificate_password");
    s.token_file = opt_field(L, "token_file");
    s.identity_client_id = opt_field(L, "identity_client_id");
    s.identity_object_id = opt_field(L, "identity_object_id");
    s.identity_resource_id = opt_field(L, "identity_resource_id");
    s.imds_endpoint = opt_field(L, "imds_endpoint");
    s.exchange_audience = opt_field(L, "exchange_audience");
    s.ca_file = opt_field(L, "ca_file");
    int t = lua_getfield(L, 1, "send_x5c"); /* index 2 */
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
        return luaL_error(L, "credential: field 'send_x5c' must be a boolean");
    s.send_x5c = lua_toboolean(L, 2);
    t = lua_getfield(L, 1, "assertion"); /* index 3 */
    if (t != LUA_TNIL && t != LUA_TFUNCTION)
        return luaL_error(L, "credential: field 'assertion' must be a function returning a JWT");
    int callback_idx = t == LUA_TFUNCTION ? 3 : 0;
    if (callback_idx && (!s.kind || strcmp(s.kind, "workload_identity") != 0))
        return luaL_error(L, "credential: field 'assertion' is only for kind 'workload_identity'");
    lua_getfield(L, 1, "source"); /* index 4 */
    int source_idx = 0;
    if (!lua_isnil(L, 4)) {
        s.source = auth_test_credential(L, 4);
        if (!s.source)
            return luaL_error(L, "credential: field 'source' must be a credential (or closed)");
        if (!s.kind || strcmp(s.kind, "chained") != 0)
            return luaL_error(L, "credential: field 'source' is only for kind 'chained'");
        source_idx = 4;
    }
    t = lua_getfield(L, 1, "connect_to"); /* index 5 */
    if (t != LUA_TNIL) {
        if (t != LUA_TTABLE)
            return luaL_error(L, "credential: field 'connect_to' must be an array of strings");
        lua_Integer n = luaL_len(L, 5);
        if (n < 0 || n > 64)
            return luaL_error(L, "credential: field 'connect_to' has too many entries");
        /* GC-managed so a raise leaks nothing */
        const char **list = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *list, 0); /* index 6 */
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(L, 5, i) != LUA_TSTRING)
                return luaL_error(L, "credential: field 'connect_to' must be an array of strings");
            list[i - 1] = lua_tostring(L, -1); /* kept alive by the table */
            lua_pop(L, 1);
        }
        list[n] = NULL;
        s.connect_to = list;
    }
    push_credential(L, &s, callback_idx, source_idx);
    return 1;
}

/* [-0, +1, m] The credential metatable, created on first use: host.c may build credentials
 * before anything has required cmkflow.core.auth. */
static void push_metatable(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"describe", cred_describe},       {"stats", cred_stats},
        {"token_status", cred_token_status}, {"clear_cache", cred_clear_cache},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", cred_gc}, {"__close", cred_gc}, {"__tostring", cred_tostring}, {NULL, NULL}};
    if (luaL_newmetatable(L, CRED_MT)) {
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
}

int luaopen_cmkflow_core_auth(lua_State *L)
{
    static const luaL_Reg fns[] = {{"credential", auth_credential_new}, {NULL, NULL}};
    push_metatable(L);
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
