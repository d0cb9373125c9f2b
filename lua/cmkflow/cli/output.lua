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

-- A run's result: {run_id, status, outputs, error (error table), gate}.
function M.result(result, output)
  local err = result.error and errors.data(result.error) or nil
  if output == "json" then
    local doc = { run_id = result.run_id, status = result.status, outputs = result.outputs or json.object(),
                  error = err, gate = result.gate }
    io.stdout:write(json.encode(doc), "\n")
    return
  end
  io.stdout:write(("run %s: %s\n"):format(result.run_id, result.status))
  if result.gate then
    io.stdout:write(("waiting at gate '%s': after the handoff, run\n  cmkflow approve %s %s && cmkflow resume %s\n")
      :format(result.gate, result.run_id, result.gate, result.run_id))
  end
  if err then io.stdout:write("error: ", M.error_text(result.error), "\n") end
  if result.outputs then io.stdout:write(json.encode(result.outputs, { pretty = true }), "\n") end
end

return M
