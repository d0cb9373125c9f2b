-- Crash testing the emulator (spec/emulator_durability_spec.lua, spec/emulator_durability_embedded_spec.lua):
--   d.STEP                          boundaries tried: every 3rd, every one with CMKFLOW_SOAK=1 (`make soak`)
--   d.hold_rule(k)                  a fault rule that lets k requests through and holds the (k+1)-th's answer
--   d.emulator_pid(emu)             the `cmkflow emulator` process under support.external_emulator's `timeout`
--   d.wait_held(journal, alive)     the journal entry of the held request (bounded wait)
--   d.onboard_args(config?)         `cmkflow run onboard` arguments
--   d.resume(env)                   `cmkflow resume` of the one run in env's state directory: nil or a failure
--   d.compare(state, baseline)      nil, or how /_emulator/state differs from the normalised baseline
local json = require("cmkflow.core").json
local cli = require "support.cli"
local ext = require "support.external_emulator"
local emustate = require "support.emulator_state"

local M = {}

M.STEP = os.getenv("CMKFLOW_SOAK") == "1" and 1 or 3
local CUSTOMER = "contoso"

function M.hold_rule(k) return { latency_ms = 60000, count = 1, after = k } end

-- The pid of the `cmkflow emulator` process under ext.start's `timeout` (its only child).
function M.emulator_pid(emu)
  local f = io.open(("/proc/%d/task/%d/children"):format(emu.pid, emu.pid))
  local pid = f and tonumber((f:read("a") or ""):match("%d+"))
  if f then f:close() end
  return assert(pid, "no emulator process under " .. emu.pid)
end

-- The journal entry of the held request, waiting (bounded: 30 s) while `alive()` holds.
function M.wait_held(journal, alive)
  for _ = 1, 300 do
    for _, e in ipairs(journal()) do
      if e.fault then return e end
    end
    if not alive() then return nil end
    ext.sleep(0.1)
  end
end

function M.onboard_args(config)
  local args = { "run", "onboard", "--param", "customer=" .. CUSTOMER, "--output", "json" }
  if config then args[#args + 1] = "--config" args[#args + 1] = config end
  return args
end

-- `cmkflow resume` of the one run in env's state directory; nil or a failure message.
function M.resume(env)
  local list = cli.run({ "runs", "list", "--output", "json" }, env)
  local runs = json.decode(list.stdout)
  if type(runs) ~= "table" or #runs ~= 1 then return "runs list: " .. list.stdout .. list.stderr end
  local r = cli.run({ "resume", runs[1].run_id, "--output", "json" }, env)
  local doc = json.decode(r.stdout)
  if r.code ~= 0 or type(doc) ~= "table" or doc.status ~= "succeeded" then
    return ("resume exited %d: %s %s"):format(r.code, r.stdout, r.stderr)
  end
end

function M.compare(state, baseline)
  local got = ext.onboard_census(state)
  if emustate.canon(got) ~= emustate.canon(ext.ONBOARD_ONCE) then return "objects after resume: " .. emustate.canon(got) end
  local d = emustate.first_difference(emustate.normalise(state), baseline)
  if d then return "end state differs from the uninterrupted run's at " .. d end
end

return M
