return {
  description = "isv-setup alone: the multi-tenant application and its federated credential, nothing in the customer tenant",
  workflow = "isv-setup",
  params = { "customer=contoso" },
  expect = { exit = 0, status = "succeeded", outputs = { ["app.displayName"] = "cmkflow-cross-tenant-cmk" },
             census = { apps = 1, fics = 1, vaults = 0, storage_accounts = 0 } },
}
