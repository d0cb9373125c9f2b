-- Key Vault data-plane client with the authentication challenge: the first request to a vault
-- goes out without a token; the 401's WWW-Authenticate names the vault's tenant and resource,
-- which are cached per vault and used for the real, authenticated request.
--
--   local kv = require("cmkflow.azure.keyvault").new{http, credential, cloud, api_version? ("7.5")}
--   kv:request(vault_uri, method, path, body?, opts?) -> resp | nil, err
--   kv:challenge(vault_uri) -> {tenant, scope, resource} | nil  (cached)
--   kv:create_key(vault_uri, name, {kty="RSA", key_size=3072, key_ops={"wrapKey","unwrapKey"}, tags, attributes})
--   kv:get_key(vault_uri, name, version?)           kv:list_key_versions(vault_uri, name)
--   kv:list_keys(vault_uri)                          kv:update_key(vault_uri, name, version?, {enabled, exp, nbf, tags, key_ops})
--   kv:rotate_key(vault_uri, name)                   kv:get_rotation_policy / kv:set_rotation_policy(vault_uri, name, policy)
--   kv:wrap_key(vault_uri, name, version?, alg, value_b64url) -> {kid, value}
--   kv:unwrap_key(vault_uri, name, version?, alg, value_b64url) -> {kid, value}
--   kv:delete_key(vault_uri, name)   kv:get_deleted_key   kv:recover_deleted_key   kv:purge_deleted_key
-- Each helper returns the decoded body (true when there is none) or nil, err; lists return arrays.
-- Vault URIs and key names are validated before any request (a bad one raises).
local core = require "cmkflow.core"
local errors = require "cmkflow.azure.errors"
local validate = require "cmkflow.azure.validate"
local cloudmod = require "cmkflow.azure.cloud"

local error, ipairs, pairs, setmetatable, tostring, type = error, ipairs, pairs, setmetatable, tostring, type
local json = core.json

local M = {}

local KeyVault = {}
KeyVault.__index = KeyVault

function M.new(spec)
  if type(spec) ~= "table" then error("keyvault.new expects a table", 2) end
  if not spec.http then error("keyvault.new: http (a cmkflow.http client) is required", 2) end
  return setmetatable({
    http = spec.http,
    credential = spec.credential,
    cloud = cloudmod.get(spec.cloud or "azure"),
    api_version = spec.api_version or "7.5",
    challenges = {},
  }, KeyVault)
end

-- Parses `Bearer authorization="...", resource="..."` (also authorization_uri= and scope=).
function M.parse_challenge(header)
  if type(header) ~= "string" then return nil end
  local params = header:match("^%s*[Bb][Ee][Aa][Rr][Ee][Rr]%s+(.*)$")
  if not params then return nil end
  local p = {}
  for k, v in params:gmatch('([%w_]+)%s*=%s*"([^"]*)"') do p[k:lower()] = v end
  for k, v in params:gmatch('([%w_]+)%s*=%s*([^",%s]+)') do
    if p[k:lower()] == nil then p[k:lower()] = v end
  end
  local authz = p.authorization or p.authorization_uri
  if not authz then return nil end
  local tenant = authz:match("^https://[^/]+/([^/?#]+)/?$") or authz:match("^https://[^/]+/([^/?#]+)/?[?#]")
  if not tenant or not validate.tenant(tenant) then return nil end
  local scope = p.scope
  local resource = p.resource
  if not scope and resource then scope = resource:gsub("/+$", "") .. "/.default" end
  if not scope then return nil end
  if not resource then resource = scope:gsub("/%.default$", "") end
  return { tenant = tenant, scope = scope, resource = resource, authorization = authz }
end

