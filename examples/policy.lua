-- An ISV's policy for cmkflow's stock workflows (docs/customizing.md explains every field).
-- The configuration names it: `policy = "policy.lua"` (a relative path is read next to the
-- configuration file). It runs in the workflow sandbox: string, table, math, os.getenv/date/time,
-- no files, no processes. Whatever it leaves out comes from the default policy
-- (lua/cmkflow/policy.lua). spec/customizing_spec.lua runs this exact file.

-- Customers whose onboarding waits for a person at the "handoff" gate even though the ISV holds
-- credentials for their tenant (their change board signs off first).
local REVIEW_BEFORE_KEYS = { fabrikam = true, ["woodgrove-bank"] = true }

-- A short stable hash (32-bit FNV-1a) that keeps globally unique names (vaults, storage
-- accounts) distinct between customers and between ISV tenants.
local function hash(s, n)
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return ("%08x"):format(h):sub(1, n)
end

-- "woodgrove-bank" -> "woodgrovebank" (storage account names allow lowercase letters and digits only)
local function compact(s) return (s:lower():gsub("[^%w]", "")) end

-- The run the hooks last saw: `tags` stamps it on everything the run creates.
local current_run

return {
  location = "northeurope",
  key_size = 4096,                    -- RSA 2048, 3072 or 4096; `--param key_size=` overrides per run
  role_scope = "vault",               -- the ISV app's role at the vault ("key": at the key only)
  soft_delete_retention_days = 30,    -- 7-90; purge protection is always on
  propagation_timeout_s = 120,        -- how long to wait out Entra ID / RBAC replication

  -- Resource names from the customer's id. c = { customer, isv_tenant, customer_tenant }.
  -- Vault and storage account names are global in Azure: keep a hash of the tenant in them.
  names = {
    isv_resource_group = function(c) return "rg-acme-identities" end,
    app = function(c) return "Acme Storage customer-managed keys" end,
    app_unique_name = function(c) return "acme-storage-cmk" end,
    identity = function(c) return "id-acme-cmk-" .. c.customer end,
    federated_credential = function(c) return "acme-" .. c.customer end,
    customer_resource_group = function(c) return "rg-acme-keys-" .. c.customer end,
    key_vault = function(c)                     -- 3-24 characters: "kv-acme-" + 10 + "-" + 5
      return ("kv-acme-%s-%s"):format(compact(c.customer):sub(1, 10), hash(c.customer .. c.customer_tenant, 5))
    end,
    key = function(c) return "acme-cmk-" .. c.customer end,
    storage_account_resource_group = function(c) return "rg-acme-data-" .. c.customer end,
    storage_account = function(c)               -- 3-24 lowercase letters and digits
      return ("stacme%s%s"):format(compact(c.customer):sub(1, 12), hash(c.customer .. c.isv_tenant, 6))
    end,
  },

  -- Tags on every resource group, identity, vault and storage account.
  tags = function(c)
    return { ["managed-by"] = "cmkflow", owner = "platform-team", ["cost-center"] = "cc-4711",
             customer = c.customer, ["cmkflow-run"] = current_run }
  end,

  -- Approval gates: true pauses the run at `gate` (exit 6) until `cmkflow approve RUN GATE`;
  -- false goes on. Return a boolean: anything but false (nil included) pauses.
  approval = function(gate, ctx)
    if gate == "handoff" then
      return REVIEW_BEFORE_KEYS[ctx.params.customer] == true or not ctx.has_context("customer")
    end
    return false
  end,

  -- Around every step (gates excepted). An error raised here fails the run.
  hooks = {
    before = function(step, ctx)
      current_run = ctx.run_id
      ctx.log("[acme] %s: %s ...", ctx.params.customer, step)
    end,
    after = function(step, ctx, outputs)
      ctx.log("[acme] %s: %s done%s", ctx.params.customer, step,
              type(outputs) == "table" and outputs.id and (" (" .. outputs.id .. ")") or "")
    end,
  },
}
