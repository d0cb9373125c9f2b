-- Credential providers and the token cache (core/auth.c), exercised end to end: tokens are only
-- ever observed through authenticated requests made by the http layer against a local server
-- (spec/support/handlers/entra.lua), which checks the bearer tokens it issued.
local core = require "cmkflow.core"
local F = require "support.auth_fixtures"
local auth = core.auth

local TENANT, TENANT2, APP, SCOPE = F.TENANT, F.TENANT2, F.APP, F.SCOPE

local function config(extra)
  local c = {
    tenants = { TENANT, TENANT2, "contoso.onmicrosoft.com" },
    clients = { [APP] = { secret = F.SECRET } },
    imds = { identities = { [F.UAMI] = true } },
  }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

local function count(list, pred)
  local n = 0
  for _, x in ipairs(list) do if pred(x) then n = n + 1 end end
  return n
end

local function secret_cred(srv, extra)
  local spec = { kind = "client_secret", tenant = TENANT, client_id = APP, client_secret = F.SECRET,
                 authority = srv:url(), ca_file = F.ca() }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return auth.credential(spec)
end

describe("auth", function()
  teardown(function() F.cleanup() end)

  describe("client_secret", function()
    local srv
    before_each(function() srv = F.start(config()) end)
    after_each(function() srv:stop() end)

    it("authenticates a GET and reuses the token for the same tenant and scope", function()
      local cred = secret_cred(srv)
      local resp, err = F.get(srv:url() .. "/subscriptions", cred, SCOPE)
      assert.is_nil(err)
      assert.are.equal(200, resp.status)
      local who = core.json.decode(resp.body)
      assert.are.equal(APP, who.client_id)
      assert.are.equal(TENANT, who.tenant)
      assert.are.equal(SCOPE, who.scope)

      resp = assert(F.get(srv:url() .. "/subscriptions", cred, SCOPE))
      assert.are.equal(200, resp.status)
      local tokens = F.journal(srv, "token")
      assert.are.equal(1, #tokens)
      assert.are.equal("secret", tokens[1].method)
      assert.are.equal("client_credentials", tokens[1].grant_type)
      assert.are.equal("application/x-www-form-urlencoded", tokens[1].content_type)
      assert.are.equal(1, cred:stats().token_fetches)
      local st = cred:token_status(SCOPE)
      assert.is_true(st.cached)
      assert.is_true(st.expires_on > os.time() + 3000)
      assert.is_false(cred:token_status(F.SCOPE2).cached)

      -- another scope and another tenant are other cache entries
      assert.are.equal(200, assert(F.get(srv:url() .. "/vault", cred, F.SCOPE2)).status)
      assert.are.equal(200, assert(F.get(srv:url() .. "/t2", cred, SCOPE, TENANT2)).status)
      assert.are.equal(200, assert(F.get(srv:url() .. "/t2", cred, SCOPE, TENANT2)).status)
      tokens = F.journal(srv, "token")
      assert.are.equal(3, #tokens)
      assert.are.equal(1, count(tokens, function(t) return t.tenant == TENANT2 end))
      assert.are.equal(1, count(tokens, function(t) return t.scope == F.SCOPE2 end))
      assert.is_true(cred:token_status(SCOPE, TENANT2).cached)

      -- a per-request tenant must still name one tenant
      local r, err2 = F.get(srv:url() .. "/t3", cred, SCOPE, "organizations")
      assert.is_nil(r)
      assert.are.equal("InvalidTenant", err2.code)
      assert.are.equal(3, #F.journal(srv, "token"))

      cred:clear_cache()
      assert.is_false(cred:token_status(SCOPE).cached)
      assert.are.equal(200, assert(F.get(srv:url() .. "/again", cred, SCOPE)).status)
      assert.are.equal(4, #F.journal(srv, "token"))
    end)

    it("shares one token fetch among 20 concurrent requests", function()
      local cred = secret_cred(srv)
      local reqs = {}
      for i = 1, 20 do
        reqs[i] = { method = "GET", url = srv:url() .. "/r/" .. i, credential = cred, scope = SCOPE }
      end
      local results = F.run_all(reqs)
      for i = 1, 20 do
        assert.is_nil(results[i].err)
        assert.are.equal(200, results[i].resp.status)
      end
      assert.are.equal(1, #F.journal(srv, "token"))
      assert.are.equal(1, cred:stats().token_fetches)
      assert.are.equal(20, count(F.journal(srv, "resource"), function(r) return r.authorized end))
    end)

    it("reports a wrong secret with the AADSTS code and the tenant, never the secret", function()
      local wrong = "Wr0ng~Secret_Value_42"
      local cred = secret_cred(srv, { client_secret = wrong })
      local resp, err = F.get(srv:url() .. "/subscriptions", cred, SCOPE)
      assert.is_nil(resp)
      assert.are.equal("AADSTS7000215", err.code)
      assert.are.equal(TENANT, err.tenant)
      assert.are.equal(401, err.status)
      assert.is_false(err.retryable)
      assert.matches("Invalid client secret", err.message, 1, true)
      local text = tostring(err)
      assert.is_nil(text:find(wrong, 1, true))
      assert.is_nil(text:find(F.SECRET, 1, true))
      assert.matches("AADSTS7000215", text, 1, true)
      assert.is_false(cred:token_status(SCOPE).cached)
      -- no request reached the resource without a token
      assert.are.equal(0, #F.journal(srv, "resource"))
    end)

    it("describes itself without secrets", function()
      local cred = secret_cred(srv)
      local d = cred:describe()
      assert.are.equal("client_secret", d.kind)
      assert.are.equal(TENANT, d.tenant)
      assert.are.equal(APP, d.client_id)
      assert.are.equal(srv:url(), d.authority)
      for _, v in pairs(d) do assert.are_not.equal(F.SECRET, v) end
      assert.are.equal("cmkflow.credential(client_secret, " .. APP .. ")", tostring(cred))
      assert.is_nil(tostring(cred):find(F.SECRET, 1, true))
    end)

  end)

  describe("client_certificate", function()
    local srv, cert
    setup(function() cert = F.make_certificate("p12-pass-word") end)
    before_each(function()
      srv = F.start(config({ clients = { [F.CERT_APP] = { x5t_s256 = cert.x5t_s256 } } }))
    end)
    after_each(function() srv:stop() end)

    local function check_assertion(rec, want_x5c)
      assert.are.equal("assertion", rec.method)
      assert.are.equal("urn:ietf:params:oauth:client-assertion-type:jwt-bearer", rec.client_assertion_type)
      local h, c, input, sig = F.decode_jwt(rec.assertion)
      assert.are.equal("RS256", h.alg)
      assert.are.equal("JWT", h.typ)
      assert.are.equal(cert.x5t_s256, h["x5t#S256"])
      assert.are.equal(want_x5c, h.x5c ~= nil)
      assert.are.equal(srv:url() .. "/" .. TENANT .. "/oauth2/v2.0/token", c.aud)
      assert.are.equal(F.CERT_APP, c.iss)
      assert.are.equal(F.CERT_APP, c.sub)
      assert.is_true(core.crypto.is_guid(c.jti))
      assert.are.equal(c.iat, c.nbf)
      assert.are.equal(600, c.exp - c.nbf)
      -- the signature verifies with the certificate's public key, and a changed input does not
      assert.is_true(F.openssl_verify(cert.pub, input, sig))
      assert.is_false(F.openssl_verify(cert.pub, input .. "x", sig))
      for _, k in ipairs{ "x5t", "aud", "iss", "sub", "time", "jti" } do
        assert.is_true(rec.checks[k], k)
      end
      return c.jti
    end

    it("signs a fresh assertion per token request (PEM with key)", function()
      local cred = auth.credential{ kind = "client_certificate", tenant = TENANT, client_id = F.CERT_APP,
                                    certificate_path = cert.pem, authority = srv:url(), ca_file = F.ca() }
      assert.are.equal(cert.x5t_s256, cred:describe()["x5t#S256"])
      local resp = assert(F.get(srv:url() .. "/x", cred, SCOPE))
      assert.are.equal(200, resp.status)
      assert.are.equal(F.CERT_APP, core.json.decode(resp.body).client_id)
      assert.are.equal(200, assert(F.get(srv:url() .. "/y", cred, F.SCOPE2)).status)
      local tokens = F.journal(srv, "token")
      assert.are.equal(2, #tokens)
      local jti1 = check_assertion(tokens[1], false)
      local jti2 = check_assertion(tokens[2], false)
      assert.are_not.equal(jti1, jti2)
    end)

    it("loads PKCS#12 with its password and sends x5c when asked", function()
      local cred = auth.credential{ kind = "client_certificate", tenant = TENANT, client_id = F.CERT_APP,
                                    certificate_path = cert.p12, certificate_password = cert.password,
                                    send_x5c = true, authority = srv:url(), ca_file = F.ca() }
      assert.are.equal(200, assert(F.get(srv:url() .. "/x", cred, SCOPE)).status)
      local rec = F.journal(srv, "token")[1]
      check_assertion(rec, true)
      local h = F.decode_jwt(rec.assertion)
      local der = core.crypto.b64_decode(h.x5c[1])
      local want = F.read(cert.cert_pem):gsub("%-%-%-%-%-[^-]+%-%-%-%-%-", ""):gsub("%s", "")
      assert.are.equal(want, core.crypto.b64_encode(der))
    end)

    it("rejects unreadable, garbage and wrongly protected certificate files, naming the field", function()
      local base = { kind = "client_certificate", tenant = TENANT, client_id = F.CERT_APP }
      local function try(extra)
        local spec = {}
        for k, v in pairs(base) do spec[k] = v end
        for k, v in pairs(extra) do spec[k] = v end
        local ok, err = pcall(auth.credential, spec)
        assert.is_false(ok)
        return tostring(err)
      end
      local e = try{ certificate_path = F.path("does-not-exist.pem") }
      assert.matches("field 'certificate_path'", e, 1, true)
      assert.matches("does-not-exist.pem", e, 1, true)
      e = try{ certificate_path = F.write(F.path("garbage.pem"), "not a certificate\n") }
      assert.matches("field 'certificate_path'", e, 1, true)
      e = try{ certificate_path = cert.p12, certificate_password = "wrong-password" }
      assert.matches("field 'certificate_password'", e, 1, true)
      assert.is_nil(e:find("wrong-password", 1, true))
      e = try{ certificate_path = cert.p12 }
      assert.matches("field 'certificate_password'", e, 1, true)
      e = try{}
      assert.matches("field 'certificate_path' is required", e, 1, true)
    end)
  end)

  describe("workload_identity", function()
    local srv
    local JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDp3b3JrbG9hZCJ9.c2ln"
    local JWT2 = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNvbmQifQ.c2lnMg"
    before_each(function()
      srv = F.start(config({ clients = { [F.FED_APP] = { assertions = { JWT, JWT2 } } } }))
    end)
    after_each(function() srv:stop() end)

    it("reads the assertion from the token file at every token request", function()
      local file = F.write(F.path("federated-token"), JWT .. "\n")
      local cred = auth.credential{ kind = "workload_identity", tenant = TENANT, client_id = F.FED_APP,
                                    token_file = file, authority = srv:url(), ca_file = F.ca() }
      assert.are.equal(200, assert(F.get(srv:url() .. "/x", cred, SCOPE)).status)
      F.write(file, JWT2) -- the kubelet rotates the projected token
      assert.are.equal(200, assert(F.get(srv:url() .. "/y", cred, F.SCOPE2)).status)
      local tokens = F.journal(srv, "token")
      assert.are.equal(2, #tokens)
      assert.are.equal(JWT, tokens[1].assertion)
      assert.are.equal(JWT2, tokens[2].assertion)
      F.write(file, "eyJ.unknown.assertion")
      local resp, err = F.get(srv:url() .. "/z", cred, "https://graph.microsoft.com/.default")
      assert.is_nil(resp)
      assert.are.equal("AADSTS700211", err.code)
      os.remove(file)
      resp, err = F.get(srv:url() .. "/z", cred, "https://storage.azure.com/.default")
      assert.is_nil(resp)
      assert.are.equal("FederatedTokenUnavailable", err.code)
      assert.matches("federated-token", err.message, 1, true)
    end)

    it("calls the assertion callback for each token request", function()
      local calls = 0
      local cred = auth.credential{ kind = "workload_identity", tenant = TENANT, client_id = F.FED_APP,
                                    assertion = function() calls = calls + 1; return JWT end,
                                    authority = srv:url(), ca_file = F.ca() }
      assert.are.equal(200, assert(F.get(srv:url() .. "/x", cred, SCOPE)).status)
      assert.are.equal(200, assert(F.get(srv:url() .. "/x", cred, SCOPE)).status)
      assert.are.equal(1, calls)
      assert.are.equal(JWT, F.journal(srv, "token")[1].assertion)
      local failing = auth.credential{ kind = "workload_identity", tenant = TENANT, client_id = F.FED_APP,
                                       assertion = function() error("no projected token here") end,
                                       authority = srv:url(), ca_file = F.ca() }
      local resp, err = F.get(srv:url() .. "/x", failing, SCOPE)
      assert.is_nil(resp)
      assert.are.equal("AssertionCallbackFailed", err.code)
      assert.matches("no projected token here", err.message, 1, true)
    end)
  end)

  describe("managed_identity", function()
    local imds
    before_each(function() imds = F.start(config()) end)
    after_each(function() imds:stop() end)

    it("asks IMDS with Metadata: true and parses string expiry fields", function()
      local cred = auth.credential{ kind = "managed_identity", identity_client_id = F.UAMI, ca_file = F.ca(),
                                    imds_endpoint = imds:url() .. "/metadata/identity/oauth2/token" }
      local resp = assert(F.arm_get(imds:url(), "/x", cred))
      assert.are.equal(200, resp.status)
      assert.are.equal("https://management.azure.com", core.json.decode(resp.body).resource)
      assert.are.equal(200, assert(F.arm_get(imds:url(), "/y", cred)).status)
      local calls = F.journal(imds, "imds")
      assert.are.equal(1, #calls)
      assert.are.equal("true", calls[1].metadata)
      assert.are.equal("2018-02-01", calls[1].api_version)
      assert.are.equal("https://management.azure.com", calls[1].resource)
      assert.are.equal(F.UAMI, calls[1].identity)
      local st = cred:token_status(SCOPE)
      assert.is_true(st.cached)
      assert.is_true(st.expires_on > os.time() + 3000)
      assert.are.equal("managed_identity", cred:describe().kind)
    end)

    it("reports IMDS errors with IMDS's error code", function()
      local cred = auth.credential{ kind = "managed_identity",
                                    identity_client_id = "99999999-9999-4999-8999-999999999999", ca_file = F.ca(),
                                    imds_endpoint = imds:url() .. "/metadata/identity/oauth2/token" }
      local resp, err = F.arm_get(imds:url(), "/x", cred)
      assert.is_nil(resp)
      assert.are.equal("invalid_request", err.code)
      assert.are.equal("Identity not found", err.message)
      assert.are.equal(400, err.status)
    end)

    it("uses AZURE_POD_IDENTITY_AUTHORITY_HOST and App Service's IDENTITY_ENDPOINT", function()
      local code = ([[
        local F = require "support.auth_fixtures"
        F.ca_file = %q
        local cred = core.auth.credential{ kind = "managed_identity", identity_client_id = F.UAMI,
                                           ca_file = F.ca_file }
        local resp, err = F.arm_get(%q, "/x", cred)
        return { status = resp and resp.status, err = err and tostring(err),
                 endpoint = cred:describe().endpoint }
      ]]):format(F.ca(), imds:url())
      local r = F.child(F.env{ AZURE_POD_IDENTITY_AUTHORITY_HOST = imds:url() .. "/" }, code)
      assert(r.ok, r.error)
      assert.are.equal(200, r.value.status)
      assert.are.equal("imds", r.value.endpoint)
      assert.are.equal(1, #F.journal(imds, "imds"))

      local app = F.start(config({ app_service_header = "hdr-0123456789" }))
      r = F.child(F.env{ IDENTITY_ENDPOINT = app:url() .. "/msi/token", IDENTITY_HEADER = "hdr-0123456789" },
                  code:gsub(imds:url(), app:url()))
      assert(r.ok, r.error)
      assert.are.equal(200, r.value.status)
      assert.are.equal("app_service", r.value.endpoint)
      local calls = F.journal(app, "app_service")
      assert.are.equal(1, #calls)
      assert.is_true(calls[1].header_ok)
      assert.are.equal("2019-08-01", calls[1].api_version)
      assert.are.equal(F.UAMI, calls[1].identity)
      assert.are.equal("https://management.azure.com", calls[1].resource)
      -- a wrong header is refused by the endpoint and reported
      r = F.child(F.env{ IDENTITY_ENDPOINT = app:url() .. "/msi/token", IDENTITY_HEADER = "wrong-header" },
                  code:gsub(imds:url(), app:url()))
      assert(r.ok, r.error)
      assert.is_nil(r.value.status)
      assert.matches("unauthorized", r.value.err, 1, true)
      assert.is_nil(r.value.err:find("wrong-header", 1, true))
      app:stop()
    end)
  end)

  describe("chained", function()
    it("exchanges the managed identity's token for the app's token in another tenant", function()
      local imds = F.start(config(), false)
      local sts = F.start(config({ clients = { [F.FED_APP] = { assertion_prefix = "mi." } } }))
      local mi = auth.credential{ kind = "managed_identity", identity_client_id = F.UAMI,
                                  imds_endpoint = imds:url() .. "/metadata/identity/oauth2/token" }
      local cred = auth.credential{ kind = "chained", source = mi, tenant = TENANT2, client_id = F.FED_APP,
                                    authority = sts:url(), ca_file = F.ca() }
      mi = nil
      collectgarbage()
      local resp = assert(F.get(sts:url() .. "/keys/k1", cred, F.SCOPE2))
      assert.are.equal(200, resp.status)
      local who = core.json.decode(resp.body)
      assert.are.equal(F.FED_APP, who.client_id)
      assert.are.equal(TENANT2, who.tenant)
      local calls = F.journal(imds, "imds")
      assert.are.equal(1, #calls)
      assert.are.equal("api://AzureADTokenExchange", calls[1].resource)
      local tokens = F.journal(sts, "token")
      assert.are.equal(1, #tokens)
      assert.are.equal(TENANT2, tokens[1].tenant)
      assert.are.equal(calls[1].token, tokens[1].assertion)
      -- a second scope reuses the managed identity's token (still fresh) for a new exchange
      assert.are.equal(200, assert(F.get(sts:url() .. "/x", cred, SCOPE)).status)
      assert.are.equal(1, #F.journal(imds, "imds"))
      assert.are.equal(2, #F.journal(sts, "token"))
      local d = cred:describe()
      assert.are.equal("chained", d.kind)
      assert.are.equal("managed_identity", d.source_kind)
      assert.are.equal("api://AzureADTokenExchange", d.exchange_audience)

      -- an implicit source from identity_client_id + imds_endpoint; IMDS failures are explained
      local bad = auth.credential{ kind = "chained", tenant = TENANT2, client_id = F.FED_APP,
                                   identity_client_id = "99999999-9999-4999-8999-999999999999",
                                   imds_endpoint = imds:url() .. "/metadata/identity/oauth2/token",
                                   authority = sts:url(), ca_file = F.ca() }
      local r, err = F.get(sts:url() .. "/x", bad, SCOPE)
      assert.is_nil(r)
      assert.are.equal("invalid_request", err.code)
      assert.matches("managed identity token for the federated exchange", err.message, 1, true)
      imds:stop()
      sts:stop()
    end)
  end)

  describe("environment", function()
    local code = [[
      local cred = core.auth.credential{ kind = "environment" }
      return cred:describe()
    ]]

    it("resolves a client secret and authenticates with it", function()
      local srv = F.start(config())
      local r = F.child(F.env{ AZURE_TENANT_ID = TENANT, AZURE_CLIENT_ID = APP, AZURE_CLIENT_SECRET = F.SECRET,
                               AZURE_AUTHORITY_HOST = srv:url() .. "/" }, ([[
        local F = require "support.auth_fixtures"
        F.ca_file = %q
        local cred = core.auth.credential{ kind = "environment", ca_file = F.ca_file }
        local resp, err = F.get(%q, cred, F.SCOPE)
        local d = cred:describe()
        d.status = resp and resp.status
        d.err = err and tostring(err)
        return d
      ]]):format(F.ca(), srv:url() .. "/x"))
      assert(r.ok, r.error)
      assert.are.equal("client_secret", r.value.kind)
      assert.are.equal("environment", r.value.resolved_from)
      assert.are.equal(srv:url(), r.value.authority)
      assert.are.equal(200, r.value.status)
      srv:stop()
    end)

    it("resolves a certificate and a federated token file", function()
      local cert = F.make_certificate("pw")
      local r = F.child(F.env{ AZURE_TENANT_ID = TENANT, AZURE_CLIENT_ID = F.CERT_APP,
                               AZURE_CLIENT_CERTIFICATE_PATH = cert.p12,
                               AZURE_CLIENT_CERTIFICATE_PASSWORD = "pw",
                               AZURE_CLIENT_SEND_CERTIFICATE_CHAIN = "true" }, code)
      assert(r.ok, r.error)
      assert.are.equal("client_certificate", r.value.kind)
      assert.is_true(r.value.send_x5c)
      assert.are.equal("https://login.microsoftonline.com", r.value.authority)
      r = F.child(F.env{ AZURE_TENANT_ID = TENANT, AZURE_CLIENT_ID = F.CERT_APP,
                         AZURE_CLIENT_CERTIFICATE_PATH = cert.p12, AZURE_CLIENT_CERTIFICATE_PASSWORD = "nope" }, code)
      assert.is_false(r.ok)
      assert.matches("certificate_password' (AZURE_CLIENT_CERTIFICATE_PASSWORD)", r.error, 1, true)
      r = F.child(F.env{ AZURE_TENANT_ID = TENANT, AZURE_CLIENT_ID = F.FED_APP,
                         AZURE_FEDERATED_TOKEN_FILE = F.path("token") }, code)
      assert(r.ok, r.error)
      assert.are.equal("workload_identity", r.value.kind)
      assert.are.equal(F.FED_APP, r.value.client_id)
    end)

    it("names exactly the variables that are missing", function()
      local r = F.child(F.env(), code)
      assert.is_false(r.ok)
      assert.matches("set AZURE_TENANT_ID, AZURE_CLIENT_ID and one of AZURE_CLIENT_SECRET, "
                     .. "AZURE_CLIENT_CERTIFICATE_PATH or AZURE_FEDERATED_TOKEN_FILE", r.error, 1, true)
      r = F.child(F.env{ AZURE_TENANT_ID = TENANT, AZURE_CLIENT_SECRET = "x" }, code)
      assert.is_false(r.ok)
      assert.matches("set AZURE_CLIENT_ID$", r.error)
      r = F.child(F.env{ AZURE_TENANT_ID = TENANT, AZURE_CLIENT_ID = APP }, code)
      assert.is_false(r.ok)
      assert.matches("set one of AZURE_CLIENT_SECRET", r.error, 1, true)
      assert.is_nil(r.error:find("AZURE_TENANT_ID", 1, true))
      r = F.child(F.env{ AZURE_TENANT_ID = "common", AZURE_CLIENT_ID = APP, AZURE_CLIENT_SECRET = "Sx-1" }, code)
      assert.is_false(r.ok)
      assert.matches("field 'tenant' (AZURE_TENANT_ID) must name one tenant", r.error, 1, true)
      assert.is_nil(r.error:find("Sx-1", 1, true))
    end)
  end)

  describe("invalid specs", function()
    local function err_of(spec)
      local ok, err = pcall(auth.credential, spec)
      assert.is_false(ok)
      return tostring(err)
    end
    local base = { kind = "client_secret", tenant = TENANT, client_id = APP, client_secret = "Zz9-secret" }
    local function with(extra)
      local t = {}
      for k, v in pairs(base) do t[k] = v end
      for k, v in pairs(extra) do t[k] = v end
      return t
    end

    it("names the field and never echoes the secret", function()
      local e = err_of(with{ client_id = "my-app" })
      assert.matches("credential: field 'client_id' must be a GUID", e, 1, true)
      assert.is_nil(e:find("Zz9-secret", 1, true))
      for _, alias in ipairs{ "common", "organizations", "consumers", "Common" } do
        e = err_of(with{ tenant = alias })
        assert.matches("field 'tenant' must name one tenant", e, 1, true)
      end
      assert.matches("field 'tenant' must be a tenant GUID or a domain",
                     err_of(with{ tenant = "not a tenant" }), 1, true)
      assert.matches("field 'tenant' is required", err_of(with{ tenant = "" }), 1, true)
      assert.matches("field 'client_secret' is required", err_of(with{ client_secret = "" }), 1, true)
      assert.matches("field 'authority' must be an https:// URL",
                     err_of(with{ authority = "http://login.microsoftonline.com" }), 1, true)
      assert.matches("field 'kind' must be one of", err_of(with{ kind = "password" }), 1, true)
      assert.matches("unknown field 'clientid'", err_of(with{ clientid = APP }), 1, true)
      assert.matches("field 'connect_to' must be an array of strings", err_of(with{ connect_to = { 1 } }), 1, true)
      assert.matches("field 'identity_client_id' must be a GUID",
                     err_of{ kind = "managed_identity", identity_client_id = "uami" }, 1, true)
      assert.matches("at most one of",
                     err_of{ kind = "managed_identity", identity_client_id = F.UAMI, identity_object_id = F.UAMI },
                     1, true)
      assert.matches("field 'source' must be a credential", err_of(with{ kind = "chained", source = {} }), 1, true)
      -- a domain tenant is accepted, with the authority's trailing slash dropped
      local d = auth.credential(with{ tenant = "contoso.onmicrosoft.com",
                                      authority = "https://login.microsoftonline.com/" }):describe()
      assert.are.equal("contoso.onmicrosoft.com", d.tenant)
      assert.are.equal("https://login.microsoftonline.com", d.authority)
    end)

    it("closes with __close and refuses use afterwards", function()
      local cred = auth.credential(base)
      do
        local c <close> = cred
      end
      assert.are.equal("cmkflow.credential(closed)", tostring(cred))
      assert.has_error(function() cred:describe() end)
    end)
  end)

  -- last: the session clock stays advanced for the rest of the process
  describe("expiry", function()
    local srv
    before_each(function() srv = F.start(config()) end)
    after_each(function() srv:stop() end)

    it("refetches once the cached token is within 5 minutes of expiry (fake clock)", function()
      local s = F.session()
      local cred = secret_cred(srv)
      s:set_clock("fake")
      local ok, err = pcall(function()
        assert.are.equal(200, assert(F.get(srv:url() .. "/a", cred, SCOPE)).status)
        local expires_on = cred:token_status(SCOPE).expires_on
        assert.are.equal(200, assert(F.get(srv:url() .. "/b", cred, SCOPE)).status)
        assert.are.equal(1, #F.journal(srv, "token"))
        -- move the fake clock to 299 s before expiry: inside the refresh margin
        local t = s:timer((expires_on - 299) * 1000 - s:now())
        for _ = 1, 100 do
          if t:done() then break end
          s:run(100)
        end
        assert.is_true(t:done())
        assert.is_true(s:now() >= (expires_on - 299) * 1000)
        assert.is_false(cred:token_status(SCOPE).cached)
        assert.are.equal(200, assert(F.get(srv:url() .. "/c", cred, SCOPE)).status)
        assert.are.equal(2, #F.journal(srv, "token"))
        assert.are.equal(2, cred:stats().token_fetches)
      end)
      s:set_clock("real")
      assert(ok, err)
    end)
  end)
end)
