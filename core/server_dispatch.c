/* server_dispatch.c: one request through the server: its body collected, the Lua handler called
 * in the server's own state, the answer queued now or after its delay (server.h). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <lualib.h>
#include "server_int.h"

/* ---- the Lua side ----------------------------------------------------------------------------- */

struct dispatch {
    struct cmk_server *s;
    struct req *r;
    struct MHD_Connection *conn;
    const char *url, *method;
    struct MHD_Response *response; /* out */
    unsigned status;               /* out; 0 = drop the connection */
    long delay_ms;                 /* out */
    int commit;                    /* out: the answer waits for the next commit */
};

/* MHD_KeyValueIterator: headers into the table on top of the stack, names lower-cased. */
static enum MHD_Result push_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    lua_State *L = cls;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (const char *p = key; *p; p++)
        luaL_addchar(&b, (char)tolower((unsigned char)*p));
    luaL_pushresult(&b);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) { /* repeated header: join with ", " */
        lua_pushliteral(L, ", ");
        lua_pushstring(L, value ? value : "");
        lua_concat(L, 3);
    } else {
        lua_pop(L, 1);
        lua_pushstring(L, value ? value : "");
    }
    lua_rawset(L, -3);
    return MHD_YES;
}

static enum MHD_Result push_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    lua_State *L = cls;
    if (!key)
        return MHD_YES;
    if (lua_getfield(L, -1, key) == LUA_TNIL) {
        lua_pushstring(L, value ? value : "");
        lua_setfield(L, -3, key);
    }
    lua_pop(L, 1);
    return MHD_YES;
}

/* [-0, +1, m] the Host header without port, lower-case ("" when absent) */
static void push_host(lua_State *L, struct MHD_Connection *conn)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (!h) {
        lua_pushliteral(L, "");
        return;
    }
    size_t n;
    if (h[0] == '[') {
        h++;
        n = strcspn(h, "]");
    } else {
        n = strcspn(h, ":");
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++)
        luaL_addchar(&b, (char)tolower((unsigned char)h[i]));
    luaL_pushresult(&b);
}

static void push_remote(lua_State *L, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char buf[INET6_ADDRSTRLEN] = "";
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf, sizeof buf);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf,
                      sizeof buf);
    }
    lua_pushstring(L, buf);
}

/* A header value at index idx as text, without calls that can raise; buf is scratch. */
static const char *header_text(lua_State *L, int idx, char *buf, size_t len)
{
    if (lua_type(L, idx) == LUA_TSTRING)
        return lua_tostring(L, idx);
    if (lua_isinteger(L, idx))
        snprintf(buf, len, "%lld", (long long)lua_tointeger(L, idx));
    else
        snprintf(buf, len, "%.14g", (double)lua_tonumber(L, idx));
    return buf;
}

static int header_value_ok(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    return t == LUA_TSTRING || t == LUA_TNUMBER;
}

/* Validate the headers table at idx (raises on a bad entry). */
static void check_headers(lua_State *L, int idx)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "handler returned a header name that is not a string");
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, i);
                if (!header_value_ok(L, -1))
                    luaL_error(L, "handler returned a bad value for header '%s'", lua_tostring(L, -3));
                lua_pop(L, 1);
            }
        } else if (!header_value_ok(L, -1)) {
            luaL_error(L, "handler returned a bad value for header '%s'", lua_tostring(L, -2));
        }
        lua_pop(L, 1);
    }
}

