-- Steps in the customer tenant: the ISV application's service principal, the key vault and key,
-- the role that lets the application use the key
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-configure-cross-tenant-new-account),
-- and what rotate-key and revoke do there.
local json = require("cmkflow.core").json
local escape = require("cmkflow.form").escape
local base = require "cmkflow.workflow.steps.base"
local isv_steps = require "cmkflow.workflow.steps.isv"

local M = {}

local fail, remote_fail, fact, names = base.fail, base.remote_fail, base.fact, base.names

-- Installs the ISV application in the customer tenant: its service principal (Graph Create
-- servicePrincipal, https://learn.microsoft.com/graph/api/serviceprincipal-post-serviceprincipals),
-- waiting for an application created moments ago to replicate.
function M.service_principal(ctx)
  local customer = ctx.context("customer")
  local app_id = fact(ctx, "app", "appId", "app_id")
  local found = not base.unknown(app_id) and M.get_service_principal(customer, app_id)
  base.record(ctx, found and "unchanged" or "create", { type = "service principal", name = "app " .. app_id,
    party = "customer" })
  if found then return { id = found.id, appId = found.appId } end
  if ctx.plan then return {} end
  local sp, err = customer.graph:create_service_principal(app_id, nil,
    { replication_timeout_s = ctx.policy.propagation_timeout_s, on_wait = function(what, s, e)
      ctx.log("  waiting %d s for %s to replicate to the customer tenant (%s)", s, what, tostring(e and e.code))
    end })
  if not sp then remote_fail("service principal for the ISV application " .. app_id, err, "customer") end
  return { id = sp.id, appId = sp.appId }
end

function M.customer_resource_group(ctx)
  return isv_steps.resource_group(ctx, "customer", names(ctx).customer_resource_group)
end

-- What the flow needs of a vault: soft delete and purge protection (Azure Storage refuses a key
-- without them) and RBAC authorization (the role assignment below).
local VAULT_NEEDS = { enableSoftDelete = true, enablePurgeProtection = true, enableRbacAuthorization = true }

-- The vault (Vaults - Create Or Update,
-- https://learn.microsoft.com/rest/api/keyvault/keyvault/vaults/create-or-update). A PUT would reset
-- what the customer set since (firewall, network access), so an existing vault only gets a PATCH
-- (Vaults - Update) of what VAULT_NEEDS finds missing.
function M.key_vault(ctx)
  local customer = ctx.context("customer")
  local n = names(ctx)
  local path = base.arm_id(customer.subscription, n.customer_resource_group, "Microsoft.KeyVault/vaults", n.key_vault)
  local vault = base.converge(ctx, { arm = customer.arm, path = path, body = {
    location = ctx.policy.location, tags = base.tags(ctx),
    properties = { tenantId = customer.tenant, sku = { family = "A", name = "standard" },
      enableSoftDelete = true, enablePurgeProtection = true, enableRbacAuthorization = true,
      softDeleteRetentionInDays = ctx.policy.soft_delete_retention_days, accessPolicies = json.array() },
  }, api = base.API.vaults, what = "key vault " .. n.key_vault, party = "customer", wanted = { properties = VAULT_NEEDS },
    on_wait = base.log_waits(ctx, "the DNS name of key vault " .. n.key_vault), type = "key vault", name = n.key_vault })
  if ctx.plan then
    return vault and { id = vault.id, name = vault.name, vaultUri = vault.properties.vaultUri } or { id = path,
      name = n.key_vault }
  end
  -- a new vault registers its DNS name first (provisioningState RegisteringDns); its data plane
  -- (and Storage's key check) cannot reach it until Succeeded
  if vault.properties.provisioningState ~= "Succeeded" then
    vault = base.until_visible(ctx, "the DNS name of key vault " .. n.key_vault, function()
      local v = base.get_or_absent(customer.arm, path, { api_version = base.API.vaults }, "key vault " .. n.key_vault,
        "customer")
      if v and v.properties.provisioningState == "Succeeded" then return v end
      return nil, { code = "VaultRegisteringDns", message = "provisioningState "
        .. tostring(v and v.properties.provisioningState) }
    end, "customer")
  end
  return { id = vault.id, name = vault.name, vaultUri = vault.properties.vaultUri }
end

-- The RSA key through ARM: read first (Keys - Get), created when absent (Keys - Create If Not
-- Exist: a PUT never makes a second version,
-- https://learn.microsoft.com/rest/api/keyvault/keyvault/keys/create-if-not-exist). An existing key
-- is kept as it is, whatever its size (rotate-key makes new versions).
function M.key(ctx)
  local customer = ctx.context("customer")
  local n = names(ctx)
  local vault_id = fact(ctx, "key_vault", "id")
  local path = vault_id .. "/keys/" .. n.key
  local size = ctx.params.key_size or ctx.policy.key_size
  local key = not base.unknown(vault_id) and base.get_or_absent(customer.arm, path, { api_version = base.API.keys },
    "key " .. n.key, "customer")
  local have = key and key.properties.keySize
  base.record(ctx, key and "unchanged" or "create", { type = "key", name = n.key, party = "customer", id = path,
    note = have and have ~= size and ("keySize %s kept (asked: %s): an existing key is never replaced")
      :format(tostring(have), tostring(size)) or nil })
  if not key then
    if ctx.plan then return { id = path, name = n.key } end
    key = base.put(customer.arm, path, { properties = { kty = "RSA", keySize = size,
      keyOps = json.array { "wrapKey", "unwrapKey" } } }, base.API.keys, "key " .. n.key, "customer")
  end
  local p = key.properties
  return { id = key.id, name = key.name, keyUri = p.keyUri, keyUriWithVersion = p.keyUriWithVersion }
end

-- Key Vault Crypto Service Encryption User for the application's service principal at the key (or
-- the vault: the policy's role_scope), named by UUIDv5 so a rerun finds the same assignment (Role
-- Assignments - Get, then Create when absent,
-- https://learn.microsoft.com/rest/api/authorization/role-assignments/create).
-- principalType lets ARM accept a principal that has not replicated yet; PrincipalNotFound is waited out.
function M.role_assignment(ctx)
  local customer = ctx.context("customer")
  local role = base.ROLE.crypto_service_encryption_user
  local scope = ctx.policy.role_scope == "vault" and fact(ctx, "key_vault", "id") or fact(ctx, "key", "id")
  local principal = fact(ctx, "service_principal", "id")
  local id = scope .. "/providers/Microsoft.Authorization/roleAssignments/"
    .. base.role_assignment_name(scope, role, principal)
  local found = not (base.unknown(scope) or base.unknown(principal))
    and base.get_or_absent(customer.arm, id, { api_version = base.API.roles }, "role assignment " .. id, "customer")
  base.record(ctx, found and "unchanged" or "create", { type = "role assignment",
    name = "Key Vault Crypto Service Encryption User for app " .. tostring(fact(ctx, "app", "appId", "app_id")),
    party = "customer", id = scope })
  if found then return { id = found.id, scope = scope, principalId = principal } end
  if ctx.plan then return { id = id, scope = scope } end
  local body = { properties = {
    roleDefinitionId = ("/subscriptions/%s/providers/Microsoft.Authorization/roleDefinitions/%s")
      :format(customer.subscription, role),
    principalId = principal, principalType = "ServicePrincipal" } }
  local ra, err = base.until_visible(ctx, "the ISV app's service principal " .. principal, function()
    local res, e = customer.arm:put(id, body, { api_version = base.API.roles })
    -- the same role for the same principal at the same scope under another name: already done
    if res == nil and e and e.code == "RoleAssignmentExists" then return { id = id, existing = true } end
    return res, e
  end, "customer")
  if not ra then remote_fail("role Key Vault Crypto Service Encryption User for the ISV app", err, "customer") end
  return { id = ra.id, scope = scope, principalId = principal }
end

-- customer-authorize's output: the commands the ISV runs next with the customer's vault and key.
-- Given the ISV's waiting run (isv_run, from the handoff or the kit): approve its handoff gate with
-- the two values, then resume it; the run keeps its own config and cloud, so these cannot reach
-- another cloud. Without it: new-account with the ISV's config file and this run's cloud named,
-- so that an ISV config for another cloud is refused instead of used.
function M.isv_commands(ctx)
  local vault_uri, key_name = ctx.outputs.key_vault.vaultUri, ctx.outputs.key.name
  if ctx.params.isv_run then
    return {
      ("cmkflow approve %s handoff --param key_vault_uri=%s --param key_name=%s"):format(ctx.params.isv_run, vault_uri,
        key_name),
      ("cmkflow resume %s"):format(ctx.params.isv_run),
    }
  end
  local cloud = ctx.cloud_info and ctx.cloud_info().name or "azure"
  return { ("cmkflow run new-account --config isv.lua --cloud %s --param customer=%s --param app_id=%s "
    .. "--param key_vault_uri=%s --param key_name=%s"):format(cloud, ctx.params.customer, ctx.params.app_id, vault_uri,
      key_name) }
end

-- What the customer hands over at onboard's "handoff" gate when the ISV has no credentials for the
-- customer tenant (`cmkflow approve RUN handoff --param key_vault_uri=URI --param key_name=NAME`):
-- the outputs of the customer steps that the ISV's later steps read.
local HANDED_OVER = {
  key_vault = function(h) return { vaultUri = h.key_vault_uri } end,
  key = function(h) return { name = h.key_name } end,
}

-- A customer step of onboard that, without customer credentials, takes its outputs from the values
-- approved at the handoff gate instead of calling the customer tenant (customer-authorize did that).
function M.customer_side(step)
  local run, diff = step.run, step.diff
  step.diff = diff and function(ctx)
    if ctx.has_context("customer") then return diff(ctx) end
    return {} -- the customer's side, done and read with their credentials (customer-authorize)
  end
  step.run = function(ctx)
    if ctx.has_context("customer") then return run(ctx) end
    local h = ctx.outputs.handoff or {}
    if not (h.key_vault_uri and h.key_name) then
      fail { code = "NothingHandedOver", tenant = "isv",
        message = "no credentials for the customer tenant and no key handed over: approve the handoff with "
          .. "--param key_vault_uri=URI --param key_name=NAME (what customer-authorize printed), "
          .. "or configure the customer context" }
    end
    local take = HANDED_OVER[step.name]
    return take and take(h) or { done_by = "customer" }
  end
  return step
end

-- ---- reads --------------------------------------------------------------------------------------

-- The ISV application's service principal in the customer tenant | false (absent)
-- (GET /servicePrincipals(appId='...'), https://learn.microsoft.com/graph/api/serviceprincipal-get).
function M.get_service_principal(customer, app_id)
  return base.get_or_absent(customer.graph, "/servicePrincipals(appId='" .. app_id .. "')", nil,
    "service principal for " .. app_id, "customer")
end

-- The role assignments of `principal` at `scope` and above, or nil when the scope is gone (Role
-- Assignments - List For Scope with $filter=principalId eq '...',
-- https://learn.microsoft.com/rest/api/authorization/role-assignments/list-for-scope).
function M.role_assignments_of(customer, scope, principal)
  local list, err = customer.arm:list(scope .. "/providers/Microsoft.Authorization/roleAssignments?$filter="
    .. escape("principalId eq '" .. principal .. "'"), { api_version = base.API.roles })
  if list == nil then
    if err and err.status == 404 then return nil end
    remote_fail("role assignments on " .. scope, err, "customer")
  end
  return list
end

-- ---- revoke -------------------------------------------------------------------------------------

-- revoke: the ISV app's service principal, if any.
function M.find_service_principal(ctx)
  local sp = M.get_service_principal(ctx.context("customer"), ctx.params.app_id)
  return sp and { id = sp.id } or { absent = true }
end

-- revoke: deletes every assignment that gives the service principal the use of the key
-- (base.KEY_ACCESS_ROLES) at the vault, the key or above (Role Assignments - Delete,
-- https://learn.microsoft.com/rest/api/authorization/role-assignments/delete).
function M.revoke_role_assignments(ctx)
  local sp = ctx.outputs.service_principal
  if sp.absent then return { deleted = json.array() } end
  local customer = ctx.context("customer")
  local deleted = json.array()
  for _, ra in ipairs(M.role_assignments_of(customer, base.vault_id(ctx), sp.id) or {}) do
    if base.KEY_ACCESS_ROLES[base.role_of(ra)] then
      base.delete(customer.arm, ra.id, base.API.roles, "role assignment " .. ra.id, "customer")
      deleted[#deleted + 1] = ra.id
    end
  end
  return { deleted = deleted }
end

function M.plan_revoke_role_assignments(ctx)
  return ("delete Key Vault Crypto Service Encryption User assignments of app %s on %s (customer)")
    :format(ctx.params.app_id, base.vault_id(ctx))
end

-- revoke with disable_key=true: disables the key's current version through the data plane (Update
-- Key with attributes.enabled = false, https://learn.microsoft.com/rest/api/keyvault/keys/update-key;
-- needs Key Vault Crypto Officer). Storage then cannot unwrap the account's key.
function M.disable_key(ctx)
  if not ctx.params.disable_key then return { disabled = false } end
  local customer = ctx.context("customer")
  local name = base.key_name(ctx)
  local vault = base.get_or_absent(customer.arm, base.vault_id(ctx), { api_version = base.API.vaults },
    "key vault", "customer")
  if not vault then return { disabled = false, absent = "vault" } end
  local key = base.get_or_absent(customer.arm, vault.id .. "/keys/" .. name, { api_version = base.API.keys },
    "key " .. name, "customer")
  if not key then return { disabled = false, absent = "key" } end
  local version = base.key_version_of(key.properties.keyUriWithVersion)
  if key.properties.attributes and key.properties.attributes.enabled == false then
    return { disabled = true, version = version }
  end
  local ok, err = customer.keyvault:update_key(vault.properties.vaultUri, name, version, { enabled = false })
  if not ok then remote_fail("disable key " .. name, err, "customer", "the caller needs Key Vault Crypto Officer") end
  return { disabled = true, version = version }
end

function M.plan_disable_key(ctx)
  if not ctx.params.disable_key then return "none (disable_key=false)" end
  return ("disable the current version of key %s (customer)"):format(base.key_name(ctx))
end

-- ---- rotate-key -----------------------------------------------------------------------------------

-- rotate-key: a new version of the customer's key (data plane Rotate Key,
-- https://learn.microsoft.com/rest/api/keyvault/keys/rotate-key; needs Key Vault Crypto Officer).
-- The vault and key default to what the account uses (the `before` step).
function M.rotate_key(ctx)
  -- the ISV alone: the customer rotated on their side and handed the new version over (key_version)
  if not ctx.has_context("customer") then return { done_by = "customer", version = ctx.params.key_version } end
  local customer = ctx.context("customer")
  local before = ctx.outputs.before
  local vault_uri = ctx.params.key_vault_uri or before.keyvaulturi
  if not vault_uri then
    -- the customer alone: the vault the policy names (the account is the ISV's to read)
    local vault = base.get_or_absent(customer.arm, base.vault_id(ctx), { api_version = base.API.vaults }, "key vault",
      "customer")
    if not vault then
      fail { code = "KeyVaultNotFound", tenant = "customer", message = "key vault " .. base.vault_id(ctx)
        .. " does not exist", hint = "pass --param key_vault_uri=URI --param key_name=NAME" }
    end
    vault_uri = vault.properties.vaultUri
  end
  local name = ctx.params.key_name or before.keyname or base.key_name(ctx)
  local key, err = customer.keyvault:rotate_key(vault_uri, name)
  if not key then
    remote_fail(("rotate key %s in %s"):format(name, vault_uri), err, "customer",
      "the caller needs Key Vault Crypto Officer")
  end
  local kid = key.key and key.key.kid
  if not kid then
    fail { code = "UnexpectedResponse", message = "rotate key " .. name .. ": no key id in the answer" }
  end
  return { kid = kid, version = base.key_version_of(kid), key_vault_uri = vault_uri, key_name = name }
end

function M.plan_rotate_key(ctx)
  return ("rotate key %s in %s: a new version (customer)")
    :format(ctx.params.key_name or names(ctx).key, ctx.params.key_vault_uri or "the account's vault")
end

return M
