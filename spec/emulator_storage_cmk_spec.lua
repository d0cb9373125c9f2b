-- The Storage cross-tenant key check (storage_cmk.check), in-process: the whole chain (ISV app with a
-- federated credential for the UAMI, the app's service principal in the customer tenant, a vault
-- with purge protection, an RSA key and a role assignment) succeeds; each broken link fails with
-- its own error; a versionless key follows new versions (refresh).
local core = require "cmkflow.core"
local emulator = require "cmkflow.emulator"
local kv = require "cmkflow.emulator.keyvault_store"
local rbac = require "cmkflow.emulator.rbac"
local cmk = require "cmkflow.emulator.storage_cmk"

local ISSUER_FMT = "https://login.microsoftonline.com/%s/v2.0"

local function chain()
  local st = emulator.new_state {}
  local isv, cust = st:tenant("isv"), st:tenant("customer")
  local isv_sub, cust_sub = next(isv.subscriptions), next(cust.subscriptions)
  local app = st:add_application(isv, { displayName = "isv-cmk", signInAudience = "AzureADMultipleOrgs" })
  st:add_service_principal(isv, { appId = app.appId, displayName = "isv-cmk", appOwnerOrganizationId = isv.id })
  local uami_id = "/subscriptions/" .. isv_sub .. "/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami1"
  local uami = { principalId = st:id("uami-principal"), clientId = st:id("uami-client"), tenant = isv.id, resource_id = uami_id }
  st.identities[uami.principalId] = uami
  local fic = st:add_federated_credential(app, { name = "cmk", issuer = ISSUER_FMT:format(isv.id), subject = uami.principalId,
    audiences = { "api://AzureADTokenExchange" } })
  local sp = st:add_service_principal(cust, { appId = app.appId, displayName = "isv-cmk", appOwnerOrganizationId = isv.id })
  local function add_vault(name, properties)
    local id = "/subscriptions/" .. cust_sub .. "/resourceGroups/rg2/providers/Microsoft.KeyVault/vaults/" .. name
    local p = { tenantId = cust.id, vaultUri = "https://" .. name .. ".vault.azure.net/", enableSoftDelete = true,
      softDeleteRetentionInDays = 90, enablePurgeProtection = true, enableRbacAuthorization = true }
    for k, v in pairs(properties or {}) do p[k] = v end
    local r = { id = id, type = "Microsoft.KeyVault/vaults", tenant = cust.id, subscription = cust_sub,
      body = { id = id, name = name, type = "Microsoft.KeyVault/vaults", location = "westeurope", properties = p } }
    st.resources[id:lower()] = r
    return r
  end
  local vault = add_vault("kvcmk")
  local rec, ver = kv.add_version(st, vault, "cmk", { kty = "RSA", key_size = 2048, key_ops = { "wrapKey", "unwrapKey" } })
  local ra = rbac.add_assignment(st, cust, { role = "Key Vault Crypto Service Encryption User", scope = vault.id,
    principal_id = sp.id })
  local c = { st = st, isv = isv, cust = cust, app = app, uami = uami, uami_id = uami_id, fic = fic, sp = sp,
    vault = vault, rec = rec, ver = ver, ra = ra, add_vault = add_vault }
  function c.account(over)
    local a = {
      identity = { type = "UserAssigned", userAssignedIdentities = { [uami_id] = {} } },
      properties = { encryption = {
        keySource = "Microsoft.Keyvault",
        keyvaultproperties = { keyvaulturi = "https://kvcmk.vault.azure.net", keyname = "cmk", keyversion = "" },
        identity = { userAssignedIdentity = uami_id, federatedIdentityClientId = app.appId },
        services = { blob = { enabled = true, keyType = "Account" } } } },
    }
    if over then over(a) end
    return a
  end
  function c.check(over)
    return cmk.check(st, { tenant = isv, account = c.account(over),
      resource_id = "/subscriptions/" .. isv_sub .. "/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/sa1" })
  end
  return c
end

