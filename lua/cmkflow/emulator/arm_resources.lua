-- Microsoft.Resources for the emulated ARM: subscriptions, tenants, resource groups (PUT, GET,
-- HEAD, DELETE with contained resources, list) and the resource-group delete operation results.
local core = require "cmkflow.core"
local json = core.json
local rbac = require "cmkflow.emulator.rbac"
local arm = require "cmkflow.emulator.arm_context"

local M = {}

local RG_TYPE = "Microsoft.Resources/resourceGroups"
local RG_API = "Microsoft.Resources/resourceGroups"
local SUB_API = "Microsoft.Resources/subscriptions"
M.RG_TYPE = RG_TYPE


-- Has the principal any (visible) role assignment at, above or below the subscription?
local function has_any_role(st, tid, oid, sub)
  local scope = "/subscriptions/" .. sub
  for _, r in ipairs(rbac.assignments(st, tid, oid)) do
    local s = r.body.properties.scope
    if rbac.scope_contains(s, scope) or rbac.scope_contains(scope, s) then return true end
  end
  return false
end

local function subscription_body(tenant, s)
  return { id = "/subscriptions/" .. s.id, authorizationSource = "RoleBased", managedByTenants = json.array(),
    subscriptionId = s.id, tenantId = tenant.id, displayName = s.name, state = s.state or "Enabled",
    subscriptionPolicies = { locationPlacementId = "Public_2014-09-01", quotaId = "PayAsYouGo_2014-09-01",
                             spendingLimit = "Off" } }
end

