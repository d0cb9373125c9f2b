-- cmkflow.azure.validate, cloud and errors: tables of inputs and the exact outcomes.
local validate = require "cmkflow.azure.validate"
local cloud = require "cmkflow.azure.cloud"
local errors = require "cmkflow.azure.errors"
local json = require("cmkflow.core").json

-- {check, good values, {bad value, message fragment}...}
local TABLE = {
  { "guid", { "8f1a2b3c-0d4e-4f50-9a6b-7c8d9e0f1a2b", "8F1A2B3C-0D4E-4F50-9A6B-7C8D9E0F1A2B" },
    { { "8f1a2b3c0d4e4f509a6b7c8d9e0f1a2b", "GUID '8f1a2b3c0d4e4f509a6b7c8d9e0f1a2b' is invalid: use the form" },
      { "8f1a2b3c-0d4e-4f50-9a6b-7c8d9e0f1a2g", "is invalid" },
      { nil, "GUID is missing" }, { "", "GUID is missing" } } },
  { "tenant", { "72f988bf-86f1-41af-91ab-2d7cd011db47", "contoso.onmicrosoft.com", "fabrikam.com" },
    { { "common", "name a specific tenant" }, { "organizations", "not 'organizations'" },
      { "contoso", "use the tenant's GUID or a verified domain" }, { "-bad.com", "is invalid" },
      { "a..b", "is invalid" } } },
  { "resource_group", { "rg1", "my-rg_(test).x", "R", string.rep("a", 90), "grupo-ñ" },
    { { "rg1.", "it must not end in a period" }, { string.rep("a", 91), "use 1-90 letters" },
      { "rg 1", "resource group name 'rg 1' is invalid" }, { "rg/1", "is invalid" } } },
  { "storage_account", { "abc", "acct123", string.rep("a", 24) },
    { { "My_Acct", "storage account name 'My_Acct' is invalid: use 3-24 lowercase letters and digits" },
      { "ab", "3-24 lowercase" }, { string.rep("a", 25), "3-24 lowercase" }, { "acct-1", "3-24 lowercase" },
      { "Acct1", "3-24 lowercase" } } },
  { "key_vault", { "kv1", "my-vault-01", "A1b", string.rep("a", 24) },
    { { "kv", "use 3-24 characters" }, { string.rep("a", 25), "use 3-24 characters" },
      { "1vault", "must start with a letter" }, { "vault-", "must end with a letter or digit" },
      { "my--vault", "must not contain consecutive hyphens" }, { "my_vault", "only letters, digits and hyphens" } } },
  { "user_assigned_identity", { "id1", "isv-uami_01", "1abc", string.rep("a", 128) },
    { { "ab", "use 3-128" }, { "-abc", "starting with a letter or digit" }, { "_abc", "is invalid" },
      { "a.bc", "is invalid" }, { string.rep("a", 129), "use 3-128" } } },
  { "key_name", { "k", "cmk-key-1", string.rep("k", 127) },
    { { "my_key", "key name 'my_key' is invalid: use 1-127 letters, digits and hyphens" },
      { string.rep("k", 128), "1-127" }, { "a b", "1-127" } } },
  { "location", { "westeurope", "eastus2" },
    { { "West Europe", "use the lowercase region name" }, { "EastUS", "lowercase" } } },
  { "api_version", { "2023-01-01", "2024-05-01-preview" },
    { { "2023-1-1", "use YYYY-MM-DD" }, { "2023-13-01", "use YYYY-MM-DD" }, { "7.5", "is invalid" },
      { "2023-01-01-beta", "is invalid" } } },
  { "https_url", { "https://example.com", "https://127.0.0.1:8443/x?y=1", "https://kv1.vault.azure.net/" },
    { { "http://example.com", "use an https:// URL" }, { "https://", "use an https:// URL" },
      { "https://a b.com", "must not contain spaces" }, { "https://user:pw@host.com", "user name or password" } } },
  { "key_vault_uri", { "https://kv1.vault.azure.net", "https://kv1.vault.azure.net/", "https://KV1.VAULT.AZURE.NET" },
    { { "https://kv1.vault.azure.net/keys/k", "without a path" },
      { "https://kv1.vault.azure.cn", "use https://{vault-name}.vault.azure.net" },
      { "http://kv1.vault.azure.net", "use https://{vault-name}.vault.azure.net" },
      { "https://vault.azure.net", "use https://{vault-name}.vault.azure.net" },
      { "https://my--kv.vault.azure.net", "consecutive hyphens" },
      { "https://kv1.vault.azure.net:8443", "without a port" } } },
}

