-- The emulated Graph's applications: the entity (shape, lookup by id / appId / uniqueName,
-- ownership for Application.ReadWrite.OwnedBy), create and update with Graph's validations,
-- `Prefer: create-if-missing` upserts by uniqueName, and the addPassword / removePassword actions.
-- https://learn.microsoft.com/graph/api/resources/application
-- M.routes: route key -> {METHOD = fn(st, req, tenant, keys, body)}, merged by graph.lua.
local core = require "cmkflow.core"
local respond = require "cmkflow.emulator.respond"
local odata = require "cmkflow.emulator.graph_odata"

local json, crypto = core.json, core.crypto
local ipairs, pairs, type = ipairs, pairs, type
local err, bad_request, denied = odata.err, odata.bad_request, odata.denied
local unknown_property, invalid_value = odata.unknown_property, odata.invalid_value
local base_url, lower, or_null, copy_array, str_array = odata.base_url, odata.lower, odata.or_null, odata.copy_array,
  odata.str_array

local M = {}

-- Filterable properties ($filter, see graph_odata.apply_filter).
M.FILTERS = { id = "ci", appId = "ci", displayName = "ci", uniqueName = "ci", signInAudience = "ci",
              identifierUris = "any" }

local AUDIENCES = { AzureADMyOrg = true, AzureADMultipleOrgs = true, AzureADandPersonalMicrosoftAccount = true,
                    PersonalMicrosoftAccount = true }

-- Application properties accepted in POST/PATCH. true = stored and returned; "ignored" = accepted
-- (clients such as az send them) but not modelled.
local APP_PROPS = {
  displayName = true, signInAudience = true, uniqueName = true, description = true, notes = true,
  identifierUris = true, tags = true, keyCredentials = "keys", passwordCredentials = "passwords",
  api = "ignored", appRoles = "ignored", web = "ignored", spa = "ignored", publicClient = "ignored",
  requiredResourceAccess = "ignored", optionalClaims = "ignored", info = "ignored",
  isFallbackPublicClient = "ignored", groupMembershipClaims = "ignored", tokenEncryptionKeyId = "ignored",
  isDeviceOnlyAuthSupported = "ignored", serviceManagementReference = "ignored", parentalControlSettings = "ignored",
  defaultRedirectUri = "ignored", disabledByMicrosoftStatus = "ignored", samlMetadataUrl = "ignored",
  ["@odata.type"] = "ignored",
}
local APP_READONLY = { id = true, appId = true, createdDateTime = true, publisherDomain = true, deletedDateTime = true }

local function app_view(st, app, base, entity)
  local tenant = st.tenants[app.tenant]
  local pw = json.array()
  for i, p in ipairs(app.passwordCredentials) do
    pw[i] = { keyId = p.keyId, hint = p.hint, displayName = or_null(p.displayName), endDateTime = p.endDateTime,
              startDateTime = p.startDateTime or app.created, secretText = json.null, customKeyIdentifier = json.null }
  end
  local kc = json.array()
  for i, k in ipairs(app.keyCredentials) do
    kc[i] = { keyId = k.keyId, type = k.type, usage = k.usage, displayName = or_null(k.displayName),
              customKeyIdentifier = or_null(k.thumbprint), key = json.null }
  end
  local v = {
    id = app.id, appId = app.appId, displayName = app.displayName, signInAudience = app.signInAudience,
    uniqueName = or_null(app.uniqueName), createdDateTime = app.created, deletedDateTime = json.null,
    publisherDomain = tenant and tenant.domain or json.null, description = or_null(app.description),
    notes = or_null(app.notes), identifierUris = copy_array(app.identifierUris), tags = copy_array(app.tags),
    passwordCredentials = pw, keyCredentials = kc,
  }
  if entity then v["@odata.context"] = base .. "/$metadata#applications/$entity" end
  return v
end

-- Does the caller (req.caller) own app? Callers with a tenant-wide permission own everything.
local function owns(req, app)
  if req.access ~= "owned" then return true end
  for _, oid in ipairs(app.owners or {}) do
    if oid == req.caller then return true end
  end
  return false
end

-- The application addressed by key in tenant (visible ones only), or nil.
local function find_app(st, tenant, key)
  local value = key.value
  if key.prop == nil or key.prop == "id" then
    local app = tenant.applications[lower(value)]
    if app and st:visible(app) then return app end
    return nil
  end
  local prop = key.prop
  if prop ~= "appId" and prop ~= "uniqueName" then return nil, "badkey" end
  for _, app in pairs(tenant.applications) do
    if lower(app[prop]) == lower(value) and st:visible(app) then return app end
  end
  return nil
end

