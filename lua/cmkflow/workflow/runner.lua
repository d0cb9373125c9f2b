-- What `cmkflow run | plan | resume | runs | approve` do: resolve the configuration (a config
-- file, the Azure SDK environment, or the embedded emulator), load the workflow definition in the
-- sandbox, check its parameters before any call, and drive the engine over the run store.
local core = require "cmkflow.core"
local json = core.json
local host = require "cmkflow.host"
local sandbox = require "cmkflow.sandbox"
local engine = require "cmkflow.workflow.engine"
local policy_mod = require "cmkflow.policy"
local file = require "cmkflow.util.file"

local M = {}

local EXIT = { ok = 0, failed = 1, usage = 2, auth = 4, waiting = 6, interrupted = 130 }
M.EXIT = EXIT

local shell_quote, read_file = file.quote, file.read

-- Where runs (and the embedded emulator's state) live: $CMKFLOW_STATE_DIR, else
-- $XDG_STATE_HOME/cmkflow, else ~/.local/state/cmkflow.
function M.state_dir()
  local dir = os.getenv("CMKFLOW_STATE_DIR")
  if not dir or dir == "" then
    local xdg = os.getenv("XDG_STATE_HOME")
    dir = (xdg and xdg ~= "" and xdg or ((os.getenv("HOME") or "/tmp") .. "/.local/state")) .. "/cmkflow"
  end
  os.execute("mkdir -p -m 700 " .. shell_quote(dir))
  return dir
end

function M.open_store()
  local path = M.state_dir() .. "/runs.db"
  local db, err = core.store.open(path)
  if not db then error(err, 0) end
  return db
end

-- A workflow reference: a file path, or the name of a stock workflow ("onboard", or
-- "workflows/onboard.lua" when no such file exists here). Returns kind ("file" | "module"), what,
-- and the reference to store with the run; or nil and a message.
function M.resolve_workflow(ref)
  if read_file(ref) then return "file", ref, ref end
  local name = ref:gsub("%.lua$", ""):match("([^/]+)$")
  if name and core.embedded_source("workflows." .. name) then return "module", "workflows." .. name, name end
  return nil, ("no workflow file '%s' and no stock workflow named '%s'"):format(ref, tostring(name))
end

-- ---- configuration ---------------------------------------------------------------------------

local config_dir = "."

-- A path from the config file: relative paths are relative to the file, like `policy`.
local function config_relative(path)
  if not path or path:match("^/") then return path end
  return config_dir .. "/" .. path
end

local function resolve_cloud(desc)
  if type(desc) == "table" then
    if not desc.emulator then error("field 'cloud' must name \"azure\", \"usgov\", \"china\" or { emulator = url }", 0) end
    host.set_cloud("emulator", desc.emulator, config_relative(desc.ca_cert))
  else
    host.set_cloud(desc)
  end
  local c = host.current_cloud()
  return { authority = c.authority, ca_file = c.ca_file, connect_to = c.connect_to }
end

-- Starts the emulator in-process with the demo seed (state kept under the state dir, so resume
-- finds it) and configures both contexts with the seed's principals.
local embedded
local function use_embedded_emulator()
  if embedded then return embedded end
  local dir = M.state_dir() .. "/emulator"
  os.execute("mkdir -p -m 700 " .. shell_quote(dir))
  local ecli = require "cmkflow.emulator.cli"
  local ca_pem, ca_key = ecli.certificate_authority(dir)
  local cert, key = core.server.make_cert(ca_pem, ca_key, core.server.default_names())
  local srv = assert(core.server.start { listen = "127.0.0.1:0", tls = true, cert_pem = cert, key_pem = key,
    handler_module = "cmkflow.emulator", config = json.encode({ state_dir = dir }) })
  host.set_cloud("emulator", srv:url(), dir .. "/ca.pem")
  local c = host.current_cloud()
  local seed = require "cmkflow.emulator.demo_seed"
  for i, ctx in ipairs({ "isv", "customer" }) do
    local t = seed.tenants[i]
    local pr = t.principals[1]
    host.set_credential(ctx, core.auth.credential { kind = "client_secret", tenant = t.id, client_id = pr.appId,
      client_secret = pr.secret, authority = c.authority, ca_file = c.ca_file, connect_to = c.connect_to })
    host.contexts[ctx].subscription = t.subscriptions[1].id
    host.contexts[ctx].tenant = t.id
  end
  io.stderr:write(("cmkflow: no configuration: running against the embedded Azure emulator at %s (demo seed)\n")
    :format(srv:url()))
  embedded = { server = srv, url = srv:url() }
  return embedded
end

M.start_embedded_emulator = use_embedded_emulator -- `cmkflow demo`

-- Before the process exits: the embedded emulator writes its state now (resume finds it).
function M.finish()
  if not embedded then return end
  local http = require "cmkflow.http"
  local c = host.current_cloud()
  local client = http.new { ca_file = c.ca_file, retry = { max_attempts = 1 } }
  client:request { method = "POST", url = embedded.url .. "/_emulator/save" }
end

-- The Azure SDK environment variables (when set) give the "default" and "isv" contexts their
-- credential and subscription. true | nil, message.
local function use_environment_credential()
  if os.getenv("AZURE_CLIENT_ID") or os.getenv("AZURE_TENANT_ID") then
    local ok, cred = pcall(core.auth.credential, { kind = "environment", authority = host.current_cloud().authority })
    if not ok then return nil, tostring(cred) end
    for _, ctx in ipairs({ "default", "isv" }) do
      host.set_credential(ctx, cred)
      host.contexts[ctx].subscription = os.getenv("AZURE_SUBSCRIPTION_ID")
    end
  end
  return true
end

-- Resolves where a run talks to. opts: {config, cloud}. Returns a description stored with the run
-- (never a secret): {config = path | nil, cloud = name, emulator = url | nil}, or nil, message.
function M.configure(opts)
  local config_path = opts.config or os.getenv("CMKFLOW_CONFIG")
  if config_path and config_path ~= "" then
    config_dir = config_path:match("^(.*)/[^/]*$") or "."
    local ok, cfg = pcall(core.config.load, config_path, resolve_cloud)
    if not ok then return nil, tostring(cfg) end
    if opts.cloud and opts.cloud ~= (type(cfg.cloud) == "table" and "emulator" or cfg.cloud) then
      return nil, ("--cloud %s contradicts the cloud of %s"):format(opts.cloud, config_path)
    end
    for name, ctx in pairs(cfg.contexts) do
      host.contexts[name] = host.contexts[name] or {}
      for k, v in pairs(ctx) do host.contexts[name][k] = v end
    end
    local policy_path = cfg.policy
    if policy_path and not policy_path:match("^/") then
      policy_path = (config_path:match("^(.*)/[^/]*$") or ".") .. "/" .. policy_path
    end
    M.policy_path = policy_path
    return { config = config_path, cloud = type(cfg.cloud) == "table" and "emulator" or cfg.cloud }
  end
  if opts.cloud and opts.cloud ~= "emulator" then
    host.set_cloud(opts.cloud)
    local ok, err = use_environment_credential()
    if not ok then return nil, err end
    return { cloud = opts.cloud }
  end
  local e = use_embedded_emulator()
  return { cloud = "emulator", emulator = e.url, embedded = true }
end

-- ---- policy and definitions ---------------------------------------------------------------------

local function has_context(name)
  local c = host.contexts[name]
  return c ~= nil and c.credential ~= nil
end

function M.load_policy(path)
  if not path then return policy_mod.merge({}) end
  local source = read_file(path)
  if not source then error(("policy file '%s' cannot be read"):format(path), 0) end
  local fn, err = sandbox.load(source, "@" .. path, {})
  if not fn then error("policy " .. err, 0) end
  local ok, custom = pcall(fn)
  if not ok then error("policy " .. path .. ": " .. tostring(custom), 0) end
  if type(custom) ~= "table" then error("policy " .. path .. " must return a table", 0) end
  return policy_mod.merge(custom)
end

-- Loads a workflow: returns "definition", def (checked) | "script", status, output | nil, message.
-- A script-style workflow (one that returns a value, issue 2's smoke workflows) has run by then.
function M.load(kind, what, params)
  local status, value = host.run(kind, what, nil, json.encode(params or {}), true)
  if status ~= "definition" then return "script", status, value end
  local ok, err = pcall(engine.check_definition, value)
  if not ok then return nil, tostring(err) end
  return "definition", value
end

-- For scripts without a config file: the Azure SDK environment variables give "default" and "isv".
local function apply_environment(opts)
  if opts.config or os.getenv("CMKFLOW_CONFIG") then return true end
  if opts.cloud and opts.cloud ~= "emulator" then host.set_cloud(opts.cloud) end
  return use_environment_credential()
end

-- The context tables steps see: ctx.context("isv") -> {tenant, subscription, arm, graph, keyvault,
-- location, ...}.
local function make_ctx(def, params, policy)
  local ctx = { params = params, policy = policy, has_context = has_context, hooks = policy.hooks }
  ctx.context = function(name) return host.context(name) end
  -- tenant and subscription of a context without building clients (plans make no calls)
  ctx.context_info = function(name)
    local c = host.contexts[name] or {}
    return { tenant = c.tenant or (c.credential and c.credential:describe().tenant), subscription = c.subscription }
  end
  ctx.log = function(fmt, ...) io.stderr:write(select("#", ...) > 0 and fmt:format(...) or tostring(fmt), "\n") end
  return ctx
end

M.make_ctx = make_ctx

-- ---- progress ------------------------------------------------------------------------------------

local function progress_printer(enabled, total)
  if not enabled then return function() end end
  local done = 0
  return function(e)
    if e.kind == "done" or e.kind == "skip" or e.kind == "fail" then done = done + 1 end
    local label = e.title and e.title ~= e.step and (e.step .. " (" .. e.title .. ")") or e.step
    if e.kind == "start" then
      io.stderr:write(("  ... %s\n"):format(label))
    elseif e.kind == "done" then
      io.stderr:write(("  [%d/%d] done  %s  %.2f s\n"):format(done, total, label, (e.elapsed_ms or 0) / 1000))
    elseif e.kind == "skip" then
      io.stderr:write(("  [%d/%d] done  %s  (earlier attempt)\n"):format(done, total, label))
    elseif e.kind == "fail" then
      io.stderr:write(("  [%d/%d] FAILED %s  %.2f s\n"):format(done, total, label, (e.elapsed_ms or 0) / 1000))
    elseif e.kind == "wait" then
      io.stderr:write(("  waiting at approval gate '%s'\n"):format(e.step))
    end
  end
end

-- ---- results -------------------------------------------------------------------------------------

local function exit_for(result)
  -- (a propagation wait that ran out may quote Entra's AADSTS700016 for the ISV app: not our credentials)
  if result.status == "failed" and result.error and (result.error:match("AADSTS") or result.error:match("NoCredential"))
     and not result.error:match("is still not visible after") then
    return EXIT.auth
  end
  return engine.STATUS_EXIT[result.status] or EXIT.failed
end

local function print_result(result, output)
  local doc = { run_id = result.run_id, status = result.status, outputs = result.outputs or json.object(),
                error = result.error, gate = result.gate }
  if output == "json" then
    io.stdout:write(json.encode(doc), "\n")
  else
    io.stdout:write(("run %s: %s\n"):format(result.run_id, result.status))
    if result.gate then
      io.stdout:write(("waiting at gate '%s': after the handoff, run\n  cmkflow approve %s %s && cmkflow resume %s\n")
        :format(result.gate, result.run_id, result.gate, result.run_id))
    end
    if result.error then io.stdout:write("error: ", result.error, "\n") end
    if result.outputs then io.stdout:write(json.encode(result.outputs, { pretty = true }), "\n") end
  end
end

-- ---- commands ----------------------------------------------------------------------------------

-- opts: {workflow, params = {k = raw}, config, cloud, output, progress, plan = bool}
function M.run(opts)
  local kind, what, ref = M.resolve_workflow(opts.workflow)
  if not kind then io.stderr:write("cmkflow: ", what, "\n") return EXIT.usage end
  local envok, enverr = apply_environment(opts)
  if not envok then io.stderr:write("cmkflow: ", enverr, "\n") return EXIT.usage end
  local loaded, def, out = M.load(kind, what, opts.params)
  if not loaded then io.stderr:write("cmkflow: ", def, "\n") return EXIT.usage end
  if loaded == "script" then
    if opts.plan then
      io.stderr:write("cmkflow: ", opts.workflow, " is a script, not a workflow definition: there is nothing to plan\n")
      return EXIT.usage
    end
    if def ~= EXIT.ok then io.stderr:write("cmkflow: ", out, "\n") return def end
    return EXIT.ok, out
  end
  -- one run of an inner workflow per row of a list (workflows/bulk-onboard.lua)
  if def.bulk then return require("cmkflow.workflow.bulk").run(def, opts, M) end
  -- against the embedded emulator (no configuration) parameters may have demo defaults, so that
  -- `cmkflow run workflows/onboard.lua` alone shows the whole job; never against real Azure
  local embedded_target = not (opts.config or os.getenv("CMKFLOW_CONFIG")) and (not opts.cloud or opts.cloud == "emulator")
  if embedded_target then
    for name, spec in pairs(def.params or {}) do
      if opts.params[name] == nil and spec.demo_default ~= nil then opts.params[name] = spec.demo_default end
    end
  end
  local params, problems = engine.check_params(def, opts.params)
  if not params then
    io.stderr:write("cmkflow: invalid parameters for ", def.name, ":\n")
    for _, p in ipairs(problems) do io.stderr:write("  - ", p, "\n") end
    return EXIT.usage
  end
  local ok, policy = pcall(M.load_policy, nil)
  if opts.plan then
    local where, err = M.configure(opts)
    if not where then io.stderr:write("cmkflow: ", err, "\n") return EXIT.usage end
    ok, policy = pcall(M.load_policy, M.policy_path)
    if not ok then io.stderr:write("cmkflow: ", tostring(policy), "\n") return EXIT.usage end
    local plan = engine.plan(def, make_ctx(def, params, policy))
    if opts.output == "json" then
      io.stdout:write(json.encode({ workflow = def.name, plan = plan }), "\n")
    else
      io.stdout:write(("plan for %s: %d change(s)\n"):format(def.name, #plan))
      for _, p in ipairs(plan) do
        for _, m in ipairs(p.mutations) do io.stdout:write(("  %-24s %s\n"):format(p.step, m)) end
      end
    end
    return EXIT.ok
  end
  local where, err = M.configure(opts)
  if not where then io.stderr:write("cmkflow: ", err, "\n") return EXIT.usage end
  ok, policy = pcall(M.load_policy, M.policy_path)
  if not ok then io.stderr:write("cmkflow: ", tostring(policy), "\n") return EXIT.usage end
  local db = M.open_store()
  where.workflow = ref
  where.policy = M.policy_path
  local run_id = db:create_run { workflow = def.name, params = json.encode(params), config = json.encode(where) }
  if opts.progress then io.stderr:write(("cmkflow: run %s of %s\n"):format(run_id, def.name)) end
  local result = engine.execute { def = def, ctx = make_ctx(def, params, policy), store = db, run_id = run_id,
                                  progress = progress_printer(opts.progress, #def.steps) }
  M.finish()
  print_result(result, opts.output)
  return exit_for(result)
end

function M.resume(run_id, opts)
  local db = M.open_store()
  local run = db:run(run_id)
  if not run then io.stderr:write("cmkflow: no run '", run_id, "' in ", M.state_dir(), "/runs.db\n") return EXIT.usage end
  if run.status == "succeeded" then
    print_result({ run_id = run_id, status = run.status, outputs = run.outputs and json.decode(run.outputs) }, opts.output)
    return EXIT.ok
  end
  local where = json.decode(run.config or "{}") or {}
  local kind, what = M.resolve_workflow(where.workflow or run.workflow)
  if not kind then io.stderr:write("cmkflow: ", what, "\n") return EXIT.usage end
  local loaded, def = M.load(kind, what, {})
  if loaded ~= "definition" then
    io.stderr:write("cmkflow: run ", run_id, ": its workflow is no longer a workflow definition\n")
    return EXIT.usage
  end
  local ok, err = M.configure { config = where.config, cloud = where.cloud ~= "emulator" and where.cloud or nil }
  if not ok then io.stderr:write("cmkflow: ", err, "\n") return EXIT.usage end
  local pok, policy = pcall(M.load_policy, where.policy)
  if not pok then io.stderr:write("cmkflow: ", tostring(policy), "\n") return EXIT.usage end
  local params = json.decode(run.params) or {}
  local result = engine.execute { def = def, ctx = make_ctx(def, params, policy), store = db, run_id = run_id,
                                  progress = progress_printer(opts.progress, #def.steps) }
  M.finish()
  print_result(result, opts.output)
  return exit_for(result)
end

function M.runs_list(opts)
  local db = M.open_store()
  local runs = db:runs { limit = 50 }
  if opts.output == "json" then
    local out = json.array()
    for _, r in ipairs(runs) do out[#out + 1] = { run_id = r.id, workflow = r.workflow, status = r.status,
      created_at = r.created_at, updated_at = r.updated_at } end
    io.stdout:write(json.encode(out), "\n")
  else
    for _, r in ipairs(runs) do
      io.stdout:write(("%s  %-20s %-11s %s\n"):format(r.id, r.workflow, r.status, os.date("!%Y-%m-%dT%H:%M:%SZ", r.updated_at)))
    end
  end
  return EXIT.ok
end

function M.runs_show(run_id, opts)
  local db = M.open_store()
  local run = db:run(run_id)
  if not run then io.stderr:write("cmkflow: no run '", run_id, "'\n") return EXIT.usage end
  local steps = json.array()
  for _, s in ipairs(db:steps(run_id)) do
    steps[#steps + 1] = { name = s.name, status = s.status, attempts = s.attempts, error = s.error,
      outputs = s.outputs and json.decode(s.outputs) or nil }
  end
  local approvals = json.array()
  for _, a in ipairs(db:approvals(run_id)) do approvals[#approvals + 1] = { gate = a.gate, status = a.status } end
  local doc = { run_id = run.id, workflow = run.workflow, status = run.status, params = json.decode(run.params),
    error = run.error, outputs = run.outputs and json.decode(run.outputs) or nil, steps = steps, approvals = approvals }
  if opts.output == "json" then
    io.stdout:write(json.encode(doc), "\n")
  else
    io.stdout:write(json.encode(doc, { pretty = true }), "\n")
  end
  return EXIT.ok
end

function M.approve(run_id, gate, opts)
  local db = M.open_store()
  -- values handed over at the gate (e.g. the customer's vault URI and key name) travel in the note
  local note = opts.note
  if opts.values and next(opts.values) then
    note = json.encode({ note = opts.note, values = opts.values })
  end
  local ok, err = db:decide(run_id, gate, opts.reject and "rejected" or "approved", os.getenv("USER"), note)
  if not ok then io.stderr:write("cmkflow: ", tostring(err and err.message or err), "\n") return EXIT.usage end
  io.stderr:write(("cmkflow: gate '%s' of run %s %s; continue with: cmkflow resume %s\n")
    :format(gate, run_id, opts.reject and "rejected" or "approved", run_id))
  return EXIT.ok
end

return M
