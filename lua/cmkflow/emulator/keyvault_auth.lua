-- The emulated Key Vault's authentication and authorization, and its response envelope: the 401
-- challenge (Bearer authorization/resource, as clients discover the tenant), token checks with
-- Key Vault's AKV error texts, RBAC data actions or access policies per key operation, and the
-- headers and error body every data-plane answer carries.
-- https://learn.microsoft.com/azure/key-vault/general/authentication
-- https://learn.microsoft.com/azure/key-vault/general/rbac-guide
--   M.authorize(st, vault, claims, op, key_name) -> true | nil, status, code, message, inner
--   M.authenticate(st, req, vault) -> claims | nil, status, headers, body
local core = require "cmkflow.core"
local respond = require "cmkflow.emulator.respond"
local rbac = require "cmkflow.emulator.rbac"
local tokens = require "cmkflow.emulator.tokens"
local clouds = require "cmkflow.util.clouds"
local store = require "cmkflow.emulator.keyvault_store"

local props = store.props

local M = {}

M.SERVICE_VERSION = "1.9.2005.1"
M.RESOURCE = "https://vault.azure.net"

-- Microsoft first-party tenants that Key Vault also lists as accepted issuers in AKV10032.
local FIRST_PARTY_ISSUERS = {
  "https://sts.windows.net/f8cdef31-a31e-4b4a-93e4-5f571e91255a/",
  "https://sts.windows.net/e2d54eb5-3869-4f70-8578-dee5fc7331f4/",
  "https://sts.windows.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/",
  "https://sts.windows.net/975f013f-7f24-47e8-a7d3-abc4752bf346/",
}

-- op -> RBAC data action and access-policy key permission.
local OPS = {
  get = { "Microsoft.KeyVault/vaults/keys/read", "get" },
  list = { "Microsoft.KeyVault/vaults/keys/read", "list" },
  create = { "Microsoft.KeyVault/vaults/keys/create/action", "create" },
  update = { "Microsoft.KeyVault/vaults/keys/update/action", "update" },
  delete = { "Microsoft.KeyVault/vaults/keys/delete", "delete" },
  getdeleted = { "Microsoft.KeyVault/vaults/keys/read", "get" },
  recover = { "Microsoft.KeyVault/vaults/keys/recover/action", "recover" },
  purge = { "Microsoft.KeyVault/vaults/keys/purge/action", "purge" },
  rotate = { "Microsoft.KeyVault/vaults/keys/rotate/action", "rotate" },
  wrapKey = { "Microsoft.KeyVault/vaults/keys/wrap/action", "wrapKey" },
  unwrapKey = { "Microsoft.KeyVault/vaults/keys/unwrap/action", "unwrapKey" },
}
M.OPS = OPS

-- ---- authentication and authorization ---------------------------------------------------------

-- The 401 challenge. On the single-origin layout ({vault}.vault.localhost:PORT) it names the
-- emulator's own Entra origin and https://vault.localhost:PORT, which Python's KeyClient requires
-- (the resource must be a parent domain of the vault host, port included).
local function challenge(vault, req)
  local host, port = req and req.host or "", req and math.tointeger(req.port)
  if host:match("^[%w%-]+%.vault%.localhost$") and port then
    local p = port == 443 and "" or (":" .. port)
    return ('Bearer authorization="https://127.0.0.1%s/%s", resource="https://vault.localhost%s"'):format(
      p, store.vault_tenant(vault), p)
  end
  local cloud = clouds.of_host(host)
  if cloud and cloud ~= "azure" then -- a sovereign cloud's login host and Key Vault resource
    return ('Bearer authorization="https://%s/%s", resource="%s"'):format(clouds.CLOUDS[cloud].login,
      store.vault_tenant(vault), clouds.resource(cloud, "kv"))
  end
  return ('Bearer authorization="https://login.windows.net/%s", resource="%s"'):format(store.vault_tenant(vault), M.RESOURCE)
end

local function common_headers(vault, extra)
  local h = { ["x-ms-keyvault-region"] = store.region(vault), ["x-ms-keyvault-service-version"] = M.SERVICE_VERSION,
              ["x-ms-keyvault-network-info"] = "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;",
              expires = "-1", pragma = "no-cache" }
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

