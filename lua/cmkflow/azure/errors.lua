-- Error tables from Azure responses (ARM, Graph, Key Vault, Entra ID) and operator hints.
--
--   local errors = require "cmkflow.azure.errors"
--   local err = errors.from_response(resp, {tenant = T, target = url})
--     -> {code, message, status, target, request_id, retryable, tenant,
--         details?, inner_code?, detail_code?, challenge_tenant?, oauth_error?, error_codes?,
--         field?}  (core error metatable; decided from fields only, never from message text)
--   errors.new{code=, message=, ...}      -- the same metatable for locally detected failures
--   errors.explain(err) -> hint text | nil
--   errors.body_json(resp) -> decoded body | nil
local core = require "cmkflow.core"

local ipairs, pairs, pcall, tonumber, tostring, type = ipairs, pairs, pcall, tonumber, tostring, type
local sort = table.sort

local M = {}

local function new_error(t)
  return core.error.new(t)
end
M.new = new_error

-- The decoded JSON body of a response: resp.json when the layer below decoded it, otherwise a
-- decode of the body when it looks like JSON. Never raises.
function M.body_json(resp)
  if type(resp) ~= "table" then return nil end
  local ok, doc = pcall(function() return resp.json end)
  if ok and doc ~= nil then return doc end
  local body = resp.body
  if type(body) ~= "string" or not body:match("^%s*[{%[]") then return nil end
  local dok, decoded = pcall(core.json.decode, body)
  if dok then return decoded end
  return nil
end

function M.retryable_status(status)
  return status == 408 or status == 429 or (type(status) == "number" and status >= 500)
end

local function header(resp, name)
  local h = type(resp) == "table" and resp.headers
  if type(h) ~= "table" then return nil end
  local v = h[name]
  if type(v) == "table" then v = v[1] end
  return v
end
M.header = header

local function str(v)
  if type(v) == "string" and v ~= "" then return v end
  if type(v) == "number" then return tostring(v) end
  return nil
end

local function excerpt(body)
  if type(body) ~= "string" or body == "" then return "(empty body)" end
  local s = body:gsub("%s+", " "):gsub("^ ", "")
  s = s:gsub("[%c]", "?")
  if #s > 200 then s = s:sub(1, 197) .. "..." end
  return s
end

-- Entra's error_description: keep the first line ("AADSTS700016: Application with ... .")
local function first_line(s)
  if type(s) ~= "string" then return nil end
  local line = s:match("^([^\r\n]*)")
  return line
end

-- Failures of the caller's own credential (exit 4, docs/exit-codes.md).
local AUTH_CODES = { NoCredential = true, AuthenticationFailed = true, InvalidAuthenticationToken = true,
                     InvalidAuthenticationTokenTenant = true, AssertionCallbackFailed = true }
M.AUTH_CODES = AUTH_CODES

