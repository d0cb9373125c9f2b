return {
  description = "the customer's deployer has a wrong client secret: exit 4, nothing in the customer tenant",
  workflow = "onboard",
  params = { "customer=contoso" },
  wrong_secret = "customer",
  expect = { exit = 4, status = "failed", error_code = "AADSTS7000215", tenant = "customer",
             error_not_contains = { "not-the-secret-customer" }, census = { vaults = 0, crypto_roles = 0 } },
}
