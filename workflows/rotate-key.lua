-- rotate-key: a new version of the customer's key (Key Vault data plane rotate, customer tenant),
-- then the ISV's storage account follows it: a versionless account (keyversion empty) picks the
-- newest version up by itself; an account pinned to a version (tracking=versioned, or one that
-- already has a keyversion) is PATCHed to the new version (ISV tenant). Outputs the account's
-- currentVersionedKeyIdentifier before and after.
-- Not idempotent across runs by design (each run makes a new version); a resumed run does not
-- rotate again once the rotate step is journaled.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "rotate-key",
  description = "Rotate the customer's key and move the ISV's storage account to the new version",
  params = cmk.params { "customer", "key_vault_uri", "key_name", "storage_account_id", "storage_account",
    "resource_group",
    tracking = { type = "string", enum = { "versionless", "versioned" }, default = "versionless",
                 description = "versionless: the account follows new versions; versioned: PATCH the account to it" } },
  steps = {
    { name = "before", title = "ISV: the account's key now", mutates = false, run = cmk.account_key },
    { name = "rotate", title = "customer: new key version", needs = { "before" },
      plan = cmk.plan_rotate_key, run = cmk.rotate_key },
    { name = "account", title = "ISV: the account uses the new version", needs = { "rotate" },
      plan = cmk.plan_follow_key_version, run = cmk.follow_key_version },
  },
  outputs = function(ctx)
    local a = ctx.outputs.account
    return { old = a.old, new = a.new, tracking = a.tracking, key = ctx.outputs.rotate.kid }
  end,
}
