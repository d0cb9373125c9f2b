-- The cross-tenant CMK steps (reference/azure-cross-tenant-cmk.md section 1) as engine steps that
-- the stock workflows compose. Every step is idempotent: ARM PUTs, Graph upserts and
-- find-or-create, and role assignments named by UUIDv5 of (scope, role, principal).
-- Inputs come from earlier steps' outputs or, when a workflow starts half-way (the customer's or
-- the ISV's part alone), from its parameters: see `fact`.
local core = require "cmkflow.core"
local async = require "cmkflow.async"
local errors = require "cmkflow.azure.errors"
local json = core.json

local M = {}

M.API = { groups = "2021-04-01", identities = "2023-01-31", vaults = "2023-07-01", keys = "2023-07-01",
          roles = "2022-04-01", storage = "2023-01-01" }
M.ROLE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
M.TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"

-- ---- helpers ---------------------------------------------------------------------------------

-- Raise a remote failure so the engine records it; it names what broke and which tenant acts.
local function fail(what, err, tenant_role)
  local hint = errors.explain and errors.explain(err) or nil
  local msg = ("%s: %s"):format(what, tostring(err))
  if hint then msg = msg .. " — " .. hint end
  if tenant_role then msg = msg .. (" [%s tenant must fix this]"):format(tenant_role) end
  error(msg, 0)
end

-- A value an earlier step produced, or the workflow parameter that stands in for it.
function M.fact(ctx, step, field, param)
  local out = ctx.outputs[step]
  if out and out[field] ~= nil then return out[field] end
  if param and ctx.params[param] ~= nil then return ctx.params[param] end
  error(("step '%s' needs %s.%s (or --param %s)"):format(ctx.step or "?", step, field, param or field), 0)
end

-- Names from the policy, given the run's facts.
function M.names(ctx)
  local isv, customer = ctx.context_info("isv"), ctx.context_info("customer")
  local c = { customer = ctx.params.customer, isv_tenant = isv.tenant or "", customer_tenant = customer.tenant or "" }
  local out = {}
  for k, fn in pairs(ctx.policy.names) do out[k] = fn(c) end
  return out, c
end

local PROPAGATION = {
  PrincipalNotFound = true, KeyVaultAccessForbidden = true, KeyVaultAuthenticationFailure = true,
  Request_ResourceNotFound = true, ForbiddenByRbac = true, AADSTS70021 = true, AADSTS700016 = true,
  AADSTS700211 = true, AADSTS700213 = true, NoBackingApplicationObject = true,
}

-- Runs fn() until it succeeds or fails with something other than a propagation delay; waits
-- 1, 2, 4, 8, 16, 30, 30 ... s up to the policy's bound (default 300 s). `what` names what is not
-- yet visible for the final message.
function M.until_visible(ctx, what, fn)
  local bound = ctx.policy.propagation_timeout_s or 300
  local waited, delay = 0, 1
  while true do
    local res, err = fn()
    if res ~= nil then return res end
    local code = err and (err.code or "") or ""
    local detail = err and (err.detail_code or err.inner_code) or ""
    local message = err and err.message or ""
    local propagation = PROPAGATION[code] or PROPAGATION[detail]
      or message:match("AADSTS70021") or message:match("AADSTS700016") or message:match("AADSTS70021[13]")
    if not propagation or waited >= bound then
      if propagation then
        error(("%s is still not visible after %d s of waiting: %s"):format(what, waited, tostring(err)), 0)
      end
      return nil, err
    end
    local d = math.min(delay, bound - waited)
    ctx.log("  waiting %d s for %s to propagate (%s)", d, what, code ~= "" and code or "not visible yet")
    async.sleep(d * 1000)
    waited = waited + d
    delay = math.min(delay * 2, 30)
  end
end

local function put(ctx, arm, path, body, api, what, tenant_role)
  local res, err = arm:put(path, body, { api_version = api })
  if res == nil then fail(what, err, tenant_role) end
  return res
end

-- ---- ISV tenant ----------------------------------------------------------------------------

function M.isv_resource_group(ctx)
  local isv = ctx.context("isv")
  local names = M.names(ctx)
  local rg = put(ctx, isv.arm, ("/subscriptions/%s/resourcegroups/%s"):format(isv.subscription, names.isv_resource_group),
    { location = ctx.policy.location, tags = ctx.policy.tags({ customer = ctx.params.customer }) },
    M.API.groups, "resource group " .. names.isv_resource_group, "ISV")
  return { id = rg.id, name = rg.name }
end

