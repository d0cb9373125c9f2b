/* lserver.c: cmkflow.core.server - starting and stopping servers from Lua, and throw-away
 * certificates for them (described in server.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include "buf.h"
#include "certgen.h"
#include "server.h"

#define SERVER_MT "cmkflow.server"

/* ---- Lua bindings ----------------------------------------------------------------------------- */

struct server_ud {
    struct cmk_server *s;
};

static struct server_ud *check_server(lua_State *L)
{
    return luaL_checkudata(L, 1, SERVER_MT);
}

static struct cmk_server *check_running(lua_State *L)
{
    struct server_ud *u = check_server(L);
    if (!u->s)
        luaL_error(L, "server is stopped");
    return u->s;
}

static const char *opt_field(lua_State *L, int t, const char *name, size_t *len)
{
    lua_getfield(L, t, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "server.start: '%s' must be a string", name);
    const char *v = lua_tolstring(L, -1, len);
    lua_pop(L, 1); /* still referenced by the options table */
    return v;
}

/* [-0, +0|+2, e] raise for misuse, else nil and an error (code AddressInUse for a taken address) */
static int start_failed(lua_State *L, const char *what, int kind, const char *err)
{
    if (kind == SERVER_EUSAGE)
        return luaL_error(L, "%s: %s", what, err);
    struct cmk_error e = {.code = kind == SERVER_EINUSE ? "AddressInUse" : "ServerStartFailed", .message = err,
                          .kind = "network"};
    return cmk_fail(L, &e);
}

/* [-1, +1|+2, e] server.start(opts) -> server | nil, err */
static int l_start(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    struct server_options o;
    memset(&o, 0, sizeof o);
    o.listen = opt_field(L, 1, "listen", NULL);
    o.cert_pem = opt_field(L, 1, "cert_pem", NULL);
    o.key_pem = opt_field(L, 1, "key_pem", NULL);
    o.handler_path = opt_field(L, 1, "handler", NULL);
    o.handler_source = opt_field(L, 1, "handler_source", &o.handler_source_len);
    o.handler_module = opt_field(L, 1, "handler_module", NULL);
    o.config = opt_field(L, 1, "config", &o.config_len);
    lua_getfield(L, 1, "tls");
    o.tls = lua_isnil(L, -1) ? o.cert_pem != NULL : lua_toboolean(L, -1);
    lua_getfield(L, 1, "debug");
    o.debug = lua_toboolean(L, -1);
    lua_getfield(L, 1, "threads");
    if (!lua_isnil(L, -1) && lua_tointeger(L, -1) != 1)
        return luaL_error(L, "server.start: threads must be 1 (the handler runs in one lua_State)");
    lua_pop(L, 3);

    struct server_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->s = NULL;
    luaL_setmetatable(L, SERVER_MT);
    char err[512];
    int kind;
    u->s = server_start(&o, &kind, err, sizeof err);
    if (!u->s)
        return start_failed(L, "server.start", kind, err);
    return 1;
}

/* [-1, +1, e] srv:port() */
static int l_port(lua_State *L)
{
    lua_pushinteger(L, server_port(check_running(L)));
    return 1;
}

/* [-1, +1, e] srv:url() */
static int l_url(lua_State *L)
{
    lua_pushstring(L, server_url(check_running(L)));
    return 1;
}

/* [-1, +1, e] srv:stats() -> {requests, contexts} */
static int l_stats(lua_State *L)
{
    struct cmk_server *s = check_running(L);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)server_requests(s));
    lua_setfield(L, -2, "requests");
    lua_pushinteger(L, (lua_Integer)server_contexts(s));
    lua_setfield(L, -2, "contexts");
    return 1;
}

/* [-1, +0, e] srv:stop(), __gc, __close */
static int l_stop(lua_State *L)
{
    struct server_ud *u = check_server(L);
    struct cmk_server *s = u->s;
    u->s = NULL;
    server_stop(s);
    return 0;
}

/* [-1, +1, m] __tostring */
static int l_tostring(lua_State *L)
{
    struct server_ud *u = check_server(L);
    if (u->s)
        lua_pushfstring(L, "cmkflow.server (%s)", server_url(u->s));
    else
        lua_pushliteral(L, "cmkflow.server (stopped)");
    return 1;
}

#define PEM_BOX_MT "cmkflow.server.pem"

/* Owns the PEM text certgen returns until it is in Lua strings, so a raise cannot leak it. */
struct pem_box {
    char *cert, *key;
};

static void pem_box_clear(struct pem_box *b)
{
    free(b->cert);
    buf_secret_free(&b->key);
    b->cert = b->key = NULL;
}

