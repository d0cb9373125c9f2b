-- isv-setup: the ISV's side of a customer (reference section 1, phase 1): resource group, the
-- multi-tenant application, a user-assigned identity for the customer and the federated
-- credential that lets that identity act as the application. Outputs the handoff for the
-- customer: the app id, the admin-consent link and the exact command the customer runs.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "isv-setup",
  description = "ISV tenant: multi-tenant app, user-assigned identity and federated credential for a customer",
  params = cmk.params { "customer",
    customer_tenant = { type = "tenant", description = "the customer's tenant id or domain (fills the consent link)" } },
  steps = {
    cmk.step("isv_resource_group"),
    cmk.step("app"),
    cmk.step("identity"),
    cmk.step("federated_credential"),
    { name = "handoff", title = "customer handoff", mutates = false, needs = { "app", "federated_credential" },
      run = function(ctx)
        local h = cmk.handoff_details(ctx)
        if ctx.params.customer_tenant then
          h.consentUrl = h.consentUrl:gsub("{customer%-tenant}", ctx.params.customer_tenant)
        end
        ctx.log("handoff for %s: app id %s\n  consent: %s\n  the customer runs: %s",
          ctx.params.customer, h.appId, h.consentUrl, h.customerCommand)
        return h
      end },
  },
  outputs = function(ctx)
    return { handoff = ctx.outputs.handoff, app = ctx.outputs.app, identity = ctx.outputs.identity,
             federated_credential = ctx.outputs.federated_credential }
  end,
}
