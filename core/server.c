/* HTTPS server on libmicrohttpd with a Lua handler in its own state (design notes in server.h). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
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
#include <microhttpd.h>
#include <openssl/crypto.h>
#include "certgen.h"
#include "server.h"

#define SERVER_MT "cmkflow.server"
#define MAX_BODY ((size_t)64 << 20)  /* larger uploads get 413 */
#define POOL_MAX 64                  /* request records kept for reuse */
#define KEEP_BUF ((size_t)64 << 10)  /* larger body buffers are not kept in the pool */
#define MAX_DELAY_MS 600000
#define CONNECTION_TIMEOUT_S 120

/* One HTTP request (MHD's con_cls), created by the URI-log callback, returned in NOTIFY_COMPLETED. */
struct req {
    struct req *next;                /* free list or suspended list */
    struct req *all_next;            /* every record this server allocated */
    struct MHD_Connection *conn;
    struct MHD_Response *response;   /* a delayed response waiting for its due time */
    unsigned status;
    uint64_t due_ms;
    int started;                     /* the access handler has seen the headers */
    int suspended;
    char *query;                     /* raw query string, NUL-terminated */
    size_t query_cap;
    char *body;
    size_t body_len, body_cap;
};

struct cmk_server {
    struct MHD_Daemon *daemon;
    lua_State *L;
    int handler_ref, config_ref;
    pthread_t thread;
    int thread_started;
    int wake_fd;
    atomic_int stopping;
    atomic_ulong requests;
    unsigned port;
    int tls, ipv6, debug;
    char url[80];
    char *cert_pem, *key_pem;
    struct req *free_list, *all, *suspended;
    unsigned free_count;
    atomic_uint contexts; /* records allocated (read by stats from other threads) */
};

/* ---- small helpers ---------------------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* Grow *buf to hold at least need bytes. 0 on success. */
static int reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    char *p = realloc(*buf, n);
    if (!p)
        return -1;
    *buf = p;
    *cap = n;
    return 0;
}

static int is_loopback(const char *host, int ipv6)
{
    unsigned char a[16];
    if (!ipv6)
        return inet_pton(AF_INET, host, a) == 1 && a[0] == 127;
    static const unsigned char one[16] = {[15] = 1};
    return inet_pton(AF_INET6, host, a) == 1 && memcmp(a, one, 16) == 0;
}

int server_parse_listen(const char *listen, char host[46], int *ipv6, unsigned *port, char *err,
                        size_t errlen)
{
    const char *colon, *h = listen;
    size_t hlen;
    *ipv6 = 0;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            goto bad;
        h = listen + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
        *ipv6 = 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon)
            goto bad;
        hlen = (size_t)(colon - listen);
    }
    if (hlen == 0 || hlen >= 46)
        goto bad;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno || p < 0 || p > 65535)
        goto bad;
    *port = (unsigned)p;
    if (!is_loopback(host, *ipv6)) {
        snprintf(err, errlen,
                 "listen address '%s' refused: the server only binds a loopback IP literal "
                 "(127.0.0.1 or [::1])",
                 listen);
        return -1;
    }
    return 0;
bad:
    snprintf(err, errlen, "listen address '%s' is not HOST:PORT with a loopback IP literal host "
                          "(e.g. 127.0.0.1:0)", listen);
    return -1;
}

/* ---- request records -------------------------------------------------------------------------- */

static struct req *req_get(struct cmk_server *s)
{
    struct req *r = s->free_list;
    if (r) {
        s->free_list = r->next;
        s->free_count--;
    } else {
        r = calloc(1, sizeof *r);
        if (!r)
            return NULL;
        r->all_next = s->all;
        s->all = r;
        atomic_fetch_add(&s->contexts, 1);
    }
    r->next = NULL;
    r->conn = NULL;
    r->response = NULL;
    r->started = r->suspended = 0;
    r->body_len = 0;
    if (r->query)
        r->query[0] = '\0';
    return r;
}

