-- Azure RBAC for the emulator: built-in role definitions, role assignments (stored as ARM
-- resources of type Microsoft.Authorization/roleAssignments in st.resources) and the check
-- "may principal P perform action A at scope S", with scope inheritance and wildcards.
local core = require "cmkflow.core"
local json = core.json

local function copy(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  return c
end

local M = {}

local RA_TYPE = "Microsoft.Authorization/roleAssignments"
M.RA_TYPE = RA_TYPE

-- name, id, actions, notActions, dataActions, notDataActions
local BUILTINS = {
  { "Owner", "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", { "*" }, {}, {}, {} },
  { "Contributor", "b24988ac-6180-42a0-ab88-20f7382dd24c", { "*" },
    { "Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write", "Microsoft.Authorization/elevateAccess/Action" }, {}, {} },
  { "Reader", "acdd72a7-3385-48ef-bd9f-f606fc27fa8c", { "*/read" }, {}, {}, {} },
  { "User Access Administrator", "18d7d88d-d35e-4fb5-a5c3-7773c2a72d9d", { "*/read", "Microsoft.Authorization/*" }, {}, {}, {} },
  { "Key Vault Administrator", "00482a5a-887f-4fb3-b363-3b7fe8e74483",
    { "Microsoft.Authorization/*/read", "Microsoft.KeyVault/*/read" }, {}, { "Microsoft.KeyVault/vaults/*" }, {} },
  { "Key Vault Contributor", "f25e0fa2-a7c8-4377-a976-54943a77a395",
    { "Microsoft.Authorization/*/read", "Microsoft.KeyVault/*", "Microsoft.Resources/subscriptions/resourceGroups/read" }, {}, {}, {} },
  { "Key Vault Crypto Officer", "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
    { "Microsoft.Authorization/*/read", "Microsoft.KeyVault/*/read" }, {}, { "Microsoft.KeyVault/vaults/keys/*", "Microsoft.KeyVault/vaults/keyrotationpolicies/*" }, {} },
  { "Key Vault Crypto User", "12338af0-0e69-4776-bea7-57ae8d297424", {}, {},
    { "Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/vaults/keys/update/action",
      "Microsoft.KeyVault/vaults/keys/backup/action", "Microsoft.KeyVault/vaults/keys/encrypt/action",
      "Microsoft.KeyVault/vaults/keys/decrypt/action", "Microsoft.KeyVault/vaults/keys/wrap/action",
      "Microsoft.KeyVault/vaults/keys/unwrap/action", "Microsoft.KeyVault/vaults/keys/sign/action",
      "Microsoft.KeyVault/vaults/keys/verify/action" }, {} },
  { "Key Vault Crypto Service Encryption User", "e147488a-f6f5-4113-8e2d-b22465e65bf6",
    { "Microsoft.EventGrid/eventSubscriptions/write", "Microsoft.EventGrid/eventSubscriptions/read",
      "Microsoft.EventGrid/eventSubscriptions/delete" }, {},
    { "Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/vaults/keys/wrap/action",
      "Microsoft.KeyVault/vaults/keys/unwrap/action" }, {} },
  { "Managed Identity Operator", "f1a07417-d97a-45cb-824c-7a7467783830",
    { "Microsoft.ManagedIdentity/userAssignedIdentities/*/read", "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
      "Microsoft.Authorization/*/read", "Microsoft.Resources/subscriptions/resourceGroups/read" }, {}, {}, {} },
  { "Managed Identity Contributor", "e40ec5ca-96e0-45a2-b4ff-59039f2c2b59",
    { "Microsoft.ManagedIdentity/userAssignedIdentities/read", "Microsoft.ManagedIdentity/userAssignedIdentities/write",
      "Microsoft.ManagedIdentity/userAssignedIdentities/delete", "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/*",
      "Microsoft.Authorization/*/read", "Microsoft.Resources/subscriptions/resourceGroups/read" }, {}, {}, {} },
  -- https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage#storage-blob-data-reader
  { "Storage Blob Data Reader", "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    { "Microsoft.Storage/storageAccounts/blobServices/containers/read",
      "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action" }, {},
    { "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read" }, {} },
  { "Storage Account Contributor", "17d1049b-9a84-46fb-8f53-869881c3d3ab",
    { "Microsoft.Storage/storageAccounts/*", "Microsoft.Authorization/*/read", "Microsoft.Resources/subscriptions/resourceGroups/read",
      "Microsoft.Insights/alertRules/*", "Microsoft.Support/*" }, {}, {}, {} },
}

local by_id, by_name = {}, {}
for _, r in ipairs(BUILTINS) do
  local def = { name = r[1], id = r[2], actions = r[3], notActions = r[4], dataActions = r[5], notDataActions = r[6] }
  by_id[def.id] = def
  by_name[def.name:lower()] = def
end

-- {lower name = true} of every built-in role (for seed validation).
function M.role_names()
  local t = {}
  for k in pairs(by_name) do t[k] = true end
  return t
end

-- A built-in role by name (case-insensitive), GUID, or full roleDefinitionId.
function M.role(ref)
  if type(ref) ~= "string" then return nil end
  ref = ref:lower()
  return by_name[ref] or by_id[ref] or by_id[ref:match("/roledefinitions/([%x%-]+)$") or ""]