/* Add the (validated) headers at idx to resp; no Lua call here can raise. */
static int add_headers(lua_State *L, int idx, struct MHD_Response *resp)
{
    char num[64];
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *name = lua_tostring(L, -2);
        if (strcasecmp(name, "content-length") != 0) {
            if (lua_type(L, -1) == LUA_TTABLE) {
                lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
                for (lua_Integer i = 1; i <= n; i++) {
                    lua_rawgeti(L, -1, i);
                    const char *v = header_text(L, -1, num, sizeof num);
                    int ok = MHD_add_response_header(resp, name, v) == MHD_YES;
                    lua_pop(L, 1);
                    if (!ok) {
                        lua_pop(L, 2);
                        return -1;
                    }
                }
            } else if (MHD_add_response_header(resp, name, header_text(L, -1, num, sizeof num)) != MHD_YES) {
                lua_pop(L, 2);
                return -1;
            }
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* [-1, +0, e] runs protected in the handler state: build req, call the handler, build the response. */
static int dispatch_lua(lua_State *L)
{
    struct dispatch *d = lua_touserdata(L, 1);
    struct cmk_server *s = d->s;
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->handler_ref);
    lua_createtable(L, 0, 11);
    lua_pushstring(L, d->method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, d->url);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, d->r->query.data && !d->r->query.oom ? d->r->query.data : "");
    lua_setfield(L, -2, "query");
    lua_createtable(L, 0, 2);
    MHD_get_connection_values(d->conn, MHD_GET_ARGUMENT_KIND, push_arg, L);
    lua_setfield(L, -2, "args");
    lua_createtable(L, 0, 8);
    MHD_get_connection_values(d->conn, MHD_HEADER_KIND, push_header, L);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, d->r->body.data ? d->r->body.data : "", d->r->body.len);
    lua_setfield(L, -2, "body");
    push_host(L, d->conn);
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, s->port);
    lua_setfield(L, -2, "port");
    push_remote(L, d->conn);
    lua_setfield(L, -2, "remote");
    lua_pushstring(L, s->tls ? "https" : "http");
    lua_setfield(L, -2, "scheme");
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->config_ref);
    lua_call(L, 2, 5); /* status, headers, body, delay_ms, commit at 1..5 */

    if (lua_isnil(L, 1)) {
        d->status = 0;
        return 0;
    }
    int isint;
    lua_Integer status = lua_tointegerx(L, 1, &isint);
    if (!isint || status < 100 || status > 599)
        return luaL_error(L, "handler returned an invalid status (%s)", luaL_typename(L, 1));
    int ht = lua_type(L, 2);
    if (ht != LUA_TNIL && ht != LUA_TTABLE)
        return luaL_error(L, "handler returned headers that are not a table (%s)", luaL_typename(L, 2));
    int bt = lua_type(L, 3);
    if (bt != LUA_TNIL && bt != LUA_TSTRING)
        return luaL_error(L, "handler returned a body that is not a string (%s)", luaL_typename(L, 3));
    lua_Number delay = 0;
    if (!lua_isnoneornil(L, 4)) {
        int isnum;
        delay = lua_tonumberx(L, 4, &isnum);
        if (!isnum || delay < 0 || delay > MAX_DELAY_MS)
            return luaL_error(L, "handler returned an invalid delay_ms");
    }
    if (ht == LUA_TTABLE)
        check_headers(L, 2);
    size_t blen = 0;
    const char *body = bt == LUA_TSTRING ? lua_tolstring(L, 3, &blen) : "";
    /* from here on nothing raises until the response is handed to d */
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(blen, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return luaL_error(L, "out of memory creating the response");
    d->response = resp;
    if (ht == LUA_TTABLE && add_headers(L, 2, resp) != 0)
        return luaL_error(L, "could not add the response headers");
    d->status = (unsigned)status;
    d->delay_ms = (long)delay;
    d->commit = lua_toboolean(L, 5);
    return 0;
}

/* Copy msg into out as a JSON string body (without quotes), bounded. */
static void json_escape(const char *msg, size_t msglen, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < msglen && o + 7 < outlen; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, outlen - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

/* A JSON error answer {"error":{"code","message"}}, or NULL (out of memory). The caller owns it. */
static struct MHD_Response *error_response(const char *code, const char *msg, int close_after)
{
    char esc[2048], body[2300];
    json_escape(msg, strlen(msg), esc, sizeof esc);
    int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, esc);
    if (n < 0)
        return NULL;
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return NULL;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json; charset=utf-8");
    if (close_after)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    return resp;
}

