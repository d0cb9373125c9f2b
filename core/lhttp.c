/* lhttp.c: the Lua view of the HTTP session (cmkflow.core.http, described in http.h): the
 * session and transfer userdata. A request's credential becomes the transfer's token source here,
 * so the HTTP module itself knows nothing of credentials. */
#include <stdlib.h>
#include <string.h>
#include "auth.h"
#include "http_int.h"

struct transfer_ud {
    struct http_xfer *x;
};

static struct transfer_ud *check_transfer(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, HTTP_TRANSFER_MT);
}

/* [-0, +0, -] __gc: an unfinished transfer is cancelled. */
static int transfer_gc(lua_State *L)
{
    struct transfer_ud *t = check_transfer(L, 1);
    struct http_xfer *x = t->x;
    t->x = NULL;
    if (!x)
        return 0;
    x->lua_owned = 0;
    http_session *s = x->s;
    if (s) {
        if (x->linked || x->queued)
            s->pending--;
        if (x->queued)
            http_queue_remove(s, x);
        if (x->state == XS_RUNNING && x->easy && s->multi)
            curl_multi_remove_handle(s->multi, x->easy);
        http_session_unlink(s, x);
    }
    if (x->state == XS_TOKEN)
        x->state = XS_DONE; /* on_token frees it */
    http_xfer_maybe_free(x);
    return 0;
}

/* [-0, +1, -] t:done() */
static int transfer_done(lua_State *L)
{
    struct transfer_ud *t = check_transfer(L, 1);
    lua_pushboolean(L, t->x && t->x->state == XS_DONE);
    return 1;
}

static void set_str(lua_State *L, const char *k, const char *v)
{
    if (v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, k);
    }
}

/* [-0, +1|2, e] t:result() -> resp | nil, err */
static int transfer_result(lua_State *L)
{
    struct transfer_ud *t = check_transfer(L, 1);
    struct http_xfer *x = t->x;
    if (!x || x->state != XS_DONE)
        return luaL_error(L, "transfer:result(): the transfer has not finished (drive session:run)");
    if (x->failed) {
        return http_push_failure(L, x);
    }
    if (x->kind == XFER_TIMER) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, x->status);
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, (int)x->nhdrs);
    for (size_t i = 0; i < x->nhdrs; i++) {
        lua_pushstring(L, x->hdrs[i].value);
        lua_setfield(L, -2, x->hdrs[i].name);
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, x->resp.data ? x->resp.data : "", x->resp.len);
    lua_setfield(L, -2, "body");
    lua_pushinteger(L, x->attempts);
    lua_setfield(L, -2, "attempts");
    set_str(L, "request_id", http_response_request_id(x));
    set_str(L, "client_request_id", x->client_request_id);
    lua_pushinteger(L, x->elapsed_ms);
    lua_setfield(L, -2, "elapsed_ms");
    return 1;
}

/* [-0, +1, -] tostring(t) */
static int transfer_tostring(lua_State *L)
{
    struct transfer_ud *t = check_transfer(L, 1);
    if (t->x && t->x->kind == XFER_TIMER)
        lua_pushfstring(L, "cmkflow.http.transfer(timer)");
    else if (t->x)
        lua_pushfstring(L, "cmkflow.http.transfer(%s %s)", t->x->method, t->x->target);
    else
        lua_pushliteral(L, "cmkflow.http.transfer(closed)");
    return 1;
}

static http_session *check_session(lua_State *L, int idx)
{
    http_session *s = luaL_checkudata(L, idx, HTTP_SESSION_MT);
    if (!s->multi)
        luaL_error(L, "the HTTP session is closed");
    return s;
}

/* Pushes the userdata for x (from the session's keep table) and forgets it there.
 * [-0, +1, -] with the session userdata at sidx. */
static void push_and_release(lua_State *L, int sidx, struct http_xfer *x)
{
    lua_getiuservalue(L, sidx, 1);
    lua_rawgetp(L, -1, x);
    lua_pushnil(L);
    lua_rawsetp(L, -3, x);
    lua_remove(L, -2);
}

static struct transfer_ud *new_transfer(lua_State *L, http_session *s, enum xfer_kind kind)
{
    struct transfer_ud *t = lua_newuserdatauv(L, sizeof *t, 0);
    t->x = NULL;
    luaL_setmetatable(L, HTTP_TRANSFER_MT);
    t->x = calloc(1, sizeof *t->x);
    if (!t->x)
        luaL_error(L, "out of memory");
    t->x->kind = kind;
    t->x->lua_owned = 1;
    (void)s;
    return t;
}

/* Link x into the session and remember its userdata (at the top of the stack) so it lives
 * until run hands it back. [-0, +0, m] */
