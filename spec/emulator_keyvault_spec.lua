-- The emulated Key Vault data plane: the 401 challenge, AKV10022/AKV10032, the RBAC and the
-- access-policy models, keys create/get/versions/update/rotate/delete/recover/purge, wrapKey and
-- unwrapKey with real RSA-OAEP, the ARM keys API; in-process (handle(st, req)) and over HTTPS
-- through cmkflow.azure.keyvault once the ARM provider can create vaults.
local core = require "cmkflow.core"
local json = core.json
local emulator = require "cmkflow.emulator"
local kv = require "cmkflow.emulator.keyvault"
local arm_keys = require "cmkflow.emulator.keyvault_arm_keys"
local tokens = require "cmkflow.emulator.tokens"
local rbac = require "cmkflow.emulator.rbac"

local CUSTOMER_ADMIN = "2b3c4d5e-0000-4000-8000-00000000c0d1"
local ISV_DEPLOYER = "5e6f7a8b-0000-4000-8000-00000000a0d1"

-- A state with vaults added the way the ARM provider records them.
local function world()
  local st = emulator.new_state {}
  local cust, isv = st:tenant("customer"), st:tenant("isv")
  local sub = next(cust.subscriptions)
  local function add_vault(name, properties)
    local id = "/subscriptions/" .. sub .. "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/" .. name
    local p = { tenantId = cust.id, vaultUri = "https://" .. name .. ".vault.azure.net/", enableSoftDelete = true,
      softDeleteRetentionInDays = 90, enablePurgeProtection = true, enableRbacAuthorization = true,
      sku = { family = "A", name = "standard" } }
    for k, v in pairs(properties or {}) do p[k] = v end
    local r = { id = id, type = "Microsoft.KeyVault/vaults", tenant = cust.id, subscription = sub,
      body = { id = id, name = name, type = "Microsoft.KeyVault/vaults", location = "westeurope", properties = p } }
    st.resources[id:lower()] = r
    return r
  end
  local admin = st:service_principal_by_appid(cust, CUSTOMER_ADMIN)
  local isv_sp = st:service_principal_by_appid(isv, ISV_DEPLOYER)
  local w = { st = st, cust = cust, isv = isv, sub = sub, admin = admin, add_vault = add_vault }
  function w.token(tenant, sp, claims)
    local c = { aud = "https://vault.azure.net", oid = sp and sp.id, appid = sp and sp.appId }
    for k, v in pairs(claims or {}) do c[k] = v end
    return (tokens.issue(st, tenant, c))
  end
  w.admin_token = w.token(cust, admin)
  -- req: method, path (with query), vault, body (table), token (false: none)
  function w.call(method, path, vault, body, token)
    local p, q = path:match("^([^?]*)%??(.*)$")
    local args = {}
    for k, v in q:gmatch("([^&=]+)=([^&]*)") do args[k] = v end
    local headers = { host = vault .. ".vault.azure.net" }
    if token ~= false then headers.authorization = "Bearer " .. (token or w.admin_token) end
    local status, h, b = kv.handle(st, { method = method, path = p, service_path = p, query = q, args = args,
      vault = vault, host = vault .. ".vault.azure.net", port = 443, headers = headers,
      body = body and (type(body) == "string" and body or json.encode(body)) or "" })
    return status, h, b ~= "" and json.decode(b) or nil
  end
  return w
end

local function b64(s) return core.crypto.b64url_encode(s) end

