-- Starts the Azure emulator in-process (on its own server thread and Lua state) for a spec and
-- gives clients for it: the cloud description, credentials of seed principals, the control API.
--   local emu = require("support.emulator").start { seed = seed_table? }   -- default: demo seed
--   emu.url, emu.ca_file, emu.cloud, emu.http
--   emu:credential("isv") / emu:credential("customer", "customer-admin")
--   emu:control("POST", "/_emulator/reset") -> resp;  emu:state() -> decoded /_emulator/state
--   emu:stop()
local core = require "cmkflow.core"
local json = core.json
local http = require "cmkflow.http"
local azure = require "cmkflow.azure"

local M = {}
local Emu = {}
Emu.__index = Emu

local make_pki = require("support.pki").get

function M.start(opts)
  opts = opts or {}
  local p = make_pki()
  local seed = opts.seed or require "cmkflow.emulator.demo_seed"
  local srv = assert(core.server.start { listen = "127.0.0.1:0", tls = true, cert_pem = p.cert, key_pem = p.key,
    handler_module = "cmkflow.emulator", config = json.encode({ seed = seed }) })
  local emu = setmetatable({ server = srv, url = srv:url(), port = srv:port(), ca_file = p.ca_file, seed = seed }, Emu)
  emu.cloud = azure.cloud.emulator(emu.url, p.ca_file)
  emu.http = http.new { ca_file = p.ca_file, connect_to = emu.cloud.connect_to,
                        retry = opts.retry or { max_attempts = 3, base_delay_ms = 10 } }
  return emu
end

-- The seed principal (tenant name, principal name or the tenant's first) and its tenant.
function Emu:principal(tenant_name, principal_name)
  for _, t in ipairs(self.seed.tenants) do
    if t.name == tenant_name then
      for _, pr in ipairs(t.principals or {}) do
        if principal_name == nil or pr.name == principal_name then return pr, t end
      end
    end
  end
  error("no principal " .. tostring(principal_name) .. " in tenant " .. tostring(tenant_name))
end

-- The cloud of a seed tenant (its `cloud` field: public by default), routed to the emulator.
function Emu:cloud_of(t)
  if not t.cloud or t.cloud == "azure" then return self.cloud end
  self.clouds = self.clouds or {}
  self.clouds[t.cloud] = self.clouds[t.cloud] or azure.cloud.emulator(self.url, self.ca_file, t.cloud)
  return self.clouds[t.cloud]
end

-- A client-secret credential for a seed principal, routed to the emulator.
function Emu:credential(tenant_name, principal_name)
  local pr, t = self:principal(tenant_name, principal_name)
  local cloud = self:cloud_of(t)
  return core.auth.credential { kind = "client_secret", tenant = t.id, client_id = pr.appId, client_secret = pr.secret,
    authority = cloud.authority, ca_file = self.ca_file, connect_to = cloud.connect_to }
end

-- {arm, graph, keyvault, tenant, subscription} for a seed tenant's principal, in the tenant's cloud.
function Emu:context(tenant_name, principal_name)
  local _, t = self:principal(tenant_name, principal_name)
  local cloud = self:cloud_of(t)
  local client = cloud == self.cloud and self.http or http.new { ca_file = self.ca_file, connect_to = cloud.connect_to,
    retry = { max_attempts = 3, base_delay_ms = 10 } }
  return azure.context { cloud = cloud, credential = self:credential(tenant_name, principal_name), tenant = t.id,
    subscription = t.subscriptions and t.subscriptions[1] and t.subscriptions[1].id, http = client }
end

-- A raw request to the emulator (path on the single origin, e.g. "/_emulator/state").
function Emu:control(method, path, body)
  return self.http:request { method = method, url = self.url .. path, json = body }
end

function Emu:state()
  local resp = assert(self:control("GET", "/_emulator/state"))
  assert(resp.status == 200, "GET /_emulator/state: " .. resp.status .. " " .. resp.body)
  return json.decode(resp.body)
end

function Emu:stop()
  if self.server then self.server:stop() self.server = nil end
end

return M
