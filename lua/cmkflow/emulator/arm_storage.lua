-- Microsoft.Storage/storageAccounts for the emulated ARM: create as a long-running operation
-- (202 + Location + Retry-After; the account is invisible until the operation is polled), PUT of
-- an existing account and PATCH synchronous 200, GET, DELETE, list, checkNameAvailability, and the
-- request-local CMK validations Storage applies to keySource = Microsoft.Keyvault
-- (specification/storage/resource-manager/Microsoft.Storage/stable/*/storage.json, Encryption). The cross-tenant key check itself is
-- storage_cmk.check(st, ctx) -> true | nil, status, code, message (when that module exists).
local core = require "cmkflow.core"
local arm = require "cmkflow.emulator.arm_context"
local storage_cmk = require "cmkflow.emulator.storage_cmk"
local json = core.json

local M = {}

local TYPE = "Microsoft.Storage/storageAccounts"
M.TYPE = TYPE
-- Azure's Storage RP answers Retry-After: 17; the emulator defaults to 1 s so that runs against it
-- stay fast. The knob st.knobs.lro_retry_after_s (seed knobs / PUT /_emulator/...) sets it.
M.RETRY_AFTER = "1"


local function valid_name(name) return #name >= 3 and #name <= 24 and name:match("^[a-z0-9]+$") ~= nil end

local function invalid_text(name)
  return name .. " is not a valid storage account name. Storage account name must be between 3 and 24 characters in "
    .. "length and use numbers and lower-case letters only."
end

local function find_by_name(st, name)
  for _, r in pairs(st:resources_named(TYPE, name)) do
    if r.type == TYPE and r.body.name == name then return r end
  end
end
-- The account record of a (globally unique) account name, or nil.
M.find_by_name = find_by_name

local function lower_key_map(t)
  local out = {}
  for k, v in pairs(type(t) == "table" and t or {}) do out[k:lower()] = { id = k, value = v } end
  return out
end

-- The check of the cross-tenant key (storage_cmk.lua), looked up at call time so that a spec can
-- stand in for it.
local function cmk_check(st, cctx) return storage_cmk.check(st, cctx) end

-- Builds the identity block of the response from the request's, with principalId/clientId from
-- st.identities. Returns identity | nil, status, headers, body.
local function build_identity(ctx, req_identity, old)
  if req_identity == nil then return old end
  if type(req_identity) ~= "table" then return nil, ctx:error(400, "InvalidRequestContent", "identity must be an object.") end
  local t = tostring(req_identity.type or "None")
  local norm = t:lower():gsub("%s", "")
  local allowed = { none = true, systemassigned = true, userassigned = true, ["systemassigned,userassigned"] = true }
  if not allowed[norm] then
    return nil, ctx:error(400, "InvalidIdentityType", "The identity type '" .. t .. "' is not supported.")
  end
  local out = { type = t }
  if norm:find("systemassigned", 1, true) then
    out.principalId = old and old.principalId or ctx.st:id("storage-system-identity")
    out.tenantId = ctx.tid
  end
  local uais = type(req_identity.userAssignedIdentities) == "table" and req_identity.userAssignedIdentities or {}
  local ids = {}
  for k in pairs(uais) do ids[#ids + 1] = k end
  if norm:find("userassigned", 1, true) then
    if #ids > 1 then return nil, ctx:error(400, "BadRequest", "Only 1 User Assigned identity is permitted here.") end
    if #ids == 0 then
      return nil, ctx:error(400, "BadRequest", "The identity type 'UserAssigned' needs one user-assigned identity.")
    end
    out.userAssignedIdentities = {}
    for _, uid in ipairs(ids) do
      local rec = arm.find(ctx.st, uid)
      if not rec or rec.type ~= "Microsoft.ManagedIdentity/userAssignedIdentities" then
        return nil, ctx:error(400, "FailedIdentityOperation", ("Identity operation for resource '%s' failed with error "
          .. "'Failed to perform resource identity operation. Status: 'NotFound'. Response: 'Resource '%s' was not "
          .. "found.''."):format(ctx.account_id, uid))
      end
      local denied = ctx:authorize(rec.id, "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action")
      if denied then
        return nil, ctx:error(403, "LinkedAuthorizationFailed", ("The client '%s' with object id '%s' has permission to "
          .. "perform action 'Microsoft.Storage/storageAccounts/write' on scope '%s'; however, it does not have "
          .. "permission to perform action 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the "
          .. "linked scope(s) '%s' or the linked scope(s) are invalid."):format(ctx.client_name, ctx.oid,
          ctx.account_id, rec.id))
      end
      out.userAssignedIdentities[rec.id] = { principalId = rec.body.properties.principalId,
                                             clientId = rec.body.properties.clientId }
    end
  elseif #ids > 0 then
    return nil, ctx:error(400, "BadRequest", "userAssignedIdentities may only be given with identity type UserAssigned.")
  end
  return out
end

-- Validates and builds properties.encryption. Returns encryption | nil, status, headers, body.
local function build_encryption(ctx, enc, old, identity, creating)
  if enc == nil then
    return old or { keySource = "Microsoft.Storage", requireInfrastructureEncryption = false,
      services = { blob = { enabled = true, keyType = "Account", lastEnabledTime = ctx.st:iso() },
                   file = { enabled = true, keyType = "Account", lastEnabledTime = ctx.st:iso() } } }
  end
  if type(enc) ~= "table" then return nil, ctx:error(400, "InvalidRequestContent", "encryption must be an object.") end
  local src = tostring(enc.keySource or "Microsoft.Storage")
  local out = { keySource = src:lower() == "microsoft.keyvault" and "Microsoft.Keyvault" or "Microsoft.Storage",
    requireInfrastructureEncryption = enc.requireInfrastructureEncryption == true, services = {} }
  if src:lower() ~= "microsoft.keyvault" and src:lower() ~= "microsoft.storage" then
    return nil, ctx:error(400, "InvalidValuesForRequestParameters",
      "Values for request parameters are invalid: properties.encryption.keySource.")
  end
  local old_services = old and old.services or {}
  for name, svc in pairs(type(enc.services) == "table" and enc.services or { blob = {}, file = {} }) do
    local kt = type(svc) == "table" and svc.keyType or nil
    local prev = old_services[name]
    if prev and kt and kt ~= prev.keyType and not creating then
      return nil, ctx:error(400, "InvalidValuesForRequestParameters",
        "Values for request parameters are invalid: properties.encryption.services." .. name .. ".keyType.")
    end
    out.services[name] = { enabled = true, keyType = kt or (prev and prev.keyType) or "Account",
                           lastEnabledTime = prev and prev.lastEnabledTime or ctx.st:iso() }
  end
  for name, prev in pairs(old_services) do out.services[name] = out.services[name] or prev end
  if out.keySource == "Microsoft.Storage" then return out end
  local kvp = enc.keyvaultproperties
  if type(kvp) ~= "table" or type(kvp.keyvaulturi) ~= "string" or kvp.keyvaulturi == ""
     or type(kvp.keyname) ~= "string" or kvp.keyname == "" then
    return nil, ctx:error(400, "MissingKeyvaultProperties", "The encryption keyvault properties are missing from the request.")
  end
  local eid = type(enc.identity) == "table" and enc.identity or {}
  local uai = eid.userAssignedIdentity
  local has_system = identity and identity.principalId and not creating
  if (type(uai) ~= "string" or uai == "") and not has_system then
    return nil, ctx:error(400, "BadRequest", "Missing pre-requisites to enable EncryptionAtRest/Customer Managed Key for "
      .. "this storage account. For more information, see - https://aka.ms/storagecmkconfiguration")
  end
  if type(uai) == "string" and uai ~= "" then
    local attached = lower_key_map(identity and identity.userAssignedIdentities)[uai:lower()]
    if not attached then
      return nil, ctx:error(400, "InvalidValuesForRequestParameters",
        "Values for request parameters are invalid: properties.encryption.identity.")
    end
    uai = attached.id
  end
  out.keyvaultproperties = { keyvaulturi = kvp.keyvaulturi, keyname = kvp.keyname, keyversion = kvp.keyversion or "" }
  out.identity = { userAssignedIdentity = uai, federatedIdentityClientId = eid.federatedIdentityClientId }
  return out
end

local function endpoints(name)
  local e = {}
  for _, svc in ipairs { "blob", "queue", "table", "file", "dfs", "web" } do
    e[svc] = "https://" .. name .. "." .. svc .. ".core.windows.net/"
  end
  return e
end

-- Builds the account body for a PUT/PATCH. Returns body | nil, status, headers, body.
local function build(ctx, name, req, old, creating)
  local st = ctx.st
  local ob = old and old.body or {}
  local props = type(req.properties) == "table" and req.properties or {}
  local identity, s, h, b = build_identity(ctx, req.identity, ob.identity)
  if s then return nil, s, h, b end
  local oldp = ob.properties or {}
  local enc
  enc, s, h, b = build_encryption(ctx, props.encryption, oldp.encryption, identity, creating)
  if s then return nil, s, h, b end
  local sku = req.sku or ob.sku
  local body = { id = ctx.account_id, name = name, type = TYPE, location = ob.location or arm.location(req.location),
    kind = req.kind or ob.kind, sku = { name = sku.name, tier = (tostring(sku.name):match("^Premium") and "Premium" or "Standard") },
    tags = req.tags or ob.tags or json.object(), identity = identity,
    properties = {
      provisioningState = "Succeeded", creationTime = oldp.creationTime or st:iso(),
      primaryLocation = ob.location or arm.location(req.location), statusOfPrimary = "available",
      primaryEndpoints = endpoints(name), encryption = enc,
      accessTier = props.accessTier or oldp.accessTier or "Hot",
      allowBlobPublicAccess = props.allowBlobPublicAccess ~= nil and props.allowBlobPublicAccess
        or (oldp.allowBlobPublicAccess == true),
      minimumTlsVersion = props.minimumTlsVersion or oldp.minimumTlsVersion or "TLS1_2",
      supportsHttpsTrafficOnly = props.supportsHttpsTrafficOnly ~= false,
    } }
  -- Leaving a customer-managed key: Storage unwraps the account encryption key with it one last
  -- time to protect it with a Microsoft-managed key, so the old key must still be usable (see
  -- docs/emulator.md, "Offboarding after a revoke")
  local oldp_enc = oldp.encryption
  if old and enc.keySource ~= "Microsoft.Keyvault" and type(oldp_enc) == "table"
     and oldp_enc.keySource == "Microsoft.Keyvault" then
    local identity_id = oldp_enc.identity and oldp_enc.identity.userAssignedIdentity
    local result, status, code, message = cmk_check(st, { tenant = ctx.tenant, tenant_id = ctx.tid,
      resource_id = ctx.account_id, subscription = ctx.sub, account = old.body, account_id = ctx.account_id,
      identity = identity_id and ob.identity and ob.identity.userAssignedIdentities
        and ob.identity.userAssignedIdentities[identity_id],
      keyvaultproperties = oldp_enc.keyvaultproperties, previous = old.body, req = ctx.req, api_version = ctx.api_version })
    if not result then
      if type(status) == "table" then status, code, message = status.status, status.code, status.message end
      return nil, ctx:error(status or 400, code or "KeyVaultAccessForbidden", (message or "") ..
        " Switching to Microsoft-managed keys needs the current customer-managed key once more.")
    end
  end
  if enc.keySource == "Microsoft.Keyvault" then
    local cctx = { tenant = ctx.tenant, tenant_id = ctx.tid, resource_id = ctx.account_id, subscription = ctx.sub, account = body,
      account_id = ctx.account_id, identity = enc.identity and enc.identity.userAssignedIdentity
        and identity.userAssignedIdentities[enc.identity.userAssignedIdentity],
      keyvaultproperties = enc.keyvaultproperties, federatedIdentityClientId = enc.identity and
        enc.identity.federatedIdentityClientId, previous = old and old.body, req = ctx.req, api_version = ctx.api_version }
    local result, status, code, message = cmk_check(st, cctx)
    if not result then
      if type(status) == "table" then status, code, message = status.status, status.code, status.message end
      return nil, ctx:error(status or 400, code or "KeyVaultAccessForbidden", message or "")
    end
    if type(result) == "table" then
      for k, v in pairs(result) do enc.keyvaultproperties[k] = v end
    end
  end
  return body
end

-- A listed account: pending creates are not listed yet.
local function list_view(_, rec)
  if not rec.internal.pending then return rec.body end
end

-- Blob containers, the management-plane way (Azure/azure-rest-api-specs:
-- specification/storage/resource-manager/Microsoft.Storage/Storage/stable/*/blob.json,
-- BlobContainers_Create / _Get / _Delete): PUT creates (or replaces its publicAccess and metadata),
-- GET reads, DELETE removes. The Storage readme's tags list blob.json beside storage.json, so a
-- container takes the account's api-versions.
local CONTAINER_TYPE = TYPE .. "/blobServices/containers"
M.CONTAINER_TYPE = CONTAINER_TYPE

