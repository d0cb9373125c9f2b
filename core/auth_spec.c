/* auth_spec.c: validating a credential spec and building the credential from it (auth.h).
 * Errors name the field (and, for environment credentials, the variable), never its value. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>
#include "auth_int.h"
#include "crypto.h"

#define DEFAULT_AUTHORITY "https://login.microsoftonline.com"
#define DEFAULT_IMDS "http://169.254.169.254/metadata/identity/oauth2/token"
#define IMDS_PATH "/metadata/identity/oauth2/token"
#define DEFAULT_EXCHANGE_AUDIENCE "api://AzureADTokenExchange"
#define MAX_FILE_BYTES (1024 * 1024)

const char *const auth_kind_names[] = {"client_secret", "client_certificate", "workload_identity",
                                       "managed_identity", "chained"};

int auth_is_empty(const char *s)
{
    return !s || !*s;
}

/* Read a whole file (at most MAX_FILE_BYTES). Returns malloc'd bytes (NUL-terminated; the
 * caller cleanses and frees) or NULL with a reason in err. */
unsigned char *auth_read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        buf_add(&b, chunk, n);
        if (b.len > MAX_FILE_BYTES)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    OPENSSL_cleanse(chunk, sizeof chunk);
    if (bad || b.oom || b.len > MAX_FILE_BYTES) {
        snprintf(err, errlen, "cannot read '%s': %s", path,
                 bad ? "read error" : b.oom ? "out of memory" : "file larger than 1 MiB");
        buf_wipe(&b);
        return NULL;
    }
    *len = b.len;
    unsigned char *out = (unsigned char *)buf_take(&b); /* "" for an empty file */
    if (!out)
        snprintf(err, errlen, "cannot read '%s': out of memory", path);
    return out;
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
const char *auth_tenant_problem(const char *t)
{
    if (auth_is_empty(t))
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
    *dst = buf_dup(v);
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
    unsigned char *data = auth_read_file(path, &len, why, sizeof why);
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
    const char *why = auth_tenant_problem(s->tenant);
    if (why)
        FAIL("credential: field %s %s", field(c, "tenant"), why);
    if (auth_is_empty(s->client_id))
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
    int n = !auth_is_empty(s->identity_client_id) + !auth_is_empty(s->identity_object_id) +
            !auth_is_empty(s->identity_resource_id);
    if (n > 1)
        FAIL("credential: give at most one of the fields 'identity_client_id', 'identity_object_id' "
             "and 'identity_resource_id'");
    if (!auth_is_empty(s->identity_client_id) && !crypto_is_guid(s->identity_client_id))
        FAIL("credential: field 'identity_client_id' must be a GUID");
    if (!auth_is_empty(s->identity_object_id) && !crypto_is_guid(s->identity_object_id))
        FAIL("credential: field 'identity_object_id' must be a GUID");
    if (!auth_is_empty(s->identity_resource_id) &&
        strncasecmp(s->identity_resource_id, "/subscriptions/", 15) != 0)
        FAIL("credential: field 'identity_resource_id' must be an ARM resource ID "
             "(/subscriptions/.../userAssignedIdentities/...)");
    if (set_copy(&c->identity_client_id, auth_is_empty(s->identity_client_id) ? NULL : s->identity_client_id, err, errlen) ||
        set_copy(&c->identity_object_id, auth_is_empty(s->identity_object_id) ? NULL : s->identity_object_id, err, errlen) ||
        set_copy(&c->identity_resource_id, auth_is_empty(s->identity_resource_id) ? NULL : s->identity_resource_id, err, errlen))
        return -1;
    const char *app_endpoint = getenv("IDENTITY_ENDPOINT"), *app_header = getenv("IDENTITY_HEADER");
    const char *pod_host = getenv("AZURE_POD_IDENTITY_AUTHORITY_HOST");
    if (!auth_is_empty(s->imds_endpoint)) {
        if (!is_url(s->imds_endpoint, 0, 1))
            FAIL("credential: field 'imds_endpoint' must be an http:// or https:// URL");
        return set_copy(&c->imds_endpoint, s->imds_endpoint, err, errlen);
    }
    if (!auth_is_empty(app_endpoint) && !auth_is_empty(app_header)) {
        if (!is_url(app_endpoint, 0, 1))
            FAIL("credential: environment variable IDENTITY_ENDPOINT must be an http(s) URL");
        return set_copy(&c->imds_endpoint, app_endpoint, err, errlen) ||
               set_copy(&c->app_service_header, app_header, err, errlen);
    }
    if (!auth_is_empty(pod_host)) {
        if (!is_url(pod_host, 0, 0))
            FAIL("credential: environment variable AZURE_POD_IDENTITY_AUTHORITY_HOST must be an "
                 "http(s) URL");
        struct buf b = {0};
        buf_adds(&b, pod_host);
        while (b.len > 0 && b.data[b.len - 1] == '/')
            b.data[--b.len] = '\0';
        buf_adds(&b, IMDS_PATH);
        c->imds_endpoint = buf_take(&b); /* not a secret: hand the buffer over */
        if (!c->imds_endpoint)
            FAIL("credential: out of memory");
        return 0;
    }
    return set_copy(&c->imds_endpoint, DEFAULT_IMDS, err, errlen);
}

