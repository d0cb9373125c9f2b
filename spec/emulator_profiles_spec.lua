-- Issue 10 point 8: the emulator's profiles. "instant" (the default) has no latency and no
-- visibility delays; "realistic" (seed `profile`, `cmkflow emulator --profile realistic`) draws
-- per-operation latency and Azure's replication delays from a generator seeded by random_seed.
local state_mod = require "cmkflow.emulator.state"
local control = require "cmkflow.emulator.control"
local profiles = require "cmkflow.emulator.profiles"
local ecli = require "cmkflow.emulator.cli"
local demo = require "cmkflow.emulator.demo_seed"

local function world(profile, random_seed)
  local seed = {}
  for k, v in pairs(demo) do seed[k] = v end
  seed.profile, seed.random_seed = profile, random_seed or 7
  local st = state_mod.new(seed)
  control.init(st, {})
  return st
end

local TOKEN_REQ = { method = "POST", path = "/t/oauth2/v2.0/token", service_path = "/t/oauth2/v2.0/token",
  host = "login.microsoftonline.com", headers = {} }

describe("emulator profiles", function()
  it("instant (the default): no latency and every visibility delay 0", function()
    for _, st in ipairs { world(nil), world("instant") } do
      assert.is_nil(st.knobs.latency)
      assert.are.equal(st:now(), st:visible_from("role_assignment"))
      assert.are.equal(st:now(), st:visible_from("vault_dns"))
      local _, _, _, _, delay = control.before(st, TOKEN_REQ, "entra")
      assert.is_nil(delay)
    end
  end)

  it("realistic: Azure-scale delays per object and latency per operation, the same for the same seed", function()
    local a, b, c = world("realistic", 7), world("realistic", 7), world("realistic", 8)
    local function draws(st)
      local out = {}
      for i = 1, 20 do out[i] = st:visible_from("role_assignment") - st:now() end
      return out
    end
    local da, db, dc = draws(a), draws(b), draws(c)
    assert.are.same(da, db)            -- seeded: runs repeat
    assert.are_not.same(da, dc)        -- another random_seed, other draws
    table.sort(da)
    assert.is_true(da[10] >= 5 and da[10] <= 300, "role assignments take effect after tens of seconds")
    assert.is_true(da[20] <= 600)      -- never past the documented 10 minutes
    assert.are.equal(17, a.knobs.lro_retry_after_s)
    local _, _, _, _, delay = control.before(a, TOKEN_REQ, "entra")
    assert.is_true(delay > 0 and delay <= 5000)
    local _, _, _, _, delay_b = control.before(b, TOKEN_REQ, "entra")
    assert.are.equal(delay, delay_b)
  end)

  it("journals the visibility delays a request drew, as milliseconds from its handling", function()
    local st = world("realistic", 7)
    local req = { method = "PUT", path = "/x", host = "management.azure.com", headers = {} }
    control.before(st, req, "arm")
    local at = st:visible_from("role_assignment") -- as the role assignment handler does
    control.after(st, req, "arm", 201, {}, nil)
    local plain = { method = "GET", path = "/x", host = "management.azure.com", headers = {} }
    control.before(st, plain, "arm")
    control.after(st, plain, "arm", 200, {}, nil)
    local j = control.journal(st)
    local ms = j[#j - 1].visible_in_ms.role_assignment
    -- the emulator's clock has whole seconds: the object is visible at `at`, within a second of the draw
    assert.is_true(ms > (at - st:now() - 1) * 1000 and ms <= (at - st:now()) * 1000, tostring(ms))
    assert.is_nil(j[#j].visible_in_ms) -- a request that drew nothing
  end)

  it("classifies the workflows' requests into the profile's operations", function()
    local cases = {
      { "arm", "PUT", "/subscriptions/s/resourcegroups/rg", "arm.resourceGroups.put" },
      { "arm", "PUT", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv", "arm.vault.put" },
      { "arm", "PUT", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/keys/k", "arm.key.put" },
      { "arm", "PATCH", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st", "arm.storage.patch" },
      { "arm", "GET", "/subscriptions/s", "arm.read" },
      { "graph", "POST", "/v1.0/servicePrincipals", "graph.servicePrincipals.create" },
      { "graph", "PATCH", "/v1.0/applications/x/federatedIdentityCredentials/y", "graph.fic.write" },
      { "keyvault", "POST", "/keys/k/create", "kv.keys.create" },
    }
    for _, c in ipairs(cases) do
      assert.are.equal(c[4], profiles.operation(c[1], { method = c[2], path = c[3] }), c[3])
    end
  end)

  it("cmkflow emulator --profile realistic serves the realistic knobs; without it, instant", function()
    local ext = require "support.external_emulator"
    local cli = require "support.cli"
    local real = ext.start { knobs = false, args = { "--profile", "realistic" } }
    local plain = ext.start { knobs = false }
    local ok, err = pcall(function()
      local s, delays = real:request("GET", "/_emulator/delays")
      assert.are.equal(200, s)
      for name, dist in pairs(profiles.REALISTIC.delays) do
        assert.are.same(dist, delays[name], name)
      end
      local _, k = real:request("GET", "/_emulator/knobs")
      assert.are.equal(profiles.REALISTIC.lro_retry_after_s, k.lro_retry_after_s)
      assert.are.equal("realistic", k.profile)
      local _, pk = plain:request("GET", "/_emulator/knobs")
      assert.are.equal("instant", pk.profile)
      local _, pd = plain:request("GET", "/_emulator/delays")
      assert.are.equal(0, pd.role_assignment)
      local r = cli.run { "emulator", "--listen", "127.0.0.1:0", "--profile", "slow" }
      assert.are.equal(2, r.code)
      assert.matches("profile", r.stderr, 1, true)
    end)
    real:stop()
    plain:stop()
    assert(ok, err)
  end)

  it("--profile realistic on the command line; an unknown profile is refused naming it", function()
    local knobs = assert(ecli.parse_knobs { profile = "realistic", delay = { "vault_dns=2" } })
    assert.are.equal("realistic", knobs.profile)
    local ok, err = pcall(state_mod.new, (function()
      local s = {} for k, v in pairs(demo) do s[k] = v end s.profile = "slow" return s end)())
    if ok then ok, err = pcall(control.init, err, {}) end
    assert.is_false(ok)
    assert.matches("seed: profile must be \"instant\" or \"realistic\"", err, 1, true)
  end)
end)
