/*
 * auth.c: Entra ID credential providers and the token cache. Secrets (client secrets, private
 * keys, assertions, access tokens, the App Service identity header) live only in this file's
 * malloc'd memory and are wiped with OPENSSL_cleanse before free. Lua sees an opaque
 * "cmkflow.credential" userdata; no Lua function returns a token.
 *
 * Ownership: an auth_credential is reference counted. The Lua userdata holds one reference,
 * every in-flight token fetch holds one, a chained credential holds one on its source, and
 * http.c takes one per transfer that uses it (auth_credential_ref/unref).
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include "auth.h"
#include "crypto.h"
#include "jose.h"
#include "redact.h"

#define CRED_MT "cmkflow.credential"
#define DEFAULT_AUTHORITY "https://login.microsoftonline.com"
#define DEFAULT_IMDS "http://169.254.169.254/metadata/identity/oauth2/token"
#define IMDS_PATH "/metadata/identity/oauth2/token"
#define DEFAULT_EXCHANGE_AUDIENCE "api://AzureADTokenExchange"
#define JWT_BEARER "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#define REFRESH_MARGIN_MS 300000 /* a token is used while now + 5 min < expires_on */
#define MAX_FILE_BYTES (1024 * 1024)
#define ASSERTION_LIFETIME_S 600

enum auth_kind { KIND_SECRET, KIND_CERT, KIND_WORKLOAD, KIND_MI, KIND_CHAINED };
static const char *const kind_names[] = {"client_secret", "client_certificate", "workload_identity",
                                         "managed_identity", "chained"};

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

struct cred_ud {
    auth_credential *c;
};

/* One token request in flight for one cache entry. */
struct fetch {
    auth_credential *c; /* a reference */
    struct cache_entry *e;
    http_session *s;
    char *url;          /* for error targets; holds no secret */
};

/* ---- small helpers ------------------------------------------------------------------ */

static char *dupstr(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static void free_secret(char **p)
{
    if (*p) {
        OPENSSL_cleanse(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

static int is_empty(const char *s)
{
    return !s || !*s;
}

/* A growable buffer that wipes what it held whenever it moves or is freed. */
struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void sb_addn(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = malloc(cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        if (b->p) {
            memcpy(p, b->p, b->len);
            OPENSSL_cleanse(b->p, b->cap);
            free(b->p);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_add(struct sbuf *b, const char *s)
{
    sb_addn(b, s, strlen(s));
}

/* Append the percent-encoded value (curl_easy_escape), wiping curl's copy. */
static void sb_add_escaped(struct sbuf *b, const char *v)
{
    char *e = curl_easy_escape(NULL, v, 0);
    if (!e) {
        b->oom = 1;
        return;
    }
    sb_add(b, e);
    OPENSSL_cleanse(e, strlen(e));
    curl_free(e);
}

/* "&name=value" (no "&" first), value percent-encoded. */
static void sb_form(struct sbuf *b, const char *name, const char *value)
{
    if (b->len)
        sb_add(b, "&");
    sb_add(b, name);
    sb_add(b, "=");
    sb_add_escaped(b, value);
}

static void sb_free(struct sbuf *b)
{
    if (b->p) {
        OPENSSL_cleanse(b->p, b->cap);
        free(b->p);
    }
    memset(b, 0, sizeof *b);
}

/* Read a whole file (at most MAX_FILE_BYTES). Returns malloc'd bytes (NUL-terminated; the
 * caller cleanses and frees) or NULL with a reason in err. */
static unsigned char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct sbuf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        sb_addn(&b, chunk, n);
        if (b.len > MAX_FILE_BYTES)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    OPENSSL_cleanse(chunk, sizeof chunk);
    if (bad || b.oom || b.len > MAX_FILE_BYTES) {
        snprintf(err, errlen, "cannot read '%s': %s", path,
                 bad ? "read error" : b.oom ? "out of memory" : "file larger than 1 MiB");
        sb_free(&b);
        return NULL;
    }
    if (!b.p)
        sb_addn(&b, "", 0);
    *len = b.len;
    return (unsigned char *)b.p;
}

static int is_domain(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253 || !strchr(s, '.'))
        return 0;
    if (s[0] == '.' || s[0] == '-' || s[n - 1] == '.' || s[n - 1] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!(isalnum(ch) || ch == '-' || ch == '.'))
            return 0;
        if (ch == '.' && s[i + 1] == '.')
            return 0;
    }
    return 1;
}

static int is_multi_tenant_alias(const char *s)
{
    return strcasecmp(s, "common") == 0 || strcasecmp(s, "organizations") == 0 ||
           strcasecmp(s, "consumers") == 0;
}

/* NULL when tenant names one tenant; otherwise why not (no secret: tenant is public). */
static const char *tenant_problem(const char *t)
{
    if (is_empty(t))
        return "is required (the tenant GUID or a verified domain such as contoso.onmicrosoft.com)";
    if (is_multi_tenant_alias(t))
        return "must name one tenant: 'common', 'organizations' and 'consumers' cannot be used "
               "for client credentials (use the tenant GUID or a domain such as "
               "contoso.onmicrosoft.com)";
    if (!crypto_is_guid(t) && !is_domain(t))
        return "must be a tenant GUID or a domain name such as contoso.onmicrosoft.com";
    return NULL;
}

/* 1 when s is an http(s) URL with a host and no whitespace, query or fragment (unless allowed). */
static int is_url(const char *s, int https_only, int allow_query)
{
    const char *rest;
    if (strncmp(s, "https://", 8) == 0)
        rest = s + 8;
    else if (!https_only && strncmp(s, "http://", 7) == 0)
        rest = s + 7;
    else
        return 0;
    if (!*rest || *rest == '/')
        return 0;
    for (const char *p = s; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= ' ' || ch == 0x7f || ch == '#' || (!allow_query && ch == '?'))
            return 0;
    }
    return 1;
}

static void strip_trailing_slashes(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
}

/* ---- credential lifetime -------------------------------------------------------------- */

static void entry_free(struct cache_entry *e)
{
    free_secret(&e->token);
    free(e->tenant);
    free(e->scope);
    free(e->waiters);
    free(e);
}

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
    free_secret(&c->client_secret);
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
    free_secret(&c->app_service_header);
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
        entry_free(e);
    }
    OPENSSL_cleanse(c, sizeof *c);
    free(c);
}

long auth_token_fetches(const auth_credential *c)
{
    return c ? c->fetches : 0;
}

/* ---- construction (pure C; errors name the field, never its value) --------------------- */

/* Field names as the user wrote them: environment credentials name the variable too. */
static const char *field(const auth_credential *c, const char *name)
{
    static const char *const map[][3] = {
        {"tenant", "'tenant'", "'tenant' (AZURE_TENANT_ID)"},
        {"client_id", "'client_id'", "'client_id' (AZURE_CLIENT_ID)"},
        {"authority", "'authority'", "'authority' (AZURE_AUTHORITY_HOST)"},
        {"certificate_path", "'certificate_path'", "'certificate_path' (AZURE_CLIENT_CERTIFICATE_PATH)"},
        {"certificate_password", "'certificate_password'",
         "'certificate_password' (AZURE_CLIENT_CERTIFICATE_PASSWORD)"},
        {"client_secret", "'client_secret'", "'client_secret' (AZURE_CLIENT_SECRET)"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i][0], name) == 0)
            return map[i][c->from_environment ? 2 : 1];
    return "?";
}

