-- bulk-onboard: `onboard` for every customer of a list, one run per customer, a few at a time.
--   cmkflow run bulk-onboard --param file=customers.csv [--param concurrency=8] [--output json]
-- The file is a CSV with a header line naming onboard's parameters (customer[,key_size]) or a JSON
-- array of objects ({"customer": "contoso", "key_size": 4096}) or of customer ids. Every row is
-- checked before any call; a bad row stops everything with exit 2 naming the line to fix. The
-- CLI reads the file (workflow code cannot) and drives the runs: lua/cmkflow/app/bulk.lua.
local cmk = require "cmkflow.workflow.cmk"

return {
  name = "bulk-onboard",
  description = "Cross-tenant customer-managed keys for a list of customers (one onboard run each)",
  bulk = { workflow = "onboard", key = "customer" },
  params = {
    file = { type = "string", required = true,
             description = "a CSV (header: customer[,key_size]) or JSON array of customers" },
    concurrency = { type = "integer", default = 8, min = 1, max = 256,
                    description = "how many customers are onboarded at the same time" },
  },
  -- The runner runs bulk definitions itself; this step only explains that when the definition is
  -- driven by the engine directly.
  steps = {
    { name = "runs", tenant = "both", title = "one onboard run per customer", mutates = false, run = cmk.only_through_cli },
  },
}