local function valid_container(name)
  return #name >= 3 and #name <= 63 and name:match("^[a-z0-9][a-z0-9%-]*[a-z0-9]$") ~= nil and not name:find("--", 1, true)
end

local function containers(ctx, account, cname)
  local st, method = ctx.st, ctx.req.method
  local id = account.id .. "/blobServices/default/containers/" .. cname
  local ok, req_body, h, b = arm.resource_request(ctx, TYPE, id, { action_type = CONTAINER_TYPE })
  if not ok then return req_body, h, b end
  local rec = arm.find(st, id)
  if method == "GET" then
    if not rec then return ctx:error(404, "ContainerNotFound", "The specified container does not exist.") end
    return ctx:json(200, rec.body)
  elseif method == "DELETE" then
    if rec then st.resources[id:lower()] = nil end
    return ctx:empty(rec and 200 or 204)
  elseif method ~= "PUT" then
    return ctx:error(405, "MethodNotAllowed", "The requested method is not allowed for this resource.")
  end
  if not valid_container(cname) then
    return ctx:error(400, "ContainerOperationFailure", "The specified resource name contains invalid characters.")
  end
  local props = type(req_body.properties) == "table" and req_body.properties or {}
  local body = { id = id, name = cname, type = CONTAINER_TYPE, etag = '"0x' .. ("%X"):format(st:now()) .. '"',
    properties = { publicAccess = props.publicAccess or "None", metadata = props.metadata,
      hasImmutabilityPolicy = false, hasLegalHold = false, deleted = false, remainingRetentionDays = 0,
      leaseStatus = "Unlocked", leaseState = "Available", lastModifiedTime = st:iso() } }
  local status = rec and 200 or 201
  st.resources[id:lower()] = { id = id, type = CONTAINER_TYPE, tenant = ctx.tid, subscription = ctx.sub,
    resource_group = ctx.rg:lower(), visible_at = st:now(), internal = {}, body = body }
  return ctx:json(status, body)