function M.from_response(resp, ctx)
  ctx = ctx or {}
  local status = type(resp) == "table" and tonumber(resp.status) or 0
  local e = {
    status = status,
    tenant = ctx.tenant,
    target = ctx.target,
    retryable = M.retryable_status(status),
    request_id = header(resp, "x-ms-request-id") or header(resp, "request-id")
                 or (type(resp) == "table" and resp.request_id) or nil,
  }
  local doc = M.body_json(resp)
  local env = type(doc) == "table" and doc.error
  if type(env) == "table" then
    -- ARM / Graph / Key Vault: {"error":{code, message, target?, details?, innererror|innerError?}}
    e.code = str(env.code)
    e.message = str(env.message)
    if str(env.target) then
      if e.target then e.field = env.target else e.target = env.target end
    end
    if type(env.details) == "table" and #env.details > 0 then
      e.details = env.details
    end
    local inner = env.innererror or env.innerError
    if type(inner) == "table" then
      e.inner_code = str(inner.code)
      e.request_id = e.request_id or str(inner["request-id"])
      e.client_request_id = str(inner["client-request-id"])
    end
    -- Graph puts the precise reason in details (NoBackingApplicationObject)
    if e.details and type(e.details[1]) == "table" and str(e.details[1].code) then
      e.detail_code = e.details[1].code
    end
  elseif type(doc) == "table" and type(env) == "string" then
    -- Entra ID: {error, error_description, error_codes, trace_id, correlation_id}
    e.oauth_error = env
    local codes = doc.error_codes
    if type(codes) == "table" and tonumber(codes[1]) then
      e.error_codes = codes
      e.code = "AADSTS" .. ("%d"):format(tonumber(codes[1]))
    else
      local aad = type(doc.error_description) == "string" and doc.error_description:match("^(AADSTS%d+)")
      e.code = aad or env
    end
    e.message = first_line(doc.error_description) or env
    e.request_id = e.request_id or str(doc.trace_id)
    e.correlation_id = str(doc.correlation_id)
  end
  if not e.code then
    e.code = "HttpError" .. tostring(status)
    if not e.message then
      e.message = "HTTP " .. tostring(status) .. (ctx.target and (" from " .. ctx.target) or "") ..
                  ": " .. excerpt(type(resp) == "table" and resp.body)
    end
  end
  e.message = e.message or ("HTTP " .. tostring(status))
  -- a 401's Bearer challenge names the tenant the service takes tokens from (Key Vault:
  -- https://learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses);
  -- the AKVnnnnn in Key Vault's message is for people and is never parsed
  local challenge = status == 401 and header(resp, "www-authenticate")
  if challenge then
    -- quoted (Key Vault) or not (Storage: authorization_uri=https://login.../TENANT/oauth2/authorize)
    local authority = challenge:match('authorization="?([^"%s,]+)') or challenge:match('authorization_uri="?([^"%s,]+)')
    e.challenge_tenant = authority and authority:match("^https://[^/]+/([^/?]+)") or nil
  end
  e.kind = (e.oauth_error or AUTH_CODES[e.code] or status == 401) and "auth" or "remote"
  e.hint = M.explain(e)
  return new_error(e)
end

-- ---- hints -------------------------------------------------------------------------------

local function who(err, fallback)
  if err.tenant then return "tenant " .. err.tenant end
  return fallback or "the tenant that owns the resource"
end

local HINTS = {}

HINTS.InvalidAuthenticationTokenTenant = function(err)
  local msg = err.message or ""
  local want = msg:match("must match the tenant 'https://sts%.windows%.net/([^/']+)/?'")
  local got = msg:match("wrong issuer 'https://sts%.windows%.net/([^/']+)/?'")
  return "the token is for another tenant: the subscription belongs to tenant " .. (want or "(see message)") ..
         (got and (" but the token was issued by tenant " .. got) or "") ..
         "; request the ARM token from tenant " .. (want or "that owns the subscription") ..
         " (use the context/credential of that tenant)"
end

HINTS.AuthorizationFailed = function(err)
  local msg = err.message or ""
  local action = msg:match("perform action '([^']+)'")
  local scope = msg:match("over scope '([^']+)'")
  return "the caller has no Azure role allowing " .. (action or "this action") ..
         (scope and (" on " .. scope) or "") .. "; an Owner or User Access Administrator in " ..
         who(err) .. " must assign one (new role assignments take a few minutes to apply, then retry)"
end

HINTS.PrincipalNotFound = function(err)
  return "the principal is not yet visible in " .. who(err, "the directory of the scope") ..
         ": a service principal or identity created moments ago takes time to replicate; retry with backoff and " ..
         "set principalType (e.g. ServicePrincipal) on the role assignment"
end

HINTS.Request_ResourceNotFound = function(err)
  return "Microsoft Graph cannot see the object in " .. who(err, "this tenant") ..
         ": it does not exist, or it was created moments ago and has not replicated yet (retry with backoff)"
end

HINTS.NoBackingApplicationObject = function(err)
  return "the appId does not name an application that " .. who(err, "this tenant") ..
         " can see: check the appId, make the ISV app multi-tenant (signInAudience AzureADMultipleOrgs), " ..
         "or wait for an app created moments ago to replicate"
end

HINTS.Request_MultipleObjectsWithSameKeyValue = function(err)
  return "the object already exists in " .. who(err, "this tenant") .. "; read it instead of creating it"
end

HINTS.Authorization_RequestDenied = function(err)
  return "the caller lacks Microsoft Graph privileges in " .. who(err) ..
         ": an administrator of that tenant must grant Application.ReadWrite.All (or an admin role)"
end

HINTS.ReplicationTimeout = function(err)
  return "directory replication did not complete in time in " .. who(err, "the tenant") ..
         "; wait a few minutes and run again (the operation is idempotent)"
end

HINTS.ForbiddenByRbac = function(err)
  return "the caller has no Key Vault data-plane role on the key: an Owner or User Access Administrator in " ..
         who(err, "the customer tenant that owns the vault") ..
         " must assign 'Key Vault Crypto Service Encryption User' (wrap/unwrap) or 'Key Vault Crypto Officer' " ..
         "(manage keys) on the vault or key; assignments take minutes to apply"
end

HINTS.AccessDenied = function(err)
  return "the vault uses access policies and the caller has no permission for this key operation: " ..
         who(err, "the customer tenant that owns the vault") .. " must add get/wrapKey/unwrapKey to the caller's policy"
end

HINTS.ForbiddenByFirewall = function(err)
  return "the vault firewall blocks this client: " .. who(err, "the customer tenant that owns the vault") ..
         " must allow the client address or enable 'Allow trusted Microsoft services'"
end

HINTS.KeyDisabled = function(err)
  return "the key (version) is disabled: " .. who(err, "the customer tenant that owns the vault") ..
         " must enable it again, or point the storage account at an enabled version"
end

HINTS.KeyNotFound = function(err)
  return "no such key in the vault: check the key name and version; a recently deleted key can be recovered by " ..
         who(err, "the customer tenant that owns the vault")
end

HINTS.KeyVaultAccessDenied = function(err)
  return "Storage cannot use the key: in " .. who(err, "the customer tenant (T2)") ..
         " the ISV app's service principal needs 'Key Vault Crypto Service Encryption User' on the key or vault, " ..
         "and in the ISV tenant (T1) the app's federated credential must match the storage account's identity"
end
HINTS.KeyVaultAccessForbidden = HINTS.KeyVaultAccessDenied
HINTS.KeyVaultAuthenticationFailure = HINTS.KeyVaultAccessDenied

HINTS.KeyVaultPolicyError = function(err)
  return "the key vault must have soft delete and purge protection enabled: " ..
         who(err, "the customer tenant that owns the vault") .. " must enable purge protection (irreversible)"
end

-- Key Vault's 401 (its message's AKV code says which check failed: AKV10032 a token of another
-- tenant, AKV10022 the wrong audience, AKV10000 no token); the challenge names the vault's tenant
HINTS.Unauthorized = function(err)
  if not err.challenge_tenant then return nil end
  return "Key Vault refused the token (the AKV code in the message names the check): it takes tokens for scope "
    .. "https://vault.azure.net/.default issued by the vault's tenant " .. err.challenge_tenant
