return {
  description = "a storage account name in capitals: exit 2 before any request, saying what to fix",
  workflow = "existing-account",
  params = { "customer=contoso", "app_id=11111111-2222-4333-8444-555555555555", "key_vault_uri=https://kv-contoso.vault.azure.net", "key_name=k", "storage_account=UPPER" },
  output = "text",
  expect = { exit = 2, stdout_empty = true, requests = 0,
             stderr_matches = { "parameter 'storage_account': storage account name 'UPPER' is invalid: use 3%-24 lowercase letters and digits" } },
}
