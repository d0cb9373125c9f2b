/* auth_fetch.c: one token request - sending it through the HTTP session, reading the answer
 * (a token, or an Entra ID / IMDS error as an error table) - and the client-credentials flows of
 * the Entra ID token endpoint: secret, certificate assertion, workload identity (federated token)
 * and chained (a managed identity's token as the assertion). */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <jansson.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include "auth_int.h"
#include "crypto.h"
#include "jose.h"
#include "redact.h"

#define JWT_BEARER "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define ASSERTION_LIFETIME_S 600

/* Append the percent-encoded value (curl_easy_escape), wiping curl's copy. */
void auth_add_escaped(struct buf *b, const char *v)
{
    char *e = curl_easy_escape(NULL, v, 0);
    if (!e) {
        b->oom = 1;
        return;
    }
    buf_adds(b, e);
    OPENSSL_cleanse(e, strlen(e));
    curl_free(e);
}

/* "&name=value" (no "&" first), value percent-encoded. */
void auth_add_form(struct buf *b, const char *name, const char *value)
{
    if (b->len)
        buf_adds(b, "&");
    buf_adds(b, name);
    buf_adds(b, "=");
    auth_add_escaped(b, value);
}

/* A JSON number or a numeric string (IMDS sends "3599"); -1 when neither. */
static int64_t json_int_or_string(json_t *v)
{
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_real(v))
        return (int64_t)json_real_value(v);
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        long long n = strtoll(s, &end, 10);
        if (end != s && *end == '\0' && errno == 0)
            return (int64_t)n;
    }
    return -1;
}

static void on_token_response(void *ud, const struct http_internal_response *r)
{
    struct fetch *f = ud;
    const char *tenant = auth_uses_tenant(f->c) ? f->e->tenant : NULL;
    if (r->err) {
        struct cmk_error e = *r->err;
        if (!e.tenant)
            e.tenant = tenant;
        if (!e.target)
            e.target = f->url;
        auth_fetch_finish(f, NULL, 0, &e);
        return;
    }
    json_error_t jerr;
    json_t *root = r->body && r->body_len ? json_loadb(r->body, r->body_len, 0, &jerr) : NULL;
    json_t *at = json_object_get(root, "access_token");
    if (r->status >= 200 && r->status < 300 && json_is_string(at) && json_string_length(at) > 0) {
        int64_t now_s = http_now_ms(f->s) / 1000;
        int64_t expires_in = json_int_or_string(json_object_get(root, "expires_in"));
        int64_t expires_on = expires_in >= 0 ? now_s + expires_in
                                             : json_int_or_string(json_object_get(root, "expires_on"));
        /* wipe jansson's copy of the token once ours is taken */
        char *tok = (char *)json_string_value(at);
        size_t toklen = json_string_length(at);
        if (expires_on < 0) {
            OPENSSL_cleanse(tok, toklen);
            json_decref(root);
            auth_fetch_fail(f, "InvalidTokenResponse", (int)r->status, NULL,
                            "the token response has neither expires_in nor expires_on");
            return;
        }
        char *copy = buf_dup(tok);
        OPENSSL_cleanse(tok, toklen);
        json_decref(root);
        if (!copy) {
            auth_fetch_fail(f, "OutOfMemory", (int)r->status, NULL, "out of memory reading a token response");
            return;
        }
        auth_fetch_finish(f, copy, expires_on, NULL);
        buf_secret_free(&copy);
        return;
    }
    if (json_is_string(at))
        OPENSSL_cleanse((char *)json_string_value(at), json_string_length(at));
    /* an error: {"error", "error_description", "error_codes":[n]} */
    char code[64];
    const char *error = json_string_value(json_object_get(root, "error"));
    json_t *codes = json_object_get(root, "error_codes");
    json_t *first = json_array_get(codes, 0);
    const char *described = json_string_value(json_object_get(root, "error_description"));
    size_t digits = described && strncmp(described, "AADSTS", 6) == 0 ? strspn(described + 6, "0123456789") : 0;
    if (json_is_integer(first))
        snprintf(code, sizeof code, "AADSTS%lld", (long long)json_integer_value(first));
    else if (digits > 0 && digits < 16) /* no error_codes: the code the description starts with */
        snprintf(code, sizeof code, "AADSTS%.*s", (int)digits, described + 6);
    else if (error && strlen(error) < sizeof code && strspn(error, "abcdefghijklmnopqrstuvwxyz"
                                                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                                   "0123456789_-.") == strlen(error))
        snprintf(code, sizeof code, "%s", error);
    else
        snprintf(code, sizeof code, r->status >= 200 && r->status < 300 ? "InvalidTokenResponse"
                                                                          : "TokenRequestFailed");
    const char *desc = json_string_value(json_object_get(root, "error_description"));
    char fallback[160];
    if (!desc) {
        snprintf(fallback, sizeof fallback,
                 r->status >= 200 && r->status < 300 ? "the token response has no access_token"
                                                     : "the token endpoint answered HTTP %ld",
                 r->status);
        desc = fallback;
    }
    char *message = redact_text(desc, strlen(desc));
    struct cmk_error e = {
        .code = code,
        .message = message ? message : "token request failed",
        .status = (int)r->status,
        .target = f->url,
        .request_id = r->request_id,
        .retryable = (r->status == 400 || r->status == 401) ? 0 : http_status_retryable(r->status),
        .tenant = tenant,
        /* Entra refused this credential (a wrong secret, an unknown app or tenant): exit 4 */
        .kind = (r->status >= 400 && r->status < 500) ? "auth" : NULL,
    };
    auth_fetch_finish(f, NULL, 0, &e);
    free(message);
    json_decref(root);
}

