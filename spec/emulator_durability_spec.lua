-- Issue 8 point 4: nothing the emulator acknowledged is lost, however it stops. Crash testing as
-- spec/resume_spec.lua does it (SQLite's model): for request boundaries k of an uninterrupted
-- onboard, the (k+1)-th request is handled and its answer held back (a latency fault rule with
-- `after = k`; the emulator's request journal numbers the requests), then
--   * standalone: the `cmkflow emulator` process is SIGKILLed (and the client after it), restarted
--     on the same --state directory, and `cmkflow resume RUN_ID` finishes the run;
--   * embedded: the `cmkflow` CLI (with the emulator on its server thread) is SIGKILLed, and
--     `cmkflow resume RUN_ID` starts the embedded emulator again on the same state directory;
-- and the emulator's normalised /_emulator/state equals the uninterrupted run's.
-- Boundaries: every 3rd (k = 0, 3, 6, ...) under `make check`; every one with CMKFLOW_SOAK=1
-- (`make soak`).
local json = require("cmkflow.core").json
local http = require "cmkflow.http"
local cli = require "support.cli"
local files = require "support.files"
local ext = require "support.external_emulator"
local emustate = require "support.emulator_state"

local STEP = os.getenv("CMKFLOW_SOAK") == "1" and 1 or 3
local CUSTOMER = "contoso"
local HOLD = { latency_ms = 60000, count = 1 }

local function hold_rule(k) return { latency_ms = HOLD.latency_ms, count = HOLD.count, after = k } end

-- The pid of the `cmkflow emulator` process under ext.start's `timeout` (its only child).
local function emulator_pid(emu)
  local f = io.open(("/proc/%d/task/%d/children"):format(emu.pid, emu.pid))
  local pid = f and tonumber((f:read("a") or ""):match("%d+"))
  if f then f:close() end
  return assert(pid, "no emulator process under " .. emu.pid)
end

-- The journal entry of the held request, waiting (bounded: 30 s) while `alive()` holds.
local function wait_held(journal, alive)
  for _ = 1, 300 do
    for _, e in ipairs(journal()) do
      if e.fault then return e end
    end
    if not alive() then return nil end
    ext.sleep(0.1)
  end
end

local function onboard_args(config)
  local args = { "run", "onboard", "--param", "customer=" .. CUSTOMER, "--output", "json" }
  if config then args[#args + 1] = "--config" args[#args + 1] = config end
  return args
end

-- `cmkflow resume` of the one run in env's state directory; nil or a failure message.
local function resume(env)
  local list = cli.run({ "runs", "list", "--output", "json" }, env)
  local runs = json.decode(list.stdout)
  if type(runs) ~= "table" or #runs ~= 1 then return "runs list: " .. list.stdout .. list.stderr end
  local r = cli.run({ "resume", runs[1].run_id, "--output", "json" }, env)
  local doc = json.decode(r.stdout)
  if r.code ~= 0 or type(doc) ~= "table" or doc.status ~= "succeeded" then
    return ("resume exited %d: %s %s"):format(r.code, r.stdout, r.stderr)
  end
end

local function compare(state, baseline)
  local got = ext.onboard_census(state)
  if emustate.canon(got) ~= emustate.canon(ext.ONBOARD_ONCE) then return "objects after resume: " .. emustate.canon(got) end
  local d = emustate.first_difference(emustate.normalise(state), baseline)
  if d then return "end state differs from the uninterrupted run's at " .. d end
end

describe("the standalone emulator killed with SIGKILL", function()
  local baseline, requests

  it("an uninterrupted run gives the baseline", function()
    local emu = ext.start()
    local since = emu:mark() - 1
    local r = cli.run(onboard_args(emu:config()), { CMKFLOW_STATE_DIR = files.tmpdir() })
    assert.equal(0, r.code, r.stderr)
    requests = #emu:journal(since)
    baseline = emustate.normalise(emu:state())
    emu:stop()
    assert.is_true(requests >= 10, "requests: " .. requests)
  end)

  it("at request boundaries, restarted on its state directory, lets resume reach the same state", function()
    assert.is_table(baseline, "needs the uninterrupted run")
    local failures = {}
    for k = 0, requests - 1, STEP do
      local function fail(msg) failures[#failures + 1] = ("k=%d: %s"):format(k, msg) end
      local dir = files.tmpdir()
      local emu = ext.start { dir = dir }
      local config = emu:config { path = dir .. "/cmkflow.lua" }
      emu:add_fault(hold_rule(k))
      local since = emu:mark() - 1
      local env = { CMKFLOW_STATE_DIR = dir .. "/runs" }
      local p = ext.spawn(onboard_args(config), env)
      local held = wait_held(function() return (emu:journal(since)) end, function() return not p:done() end)
      os.execute("kill -KILL " .. emulator_pid(emu))
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
        local msg = resume(env) or compare(again:state(), baseline)
        if msg then fail(msg) end
        again:stop()
      end
      os.execute("rm -rf " .. files.quote(dir))
    end
    assert.are.same({}, failures)
  end)
end)

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
    local r = cli.run(onboard_args(), { CMKFLOW_STATE_DIR = dir })
    assert.equal(0, r.code, r.stderr)
    baseline = emustate.normalise(state_of(dir))
    os.execute("rm -rf " .. files.quote(dir))
  end)

  it("at request boundaries, resumed, reaches the same state", function()
    assert.is_table(baseline, "needs the uninterrupted run")
    -- the embedded emulator's journal dies with it: boundaries are tried until the run finishes
    -- before its request k+1 (bounded: 200 requests)
    local failures, last = {}, nil
    for k = 0, 200, STEP do
      local function fail(msg) failures[#failures + 1] = ("k=%d: %s"):format(k, msg) end
      local dir = files.tmpdir()
      local knobs = files.write(dir .. "/knobs.json", json.encode { faults = { hold_rule(k) } })
      local env = { CMKFLOW_STATE_DIR = dir }
      local p = ext.spawn(onboard_args(), { CMKFLOW_STATE_DIR = dir, CMKFLOW_EMULATOR_KNOBS = knobs })
      local url, client = embedded_client(p, dir)
      local held = url and wait_held(function()
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
        local msg = resume(env) or compare(state_of(dir), baseline)
        if msg then fail(msg) end
      end
      os.execute("rm -rf " .. files.quote(dir))
      if last then break end
    end
    assert.are.same({}, failures)
    assert.is_true(last ~= nil and last >= 10, "the run ended after request " .. tostring(last))
  end)
end)
