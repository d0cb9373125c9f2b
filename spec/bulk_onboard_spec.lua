-- bulk-onboard from the command line: a CSV of customers, one onboard run each (own run id in the
-- store), a summary table and JSON; bad rows stop everything with exit 2 before any request; one
-- customer failing (an emulator fault rule on its storage account) fails the bulk run with exit 1
-- while the others succeed.
local json = require("cmkflow.core").json
local cli = require "support.cli"
local files = require "support.files"
local seed = require "cmkflow.emulator.demo_seed"
local ext = require "support.external_emulator"
local q = files.quote

local curl = ext.curl

local function runs_in(state_dir)
  local r = cli.run({ "runs", "list", "--output", "json" }, { CMKFLOW_STATE_DIR = state_dir })
  assert.equals(0, r.code, r.stderr)
  return json.decode(r.stdout)
end

describe("cmkflow run bulk-onboard (embedded emulator)", function()
  local state_dir, csv, first

  setup(function()
    state_dir = files.tmpdir()
    csv = cli.write_temp("customer,key_size\r\nalpha,2048\nbravo,2048\n\n\"charlie\",2048\ndelta,\n", ".csv")
    first = cli.run({ "run", "bulk-onboard", "--param", "file=" .. csv, "--param", "concurrency=3",
                      "--output", "json" }, { CMKFLOW_STATE_DIR = state_dir })
  end)

  teardown(function() os.remove(csv) end)

  it("runs onboard once per customer, each with its own run, and sums them up", function()
    assert.equals(0, first.code, first.stderr)
    local doc = assert(json.decode(first.stdout), first.stdout)
    assert.equals(4, doc.succeeded)
    assert.equals(0, doc.failed)
    assert.equals(4, #doc.runs)
    local ids = {}
    for i, name in ipairs({ "alpha", "bravo", "charlie", "delta" }) do
      local r = doc.runs[i]
      assert.equals(name, r.customer)
      assert.equals("succeeded", r.status)
      assert.matches("^st" .. name .. "%x+$", r.storage_account)
      assert.is_nil(ids[r.run_id])
      ids[r.run_id] = name
    end
    -- the store holds exactly these runs, one onboard run per customer
    local runs = runs_in(state_dir)
    assert.equals(4, #runs)
    for _, r in ipairs(runs) do
      assert.equals("onboard", r.workflow)
      assert.equals("succeeded", r.status)
      local show = cli.run({ "runs", "show", r.run_id, "--output", "json" }, { CMKFLOW_STATE_DIR = state_dir })
      assert.equals(0, show.code, show.stderr)
      local run = json.decode(show.stdout)
      assert.equals(ids[r.run_id], run.params.customer)
      -- an empty cell leaves the parameter to the policy
      if run.params.customer == "delta" then assert.is_nil(run.params.key_size) else assert.equals(2048, run.params.key_size) end
      assert.equals(run.outputs.storage_account.name,
                    doc.runs[({ alpha = 1, bravo = 2, charlie = 3, delta = 4 })[run.params.customer]].storage_account)
      assert.equals("Microsoft.Keyvault", run.outputs.storage_account.properties.encryption.keySource)
    end
  end)

  it("prints a summary table; a second pass leaves the customers done alone, again=true runs them again", function()
    local doc = json.decode(first.stdout)
    local again = cli.run({ "run", "bulk-onboard", "--param", "file=" .. csv }, { CMKFLOW_STATE_DIR = state_dir })
    assert.equals(0, again.code, again.stderr)
    assert.matches("^customer%s+run id%s+outcome%s+storage account, kit or error\n", again.stdout)
    for _, r in ipairs(doc.runs) do
      -- the same run, done, with its storage account
      local line = again.stdout:match("\n(" .. r.customer .. " [^\n]*)")
      assert.is_string(line, again.stdout)
      assert.matches(r.run_id:gsub("%p", "%%%0") .. "%s+done%s+" .. r.storage_account .. "$", line)
    end
    assert.matches("\n4 done, 0 failed\n$", again.stdout)
    assert.equals(4, #runs_in(state_dir))
    local redo = cli.run({ "run", "bulk-onboard", "--param", "file=" .. csv, "--param", "again=true", "--output", "json" },
                         { CMKFLOW_STATE_DIR = state_dir })
    assert.equals(0, redo.code, redo.stderr)
    local rdoc = json.decode(redo.stdout)
    for i, r in ipairs(rdoc.runs) do
      assert.equals("done", r.outcome)
      assert.equals(doc.runs[i].storage_account, r.storage_account)
      assert.are_not.equals(doc.runs[i].run_id, r.run_id)
    end
    assert.equals(8, #runs_in(state_dir))
  end)

  it("refuses a list with bad rows before any run, naming each line and what to fix", function()
    local before = #runs_in(state_dir)
    local bad = cli.write_temp("customer,key_size\nok-one,2048\nBad_Customer,2048\nok-two,1000\nok-one,4096\n", ".csv")
    local r = cli.run({ "run", "bulk-onboard", "--param", "file=" .. bad }, { CMKFLOW_STATE_DIR = state_dir })
    os.remove(bad)
    assert.equals(2, r.code, r.stderr)
    assert.equals("", r.stdout)
    assert.matches("line 3: parameter 'customer' is invalid: use 2%-40 lowercase", r.stderr)
    assert.matches("line 4: parameter 'key_size' must be one of 2048, 3072, 4096, got '1000'", r.stderr)
    assert.matches("line 5: customer 'ok%-one' is listed twice %(first at line 2%)", r.stderr)
    assert.is_nil(r.stderr:find("line 2:", 1, true))
    -- the emulator was not even started, and no run was created
    assert.is_nil(r.stderr:find("embedded Azure emulator", 1, true))
    assert.equals(before, #runs_in(state_dir))
  end)

  it("lets any number of customers share the default policy's one identity and federated credential", function()
    local lines = { "customer" }
    for i = 1, 21 do lines[#lines + 1] = "many-" .. i end
    local list = cli.write_temp(table.concat(lines, "\n") .. "\n", ".csv")
    local r = cli.run({ "plan", "bulk-onboard", "--param", "file=" .. list }, { CMKFLOW_STATE_DIR = state_dir })
    os.remove(list)
    assert.equals(0, r.code, r.stderr)
    assert.matches("federated credential cmkflow%-storage%-cmk", r.stdout)
  end)

  it("refuses more storage accounts than one region of one subscription holds when the policy places none", function()
    local before = #runs_in(state_dir)
    local lines = { "customer" }
    for i = 1, 251 do lines[#lines + 1] = "many-" .. i end
    local list = cli.write_temp(table.concat(lines, "\n") .. "\n", ".csv")
    local r = cli.run({ "run", "bulk-onboard", "--param", "file=" .. list }, { CMKFLOW_STATE_DIR = state_dir })
    os.remove(list)
    assert.equals(2, r.code, r.stderr)
    -- the four customers onboarded above count too
    assert.matches("255 storage accounts do not fit in subscription [%x%-]+, region westeurope: Azure allows 250", r.stderr)
    assert.matches("placement", r.stderr)
    assert.equals(before, #runs_in(state_dir))
  end)

  it("reads a JSON array and refuses unknown columns and unreadable files with exit 2", function()
    local list = cli.write_temp('[{"customer": "echo", "region": "x"}, 7]', ".json")
    local r = cli.run({ "run", "bulk-onboard", "--param", "file=" .. list }, { CMKFLOW_STATE_DIR = state_dir })
    os.remove(list)
    assert.equals(2, r.code, r.stderr)
    assert.matches("entry 2: must be an object", r.stderr)
    local missing = cli.run({ "run", "bulk-onboard", "--param", "file=" .. state_dir .. "/nope.csv" },
                            { CMKFLOW_STATE_DIR = state_dir })
    assert.equals(2, missing.code)
    assert.matches("parameter 'file': cannot read", missing.stderr)
    local unknown = cli.write_temp('[{"customer": "echo", "region": "x"}]', ".json")
    r = cli.run({ "run", "bulk-onboard", "--param", "file=" .. unknown }, { CMKFLOW_STATE_DIR = state_dir })
    os.remove(unknown)
    assert.equals(2, r.code, r.stderr)
    assert.matches("entry 1: unknown parameter 'region'", r.stderr)
  end)
end)

describe("cmkflow run bulk-onboard (external emulator, configured)", function()
  local emu, dir, config, env

  setup(function()
    emu = ext.start { state = false, lifetime = 300 }
    assert(emu.ready and emu.ready.url, "the emulator did not start")
    dir = files.tmpdir()
    local function ctx(t)
      return ("{ tenant = %q, subscription = %q, credential = { client_id = %q, client_secret = %q } }")
        :format(t.id, t.subscriptions[1].id, t.principals[1].appId, t.principals[1].secret)
    end
    config = files.write(dir .. "/config.lua", ("return { cloud = { emulator = %q, ca_cert = %q },\n  isv = %s,\n  customer = %s }\n")
      :format(emu.ready.url, emu.ready.ca_cert, ctx(seed.tenants[1]), ctx(seed.tenants[2])))
    env = { CMKFLOW_STATE_DIR = dir, CMKFLOW_CONFIG = config }
  end)

  teardown(function() if emu then emu:stop() end end)

  local function control(method, path, body)
    return curl("-X " .. method .. " --cacert " .. q(emu.ready.ca_cert) .. (body and (" -H 'content-type: application/json' -d " .. q(body)) or "")
      .. " " .. q(emu.ready.url .. path))
  end

  it("refuses more customers than one application's 20 federated credentials allow with a credential per customer", function()
    local policy = files.write(dir .. "/own-identity.lua", "return { identity_per_customer = true }\n")
    local text = files.read(config)
    local own = files.write(dir .. "/own-config.lua", (text:gsub("}%s*$", ("  , policy = %q }\n"):format(policy))))
    assert.matches("own%-identity%.lua", files.read(own))
    local lines = { "customer" }
    for i = 1, 21 do lines[#lines + 1] = "many-" .. i end
    local list = cli.write_temp(table.concat(lines, "\n") .. "\n", ".csv")
    control("DELETE", "/_emulator/journal")
    local r = cli.run({ "run", "bulk-onboard", "--param", "file=" .. list }, { CMKFLOW_STATE_DIR = dir, CMKFLOW_CONFIG = own })
    os.remove(list)
    assert.equals(2, r.code, r.stderr)
    assert.matches("21 federated credentials on application 'cmkflow%-cross%-tenant%-cmk' %(from line 22 on", r.stderr)
    assert.matches("names.federated_credential", r.stderr, 1, true)
    assert.equals(0, #json.decode(control("GET", "/_emulator/journal")).value)
  end)

  it("makes no request at all for a list with a bad row", function()
    control("DELETE", "/_emulator/journal")
    local bad = cli.write_temp("customer\ngood-one\n-bad\n", ".csv")
    local r = cli.run({ "run", "bulk-onboard", "--param", "file=" .. bad }, env)
    os.remove(bad)
    assert.equals(2, r.code, r.stderr)
    assert.matches("line 3: parameter 'customer' is invalid", r.stderr)
    local journal = json.decode(control("GET", "/_emulator/journal"))
    assert.is_table(journal.value)
    assert.equals(0, #journal.value)
  end)

  it("exits 1 when one customer fails, with the others succeeded", function()
    local fault = json.decode(control("POST", "/_emulator/faults",
      json.encode({ match = { method = "PUT", path = "/storageAccounts/stbravo" }, status = 400 })))
    assert.is_string(fault.id)
    local list = cli.write_temp("customer,key_size\nalpha,2048\nbravo,2048\ncharlie,2048\n", ".csv")
    local r = cli.run({ "run", "bulk-onboard", "--param", "file=" .. list, "--output", "json" }, env)
    os.remove(list)
    assert.equals(1, r.code, r.stderr)
    local doc = assert(json.decode(r.stdout), r.stdout)
    assert.equals(2, doc.succeeded)
    assert.equals(1, doc.failed)
    assert.equals("succeeded", doc.runs[1].status)
    assert.equals("failed", doc.runs[2].status)
    assert.equals("storage_account", doc.runs[2].error.step)
    assert.is_nil(doc.runs[2].storage_account)
    assert.equals("succeeded", doc.runs[3].status)
    assert.matches("^stcharlie%x+$", doc.runs[3].storage_account)
    -- the failed customer's run is in the store as failed, resumable on its own
    local show = cli.run({ "runs", "show", doc.runs[2].run_id, "--output", "json" }, env)
    assert.equals("failed", json.decode(show.stdout).status)
    local fired = json.decode(control("GET", "/_emulator/faults/" .. fault.id))
    assert.is_true(fired.fired >= 1)
  end)
end)
