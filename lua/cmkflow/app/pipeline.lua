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
local cloud_mod = require "cmkflow.azure.cloud"
local config = require "cmkflow.app.config"
local state = require "cmkflow.app.state"
local file = require "cmkflow.util.file"
local async = require "cmkflow.async"
local errors = require "cmkflow.errors"
local log = require "cmkflow.util.log"

local json = core.json

-- the run's stored cloud name -> the public cloud whose names it uses (the emulator serves
-- the public cloud's host names)
local PUBLIC_CLOUD = { azure = "azure", usgov = "usgov", china = "china", emulator = "azure" }

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
M.has_context = has_context

-- The ctx steps see: ctx.context("isv") -> {tenant, subscription, arm, graph, keyvault, ...}.
-- "customer" is the config's `customers` entry for the run's customer_tenant when there is one.
function M.make_ctx(def, values, policy)
  local customer = config.customer_context_of(values)
  local function real(name) return name == "customer" and customer or name end
  local ctx = { params = values, policy = policy, hooks = policy.hooks }
  ctx.has_context = function(name) return has_context(real(name)) end
  ctx.context = function(name) return host.context(real(name)) end
  -- tenant and subscription of a context without building clients (plans make no calls)
  ctx.context_info = function(name)
    local c = host.contexts[real(name)] or {}
    return { tenant = c.tenant or (c.credential and c.credential:describe().tenant), subscription = c.subscription }
  end
  -- the run's cloud as steps may name it to people: its sign-in authority, Graph, vault suffix,
  -- and the name to give --cloud (nil when a config file names the cloud)
  ctx.cloud_info = function()
    local c = host.current_cloud()
    return { name = (host.cloud or {}).name, authority = c.authority, graph = c.graph, keyvault_suffix = c.keyvault_suffix }
  end
  ctx.log = function(fmt, ...) log.notice(select("#", ...) > 0 and fmt:format(...) or tostring(fmt)) end
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

-- What a plan may call: reads. A client method that writes raises instead of sending (a plan
-- that tried to change something is a bug, never a change).
local WRITES = { put = true, patch = true, post = true, delete = true, find_or_create_application = true,
                 create_service_principal = true, upsert_federated_credential = true, rotate_key = true,
                 update_key = true, create_key = true }
local READS = { GET = true, HEAD = true }

local function refuse(what)
  error(core.error.new { code = "PlanWouldWrite", kind = "internal", retryable = false,
    message = "a plan tried to change something (" .. what .. "): plans only read" }, 0)
end

local function read_only_client(client)
  return setmetatable({}, { __index = function(_, k)
    local v = client[k]
    if type(v) ~= "function" then return v end
    if WRITES[k] then return function() refuse(k) end end
    if k == "send" or k == "request" then
      return function(_, method, ...)
        if not READS[tostring(method):upper()] then refuse(tostring(method)) end
        return v(client, method, ...)
      end
    end
    return function(_, ...) return v(client, ...) end
  end })
end

local function read_only(clients)
  local view = {}
  for k, v in pairs(clients) do view[k] = v end
  for _, k in ipairs { "arm", "graph", "keyvault" } do
    if type(clients[k]) == "table" then view[k] = read_only_client(clients[k]) end
  end
  return view
end