#define FAIL(...)                                                                          \
    do {                                                                                   \
        snprintf(err, errlen, __VA_ARGS__);                                                \
        return -1;                                                                         \
    } while (0)

static int set_copy(char **dst, const char *v, char *err, size_t errlen)
{
    if (!v)
        return 0;
    *dst = dupstr(v);
    if (!*dst)
        FAIL("credential: out of memory");
    return 0;
}

/* 1 when the PKCS#12 blob's MAC does not verify with password (NULL also tries ""). */
static int pkcs12_wrong_password(const unsigned char *data, size_t len, const char *password)
{
    const unsigned char *p = data;
    PKCS12 *p12 = d2i_PKCS12(NULL, &p, (long)len);
    if (!p12) {
        ERR_clear_error();
        return 0; /* not PKCS#12: PEM, or garbage the loader reports */
    }
    int wrong = 0;
    if (PKCS12_mac_present(p12)) {
        if (password)
            wrong = !PKCS12_verify_mac(p12, password, -1);
        else
            wrong = !PKCS12_verify_mac(p12, NULL, 0) && !PKCS12_verify_mac(p12, "", 0);
    }
    PKCS12_free(p12);
    ERR_clear_error();
    return wrong;
}

static int load_certificate(auth_credential *c, const char *path, const char *password,
                            char *err, size_t errlen)
{
    char why[256] = "";
    size_t len = 0;
    unsigned char *data = read_file(path, &len, why, sizeof why);
    if (!data)
        FAIL("credential: field %s: %s", field(c, "certificate_path"), why);
    int rc = 0;
    if (pkcs12_wrong_password(data, len, password)) {
        snprintf(err, errlen,
                 password ? "credential: field %s does not open the PKCS#12 file (wrong password)"
                          : "credential: field %s is required: the PKCS#12 file is password protected",
                 field(c, "certificate_password"));
        rc = -1;
    } else if (crypto_load_credential_cert(data, len, password, &c->key, &c->cert, &c->chain, why,
                                           sizeof why) != 0 ||
               !c->key || !c->cert) {
        snprintf(err, errlen,
                 "credential: field %s must name a PEM file with the certificate and its private "
                 "key, or a PKCS#12 file: %s",
                 field(c, "certificate_path"), why[0] ? why : "no certificate or key found");
        rc = -1;
    }
    OPENSSL_cleanse(data, len);
    free(data);
    if (rc)
        return rc;
    if (EVP_PKEY_base_id(c->key) != EVP_PKEY_RSA)
        FAIL("credential: field %s: the private key must be RSA (RS256 assertions)",
             field(c, "certificate_path"));
    if (X509_check_private_key(c->cert, c->key) != 1) {
        ERR_clear_error();
        FAIL("credential: field %s: the private key does not match the certificate",
             field(c, "certificate_path"));
    }
    c->x5t_s256 = crypto_cert_thumbprint_s256(c->cert);
    c->x5c = crypto_cert_der_b64(c->cert);
    if (!c->x5t_s256 || !c->x5c)
        FAIL("credential: field %s: cannot compute the certificate thumbprint",
             field(c, "certificate_path"));
    return 0;
}

static int check_app_identity(auth_credential *c, const struct auth_spec *s, char *err, size_t errlen)
{
    const char *why = tenant_problem(s->tenant);
    if (why)
        FAIL("credential: field %s %s", field(c, "tenant"), why);
    if (is_empty(s->client_id))
        FAIL("credential: field %s is required (the application's client ID, a GUID)",
             field(c, "client_id"));
    if (!crypto_is_guid(s->client_id))
        FAIL("credential: field %s must be a GUID", field(c, "client_id"));
    const char *authority = s->authority ? s->authority : DEFAULT_AUTHORITY;
    if (!is_url(authority, 1, 0))
        FAIL("credential: field %s must be an https:// URL such as %s", field(c, "authority"),
             DEFAULT_AUTHORITY);
    if (set_copy(&c->tenant, s->tenant, err, errlen) || set_copy(&c->client_id, s->client_id, err, errlen) ||
        set_copy(&c->authority, authority, err, errlen))
        return -1;
    strip_trailing_slashes(c->authority);
    return 0;
}

