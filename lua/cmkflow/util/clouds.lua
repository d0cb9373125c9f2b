-- The Azure clouds as data: each cloud's host names, the issuers of its Entra ID tokens and the
-- audience of its token exchange. One table for both sides: the Azure clients build their cloud
-- objects from it (cmkflow.azure.cloud) and the emulator serves every cloud from it (it may not
-- require the clients, so the table lives in the base layer).
-- Sources: https://learn.microsoft.com/entra/identity-platform/authentication-national-cloud,
-- https://learn.microsoft.com/graph/deployments,
-- https://learn.microsoft.com/azure/azure-government/compare-azure-government-global-azure,
-- https://learn.microsoft.com/azure/china/resources-developer-guide,
-- https://learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity
-- (the issuer and audience of a managed identity's token in each cloud).
local M = {}

M.CLOUDS = {
  azure = {
    login = "login.microsoftonline.com",
    login_aliases = { "login.windows.net", "login.microsoft.com" },
    arm = "management.azure.com",
    graph = "graph.microsoft.com",
    keyvault_suffix = "vault.azure.net",
    storage_suffix = "core.windows.net",
    token_exchange_audience = "api://AzureADTokenExchange",
    sts = "https://sts.windows.net/",            -- v1 token issuer prefix
  },
  usgov = {
    login = "login.microsoftonline.us",
    login_aliases = { "login.usgovcloudapi.net" },
    arm = "management.usgovcloudapi.net",
    graph = "graph.microsoft.us",
    keyvault_suffix = "vault.usgovcloudapi.net",
    storage_suffix = "core.usgovcloudapi.net",
    token_exchange_audience = "api://AzureADTokenExchangeUSGov",
    sts = "https://login.microsoftonline.us/",
  },
  china = {
    login = "login.chinacloudapi.cn",
    login_aliases = { "login.partner.microsoftonline.cn" },
    arm = "management.chinacloudapi.cn",
    graph = "microsoftgraph.chinacloudapi.cn",
    keyvault_suffix = "vault.azure.cn",
    storage_suffix = "core.chinacloudapi.cn",
    token_exchange_audience = "api://AzureADTokenExchangeChina",
    sts = "https://sts.chinacloudapi.cn/",
  },
}

M.NAMES = { "azure", "usgov", "china" }

-- The v2.0 issuer of tenant tid's tokens in cloud `name` (also a federated credential's issuer for
-- the tenant's managed identities) and the v1.0 one.
function M.issuer_v2(name, tid) return ("https://%s/%s/v2.0"):format(M.CLOUDS[name or "azure"].login, tid) end
function M.issuer_v1(name, tid) return M.CLOUDS[name or "azure"].sts .. tid .. "/" end

-- The resource URIs (audiences) of a cloud's ARM, Graph and Key Vault.
function M.resource(name, service)
  local c = M.CLOUDS[name or "azure"]
  if service == "arm" then return "https://" .. c.arm .. "/" end
  if service == "graph" then return "https://" .. c.graph end
  if service == "kv" then return "https://" .. c.keyvault_suffix end
end

-- The cloud a public host name belongs to ("azure" | "usgov" | "china"), or nil (loopback and
-- any other name).
function M.of_host(host)
  host = type(host) == "string" and host:lower():gsub(":%d+$", "") or ""
  for _, name in ipairs(M.NAMES) do
    local c = M.CLOUDS[name]
    if host == c.login or host == c.arm or host == c.graph then return name end
    for _, a in ipairs(c.login_aliases) do if host == a then return name end end
    local suffix = "." .. c.keyvault_suffix
    if #host > #suffix and host:sub(-#suffix) == suffix then return name end
  end
  return nil
end

-- The cloud whose token issuer `iss` is, and the tenant id in it; nil when none.
function M.parse_issuer(iss)
  if type(iss) ~= "string" then return nil end
  for _, name in ipairs(M.NAMES) do
    local c = M.CLOUDS[name]
    local login = c.login:gsub("%p", "%%%0")
    local tid = iss:match("^https://" .. login .. "/([%x%-]+)/v2%.0$")
    if not tid then
      local sts = c.sts:gsub("%p", "%%%0")
      tid = iss:match("^" .. sts .. "([%x%-]+)/$")
    end
    if tid then return name, tid end
  end
  return nil
end

return M