describe("emulated Key Vault: authentication", function()
  local w
  setup(function()
    w = world()
    w.add_vault("kvauth")
  end)

  it("answers a request without a token with 401 AKV10000 and the challenge naming the vault's tenant", function()
    local status, h, body = w.call("POST", "/keys/k1/create?api-version=7.5", "kvauth", nil, false)
    assert.equal(401, status)
    assert.equal("Unauthorized", body.error.code)
    assert.equal("AKV10000: Request is missing a Bearer or PoP token.", body.error.message)
    assert.equal('Bearer authorization="https://login.windows.net/' .. w.cust.id .. '", resource="https://vault.azure.net"',
      h["www-authenticate"])
    assert.equal("westeurope", h["x-ms-keyvault-region"])
    assert.truthy(h["x-ms-keyvault-service-version"])
    assert.truthy(h["x-ms-request-id"])
  end)

  it("on the single-origin layout names the emulator's Entra origin and https://vault.localhost:PORT", function()
    local status, h = kv.handle(w.st, { method = "GET", path = "/keys", service_path = "/keys", args = {},
      vault = "kvauth", host = "kvauth.vault.localhost", port = 8443, headers = { host = "kvauth.vault.localhost:8443" }, body = "" })
    assert.equal(401, status)
    assert.equal('Bearer authorization="https://127.0.0.1:8443/' .. w.cust.id .. '", resource="https://vault.localhost:8443"',
      h["www-authenticate"])
  end)

  it("refuses a token of another tenant with AKV10032 naming both issuers", function()
    local isv_token = w.token(w.isv, w.st:service_principal_by_appid(w.isv, ISV_DEPLOYER))
    local status, h, body = w.call("GET", "/keys?api-version=7.5", "kvauth", nil, isv_token)
    assert.equal(401, status)
    assert.equal("AKV10032: Invalid issuer. Expected one of https://sts.windows.net/" .. w.cust.id .. "/, " ..
      "https://sts.windows.net/f8cdef31-a31e-4b4a-93e4-5f571e91255a/, https://sts.windows.net/e2d54eb5-3869-4f70-8578-dee5fc7331f4/, " ..
      "https://sts.windows.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/, https://sts.windows.net/975f013f-7f24-47e8-a7d3-abc4752bf346/, " ..
      "found https://sts.windows.net/" .. w.isv.id .. "/.", body.error.message)
    assert.truthy(h["www-authenticate"]:find(w.cust.id, 1, true))
  end)

  it("refuses a token for another audience with AKV10022 and an expired token with 401", function()
    local arm_token = w.token(w.cust, w.admin, { aud = "https://management.azure.com/" })
    local status, _, body = w.call("GET", "/keys?api-version=7.5", "kvauth", nil, arm_token)
    assert.equal(401, status)
    assert.equal("AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://management.azure.com/.",
      body.error.message)
    local old = w.token(w.cust, w.admin)
    w.st:advance(3600)
    status, _, body = w.call("GET", "/keys?api-version=7.5", "kvauth", nil, old)
    w.st:advance(-3600)
    assert.equal(401, status)
    assert.equal("[TokenExpired] Error validating token: 'S2S12086'.", body.error.message)
  end)

  it("requires a 7.x api-version and answers 404 for an unknown vault", function()
    local status, _, body = w.call("GET", "/keys", "kvauth")
    assert.equal(400, status)
    assert.equal("BadParameter", body.error.code)
    status, _, body = w.call("GET", "/keys?api-version=2016-01-01", "kvauth")
    assert.equal(400, status)
    assert.equal("BadParameter", body.error.code)
    status, _, body = w.call("GET", "/keys?api-version=7.5", "nosuchvault")
    assert.equal(404, status)
    assert.equal("VaultNotFound", body.error.code)
  end)
end)

