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

-- every run in the store (the store's limit is a count; no store holds this many)
local ALL = math.maxinteger

local function usage_error(code, message, extra)
  local e = { code = code, kind = "usage", message = message }
  for k, v in pairs(extra or {}) do e[k] = v end
  return core.error.new(e)
end

-- A stored run as every front end lists it: {run_id, workflow, customer, status, created_at,
-- updated_at (epoch seconds)}.
local function row(r)
  local ok, params = pcall(json.decode, r.params or "{}")
  local customer = ok and type(params) == "table" and params.customer or nil
  return { run_id = r.id, workflow = r.workflow, customer = type(customer) == "string" and customer or nil,
           status = r.status, created_at = r.created_at, updated_at = r.updated_at }
end

-- The runs, newest first. filter: a number (the limit, as before) or {limit = 50, status, workflow,
-- customer}. Returns an array of rows (see row above).
function M.list(filter)
  if type(filter) ~= "table" then filter = { limit = filter } end
  local limit = filter.limit or 50
  local out = json.array()
  -- the store filters by status and workflow; the customer is inside the parameters
  local rows = state.open_store():runs { status = filter.status, workflow = filter.workflow,
                                         limit = filter.customer and ALL or limit }
  for _, r in ipairs(rows) do
    local item = row(r)
    if #out < limit and (not filter.customer or item.customer == filter.customer) then out[#out + 1] = item end
  end
  return out
end

-- A run id from an id or a unique prefix of one: id | nil, error (kind "usage": no such run, or a
-- prefix that several runs share, listed in the message and in `candidates`).
function M.resolve(prefix)
  local db = state.open_store()
  if db:run(prefix) then return prefix end
  local found = {}
  for _, r in ipairs(db:runs { limit = ALL }) do
    if r.id:sub(1, #prefix) == prefix then found[#found + 1] = r end
  end
  if #found == 1 then return found[1].id end
  if #found == 0 then
    return nil, usage_error("UnknownRun", ("no run '%s' (cmkflow runs list)"):format(prefix))
  end
  local lines, ids = {}, json.array()
  for _, r in ipairs(found) do
    ids[#ids + 1] = r.id
    lines[#lines + 1] = ("  %s  %s  %s"):format(r.id, r.workflow, r.status)
  end
  return nil, usage_error("AmbiguousRunId", ("run id prefix '%s' matches %d runs; give more of the id:\n%s")
    :format(prefix, #found, table.concat(lines, "\n")), { candidates = ids })
end

-- Statuses of a run that is over: nothing resumes it.
local FINISHED = { succeeded = true, cancelled = true }
M.FINISHED = FINISHED

-- Deletes runs (with their steps, approvals and events) last updated before `before` (epoch
-- seconds). opts: {before, unfinished = false (also unfinished runs), dry_run}. A run another
-- process holds (state.lock_run) is never deleted. Returns {removed = [rows], kept = [rows of
-- unfinished runs left], busy = [rows held by another process]}.
function M.prune(opts)
  local db = state.open_store()
  local result = { removed = json.array(), kept = json.array(), busy = json.array() }
  for _, r in ipairs(db:runs { limit = ALL }) do
    if r.updated_at < opts.before then
      local item = row(r)
      if not FINISHED[r.status] and not opts.unfinished then
        result.kept[#result.kept + 1] = item
      else
        local lock = state.lock_run(r.id)
        if not lock then
          result.busy[#result.busy + 1] = item
        else
          if not opts.dry_run then assert(db:delete_run(r.id)) end
          result.removed[#result.removed + 1] = item
          lock:release()
        end
      end
    end
  end
  return result
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
