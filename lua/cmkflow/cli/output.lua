-- What the CLI prints: progress on stderr, results on stdout (text for people, one JSON line for
-- machines), failures as "code: message [party must fix this]" with the hint on the next line.
local core = require "cmkflow.core"
local errors = require "cmkflow.errors"

local json = core.json

local M = {}

-- A failure for people: the step (when a step failed), the code once, the party that must act
-- (only when one must), then the hint.
function M.error_text(err)
  err = errors.from(err)
  local s = (err.step and ("step '" .. err.step .. "' failed: ") or "") .. errors.text(err)
  if err.hint then s = s .. "\n  hint: " .. err.hint end
  return s
end

-- A command's failure before or outside a run: "cmkflow: ..." on stderr; returns its exit code.
function M.fail(err)
  io.stderr:write("cmkflow: ", M.error_text(err), "\n")
  return errors.exit_code(errors.from(err))
end

-- A progress printer for the engine's events (on when stderr is a terminal or --progress).
-- total: the number of steps, or nil when not known yet (resume learns it from the run).
function M.progress_printer(enabled, total)
  if not enabled then return function() end end
  local done = 0
  total = total or "?"
  return function(e)
    if e.kind == "done" or e.kind == "skip" or e.kind == "fail" then done = done + 1 end
    local label = e.title and e.title ~= e.step and (e.step .. " (" .. e.title .. ")") or e.step
    if e.kind == "start" then
      io.stderr:write(("  ... %s\n"):format(label))
    elseif e.kind == "done" then
      io.stderr:write(("  [%d/%s] done  %s  %.2f s\n"):format(done, total, label, (e.elapsed_ms or 0) / 1000))
    elseif e.kind == "skip" then
      io.stderr:write(("  [%d/%s] done  %s  (earlier attempt)\n"):format(done, total, label))
    elseif e.kind == "fail" then
      io.stderr:write(("  [%d/%s] FAILED %s  %.2f s\n"):format(done, total, label, (e.elapsed_ms or 0) / 1000))
    elseif e.kind == "wait" then
      io.stderr:write(("  waiting at approval gate '%s'\n"):format(e.step))
    end
  end
end

local function list_text(items)
  local out = {}
  for _, item in ipairs(items or {}) do out[#out + 1] = "    - " .. item end
  return table.concat(out, "\n")
end

-- What a run waiting at a gate hands over (onboard's handoff: cmk.handoff_details), for people.
local function handoff_text(h)
  local lines = {
    "handoff for the customer's administrator (their tenant, their credentials):",
    "  ISV tenant:    " .. tostring(h.isvTenant),
    "  ISV app id:    " .. tostring(h.appId),
    "  consent link:  " .. tostring(h.consentUrl),
  }
  if h.consentUrlNote then lines[#lines + 1] = "                 (" .. h.consentUrlNote .. ")" end
  lines[#lines + 1] = "  the customer creates:\n" .. list_text(h.customerMustCreate)
  lines[#lines + 1] = "  roles the customer's administrator needs for that:\n" .. list_text(h.customerOperatorRoles)
  lines[#lines + 1] = "  the customer runs (cmkflow users; or use the kit: cmkflow handoff " .. tostring(h.runId)
    .. " --out DIR):\n    " .. tostring(h.customerCommand)
  lines[#lines + 1] = "then the ISV continues this run with the two values the customer hands back:\n    "
    .. tostring(h.isvCommand)
  return table.concat(lines, "\n") .. "\n"
end

-- A run's result: {run_id, status, outputs, error (error table), gate, handoff}.
function M.result(result, output)
  local err = result.error and errors.data(result.error) or nil
  if output == "json" then
    local doc = { run_id = result.run_id, status = result.status, outputs = result.outputs or json.object(),
                  error = err, gate = result.gate, handoff = result.handoff }
    io.stdout:write(json.encode(doc), "\n")
    return
  end
  io.stdout:write(("run %s: %s\n"):format(result.run_id, result.status))
  if result.gate and result.handoff then
    io.stdout:write(("waiting at gate '%s'\n"):format(result.gate), handoff_text(result.handoff))
  elseif result.gate then
    io.stdout:write(("waiting at gate '%s': decide it, then continue\n  cmkflow approve %s %s && cmkflow resume %s\n")
      :format(result.gate, result.run_id, result.gate, result.run_id))
  end
  if err then io.stdout:write("error: ", M.error_text(result.error), "\n") end
  if result.outputs then io.stdout:write(json.encode(result.outputs, { pretty = true }), "\n") end
  -- a party's run that ends with what the other party runs next (customer-authorize): last, plainly
  local next_commands = type(result.outputs) == "table" and result.outputs.isvCommands
  if result.status == "succeeded" and type(next_commands) == "table" then
    io.stdout:write("hand the values above back to the ISV, who runs:\n")
    for _, c in ipairs(next_commands) do io.stdout:write("  ", c, "\n") end
  end
end

return M
