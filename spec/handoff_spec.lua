-- onboard when the ISV has no credentials for the customer tenant: the run stops at the handoff
-- gate (exit 6); the customer runs customer-authorize in their tenant; the ISV approves the gate
-- with the customer's vault and key and resumes to the encrypted storage account.
local json = require("cmkflow.core").json
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"

describe("the customer handoff", function()
  local emu, dir

  setup(function()
    emu = ext.start {}
    dir = files.tmpdir()
    emu:config { path = dir .. "/isv.lua", contexts = { "isv" } }
    emu:config { path = dir .. "/customer.lua", contexts = { "customer" } }
  end)
  teardown(function() if emu then emu:stop() end end)

  it("waits at the gate, then finishes with the key the customer handed over", function()
    local env = { CMKFLOW_STATE_DIR = dir .. "/isv-state" }
    local first = cli.run({ "run", "onboard", "--param", "customer=northwind", "--config", dir .. "/isv.lua",
                            "--output", "json" }, env)
    assert.equals(6, first.code, first.stderr)
    local waiting = json.decode(first.stdout)
    assert.equals("waiting", waiting.status)
    assert.equals("handoff", waiting.gate)
    -- nothing in the customer tenant yet
    local census = ext.onboard_census(emu:state())
    assert.equals(0, census.vaults)
    assert.equals(0, census.crypto_roles)
    assert.equals(0, census.storage_accounts)
    assert.equals(1, census.fics)

    -- the customer's side, in the customer's own run store
    local app_id
    for _, t in ipairs(emu:state().tenants) do
      if t.name == "isv" then
        for _, a in ipairs(t.applications) do if a.uniqueName ~= json.null and a.uniqueName then app_id = a.appId end end
      end
    end
    assert.is_string(app_id)
    local customer = cli.run({ "run", "customer-authorize", "--param", "customer=northwind", "--param", "app_id=" .. app_id,
                               "--config", dir .. "/customer.lua", "--output", "json" }, { CMKFLOW_STATE_DIR = dir .. "/customer-state" })
    assert.equals(0, customer.code, customer.stderr)
    local out = json.decode(customer.stdout).outputs
    assert.is_string(out.key_vault_uri)
    assert.is_string(out.key_name)

    -- resuming before approval still waits
    local again = cli.run({ "resume", waiting.run_id, "--output", "json" }, env)
    assert.equals(6, again.code, again.stderr)

    local approve = cli.run({ "approve", waiting.run_id, "handoff", "--param", "key_vault_uri=" .. out.key_vault_uri,
                              "--param", "key_name=" .. out.key_name }, env)
    assert.equals(0, approve.code, approve.stderr)
    local done = cli.run({ "resume", waiting.run_id, "--output", "json" }, env)
    assert.equals(0, done.code, done.stderr)
    local result = json.decode(done.stdout)
    assert.equals(waiting.run_id, result.run_id)
    local enc = result.outputs.storage_account.properties.encryption
    assert.equals("Microsoft.Keyvault", enc.keySource)
    assert.equals(app_id, enc.identity.federatedIdentityClientId)
    assert.equals(out.key_name, enc.keyvaultproperties.keyname)
    assert.is_string(enc.keyvaultproperties.currentVersionedKeyIdentifier)
  end)

  it("refuses an approval without the key, naming the values it needs, and the run still waits", function()
    local env = { CMKFLOW_STATE_DIR = dir .. "/isv-state-2" }
    local first = cli.run({ "run", "onboard", "--param", "customer=litware", "--config", dir .. "/isv.lua",
                            "--output", "json" }, env)
    assert.equals(6, first.code, first.stderr)
    local run_id = json.decode(first.stdout).run_id
    local approve = cli.run({ "approve", run_id, "handoff" }, env)
    assert.equals(2, approve.code)
    assert.matches("--param key_name=... --param key_vault_uri=...", approve.stderr, 1, true)
    local r = cli.run({ "resume", run_id }, env)
    assert.equals(6, r.code)
  end)
end)