static void unlink_suspended(struct cmk_server *s, struct req *r)
{
    for (struct req **p = &s->suspended; *p; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            break;
        }
    }
    r->suspended = 0;
    r->next = NULL;
}

static void req_put(struct cmk_server *s, struct req *r)
{
    if (r->suspended)
        unlink_suspended(s, r);
    if (r->response) {
        MHD_destroy_response(r->response);
        r->response = NULL;
    }
    if (r->body_cap > KEEP_BUF) {
        free(r->body);
        r->body = NULL;
        r->body_cap = 0;
    }
    r->body_len = 0;
    if (s->free_count < POOL_MAX) {
        r->next = s->free_list;
        s->free_list = r;
        s->free_count++;
    } else {
        /* beyond POOL_MAX idle records keep no buffers (records are freed at stop) */
        free(r->body);
        free(r->query);
        r->body = r->query = NULL;
        r->body_cap = r->query_cap = 0;
        r->next = s->free_list;
        s->free_list = r;
        s->free_count++;
    }
}

/* MHD_OPTION_URI_LOG_CALLBACK: the raw request target, before MHD splits off the query. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct cmk_server *s = cls;
    struct req *r = req_get(s);
    if (!r)
        return NULL;
    r->conn = conn;
    const char *q = uri ? strchr(uri, '?') : NULL;
    q = q ? q + 1 : "";
    size_t n = strcspn(q, "#");
    if (reserve(&r->query, &r->query_cap, n + 1) == 0) {
        memcpy(r->query, q, n);
        r->query[n] = '\0';
    }
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    struct cmk_server *s = cls;
    if (*con_cls)
        req_put(s, *con_cls);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct cmk_server *s = cls;
    if (s->debug) {
        fputs("cmkflow server: ", stderr);
        vfprintf(stderr, fmt, ap);
    }
}

/* ---- the Lua side ----------------------------------------------------------------------------- */

struct dispatch {
    struct cmk_server *s;
    struct req *r;
    struct MHD_Connection *conn;
    const char *url, *method;
    struct MHD_Response *response; /* out */
    unsigned status;               /* out; 0 = drop the connection */
    long delay_ms;                 /* out */
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
    lua_pushstring(L, d->r->query ? d->r->query : "");
    lua_setfield(L, -2, "query");
    lua_createtable(L, 0, 2);
    MHD_get_connection_values(d->conn, MHD_GET_ARGUMENT_KIND, push_arg, L);
    lua_setfield(L, -2, "args");
    lua_createtable(L, 0, 8);
    MHD_get_connection_values(d->conn, MHD_HEADER_KIND, push_header, L);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, d->r->body ? d->r->body : "", d->r->body_len);
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
    lua_call(L, 2, 4); /* status, headers, body, delay_ms at 1..4 */

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

static enum MHD_Result respond_error(struct MHD_Connection *conn, unsigned status, const char *code,
                                     const char *msg, size_t msglen)
{
    char esc[2048], body[2300];
    json_escape(msg, msglen, esc, sizeof esc);
    int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, esc);
    if (n < 0)
        return MHD_NO;
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json; charset=utf-8");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void suspend_until(struct cmk_server *s, struct req *r, uint64_t due)
{
    r->due_ms = due;
    struct req **p = &s->suspended;
    while (*p && (*p)->due_ms <= due)
        p = &(*p)->next;
    r->next = *p;
    *p = r;
    r->suspended = 1;
    MHD_suspend_connection(r->conn);
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
        fprintf(stderr, "cmkflow server: handler error for %s %s: %s\n", method, url, tb);
        const char *cut = strstr(tb, "\nstack traceback:");
        enum MHD_Result ret =
            respond_error(conn, 500, "InternalServerError", tb, cut ? (size_t)(cut - tb) : len);
        lua_settop(L, 0);
        return ret;
    }
    lua_settop(L, 0);
    if (d.status == 0)
        return MHD_NO; /* drop the connection */
    if (d.delay_ms > 0) {
        r->response = d.response;
        r->status = d.status;
        suspend_until(s, r, now_ms() + (uint64_t)d.delay_ms);
        return MHD_YES;
    }
    enum MHD_Result ret = MHD_queue_response(conn, d.status, d.response);
    MHD_destroy_response(d.response);
    return ret;
}

