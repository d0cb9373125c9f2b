-- The run store as data for every front end (the CLI's runs, the C API): a run with its steps,
-- errors and approvals, and the list of runs.
local core = require "cmkflow.core"
local state = require "cmkflow.app.state"

local json = core.json

local M = {}

-- A journaled error: the JSON the engine stored (an error's fields), or older text as a message.
local function stored_error(text)
  if text == nil then return nil end
  local ok, doc = pcall(json.decode, text)
  if ok and type(doc) == "table" then return doc end
  return { code = "Error", message = text }
end

-- The runs, newest first: [{run_id, workflow, status, created_at, updated_at}].
function M.list(limit)
  local out = json.array()
  for _, r in ipairs(state.open_store():runs { limit = limit or 50 }) do
    out[#out + 1] = { run_id = r.id, workflow = r.workflow, status = r.status, created_at = r.created_at,
                      updated_at = r.updated_at }
  end
  return out
end

-- One run: {run_id, workflow, status, params, error, outputs, steps = [{name, status, attempts, error,
-- outputs, changes}], approvals = [...]}, or
-- nil, error (kind "usage") when the store has no such run.
function M.show(run_id)
  local db = state.open_store()
  local run = db:run(run_id)
  if not run then
    return nil, core.error.new { code = "UnknownRun", kind = "usage", message = "no run '" .. tostring(run_id) .. "'" }
  end
  local steps = json.array()
  for _, s in ipairs(db:steps(run_id)) do
    local outputs = s.outputs and json.decode(s.outputs) or nil
    -- the step's change records travel with its outputs in the journal (cmkflow.workflow.engine)
    local changes = type(outputs) == "table" and outputs._changes or nil
    if changes then outputs._changes = nil end
    steps[#steps + 1] = { name = s.name, status = s.status, attempts = s.attempts, error = stored_error(s.error),
      outputs = outputs, changes = changes }
  end
  local approvals = json.array()
  for _, a in ipairs(db:approvals(run_id)) do approvals[#approvals + 1] = { gate = a.gate, status = a.status } end
  return { run_id = run.id, workflow = run.workflow, status = run.status, params = json.decode(run.params),
    error = stored_error(run.error), outputs = run.outputs and json.decode(run.outputs) or nil, steps = steps,
    approvals = approvals }
end

return M