end

local function accounts(ctx, rest)
  local st, method = ctx.st, ctx.req.method
  if #rest == 1 then return arm.list_collection(ctx, TYPE, list_view) end
  if ctx.rg and (#rest == 5 or #rest == 6) and rest[3]:lower() == "blobservices" and rest[4]:lower() == "default"
     and rest[5]:lower() == "containers" then
    local account = arm.find(st, arm.resource_id(ctx, TYPE, rest[2]))
    if not account or account.internal.pending then return ctx:not_found(TYPE, rest[2], ctx.rg) end
    if #rest == 5 then -- BlobContainers_List
      if method ~= "GET" then return nil end
      return arm.list(ctx, CONTAINER_TYPE, account.id, nil, TYPE, CONTAINER_TYPE .. "/read")
    end
    return containers(ctx, account, rest[6])
  end
  if not ctx.rg or #rest > 2 then return nil end
  local name = rest[2]
  local id = arm.resource_id(ctx, TYPE, name)
  ctx.account_id = id
  local ok, req_body, h, b = arm.resource_request(ctx, TYPE, id)
  if not ok then return req_body, h, b end -- req_body: the status of the answer
  local rec = arm.find(st, id)
  -- Azure finishes a create whether or not anyone polls it: a pending one is done once its
  -- Retry-After has passed (a client killed before its first poll can resume with a PUT)
  if rec and rec.internal.pending
     and st:now() >= rec.internal.started + (tonumber(st.knobs.lro_retry_after_s or M.RETRY_AFTER) or 1) then
    rec.internal.pending = nil
    rec.body.properties.provisioningState = "Succeeded"
  end
  if rec and rec.internal.pending then
    if method == "GET" or method == "DELETE" or method == "PATCH" then rec = nil
    else
      return ctx:error(409, "StorageAccountOperationInProgress",
        "An operation is currently performing on this storage account that requires exclusive access.")
    end
  end
  if method == "GET" then
    if not rec then return ctx:not_found(TYPE, name, ctx.rg) end
    -- a versionless key follows the key's newest version at Storage's daily check
    storage_cmk.refresh(st, rec.body, rec.internal)
    return ctx:json(200, rec.body)
  elseif method == "DELETE" then
    if not rec then return ctx:empty(204) end
    st.resources[id:lower()] = nil
    for _, c in ipairs(arm.records(st, CONTAINER_TYPE, id)) do st.resources[c.id:lower()] = nil end
    return ctx:empty(200)
  elseif method == "PATCH" then
    if not rec then return ctx:not_found(TYPE, name, ctx.rg) end
    if req_body.location and arm.location(req_body.location) ~= rec.body.location then
      return ctx:error(400, "InvalidValuesForRequestParameters", "Values for request parameters are invalid: location.")
    end
    local body, es, eh, eb = build(ctx, name, req_body, rec, false)
    if not body then return es, eh, eb end
    rec.body = body
    return ctx:json(200, body)
  end
  -- PUT
  if not valid_name(name) then return ctx:error(400, "AccountNameInvalid", invalid_text(name)) end
  local other = find_by_name(st, name)
  if other and other ~= rec then
    return ctx:error(409, "StorageAccountAlreadyTaken", "The storage account named " .. name .. " is already taken.")
  end
  for _, field in ipairs { "sku", "kind", "location" } do
    if req_body[field] == nil then
      return ctx:error(400, "InvalidRequestContent", ("The request content was invalid and could not be deserialized: "
        .. "'Required property '%s' not found in JSON. Path '', line 1, position 1.'."):format(field))
    end
  end
  if type(req_body.sku) ~= "table" or type(req_body.sku.name) ~= "string" then
    return ctx:error(400, "InvalidRequestContent", "The request content was invalid: 'sku.name' is required.")
  end
  if rec and arm.location(req_body.location) ~= rec.body.location then
    return ctx:error(409, "InvalidResourceLocation", ("The resource '%s' already exists in location '%s' in resource "
      .. "group '%s'. A resource with the same name cannot be created in location '%s'. Please select a new resource "
      .. "name."):format(name, rec.body.location, ctx.rg, arm.location(req_body.location)))
  end
  local quota = not rec and (st.knobs.throttling.storage or {}).accounts_per_region
  if quota then
    local loc, n = arm.location(req_body.location), 0
    for _, r in ipairs(arm.records(st, TYPE, "/subscriptions/" .. ctx.sub)) do
      if r.body.location == loc then n = n + 1 end
    end
    -- https://learn.microsoft.com/azure/storage/common/scalability-targets-standard-account
    if n >= quota then
      return ctx:error(409, "SubscriptionQuotaExceeded", ("Subscription %s already contains %d storage accounts in "
        .. "location %s and the maximum allowed is %d."):format(ctx.sub, n, loc, quota))
    end
  end
  local body, es, eh, eb = build(ctx, name, req_body, rec, rec == nil)
  if not body then return es, eh, eb end
  if rec then
    rec.body = body
    return ctx:json(200, body)
  end
  local op = st:id("storage-operation")
  body.properties.provisioningState = "Creating"
  rec = { id = id, type = TYPE, tenant = ctx.tid, subscription = ctx.sub, resource_group = ctx.rg:lower(),
    visible_at = st:now(), internal = { pending = true, operation = op, started = st:now() }, body = body }
  st.resources[id:lower()] = rec
  return ctx:empty(202, {
    location = ("%s/subscriptions/%s/providers/Microsoft.Storage/locations/%s/asyncoperations/%s?monitor=true&api-version=%s")
      :format(ctx.origin, ctx.sub, body.location, op, ctx.api_version),
    ["retry-after"] = tostring(st.knobs.lro_retry_after_s or M.RETRY_AFTER) })
end

local function subscription_level(ctx, rest)
  local st, method = ctx.st, ctx.req.method
  local lower = {}
  for i, s in ipairs(rest) do lower[i] = s:lower() end
  if lower[1] == "checknameavailability" and #rest == 1 and method == "POST" then
    local s, h, b = ctx:guard(TYPE, "/subscriptions/" .. ctx.sub, "Microsoft.Storage/checkNameAvailability/read")
    if s then return s, h, b end
    local body, bs, bh, bb = ctx:body()
    if not body then return bs, bh, bb end
    local name = tostring(body.name or "")
    if not valid_name(name) then
      return ctx:json(200, { nameAvailable = false, reason = "AccountNameInvalid", message = invalid_text(name) })
    end
    if find_by_name(st, name) then
      return ctx:json(200, { nameAvailable = false, reason = "AlreadyExists",
        message = "The storage account named " .. name .. " is already taken." })
    end
    return ctx:json(200, { nameAvailable = true })
  end
  if lower[1] == "locations" and (lower[3] == "asyncoperations" or lower[3] == "operations") and #rest == 4
     and method == "GET" then
    local s, h, b = ctx:check_api(TYPE)
    if s then return s, h, b end
    local op = rest[4]:lower()
    local r = st:resource_by_operation(op)
    if r then
      if r.type == TYPE and r.subscription == ctx.sub and r.internal.operation == op then
        local denied = { ctx:authorize(r.id, TYPE .. "/read") }
        if denied[1] then return table.unpack(denied, 1, 3) end
        -- Completes on the first poll (keeps specs fast); later polls repeat the final answer.
        r.internal.pending = nil
        r.body.properties.provisioningState = "Succeeded"
        return ctx:json(200, r.body)
      end
    end
    return ctx:error(404, "ResourceNotFound", "The operation '" .. rest[4] .. "' could not be found.")
  end
  return nil
end

function M.handle(ctx, rest)
  local kind = rest[1] and rest[1]:lower()
  if kind == "storageaccounts" then return accounts(ctx, rest) end
  if not ctx.rg then return subscription_level(ctx, rest) end
  return nil
end

return M
