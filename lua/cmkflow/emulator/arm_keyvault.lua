-- Microsoft.KeyVault for the emulated ARM (control plane): vaults (PUT, PATCH, GET, DELETE as a
-- soft delete, list), deletedVaults (list, get, purge), checkNameAvailability. The ARM keys API
-- (vaults/{v}/keys) is answered by keyvault_arm_keys.handle(st, req, ctx).
-- The vault record lives in st.resources (body.properties: tenantId, enableRbacAuthorization,
-- accessPolicies, enablePurgeProtection, softDeleteRetentionInDays, vaultUri, ...);
-- soft-deleted vaults in st.deleted_vaults[lower name] = { record, deletionDate, scheduledPurgeDate, location }.
local core = require "cmkflow.core"
local clouds = require "cmkflow.util.clouds"
local arm = require "cmkflow.emulator.arm_context"
local arm_keys = require "cmkflow.emulator.keyvault_arm_keys"
local json = core.json

local M = {}

local TYPE = "Microsoft.KeyVault/vaults"
M.TYPE = TYPE


local VAULT_SUFFIX_BY_ARM = {}
for _, c in pairs(clouds.CLOUDS) do VAULT_SUFFIX_BY_ARM[c.arm] = c.keyvault_suffix end

-- The vault URI as clients of this origin reach it: public suffix through the real ARM hostname,
-- {name}.vault.localhost:PORT on the single-origin layout.
function M.vault_uri(req, name)
  local host = (req.headers and req.headers.host or ""):lower()
  local bare, port = host:match("^([^:]+):?(%d*)$")
  local suffix = VAULT_SUFFIX_BY_ARM[bare or ""]
  if suffix then return "https://" .. name:lower() .. "." .. suffix .. "/" end
  return "https://" .. name:lower() .. ".vault.localhost" .. ((port and port ~= "") and (":" .. port) or "") .. "/"
end

local function deleted(st)
  st.deleted_vaults = st.deleted_vaults or {}
  return st.deleted_vaults
end

local function valid_name(name)
  return #name >= 3 and #name <= 24 and name:match("^%a[%w%-]*[%w]$") ~= nil and not name:find("--", 1, true)
end

local function name_invalid(ctx, name)
  return ctx:error(400, "VaultNameNotValid", ("The vault name '%s' is invalid. A vault's name must be between 3-24 "
    .. "alphanumeric characters. The name must begin with a letter, end with a letter or digit, and not contain "
    .. "consecutive hyphens. Follow this link for more information: https://go.microsoft.com/fwlink/?linkid=2147742"):format(name))
end

local function name_taken_text(name)
  return ("The vault name '%s' is already in use. Vault names are globally unique so it is possible that the name is "
    .. "already taken. If you are sure that the vault name was not taken then it is possible that a vault with the same "
    .. "name was recently deleted but not purged after being placed in a recoverable state. If the vault is in a "
    .. "recoverable state then the vault will need to be purged before reusing the name. For more information about "
    .. "VaultAlreadyExists, soft delete and purging a vault follow this link "
    .. "https://go.microsoft.com/fwlink/?linkid=2147740."):format(name)
end

-- The live vault record named name (any subscription), or nil.
function M.find_by_name(st, name)
  name = name:lower()
  for _, r in pairs(st:resources_named(TYPE, name)) do
    if r.type == TYPE and r.body.name:lower() == name then return r end
  end
end

-- RegisteringDns becomes Succeeded once the vault's DNS name exists (the vault_dns delay).
function M.settle(st, rec)
  local p = rec.body.properties
  if p.provisioningState == "RegisteringDns" and st:now() >= (rec.internal.dns_at or 0) then
    p.provisioningState = "Succeeded"
  end
end

-- Soft delete (DELETE, or the resource group going away).
function M.on_delete(st, rec)
  local now = st:now()
  local days = rec.body.properties.softDeleteRetentionInDays or 90
  deleted(st)[rec.body.name:lower()] = { record = rec, deletionDate = st:iso(now),
    scheduledPurgeDate = st:iso(now + days * 86400), purge_after = now + days * 86400, location = rec.body.location }
end

