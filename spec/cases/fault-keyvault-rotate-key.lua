return {
  description = "Key Vault refuses the key rotation (403) after a good onboard: rotate-key fails, the customer must act",
  before = { { workflow = "onboard", params = { "customer=contoso" }, as = "onboard" } },
  workflow = "rotate-key",
  params = { "customer=contoso" },
  faults = { { match = { operation = "keyvault", method = "POST", path = "/rotate" }, status = 403 } },
  expect = { exit = 1, status = "failed", step_failed = "rotate", tenant = "customer", error_code = "Forbidden",
             census = { key_versions = 1 } },
}
