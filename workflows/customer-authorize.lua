-- customer-authorize: the customer's side
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-configure-cross-tenant-new-account,
-- "the customer grants the service provider's app access to the key"), run with the customer
-- tenant's credentials: the ISV application's service principal, a key vault with soft delete,
-- purge protection and RBAC, an RSA key, and the role Key Vault Crypto Service Encryption User for
-- the application at the policy's scope (key or vault). Outputs the vault URI and key name and
-- the command the ISV runs next.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "customer-authorize",
  description = "Customer tenant: install the ISV app, create the vault and key, grant the app the key",
  params = cmk.params { "customer", "key_size", app_id = { required = true } },
  steps = {
    cmk.step("service_principal"),
    cmk.step("customer_resource_group"),
    cmk.step("key_vault"),
    cmk.step("key"),
    cmk.step("role_assignment"),
  },
  outputs = function(ctx)
    local o = ctx.outputs
    return {
      key_vault_uri = o.key_vault.vaultUri, key_name = o.key.name, key_vault_id = o.key_vault.id,
      service_principal = o.service_principal, role_assignment = o.role_assignment,
      isvCommand = cmk.isv_command(ctx),
    }
  end,
}
