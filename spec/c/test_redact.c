/* redact.c: every secret pattern is scrubbed, what identifies it stays, ordinary text is untouched. */
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "redact.h"

#define CANARY "c4n4ry-S3cr3t~value"

static char *R(const char *s) { return redact_text(s, strlen(s)); }

static void expect(const char *in, const char *want)
{
    char *out = R(in);
    CHECK_STR(out, want);
    free(out);
}

static void test_headers(void)
{
    expect("> Authorization: Bearer eyJabc\r\n> Host: x\r\n",
           "> Authorization: Bearer REDACTED\r\n> Host: x\r\n");
    expect("authorization:Basic dXNlcjpwYXNz\n", "authorization:Basic REDACTED\n");
    expect("Proxy-Authorization: Basic dXNlcjpwYXNz\r\n", "Proxy-Authorization: Basic REDACTED\r\n");
    expect("X-IDENTITY-HEADER: " CANARY "\r\nMetadata: true",
           "X-IDENTITY-HEADER: REDACTED\r\nMetadata: true");
    expect("x-identity-header : " CANARY, "x-identity-header : REDACTED");
    expect("Authorization: SharedKey acct:" CANARY "\n", "Authorization: REDACTED\n");
    /* headers that only look similar stay */
    expect("WWW-Authenticate: Bearer realm=\"x\"\n", "WWW-Authenticate: Bearer realm=\"x\"\n");
}

static void test_form_fields(void)
{
    expect("grant_type=client_credentials&client_id=abc&client_secret=" CANARY "&scope=x",
           "grant_type=client_credentials&client_id=abc&client_secret=REDACTED&scope=x");
    expect("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
           "&client_assertion=" CANARY,
           "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
           "&client_assertion=REDACTED");
    expect("assertion=" CANARY " next", "assertion=REDACTED next");
    expect("refresh_token=" CANARY "&a=1", "refresh_token=REDACTED&a=1");
    expect("user=bob&password=" CANARY, "user=bob&password=REDACTED");
    /* SAS sig= in a URL, including inside JSON */
    expect("https://acct.blob.core.windows.net/c?sv=2022-11-02&se=2030&sig=abc%2Bdef%3D&sp=r",
           "https://acct.blob.core.windows.net/c?sv=2022-11-02&se=2030&sig=REDACTED&sp=r");
    expect("{\"url\":\"https://a/b?sig=" CANARY "\"}", "{\"url\":\"https://a/b?sig=REDACTED\"}");
    /* only whole field names: "mysig=" and "no_password=" are something else */
    expect("mysig=1&no_password=2", "mysig=1&no_password=2");
}

static void test_json_members(void)
{
    expect("{\"token_type\":\"Bearer\",\"access_token\":\"" CANARY "\",\"expires_in\":3599}",
           "{\"token_type\":\"Bearer\",\"access_token\":\"REDACTED\",\"expires_in\":3599}");
    expect("{\"refresh_token\" : \"" CANARY "\"}", "{\"refresh_token\" : \"REDACTED\"}");
    expect("{\"client_secret\":\"a\\\"b" CANARY "\"}", "{\"client_secret\":\"REDACTED\"}");
    expect("{\"id_token\":\"" CANARY "\", \"client_assertion\":\"" CANARY "\"}",
           "{\"id_token\":\"REDACTED\", \"client_assertion\":\"REDACTED\"}");
    /* JSON inside a JSON string (an error body quoted in a message) */
    expect("{\"body\":\"{\\\"access_token\\\":\\\"" CANARY "\\\"}\"}",
           "{\"body\":\"{\\\"access_token\\\":\\\"REDACTED\\\"}\"}");
    /* non-string values and unrelated members stay */
    expect("{\"access_token\":null,\"token_type\":\"Bearer\"}",
           "{\"access_token\":null,\"token_type\":\"Bearer\"}");
}

static void test_bare_jwt(void)
{
    expect("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl here",
           "token REDACTED here");
    expect("(eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.)", "(REDACTED)");
    /* not a JWT: two parts, or inside a longer word */
    expect("eyJhbGciOiJSUzI1NiJ9.only", "eyJhbGciOiJSUzI1NiJ9.only");
    expect("keyJx.y.z", "keyJx.y.z");
}

static void test_text_without_secrets_is_unchanged(void)
{
    static const char *const plain[] = {
        "",
        "Created key vault kv-cmk in westeurope; tenant 72f988bf-86f1-41af-91ab-2d7cd011db47",
        "GET /subscriptions/x/resourceGroups/rg?api-version=2023-01-01 HTTP/1.1\r\nHost: management.azure.com\r\n",
        "{\"properties\":{\"keyVaultProperties\":{\"keyName\":\"cmk\"}},\"identity\":{\"type\":\"UserAssigned\"}}",
        "client_id=abc&scope=https%3A%2F%2Fvault.azure.net%2F.default&grant_type=client_credentials",
        "a=b&c=d ünïcödé",
    };
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        expect(plain[i], plain[i]);
    /* embedded NUL bytes survive with the right length */
    size_t n = 0;
    char *out = redact_text_n("a\0b", 3, &n);
    CHECK_INT(n, 3);
    CHECK(out && memcmp(out, "a\0b", 3) == 0);
    free(out);
}

static void test_canary_never_survives(void)
{
    static const char *const carriers[] = {
        "Authorization: Bearer " CANARY,
        "X-IDENTITY-HEADER:" CANARY,
        "client_secret=" CANARY,
        "&client_assertion=" CANARY "&x=1",
        "{\"access_token\": \"" CANARY "\"}",
        "{\"client_secret\":\"" CANARY "\"}",
        "?sig=" CANARY,
        "password=" CANARY "\n",
        "AUTHORIZATION: " CANARY,
    };
    for (size_t i = 0; i < sizeof carriers / sizeof carriers[0]; i++) {
        char *out = R(carriers[i]);
        CHECK(out && strstr(out, CANARY) == NULL);
        CHECK(out && strstr(out, "REDACTED") != NULL);
        /* redacting twice changes nothing */
        char *again = R(out);
        CHECK_STR(again, out);
        free(again);
        free(out);
    }
}

int main(void)
{
    RUN(test_headers);
    RUN(test_form_fields);
    RUN(test_json_members);
    RUN(test_bare_jwt);
    RUN(test_text_without_secrets_is_unchanged);
    RUN(test_canary_never_survives);
    DONE();
}
