/* http_request.c: building transfers - from a Lua request table (session:submit) or from C
 * (http_submit_internal) - and the URL rules every request obeys (http.h). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "crypto.h"
#include "http_int.h"

/* The URL with the values of sig= query parameters replaced (SAS signatures). malloc'd. */
char *http_redact_url(const char *url)
{
    struct buf b = {0};
    const char *q = strchr(url, '?');
    if (!q)
        return buf_dup(url);
    buf_add(&b, url, (size_t)(q - url));
    const char *p = q;
    while (*p) {
        char sep = *p++; /* '?' or '&' */
        const char *end = p + strcspn(p, "&#");
        buf_add(&b, &sep, 1);
        if (end - p >= 4 && strncasecmp(p, "sig=", 4) == 0) {
            buf_add(&b, p, 4);
            buf_add(&b, "REDACTED", 8);
        } else {
            buf_add(&b, p, (size_t)(end - p));
        }
        p = end;
        if (*p == '#') {
            buf_add(&b, p, strlen(p));
            break;
        }
    }
    char *out = b.data ? b.data : buf_dup("");
    return out;
}

/* 0 when url is acceptable; otherwise a message in msg. *https tells the scheme. */
static int url_check(const char *url, char *msg, size_t msglen, int *https)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int rc = -1;
    if (!u) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        snprintf(msg, msglen, "%s", curl_url_strerror(uc));
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(msg, msglen, "no scheme or host");
        goto out;
    }
    if (strcmp(scheme, "https") == 0) {
        *https = 1;
        rc = 0;
    } else if (strcmp(scheme, "http") == 0) {
        *https = 0;
        if (strcmp(host, "127.0.0.1") == 0 || strcasecmp(host, "localhost") == 0 ||
            strcmp(host, "169.254.169.254") == 0)
            rc = 0;
        else
            snprintf(msg, msglen,
                     "plain http is allowed only for 127.0.0.1, localhost and 169.254.169.254 "
                     "(IMDS); use https");
    } else {
        snprintf(msg, msglen, "unsupported scheme '%s' (use https)", scheme);
    }
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

static int header_token_char(int c)
{
    return isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

int http_set_common_options(http_session *s, struct http_xfer *x)
{
    CURL *e = x->easy = curl_easy_init();
    if (!e)
        return -1;
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_SHARE, s->share);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, s->user_agent);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, x->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, x->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    if (x->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, x->ca_file);
    if (x->connect_to) {
        curl_easy_setopt(e, CURLOPT_CONNECT_TO, x->connect_to);
        if (x->connect_to->data && !s->pinned_route) {
            /* curl counts connections per destination, and a route (an emulator) pins ARM, Graph,
             * Entra, Key Vault and Storage to one address: at 16 "per host" a Graph request took
             * an idle ARM connection down to open its own, and the next ARM request did the same
             * (5 TLS handshakes per onboard in a bulk run). One server behind all names: the
             * per-host bound is the total one. */
            s->pinned_route = 1;
            curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, HTTP_MAX_TOTAL_CONNECTIONS);
        }
    }
    if (x->proxy)
        curl_easy_setopt(e, CURLOPT_PROXY, x->proxy);
    else if (x->connect_to && x->connect_to->data)
        /* a fixed route (an emulator): a proxy from the environment (HTTPS_PROXY) must not take
         * it elsewhere, not even the emulator's own proxy, which tunnels Azure's names only */
        curl_easy_setopt(e, CURLOPT_PROXY, "");
    if (strcmp(x->method, "GET") == 0 && !x->body) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(x->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        /* POSTFIELDS (even empty) makes curl send Content-Length, which ARM wants on PUT */
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body ? x->body : "");
        if (strcmp(x->method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, x->method);
    }
    return 0;
}

/* Adds "Expect:" (no 100-continue round trip), an empty Content-Type unless set (curl would
 * otherwise claim a form), the client request id and the caller's headers are already there. */
int http_add_standard_headers(struct http_xfer *x, int has_content_type)
{
    char line[96];
    struct curl_slist *l;
    if (!x->client_request_id) {
        char id[37];
        if (crypto_uuid4(id) != 0)
            return -1;
        x->client_request_id = buf_dup(id);
        if (!x->client_request_id)
            return -1;
        snprintf(line, sizeof line, "x-ms-client-request-id: %s", id);
        if (!(l = curl_slist_append(x->headers, line)))
            return -1;
        x->headers = l;
    }
    if (!(l = curl_slist_append(x->headers, "Expect:")))
        return -1;
    x->headers = l;
    if (!has_content_type && strcmp(x->method, "GET") != 0 && strcmp(x->method, "HEAD") != 0) {
        if (!(l = curl_slist_append(x->headers, "Content-Type:")))
            return -1;
        x->headers = l;
    }
    return 0;
}