function M.app(ctx)
  local isv = ctx.context("isv")
  local names = M.names(ctx)
  local app, err = isv.graph:find_or_create_application(names.app_unique_name,
    { displayName = names.app, signInAudience = "AzureADMultipleOrgs" })
  if not app then fail("multi-tenant application " .. names.app, err, "ISV") end
  if app.signInAudience and app.signInAudience ~= "AzureADMultipleOrgs" and app.signInAudience ~= "AzureADandPersonalMicrosoftAccount" then
    error(("application %s is single-tenant (%s): the customer cannot install it; set signInAudience to AzureADMultipleOrgs [ISV tenant must fix this]")
      :format(names.app, app.signInAudience), 0)
  end
  return { appId = app.appId, objectId = app.id, displayName = app.displayName }
end

function M.identity(ctx)
  local isv = ctx.context("isv")
  local names = M.names(ctx)
  local path = ("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.ManagedIdentity/userAssignedIdentities/%s")
    :format(isv.subscription, names.isv_resource_group, names.identity)
  local id = put(ctx, isv.arm, path, { location = ctx.policy.location, tags = ctx.policy.tags({ customer = ctx.params.customer }) },
    M.API.identities, "user-assigned identity " .. names.identity, "ISV")
  return { id = id.id, principalId = id.properties.principalId, clientId = id.properties.clientId }
end

function M.federated_credential(ctx)
  local isv = ctx.context("isv")
  local names = M.names(ctx)
  local subject = M.fact(ctx, "identity", "principalId", "identity_principal_id")
  local body = { name = names.federated_credential, issuer = ("https://login.microsoftonline.com/%s/v2.0"):format(isv.tenant),
    subject = subject, audiences = json.array { M.TOKEN_EXCHANGE_AUDIENCE },
    description = "cmkflow: lets Azure Storage use the customer's key as this app" }
  local fic, err = isv.graph:upsert_federated_credential(M.fact(ctx, "app", "objectId"), names.federated_credential, body)
  if not fic then fail("federated credential " .. names.federated_credential, err, "ISV") end
  return { name = names.federated_credential, issuer = body.issuer, subject = subject }
end

-- What the ISV gives the customer (no API call).
function M.handoff_details(ctx)
  local isv = ctx.context_info("isv")
  local app_id = M.fact(ctx, "app", "appId", "app_id")
  return {
    appId = app_id,
    isvTenant = isv.tenant,
    consentUrl = ("https://login.microsoftonline.com/{customer-tenant}/adminconsent?client_id=%s"):format(app_id),
    customerCommand = ("cmkflow run customer-authorize --param customer=%s --param app_id=%s --config customer.lua")
      :format(ctx.params.customer, app_id),
  }
end

-- ---- customer tenant -----------------------------------------------------------------------

function M.service_principal(ctx)
  local customer = ctx.context("customer")
  local app_id = M.fact(ctx, "app", "appId", "app_id")
  local sp, err = customer.graph:create_service_principal(app_id, nil,
    { replication_timeout_s = ctx.policy.propagation_timeout_s })
  if not sp then fail("service principal for the ISV application " .. app_id, err, "customer") end
  return { id = sp.id, appId = sp.appId }
end

function M.customer_resource_group(ctx)
  local customer = ctx.context("customer")
  local names = M.names(ctx)
  local rg = put(ctx, customer.arm, ("/subscriptions/%s/resourcegroups/%s"):format(customer.subscription, names.customer_resource_group),
    { location = ctx.policy.location, tags = ctx.policy.tags({ customer = ctx.params.customer }) },
    M.API.groups, "resource group " .. names.customer_resource_group, "customer")
  return { id = rg.id, name = rg.name }
end

function M.key_vault(ctx)
  local customer = ctx.context("customer")
  local names = M.names(ctx)
  local path = ("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.KeyVault/vaults/%s")
    :format(customer.subscription, names.customer_resource_group, names.key_vault)
  local vault = put(ctx, customer.arm, path, {
    location = ctx.policy.location, tags = ctx.policy.tags({ customer = ctx.params.customer }),
    properties = { tenantId = customer.tenant, sku = { family = "A", name = "standard" },
      enableSoftDelete = true, enablePurgeProtection = true, enableRbacAuthorization = true,
      softDeleteRetentionInDays = ctx.policy.soft_delete_retention_days, accessPolicies = json.array() },
  }, M.API.vaults, "key vault " .. names.key_vault, "customer")
  return { id = vault.id, name = vault.name, vaultUri = vault.properties.vaultUri }
end

