-- cmkflow.azure.arm against a scripted ARM: long-running operations, paging, error envelopes,
-- api-version handling. Each case is data: the server's routes, the call, what must come out.
local H = require "support.handlers.azure_harness"
local json = require("cmkflow.core").json

local SUB = H.SUB
local API = "2023-01-01"
local ACCT = "/subscriptions/" .. SUB .. "/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/acct1"
local VAULT = "/subscriptions/" .. SUB .. "/resourceGroups/rg2/providers/Microsoft.KeyVault/vaults/kv1"
local OP = "/subscriptions/" .. SUB .. "/providers/Microsoft.Storage/locations/eastus/asyncoperations/op1"
local OP_URL = "https://management.azure.com" .. OP .. "?api-version=" .. API
local LOC = "/subscriptions/" .. SUB .. "/providers/Microsoft.Storage/locations/eastus/operationresults/op2"
local LOC_URL = "https://management.azure.com" .. LOC .. "?api-version=" .. API

local function r(status, body, headers)
  return { status = status, json = body, headers = headers }
end

-- the sequence "METHOD path" of non-token requests the server saw
local function sequence(env)
  local out = {}
  for _, e in ipairs(env.calls()) do out[#out + 1] = e.method .. " " .. e.path end
  return out
end

local LRO_CASES = {
  {
    name = "Azure-AsyncOperation: InProgress then Succeeded, then the resource is read",
    routes = {
      { method = "PUT", path = ACCT, responses = {
        r(201, { name = "acct1", properties = { provisioningState = "Creating" } },
          { ["Azure-AsyncOperation"] = OP_URL, ["Retry-After"] = "17" }) } },
      { method = "GET", path = OP, responses = {
        r(200, { status = "InProgress" }, { ["Retry-After"] = "5" }),
        r(200, { status = "Succeeded" }) } },
      { method = "GET", path = ACCT, responses = {
        r(200, { name = "acct1", properties = { provisioningState = "Succeeded" } }) } },
    },
    call = function(arm) return arm:put(ACCT, { location = "eastus" }, { api_version = API }) end,
    result = function(res) assert.equals("acct1", res.name) assert.equals("Succeeded", res.properties.provisioningState) end,
    sleeps = { 17000, 5000 },
    sequence = { "PUT " .. ACCT, "GET " .. OP, "GET " .. OP, "GET " .. ACCT },
  },
  {
    name = "Location: 202, 202, then 200 with the body",
    routes = {
      { method = "PUT", path = ACCT, responses = { r(202, nil, { Location = LOC_URL, ["Retry-After"] = "3" }) } },
      { method = "GET", path = LOC, responses = {
        r(202, nil, { Location = LOC_URL, ["Retry-After"] = "2" }),
        r(202, nil, { Location = LOC_URL }),
        r(200, { name = "acct1", properties = { provisioningState = "Succeeded" } }) } },
    },
    call = function(arm) return arm:put(ACCT, { location = "eastus" }, { api_version = API }) end,
    result = function(res) assert.equals("acct1", res.name) end,
    sleeps = { 3000, 2000, 1000 }, -- no Retry-After on the second 202: probe again after 1 s (5 s waited)
    sequence = { "PUT " .. ACCT, "GET " .. LOC, "GET " .. LOC, "GET " .. LOC },
  },
  {
    name = "a Failed operation surfaces the operation's own error",
    routes = {
      { method = "PUT", path = ACCT, responses = { r(201, nil, { ["Azure-AsyncOperation"] = OP_URL, ["Retry-After"] = "1" }) } },
      { method = "GET", path = OP, responses = {
        r(200, { status = "Failed", error = { code = "KeyVaultPolicyError", message = "Keyvault policy recoverable is not set" } }) } },
    },
    call = function(arm) return arm:put(ACCT, {}, { api_version = API }) end,
    err = { code = "KeyVaultPolicyError", message = "Keyvault policy recoverable is not set", tenant = H.T1 },
    sleeps = { 1000 },
    sequence = { "PUT " .. ACCT, "GET " .. OP },
  },
  {
    name = "a Canceled operation without an error object",
    routes = {
      { method = "PUT", path = ACCT, responses = { r(202, nil, { ["Azure-AsyncOperation"] = OP_URL, ["Retry-After"] = "1" }) } },
      { method = "GET", path = OP, responses = { r(200, { status = "Canceled" }) } },
    },
    call = function(arm) return arm:put(ACCT, {}, { api_version = API }) end,
    err = { code = "OperationCanceled" },
    sleeps = { 1000 },
  },
  {
    name = "a failing status read is reported as such, not as the operation's failure",
    routes = {
      { method = "PUT", path = ACCT, responses = { r(202, nil, { ["Azure-AsyncOperation"] = OP_URL, ["Retry-After"] = "1" }) } },
      { method = "GET", path = OP, responses = { r(403, { error = { code = "AuthorizationFailed", message = "no read" } }) } },
    },
    call = function(arm) return arm:put(ACCT, {}, { api_version = API }) end,
    err = { code = "AuthorizationFailed", status = 403, message_has = "reading the status of the operation" },
  },
  {
    name = "non-terminal provisioningState on a 201: poll the resource until Succeeded",
    routes = {
      { method = "PUT", path = VAULT, responses = { r(201, { name = "kv1", properties = { provisioningState = "RegisteringDns" } }) } },
      { method = "GET", path = VAULT, responses = {
        r(200, { name = "kv1", properties = { provisioningState = "RegisteringDns" } }, { ["Retry-After"] = "4" }),
        r(200, { name = "kv1", properties = { provisioningState = "Succeeded", vaultUri = "https://kv1.vault.azure.net/" } }) } },
    },
    call = function(arm) return arm:put(VAULT, { location = "eastus" }, { api_version = "2024-11-01" }) end,
    result = function(res) assert.equals("https://kv1.vault.azure.net/", res.properties.vaultUri) end,
    sleeps = { 1000, 4000 }, -- no Retry-After on the 201: 1 s, the first probe
    sequence = { "PUT " .. VAULT, "GET " .. VAULT, "GET " .. VAULT },
  },
  {
    name = "without Retry-After the probes back off to a tenth of the time waited",
    routes = {
      { method = "PUT", path = ACCT, responses = { r(202, nil, { Location = LOC_URL, ["Retry-After"] = "25" }) } },
      { method = "GET", path = LOC, responses = {
        r(202, nil, { Location = LOC_URL }), r(202, nil, { Location = LOC_URL }), r(202, nil, { Location = LOC_URL }),
        r(200, { name = "acct1" }) } },
    },
    call = function(arm) return arm:put(ACCT, {}, { api_version = API }) end,
    result = function(res) assert.equals("acct1", res.name) end,
    sleeps = { 25000, 2000, 2000, 2000 }, -- 25, 27, 29 s waited: 2 s each
  },
  {
    name = "an explicit poll_interval_s is the fixed wait without Retry-After",
    routes = {
      { method = "PUT", path = VAULT, responses = { r(201, { name = "kv1", properties = { provisioningState = "RegisteringDns" } }) } },
      { method = "GET", path = VAULT, responses = { r(200, { name = "kv1", properties = { provisioningState = "Succeeded" } }) } },
    },
    call = function(arm) return arm:put(VAULT, {}, { api_version = "2024-11-01", poll_interval_s = 7 }) end,
    result = function(res) assert.equals("Succeeded", res.properties.provisioningState) end,
    sleeps = { 7000 },
  },
  {
    name = "provisioningState that ends Failed is an error",
    routes = {
      { method = "PUT", path = VAULT, responses = { r(201, { properties = { provisioningState = "Creating" } }) } },
      { method = "GET", path = VAULT, responses = { r(200, { properties = { provisioningState = "Failed" } }) } },
    },
    call = function(arm) return arm:put(VAULT, {}, { api_version = "2024-11-01" }) end,
    err = { code = "OperationFailed" },
  },
  {
    name = "DELETE: 202 + Location, then 204 is success without a body",
    routes = {
      { method = "DELETE", path = ACCT, responses = { r(202, nil, { Location = LOC_URL, ["Retry-After"] = "1" }) } },
      { method = "GET", path = LOC, responses = { r(204) } },
    },
    call = function(arm) return arm:delete(ACCT, { api_version = API }) end,
    result = function(res, resp) assert.is_true(res) assert.equals(204, resp.status) end,
    sleeps = { 1000 },
  },
  {
    name = "DELETE of a resource that is already gone (404) succeeds",
    routes = { { method = "DELETE", path = ACCT, responses = { r(404, { error = { code = "ResourceNotFound", message = "gone" } }) } } },
    call = function(arm) return arm:delete(ACCT, { api_version = API }) end,
    result = function(res) assert.is_true(res) end,
    sleeps = {},
  },
  {
    name = "synchronous 200 PUT returns the body without polling",
    routes = { { method = "PUT", path = ACCT, responses = { r(200, { name = "acct1", properties = { provisioningState = "Succeeded" } }) } } },
    call = function(arm) return arm:put(ACCT, {}, { api_version = API }) end,
    result = function(res) assert.equals("acct1", res.name) end,
    sleeps = {},
    sequence = { "PUT " .. ACCT },
  },
  {
    name = "wait = false returns the initial response",
    routes = { { method = "PUT", path = ACCT, responses = { r(202, nil, { Location = LOC_URL }) } } },
    call = function(arm) return arm:put(ACCT, {}, { api_version = API, wait = false }) end,
    result = function(res) assert.equals(202, res.status) assert.equals(LOC_URL, res.headers.location) end,
    sleeps = {},
  },
  {
    name = "the poll is bounded by timeout_s: OperationTimedOut",
    routes = {
      { method = "PUT", path = ACCT, responses = { r(202, nil, { Location = LOC_URL, ["Retry-After"] = "60" }) } },
      { method = "GET", path = LOC, responses = { r(202, nil, { Location = LOC_URL, ["Retry-After"] = "60" }) } },
    },
    call = function(arm) return arm:put(ACCT, {}, { api_version = API, timeout_s = 150 }) end,
    err = { code = "OperationTimedOut", message_has = "within 150 s" },
    sleeps = { 60000, 60000, 30000 },
    sequence = { "PUT " .. ACCT, "GET " .. LOC, "GET " .. LOC, "GET " .. LOC },
  },
  {
    name = "an operation URL on another host is not followed (the token stays home)",
    routes = { { method = "PUT", path = ACCT, responses = {
      r(202, nil, { ["Azure-AsyncOperation"] = "https://evil.example.com/op?api-version=1" }) } } },
    call = function(arm) return arm:put(ACCT, {}, { api_version = API }) end,
    err = { code = "UntrustedLink" },
    sleeps = {},
    sequence = { "PUT " .. ACCT },
  },
}

local function check_err(want, err)
  assert.is_table(err, "an error was expected")
  for k, v in pairs(want) do
    if k == "message_has" then
      assert.truthy(tostring(err.message):find(v, 1, true), "message: " .. tostring(err.message))
    else
      assert.equals(v, err[k], "field " .. k)
    end
  end
  assert.truthy(tostring(err):find(err.code, 1, true))
end

describe("arm long-running operations (" .. H.mode .. ")", function()
  for _, case in ipairs(LRO_CASES) do
    it(case.name, function()
      local env = H.start(case.routes)
      local ok, e = pcall(function()
        local res, err, resp = env.run(function() return case.call(env.arm) end)
        if case.err then
          assert.is_nil(res)
          check_err(case.err, err)
        else
          assert.is_nil(err, tostring(err))
          case.result(res, resp)
        end
        if case.sleeps then assert.same(case.sleeps, env.sleeps) end
        if case.sequence then assert.same(case.sequence, sequence(env)) end
      end)
      env.stop()
      if not ok then error(e, 0) end
    end)
  end

  it("probes 1 s apart for the first 20 s waited, then a tenth of the wait, at most 30 s", function()
    local probe = require("cmkflow.azure.client").probe_delay_s
    local got = {}
    for _, w in ipairs { 0, 5, 19, 20, 45, 99, 300, 3600 } do got[#got + 1] = probe(w) end
    assert.same({ 1, 1, 1, 2, 4, 9, 30, 30 }, got)
  end)

  it("sends the ARM token of the client's tenant on every request", function()
    local env = H.start(LRO_CASES[1].routes)
    env.run(function() return env.arm:put(ACCT, {}, { api_version = API }) end)
    local calls = env.calls()
    env.stop()
    assert.equals(4, #calls)
    for _, c in ipairs(calls) do assert.equals("Bearer tok-" .. H.T1 .. "-arm", c.authorization) end
    assert.equals('{}', calls[1].body)
  end)
end)

local PAGE2 = "/subscriptions/" .. SUB .. "/resourceGroups/page2"
local PAGE3 = "/subscriptions/" .. SUB .. "/resourceGroups/page3"
local RGS = "/subscriptions/" .. SUB .. "/resourceGroups"
local function link(path, token) return "https://management.azure.com" .. path .. "?api-version=2021-04-01&$skiptoken=" .. token end

local PAGING_CASES = {
  {
    name = "three pages with an empty middle page",
    routes = {
      { method = "GET", path = RGS, responses = { r(200, { value = { { name = "a" }, { name = "b" } }, nextLink = link(PAGE2, "x1") }) } },
      { method = "GET", path = PAGE2, responses = { r(200, { value = json.array {}, nextLink = link(PAGE3, "x2") }) } },
      { method = "GET", path = PAGE3, responses = { r(200, { value = { { name = "c" } }, nextLink = json.null }) } },
    },
    names = { "a", "b", "c" }, requests = 3,
  },
  {
    name = "a single page without nextLink",
    routes = { { method = "GET", path = RGS, responses = { r(200, { value = { { name = "only" } } }) } } },
    names = { "only" }, requests = 1,
  },
  {
    name = "an empty collection",
    routes = { { method = "GET", path = RGS, responses = { r(200, { value = json.array {} }) } } },
    names = {}, requests = 1,
  },
  {
    name = "a nextLink that never ends is bounded by max_pages",
    routes = { { method = "GET", path = RGS, responses = { r(200, { value = { { name = "x" } }, nextLink = link(RGS, "again") }) } } },
    max_pages = 3, err = { code = "TooManyPages" }, requests = 3,
  },
  {
    name = "a nextLink to another host is refused",
    routes = { { method = "GET", path = RGS, responses = { r(200, { value = { { name = "x" } }, nextLink = "https://evil.example.com/x" }) } } },
    err = { code = "UntrustedLink" }, requests = 1,
  },
}

describe("arm:list (" .. H.mode .. ")", function()
  for _, case in ipairs(PAGING_CASES) do
    it(case.name, function()
      local env = H.start(case.routes)
      local items, err = env.run(function()
        return env.arm:list("/subscriptions/{subscription}/resourceGroups", { api_version = "2021-04-01", max_pages = case.max_pages })
      end)
      local calls = env.calls()
      env.stop()
      if case.err then
        assert.is_nil(items)
        check_err(case.err, err)
      else
        assert.is_nil(err, tostring(err))
        local names = {}
        for _, it in ipairs(items) do names[#names + 1] = it.name end
        assert.same(case.names, names)
        assert.is_true(json.is_array(items))
      end
      assert.equals(case.requests, #calls)
      -- the nextLink is followed verbatim: its skiptoken arrives, api-version is not doubled
      for i = 2, #calls do
        assert.truthy(calls[i].query:find("$skiptoken=", 1, true))
        local _, n = calls[i].query:gsub("api%-version=", "")
        assert.equals(1, n)
      end
    end)
  end
end)

local ERROR_CASES = {
  {
    name = "ARM envelope with x-ms-request-id",
    response = r(404, { error = { code = "ResourceGroupNotFound", message = "Resource group 'rg9' could not be found." } },
                 { ["x-ms-request-id"] = "rid-arm-1" }),
    want = { code = "ResourceGroupNotFound", message = "Resource group 'rg9' could not be found.", status = 404,
             request_id = "rid-arm-1", tenant = H.T1, retryable = false },
  },
  {
    name = "ARM AuthorizationFailed names the action and the tenant that must act",
    response = r(403, { error = { code = "AuthorizationFailed", message =
      "The client 'x' with object id 'y' does not have authorization to perform action 'Microsoft.Storage/storageAccounts/read' over scope '/subscriptions/s' or the scope is invalid." } },
      { ["x-ms-request-id"] = "rid-2" }),
    want = { code = "AuthorizationFailed", status = 403, request_id = "rid-2", tenant = H.T1 },
    hint = { "Microsoft.Storage/storageAccounts/read", "tenant " .. H.T1 },
  },
  {
    name = "a 503 with an HTML body becomes HttpError503 with an excerpt, retryable",
    response = { status = 503, body = "<html><body>Service Unavailable</body></html>", headers = { ["content-type"] = "text/html" } },
    want = { code = "HttpError503", status = 503, retryable = true, message_has = "Service Unavailable" },
  },
  {
    name = "a JSON body without an error envelope",
    response = r(409, { odd = true }),
    want = { code = "HttpError409", status = 409, message_has = "odd" },
  },
}

describe("arm errors (" .. H.mode .. ")", function()
  for _, case in ipairs(ERROR_CASES) do
    it(case.name, function()
      local env = H.start { { method = "GET", path = RGS .. "/rg9", responses = { case.response } } }
      local body, err = env.run(function() return env.arm:get(RGS .. "/rg9", { api_version = "2021-04-01" }) end)
      env.stop()
      assert.is_nil(body)
      check_err(case.want, err)
      assert.truthy(err.target:find("/resourceGroups/rg9?api-version=2021-04-01", 1, true))
      if case.hint then
        local hint = require("cmkflow.azure.errors").explain(err)
        for _, s in ipairs(case.hint) do assert.truthy(hint:find(s, 1, true), hint) end
      end
    end)
  end

  it("exists() is false on 404 and true on 200", function()
    local env = H.start {
      { method = "GET", path = RGS .. "/there", responses = { r(200, { name = "there" }) } },
      { method = "GET", path = RGS .. "/gone", responses = { r(404, { error = { code = "ResourceGroupNotFound", message = "no" } }) } },
    }
    local a, b = env.run(function()
      return env.arm:exists(RGS .. "/there", { api_version = "2021-04-01" }),
             env.arm:exists(RGS .. "/gone", { api_version = "2021-04-01" })
    end)
    env.stop()
    assert.is_true(a)
    assert.is_false(b)
  end)
end)

describe("arm URLs and api-version", function()
  local arm = require("cmkflow.azure.arm").new { http = {}, cloud = "azure", subscription = SUB }

  it("adds api-version to a path and keeps the query string", function()
    assert.equals("https://management.azure.com/subscriptions/" .. SUB .. "/resourceGroups?$filter=tagName%20eq%20'x'&api-version=2021-04-01",
      arm:url("/subscriptions/{subscription}/resourceGroups?$filter=tagName%20eq%20'x'", "2021-04-01"))
    assert.equals("https://management.azure.com/x?api-version=2021-04-01",
      arm:url("https://management.azure.com/x?api-version=2021-04-01", nil))
  end)

  local BAD = {
    { args = { "/subscriptions/x" }, msg = "api_version is required" },
    { args = { "/subscriptions/x", "2021-4-1" }, msg = "api-version '2021-4-1' is invalid" },
    { args = { "subscriptions/x", "2021-04-01" }, msg = "must start with '/'" },
    { args = { "https://evil.example.com/x", "2021-04-01" }, msg = "refusing URL" },
  }
  for _, case in ipairs(BAD) do
    it("raises for " .. tostring(case.args[1]) .. " / " .. tostring(case.args[2]), function()
      local ok, e = pcall(arm.url, arm, case.args[1], case.args[2])
      assert.is_false(ok)
      assert.truthy(tostring(e):find(case.msg, 1, true), tostring(e))
    end)
  end

  it("accepts -preview api-versions", function()
    assert.equals("https://management.azure.com/p?api-version=2024-05-01-preview", arm:url("/p", "2024-05-01-preview"))
  end)
end)

describe("azure.context (" .. H.mode .. ")", function()
  local azure = require "cmkflow.azure"

  it("builds ARM, Graph and Key Vault clients for one tenant", function()
    local env = H.start { { method = "GET", path = RGS .. "/rg1", responses = { r(200, { name = "rg1" }) } } }
    local ctx = azure.context { cloud = env.cloud, credential = env.credential, tenant = H.T1,
                                subscription = SUB, http = env.http }
    local rg, err = env.run(function() return ctx.arm:get("/subscriptions/{subscription}/resourceGroups/rg1", { api_version = "2021-04-01" }) end)
    local calls = env.calls()
    env.stop()
    assert.is_nil(err, tostring(err))
    assert.equals("rg1", rg.name)
    assert.equals("Bearer tok-" .. H.T1 .. "-arm", calls[1].authorization)
    assert.equals("https://graph.microsoft.com/v1.0", ctx.graph.base)
    assert.equals("7.5", ctx.keyvault.api_version)
  end)

  it("rejects a malformed tenant or subscription", function()
    local ok, e = pcall(azure.context, { cloud = "azure", tenant = "common", http = {} })
    assert.is_false(ok)
    assert.truthy(tostring(e):find("name a specific tenant", 1, true), tostring(e))
    ok, e = pcall(azure.context, { cloud = "azure", subscription = "sub-1", http = {} })
    assert.is_false(ok)
    assert.truthy(tostring(e):find("subscription id 'sub-1' is invalid", 1, true), tostring(e))
  end)
end)
