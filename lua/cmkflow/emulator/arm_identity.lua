-- Microsoft.ManagedIdentity/userAssignedIdentities for the emulated ARM. Creating an identity also
-- registers it as a managed identity (st.identities) and as a ManagedIdentity service principal in
-- the subscription's tenant directory (visible after the service_principal delay).
local json = require("cmkflow.core").json
local arm = require "cmkflow.emulator.arm_context"

local M = {}

local TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
M.TYPE = TYPE


local function valid_name(name) return #name >= 3 and #name <= 128 and name:match("^[%w][%w%-_]*$") ~= nil end

-- Drops the identity and its service principal (on DELETE and when its resource group goes).
function M.on_delete(st, rec)
  local pid = rec.body.properties and rec.body.properties.principalId
  if not pid then return end
  st.identities[pid] = nil
  local tenant = st.tenants[rec.tenant]
  if tenant then tenant.service_principals[pid] = nil end
end

local function view(ctx, rec)
  local b = rec.body
  local props = { tenantId = b.properties.tenantId, principalId = b.properties.principalId,
                  clientId = b.properties.clientId }
  if arm.api_at_least(ctx.api_version, "2024-11-30") then props.isolationScope = b.properties.isolationScope end
  return { id = b.id, name = b.name, type = TYPE, location = b.location, tags = b.tags or json.object(),
           properties = props }
end

function M.handle(ctx, rest)
  if not rest[1] or rest[1]:lower() ~= "userassignedidentities" or #rest > 2 then return nil end
  local st, method = ctx.st, ctx.req.method
  if #rest == 1 then return arm.list_collection(ctx, TYPE, view) end
  if not ctx.rg then return nil end
  local name = rest[2]
  local id = arm.resource_id(ctx, TYPE, name)
  local ok, body, h, b = arm.resource_request(ctx, TYPE, id)
  if not ok then return body, h, b end -- body: the status of the answer
  local rec = arm.find(st, id)
  if method == "GET" then
    if not rec then return ctx:not_found(TYPE, name, ctx.rg) end
    return ctx:json(200, view(ctx, rec))
  elseif method == "DELETE" then
    if not rec then return ctx:empty(204) end
    st.resources[id:lower()] = nil
    M.on_delete(st, rec)
    return ctx:empty(200)
  elseif method == "PATCH" then
    if not rec then return ctx:not_found(TYPE, name, ctx.rg) end
    if type(body.tags) == "table" then rec.body.tags = body.tags end
    return ctx:json(200, view(ctx, rec))
  end
  -- PUT
  if not valid_name(name) then
    return ctx:error(400, "InvalidResourceName", ("Resource name '%s' is invalid. The name can be between 3 and 128 "
      .. "characters long, must start with a letter or number, and may contain only letters, numbers, hyphens and "
      .. "underscores."):format(name))
  end
  local loc = arm.location(body.location)
  if not loc or loc == "" then
    return ctx:error(400, "LocationRequired", "The location property is required for this definition.")
  end
  local scope_props = type(body.properties) == "table" and body.properties or {}
  local isolation = scope_props.isolationScope or "None"
  if isolation ~= "None" and isolation ~= "Regional" then
    return ctx:error(400, "InvalidRequestContent", "The value '" .. tostring(isolation)
      .. "' is not valid for property 'isolationScope'. Allowed values: None, Regional.")
  end
  if rec then
    if rec.body.location ~= loc then
      return ctx:error(409, "InvalidResourceLocation", ("The resource '%s' already exists in location '%s' in resource "
        .. "group '%s'. A resource with the same name cannot be created in location '%s'. Please select a new "
        .. "resource name."):format(name, rec.body.location, ctx.rg, loc))
    end
    -- PUT replaces (ARM's create-or-replace): tags left out are gone
    rec.body.tags = body.tags
    rec.body.properties.isolationScope = isolation
    return ctx:json(200, view(ctx, rec))
  end
  local principal_id, client_id = st:id("uami-principal"), st:id("uami-client")
  rec = { id = id, type = TYPE, tenant = ctx.tid, subscription = ctx.sub, resource_group = ctx.rg:lower(),
    visible_at = st:now(), internal = {},
    body = { id = id, name = name, type = TYPE, location = loc, tags = body.tags,
             properties = { tenantId = ctx.tid, principalId = principal_id, clientId = client_id,
                            isolationScope = isolation } } }
  st.resources[id:lower()] = rec
  st.identities[principal_id] = { clientId = client_id, principalId = principal_id, tenant = ctx.tid, resource_id = id }
  st:add_service_principal(ctx.tenant, { id = principal_id, appId = client_id, displayName = name,
    servicePrincipalType = "ManagedIdentity", appOwnerOrganizationId = nil,
    alternativeNames = { "isExplicit=True", id }, visible_at = st:visible_from("service_principal") })
  return ctx:json(201, view(ctx, rec))
end

return M
