/*
 * server.c: an HTTPS (or HTTP) server on libmicrohttpd whose handler is Lua code running in a
 * lua_State of its own on the server's thread. The test server of issue 2 and the emulator of
 * issue 3 are both handler scripts on top of it.
 *
 * Lua view (cmkflow.core.server):
 *   srv = server.start{ listen = "127.0.0.1:0", tls = true, cert_pem = ..., key_pem = ...,
 *                       handler = "path/to/handler.lua" | handler_source = "...", config = json_string }
 *   srv:port(), srv:url(), srv:stop()
 * The handler file returns function(req, config) -> status, headers, body
 *   req = {method, path, query, headers (lower-case names), body, host}
 *   returning nil drops the connection (fault injection).
 *   certgen: server.make_ca() / server.make_cert(...) generate PEM for tests and the emulator.
 */
#ifndef CMKFLOW_SERVER_H
#define CMKFLOW_SERVER_H
#include "cmk.h"
#endif
