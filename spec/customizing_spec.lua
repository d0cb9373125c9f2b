-- docs/customizing.md's example, run as a user would: examples/policy.lua next to a configuration
-- (`policy = "policy.lua"`) that points `cmkflow run onboard` at an external emulator
-- (`cmkflow emulator`, demo seed). The policy's names, tags, location, key size, retention and
-- role scope must show in the emulator's state; its hooks log on stderr and stamp the run id in a
-- tag; its approval function pauses a listed customer at the handoff gate (exit 6) until
-- `cmkflow approve RUN handoff` and `cmkflow resume RUN`, and lets the others through. The
-- documentation shows this same file, and the configuration example loads with it.
local core = require "cmkflow.core"
local json = core.json
local http = require "cmkflow.http"
local cli = require "support.cli"
local files = require "support.files"
local seed = require "cmkflow.emulator.demo_seed"
local ext = require "support.external_emulator"
local q = files.quote

local SRC = os.getenv("CMKFLOW_SOURCE_DIR") or "."
local ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
local ISV, CUSTOMER = seed.tenants[1], seed.tenants[2]
local SECRETS = { ISV_SECRET = ISV.principals[1].secret, CUSTOMER_SECRET = CUSTOMER.principals[1].secret }

-- The example policy evaluated here, for the names it must produce.
local function example_policy()
  local env = { string = string, table = table, math = math, type = type, tostring = tostring, os = { getenv = os.getenv } }
  return assert(loadfile(SRC .. "/examples/policy.lua", "t", env))()
end

local function by_name(list, name)
  for _, r in ipairs(list or {}) do if r.name == name then return r end end
  return nil
end

