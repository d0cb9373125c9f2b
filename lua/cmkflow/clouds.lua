-- The public Azure clouds as data: each cloud's Entra ID authority, ARM and Microsoft Graph
-- endpoints, Key Vault and Storage DNS suffixes and token-exchange audience. A data module at the
-- bottom layer (it requires nothing), so the Azure clients (cmkflow.azure.cloud builds cloud
-- objects from it) and the C core (core.server.default_names, the emulator's certificate names)
-- read the same table.
--   https://learn.microsoft.com/en-us/entra/identity-platform/authentication-national-cloud
--   https://learn.microsoft.com/en-us/azure/azure-government/compare-azure-government-global-azure
--   https://learn.microsoft.com/en-us/azure/china/resources-developer-guide
local ipairs, pairs, sort = ipairs, pairs, table.sort

local M = {}

M.public = {
  azure = {
    authority = "https://login.microsoftonline.com",
    arm = "https://management.azure.com",
    graph = "https://graph.microsoft.com",
    keyvault_suffix = "vault.azure.net",
    storage_suffix = "core.windows.net",
    token_exchange_audience = "api://AzureADTokenExchange",
  },
  usgov = {
    authority = "https://login.microsoftonline.us",
    arm = "https://management.usgovcloudapi.net",
    graph = "https://graph.microsoft.us",
    keyvault_suffix = "vault.usgovcloudapi.net",
    storage_suffix = "core.usgovcloudapi.net",
    token_exchange_audience = "api://AzureADTokenExchangeUSGov",
  },
  china = {
    authority = "https://login.chinacloudapi.cn",
    arm = "https://management.chinacloudapi.cn",
    graph = "https://microsoftgraph.chinacloudapi.cn",
    keyvault_suffix = "vault.azure.cn",
    storage_suffix = "core.chinacloudapi.cn",
    token_exchange_audience = "api://AzureADTokenExchangeChina",
  },
}

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

return M
