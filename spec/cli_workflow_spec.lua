-- The main job from the command line: `cmkflow run onboard` with no configuration runs both
-- tenants' steps against the embedded emulator; runs are listed, shown, planned and re-run.
local json = require("cmkflow.core").json
local cli = require "support.cli"
local files = require "support.files"

describe("cmkflow run onboard (embedded emulator)", function()
  local state_dir, first

  setup(function()
    state_dir = files.tmpdir()
    first = cli.run({ "run", "workflows/onboard.lua", "--param", "customer=contoso", "--output", "json" },
                    { CMKFLOW_STATE_DIR = state_dir })
  end)

  it("creates the storage account encrypted with the customer's key", function()
    assert.equals(0, first.code, first.stderr)
    assert.matches("running against the embedded Azure emulator", first.stderr, 1, true)
    local doc = assert(json.decode(first.stdout))
    assert.equals("succeeded", doc.status)
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", doc.run_id)
    local account = doc.outputs.storage_account
    local enc = account.properties.encryption
    assert.equals("Microsoft.Keyvault", enc.keySource)
    assert.equals(doc.outputs.handoff.appId, enc.identity.federatedIdentityClientId)
    assert.matches("^https://kv%-contoso%-%x+%.vault%.azure%.net/keys/cmk%-contoso/%x+$",
                   enc.keyvaultproperties.currentVersionedKeyIdentifier)
    assert.equals(doc.outputs.identity.id, enc.identity.userAssignedIdentity)
    assert.is_string(doc.outputs.handoff.customerCommand)
  end)

  it("lists and shows the run with every step journaled", function()
    local doc = json.decode(first.stdout)
    local list = cli.run({ "runs", "list", "--output", "json" }, { CMKFLOW_STATE_DIR = state_dir })
    assert.equals(0, list.code, list.stderr)
    local runs = json.decode(list.stdout)
    assert.equals(doc.run_id, runs[1].run_id)
    assert.equals("onboard", runs[1].workflow)
    local show = cli.run({ "runs", "show", doc.run_id, "--output", "json" }, { CMKFLOW_STATE_DIR = state_dir })
    assert.equals(0, show.code, show.stderr)
    local run = json.decode(show.stdout)
    assert.equals(12, #run.steps)
    for _, s in ipairs(run.steps) do assert.equals("succeeded", s.status, s.name) end
    assert.equals("contoso", run.params.customer)
  end)

  it("changes nothing when run again", function()
    local doc = json.decode(first.stdout)
    local again = cli.run({ "run", "onboard", "--param", "customer=contoso", "--output", "json" },
                          { CMKFLOW_STATE_DIR = state_dir })
    assert.equals(0, again.code, again.stderr)
    local doc2 = json.decode(again.stdout)
    assert.are_not.equal(doc.run_id, doc2.run_id)
    assert.equals(doc.outputs.storage_account.id, doc2.outputs.storage_account.id)
    assert.equals(doc.outputs.handoff.appId, doc2.outputs.handoff.appId)
    assert.equals(doc.outputs.role_assignment.id, doc2.outputs.role_assignment.id)
    assert.equals(doc.outputs.storage_account.properties.encryption.keyvaultproperties.currentVersionedKeyIdentifier,
                  doc2.outputs.storage_account.properties.encryption.keyvaultproperties.currentVersionedKeyIdentifier)
  end)

  it("plans every change without making one", function()
    local r = cli.run({ "plan", "onboard", "--param", "customer=fabrikam", "--output", "json" },
                      { CMKFLOW_STATE_DIR = state_dir })
    assert.equals(0, r.code, r.stderr)
    local plan = json.decode(r.stdout)
    assert.equals("onboard", plan.workflow)
    local text = {}
    for _, p in ipairs(plan.plan) do for _, m in ipairs(p.mutations) do text[#text + 1] = m end end
    text = table.concat(text, "\n")
    assert.matches("user-assigned identity uami-cmkflow-cmk", text, 1, true)
    assert.matches("storage account stfabrikam", text, 1, true)
    assert.matches("approval gate 'handoff'", text, 1, true)
    -- nothing was created: no run recorded for fabrikam
    local list = json.decode(cli.run({ "runs", "list", "--output", "json" }, { CMKFLOW_STATE_DIR = state_dir }).stdout)
    for _, run in ipairs(list) do assert.are_not.equal("fabrikam", run.customer) end
    assert.equals(2, #list)
  end)

  it("says what to do with an unknown run", function()
    local r = cli.run({ "resume", "00000000-0000-4000-8000-000000000000" }, { CMKFLOW_STATE_DIR = state_dir })
    assert.equals(2, r.code)
    assert.matches("no run '00000000-0000-4000-8000-000000000000'", r.stderr, 1, true)
    r = cli.run({ "approve", "00000000-0000-4000-8000-000000000000", "handoff" }, { CMKFLOW_STATE_DIR = state_dir })
    assert.equals(2, r.code)
    assert.matches("no run '00000000-0000-4000-8000-000000000000'", r.stderr, 1, true)
  end)
end)

-- Errors are data through the binary: the journal keeps a step's error as its fields, `runs show`
-- prints them as structure, and a message that says "interrupted" is an ordinary failure (exit 1).
describe("cmkflow run: a failing step's error as data", function()
  it("journals code, message, tenant and hint; runs show prints them; text output names the party once", function()
    local state_dir = files.tmpdir()
    local wf = files.write(state_dir .. "/fails.lua", [[
return { name = "fails", description = "a step that fails with an error table",
  steps = { { name = "boom", run = function()
    error({ code = "KeyDisabled", tenant = "customer", hint = "enable the key",
            message = "the key was interrupted and is disabled" })
  end } } }
]])
    local r = cli.run({ "run", wf, "--output", "json" }, { CMKFLOW_STATE_DIR = state_dir })
    assert.equals(1, r.code, r.stderr)
    local doc = assert(json.decode(r.stdout))
    assert.equals("failed", doc.status)
    assert.same({ code = "KeyDisabled", tenant = "customer", hint = "enable the key", step = "boom",
                  message = "the key was interrupted and is disabled" }, doc.error)
    local show = cli.run({ "runs", "show", doc.run_id, "--output", "json" }, { CMKFLOW_STATE_DIR = state_dir })
    assert.equals(0, show.code, show.stderr)
    local run = assert(json.decode(show.stdout))
    assert.equals("KeyDisabled", run.error.code)
    assert.equals("customer", run.steps[1].error.tenant)
    assert.equals("enable the key", run.steps[1].error.hint)
    local text = cli.run({ "resume", doc.run_id }, { CMKFLOW_STATE_DIR = state_dir })
    assert.equals(1, text.code)
    assert.matches("error: step 'boom' failed: KeyDisabled: the key was interrupted and is disabled " ..
                   "[customer tenant must fix this]", text.stdout, 1, true)
    assert.matches("hint: enable the key", text.stdout, 1, true)
  end)
end)
