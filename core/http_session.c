/* http_session.c: the libcurl multi session - its clock, its in-flight list and finished queue,
 * timers, and the loop that drives transfers (http.h). One session per Lua state. */
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>
#include "http_int.h"

#define SESSION_KEY "cmkflow.http.session.instance" /* registry field holding the state's session */
#define POLL_MAX_MS 100 /* bound on one wait, so an interrupt hook fires promptly */

int64_t http_real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t http_now_ms(http_session *s)
{
    return http_real_ms() + (s ? s->clock_offset_ms : 0);
}

void http_count_token_fetch(http_session *s)
{
    if (s)
        s->st.token_fetches++;
}

double http_jitter01(void)
{
    uint64_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        r = (uint64_t)http_real_ms() * 2654435761u;
    return (double)(r >> 11) / 9007199254740992.0; /* 53 bits -> [0, 1) */
}

void http_session_link(http_session *s, struct http_xfer *x)
{
    x->s = s;
    x->prev = NULL;
    x->next = s->head;
    if (s->head)
        s->head->prev = x;
    s->head = x;
    x->linked = 1;
    if (x->kind != XFER_INTERNAL)
        s->pending++;
}

void http_session_unlink(http_session *s, struct http_xfer *x)
{
    if (!x->linked)
        return;
    if (x->prev)
        x->prev->next = x->next;
    else
        s->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
    x->linked = 0;
}

void http_queue_remove(http_session *s, struct http_xfer *x)
{
    struct http_xfer **pp = &s->done_head, *last = NULL;
    while (*pp && *pp != x) {
        last = *pp;
        pp = &(*pp)->done_next;
    }
    if (*pp) {
        *pp = x->done_next;
        if (s->done_tail == x)
            s->done_tail = last;
        x->done_next = NULL;
        x->queued = 0;
    }
}

static void session_init(http_session *s)
{
    memset(s, 0, sizeof *s);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    s->multi = curl_multi_init();
    s->share = curl_share_init();
    if (s->multi) {
        curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, HTTP_MAX_HOST_CONNECTIONS);
        curl_multi_setopt(s->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, HTTP_MAX_TOTAL_CONNECTIONS);
        /* keep every idle connection the limits allow: by default curl's cache holds 4 per easy
         * handle currently added, so a lull in a bulk run closed connections its next burst
         * opened again (a TLS handshake each) */
        curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, HTTP_MAX_TOTAL_CONNECTIONS);
        curl_multi_setopt(s->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    }
    if (s->share) {
        curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    }
    snprintf(s->user_agent, sizeof s->user_agent, "cmkflow/%s libcurl/%s", CMKFLOW_VERSION,
             curl_version_info(CURLVERSION_NOW)->version);
}

/* Cancel everything in flight (internal callbacks get a Cancelled error) and free curl. */
static void session_close(http_session *s)
{
    if (!s->multi)
        return;
    s->closing = 1;
    while (s->head) {
        struct http_xfer *x = s->head;
        if (x->state == XS_RUNNING && x->easy)
            curl_multi_remove_handle(s->multi, x->easy);
        http_session_unlink(s, x);
        x->s = NULL; /* xfer_finish then frees it unless Lua or auth still refer to it */
        x->failed = 1;
        http_error_set(&x->err, "Cancelled", "the HTTP session was closed", x->target, 1, NULL);
        http_xfer_finish(x); /* internal callbacks may resolve token waiters */
    }
    while (s->done_head) {
        struct http_xfer *x = s->done_head;
        s->done_head = x->done_next;
        x->queued = 0;
        x->s = NULL;
        http_xfer_maybe_free(x);
    }
    s->done_tail = NULL;
    curl_multi_cleanup(s->multi);
    s->multi = NULL;
    if (s->share)
        curl_share_cleanup(s->share);
    s->share = NULL;
    if (s->trace)
        fclose(s->trace);
    s->trace = NULL;
    curl_global_cleanup();
}

/* Start transfers whose timer is due. */
static void fire_timers(http_session *s)
{
    int64_t now = http_now_ms(s);
again:
    for (struct http_xfer *x = s->head; x; x = x->next) {
        if (x->state == XS_TIMER && x->wake_ms <= now) {
            if (x->kind == XFER_TIMER || x->failed)
                http_xfer_finish(x);
            else
                http_xfer_attempt(x);
            goto again; /* the list may have changed */
        }
    }
}

/* ms until the earliest timer (>= 0), or -1 when none. */
static int64_t next_timer(http_session *s)
{
    int64_t now = http_now_ms(s), best = -1;
    for (struct http_xfer *x = s->head; x; x = x->next)
        if (x->state == XS_TIMER) {
            int64_t d = x->wake_ms > now ? x->wake_ms - now : 0;
            if (best < 0 || d < best)
                best = d;
        }
    return best;
}

static void drain_messages(http_session *s)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(s->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct http_xfer *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        CURLcode rc = m->data.result;
        if (x)
            http_xfer_attempt_done(x, rc);
    }
}

/* One round: start due timers, let curl work, collect completions. Returns running handles. */
static int session_step(http_session *s)
{
    int running = 0;
    fire_timers(s);
    curl_multi_perform(s->multi, &running);
    drain_messages(s);
    fire_timers(s);
    return running;
}

void http_session_drive(http_session *s, int64_t timeout, lua_State *L)
{
    int64_t deadline = timeout >= 0 ? http_real_ms() + timeout : INT64_MAX;
    for (int round = 0;; round++) {
        int running = session_step(s);
        if (s->done_head || !s->head)
            break;
        int64_t now = http_real_ms();
        if (now >= deadline)
            break;
        if (round > 0 && lua_gethook(L))
            break; /* let a pending hook (Ctrl-C) run between rounds */
        long wait = POLL_MAX_MS, cto = -1;
        curl_multi_timeout(s->multi, &cto);
        if (cto >= 0 && cto < wait)
            wait = cto;
        int64_t next = next_timer(s);
        if (next > 0 && s->fake_clock && running == 0) {
            /* only timers are pending: jump the virtual clock instead of waiting */
            s->clock_offset_ms += next;
            s->st.skipped_ms += next;
            continue;
        }
        if (next >= 0 && next < wait)
            wait = (long)next;
        if (deadline - now < wait)
            wait = (long)(deadline - now);
        if (wait > 0)
            curl_multi_poll(s->multi, NULL, 0, (int)wait, NULL);
    }
}

/* [-0, +0, -] __gc / __close */
static int session_gc(lua_State *L)
{
    http_session *s = luaL_checkudata(L, 1, HTTP_SESSION_MT);
    session_close(s);
    return 0;
}

void http_session_metatable(lua_State *L)
{
    if (luaL_newmetatable(L, HTTP_SESSION_MT)) { /* lhttp.c adds the methods */
        lua_pushcfunction(L, session_gc);
        lua_setfield(L, -2, "__gc");
    }
}

/* [-0, +1, m] the state's session userdata */
void http_push_session(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, SESSION_KEY) == LUA_TUSERDATA)
        return;
    lua_pop(L, 1);
    http_session_metatable(L);
    lua_pop(L, 1);
    http_session *s = lua_newuserdatauv(L, sizeof *s, 1);
    memset(s, 0, sizeof *s);
    lua_newtable(L); /* transfers kept alive until run returns them */
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, HTTP_SESSION_MT);
    session_init(s);
    if (!s->multi || !s->share) {
        session_close(s);
        luaL_error(L, "cannot initialise libcurl");
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, SESSION_KEY);
}

http_session *http_session_get(lua_State *L)
{
    http_push_session(L);
    http_session *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s;
}
