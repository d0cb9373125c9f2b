-- onboard: both tenants end to end. The ISV's application, identity and federated credential;
-- the customer's service principal, key vault, key and role; then the ISV's storage account
-- encrypted with the customer's key. When the ISV has no credentials for the customer tenant the
-- run stops at the "handoff" gate (exit 6); the customer runs customer-authorize on their side,
-- and after `cmkflow approve RUN handoff --param key_vault_uri=URI --param key_name=NAME` the
-- resumed run takes the customer's vault and key from the approval (cmk.customer_side) and goes
-- on with the ISV's steps. The steps are the shared ones of isv-setup, customer-authorize and
-- new-account (cmk.STEPS).
local cmk = require "cmkflow.workflow.cmk"
local step, customer_side = cmk.step, cmk.customer_side

return {
  name = "onboard",
  description = "Cross-tenant customer-managed key for a new storage account, both tenants",
  -- demo default: only against the embedded emulator
  params = cmk.params { "key_size", "subscription", "location", customer = { demo_default = "contoso" },
    customer_tenant = { type = "tenant",
                        description = "the customer's tenant id or domain (fills the consent link)" } },
  steps = {
    step("isv_resource_group"),
    step("app"),
    step("identity"),
    step("federated_credential"),
    -- waits for the customer's vault URI and key name (cmkflow approve RUN handoff --param ...,
    -- or cmkflow resume RUN --param ...), checked before they are accepted; while it waits, the run
    -- prints what the customer needs (cmk.handoff_details). With credentials for both tenants the
    -- policy waives it when the run starts (decide_first), so the customer's steps overlap the
    -- ISV's, ordered by their own needs only.
    { name = "handoff", title = "customer handoff", gate = true, needs = { "federated_credential" },
      decide_first = true,
      values = cmk.params { key_vault_uri = { required = true }, key_name = { required = true } },
      values_needed = function(ctx) return not ctx.has_context("customer") end,
      handoff = function(ctx) return cmk.handoff_details(ctx, true) end },
    customer_side(step("service_principal", { needs = { "handoff", "app" } })),
    customer_side(step("customer_resource_group", { needs = { "handoff" } })),
    customer_side(step("key_vault")),
    customer_side(step("key")),
    customer_side(step("role_assignment")),
    step("storage_resource_group"),
    step("storage_account", { needs = { "storage_resource_group", "role_assignment", "federated_credential" } }),
  },
  next = cmk.next_verify,
  outputs = function(ctx)
    return {
      storage_account = ctx.outputs.storage_account.account,
      handoff = cmk.handoff_details(ctx, false, true),
      key = { vaultUri = ctx.outputs.key_vault.vaultUri, name = ctx.outputs.key.name },
      identity = ctx.outputs.identity,
      role_assignment = ctx.outputs.role_assignment,
    }
  end,
}