enum MHD_Result server_respond_error(struct MHD_Connection *conn, unsigned status, const char *code,
                                     const char *msg, int close_after)
{
    struct MHD_Response *resp = error_response(code, msg, close_after);
    if (!resp)
        return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The deepest nesting of a JSON text's arrays and objects (strings skipped), stopping once it
 * passes limit: linear, no allocation. Bodies that do not start with '{' or '[' are not JSON
 * documents for this purpose (forms, text) and give 0. */
static int json_depth_exceeds(const char *p, size_t n, int limit)
{
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    if (i == n || (p[i] != '{' && p[i] != '['))
        return 0;
    int depth = 0, in_string = 0;
    for (; i < n; i++) {
        char c = p[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > limit)
                return 1;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return 0;
}

void server_release_body(struct cmk_server *s, struct req *r)
{
    s->body_bytes -= r->charged <= s->body_bytes ? r->charged : s->body_bytes;
    r->charged = 0;
}

/* Count n more body bytes of r against the server's budget: 0, or -1 when it is spent. A body
 * larger than SMALL_BODY may not take the last BODY_RESERVE bytes, so that ordinary requests are
 * still served while large uploads hold the rest. */
static int charge_body(struct cmk_server *s, struct req *r, size_t n)
{
    size_t limit = r->charged + n > SMALL_BODY ? MAX_BODY_TOTAL - BODY_RESERVE : MAX_BODY_TOTAL;
    if (s->body_bytes > limit || n > limit - s->body_bytes)
        return -1;
    s->body_bytes += n;
    r->charged += n;
    return 0;
}

/* Puts r (already suspended) in the due-time-sorted list the server loop resumes from. */
static void hold_until(struct cmk_server *s, struct req *r, uint64_t due)
{
    r->due_ms = due;
    struct req **p = &s->suspended;
    while (*p && (*p)->due_ms <= due)
        p = &(*p)->next;
    r->next = *p;
    *p = r;
    r->suspended = 1;
}

static void suspend_until(struct cmk_server *s, struct req *r, uint64_t due)
{
    hold_until(s, r, due);
    MHD_suspend_connection(r->conn);
}

/* [-0, +2, e] commit() protected: its results (true | false, code, message) */
static int commit_lua(lua_State *L)
{
    struct cmk_server *s = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->commit_ref);
    lua_call(L, 0, 3);
    return 3;
}

void server_commit(struct cmk_server *s)
{
    lua_State *L = s->L;
    lua_settop(L, 0);
    lua_pushcfunction(L, cmk_msghandler);
    lua_pushcfunction(L, commit_lua);
    lua_pushlightuserdata(L, s);
    int ok = 0;
    const char *code = "InternalServerError", *msg = "The server could not make the change durable.";
    if (lua_pcall(L, 1, 3, 1) != LUA_OK) {
        fprintf(stderr, "cmkflow server: commit failed: %s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error)");
    } else if (lua_toboolean(L, 2)) {
        ok = 1;
    } else {
        if (lua_type(L, 3) == LUA_TSTRING)
            code = lua_tostring(L, 3);
        if (lua_type(L, 4) == LUA_TSTRING)
            msg = lua_tostring(L, 4);
    }
    /* every held answer goes out now (or after its own delay); after a failed commit none of them
     * is a success: each becomes the error */
    uint64_t now = server_now_ms();
    while (s->committing) {
        struct req *r = s->committing;
        s->committing = r->next;
        r->next = NULL;
        r->committing = 0;
        if (!ok) {
            if (r->response)
                MHD_destroy_response(r->response);
            r->response = error_response(code, msg, 0);
            r->status = 500;
        }
        hold_until(s, r, ok && r->due_ms > now ? r->due_ms : now);
    }
    lua_settop(L, 0);
}

static enum MHD_Result dispatch(struct cmk_server *s, struct req *r, struct MHD_Connection *conn,
                                const char *url, const char *method)
{
    lua_State *L = s->L;
    struct dispatch d = {.s = s, .r = r, .conn = conn, .url = url, .method = method};
    atomic_fetch_add(&s->requests, 1);
    lua_settop(L, 0);
    lua_pushcfunction(L, cmk_msghandler);
    lua_pushcfunction(L, dispatch_lua);
    lua_pushlightuserdata(L, &d);
    if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
        if (d.response)
            MHD_destroy_response(d.response);
        size_t len;
        const char *tb = lua_tolstring(L, -1, &len);
        if (!tb)
            tb = "(error)", len = 7;
        /* the answer names the log line, never the error's text: it holds source paths */
        unsigned long id = ++s->error_n;
        fprintf(stderr, "cmkflow server: handler error %lu for %s %s: %s\n", id, method, url, tb);
        char msg[160];
        snprintf(msg, sizeof msg,
                 "The server failed to process the request (error %lu; details are in its log).", id);
        enum MHD_Result ret = server_respond_error(conn, 500, "InternalServerError", msg, 0);
        lua_settop(L, 0);
        return ret;
    }
    lua_settop(L, 0);
    if (d.status == 0)
        return MHD_NO; /* drop the connection */
    if (d.commit && s->commit_ref != LUA_NOREF) {
        /* held (suspended) until the commit after this turn of the loop: server_commit */
        r->response = d.response;
        r->status = d.status;
        r->due_ms = server_now_ms() + (uint64_t)d.delay_ms;
        r->next = s->committing;
        s->committing = r;
        r->committing = 1;
        MHD_suspend_connection(conn);
        return MHD_YES;
    }
    if (d.delay_ms > 0) {
        r->response = d.response;
        r->status = d.status;
        suspend_until(s, r, server_now_ms() + (uint64_t)d.delay_ms);
        return MHD_YES;
    }
    enum MHD_Result ret = MHD_queue_response(conn, d.status, d.response);
    MHD_destroy_response(d.response);
    return ret;
}

