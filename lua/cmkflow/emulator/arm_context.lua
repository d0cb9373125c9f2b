-- What the emulated ARM's provider modules (arm_*.lua) share: the request context `ctx` the
-- router (arm.lua) builds for each request (ARM's error envelope, the JSON body, the api-version
-- check, RBAC), the supported api-versions and locations, and the helpers for records, lists and
-- the checks before acting on a resource.
-- ARM's error envelope: https://learn.microsoft.com/azure/azure-resource-manager/management/common-deployment-errors
local core = require "cmkflow.core"
local json = core.json
local respond = require "cmkflow.emulator.respond"
local rbac = require "cmkflow.emulator.rbac"
local api_versions = require "cmkflow.emulator.api_versions"

local concat, ipairs, pairs, type, tostring = table.concat, ipairs, pairs, type, tostring

local M = {}

-- Supported api-versions per resource type (lower case): generated from the providers' REST specs
-- (Azure/azure-rest-api-specs, each service's AutoRest readme.md) by tools/apiversions/generate.lua.
M.API_VERSIONS = api_versions
-- Types answered by ARM itself (InvalidApiVersionParameter) rather than a resource provider
-- (NoRegisteredProviderFound).
local ARM_OWN = { ["microsoft.resources"] = true, ["microsoft.authorization"] = true }

M.LOCATIONS = { "eastus", "eastus2", "westus", "westus2", "westcentralus", "centralus", "northeurope", "westeurope",
  "uksouth", "francecentral", "germanywestcentral", "swedencentral", "japaneast", "australiaeast", "brazilsouth" }

-- ---- request context ------------------------------------------------------------------------

local Ctx = {}
Ctx.__index = Ctx

-- ARM error response (status, headers, body).
function Ctx:error(status, code, message, extra, headers)
  local s, h, b = respond.arm_error(self.req, status, code, message, extra)
  for k, v in pairs(headers or {}) do h[k] = v end
  return s, h, b
end

function Ctx:json(status, value, headers) return respond.json(self.req, status, value, headers) end
function Ctx:empty(status, headers) return respond.empty(self.req, status, headers) end

-- The decoded JSON body (a table), or nil, status, headers, body for an unreadable one.
function Ctx:body()
  if self._body ~= nil then return self._body end
  local text = self.req.body or ""
  if text == "" then self._body = {} return self._body end
  local v, err = json.decode(text)
  if type(v) ~= "table" then
    return nil, self:error(400, "InvalidRequestContent",
      "The request content was invalid and could not be deserialized: '" .. tostring(err or "not a JSON object") .. "'.")
  end
  self._body = v
  return v
end

-- The api-version check for a resource type: nil when supported, else the error response.
function Ctx:check_api(rtype, location)
  local v = self.api_version
  local list = M.API_VERSIONS[rtype:lower()]
  if not list then return nil end
  for _, x in ipairs(list) do if x == v then return nil end end
  local ns, short = rtype:match("^([^/]+)/(.+)$")
  local supported = concat(list, ", ")
  if ARM_OWN[ns:lower()] then
    return self:error(400, "InvalidApiVersionParameter",
      ("The api-version '%s' is invalid. The supported versions are '%s'."):format(v, supported))
  end
  return self:error(400, "NoRegisteredProviderFound",
    ("No registered resource provider found for location '%s' and API version '%s' for type '%s'. "
     .. "The supported api-versions are '%s'. The supported locations are '%s'."):format(
      (location or "westeurope"):lower(), v, short:match("([^/]+)$"), supported, concat(M.LOCATIONS, ", ")))
end

-- May the caller perform action at scope? nil when yes, else the 403 AuthorizationFailed response.
function Ctx:authorize(scope, action)
  if rbac.check(self.st, self.tid, self.oid, scope, action) then return nil end
  return self:error(403, "AuthorizationFailed",
    ("The client '%s' with object id '%s' does not have authorization to perform action '%s' over scope '%s' "
     .. "or the scope is invalid. If access was recently granted, please refresh your credentials."):format(
      self.client_name, self.oid, action, scope))
end

-- api-version then RBAC; returns nil or the error response.
function Ctx:guard(rtype, scope, action, location)
  local s, h, b = self:check_api(rtype, location)
  if s then return s, h, b end
  return self:authorize(scope, action)
end

-- ARM's answer for a resource group that does not exist / a missing resource.
function Ctx:rg_not_found(rg)
  return self:error(404, "ResourceGroupNotFound", "Resource group '" .. rg .. "' could not be found.")
end

function Ctx:not_found(rtype, name, rg)
  return self:error(404, "ResourceNotFound", ("The Resource '%s/%s' under resource group '%s' was not found. "
    .. "For more details please go to https://aka.ms/ARMResourceNotFoundFix"):format(rtype, name, rg or ""))
end

-- The resource group record of this request's subscription (ctx.sub, name rg), or nil.
function Ctx:resource_group(rg)
  return self.st.resources[("/subscriptions/" .. self.sub .. "/resourcegroups/" .. (rg or self.rg or "")):lower()]
end

-- ---- shared helpers for provider modules ------------------------------------------------------

-- The canonical id of a resource in ctx's subscription and resource group (the group's stored case).
function M.resource_id(ctx, ns_type, name)
  local rgrec = ctx:resource_group()
  local rg = rgrec and rgrec.body.name or ctx.rg
  return ("/subscriptions/%s/resourceGroups/%s/providers/%s/%s"):format(ctx.sub, rg, ns_type, name)
