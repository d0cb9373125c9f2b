-- The cross-tenant CMK steps (reference/azure-cross-tenant-cmk.md section 1) as engine steps that
-- the stock workflows compose. Every step is idempotent: ARM PUTs, Graph upserts and
-- find-or-create, and role assignments named by UUIDv5 of (scope, role, principal).
-- Inputs come from earlier steps' outputs or, when a workflow starts half-way (the customer's or
-- the ISV's part alone), from its parameters: see `fact`.
local core = require "cmkflow.core"
local async = require "cmkflow.async"
local errors = require "cmkflow.azure.errors"
local validate = require "cmkflow.azure.validate"
local param_types = require "cmkflow.workflow.params"
local json = core.json

-- the Azure parameter types (guid, key_vault_uri, ...) the stock workflows declare
param_types.register_types(validate.PARAM_TYPES)

local M = {}

M.json = json -- for workflows (the sandbox offers no cmkflow.core)
M.escape = require("cmkflow.form").escape -- a query-string value
M.API = { groups = "2021-04-01", identities = "2023-01-31", vaults = "2023-07-01", keys = "2023-07-01",
          roles = "2022-04-01", storage = "2023-01-01" }
M.ROLE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
M.TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"

-- ---- helpers ---------------------------------------------------------------------------------

-- Raises a failure the user is meant to read: the engine records its message without a Lua
-- traceback (a traceback stays for real bugs).
local RAISED = { __tostring = function(e) return e.message end }
function M.raise(msg) error(setmetatable({ message = tostring(msg) }, RAISED), 0) end

-- Raise a remote failure so the engine records it; it names what broke and which tenant acts.
local function fail(what, err, tenant_role)
  local hint = errors.explain and errors.explain(err) or nil
  local msg = ("%s: %s"):format(what, tostring(err))
  if hint then msg = msg .. " — " .. hint end
  if tenant_role then msg = msg .. (" [%s tenant must fix this]"):format(tenant_role) end
  M.raise(msg, 0)
end

-- A value an earlier step produced, or the workflow parameter that stands in for it.
function M.fact(ctx, step, field, param)
  local out = rawget(ctx.outputs, step)
  if out and out[field] ~= nil then return out[field] end
  if param and ctx.params[param] ~= nil then return ctx.params[param] end
  if ctx.plan then return ("<%s.%s>"):format(step, field) end
  M.raise(("step '%s' needs %s.%s (or --param %s)"):format(ctx.step or "?", step, field, param or field), 0)
end

-- Names from the policy, given the run's facts.
function M.names(ctx)
  local isv, customer = ctx.context_info("isv"), ctx.context_info("customer")
  local c = { customer = ctx.params.customer, isv_tenant = isv.tenant or "", customer_tenant = customer.tenant or "",
              identity_per_customer = ctx.policy.identity_per_customer == true }
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
        M.raise(("%s is still not visible after %d s of waiting: %s"):format(what, waited, tostring(err)), 0)
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

-- The policy's tags for this run's customer.
local function customer_tags(ctx) return ctx.policy.tags({ customer = ctx.params.customer }) end

-- Creates or updates resource group `name` in the subscription of the tenant context `context`
-- ("isv" or "customer"), in the policy's location.
local function resource_group(ctx, context, name, tenant_role)
  local tenant = ctx.context(context)
  local rg = put(ctx, tenant.arm, ("/subscriptions/%s/resourcegroups/%s"):format(tenant.subscription, name),
    { location = ctx.policy.location, tags = customer_tags(ctx) }, M.API.groups, "resource group " .. name, tenant_role)
  return { id = rg.id, name = rg.name }
end

-- ---- ISV tenant ----------------------------------------------------------------------------

function M.isv_resource_group(ctx)
  return resource_group(ctx, "isv", M.names(ctx).isv_resource_group, "ISV")
end

