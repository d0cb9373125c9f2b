-- The stock workflows (issue 4 point 4) through the engine against an in-process emulator: the
-- split path isv-setup -> customer-authorize -> new-account reaches onboard's end state;
-- existing-account, verify (and the broken link it names), rotate-key, revoke and offboard; every
-- rerun creates nothing new. (Parameter validation and verify's single broken links, run through
-- the binary, are data: spec/cases/, driven by spec/scenarios_spec.lua.)
local core = require "cmkflow.core"
local json = core.json
local engine = require "cmkflow.workflow.engine"
local policy_mod = require "cmkflow.policy"
local sandbox = require "cmkflow.sandbox"
local files = require "support.files"
local emulator = require "support.emulator"

local function load_workflow(name)
  local path = "workflows/" .. name .. ".lua"
  local src = assert(files.read(path), path)
  local fn = assert(sandbox.load(src, "@" .. path, {}))
  return engine.check_definition(fn())
end

local emu, db, logs
local contexts = {}

-- Runs workflow `name` with raw params through the engine; contexts: which tenants have credentials.
local function run(name, raw, opts)
  opts = opts or {}
  local def = load_workflow(name)
  local params, problems = engine.check_params(def, raw)
  if not params then return { status = "usage", problems = problems } end
  local have = opts.contexts or { isv = true, customer = true }
  local ctx = { params = params, policy = policy_mod.merge(opts.policy or { propagation_timeout_s = 20 }), hooks = {} }
  ctx.has_context = function(n) return have[n] == true end
  ctx.context = function(n)
    if not have[n] then error("no credentials for the " .. n .. " tenant", 0) end
    return contexts[n]
  end
  ctx.context_info = function(n)
    local c = contexts[n]
    return { tenant = c.tenant, subscription = c.subscription }
  end
  ctx.log = function(fmt, ...) logs[#logs + 1] = select("#", ...) > 0 and fmt:format(...) or fmt end
  if opts.plan then return engine.plan(def, ctx) end
  local id = db:create_run { workflow = def.name, params = json.encode(params) }
  return engine.execute { def = def, ctx = ctx, store = db, run_id = id }
end

local function ok_run(name, raw, opts)
  local r = run(name, raw, opts)
  assert(r.status == "succeeded", name .. ": " .. tostring(r.error or (r.problems and table.concat(r.problems, "; "))))
  return r
end

-- What a rerun must not duplicate and two paths must agree on: per tenant, the count of every list
-- in /_emulator/state and the ids of the ARM resources (their names come from the policy).
local function summary()
  local s = emu:state()
  local out = {}
  for _, t in ipairs(s.tenants) do
    local sum = {}
    for k, v in pairs(t) do
      if type(v) == "table" and (#v > 0 or next(v) == nil) then sum[k] = #v end
    end
    local ids = {}
    for _, r in ipairs(t.resources or {}) do ids[#ids + 1] = r.id:lower() end
    table.sort(ids)
    sum.resource_ids = table.concat(ids, "\n")
    out[t.name] = sum
  end
  for k, v in pairs(s) do if k ~= "tenants" and type(v) == "table" and #v > 0 then out[k] = #v end end
  return out, s
end

local function find(list, pred) for _, x in ipairs(list or {}) do if pred(x) then return x end end end
local function tenant(s, name) return find(s.tenants, function(t) return t.name == name end) end

local CUSTOMER = "contoso"

-- onboard's end state through the split path; returns the params the later workflows need
local function split_path()
  local setup = ok_run("isv-setup", { customer = CUSTOMER })
  local app_id = setup.outputs.handoff.appId
  local auth = ok_run("customer-authorize", { customer = CUSTOMER, app_id = app_id })
  local acct = ok_run("new-account", { customer = CUSTOMER, app_id = app_id,
    key_vault_uri = auth.outputs.key_vault_uri, key_name = auth.outputs.key_name })
  return { setup = setup, auth = auth, account = acct, app_id = app_id }
end

describe("stock workflows", function()
  setup(function()
    emu = emulator.start()
    contexts.isv = emu:context("isv")
    contexts.customer = emu:context("customer")
    db = assert(core.store.open(files.tmpdir() .. "/runs.db"))
    emu:fresh() -- the world each test starts from (emu:fresh() again: back to it)
  end)
  teardown(function() if emu then emu:stop() end end)
  before_each(function()
    logs = {}
    emu:fresh()
  end)

  it("isv-setup, customer-authorize and new-account reach onboard's end state; reruns change nothing", function()
    local onboard = ok_run("onboard", { customer = CUSTOMER })
    local want = summary()
    emu:fresh()
    local r = split_path()
    local got = summary()
    assert.same(want, got)
    -- the handoff names the app and the command the customer runs
    assert.matches("^%x+%-", r.app_id)
    assert.matches("customer-authorize --config customer.lua --param customer=contoso --param app_id=" .. r.app_id, r.setup.outputs.handoff.customerCommand, 1, true)
    assert.matches("adminconsent?client_id=" .. r.app_id, r.setup.outputs.handoff.consentUrl, 1, true)
    local enc = r.account.outputs.storage_account.properties.encryption
    assert.equals("Microsoft.Keyvault", enc.keySource)
    assert.equals(r.app_id, enc.identity.federatedIdentityClientId)
    assert.matches("/keys/cmk%-contoso/%x+$", enc.keyvaultproperties.currentVersionedKeyIdentifier)
    assert.equals(onboard.outputs.storage_account.id, r.account.outputs.storage_account.id)
    -- every workflow again: same ids, nothing new
    local again = split_path()
    assert.equals(r.app_id, again.app_id)
    assert.equals(r.auth.outputs.role_assignment.id, again.auth.outputs.role_assignment.id)
    assert.equals(r.auth.outputs.service_principal.id, again.auth.outputs.service_principal.id)
    assert.same(want, summary())
  end)

  it("plans mutating steps without a call", function()
    local plan = run("new-account", { customer = CUSTOMER, app_id = "5e6f7a8b-0000-4000-8000-00000000a0d1",
      key_vault_uri = "https://kv-x.vault.azure.net", key_name = "cmk-contoso" }, { plan = true })
    assert.equals(2, #plan)
    assert.matches("storage account stcontoso", plan[2].mutations[1], 1, true)
    assert.matches("key cmk-contoso in https://kv-x.vault.azure.net as app 5e6f7a8b", plan[2].mutations[1], 1, true)
    local vplan = run("verify", { customer = CUSTOMER }, { plan = true })
    assert.equals(0, #vplan) -- read-only
  end)

  it("existing-account switches an account created without CMK; a rerun sends nothing", function()
    local r = split_path()
    local isv = contexts.isv
    local id = ("/subscriptions/%s/resourceGroups/rg-cmk-data-contoso/providers/Microsoft.Storage/storageAccounts/stplaincontoso1")
      :format(isv.subscription)
    assert(isv.arm:put(id, { location = "westeurope", kind = "StorageV2", sku = { name = "Standard_LRS" } },
      { api_version = "2023-01-01" }))
    local params = { customer = CUSTOMER, app_id = r.app_id, storage_account_id = id,
      key_vault_uri = r.auth.outputs.key_vault_uri, key_name = r.auth.outputs.key_name }
    local res = ok_run("existing-account", params)
    assert.is_true(res.outputs.changed)
    local acct = res.outputs.storage_account
    assert.equals("Microsoft.Keyvault", acct.properties.encryption.keySource)
    assert.equals(r.app_id, acct.properties.encryption.identity.federatedIdentityClientId)
    assert.equals("UserAssigned", acct.identity.type)
    assert.matches("/keys/cmk%-contoso/%x+$", acct.properties.encryption.keyvaultproperties.currentVersionedKeyIdentifier)
    local want = summary()
    local again = ok_run("existing-account", params)
    assert.is_false(again.outputs.changed)
    assert.same(want, summary())
    -- an account that does not exist: a clear failure, nothing created
    local missing = run("existing-account", { customer = CUSTOMER, app_id = r.app_id, storage_account = "stnosuchaccount",
      resource_group = "rg-cmk-data-contoso", key_vault_uri = r.auth.outputs.key_vault_uri, key_name = "cmk-contoso" })
    assert.equals("failed", missing.status)
    assert.matches("stnosuchaccount does not exist", missing.error.message, 1, true)
    assert.same(want, summary())
  end)

  it("verify passes after onboard and names the broken link after revoke, a deleted SP, a disabled key", function()
    local onboard = ok_run("onboard", { customer = CUSTOMER })
    local app_id = onboard.outputs.handoff.appId
    local v = ok_run("verify", { customer = CUSTOMER })
    assert.is_true(v.outputs.ok)
    assert.equals("ok", v.outputs.checks.federated_credential)
    assert.equals("ok", v.outputs.checks.storage_account)
    local want = summary()

    local rv = ok_run("revoke", { customer = CUSTOMER, app_id = app_id })
    assert.equals(1, #rv.outputs.deleted_role_assignments)
    local again = ok_run("revoke", { customer = CUSTOMER, app_id = app_id })
    assert.equals(0, #again.outputs.deleted_role_assignments)
    local broken = run("verify", { customer = CUSTOMER })
    assert.equals("failed", broken.status)
    assert.is_false(broken.outputs.ok)
    assert.equals("role_assignment", broken.outputs.broken.link)
    assert.equals("customer", broken.outputs.broken.tenant)
    assert.matches("customer-authorize", broken.outputs.broken.fix, 1, true)
    assert.matches("broken link: role_assignment", broken.error.message, 1, true)
    assert.is_nil(broken.error.message:find("traceback", 1, true)) -- a message for people, not a Lua trace

    -- the customer authorizes again: whole again
    ok_run("customer-authorize", { customer = CUSTOMER, app_id = app_id })
    assert.is_true(ok_run("verify", { customer = CUSTOMER }).outputs.ok)
    assert.same(want, summary())

    -- the key disabled
    ok_run("revoke", { customer = CUSTOMER, app_id = app_id, disable_key = "true" })
    ok_run("customer-authorize", { customer = CUSTOMER, app_id = app_id })
    local k = run("verify", { customer = CUSTOMER })
    assert.equals("key", k.outputs.broken.link)
    assert.matches("disabled", k.outputs.broken.problem, 1, true)

    -- the service principal deleted
    local sp = assert(contexts.customer.graph:get("/servicePrincipals(appId='" .. app_id .. "')"))
    assert(contexts.customer.graph:delete("/servicePrincipals/" .. sp.id))
    local s = run("verify", { customer = CUSTOMER })
    assert.equals("service_principal", s.outputs.broken.link)
    assert.equals("customer", s.outputs.broken.tenant)
  end)

  it("rotate-key: a versionless account follows at Storage's daily check, a versioned one is moved", function()
    ok_run("onboard", { customer = CUSTOMER })
    local r = ok_run("rotate-key", { customer = CUSTOMER })
    assert.equals("versionless", r.outputs.tracking)
    assert.is_string(r.outputs.old)
    -- Storage checks a versionless key once a day: until then the account keeps the old version
    assert.equals("pending", r.outputs.status)
    assert.equals(r.outputs.old, r.outputs.new)
    assert.are_not.equal(r.outputs.key, r.outputs.new)
    local v = ok_run("rotate-key", { customer = CUSTOMER, tracking = "versioned" })
    assert.equals("versioned", v.outputs.tracking)
    assert.equals("updated", v.outputs.status)
    assert.equals(r.outputs.old, v.outputs.old)
    assert.are_not.equal(v.outputs.old, v.outputs.new)
    local s = emu:state()
    local acct = find(tenant(s, "isv").resources, function(x) return x.type == "Microsoft.Storage/storageAccounts" end)
    assert.equals(v.outputs.new:match("([^/]+)$"), acct.properties.encryption.keyvaultproperties.keyversion)
  end)

  it("offboard keeps the identity and credential every customer shares (default policy)", function()
    ok_run("onboard", { customer = CUSTOMER })
    ok_run("onboard", { customer = "fabrikam" })
    local before, s0 = summary()
    assert.equals(1, before.isv.federated_credentials)   -- one credential serves both customers
    local o = ok_run("offboard", { customer = CUSTOMER })
    assert.same({}, o.outputs.federated_credentials_deleted)
    assert.is_false(o.outputs.identity_deleted)
    assert.is_true(o.outputs.storage_account.reverted)
    local after, s = summary()
    assert.equals(1, after.isv.federated_credentials)
    assert.is_table(find(tenant(s, "isv").resources, function(x) return x.type == "Microsoft.ManagedIdentity/userAssignedIdentities" end))
    -- the other customer's chain still verifies
    assert.equals("succeeded", run("verify", { customer = "fabrikam" }).status)
    assert.is_table(s0)
  end)

  -- Issue 10 point 5: after a revoke Storage cannot re-wrap with the customer's key
  it("offboard after revoke names what the customer must restore; after restoring, it completes", function()
    local onboard = ok_run("onboard", { customer = CUSTOMER })
    local app_id = onboard.outputs.handoff.appId
    ok_run("revoke", { customer = CUSTOMER, app_id = app_id })
    local r = run("offboard", { customer = CUSTOMER })
    assert.equals("failed", r.status)
    assert.equals("KeyVaultAccessForbidden", r.error.code)
    assert.equals("customer", r.error.tenant)
    assert.matches("the customer must first restore the ISV app's use of key cmk-contoso", r.error.hint, 1, true)
    local acct = assert(contexts.isv.arm:get(onboard.outputs.storage_account.id, { api_version = "2023-01-01" }))
    assert.equals("Microsoft.Keyvault", acct.properties.encryption.keySource) -- unchanged
    ok_run("customer-authorize", { customer = CUSTOMER, app_id = app_id }) -- the customer restores the role
    local done = ok_run("offboard", { customer = CUSTOMER })
    assert.is_true(done.outputs.storage_account.reverted)
  end)

  it("offboard removes a customer's own federated credential and identity; a rerun finds nothing to do", function()
    local own = { policy = { identity_per_customer = true, propagation_timeout_s = 20 } }
    ok_run("onboard", { customer = CUSTOMER }, own)
    local before = summary()
    local o = ok_run("offboard", { customer = CUSTOMER }, own)
    assert.same({ "cmk-contoso" }, o.outputs.federated_credentials_deleted)
    assert.is_true(o.outputs.identity_deleted)
    assert.is_true(o.outputs.storage_account.reverted)
    local after, s = summary()
    assert.equals(before.isv.federated_credentials - 1, after.isv.federated_credentials)
    assert.is_nil(find(tenant(s, "isv").resources, function(x) return x.type == "Microsoft.ManagedIdentity/userAssignedIdentities" end))
    local acct = find(tenant(s, "isv").resources, function(x) return x.type == "Microsoft.Storage/storageAccounts" end)
    assert.equals("Microsoft.Storage", acct.properties.encryption.keySource)
    local again = ok_run("offboard", { customer = CUSTOMER }, own)
    assert.same({}, again.outputs.federated_credentials_deleted)
    assert.is_false(again.outputs.identity_deleted)
    assert.same(after, summary())
  end)

  -- Issue 10 point 3: every replication delay at once (service principals incl. the identity's,
  -- federated credentials, role assignments, the vault's DNS); onboard waits each out, saying so.
  it("onboard succeeds with every delay on at once and creates one of each resource", function()
    assert(emu:control("PUT", "/_emulator/delays",
      { service_principal = 2, federated_credential = 2, role_assignment = 2, vault_dns = 2 }).status < 300)
    local r = ok_run("onboard", { customer = CUSTOMER }, { policy = { propagation_timeout_s = 120 } })
    assert.equals("Microsoft.Keyvault", r.outputs.storage_account.properties.encryption.keySource)
    local _, s = summary()
    local isv, cus = tenant(s, "isv"), tenant(s, "customer")
    local function count(list, pred) local n = 0 for _, x in ipairs(list or {}) do if pred(x) then n = n + 1 end end return n end
    local function of_type(t) return function(x) return x.type == t end end
    assert.equals(1, #isv.federated_credentials)
    assert.equals(1, count(isv.applications, function(a) return a.displayName == "cmkflow-cross-tenant-cmk" end))
    assert.equals(1, count(isv.resources, of_type("Microsoft.ManagedIdentity/userAssignedIdentities")))
    assert.equals(1, count(isv.resources, of_type("Microsoft.Storage/storageAccounts")))
    assert.equals(1, count(cus.resources, of_type("Microsoft.KeyVault/vaults")))
    assert.equals(1, count(cus.service_principals, function(sp) return sp.appId == r.outputs.handoff.appId end))
    local sp_id = r.outputs.role_assignment.principalId
    assert.equals(1, count(cus.role_assignments, function(a) return a.properties.principalId == sp_id end))
    -- it said what it waited for: the identity's principal (the credential's subject), the vault's DNS
    local text = table.concat(logs, "\n")
    assert.matches("waiting %d+ s for the identity's service principal", text)
    assert.matches("waiting %d+ s for the DNS name of key vault", text)
    assert(emu:control("PUT", "/_emulator/delays", {}).status < 300)
  end)

  -- Issue 13 point 3: with both tenants' credentials the handoff gate orders nothing; the dependency
  -- graph does. The customer's first request comes before the ISV's federated credential is written
  -- (the credential waits for the identity's principal to replicate: 2 s here).
  it("onboard with both tenants' credentials overlaps the customer's steps with the ISV's", function()
    assert(emu:control("PUT", "/_emulator/delays", { service_principal = 2 }).status < 300)
    assert(emu:control("DELETE", "/_emulator/journal").status < 300)
    ok_run("onboard", { customer = CUSTOMER }, { policy = { propagation_timeout_s = 120 } })
    local journal = json.decode(emu:control("GET", "/_emulator/journal").body).value
    local customer_sub = contexts.customer.subscription:lower()
    local first_customer, fic_written
    for _, r in ipairs(journal) do
      if not first_customer and r.service == "arm" and r.path:lower():find(customer_sub, 1, true) then first_customer = r.seq end
      if r.service == "graph" and r.method ~= "GET" and r.path:find("federatedIdentityCredentials", 1, true)
         and r.status < 300 then fic_written = r.seq end
    end
    assert.is_number(first_customer)
    assert.is_number(fic_written)
    assert.is_true(first_customer < fic_written, ("customer's first request #%d, credential written #%d")
      :format(first_customer, fic_written))
    assert(emu:control("PUT", "/_emulator/delays", {}).status < 300)
  end)

  -- Issue 10 point 2: ARM's PUT replaces a resource, so a re-run must not PUT over what others set.
  it("re-running every stock workflow keeps a vault firewall and tags added after onboarding", function()
    local onboard = ok_run("onboard", { customer = CUSTOMER })
    local app_id = onboard.outputs.handoff.appId
    local isv, cus = contexts.isv, contexts.customer
    local vault_id = onboard.outputs.role_assignment.scope:match("^(.-/vaults/[^/]+)")
    local acl = { defaultAction = "Deny", bypass = "AzureServices", ipRules = { { value = "203.0.113.0/24" } } }
    local RG_API, ID_API, KV_API, SA_API = "2021-04-01", "2023-01-31", "2023-07-01", "2023-01-01"
    local theirs = {
      { cus, vault_id, KV_API },
      { cus, vault_id:match("^(.-)/providers/"), RG_API },
      { isv, onboard.outputs.identity.id, ID_API },
      { isv, onboard.outputs.storage_account.id, SA_API },
      { isv, onboard.outputs.storage_account.id:match("^(.-)/providers/"), RG_API },
    }
    local function tagged(c, id, api)
      local doc = assert(c.arm:get(id, { api_version = api }))
      return doc.tags or {}
    end
    for _, t in ipairs(theirs) do
      local tags = tagged(t[1], t[2], t[3])
      tags.costcenter = "cc-42"
      assert(t[1].arm:patch(t[2], { tags = tags }, { api_version = t[3] }))
    end
    assert(cus.arm:patch(vault_id, { properties = { networkAcls = acl, publicNetworkAccess = "Enabled" } },
      { api_version = KV_API }))
    local kv_uri, key = onboard.outputs.key.vaultUri, onboard.outputs.key.name
    ok_run("onboard", { customer = CUSTOMER })
    ok_run("isv-setup", { customer = CUSTOMER })
    ok_run("customer-authorize", { customer = CUSTOMER, app_id = app_id })
    ok_run("new-account", { customer = CUSTOMER, app_id = app_id, key_vault_uri = kv_uri, key_name = key })
    ok_run("existing-account", { customer = CUSTOMER, app_id = app_id, key_vault_uri = kv_uri, key_name = key,
      storage_account_id = onboard.outputs.storage_account.id })
    ok_run("verify", { customer = CUSTOMER })
    ok_run("rotate-key", { customer = CUSTOMER })
    ok_run("offboard", { customer = CUSTOMER })
    ok_run("revoke", { customer = CUSTOMER, app_id = app_id })
    for _, t in ipairs(theirs) do
      assert.equals("cc-42", tagged(t[1], t[2], t[3]).costcenter, t[2])
    end
    local vault = assert(cus.arm:get(vault_id, { api_version = KV_API }))
    assert.equals("Deny", vault.properties.networkAcls.defaultAction)
    assert.equals("203.0.113.0/24", vault.properties.networkAcls.ipRules[1].value)
    assert.equals("contoso", vault.tags.customer) -- ours, still there
  end)
end)

-- Issue 10 point 1: one emulator, one seed, a pair of tenants in each cloud (public, US
-- Government, China); the workflows take every host, issuer and audience from their cloud.
describe("stock workflows on every cloud", function()
  local seed = { random_seed = 11, tenants = {} }
  local base_seed = require "cmkflow.emulator.demo_seed"
  local CLOUDS = { azure = "0", usgov = "1", china = "2" }
  for cloud, digit in pairs(CLOUDS) do
    for i, t in ipairs(base_seed.tenants) do
      local function swap(id) return (id:gsub("^(........%-....%-....%-....%-)(.)", "%1" .. digit)) end
      local sub = swap(t.subscriptions[1].id)
      local pr = t.principals[1]
      seed.tenants[#seed.tenants + 1] = { id = swap(t.id), name = t.name .. "-" .. cloud, cloud = cloud,
        domain = t.name .. "-" .. cloud .. ".example", subscriptions = { { id = sub, name = t.name .. "-" .. cloud } },
        principals = { { name = pr.name, appId = swap(pr.appId), secret = pr.secret, graph_roles = pr.graph_roles,
          roles = { { role = "Owner", scope = "/subscriptions/" .. sub },
                    { role = i == 2 and "Key Vault Crypto Officer" or "Storage Blob Data Reader",
                      scope = "/subscriptions/" .. sub } } } } }
    end
  end
  local clouds_emu
  setup(function()
    clouds_emu = emulator.start { seed = seed }
    db = assert(core.store.open(files.tmpdir() .. "/runs-clouds.db"))
  end)
  teardown(function() if clouds_emu then clouds_emu:stop() end end)

  local clouds = require "cmkflow.util.clouds"
  for cloud in pairs(CLOUDS) do
    it("onboard, verify and rotate-key pass on " .. cloud .. "; its own issuer and audience only", function()
      logs = {}
      contexts.isv = clouds_emu:context("isv-" .. cloud)
      contexts.customer = clouds_emu:context("customer-" .. cloud)
      local c = clouds.CLOUDS[cloud]
      assert.equals("https://" .. c.arm, contexts.isv.cloud.arm)
      local onboard = ok_run("onboard", { customer = CUSTOMER })
      local isv = contexts.isv
      assert.matches("^https://" .. c.login:gsub("%p", "%%%0") .. "/{customer%-tenant}/v2%.0/adminconsent",
        onboard.outputs.handoff.consentUrl)
      local app = assert(isv.graph:get("/applications(appId='" .. onboard.outputs.handoff.appId .. "')"))
      local fics = assert(isv.graph:list("/applications/" .. app.id .. "/federatedIdentityCredentials"))
      assert.equals(1, #fics)
      assert.equals(("https://%s/%s/v2.0"):format(c.login, isv.tenant), fics[1].issuer)
      assert.same({ c.token_exchange_audience }, fics[1].audiences)
      assert.matches("^https://kv%-contoso%-%x+%." .. c.keyvault_suffix:gsub("%p", "%%%0") .. "/$",
        onboard.outputs.key.vaultUri)
      assert.is_true(ok_run("verify", { customer = CUSTOMER }).outputs.ok)
      -- a versioned rotation moves the account to the new key version at once (a versionless one
      -- waits for Storage's daily check)
      local rotated = ok_run("rotate-key", { customer = CUSTOMER, tracking = "versioned" })
      assert.are_not.equal(rotated.outputs.old, rotated.outputs.new)
      assert.matches("%." .. c.keyvault_suffix:gsub("%p", "%%%0") .. "/keys/", rotated.outputs.new)
      -- Entra refuses a credential that names another cloud's audience (AADSTS700212): Storage's
      -- next key check on the account fails
      local other = cloud == "azure" and "api://AzureADTokenExchangeUSGov" or "api://AzureADTokenExchange"
      assert(isv.graph:request("PATCH", "/applications/" .. app.id .. "/federatedIdentityCredentials/" .. fics[1].id,
        { audiences = { other } }))
      local res, err = isv.arm:patch(onboard.outputs.storage_account.id, { tags = { touched = "yes" } },
        { api_version = "2023-01-01" })
      assert.is_nil(res)
      assert.equals("KeyVaultAuthenticationFailure", err.code)
      -- a tenant of this cloud does not exist at another cloud's login host
      local elsewhere = cloud == "china" and "azure" or "china"
      local resp = clouds_emu:control("GET", "/" .. isv.tenant .. "/v2.0/.well-known/openid-configuration")
      assert.equals(200, resp.status)
      local via = require("cmkflow.http").new { ca_file = clouds_emu.ca_file,
        connect_to = clouds_emu:cloud_of({ cloud = elsewhere }).connect_to }
      local foreign = via:request { method = "GET",
        url = "https://" .. clouds.CLOUDS[elsewhere].login .. "/" .. isv.tenant .. "/v2.0/.well-known/openid-configuration" }
      assert.equals(400, foreign.status)
    end)
  end
end)

-- Issue 10 point 6: Graph, Key Vault, the Storage resource provider and ARM throttle at once; the
-- clients honour Retry-After and onboard finishes.
describe("stock workflows under throttling", function()
  local throttled_emu
  setup(function()
    throttled_emu = emulator.start { retry = { max_attempts = 8, base_delay_ms = 10 } }
    db = assert(core.store.open(files.tmpdir() .. "/runs-throttled.db"))
  end)
  teardown(function() if throttled_emu then throttled_emu:stop() end end)

  it("onboard backs off on every service's 429 and finishes", function()
    logs = {}
    contexts.isv, contexts.customer = throttled_emu:context("isv"), throttled_emu:context("customer")
    local resp = throttled_emu:control("PUT", "/_emulator/throttling", {
      graph = { requests = 1, per_seconds = 3 }, keyvault = { requests = 1, per_seconds = 1 },
      storage = { writes = 1, per_seconds = 2 }, arm = { reads_per_minute = 40, writes_per_minute = 40 } })
    assert.equals(200, resp.status)
    local r = ok_run("onboard", { customer = CUSTOMER })
    assert.equals("Microsoft.Keyvault", r.outputs.storage_account.properties.encryption.keySource)
    ok_run("rotate-key", { customer = CUSTOMER, tracking = "versioned" }) -- Key Vault data plane, a Storage write
    for i = 1, 2 do -- two writes in a row: the second waits for the Storage provider's bucket
      assert(contexts.isv.arm:patch(r.outputs.storage_account.id, { tags = { n = tostring(i) } },
        { api_version = "2023-01-01" }))
    end
    local journal = json.decode(throttled_emu:control("GET", "/_emulator/journal").body).value
    local seen = {}
    for _, e in ipairs(journal) do
      if e.throttled and e.status == 429 then
        local key = e.service
        if e.service == "arm" and e.path:lower():find("microsoft.storage", 1, true) then key = "storage" end
        seen[key] = true
      end
    end
    assert.is_true(seen.graph, "Graph throttled")
    assert.is_true(seen.keyvault, "Key Vault throttled")
    assert.is_true(seen.storage, "the Storage provider throttled")
  end)
end)
