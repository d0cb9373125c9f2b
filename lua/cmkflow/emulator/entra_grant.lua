-- The emulated Entra ID's token issuance, without HTTP (entra.lua serves it; the Storage key check
-- calls it server-side): resources and scopes, client authentication (a client secret, a
-- certificate assertion, a federated assertion), the client_credentials grant, the federated
-- token exchange and managed identity tokens, with Entra's AADSTS errors.
-- https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
--   M.exchange(st, tenant_ref, client_id, assertion, scope) -> token, claims | nil, err
--   M.managed_identity_token(st, identity, resource) -> token, claims | nil, err
--   M.client_credentials(st, tenant_ref, form, opts) -> response table | nil, err
--   M.resource(text) -> {aud, version, name} | nil      (a scope's or v1 resource's API)
--   M.tenant_not_found(ref) -> nil, err;  M.SPECIAL_TENANTS, M.LIFETIME
-- err = {error = oauth code, aadsts = number, text = message without the "AADSTSn: " prefix}.
local core = require "cmkflow.core"
local clouds = require "cmkflow.util.clouds"
local tokens = require "cmkflow.emulator.tokens"
local crypto, jose, json = core.crypto, core.jose, core.json

local M = {}

local JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
local EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
local WIF_DOC = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
local CERT_DOC = "https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials"
local LIFETIME = 3599

-- ---- errors ---------------------------------------------------------------------------------

local function err(oauth, aadsts, text) return nil, { error = oauth, aadsts = aadsts, text = text } end

local function missing(name)
  return err("invalid_request", 900144, ("The request body must contain the following parameter: '%s'."):format(name))
end

local function tenant_not_found(ref)
  return err("invalid_request", 90002, ("Tenant '%s' not found. Check to make sure you have the correct tenant ID and "
    .. "are signing into the correct cloud. Check with your subscription administrator, this may happen if there "
    .. "are no active subscriptions for the tenant."):format(ref))
end

local function not_in_directory(app_id, tenant)
  return err("unauthorized_client", 700016, ("Application with identifier '%s' was not found in the directory '%s'. "
    .. "This can happen if the application has not been installed by the administrator of the tenant or consented "
    .. "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.")
    :format(app_id, tenant))
end

local function bad_signature(detail)
  return err("invalid_client", 700027, "Client assertion failed signature validation." .. (detail and (" " .. detail) or ""))
end

local function out_of_range(st, claims)
  return err("invalid_client", 700024, ("Client assertion is not within its valid time range. Current time: %s, "
    .. "assertion valid from %s, expiry time of assertion %s. Review the documentation at %s .")
    :format(st:iso(), st:iso(tonumber(claims.nbf) or 0), st:iso(tonumber(claims.exp) or 0), CERT_DOC))
end

-- ---- resources and scopes -------------------------------------------------------------------

local LOCAL_ORIGIN = "^https://[%w%.%-]+:?%d*"
local function is_local_origin(s)
  local host = s:match("^https://([%w%.%-]+)")
  return host == "127.0.0.1" or host == "localhost"
end

local KNOWN = {
  ["https://management.azure.com"] = "arm", ["https://management.core.windows.net"] = "arm",
  ["797f4846-ba00-4fd7-ba43-dac1f8f63013"] = "arm",
  ["https://graph.microsoft.com"] = "graph", ["00000003-0000-0000-c000-000000000000"] = "graph",
  ["https://vault.azure.net"] = "kv", ["cfa8b339-82a2-471a-a3c9-0fc0be7a4093"] = "kv",
  ["https://storage.azure.com"] = "storage", ["e406a681-f3d4-42a8-90b6-c2b029497af1"] = "storage",
  [EXCHANGE_AUDIENCE:lower()] = "exchange", [tokens.TOKEN_EXCHANGE_APP] = "exchange",
}
local API = {
  arm = { name = "arm", aud = "https://management.azure.com/", version = "1.0", cloud = "azure" },
  graph = { name = "graph", aud = "https://graph.microsoft.com", version = "1.0", cloud = "azure" },
  kv = { name = "kv", aud = "https://vault.azure.net", version = "1.0", cloud = "azure" },
  -- Azure Storage's resource is the same in every cloud (cloud nil: any tenant's)
  storage = { name = "storage", aud = "https://storage.azure.com", version = "1.0" },
  exchange = { name = "exchange", aud = tokens.TOKEN_EXCHANGE_APP, version = "2.0", cloud = "azure" },
}
-- The other clouds' resources: "cloud:kind" -> API (the token's aud is the resource URI; a token
-- exchange token's aud is the cloud's exchange audience itself).
for _, cloud in ipairs(clouds.NAMES) do
  if cloud ~= "azure" then
    for _, kind in ipairs { "arm", "graph", "kv" } do
      local uri = clouds.resource(cloud, kind)
      KNOWN[uri:gsub("/+$", ""):lower()] = cloud .. ":" .. kind
      API[cloud .. ":" .. kind] = { name = kind, aud = uri, version = "1.0", cloud = cloud }
    end
    local exchange = clouds.CLOUDS[cloud].token_exchange_audience
    KNOWN[exchange:lower()] = cloud .. ":exchange"
    API[cloud .. ":exchange"] = { name = "exchange", aud = exchange, version = "2.0", cloud = cloud }
  end
