-- Starts the Azure emulator in-process (on its own server thread and Lua state) for a spec and
-- gives clients for it: the cloud description, credentials of seed principals, the control API.
--   local emu = require("support.emulator").start { seed = seed_table? }   -- default: demo seed
--   ... start { knobs = {...} }  -- the emulator's config knobs (default M.FAST_KNOBS; false: its own defaults)
--   emu.url, emu.ca_file, emu.cloud, emu.http
--   emu:credential("isv") / emu:credential("customer", "customer-admin")
--   emu:control("POST", "/_emulator/reset") -> resp;  emu:state() -> decoded /_emulator/state
--   emu:fresh()   -- back to the world and knobs as at its first call (cheaper than reset)
--   emu:stop()
local core = require "cmkflow.core"
local json = core.json
local http = require "cmkflow.http"
local azure = require "cmkflow.azure"

local M = {}
local Emu = {}
Emu.__index = Emu

local make_pki = require("support.pki").get

-- The knobs every spec emulator (this one and support.external_emulator) starts with unless the
-- wait itself is under test (docs/emulator.md, "Knobs"): a storage account create completes at
-- once instead of after `Retry-After: 1`, and key versions reuse a small pool of RSA keys instead
-- of costing one generation each. A spec that checks the defaults, times a Retry-After or compares
-- key material passes its own `knobs` (or false). Reset re-applies them.
M.FAST_KNOBS = { lro_retry_after_s = 0, key_material = "pooled" }

function M.start(opts)
  opts = opts or {}
  local p = make_pki()
  local seed = opts.seed or require "cmkflow.emulator.demo_seed"
  local knobs = opts.knobs
  if knobs == nil then knobs = M.FAST_KNOBS end
  local srv = assert(core.server.start { listen = "127.0.0.1:0", tls = true, cert_pem = p.cert, key_pem = p.key,
    handler_module = "cmkflow.emulator", config = json.encode({ seed = seed, knobs = knobs or nil }) })
  local emu = setmetatable({ server = srv, url = srv:url(), port = srv:port(), ca_file = p.ca_file, seed = seed }, Emu)
  emu.cloud = azure.cloud.emulator(emu.url, p.ca_file)
  emu.http = http.new { ca_file = p.ca_file, connect_to = emu.cloud.connect_to,
                        retry = opts.retry or { max_attempts = 3, base_delay_ms = 10 } }
  return emu
end

-- Back to the world, delays and scalar knobs emu had at the first call of fresh(emu, request), and
-- no fault rule; request(method, path, body) -> status, decoded body (the control API). Reset does
-- that too (and re-seeds the PRNG: use it when fault probabilities are drawn), but it also
-- generates and discards an RSA key per tenant, 0.4 s of CPU each time; this restores a snapshot
-- taken at the first call (so make that call before changing anything). Returns the snapshot id.
function M.fresh(emu, request)
  local function call(method, path, body, want)
    local status, doc = request(method, path, body)
    assert(status == want or (want == 201 and status == 200), ("%s %s answered %s"):format(method, path, tostring(status)))
    return doc
  end
  local p = emu.pristine
  if not p then
    p = { delays = call("GET", "/_emulator/delays", nil, 200), knobs = call("GET", "/_emulator/knobs", nil, 200) }
    p.id = call("POST", "/_emulator/snapshot", nil, 201).id
    emu.pristine = p
    return p.id
  end
  call("POST", "/_emulator/restore", { id = p.id }, 200)
  call("DELETE", "/_emulator/faults", nil, 204)
  call("PUT", "/_emulator/delays", p.delays, 200)
  call("PUT", "/_emulator/knobs", p.knobs, 200)
  return p.id
end

function Emu:fresh()
  return M.fresh(self, function(method, path, body)
    local resp = assert(self:control(method, path, body))
    return resp.status, resp.body ~= "" and json.decode(resp.body) or nil
  end)
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

-- An Authorization header value for a seed principal's token for `scope`, fetched as any client
-- would (client credentials at the emulator's token endpoint): for specs that send a token where
-- cmkflow's own core refuses to (a token for the wrong audience, to see the emulator's 401).
function Emu:bearer(tenant_name, scope, principal_name)
  local pr, t = self:principal(tenant_name, principal_name)
  local resp = assert(self.http:request { method = "POST",
    url = self.cloud.authority .. "/" .. t.id .. "/oauth2/v2.0/token",
    headers = { ["content-type"] = "application/x-www-form-urlencoded" },
    body = require("cmkflow.form").encode { grant_type = "client_credentials", client_id = pr.appId,
                                            client_secret = pr.secret, scope = scope } })
  assert(resp.status == 200, resp.body)
  return "Bearer " .. json.decode(resp.body).access_token
end

-- A credential on the single-origin layout third-party clients use (Entra at URL/{tenant}/...):
-- its authority is the emulator's own origin, so its tokens go there only.
function Emu:origin_credential(tenant_name, principal_name)
  local pr, t = self:principal(tenant_name, principal_name)
  return core.auth.credential { kind = "client_secret", tenant = t.id, client_id = pr.appId, client_secret = pr.secret,
    authority = self.url, ca_file = self.ca_file }
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