describe("the customizing example (examples/policy.lua)", function()
  local dir, emu, client, config, policy

  local function state()
    local resp = assert(client:request { method = "GET", url = emu.ready.url .. "/_emulator/state" })
    assert.equal(200, resp.status)
    return json.decode(resp.body)
  end

  local function tenant(st, t)
    for _, x in ipairs(st.tenants) do if x.id == t.id then return x end end
    error("no tenant " .. t.id .. " in the emulator state")
  end

  local function names(customer)
    local c = { customer = customer, isv_tenant = ISV.id, customer_tenant = CUSTOMER.id }
    local out = {}
    for k, fn in pairs(policy.names) do out[k] = fn(c) end
    return out
  end

  local function run(args)
    local r = cli.run(args, SECRETS)
    local doc = r.stdout:match("^%s*{") and json.decode(r.stdout) or nil
    return r, doc
  end

  setup(function()
    dir = files.tmpdir()
    emu = ext.start { dir = dir, state = false, lifetime = 240, args = { "--ca-cert", dir .. "/ca.pem" } }
    client = http.new { ca_file = emu.ready.ca_cert, retry = { max_attempts = 2, base_delay_ms = 50 } }
    -- the example, byte for byte, next to a configuration that names it relatively
    files.write(dir .. "/policy.lua", files.read(SRC .. "/examples/policy.lua"))
    config = files.write(dir .. "/cmkflow.lua", ([[
return {
  cloud = { emulator = %q, ca_cert = %q },
  isv = { tenant = %q, subscription = %q,
          credential = { client_id = %q, client_secret = os.getenv("ISV_SECRET") } },
  customer = { tenant = %q, subscription = %q,
               credential = { client_id = %q, client_secret = os.getenv("CUSTOMER_SECRET") } },
  policy = "policy.lua",
}
]]):format(emu.ready.url, emu.ready.ca_cert, ISV.id, ISV.subscriptions[1].id, ISV.principals[1].appId,
      CUSTOMER.id, CUSTOMER.subscriptions[1].id, CUSTOMER.principals[1].appId))
    policy = example_policy()
  end)

  teardown(function()
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  it("names, tags, places and sizes everything as the policy says, and its hooks run", function()
    local r, doc = run { "run", "onboard", "--config", config, "--param", "customer=contoso", "--output", "json" }
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.equal("succeeded", doc.status)
    local run_id = doc.run_id
    assert.is_string(run_id)

    local n = names("contoso")
    -- the policy's own names, not the defaults
    assert.equal("rg-acme-keys-contoso", n.customer_resource_group)
    assert.matches("^kv%-acme%-contoso%-%x%x%x%x%x$", n.key_vault)
    assert.matches("^stacmecontoso%x%x%x%x%x%x$", n.storage_account)

    local st = state()
    local isv, cust = tenant(st, ISV), tenant(st, CUSTOMER)
    assert.is_nil(by_name(isv.resources, "rg-cmkflow-isv"), "a default name was used")

    local expected_tags = { ["managed-by"] = "cmkflow", owner = "platform-team", ["cost-center"] = "cc-4711",
                            customer = "contoso", ["cmkflow-run"] = run_id }
    for _, want in ipairs {
      { isv, n.isv_resource_group }, { isv, n.identity }, { isv, n.storage_account_resource_group }, { isv, n.storage_account },
      { cust, n.customer_resource_group }, { cust, n.key_vault },
    } do
      local res = by_name(want[1].resources, want[2])
      assert.is_table(res, "no resource named " .. want[2])
      assert.equal("northeurope", res.location, want[2])
      assert.same(expected_tags, res.tags)
    end

    -- application and federated credential
    local app
    for _, a in ipairs(isv.applications) do if a.uniqueName == "acme-storage-cmk" then app = a end end
    assert.is_table(app, "no application acme-storage-cmk")
    assert.equal("Acme Storage customer-managed keys", app.displayName)
    assert.equal(app.appId, doc.outputs.handoff.appId)
    local fic = by_name(isv.federated_credentials, "acme-contoso")
    assert.is_table(fic)
    assert.equal(app.id, fic.application)

    -- vault: retention from the policy, purge protection regardless
    local vault = by_name(cust.resources, n.key_vault)
    assert.equal(30, vault.properties.softDeleteRetentionInDays)
    assert.is_true(vault.properties.enablePurgeProtection)

    -- key size
    local keys = st.vault_keys[n.key_vault]
    assert.is_table(keys)
    local key = by_name(keys, "acme-cmk-contoso")
    assert.is_table(key)
    assert.equal(1, #key.versions)
    assert.equal("RSA", key.versions[1].kty)
    assert.equal(4096, key.versions[1].key_size)

    -- role scope: the vault, not the key
    local sp
    for _, s in ipairs(cust.service_principals) do if s.appId == app.appId then sp = s end end
    assert.is_table(sp, "no service principal for the ISV app in the customer tenant")
    local grants = {}
    for _, ra in ipairs(cust.role_assignments) do
      if ra.properties.principalId == sp.id and ra.properties.roleDefinitionId:sub(-#ENCRYPTION_USER) == ENCRYPTION_USER then
        grants[#grants + 1] = ra
      end
    end
    assert.equal(1, #grants)
    assert.equal(vault.id:lower(), grants[1].properties.scope:lower())

    -- the account uses the policy's key
    local account = by_name(isv.resources, n.storage_account)
    local enc = account.properties.encryption
    assert.equal("Microsoft.Keyvault", enc.keySource)
    assert.equal("acme-cmk-contoso", enc.keyvaultproperties.keyname)
    assert.equal(vault.properties.vaultUri, enc.keyvaultproperties.keyvaulturi)
    assert.equal(app.appId, enc.identity.federatedIdentityClientId)
    assert.equal(n.storage_account, doc.outputs.storage_account.name)

    -- hooks: before and after every step, on stderr
    assert.matches("[acme] contoso: app ...", r.stderr, 1, true)
    assert.matches("[acme] contoso: storage_account done (" .. account.id, r.stderr, 1, true)
    assert.matches("[acme] contoso: role_assignment done", r.stderr, 1, true)
  end)

  it("pauses a listed customer at the handoff gate until approve and resume", function()
    local r, doc = run { "run", "onboard", "--config", config, "--param", "customer=fabrikam", "--output", "json" }
    assert.equal(6, r.code, r.stderr .. r.stdout)
    assert.equal("waiting", doc.status)
    assert.equal("handoff", doc.gate)
    local run_id = doc.run_id
    local n = names("fabrikam")

    -- the ISV's side is done, nothing happened in the customer tenant
    local st = state()
    assert.is_table(by_name(tenant(st, ISV).resources, n.identity))
    assert.is_table(by_name(tenant(st, ISV).federated_credentials, n.federated_credential))
    assert.is_nil(by_name(tenant(st, CUSTOMER).resources, n.customer_resource_group))
    assert.is_nil(by_name(tenant(st, CUSTOMER).resources, n.key_vault))
    assert.is_nil(by_name(tenant(st, ISV).resources, n.storage_account))

    -- resuming without an approval waits again
    r, doc = run { "resume", run_id, "--output", "json" }
    assert.equal(6, r.code, r.stderr .. r.stdout)
    assert.equal("waiting", doc.status)
    assert.is_nil(by_name(tenant(state(), CUSTOMER).resources, n.key_vault))

    r = run { "approve", run_id, "handoff" }
    assert.equal(0, r.code, r.stderr)
    r, doc = run { "resume", run_id, "--output", "json" }
    assert.equal(0, r.code, r.stderr .. r.stdout)
    assert.equal("succeeded", doc.status)
    assert.equal(run_id, doc.run_id)

    st = state()
    local vault = by_name(tenant(st, CUSTOMER).resources, n.key_vault)
    assert.is_table(vault)
    assert.equal(run_id, vault.tags["cmkflow-run"])
    local account = by_name(tenant(st, ISV).resources, n.storage_account)
    assert.is_table(account)
    assert.equal("acme-cmk-fabrikam", account.properties.encryption.keyvaultproperties.keyname)
    assert.equal(vault.properties.vaultUri, account.properties.encryption.keyvaultproperties.keyvaulturi)
    assert.equal(4096, by_name(st.vault_keys[n.key_vault], "acme-cmk-fabrikam").versions[1].key_size)
  end)

  it("docs/customizing.md shows this exact example", function()
    local doc = files.read(SRC .. "/docs/customizing.md")
    local example = files.read(SRC .. "/examples/policy.lua")
    assert.truthy(doc:find("```lua\n" .. example .. "```", 1, true), "docs/customizing.md no longer shows examples/policy.lua verbatim")
  end)

  it("the configuration example loads with the example policy (plan --refresh=false: no call)", function()
    local r, doc = run { "plan", "onboard", "--config", SRC .. "/examples/cmkflow.lua",
                         "--param", "customer=woodgrove-bank", "--refresh=false", "--output", "json" }
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local lines = {}
    for _, p in ipairs(doc.plan) do lines[p.step] = table.concat(p.mutations, "\n") end
    local n = names("woodgrove-bank")
    assert.matches("kv-acme-woodgroveb-", n.key_vault, 1, true)
    assert.matches(n.key_vault, lines.key_vault, 1, true)
    assert.matches("RSA 4096", lines.key, 1, true)
    assert.matches("at the vault", lines.role_assignment, 1, true)
    assert.matches(n.storage_account, lines.storage_account, 1, true)
    assert.equal("approval gate 'handoff'", lines.handoff)
  end)
end)
