return {
  description = "ARM refuses the customer's key vault (403): the key_vault step fails, the customer must act",
  workflow = "onboard",
  params = { "customer=contoso" },
  faults = { { match = { operation = "arm", method = "PUT", path = "/providers/Microsoft.KeyVault/vaults/[^/]+$" },
               status = 403 } },
  expect = { exit = 1, status = "failed", step_failed = "key_vault", tenant = "customer", error_code = "Forbidden",
             error_not_contains = { "stack traceback" }, census = { vaults = 0, storage_accounts = 0 } },
}