/* [-1, +0, -] __gc */
static int pem_box_gc(lua_State *L)
{
    pem_box_clear(luaL_checkudata(L, 1, PEM_BOX_MT));
    return 0;
}

/* [-0, +1, m] */
static struct pem_box *push_pem_box(lua_State *L)
{
    struct pem_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->cert = b->key = NULL;
    luaL_setmetatable(L, PEM_BOX_MT);
    return b;
}

/* [-0, +2, m] push the two PEM strings of b (then wiped and freed), or nil and an error */
static int push_pems(lua_State *L, int rc, struct pem_box *b)
{
    if (rc != 0) {
        char err[512];
        certgen_last_error(err, sizeof err);
        struct cmk_error e = {.code = "CertificateGenerationFailed", .message = err};
        return cmk_fail(L, &e);
    }
    lua_pushstring(L, b->cert);
    lua_pushstring(L, b->key);
    pem_box_clear(b);
    return 2;
}

/* [-0|1, +2, e] server.make_ca([cn]) -> cert_pem, key_pem | nil, err */
static int l_make_ca(lua_State *L)
{
    const char *cn = luaL_optstring(L, 1, NULL);
    struct pem_box *b = push_pem_box(L);
    int rc = certgen_make_ca(cn, &b->cert, &b->key);
    return push_pems(L, rc, b);
}

/* Collect a Lua array of strings at t[field] into a NULL-terminated array stored in a userdata
 * (so a raise frees it). [-0, +1, e] */
static const char *const *names_array(lua_State *L, int t, const char *field)
{
    if (lua_getfield(L, t, field) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return NULL;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "server: '%s' must be a list of strings", field);
    lua_Integer n = luaL_len(L, -1);
    if (n < 0 || n > 1000)
        luaL_error(L, "server: too many names in '%s'", field);
    const char **arr = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 1);
    lua_pushvalue(L, -2);
    lua_setiuservalue(L, -2, 1); /* keep the list (and its strings) alive */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, -2, i);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "server: '%s'[%d] must be a string", field, (int)i);
        arr[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    arr[n] = NULL;
    lua_remove(L, -2);
    return arr;
}

static int l_default_names(lua_State *L);

/* [-2|3, +2, e] server.make_cert(ca_cert_pem, ca_key_pem [, {dns, ip}]) -> cert_pem, key_pem | nil, err */
static int l_make_cert(lua_State *L)
{
    const char *ca_cert = luaL_checkstring(L, 1);
    const char *ca_key = luaL_checkstring(L, 2);
    if (lua_isnoneornil(L, 3)) {
        lua_settop(L, 2);
        l_default_names(L); /* index 3 */
    }
    luaL_checktype(L, 3, LUA_TTABLE);
    const char *const *dns = names_array(L, 3, "dns");
    const char *const *ip = names_array(L, 3, "ip");
    if (!dns && !ip)
        return luaL_argerror(L, 3, "needs dns and/or ip names");
    struct pem_box *b = push_pem_box(L);
    int rc = certgen_make_server(ca_cert, ca_key, dns, ip, &b->cert, &b->key);
    return push_pems(L, rc, b);
}

/* The emulator's own names, besides the clouds' hosts. */
static const char *const LOCAL_DNS[] = {"localhost", "*.vault.localhost"};
static const char *const LOCAL_IP[] = {"127.0.0.1", "::1"};

/* [-0, +1, e] server.default_names() -> {dns = {...}, ip = {...}}: localhost names, then every
 * public cloud's login, ARM, Graph, Key Vault and Storage hosts from the cloud table
 * (cmkflow.clouds, a data module that requires nothing). */