static int build_managed_identity(auth_credential *c, const struct auth_spec *s, char *err, size_t errlen)
{
    int n = !is_empty(s->identity_client_id) + !is_empty(s->identity_object_id) +
            !is_empty(s->identity_resource_id);
    if (n > 1)
        FAIL("credential: give at most one of the fields 'identity_client_id', 'identity_object_id' "
             "and 'identity_resource_id'");
    if (!is_empty(s->identity_client_id) && !crypto_is_guid(s->identity_client_id))
        FAIL("credential: field 'identity_client_id' must be a GUID");
    if (!is_empty(s->identity_object_id) && !crypto_is_guid(s->identity_object_id))
        FAIL("credential: field 'identity_object_id' must be a GUID");
    if (!is_empty(s->identity_resource_id) &&
        strncasecmp(s->identity_resource_id, "/subscriptions/", 15) != 0)
        FAIL("credential: field 'identity_resource_id' must be an ARM resource ID "
             "(/subscriptions/.../userAssignedIdentities/...)");
    if (set_copy(&c->identity_client_id, is_empty(s->identity_client_id) ? NULL : s->identity_client_id, err, errlen) ||
        set_copy(&c->identity_object_id, is_empty(s->identity_object_id) ? NULL : s->identity_object_id, err, errlen) ||
        set_copy(&c->identity_resource_id, is_empty(s->identity_resource_id) ? NULL : s->identity_resource_id, err, errlen))
        return -1;
    const char *app_endpoint = getenv("IDENTITY_ENDPOINT"), *app_header = getenv("IDENTITY_HEADER");
    const char *pod_host = getenv("AZURE_POD_IDENTITY_AUTHORITY_HOST");
    if (!is_empty(s->imds_endpoint)) {
        if (!is_url(s->imds_endpoint, 0, 1))
            FAIL("credential: field 'imds_endpoint' must be an http:// or https:// URL");
        return set_copy(&c->imds_endpoint, s->imds_endpoint, err, errlen);
    }
    if (!is_empty(app_endpoint) && !is_empty(app_header)) {
        if (!is_url(app_endpoint, 0, 1))
            FAIL("credential: environment variable IDENTITY_ENDPOINT must be an http(s) URL");
        return set_copy(&c->imds_endpoint, app_endpoint, err, errlen) ||
               set_copy(&c->app_service_header, app_header, err, errlen);
    }
    if (!is_empty(pod_host)) {
        if (!is_url(pod_host, 0, 0))
            FAIL("credential: environment variable AZURE_POD_IDENTITY_AUTHORITY_HOST must be an "
                 "http(s) URL");
        struct sbuf b = {0};
        sb_add(&b, pod_host);
        while (b.len > 0 && b.p[b.len - 1] == '/')
            b.p[--b.len] = '\0';
        sb_add(&b, IMDS_PATH);
        if (b.oom) {
            sb_free(&b);
            FAIL("credential: out of memory");
        }
        c->imds_endpoint = b.p; /* not a secret: hand the buffer over */
        return 0;
    }
    return set_copy(&c->imds_endpoint, DEFAULT_IMDS, err, errlen);
}

static int build(auth_credential *c, const struct auth_spec *spec, int has_callback, char *err,
                 size_t errlen);

/* Resolve EnvironmentCredential into a spec and build it. */
static int build_environment(auth_credential *c, const struct auth_spec *spec, char *err, size_t errlen)
{
    const char *tenant = getenv("AZURE_TENANT_ID"), *client_id = getenv("AZURE_CLIENT_ID");
    const char *secret = getenv("AZURE_CLIENT_SECRET"), *cert = getenv("AZURE_CLIENT_CERTIFICATE_PATH");
    const char *token_file = getenv("AZURE_FEDERATED_TOKEN_FILE");
    int has_method = !is_empty(secret) || !is_empty(cert) || !is_empty(token_file);
    if (is_empty(tenant) || is_empty(client_id) || !has_method) {
        char missing[256] = "";
        size_t off = 0;
        const char *parts[3];
        int n = 0;
        if (is_empty(tenant))
            parts[n++] = "AZURE_TENANT_ID";
        if (is_empty(client_id))
            parts[n++] = "AZURE_CLIENT_ID";
        if (!has_method)
            parts[n++] = "one of AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH or "
                         "AZURE_FEDERATED_TOKEN_FILE";
        for (int i = 0; i < n && off < sizeof missing; i++) {
            int w = snprintf(missing + off, sizeof missing - off, "%s%s",
                             i == 0 ? "" : (i == n - 1 ? " and " : ", "), parts[i]);
            if (w < 0)
                break;
            off += (size_t)w;
        }
        FAIL("credential: kind 'environment' needs environment variables that are not set: set %s",
             missing);
    }
    struct auth_spec s = *spec;
    s.tenant = tenant;
    s.client_id = client_id;
    s.authority = getenv("AZURE_AUTHORITY_HOST");
    if (is_empty(s.authority))
        s.authority = spec->authority;
    if (!is_empty(secret)) {
        s.kind = "client_secret";
        s.client_secret = secret;
    } else if (!is_empty(cert)) {
        s.kind = "client_certificate";
        s.certificate_path = cert;
        s.certificate_password = getenv("AZURE_CLIENT_CERTIFICATE_PASSWORD");
        if (is_empty(s.certificate_password))
            s.certificate_password = NULL;
        const char *chain = getenv("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN");
        s.send_x5c = chain && (strcmp(chain, "1") == 0 || strcasecmp(chain, "true") == 0);
    } else {
        s.kind = "workload_identity";
        s.token_file = token_file;
    }
    c->from_environment = 1;
    return build(c, &s, 0, err, errlen);
}

