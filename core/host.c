/* The Lua host: one state with the core, the embedded Lua sources, protected calls, Ctrl-C. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <lualib.h>
#include <openssl/crypto.h>
#include "cmkflow.h"
#include "cmk.h"
#include "auth.h"
#include "embedded.h"

struct cmkflow_host {
    lua_State *L;
    char *result_json;
    char *last_error;
    char *last_error_json;
    volatile sig_atomic_t interrupted;
};

/* ---- module loader: CMKFLOW_LUA_PATH first (development), then the embedded sources ---- */

/* [-0, +1, -] package.searchers entry. */
static int embedded_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const char *dev = getenv("CMKFLOW_LUA_PATH");
    if (dev && *dev) {
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", dev, dev);
        lua_getglobal(L, "package");
        lua_getfield(L, -1, "searchpath");
        lua_pushvalue(L, 1);
        lua_pushvalue(L, -4);
        lua_call(L, 2, 1);
        if (lua_isstring(L, -1)) {
            const char *file = lua_tostring(L, -1);
            if (luaL_loadfile(L, file) != LUA_OK)
                return luaL_error(L, "error loading module '%s' from '%s':\n\t%s", name, file,
                                  lua_tostring(L, -1));
            lua_pushstring(L, file);
            return 2;
        }
        lua_pop(L, 3);
    }
    for (const struct embedded_lua *e = embedded_lua_sources; e->module; e++) {
        if (strcmp(e->module, name) == 0) {
            if (luaL_loadbuffer(L, (const char *)e->source, e->len, e->chunkname) != LUA_OK)
                return luaL_error(L, "error loading embedded module '%s':\n\t%s", name,
                                  lua_tostring(L, -1));
            lua_pushstring(L, e->chunkname + 1);
            return 2;
        }
    }
    lua_pushfstring(L, "no embedded module '%s'", name);
    return 1;
}

void host_install_searcher(lua_State *L)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers");
    /* after the preload searcher, before the file searchers */
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = n; i >= 2; i--) {
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, embedded_searcher);
    lua_rawseti(L, -2, 2);
    lua_getfield(L, -2, "preload");
    lua_pushcfunction(L, luaopen_cmkflow_core);
    lua_setfield(L, -2, "cmkflow.core");
    lua_pop(L, 3);
}

/* ---- protected calls (lua.c's docall) and Ctrl-C ---------------------------------- */

static cmkflow_host *signalled_host; /* only for the signal handler, as lua.c's globalL */

/* Stays set until the protected call returns (docall clears it), so a workflow's own pcall
 * cannot swallow the interruption: the next instruction raises again. */
static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    cmk_push_interrupt(L);
    lua_error(L);
}

static void on_sigint(int sig)
{
    signal(sig, SIG_DFL); /* a second Ctrl-C kills */
    if (signalled_host)
        cmkflow_host_interrupt(signalled_host);
}

void cmkflow_host_interrupt(cmkflow_host *h)
{
    h->interrupted = 1;
    lua_sethook(h->L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* [-(narg+1), +nres, -] */
static int docall(cmkflow_host *h, int narg, int nres)
{
    lua_State *L = h->L;
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, cmk_msghandler);
    lua_insert(L, base);
    signalled_host = h;
    void (*old)(int) = signal(SIGINT, on_sigint);
    int status = lua_pcall(L, narg, nres, base);
    if (h->interrupted)
        lua_sethook(L, NULL, 0, 0);
    signal(SIGINT, old);
    signalled_host = NULL;
    lua_remove(L, base);
    return status;
}

static void set_string(char **slot, const char *s)
{
    free(*slot);
    *slot = s ? strdup(s) : NULL;
}

/* [-0, +1, e] the error value at index 1 as JSON {code, message, tenant, hint, status, ...}:
 * error tables field by field (scalars only), anything else as {code = "Error", message}. */
static int error_to_json(lua_State *L)
{
    json_t *o = json_object();
    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, 1)) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                const char *k = lua_tostring(L, -2);
                int t = lua_type(L, -1);
                if (t == LUA_TSTRING)
                    json_object_set_new(o, k, json_string(lua_tostring(L, -1)));
                else if (t == LUA_TBOOLEAN)
                    json_object_set_new(o, k, json_boolean(lua_toboolean(L, -1)));
                else if (t == LUA_TNUMBER && lua_isinteger(L, -1))
                    json_object_set_new(o, k, json_integer(lua_tointeger(L, -1)));
                else if (t == LUA_TNUMBER)
                    json_object_set_new(o, k, json_real(lua_tonumber(L, -1)));
            }
            lua_pop(L, 1);
        }
    } else {
        json_object_set_new(o, "code", json_string("Error"));
        json_object_set_new(o, "message", json_string(luaL_tolstring(L, 1, NULL)));
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    lua_pushstring(L, text ? text : "{}");
    free(text);
    return 1;
}

