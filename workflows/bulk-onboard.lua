-- bulk-onboard: `onboard` for every customer of a list, one run per customer, a few at a time.
--   cmkflow run bulk-onboard --param file=customers.csv [--param concurrency=8] [--param kits=DIR]
--                            [--param again=true] [--output json]
-- The file is a CSV with a header line naming onboard's parameters and the values each customer
-- hands back (customer[,customer_tenant][,key_vault_uri,key_name][,key_size]) or a JSON array of
-- objects ({"customer": "contoso", "customer_tenant": "...", "key_vault_uri": "...", "key_name":
-- "..."}) or of customer ids. Every row is checked before any call; a bad row stops everything with
-- exit 2 naming the line to fix. A customer's waiting run is continued (approved with the values
-- handed back), never doubled; a customer without values gets its handoff kit in `kits`; a customer
-- done is left alone. The CLI reads the file (workflow code cannot) and drives the runs:
-- lua/cmkflow/app/bulk.lua.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "bulk-onboard",
  description = "Cross-tenant customer-managed keys for a list of customers (one onboard run each)",
  bulk = { workflow = "onboard", key = "customer", gate = "handoff" },
  params = {
    file = { type = "string", required = true,
             description = "a CSV (header: customer[,customer_tenant,key_vault_uri,key_name,key_size]) or JSON array" },
    concurrency = { type = "integer", default = 8, min = 1, max = 256,
                    description = "how many customers are onboarded at the same time" },
    kits = { type = "string", description = "where the waiting customers' handoff kits go (default: kits/ beside file)" },
    again = { type = "boolean", default = false,
              description = "run onboard again for customers already done (it checks and repairs)" },
  },
  -- The runner runs bulk definitions itself; this step only explains that when the definition is
  -- driven by the engine directly.
  steps = {
    { name = "runs", tenant = "both", title = "one onboard run per customer", mutates = false, run = cmk.only_through_cli },
  },
}
