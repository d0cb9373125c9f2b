-- existing-account: switch an existing storage account in the ISV tenant to the customer's key
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-configure-cross-tenant-existing-account):
-- read the account, attach the ISV's user-assigned identity (keeping a system-assigned identity
-- and other user-assigned ones), PATCH the encryption to the customer's key with the application
-- as federatedIdentityClientId. Nothing is sent when the account already uses exactly this key
-- through this identity and app.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "existing-account",
  description = "ISV tenant: switch an existing storage account to the customer's key",
  params = cmk.params { "customer", "identity_id", "key_version", "storage_account_id", "storage_account",
    "resource_group", app_id = { required = true }, key_vault_uri = { required = true },
    key_name = { required = true } },
  steps = {
    { name = "account", tenant = "isv", title = "read the storage account", mutates = false, run = cmk.read_account },
    { name = "encryption", tenant = "isv", title = "encrypt with the customer's key", needs = { "account" },
      plan = cmk.plan_switch_encryption, run = cmk.switch_encryption },
  },
  next = cmk.next_verify,
  outputs = function(ctx)
    return { storage_account = ctx.outputs.encryption.account, changed = ctx.outputs.encryption.changed }
  end,
}
