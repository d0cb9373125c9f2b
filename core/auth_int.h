/*
 * auth_int.h: what the credential module's files share (auth_spec.c, auth_cache.c,
 * auth_fetch.c, auth_imds.c, lauth.c). Other modules use auth.h.
 *
 * Secrets (client secrets, private keys, assertions, access tokens, the App Service identity
 * header) live only in these files' malloc'd memory and are wiped before free.
 * Ownership: an auth_credential is reference counted. The Lua userdata holds one reference,
 * every in-flight token fetch holds one, a chained credential holds one on its source, and
 * every HTTP transfer that uses it holds one (through auth_token_source).
 */
#ifndef CMKFLOW_AUTH_INT_H
#define CMKFLOW_AUTH_INT_H
#include <openssl/evp.h>
#include <openssl/x509.h>
#include "auth.h"
#include "buf.h"

enum auth_kind { KIND_SECRET, KIND_CERT, KIND_WORKLOAD, KIND_MI, KIND_CHAINED };
extern const char *const auth_kind_names[]; /* indexed by enum auth_kind */

struct waiter {
    auth_token_cb cb;
    void *ud;
};

/* One cached token per (authority, tenant, client_id, scope); authority and client_id are the
 * credential's own, so an entry is found by (tenant, scope). */
struct cache_entry {
    struct cache_entry *next;
    char *tenant; /* "" for managed identities */
    char *scope;
    char *token;  /* secret; NULL when none */
    int64_t expires_on; /* epoch seconds */
    int pending;  /* a fetch is in flight; new callers queue */
    struct waiter *waiters;
    size_t nwaiters, cap;
};

struct auth_credential {
    int refs;
    enum auth_kind kind;
    int from_environment;
    char *tenant, *client_id, *authority;
    char *client_secret; /* secret */
    EVP_PKEY *key;       /* secret */
    X509 *cert;
    STACK_OF(X509) *chain;
    char *x5t_s256, *x5c;
    int send_x5c;
    char *token_file;
    /* assertion callback (workload identity): a function in the registry, called on a thread
     * of its own; cleared by the userdata's __gc */
    lua_State *cb_thread;
    int cb_ref, thread_ref;
    char *identity_client_id, *identity_object_id, *identity_resource_id;
    char *imds_endpoint;        /* IMDS token URL, or the App Service IDENTITY_ENDPOINT */
    char *app_service_header;   /* secret-ish: IDENTITY_HEADER; non-NULL selects App Service */
    auth_credential *source;    /* chained */
    char *exchange_audience;
    char *ca_file;
    char **connect_to;          /* NULL-terminated */
    struct cache_entry *cache;
    long fetches;
};

/* One token request in flight for one cache entry. */
struct fetch {
    auth_credential *c; /* a reference */
    struct cache_entry *e;
    http_session *s;
    char *url;          /* for error targets; holds no secret */
};

/* ---- auth_spec.c ---- */
int auth_is_empty(const char *s);
/* NULL when tenant names one tenant; otherwise why not (no secret: tenant is public). */
const char *auth_tenant_problem(const char *t);
/* Read a whole file (at most 1 MiB). Returns malloc'd bytes (NUL-terminated; the caller cleanses
 * and frees) or NULL with a reason in err. */
unsigned char *auth_read_file(const char *path, size_t *len, char *err, size_t errlen);
/* Fill c from spec; has_callback: a workload identity's assertion function is given. 0, or -1
 * with a message naming the field in err. */
int auth_build(auth_credential *c, const struct auth_spec *spec, int has_callback, char *err,
               size_t errlen);

/* ---- auth_cache.c ---- */
void auth_entry_free(struct cache_entry *e);
int auth_entry_fresh(const struct cache_entry *e, int64_t now_ms);
/* 0 for managed identities (no tenant in their requests). */
int auth_uses_tenant(const auth_credential *c);
/* Store the outcome, call every waiter once, free f. token (may be NULL) is borrowed. */
void auth_fetch_finish(struct fetch *f, const char *token, int64_t expires_on,
                       const struct cmk_error *err);
/* Finish f with an error of this code and kind (NULL for a remote answer). */
void auth_fetch_fail(struct fetch *f, const char *code, int status, const char *kind,
                     const char *fmt, ...);

/* ---- auth_fetch.c ---- */
/* Append the percent-encoded value, wiping curl's copy; "&name=value" form fields. */
void auth_add_escaped(struct buf *b, const char *v);
void auth_add_form(struct buf *b, const char *name, const char *value);
/* Send the token request (body is wiped); the answer finishes f. */
void auth_submit(struct fetch *f, const char *method, const char *url, const char *const *headers,
                 struct buf *body);
void auth_fetch_start(struct fetch *f);

/* ---- auth_imds.c ---- */
void auth_fetch_managed_identity(struct fetch *f);

#endif
