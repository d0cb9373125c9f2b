/*
 * The credential module: credential providers and the token cache. Secrets live only here.
 *   auth_spec.c   validating a spec and building the credential
 *   auth_cache.c  reference counts, the token cache, auth_get_token
 *   auth_fetch.c  token requests and answers; client secret, certificate, workload identity, chained
 *   auth_imds.c   managed identity (IMDS, App Service)
 *   lauth.c       the Lua bindings
 *
 * Lua view (cmkflow.core.auth):
 *   cred = auth.credential{ kind = "client_secret" | "client_certificate" | "workload_identity"
 *                              | "managed_identity" | "chained" | "environment",
 *                           tenant, client_id, authority = "https://login.microsoftonline.com",
 *                           client_secret?, certificate_path?, certificate_password?, send_x5c?,
 *                           token_file?, assertion = function() return jwt end?,
 *                           identity_client_id?, identity_object_id?, identity_resource_id?, imds_endpoint?,
 *                           source = <managed identity cred>? (chained), exchange_audience?,
 *                           ca_file?, connect_to? }
 *   cred:describe() -> {kind, tenant, client_id, authority, resolved_from?}  (never a secret)
 *   cred:token_status(scope [, tenant]) -> {cached = bool, expires_on = epoch}  (never the token)
 *   cred:stats() -> {token_fetches = n, cached_tokens = n}  (token requests this credential sent)
 *   cred:clear_cache()                       (drops and wipes every cached token)
 *   tostring(cred) -> "cmkflow.credential(kind, client_id)"; __gc / __close release it.
 * Invalid specs (missing fields, malformed GUIDs, unreadable certificate) raise with a message
 * naming the field.
 *
 * There is deliberately no Lua function returning a token: tokens reach the wire through
 * the HTTP session (req.credential + req.scope), whose transfers call auth_get_token through
 * auth_token_source.
 * Token failures are error tables {code, message, status (nil without an HTTP answer),
 * request_id, retryable, tenant (the tenant that must act), kind ("network", "tls", "config" for
 * local failures; nil for Entra ID's own answers)}.
 *
 * Kinds:
 *   client_secret       tenant, client_id, client_secret
 *   client_certificate  tenant, client_id, certificate_path (PEM with key, or PKCS#12 with
 *                       certificate_password), send_x5c; a fresh RS256 assertion per token request
 *   workload_identity   tenant (default $AZURE_TENANT_ID), client_id (default $AZURE_CLIENT_ID),
 *                       token_file (default $AZURE_FEDERATED_TOKEN_FILE, read at every request)
 *                       or assertion = function() return jwt end (Lua constructor only; called
 *                       from auth_get_token, i.e. from session:submit or session:run, never
 *                       from another OS thread; errors in it become token errors)
 *   managed_identity    identity_client_id | identity_object_id | identity_resource_id,
 *                       imds_endpoint (full token URL; default $AZURE_POD_IDENTITY_AUTHORITY_HOST
 *                       + /metadata/identity/oauth2/token, else http://169.254.169.254/...);
 *                       App Service when $IDENTITY_ENDPOINT and $IDENTITY_HEADER are set and no
 *                       imds_endpoint is given
 *   chained             tenant, client_id (the multi-tenant app), source (a credential, normally
 *                       a managed identity; when absent one is built from the identity_* and
 *                       imds_endpoint fields), exchange_audience (default api://AzureADTokenExchange):
 *                       the source's token for {exchange_audience}/.default is the client_assertion
 *   environment         resolved at construction from AZURE_TENANT_ID, AZURE_CLIENT_ID and one of
 *                       AZURE_CLIENT_SECRET | AZURE_CLIENT_CERTIFICATE_PATH (+ _PASSWORD,
 *                       AZURE_CLIENT_SEND_CERTIFICATE_CHAIN) | AZURE_FEDERATED_TOKEN_FILE;
 *                       AZURE_AUTHORITY_HOST overrides the authority
 */
#ifndef CMKFLOW_AUTH_H
#define CMKFLOW_AUTH_H
#include "cmk.h"
#include "http.h"

typedef struct auth_credential auth_credential;

/* A credential described in C strings (all copied; NULL = unset). kind as in the Lua view. */
struct auth_spec {
    const char *kind, *tenant, *client_id, *authority;
    const char *client_secret, *certificate_path, *certificate_password;
    int send_x5c;
    const char *token_file;
    const char *identity_client_id, *identity_object_id, *identity_resource_id, *imds_endpoint;
    const char *exchange_audience;
    const char *ca_file;
    const char *const *connect_to;  /* NULL-terminated "host:port:addr:port" list, or NULL */
    auth_credential *source;        /* chained: the assertion's source (a new reference is taken) */
};

/* [-0, +1, e] Push a new "cmkflow.credential" built from spec. Raises on an invalid spec with a
 * message naming the field (and never its value). */
void auth_push_credential(lua_State *L, const struct auth_spec *spec);

/* [-0, +0, v] The credential userdata at idx ("cmkflow.credential"); raises when it is not one
 * or was closed. Borrowed: take auth_credential_ref to keep it past the userdata. */
auth_credential *auth_check_credential(lua_State *L, int idx);
/* [-0, +0, -] Same, but NULL instead of raising. */
auth_credential *auth_test_credential(lua_State *L, int idx);

/* Deliver a bearer token for scope (tenant NULL = the credential's own). The callback runs
 * once: immediately when cached (and fresh for 5 more minutes), otherwise after one fetch
 * shared by every waiter for the same (authority, tenant, client, scope). token is valid only
 * during the call; err is set when token is NULL. */
typedef http_token_cb auth_token_cb;
void auth_get_token(auth_credential *c, http_session *s, const char *scope, const char *tenant,
                    auth_token_cb cb, void *ud);

/* The token source HTTP transfers use: owner is an auth_credential (a reference). */
extern const struct http_token_source auth_token_source;

/* Token requests this credential has sent (every kind; a chained credential counts its own
 * exchange, its source counts the managed identity request). */
long auth_token_fetches(const auth_credential *c);

/* Reference counting so that in-flight transfers keep a credential alive past its __gc. */
void auth_credential_ref(auth_credential *c);
/* The credential's Entra authority ("https://login.microsoftonline.com"); owned by c. */
const char *auth_credential_authority(const auth_credential *c);
void auth_credential_unref(auth_credential *c);

#endif
