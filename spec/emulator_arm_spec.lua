-- The emulated ARM (issue 3 point 5): authentication, api-version, RBAC, resource groups,
-- managed identities, key vaults, role assignments and storage accounts. Most cases call
-- arm.handle in-process on a state built from the demo seed (tokens issued with the tenants'
-- keys); the last block goes over HTTPS through our own ARM client.
local core = require "cmkflow.core"
local json = core.json
local state_mod = require "cmkflow.emulator.state"
local tokens = require "cmkflow.emulator.tokens"
local arm = require "cmkflow.emulator.arm"
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
    assert.matches("for type 'userAssignedIdentities'. The supported api-versions are '2018-11-30, ", b.error.message, 1, true)
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
