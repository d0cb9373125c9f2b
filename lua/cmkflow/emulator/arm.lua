-- The emulated Azure Resource Manager: authentication (token, tenant of the subscription),
-- routing to Microsoft.Resources (arm_resources.lua) and to the resource providers, ARM's
-- response headers. The request context and the helpers providers share are arm_context.lua.
--   arm.handle(st, req) -> status, headers, body
-- Provider modules get a request context `ctx` (arm_context.Ctx) and `rest`, the path segments
-- after /providers/{Namespace}; they call ctx:guard(type, scope, action) before acting. A provider
-- may have on_delete(st, record), called when its resource goes with its resource group.
local core = require "cmkflow.core"
local respond = require "cmkflow.emulator.respond"
local tokens = require "cmkflow.emulator.tokens"
local context = require "cmkflow.emulator.arm_context"
local resources = require "cmkflow.emulator.arm_resources"

local concat, ipairs = table.concat, ipairs

local M = {}

-- The resource providers by lower-case namespace: adding one is adding a module and a line here.
-- The router hands this table to every request (ctx.providers), so Microsoft.Resources can let
-- the providers clean up when a resource group goes.
local PROVIDERS = {
  ["microsoft.managedidentity"] = require "cmkflow.emulator.arm_identity",
  ["microsoft.keyvault"] = require "cmkflow.emulator.arm_keyvault",
  ["microsoft.authorization"] = require "cmkflow.emulator.arm_authorization",
  ["microsoft.storage"] = require "cmkflow.emulator.arm_storage",
}
M.PROVIDERS = PROVIDERS

local ALLOWED_AUDIENCES = "'https://management.core.windows.net/','https://management.core.windows.net',"
  .. "'https://management.azure.com/','https://management.azure.com'"

-- ---- authentication -------------------------------------------------------------------------

local function auth_error(req, code, message)
  local s, h, b = respond.arm_error(req, 401, code, message)
  h["www-authenticate"] = ('Bearer authorization_uri="https://login.windows.net/", error="invalid_token", '
    .. 'error_description="%s"'):format(message:gsub('"', "'"))
  return s, h, b
end

local function authenticate(st, req)
  local claims, reason, detail = tokens.verify(st, req, "arm")
  if claims then return claims end
  if reason == "missing" then
    return nil, auth_error(req, "AuthenticationFailed",
      "The authentication failed because of missing 'Authorization' header.")
  elseif reason == "expired" then
    local _, c = core.jose.decode((req.headers.authorization or ""):match("(%S+)$") or "")
    local exp = type(c) == "table" and tonumber(c.exp) or 0
    return nil, auth_error(req, "ExpiredAuthenticationToken",
      ("The access token expiry UTC time '%s' is earlier than current UTC time '%s'."):format(
        os.date("!%m/%d/%Y %H:%M:%S", exp), os.date("!%m/%d/%Y %H:%M:%S", st:now())))
  elseif reason == "audience" then
    local _, c = core.jose.decode((req.headers.authorization or ""):match("(%S+)$") or "")
    return nil, auth_error(req, "InvalidAuthenticationToken",
      ("The access token has been obtained for wrong audience or resource '%s'. It should exactly match with one of "
       .. "the allowed audiences %s."):format(tostring(type(c) == "table" and c.aud or ""), ALLOWED_AUDIENCES))
  end
  return nil, auth_error(req, "InvalidAuthenticationToken", "The access token is invalid.")
end

local function tenant_mismatch(req, token_tid, sub_tid)
  return auth_error(req, "InvalidAuthenticationTokenTenant",
    ("The access token is from the wrong issuer 'https://sts.windows.net/%s/'. It must match the tenant "
     .. "'https://sts.windows.net/%s/' associated with this subscription. Please use the authority (URL) "
     .. "'https://login.windows.net/%s' to get the token. Note, if the subscription is transferred to another "
     .. "tenant there is no impact to the services, but information about new tenant could take time to propagate "
     .. "(up to an hour). If you just transferred your subscription and see this error message, please try back "
     .. "later."):format(token_tid, sub_tid, sub_tid))
end

-- ---- routing --------------------------------------------------------------------------------