static void register_transfer(lua_State *L, int sidx, http_session *s, struct http_xfer *x)
{
    lua_getiuservalue(L, sidx, 1);
    lua_pushvalue(L, -2);
    lua_rawsetp(L, -2, x);
    lua_pop(L, 1);
    http_session_link(s, x);
    x->start_ms = http_now_ms(s);
}

/* [-0, +0, e] Raises, before a byte is sent, unless a token of credential c for scope may go to
 * url: its own cloud, the service the scope names (the rule is data beside the cloud table,
 * cmkflow.clouds.token_destination). */
static void check_token_destination(lua_State *L, auth_credential *c, const char *scope, const char *url)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cmkflow.clouds");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "token_destination");
    lua_pushstring(L, auth_credential_authority(c));
    lua_pushstring(L, scope);
    lua_pushstring(L, url);
    lua_call(L, 3, 2);
    if (!lua_toboolean(L, -2)) {
        struct cmk_error e = {.code = "TokenDestinationRefused", .kind = "config",
                              .message = lua_tostring(L, -1) ? lua_tostring(L, -1) : "token destination refused"};
        cmk_push_error(L, &e);
        lua_error(L);
    }
    lua_pop(L, 3);
}

/* [-0, +1, e] session:submit(req) -> transfer */
static int session_submit(lua_State *L)
{
    http_session *s = check_session(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    struct transfer_ud *t = new_transfer(L, s, XFER_LUA); /* index 3: owns x from here */
    struct http_xfer *x = t->x;
    http_request_from_lua(L, 2, s, x);

    if (lua_getfield(L, 2, "credential") != LUA_TNIL) {
        auth_credential *c = auth_test_credential(L, -1);
        if (!c)
            return luaL_error(L, "req.credential must be a cmkflow.credential");
        if (lua_getfield(L, 2, "scope") != LUA_TSTRING)
            return luaL_error(L, "req.scope is required with req.credential");
        check_token_destination(L, c, lua_tostring(L, -1), x->url);
        if (!(x->scope = buf_dup(lua_tostring(L, -1))))
            return luaL_error(L, "out of memory");
        lua_pop(L, 1);
        int tt = lua_getfield(L, 2, "tenant");
        if (tt == LUA_TSTRING && !(x->tenant = buf_dup(lua_tostring(L, -1))))
            return luaL_error(L, "out of memory");
        if (tt != LUA_TSTRING && tt != LUA_TNIL)
            return luaL_error(L, "req.tenant must be a string");
        lua_pop(L, 1);
        auth_credential_ref(c);
        x->token_src = &auth_token_source;
        x->token_owner = c;
    }
    lua_pop(L, 1);

    register_transfer(L, 1, s, x);
    s->st.requests++;
    http_xfer_attempt(x);
    return 1;
}

/* [-0, +1, e] session:timer(ms) -> transfer finishing after ms on the session clock */
static int session_timer(lua_State *L)
{
    http_session *s = check_session(L, 1);
    lua_Integer ms = luaL_checkinteger(L, 2);
    luaL_argcheck(L, ms >= 0, 2, "must be >= 0");
    lua_settop(L, 2);
    struct transfer_ud *t = new_transfer(L, s, XFER_TIMER);
    register_transfer(L, 1, s, t->x);
    t->x->state = XS_TIMER;
    t->x->wake_ms = t->x->start_ms + ms;
    s->st.slept_ms += ms;
    return 1;
}

/* [-0, +1, e] session:run([timeout_ms]) -> array of finished transfers */
static int session_run(lua_State *L)
{
    http_session *s = check_session(L, 1);
    lua_Integer timeout = luaL_optinteger(L, 2, -1);
    http_session_drive(s, timeout, L);
    lua_newtable(L);
    lua_Integer n = 0;
    while (s->done_head) {
        struct http_xfer *x = s->done_head;
        s->done_head = x->done_next;
        if (!s->done_head)
            s->done_tail = NULL;
        x->done_next = NULL;
        x->queued = 0;
        s->pending--;
        push_and_release(L, 1, x);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* [-0, +1, -] session:pending() */
static int session_pending(lua_State *L)
{
    http_session *s = check_session(L, 1);
    lua_pushinteger(L, s->pending);
    return 1;
}

/* [-0, +1, m] session:stats() */
static int session_stats(lua_State *L)
{
    http_session *s = check_session(L, 1);
    lua_createtable(L, 0, 12);
    static const char *const names[] = {"requests", "attempts", "retries", "connects",
                                        "tls_handshakes", "token_fetches"};
    long vals[] = {s->st.requests, s->st.attempts, s->st.retries, s->st.connects,
                   s->st.tls_handshakes, s->st.token_fetches};
    for (int i = 0; i < 6; i++) {
        lua_pushinteger(L, vals[i]);
        lua_setfield(L, -2, names[i]);
    }
    lua_pushinteger(L, s->st.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, s->st.slept_ms);
    lua_setfield(L, -2, "slept_ms");
    lua_pushinteger(L, s->st.skipped_ms);
    lua_setfield(L, -2, "clock_skipped_ms");
    lua_pushinteger(L, s->pending);
    lua_setfield(L, -2, "pending");
    lua_pushstring(L, s->fake_clock ? "fake" : "real");
    lua_setfield(L, -2, "clock");
    return 1;
}

/* [-0, +0, e] session:set_clock("fake" | "real") */
static int session_set_clock(lua_State *L)
{
    http_session *s = check_session(L, 1);
    static const char *const modes[] = {"real", "fake", NULL};
    s->fake_clock = luaL_checkoption(L, 2, NULL, modes);
    return 0;
}

/* [-0, +1, -] session:now() */
static int session_now(lua_State *L)
{
    http_session *s = check_session(L, 1);
    lua_pushinteger(L, http_now_ms(s));
    return 1;
}

/* [-0, +0, e] session:set_debug(false | true | "path") */
static int session_set_debug(lua_State *L)
{
    http_session *s = check_session(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *path = lua_tostring(L, 2);
        FILE *f = fopen(path, "a");
        if (!f)
            return luaL_error(L, "cannot open trace file '%s'", path);
        if (s->trace)
            fclose(s->trace);
        s->trace = f;
        s->debug = 1;
    } else {
        s->debug = lua_toboolean(L, 2);
        if (s->trace)
            fclose(s->trace);
        s->trace = NULL;
    }
    return 0;
}

/* [-0, +0, e] session:set_retry_notice(ms | false): tell on stderr of every retry wait that ends
 * more than ms into its request (false or 0: never) */
static int session_set_retry_notice(lua_State *L)
{
    http_session *s = check_session(L, 1);
    s->notice_after_ms = lua_toboolean(L, 2) ? (int64_t)luaL_checkinteger(L, 2) : 0;
    return 0;
}

/* [-0, +0, -] session:wakeup() */
static int session_wakeup(lua_State *L)
{
    http_session *s = check_session(L, 1);
    curl_multi_wakeup(s->multi);
    return 0;
}

static void push_metatables(lua_State *L)
{
    if (luaL_newmetatable(L, HTTP_TRANSFER_MT)) {
        static const luaL_Reg methods[] = {{"result", transfer_result}, {"done", transfer_done},
                                           {NULL, NULL}};
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, transfer_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, transfer_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    http_session_metatable(L);
    if (lua_getfield(L, -1, "__index") == LUA_TNIL) {
        static const luaL_Reg methods[] = {
            {"submit", session_submit}, {"timer", session_timer},     {"run", session_run},
            {"pending", session_pending}, {"stats", session_stats},   {"set_clock", session_set_clock},
            {"now", session_now},       {"set_debug", session_set_debug}, {"wakeup", session_wakeup},
            {"set_retry_notice", session_set_retry_notice}, {NULL, NULL}};
        luaL_newlib(L, methods);
        lua_setfield(L, -3, "__index");
    }
    lua_pop(L, 1);
    lua_pop(L, 1);
}

/* [-0, +1, e] http.session() */
static int http_session_lua(lua_State *L)
{
    push_metatables(L);
    http_push_session(L);
    return 1;
}

/* [-0, +1, -] http.status_retryable(status) */
static int l_status_retryable(lua_State *L)
{
    lua_pushboolean(L, http_status_retryable((long)luaL_checkinteger(L, 1)));
    return 1;
}

/* [-0, +1, e] http.retry_delay_ms(policy, attempt, elapsed_ms, retry_after, retry_after_ms,
 * now_ms, jitter) -> ms | -1 (the pure backoff function, for tests and tools) */
static int l_retry_delay(lua_State *L)
{
    struct http_retry_policy p;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_newtable(L);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "retry");
    http_read_retry(L, lua_gettop(L), &p);
    lua_pop(L, 1);
    lua_pushinteger(L, http_retry_delay_ms(&p, (int)luaL_checkinteger(L, 2),
                                           luaL_checkinteger(L, 3), luaL_optstring(L, 4, NULL),
                                           luaL_optstring(L, 5, NULL), luaL_optinteger(L, 6, 0),
                                           luaL_optnumber(L, 7, 0.5)));
    return 1;
}

/* [-0, +1, m] require "cmkflow.core.http" */
int luaopen_cmkflow_core_http(lua_State *L)
{
    static const luaL_Reg fns[] = {{"session", http_session_lua},
                                   {"status_retryable", l_status_retryable},
                                   {"retry_delay_ms", l_retry_delay},
                                   {NULL, NULL}};
    push_metatables(L);
    luaL_newlib(L, fns);
    return 1;
}