-- GET /subscriptions: the subscriptions of the token's tenant where the caller has any role.
function M.subscriptions(ctx)
  if ctx.req.method ~= "GET" then return nil end
  local s, h, b = ctx:check_api(SUB_API)
  if s then return s, h, b end
  local tenant = ctx.st.tenants[ctx.tid]
  local items = {}
  for id, sub in pairs(tenant and tenant.subscriptions or {}) do
    if has_any_role(ctx.st, ctx.tid, ctx.oid, id) then items[#items + 1] = subscription_body(tenant, sub) end
  end
  table.sort(items, function(a, b) return a.subscriptionId < b.subscriptionId end)
  local page = arm.page(items)
  page.count = { type = "Total", value = #items }
  return ctx:json(200, page)
end

function M.subscription(ctx)
  if ctx.req.method ~= "GET" then return nil end
  local s, h, b = ctx:check_api(SUB_API)
  if s then return s, h, b end
  if not has_any_role(ctx.st, ctx.tid, ctx.oid, ctx.sub) then
    return ctx:error(404, "SubscriptionNotFound", "The subscription '" .. ctx.sub .. "' could not be found.")
  end
  return ctx:json(200, subscription_body(ctx.tenant, ctx.tenant.subscriptions[ctx.sub]))
end

-- GET /tenants: the token's (home) tenant.
function M.tenants(ctx)
  if ctx.req.method ~= "GET" then return nil end
  local s, h, b = ctx:check_api("Microsoft.Resources/tenants")
  if s then return s, h, b end
  local t = ctx.st.tenants[ctx.tid]
  return ctx:json(200, arm.page { { id = "/tenants/" .. t.id, tenantId = t.id, tenantCategory = "Home",
    displayName = t.name, defaultDomain = t.domain, domains = json.array { t.domain }, tenantType = "AAD",
    countryCode = "US" } })
end

-- ---- resource groups ------------------------------------------------------------------------

local function valid_rg_name(name)
  return #name >= 1 and #name <= 90 and name:match("^[%w%-_%.%(%)]+$") ~= nil and name:sub(-1) ~= "."
end

-- Removes every resource under scope (groups' contents), letting providers clean up their side.
-- providers: the router's table, lower-case namespace -> provider module (ctx.providers).
function M.delete_under(st, scope, providers)
  local doomed = {}
  for _, r in ipairs(st:resources_under(scope)) do
    if r.type ~= RG_TYPE then doomed[#doomed + 1] = r.id:lower() end
  end
  table.sort(doomed)
  for _, key in ipairs(doomed) do
    local r = st.resources[key]
    if r then
      local ns = r.type:match("^([^/]+)/"):lower()
      local mod = providers[ns]
      st.resources[key] = nil
      if mod and mod.on_delete then mod.on_delete(st, r) end
    end
  end
end

function M.list_groups(ctx)
  if ctx.req.method ~= "GET" then return nil end
  return arm.list(ctx, RG_TYPE, "/subscriptions/" .. ctx.sub, nil, RG_API,
                    "Microsoft.Resources/subscriptions/resourceGroups/read")
end

local GROUP_ACTIONS = { PUT = "write", PATCH = "write", GET = "read", HEAD = "read", DELETE = "delete" }

function M.group(ctx)
  local st, req, method = ctx.st, ctx.req, ctx.req.method
  local rec = ctx:resource_group()
  local id = rec and rec.id or ("/subscriptions/" .. ctx.sub .. "/resourceGroups/" .. ctx.rg)
  local ok, body, h, b = arm.resource_request(ctx, RG_API, id, { actions = GROUP_ACTIONS,
    action_type = "Microsoft.Resources/subscriptions/resourceGroups", group_optional = true })
  if not ok then return body, h, b end -- body: the status of the answer
  if method == "GET" then
    if not rec then return ctx:rg_not_found(ctx.rg) end
    return ctx:json(200, rec.body)
  elseif method == "HEAD" then
    return ctx:empty(rec and 204 or 404)
  elseif method == "DELETE" then
    if not rec then return ctx:rg_not_found(ctx.rg) end
    M.delete_under(st, rec.id, ctx.providers)
    st.resources[rec.id:lower()] = nil
    local op = st:id("operation")
    return ctx:empty(202, {
      location = ("%s/subscriptions/%s/operationresults/%s?api-version=%s"):format(ctx.origin, ctx.sub,
        op:gsub("%-", ""):upper(), ctx.api_version),
      ["retry-after"] = "15" })
  elseif method == "PATCH" then
    if not rec then return ctx:rg_not_found(ctx.rg) end
    if type(body.tags) == "table" then rec.body.tags = body.tags end
    return ctx:json(200, rec.body)
  end
  -- PUT
  if not valid_rg_name(ctx.rg) then
    return ctx:error(400, "InvalidResourceGroupName", ("The resource group name '%s' is invalid. It may contain "
      .. "only alphanumeric characters, underscores, parentheses, hyphens and periods (not at the end), and be "
      .. "1 to 90 characters long."):format(ctx.rg))
  end
  local loc = arm.location(body.location)
  if not loc or loc == "" then
    return ctx:error(400, "LocationRequired", "The location property is required for this definition.")
  end
  if rec then
    if rec.body.location ~= loc then
      return ctx:error(409, "InvalidResourceGroupLocation", ("Invalid resource group location '%s'. The Resource "
        .. "group already exists in location '%s'."):format(loc, rec.body.location))
    end
    -- PUT replaces: what the body leaves out is gone (ARM's create-or-replace,
    -- https://github.com/Azure/azure-resource-manager-rpc/blob/master/v1.0/resource-api-reference.md)
    rec.body.tags, rec.body.managedBy = body.tags, body.managedBy
    return ctx:json(200, rec.body)
  end
  rec = { id = id, type = RG_TYPE, tenant = ctx.tid, subscription = ctx.sub, resource_group = ctx.rg:lower(),
    visible_at = st:now(), internal = {},
    body = { id = id, name = ctx.rg, type = RG_TYPE, location = loc, tags = body.tags,
             managedBy = body.managedBy, properties = { provisioningState = "Succeeded" } } }
  st.resources[id:lower()] = rec
  return ctx:json(201, rec.body)
end

-- GET /subscriptions/{s}/operationresults/{id}: resource-group deletions complete at once.
function M.operation_result(ctx)
  if ctx.req.method ~= "GET" then return nil end
  return ctx:empty(200)
end

return M