local function deleted_view(ctx, d)
  local r = d.record
  return { id = ("/subscriptions/%s/providers/Microsoft.KeyVault/locations/%s/deletedVaults/%s"):format(
      r.subscription, d.location, r.body.name), name = r.body.name, type = "Microsoft.KeyVault/deletedVaults",
    properties = { vaultId = r.id, location = d.location, deletionDate = d.deletionDate,
      scheduledPurgeDate = d.scheduledPurgeDate, tags = r.body.tags or json.object(),
      purgeProtectionEnabled = r.body.properties.enablePurgeProtection == true } }
end

-- What a PUT on an existing vault keeps of its properties (everything else is replaced).
local KEPT_ON_REPLACE = { "vaultUri", "enableSoftDelete", "enablePurgeProtection", "softDeleteRetentionInDays" }

local function bad(ctx, message) return ctx:error(400, "BadRequest", message) end

-- Validates and merges request properties `p` into `props` (the stored properties, or {} on create).
local function apply(ctx, props, p, creating)
  if p.tenantId ~= nil then
    if type(p.tenantId) ~= "string" or not core.crypto.is_guid(p.tenantId) then
      return bad(ctx, "The tenant ID '" .. tostring(p.tenantId) .. "' is not a valid GUID.")
    end
    if p.tenantId:lower() ~= ctx.tid then
      return bad(ctx, ("The tenant '%s' is not the tenant '%s' of subscription '%s'."):format(p.tenantId, ctx.tid, ctx.sub))
    end
  end
  if p.sku ~= nil then
    local name = type(p.sku) == "table" and type(p.sku.name) == "string" and p.sku.name:lower()
    if name ~= "standard" and name ~= "premium" then
      return ctx:error(400, "SkuNotSupported", "The SKU '" .. tostring(type(p.sku) == "table" and p.sku.name)
        .. "' is not supported. Supported SKUs are 'standard' and 'premium'.")
    end
  end
  if p.enableSoftDelete == false and (creating or props.enableSoftDelete ~= false) then
    return bad(ctx, "The property \"enableSoftDelete\" cannot be set to false. Enabling the 'soft delete' "
      .. "functionality is an irreversible action.")
  end
  if p.softDeleteRetentionInDays ~= nil then
    local d = p.softDeleteRetentionInDays
    if math.type(d) ~= "integer" or d < 7 or d > 90 then
      return bad(ctx, "The property \"softDeleteRetentionInDays\" must be between 7 and 90.")
    end
  end
  if p.enablePurgeProtection == false and props.enablePurgeProtection == true then
    return bad(ctx, "The property \"enablePurgeProtection\" cannot be set to false. Enabling the purge protection for "
      .. "a vault is an irreversible action.")
  end
  if p.accessPolicies ~= nil then
    if type(p.accessPolicies) ~= "table" or #p.accessPolicies > 1024 then
      return bad(ctx, "The property \"accessPolicies\" must be an array of at most 1024 entries.")
    end
    for i, ap in ipairs(p.accessPolicies) do
      if type(ap) ~= "table" or type(ap.tenantId) ~= "string" or type(ap.objectId) ~= "string"
         or type(ap.permissions) ~= "table" then
        return bad(ctx, ("Access policy %d needs tenantId, objectId and permissions."):format(i - 1))
      end
      if ap.tenantId:lower() ~= ctx.tid then
        return bad(ctx, ("The tenant ID '%s' of access policy %d does not match the vault's tenant '%s'."):format(
          ap.tenantId, i - 1, ctx.tid))
      end
    end
  end
  for _, k in ipairs { "tenantId", "sku", "enableSoftDelete", "softDeleteRetentionInDays", "enablePurgeProtection",
                       "enableRbacAuthorization", "accessPolicies", "enabledForDeployment", "enabledForDiskEncryption",
                       "enabledForTemplateDeployment", "networkAcls", "publicNetworkAccess" } do
    if p[k] ~= nil then props[k] = p[k] end
  end
  if props.tenantId then props.tenantId = props.tenantId:lower() end
  return nil
end

