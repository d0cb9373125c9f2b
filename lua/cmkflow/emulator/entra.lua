-- The emulated Entra ID over HTTP (services "entra" and "imds"): OIDC discovery, JWKS, MSAL
-- instance discovery, the v2, v1 and ADFS token endpoints and the IMDS managed identity endpoint.
-- What a token request gets is decided in entra_grant.lua.
--   M.handle(st, req, service) -> status, headers, body
--   M.select_identity(st, args) -> identity | nil, status, code, text    (which identity IMDS serves)
local core = require "cmkflow.core"
local form = require "cmkflow.form"
local respond = require "cmkflow.emulator.respond"
local tokens = require "cmkflow.emulator.tokens"
local clouds = require "cmkflow.util.clouds"
local grant = require "cmkflow.emulator.entra_grant"
local crypto, json = core.crypto, core.json

local M = {}

local LIFETIME, SPECIAL_TENANTS = grant.LIFETIME, grant.SPECIAL_TENANTS

-- ---- HTTP -----------------------------------------------------------------------------------

local REAL_HOSTS = { ["login.microsoftonline.com"] = true, ["login.windows.net"] = true, ["login.microsoft.com"] = true,
  ["login.microsoftonline.us"] = true, ["login.chinacloudapi.cn"] = true }

local function origin(req)
  local host = req.host or "127.0.0.1"
  if REAL_HOSTS[host] then return "https://" .. host end
  return (req.scheme or "https") .. "://" .. host .. ":" .. tostring(req.port)
end

local function aad_fail(req, e) return respond.aad_error(req, e.error, e.aadsts, e.text) end

local DISCOVERY_HEADERS = { ["cache-control"] = "max-age=86400, private", ["access-control-allow-origin"] = "*" }

local function oidc_v2(req, tid, t)
  local o = origin(req)
  local b = o .. "/" .. tid
  return respond.json(req, 200, {
    token_endpoint = b .. "/oauth2/v2.0/token",
    token_endpoint_auth_methods_supported = json.array { "client_secret_post", "private_key_jwt", "client_secret_basic" },
    jwks_uri = b .. "/discovery/v2.0/keys",
    response_modes_supported = json.array { "query", "fragment", "form_post" },
    subject_types_supported = json.array { "pairwise" },
    id_token_signing_alg_values_supported = json.array { "RS256" },
    response_types_supported = json.array { "code", "id_token", "code id_token", "id_token token" },
    scopes_supported = json.array { "openid", "profile", "email", "offline_access" },
    issuer = tokens.issuer_v2(tid, t and t.cloud),
    request_uri_parameter_supported = false,
    userinfo_endpoint = "https://graph.microsoft.com/oidc/userinfo",
    authorization_endpoint = b .. "/oauth2/v2.0/authorize",
    device_authorization_endpoint = b .. "/oauth2/v2.0/devicecode",
    http_logout_supported = true, frontchannel_logout_supported = true,
    end_session_endpoint = b .. "/oauth2/v2.0/logout",
    claims_supported = json.array { "sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid" },
    kerberos_endpoint = b .. "/kerberos",
    tenant_region_scope = "EU", cloud_instance_name = "microsoftonline.com", cloud_graph_host_name = "graph.windows.net",
    msgraph_host = "graph.microsoft.com", rbac_url = "https://pas.windows.net",
  }, DISCOVERY_HEADERS)
end

local function oidc_v1(req, tid, t)
  local b = origin(req) .. "/" .. tid
  return respond.json(req, 200, {
    token_endpoint = b .. "/oauth2/token",
    token_endpoint_auth_methods_supported = json.array { "client_secret_post", "private_key_jwt", "client_secret_basic" },
    jwks_uri = b .. "/discovery/keys",
    response_modes_supported = json.array { "query", "fragment", "form_post" },
    subject_types_supported = json.array { "pairwise" },
    id_token_signing_alg_values_supported = json.array { "RS256" },
    response_types_supported = json.array { "code", "id_token", "code id_token", "token id_token", "token" },
    scopes_supported = json.array { "openid" },
    issuer = tokens.issuer_v1(tid, t and t.cloud),
    authorization_endpoint = b .. "/oauth2/authorize",
    device_authorization_endpoint = b .. "/oauth2/devicecode",
    end_session_endpoint = b .. "/oauth2/logout",
    tenant_region_scope = "EU", cloud_instance_name = "microsoftonline.com", cloud_graph_host_name = "graph.windows.net",
    msgraph_host = "graph.microsoft.com",
  }, DISCOVERY_HEADERS)
end

