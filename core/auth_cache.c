/* auth_cache.c: the credential's lifetime (reference counts) and its token cache: one entry per
 * (tenant, scope), one fetch in flight per entry shared by every waiter (auth.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>
#include "auth_int.h"

#define REFRESH_MARGIN_MS 300000 /* a token is used while now + 5 min < expires_on */

void auth_entry_free(struct cache_entry *e)
{
    buf_secret_free(&e->token);
    free(e->tenant);
    free(e->scope);
    free(e->waiters);
    free(e);
}

const char *auth_credential_authority(const auth_credential *c) { return c->authority; }

void auth_credential_ref(auth_credential *c)
{
    if (c)
        c->refs++;
}

void auth_credential_unref(auth_credential *c)
{
    if (!c || --c->refs > 0)
        return;
    free(c->tenant);
    free(c->client_id);
    free(c->authority);
    buf_secret_free(&c->client_secret);
    EVP_PKEY_free(c->key);
    X509_free(c->cert);
    sk_X509_pop_free(c->chain, X509_free);
    free(c->x5t_s256);
    free(c->x5c);
    free(c->token_file);
    free(c->identity_client_id);
    free(c->identity_object_id);
    free(c->identity_resource_id);
    free(c->imds_endpoint);
    buf_secret_free(&c->app_service_header);
    auth_credential_unref(c->source);
    free(c->exchange_audience);
    free(c->ca_file);
    if (c->connect_to) {
        for (char **p = c->connect_to; *p; p++)
            free(*p);
        free(c->connect_to);
    }
    while (c->cache) {
        struct cache_entry *e = c->cache;
        c->cache = e->next;
        auth_entry_free(e);
    }
    OPENSSL_cleanse(c, sizeof *c);
    free(c);
}

long auth_token_fetches(const auth_credential *c)
{
    return c ? c->fetches : 0;
}

static struct cache_entry *entry_get(auth_credential *c, const char *tenant, const char *scope)
{
    for (struct cache_entry *e = c->cache; e; e = e->next)
        if (strcmp(e->tenant, tenant) == 0 && strcmp(e->scope, scope) == 0)
            return e;
    struct cache_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->tenant = buf_dup(tenant);
    e->scope = buf_dup(scope);
    if (!e->tenant || !e->scope) {
        auth_entry_free(e);
        return NULL;
    }
    e->next = c->cache;
    c->cache = e;
    return e;
}

int auth_entry_fresh(const struct cache_entry *e, int64_t now_ms)
{
    return e->token && now_ms + REFRESH_MARGIN_MS < e->expires_on * 1000;
}

int auth_uses_tenant(const auth_credential *c)
{
    return c->kind != KIND_MI;
}

/* Store the outcome and call every waiter once. token (may be NULL) is borrowed. */
void auth_fetch_finish(struct fetch *f, const char *token, int64_t expires_on,
                         const struct cmk_error *err)
{
    struct cache_entry *e = f->e;
    auth_credential *c = f->c;
    char *copy = NULL;
    struct cmk_error oom = {.code = "OutOfMemory", .message = "out of memory storing a token"};
    if (token) {
        copy = buf_dup(token);
        char *stored = buf_dup(token);
        if (!copy || !stored) {
            buf_secret_free(&copy);
            buf_secret_free(&stored);
            err = &oom;
        } else {
            buf_secret_free(&e->token);
            e->token = stored;
            e->expires_on = expires_on;
        }
    }
    struct waiter *w = e->waiters;
    size_t n = e->nwaiters;
    e->waiters = NULL;
    e->nwaiters = e->cap = 0;
    e->pending = 0;
    /* waiters may re-enter auth_get_token (and start a new fetch for this entry) */
    for (size_t i = 0; i < n; i++)
        w[i].cb(w[i].ud, copy, copy ? NULL : err);
    free(w);
    buf_secret_free(&copy);
    free(f->url);
    free(f);
    auth_credential_unref(c);
}

void auth_fetch_fail(struct fetch *f, const char *code, int status, const char *kind,
                     const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct cmk_error e = {.code = code, .message = msg, .status = status, .target = f->url,
                          .tenant = auth_uses_tenant(f->c) ? f->e->tenant : f->c->tenant,
                          .kind = kind};
    auth_fetch_finish(f, NULL, 0, &e);
}

void auth_get_token(auth_credential *c, http_session *s, const char *scope, const char *tenant,
                    auth_token_cb cb, void *ud)
{
    struct cmk_error e = {.code = "InvalidRequest", .kind = "config", .tenant = c ? c->tenant : NULL};
    if (!c || !s || auth_is_empty(scope)) {
        e.message = !c ? "no credential" : !s ? "no HTTP session" : "a token needs a scope";
        cb(ud, NULL, &e);
        return;
    }
    if (!auth_uses_tenant(c))
        tenant = "";
    else if (auth_is_empty(tenant))
        tenant = c->tenant;
    else {
        const char *why = auth_tenant_problem(tenant);
        if (why) {
            char msg[300];
            snprintf(msg, sizeof msg, "tenant %s", why);
            e.code = "InvalidTenant";
            e.message = msg;
            e.tenant = tenant;
            cb(ud, NULL, &e);
            return;
        }
    }
    struct cache_entry *entry = entry_get(c, tenant, scope);
    if (!entry) {
        e.code = "OutOfMemory";
        e.kind = NULL;
        e.message = "out of memory";
        cb(ud, NULL, &e);
        return;
    }
    if (auth_entry_fresh(entry, http_now_ms(s))) {
        cb(ud, entry->token, NULL);
        return;
    }
    if (entry->nwaiters == entry->cap) {
        size_t cap = entry->cap ? entry->cap * 2 : 4;
        struct waiter *w = realloc(entry->waiters, cap * sizeof *w);
        if (!w) {
            e.code = "OutOfMemory";
            e.kind = NULL;
        e.kind = NULL;
            e.message = "out of memory";
            cb(ud, NULL, &e);
            return;
        }
        entry->waiters = w;
        entry->cap = cap;
    }
    entry->waiters[entry->nwaiters++] = (struct waiter){cb, ud};
    if (entry->pending)
        return;
    /* an expired token is wiped now rather than at replacement */
    buf_secret_free(&entry->token);
    struct fetch *f = calloc(1, sizeof *f);
    if (!f) {
        entry->nwaiters--;
        e.code = "OutOfMemory";
        e.kind = NULL;
        e.message = "out of memory";
        cb(ud, NULL, &e);
        return;
    }
    entry->pending = 1;
    auth_credential_ref(c);
    f->c = c;
    f->e = entry;
    f->s = s;
    auth_fetch_start(f);
}

static void source_get_token(void *owner, http_session *s, const char *scope, const char *tenant,
                             http_token_cb cb, void *ud)
{
    auth_get_token(owner, s, scope, tenant, cb, ud);
}

static void source_release(void *owner)
{
    auth_credential_unref(owner);
}

const struct http_token_source auth_token_source = {source_get_token, source_release};
