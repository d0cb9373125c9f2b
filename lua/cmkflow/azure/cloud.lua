-- Cloud descriptions: the endpoints, token scopes and token-exchange audience of one Azure
-- cloud, plus (for the local emulator) the CONNECT_TO routing and CA file that make the public
-- hostnames reach a server on 127.0.0.1.
--
--   local cloud = require "cmkflow.azure.cloud"
--   local c = cloud.get("azure" | "usgov" | "china" | {custom table})   -- raises on a bad spec
--   local e = cloud.emulator("https://127.0.0.1:8443", "/tmp/ca.pem")
--   c.authority, c.arm, c.graph, c.keyvault_suffix, c.arm_scope, c.graph_scope,
--   c.keyvault_scope, c.token_exchange_audience, c.connect_to, c.ca_file
--   c:connect_to_for(host) -> "host:443:addr:port" | nil
--   c:vault_uri(name) -> "https://{name}.{keyvault_suffix}"
--   c:blob_endpoint(account) -> "https://{account}.blob.{storage suffix}"
--   c:is_vault_host(host) -> bool
local error, getmetatable, ipairs, pairs, setmetatable, tostring, type =
  error, getmetatable, ipairs, pairs, setmetatable, tostring, type
local concat, sort = table.concat, table.sort
local clouds = require "cmkflow.util.clouds"

local M = {}

-- The public clouds, from the one table the emulator serves too (cmkflow.util.clouds).
local PUBLIC = {}
for name, c in pairs(clouds.CLOUDS) do
  PUBLIC[name] = { authority = "https://" .. c.login, arm = "https://" .. c.arm, graph = "https://" .. c.graph,
    keyvault_suffix = c.keyvault_suffix, storage_suffix = c.storage_suffix,
    token_exchange_audience = c.token_exchange_audience, family = name }
end

local ENDPOINT_FIELDS = { "authority", "arm", "graph" }
local SCOPE_FIELDS = { "arm_scope", "graph_scope", "keyvault_scope" }