/* The request has a body when it says so (Content-Length > 0 or any Transfer-Encoding). */
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
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
        size_t length;
        int too_large;
        /* Answering now would make MHD close the connection (a response queued before the
         * request is complete ends keep-alive), so even body-less requests wait for the next call. */
        if (!expects_body(conn, &length, &too_large))
            return MHD_YES;
        if (too_large) {
            static const char m[] = "request body too large";
            return respond_error(conn, 413, "RequestEntityTooLarge", m, sizeof m - 1);
        }
        if (length && reserve(&r->body, &r->body_cap, length + 1) != 0)
            return MHD_NO;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        if (r->body_len + n > MAX_BODY || reserve(&r->body, &r->body_cap, r->body_len + n + 1) != 0)
            return MHD_NO;
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        *upload_data_size = 0;
        return MHD_YES;
    }
    return dispatch(s, r, conn, url, method);
}

/* ---- the server thread ------------------------------------------------------------------------ */

static void resume_due(struct cmk_server *s, uint64_t now, int all)
{
    while (s->suspended && (all || s->suspended->due_ms <= now)) {
        struct req *r = s->suspended;
        s->suspended = r->next;
        r->next = NULL;
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
}

static void *server_main(void *arg)
{
    struct cmk_server *s = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    int epfd = di ? di->epoll_fd : -1;
    while (!atomic_load(&s->stopping)) {
        int timeout = -1;
        MHD_UNSIGNED_LONG_LONG t;
        if (MHD_get_timeout(s->daemon, &t) == MHD_YES)
            timeout = t > INT_MAX ? INT_MAX : (int)t;
        if (s->suspended) {
            uint64_t now = now_ms(), due = s->suspended->due_ms;
            uint64_t wait = due > now ? due - now : 0;
            if (timeout < 0 || wait < (uint64_t)timeout)
                timeout = (int)wait;
        }
        struct pollfd p[2] = {{.fd = epfd, .events = POLLIN}, {.fd = s->wake_fd, .events = POLLIN}};
        if (poll(p, 2, timeout) < 0 && errno != EINTR) {
            fprintf(stderr, "cmkflow server: poll failed: %s\n", strerror(errno));
            break;
        }
        if (s->suspended)
            resume_due(s, now_ms(), 0);
        MHD_run(s->daemon);
    }
    /* connections must not be suspended when the daemon stops */
    resume_due(s, 0, 1);
    MHD_run(s->daemon);
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    return NULL;
}

/* ---- start / stop ----------------------------------------------------------------------------- */

struct load_args {
    struct cmk_server *s;
    const struct server_options *o;
};

/* [-1, +0, e] runs protected in the new state: libraries, searcher, handler chunk, init(config) */
static int load_handler(lua_State *L)
{
    struct load_args *a = lua_touserdata(L, 1);
    const struct server_options *o = a->o;
    luaL_openlibs(L);
    host_install_searcher(L);
    int status;
    if (o->handler_path) {
        status = luaL_loadfilex(L, o->handler_path, "t");
    } else if (o->handler_source) {
        status = luaL_loadbufferx(L, o->handler_source, o->handler_source_len, "=handler_source", "t");
    } else {
        lua_getglobal(L, "require");
        lua_pushstring(L, o->handler_module);
        lua_call(L, 1, 1);
        status = LUA_OK;
    }
    if (status != LUA_OK)
        return lua_error(L);
    if (!o->handler_module)
        lua_call(L, 0, 1);
    if (o->config)
        lua_pushlstring(L, o->config, o->config_len);
    else
        lua_pushnil(L);
    lua_pushvalue(L, -1);
    a->s->config_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* stack: chunk result, config */
    if (lua_type(L, -2) == LUA_TTABLE) {
        if (lua_getfield(L, -2, "handle") != LUA_TFUNCTION)
            return luaL_error(L, "handler table has no 'handle' function");
        a->s->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        if (lua_getfield(L, -2, "init") == LUA_TFUNCTION) {
            lua_pushvalue(L, -2);
            lua_call(L, 1, 0);
        } else {
            lua_pop(L, 1);
        }
    } else if (lua_type(L, -2) == LUA_TFUNCTION) {
        lua_pushvalue(L, -2);
        a->s->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        return luaL_error(L, "handler must return a function or a table with 'handle' (got %s)",
                          luaL_typename(L, -2));
    }
    return 0;
}

static void server_free(struct cmk_server *s)
{
    if (s->L)
        lua_close(s->L);
    for (struct req *r = s->all, *next; r; r = next) {
        next = r->all_next;
        if (r->response)
            MHD_destroy_response(r->response);
        free(r->body);
        free(r->query);
        free(r);
    }
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    free(s->cert_pem);
    wipe_free(s->key_pem);
    free(s);
}

void server_stop(struct cmk_server *s)
{
    if (!s)
        return;
    if (s->thread_started) {
        atomic_store(&s->stopping, 1);
        uint64_t one = 1;
        ssize_t w = write(s->wake_fd, &one, sizeof one);
        (void)w;
        pthread_join(s->thread, NULL);
    } else if (s->daemon) {
        MHD_stop_daemon(s->daemon);
    }
    server_free(s);
}

unsigned server_port(const struct cmk_server *s)
{
    return s->port;
}

const char *server_url(const struct cmk_server *s)
{
    return s->url;
}

unsigned long server_requests(const struct cmk_server *s)
{
    return atomic_load(&((struct cmk_server *)s)->requests);
}

struct cmk_server *server_start(const struct server_options *o, int *kind, char *err, size_t errlen)
{
    char host[46];
    int ipv6;
    unsigned port;
    *kind = SERVER_EUSAGE;
    if (server_parse_listen(o->listen ? o->listen : "127.0.0.1:0", host, &ipv6, &port, err, errlen))
        return NULL;
    int nsrc = !!o->handler_path + !!o->handler_source + !!o->handler_module;
    if (nsrc != 1) {
        snprintf(err, errlen, "exactly one of handler, handler_source, handler_module is required");
        return NULL;
    }
    if (o->tls && (!o->cert_pem || !o->key_pem)) {
        snprintf(err, errlen, "tls needs cert_pem and key_pem");
        return NULL;
    }
    struct cmk_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        *kind = SERVER_EENV;
        return NULL;
    }
    s->wake_fd = -1;
    s->handler_ref = s->config_ref = LUA_NOREF;
    s->tls = o->tls;
    s->ipv6 = ipv6;
    s->debug = o->debug;
    atomic_init(&s->stopping, 0);
    atomic_init(&s->requests, 0);
    atomic_init(&s->contexts, 0);

    s->L = luaL_newstate();
    if (!s->L) {
        snprintf(err, errlen, "out of memory");
        *kind = SERVER_EENV;
        goto fail;
    }
    lua_State *L = s->L;
    struct load_args la = {s, o};
    lua_pushcfunction(L, cmk_msghandler);
    lua_pushcfunction(L, load_handler);
    lua_pushlightuserdata(L, &la);
    if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
        snprintf(err, errlen, "server handler failed to load: %s", lua_tostring(L, -1));
        goto fail;
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCGEN, 0, 0);

    *kind = SERVER_EENV;
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->wake_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if (o->tls) {
        s->cert_pem = strdup(o->cert_pem);
        s->key_pem = strdup(o->key_pem);
        if (!s->cert_pem || !s->key_pem) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    struct sockaddr *sa;
    memset(&sin, 0, sizeof sin);
    memset(&sin6, 0, sizeof sin6);
    if (ipv6) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, host, &sin6.sin6_addr);
        sa = (struct sockaddr *)&sin6;
    } else {
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, host, &sin.sin_addr);
        sa = (struct sockaddr *)&sin;
    }
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    if (o->tls)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem tls_opts[] = {
        {o->tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, s->cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, s->key_pem},
        {MHD_OPTION_END, 0, NULL},
    };
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)CONNECTION_TIMEOUT_S, MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errlen, "could not start the server on %s:%u%s", host, port,
                 o->tls ? " (socket in use, or the certificate/key were rejected)" : " (socket in use?)");
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : port;
    if (ipv6)
        snprintf(s->url, sizeof s->url, "%s://[%s]:%u", o->tls ? "https" : "http", host, s->port);
    else
        snprintf(s->url, sizeof s->url, "%s://%s:%u", o->tls ? "https" : "http", host, s->port);
    int e = pthread_create(&s->thread, NULL, server_main, s);
    if (e) {
        snprintf(err, errlen, "could not start the server thread: %s", strerror(e));
        goto fail;
    }
    s->thread_started = 1;
    *kind = SERVER_OK;
    return s;
