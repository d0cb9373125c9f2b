-- The real two-party onboarding (docs/handoff.md): the ISV and the customer on two machines (two
-- config files, each with only its own party's credentials, and two state directories) against one
-- external emulator, everything through the cmkflow binary.
local json = require("cmkflow.core").json
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"
local demo_seed = require "cmkflow.emulator.demo_seed"

local ISV, CUSTOMER = demo_seed.tenants[1], demo_seed.tenants[2]

local function context_text(t, secret, subscription)
  local pr = t.principals[1]
  return ("{ tenant = %q, subscription = %q, credential = { client_id = %q, client_secret = %q } }")
    :format(t.id, subscription or t.subscriptions[1].id, pr.appId, secret or pr.secret)
end

-- cmkflow ARGS run from directory `dir` (a relative --config is relative to it), like cli.run
local function run_in(dir, args, env)
  local out, err = os.tmpname(), os.tmpname()
  local parts = { "cd", cli.quote(dir), "&&", "env", "-u", "AZURE_TENANT_ID", "-u", "AZURE_CLIENT_ID",
                  "-u", "AZURE_CLIENT_SECRET", "-u", "CMKFLOW_CONFIG", "-u", "CMKFLOW_LUA_PATH" }
  for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. cli.quote(v) end
  parts[#parts + 1] = cli.quote(cli.bin)
  for _, a in ipairs(args) do parts[#parts + 1] = cli.quote(a) end
  local _, _, code = os.execute(table.concat(parts, " ") .. " >" .. out .. " 2>" .. err .. " </dev/null")
  local r = { code = code, stdout = files.read(out, ""), stderr = files.read(err, "") }
  os.remove(out)
  os.remove(err)
  return r
end

-- the writes (not GET/HEAD) the emulator journaled since mark
local function writes_since(emu, mark)
  local n = 0
  for _, e in ipairs((emu:journal(mark - 1))) do
    if e.method ~= "GET" and e.method ~= "HEAD" and not tostring(e.path):find("/token", 1, true) then n = n + 1 end
  end
  return n
end

describe("the two-party onboarding", function()
  local emu, dir, isv_env, customer_env, cloud

  setup(function()
    emu = ext.start {}
    dir = files.tmpdir()
    cloud = ("cloud = { emulator = %q, ca_cert = %q }"):format(emu.url, emu.ca_cert)
    files.sh("mkdir -p " .. cli.quote(dir .. "/isv") .. " " .. cli.quote(dir .. "/customer"))
    files.write(dir .. "/isv/isv.lua", ("return { %s, isv = %s }\n"):format(cloud, context_text(ISV)))
    files.write(dir .. "/customer/customer.lua", ("return { %s, customer = %s }\n"):format(cloud, context_text(CUSTOMER)))
    isv_env = { CMKFLOW_STATE_DIR = dir .. "/isv/state" }
    customer_env = { CMKFLOW_STATE_DIR = dir .. "/customer/state" }
  end)
  teardown(function()
    if emu then emu:stop() end
    if dir then files.sh("rm -rf " .. cli.quote(dir)) end
  end)

  local run_id, handoff, handed

  it("1: the gate says everything the customer needs, as text and as JSON", function()
    local r = run_in(dir .. "/isv", { "run", "onboard", "--config", "isv.lua", "--param", "customer=northwind",
                                      "--param", "customer_tenant=" .. CUSTOMER.domain, "--output", "json" }, isv_env)
    assert.equals(6, r.code, r.stderr)
    local doc = json.decode(r.stdout)
    assert.equals("waiting", doc.status)
    assert.equals("handoff", doc.gate)
    run_id, handoff = doc.run_id, doc.handoff
    assert.equals(ISV.id, handoff.isvTenant)
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", handoff.appId)
    assert.equals(("https://login.microsoftonline.com/%s/v2.0/adminconsent?client_id=%s&scope=https://graph.microsoft.com/.default")
      :format(CUSTOMER.domain, handoff.appId), handoff.consentUrl)
    assert.is_nil(handoff.consentUrlNote)
    local creates = table.concat(handoff.customerMustCreate, "\n")
    assert.matches("soft delete and purge protection", creates, 1, true)
    assert.matches("RSA key", creates, 1, true)
    assert.matches("Key Vault Crypto Service Encryption User for the ISV application's service principal at the key",
      creates, 1, true)
    assert.matches("Cloud Application Administrator", table.concat(handoff.customerOperatorRoles, "\n"), 1, true)
    assert.equals(("cmkflow resume %s --param key_vault_uri=<the customer's vault URI> --param key_name=<the customer's key name>")
      :format(run_id), handoff.isvCommand)
    assert.matches("--param isv_run=" .. run_id, handoff.customerCommand, 1, true)
    -- nothing in the customer's tenant yet
    local census = ext.onboard_census(emu:state())
    assert.equals(0, census.vaults)
    assert.equals(0, census.app_sps)

    -- the text says the same, and without customer_tenant the link says what to put where
    local t = run_in(dir .. "/isv", { "run", "isv-setup", "--config", "isv.lua", "--param", "customer=tailspin" }, isv_env)
    assert.equals(0, t.code, t.stderr)
    assert.matches("/{customer-tenant}/v2.0/adminconsent?client_id=", t.stdout, 1, true)
    assert.matches("replace {customer-tenant} with the customer's tenant id", t.stdout, 1, true)
    assert.matches("cmkflow run new-account --config " .. dir .. "/isv/isv.lua", t.stdout, 1, true)
    local w = run_in(dir .. "/isv", { "resume", run_id }, isv_env)
    assert.equals(6, w.code, w.stderr)
    assert.matches("consent link:  " .. handoff.consentUrl, w.stdout, 1, true)
    assert.matches("Key Vault Crypto Service Encryption User", w.stdout, 1, true)
    assert.matches(handoff.isvCommand, w.stdout, 1, true)
  end)

  it("3: a second run for the same customer is refused, naming the waiting one", function()
    local r = run_in(dir .. "/isv", { "run", "onboard", "--config", "isv.lua", "--param", "customer=northwind" }, isv_env)
    assert.equals(2, r.code, r.stderr)
    assert.matches("run " .. run_id .. " of onboard for customer northwind is not finished (waiting)", r.stderr, 1, true)
    assert.matches("cmkflow resume " .. run_id, r.stderr, 1, true)
    assert.matches("cmkflow runs cancel " .. run_id, r.stderr, 1, true)
  end)

  it("4: customer-authorize, customer credentials only, ends with the ISV's exact commands", function()
    local r = run_in(dir .. "/customer", { "run", "customer-authorize", "--config", "customer.lua",
      "--param", "customer=northwind", "--param", "app_id=" .. handoff.appId, "--param", "isv_run=" .. run_id },
      customer_env)
    assert.equals(0, r.code, r.stderr)
    local vault_uri = r.stdout:match("\nkey_vault_uri: (%S+)\n")
    assert.is_string(vault_uri)
    handed = { key_vault_uri = vault_uri, key_name = "cmk-northwind" }
    local approve = ("cmkflow approve %s handoff --param key_vault_uri=%s --param key_name=cmk-northwind")
      :format(run_id, vault_uri)
    assert.matches("hand the values above back to the ISV, who runs:\n  " .. approve .. "\n  cmkflow resume " .. run_id
      .. "\n", r.stdout, 1, true)
    -- without the ISV's run: new-account with the ISV's config and this cloud named, never bare
    local j = run_in(dir .. "/customer", { "run", "customer-authorize", "--config", "customer.lua",
      "--param", "customer=northwind", "--param", "app_id=" .. handoff.appId, "--output", "json" }, customer_env)
    assert.equals(0, j.code, j.stderr)
    assert.matches("^cmkflow run new%-account %-%-config isv%.lua %-%-cloud emulator ",
      json.decode(j.stdout).outputs.isvCommands[1])
  end)

  it("3: values are checked, a wrong one fails fast naming who acts, a correction reruns what used it", function()
    local bad = run_in(dir .. "/isv", { "approve", run_id, "handoff", "--param",
      "key_vault_uri=https://kv1.vault.usgovcloudapi.net", "--param", "key_name=k_1" }, isv_env)
    assert.equals(2, bad.code)
    assert.matches("key vault URI 'https://kv1.vault.usgovcloudapi.net' is invalid: use https://{vault-name}.vault.azure.net",
      bad.stderr, 1, true)
    assert.matches("key name 'k_1' is invalid", bad.stderr, 1, true)
    local wrong = run_in(dir .. "/isv", { "approve", run_id, "handoff", "--param", "key_vault_uri=" .. handed.key_vault_uri,
      "--param", "key_name=not-the-key" }, isv_env)
    assert.equals(0, wrong.code, wrong.stderr)
    -- resumed from another directory: the run keeps its config's absolute path
    local failed = run_in("/", { "resume", run_id, "--output", "json" }, isv_env)
    assert.equals(1, failed.code, failed.stderr)
    local err = json.decode(failed.stdout).error
    assert.equals("storage_account", err.step)
    assert.equals("KeyVaultAccessForbidden", err.code) -- Azure's error, not PropagationTimeout
    assert.equals("customer", err.tenant)
    assert.matches("cmkflow approve " .. run_id .. " handoff", err.hint, 1, true)
    -- correct only the key name; the vault URI approved before stays
    local fixed = run_in(dir .. "/isv", { "approve", run_id, "handoff", "--param", "key_name=" .. handed.key_name }, isv_env)
    assert.equals(0, fixed.code, fixed.stderr)
    assert.matches("decided again", fixed.stderr, 1, true)
    local done = run_in("/", { "resume", run_id, "--output", "json" }, isv_env)
    assert.equals(0, done.code, done.stderr)
    local kvp = json.decode(done.stdout).outputs.storage_account.properties.encryption.keyvaultproperties
    assert.equals(handed.key_name, kvp.keyname)
    assert.matches("/keys/cmk%-northwind/%x+$", kvp.currentVersionedKeyIdentifier)
    local late = run_in(dir .. "/isv", { "approve", run_id, "handoff", "--param", "key_name=other" }, isv_env)
    assert.equals(2, late.code)
    assert.matches("has succeeded", late.stderr, 1, true)
  end)

  it("2: the customer kit: README, consent link, az script, customer.lua template; the cmkflow route ends with the ISV's commands", function()
    local env = { CMKFLOW_STATE_DIR = dir .. "/isv/state-kit" }
    local first = run_in(dir .. "/isv", { "run", "onboard", "--config", "isv.lua", "--param", "customer=contoso",
                                          "--output", "json" }, env)
    assert.equals(6, first.code, first.stderr)
    local id = json.decode(first.stdout).run_id
    local kit = dir .. "/kit"
    local r = run_in(dir .. "/isv", { "handoff", id, "--out", kit }, env)
    assert.equals(0, r.code, r.stderr)
    local readme = files.read(kit .. "/README.md")
    assert.matches("/v2.0/adminconsent?client_id=" .. handoff.appId, readme, 1, true)
    assert.matches("How to revoke later", readme, 1, true)
    assert.matches("cmkflow approve " .. id .. " handoff --param key_vault_uri=VAULT_URI --param key_name=KEY_NAME",
      readme, 1, true)
    local script = files.read(kit .. "/customer.sh")
    assert.matches("RUN=" .. id, script, 1, true)
    assert.matches("--enable-purge-protection true --enable-rbac-authorization true", script, 1, true)
    assert.matches('echo "  cmkflow approve $RUN handoff --param key_vault_uri=$VAULT_URI --param key_name=$KEY"',
      script, 1, true)
    assert.is_true(os.execute("sh -n " .. cli.quote(kit .. "/customer.sh")))
    -- the cmkflow route: the template filled in, the command as written in the kit
    local template = files.read(kit .. "/customer.lua")
    local pr = CUSTOMER.principals[1]
    local filled = template:gsub('"https://127.0.0.1:PORT"', ("%q"):format(emu.url))
      :gsub('"PATH/ca.pem"', ("%q"):format(emu.ca_cert)):gsub("YOUR%-TENANT%-ID", CUSTOMER.id)
      :gsub("YOUR%-SUBSCRIPTION%-ID", CUSTOMER.subscriptions[1].id):gsub("YOUR%-APP%-ID", pr.appId)
    files.write(kit .. "/customer.lua", filled)
    local argv = {}
    for word in files.read(kit .. "/customer-authorize.txt"):gmatch("%S+") do argv[#argv + 1] = word end
    assert.equals("cmkflow", table.remove(argv, 1))
    local c = run_in(kit, argv, { CMKFLOW_STATE_DIR = dir .. "/customer/state-kit", CUSTOMER_SECRET = pr.secret })
    assert.equals(0, c.code, c.stderr)
    local pid = id:gsub("%-", "%%-")
    assert.matches("  cmkflow approve " .. pid .. " handoff %-%-param key_vault_uri=https://kv%-contoso%-%x+%.vault%.azure%.net/ "
      .. "%-%-param key_name=cmk%-contoso\n  cmkflow resume " .. pid, c.stdout)
    assert.equals(0, run_in(dir .. "/isv", { "runs", "cancel", id }, env).code)
  end)

  it("6: verify by party, before and after revoke: never a false all-clear", function()
    local function verify(side)
      local args = side == "isv"
        and { "run", "verify", "--config", "isv.lua", "--param", "customer=northwind", "--output", "json" }
        or { "run", "verify", "--config", "customer.lua", "--param", "customer=northwind",
             "--param", "app_id=" .. handoff.appId, "--output", "json" }
      local r = run_in(dir .. "/" .. side, args, side == "isv" and isv_env or customer_env)
      return r.code, json.decode(r.stdout), r
    end
    local code, doc, r = verify("isv")
    assert.equals(7, code, r.stderr)
    assert.equals("Unverified", doc.error.code)
    assert.same({ app = "ok", identity = "ok", federated_credential = "ok", storage_account = "ok",
                  key_access = "ok", service_principal = "unverified", key_vault = "unverified", key = "unverified",
                  role_assignment = "unverified" }, doc.outputs.checks)
    assert.equals("customer", doc.outputs.unverified[1].who)
    code, doc, r = verify("customer")
    assert.equals(7, code, r.stderr)
    assert.same({ app = "unverified", identity = "unverified", federated_credential = "unverified",
                  storage_account = "unverified", key_access = "unverified", service_principal = "ok", key_vault = "ok", key = "ok",
                  role_assignment = "ok" }, doc.outputs.checks)
    assert.equals("isv", doc.outputs.unverified[1].who)

    local revoke = run_in(dir .. "/customer", { "run", "revoke", "--yes", "--config", "customer.lua", "--param",
      "customer=northwind", "--param", "app_id=" .. handoff.appId }, customer_env)
    assert.equals(0, revoke.code, revoke.stderr)
    code, doc, r = verify("customer")
    assert.equals(1, code, r.stderr)
    assert.equals("BrokenLink", doc.error.code)
    assert.equals("role_assignment", doc.outputs.broken.link)
    assert.equals("customer", doc.error.tenant)
    -- the ISV alone sees the account's key access fail, and who must act
    code, doc, r = verify("isv")
    assert.equals(1, code, r.stderr)
    assert.is_false(doc.outputs.ok)
    assert.equals("BrokenLink", doc.error.code)
    assert.equals("key_access", doc.outputs.broken.link)
    assert.equals("customer", doc.error.tenant)
    -- as text: one line per link, in the order Storage walks the chain, with whose side it is
    local text = run_in(dir .. "/isv", { "run", "verify", "--config", "isv.lua", "--param", "customer=northwind" }, isv_env)
    assert.equals(1, text.code, text.stderr)
    assert.matches("\n  broken +key_access +%(ISV side%)\n", text.stdout)
    assert.matches("\n  ok +storage_account +%(ISV side%)\n", text.stdout)
    assert.matches("\n  unverified +role_assignment +%(customer side%): the customer checks it\n", text.stdout)
    assert.is_nil(text.stdout:find('"checks"', 1, true))

    -- the customer grants again (customer-authorize is idempotent) for what follows
    local again = run_in(dir .. "/customer", { "run", "customer-authorize", "--config", "customer.lua",
      "--param", "customer=northwind", "--param", "app_id=" .. handoff.appId }, customer_env)
    assert.equals(0, again.code, again.stderr)
  end)

  it("7: rotation by party, as Azure does it: the customer rotates, Storage picks the version up at its daily check", function()
    local function rotate(side, params, env)
      local args = { "run", "rotate-key", "--config", side == "isv" and "isv.lua" or "customer.lua",
                     "--param", "customer=northwind", "--output", "json" }
      for _, p in ipairs(params or {}) do args[#args + 1] = "--param" args[#args + 1] = p end
      local r = run_in(dir .. "/" .. side, args, env or (side == "isv" and isv_env or customer_env))
      return r.code, json.decode(r.stdout), r
    end
    local code, c, r = rotate("customer")
    assert.equals(0, code, r.stderr)
    local v1 = c.outputs.new_version
    assert.matches("^%x+$", v1)
    assert.equals("isv_next", c.outputs.status)
    assert.equals("cmkflow run rotate-key --config isv.lua --param customer=northwind --param key_version=" .. v1,
      c.outputs.isvCommand)
    -- the ISV alone, before Storage's daily check: pending, documented, exit 0
    local i
    code, i, r = rotate("isv", { "key_version=" .. v1 })
    assert.equals(0, code, r.stderr)
    assert.equals("pending", i.outputs.status)
    assert.equals("versionless", i.outputs.tracking)
    assert.is_nil(i.outputs.new:find(v1, 1, true))
    assert.matches("within 24 hours", i.outputs.note, 1, true)
    -- a day later (the emulator's clock) the account follows
    assert.equals(200, (emu:request("POST", "/_emulator/clock", { advance_seconds = 86400 })))
    code, i, r = rotate("isv", { "key_version=" .. v1 })
    assert.equals(0, code, r.stderr)
    assert.equals("current", i.outputs.status)
    assert.matches("/keys/cmk%-northwind/" .. v1 .. "$", i.outputs.new)

    -- wait_s polls within its bound while the day passes
    code, c, r = rotate("customer")
    assert.equals(0, code, r.stderr)
    local v2 = c.outputs.new_version
    local policy = files.write(dir .. "/isv/poll-policy.lua", "return { key_pickup_poll_s = 1 }\n")
    files.write(dir .. "/isv/isv-poll.lua", ("return { %s, isv = %s, policy = %q }\n"):format(cloud, context_text(ISV), policy))
    -- most of the day passes first: the waiting client's token (an hour of the emulator's clock)
    -- stays valid over the rest of it
    assert.equals(200, (emu:request("POST", "/_emulator/clock", { advance_seconds = 86400 - 600 })))
    local p = ext.spawn({ "run", "rotate-key", "--config", dir .. "/isv/isv-poll.lua", "--param", "customer=northwind",
      "--param", "key_version=" .. v2, "--param", "wait_s=120", "--output", "json" }, isv_env)
    ext.sleep(3)
    assert.is_false(p:done())
    assert.equals(200, (emu:request("POST", "/_emulator/clock", { advance_seconds = 600 })))
    local w = p:wait()
    assert.equals(0, w.code, w.stderr)
    assert.equals("current", json.decode(w.stdout).outputs.status)
    assert.matches("waiting 1 s for Azure Storage to pick up key version " .. v2, w.stderr, 1, true)

    -- a pinned version: the customer rotates, the ISV PATCHes the account to it at once
    code, c, r = rotate("customer", { "tracking=versioned" })
    assert.equals(0, code, r.stderr)
    local v3 = c.outputs.new_version
    assert.matches("--param tracking=versioned", c.outputs.isvCommand, 1, true)
    code, i, r = rotate("isv", { "key_version=" .. v3, "tracking=versioned" })
    assert.equals(0, code, r.stderr)
    assert.equals("updated", i.outputs.status)
    assert.matches("/keys/cmk%-northwind/" .. v3 .. "$", i.outputs.new)
  end)

  it("3: resume --param approves the waiting gate; cancel ends a run for good", function()
    local first = run_in(dir .. "/isv", { "run", "onboard", "--config", "isv.lua", "--param", "customer=litware",
                                          "--output", "json" }, isv_env)
    assert.equals(6, first.code, first.stderr)
    local id = json.decode(first.stdout).run_id
    local bad = run_in(dir .. "/isv", { "resume", id, "--param", "key_name=x y" }, isv_env)
    assert.equals(2, bad.code)
    assert.matches("key_vault_uri", bad.stderr, 1, true)
    local cancel = run_in(dir .. "/isv", { "runs", "cancel", id }, isv_env)
    assert.equals(0, cancel.code, cancel.stderr)
    assert.matches("cancelled (was waiting)", cancel.stdout, 1, true)
    local resumed = run_in(dir .. "/isv", { "resume", id }, isv_env)
    assert.equals(2, resumed.code)
    assert.matches("was cancelled", resumed.stderr, 1, true)
    local again = run_in(dir .. "/isv", { "run", "onboard", "--config", "isv.lua", "--param", "customer=litware" }, isv_env)
    assert.equals(6, again.code, again.stderr)
  end)

  it("3: a run whose config file moved says so, and resumes with --config", function()
    local env = { CMKFLOW_STATE_DIR = dir .. "/isv/state-moved" }
    files.sh("mkdir -p " .. cli.quote(dir .. "/moving"))
    files.write(dir .. "/moving/isv.lua", ("return { %s, isv = %s }\n"):format(cloud, context_text(ISV)))
    local first = run_in(dir .. "/moving", { "run", "onboard", "--config", "isv.lua", "--param", "customer=adatum",
                                             "--output", "json" }, env)
    assert.equals(6, first.code, first.stderr)
    local id = json.decode(first.stdout).run_id
    files.sh("mv " .. cli.quote(dir .. "/moving/isv.lua") .. " " .. cli.quote(dir .. "/moved.lua"))
    local r = run_in("/", { "resume", id }, env)
    assert.equals(2, r.code)
    assert.matches("config file " .. dir .. "/moving/isv.lua, which is no longer there", r.stderr, 1, true)
    assert.matches("--config", r.stderr, 1, true)
    local again = run_in("/", { "resume", id, "--config", dir .. "/moved.lua" }, env)
    assert.equals(6, again.code, again.stderr)
  end)

  it("5: a bad credential fails in seconds with exit 4, naming the context and tenant, nothing created", function()
    local both = dir .. "/both-bad.lua"
    files.write(both, ("return { %s, isv = %s, customer = %s }\n"):format(cloud, context_text(ISV),
      context_text(CUSTOMER, "not-the-secret")))
    local mark = emu:mark()
    local r = run_in(dir, { "run", "onboard", "--config", both, "--param", "customer=woodgrove" },
                     { CMKFLOW_STATE_DIR = dir .. "/state-bad" })
    assert.equals(4, r.code, r.stderr)
    local said = r.stdout .. r.stderr -- the run exists (failed, nothing changed): its result names the cause
    assert.matches("context 'customer' (tenant " .. CUSTOMER.id .. "): its credential gets no token", said, 1, true)
    assert.matches("[customer tenant must fix this]", said, 1, true)
    assert.matches("check the credential of context 'customer'", said, 1, true)
    assert.equals(0, writes_since(emu, mark))
    -- a subscription the credential cannot see
    local nosub = dir .. "/nosub.lua"
    files.write(nosub, ("return { %s, isv = %s }\n"):format(cloud, context_text(ISV, nil,
      "00000000-0000-4000-8000-0000000000ff")))
    local s = run_in(dir, { "run", "onboard", "--config", nosub, "--param", "customer=woodgrove" },
                     { CMKFLOW_STATE_DIR = dir .. "/state-bad" })
    assert.equals(4, s.code, s.stderr)
    assert.matches("subscription 00000000-0000-4000-8000-0000000000ff is not visible", s.stdout .. s.stderr, 1, true)
    assert.equals(0, writes_since(emu, mark))
  end)
end)
