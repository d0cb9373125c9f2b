-- The default policy: how stock workflows name, tag and place resources, size and scope keys, and
-- when to pause for approval. An ISV's policy file returns a table with any of these fields; what
-- it leaves out comes from here (docs/customizing.md).
local crypto = require("cmkflow.core").crypto

local M = {}

-- a short stable suffix that keeps globally unique names (vaults, storage accounts) distinct
local function suffix(s, n) return crypto.sha256_hex(s):sub(1, n or 6) end

local function slug(s) return (s:lower():gsub("[^%w]", "")) end

M.location = "westeurope"
M.key_size = 3072
M.role_scope = "key"            -- "key" or "vault": where the ISV app gets its role
M.soft_delete_retention_days = 90
M.identity_per_customer = false  -- true: a user-assigned identity (and credential) per customer, at most 20
-- how long a step waits out Entra ID and RBAC replication: Microsoft documents up to 10 minutes
-- for a role assignment to take effect
-- (https://learn.microsoft.com/azure/role-based-access-control/troubleshooting#symptom---role-assignment-changes-are-not-being-detected)
M.propagation_timeout_s = 600
M.key_rotation = nil            -- e.g. { expiry = "P1Y", rotate_before = "P30D" } (not enforced yet)

-- Names derived from the customer's id (validated against Azure's rules by the workflows).
M.names = {
  isv_resource_group = function(c) return "rg-cmkflow-isv" end,
  app = function(c) return "cmkflow-cross-tenant-cmk" end,
  app_unique_name = function(c) return "cmkflow-cross-tenant-cmk" end,
  -- one identity and one federated credential serve every customer by default: the credential
  -- binds the identity to the app, not to a customer, and Entra allows only 20 per application
  identity = function(c) return c.identity_per_customer and ("uami-cmk-" .. c.customer) or "uami-cmkflow-cmk" end,
  federated_credential = function(c)
    return c.identity_per_customer and ("cmk-" .. c.customer) or "cmkflow-storage-cmk"
  end,
  customer_resource_group = function(c) return "rg-cmk-" .. c.customer end,
  key_vault = function(c) return ("kv-%s-%s"):format(slug(c.customer):sub(1, 13), suffix(c.customer .. c.customer_tenant, 6)) end,
  key = function(c) return "cmk-" .. c.customer end,
  storage_account_resource_group = function(c) return "rg-cmk-data-" .. c.customer end,
  storage_account = function(c) return ("st%s%s"):format(slug(c.customer):sub(1, 14), suffix(c.customer .. c.isv_tenant, 8)) end,
}

function M.tags(c) return { ["managed-by"] = "cmkflow", customer = c.customer } end

-- Approval gates: return true to pause the run at `gate` until `cmkflow approve RUN GATE`.
-- Default: pause at the customer handoff only when the ISV has no customer credentials.
function M.approval(gate, ctx)
  if gate == "handoff" then return not ctx.has_context("customer") end
  return false
end

M.hooks = { before = nil, after = nil }

-- The effective policy: `custom` (a table from a policy file) over the defaults.
function M.merge(custom)
  local p = {}
  for k, v in pairs(M) do if type(v) ~= "function" or k == "tags" or k == "approval" then p[k] = v end end
  p.names = {}
  for k, v in pairs(M.names) do p.names[k] = v end
  p.hooks = {}
  for k, v in pairs(custom or {}) do
    if k == "names" then
      for nk, nv in pairs(v) do p.names[nk] = nv end
    elseif k == "hooks" then
      for hk, hv in pairs(v) do p.hooks[hk] = hv end
    else
      p[k] = v
    end
  end
  p.merge = nil
  return p
end

return M
