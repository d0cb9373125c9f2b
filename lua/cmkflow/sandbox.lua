-- The environment workflow code runs in: an allow-list of the standard library plus the
-- cmkflow API. No os.execute, io.popen, package.loadlib, raw io, load of binary chunks.
local M = {}

local SAFE_GLOBALS = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "print", "rawequal", "rawget", "rawlen",
  "rawset", "select", "setmetatable", "getmetatable", "tonumber", "tostring", "type", "xpcall",
  "_VERSION",
}
local SAFE_LIBS = {
  string = true, table = true, math = true, utf8 = true, coroutine = true,
}
local SAFE_OS = { "clock", "date", "difftime", "getenv", "time" }

-- Modules workflow code may require (pure Lua, no side effects outside the core's primitives).
local ALLOWED_MODULES = {
  ["cmkflow.azure"] = true, ["cmkflow.azure.cloud"] = true, ["cmkflow.azure.arm"] = true,
  ["cmkflow.azure.graph"] = true, ["cmkflow.azure.keyvault"] = true, ["cmkflow.azure.errors"] = true,
  ["cmkflow.azure.validate"] = true, ["cmkflow.workflow.cmk"] = true,
  ["cmkflow.json"] = true, ["cmkflow.async"] = true, ["cmkflow.http"] = true,
}

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- Returns a fresh environment table; `api` entries are added as globals.
function M.env(api)
  local env = {}
  for _, name in ipairs(SAFE_GLOBALS) do env[name] = _G[name] end
  for name in pairs(SAFE_LIBS) do env[name] = copy(_G[name]) end
  env.os = {}
  for _, name in ipairs(SAFE_OS) do env.os[name] = os[name] end
  env.require = function(name)
    if not ALLOWED_MODULES[name] then
      error("module '" .. tostring(name) .. "' is not available to workflows", 2)
    end
    return require(name)
  end
  -- text chunks only, always inside this environment
  env.load = function(chunk, chunkname, _, chunk_env)
    return load(chunk, chunkname, "t", chunk_env or env)
  end
  env._G = env
  for k, v in pairs(api or {}) do env[k] = v end
  return env
end

-- Loads workflow source text into a new sandboxed environment. Returns fn, env or nil, message.
function M.load(source, chunkname, api)
  local env = M.env(api)
  local fn, err = load(source, chunkname, "t", env)
  if not fn then return nil, err end
  return fn, env
end

return M