local function split(path)
  local segs = {}
  for s in path:gmatch("[^/]+") do segs[#segs + 1] = s end
  return segs
end

local function slice(t, i, j)
  local out = {}
  for k = i, j or #t do out[#out + 1] = t[k] end
  return out
end

local function dispatch(ctx, segs)
  local lower = {}
  for i, s in ipairs(segs) do lower[i] = s:lower() end
  -- Microsoft.Authorization at any scope: the last "/providers/Microsoft.Authorization/".
  for i = #segs - 1, 1, -1 do
    if lower[i] == "providers" and lower[i + 1] == "microsoft.authorization" then
      ctx.scope = "/" .. concat(segs, "/", 1, i - 1)
      if ctx.scope == "/" then ctx.scope = "" end
      return PROVIDERS["microsoft.authorization"].handle(ctx, slice(segs, i + 2))
    end
  end
  if lower[1] == "tenants" and #segs == 1 then return resources.tenants(ctx) end
  if lower[1] ~= "subscriptions" then return nil end
  if #segs == 1 then return resources.subscriptions(ctx) end
  if #segs == 2 then return resources.subscription(ctx) end
  if lower[3] == "operationresults" and #segs == 4 then return resources.operation_result(ctx) end
  if lower[3] == "resourcegroups" then
    ctx.rg = segs[4]
    if #segs == 3 then return resources.list_groups(ctx) end
    if #segs == 4 then return resources.group(ctx) end
    if lower[5] == "providers" and #segs >= 6 then
      local provider = PROVIDERS[lower[6]]
      if provider then return provider.handle(ctx, slice(segs, 7)) end
    end
    return nil
  end
  if lower[3] == "providers" and #segs >= 4 then
    local provider = PROVIDERS[lower[4]]
    if provider then return provider.handle(ctx, slice(segs, 5)) end
  end
  return nil
end

local function add_headers(req, status, h)
  local corr = req.headers["x-ms-correlation-request-id"] or h["x-ms-request-id"] or core.crypto.uuid4()
  h["x-ms-correlation-request-id"] = corr
  h["x-ms-routing-request-id"] = "LOCAL:" .. os.date("!%Y%m%dT%H%M%SZ") .. ":" .. corr
  local m = req.method
  local key = (m == "GET" or m == "HEAD") and "x-ms-ratelimit-remaining-subscription-reads"
    or m == "DELETE" and "x-ms-ratelimit-remaining-subscription-deletes"
    or "x-ms-ratelimit-remaining-subscription-writes"
  if h[key] == nil then h[key] = (m == "GET" or m == "HEAD") and "11999" or "1199" end
  h["cache-control"] = "no-cache"
  h["pragma"] = "no-cache"
  h["expires"] = "-1"
  return status, h
end

local function handle(st, req)
  local claims, s, h, b = authenticate(st, req)
  if not claims then return s, h, b end
  local path = req.service_path or req.path or "/"
  local segs = split(path)
  local ctx = setmetatable({ st = st, req = req, claims = claims, tid = claims.tid, oid = (claims.oid or ""):lower(),
    client_name = claims.upn or claims.unique_name or claims.appid or claims.azp or claims.oid or "",
    origin = context.origin(req), providers = PROVIDERS }, context.Ctx)
  if segs[1] and segs[1]:lower() == "subscriptions" and segs[2] then
    ctx.sub = segs[2]:lower()
    local sub_tid = st:tenant_of_subscription(ctx.sub)
    if not sub_tid then
      return ctx:error(404, "SubscriptionNotFound", "The subscription '" .. segs[2] .. "' could not be found.")
    end
    if sub_tid ~= claims.tid then return tenant_mismatch(req, claims.tid, sub_tid) end
    ctx.tenant = st.tenants[sub_tid]
  end
  local v = req.args and req.args["api-version"]
  if v == nil or v == "" then
    return ctx:error(400, "MissingApiVersionParameter",
      "The api-version query parameter (?api-version=) is required for all requests.")
  end
  ctx.api_version = v
  local rs, rh, rb = dispatch(ctx, segs)
  if rs then return rs, rh, rb end
  return ctx:error(404, "NotFound",
    "The requested resource '" .. path .. "' is not supported by the emulator (" .. req.method .. ").")
end

function M.handle(st, req)
  local status, h, body = handle(st, req)
  add_headers(req, status, h)
  return status, h, body
end

return M