-- The challenge's resource must belong to the vault's domain (myvault.vault.azure.net may ask
-- for https://vault.azure.net, never for https://management.azure.com): the SDKs' rule, so a
-- vault host cannot obtain a token for another service.
local function resource_matches(resource, vault_host)
  local rhost = cloudmod.https_host(resource)
  if not rhost then return false end
  rhost, vault_host = rhost:lower(), vault_host:lower()
  return vault_host == rhost or vault_host:sub(-(#rhost + 1)) == "." .. rhost
end

-- "https://name.vault.azure.net/" -> "https://name.vault.azure.net", host. Raises when invalid.
function KeyVault:vault_base(vault_uri, level)
  local ok, msg = validate.key_vault_uri(vault_uri, self.cloud.keyvault_suffix)
  if not ok then error("keyvault: " .. msg, (level or 1) + 1) end
  local base = vault_uri:gsub("/+$", "")
  local host = cloudmod.https_host(base):lower()
  return base, host
end

local function check_name(name, level)
  local ok, msg = validate.key_name(name)
  if not ok then error("keyvault: " .. msg, level + 1) end
end

local function check_version(version, level)
  if version == nil or version == "" then return "" end
  local ok, msg = validate.key_version(version)
  if not ok then error("keyvault: " .. msg, level + 1) end
  return version
end

function KeyVault:send(host, method, url, body, authenticated, headers)
  local h = {}
  for k, v in pairs(headers or {}) do h[k] = v end
  h["Accept"] = "application/json"
  local req = { method = method, url = url, headers = h }
  -- vault hosts are dynamic: add this vault's route to the cloud's fixed ones (emulator only)
  local route = self.cloud:connect_to_for(host)
  if route then
    local routes = {}
    for i, entry in ipairs(self.cloud.connect_to or {}) do routes[i] = entry end
    routes[#routes + 1] = route
    req.connect_to = routes
  end
  if authenticated then
    local c = self.challenges[host]
    req.credential, req.scope, req.tenant = self.credential, c.scope, c.tenant
  end
  if body ~= nil then
    req.body = type(body) == "table" and json.encode(body) or tostring(body)
    h["Content-Type"] = "application/json"
  elseif method == "POST" or method == "PUT" or method == "PATCH" then
    req.body = ""
    h["Content-Type"] = "application/json"
  end
  return self.http:request(req)
end

local function with_api_version(url, api_version)
  if url:find("[?&]api%-version=") then return url end
  return url .. (url:find("?", 1, true) and "&" or "?") .. "api-version=" .. api_version
end

-- Learns (and caches) the vault's tenant and scope from an unauthenticated request.
-- Returns the challenge, or nil, err, resp (resp when the vault answered without a challenge).
function KeyVault:discover(host, method, url)
  local resp, err = self:send(host, method, url, nil, false)
  if not resp then return nil, err end
  if resp.status ~= 401 then return nil, nil, resp end
  local header = errors.header(resp, "www-authenticate")
  local c = M.parse_challenge(header)
  if not c then
    local e = errors.from_response(resp, { target = url })
    e.message = "the vault answered 401 without a usable Bearer challenge (" ..
                tostring(header or "no WWW-Authenticate header") .. "): " .. tostring(e.message)
    return nil, e
  end
  if not resource_matches(c.resource, host) then
    return nil, errors.new {
      code = "UntrustedChallenge", status = 401, target = url, retryable = false, tenant = c.tenant,
      message = "the vault " .. host .. " asked for a token for " .. c.resource ..
                ", which is not in the vault's domain; refusing to send one",
    }
  end
  self.challenges[host] = c
  return c
end

function KeyVault:challenge(vault_uri)
  local _, host = self:vault_base(vault_uri, 2)
  return self.challenges[host]
end

-- One data-plane request: discovery if needed, then with credential + challenge tenant/scope.
-- A 401 carrying a different challenge (the vault moved tenant) refreshes the cache once.
function KeyVault:request(vault_uri, method, path, body, opts)
  opts = opts or {}
  local base, host = self:vault_base(vault_uri, 2)
  if type(path) ~= "string" then error("keyvault: path is required", 2) end
  local url
  if path:match("^https://") then
    local phost = cloudmod.https_host(path)
    if not phost or phost:lower() ~= host then
      error("keyvault: refusing URL " .. path .. " outside " .. base, 2)
    end
    url = path
  else
    if path:sub(1, 1) ~= "/" then path = "/" .. path end
    url = base .. path
  end
  url = with_api_version(url, opts.api_version or self.api_version)
  if not self.challenges[host] then
    local c, err, resp = self:discover(host, method, url)
    if not c then
      if not resp then return nil, err end
      -- No challenge: the vault answered the bodiless probe itself. That answer is the result
      -- only when the real request has no body either.
      if body == nil or (resp.status >= 400 and resp.status ~= 401) then return resp end
      return nil, errors.new {
        code = "NoChallenge", status = resp.status, target = url, retryable = false,
        message = "the vault answered an unauthenticated request with HTTP " .. tostring(resp.status) ..
                  " instead of a 401 challenge; cannot learn its tenant",
      }
    end
  end
  local resp, err = self:send(host, method, url, body, true, opts.headers)
  if not resp then return nil, err end
  if resp.status == 401 then
    local fresh = M.parse_challenge(errors.header(resp, "www-authenticate"))
    local cached = self.challenges[host]
    if fresh and (fresh.tenant ~= cached.tenant or fresh.scope ~= cached.scope)
       and resource_matches(fresh.resource, host) then
      self.challenges[host] = fresh
      resp, err = self:send(host, method, url, body, true, opts.headers)
      if not resp then return nil, err end
    end
  end
  return resp
end

local function call(self, vault_uri, method, path, body, opts)
  local resp, err = self:request(vault_uri, method, path, body, opts)
  if not resp then return nil, err end
  if resp.status < 200 or resp.status >= 300 then
    local _, host = self:vault_base(vault_uri, 3)
    local c = self.challenges[host]
    return nil, errors.from_response(resp, { tenant = c and c.tenant, target = vault_uri .. path })
  end
  local doc = errors.body_json(resp)
  if doc == nil then return true, nil, resp end
  return doc, nil, resp
end

function KeyVault:list(vault_uri, path, opts)
  opts = opts or {}
  local max_pages = opts.max_pages or 1000
  local items, pages, next_path = json.array {}, 0, path
  while next_path do
    pages = pages + 1
    if pages > max_pages then
      return nil, errors.new {
        code = "TooManyPages", status = 0, target = vault_uri .. path, retryable = false,
        message = "listing " .. path .. " in " .. vault_uri .. " returned more than " .. tostring(max_pages) .. " pages",
      }
    end
    local doc, err = call(self, vault_uri, "GET", next_path, nil, opts)
    if doc == nil then return nil, err end
    if type(doc) == "table" and type(doc.value) == "table" then
      for _, item in ipairs(doc.value) do items[#items + 1] = item end
    end
    local link = type(doc) == "table" and doc.nextLink or nil
    if type(link) == "string" and link ~= "" then
      local _, host = self:vault_base(vault_uri, 2)
      local lhost = cloudmod.https_host(link)
      if not lhost or lhost:lower() ~= host then
        return nil, errors.new {
          code = "UntrustedLink", status = 0, target = link, retryable = false,
          message = "nextLink points outside " .. vault_uri .. " (not followed)",
        }
      end
      next_path = link
    else
      next_path = nil
    end
  end
  return items
end

-- ---- key helpers -------------------------------------------------------------------------

local function key_path(name, version)
  return "/keys/" .. name .. "/" .. version
end

function KeyVault:create_key(vault_uri, name, opts)
  self:vault_base(vault_uri, 2)
  check_name(name, 2)
  opts = opts or {}
  local body = json.object {
    kty = opts.kty or "RSA",
    key_ops = json.array(opts.key_ops or { "wrapKey", "unwrapKey" }),
  }
  local kty = body.kty
  if kty == "RSA" or kty == "RSA-HSM" then body.key_size = opts.key_size or 3072 end
  if opts.curve then body.crv = opts.curve end
  if opts.tags then body.tags = json.object(opts.tags) end
  local attributes = opts.attributes and json.object(opts.attributes) or nil
  if opts.enabled ~= nil or opts.exp or opts.nbf then
    attributes = attributes or json.object {}
    if opts.enabled ~= nil then attributes.enabled = opts.enabled end
    attributes.exp, attributes.nbf = opts.exp, opts.nbf
  end
  body.attributes = attributes
  return call(self, vault_uri, "POST", "/keys/" .. name .. "/create", body)
end

function KeyVault:get_key(vault_uri, name, version)
  self:vault_base(vault_uri, 2)
  check_name(name, 2)
  return call(self, vault_uri, "GET", key_path(name, check_version(version, 2)))
end

function KeyVault:list_keys(vault_uri, opts)
  self:vault_base(vault_uri, 2)
  return self:list(vault_uri, "/keys", opts)
end

function KeyVault:list_key_versions(vault_uri, name, opts)
  self:vault_base(vault_uri, 2)
  check_name(name, 2)
  return self:list(vault_uri, "/keys/" .. name .. "/versions", opts)
end

function KeyVault:update_key(vault_uri, name, version, changes)
  self:vault_base(vault_uri, 2)
  check_name(name, 2)
  version = check_version(version, 2)
  changes = changes or {}
  local body = json.object {}
  local attributes = json.object {}
  local any_attr = false
  for _, k in ipairs { "enabled", "exp", "nbf" } do
    if changes[k] ~= nil then attributes[k] = changes[k] any_attr = true end
  end
  if type(changes.attributes) == "table" then
    for k, v in pairs(changes.attributes) do attributes[k] = v any_attr = true end
  end
  if any_attr then body.attributes = attributes end
  if changes.tags then body.tags = json.object(changes.tags) end
  if changes.key_ops then body.key_ops = json.array(changes.key_ops) end
  return call(self, vault_uri, "PATCH", key_path(name, version), body)
end

function KeyVault:rotate_key(vault_uri, name)
  self:vault_base(vault_uri, 2)
  check_name(name, 2)
  return call(self, vault_uri, "POST", "/keys/" .. name .. "/rotate")
end

function KeyVault:get_rotation_policy(vault_uri, name)
  self:vault_base(vault_uri, 2)
  check_name(name, 2)
  return call(self, vault_uri, "GET", "/keys/" .. name .. "/rotationpolicy")
end

function KeyVault:set_rotation_policy(vault_uri, name, policy)
  self:vault_base(vault_uri, 2)
  check_name(name, 2)
  return call(self, vault_uri, "PUT", "/keys/" .. name .. "/rotationpolicy", policy)
end

local ALGS = { ["RSA-OAEP"] = true, ["RSA-OAEP-256"] = true, ["RSA1_5"] = true,
               A128KW = true, A192KW = true, A256KW = true }

local function crypto_op(self, op, vault_uri, name, version, alg, value)
  self:vault_base(vault_uri, 3)
  check_name(name, 3)
  version = check_version(version, 3)
  alg = alg or "RSA-OAEP-256"
  if not ALGS[alg] then
    error("keyvault: algorithm '" .. tostring(alg) .. "' is invalid: use RSA-OAEP-256, RSA-OAEP or RSA1_5", 3)
  end
  if type(value) ~= "string" or value == "" or not value:match("^[%w%-_]+$") then
    error("keyvault: " .. op .. " needs the value as base64url without padding", 3)
  end
  return call(self, vault_uri, "POST", key_path(name, version) .. "/" .. op, json.object { alg = alg, value = value })
end

function KeyVault:wrap_key(vault_uri, name, version, alg, value)
  return crypto_op(self, "wrapkey", vault_uri, name, version, alg, value)
end

function KeyVault:unwrap_key(vault_uri, name, version, alg, value)
  return crypto_op(self, "unwrapkey", vault_uri, name, version, alg, value)
end

function KeyVault:delete_key(vault_uri, name)
  self:vault_base(vault_uri, 2)
  check_name(name, 2)
  return call(self, vault_uri, "DELETE", "/keys/" .. name)
end

function KeyVault:get_deleted_key(vault_uri, name)
  self:vault_base(vault_uri, 2)
  check_name(name, 2)
  return call(self, vault_uri, "GET", "/deletedkeys/" .. name)
end

function KeyVault:recover_deleted_key(vault_uri, name)
  self:vault_base(vault_uri, 2)
  check_name(name, 2)
  return call(self, vault_uri, "POST", "/deletedkeys/" .. name .. "/recover")
end

function KeyVault:purge_deleted_key(vault_uri, name)
  self:vault_base(vault_uri, 2)
  check_name(name, 2)
  return call(self, vault_uri, "DELETE", "/deletedkeys/" .. name)
end

return M
