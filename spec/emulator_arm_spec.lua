-- The emulated ARM (issue 3 point 5): authentication, api-version, RBAC, resource groups,
-- managed identities, key vaults, role assignments and storage accounts. Most cases call
-- arm.handle in-process on a state built from the demo seed (tokens issued with the tenants'
-- keys); the last block goes over HTTPS through our own ARM client.
local core = require "cmkflow.core"
local json = core.json
local state_mod = require "cmkflow.emulator.state"
local tokens = require "cmkflow.emulator.tokens"
local arm = require "cmkflow.emulator.arm"
local storage_cmk = require "cmkflow.emulator.storage_cmk"
local seed = require "cmkflow.emulator.demo_seed"

local ISV_T, CUS_T = seed.tenants[1].id, seed.tenants[2].id
local ISV_S, CUS_S = seed.tenants[1].subscriptions[1].id, seed.tenants[2].subscriptions[1].id

local function sp_of(st, tid, app_id) return st:service_principal_by_appid(st.tenants[tid], app_id, true) end

local function token_for(st, tid, oid, extra)
  local claims = { aud = "https://management.azure.com/", oid = oid, sub = oid, appid = "app-" .. oid }
  for k, v in pairs(extra or {}) do claims[k] = v end
  return (tokens.issue(st, st.tenants[tid], claims))
end

