-- cmkflow.azure.graph against a scripted Graph: upsert by alternate key with
-- Prefer: create-if-missing, service principal find-or-create over replication delays,
-- federated credential upsert with its fallback, @odata.nextLink paging, error envelopes.
local H = require "support.handlers.azure_harness"
local json = require("cmkflow.core").json
local graphmod = require "cmkflow.azure.graph"

local APP_ID = "55555555-5555-4555-8555-555555555555"
local APP_OBJ = "66666666-6666-4666-8666-666666666666"
local SP_BY_APPID = "/v1.0/servicePrincipals(appId='" .. APP_ID .. "')"
local APP_UNIQUE = "/v1.0/applications(uniqueName='contoso-cmk')"
local FICS = "/v1.0/applications/" .. APP_OBJ .. "/federatedIdentityCredentials"
local FIC_UPSERT = FICS .. "(name='storage-uami')"

local function r(status, body, headers) return { status = status, json = body, headers = headers } end

local NOT_FOUND = r(404, { error = { code = "Request_ResourceNotFound",
  message = "Resource '" .. APP_ID .. "' does not exist or one of its queried reference-property objects are not present.",
  innerError = { ["request-id"] = "g-404" } } })
local NO_BACKING = r(400, { error = { code = "Request_BadRequest",
  message = "The appId '" .. APP_ID .. "' of the service principal does not reference a valid application object.",
  details = { { code = "NoBackingApplicationObject", message = "...", target = "appId" } } } })
local CONFLICT = r(409, { error = { code = "Request_MultipleObjectsWithSameKeyValue",
  message = "The service principal cannot be created, updated, or restored because the service principal name " .. APP_ID .. " is already in use." } })
local SP = r(200, { id = "sp-object-id", appId = APP_ID })