/* Remember a caller-set client request id / content type while adding a header line. */
static void note_header(struct http_xfer *x, const char *name, const char *value,
                        int *has_content_type)
{
    if (strcasecmp(name, "x-ms-client-request-id") == 0 && !x->client_request_id)
        x->client_request_id = buf_dup(value);
    if (strcasecmp(name, "content-type") == 0)
        *has_content_type = 1;
}

static lua_Integer opt_int_field(lua_State *L, int idx, const char *k, lua_Integer dflt,
                                 lua_Integer min)
{
    lua_Integer v = dflt;
    int t = lua_getfield(L, idx, k);
    if (t != LUA_TNIL) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < min)
            luaL_error(L, "req.%s must be an integer >= %d", k, (int)min);
    }
    lua_pop(L, 1);
    return v;
}

static char *opt_str_field(lua_State *L, int idx, const char *k)
{
    char *v = NULL;
    int t = lua_getfield(L, idx, k);
    if (t == LUA_TSTRING) {
        v = buf_dup(lua_tostring(L, -1));
        if (!v)
            luaL_error(L, "out of memory");
    } else if (t != LUA_TNIL) {
        luaL_error(L, "req.%s must be a string", k);
    }
    lua_pop(L, 1);
    return v;
}

void http_read_retry(lua_State *L, int idx, struct http_retry_policy *p)
{
    *p = http_default_policy;
    int t = lua_getfield(L, idx, "retry");
    if (t == LUA_TTABLE) {
        int r = lua_gettop(L);
        p->max_attempts = (int)opt_int_field(L, r, "max_attempts", p->max_attempts, 1);
        p->base_delay_ms = opt_int_field(L, r, "base_delay_ms", p->base_delay_ms, 0);
        p->max_delay_ms = opt_int_field(L, r, "max_delay_ms", p->max_delay_ms, 0);
        p->max_total_ms = opt_int_field(L, r, "max_total_ms", p->max_total_ms, 0);
    } else if (t != LUA_TNIL) {
        luaL_error(L, "req.retry must be a table");
    }
    lua_pop(L, 1);
}

static void read_headers(lua_State *L, int idx, struct http_xfer *x, int *has_ct)
{
    int t = lua_getfield(L, idx, "headers");
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (t != LUA_TTABLE)
        luaL_error(L, "req.headers must be a table of name = value");
    int h = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, h)) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
            luaL_error(L, "req.headers must map header names to strings");
        size_t nl, vl;
        const char *name = lua_tolstring(L, -2, &nl);
        const char *value = lua_tolstring(L, -1, &vl);
        if (nl == 0)
            luaL_error(L, "req.headers: empty header name");
        for (size_t i = 0; i < nl; i++)
            if (!header_token_char((unsigned char)name[i]))
                luaL_error(L, "req.headers: invalid header name '%s'", name);
        for (size_t i = 0; i < vl; i++)
            if (value[i] == '\r' || value[i] == '\n' || value[i] == 0)
                luaL_error(L, "req.headers: header '%s' has a line break or NUL", name);
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addlstring(&b, name, nl);
        luaL_addstring(&b, vl ? ": " : ";"); /* "Name;" sends an empty header */
        luaL_addlstring(&b, value, vl);
        luaL_pushresult(&b);
        struct curl_slist *l = curl_slist_append(x->headers, lua_tostring(L, -1));
        if (!l)
            luaL_error(L, "out of memory");
        x->headers = l;
        note_header(x, name, value, has_ct);
        lua_pop(L, 2); /* line, value */
    }
    lua_pop(L, 1);
}

static void read_connect_to(lua_State *L, int idx, struct http_xfer *x)
{
    int t = lua_getfield(L, idx, "connect_to");
    if (t == LUA_TTABLE) {
        lua_Integer n = luaL_len(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
                luaL_error(L, "req.connect_to must be an array of \"host:port:addr:port\" strings");
            struct curl_slist *l = curl_slist_append(x->connect_to, lua_tostring(L, -1));
            if (!l)
                luaL_error(L, "out of memory");
            x->connect_to = l;
            lua_pop(L, 1);
        }
    } else if (t != LUA_TNIL) {
        luaL_error(L, "req.connect_to must be an array of \"host:port:addr:port\" strings");
    }
    lua_pop(L, 1);
}

