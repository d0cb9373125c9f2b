return {
  description = "ARM refuses the ISV's user-assigned identity (403): the identity step fails, the ISV must act",
  workflow = "onboard",
  params = { "customer=contoso" },
  faults = { { match = { operation = "arm", method = "PUT", path = "/providers/Microsoft.ManagedIdentity/" }, status = 403 } },
  expect = { exit = 1, status = "failed", step_failed = "identity", tenant = "ISV", error_code = "Forbidden",
             census = { storage_accounts = 0 } },
}
