-- Configuration files: evaluated in a throwaway Lua state; contexts come back with credentials
-- built in C, every other field copied, secrets nowhere in the caller's state.
local core = require "cmkflow.core"
local files = require "support.files"

local ROUTING = function(cloud)
  return { authority = "https://login.microsoftonline.com", ca_file = type(cloud) == "table" and cloud.ca_cert or nil }
end

local function write_config(text)
  local path = files.tmpdir() .. "/cmkflow.lua"
  files.write(path, text)
  return path
end

local SECRET = "cAnArY-config-secret-" .. core.crypto.sha256_hex(tostring(os.time())):sub(1, 12)

local function contains(value, needle, seen)
  seen = seen or {}
  if type(value) == "string" then return value:find(needle, 1, true) ~= nil end
  if type(value) ~= "table" or seen[value] then return false end
  seen[value] = true
  for k, v in pairs(value) do
    if contains(k, needle, seen) or contains(v, needle, seen) then return true end
  end
  return false
end

describe("config files", function()
  it("returns the cloud, contexts with C credentials, and the policy path", function()
    local path = write_config(([[
      return {
        cloud = { emulator = "https://127.0.0.1:8443", ca_cert = "ca.pem" },
        isv = { tenant = "11111111-2222-4333-8444-555555555555", subscription = "22222222-2222-4333-8444-555555555555",
                location = "westeurope", tags = { team = "platform" },
                credential = { client_id = "0a1b2c3d-0000-4000-8000-000000000001", client_secret = %q } },
        customer = { tenant = "customer.example", credential = { client_id = "0a1b2c3d-0000-4000-8000-000000000002",
                     client_secret = "another" } },
        policy = "policy.lua",
      }]]):format(SECRET))
    local cfg = core.config.load(path, ROUTING)
    assert.equals(path, cfg.path)
    assert.equals("https://127.0.0.1:8443", cfg.cloud.emulator)
    assert.equals("policy.lua", cfg.policy)
    local isv = cfg.contexts.isv
    assert.equals("22222222-2222-4333-8444-555555555555", isv.subscription)
    assert.equals("westeurope", isv.location)
    assert.equals("platform", isv.tags.team)
    local d = isv.credential:describe()
    assert.equals("client_secret", d.kind)
    assert.equals("11111111-2222-4333-8444-555555555555", d.tenant)   -- from the context
    assert.equals("0a1b2c3d-0000-4000-8000-000000000001", d.client_id)
    assert.equals("customer.example", cfg.contexts.customer.credential:describe().tenant)
    assert.is_false(contains(cfg, SECRET))
    collectgarbage()
    assert.is_false(contains(debug.getregistry(), SECRET))
  end)

  local bad = {
    { "a syntax error", "return {", "unexpected symbol" },
    { "a non-table result", "return 42", "the file must return a table" },
    { "a bad cloud", "return { cloud = 7 }", "field 'cloud' must be" },
    { "a non-GUID client id", [[return { isv = { tenant = "11111111-2222-4333-8444-555555555555",
        credential = { client_id = "app", client_secret = "x" } } }]], "context 'isv': credential: field 'client_id' must be a GUID" },
    { "a missing secret", [[return { isv = { tenant = "11111111-2222-4333-8444-555555555555",
        credential = { client_id = "0a1b2c3d-0000-4000-8000-000000000001", client_secret = os.getenv("CMKFLOW_SPEC_UNSET") } } }]],
      "field 'isv.credential' has a client_id but no client_secret" },
    { "a secret outside the credential", [[return { isv = { client_secret = "x" } }]],
      "field 'isv.client_secret' belongs inside 'isv.credential'" },
    -- found by fuzz/config.lua: a misspelt credential table was copied, secret and all, as a plain field
    { "a secret in a misspelt credential table", [[return { isv = { credentials = {
        client_id = "0a1b2c3d-0000-4000-8000-000000000001", client_secret = "x" } } }]],
      "field 'isv.credentials.client_secret' is a secret: it belongs inside a context's 'credential' table" },
    { "a secret nested in the cloud", [[return { cloud = { emulator = "https://127.0.0.1:1", auth = { { certificate_password = "x" } } } }]],
      "field 'cloud.auth[1].certificate_password' is a secret" },
    { "a non-table context", [[return { customer = "contoso" }]], "field 'customer' must be a table" },
    { "a customers map that is not a table", [[return { customers = "x" }]], "field 'customers' must be a table" },
    { "a customers entry keyed by a number", [[return { customers = { { subscription = "x" } } }]],
      "field 'customers' must be keyed by tenant ids or domains" },
    { "a secret beside a customer tenant's credential", [[return { customers = { ["c.example"] = { client_secret = "x" } } }]],
      [[field 'customers["c.example"].client_secret' belongs inside 'customers["c.example"].credential']] },
    { "a customer tenant's bad credential", [[return { customers = { ["c.example"] = {
        credential = { client_id = "app", client_secret = "x" } } } }]],
      [[context 'customers["c.example"]': credential: field 'client_id' must be a GUID]] },
    { "a secret of the wrong type", [[return { isv = { credential = { client_id = "0a1b2c3d-0000-4000-8000-000000000001",
        client_secret = 5 } } }]], "field 'isv.credential.client_secret' must be a string" },
  }
  for _, case in ipairs(bad) do
    it("names the file and the field for " .. case[1], function()
      local path = write_config(case[2])
      local ok, err = pcall(core.config.load, path, ROUTING)
      assert.is_false(ok)
      assert.matches("config " .. path, tostring(err), 1, true)
      assert.matches(case[3], tostring(err), 1, true)
    end)
  end

  it("keeps a context per customer tenant, its key the tenant unless it names one, secrets in C", function()
    local path = write_config(([[
      return {
        isv = { tenant = "11111111-2222-4333-8444-555555555555",
                credential = { client_id = "0a1b2c3d-0000-4000-8000-000000000001", client_secret = "isv" } },
        customers = {
          ["33333333-2222-4333-8444-555555555555"] = { subscription = "44444444-2222-4333-8444-555555555555",
            credential = { client_id = "0a1b2c3d-0000-4000-8000-000000000003", client_secret = %q } },
          ["test.example"] = { tenant = "55555555-2222-4333-8444-555555555555",
            credential = { client_id = "0a1b2c3d-0000-4000-8000-000000000004", client_secret = "other" } },
        },
      }]]):format(SECRET))
    local cfg = core.config.load(path, ROUTING)
    local one = cfg.customers["33333333-2222-4333-8444-555555555555"]
    assert.equals("33333333-2222-4333-8444-555555555555", one.tenant)
    assert.equals("44444444-2222-4333-8444-555555555555", one.subscription)
    assert.equals("33333333-2222-4333-8444-555555555555", one.credential:describe().tenant)
    assert.equals("55555555-2222-4333-8444-555555555555", cfg.customers["test.example"].credential:describe().tenant)
    assert.is_nil(cfg.contexts.customer)
    assert.is_false(contains(cfg, SECRET))
  end)

  it("refuses a file that does not exist", function()
    local ok, err = pcall(core.config.load, "/nonexistent/cmkflow.lua", ROUTING)
    assert.is_false(ok)
    assert.matches("config /nonexistent/cmkflow.lua: cannot open", tostring(err), 1, true)
  end)
end)
