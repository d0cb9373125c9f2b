-- onboard: both tenants end to end. The ISV's application, identity and federated credential;
-- the customer's service principal, key vault, key and role; then the ISV's storage account
-- encrypted with the customer's key. When the ISV has no credentials for the customer tenant the
-- run stops at the "handoff" gate (exit 6) and continues after `cmkflow approve RUN handoff`.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "onboard",
  description = "Cross-tenant customer-managed key for a new storage account, both tenants",
  params = {
    customer = { type = "string", required = true, pattern = "^[a-z][a-z0-9-]*[a-z0-9]$",
                 hint = "use 2-40 lowercase letters, digits and '-', starting with a letter",
                 check = function(v) return #v <= 40 or nil, "use at most 40 characters" end,
                 demo_default = "contoso",   -- only against the embedded emulator
                 description = "the customer's id, used in resource names" },
    key_size = { type = "integer", enum = { 2048, 3072, 4096 }, description = "RSA key size (default: the policy's)" },
  },
  steps = {
    { name = "isv_resource_group", title = "ISV resource group", run = cmk.isv_resource_group,
      plan = function(ctx) return "create or update resource group " .. cmk.names(ctx).isv_resource_group .. " (ISV)" end },
    { name = "app", title = "multi-tenant application", run = cmk.app,
      plan = function(ctx) return "create or update application uniqueName=" .. cmk.names(ctx).app_unique_name .. " (ISV)" end },
    { name = "identity", title = "user-assigned identity", needs = { "isv_resource_group" }, run = cmk.identity,
      plan = function(ctx) return "create or update user-assigned identity " .. cmk.names(ctx).identity .. " (ISV)" end },
    { name = "federated_credential", title = "federated credential", needs = { "app", "identity" }, run = cmk.federated_credential,
      plan = function(ctx) return ("create or update federated credential %s on %s for %s (ISV)")
        :format(cmk.names(ctx).federated_credential, ctx.outputs.app.appId, ctx.outputs.identity.principalId) end },
    { name = "handoff", title = "customer handoff", gate = true, needs = { "federated_credential" } },
    { name = "service_principal", title = "service principal in the customer tenant", needs = { "handoff" },
      run = cmk.service_principal,
      plan = function(ctx) return "create service principal for " .. ctx.outputs.app.appId .. " (customer)" end },
    { name = "customer_resource_group", title = "customer resource group", needs = { "handoff" },
      run = cmk.customer_resource_group,
      plan = function(ctx) return "create or update resource group " .. cmk.names(ctx).customer_resource_group .. " (customer)" end },
    { name = "key_vault", title = "key vault", needs = { "customer_resource_group" }, run = cmk.key_vault,
      plan = function(ctx) return "create or update key vault " .. cmk.names(ctx).key_vault .. " with purge protection and RBAC (customer)" end },
    { name = "key", title = "RSA key", needs = { "key_vault" }, run = cmk.key,
      plan = function(ctx) return ("create key %s, RSA %d (customer)"):format(cmk.names(ctx).key, ctx.params.key_size or ctx.policy.key_size) end },
    { name = "role_assignment", title = "Key Vault Crypto Service Encryption User", needs = { "key", "service_principal" },
      run = cmk.role_assignment,
      plan = function(ctx) return "assign Key Vault Crypto Service Encryption User to the ISV app at the " .. ctx.policy.role_scope .. " (customer)" end },
    { name = "storage_resource_group", title = "storage resource group", run = cmk.storage_resource_group,
      plan = function(ctx) return "create or update resource group " .. cmk.names(ctx).storage_account_resource_group .. " (ISV)" end },
    { name = "storage_account", title = "storage account with the customer's key",
      needs = { "storage_resource_group", "role_assignment", "federated_credential" }, run = cmk.storage_account,
      plan = function(ctx) return "create or update storage account " .. cmk.names(ctx).storage_account .. " encrypted with the customer's key (ISV)" end },
  },
  outputs = function(ctx)
    return {
      storage_account = ctx.outputs.storage_account.account,
      handoff = cmk.handoff_details(ctx),
      key = { vaultUri = ctx.outputs.key_vault.vaultUri, name = ctx.outputs.key.name },
      identity = ctx.outputs.identity,
      role_assignment = ctx.outputs.role_assignment,
    }
  end,
}
