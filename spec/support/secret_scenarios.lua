-- Child process for spec/secrets_spec.lua: runs the credential and API scenarios with --debug
-- tracing on, secrets coming only from files and environment variables (never from this state),
-- then dumps every string reachable in this Lua state so the parent can prove none is a secret.
-- usage: lua5.4 secret_scenarios.lua MODE INPUT_DIR STRINGS_OUT
--   MODE: "secret" (AZURE_CLIENT_SECRET right), "wrong" (wrong), "p12" (certificate via env)
local core = require "cmkflow.core"
local http = require "cmkflow.http"
local azure = require "cmkflow.azure"
local json = core.json

local mode, input, strings_out = arg[1], arg[2], arg[3]
local function read(path) local f = assert(io.open(path, "rb")) local s = f:read("a") f:close() return s end
local ids = json.decode(read(input .. "/ids.json"))   -- non-secret identifiers only

core.http.session():set_debug(true)

local ca, cakey = core.server.make_ca("secrets CA")
local cert, key = core.server.make_cert(ca, cakey, core.server.default_names())
local ca_file = os.tmpname()
do local f = assert(io.open(ca_file, "wb")) f:write(ca) f:close() end
local tls = core.server.start { listen = "127.0.0.1:0", tls = true, cert_pem = cert, key_pem = key,
  handler = "spec/support/handlers/config_file.lua", config = input .. "/server.json" }
local imds = core.server.start { listen = "127.0.0.1:0", tls = false,
  handler = "spec/support/handlers/config_file.lua", config = input .. "/imds.json" }

local cloud = azure.cloud.emulator(tls:url(), ca_file)
local client = http.new { ca_file = ca_file, connect_to = cloud.connect_to, retry = { max_attempts = 2, base_delay_ms = 10 } }
local common = { authority = cloud.authority, ca_file = ca_file, connect_to = cloud.connect_to }
local function cred(spec)
  for k, v in pairs(common) do spec[k] = spec[k] or v end
  return core.auth.credential(spec)
end

local results = {}
local function record(name, value, err)
  results[name] = err and { error = tostring(err), code = err.code } or value
  if err then print(name .. " failed: " .. tostring(err)) end
end

local function arm_list(credential, tenant)
  local arm = azure.arm.new { http = client, credential = credential, cloud = cloud, tenant = tenant }
  local subs, err = arm:list("/subscriptions", { api_version = "2022-12-01" })
  return subs and #subs, err
end

-- 1. environment credential (secret or PKCS#12 certificate, from the environment)
local env = cred { kind = "environment" }
record("environment", arm_list(env, ids.tenant))

-- 2. PEM certificate credential (key read by C from the file)
record("certificate", arm_list(cred { kind = "client_certificate", tenant = ids.tenant,
  client_id = ids.cert_app, certificate_path = input .. "/cert.pem", send_x5c = true }, ids.tenant))

-- 3. workload identity from a token file
record("workload_identity", arm_list(cred { kind = "workload_identity", tenant = ids.tenant,
  client_id = ids.fed_app, token_file = input .. "/federated.jwt" }, ids.tenant))

-- 4. managed identity (local IMDS) chained into an app assertion in another tenant
local mi = cred { kind = "managed_identity", identity_client_id = ids.uami, imds_endpoint = imds:url() .. "/metadata/identity/oauth2/token" }
record("chained", arm_list(cred { kind = "chained", source = mi, tenant = ids.tenant2, client_id = ids.chain_app }, ids.tenant2))

-- 5. Key Vault with the 401 challenge, through the environment credential
local kv = azure.keyvault.new { http = client, credential = env, cloud = cloud }
local k, kerr = kv:get_key("https://canaryvault.vault.azure.net", "cmk")
record("keyvault", k and k.key and k.key.kid, kerr)

io.stdout:write(json.encode(results), "\n")
tls:stop()
imds:stop()
os.remove(ca_file)

-- every string reachable from the registry: tables (keys, values, metatables), function upvalues,
-- userdata user values
collectgarbage()
collectgarbage()
local seen, out = {}, {}
local function walk(v, depth)
  if depth > 60 then return end
  local t = type(v)
  if t == "string" then out[#out + 1] = v return end
  if (t ~= "table" and t ~= "function" and t ~= "userdata" and t ~= "thread") or seen[v] then return end
  seen[v] = true
  local mt = debug.getmetatable(v)
  if mt then walk(mt, depth + 1) end
  if t == "table" then
    for key, value in next, v do walk(key, depth + 1) walk(value, depth + 1) end
  elseif t == "function" then
    for i = 1, 255 do
      local name, value = debug.getupvalue(v, i)
      if not name then break end
      walk(value, depth + 1)
    end
  elseif t == "userdata" then
    for i = 1, 8 do
      local value, ok = debug.getuservalue(v, i)
      if ok == false then break end
      walk(value, depth + 1)
    end
  end
end
walk(debug.getregistry(), 0)
local f = assert(io.open(strings_out, "wb"))
f:write(table.concat(out, "\n"))
f:close()
