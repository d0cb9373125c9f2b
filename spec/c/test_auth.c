/* Unit tests for the credential module (core/auth_*.c) paths that need no network: spec
 * validation, immediate errors from auth_get_token (with their kind and tenant), reference
 * counting past the userdata's __gc. */
#include <stdlib.h>
#include <lauxlib.h>
#include <lualib.h>
#include "auth.h"
#include "check.h"

#define APP "0a1b2c3d-0000-4000-8000-000000000001"
#define TENANT "11111111-2222-4333-8444-555555555555"

/* [-1, +1, e] push a credential from the struct auth_spec * light userdata at 1 */
static int push(lua_State *L)
{
    auth_push_credential(L, lua_touserdata(L, 1));
    return 1;
}

/* Build spec in L: 0 and the credential on the stack, or -1 and the message copied to msg. */
static int build(lua_State *L, const struct auth_spec *spec, char *msg, size_t len)
{
    lua_pushcfunction(L, push);
    lua_pushlightuserdata(L, (void *)spec);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        snprintf(msg, len, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    msg[0] = '\0';
    return 0;
}

struct got {
    int calls;
    char code[64], kind[16], tenant[64];
    int had_token;
};

static void on_token(void *ud, const char *token, const struct cmk_error *err)
{
    struct got *g = ud;
    g->calls++;
    g->had_token = token != NULL;
    snprintf(g->code, sizeof g->code, "%s", err && err->code ? err->code : "");
    snprintf(g->kind, sizeof g->kind, "%s", err && err->kind ? err->kind : "");
    snprintf(g->tenant, sizeof g->tenant, "%s", err && err->tenant ? err->tenant : "");
}

static void test_validation(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    char msg[512];
    struct auth_spec s = {.kind = "client_secret", .tenant = TENANT, .client_id = "not-a-guid",
                          .client_secret = "TopSecret-42"};
    CHECK_INT(build(L, &s, msg, sizeof msg), -1);
    CHECK(strstr(msg, "credential: field 'client_id' must be a GUID") != NULL);
    CHECK(strstr(msg, "TopSecret-42") == NULL);
    s.client_id = APP;
    s.tenant = "consumers";
    CHECK_INT(build(L, &s, msg, sizeof msg), -1);
    CHECK(strstr(msg, "field 'tenant' must name one tenant") != NULL);
    s.tenant = "contoso.onmicrosoft.com";
    s.authority = "https://login.example/";
    CHECK_INT(build(L, &s, msg, sizeof msg), 0);
    CHECK(auth_test_credential(L, -1) != NULL);
    lua_pop(L, 1);
    struct auth_spec cert = {.kind = "client_certificate", .tenant = TENANT, .client_id = APP,
                             .certificate_path = "/nonexistent/cert.pem"};
    CHECK_INT(build(L, &cert, msg, sizeof msg), -1);
    CHECK(strstr(msg, "field 'certificate_path': cannot open '/nonexistent/cert.pem'") != NULL);
    struct auth_spec mi = {.kind = "managed_identity", .identity_client_id = APP,
                           .identity_resource_id = "/subscriptions/x"};
    CHECK_INT(build(L, &mi, msg, sizeof msg), -1);
    CHECK(strstr(msg, "at most one of") != NULL);
    struct auth_spec none = {0};
    CHECK_INT(build(L, &none, msg, sizeof msg), -1);
    CHECK(strstr(msg, "field 'kind' is required") != NULL);
    lua_close(L);
}

static void test_immediate_errors_and_refs(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    char msg[512];
    struct auth_spec s = {.kind = "workload_identity", .tenant = TENANT, .client_id = APP,
                          .token_file = "/nonexistent/federated-token"};
    CHECK_INT(build(L, &s, msg, sizeof msg), 0);
    auth_credential *c = auth_test_credential(L, -1);
    CHECK(c != NULL);
    http_session *sess = http_session_get(L);
    struct got g = {0};
    auth_get_token(c, sess, "", NULL, on_token, &g);
    CHECK_INT(g.calls, 1);
    CHECK_STR(g.code, "InvalidRequest");
    memset(&g, 0, sizeof g);
    auth_get_token(c, sess, "https://vault.azure.net/.default", "common", on_token, &g);
    CHECK_INT(g.calls, 1);
    CHECK_STR(g.code, "InvalidTenant");
    CHECK_STR(g.kind, "config");
    CHECK_STR(g.tenant, "common");
    memset(&g, 0, sizeof g);
    /* the token file is read when the token is needed: the failure arrives synchronously and
     * no request is sent */
    auth_get_token(c, sess, "https://vault.azure.net/.default", NULL, on_token, &g);
    CHECK_INT(g.calls, 1);
    CHECK_STR(g.code, "FederatedTokenUnavailable");
    CHECK_STR(g.kind, "config");   /* a missing file: fix the configuration, do not retry */
    CHECK_STR(g.tenant, TENANT);   /* the credential's tenant */
    CHECK(!g.had_token);
    CHECK_INT(auth_token_fetches(c), 0);
    /* a reference keeps the credential alive after the userdata is collected */
    auth_credential_ref(c);
    lua_pop(L, 1);
    lua_gc(L, LUA_GCCOLLECT);
    memset(&g, 0, sizeof g);
    auth_get_token(c, sess, "https://vault.azure.net/.default", NULL, on_token, &g);
    CHECK_INT(g.calls, 1);
    CHECK_STR(g.code, "FederatedTokenUnavailable");
    auth_credential_unref(c);
    lua_close(L);
}

int main(void)
{
    RUN(test_validation);
    RUN(test_immediate_errors_and_refs);
    DONE();
}
