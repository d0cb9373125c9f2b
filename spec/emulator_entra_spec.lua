-- The emulated Entra ID: discovery, JWKS, the v2/v1/ADFS token endpoints with secrets and
-- certificate assertions over HTTPS, and (in this process's own emulator state) the federated
-- exchange and managed identity tokens that Storage uses server-side.
local core = require "cmkflow.core"
local files = require "support.files"
local form = require "cmkflow.form"
local crypto, jose, json = core.crypto, core.jose, core.json

local ISV = "7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d"
local CUSTOMER = "3c9e1b7d-2a4f-4e6b-8c0d-9f8e7d6c5b4a"
local ISV_APP = "5e6f7a8b-0000-4000-8000-00000000a0d1"
local ISV_SECRET = "emulator-isv-deployer-secret"
local CUSTOMER_APP = "2b3c4d5e-0000-4000-8000-00000000c0d1"
local CERT_APP = "5e6f7a8b-0000-4000-8000-00000000a0c1"
local EXCHANGE_GUID = "fb60f99c-7a34-4190-8149-302f77469936"

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = deep_copy(x) end
  return out
end

local function claims_of(token)
  local _, claims = jose.decode(token)
  return claims
end

local function aadsts(resp)
  local body = json.decode(resp.body)
  return body.error_codes and body.error_codes[1], body
end

describe("emulator Entra ID over HTTPS", function()
  local emu, dir, cert_bundle, other_bundle

  setup(function()
    dir = files.tmpdir()
    for _, name in ipairs { "reg", "other" } do
      files.sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/%s.key -out %s/%s.crt -days 2 -subj /CN=%s")
        :format(dir, name, dir, name, name))
    end
    cert_bundle = files.read(dir .. "/reg.crt") .. files.read(dir .. "/reg.key")
    other_bundle = files.read(dir .. "/other.crt") .. files.read(dir .. "/other.key")
    files.write(dir .. "/reg.pem", cert_bundle)
    local seed = deep_copy(require "cmkflow.emulator.demo_seed")
    -- The seed loader reads the certificate with crypto.load_certificate, which needs the key
    -- too (reported); the emulator keeps only the certificate block for verification.
    table.insert(seed.tenants[1].principals, { name = "isv-cert", appId = CERT_APP, certificate_pem = cert_bundle })
    emu = require("support.emulator").start { seed = seed }
  end)

  teardown(function()
    if emu then emu:stop() end
    if dir then files.sh("rm -rf " .. files.quote(dir)) end
  end)

  local function get(url, headers)
    return assert(emu.http:request { method = "GET", url = url, headers = headers })
  end

  local function post(path, fields, headers)
    local h = { ["content-type"] = "application/x-www-form-urlencoded" }
    for k, v in pairs(headers or {}) do h[k] = v end
    local url = path:match("^https://") and path or emu.url .. path
    return assert(emu.http:request { method = "POST", url = url, headers = h, body = form.encode(fields) })
  end

  local function secret_form(extra)
    local f = { grant_type = "client_credentials", client_id = ISV_APP, client_secret = ISV_SECRET,
      scope = "https://management.azure.com/.default" }
    for k, v in pairs(extra or {}) do f[k] = v end
    for k, v in pairs(f) do if v == false then f[k] = nil end end
    return f
  end

  local function sp_id(tenant_name, app_id)
    for _, t in ipairs(emu:state().tenants) do
      if t.name == tenant_name then
        for _, sp in ipairs(t.service_principals) do
          if sp.appId == app_id then return sp.id end
        end
      end
    end
  end

  describe("discovery", function()
    it("serves the v2 OIDC document per tenant (GUID or domain) from the request's origin", function()
      for _, ref in ipairs { ISV, "isv.example" } do
        local resp = get(emu.url .. "/" .. ref .. "/v2.0/.well-known/openid-configuration")
        assert.equal(200, resp.status)
        local doc = resp.json
        assert.equal("https://login.microsoftonline.com/" .. ISV .. "/v2.0", doc.issuer)
        assert.equal(emu.url .. "/" .. ISV .. "/oauth2/v2.0/token", doc.token_endpoint)
        assert.equal(emu.url .. "/" .. ISV .. "/oauth2/v2.0/authorize", doc.authorization_endpoint)
        assert.equal(emu.url .. "/" .. ISV .. "/discovery/v2.0/keys", doc.jwks_uri)
        assert.same({ "RS256" }, doc.id_token_signing_alg_values_supported)
      end
      local real = get("https://login.microsoftonline.com/customer.example/v2.0/.well-known/openid-configuration")
      assert.equal(200, real.status)
      assert.equal("https://login.microsoftonline.com/" .. CUSTOMER .. "/oauth2/v2.0/token", real.json.token_endpoint)
    end)

    it("serves the v1 and ADFS documents", function()
      local v1 = get(emu.url .. "/" .. CUSTOMER .. "/.well-known/openid-configuration")
      assert.equal(200, v1.status)
      assert.equal("https://sts.windows.net/" .. CUSTOMER .. "/", v1.json.issuer)
      assert.equal(emu.url .. "/" .. CUSTOMER .. "/oauth2/token", v1.json.token_endpoint)
      local adfs = get(emu.url .. "/adfs/.well-known/openid-configuration")
      assert.equal(200, adfs.status)
      assert.equal(emu.url .. "/adfs/oauth2/token", adfs.json.token_endpoint)
      assert.equal(emu.url .. "/adfs/oauth2/authorize", adfs.json.authorization_endpoint)
      assert.equal(emu.url .. "/adfs/discovery/keys", adfs.json.jwks_uri)
    end)

    it("refuses an unknown tenant with AADSTS90002", function()
      local resp = get(emu.url .. "/nobody.example/v2.0/.well-known/openid-configuration")
      assert.equal(400, resp.status)
      local code, body = aadsts(resp)
      assert.equal(90002, code)
      assert.matches("^AADSTS90002: Tenant 'nobody.example' not found", body.error_description)
      local tok = post("/nobody.example/oauth2/v2.0/token", secret_form())
      assert.equal(90002, (aadsts(tok)))
    end)

    it("answers MSAL instance discovery", function()
      local resp = get(emu.url .. "/common/discovery/instance?api-version=1.1&authorization_endpoint="
        .. form.escape("https://login.microsoftonline.com/" .. ISV .. "/oauth2/v2.0/authorize"))
      assert.equal(200, resp.status)
      assert.equal(emu.url .. "/" .. ISV .. "/v2.0/.well-known/openid-configuration", resp.json.tenant_discovery_endpoint)
      assert.equal("login.microsoftonline.com", resp.json.metadata[1].preferred_network)
    end)

    it("publishes JWKS that verify the tenant's tokens and no other tenant's", function()
      local tok = post("/" .. ISV .. "/oauth2/v2.0/token", secret_form())
      assert.equal(200, tok.status)
      local isv_keys = get(emu.url .. "/" .. ISV .. "/discovery/v2.0/keys").json.keys
      local cust_keys = get(emu.url .. "/" .. CUSTOMER .. "/discovery/keys").json.keys
      local header = jose.decode(tok.json.access_token)
      assert.equal(isv_keys[1].kid, header.kid)
      assert.is_table(jose.verify(tok.json.access_token, crypto.key_from_jwk(isv_keys[1])))
      assert.is_nil(jose.verify(tok.json.access_token, crypto.key_from_jwk(cust_keys[1])))
    end)
  end)

  describe("client secret", function()
    it("issues a v1 ARM token for the v2 endpoint with the SP's object id", function()
      local resp = post("/isv.example/oauth2/v2.0/token", secret_form())
      assert.equal(200, resp.status)
      assert.equal("Bearer", resp.json.token_type)
      assert.equal(3599, resp.json.expires_in)
      assert.equal(3599, resp.json.ext_expires_in)
      local c = claims_of(resp.json.access_token)
      assert.equal(ISV, c.tid)
      assert.equal(sp_id("isv", ISV_APP), c.oid)
      assert.equal(c.oid, c.sub)
      assert.equal(ISV_APP, c.appid)
      assert.equal("1", c.appidacr)
      assert.equal("app", c.idtyp)
      assert.equal("https://management.azure.com/", c.aud)
      assert.equal("https://sts.windows.net/" .. ISV .. "/", c.iss)
      assert.is_true(c.exp > os.time() + 3000 and c.exp < os.time() + 3700)
      assert.is_true(c.nbf <= os.time())
    end)

    it("puts the seed's Graph application permissions in Graph tokens", function()
      local resp = post("/" .. ISV .. "/oauth2/v2.0/token", secret_form { scope = "https://graph.microsoft.com/.default" })
      assert.equal(200, resp.status)
      local c = claims_of(resp.json.access_token)
      assert.equal("https://graph.microsoft.com", c.aud)
      assert.same({ "Application.ReadWrite.All" }, c.roles)
    end)

    it("accepts HTTP Basic client authentication", function()
      local basic = "Basic " .. crypto.b64_encode(ISV_APP .. ":" .. form.escape(ISV_SECRET))
      local resp = post("/" .. ISV .. "/oauth2/v2.0/token", secret_form { client_id = false, client_secret = false },
        { authorization = basic })
      assert.equal(200, resp.status)
      assert.equal(ISV_APP, claims_of(resp.json.access_token).appid)
    end)

    it("serves the v1 endpoint with resource= and string numbers", function()
      local resp = post("/" .. CUSTOMER .. "/oauth2/token", { grant_type = "client_credentials", client_id = CUSTOMER_APP,
        client_secret = "emulator-customer-admin-secret", resource = "https://vault.azure.net" })
      assert.equal(200, resp.status)
      assert.equal("3599", resp.json.expires_in)
      assert.equal("https://vault.azure.net", resp.json.resource)
      local c = claims_of(resp.json.access_token)
      assert.equal("https://vault.azure.net", c.aud)
      assert.equal(CUSTOMER, c.tid)
      assert.equal(tonumber(resp.json.expires_on), c.exp)
    end)

    it("serves the ADFS token path with the client's home tenant", function()
      local resp = post("/adfs/oauth2/token", { grant_type = "client_credentials", client_id = CUSTOMER_APP,
        client_secret = "emulator-customer-admin-secret", scope = emu.url .. "//.default", client_info = "1" })
      assert.equal(200, resp.status)
      local c = claims_of(resp.json.access_token)
      assert.equal(CUSTOMER, c.tid)
      assert.equal(sp_id("customer", CUSTOMER_APP), c.oid)
      assert.equal(emu.url .. "/", c.aud) -- single origin: the requested resource itself
      local unknown = post("/adfs/oauth2/token", secret_form { client_id = "00000000-0000-4000-8000-000000000000" })
      assert.equal(700016, (aadsts(unknown)))
    end)

    it("gives our own credential a token that ARM accepts", function()
      local resp = assert(emu.http:request { method = "GET", url = "https://management.azure.com/subscriptions?api-version=2022-12-01",
        credential = emu:credential("isv"), scope = "https://management.azure.com/.default" })
      assert.equal(200, resp.status)
      assert.equal("1a2b3c4d-0000-4000-8000-00000000a001", resp.json.value[1].subscriptionId)
    end)
  end)

  describe("token endpoint errors", function()
    local cases = {
      { "wrong secret", secret_form { client_secret = "not-the-secret" }, 401, "invalid_client", 7000215 },
      { "app not in tenant", secret_form(), 400, "unauthorized_client", 700016, CUSTOMER },
      { "missing scope", secret_form { scope = false }, 400, "invalid_request", 900144 },
      { "scope without /.default", secret_form { scope = "https://graph.microsoft.com/User.Read" }, 400, "invalid_scope", 1002012 },
      { "garbage scope", secret_form { scope = "garbage" }, 400, "invalid_scope", 70011 },
      { "two resources", secret_form { scope = "https://graph.microsoft.com/.default https://vault.azure.net/.default" },
        400, "invalid_scope", 700022 },
      { "unknown resource", secret_form { scope = "https://unknown.example/.default" }, 400, "invalid_resource", 500011 },
      { "missing client_id", secret_form { client_id = false }, 400, "invalid_request", 900144 },
      { "neither secret nor assertion", secret_form { client_secret = false }, 401, "invalid_client", 7000218 },
      { "unsupported grant", secret_form { grant_type = "password" }, 400, "unsupported_grant_type", 70003 },
      { "the /common endpoint", secret_form(), 400, "invalid_request", 9001023, "common" },
    }
    for _, case in ipairs(cases) do
      local name, fields, status, oauth, code, tenant = table.unpack(case)
      it(("answers %s with AADSTS%d"):format(name, code), function()
        local resp = post("/" .. (tenant or ISV) .. "/oauth2/v2.0/token", fields)
        assert.equal(status, resp.status)
        local got, body = aadsts(resp)
        assert.equal(code, got)
        assert.equal(oauth, body.error)
        assert.matches("^AADSTS" .. code .. ": ", body.error_description)
        assert.matches("Trace ID: ", body.error_description)
        assert.is_nil(body.error_description:find(ISV_SECRET, 1, true))
      end)
    end

    it("names the missing parameter and the application exactly", function()
      local _, body = aadsts(post("/" .. ISV .. "/oauth2/v2.0/token", secret_form { scope = false }))
      assert.matches("^AADSTS900144: The request body must contain the following parameter: 'scope'%.", body.error_description)
      _, body = aadsts(post("/" .. CUSTOMER .. "/oauth2/v2.0/token", secret_form()))
      assert.equal("AADSTS700016: Application with identifier '" .. ISV_APP .. "' was not found in the directory '"
        .. CUSTOMER .. "'. This can happen if the application has not been installed by the administrator of the "
        .. "tenant or consented to by any user in the tenant. You may have sent your authentication request to the "
        .. "wrong tenant.", body.error_description:match("^(.-)\r\n"))
    end)

    it("refuses GET with AADSTS900561", function()
      local resp = get(emu.url .. "/" .. ISV .. "/oauth2/v2.0/token?grant_type=client_credentials")
      assert.equal(400, resp.status)
      assert.equal(900561, (aadsts(resp)))
    end)
  end)

  describe("certificate assertion", function()
    local function assertion(bundle, claims_over, header_over)
      local key, info = crypto.load_certificate(bundle)
      local now = os.time()
      local claims = { aud = "https://login.microsoftonline.com/" .. ISV .. "/oauth2/v2.0/token", iss = CERT_APP,
        sub = CERT_APP, jti = crypto.uuid4(), nbf = now, iat = now, exp = now + 600 }
      for k, v in pairs(claims_over or {}) do claims[k] = v end
      local header = { ["x5t#S256"] = info.x5t_s256 }
      for k, v in pairs(header_over or {}) do header[k] = v end
      return jose.sign(claims, key, { alg = "RS256", header = header })
    end
    local function cert_form(a)
      return { grant_type = "client_credentials", client_id = CERT_APP, scope = "https://management.azure.com/.default",
        client_assertion_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", client_assertion = a }
    end

    it("accepts our client_certificate credential", function()
      local cred = core.auth.credential { kind = "client_certificate", tenant = ISV, client_id = CERT_APP,
        certificate_path = dir .. "/reg.pem", authority = emu.cloud.authority, ca_file = emu.ca_file,
        connect_to = emu.cloud.connect_to }
      local resp = assert(emu.http:request { method = "GET", url = "https://management.azure.com/subscriptions?api-version=2022-12-01",
        credential = cred, scope = "https://management.azure.com/.default" })
      assert.equal(200, resp.status)
    end)

    it("issues appidacr 2 for a registered certificate, with either host form in aud", function()
      for _, aud in ipairs { "https://login.microsoftonline.com/" .. ISV .. "/oauth2/v2.0/token",
                             emu.url .. "/isv.example/oauth2/v2.0/token" } do
        local path = aud:find("isv.example", 1, true) and "/isv.example/oauth2/v2.0/token" or "/" .. ISV .. "/oauth2/v2.0/token"
        local resp = post(path, cert_form(assertion(cert_bundle, { aud = aud })))
        assert.equal(200, resp.status)
        local c = claims_of(resp.json.access_token)
        assert.equal("2", c.appidacr)
        assert.equal(CERT_APP, c.appid)
        assert.equal(sp_id("isv", CERT_APP), c.oid)
      end
    end)

    it("refuses an unregistered certificate, a forged signature, a stale assertion and a wrong audience", function()
      local path = "/" .. ISV .. "/oauth2/v2.0/token"
      assert.equal(700027, (aadsts(post(path, cert_form(assertion(other_bundle))))))
      local _, reg_info = crypto.load_certificate(cert_bundle)
      local forged = assertion(other_bundle, nil, { ["x5t#S256"] = reg_info.x5t_s256 })
      assert.equal(700027, (aadsts(post(path, cert_form(forged)))))
      local stale = assertion(cert_bundle, { nbf = os.time() - 1200, exp = os.time() - 600 })
      local resp = post(path, cert_form(stale))
      assert.equal(401, resp.status)
      assert.equal(700024, (aadsts(resp)))
      local wrong_aud = assertion(cert_bundle, { aud = "https://login.microsoftonline.com/" .. CUSTOMER .. "/oauth2/v2.0/token" })
      assert.equal(50013, (aadsts(post(path, cert_form(wrong_aud)))))
    end)
  end)

  describe("IMDS", function()
    local base = function() return emu.url .. "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" ..
      form.escape("api://AzureADTokenExchange") end

    it("requires the Metadata header", function()
      local resp = get(base())
      assert.equal(400, resp.status)
      assert.equal("Required metadata header not specified", resp.json.error_description)
    end)

    it("runs as an identity created through ARM, whose token our chained credential exchanges in the customer tenant", function()
      local isv = emu:credential("isv")
      local arm_scope, graph_scope = "https://management.azure.com/.default", "https://graph.microsoft.com/.default"
      local sub = "https://management.azure.com/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001"
      local rg = assert(emu.http:request { method = "PUT", url = sub .. "/resourcegroups/rg-entra?api-version=2021-04-01",
        json = { location = "westeurope" }, credential = isv, scope = arm_scope })
      assert.is_true(rg.status == 200 or rg.status == 201)
      local id = assert(emu.http:request { method = "PUT", url = sub .. "/resourcegroups/rg-entra/providers/"
        .. "Microsoft.ManagedIdentity/userAssignedIdentities/uami-entra?api-version=2023-01-31",
        json = { location = "westeurope" }, credential = isv, scope = arm_scope })
      assert.is_true(id.status == 200 or id.status == 201)
      local uami = id.json.properties
      -- IMDS: the only identity is selected without a client_id; numbers are strings
      local mi = get(base(), { Metadata = "true" })
      assert.equal(200, mi.status)
      assert.equal("3599", mi.json.expires_in)
      assert.equal(uami.clientId, mi.json.client_id)
      local c = claims_of(mi.json.access_token)
      assert.equal(EXCHANGE_GUID, c.aud)
      assert.equal(uami.principalId, c.sub)
      assert.equal("https://login.microsoftonline.com/" .. ISV .. "/v2.0", c.iss)
      -- the multi-tenant app, its FIC (ISV) and its service principal (customer) through Graph
      local graph = "https://graph.microsoft.com/v1.0"
      local app = assert(emu.http:request { method = "POST", url = graph .. "/applications", credential = isv,
        scope = graph_scope, json = { displayName = "entra-spec-app", signInAudience = "AzureADMultipleOrgs" } })
      assert.equal(201, app.status)
      local fic = assert(emu.http:request { method = "POST", url = graph .. "/applications/" .. app.json.id
        .. "/federatedIdentityCredentials", credential = isv, scope = graph_scope, json = { name = "uami",
        issuer = "https://login.microsoftonline.com/" .. ISV .. "/v2.0", subject = uami.principalId,
        audiences = { "api://AzureADTokenExchange" } } })
      assert.equal(201, fic.status)
      local chained = core.auth.credential { kind = "chained", identity_client_id = uami.clientId,
        imds_endpoint = emu.url .. "/metadata/identity/oauth2/token", tenant = CUSTOMER, client_id = app.json.appId,
        authority = emu.cloud.authority, ca_file = emu.ca_file, connect_to = emu.cloud.connect_to }
      local before, berr = emu.http:request { method = "GET", url = "https://management.azure.com/subscriptions?api-version=2022-12-01",
        credential = chained, scope = arm_scope, retry = { max_attempts = 1 } }
      assert.is_nil(before) -- no service principal in the customer tenant yet
      assert.truthy(tostring(berr):find("AADSTS700016", 1, true))
      local sp = assert(emu.http:request { method = "POST", url = graph .. "/servicePrincipals",
        credential = emu:credential("customer"), scope = graph_scope, json = { appId = app.json.appId } })
      assert.equal(201, sp.status)
      chained:clear_cache()
      local after = assert(emu.http:request { method = "GET", url = "https://management.azure.com/subscriptions?api-version=2022-12-01",
        credential = chained, scope = arm_scope })
      assert.equal(200, after.status)
    end)

    it("says Identity not found when the emulator runs as no such identity", function()
      local resp = get(base() .. "&client_id=00000000-0000-4000-8000-000000000001", { Metadata = "true" })
      assert.equal(400, resp.status)
      assert.same({ error = "invalid_request", error_description = "Identity not found" },
        { error = resp.json.error, error_description = resp.json.error_description })
    end)
  end)
end)

describe("emulator Entra ID functions (federated exchange, managed identity)", function()
  local emulator = require "cmkflow.emulator"
  local entra = require "cmkflow.emulator.entra"
  local grant = require "cmkflow.emulator.entra_grant"
  local tokens = require "cmkflow.emulator.tokens"
  local st, t1, t2, app, sp2, ident, mi

  local VAULT = "https://vault.azure.net/.default"

  local function secret_form_for(id, secret)
    return { grant_type = "client_credentials", client_id = id, client_secret = secret,
      scope = "https://management.azure.com/.default" }
  end

  before_each(function()
    st = emulator.new_state { seed = require "cmkflow.emulator.demo_seed" }
    t1, t2 = st.tenants[ISV], st.tenants[CUSTOMER]
    app = st:add_application(t1, { displayName = "isv-cmk", signInAudience = "AzureADMultipleOrgs" })
    st:add_service_principal(t1, { appId = app.appId, displayName = "isv-cmk", appOwnerOrganizationId = ISV })
    sp2 = st:add_service_principal(t2, { appId = app.appId, displayName = "isv-cmk", appOwnerOrganizationId = ISV })
    local pid = st:id("uami")
    ident = { clientId = st:id("uami-client"), principalId = pid, tenant = ISV,
      resource_id = "/subscriptions/1a2b3c4d-0000-4000-8000-00000000a001/resourceGroups/rg/providers/"
        .. "Microsoft.ManagedIdentity/userAssignedIdentities/uami" }
    st.identities[pid] = ident
    st:add_federated_credential(app, { name = "uami", issuer = tokens.issuer_v2(ISV), subject = pid,
      audiences = { "api://AzureADTokenExchange" }, visible_at = st:now() })
    mi = assert(grant.managed_identity_token(st, ident, "api://AzureADTokenExchange"))
  end)

  local function expect(code, token, e)
    assert.is_nil(token)
    assert.equal(code, e.aadsts)
    assert.is_string(e.error)
    assert.is_string(e.text)
  end

  it("issues the managed identity's exchange token as Entra does", function()
    local token, c = grant.managed_identity_token(st, ident, "api://AzureADTokenExchange")
    local decoded = claims_of(token)
    assert.same(c.aud, decoded.aud)
    assert.equal(EXCHANGE_GUID, decoded.aud)
    assert.equal("https://login.microsoftonline.com/" .. ISV .. "/v2.0", decoded.iss)
    assert.equal(ident.principalId, decoded.sub)
    assert.equal(ident.principalId, decoded.oid)
    assert.equal(ident.clientId, decoded.azp)
    assert.equal("app", decoded.idtyp)
    assert.equal("2.0", decoded.ver)
    assert.equal(ident.resource_id, decoded.xms_mirid)
    assert.is_table(jose.verify(token, t1.key))
    local arm = claims_of((grant.managed_identity_token(st, ident, "https://management.azure.com/")))
    assert.equal("https://management.azure.com/", arm.aud)
    assert.equal(ident.clientId, arm.appid)
    assert.equal("https://sts.windows.net/" .. ISV .. "/", arm.iss)
  end)

  it("exchanges the MI token for a customer-tenant Key Vault token", function()
    local token, c = grant.exchange(st, CUSTOMER, app.appId, mi, VAULT)
    assert.is_string(token)
    local decoded = claims_of(token)
    assert.equal(c.oid, decoded.oid)
    assert.equal(sp2.id, decoded.oid)
    assert.equal(CUSTOMER, decoded.tid)
    assert.equal("https://vault.azure.net", decoded.aud)
    assert.equal("https://sts.windows.net/" .. CUSTOMER .. "/", decoded.iss)
    assert.equal(app.appId, decoded.appid)
    assert.equal("2", decoded.appidacr)
    assert.is_table(jose.verify(token, t2.key))
    assert.is_string((grant.exchange(st, "customer.example", app.appId, mi, VAULT)))
  end)

  it("matches the issuer exactly (AADSTS700211)", function()
    for _, fic in pairs(app.federatedIdentityCredentials) do fic.issuer = fic.issuer .. " " end
    expect(700211, grant.exchange(st, CUSTOMER, app.appId, mi, VAULT))
  end)

  it("matches the subject case-sensitively (AADSTS700213, AADSTS7002138)", function()
    for _, fic in pairs(app.federatedIdentityCredentials) do fic.subject = st:id("other") end
    expect(700213, grant.exchange(st, CUSTOMER, app.appId, mi, VAULT))
    for _, fic in pairs(app.federatedIdentityCredentials) do fic.subject = ident.principalId:upper() end
    expect(7002138, grant.exchange(st, CUSTOMER, app.appId, mi, VAULT))
  end)

  it("matches the audience (AADSTS700212)", function()
    local arm_token = tokens.issue(st, t1, { aud = "https://management.azure.com/", sub = ident.principalId,
      oid = ident.principalId, azp = ident.clientId, idtyp = "app" }, "2.0")
    expect(700212, grant.exchange(st, CUSTOMER, app.appId, arm_token, VAULT))
    for _, fic in pairs(app.federatedIdentityCredentials) do fic.audiences = { EXCHANGE_GUID } end
    expect(700212, grant.exchange(st, CUSTOMER, app.appId, mi, VAULT))
  end)

  it("treats a FIC that has not replicated yet as absent (AADSTS70021), then accepts it", function()
    for _, fic in pairs(app.federatedIdentityCredentials) do fic.visible_at = st:now() + 60 end
    local token, e = grant.exchange(st, CUSTOMER, app.appId, mi, VAULT)
    expect(70021, token, e)
    assert.equal("invalid_request", e.error)
    st:advance(61)
    assert.is_string((grant.exchange(st, CUSTOMER, app.appId, mi, VAULT)))
  end)

  it("requires the service principal in the target tenant (AADSTS700016) and an enabled one (AADSTS7000112)", function()
    t2.service_principals[sp2.id] = nil
    local token, e = grant.exchange(st, CUSTOMER, app.appId, mi, VAULT)
    expect(700016, token, e)
    assert.equal("unauthorized_client", e.error)
    assert.truthy(e.text:find("'" .. app.appId .. "' was not found in the directory '" .. CUSTOMER .. "'", 1, true))
    local hidden = st:add_service_principal(t2, { appId = app.appId, visible_at = st:now() + 30 })
    expect(700016, grant.exchange(st, CUSTOMER, app.appId, mi, VAULT))
    hidden.visible_at = st:now()
    hidden.accountEnabled = false
    expect(7000112, grant.exchange(st, CUSTOMER, app.appId, mi, VAULT))
  end)

  it("verifies an emulator issuer's signature (AADSTS700027) and token type (AADSTS700229)", function()
    local forged = jose.sign(claims_of(mi), crypto.rsa_generate(2048), { alg = "RS256" })
    expect(700027, grant.exchange(st, CUSTOMER, app.appId, forged, VAULT))
    local user = tokens.issue(st, t1, { aud = EXCHANGE_GUID, sub = ident.principalId, oid = ident.principalId,
      idtyp = "user" }, "2.0")
    expect(700229, grant.exchange(st, CUSTOMER, app.appId, user, VAULT))
  end)

  it("refuses an expired assertion (AADSTS700024)", function()
    st:advance(3600)
    expect(700024, grant.exchange(st, CUSTOMER, app.appId, mi, VAULT))
  end)

  it("accepts an external issuer configured in a FIC", function()
    local iss = "https://token.actions.githubusercontent.com"
    st:add_federated_credential(app, { name = "gh", issuer = iss, subject = "repo:o/r:ref:refs/heads/main",
      audiences = { "api://AzureADTokenExchange" }, visible_at = st:now() })
    local gh = jose.sign({ iss = iss, sub = "repo:o/r:ref:refs/heads/main", aud = "api://AzureADTokenExchange",
      exp = st:now() + 300, nbf = st:now() }, crypto.rsa_generate(2048), { alg = "RS256" })
    local token = grant.exchange(st, CUSTOMER, app.appId, gh, VAULT)
    assert.equal(sp2.id, claims_of(token).oid)
  end)

  it("checks tenant, scope and resource", function()
    expect(90002, grant.exchange(st, "nowhere.example", app.appId, mi, VAULT))
    expect(1002012, grant.exchange(st, CUSTOMER, app.appId, mi, "https://vault.azure.net/keys.read"))
    expect(500011, grant.exchange(st, CUSTOMER, app.appId, mi, "https://storage.example/.default"))
    expect(900144, grant.exchange(st, CUSTOMER, app.appId, mi, nil))
  end)

  it("refuses an expired client secret (AADSTS7000222)", function()
    local seed_app = st:application_by_appid(ISV_APP)
    seed_app.passwordCredentials[1].endDateTime = "2000-01-01T00:00:00Z"
    local r, e = grant.client_credentials(st, ISV, secret_form_for(ISV_APP, ISV_SECRET))
    expect(7000222, r, e)
  end)

  it("registers a certificate without its private key (state:add_key_credential) and accepts its assertions", function()
    assert.is_nil((st:add_key_credential(app, "not a certificate")))
    local dir = files.tmpdir()
    files.sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/k.pem -out %s/c.pem -days 2 -subj /CN=fn")
      :format(dir, dir))
    local cert_only, key_pem = files.read(dir .. "/c.pem"), files.read(dir .. "/k.pem")
    files.sh("rm -rf " .. files.quote(dir))
    local key, info = crypto.load_certificate(cert_only .. key_pem)
    local kc = assert(st:add_key_credential(app, cert_only))
    assert.equal(info.x5t_s256, kc.thumbprint_s256)
    assert.is_nil(kc.cert_pem:find("PRIVATE KEY", 1, true))
    local now = st:now()
    local a = jose.sign({ aud = "https://login.microsoftonline.com/" .. CUSTOMER .. "/oauth2/v2.0/token", iss = app.appId,
      sub = app.appId, nbf = now, exp = now + 300, jti = crypto.uuid4() }, key,
      { alg = "PS256", header = { ["x5t#S256"] = info.x5t_s256 } })
    local r = assert(grant.client_credentials(st, CUSTOMER, { grant_type = "client_credentials", client_id = app.appId,
      scope = VAULT, client_assertion = a,
      client_assertion_type = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" }))
    assert.equal(sp2.id, r.claims.oid)
    assert.equal("2", r.claims.appidacr)
  end)

  it("selects the identity an IMDS request names", function()
    assert.equal(ident, entra.select_identity(st, {}))
    local other = { clientId = st:id("c2"), principalId = st:id("p2"), tenant = ISV, resource_id = "/subscriptions/x/y" }
    st.identities[other.principalId] = other
    local none, status, code, text = entra.select_identity(st, {})
    assert.is_nil(none)
    assert.equal(400, status)
    assert.equal("invalid_request", code)
    assert.equal("Multiple user assigned identities exist, please specify the clientId / resourceId of the identity "
      .. "in the token request", text)
    assert.equal(other, entra.select_identity(st, { client_id = other.clientId:upper() }))
    assert.equal(ident, entra.select_identity(st, { object_id = ident.principalId }))
    assert.equal(ident, entra.select_identity(st, { msi_res_id = ident.resource_id:lower() }))
    local _, _, _, nf = entra.select_identity(st, { client_id = "00000000-0000-4000-8000-000000000009" })
    assert.equal("Identity not found", nf)
  end)

  -- found by fuzz/request.lua: the message echoed the bytes, json.encode refused them, the handler raised (500)
  it("answers a token request whose echoed fields are not UTF-8 with JSON, the bad bytes as U+FFFD", function()
    local req = { method = "POST", path = "/" .. CUSTOMER .. "/oauth2/v2.0/token", query = "", args = {},
      host = "login.microsoftonline.com", headers = { ["content-type"] = "application/x-www-form-urlencoded" },
      body = "grant_type=client_\x81credentials&client_id=" .. CUSTOMER_APP .. "&client_secret=x&scope=" .. VAULT }
    local status, _, body = entra.handle(st, req, "entra")
    assert.equal(400, status)
    local doc = assert(json.decode(body))
    assert.equal("unsupported_grant_type", doc.error)
    assert.matches("client_\u{FFFD}credentials", doc.error_description, 1, true)
  end)
end)