end

-- The API a resource identifier names (trailing slashes ignored; the single-origin forms
-- https://127.0.0.1:PORT[/] = ARM, …/graph = Graph, https://vault.localhost[:PORT] = Key Vault).
-- api.cloud names the cloud of a sovereign cloud's resource (nil: public or single origin).
function M.resource(text)
  if type(text) ~= "string" or text == "" then return nil end
  local r = text:gsub("/+$", ""):lower()
  local kind = KNOWN[r]
  if kind then return API[kind] end
  -- single origin: Entra puts the requested resource itself in aud (tokens.origin_audiences)
  if r:match("^https://vault%.localhost:?%d*$") then kind = "kv"
  elseif is_local_origin(r) and r:match(LOCAL_ORIGIN .. "$") then kind = "arm"
  elseif is_local_origin(r) and r:match(LOCAL_ORIGIN .. "/graph$") then kind = "graph"
  end
  return kind and { name = kind, aud = text, version = "1.0" }
end

local RESERVED = { openid = true, profile = true, offline_access = true, email = true }

-- The resource of a client-credentials scope, or nil, err.
local function scope_resource(scope)
  if scope == nil or scope == "" then return missing("scope") end
  local resources = {}
  for s in scope:gmatch("%S+") do
    if not RESERVED[s:lower()] then resources[#resources + 1] = s end
  end
  if #resources == 0 then return missing("scope") end
  local res = {}
  for _, s in ipairs(resources) do
    local r = s:match("^(.-)/%.default$")
    if not r or r == "" then
      if s:match("^[%w%-%.]+://[^%s]+/[%w%.%-_]+$") or s:match("^[%x%-]+/[%w%.%-_]+$") then
        return err("invalid_scope", 1002012, ("The provided value for scope %s is not valid. Client credential flows "
          .. "must have a scope value with /.default suffixed to the resource identifier (application ID URI).")
          :format(s))
      end
      return err("invalid_scope", 70011, ("The provided request must include a 'scope' input parameter. The provided "
        .. "value for the input parameter 'scope' is not valid. The scope %s is not valid."):format(scope))
    end
    res[#res + 1] = r
  end
  if #res > 1 then
    return err("invalid_scope", 700022, ("The provided value for the input parameter scope is not valid because it "
      .. "contains more than one resource. Scope %s is not valid."):format(scope))
  end
  return res[1]
end

local function resource_not_found(resource, tenant)
  return err("invalid_resource", 500011, ("The resource principal named %s was not found in the tenant named %s. "
    .. "This can happen if the application has not been installed by the administrator of the tenant or consented "
    .. "to by any user in the tenant. You might have sent your authentication request to the wrong tenant.")
    :format(resource, tenant.name))
end

-- ---- tokens ---------------------------------------------------------------------------------

local function aud_list(aud)
  if type(aud) == "string" then return { aud } end
  if type(aud) == "table" then return aud end
  return {}
end

-- The claims and token of an app-only token for sp (in tenant) to api; acr "1" secret, "2" assertion.
local function issue_app_token(st, tenant, sp, api, acr, extra)
  local claims = { aud = api.aud, oid = sp.id, sub = sp.id, idtyp = "app" }
  if api.version == "2.0" then
    claims.azp, claims.azpacr = sp.appId, acr
  else
    claims.appid, claims.appidacr, claims.idp = sp.appId, acr, tokens.issuer_v1(tenant.id, tenant.cloud)
  end
  if api.name == "graph" and sp.app_roles and #sp.app_roles > 0 then claims.roles = json.array(sp.app_roles) end
  for k, v in pairs(extra or {}) do claims[k] = v end
  local token = tokens.issue(st, tenant, claims, api.version, LIFETIME)
  return token, claims
end

-- ---- client authentication ------------------------------------------------------------------

local function check_secret(st, app, secret)
  local h = crypto.sha256_hex(secret)
  local expired = false
  for _, pc in ipairs(app and app.passwordCredentials or {}) do
    if pc.secret_sha256 == h then
      if pc.endDateTime and pc.endDateTime < st:iso() then
        expired = true
      else
        return true
      end
    end
  end
  if expired then
    return err("invalid_client", 7000222, ("The provided client secret keys for app '%s' are expired. Visit the "
      .. "Azure portal to create new keys for your app."):format(app.appId))
  end
  return err("invalid_client", 7000215, ("Invalid client secret provided. Ensure the secret being sent in the request "
    .. "is the client secret value, not the client secret ID, for a secret added to app '%s'.")
    :format(app and app.appId or ""))
end

local function cert_key(cred)
  local pem = cred.cert_pem and cred.cert_pem:match("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-%-%-%-%-%-END CERTIFICATE%-%-%-%-%-")
  if not pem then return nil end
  local ok, key = pcall(crypto.key_from_pem, pem)
  return ok and key or nil
end

-- Certificate (private_key_jwt) assertion: header x5t#S256/x5t names a registered certificate.
local function check_certificate_assertion(st, app, assertion, header, claims, audiences)
  local s256, sha1 = header["x5t#S256"], header.x5t
  local cred
  for _, kc in ipairs(app and app.keyCredentials or {}) do
    if (s256 and kc.thumbprint_s256 == s256) or (not s256 and sha1 and kc.thumbprint == sha1) then cred = kc break end
  end
  if not cred then
    return bad_signature("The certificate used to sign the client assertion is not registered on application '"
      .. tostring(app and app.appId) .. "'.")
  end
  local key = cert_key(cred)
  if not key or not jose.verify(assertion, key) then return bad_signature() end
  local now = st:now()
  if type(claims.exp) ~= "number" or claims.exp <= now or (type(claims.nbf) == "number" and claims.nbf > now + 300) then
    return out_of_range(st, claims)
  end
  local aud_ok = false
  for _, a in ipairs(aud_list(claims.aud)) do
    if audiences[a] then aud_ok = true end
  end
  if not aud_ok then
    return err("invalid_client", 50013, ("Assertion audience claim does not match the required value. The audience in "
      .. "the assertion was '%s' and the expected audience is the token endpoint URL."):format(tostring(claims.aud)))
  end
  return true
end

-- The emulator tenant whose issuer iss is (in the tenant's own cloud), or nil.
local function issuer_tenant(st, iss)
  local cloud, tid = clouds.parse_issuer(iss)
  local t = tid and st.tenants[tid]
  return t and (t.cloud or "azure") == cloud and t or nil
end

-- Federated assertion: matched exactly on issuer, subject (case-sensitive) and audience against the
-- FICs of the client's HOME application; signature, token type and expiry for emulator issuers.
local function check_federated_assertion(st, app, assertion, claims, cloud)
  local iss, sub = claims.iss, claims.sub
  if type(iss) ~= "string" or type(sub) ~= "string" then
    return err("invalid_client", 50027, "JWT token is invalid or malformed.")
  end
  -- Entra of cloud C accepts only C's exchange audience: a credential naming another cloud's
  -- audience never matches (AADSTS700212 below)
  local own = clouds.CLOUDS[cloud or "azure"].token_exchange_audience
  local auds = {}
  for _, a in ipairs(aud_list(claims.aud)) do
    a = (a == tokens.TOKEN_EXCHANGE_APP) and EXCHANGE_AUDIENCE or a
    if a == own then auds[#auds + 1] = a end
  end
  local function aud_matches(fic)
    for _, fa in ipairs(fic.audiences or {}) do
      for _, a in ipairs(auds) do
        if fa == a then return true end
      end
    end
    return false
  end
  local ok_visible, ok_hidden, by_issuer, by_subject, subject_case = false, false, false, false, false
  for _, fic in pairs(app and app.federatedIdentityCredentials or {}) do
    local visible = st:visible(fic)
    if fic.issuer == iss and fic.subject == sub and aud_matches(fic) then
      if visible then ok_visible = true else ok_hidden = true end
    end
    if visible and fic.issuer == iss then
      by_issuer = true
      if fic.subject == sub then
        by_subject = true
      elseif type(fic.subject) == "string" and fic.subject:lower() == sub:lower() then
        subject_case = true
      end
    end
  end
  local aud_text = table.concat(aud_list(claims.aud), ",")
  if not ok_visible then
    if ok_hidden then
      return err("invalid_request", 70021, ("No matching federated identity record found for presented assertion. "
        .. "Assertion Issuer: '%s'. Assertion Subject: '%s'. Assertion Audience: '%s'. %s"):format(iss, sub, aud_text, WIF_DOC))
    elseif not by_issuer then
      return err("invalid_client", 700211, ("No matching federated identity record found for presented assertion issuer "
        .. "'%s'. Please check your federated identity credential Subject, Audience and Issuer against the presented "
        .. "assertion. %s"):format(iss, WIF_DOC))
    elseif not by_subject and subject_case then
      return err("invalid_client", 7002138, ("No matching federated identity record found for presented assertion "
        .. "subject '%s'. Federated identity credential subjects are case-sensitive and a credential's subject differs "
        .. "only by case. %s"):format(sub, WIF_DOC))
    elseif not by_subject then
      return err("invalid_client", 700213, ("No matching federated identity record found for presented assertion subject "
        .. "'%s'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. "
        .. "%s"):format(sub, WIF_DOC))
    else
      return err("invalid_client", 700212, ("No matching federated identity record found for presented assertion audience "
        .. "'%s'. Please check your federated identity credential Subject, Audience and Issuer against the presented "
        .. "assertion. %s"):format(aud_text, WIF_DOC))
    end
  end
  local itenant = issuer_tenant(st, iss)
  if itenant then
    if not jose.verify(assertion, itenant.key) then return bad_signature() end
    if claims.idtyp ~= "app" then
      return err("invalid_client", 700229, "Forbidden token type. Only app-only tokens may be used as Federated "
        .. "Identity Credentials for AAD issuer.")
    end
  end
  local now = st:now()
  if type(claims.exp) ~= "number" or claims.exp <= now or (type(claims.nbf) == "number" and claims.nbf > now + 300) then
    return out_of_range(st, claims)
  end
  return true
end

-- ---- client_credentials ---------------------------------------------------------------------

-- The token endpoint URLs a certificate assertion's aud may name for tenant (both host forms,
-- tenant GUID or the segment as sent, plus opts.audiences).
local function assertion_audiences(tenant, tenant_ref, extra)
  local set = {}
  local c = clouds.CLOUDS[tenant.cloud or "azure"]
  local origins = { "https://" .. c.login }
  for _, a in ipairs(c.login_aliases) do origins[#origins + 1] = "https://" .. a end
  for _, origin in ipairs(origins) do
    for _, t in ipairs { tenant.id, tenant_ref } do
      set[origin .. "/" .. t .. "/oauth2/v2.0/token"] = true
      set[origin .. "/" .. t .. "/oauth2/token"] = true
    end
  end
  for _, a in ipairs(extra or {}) do set[a] = true end
  return set
end

local SPECIAL_TENANTS = { common = true, organizations = true, consumers = true }

-- Runs the client_credentials grant. tenant_ref: the URL's tenant segment (or nil with opts.adfs);
-- form: the decoded request fields; opts = {v1 = bool, adfs = bool, basic = {id, secret}?,
-- audiences = {extra token endpoint URLs}}. Returns {token, claims, api, resource} | nil, err.
function M.client_credentials(st, tenant_ref, f, opts)
  opts = opts or {}
  local grant = f.grant_type
  if grant == nil or grant == "" then return missing("grant_type") end
  if grant ~= "client_credentials" then
    return err("unsupported_grant_type", 70003, ("The app requested an unsupported grant type '%s'."):format(grant))
  end
  local client_id, secret = f.client_id, f.client_secret
  if opts.basic then
    client_id = client_id or opts.basic.id
    secret = secret or opts.basic.secret
  end
  if client_id == nil or client_id == "" then return missing("client_id") end
  local app = st:application_by_appid(client_id)
  local tenant
  if opts.adfs then
    tenant = app and st.tenants[app.tenant]
    if not tenant then return not_in_directory(client_id, "adfs") end
    tenant_ref = tenant.id
  else
    if SPECIAL_TENANTS[(tenant_ref or ""):lower()] then
      return err("invalid_request", 9001023, "The grant type is not supported over the /common or /consumers "
        .. "endpoints. Please use the /organizations or tenant-specific endpoint.")
    end
    tenant = st:tenant(tenant_ref)
    -- a tenant lives in one cloud: another cloud's login host does not know it
    if not tenant or (opts.cloud and opts.cloud ~= (tenant.cloud or "azure")) then
      return tenant_not_found(tenant_ref or "")
    end
  end
  local resource, e
  if opts.v1 then
    resource = f.resource
    if resource == nil or resource == "" then return missing("resource") end
  else
    resource, e = scope_resource(f.scope)
    if not resource then return nil, e end
  end
  local assertion = f.client_assertion
  if (secret == nil or secret == "") and (assertion == nil or assertion == "") then
    return err("invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' "
      .. "or 'client_secret'.")
  end
  if assertion and assertion ~= "" then
    if f.client_assertion_type == nil or f.client_assertion_type == "" then return missing("client_assertion_type") end
    if f.client_assertion_type ~= JWT_BEARER then
      return err("invalid_request", 50027, "JWT token is invalid or malformed: client_assertion_type must be '"
        .. JWT_BEARER .. "'.")
    end
  end
  local sp = st:service_principal_by_appid(tenant, client_id)
  if not sp then return not_in_directory(client_id, tenant.id) end
  if sp.accountEnabled == false then
    return err("unauthorized_client", 7000112, ("Application '%s'(%s) is disabled."):format(client_id,
      tostring(sp.displayName or "")))
  end
  local acr
  if assertion and assertion ~= "" then
    local header, claims = jose.decode(assertion)
    if not header then return err("invalid_request", 50027, "JWT token is invalid or malformed.") end
    local ok
    if claims.iss == client_id or claims.iss == nil and claims.sub == client_id then
      if claims.sub ~= client_id then
        return err("invalid_client", 700021, "Client assertion application identifier doesn't match 'client_id' "
          .. "parameter. Review the documentation at " .. CERT_DOC .. " .")
      end
      ok, e = check_certificate_assertion(st, app, assertion, header, claims,
        assertion_audiences(tenant, tenant_ref, opts.audiences))
    else
      ok, e = check_federated_assertion(st, app, assertion, claims, tenant.cloud)
    end
    if not ok then return nil, e end
    acr = "2"
  else
    local ok
    ok, e = check_secret(st, app, secret)
    if not ok then return nil, e end
    acr = "1"
  end
  local api = M.resource(resource)
  -- another cloud's resource is unknown to this tenant's cloud (AADSTS500011)
  if not api or (api.cloud and api.cloud ~= (tenant.cloud or "azure")) then
    return resource_not_found(resource, tenant)
  end
  local token, claims = issue_app_token(st, tenant, sp, api, acr)
  return { token = token, claims = claims, api = api, resource = resource, tenant = tenant }
end

-- The federated exchange as Storage performs it server-side. Returns token, claims | nil, err.
function M.exchange(st, tenant_ref, client_id, assertion, scope)
  local r, e = M.client_credentials(st, tenant_ref, { grant_type = "client_credentials", client_id = client_id,
    client_assertion_type = JWT_BEARER, client_assertion = assertion or "", scope = scope })
  if not r then return nil, e end
  return r.token, r.claims
end

-- A token for a managed identity (st.identities entry) to resource (no "/.default").
-- Returns token, claims, api | nil, err.
function M.managed_identity_token(st, identity, resource)
  local tenant = st.tenants[identity.tenant or ""]
  if not tenant then return tenant_not_found(tostring(identity.tenant)) end
  local api = M.resource(resource)
  if not api or (api.cloud and api.cloud ~= (tenant.cloud or "azure")) then
    return resource_not_found(tostring(resource), tenant)
  end
  local claims = { aud = api.aud, oid = identity.principalId, sub = identity.principalId, idtyp = "app",
    xms_mirid = identity.resource_id }
  if api.version == "2.0" then
    claims.azp, claims.azpacr = identity.clientId, "2"
  else
    claims.appid, claims.appidacr, claims.idp = identity.clientId, "2", tokens.issuer_v1(tenant.id, tenant.cloud)
  end
  local token = tokens.issue(st, tenant, claims, api.version, LIFETIME)
  return token, claims, api
end

M.tenant_not_found, M.SPECIAL_TENANTS, M.LIFETIME = tenant_not_found, SPECIAL_TENANTS, LIFETIME

return M