describe("emulated Storage cross-tenant key check", function()
  local c
  setup(function() c = chain() end)

  it("succeeds over the whole chain and reports the versioned key identifier", function()
    local r, err = c.check()
    assert.is_nil(err)
    assert.equal("https://kvcmk.vault.azure.net/keys/cmk/" .. c.ver.version, r.currentVersionedKeyIdentifier)
    assert.equal(c.st:iso(), r.lastKeyRotationTimestamp)
  end)

  it("does nothing for Microsoft-managed keys", function()
    local r, err = c.check(function(a) a.properties.encryption.keySource = "Microsoft.Storage" end)
    assert.is_nil(err)
    assert.same({}, r)
  end)

  local function fails(code, needle, over, undo)
    local r, err = c.check(over)
    if undo then undo() end
    assert.is_nil(r)
    assert.equal(400, err.status)
    assert.equal(code, err.code)
    if needle then assert.truthy(err.message:find(needle, 1, true), err.message) end
    return err
  end

  it("without a federated credential: gateway authentication failed, AADSTS700211", function()
    local fic = c.fic
    c.app.federatedIdentityCredentials[fic.id] = nil
    fails("KeyVaultAuthenticationFailure", "Gateway authentication failed for 'Microsoft.Storage'.", nil,
      function() c.app.federatedIdentityCredentials[fic.id] = fic end)
    c.app.federatedIdentityCredentials[fic.id] = nil
    fails("KeyVaultAuthenticationFailure", "AADSTS700211", nil, function() c.app.federatedIdentityCredentials[fic.id] = fic end)
  end)

  it("with a federated credential whose subject is another identity: AADSTS700213", function()
    local subject = c.fic.subject
    c.fic.subject = "00000000-0000-4000-8000-000000000001"
    fails("KeyVaultAuthenticationFailure", "AADSTS700213", nil, function() c.fic.subject = subject end)
  end)

  it("without the app's service principal in the customer tenant: AADSTS700016", function()
    c.cust.service_principals[c.sp.id] = nil
    fails("KeyVaultAuthenticationFailure", "AADSTS700016", nil, function() c.cust.service_principals[c.sp.id] = c.sp end)
  end)

  it("with the service principal disabled: AADSTS7000112", function()
    c.sp.accountEnabled = false
    fails("KeyVaultAuthenticationFailure", "AADSTS7000112", nil, function() c.sp.accountEnabled = true end)
  end)

  it("without a role on the key: KeyVaultAccessForbidden naming the identity and the app", function()
    local key = c.ra.id:lower()
    c.st.resources[key] = nil
    local err = fails("KeyVaultAccessForbidden", "Please grant get, wrap and unwrap key permissions to user-assigned identity '" ..
      c.uami_id .. "' (federated application '" .. c.app.appId .. "', service principal '" .. c.sp.id .. "'", nil,
      function() c.st.resources[key] = c.ra end)
    assert.truthy(err.message:find("ForbiddenByRbac", 1, true))
  end)

  it("with the key disabled: KeyVaultKeyDisabled", function()
    c.ver.enabled = false
    fails("KeyVaultKeyDisabled", "Operation get is not allowed on a disabled key.", nil, function() c.ver.enabled = true end)
  end)

  it("with the key expired or not yet valid: KeyVaultKeyExpired, KeyVaultKeyNotYetValid", function()
    c.ver.exp = c.st:now()
    fails("KeyVaultKeyExpired", "has expired", nil, function() c.ver.exp = nil end)
    c.ver.nbf = c.st:now() + 60
    fails("KeyVaultKeyNotYetValid", "is not yet valid", nil, function() c.ver.nbf = nil end)
  end)

  it("with the vault's DNS name not registered yet: KeyVaultVaultNotFound", function()
    c.vault.internal = c.vault.internal or {}
    c.vault.internal.dns_at = c.st:now() + 10
    fails("KeyVaultVaultNotFound", "is not found", nil, function() c.vault.internal.dns_at = nil end)
  end)

  it("with the key soft-deleted: KeyVaultEncryptionKeyNotFound (deleted)", function()
    c.rec.deleted = { deletedDate = c.st:now(), scheduledPurgeDate = c.st:now() + 86400 }
    fails("KeyVaultEncryptionKeyNotFound", "is in a deleted but recoverable state", nil, function() c.rec.deleted = nil end)
  end)

  it("with a key name that does not exist: KeyVaultEncryptionKeyNotFound (missing)", function()
    fails("KeyVaultEncryptionKeyNotFound", "does not exist", function(a) a.properties.encryption.keyvaultproperties.keyname = "nope" end)
  end)

  it("with a vault that does not exist: KeyVaultVaultNotFound", function()
    fails("KeyVaultVaultNotFound", "The key vault is not found for encryption.",
      function(a) a.properties.encryption.keyvaultproperties.keyvaulturi = "https://nosuchvault.vault.azure.net/" end)
  end)

  it("with a vault without purge protection: KeyVaultPolicyError", function()
    c.vault.body.properties.enablePurgeProtection = false
    fails("KeyVaultPolicyError", "Keyvault policy recoverable is not set", nil,
      function() c.vault.body.properties.enablePurgeProtection = true end)
  end)

  it("with the encryption identity not attached to the account: InvalidValuesForRequestParameters", function()
    fails("InvalidValuesForRequestParameters", "Values for request parameters are invalid: properties.encryption.identity.",
      function(a) a.identity.userAssignedIdentities = { ["/subscriptions/x/resourceGroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/other"] = {} } end)
  end)

  it("without an encryption identity: Missing pre-requisites", function()
    fails("MissingPrerequisites", "Missing pre-requisites to enable EncryptionAtRest/Customer Managed Key",
      function(a) a.properties.encryption.identity = nil end)
  end)

  it("without key vault properties: MissingKeyvaultProperties", function()
    fails("MissingKeyvaultProperties", "The encryption keyvault properties are missing from the request.",
      function(a) a.properties.encryption.keyvaultproperties = nil end)
  end)

  it("with an EC key or a 1024-bit RSA key: KeyVaultKeyTypeNotSupported", function()
    kv.add_version(c.st, c.vault, "eckey", { kty = "EC", crv = "P-256", key_ops = { "sign", "verify" }, material = false })
    fails("KeyVaultKeyTypeNotSupported", "is EC", function(a) a.properties.encryption.keyvaultproperties.keyname = "eckey" end)
    kv.add_version(c.st, c.vault, "small", { kty = "RSA", key_size = 1024, key_ops = { "wrapKey", "unwrapKey" }, material = false })
    fails("KeyVaultKeyTypeNotSupported", "is RSA 1024", function(a) a.properties.encryption.keyvaultproperties.keyname = "small" end)
  end)

  it("uses the access-policy model when the vault is not RBAC: get only is not enough", function()
    local p = c.vault.body.properties
    p.enableRbacAuthorization = false
    p.accessPolicies = { { tenantId = c.cust.id, objectId = c.sp.id, permissions = { keys = { "get" } } } }
    local err = fails("KeyVaultAccessForbidden", "does not have keys wrapKey permission")
    assert.truthy(err.message:find("AccessDenied", 1, true))
    p.accessPolicies[1].permissions.keys = { "get", "wrapKey", "unwrapKey" }
    local r, e2 = c.check()
    p.enableRbacAuthorization, p.accessPolicies = true, nil
    assert.is_nil(e2)
    assert.truthy(r.currentVersionedKeyIdentifier:find(c.ver.version, 1, true))
  end)

  it("pins a given key version and lets a versionless key follow new versions (refresh)", function()
    local first = c.ver.version
    local _, v2 = kv.add_version(c.st, c.vault, "cmk", { kty = "RSA", key_size = 2048, key_ops = { "wrapKey", "unwrapKey" } })
    local pinned = c.account(function(a) a.properties.encryption.keyvaultproperties.keyversion = first end)
    local r = assert(cmk.check(c.st, { tenant = c.isv, account = pinned }))
    assert.equal("https://kvcmk.vault.azure.net/keys/cmk/" .. first, r.currentVersionedKeyIdentifier)
    local floating = c.account()
    r = assert(cmk.check(c.st, { tenant = c.isv, account = floating }))
    assert.equal("https://kvcmk.vault.azure.net/keys/cmk/" .. v2.version, r.currentVersionedKeyIdentifier)
    -- ARM stores the result; later GETs call refresh
    local kvp = floating.properties.encryption.keyvaultproperties
    kvp.currentVersionedKeyIdentifier, kvp.lastKeyRotationTimestamp = r.currentVersionedKeyIdentifier, "2000-01-01T00:00:00Z"
    assert.is_false(cmk.refresh(c.st, floating))
    local _, v3 = kv.add_version(c.st, c.vault, "cmk", { kty = "RSA", key_size = 2048, key_ops = { "wrapKey", "unwrapKey" },
      material = false })
    assert.is_true(cmk.refresh(c.st, floating))
    assert.equal("https://kvcmk.vault.azure.net/keys/cmk/" .. v3.version, kvp.currentVersionedKeyIdentifier)
    assert.equal(c.st:iso(), kvp.lastKeyRotationTimestamp)
    pinned.properties.encryption.keyvaultproperties.currentVersionedKeyIdentifier = "x"
    assert.is_false(cmk.refresh(c.st, pinned))
    assert.equal("x", pinned.properties.encryption.keyvaultproperties.currentVersionedKeyIdentifier)
    -- a material-less version cannot wrap: the check refuses it instead of pretending
    local _, err = cmk.check(c.st, { tenant = c.isv, account = c.account() })
    assert.equal("KeyVaultAccessForbidden", err.code)
  end)
end)

