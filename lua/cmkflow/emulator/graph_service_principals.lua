-- The emulated Graph's service principals: the entity (shape, lookup by id / appId), create
-- from a visible application (multi-tenant apps in another tenant too), update, delete, and
-- `Prefer: create-if-missing` upserts by appId; new ones appear after the replication delay.
-- https://learn.microsoft.com/graph/api/resources/serviceprincipal
-- M.routes: route key -> {METHOD = fn(st, req, tenant, keys, body)}, merged by graph.lua.
local core = require "cmkflow.core"
local respond = require "cmkflow.emulator.respond"
local odata = require "cmkflow.emulator.graph_odata"
local applications = require "cmkflow.emulator.graph_applications"

local json, crypto = core.json, core.crypto
local ipairs, pairs, type, tostring = ipairs, pairs, type, tostring
local err, bad_request, denied = odata.err, odata.bad_request, odata.denied
local unknown_property, invalid_value = odata.unknown_property, odata.invalid_value
local base_url, lower, or_null, copy_array, str_array = odata.base_url, odata.lower, odata.or_null, odata.copy_array,
  odata.str_array
local owns = applications.owns

local M = {}

-- Filterable properties ($filter, see graph_odata.apply_filter).
M.FILTERS = { id = "ci", appId = "ci", displayName = "ci", accountEnabled = "bool", servicePrincipalNames = "any",
              servicePrincipalType = "ci", appOwnerOrganizationId = "ci" }

local SP_PROPS = {
  appId = "create", accountEnabled = true, displayName = true, tags = true, notes = true, description = true,
  appRoleAssignmentRequired = true, alternativeNames = "ignored", homepage = "ignored", loginUrl = "ignored",
  logoutUrl = "ignored", notificationEmailAddresses = "ignored", preferredSingleSignOnMode = "ignored",
  replyUrls = "ignored", servicePrincipalNames = "ignored", ["@odata.type"] = "ignored",
}