-- Plans a prepared run: the engine's plan (what each step would change, no call at all) and the
-- diff (the current state read with read-only calls: per resource create, update or unchanged).
-- opts.refresh == "false" (Terraform's -refresh=false): no read, no call at all; changes is nil.
-- Returns {steps = the engine's plan, changes = the diff's records} or nil, error.
function M.plan(prepared, opts)
  local target, policy = M.connect(opts)
  if not target then return nil, policy end
  if opts.refresh == "false" then
    local steps = engine.plan(prepared.def, M.make_ctx(prepared.def, prepared.values, policy))
    config.finish()
    return { steps = steps }
  end
  local ctx = M.make_ctx(prepared.def, prepared.values, policy)
  local cache = {}
  ctx.context = function(name)
    cache[name] = cache[name] or read_only(host.context(name))
    return cache[name]
  end
  local ok, changes = pcall(engine.diff, prepared.def, ctx)
  if not ok then
    config.finish()
    if errors.is_interrupt(changes) then error(changes, 0) end
    return nil, errors.from(changes)
  end
  local steps = engine.plan(prepared.def, M.make_ctx(prepared.def, prepared.values, policy))
  config.finish()
  return { steps = steps, changes = changes }
end

-- Does the definition change anything (a step that mutates; gates do not)?
local function mutates(def)
  for _, s in ipairs(def.steps) do if not s.gate and s.mutates ~= false then return true end end
  return false
end

local PARTY = { isv = "isv", customer = "customer" }
-- failures where nothing answered: a problem of this machine or the way to Azure, no tenant's
local LOCAL_KIND = { network = true, tls = true, timeout = true }

-- Before the first change: every configured context's credential gets a token and sees its
-- subscription (Subscriptions - Get, https://learn.microsoft.com/rest/api/resources/subscriptions/get;
-- Subscriptions - List when a context names none), so that a wrong secret fails in seconds with
-- nothing created rather than half-way through. The contexts are checked at the same time; the
-- failure reported is the first in name order. Of the configuration's customer tenants only the
-- run's own (values.customer_tenant) is checked. Returns true | nil, error (kind "auth": exit 4; a
-- network, TLS or timeout failure keeps its kind and blames no tenant: exit 1).
function M.check_credentials(def, values)
  if not mutates(def) then return true end
  local names, seen = {}, {}
  local own = config.customer_context_of(values)
  for name, c in pairs(host.contexts) do
    -- "default" is the environment's credential, also given to "isv": checked once, as isv; of the
    -- config's customer tenants only the run's own
    local other_customer = name:match("^customer:") and name ~= own
    if c.credential and not other_customer
       and not (name == "default" and host.contexts.isv and host.contexts.isv.credential == c.credential) then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  local failures, checks = {}, {}
  for _, name in ipairs(names) do
    local c = host.contexts[name]
    local key = tostring(c.credential) .. "|" .. tostring(c.subscription)
    if not seen[key] then
      seen[key] = true
      local order = #checks + 1
      checks[order] = function()
        local failure
        local clients = host.context(name)
        local doc, e
        if c.subscription then
          doc, e = clients.arm:get("/subscriptions/" .. c.subscription, { api_version = "2022-12-01" })
        else
          doc, e = clients.arm:list("/subscriptions", { api_version = "2022-12-01" })
        end
        if doc == nil then
          e = type(e) == "table" and e or { message = tostring(e) }
          local seen_sub = e.status == 404 or e.status == 403 or e.code == "SubscriptionNotFound"
          -- the service's message without its own code in front (the code is printed once)
          local said = tostring(e.message)
          if e.code and said:sub(1, #e.code) == e.code then said = said:sub(#e.code + 1):gsub("^[:%s]+", "") end
          if LOCAL_KIND[e.kind] then
            -- nothing answered (a closed port, DNS, TLS): no tenant must act, and no credential is at fault
            failure = core.error.new { code = e.code or "ConnectionFailed", kind = e.kind, retryable = e.retryable,
              target = e.target, message = ("context '%s': cannot reach Azure to check its credential: %s")
                :format(name, said),
              hint = e.kind == "tls" and "check the CA certificate (ca_cert) and that the endpoint is the one meant"
                or "check this machine's network, proxy and DNS, and that the endpoint (cloud) is up and reachable" }
          else
            failure = core.error.new { code = e.code or "AuthenticationFailed", kind = "auth", retryable = false,
              tenant = PARTY[name] or (name:match("^customer:") and "customer") or clients.tenant, status = e.status, request_id = e.request_id, message =
                seen_sub and ("context '%s' (tenant %s): subscription %s is not visible to its credential: %s")
                  :format(name, tostring(clients.tenant), tostring(c.subscription), said)
                or ("context '%s' (tenant %s): its credential gets no token: %s")
                  :format(name, tostring(clients.tenant), said),
              hint = seen_sub and ("give the principal of context '%s' a role on subscription %s, or correct its "
                  .. "'subscription' in the config file"):format(name, tostring(c.subscription))
                or ((e.hint and (e.hint .. "; ") or "") .. ("check the credential of context '%s' in the config file "
                  .. "(client_id, client_secret or certificate, tenant): nothing was created"):format(name)) }
          end
          failures[order] = failure
        end
      end
    end
  end
  local ok, err = pcall(async.all, checks)
  if not ok then
    if errors.is_interrupt(err) then error(err, 0) end
    return nil, errors.from(err)
  end
  for i = 1, #checks do
    if failures[i] then return nil, failures[i] end -- the first in name order, whichever ended first
  end
  return true
end

-- Statuses of a run that is over: nothing resumes it.
local FINISHED = { succeeded = true, cancelled = true }

-- The unfinished runs of def for the ISV tenant of target, by customer (the newest of each): one
-- customer's onboarding is one run, resumed or cancelled, never two racing each other. Read in one
-- pass (per unfinished status) so that a bulk run of thousands of customers checks them all at once.
local UNFINISHED = { "pending", "running", "waiting", "interrupted", "failed" }
local function unfinished_runs(db, def, target)
  local by_customer = {}
  for _, status in ipairs(UNFINISHED) do
    for _, r in ipairs(db:runs { workflow = def.name, status = status, limit = 1000000 } or {}) do
      -- a run that failed before its first step (its credentials were refused) holds nothing up
      if r.status ~= "failed" or #(db:steps(r.id) or {}) > 0 then
        local p = json.decode(r.params or "{}") or {}
        local c = json.decode(r.config or "{}") or {}
        local seen = p.customer ~= nil and by_customer[p.customer]
        if p.customer ~= nil and c.isv_tenant == target.isv_tenant and (not seen or seen.created_at < r.created_at) then
          by_customer[p.customer] = r
        end
      end
    end
  end
  return by_customer
end

local function unfinished_twin(db, def, values, target)
  if values.customer == nil or not mutates(def) then return nil end -- a read-only run races nothing
  return unfinished_runs(db, def, target)[values.customer]
end

-- The ISV tenant a run is for (the "isv" context's) and which tenants it has credentials for,
-- stored with the run: a later approve checks the handed-over values against them without reading
-- any secret, and a customer has one unfinished run per ISV tenant. The customer context is the
-- one for values.customer_tenant when the configuration names that tenant (config.customers).
function M.describe_target(target, values)
  target.isv_tenant = host.contexts.isv and (host.contexts.isv.tenant
    or (host.contexts.isv.credential and host.contexts.isv.credential:describe().tenant)) or nil
  target.contexts = { isv = has_context("isv"), customer = has_context(config.customer_context_of(values)) }
  return target
end

-- The unfinished runs of def for target's ISV tenant, by customer (bulk-onboard reads them again
-- inside the transaction that creates its runs: docs/scaling.md).
function M.unfinished_runs(db, def, target)
  return mutates(def) and unfinished_runs(db, def, target) or {}
end

-- Starts a prepared run: a new run in the store, executed by the engine. progress(event) sees the
-- engine's events. Returns the engine's result {run_id, status, outputs, error, gate} or nil, error.
function M.start(prepared, opts, progress, on_created)
  local target, policy = M.connect(opts)
  if not target then return nil, policy end
  local db = state.open_store()
  target.workflow = prepared.ref
  M.describe_target(target, prepared.values)
  -- the check and the new run in one store transaction: two processes starting the same customer
  -- at once (two shards, docs/scaling.md) are serialized there, and the second sees the first's run
  local twin, run_id = db:transaction(function()
    local t = unfinished_twin(db, prepared.def, prepared.values, target)
    if t then return t end
    return nil, assert(db:create_run { workflow = prepared.def.name, params = json.encode(prepared.values),
                                       config = json.encode(target) })
  end)
  if twin then
    config.finish()
    return nil, usage_error(("run %s of %s for customer %s is not finished (%s): continue it with 'cmkflow resume %s'"
      .. " (values for a gate: 'cmkflow approve %s GATE --param k=v'), or end it with 'cmkflow runs cancel %s'")
      :format(twin.id, prepared.def.name, prepared.values.customer, twin.status, twin.id, twin.id, twin.id),
      { code = "RunNotFinished", run_id = twin.id })
  end
  local lock <close> = state.lock_run(run_id, db) or nil -- a new run: nobody else can hold it yet
  if on_created then on_created(run_id) end
  -- (a run killed while its credentials are checked is resumed like any other)
  local cok, cerr = M.check_credentials(prepared.def, prepared.values)
  if not cok then
    -- the run exists (a later resume checks again); nothing was changed
    db:set_run(run_id, { status = "failed", error = json.encode(errors.data(cerr)) })
    config.finish()
    return { run_id = run_id, workflow = prepared.def.name, status = "failed", error = cerr }
  end
  local ctx = M.make_ctx(prepared.def, prepared.values, policy)
  ctx.config_path = target.config
  local result = engine.execute { def = prepared.def, ctx = ctx, store = db, run_id = run_id, progress = progress }
  config.finish()
  result.workflow = prepared.def.name
  return result
end

-- A stored run and its definition: run, where (its stored target), def, db | nil, error.
local function stored_run(run_id)
  local db = state.open_store()
  local run = db:run(run_id)
  if not run then return nil, usage_error(("no run '%s' in %s"):format(run_id, db:path())) end
  local where = json.decode(run.config or "{}") or {}
  local kind, what = M.resolve_workflow(where.workflow or run.workflow)
  if not kind then return nil, what end
  local def, lerr = M.load(kind, what)
  if not def then return nil, lerr end
  return run, where, def, db
end

-- The config and policy files a run was started with must still be there (a run stores their
-- absolute paths); opts.config names where the config file went. Returns where | nil, error.
local function files_still_there(run_id, where, opts)
  if opts.config then
    where.config = file.absolute(opts.config)
    where.policy = nil -- the moved config file names its policy again
  end
  for _, f in ipairs { { "config", where.config }, { "policy", where.policy } } do
    if f[2] and not file.read(f[2]) then
      return nil, core.error.new { code = "InvalidConfig", kind = "config", field = f[1], message =
        ("run %s was started with the %s file %s, which is no longer there (moved or deleted?)"):format(run_id, f[1],
          f[2]),
        hint = "put it back, or resume with --config NEW_PATH naming where the config file is now" }
    end
  end
  return where
end

-- The gate that values given to `resume --param` are for: the one the run waits at, else the last
-- one decided. Returns its name or nil.
local function current_gate(db, run_id)
  local last
  for _, a in ipairs(db:approvals(run_id) or {}) do
    if a.status == "waiting" then return a.gate end
    last = a.gate
  end
  return last
end

-- The values a gate declares (step.values), checked as parameters: required only when the gate's
-- values_needed(ctx) says so, a key_vault_uri of the run's cloud. Returns values | nil, problems.
local function check_gate_values(gate, values, where)
  local specs, ctx = {}, { has_context = function(name) return (where.contexts or {})[name] == true end }
  local needed = gate.values_needed == nil or gate.values_needed(ctx)
  local suffix = cloud_mod.get(PUBLIC_CLOUD[where.cloud] or "azure").keyvault_suffix
  for name, spec in pairs(gate.values or {}) do
    local copy = {}
    for k, v in pairs(spec) do copy[k] = v end
    copy.required = spec.required and needed
    if spec.type == "key_vault_uri" then
      copy.type, copy.check = "string", function(v) return validate.key_vault_uri(v, suffix) end
    end
    specs[name] = copy
  end
  return engine.check_params({ params = specs }, values)
end

M.check_gate_values = check_gate_values

-- Decides a gate of a stored run: approve (with values the gate declares, merged over values
-- given earlier) or reject. A gate may be decided again, to correct its values, until the run has
-- succeeded; the next resume runs again every step that used the old values. opts: {reject, note,
-- values, by}. Returns {run_id, gate, decision, values, redecided} | nil, error (kind "usage").
function M.decide(run_id, gate_name, opts)
  local run, where, def, db = stored_run(run_id)
  if not run then return nil, where end
  if FINISHED[run.status] then
    return nil, usage_error(("run %s has %s: its gates can no longer change"):format(run_id, run.status),
      { code = "RunFinished" })
  end
  local gate = def.by_name[gate_name]
  if not gate or not gate.gate then
    return nil, usage_error(("run %s (%s) has no approval gate '%s'"):format(run_id, def.name, gate_name),
      { code = "UnknownGate" })
  end
  local earlier = db:approval(run_id, gate_name)
  local values = {}
  for k, v in pairs(engine.approval_values(earlier)) do values[k] = v end
  for k, v in pairs(opts.values or {}) do values[k] = v end
  local decision = opts.reject and "rejected" or "approved"
  -- a gate that declares no values takes any (a custom workflow's, as before values were declared)
  if decision == "approved" and gate.values then
    local checked, problems = check_gate_values(gate, values, where)
    if not checked then
      local names = {}
      for name in pairs(gate.values or {}) do names[#names + 1] = "--param " .. name .. "=..." end
      table.sort(names)
      return nil, usage_error(("gate '%s' of run %s needs valid values (%s):\n  - %s"):format(gate_name, run_id,
        table.concat(names, " "), table.concat(problems, "\n  - ")), { problems = problems })
    end
  end
  local note = opts.note
  if next(values) then note = json.encode { note = opts.note, values = values } end
  local redecide = earlier ~= nil and earlier.status ~= "waiting"
  local ok, err = db:decide(run_id, gate_name, decision, opts.by, note, redecide)
  if not ok then
    err.kind = err.kind or "usage" -- an unknown run or gate: the input is wrong
    return nil, err
  end
  return { run_id = run_id, gate = gate_name, decision = decision, values = values, redecided = redecide }
end

-- What a stored run waiting at a gate hands over (the gate's handoff(ctx), as when it stopped),
-- with the run's config and policy (no call to Azure). Returns handoff, ctx | nil, error.
function M.handoff(run_id)
  local run, where, def, db = stored_run(run_id)
  if not run then return nil, where end
  local gate
  for _, s in ipairs(def.steps) do if s.gate and s.handoff then gate = s end end
  if not gate then
    return nil, usage_error(("run %s (%s) has no handoff: only a run of onboard has one"):format(run_id, def.name))
  end
  if run.status ~= "waiting" then
    return nil, usage_error(("run %s is %s, not waiting at its handoff: there is nothing to hand over"):format(run_id,
      run.status))
  end
  local fok, ferr = files_still_there(run_id, where, {})
  if not fok then return nil, ferr end
  local target, policy = M.connect({ config = where.config, cloud = where.cloud ~= "emulator" and where.cloud or nil },
                                   where.policy)
  if not target then return nil, policy end
  local ctx = M.make_ctx(def, json.decode(run.params) or {}, policy)
  ctx.run_id, ctx.config_path, ctx.outputs = run_id, target.config, {}
  for _, rec in ipairs(db:steps(run_id)) do
    if rec.status == "succeeded" then ctx.outputs[rec.name] = rec.outputs and json.decode(rec.outputs) or {} end
  end
  local ok, h = pcall(gate.handoff, ctx)
  config.finish()
  if not ok then return nil, errors.from(h) end
  return h, ctx
end

-- Ends a run for good: it is never resumed again and no longer blocks a new run for its customer.
-- Returns {run_id, status = "cancelled", was} | nil, error.
function M.cancel(run_id)
  local db = state.open_store()
  local run = db:run(run_id)
  if not run then return nil, usage_error(("no run '%s' in %s"):format(run_id, db:path())) end
  if run.status == "succeeded" then
    return nil, usage_error(("run %s has succeeded: there is nothing to cancel (offboard undoes its work)"):format(run_id),
      { code = "RunFinished" })
  end
  if run.status ~= "cancelled" then db:set_run(run_id, { status = "cancelled" }) end
  return { run_id = run_id, status = "cancelled", was = run.status }
end

-- Resumes a stored run where it stopped. opts: {params = gate values for the gate the run waits
-- at (approves it), config = where the run's config file is now, connect = where to talk instead
-- of where the run did (the C API: the cloud and credentials set in code)}. Returns the engine's
-- result, or nil, error.
function M.resume(run_id, progress, opts)
  opts = opts or {}
  if opts.config then state.use_config(file.absolute(opts.config)) end
  local run, where, def, db = stored_run(run_id)
  if not run then return nil, where end
  -- one process at a time per run: a second resume stops here, naming the first
  local lock <close>, holder = state.lock_run(run_id, db)
  if lock == false then
    return nil, usage_error(("run %s is being resumed or run by %s; wait for it to finish"):format(run_id,
      holder ~= "" and holder or "another process"))
  elseif not lock then
    return nil, core.error.new { code = "InvalidConfig", kind = "config", field = "CMKFLOW_STATE_DIR", message = holder }
  end
  if run.status == "succeeded" then
    return { run_id = run_id, status = run.status, outputs = run.outputs and json.decode(run.outputs) }
  end
  if run.status == "cancelled" then
    return nil, usage_error(("run %s was cancelled: start a new run instead"):format(run_id), { code = "RunCancelled" })
  end
  if opts.params and next(opts.params) then
    local gate = current_gate(db, run_id)
    if not gate then
      return nil, usage_error(("run %s has not reached an approval gate: --param has nothing to go to"):format(run_id))
    end
    local decided, derr = M.decide(run_id, gate, { values = opts.params, by = opts.by })
    if not decided then return nil, derr end
  end
  local fok, ferr = files_still_there(run_id, where, opts)
  if not fok then return nil, ferr end
  local target, policy = M.connect(opts.connect or
    { config = where.config, cloud = where.cloud ~= "emulator" and where.cloud or nil }, where.policy)
  if not target then return nil, policy end
  local cok, cerr = M.check_credentials(def, json.decode(run.params) or {})
  if not cok then
    db:set_run(run_id, { status = "failed", error = json.encode(errors.data(cerr)) })
    config.finish()
    return { run_id = run_id, workflow = def.name, status = "failed", error = cerr }
  end
  local values = json.decode(run.params) or {}
  local ctx = M.make_ctx(def, values, policy)
  ctx.config_path = target.config
  local result = engine.execute { def = def, ctx = ctx, store = db, run_id = run_id, progress = progress }
  config.finish()
  result.workflow = def.name
  return result
end

return M
