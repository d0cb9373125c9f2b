return {
  description = "the ISV has no credentials for the customer tenant: onboard waits at the handoff gate (exit 6)",
  workflow = "onboard",
  params = { "customer=northwind" },
  contexts = { "isv" },
  expect = { exit = 6, status = "waiting", gate = "handoff",
             census = { vaults = 0, crypto_roles = 0, storage_accounts = 0, fics = 1 } },
}
