-- customer-authorize: the customer's side (reference section 1, phase 2), run with the customer
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
    local vault_uri, key = ctx.outputs.key_vault.vaultUri, ctx.outputs.key.name
    return {
      key_vault_uri = vault_uri, key_name = key, key_vault_id = ctx.outputs.key_vault.id,
      service_principal = ctx.outputs.service_principal, role_assignment = ctx.outputs.role_assignment,
      isvCommand = ("cmkflow run new-account --param customer=%s --param app_id=%s --param key_vault_uri=%s --param key_name=%s")
        :format(ctx.params.customer, ctx.params.app_id, vault_uri, key),
    }
  end,
}
