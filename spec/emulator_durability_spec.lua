-- Issue 8 point 4: nothing the emulator acknowledged is lost, however it stops. Crash testing as
-- spec/resume_spec.lua does it (SQLite's model): for request boundaries k of an uninterrupted
-- onboard against a standalone `cmkflow emulator --state DIR`, the (k+1)-th request is handled
-- and its answer held back (a latency fault rule with `after = k`; the emulator's request journal
-- numbers the requests); the emulator process is SIGKILLed (and the client after it), restarted
-- on the same state directory, and `cmkflow resume RUN_ID` finishes the run; the emulator's
-- normalised /_emulator/state must equal the uninterrupted run's. Boundaries: every 3rd
-- (k = 0, 3, 6, ...) under `make check`, every one with CMKFLOW_SOAK=1 (`make soak`). The embedded
-- emulator: spec/emulator_durability_embedded_spec.lua.
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"
local emustate = require "support.emulator_state"
local d = require "support.durability"

describe("the standalone emulator killed with SIGKILL", function()
  local baseline, requests

  it("an uninterrupted run gives the baseline", function()
    local emu = ext.start()
    local since = emu:mark() - 1
    local r = cli.run(d.onboard_args(emu:config()), { CMKFLOW_STATE_DIR = files.tmpdir() })
    assert.equal(0, r.code, r.stderr)
    requests = #emu:journal(since)
    baseline = emustate.normalise(emu:state())
    emu:stop()
    assert.is_true(requests >= 10, "requests: " .. requests)
  end)

  it("at request boundaries, restarted on its state directory, lets resume reach the same state", function()
    assert.is_table(baseline, "needs the uninterrupted run")
    local failures = {}
    for k = 0, requests - 1, d.STEP do
      local function fail(msg) failures[#failures + 1] = ("k=%d: %s"):format(k, msg) end
      local dir = files.tmpdir()
      local emu = ext.start { dir = dir }
      local config = emu:config { path = dir .. "/cmkflow.lua" }
      emu:add_fault(d.hold_rule(k))
      local since = emu:mark() - 1
      local env = { CMKFLOW_STATE_DIR = dir .. "/runs" }
      local p = ext.spawn(d.onboard_args(config), env)
      local held = d.wait_held(function() return (emu:journal(since)) end, function() return not p:done() end)
      os.execute("kill -KILL " .. d.emulator_pid(emu))
      p:kill("KILL")
      p:wait()
      emu.pipe:read("a")
      emu.pipe:close()
      if not held then
        fail("request " .. (k + 1) .. " never arrived")
      elseif held.seq - since ~= k + 1 then
        fail(("the held request is request %d, not %d"):format(held.seq - since, k + 1))
      else
        -- the same state directory (and CA); a new port, so the config file is rewritten
        local again = ext.start { dir = dir }
        again:config { path = config }
        again:clear_faults()
        local msg = d.resume(env) or d.compare(again:state(), baseline)
        if msg then fail(msg) end
        again:stop()
      end
      os.execute("rm -rf " .. files.quote(dir))
    end
    assert.are.same({}, failures)
  end)
end)

