-- cmkflow.azure: Azure Resource Manager, Microsoft Graph and Key Vault on top of the core.
--
--   local azure = require "cmkflow.azure"
--   azure.cloud, azure.arm, azure.graph, azure.keyvault, azure.errors, azure.validate
--   local ctx = azure.context{cloud = "azure" | cloud object, credential = cred, tenant = T?,
--                             subscription = S?, http = client?, sleep = fn?}
--   ctx.arm, ctx.graph, ctx.keyvault, ctx.cloud, ctx.tenant, ctx.subscription, ctx.http
local error, require, type = error, require, type

local M = {
  cloud = require "cmkflow.azure.cloud",
  errors = require "cmkflow.azure.errors",
  validate = require "cmkflow.azure.validate",
  arm = require "cmkflow.azure.arm",
  graph = require "cmkflow.azure.graph",
  keyvault = require "cmkflow.azure.keyvault",
}

-- Clients for one tenant context. Without `http`, a cmkflow.http client is made from the cloud's
-- CA file and CONNECT_TO routes.
function M.context(spec)
  if type(spec) ~= "table" then error("azure.context expects a table", 2) end
  local cloud = M.cloud.get(spec.cloud or "azure")
  if spec.tenant ~= nil then
    local ok, msg = M.validate.tenant(spec.tenant)
    if not ok then error("azure.context: " .. msg, 2) end
  end
  if spec.subscription ~= nil then
    local ok, msg = M.validate.subscription(spec.subscription)
    if not ok then error("azure.context: " .. msg, 2) end
  end
  local http = spec.http
  if not http then
    http = require("cmkflow.http").new { ca_file = cloud.ca_file, connect_to = cloud.connect_to }
  end
  local common = { http = http, credential = spec.credential, cloud = cloud, tenant = spec.tenant,
                   subscription = spec.subscription, sleep = spec.sleep }
  return {
    cloud = cloud,
    tenant = spec.tenant,
    subscription = spec.subscription,
    credential = spec.credential,
    http = http,
    arm = M.arm.new(common),
    graph = M.graph.new(common),
    keyvault = M.keyvault.new(common),
  }
end

return M
