-- Fuzz harness: the emulator's request handling, without sockets. Each input is a sequence of
-- HTTP/1.1 requests as text (request line, headers, blank line, body), separated by lines "###"
-- (as .http files do); "{{isv.arm}}" and the like stand for a bearer token the emulator issued
-- at start to that demo tenant's principal for that API (arm, graph, vault), so that inputs reach
-- past authentication. Each request becomes the request table
-- core/server_dispatch.c builds (method, path, query, args, headers, body, host, port, remote,
-- scheme) and goes to the handler the server calls, cmkflow.emulator's handle, in a state set up as
-- the server sets it up (handler_module, init(config)). What the handler returns must pass the
-- server's own checks (status 100..599 or nil, header values strings or numbers, body a string,
-- delay 0..600000 ms), a JSON content type must carry JSON, and the handler must not raise: the
-- server answers a raise with a 500, which is a bug of the emulator.
-- Every input starts from the seed's state (control.reset, as POST /_emulator/reset does, with
-- the journal and snapshots emptied too).
local core = require "cmkflow.core"
local json = core.json

require "pooled_keys" -- before the emulator's modules: fuzz/pooled_keys.lua

local emulator = require "cmkflow.emulator"
local control = require "cmkflow.emulator.control"

local CONFIG = json.encode({}) -- the embedded emulator's config minus state_dir: the demo seed
emulator.init(CONFIG)
local demo_seed = require "cmkflow.emulator.demo_seed"

local function check(cond, what, ...)
  if not cond then error(what .. ": " .. table.concat({ ... }, " | "), 2) end
end

-- MHD hands the handler C strings: nothing past a NUL
local function cstr(s) return (s:match("^[^%z]*")) end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- "a=1&b=%20" -> {a = "1", b = " "}, the first value of a repeated name (server_dispatch.c push_arg)
local function parse_args(query)
  local args = {}
  for pair in query:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = cstr(unescape(k))
    if k ~= "" and args[k] == nil then args[k] = cstr(unescape(v)) end
  end
  return args
end

-- the request text -> the table server_dispatch.c builds, or nil when there is no request line
local function parse(text)
  local head, body = text:match("^(.-)\r?\n\r?\n(.*)$")
  if not head then head, body = text, "" end
  local lines = {}
  for line in (head .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line:gsub("\r$", "") end
  local method, target = (lines[1] or ""):match("^(%S+) (%S+)")
  if not method then return nil end
  local path, query = target:match("^([^?]*)%??(.*)$")
  local headers = {}
  for i = 2, #lines do
    local name, value = lines[i]:match("^([^:]+):%s*(.-)%s*$")
    if name then
      name = cstr(name):lower()
      value = cstr(value)
      headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
  end
  local host = (headers.host or ""):lower()
  host = host:sub(1, 1) == "[" and host:match("^%[([^%]]*)") or host:match("^[^:]*")
  return { method = cstr(method), path = cstr(unescape(path)), query = cstr(query), args = parse_args(query),
           headers = headers, body = body, host = host, port = 443, remote = "127.0.0.1", scheme = "https" }
end

-- {{tenant.api}} -> a token from the emulator's own token endpoint (client credentials, demo seed)
local TOKENS = {}
do
  local SCOPES = { arm = "https://management.azure.com/.default", graph = "https://graph.microsoft.com/.default",
                   vault = "https://vault.azure.net/.default" }
  for _, t in ipairs(demo_seed.tenants) do
    local pr = t.principals[1]
    for api, scope in pairs(SCOPES) do
      local status, _, body = emulator.handle({ method = "POST", path = "/" .. t.id .. "/oauth2/v2.0/token", query = "",
        args = {}, host = "login.microsoftonline.com", port = 443, remote = "127.0.0.1", scheme = "https",
        headers = { ["content-type"] = "application/x-www-form-urlencoded" },
        body = ("grant_type=client_credentials&client_id=%s&client_secret=%s&scope=%s"):format(pr.appId, pr.secret, scope) })
      assert(status == 200, body)
      TOKENS[t.name .. "." .. api] = json.decode(body).access_token
    end
  end
end

local function header_value_ok(v) return type(v) == "string" or type(v) == "number" end

local function one(text)
  local req = parse(text)
  if not req then return end
  local status, headers, body, delay = emulator.handle(req, CONFIG)
  if status == nil then return end -- a dropped connection (a fault rule)
  check(math.type(status) == "integer" and status >= 100 and status <= 599, "an invalid status", tostring(status))
  check(headers == nil or type(headers) == "table", "headers that are not a table", type(headers))
  check(body == nil or type(body) == "string", "a body that is not a string", type(body))
  check(delay == nil or (type(delay) == "number" and delay >= 0 and delay <= 600000), "an invalid delay", tostring(delay))
  local content_type = ""
  for name, v in pairs(headers or {}) do
    check(type(name) == "string", "a header name that is not a string", tostring(name))
    if type(v) == "table" then
      for _, x in ipairs(v) do check(header_value_ok(x), "a bad value for header", name) end
    else
      check(header_value_ok(v), "a bad value for header", name)
      if name:lower() == "content-type" then content_type = tostring(v) end
    end
  end
  if content_type:find("json", 1, true) and body and body ~= "" and req.method ~= "HEAD" then
    local v, err = json.decode(body)
    check(v ~= nil, "a JSON content type without JSON", tostring(err), body:sub(1, 200))
  end
end

return function(input)
  local st = emulator.state()
  st.control = nil
  control.reset(st)
  input = input:gsub("{{([%w_]+%.[%w_]+)}}", TOKENS)
  for text in (input .. "\n###\n"):gmatch("(.-)\r?\n###\r?\n") do one(text:gsub("^[\r\n]+", "")) end
end
