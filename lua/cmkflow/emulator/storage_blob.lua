-- The Blob service's data plane, as far as a caller needs it to see whether an account can use its
-- customer-managed key: List Blobs (https://learn.microsoft.com/rest/api/storageservices/list-blobs)
-- on `{account}.blob.{storage suffix}`, with Microsoft Entra authorization
-- (https://learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory).
--
-- What it checks, in Azure's order:
--   1. x-ms-version: OAuth needs 2017-11-09 or later;
--   2. the bearer token (issuer, audience https://storage.azure.com, expiry) and its tenant: the
--      account's (InvalidAuthenticationInfo, 401, with the authorization URI to use);
--   3. the data action Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read at the
--      container (Storage Blob Data Reader or above; AuthorizationPermissionMismatch, 403);
--   4. the container exists (ContainerNotFound, 404);
--   5. with include=metadata on an account encrypted with a customer-managed key, the key is usable:
--      Storage's key check (storage_cmk.lua) runs now, and a key the account cannot reach answers
--      403 with KeyVaultEncryptionKeyNotFound, KeyVaultAccessTokenCannotBeAcquired or
--      KeyVaultVaultNotFound, as "Revoke access to a customer-managed key" lists for List Blobs with
--      include=metadata (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-overview#revoke-access-to-a-key-vault-or-key);
--      an expired key still unwraps (Azure refuses only new wraps).
-- Errors are Storage's XML envelope with x-ms-error-code
-- (https://learn.microsoft.com/rest/api/storageservices/status-and-error-codes2). Other operations
-- answer 501: the emulator models only this one (docs/emulator.md, deviations).
--   storage_blob.handle(st, req) -> status, headers, body   (req.account: the account name)
local core = require "cmkflow.core"
local tokens = require "cmkflow.emulator.tokens"
local rbac = require "cmkflow.emulator.rbac"
local storage_cmk = require "cmkflow.emulator.storage_cmk"
local arm_storage = require "cmkflow.emulator.arm_storage"

local M = {}

local READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
local OAUTH_MIN_VERSION = "2017-11-09"

-- The data-plane code for a failed key check (storage_cmk's codes are the management plane's).
local DATA_CODE = {
  KeyVaultVaultNotFound = "KeyVaultVaultNotFound",
  KeyVaultAccessTokenCannotBeAcquired = "KeyVaultAccessTokenCannotBeAcquired",
  KeyVaultAuthenticationFailure = "KeyVaultAccessTokenCannotBeAcquired",
}
local DATA_MESSAGE = {
  KeyVaultVaultNotFound = "The key vault is not found for encryption.",
  KeyVaultAccessTokenCannotBeAcquired = "The Key Vault access token cannot be acquired for the identity of the account.",
  KeyVaultEncryptionKeyNotFound = "The key vault key is not found to unwrap the encryption key.",
}
local USABLE = { KeyVaultKeyExpired = true, KeyVaultKeyNotYetValid = true }

local function xml_escape(s)
  return (tostring(s):gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }))
end

local function headers(req, extra)
  local h = { ["content-type"] = "application/xml", ["x-ms-request-id"] = core.crypto.uuid4(),
    ["x-ms-version"] = req.headers["x-ms-version"] or OAUTH_MIN_VERSION }
  if req.headers["x-ms-client-request-id"] then h["x-ms-client-request-id"] = req.headers["x-ms-client-request-id"] end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

local function fail(st, req, status, code, message, extra)
  local h = headers(req, extra)
  h["x-ms-error-code"] = code
  return status, h, ('<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code><Message>%s\nRequestId:%s\nTime:%s'
    .. '</Message></Error>'):format(code, xml_escape(message), h["x-ms-request-id"], st:iso())
end

local function query_of(req)
  local q = {}
  for k, v in (req.query or ""):gmatch("([^&=]+)=?([^&]*)") do q[k:lower()] = v end
  return q
end

local function unauthenticated(st, req, tenant_id, message)
  return fail(st, req, 401, "InvalidAuthenticationInfo", message, { ["www-authenticate"] =
    ("Bearer authorization_uri=https://login.microsoftonline.com/%s/oauth2/authorize resource_id=https://storage.azure.com")
      :format(tenant_id or "common") })
end

function M.handle(st, req)
  local account = arm_storage.find_by_name(st, req.account or "")
  if not account or account.internal.pending then
    -- Azure: the host does not resolve; the emulator answers as close as HTTP lets it
    return fail(st, req, 404, "ResourceNotFound", "The specified resource does not exist.")
  end
  local q = query_of(req)
  local container = (req.service_path or "/"):match("^/([^/?]+)$")
  if req.method ~= "GET" or not container or q.restype ~= "container" or q.comp ~= "list" then
    return fail(st, req, 501, "NotImplemented", "The emulator's Blob service answers List Blobs only.")
  end
  local version = req.headers["x-ms-version"]
  if not version or version < OAUTH_MIN_VERSION then
    return fail(st, req, 403, "AuthenticationFailed", "Authentication scheme Bearer is not supported in this version.")
  end
  local claims, reason, detail = tokens.verify(st, req, "storage")
  if not claims then
    if reason == "missing" then
      return unauthenticated(st, req, account.tenant, "Server failed to authenticate the request. Please refer to the "
        .. "information in the www-authenticate header.")
    end
    return unauthenticated(st, req, account.tenant, "Server failed to authenticate the request. " .. tostring(detail))
  end
  if claims.tid ~= account.tenant then
    return unauthenticated(st, req, account.tenant, "Issuer validation failed. Issuer did not match.")
  end
  local scope = account.id .. "/blobServices/default/containers/" .. container
  if not rbac.check(st, claims.tid, claims.oid, scope, READ, true) then
    return fail(st, req, 403, "AuthorizationPermissionMismatch",
      "This request is not authorized to perform this operation using this permission.")
  end
  if not st.resources[scope:lower()] then
    return fail(st, req, 404, "ContainerNotFound", "The specified container does not exist.")
  end
  local enc = account.body.properties and account.body.properties.encryption
  local include = "," .. (q.include or ""):lower() .. ","
  if include:find(",metadata,", 1, true) and type(enc) == "table" and (enc.keySource or ""):lower() == "microsoft.keyvault" then
    local _, err = storage_cmk.check(st, { tenant = st:tenant(account.tenant), account = account.body,
      resource_id = account.id })
    if err and not USABLE[err.code] then
      local code = DATA_CODE[err.code] or "KeyVaultEncryptionKeyNotFound"
      return fail(st, req, 403, code, DATA_MESSAGE[code])
    end
  end
  local endpoint = "https://" .. (req.host or (req.account .. ".blob.core.windows.net")) .. "/"
  return 200, headers(req), ('<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="%s" '
    .. 'ContainerName="%s"><Blobs /><NextMarker /></EnumerationResults>'):format(xml_escape(endpoint), xml_escape(container))
end

return M