end

function M.find(st, id) return st.resources[id:lower()] end

-- Records of type rtype (case-insensitive) whose id lies under prefix (an ARM scope), sorted by id.
function M.records(st, rtype, prefix)
  local out = st:resources_of(rtype, prefix)
  table.sort(out, function(a, b) return a.id:lower() < b.id:lower() end)
  return out
end

-- The 200 page listing the records of rtype under scope, after the api-version and the read
-- permission check (guard_type: the type both are checked for, rtype when nil). view(ctx, rec)
-- gives a record's item, or nil to leave it out; the stored body when view is nil.
function M.list(ctx, rtype, scope, view, guard_type, read_action)
  guard_type = guard_type or rtype
  local s, h, b = ctx:guard(guard_type, scope, read_action or guard_type .. "/read")
  if s then return s, h, b end
  local items = {}
  for _, r in ipairs(M.records(ctx.st, rtype, scope)) do
    local item
    if view then item = view(ctx, r) else item = r.body end
    if item ~= nil then items[#items + 1] = item end
  end
  return ctx:json(200, M.page(items))
end

-- A request on a collection of rtype: for a GET, the page (M.list) of the request's resource
-- group, or of its subscription when the path names none (404 for a resource group that does not
-- exist); nil for other methods.
function M.list_collection(ctx, rtype, view)
  if ctx.req.method ~= "GET" then return nil end
  local scope = "/subscriptions/" .. ctx.sub
  if ctx.rg then
    local rgrec = ctx:resource_group()
    if not rgrec then return ctx:rg_not_found(ctx.rg) end
    scope = rgrec.id
  end
  return M.list(ctx, rtype, scope, view)
end

-- ARM's action verb per method on one resource.
M.RESOURCE_ACTIONS = { PUT = "write", PATCH = "write", GET = "read", DELETE = "delete" }

-- The checks before acting on the resource id of type rtype: a method with an action, the JSON
-- body of a PUT or PATCH, the api-version, RBAC and (unless opts.group_optional) the resource
-- group. Returns true and the body (nil for other methods); or false and the status, headers and
-- body to answer with (false alone: a method this resource does not have, for ARM's 404).
-- opts: actions (method -> verb, RESOURCE_ACTIONS when nil), action_type (the permission's
-- type prefix, rtype when nil), group_optional.
function M.resource_request(ctx, rtype, id, opts)
  opts = opts or {}
  local method = ctx.req.method
  local action = (opts.actions or M.RESOURCE_ACTIONS)[method]
  if not action then return false end
  local body, s, h, b
  if method == "PUT" or method == "PATCH" then
    body, s, h, b = ctx:body()
    if not body then return false, s, h, b end
  end
  s, h, b = ctx:guard(rtype, id, (opts.action_type or rtype) .. "/" .. action, body and body.location)
  if s then return false, s, h, b end
  if not opts.group_optional and not ctx:resource_group() then return false, ctx:rg_not_found(ctx.rg) end
  return true, body
end

-- {value = [...]} (paging-ready: one page, no nextLink).
function M.page(items)
  local value = json.array()
  for i, v in ipairs(items) do value[i] = v end
  return { value = value }
end

-- Lower-case location without spaces ("West Europe" -> "westeurope").
function M.location(loc) return type(loc) == "string" and (loc:lower():gsub("%s+", "")) or nil end

-- The request's own origin ("https://host[:port]").
function M.origin(req)
  local host = req.headers and req.headers.host or ""
  if host == "" then host = (req.host or "127.0.0.1") .. ":" .. tostring(req.port or 443) end
  return (req.scheme or "https") .. "://" .. host
end

-- Compares two api-version strings (dates compare as text); true when a >= b.
function M.api_at_least(a, b) return (a or ""):sub(1, 10) >= b end

M.Ctx = Ctx
return M