static int build(auth_credential *c, const struct auth_spec *s, int has_callback, char *err,
                 size_t errlen)
{
    if (is_empty(s->kind))
        FAIL("credential: field 'kind' is required (client_secret, client_certificate, "
             "workload_identity, managed_identity, chained or environment)");
    if (strcmp(s->kind, "environment") == 0)
        return build_environment(c, s, err, errlen);
    int kind = -1;
    for (int i = 0; i < (int)(sizeof kind_names / sizeof kind_names[0]); i++)
        if (strcmp(s->kind, kind_names[i]) == 0)
            kind = i;
    if (kind < 0)
        FAIL("credential: field 'kind' must be one of client_secret, client_certificate, "
             "workload_identity, managed_identity, chained, environment");
    c->kind = (enum auth_kind)kind;
    if (s->ca_file && set_copy(&c->ca_file, s->ca_file, err, errlen))
        return -1;
    if (s->connect_to) {
        size_t n = 0;
        while (s->connect_to[n])
            n++;
        c->connect_to = calloc(n + 1, sizeof *c->connect_to);
        if (!c->connect_to)
            FAIL("credential: out of memory");
        for (size_t i = 0; i < n; i++)
            if (set_copy(&c->connect_to[i], s->connect_to[i], err, errlen))
                return -1;
    }

    switch (c->kind) {
    case KIND_SECRET:
        if (check_app_identity(c, s, err, errlen))
            return -1;
        if (is_empty(s->client_secret))
            FAIL("credential: field %s is required for client_secret", field(c, "client_secret"));
        return set_copy(&c->client_secret, s->client_secret, err, errlen);
    case KIND_CERT:
        if (check_app_identity(c, s, err, errlen))
            return -1;
        if (is_empty(s->certificate_path))
            FAIL("credential: field 'certificate_path' is required for client_certificate");
        c->send_x5c = s->send_x5c;
        return load_certificate(c, s->certificate_path, s->certificate_password, err, errlen);
    case KIND_WORKLOAD: {
        struct auth_spec w = *s;
        if (is_empty(w.tenant))
            w.tenant = getenv("AZURE_TENANT_ID");
        if (is_empty(w.client_id))
            w.client_id = getenv("AZURE_CLIENT_ID");
        if (is_empty(w.authority) && !is_empty(getenv("AZURE_AUTHORITY_HOST")))
            w.authority = getenv("AZURE_AUTHORITY_HOST");
        if (check_app_identity(c, &w, err, errlen))
            return -1;
        if (has_callback)
            return 0;
        const char *file = !is_empty(s->token_file) ? s->token_file : getenv("AZURE_FEDERATED_TOKEN_FILE");
        if (is_empty(file))
            FAIL("credential: field 'token_file' is required for workload_identity (or set "
                 "AZURE_FEDERATED_TOKEN_FILE, or give assertion = function() ... end)");
        return set_copy(&c->token_file, file, err, errlen);
    }
    case KIND_MI:
        if (!is_empty(s->client_id) && is_empty(s->identity_client_id)) {
            /* client_id is accepted as the identity's client ID */
            struct auth_spec m = *s;
            m.identity_client_id = s->client_id;
            return build_managed_identity(c, &m, err, errlen);
        }
        return build_managed_identity(c, s, err, errlen);
    case KIND_CHAINED: {
        if (check_app_identity(c, s, err, errlen))
            return -1;
        const char *aud = is_empty(s->exchange_audience) ? DEFAULT_EXCHANGE_AUDIENCE : s->exchange_audience;
        for (const char *p = aud; *p; p++)
            if ((unsigned char)*p <= ' ')
                FAIL("credential: field 'exchange_audience' must not contain spaces");
        if (set_copy(&c->exchange_audience, aud, err, errlen))
            return -1;
        strip_trailing_slashes(c->exchange_audience);
        if (s->source) {
            auth_credential_ref(s->source);
            c->source = s->source;
            return 0;
        }
        auth_credential *mi = calloc(1, sizeof *mi);
        if (!mi)
            FAIL("credential: out of memory");
        mi->refs = 1;
        mi->cb_ref = mi->thread_ref = LUA_NOREF;
        c->source = mi;
        struct auth_spec m = {.kind = "managed_identity",
                              .identity_client_id = s->identity_client_id,
                              .identity_object_id = s->identity_object_id,
                              .identity_resource_id = s->identity_resource_id,
                              .imds_endpoint = s->imds_endpoint,
                              .ca_file = s->ca_file,
                              .connect_to = s->connect_to};
        return build(mi, &m, 0, err, errlen);
    }
    }
    FAIL("credential: unknown kind");
}

#undef FAIL

/* ---- the token cache and fetches ----------------------------------------------------- */

static struct cache_entry *entry_get(auth_credential *c, const char *tenant, const char *scope)
{
    for (struct cache_entry *e = c->cache; e; e = e->next)
        if (strcmp(e->tenant, tenant) == 0 && strcmp(e->scope, scope) == 0)
            return e;
    struct cache_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->tenant = dupstr(tenant);
    e->scope = dupstr(scope);
    if (!e->tenant || !e->scope) {
        entry_free(e);
        return NULL;
    }
    e->next = c->cache;
    c->cache = e;
    return e;
}

static int entry_fresh(const struct cache_entry *e, int64_t now_ms)
{
    return e->token && now_ms + REFRESH_MARGIN_MS < e->expires_on * 1000;
}

static int uses_tenant(const auth_credential *c)
{
    return c->kind != KIND_MI;
}

