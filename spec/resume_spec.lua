-- Issue 4 point 5: `onboard` is idempotent and resumable. Against an external `cmkflow emulator`
-- (through a config file, as a user runs it): a second run after success changes nothing; and for
-- every request boundary k of an uninterrupted run, `cmkflow run onboard` is SIGKILLed while its
-- request k+1 is in flight (the emulator has handled it but holds the answer back: a latency fault
-- rule with `after = k`), then `cmkflow resume RUN_ID` finishes the run, and the emulator's state
-- (/_emulator/state, timestamps and key version ids normalised) equals the uninterrupted run's:
-- same applications, federated credentials, service principals, resources, role assignments,
-- keys and key version counts, no duplicates.
local json = require("cmkflow.core").json
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"
local emustate = require "support.emulator_state"

local CUSTOMER = "contoso"

local canon, normalise, first_difference = emustate.canon, emustate.normalise, emustate.first_difference

local census, ONCE = ext.onboard_census, ext.ONBOARD_ONCE

-- ---- the spec -------------------------------------------------------------------------------------

describe("onboard against an external emulator", function()
  local emu, config, baseline, baseline_requests

  local function onboard_args() return { "run", "onboard", "--param", "customer=" .. CUSTOMER, "--config", config, "--output", "json" } end

  setup(function()
    emu = ext.start()
    emu:fresh() -- the world every run below starts from (emu:fresh() again: back to it)
    config = emu:config()
  end)
  teardown(function() if emu then emu:stop() end end)

  it("an uninterrupted run creates each object once, and a second run changes nothing", function()
    emu:fresh()
    local since = emu:mark() - 1
    local dir = files.tmpdir()
    local r = cli.run(onboard_args(), { CMKFLOW_STATE_DIR = dir })
    assert.equal(0, r.code, r.stderr)
    assert.equal("succeeded", json.decode(r.stdout).status)
    baseline_requests = #emu:journal(since)
    local state = emu:state()
    assert.same(ONCE, census(state))
    baseline = normalise(state)
    assert.is_true(baseline_requests >= 10, "requests: " .. baseline_requests)

    -- again, as a new run (nothing of the first run in its store): the same world
    r = cli.run(onboard_args(), { CMKFLOW_STATE_DIR = files.tmpdir() })
    assert.equal(0, r.code, r.stderr)
    local again = emu:state()
    assert.same(ONCE, census(again))
    assert.same(baseline, normalise(again))
    os.execute("rm -rf " .. files.quote(dir))
  end)

  it("killed with SIGKILL at every request boundary, resume converges to the uninterrupted run's state", function()
    assert.is_table(baseline, "needs the uninterrupted run")
    local failures = {}
    for k = 0, baseline_requests - 1 do
      local function fail(msg) failures[#failures + 1] = ("k=%d: %s"):format(k, msg) end
      emu:fresh()
      -- the (k+1)-th request is handled but its answer is held back for a minute
      local fault = emu:add_fault { latency_ms = 60000, after = k, count = 1 }
      local since = emu:mark() - 1
      local dir = files.tmpdir()
      local env = { CMKFLOW_STATE_DIR = dir }
      local p = ext.spawn(onboard_args(), env)
      local held
      for _ = 1, 300 do -- bounded: 30 s
        for _, e in ipairs(emu:journal(since)) do
          if e.fault == fault then held = e end
        end
        if held or p:done() then break end
        ext.sleep(0.1)
      end
      p:kill("KILL")
      local killed = p:wait()
      emu:clear_faults()
      if not held then
        fail("request " .. (k + 1) .. " never arrived; the client exited " .. tostring(killed.code) .. ": " .. killed.stderr)
      elseif held.seq - since ~= k + 1 then
        fail(("the held request is request %d, not %d"):format(held.seq - since, k + 1))
      elseif killed.code ~= 137 then
        fail("the client was not killed (exit " .. tostring(killed.code) .. ")")
      else
        local list = cli.run({ "runs", "list", "--output", "json" }, env)
        local runs = json.decode(list.stdout)
        if type(runs) ~= "table" or #runs ~= 1 then
          fail("runs list: " .. list.stdout .. list.stderr)
        else
          local r = cli.run({ "resume", runs[1].run_id, "--output", "json" }, env)
          local doc = json.decode(r.stdout)
          if r.code ~= 0 or type(doc) ~= "table" or doc.status ~= "succeeded" then
            fail(("resume exited %d: %s %s"):format(r.code, r.stdout, r.stderr))
          else
            local state = emu:state()
            local got = census(state)
            if canon(got) ~= canon(ONCE) then
              fail("objects after resume: " .. canon(got))
            else
              local d = first_difference(normalise(state), baseline)
              if d then fail("end state differs from the uninterrupted run's (resumed vs uninterrupted) at " .. d) end
            end
          end
        end
      end
      os.execute("rm -rf " .. files.quote(dir))
    end
    assert.are.same({}, failures)
  end)
end)
