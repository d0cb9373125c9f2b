-- existing-account: switch an existing storage account in the ISV tenant to the customer's key
-- (reference section 6.1): read the account, attach the ISV's user-assigned identity (keeping a
-- system-assigned identity and other user-assigned ones), PATCH the encryption to the customer's
-- key with the application as federatedIdentityClientId. Nothing is sent when the account
-- already uses exactly this key through this identity and app.
local cmk = require "cmkflow.workflow.cmk"
local json = cmk.json

local function account_changes(ctx, account)
  local identity_id = cmk.identity_id(ctx)
  local identity = type(account.identity) == "table" and account.identity or {}
  local kind = tostring(identity.type or "None")
  local uais = json.object()
  local has = false
  for id in pairs(type(identity.userAssignedIdentities) == "table" and identity.userAssignedIdentities or {}) do
    uais[id] = json.object()
    if cmk.same_id(id, identity_id) then has = true end
  end
  if not has then uais[identity_id] = json.object() end
  local system = kind:lower():find("systemassigned", 1, true) ~= nil
  local want_type = system and "SystemAssigned,UserAssigned" or "UserAssigned"
  local enc = (account.properties or {}).encryption or {}
  local kvp = enc.keyvaultproperties or {}
  local eid = enc.identity or {}
  local want = cmk.encryption(ctx)
  local same = has and (enc.keySource or ""):lower() == "microsoft.keyvault"
    and (kvp.keyvaulturi or ""):lower():gsub("/+$", "") == want.keyvaultproperties.keyvaulturi:lower():gsub("/+$", "")
    and kvp.keyname == want.keyvaultproperties.keyname
    and (kvp.keyversion or "") == (want.keyvaultproperties.keyversion or "")
    and cmk.same_id(eid.userAssignedIdentity, identity_id)
    and (eid.federatedIdentityClientId or ""):lower() == tostring(want.identity.federatedIdentityClientId):lower()
  if same then return nil end
  want.services = nil -- keyType is create-only; blob and file are always covered
  return { identity = { type = want_type, userAssignedIdentities = uais }, properties = { encryption = want } }
end

return {
  name = "existing-account",
  description = "ISV tenant: switch an existing storage account to the customer's key",
  params = cmk.params { "customer", "identity_id", "key_version", "storage_account_id", "storage_account", "resource_group",
    app_id = { required = true }, key_vault_uri = { required = true }, key_name = { required = true } },
  steps = {
    { name = "account", title = "read the storage account", mutates = false, run = function(ctx)
        local isv = ctx.context("isv")
        local id = cmk.account_id(ctx)
        local account = cmk.get_or_absent(isv.arm, id, { api_version = cmk.API.storage }, "storage account " .. id, "ISV")
        if not account then
          cmk.raise(("storage account %s does not exist: check --param storage_account_id (or storage_account and "
            .. "resource_group), or create it with the new-account workflow [ISV tenant must fix this]"):format(id), 0)
        end
        local enc = account.properties and account.properties.encryption or {}
        return { id = account.id, keySource = enc.keySource, identityType = account.identity and account.identity.type,
                 uptodate = account_changes(ctx, account) == nil }
      end },
    { name = "encryption", title = "encrypt with the customer's key", needs = { "account" },
      plan = function(ctx)
        return ("attach identity %s and PATCH encryption of %s to key %s in %s as app %s (ISV)"):format(cmk.identity_id(ctx),
          cmk.account_id(ctx), ctx.params.key_name, ctx.params.key_vault_uri, ctx.params.app_id)
      end,
      run = function(ctx)
        local isv = ctx.context("isv")
        local current = cmk.get_or_absent(isv.arm, ctx.outputs.account.id, { api_version = cmk.API.storage },
          "storage account " .. ctx.outputs.account.id, "ISV")
        if not current then cmk.raise("storage account " .. ctx.outputs.account.id .. " disappeared [ISV tenant must fix this]", 0) end
        local changes = account_changes(ctx, current)
        if not changes then return { account = current, id = current.id, changed = false } end
        local account, err = cmk.until_visible(ctx, "the customer's grant to the ISV app (federated credential, service principal or role)",
          function() return isv.arm:patch(ctx.outputs.account.id, changes, { api_version = cmk.API.storage }) end)
        if not account then
          cmk.raise(("storage account %s: %s [ISV or customer tenant must fix this; run verify]"):format(ctx.outputs.account.id, tostring(err)), 0)
        end
        return { account = account, id = account.id, changed = true }
      end },
  },
  outputs = function(ctx)
    return { storage_account = ctx.outputs.encryption.account, changed = ctx.outputs.encryption.changed }
  end,
}
