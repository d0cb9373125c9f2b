-- The emulated Key Vault data plane (keys only): which operation a request names, after the
-- vault lookup, the token (keyvault_auth.lua) and the api-version; then the permission check and
-- the operation (keyvault_keys.lua).
--   handle(st, req) -> status, headers, body        req.vault = vault name (lower case)
-- The same key store (keyvault_store.lua) backs the ARM keys API (keyvault_arm_keys.lua) and
-- Storage's key check (storage_cmk.lua).
local respond = require "cmkflow.emulator.respond"
local auth = require "cmkflow.emulator.keyvault_auth"
local keys = require "cmkflow.emulator.keyvault_keys"
local api_versions = require "cmkflow.emulator.api_versions"
local store = require "cmkflow.emulator.keyvault_store"

local ipairs, tostring = ipairs, tostring

local M = {}

-- The api-versions of the Key Vault keys data plane (Azure/azure-rest-api-specs,
-- specification/keyvault/data-plane/Keys/readme.md and the legacy data-plane readme), and the
-- newest stable one, which Key Vault names when it refuses an unknown version.
local KNOWN_VERSIONS, LATEST_STABLE = {}, nil
for _, v in ipairs(api_versions.keyvault) do
  KNOWN_VERSIONS[v] = true
  if not v:find("preview", 1, true) then LATEST_STABLE = v end
end

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
  -- a vault whose DNS name is not registered yet is, to a client, a host that does not resolve:
  -- the connection closes without an answer
  if vault and not store.dns_ready(st, vault) then return nil end
  if not vault then
    return respond.kv_error(req, 404, "VaultNotFound", "The vault '" .. tostring(req.vault) ..
      "' does not exist (Azure would fail to resolve its DNS name).")
  end
  local claims, s, h, b = auth.authenticate(st, req, vault)
  if not claims then return s, h, b end
  local api = req.args and req.args["api-version"]
  if not api or api == "" then return keys.bad(req, vault, "The api-version parameter is missing") end
  if not KNOWN_VERSIONS[api] then
    return keys.bad(req, vault, "The specified version (" .. api .. ") is not recognized. Consider using the latest "
      .. "supported version (" .. LATEST_STABLE .. ").")
  end
  local path = (req.service_path or req.path or "/"):gsub("%?.*$", "")
  local r, name, version = route(req.method, path)
  if not r then
    return auth.kv_error(req, vault, 404, "NotFound", "The requested resource " .. req.method .. " " .. path ..
      " is not supported by the emulated vault.")
  end
  if name and #name > 127 then return keys.bad(req, vault, "The key name is longer than 127 characters") end
  local allowed, status, code, message, inner = auth.authorize(st, vault, claims, r[4], name)
  if not allowed then return auth.kv_error(req, vault, status, code, message, inner) end
  return keys.OPERATIONS[r[3]](st, req, vault, claims, name, version)
end

return M