/* Records the error value on top of the stack (popped) as last_error (text) and
 * last_error_json (structure). */
static void record_error(cmkflow_host *h)
{
    lua_State *L = h->L;
    set_string(&h->last_error, luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    lua_pushcfunction(L, error_to_json);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK)
        set_string(&h->last_error_json, lua_tostring(L, -1));
    lua_pop(L, 1);
}

/* [-0, +1, e] push the cmkflow.host Lua module */
static int push_host_module(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cmkflow.host");
    lua_call(L, 1, 1);
    return 1;
}

/* Call cmkflow.host[fn](...) with nargs on the stack; maps failures to a status. */
static int call_host(cmkflow_host *h, const char *fn, int nargs, int nres)
{
    lua_State *L = h->L;
    lua_pushcfunction(L, push_host_module);
    if (docall(h, 0, 1) != LUA_OK) {
        record_error(h);
        lua_pop(L, nargs);
        return CMKFLOW_FAILED;
    }
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, -(nargs + 1));
    if (docall(h, nargs, nres) != LUA_OK) {
        record_error(h);
        int interrupted = h->interrupted;
        h->interrupted = 0;
        return interrupted ? CMKFLOW_INTERRUPTED : CMKFLOW_FAILED;
    }
    return CMKFLOW_OK;
}

/* ---- public API -------------------------------------------------------------------- */

const char *cmkflow_version(void) { return CMKFLOW_VERSION; }

cmkflow_host *cmkflow_host_new(void)
{
    cmkflow_host *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->L = luaL_newstate();
    if (!h->L) {
        free(h);
        return NULL;
    }
    luaL_openlibs(h->L);
    host_install_searcher(h->L);
    return h;
}

void cmkflow_host_free(cmkflow_host *h)
{
    if (!h)
        return;
    lua_close(h->L);
    free(h->result_json);
    free(h->last_error);
    free(h->last_error_json);
    free(h);
}

int cmkflow_host_set_cloud(cmkflow_host *h, const char *cloud, const char *endpoint, const char *ca_file)
{
    lua_pushstring(h->L, cloud);
    lua_pushstring(h->L, endpoint);
    lua_pushstring(h->L, ca_file);
    return call_host(h, "set_cloud", 3, 0) == CMKFLOW_OK ? CMKFLOW_OK : CMKFLOW_USAGE;
}

struct push_cred_args {
    const char *context;
    const struct cmkflow_credential_spec *spec;
};

/* [-0, +2, e] push context name and a new credential */
static int push_cred(lua_State *L)
{
    const struct push_cred_args *a = lua_touserdata(L, 1);
    struct auth_spec s = {
        .kind = a->spec->kind, .tenant = a->spec->tenant_id, .client_id = a->spec->client_id,
        .client_secret = a->spec->client_secret, .certificate_path = a->spec->certificate_path,
        .certificate_password = a->spec->certificate_password,
        .token_file = a->spec->federated_token_file, .identity_client_id = a->spec->identity_client_id,
    };
    lua_pushstring(L, a->context);
    auth_push_credential(L, &s);
    return 2;
}

