-- Sharded runs on one shared PostgreSQL run store (docs/scaling.md): two bulk-onboard shards with
-- overlapping customer lists at once against one emulator, and no customer is onboarded twice; a
-- second `run` of a customer whose run is under way elsewhere, and a second `resume` of a run
-- another process holds, exit 2 naming it - the store's locks, not lock files.
local core = require("cmkflow.core")
local files = require "support.files"
local ext = require "support.external_emulator"
local postgres = require "support.postgres"

local json = core.json

-- Every ARM PUT answers this late, so that a run is still under way when the other process looks
-- (a margin for a loaded machine; nothing here measures time).
local ARM_PUT_LATENCY_MS = 1500

describe("runs sharded over one PostgreSQL run store", function()
  local pg, emu, dir, env, schema

  setup(function()
    pg = postgres.start()
    emu = ext.start { state = false, lifetime = 300 }
    assert(emu.ready and emu.ready.url, "the emulator did not start")
    dir = files.tmpdir()
    schema = "shards"
    local config = emu:config { path = dir .. "/config.lua" }
    -- the run store every shard shares: `state` in the config file
    local state = ("  state = %q,\n"):format(pg:store(schema))
    files.write(config, (files.read(config):gsub("^return {\n", function(head) return head .. state end)))
    env = { CMKFLOW_STATE_DIR = dir .. "/state", CMKFLOW_CONFIG = config }
    emu:add_fault { match = { method = "PUT", operation = "arm" }, latency_ms = ARM_PUT_LATENCY_MS }
  end)

  teardown(function()
    if emu then emu:stop() end
    if pg then pg:stop() end
    if dir then os.execute("rm -rf " .. files.quote(dir)) end
  end)

  -- The store's onboard runs: customer -> array of statuses (psql, beside cmkflow).
  local function onboard_runs()
    local by_customer = {}
    local out = pg:psql("SELECT params, status FROM runs WHERE workflow = 'onboard' ORDER BY seq", schema)
    for line in out:gmatch("[^\n]+") do
      local params, status = line:match("^(.*)|(%a+)$")
      local customer = assert(json.decode(assert(params, out))).customer
      by_customer[customer] = by_customer[customer] or {}
      table.insert(by_customer[customer], status)
    end
    return by_customer
  end

  -- Waits (bounded) until the store has a running onboard run for customer; returns its id.
  local function running_run(customer)
    for _ = 1, 600 do
      local id = pg:psql(("SELECT id FROM runs WHERE status = 'running' AND params LIKE '%%\"customer\":\"%s\"%%'")
        :format(customer), schema):match("^(%S+)\n")
      if id then return id end
      ext.sleep(0.05)
    end
    error("no running run for " .. customer)
  end

  it("two shards with overlapping lists at once onboard each customer exactly once", function()
    local shard_a = files.write(dir .. "/shard-a.csv", "customer\nalpha\nbravo\ncharlie\ndelta\n")
    local shard_b = files.write(dir .. "/shard-b.csv", "customer\ncharlie\ndelta\necho\nfoxtrot\n")
    local a = ext.spawn({ "run", "bulk-onboard", "--param", "file=" .. shard_a, "--param", "concurrency=4",
                          "--output", "json" }, env)
    local b = ext.spawn({ "run", "bulk-onboard", "--param", "file=" .. shard_b, "--param", "concurrency=4",
                          "--output", "json" }, env)
    local ra, rb = a:wait(), b:wait()
    assert.equals(0, ra.code, ra.stderr)
    assert.equals(0, rb.code, rb.stderr)
    local da, db = assert(json.decode(ra.stdout), ra.stdout), assert(json.decode(rb.stdout), rb.stdout)

    -- in the store: one run per customer, succeeded
    local runs = onboard_runs()
    for _, customer in ipairs { "alpha", "bravo", "charlie", "delta", "echo", "foxtrot" } do
      assert.same({ "succeeded" }, runs[customer], customer)
    end
    -- each shared customer ran in one shard; the other skipped it, naming that run
    local function by_customer(doc)
      local out = {}
      for _, r in ipairs(doc.runs) do out[r.customer] = r end
      return out
    end
    local in_a, in_b = by_customer(da), by_customer(db)
    for _, customer in ipairs { "charlie", "delta" } do
      local statuses = { in_a[customer].status, in_b[customer].status }
      table.sort(statuses)
      assert.same({ "skipped", "succeeded" }, statuses, customer)
      assert.equals(in_a[customer].run_id, in_b[customer].run_id)
    end
    assert.equals(6, da.succeeded + db.succeeded)
    assert.equals(2, da.skipped + db.skipped)

    -- in the emulator: one storage account per customer
    local names = {}
    for _, t in ipairs(emu:state().tenants) do
      for _, r in ipairs(t.resources) do
        if r.type == "Microsoft.Storage/storageAccounts" then names[#names + 1] = r.name end
      end
    end
    assert.equals(6, #names)
    for _, customer in ipairs { "alpha", "bravo", "charlie", "delta", "echo", "foxtrot" } do
      local n = 0
      for _, name in ipairs(names) do
        if name:sub(1, #customer + 2) == "st" .. customer then n = n + 1 end
      end
      assert.equals(1, n, customer)
    end
  end)

  it("refuses a second run of a customer whose run is under way in another process, naming it", function()
    local first = ext.spawn({ "run", "onboard", "--param", "customer=golf", "--output", "json" }, env)
    local id = running_run("golf")
    local second = ext.spawn({ "run", "onboard", "--param", "customer=golf" }, env):wait()
    assert.equals(2, second.code, second.stderr)
    assert.matches("run " .. id .. " of onboard for customer golf is not finished (running)", second.stderr, 1, true)
    local r = first:wait()
    assert.equals(0, r.code, r.stderr)
    assert.same({ "succeeded" }, onboard_runs().golf)
  end)

  it("refuses a second resume of a run another process holds, naming that process", function()
    local first = ext.spawn({ "run", "onboard", "--param", "customer=hotel", "--output", "json" }, env)
    local id = running_run("hotel")
    local second = ext.spawn({ "resume", id }, env):wait()
    assert.equals(2, second.code, second.stderr)
    assert.matches("run " .. id .. " is being resumed or run by process " .. first.pid .. " (cmkflow on ",
      second.stderr, 1, true)
    local r = first:wait()
    assert.equals(0, r.code, r.stderr)
    -- the lock went with its connection: a resume now proceeds (and finds the run done)
    local again = ext.spawn({ "resume", id, "--output", "json" }, env):wait()
    assert.equals(0, again.code, again.stderr)
    assert.equals("succeeded", json.decode(again.stdout).status)
  end)
end)
