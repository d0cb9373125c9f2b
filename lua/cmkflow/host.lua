-- What the C host (core/host.c) calls: cloud and credential configuration, and running a
-- workflow inside the sandbox with the result as JSON.
local core = require "cmkflow.core"
local sandbox = require "cmkflow.sandbox"
local json = core.json

local M = { cloud = { name = "azure" }, contexts = {}, debug = false }

local EXIT = { ok = 0, failed = 1, usage = 2, auth = 4 }

function M.set_cloud(name, endpoint, ca_file)
  M.cloud = { name = name, endpoint = endpoint, ca_file = ca_file }
end

function M.set_credential(context, credential)
  M.contexts[context] = M.contexts[context] or {}
  M.contexts[context].credential = credential
end

function M.set_debug(on) M.debug = on and true or false end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

-- Runs a workflow chunk; returns exit status and (result JSON | error message).
function M.run(kind, what, chunkname, params_json)
  local source = what
  if kind == "file" then
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
  local api = { params = params, contexts = M.contexts, cloud = M.cloud, json = json }
  local fn, err = sandbox.load(source, chunkname, api)
  if not fn then return EXIT.usage, err end
  local ok, result = xpcall(fn, debug.traceback)
  if not ok then return EXIT.failed, tostring(result) end
  if type(result) == "function" then
    ok, result = xpcall(result, debug.traceback, params)
    if not ok then return EXIT.failed, tostring(result) end
  end
  local encoded, eerr = json.encode(result == nil and json.null or result)
  if not encoded then return EXIT.failed, "result is not JSON-encodable: " .. tostring(eerr) end
  return EXIT.ok, encoded
end

return M
