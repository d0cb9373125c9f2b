-- Which emulated service answers a request: by Host header (real Azure hostnames reached through
-- CONNECT_TO) and, for third-party clients on 127.0.0.1/localhost, by path (the single-origin
-- layout of docs/realclients.md ("Token audiences in the single-origin layout"): ARM at "/", Entra at "/{tenant}/…" and "/adfs/…", Graph
-- at "/graph/v1.0/…", vaults at "{vault}.vault.localhost").
local M = {}

local HOSTS = {
  ["login.microsoftonline.com"] = "entra", ["login.windows.net"] = "entra", ["login.microsoft.com"] = "entra",
  ["login.microsoftonline.us"] = "entra", ["login.chinacloudapi.cn"] = "entra",
  ["graph.microsoft.com"] = "graph", ["graph.microsoft.us"] = "graph", ["microsoftgraph.chinacloudapi.cn"] = "graph",
  ["management.azure.com"] = "arm", ["management.usgovcloudapi.net"] = "arm", ["management.chinacloudapi.cn"] = "arm",
  ["169.254.169.254"] = "imds",
}

local VAULT_SUFFIXES = { "%.vault%.azure%.net$", "%.vault%.localhost$", "%.vault%.usgovcloudapi%.net$", "%.vault%.azure%.cn$" }

-- Returns the service name ("entra", "imds", "graph", "arm", "keyvault", "control") and sets
-- req.service_path (the path as the service sees it) and, for vaults, req.vault (lower-case name).
function M.route(req)
  local host, path = req.host or "", req.path or "/"
  req.service_path = path
  if path == "/_emulator" or path:sub(1, 11) == "/_emulator/" then return "control" end
  if path == "/metadata/identity/oauth2/token" then return "imds" end
  for _, suffix in ipairs(VAULT_SUFFIXES) do
    local name = host:match("^([%w%-]+)" .. suffix)
    if name then
      req.vault = name:lower()
      return "keyvault"
    end
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
