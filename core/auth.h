/*
 * auth.c: credential providers and the token cache. Secrets live only here.
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
 *   cred:describe() -> {kind, tenant, client_id, authority}  (never a secret)
 *   cred:token_status(scope [, tenant]) -> {cached = bool, expires_on = epoch}  (never the token)
 * Invalid specs (missing fields, malformed GUIDs, unreadable certificate) raise with a message
 * naming the field.
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
};

/* [-0, +1, e] Push a new "cmkflow.credential" built from spec. Raises on an invalid spec with a
 * message naming the field (and never its value). */
void auth_push_credential(lua_State *L, const struct auth_spec *spec);

/* [-0, +0, v] The credential userdata at idx ("cmkflow.credential"). */
auth_credential *auth_check_credential(lua_State *L, int idx);
auth_credential *auth_test_credential(lua_State *L, int idx);

/* Deliver a bearer token for scope (tenant NULL = the credential's own). The callback runs
 * once: immediately when cached (and fresh for 5 more minutes), otherwise after one fetch
 * shared by every waiter for the same (authority, tenant, client, scope). token is valid only
 * during the call; err is set when token is NULL. */
typedef void (*auth_token_cb)(void *ud, const char *token, const struct cmk_error *err);
void auth_get_token(auth_credential *c, http_session *s, const char *scope, const char *tenant,
                    auth_token_cb cb, void *ud);

/* Reference counting so that in-flight transfers keep a credential alive past its __gc. */
void auth_credential_ref(auth_credential *c);
void auth_credential_unref(auth_credential *c);

#endif