/* Store the outcome and call every waiter once. token (may be NULL) is borrowed. */
static void fetch_finish(struct fetch *f, const char *token, int64_t expires_on,
                         const struct cmk_error *err)
{
    struct cache_entry *e = f->e;
    auth_credential *c = f->c;
    char *copy = NULL;
    struct cmk_error oom = {.code = "OutOfMemory", .message = "out of memory storing a token"};
    if (token) {
        copy = dupstr(token);
        char *stored = dupstr(token);
        if (!copy || !stored) {
            free_secret(&copy);
            free_secret(&stored);
            err = &oom;
        } else {
            free_secret(&e->token);
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
    free_secret(&copy);
    free(f->url);
    free(f);
    auth_credential_unref(c);
}

static void fetch_fail(struct fetch *f, const char *code, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct cmk_error e = {.code = code, .message = msg, .status = status, .target = f->url,
                          .tenant = uses_tenant(f->c) ? f->e->tenant : NULL};
    fetch_finish(f, NULL, 0, &e);
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
    const char *tenant = uses_tenant(f->c) ? f->e->tenant : NULL;
    if (r->err) {
        struct cmk_error e = *r->err;
        if (!e.tenant)
            e.tenant = tenant;
        if (!e.target)
            e.target = f->url;
        fetch_finish(f, NULL, 0, &e);
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
            fetch_fail(f, "InvalidTokenResponse", (int)r->status,
                       "the token response has neither expires_in nor expires_on");
            return;
        }
        char *copy = dupstr(tok);
        OPENSSL_cleanse(tok, toklen);
        json_decref(root);
        if (!copy) {
            fetch_fail(f, "OutOfMemory", (int)r->status, "out of memory reading a token response");
            return;
        }
        fetch_finish(f, copy, expires_on, NULL);
        free_secret(&copy);
        return;
    }
    if (json_is_string(at))
        OPENSSL_cleanse((char *)json_string_value(at), json_string_length(at));
    /* an error: {"error", "error_description", "error_codes":[n]} */
    char code[64];
    const char *error = json_string_value(json_object_get(root, "error"));
    json_t *codes = json_object_get(root, "error_codes");
    json_t *first = json_array_get(codes, 0);
    if (json_is_integer(first))
        snprintf(code, sizeof code, "AADSTS%lld", (long long)json_integer_value(first));
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
    };
    fetch_finish(f, NULL, 0, &e);
    free(message);
    json_decref(root);
}

static void submit(struct fetch *f, const char *method, const char *url, const char *const *headers,
                   struct sbuf *body)
{
    auth_credential *c = f->c;
    f->url = dupstr(url);
    if (!f->url) {
        sb_free(body);
        fetch_fail(f, "OutOfMemory", 0, "out of memory building a token request");
        return;
    }
    c->fetches++;
    http_count_token_fetch(f->s);
    int rc = http_submit_internal(f->s, method, url, headers, body ? body->p : NULL,
                                  body ? body->len : 0, c->ca_file,
                                  (const char *const *)c->connect_to, on_token_response, f);
    if (body)
        sb_free(body);
    if (rc != 0)
        fetch_fail(f, "TokenRequestFailed", 0, "could not start the token request");
}

static void token_url(struct sbuf *u, const auth_credential *c, const char *tenant)
{
    sb_add(u, c->authority);
    sb_add(u, "/");
    sb_add_escaped(u, tenant);
    sb_add(u, "/oauth2/v2.0/token");
}

/* POST the client-credentials form with either a secret or an assertion (borrowed). */
static void post_client_credentials(struct fetch *f, const char *assertion)
{
    static const char *const headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                          "Accept: application/json", NULL};
    auth_credential *c = f->c;
    struct sbuf url = {0}, body = {0};
    token_url(&url, c, f->e->tenant);
    sb_form(&body, "grant_type", "client_credentials");
    sb_form(&body, "client_id", c->client_id);
    sb_form(&body, "scope", f->e->scope);
    if (assertion) {
        sb_form(&body, "client_assertion_type", JWT_BEARER);
        sb_form(&body, "client_assertion", assertion);
    } else {
        sb_form(&body, "client_secret", c->client_secret);
    }
    if (url.oom || body.oom) {
        sb_free(&url);
        sb_free(&body);
        fetch_fail(f, "OutOfMemory", 0, "out of memory building a token request");
        return;
    }
    submit(f, "POST", url.p, headers, &body);
    sb_free(&url);
}

/* A fresh RS256 client assertion for the certificate flow; malloc'd (cleanse + free). */
static char *certificate_assertion(struct fetch *f)
{
    auth_credential *c = f->c;
    char jti[37];
    if (crypto_uuid4(jti) != 0)
        return NULL;
    struct sbuf aud = {0};
    token_url(&aud, c, f->e->tenant);
    if (aud.oom) {
        sb_free(&aud);
        return NULL;
    }
    json_int_t now = (json_int_t)(http_now_ms(f->s) / 1000);
    json_t *header = json_pack("{s:s, s:s}", "typ", "JWT", "x5t#S256", c->x5t_s256);
    if (header && c->send_x5c) {
        json_t *x5c = json_array();
        json_array_append_new(x5c, json_string(c->x5c));
        json_object_set_new(header, "x5c", x5c);
    }
    json_t *claims = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "aud", aud.p, "iss",
                               c->client_id, "sub", c->client_id, "jti", jti, "nbf", now, "iat",
                               now, "exp", now + ASSERTION_LIFETIME_S);
    char *jwt = header && claims ? jose_sign(header, claims, c->key, JOSE_RS256) : NULL;
    json_decref(header);
    json_decref(claims);
    sb_free(&aud);
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
            fetch_fail(f, "CredentialClosed", 0,
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
            fetch_fail(f, "AssertionCallbackFailed", 0, "the assertion callback %s%s",
                       rc != LUA_OK ? "raised: " : "did not return a non-empty string",
                       clean ? clean : "");
            free(clean);
            return;
        }
        char *assertion = dupstr(lua_tostring(T, -1));
        lua_settop(T, 0);
        if (!assertion) {
            fetch_fail(f, "OutOfMemory", 0, "out of memory");
            return;
        }
        post_client_credentials(f, trim(assertion));
        free_secret(&assertion);
        return;
    }
    char why[300] = "";
    size_t len = 0;
    char *data = (char *)read_file(c->token_file, &len, why, sizeof why);
    if (!data) {
        fetch_fail(f, "FederatedTokenUnavailable", 0, "workload identity token file: %s", why);
        return;
    }
    char *assertion = trim(data);
    if (!*assertion) {
        free(data);
        fetch_fail(f, "FederatedTokenUnavailable", 0, "workload identity token file '%s' is empty",
                   c->token_file);
        return;
    }
    post_client_credentials(f, assertion);
    OPENSSL_cleanse(data, len);
    free(data);
}

