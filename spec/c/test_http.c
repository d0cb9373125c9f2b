/* Unit tests for the HTTP module (core/http_*.c): the retry schedule (driven by a fake clock),
 * the retryable status / curl code tables, internal transfers and transport error tables. */
#include <stdint.h>
#include <time.h>
#include <curl/curl.h>
#include <lauxlib.h>
#include <lualib.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "check.h"
#include "http.h"

static const struct http_retry_policy policy = {6, 800, 60000, 300000};

/* Exponential growth 800, 1600, 3200 ms with jitter factor in [0.8, 1.2). */
static void test_exponential(void)
{
    static const int64_t base[] = {800, 1600, 3200, 6400, 12800};
    for (int attempt = 2; attempt <= 6; attempt++) {
        int64_t lo = http_retry_delay_ms(&policy, attempt, 0, NULL, NULL, 0, 0.0);
        int64_t hi = http_retry_delay_ms(&policy, attempt, 0, NULL, NULL, 0, 0.999);
        int64_t mid = http_retry_delay_ms(&policy, attempt, 0, NULL, NULL, 0, 0.5);
        CHECK_INT(lo, base[attempt - 2] * 8 / 10);
        CHECK(hi >= base[attempt - 2] * 1199 / 1000 && hi < base[attempt - 2] * 12 / 10);
        CHECK_INT(mid, base[attempt - 2]);
    }
    CHECK_INT(http_retry_delay_ms(&policy, 2, 0, NULL, NULL, 0, 0.0), 640);
    CHECK_INT(http_retry_delay_ms(&policy, 3, 0, NULL, NULL, 0, 0.0), 1280);
    CHECK_INT(http_retry_delay_ms(&policy, 4, 0, NULL, NULL, 0, 0.0), 2560);
}

/* A single backoff never exceeds max_delay_ms. */
static void test_cap(void)
{
    struct http_retry_policy p = {40, 800, 5000, 10000000};
    CHECK_INT(http_retry_delay_ms(&p, 10, 0, NULL, NULL, 0, 0.999), 5000);
    CHECK_INT(http_retry_delay_ms(&p, 10, 0, NULL, NULL, 0, 0.0), 5000);
    CHECK_INT(http_retry_delay_ms(&p, 40, 0, NULL, NULL, 0, 0.5), 5000);
    /* below the cap, the cap does not bite */
    CHECK_INT(http_retry_delay_ms(&p, 4, 0, NULL, NULL, 0, 0.5), 3200);
    CHECK_INT(http_retry_delay_ms(&p, 5, 0, NULL, NULL, 0, 0.5), 5000);
}

static void test_server_hints(void)
{
    CHECK_INT(http_retry_delay_ms(&policy, 2, 0, "7", NULL, 0, 0.5), 7000);
    CHECK_INT(http_retry_delay_ms(&policy, 2, 0, " 0 ", NULL, 0, 0.5), 0);
    CHECK_INT(http_retry_delay_ms(&policy, 2, 0, NULL, "250", 0, 0.5), 250);
    /* the millisecond header wins over Retry-After */
    CHECK_INT(http_retry_delay_ms(&policy, 2, 0, "7", "250", 0, 0.5), 250);
    /* server hints are not subject to max_delay_ms (the server knows better), only to the total */
    CHECK_INT(http_retry_delay_ms(&policy, 2, 0, "120", NULL, 0, 0.5), 120000);

    /* HTTP-date 30 s after the (fake) now */
    time_t now = 1700000000;
    time_t then = now + 30;
    struct tm tm;
    gmtime_r(&then, &tm);
    char date[64];
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    CHECK_INT(http_retry_delay_ms(&policy, 2, 0, date, NULL, (int64_t)now * 1000, 0.5), 30000);
    /* a date in the past means "now" */
    CHECK_INT(http_retry_delay_ms(&policy, 2, 0, date, NULL, (int64_t)(now + 60) * 1000, 0.5), 0);
    /* garbage falls back to the exponential schedule */
    CHECK_INT(http_retry_delay_ms(&policy, 2, 0, "soon", "x", 0, 0.5), 800);
    CHECK_INT(http_retry_delay_ms(&policy, 2, 0, "-3", NULL, 0, 0.5), 800);
}

