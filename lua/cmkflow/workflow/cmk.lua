-- The step library the stock workflows are made of: the cross-tenant CMK procedure
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-configure-cross-tenant-new-account)
-- as named step functions, so that a workflow file is the procedure itself, a list of steps naming
-- them. The REST calls live in lua/cmkflow/workflow/steps/: base (errors, facts, names, ids, the
-- propagation wait), isv, customer, storage, verify. Every mutating step is idempotent: ARM PUTs,
-- Graph upserts and find-or-create, role assignments named by UUIDv5 of (scope, role, principal).
-- How to write a workflow with it: docs/lua-api.md.
--
--   local cmk = require "cmkflow.workflow.cmk"
--   cmk.step("key_vault")                        -- a shared step table (title, needs, plan, run)
--   { name = "rotate", needs = {"before"}, plan = cmk.plan_rotate_key, run = cmk.rotate_key }
--   cmk.record(ctx, "create" | "update" | "unchanged", {type, name, party, id, changes})  -- what a step did
--   cmk.params { "customer", app_id = { required = true } }
--   cmk.fail { code = "...", message = "...", tenant = "isv" | "customer", hint = "..." }
local base = require "cmkflow.workflow.steps.base"
local isv = require "cmkflow.workflow.steps.isv"
local customer = require "cmkflow.workflow.steps.customer"
local storage = require "cmkflow.workflow.steps.storage"
local verify = require "cmkflow.workflow.steps.verify"
local validate = require "cmkflow.azure.validate"
local param_types = require "cmkflow.workflow.params"

-- the Azure parameter types (guid, key_vault_uri, ...) the stock workflows declare: the engine
-- knows none of them (docs/architecture.md)
param_types.register_types(validate.PARAM_TYPES)

local M = {}

-- every function and constant of the step modules, under one name
for _, mod in ipairs { base, isv, customer, storage, verify } do
  for k, v in pairs(mod) do
    assert(M[k] == nil or M[k] == v, "step library: two modules define " .. k)
    M[k] = v
  end
end

M.json = require("cmkflow.core").json -- for workflows (the sandbox offers no cmkflow.core)

-- ---- parameters --------------------------------------------------------------------------------