static void fetch_managed_identity(struct fetch *f)
{
    auth_credential *c = f->c;
    /* IMDS and App Service take a resource, not a scope */
    const char *scope = f->e->scope;
    size_t n = strlen(scope);
    static const char suffix[] = "/.default";
    if (n >= sizeof suffix - 1 && strcmp(scope + n - (sizeof suffix - 1), suffix) == 0)
        n -= sizeof suffix - 1;
    char *resource = malloc(n + 1);
    if (!resource) {
        fetch_fail(f, "OutOfMemory", 0, "out of memory");
        return;
    }
    memcpy(resource, scope, n);
    resource[n] = '\0';
    int app_service = c->app_service_header != NULL;
    struct sbuf url = {0}, hdr = {0};
    sb_add(&url, c->imds_endpoint);
    sb_add(&url, strchr(c->imds_endpoint, '?') ? "&" : "?");
    sb_add(&url, app_service ? "api-version=2019-08-01" : "api-version=2018-02-01");
    sb_add(&url, "&resource=");
    sb_add_escaped(&url, resource);
    free(resource);
    if (c->identity_client_id) {
        sb_add(&url, "&client_id=");
        sb_add_escaped(&url, c->identity_client_id);
    } else if (c->identity_object_id) {
        sb_add(&url, app_service ? "&principal_id=" : "&object_id=");
        sb_add_escaped(&url, c->identity_object_id);
    } else if (c->identity_resource_id) {
        sb_add(&url, app_service ? "&mi_res_id=" : "&msi_res_id=");
        sb_add_escaped(&url, c->identity_resource_id);
    }
    if (app_service) {
        sb_add(&hdr, "X-IDENTITY-HEADER: ");
        sb_add(&hdr, c->app_service_header);
    } else {
        sb_add(&hdr, "Metadata: true");
    }
    if (url.oom || hdr.oom) {
        sb_free(&url);
        sb_free(&hdr);
        fetch_fail(f, "OutOfMemory", 0, "out of memory");
        return;
    }
    const char *headers[] = {hdr.p, "Accept: application/json", NULL};
    submit(f, "GET", url.p, headers, NULL);
    sb_free(&url);
    sb_free(&hdr);
}

static void on_chained_assertion(void *ud, const char *token, const struct cmk_error *err)
{
    struct fetch *f = ud;
    if (!token) {
        struct cmk_error e = *err;
        char msg[600];
        snprintf(msg, sizeof msg, "could not get the managed identity token for the federated "
                                  "exchange: %s", err->message ? err->message : "unknown error");
        e.message = msg;
        fetch_finish(f, NULL, 0, &e);
        return;
    }
    post_client_credentials(f, token);
}

static void fetch_start(struct fetch *f)
{
    auth_credential *c = f->c;
    switch (c->kind) {
    case KIND_SECRET:
        post_client_credentials(f, NULL);
        return;
    case KIND_CERT: {
        char *jwt = certificate_assertion(f);
        if (!jwt) {
            char why[256] = "";
            crypto_drain_errors(why, sizeof why);
            fetch_fail(f, "AssertionSigningFailed", 0, "could not sign the client assertion%s%s",
                       why[0] ? ": " : "", why);
            return;
        }
        post_client_credentials(f, jwt);
        free_secret(&jwt);
        return;
    }
    case KIND_WORKLOAD:
        fetch_workload(f);
        return;
    case KIND_MI:
        fetch_managed_identity(f);
        return;
    case KIND_CHAINED: {
        struct sbuf scope = {0};
        sb_add(&scope, c->exchange_audience);
        sb_add(&scope, "/.default");
        if (scope.oom) {
            sb_free(&scope);
            fetch_fail(f, "OutOfMemory", 0, "out of memory");
            return;
        }
        auth_get_token(c->source, f->s, scope.p, NULL, on_chained_assertion, f);
        sb_free(&scope);
        return;
    }
    }
}

