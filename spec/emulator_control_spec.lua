-- The emulator's test knobs (/_emulator/…), each shown through our own clients: fault rules
-- (status with count and our retries, dropped connections, latency, probability), ARM throttling,
-- the clock, eventual-consistency delays, snapshot/restore, reset, the journal, seed knobs and
-- --state persistence.
local core = require "cmkflow.core"
local json = core.json
local http = require "cmkflow.http"
local async = require "cmkflow.async"
local support = require "support.emulator"
local demo_seed = require "cmkflow.emulator.demo_seed"

local ISV_SUB = demo_seed.tenants[1].subscriptions[1].id
local ISV_TENANT = demo_seed.tenants[1].id
local SUB_API = "?api-version=2022-12-01"
local RG_API = "?api-version=2021-04-01"

local function copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = copy(v) end
  return c
end

describe("emulator control", function()
  local emu, ctx, cred, raw

  setup(function()
    emu = support.start { knobs = false } -- the knobs and their defaults are under test here
    ctx = emu:context("isv")
    cred = emu:credential("isv")
    -- no retries: what the emulator answers, as it answers it
    raw = http.new { ca_file = emu.ca_file, connect_to = emu.cloud.connect_to, retry = { max_attempts = 1 } }
  end)
  teardown(function() emu:stop() end)
  before_each(function()
    assert.equal(200, emu:control("POST", "/_emulator/reset").status)
    assert.equal(204, emu:control("DELETE", "/_emulator/journal").status)
  end)

  local function control(method, path, body)
    local resp = assert(emu:control(method, path, body))
    return resp, resp.body ~= "" and json.decode(resp.body) or nil
  end

  local function journal(service)
    local _, doc = control("GET", "/_emulator/journal" .. (service and ("?service=" .. service) or ""))
    return doc.value
  end

  local function arm_get(path, client)
    return (client or raw):request { method = "GET", url = "https://management.azure.com" .. path, credential = cred,
      scope = emu.cloud.arm_scope }
  end

  it("answers health", function()
    local resp, doc = control("GET", "/_emulator/health")
    assert.equal(200, resp.status)
    assert.equal("ok", doc.status)
    assert.equal(2, doc.tenants)
  end)

  describe("faults", function()
    it("a 503 with count 2 is retried by our http layer, which succeeds on the third attempt", function()
      local resp, doc = control("POST", "/_emulator/faults", { match = { operation = "arm", method = "GET" }, status = 503, count = 2 })
      assert.equal(201, resp.status)
      local res = ctx.arm:request("GET", "/subscriptions", { api_version = "2022-12-01" })
      assert.equal(200, res.status)
      assert.equal(3, res.attempts)
      local arm = journal("arm")
      assert.equal(3, #arm)
      assert.same({ 503, 503, 200 }, { arm[1].status, arm[2].status, arm[3].status })
      assert.equal(doc.id, arm[1].fault)
      assert.equal(doc.id, arm[2].fault)
      assert.is_nil(arm[3].fault)
      local _, rule = control("GET", "/_emulator/faults/" .. doc.id)
      assert.equal(2, rule.fired)
      assert.equal(0, rule.count)
    end)

    it("an injected status carries the service's error envelope and the rule's headers and body", function()
      control("POST", "/_emulator/faults", { match = { operation = "graph" }, status = 500, count = 1 })
      control("POST", "/_emulator/faults", { match = { path = "^/subscriptions/[^/]+$" }, status = 409,
        headers = { ["X-Custom"] = "yes" }, body = { error = { code = "Custom", message = "m" } } })
      local g = raw:request { method = "GET", url = "https://graph.microsoft.com/v1.0/applications" }
      assert.equal(500, g.status)
      assert.equal("InternalServerError", json.decode(g.body).error.code)
      assert.is_string(json.decode(g.body).error.innerError["request-id"])
      local a = arm_get("/subscriptions/" .. ISV_SUB .. SUB_API)
      assert.equal(409, a.status)
      assert.equal("yes", a.headers["x-custom"])
      assert.equal("Custom", json.decode(a.body).error.code)
      -- the prefix/pattern did not match the list
      assert.equal(200, arm_get("/subscriptions" .. SUB_API).status)
    end)

    it("drop closes the connection: our client retries it, and the journal records it", function()
      control("POST", "/_emulator/faults", { match = { operation = "arm" }, drop = true, count = 1 })
      local res = ctx.arm:request("GET", "/subscriptions", { api_version = "2022-12-01" })
      assert.equal(200, res.status)
      -- a dropped keep-alive connection is retried by libcurl itself or by our retry loop
      assert.is_true(res.attempts <= 2)
      local arm = journal("arm")
      assert.equal(2, #arm)
      assert.is_true(arm[1].dropped)
      assert.equal(json.null, arm[1].status)
      assert.equal(200, arm[2].status)
    end)

    it("a dropped connection every time is a ConnectionFailed error", function()
      control("POST", "/_emulator/faults", { match = { operation = "arm" }, drop = true })
      local res, err = arm_get("/subscriptions" .. SUB_API)
      assert.is_nil(res)
      assert.matches("ConnectionFailed", tostring(err and err.code or err))
    end)

    it("latency delays the answer: a request sent after the delayed one was handled completes first", function()
      assert.equal(200, arm_get("/subscriptions" .. SUB_API).status) -- token fetched, connection warm
      control("POST", "/_emulator/faults", { match = { path = "^/subscriptions$" }, latency_ms = 3000 })
      local order = {}
      async.all {
        function()
          local r = arm_get("/subscriptions" .. SUB_API, emu.http)
          order[#order + 1] = { "slow", r.status }
        end,
        function()
          -- wait (bounded) until the emulator has handled the slow request, then send a quick one
          for _ = 1, 200 do
            local j = emu.http:request { method = "GET", url = emu.url .. "/_emulator/journal?service=arm" }
            local seen = false
            for _, e in ipairs(json.decode(j.body).value) do
              if e.delay_ms == 3000 then seen = true end
            end
            if seen then break end
            async.sleep(10)
          end
          local r = arm_get("/subscriptions/" .. ISV_SUB .. SUB_API, emu.http)
          order[#order + 1] = { "quick", r.status }
        end,
      }
      assert.same({ { "quick", 200 }, { "slow", 200 } }, order)
      local arm = journal("arm")
      assert.equal(3, #arm)
      assert.equal("/subscriptions", arm[2].path)   -- handled first ...
      assert.equal(3000, arm[2].delay_ms)
      assert.equal("/subscriptions/" .. ISV_SUB, arm[3].path) -- ... answered last
      assert.is_nil(arm[3].delay_ms)
    end)

    it("probability 1 always fires, 0 never, and a fraction draws the same sequence for the same random_seed", function()
      local _, one = control("POST", "/_emulator/faults", { match = { operation = "arm" }, status = 418, probability = 1 })
      for _ = 1, 3 do assert.equal(418, arm_get("/subscriptions" .. SUB_API).status) end
      control("DELETE", "/_emulator/faults/" .. one.id)
      local _, zero = control("POST", "/_emulator/faults", { match = { operation = "arm" }, status = 418, probability = 0 })
      for _ = 1, 3 do assert.equal(200, arm_get("/subscriptions" .. SUB_API).status) end
      local _, rule = control("GET", "/_emulator/faults/" .. zero.id)
      assert.equal(0, rule.fired)
      local function draws()
        control("POST", "/_emulator/reset")
        control("POST", "/_emulator/faults", { match = { operation = "arm" }, status = 418, probability = 0.5 })
        local seq = {}
        for i = 1, 16 do seq[i] = arm_get("/subscriptions" .. SUB_API).status end
        return table.concat(seq, ",")
      end
      local first = draws()
      assert.matches("418", first)
      assert.matches("200", first)
      assert.equal(first, draws())
    end)

    it("after = N lets the first N matching requests through, then fires (non-matching ones don't count)", function()
      local _, rule = control("POST", "/_emulator/faults", { match = { operation = "arm", path = "/subscriptions$" },
        status = 418, after = 2, count = 1 })
      local _, listed = control("GET", "/_emulator/faults/" .. rule.id)
      assert.equal(2, listed.after)
      local statuses = {}
      for i = 1, 4 do
        -- a request the rule does not match between each: it must not use up the allowance
        assert.equal(200, arm_get("/subscriptions/" .. ISV_SUB .. SUB_API).status)
        statuses[i] = arm_get("/subscriptions" .. SUB_API).status
      end
      assert.same({ 200, 200, 418, 200 }, statuses)
      _, listed = control("GET", "/_emulator/faults/" .. rule.id)
      assert.same({ 0, 1, 0 }, { listed.after, listed.fired, listed.count })
      local resp, doc = control("POST", "/_emulator/faults", { status = 500, after = -1 })
      assert.equal(400, resp.status)
      assert.matches("fault.after must be an integer >= 0", doc.error.message)
    end)

    it("rejects a bad rule naming the field, and lists and deletes rules", function()
      local resp, doc = control("POST", "/_emulator/faults", { match = { operation = "storage" }, status = 500 })
      assert.equal(400, resp.status)
      assert.matches("fault.match.operation", doc.error.message)
      resp, doc = control("POST", "/_emulator/faults", { status = 99 })
      assert.equal(400, resp.status)
      assert.matches("fault.status", doc.error.message)
      resp, doc = control("POST", "/_emulator/faults", { match = { method = "GET" } })
      assert.equal(400, resp.status)
      assert.matches("status, drop or latency_ms", doc.error.message)
      local _, a = control("POST", "/_emulator/faults", { status = 500, count = 1 })
      local _, b = control("POST", "/_emulator/faults", { status = 502 })
      local _, list = control("GET", "/_emulator/faults")
      assert.same({ a.id, b.id }, { list.value[1].id, list.value[2].id })
      assert.equal(204, control("DELETE", "/_emulator/faults/" .. a.id).status)
      assert.equal(404, control("GET", "/_emulator/faults/" .. a.id).status)
      assert.equal(204, control("DELETE", "/_emulator/faults").status)
      _, list = control("GET", "/_emulator/faults")
      assert.equal(0, #list.value)
    end)
  end)

  describe("throttling", function()
    it("answers 429 with Retry-After once a bucket is empty, with remaining counts on every ARM response", function()
      local resp = control("PUT", "/_emulator/throttling", { arm = { reads_per_minute = 3, writes_per_minute = 2 } })
      assert.equal(200, resp.status)
      local remaining = {}
      for i = 1, 3 do
        local r = arm_get("/subscriptions/" .. ISV_SUB .. SUB_API)
        assert.equal(200, r.status)
        remaining[i] = r.headers["x-ms-ratelimit-remaining-subscription-reads"]
      end
      assert.same({ "2", "1", "0" }, remaining)
      local r = arm_get("/subscriptions/" .. ISV_SUB .. SUB_API)
      assert.equal(429, r.status)
      assert.equal("SubscriptionRequestsThrottled", json.decode(r.body).error.code)
      local wait = tonumber(r.headers["retry-after"])
      assert.is_true(wait >= 1 and wait <= 20)
      -- writes have their own bucket
      local w = raw:request { method = "PUT", url = "https://management.azure.com/subscriptions/" .. ISV_SUB
        .. "/resourcegroups/rg-throttle" .. RG_API, json = { location = "westeurope" }, credential = cred,
        scope = emu.cloud.arm_scope }
      assert.is_true(w.status == 200 or w.status == 201)
      assert.equal("1", w.headers["x-ms-ratelimit-remaining-subscription-writes"])
      -- the emulator's clock refills the bucket
      control("POST", "/_emulator/clock", { advance_seconds = 60 })
      r = arm_get("/subscriptions/" .. ISV_SUB .. SUB_API)
      assert.equal(200, r.status)
      assert.equal("2", r.headers["x-ms-ratelimit-remaining-subscription-reads"])
      assert.equal(true, journal("arm")[4].throttled)
    end)

    it("rejects a bad configuration", function()
      local resp, doc = control("PUT", "/_emulator/throttling", { arm = { reads_per_minute = 0 } })
      assert.equal(400, resp.status)
      assert.matches("throttling.arm.reads_per_minute", doc.error.message)
    end)
  end)

  describe("clock", function()
    it("advancing past a token's expiry makes ARM refuse it with 401", function()
      local pr = emu:principal("isv")
      local tok = raw:request { method = "POST", url = "https://login.microsoftonline.com/" .. ISV_TENANT .. "/oauth2/v2.0/token",
        headers = { ["content-type"] = "application/x-www-form-urlencoded" },
        body = "grant_type=client_credentials&client_id=" .. pr.appId .. "&client_secret=" .. pr.secret
          .. "&scope=https%3A%2F%2Fmanagement.azure.com%2F.default" }
      assert.equal(200, tok.status)
      local token = json.decode(tok.body).access_token
      local function get()
        return raw:request { method = "GET", url = "https://management.azure.com/subscriptions" .. SUB_API,
          headers = { authorization = "Bearer " .. token } }
      end
      assert.equal(200, get().status)
      local _, before = control("GET", "/_emulator/clock")
      local resp, after = control("POST", "/_emulator/clock", { advance_seconds = 7200 })
      assert.equal(200, resp.status)
      assert.equal(before.epoch + 7200, after.epoch)
      local r = get()
      assert.equal(401, r.status)
      assert.equal("ExpiredAuthenticationToken", json.decode(r.body).error.code)
      assert.equal(400, control("POST", "/_emulator/clock", { advance_seconds = -5 }).status)
    end)
  end)

  describe("delays", function()
    it("a service principal stays invisible until the clock passes its delay", function()
      local resp, d = control("PUT", "/_emulator/delays", { service_principal = 30 })
      assert.equal(200, resp.status)
      assert.equal(30, d.service_principal)
      local isv_graph = emu:context("isv").graph
      local app = isv_graph:post("/applications", { displayName = "delayed-app", signInAudience = "AzureADMultipleOrgs" })
      local app_id = (app.json or app).appId or json.decode(app.body).appId
      assert.is_string(app_id)
      local ccred = emu:credential("customer")
      local function sp_status()
        return raw:request { method = "GET", url = "https://graph.microsoft.com/v1.0/servicePrincipals(appId='" .. app_id .. "')",
          credential = ccred, scope = emu.cloud.graph_scope }.status
      end
      local created = raw:request { method = "POST", url = "https://graph.microsoft.com/v1.0/servicePrincipals",
        json = { appId = app_id }, credential = ccred, scope = emu.cloud.graph_scope }
      assert.equal(201, created.status)
      assert.equal(404, sp_status())
      control("POST", "/_emulator/clock", { advance_seconds = 31 })
      assert.equal(200, sp_status())
      local bad, doc = control("PUT", "/_emulator/delays", { service_principals = 1 })
      assert.equal(400, bad.status)
      assert.matches("unknown field 'service_principals'", doc.error.message)
    end)
  end)

  describe("scalar knobs", function()
    local function create_account(name)
      local rg = "/subscriptions/" .. ISV_SUB .. "/resourceGroups/knobs-rg"
      local put = function(path, api, body)
        return assert(raw:request { method = "PUT", url = "https://management.azure.com" .. path .. "?api-version=" .. api,
          credential = cred, scope = emu.cloud.arm_scope, json = body })
      end
      assert.equal(2, put(rg, "2021-04-01", { location = "westeurope" }).status // 100)
      return put(rg .. "/providers/Microsoft.Storage/storageAccounts/" .. name, "2023-01-01",
        { location = "westeurope", kind = "StorageV2", sku = { name = "Standard_LRS" } })
    end

    it("lro_retry_after_s set with PUT /_emulator/knobs is the Retry-After of a storage account create", function()
      local resp, doc = control("GET", "/_emulator/knobs")
      assert.equal(200, resp.status)
      assert.same({ lro_retry_after_s = 1, key_material = "unique", profile = "instant" }, doc)
      resp, doc = control("PUT", "/_emulator/knobs", { lro_retry_after_s = 7 })
      assert.equal(200, resp.status)
      assert.same({ lro_retry_after_s = 7, key_material = "unique", profile = "instant" }, doc)
      local created = create_account("knobsacct7")
      assert.equal(202, created.status)
      assert.equal("7", created.headers["retry-after"])
      control("PUT", "/_emulator/knobs", { lro_retry_after_s = 0 })
      created = create_account("knobsacct0")
      assert.equal(202, created.status)
      assert.equal("0", created.headers["retry-after"])
      -- reset brings back the seed's value
      control("POST", "/_emulator/reset")
      assert.equal(1, select(2, control("GET", "/_emulator/knobs")).lro_retry_after_s)
    end)

    it("rejects a bad value naming the field and leaves the knobs as they were", function()
      local cases = {
        { { lro_retry_after_s = -1 }, "knobs.lro_retry_after_s must be an integer number of seconds from 0 to 600" },
        { { lro_retry_after_s = 601 }, "knobs.lro_retry_after_s must be an integer number of seconds from 0 to 600" },
        { { lro_retry_after_s = 1.5 }, "knobs.lro_retry_after_s must be an integer number of seconds from 0 to 600" },
        { { key_material = "shared" }, 'knobs.key_material must be "unique" or "pooled" (got shared)' },
        { { delays = {} }, "knobs has an unknown field 'delays'" },
      }
      for _, c in ipairs(cases) do
        local resp, doc = control("PUT", "/_emulator/knobs", c[1])
        assert.equal(400, resp.status)
        assert.equal(c[2], doc.error.message)
      end
      assert.same({ lro_retry_after_s = 1, key_material = "unique", profile = "instant" }, select(2, control("GET", "/_emulator/knobs")))
      assert.equal(405, control("POST", "/_emulator/knobs", {}).status)
    end)
  end)

  describe("snapshot, restore and reset", function()
    local function rg_status(name)
      return arm_get("/subscriptions/" .. ISV_SUB .. "/resourcegroups/" .. name .. RG_API).status
    end
    local function put_rg(name)
      local r = raw:request { method = "PUT", url = "https://management.azure.com/subscriptions/" .. ISV_SUB
        .. "/resourcegroups/" .. name .. RG_API, json = { location = "westeurope" }, credential = cred,
        scope = emu.cloud.arm_scope }
      assert.is_true(r.status == 200 or r.status == 201, r.body)
    end

    it("restore brings back the world of the snapshot, any number of times", function()
      put_rg("rg-before")
      local resp, snap = control("POST", "/_emulator/snapshot")
      assert.equal(200, resp.status)
      put_rg("rg-after")
      assert.equal(200, rg_status("rg-after"))
      assert.equal(200, control("POST", "/_emulator/restore", { id = snap.id }).status)
      assert.equal(404, rg_status("rg-after"))
      assert.equal(200, rg_status("rg-before"))
      put_rg("rg-after")
      assert.equal(200, control("POST", "/_emulator/restore", { id = snap.id }).status)
      assert.equal(404, rg_status("rg-after"))
      assert.equal(404, control("POST", "/_emulator/restore", { id = "snapshot-999" }).status)
    end)

    it("reset goes back to the seed: resources, clock and knobs", function()
      local initial = emu:state()
      put_rg("rg-reset")
      control("POST", "/_emulator/clock", { advance_seconds = 86400 })
      control("PUT", "/_emulator/delays", { role_assignment = 10 })
      control("POST", "/_emulator/faults", { match = { path = "^/nothing$" }, status = 500 })
      assert.equal(200, control("POST", "/_emulator/reset").status)
      assert.equal(404, rg_status("rg-reset"))
      local _, faults = control("GET", "/_emulator/faults")
      assert.equal(0, #faults.value)
      local _, delays = control("GET", "/_emulator/delays")
      assert.equal(0, delays.role_assignment)
      local _, clock = control("GET", "/_emulator/clock")
      assert.equal(0, clock.offset_seconds)
      local now = emu:state()
      local function ids(doc)
        local out = {}
        for _, t in ipairs(doc.tenants) do
          for _, k in ipairs({ "applications", "service_principals", "federated_credentials", "resources", "role_assignments" }) do
            for _, o in ipairs(t[k]) do out[#out + 1] = t.name .. ":" .. k .. ":" .. tostring(o.id) end
          end
        end
        return out
      end
      assert.same(ids(initial), ids(now))
      assert.is_true(#ids(now) >= 6)
    end)
  end)

  describe("journal", function()
    it("records method, host, path, query, service, status and client request id, never credentials", function()
      local pr = emu:principal("isv")
      local fresh = emu:context("isv") -- a new credential: its token request is journaled too
      local res = fresh.arm:request("GET", "/subscriptions", { api_version = "2022-12-01" })
      assert.equal(200, res.status)
      local resp = emu.http:request { method = "GET", url = emu.url .. "/_emulator/journal" }
      local entries = json.decode(resp.body).value
      assert.equal(2, #entries)
      assert.equal("entra", entries[1].service)
      assert.equal("POST", entries[1].method)
      local e = entries[2]
      assert.same({ "GET", "management.azure.com", "/subscriptions", "api-version=2022-12-01", "arm", 200 },
        { e.method, e.host, e.path, e.query, e.service, e.status })
      assert.equal(res.client_request_id, e.client_request_id)
      assert.equal(e.seq, entries[1].seq + 1)
      assert.is_nil(resp.body:lower():find("bearer", 1, true))
      assert.is_nil(resp.body:find("eyJ", 1, true))
      assert.is_nil(resp.body:find(pr.secret, 1, true))
      -- query secrets are redacted
      raw:request { method = "GET", url = "https://management.azure.com/subscriptions?sig=SECRETSIG&api-version=x" }
      local last = journal("arm")
      assert.equal("sig=REDACTED&api-version=x", last[#last].query)
      assert.equal(204, control("DELETE", "/_emulator/journal").status)
      assert.equal(0, #journal())
    end)
  end)
end)

describe("emulator knobs from the seed", function()
  it("applies seed.knobs at start and again on reset", function()
    local seed = copy(demo_seed)
    seed.knobs = { delays = { federated_credential = 12 }, faults = { { match = { operation = "arm" }, status = 503, count = 1 } },
                   throttling = { arm = { writes_per_minute = 5 } } }
    local emu = support.start { seed = seed, knobs = false }
    local ok, err = pcall(function()
      local function get(path) return json.decode(emu:control("GET", path).body) end
      assert.equal(12, get("/_emulator/delays").federated_credential)
      local faults = get("/_emulator/faults").value
      assert.equal(1, #faults)
      assert.equal(503, faults[1].status)
      assert.equal(5, get("/_emulator/throttling").arm.writes_per_minute)
      emu:control("DELETE", "/_emulator/faults")
      emu:control("POST", "/_emulator/reset")
      assert.equal(1, #get("/_emulator/faults").value)
    end)
    emu:stop()
    assert(ok, err)
  end)

  it("applies lro_retry_after_s and key_material from the seed", function()
    local seed = copy(demo_seed)
    seed.knobs = { lro_retry_after_s = 0, key_material = "pooled" }
    local emu = support.start { seed = seed, knobs = false }
    local ok, err = pcall(function()
      local doc = json.decode(emu:control("GET", "/_emulator/knobs").body)
      assert.same({ lro_retry_after_s = 0, key_material = "pooled", profile = "instant" }, doc)
      emu:control("PUT", "/_emulator/knobs", { lro_retry_after_s = 3, key_material = "unique" })
      emu:control("POST", "/_emulator/reset")
      doc = json.decode(emu:control("GET", "/_emulator/knobs").body)
      assert.same({ lro_retry_after_s = 0, key_material = "pooled", profile = "instant" }, doc)
    end)
    emu:stop()
    assert(ok, err)
  end)

  it("refuses invalid knobs naming the field", function()
    local state = require "cmkflow.emulator.state"
    local seed = copy(demo_seed)
    seed.knobs = { faults = { { match = { operation = "arm" }, status = 503, count = 0 } } }
    local ok, err = pcall(state.validate_seed, seed)
    assert.is_false(ok)
    assert.equal("seed: knobs.faults[1].count must be an integer >= 1", err)
    seed.knobs = { delays = { role_assignment = -1 } }
    ok, err = pcall(state.validate_seed, seed)
    assert.is_false(ok)
    assert.equal("seed: knobs.delays.role_assignment must be a number of seconds >= 0", err)
    seed.knobs = { jitter = true }
    ok, err = pcall(state.validate_seed, seed)
    assert.is_false(ok)
    assert.matches("knobs has an unknown field 'jitter'", err)
  end)

  -- found by fuzz/seed.lua: these raised Lua errors ("attempt to index a number value") or loaded a
  -- state that then failed every save
  local T = '{"id": "11111111-2222-4333-8444-555555555555", "name": "a"'
  local P = '{"name": "p", "appId": "0a1b2c3d-0000-4000-8000-000000000001"'
  local malformed = {
    { '{"tenants": [1]}', "seed: tenants[1] must be an object" },
    { '{"tenants": [' .. T .. ', "subscriptions": [[]]}]}', "seed: tenants[1].subscriptions[1] must be an object" },
    { '{"tenants": [' .. T .. ', "principals": ["p"]}]}', "seed: tenants[1].principals[1] must be an object" },
    { '{"tenants": [' .. T .. ', "principals": [' .. P .. ', "roles": [true]}]}]}',
      "seed: tenants[1].principals[1].roles[1] must be an object" },
    { '{"tenants": [' .. T .. '}], "extra": ' .. ("["):rep(210) .. ("]"):rep(210) .. "}",
      "seed:  cannot be stored: nesting deeper than 200 levels at $.extra[0]" },
  }
  for _, case in ipairs(malformed) do
    it("refuses a malformed seed naming the field: " .. case[2]:sub(1, 60), function()
      local state = require "cmkflow.emulator.state"
      local ok, err = pcall(state.validate_seed, json.decode(case[1]))
      assert.is_false(ok)
      assert.equal(case[2], tostring(err):sub(1, #case[2]))
    end)
  end
end)

describe("emulator --state persistence", function()
  local files = require "support.files"
  it("saves the complete state (0600) after a change and loads it at the next start", function()
    local dir = files.tmpdir()
    local emulator = require "cmkflow.emulator"
    local function req(method, path, body)
      return { method = method, path = path, query = "", args = {}, headers = {}, body = body or "", host = "127.0.0.1" }
    end
    emulator.init({ seed = demo_seed, state_dir = dir })
    local st = emulator.state()
    local tenant = st:tenant("isv")
    local app = st:add_application(tenant, { displayName = "persisted-app" })
    local kid = tenant.kid
    -- as the server does (core/server.h, group commit): the answer is held, commit() writes
    local status, _, _, _, commit = emulator.handle(req("POST", "/_emulator/clock", '{"advance_seconds": 3600}'))
    assert.equal(200, status)
    assert.is_true(commit)
    assert.equal("not yet", files.read(dir .. "/state.json", "not yet"))
    assert.is_true(emulator.commit())
    local text = files.read(dir .. "/state.json")
    assert.is_string(text)
    assert.matches("BEGIN PRIVATE KEY", text)
    local mode = io.popen("stat -c %a '" .. dir .. "/state.json'"):read("l")
    assert.equal("600", mode)

    emulator.init({ seed = demo_seed, state_dir = dir })
    local st2 = emulator.state()
    assert.are_not.equal(st, st2)
    local t2 = st2:tenant("isv")
    assert.equal(kid, t2.kid)
    assert.equal("persisted-app", t2.applications[app.id].displayName)
    assert.equal(t2.applications[app.id], st2:application_by_appid(app.appId)) -- shared references survive
    assert.equal(3600, st2.clock_offset)
    local seed_app = st2:application_by_appid(demo_seed.tenants[1].principals[1].appId)
    assert.equal(core.crypto.sha256_hex(demo_seed.tenants[1].principals[1].secret), seed_app.passwordCredentials[1].secret_sha256)
    -- a token signed with the persisted key verifies with the loaded one
    local tok = require("cmkflow.emulator.tokens").issue(st, tenant, { aud = "https://management.azure.com" })
    assert.is_table(core.jose.verify(tok, t2.key))

    -- another seed: the file is ignored
    local other = copy(demo_seed)
    other.random_seed = 8
    emulator.init({ seed = other, state_dir = dir })
    assert.is_nil(emulator.state():tenant("isv").applications[app.id])
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)

describe("emulator key_material knob", function()
  -- in-process: a vault recorded the way the ARM provider records it, keys created on the data plane
  local emulator = require "cmkflow.emulator"
  local control = require "cmkflow.emulator.control"
  local control_api = require "cmkflow.emulator.control_api"
  local kv = require "cmkflow.emulator.keyvault"
  local key_store = require "cmkflow.emulator.keyvault_store"
  local tokens = require "cmkflow.emulator.tokens"

  local function world()
    local st = emulator.new_state {}
    control.init(st, {})
    local cust = st:tenant("customer")
    local sub = next(cust.subscriptions)
    local id = "/subscriptions/" .. sub .. "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kvpool"
    st.resources[id:lower()] = { id = id, type = "Microsoft.KeyVault/vaults", tenant = cust.id, subscription = sub,
      body = { id = id, name = "kvpool", type = "Microsoft.KeyVault/vaults", location = "westeurope", properties = {
        tenantId = cust.id, vaultUri = "https://kvpool.vault.azure.net/", enableSoftDelete = true,
        softDeleteRetentionInDays = 90, enablePurgeProtection = true, enableRbacAuthorization = true,
        sku = { family = "A", name = "standard" } } } }
    local admin = st:service_principal_by_appid(cust, "2b3c4d5e-0000-4000-8000-00000000c0d1")
    local token = tokens.issue(st, cust, { aud = "https://vault.azure.net", oid = admin.id, appid = admin.appId })
    local function call(method, path, body)
      local p, q = path:match("^([^?]*)%??(.*)$")
      local headers = { host = "kvpool.vault.azure.net", authorization = "Bearer " .. token }
      local status, _, b = kv.handle(st, { method = method, path = p, service_path = p, query = q,
        args = { ["api-version"] = "7.5" }, vault = "kvpool", host = "kvpool.vault.azure.net", port = 443,
        headers = headers, body = body and json.encode(body) or "" })
      return status, b ~= "" and json.decode(b) or nil
    end
    local function set(knobs)
      local status, _, b = control_api.handle(st, { method = "PUT", path = "/_emulator/knobs", headers = {},
        body = json.encode(knobs) })
      assert.equal(200, status, b)
      return json.decode(b)
    end
    return st, call, set
  end

  -- creates n keys; returns their JWK moduli and versions
  local function create(call, prefix, n)
    local moduli, versions = {}, {}
    for i = 1, n do
      local status, body = call("POST", "/keys/" .. prefix .. i .. "/create?api-version=7.5", { kty = "RSA", key_size = 2048 })
      assert.equal(200, status, body and body.error and body.error.message)
      moduli[i], versions[i] = body.key.n, body.key.kid:match("/(%x+)$")
    end
    return moduli, versions
  end

  it("pooled: keys reuse the pool round-robin (the key after the pool wraps shares n), unique: never", function()
    local _, call, set = world()
    assert.same({ lro_retry_after_s = 1, key_material = "pooled", profile = "instant" }, set { key_material = "pooled" })
    local P = key_store.POOLED_KEYS
    local moduli, versions = create(call, "pooled", P + 1)
    assert.equal(moduli[1], moduli[P + 1])
    assert.are_not.equal(moduli[1], moduli[2])
    assert.are_not.equal(versions[1], versions[P + 1])
    set { key_material = "unique" }
    local fresh = create(call, "unique", 2)
    assert.are_not.equal(fresh[1], fresh[2])
    for i = 1, P + 1 do assert.are_not.equal(moduli[i], fresh[1]) end
  end)
end)
