-- cmkflow.azure.keyvault against a scripted vault: the authentication challenge (tenant and
-- scope learned from WWW-Authenticate), key operations, paging, error envelopes, validation.
local H = require "support.handlers.azure_harness"
local json = require("cmkflow.core").json
local kvmod = require "cmkflow.azure.keyvault"
local errors = require "cmkflow.azure.errors"

local VAULT = "https://kv1.vault.azure.net/"
local HOST = "kv1.vault.azure.net"
local CHALLENGE = 'Bearer authorization="https://login.windows.net/' .. H.T2 .. '", resource="https://vault.azure.net"'
local UNAUTH = { status = 401, headers = { ["WWW-Authenticate"] = CHALLENGE },
                 json = { error = { code = "Unauthorized", message = "AKV10000: Request is missing a Bearer or PoP token." } } }
local KEY = { key = { kid = "https://kv1.vault.azure.net/keys/k1/0123456789abcdef0123456789abcdef", kty = "RSA",
                      key_ops = { "wrapKey", "unwrapKey" }, n = "AQAB", e = "AQAB" },
              attributes = { enabled = true, recoveryLevel = "Recoverable" } }

local function r(status, body, headers) return { status = status, json = body, headers = headers } end
local function route(method, path, responses, extra)
  local t = { method = method, path = path, host = HOST, unauthenticated = UNAUTH, responses = responses }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