-- Applies body (already checked to be a JSON object) to app. Returns true or the error response.
local function apply_app_fields(st, req, tenant, app, body, creating)
  for k, v in pairs(body) do
    if APP_READONLY[k] then
      if creating or (k ~= "id" and k ~= "appId") or lower(v) ~= lower(app[k]) then
        return false, table.pack(bad_request(req, "Property '" .. k .. "' is read-only and cannot be set."))
      end
    elseif not APP_PROPS[k] then
      return false, table.pack(unknown_property(req, k, "application"))
    end
  end
  if body.displayName ~= nil and (type(body.displayName) ~= "string" or body.displayName == "") then
    return false, table.pack(invalid_value(req, "displayName", "Application"))
  end
  if body.signInAudience ~= nil and not AUDIENCES[body.signInAudience] then
    return false, table.pack(invalid_value(req, "signInAudience", "Application"))
  end
  if body.uniqueName ~= nil and body.uniqueName ~= json.null then
    if type(body.uniqueName) ~= "string" or body.uniqueName == "" or #body.uniqueName > 120 then
      return false, table.pack(invalid_value(req, "uniqueName", "Application"))
    end
    if app and app.uniqueName and app.uniqueName ~= body.uniqueName then
      return false, table.pack(bad_request(req, "Property 'uniqueName' is immutable once set."))
    end
    for _, other in pairs(tenant.applications) do
      if other ~= app and lower(other.uniqueName) == lower(body.uniqueName) then
        return false, table.pack(err(req, 409, "Request_MultipleObjectsWithSameKeyValue",
          "Another object with the same value for property uniqueName already exists."))
      end
    end
  end
  for _, k in ipairs { "description", "notes" } do
    if body[k] ~= nil and body[k] ~= json.null and type(body[k]) ~= "string" then
      return false, table.pack(invalid_value(req, k, "Application"))
    end
  end
  for _, k in ipairs { "identifierUris", "tags" } do
    if body[k] ~= nil and body[k] ~= json.null and not str_array(body[k]) then
      return false, table.pack(invalid_value(req, k, "Application"))
    end
  end
  if body.passwordCredentials ~= nil and (type(body.passwordCredentials) ~= "table" or next(body.passwordCredentials) ~= nil) then
    return false, table.pack(bad_request(req,
      "Property 'passwordCredentials' cannot be set on this request; use the addPassword action to add a password."))
  end
  if body.keyCredentials ~= nil and (type(body.keyCredentials) ~= "table" or next(body.keyCredentials) ~= nil) then
    return false, table.pack(bad_request(req,
      "The emulator does not accept keyCredentials through Graph; seed a certificate_pem instead."))
  end
  return true
end

local function store_app_fields(app, body)
  if type(body.displayName) == "string" then app.displayName = body.displayName end
  if body.signInAudience then app.signInAudience = body.signInAudience end
  if type(body.uniqueName) == "string" then app.uniqueName = body.uniqueName end
  for _, k in ipairs { "description", "notes" } do
    if body[k] == json.null then app[k] = nil elseif body[k] ~= nil then app[k] = body[k] end
  end
  for _, k in ipairs { "identifierUris", "tags" } do
    if body[k] == json.null then app[k] = nil elseif body[k] ~= nil then app[k] = str_array(body[k]) end
  end
end

local function create_app(st, req, tenant, body, unique_name)
  if unique_name then body.uniqueName = body.uniqueName or unique_name end
  local ok, e = apply_app_fields(st, req, tenant, nil, body, true)
  if not ok then return table.unpack(e, 1, e.n) end
  if type(body.displayName) ~= "string" or body.displayName == "" then
    return bad_request(req, "Required property 'displayName' is missing or empty.")
  end
  if unique_name and body.uniqueName ~= unique_name then
    return bad_request(req, "Property 'uniqueName' in the body does not match the key in the URL.")
  end
  local app = st:add_application(tenant, { displayName = body.displayName, uniqueName = body.uniqueName,
    signInAudience = body.signInAudience or "AzureADMyOrg" })
  app.owners = { req.caller }
  store_app_fields(app, body)
  local base = base_url(req, req.route.version)
  return respond.json(req, 201, app_view(st, app, base, true),
                      { location = base .. "/directoryObjects/" .. app.id .. "/Microsoft.DirectoryServices.Application" })
