return {
  description = "the customer's deployer has no role on its subscription: the customer's resource group fails, the customer must act",
  seed = { ["tenants.2.principals.1.roles"] = {} },
  workflow = "onboard",
  params = { "customer=contoso" },
  expect = { exit = 1, status = "failed", tenant = "customer", error_code = "AuthorizationFailed",
             census = { vaults = 0, storage_accounts = 0 } },
}
