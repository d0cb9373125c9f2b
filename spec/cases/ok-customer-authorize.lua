return {
  description = "customer-authorize after isv-setup: vault, key and the role for the ISV app in the customer tenant",
  before = { { workflow = "isv-setup", params = { "customer=contoso" }, as = "setup" } },
  workflow = "customer-authorize",
  params = { "customer=contoso", "app_id=${setup.handoff.appId}" },
  expect = { exit = 0, status = "succeeded", outputs = { key_name = "cmk-contoso" },
             census = { app_sps = 1, vaults = 1, keys = 1, crypto_roles = 1, storage_accounts = 0 } },
}
