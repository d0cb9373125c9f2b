-- revoke: the customer withdraws the ISV's access to its key
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-overview): deletes the
-- role assignments that let the ISV app's service principal use the key (at the vault, the key or
-- above), and with disable_key=true also disables the key's current version. Idempotent: what is
-- already gone is skipped. Afterwards verify names the broken link.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "revoke",
  description = "Customer tenant: withdraw the ISV app's access to the key (role; optionally disable the key)",
  -- the ISV's storage account loses its key: its data cannot be read until access is given back
  destructive = "the ISV's storage account loses access to the customer's key",
  params = cmk.params { "customer", "key_vault_id", "key_name", app_id = { required = true },
    disable_key = { type = "boolean", default = false, description = "also disable the key's current version" } },
  steps = {
    { name = "service_principal", tenant = "customer", title = "find the ISV app's service principal", mutates = false,
      run = cmk.find_service_principal },
    { name = "role_assignment", tenant = "customer", title = "delete the app's role assignments", needs = { "service_principal" },
      plan = cmk.plan_revoke_role_assignments, run = cmk.revoke_role_assignments },
    { name = "disable_key", tenant = "customer", title = "disable the key", needs = { "role_assignment" },
      plan = cmk.plan_disable_key, run = cmk.disable_key },
  },
  outputs = function(ctx)
    return { deleted_role_assignments = ctx.outputs.role_assignment.deleted,
             key_disabled = ctx.outputs.disable_key.disabled }
  end,
}
