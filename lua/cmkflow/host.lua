-- The host's configuration (cloud, credentials per context, debug; what core/host.c's setters
-- call), the tenant contexts steps get, and loading a workflow definition in the sandbox.
-- Running it is the application layer's (cmkflow.app.pipeline).
local core = require "cmkflow.core"
local sandbox = require "cmkflow.sandbox"
local errors = require "cmkflow.errors"

local M = { cloud = { name = "azure" }, contexts = {}, debug = false }

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

function M.set_credential(context, credential)
  M.contexts[context] = M.contexts[context] or {}
  M.contexts[context].credential = credential
end

-- Traces every HTTP exchange (token requests included) to stderr, secrets redacted in C.
function M.set_debug(on)
  M.debug = on and true or false
  core.http.session():set_debug(M.debug)
end

-- For people watching a run (--progress): an HTTP retry wait that ends more than `ms` into its
-- request is told on stderr (what is retried, why, how long); false: never (the default).
function M.set_retry_notice(ms)
  core.http.session():set_retry_notice(ms or false)
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

local function usage(message)
  return nil, errors.new { code = "InvalidInput", kind = "usage", message = message }
end

-- Loads a workflow file, stock module ("workflows.onboard") or chunk in the sandbox and returns
-- the definition it returns (checked by the engine later), or nil, error (kind "usage"). The
-- chunk sees only the sandbox; everything a step needs comes through ctx (docs/lua-api.md).
function M.load_definition(kind, what, chunkname)
  local source = what
  if kind == "module" then
    source, chunkname = core.embedded_source(what)
    if not source then return usage("no such built-in workflow: " .. what) end
  elseif kind == "file" then
    local err
    source, err = read_file(what)
    if not source then return usage("cannot read workflow: " .. err) end
    chunkname = "@" .. what
  end
  local fn, err = sandbox.load(source, chunkname or "=(workflow)", {})
  if not fn then return usage(err) end
  core.limits.begin()
  local ok, def = pcall(fn)
  if not ok then
    def = core.limits.memory_error(def)
    if errors.is_interrupt(def) then error(def, 0) end
    return nil, errors.new { code = "InvalidWorkflow", kind = "usage",
                             message = (chunkname or "workflow") .. ": " .. tostring(def) }
  end
  if type(def) ~= "table" or def.steps == nil then
    return usage((chunkname or "the workflow"):gsub("^[@=]", "") ..
      " must return a workflow definition (a table with name and steps: docs/lua-api.md)")
  end
  return def
end

return M