local function kv_error(req, vault, status, code, message, inner)
  local h = common_headers(vault)
  if status == 401 then h["www-authenticate"] = challenge(vault, req) end
  return respond.kv_error(req, status, code, message, inner, h)
end

local function ok(req, vault, status, value)
  return respond.json(req, status, value, common_headers(vault))
end

local function caller(claims)
  return ("appid=%s;oid=%s;iss=%s"):format(tostring(claims.appid or claims.azp), tostring(claims.oid),
    tokens.issuer_v1(tostring(claims.tid)))
end

-- May the token's principal do op on the key (or the vault when key_name is nil)?
-- Returns true, or nil, status, code, message, innercode (Key Vault's 403 texts).
function M.authorize(st, vault, claims, op, key_name)
  local o = assert(OPS[op], "unknown key operation")
  local p = props(vault)
  local oid = (claims.oid or ""):lower()
  if p.enableRbacAuthorization == true then
    local scope = vault.id .. (key_name and ("/keys/" .. key_name) or "")
    if rbac.check(st, vault.tenant or store.vault_tenant(vault), oid, scope, o[1], true) then return true end
    return nil, 403, "Forbidden", "Caller is not authorized to perform action on resource.\r\n" ..
      "If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n" ..
      "Caller: " .. caller(claims) .. "\r\nAction: '" .. o[1] .. "'\r\nResource: '" .. scope:lower() .. "'\r\n" ..
      "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\n" ..
      "Vault: " .. store.vault_name(vault) .. ";location=" .. store.region(vault) .. "\r\n", "ForbiddenByRbac"
  end
  local tid = store.vault_tenant(vault)
  for _, ap in ipairs(p.accessPolicies or {}) do
    if type(ap) == "table" and (ap.objectId or ""):lower() == oid and (ap.tenantId or ""):lower() == tid then
      local perms = ap.permissions and ap.permissions.keys or {}
      for _, perm in ipairs(perms) do
        local lp = tostring(perm):lower()
        if lp == o[2]:lower() or lp == "all" then return true end
      end
    end
  end
  return nil, 403, "Forbidden", ("The user, group or application '%s' does not have keys %s permission on key vault '%s;location=%s'. " ..
    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"):format(
      caller(claims), o[2], store.vault_name(vault), store.region(vault)), "AccessDenied"
end

-- Verifies the bearer token for this vault. Returns claims or the 401 response triple.
function M.authenticate(st, req, vault)
  local claims, reason, message = tokens.verify(st, req, "kv")
  if claims and claims.tid:lower() ~= store.vault_tenant(vault) then reason = "tenant" end
  if not reason then return claims end
  if reason == "missing" then
    return nil, kv_error(req, vault, 401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
  end
  local token = (req.headers.authorization or ""):match("^[Bb]earer%s+(%S+)$")
  local _, payload = nil, nil
  if token then _, payload = core.jose.decode(token) end
  payload = type(payload) == "table" and payload or {}
  if reason == "audience" then
    return nil, kv_error(req, vault, 401, "Unauthorized",
      "AKV10022: Invalid audience. Expected " .. M.RESOURCE .. ", found: " .. tostring(payload.aud) .. ".")
  elseif reason == "tenant" or reason == "issuer" then
    local vt = st.tenants[store.vault_tenant(vault)]
    local expected = { tokens.issuer_v1(store.vault_tenant(vault), vt and vt.cloud) }
    for _, i in ipairs(FIRST_PARTY_ISSUERS) do expected[#expected + 1] = i end
    return nil, kv_error(req, vault, 401, "Unauthorized", "AKV10032: Invalid issuer. Expected one of " ..
      table.concat(expected, ", ") .. ", found " .. tostring(payload.iss) .. ".")
  elseif reason == "expired" then
    return nil, kv_error(req, vault, 401, "Unauthorized", "[TokenExpired] Error validating token: 'S2S12086'.")
  elseif reason == "signature" then
    return nil, kv_error(req, vault, 401, "Unauthorized", "AKV10046: Unable to resolve the key used for signature validation.")
  end
  return nil, kv_error(req, vault, 401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token. (" .. message .. ")")
end


M.common_headers, M.kv_error, M.ok = common_headers, kv_error, ok

return M
