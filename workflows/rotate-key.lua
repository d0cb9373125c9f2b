-- rotate-key: a new version of the customer's key, and the ISV's storage account follows it
-- (https://learn.microsoft.com/azure/storage/common/customer-managed-keys-overview#update-the-key-version).
-- Each party runs its side with its own credentials (both at once when one config holds both):
-- the customer rotates (Key Vault data plane rotate) and gets the ISV's command; the ISV, given the
-- new version (key_version), checks a versionless account (status "pending" until Azure Storage's
-- daily check picked the version up, "current" after; wait_s polls within that bound) or PATCHes a
-- pinned one to it (status "updated"). Outputs old, new (currentVersionedKeyIdentifier), status.
-- Not idempotent across runs by design (each customer run makes a new version); a resumed run does
-- not rotate again once the rotate step is journaled.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "rotate-key",
  description = "Rotate the customer's key and move the ISV's storage account to the new version",
  params = cmk.params { "customer", "key_vault_uri", "key_name", "storage_account_id", "storage_account",
    "resource_group",
    tracking = { type = "string", enum = { "versionless", "versioned" }, default = "versionless",
                 description = "versionless: the account follows new versions; versioned: PATCH the account to it" },
    key_version = { description = "the ISV alone: the new version the customer's rotate-key made" },
    wait_s = { type = "integer", min = 0, max = 172800, default = 0,
               description = "versionless: wait up to this many seconds for Storage to pick the new version up" } },
  steps = {
    { name = "before", tenant = "isv", title = "ISV: the account's key now", mutates = false, run = cmk.account_key },
    { name = "rotate", tenant = "customer", title = "customer: new key version", needs = { "before" },
      plan = cmk.plan_rotate_key, run = cmk.rotate_key },
    { name = "account", tenant = "isv", title = "ISV: the account uses the new version", needs = { "rotate" },
      plan = cmk.plan_follow_key_version, run = cmk.follow_key_version },
  },
  outputs = function(ctx)
    local a, r = ctx.outputs.account, ctx.outputs.rotate
    return { old = a.old, new = a.new, tracking = a.tracking, status = a.status, note = a.note, key = r.kid,
             new_version = r.version, isvCommand = a.isvCommand }
  end,
}
