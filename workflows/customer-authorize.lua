-- customer-authorize: the customer's side
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-configure-cross-tenant-new-account,
-- "the customer grants the service provider's app access to the key"), run with the customer
-- tenant's credentials: the ISV application's service principal, a key vault with soft delete,
-- purge protection and RBAC, an RSA key, and the role Key Vault Crypto Service Encryption User for
-- the application at the policy's scope (key or vault). Outputs the vault URI and key name and
-- the commands the ISV runs next: given the ISV's waiting run (isv_run, from the handoff or the kit),
-- `cmkflow approve RUN handoff --param ...` and `cmkflow resume RUN`.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "customer-authorize",
  description = "Customer tenant: install the ISV app, create the vault and key, grant the app the key",
  params = cmk.params { "customer", "key_size", app_id = { required = true },
    isv_run = { type = "string", pattern = "^[%w][%w%-]*$", hint = "the run id the ISV's handoff names",
                description = "the ISV's onboard run waiting for these values (from the handoff or the kit)" } },
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
      isvCommands = cmk.isv_commands(ctx),
      isvCommand = table.concat(cmk.isv_commands(ctx), " && "),
    }
  end,
}
