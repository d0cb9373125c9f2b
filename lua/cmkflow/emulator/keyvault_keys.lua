-- The emulated Key Vault data plane's key operations (keyvault.lua routes to them after the
-- token and the permission check): create, get, update, rotate, versions, list, delete, the
-- soft-delete lifecycle (deleted keys, recover, purge) and wrapKey/unwrapKey, with Key Vault's
-- paging and error texts. https://learn.microsoft.com/rest/api/keyvault/keys
--   M.OPERATIONS[op](st, req, vault, claims, name, version) -> status, headers, body
local core = require "cmkflow.core"
local respond = require "cmkflow.emulator.respond"
local store = require "cmkflow.emulator.keyvault_store"
local auth = require "cmkflow.emulator.keyvault_auth"

local crypto, json = core.crypto, core.json
local kv_error, ok, common_headers = auth.kv_error, auth.ok, auth.common_headers
local expire, props, deleted_bundle = store.expire, store.props, store.deleted_bundle
local apply_attributes, check_tags, check_key_ops = store.apply_attributes, store.check_tags, store.check_key_ops
local key_item, sorted_records = store.key_item, store.sorted_records
local key_store = store.store

local M = {}

local KEYS_PER_PAGE = 25

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
  return store.vault_base(vault)
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

-- ---- operations -----------------------------------------------------------------------------

local OPS_IMPL = {}

function OPS_IMPL.create(st, req, vault, claims, name)
  local b = body_of(req)
  if not b then return bad(req, vault, "The request body is not valid JSON") end
  local fields, err = store.parse_create(vault, b)
  if not fields then return bad(req, vault, err) end
  local keys = key_store(st, vault)
  local rec = expire(st, keys, name:lower())
  if rec and rec.deleted then return deleted_conflict(req, vault, rec.name) end
  local r, ver = store.add_version(st, vault, name, fields)
  return ok(req, vault, 200, store.bundle(vault, base_of(req, vault), r, ver))
end

function OPS_IMPL.get(st, req, vault, claims, name, version)
  local rec, ver, dr = store.lookup(st, vault, name, version)
  if not rec then
    if ver == "version" then return version_not_found(req, vault, dr.name, version) end
    return key_not_found(req, vault, name)
  end
  if not ver.enabled then return disabled(req, vault, "get") end
  return ok(req, vault, 200, store.bundle(vault, base_of(req, vault), rec, ver))
end

function OPS_IMPL.update(st, req, vault, claims, name, version)
  local b = body_of(req)
  if not b then return bad(req, vault, "The request body is not valid JSON") end
  local rec, ver, dr = store.lookup(st, vault, name, version)
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
  return ok(req, vault, 200, store.bundle(vault, base_of(req, vault), rec, ver))
end

function OPS_IMPL.rotate(st, req, vault, claims, name)
  local rec, ver = store.lookup(st, vault, name)
  if not rec then return key_not_found(req, vault, name) end
  local r, nv = store.add_version(st, vault, rec.name, { kty = ver.kty, key_size = ver.key_size, key_ops = ver.key_ops,
    tags = ver.tags, enabled = true })
  return ok(req, vault, 200, store.bundle(vault, base_of(req, vault), r, nv))
end

function OPS_IMPL.versions(st, req, vault, claims, name)
  local rec = store.lookup(st, vault, name)
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
  local rec = store.lookup(st, vault, name)
  if not rec then return key_not_found(req, vault, name) end
  local now = st:now()
  rec.deleted = { deletedDate = now, scheduledPurgeDate = now + store.retention_days(vault) * 86400 }
  if props(vault).enableSoftDelete == false then
    key_store(st, vault)[rec.name:lower()] = nil
  end
  return ok(req, vault, 200, deleted_bundle(vault, base_of(req, vault), rec, rec.versions[#rec.versions]))
end

local function deleted_rec(st, vault, name)
  local rec = expire(st, key_store(st, vault), name:lower())
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
  return ok(req, vault, 200, store.bundle(vault, base_of(req, vault), rec, rec.versions[#rec.versions]))
end

function OPS_IMPL.purge(st, req, vault, claims, name)
  local rec = deleted_rec(st, vault, name)
  if not rec then return deleted_not_found(req, vault, name) end
  if store.purge_protected(vault) then
    return kv_error(req, vault, 403, "Forbidden", "Operation \"purge\" is not allowed because purge protection is " ..
      "enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.",
      "PurgeProtectionEnabled")
  end
  key_store(st, vault)[rec.name:lower()] = nil
  local h = common_headers(vault)
  local s, hh, body = respond.empty(req, 204, h)
  return s, hh, body
end

local function crypto_op(opname)
  return function(st, req, vault, claims, name, version)
    local b = body_of(req)
    if not b then return bad(req, vault, "The request body is not valid JSON") end
    local rec, ver, dr = store.lookup(st, vault, name, version)
    if not rec then
      if ver == "version" then return version_not_found(req, vault, dr.name, version) end
      return key_not_found(req, vault, name)
    end
    if not ver.enabled then return disabled(req, vault, opname) end
    local outside = opname == "wrapKey" and store.outside_window(ver, st:now())
    if outside then
      return kv_error(req, vault, 403, "Forbidden", "Operation " .. opname .. " is not allowed on " ..
        (outside == "expired" and "an expired key." or "a key that is not yet valid."),
        outside == "expired" and "KeyExpired" or "KeyNotYetValid")
    end
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
    if opname == "wrapKey" then out, err = store.wrap(ver, b.alg, input) else out, err = store.unwrap(ver, b.alg, input) end
    if not out then return bad(req, vault, err) end
    return ok(req, vault, 200, { kid = store.kid(base_of(req, vault), rec, ver), value = crypto.b64url_encode(out) })
  end
end
OPS_IMPL.wrapKey = crypto_op("wrapKey")
OPS_IMPL.unwrapKey = crypto_op("unwrapKey")

M.OPERATIONS = OPS_IMPL
M.body_of, M.bad = body_of, bad

return M
