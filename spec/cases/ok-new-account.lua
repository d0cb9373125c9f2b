return {
  description = "new-account after the split path's two halves: the account encrypted with the handed-over key",
  before = { { workflow = "isv-setup", params = { "customer=contoso" }, as = "setup" },
             { workflow = "customer-authorize", params = { "customer=contoso", "app_id=${setup.handoff.appId}" },
               as = "auth" } },
  workflow = "new-account",
  params = { "customer=contoso", "app_id=${setup.handoff.appId}", "key_vault_uri=${auth.key_vault_uri}",
             "key_name=${auth.key_name}" },
  expect = { exit = 0, status = "succeeded", census = "once",
             outputs = { ["storage_account.properties.encryption.keySource"] = "Microsoft.Keyvault" } },
}