void auth_get_token(auth_credential *c, http_session *s, const char *scope, const char *tenant,
                    auth_token_cb cb, void *ud)
{
    struct cmk_error e = {.code = "InvalidRequest"};
    if (!c || !s || is_empty(scope)) {
        e.message = !c ? "no credential" : !s ? "no HTTP session" : "a token needs a scope";
        cb(ud, NULL, &e);
        return;
    }
    if (!uses_tenant(c))
        tenant = "";
    else if (is_empty(tenant))
        tenant = c->tenant;
    else {
        const char *why = tenant_problem(tenant);
        if (why) {
            char msg[300];
            snprintf(msg, sizeof msg, "tenant %s", why);
            e.code = "InvalidTenant";
            e.message = msg;
            cb(ud, NULL, &e);
            return;
        }
    }
    struct cache_entry *entry = entry_get(c, tenant, scope);
    if (!entry) {
        e.code = "OutOfMemory";
        e.message = "out of memory";
        cb(ud, NULL, &e);
        return;
    }
    if (entry_fresh(entry, http_now_ms(s))) {
        cb(ud, entry->token, NULL);
        return;
    }
    if (entry->nwaiters == entry->cap) {
        size_t cap = entry->cap ? entry->cap * 2 : 4;
        struct waiter *w = realloc(entry->waiters, cap * sizeof *w);
        if (!w) {
            e.code = "OutOfMemory";
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
    free_secret(&entry->token);
    struct fetch *f = calloc(1, sizeof *f);
    if (!f) {
        entry->nwaiters--;
        e.code = "OutOfMemory";
        e.message = "out of memory";
        cb(ud, NULL, &e);
        return;
    }
    entry->pending = 1;
    auth_credential_ref(c);
    f->c = c;
    f->e = entry;
    f->s = s;
    fetch_start(f);
}

/* ---- Lua ---------------------------------------------------------------------------- */

auth_credential *auth_test_credential(lua_State *L, int idx)
{
    struct cred_ud *u = luaL_testudata(L, idx, CRED_MT);
    return u ? u->c : NULL;
}

auth_credential *auth_check_credential(lua_State *L, int idx)
{
    struct cred_ud *u = luaL_checkudata(L, idx, CRED_MT);
    if (!u->c)
        luaL_argerror(L, idx, "credential is closed");
    return u->c;
}

/* [-0, +0, -] __gc / __close: release the callback and our reference. */
static int cred_gc(lua_State *L)
{
    struct cred_ud *u = luaL_checkudata(L, 1, CRED_MT);
    auth_credential *c = u->c;
    if (!c)
        return 0;
    u->c = NULL;
    if (c->cb_thread) {
        luaL_unref(L, LUA_REGISTRYINDEX, c->cb_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, c->thread_ref);
        c->cb_thread = NULL;
        c->cb_ref = c->thread_ref = LUA_NOREF;
    }
    auth_credential_unref(c);
    return 0;
}

/* [-0, +1, m] "cmkflow.credential(kind, client_id)" */
static int cred_tostring(lua_State *L)
{
    struct cred_ud *u = luaL_checkudata(L, 1, CRED_MT);
    if (!u->c) {
        lua_pushliteral(L, "cmkflow.credential(closed)");
        return 1;
    }
    const char *id = u->c->kind == KIND_MI ? u->c->identity_client_id : u->c->client_id;
    lua_pushfstring(L, "cmkflow.credential(%s, %s)", kind_names[u->c->kind],
                    id ? id : "system-assigned");
    return 1;
}

static void set_field(lua_State *L, const char *k, const char *v)
{
    if (v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, k);
    }
}

/* [-0, +1, m] cred:describe() -> {kind, tenant, client_id, authority, ...}; never a secret */
static int cred_describe(lua_State *L)
{
    auth_credential *c = auth_check_credential(L, 1);
    lua_createtable(L, 0, 8);
    set_field(L, "kind", kind_names[c->kind]);
    set_field(L, "tenant", c->tenant);
    set_field(L, "client_id", c->kind == KIND_MI ? c->identity_client_id : c->client_id);
    set_field(L, "authority", c->authority);
    if (c->from_environment)
        set_field(L, "resolved_from", "environment");
    if (c->kind == KIND_MI) {
        set_field(L, "identity_object_id", c->identity_object_id);
        set_field(L, "identity_resource_id", c->identity_resource_id);
        set_field(L, "endpoint", c->app_service_header ? "app_service" : "imds");
    }
    if (c->kind == KIND_CHAINED) {
        set_field(L, "exchange_audience", c->exchange_audience);
        set_field(L, "source_kind", kind_names[c->source->kind]);
    }
    if (c->kind == KIND_CERT) {
        set_field(L, "x5t#S256", c->x5t_s256); /* a public thumbprint */
        lua_pushboolean(L, c->send_x5c);
        lua_setfield(L, -2, "send_x5c");
    }
    return 1;
}

/* [-0, +1, m] cred:stats() -> {token_fetches = n} */
static int cred_stats(lua_State *L)
{
    auth_credential *c = auth_check_credential(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, c->fetches);
    lua_setfield(L, -2, "token_fetches");
    int n = 0;
    for (struct cache_entry *e = c->cache; e; e = e->next)
        n += e->token != NULL;
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "cached_tokens");
    return 1;
}

/* [-0, +1, e] cred:token_status(scope [, tenant]) -> {cached = bool, expires_on = epoch?} */
static int cred_token_status(lua_State *L)
{
    auth_credential *c = auth_check_credential(L, 1);
    const char *scope = luaL_checkstring(L, 2);
    const char *tenant = luaL_optstring(L, 3, NULL);
    if (!uses_tenant(c))
        tenant = "";
    else if (is_empty(tenant))
        tenant = c->tenant;
    int64_t now = http_now_ms(http_session_get(L));
    lua_createtable(L, 0, 2);
    for (struct cache_entry *e = c->cache; e; e = e->next) {
        if (strcmp(e->tenant, tenant) == 0 && strcmp(e->scope, scope) == 0 && e->token) {
            lua_pushboolean(L, entry_fresh(e, now));
            lua_setfield(L, -2, "cached");
            lua_pushinteger(L, (lua_Integer)e->expires_on);
            lua_setfield(L, -2, "expires_on");
            return 1;
        }
    }
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "cached");
    return 1;
}

/* [-0, +0, e] cred:clear_cache(): wipe every cached token (in-flight fetches still complete) */
static int cred_clear_cache(lua_State *L)
{
    auth_credential *c = auth_check_credential(L, 1);
    for (struct cache_entry *e = c->cache; e; e = e->next)
        free_secret(&e->token);
    return 0;
}

static void push_metatable(lua_State *L);

