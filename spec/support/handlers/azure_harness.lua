-- Test harness for the cmkflow.azure specs: starts the scripted Azure (azure_scripted.lua) on an
-- ephemeral 127.0.0.1 port behind TLS with a throw-away CA, routes the public hostnames to it with
-- CONNECT_TO (cloud.emulator), and builds ARM/Graph/Key Vault clients for one tenant.
--
--   local H = require "support.handlers.azure_harness"
--   local env = H.start(routes, {tenant = T1})
--   env.arm, env.graph, env.keyvault, env.sleeps (waits requested, in ms), env.journal(), env:stop()
--   env.run(fn) -- runs fn inside an async task on the fake clock; returns fn's results
local core = require "cmkflow.core"
local azure = require "cmkflow.azure"
local json = core.json

local H = {}

H.T1 = "11111111-1111-4111-8111-111111111111"
H.T2 = "22222222-2222-4222-8222-222222222222"
H.SUB = "33333333-3333-4333-8333-333333333333"
H.APP = "44444444-4444-4444-8444-444444444444"
H.HANDLER = "spec/support/handlers/azure_scripted.lua"

local async = require "cmkflow.async"
local httpmod = require "cmkflow.http"
H.mode = "https"

local make_pki = require("support.pki").get

function H.start(routes, opts)
  opts = opts or {}
  local tenant = opts.tenant or H.T1
  local config = json.encode(json.object { routes = json.array(routes or {}) })
  local env = { sleeps = {}, tenant = tenant }
  local p = make_pki()
  local srv = core.server.start { listen = "127.0.0.1:0", tls = true, cert_pem = p.cert, key_pem = p.key,
                                  handler = H.HANDLER, config = config }
  env.server = srv
  local cloud = azure.cloud.emulator("https://127.0.0.1:" .. srv:port(), p.ca_file)
  local http = httpmod.new { ca_file = p.ca_file, connect_to = cloud.connect_to,
                             retry = { max_attempts = 1, base_delay_ms = 1 } }
  env.credential = core.auth.credential {
    kind = "client_secret", tenant = tenant, client_id = H.APP,
    client_secret = "spec-only-secret", -- made up by this test
    ca_file = p.ca_file, connect_to = { cloud:connect_to_for("login.microsoftonline.com") },
  }
  env.cloud, env.http = cloud, http
  local function sleep(ms)
    env.sleeps[#env.sleeps + 1] = ms
    async.sleep(ms)
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

return H