end
local function visible_apps(st, req, tenant, base)
  local out = {}
  for _, app in pairs(tenant.applications) do
    if st:visible(app) and owns(req, app) then out[#out + 1] = app_view(st, app, base, false) end
  end
  return out
end

-- Resolves the application of the route's first key; returns app or nil, packed error.
local function app_of(st, req, tenant, key)
  local app, e = odata.lookup(req, key, "application", function(k) return find_app(st, tenant, k) end)
  if not app then return nil, e end
  if not owns(req, app) then return nil, table.pack(denied(req)) end
  return app
end

local H = {}

H["applications"] = {
  GET = function(st, req, tenant)
    local views = visible_apps(st, req, tenant, base_url(req, req.route.version))
    return odata.list_response(req, "Application", M.FILTERS, "applications", views)
  end,
  POST = function(st, req, tenant, _, body)
    return create_app(st, req, tenant, body, nil)
  end,
}

H["applications/{}"] = {
  GET = function(st, req, tenant, keys)
    local app, e = app_of(st, req, tenant, keys[1])
    if not app then return table.unpack(e, 1, e.n) end
    return odata.entity_response(req, 200, app_view(st, app, base_url(req, req.route.version), true))
  end,
  PATCH = function(st, req, tenant, keys, body)
    local key = keys[1]
    local app, e = app_of(st, req, tenant, key)
    if not app then
      if key.prop == "uniqueName" and e[1] == 404 and odata.is_upsert(req) then
        return create_app(st, req, tenant, body, key.value)
      end
      return table.unpack(e, 1, e.n)
    end
    if key.prop == "uniqueName" and body.uniqueName ~= nil and body.uniqueName ~= app.uniqueName then
      return bad_request(req, "Property 'uniqueName' in the body does not match the key in the URL.")
    end
    local ok, perr = apply_app_fields(st, req, tenant, app, body, false)
    if not ok then return table.unpack(perr, 1, perr.n) end
    store_app_fields(app, body)
    return respond.empty(req, 204)
  end,
  DELETE = function(st, req, tenant, keys)
    local app, e = app_of(st, req, tenant, keys[1])
    if not app then return table.unpack(e, 1, e.n) end
    st:delete_application(app)
    return respond.empty(req, 204)
  end,
}

local function random_secret()
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
  local bytes = crypto.random_bytes(37)
  local out = {}
  for i = 1, #bytes do
    local b = bytes:byte(i) % #alphabet + 1
    out[i] = alphabet:sub(b, b)
  end
  local s = table.concat(out)
  return s:sub(1, 3) .. "8Q~" .. s:sub(4)
end

H["applications/{}/addPassword"] = {
  POST = function(st, req, tenant, keys, body)
    local app, e = app_of(st, req, tenant, keys[1])
    if not app then return table.unpack(e, 1, e.n) end
    for k in pairs(body) do
      if k ~= "passwordCredential" then return unknown_property(req, k, "addPassword") end
    end
    local pc = body.passwordCredential or {}
    if type(pc) ~= "table" then return invalid_value(req, "passwordCredential", "Application") end
    if pc.displayName ~= nil and type(pc.displayName) ~= "string" then
      return invalid_value(req, "displayName", "PasswordCredential")
    end
    local now = st:now()
    local end_time = st:iso(now + 2 * 365 * 86400)
    if pc.endDateTime ~= nil then
      if type(pc.endDateTime) ~= "string" or not pc.endDateTime:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d") then
        return invalid_value(req, "endDateTime", "PasswordCredential")
      end
      end_time = pc.endDateTime
    end
    local secret = random_secret()
    local cred = { keyId = st:id("secret"), hint = secret:sub(1, 3), secret_sha256 = crypto.sha256_hex(secret),
                   displayName = pc.displayName, startDateTime = st:iso(now), endDateTime = end_time }
    app.passwordCredentials[#app.passwordCredentials + 1] = cred
    return respond.json(req, 200, {
      ["@odata.context"] = base_url(req, req.route.version) .. "/$metadata#microsoft.graph.passwordCredential",
      customKeyIdentifier = json.null, displayName = or_null(cred.displayName), endDateTime = cred.endDateTime,
      hint = cred.hint, keyId = cred.keyId, secretText = secret, startDateTime = cred.startDateTime })
  end,
}

H["applications/{}/removePassword"] = {
  POST = function(st, req, tenant, keys, body)
    local app, e = app_of(st, req, tenant, keys[1])
    if not app then return table.unpack(e, 1, e.n) end
    if type(body.keyId) ~= "string" or not crypto.is_guid(body.keyId) then
      return invalid_value(req, "keyId", "PasswordCredential")
    end
    for i, p in ipairs(app.passwordCredentials) do
      if lower(p.keyId) == lower(body.keyId) then
        table.remove(app.passwordCredentials, i)
        return respond.empty(req, 204)
      end
    end
    return bad_request(req, "No password credential found with keyId '" .. body.keyId .. "'.")
  end,
}

M.routes = H
M.owns, M.app_of = owns, app_of

return M