/* [-0, +1, e] Build a credential; callback_idx (0 = none) is an assertion function. */
static void push_credential(lua_State *L, const struct auth_spec *spec, int callback_idx, int source_idx)
{
    if (callback_idx)
        callback_idx = lua_absindex(L, callback_idx);
    if (source_idx)
        source_idx = lua_absindex(L, source_idx);
    struct cred_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->c = NULL;
    push_metatable(L);
    lua_setmetatable(L, -2);
    auth_credential *c = calloc(1, sizeof *c);
    if (!c)
        luaL_error(L, "credential: out of memory");
    c->refs = 1;
    c->cb_ref = c->thread_ref = LUA_NOREF;
    u->c = c; /* from here __gc owns it, so a raise below leaks nothing */
    char err[512];
    if (build(c, spec, callback_idx != 0, err, sizeof err) != 0)
        luaL_error(L, "%s", err);
    if (source_idx) {
        /* keep the source's userdata (and its assertion callback) alive with us */
        lua_pushvalue(L, source_idx);
        lua_setiuservalue(L, -2, 1);
    }
    if (callback_idx && c->kind == KIND_WORKLOAD) {
        c->cb_thread = lua_newthread(L);
        c->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_pushvalue(L, callback_idx);
        c->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
}

void auth_push_credential(lua_State *L, const struct auth_spec *spec)
{
    push_credential(L, spec, 0, 0);
}

static const char *const spec_fields[] = {
    "kind", "tenant", "client_id", "authority", "client_secret", "certificate_path",
    "certificate_password", "send_x5c", "token_file", "assertion", "identity_client_id",
    "identity_object_id", "identity_resource_id", "imds_endpoint", "source", "exchange_audience",
    "ca_file", "connect_to", NULL};

/* A string field of the spec table at index 1, or NULL; raises on another type. */
static const char *opt_field(lua_State *L, const char *name)
{
    int t = lua_getfield(L, 1, name);
    const char *v = NULL;
    if (t == LUA_TSTRING)
        v = lua_tostring(L, -1); /* kept alive by the spec table */
    else if (t != LUA_TNIL)
        luaL_error(L, "credential: field '%s' must be a string", name);
    lua_pop(L, 1);
    return v;
}

/* [-1, +1, e] auth.credential(spec) -> cred; raises on an invalid spec */
static int auth_credential_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        int known = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (const char *const *f = spec_fields; *f && !known; f++)
                known = strcmp(*f, lua_tostring(L, -1)) == 0;
        if (!known)
            return luaL_error(L, "credential: unknown field '%s'",
                              lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
    }
    struct auth_spec s = {0};
    s.kind = opt_field(L, "kind");
    s.tenant = opt_field(L, "tenant");
    s.client_id = opt_field(L, "client_id");
    s.authority = opt_field(L, "authority");
    s.client_secret = opt_field(L, "client_secret");
    s.certificate_path = opt_field(L, "certificate_path");
    s.certificate_password = opt_field(L, "certificate_password");
    s.token_file = opt_field(L, "token_file");
    s.identity_client_id = opt_field(L, "identity_client_id");
    s.identity_object_id = opt_field(L, "identity_object_id");
    s.identity_resource_id = opt_field(L, "identity_resource_id");
    s.imds_endpoint = opt_field(L, "imds_endpoint");
    s.exchange_audience = opt_field(L, "exchange_audience");
    s.ca_file = opt_field(L, "ca_file");
    int t = lua_getfield(L, 1, "send_x5c"); /* index 2 */
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
        return luaL_error(L, "credential: field 'send_x5c' must be a boolean");
    s.send_x5c = lua_toboolean(L, 2);
    t = lua_getfield(L, 1, "assertion"); /* index 3 */
    if (t != LUA_TNIL && t != LUA_TFUNCTION)
        return luaL_error(L, "credential: field 'assertion' must be a function returning a JWT");
    int callback_idx = t == LUA_TFUNCTION ? 3 : 0;
    if (callback_idx && (!s.kind || strcmp(s.kind, "workload_identity") != 0))
        return luaL_error(L, "credential: field 'assertion' is only for kind 'workload_identity'");
    lua_getfield(L, 1, "source"); /* index 4 */
    int source_idx = 0;
    if (!lua_isnil(L, 4)) {
        s.source = auth_test_credential(L, 4);
        if (!s.source)
            return luaL_error(L, "credential: field 'source' must be a credential (or closed)");
        if (!s.kind || strcmp(s.kind, "chained") != 0)
            return luaL_error(L, "credential: field 'source' is only for kind 'chained'");
        source_idx = 4;
    }
    t = lua_getfield(L, 1, "connect_to"); /* index 5 */
    if (t != LUA_TNIL) {
        if (t != LUA_TTABLE)
            return luaL_error(L, "credential: field 'connect_to' must be an array of strings");
        lua_Integer n = luaL_len(L, 5);
        if (n < 0 || n > 64)
            return luaL_error(L, "credential: field 'connect_to' has too many entries");
        /* GC-managed so a raise leaks nothing */
        const char **list = lua_newuserdatauv(L, (size_t)(n + 1) * sizeof *list, 0); /* index 6 */
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(L, 5, i) != LUA_TSTRING)
                return luaL_error(L, "credential: field 'connect_to' must be an array of strings");
            list[i - 1] = lua_tostring(L, -1); /* kept alive by the table */
            lua_pop(L, 1);
        }
        list[n] = NULL;
        s.connect_to = list;
    }
    push_credential(L, &s, callback_idx, source_idx);
    return 1;
}

/* [-0, +1, m] The credential metatable, created on first use: host.c may build credentials
 * before anything has required cmkflow.core.auth. */
static void push_metatable(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"describe", cred_describe},       {"stats", cred_stats},
        {"token_status", cred_token_status}, {"clear_cache", cred_clear_cache},
        {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", cred_gc}, {"__close", cred_gc}, {"__tostring", cred_tostring}, {NULL, NULL}};
    if (luaL_newmetatable(L, CRED_MT)) {
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
}

int luaopen_cmkflow_core_auth(lua_State *L)
{
    static const luaL_Reg fns[] = {{"credential", auth_credential_new}, {NULL, NULL}};
    push_metatable(L);
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
