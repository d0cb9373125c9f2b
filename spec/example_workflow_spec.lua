-- docs/lua-api.md's example of a workflow written from scratch, run as a user would:
-- `cmkflow run examples/stamp-key-version.lua --config FILE` against an external emulator
-- (`cmkflow emulator`, demo seed) after `cmkflow run onboard`. Its outputs name the key version the
-- account uses, the tag lands on the account in the emulator's state, its review gate pauses when
-- the policy says so, and its failures are error tables naming the party that must act.
local core = require "cmkflow.core"
local json = core.json
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"

local SRC = os.getenv("CMKFLOW_SOURCE_DIR") or "."
local EXAMPLE = SRC .. "/examples/stamp-key-version.lua"

-- An error as the run reports it: today the journaled text "CODE: message (tenant T)", once runs
-- journal error tables the table itself. Returns code, tenant.
local function error_fields(e)
  if type(e) == "table" then return e.code, e.tenant end
  return tostring(e):match("failed: ([%w_]+): "), tostring(e):match("tenant (%a+)%)")
end

describe("the example workflow (examples/stamp-key-version.lua)", function()
  local emu, config, account_id

  local function run(args, state_dir)
    local r = cli.run(args, { CMKFLOW_STATE_DIR = state_dir })
    r.doc = r.stdout:match("^%s*{") and json.decode(r.stdout) or nil
    return r
  end

  local function account_in_state()
    for _, t in ipairs(emu:state().tenants) do
      for _, res in ipairs(t.resources or {}) do
        if res.id:lower() == account_id:lower() then return res end
      end
    end
  end

  setup(function()
    emu = ext.start { lifetime = 240 }
    config = emu:config()
    local r = run({ "run", "onboard", "--config", config, "--param", "customer=contoso", "--output", "json" },
                  emu.dir .. "/runs")
    assert(r.code == 0, r.stderr)
    account_id = r.doc.outputs.storage_account.id
  end)

  teardown(function() if emu then emu:stop() end end)

  it("tags the account with the key version it uses and reports it", function()
    local r = run({ "run", EXAMPLE, "--config", config, "--param", "storage_account_id=" .. account_id,
                    "--output", "json" }, emu.dir .. "/runs")
    assert.equal(0, r.code, r.stderr .. r.stdout)
    local out = r.doc.outputs
    local account = account_in_state()
    local current = account.properties.encryption.keyvaultproperties.currentVersionedKeyIdentifier
    assert.equal(account.name, out.storage_account)
    assert.equal("cmk-contoso", out.key)
    assert.equal(current:match("([^/]+)$"), out.version)
    assert.is_true(out.newest)
    -- the tag is on the account, the policy's tags kept
    assert.equal(out.version, account.tags["cmk-key-version"])
    assert.equal("contoso", account.tags.customer)
    assert.same(account.tags, out.tags)
    assert.matches("key cmk-contoso: newest version " .. out.version, r.stderr, 1, true)
  end)

  it("plans its one change without a call", function()
    local before = emu:mark()
    local r = run({ "plan", EXAMPLE, "--config", config, "--param", "storage_account_id=" .. account_id,
                    "--param", "tag=reviewed-key", "--output", "json" }, emu.dir .. "/runs")
    assert.equal(0, r.code, r.stderr)
    assert.equal(2, #r.doc.plan)
    assert.equal("approval gate 'review'", r.doc.plan[1].mutations[1])
    assert.equal("tag storage account " .. account_id .. " with reviewed-key=<its key version>",
                 r.doc.plan[2].mutations[1])
    assert.equal(0, #emu:journal(before - 1))
  end)

  it("waits at its review gate when the policy says so, and goes on after approval", function()
    local policy = files.write(emu.dir .. "/review.lua",
      "return { approval = function(gate) return gate == 'review' end }\n")
    local cfg = emu:config { policy = policy, path = emu.dir .. "/review-config.lua" }
    local state = emu.dir .. "/runs-review"
    local r = run({ "run", EXAMPLE, "--config", cfg, "--param", "storage_account_id=" .. account_id,
                    "--param", "tag=reviewed-key", "--output", "json" }, state)
    assert.equal(6, r.code, r.stderr .. r.stdout)
    assert.equal("review", r.doc.gate)
    assert.is_nil(account_in_state().tags["reviewed-key"])
    assert.equal(0, run({ "approve", r.doc.run_id, "review" }, state).code)
    local resumed = run({ "resume", r.doc.run_id, "--output", "json" }, state)
    assert.equal(0, resumed.code, resumed.stderr .. resumed.stdout)
    assert.equal(resumed.doc.outputs.version, account_in_state().tags["reviewed-key"])
  end)

  it("docs/lua-api.md shows this exact file", function()
    local doc = files.read(SRC .. "/docs/lua-api.md")
    assert.truthy(doc:find("```lua\n" .. files.read(EXAMPLE) .. "```", 1, true),
      "docs/lua-api.md no longer shows examples/stamp-key-version.lua verbatim")
  end)

  it("fails with an error naming the code and the tenant that must act", function()
    local missing = account_id:gsub("[^/]+$", "stnosuchaccount")
    local r = run({ "run", EXAMPLE, "--config", config, "--param", "storage_account_id=" .. missing,
                    "--output", "json" }, emu.dir .. "/runs")
    assert.equal(1, r.code, r.stderr .. r.stdout)
    assert.equal("failed", r.doc.status)
    local code, tenant = error_fields(r.doc.error)
    assert.equal("StorageAccountNotFound", code)
    assert.equal("isv", tenant)
  end)
end)
