-- Microsoft.Authorization for the emulated ARM: built-in roleDefinitions (list, get, $filter by
-- roleName) and roleAssignments at any scope (PUT, GET, DELETE, list with $filter) with the
-- directory check (PrincipalNotFound), RoleAssignmentExists and the visibility delay.
local core = require "cmkflow.core"
local rbac = require "cmkflow.emulator.rbac"
local arm = require "cmkflow.emulator.arm_context"

local M = {}

local RA = "Microsoft.Authorization/roleAssignments"
local RD = "Microsoft.Authorization/roleDefinitions"


local function filter_arg(ctx) return ctx.req.args and ctx.req.args["$filter"] or nil end

-- ---- role definitions -----------------------------------------------------------------------

local function definitions(ctx, rest)
  local s, h, b = ctx:guard(RD, ctx.scope == "" and "/" or ctx.scope, RD .. "/read")
  if s then return s, h, b end
  if #rest == 2 then
    local def = rbac.role(rest[2])
    if not def or rest[2]:lower() ~= def.id then
      return ctx:error(404, "RoleDefinitionDoesNotExist", "The specified role definition with ID '" .. rest[2]
        .. "' does not exist.")
    end
    return ctx:json(200, rbac.definition_body(def, ctx.sub))
  end
  local f = filter_arg(ctx)
  local want = f and (f:match("^%s*roleName%s+eq%s+'(.-)'%s*$") or f:match("^%s*rolename%s+eq%s+'(.-)'%s*$"))
  if f and not want and not f:match("^%s*type%s+eq%s+'BuiltInRole'%s*$") then
    return ctx:error(400, "BadRequest", "Invalid $filter: '" .. f .. "'.")
  end
  local items = {}
  for _, row in ipairs(rbac.builtins()) do
    local def = rbac.role(row[2])
    if not want or def.name:lower() == want:lower() then items[#items + 1] = rbac.definition_body(def, ctx.sub) end
  end
  return ctx:json(200, arm.page(items))
end

-- ---- role assignments -----------------------------------------------------------------------

local function view(ctx, rec)
  local b = rec.body
  local p = b.properties
  return { id = b.id, name = b.name, type = RA, properties = {
    roleDefinitionId = p.roleDefinitionId, principalId = p.principalId, principalType = p.principalType,
    scope = p.scope, condition = p.condition, conditionVersion = p.conditionVersion, description = p.description,
    createdOn = p.createdOn, updatedOn = p.updatedOn, createdBy = p.createdBy, updatedBy = p.updatedBy } }
end

local function same_tuple(p, role_id, principal, scope)
  local def = rbac.role(p.roleDefinitionId)
  return def and def.id == role_id and p.principalId:lower() == principal
     and p.scope:lower():gsub("/+$", "") == scope:lower()
end

local function list(ctx)
  local scope = ctx.scope
  local s, h, b = ctx:guard(RA, scope == "" and "/" or scope, RA .. "/read")
  if s then return s, h, b end
  local f = filter_arg(ctx)
  local at_scope, principal
  if f then
    at_scope = f:match("atScope%(%)") ~= nil
    principal = f:match("principalId%s+eq%s+'([^']+)'") or f:match("assignedTo%('([^']+)'%)")
    if not at_scope and not principal then
      return ctx:error(400, "UnsupportedQuery", "The filter '" .. f .. "' is not supported.")
    end
  end
  local items = {}
  -- the tenant's (or the principal's) assignments, in id order as a full listing gives them
  local candidates = {}
  for _, r in pairs(principal and ctx.st:role_assignments_of(ctx.tid, principal)
                    or ctx.st:resources_in_tenant(ctx.tid, RA)) do
    candidates[#candidates + 1] = r
  end
  table.sort(candidates, function(a, b) return a.id:lower() < b.id:lower() end)
  for _, r in ipairs(candidates) do
    local p = r.body.properties
    if r.tenant == ctx.tid and (not principal or p.principalId:lower() == principal:lower()) then
      local above = rbac.scope_contains(p.scope, scope)
      local below = rbac.scope_contains(scope, p.scope)
      if above or (below and not at_scope) then items[#items + 1] = view(ctx, r) end
    end
  end
  return ctx:json(200, arm.page(items))
end

local function put(ctx, name, id)
  local st = ctx.st
  if not core.crypto.is_guid(name) then
    return ctx:error(400, "InvalidRoleAssignmentId", "The role assignment ID '" .. name
      .. "' is not valid. The role assignment ID must be a GUID.")
  end
  local body, bs, bh, bb = ctx:body()
  if not body then return bs, bh, bb end
  local props = type(body.properties) == "table" and body.properties or {}
  if type(props.roleDefinitionId) ~= "string" or props.roleDefinitionId == "" then
    return ctx:error(400, "InvalidRoleDefinitionId", "The role definition ID '' is not valid.")
  end
  local def = rbac.role(props.roleDefinitionId)
  local suffix = def and ("/roledefinitions/" .. def.id)
  local rid = props.roleDefinitionId:lower()
  if not def or (rid ~= def.id and rid:sub(-#suffix) ~= suffix) then
    return ctx:error(400, "RoleDefinitionDoesNotExist", "The specified role definition with ID '"
      .. tostring(props.roleDefinitionId:match("([^/]+)$")) .. "' does not exist.")
  end
  if type(props.principalId) ~= "string" or not core.crypto.is_guid(props.principalId) then
    return ctx:error(400, "InvalidPrincipalId", "A valid principal ID must be provided for role assignment.")
  end
  local principal = props.principalId:lower()
  local tenant = ctx.tenant
  local sp = st:principal(tenant, principal)
  if not sp and props.principalType then sp = st:principal(tenant, principal, true) end
  if not sp then
    return ctx:error(400, "PrincipalNotFound", ("Principal %s does not exist in the directory %s. Check that you have "
      .. "the correct principal ID. If you are creating this principal and then immediately assigning a role, this "
      .. "error might be related to a replication delay. In this case, set the role assignment principalType property "
      .. "to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype"):format(
      principal:gsub("%-", ""), tenant.id))
  end
  local scope = ctx.scope
  local existing = arm.find(st, id)
  for _, r in pairs(st:role_assignments_of(tenant.id, principal)) do
    if r ~= existing and r.tenant == tenant.id and same_tuple(r.body.properties, def.id, principal, scope) then
      return ctx:error(409, "RoleAssignmentExists", "The role assignment already exists. The ID of the existing role "
        .. "assignment is " .. r.body.name:gsub("%-", "") .. ".")
    end
  end
  local legacy = not arm.api_at_least(ctx.api_version, "2022-04-01")
  if existing then
    if not same_tuple(existing.body.properties, def.id, principal, scope) then
      return ctx:error(409, "RoleAssignmentUpdateNotPermitted",
        "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.")
    end
    return ctx:json(legacy and 201 or 200, view(ctx, existing))
  end
  local rec = rbac.add_assignment(st, tenant, { role = def.id, scope = scope, principal_id = principal, name = name:lower(),
    principal_type = props.principalType or (sp.servicePrincipalType and "ServicePrincipal"),
    created_by = ctx.oid, visible_at = st:visible_from("role_assignment") })
  rec.body.properties.description = props.description
  return ctx:json(201, view(ctx, rec))
end

local function assignments(ctx, rest)
  local method = ctx.req.method
  if #rest == 1 then
    if method ~= "GET" then return nil end
    return list(ctx)
  end
  if ctx.scope == "" or not ctx.sub then
    return ctx:error(400, "InvalidScope", "The scope '/' is not valid for role assignments in this emulator.")
  end
  local name = rest[2]
  local id = ctx.scope .. "/providers/" .. RA .. "/" .. name
  local action = ({ PUT = "write", GET = "read", DELETE = "delete" })[method]
  if not action then return nil end
  local s, h, b = ctx:guard(RA, ctx.scope, RA .. "/" .. action)
  if s then return s, h, b end
  local rec = arm.find(ctx.st, id)
  if method == "GET" then
    if not rec then
      return ctx:error(404, "RoleAssignmentNotFound", "The role assignment '" .. name .. "' is not found.")
    end
    return ctx:json(200, view(ctx, rec))
  elseif method == "DELETE" then
    if not rec then return ctx:empty(204) end
    ctx.st.resources[id:lower()] = nil
    return ctx:json(200, view(ctx, rec))
  end
  return put(ctx, name, id)
end

function M.handle(ctx, rest)
  local kind = rest[1] and rest[1]:lower()
  if kind == "roledefinitions" and #rest <= 2 and ctx.req.method == "GET" then return definitions(ctx, rest) end
  if kind == "roleassignments" and #rest <= 2 then return assignments(ctx, rest) end
  return nil
end

return M
