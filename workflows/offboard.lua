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
  params = cmk.params { "customer", "app_id", "identity_id", "storage_account_id", "storage_account", "resource_group",
    delete_account = { type = "boolean", default = false, description = "delete the storage account instead of reverting its encryption" } },
  steps = {
    { name = "app", title = "find the application", mutates = false, run = function(ctx)
        local app = cmk.find_app(ctx)
        return app and { appId = app.appId, objectId = app.id } or { absent = true }
      end },
    { name = "identity", title = "find the user-assigned identity", mutates = false, run = function(ctx)
        local isv = ctx.context("isv")
        local id = cmk.identity_id(ctx)
        local uami = cmk.get_or_absent(isv.arm, id, { api_version = cmk.API.identities }, "identity " .. id, "ISV")
        return uami and { id = uami.id, principalId = uami.properties.principalId } or { id = id, absent = true }
      end },
    { name = "storage_account", title = "storage account off the customer's key",
      plan = function(ctx) return (ctx.params.delete_account and "delete storage account %s (ISV)"
        or "switch storage account %s to Microsoft-managed keys if it uses the customer's key (ISV)"):format(cmk.account_id(ctx)) end,
      run = function(ctx)
        local isv = ctx.context("isv")
        local id = cmk.account_id(ctx)
        local account = cmk.get_or_absent(isv.arm, id, { api_version = cmk.API.storage }, "storage account " .. id, "ISV")
        if not account then return { absent = true } end
        if ctx.params.delete_account then
          local ok, err = isv.arm:delete(id, { api_version = cmk.API.storage })
          if not ok then cmk.raise("delete storage account " .. id .. ": " .. tostring(err) .. " [ISV]", 0) end
          return { deleted = true }
        end
        local enc = (account.properties or {}).encryption or {}
        if tostring(enc.keySource):lower() ~= "microsoft.keyvault" then return { keySource = enc.keySource } end
        local res, err = isv.arm:patch(id, { properties = { encryption = { keySource = "Microsoft.Storage",
          services = { blob = { enabled = true }, file = { enabled = true } } } } }, { api_version = cmk.API.storage })
        if not res then
          cmk.raise(("storage account %s: switching to Microsoft-managed keys failed: %s (Storage needs the customer's key once more to "
            .. "re-wrap; or pass delete_account=true) [ISV]"):format(id, tostring(err)), 0)
        end
        return { keySource = res.properties.encryption.keySource, reverted = true }
      end },
    { name = "federated_credential", title = "delete the federated credential", needs = { "app", "identity" },
      plan = function(ctx)
        if not ctx.policy.identity_per_customer then return "keep the shared federated credential (ISV)" end
        return ("delete federated credential %s (ISV)"):format(cmk.names(ctx).federated_credential) end,
      run = function(ctx)
        local app, identity = ctx.outputs.app, ctx.outputs.identity
        if not ctx.policy.identity_per_customer then return { deleted = cmk.json.array(), kept = "shared by every customer" } end
        if app.absent then return { deleted = cmk.json.array() } end
        local isv = ctx.context("isv")
        local base = "/applications/" .. app.objectId .. "/federatedIdentityCredentials"
        local list, err = isv.graph:list(base)
        if list == nil then cmk.raise("federated credentials of " .. app.appId .. ": " .. tostring(err) .. " [ISV]", 0) end
        local name = cmk.names(ctx).federated_credential
        local deleted = cmk.json.array()
        for _, f in ipairs(list) do
          if f.name == name or (not identity.absent and f.subject == identity.principalId) then
            local ok, derr = isv.graph:delete(base .. "/" .. f.id)
            if not ok then cmk.raise("delete federated credential " .. f.name .. ": " .. tostring(derr) .. " [ISV]", 0) end
            deleted[#deleted + 1] = f.name
          end
        end
        return { deleted = deleted }
      end },
    { name = "delete_identity", title = "delete the user-assigned identity", needs = { "identity", "storage_account", "federated_credential" },
      plan = function(ctx)
        if not ctx.policy.identity_per_customer then return "keep the shared user-assigned identity (ISV)" end
        return "delete user-assigned identity " .. cmk.identity_id(ctx) .. " (ISV)" end,
      run = function(ctx)
        local identity = ctx.outputs.identity
        if not ctx.policy.identity_per_customer then return { deleted = false, kept = "shared by every customer" } end
        if identity.absent then return { deleted = false } end
        local ok, err = ctx.context("isv").arm:delete(identity.id, { api_version = cmk.API.identities })
        if not ok then cmk.raise("delete identity " .. identity.id .. ": " .. tostring(err) .. " [ISV]", 0) end
        return { deleted = true, id = identity.id }
      end },
  },
  outputs = function(ctx)
    return { storage_account = ctx.outputs.storage_account, federated_credentials_deleted = ctx.outputs.federated_credential.deleted,
             identity_deleted = ctx.outputs.delete_identity.deleted }
  end,
}