local function vaults(ctx, rest)
  local st, method = ctx.st, ctx.req.method
  if #rest == 1 then
    return arm.list_collection(ctx, TYPE, function(c, r) M.settle(c.st, r) return r.body end)
  end
  if not ctx.rg then return nil end
  local name = rest[2]
  if #rest >= 3 then
    if rest[3]:lower() == "keys" then
      local s, h, b = ctx:check_api(TYPE .. "/keys")
      if s then return s, h, b end
      ctx.vault_name, ctx.key_path = name, { table.unpack(rest, 4) }
      return arm_keys.handle(st, ctx.req, ctx)
    end
    return nil
  end
  local id = arm.resource_id(ctx, TYPE, name)
  local ok, body, h, b = arm.resource_request(ctx, TYPE, id)
  if not ok then return body, h, b end -- body: the status of the answer
  local rec = arm.find(st, id)
  if rec then M.settle(st, rec) end
  if method == "GET" then
    if not rec then return ctx:not_found(TYPE, name, ctx.rg) end
    return ctx:json(200, rec.body)
  elseif method == "DELETE" then
    if not rec then return ctx:empty(204) end
    st.resources[id:lower()] = nil
    M.on_delete(st, rec)
    return ctx:empty(200)
  end
  local p = type(body.properties) == "table" and body.properties or nil
  if method == "PATCH" then
    if not rec then return ctx:not_found(TYPE, name, ctx.rg) end
    local props = {}
    for k, v in pairs(rec.body.properties) do props[k] = v end
    local es, eh, eb = apply(ctx, props, p or {}, false)
    if es then return es, eh, eb end
    rec.body.properties = props
    if type(body.tags) == "table" then rec.body.tags = body.tags end
    return ctx:json(200, rec.body)
  end
  -- PUT
  if not valid_name(name) then return name_invalid(ctx, name) end
  local loc = arm.location(body.location)
  if not loc or loc == "" then
    return ctx:error(400, "LocationRequired", "The location property is required for this definition.")
  end
  if not p then return bad(ctx, "The request is missing the required property 'properties'.") end
  local recover = type(p.createMode) == "string" and p.createMode:lower() == "recover"
  local gone = deleted(st)[name:lower()]
  if not rec then
    local other = M.find_by_name(st, name)
    if other or (gone and not (recover and gone.record.id:lower() == id:lower())) then
      return ctx:error(409, "VaultAlreadyExists", name_taken_text(name))
    end
    if recover then
      if not gone then
        return ctx:error(404, "DeletedVaultNotFound", "The deleted vault '" .. name .. "' could not be found.")
      end
      deleted(st)[name:lower()] = nil
      st.resources[id:lower()] = gone.record
      return ctx:json(200, gone.record.body)
    end
  elseif rec.body.location ~= loc then
    return ctx:error(409, "InvalidResourceLocation", ("The resource '%s' already exists in location '%s' in resource "
      .. "group '%s'. A resource with the same name cannot be created in location '%s'. Please select a new resource "
      .. "name."):format(name, rec.body.location, ctx.rg, loc))
  end
  -- PUT replaces the vault's settings: a property the body leaves out (networkAcls,
  -- publicNetworkAccess, accessPolicies, ...) goes back to its default (Vaults - Create Or Update,
  -- https://learn.microsoft.com/rest/api/keyvault/keyvault/vaults/create-or-update). Kept: the
  -- read-only vaultUri and what cannot be undone (soft delete, purge protection).
  if p.tenantId == nil then return bad(ctx, "The request is missing the required property 'tenantId'.") end
  if p.sku == nil then return bad(ctx, "The request is missing the required property 'sku'.") end
  local props = {}
  if rec then
    for _, k in ipairs(KEPT_ON_REPLACE) do props[k] = rec.body.properties[k] end
  end
  local es, eh, eb = apply(ctx, props, p, rec == nil)
  if es then return es, eh, eb end
  if props.enableSoftDelete == nil then props.enableSoftDelete = true end
  if props.softDeleteRetentionInDays == nil then props.softDeleteRetentionInDays = 90 end
  if props.enableRbacAuthorization == nil then
    props.enableRbacAuthorization = arm.api_at_least(ctx.api_version, "2026-02-01")
  end
  props.accessPolicies = props.accessPolicies or json.array()
  props.vaultUri = props.vaultUri or M.vault_uri(ctx.req, name)
  -- (without a vault_dns delay the name exists at once: Succeeded, so clients do not poll; the
  -- delay is a number of seconds or a profile's distribution, drawn once for the new vault)
  local dns_at, registering = not rec and st:visible_from("vault_dns"), nil
  if dns_at then
    registering = dns_at > st:now()
  else
    local d = st.knobs.delays.vault_dns
    registering = type(d) == "table" or (d or 0) > 0
  end
  props.provisioningState = rec and props.provisioningState or (registering and "RegisteringDns" or "Succeeded")
  props.publicNetworkAccess = props.publicNetworkAccess or "Enabled"
  props.createMode = nil
  if rec then
    rec.body.properties = props
    rec.body.tags = type(body.tags) == "table" and body.tags or json.object()
    return ctx:json(200, rec.body)
  end
  -- a new vault registers its DNS name first (provisioningState RegisteringDns, then Succeeded);
  -- until then its data plane is an unknown host (keyvault.lua), https://learn.microsoft.com/azure/key-vault/general/overview
  rec = { id = id, type = TYPE, tenant = ctx.tid, subscription = ctx.sub, resource_group = ctx.rg:lower(),
    visible_at = st:now(), internal = { dns_at = dns_at },
    body = { id = id, name = name, type = TYPE, location = loc, tags = body.tags or json.object(), properties = props,
             systemData = { createdBy = ctx.claims.appid or ctx.oid, createdByType = "Application", createdAt = st:iso(),
                            lastModifiedBy = ctx.claims.appid or ctx.oid, lastModifiedByType = "Application",
                            lastModifiedAt = st:iso() } } }
  st.resources[id:lower()] = rec
  return ctx:json(201, rec.body)
end

-- /subscriptions/{s}/providers/Microsoft.KeyVault/{deletedVaults | locations/{l}/deletedVaults/{n}[/purge]
-- | checkNameAvailability}
local function subscription_level(ctx, rest)
  local st, method = ctx.st, ctx.req.method
  local lower = {}
  for i, s in ipairs(rest) do lower[i] = s:lower() end
  local sub_scope = "/subscriptions/" .. ctx.sub
  if lower[1] == "checknameavailability" and #rest == 1 and method == "POST" then
    local s, h, b = ctx:guard(TYPE, sub_scope, "Microsoft.KeyVault/checkNameAvailability/read")
    if s then return s, h, b end
    local body, bs, bh, bb = ctx:body()
    if not body then return bs, bh, bb end
    local name = tostring(body.name or "")
    if not valid_name(name) then
      return ctx:json(200, { nameAvailable = false, reason = "AccountNameInvalid",
        message = "The vault name '" .. name .. "' is invalid." })
    end
    if M.find_by_name(st, name) or deleted(st)[name:lower()] then
      return ctx:json(200, { nameAvailable = false, reason = "AlreadyExists", message = name_taken_text(name) })
    end
    return ctx:json(200, { nameAvailable = true })
  end
  if lower[1] == "deletedvaults" and #rest == 1 and method == "GET" then
    local s, h, b = ctx:guard(TYPE, sub_scope, "Microsoft.KeyVault/deletedVaults/read")
    if s then return s, h, b end
    local items = {}
    for _, d in pairs(deleted(st)) do
      if d.record.subscription == ctx.sub then items[#items + 1] = deleted_view(ctx, d) end
    end
    table.sort(items, function(a, b) return a.name:lower() < b.name:lower() end)
    return ctx:json(200, arm.page(items))
  end
  if lower[1] == "locations" and lower[3] == "deletedvaults" and (#rest == 4 or (#rest == 5 and lower[5] == "purge")) then
    local name, purge = rest[4], #rest == 5
    if (purge and method ~= "POST") or (not purge and method ~= "GET") then return nil end
    local s, h, b = ctx:guard(TYPE, sub_scope, "Microsoft.KeyVault/locations/deletedVaults/"
      .. (purge and "purge/action" or "read"))
    if s then return s, h, b end
    local d = deleted(st)[name:lower()]
    if not d or d.record.subscription ~= ctx.sub or d.location ~= arm.location(rest[2]) then
      return ctx:error(404, "ResourceNotFound", "The Resource 'Microsoft.KeyVault/deletedVaults/" .. name
        .. "' under resource group '' was not found.")
    end
    if not purge then return ctx:json(200, deleted_view(ctx, d)) end
    if d.record.body.properties.enablePurgeProtection == true and st:now() < d.purge_after then
      return ctx:error(409, "Conflict", ("Operation 'PurgeVault' is not allowed because purge protection is enabled for "
        .. "vault '%s'. The vault will be purged automatically after %s."):format(name, d.scheduledPurgeDate))
    end
    deleted(st)[name:lower()] = nil
    st.vault_keys[name:lower()] = nil
    return ctx:empty(200)
  end
  return nil
end

function M.handle(ctx, rest)
  local kind = rest[1] and rest[1]:lower()
  if kind == "vaults" then return vaults(ctx, rest) end
  if not ctx.rg then return subscription_level(ctx, rest) end
  return nil
end

return M