void http_request_from_lua(lua_State *L, int idx, http_session *s, struct http_xfer *x)
{
    char msg[512];

    x->method = opt_str_field(L, idx, "method");
    if (!x->method && !(x->method = buf_dup("GET")))
        luaL_error(L, "out of memory");
    for (const char *c = x->method; *c; c++)
        if (!isupper((unsigned char)*c))
            luaL_error(L, "req.method must be an upper-case HTTP method, got '%s'", x->method);
    if (!*x->method)
        luaL_error(L, "req.method must not be empty");
    if (lua_getfield(L, idx, "url") != LUA_TSTRING)
        luaL_error(L, "req.url must be a string");
    lua_pop(L, 1);
    x->url = opt_str_field(L, idx, "url");
    x->target = http_redact_url(x->url);
    if (!x->target)
        luaL_error(L, "out of memory");
    if (url_check(x->url, msg, sizeof msg, &x->https) != 0)
        luaL_error(L, "invalid URL '%s': %s", x->target, msg);

    int has_ct = 0;
    read_headers(L, idx, x, &has_ct);
    int bt = lua_getfield(L, idx, "body");
    if (bt == LUA_TSTRING) {
        size_t n;
        const char *b = lua_tolstring(L, -1, &n);
        if (!(x->body = buf_dupn(b, n)))
            luaL_error(L, "out of memory");
        x->body_len = n;
    } else if (bt != LUA_TNIL) {
        luaL_error(L, "req.body must be a string");
    }
    lua_pop(L, 1);
    x->timeout_ms = (long)opt_int_field(L, idx, "timeout_ms", 60000, 1);
    x->connect_timeout_ms = (long)opt_int_field(L, idx, "connect_timeout_ms", 10000, 1);
    x->ca_file = opt_str_field(L, idx, "ca_file");
    x->proxy = opt_str_field(L, idx, "proxy");
    read_connect_to(L, idx, x);
    http_read_retry(L, idx, &x->policy);
    lua_getfield(L, idx, "debug");
    x->debug = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (http_add_standard_headers(x, has_ct) != 0 || http_set_common_options(s, x) != 0)
        luaL_error(L, "out of memory");
}

int http_submit_internal(http_session *s, const char *method, const char *url,
                         const char *const *headers, const char *body, size_t body_len,
                         const char *ca_file, const char *const *connect_to,
                         http_internal_cb cb, void *ud)
{
    if (!s || !s->multi || s->closing || !method || !url)
        return -1;
    struct http_xfer *x = calloc(1, sizeof *x);
    if (!x)
        return -1;
    x->kind = XFER_INTERNAL;
    x->cb = cb;
    x->ud = ud;
    x->policy = http_default_policy;
    x->timeout_ms = 60000;
    x->connect_timeout_ms = 10000;
    x->method = buf_dup(method);
    x->url = buf_dup(url);
    x->target = http_redact_url(url);
    x->ca_file = buf_dup(ca_file);
    int ok = x->method && x->url && x->target && (!ca_file || x->ca_file);
    if (ok && body) {
        x->body = buf_dupn(body, body_len);
        x->body_len = body_len;
        ok = x->body != NULL;
    }
    int has_ct = 0;
    for (const char *const *h = headers; ok && h && *h; h++) {
        struct curl_slist *l = curl_slist_append(x->headers, *h);
        if (!l) {
            ok = 0;
            break;
        }
        x->headers = l;
        const char *colon = strchr(*h, ':');
        if (colon) {
            char name[64];
            size_t nl = (size_t)(colon - *h) < sizeof name - 1 ? (size_t)(colon - *h) : 0;
            memcpy(name, *h, nl);
            name[nl] = 0;
            const char *v = colon + 1;
            while (*v == ' ')
                v++;
            note_header(x, name, v, &has_ct);
        }
    }
    for (const char *const *c = connect_to; ok && c && *c; c++) {
        struct curl_slist *l = curl_slist_append(x->connect_to, *c);
        if (!l)
            ok = 0;
        else
            x->connect_to = l;
    }
    if (!ok || http_add_standard_headers(x, has_ct) != 0 || http_set_common_options(s, x) != 0) {
        http_xfer_free(x);
        return -1;
    }
    http_session_link(s, x);
    x->start_ms = http_now_ms(s);
    s->st.requests++;
    char msg[512];
    if (url_check(url, msg, sizeof msg, &x->https) != 0) {
        /* reported from inside run, as promised */
        char full[1024];
        snprintf(full, sizeof full, "invalid URL '%s': %s", x->target, msg);
        x->failed = 1;
        http_error_set(&x->err, "InvalidURL", full, x->target, 0, "config");
        x->state = XS_TIMER; /* due now: fire_timers finishes it, without an attempt */
        x->wake_ms = x->start_ms;
        return 0;
    }
    http_xfer_attempt(x);
    return 0;
}