function M.key(ctx)
  local customer = ctx.context("customer")
  local names = M.names(ctx)
  local vault_id = M.fact(ctx, "key_vault", "id")
  local key = put(ctx, customer.arm, vault_id .. "/keys/" .. names.key,
    { properties = { kty = "RSA", keySize = ctx.params.key_size or ctx.policy.key_size,
      keyOps = json.array { "wrapKey", "unwrapKey" } } },
    M.API.keys, "key " .. names.key, "customer")
  return { id = key.id, name = key.name, keyUri = key.properties.keyUri, keyUriWithVersion = key.properties.keyUriWithVersion }
end

function M.role_assignment(ctx)
  local customer = ctx.context("customer")
  local vault_id = M.fact(ctx, "key_vault", "id")
  local scope = ctx.policy.role_scope == "vault" and vault_id or M.fact(ctx, "key", "id")
  local principal = M.fact(ctx, "service_principal", "id")
  local name = core.crypto.uuid5("6ba7b811-9dad-11d1-80b4-00c04fd430c8",
    (scope .. "|" .. M.ROLE_ENCRYPTION_USER .. "|" .. principal):lower())
  local body = { properties = {
    roleDefinitionId = ("/subscriptions/%s/providers/Microsoft.Authorization/roleDefinitions/%s"):format(customer.subscription, M.ROLE_ENCRYPTION_USER),
    principalId = principal, principalType = "ServicePrincipal" } }
  local ra, err = M.until_visible(ctx, "the ISV app's service principal " .. principal, function()
    local res, e = customer.arm:put(scope .. "/providers/Microsoft.Authorization/roleAssignments/" .. name, body,
      { api_version = M.API.roles })
    if res == nil and e and e.code == "RoleAssignmentExists" then return { id = scope .. "/providers/Microsoft.Authorization/roleAssignments/" .. name, existing = true } end
    return res, e
  end)
  if not ra then fail("role Key Vault Crypto Service Encryption User for the ISV app", err, "customer") end
  return { id = ra.id, scope = scope, principalId = principal }
end

-- ---- ISV tenant: the storage account ------------------------------------------------------------

function M.storage_resource_group(ctx)
  local isv = ctx.context("isv")
  local names = M.names(ctx)
  local rg = put(ctx, isv.arm, ("/subscriptions/%s/resourcegroups/%s"):format(isv.subscription, names.storage_account_resource_group),
    { location = ctx.policy.location, tags = ctx.policy.tags({ customer = ctx.params.customer }) },
    M.API.groups, "resource group " .. names.storage_account_resource_group, "ISV")
  return { id = rg.id, name = rg.name }
end

function M.encryption(ctx)
  local identity_id = M.fact(ctx, "identity", "id", "identity_id")
  return {
    keySource = "Microsoft.Keyvault",
    keyvaultproperties = { keyvaulturi = M.fact(ctx, "key_vault", "vaultUri", "key_vault_uri"),
                           keyname = M.fact(ctx, "key", "name", "key_name") },
    identity = { userAssignedIdentity = identity_id, federatedIdentityClientId = M.fact(ctx, "app", "appId", "app_id") },
    services = { blob = { enabled = true, keyType = "Account" }, file = { enabled = true, keyType = "Account" } },
  }
end

function M.storage_account(ctx)
  local isv = ctx.context("isv")
  local names = M.names(ctx)
  local identity_id = M.fact(ctx, "identity", "id", "identity_id")
  local path = ("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Storage/storageAccounts/%s")
    :format(isv.subscription, names.storage_account_resource_group, names.storage_account)
  local body = {
    location = ctx.policy.location, kind = "StorageV2", sku = { name = "Standard_LRS" },
    tags = ctx.policy.tags({ customer = ctx.params.customer }),
    identity = { type = "UserAssigned", userAssignedIdentities = { [identity_id] = json.object() } },
    properties = { minimumTlsVersion = "TLS1_2", allowBlobPublicAccess = false, encryption = M.encryption(ctx) },
  }
  local account, err = M.until_visible(ctx, "the customer's grant to the ISV app (federated credential, service principal or role)", function()
    -- an earlier attempt's create still running (a run killed mid-operation): wait for it, bounded
    for _ = 1, 60 do
      local res, e = isv.arm:put(path, body, { api_version = M.API.storage })
      if res ~= nil or not (e and e.code == "StorageAccountOperationInProgress") then return res, e end
      ctx.log("  waiting 1 s for the storage account's earlier operation to finish")
      async.sleep(1000)
    end
    return isv.arm:put(path, body, { api_version = M.API.storage })
  end)
  if not account then fail("storage account " .. names.storage_account, err, "ISV or customer") end
  return { account = account, id = account.id, name = account.name }
end

return M