-- Parameter specs shared by the stock workflows.
local ARM_ID = "^/subscriptions/[%x%-]+/resource[Gg]roups/[^/]+/providers/"
local function arm_id_param(provider, description)
  local problem = ("must be an ARM id /subscriptions/SUB/resourceGroups/RG/providers/%s/NAME"):format(provider)
  local segment = "/providers/" .. provider:lower() .. "/"
  return { type = "string", description = description,
           check = function(v)
             if v:match(ARM_ID) and v:lower():find(segment, 1, true) and not v:match("/$") then return true end
             return nil, problem
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
  key_vault_id = arm_id_param("Microsoft.KeyVault/vaults",
    "ARM id of the customer's key vault (default: from the policy's names)"),
  key_name = { type = "key_name", description = "the customer's key name" },
  key_version = { type = "string", pattern = "^%x+$", hint = "a key version is 32 hexadecimal digits",
                  check = function(v) return #v == 32 or nil, "a key version is 32 hexadecimal digits" end,
                  description = "pin the account to this key version (default: versionless, follows rotation)" },
  storage_account_id = arm_id_param("Microsoft.Storage/storageAccounts", "ARM id of the storage account"),
  storage_account = { type = "storage_account", description = "storage account name (with resource_group)" },
  resource_group = { type = "resource_group", description = "resource group of storage_account" },
  subscription = { type = "subscription",
                   description = "subscription of the storage account (default: the ISV context's; bulk-onboard places it)" },
  location = { type = "location",
               description = "region of the storage account (default: the policy's location; bulk-onboard places it)" },
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

-- ---- the creating steps, shared by onboard, isv-setup, customer-authorize and new-account ---------

local function plan_name(key, fmt)
  return function(ctx) return fmt:format(base.names(ctx)[key]) end
end

M.STEPS = {
  isv_resource_group = { tenant = "isv", title = "ISV resource group", run = isv.isv_resource_group,
    plan = plan_name("isv_resource_group", "create or update resource group %s (ISV)") },
  app = { tenant = "isv", title = "multi-tenant application", run = isv.app,
    plan = plan_name("app_unique_name",
      "create or update application uniqueName=%s, signInAudience AzureADMultipleOrgs (ISV)") },
  identity = { tenant = "isv", title = "user-assigned identity", needs = { "isv_resource_group" }, run = isv.identity,
    plan = plan_name("identity", "create or update user-assigned identity %s (ISV)") },
  federated_credential = { tenant = "isv", title = "federated credential", needs = { "app", "identity" },
    run = isv.federated_credential,
    plan = function(ctx) return ("create or update federated credential %s on %s for %s (ISV)")
      :format(base.names(ctx).federated_credential, base.fact(ctx, "app", "appId"),
              base.fact(ctx, "identity", "principalId")) end },
  service_principal = { tenant = "customer", title = "service principal in the customer tenant", run = customer.service_principal,
    plan = function(ctx)
      return "create service principal for " .. base.fact(ctx, "app", "appId", "app_id") .. " (customer)"
    end },
  customer_resource_group = { tenant = "customer", title = "customer resource group", run = customer.customer_resource_group,
    plan = plan_name("customer_resource_group", "create or update resource group %s (customer)") },
  key_vault = { tenant = "customer", title = "key vault", needs = { "customer_resource_group" }, run = customer.key_vault,
    plan = plan_name("key_vault",
      "create or update key vault %s with soft delete, purge protection and RBAC (customer)") },
  key = { tenant = "customer", title = "RSA key", needs = { "key_vault" }, run = customer.key,
    plan = function(ctx) return ("create key %s, RSA %d, if missing (customer)")
      :format(base.names(ctx).key, ctx.params.key_size or ctx.policy.key_size) end },
  role_assignment = { tenant = "customer", title = "Key Vault Crypto Service Encryption User", needs = { "key", "service_principal" },
    run = customer.role_assignment,
    plan = function(ctx) return "assign Key Vault Crypto Service Encryption User to the ISV app at the "
      .. ctx.policy.role_scope .. " (customer)" end },
  storage_resource_group = { tenant = "isv", title = "storage resource group", run = storage.storage_resource_group,
    plan = function(ctx) return ("create or update resource group %s (ISV)")
      :format(ctx.params.resource_group or base.names(ctx).storage_account_resource_group) end },
  storage_account = { tenant = "isv", title = "storage account with the customer's key", run = storage.storage_account,
    plan = storage.plan_storage_account },
}

-- Every shared step reads before it writes and, in a plan (ctx.plan), reads only and records what
-- it would do: its run function is its diff too (cmkflow.workflow.engine.diff).
for _, s in pairs(M.STEPS) do s.diff = s.run end

-- What an operator runs next after a run that put an account on the customer's key (a
-- definition's `next`): verify, with this run's config file and the parameters verify shares.
local VERIFY_PARAMS = { "customer", "app_id", "identity_id", "key_vault_uri", "key_name", "storage_account_id",
                        "storage_account", "resource_group" }
function M.next_verify(ctx)
  local parts = { "cmkflow run verify" }
  if ctx.config_path then parts[#parts + 1] = "--config " .. ctx.config_path end
  for _, name in ipairs(VERIFY_PARAMS) do
    if ctx.params[name] ~= nil then parts[#parts + 1] = ("--param %s=%s"):format(name, tostring(ctx.params[name])) end
  end
  return { { "verify", table.concat(parts, " ") } }
end

-- A fresh step table: the shared step `name` with fields from `extra` (e.g. needs).
function M.step(name, extra)
  local s = { name = name }
  for k, v in pairs(assert(M.STEPS[name], name)) do s[k] = v end
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

return M
