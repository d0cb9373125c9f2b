-- The environment workflow and policy code runs in: an allow-list, Redis scripting's model.
--
-- What it offers (docs/lua-api.md, "The sandbox"):
--   * fresh copies of the string (without dump), table, math and utf8 libraries, and a coroutine
--     library whose coroutines are the workflow's own (it cannot yield or resume the engine's);
--   * the safe base functions; getmetatable/setmetatable/rawset that never reach a metatable or a
--     table the host owns; tostring that names a handle (credential, HTTP client) and nothing more;
--     pcall/xpcall/coroutine.resume that cannot swallow an interruption or an exceeded limit;
--     load of text chunks only; collectgarbage("count") only;
--   * os.clock/date/difftime/time, and os.getenv for a short list of non-secret names;
--   * require of a few modules, each a read-only view (patching one changes nothing in the host);
--     cmkflow.http offers clients only, never the session (whose set_debug writes files).
-- Nothing offered writes a file or reaches a shell. The string metatable is protected for every
-- chunk of the state (getmetatable("") answers false), so no chunk can replace the methods that
-- host code calls on strings.
local core = require "cmkflow.core"

local cerror, limits = core.error, core.limits
local real_getmetatable, real_setmetatable, real_rawset = getmetatable, setmetatable, rawset
local real_load, real_pcall, real_xpcall, real_tostring, real_print = load, pcall, xpcall, tostring, print
local rawget, next, type, error, select, pairs, ipairs = rawget, next, type, error, select, pairs, ipairs
local debug_getmetatable = debug.getmetatable
local co_create, co_resume, co_yield, co_running, co_status, co_close, co_isyieldable =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.running, coroutine.status, coroutine.close,
  coroutine.isyieldable
local os_getenv, collectgarbage = os.getenv, collectgarbage
local string, table, math, utf8, os = string, table, math, utf8, os

local M = {}

do -- the string metatable, once per state: getmetatable("") answers false, not the real table
  local string_mt = debug_getmetatable("")
  if string_mt and rawget(string_mt, "__metatable") == nil then string_mt.__metatable = false end
end

local SAFE_GLOBALS = {
  "assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget", "rawlen", "select", "tonumber",
  "type", "_VERSION",
}
local SAFE_LIBS = { string = string, table = table, math = math, utf8 = utf8 }
local UNSAFE_STRING = { dump = true }
local SAFE_OS = { "clock", "date", "difftime", "time" }

-- The environment variables os.getenv answers (docs/configuration.md): none can hold a secret.
M.ENV_NAMES = { "USER", "LOGNAME", "LANG", "LC_ALL", "TZ" }
local ENV_ALLOWED = {}
for _, n in ipairs(M.ENV_NAMES) do ENV_ALLOWED[n] = true end

-- Modules workflow code may require; each is handed out as a read-only view.
local ALLOWED_MODULES = {
  ["cmkflow.azure"] = true, ["cmkflow.azure.cloud"] = true, ["cmkflow.azure.arm"] = true,
  ["cmkflow.azure.graph"] = true, ["cmkflow.azure.keyvault"] = true, ["cmkflow.azure.errors"] = true,
  ["cmkflow.azure.validate"] = true, ["cmkflow.workflow.cmk"] = true,
  ["cmkflow.json"] = true, ["cmkflow.async"] = true, ["cmkflow.http"] = true,
}
-- What a module offers when it is not the module itself.
local OFFERED = {
  -- clients only: the session's set_debug("/path") writes files, its clock and stats are the host's
  ["cmkflow.http"] = function() return { new = require("cmkflow.http").new } end,
}
local offered_cache = {}

-- proxy -> original table, for every read-only view handed out
local proxies = real_setmetatable({}, { __mode = "k" })
-- metatables set by sandboxed code: the only ones sandboxed code may read or replace
local owned = real_setmetatable({}, { __mode = "k" })
-- coroutines created by sandboxed code: the only ones it may resume, yield from or close
local created = real_setmetatable({}, { __mode = "k" })

local function read_only_error(k)
  error(("'%s' is read-only: what the host shares with workflows cannot be changed"):format(real_tostring(k)), 2)
end

-- A read-only view of t: reads (nested tables as views too), pairs, # and ipairs work; writes
-- raise; its metatable is hidden. Functions are handed out as they are (they run in the host).
local function readonly(t, cache)
  if type(t) ~= "table" then return t end
  if proxies[t] then return t end
  local p = cache[t]
  if p then return p end
  p = {}
  cache[t] = p
  proxies[p] = t
  real_setmetatable(p, {
    __index = function(_, k) return readonly(t[k], cache) end,
    __newindex = function(_, k) read_only_error(k) end,
    __pairs = function()
      local k
      return function()
        local v
        k, v = next(t, k)
        if k ~= nil then return k, readonly(v, cache) end
      end, p, nil
    end,
    __len = function() return #t end,
    __metatable = "read-only",
  })
  return p
end
M.readonly = function(t) return readonly(t, real_setmetatable({}, { __mode = "k" })) end

local function copy(t, skip)
  local c = {}
  for k, v in pairs(t) do if not (skip and skip[k]) then c[k] = v end end
  return c
end

-- Errors sandboxed code cannot catch: the interruption (Ctrl-C, SIGTERM) and exceeded limits.
local function is_stop(e)
  if cerror.is_interrupt(e) then return true end
  return cerror.is(e) and rawget(e, "kind") == "limit"
end

-- The results of a protected call, re-raising what must stop the run.
local function guard(ok, ...)
  if not ok then
    local e = ...
    if is_stop(e) then error(e, 0) end
    local m = limits.memory_error(e)
    if m ~= e then error(m, 0) end
  end
  return ok, ...
end

