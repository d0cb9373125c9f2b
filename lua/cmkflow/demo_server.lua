-- A minimal local Azure for `cmkflow demo` until the emulator lands: an Entra v2 token endpoint
-- for one client-secret principal, and ARM's subscription list behind bearer-token checks.
-- Runs in the server's own Lua state (core/server.c). config: JSON with tenant, client_id,
-- client_secret, subscription.
local core = require "cmkflow.core"
local form = require "cmkflow.form"
local json = core.json

local issued = {}   -- token -> expiry
local cfg

local JSON_HEADERS = { ["content-type"] = "application/json; charset=utf-8", ["cache-control"] = "no-cache" }

local function reply(status, body, extra)
  local h = {}
  for k, v in pairs(JSON_HEADERS) do h[k] = v end
  for k, v in pairs(extra or {}) do h[k] = v end
  h["x-ms-request-id"] = core.crypto.uuid4()
  return status, h, json.encode(body)
end

local function token_endpoint(req, tenant)
  local f = form.decode(req.body)
  if f.grant_type ~= "client_credentials" then
    return reply(400, { error = "unsupported_grant_type",
      error_description = "AADSTS70003: The app requested an unsupported grant type.", error_codes = { 70003 } })
  end
  if tenant ~= cfg.tenant then
    return reply(400, { error = "invalid_request", error_codes = { 90002 },
      error_description = ("AADSTS90002: Tenant '%s' not found."):format(tenant) })
  end
  if f.client_id ~= cfg.client_id then
    return reply(400, { error = "unauthorized_client", error_codes = { 700016 },
      error_description = ("AADSTS700016: Application with identifier '%s' was not found in the directory '%s'.")
        :format(f.client_id or "", tenant) })
  end
  if f.client_secret ~= cfg.client_secret then
    return reply(401, { error = "invalid_client", error_codes = { 7000215 },
      error_description = "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '"
        .. f.client_id .. "'." })
  end
  local token = core.crypto.b64url_encode(core.crypto.random_bytes(32))
  issued[token] = os.time() + 3599
  return reply(200, { token_type = "Bearer", expires_in = 3599, ext_expires_in = 3599, access_token = token })
end

local function authenticated(req)
  local token = (req.headers["authorization"] or ""):match("^Bearer (%S+)$")
  return token and issued[token] and issued[token] > os.time()
end

local function handle(req)
  local tenant = req.path:match("^/([^/]+)/oauth2/v2%.0/token$")
  if tenant and req.method == "POST" then return token_endpoint(req, tenant) end
  if req.host ~= "management.azure.com" then
    return reply(404, { error = { code = "NotFound", message = "no such host in the demo server" } })
  end
  if not authenticated(req) then
    return reply(401, { error = { code = "AuthenticationFailed",
      message = "Authentication failed. The 'Authorization' header is missing or invalid." } })
  end
  if req.method == "GET" and req.path == "/subscriptions" then
    return reply(200, { value = { {
      id = "/subscriptions/" .. cfg.subscription, subscriptionId = cfg.subscription,
      tenantId = cfg.tenant, displayName = "isv-prod", state = "Enabled" } } })
  end
  return reply(404, { error = { code = "ResourceNotFound", message = "The resource was not found." } })
end

return {
  init = function(config) cfg = assert(json.decode(config)) end,
  handle = handle,
}
