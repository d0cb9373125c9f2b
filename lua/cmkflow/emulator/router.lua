-- Which emulated service answers a request: by Host header (real Azure hostnames reached through
-- CONNECT_TO) and, for third-party clients on 127.0.0.1/localhost, by path (the single-origin
-- layout of docs/realclients.md ("Token audiences in the single-origin layout"): ARM at "/", Entra at "/{tenant}/…" and "/adfs/…", Graph
-- at "/graph/v1.0/…", vaults at "{vault}.vault.localhost").
local clouds = require "cmkflow.util.clouds"

local M = {}

local HOSTS = {
  ["login.microsoftonline.com"] = "entra", ["login.windows.net"] = "entra", ["login.microsoft.com"] = "entra",
  ["login.microsoftonline.us"] = "entra", ["login.chinacloudapi.cn"] = "entra",
  ["graph.microsoft.com"] = "graph", ["graph.microsoft.us"] = "graph", ["microsoftgraph.chinacloudapi.cn"] = "graph",
  ["management.azure.com"] = "arm", ["management.usgovcloudapi.net"] = "arm", ["management.chinacloudapi.cn"] = "arm",
  ["169.254.169.254"] = "imds",
}

local VAULT_SUFFIXES = { "%.vault%.azure%.net$", "%.vault%.localhost$", "%.vault%.usgovcloudapi%.net$", "%.vault%.azure%.cn$" }

-- Blob endpoints of every cloud: {account}.blob.{storage suffix}
local BLOB_SUFFIXES = {}
for _, name in ipairs(clouds.NAMES) do
  BLOB_SUFFIXES[#BLOB_SUFFIXES + 1] = "%.blob%." .. clouds.CLOUDS[name].storage_suffix:gsub("%p", "%%%0") .. "$"
end

-- The host's first label (lower case) when the rest is one of suffixes (patterns), else nil.
local function first_label(host, suffixes, label)
  for _, suffix in ipairs(suffixes) do
    local name = host:match(label .. suffix)
    if name then return name:lower() end
  end
end

-- Returns the service name ("entra", "imds", "graph", "arm", "keyvault", "blob", "control") and sets
-- req.service_path (the path as the service sees it), for vaults req.vault and for blob endpoints
-- req.account (lower-case names).
function M.route(req)
  local host, path = req.host or "", req.path or "/"
  req.service_path = path
  if path == "/_emulator" or path:sub(1, 11) == "/_emulator/" then return "control" end
  if path == "/metadata/identity/oauth2/token" then return "imds" end
  local vault = first_label(host, VAULT_SUFFIXES, "^([%w%-]+)")
  if vault then
    req.vault = vault
    return "keyvault"
  end
  local account = first_label(host, BLOB_SUFFIXES, "^([%w]+)")
  if account then
    req.account = account
    return "blob"
  end
  local service = HOSTS[host]
  if service then return service end
  -- single origin (127.0.0.1, localhost, anything else)
  if path == "/graph" or path:sub(1, 7) == "/graph/" then
    req.service_path = path:sub(7)
    if req.service_path == "" then req.service_path = "/" end
    return "graph"
  end
  if path:match("^/adfs/") or path:match("^/[^/]+/oauth2/") or path:match("^/[^/]+/v2%.0/%.well%-known/")
     or path:match("^/[^/]+/%.well%-known/") or path:match("^/[^/]+/discovery/") then
    return "entra"
  end
  return "arm"
end

return M
