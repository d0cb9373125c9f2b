/* The Lua host: one state with the core, the embedded Lua sources, protected calls, signals
 * (Ctrl-C, SIGTERM) and the per-run limits (instructions, memory). */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <lualib.h>
#include <openssl/crypto.h>
#include "cmkflow.h"
#include "cmk.h"
#include "auth.h"
#include "embedded.h"

/* Instructions between two calls of the count hook: the hook is what notices a signal and
 * counts the budget, so this bounds both the reaction time (microseconds) and the overshoot. */
#define HOOK_COUNT 1000
/* After the first raise of the interrupt (or of InstructionLimit), raise again at most this often
 * (a host pcall that swallowed it, another step still looping); between raises the engine journals
 * undisturbed. */
#define REINTERRUPT_MS 1000

struct cmkflow_host {
    lua_State *L;
    char *result_json;
    char *last_error;
    char *last_error_json;
    volatile sig_atomic_t interrupted; /* the signal that stops the run (SIGINT, SIGTERM), 0 */
    volatile sig_atomic_t signals;     /* how many arrived: the third kills */
    long long interrupt_raised_ms;     /* when the hook last raised the interrupt, 0: not yet */
    /* limits (docs/configuration.md, "Limits"); 0 = none */
    unsigned long long instruction_limit, instructions;
    long long instruction_raised_ms; /* when the hook last raised InstructionLimit, 0: not yet */
    size_t memory_limit, memory_used;
    int memory_refused;
    cmkflow_event_fn on_event; /* cmkflow_host_set_event_callback */
    void *event_userdata;
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

/* ---- protected calls (lua.c's docall), signals and limits --------------------------- */

/* The CLI's host, for its signal handler (as lua.c's globalL). The library itself installs no
 * handler: a program embedding it calls cmkflow_host_interrupt from its own. */
static cmkflow_host *volatile signalled_host;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* [-0, +1, m] an error table {code, message, kind = "limit", hint} for an exceeded limit */
static void push_limit_error(lua_State *L, const char *code, const char *message, const char *hint)
{
    struct cmk_error e = {.code = code, .message = message};
    cmk_push_error(L, &e);
    lua_pushliteral(L, "limit");
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, hint);
    lua_setfield(L, -2, "hint");
}

/* The count hook, set on the main state before anything runs: every coroutine (each step runs in
 * one) inherits it from the thread that creates it, so CPU-bound code anywhere sees it. Signals
 * only set a flag (lua.c's way); this raises the interrupt sentinel from the running code. It
 * raises once, then again only after REINTERRUPT_MS, so the engine's journal update between
 * the two is not cut short; the sandbox's pcall cannot swallow it (cmkflow.sandbox). */
static void count_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    cmkflow_host *h = *(cmkflow_host **)lua_getextraspace(L);
    if (!h)
        return;
    if (h->interrupted) {
        long long t = now_ms();
        if (!h->interrupt_raised_ms || t - h->interrupt_raised_ms >= REINTERRUPT_MS) {
            h->interrupt_raised_ms = t;
            cmk_push_interrupt(L);
            lua_error(L);
        }
    }
    if (h->instruction_limit) {
        h->instructions += HOOK_COUNT;
        /* raised again after REINTERRUPT_MS: another step still looping has the budget spent too */
        long long t = h->instructions > h->instruction_limit ? now_ms() : 0;
        if (t && (!h->instruction_raised_ms || t - h->instruction_raised_ms >= REINTERRUPT_MS)) {
            h->instruction_raised_ms = t;
            lua_pushfstring(L, "the run executed more than %I Lua instructions (limits.instructions)",
                            (lua_Integer)h->instruction_limit);
            push_limit_error(L, "InstructionLimit", lua_tostring(L, -1),
                             "a step loops or computes more than expected; if the work is legitimate, raise "
                             "limits.instructions in the configuration file (docs/configuration.md)");
            lua_error(L);
        }
    }
}

/* The CLI's SIGINT and SIGTERM: the first stops the run (the hook raises), the second changes
 * nothing (the journal update must still happen), the third kills as the default action would. */
static void on_signal(int sig)
{
    cmkflow_host *h = signalled_host;
    if (!h)
        return;
    h->signals++;
    if (!h->interrupted)
        h->interrupted = sig;
    if (h->signals >= 3) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}

void cmkflow_host_interrupt(cmkflow_host *h)
{
    if (!h->interrupted)
        h->interrupted = SIGINT;
}

