return {
  description = "a storage account id that is not an ARM id: exit 2 before any request, saying what to fix",
  workflow = "existing-account",
  params = { "customer=contoso", "app_id=5e6f7a8b-0000-4000-8000-00000000a0d1", "key_vault_uri=https://kv.vault.azure.net", "key_name=k", "storage_account_id=/subscriptions/x/nope" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'storage_account_id'" } },
}