describe("emulated Storage key check, same tenant", function()
  it("uses the identity's own Key Vault token when no federatedIdentityClientId is set", function()
    local c = chain()
    local v = c.add_vault("kvsame", { tenantId = c.isv.id })
    v.tenant = c.isv.id
    local _, ver = kv.add_version(c.st, v, "k", { kty = "RSA", key_size = 2048, key_ops = { "wrapKey", "unwrapKey" } })
    local function acct(a)
      a.properties.encryption.identity.federatedIdentityClientId = nil
      a.properties.encryption.keyvaultproperties.keyvaulturi = "https://kvsame.vault.azure.net/"
      a.properties.encryption.keyvaultproperties.keyname = "k"
    end
    local _, err = c.check(acct)
    assert.equal("KeyVaultAccessForbidden", err.code)
    rbac.add_assignment(c.st, c.isv, { role = "Key Vault Crypto Service Encryption User", scope = v.id,
      principal_id = c.uami.principalId })
    local r = assert(c.check(acct))
    assert.equal("https://kvsame.vault.azure.net/keys/k/" .. ver.version, r.currentVersionedKeyIdentifier)
    -- the customer's vault needs the federated client id
    local _, err2 = c.check(function(a) a.properties.encryption.identity.federatedIdentityClientId = nil end)
    assert.equal("KeyVaultAuthenticationFailure", err2.code)
    assert.truthy(err2.message:find("AKV10032", 1, true))
  end)
end)
