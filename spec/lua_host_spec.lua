-- require "cmkflow": the C API's capabilities in Lua form, in this very lua5.4 (busted's): run a
-- workflow file, approve its gate with a value, resume, cancel another, list and show runs, and
-- events on a callback; workflow code sandboxed as under the CLI.
local cmkflow = require "cmkflow"
local files = require "support.files"

describe('require "cmkflow"', function()
  local dir, events
  setup(function()
    dir = files.tmpdir()
    events = {}
    files.write(dir .. "/gated.lua", [[
return { name = "gated", steps = {
  { name = "review", gate = true },
  { name = "after", needs = { "review" }, mutates = false,
    run = function(ctx) return { got = ctx.outputs.review.note, sandboxed = io == nil and os.execute == nil } end } } }
]])
    files.write(dir .. "/policy.lua", "return { approval = function(gate) return gate == 'review' end }\n")
    assert(cmkflow.configure { state_dir = dir .. "/state", policy = dir .. "/policy.lua",
                               on_event = function(ev) events[#events + 1] = ev end })
  end)

  it("runs, waits at the gate, takes the approval's value on resume; cancels another run", function()
    local run, code = cmkflow.run(dir .. "/gated.lua")
    assert.equal(6, code)
    assert.equal("waiting", run.status)
    assert.equal("review", run.gate)
    local ok, acode = cmkflow.approve(run.run_id, "review", { note = "looks fine" })
    assert.is_true(ok)
    assert.equal(0, acode)
    local done, rcode = cmkflow.resume(run.run_id)
    assert.equal(0, rcode)
    assert.equal("succeeded", done.status)
    assert.same({ got = "looks fine", sandboxed = true }, done.outputs.after)
    -- events reached the callback as tables
    local kinds = {}
    for _, ev in ipairs(events) do kinds[ev.kind .. ":" .. tostring(ev.step)] = true end
    assert.is_true(kinds["wait:review"])
    assert.is_true(kinds["done:after"])

    local other = assert(cmkflow.run(dir .. "/gated.lua"))
    local cancelled = assert(cmkflow.cancel(other.run_id))
    assert.equal("cancelled", cancelled.status)
    assert.equal("cancelled", assert(cmkflow.show(other.run_id)).status)
    local runs = assert(cmkflow.runs())
    assert.equal(2, #runs)
  end)

  it("returns failures as error tables with the exit code", function()
    local none, err, code = cmkflow.show("no-such-run")
    assert.is_nil(none)
    assert.equal("UnknownRun", err.code)
    assert.equal(2, code)
    local bad, berr, bcode = cmkflow.run_string("return { name = 'x', steps = { { name = 's', run = function() "
      .. "error({ code = 'KeyDisabled', message = 'off', tenant = 'customer' }) end } } }")
    assert.is_nil(bad)
    assert.equal("KeyDisabled", berr.code)
    assert.equal("customer", berr.tenant)
    assert.equal(1, bcode)
  end)
end)
