-- The emulated Key Vault data plane (keys only) and the ARM keys API that shares its key store.
--   handle(st, req) -> status, headers, body        data plane, req.vault = vault name (lower case)
--   arm_keys(st, req, ctx) -> status, headers, body  .../vaults/{v}/keys[/{name}[/versions[/{ver}]]]
-- Internal functions used by storage_cmk.lua (the Storage key check runs them directly, not over HTTP):
--   M.vault_tenant(vault), M.vault_base(vault), M.recovery_level(vault)
--   M.authorize(st, vault, claims, op, key_name) -> true | nil, status, code, message, inner
--   M.lookup(st, vault, name, version) -> rec, ver | nil, why ("missing" | "deleted" | "version")
--   M.kid(base, rec, ver), M.wrap(ver, alg, plaintext) -> ciphertext | nil, err
-- Keys live in st.vault_keys[vault] (see state.lua); private keys stay inside cmkflow.key userdata.
local core = require "cmkflow.core"
local respond = require "cmkflow.emulator.respond"
local rbac = require "cmkflow.emulator.rbac"
local tokens = require "cmkflow.emulator.tokens"

local crypto, json = core.crypto, core.json

-- RSA keys come from a stock generated on a background thread (core/keypool.c), so a 4096-bit
-- key create does not stall every other request on the emulator's single request thread.
local pool

local M = {}

function M.key_pool()
  pool = pool or core.keypool.new { [2048] = 4, [3072] = 4, [4096] = 2 }
  return pool
end

-- knobs.key_material = "pooled" (benchmarks only, a documented deviation): key versions reuse
-- POOLED_KEYS keys per size, round-robin, so 1,000 customers do not cost 1,000 RSA generations.
-- Versions then share key material (the same JWK n); their version ids still differ.
M.POOLED_KEYS = 4
local pooled = {} -- [bits] = {keys = {...}, next = 1}

