-- A scriptable fake Azure for the http/auth/azure-library specs. Runs in the test server's own Lua
-- state (core/server.c): server.start{handler = "spec/support/testserver.lua", config = json}.
--
-- config (JSON):
--   routes  [{ method = "GET" (or "*"/absent: any), path = "/subscriptions",
--              pattern = true        -- path is a Lua pattern (anchored with ^...$),
--              host = "management.azure.com" (optional, exact, lower-case),
--              args = {["api-version"] = "2022-12-01"} (optional, all must match),
--              auth = true           -- needs "Authorization: Bearer <token issued here>",
--              tenant = "...", audience = "https://vault.azure.net"  -- optional token checks,
--              responses = [{ status = 200, headers = {...}, body = "text" | <json value>,
--                             drop = true, delay_ms = n }, ...] }]
--            Responses replay in sequence; the last one repeats. Routes are tried in order before
--            the built-in endpoints, so a route can also fault-inject the token endpoint.
--   token   { clients = {[client_id] = { secret = "...", tenant = "..." (or tenants = {...}),
--                                         assertion = true (any JWT-shaped client_assertion) |
--                                         assertions = {"exact jwt", ...} }},
--             tenants = {...}        -- when given, other tenants get AADSTS90002
--             expires_in = 3599, invalid_client_status = 401 }
--   tenant  default tenant for Key Vault challenges (else the first client's tenant)
--
-- Built-in endpoints:
--   POST /{tenant}/oauth2/v2.0/token, POST /{tenant}/oauth2/token   client_credentials with
--        client_secret or client_assertion; success {"token_type":"Bearer","expires_in":...,
--        "access_token": <JWT-shaped token: tid, appid, aud, iss, exp>}; failures are Entra's error
--        JSON (AADSTS900144, 70003, 90002, 700016, 7000218, 7000215, 700027). invalid_client is
--        401, as Entra returns it (config token.invalid_client_status to change).
--   GET  /_test/journal   JSON array of {method, path, query, host, headers, body_len, body?, form?}
--        (authorization-like headers read "present"; token requests record form field names and
--        non-secret values only, never the body)
--   GET  /_test/count     {"count": n}
--   POST /_test/reset     clears the journal and restarts every route's response sequence
--   POST /_test/routes    body {"routes": [...]} replaces the routes (and restarts sequences)
-- Anything else: 404 {"error":{"code":"NotFound","message":...}}. _test requests are not journaled.
local core = require "cmkflow.core"
local form = require "cmkflow.form"
local json = core.json
local b64url, guid, random_bytes = core.crypto.b64url_encode, core.crypto.uuid4, core.crypto.random_bytes

local cfg = {}
local routes = {}
local journal = {}
local issued = {}      -- access token -> {tenant, client_id, audience, exp}

local JSON_CT = "application/json; charset=utf-8"
local MAX_JOURNAL_BODY = 65536

-- ---- small helpers ------------------------------------------------------------------------------

local function reply(status, body, extra)
  local h = { ["content-type"] = JSON_CT, ["x-ms-request-id"] = guid() }
  for k, v in pairs(extra or {}) do h[k] = v end
  return status, h, json.encode(body)
end

local function first_tenant()
  if cfg.tenant then return cfg.tenant end
  local clients = cfg.token and cfg.token.clients or {}
  for _, c in pairs(clients) do
    if c.tenant then return c.tenant end
    if c.tenants and c.tenants[1] then return c.tenants[1] end
  end
  return "00000000-0000-0000-0000-000000000000"
end

-- ---- journal ------------------------------------------------------------------------------------

local SECRET_HEADERS = { authorization = true, ["proxy-authorization"] = true,
                         ["x-identity-header"] = true, cookie = true }

local function record(req, extra)
  local headers = {}
  for k, v in pairs(req.headers) do headers[k] = SECRET_HEADERS[k] and "present" or v end
  local entry = { method = req.method, path = req.path, query = req.query, host = req.host,
                  headers = headers, body_len = #req.body }
  for k, v in pairs(extra or {}) do entry[k] = v end
  journal[#journal + 1] = entry
  return entry
end

-- ---- token endpoint -----------------------------------------------------------------------------

local function sts_error(status, err, code, text)
  local trace, corr = guid(), guid()
  local ts = os.date("!%Y-%m-%d %H:%M:%SZ")
  return reply(status, {
    error = err,
    error_description = ("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s")
      :format(code, text, trace, corr, ts),
    error_codes = json.array { code },
    timestamp = ts, trace_id = trace, correlation_id = corr,
    error_uri = "https://login.microsoftonline.com/error?code=" .. code,
  })
end

local function client_in_tenant(client, tenant)
  if client.tenants then
    for _, t in ipairs(client.tenants) do if t == tenant then return true end end
    return false
  end
  return client.tenant == nil or client.tenant == tenant
end

local function audience_of(f, v2)
  if v2 then return (f.scope or ""):gsub("/%.default$", ""):match("^(%S+)") or "" end
  return f.resource or ""
end

local function issue(tenant, client_id, audience, expires_in)
  local now = os.time()
  local header = b64url(json.encode { alg = "RS256", typ = "JWT", kid = "cmkflow-test" })
  local claims = b64url(json.encode {
    aud = audience, iss = "https://sts.windows.net/" .. tenant .. "/", tid = tenant,
    appid = client_id, azp = client_id, oid = client_id, sub = client_id,
    iat = now, nbf = now, exp = now + expires_in, ver = "1.0", jti = guid(),
  })
  local token = header .. "." .. claims .. "." .. b64url(random_bytes(32))
  issued[token] = { tenant = tenant, client_id = client_id, audience = audience, exp = now + expires_in }
  return token
end

local function token_endpoint(req, tenant, v2)
  local tcfg = cfg.token or {}
  local f = form.decode(req.body)
  record(req, { form = {
    grant_type = f.grant_type, client_id = f.client_id, scope = f.scope, resource = f.resource,
    client_assertion_type = f.client_assertion_type,
    has_secret = f.client_secret ~= nil, has_assertion = f.client_assertion ~= nil,
  } })
  local invalid_client = math.tointeger(tcfg.invalid_client_status) or 401
  if tcfg.tenants then
    local known = false
    for _, t in ipairs(tcfg.tenants) do if t == tenant then known = true end end
    if not known then
      return sts_error(400, "invalid_request", 90002, ("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."):format(tenant))
    end
  end
  local function missing(name)
    return sts_error(400, "invalid_request", 900144,
      ("The request body must contain the following parameter: '%s'."):format(name))
  end
  if not f.grant_type then return missing("grant_type") end
  if f.grant_type ~= "client_credentials" then
    return sts_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
  end
  if not f.client_id then return missing("client_id") end
  if v2 and not f.scope then return missing("scope") end
  if v2 and not f.scope:match("/%.default$") then
    return sts_error(400, "invalid_scope", 1002012,
      ("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."):format(f.scope))
  end
  local client = (tcfg.clients or {})[f.client_id]
  if not client or not client_in_tenant(client, tenant) then
    return sts_error(400, "unauthorized_client", 700016,
      ("Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."):format(f.client_id, tenant))
  end
  if f.client_secret then
    if f.client_secret ~= client.secret then
      return sts_error(invalid_client, "invalid_client", 7000215,
        ("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'."):format(f.client_id))
    end
  elseif f.client_assertion then
    local ok = false
    if client.assertion == true then
      ok = f.client_assertion:match("^[%w_-]+%.[%w_-]+%.[%w_-]*$") ~= nil
    end
    for _, a in ipairs(client.assertions or {}) do if a == f.client_assertion then ok = true end end
    if not ok then
      return sts_error(invalid_client, "invalid_client", 700027, "Client assertion failed signature validation.")
    end
  else
    return sts_error(invalid_client, "invalid_client", 7000218,
      "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
  end
  local expires_in = math.tointeger(tcfg.expires_in) or 3599
  local audience = audience_of(f, v2)
  local token = issue(tenant, f.client_id, audience, expires_in)
  local body = { token_type = "Bearer", expires_in = expires_in, ext_expires_in = expires_in,
                 access_token = token }
  if not v2 then
    body.expires_on = tostring(os.time() + expires_in)
    body.resource = audience
  end
  return reply(200, body, { ["cache-control"] = "no-store, no-cache", pragma = "no-cache" })
end

-- ---- routes -------------------------------------------------------------------------------------

local function load_routes(list)
  routes = {}
  for i, r in ipairs(list or {}) do
    assert(type(r.path) == "string", ("route %d has no path"):format(i))
    local pat
    if r.pattern then
      pat = r.path
      if pat:sub(1, 1) ~= "^" then pat = "^" .. pat end
      if pat:sub(-1) ~= "$" then pat = pat .. "$" end
    end
    local responses = r.responses or { { status = 200 } }
    assert(#responses > 0, ("route %d has no responses"):format(i))
    routes[i] = { spec = r, pat = pat, responses = responses, next = 1,
                  method = r.method and r.method ~= "*" and r.method:upper() or nil }
  end
end

local function route_matches(route, req)
  if route.method and route.method ~= req.method then return false end
  local r = route.spec
  if r.host and r.host:lower() ~= req.host then return false end
  if route.pat then
    if not req.path:match(route.pat) then return false end
  elseif r.path ~= req.path then
    return false
  end
  for k, v in pairs(r.args or {}) do
    if req.args[k] ~= v then return false end
  end
  return true
end

local function is_vault(host) return host:match("vault%.azure%.net$") or host:match("%.vault%.") end

local function unauthorized(req, route, reason, kv_message, arm_code, arm_message)
  local tenant = route.spec.tenant or first_tenant()
  if is_vault(req.host) then
    return reply(401, { error = { code = "Unauthorized", message = kv_message } }, {
      ["www-authenticate"] = ('Bearer authorization="https://login.windows.net/%s", resource="https://vault.azure.net"'):format(tenant),
    })
  end
  return reply(401, { error = { code = arm_code, message = arm_message } }, {
    ["www-authenticate"] = ('Bearer authorization_uri="https://login.windows.net/", error="invalid_token", error_description="%s"'):format(reason),
  })
end

local function check_auth(req, route)
  local header = req.headers["authorization"]
  local token = header and header:match("^[Bb]earer%s+(%S+)$")
  if not token then
    return unauthorized(req, route, "The authentication failed because of missing 'Authorization' header.",
      "AKV10000: Request is missing a Bearer or PoP token.", "AuthenticationFailed",
      "Authentication failed. The 'Authorization' header is missing.")
  end
  local t = issued[token]
  if not t then
    return unauthorized(req, route, "The access token is invalid.",
      "AKV10000: Request is missing a Bearer or PoP token.", "InvalidAuthenticationToken",
      "The access token is invalid.")
  end
  if t.exp <= os.time() then
    return unauthorized(req, route, "The access token expiry UTC time is earlier than current UTC time.",
      "AKV10000: The access token has expired.", "ExpiredAuthenticationToken",
      "The access token expiry UTC time is earlier than current UTC time.")
  end
  local spec = route.spec
  if spec.audience and spec.audience ~= t.audience then
    return unauthorized(req, route, "Invalid audience.",
      ("AKV10022: Invalid audience. Expected %s, found: %s."):format(spec.audience, t.audience),
      "InvalidAuthenticationTokenAudience",
      ("The access token has been obtained for wrong audience or resource '%s'. It should exactly match with one of the allowed audiences '%s'."):format(t.audience, spec.audience))
  end
  if spec.tenant and spec.tenant ~= t.tenant then
    return unauthorized(req, route, "Invalid issuer.",
      ("AKV10032: Invalid issuer. Expected one of https://sts.windows.net/%s/, found https://sts.windows.net/%s/."):format(spec.tenant, t.tenant),
      "InvalidAuthenticationTokenTenant",
      ("The access token is from the wrong issuer 'https://sts.windows.net/%s/'. It must match the tenant 'https://sts.windows.net/%s/' associated with this subscription. Please use the authority (URL) 'https://login.windows.net/%s' to get the token."):format(t.tenant, spec.tenant, spec.tenant))
  end
  return nil
end

local function route_response(req, route)
  local resp = route.responses[route.next]
  if route.next < #route.responses then route.next = route.next + 1 end
  if resp.drop then return nil end
  local headers = {}
  local body = resp.body
  if body ~= nil and type(body) ~= "string" then
    body = json.encode(body)
    headers["content-type"] = JSON_CT
  end
  for k, v in pairs(resp.headers or {}) do headers[k:lower()] = v end
  return math.tointeger(resp.status) or 200, headers, body or "", resp.delay_ms
end

-- ---- dispatch -----------------------------------------------------------------------------------

local function test_endpoint(req)
  if req.method == "GET" and req.path == "/_test/journal" then
    local list = json.array {}
    for i, e in ipairs(journal) do list[i] = e end
    return reply(200, list)
  elseif req.method == "GET" and req.path == "/_test/count" then
    return reply(200, { count = #journal })
  elseif req.method == "POST" and req.path == "/_test/reset" then
    journal = {}
    for _, r in ipairs(routes) do r.next = 1 end
    return 204, {}, ""
  elseif req.method == "POST" and req.path == "/_test/routes" then
    local body, err = json.decode(req.body)
    if type(body) ~= "table" then
      return reply(400, { error = { code = "BadRequest", message = tostring(err or "expected {\"routes\": [...]}") } })
    end
    load_routes(body.routes)
    return 204, {}, ""
  end
  return reply(404, { error = { code = "NotFound", message = "no such test endpoint " .. req.path } })
end

local function handle(req)
  if req.path:sub(1, 7) == "/_test/" then return test_endpoint(req) end
  for _, route in ipairs(routes) do
    if route_matches(route, req) then
      local entry = record(req, { route = route.spec.name })
      if #req.body <= MAX_JOURNAL_BODY and not req.path:match("/oauth2/") then entry.body = req.body end
      if route.spec.auth then
        local status, headers, body = check_auth(req, route)
        if status then return status, headers, body end
      end
      return route_response(req, route)
    end
  end
  if req.method == "POST" then
    local tenant = req.path:match("^/([^/]+)/oauth2/v2%.0/token$")
    if tenant then return token_endpoint(req, tenant, true) end
    tenant = req.path:match("^/([^/]+)/oauth2/token$")
    if tenant then return token_endpoint(req, tenant, false) end
  end
  record(req)
  return reply(404, { error = { code = "NotFound",
    message = ("The test server has no route for %s %s%s."):format(req.method, req.host, req.path) } })
end

return {
  init = function(config)
    if config and config ~= "" then
      local decoded, err = json.decode(config)
      assert(type(decoded) == "table", "testserver config: " .. tostring(err))
      cfg = decoded
    end
    load_routes(cfg.routes)
  end,
  handle = handle,
}