local function oidc_adfs(req)
  local b = origin(req) .. "/adfs"
  return respond.json(req, 200, {
    issuer = b,
    authorization_endpoint = b .. "/oauth2/authorize",
    token_endpoint = b .. "/oauth2/token",
    jwks_uri = b .. "/discovery/keys",
    device_authorization_endpoint = b .. "/oauth2/devicecode",
    end_session_endpoint = b .. "/oauth2/logout",
    token_endpoint_auth_methods_supported = json.array { "client_secret_post", "client_secret_basic", "private_key_jwt" },
    response_types_supported = json.array { "code", "id_token", "code id_token", "id_token token", "code token",
      "code id_token token" },
    response_modes_supported = json.array { "query", "fragment", "form_post" },
    grant_types_supported = json.array { "authorization_code", "refresh_token", "client_credentials" },
    subject_types_supported = json.array { "pairwise" },
    scopes_supported = json.array { "openid", "profile", "email", "allatclaims", "logon_cert" },
    id_token_signing_alg_values_supported = json.array { "RS256" },
  }, DISCOVERY_HEADERS)
end

local function jwks_all(st)
  local keys = json.array()
  local ids = {}
  for tid in pairs(st.tenants) do ids[#ids + 1] = tid end
  table.sort(ids)
  for _, tid in ipairs(ids) do keys[#keys + 1] = tokens.jwks(st.tenants[tid]).keys[1] end
  return { keys = keys }
end

local function instance_discovery(req)
  local ae = (req.args or {}).authorization_endpoint or ""
  local tenant = ae:match("^https?://[^/]+/([^/]+)/") or "common"
  return respond.json(req, 200, {
    tenant_discovery_endpoint = origin(req) .. "/" .. tenant .. "/v2.0/.well-known/openid-configuration",
    ["api-version"] = "1.1",
    metadata = json.array {
      { preferred_network = "login.microsoftonline.com", preferred_cache = "login.windows.net",
        aliases = json.array { "login.microsoftonline.com", "login.windows.net", "login.microsoft.com", "sts.windows.net" } },
      { preferred_network = "login.partner.microsoftonline.cn", preferred_cache = "login.partner.microsoftonline.cn",
        aliases = json.array { "login.partner.microsoftonline.cn", "login.chinacloudapi.cn" } },
      { preferred_network = "login.microsoftonline.us", preferred_cache = "login.microsoftonline.us",
        aliases = json.array { "login.microsoftonline.us", "login.usgovcloudapi.net" } },
    },
  }, DISCOVERY_HEADERS)
end

local function basic_auth(req)
  local v = req.headers.authorization
  local b64 = v and v:match("^[Bb]asic%s+(%S+)$")
  if not b64 then return nil end
  local ok, raw = pcall(crypto.b64_decode, b64)
  if not ok or type(raw) ~= "string" then return nil end
  local id, secret = raw:match("^([^:]*):(.*)$")
  if not id then return nil end
  return { id = form.unescape(id), secret = form.unescape(secret) }
end

local function token_endpoint(st, req, tenant_ref, kind)
  if req.method ~= "POST" then
    return respond.aad_error(req, "invalid_request", 900561, "The endpoint only accepts POST requests. Received a "
      .. req.method .. " request.")
  end
  local ct = (req.headers["content-type"] or ""):lower()
  if not ct:find("application/x-www-form-urlencoded", 1, true) then
    return respond.aad_error(req, "invalid_request", 900144,
      "The request body must contain the following parameter: 'grant_type'.")
  end
  local f = form.decode(req.body)
  local o = origin(req)
  local audiences = {}
  if tenant_ref then
    audiences[1] = o .. "/" .. tenant_ref .. "/oauth2/v2.0/token"
    audiences[2] = o .. "/" .. tenant_ref .. "/oauth2/token"
  else
    audiences[1] = o .. "/adfs/oauth2/token"
  end
  local opts = { v1 = kind == "v1", adfs = kind == "adfs", basic = basic_auth(req), audiences = audiences,
    cloud = clouds.of_host(req.host) }
  if kind == "adfs" and (f.scope == nil or f.scope == "") and f.resource then opts.v1 = true end
  local r, e = grant.client_credentials(st, tenant_ref, f, opts)
  if not r then return aad_fail(req, e) end
  local hdr = { ["cache-control"] = "no-store, no-cache", pragma = "no-cache" }
  if opts.v1 and kind == "v1" then
    local now = st:now()
    return respond.json(req, 200, { token_type = "Bearer", expires_in = tostring(LIFETIME),
      ext_expires_in = tostring(LIFETIME), expires_on = tostring(now + LIFETIME), not_before = tostring(now - 300),
      resource = r.resource, access_token = r.token }, hdr)
  end
  return respond.json(req, 200, { token_type = "Bearer", expires_in = LIFETIME, ext_expires_in = LIFETIME,
    access_token = r.token }, hdr)
end

-- ---- IMDS -----------------------------------------------------------------------------------

local function imds_error(req, status, code, text)
  return respond.json(req, status, { error = code, error_description = text })
end

-- The identity an IMDS request selects, or nil, status, code, text.
function M.select_identity(st, args)
  local cid, oid, rid = args.client_id, args.object_id or args.principal_id, args.msi_res_id or args.mi_res_id
  local found, count, only = nil, 0, nil
  for _, ident in pairs(st.identities) do
    if st:visible(ident) then
      count = count + 1
      only = ident
      if (cid and ident.clientId and ident.clientId:lower() == cid:lower())
         or (oid and ident.principalId and ident.principalId:lower() == oid:lower())
         or (rid and ident.resource_id and ident.resource_id:lower() == rid:lower()) then
        found = ident
      end
    end
  end
  if cid or oid or rid then
    if found then return found end
    return nil, 400, "invalid_request", "Identity not found"
  end
  if count == 1 then return only end
  if count == 0 then return nil, 400, "invalid_request", "Identity not found" end
  return nil, 400, "invalid_request", "Multiple user assigned identities exist, please specify the clientId / "
    .. "resourceId of the identity in the token request"
end

local function imds(st, req)
  if req.method ~= "GET" then return imds_error(req, 405, "invalid_request", "Only GET is supported") end
  if (req.headers.metadata or ""):lower() ~= "true" then
    return imds_error(req, 400, "invalid_request", "Required metadata header not specified")
  end
  local args = req.args or {}
  if not args["api-version"] or args["api-version"] == "" then
    return imds_error(req, 400, "invalid_request", "Required query variable 'api-version' is missing")
  end
  local resource = args.resource
  if not resource or resource == "" then
    return imds_error(req, 400, "invalid_request", "Required query variable 'resource' is missing")
  end
  local ident, status, code, text = M.select_identity(st, args)
  if not ident then return imds_error(req, status, code, text) end
  local token, claims = grant.managed_identity_token(st, ident, resource)
  if not token then
    return imds_error(req, 400, claims.error, ("AADSTS%d: %s"):format(claims.aadsts, claims.text))
  end
  local now = st:now()
  return respond.json(req, 200, { access_token = token, refresh_token = "", expires_in = tostring(LIFETIME),
    expires_on = tostring(now + LIFETIME), ext_expires_in = tostring(LIFETIME), not_before = tostring(now - 300),
    resource = resource, token_type = "Bearer", client_id = ident.clientId })
end

-- ---- dispatch -------------------------------------------------------------------------------

local function with_tenant(st, req, ref, fn)
  if SPECIAL_TENANTS[ref:lower()] then return fn("{tenantid}") end
  local t = st:tenant(ref)
  local host_cloud = clouds.of_host(req.host)
  if not t or (host_cloud and host_cloud ~= (t.cloud or "azure")) then
    local _, e = grant.tenant_not_found(ref)
    return respond.aad_error(req, "invalid_tenant", e.aadsts, e.text)
  end
  return fn(t.id, t)
end

function M.handle(st, req, service)
  if service == "imds" then return imds(st, req) end
  local path = req.service_path or req.path
  if path == "/adfs/.well-known/openid-configuration" then return oidc_adfs(req) end
  if path == "/adfs/discovery/keys" then return respond.json(req, 200, jwks_all(st), DISCOVERY_HEADERS) end
  if path == "/adfs/oauth2/token" then return token_endpoint(st, req, nil, "adfs") end
  if path == "/common/discovery/instance" then return instance_discovery(req) end
  local ref, rest = path:match("^/([^/]+)(/.*)$")
  if ref then
    if rest == "/v2.0/.well-known/openid-configuration" then
      return with_tenant(st, req, ref, function(tid, t) return oidc_v2(req, tid, t) end)
    elseif rest == "/.well-known/openid-configuration" then
      return with_tenant(st, req, ref, function(tid, t) return oidc_v1(req, tid, t) end)
    elseif rest == "/discovery/v2.0/keys" or rest == "/discovery/keys" then
      return with_tenant(st, req, ref, function(_, t)
        if not t then return respond.json(req, 200, jwks_all(st), DISCOVERY_HEADERS) end
        return respond.json(req, 200, tokens.jwks(t), DISCOVERY_HEADERS)
      end)
    elseif rest == "/oauth2/v2.0/token" then
      return token_endpoint(st, req, ref, "v2")
    elseif rest == "/oauth2/token" then
      return token_endpoint(st, req, ref, "v1")
    end
  end
  return respond.json(req, 404, { error = "not_found", error_description = "the emulated Entra ID has no endpoint "
    .. tostring(req.method) .. " " .. tostring(path) })
end

return M
