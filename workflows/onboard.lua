-- onboard: both tenants end to end. The ISV's application, identity and federated credential;
-- the customer's service principal, key vault, key and role; then the ISV's storage account
-- encrypted with the customer's key. When the ISV has no credentials for the customer tenant the
-- run stops at the "handoff" gate (exit 6) and continues after `cmkflow approve RUN handoff`.
-- The steps are the shared ones of isv-setup, customer-authorize and new-account (cmk.STEPS).
local cmk = require "cmkflow.workflow.cmk"

-- Without customer credentials the customer runs customer-authorize on their side; after
-- `cmkflow approve RUN handoff --param key_vault_uri=URI --param key_name=NAME` the resumed run
-- takes the customer's vault and key from the approval and goes on with the ISV's steps.
local HANDED_OVER = {
  key_vault = function(h) return { vaultUri = h.key_vault_uri } end,
  key = function(h) return { name = h.key_name } end,
}
local function customer_side(step)
  local run = step.run
  step.run = function(ctx)
    if ctx.has_context("customer") then return run(ctx) end
    local h = ctx.outputs.handoff or {}
    if not (h.key_vault_uri and h.key_name) then
      cmk.raise("no credentials for the customer tenant and no key handed over: approve the handoff with "
        .. "--param key_vault_uri=URI --param key_name=NAME (what customer-authorize printed), "
        .. "or configure the customer context")
    end
    local take = HANDED_OVER[step.name]
    return take and take(h) or { done_by = "customer" }
  end
  return step
end

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
    customer_side(cmk.step("service_principal", { needs = { "handoff" } })),
    customer_side(cmk.step("customer_resource_group", { needs = { "handoff" } })),
    customer_side(cmk.step("key_vault")),
    customer_side(cmk.step("key")),
    customer_side(cmk.step("role_assignment")),
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