local function token_requests(env)
  local out = {}
  for _, e in ipairs(env.journal()) do
    if e.path:match("/oauth2/v2%.0/token$") then out[#out + 1] = e end
  end
  return out
end

describe("keyvault challenge (" .. H.mode .. ")", function()
  it("probes without a token, then authenticates for the tenant and scope the vault names", function()
    local env = H.start {
      route("POST", "/keys/k1/create", { r(200, KEY) }),
      route("GET", "/keys/k1/", { r(200, KEY) }),
    }
    local created, err, again, err2 = env.run(function()
      local a, e = env.keyvault:create_key(VAULT, "k1", { key_size = 3072, tags = { purpose = "cmk" } })
      local b, e2 = env.keyvault:get_key(VAULT, "k1")
      return a, e, b, e2
    end)
    local calls, tokens = env.calls(), token_requests(env)
    env.stop()
    assert.is_nil(err, tostring(err))
    assert.is_nil(err2, tostring(err2))
    assert.equals(KEY.key.kid, created.key.kid)
    assert.equals(KEY.key.kid, again.key.kid)

    -- 1: the unauthenticated probe with an empty body; 2: the real request with a T2 vault token;
    -- 3: the next call goes straight in with the cached challenge.
    assert.equals(3, #calls)
    assert.equals(json.null, calls[1].authorization)
    assert.equals("", calls[1].body)
    assert.equals("Bearer tok-" .. H.T2 .. "-kv", calls[2].authorization)
    assert.equals("Bearer tok-" .. H.T2 .. "-kv", calls[3].authorization)
    assert.equals("api-version=7.5", calls[2].query)
    local body = json.decode(calls[2].body)
    assert.equals("RSA", body.kty)
    assert.equals(3072, body.key_size)
    assert.same({ "wrapKey", "unwrapKey" }, body.key_ops)
    assert.equals("cmk", body.tags.purpose)

    -- the only token fetched is for the vault's tenant T2, not the credential's own T1
    assert.equals(1, #tokens)
    assert.equals("/" .. H.T2 .. "/oauth2/v2.0/token", tokens[1].path)
    assert.equals("https://vault.azure.net/.default", tokens[1].token_scope)
    assert.same({ tenant = H.T2, scope = "https://vault.azure.net/.default", resource = "https://vault.azure.net",
                  authorization = "https://login.windows.net/" .. H.T2 }, env.keyvault:challenge(VAULT))
  end)

  it("refuses a challenge asking for a token outside the vault's domain", function()
    local env = H.start { { method = "GET", path = "/keys/k1/", host = HOST, responses = {
      { status = 401, headers = { ["WWW-Authenticate"] = 'Bearer authorization="https://login.windows.net/' .. H.T2 ..
        '", resource="https://management.azure.com"' } } } } }
    local key, err = env.run(function() return env.keyvault:get_key(VAULT, "k1") end)
    local calls, tokens = env.calls(), token_requests(env)
    env.stop()
    assert.is_nil(key)
    assert.equals("UntrustedChallenge", err.code)
    assert.equals(1, #calls)
    assert.equals(0, #tokens)
  end)

  it("a 401 without a challenge is an error that says so", function()
    local env = H.start { { method = "GET", path = "/keys/k1/", host = HOST, responses = { r(401, { error = { code = "Unauthorized", message = "no" } }) } } }
    local key, err = env.run(function() return env.keyvault:get_key(VAULT, "k1") end)
    env.stop()
    assert.is_nil(key)
    assert.equals("Unauthorized", err.code)
    assert.truthy(err.message:find("without a usable Bearer challenge", 1, true))
  end)
end)

local OPS = {
  {
    name = "wrap_key posts alg and value to the version's wrapkey",
    routes = { route("POST", "/keys/k1/0123456789abcdef0123456789abcdef/wrapkey", { r(200, { kid = KEY.key.kid, value = "d3JhcHBlZA" }) }) },
    call = function(kv) return kv:wrap_key(VAULT, "k1", "0123456789abcdef0123456789abcdef", "RSA-OAEP-256", "c2VjcmV0") end,
    result = function(res, calls)
      assert.equals("d3JhcHBlZA", res.value)
      assert.same({ alg = "RSA-OAEP-256", value = "c2VjcmV0" }, json.decode(calls[2].body))
    end,
  },
  {
    name = "unwrap_key with the latest version",
    routes = { route("POST", "/keys/k1//unwrapkey", { r(200, { kid = KEY.key.kid, value = "c2VjcmV0" }) }) },
    call = function(kv) return kv:unwrap_key(VAULT, "k1", nil, "RSA-OAEP-256", "d3JhcHBlZA") end,
    result = function(res) assert.equals("c2VjcmV0", res.value) end,
  },
  {
    name = "update_key disables a version",
    routes = { route("PATCH", "/keys/k1/0123456789abcdef0123456789abcdef", { r(200, { attributes = { enabled = false } }) }) },
    call = function(kv) return kv:update_key(VAULT, "k1", "0123456789abcdef0123456789abcdef", { enabled = false }) end,
    result = function(res, calls)
      assert.is_false(res.attributes.enabled)
      assert.same({ attributes = { enabled = false } }, json.decode(calls[2].body))
    end,
  },
  {
    name = "list_key_versions follows nextLink on the same vault",
    routes = { route("GET", "/keys/k1/versions", {
      r(200, { value = { { kid = "v1" } }, nextLink = "https://kv1.vault.azure.net:443/keys/k1/versions?api-version=7.5&$skiptoken=abc" }),
      r(200, { value = { { kid = "v2" } }, nextLink = json.null }) }) },
    call = function(kv) return kv:list_key_versions(VAULT, "k1") end,
    result = function(res, calls)
      assert.same({ "v1", "v2" }, { res[1].kid, res[2].kid })
      assert.equals("api-version=7.5&$skiptoken=abc", calls[3].query)
    end,
  },
  {
    name = "purge answers 204: success without a body",
    routes = { route("DELETE", "/deletedkeys/k1", { r(204) }) },
    call = function(kv) return kv:purge_deleted_key(VAULT, "k1") end,
    result = function(res) assert.is_true(res) end,
  },
  {
    name = "RBAC denial keeps Key Vault's inner code and names the vault's tenant",
    routes = { route("POST", "/keys/k1/0123456789abcdef0123456789abcdef/wrapkey", { r(403, { error = { code = "Forbidden",
      message = "Caller is not authorized to perform action on resource.", innererror = { code = "ForbiddenByRbac" } } },
      { ["x-ms-request-id"] = "kv-req-1" }) }) },
    call = function(kv) return kv:wrap_key(VAULT, "k1", "0123456789abcdef0123456789abcdef", "RSA-OAEP-256", "c2VjcmV0") end,
    err = function(err)
      assert.equals("Forbidden", err.code)
      assert.equals("ForbiddenByRbac", err.inner_code)
      assert.equals(403, err.status)
      assert.equals("kv-req-1", err.request_id)
      assert.equals(H.T2, err.tenant)
      local hint = errors.explain(err)
      assert.truthy(hint:find("Key Vault Crypto Service Encryption User", 1, true), hint)
      assert.truthy(hint:find("tenant " .. H.T2, 1, true), hint)
    end,
  },
  {
    name = "KeyNotFound",
    routes = { route("GET", "/keys/nokey/", { r(404, { error = { code = "KeyNotFound", message = "A key with (name/id) nokey was not found in this key vault." } }) }) },
    call = function(kv) return kv:get_key(VAULT, "nokey") end,
    err = function(err) assert.equals("KeyNotFound", err.code) assert.equals(404, err.status) assert.is_false(err.retryable) end,
  },
}

describe("keyvault operations (" .. H.mode .. ")", function()
  for _, case in ipairs(OPS) do
    it(case.name, function()
      local env = H.start(case.routes)
      local ok, e = pcall(function()
        local res, err = env.run(function() return case.call(env.keyvault) end)
        local calls = env.calls()
        if case.err then
          assert.is_nil(res)
          case.err(err)
        else
          assert.is_nil(err, tostring(err))
          case.result(res, calls)
        end
        for i = 2, #calls do assert.equals("Bearer tok-" .. H.T2 .. "-kv", calls[i].authorization) end
      end)
      env.stop()
      if not ok then error(e, 0) end
    end)
  end
end)

describe("keyvault challenge parsing", function()
  local CASES = {
    { CHALLENGE, { tenant = H.T2, scope = "https://vault.azure.net/.default", resource = "https://vault.azure.net" } },
    { 'Bearer authorization_uri="https://login.microsoftonline.com/' .. H.T2 .. '/", scope="https://vault.azure.net/.default"',
      { tenant = H.T2, scope = "https://vault.azure.net/.default", resource = "https://vault.azure.net" } },
    { 'Bearer authorization="https://login.microsoftonline.com/contoso.onmicrosoft.com", resource="https://managedhsm.azure.net/"',
      { tenant = "contoso.onmicrosoft.com", scope = "https://managedhsm.azure.net/.default", resource = "https://managedhsm.azure.net/" } },
    { 'Basic realm="x"', nil },
    { 'Bearer resource="https://vault.azure.net"', nil },
    { 'Bearer authorization="https://login.windows.net/", resource="https://vault.azure.net"', nil },
  }
  for _, c in ipairs(CASES) do
    it(c[1], function()
      local got = kvmod.parse_challenge(c[1])
      if c[2] == nil then
        assert.is_nil(got)
      else
        for k, v in pairs(c[2]) do assert.equals(v, got[k], k) end
      end
    end)
  end
end)

describe("keyvault validation before any request", function()
  local kv = kvmod.new { http = { request = function() error("no request may be sent") end }, cloud = "azure" }
  local BAD = {
    { "vault URI with a path", function() return kv:get_key("https://kv1.vault.azure.net/keys/k1", "k1") end, "without a path" },
    { "vault URI on another domain", function() return kv:get_key("https://kv1.example.com", "k1") end, "https://{vault-name}.vault.azure.net" },
    { "http vault URI", function() return kv:get_key("http://kv1.vault.azure.net", "k1") end, "key vault URI" },
    { "bad vault name", function() return kv:get_key("https://1kv.vault.azure.net", "k1") end, "must start with a letter" },
    { "bad key name", function() return kv:get_key(VAULT, "my_key") end, "key name 'my_key' is invalid" },
    { "bad key version", function() return kv:get_key(VAULT, "k1", "../x") end, "key version" },
    { "bad wrap value", function() return kv:wrap_key(VAULT, "k1", nil, "RSA-OAEP-256", "a+b/c==") end, "base64url" },
    { "bad algorithm", function() return kv:wrap_key(VAULT, "k1", nil, "RSA-NOPE", "abc") end, "algorithm 'RSA-NOPE'" },
  }
  for _, c in ipairs(BAD) do
    it(c[1], function()
      local ok, e = pcall(c[2])
      assert.is_false(ok)
      assert.truthy(tostring(e):find(c[3], 1, true), tostring(e))
    end)
  end
end)