function M.app(ctx)
  local isv = ctx.context("isv")
  local names = M.names(ctx)
  local app, err = isv.graph:find_or_create_application(names.app_unique_name,
    { displayName = names.app, signInAudience = "AzureADMultipleOrgs" })
  if not app then fail("multi-tenant application " .. names.app, err, "ISV") end
  if app.signInAudience and app.signInAudience ~= "AzureADMultipleOrgs" and app.signInAudience ~= "AzureADandPersonalMicrosoftAccount" then
    M.raise(("application %s is single-tenant (%s): the customer cannot install it; set signInAudience to AzureADMultipleOrgs [ISV tenant must fix this]")
      :format(names.app, app.signInAudience), 0)
  end
  return { appId = app.appId, objectId = app.id, displayName = app.displayName }
end

function M.identity(ctx)
  local isv = ctx.context("isv")
  local names = M.names(ctx)
  local path = ("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.ManagedIdentity/userAssignedIdentities/%s")
    :format(isv.subscription, names.isv_resource_group, names.identity)
  local id = put(ctx, isv.arm, path, { location = ctx.policy.location, tags = customer_tags(ctx) },
    M.API.identities, "user-assigned identity " .. names.identity, "ISV")
  return { id = id.id, principalId = id.properties.principalId, clientId = id.properties.clientId }
end

-- The issuer of the ISV tenant's managed identity tokens, as the federated credential names it.
function M.fic_issuer(tenant) return ("https://login.microsoftonline.com/%s/v2.0"):format(tenant) end

