-- The one run pipeline every front end shares (the CLI's run, plan, resume and bulk; the C API):
-- resolve the workflow, load its definition in the sandbox, check its parameters before any call,
-- resolve the configuration and the policy, open the run store, and drive the engine. Nothing
-- here prints: results and failures come back as data (error tables, cmkflow.errors).
local core = require "cmkflow.core"
local host = require "cmkflow.host"
local sandbox = require "cmkflow.sandbox"
local engine = require "cmkflow.workflow.engine"
local params = require "cmkflow.workflow.params"
local policy_mod = require "cmkflow.policy"
local validate = require "cmkflow.azure.validate"
local config = require "cmkflow.app.config"
local state = require "cmkflow.app.state"
local file = require "cmkflow.util.file"

local json = core.json

local M = {}

-- The engine knows no Azure types: the Azure layer's validators back them.
params.register_types(validate.PARAM_TYPES)

local function usage_error(message, extra)
  local e = { code = "InvalidInput", kind = "usage", message = message }
  for k, v in pairs(extra or {}) do e[k] = v end
  return core.error.new(e)
end
M.usage_error = usage_error

-- A workflow reference: a file path, or the name of a stock workflow ("onboard", or
-- "workflows/onboard.lua" when no such file exists here). Returns kind ("file" | "module"), what,
-- and the reference to store with the run; or nil and an error.
function M.resolve_workflow(ref)
  if file.read(ref) then return "file", ref, ref end
  local name = ref:gsub("%.lua$", ""):match("([^/]+)$")
  if name and core.embedded_source("workflows." .. name) then return "module", "workflows." .. name, name end
  return nil, usage_error(("no workflow file '%s' and no stock workflow named '%s'"):format(ref, tostring(name)))
end

-- Loads and checks a workflow definition: def | nil, error (kind "usage").
function M.load(kind, what, chunkname)
  local def, err = host.load_definition(kind, what, chunkname)
  if not def then return nil, err end
  local ok, cerr = pcall(engine.check_definition, def)
  if not ok then return nil, usage_error(tostring(cerr)) end
  return def
end

-- The policy file (sandboxed Lua returning a table) merged over the defaults; raises a usage error.
function M.load_policy(path)
  if not path then return policy_mod.merge({}) end
  local source = file.read(path)
  if not source then error(usage_error(("policy file '%s' cannot be read"):format(path), { field = "policy" }), 0) end
  local fn, err = sandbox.load(source, "@" .. path, {})
  if not fn then error(usage_error("policy " .. err, { field = "policy" }), 0) end
  local ok, custom = pcall(fn)
  if not ok then error(usage_error("policy " .. path .. ": " .. tostring(custom), { field = "policy" }), 0) end
  if type(custom) ~= "table" then error(usage_error("policy " .. path .. " must return a table", { field = "policy" }), 0) end
  return policy_mod.merge(custom)
end

local function has_context(name)
  local c = host.contexts[name]
  return c ~= nil and c.credential ~= nil
end

-- The ctx steps see: ctx.context("isv") -> {tenant, subscription, arm, graph, keyvault, ...}.
function M.make_ctx(def, values, policy)
  local ctx = { params = values, policy = policy, has_context = has_context, hooks = policy.hooks }
  ctx.context = function(name) return host.context(name) end
  -- tenant and subscription of a context without building clients (plans make no calls)
  ctx.context_info = function(name)
    local c = host.contexts[name] or {}
    return { tenant = c.tenant or (c.credential and c.credential:describe().tenant), subscription = c.subscription }
  end
  ctx.log = function(fmt, ...) io.stderr:write(select("#", ...) > 0 and fmt:format(...) or tostring(fmt), "\n") end
  return ctx
end

-- Everything a new run needs, checked before any call. opts: {workflow (a file or a stock name)
-- | chunk (source, with chunkname), params = {k = raw}, config, cloud}. Returns a prepared run
-- {def, ref, values} or nil, error (kind "usage": bad workflow, parameters).
function M.prepare(opts)
  local kind, what, ref, chunkname
  if opts.chunk then
    kind, what, chunkname = "string", opts.chunk, opts.chunkname
    ref = nil -- a chunk cannot be resumed from the store (it is not kept)
  else
    kind, what, ref = M.resolve_workflow(opts.workflow)
    if not kind then return nil, what end
  end
  local def, lerr = M.load(kind, what, chunkname)
  if not def then return nil, lerr end
  local raw = opts.params or {}
  -- against the embedded emulator (no configuration) parameters may have demo defaults, so that
  -- `cmkflow run workflows/onboard.lua` alone shows the whole job; never against real Azure
  if config.embedded_target(opts) then
    for name, spec in pairs(def.params or {}) do
      if raw[name] == nil and spec.demo_default ~= nil then raw[name] = spec.demo_default end
    end
  end
  local values, problems = engine.check_params(def, raw)
  if not values then
    return nil, usage_error("invalid parameters for " .. def.name .. ":\n  - " .. table.concat(problems, "\n  - "),
                            { problems = problems })
  end
  return { def = def, ref = ref, values = values }
end

-- Configuration and policy for a prepared run. Returns target, policy or nil, error.
function M.connect(opts, policy_path)
  local target, err = config.configure(opts)
  if not target then return nil, err end
  target.policy = policy_path or opts.policy or target.policy
  local ok, policy = pcall(M.load_policy, target.policy)
  if not ok then return nil, core.error.is(policy) and policy or usage_error(tostring(policy)) end
  return target, policy
end

-- Plans a prepared run: the engine's plan (no call at all). Returns plan or nil, error.
function M.plan(prepared, opts)
  local target, policy = M.connect(opts)
  if not target then return nil, policy end
  return engine.plan(prepared.def, M.make_ctx(prepared.def, prepared.values, policy))
end

-- Starts a prepared run: a new run in the store, executed by the engine. progress(event) sees the
-- engine's events. Returns the engine's result {run_id, status, outputs, error, gate} or nil, error.
function M.start(prepared, opts, progress, on_created)
  local target, policy = M.connect(opts)
  if not target then return nil, policy end
  local db = state.open_store()
  target.workflow = prepared.ref
  local run_id = db:create_run { workflow = prepared.def.name, params = json.encode(prepared.values),
                                 config = json.encode(target) }
  local lock <close> = state.lock_run(run_id) or nil -- a new run: nobody else can hold it yet
  if on_created then on_created(run_id) end
  local result = engine.execute { def = prepared.def, ctx = M.make_ctx(prepared.def, prepared.values, policy),
                                  store = db, run_id = run_id, progress = progress }
  config.finish()
  return result
end

-- Resumes a stored run where it stopped, talking where the run did (its config file or cloud), or
-- where `connect_opts` says (the C API: the cloud and credentials set in code). Returns the
-- engine's result, or nil, error.
function M.resume(run_id, progress, connect_opts)
  local db = state.open_store()
  local run = db:run(run_id)
  if not run then return nil, usage_error(("no run '%s' in %s/runs.db"):format(run_id, state.dir())) end
  -- one process at a time per run: a second resume stops here, naming the first
  local lock <close>, holder = state.lock_run(run_id)
  if lock == false then
    return nil, usage_error(("run %s is being resumed or run by %s; wait for it to finish"):format(run_id,
      holder ~= "" and holder or "another process"))
  elseif not lock then
    return nil, core.error.new { code = "InvalidConfig", kind = "config", field = "CMKFLOW_STATE_DIR", message = holder }
  end
  if run.status == "succeeded" then
    return { run_id = run_id, status = run.status, outputs = run.outputs and json.decode(run.outputs) }
  end
  local where = json.decode(run.config or "{}") or {}
  local kind, what = M.resolve_workflow(where.workflow or run.workflow)
  if not kind then return nil, what end
  local def, lerr = M.load(kind, what)
  if not def then return nil, lerr end
  local target, policy = M.connect(connect_opts or
    { config = where.config, cloud = where.cloud ~= "emulator" and where.cloud or nil }, where.policy)
  if not target then return nil, policy end
  local values = json.decode(run.params) or {}
  local result = engine.execute { def = def, ctx = M.make_ctx(def, values, policy), store = db, run_id = run_id,
                                  progress = progress }
  config.finish()
  return result
end

return M
