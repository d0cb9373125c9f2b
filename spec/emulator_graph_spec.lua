-- The emulated Microsoft Graph v1.0 (lua/cmkflow/emulator/graph.lua, graph_*.lua): applications, federated identity
-- credentials and service principals through our own Graph client and raw requests over HTTPS, plus
-- directory replication delays on an in-process state.
local core = require "cmkflow.core"
local json = core.json
local form = require "cmkflow.form"
local support = require "support.emulator"
local demo = require "cmkflow.emulator.demo_seed"

local ISV = "7f0d6a2e-5b1c-4c8e-9a3d-1e2f3a4b5c6d"
local CUSTOMER = "3c9e1b7d-2a4f-4e6b-8c0d-9f8e7d6c5b4a"

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = deep_copy(x) end
  return c
end

-- The demo seed plus two ISV principals: one without Graph permissions, one that may only read.
local function seed()
  local s = deep_copy(demo)
  local principals = s.tenants[1].principals
  principals[#principals + 1] = { name = "isv-nograph", appId = "5e6f7a8b-0000-4000-8000-00000000a0d2",
    secret = "emulator-isv-nograph-secret" }
  principals[#principals + 1] = { name = "isv-reader", appId = "5e6f7a8b-0000-4000-8000-00000000a0d3",
    secret = "emulator-isv-reader-secret", graph_roles = { "Application.Read.All" } }
  principals[#principals + 1] = { name = "isv-ownedby", appId = "5e6f7a8b-0000-4000-8000-00000000a0d4",
    secret = "emulator-isv-ownedby-secret", graph_roles = { "Application.ReadWrite.OwnedBy" } }
  local cust = s.tenants[2].principals
  cust[#cust + 1] = { name = "customer-ownedby", appId = "2b3c4d5e-0000-4000-8000-00000000c0d4",
    secret = "emulator-customer-ownedby-secret", graph_roles = { "Application.ReadWrite.OwnedBy" } }
  return s
end

local function q(s) return form.escape(s) end

