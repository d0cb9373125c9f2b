-- The emulated Microsoft Graph v1.0: applications (with addPassword/removePassword and their
-- federatedIdentityCredentials) and servicePrincipals, for the tenant of the caller's token.
--   handle(st, req) -> status, headers, body
-- req.service_path is the path as Graph sees it ("/v1.0/applications(uniqueName='x')"), req.args the
-- decoded query ($filter, $select, $top, $skiptoken), req.headers (lower-case names), req.body (JSON).
-- Strict where Graph is strict: the token (tokens.verify) and the caller's application permissions
-- (roles claim) on every call, the validations and error texts of reference section 2.2, OData
-- alternate keys, `Prefer: create-if-missing` upserts and directory replication (objects whose
-- visible_at lies in the future are 404 to reads and absent from lists).
local core = require "cmkflow.core"
local respond = require "cmkflow.emulator.respond"
local tokens = require "cmkflow.emulator.tokens"
local form = require "cmkflow.form"

local json, crypto = core.json, core.crypto
local ipairs, pairs, type, tostring, tonumber = ipairs, pairs, type, tostring, tonumber

local M = {}

local MAX_FICS = 20
local MAX_PAGE = 999

-- ---- errors -----------------------------------------------------------------------------------

local function err(req, status, code, message, details)
  return respond.graph_error(req, status, code, message, details)
end

local function not_found(req, id)
  return err(req, 404, "Request_ResourceNotFound",
    "Resource '" .. tostring(id) .. "' does not exist or one of its queried reference-property objects are not present.")
end

local function bad_request(req, message, details)
  return err(req, 400, "Request_BadRequest", message, details)
end

local AUTH_MESSAGES = {
  missing = "Access token is empty.",
  malformed = "CompactToken parsing failed with error code: 80049217",
  signature = "Access token validation failure. Invalid signature.",
  issuer = "Access token validation failure. Invalid issuer.",
  audience = "Access token validation failure. Invalid audience.",
  expired = "Access token has expired or is not yet valid.",
  not_yet_valid = "Access token has expired or is not yet valid.",
}

local function unauthorized(req, reason)
  local status, h, body = err(req, 401, "InvalidAuthenticationToken",
    AUTH_MESSAGES[reason] or "Access token validation failure.")
  h["www-authenticate"] = 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", ' ..
                          'client_id="00000003-0000-0000-c000-000000000000"'
  return status, h, body
end