end

HINTS.ResourceGroupNotFound = function(err)
  return "the resource group does not exist in this subscription: create it first (in " .. who(err) .. ")"
end

HINTS.SubscriptionNotFound = function(err)
  return "the subscription is not visible to the caller in " .. who(err) ..
         ": check the subscription id and that it belongs to this tenant"
end

HINTS.RoleAssignmentExists = function()
  return "the role assignment already exists (under another name); nothing to do"
end

HINTS.StorageAccountAlreadyTaken = function()
  return "storage account names are global: pick another name"
end

HINTS.VaultAlreadyExists = function()
  return "key vault names are global and include soft-deleted vaults: pick another name or purge the deleted vault"
end

HINTS.OperationTimedOut = function()
  return "the operation did not finish in time; it may still complete: check the resource and run again"
end

HINTS.MissingApiVersionParameter = function()
  return "the request carried no api-version; this is a bug in the caller"
end

HINTS.AADSTS700016 = function(err)
  return "the application is not installed in " .. who(err, "the target tenant") ..
         ": an administrator of that tenant must create its service principal (or the request went to the wrong tenant)"
end

local function fic_hint(err)
  return "no federated identity credential matches the presented assertion: the ISV tenant (T1) must add one on the app " ..
         "with issuer https://login.microsoftonline.com/{T1}/v2.0, subject = the managed identity's principalId (exact case) " ..
         "and audience api://AzureADTokenExchange; a credential created minutes ago may still be replicating"
end
HINTS.AADSTS70021 = fic_hint
HINTS.AADSTS700211 = fic_hint
HINTS.AADSTS700212 = fic_hint
HINTS.AADSTS700213 = fic_hint
HINTS.AADSTS7002138 = fic_hint

HINTS.AADSTS7000215 = function(err)
  return "the client secret is wrong for this app: create a new secret in the app's home tenant and configure it"
end
HINTS.AADSTS7000222 = function()
  return "the client secret has expired: create a new secret in the app's home tenant and configure it"
end
HINTS.AADSTS90002 = function(err)
  return "the tenant " .. (err.tenant or "") .. " does not exist: check the tenant id or domain"
end
HINTS.AADSTS700229 = function()
  return "only app-only tokens (a managed identity or service principal) can be used as federated assertions"
end

-- Picks the most specific code an error carries: Graph's detail code, the inner code, then the
-- code itself.
function M.explain(err)
  if type(err) ~= "table" then return nil end
  local candidates = {}
  if err.detail_code then candidates[#candidates + 1] = err.detail_code end
  if err.inner_code then candidates[#candidates + 1] = err.inner_code end
  if err.code then candidates[#candidates + 1] = err.code end
  for _, code in ipairs(candidates) do
    local hint = HINTS[code]
    if hint then return hint(err) end
  end
  return nil
end

-- Codes with a hint, for documentation and tests.
function M.known_codes()
  local codes = {}
  for code in pairs(HINTS) do codes[#codes + 1] = code end
  sort(codes)
  return codes
end

return M