/* Clears the interruption once the call that saw it has returned. */
static void clear_interrupt(cmkflow_host *h)
{
    h->interrupted = 0;
    h->signals = 0;
    h->interrupt_raised_ms = 0;
}

/* The allocator of the host's state: lua_Alloc (the manual's l_alloc) counting bytes, refusing an
 * allocation that would pass the memory limit (Lua then collects and retries once before raising
 * "not enough memory"; cmkflow.host turns that into a MemoryLimit error). */
static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    cmkflow_host *h = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        h->memory_used -= old;
        return NULL;
    }
    if (nsize > old && h->memory_limit && h->memory_used + (nsize - old) > h->memory_limit) {
        h->memory_refused = 1;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p)
        h->memory_used = h->memory_used - old + nsize;
    return p;
}

static int host_panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "cmkflow: unprotected error in Lua: %s\n", msg ? msg : "(not a string)");
    return 0; /* abort() follows */
}

/* [-(narg+1), +nres, -] */
static int docall(cmkflow_host *h, int narg, int nres)
{
    lua_State *L = h->L;
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, cmk_msghandler);
    lua_insert(L, base);
    int status = lua_pcall(L, narg, nres, base);
    lua_remove(L, base);
    return status;
}

/* ---- cmkflow.core.limits: the host's limits seen from Lua -------------------------- */

static const char host_key = 'h';

static cmkflow_host *limits_host(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &host_key);
    cmkflow_host *h = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return h;
}

/* [-1, +0, e] limits.set{instructions = n, memory = bytes}: 0 lifts a limit. No-op outside the
 * host (stock lua5.4 loading cmkflow.core). */
static int limits_set(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    cmkflow_host *h = limits_host(L);
    if (!h)
        return 0;
    if (lua_getfield(L, 1, "instructions") != LUA_TNIL) {
        lua_Integer n = luaL_checkinteger(L, -1);
        luaL_argcheck(L, n >= 0, 1, "instructions must be >= 0");
        h->instruction_limit = (unsigned long long)n;
    }
    if (lua_getfield(L, 1, "memory") != LUA_TNIL) {
        lua_Integer n = luaL_checkinteger(L, -1);
        luaL_argcheck(L, n >= 0, 1, "memory must be >= 0");
        h->memory_limit = (size_t)n;
    }
    return 0;
}

/* [-0, +0, -] limits.begin(): a run starts; its instruction count starts from zero. */
static int limits_begin(lua_State *L)
{
    cmkflow_host *h = limits_host(L);
    if (h) {
        h->instructions = 0;
        h->instruction_raised_ms = 0;
        h->memory_refused = 0;
    }
    return 0;
}

/* [-0, +1, m] limits.usage() -> {instructions, instruction_limit, memory, memory_limit} | nil */
static int limits_usage(lua_State *L)
{
    cmkflow_host *h = limits_host(L);
    if (!h) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)h->instructions);
    lua_setfield(L, -2, "instructions");
    lua_pushinteger(L, (lua_Integer)h->instruction_limit);
    lua_setfield(L, -2, "instruction_limit");
    lua_pushinteger(L, (lua_Integer)h->memory_used);
    lua_setfield(L, -2, "memory");
    lua_pushinteger(L, (lua_Integer)h->memory_limit);
    lua_setfield(L, -2, "memory_limit");
    return 1;
}

/* [-1, +1, m] limits.memory_error(e): e if it is not the allocator's refusal at the limit, else a
 * MemoryLimit error table (Lua raises "not enough memory" without calling a message handler). */
static int limits_memory_error(lua_State *L)
{
    cmkflow_host *h = limits_host(L);
    lua_settop(L, 1);
    if (!h || !h->memory_refused || lua_type(L, 1) != LUA_TSTRING ||
        strcmp(lua_tostring(L, 1), "not enough memory") != 0)
        return 1;
    h->memory_refused = 0;
    lua_pushfstring(L, "the run's Lua state reached its memory limit of %I MiB (limits.memory_mb)",
                    (lua_Integer)(h->memory_limit >> 20));
    push_limit_error(L, "MemoryLimit", lua_tostring(L, -1),
                     "a step holds more data than expected; if it is legitimate, raise limits.memory_mb in the "
                     "configuration file (docs/configuration.md)");
    return 1;
}

