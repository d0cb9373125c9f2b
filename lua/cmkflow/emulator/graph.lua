-- The emulated Microsoft Graph v1.0 (and beta): authentication, routing and permissions, for the
-- tenant of the caller's token.
--   handle(st, req) -> status, headers, body
-- req.service_path is the path as Graph sees it ("/v1.0/applications(uniqueName='x')"), req.args the
-- decoded query ($filter, $select, $top, $skiptoken), req.headers (lower-case names), req.body (JSON).
-- Strict where Graph is strict: the token (tokens.verify) and the caller's application permissions
-- (roles claim) on every call, OData alternate keys, `Prefer: create-if-missing` upserts and
-- directory replication (objects whose visible_at lies in the future are 404 to reads and absent
-- from lists). The OData layer is graph_odata.lua; each resource type has its module, whose
-- `routes` this one merges:
--   graph_applications.lua           applications, addPassword, removePassword
--   graph_service_principals.lua     servicePrincipals
--   graph_federated_credentials.lua  applications/{id}/federatedIdentityCredentials
local tokens = require "cmkflow.emulator.tokens"
local odata = require "cmkflow.emulator.graph_odata"
local applications = require "cmkflow.emulator.graph_applications"
local service_principals = require "cmkflow.emulator.graph_service_principals"
local federated_credentials = require "cmkflow.emulator.graph_federated_credentials"

local ipairs, pairs, type, tostring = ipairs, pairs, type, tostring

local M = {}

-- Collections whose next path segment may be a bare key ("applications/{id}").
local ENTITY_SETS = { applications = true, servicePrincipals = true, federatedIdentityCredentials = true }

-- route key ("applications/{}/federatedIdentityCredentials") -> {METHOD = handler}
local H = {}
for _, resource in ipairs { applications, service_principals, federated_credentials } do
  for route, methods in pairs(resource.routes) do
    assert(H[route] == nil, route)
    H[route] = methods
  end
end
M.routes = H
M.read_literal, M.parse_filter = odata.read_literal, odata.parse_filter

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

local READ_METHODS = { GET = true, HEAD = true }

-- ---- entry point ------------------------------------------------------------------------------

function M.handle(st, req)
  req.headers = req.headers or {}
  req.args = req.args or {}
  local claims, reason = tokens.verify(st, req, "graph")
  if not claims then return odata.unauthorized(req, reason) end
  local tenant = st:tenant(claims.tid)
  if not tenant then return odata.unauthorized(req, "issuer") end
  local route, status, code, message = odata.parse_route(req, ENTITY_SETS)
  if not route then return odata.err(req, status, code, message) end
  req.route = route
  if route.route == "me" or route.route:match("^me/") then
    if claims.idtyp ~= "user" and claims.scp == nil then
      return odata.err(req, 400, "BadRequest", "/me request is only valid with delegated authentication flow.")
    end
    return odata.not_found(req, tostring(claims.oid))
  end
  local entry = H[route.route]
  if not entry then
    local first = route.segs[2] or ""
    local name = odata.parse_segment(first)
    if not H[name] and name ~= "me" then
      return odata.err(req, 400, "BadRequest", "Resource not found for the segment '" .. name .. "'.")
    end
    local last = route.segs[#route.segs]
    return odata.err(req, 400, "BadRequest",
      "Resource not found for the segment '" .. (odata.parse_segment(last)) .. "'.")
  end
  local method = req.method == "HEAD" and "GET" or req.method
  local fn = entry[method]
  if not fn then
    return odata.err(req, 405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
  end
  req.caller = type(claims.oid) == "string" and claims.oid:lower() or nil
  if has_role(claims, READ_METHODS[method] and READ_ROLES or WRITE_ROLES) then
    req.access = "all"
  elseif has_role(claims, OWNED_BY) then
    req.access = "owned"
  else
    return odata.denied(req)
  end
  local body = {}
  if not READ_METHODS[method] then
    body = odata.read_body(req)
    if not body then return odata.body_error(req) end
  end
  return fn(st, req, tenant, route.keys, body)
end

return M
