-- A custom workflow written from scratch (docs/lua-api.md, "Writing a workflow", explains every
-- field): tag an ISV storage account that uses a customer's key with the key version it uses, after
-- checking in the customer tenant that the key is enabled and which version is the newest.
--   cmkflow run examples/stamp-key-version.lua --config cmkflow.lua --param storage_account_id=ID
-- spec/example_workflow_spec.lua runs this exact file against the emulator.
local errors = require "cmkflow.azure.errors"

local STORAGE_API = "2023-01-01" -- Microsoft.Storage storageAccounts api-version

-- The version part of a key id https://VAULT.vault.azure.net/keys/NAME/VERSION.
local function version_of(kid) return type(kid) == "string" and kid:match("/keys/[^/]+/([^/?]+)") or nil end

return {
  name = "stamp-key-version",
  description = "Tag a storage account with the version of the customer's key it uses",
  params = {
    storage_account_id = { type = "string", required = true, pattern = "^/subscriptions/.+/storageAccounts/[%w]+$",
                           hint = "an ARM id /subscriptions/SUB/resourceGroups/RG/providers/"
                             .. "Microsoft.Storage/storageAccounts/NAME",
                           description = "the ISV's storage account" },
    tag = { type = "string", default = "cmk-key-version", description = "the tag's name" },
  },
  steps = {
    -- ISV tenant, read-only: which vault, key and version the account uses (Storage Accounts - Get
    -- Properties, https://learn.microsoft.com/rest/api/storagerp/storage-accounts/get-properties).
    { name = "account", title = "ISV: the account's key", mutates = false, run = function(ctx)
        local id = ctx.params.storage_account_id
        local account, err = ctx.context("isv").arm:get(id, { api_version = STORAGE_API })
        if not account and err.status == 404 then
          error(errors.new { code = "StorageAccountNotFound", tenant = "isv",
            message = "storage account " .. id .. " does not exist", hint = "check --param storage_account_id" })
        elseif not account then
          error(errors.new { code = err.code, message = "read storage account " .. id .. ": " .. err.message,
            tenant = "isv", hint = errors.explain(err), status = err.status, request_id = err.request_id })
        end
        local enc = account.properties.encryption or {}
        local kvp = enc.keyvaultproperties or {}
        if tostring(enc.keySource):lower() ~= "microsoft.keyvault" then
          error(errors.new { code = "NotCustomerManaged", tenant = "isv",
            message = "storage account " .. account.name .. " does not use a customer-managed key",
            hint = "run new-account or existing-account first" })
        end
        return { id = account.id, name = account.name, tags = account.tags, vault_uri = kvp.keyvaulturi,
                 key_name = kvp.keyname, version = version_of(kvp.currentVersionedKeyIdentifier) }
      end },

    -- Customer tenant, read-only: the key's newest version and whether it is enabled (Key Vault Get
    -- Key without a version, https://learn.microsoft.com/rest/api/keyvault/keys/get-key).
    { name = "key", title = "customer: the key's newest version", needs = { "account" }, mutates = false,
      run = function(ctx)
        local a = ctx.outputs.account
        local key, err = ctx.context("customer").keyvault:get_key(a.vault_uri, a.key_name)
        if not key then
          error(errors.new { code = err.code, message = "read key " .. a.key_name .. ": " .. err.message,
            tenant = "customer", hint = errors.explain(err), status = err.status })
        end
        if key.attributes and key.attributes.enabled == false then
          error(errors.new { code = "KeyDisabled", tenant = "customer",
            message = "key " .. a.key_name .. " is disabled: Azure Storage cannot use it",
            hint = "the customer re-enables the key" })
        end
        ctx.log("key %s: newest version %s", a.key_name, version_of(key.key.kid))
        return { kid = key.key.kid, newest = version_of(key.key.kid) }
      end },

    -- A pause for a person when the policy's approval(gate, ctx) says so (the default goes on).
    { name = "review", title = "review before tagging", gate = true, needs = { "account", "key" } },

    -- ISV tenant, the one change: PATCH the account's tags, keeping the others (Storage Accounts -
    -- Update, https://learn.microsoft.com/rest/api/storagerp/storage-accounts/update).
    { name = "stamp", title = "ISV: tag the account", needs = { "review" },
      plan = function(ctx)
        local id, tag = ctx.params.storage_account_id, ctx.params.tag
        return ("tag storage account %s with %s=<its key version>"):format(id, tag)
      end,
      run = function(ctx)
        local a, k = ctx.outputs.account, ctx.outputs.key
        local tags = {}
        for name, value in pairs(a.tags or {}) do tags[name] = value end
        tags[ctx.params.tag] = a.version
        local account, err = ctx.context("isv").arm:patch(a.id, { tags = tags }, { api_version = STORAGE_API })
        if not account then
          error(errors.new { code = err.code, message = "tag storage account " .. a.name .. ": " .. err.message,
            tenant = "isv", hint = errors.explain(err), status = err.status, request_id = err.request_id })
        end
        return { tags = account.tags, newest = a.version == k.newest }
      end },
  },

  -- What `cmkflow run` prints (and journals) when the run succeeds.
  outputs = function(ctx)
    return { storage_account = ctx.outputs.account.name, key = ctx.outputs.account.key_name,
             version = ctx.outputs.account.version, newest = ctx.outputs.stamp.newest,
             tags = ctx.outputs.stamp.tags }
  end,
}