local function sp_view(st, sp, base, entity)
  local app = st:application_by_appid(sp.appId)
  local names = json.array { sp.appId }
  if app then
    for _, u in ipairs(app.identifierUris or {}) do names[#names + 1] = u end
  end
  local v = {
    id = sp.id, appId = sp.appId, displayName = or_null(sp.displayName),
    appDisplayName = or_null(app and app.displayName or sp.displayName),
    accountEnabled = sp.accountEnabled, servicePrincipalType = sp.servicePrincipalType,
    appOwnerOrganizationId = or_null(sp.appOwnerOrganizationId), servicePrincipalNames = names,
    signInAudience = or_null(app and app.signInAudience), alternativeNames = copy_array(sp.alternativeNames),
    tags = copy_array(sp.tags), notes = or_null(sp.notes), description = or_null(sp.description),
    appRoleAssignmentRequired = sp.appRoleAssignmentRequired == true, deletedDateTime = json.null,
  }
  if entity then v["@odata.context"] = base .. "/$metadata#servicePrincipals/$entity" end
  return v
end

local function find_sp(st, tenant, key)
  if key.prop == nil or key.prop == "id" then return st:principal(tenant, key.value) end
  if key.prop ~= "appId" then return nil, "badkey" end
  return st:service_principal_by_appid(tenant, key.value)
end

local function check_sp_fields(req, body, creating)
  for k, v in pairs(body) do
    local kind = SP_PROPS[k]
    if not kind then
      if k == "id" or k == "appOwnerOrganizationId" or k == "servicePrincipalType" then
        return table.pack(bad_request(req, "Property '" .. k .. "' is read-only and cannot be set."))
      end
      return table.pack(unknown_property(req, k, "servicePrincipal"))
    end
    if kind == "create" and not creating then
      return table.pack(bad_request(req, "Property '" .. k .. "' is read-only and cannot be set."))
    end
    if (k == "accountEnabled" or k == "appRoleAssignmentRequired") and type(v) ~= "boolean" then
      return table.pack(invalid_value(req, k, "ServicePrincipal"))
    end
    if (k == "displayName" or k == "notes" or k == "description") and type(v) ~= "string" and v ~= json.null then
      return table.pack(invalid_value(req, k, "ServicePrincipal"))
    end
    if k == "tags" and v ~= json.null and not str_array(v) then return table.pack(invalid_value(req, k, "ServicePrincipal")) end
  end
end

local function store_sp_fields(sp, body)
  if type(body.accountEnabled) == "boolean" then sp.accountEnabled = body.accountEnabled end
  if type(body.appRoleAssignmentRequired) == "boolean" then sp.appRoleAssignmentRequired = body.appRoleAssignmentRequired end
  for _, k in ipairs { "displayName", "notes", "description" } do
    if body[k] == json.null then sp[k] = nil elseif body[k] ~= nil then sp[k] = body[k] end
  end
  if body.tags == json.null then sp.tags = nil elseif body.tags ~= nil then sp.tags = str_array(body.tags) end
end

local function no_backing(req, app_id)
  return bad_request(req, "The appId '" .. tostring(app_id) .. "' of the service principal does not reference a valid application object.",
    json.array { { code = "NoBackingApplicationObject", message = "The appId '" .. tostring(app_id) ..
      "' of the service principal does not reference a valid application object.", target = "appId" } })
end

-- Creates the service principal of app_id in tenant. Returns status... of the response.
local function create_sp(st, req, tenant, body, key_app_id)
  local e = check_sp_fields(req, body, true)
  if e then return table.unpack(e, 1, e.n) end
  local app_id = body.appId
  if key_app_id then
    if app_id ~= nil and lower(app_id) ~= lower(key_app_id) then
      return bad_request(req, "Property 'appId' in the body does not match the key in the URL.")
    end
    app_id = key_app_id
  end
  if type(app_id) ~= "string" or app_id == "" then
    return bad_request(req, "Required property 'appId' is missing or empty.")
  end
  if not crypto.is_guid(app_id) then return invalid_value(req, "appId", "ServicePrincipal") end
  local app = st:application_by_appid(app_id)
  if not app or not st:visible(app) then return no_backing(req, app_id) end
  if req.access == "owned" and app.tenant ~= tenant.id then
    return err(req, 403, "Authorization_RequestDenied", "When using this permission, the backing application of " ..
      "the service principal being created must in the local tenant")
  end
  if app.tenant ~= tenant.id and app.signInAudience == "AzureADMyOrg" then return no_backing(req, app_id) end
  if not owns(req, app) then return denied(req) end
  if st:service_principal_by_appid(tenant, app_id, true) then
    return err(req, 409, "Request_MultipleObjectsWithSameKeyValue",
      "The service principal cannot be created, updated, or restored because the service principal name " ..
      app.appId .. " is already in use.")
  end
  local sp = st:add_service_principal(tenant, { appId = app.appId, displayName = app.displayName,
    appOwnerOrganizationId = app.tenant, visible_at = st:visible_from("service_principal") })
  store_sp_fields(sp, body)
  local base = base_url(req, req.route.version)
  return respond.json(req, 201, sp_view(st, sp, base, true),
                      { location = base .. "/directoryObjects/" .. sp.id .. "/Microsoft.DirectoryServices.ServicePrincipal" })
end
local H = {}

H["servicePrincipals"] = {
  GET = function(st, req, tenant)
    local base = base_url(req, req.route.version)
    local views = {}
    for _, sp in pairs(tenant.service_principals) do
      local app = st:application_by_appid(sp.appId)
      if st:visible(sp) and (req.access ~= "owned" or (app and app.tenant == tenant.id and owns(req, app))) then
        views[#views + 1] = sp_view(st, sp, base, false)
      end
    end
    return odata.list_response(req, "ServicePrincipal", M.FILTERS, "servicePrincipals", views)
  end,
  POST = function(st, req, tenant, _, body)
    return create_sp(st, req, tenant, body, nil)
  end,
}

-- Resolves the service principal of key (by id or appId); returns sp or nil, packed error.
local function sp_of(st, req, tenant, key)
  local sp, e = odata.lookup(req, key, "servicePrincipal", function(k) return find_sp(st, tenant, k) end)
  if not sp then return nil, e end
  local app = st:application_by_appid(sp.appId)
  if req.access == "owned" and not (app and app.tenant == tenant.id and owns(req, app)) then
    return nil, table.pack(denied(req))
  end
  return sp
end

H["servicePrincipals/{}"] = {
  GET = function(st, req, tenant, keys)
    local sp, e = sp_of(st, req, tenant, keys[1])
    if not sp then return table.unpack(e, 1, e.n) end
    return odata.entity_response(req, 200, sp_view(st, sp, base_url(req, req.route.version), true))
  end,
  PATCH = function(st, req, tenant, keys, body)
    local key = keys[1]
    local sp, e = sp_of(st, req, tenant, key)
    if not sp then
      if key.prop == "appId" and e[1] == 404 and odata.is_upsert(req) then
        return create_sp(st, req, tenant, body, key.value)
      end
      return table.unpack(e, 1, e.n)
    end
    local perr = check_sp_fields(req, body, false)
    if perr then return table.unpack(perr, 1, perr.n) end
    store_sp_fields(sp, body)
    return respond.empty(req, 204)
  end,
  DELETE = function(st, req, tenant, keys)
    local sp, e = sp_of(st, req, tenant, keys[1])
    if not sp then return table.unpack(e, 1, e.n) end
    st:delete_service_principal(tenant, sp)
    return respond.empty(req, 204)
  end,
}

M.routes = H

return M
