-- A local Entra ID for spec/auth_spec.lua: the v2 token endpoint (client secret, certificate
-- assertion, federated assertion), IMDS and App Service managed-identity endpoints, and a
-- resource that requires a bearer token this server issued. Runs in the test server's own Lua
-- state (core/server.c). Every request is recorded; GET /_test/journal returns the records.
--
-- config (JSON):
--   expires_in   token lifetime in seconds (default 3599)
--   tenants      {tenant, ...}        tenants that exist (others: AADSTS90002)
--   clients      {[client_id] = {secret = "...",            -- client_secret flow
--                                x5t_s256 = "...",          -- certificate flow (thumbprint)
--                                assertions = {"jwt", ...}, -- federated: exact values accepted
--                                assertion_prefix = "mi."}} -- federated: MI tokens of any IMDS
--   imds         {identities = {[client_id] = true}, object_ids = {...}, resource_ids = {...}}
--   app_service_header  the X-IDENTITY-HEADER value App Service requires
-- The journal holds the assertions it received (test-made keys and test-made tokens only) so that
-- the spec can verify signatures and compare values; it never records client secrets.
local core = require "cmkflow.core"
local form = require "cmkflow.form"
local json = core.json

local cfg
local journal = {}
local issued = {}   -- token -> {client_id, tenant, scope, exp}
local counter = 0