/* Resolve EnvironmentCredential into a spec and build it. */
static int build_environment(auth_credential *c, const struct auth_spec *spec, char *err, size_t errlen)
{
    const char *tenant = getenv("AZURE_TENANT_ID"), *client_id = getenv("AZURE_CLIENT_ID");
    const char *secret = getenv("AZURE_CLIENT_SECRET"), *cert = getenv("AZURE_CLIENT_CERTIFICATE_PATH");
    const char *token_file = getenv("AZURE_FEDERATED_TOKEN_FILE");
    int has_method = !auth_is_empty(secret) || !auth_is_empty(cert) || !auth_is_empty(token_file);
    if (auth_is_empty(tenant) || auth_is_empty(client_id) || !has_method) {
        char missing[256] = "";
        size_t off = 0;
        const char *parts[3];
        int n = 0;
        if (auth_is_empty(tenant))
            parts[n++] = "AZURE_TENANT_ID";
        if (auth_is_empty(client_id))
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
    if (auth_is_empty(s.authority))
        s.authority = spec->authority;
    if (!auth_is_empty(secret)) {
        s.kind = "client_secret";
        s.client_secret = secret;
    } else if (!auth_is_empty(cert)) {
        s.kind = "client_certificate";
        s.certificate_path = cert;
        s.certificate_password = getenv("AZURE_CLIENT_CERTIFICATE_PASSWORD");
        if (auth_is_empty(s.certificate_password))
            s.certificate_password = NULL;
        const char *chain = getenv("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN");
        s.send_x5c = chain && (strcmp(chain, "1") == 0 || strcasecmp(chain, "true") == 0);
    } else {
        s.kind = "workload_identity";
        s.token_file = token_file;
    }
    c->from_environment = 1;
    return auth_build(c, &s, 0, err, errlen);
}

int auth_build(auth_credential *c, const struct auth_spec *s, int has_callback, char *err,
               size_t errlen)
{
    if (auth_is_empty(s->kind))
        FAIL("credential: field 'kind' is required (client_secret, client_certificate, "
             "workload_identity, managed_identity, chained or environment)");
    if (strcmp(s->kind, "environment") == 0)
        return build_environment(c, s, err, errlen);
    int kind = -1;
    for (int i = 0; i < (int)(sizeof auth_kind_names / sizeof auth_kind_names[0]); i++)
        if (strcmp(s->kind, auth_kind_names[i]) == 0)
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
        if (auth_is_empty(s->client_secret))
            FAIL("credential: field %s is required for client_secret", field(c, "client_secret"));
        return set_copy(&c->client_secret, s->client_secret, err, errlen);
    case KIND_CERT:
        if (check_app_identity(c, s, err, errlen))
            return -1;
        if (auth_is_empty(s->certificate_path))
            FAIL("credential: field 'certificate_path' is required for client_certificate");
        c->send_x5c = s->send_x5c;
        return load_certificate(c, s->certificate_path, s->certificate_password, err, errlen);
    case KIND_WORKLOAD: {
        struct auth_spec w = *s;
        if (auth_is_empty(w.tenant))
            w.tenant = getenv("AZURE_TENANT_ID");
        if (auth_is_empty(w.client_id))
            w.client_id = getenv("AZURE_CLIENT_ID");
        if (auth_is_empty(w.authority) && !auth_is_empty(getenv("AZURE_AUTHORITY_HOST")))
            w.authority = getenv("AZURE_AUTHORITY_HOST");
        if (check_app_identity(c, &w, err, errlen))
            return -1;
        if (has_callback)
            return 0;
        const char *file = !auth_is_empty(s->token_file) ? s->token_file : getenv("AZURE_FEDERATED_TOKEN_FILE");
        if (auth_is_empty(file))
            FAIL("credential: field 'token_file' is required for workload_identity (or set "
                 "AZURE_FEDERATED_TOKEN_FILE, or give assertion = function() ... end)");
        return set_copy(&c->token_file, file, err, errlen);
    }
    case KIND_MI:
        if (!auth_is_empty(s->client_id) && auth_is_empty(s->identity_client_id)) {
            /* client_id is accepted as the identity's client ID */
            struct auth_spec m = *s;
            m.identity_client_id = s->client_id;
            return build_managed_identity(c, &m, err, errlen);
        }
        return build_managed_identity(c, s, err, errlen);
    case KIND_CHAINED: {
        if (check_app_identity(c, s, err, errlen))
            return -1;
        const char *aud = auth_is_empty(s->exchange_audience) ? DEFAULT_EXCHANGE_AUDIENCE : s->exchange_audience;
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
        return auth_build(mi, &m, 0, err, errlen);
    }
    }
    FAIL("credential: unknown kind");
}

#undef FAIL