void auth_submit(struct fetch *f, const char *method, const char *url, const char *const *headers,
                   struct buf *body)
{
    auth_credential *c = f->c;
    f->url = buf_dup(url);
    if (!f->url) {
        buf_wipe(body);
        auth_fetch_fail(f, "OutOfMemory", 0, NULL, "out of memory building a token request");
        return;
    }
    c->fetches++;
    http_count_token_fetch(f->s);
    int rc = http_submit_internal(f->s, method, url, headers, body ? body->data : NULL,
                                  body ? body->len : 0, c->ca_file,
                                  (const char *const *)c->connect_to, on_token_response, f);
    if (body)
        buf_wipe(body);
    if (rc != 0)
        auth_fetch_fail(f, "TokenRequestFailed", 0, "network", "could not start the token request");
}

static void token_url(struct buf *u, const auth_credential *c, const char *tenant)
{
    buf_adds(u, c->authority);
    buf_adds(u, "/");
    auth_add_escaped(u, tenant);
    buf_adds(u, "/oauth2/v2.0/token");
}

/* POST the client-credentials form with either a secret or an assertion (borrowed). */
static void auth_post_client_credentials(struct fetch *f, const char *assertion)
{
    static const char *const headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                          "Accept: application/json", NULL};
    auth_credential *c = f->c;
    struct buf url = {0}, body = {0};
    token_url(&url, c, f->e->tenant);
    auth_add_form(&body, "grant_type", "client_credentials");
    auth_add_form(&body, "client_id", c->client_id);
    auth_add_form(&body, "scope", f->e->scope);
    if (assertion) {
        auth_add_form(&body, "client_assertion_type", JWT_BEARER);
        auth_add_form(&body, "client_assertion", assertion);
    } else {
        auth_add_form(&body, "client_secret", c->client_secret);
    }
    if (url.oom || body.oom) {
        buf_wipe(&url);
        buf_wipe(&body);
        auth_fetch_fail(f, "OutOfMemory", 0, NULL, "out of memory building a token request");
        return;
    }
    auth_submit(f, "POST", url.data, headers, &body);
    buf_wipe(&url);
}

/* A fresh RS256 client assertion for the certificate flow; malloc'd (cleanse + free). */
static char *certificate_assertion(struct fetch *f)
{
    auth_credential *c = f->c;
    char jti[37];
    if (crypto_uuid4(jti) != 0)
        return NULL;
    struct buf aud = {0};
    token_url(&aud, c, f->e->tenant);
    if (aud.oom) {
        buf_wipe(&aud);
        return NULL;
    }
    json_int_t now = (json_int_t)(http_now_ms(f->s) / 1000);
    json_t *header = json_pack("{s:s, s:s}", "typ", "JWT", "x5t#S256", c->x5t_s256);
    if (header && c->send_x5c) {
        json_t *x5c = json_array();
        json_array_append_new(x5c, json_string(c->x5c));
        json_object_set_new(header, "x5c", x5c);
    }
    json_t *claims = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "aud", aud.data, "iss",
                               c->client_id, "sub", c->client_id, "jti", jti, "nbf", now, "iat",
                               now, "exp", now + ASSERTION_LIFETIME_S);
    char *jwt = header && claims ? jose_sign(header, claims, c->key, JOSE_RS256) : NULL;
    json_decref(header);
    json_decref(claims);
    buf_wipe(&aud);
    return jwt;
}