local function key_material(st, bits)
  if (st.knobs and st.knobs.key_material) ~= "pooled" then return M.key_pool():take(bits) end
  local set = pooled[bits]
  if not set then
    set = { keys = {}, next = 1 }
    pooled[bits] = set
  end
  if #set.keys < M.POOLED_KEYS then
    local key = M.key_pool():take(bits)
    set.keys[#set.keys + 1] = key
    return key
  end
  local key = set.keys[set.next]
  set.next = set.next % #set.keys + 1
  return key
end

M.SERVICE_VERSION = "1.9.2005.1"
M.RESOURCE = "https://vault.azure.net"
local KEYS_PER_PAGE = 25

-- Microsoft first-party tenants that Key Vault also lists as accepted issuers in AKV10032.
local FIRST_PARTY_ISSUERS = {
  "https://sts.windows.net/f8cdef31-a31e-4b4a-93e4-5f571e91255a/",
  "https://sts.windows.net/e2d54eb5-3869-4f70-8578-dee5fc7331f4/",
  "https://sts.windows.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/",
  "https://sts.windows.net/975f013f-7f24-47e8-a7d3-abc4752bf346/",
}

-- op -> RBAC data action and access-policy key permission.
local OPS = {
  get = { "Microsoft.KeyVault/vaults/keys/read", "get" },
  list = { "Microsoft.KeyVault/vaults/keys/read", "list" },
  create = { "Microsoft.KeyVault/vaults/keys/create/action", "create" },
  update = { "Microsoft.KeyVault/vaults/keys/update/action", "update" },
  delete = { "Microsoft.KeyVault/vaults/keys/delete", "delete" },
  getdeleted = { "Microsoft.KeyVault/vaults/keys/read", "get" },
  recover = { "Microsoft.KeyVault/vaults/keys/recover/action", "recover" },
  purge = { "Microsoft.KeyVault/vaults/keys/purge/action", "purge" },
  rotate = { "Microsoft.KeyVault/vaults/keys/rotate/action", "rotate" },
  wrapKey = { "Microsoft.KeyVault/vaults/keys/wrap/action", "wrapKey" },
  unwrapKey = { "Microsoft.KeyVault/vaults/keys/unwrap/action", "unwrapKey" },
}
M.OPS = OPS

local KEY_OPS = { encrypt = true, decrypt = true, sign = true, verify = true, wrapKey = true, unwrapKey = true,
                  import = true, export = true }
local RSA_SIZES = { [2048] = true, [3072] = true, [4096] = true }
-- RSA-OAEP padding overhead per algorithm (bytes): max plaintext = modulus bytes - overhead.
local OAEP_OVERHEAD = { ["RSA-OAEP"] = 42, ["RSA-OAEP-256"] = 66 }

-- ---- vault facts ----------------------------------------------------------------------------

local function props(vault) return (vault.body or {}).properties or {} end

function M.vault_tenant(vault) return (props(vault).tenantId or vault.tenant or ""):lower() end

function M.vault_name(vault) return (vault.body and vault.body.name or vault.id:match("[^/]+$")):lower() end

function M.region(vault) return vault.body and vault.body.location or "westus" end

-- "https://{vault}.vault.azure.net" (the vault's vaultUri without trailing slash).
function M.vault_base(vault)
  local uri = props(vault).vaultUri
  if type(uri) == "string" and uri ~= "" then return (uri:gsub("/+$", "")) end
  return "https://" .. M.vault_name(vault) .. ".vault.azure.net"
end

function M.retention_days(vault) return tonumber(props(vault).softDeleteRetentionInDays) or 90 end

function M.purge_protected(vault) return props(vault).enablePurgeProtection == true end

function M.recovery_level(vault)
  local p = props(vault)
  if p.enableSoftDelete == false then return "Purgeable" end
  local base = M.retention_days(vault) == 90 and "Recoverable" or "CustomizedRecoverable"
  if M.purge_protected(vault) then return base end
  return base .. "+Purgeable"
end

-- ---- key store ------------------------------------------------------------------------------

local function store(st, vault)
  local name = M.vault_name(vault)
  st.vault_keys[name] = st.vault_keys[name] or {}
  return st.vault_keys[name]
end

-- Drops a soft-deleted key whose scheduled purge date has passed.
local function expire(st, keys, lname)
  local rec = keys[lname]
  if rec and rec.deleted and rec.deleted.scheduledPurgeDate <= st:now() then
    keys[lname] = nil
    return nil
  end
  return rec
end

-- The key record and version: latest when version is nil or "". Deleted keys are "deleted".
function M.lookup(st, vault, name, version)
  local keys = store(st, vault)
  local rec = expire(st, keys, (name or ""):lower())
  if not rec then return nil, "missing" end
  if rec.deleted then return nil, "deleted", rec end
  if version == nil or version == "" then return rec, rec.versions[#rec.versions] end
  version = version:lower()
  for _, v in ipairs(rec.versions) do
    if v.version == version then return rec, v end
  end
  return nil, "version", rec
end

function M.kid(base, rec, ver)
  local kid = base .. "/keys/" .. rec.name
  if ver then kid = kid .. "/" .. ver.version end
  return kid
end

local function attributes(vault, ver)
  return { enabled = ver.enabled, created = ver.created, updated = ver.updated, nbf = ver.nbf, exp = ver.exp,
           recoveryLevel = M.recovery_level(vault), recoverableDays = M.retention_days(vault),
           exportable = false }
end

local function tags_of(ver)
  if ver.tags == nil then return nil end
  return json.object(ver.tags)
end

-- The KeyBundle of a version (public material only).
function M.bundle(vault, base, rec, ver)
  local key = { kid = M.kid(base, rec, ver), kty = ver.kty, key_ops = json.array(ver.key_ops) }
  if ver.key then
    local jwk = ver.key:jwk()
    key.n, key.e = jwk.n, jwk.e
  end
  key.crv = ver.crv
  return { key = key, attributes = attributes(vault, ver), tags = tags_of(ver) }
end

local function deleted_bundle(vault, base, rec, ver)
  local b = M.bundle(vault, base, rec, ver)
  b.recoveryId = base .. "/deletedkeys/" .. rec.name
  b.deletedDate = rec.deleted.deletedDate
  b.scheduledPurgeDate = rec.deleted.scheduledPurgeDate
  return b
end

-- Wraps plaintext with a version's key. Returns ciphertext or nil, message.
function M.wrap(ver, alg, plaintext)
  if not ver.key then return nil, "Key and algorithm are not compatible." end
  local overhead = OAEP_OVERHEAD[alg]
  if not overhead then return nil, "Algorithm " .. tostring(alg) .. " is not supported by the emulator." end
  local max = ver.key:bits() // 8 - overhead
  if #plaintext > max then
    return nil, ("The value is too long: %s with a %d-bit key can wrap at most %d bytes, got %d."):format(
      alg, ver.key:bits(), max, #plaintext)
  end
  return ver.key:wrap(plaintext, alg)
end

function M.unwrap(ver, alg, ciphertext)
  if not ver.key then return nil, "Key and algorithm are not compatible." end
  if not OAEP_OVERHEAD[alg] then return nil, "Algorithm " .. tostring(alg) .. " is not supported by the emulator." end
  if #ciphertext ~= ver.key:bits() // 8 then
    return nil, "The value is not a ciphertext of this key (wrong length)."
  end
  local pt = ver.key:unwrap(ciphertext, alg)
  if not pt then return nil, "The value could not be unwrapped with this key and algorithm." end
  return pt
end

-- Creates a new version of a key (a new record when the name is new). fields: kty, key_size,
-- key_ops, enabled, nbf, exp, tags. Returns rec, ver. Generates RSA material (blocking).
function M.add_version(st, vault, name, fields)
  local keys = store(st, vault)
  local lname = name:lower()
  local rec = keys[lname]
  if not rec then
    rec = { name = name, versions = {} }
    keys[lname] = rec
  end
  local now = st:now()
  local ver = {
    version = st:id("key-version"):gsub("%-", ""), kty = fields.kty or "RSA", key_size = fields.key_size,
    crv = fields.crv, key_ops = fields.key_ops, enabled = fields.enabled ~= false, nbf = fields.nbf,
    exp = fields.exp, tags = fields.tags, created = now, updated = now,
  }
  if fields.material ~= false and (ver.kty == "RSA" or ver.kty == "RSA-HSM") then
    ver.key = key_material(st, ver.key_size)
  end
  rec.versions[#rec.versions + 1] = ver
  return rec, ver
end

-- ---- authentication and authorization ---------------------------------------------------------

-- The 401 challenge. On the single-origin layout ({vault}.vault.localhost:PORT) it names the
-- emulator's own Entra origin and https://vault.localhost:PORT, which Python's KeyClient requires
-- (the resource must be a parent domain of the vault host, port included).
local function challenge(vault, req)
  local host, port = req and req.host or "", req and math.tointeger(req.port)
  if host:match("^[%w%-]+%.vault%.localhost$") and port then
    local p = port == 443 and "" or (":" .. port)
    return ('Bearer authorization="https://127.0.0.1%s/%s", resource="https://vault.localhost%s"'):format(
      p, M.vault_tenant(vault), p)
  end
  return ('Bearer authorization="https://login.windows.net/%s", resource="%s"'):format(M.vault_tenant(vault), M.RESOURCE)
end

local function common_headers(vault, extra)
  local h = { ["x-ms-keyvault-region"] = M.region(vault), ["x-ms-keyvault-service-version"] = M.SERVICE_VERSION,
              ["x-ms-keyvault-network-info"] = "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;",
              expires = "-1", pragma = "no-cache" }
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

local function kv_error(req, vault, status, code, message, inner)
  local h = common_headers(vault)
  if status == 401 then h["www-authenticate"] = challenge(vault, req) end
  return respond.kv_error(req, status, code, message, inner, h)
end

local function ok(req, vault, status, value)
  return respond.json(req, status, value, common_headers(vault))
end

local function caller(claims)
  return ("appid=%s;oid=%s;iss=%s"):format(tostring(claims.appid or claims.azp), tostring(claims.oid),
    tokens.issuer_v1(tostring(claims.tid)))
end

-- May the token's principal do op on the key (or the vault when key_name is nil)?
-- Returns true, or nil, status, code, message, innercode (Key Vault's 403 texts).
function M.authorize(st, vault, claims, op, key_name)
  local o = assert(OPS[op], "unknown key operation")
  local p = props(vault)
  local oid = (claims.oid or ""):lower()
  if p.enableRbacAuthorization == true then
    local scope = vault.id .. (key_name and ("/keys/" .. key_name) or "")
    if rbac.check(st, vault.tenant or M.vault_tenant(vault), oid, scope, o[1], true) then return true end
    return nil, 403, "Forbidden", "Caller is not authorized to perform action on resource.\r\n" ..
      "If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n" ..
      "Caller: " .. caller(claims) .. "\r\nAction: '" .. o[1] .. "'\r\nResource: '" .. scope:lower() .. "'\r\n" ..
      "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\n" ..
      "Vault: " .. M.vault_name(vault) .. ";location=" .. M.region(vault) .. "\r\n", "ForbiddenByRbac"
  end
  local tid = M.vault_tenant(vault)
  for _, ap in ipairs(p.accessPolicies or {}) do
    if type(ap) == "table" and (ap.objectId or ""):lower() == oid and (ap.tenantId or ""):lower() == tid then
      local perms = ap.permissions and ap.permissions.keys or {}
      for _, perm in ipairs(perms) do
        local lp = tostring(perm):lower()
        if lp == o[2]:lower() or lp == "all" then return true end
      end
    end
  end
  return nil, 403, "Forbidden", ("The user, group or application '%s' does not have keys %s permission on key vault '%s;location=%s'. " ..
    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"):format(
      caller(claims), o[2], M.vault_name(vault), M.region(vault)), "AccessDenied"
end

-- Verifies the bearer token for this vault. Returns claims or the 401 response triple.
local function authenticate(st, req, vault)
  local claims, reason, message = tokens.verify(st, req, "kv")
  if claims and claims.tid:lower() ~= M.vault_tenant(vault) then reason = "tenant" end
  if not reason then return claims end
  if reason == "missing" then
    return nil, kv_error(req, vault, 401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
  end
  local token = (req.headers.authorization or ""):match("^[Bb]earer%s+(%S+)$")
  local _, payload = nil, nil
  if token then _, payload = core.jose.decode(token) end
  payload = type(payload) == "table" and payload or {}
  if reason == "audience" then
    return nil, kv_error(req, vault, 401, "Unauthorized",
      "AKV10022: Invalid audience. Expected " .. M.RESOURCE .. ", found: " .. tostring(payload.aud) .. ".")
  elseif reason == "tenant" or reason == "issuer" then
    local expected = { tokens.issuer_v1(M.vault_tenant(vault)) }
    for _, i in ipairs(FIRST_PARTY_ISSUERS) do expected[#expected + 1] = i end
    return nil, kv_error(req, vault, 401, "Unauthorized", "AKV10032: Invalid issuer. Expected one of " ..
      table.concat(expected, ", ") .. ", found " .. tostring(payload.iss) .. ".")
  elseif reason == "expired" then
    return nil, kv_error(req, vault, 401, "Unauthorized", "[TokenExpired] Error validating token: 'S2S12086'.")
  elseif reason == "signature" then
    return nil, kv_error(req, vault, 401, "Unauthorized", "AKV10046: Unable to resolve the key used for signature validation.")
  end
  return nil, kv_error(req, vault, 401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token. (" .. message .. ")")
end

-- ---- request helpers ------------------------------------------------------------------------

local function key_not_found(req, vault, name)
  return kv_error(req, vault, 404, "KeyNotFound", "A key with (name/id) " .. name .. " was not found in this key vault. " ..
    "If you recently deleted this key you may be able to recover it using the correct recovery command. " ..
    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")
end

local function version_not_found(req, vault, name, version)
  return kv_error(req, vault, 404, "KeyNotFound", "A key with (name/id) " .. name .. "/" .. version ..
    " was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct " ..
    "recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")
end

local function deleted_not_found(req, vault, name)
  return kv_error(req, vault, 404, "KeyNotFound", "Deleted Key not found: " .. name)
end

local function bad(req, vault, message)
  return kv_error(req, vault, 400, "BadParameter", message)
end

local function body_of(req)
  if req.body == nil or req.body == "" then return {} end
  local v = json.decode(req.body)
  if type(v) ~= "table" then return nil end
  return v
end

local function base_of(req, vault)
  local host = req.headers and req.headers.host
  if type(host) == "string" and host ~= "" then return "https://" .. host:lower():gsub(":443$", "") end
  return M.vault_base(vault)
end

-- Parses a request's attributes object into ver fields. Returns true or nil, message.
local function apply_attributes(target, attrs)
  if attrs == nil then return true end
  if type(attrs) ~= "table" then return nil, "attributes must be an object" end
  if attrs.enabled ~= nil then
    if type(attrs.enabled) ~= "boolean" then return nil, "attributes.enabled must be a boolean" end
    target.enabled = attrs.enabled
  end
  for _, k in ipairs { "nbf", "exp" } do
    if attrs[k] ~= nil and attrs[k] ~= json.null then
      if math.type(attrs[k]) ~= "integer" then return nil, "attributes." .. k .. " must be Unix seconds" end
      target[k] = attrs[k]
    end
  end
  return true
end

local function check_tags(tags)
  if tags == nil then return true end
  if type(tags) ~= "table" then return nil, "tags must be an object of strings" end
  local n = 0
  for k, v in pairs(tags) do
    n = n + 1
    if type(k) ~= "string" or type(v) ~= "string" then return nil, "tags must be an object of strings" end
  end
  if n > 15 then return nil, "A maximum of 15 tags is allowed" end
  return true
end

local function check_key_ops(ops)
  if ops == nil then return { "encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey" } end
  if type(ops) ~= "table" then return nil, "key_ops must be an array" end
  local out = {}
  for _, op in ipairs(ops) do
    if not KEY_OPS[op] then return nil, "Invalid key operation: " .. tostring(op) end
    out[#out + 1] = op
  end
  return out
end

-- Validates a create request. Returns fields or nil, message.
function M.parse_create(vault, b)
  local kty = b.kty
  if kty == nil then return nil, "The parameter kty is required" end
  if kty == "EC" or kty == "EC-HSM" then
    return nil, "The emulator does not generate EC keys (only RSA and RSA-HSM)"
  end
  if kty ~= "RSA" and kty ~= "RSA-HSM" then
    return nil, "Invalid kty '" .. tostring(kty) .. "'. This vault supports RSA, RSA-HSM, EC and EC-HSM keys."
  end
  local sku = props(vault).sku
  if kty == "RSA-HSM" and type(sku) == "table" and tostring(sku.name):lower() == "standard" then
    return nil, "RSA-HSM keys cannot be created in a vault of SKU standard"
  end
  local size = b.key_size == nil and 2048 or b.key_size
  if math.type(size) ~= "integer" or not RSA_SIZES[size] then
    return nil, "Invalid key_size " .. tostring(b.key_size) .. ". Supported RSA key sizes are 2048, 3072 and 4096."
  end
  local ops, err = check_key_ops(b.key_ops)
  if not ops then return nil, err end
  local ok_t, terr = check_tags(b.tags)
  if not ok_t then return nil, terr end
  local fields = { kty = kty, key_size = size, key_ops = ops, tags = b.tags, enabled = true }
  local ok_a, aerr = apply_attributes(fields, b.attributes)
  if not ok_a then return nil, aerr end
  return fields
end

local function deleted_conflict(req, vault, name)
  return kv_error(req, vault, 409, "Conflict", "Key " .. name .. " is currently in a deleted but recoverable state, " ..
    "and its name cannot be reused; in this state, the key can only be recovered or purged.", "ObjectIsDeletedButRecoverable")
end

local function disabled(req, vault, opname)
  return kv_error(req, vault, 403, "Forbidden", "Operation " .. opname .. " is not allowed on a disabled key.", "KeyDisabled")
end

local function page(req, vault, base, path, items)
  local max = tonumber(req.args and req.args.maxresults) or KEYS_PER_PAGE
  if max < 1 or max > KEYS_PER_PAGE or max % 1 ~= 0 then
    return bad(req, vault, "invalid maxresults: must be an integer from 1 to 25")
  end
  local skip = tonumber(req.args and req.args["$skiptoken"]) or 0
  local value = json.array()
  for i = skip + 1, math.min(#items, skip + max) do value[#value + 1] = items[i] end
  local next_link = json.null
  if skip + max < #items then
    next_link = ("%s%s?api-version=%s&$skiptoken=%d&maxresults=%d"):format(base, path,
      req.args["api-version"], skip + max, max)
  end
  return ok(req, vault, 200, { value = value, nextLink = next_link })
end

local function key_item(vault, base, rec, ver, versioned)
  return { kid = M.kid(base, rec, versioned and ver or nil), attributes = attributes(vault, ver), tags = tags_of(ver) }
end

local function sorted_records(st, vault, deleted)
  local out = {}
  local keys = store(st, vault)
  for lname in pairs(keys) do
    local rec = expire(st, keys, lname)
    if rec and (rec.deleted ~= nil) == deleted then out[#out + 1] = rec end
  end
  table.sort(out, function(a, b) return a.name:lower() < b.name:lower() end)
  return out
end

-- ---- operations -----------------------------------------------------------------------------

local OPS_IMPL = {}

function OPS_IMPL.create(st, req, vault, claims, name)
  local b = body_of(req)
  if not b then return bad(req, vault, "The request body is not valid JSON") end
  local fields, err = M.parse_create(vault, b)
  if not fields then return bad(req, vault, err) end
  local keys = store(st, vault)
  local rec = expire(st, keys, name:lower())
  if rec and rec.deleted then return deleted_conflict(req, vault, rec.name) end
  local r, ver = M.add_version(st, vault, name, fields)
  return ok(req, vault, 200, M.bundle(vault, base_of(req, vault), r, ver))
end

function OPS_IMPL.get(st, req, vault, claims, name, version)
  local rec, ver, dr = M.lookup(st, vault, name, version)
  if not rec then
    if ver == "version" then return version_not_found(req, vault, dr.name, version) end
    return key_not_found(req, vault, name)
  end
  if not ver.enabled then return disabled(req, vault, "get") end
  return ok(req, vault, 200, M.bundle(vault, base_of(req, vault), rec, ver))
end

function OPS_IMPL.update(st, req, vault, claims, name, version)
  local b = body_of(req)
  if not b then return bad(req, vault, "The request body is not valid JSON") end
  local rec, ver, dr = M.lookup(st, vault, name, version)
  if not rec then
    if ver == "version" then return version_not_found(req, vault, dr.name, version) end
    return key_not_found(req, vault, name)
  end
  local changes = {}
  local ok_a, aerr = apply_attributes(changes, b.attributes)
  if not ok_a then return bad(req, vault, aerr) end
  local ok_t, terr = check_tags(b.tags)
  if not ok_t then return bad(req, vault, terr) end
  local ops
  if b.key_ops ~= nil then
    local e
    ops, e = check_key_ops(b.key_ops)
    if not ops then return bad(req, vault, e) end
  end
  for k, v in pairs(changes) do ver[k] = v end
  if b.tags ~= nil then ver.tags = b.tags end
  if ops then ver.key_ops = ops end
  ver.updated = st:now()
  return ok(req, vault, 200, M.bundle(vault, base_of(req, vault), rec, ver))
end

function OPS_IMPL.rotate(st, req, vault, claims, name)
  local rec, ver = M.lookup(st, vault, name)
  if not rec then return key_not_found(req, vault, name) end
  local r, nv = M.add_version(st, vault, rec.name, { kty = ver.kty, key_size = ver.key_size, key_ops = ver.key_ops,
    tags = ver.tags, enabled = true })
  return ok(req, vault, 200, M.bundle(vault, base_of(req, vault), r, nv))
end

function OPS_IMPL.versions(st, req, vault, claims, name)
  local rec = M.lookup(st, vault, name)
  if not rec then return key_not_found(req, vault, name) end
  local base = base_of(req, vault)
  local items = {}
  for _, v in ipairs(rec.versions) do items[#items + 1] = key_item(vault, base, rec, v, true) end
  return page(req, vault, base, "/keys/" .. rec.name .. "/versions", items)
end

function OPS_IMPL.list(st, req, vault)
  local base = base_of(req, vault)
  local items = {}
  for _, rec in ipairs(sorted_records(st, vault, false)) do
    items[#items + 1] = key_item(vault, base, rec, rec.versions[#rec.versions], false)
  end
  return page(req, vault, base, "/keys", items)
end

function OPS_IMPL.listdeleted(st, req, vault)
  local base = base_of(req, vault)
  local items = {}
  for _, rec in ipairs(sorted_records(st, vault, true)) do
    local item = key_item(vault, base, rec, rec.versions[#rec.versions], false)
    item.recoveryId = base .. "/deletedkeys/" .. rec.name
    item.deletedDate, item.scheduledPurgeDate = rec.deleted.deletedDate, rec.deleted.scheduledPurgeDate
    items[#items + 1] = item
  end
  return page(req, vault, base, "/deletedkeys", items)
end

function OPS_IMPL.delete(st, req, vault, claims, name)
  local rec = M.lookup(st, vault, name)
  if not rec then return key_not_found(req, vault, name) end
  local now = st:now()
  rec.deleted = { deletedDate = now, scheduledPurgeDate = now + M.retention_days(vault) * 86400 }
  if props(vault).enableSoftDelete == false then
    store(st, vault)[rec.name:lower()] = nil
  end
  return ok(req, vault, 200, deleted_bundle(vault, base_of(req, vault), rec, rec.versions[#rec.versions]))
end

local function deleted_rec(st, vault, name)
  local rec = expire(st, store(st, vault), name:lower())
  if rec and rec.deleted then return rec end
end

function OPS_IMPL.getdeleted(st, req, vault, claims, name)
  local rec = deleted_rec(st, vault, name)
  if not rec then return deleted_not_found(req, vault, name) end
  return ok(req, vault, 200, deleted_bundle(vault, base_of(req, vault), rec, rec.versions[#rec.versions]))
end

function OPS_IMPL.recover(st, req, vault, claims, name)
  local rec = deleted_rec(st, vault, name)
  if not rec then return deleted_not_found(req, vault, name) end
  rec.deleted = nil
  return ok(req, vault, 200, M.bundle(vault, base_of(req, vault), rec, rec.versions[#rec.versions]))
end

function OPS_IMPL.purge(st, req, vault, claims, name)
  local rec = deleted_rec(st, vault, name)
  if not rec then return deleted_not_found(req, vault, name) end
  if M.purge_protected(vault) then
    return kv_error(req, vault, 403, "Forbidden", "Operation \"purge\" is not allowed because purge protection is " ..
      "enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.",
      "PurgeProtectionEnabled")
  end
  store(st, vault)[rec.name:lower()] = nil
  local h = common_headers(vault)
  local s, hh, body = respond.empty(req, 204, h)
  return s, hh, body
end

local function crypto_op(opname)
  return function(st, req, vault, claims, name, version)
    local b = body_of(req)
    if not b then return bad(req, vault, "The request body is not valid JSON") end
    local rec, ver, dr = M.lookup(st, vault, name, version)
    if not rec then
      if ver == "version" then return version_not_found(req, vault, dr.name, version) end
      return key_not_found(req, vault, name)
    end
    if not ver.enabled then return disabled(req, vault, opname) end
    local allowed = false
    for _, op in ipairs(ver.key_ops or {}) do if op == opname then allowed = true end end
    if not allowed then
      return kv_error(req, vault, 403, "Forbidden", "Operation " .. opname .. " is not permitted on this key.",
        "KeyOperationForbidden")
    end
    if type(b.alg) ~= "string" then return bad(req, vault, "The parameter alg is required") end
    if b.alg ~= "RSA-OAEP" and b.alg ~= "RSA-OAEP-256" and b.alg ~= "RSA1_5" then
      return bad(req, vault, "Invalid algorithm '" .. b.alg .. "' for an RSA key: use RSA-OAEP, RSA-OAEP-256 or RSA1_5")
    end
    if type(b.value) ~= "string" or b.value == "" then return bad(req, vault, "The parameter value is required") end
    local input = crypto.b64url_decode(b.value)
    if not input then return bad(req, vault, "The parameter value is not valid base64url") end
    local out, err
    if opname == "wrapKey" then out, err = M.wrap(ver, b.alg, input) else out, err = M.unwrap(ver, b.alg, input) end
    if not out then return bad(req, vault, err) end
    return ok(req, vault, 200, { kid = M.kid(base_of(req, vault), rec, ver), value = crypto.b64url_encode(out) })
  end
end
OPS_IMPL.wrapKey = crypto_op("wrapKey")
OPS_IMPL.unwrapKey = crypto_op("unwrapKey")

-- Route table: method, path pattern, op, auth op. Fixed words match in any case; the key name
-- keeps the case the caller used; an empty version segment ("/keys/k//wrapkey") means latest.
local function ci(word)
  return (word:gsub("%a", function(c) return "[" .. c:lower() .. c:upper() .. "]" end))
end
local NAME = "([%w%-]+)"
local KEYS, DELETED = "^/" .. ci("keys"), "^/" .. ci("deletedkeys")
local ROUTES = {
  { "GET", KEYS .. "/?$", "list", "list" },
  { "GET", DELETED .. "/?$", "listdeleted", "list" },
  { "POST", KEYS .. "/" .. NAME .. "/" .. ci("create") .. "/?$", "create", "create" },
  { "POST", KEYS .. "/" .. NAME .. "/" .. ci("rotate") .. "/?$", "rotate", "rotate" },
  { "GET", KEYS .. "/" .. NAME .. "/" .. ci("versions") .. "/?$", "versions", "list" },
  { "POST", KEYS .. "/" .. NAME .. "//?" .. ci("wrapkey") .. "/?$", "wrapKey", "wrapKey" },
  { "POST", KEYS .. "/" .. NAME .. "//?" .. ci("unwrapkey") .. "/?$", "unwrapKey", "unwrapKey" },
  { "POST", KEYS .. "/" .. NAME .. "/(%x+)/" .. ci("wrapkey") .. "/?$", "wrapKey", "wrapKey" },
  { "POST", KEYS .. "/" .. NAME .. "/(%x+)/" .. ci("unwrapkey") .. "/?$", "unwrapKey", "unwrapKey" },
  { "GET", KEYS .. "/" .. NAME .. "/?$", "get", "get" },
  { "GET", KEYS .. "/" .. NAME .. "/(%x+)/?$", "get", "get" },
  { "PATCH", KEYS .. "/" .. NAME .. "/?$", "update", "update" },
  { "PATCH", KEYS .. "/" .. NAME .. "/(%x+)/?$", "update", "update" },
  { "DELETE", KEYS .. "/" .. NAME .. "/?$", "delete", "delete" },
  { "GET", DELETED .. "/" .. NAME .. "/?$", "getdeleted", "getdeleted" },
  { "POST", DELETED .. "/" .. NAME .. "/" .. ci("recover") .. "/?$", "recover", "recover" },
  { "DELETE", DELETED .. "/" .. NAME .. "/?$", "purge", "purge" },
}
M.ROUTES = ROUTES

local function route(method, path)
  for _, r in ipairs(ROUTES) do
    if r[1] == method then
      local m = { path:match(r[2]) }
      if #m > 0 then
        if not r[2]:find("(", 1, true) then return r end
        return r, m[1], m[2]
      end
    end
  end
end

function M.handle(st, req)
  local vault = st:vault(req.vault or "")
  if not vault then
    return respond.kv_error(req, 404, "VaultNotFound", "The vault '" .. tostring(req.vault) ..
      "' does not exist (Azure would fail to resolve its DNS name).")
  end
  local claims, s, h, b = authenticate(st, req, vault)
  if not claims then return s, h, b end
  local api = req.args and req.args["api-version"]
  if not api or api == "" then return bad(req, vault, "The api-version parameter is missing") end
  if not api:match("^7%.%d+") then
    return bad(req, vault, "The specified version (" .. api .. ") is not recognized. Consider using the latest supported version (7.6).")
  end
  local path = (req.service_path or req.path or "/"):gsub("%?.*$", "")
  local r, name, version = route(req.method, path)
  if not r then
    return kv_error(req, vault, 404, "NotFound", "The requested resource " .. req.method .. " " .. path ..
      " is not supported by the emulated vault.")
  end
  if name and #name > 127 then return bad(req, vault, "The key name is longer than 127 characters") end
  local allowed, status, code, message, inner = M.authorize(st, vault, claims, r[4], name)
  if not allowed then return kv_error(req, vault, status, code, message, inner) end
  return OPS_IMPL[r[3]](st, req, vault, claims, name, version)
end

-- ---- ARM keys API ---------------------------------------------------------------------------

local ARM_KEY_TYPE = "Microsoft.KeyVault/vaults/keys"

local function arm_key_uri(vault, rec, ver)
  local base = M.vault_base(vault)
  if not base:match(":%d+$") then base = base .. ":443" end
  return M.kid(base, rec, ver)
end

local function arm_body(vault, rec, ver, versioned)
  local id = vault.body.id .. "/keys/" .. rec.name
  if versioned then id = id .. "/versions/" .. ver.version end
  return {
    id = id, name = versioned and ver.version or rec.name,
    type = versioned and (ARM_KEY_TYPE .. "/versions") or ARM_KEY_TYPE,
    location = vault.body.location, tags = tags_of(ver) or json.object(),
    properties = {
      attributes = { enabled = ver.enabled, nbf = ver.nbf, exp = ver.exp, created = ver.created, updated = ver.updated,
                     recoveryLevel = M.recovery_level(vault), exportable = false },
      kty = ver.kty, keyOps = json.array(ver.key_ops), keySize = ver.key_size, curveName = ver.crv,
      keyUri = arm_key_uri(vault, rec), keyUriWithVersion = arm_key_uri(vault, rec, ver),
    },
  }
end

local function arm_not_found(req, vault, name)
  return respond.arm_error(req, 404, "NotFound", "The key '" .. name .. "' was not found in the vault '" ..
    M.vault_name(vault) .. "'.")
end

-- ARM: PUT/GET .../vaults/{v}/keys/{name}, GET .../keys, GET .../keys/{name}/versions[/{version}].
-- ctx = { claims = caller's ARM token claims, vault = vault record? (default: found from the path),
--         authorized = true when arm.lua already checked RBAC }.
function M.arm_keys(st, req, ctx)
  ctx = ctx or {}
  local path = (req.service_path or req.path or ""):gsub("%?.*$", ""):gsub("/+$", "")
  local vname, rest = path:match("/[Pp]roviders/[Mm]icrosoft%.[Kk]ey[Vv]ault/[Vv]aults/([^/]+)/[Kk]eys(.*)$")
  local vault = ctx.vault or (vname and st:vault(vname))
  if not vault or not rest then
    return respond.arm_error(req, 404, "ResourceNotFound", "The Resource 'Microsoft.KeyVault/vaults/" ..
      tostring(vname) .. "' under resource group was not found.")
  end
  local name, tail = rest:match("^/([^/]+)(.*)$")
  local version = tail and tail:match("^/[Vv]ersions/([^/]+)$")
  local is_versions = tail and tail:lower() == "/versions"
  local action = req.method == "PUT" and "Microsoft.KeyVault/vaults/keys/write" or "Microsoft.KeyVault/vaults/keys/read"
  local scope = vault.body.id .. "/keys" .. (name and ("/" .. name) or "")
  if ctx.claims and not ctx.authorized then
    if not rbac.check(st, vault.tenant, ctx.claims.oid, scope, action, false) then
      return respond.arm_error(req, 403, "AuthorizationFailed", ("The client '%s' with object id '%s' does not have " ..
        "authorization to perform action '%s' over scope '%s' or the scope is invalid. If access was recently granted, " ..
        "please refresh your credentials."):format(tostring(ctx.claims.upn or ctx.claims.oid), tostring(ctx.claims.oid),
        action, scope))
    end
  end
  if name == nil then
    if req.method ~= "GET" then return respond.arm_error(req, 405, "MethodNotAllowed", "Use GET to list keys.") end
    local value = json.array()
    for _, rec in ipairs(sorted_records(st, vault, false)) do
      value[#value + 1] = arm_body(vault, rec, rec.versions[#rec.versions], false)
    end
    return respond.json(req, 200, { value = value })
  end
  if not name:match("^[%w%-]+$") or #name > 127 then
    return respond.arm_error(req, 400, "BadRequest", "The key name '" .. name .. "' is invalid: use 1-127 letters, digits and hyphens.")
  end
  if req.method == "PUT" then
    if tail ~= "" then return respond.arm_error(req, 405, "MethodNotAllowed", "Key versions are read-only.") end
    local keys = store(st, vault)
    local rec = expire(st, keys, name:lower())
    if rec and rec.deleted then
      return respond.arm_error(req, 409, "ObjectIsDeletedButRecoverable", "Key " .. rec.name .. " is currently in a " ..
        "deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged.")
    end
    if rec then return respond.json(req, 200, arm_body(vault, rec, rec.versions[#rec.versions], false)) end
    local b = body_of(req)
    local p = b and b.properties
    if type(p) ~= "table" then
      return respond.arm_error(req, 400, "BadRequest", "The request body must have a properties object.")
    end
    local fields, err = M.parse_create(vault, { kty = p.kty or "RSA", key_size = p.keySize, key_ops = p.keyOps,
      attributes = p.attributes, tags = b.tags })
    if not fields then return respond.arm_error(req, 400, "BadRequest", err) end
    local r, ver = M.add_version(st, vault, name, fields)
    return respond.json(req, 200, arm_body(vault, r, ver, false))
  end
  if req.method ~= "GET" then
    return respond.arm_error(req, 405, "MethodNotAllowed", "The keys API supports PUT and GET only.")
  end
  local rec, latest = M.lookup(st, vault, name)
  if not rec then return arm_not_found(req, vault, name) end
  if tail == "" then return respond.json(req, 200, arm_body(vault, rec, latest, false)) end
  if is_versions then
    local value = json.array()
    for _, v in ipairs(rec.versions) do value[#value + 1] = arm_body(vault, rec, v, true) end
    return respond.json(req, 200, { value = value })
  end
  if version then
    local r2, ver = M.lookup(st, vault, name, version)
    if not r2 then return arm_not_found(req, vault, name .. "/" .. version) end
    return respond.json(req, 200, arm_body(vault, r2, ver, true))
  end
  return respond.arm_error(req, 404, "NotFound", "No route for " .. path)
end

return M
