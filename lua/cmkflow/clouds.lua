-- What the C core asks of the clouds: the host names a server standing in for Azure answers on
-- (core.server.default_names, the emulator's certificate) and where a bearer token may go
-- (core/lhttp.c). The data is cmkflow.util.clouds, the one table of every cloud's hosts.
--   https://learn.microsoft.com/en-us/entra/identity-platform/authentication-national-cloud
--   https://learn.microsoft.com/en-us/azure/azure-government/compare-azure-government-global-azure
--   https://learn.microsoft.com/en-us/azure/china/resources-developer-guide
local data = require "cmkflow.util.clouds"

local ipairs, pairs, sort = ipairs, pairs, table.sort

local M = {}

-- Each public cloud as URLs and suffixes, built from the one table of host names
-- (cmkflow.util.clouds, which the emulator serves too).
M.public = {}
for name, c in pairs(data.CLOUDS) do
  M.public[name] = { authority = "https://" .. c.login, arm = "https://" .. c.arm, graph = "https://" .. c.graph,
                     keyvault_suffix = c.keyvault_suffix, storage_suffix = c.storage_suffix,
                     token_exchange_audience = c.token_exchange_audience }
end

-- Every public cloud's host names a server standing in for Azure answers on: the login, ARM and
-- Graph hosts, and wildcards for Key Vault vaults and Storage blob endpoints. Sorted, no repeats.
function M.host_names()
  local seen, names = {}, {}
  local function add(name)
    if name and not seen[name] then
      seen[name] = true
      names[#names + 1] = name
    end
  end
  for _, c in pairs(M.public) do
    for _, url in ipairs { c.authority, c.arm, c.graph } do
      add(url:match("^https://([^/:]+)"))
    end
    add("*." .. c.keyvault_suffix)
    add("*.blob." .. c.storage_suffix)
  end
  sort(names)
  return names
end

-- Where a bearer token may go: the core asks this before it attaches a token to a request
-- (core/lhttp.c), so a credential's token reaches only its own cloud and only the service its
-- scope names: an ARM token the ARM host, a Graph token the Graph host, a Key Vault token that
-- cloud's vault hosts (https://learn.microsoft.com/azure/key-vault/general/authentication), a
-- Storage token that cloud's storage hosts. A credential whose authority is no public cloud's (a
-- test server, a private endpoint) may send its tokens to the authority's own host only. A
-- managed identity has no authority: the cloud is the one whose service its scope names.
-- Returns true, or nil and why not.
local function escape(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

function M.token_destination(authority, scope, url)
  local auth_host = type(authority) == "string" and authority:lower():match("^https://([^/:?#]+)")
  local lower = type(url) == "string" and url:lower() or ""
  local host = lower:match("^https://([^/:?#@]+)$") or lower:match("^https://([^/:?#@]+)[:/?#]")
  if not host then return nil, "a token is sent over https only" end
  local resource = type(scope) == "string" and scope:lower():gsub("/%.default$", ""):gsub("/+$", "") or ""
  for _, c in pairs(M.public) do
    local mine = auth_host == c.authority:match("^https://([^/:]+)")
    if not auth_host then
      mine = resource == c.arm or resource == c.graph or resource == "https://" .. c.keyvault_suffix
    end
    if mine then
      local allowed
      if resource == c.arm then
        allowed = host == c.arm:match("^https://([^/:]+)")
      elseif resource == c.graph then
        allowed = host == c.graph:match("^https://([^/:]+)")
      elseif resource == "https://" .. c.keyvault_suffix then
        allowed = host:match("^[%w%-]+%." .. escape(c.keyvault_suffix) .. "$") ~= nil
      elseif resource == "https://storage.azure.com" then
        allowed = host:match("^[%w%-]+%.[%w%-]+%." .. escape(c.storage_suffix) .. "$") ~= nil
      else
        return nil, ("the scope %s names no service of the cloud of %s"):format(scope, authority)
      end
      if allowed then return true end
      return nil, ("a token for %s goes to that service's hosts only, not %s"):format(scope, host)
    end
  end
  if auth_host and host == auth_host then return true end
  return nil, ("a token of the authority %s goes to that host only, not %s"):format(tostring(authority), host)
end

return M