local function valid_names()
  local names = {}
  for name in pairs(PUBLIC) do names[#names + 1] = name end
  sort(names)
  return concat(names, ", ")
end

-- "https://host[:port][/path]" -> host, port (nil when the text is not such a URL)
local function https_host(url)
  if type(url) ~= "string" then return nil end
  local host, port = url:match("^https://([%w%.%-]+):(%d+)")
  if not host then host = url:match("^https://([%w%.%-]+)") end
  if not host or host == "" then return nil end
  if url:find("[%s\"'<>\\]") then return nil end
  return host, port
end
M.https_host = https_host

local Cloud = {}
Cloud.__index = Cloud

-- The CONNECT_TO entry that routes `host` to the emulator, or nil outside the emulator.
function Cloud:connect_to_for(host)
  if not self.emulator_host or type(host) ~= "string" then return nil end
  return host .. ":443:" .. self.emulator_host .. ":" .. self.emulator_port
end

function Cloud:vault_uri(name)
  return "https://" .. tostring(name) .. "." .. self.keyvault_suffix
end

function Cloud:is_vault_host(host)
  if type(host) ~= "string" then return false end
  local suffix = "." .. self.keyvault_suffix:lower()
  host = host:lower()
  return #host > #suffix and host:sub(-#suffix) == suffix
end

-- The issuer of tenant `tenant`'s managed identity tokens as a federated credential names it
-- (https://learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity):
-- https://{login host}/{tenant}/v2.0 of this cloud.
function Cloud:fic_issuer(tenant) return self.authority .. "/" .. tostring(tenant) .. "/v2.0" end

-- The Blob endpoint of storage account `account` in this cloud (its storage suffix: the spec's, or
-- its family's, or the public cloud's).
function Cloud:blob_endpoint(account)
  local suffix = self.storage_suffix or (PUBLIC[self.family or "azure"] or PUBLIC.azure).storage_suffix
  return "https://" .. tostring(account) .. ".blob." .. suffix
end

-- The admin-consent link for app_id in tenant (a GUID or the placeholder "{customer-tenant}")
-- (https://learn.microsoft.com/entra/identity/enterprise-apps/grant-admin-consent).
function Cloud:consent_url(tenant, app_id)
  return ("%s/%s/adminconsent?client_id=%s"):format(self.authority, tenant, app_id)
end

local function strip_slash(s)
  return (s:gsub("/+$", ""))
end

local function build(name, spec)
  local c = { name = name }
  local bad = {}
  for _, field in ipairs(ENDPOINT_FIELDS) do
    local v = spec[field]
    if not https_host(v) then
      bad[#bad + 1] = field .. " (" .. (v == nil and "missing" or ("'" .. tostring(v) .. "'")) .. ")"
    else
      c[field] = strip_slash(v)
    end
  end
  local suffix = spec.keyvault_suffix
  if type(suffix) ~= "string" or not suffix:match("^[%w%-]+%.[%w%.%-]+$") then
    bad[#bad + 1] = "keyvault_suffix (" .. (suffix == nil and "missing" or ("'" .. tostring(suffix) .. "'")) .. ")"
  else
    c.keyvault_suffix = suffix:lower()
  end
  if #bad == 0 then
    c.arm_scope = spec.arm_scope or (c.arm .. "/.default")
    c.graph_scope = spec.graph_scope or (c.graph .. "/.default")
    c.keyvault_scope = spec.keyvault_scope or ("https://" .. c.keyvault_suffix .. "/.default")
    for _, field in ipairs(SCOPE_FIELDS) do
      if not https_host(c[field]) then
        bad[#bad + 1] = field .. " ('" .. tostring(c[field]) .. "')"
      end
    end
  end
  if #bad > 0 then
    error("cloud '" .. tostring(name) .. "': these endpoints must be https URLs: " .. concat(bad, ", "), 3)
  end
  c.token_exchange_audience = spec.token_exchange_audience or "api://AzureADTokenExchange"
  c.family = spec.family
  c.storage_suffix = type(spec.storage_suffix) == "string" and spec.storage_suffix:lower() or nil
  c.graph_version = spec.graph_version or "v1.0"
  c.connect_to = {}
  if spec.connect_to then
    for i, entry in ipairs(spec.connect_to) do c.connect_to[i] = entry end
  end
  c.ca_file = spec.ca_file
  if spec.emulator_host then
    c.emulator_host, c.emulator_port = spec.emulator_host, spec.emulator_port
  end
  return setmetatable(c, Cloud)
end

-- cloud.get("azure" | "usgov" | "china" | table) -> cloud object. An already-built cloud object
-- is returned as is. Raises on an unknown name or an invalid custom table.
function M.get(spec)
  if spec == nil then spec = "azure" end
  if type(spec) == "string" then
    local key = spec:lower()
    if key == "public" or key == "azurecloud" then key = "azure" end
    if key == "azureusgovernment" then key = "usgov" end
    if key == "azurechinacloud" then key = "china" end
    local base = PUBLIC[key]
    if not base then
      error("unknown cloud '" .. spec .. "': use one of " .. valid_names() ..
            " or a table with authority, arm, graph and keyvault_suffix", 2)
    end
    return build(key, base)
  elseif type(spec) == "table" then
    if getmetatable(spec) == Cloud then return spec end
    return build(spec.name or "custom", spec)
  end
  error("cloud must be a name (" .. valid_names() .. ") or a table, got " .. type(spec), 2)
end

-- cloud.emulator(endpoint_url, ca_file, family?) -> the hostnames of cloud `family` ("azure", the
-- default, "usgov" or "china"), routed to the emulator (which serves all three).
function M.emulator(endpoint_url, ca_file, family)
  local host, port = https_host(endpoint_url)
  if not host then
    error("emulator endpoint must be an https URL like https://127.0.0.1:8443, got '" ..
          tostring(endpoint_url) .. "'", 2)
  end
  port = port or "443"
  local spec = {}
  local base = PUBLIC[family or "azure"]
  if not base then error("unknown cloud '" .. tostring(family) .. "': use one of " .. valid_names(), 2) end
  for k, v in pairs(base) do spec[k] = v end
  spec.name = "emulator"
  spec.ca_file = ca_file
  spec.emulator_host, spec.emulator_port = host, port
  spec.connect_to = {}
  for _, url in ipairs { spec.authority, spec.arm, spec.graph } do
    spec.connect_to[#spec.connect_to + 1] = https_host(url) .. ":443:" .. host .. ":" .. port
  end
  -- and every other host (vaults, storage, anything): with the emulator selected, no request
  -- leaves for a real Azure host over https (libcurl's CURLOPT_CONNECT_TO: an empty host matches any;
  -- port 443 only, so a local IMDS endpoint of a managed identity stays where it is)
  spec.connect_to[#spec.connect_to + 1] = ":443:" .. host .. ":" .. port
  return build("emulator", spec)
end

M.names = function()
  local names = {}
  for name in pairs(PUBLIC) do names[#names + 1] = name end
  sort(names)
  return names
end

return M
