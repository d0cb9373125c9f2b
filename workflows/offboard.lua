-- offboard: the ISV cleans up its side for a customer: the storage account stops using the
-- customer's key (back to Microsoft-managed keys) or, with delete_account=true, is deleted; then
-- the federated credential for the customer's identity and the user-assigned identity are
-- deleted when the policy gives each customer its own (identity_per_customer); the shared ones of
-- the default policy stay, as does the multi-tenant application (other customers use them).
-- Idempotent: what is already gone (404) is skipped.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "offboard",
  description = "ISV tenant: remove a customer's identity, federated credential and the account's use of the key",
  -- asks first (or needs --yes) only when it deletes the account: reverting encryption loses no data
  destructive = function(params) return params.delete_account and "it deletes the storage account" end,
  params = cmk.params { "customer", "app_id", "identity_id", "storage_account_id", "storage_account", "resource_group",
    delete_account = { type = "boolean", default = false,
                       description = "delete the storage account instead of reverting its encryption" } },
  steps = {
    { name = "app", tenant = "isv", title = "find the application", mutates = false, run = cmk.find_app },
    { name = "identity", tenant = "isv", title = "find the user-assigned identity", mutates = false, run = cmk.find_identity },
    { name = "storage_account", tenant = "isv", title = "storage account off the customer's key",
      plan = cmk.plan_release_account, run = cmk.release_account },
    { name = "federated_credential", tenant = "isv", title = "delete the federated credential", needs = { "app", "identity" },
      plan = cmk.plan_delete_federated_credential, run = cmk.delete_federated_credential },
    { name = "delete_identity", tenant = "isv", title = "delete the user-assigned identity",
      needs = { "identity", "storage_account", "federated_credential" },
      plan = cmk.plan_delete_identity, run = cmk.delete_identity },
  },
  outputs = function(ctx)
    return { storage_account = ctx.outputs.storage_account,
             federated_credentials_deleted = ctx.outputs.federated_credential.deleted,
             identity_deleted = ctx.outputs.delete_identity.deleted }
  end,
}
