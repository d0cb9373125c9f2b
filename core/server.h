/*
 * The server module (server.c, server_dispatch.c; Lua bindings lserver.c): an HTTPS (or HTTP)
 * server on libmicrohttpd whose request handler is Lua code running in a lua_State of its own on
 * the server's thread. The test server (spec/support/testserver.lua) and
 * the Azure emulator are both handler scripts on top of it.
 *
 * ---- Lua view (cmkflow.core.server) -------------------------------------------------------------
 *   srv = server.start{
 *     listen  = "127.0.0.1:0",     -- loopback IP literal only ("127.x.y.z:P", "[::1]:P"); 0 = ephemeral
 *     tls     = true,              -- default: true when cert_pem is given
 *     cert_pem = pem, key_pem = pem,                        -- required with tls
 *     handler = "path.lua" | handler_source = "lua" | handler_module = "mod.name",  -- exactly one
 *     config  = "json text",       -- passed verbatim (a string) to the handler
 *     threads = 1,                 -- only 1: the handler state is single-threaded
 *     debug   = false,             -- true: libmicrohttpd's own log lines go to stderr
 *   }                              -- raises on misuse (bad listen, handler load/init error);
 *                                  -- returns nil, err when the daemon cannot start (port in use)
 *   srv:port() -> integer          srv:url() -> "https://127.0.0.1:PORT" ("http://" without tls)
 *   srv:stats() -> {requests = n, contexts = n}   (contexts: request records allocated, pooled)
 *   srv:stop()                     -- idempotent; also __gc and __close; server.stop(srv) is the same.
 *                                  -- Joins the thread, closes connections (delayed responses still
 *                                  -- pending are dropped), lua_close's the handler state.
 *   server.make_ca([cn]) -> cert_pem, key_pem                       (nil, err on OpenSSL failure)
 *   server.make_cert(ca_cert_pem, ca_key_pem [, {dns = {...}, ip = {...}}]) -> cert_pem, key_pem
 *                                  -- names default to server.default_names()
 *   server.default_names() -> {dns = {"localhost", "*.vault.localhost", "management.azure.com", ...},
 *                              ip = {"127.0.0.1", "::1"}}
 *   server.proxy{listen = "127.0.0.1:0", target = "127.0.0.1:PORT" (the server's), hosts = {names},
 *                max_connections = 64, idle_seconds = 30}
 *                                  -> proxy | nil, err (the HTTPS proxy below; err.code AddressInUse
 *                                  -- when listen is taken, as for server.start)
 *   proxy:port(), proxy:url() -> "http://127.0.0.1:PORT", proxy:stats() -> {refused = n},
 *   proxy:stop() (also __gc, __close)
 *
 * The handler chunk (file, source or module) returns either
 *   function(req, config) -> status, headers, body [, delay_ms]
 * or a table { init = function(config) end (optional, run once at start; an error fails start),
 *              handle = function(req, config) -> status, headers, body [, delay_ms [, commit]],
 *              commit = function() -> true | false, code, message (optional; group commit) }.
 *   req = { method, path (percent-decoded, no query), query (raw query string, "" if none),
 *           args (decoded query arguments; first value wins), headers (lower-case names; repeated
 *           headers joined with ", "), body (string, "" if none), host (Host header, lower-case,
 *           without port), port (the server's port), remote (client IP), scheme ("https"/"http") }
 *   headers: {name = "value" | number | {"v1", "v2"}}; Content-Length is computed (a given one is
 *            ignored). body: string (or nil = empty).
 *   status nil       -> the connection is closed without a response (fault injection: curl exit 52)
 *   delay_ms > 0     -> the response is sent after that many milliseconds (max 600000)
 *   commit true      -> (with a commit function) the response is held until commit() has run: once
 *                       per turn of the server loop, for every request that turn handled, before any
 *                       of their answers leaves (the emulator makes all their changes durable with
 *                       one write); when it returns false, each of them is answered 500 with
 *                       {"error":{"code","message"}} from its results instead
 *   handler error    -> 500 {"error":{"code":"InternalServerError","message":"... (error N; details
 *                       are in its log)"}}; the error and its traceback go to stderr only (they
 *                       name source paths)
 * Before the handler: bodies over 4 MiB get 413, bodies in flight over 32 MiB 503, JSON bodies
 * nesting deeper than 64 levels 400, a path with %00 400, a Transfer-Encoding other than chunked
 * 501 (JSON errors, server_int.h); at most 512 connections (256 per address), 30 s idle/slow
 * timeout, TLS 1.2+ (docs/emulator.md "Limits").
 * The handler state has the standard libraries, package.path/cpath from LUA_PATH/LUA_CPATH and
 * the embedded-module searcher (require "cmkflow.core" works).
 *
 * ---- Design -------------------------------------------------------------------------------------
 * One thread per server runs its own loop around libmicrohttpd in external-epoll mode
 * (MHD_USE_EPOLL without an internal thread): poll() on MHD's epoll fd and an eventfd (stop), with
 * a timeout that is the minimum of MHD_get_timeout() and the earliest delayed response, then
 * MHD_run(). Delayed responses are built immediately, the connection is suspended
 * (MHD_suspend_connection) and kept in a due-time-sorted list; the loop resumes it when due and the
 * access handler queues the stored response. Everything that touches the lua_State (load, init,
 * requests) runs on the server thread after start; start and stop own it before/after the thread.
 * Request records (raw query + body buffer) come from a per-server free list: no allocation per
 * request in steady state beyond Lua's own. Bodies are accumulated in that buffer and pushed to
 * Lua once; response bodies are copied once into MHD. HTTP/1.1 keep-alive is MHD's default.
 * SIGPIPE is blocked on the server thread.
 */
