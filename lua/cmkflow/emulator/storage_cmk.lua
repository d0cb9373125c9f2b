-- The Storage resource provider's customer-managed-key check, done server-side as Azure Storage
-- does it (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-configure-cross-tenant-new-account,
-- https://learn.microsoft.com/azure/storage/common/customer-managed-keys-overview) when a storage account is created or
-- updated with keySource = Microsoft.Keyvault:
--   1. the encryption identity (a user-assigned identity) must be attached to the account;
--   2. a managed-identity token of that identity for api://AzureADTokenExchange (ISV tenant);
--   3. exchanged at the vault's tenant for federatedIdentityClientId, scope https://vault.azure.net/.default
--      (same-tenant CMK without federatedIdentityClientId: the identity's own Key Vault token);
--   4. GET key, wrapKey and unwrapKey with that token's identity, through the same authorization
--      function the Key Vault data plane uses; type, size, enabled and recoverability checked.
--
--   check(st, ctx) -> result | nil, err
--     ctx = { tenant = ISV tenant record, account = ARM body (request merged with existing),
--             resource_id = the account's ARM id }
--     result = {} when keySource is not Microsoft.Keyvault (nothing to do), else
--              { currentVersionedKeyIdentifier, lastKeyRotationTimestamp, currentVersionedKeyExpirationTimestamp? }
--              for ARM to write into properties.encryption.keyvaultproperties
--     err = { status = 400, code, message } (an ARM error for the PUT/PATCH)
--   refresh(st, account_body, internal) -> changed (bool): a versionless key follows the key's newest
--     version, at most once per st.knobs.key_version_check_s (default 86400 s) of the emulator's clock.
local core = require "cmkflow.core"
local clouds = require "cmkflow.util.clouds"
local keyvault = require "cmkflow.emulator.keyvault_store"
local keyvault_auth = require "cmkflow.emulator.keyvault_auth"
local entra = require "cmkflow.emulator.entra_grant"

local crypto = core.crypto

local M = {}

-- The token-exchange audience and the Key Vault resource of a tenant's cloud.
local function exchange_resource(tenant) return clouds.CLOUDS[tenant and tenant.cloud or "azure"].token_exchange_audience end
local function vault_resource(tenant) return clouds.resource(tenant and tenant.cloud or "azure", "kv") end

local SIZES = { [2048] = true, [3072] = true, [4096] = true }

local function fail(code, message) return nil, { status = 400, code = code, message = message } end

local function lower(s) return type(s) == "string" and s:lower() or "" end

-- "https://kv.vault.azure.net/" -> "https://kv.vault.azure.net", "kv" (nil when not a vault URI).
local function parse_vault_uri(uri)
  if type(uri) ~= "string" then return nil end
  local base = uri:gsub("/+$", ""):gsub(":443$", "")
  local name = base:match("^https://([%w%-]+)%.vault%.[%w%.%-]+:?%d*$")
  if not name then return nil end
  return base, name:lower()
end

local function find_identity(st, resource_id)
  local want = lower(resource_id)
  -- the identity resource names its principal: one lookup; a scan only when that finds nothing
  local rec = st.resources[want]
  local pid = rec and type(rec.body) == "table" and type(rec.body.properties) == "table" and rec.body.properties.principalId
  local ident = pid and st.identities[pid]
  if ident and lower(ident.resource_id) == want then return ident end
  for _, ident in pairs(st.identities or {}) do
    if lower(ident.resource_id) == want then return ident end
  end
end

local function attached(account, resource_id)
  local ident = account.identity
  if type(ident) ~= "table" or not lower(ident.type):find("userassigned", 1, true) then return false end
  local want = lower(resource_id)
  for id in pairs(type(ident.userAssignedIdentities) == "table" and ident.userAssignedIdentities or {}) do
    if lower(id) == want then return true end
  end
  return false
end

local function access_forbidden(kid, uami, fic, claims, detail)
  local who = "user-assigned identity '" .. uami .. "'"
  if fic then
    who = who .. " (federated application '" .. fic .. "', service principal '" .. tostring(claims.oid) ..
      "' in tenant '" .. tostring(claims.tid) .. "')"
  end
  return fail("KeyVaultAccessForbidden", "Unable to access key vault resource '" .. kid .. "' to enable encryption at " ..
    "rest. Please grant get, wrap and unwrap key permissions to " .. who .. ". Key Vault answered: " .. detail)
end

-- Obtains the Key Vault token claims Storage would use. Returns claims or nil, err.
local function vault_claims(st, identity, uami, fic, vault_tenant)
  if fic then
    local mi, e = entra.managed_identity_token(st, identity, exchange_resource(st.tenants[identity.tenant or ""]))
    if not mi then
      return fail("KeyVaultAccessTokenCannotBeAcquired", "The user-assigned identity '" .. uami .. "' cannot obtain a " ..
        "token from Microsoft Entra ID: AADSTS" .. tostring(e and e.aadsts) .. ": " .. tostring(e and e.text))
    end
    local token, claims_or_err = entra.exchange(st, vault_tenant, fic, mi,
      vault_resource(st.tenants[vault_tenant]) .. "/.default")
    if not token then
      local e2 = claims_or_err or {}
      return fail("KeyVaultAuthenticationFailure", "Gateway authentication failed for 'Microsoft.Storage'. " ..
        "Exchanging the federated credential of user-assigned identity '" .. uami .. "' for application '" .. fic ..
        "' in tenant '" .. vault_tenant .. "' failed: " .. tostring(e2.error) .. ": AADSTS" .. tostring(e2.aadsts) ..
        ": " .. tostring(e2.text))
    end
    return claims_or_err
  end
  local token, claims = entra.managed_identity_token(st, identity, vault_resource(st.tenants[identity.tenant or ""]))
  if not token then
    local e = claims or {}
    return fail("KeyVaultAccessTokenCannotBeAcquired", "The user-assigned identity '" .. uami .. "' cannot obtain a " ..
      "Key Vault token: AADSTS" .. tostring(e.aadsts) .. ": " .. tostring(e.text))
  end
  if lower(identity.tenant) ~= vault_tenant then
    return fail("KeyVaultAuthenticationFailure", "Gateway authentication failed for 'Microsoft.Storage'. The key " ..
      "vault belongs to tenant '" .. vault_tenant .. "' but user-assigned identity '" .. uami .. "' to tenant '" ..
      tostring(identity.tenant) .. "': a cross-tenant key needs encryption.identity.federatedIdentityClientId " ..
      "(AKV10032: Invalid issuer).")
  end
  return claims
end

function M.check(st, ctx)
  local account = ctx.account or {}
  local p = type(account.properties) == "table" and account.properties or {}
  local enc = type(p.encryption) == "table" and p.encryption or nil
  if not enc or lower(enc.keySource) ~= "microsoft.keyvault" then return {} end
  local kvp = enc.keyvaultproperties
  if type(kvp) ~= "table" or type(kvp.keyvaulturi) ~= "string" or kvp.keyvaulturi == ""
     or type(kvp.keyname) ~= "string" or kvp.keyname == "" then
    return fail("MissingKeyvaultProperties", "The encryption keyvault properties are missing from the request.")
  end
  local eid = type(enc.identity) == "table" and enc.identity or {}
  local uami = eid.userAssignedIdentity
  if type(uami) ~= "string" or uami == "" then
    return fail("MissingPrerequisites", "Missing pre-requisites to enable EncryptionAtRest/Customer Managed Key for " ..
      "this storage account. For more information, see - https://aka.ms/storagecmkconfiguration")
  end
  if not attached(account, uami) then
    return fail("InvalidValuesForRequestParameters", "Values for request parameters are invalid: properties.encryption.identity.")
  end
  local identity = find_identity(st, uami)
  if not identity then
    return fail("FailedIdentityOperation", "Identity operation for resource '" .. tostring(ctx.resource_id) ..
      "' failed: the user-assigned identity '" .. uami .. "' was not found.")
  end
  local fic = eid.federatedIdentityClientId
  if fic == "" then fic = nil end
  if fic ~= nil and (type(fic) ~= "string" or not crypto.is_guid(fic)) then
    return fail("KeyVaultAuthenticationFailure", "Gateway authentication failed for 'Microsoft.Storage'. " ..
      "federatedIdentityClientId '" .. tostring(fic) .. "' is not an application (client) id.")
  end
  local base, vname = parse_vault_uri(kvp.keyvaulturi)
  local vault = vname and st:vault(vname)
  if not vault or not keyvault.dns_ready(st, vault) then
    return fail("KeyVaultVaultNotFound", "The key vault is not found for encryption. ('" .. tostring(kvp.keyvaulturi) .. "')")
  end
  local vault_tenant = keyvault.vault_tenant(vault)

  local claims, err = vault_claims(st, identity, uami, fic, vault_tenant)
  if not claims then return nil, err end

  local name, version = kvp.keyname, kvp.keyversion
  if version == "" then version = nil end
  local key_uri = base .. "/keys/" .. name .. (version and ("/" .. version) or "")
  local ok, _, _, message, inner = keyvault_auth.authorize(st, vault, claims, "get", name)
  if not ok then return access_forbidden(key_uri, uami, fic, claims, inner .. ": " .. message) end
  local rec, ver = keyvault.lookup(st, vault, name, version)
  if not rec then
    if ver == "deleted" then
      return fail("KeyVaultEncryptionKeyNotFound", "The key vault key is not found to unwrap the encryption key. " ..
        "The key '" .. key_uri .. "' is in a deleted but recoverable state.")
    end
    return fail("KeyVaultEncryptionKeyNotFound", "The key vault key is not found to unwrap the encryption key. " ..
      "('" .. key_uri .. "' does not exist)")
  end
  local kid = keyvault.kid(base, rec, ver)
  if not ver.enabled then
    return fail("KeyVaultKeyDisabled", "The key vault key '" .. kid .. "' is disabled: Operation get is not allowed on a disabled key.")
  end
  local outside = keyvault.outside_window(ver, st:now())
  if outside then
    return fail(outside == "expired" and "KeyVaultKeyExpired" or "KeyVaultKeyNotYetValid", "The key vault key '" ..
      kid .. "' " .. (outside == "expired" and "has expired" or "is not yet valid") ..
      ": Operation wrapKey is not allowed outside the key's activation and expiration dates.")
  end
  if (ver.kty ~= "RSA" and ver.kty ~= "RSA-HSM") or not SIZES[ver.key_size or 0] then
    return fail("KeyVaultKeyTypeNotSupported", "The key vault key '" .. kid .. "' is " .. tostring(ver.kty) ..
      (ver.key_size and (" " .. ver.key_size) or "") .. ": Azure Storage encryption supports only RSA and RSA-HSM " ..
      "keys of size 2048, 3072 or 4096.")
  end
  if keyvault.recovery_level(vault):find("Purgeable", 1, true) then
    return fail("KeyVaultPolicyError", "Keyvault policy recoverable is not set")
  end
  -- wrap and unwrap a fresh account key, as Storage does with the root key
  for _, op in ipairs { "wrapKey", "unwrapKey" } do
    local allowed, _, _, msg, code = keyvault_auth.authorize(st, vault, claims, op, name)
    if not allowed then return access_forbidden(kid, uami, fic, claims, code .. ": " .. msg) end
    local permitted = false
    for _, o in ipairs(ver.key_ops or {}) do if o == op then permitted = true end end
    if not permitted then
      return access_forbidden(kid, uami, fic, claims, "KeyOperationForbidden: Operation " .. op ..
        " is not permitted on this key.")
    end
  end
  local secret = crypto.random_bytes(32)
  local wrapped, werr = keyvault.wrap(ver, "RSA-OAEP-256", secret)
  local unwrapped = wrapped and keyvault.unwrap(ver, "RSA-OAEP-256", wrapped)
  if unwrapped ~= secret then
    return fail("KeyVaultAccessForbidden", "Unable to wrap the account key with '" .. kid .. "': " .. tostring(werr))
  end

  local result = { currentVersionedKeyIdentifier = kid, lastKeyRotationTimestamp = st:iso() }
  if kvp.currentVersionedKeyIdentifier == kid and type(kvp.lastKeyRotationTimestamp) == "string" then
    result.lastKeyRotationTimestamp = kvp.lastKeyRotationTimestamp
  end
  if ver.exp then result.currentVersionedKeyExpirationTimestamp = st:iso(ver.exp) end
  return result
end

-- Storage's daily version check for automatic key version tracking (keyversion empty): once a day
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-overview#update-the-key-version)
-- it points currentVersionedKeyIdentifier at the key's newest version and stamps
-- lastKeyRotationTimestamp when it changed. The day runs on the emulator's clock (POST
-- /_emulator/clock advances it) from the account's creation or its last check (internal, the
-- account record's own table). Mutates account_body; returns true when it changed something.
M.KEY_VERSION_CHECK_S = 86400
function M.refresh(st, account_body, internal)
  if internal then
    local every = tonumber(st.knobs.key_version_check_s) or M.KEY_VERSION_CHECK_S
    local last = internal.key_checked_at or internal.started
    if not last then internal.key_checked_at = st:now() return false end -- the first day starts now
    if st:now() - last < every then return false end
    internal.key_checked_at = st:now()
  end
  local p = type(account_body) == "table" and account_body.properties
  local enc = type(p) == "table" and p.encryption
  if type(enc) ~= "table" or lower(enc.keySource) ~= "microsoft.keyvault" then return false end
  local kvp = enc.keyvaultproperties
  if type(kvp) ~= "table" or (kvp.keyversion ~= nil and kvp.keyversion ~= "") then return false end
  local base, vname = parse_vault_uri(kvp.keyvaulturi)
  local vault = vname and st:vault(vname)
  if not vault or type(kvp.keyname) ~= "string" then return false end
  local rec, ver = keyvault.lookup(st, vault, kvp.keyname)
  if not rec then return false end
  local kid = keyvault.kid(base, rec, ver)
  if kvp.currentVersionedKeyIdentifier == kid then return false end
  kvp.currentVersionedKeyIdentifier = kid
  kvp.lastKeyRotationTimestamp = st:iso()
  return true
end

return M