/* Trim surrounding whitespace in place (token files often end in a newline). */
static char *trim(char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static void fetch_workload(struct fetch *f)
{
    auth_credential *c = f->c;
    if (c->cb_ref != LUA_NOREF && c->cb_ref != LUA_REFNIL) {
        lua_State *T = c->cb_thread;
        if (!T) {
            auth_fetch_fail(f, "CredentialClosed", 0, "config",
                            "the credential's assertion callback was released (credential closed)");
            return;
        }
        lua_settop(T, 0);
        lua_rawgeti(T, LUA_REGISTRYINDEX, c->cb_ref);
        int rc = lua_pcall(T, 0, 1, 0);
        if (rc != LUA_OK || lua_type(T, -1) != LUA_TSTRING || lua_rawlen(T, -1) == 0) {
            const char *why = rc != LUA_OK ? lua_tostring(T, -1) : NULL;
            char *clean = why ? redact_text(why, strlen(why)) : NULL;
            lua_settop(T, 0);
            auth_fetch_fail(f, "AssertionCallbackFailed", 0, "config", "the assertion callback %s%s",
                            rc != LUA_OK ? "raised: " : "did not return a non-empty string",
                       clean ? clean : "");
            free(clean);
            return;
        }
        char *assertion = buf_dup(lua_tostring(T, -1));
        lua_settop(T, 0);
        if (!assertion) {
            auth_fetch_fail(f, "OutOfMemory", 0, NULL, "out of memory");
            return;
        }
        auth_post_client_credentials(f, trim(assertion));
        buf_secret_free(&assertion);
        return;
    }
    char why[300] = "";
    size_t len = 0;
    char *data = (char *)auth_read_file(c->token_file, &len, why, sizeof why);
    if (!data) {
        auth_fetch_fail(f, "FederatedTokenUnavailable", 0, "config", "workload identity token file: %s", why);
        return;
    }
    char *assertion = trim(data);
    if (!*assertion) {
        free(data);
        auth_fetch_fail(f, "FederatedTokenUnavailable", 0, "config",
                        "workload identity token file '%s' is empty", c->token_file);
        return;
    }
    auth_post_client_credentials(f, assertion);
    OPENSSL_cleanse(data, len);
    free(data);
}

static void on_chained_assertion(void *ud, const char *token, const struct cmk_error *err)
{
    struct fetch *f = ud;
    if (!token) {
        struct cmk_error e = *err;
        e.tenant = f->e->tenant; /* the exchange is for the chained credential's tenant */
        char msg[600];
        snprintf(msg, sizeof msg, "could not get the managed identity token for the federated "
                                  "exchange: %s", err->message ? err->message : "unknown error");
        e.message = msg;
        auth_fetch_finish(f, NULL, 0, &e);
        return;
    }
    auth_post_client_credentials(f, token);
}

void auth_fetch_start(struct fetch *f)
{
    auth_credential *c = f->c;
    switch (c->kind) {
    case KIND_SECRET:
        auth_post_client_credentials(f, NULL);
        return;
    case KIND_CERT: {
        char *jwt = certificate_assertion(f);
        if (!jwt) {
            char why[256] = "";
            crypto_drain_errors(why, sizeof why);
            auth_fetch_fail(f, "AssertionSigningFailed", 0, "config",
                            "could not sign the client assertion%s%s", why[0] ? ": " : "", why);
            return;
        }
        auth_post_client_credentials(f, jwt);
        buf_secret_free(&jwt);
        return;
    }
    case KIND_WORKLOAD:
        fetch_workload(f);
        return;
    case KIND_MI:
        auth_fetch_managed_identity(f);
        return;
    case KIND_CHAINED: {
        struct buf scope = {0};
        buf_adds(&scope, c->exchange_audience);
        buf_adds(&scope, "/.default");
        if (scope.oom) {
            buf_wipe(&scope);
            auth_fetch_fail(f, "OutOfMemory", 0, NULL, "out of memory");
            return;
        }
        auth_get_token(c->source, f->s, scope.data, NULL, on_chained_assertion, f);
        buf_wipe(&scope);
        return;
    }
    }
}
