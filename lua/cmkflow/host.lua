-- What the C host (core/host.c) calls: cloud and credential configuration, and running a
-- workflow inside the sandbox with the result as JSON.
local core = require "cmkflow.core"
local sandbox = require "cmkflow.sandbox"
local json = core.json

local M = { cloud = { name = "azure" }, contexts = {}, debug = false }

local EXIT = { ok = 0, failed = 1, usage = 2, auth = 4 }

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
    error(core.error.new { code = "NoCredential", retryable = false, message =
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

-- Error tables (remote failures) stay tables; anything else gets a traceback.
local function failure(e)
  if core.error.is(e) then return e end
  return debug.traceback(tostring(e), 2)
end

-- Authentication failures exit 4 (docs/exit-codes.md), every other failure 1.
local AUTH_CODES = { NoCredential = true, AuthenticationFailed = true, InvalidAuthenticationToken = true,
                     InvalidAuthenticationTokenTenant = true, AssertionCallbackFailed = true }
local function exit_status(e)
  if core.error.is(e) and (AUTH_CODES[e.code] or tostring(e.code):match("^AADSTS")) then return EXIT.auth end
  return EXIT.failed
end

-- Runs a workflow chunk; returns exit status and (result JSON | error message). With
-- allow_definition, a chunk that returns a workflow definition (a table with `steps`) returns
-- "definition" and the table instead, for the engine.
function M.run(kind, what, chunkname, params_json, allow_definition)
  local source = what
  if kind == "module" then
    source, chunkname = require("cmkflow.core").embedded_source(what)
    if not source then return EXIT.usage, "no such built-in workflow: " .. what end
  elseif kind == "file" then
    local err
    source, err = read_file(what)
    if not source then return EXIT.usage, "cannot read workflow: " .. err end
    chunkname = "@" .. what
  end
  local params = {}
  if params_json then
    local p, err = json.decode(params_json)
    if p == nil then return EXIT.usage, "parameters are not valid JSON: " .. tostring(err) end
    params = p
  end
  local api = { params = params, context = context, cloud = M.cloud, json = json, log = log,
                async = setmetatable({}, { __index = function(_, k) return require("cmkflow.async")[k] end }) }
  local fn, err = sandbox.load(source, chunkname, api)
  if not fn then return EXIT.usage, err end
  local ok, result = xpcall(fn, failure)
  if not ok then return exit_status(result), tostring(result) end
  if allow_definition and type(result) == "table" and result.steps ~= nil then return "definition", result end
  if type(result) == "function" then
    ok, result = xpcall(result, failure, params)
    if not ok then return exit_status(result), tostring(result) end
  end
  local encoded, eerr = json.encode(result == nil and json.null or result)
  if not encoded then return EXIT.failed, "result is not JSON-encodable: " .. tostring(eerr) end
  return EXIT.ok, encoded
end

return M