local function new_token(prefix, info)
  counter = counter + 1
  local token = ("%s%d.%08x%08x"):format(prefix, counter, math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  info.exp = os.time() + (cfg.expires_in or 3599)
  issued[token] = info
  return token
end

local function reply(status, body)
  return status, { ["content-type"] = "application/json", ["x-ms-request-id"] = "req-" .. counter },
         json.encode(body)
end

local function sts_error(status, error, n, text)
  return reply(status, { error = error, error_codes = { n },
    error_description = ("AADSTS%d: %s\r\nTrace ID: 00000000-0000-0000-0000-000000000000"):format(n, text) })
end

local function contains(list, v)
  for _, x in ipairs(list or {}) do if x == v then return true end end
  return false
end

local function token_endpoint(req, tenant)
  local f = form.decode(req.body)
  local rec = { kind = "token", tenant = tenant, client_id = f.client_id, scope = f.scope,
                grant_type = f.grant_type, content_type = req.headers["content-type"],
                client_assertion_type = f.client_assertion_type,
                method = f.client_secret and "secret" or f.client_assertion and "assertion" or "none" }
  journal[#journal + 1] = rec
  if f.grant_type ~= "client_credentials" then
    return sts_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
  end
  if not contains(cfg.tenants, tenant) then
    return sts_error(400, "invalid_request", 90002, ("Tenant '%s' not found."):format(tenant))
  end
  local client = (cfg.clients or {})[f.client_id or ""]
  if not client then
    return sts_error(400, "unauthorized_client", 700016,
      ("Application with identifier '%s' was not found in the directory '%s'."):format(f.client_id or "", tenant))
  end
  if f.client_secret then
    if f.client_secret ~= client.secret then
      return sts_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret "
        .. "being sent in the request is the client secret value, not the client secret ID.")
    end
  elseif f.client_assertion then
    rec.assertion = f.client_assertion
    if f.client_assertion_type ~= "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" then
      return sts_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_assertion_type'.")
    end
    if client.x5t_s256 then
      local h, c = core.jose.decode(f.client_assertion)
      if not h then c = nil end -- c is the reason it is not a compact JWS
      local now = os.time()
      local aud = ("%s://%s:%d/%s/oauth2/v2.0/token"):format(req.scheme, req.host, req.port, tenant)
      rec.checks = { x5t = h and h["x5t#S256"] == client.x5t_s256, alg = h and h.alg,
                     aud = c and c.aud == aud, iss = c and c.iss == f.client_id,
                     sub = c and c.sub == f.client_id,
                     time = c and type(c.exp) == "number" and c.nbf <= now + 60 and c.exp > now
                            and c.exp - c.nbf <= 600,
                     jti = c and type(c.jti) == "string" and #c.jti == 36,
                     x5c = h and h.x5c ~= nil }
      if not (rec.checks.x5t and rec.checks.aud and rec.checks.iss and rec.checks.sub and rec.checks.time) then
        return sts_error(401, "invalid_client", 700027, "Client assertion failed signature validation.")
      end
    elseif client.assertions or client.assertion_prefix then
      local ok = contains(client.assertions, f.client_assertion)
        or (client.assertion_prefix and f.client_assertion:sub(1, #client.assertion_prefix) == client.assertion_prefix)
      if not ok then
        return sts_error(401, "invalid_client", 700211, "No matching federated identity record found for presented assertion issuer.")
      end
    else
      return sts_error(401, "invalid_client", 700027, "Client assertion failed signature validation.")
    end
  else
    return sts_error(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
  end
  local token = new_token("at.", { client_id = f.client_id, tenant = tenant, scope = f.scope })
  return reply(200, { token_type = "Bearer", expires_in = cfg.expires_in or 3599,
                      ext_expires_in = cfg.expires_in or 3599, access_token = token })
end

local function imds(req)
  local a = req.args
  local id = a.client_id or a.object_id or a.msi_res_id or "system"
  local rec = { kind = "imds", metadata = req.headers["metadata"], api_version = a["api-version"],
                resource = a.resource, identity = id, query = req.query }
  journal[#journal + 1] = rec
  if req.headers["metadata"] ~= "true" then
    return reply(400, { error = "bad_request_102", error_description = "Required metadata header not specified" })
  end
  local ids = cfg.imds or {}
  if not ((a.client_id and (ids.identities or {})[a.client_id]) or (a.object_id and (ids.object_ids or {})[a.object_id])
          or (a.msi_res_id and (ids.resource_ids or {})[a.msi_res_id])) then
    return reply(400, { error = "invalid_request", error_description = "Identity not found" })
  end
  local token = new_token("mi.", { client_id = id, resource = a.resource })
  rec.token = token
  local now = os.time()
  local lifetime = cfg.expires_in or 3599
  return reply(200, { access_token = token, refresh_token = "", expires_in = tostring(lifetime),
                      expires_on = tostring(now + lifetime), not_before = tostring(now),
                      resource = a.resource, token_type = "Bearer" })
end

local function app_service(req)
  local a = req.args
  local rec = { kind = "app_service", api_version = a["api-version"], resource = a.resource,
                identity = a.client_id or a.principal_id or a.mi_res_id or "system",
                header_ok = req.headers["x-identity-header"] == cfg.app_service_header }
  journal[#journal + 1] = rec
  if not rec.header_ok then
    return reply(401, { error = "unauthorized", error_description = "missing or wrong X-IDENTITY-HEADER" })
  end
  local token = new_token("mi.", { client_id = rec.identity, resource = a.resource })
  local lifetime = cfg.expires_in or 3599
  return reply(200, { access_token = token, expires_on = tostring(os.time() + lifetime),
                      resource = a.resource, token_type = "Bearer", client_id = a.client_id })
end

local function resource(req)
  local token = (req.headers["authorization"] or ""):match("^Bearer (%S+)$")
  local info = token and issued[token]
  journal[#journal + 1] = { kind = "resource", path = req.path, authorized = info ~= nil }
  if not info or info.exp <= os.time() then
    return reply(401, { error = { code = "AuthenticationFailed", message = "bearer token missing or unknown" } })
  end
  return reply(200, { client_id = info.client_id, tenant = info.tenant, scope = info.scope, resource = info.resource })
end

local function handle(req)
  if req.path == "/_test/journal" then
    return 200, { ["content-type"] = "application/json" }, json.encode(journal)
  end
  local tenant = req.path:match("^/([^/]+)/oauth2/v2%.0/token$")
  if tenant and req.method == "POST" then return token_endpoint(req, tenant) end
  if req.path == "/metadata/identity/oauth2/token" then return imds(req) end
  if req.path == "/msi/token" then return app_service(req) end
  return resource(req)
end

return {
  init = function(config) cfg = assert(json.decode(config)); math.randomseed(os.time()) end,
  handle = handle,
}