static void test_bounds(void)
{
    /* attempts: 6 attempts allowed, so attempt 7 is refused */
    CHECK(http_retry_delay_ms(&policy, 6, 0, NULL, NULL, 0, 0.5) > 0);
    CHECK_INT(http_retry_delay_ms(&policy, 7, 0, NULL, NULL, 0, 0.5), -1);
    CHECK_INT(http_retry_delay_ms(&policy, 7, 0, "1", NULL, 0, 0.5), -1);
    struct http_retry_policy once = {1, 800, 60000, 300000};
    CHECK_INT(http_retry_delay_ms(&once, 2, 0, NULL, NULL, 0, 0.5), -1);
    /* total time: 299 s spent + 800 ms > 300 s */
    CHECK_INT(http_retry_delay_ms(&policy, 2, 299500, NULL, NULL, 0, 0.5), -1);
    CHECK_INT(http_retry_delay_ms(&policy, 2, 299200, NULL, NULL, 0, 0.5), 800);
    CHECK_INT(http_retry_delay_ms(&policy, 2, 0, "301", NULL, 0, 0.5), -1);
    CHECK_INT(http_retry_delay_ms(&policy, 2, 0, "300", NULL, 0, 0.5), 300000);
    CHECK_INT(http_retry_delay_ms(&policy, 1, 0, NULL, NULL, 0, 0.5), -1);
}

/* A whole schedule on a fake clock: the waits a 503-forever request would see. */
static void test_schedule(void)
{
    struct http_retry_policy p = {10, 1000, 8000, 20000};
    int64_t clock = 0;
    int attempts = 1;
    int64_t d;
    while ((d = http_retry_delay_ms(&p, attempts + 1, clock, NULL, NULL, clock, 0.5)) >= 0) {
        clock += d;
        attempts++;
    }
    /* 1000 + 2000 + 4000 + 8000 = 15000; the next 8000 would pass 20000 */
    CHECK_INT(clock, 15000);
    CHECK_INT(attempts, 5);
}

