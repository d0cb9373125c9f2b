-- onboard: both tenants end to end. The ISV's application, identity and federated credential;
-- the customer's service principal, key vault, key and role; then the ISV's storage account
-- encrypted with the customer's key. When the ISV has no credentials for the customer tenant the
-- run stops at the "handoff" gate (exit 6) and continues after `cmkflow approve RUN handoff`.
-- The steps are the shared ones of isv-setup, customer-authorize and new-account (cmk.STEPS).
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "onboard",
  description = "Cross-tenant customer-managed key for a new storage account, both tenants",
  params = cmk.params { "key_size", customer = { demo_default = "contoso" } },   -- demo default: only against the embedded emulator
  steps = {
    cmk.step("isv_resource_group"),
    cmk.step("app"),
    cmk.step("identity"),
    cmk.step("federated_credential"),
    { name = "handoff", title = "customer handoff", gate = true, needs = { "federated_credential" } },
    cmk.step("service_principal", { needs = { "handoff" } }),
    cmk.step("customer_resource_group", { needs = { "handoff" } }),
    cmk.step("key_vault"),
    cmk.step("key"),
    cmk.step("role_assignment"),
    cmk.step("storage_resource_group"),
    cmk.step("storage_account", { needs = { "storage_resource_group", "role_assignment", "federated_credential" } }),
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
