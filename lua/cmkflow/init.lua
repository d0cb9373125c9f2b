-- require "cmkflow": the C API's capabilities for Lua hosts (a stock lua5.4 after `make install`,
-- OpenResty, a build system): run a stock workflow by name, a file or a chunk through the same
-- pipeline, engine and sandbox as the CLI; resume, approve, cancel; the run store; events.
--
--   local cmkflow = require "cmkflow"
--   cmkflow.configure { config = "isv.lua" }              -- or cloud/endpoint/ca_file and credentials
--   cmkflow.configure { state_dir = "/var/lib/app/cmkflow", policy = "policy.lua",
--                       on_event = function(ev) print(ev.kind, ev.step) end }
--   local run, err, code = cmkflow.run("onboard", { customer = "contoso" })
--   -- run = {run_id, status = "succeeded" | "waiting", outputs, gate}; err = {code, message, tenant, hint, ...}
--   cmkflow.approve(run.run_id, "handoff", { key_vault_uri = "...", key_name = "..." })
--   cmkflow.resume(run.run_id); cmkflow.cancel(run_id); cmkflow.runs(); cmkflow.show(run_id)
--
-- Every function returns its result (a table) and the exit code (docs/exit-codes.md), or nil, an
-- error table and the exit code. Workflow code runs in the sandbox (docs/lua-api.md); this module
-- is for the trusted host, which holds its own credentials.
local core = require "cmkflow.core"
local api = require "cmkflow.app.api"
local host = require "cmkflow.host"

local json = core.json

local M = { version = core.version }

local function result(code, value)
  if type(value) == "string" then return json.decode(value), code end
  if value == nil then return true, code end
  return nil, value, code
end

-- opts: {config = path} or {cloud = "azure" | "usgov" | "china" | "emulator", endpoint, ca_file,
-- credentials = {isv = spec, customer = spec} (cmkflow.core.auth.credential specs),
-- subscriptions = {isv = id, customer = id}}; policy, state_dir, on_event = function(event), debug.
function M.configure(opts)
  if opts.cloud then host.set_cloud(opts.cloud, opts.endpoint, opts.ca_file) end
  local cloud = host.current_cloud()
  for context, spec in pairs(opts.credentials or {}) do
    local s = {}
    for k, v in pairs(spec) do s[k] = v end
    s.authority = s.authority or cloud.authority
    s.ca_file = s.ca_file or cloud.ca_file
    s.connect_to = s.connect_to or cloud.connect_to
    host.set_credential(context, core.auth.credential(s))
  end
  for context, id in pairs(opts.subscriptions or {}) do api.set_subscription(context, id) end
  if opts.config then api.set_config(opts.config) end
  if opts.policy then api.set_policy(opts.policy) end
  if opts.state_dir then api.set_state_dir(opts.state_dir) end
  if opts.debug ~= nil then host.set_debug(opts.debug) end
  if opts.on_event then
    local fn = opts.on_event
    api.set_event_sink(function(text) fn(json.decode(text)) end)
  end
  return true
end

-- run(workflow, params): a stock workflow's name or a file's path; run_string(chunk, params).
function M.run(workflow, params)
  return result(api.run("file", workflow, nil, params and json.encode(params) or nil))
end

function M.run_string(chunk, params, chunkname)
  return result(api.run("string", chunk, chunkname or "=(workflow)", params and json.encode(params) or nil))
end

function M.resume(run_id) return result(api.resume(run_id)) end

function M.approve(run_id, gate, values)
  return result(api.approve(run_id, gate, "approved", values and json.encode(values) or nil))
end

function M.reject(run_id, gate) return result(api.approve(run_id, gate, "rejected", nil)) end
function M.cancel(run_id) return result(api.cancel(run_id)) end
function M.runs() return result(api.list_runs()) end
function M.show(run_id) return result(api.show_run(run_id)) end

return M