local function sb_pcall(f, ...) return guard(real_pcall(f, ...)) end

local function sb_xpcall(f, handler, ...)
  return guard(real_xpcall(f, function(e)
    if is_stop(e) then return e end
    return handler(e)
  end, ...))
end

-- The metatable sandboxed code may see: its own; for anything else only what a __metatable field
-- says (false for strings, "read-only" for views), never a host metatable.
local function sb_getmetatable(v)
  local mt = debug_getmetatable(v)
  if mt == nil then return nil end
  if owned[mt] then return real_getmetatable(v) end
  return rawget(mt, "__metatable")
end

local function sb_setmetatable(t, mt)
  if type(t) ~= "table" then error("bad argument #1 to 'setmetatable' (table expected, got " .. type(t) .. ")", 2) end
  if mt ~= nil and type(mt) ~= "table" then error("bad argument #2 to 'setmetatable' (nil or table expected)", 2) end
  local current = debug_getmetatable(t)
  if proxies[t] or (current ~= nil and not owned[current]) then
    error("cannot change the metatable of a table the host shares with workflows", 2)
  end
  if mt ~= nil then owned[mt] = true end
  return real_setmetatable(t, mt)
end

local function sb_rawset(t, k, v)
  if proxies[t] then read_only_error(k) end
  return real_rawset(t, k, v)
end

-- A handle (credential, HTTP session) says what it is, and nothing else.
local function sb_tostring(v)
  if type(v) == "userdata" then
    local mt = debug_getmetatable(v)
    local name = type(mt) == "table" and rawget(mt, "__name")
    return type(name) == "string" and name or "userdata"
  end
  return real_tostring(v)
end

local function sb_print(...)
  local n = select("#", ...)
  local parts = { ... }
  for i = 1, n do parts[i] = sb_tostring(parts[i]) end
  real_print(table.unpack(parts, 1, n))
end

local function sb_collectgarbage(opt)
  if opt == "count" then return collectgarbage("count") end
  error("collectgarbage: only \"count\" is available to workflows", 2)
end

local function sb_getenv(name)
  if type(name) == "string" and ENV_ALLOWED[name] then return os_getenv(name) end
  return nil
end

-- coroutine: the workflow's own coroutines only (a step runs in one of the engine's: yielding or
-- resuming that would hand control of the scheduler to workflow code).
local function own(c, fname)
  if not created[c] then error("coroutine." .. fname .. ": not a coroutine this workflow created", 3) end
  return c
end

local function new_coroutine_lib()
  local co = {}
  function co.create(f)
    local c = co_create(f)
    created[c] = true
    return c
  end
  function co.resume(c, ...) return guard(co_resume(own(c, "resume"), ...)) end
  function co.yield(...)
    own(co_running(), "yield")
    return co_yield(...)
  end
  function co.wrap(f)
    local c = co.create(f)
    return function(...)
      local function pass(ok, ...)
        if not ok then error((...), 0) end
        return ...
      end
      return pass(co.resume(c, ...))
    end
  end
  function co.close(c) return co_close(own(c, "close")) end
  function co.status(c) return co_status(c) end
  function co.running()
    local c, main = co_running()
    if created[c] then return c, main end
    return nil, main
  end
  function co.isyieldable() return created[co_running()] == true and co_isyieldable() end
  return co
end

-- Returns a fresh environment table; `api` entries are added as globals as they are (the caller
-- hands out views, M.readonly, of what it shares).
function M.env(api)
  local env = {}
  local cache = real_setmetatable({}, { __mode = "k" })
  for _, name in ipairs(SAFE_GLOBALS) do env[name] = _G[name] end
  for name, lib in pairs(SAFE_LIBS) do env[name] = copy(lib, name == "string" and UNSAFE_STRING or nil) end
  env.coroutine = new_coroutine_lib()
  env.os = {}
  for _, name in ipairs(SAFE_OS) do env.os[name] = os[name] end
  env.os.getenv = sb_getenv
  env.getmetatable, env.setmetatable, env.rawset = sb_getmetatable, sb_setmetatable, sb_rawset
  env.pcall, env.xpcall, env.tostring, env.print = sb_pcall, sb_xpcall, sb_tostring, sb_print
  env.collectgarbage = sb_collectgarbage
  env.require = function(name)
    if type(name) ~= "string" or not ALLOWED_MODULES[name] then
      error("module '" .. real_tostring(name) .. "' is not available to workflows", 2)
    end
    local mod
    if OFFERED[name] then
      mod = offered_cache[name] or OFFERED[name]()
      offered_cache[name] = mod
    else
      mod = require(name)
    end
    return readonly(mod, cache)
  end
  -- text chunks only; the chunk's environment is this one unless the caller gives its own table
  env.load = function(chunk, chunkname, mode, chunk_env)
    if mode ~= nil and mode ~= "t" then return nil, "load: only text chunks (mode \"t\") are available to workflows" end
    if chunk_env ~= nil and type(chunk_env) ~= "table" then return nil, "load: the environment must be a table" end
    if type(chunk) ~= "string" and type(chunk) ~= "function" then return nil, "load: a string or a reader function expected" end
    return real_load(chunk, chunkname, "t", chunk_env or env)
  end
  env._G = env
  for k, v in pairs(api or {}) do env[k] = v end
  return env
end

-- Loads workflow source text into a new sandboxed environment. Returns fn, env or nil, message.
function M.load(source, chunkname, api)
  if type(source) ~= "string" then return nil, "workflow source must be text" end
  local env = M.env(api)
  local fn, err = real_load(source, chunkname, "t", env)
  if not fn then return nil, err end
  return fn, env
end

-- Is v a read-only view handed out by the sandbox?
function M.is_view(v) return proxies[v] ~= nil end

return M