function M.federated_credential(ctx)
  local isv = ctx.context("isv")
  local names = M.names(ctx)
  local subject = M.fact(ctx, "identity", "principalId", "identity_principal_id")
  local body = { name = names.federated_credential, issuer = M.fic_issuer(isv.tenant),
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
  return resource_group(ctx, "customer", M.names(ctx).customer_resource_group, "customer")
end

function M.key_vault(ctx)
  local customer = ctx.context("customer")
  local names = M.names(ctx)
  local path = ("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.KeyVault/vaults/%s")
    :format(customer.subscription, names.customer_resource_group, names.key_vault)
  local vault = put(ctx, customer.arm, path, {
    location = ctx.policy.location, tags = customer_tags(ctx),
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
  return resource_group(ctx, "isv", ctx.params.resource_group or M.names(ctx).storage_account_resource_group, "ISV")
end

function M.encryption(ctx)
  local identity_id = M.identity_id(ctx)
  return {
    keySource = "Microsoft.Keyvault",
    keyvaultproperties = { keyvaulturi = M.fact(ctx, "key_vault", "vaultUri", "key_vault_uri"),
                           keyname = M.fact(ctx, "key", "name", "key_name"),
                           keyversion = ctx.params.key_version or "" },
    identity = { userAssignedIdentity = identity_id, federatedIdentityClientId = M.fact(ctx, "app", "appId", "app_id") },
    services = { blob = { enabled = true, keyType = "Account" }, file = { enabled = true, keyType = "Account" } },
  }
end

function M.storage_account(ctx)
  local isv = ctx.context("isv")
  local names = M.names(ctx)
  local identity_id = M.identity_id(ctx)
  local path = M.account_id(ctx)
  local body = {
    location = ctx.policy.location, kind = "StorageV2", sku = { name = "Standard_LRS" },
    tags = customer_tags(ctx),
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

-- ---- derived ids (a parameter wins; else the policy's names) --------------------------------------

local function arm_path(sub, rg, provider, name)
  return ("/subscriptions/%s/resourceGroups/%s/providers/%s/%s"):format(sub, rg, provider, name)
end

-- The ARM id of the ISV's user-assigned identity for this customer.
function M.identity_id(ctx)
  local out = rawget(ctx.outputs, "identity")
  if out and out.id then return out.id end
  if ctx.params.identity_id then return ctx.params.identity_id end
  return arm_path(ctx.context_info("isv").subscription, M.names(ctx).isv_resource_group,
    "Microsoft.ManagedIdentity/userAssignedIdentities", M.names(ctx).identity)
end

-- The ARM id of the customer's storage account: storage_account_id, or storage_account (+
-- resource_group), or the policy's names.
function M.account_id(ctx)
  local p = ctx.params
  if p.storage_account_id then return p.storage_account_id end
  local names = M.names(ctx)
  return arm_path(ctx.context_info("isv").subscription, p.resource_group or names.storage_account_resource_group,
    "Microsoft.Storage/storageAccounts", p.storage_account or names.storage_account)
end

-- The ARM id of the customer's key vault (key_vault_id or the policy's names).
function M.vault_id(ctx)
  local out = rawget(ctx.outputs, "key_vault")
  if out and out.id then return out.id end
  if ctx.params.key_vault_id then return ctx.params.key_vault_id end
  local names = M.names(ctx)
  return arm_path(ctx.context_info("customer").subscription, names.customer_resource_group, "Microsoft.KeyVault/vaults",
    names.key_vault)
end

function M.key_name(ctx)
  local out = rawget(ctx.outputs, "key")
  if out and out.name then return out.name end
  return ctx.params.key_name or M.names(ctx).key
end

-- Parameter specs shared by the stock workflows.
local ARM_ID = "^/subscriptions/[%x%-]+/resource[Gg]roups/[^/]+/providers/"
local function arm_id_param(provider, description)
  return { type = "string", description = description,
           check = function(v)
             if v:match(ARM_ID) and v:lower():find("/providers/" .. provider:lower() .. "/", 1, true) and not v:match("/$") then return true end
             return nil, ("must be an ARM id /subscriptions/SUB/resourceGroups/RG/providers/%s/NAME"):format(provider)
           end }
end
M.PARAMS = {
  customer = { type = "string", required = true, pattern = "^[a-z][a-z0-9-]*[a-z0-9]$",
               hint = "use 2-40 lowercase letters, digits and '-', starting with a letter",
               check = function(v) return #v <= 40 or nil, "use at most 40 characters" end,
               description = "the customer's id, used in resource names" },
  app_id = { type = "guid", description = "the ISV's multi-tenant application (client) id" },
  key_size = { type = "integer", enum = { 2048, 3072, 4096 }, description = "RSA key size (default: the policy's)" },
  identity_id = arm_id_param("Microsoft.ManagedIdentity/userAssignedIdentities",
    "ARM id of the ISV's user-assigned identity (default: from the policy's names)"),
  key_vault_uri = { type = "key_vault_uri", description = "the customer's vault URI, https://NAME.vault.azure.net" },
  key_vault_id = arm_id_param("Microsoft.KeyVault/vaults", "ARM id of the customer's key vault (default: from the policy's names)"),
  key_name = { type = "key_name", description = "the customer's key name" },
  key_version = { type = "string", pattern = "^%x+$", hint = "a key version is 32 hexadecimal digits",
                  check = function(v) return #v == 32 or nil, "a key version is 32 hexadecimal digits" end,
                  description = "pin the account to this key version (default: versionless, follows rotation)" },
  storage_account_id = arm_id_param("Microsoft.Storage/storageAccounts", "ARM id of the storage account"),
  storage_account = { type = "storage_account", description = "storage account name (with resource_group)" },
  resource_group = { type = "resource_group", description = "resource group of storage_account" },
}

-- params{"customer", app_id = {required = true}, own = {type = ...}}: copies of the shared specs
-- (with overrides) and the workflow's own.
function M.params(list)
  local out = {}
  for k, v in pairs(list) do
    local name, extra = k, v
    if type(k) == "number" then name, extra = v, nil end
    local spec = {}
    for sk, sv in pairs(M.PARAMS[name] or {}) do spec[sk] = sv end -- a name not shared: extra is its whole spec
    for sk, sv in pairs(extra or {}) do spec[sk] = sv end
    out[name] = spec
  end
  return out
end

-- ---- shared step tables --------------------------------------------------------------------------

local function plan_name(key, fmt)
  return function(ctx) return fmt:format(M.names(ctx)[key]) end
end

M.STEPS = {
  isv_resource_group = { title = "ISV resource group", run = M.isv_resource_group,
    plan = plan_name("isv_resource_group", "create or update resource group %s (ISV)") },
  app = { title = "multi-tenant application", run = M.app,
    plan = plan_name("app_unique_name", "create or update application uniqueName=%s, signInAudience AzureADMultipleOrgs (ISV)") },
  identity = { title = "user-assigned identity", needs = { "isv_resource_group" }, run = M.identity,
    plan = plan_name("identity", "create or update user-assigned identity %s (ISV)") },
  federated_credential = { title = "federated credential", needs = { "app", "identity" }, run = M.federated_credential,
    plan = function(ctx) return ("create or update federated credential %s on %s for %s (ISV)")
      :format(M.names(ctx).federated_credential, M.fact(ctx, "app", "appId"), M.fact(ctx, "identity", "principalId")) end },
  service_principal = { title = "service principal in the customer tenant", run = M.service_principal,
    plan = function(ctx) return "create service principal for " .. M.fact(ctx, "app", "appId", "app_id") .. " (customer)" end },
  customer_resource_group = { title = "customer resource group", run = M.customer_resource_group,
    plan = plan_name("customer_resource_group", "create or update resource group %s (customer)") },
  key_vault = { title = "key vault", needs = { "customer_resource_group" }, run = M.key_vault,
    plan = plan_name("key_vault", "create or update key vault %s with soft delete, purge protection and RBAC (customer)") },
  key = { title = "RSA key", needs = { "key_vault" }, run = M.key,
    plan = function(ctx) return ("create key %s, RSA %d, if missing (customer)")
      :format(M.names(ctx).key, ctx.params.key_size or ctx.policy.key_size) end },
  role_assignment = { title = "Key Vault Crypto Service Encryption User", needs = { "key", "service_principal" },
    run = M.role_assignment,
    plan = function(ctx) return "assign Key Vault Crypto Service Encryption User to the ISV app at the "
      .. ctx.policy.role_scope .. " (customer)" end },
  storage_resource_group = { title = "storage resource group", run = M.storage_resource_group,
    plan = function(ctx) return ("create or update resource group %s (ISV)")
      :format(ctx.params.resource_group or M.names(ctx).storage_account_resource_group) end },
  storage_account = { title = "storage account with the customer's key", run = M.storage_account,
    plan = function(ctx)
      local rg, name = M.account_id(ctx):match("/resourceGroups/([^/]+)/providers/Microsoft%.Storage/storageAccounts/([^/]+)$")
      return ("create or update storage account %s in resource group %s encrypted with key %s in %s as app %s (ISV)")
      :format(name, rg, M.fact(ctx, "key", "name", "key_name"), M.fact(ctx, "key_vault", "vaultUri", "key_vault_uri"),
              M.fact(ctx, "app", "appId", "app_id")) end },
}

-- A fresh step table: the shared step `name` with fields from `extra` (e.g. needs).
function M.step(name, extra)
  local s = { name = name }
  for k, v in pairs(assert(M.STEPS[name], name)) do s[k] = v end
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

-- ---- read helpers ----------------------------------------------------------------------------------

-- GET that tells "absent" (404) apart: returns doc | false (absent); raises on other failures.
function M.get_or_absent(client, path, opts, what, tenant_role)
  local doc, err = client:get(path, opts)
  if doc ~= nil then return doc end
  if err and err.status == 404 then return false end
  fail(what, err, tenant_role)
end

-- The ISV application: from app_id ($filter) or the policy's uniqueName. Returns app | false.
function M.find_app(ctx)
  local isv = ctx.context("isv")
  local app_id = rawget(ctx.outputs, "app") and ctx.outputs.app.appId or ctx.params.app_id
  if app_id then
    return M.get_or_absent(isv.graph, "/applications(appId='" .. app_id .. "')", nil, "application " .. app_id, "ISV")
  end
  local unique = M.names(ctx).app_unique_name
  return M.get_or_absent(isv.graph, "/applications(uniqueName='" .. unique .. "')", nil, "application " .. unique, "ISV")
end

function M.same_id(a, b)
  return type(a) == "string" and type(b) == "string" and a:lower():gsub("/+$", "") == b:lower():gsub("/+$", "")
end

return M