#ifndef CMKFLOW_SERVER_H
#define CMKFLOW_SERVER_H
#include "cmk.h"

struct cmk_server;

struct server_options {
    const char *listen;         /* NULL = "127.0.0.1:0" */
    int tls;
    const char *cert_pem;       /* borrowed; copied */
    const char *key_pem;        /* borrowed; copied and wiped on stop */
    const char *handler_path;   /* exactly one of these three */
    const char *handler_source;
    size_t handler_source_len;
    const char *handler_module;
    const char *config;         /* may be NULL (handler gets nil) */
    size_t config_len;
    int debug;
};

enum { SERVER_OK = 0, SERVER_EUSAGE = 1, SERVER_EENV = 2, SERVER_EINUSE = 3 };

/* Start a server. Returns it, or NULL with *kind = SERVER_EUSAGE (bad options, handler failed to
 * load or init), SERVER_EINUSE (the address is taken) or SERVER_EENV (socket/TLS/thread failure)
 * and a message in err. */
struct cmk_server *server_start(const struct server_options *o, int *kind, char *err, size_t errlen);
unsigned server_port(const struct cmk_server *s);
/* "https://127.0.0.1:PORT"; owned by the server. */
const char *server_url(const struct cmk_server *s);
unsigned long server_requests(const struct cmk_server *s);
/* Request records allocated (pooled ones included). */
unsigned server_contexts(const struct cmk_server *s);
/* Stop the thread, close all connections, lua_close the handler state, free s. NULL is a no-op. */
void server_stop(struct cmk_server *s);

/* Parse "127.0.0.1:0" / "[::1]:8443": 0 and the parts, or -1 with a message for anything that is not
 * a loopback IP literal with a port. host must hold 46 bytes. */
int server_parse_listen(const char *listen, char host[46], int *ipv6, unsigned *port, char *err,
                        size_t errlen);

/* Bind (and listen, when backlog > 0) a socket on a loopback HOST:PORT: SERVER_OK with the fd and
 * the bound port (port_out may be NULL), or SERVER_EUSAGE / SERVER_EINUSE / SERVER_EENV with a
 * message ("127.0.0.1:10443 is already in use"). The caller owns the fd. */
int server_bind_listen(const char *listen, int backlog, int *fd_out, unsigned *port_out, char *err,
                       size_t errlen);

/* ---- the HTTPS proxy (server_proxy.c) ------------------------------------------------------------
 * A loopback listener of its own (one thread, poll(), non-blocking sockets) that reads
 * `CONNECT host:443 HTTP/1.x` and its headers, answers `200 Connection established` only when host
 * is one of `hosts` ("name" exactly, or "*.suffix" for one more label), then relays the bytes both
 * ways to `target`, the emulator's own TLS listener: the client does TLS with the emulator's
 * certificate, so it needs HTTPS_PROXY and the emulator's CA, nothing else. Any other host or port
 * is 403, any other method 405 (plain HTTP is not proxied), a head over 8 KiB 431: the proxy never
 * connects anywhere but target. At most max_tunnels connections at once (requests being read
 * included); one more is answered 503 and closed at once, never left waiting. A connection with no
 * byte moving for idle_s seconds is closed. Tunnels close when either side has closed and its
 * bytes are delivered (HTTPS needs no half-open tunnel). */
struct cmk_proxy;

struct proxy_options {
    const char *listen;          /* loopback HOST:PORT; NULL = "127.0.0.1:0" */
    const char *target;          /* the emulator's loopback HOST:PORT */
    const char *const *hosts;    /* NULL-terminated; copied */
    unsigned max_tunnels;        /* 0 = 64 */
    unsigned idle_s;             /* 0 = 30 */
};

/* Start a proxy; NULL with *kind and err as server_start. */
struct cmk_proxy *proxy_start(const struct proxy_options *o, int *kind, char *err, size_t errlen);
unsigned proxy_port(const struct cmk_proxy *p);
/* "http://127.0.0.1:PORT"; owned by the proxy. */
const char *proxy_url(const struct cmk_proxy *p);
/* Connections refused at the bound so far. */
unsigned long proxy_refused(const struct cmk_proxy *p);
/* Stop the thread and close every connection; free p. NULL is a no-op. */
void proxy_stop(struct cmk_proxy *p);

#endif
