-- What a run says through the binary (issue 12, points 1 and 2): the summary of what was created,
-- updated or left unchanged where, the plan that reads the world (+ ~ =, --detailed-exitcode, no
-- mutating request in the emulator's journal), text / table / json, and errors that print their
-- code once and blame no tenant for a local problem.
local json = require("cmkflow.core").json
local cli = require "support.cli"
local ext = require "support.external_emulator"
local files = require "support.files"
local demo_seed = require "cmkflow.emulator.demo_seed"

local ISV, CUSTOMER = demo_seed.tenants[1], demo_seed.tenants[2]
local ESC = "\27["

local function count(haystack, needle)
  local n, at = 0, 1
  while true do
    local i = haystack:find(needle, at, true)
    if not i then return n end
    n, at = n + 1, i + #needle
  end
end

-- Only reads reached Azure since `mark`: GETs, and the token requests (POST to Entra ID's token
-- endpoint) that authenticate them.
local function assert_only_reads(emu, mark)
  local entries = emu:journal(mark - 1)
  assert.is_true(#entries > 0)
  for _, e in ipairs(entries) do
    local token = e.method == "POST" and e.path:match("/oauth2/v2%.0/token$") ~= nil
    assert(e.method == "GET" or token, ("a plan sent %s %s"):format(e.method, e.path))
  end
end

describe("cmkflow run / plan: what happened, what would (external emulator, both tenants)", function()
  local emu, config, policy_path, state_dir
  local env

  setup(function()
    emu = ext.start {}
    state_dir = files.tmpdir()
    policy_path = emu.dir .. "/policy.lua"
    files.write(policy_path, "return {}\n")
    config = emu:config { policy = policy_path }
    env = { CMKFLOW_STATE_DIR = state_dir, NO_COLOR = "1" }
  end)

  teardown(function()
    if emu then emu:stop() end
  end)

  local function run(args) return cli.run(args, env) end

  it("plans a fresh world as + create for every resource, exit 2 with --detailed-exitcode, reads only", function()
    local mark = emu:mark()
    local r = run { "plan", "onboard", "--config", config, "--param", "customer=contoso", "--detailed-exitcode" }
    assert.equals(2, r.code, r.stderr .. r.stdout)
    assert.matches("\n  %+ create +storage account +stcontoso%x+  %(resource group rg%-cmk%-data%-contoso%)\n", r.stdout)
    assert.matches("\n  %+ create +key vault +kv%-contoso", r.stdout)
    assert.matches("\n  %+ create +application +cmkflow%-cross%-tenant%-cmk\n", r.stdout)
    assert.matches("ISV tenant " .. ISV.id .. ", subscription " .. ISV.subscriptions[1].id, r.stdout, 1, true)
    assert.is_nil(r.stdout:find("\n  = unchanged", 1, true))
    assert.is_nil(r.stdout:find(ESC, 1, true)) -- not a terminal, and NO_COLOR
    assert_only_reads(emu, mark)
    local j = run { "plan", "onboard", "--config", config, "--param", "customer=contoso", "--output", "json" }
    assert.equals(0, j.code, j.stderr)
    local doc = assert(json.decode(j.stdout))
    assert.equals("onboard", doc.workflow)
    for _, c in ipairs(doc.changes) do assert.equals("create", c.action, c.type) end
  end)

  local first, applied_id
  it("says what a first onboard created: tenant, subscription, resource group, name; no handoff text", function()
    local r = run { "run", "onboard", "--config", config, "--param", "customer=contoso" }
    assert.equals(0, r.code, r.stderr .. r.stdout)
    first = r.stdout
    assert.matches("^run %x+%-[%x-]+ %(onboard%): succeeded %(12 created%)\n", r.stdout)
    local isv_heading = "ISV tenant " .. ISV.id .. ", subscription " .. ISV.subscriptions[1].id .. "\n"
    local customer_heading = "customer tenant " .. CUSTOMER.id .. ", subscription " .. CUSTOMER.subscriptions[1].id
      .. "\n"
    assert.matches(isv_heading, r.stdout, 1, true)
    assert.matches(customer_heading, r.stdout, 1, true)
    assert.matches("\n  %+ created +storage account +stcontoso%x+  %(resource group rg%-cmk%-data%-contoso%)\n", r.stdout)
    assert.matches("\n  %+ created +key +cmk%-contoso  %(resource group rg%-cmk%-contoso%)\n", r.stdout)
    assert.matches("\n  %+ created +resource group +rg%-cmkflow%-isv\n", r.stdout)
    -- what the operator needs next
    assert.matches("\nkey in use: +https://kv%-contoso%-%x+%.vault%.azure%.net/keys/cmk%-contoso %(versionless", r.stdout)
    assert.matches("\nverify: +cmkflow run verify %-%-config " .. config:gsub("%p", "%%%0") .. " %-%-param customer=contoso\n",
      r.stdout)
    -- both tenants ran: nothing of the handoff applies
    for _, gone in ipairs { "customerCommand", "customer-authorize", "consent", "{customer-tenant}", "handoff" } do
      assert.is_nil(r.stdout:find(gone, 1, true), gone)
    end
    -- no ARM JSON dumped
    assert.is_nil(r.stdout:find('"properties"', 1, true))
  end)

  it("says unchanged on a rerun; json carries every record with its place", function()
    assert.is_string(first)
    local r = run { "run", "onboard", "--config", config, "--param", "customer=contoso" }
    assert.equals(0, r.code, r.stderr .. r.stdout)
    assert.matches("^run %x+%-[%x-]+ %(onboard%): succeeded %(12 unchanged%)\n", r.stdout)
    assert.matches("\n  = unchanged +storage account +stcontoso%x+", r.stdout)
    assert.is_nil(r.stdout:find("created", 1, true))
    local j = run { "run", "onboard", "--config", config, "--param", "customer=contoso", "--output", "json" }
    assert.equals(0, j.code, j.stderr)
    local doc = assert(json.decode(j.stdout))
    assert.equals("succeeded", doc.status)
    assert.equals("onboard", doc.workflow)
    assert.equals(12, #doc.changes)
    local account
    for _, c in ipairs(doc.changes) do
      assert.equals("unchanged", c.action, c.type)
      if c.type == "storage account" then account = c end
    end
    assert.equals("isv", account.party)
    assert.equals(ISV.id, account.tenant)
    assert.equals(ISV.subscriptions[1].id, account.subscription)
    assert.equals("rg-cmk-data-contoso", account.resource_group)
    assert.equals(doc.outputs.storage_account.name, account.name)
    assert.equals("storage_account", account.step)
    -- the JSON contract keeps onboard's outputs
    assert.is_string(doc.outputs.handoff.appId)
  end)

  it("plans an onboarded world as = everywhere: exit 0 with --detailed-exitcode, reads only", function()
    local mark = emu:mark()
    local r = run { "plan", "onboard", "--config", config, "--param", "customer=contoso", "--detailed-exitcode" }
    assert.equals(0, r.code, r.stderr .. r.stdout)
    assert.equals(12, count(r.stdout, "\n  = unchanged "))
    assert.is_nil(r.stdout:find("\n  + create", 1, true))
    assert.is_nil(r.stdout:find("\n  ~ update", 1, true))
    assert.matches("\nno changes", r.stdout)
    assert_only_reads(emu, mark)
    -- Terraform's -refresh=false: nothing read, every step listed with what it would do
    local offline_mark = emu:mark()
    local offline = run { "plan", "onboard", "--config", config, "--param", "customer=contoso", "--refresh=false",
                          "--detailed-exitcode" }
    assert.equals(2, offline.code, offline.stderr .. offline.stdout)
    assert.matches("^plan for onboard %(not read: %-%-refresh=false%): 12 step%(s%)\n", offline.stdout)
    assert.equals(0, #emu:journal(offline_mark - 1))
  end)

  it("plans a changed policy as ~ update with the field, exit 2; the run then says updated", function()
    files.write(policy_path, [[
return { tags = function(c) return { ["managed-by"] = "cmkflow", customer = c.customer, team = "storage" } end }
]])
    local mark = emu:mark()
    local r = run { "plan", "onboard", "--config", config, "--param", "customer=contoso", "--detailed-exitcode" }
    assert.equals(2, r.code, r.stderr .. r.stdout)
    assert.matches("\n  ~ update +storage account +stcontoso%x+  %(resource group rg%-cmk%-data%-contoso%)\n"
      .. " +tags%.team: %(none%) %-> \"storage\"\n", r.stdout)
    assert.matches("\n  ~ update +key vault +kv%-contoso%-%x+ .-\n +tags%.team: %(none%) %-> \"storage\"\n", r.stdout)
    assert.matches("\n  = unchanged +key +cmk%-contoso", r.stdout)
    assert.matches("\nplan: 0 to create, 6 to update, 6 unchanged\n", r.stdout)
    assert_only_reads(emu, mark)
    -- the table form: one row per resource
    local t = run { "plan", "onboard", "--config", config, "--param", "customer=contoso", "--output", "table" }
    assert.equals(0, t.code, t.stderr)
    assert.matches("^Action +Tenant +Subscription +ResourceGroup +Type +Name +Changes\n%-+ ", t.stdout)
    assert.matches("\nupdate +isv " .. ISV.id:gsub("%-", "%%-") .. " +" .. ISV.subscriptions[1].id:gsub("%-", "%%-")
      .. " +rg%-cmk%-data%-contoso +storage account +stcontoso%x+ +tags%.team\n", t.stdout)
    local applied = run { "run", "onboard", "--config", config, "--param", "customer=contoso" }
    assert.equals(0, applied.code, applied.stderr .. applied.stdout)
    assert.matches("succeeded %(6 updated, 6 unchanged%)", applied.stdout)
    applied_id = applied.stdout:match("^run (%S+)")
    assert.matches("\n  ~ updated +storage account +stcontoso%x+ .-\n +tags%.team: %(none%) %-> \"storage\"\n", applied.stdout)
    local again = run { "plan", "onboard", "--config", config, "--param", "customer=contoso", "--detailed-exitcode" }
    assert.equals(0, again.code, again.stdout)
  end)

  it("shows a run as text, table or json (runs show)", function()
    local id = assert(applied_id)
    local text = run { "runs", "show", id, "--output", "text" }
    assert.equals(0, text.code, text.stderr)
    assert.is_nil(text.stdout:match("^%s*{"))
    assert.matches("^run " .. id:gsub("%-", "%%-") .. " %(onboard%): succeeded\n", text.stdout)
    assert.matches("\n  succeeded +storage_account\n", text.stdout)
    assert.matches("\nresources:\n", text.stdout)
    assert.matches("\n  ~ updated +storage account", text.stdout)
    local tbl = run { "runs", "show", id, "--output", "table" }
    assert.matches("^Step +Status +Attempts +Error\n", tbl.stdout)
    local doc = json.decode(run({ "runs", "show", id, "--output", "json" }).stdout)
    for _, s in ipairs(doc.steps) do
      assert.is_nil(s.outputs and s.outputs._changes, s.name)
      if s.name == "storage_account" then assert.equals("updated", s.changes[1].action) end
    end
  end)

  it("colours a plan on a terminal, and not with NO_COLOR", function()
    local function on_tty(extra_env)
      local out = os.tmpname()
      local parts = { "env", "-u", "NO_COLOR", "CMKFLOW_STATE_DIR=" .. cli.quote(state_dir) }
      for k, v in pairs(extra_env) do parts[#parts + 1] = k .. "=" .. cli.quote(v) end
      local cmd = table.concat(parts, " ") .. " " .. cli.quote(cli.bin) .. " plan onboard --config " .. cli.quote(config)
        .. " --param customer=fabrikam"
      os.execute("script -qec " .. cli.quote(cmd) .. " /dev/null > " .. out .. " 2>&1 </dev/null")
      local text = files.read(out, "")
      os.remove(out)
      return text
    end
    local coloured = on_tty {}
    assert.matches(ESC .. "32m+ create", coloured, 1, true)
    local plain = on_tty { NO_COLOR = "1" }
    assert.matches("+ create", plain, 1, true)
    assert.is_nil(plain:find(ESC, 1, true))
  end)
end)

describe("cmkflow: errors say who must act, once", function()
  local emu, dir

  setup(function()
    emu = ext.start {}
    dir = files.tmpdir()
  end)

  teardown(function()
    if emu then emu:stop() end
  end)

  it("prints a refused secret's code once and names the ISV tenant", function()
    local config = emu:config { path = dir .. "/bad.lua", secrets = { isv = "not-the-secret" } }
    local r = cli.run({ "run", "onboard", "--config", config, "--param", "customer=contoso" },
                      { CMKFLOW_STATE_DIR = dir })
    assert.equals(4, r.code, r.stderr .. r.stdout)
    assert.equals(1, count(r.stdout, "AADSTS7000215"), r.stdout)
    assert.matches("[ISV tenant must fix this]", r.stdout, 1, true)
  end)

  it("exits 2 naming ca_cert when the CA file is missing, before any request", function()
    local config = emu:config { path = dir .. "/noca.lua" }
    local text = files.read(config):gsub('ca_cert = "[^"]*"', 'ca_cert = "' .. dir .. '/missing-ca.pem"')
    files.write(config, text)
    local mark = emu:mark()
    local r = cli.run({ "run", "onboard", "--config", config, "--param", "customer=contoso" }, { CMKFLOW_STATE_DIR = dir })
    assert.equals(2, r.code, r.stderr .. r.stdout)
    assert.matches("field 'ca_cert'", r.stderr, 1, true)
    assert.matches(dir .. "/missing-ca.pem", r.stderr, 1, true)
    assert.is_nil(r.stderr:find("must fix this", 1, true))
    assert.equals(0, #emu:journal(mark - 1))
  end)

  it("a closed port: a local network problem, no tenant named, and the retries say what they wait for", function()
    -- a port nothing listens on: one the emulator held and gave back
    local closed = ext.start { state = false }
    local url = closed.url
    closed:stop()
    local config = emu:config { path = dir .. "/closed.lua" }
    files.write(config, (files.read(config):gsub('emulator = "[^"]*"', 'emulator = "' .. url .. '"')))
    local r = cli.run({ "run", "onboard", "--config", config, "--param", "customer=contoso", "--progress" },
                      { CMKFLOW_STATE_DIR = dir })
    assert.equals(1, r.code, r.stderr .. r.stdout)
    assert.equals(1, count(r.stdout, "ConnectionFailed"), r.stdout)
    assert.matches("[a local network problem: no tenant must act]", r.stdout, 1, true)
    assert.is_nil(r.stdout:find("must fix this", 1, true))
    assert.is_nil(r.stdout:find("(tenant ", 1, true))
    assert.matches("\n  waiting %d+%.%d s to retry POST https://login%.microsoftonline%.com/[^ ]+ %(Couldn't connect to "
      .. "server; attempt %d of %d next%)\n", r.stderr)
  end)
end)