static void test_tables(void)
{
    static const long yes[] = {408, 429, 500, 502, 503, 504};
    static const long no[] = {200, 201, 202, 204, 400, 401, 403, 404, 409, 412, 501, 505};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        CHECK(http_status_retryable(yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        CHECK(!http_status_retryable(no[i]));
    static const int cyes[] = {CURLE_COULDNT_CONNECT, CURLE_OPERATION_TIMEDOUT, CURLE_SEND_ERROR,
                               CURLE_RECV_ERROR,      CURLE_GOT_NOTHING,        CURLE_PARTIAL_FILE,
                               CURLE_HTTP2,           CURLE_HTTP2_STREAM};
    static const int cno[] = {CURLE_OK,
                              CURLE_PEER_FAILED_VERIFICATION,
                              CURLE_SSL_CACERT_BADFILE,
                              CURLE_SSL_CONNECT_ERROR,
                              CURLE_URL_MALFORMAT,
                              CURLE_UNSUPPORTED_PROTOCOL,
                              CURLE_COULDNT_RESOLVE_HOST,
                              CURLE_WRITE_ERROR,
                              CURLE_ABORTED_BY_CALLBACK};
    for (size_t i = 0; i < sizeof cyes / sizeof cyes[0]; i++)
        CHECK(http_curlcode_retryable(cyes[i]));
    for (size_t i = 0; i < sizeof cno / sizeof cno[0]; i++)
        CHECK(!http_curlcode_retryable(cno[i]));
}

/* An internal transfer with an invalid URL reports InvalidURL through its callback, from run. */
struct seen {
    int calls;
    long status;
    char code[64];
};

static void on_internal(void *ud, const struct http_internal_response *r)
{
    struct seen *s = ud;
    s->calls++;
    s->status = r->status;
    snprintf(s->code, sizeof s->code, "%s", r->err && r->err->code ? r->err->code : "");
}

static void test_internal_invalid_url(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "cmkflow.core.http", luaopen_cmkflow_core_http, 0);
    lua_pop(L, 1);
    http_session *s = http_session_get(L);
    CHECK(s != NULL);
    CHECK(http_session_get(L) == s);
    struct seen a = {0}, b = {0};
    const char *hdrs[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    CHECK_INT(http_submit_internal(s, "POST", "http://login.example.com/t", hdrs, "a=b", 3, NULL,
                                   NULL, on_internal, &a),
              0);
    CHECK_INT(http_submit_internal(s, "GET", "not a url", NULL, NULL, 0, NULL, NULL, on_internal,
                                   &b),
              0);
    CHECK_INT(a.calls, 0); /* never synchronously */
    lua_getfield(L, LUA_REGISTRYINDEX, "cmkflow.http.session.instance");
    lua_getfield(L, -1, "run");
    lua_insert(L, -2);
    lua_pushinteger(L, 1000);
    CHECK_INT(lua_pcall(L, 2, 1, 0), LUA_OK);
    lua_pop(L, 1);
    CHECK_INT(a.calls, 1);
    CHECK_INT(b.calls, 1);
    CHECK_STR(a.code, "InvalidURL");
    CHECK_STR(b.code, "InvalidURL");
    CHECK_INT(a.status, 0);
    /* a transfer still pending at close gets a Cancelled callback */
    struct seen c = {0};
    CHECK_INT(http_submit_internal(s, "GET", "https://127.0.0.1:9/", NULL, NULL, 0, NULL, NULL,
                                   on_internal, &c),
              0);
    lua_close(L);
    CHECK_INT(c.calls, 1);
    CHECK_STR(c.code, "Cancelled");
}

/* The fake clock: http_now_ms follows the session's virtual time. */
static void test_fake_clock(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "cmkflow.core.http", luaopen_cmkflow_core_http, 0);
    lua_pop(L, 1);
    http_session *s = http_session_get(L);
    int64_t before = http_now_ms(s);
    int rc = luaL_dostring(L, "local s = require('cmkflow.core.http').session()\n"
                           "s:set_clock('fake')\n"
                           "local t = s:timer(3600000)\n"
                           "local done = s:run()\n"
                           "assert(done[1] == t and t:result() == true)\n"
                           "local st = s:stats()\n"
                           "assert(st.slept_ms == 3600000, st.slept_ms)\n"
                           "assert(st.clock_skipped_ms > 3500000, st.clock_skipped_ms)\n");
    if (rc != LUA_OK)
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
    CHECK_INT(rc, LUA_OK);
    CHECK(http_now_ms(s) - before >= 3600000);
    lua_close(L);
}

/* A port on 127.0.0.1 nothing listens on: bound (ephemeral) and closed again. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    socklen_t n = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &n) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* A transport failure reaches Lua as an error table (cmkflow.error), never a string: code,
 * message, kind = "network", retryable, no status (there was no HTTP answer). */
static void test_transport_error_table(void)
{
    static const char chunk[] =
        "local http, port = ...\n"
        "local s = http.session()\n"
        "local t = s:submit{ url = ('http://127.0.0.1:%d/x'):format(port), retry = { max_attempts = 1 } }\n"
        "while not t:done() do s:run(1000) end\n"
        "return t:result()\n";
    int port = closed_port();
    CHECK(port > 0);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "cmkflow.core.error", luaopen_cmkflow_core_error, 0);
    lua_pop(L, 1);
    CHECK_INT(luaL_loadstring(L, chunk), LUA_OK);
    luaL_requiref(L, "cmkflow.core.http", luaopen_cmkflow_core_http, 0);
    lua_pushinteger(L, port);
    CHECK_INT(lua_pcall(L, 2, 2, 0), LUA_OK);
    CHECK(lua_isnil(L, -2));
    CHECK_INT(lua_type(L, -1), LUA_TTABLE);
    lua_getfield(L, -1, "code");
    CHECK_STR(lua_tostring(L, -1), "ConnectionFailed");
    lua_getfield(L, -2, "kind");
    CHECK_STR(lua_tostring(L, -1), "network");
    lua_getfield(L, -3, "retryable");
    CHECK_INT(lua_type(L, -1), LUA_TBOOLEAN);
    CHECK(lua_toboolean(L, -1));
    lua_getfield(L, -4, "status");
    CHECK(lua_isnil(L, -1));
    lua_getfield(L, -5, "message");
    CHECK(lua_isstring(L, -1) && strstr(lua_tostring(L, -1), "127.0.0.1") != NULL);
    lua_pop(L, 5);
    CHECK(lua_getmetatable(L, -1));
    luaL_getmetatable(L, "cmkflow.error");
    CHECK(lua_rawequal(L, -1, -2));
    lua_close(L);
}

int main(void)
{
    RUN(test_exponential);
    RUN(test_cap);
    RUN(test_server_hints);
    RUN(test_bounds);
    RUN(test_schedule);
    RUN(test_tables);
    RUN(test_internal_invalid_url);
    RUN(test_fake_clock);
    RUN(test_transport_error_table);
    DONE();
}