local function sequence(env)
  local out = {}
  for _, e in ipairs(env.calls()) do out[#out + 1] = e.method .. " " .. e.path end
  return out
end

local CASES = {
  {
    name = "application upsert by uniqueName creates (201) with Prefer: create-if-missing",
    routes = {
      { method = "PATCH", path = APP_UNIQUE, require_headers = { prefer = "create-if-missing" },
        responses = { r(201, { id = APP_OBJ, appId = APP_ID, uniqueName = "contoso-cmk" }) } },
    },
    call = function(g) return g:find_or_create_application("contoso-cmk", { displayName = "Contoso CMK", signInAudience = "AzureADMultipleOrgs" }) end,
    result = function(app, created) assert.equals(APP_OBJ, app.id) assert.is_true(created) end,
    sequence = { "PATCH " .. APP_UNIQUE },
    check = function(calls)
      local body = json.decode(calls[1].body)
      assert.equals("Contoso CMK", body.displayName)
      assert.equals("create-if-missing", calls[1].prefer)
    end,
  },
  {
    name = "application upsert answered 204 reads the application, waiting out one replication 404",
    routes = {
      { method = "PATCH", path = APP_UNIQUE, require_headers = { prefer = "create-if-missing" }, responses = { r(204) } },
      { method = "GET", path = APP_UNIQUE, responses = { NOT_FOUND, r(200, { id = APP_OBJ, appId = APP_ID }) } },
    },
    call = function(g) return g:find_or_create_application("contoso-cmk", { displayName = "Contoso CMK" }) end,
    result = function(app, created) assert.equals(APP_ID, app.appId) assert.is_false(created) end,
    sleeps = { 1000 },
    sequence = { "PATCH " .. APP_UNIQUE, "GET " .. APP_UNIQUE, "GET " .. APP_UNIQUE },
  },
  {
    name = "service principal that already exists is found, not created",
    routes = { { method = "GET", path = SP_BY_APPID, responses = { SP } } },
    call = function(g) return g:create_service_principal(APP_ID) end,
    result = function(sp, created) assert.equals("sp-object-id", sp.id) assert.is_false(created) end,
    sleeps = {},
    sequence = { "GET " .. SP_BY_APPID },
  },
  {
    name = "service principal: 404, then POST waits out one NoBackingApplicationObject",
    routes = {
      { method = "GET", path = SP_BY_APPID, responses = { NOT_FOUND } },
      { method = "POST", path = "/v1.0/servicePrincipals", responses = { NO_BACKING, r(201, { id = "sp-new", appId = APP_ID }) } },
    },
    call = function(g) return g:create_service_principal(APP_ID) end,
    result = function(sp, created) assert.equals("sp-new", sp.id) assert.is_true(created) end,
    sleeps = { 1000 },
    sequence = { "GET " .. SP_BY_APPID, "POST /v1.0/servicePrincipals", "POST /v1.0/servicePrincipals" },
    check = function(calls) assert.equals(APP_ID, json.decode(calls[2].body).appId) end,
  },
  {
    name = "service principal: 409 conflict, then the read waits out one replication 404",
    routes = {
      { method = "GET", path = SP_BY_APPID, responses = { NOT_FOUND, NOT_FOUND, SP } },
      { method = "POST", path = "/v1.0/servicePrincipals", responses = { CONFLICT } },
    },
    call = function(g) return g:create_service_principal(APP_ID) end,
    result = function(sp, created) assert.equals("sp-object-id", sp.id) assert.is_false(created) end,
    sleeps = { 1000 },
    sequence = { "GET " .. SP_BY_APPID, "POST /v1.0/servicePrincipals", "GET " .. SP_BY_APPID, "GET " .. SP_BY_APPID },
  },
  {
    name = "service principal: replication that never completes is bounded and says what is missing",
    routes = {
      { method = "GET", path = SP_BY_APPID, responses = { NOT_FOUND } },
      { method = "POST", path = "/v1.0/servicePrincipals", responses = { NO_BACKING } },
    },
    replication_timeout_s = 40,
    call = function(g) return g:create_service_principal(APP_ID, nil, { replication_timeout_s = 40 }) end,
    err = { code = "ReplicationTimeout", tenant = H.T1,
            message_has = { "application with appId '" .. APP_ID .. "' is not yet visible in tenant " .. H.T1,
                            "does not reference a valid application object" } },
    sleeps = { 1000, 2000, 4000, 8000, 16000, 9000 }, -- 1+2+4+8+16 = 31, then the 9 s left of 40
  },
  {
    name = "a 403 on the service principal lookup is not retried",
    routes = { { method = "GET", path = SP_BY_APPID, responses = { r(403, { error = { code = "Authorization_RequestDenied",
      message = "Insufficient privileges to complete the operation.", innerError = { ["request-id"] = "g-403" } } }) } } },
    call = function(g) return g:create_service_principal(APP_ID) end,
    err = { code = "Authorization_RequestDenied", status = 403, request_id = "g-403", tenant = H.T1 },
    sleeps = {},
  },
  {
    name = "federated credential upsert by name (201)",
    routes = { { method = "PATCH", path = FIC_UPSERT, require_headers = { prefer = "create-if-missing" },
                 responses = { r(201, { id = "fic-1", name = "storage-uami" }) } } },
    call = function(g) return g:upsert_federated_credential(APP_OBJ, "storage-uami", {
      issuer = "https://login.microsoftonline.com/" .. H.T1 .. "/v2.0", subject = "uami-principal", audiences = { "api://AzureADTokenExchange" } }) end,
    result = function(fic, created) assert.equals("fic-1", fic.id) assert.is_true(created) end,
    check = function(calls)
      local body = json.decode(calls[1].body)
      assert.equals("storage-uami", body.name)
      assert.equals("uami-principal", body.subject)
      assert.same({ "api://AzureADTokenExchange" }, body.audiences)
    end,
  },
  {
    name = "federated credential: upsert form refused (405), fallback lists by name then POSTs",
    routes = {
      { method = "PATCH", path = FIC_UPSERT, responses = { r(405, { error = { code = "Request_BadRequest", message = "not allowed" } }) } },
      { method = "GET", path = FICS, responses = { r(200, { value = json.array {} }) } },
      { method = "POST", path = FICS, responses = { r(201, { id = "fic-2", name = "storage-uami" }) } },
    },
    call = function(g) return g:upsert_federated_credential(APP_OBJ, "storage-uami", { issuer = "i", subject = "s", audiences = { "a" } }) end,
    result = function(fic, created) assert.equals("fic-2", fic.id) assert.is_true(created) end,
    sequence = { "PATCH " .. FIC_UPSERT, "GET " .. FICS, "POST " .. FICS },
    check = function(calls)
      assert.equals("$filter=name%20eq%20%27storage-uami%27", calls[2].query)
      assert.equals("storage-uami", json.decode(calls[3].body).name)
    end,
  },
  {
    name = "federated credential: fallback finds the existing one and PATCHes it by id",
    routes = {
      { method = "PATCH", path = FIC_UPSERT, responses = { r(404, { error = { code = "Request_ResourceNotFound", message = "x" } }) } },
      { method = "GET", path = FICS, responses = { r(200, { value = { { id = "fic-3", name = "storage-uami" } } }) } },
      { method = "PATCH", path = FICS .. "/fic-3", responses = { r(204) } },
      { method = "GET", path = FICS .. "/fic-3", responses = { r(200, { id = "fic-3", name = "storage-uami", subject = "s2" }) } },
    },
    call = function(g) return g:upsert_federated_credential(APP_OBJ, "storage-uami", { issuer = "i", subject = "s2", audiences = { "a" } }) end,
    result = function(fic, created) assert.equals("s2", fic.subject) assert.is_false(created) end,
    sequence = { "PATCH " .. FIC_UPSERT, "GET " .. FICS, "PATCH " .. FICS .. "/fic-3", "GET " .. FICS .. "/fic-3" },
    check = function(calls) assert.is_nil(json.decode(calls[3].body).name) end, -- name is immutable
  },
}

local function check_err(want, err)
  assert.is_table(err, "an error was expected")
  for k, v in pairs(want) do
    if k == "message_has" then
      for _, s in ipairs(v) do assert.truthy(tostring(err.message):find(s, 1, true), "message: " .. tostring(err.message)) end
    else
      assert.equals(v, err[k], "field " .. k)
    end
  end
end

describe("graph find-or-create (" .. H.mode .. ")", function()
  for _, case in ipairs(CASES) do
    it(case.name, function()
      local env = H.start(case.routes)
      local ok, e = pcall(function()
        local res, err, created = env.run(function() return case.call(env.graph) end)
        if case.err then
          assert.is_nil(res)
          check_err(case.err, err)
        else
          assert.is_nil(err, tostring(err))
          case.result(res, created)
        end
        if case.sleeps then assert.same(case.sleeps, env.sleeps) end
        if case.sequence then assert.same(case.sequence, sequence(env)) end
        local calls = env.calls()
        for _, c in ipairs(calls) do assert.equals("Bearer tok-" .. H.T1 .. "-graph", c.authorization) end
        if case.check then case.check(calls) end
      end)
      env.stop()
      if not ok then error(e, 0) end
    end)
  end
end)

describe("graph:list (" .. H.mode .. ")", function()
  it("follows @odata.nextLink across pages, including an empty one", function()
    local base = "https://graph.microsoft.com/v1.0/applications"
    local env = H.start {
      { method = "GET", path = "/v1.0/applications", responses = {
        r(200, { value = { { id = "a1" } }, ["@odata.nextLink"] = base .. "?$skiptoken=p2" }),
        r(200, { value = json.array {}, ["@odata.nextLink"] = base .. "?$skiptoken=p3" }),
        r(200, { value = { { id = "a2" }, { id = "a3" } } }) } },
    }
    local items, err = env.run(function() return env.graph:list("/applications") end)
    local calls = env.calls()
    env.stop()
    assert.is_nil(err)
    local ids = {}
    for _, a in ipairs(items) do ids[#ids + 1] = a.id end
    assert.same({ "a1", "a2", "a3" }, ids)
    assert.same({ "", "$skiptoken=p2", "$skiptoken=p3" }, { calls[1].query, calls[2].query, calls[3].query })
  end)

  it("refuses a nextLink that leaves Graph", function()
    local env = H.start { { method = "GET", path = "/v1.0/applications", responses = {
      r(200, { value = { { id = "a1" } }, ["@odata.nextLink"] = "https://evil.example.com/steal" }) } } }
    local items, err = env.run(function() return env.graph:list("/applications") end)
    env.stop()
    assert.is_nil(items)
    assert.equals("UntrustedLink", err.code)
  end)
end)

describe("graph OData literals", function()
  local CASES_ODATA = {
    { "plain", "'plain'" },
    { "o'brien", "'o''brien'" },
    { "a b", "'a%20b'" },
    { "x/y", "'x%2Fy'" },
  }
  for _, c in ipairs(CASES_ODATA) do
    it(c[1], function() assert.equals(c[2], graphmod.odata_string(c[1])) end)
  end

  it("a quote in a uniqueName reaches Graph doubled (" .. H.mode .. ")", function()
    local env = H.start { { method = "PATCH", path = "/v1.0/applications(uniqueName='o''brien app')",
                           responses = { r(201, { id = APP_OBJ }) } } }
    local app, err = env.run(function() return env.graph:find_or_create_application("o'brien app", { displayName = "x" }) end)
    env.stop()
    assert.is_nil(err, tostring(err))
    assert.equals(APP_OBJ, app.id)
  end)

  it("rejects a bad appId and a bad federated credential name before any request", function()
    local g = graphmod.new { http = {}, cloud = "azure" }
    local ok, e = pcall(g.create_service_principal, g, "not-a-guid")
    assert.is_false(ok)
    assert.truthy(tostring(e):find("appId 'not-a-guid' is invalid", 1, true))
    ok, e = pcall(g.upsert_federated_credential, g, APP_OBJ, "no spaces allowed", {})
    assert.is_false(ok)
    assert.truthy(tostring(e):find("federated credential name", 1, true))
  end)
end)