int luaopen_cmkflow_core_limits(lua_State *L)
{
    static const luaL_Reg fns[] = {{"set", limits_set},
                                   {"begin", limits_begin},
                                   {"usage", limits_usage},
                                   {"memory_error", limits_memory_error},
                                   {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_pushinteger(L, CMKFLOW_DEFAULT_INSTRUCTIONS);
    lua_setfield(L, -2, "DEFAULT_INSTRUCTIONS");
    lua_pushinteger(L, CMKFLOW_DEFAULT_MEMORY);
    lua_setfield(L, -2, "DEFAULT_MEMORY");
    return 1;
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

/* [-0, +1, e] push the Lua module named by upvalue 1 */
static int push_module(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_call(L, 1, 1);
    return 1;
}

/* Call require(module)[fn](...) with nargs on the stack; maps failures to a status. The host's
 * configuration is cmkflow.host; running workflows is the application layer's cmkflow.app.api
 * (the same pipeline as the CLI). */
static int call_module(cmkflow_host *h, const char *module, const char *fn, int nargs, int nres)
{
    lua_State *L = h->L;
    lua_pushstring(L, module);
    lua_pushcclosure(L, push_module, 1);
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
        int sig = h->interrupted;
        clear_interrupt(h);
        return sig == SIGTERM ? CMKFLOW_TERMINATED : sig ? CMKFLOW_INTERRUPTED : CMKFLOW_FAILED;
    }
    return CMKFLOW_OK;
}

static int call_host(cmkflow_host *h, const char *fn, int nargs, int nres)
{
    return call_module(h, "cmkflow.host", fn, nargs, nres);
}

/* ---- public API -------------------------------------------------------------------- */

const char *cmkflow_version(void) { return CMKFLOW_VERSION; }

cmkflow_host *cmkflow_host_new(void)
{
    cmkflow_host *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->memory_limit = CMKFLOW_DEFAULT_MEMORY;
    h->instruction_limit = CMKFLOW_DEFAULT_INSTRUCTIONS;
    h->L = lua_newstate(host_alloc, h);
    if (!h->L) {
        free(h);
        return NULL;
    }
    lua_atpanic(h->L, host_panic);
    /* new threads copy the main thread's extra space and hook: every coroutine finds the host */
    *(cmkflow_host **)lua_getextraspace(h->L) = h;
    lua_pushlightuserdata(h->L, h);
    lua_rawsetp(h->L, LUA_REGISTRYINDEX, &host_key);
    lua_sethook(h->L, count_hook, LUA_MASKCOUNT, HOOK_COUNT);
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

/* [-0, +2, e] push context name and a new credential, bound to the host's cloud: its authority,
 * extra CA and, for the emulator, the routes that keep every request on it (a secret meant for
 * the emulator never goes towards real Azure's login service). */
static int push_cred(lua_State *L)
{
    const struct push_cred_args *a = lua_touserdata(L, 1);
    const struct cmkflow_credential_spec *c = a->spec;
    if (c->size < offsetof(struct cmkflow_credential_spec, identity_client_id) + sizeof c->identity_client_id)
        return luaL_error(L, "credential: set .size = sizeof(struct cmkflow_credential_spec)");
    struct auth_spec s = {
        .kind = c->kind, .tenant = c->tenant_id, .client_id = c->client_id,
        .client_secret = c->client_secret, .certificate_path = c->certificate_path,
        .certificate_password = c->certificate_password,
        .token_file = c->federated_token_file, .identity_client_id = c->identity_client_id,
    };
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cmkflow.host");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "current_cloud");
    lua_call(L, 0, 1); /* index 3: the cloud, keeps the strings below alive */
    lua_getfield(L, 3, "authority");
    s.authority = lua_tostring(L, -1);
    lua_getfield(L, 3, "ca_file");
    s.ca_file = lua_tostring(L, -1);
    const char *routes[16] = {0};
    if (lua_getfield(L, 3, "connect_to") == LUA_TTABLE) {
        int t = lua_gettop(L);
        luaL_checkstack(L, 16, "connect_to");
        for (int i = 0; i < 15 && lua_rawgeti(L, t, i + 1) == LUA_TSTRING; i++)
            routes[i] = lua_tostring(L, -1); /* stays on the stack until we return */
        s.connect_to = routes[0] ? routes : NULL;
    }
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

/* Calls cmkflow.app.api[fn] with the nargs strings on the stack -> status, result JSON (a string)
 * or error; the result goes to result_json, the error to last_error and last_error_json. */
static int api_call(cmkflow_host *h, const char *fn, int nargs)
{
    lua_State *L = h->L;
    set_string(&h->result_json, NULL);
    set_string(&h->last_error, NULL);
    set_string(&h->last_error_json, NULL);
    int rc = call_module(h, "cmkflow.app.api", fn, nargs, 2);
    if (rc != CMKFLOW_OK)
        return rc;
    rc = (int)lua_tointeger(L, -2);
    if (h->interrupted) {
        /* the run ended another way after the signal (a __close handler replaced the error) */
        rc = h->interrupted == SIGTERM ? CMKFLOW_TERMINATED : CMKFLOW_INTERRUPTED;
        clear_interrupt(h);
        cmk_push_interrupt(L);
        record_error(h);
        lua_pop(L, 2);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        /* a run that succeeded or waits at a gate (CMKFLOW_WAITING), a list: its result */
        set_string(&h->result_json, lua_tostring(L, -1));
        lua_pop(L, 2);
    } else if (lua_isnil(L, -1)) {
        lua_pop(L, 2);
    } else {
        record_error(h); /* the error value (table or message) */
        lua_pop(L, 1);
    }
    return rc;
}

/* Runs cmkflow.app.api.run(kind, what, chunkname, params_json). */
static int run(cmkflow_host *h, const char *kind, const char *what, const char *chunkname,
               const char *params_json)
{
    lua_pushstring(h->L, kind);
    lua_pushstring(h->L, what);
    lua_pushstring(h->L, chunkname);
    lua_pushstring(h->L, params_json);
    return api_call(h, "run", 4);
}

/* api_call with up to four string arguments (NULL pushes nil). */
static int api_call_s(cmkflow_host *h, const char *fn, int n, const char *a, const char *b, const char *c,
                      const char *d)
{
    const char *args[4] = {a, b, c, d};
    for (int i = 0; i < n; i++)
        lua_pushstring(h->L, args[i]);
    return api_call(h, fn, n);
}

int cmkflow_host_set_subscription(cmkflow_host *h, const char *context, const char *subscription_id)
{
    return api_call_s(h, "set_subscription", 2, context, subscription_id, NULL, NULL);
}

int cmkflow_host_set_config(cmkflow_host *h, const char *path)
{
    return api_call_s(h, "set_config", 1, path, NULL, NULL, NULL);
}

int cmkflow_host_set_policy(cmkflow_host *h, const char *path)
{
    return api_call_s(h, "set_policy", 1, path, NULL, NULL, NULL);
}

int cmkflow_host_set_state_dir(cmkflow_host *h, const char *dir)
{
    return api_call_s(h, "set_state_dir", 1, dir, NULL, NULL, NULL);
}

int cmkflow_host_resume(cmkflow_host *h, const char *run_id)
{
    return api_call_s(h, "resume", 1, run_id, NULL, NULL, NULL);
}

int cmkflow_host_approve(cmkflow_host *h, const char *run_id, const char *gate, int approve,
                         const char *values_json)
{
    return api_call_s(h, "approve", 4, run_id, gate, approve ? "approved" : "rejected", values_json);
}

int cmkflow_host_cancel(cmkflow_host *h, const char *run_id)
{
    return api_call_s(h, "cancel", 1, run_id, NULL, NULL, NULL);
}

int cmkflow_host_list_runs(cmkflow_host *h)
{
    return api_call_s(h, "list_runs", 0, NULL, NULL, NULL, NULL);
}

int cmkflow_host_show_run(cmkflow_host *h, const char *run_id)
{
    return api_call_s(h, "show_run", 1, run_id, NULL, NULL, NULL);
}

/* [-1, +0, -] the event sink cmkflow.app.api calls with each event as JSON */
static int emit_event(lua_State *L)
{
    cmkflow_host *h = lua_touserdata(L, lua_upvalueindex(1));
    const char *event = luaL_checkstring(L, 1);
    if (h->on_event)
        h->on_event(event, h->event_userdata);
    return 0;
}

void cmkflow_host_set_event_callback(cmkflow_host *h, cmkflow_event_fn fn, void *userdata)
{
    h->on_event = fn;
    h->event_userdata = userdata;
    if (fn) {
        lua_pushlightuserdata(h->L, h);
        lua_pushcclosure(h->L, emit_event, 1);
    } else {
        lua_pushnil(h->L);
    }
    (void)api_call(h, "set_event_sink", 1);
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
    /* the program, not the library, owns the signals */
    signalled_host = h;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
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
    /* a run stopped by a signal says which (docs/exit-codes.md): 130 Ctrl-C, 143 SIGTERM */
    if (h->interrupted && rc != CMKFLOW_OK)
        rc = h->interrupted == SIGTERM ? CMKFLOW_TERMINATED : CMKFLOW_INTERRUPTED;
    fflush(stdout);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signalled_host = NULL;
    cmkflow_host_free(h);
    return rc;
}
