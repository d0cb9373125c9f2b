-- bulk-onboard as ISVs live it, against an external emulator seeded with an ISV tenant (two
-- subscriptions) and one tenant per customer: with the ISV's credentials only every customer waits
-- for its customer with a kit; after some customers hand their values back, a second pass completes
-- exactly those (reusing their runs) and sends nothing for the others; a config mapping the other
-- customers' tenants to credentials completes them both sides; a wrong value fails its customer
-- naming the customer as the party to act; storage accounts spread over the policy's subscriptions
-- and regions, and a list that cannot fit is refused before any request, naming what to add.
local json = require("cmkflow.core").json
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"

local N = 6
local ISV_SUBS = { "1a2b3c4d-0000-4000-8000-00000000a001", "1a2b3c4d-0000-4000-8000-00000000a002" }

-- an ISV tenant with two subscriptions and N customer tenants, each with a subscription and an admin
local function make_seed()
  local isv = {
    id = "7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d", name = "isv", domain = "isv.example",
    subscriptions = { { id = ISV_SUBS[1], name = "isv-a" }, { id = ISV_SUBS[2], name = "isv-b" } },
    principals = { { name = "isv-deployer", appId = "5e6f7a8b-0000-4000-8000-00000000a0d1",
      secret = "emulator-isv-deployer-secret",
      roles = { { role = "Owner", scope = "/subscriptions/" .. ISV_SUBS[1] },
                { role = "Owner", scope = "/subscriptions/" .. ISV_SUBS[2] } },
      graph_roles = { "Application.ReadWrite.All" } } },
  }
  local seed = { random_seed = 7, tenants = { isv } }
  for i = 1, N do
    local sub = ("9d8c7b6a-0000-4000-8000-%012d"):format(i)
    seed.tenants[#seed.tenants + 1] = {
      id = ("3c9e1b7d-2a4f-4e6b-8c0d-%012d"):format(i), name = "customer" .. i, domain = ("c%d.example"):format(i),
      subscriptions = { { id = sub, name = "c" .. i } },
      principals = { { name = "admin" .. i, appId = ("2b3c4d5e-0000-4000-8000-%012d"):format(i),
        secret = "emulator-customer-secret-" .. i,
        roles = { { role = "Owner", scope = "/subscriptions/" .. sub },
                  { role = "Key Vault Crypto Officer", scope = "/subscriptions/" .. sub } },
        graph_roles = { "Application.ReadWrite.All" } } },
    }
  end
  return seed
end

local function context(t)
  local p = t.principals[1]
  return ("{ tenant = %q, subscription = %q, credential = { client_id = %q, client_secret = %q } }")
    :format(t.id, t.subscriptions[1].id, p.appId, p.secret)
end