describe("emulated Key Vault: keys", function()
  local w, kid1
  setup(function()
    w = world()
    w.add_vault("kvkeys")
  end)

  it("creates an RSA key with a 32-hex version, real modulus and recoveryLevel Recoverable", function()
    local before = w.st:now()
    local status, _, body = w.call("POST", "/keys/cmk/create?api-version=7.5", "kvkeys",
      { kty = "RSA", key_size = 2048, key_ops = { "wrapKey", "unwrapKey" }, tags = { purpose = "cmk" } })
    assert.equal(200, status)
    kid1 = body.key.kid
    assert.truthy(kid1:match("^https://kvkeys%.vault%.azure%.net/keys/cmk/%x+$"))
    assert.equal(32, #kid1:match("/(%x+)$"))
    assert.equal("RSA", body.key.kty)
    assert.equal("AQAB", body.key.e)
    assert.equal(256, #core.crypto.b64url_decode(body.key.n))
    assert.same({ "wrapKey", "unwrapKey" }, body.key.key_ops)
    assert.is_true(body.attributes.enabled)
    assert.equal("Recoverable", body.attributes.recoveryLevel)
    assert.equal(90, body.attributes.recoverableDays)
    assert.is_true(body.attributes.created >= before and body.attributes.created <= w.st:now())
    assert.equal("cmk", body.tags.purpose)
  end)

  it("rejects a bad kty and key size with 400 BadParameter", function()
    local status, _, body = w.call("POST", "/keys/bad/create?api-version=7.5", "kvkeys", { kty = "RSA", key_size = 1024 })
    assert.equal(400, status)
    assert.equal("BadParameter", body.error.code)
    status, _, body = w.call("POST", "/keys/bad/create?api-version=7.5", "kvkeys", { kty = "oct", key_size = 256 })
    assert.equal(400, status)
    assert.equal("BadParameter", body.error.code)
  end)

  it("gets the key (latest, by version, trailing slash) and lists versions after a rotation", function()
    local status, _, body = w.call("GET", "/keys/cmk/?api-version=7.5", "kvkeys")
    assert.equal(200, status)
    assert.equal(kid1, body.key.kid)
    status, _, body = w.call("POST", "/keys/cmk/rotate?api-version=7.5", "kvkeys")
    assert.equal(200, status)
    local kid2 = body.key.kid
    assert.are_not.equal(kid1, kid2)
    status, _, body = w.call("GET", "/keys/CMK?api-version=7.5", "kvkeys")
    assert.equal(kid2, body.key.kid)
    status, _, body = w.call("GET", "/keys/cmk/" .. kid1:match("(%x+)$") .. "?api-version=7.5", "kvkeys")
    assert.equal(kid1, body.key.kid)
    status, _, body = w.call("GET", "/keys/cmk/versions?api-version=7.5&maxresults=1", "kvkeys")
    assert.equal(200, status)
    assert.equal(1, #body.value)
    assert.equal(kid1, body.value[1].kid)
    local skip = body.nextLink:match("%$skiptoken=(%d+)")
    assert.equal("1", skip)
    status, _, body = w.call("GET", "/keys/cmk/versions?api-version=7.5&maxresults=1&$skiptoken=1", "kvkeys")
    assert.equal(kid2, body.value[1].kid)
    assert.equal(json.null, body.nextLink)
    status, _, body = w.call("GET", "/keys?api-version=7.5", "kvkeys")
    assert.equal(1, #body.value)
    assert.equal("https://kvkeys.vault.azure.net/keys/cmk", body.value[1].kid)
  end)

  it("answers 404 KeyNotFound for a missing key", function()
    local status, _, body = w.call("GET", "/keys/nope?api-version=7.5", "kvkeys")
    assert.equal(404, status)
    assert.equal("KeyNotFound", body.error.code)
    assert.truthy(body.error.message:find("A key with (name/id) nope was not found in this key vault.", 1, true))
  end)

  it("wraps and unwraps with real RSA-OAEP (unwrap(wrap(x)) == x) and refuses oversized payloads", function()
    local secret = core.crypto.random_bytes(32)
    for _, alg in ipairs { "RSA-OAEP", "RSA-OAEP-256" } do
      local status, _, wrapped = w.call("POST", "/keys/cmk//wrapkey?api-version=7.5", "kvkeys", { alg = alg, value = b64(secret) })
      assert.equal(200, status)
      assert.are_not.equal(b64(secret), wrapped.value)
      assert.equal(256, #core.crypto.b64url_decode(wrapped.value))
      local status2, _, plain = w.call("POST", "/keys/cmk/unwrapkey?api-version=7.5", "kvkeys", { alg = alg, value = wrapped.value })
      assert.equal(200, status2)
      assert.equal(b64(secret), plain.value)
      assert.equal(wrapped.kid, plain.kid)
    end
    local status, _, body = w.call("POST", "/keys/cmk/wrapkey?api-version=7.5", "kvkeys",
      { alg = "RSA-OAEP-256", value = b64(string.rep("x", 191)) })
    assert.equal(400, status)
    assert.equal("BadParameter", body.error.code)
    -- a ciphertext of another version does not unwrap under this one
    local _, _, wrapped = w.call("POST", "/keys/cmk/wrapkey?api-version=7.5", "kvkeys", { alg = "RSA-OAEP", value = b64("x") })
    local v1 = kid1:match("(%x+)$")
    status = w.call("POST", "/keys/cmk/" .. v1 .. "/unwrapkey?api-version=7.5", "kvkeys", { alg = "RSA-OAEP", value = wrapped.value })
    assert.equal(400, status)
  end)

  it("disables a version: get and wrapKey answer 403 KeyDisabled; enabling restores", function()
    local status, _, body = w.call("PATCH", "/keys/cmk/?api-version=7.5", "kvkeys", { attributes = { enabled = false }, tags = { a = "b" } })
    assert.equal(200, status)
    assert.is_false(body.attributes.enabled)
    assert.equal("b", body.tags.a)
    status, _, body = w.call("POST", "/keys/cmk/wrapkey?api-version=7.5", "kvkeys", { alg = "RSA-OAEP", value = b64("x") })
    assert.equal(403, status)
    assert.equal("Forbidden", body.error.code)
    assert.equal("KeyDisabled", body.error.innererror.code)
    assert.equal("Operation wrapKey is not allowed on a disabled key.", body.error.message)
    status, _, body = w.call("GET", "/keys/cmk?api-version=7.5", "kvkeys")
    assert.equal(403, status)
    assert.equal("Operation get is not allowed on a disabled key.", body.error.message)
    status = w.call("PATCH", "/keys/cmk?api-version=7.5", "kvkeys", { attributes = { enabled = true } })
    assert.equal(200, status)
    status = w.call("POST", "/keys/cmk/wrapkey?api-version=7.5", "kvkeys", { alg = "RSA-OAEP", value = b64("x") })
    assert.equal(200, status)
  end)

  it("honours nbf and exp: wrapKey refused outside the window (403), unwrapKey still allowed", function()
    local _, _, wrapped = w.call("POST", "/keys/cmk/wrapkey?api-version=7.5", "kvkeys", { alg = "RSA-OAEP", value = b64("x") })
    local now = w.st:now()
    for _, case in ipairs { { { exp = now - 1 }, "KeyExpired", "an expired key." },
                            { { nbf = now + 3600 }, "KeyNotYetValid", "a key that is not yet valid." } } do
      local status = w.call("PATCH", "/keys/cmk?api-version=7.5", "kvkeys", { attributes = case[1] })
      assert.equal(200, status)
      local s2, _, body = w.call("POST", "/keys/cmk/wrapkey?api-version=7.5", "kvkeys", { alg = "RSA-OAEP", value = b64("x") })
      assert.equal(403, s2)
      assert.equal(case[2], body.error.innererror.code)
      assert.equal("Operation wrapKey is not allowed on " .. case[3], body.error.message)
      local s3, _, plain = w.call("POST", "/keys/cmk/unwrapkey?api-version=7.5", "kvkeys", { alg = "RSA-OAEP", value = wrapped.value })
      assert.equal(200, s3)
      assert.equal(b64("x"), plain.value)
      w.call("PATCH", "/keys/cmk?api-version=7.5", "kvkeys", { attributes = { exp = now + 86400 * 365, nbf = now - 60 } })
    end
    local status = w.call("POST", "/keys/cmk/wrapkey?api-version=7.5", "kvkeys", { alg = "RSA-OAEP", value = b64("x") })
    assert.equal(200, status)
  end)

  it("soft-deletes, refuses the name while deleted, recovers; purge is refused under purge protection", function()
    local status, _, body = w.call("DELETE", "/keys/cmk?api-version=7.5", "kvkeys")
    assert.equal(200, status)
    assert.equal("https://kvkeys.vault.azure.net/deletedkeys/cmk", body.recoveryId)
    assert.equal(body.deletedDate + 90 * 86400, body.scheduledPurgeDate)
    assert.is_true(body.deletedDate <= w.st:now())
    status, _, body = w.call("GET", "/keys/cmk?api-version=7.5", "kvkeys")
    assert.equal(404, status)
    status, _, body = w.call("POST", "/keys/cmk/create?api-version=7.5", "kvkeys", { kty = "RSA" })
    assert.equal(409, status)
    assert.equal("ObjectIsDeletedButRecoverable", body.error.innererror.code)
    assert.equal("Key cmk is currently in a deleted but recoverable state, and its name cannot be reused; in this state, " ..
      "the key can only be recovered or purged.", body.error.message)
    status, _, body = w.call("GET", "/deletedkeys/cmk?api-version=7.5", "kvkeys")
    assert.equal(200, status)
    assert.truthy(body.key.kid:find("/keys/cmk/", 1, true))
    status = w.call("DELETE", "/deletedkeys/cmk?api-version=7.5", "kvkeys")
    assert.equal(403, status)
    status, _, body = w.call("POST", "/deletedkeys/cmk/recover?api-version=7.5", "kvkeys")
    assert.equal(200, status)
    status = w.call("GET", "/keys/cmk?api-version=7.5", "kvkeys")
    assert.equal(200, status)
    local view = w.st:vault_keys_view()
    assert.equal("cmk", view.kvkeys[1].name)
    assert.equal(2, #view.kvkeys[1].versions)
    assert.is_false(view.kvkeys[1].deleted)
    assert.is_nil(view.kvkeys[1].versions[1].key)
  end)

  it("purges a deleted key in a vault without purge protection (recoveryLevel +Purgeable)", function()
    w.add_vault("kvloose", { enablePurgeProtection = false })
    local status, _, body = w.call("POST", "/keys/k/create?api-version=7.5", "kvloose", { kty = "RSA" })
    assert.equal(200, status)
    assert.equal("Recoverable+Purgeable", body.attributes.recoveryLevel)
    assert.equal(200, (w.call("DELETE", "/keys/k?api-version=7.5", "kvloose")))
    assert.equal(204, (w.call("DELETE", "/deletedkeys/k?api-version=7.5", "kvloose")))
    assert.equal(404, (w.call("GET", "/deletedkeys/k?api-version=7.5", "kvloose")))
    assert.equal(200, (w.call("POST", "/keys/k/create?api-version=7.5", "kvloose", { kty = "RSA" })))
  end)
end)

describe("emulated Key Vault: authorization models", function()
  local w, reader, reader_token
  setup(function()
    w = world()
    w.add_vault("kvrbac")
    w.add_vault("kvpol", { enableRbacAuthorization = false, accessPolicies = {} })
    reader = w.st:add_service_principal(w.cust, { appId = "11111111-2222-4333-8444-555555555555", displayName = "reader" })
    reader_token = w.token(w.cust, reader)
    assert.equal(200, (w.call("POST", "/keys/k/create?api-version=7.5", "kvrbac", { kty = "RSA" })))
  end)

  it("RBAC: refuses a principal without a role with ForbiddenByRbac, then allows after an assignment", function()
    local status, _, body = w.call("GET", "/keys/k?api-version=7.5", "kvrbac", nil, reader_token)
    assert.equal(403, status)
    assert.equal("Forbidden", body.error.code)
    assert.equal("ForbiddenByRbac", body.error.innererror.code)
    assert.truthy(body.error.message:find("Caller: appid=11111111-2222-4333-8444-555555555555;oid=" .. reader.id, 1, true))
    assert.truthy(body.error.message:find("Action: 'Microsoft.KeyVault/vaults/keys/read'", 1, true))
    assert.truthy(body.error.message:find("Resource: '/subscriptions/" .. w.sub .. "/resourcegroups/rg/providers/" ..
      "microsoft.keyvault/vaults/kvrbac/keys/k'", 1, true))
    rbac.add_assignment(w.st, w.cust, { role = "Key Vault Crypto Service Encryption User",
      scope = "/subscriptions/" .. w.sub .. "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kvrbac/keys/k",
      principal_id = reader.id })
    assert.equal(200, (w.call("GET", "/keys/k?api-version=7.5", "kvrbac", nil, reader_token)))
    assert.equal(200, (w.call("POST", "/keys/k/wrapkey?api-version=7.5", "kvrbac", { alg = "RSA-OAEP", value = b64("x") }, reader_token)))
    -- the role reads and wraps, it does not create or delete
    assert.equal(403, (w.call("POST", "/keys/k2/create?api-version=7.5", "kvrbac", { kty = "RSA" }, reader_token)))
    assert.equal(403, (w.call("DELETE", "/keys/k?api-version=7.5", "kvrbac", nil, reader_token)))
  end)

  it("access policies: the customer's Owner role is not enough; a policy with the permission is", function()
    local status, _, body = w.call("POST", "/keys/p/create?api-version=7.5", "kvpol", { kty = "RSA" })
    assert.equal(403, status)
    assert.equal("AccessDenied", body.error.innererror.code)
    assert.equal("The user, group or application 'appid=" .. CUSTOMER_ADMIN .. ";oid=" .. w.admin.id .. ";iss=https://sts.windows.net/" ..
      w.cust.id .. "/' does not have keys create permission on key vault 'kvpol;location=westeurope'. For help resolving " ..
      "this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287", body.error.message)
    local vault = w.st:vault("KVPOL")
    vault.body.properties.accessPolicies = { { tenantId = w.cust.id, objectId = w.admin.id, permissions = { keys = { "Create", "Get" } } } }
    assert.equal(200, (w.call("POST", "/keys/p/create?api-version=7.5", "kvpol", { kty = "RSA" })))
    assert.equal(200, (w.call("GET", "/keys/p?api-version=7.5", "kvpol")))
    status, _, body = w.call("POST", "/keys/p/wrapkey?api-version=7.5", "kvpol", { alg = "RSA-OAEP", value = b64("x") })
    assert.equal(403, status)
    assert.truthy(body.error.message:find("does not have keys wrapKey permission", 1, true))
    -- a policy entry of another tenant does not count
    vault.body.properties.accessPolicies[1].tenantId = w.isv.id
    assert.equal(403, (w.call("GET", "/keys/p?api-version=7.5", "kvpol")))
  end)
end)

describe("emulated Key Vault: ARM keys API", function()
  it("creates once (PUT is create-if-not-exist), gets, lists versions, shares the data-plane store", function()
    local w = world()
    local vault = w.add_vault("kvarm")
    local claims = { oid = w.admin.id, tid = w.cust.id }
    local function arm(method, suffix, body)
      local path = vault.id .. "/keys" .. suffix
      local s, _, b = arm_keys.handle(w.st, { method = method, path = path, service_path = path, headers = {},
        args = { ["api-version"] = "2024-11-01" }, body = body and json.encode(body) or "" }, { claims = claims })
      return s, json.decode(b)
    end
    local status, body = arm("PUT", "/armkey", { properties = { kty = "RSA", keySize = 3072, keyOps = { "wrapKey", "unwrapKey" } } })
    assert.equal(200, status)
    assert.equal("Microsoft.KeyVault/vaults/keys", body.type)
    assert.equal(vault.id .. "/keys/armkey", body.id)
    assert.equal(3072, body.properties.keySize)
    assert.equal("https://kvarm.vault.azure.net:443/keys/armkey", body.properties.keyUri)
    local uri = body.properties.keyUriWithVersion
    assert.truthy(uri:match("^https://kvarm%.vault%.azure%.net:443/keys/armkey/%x+$"))
    status, body = arm("PUT", "/armkey", { properties = { kty = "RSA", keySize = 4096 } })
    assert.equal(200, status)
    assert.equal(uri, body.properties.keyUriWithVersion)
    assert.equal(3072, body.properties.keySize)
    status, body = arm("GET", "/armkey/versions")
    assert.equal(200, status)
    assert.equal(1, #body.value)
    local _, _, dp = w.call("GET", "/keys/armkey?api-version=7.5", "kvarm")
    assert.equal(uri:gsub(":443", ""), dp.key.kid)
    status, body = arm("GET", "")
    assert.equal(1, #body.value)
    status, body = arm("GET", "/missing")
    assert.equal(404, status)
    claims.oid = "00000000-0000-4000-8000-000000000000"
    status, body = arm("PUT", "/other", { properties = { kty = "RSA" } })
    assert.equal(403, status)
    assert.equal("AuthorizationFailed", body.error.code)
  end)
end)

describe("emulated Key Vault over HTTPS (cmkflow.azure.keyvault)", function()
  local support = require "support.emulator"
  local emu, ctx, vault_uri

  setup(function()
    emu = support.start {}
    ctx = emu:context("customer")
    local rg = "/subscriptions/{subscription}/resourceGroups/kvspec"
    local ok = ctx.arm:put(rg, { location = "westeurope" }, { api_version = "2021-04-01" })
    if ok then
      local vault = ctx.arm:put(rg .. "/providers/Microsoft.KeyVault/vaults/kvspechttp", { location = "westeurope",
        properties = { tenantId = ctx.tenant or emu:principal("customer").id, sku = { family = "A", name = "standard" },
          enableRbacAuthorization = true, enablePurgeProtection = true } }, { api_version = "2024-11-01" })
      vault_uri = type(vault) == "table" and vault.properties and vault.properties.vaultUri
    end
  end)
  teardown(function() if emu then emu:stop() end end)

  it("runs the challenge, create, wrap/unwrap, disable and delete through the client", function()
    assert.is_string(vault_uri, "the ARM provider created no vault")
    local kvc = ctx.keyvault
    local key = assert(kvc:create_key(vault_uri, "httpkey", { key_size = 2048 }))
    assert.truthy(key.key.kid:find("/keys/httpkey/", 1, true))
    local c = kvc:challenge(vault_uri)
    assert.equal("3c9e1b7d-2a4f-4e6b-8c0d-9f8e7d6c5b4a", c.tenant)
    local wrapped = assert(kvc:wrap_key(vault_uri, "httpkey", nil, "RSA-OAEP-256", b64("account key")))
    local plain = assert(kvc:unwrap_key(vault_uri, "httpkey", nil, "RSA-OAEP-256", wrapped.value))
    assert.equal(b64("account key"), plain.value)
    assert(kvc:update_key(vault_uri, "httpkey", nil, { enabled = false }))
    local _, err = kvc:wrap_key(vault_uri, "httpkey", nil, "RSA-OAEP-256", b64("x"))
    assert.equal(403, err.status)
    local versions = assert(kvc:list_key_versions(vault_uri, "httpkey"))
    assert.equal(1, #versions)
    assert(kvc:delete_key(vault_uri, "httpkey"))
    local _, err2 = kvc:get_key(vault_uri, "httpkey")
    assert.equal(404, err2.status)
  end)
end)