local function denied(req)
  return err(req, 403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
end

-- ---- permissions ------------------------------------------------------------------------------

local WRITE_ROLES = { ["Application.ReadWrite.All"] = true, ["Directory.ReadWrite.All"] = true }
local READ_ROLES = { ["Application.Read.All"] = true, ["Directory.Read.All"] = true,
                     ["Application.ReadWrite.All"] = true, ["Directory.ReadWrite.All"] = true }

local OWNED_BY = { ["Application.ReadWrite.OwnedBy"] = true }

local function has_role(claims, allowed)
  local roles = claims.roles
  if type(roles) == "string" then roles = { roles } end
  if type(roles) ~= "table" then return false end
  for _, r in ipairs(roles) do
    if allowed[r] then return true end
  end
  return false
end

-- ---- URLs, paths and OData literals -----------------------------------------------------------

-- The base URL the caller used for Graph ("https://host[:port][/graph]/v1.0").
local function base_url(req, version)
  local path, sp = req.path or "", req.service_path or ""
  local prefix = ""
  if #path >= #sp and path:sub(#path - #sp + 1) == sp then prefix = path:sub(1, #path - #sp) end
  local host = req.headers.host or "graph.microsoft.com"
  return (req.scheme or "https") .. "://" .. host .. prefix .. "/" .. version
end

-- Reads an OData string literal starting at s[i] == "'" ('' is a quote). Returns value, next index.
local function read_literal(s, i)
  if s:sub(i, i) ~= "'" then return nil end
  local out, j = {}, i + 1
  while j <= #s do
    local c = s:sub(j, j)
    if c == "'" then
      if s:sub(j + 1, j + 1) == "'" then
        out[#out + 1] = "'"
        j = j + 2
      else
        return table.concat(out), j + 1
      end
    else
      out[#out + 1] = c
      j = j + 1
    end
  end
  return nil
end
M.read_literal = read_literal

-- Splits a service path into segments on "/" outside quoted literals.
local function split_path(path)
  local segs, cur, i, n = {}, {}, 1, #path
  while i <= n do
    local c = path:sub(i, i)
    if c == "'" then
      local _, j = read_literal(path, i)
      if not j then return nil end
      cur[#cur + 1] = path:sub(i, j - 1)
      i = j
    elseif c == "/" then
      if #cur > 0 then segs[#segs + 1] = table.concat(cur) end
      cur = {}
      i = i + 1
    else
      cur[#cur + 1] = c
      i = i + 1
    end
  end
  if #cur > 0 then segs[#segs + 1] = table.concat(cur) end
  return segs
end

-- "name(key)" -> name, key  where key = {prop = "appId"|nil, value = "..."}; "name" -> name, nil.
-- Returns nil for a malformed key.
local function parse_segment(seg)
  local name, inner = seg:match("^([%w%.%$]+)%((.*)%)$")
  if not name then return seg, nil end
  local prop, rest = inner:match("^%s*([%w]+)%s*=%s*(.*)$")
  local literal = rest or inner
  literal = literal:match("^%s*(.-)%s*$")
  if literal:sub(1, 1) == "'" then
    local v, j = read_literal(literal, 1)
    if not v or j ~= #literal + 1 then return name, false end
    return name, { prop = prop, value = v }
  end
  if literal == "" then return name, false end
  return name, { prop = prop, value = literal }
end

local ENTITY_SETS = { applications = true, servicePrincipals = true, federatedIdentityCredentials = true }

-- The route of a service path: version, the route key ("applications/{}/federatedIdentityCredentials")
-- and the keys in order; or nil, status-args for an error.
local function parse_route(req)
  local segs = split_path(req.service_path or "/")
  if not segs or #segs == 0 then return nil, 400, "BadRequest", "Invalid request." end
  local version = segs[1]
  if version ~= "v1.0" and version ~= "beta" then
    return nil, 400, "BadRequest", "Invalid version: " .. version
  end
  local parts, keys = {}, {}
  local i = 2
  while i <= #segs do
    local name, key = parse_segment(segs[i])
    if key == false then return nil, 400, "BadRequest", "Bad Request - Error in query syntax." end
    parts[#parts + 1] = name
    if key then
      parts[#parts + 1] = "{}"
      keys[#keys + 1] = key
    elseif ENTITY_SETS[name] and segs[i + 1] then
      local nxt = segs[i + 1]
      if not nxt:find("(", 1, true) and not ENTITY_SETS[nxt] then
        parts[#parts + 1] = "{}"
        keys[#keys + 1] = { value = nxt }
        i = i + 1
      end
    end
    i = i + 1
  end
  return { version = version, route = table.concat(parts, "/"), keys = keys, segs = segs }
end

local function lower(s) return type(s) == "string" and s:lower() or s end

-- ---- bodies -----------------------------------------------------------------------------------

local function read_body(req)
  local body = req.body
  if body == nil or body == "" then return {} end
  local v = json.decode(body)
  if type(v) ~= "table" or json.is_array(v) then return nil end
  return v
end

local function body_error(req)
  return err(req, 400, "BadRequest",
    "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")
end

local function unknown_property(req, prop, type_name)
  return err(req, 400, "BadRequest", "Property '" .. prop .. "' does not exist on type 'microsoft.graph." ..
    type_name .. "'. Make sure to only use property names that are defined by the type or mark the type as open type.")
end

local function invalid_value(req, prop, resource)
  return bad_request(req, "Invalid value specified for property '" .. prop .. "' of resource '" .. resource .. "'.")
end

local function str_array(v)
  if type(v) ~= "table" then return nil end
  local out = json.array()
  for i, s in ipairs(v) do
    if type(s) ~= "string" then return nil end
    out[i] = s
  end
  if next(v) ~= nil and #out == 0 then return nil end
  return out
end

local function copy_array(t)
  local out = json.array()
  for i, v in ipairs(t or {}) do out[i] = v end
  return out
end

local function or_null(v) if v == nil then return json.null end return v end

-- ---- applications: lookup and shape ----------------------------------------------------------

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

-- ---- service principals: lookup and shape ----------------------------------------------------

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

-- ---- federated identity credentials ----------------------------------------------------------

local FIC_PROPS = { name = true, issuer = true, subject = true, audiences = true, description = true,
                    ["@odata.type"] = "ignored", claimsMatchingExpression = "unsupported" }

local function fic_view(app, fic, base, entity)
  local v = { id = fic.id, name = fic.name, issuer = fic.issuer, subject = fic.subject,
              audiences = copy_array(fic.audiences), description = or_null(fic.description) }
  if entity then
    v["@odata.context"] = base .. "/$metadata#applications('" .. app.id .. "')/federatedIdentityCredentials/$entity"
  end
  return v
end

local function find_fic(app, key)
  if key.prop == nil or key.prop == "id" then
    local f = app.federatedIdentityCredentials[lower(key.value)]
    return f
  end
  if key.prop ~= "name" then return nil, "badkey" end
  for _, f in pairs(app.federatedIdentityCredentials) do
    if lower(f.name) == lower(key.value) then return f end
  end
end

local function fic_count(app)
  local n = 0
  for _ in pairs(app.federatedIdentityCredentials) do n = n + 1 end
  return n
end

local function fic_invalid(req, message)
  return bad_request(req, message)
end

-- Checks a FIC body against the rules; `existing` is the credential being updated (nil on create).
-- Returns nil or the packed error response.
local function check_fic(req, app, body, existing)
  for k in pairs(body) do
    if not FIC_PROPS[k] then
      if k == "id" then return table.pack(bad_request(req, "Property 'id' is read-only and cannot be set.")) end
      return table.pack(unknown_property(req, k, "federatedIdentityCredential"))
    end
    if FIC_PROPS[k] == "unsupported" and body[k] ~= json.null then
      return table.pack(bad_request(req, "Property '" .. k .. "' is not supported by this emulator."))
    end
  end
  local name = body.name
  if existing then
    if name ~= nil and name ~= existing.name then
      return table.pack(fic_invalid(req, "Property 'name' of a federated identity credential is immutable."))
    end
  else
    if type(name) ~= "string" or #name < 3 or #name > 120 or not name:match("^[%w][%w%-_]*$") then
      return table.pack(fic_invalid(req, "Federated identity credential name '" .. tostring(name) ..
        "' is invalid. It must be 3 to 120 characters long, contain only letters, digits, '-' and '_', and start with a letter or digit."))
    end
  end
  for _, k in ipairs { "issuer", "subject" } do
    local v = body[k]
    if v == nil and existing then v = existing[k] end
    if type(v) ~= "string" or v == "" then
      return table.pack(fic_invalid(req, "Required property '" .. k .. "' is missing or empty."))
    end
    if #v > 600 then
      return table.pack(fic_invalid(req, "Property '" .. k .. "' of a federated identity credential must be at most 600 characters."))
    end
  end
  local aud = body.audiences
  if aud == nil and existing then aud = existing.audiences end
  if type(aud) ~= "table" or #aud ~= 1 or not str_array(aud) then
    return table.pack(fic_invalid(req, "Federated identity credentials must have exactly one audience."))
  end
  if aud[1] == "" or #aud[1] > 600 then
    return table.pack(fic_invalid(req, "Each audience of a federated identity credential must be 1 to 600 characters."))
  end
  if body.description ~= nil and body.description ~= json.null and
     (type(body.description) ~= "string" or #body.description > 600) then
    return table.pack(invalid_value(req, "description", "FederatedIdentityCredential"))
  end
  local issuer = body.issuer or existing.issuer
  local subject = body.subject or existing.subject
  for _, f in pairs(app.federatedIdentityCredentials) do
    if f ~= existing then
      if f.issuer == issuer and f.subject == subject then
        return table.pack(err(req, 400, "InvalidFederatedIdentityCredentialValue",
          "The combination of issuer and subject must be unique for the application. Issuer " .. issuer ..
          " and Subject: " .. subject .. " already exist. paramName: FederatedIdentityCredential.Subject, paramValue: " ..
          subject .. ", objectType: Microsoft.Online.DirectoryServices.Application"))
      end
      if not existing and lower(f.name) == lower(name) then
        return table.pack(err(req, 409, "Request_MultipleObjectsWithSameKeyValue",
          "A federated identity credential with name '" .. name .. "' already exists on the application."))
      end
    end
  end
  if not existing and fic_count(app) >= MAX_FICS then
    return table.pack(bad_request(req, "The application already has the maximum of " .. MAX_FICS ..
      " federated identity credentials; delete one before adding another."))
  end
end

local function store_fic(fic, body)
  for _, k in ipairs { "issuer", "subject" } do
    if body[k] ~= nil then fic[k] = body[k] end
  end
  if body.audiences ~= nil then fic.audiences = { body.audiences[1] } end
  if body.description == json.null then fic.description = nil
  elseif body.description ~= nil then fic.description = body.description end
end

local function create_fic(st, req, app, body)
  local e = check_fic(req, app, body, nil)
  if e then return table.unpack(e, 1, e.n) end
  local fic = st:add_federated_credential(app, { name = body.name, issuer = body.issuer, subject = body.subject,
    audiences = { body.audiences[1] }, description = type(body.description) == "string" and body.description or nil })
  return respond.json(req, 201, fic_view(app, fic, base_url(req, req.route.version), true))
end

-- ---- $filter, $select, $top -------------------------------------------------------------------

-- Parses the $filter forms clients use into a list of clauses joined by "and":
--   prop eq 'x' | prop eq true|false | startswith(prop,'x') | prop/any(c:c eq 'x')
-- Returns clauses or nil, message.
local function parse_filter(text)
  local clauses, i, n = {}, 1, #text
  local function skip() while i <= n and text:sub(i, i):match("%s") do i = i + 1 end end
  local function literal()
    skip()
    local c = text:sub(i, i)
    if c == "'" then
      local v, j = read_literal(text, i)
      if not v then return nil end
      i = j
      return v
    end
    local word = text:match("^(%w+)", i)
    if word == "true" or word == "false" then
      i = i + #word
      return word == "true"
    end
    return nil
  end
  while true do
    skip()
    local clause
    local fn = text:match("^(startswith)%s*%(", i)
    if fn then
      i = text:find("(", i, true) + 1
      skip()
      local prop = text:match("^([%w]+)", i)
      if not prop then return nil, "a property name" end
      i = i + #prop
      skip()
      if text:sub(i, i) ~= "," then return nil, "','" end
      i = i + 1
      local v = literal()
      if type(v) ~= "string" then return nil, "a string literal" end
      skip()
      if text:sub(i, i) ~= ")" then return nil, "')'" end
      i = i + 1
      clause = { op = "startswith", prop = prop, value = v }
    else
      local prop = text:match("^([%w]+)", i)
      if not prop then return nil, "a property name" end
      i = i + #prop
      if text:sub(i, i + 4) == "/any(" then
        i = i + 5
        local var = text:match("^%s*(%w+)%s*:", i)
        if not var then return nil, "a lambda variable" end
        i = text:find(":", i, true) + 1
        skip()
        if text:sub(i, i + #var - 1) ~= var then return nil, "the lambda variable" end
        i = i + #var
        skip()
        if text:sub(i, i + 1) ~= "eq" then return nil, "'eq'" end
        i = i + 2
        local v = literal()
        if type(v) ~= "string" then return nil, "a string literal" end
        skip()
        if text:sub(i, i) ~= ")" then return nil, "')'" end
        i = i + 1
        clause = { op = "any", prop = prop, value = v }
      else
        skip()
        if text:sub(i, i + 1) ~= "eq" then return nil, "'eq'" end
        i = i + 2
        local v = literal()
        if v == nil then return nil, "a literal" end
        clause = { op = "eq", prop = prop, value = v }
      end
    end
    clauses[#clauses + 1] = clause
    skip()
    if i > n then return clauses end
    if text:sub(i, i + 3):lower() ~= "and " then return nil, "'and' or the end of the clause" end
    i = i + 4
  end
end
M.parse_filter = parse_filter

-- Filterable properties per entity type: prop -> "ci" (case-insensitive string), "cs" (case-
-- sensitive), "bool", "any" (collection, for /any). startswith only on "ci"/"cs" marked strings.
local FILTERS = {
  Application = { id = "ci", appId = "ci", displayName = "ci", uniqueName = "ci", signInAudience = "ci",
                  identifierUris = "any" },
  ServicePrincipal = { id = "ci", appId = "ci", displayName = "ci", accountEnabled = "bool",
                       servicePrincipalNames = "any", servicePrincipalType = "ci", appOwnerOrganizationId = "ci" },
  FederatedIdentityCredential = { name = "ci", subject = "cs", issuer = "cs" },
}

local function match_clause(kind, view, c)
  local v = view[c.prop]
  if c.op == "any" then
    if type(v) ~= "table" then return false end
    for _, x in ipairs(v) do
      if type(x) == "string" and x:lower() == c.value:lower() then return true end
    end
    return false
  end
  if kind == "bool" then return v == c.value end
  if type(v) ~= "string" then return false end
  local a, b = v, c.value
  if kind == "ci" then a, b = a:lower(), b:lower() end
  if c.op == "eq" then return a == b end
  return a:sub(1, #b) == b
end

-- The items of views (already visible, sorted) that $filter selects; or nil, error response args.
local function apply_filter(req, type_name, views)
  local text = req.args["$filter"]
  if text == nil or text == "" then return views end
  local clauses, expected = parse_filter(text)
  if not clauses then
    return nil, table.pack(err(req, 400, "BadRequest", "Invalid filter clause: syntax error, expected " .. expected ..
      " in '" .. text .. "'."))
  end
  local props = FILTERS[type_name]
  for _, c in ipairs(clauses) do
    local kind = props[c.prop]
    local ok = kind ~= nil
    if ok and c.op == "any" then ok = kind == "any" end
    if ok and c.op ~= "any" then ok = kind ~= "any" end
    if ok and c.op == "startswith" then ok = kind == "ci" or kind == "cs" end
    if ok and kind == "bool" then ok = type(c.value) == "boolean" end
    if ok and (kind == "ci" or kind == "cs") then ok = type(c.value) == "string" end
    if not ok then
      return nil, table.pack(err(req, 400, "Request_UnsupportedQuery",
        "Unsupported or invalid query filter clause specified for property '" .. c.prop .. "' of resource '" ..
        type_name .. "'."))
    end
    c.kind = kind
  end
  local out = {}
  for _, v in ipairs(views) do
    local keep = true
    for _, c in ipairs(clauses) do
      if not match_clause(c.kind, v, c) then keep = false break end
    end
    if keep then out[#out + 1] = v end
  end
  return out
end

local function apply_select(req, v)
  local sel = req.args["$select"]
  if sel == nil or sel == "" then return v end
  local out = {}
  for name in sel:gmatch("[^,%s]+") do
    if v[name] ~= nil then out[name] = v[name] end
  end
  out.id = v.id
  return out
end

-- A collection response: filter, page ($top/$skiptoken), select.
local function list_response(req, type_name, set_context, views)
  table.sort(views, function(a, b) return a.id < b.id end)
  local selected, e = apply_filter(req, type_name, views)
  if not selected then return table.unpack(e, 1, e.n) end
  local top = req.args["$top"]
  local n_top
  if top ~= nil then
    n_top = tonumber(top)
    if not n_top or n_top ~= math.floor(n_top) or n_top < 1 or n_top > MAX_PAGE then
      return err(req, 400, "Request_BadRequest", "Invalid page size specified: '" .. tostring(top) ..
        "'. Must be between 1 and " .. MAX_PAGE .. " inclusive.")
    end
  end
  local skip = 0
  local token = req.args["$skiptoken"]
  if token ~= nil then
    skip = tonumber(token:match("^X(%d+)$") or "")
    if not skip then return err(req, 400, "Request_BadRequest", "Invalid skip token '" .. token .. "'.") end
  end
  local page = json.array()
  local last = n_top and math.min(#selected, skip + n_top) or #selected
  for i = skip + 1, last do page[#page + 1] = apply_select(req, selected[i]) end
  local base = base_url(req, req.route.version)
  local doc = { ["@odata.context"] = base .. "/$metadata#" .. set_context, value = page }
  if last < #selected then
    local q = {}
    for k, v in pairs(req.args) do
      if k ~= "$skiptoken" then q[#q + 1] = form.escape(k) .. "=" .. form.escape(v) end
    end
    table.sort(q)
    q[#q + 1] = "$skiptoken=X" .. last
    doc["@odata.nextLink"] = base .. (req.service_path or ""):sub(#req.route.version + 2) .. "?" .. table.concat(q, "&")
  end
  return respond.json(req, 200, doc)
end

-- ---- handlers ---------------------------------------------------------------------------------

local function visible_apps(st, req, tenant, base)
  local out = {}
  for _, app in pairs(tenant.applications) do
    if st:visible(app) and owns(req, app) then out[#out + 1] = app_view(st, app, base, false) end
  end
  return out
end

local function entity_response(req, status, v)
  return respond.json(req, status, apply_select(req, v))
end

local function is_upsert(req)
  local prefer = req.headers.prefer or ""
  return prefer:lower():find("create-if-missing", 1, true) ~= nil
end

-- Resolves the application of the route's first key; returns app or nil, packed error.
local function app_of(st, req, tenant, key)
  if (key.prop == nil or key.prop == "id") and not crypto.is_guid(key.value) then
    return nil, table.pack(bad_request(req, "Invalid object identifier '" .. key.value .. "'."))
  end
  local app, why = find_app(st, tenant, key)
  if why == "badkey" then
    return nil, table.pack(err(req, 400, "BadRequest", "The property '" .. key.prop ..
      "' is not an alternate key of type 'microsoft.graph.application'."))
  end
  if not app then return nil, table.pack(not_found(req, key.value)) end
  if not owns(req, app) then return nil, table.pack(denied(req)) end
  return app
end

local H = {}

H["applications"] = {
  GET = function(st, req, tenant)
    return list_response(req, "Application", "applications", visible_apps(st, req, tenant, base_url(req, req.route.version)))
  end,
  POST = function(st, req, tenant, _, body)
    return create_app(st, req, tenant, body, nil)
  end,
}

H["applications/{}"] = {
  GET = function(st, req, tenant, keys)
    local app, e = app_of(st, req, tenant, keys[1])
    if not app then return table.unpack(e, 1, e.n) end
    return entity_response(req, 200, app_view(st, app, base_url(req, req.route.version), true))
  end,
  PATCH = function(st, req, tenant, keys, body)
    local key = keys[1]
    local app, e = app_of(st, req, tenant, key)
    if not app then
      if key.prop == "uniqueName" and e[1] == 404 and is_upsert(req) then
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

local function fic_set_context(app) return "applications('" .. app.id .. "')/federatedIdentityCredentials" end

H["applications/{}/federatedIdentityCredentials"] = {
  GET = function(st, req, tenant, keys)
    local app, e = app_of(st, req, tenant, keys[1])
    if not app then return table.unpack(e, 1, e.n) end
    local views = {}
    for _, f in pairs(app.federatedIdentityCredentials) do views[#views + 1] = fic_view(app, f) end
    return list_response(req, "FederatedIdentityCredential", fic_set_context(app), views)
  end,
  POST = function(st, req, tenant, keys, body)
    local app, e = app_of(st, req, tenant, keys[1])
    if not app then return table.unpack(e, 1, e.n) end
    return create_fic(st, req, app, body)
  end,
}

-- The FIC of the route (app key, fic key); returns app, fic | app, nil, packed error | nil, nil, err.
local function fic_of(st, req, tenant, keys)
  local app, e = app_of(st, req, tenant, keys[1])
  if not app then return nil, nil, e end
  local key = keys[2]
  if (key.prop == nil or key.prop == "id") and not crypto.is_guid(key.value) then
    return app, nil, table.pack(bad_request(req, "Invalid object identifier '" .. key.value .. "'."))
  end
  local fic, why = find_fic(app, key)
  if why == "badkey" then
    return app, nil, table.pack(err(req, 400, "BadRequest", "The property '" .. key.prop ..
      "' is not an alternate key of type 'microsoft.graph.federatedIdentityCredential'."))
  end
  if not fic then return app, nil, table.pack(not_found(req, key.value)) end
  return app, fic
end

H["applications/{}/federatedIdentityCredentials/{}"] = {
  GET = function(st, req, tenant, keys)
    local app, fic, e = fic_of(st, req, tenant, keys)
    if not fic then return table.unpack(e, 1, e.n) end
    return entity_response(req, 200, fic_view(app, fic, base_url(req, req.route.version), true))
  end,
  PATCH = function(st, req, tenant, keys, body)
    local app, fic, e = fic_of(st, req, tenant, keys)
    if not fic then
      if app and keys[2].prop == "name" and e[1] == 404 and is_upsert(req) then
        if body.name ~= nil and body.name ~= keys[2].value then
          return bad_request(req, "Property 'name' in the body does not match the key in the URL.")
        end
        body.name = keys[2].value
        return create_fic(st, req, app, body)
      end
      return table.unpack(e, 1, e.n)
    end
    local perr = check_fic(req, app, body, fic)
    if perr then return table.unpack(perr, 1, perr.n) end
    store_fic(fic, body)
    fic.visible_at = st:visible_from("federated_credential")
    return respond.empty(req, 204)
  end,
  DELETE = function(st, req, tenant, keys)
    local app, fic, e = fic_of(st, req, tenant, keys)
    if not fic then return table.unpack(e, 1, e.n) end
    app.federatedIdentityCredentials[fic.id] = nil
    return respond.empty(req, 204)
  end,
}

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
    return list_response(req, "ServicePrincipal", "servicePrincipals", views)
  end,
  POST = function(st, req, tenant, _, body)
    return create_sp(st, req, tenant, body, nil)
  end,
}

local function sp_of(st, req, tenant, key)
  if (key.prop == nil or key.prop == "id") and not crypto.is_guid(key.value) then
    return nil, table.pack(bad_request(req, "Invalid object identifier '" .. key.value .. "'."))
  end
  local sp, why = find_sp(st, tenant, key)
  if why == "badkey" then
    return nil, table.pack(err(req, 400, "BadRequest", "The property '" .. key.prop ..
      "' is not an alternate key of type 'microsoft.graph.servicePrincipal'."))
  end
  if not sp then return nil, table.pack(not_found(req, key.value)) end
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
    return entity_response(req, 200, sp_view(st, sp, base_url(req, req.route.version), true))
  end,
  PATCH = function(st, req, tenant, keys, body)
    local key = keys[1]
    local sp, e = sp_of(st, req, tenant, key)
    if not sp then
      if key.prop == "appId" and e[1] == 404 and is_upsert(req) then
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

local READ_METHODS = { GET = true, HEAD = true }

M.routes = H

-- ---- entry point ------------------------------------------------------------------------------

function M.handle(st, req)
  req.headers = req.headers or {}
  req.args = req.args or {}
  local claims, reason = tokens.verify(st, req, "graph")
  if not claims then return unauthorized(req, reason) end
  local tenant = st:tenant(claims.tid)
  if not tenant then return unauthorized(req, "issuer") end
  local route, status, code, message = parse_route(req)
  if not route then return err(req, status, code, message) end
  req.route = route
  if route.route == "me" or route.route:match("^me/") then
    if claims.idtyp ~= "user" and claims.scp == nil then
      return err(req, 400, "BadRequest", "/me request is only valid with delegated authentication flow.")
    end
    return not_found(req, tostring(claims.oid))
  end
  local entry = H[route.route]
  if not entry then
    local first = route.segs[2] or ""
    local name = parse_segment(first)
    if not H[name] and name ~= "me" then
      return err(req, 400, "BadRequest", "Resource not found for the segment '" .. name .. "'.")
    end
    local last = route.segs[#route.segs]
    return err(req, 400, "BadRequest", "Resource not found for the segment '" .. (parse_segment(last)) .. "'.")
  end
  local method = req.method == "HEAD" and "GET" or req.method
  local fn = entry[method]
  if not fn then
    return err(req, 405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
  end
  req.caller = type(claims.oid) == "string" and claims.oid:lower() or nil
  if has_role(claims, READ_METHODS[method] and READ_ROLES or WRITE_ROLES) then
    req.access = "all"
  elseif has_role(claims, OWNED_BY) then
    req.access = "owned"
  else
    return denied(req)
  end
  local body = {}
  if not READ_METHODS[method] then
    body = read_body(req)
    if not body then return body_error(req) end
  end
  return fn(st, req, tenant, route.keys, body)
end

return M
