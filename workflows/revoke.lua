-- revoke: the customer withdraws the ISV's access to its key (reference section 6.4): deletes the
-- role assignments that let the ISV app's service principal use the key (at the vault, the key or
-- above), and with disable_key=true also disables the key's current version. Idempotent: what is
-- already gone is skipped. Afterwards verify names the broken link.
local cmk = require "cmkflow.workflow.cmk"

local ROLES = { [cmk.ROLE_ENCRYPTION_USER] = true, ["14b46e9e-c2b7-41b4-b07b-48a6ebf60603"] = true } -- + Crypto Officer

return {
  name = "revoke",
  description = "Customer tenant: withdraw the ISV app's access to the key (role; optionally disable the key)",
  params = cmk.params { "customer", "key_vault_id", "key_name", app_id = { required = true },
    disable_key = { type = "boolean", default = false, description = "also disable the key's current version" } },
  steps = {
    { name = "service_principal", title = "find the ISV app's service principal", mutates = false, run = function(ctx)
        local customer = ctx.context("customer")
        local sp = cmk.get_or_absent(customer.graph, "/servicePrincipals(appId='" .. ctx.params.app_id .. "')", nil,
          "service principal for " .. ctx.params.app_id, "customer")
        return sp and { id = sp.id } or { absent = true }
      end },
    { name = "role_assignment", title = "delete the app's role assignments", needs = { "service_principal" },
      plan = function(ctx) return ("delete Key Vault Crypto Service Encryption User assignments of app %s on %s (customer)")
        :format(ctx.params.app_id, cmk.vault_id(ctx)) end,
      run = function(ctx)
        local sp = ctx.outputs.service_principal
        if sp.absent then return { deleted = cmk.json.array() } end
        local customer = ctx.context("customer")
        local vault_id = cmk.vault_id(ctx)
        local list, err = customer.arm:list(vault_id .. "/providers/Microsoft.Authorization/roleAssignments?$filter="
          .. cmk.escape("principalId eq '" .. sp.id .. "'"), { api_version = cmk.API.roles })
        if list == nil then
          if err and err.status == 404 then return { deleted = cmk.json.array() } end
          cmk.raise("role assignments on " .. vault_id .. ": " .. tostring(err) .. " [customer]", 0)
        end
        local deleted = cmk.json.array()
        for _, ra in ipairs(list) do
          local role = tostring((ra.properties or {}).roleDefinitionId):lower():match("([^/]+)$")
          if ROLES[role] then
            local ok, derr = customer.arm:delete(ra.id, { api_version = cmk.API.roles })
            if not ok then cmk.raise("delete role assignment " .. ra.id .. ": " .. tostring(derr) .. " [customer]", 0) end
            deleted[#deleted + 1] = ra.id
          end
        end
        return { deleted = deleted }
      end },
    { name = "disable_key", title = "disable the key", needs = { "role_assignment" },
      plan = function(ctx) return ctx.params.disable_key and ("disable the current version of key %s (customer)"):format(cmk.key_name(ctx)) or "none (disable_key=false)" end,
      run = function(ctx)
        if not ctx.params.disable_key then return { disabled = false } end
        local customer = ctx.context("customer")
        local name = cmk.key_name(ctx)
        local vault = cmk.get_or_absent(customer.arm, cmk.vault_id(ctx), { api_version = cmk.API.vaults }, "key vault", "customer")
        if not vault then return { disabled = false, absent = "vault" } end
        local key = cmk.get_or_absent(customer.arm, vault.id .. "/keys/" .. name, { api_version = cmk.API.keys }, "key " .. name, "customer")
        if not key then return { disabled = false, absent = "key" } end
        local version = tostring(key.properties.keyUriWithVersion):match("/keys/[^/]+/([^/?]+)")
        if key.properties.attributes and key.properties.attributes.enabled == false then return { disabled = true, version = version } end
        local ok, err = customer.keyvault:update_key(vault.properties.vaultUri, name, version, { enabled = false })
        if not ok then cmk.raise(("disable key %s: %s [customer tenant: needs Key Vault Crypto Officer]"):format(name, tostring(err)), 0) end
        return { disabled = true, version = version }
      end },
  },
  outputs = function(ctx)
    return { deleted_role_assignments = ctx.outputs.role_assignment.deleted, key_disabled = ctx.outputs.disable_key.disabled }
  end,
}
