-- Issue 8 point 4 for the embedded emulator (the CLI's default): for request boundaries k of an
-- uninterrupted `cmkflow run onboard` without configuration, the (k+1)-th request is handled and
-- its answer held back (CMKFLOW_EMULATOR_KNOBS: a latency fault rule with `after = k`), the
-- `cmkflow` process (with the emulator on its server thread) is SIGKILLed, `cmkflow resume RUN_ID`
-- starts the embedded emulator again on the same state directory and finishes the run, and the
-- emulator's normalised /_emulator/state (read by a standalone emulator on that directory) equals
-- the uninterrupted run's. Boundaries as in spec/emulator_durability_spec.lua.
local core = require "cmkflow.core"
local json = core.json
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"
local emustate = require "support.emulator_state"
local d = require "support.durability"
local http = require "cmkflow.http"

describe("the embedded emulator, its CLI killed with SIGKILL", function()
  local baseline

  -- The state the embedded emulator left in dir (read by a standalone emulator on it).
  local function state_of(dir)
    local emu = ext.start { dir = dir .. "/emulator" }
    local state = emu:state()
    emu:stop()
    return state
  end

  -- The embedded emulator's URL from the CLI's stderr, and a client for its control API.
  local function embedded_client(p, dir)
    for _ = 1, 100 do
      local url = files.read(p.dir .. "/err", ""):match("embedded Azure emulator at (https://[%d%.:]+)")
      if url then
        return url, http.new { ca_file = dir .. "/emulator/ca.pem", retry = { max_attempts = 1 } }
      end
      if p:done() then return nil end
      ext.sleep(0.1)
    end
  end

  it("an uninterrupted run gives the baseline", function()
    local dir = files.tmpdir()
    local r = cli.run(d.onboard_args(), { CMKFLOW_STATE_DIR = dir })
    assert.equal(0, r.code, r.stderr)
    baseline = emustate.normalise(state_of(dir))
    os.execute("rm -rf " .. files.quote(dir))
  end)

  it("at request boundaries, resumed, reaches the same state", function()
    assert.is_table(baseline, "needs the uninterrupted run")
    -- the embedded emulator's journal dies with it: boundaries are tried until the run finishes
    -- before its request k+1 (bounded: 200 requests)
    local failures, last = {}, nil
    for k = 0, 200, d.STEP do
      local function fail(msg) failures[#failures + 1] = ("k=%d: %s"):format(k, msg) end
      local dir = files.tmpdir()
      local knobs = files.write(dir .. "/knobs.json", json.encode { faults = { d.hold_rule(k) } })
      local env = { CMKFLOW_STATE_DIR = dir }
      local p = ext.spawn(d.onboard_args(), { CMKFLOW_STATE_DIR = dir, CMKFLOW_EMULATOR_KNOBS = knobs })
      local url, client = embedded_client(p, dir)
      local held = url and d.wait_held(function()
        local resp = client:request { method = "GET", url = url .. "/_emulator/journal" }
        return resp and resp.status == 200 and json.decode(resp.body).value or {}
      end, function() return not p:done() end)
      p:kill("KILL")
      local killed = p:wait()
      if not held and killed.code == 0 then
        last = k -- the run had fewer than k+1 requests
      elseif not held then
        fail("request " .. (k + 1) .. " never arrived: " .. tostring(killed.stderr))
      elseif held.seq ~= k + 1 then
        fail(("the held request is request %d, not %d"):format(held.seq, k + 1))
      elseif killed.code ~= 137 then
        fail("the client was not killed (exit " .. tostring(killed.code) .. ")")
      else
        local msg = d.resume(env) or d.compare(state_of(dir), baseline)
        if msg then fail(msg) end
      end
      os.execute("rm -rf " .. files.quote(dir))
      if last then break end
    end
    assert.are.same({}, failures)
    assert.is_true(last ~= nil and last >= 10, "the run ended after request " .. tostring(last))
  end)
end)
