return {
  description = "ARM refuses the storage account (403): the storage_account step fails, ISV or customer must act",
  workflow = "onboard",
  params = { "customer=contoso" },
  faults = { { match = { operation = "arm", method = "PUT", path = "/providers/Microsoft.Storage/storageAccounts/" },
               status = 403 } },
  expect = { exit = 1, status = "failed", step_failed = "storage_account", tenant = "ISV or customer",
             error_code = "Forbidden", census = { storage_accounts = 0, vaults = 1 } },
}