describe("validate", function()
  for _, row in ipairs(TABLE) do
    local check, good, bad = validate[row[1]], row[2], row[3]
    for _, v in ipairs(good) do
      it(row[1] .. " accepts " .. v, function()
        local ok, msg = check(v)
        assert.is_true(ok, msg)
      end)
    end
    for _, b in ipairs(bad) do
      it(row[1] .. " rejects " .. tostring(b[1]), function()
        local ok, msg = check(b[1])
        assert.is_nil(ok)
        assert.truthy(msg:find(b[2], 1, true), "message: " .. tostring(msg))
      end)
    end
  end

  it("key_vault_uri returns the vault name and honours another cloud's suffix", function()
    local ok, name = validate.key_vault_uri("https://Kv1.vault.azure.net/")
    assert.is_true(ok)
    assert.equals("kv1", name)
    assert.is_true(validate.key_vault_uri("https://kv1.vault.azure.cn", "vault.azure.cn"))
  end)

  it("messages shorten long values", function()
    local _, msg = validate.storage_account(string.rep("X", 500))
    assert.truthy(#msg < 200)
  end)
end)

describe("cloud", function()
  local CLOUDS = {
    { "azure", "https://login.microsoftonline.com", "https://management.azure.com", "https://graph.microsoft.com",
      "vault.azure.net", "https://vault.azure.net/.default", "api://AzureADTokenExchange" },
    { "usgov", "https://login.microsoftonline.us", "https://management.usgovcloudapi.net", "https://graph.microsoft.us",
      "vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net/.default", "api://AzureADTokenExchangeUSGov" },
    { "china", "https://login.chinacloudapi.cn", "https://management.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn",
      "vault.azure.cn", "https://vault.azure.cn/.default", "api://AzureADTokenExchangeChina" },
  }
  for _, c in ipairs(CLOUDS) do
    it(c[1], function()
      local x = cloud.get(c[1])
      assert.same({ c[2], c[3], c[4], c[5], c[6], c[7] },
        { x.authority, x.arm, x.graph, x.keyvault_suffix, x.keyvault_scope, x.token_exchange_audience })
      assert.equals(c[3] .. "/.default", x.arm_scope)
      assert.equals(c[4] .. "/.default", x.graph_scope)
      assert.same({}, x.connect_to)
      assert.is_nil(x:connect_to_for("kv1." .. c[5]))
    end)
  end

  it("an unknown name lists the valid ones", function()
    local ok, e = pcall(cloud.get, "mars")
    assert.is_false(ok)
    assert.truthy(tostring(e):find("unknown cloud 'mars': use one of azure, china, usgov", 1, true), tostring(e))
  end)

  it("a custom table must use https endpoints", function()
    local ok, e = pcall(cloud.get, { name = "stack", authority = "http://login.local", arm = "https://arm.local",
                                     graph = "https://graph.local", keyvault_suffix = "vault.local" })
    assert.is_false(ok)
    assert.truthy(tostring(e):find("authority ('http://login.local')", 1, true), tostring(e))
    local c = cloud.get { name = "stack", authority = "https://login.local/", arm = "https://arm.local",
                          graph = "https://graph.local", keyvault_suffix = "vault.local" }
    assert.equals("https://login.local", c.authority)
    assert.equals("https://vault.local/.default", c.keyvault_scope)
  end)

  it("emulator routes the public hostnames and any vault host to the emulator", function()
    local e = cloud.emulator("https://127.0.0.1:8443", "/tmp/ca.pem")
    assert.equals("https://management.azure.com", e.arm)
    assert.equals("/tmp/ca.pem", e.ca_file)
    assert.same({ "login.microsoftonline.com:443:127.0.0.1:8443", "management.azure.com:443:127.0.0.1:8443",
                  "graph.microsoft.com:443:127.0.0.1:8443", ":443:127.0.0.1:8443" }, e.connect_to)
    assert.equals("kv1.vault.azure.net:443:127.0.0.1:8443", e:connect_to_for("kv1.vault.azure.net"))
    assert.is_true(e:is_vault_host("kv1.vault.azure.net"))
    assert.is_false(e:is_vault_host("vault.azure.net"))
    assert.is_false(pcall(cloud.emulator, "127.0.0.1:8443"))
  end)
end)

-- {name, response, expected fields}
local ENVELOPES = {
  { "ARM", { status = 409, headers = { ["x-ms-request-id"] = "arm-1" },
             body = '{"error":{"code":"RoleAssignmentExists","message":"The role assignment already exists.","target":"name","details":[{"code":"X","message":"y"}]}}' },
    { code = "RoleAssignmentExists", message = "The role assignment already exists.", status = 409,
      request_id = "arm-1", retryable = false, field = "name", tenant = "T" } },
  { "Graph (request id only in innerError)", { status = 400, headers = {},
             body = '{"error":{"code":"Request_BadRequest","message":"The appId \'a\' of the service principal does not reference a valid application object.","details":[{"code":"NoBackingApplicationObject","message":"m","target":"appId"}],"innerError":{"date":"2023-01-30T17:36:25","request-id":"g-1","client-request-id":"c-1"}}}' },
    { code = "Request_BadRequest", detail_code = "NoBackingApplicationObject", status = 400, request_id = "g-1",
      client_request_id = "c-1" } },
  { "Key Vault", { status = 401, headers = { ["x-ms-request-id"] = "kv-9" },
             body = '{"error":{"code":"Unauthorized","message":"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/t2/, found https://sts.windows.net/t1/.","innererror":{"code":"AKV10032"}}}' },
    { code = "Unauthorized", inner_code = "AKV10032", status = 401, request_id = "kv-9" } },
  { "Entra", { status = 400, headers = { ["x-ms-request-id"] = "e-1" },
             body = '{"error":"unauthorized_client","error_description":"AADSTS700016: Application with identifier \'x\' was not found in the directory \'T\'.\\r\\nTrace ID: abc\\r\\nCorrelation ID: def","error_codes":[700016],"trace_id":"abc","correlation_id":"def"}' },
    { code = "AADSTS700016", oauth_error = "unauthorized_client", status = 400, request_id = "e-1",
      message = "AADSTS700016: Application with identifier 'x' was not found in the directory 'T'.", correlation_id = "def" } },
  { "non-JSON 502", { status = 502, headers = { ["request-id"] = "r-502" }, body = "<html>\n  Bad   Gateway\n</html>" },
    { code = "HttpError502", status = 502, retryable = true, request_id = "r-502",
      message = "HTTP 502 from https://x/y: <html> Bad Gateway </html>" } },
  { "429 empty body", { status = 429, headers = {}, body = "" },
    { code = "HttpError429", status = 429, retryable = true, message = "HTTP 429 from https://x/y: (empty body)" } },
}

describe("errors.from_response", function()
  for _, c in ipairs(ENVELOPES) do
    it(c[1], function()
      local err = errors.from_response(c[2], { tenant = "T", target = "https://x/y" })
      for k, v in pairs(c[3]) do assert.equals(v, err[k], k) end
      assert.equals("T", err.tenant)
      assert.equals("https://x/y", err.target)
      assert.truthy(tostring(err):find(err.code .. ": ", 1, true))
      assert.truthy(tostring(err):find("HTTP " .. c[2].status, 1, true))
    end)
  end
end)

describe("errors.explain", function()
  local function e(code, message, extra)
    local t = { code = code, message = message or "", status = 400, tenant = "T2" }
    for k, v in pairs(extra or {}) do t[k] = v end
    return errors.new(t)
  end
  local HINTS = {
    { e("InvalidAuthenticationTokenTenant", "The access token is from the wrong issuer 'https://sts.windows.net/t1/'. It must match the tenant 'https://sts.windows.net/t2/' associated with this subscription."),
      { "the token is for another tenant", "request the ARM token from tenant t2", "issued by tenant t1" } },
    { e("PrincipalNotFound"), { "not yet visible in tenant T2", "principalType" } },
    { e("Request_ResourceNotFound"), { "replicated", "tenant T2" } },
    { e("Request_BadRequest", "The appId 'a' of the service principal does not reference a valid application object.",
        { detail_code = "NoBackingApplicationObject" }),
      { "multi-tenant", "tenant T2" } },
    { e("Unauthorized", "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/t2/, found https://sts.windows.net/t1/.",
        { challenge_tenant = "t2" }),
      { "AKV code in the message", "vault's tenant t2", "https://vault.azure.net/.default" } },
    { e("Forbidden", "Caller is not authorized", { inner_code = "ForbiddenByRbac" }), { "Key Vault Crypto Service Encryption User", "tenant T2" } },
    { e("KeyVaultAccessDenied"), { "tenant T2", "federated credential" } },
    { e("AADSTS700016"), { "not installed in tenant T2" } },
    { e("AADSTS700213"), { "subject", "api://AzureADTokenExchange" } },
  }
  for _, h in ipairs(HINTS) do
    it(h[1].code .. (h[1].inner_code and ("/" .. h[1].inner_code) or ""), function()
      local hint = errors.explain(h[1])
      assert.is_string(hint)
      for _, s in ipairs(h[2]) do assert.truthy(hint:find(s, 1, true), hint) end
    end)
  end

  it("has no hint for an unknown code", function()
    assert.is_nil(errors.explain(e("SomethingElse")))
  end)

  -- the one place each service's envelope is decoded: structured fields only (the challenge's
  -- tenant, Graph's detail code), never message text; the hint and the kind are set there
  it("decodes the challenge and detail codes into fields, never the message, with the hint and kind", function()
    local function resp(status, doc, headers) return { status = status, headers = headers or {}, body = json.encode(doc) } end
    local akv = "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/t2/, found https://sts.windows.net/t1/."
    local kv = errors.from_response(resp(401, { error = { code = "Unauthorized", message = akv } },
      { ["www-authenticate"] = 'Bearer authorization="https://login.microsoftonline.com/t2", resource="https://vault.azure.net"' }),
      { tenant = "t1" })
    assert.equal("t2", kv.challenge_tenant)
    assert.equal("auth", kv.kind)
    assert.truthy(kv.hint:find("vault's tenant t2", 1, true))
    local blob = errors.from_response({ status = 401, body = "", headers = { ["www-authenticate"] =
      "Bearer authorization_uri=https://login.microsoftonline.com/t3/oauth2/authorize resource_id=https://storage.azure.com" } })
    assert.equal("t3", blob.challenge_tenant)
    -- without a challenge the message's AKV code decides nothing: no field, no specific hint
    local bare = errors.from_response(resp(401, { error = { code = "Unauthorized", message = akv } }), { tenant = "t1" })
    assert.is_nil(bare.challenge_tenant)
    assert.is_nil(bare.hint)
    local text = "The appId 'a' of the service principal does not reference a valid application object."
    local graph = errors.from_response(resp(400, { error = { code = "Request_BadRequest", message = text,
      details = { { code = "NoBackingApplicationObject", message = text, target = "appId" } } } }), { tenant = "T2" })
    assert.equal("NoBackingApplicationObject", graph.detail_code)
    assert.equal("remote", graph.kind)
    -- the same text without Graph's details carries no detail code
    local plain = errors.from_response(resp(400, { error = { code = "Request_BadRequest", message = text } }), { tenant = "T2" })
    assert.is_nil(plain.detail_code)
    local entra = errors.from_response(resp(401, { error = "invalid_client", error_codes = { 7000215 },
      error_description = "AADSTS7000215: Invalid client secret provided." }), { tenant = "T1" })
    assert.equal("AADSTS7000215", entra.code)
    assert.equal("auth", entra.kind)
  end)
end)
