-- The emulated Graph's federated identity credentials of an application: shape, lookup by id or
-- name, Graph's validations (name, one audience, unique issuer+subject, at most 20 per app),
-- create, update (name immutable; `Prefer: create-if-missing` upserts by name), delete; changes
-- become visible after the replication delay.
-- https://learn.microsoft.com/graph/api/resources/federatedidentitycredential
-- M.routes: route key -> {METHOD = fn(st, req, tenant, keys, body)}, merged by graph.lua.
local core = require "cmkflow.core"
local clouds = require "cmkflow.util.clouds"
local respond = require "cmkflow.emulator.respond"
local odata = require "cmkflow.emulator.graph_odata"
local applications = require "cmkflow.emulator.graph_applications"

local json = core.json
local ipairs, pairs, type, tostring = ipairs, pairs, type, tostring
local err, bad_request = odata.err, odata.bad_request
local unknown_property, invalid_value = odata.unknown_property, odata.invalid_value
local base_url, lower, or_null, copy_array, str_array = odata.base_url, odata.lower, odata.or_null, odata.copy_array,
  odata.str_array
local app_of = applications.app_of

local M = {}

local MAX_FICS = 20

-- Filterable properties ($filter, see graph_odata.apply_filter).
M.FILTERS = { name = "ci", subject = "cs", issuer = "cs" }

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

-- A credential whose issuer is Entra ID itself (one of the emulator's tenants) names as subject the
-- object id of a service principal (a managed identity's) that "needs to exist in the tenant"
-- (https://learn.microsoft.com/graph/api/resources/federatedidentitycredential): one that has not
-- replicated yet is refused. The detail code SubjectNotFound is ours (Graph's text only).
local function subject_missing(st, req, body, existing)
  if body.issuer == nil and body.subject == nil then return nil end
  local issuer = body.issuer or (existing and existing.issuer)
  local subject = body.subject or (existing and existing.subject)
  local cloud, tid = clouds.parse_issuer(issuer)
  local tenant = tid and st.tenants[tid:lower()]
  if not tenant or (tenant.cloud or "azure") ~= cloud then return nil end
  local sp = tenant.service_principals[lower(subject)]
  if sp and st:visible(sp) then return nil end
  return table.pack(err(req, 400, "InvalidFederatedIdentityCredentialValue", ("The subject '%s' of a federated "
    .. "identity credential for the Microsoft Entra issuer '%s' must be the object id of a service principal in "
    .. "that tenant; none was found."):format(subject, issuer),
    { { code = "SubjectNotFound", target = "subject", message = "No service principal with this object id." } }))
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
  local e = check_fic(req, app, body, nil) or subject_missing(st, req, body, nil)
  if e then return table.unpack(e, 1, e.n) end
  local fic = st:add_federated_credential(app, { name = body.name, issuer = body.issuer, subject = body.subject,
    audiences = { body.audiences[1] }, description = type(body.description) == "string" and body.description or nil })
  return respond.json(req, 201, fic_view(app, fic, base_url(req, req.route.version), true))
end

local H = {}

local function fic_set_context(app) return "applications('" .. app.id .. "')/federatedIdentityCredentials" end

H["applications/{}/federatedIdentityCredentials"] = {
  GET = function(st, req, tenant, keys)
    local app, e = app_of(st, req, tenant, keys[1])
    if not app then return table.unpack(e, 1, e.n) end
    local views = {}
    for _, f in pairs(app.federatedIdentityCredentials) do views[#views + 1] = fic_view(app, f) end
    return odata.list_response(req, "FederatedIdentityCredential", M.FILTERS, fic_set_context(app), views)
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
  local fic
  fic, e = odata.lookup(req, keys[2], "federatedIdentityCredential", function(k) return find_fic(app, k) end)
  if not fic then return app, nil, e end
  return app, fic
end

H["applications/{}/federatedIdentityCredentials/{}"] = {
  GET = function(st, req, tenant, keys)
    local app, fic, e = fic_of(st, req, tenant, keys)
    if not fic then return table.unpack(e, 1, e.n) end
    return odata.entity_response(req, 200, fic_view(app, fic, base_url(req, req.route.version), true))
  end,
  PATCH = function(st, req, tenant, keys, body)
    local app, fic, e = fic_of(st, req, tenant, keys)
    if not fic then
      if app and keys[2].prop == "name" and e[1] == 404 and odata.is_upsert(req) then
        if body.name ~= nil and body.name ~= keys[2].value then
          return bad_request(req, "Property 'name' in the body does not match the key in the URL.")
        end
        body.name = keys[2].value
        return create_fic(st, req, app, body)
      end
      return table.unpack(e, 1, e.n)
    end
    local perr = check_fic(req, app, body, fic) or subject_missing(st, req, body, fic)
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

M.routes = H

return M
