-- rotate-key: a new version of the customer's key (Key Vault data plane rotate, customer tenant),
-- then the ISV's storage account follows it: a versionless account (keyversion empty) picks the
-- newest version up by itself; an account pinned to a version (tracking=versioned, or one that
-- already has a keyversion) is PATCHed to the new version (ISV tenant). Outputs the account's
-- currentVersionedKeyIdentifier before and after.
-- Not idempotent across runs by design (each run makes a new version); a resumed run does not
-- rotate again once the rotate step is journaled.
local cmk = require "cmkflow.workflow.cmk"

local function account_of(ctx)
  local isv = ctx.context("isv")
  local id = cmk.account_id(ctx)
  local account = cmk.get_or_absent(isv.arm, id, { api_version = cmk.API.storage }, "storage account " .. id, "ISV")
  if not account then cmk.raise("storage account " .. id .. " does not exist: check the parameters or run new-account [ISV]", 0) end
  return account
end

local function kvp_of(account)
  return ((account.properties or {}).encryption or {}).keyvaultproperties or {}
end

return {
  name = "rotate-key",
  description = "Rotate the customer's key and move the ISV's storage account to the new version",
  params = cmk.params { "customer", "key_vault_uri", "key_name", "storage_account_id", "storage_account", "resource_group",
    tracking = { type = "string", enum = { "versionless", "versioned" }, default = "versionless",
                 description = "versionless: the account follows new versions; versioned: PATCH the account to the new version" } },
  steps = {
    { name = "before", title = "ISV: the account's key now", mutates = false, run = function(ctx)
        local account = account_of(ctx)
        local kvp = kvp_of(account)
        if tostring(((account.properties or {}).encryption or {}).keySource):lower() ~= "microsoft.keyvault" then
          cmk.raise("storage account " .. account.name .. " does not use a customer-managed key: run new-account or existing-account first [ISV]", 0)
        end
        local eid = account.properties.encryption.identity or {}
        return { id = account.id, userAssignedIdentity = eid.userAssignedIdentity,
                 federatedIdentityClientId = eid.federatedIdentityClientId, keyvaulturi = kvp.keyvaulturi, keyname = kvp.keyname, keyversion = kvp.keyversion or "",
                 currentVersionedKeyIdentifier = kvp.currentVersionedKeyIdentifier }
      end },
    { name = "rotate", title = "customer: new key version", needs = { "before" },
      plan = function(ctx) return ("rotate key %s in %s: a new version (customer)")
        :format(ctx.params.key_name or cmk.names(ctx).key, ctx.params.key_vault_uri or "the account's vault") end,
      run = function(ctx)
        local customer = ctx.context("customer")
        local vault_uri = ctx.params.key_vault_uri or ctx.outputs.before.keyvaulturi
        local name = ctx.params.key_name or ctx.outputs.before.keyname
        local key, err = customer.keyvault:rotate_key(vault_uri, name)
        if not key then cmk.raise(("rotate key %s in %s: %s [customer tenant: needs Key Vault Crypto Officer]"):format(name, vault_uri, tostring(err)), 0) end
        local kid = key.key and key.key.kid
        return { kid = kid, version = kid and kid:match("/keys/[^/]+/([^/?]+)") }
      end },
    { name = "account", title = "ISV: the account uses the new version", needs = { "rotate" },
      plan = function(ctx) return ctx.params.tracking == "versioned"
        and ("PATCH %s keyversion to the new version (ISV)"):format(cmk.account_id(ctx))
        or "none: a versionless account follows the new version (ISV, read-only check)" end,
      run = function(ctx)
        local isv = ctx.context("isv")
        local before, new = ctx.outputs.before, ctx.outputs.rotate
        local pinned = ctx.params.tracking == "versioned" or (before.keyversion or "") ~= ""
        local account
        if pinned then
          local res, err = cmk.until_visible(ctx, "the customer's key version", function()
            return isv.arm:patch(before.id, { properties = { encryption = { keySource = "Microsoft.Keyvault",
              keyvaultproperties = { keyvaulturi = before.keyvaulturi, keyname = before.keyname, keyversion = new.version },
              identity = { userAssignedIdentity = before.userAssignedIdentity,
                           federatedIdentityClientId = before.federatedIdentityClientId } } } },
              { api_version = cmk.API.storage })
          end)
          if not res then cmk.raise("storage account " .. before.id .. ": " .. tostring(err) .. " [ISV or customer]", 0) end
        end
        account = account_of(ctx)
        local current = kvp_of(account).currentVersionedKeyIdentifier
        if not current or not current:find("/" .. new.version, 1, true) then
          cmk.raise(("storage account %s still uses %s, not the new version %s%s"):format(account.name, tostring(current), new.version,
            pinned and "" or " (Storage picks up new versions of a versionless key within a day)"), 0)
        end
        return { old = before.currentVersionedKeyIdentifier, new = current, tracking = pinned and "versioned" or "versionless" }
      end },
  },
  outputs = function(ctx)
    local a = ctx.outputs.account
    return { old = a.old, new = a.new, tracking = a.tracking, key = ctx.outputs.rotate.kid }
  end,
}