describe("emulated Graph", function()
  local emu, isv, customer

  setup(function()
    emu = support.start { seed = seed() }
    isv = emu:context("isv", "isv-deployer").graph
    customer = emu:context("customer").graph
  end)

  teardown(function()
    if emu then emu:stop() end
  end)

  -- A raw request with the principal's credential; returns status, decoded body, resp.
  local function raw(method, path, body, opts)
    opts = opts or {}
    local t = opts.tenant or "isv"
    local cred = opts.credential or emu:credential(t, opts.principal)
    local resp
    if opts.scope then
      -- a token for another audience: sent by hand, as a careless client would (cmkflow's core
      -- refuses to send it)
      local headers = { authorization = emu:bearer(t, opts.scope, opts.principal) }
      for k, v in pairs(opts.headers or {}) do headers[k] = v end
      resp = assert(emu.http:request { method = method, url = "https://graph.microsoft.com/v1.0" .. path,
        json = body, headers = headers })
    else
      resp = assert(emu.http:request { method = method, url = "https://graph.microsoft.com/v1.0" .. path,
        json = body, headers = opts.headers, credential = cred, scope = "https://graph.microsoft.com/.default",
        tenant = t == "isv" and ISV or CUSTOMER })
    end
    local doc = resp.body ~= "" and json.decode(resp.body) or nil
    return resp.status, doc, resp
  end

  describe("applications", function()
    it("creates, reads by id and alternate key, lists, patches and deletes", function()
      local app = assert(isv:post("/applications", { displayName = "Spec CRUD", signInAudience = "AzureADMultipleOrgs" }))
      assert.is_true(core.crypto.is_guid(app.id))
      assert.is_true(core.crypto.is_guid(app.appId))
      assert.are_not.equal(app.id, app.appId)
      assert.equal("Spec CRUD", app.displayName)
      assert.equal("AzureADMultipleOrgs", app.signInAudience)
      assert.equal("https://graph.microsoft.com/v1.0/$metadata#applications/$entity", app["@odata.context"])
      assert.equal(0, #app.passwordCredentials)
      assert.equal(0, #app.keyCredentials)

      local by_id = assert(isv:get("/applications/" .. app.id:upper()))
      assert.equal(app.id, by_id.id)
      local by_app_id = assert(isv:get("/applications(appId='" .. app.appId .. "')"))
      assert.equal(app.id, by_app_id.id)

      local found = assert(isv:list("/applications?$filter=" .. q("appId eq '" .. app.appId .. "'")))
      assert.equal(1, #found)
      assert.equal(app.id, found[1].id)
      local by_name = assert(isv:list("/applications?$filter=" .. q("displayName eq 'spec crud'")))
      assert.equal(1, #by_name)
      local by_prefix = assert(isv:list("/applications?$filter=" .. q("startswith(displayName,'Spec CR')")))
      assert.equal(1, #by_prefix)
      assert.equal(app.id, by_prefix[1].id)

      local selected = assert(isv:get("/applications/" .. app.id .. "?$select=appId,displayName"))
      assert.equal(app.appId, selected.appId)
      assert.is_nil(selected.signInAudience)

      assert.is_true(isv:patch("/applications/" .. app.id, { displayName = "Spec CRUD 2", tags = { "a" } }))
      local patched = assert(isv:get("/applications/" .. app.id))
      assert.equal("Spec CRUD 2", patched.displayName)
      assert.equal("a", patched.tags[1])

      assert.is_true(isv:delete("/applications/" .. app.id))
      local gone, err = isv:get("/applications/" .. app.id)
      assert.is_nil(gone)
      assert.equal(404, err.status)
      assert.equal("Request_ResourceNotFound", err.code)
      assert.equal("Resource '" .. app.id .. "' does not exist or one of its queried reference-property objects are not present.",
                   err.message)
    end)

    it("defaults signInAudience to AzureADMyOrg and refuses a missing displayName or a password in the body", function()
      local app = assert(isv:post("/applications", { displayName = "Spec single" }))
      assert.equal("AzureADMyOrg", app.signInAudience)
      local status, doc = raw("POST", "/applications", { signInAudience = "AzureADMultipleOrgs" })
      assert.equal(400, status)
      assert.equal("Request_BadRequest", doc.error.code)
      assert.truthy(doc.error.message:find("displayName", 1, true))
      assert.truthy(doc.error.innerError["request-id"])
      status, doc = raw("POST", "/applications", { displayName = "x", passwordCredentials = { { displayName = "p" } } })
      assert.equal(400, status)
      assert.truthy(doc.error.message:find("addPassword", 1, true))
      status, doc = raw("POST", "/applications", { displayName = "x", signInAudience = "Everyone" })
      assert.equal(400, status)
      assert.equal("Invalid value specified for property 'signInAudience' of resource 'Application'.", doc.error.message)
    end)

    it("pages a listing with $top and @odata.nextLink", function()
      for i = 1, 3 do assert(isv:post("/applications", { displayName = "Spec page " .. i })) end
      local status, doc = raw("GET", "/applications?$top=2&$filter=" .. q("startswith(displayName,'Spec page')"))
      assert.equal(200, status)
      assert.equal(2, #doc.value)
      assert.truthy(doc["@odata.nextLink"]:find("^https://graph%.microsoft%.com/v1%.0/applications%?"))
      local all = assert(isv:list("/applications?$top=2&$filter=" .. q("startswith(displayName,'Spec page')")))
      assert.equal(3, #all)
      local seen = {}
      for _, a in ipairs(all) do seen[a.displayName] = true end
      assert.is_true(seen["Spec page 1"] and seen["Spec page 2"] and seen["Spec page 3"])
    end)

    it("upserts by uniqueName: created once, then updated, never duplicated", function()
      local app, err, created = isv:find_or_create_application("spec-upsert", { displayName = "Upsert 1",
        signInAudience = "AzureADMultipleOrgs" })
      assert.is_nil(err)
      assert.is_true(created)
      assert.equal("spec-upsert", app.uniqueName)
      local again, err2, created2 = isv:find_or_create_application("spec-upsert", { displayName = "Upsert 2" })
      assert.is_nil(err2)
      assert.is_false(created2)
      assert.equal(app.id, again.id)
      assert.equal("Upsert 2", again.displayName)
      local list = assert(isv:list("/applications?$filter=" .. q("uniqueName eq 'spec-upsert'")))
      assert.equal(1, #list)
      local status, doc = raw("PATCH", "/applications(uniqueName='spec-missing')", { displayName = "No" })
      assert.equal(404, status)
      assert.equal("Request_ResourceNotFound", doc.error.code)
    end)

    it("addPassword returns the secret once and the token endpoint accepts it", function()
      local app = assert(isv:post("/applications", { displayName = "Spec secret" }))
      local pw = assert(isv:post("/applications/" .. app.id .. "/addPassword",
        { passwordCredential = { displayName = "ci" } }))
      assert.equal("string", type(pw.secretText))
      assert.is_true(#pw.secretText >= 30)
      assert.equal(pw.secretText:sub(1, 3), pw.hint)
      assert.is_true(core.crypto.is_guid(pw.keyId))
      local read = assert(isv:get("/applications/" .. app.id))
      assert.equal(1, #read.passwordCredentials)
      assert.equal(pw.keyId, read.passwordCredentials[1].keyId)
      assert.equal(json.null, read.passwordCredentials[1].secretText)
      assert(isv:post("/servicePrincipals", { appId = app.appId }))
      -- the new secret gets a token; the new principal has no Graph permission, so Graph says 403
      local cred = core.auth.credential { kind = "client_secret", tenant = ISV, client_id = app.appId,
        client_secret = pw.secretText, authority = emu.cloud.authority, ca_file = emu.ca_file,
        connect_to = emu.cloud.connect_to }
      local status, doc = raw("GET", "/applications", nil, { credential = cred })
      assert.equal(403, status)
      assert.equal("Authorization_RequestDenied", doc.error.code)
    end)
  end)

  describe("federated identity credentials", function()
    local app, base
    -- an external issuer: Graph checks no subject of one (an Entra issuer's subject must exist, below)
    local FIC = { issuer = "https://token.actions.githubusercontent.com",
                  subject = "11111111-2222-4333-8444-555555555555", audiences = { "api://AzureADTokenExchange" } }

    setup(function()
      app = assert(isv:post("/applications", { displayName = "Spec FIC", signInAudience = "AzureADMultipleOrgs" }))
      base = "/applications/" .. app.id .. "/federatedIdentityCredentials"
    end)

    it("creates, lists, filters, upserts by name and deletes", function()
      local fic = assert(isv:post(base, { name = "fic-post", issuer = FIC.issuer, subject = "subject-post",
        audiences = FIC.audiences, description = "d" }))
      assert.is_true(core.crypto.is_guid(fic.id))
      assert.equal("fic-post", fic.name)
      assert.equal("subject-post", fic.subject)
      assert.equal("api://AzureADTokenExchange", fic.audiences[1])
      assert.equal("d", fic.description)
      assert.truthy(fic["@odata.context"]:find("federatedIdentityCredentials/$entity", 1, true))

      local up, err, created = isv:upsert_federated_credential(app.id, "fic-upsert", FIC)
      assert.is_nil(err)
      assert.is_true(created)
      assert.equal(FIC.subject, up.subject)
      local changed = { issuer = FIC.issuer, subject = "another-subject", audiences = FIC.audiences }
      local up2, err2, created2 = isv:upsert_federated_credential(app.id, "fic-upsert", changed)
      assert.is_nil(err2)
      assert.is_false(created2)
      assert.equal(up.id, up2.id)
      assert.equal("another-subject", up2.subject)

      local list = assert(isv:list(base))
      assert.equal(2, #list)
      local named = assert(isv:list(base .. "?$filter=" .. q("name eq 'fic-upsert'")))
      assert.equal(1, #named)
      assert.equal(up.id, named[1].id)
      local by_subject = assert(isv:list(base .. "?$filter=" .. q("subject eq 'subject-post'")))
      assert.equal(1, #by_subject)
      assert.equal(fic.id, by_subject[1].id)

      local got = assert(isv:get(base .. "(name='fic-post')"))
      assert.equal(fic.id, got.id)
      assert.is_true(isv:delete(base .. "/" .. fic.id))
      assert.is_true(isv:delete(base .. "(name='fic-upsert')"))
      local _, gerr = isv:get(base .. "/" .. fic.id)
      assert.equal(404, gerr.status)
      assert.equal(0, #assert(isv:list(base)))
    end)

    it("refuses bad names, audiences and a repeated issuer and subject", function()
      local status, doc = raw("POST", base, { name = "x", issuer = FIC.issuer, subject = "s", audiences = FIC.audiences })
      assert.equal(400, status)
      assert.equal("Request_BadRequest", doc.error.code)
      status = raw("POST", base, { name = "-starts-with-dash", issuer = FIC.issuer, subject = "s", audiences = FIC.audiences })
      assert.equal(400, status)
      status = raw("POST", base, { name = "has space", issuer = FIC.issuer, subject = "s", audiences = FIC.audiences })
      assert.equal(400, status)
      status, doc = raw("POST", base, { name = "two-aud", issuer = FIC.issuer, subject = "s",
        audiences = { "api://AzureADTokenExchange", "other" } })
      assert.equal(400, status)
      assert.truthy(doc.error.message:find("exactly one audience", 1, true))
      status = raw("POST", base, { name = "long-subject", issuer = FIC.issuer, subject = ("s"):rep(601), audiences = FIC.audiences })
      assert.equal(400, status)
      status = raw("POST", base, { name = "no-issuer", subject = "s", audiences = FIC.audiences })
      assert.equal(400, status)

      -- wrong but well-formed values are accepted
      assert(isv:post(base, { name = "first", issuer = "https://wrong.example/", subject = "dup", audiences = { "nonsense" } }))
      status, doc = raw("POST", base, { name = "second", issuer = "https://wrong.example/", subject = "dup", audiences = FIC.audiences })
      assert.equal(400, status)
      assert.equal("InvalidFederatedIdentityCredentialValue", doc.error.code)
      assert.truthy(doc.error.message:find("The combination of issuer and subject must be unique for the application. " ..
        "Issuer https://wrong.example/ and Subject: dup already exist.", 1, true))
      assert.is_true(isv:delete(base .. "(name='first')"))
    end)

    it("refuses an Entra issuer's subject that is no service principal of that tenant (yet)", function()
      local entra = "https://login.microsoftonline.com/" .. ISV .. "/v2.0"
      local status, doc = raw("POST", base, { name = "entra-missing", issuer = entra,
        subject = "11111111-2222-4333-8444-555555555555", audiences = FIC.audiences })
      assert.equal(400, status)
      assert.equal("InvalidFederatedIdentityCredentialValue", doc.error.code)
      assert.equal("SubjectNotFound", doc.error.details[1].code)
      local me = assert(isv:get("/servicePrincipals(appId='" .. demo.tenants[1].principals[1].appId .. "')"))
      assert(isv:post(base, { name = "entra-present", issuer = entra, subject = me.id, audiences = FIC.audiences }))
      assert.is_true(isv:delete(base .. "(name='entra-present')"))
    end)

    it("allows at most 20 per application", function()
      for i = 1, 20 do
        assert(isv:post(base, { name = "limit-" .. i, issuer = FIC.issuer, subject = "limit-subject-" .. i,
          audiences = FIC.audiences }))
      end
      local status, doc = raw("POST", base, { name = "limit-21", issuer = FIC.issuer, subject = "limit-subject-21",
        audiences = FIC.audiences })
      assert.equal(400, status)
      assert.truthy(doc.error.message:find("20", 1, true))
      assert.equal(20, #assert(isv:list(base)))
    end)
  end)

  describe("service principals", function()
    it("creates one in the customer tenant for a multi-tenant ISV app; a second is a 409", function()
      local app = assert(isv:post("/applications", { displayName = "Spec MT", signInAudience = "AzureADMultipleOrgs" }))
      local sp, err, created = customer:create_service_principal(app.appId)
      assert.is_nil(err)
      assert.is_true(created)
      assert.equal(app.appId, sp.appId)
      assert.equal(ISV, sp.appOwnerOrganizationId)
      assert.equal("Spec MT", sp.displayName)
      assert.is_true(sp.accountEnabled)
      assert.equal(app.appId, sp.servicePrincipalNames[1])
      assert.are_not.equal(app.id, sp.id)

      local status, doc = raw("POST", "/servicePrincipals", { appId = app.appId }, { tenant = "customer" })
      assert.equal(409, status)
      assert.equal("Request_MultipleObjectsWithSameKeyValue", doc.error.code)
      assert.equal("The service principal cannot be created, updated, or restored because the service principal name " ..
                   app.appId .. " is already in use.", doc.error.message)

      local again, _, created2 = customer:create_service_principal(app.appId)
      assert.is_false(created2)
      assert.equal(sp.id, again.id)
      local by_key = assert(customer:get("/servicePrincipals(appId='" .. app.appId .. "')"))
      assert.equal(sp.id, by_key.id)
      local by_names = assert(customer:list("/servicePrincipals?$filter=" ..
        q("servicePrincipalNames/any(c:c eq '" .. app.appId .. "')")))
      assert.equal(1, #by_names)
      assert.equal(sp.id, by_names[1].id)
      -- the app itself lives only in the ISV tenant
      assert.equal(0, #assert(customer:list("/applications?$filter=" .. q("appId eq '" .. app.appId .. "'"))))
      local _, aerr = customer:get("/applications/" .. app.appId)
      assert.equal(404, aerr.status)

      assert.is_true(customer:patch("/servicePrincipals/" .. sp.id, { accountEnabled = false }))
      assert.is_false(assert(customer:get("/servicePrincipals/" .. sp.id)).accountEnabled)
      assert.is_true(customer:delete("/servicePrincipals/" .. sp.id))
      local _, derr = customer:get("/servicePrincipals/" .. sp.id)
      assert.equal(404, derr.status)
    end)

    it("refuses a single-tenant app of another tenant, an unknown appId and a missing appId", function()
      local app = assert(isv:post("/applications", { displayName = "Spec ST", signInAudience = "AzureADMyOrg" }))
      local status, doc = raw("POST", "/servicePrincipals", { appId = app.appId }, { tenant = "customer" })
      assert.equal(400, status)
      assert.equal("Request_BadRequest", doc.error.code)
      assert.equal("The appId '" .. app.appId .. "' of the service principal does not reference a valid application object.",
                   doc.error.message)
      assert.equal("NoBackingApplicationObject", doc.error.details[1].code)
      assert.equal("appId", doc.error.details[1].target)
      -- in its own tenant it is fine
      assert(isv:post("/servicePrincipals", { appId = app.appId }))
      status, doc = raw("POST", "/servicePrincipals", { appId = "00000000-1111-4222-8333-444444444444" }, { tenant = "customer" })
      assert.equal(400, status)
      assert.equal("NoBackingApplicationObject", doc.error.details[1].code)
      status = raw("POST", "/servicePrincipals", { accountEnabled = true }, { tenant = "customer" })
      assert.equal(400, status)
    end)
  end)

  describe("authentication and permissions", function()
    it("refuses a token for another audience with 401 InvalidAuthenticationToken", function()
      local status, doc, resp = raw("GET", "/applications", nil, { scope = "https://management.azure.com/.default" })
      assert.equal(401, status)
      assert.equal("InvalidAuthenticationToken", doc.error.code)
      assert.equal("Access token validation failure. Invalid audience.", doc.error.message)
      assert.truthy(resp.headers["www-authenticate"] or resp.headers["WWW-Authenticate"])
    end)

    it("refuses a request without a token with a JSON 401", function()
      local resp = assert(emu.http:request { method = "GET", url = "https://graph.microsoft.com/v1.0/applications" })
      assert.equal(401, resp.status)
      assert.equal("InvalidAuthenticationToken", json.decode(resp.body).error.code)
    end)

    it("checks the caller's Graph application permissions", function()
      local status, doc = raw("GET", "/applications", nil, { principal = "isv-nograph" })
      assert.equal(403, status)
      assert.equal("Authorization_RequestDenied", doc.error.code)
      assert.equal("Insufficient privileges to complete the operation.", doc.error.message)
      status = raw("GET", "/applications", nil, { principal = "isv-reader" })
      assert.equal(200, status)
      status, doc = raw("POST", "/applications", { displayName = "reader may not" }, { principal = "isv-reader" })
      assert.equal(403, status)
      assert.equal("Authorization_RequestDenied", doc.error.code)
    end)

    it("limits Application.ReadWrite.OwnedBy to the caller's own applications in its own tenant", function()
      local theirs = assert(isv:post("/applications", { displayName = "Spec not owned", signInAudience = "AzureADMultipleOrgs" }))
      local status, mine = raw("POST", "/applications", { displayName = "Spec owned", signInAudience = "AzureADMultipleOrgs" },
                               { principal = "isv-ownedby" })
      assert.equal(201, status)
      assert.equal(200, (raw("GET", "/applications/" .. mine.id, nil, { principal = "isv-ownedby" })))
      assert.equal(204, (raw("PATCH", "/applications/" .. mine.id, { notes = "n" }, { principal = "isv-ownedby" })))
      local s2, doc = raw("GET", "/applications/" .. theirs.id, nil, { principal = "isv-ownedby" })
      assert.equal(403, s2)
      assert.equal("Authorization_RequestDenied", doc.error.code)
      assert.equal(403, (raw("DELETE", "/applications/" .. theirs.id, nil, { principal = "isv-ownedby" })))
      local s3, list = raw("GET", "/applications", nil, { principal = "isv-ownedby" })
      assert.equal(200, s3)
      assert.equal(1, #list.value)
      assert.equal(mine.id, list.value[1].id)
      assert.equal(201, (raw("POST", "/servicePrincipals", { appId = mine.appId }, { principal = "isv-ownedby" })))
      local s4, doc4 = raw("POST", "/servicePrincipals", { appId = theirs.appId }, { tenant = "customer", principal = "customer-ownedby" })
      assert.equal(403, s4)
      assert.equal("When using this permission, the backing application of the service principal being created must in the local tenant",
                   doc4.error.message)
    end)

    it("answers /me for an app-only token with 400 and unknown segments with 400", function()
      local status, doc = raw("GET", "/me")
      assert.equal(400, status)
      assert.equal("BadRequest", doc.error.code)
      assert.equal("/me request is only valid with delegated authentication flow.", doc.error.message)
      status, doc = raw("GET", "/nonsense")
      assert.equal(400, status)
      assert.equal("Resource not found for the segment 'nonsense'.", doc.error.message)
      status, doc = raw("GET", "/applications/not-a-guid")
      assert.equal(400, status)
      assert.equal("Request_BadRequest", doc.error.code)
    end)
  end)

  it("reaches Graph on the single-origin layout under /graph", function()
    local resp = assert(emu.http:request { method = "GET", url = emu.url .. "/graph/v1.0/applications?$top=1",
      credential = emu:origin_credential("isv"), scope = emu.url .. "/graph/.default", tenant = ISV })
    assert.equal(200, resp.status)
    local doc = json.decode(resp.body)
    assert.equal(1, #doc.value)
    assert.equal(emu.url .. "/graph/v1.0/$metadata#applications", doc["@odata.context"])
    assert.truthy(doc["@odata.nextLink"]:find(emu.url .. "/graph/v1.0/applications?", 1, true))
  end)
end)

describe("emulated Graph in-process", function()
  local emulator = require "cmkflow.emulator"
  local graph = require "cmkflow.emulator.graph"
  local tokens = require "cmkflow.emulator.tokens"

  local function call(st, tenant_name, method, target, body, headers)
    local t = st:tenant(tenant_name)
    local tok = tokens.issue(st, t, { aud = "https://graph.microsoft.com", oid = "caller",
      roles = { "Application.ReadWrite.All" } })
    local path, query = target:match("^([^?]*)%??(.*)$")
    local h = { host = "graph.microsoft.com", authorization = "Bearer " .. tok }
    for k, v in pairs(headers or {}) do h[k] = v end
    local status, _, text = graph.handle(st, { method = method, path = path, service_path = path, args = form.decode(query),
      headers = h, body = body and json.encode(body) or "", scheme = "https" })
    return status, text ~= "" and json.decode(text) or nil
  end

  it("hides a new service principal until the replication delay has passed", function()
    local st = emulator.new_state {}
    st.knobs.delays.service_principal = 30
    local _, app = call(st, "isv", "POST", "/v1.0/applications", { displayName = "Delayed", signInAudience = "AzureADMultipleOrgs" })
    local status, sp = call(st, "customer", "POST", "/v1.0/servicePrincipals", { appId = app.appId })
    assert.equal(201, status)
    local s2, doc = call(st, "customer", "GET", "/v1.0/servicePrincipals/" .. sp.id)
    assert.equal(404, s2)
    assert.equal("Request_ResourceNotFound", doc.error.code)
    local _, list = call(st, "customer", "GET", "/v1.0/servicePrincipals?$filter=" .. q("appId eq '" .. app.appId .. "'"))
    assert.equal(0, #list.value)
    -- writes see the primary copy: a second create is already a conflict
    assert.equal(409, (call(st, "customer", "POST", "/v1.0/servicePrincipals", { appId = app.appId })))
    st:advance(31)
    local s3, got = call(st, "customer", "GET", "/v1.0/servicePrincipals/" .. sp.id)
    assert.equal(200, s3)
    assert.equal(sp.id, got.id)
  end)

  it("stamps federated credentials with the token service's delay; Graph shows them at once", function()
    local st = emulator.new_state {}
    st.knobs.delays.federated_credential = 60
    local _, app = call(st, "isv", "POST", "/v1.0/applications", { displayName = "FIC delay" })
    local status, fic = call(st, "isv", "PATCH", "/v1.0/applications/" .. app.id .. "/federatedIdentityCredentials(name='late')",
      { issuer = "https://issuer.example", subject = "s", audiences = { "api://AzureADTokenExchange" } },
      { prefer = "create-if-missing" })
    assert.equal(201, status)
    local stored = st:tenant("isv").applications[app.id].federatedIdentityCredentials[fic.id]
    assert.is_false(st:visible(stored))
    assert.equal(200, (call(st, "isv", "GET", "/v1.0/applications/" .. app.id .. "/federatedIdentityCredentials/" .. fic.id)))
    st:advance(61)
    assert.is_true(st:visible(stored))
  end)

  it("deleting an application removes its credentials and orphans service principals elsewhere", function()
    local st = emulator.new_state {}
    local _, app = call(st, "isv", "POST", "/v1.0/applications", { displayName = "Doomed", signInAudience = "AzureADMultipleOrgs" })
    local _, sp = call(st, "customer", "POST", "/v1.0/servicePrincipals", { appId = app.appId })
    local _, home = call(st, "isv", "POST", "/v1.0/servicePrincipals", { appId = app.appId })
    assert.equal(204, (call(st, "isv", "DELETE", "/v1.0/applications/" .. app.id)))
    assert.is_nil(st:application_by_appid(app.appId))
    assert.is_nil(st:tenant("isv").service_principals[home.id])
    local remaining = st:tenant("customer").service_principals[sp.id]
    assert.is_true(remaining.orphaned)
    assert.equal(400, (call(st, "customer", "POST", "/v1.0/servicePrincipals", { appId = "" })))
  end)

  it("gives the same ids for the same random_seed", function()
    local a, b = emulator.new_state {}, emulator.new_state {}
    local _, x = call(a, "isv", "POST", "/v1.0/applications", { displayName = "Same" })
    local _, y = call(b, "isv", "POST", "/v1.0/applications", { displayName = "Same" })
    assert.equal(x.id, y.id)
    assert.equal(x.appId, y.appId)
  end)

  it("parses OData string literals with doubled quotes in keys and filters", function()
    local st = emulator.new_state {}
    local status = call(st, "isv", "PATCH", "/v1.0/applications(uniqueName='o''brien')", { displayName = "O'Brien" },
      { prefer = "create-if-missing" })
    assert.equal(201, status)
    local s2, app = call(st, "isv", "GET", "/v1.0/applications(uniqueName='o''brien')")
    assert.equal(200, s2)
    assert.equal("o'brien", app.uniqueName)
    local _, list = call(st, "isv", "GET", "/v1.0/applications?$filter=" .. q("displayName eq 'O''Brien'"))
    assert.equal(1, #list.value)
    local s3, bad = call(st, "isv", "GET", "/v1.0/applications?$filter=" .. q("notes eq 'x'"))
    assert.equal(400, s3)
    assert.equal("Request_UnsupportedQuery", bad.error.code)
  end)
end)