fail:
    server_stop(s);
    return NULL;
}

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
    if (!u->s) {
        if (kind == SERVER_EUSAGE)
            return luaL_error(L, "server.start: %s", err);
        struct cmk_error e = {.code = "ServerStartFailed", .message = err};
        return cmk_fail(L, &e);
    }
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
    lua_pushinteger(L, (lua_Integer)atomic_load(&s->contexts));
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
        lua_pushfstring(L, "cmkflow.server (%s)", u->s->url);
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
    wipe_free(b->key);
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
        luaL_error(L, "server.make_cert: '%s' must be a list of strings", field);
    lua_Integer n = luaL_len(L, -1);
    if (n < 0 || n > 1000)
        luaL_error(L, "server.make_cert: too many names in '%s'", field);
    const char **arr = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 1);
    lua_pushvalue(L, -2);
    lua_setiuservalue(L, -2, 1); /* keep the list (and its strings) alive */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, -2, i);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "server.make_cert: '%s'[%d] must be a string", field, (int)i);
        arr[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    arr[n] = NULL;
    lua_remove(L, -2);
    return arr;
}

/* [-2|3, +2, e] server.make_cert(ca_cert_pem, ca_key_pem [, {dns, ip}]) -> cert_pem, key_pem | nil, err */
static int l_make_cert(lua_State *L)
{
    const char *ca_cert = luaL_checkstring(L, 1);
    const char *ca_key = luaL_checkstring(L, 2);
    const char *const *dns = certgen_default_dns, *const *ip = certgen_default_ip;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        dns = names_array(L, 3, "dns");
        ip = names_array(L, 3, "ip");
        if (!dns && !ip)
            return luaL_argerror(L, 3, "needs dns and/or ip names");
    }
    struct pem_box *b = push_pem_box(L);
    int rc = certgen_make_server(ca_cert, ca_key, dns, ip, &b->cert, &b->key);
    return push_pems(L, rc, b);
}

