-- new-account: the scenario itself
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-configure-cross-tenant-new-account):
-- a new storage account in the ISV tenant encrypted with the customer's key, reached through the
-- ISV's identity and app.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "new-account",
  description = "ISV tenant: a new storage account encrypted with the customer's key",
  params = cmk.params { "customer", "identity_id", "key_version", "storage_account", "resource_group",
    app_id = { required = true }, key_vault_uri = { required = true }, key_name = { required = true } },
  steps = {
    cmk.step("storage_resource_group"),
    cmk.step("storage_account", { needs = { "storage_resource_group" } }),
  },
  next = cmk.next_verify,
  outputs = function(ctx)
    return { storage_account = ctx.outputs.storage_account.account }
  end,
}
