-- isv-setup: the ISV's side of a customer
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-configure-cross-tenant-new-account,
-- "the service provider configures identities"): resource group, the multi-tenant application,
-- a user-assigned identity for the customer and the federated credential that lets that identity
-- act as the application. Outputs the handoff for the customer: the app id, the admin-consent link
-- and the exact command the customer runs.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "isv-setup",
  description = "ISV tenant: multi-tenant app, user-assigned identity and federated credential for a customer",
  params = cmk.params { "customer",
    customer_tenant = { type = "tenant",
                        description = "the customer's tenant id or domain (fills the consent link)" } },
  steps = {
    cmk.step("isv_resource_group"),
    cmk.step("app"),
    cmk.step("identity"),
    cmk.step("federated_credential"),
    { name = "handoff", tenant = "isv", title = "customer handoff", mutates = false, needs = { "app", "federated_credential" },
      run = cmk.handoff },
  },
  outputs = function(ctx)
    return { handoff = ctx.outputs.handoff, app = ctx.outputs.app, identity = ctx.outputs.identity,
             federated_credential = ctx.outputs.federated_credential }
  end,
}
