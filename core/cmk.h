/*
 * Internal declarations shared by the core's modules.
 *
 * Module map (each file one job; symbols prefixed by module). The layers, lowest first, and the
 * check that no #include goes against them: tools/layers/check.lua (ctest c_layers).
 *   buf.c            the growable secret-wiping buffer, buf_secret_free
 *   lerror.c         error tables {code,message,status,target,request_id,retryable,tenant,kind}
 *   crypto_*.c       encodings, hashes and UUIDs, RSA keys/certificates/signatures/OAEP (no Lua)
 *   redact.c         scrubbing secrets out of traces and messages
 *   certgen.c        throw-away X.509 material for the test server and the emulator
 *   json.c           JSON <-> Lua over jansson, keeping [] vs {} and null
 *   jose.c           JWT/JWS: sign RS256/PS256, parse, verify (no Lua)
 *   http_*.c         libcurl multi session: transfers, requests, retries, traces
 *   store.c          the run store's SQLite file and migrations
 *   server*.c        HTTPS server (libmicrohttpd) whose handler is Lua in its own state
 *   auth_*.c         credential providers and the token cache
 *   lcrypto*.c       the key userdata and cmkflow.core.crypto
 *   l<module>.c      the Lua bindings of http, auth, jose, server, store; lexit.c the exit codes
 *   fs.c             directories, private files and run locks without a shell
 *   config.c, keypool.c, lmod.c (cmkflow.core), host.c (the Lua host: loader, protected calls,
 *                    signals, limits)
 */
#ifndef CMKFLOW_CMK_H
#define CMKFLOW_CMK_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>
#include <lauxlib.h>

/* ---- errors (lerror.c) --------------------------------------------------- */

/* A remote or environment failure. All strings are borrowed; none may hold a secret. */
struct cmk_error {
    const char *code;       /* "AADSTS7000215", "InvalidAuthenticationTokenTenant", "ConnectionFailed" */
    const char *message;    /* operator-facing text */
    int status;             /* HTTP status, 0 when none */
    const char *target;     /* URL or resource the failure is about, may be NULL */
    const char *request_id; /* x-ms-request-id or similar, may be NULL */
    int retryable;
    const char *tenant;     /* tenant that must act, may be NULL */
    const char *kind;       /* a local failure's class: "network", "tls", "config"; NULL for a
                               remote answer (static text) */
};

/* [-0, +1, m] Push an error table with the "cmkflow.error" metatable (__tostring). */
void cmk_push_error(lua_State *L, const struct cmk_error *e);
/* [-0, +2, m] Push nil and an error table; returns 2 for `return cmk_fail(L, &e)`. */
int cmk_fail(lua_State *L, const struct cmk_error *e);

/* [-0, +1, m] Push the interruption sentinel (one error table per state, code "Interrupted"). */
void cmk_push_interrupt(lua_State *L);
/* [-0, +0, -] Is the value at idx the interruption sentinel? */
int cmk_is_interrupt(lua_State *L, int idx);
/* [-1, +1, -] Message handler for lua_pcall: error tables pass unchanged; any other value becomes
 * its message (or __tostring) plus a traceback, as lua.c's msghandler. Every entry into Lua goes through it. */
int cmk_msghandler(lua_State *L);

/* ---- submodules: each builds one table; lmod.c assembles cmkflow.core ----- */

int luaopen_cmkflow_core_json(lua_State *L);
int luaopen_cmkflow_core_crypto(lua_State *L);
int luaopen_cmkflow_core_jose(lua_State *L);
int luaopen_cmkflow_core_http(lua_State *L);
int luaopen_cmkflow_core_auth(lua_State *L);
int luaopen_cmkflow_core_server(lua_State *L);
int luaopen_cmkflow_core_store(lua_State *L);
int luaopen_cmkflow_core_error(lua_State *L);
int luaopen_cmkflow_core_config(lua_State *L);
int luaopen_cmkflow_core_keypool(lua_State *L);
int luaopen_cmkflow_core_exit(lua_State *L);
int luaopen_cmkflow_core_durable(lua_State *L);
/* exported from core.so for the stock lua5.4 (hidden in libcmkflow by its version script) */
__attribute__((visibility("default"))) int luaopen_cmkflow_core(lua_State *L);
int luaopen_cmkflow_core_fs(lua_State *L);
int luaopen_cmkflow_core_limits(lua_State *L);

/* Default limits of a run (docs/configuration.md, "Limits"); the config file's `limits` overrides. */
#define CMKFLOW_DEFAULT_INSTRUCTIONS 2000000000LL /* Lua instructions: ~10 s of pure Lua CPU */
#define CMKFLOW_DEFAULT_MEMORY (512LL << 20)       /* bytes held by the Lua state */

/* [-0, +0, -] Register the embedded-source searcher (used by the host and by cmkflow.core). */
void host_install_searcher(lua_State *L);

/* The CLI entry point (host.c): runs require("cmkflow.cli").main(args) protected. */
int cmkflow_main(int argc, char **argv);

#endif
