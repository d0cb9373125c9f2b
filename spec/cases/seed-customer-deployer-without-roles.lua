return {
  description = "the customer's deployer has no role on its subscription: refused before the first change (exit 4), the customer must act",
  seed = { ["tenants.2.principals.1.roles"] = {} },
  workflow = "onboard",
  params = { "customer=contoso" },
  expect = { exit = 4, status = "failed", tenant = "customer", error_code = "SubscriptionNotFound",
             census = { vaults = 0, storage_accounts = 0 } },
}