/* The request has a body when it says so (Content-Length > 0 or chunked Transfer-Encoding). */
static int expects_body(struct MHD_Connection *conn, size_t *length, int *too_large)
{
    *too_large = 0;
    *length = 0;
    if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        return 1;
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return 0;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    if (errno || n > MAX_BODY)
        *too_large = 1;
    *length = (size_t)n;
    return n > 0;
}

enum MHD_Result server_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct cmk_server *s = cls;
    struct req *r = *con_cls;
    if (!r)
        return MHD_NO; /* out of memory in on_uri */
    if (r->response) { /* resumed after a delay, or by stop (then the response is dropped) */
        struct MHD_Response *resp = r->response;
        r->response = NULL;
        enum MHD_Result ret = atomic_load_explicit(&s->stopping, memory_order_relaxed)
                                  ? MHD_NO
                                  : MHD_queue_response(conn, r->status, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    if (atomic_load_explicit(&s->stopping, memory_order_relaxed))
        return MHD_NO;
    if (!r->started) {
        r->started = 1;
        r->conn = conn;
        if (r->bad_path)
            return server_respond_error(conn, 400, "InvalidUri",
                                        "The request path holds an encoded NUL character (%00).", 1);
        const char *te =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        if (te && strcasecmp(te, "chunked") != 0) /* RFC 9112 6.1: an unknown coding is 501 */
            return server_respond_error(conn, 501, "NotImplemented",
                                        "Transfer-Encoding other than chunked is not supported.", 1);
        size_t length;
        int too_large;
        /* Answering now would make MHD close the connection (a response queued before the
         * request is complete ends keep-alive), so even body-less requests wait for the next call. */
        if (!expects_body(conn, &length, &too_large))
            return MHD_YES;
        if (too_large)
            return server_respond_error(conn, 413, "RequestEntityTooLarge",
                                        "The request body is larger than 4 MiB.", 1);
        if (length && charge_body(s, r, length) != 0)
            return server_respond_error(conn, 503, "ServerBusy",
                                        "Too many request bodies are being received; retry later.", 1);
        if (length && buf_reserve(&r->body, length) != 0)
            return MHD_NO;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->body.len + n > MAX_BODY)
            return server_respond_error(conn, 413, "RequestEntityTooLarge",
                                        "The request body is larger than 4 MiB.", 1);
        if (r->body.len + n > r->charged && charge_body(s, r, r->body.len + n - r->charged) != 0)
            return server_respond_error(conn, 503, "ServerBusy",
                                        "Too many request bodies are being received; retry later.", 1);
        if (buf_add(&r->body, upload_data, n) != 0)
            return MHD_NO;
        return MHD_YES;
    }
    if (r->body.len && json_depth_exceeds(r->body.data, r->body.len, MAX_JSON_DEPTH)) {
        static const char m[] = "The request content nests arrays and objects deeper than 64 levels.";
        return server_respond_error(conn, 400, "InvalidRequestContent", m, 0);
    }
    return dispatch(s, r, conn, url, method);
}