static int l_default_names(lua_State *L)
{
    lua_createtable(L, 0, 2);
    lua_createtable(L, 16, 0); /* dns */
    lua_Integer n = 0;
    for (size_t i = 0; i < sizeof LOCAL_DNS / sizeof LOCAL_DNS[0]; i++) {
        lua_pushstring(L, LOCAL_DNS[i]);
        lua_rawseti(L, -2, ++n);
    }
    if (lua_getglobal(L, "require") != LUA_TFUNCTION)
        return luaL_error(L, "server.default_names: require is not available");
    lua_pushliteral(L, "cmkflow.clouds");
    lua_call(L, 1, 1);
    if (lua_getfield(L, -1, "host_names") != LUA_TFUNCTION)
        return luaL_error(L, "server.default_names: cmkflow.clouds has no host_names()");
    lua_call(L, 0, 1);
    luaL_checktype(L, -1, LUA_TTABLE);
    lua_Integer count = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= count; i++) {
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -4, ++n);
    }
    lua_pop(L, 2); /* the list, the module */
    lua_setfield(L, -2, "dns");
    lua_createtable(L, 2, 0);
    for (size_t i = 0; i < sizeof LOCAL_IP / sizeof LOCAL_IP[0]; i++) {
        lua_pushstring(L, LOCAL_IP[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "ip");
    return 1;
}

/* ---- the HTTPS proxy (server.h) ---------------------------------------------------------------- */

#define PROXY_MT "cmkflow.server.proxy"

struct proxy_ud {
    struct cmk_proxy *p;
};

static struct cmk_proxy *check_proxy(lua_State *L)
{
    struct proxy_ud *u = luaL_checkudata(L, 1, PROXY_MT);
    if (!u->p)
        luaL_error(L, "proxy is stopped");
    return u->p;
}

static unsigned opt_unsigned(lua_State *L, int t, const char *name, lua_Integer max)
{
    lua_getfield(L, t, name);
    lua_Integer v = lua_isnil(L, -1) ? 0 : luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    if (v < 0 || v > max)
        luaL_error(L, "server.proxy: '%s' must be 1..%d", name, (int)max);
    return (unsigned)v;
}

/* [-1, +1|+2, e] server.proxy{listen, target, hosts = {...}, max_connections?, idle_seconds?}
 *   -> proxy | nil, err (AddressInUse when listen is taken) */
static int l_proxy(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    struct proxy_options o;
    memset(&o, 0, sizeof o);
    o.listen = opt_field(L, 1, "listen", NULL);
    o.target = opt_field(L, 1, "target", NULL);
    o.max_tunnels = opt_unsigned(L, 1, "max_connections", 4096);
    o.idle_s = opt_unsigned(L, 1, "idle_seconds", 3600);
    o.hosts = names_array(L, 1, "hosts"); /* index 2, kept until the proxy has copied them */
    if (!o.hosts)
        return luaL_error(L, "server.proxy: 'hosts' (the names it tunnels to) is required");
    struct proxy_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->p = NULL;
    luaL_setmetatable(L, PROXY_MT);
    char err[512];
    int kind;
    u->p = proxy_start(&o, &kind, err, sizeof err);
    if (!u->p)
        return start_failed(L, "server.proxy", kind, err);
    return 1;
}

/* [-1, +1, e] proxy:port() */
static int l_proxy_port(lua_State *L)
{
    lua_pushinteger(L, proxy_port(check_proxy(L)));
    return 1;
}

/* [-1, +1, e] proxy:url() -> "http://127.0.0.1:PORT" */
static int l_proxy_url(lua_State *L)
{
    lua_pushstring(L, proxy_url(check_proxy(L)));
    return 1;
}

/* [-1, +1, e] proxy:stats() -> {refused = n} */
static int l_proxy_stats(lua_State *L)
{
    struct cmk_proxy *p = check_proxy(L);
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, (lua_Integer)proxy_refused(p));
    lua_setfield(L, -2, "refused");
    return 1;
}

/* [-1, +0, e] proxy:stop(), __gc, __close */
static int l_proxy_stop(lua_State *L)
{
    struct proxy_ud *u = luaL_checkudata(L, 1, PROXY_MT);
    struct cmk_proxy *p = u->p;
    u->p = NULL;
    proxy_stop(p);
    return 0;
}

static const luaL_Reg proxy_methods[] = {
    {"port", l_proxy_port}, {"url", l_proxy_url}, {"stats", l_proxy_stats}, {"stop", l_proxy_stop}, {NULL, NULL},
};

static const luaL_Reg proxy_meta[] = {
    {"__gc", l_proxy_stop}, {"__close", l_proxy_stop}, {NULL, NULL},
};

static const luaL_Reg server_methods[] = {
    {"port", l_port}, {"url", l_url}, {"stats", l_stats}, {"stop", l_stop}, {NULL, NULL},
};

static const luaL_Reg server_meta[] = {
    {"__gc", l_stop}, {"__close", l_stop}, {"__tostring", l_tostring}, {NULL, NULL},
};

static const luaL_Reg server_funcs[] = {
    {"start", l_start},       {"stop", l_stop},
    {"make_ca", l_make_ca},   {"make_cert", l_make_cert},
    {"default_names", l_default_names}, {"proxy", l_proxy}, {NULL, NULL},
};

/* [-0, +1, m] cmkflow.core.server */
int luaopen_cmkflow_core_server(lua_State *L)
{
    if (luaL_newmetatable(L, SERVER_MT)) {
        luaL_setfuncs(L, server_meta, 0);
        luaL_newlib(L, server_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, PROXY_MT)) {
        luaL_setfuncs(L, proxy_meta, 0);
        luaL_newlib(L, proxy_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, PEM_BOX_MT)) {
        lua_pushcfunction(L, pem_box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, server_funcs);
    return 1;
}
