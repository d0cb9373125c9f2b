-- The workflow engine: a workflow is a Lua definition (name, description, typed params, steps);
-- each step's outputs are journaled in the run store before any step that needs them starts, so a
-- run that stops (failure, Ctrl-C, SIGKILL, an approval gate) resumes by skipping finished work.
-- Independent steps run concurrently as async tasks (coroutines over one curl multi session).
--
-- definition = {
--   name = "isv-setup", description = "...",
--   params = { <name> = <spec of cmkflow.workflow.params> },
--   steps = { { name = "app", title = "...", needs = { "other-step" }, mutates = true,
--               gate = false,                          -- true: an approval gate, no run function
--               values = { <name> = <param spec> },   -- a gate's: values given with the approval
--               values_needed = function(ctx) end,    -- a gate's: are its values required now?
--               handoff = function(ctx) return {...} end, -- a gate's: what the run hands over while
--                                                     -- it waits there (result.handoff)
--               decide_first = true,                  -- a gate's: asks the policy when the run starts;
--                                                     -- waived, it passes at once and orders nothing
--                                                     -- (the steps after it wait for their other needs
--                                                     -- only); else it waits for its needs, then asks
--               plan = function(ctx) return "what it would change" end,   -- string or list
--               diff = function(ctx) return { outputs } end,  -- reads the world and records, per
--                                                     -- resource, what run would do (M.diff)
--               run = function(ctx) return { outputs } end }, ... },
--   outputs = function(ctx) return { ... } end,       -- optional; default: every step's outputs
--   outputs_on_failure = true,                        -- optional: outputs(ctx) also when a step failed
--   next = function(ctx) return { { "verify", "cmkflow run verify ..." } } end, -- optional: what an
--                                                     -- operator runs next (result.next, for people)
-- }
-- ctx: params, policy, outputs (by step name), context(name) -> tenant clients, log(fmt, ...),
--      run_id, step (current step name), plan (true in plan mode), changes (the step's change
--      records: {action, type, name, party, tenant, subscription, resource_group, id, changes,
--      note}; journaled with its outputs under CHANGES, returned as the result's `changes`).
--
-- Failures are error tables (cmkflow.errors): a step's failure is journaled as JSON with its fields
-- and the step's name; interruption is the core's sentinel, compared by identity.
local core = require "cmkflow.core"
local async = require "cmkflow.async"
local errors = require "cmkflow.errors"
local params_mod = require "cmkflow.workflow.params"

local json, EXIT = core.json, core.exit

local M = {}

-- A run's status -> the process exit code (docs/exit-codes.md); a failed run's error may name a
-- more precise one (authentication: 4), see M.exit_code.
M.STATUS_EXIT = { succeeded = EXIT.ok, failed = EXIT.failed, waiting = EXIT.waiting, interrupted = EXIT.interrupted,
                  cancelled = EXIT.failed }

function M.exit_code(result)
  if result.status == "failed" and result.error then return errors.exit_code(result.error) end
  return M.STATUS_EXIT[result.status] or EXIT.failed
end

local function definition_error(msg) error("workflow definition: " .. msg, 0) end

-- Checks a definition's shape: unique step names, known dependencies, no cycles. Returns it with
-- steps in a dependency-respecting order (definition order where free).
function M.check_definition(def)
  if type(def) ~= "table" then definition_error("the workflow file must return a table") end
  if type(def.name) ~= "string" or def.name == "" then definition_error("'name' is required") end
  if type(def.steps) ~= "table" or #def.steps == 0 then definition_error("'steps' must list at least one step") end
  def.params = def.params or {}
  local by_name = {}
  for i, s in ipairs(def.steps) do
    if type(s) ~= "table" or type(s.name) ~= "string" or not s.name:match("^[%w%-_]+$") then
      definition_error(("step %d needs a name of letters, digits, '-' or '_'"):format(i))
    end
    if by_name[s.name] then definition_error("step name '" .. s.name .. "' is used twice") end
    if not s.gate and type(s.run) ~= "function" then
      definition_error("step '" .. s.name .. "' needs a run function (or gate = true)")
    end
    s.needs = s.needs or {}
    by_name[s.name] = s
  end
  for _, s in ipairs(def.steps) do
    for _, n in ipairs(s.needs) do
      if not by_name[n] then definition_error("step '" .. s.name .. "' needs unknown step '" .. n .. "'") end
    end
  end
  -- cycle check (depth-first)
  local state = {}
  local function visit(s, path)
    if state[s.name] == "done" then return end
    if state[s.name] == "active" then definition_error("steps depend on each other in a cycle: " .. path .. " -> " .. s.name) end
    state[s.name] = "active"
    for _, n in ipairs(s.needs) do visit(by_name[n], path .. " -> " .. s.name) end
    state[s.name] = "done"
  end
  for _, s in ipairs(def.steps) do visit(s, "") end
  -- dependency order, definition order where free
  local ordered, placed = {}, {}
  while #ordered < #def.steps do
    for _, s in ipairs(def.steps) do
      if not placed[s.name] then
        local ready = true
        for _, n in ipairs(s.needs) do if not placed[n] then ready = false end end
        if ready then
          ordered[#ordered + 1] = s
          placed[s.name] = true
        end
      end
    end
  end
  def.steps = ordered
  def.by_name = by_name
  return def
end

-- Placeholder outputs for plan mode: ctx.outputs.app.appId reads "<app.appId>".
local function placeholder(step)
  return setmetatable({}, { __index = function(_, k) return ("<%s.%s>"):format(step, tostring(k)) end })
end

-- Plans a run: every mutation each step would make, in order, and no call at all.
-- Returns an array of {step, title, mutations = {...}}.
function M.plan(def, ctx)
  local out = json.array()
  ctx.plan = true
  ctx.outputs = setmetatable({}, { __index = function(t, k) local p = placeholder(k) rawset(t, k, p) return p end })
  for _, s in ipairs(def.steps) do
    if s.mutates ~= false or s.gate then
      local what = s.gate and ("approval gate '" .. s.name .. "'") or (s.plan and s.plan(ctx)) or s.title or s.name
      out[#out + 1] = { step = s.name, title = s.title or s.name,
                        mutations = type(what) == "table" and json.array(what) or json.array { what } }
    end
  end
  return out
end

-- The records of what a plan's diff functions found, in step order: every step with a diff reads
-- the current state (read-only calls) and records, per resource, "create", "update" (with the
-- fields that change) or "unchanged"; a mutating step without one is recorded as action "run"
-- with what its plan text says; a gate that will wait as action "gate". Returns changes (an
-- array) or raises an error table.
function M.diff(def, ctx)
  local changes = json.array()
  ctx.plan = true
  ctx.outputs = setmetatable({}, { __index = function(t, k) local p = placeholder(k) rawset(t, k, p) return p end })
  local ok, err = pcall(async.run, function()
    for _, s in ipairs(def.steps) do
      local step_ctx = setmetatable({ step = s.name, changes = json.array() }, { __index = ctx })
      if s.diff then
        local out = s.diff(step_ctx)
        rawset(ctx.outputs, s.name, setmetatable(type(out) == "table" and out or {}, getmetatable(placeholder(s.name))))
      elseif s.gate then
        local needed = not (ctx.policy and ctx.policy.approval) or ctx.policy.approval(s.name, ctx) ~= false
        if needed then step_ctx.changes[1] = { action = "gate", type = "approval gate", name = s.name } end
      elseif s.mutates ~= false then
        local what = s.plan and s.plan(step_ctx) or s.title or s.name
        for _, m in ipairs(type(what) == "table" and what or { what }) do
          step_ctx.changes[#step_ctx.changes + 1] = { action = "run", type = "step", name = s.name, note = m }
        end
      end
      for _, c in ipairs(step_ctx.changes) do
        c.step = s.name
        changes[#changes + 1] = c
      end
    end
  end)
  if not ok then
    if errors.is_interrupt(err) then error(err, 0) end
    error(errors.from(err), 0)
  end
  return changes
end

-- The key under which a step's change records travel in its journaled outputs.
local CHANGES = "_changes"

-- A step's failure as an error table naming the step (the journal keeps it as JSON).
local function step_error(step, value)
  local err = errors.from(value)
  local data = errors.data(err)
  data.step = step
  return errors.new(data), err
end

-- Runs (or resumes) a run. opts = { def, ctx (params, policy, context, log), store, run_id,
-- progress = function(event), now = function() -> ms (default: the core's monotonic clock) }.
-- Returns { run_id, status, outputs, error (an error table), gate, handoff, changes (every step's
-- change records, in step order) }.
function M.execute(opts)
  local def, ctx, store, run_id = opts.def, opts.ctx, opts.store, opts.run_id
  local progress = opts.progress or function() end
  local now = opts.now or core.monotonic_ms
  ctx.run_id = run_id
  ctx.outputs = {}
  local results = {}       -- step name -> "succeeded" | "failed" | "waiting" | "blocked"
  local changes = {}       -- step name -> its change records
  local failure, waiting_gate

  -- finished work from an earlier attempt of this run; a gate is decided again every time (its
  -- approval may have been corrected since) and is not taken from the journal
  for _, rec in ipairs(store:steps(run_id)) do
    local s = def.by_name and def.by_name[rec.name]
    if rec.status == "succeeded" and not (s and s.gate) then
      results[rec.name] = "succeeded"
      local out = rec.outputs and json.decode(rec.outputs) or {}
      if type(out) == "table" then changes[rec.name], out[CHANGES] = out[CHANGES], nil end
      ctx.outputs[rec.name] = out
    end
  end
  M.invalidate_after_corrections(def, store, run_id, results, ctx.outputs)
  store:set_run(run_id, { status = "running" })

  local tasks = {}
  local function gate_needed(s)
    if ctx.policy and ctx.policy.approval then return ctx.policy.approval(s.name, ctx) ~= false end
    return true
  end
  local function pass_gate(s, a)
    results[s.name] = "succeeded"
    ctx.outputs[s.name] = { approved = true }
    -- values given with the approval (cmkflow approve RUN GATE --param k=v) become outputs
    for k, v in pairs(M.approval_values(a)) do ctx.outputs[s.name][k] = v end
    store:step_begin(run_id, s.name)
    store:step_finish(run_id, s.name, "succeeded", json.encode(ctx.outputs[s.name]))
    progress { kind = "done", step = s.name, title = s.title, elapsed_ms = 0 }
  end
  local function run_step(s)
    -- a gate decided first that the policy waives orders nothing: it passes before its needs finish
    if s.gate and s.decide_first and not gate_needed(s) then return pass_gate(s, store:approval(run_id, s.name)) end
    for _, n in ipairs(s.needs) do async.await(tasks[n]) end
    if results[s.name] == "succeeded" then
      progress { kind = "skip", step = s.name, title = s.title }
      return
    end
    for _, n in ipairs(s.needs) do
      if results[n] ~= "succeeded" then results[s.name] = "blocked" return end
    end
    if s.gate then
      local a = store:approval(run_id, s.name)
      if a and a.status == "approved" or not gate_needed(s) then return pass_gate(s, a) end
      if a and a.status == "rejected" then
        results[s.name] = "failed"
        failure = failure or errors.new { code = "GateRejected", kind = "remote", step = s.name, retryable = false,
          message = "approval gate '" .. s.name .. "' was rejected" .. (a.note and (": " .. a.note) or "") }
        return
      end
      if not a then store:request_approval(run_id, s.name) end
      results[s.name] = "waiting"
      waiting_gate = waiting_gate or s.name
      progress { kind = "wait", step = s.name, title = s.title }
      return
    end
    local started = now()
    progress { kind = "start", step = s.name, title = s.title }
    store:step_begin(run_id, s.name)
    local step_ctx = setmetatable({ step = s.name, changes = json.array() }, { __index = ctx })
    if ctx.hooks and ctx.hooks.before then ctx.hooks.before(s.name, step_ctx) end
    local ok, out = xpcall(s.run, function(e)
      if type(e) == "table" then return e end
      return debug.traceback(tostring(e), 2)
    end, step_ctx)
    if ok and ctx.hooks and ctx.hooks.after then ctx.hooks.after(s.name, step_ctx, out) end
    if not ok then
      out = core.limits.memory_error(out) -- "not enough memory" at the limit: MemoryLimit
      if errors.is_interrupt(out) then
        -- journaled before it propagates: `runs show` shows the step ended by the Interrupted error
        -- (the journal's step statuses are running/succeeded/failed/skipped), resume runs it again
        results[s.name] = "failed"
        local data = errors.data(out)
        data.step = s.name
        store:step_finish(run_id, s.name, "failed", nil, json.encode(data))
        error(out, 0)
      end
      results[s.name] = "failed"
      local err = step_error(s.name, out)
      store:step_finish(run_id, s.name, "failed", nil, json.encode(errors.data(err)))
      failure = failure or err
      progress { kind = "fail", step = s.name, title = s.title, error = err, elapsed_ms = now() - started }
      return
    end
    out = out or {}
    local journaled = out
    if #step_ctx.changes > 0 and type(out) == "table" then
      journaled = setmetatable({ [CHANGES] = step_ctx.changes }, getmetatable(out))
      for k, v in pairs(out) do journaled[k] = v end
    end
    changes[s.name] = step_ctx.changes
    local encoded, eerr = json.encode(journaled)
    if not encoded then error("step '" .. s.name .. "' returned outputs that are not JSON: " .. tostring(eerr), 0) end
    store:step_finish(run_id, s.name, "succeeded", encoded)
    ctx.outputs[s.name] = out
    results[s.name] = "succeeded"
    progress { kind = "done", step = s.name, title = s.title, elapsed_ms = now() - started }
  end

  -- every step's records in step order (those of an earlier attempt from the journal)
  local function all_changes()
    local list = json.array()
    for _, s in ipairs(def.steps) do
      for _, c in ipairs(changes[s.name] or {}) do
        c.step = s.name
        list[#list + 1] = c
      end
    end
    return list
  end

  local ok, err = pcall(async.run, function()
    for _, s in ipairs(def.steps) do tasks[s.name] = async.spawn(run_step, s) end
    for _, s in ipairs(def.steps) do async.await(tasks[s.name]) end
  end)
  if not ok then
    local status = errors.is_interrupt(err) and "interrupted" or "failed"
    local e = errors.from(err)
    store:set_run(run_id, { status = status, error = json.encode(errors.data(e)) })
    return { run_id = run_id, status = status, error = e, changes = all_changes() }
  end

  if failure then
    -- a definition with outputs_on_failure (verify: which link is broken) reports outputs anyway
    local outputs = def.outputs_on_failure and def.outputs and def.outputs(ctx) or nil
    store:set_run(run_id, { status = "failed", error = json.encode(errors.data(failure)),
                            outputs = outputs and json.encode(outputs) or nil })
    return { run_id = run_id, status = "failed", error = failure, outputs = outputs, changes = all_changes() }
  end
  if waiting_gate then
    store:set_run(run_id, { status = "waiting" })
    local gate = def.by_name and def.by_name[waiting_gate]
    local handoff
    if gate and gate.handoff then
      local hok, h = pcall(gate.handoff, setmetatable({ step = waiting_gate }, { __index = ctx }))
      handoff = hok and h or nil
    end
    return { run_id = run_id, status = "waiting", gate = waiting_gate, handoff = handoff, changes = all_changes() }
  end
  local outputs = def.outputs and def.outputs(ctx) or ctx.outputs
  store:set_run(run_id, { status = "succeeded", outputs = json.encode(outputs) })
  return { run_id = run_id, status = "succeeded", outputs = outputs, changes = all_changes(),
           next = def.next and def.next(ctx) or nil }
end

-- The values given with an approval (`cmkflow approve RUN GATE --param k=v`): they travel in the
-- approval's note as JSON {note, values}. Returns a table (empty when none).
function M.approval_values(a)
  local decoded = a and a.note and a.note:sub(1, 1) == "{" and json.decode(a.note)
  if type(decoded) == "table" and type(decoded.values) == "table" then return decoded.values end
  return {}
end

local function same_values(a, b)
  for k, v in pairs(a) do if tostring(b[k]) ~= tostring(v) then return false end end
  for k, v in pairs(b) do if tostring(a[k]) ~= tostring(v) then return false end end
  return true
end

-- A gate approved again with other values (a corrected vault URI or key name): every step that
-- depends on it, directly or not, ran with the old values and runs again. Steps are in dependency
-- order (check_definition), so one pass sees each step's needs before the step.
function M.invalidate_after_corrections(def, store, run_id, results, outputs)
  local stale = {}
  for _, rec in ipairs(store:steps(run_id)) do
    local s = def.by_name and def.by_name[rec.name]
    if s and s.gate and rec.status == "succeeded" then
      local journaled = rec.outputs and json.decode(rec.outputs) or {}
      journaled.approved = nil
      local a = store:approval(run_id, rec.name)
      if a and a.status == "approved" and not same_values(journaled, M.approval_values(a)) then stale[rec.name] = true end
    end
  end
  if not next(stale) then return end
  for _, s in ipairs(def.steps) do
    for _, n in ipairs(s.needs) do
      if stale[n] then
        stale[s.name] = true
        results[s.name], outputs[s.name] = nil, nil
      end
    end
  end
end

-- Validates raw parameter values for def. Returns values or nil, problems.
function M.check_params(def, raw) return params_mod.check(def.params or {}, raw or {}) end

return M