describe("cmkflow run bulk-onboard, one tenant per customer (external emulator)", function()
  local emu, dir, seed, env, isv_config, policy, list_path

  local function customer(i) return "cust" .. i end
  local function tenant(i) return seed.tenants[i + 1] end

  local function write_list(values)
    local lines = { "customer,customer_tenant,key_vault_uri,key_name" }
    for i = 1, N do
      local v = values[i] or {}
      lines[#lines + 1] = ("%s,%s,%s,%s"):format(customer(i), tenant(i).id, v.key_vault_uri or "", v.key_name or "")
    end
    return files.write(list_path, table.concat(lines, "\n") .. "\n")
  end

  local function bulk(config, extra)
    local argv = { "run", "bulk-onboard", "--param", "file=" .. list_path, "--param", "kits=" .. dir .. "/kits",
                   "--param", "concurrency=4", "--output", "json", "--config", config }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    local r = cli.run(argv, env)
    return r, json.decode(r.stdout ~= "" and r.stdout or "null")
  end

  local function writes_since(mark)
    local out = {}
    for _, e in ipairs(emu:journal(mark)) do
      if (e.service == "arm" or e.service == "graph" or e.service == "keyvault") and e.method ~= "GET" then
        out[#out + 1] = e.method .. " " .. e.path
      end
    end
    return out
  end

  local first

  setup(function()
    seed = make_seed()
    dir = files.tmpdir()
    local seed_path = files.write(dir .. "/seed.json", json.encode(seed))
    emu = ext.start { args = { "--seed", seed_path }, state = false, lifetime = 600 }
    policy = files.write(dir .. "/policy.lua", ([[
return { placement = { subscriptions = { %q, %q }, locations = { "westeurope", "northeurope" },
                       accounts_per_region = 2 } }
]]):format(ISV_SUBS[1], ISV_SUBS[2]))
    isv_config = files.write(dir .. "/isv.lua", ("return { cloud = { emulator = %q, ca_cert = %q },\n  isv = %s,\n"
      .. "  policy = %q }\n"):format(emu.url, emu.ca_cert, context(seed.tenants[1]), policy))
    env = { CMKFLOW_STATE_DIR = dir .. "/state" }
    list_path = dir .. "/customers.csv"
    write_list({})
    first = { bulk(isv_config) }
  end)

  teardown(function() if emu then emu:stop() end end)

  it("with the ISV's credentials only, prepares every customer and writes each one's kit", function()
    local r, doc = first[1], first[2]
    assert.equals(6, r.code, r.stderr)
    assert.equals(N, doc.waiting)
    assert.equals(0, doc.done)
    assert.equals(0, doc.failed)
    for i, run in ipairs(doc.runs) do
      assert.equals(customer(i), run.customer)
      assert.equals("waiting", run.outcome)
      assert.equals(dir .. "/kits/" .. customer(i), run.kit)
      local readme = files.read(run.kit .. "/README.md")
      assert.is_string(readme)
      assert.truthy(files.read(run.kit .. "/customer-authorize.txt"):find(run.run_id, 1, true))
      assert.truthy(files.read(run.kit .. "/consent-link.txt"):find(tenant(i).id, 1, true))
    end
  end)

  it("spreads the storage accounts over the policy's subscriptions and regions", function()
    local per_slot, subs = {}, {}
    for _, run in ipairs(first[2].runs) do
      local k = run.subscription .. "/" .. run.location
      per_slot[k] = (per_slot[k] or 0) + 1
      subs[run.subscription] = true
    end
    for _, n in pairs(per_slot) do assert.is_true(n <= 2) end
    assert.is_true(subs[ISV_SUBS[1]] and subs[ISV_SUBS[2]])
    local slots = 0
    for _ in pairs(per_slot) do slots = slots + 1 end
    assert.equals(4, slots)
  end)

  local handed = {}

  it("completes the customers who handed values back, reusing their runs, and sends nothing for the others", function()
    local doc = first[2]
    -- customers 1 and 2 authorize on their side, from their kits
    for i = 1, 2 do
      local kit_cmd = files.read(doc.runs[i].kit .. "/customer-authorize.txt")
      local app_id = kit_cmd:match("app_id=([%x%-]+)")
      assert.is_string(app_id, kit_cmd)
      local cconf = files.write(dir .. "/customer" .. i .. ".lua", ("return { cloud = { emulator = %q, ca_cert = %q },\n"
        .. "  customer = %s }\n"):format(emu.url, emu.ca_cert, context(tenant(i))))
      local a = cli.run({ "run", "customer-authorize", "--config", cconf, "--param", "customer=" .. customer(i),
                          "--param", "app_id=" .. app_id, "--param", "isv_run=" .. doc.runs[i].run_id,
                          "--output", "json" }, { CMKFLOW_STATE_DIR = dir .. "/customer-state" .. i })
      assert.equals(0, a.code, a.stderr)
      local out = json.decode(a.stdout).outputs
      handed[i] = { key_vault_uri = out.key_vault_uri, key_name = out.key_name }
    end
    write_list(handed)
    local mark = emu:mark()
    local r, again = bulk(isv_config)
    assert.equals(6, r.code, r.stderr)
    assert.equals(2, again.done)
    assert.equals(N - 2, again.waiting)
    for i, run in ipairs(again.runs) do
      assert.equals(doc.runs[i].run_id, run.run_id) -- the same run, continued
      assert.equals(i <= 2 and "done" or "waiting", run.outcome)
      if i <= 2 then assert.matches("^st" .. customer(i) .. "%x+$", run.storage_account) end
    end
    -- every change went to the two customers who handed their values back
    local writes = writes_since(mark)
    assert.is_true(#writes >= 2, table.concat(writes, "\n"))
    for _, w in ipairs(writes) do
      assert.truthy(w:find(customer(1), 1, true) or w:find(customer(2), 1, true), w)
    end
    local runs = cli.run({ "runs", "list", "--output", "json" }, env)
    assert.equals(N, #json.decode(runs.stdout))
  end)

  it("fails a customer whose handed-back vault does not exist, naming the party that must act", function()
    -- customer 3 hands back (or the ISV types) a vault URI where there is no vault
    handed[3] = { key_vault_uri = "https://kv-nothere-000000.vault.azure.net/", key_name = "cmk-typo" }
    write_list(handed)
    local r, doc = bulk(isv_config)
    assert.equals(1, r.code, r.stderr)
    assert.equals(1, doc.failed)
    local run = doc.runs[3]
    assert.equals("failed", run.outcome)
    assert.equals("KeyVaultVaultNotFound", run.error.code)
    assert.equals("storage_account", run.error.step)
    -- Storage answers for the ISV's account: the ISV checks the values it approved first
    assert.equals("isv", run.party)
    -- the others as before: two done, three waiting
    assert.equals(2, doc.done)
    assert.equals(N - 3, doc.waiting)
    local text = cli.run({ "run", "bulk-onboard", "--param", "file=" .. list_path, "--param", "kits=" .. dir .. "/kits",
                           "--config", isv_config }, env)
    assert.equals(1, text.code)
    assert.matches("\ncust3 +%S+ +failed +KeyVaultVaultNotFound: [^\n]*%(the ISV must act%)\n", text.stdout)
    assert.matches("\ncust4 +%S+ +waiting +waiting for the customer: kit " .. dir:gsub("%p", "%%%0") .. "/kits/cust4\n",
      text.stdout)
  end)

  it("runs both sides for the customers whose tenants the config maps to credentials", function()
    local map = {}
    for i = 3, N do map[#map + 1] = ("    [%q] = %s,\n"):format(tenant(i).id, context(tenant(i))) end
    local both = files.write(dir .. "/both.lua", ("return { cloud = { emulator = %q, ca_cert = %q },\n  isv = %s,\n"
      .. "  policy = %q,\n  customers = {\n%s  } }\n"):format(emu.url, emu.ca_cert, context(seed.tenants[1]), policy,
      table.concat(map)))
    local r, doc = bulk(both)
    -- customer 3's run keeps the values approved before (a failed customer stays failed until its party acts)
    assert.equals(1, r.code, r.stderr .. r.stdout)
    assert.equals(N - 1, doc.done)
    assert.equals("failed", doc.runs[3].outcome)
    for i = 4, N do
      local show = cli.run({ "runs", "show", doc.runs[i].run_id, "--output", "json" }, env)
      local run = json.decode(show.stdout)
      assert.equals("succeeded", run.status)
      -- the customer's vault is in the customer's own subscription
      assert.truthy(run.outputs.key.vaultUri)
      assert.truthy(json.encode(run.outputs.role_assignment):find(tenant(i).subscriptions[1].id, 1, true),
        json.encode(run.outputs.role_assignment))
    end
  end)

  it("refuses a list whose storage accounts cannot fit, before any request, naming what to add", function()
    local lines = { "customer,customer_tenant" }
    for i = 1, N do lines[#lines + 1] = customer(i) .. "," .. tenant(i).id end
    for i = 1, 3 do lines[#lines + 1] = ("extra%d,%s"):format(i, tenant(i).id) end
    files.write(list_path, table.concat(lines, "\n") .. "\n")
    local mark = emu:mark()
    local r = cli.run({ "run", "bulk-onboard", "--param", "file=" .. list_path, "--config", isv_config }, env)
    assert.equals(2, r.code, r.stderr)
    assert.matches("3 new storage account%(s%) do not fit", r.stderr)
    assert.matches("room for 2; add 1 subscription%(s%) to placement.subscriptions or 1 region%(s%) to placement.locations",
      r.stderr)
    assert.equals(0, #emu:journal(mark))
  end)
end)