end

function M.builtins() return BUILTINS end

-- ARM JSON of a role definition at a subscription (or tenant root when sub is nil).
function M.definition_body(def, sub)
  local prefix = sub and ("/subscriptions/" .. sub) or ""
  return {
    id = prefix .. "/providers/Microsoft.Authorization/roleDefinitions/" .. def.id,
    name = def.id, type = "Microsoft.Authorization/roleDefinitions",
    properties = { roleName = def.name, type = "BuiltInRole", description = def.name,
      assignableScopes = json.array { "/" },
      -- lists stay lists when empty: SDKs refuse {} where the schema says [string]
      permissions = json.array { { actions = json.array(copy(def.actions)), notActions = json.array(copy(def.notActions)),
        dataActions = json.array(copy(def.dataActions)), notDataActions = json.array(copy(def.notDataActions)) } } },
  }
end

-- Memo of a string function over a bounded working set (role patterns, actions, scopes): every
-- ARM, Graph and Key Vault request runs these checks, so they must not rebuild strings each time.
local function memo(fn, limit)
  local cache, size = {}, 0
  return function(x)
    local v = cache[x]
    if v == nil then
      if size >= limit then cache, size = {}, 0 end
      v = fn(x)
      cache[x], size = v, size + 1
    end
    return v
  end
end

local lower = memo(string.lower, 4096)
local compile = memo(function(pattern)
  return "^" .. pattern:lower():gsub("[%.%-%+%?%(%)%[%]%^%$%%]", "%%%0"):gsub("%*", ".*") .. "$"
end, 1024)
-- a scope in canonical form: lower case, no trailing slash
local scope_key = memo(function(s) return (s:lower():gsub("/+$", "")) end, 65536)
M.lower = lower

-- Case-insensitive Azure action pattern match ('*' matches any run of characters).
local function matches(pattern, action)
  return lower(action):match(compile(pattern)) ~= nil
end

local function any_match(list, action)
  for _, p in ipairs(list) do if matches(p, action) then return true end end
  return false
end

function M.permits(def, action, data)
  if data then
    return any_match(def.dataActions, action) and not any_match(def.notDataActions, action)
  end
  return any_match(def.actions, action) and not any_match(def.notActions, action)
end

-- true when assignment scope `outer` contains `inner` (same, or a parent on a segment boundary).
function M.scope_contains(outer, inner)
  outer, inner = scope_key(outer), scope_key(inner)
  if outer == "" or inner == outer then return true end
  return #inner > #outer and inner:byte(#outer + 1) == 47 and inner:sub(1, #outer) == outer   -- 47: '/'
end

-- Assignments (visible ones) for principal object id in tenant, as resource records.
function M.assignments(st, tenant_id, principal_id)
  local out = {}
  principal_id = (principal_id or ""):lower()
  for _, r in pairs(st:role_assignments_of(tenant_id or "", principal_id)) do
    if r.type == RA_TYPE and r.tenant == tenant_id and st:visible(r)
       and r.body.properties.principalId:lower() == principal_id then
      out[#out + 1] = r
    end
  end
  return out
end

-- May principal perform action at scope? Returns true, or false and the assignments considered.
function M.check(st, tenant_id, principal_id, scope, action, data)
  for _, r in ipairs(M.assignments(st, tenant_id, principal_id)) do
    local p = r.body.properties
    local def = M.role(p.roleDefinitionId)
    if def and M.scope_contains(p.scope, scope) and M.permits(def, action, data) then return true, r end
  end
  return false
end

-- Creates a role assignment record (used by the seed and by the ARM provider). Returns the record.
-- name: GUID (default: UUIDv5 of scope, role, principal — the same tuple gives the same name).
function M.add_assignment(st, tenant, fields)
  local def = assert(M.role(fields.role), "unknown role")
  local scope = fields.scope:gsub("/+$", "")
  local sub = scope:match("^/subscriptions/([^/]+)") or ""
  local name = fields.name or core.crypto.uuid5(st.namespace, (scope .. "|" .. def.id .. "|" .. fields.principal_id):lower())
  local id = scope .. "/providers/Microsoft.Authorization/roleAssignments/" .. name
  local body = {
    id = id, name = name, type = RA_TYPE,
    properties = {
      roleDefinitionId = "/subscriptions/" .. sub .. "/providers/Microsoft.Authorization/roleDefinitions/" .. def.id,
      principalId = fields.principal_id, principalType = fields.principal_type or "ServicePrincipal",
      scope = scope, createdOn = st:iso(), updatedOn = st:iso(),
      createdBy = fields.created_by, updatedBy = fields.created_by,
    },
  }
  local record = { id = id, type = RA_TYPE, tenant = tenant.id, subscription = sub:lower(), body = body,
                   visible_at = fields.visible_at or st:now() }
  st.resources[id:lower()] = record
  return record
end

function M.seed_assignment(st, tenant, principal_id, role, scope)
  return M.add_assignment(st, tenant, { role = role, scope = scope, principal_id = principal_id })
end

return M
