-- The ARM keys API of Microsoft.KeyVault/vaults (the management plane's view of the vault's key
-- store): PUT/GET .../vaults/{v}/keys/{name}, GET .../keys, GET .../keys/{name}/versions[/{version}].
-- https://learn.microsoft.com/rest/api/keyvault/keyvault/keys
--   handle(st, req, ctx) -> status, headers, body    (arm_keyvault.lua hands it the vault's keys paths)
local core = require "cmkflow.core"
local respond = require "cmkflow.emulator.respond"
local rbac = require "cmkflow.emulator.rbac"
local store = require "cmkflow.emulator.keyvault_store"
local keys = require "cmkflow.emulator.keyvault_keys"

local json = core.json
local expire, tags_of, sorted_records, key_store = store.expire, store.tags_of, store.sorted_records, store.store
local body_of = keys.body_of

local M = {}

local ARM_KEY_TYPE = "Microsoft.KeyVault/vaults/keys"

local function arm_key_uri(vault, rec, ver)
  local base = store.vault_base(vault)
  if not base:match(":%d+$") then base = base .. ":443" end
  return store.kid(base, rec, ver)
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
                     recoveryLevel = store.recovery_level(vault), exportable = false },
      kty = ver.kty, keyOps = json.array(ver.key_ops), keySize = ver.key_size, curveName = ver.crv,
      keyUri = arm_key_uri(vault, rec), keyUriWithVersion = arm_key_uri(vault, rec, ver),
    },
  }
end

local function arm_not_found(req, vault, name)
  return respond.arm_error(req, 404, "NotFound", "The key '" .. name .. "' was not found in the vault '" ..
    store.vault_name(vault) .. "'.")
end

-- ARM: PUT/GET .../vaults/{v}/keys/{name}, GET .../keys, GET .../keys/{name}/versions[/{version}].
-- ctx = { claims = caller's ARM token claims, vault = vault record? (default: found from the path),
--         authorized = true when arm.lua already checked RBAC }.
function M.handle(st, req, ctx)
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
    local keys = key_store(st, vault)
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
    local fields, err = store.parse_create(vault, { kty = p.kty or "RSA", key_size = p.keySize, key_ops = p.keyOps,
      attributes = p.attributes, tags = b.tags })
    if not fields then return respond.arm_error(req, 400, "BadRequest", err) end
    local r, ver = store.add_version(st, vault, name, fields)
    return respond.json(req, 200, arm_body(vault, r, ver, false))
  end
  if req.method ~= "GET" then
    return respond.arm_error(req, 405, "MethodNotAllowed", "The keys API supports PUT and GET only.")
  end
  local rec, latest = store.lookup(st, vault, name)
  if not rec then return arm_not_found(req, vault, name) end
  if tail == "" then return respond.json(req, 200, arm_body(vault, rec, latest, false)) end
  if is_versions then
    local value = json.array()
    for _, v in ipairs(rec.versions) do value[#value + 1] = arm_body(vault, rec, v, true) end
    return respond.json(req, 200, { value = value })
  end
  if version then
    local r2, ver = store.lookup(st, vault, name, version)
    if not r2 then return arm_not_found(req, vault, name .. "/" .. version) end
    return respond.json(req, 200, arm_body(vault, r2, ver, true))
  end
  return respond.arm_error(req, 404, "NotFound", "No route for " .. path)
end

return M