-- A caller: call(method, path, api_version, body?, headers?) -> status, headers, decoded body (or raw text).
local function caller(st, token)
  return function(method, path, api, body, headers)
    local h = { host = "management.azure.com", authorization = token and ("Bearer " .. token) or nil }
    for k, v in pairs(headers or {}) do h[k] = v end
    local req = { method = method, path = path, service_path = path, args = { ["api-version"] = api },
      headers = h, body = body and json.encode(body) or "", host = "management.azure.com", port = 443,
      scheme = "https" }
    local q = {}
    if api then q[#q + 1] = "api-version=" .. api end
    req.query = table.concat(q, "&")
    local status, hdrs, text = arm.handle(st, req)
    local decoded = text ~= "" and json.decode(text) or nil
    return status, hdrs, decoded or text
  end
end

local function world()
  local st = state_mod.new(seed)
  local isv_sp = sp_of(st, ISV_T, seed.tenants[1].principals[1].appId)
  local cus_sp = sp_of(st, CUS_T, seed.tenants[2].principals[1].appId)
  return st, caller(st, token_for(st, ISV_T, isv_sp.id)), caller(st, token_for(st, CUS_T, cus_sp.id)), isv_sp, cus_sp
end

local RG_API, MI_API = "2021-04-01", "2023-01-31"

describe("emulated ARM: authentication and api-version", function()
  it("401 AuthenticationFailed with the WWW-Authenticate challenge when no token is sent", function()
    local st = world()
    local s, h, b = caller(st, nil)("GET", "/subscriptions", "2022-12-01")
    assert.are.equal(401, s)
    assert.are.equal("AuthenticationFailed", b.error.code)
    assert.are.equal('Bearer authorization_uri="https://login.windows.net/", error="invalid_token", '
      .. 'error_description="The authentication failed because of missing \'Authorization\' header."',
      h["www-authenticate"])
  end)

  it("401 InvalidAuthenticationToken for a token signed by a foreign key and ExpiredAuthenticationToken", function()
    local st, _, _, isv_sp = world()
    local other = state_mod.new(seed) -- same tenant ids, different signing keys
    local s, _, b = caller(st, token_for(other, ISV_T, isv_sp.id))("GET", "/subscriptions", "2022-12-01")
    assert.are.equal(401, s)
    assert.are.equal("InvalidAuthenticationToken", b.error.code)
    local tok = token_for(st, ISV_T, isv_sp.id)
    st:advance(7200)
    s, _, b = caller(st, tok)("GET", "/subscriptions", "2022-12-01")
    assert.are.equal(401, s)
    assert.are.equal("ExpiredAuthenticationToken", b.error.code)
  end)

  it("401 InvalidAuthenticationTokenTenant for a customer token on the ISV subscription", function()
    local _, _, cus = world()
    local s, h, b = cus("GET", "/subscriptions/" .. ISV_S .. "/resourcegroups/rg1", RG_API)
    assert.are.equal(401, s)
    assert.are.equal("InvalidAuthenticationTokenTenant", b.error.code)
    assert.are.equal(("The access token is from the wrong issuer 'https://sts.windows.net/%s/'. It must match the "
      .. "tenant 'https://sts.windows.net/%s/' associated with this subscription. Please use the authority (URL) "
      .. "'https://login.windows.net/%s' to get the token. Note, if the subscription is transferred to another tenant "
      .. "there is no impact to the services, but information about new tenant could take time to propagate (up to an "
      .. "hour). If you just transferred your subscription and see this error message, please try back later."):format(
      CUS_T, ISV_T, ISV_T), b.error.message)
    assert.is_truthy(h["www-authenticate"])
  end)

  it("400 MissingApiVersionParameter and unsupported versions with the supported list", function()
    local _, isv = world()
    local s, _, b = isv("GET", "/subscriptions/" .. ISV_S .. "/resourcegroups/rg1", nil)
    assert.are.equal(400, s)
    assert.are.equal("MissingApiVersionParameter", b.error.code)
    assert.are.equal("The api-version query parameter (?api-version=) is required for all requests.", b.error.message)
    s, _, b = isv("GET", "/subscriptions/" .. ISV_S .. "/resourcegroups/rg1", "1999-01-01")
    assert.are.equal(400, s)
    assert.are.equal("InvalidApiVersionParameter", b.error.code)
    assert.matches(", 2021-04-01, 2022-09-01, ", b.error.message, 1, true)
    s, _, b = isv("PUT", "/subscriptions/" .. ISV_S .. "/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/"
      .. "userAssignedIdentities/u1", "2015-01-01", { location = "westeurope" })
    assert.are.equal(400, s)
    assert.are.equal("NoRegisteredProviderFound", b.error.code)
    assert.matches("for type 'userAssignedIdentities'. The supported api-versions are '2015-08-31-preview, 2018-11-30, ", b.error.message, 1, true)
  end)

  it("ARM response headers on every answer", function()
    local _, isv = world()
    local s, h = isv("GET", "/subscriptions", "2022-12-01", nil, { ["x-ms-correlation-request-id"] = "corr-1" })
    assert.are.equal(200, s)
    assert.are.equal("corr-1", h["x-ms-correlation-request-id"])
    assert.is_truthy(h["x-ms-request-id"])
    assert.matches("^LOCAL:%d+T%d+Z:corr%-1$", h["x-ms-routing-request-id"])
    assert.are.equal("11999", h["x-ms-ratelimit-remaining-subscription-reads"])
    assert.are.equal("no-cache", h["cache-control"])
  end)
end)

describe("emulated ARM: subscriptions and tenants", function()
  it("lists the subscriptions of the token's tenant where the caller has a role", function()
    local st, isv = world()
    local s, _, b = isv("GET", "/subscriptions", "2019-11-01")
    assert.are.equal(200, s)
    assert.are.equal(1, #b.value)
    assert.are.equal(ISV_S, b.value[1].subscriptionId)
    assert.are.equal(ISV_T, b.value[1].tenantId)
    assert.are.equal("/subscriptions/" .. ISV_S, b.value[1].id)
    assert.are.equal("Enabled", b.value[1].state)
    -- a principal without roles sees none
    local app, sp = st:add_seed_principal(st.tenants[ISV_T], { name = "nobody", appId = st:id("app") })
    assert.is_truthy(app)
    s, _, b = caller(st, token_for(st, ISV_T, sp.id))("GET", "/subscriptions", "2019-11-01")
    assert.are.equal(200, s)
    assert.are.equal(0, #b.value)
    s, _, b = isv("GET", "/subscriptions/" .. ISV_S, "2022-12-01")
    assert.are.equal(200, s)
    assert.are.equal("isv-prod", b.displayName)
    s, _, b = isv("GET", "/tenants", "2022-12-01")
    assert.are.equal(200, s)
    assert.are.equal(ISV_T, b.value[1].tenantId)
  end)

  it("404 SubscriptionNotFound for an unknown subscription", function()
    local _, isv = world()
    local s, _, b = isv("GET", "/subscriptions/00000000-0000-4000-8000-000000000000/resourcegroups", RG_API)
    assert.are.equal(404, s)
    assert.are.equal("SubscriptionNotFound", b.error.code)
  end)
end)

describe("emulated ARM: resource groups", function()
  local RG = "/subscriptions/" .. ISV_S .. "/resourcegroups/Rg-One"

  it("PUT creates (201) then updates (200); GET, HEAD, list; case-insensitive ids", function()
    local _, isv = world()
    local s, _, b = isv("PUT", RG, "2025-04-01", { location = "West Europe" })
    assert.are.equal(201, s)
    assert.are.equal("/subscriptions/" .. ISV_S .. "/resourceGroups/Rg-One", b.id)
    assert.are.equal("Rg-One", b.name)
    assert.are.equal("westeurope", b.location)
    assert.are.equal("Succeeded", b.properties.provisioningState)
    assert.are.equal("Microsoft.Resources/resourceGroups", b.type)
    s = isv("PUT", RG:upper():gsub("SUBSCRIPTIONS", "subscriptions"):gsub("RESOURCEGROUPS", "resourceGroups"),
            RG_API, { location = "westeurope" })
    assert.are.equal(200, s)
    s, _, b = isv("GET", RG:lower(), RG_API)
    assert.are.equal(200, s)
    assert.are.equal("Rg-One", b.name)
    s = isv("HEAD", RG, RG_API)
    assert.are.equal(204, s)
    s = isv("HEAD", RG .. "x", RG_API)
    assert.are.equal(404, s)
    s, _, b = isv("GET", "/subscriptions/" .. ISV_S .. "/resourcegroups", RG_API)
    assert.are.equal(200, s)
    assert.are.equal(1, #b.value)
    s, _, b = isv("PUT", RG, RG_API, { location = "eastus" })
    assert.are.equal(409, s)
    assert.are.equal("InvalidResourceGroupLocation", b.error.code)
  end)

  it("refuses bad names and a missing location; 404 ResourceGroupNotFound", function()
    local _, isv = world()
    local s, _, b = isv("PUT", "/subscriptions/" .. ISV_S .. "/resourcegroups/ends.", RG_API, { location = "eastus" })
    assert.are.equal(400, s)
    assert.are.equal("InvalidResourceGroupName", b.error.code)
    s = isv("PUT", "/subscriptions/" .. ISV_S .. "/resourcegroups/" .. ("a"):rep(91), RG_API, { location = "eastus" })
    assert.are.equal(400, s)
    s = isv("PUT", "/subscriptions/" .. ISV_S .. "/resourcegroups/" .. ("a"):rep(90), RG_API, { location = "eastus" })
    assert.are.equal(201, s)
    s, _, b = isv("PUT", "/subscriptions/" .. ISV_S .. "/resourcegroups/ok", RG_API, {})
    assert.are.equal(400, s)
    assert.are.equal("LocationRequired", b.error.code)
    s, _, b = isv("GET", "/subscriptions/" .. ISV_S .. "/resourcegroups/nope", RG_API)
    assert.are.equal(404, s)
    assert.are.equal("ResourceGroupNotFound", b.error.code)
    assert.are.equal("Resource group 'nope' could not be found.", b.error.message)
  end)

  it("DELETE answers 202 with a Location and removes the group and its contents", function()
    local st, isv = world()
    assert.are.equal(201, (isv("PUT", RG, RG_API, { location = "westeurope" })))
    local s, _, b = isv("PUT", RG .. "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1", MI_API,
                        { location = "westeurope" })
    assert.are.equal(201, s)
    local pid = b.properties.principalId
    local h
    s, h = isv("DELETE", RG, RG_API)
    assert.are.equal(202, s)
    assert.matches("^https://management%.azure%.com/subscriptions/" .. ISV_S:gsub("%-", "%%-") .. "/operationresults/",
                   h.location)
    assert.are.equal(404, (isv("GET", RG, RG_API)))
    assert.is_nil(st.identities[pid])
    assert.is_nil(st.tenants[ISV_T].service_principals[pid])
  end)

  it("403 AuthorizationFailed for a principal without roles", function()
    local st = world()
    local _, sp = st:add_seed_principal(st.tenants[ISV_T], { name = "nobody", appId = st:id("app") })
    local s, _, b = caller(st, token_for(st, ISV_T, sp.id))("PUT", RG, RG_API, { location = "westeurope" })
    assert.are.equal(403, s)
    assert.are.equal("AuthorizationFailed", b.error.code)
    assert.are.equal(("The client 'app-%s' with object id '%s' does not have authorization to perform action "
      .. "'Microsoft.Resources/subscriptions/resourceGroups/write' over scope '/subscriptions/%s/resourceGroups/Rg-One' "
      .. "or the scope is invalid. If access was recently granted, please refresh your credentials."):format(
      sp.id, sp.id, ISV_S), b.error.message)
  end)
end)

describe("emulated ARM: user-assigned identities", function()
  local RG = "/subscriptions/" .. ISV_S .. "/resourceGroups/rg1"
  local MI = RG .. "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"

  it("PUT gives tenantId/principalId/clientId and registers a ManagedIdentity service principal", function()
    local st, isv = world()
    isv("PUT", RG, RG_API, { location = "westeurope" })
    local s, _, b = isv("PUT", MI .. "uami-1", "2024-11-30", { location = "westeurope", tags = {} })
    assert.are.equal(201, s)
    assert.are.equal(MI .. "uami-1", b.id)
    assert.are.equal("Microsoft.ManagedIdentity/userAssignedIdentities", b.type)
    assert.are.equal(ISV_T, b.properties.tenantId)
    assert.is_true(core.crypto.is_guid(b.properties.principalId))
    assert.is_true(core.crypto.is_guid(b.properties.clientId))
    assert.are_not.equal(b.properties.principalId, b.properties.clientId)
    assert.are.equal("None", b.properties.isolationScope)
    local pid, cid = b.properties.principalId, b.properties.clientId
    local ident = st.identities[pid]
    assert.are.same({ clientId = cid, principalId = pid, tenant = ISV_T, resource_id = MI .. "uami-1" }, ident)
    local sp = st.tenants[ISV_T].service_principals[pid]
    assert.are.equal("ManagedIdentity", sp.servicePrincipalType)
    assert.are.equal(cid, sp.appId)
    -- same seed, same sequence: same ids
    local st2, isv2 = world()
    isv2("PUT", RG, RG_API, { location = "westeurope" })
    local _, _, b2 = isv2("PUT", MI .. "uami-1", "2024-11-30", { location = "westeurope" })
    assert.are.equal(pid, b2.properties.principalId)
    assert.is_truthy(st2.identities[pid])
    -- update keeps the ids
    s, _, b = isv("PUT", MI .. "UAMI-1", "2018-11-30", { location = "westeurope", tags = { a = "b" } })
    assert.are.equal(200, s)
    assert.are.equal(pid, b.properties.principalId)
    assert.is_nil(b.properties.isolationScope)
    assert.are.equal("b", b.tags.a)
    s, _, b = isv("GET", MI .. "uami-1", MI_API)
    assert.are.equal(200, s)
    assert.are.equal(cid, b.properties.clientId)
    s, _, b = isv("GET", RG .. "/providers/Microsoft.ManagedIdentity/userAssignedIdentities", MI_API)
    assert.are.equal(1, #b.value)
    s, _, b = isv("GET", "/subscriptions/" .. ISV_S .. "/providers/Microsoft.ManagedIdentity/userAssignedIdentities", MI_API)
    assert.are.equal(200, s)
    assert.are.equal(1, #b.value)
    s = isv("DELETE", MI .. "uami-1", MI_API)
    assert.are.equal(200, s)
    assert.is_nil(st.identities[pid])
    assert.is_nil(st.tenants[ISV_T].service_principals[pid])
    assert.are.equal(204, (isv("DELETE", MI .. "uami-1", MI_API)))
    s, _, b = isv("GET", MI .. "uami-1", MI_API)
    assert.are.equal(404, s)
    assert.are.equal("ResourceNotFound", b.error.code)
  end)

  it("the service principal becomes visible after the configured delay", function()
    local st, isv = world()
    st.knobs.delays.service_principal = 30
    isv("PUT", RG, RG_API, { location = "westeurope" })
    local _, _, b = isv("PUT", MI .. "uami-1", MI_API, { location = "westeurope" })
    local tenant = st.tenants[ISV_T]
    assert.is_nil(st:principal(tenant, b.properties.principalId))
    assert.is_truthy(st:principal(tenant, b.properties.principalId, true))
    st:advance(31)
    assert.is_truthy(st:principal(tenant, b.properties.principalId))
  end)

  it("refuses bad names, missing location and a missing group", function()
    local _, isv = world()
    isv("PUT", RG, RG_API, { location = "westeurope" })
    local s, _, b = isv("PUT", MI .. "ab", MI_API, { location = "westeurope" })
    assert.are.equal(400, s)
    assert.are.equal("InvalidResourceName", b.error.code)
    assert.are.equal(400, (isv("PUT", MI .. "-abc", MI_API, { location = "westeurope" })))
    assert.are.equal(400, (isv("PUT", MI .. "a.bc", MI_API, { location = "westeurope" })))
    s, _, b = isv("PUT", MI .. "abc", MI_API, {})
    assert.are.equal(400, s)
    assert.are.equal("LocationRequired", b.error.code)
    s, _, b = isv("PUT", "/subscriptions/" .. ISV_S .. "/resourceGroups/nope/providers/Microsoft.ManagedIdentity/"
      .. "userAssignedIdentities/abc", MI_API, { location = "westeurope" })
    assert.are.equal(404, s)
    assert.are.equal("ResourceGroupNotFound", b.error.code)
  end)
end)

describe("emulated ARM: role definitions and role assignments", function()
  local RG = "/subscriptions/" .. CUS_S .. "/resourceGroups/rg2"
  local RA_API = "2022-04-01"
  local CSEU = "e147488a-f6f5-4113-8e2d-b22465e65bf6"

  local function ra_body(principal, principal_type)
    return { properties = { roleDefinitionId = "/subscriptions/" .. CUS_S .. "/providers/Microsoft.Authorization/roleDefinitions/"
      .. CSEU, principalId = principal, principalType = principal_type } }
  end

  it("lists built-in role definitions and filters by roleName", function()
    local _, _, cus = world()
    local s, _, b = cus("GET", "/subscriptions/" .. CUS_S .. "/providers/Microsoft.Authorization/roleDefinitions", RA_API,
      nil)
    assert.are.equal(200, s)
    assert.is_true(#b.value >= 5)
    local st2 = world()
    local tok = caller(st2, token_for(st2, CUS_T, sp_of(st2, CUS_T, seed.tenants[2].principals[1].appId).id))
    local req_path = RG .. "/providers/Microsoft.Authorization/roleDefinitions"
    local status, _, body = (function()
      local req = { method = "GET", path = req_path, service_path = req_path, headers = { host = "management.azure.com",
        authorization = nil }, args = {} }
      return arm.handle(st2, req)
    end)()
    assert.are.equal(401, status) -- sanity: no token
    assert.is_truthy(body)
    local st3, _, cus3 = world()
    assert.are.equal(st3.resources ~= nil, true)
    -- $filter through args
    local function filtered(name)
      local p = "/subscriptions/" .. CUS_S .. "/providers/Microsoft.Authorization/roleDefinitions"
      local sp = sp_of(st3, CUS_T, seed.tenants[2].principals[1].appId)
      local req = { method = "GET", path = p, service_path = p, body = "", host = "management.azure.com",
        headers = { host = "management.azure.com", authorization = "Bearer " .. token_for(st3, CUS_T, sp.id) },
        args = { ["api-version"] = RA_API, ["$filter"] = "roleName eq '" .. name .. "'" } }
      local st_, _, text = arm.handle(st3, req)
      return st_, json.decode(text)
    end
    local fs, fb = filtered("Key Vault Crypto Service Encryption User")
    assert.are.equal(200, fs)
    assert.are.equal(1, #fb.value)
    assert.are.equal(CSEU, fb.value[1].name)
    assert.are.equal("/subscriptions/" .. CUS_S .. "/providers/Microsoft.Authorization/roleDefinitions/" .. CSEU, fb.value[1].id)
    s, _, b = cus3("GET", "/subscriptions/" .. CUS_S .. "/providers/Microsoft.Authorization/roleDefinitions/" .. CSEU, RA_API)
    assert.are.equal(200, s)
    assert.are.equal("Key Vault Crypto Service Encryption User", b.properties.roleName)
  end)

  it("PUT 201, identical re-PUT 200, same tuple under another name 409, GET, list, DELETE 200 then 204", function()
    local st, isv, cus = world()
    cus("PUT", RG, RG_API, { location = "westeurope" })
    -- an ISV app's service principal in the customer tenant
    local sp = st:add_service_principal(st.tenants[CUS_T], { appId = st:id("app"), displayName = "isv-app" })
    local name = "11111111-2222-4333-8444-555555555555"
    local path = RG .. "/providers/Microsoft.Authorization/roleAssignments/" .. name
    local s, _, b = cus("PUT", path, RA_API, ra_body(sp.id))
    assert.are.equal(201, s)
    assert.are.equal(path, b.id)
    assert.are.equal(name, b.name)
    assert.are.equal("Microsoft.Authorization/roleAssignments", b.type)
    assert.are.equal(sp.id, b.properties.principalId)
    assert.are.equal(RG, b.properties.scope)
    assert.are.equal("ServicePrincipal", b.properties.principalType)
    s = cus("PUT", path, RA_API, ra_body(sp.id))
    assert.are.equal(200, s)
    s, _, b = cus("PUT", RG .. "/providers/Microsoft.Authorization/roleAssignments/21111111-2222-4333-8444-555555555555",
                  RA_API, ra_body(sp.id))
    assert.are.equal(409, s)
    assert.are.equal("RoleAssignmentExists", b.error.code)
    assert.are.equal("The role assignment already exists. The ID of the existing role assignment is "
      .. name:gsub("%-", "") .. ".", b.error.message)
    s, _, b = cus("PUT", RG .. "/providers/Microsoft.Authorization/roleAssignments/not-a-guid", RA_API, ra_body(sp.id))
    assert.are.equal(400, s)
    assert.are.equal("InvalidRoleAssignmentId", b.error.code)
    -- the assignment grants the data action once visible
    local rbac = require "cmkflow.emulator.rbac"
    assert.is_true(rbac.check(st, CUS_T, sp.id, RG .. "/providers/Microsoft.KeyVault/vaults/v1",
      "Microsoft.KeyVault/vaults/keys/wrap/action", true))
    s, _, b = cus("GET", path, RA_API)
    assert.are.equal(200, s)
    assert.are.equal(sp.id, b.properties.principalId)
    local p = "/subscriptions/" .. CUS_S .. "/providers/Microsoft.Authorization/roleAssignments"
    local req = { method = "GET", path = p, service_path = p, body = "", host = "management.azure.com",
      headers = { host = "management.azure.com", authorization = "Bearer "
        .. token_for(st, CUS_T, sp_of(st, CUS_T, seed.tenants[2].principals[1].appId).id) },
      args = { ["api-version"] = RA_API, ["$filter"] = "principalId eq '" .. sp.id .. "'" } }
    local ls, _, ltext = arm.handle(st, req)
    assert.are.equal(200, ls)
    local lb = json.decode(ltext)
    assert.are.equal(1, #lb.value)
    assert.are.equal(name, lb.value[1].name)
    -- the ISV cannot touch the customer's subscription
    s, _, b = isv("GET", path, RA_API)
    assert.are.equal(401, s)
    assert.are.equal("InvalidAuthenticationTokenTenant", b.error.code)
    s, _, b = cus("DELETE", path, RA_API)
    assert.are.equal(200, s)
    assert.are.equal(name, b.name)
    assert.are.equal(204, (cus("DELETE", path, RA_API)))
    assert.is_false(rbac.check(st, CUS_T, sp.id, RG, "Microsoft.KeyVault/vaults/keys/wrap/action", true))
  end)

  it("400 PrincipalNotFound while the principal replicates, unless principalType is set", function()
    local st, _, cus = world()
    st.knobs.delays.service_principal = 60
    st.knobs.delays.role_assignment = 30
    cus("PUT", RG, RG_API, { location = "westeurope" })
    local sp = st:add_service_principal(st.tenants[CUS_T], { appId = st:id("app"), displayName = "isv-app",
      visible_at = st:visible_from("service_principal") })
    local path = RG .. "/providers/Microsoft.Authorization/roleAssignments/31111111-2222-4333-8444-555555555555"
    local s, _, b = cus("PUT", path, RA_API, ra_body(sp.id))
    assert.are.equal(400, s)
    assert.are.equal("PrincipalNotFound", b.error.code)
    assert.are.equal(("Principal %s does not exist in the directory %s. Check that you have the correct principal ID. "
      .. "If you are creating this principal and then immediately assigning a role, this error might be related to a "
      .. "replication delay. In this case, set the role assignment principalType property to a value, such as "
      .. "ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype"):format(sp.id:gsub("%-", ""), CUS_T),
      b.error.message)
    -- a principal that does not exist at all is refused even with principalType
    s, _, b = cus("PUT", path, RA_API, ra_body("99999999-2222-4333-8444-555555555555", "ServicePrincipal"))
    assert.are.equal(400, s)
    assert.are.equal("PrincipalNotFound", b.error.code)
    s = cus("PUT", path, RA_API, ra_body(sp.id, "ServicePrincipal"))
    assert.are.equal(201, s)
    local rbac = require "cmkflow.emulator.rbac"
    assert.is_false(rbac.check(st, CUS_T, sp.id, RG, "Microsoft.KeyVault/vaults/keys/wrap/action", true))
    st:advance(31)
    assert.is_true(rbac.check(st, CUS_T, sp.id, RG, "Microsoft.KeyVault/vaults/keys/wrap/action", true))
  end)

  it("403 AuthorizationFailed for a caller without roleAssignments/write", function()
    local st, _, cus = world()
    cus("PUT", RG, RG_API, { location = "westeurope" })
    local _, nobody = st:add_seed_principal(st.tenants[CUS_T], { name = "reader", appId = st:id("app"),
      roles = { { role = "Reader", scope = "/subscriptions/" .. CUS_S } } })
    local path = RG .. "/providers/Microsoft.Authorization/roleAssignments/41111111-2222-4333-8444-555555555555"
    local s, _, b = caller(st, token_for(st, CUS_T, nobody.id))("PUT", path, RA_API, ra_body(nobody.id))
    assert.are.equal(403, s)
    assert.are.equal("AuthorizationFailed", b.error.code)
    assert.matches("'Microsoft.Authorization/roleAssignments/write' over scope '" .. RG:gsub("%-", "%%-") .. "'",
                   b.error.message)
  end)
end)

describe("emulated ARM: key vaults", function()
  local RG = "/subscriptions/" .. CUS_S .. "/resourceGroups/rg2"
  local KV = RG .. "/providers/Microsoft.KeyVault/vaults/"
  local KV_API = "2024-11-01"
  local function vault_body(extra)
    local p = { tenantId = CUS_T, sku = { family = "A", name = "standard" }, enableRbacAuthorization = true,
                enablePurgeProtection = true }
    for k, v in pairs(extra or {}) do p[k] = v end
    return { location = "westeurope", properties = p }
  end

  it("RegisteringDns until the vault_dns delay passes; the data plane is an unknown host until then", function()
    local st, _, cus = world()
    st.knobs.delays.vault_dns = 30
    cus("PUT", RG, RG_API, { location = "westeurope" })
    local s, _, b = cus("PUT", KV .. "cmk-dns1", KV_API, vault_body())
    assert.are.equal(201, s)
    assert.are.equal("RegisteringDns", b.properties.provisioningState)
    local kv = require "cmkflow.emulator.keyvault"
    local function data_plane()
      return kv.handle(st, { method = "GET", path = "/keys", service_path = "/keys", query = "api-version=7.5",
        args = { ["api-version"] = "7.5" }, vault = "cmk-dns1", host = "cmk-dns1.vault.azure.net", port = 443,
        headers = { host = "cmk-dns1.vault.azure.net" }, body = "" })
    end
    assert.is_nil((data_plane()))                 -- no answer: the connection is closed
    st:advance(29)
    assert.are.equal("RegisteringDns", select(3, cus("GET", KV .. "cmk-dns1", KV_API)).properties.provisioningState)
    st:advance(1)
    assert.are.equal("Succeeded", select(3, cus("GET", KV .. "cmk-dns1", KV_API)).properties.provisioningState)
    assert.are.equal(401, (data_plane()))         -- resolves now: the challenge
  end)

  it("a vault_dns delay drawn from a profile (the realistic one) registers the vault's DNS too", function()
    local st, _, cus = world()
    st.knobs.delays.vault_dns = { median = 20, p95 = 40, cap = 60 }
    cus("PUT", RG, RG_API, { location = "westeurope" })
    local s, _, b = cus("PUT", KV .. "cmk-dns2", KV_API, vault_body())
    assert.are.equal(201, s)
    assert.are.equal("RegisteringDns", b.properties.provisioningState)
    st:advance(61) -- past the cap
    assert.are.equal("Succeeded", select(3, cus("GET", KV .. "cmk-dns2", KV_API)).properties.provisioningState)
  end)

  it("PUT replaces (firewall and tags left out are reset), PATCH merges (issue 10 point 2)", function()
    local _, _, cus = world()
    cus("PUT", RG, RG_API, { location = "westeurope", tags = { owner = "contoso" } })
    assert.are.equal(201, (cus("PUT", KV .. "cmk-put1", KV_API, vault_body())))
    local acl = { defaultAction = "Deny", bypass = "AzureServices", ipRules = { { value = "203.0.113.0/24" } } }
    local s, _, b = cus("PATCH", KV .. "cmk-put1", KV_API, { tags = { team = "sec" }, properties = { networkAcls = acl } })
    assert.are.equal(200, s)
    assert.are.equal("Deny", b.properties.networkAcls.defaultAction)
    assert.is_true(b.properties.enableRbacAuthorization) -- PATCH kept what it did not name
    s, _, b = cus("PUT", KV .. "cmk-put1", KV_API, vault_body())
    assert.are.equal(200, s)
    assert.is_nil(b.properties.networkAcls)              -- PUT reset the firewall
    assert.are.same({}, b.tags)
    assert.is_true(b.properties.enablePurgeProtection)   -- irreversible: kept
    assert.are.equal("https://cmk-put1.vault.azure.net/", b.properties.vaultUri)
    -- resource groups and identities: a PUT without tags drops them, a PATCH replaces only tags
    s, _, b = cus("PUT", RG, RG_API, { location = "westeurope" })
    assert.are.equal(200, s)
    assert.is_nil(b.tags)
    s, _, b = cus("PATCH", RG, RG_API, { tags = { owner = "contoso" } })
    assert.are.same({ owner = "contoso" }, b.tags)
    assert.are.equal("westeurope", b.location)
  end)

  it("PUT 201 with defaults and vaultUri, 200 on update, GET, list", function()
    local st, _, cus = world()
    cus("PUT", RG, RG_API, { location = "westeurope" })
    local s, _, b = cus("PUT", KV .. "cmk-vault1", KV_API, vault_body())
    assert.are.equal(201, s)
    assert.are.equal("https://cmk-vault1.vault.azure.net/", b.properties.vaultUri)
    assert.are.equal("Succeeded", b.properties.provisioningState) -- no vault_dns delay: at once
    assert.is_true(b.properties.enableSoftDelete)
    assert.are.equal(90, b.properties.softDeleteRetentionInDays)
    assert.are.equal(CUS_T, b.properties.tenantId)
    assert.is_true(st.resources[(KV .. "cmk-vault1"):lower()].body.properties.enablePurgeProtection)
    s, _, b = cus("PUT", KV .. "cmk-vault1", KV_API, vault_body { enableRbacAuthorization = false })
    assert.are.equal(200, s)
    assert.is_false(b.properties.enableRbacAuthorization)
    s, _, b = cus("GET", KV .. "cmk-vault1", "2022-07-01")
    assert.are.equal(200, s)
    assert.are.equal("cmk-vault1", b.name)
    s, _, b = cus("GET", RG .. "/providers/Microsoft.KeyVault/vaults", KV_API)
    assert.are.equal(1, #b.value)
    -- api-version 2026-02-01 defaults new vaults to RBAC; older ones to access policies
    local p = vault_body()
    p.properties.enableRbacAuthorization = nil
    _, _, b = cus("PUT", KV .. "cmk-vault2", "2026-02-01", p)
    assert.is_true(b.properties.enableRbacAuthorization)
    _, _, b = cus("PUT", KV .. "cmk-vault3", "2023-07-01", p)
    assert.is_false(b.properties.enableRbacAuthorization)
    s, _, b = cus("GET", KV .. "missing1", KV_API)
    assert.are.equal(404, s)
    assert.are.equal("ResourceNotFound", b.error.code)
  end)

  it("name rules, irreversible settings, retention bounds, tenant checks", function()
    local _, _, cus = world()
    cus("PUT", RG, RG_API, { location = "westeurope" })
    for _, bad in ipairs { "ab", "1vault", "vault-", "va--ult", ("a"):rep(25), "vault_1" } do
      local s, _, b = cus("PUT", KV .. bad, KV_API, vault_body())
      assert.are.equal(400, s)
      assert.are.equal("VaultNameNotValid", b.error.code)
      assert.are.equal(("The vault name '%s' is invalid. A vault's name must be between 3-24 alphanumeric characters. "
        .. "The name must begin with a letter, end with a letter or digit, and not contain consecutive hyphens. Follow "
        .. "this link for more information: https://go.microsoft.com/fwlink/?linkid=2147742"):format(bad), b.error.message)
    end
    assert.are.equal(400, (cus("PUT", KV .. "v-ret", KV_API, vault_body { softDeleteRetentionInDays = 6 })))
    assert.are.equal(400, (cus("PUT", KV .. "v-ret", KV_API, vault_body { softDeleteRetentionInDays = 91 })))
    assert.are.equal(400, (cus("PUT", KV .. "v-ret", KV_API, vault_body { tenantId = ISV_T })))
    assert.are.equal(400, (cus("PUT", KV .. "v-ret", KV_API, vault_body { tenantId = json.null and nil, sku = nil,
      accessPolicies = { { tenantId = ISV_T, objectId = CUS_T, permissions = { keys = { "get" } } } } })))
    local nt = vault_body()
    nt.properties.tenantId = nil
    assert.are.equal(400, (cus("PUT", KV .. "v-ret", KV_API, nt)))
    assert.are.equal(201, (cus("PUT", KV .. "v-ret", KV_API, vault_body { softDeleteRetentionInDays = 7 })))
    local s, _, b = cus("PATCH", KV .. "v-ret", KV_API, { properties = { enablePurgeProtection = false } })
    assert.are.equal(400, s)
    assert.matches("irreversible", b.error.message)
    s = cus("PATCH", KV .. "v-ret", KV_API, { properties = { enableSoftDelete = false } })
    assert.are.equal(400, s)
    s, _, b = cus("PATCH", KV .. "v-ret", KV_API, { properties = { enableRbacAuthorization = false } })
    assert.are.equal(200, s)
    assert.is_false(b.properties.enableRbacAuthorization)
    assert.is_true(b.properties.enablePurgeProtection)
  end)

  it("names are global including soft-deleted vaults; purge refused under purge protection", function()
    local st, _, cus = world()
    cus("PUT", RG, RG_API, { location = "westeurope" })
    cus("PUT", "/subscriptions/" .. CUS_S .. "/resourceGroups/rg3", RG_API, { location = "westeurope" })
    assert.are.equal(201, (cus("PUT", KV .. "shared-name", KV_API, vault_body())))
    local s, _, b = cus("PUT", "/subscriptions/" .. CUS_S .. "/resourceGroups/rg3/providers/Microsoft.KeyVault/vaults/"
      .. "Shared-Name", KV_API, vault_body())
    assert.are.equal(409, s)
    assert.are.equal("VaultAlreadyExists", b.error.code)
    assert.matches("^The vault name 'Shared%-Name' is already in use%.", b.error.message)
    assert.are.equal(200, (cus("DELETE", KV .. "shared-name", KV_API)))
    assert.are.equal(404, (cus("GET", KV .. "shared-name", KV_API)))
    assert.is_truthy(st.deleted_vaults["shared-name"])
    s, _, b = cus("PUT", KV .. "shared-name", KV_API, vault_body())
    assert.are.equal(409, s)
    assert.are.equal("VaultAlreadyExists", b.error.code)
    s, _, b = cus("GET", "/subscriptions/" .. CUS_S .. "/providers/Microsoft.KeyVault/deletedVaults", KV_API)
    assert.are.equal(200, s)
    assert.are.equal("shared-name", b.value[1].name)
    local purge = "/subscriptions/" .. CUS_S .. "/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/"
      .. "shared-name/purge"
    s = cus("POST", purge, KV_API)
    assert.are.equal(409, s)
    -- recover
    local r = vault_body { createMode = "recover" }
    s, _, b = cus("PUT", KV .. "shared-name", KV_API, r)
    assert.are.equal(200, s)
    assert.are.equal("shared-name", b.name)
    -- without purge protection the purge goes through and frees the name
    assert.are.equal(201, (cus("PUT", KV .. "no-pp", KV_API, vault_body { enablePurgeProtection = false })))
    cus("DELETE", KV .. "no-pp", KV_API)
    s = cus("POST", "/subscriptions/" .. CUS_S .. "/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/"
      .. "no-pp/purge", KV_API)
    assert.are.equal(200, s)
    assert.are.equal(201, (cus("PUT", KV .. "no-pp", KV_API, vault_body())))
  end)
end)

describe("emulated ARM: storage accounts", function()
  local RG = "/subscriptions/" .. ISV_S .. "/resourceGroups/rg1"
  local SA = RG .. "/providers/Microsoft.Storage/storageAccounts/"
  local MI = RG .. "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami"
  local SA_API = "2025-01-01"

  local function cmk_body(uami, extra_uai)
    local uais = { [uami] = {} }
    if extra_uai then uais[extra_uai] = {} end
    return { location = "westeurope", kind = "StorageV2", sku = { name = "Standard_LRS" },
      identity = { type = "UserAssigned", userAssignedIdentities = uais },
      properties = { encryption = { keySource = "Microsoft.Keyvault",
        keyvaultproperties = { keyvaulturi = "https://cmk-vault1.vault.azure.net", keyname = "cmkkey", keyversion = "" },
        identity = { userAssignedIdentity = uami, federatedIdentityClientId = "5e6f7a8b-0000-4000-8000-00000000aaaa" } } } }
  end

  -- The cross-tenant key check (storage_cmk.lua) has its own spec; here a stand-in records what
  -- ARM hands it and answers as told.
  local real_check, real_refresh, seen, answer
  before_each(function()
    real_check, real_refresh = storage_cmk.check, storage_cmk.refresh
    seen, answer = {}, { currentVersionedKeyIdentifier = "https://cmk-vault1.vault.azure.net/keys/cmkkey/abc",
                         lastKeyRotationTimestamp = "2024-01-01T00:00:00Z" }
    storage_cmk.check = function(_, c)
      seen[#seen + 1] = c
      if answer.fail then return nil, answer.fail end
      return answer
    end
    storage_cmk.refresh = function() return false end
  end)
  after_each(function() storage_cmk.check, storage_cmk.refresh = real_check, real_refresh end)

  local function setup()
    local st, isv = world()
    isv("PUT", RG, RG_API, { location = "westeurope" })
    local _, _, ident = isv("PUT", MI, MI_API, { location = "westeurope" })
    return st, isv, ident
  end

  it("create is a long-running operation: 202 + Location + Retry-After, invisible until polled", function()
    local _, isv, ident = setup()
    local s, h = isv("PUT", SA .. "cmkacct1", SA_API, cmk_body(MI))
    assert.are.equal(202, s)
    assert.are.equal("1", h["retry-after"])
    local prefix = "https://management.azure.com/subscriptions/" .. ISV_S
      .. "/providers/Microsoft.Storage/locations/westeurope/asyncoperations/"
    assert.are.equal(prefix, h.location:sub(1, #prefix))
    assert.matches("api%-version=2025%-01%-01", h.location)
    assert.are.equal(404, (isv("GET", SA .. "cmkacct1", SA_API)))
    local s2, _, b2 = isv("GET", SA, SA_API)
    assert.are.equal(200, s2)
    assert.are.equal(0, #b2.value)
    local path = h.location:match("^https://[^/]+(/[^?]+)")
    local ps, _, pb = isv("GET", path, SA_API)
    assert.are.equal(200, ps)
    assert.are.equal("cmkacct1", pb.name)
    assert.are.equal("Succeeded", pb.properties.provisioningState)
    local enc = pb.properties.encryption
    assert.are.equal("Microsoft.Keyvault", enc.keySource)
    assert.are.equal("cmkkey", enc.keyvaultproperties.keyname)
    assert.are.equal(MI, enc.identity.userAssignedIdentity)
    assert.are.equal("https://cmk-vault1.vault.azure.net/keys/cmkkey/abc", enc.keyvaultproperties.currentVersionedKeyIdentifier)
    assert.are.equal("2024-01-01T00:00:00Z", enc.keyvaultproperties.lastKeyRotationTimestamp)
    assert.are.equal(1, #seen)
    assert.are.equal("5e6f7a8b-0000-4000-8000-00000000aaaa", enc.identity.federatedIdentityClientId)
    assert.are.equal(ident.properties.principalId, pb.identity.userAssignedIdentities[MI].principalId)
    assert.are.equal(ident.properties.clientId, pb.identity.userAssignedIdentities[MI].clientId)
    local gs, _, gb = isv("GET", SA .. "cmkacct1", SA_API)
    assert.are.equal(200, gs)
    assert.are.equal(pb.id, gb.id)
    -- identical PUT of the existing account: 200 at once
    s = isv("PUT", SA .. "cmkacct1", SA_API, cmk_body(MI))
    assert.are.equal(200, s)
    -- PATCH is synchronous
    s, _, b2 = isv("PATCH", SA .. "cmkacct1", SA_API, { properties = { encryption = { keySource = "Microsoft.Storage" } } })
    assert.are.equal(200, s)
    assert.are.equal("Microsoft.Storage", b2.properties.encryption.keySource)
    assert.are.equal(1, #select(3, isv("GET", "/subscriptions/" .. ISV_S .. "/providers/Microsoft.Storage/storageAccounts",
      SA_API)).value)
    assert.are.equal(200, (isv("DELETE", SA .. "cmkacct1", SA_API)))
    assert.are.equal(204, (isv("DELETE", SA .. "cmkacct1", SA_API)))
  end)

  it("with storage throttling on: the accounts-per-region quota (issue 10 point 6)", function()
    local st, isv = world()
    st.knobs.throttling.storage = { accounts_per_region = 1 }
    isv("PUT", RG, RG_API, { location = "westeurope" })
    local body = { location = "westeurope", kind = "StorageV2", sku = { name = "Standard_LRS" } }
    assert.are.equal(202, (isv("PUT", SA .. "stquota1", SA_API, body)))
    local s, _, b = isv("PUT", SA .. "stquota2", SA_API, body)
    assert.are.equal(409, s)
    assert.are.equal("SubscriptionQuotaExceeded", b.error.code)
    body.location = "northeurope"
    assert.are.equal(202, (isv("PUT", SA .. "stquota3", SA_API, body)))  -- another region
  end)

  it("name invalid, name taken globally, checkNameAvailability", function()
    local _, isv = setup()
    local s, _, b = isv("PUT", SA .. "Bad-Name", SA_API, cmk_body(MI))
    assert.are.equal(400, s)
    assert.are.equal("AccountNameInvalid", b.error.code)
    assert.are.equal("Bad-Name is not a valid storage account name. Storage account name must be between 3 and 24 "
      .. "characters in length and use numbers and lower-case letters only.", b.error.message)
    assert.are.equal(202, (isv("PUT", SA .. "taken1", SA_API, cmk_body(MI))))
    isv("PUT", "/subscriptions/" .. ISV_S .. "/resourceGroups/other", RG_API, { location = "westeurope" })
    s, _, b = isv("PUT", "/subscriptions/" .. ISV_S .. "/resourceGroups/other/providers/Microsoft.Storage/storageAccounts/"
      .. "taken1", SA_API, { location = "westeurope", kind = "StorageV2", sku = { name = "Standard_LRS" } })
    assert.are.equal(409, s)
    assert.are.equal("StorageAccountAlreadyTaken", b.error.code)
    assert.are.equal("The storage account named taken1 is already taken.", b.error.message)
    local cna = "/subscriptions/" .. ISV_S .. "/providers/Microsoft.Storage/checkNameAvailability"
    s, _, b = isv("POST", cna, SA_API, { name = "taken1", type = "Microsoft.Storage/storageAccounts" })
    assert.are.equal(200, s)
    assert.is_false(b.nameAvailable)
    assert.are.equal("AlreadyExists", b.reason)
    _, _, b = isv("POST", cna, SA_API, { name = "free1", type = "Microsoft.Storage/storageAccounts" })
    assert.is_true(b.nameAvailable)
    _, _, b = isv("POST", cna, SA_API, { name = "X", type = "Microsoft.Storage/storageAccounts" })
    assert.are.equal("AccountNameInvalid", b.reason)
  end)

  it("request-local CMK validations", function()
    local _, isv = setup()
    local body = cmk_body(MI)
    body.properties.encryption.keyvaultproperties = nil
    local s, _, b = isv("PUT", SA .. "acct2", SA_API, body)
    assert.are.equal(400, s)
    assert.are.equal("MissingKeyvaultProperties", b.error.code)
    assert.are.equal("The encryption keyvault properties are missing from the request.", b.error.message)
    body = cmk_body(MI)
    body.properties.encryption.identity = nil
    s, _, b = isv("PUT", SA .. "acct2", SA_API, body)
    assert.are.equal(400, s)
    assert.matches("^Missing pre%-requisites to enable EncryptionAtRest/Customer Managed Key", b.error.message)
    isv("PUT", MI .. "2", MI_API, { location = "westeurope" })
    body = cmk_body(MI .. "2")
    body.properties.encryption.identity.userAssignedIdentity = MI
    s, _, b = isv("PUT", SA .. "acct2", SA_API, body)
    assert.are.equal(400, s)
    assert.are.equal("InvalidValuesForRequestParameters", b.error.code)
    assert.are.equal("Values for request parameters are invalid: properties.encryption.identity.", b.error.message)
    s, _, b = isv("PUT", SA .. "acct2", SA_API, cmk_body(MI, MI .. "2"))
    assert.are.equal(400, s)
    assert.are.equal("Only 1 User Assigned identity is permitted here.", b.error.message)
    assert.are.equal(404, (isv("GET", SA .. "acct2", SA_API)))
  end)
end)

describe("emulated ARM: storage accounts and the key check", function()
  local RG = "/subscriptions/" .. ISV_S .. "/resourceGroups/rg1"
  local SA = RG .. "/providers/Microsoft.Storage/storageAccounts/"
  local MI = RG .. "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami"
  local real_check, real_refresh
  before_each(function() real_check, real_refresh = storage_cmk.check, storage_cmk.refresh end)
  after_each(function() storage_cmk.check, storage_cmk.refresh = real_check, real_refresh end)

  it("passes the ISV tenant, account body and id to storage_cmk.check and surfaces its error", function()
    local seen
    storage_cmk.check = function(_, c)
      seen = c
      return nil, { status = 400, code = "KeyVaultPolicyError", message = "Keyvault policy recoverable is not set" }
    end
    storage_cmk.refresh = function() return false end
    local st, isv = world()
    isv("PUT", RG, RG_API, { location = "westeurope" })
    isv("PUT", MI, MI_API, { location = "westeurope" })
    local body = { location = "westeurope", kind = "StorageV2", sku = { name = "Standard_LRS" },
      identity = { type = "UserAssigned", userAssignedIdentities = { [MI] = {} } },
      properties = { encryption = { keySource = "Microsoft.Keyvault",
        keyvaultproperties = { keyvaulturi = "https://v.vault.azure.net", keyname = "k" },
        identity = { userAssignedIdentity = MI, federatedIdentityClientId = "5e6f7a8b-0000-4000-8000-00000000aaaa" } } } }
    local s, _, b = isv("PUT", SA .. "acct3", "2022-09-01", body)
    assert.are.equal(400, s)
    assert.are.equal("KeyVaultPolicyError", b.error.code)
    assert.are.equal("Keyvault policy recoverable is not set", b.error.message)
    assert.are.equal(st.tenants[ISV_T], seen.tenant)
    assert.are.equal(SA .. "acct3", seen.resource_id)
    assert.are.equal("k", seen.account.properties.encryption.keyvaultproperties.keyname)
    assert.are.equal(404, (isv("GET", SA .. "acct3", "2022-09-01")))
  end)
end)

describe("emulated ARM over HTTPS through cmkflow.azure.arm", function()
  local emu
  setup(function() emu = require("support.emulator").start { knobs = false } end) -- the LRO is under test
  teardown(function() if emu then emu:stop() end end)

  it("resource group, identity, storage LRO; customer token refused on the ISV subscription", function()
    local isv = emu:context("isv")
    local rg = "/subscriptions/{subscription}/resourceGroups/rg-http"
    local b, err = isv.arm:put(rg, { location = "westeurope" }, { api_version = RG_API })
    assert.is_nil(err)
    assert.are.equal("rg-http", b.name)
    assert.is_true(isv.arm:exists(rg, { api_version = RG_API }))
    local ident = assert(isv.arm:put(rg .. "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami-http",
      { location = "westeurope" }, { api_version = MI_API }))
    assert.is_true(core.crypto.is_guid(ident.properties.principalId))
    local resp = assert(isv.arm:request("PUT", rg .. "/providers/Microsoft.Storage/storageAccounts/httpacct1",
      { api_version = "2022-09-01", body = { location = "westeurope", kind = "StorageV2", sku = { name = "Standard_LRS" } } }))
    assert.are.equal(202, resp.status)
    local location = resp.headers.location or resp.headers.Location
    assert.are.equal(emu.cloud.arm:gsub("/$", ""), location:match("^(https://[^/]+)"))
    local got = isv.arm:get(rg .. "/providers/Microsoft.Storage/storageAccounts/httpacct1", { api_version = "2022-09-01" })
    assert.is_nil(got)
    local final = assert(isv.arm:request("GET", location, {}))
    assert.are.equal(200, final.status)
    assert.are.equal("httpacct1", final.json.name)
    local list = assert(isv.arm:list(rg .. "/providers/Microsoft.Storage/storageAccounts", { api_version = "2022-09-01" }))
    assert.are.equal(1, #list)
    local subs = assert(isv.arm:list("/subscriptions", { api_version = "2019-11-01" }))
    assert.are.equal(ISV_S, subs[1].subscriptionId)
    local cus = emu:context("customer")
    local r2 = assert(cus.arm:request("GET", "/subscriptions/" .. ISV_S .. "/resourceGroups/rg-http", { api_version = RG_API }))
    assert.are.equal(401, r2.status)
    assert.are.equal("InvalidAuthenticationTokenTenant", r2.json.error.code)
  end)
end)
