-- Test harness for the cmkflow.azure specs: starts the scripted Azure (azure_scripted.lua) on an
-- ephemeral 127.0.0.1 port behind TLS with a throw-away CA, routes the public hostnames to it with
-- CONNECT_TO (cloud.emulator), and builds ARM/Graph/Key Vault clients for one tenant.
--
--   local H = require "support.handlers.azure_harness"
--   local env = H.start(routes, {tenant = T1})
--   env.arm, env.graph, env.keyvault, env.sleeps (waits requested, in ms), env.journal(), env:stop()
--   env.run(fn) -- runs fn inside an async task on the fake clock; returns fn's results
--
-- When the HTTP layer (cmkflow.http / cmkflow.async) is not built yet, the same handler is called
-- in-process through a small stand-in client (H.mode == "in-process"); otherwise real HTTPS.
local core = require "cmkflow.core"
local azure = require "cmkflow.azure"
local json = core.json

local H = {}

H.T1 = "11111111-1111-4111-8111-111111111111"
H.T2 = "22222222-2222-4222-8222-222222222222"
H.SUB = "33333333-3333-4333-8333-333333333333"
H.APP = "44444444-4444-4444-8444-444444444444"
H.HANDLER = "spec/support/handlers/azure_scripted.lua"

local has_http = pcall(require, "cmkflow.http") and pcall(require, "cmkflow.async")
  and type(core.server) == "table" and type(core.server.start) == "function"
H.mode = has_http and "https" or "in-process"

local pki
local function make_pki()
  if pki then return pki end
  local server = core.server
  local ca, cakey = server.make_ca()
  local cert, key = server.make_cert(ca, cakey, server.default_names())
  local ca_file = os.tmpname()
  local f = assert(io.open(ca_file, "wb"))
  f:write(ca)
  f:close()
  pki = { ca = ca, cert = cert, key = key, ca_file = ca_file }
  return pki
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- A stand-in for cmkflow.http used only while the real layer is missing: it calls the handler
-- function directly and fetches (and caches) tokens from the handler's token endpoint.
local function in_process_client(handler, config, default_tenant)
  local tokens = {}
  local client = {}
  local function call(method, url, headers, body)
    local host, path, query = url:match("^https://([^/?]+)([^?]*)%??(.*)$")
    if path == "" then path = "/" end
    local status, h, b = handler({ method = method, host = host:lower():gsub(":%d+$", ""), path = unescape(path), query = query,
                                   headers = headers, body = body or "" }, config)
    local lower = {}
    for k, v in pairs(h or {}) do lower[k:lower()] = v end
    return { status = status, headers = lower, body = b, attempts = 1, request_id = lower["x-ms-request-id"] }
  end
  function client:request(req)
    local headers = {}
    for k, v in pairs(req.headers or {}) do headers[k:lower()] = v end
    if req.credential then
      local tenant = req.tenant or default_tenant
      local key = tenant .. " " .. req.scope
      if not tokens[key] then
        local r = call("POST", "https://login.microsoftonline.com/" .. tenant .. "/oauth2/v2.0/token",
                       { ["content-type"] = "application/x-www-form-urlencoded" },
                       "grant_type=client_credentials&client_id=" .. H.APP .. "&scope=" .. escape(req.scope))
        tokens[key] = json.decode(r.body).access_token
      end
      headers.authorization = "Bearer " .. tokens[key]
    end
    local body = req.body
    if body == nil and req.json ~= nil then body = json.encode(req.json) end
    return call(req.method, req.url, headers, body)
  end
  return client
end

function H.start(routes, opts)
  opts = opts or {}
  local tenant = opts.tenant or H.T1
  local config = json.encode(json.object { routes = json.array(routes or {}) })
  local env = { sleeps = {}, tenant = tenant }
  local http, cloud
  if has_http then
    local p = make_pki()
    local srv = core.server.start { listen = "127.0.0.1:0", tls = true, cert_pem = p.cert, key_pem = p.key,
                                    handler = H.HANDLER, config = config }
    env.server = srv
    cloud = azure.cloud.emulator("https://127.0.0.1:" .. srv:port(), p.ca_file)
    http = require("cmkflow.http").new { ca_file = p.ca_file, connect_to = cloud.connect_to,
                                         retry = { max_attempts = 1, base_delay_ms = 1 } }
    env.credential = core.auth.credential {
      kind = "client_secret", tenant = tenant, client_id = H.APP,
      client_secret = "spec-only-secret", -- made up by this test
      ca_file = p.ca_file, connect_to = { cloud:connect_to_for("login.microsoftonline.com") },
    }
  else
    local handler = dofile(H.HANDLER)
    cloud = azure.cloud.emulator("https://127.0.0.1:1", nil)
    http = in_process_client(handler, config, tenant)
    env.credential = { in_process = true }
  end
  env.cloud, env.http = cloud, http
  local async = has_http and require("cmkflow.async") or nil
  local function sleep(ms)
    env.sleeps[#env.sleeps + 1] = ms
    if async then async.sleep(ms) end
  end
  local common = { http = http, credential = env.credential, cloud = cloud, tenant = tenant,
                   subscription = H.SUB, sleep = sleep }
  env.arm = azure.arm.new(common)
  env.graph = azure.graph.new(common)
  env.keyvault = azure.keyvault.new(common)

  function env.journal()
    local resp = assert(http:request { method = "GET", url = "https://management.azure.com/_test/journal" })
    local entries = assert(json.decode(resp.body))
    local out = {}
    for _, e in ipairs(entries) do
      if e.path ~= "/_test/journal" then out[#out + 1] = e end
    end
    return out
  end

  -- journal entries other than token requests
  function env.calls()
    local out = {}
    for _, e in ipairs(env.journal()) do
      if not e.path:match("/oauth2/v2%.0/token$") then out[#out + 1] = e end
    end
    return out
  end

  function env.run(fn)
    if not async then return fn() end
    core.http.session():set_clock("fake")
    local results
    async.run(function() results = table.pack(fn()) end)
    return table.unpack(results, 1, results.n)
  end

  function env.stop()
    if env.server then env.server:stop() env.server = nil end
  end
  return env
end

H.unescape = unescape

return H