static void push_list(lua_State *L, const char *const *list)
{
    lua_newtable(L);
    for (int i = 0; list[i]; i++) {
        lua_pushstring(L, list[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* [-0, +1, m] server.default_names() -> {dns = {...}, ip = {...}} */
static int l_default_names(lua_State *L)
{
    lua_createtable(L, 0, 2);
    push_list(L, certgen_default_dns);
    lua_setfield(L, -2, "dns");
    push_list(L, certgen_default_ip);
    lua_setfield(L, -2, "ip");
    return 1;
}

static const luaL_Reg server_methods[] = {
    {"port", l_port}, {"url", l_url}, {"stats", l_stats}, {"stop", l_stop}, {NULL, NULL},
};

static const luaL_Reg server_meta[] = {
    {"__gc", l_stop}, {"__close", l_stop}, {"__tostring", l_tostring}, {NULL, NULL},
};

static const luaL_Reg server_funcs[] = {
    {"start", l_start},       {"stop", l_stop},
    {"make_ca", l_make_ca},   {"make_cert", l_make_cert},
    {"default_names", l_default_names}, {NULL, NULL},
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
    if (luaL_newmetatable(L, PEM_BOX_MT)) {
        lua_pushcfunction(L, pem_box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, server_funcs);
    return 1;
}
