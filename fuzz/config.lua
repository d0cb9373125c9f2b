-- Fuzz harness: the configuration loader (core/config.c) as the app calls it
-- (lua/cmkflow/app/config.lua): core.config.load(path, resolve_cloud). Every input either loads
-- into {path, cloud, contexts = {name = {..., credential = <cmkflow.credential>}}} or fails with
-- one message naming the file ("config PATH: ..."); nothing else may escape, and no secret may
-- reach a context table as a string.
--
-- A configuration file is trusted Lua with the standard libraries, and the harness fuzzes what
-- the loader does with what the file returns, not Lua itself: inputs naming anything that
-- reaches the system, loops or defines functions are skipped (os.getenv alone is allowed, as the
-- files use it), so that no input can write a file, run a command or run forever.
local core = require "cmkflow.core"

local DENY = {}
for w in ([[io load loadstring dofile loadfile require debug package _ENV _G while repeat goto for
            function collectgarbage coroutine setmetatable getmetatable rawset rawget rawequal
            string rep gsub gmatch find match format print utf8 table select next pairs ipairs]]):gmatch("%S+") do
  DENY[w] = true
end

local function acceptable(text)
  if text:find("/dev/", 1, true) or text:find("/proc/", 1, true) then return false end
  local pos = 1
  while true do
    local s, e, word = text:find("([%a_][%w_]*)", pos)
    if not s then return true end
    if DENY[word] then return false end
    if word == "os" and text:sub(e + 1, e + 7) ~= ".getenv" then return false end
    pos = e + 1
  end
end

local SECRETS = { client_secret = true, certificate_password = true }
local ROUTING = { authority = "https://login.microsoftonline.com/", connect_to = { "login.microsoftonline.com:443:127.0.0.1:9" } }

local function check(cond, what, ...)
  if not cond then error(what .. ": " .. table.concat({ ... }, " | "), 2) end
end

-- no secret field as a plain value anywhere in what the loader returns
local function no_secrets(t, path, depth)
  if depth > 20 then return end
  for k, v in pairs(t) do
    check(not SECRETS[k], "a secret reached the caller's state", path .. "." .. tostring(k))
    if type(v) == "table" then no_secrets(v, path .. "." .. tostring(k), depth + 1) end
  end
end

-- fuzz/run exports ISV_SECRET and CUSTOMER_SECRET, which the corpus files read
local path = os.getenv("FUZZ_TMP") and (os.getenv("FUZZ_TMP") .. "/config.lua") or os.tmpname()

return function(text)
  if not acceptable(text) then return end
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  local ok, cfg = pcall(core.config.load, path, function(desc)
    check(type(desc) == "string" or type(desc) == "table", "resolve_cloud got", type(desc))
    return ROUTING
  end)
  if not ok then
    local prefix = "config " .. path .. ": "
    check(type(cfg) == "string" and cfg:sub(1, #prefix) == prefix, "an error that does not name the file", tostring(cfg))
    return
  end
  check(type(cfg) == "table" and cfg.path == path and type(cfg.contexts) == "table", "a configuration without path or contexts")
  check(type(cfg.cloud) == "string" or type(cfg.cloud) == "table", "a configuration without a cloud")
  for name, ctx in pairs(cfg.contexts) do
    check(name == "isv" or name == "customer" or name == "default", "an unknown context", tostring(name))
    if ctx.credential ~= nil then
      check(type(ctx.credential) == "userdata", "a credential that is not a handle", type(ctx.credential))
    end
    local view = {}
    for k, v in pairs(ctx) do if k ~= "credential" then view[k] = v end end
    no_secrets(view, name, 0)
  end
end
