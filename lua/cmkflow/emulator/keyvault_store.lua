-- The emulated Key Vault's key store, shared by the data plane (keyvault_keys.lua), the ARM keys
-- API (keyvault_arm_keys.lua) and Storage's key check (storage_cmk.lua): key material, the facts a
-- vault's ARM record gives (tenant, URI, recovery level), key records and their versions, the
-- KeyBundle shapes, wrap/unwrap, and the validation of a create request.
--   M.vault_tenant(vault), M.vault_base(vault), M.recovery_level(vault)
--   M.lookup(st, vault, name, version) -> rec, ver | nil, why ("missing" | "deleted" | "version")
--   M.kid(base, rec, ver), M.wrap(ver, alg, plaintext) -> ciphertext | nil, err
--   M.add_version(st, vault, name, fields) -> rec, ver
-- Keys live in st.vault_keys[vault] (see state.lua); private keys stay inside cmkflow.key userdata.
-- https://learn.microsoft.com/azure/key-vault/keys/about-keys
local core = require "cmkflow.core"

local json = core.json

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
-- Versions then share key material (the same JWK n); their version ids still differ. A size's
-- keys come from a generator of that size alone, started when the size is first asked for: a
-- pooled run does not pay (on a background thread, but on the same cores) for the shared stock
-- of the sizes it never uses (4 of 3072 and 2 of 4096 bits: seconds of CPU).
M.POOLED_KEYS = 4
local pooled = {} -- [bits] = {keys = {...}, next = 1, pool = keypool of that size}

local function key_material(st, bits)
  if (st.knobs and st.knobs.key_material) ~= "pooled" then return M.key_pool():take(bits) end
  local set = pooled[bits]
  if not set then
    set = { keys = {}, next = 1 }
    pooled[bits] = set
  end
  if #set.keys < M.POOLED_KEYS then
    if bits == 2048 or bits == 3072 or bits == 4096 then
      set.pool = set.pool or core.keypool.new { [bits] = M.POOLED_KEYS }
    end
    local key = (set.pool or M.key_pool()):take(bits)
    set.keys[#set.keys + 1] = key
    return key
  end
  local key = set.keys[set.next]
  set.next = set.next % #set.keys + 1
  return key
end

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


M.store, M.expire, M.props, M.attributes, M.tags_of = store, expire, props, attributes, tags_of

-- Does the vault's host name resolve yet (its DNS registered after the vault_dns delay)?
function M.dns_ready(st, vault) return st:now() >= ((vault.internal or {}).dns_at or 0) end

-- Where key version ver stands in its nbf/exp window at time now: nil (usable), "expired" or
-- "not_yet_valid". Key Vault refuses encrypt, wrapKey and sign outside the window and still
-- allows decrypt, unwrapKey and verify
-- (https://learn.microsoft.com/azure/key-vault/keys/about-keys-details#date-time-controlled-operations).
function M.outside_window(ver, now)
  if type(ver.exp) == "number" and now >= ver.exp then return "expired" end
  if type(ver.nbf) == "number" and now < ver.nbf then return "not_yet_valid" end
  return nil
end
M.deleted_bundle, M.sorted_records, M.key_item = deleted_bundle, sorted_records, key_item
M.apply_attributes, M.check_tags, M.check_key_ops = apply_attributes, check_tags, check_key_ops

return M
