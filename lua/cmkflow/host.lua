-- What the C host (core/host.c) calls: cloud and credential configuration, and running a
-- workflow inside the sandbox with the result as JSON.
local core = require "cmkflow.core"
local sandbox = require "cmkflow.sandbox"
local json = core.json

local M = { cloud = { name = "azure" }, contexts = {}, debug = false }

local errors = require "cmkflow.errors"

local EXIT = core.exit

function M.set_cloud(name, endpoint, ca_file)
  M.cloud = { name = name, endpoint = endpoint, ca_file = ca_file }
  M.resolved_cloud = nil
end

-- The cloud description of cmkflow.azure.cloud (endpoints, scopes, connect_to, ca_file).
function M.current_cloud()
  if not M.resolved_cloud then
    local cloud = require "cmkflow.azure.cloud"
    if M.cloud.name == "emulator" then
      M.resolved_cloud = cloud.emulator(M.cloud.endpoint, M.cloud.ca_file)
    else
      M.resolved_cloud = cloud.get(M.cloud.name)
    end
  end
  return M.resolved_cloud
end

local http_client
local function client()
  if not http_client then
    local http = require "cmkflow.http"
    local cloud = M.current_cloud()
    http_client = http.new { ca_file = cloud.ca_file, connect_to = cloud.connect_to, debug = M.debug }
  end
  return http_client
end

-- A tenant context for workflows: {name, tenant, subscription, arm, graph, keyvault}.
local function context(name)
  local c = M.contexts[name]
  if not c or not c.credential then
    error(core.error.new { code = "NoCredential", kind = "auth", retryable = false, message =
      ("no credential is configured for context '%s': set AZURE_TENANT_ID, AZURE_CLIENT_ID and "
       .. "AZURE_CLIENT_SECRET (or a certificate / federated token), or configure it through the "
       .. "C API"):format(tostring(name)) }, 2)
  end
  if not c.clients then
    local azure = require "cmkflow.azure"
    local tenant = c.tenant or c.credential:describe().tenant
    c.clients = azure.context { cloud = M.current_cloud(), credential = c.credential, tenant = tenant,
                                subscription = c.subscription, http = client() }
    c.clients.name, c.clients.tenant, c.clients.subscription = name, tenant, c.subscription
  end
  return c.clients
end

M.context = context

local function log(fmt, ...)
  io.stderr:write(select("#", ...) > 0 and fmt:format(...) or tostring(fmt), "\n")
end

function M.set_credential(context, credential)
  M.contexts[context] = M.contexts[context] or {}
  M.contexts[context].credential = credential
end

-- Traces every HTTP exchange (token requests included) to stderr, secrets redacted in C.
function M.set_debug(on)
  M.debug = on and true or false
  core.http.session():set_debug(M.debug)
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

-- Error tables (remote failures, the interrupt sentinel) stay tables; anything else becomes an
-- internal error with a traceback.
local function failure(e)
  if core.error.is(e) then return e end
  if type(e) == "table" then return errors.from(e) end
  return errors.from(debug.traceback(tostring(e), 2))
end

local function usage(message)
  return EXIT.usage, errors.new { code = "InvalidInput", kind = "usage", message = message }
end

-- Runs a workflow chunk; returns exit status and (result JSON | error table). With
-- allow_definition, a chunk that returns a workflow definition (a table with `steps`) returns
-- "definition" and the table instead, for the engine.
function M.run(kind, what, chunkname, params_json, allow_definition)
  local source = what
  if kind == "module" then
    source, chunkname = require("cmkflow.core").embedded_source(what)
    if not source then return usage("no such built-in workflow: " .. what) end
  elseif kind == "file" then
    local err
    source, err = read_file(what)
    if not source then return usage("cannot read workflow: " .. err) end
    chunkname = "@" .. what
  end
  local params = {}
  if params_json then
    local p, err = json.decode(params_json)
    if p == nil then return usage("parameters are not valid JSON: " .. tostring(err)) end
    params = p
  end
  -- what the host shares is handed out as read-only views; params and cloud are the run's own
  local cloud = {}
  for k, v in pairs(M.cloud) do cloud[k] = v end
  local api = { params = params, context = context, cloud = cloud, json = sandbox.readonly(json), log = log,
                async = sandbox.readonly(require "cmkflow.async") }
  local fn, err = sandbox.load(source, chunkname, api)
  if not fn then return usage(err) end
  core.limits.begin()
  local ok, result = xpcall(fn, failure)
  if not ok then
    result = core.limits.memory_error(result)
    return errors.exit_code(result), result
  end
  if allow_definition and type(result) == "table" and result.steps ~= nil then return "definition", result end
  if type(result) == "function" then
    ok, result = xpcall(result, failure, params)
    if not ok then
      result = core.limits.memory_error(result)
      return errors.exit_code(result), result
    end
  end
  local encoded, eerr = json.encode(result == nil and json.null or result)
  if not encoded then
    return EXIT.failed, errors.new { code = "InvalidResult", kind = "internal",
                                     message = "result is not JSON-encodable: " .. tostring(eerr) }
  end
  return EXIT.ok, encoded
end

return M