int cmkflow_host_set_credential(cmkflow_host *h, const char *context,
                                const struct cmkflow_credential_spec *spec)
{
    struct push_cred_args a = {context, spec};
    lua_pushcfunction(h->L, push_cred);
    lua_pushlightuserdata(h->L, &a);
    if (docall(h, 1, 2) != LUA_OK) {
        record_error(h);
        return CMKFLOW_USAGE;
    }
    return call_host(h, "set_credential", 2, 0) == CMKFLOW_OK ? CMKFLOW_OK : CMKFLOW_USAGE;
}

void cmkflow_host_set_debug(cmkflow_host *h, int on)
{
    lua_pushboolean(h->L, on);
    (void)call_host(h, "set_debug", 1, 0);
}

/* Runs cmkflow.host.run(kind, what, chunkname, params_json) -> status, json_or_message */
static int run(cmkflow_host *h, const char *kind, const char *what, const char *chunkname,
               const char *params_json)
{
    lua_State *L = h->L;
    set_string(&h->result_json, NULL);
    set_string(&h->last_error, NULL);
    set_string(&h->last_error_json, NULL);
    lua_pushstring(L, kind);
    lua_pushstring(L, what);
    lua_pushstring(L, chunkname);
    lua_pushstring(L, params_json);
    int rc = call_host(h, "run", 4, 2);
    if (rc != CMKFLOW_OK)
        return rc;
    rc = (int)lua_tointeger(L, -2);
    if (h->interrupted) {
        /* the workflow's own pcall caught the hook's error: report the interruption */
        h->interrupted = 0;
        rc = CMKFLOW_INTERRUPTED;
        cmk_push_interrupt(L);
        record_error(h);
        lua_pop(L, 2);
    } else if (rc == CMKFLOW_OK) {
        set_string(&h->result_json, lua_tostring(L, -1));
        lua_pop(L, 2);
    } else {
        record_error(h); /* the error value (table or message) */
        lua_pop(L, 1);
    }
    return rc;
}

int cmkflow_host_run_file(cmkflow_host *h, const char *path, const char *params_json)
{
    return run(h, "file", path, NULL, params_json);
}

int cmkflow_host_run_string(cmkflow_host *h, const char *chunk, const char *chunkname,
                            const char *params_json)
{
    return run(h, "string", chunk, chunkname ? chunkname : "=(workflow)", params_json);
}

const char *cmkflow_host_result_json(cmkflow_host *h) { return h->result_json; }
const char *cmkflow_host_last_error(cmkflow_host *h) { return h->last_error; }
const char *cmkflow_host_last_error_json(cmkflow_host *h) { return h->last_error_json; }

/* For the CLI: the host's Lua state (not part of the public header). */
lua_State *host_state(cmkflow_host *h) { return h->L; }

/* [-0, +1, e] require("cmkflow.cli").main(args) */
static int cli_main(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cmkflow.cli");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc, 0);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_call(L, 1, 1);
    return 1;
}

int cmkflow_main(int argc, char **argv)
{
    cmkflow_host *h = cmkflow_host_new();
    if (!h) {
        fputs("cmkflow: out of memory\n", stderr);
        return CMKFLOW_FAILED;
    }
    lua_pushcfunction(h->L, cli_main);
    lua_pushinteger(h->L, argc);
    lua_pushlightuserdata(h->L, argv);
    int rc;
    if (docall(h, 2, 1) != LUA_OK) {
        rc = h->interrupted ? CMKFLOW_INTERRUPTED : CMKFLOW_FAILED;
        if (rc == CMKFLOW_INTERRUPTED)
            fputs("cmkflow: interrupted\n", stderr);
        else
            fprintf(stderr, "cmkflow: %s\n", luaL_tolstring(h->L, -1, NULL));
    } else {
        rc = lua_isinteger(h->L, -1) ? (int)lua_tointeger(h->L, -1) : CMKFLOW_OK;
    }
    fflush(stdout);
    cmkflow_host_free(h);
    return rc;
}
