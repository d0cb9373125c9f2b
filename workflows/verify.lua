-- verify: checks the cross-tenant chain from both sides, read-only, in the order Azure Storage
-- walks it: the ISV's multi-tenant app, its federated credential for the user-assigned identity,
-- the app's service principal in the customer tenant, the role on the vault or key, the key
-- (enabled, RSA >= 2048), the vault (soft delete, purge protection), the storage account's
-- encryption, and a data read on the account that needs the key (key_access). Each link is ok,
-- broken (with the tenant that must fix it) or unverified (with who can check it): each party checks what its own credentials see. Outputs {ok, checks, broken = {link,
-- tenant, problem, fix}, unverified = [{link, who, why}]}; the run fails with exit 1 when a link is
-- broken, with exit 7 (Unverified) when none is broken but some could not be checked, and exits 0
-- only when every link was checked and holds.
local cmk = require "cmkflow.workflow.cmk"
local check = cmk.check

return {
  name = "verify",
  description = "Read-only check of the cross-tenant chain from both sides; names the broken link and who fixes it",
  params = cmk.params { "customer", "app_id", "identity_id", "key_vault_uri", "key_vault_id", "key_name",
    "storage_account_id", "storage_account", "resource_group" },
  steps = {
    check("app", "ISV: multi-tenant application", {}),
    check("identity", "ISV: user-assigned identity", {}),
    check("federated_credential", "ISV: federated credential", { "app", "identity" }),
    check("service_principal", "customer: service principal", { "app" }),
    check("key_vault", "customer: key vault", {}),
    check("key", "customer: key", { "key_vault" }),
    check("role_assignment", "customer: role for the app", { "service_principal", "key", "key_vault" }),
    check("storage_account", "ISV: storage account encryption", { "app", "identity", "key_vault", "key" }),
    check("key_access", "ISV: Storage reads with the key", { "storage_account" }),
    { name = "verdict", tenant = "none", title = "verdict", mutates = false,
      needs = { "federated_credential", "role_assignment", "storage_account", "key_access" }, run = cmk.require_whole_chain },
  },
  outputs_on_failure = true,
  outputs = cmk.verdict,
}
